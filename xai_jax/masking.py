"""Feature groups, baselines and masking.

Explainers score and select *groups* of input elements: single features
(tabular), patches on a grid (images), superpixels, or tokens (text). A
`FeatureGroups` maps every input element to a group id, so that a mask over
groups `[batch, num_groups]` expands to a mask over the input
`[batch, *input_shape]` with one gather.

`apply_mask(x, mask, baseline) = mask * x + (1 - mask) * baseline` is the one
masking operator every perturbation and selection method uses (L2X Eq. 6 uses
the zero baseline, LIME/KernelSHAP a reference or mean baseline, RISE/LTX
blurred or zero references).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np

from xai_jax import _checks

Array = jax.Array

BASELINES = ('zero', 'mean', 'blur', 'noise', 'reference')


@flax.struct.dataclass
class FeatureGroups:
  """A partition of the input elements into `num_groups` groups.

  Attributes:
    assignment: int32 `[*input_shape]`, the group id of each input element
      (in `[0, num_groups)`).
    num_groups: number of groups `d` (the `d` of top-k selection).
    input_shape: the shape of one example.
    grid_shape: for patch groups, the `(rows, cols)` of the grid, else None.
    kind: 'features', 'patches', 'tokens' or 'segments'.
  """

  assignment: Array
  num_groups: int = flax.struct.field(pytree_node=False)
  input_shape: tuple[int, ...] = flax.struct.field(pytree_node=False)
  grid_shape: tuple[int, int] | None = flax.struct.field(
      pytree_node=False, default=None)
  kind: str = flax.struct.field(pytree_node=False, default='features')

  def expand(self, group_mask: Array) -> Array:
    """Group mask `[..., num_groups]` -> input mask `[..., *input_shape]`."""
    _checks.check_array('group_mask', group_mask, min_ndim=1,
                        trailing_shape=(self.num_groups,))
    return jnp.take(group_mask, self.assignment, axis=-1)

  def reduce(self, values: Array, reduce: str = 'sum') -> Array:
    """Input-shaped values `[batch, *input_shape]` -> per-group `[batch, d]`.

    Args:
      values: e.g. pixel attributions.
      reduce: 'sum' or 'mean' over the elements of each group.
    """
    _checks.check_choice('reduce', reduce, ('sum', 'mean'))
    _checks.check_array('values', values, ndim=1 + len(self.input_shape),
                        trailing_shape=self.input_shape)
    flat = values.reshape(values.shape[0], -1)
    seg = self.assignment.reshape(-1)
    out = jax.vmap(lambda v: jax.ops.segment_sum(v, seg, self.num_groups))(flat)
    if reduce == 'mean':
      counts = jax.ops.segment_sum(jnp.ones_like(seg, flat.dtype), seg,
                                   self.num_groups)
      out = out / jnp.maximum(counts, 1)
    return out


def feature_groups(input_shape: Sequence[int]) -> FeatureGroups:
  """Every input element is its own group (tabular features): d = prod(shape)."""
  input_shape = tuple(int(s) for s in input_shape)
  d = int(np.prod(input_shape))
  return FeatureGroups(assignment=jnp.arange(d, dtype=jnp.int32).reshape(
      input_shape), num_groups=d, input_shape=input_shape, kind='features')


def token_groups(seq_len: int) -> FeatureGroups:
  """One group per token position of a `[seq_len]` sequence."""
  if seq_len <= 0:
    raise ValueError(f'seq_len must be positive, got {seq_len}.')
  g = feature_groups((seq_len,))
  return g.replace(kind='tokens')


def patch_groups(image_shape: Sequence[int], patch: int | Sequence[int]
                 ) -> FeatureGroups:
  """A grid of non-overlapping `p x p` patches over an `[H, W, C]` image.

  All channels of a pixel belong to the same patch; groups are numbered
  row-major over the `(H/p, W/p)` grid (L2X's MNIST setting: 28x28, p=4 ->
  49 patches).

  Args:
    image_shape: `(H, W, C)` or `(H, W)`.
    patch: patch size p, or `(ph, pw)`; must divide H and W.
  """
  image_shape = tuple(int(s) for s in image_shape)
  if len(image_shape) not in (2, 3):
    raise ValueError(f'image_shape must be (H, W) or (H, W, C), got '
                     f'{image_shape}.')
  ph, pw = (patch, patch) if isinstance(patch, (int, np.integer)) else patch
  h, w = image_shape[:2]
  if ph <= 0 or pw <= 0:
    raise ValueError(f'patch must be positive, got {patch}.')
  if h % ph or w % pw:
    raise ValueError(f'patch={patch} does not divide the image size {h}x{w}.')
  gh, gw = h // ph, w // pw
  ids = (np.arange(h)[:, None] // ph) * gw + (np.arange(w)[None, :] // pw)
  if len(image_shape) == 3:
    ids = np.broadcast_to(ids[:, :, None], image_shape)
  return FeatureGroups(assignment=jnp.asarray(ids, jnp.int32),
                       num_groups=gh * gw, input_shape=image_shape,
                       grid_shape=(gh, gw), kind='patches')


def segment_groups(segments: Array | np.ndarray,
                   input_shape: Sequence[int] | None = None) -> FeatureGroups:
  """Groups from a segmentation map (e.g. superpixels), ids relabelled 0..d-1.

  Args:
    segments: int `[H, W]` segment id per pixel.
    input_shape: the example shape `(H, W, C)`; channels share the pixel's id.
  """
  seg = np.asarray(segments)
  if seg.ndim != 2 or not np.issubdtype(seg.dtype, np.integer):
    raise ValueError(f'segments must be an int [H, W] map, got {seg.dtype} '
                     f'{seg.shape}.')
  _, ids = np.unique(seg, return_inverse=True)
  ids = ids.reshape(seg.shape)
  shape = tuple(input_shape) if input_shape is not None else seg.shape
  if shape[:2] != seg.shape:
    raise ValueError(f'input_shape {shape} does not match segments {seg.shape}.')
  if len(shape) == 3:
    ids = np.broadcast_to(ids[:, :, None], shape)
  return FeatureGroups(assignment=jnp.asarray(ids, jnp.int32),
                       num_groups=int(ids.max()) + 1, input_shape=shape,
                       kind='segments')


def apply_mask(x: Array, mask: Array, baseline: Array | float = 0.0) -> Array:
  """`mask * x + (1 - mask) * baseline`: keep masked-in features, replace the rest.

  For integer inputs (token ids) the mask is hard: an element is kept where
  `mask > 0.5` and replaced by `baseline` (the pad id) elsewhere, as
  `mask_tokens`.

  Args:
    x: `[batch, *input_shape]`, float features or int token ids.
    mask: `[batch, *input_shape]` (or broadcastable, e.g. `[*input_shape]`),
      values in [0, 1] (relaxed masks allowed for float inputs).
    baseline: scalar, `[*input_shape]` or `[batch, *input_shape]`.
  Returns:
    `[batch, *input_shape]`, of `x`'s dtype.
  """
  _checks.check_array('x', x, min_ndim=1)
  _checks.check_array('mask', mask, min_ndim=0)
  b = jnp.asarray(baseline, dtype=x.dtype)
  try:
    jnp.broadcast_shapes(x.shape, mask.shape)
  except ValueError:
    raise ValueError(f'mask of shape {mask.shape} does not broadcast to x of '
                     f'shape {x.shape}.') from None
  if b.ndim and b.shape != x.shape and b.shape != x.shape[1:]:
    raise ValueError(f'baseline must be a scalar, [*input_shape]={x.shape[1:]} '
                     f'or [batch, *input_shape]={x.shape}, got {b.shape}.')
  if jnp.issubdtype(x.dtype, jnp.integer):
    return jnp.where(mask > 0.5, x, b)
  m = mask.astype(x.dtype)
  return m * x + (1 - m) * b


def check_groups(groups: Any, input_shape: Sequence[int]) -> None:
  """Checks that `groups` (None allowed) is a `FeatureGroups` of `input_shape`.

  Raises:
    ValueError: naming `groups` if it is not a FeatureGroups or was built for
      examples of another shape.
  """
  if groups is None:
    return
  if not isinstance(groups, FeatureGroups):
    raise ValueError(f'groups must be a FeatureGroups, got '
                     f'{type(groups).__name__}.')
  if tuple(groups.input_shape) != tuple(input_shape):
    raise ValueError(f'groups were built for inputs of shape '
                     f'{groups.input_shape}, but x has examples of shape '
                     f'{tuple(input_shape)}.')


def selection_mask(selection: Any, x: Array,
                   groups: FeatureGroups | None = None, *,
                   name: str = 'selection') -> Array:
  """A binary selection over the input or over groups -> float input mask.

  Args:
    selection: bool or 0/1, `[batch, *input_shape]` or, with `groups`,
      `[batch, num_groups]` (expanded with `groups.expand`).
    x: `[batch, *input_shape]`, the inputs the selection refers to.
    groups: the feature groups of a group-level selection.
    name: the argument's name in error messages.
  Returns:
    float32 `[batch, *input_shape]`, 1 where selected.
  Raises:
    ValueError: naming `name` if the selection is not binary or has neither
      accepted shape.
  """
  sel = _checks.check_binary(
      name, selection,
      'use metrics.top_k_mask(scores, k) to turn scores into a selection.')
  b = x.shape[0]
  if sel.shape == x.shape:
    return sel.astype(jnp.float32)
  if groups is not None and sel.shape == (b, groups.num_groups):
    return groups.expand(sel.astype(jnp.float32))
  want = f'{x.shape}'
  if groups is not None:
    want += f' or [batch, num_groups]={(b, groups.num_groups)}'
  else:
    want += ' (pass groups= for a selection over feature groups)'
  raise ValueError(f'{name} must have shape {want}, got {sel.shape}.')


def mask_tokens(tokens: Array, mask: Array, pad_id: int = 0) -> Array:
  """Hard masking of token ids: unselected positions become `pad_id`.

  Args:
    tokens: int `[batch, seq_len]`.
    mask: `[batch, seq_len]`, selected where > 0.5.
    pad_id: the id that replaces unselected tokens (0 = PAD).
  """
  _checks.check_array('tokens', tokens, ndim=2)
  if mask.shape != tokens.shape:
    raise ValueError(f'mask must have the shape of tokens {tokens.shape}, got '
                     f'{mask.shape}.')
  return jnp.where(mask > 0.5, tokens, jnp.asarray(pad_id, tokens.dtype))


def gaussian_blur(images: Array, sigma: float) -> Array:
  """Separable Gaussian blur of `[batch, H, W, C]` images (edge-padded)."""
  _checks.check_array('images', images, ndim=4, floating=True)
  _checks.check_positive('sigma', sigma)
  radius = max(1, int(3 * sigma + 0.5))
  t = jnp.arange(-radius, radius + 1, dtype=images.dtype)
  k = jnp.exp(-0.5 * (t / sigma) ** 2)
  k = k / k.sum()
  xp = jnp.pad(images, ((0, 0), (radius, radius), (radius, radius), (0, 0)),
               mode='edge')
  h, w = images.shape[1:3]
  rows = sum(k[i] * xp[:, i:i + h, :, :] for i in range(2 * radius + 1))
  return sum(k[i] * rows[:, :, i:i + w, :] for i in range(2 * radius + 1))


def make_baseline(kind: str, x: Array, *, key: Array | None = None,
                  reference: Array | None = None, data_mean: Array | None
                  = None, blur_sigma: float = 5.0, noise_std: float = 0.2
                  ) -> Array:
  """A baseline (the 'absent feature' value) for every example of `x`.

  Args:
    kind: 'zero'; 'mean' (`data_mean` if given, else the mean of `x` over the
      batch); 'blur' (Gaussian blur of each image, RISE/Fong & Vedaldi);
      'noise' (x + N(0, noise_std^2), needs `key`); 'reference' (`reference`,
      a scalar, `[*input_shape]` or `[batch, *input_shape]`).
    x: `[batch, *input_shape]`.
    key: PRNG key for 'noise'.
    reference: the given reference for 'reference'.
    data_mean: a dataset mean `[*input_shape]` for 'mean'.
    blur_sigma: Gaussian sigma in pixels for 'blur'.
    noise_std: standard deviation for 'noise'.
  Returns:
    `[batch, *input_shape]`.
  """
  _checks.check_choice('baseline', kind, BASELINES)
  _checks.check_array('x', x, min_ndim=1)
  if kind == 'zero':
    return jnp.zeros_like(x)
  if kind == 'mean':
    m = jnp.mean(x, axis=0) if data_mean is None else jnp.asarray(data_mean,
                                                                 x.dtype)
    if m.shape != x.shape[1:]:
      raise ValueError(f'data_mean must have shape {x.shape[1:]}, got {m.shape}.')
    return jnp.broadcast_to(m, x.shape)
  if kind == 'blur':
    if x.ndim != 4:
      raise ValueError(f"baseline='blur' needs images [batch, H, W, C], got x "
                       f'of shape {x.shape}.')
    return gaussian_blur(x, blur_sigma)
  if kind == 'noise':
    if key is None:
      raise ValueError("baseline='noise' needs a PRNG key (argument key).")
    return x + noise_std * jax.random.normal(key, x.shape, x.dtype)
  if reference is None:
    raise ValueError("baseline='reference' needs the argument reference.")
  r = jnp.asarray(reference, x.dtype)
  if r.ndim and r.shape not in (x.shape, x.shape[1:]):
    raise ValueError(f'reference must be a scalar, [*input_shape]='
                     f'{x.shape[1:]} or [batch, *input_shape]={x.shape}, got '
                     f'{r.shape}.')
  return jnp.broadcast_to(r, x.shape)


__all__ = [
    'BASELINES', 'FeatureGroups', 'apply_mask', 'check_groups',
    'feature_groups', 'gaussian_blur', 'make_baseline', 'mask_tokens',
    'patch_groups', 'segment_groups', 'selection_mask', 'token_groups',
]
