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

Implementation: every estimator is *linear in the coalition values*,
`phi = V @ M` with `V[b, k] = v_b(z_k)` and a coefficient matrix `M[k, i]`
(the Shapley weights, the regression's `w_k z_k`, or the +/-1 marginal
contributions along permutations). Coalitions (and so `M`) are SHARED ACROSS
THE BATCH: one set of coalitions is drawn per call and every example is
evaluated on it. Each example's estimate is then exactly the estimator of the
paper for that example; estimates of different examples are correlated
(same coalitions), which matters only when averaging errors over a batch.
The model is evaluated in memory-bounded chunks of at most `chunk_size` rows
(a chunk of examples times a chunk of coalitions), the masked inputs are built
from cheap descriptors inside the chunk, and each chunk's values are reduced
at once by a matmul with the chunk's rows of `M`, so `V` is never stored.
One jit compilation per input shape and static options.

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

Array = jax.Array

#: Largest number of players `exact_shapley` enumerates (2^20 coalitions).
EXACT_MAX_PLAYERS = 20

#: Automatic bound on the model rows per call: at most 16384 rows (an MLP's
#: throughput on CPU is flat from ~4k rows; fewer, larger calls lose less to
#: thread synchronisation on a busy machine) and about 16 MiB of float32
#: inputs per call (fewer rows for images), at least 64.
_MAX_AUTO_CHUNK = 16384
_MIN_AUTO_CHUNK = 64
_AUTO_CHUNK_ELEMENTS = 2 ** 22


