"""Feature groups, baselines and masking.

Explainers score and select *groups* of input elements: single features
(tabular), patches on a grid (images), superpixels, or tokens (text). A
`FeatureGroups` maps every input element to a group id, so that a mask over
groups `[batch, num_groups]` expands to a mask over the input
`[batch, *input_shape]` with one gather. A *batched* `FeatureGroups` gives
every example of a batch its own partition into the same number of groups
(per-image superpixels, `superpixel_groups`): its assignment has a leading
batch dimension.

`apply_mask(x, mask, baseline) = mask * x + (1 - mask) * baseline` is the one
masking operator every perturbation and selection method uses (L2X Eq. 6 uses
the zero baseline, LIME/KernelSHAP a reference or mean baseline, RISE/LTX
blurred or zero references).
"""

from __future__ import annotations

import functools
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

  Shared groups (`assignment [*input_shape]`) partition every example the
  same way. Batched groups (`assignment [batch, *input_shape]`, `batched`
  True) give example i its own partition `assignment[i]` into ids in
  `[0, num_groups)`; an example may leave some ids unused (e.g. an image with
  fewer superpixels than `num_groups`). Batched groups must be used with a
  batch `x` of the same leading size.

  Attributes:
    assignment: int32 `[*input_shape]` (shared) or `[batch, *input_shape]`
      (batched), the group id of each input element (in `[0, num_groups)`).
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

  @property
  def batched(self) -> bool:
    """True for per-example groups (`assignment [batch, *input_shape]`)."""
    return self.assignment.ndim == len(self.input_shape) + 1

  @property
  def batch_size(self) -> int | None:
    """The leading dimension of batched groups, None for shared groups."""
    return int(self.assignment.shape[0]) if self.batched else None

  def expand(self, group_mask: Array) -> Array:
    """Group mask -> input mask, with one gather.

    Shared groups: `[..., num_groups]` -> `[..., *input_shape]` (any leading
    dimensions). Batched groups: `[batch, num_groups]` -> `[batch,
    *input_shape]`, row i expanded with example i's own assignment; more
    masks per example are allowed in between, `[batch, ..., num_groups]` ->
    `[batch, ..., *input_shape]` (e.g. `[batch, n, num_groups]` coalitions).
    """
    if not self.batched:
      _checks.check_array('group_mask', group_mask, min_ndim=1,
                          trailing_shape=(self.num_groups,))
      return jnp.take(group_mask, self.assignment, axis=-1)
    b = self.assignment.shape[0]
    _checks.check_array('group_mask', group_mask, min_ndim=2,
                        trailing_shape=(self.num_groups,))
    if group_mask.shape[0] != b:
      raise ValueError(f'group_mask must have shape [batch, ..., num_groups] '
                       f'with batch = {b} (the batched groups\' leading '
                       f'dimension), got {group_mask.shape}.')
    return jax.vmap(lambda m, a: jnp.take(m, a, axis=-1))(group_mask,
                                                           self.assignment)

  def reduce(self, values: Array, reduce: str = 'sum') -> Array:
    """Input-shaped values `[batch, *input_shape]` -> per-group `[batch, d]`.

    With batched groups example i is reduced over its own groups (`batch`
    must be the groups' leading dimension).

    Args:
      values: e.g. pixel attributions.
      reduce: 'sum' or 'mean' over the elements of each group.
    """
    _checks.check_choice('reduce', reduce, ('sum', 'mean'))
    _checks.check_array('values', values, ndim=1 + len(self.input_shape),
                        trailing_shape=self.input_shape)
    flat = values.reshape(values.shape[0], -1)
    d = self.num_groups
    if self.batched:
      if values.shape[0] != self.assignment.shape[0]:
        raise ValueError(f'values must have the batched groups\' batch '
                         f'{self.assignment.shape[0]}, got {values.shape}.')
      seg = self.assignment.reshape(values.shape[0], -1)
      out = jax.vmap(lambda v, s: jax.ops.segment_sum(v, s, d))(flat, seg)
      if reduce == 'mean':
        counts = jax.vmap(lambda s: jax.ops.segment_sum(
            jnp.ones_like(s, flat.dtype), s, d))(seg)
        out = out / jnp.maximum(counts, 1)
      return out
    seg = self.assignment.reshape(-1)
    out = jax.vmap(lambda v: jax.ops.segment_sum(v, seg, d))(flat)
    if reduce == 'mean':
      counts = jax.ops.segment_sum(jnp.ones_like(seg, flat.dtype), seg, d)
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


