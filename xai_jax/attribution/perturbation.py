"""Perturbation attributions: occlusion and RISE (no gradients needed).

One call shape (Captum / PAIR-saliency style)::

    method(model, x, *, target=None, baseline=..., key=..., groups=None,
           **options) -> attributions

with `x: [batch, *input_shape]` and attributions `[batch, *input_shape]`, or
`[batch, num_groups]` when `groups: masking.FeatureGroups` is given. Both
methods only call the model, so they work on any black box, `from_numpy`
boxes included (the host callback is batched: one call per chunk).

Many perturbed copies of every example are evaluated in memory-bounded chunks:
a model call sees at most `chunk_size` rows (at least one per example), and the
perturbed inputs are built inside each chunk from cheap descriptors (group ids,
mask indices), never all at once. Cores are jit-compiled once per shape and
static option and `vmap`ped over the batch; shard `x` over its batch dimension
to use several devices.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from xai_jax import _checks
from xai_jax import blackbox as bb
from xai_jax import masking
from xai_jax.attribution import _common

Array = jax.Array


# ----------------------------------------------------------------- occlusion
@functools.partial(jax.jit, static_argnames=('space', 'chunk'))
def _occlusion_core(box, x, baseline, target, groups, *, space, chunk):
  t = _common.resolve_targets(box, x, target)
  f = _common.example_score(box, space)
  ids = jnp.arange(groups.num_groups, dtype=jnp.int32)

  def one(xi, bi, ti):
    def item(g):
      return f(masking.apply_mask(xi, groups.assignment != g, bi), ti)
    fx = f(xi, ti)
    return fx - bb.map_in_chunks(item, ids, chunk), fx

  return jax.vmap(one)(x, baseline, t)


@functools.partial(jax.jit, static_argnames=('space', 'chunk'))
def _occlusion_background_core(box, x, background, target, groups, *, space,
                               chunk):
  t = _common.resolve_targets(box, x, target)
  f = _common.example_score(box, space)
  m = background.shape[0]
  items = jnp.arange(groups.num_groups * m, dtype=jnp.int32)

  def one(xi, ti):
    def item(i):
      keep = groups.assignment != i // m
      return f(masking.apply_mask(xi, keep, background[i % m]), ti)
    occluded = bb.map_in_chunks(item, items, chunk).reshape(-1, m)
    fx = f(xi, ti)
    return fx - jnp.mean(occluded, axis=1), fx

  return jax.vmap(one)(x, t)


def occlusion(model: bb.BlackBox | Callable, x: Array, *,
              target: Array | int | None = None, baseline: Any = 'zero',
              background: Array | None = None, data: Array | None = None,
              groups: masking.FeatureGroups | None = None, space: str = 'raw',
              key: Array | int | None = None,
              chunk_size: int = _common.DEFAULT_CHUNK_SIZE,
              **baseline_options: Any) -> Array:
  """Occlusion sensitivity (Zeiler & Fergus 2014, §4.2; 'Occlusion-1' of
  Ancona et al. 2018).

  For every group `g` of input elements:
  `R_g(x) = F(x) - F(x with x_g := x'_g)`, the drop of the explained score
  when the group is replaced by the baseline `x'` (the paper's grey square is
  `baseline=0.5` or the data mean, `baseline='mean', data=train_x`; its
  sliding window is `groups=masking.patch_groups(...)`, non-overlapping).
  For a linear model with zero baseline, `R_i = w_i x_i`. With
  `background=[m, *input_shape]` the group takes each background row's
  values in turn: `R_g(x) = F(x) - mean_b F(x with x_g := b_g)`.

  All `num_groups` (times m) occluded copies of an example are evaluated in
  chunks of at most `chunk_size` model rows (over the batch).

  Args:
    model: any black box (no gradients needed).
    x: `[batch, *input_shape]`.
    target: None (predicted class at x), an int, or int `[batch]`.
    baseline: x' -- a `masking.make_baseline` kind ('zero', 'mean' (the mean
      of `data`), 'blur', 'noise', 'reference'), a scalar, or
      `[*input_shape]` / `[batch, *input_shape]`. For token boxes use the
      PAD id (0).
    background: `[m, *input_shape]` background rows (leave `baseline` at its
      default).
    data: `[m, *input_shape]` data set for `baseline='mean'`.
    groups: optional `FeatureGroups` (patches, segments, tokens); default:
      every input element is its own group.
    space: explained output: 'raw', 'probs' or 'log_probs'.
    key: PRNG key or int seed, only for `baseline='noise'`.
    chunk_size: bound on model rows per call.
    **baseline_options: for `make_baseline` (reference, blur_sigma,
      noise_std).
  Returns:
    `[batch, num_groups]` if `groups` is given, else `[batch, *input_shape]`.
  Raises:
    ValueError: bad arguments (named), an unknown option (with ours for
      Captum's names), a model returning NaN or inf.
  """
  _common.check_options('occlusion', baseline_options)
  box, x = _common.prepare(model, x)
  t = _common.check_target(box, target, x.shape[0])
  _common.check_space(box, space)
  chunk_size = _checks.check_chunk_size(chunk_size)
  bg = _common.resolve_background(background, box, baseline)
  masking.check_groups(groups, box.input_shape)
  masking.require_shared_groups(groups, 'occlusion')
  g = masking.feature_groups(box.input_shape) if groups is None else groups
  if bg is None:
    b = _common.resolve_baseline(baseline, x, key=key, data=data,
                                 **baseline_options)
    chunk = _common.per_example_chunk(chunk_size, x.shape[0], g.num_groups)
    out, fx = _occlusion_core(box, x, b, t, g, space=space, chunk=chunk)
  else:
    n = g.num_groups * int(bg.shape[0])
    chunk = _common.per_example_chunk(chunk_size, x.shape[0], n)
    out, fx = _occlusion_background_core(box, x, bg.astype(x.dtype), t, g,
                                         space=space, chunk=chunk)
  _common.check_finite_result(fx, 'occlusion', 'x')
  _common.check_finite_result(out, 'occlusion', 'occluded copies of x')
  return out if groups is not None else out.reshape(x.shape)


# ---------------------------------------------------------------------- RISE
def _bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
  """`[n_out, n_in]` linear-interpolation matrix, half-pixel centres, edges
  clamped (the weights of `jax.image.resize(..., 'bilinear')` when upsampling).
  """
  u = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
  i0 = np.floor(u).astype(int)
  i1 = np.minimum(i0 + 1, n_in - 1)
  frac = u - i0
  m = np.zeros((n_out, n_in))
  np.add.at(m, (np.arange(n_out), i0), 1 - frac)
  np.add.at(m, (np.arange(n_out), i1), frac)
  return m


def rise_mask(key: Array | int, input_hw: tuple[int, int], grid: int, p1: Any
              ) -> Array:
  """One RISE mask (Petsiuk et al. 2018, §3.2 'Mask generation').

  A binary `grid x grid` grid with `P(1) = p1` is upsampled bilinearly to
  `(grid + 1) * ceil(H / grid)` x `(grid + 1) * ceil(W / grid)` and cropped to
  `H x W` at a random shift in `[0, ceil(H/grid)) x [0, ceil(W/grid))`.
  The upsampling is `R_h @ grid @ R_w^T` with constant interpolation matrices
  (equal to `jax.image.resize(..., 'bilinear')`), cropped by slicing their
  rows; one uniform draw per mask gives the cells and the shift.

  Args:
    key: PRNG key or int seed for this mask.
    input_hw: `(H, W)`.
    grid: grid size s.
    p1: probability of keeping a grid cell.
  Returns:
    float32 `[H, W]` with values in [0, 1].
  """
  key = _checks.as_key('key', key, method='rise_mask')
  h, w = input_hw
  ch, cw = _common.ceil_div(h, grid), _common.ceil_div(w, grid)
  rh = jnp.asarray(_bilinear_matrix(grid, (grid + 1) * ch), jnp.float32)
  rw = jnp.asarray(_bilinear_matrix(grid, (grid + 1) * cw), jnp.float32)
  u = jax.random.uniform(key, (grid * grid + 2,))
  cells = (u[:grid * grid] < p1).astype(jnp.float32).reshape(grid, grid)
  sh = jnp.minimum((u[-2] * ch).astype(jnp.int32), ch - 1)
  sw = jnp.minimum((u[-1] * cw).astype(jnp.int32), cw - 1)
  rh = jax.lax.dynamic_slice_in_dim(rh, sh, h, axis=0)          # [H, s]
  rw = jax.lax.dynamic_slice_in_dim(rw, sw, w, axis=0)          # [W, s]
  return rh @ cells @ rw.T


@functools.partial(jax.jit, static_argnames=('space', 'num_masks', 'grid',
                                             'chunk'))
def _rise_image_core(box, x, baseline, target, key, p1, *, space, num_masks,
                     grid, chunk):
  t = _common.resolve_targets(box, x, target)
  f = _common.example_score(box, space)
  hw = box.input_shape[:2]
  idx = jnp.arange(num_masks)

  def one(xi, bi, ti):
    def item(i):
      m = rise_mask(jax.random.fold_in(key, i), hw, grid, p1).astype(xi.dtype)
      mc = m[..., None] if xi.ndim == 3 else m
      return f(masking.apply_mask(xi, mc, bi), ti) * m          # Eq. 6 term
    return bb.sum_in_chunks(item, idx, chunk) / (num_masks * p1)

  return jax.vmap(one)(x, baseline, t)                         # [b, H, W]


@functools.partial(jax.jit, static_argnames=('space', 'num_masks', 'chunk'))
def _rise_groups_core(box, x, baseline, target, groups, key, p1, *, space,
                      num_masks, chunk):
  t = _common.resolve_targets(box, x, target)
  f = _common.example_score(box, space)
  idx = jnp.arange(num_masks)

  def one(xi, bi, ti):
    def item(i):
      m = jax.random.bernoulli(jax.random.fold_in(key, i), p1,
                               (groups.num_groups,))
      s = f(masking.apply_mask(xi, groups.expand(m), bi), ti)
      return s * m.astype(s.dtype)
    return bb.sum_in_chunks(item, idx, chunk) / (num_masks * p1)

  return jax.vmap(one)(x, baseline, t)


def rise(model: bb.BlackBox | Callable, x: Array, *,
         target: Array | int | None = None, key: Array | int | None = None,
         baseline: Any = 'zero', data: Array | None = None,
         num_masks: int = 4000, grid: int = 7,
         p1: float = 0.5, groups: masking.FeatureGroups | None = None,
         space: str = 'raw', keep_channels: bool = True,
         chunk_size: int = _common.DEFAULT_CHUNK_SIZE,
         **baseline_options: Any) -> Array:
  """RISE: Randomized Input Sampling for Explanation (Petsiuk et al. 2018,
  Eq. 5-6).

  `S_x(l) = 1 / (E[M] N) sum_{i=1..N} f(x . M_i) M_i(l)` with `E[M] = p1`
  (Eq. 6, the Monte-Carlo estimate of Eq. 5 `E_M[f(x . M) | M(l) = 1]`),
  where `x . M = M x + (1 - M) x'` (the paper: `x' = 0`).

  * Images `[H, W, C]` (no `groups`): masks are `grid x grid` binary grids
    with `P(1) = p1`, bilinearly upsampled with a random shift (`rise_mask`).
    Returns `[batch, H, W, C]` (the map repeated over channels) or, with
    `keep_channels=False`, `[batch, H, W]`.
  * With `groups` (or for non-image inputs, where every element is a group):
    binary masks over the groups, `P(keep) = p1`; returns `[batch, num_groups]`
    (or `[batch, *input_shape]` when `groups` is None). This hard masking also
    serves token boxes (baseline = PAD id 0).

  Mask `i` comes from `fold_in(key, i)` and is shared by all examples, as in
  the paper: an example's saliency depends neither on the rest of the batch
  nor on `chunk_size` (up to float summation order).

  Args:
    model: any black box (no gradients needed).
    x: `[batch, *input_shape]`.
    target: None (predicted class at x), an int, or int `[batch]`.
    key: PRNG key or int seed (required). Same key, same output.
    baseline: x' for masked-out parts: a `make_baseline` kind, a scalar, or
      `[*input_shape]` / `[batch, *input_shape]`; 'blur' is a common choice.
    num_masks: N (the paper uses thousands).
    grid: s, the mask grid size (paper: 7 for 224 x 224 images).
    p1: probability of keeping a cell / group (paper: 0.5).
    groups: optional `FeatureGroups` to mask over.
    space: explained output: 'raw', 'probs' (the paper's class probability)
      or 'log_probs'.
    keep_channels: image mode only, see above.
    chunk_size: bound on model rows per call.
    data: `[m, *input_shape]` data set for `baseline='mean'`.
    **baseline_options: for `make_baseline` (reference, blur_sigma,
      noise_std).
  Returns:
    `[batch, *input_shape]`, `[batch, H, W]` or `[batch, num_groups]`.
  """
  _common.check_options('rise', baseline_options)
  box, x = _common.prepare(model, x)
  key = _checks.as_key('key', key, method='rise')
  t = _common.check_target(box, target, x.shape[0])
  _common.check_space(box, space)
  num_masks = _checks.check_int('num_masks', num_masks, 1)
  chunk_size = _checks.check_chunk_size(chunk_size)
  if not _checks.is_tracer(p1):
    pv = np.asarray(p1)
    if pv.size != 1 or not 0.0 < float(pv) <= 1.0:
      raise ValueError(f'p1 must be in (0, 1], got {p1!r}.')
  key, base_key = jax.random.split(key)
  b = _common.resolve_baseline(baseline, x, key=base_key, data=data,
                               **baseline_options)
  chunk = _common.per_example_chunk(chunk_size, x.shape[0], num_masks)
  p1 = jnp.asarray(p1, jnp.float32)
  if groups is None and _common.is_image_shape(box.input_shape):
    grid = _checks.check_int('grid', grid, 1)
    if box.input_dtype != 'float':
      raise ValueError('rise on images needs float inputs; for token ids pass '
                       'groups=masking.token_groups(seq_len).')
    sal = _rise_image_core(box, x, b, t, key, p1, space=space,
                           num_masks=num_masks, grid=grid, chunk=chunk)
    _common.check_finite_result(sal, 'rise', 'x or its masked copies')
    if keep_channels and x.ndim == 4:
      sal = jnp.broadcast_to(sal[..., None], x.shape)
    return sal
  masking.check_groups(groups, box.input_shape)
  masking.require_shared_groups(groups, 'rise')
  g = masking.feature_groups(box.input_shape) if groups is None else groups
  out = _rise_groups_core(box, x, b, t, g, key, p1, space=space,
                          num_masks=num_masks, chunk=chunk)
  _common.check_finite_result(out, 'rise', 'x or its masked copies')
  return out if groups is not None else out.reshape(x.shape)


__all__ = ['occlusion', 'rise', 'rise_mask']