# ------------------------------------------------------------------ helpers
def auto_chunk_size(input_shape: tuple[int, ...]) -> int:
  """Default model rows per call: ~16 MiB of float32 inputs, in [64, 16384]."""
  size = int(np.prod(input_shape)) if input_shape else 1
  return int(min(_MAX_AUTO_CHUNK, max(_MIN_AUTO_CHUNK,
                                      _AUTO_CHUNK_ELEMENTS // max(size, 1))))


def _chunk_size(chunk_size: int | None, box: bb.BlackBox) -> int:
  if chunk_size is None:
    return auto_chunk_size(box.input_shape)
  return _checks.check_chunk_size(chunk_size)


def _even(n: int, chunk: int) -> tuple[int, int]:
  """(num_chunks, chunk) with near-equal chunks of at most `chunk` items."""
  chunk = max(1, min(chunk, n))
  num = -(-n // chunk)
  return num, -(-n // num)


class _Plan(NamedTuple):
  """How `[batch] x [n coalitions]` model rows are split into calls."""
  num_e: int     # example chunks
  be: int        # examples per chunk
  num_c: int     # coalition chunks
  units: int     # coalition units (e.g. permutations) per chunk
  unit: int      # coalitions per unit


def _plan(batch: int, n_units: int, unit: int, chunk_size: int) -> _Plan:
  """Splits `batch * n_units * unit` model rows into chunks of <= chunk_size.

  A unit is an indivisible block of coalitions (1 coalition, or the d-1 chain
  coalitions of one permutation). When one example's coalitions fit in a call,
  several examples share a call; otherwise one example per call and several
  calls over its coalitions.
  """
  per_example = n_units * unit
  if per_example <= chunk_size:
    num_e, be = _even(batch, max(1, chunk_size // per_example))
    return _Plan(num_e, be, 1, n_units, unit)
  num_e, be = batch, 1
  num_c, units = _even(n_units, max(1, chunk_size // unit))
  return _Plan(num_e, be, num_c, units, unit)


def _pad_to(a: Array, total: int) -> Array:
  extra = total - a.shape[0]
  if extra <= 0:
    return a
  return jnp.concatenate([a, jnp.repeat(a[-1:], extra, axis=0)])


def _expand_fn(groups: masking.FeatureGroups | None,
               input_shape: tuple[int, ...]) -> Callable[[Array], Array]:
  """Player mask `[..., d]` -> input mask `[..., *input_shape]` (bool)."""
  if groups is None:
    return lambda m: m.reshape((*m.shape[:-1], *input_shape))
  return lambda m: jnp.take(m, groups.assignment, axis=-1)


def _masked_scores(score: Callable[[Array, Array], Array], expand: Callable,
                   xe: Array, base: Array, te: Array, masks: Array) -> Array:
  """Scores of `be` examples on `nc` coalitions: `[be, nc]`.

  Args:
    score: `(inputs[n, *input_shape], t[n]) -> [n]`.
    expand: player mask -> input mask.
    xe, base: `[be, *input_shape]` examples and their baselines.
    te: int `[be]` targets.
    masks: bool `[nc, d]` coalitions, shared by the `be` examples.
  """
  be, nc = xe.shape[0], masks.shape[0]
  m = expand(masks)                                           # [nc, *shape]
  inp = jnp.where(m[None], xe[:, None], base[:, None])        # [be, nc, ...]
  inp = inp.reshape((be * nc, *xe.shape[1:]))
  return score(inp, jnp.repeat(te, nc)).reshape(be, nc)


def _reduce_coalitions(score: Callable, expand: Callable, x: Array,
                       base: Array, t: Array,
                       gen: Callable[[Array], tuple[Array, Array]],
                       plan: _Plan, out_dim: int) -> Array:
  """`sum_k v_b(z_k) M[k, :]` for every example b: `[batch, out_dim]`.

  `gen(c)` returns chunk c's coalitions `bool[nc, d]` and coefficient rows
  `M_c[nc, out_dim]` (zero rows for padding). The model sees at most
  `plan.be * nc` rows per call; values are reduced by a matmul per chunk.
  """
  batch = x.shape[0]

  def one_chunk(args):
    xe, be_, te = args
    if plan.num_c == 1:
      masks, coef = gen(jnp.int32(0))
      return _masked_scores(score, expand, xe, be_, te, masks) @ coef

    def body(acc, c):
      masks, coef = gen(c)
      v = _masked_scores(score, expand, xe, be_, te, masks)
      return acc + v @ coef, None

    init = jnp.zeros((xe.shape[0], out_dim), jnp.float32)
    acc, _ = jax.lax.scan(body, init, jnp.arange(plan.num_c, dtype=jnp.int32))
    return acc

  if plan.num_e == 1:
    return one_chunk((x, base, t))
  total = plan.num_e * plan.be
  xs = tuple(_pad_to(a, total).reshape((plan.num_e, plan.be, *a.shape[1:]))
             for a in (x, base, t))
  out = jax.lax.map(one_chunk, xs)
  return out.reshape(total, out_dim)[:batch]


def _outputs(box: bb.BlackBox, x: Array, chunk: int) -> Array:
  """Raw outputs of the box on `x`, chunked: `[batch, num_outputs]`."""
  n = x.shape[0]
  num, c = _even(n, chunk)
  if num == 1:
    return box.apply_fn(box.params, x)
  xp = _pad_to(x, num * c).reshape((num, c, *x.shape[1:]))
  out = jax.lax.map(lambda xi: box.apply_fn(box.params, xi), xp)
  return out.reshape(num * c, -1)[:n]


def _convert(out: Array, box: bb.BlackBox, space: str) -> Array:
  if space == 'raw':
    return out
  lp = bb.to_log_probs(out, box.output)
  return lp if space == 'log_probs' else jnp.exp(lp)


def _endpoints(box: bb.BlackBox, x: Array, base: Array, target: Array | None,
               space: str, chunk: int) -> tuple[Array, Array, Array]:
  """Targets `[batch]` (None -> predicted class), `v(1) = f_t(x)` and
  `v(0) = f_t(baseline)`, both `[batch]`."""
  out_x = _outputs(box, x, chunk)
  t = (jnp.argmax(out_x, axis=-1).astype(jnp.int32) if target is None
       else target)
  v1 = bb.select_target(_convert(out_x, box, space), t)
  v0 = bb.select_target(_convert(_outputs(box, base, chunk), box, space), t)
  return t, v1, v0


def _num_players(box: bb.BlackBox,
                 groups: masking.FeatureGroups | None) -> int:
  return groups.num_groups if groups is not None else int(
      np.prod(box.input_shape))


def _finish(phi: Array, box: bb.BlackBox,
            groups: masking.FeatureGroups | None) -> Array:
  if groups is None:
    return phi.reshape((phi.shape[0], *box.input_shape))
  return phi


def _prepare(model: Any, x: Any, target: Any, baseline: Any, space: str,
             groups: Any, chunk_size: int | None
             ) -> tuple[bb.BlackBox, Array, Array | None, Array,
                        masking.FeatureGroups | None, int, int]:
  """The shared argument checks (before tracing): returns
  `(box, x, target, baseline[batch, *input_shape], groups, d, chunk)`."""
  box, x = _common.prepare(model, x)
  t = _common.check_target(box, target, x.shape[0])
  _common.check_space(box, space)
  base = _common.resolve_baseline(baseline, x)
  if groups is not None:
    groups = _common.check_groups(groups, box)
  d = _num_players(box, groups)
  return box, x, t, base, groups, d, _chunk_size(chunk_size, box)


# ------------------------------------------------------- Shapley kernel
def shapley_kernel(num_players: int) -> np.ndarray:
  """Shapley-kernel distribution over coalition sizes, `float64[d + 1]`.

  `p(s) ∝ (d - 1) / (s (d - s))` for `0 < s < d` (Lundberg & Lee 2017,
  Theorem 2: `pi(z) = (d-1) / (C(d,|z|) |z| (d-|z|))` summed over the
  `C(d, s)` coalitions of size s), normalised to one; `p(0) = p(d) = 0`
  (the empty and full coalitions are constraints, not samples).

  Args:
    num_players: d >= 2.
  """
  d = int(num_players)
  if d < 2:
    raise ValueError(f'num_players must be >= 2, got {num_players}.')
  s = np.arange(1, d)
  p = np.zeros(d + 1)
  p[1:d] = (d - 1) / (s * (d - s))
  return p / p.sum()


def _sample_sizes_coalitions(key: Array | int, num: int, d: int, sizes: Array,
                             cdf: Array, paired: bool) -> Array:
  """`num` coalitions: size drawn by inverse CDF over `sizes`, then uniform
  among subsets of that size; paired -> rows 2j+1 = 1 - rows 2j.

  One `uniform` draw feeds both steps (random ops dominate compile time).
  """
  base_num = -(-num // 2) if paired else num
  u = jax.random.uniform(key, (base_num, d + 1))
  idx = jnp.minimum(jnp.sum(u[:, :1] >= cdf[None, :], axis=-1),
                    sizes.shape[0] - 1)
  s = sizes[idx]
  ranks = jnp.argsort(jnp.argsort(u[:, 1:], axis=-1), axis=-1)
  z = ranks < s[:, None]
  if paired:
    z = jnp.stack([z, ~z], axis=1).reshape(2 * base_num, d)
  return z[:num]


def _size_cdf(p: np.ndarray) -> np.ndarray:
  c = np.cumsum(p / p.sum())
  return c.astype(np.float32)


def sample_shapley_coalitions(key: Array | int, num_samples: int,
                              num_players: int,
                              *, paired: bool = True) -> Array:
  """Coalitions drawn from the Shapley-kernel distribution, `bool[num, d]`.

  `P(|z| = s) ∝ 1 / (s (d - s))` for `0 < s < d`, then `z` uniform among the
  `C(d, s)` subsets of size s, so that `P(z) ∝ pi(z)`, the Shapley kernel
  (Lundberg & Lee 2017; the sampler of Covert & Lee 2021 and FastSHAP,
  Jethani et al. 2022). With `paired=True` (antithetic sampling) row `2j+1`
  is the complement `1 - z` of row `2j` (Covert & Lee 2021, Sec. 4.2); for
  odd `num` the last row is unpaired. Jittable (static `num_samples`,
  `num_players`).

  Args:
    key: PRNG key or int seed.
    num_samples: number of coalitions n.
    num_players: d >= 2.
    paired: antithetic pairs (z, 1 - z).
  Returns:
    `bool[num_samples, num_players]`, never all-False nor all-True.
  """
  key = _checks.as_key('key', key, method='sample_shapley_coalitions')
  d = _checks.check_int('num_players', num_players, 2)
  n = _checks.check_int('num_samples', num_samples, 1)
  return _sample_jit(key, n, d, bool(paired))


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _sample_jit(key: Array | int, n: int, d: int, paired: bool) -> Array:
  p = shapley_kernel(d)
  sizes = jnp.arange(1, d, dtype=jnp.int32)
  return _sample_sizes_coalitions(key, n, d, sizes,
                                  jnp.asarray(_size_cdf(p[1:d])), paired)


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
def _exact_core(box: bb.BlackBox, x: Array, base: Array, target: Array | None,
                groups: masking.FeatureGroups | None, *, space: str, d: int,
                plan: _Plan) -> Array:
  chunk = plan.be * plan.units
  t, v1, v0 = _endpoints(box, x, base, target, space, max(chunk, 1))
  if d == 1:
    return (v1 - v0)[:, None]
  w_plus, w_minus = (jnp.asarray(w) for w in _exact_size_weights(d))
  bits = jnp.arange(d, dtype=jnp.int32)
  nc = plan.units
  total = 1 << d

  def gen(c):
    k = c * nc + jnp.arange(nc, dtype=jnp.int32)
    z = ((k[:, None] >> bits) & 1).astype(bool)
    s = jnp.sum(z, axis=-1)
    coef = jnp.where(z, w_plus[s][:, None], -w_minus[s][:, None])
    return z, jnp.where((k < total)[:, None], coef, 0.0)

  score = _common.score_fn(box, space)
  return _reduce_coalitions(score, _expand_fn(groups, box.input_shape), x,
                            base, t, gen, plan, d)


def exact_shapley(model: bb.BlackBox | Callable, x: Array, *,
                  target: Array | int | None = None,
                  baseline: Array | float | str = 'zero',
                  groups: masking.FeatureGroups | None = None,
                  space: str = 'raw', chunk_size: int | None = None,
                  max_players: int = EXACT_MAX_PLAYERS) -> Array:
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
    baseline: the value of absent players: 'zero', 'mean', ... (see
      `masking.make_baseline`), a scalar, `[*input_shape]` or
      `[batch, *input_shape]`.
    groups: players = these feature groups (patches, tokens); else every
      input element is a player.
    space: 'raw', 'probs' or 'log_probs' (the explained output).
    chunk_size: model rows per call (memory bound); None = automatic.
    max_players: refuse `d > max_players` (cost `batch * 2^d` model rows).
  Returns:
    `[batch, num_groups]` with groups, else `[batch, *input_shape]`.
  Raises:
    ValueError: for `d > max_players` (use `kernel_shap` or
      `permutation_shap`), bad shapes, NaN inputs, bad targets.
  """
  box, x, t, base, groups, d, chunk = _prepare(model, x, target, baseline,
                                               space, groups, chunk_size)
  max_players = _checks.check_int('max_players', max_players, 1)
  if d > max_players:
    raise ValueError(
        f'exact_shapley enumerates 2^d coalitions; d={d} players exceeds the '
        f'limit max_players={max_players} (2^{max_players} coalitions per '
        'example). Use kernel_shap or permutation_shap, or fewer players '
        '(groups=masking.patch_groups/...).')
  plan = _plan(x.shape[0], 1 << d, 1, chunk)
  phi = _exact_core(box, x, base, t, groups, space=space, d=d, plan=plan)
  return _finish(phi, box, groups)


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
  p = shapley_kernel(d)                    # size probabilities, sums to 1
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
  cdf = _size_cdf(p[rest])
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
      zs = _sample_sizes_coalitions(
          key, plan.num_sampled, int(num_players),
          jnp.asarray(plan.sizes), jnp.asarray(plan.cdf), paired)
    z = jnp.concatenate([z, zs])
    w = jnp.concatenate([w, jnp.asarray(plan.w_sampled, jnp.float32)])
  return z, w


def _subsets_of_sizes(key: Array | int, sizes: Array, d: int, paired: bool
                      ) -> Array:
  """One uniform subset of each given size (+ its complement if paired)."""
  u = jax.random.uniform(key, (sizes.shape[0], d))
  z = jnp.argsort(jnp.argsort(u, axis=-1), axis=-1) < sizes[:, None]
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


@functools.partial(jax.jit, static_argnames=('space', 'd', 'num_samples',
                                             'paired', 'enumerate_sizes',
                                             'stratify', 'plan'))
def _kernel_core(box: bb.BlackBox, x: Array, base: Array, target: Array | None,
                 groups: masking.FeatureGroups | None, key: Array | None, *,
                 space: str, d: int, num_samples: int, paired: bool,
                 enumerate_sizes: bool, stratify: bool, plan: _Plan) -> Array:
  t, v1, v0 = _endpoints(box, x, base, target, space,
                         max(plan.be * plan.units, 1))
  if d == 1:
    return (v1 - v0)[:, None]
  z, w = kernel_shap_coalitions(key, d, num_samples, paired=paired,
                                enumerate_sizes=enumerate_sizes,
                                stratify=stratify)
  zf = z.astype(jnp.float32)
  wz = w[:, None] * zf                                          # [n, d]
  a = zf.T @ wz                                                 # [d, d]
  n = z.shape[0]
  nc = plan.units
  total = plan.num_c * nc
  zp = jnp.concatenate([z, jnp.zeros((total - n, d), bool)]) if total > n else z
  cp = jnp.concatenate([wz, jnp.zeros((total - n, d))]) if total > n else wz

  def gen(c):
    return (jax.lax.dynamic_slice_in_dim(zp, c * nc, nc),
            jax.lax.dynamic_slice_in_dim(cp, c * nc, nc))

  score = _common.score_fn(box, space)
  vz = _reduce_coalitions(score, _expand_fn(groups, box.input_shape), x, base,
                          t, gen, plan, d)
  b = vz - v0[:, None] * jnp.sum(wz, axis=0)[None]
  return constrained_shapley_regression(a, b, v1 - v0)


def kernel_shap(model: bb.BlackBox | Callable, x: Array, *,
                key: Array | int | None = None,
                target: Array | int | None = None,
                baseline: Array | float | str = 'zero',
                num_samples: int | None = None, paired: bool = True,
                enumerate_sizes: bool = True, stratify: bool = False,
                groups: masking.FeatureGroups | None = None,
                space: str = 'raw', chunk_size: int | None = None) -> Array:
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
    (`sample_shapley_coalitions`; paired = antithetic `(z, 1 - z)`), each
    with an equal share of the remaining kernel mass (the consistent
    estimator of Covert & Lee with `A` and `b` both estimated). With
    `enumerate_sizes=False` all coalitions are sampled. `stratify=True`
    replaces the random sizes by fixed counts per size class proportional
    to its kernel mass (weights mass / count; same estimator, stratified;
    at d = 100 with 2,248 samples its error was the same as random sizes).

  The coalitions are drawn once per call and SHARED by all examples of the
  batch (each example's estimate is the paper's estimator; `A` is solved once).

  Args:
    model: a `BlackBox` or a JAX callable `[n, *input_shape] -> [n, c]`.
    x: `[batch, *input_shape]`.
    key: PRNG key or int seed (not needed when every coalition is
      enumerated).
    target: None (predicted class), an int, or int `[batch]`.
    baseline: value of absent players ('zero', 'mean', scalar, array).
    num_samples: coalitions evaluated per example, >= d + 1; None = shap's
      'auto', `2 d + 2048`. Capped at `2^d - 2`.
    paired: antithetic sampling.
    enumerate_sizes: see above.
    stratify: see above.
    groups: players = feature groups; else every input element.
    space: 'raw', 'probs' or 'log_probs'.
    chunk_size: model rows per call (memory bound); None = automatic.
  Returns:
    `[batch, num_groups]` with groups, else `[batch, *input_shape]`.
  Raises:
    ValueError: `num_samples < d + 1`, missing key, bad shapes/values.
  """
  box, x, t, base, groups, d, chunk = _prepare(model, x, target, baseline,
                                               space, groups, chunk_size)
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
  if plan_k is not None and plan_k.num_sampled:
    key = _checks.as_key('key', key, method='kernel_shap')
  elif key is not None:
    key = _checks.as_key('key', key, method='kernel_shap')
  n = (len(plan_k.w_fixed) + plan_k.num_sampled) if plan_k else 1
  plan = _plan(x.shape[0], n, 1, chunk)
  phi = _kernel_core(box, x, base, t, groups, key, space=space, d=d,
                     num_samples=num_samples, paired=bool(paired),
                     enumerate_sizes=bool(enumerate_sizes),
                     stratify=bool(stratify), plan=plan)
  return _finish(phi, box, groups)


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
                                             'antithetic', 'plan'))
def _permutation_core(box: bb.BlackBox, x: Array, base: Array,
                      target: Array | None,
                      groups: masking.FeatureGroups | None, key: Array, *,
                      space: str, d: int, num_permutations: int,
                      antithetic: bool, plan: _Plan) -> Array:
  t, v1, v0 = _endpoints(box, x, base, target, space,
                         max(plan.be * plan.units * plan.unit, 1))
  if d == 1:
    return (v1 - v0)[:, None]
  num = num_permutations
  perms = sample_permutations(key, num, d, antithetic=antithetic)
  q = plan.units
  total = plan.num_c * q
  pp = _pad_to(perms, total)
  valid = (jnp.arange(total) < num).astype(jnp.float32)
  inv = 1.0 / num
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
    return masks.reshape(q * (d - 1), d), coef.reshape(q * (d - 1), d)

  score = _common.score_fn(box, space)
  phi = _reduce_coalitions(score, _expand_fn(groups, box.input_shape), x, base,
                           t, gen, plan, d)
  first = jnp.sum(jax.nn.one_hot(perms[:, 0], d), axis=0) * inv   # [d]
  last = jnp.sum(jax.nn.one_hot(perms[:, -1], d), axis=0) * inv
  return phi + v1[:, None] * last[None] - v0[:, None] * first[None]


def permutation_shap(model: bb.BlackBox | Callable, x: Array, *,
                     key: Array | int | None = None,
                     target: Array | int | None = None,
                     baseline: Array | float | str = 'zero',
                     num_permutations: int = 100, antithetic: bool = True,
                     groups: masking.FeatureGroups | None = None,
                     space: str = 'raw', chunk_size: int | None = None
                     ) -> Array:
  """Shapley values by permutation sampling (Strumbelj & Kononenko 2014).

      phi_i = E_pi [ v(Pre_i(pi) ∪ {i}) - v(Pre_i(pi)) ]

  estimated by the mean over `num_permutations` uniform permutations; each
  permutation costs `d - 1` model rows per example (`v(∅)`, `v(N)` are shared)
  and its marginal contributions telescope to `v(N) - v(∅)`, so efficiency
  holds exactly. `antithetic=True` pairs each permutation with its reverse
  (Covert & Lee's `antithetical` sampling). Permutations are drawn once per
  call and SHARED by all examples of the batch.

  Args:
    model: a `BlackBox` or a JAX callable.
    x: `[batch, *input_shape]`.
    key: PRNG key or int seed (required).
    target: None (predicted class), an int, or int `[batch]`.
    baseline: value of absent players ('zero', 'mean', scalar, array).
    num_permutations: permutations per call (>= 1).
    antithetic: pair each permutation with its reverse.
    groups: players = feature groups; else every input element.
    space: 'raw', 'probs' or 'log_probs'.
    chunk_size: model rows per call (memory bound); None = automatic.
  Returns:
    `[batch, num_groups]` with groups, else `[batch, *input_shape]`.
  """
  box, x, t, base, groups, d, chunk = _prepare(model, x, target, baseline,
                                               space, groups, chunk_size)
  num_permutations = _checks.check_int('num_permutations', num_permutations, 1)
  key = _checks.as_key('key', key, method='permutation_shap')
  plan = _plan(x.shape[0], num_permutations, max(d - 1, 1), chunk)
  phi = _permutation_core(box, x, base, t, groups, key, space=space, d=d,
                          num_permutations=num_permutations,
                          antithetic=bool(antithetic), plan=plan)
  return _finish(phi, box, groups)


__all__ = [
    'EXACT_MAX_PLAYERS', 'auto_chunk_size', 'constrained_shapley_regression',
    'exact_shapley', 'kernel_shap', 'kernel_shap_coalitions',
    'permutation_shap', 'sample_permutations', 'sample_shapley_coalitions',
    'shapley_kernel',
]