SUPERPIXEL_METHODS = ('slic', 'quickshift', 'felzenszwalb')


def _skimage_segmentation():
  """`skimage.segmentation` and `skimage.color`, imported on first use."""
  try:
    import skimage.color  # pylint: disable=g-import-not-at-top
    import skimage.segmentation  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError('superpixel_groups needs scikit-image: pip install '
                      'scikit-image') from e
  return skimage.segmentation, skimage.color


def superpixel_groups(images: Array | np.ndarray, *, method: str = 'slic',
                      n_segments: int = 50, compactness: float = 10.0,
                      **kw: Any) -> FeatureGroups:
  """Per-image superpixels as batched `FeatureGroups` (kind 'segments').

  Each image is segmented by scikit-image on the host (a Python loop over
  the images: segmentation is numpy preprocessing, done once before the
  explainers run), each map is relabelled to consecutive ids `0..M_i - 1`,
  and the maps are stacked with `M = max_i M_i` groups: an image with fewer
  segments leaves ids `M_i..M-1` unused (`segment_descriptors` reports which
  ids each image uses). LIME and the coalition methods sample coalitions over
  the `M` ids, shared by the batch, and expand them with each image's own
  map (`lime(..., mode='groups', groups=superpixel_groups(x))`).

  Methods:
    'slic': `skimage.segmentation.slic(image, n_segments, compactness,
      channel_axis=-1, start_label=0, **kw)`.
    'quickshift': `skimage.segmentation.quickshift(rgb, kernel_size=4,
      max_dist=200, ratio=0.2, **kw)` (lime_image's defaults; `kw`
      overrides them); quickshift needs 3 channels, grayscale images are
      converted with `skimage.color.gray2rgb`. `n_segments` and `compactness`
      are not used.
    'felzenszwalb': `skimage.segmentation.felzenszwalb(image,
      channel_axis=-1, **kw)`; `n_segments` and `compactness` are not used.

  Args:
    images: `[n, H, W, C]` (or `[n, H, W]`, one channel), the images to
      explain (the same batch later given to the explainer).
    method: 'slic', 'quickshift' or 'felzenszwalb'.
    n_segments: slic's approximate number of segments per image.
    compactness: slic's colour/space trade-off (higher: squarer segments).
    **kw: further arguments of the scikit-image function.
  Returns:
    batched `FeatureGroups`: `assignment` int32 `[n, H, W, C]` (the pixel's
    id broadcast over channels; `[n, H, W]` for `[n, H, W]` images),
    `num_groups = M`, `input_shape = (H, W, C)` (or `(H, W)`).
  Raises:
    ImportError: if scikit-image is not installed (an optional dependency).
    ValueError: for images of another rank or an unknown method.
  """
  _checks.check_choice('method', method, SUPERPIXEL_METHODS)
  imgs = np.asarray(images)
  if imgs.ndim not in (3, 4) or imgs.shape[0] < 1:
    raise ValueError(f'images must be [n, H, W, C] or [n, H, W], got shape '
                     f'{imgs.shape}.')
  input_shape = tuple(int(s) for s in imgs.shape[1:])
  chans = imgs if imgs.ndim == 4 else imgs[..., None]
  chans = chans.astype(np.float64)
  if not np.all(np.isfinite(chans)):
    raise ValueError('images must be finite.')
  seg_mod, color = _skimage_segmentation()
  maps = []
  for img in chans:
    if method == 'slic':
      seg = seg_mod.slic(img, n_segments=int(n_segments),
                         compactness=float(compactness), channel_axis=-1,
                         start_label=0, **kw)
    elif method == 'quickshift':
      if img.shape[-1] == 1:
        img = color.gray2rgb(img[..., 0])
      elif img.shape[-1] != 3:
        raise ValueError(f"method='quickshift' needs 1 or 3 channels, got "
                         f'{img.shape[-1]}.')
      opts = dict(kernel_size=4, max_dist=200, ratio=0.2)
      opts.update(kw)
      seg = seg_mod.quickshift(img, **opts)
    else:
      seg = seg_mod.felzenszwalb(img, channel_axis=-1, **kw)
    _, ids = np.unique(np.asarray(seg), return_inverse=True)
    maps.append(ids.reshape(img.shape[:2]).astype(np.int32))
  ids = np.stack(maps)                                          # [n, H, W]
  m = int(ids.max()) + 1
  if imgs.ndim == 4:
    ids = np.broadcast_to(ids[..., None], imgs.shape)
  return FeatureGroups(assignment=jnp.asarray(ids, jnp.int32), num_groups=m,
                       input_shape=input_shape, kind='segments')


