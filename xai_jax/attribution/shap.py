"""Shapley values: exact enumeration, KernelSHAP and permutation sampling.

Players are the input elements (tabular features), or the groups of a
`masking.FeatureGroups` (patches, superpixels, tokens). A coalition
`z in {0,1}^d` keeps the players in `z` and replaces the others by the
baseline; its value is the explained model score

    v(z) = f_t( apply_mask(x, groups.expand(z), baseline) ),

with `f_t` the output `target` of the black box in the chosen `space`. Every
estimator here returns `phi[batch, d]` (or the input's shape without groups)
with efficiency `sum_i phi_i = v(1) - v(0)` (exactly for `exact_shapley` and
`permutation_shap`, as a constraint of the regression for `kernel_shap`).

Implementation: every estimator is linear in the coalition values,
`phi = V @ M`, and is evaluated by `coalitions.reduce_coalitions`: one set of
coalitions per call, SHARED ACROSS THE BATCH (each example's estimate is the
paper's estimator; estimates of different examples are correlated, which
matters only when averaging errors over a batch), memory-bounded chunks of at
most `chunk_size` model rows, and one matmul per chunk, so `V` is never
stored. One jit compilation per input shape and static options.

References:
  L. S. Shapley (1953), A value for n-person games.
  S. Lundberg, S.-I. Lee (2017), A unified approach to interpreting model
    predictions (KernelSHAP), NeurIPS.
  I. Covert, S.-I. Lee (2021), Improving KernelSHAP: practical Shapley value
    estimation via linear regression, AISTATS.
  E. Strumbelj, I. Kononenko (2014), Explaining prediction models and
    individual predictions with feature contributions, KAIS.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from xai_jax import _checks
from xai_jax import blackbox as bb
from xai_jax import masking
from xai_jax.attribution import _common
from xai_jax.attribution import coalitions

Array = jax.Array

#: Largest number of players `exact_shapley` enumerates (2^20 coalitions).
EXACT_MAX_PLAYERS = 20


# ------------------------------------------------------------------ helpers
def _prepare(model: Any, x: Any, target: Any, baseline: Any, space: str,
             groups: Any, chunk_size: int | None, background: Any = None,
             data: Any = None
             ) -> tuple[bb.BlackBox, Array, Array | None, Array | None,
                        Array | None, masking.FeatureGroups | None, int, int]:
  """The shared argument checks (before tracing): returns `(box, x, target,
  baseline[batch, *input_shape] or None, background[m, *input_shape] or
  None, groups, d, chunk)`."""
  box, x = _common.prepare(model, x)
  t = _common.check_target(box, target, x.shape[0])
  _common.check_space(box, space)
  bg = _common.resolve_background(background, box, baseline)
  base = None
  if bg is None:
    base = _common.resolve_baseline(baseline, x, data=data)
  else:
    bg = bg.astype(x.dtype)
  masking.check_groups(groups, box.input_shape)
  d = coalitions.num_players(box, groups)
  chunk = coalitions.resolve_chunk_size(chunk_size, box)
  return box, x, t, base, bg, groups, d, chunk


def _background_samples(value: Any, bg: Array | None) -> int:
  """Background rows per coalition: None -> every row (1 without a
  background); else an int in [1, m]."""
  if bg is None:
    if value is not None:
      raise ValueError('background_samples needs background=[m, '
                       '*input_shape].')
    return 1
  m = int(bg.shape[0])
  if value is None:
    return m
  return min(_checks.check_int('background_samples', value, 1), m)


def _finish(phi: Array, box: bb.BlackBox, groups: Any, method: str) -> Array:
  """Checks for non-finite model values (NaN/inf propagate into every
  Shapley estimate) and reshapes to the input without groups."""
  _common.check_finite_result(phi, method)
  return coalitions.to_input_shape(phi, box, groups)


# ----------------------------------------------------------- exact Shapley
@functools.lru_cache(maxsize=None)
def _exact_size_weights(d: int) -> tuple[np.ndarray, np.ndarray]:
  """Per coalition size s = |S|: weight of v(S) for i in S (`w_plus[s] =
  (s-1)!(d-s)!/d!`) and for i not in S (`w_minus[s] = s!(d-s-1)!/d!`)."""
  w_plus = np.zeros(d + 1)
  w_minus = np.zeros(d + 1)
  for s in range(d + 1):
    if s >= 1:
      w_plus[s] = 1.0 / (d * math.comb(d - 1, s - 1))
    if s <= d - 1:
      w_minus[s] = 1.0 / (d * math.comb(d - 1, s))
  return w_plus.astype(np.float32), w_minus.astype(np.float32)


@functools.partial(jax.jit, static_argnames=('space', 'd', 'plan'))
def _exact_core(box: bb.BlackBox, x: Array, base: Array | None,
                target: Array | None, groups: masking.FeatureGroups | None,
                background: Array | None, *, space: str, d: int,
                plan: coalitions.Plan) -> Array:
  t, v1, v0 = coalitions.endpoints(box, x, base, target, space, plan.rows,
                                   background)
  if d == 1:
    return (v1 - v0)[:, None]
  w_plus, w_minus = (jnp.asarray(w) for w in _exact_size_weights(d))
  bits = jnp.arange(d, dtype=jnp.int32)
  nc = plan.units
  m = 1 if background is None else background.shape[0]
  total = (1 << d) * m

  def gen(c):
    i = c * nc + jnp.arange(nc, dtype=jnp.int32)
    k = i // m
    z = ((k[:, None] >> bits) & 1).astype(bool)
    s = jnp.sum(z, axis=-1)
    coef = jnp.where(z, w_plus[s][:, None], -w_minus[s][:, None]) / m
    coef = jnp.where((i < total)[:, None], coef, 0.0)
    if background is None:
      return z, coef
    return z, coef, i % m

  score = _common.score_fn(box, space)
  return coalitions.reduce_coalitions(score, groups, x, base, t, gen, plan,
                                      d, background)


def exact_shapley(model: bb.BlackBox | Callable, x: Array, *,
                  target: Array | int | None = None,
                  baseline: Array | float | str = 'zero',
                  background: Array | None = None, data: Array | None = None,
                  groups: masking.FeatureGroups | None = None,
                  space: str = 'raw', chunk_size: int | None = None,
                  max_players: int = EXACT_MAX_PLAYERS,
                  **unknown: Any) -> Array:
  """Exact Shapley values by enumerating all `2^d` coalitions.

  Shapley (1953):

      phi_i = sum_{S ⊆ N \\ {i}} |S|! (d - |S| - 1)! / d! * (v(S ∪ {i}) - v(S))

  computed as one matmul `phi = V @ W` of the `2^d` coalition values
  `V[b, S] = v_b(S)` with the weight matrix `W[S, i] = (|S|-1)!(d-|S|)!/d!`
  if `i ∈ S`, else `-|S|!(d-|S|-1)!/d!` (built on the fly per chunk).
  Efficiency `sum_i phi_i = v(N) - v(∅)` holds exactly.

  Args:
    model: a `BlackBox` or a JAX callable `[n, *input_shape] -> [n, c]`.
    x: `[batch, *input_shape]`.
    target: None (predicted class), an int, or int `[batch]`.
    baseline: the value of absent players: 'zero', 'mean' (the mean of
      `data`), ... (see `masking.make_baseline`), a scalar, `[*input_shape]`
      or `[batch, *input_shape]`.
    background: `[m, *input_shape]` background rows (interventional values;
      leave `baseline` at its default).
    data: `[m, *input_shape]` data set for `baseline='mean'`.
    groups: players = these feature groups (patches, tokens); else every
      input element is a player.
    space: 'raw', 'probs' or 'log_probs' (the explained output).
    chunk_size: model rows per call (memory bound); None = automatic.
    max_players: refuse `d > max_players` (cost `batch * 2^d` model rows,
      times m with a background).
    **unknown: none; another library's name (nsamples, n_steps,
      baselines, ...) raises a ValueError naming ours.
  Returns:
    `[batch, num_groups]` with groups, else `[batch, *input_shape]`.
  Raises:
    ValueError: for `d > max_players` (use `kernel_shap` or
      `permutation_shap`), bad shapes, NaN inputs, bad targets, a model
      returning NaN or inf.
  """
  _common.check_options('exact_shapley', unknown, allowed=())
  box, x, t, base, bg, groups, d, chunk = _prepare(
      model, x, target, baseline, space, groups, chunk_size, background, data)
  max_players = _checks.check_int('max_players', max_players, 1)
  if d > max_players:
    raise ValueError(
        f'exact_shapley enumerates 2^d coalitions; d={d} players exceeds the '
        f'limit max_players={max_players} (2^{max_players} coalitions per '
        'example). Use kernel_shap or permutation_shap, or fewer players '
        '(groups=masking.patch_groups/...).')
  m = 1 if bg is None else int(bg.shape[0])
  if (1 << d) * m >= 2 ** 31:
    raise ValueError(f'exact_shapley with {m} background rows and d={d} '
                     f'players needs 2^{d} * {m} model rows per example; use '
                     'fewer background rows or kernel_shap.')
  plan = coalitions.plan(x.shape[0], (1 << d) * m, 1, chunk)
  phi = _exact_core(box, x, base, t, groups, bg, space=space, d=d, plan=plan)
  return _finish(phi, box, groups, 'exact_shapley')


# --------------------------------------------------------------- KernelSHAP
class _KernelPlan(NamedTuple):
  """Static design of KernelSHAP coalitions (depends on d, budget only)."""
  z_fixed: np.ndarray       # bool [m, d]: enumerated coalitions
  w_fixed: np.ndarray       # float [m]: their kernel weights
  sizes: np.ndarray         # int [k]: sizes left to sample (random sizes)
  cdf: np.ndarray           # float [k]: cumulative probabilities of sizes
  base_sizes: np.ndarray    # int [b]: fixed size of each base sample
                            # (stratified sizes), or empty (random sizes)
  num_sampled: int          # coalitions to sample
  w_sampled: np.ndarray     # float [num_sampled]: their weights


def _all_coalitions(d: int) -> np.ndarray:
  k = np.arange(1, (1 << d) - 1, dtype=np.int64)
  return ((k[:, None] >> np.arange(d)) & 1).astype(bool)


def _allocate(total: int, mass: np.ndarray) -> np.ndarray | None:
  """Integer counts >= 1 summing to `total`, proportional to `mass` (largest
  remainders); None if `total` < the number of strata."""
  k = mass.shape[0]
  if total < k:
    return None
  q = total * mass / mass.sum()
  c = np.maximum(np.floor(q).astype(np.int64), 1)
  while c.sum() > total:                   # the max(.,1) overshoot
    c[np.argmax(c - q)] -= 1
  order = np.argsort(-(q - c))
  for j in order[:total - c.sum()]:
    c[j] += 1
  return c


@functools.lru_cache(maxsize=64)
def _kernel_plan(d: int, n: int, enumerate_sizes: bool, paired: bool = True,
                 stratify: bool = False) -> _KernelPlan:
  """Which coalitions to enumerate and which to sample.

  With `n >= 2^d - 2` every proper coalition is enumerated with its exact
  kernel weight. Otherwise, with `enumerate_sizes`, size classes
  `{s, d - s}` are fully enumerated from s = 1 upward while the budget left
  times the class's share of the remaining kernel weight covers all its
  subsets (shap KernelExplainer). The rest of the budget samples the
  remaining sizes: with `stratify`, each remaining class (pairs `{s, d-s}`
  when paired, else each size) gets a fixed number of samples proportional
  to its kernel mass and each of its samples the weight mass / count
  (stratified sampling of the size, uniform subsets within a size); without,
  sizes are drawn from the kernel distribution and all samples weigh the
  same. The weights of the sampled coalitions sum to the remaining mass.
  """
  p = coalitions.shapley_kernel(d)         # size probabilities, sums to 1
  empty_i, empty_f = np.zeros((0,), np.int32), np.zeros((0,), np.float32)
  if d <= 30 and n >= (1 << d) - 2:
    z = _all_coalitions(d)
    s = z.sum(-1)
    w = p[s] / np.array([math.comb(d, int(k)) for k in range(d + 1)])[s]
    return _KernelPlan(z, w, empty_i, empty_f, empty_i, 0, empty_f)
  num_classes = (d - 1 + 1) // 2          # ceil((d-1)/2) size classes
  num_paired = (d - 1) // 2               # classes with s != d - s
  class_w = np.array([p[s] + (p[d - s] if s <= num_paired else 0.0)
                      for s in range(1, num_classes + 1)])
  remaining = class_w / class_w.sum()
  left = n
  fixed_z, fixed_w, done = [], [], 0
  if enumerate_sizes:
    for s in range(1, num_classes + 1):
      sizes = (s, d - s) if s <= num_paired else (s,)
      count = sum(math.comb(d, k) for k in sizes)
      if left * remaining[s - 1] / count < 1.0 - 1e-8:
        break
      done = s
      left -= count
      if remaining[s - 1] < 1.0:
        remaining = remaining / (1.0 - remaining[s - 1])
      for size in sizes:
        combos = np.array(list(itertools.combinations(range(d), size)))
        z = np.zeros((len(combos), d), bool)
        z[np.arange(len(combos))[:, None], combos] = True
        fixed_z.append(z)
        fixed_w.append(np.full(len(combos), p[size] / math.comb(d, size)))
  rest = np.array([s for s in range(1, d) if min(s, d - s) > done], np.int32)
  z_fixed = (np.concatenate(fixed_z) if fixed_z else np.zeros((0, d), bool))
  w_fixed = (np.concatenate(fixed_w) if fixed_w else np.zeros((0,)))
  if not rest.size or left <= 0:
    return _KernelPlan(z_fixed, w_fixed, empty_i, empty_f, empty_i, 0,
                       empty_f)
  if stratify:
    if paired:
      strata = np.array([s for s in rest if s <= d - s], np.int32)
      mass = np.array([p[s] + (p[d - s] if s != d - s else 0.0)
                       for s in strata])
      base = left // 2
    else:
      strata, mass, base = rest, p[rest], left
    counts = _allocate(base, mass)
    if counts is not None:
      base_sizes = np.repeat(strata, counts).astype(np.int32)
      per = np.repeat(mass / counts, counts)        # mass per base sample
      if paired:                                    # (z, 1 - z) share it
        w_s = np.repeat(per / 2, 2)
      else:
        w_s = per
      return _KernelPlan(z_fixed, w_fixed, empty_i, empty_f, base_sizes,
                         int(w_s.shape[0]), w_s.astype(np.float32))
  mass = float(p[rest].sum())
  cdf = coalitions.size_cdf(p[rest])
  w_s = np.full((left,), mass / left, np.float32)
  return _KernelPlan(z_fixed, w_fixed, rest, cdf, empty_i, int(left), w_s)


def kernel_shap_coalitions(key: Array | int | None, num_players: int,
                           num_samples: int, *, paired: bool = True,
                           enumerate_sizes: bool = True,
                           stratify: bool = False) -> tuple[Array, Array]:
  """The coalitions and regression weights `kernel_shap` uses.

  Args:
    key: PRNG key or int seed (unused when every coalition is enumerated).
    num_players: d >= 2.
    num_samples: the budget n (coalitions evaluated, at most `2^d - 2`; one
      less when paired stratified sampling leaves an odd remainder).
    paired: antithetic sampling (z, 1 - z).
    enumerate_sizes: enumerate the smallest/largest sizes the budget covers
      (as shap does) and sample only the rest.
    stratify: fixed sample counts per coalition size (proportional to the
      kernel mass) instead of random sizes.
  Returns:
    `(z bool[n', d], w float32[n'])`; the weights sum to one (the kernel
    mass of all proper coalitions).
  """
  plan = _kernel_plan(int(num_players), int(num_samples),
                      bool(enumerate_sizes), bool(paired), bool(stratify))
  z = jnp.asarray(plan.z_fixed)
  w = jnp.asarray(plan.w_fixed, jnp.float32)
  if plan.num_sampled:
    if key is None:
      raise ValueError('kernel_shap needs a PRNG key (argument key) unless '
                       'num_samples >= 2^d - 2 enumerates every coalition.')
    key = _checks.as_key('key', key, method='kernel_shap_coalitions')
    if plan.base_sizes.size:
      zs = _subsets_of_sizes(key, jnp.asarray(plan.base_sizes),
                             int(num_players), paired)
    else:
      zs = coalitions.sample_sized_coalitions(
          key, plan.num_sampled, int(num_players),
          jnp.asarray(plan.sizes), jnp.asarray(plan.cdf), paired)
    z = jnp.concatenate([z, zs])
    w = jnp.concatenate([w, jnp.asarray(plan.w_sampled, jnp.float32)])
  return z, w


def _subsets_of_sizes(key: Array | int, sizes: Array, d: int, paired: bool
                      ) -> Array:
  """One uniform subset of each given size (+ its complement if paired)."""
  u = jax.random.uniform(key, (sizes.shape[0], d))
  z = coalitions.smallest_mask(u, sizes)
  if paired:
    z = jnp.stack([z, ~z], axis=1).reshape(2 * sizes.shape[0], d)
  return z


def constrained_shapley_regression(a: Array, b: Array, total: Array) -> Array:
  """Solves the efficiency-constrained KernelSHAP regression in closed form.

  Covert & Lee (2021), Eq. (7): for `min_phi sum_z w(z)(v(z) - v(0) -
  z^T phi)^2` s.t. `1^T phi = v(1) - v(0)`, with `A = sum_z w z z^T` and
  `b = sum_z w z (v(z) - v(0))`:

      phi = A^{-1} (b - 1 (1^T A^{-1} b - v(1) + v(0)) / (1^T A^{-1} 1)).

  Args:
    a: `[d, d]` (shared) or `[batch, d, d]`.
    b: `[batch, d]`.
    total: `[batch]`, `v(1) - v(0)`.
  Returns:
    `phi[batch, d]`, with `sum(phi, -1) == total`.
  """
  d = b.shape[-1]
  eps = 1e-6 * jnp.trace(a, axis1=-2, axis2=-1)[..., None, None] / d
  a = a + eps * jnp.eye(d, dtype=a.dtype)
  ones = jnp.ones((d,), b.dtype)
  solve = functools.partial(jax.scipy.linalg.solve, assume_a='pos')
  if a.ndim == 2:
    sol = solve(a, jnp.concatenate([b.T, ones[:, None]], axis=1))
    ainv_b, ainv_1 = sol[:, :-1].T, sol[:, -1][None]
  else:
    rhs = jnp.stack([b, jnp.broadcast_to(ones, b.shape)], axis=-1)
    sol = jax.vmap(solve)(a, rhs)
    ainv_b, ainv_1 = sol[..., 0], sol[..., 1]
  lam = (jnp.sum(ainv_b, -1) - total) / jnp.sum(ainv_1, -1)
  phi = ainv_b - lam[:, None] * ainv_1
  # Remove the float32 residue of the constraint (exact efficiency).
  return phi + ((total - jnp.sum(phi, -1)) / d)[:, None]


def _row_control(box: bb.BlackBox, background: Array, t: Array, v0: Array,
                 z: Array, wz: Array, repeats: int, offset: Array, space: str,
                 rows: int) -> Array:
  """The control variate of sampled background rows, `[batch, d]`.

  A coalition `z` evaluated on background row `b` estimates `v(z)` by
  `f(x_z, b)`; `c(z) (f(b) - v(0))` has mean zero over the rows and is
  strongly correlated with it when few players come from x, so KernelSHAP
  regresses on `f(x_z, b) - c(z) (f(b) - v(0))` with `c(z) = 1 - |z| / d`
  (the share of players taken from b). Unbiased; `f(b)` is known from
  `v(0)`. Returns the term to subtract from `sum_k v(z_k) w_k z_k / r`:
  `sum_j (f_t(b_j) - v0) G[j]`, with `G[j] = sum of the coefficients
  `c(z_k) w_k z_k / r` of the items on row j (`background_chunks`' layout:
  coalition k takes rows `offset + k r, ..., offset + k r + r - 1` mod m).
  """
  m = background.shape[0]
  n, d = z.shape
  c = 1.0 - jnp.sum(z, axis=-1).astype(jnp.float32) / d
  a = wz * c[:, None]                                           # [n, d]
  start = (offset + jnp.arange(n, dtype=jnp.int32) * repeats) % m
  h = jnp.zeros((2 * m + 1, d), jnp.float32)
  h = h.at[start].add(a).at[start + repeats].add(-a)
  g = jnp.cumsum(h, axis=0)[:2 * m]
  g = (g[:m] + g[m:]) / repeats                                 # [m, d]
  fb = _common.to_space(bb.forward_in_chunks(box, background, rows), box,
                        space)
  return (fb[:, t] - v0[None]).T @ g


@functools.partial(jax.jit, static_argnames=('space', 'd', 'num_samples',
                                             'paired', 'enumerate_sizes',
                                             'stratify', 'repeats', 'plan'))
def _kernel_core(box: bb.BlackBox, x: Array, base: Array | None,
                 target: Array | None, groups: masking.FeatureGroups | None,
                 key: Array | None, background: Array | None, *,
                 space: str, d: int, num_samples: int, paired: bool,
                 enumerate_sizes: bool, stratify: bool, repeats: int,
                 plan: coalitions.Plan) -> Array:
  t, v1, v0 = coalitions.endpoints(box, x, base, target, space, plan.rows,
                                   background)
  if d == 1:
    return (v1 - v0)[:, None]
  row_key = None
  if key is not None and background is not None:
    key, row_key = jax.random.split(key)
  z, w = kernel_shap_coalitions(key, d, num_samples, paired=paired,
                                enumerate_sizes=enumerate_sizes,
                                stratify=stratify)
  zf = z.astype(jnp.float32)
  wz = w[:, None] * zf                                          # [n, d]
  a = zf.T @ wz                                                 # [d, d]
  score = _common.score_fn(box, space)
  if background is None:
    gen = coalitions.fixed_chunks(z, wz, plan)
  else:
    m = background.shape[0]
    offset = (jnp.int32(0) if row_key is None or repeats == m else
              jax.random.randint(row_key, (), 0, m, jnp.int32))
    gen = coalitions.background_chunks(z, wz, repeats, m, offset, plan)
  vz = coalitions.reduce_coalitions(score, groups, x, base, t, gen, plan, d,
                                    background)
  if background is not None and repeats < background.shape[0]:
    vz = vz - _row_control(box, background, t, v0, z, wz, repeats, offset,
                           space, plan.rows)
  b = vz - v0[:, None] * jnp.sum(wz, axis=0)[None]
  return constrained_shapley_regression(a, b, v1 - v0)


@functools.partial(jax.jit, static_argnames=('space', 'd', 'num_samples',
                                             'paired', 'enumerate_sizes',
                                             'stratify', 'rows', 'items'))
def _kernel_own_core(box: bb.BlackBox, x: Array, base: Array,
                     target: Array | None,
                     groups: masking.FeatureGroups | None, key: Array, *,
                     space: str, d: int, num_samples: int, paired: bool,
                     enumerate_sizes: bool, stratify: bool, rows: int,
                     items: int) -> Array:
  """KernelSHAP with coalitions drawn per example (`shared_coalitions=False`).

  Example i draws its own coalitions from `fold_in(key, i)`; its `A_i` and
  `b_i` are accumulated and the constrained regressions solved batched.
  """
  t, v1, v0 = coalitions.endpoints(box, x, base, target, space, rows, None)
  score = _common.score_fn(box, space)
  shape = tuple(x.shape[1:])
  expand = (groups.expand if groups is not None
            else (lambda m: m.reshape(m.shape[:-1] + shape)))
  idx = jnp.arange(x.shape[0], dtype=jnp.uint32)

  def one(args):
    xi, bi, ti, v0i, i = args
    z, w = kernel_shap_coalitions(jax.random.fold_in(key, i), d, num_samples,
                                  paired=paired,
                                  enumerate_sizes=enumerate_sizes,
                                  stratify=stratify)
    zf = z.astype(jnp.float32)
    wz = w[:, None] * zf                                        # [n, d]
    xm = masking.apply_mask(xi[None], expand(zf), bi)
    v = score(xm, jnp.full((zf.shape[0],), ti, jnp.int32))      # [n]
    return zf.T @ wz, wz.T @ (v - v0i)

  a, b = bb.map_in_chunks(one, (x, base, t, v0, idx), items)
  return constrained_shapley_regression(a, b, v1 - v0)


def kernel_shap(model: bb.BlackBox | Callable, x: Array, *,
                key: Array | int | None = None,
                target: Array | int | None = None,
                baseline: Array | float | str = 'zero',
                background: Array | None = None,
                background_samples: int | None = None,
                data: Array | None = None,
                num_samples: int | None = None, paired: bool = True,
                enumerate_sizes: bool = True, stratify: bool = False,
                shared_coalitions: bool = True,
                groups: masking.FeatureGroups | None = None,
                space: str = 'raw', chunk_size: int | None = None,
                **unknown: Any) -> Array:
  """KernelSHAP (Lundberg & Lee 2017) with the constrained closed form of
  Covert & Lee (2021).

  Solves the Shapley-kernel weighted least squares

      phi = argmin sum_z pi(z) (v(z) - v(0) - z^T phi)^2
            s.t. 1^T phi = v(1) - v(0),
      pi(z) = (d - 1) / (C(d, |z|) |z| (d - |z|)),

  in closed form (`constrained_shapley_regression`, Covert & Lee Eq. 7) with
  `A = sum w z z^T` and `b = sum w z (v(z) - v(0))` over the coalitions used:

  * `num_samples >= 2^d - 2`: every proper coalition with its exact kernel
    weight, so the result equals `exact_shapley` (Lundberg & Lee, Thm. 2).
  * otherwise, with `enumerate_sizes=True` (default, as shap's
    KernelExplainer): the coalition sizes `{s, d - s}` whose subsets the budget
    covers are enumerated with exact weights, and the rest of the budget is
    drawn from the Shapley-kernel distribution restricted to the other sizes
    (`coalitions.sample_sized_coalitions`; paired = antithetic
    `(z, 1 - z)`), each
    with an equal share of the remaining kernel mass (the consistent
    estimator of Covert & Lee with `A` and `b` both estimated). With
    `enumerate_sizes=False` all coalitions are sampled. `stratify=True`
    replaces the random sizes by fixed counts per size class proportional
    to its kernel mass (weights mass / count; same estimator, stratified;
    at d = 100 with 2,248 samples its error was the same as random sizes).

  The coalitions are drawn once per call and SHARED by all examples of the
  batch (each example's estimate is the paper's estimator; `A` is solved once).
  With `shared_coalitions=False` each example draws its own (from
  `fold_in(key, i)`, i its row), so the examples' errors are independent: a
  shared draw's error is common to the whole batch, and at small budgets it
  varies a lot from draw to draw (d = 10, n = 20, 100 examples: over 40 keys
  the batch MSE to exact values reached 2.4 times its median). Use it when
  the estimates' errors must be independent across inputs (selective explanations
  calibrate on them); every `A_i` is then solved separately.

  Background data (interventional Shapley values, as shap's
  `KernelExplainer(f, background)`): with `background=[m, *input_shape]`
  a coalition's value is `v(z) = mean_b f(x_z, b_not_z)` and efficiency
  holds against the background mean, `sum phi = f(x) - mean_b f(b)`.
  `background_samples=r` evaluates each coalition on r background rows
  instead of all m (`coalitions.background_chunks`: consecutive coalitions
  take consecutive rows from a random start, so the rows are covered
  evenly): `v(z)` is then estimated without bias from r rows, and the model
  rows per example fall from `num_samples * m` to `num_samples * r`. The
  regression averages the background noise over the coalitions, so for a
  fixed budget of model rows more coalitions with fewer rows each are more
  accurate (see docs/attribution.md, "Background data"). `v(0)` always uses
  every row (`m` model rows once for the whole batch).

  Args:
    model: a `BlackBox` or a JAX callable `[n, *input_shape] -> [n, c]`.
    x: `[batch, *input_shape]`.
    key: PRNG key or int seed (not needed when every coalition is
      enumerated and every background row used).
    target: None (predicted class), an int, or int `[batch]`.
    baseline: value of absent players ('zero', 'mean' = mean of `data`,
      scalar, array).
    background: `[m, *input_shape]` background rows (leave `baseline` at its
      default).
    background_samples: background rows per coalition, in [1, m]; None =
      all m (the exact interventional value of each coalition).
    data: `[m, *input_shape]` data set for `baseline='mean'`.
    num_samples: coalitions evaluated per example, >= d + 1; None = shap's
      'auto', `2 d + 2048`. Capped at `2^d - 2`.
    paired: antithetic sampling `(z, 1 - z)`. A pair determines one
      direction of phi under the efficiency constraint, so paired sampling
      needs `num_samples >= 2 (d - 1)` and stays badly conditioned near it:
      at budgets of a few d draw unpaired (docs/selective.md, "Monte Carlo
      budget").
    enumerate_sizes: see above.
    stratify: see above.
    shared_coalitions: one draw of coalitions for the whole batch (True) or
      one per example (False; not with a background or batched groups).
    groups: players = feature groups; else every input element.
    space: 'raw', 'probs' or 'log_probs'.
    chunk_size: model rows per call (memory bound); None = automatic.
    **unknown: none; another library's name (nsamples, n_steps,
      baselines, ...) raises a ValueError naming ours.
  Returns:
    `[batch, num_groups]` with groups, else `[batch, *input_shape]`.
  Raises:
    ValueError: `num_samples < d + 1` (`< 2 (d - 1)` when paired), missing
      key, bad shapes/values, a model returning NaN or inf.
  """
  _common.check_options('kernel_shap', unknown, allowed=())
  box, x, t, base, bg, groups, d, chunk = _prepare(
      model, x, target, baseline, space, groups, chunk_size, background, data)
  repeats = _background_samples(background_samples, bg)
  if num_samples is None:
    num_samples = 2 * d + 2048
  num_samples = _checks.check_int('num_samples', num_samples, 1)
  need = min(d + 1, (1 << d) - 2) if d < 62 else d + 1
  if d > 1 and num_samples < need:
    raise ValueError(
        f'num_samples={num_samples} is too small for d={d} players: KernelSHAP '
        f'needs at least d + 1 = {need} coalitions to determine the '
        'regression (shap uses 2 d + 2048).')
  if d > 1 and d < 62:
    num_samples = min(num_samples, (1 << d) - 2)
  plan_k = (_kernel_plan(d, num_samples, bool(enumerate_sizes), bool(paired),
                         bool(stratify)) if d > 1 else None)
  if (paired and plan_k is not None and plan_k.num_sampled
      and num_samples < 2 * (d - 1)):
    # A pair (z, 1 - z) tells the constrained regression one direction
    # (z^T phi), so n paired samples fix n / 2 + 1 of the d directions.
    raise ValueError(
        f'num_samples={num_samples} with paired=True is too small for d={d} '
        f'players: paired coalitions (z, 1 - z) give num_samples / 2 '
        f'independent equations, so the regression is singular below '
        f'2 (d - 1) = {2 * (d - 1)}. Use paired=False (needs d + 1) or more '
        'samples.')
  sampled_rows = bg is not None and repeats < bg.shape[0]
  if (plan_k is not None and plan_k.num_sampled) or sampled_rows:
    key = _checks.as_key('key', key, method='kernel_shap')
  elif key is not None:
    key = _checks.as_key('key', key, method='kernel_shap')
  n = (len(plan_k.w_fixed) + plan_k.num_sampled) if plan_k else 1
  if not shared_coalitions and d > 1:
    if bg is not None:
      raise ValueError('shared_coalitions=False does not support background=;'
                       ' use a baseline.')
    if groups is not None and groups.batched:
      raise ValueError('shared_coalitions=False needs shared groups (one '
                       'assignment for every example).')
    if key is None:
      key = _checks.as_key('key', key, method='kernel_shap')
    phi = _kernel_own_core(
        box, x, base, t, groups, key, space=space, d=d,
        num_samples=num_samples, paired=bool(paired),
        enumerate_sizes=bool(enumerate_sizes), stratify=bool(stratify),
        rows=chunk, items=max(1, chunk // n))
    return _finish(phi, box, groups, 'kernel_shap')
  plan = coalitions.plan(x.shape[0], n * (repeats if bg is not None else 1),
                         1, chunk)
  phi = _kernel_core(box, x, base, t, groups, key, bg, space=space, d=d,
                     num_samples=num_samples, paired=bool(paired),
                     enumerate_sizes=bool(enumerate_sizes),
                     stratify=bool(stratify), repeats=repeats, plan=plan)
  return _finish(phi, box, groups, 'kernel_shap')


# ------------------------------------------------------ permutation sampling
def sample_permutations(key: Array | int, num_permutations: int,
                        num_players: int,
                        *, antithetic: bool = True) -> Array:
  """Uniform random permutations of `d` players, `int32[num, d]`.

  With `antithetic=True` row `2j+1` is row `2j` reversed (Covert & Lee's
  `shapley_sampling` with `antithetical=True`); for odd `num` the last row is
  unpaired.
  """
  key = _checks.as_key('key', key, method='sample_permutations')
  base_num = -(-num_permutations // 2) if antithetic else num_permutations
  u = jax.random.uniform(key, (base_num, num_players))
  p = jnp.argsort(u, axis=-1).astype(jnp.int32)
  if antithetic:
    p = jnp.stack([p, p[:, ::-1]], axis=1).reshape(2 * base_num, num_players)
  return p[:num_permutations]


@functools.partial(jax.jit, static_argnames=('space', 'd', 'num_permutations',
                                             'antithetic', 'repeats', 'plan'))
def _permutation_core(box: bb.BlackBox, x: Array, base: Array | None,
                      target: Array | None,
                      groups: masking.FeatureGroups | None, key: Array,
                      background: Array | None, *,
                      space: str, d: int, num_permutations: int,
                      antithetic: bool, repeats: int,
                      plan: coalitions.Plan) -> Array:
  t, v1, v0 = coalitions.endpoints(box, x, base, target, space, plan.rows,
                                   background)
  if d == 1:
    return (v1 - v0)[:, None]
  num = num_permutations
  if background is not None:
    key, row_key = jax.random.split(key)
    m = background.shape[0]
    offset = (jnp.int32(0) if repeats == m else
              jax.random.randint(row_key, (), 0, m, jnp.int32))
  perms = sample_permutations(key, num, d, antithetic=antithetic)
  # Chain u in [0, num * repeats) is permutation u // repeats on background
  # row (offset + u) % m (one chain per permutation without a background).
  q = plan.units
  total_units = num * repeats
  total = plan.num_c * q
  unit = jnp.arange(total, dtype=jnp.int32)
  valid = (unit < total_units).astype(jnp.float32)
  pp = perms[jnp.minimum(unit // repeats, num - 1)]
  inv = 1.0 / (num * repeats)
  steps = jnp.arange(1, d, dtype=jnp.int32)                     # k = 1..d-1

  def gen(c):
    p = jax.lax.dynamic_slice_in_dim(pp, c * q, q)              # [q, d]
    ok = jax.lax.dynamic_slice_in_dim(valid, c * q, q)
    ranks = jnp.argsort(p, axis=-1)                             # [q, d]
    masks = ranks[:, None, :] < steps[None, :, None]            # [q, d-1, d]
    # v_k (first k players of p) enters phi[p[k-1]] with + and phi[p[k]]
    # with - (marginal contributions v_k - v_{k-1} of player p[k-1]).
    coef = (jax.nn.one_hot(p[:, :-1], d) - jax.nn.one_hot(p[:, 1:], d))
    coef = coef * (ok * inv)[:, None, None]
    out = (masks.reshape(q * (d - 1), d), coef.reshape(q * (d - 1), d))
    if background is None:
      return out
    u = jax.lax.dynamic_slice_in_dim(unit, c * q, q)
    return (*out, jnp.repeat((offset + u) % m, d - 1))

  score = _common.score_fn(box, space)
  phi = coalitions.reduce_coalitions(score, groups, x, base, t, gen, plan, d,
                                     background)
  # The chains' end points: v(N) = f(x), and v(empty) = v0 (the background
  # mean, also for chains on one background row: unbiased, and it makes
  # efficiency exact against the background mean).
  first = jnp.sum(jax.nn.one_hot(perms[:, 0], d), axis=0) / num   # [d]
  last = jnp.sum(jax.nn.one_hot(perms[:, -1], d), axis=0) / num
  return phi + v1[:, None] * last[None] - v0[:, None] * first[None]


def permutation_shap(model: bb.BlackBox | Callable, x: Array, *,
                     key: Array | int | None = None,
                     target: Array | int | None = None,
                     baseline: Array | float | str = 'zero',
                     background: Array | None = None,
                     background_samples: int | None = None,
                     data: Array | None = None,
                     num_permutations: int = 100, antithetic: bool = True,
                     groups: masking.FeatureGroups | None = None,
                     space: str = 'raw', chunk_size: int | None = None,
                     **unknown: Any) -> Array:
  """Shapley values by permutation sampling (Strumbelj & Kononenko 2014).

      phi_i = E_pi [ v(Pre_i(pi) ∪ {i}) - v(Pre_i(pi)) ]

  estimated by the mean over `num_permutations` uniform permutations; each
  permutation costs `d - 1` model rows per example (`v(∅)`, `v(N)` are shared)
  and its marginal contributions telescope to `v(N) - v(∅)`, so efficiency
  holds exactly. `antithetic=True` pairs each permutation with its reverse
  (Covert & Lee's `antithetical` sampling). Permutations are drawn once per
  call and SHARED by all examples of the batch.

  With `background=[m, *input_shape]` values are interventional,
  `v(S) = mean_b f(x_S, b_not_S)`: each permutation's chain is evaluated
  on `background_samples` rows (None = all m, the exact value of every
  coalition; r < m rows taken evenly from a random start), and
  `v(empty)` is the mean over all m rows, so efficiency holds exactly
  against the background mean, `sum phi = f(x) - mean_b f(b)`.

  Args:
    model: a `BlackBox` or a JAX callable.
    x: `[batch, *input_shape]`.
    key: PRNG key or int seed (required).
    target: None (predicted class), an int, or int `[batch]`.
    baseline: value of absent players ('zero', 'mean' = mean of `data`,
      scalar, array).
    background: `[m, *input_shape]` background rows (leave `baseline` at its
      default).
    background_samples: background rows per permutation, in [1, m]; None =
      all m.
    data: `[m, *input_shape]` data set for `baseline='mean'`.
    num_permutations: permutations per call (>= 1).
    antithetic: pair each permutation with its reverse.
    groups: players = feature groups; else every input element.
    space: 'raw', 'probs' or 'log_probs'.
    chunk_size: model rows per call (memory bound); None = automatic.
    **unknown: none; another library's name (nsamples, n_steps,
      baselines, ...) raises a ValueError naming ours.
  Returns:
    `[batch, num_groups]` with groups, else `[batch, *input_shape]`.
  """
  _common.check_options('permutation_shap', unknown, allowed=())
  box, x, t, base, bg, groups, d, chunk = _prepare(
      model, x, target, baseline, space, groups, chunk_size, background, data)
  repeats = _background_samples(background_samples, bg)
  num_permutations = _checks.check_int('num_permutations', num_permutations, 1)
  key = _checks.as_key('key', key, method='permutation_shap')
  plan = coalitions.plan(x.shape[0], num_permutations * repeats,
                         max(d - 1, 1), chunk)
  phi = _permutation_core(box, x, base, t, groups, key, bg, space=space, d=d,
                          num_permutations=num_permutations,
                          antithetic=bool(antithetic), repeats=repeats,
                          plan=plan)
  return _finish(phi, box, groups, 'permutation_shap')


__all__ = [
    'EXACT_MAX_PLAYERS', 'constrained_shapley_regression', 'exact_shapley',
    'kernel_shap', 'kernel_shap_coalitions', 'permutation_shap',
    'sample_permutations',
]