def segment_descriptors(images: Array, groups: FeatureGroups
                        ) -> tuple[Array, Array]:
  """Per-segment descriptors of images: `([n, M, D] float32, bool [n, M])`.

  For segment s of image i (the pixels with id s in `groups`, batched or
  shared): the mean of each channel, the standard deviation of each channel,
  the centroid `(row / H, col / W)` (pixel indices, so in `[0, 1)`) and the
  area fraction `pixels / (H W)`, concatenated: `D = 2 C + 3`, in the order
  `[mean_1..C, std_1..C, row, col, area]`. `present[i, s]` is False for an id
  image i does not use; its descriptors are 0.

  Superpixels of different images have unrelated ids. To aggregate per-image
  explanations over a dataset (NormLIME), InterpretDL maps each superpixel to
  a global id by clustering such descriptors over all images (k-means); the
  clusters then play the role of dataset-wide features.

  Jitted segment sums, vmapped over the images (no Python loop).

  Args:
    images: `[n, H, W, C]` (or `[n, H, W]`).
    groups: `FeatureGroups` with `input_shape = images.shape[1:]`, e.g.
      `superpixel_groups(images)`; batched groups must have `n` assignments.
  Returns:
    `(descriptors float32 [n, M, 2 C + 3], present bool [n, M])`,
    `M = groups.num_groups`.
  """
  imgs = _checks.as_array('images', images)
  if imgs.ndim not in (3, 4):
    raise ValueError(f'images must be [n, H, W, C] or [n, H, W], got shape '
                     f'{imgs.shape}.')
  check_groups(groups, imgs.shape[1:], batch=imgs.shape[0])
  a = groups.assignment
  if imgs.ndim == 4:
    a = a[..., 0]                                   # the pixel's id
    imgs4 = imgs
  else:
    imgs4 = imgs[..., None]
  if not groups.batched:
    a = jnp.broadcast_to(a, imgs4.shape[:3])
  return _segment_descriptors(imgs4.astype(jnp.float32), a.astype(jnp.int32),
                              groups.num_groups)


@functools.partial(jax.jit, static_argnums=2)
def _segment_descriptors(images: Array, ids: Array, m: int
                         ) -> tuple[Array, Array]:
  h, w, c = images.shape[1:]
  rr, cc = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32) / h,
                        jnp.arange(w, dtype=jnp.float32) / w, indexing='ij')
  pos = jnp.stack([rr.reshape(-1), cc.reshape(-1)], -1)         # [P, 2]

  def one(img, seg):
    v = img.reshape(-1, c)                                      # [P, C]
    s = seg.reshape(-1)
    count = jax.ops.segment_sum(jnp.ones_like(s, jnp.float32), s, m)
    safe = jnp.maximum(count, 1.0)[:, None]
    mean = jax.ops.segment_sum(v, s, m) / safe                  # [M, C]
    var = jax.ops.segment_sum((v - mean[s]) ** 2, s, m) / safe  # two-pass
    centroid = jax.ops.segment_sum(pos, s, m) / safe            # [M, 2]
    area = count / (h * w)
    desc = jnp.concatenate([mean, jnp.sqrt(var), centroid, area[:, None]], -1)
    present = count > 0
    return jnp.where(present[:, None], desc, 0.0), present

  return jax.vmap(one)(images, ids)


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


def check_groups(groups: Any, input_shape: Sequence[int], *,
                 batch: int | None = None) -> None:
  """Checks that `groups` (None allowed) is a `FeatureGroups` of `input_shape`.

  Shared and batched groups are accepted; with `batch` (the number of
  examples of `x`), batched groups must have that leading dimension.

  Raises:
    ValueError: naming `groups` if it is not a FeatureGroups, was built for
      examples of another shape, or is batched for another number of
      examples.
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
  shape = tuple(groups.assignment.shape)
  rank = len(input_shape)
  if len(shape) not in (rank, rank + 1) or (
      shape[len(shape) - rank:] != tuple(input_shape)):
    raise ValueError(f'groups.assignment must have shape [*input_shape]='
                     f'{tuple(input_shape)} or [batch, *input_shape], got '
                     f'{shape}.')
  if batch is not None and groups.batched and shape[0] != batch:
    raise ValueError(f'groups are batched for {shape[0]} examples (one '
                     f'assignment per example), but x has {batch} examples.')


def require_shared_groups(groups: Any, method: str) -> None:
  """For methods that need one partition shared by the batch.

  Raises:
    ValueError: naming `groups` (and `method`) if they are batched
      (`assignment [batch, *input_shape]`).
  """
  if isinstance(groups, FeatureGroups) and groups.batched:
    raise ValueError(f'{method} needs groups shared by the batch '
                     f'(assignment [*input_shape]); got batched groups with '
                     f'assignment {tuple(groups.assignment.shape)}.')


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


def data_mean(data: Any, input_shape: Sequence[int], *, name: str = 'data'
              ) -> Array:
  """The mean input of a data set: `[*input_shape]`.

  The one rule for data statistics: they come from an explicit data set
  (the training set, a background set), never from the batch being
  explained (a baseline taken from the batch makes a row's explanation
  depend on the rest of its batch, and is the row itself for a batch of one).

  Args:
    data: `[m, *input_shape]` rows (m >= 1), or their mean `[*input_shape]`;
      finite.
    input_shape: the example shape.
    name: the argument's name in error messages.
  Returns:
    `[*input_shape]` float.
  Raises:
    ValueError: naming `name` if `data` is missing, has another shape, is
      empty or holds NaN/inf.
  """
  shape = tuple(input_shape)
  if data is None:
    raise ValueError(
        f'{name} is needed: pass {name}=[m, *input_shape] (e.g. the training '
        'set or a background set) whose mean is the baseline; the batch being '
        'explained is never used as data.')
  d = _checks.as_array(name, data)
  if tuple(d.shape) == shape:
    _checks.check_array(name, d, finite=True)
    return d
  if d.ndim != len(shape) + 1 or tuple(d.shape[1:]) != shape:
    raise ValueError(f'{name} must have shape [m, {", ".join(map(str, shape))}]'
                     f' (a data set) or {list(shape)} (its mean), got '
                     f'{tuple(d.shape)}.')
  if d.shape[0] == 0:
    raise ValueError(f'{name} must hold at least one row.')
  _checks.check_array(name, d, finite=True)
  return jnp.mean(d, axis=0)


def make_baseline(kind: str, x: Array, *, key: Array | None = None,
                  reference: Array | None = None, data: Array | None = None,
                  blur_sigma: float = 5.0, noise_std: float = 0.2
                  ) -> Array:
  """A baseline (the 'absent feature' value) for every example of `x`.

  Args:
    kind: 'zero'; 'mean' (the mean of `data`, see `data_mean`; never the
      mean of `x`); 'blur' (Gaussian blur of each image, RISE/Fong & Vedaldi);
      'noise' (x + N(0, noise_std^2), needs `key`); 'reference' (`reference`,
      a scalar, `[*input_shape]` or `[batch, *input_shape]`).
    x: `[batch, *input_shape]`.
    key: PRNG key for 'noise'.
    reference: the given reference for 'reference'.
    data: `[m, *input_shape]` data set (or its mean `[*input_shape]`), for
      'mean'.
    blur_sigma: Gaussian sigma in pixels for 'blur'.
    noise_std: standard deviation for 'noise'.
  Returns:
    `[batch, *input_shape]`.
  Raises:
    ValueError: 'mean' without `data`, or a bad argument (named).
  """
  _checks.check_choice('baseline', kind, BASELINES)
  _checks.check_array('x', x, min_ndim=1)
  if kind == 'zero':
    return jnp.zeros_like(x)
  if kind == 'mean':
    m = data_mean(data, x.shape[1:]).astype(x.dtype)
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
    'BASELINES', 'FeatureGroups', 'SUPERPIXEL_METHODS', 'apply_mask',
    'check_groups', 'data_mean', 'feature_groups', 'gaussian_blur', 'make_baseline',
    'mask_tokens', 'patch_groups', 'segment_descriptors', 'segment_groups',
    'selection_mask', 'superpixel_groups', 'token_groups',
]
