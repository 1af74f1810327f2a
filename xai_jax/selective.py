"""Selective explanations (Monteiro Paes, Wei, Calmon, NeurIPS 2024).

Monteiro Paes, Wei and Calmon, "Selective Explanations", NeurIPS 2024
(arXiv:2405.19562; method note: `references/selective.md`). An amortized
explainer Amor (one network inference per input) is cheap but sometimes
wrong; a Monte Carlo explainer MC (KernelSHAP, LIME, ... with a small budget
n) is slower but unbiased. The selective explainer keeps Amor where an
uncertainty score s(x) is low and otherwise "explains with an initial guess",
mixing Amor and MC with a weight lambda(x):

  SE(x) = Amor(x)                                  if s(x) <= t_alpha  (kept)
  SE(x) = lam(x) Amor(x) + (1 - lam(x)) MC(x)      otherwise           (routed)

Naming used everywhere in this module:

* `coverage` = alpha = the fraction of inputs that KEEP the amortized
  explanation (the paper lets the practitioner fix the fraction that gets an
  explanation with initial guess, i.e. 1 - coverage).
* "kept" rows have s <= t_alpha; "routed" rows have s > t_alpha (`route`).
* t_alpha (`calibrate_threshold`) is the alpha-quantile of s on a calibration
  split D_cal, disjoint from the data that trained the explainers and from
  the test split.

The pieces, all pure functions of arrays (jnp in, jnp out):

* §3, uncertainty and selection: `deep_uncertainty` (variance across an
  ensemble of amortized explainers), `ensemble_mean`, the learned
  uncertainty (`fit_learned_uncertainty`, `predict_uncertainty`: a network
  that predicts the amortized explainer's error), `calibrate_threshold`,
  `route`.
* §4, the combination function: the closed-form least-squares lambda
  (`lambda_terms`, `fit_lambda`), global or per uncertainty bin
  (`fit_lambdas`, `lambda_of`), `combine` and `selective_explanations`.
* §5 and Appendix D, the metrics: `mse_per_input`, `spearman_per_input`,
  `uncertainty_auroc`, `uncertainty_spearman` and `coverage_curve` (MSE and
  Spearman to the target explanations as a function of coverage).

* The explainer protocol (`default_config`, `fit`, `explain`; registered as
  `xai_jax.EXPLAINERS['selective']`): FastSHAP (`xai_jax.fastshap`) as the
  amortized explainer (a deep ensemble trained in one vmapped run),
  KernelSHAP or LIME with n model inferences as MC^n, exact Shapley values
  or many-sample KernelSHAP of the same game as the high-quality targets.

    import xai_jax as xj
    sel = xj.selective.fit(0, box, x_train, coverage=0.8)
    out = xj.selective.explain(sel, x_test, key=1)
    out.scores, out.routed, out.num_inferences

Explanations are `[batch, d]` arrays (d features or groups; flatten images'
patch grids or token positions to d first).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Mapping, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from xai_jax import _checks
from xai_jax import attribution
from xai_jax import blackbox as bb
from xai_jax import fastshap
from xai_jax import masking
from xai_jax import nets
from xai_jax import protocol
from xai_jax import train

Array = jax.Array
PyTree = Any


# =============================================================================
# Argument checks shared by this module.
# =============================================================================


def _float_array(name: str, x: Any, *, ndim: int | None = None,
                 finite: bool = True) -> Array:
  """`x` as a floating jnp array of `ndim` dimensions, checked (host values)."""
  x = _checks.as_array(name, x)
  _checks.check_array(name, x, ndim=ndim, finite=finite)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    x = x.astype(jnp.float32)
  return x


def _same_shape(name: str, x: Array, ref: Array, what: str) -> None:
  if tuple(x.shape) != tuple(ref.shape):
    raise ValueError(f'{name} must have the shape of {what} '
                     f'{tuple(ref.shape)}, got {tuple(x.shape)}.')


def _scalar(name: str, x: Any, *, allow_inf: bool = True) -> Array:
  """A float scalar (not NaN; +-inf allowed unless `allow_inf` is False)."""
  x = _checks.as_array(name, x)
  if x.ndim != 0:
    raise ValueError(f'{name} must be a scalar, got shape {tuple(x.shape)}.')
  if not _checks.is_tracer(x):
    v = float(np.asarray(x))
    if math.isnan(v) or (not allow_inf and math.isinf(v)):
      raise ValueError(f'{name} must be a {"" if allow_inf else "finite "}'
                       f'number, got {v}.')
  return x.astype(jnp.float32) if not jnp.issubdtype(
      x.dtype, jnp.floating) else x


def _check_coverage(coverage: Any) -> float:
  """coverage alpha in [0, 1] as a Python float (ValueError names it)."""
  if isinstance(coverage, (bool, np.bool_)) or _checks.is_tracer(coverage):
    raise ValueError(f'coverage must be a number in [0, 1] (the fraction of '
                     f'inputs that keep the amortized explanation), got '
                     f'{coverage!r}.')
  try:
    v = np.asarray(coverage, dtype=np.float64)
  except (TypeError, ValueError):
    v = None
  if v is None or v.size != 1 or v.ndim > 1 or not np.isfinite(v) or not (
      0.0 <= float(v) <= 1.0):
    raise ValueError(f'coverage must be a number in [0, 1] (the fraction of '
                     f'inputs that keep the amortized explanation), got '
                     f'{coverage!r}.')
  return float(v)


def _order_index(fraction: float, n: int) -> int:
  """k = ceil(fraction * n) in [1, n] (1-based), robust to float round-off.

  `0.07 * 100` is `7.000000000000001` in floating point; rounding the product
  to 9 decimals first gives the intended ceil (7, not 8).
  """
  k = int(math.ceil(round(fraction * n, 9)))
  return min(max(k, 1), n)


# =============================================================================
# §3: uncertainty scores.
# =============================================================================


def _check_members(member_scores: Any) -> Array:
  x = _checks.as_array('member_scores', member_scores)
  if x.ndim != 3:
    raise ValueError(f'member_scores must be [k, batch, d] (the attributions '
                     f'of k ensemble members), got shape {tuple(x.shape)}.')
  return _float_array('member_scores', x, ndim=3)


def deep_uncertainty(member_scores: Array) -> Array:
  """Deep uncertainty: the ensemble's per-feature variance, averaged (§3).

  s(x) = (1/d) sum_i Var_j(Amor^j(x)_i), the variance (ddof 0) over the k
  members Amor^1..Amor^k (amortized explainers that differ only in their
  random seed), averaged over the d features. The paper's constant 1/(dk)
  instead of 1/d rescales every score alike and so changes neither the
  threshold's routing nor any rank-based metric. Jittable.

  Args:
    member_scores: `[k, batch, d]` the members' attributions, k >= 2.
  Returns:
    `[batch]` the uncertainty of each input.
  Raises:
    ValueError: not 3-D, k < 2, or NaN/inf values.
  """
  x = _check_members(member_scores)
  if x.shape[0] < 2:
    raise ValueError(f'deep uncertainty needs an ensemble of at least 2 '
                     f'members: member_scores has k={x.shape[0]} '
                     f'(shape {tuple(x.shape)}).')
  return jnp.mean(jnp.var(x, axis=0), axis=-1)


def ensemble_mean(member_scores: Array) -> Array:
  """The amortized explanation of an ensemble: the mean of its members.

  Our choice: the paper does not say whether the selective explainer uses
  one member or the ensemble's mean as Amor when the deep uncertainty is
  computed from k members; the mean is the natural estimate (and never worse
  in MSE than the average member, by Jensen's inequality). Jittable.

  Args:
    member_scores: `[k, batch, d]` the members' attributions (k >= 1).
  Returns:
    `[batch, d]` the mean over the k members.
  """
  x = _check_members(member_scores)
  if x.shape[0] < 1:
    raise ValueError('member_scores must hold at least one member (k >= 1).')
  return jnp.mean(x, axis=0)


# =============================================================================
# §3: selection (threshold and routing).
# =============================================================================


def calibrate_threshold(calibration_scores: Array, coverage: float) -> Array:
  """t_alpha: the coverage-quantile of the calibration uncertainties (§3).

  The selection rule is "keep the amortized explanation iff s <= t";
  `coverage` (alpha) is the fraction of inputs that keep it. For n
  calibration scores:

  * coverage = 1: t = +inf (every input is kept, exactly);
  * coverage = 0: t = -inf (every input is routed);
  * otherwise t = s_(k), the k-th smallest score with k = ceil(alpha n)
    (1-based): the fraction of calibration scores <= t is the smallest
    achievable value >= alpha (exactly k/n without ties). On fresh inputs
    from the same distribution the kept fraction is alpha up to O(1/n).

  Args:
    calibration_scores: `[n]` uncertainties s on D_cal (finite, n >= 1).
    coverage: alpha in [0, 1], the fraction of inputs that keep Amor (a
      Python number: it fixes the order statistic).
  Returns:
    the threshold, a float scalar (the scores' dtype).
  Raises:
    ValueError: coverage outside [0, 1], NaN or not a number; scores empty,
      not 1-D or non-finite.
  """
  alpha = _check_coverage(coverage)
  s = _float_array('calibration_scores', calibration_scores, ndim=1)
  n = s.shape[0]
  if n == 0:
    raise ValueError('calibration_scores must hold at least one score.')
  if alpha == 1.0:
    return jnp.asarray(jnp.inf, s.dtype)
  if alpha == 0.0:
    return jnp.asarray(-jnp.inf, s.dtype)
  return jnp.sort(s)[_order_index(alpha, n) - 1]


def route(scores: Array, threshold: Array | float) -> Array:
  """Which inputs are routed to the explanation with initial guess (§3).

  routed = s > t, i.e. the paper's tau_alpha(x) = 0. The complement (s <= t)
  keeps the amortized explanation. Jittable.

  Args:
    scores: `[batch]` uncertainties s.
    threshold: t_alpha (`calibrate_threshold`), a scalar.
  Returns:
    bool `[batch]`, True where the input is routed.
  """
  s = _float_array('scores', scores, ndim=1)
  t = _scalar('threshold', threshold)
  return s > t


# =============================================================================
# §4: the combination function lambda.
# =============================================================================


def _explanations(amortized: Any, mc: Any, *, finite_mc: bool = True
                  ) -> tuple[Array, Array]:
  a = _checks.as_array('amortized', amortized)
  if a.ndim != 2:
    raise ValueError(f'amortized must be explanations [n, d], got shape '
                     f'{tuple(a.shape)}.')
  a = _float_array('amortized', a, ndim=2)
  m = _checks.as_array('mc', mc)
  _same_shape('mc', m, a, 'the amortized explanations [n, d]')
  m = _float_array('mc', m, ndim=2, finite=finite_mc)
  return a, m


def lambda_terms(amortized: Array, mc: Array, targets: Array
                 ) -> tuple[Array, Array]:
  """The per-point terms of the closed-form lambda (§4).

  For calibration point i: num_i = <HQ_i - MC_i, Amor_i - MC_i> and
  den_i = ||Amor_i - MC_i||^2, so that the least-squares lambda over any set
  B is sum_B num / sum_B den (`fit_lambda`). Jittable.

  Args:
    amortized: `[n, d]` Amor(x_i).
    mc: `[n, d]` MC^n(x_i).
    targets: `[n, d]` the high-quality explanations HQ(x_i).
  Returns:
    `(num [n], den [n])`.
  Raises:
    ValueError: shapes differ (naming the argument), or NaN/inf values.
  """
  a, m = _explanations(amortized, mc)
  t = _targets_like('targets', targets, a)
  return _terms_kernel(a, m, t)


def _targets_like(name: str, targets: Any, a: Array) -> Array:
  """`targets` as float `[n, d]` with the explanations' shape, else a
  ValueError naming `name`."""
  t = _checks.as_array(name, targets)
  if tuple(t.shape) != tuple(a.shape):
    raise ValueError(f'{name} must have the shape of the explanations '
                     f'[n, d] = {tuple(a.shape)}, got {tuple(t.shape)}.')
  return _float_array(name, t, ndim=2)


@jax.jit
def _terms_kernel(a: Array, m: Array, t: Array) -> tuple[Array, Array]:
  diff = a - m
  return jnp.sum((t - m) * diff, axis=-1), jnp.sum(diff * diff, axis=-1)


def _lambda_from_sums(sum_num: Array, sum_den: Array, sum_w: Array,
                      eps: float, clip: bool) -> Array:
  lam = sum_num / (sum_den + eps)
  if clip:
    lam = jnp.clip(lam, 0.0, 1.0)
  return jnp.where(sum_w > 0, lam, jnp.ones_like(lam))


def _terms(num: Any, den: Any) -> tuple[Array, Array]:
  num = _float_array('num', num, ndim=1)
  den = _float_array('den', den, ndim=1)
  _same_shape('den', den, num, 'num')
  if not _checks.is_tracer(den) and bool(np.any(np.asarray(den) < 0)):
    raise ValueError('den must be >= 0 (squared norms ||Amor - MC||^2).')
  return num, den


def fit_lambda(num: Array, den: Array, *, weights: Array | None = None,
               eps: float = 1e-12, clip: bool = True) -> Array:
  """The closed-form least-squares lambda of a set of points (§4).

  lam* = sum_i w_i num_i / (sum_i w_i den_i + eps) minimises
  sum_i w_i ||lam Amor_i + (1 - lam) MC_i - HQ_i||^2 (the MSE to the
  high-quality explanations; `lambda_terms` gives num and den).

  * clip=True clips lam* to [0, 1]. lam = 0 (MC) and lam = 1 (Amor) are
    feasible, so the unclipped optimum is at least as good on the fitted
    points; the clipped one is the optimum over [0, 1] (the objective is a
    convex quadratic), still no worse than either explainer alone, and it
    guards against extrapolating a mixture outside the two explanations.
  * sum of weights = 0 (no point): returns 1.0, i.e. keep the amortized
    explanation.
  * sum w den = 0 (Amor == MC on every point): num is 0 too and lam = 0/eps =
    0; any lam gives the same combination there.

  Jittable (with `eps` and `clip` static).

  Args:
    num: `[n]` numerators <HQ - MC, Amor - MC>.
    den: `[n]` denominators ||Amor - MC||^2 (>= 0).
    weights: `[n]` non-negative weights (e.g. a 0/1 membership of the set B);
      None = all ones.
    eps: added to the denominator.
    clip: clip to [0, 1].
  Returns:
    lam, a float scalar.
  """
  num, den = _terms(num, den)
  if weights is None:
    w = jnp.ones_like(num)
  else:
    w = _float_array('weights', weights, ndim=1)
    _same_shape('weights', w, num, 'num')
    if not _checks.is_tracer(w) and bool(np.any(np.asarray(w) < 0)):
      raise ValueError('weights must be >= 0.')
  return _lambda_from_sums(jnp.sum(w * num), jnp.sum(w * den), jnp.sum(w),
                           eps, clip)


def _bin_ids(uncertainty: Array, edges: Array) -> Array:
  """Bin b of (e_{b-1}, e_b]: the number of edges strictly below s.

  Bins are closed on the right, like the selection rule (kept iff s <= t):
  a score equal to an edge falls in the lower bin.
  """
  return jnp.searchsorted(edges, uncertainty, side='left')


def fit_lambdas(num: Array, den: Array, uncertainty: Array,
                threshold: Array | float, *, num_bins: int = 1,
                clip: bool = True, min_points_per_bin: int = 2,
                eps: float = 1e-12) -> tuple[Array, Array]:
  """lambda fitted on the routed calibration points, global or per bin (§4).

  The fitted set is B = {x in D_cal : s(x) > t} (the points that receive an
  explanation with initial guess at this threshold; our choice of B).

  * num_bins = 1: one global lam (`fit_lambda` over B); `edges` is empty.
  * num_bins = K > 1: the m routed points are split into K equal-count
    quantile bins of their uncertainty, one lam per bin. With u_(j) the
    sorted routed uncertainties, edge e_b = u_(ceil(b m / K)) (1-based,
    b = 1..K-1: the rule of `calibrate_threshold`) and bin b (0-based) is
    (e_b, e_{b+1}] with e_0 = t and e_K = +inf: closed on the right like
    the selection rule (side 'left' of `jnp.searchsorted`, the rule
    `lambda_of` applies at test time). Without ties bin b holds
    ceil((b+1) m / K) - ceil(b m / K) points.
  * No routed calibration point (coverage 1, t = +inf): every lam is 1.0
    and the edges are t repeated; at test time nothing is routed either.
    (At a finite t this happens only when ties put every calibration score
    <= t; test inputs above t are then routed with lam = 1, i.e. they get
    Amor's values.)

  The sums run as segment sums over bin ids (`jax.ops.segment_sum`); the
  counts are checked on the host.

  Args:
    num: `[n]` numerators of `lambda_terms` on D_cal.
    den: `[n]` denominators of `lambda_terms` on D_cal.
    uncertainty: `[n]` the uncertainties s on D_cal.
    threshold: t_alpha (`calibrate_threshold` on the same scores).
    num_bins: K, the number of uncertainty bins (>= 1).
    clip: clip each lam to [0, 1] (see `fit_lambda`).
    min_points_per_bin: the fewest routed points a bin may be fitted on.
    eps: added to each denominator.
  Returns:
    `(edges [K-1], lambdas [K])`.
  Raises:
    ValueError: naming num_bins, when 0 < m < K * min_points_per_bin (a
      calibration split too small for the number of bins) or when ties in
      the uncertainty leave a bin with fewer than min_points_per_bin points.
  """
  num_bins = _checks.check_int('num_bins', num_bins, 1)
  min_points_per_bin = _checks.check_int('min_points_per_bin',
                                         min_points_per_bin, 1)
  num, den = _terms(num, den)
  u = _float_array('uncertainty', uncertainty, ndim=1)
  _same_shape('uncertainty', u, num, 'num [n]')
  t = _scalar('threshold', threshold)
  routed = u > t
  m = int(np.sum(np.asarray(routed)))
  if m == 0:
    return (jnp.full((num_bins - 1,), t, u.dtype),
            jnp.ones((num_bins,), jnp.float32))
  if m < num_bins * min_points_per_bin:
    raise ValueError(
        f'num_bins={num_bins} needs at least num_bins * min_points_per_bin = '
        f'{num_bins * min_points_per_bin} routed calibration points (s > t), '
        f'got {m} of {u.shape[0]}: a calibration split too small for the '
        f'number of bins. Use fewer bins, a larger calibration split or a '
        f'lower coverage.')
  ranks = jnp.asarray([_order_index(b / num_bins, m) - 1
                       for b in range(1, num_bins)], jnp.int32)
  edges, lambdas, counts = _fit_lambdas_kernel(
      num, den, u, t, ranks, eps=float(eps), clip=bool(clip))
  counts = np.asarray(counts)
  if num_bins > 1 and counts.min() < min_points_per_bin:
    raise ValueError(
        f'num_bins={num_bins}: ties in the uncertainty leave bins with '
        f'{counts.astype(int).tolist()} routed calibration points, fewer than '
        f'min_points_per_bin={min_points_per_bin}. Use fewer bins.')
  return edges, lambdas


@functools.partial(jax.jit, static_argnames=('eps', 'clip'))
def _fit_lambdas_kernel(num: Array, den: Array, u: Array, t: Array,
                        ranks: Array, *, eps: float, clip: bool
                        ) -> tuple[Array, Array, Array]:
  """Edges (the routed order statistics `ranks [K-1]`, 0-based), lambdas
  `[K]` and routed counts `[K]`."""
  num_bins = ranks.shape[0] + 1
  routed = u > t
  edges = jnp.sort(jnp.where(routed, u, jnp.inf))[ranks]
  seg = functools.partial(jax.ops.segment_sum,
                          segment_ids=_bin_ids(u, edges),
                          num_segments=num_bins)
  w = routed.astype(num.dtype)
  sum_w = seg(w)
  lambdas = _lambda_from_sums(seg(w * num), seg(w * den), sum_w, eps, clip)
  return edges, lambdas, sum_w


def lambda_of(uncertainty: Array, edges: Array, lambdas: Array) -> Array:
  """The lam of each input's uncertainty bin (§4). Jittable.

  Bin b = the number of edges strictly below s (`jnp.searchsorted(edges, s,
  side='left')`, bins closed on the right), the rule of `fit_lambdas`. A
  score below the first edge gets bin 0, above the last the top bin.

  Args:
    uncertainty: `[batch]` uncertainties s.
    edges: `[K-1]` the inner bin edges of `fit_lambdas`.
    lambdas: `[K]` the per-bin lam.
  Returns:
    `[batch]` lam(x).
  """
  u = _float_array('uncertainty', uncertainty, ndim=1)
  e, lam = _edges_lambdas(edges, lambdas)
  return lam[_bin_ids(u, e)]


def _edges_lambdas(edges: Any, lambdas: Any) -> tuple[Array, Array]:
  e = _float_array('edges', edges, ndim=1, finite=False)  # +-inf allowed
  if not _checks.is_tracer(e) and bool(np.any(np.isnan(np.asarray(e)))):
    raise ValueError('edges contains NaN values.')
  lam = _float_array('lambdas', lambdas, ndim=1)
  if lam.shape[0] != e.shape[0] + 1:
    raise ValueError(f'lambdas must have len(edges) + 1 = {e.shape[0] + 1} '
                     f'entries, got {lam.shape[0]}.')
  return e, lam


def combine(amortized: Array, mc: Array, lam: Array | float) -> Array:
  """The explanation with initial guess lam Amor + (1 - lam) MC (§4).

  Jittable.

  Args:
    amortized: `[batch, d]` Amor(x).
    mc: `[batch, d]` MC^n(x).
    lam: a scalar or `[batch]`.
  Returns:
    `[batch, d]` lam[:, None] * amortized + (1 - lam[:, None]) * mc.
  """
  a, m = _explanations(amortized, mc)
  lam = _float_array('lam', lam)
  if lam.ndim == 0:
    lam = jnp.broadcast_to(lam, a.shape[:1])
  if lam.shape != a.shape[:1]:
    raise ValueError(f'lam must be a scalar or [batch] = [{a.shape[0]}], got '
                     f'shape {tuple(lam.shape)}.')
  return _combine(a, m, lam)


def _combine(a: Array, m: Array, lam: Array) -> Array:
  return lam[:, None] * a + (1.0 - lam[:, None]) * m


def selective_explanations(amortized: Array, mc: Array, uncertainty: Array,
                           threshold: Array | float, edges: Array,
                           lambdas: Array) -> tuple[Array, Array]:
  """The selective explanation SE(x) (paper §3-§4, Algorithm 1).

  SE(x) = Amor(x) where s(x) <= t (kept; returned bitwise unchanged) and
  lam(x) Amor(x) + (1 - lam(x)) MC(x) where s(x) > t (routed), lam(x) from
  the bin of s(x) (`lambda_of`). The MC rows of kept inputs are never used:
  they may hold anything (zeros, NaN) when MC was run on the routed rows
  only. Jittable.

  Args:
    amortized: `[batch, d]` Amor(x).
    mc: `[batch, d]` MC^n(x) (only routed rows matter).
    uncertainty: `[batch]` s(x).
    threshold: t_alpha (`calibrate_threshold`).
    edges: `[K-1]` bin edges of `fit_lambdas`.
    lambdas: `[K]` per-bin lam of `fit_lambdas`.
  Returns:
    `(scores [batch, d], routed bool [batch])`.
  """
  a, m = _explanations(amortized, mc, finite_mc=False)
  u = _float_array('uncertainty', uncertainty, ndim=1)
  if u.shape[0] != a.shape[0]:
    raise ValueError(f'uncertainty must have one score per row of amortized '
                     f'({a.shape[0]}), got shape {tuple(u.shape)}.')
  t = _scalar('threshold', threshold)
  e, lam = _edges_lambdas(edges, lambdas)
  return _selective_kernel(a, m, u, t, e, lam)


@jax.jit
def _selective_kernel(a: Array, m: Array, u: Array, t: Array, edges: Array,
                      lambdas: Array) -> tuple[Array, Array]:
  routed = u > t
  mixed = _combine(a, m, lambdas[_bin_ids(u, edges)])
  return jnp.where(routed[:, None], mixed, a), routed


# =============================================================================
# Metrics (§5, Appendix D).
# =============================================================================


def _average_ranks(v: Array) -> Array:
  """1-based ranks of `v [d]`, ties get the average of their ranks."""
  sv = jnp.sort(v)
  lo = jnp.searchsorted(sv, v, side='left')
  hi = jnp.searchsorted(sv, v, side='right')
  return (lo + hi + 1).astype(jnp.float32) * 0.5


def _pearson(a: Array, b: Array) -> Array:
  """Pearson correlation over the last axis; NaN where either is constant."""
  a = a - jnp.mean(a, axis=-1, keepdims=True)
  b = b - jnp.mean(b, axis=-1, keepdims=True)
  den = jnp.sqrt(jnp.sum(a * a, axis=-1) * jnp.sum(b * b, axis=-1))
  safe = jnp.where(den > 0, den, 1.0)
  return jnp.where(den > 0, jnp.sum(a * b, axis=-1) / safe, jnp.nan)


def _pair(name_a: str, a: Any, name_b: str, b: Any, ndim: int
          ) -> tuple[Array, Array]:
  a = _float_array(name_a, a, ndim=ndim)
  b = _checks.as_array(name_b, b)
  _same_shape(name_b, b, a, name_a)
  return a, _float_array(name_b, b, ndim=ndim)


def mse_per_input(scores: Array, targets: Array) -> Array:
  """Per-input MSE to the targets, ||s - t||^2 / d (the paper's main metric).

  Args:
    scores: `[n, d]` explanations.
    targets: `[n, d]` target (high-quality) explanations.
  Returns:
    `[n]`.
  """
  s, t = _pair('scores', scores, 'targets', targets, 2)
  return jnp.mean((s - t) ** 2, axis=-1)


def spearman_per_input(scores: Array, targets: Array) -> Array:
  """Per-input Spearman rank correlation over the d features (Appendix D).

  The Pearson correlation of the average ranks (ties share their mean rank,
  as `scipy.stats.spearmanr`); NaN for a row whose scores or targets are
  constant. Vectorised (sorts and searches, O(d log d) per row); jittable.

  Args:
    scores: `[n, d]` explanations.
    targets: `[n, d]` target explanations.
  Returns:
    `[n]` in [-1, 1] (or NaN).
  """
  s, t = _pair('scores', scores, 'targets', targets, 2)
  return _spearman_rows(s, t)


@jax.jit
def _spearman_rows(s: Array, t: Array) -> Array:
  ranks = jax.vmap(_average_ranks)
  return _pearson(ranks(s), ranks(t))


def uncertainty_spearman(uncertainty: Array, errors: Array) -> Array:
  """Spearman rank correlation across inputs of s(x) and the true error.

  Measures how well an uncertainty ranks the amortized explainer's errors
  (NaN if either is constant). Jittable.

  Args:
    uncertainty: `[n]` s(x).
    errors: `[n]` true errors (e.g. `mse_per_input(amortized, targets)`).
  Returns:
    a scalar.
  """
  u, e = _pair('uncertainty', uncertainty, 'errors', errors, 1)
  return _spearman_rows(u[None], e[None])[0]


def uncertainty_auroc(uncertainty: Array, errors: Array, *,
                      top_fraction: float = 0.1) -> Array:
  """AUROC of the uncertainty for detecting the inputs with the largest error.

  Positives: the inputs whose true error is in the top `top_fraction` (the
  top decile by default): error >= the k-th largest error, k =
  ceil(top_fraction n) (every input tied with it included). The AUROC is
  P(s(pos) > s(neg)) + 1/2 P(s(pos) = s(neg)) (Mann-Whitney with average
  ranks, equal to `sklearn.metrics.roc_auc_score`); NaN when there is no
  negative (all errors tied). Jittable (`top_fraction` static).

  Args:
    uncertainty: `[n]` s(x).
    errors: `[n]` true errors.
    top_fraction: the fraction of inputs called "high error", in (0, 1).
  Returns:
    a scalar in [0, 1] (or NaN).
  """
  u, e = _pair('uncertainty', uncertainty, 'errors', errors, 1)
  top_fraction = _checks.check_probability('top_fraction', top_fraction)
  n = u.shape[0]
  if n < 2:
    raise ValueError(f'uncertainty must hold at least 2 inputs, got {n}.')
  return _auroc_kernel(u, e, _order_index(top_fraction, n))


@functools.partial(jax.jit, static_argnames=('k',))
def _auroc_kernel(u: Array, e: Array, k: int) -> Array:
  """Mann-Whitney AUROC of `u` for the rows with the k largest `e` (+ ties)."""
  n = u.shape[0]
  pos = e >= jnp.sort(e)[n - k]
  n_pos = jnp.sum(pos).astype(jnp.float32)
  n_neg = n - n_pos
  rank_sum = jnp.sum(jnp.where(pos, _average_ranks(u), 0.0))
  auc = (rank_sum - n_pos * (n_pos + 1) / 2) / jnp.maximum(n_pos * n_neg, 1.0)
  return jnp.where(n_neg > 0, auc, jnp.nan)


def coverage_curve(amortized: Array, mc: Array, uncertainty_test: Array,
                   uncertainty_cal: Array, num_cal: Array, den_cal: Array,
                   targets_test: Array, coverages: Sequence[float], *,
                   num_bins: int = 1, clip: bool = True,
                   min_points_per_bin: int = 2) -> dict[str, Array]:
  """MSE and Spearman of the selective explanations over a coverage grid (§5).

  For each coverage alpha (the fraction of inputs that keep Amor): t_alpha =
  `calibrate_threshold(uncertainty_cal, alpha)`; lambdas fitted on the
  calibration terms of the routed calibration points (`fit_lambdas`); the
  selective explanations of the test set (`selective_explanations`), scored
  against `targets_test`. Coverage 1 is pure Amor; coverage 0 combines every
  input.

  Baselines of the uncertainty, by what is passed as the uncertainties
  (on both splits): a *random* ranking = random draws (e.g.
  `jax.random.uniform`); the *oracle* = the true errors
  (`mse_per_input(amortized, targets)` on each split).

  Args:
    amortized: `[n, d]` Amor on D_test.
    mc: `[n, d]` MC^n on D_test.
    uncertainty_test: `[n]` s on D_test.
    uncertainty_cal: `[n_cal]` s on D_cal.
    num_cal: `[n_cal]` `lambda_terms` numerators on D_cal.
    den_cal: `[n_cal]` `lambda_terms` denominators on D_cal.
    targets_test: `[n, d]` HQ on D_test.
    coverages: `[m]` coverages in [0, 1].
    num_bins: K, uncertainty bins of lambda (1: one global lambda).
    clip: clip lambda to [0, 1].
    min_points_per_bin: see `fit_lambdas`.
  Returns:
    a dict of `[m]` arrays: 'coverage'; 'mse' (mean over test rows of
    `mse_per_input`); 'spearman' (nanmean over test rows of
    `spearman_per_input`); 'routed_fraction' (the test rows routed);
    'lambda_mean' (mean lam over the routed test rows, NaN when none is
    routed).
  """
  a, m = _explanations(amortized, mc)
  t_test = _targets_like('targets_test', targets_test, a)
  u_test = _float_array('uncertainty_test', uncertainty_test, ndim=1)
  if u_test.shape[0] != a.shape[0]:
    raise ValueError(f'uncertainty_test must have one score per test row '
                     f'({a.shape[0]}), got shape {tuple(u_test.shape)}.')
  grid = [_check_coverage(c) for c in np.atleast_1d(np.asarray(
      coverages, dtype=object))]
  out = {k: [] for k in ('coverage', 'mse', 'spearman', 'routed_fraction',
                         'lambda_mean')}
  for alpha in grid:
    t = calibrate_threshold(uncertainty_cal, alpha)
    edges, lambdas = fit_lambdas(num_cal, den_cal, uncertainty_cal, t,
                                 num_bins=num_bins, clip=clip,
                                 min_points_per_bin=min_points_per_bin)
    row = _curve_point(a, m, u_test, t_test, t, edges, lambdas)
    out['coverage'].append(alpha)
    for k, v in row.items():
      out[k].append(v)
  return {k: jnp.asarray(v, jnp.float32) for k, v in out.items()}


@jax.jit
def _curve_point(a: Array, m: Array, u: Array, targets: Array, t: Array,
                 edges: Array, lambdas: Array) -> dict[str, Array]:
  """The test-set metrics of one coverage (see `coverage_curve`)."""
  scores, routed = _selective_kernel(a, m, u, t, edges, lambdas)
  lam = lambdas[_bin_ids(u, edges)]
  n_routed = jnp.sum(routed)
  return {
      'mse': jnp.mean(jnp.mean((scores - targets) ** 2, axis=-1)),
      'spearman': jnp.nanmean(_spearman_rows(scores, targets)),
      'routed_fraction': jnp.mean(routed.astype(jnp.float32)),
      'lambda_mean': jnp.where(
          n_routed > 0, jnp.sum(jnp.where(routed, lam, 0.0))
          / jnp.maximum(n_routed, 1), jnp.nan),
  }


# =============================================================================
# §3: learned uncertainty.
# =============================================================================


@flax.struct.dataclass
class LearnedUncertainty:
  """A network that predicts the amortized explainer's error (§3).

  `predict_uncertainty` returns the predicted log error, mu + sigma * net(x),
  an estimate of log(e(x) + error_offset).

  Attributes:
    params: the network's parameters.
    target_mean: mu, the mean of the training targets log(e + offset).
    target_scale: sigma, their standard deviation (1 if they are constant).
    x_shift: tabular: the training features' mean `[*input_shape]` (inputs
      are standardised); None for text and images.
    x_scale: tabular: their standard deviation (1 where constant); None else.
    error_offset: the eps of log(e + eps); exp(score) - eps reads the score
      as an error.
    module: the linen network (`nets.make_selector`).
    modality: 'tabular', 'image' or 'text'.
    input_shape: the input shape `x` rows must have.
    pad_id: text: the padding token left out of the mean.
  """
  params: PyTree
  target_mean: Array
  target_scale: Array
  x_shift: Array | None
  x_scale: Array | None
  error_offset: Array
  module: nn.Module = flax.struct.field(pytree_node=False)
  modality: str = flax.struct.field(pytree_node=False, default='tabular')
  input_shape: tuple[int, ...] = flax.struct.field(pytree_node=False,
                                                   default=())
  pad_id: int = flax.struct.field(pytree_node=False, default=0)


def _net_score(module: nn.Module, modality: str, pad_id: int, params: PyTree,
               x: Array, *, train: bool = False,
               dropout_key: Array | None = None) -> Array:
  """The network's scalar output per input, `[batch]` (standardised scale).

  tabular: the single output of the MLP; text: the mean of the per-token
  outputs over the non-PAD tokens (0 for an all-PAD row); image: the mean of
  the per-patch outputs.
  """
  rngs = None if dropout_key is None else {'dropout': dropout_key}
  out = module.apply({'params': params}, x, train=train, rngs=rngs)
  if modality == 'tabular':
    return out[:, 0]
  if modality == 'text':
    valid = (x != pad_id).astype(jnp.float32)
    total = jnp.sum(jnp.where(valid > 0, out, 0.0), axis=-1)
    return total / jnp.maximum(jnp.sum(valid, axis=-1), 1.0)
  return jnp.mean(out, axis=-1)


@functools.lru_cache(maxsize=16)
def _regression_loss(module: nn.Module, modality: str, pad_id: int
                     ) -> train.LossFn:
  """MSE between the network's score and the standardised log error.

  Cached per network, so repeated fits reuse `train.fit`'s compiled step.
  """
  def loss_fn(params, model_state, batch, key):
    pred = _net_score(module, modality, pad_id, params, batch['x'],
                      train=True, dropout_key=key)
    mse = jnp.mean((pred - batch['y']) ** 2)
    return mse, (model_state, {'mse': mse})
  return loss_fn


@functools.lru_cache(maxsize=16)
def _adam(learning_rate: float) -> Any:
  return train.make_optimizer(None, optimizer='adam',
                              learning_rate=learning_rate)


def _standardise(x: Array, shift: Array | None, scale: Array | None) -> Array:
  if shift is None:
    return x
  return (x.astype(jnp.float32) - shift) / scale


def fit_learned_uncertainty(
    key: Array | int, x: Array, errors: Array, *, modality: str = 'tabular',
    groups: masking.FeatureGroups | None = None,
    vocab_size: int | None = None, hidden: Sequence[int] = (64,),
    num_steps: int = 500, batch_size: int = 128,
    learning_rate: float = 1e-3, pad_id: int = 0,
    workdir: str | None = None) -> LearnedUncertainty:
  """Learned uncertainty: a network that predicts Amor's error (§3).

  The paper's learned uncertainty "uses data to predict" the amortized
  explainer's error; its form is not published. Our operational definition:
  a regressor trained on D_train (disjoint from D_cal and D_test) on the
  per-input error e(x) (e.g. `mse_per_input(Amor(x), HQ(x))`). The target
  is log(e + eps), eps = 1e-3 mean(e) + 1e-12, standardised: errors span
  orders of magnitude and only their ranking matters (the threshold and
  every metric of the uncertainty are rank-based), so a log-scale MSE keeps
  the few largest errors from dominating the fit; eps keeps zero errors
  finite. Training runs through `xai_jax.train.fit` (Adam, in-memory data
  reshuffled every epoch, dropout on for text), so the same key gives the
  same model.

  Networks (`nets.make_selector`):
  * 'tabular': `MLPSelector` with one output and `hidden` widths, on
    features standardised with the training mean and standard deviation;
  * 'text': `TextSelector` (per-token outputs); the score is their mean over
    the tokens != `pad_id`;
  * 'image': `PatchSelector` over the patch grid of `groups` (per-patch
    outputs); the score is their mean.
  `hidden` is used by 'tabular' only (the text and image nets keep their
  defaults).

  Args:
    key: PRNG key or int seed (initialisation, shuffling, dropout).
    x: `[n, *input_shape]` inputs of D_train (float; int token ids for text).
    errors: `[n]` the amortized explainer's error on each row (finite,
      >= 0).
    modality: 'tabular', 'text' or 'image'.
    groups: 'image': the patch groups (`masking.patch_groups`).
    vocab_size: 'text': V.
    hidden: 'tabular': hidden widths of the MLP.
    num_steps: training steps.
    batch_size: rows per step (capped at n).
    learning_rate: Adam's learning rate.
    pad_id: 'text': the padding token.
    workdir: optional folder for checkpoints and metrics (resumes from it).
  Returns:
    the `LearnedUncertainty`.
  """
  key = _checks.as_key('key', key, method='fit_learned_uncertainty')
  modality = _checks.check_choice('modality', modality, nets.MODALITIES)
  x = _checks.as_array('x', x)
  _checks.check_array('x', x, min_ndim=2, finite=True)
  e = _checks.as_array('errors', errors)
  if e.ndim != 1:
    raise ValueError(f'errors must be [n] (one error per row of x), got shape '
                     f'{tuple(e.shape)}.')
  _checks.check_array('errors', e, finite=True)
  n = x.shape[0]
  if e.shape[0] != n:
    raise ValueError(f'errors must have one entry per row of x ({n}), got '
                     f'{e.shape[0]}.')
  if n < 2:
    raise ValueError(f'x must hold at least 2 rows, got {n}.')
  e = np.asarray(e, np.float64)
  if np.any(e < 0):
    raise ValueError('errors must be >= 0 (e.g. squared errors).')
  num_steps = _checks.check_int('num_steps', num_steps, minimum=0)
  batch_size = min(_checks.check_int('batch_size', batch_size), n)
  _checks.check_positive('learning_rate', learning_rate)
  is_int = jnp.issubdtype(x.dtype, jnp.integer)
  if modality == 'text' and not is_int:
    raise ValueError(f"modality='text' needs int token ids x, got {x.dtype}.")
  if modality != 'text' and not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"modality={modality!r} needs float x, got {x.dtype}.")

  eps = 1e-3 * float(np.mean(e)) + 1e-12
  y = np.log(e + eps)
  mu, sigma = float(np.mean(y)), float(np.std(y))
  sigma = sigma if sigma > 0 else 1.0
  y = ((y - mu) / sigma).astype(np.float32)

  if modality == 'tabular':
    xs = np.asarray(x, np.float32)
    shift = jnp.asarray(xs.mean(0))
    sd = xs.std(0)
    scale = jnp.asarray(np.where(sd > 0, sd, 1.0).astype(np.float32))
    module = nets.make_selector('tabular', num_groups=1,
                                hidden=tuple(int(h) for h in hidden))
  elif modality == 'text':
    shift = scale = None
    module = nets.make_selector('text', num_groups=int(x.shape[1]),
                                vocab_size=vocab_size, pad_id=int(pad_id))
  else:
    shift = scale = None
    num_groups = groups.num_groups if groups is not None else 0
    module = nets.make_selector('image', num_groups=num_groups, groups=groups)
  x_in = _standardise(x, shift, scale)

  k_init, k_train = jax.random.split(key)
  params = nets.init_selector(module, k_init, x_in[:2])
  if num_steps > 0:
    state, _ = train.fit(
        _regression_loss(module, modality, int(pad_id)), params,
        {'x': x_in, 'y': jnp.asarray(y)}, tx=_adam(float(learning_rate)),
        key=k_train, batch_size=batch_size, num_steps=num_steps,
        workdir=workdir, log_every=max(1, num_steps // 10))
    params = jax.device_get(state.params)
  return LearnedUncertainty(
      params=params, target_mean=jnp.float32(mu),
      target_scale=jnp.float32(sigma), x_shift=shift, x_scale=scale,
      error_offset=jnp.float32(eps), module=module, modality=modality,
      input_shape=tuple(int(s) for s in x.shape[1:]), pad_id=int(pad_id))


@functools.partial(jax.jit, static_argnames=('chunk_size',))
def _predict(model: LearnedUncertainty, x: Array, chunk_size: int) -> Array:
  def batch_fn(xb):
    xb = _standardise(xb, model.x_shift, model.x_scale)
    z = _net_score(model.module, model.modality, model.pad_id, model.params,
                   xb)
    return model.target_mean + model.target_scale * z
  return bb.map_batches(batch_fn, x, chunk_size)


def predict_uncertainty(model: LearnedUncertainty, x: Array, *,
                        chunk_size: int = 4096) -> Array:
  """The learned uncertainty s(x): the predicted log error (§3). Jitted.

  s(x) = mu + sigma * net(x), an estimate of log(e(x) + eps) (monotone in the
  predicted error; `exp(s) - model.error_offset` reads it as an error).
  Evaluated `chunk_size` rows at a time (`blackbox.map_batches`).

  Args:
    model: a `LearnedUncertainty` (`fit_learned_uncertainty`).
    x: `[batch, *input_shape]` inputs.
    chunk_size: rows per network call (memory bound).
  Returns:
    `[batch]` float32 uncertainties.
  """
  if not isinstance(model, LearnedUncertainty):
    raise ValueError(f'model must be a LearnedUncertainty, got '
                     f'{type(model).__name__}.')
  chunk_size = _checks.check_chunk_size(chunk_size)
  x = _checks.as_array('x', x)
  _checks.check_array('x', x, trailing_shape=model.input_shape,
                      ndim=1 + len(model.input_shape), finite=True)
  if x.shape[0] == 0:
    return jnp.zeros((0,), jnp.float32)
  return _predict(model, x, chunk_size)


# ---- The explainer protocol (default_config, fit, explain) ----

UNCERTAINTIES = ('deep', 'learned')
MC_METHODS = ('kernel_shap',)


def default_config(modality: str = 'tabular') -> ml_collections.ConfigDict:
  """Selective explanations' hyper-parameters (an ml_collections ConfigDict).

  Fields:
    modality: 'tabular', 'image' or 'text' (the amortized explainer's).
    coverage: alpha, the fraction of inputs that KEEP the amortized
      explanation (the rest, 1 - alpha, receive an explanation with initial
      guess); `explain(..., coverage=)` overrides it per call.
    uncertainty: s_h (paper §3): 'deep' (the variance across an ensemble of
      `ensemble_size` FastSHAP explainers) or 'learned' (a network predicting
      the amortized explainer's error, trained on the training split).
    ensemble_size: k, FastSHAP members trained at once (>= 2 for 'deep').
    mc_method: the Monte Carlo explainer MC^n: 'kernel_shap' (on the same
      game as the amortized explainer, coalitions drawn per input).
    mc_samples: n, its model inferences (coalitions) per input (None: 2 d).
    mc_paired: draw MC^n's coalitions in antithetic pairs (z, 1 - z). Off
      by default: a pair fixes one direction of phi, so near n = 2d the
      paired regression is near-singular (singular below 2 (d - 1)); at
      n = 2d its MSE was 7-40x the unpaired draw's on three of four data
      sets, while from n = 4d paired was better on all four
      (docs/selective.md, "Monte Carlo budget").
    num_bins: lambda per uncertainty bin (1: one global lambda; paper §4).
    clip_lambda: clip lambda to [0, 1].
    calibration_fraction: the share of `fit`'s x held out as the calibration
      split when `x_calibration` is not given (1/3: the paper's 50/25 of all
      rows when a 25% test split is kept apart).
    exact_max_players: the high-quality targets are exact Shapley values
      (`attribution.exact_shapley`) when d <= this, else KernelSHAP with
      `hq_samples` coalitions.
    hq_samples: KernelSHAP coalitions of the targets when d is larger (None:
      shap's default 2 d + 2048).
    baseline, space: the game of every explainer here (FastSHAP, MC^n, the
      targets): absent groups' value ('zero', 'mean' of the training split,
      a number) and the explained output ('probs', 'log_probs', 'raw').
    fastshap: overrides of `fastshap.default_config(modality)` for the
      amortized explainer (e.g. {'num_steps': 2000}).
    learned: options of `fit_learned_uncertainty` (hidden, num_steps,
      batch_size, learning_rate).
    chunk_size: rows per call of the Monte Carlo explainer (None: automatic).
    seed: the PRNG seed used when `fit` gets key=None.
  """
  _checks.check_choice('modality', modality, nets.MODALITIES)
  c = ml_collections.ConfigDict()
  c.modality = modality
  c.coverage = 0.8            # alpha: fraction keeping Amor(x)
  c.uncertainty = 'deep'      # s_h
  c.ensemble_size = 5         # k
  c.mc_method = 'kernel_shap'
  c.mc_samples = None         # n (None: 2 d)
  c.mc_paired = False
  c.num_bins = 1              # lambda bins
  c.clip_lambda = True
  c.calibration_fraction = 1.0 / 3.0
  c.exact_max_players = 12
  c.hq_samples = None
  c.baseline = 'zero'
  c.space = 'probs'
  c.fastshap = ml_collections.ConfigDict()
  c.learned = ml_collections.ConfigDict()
  c.chunk_size = None
  c.seed = 0
  return c


@flax.struct.dataclass
class SelectiveExplainer:
  """What `fit` returns: the amortized explainer and its calibration.

  Attributes:
    amortized: the FastSHAP explainer (an ensemble for 'deep').
    uncertainty_model: the learned uncertainty network, or None ('deep').
    cal_uncertainty: `[n_cal]` s_h on the calibration split.
    cal_num, cal_den: `[n_cal]` the closed-form lambda terms
      (`lambda_terms` of Amor, MC^n and the targets on the calibration split).
    coverage: the default alpha (static).
    uncertainty: 'deep' or 'learned' (static).
    mc_method, mc_samples, mc_paired: MC^n (static).
    num_bins, clip_lambda: the combination function (static).
    chunk_size: rows per call of MC^n (static; None automatic).
  """

  amortized: fastshap.FastSHAPExplainer
  uncertainty_model: LearnedUncertainty | None
  cal_uncertainty: Array
  cal_num: Array
  cal_den: Array
  coverage: float = flax.struct.field(pytree_node=False)
  uncertainty: str = flax.struct.field(pytree_node=False)
  mc_method: str = flax.struct.field(pytree_node=False)
  mc_samples: int = flax.struct.field(pytree_node=False)
  mc_paired: bool = flax.struct.field(pytree_node=False)
  num_bins: int = flax.struct.field(pytree_node=False)
  clip_lambda: bool = flax.struct.field(pytree_node=False)
  chunk_size: int | None = flax.struct.field(pytree_node=False, default=None)


@flax.struct.dataclass
class SelectiveExplanation:
  """What `explain` returns (a pytree; `scores` as every `Explanation`).

  Attributes:
    scores: `[batch, d]` the selective explanations SE(x).
    mask: None (not a selection method).
    routed: bool `[batch]`, True where the explanation with initial guess
      was used (s_h(x) > t_alpha).
    num_inferences: int `[batch]`, black-box inferences spent on each input:
      1 for every input (v(1) = f(x), the amortized explainer's efficiency
      normalisation and the predicted class) plus, for routed inputs, MC^n's
      n coalitions and its own v(1) (n + 1). v(0) is one more per call.
    uncertainty: `[batch]` s_h(x).
    amortized: `[batch, d]` Amor(x) (the ensemble mean).
    lam: `[batch]` lambda_h(x) (1 for inputs that keep Amor(x)).
    threshold: `[]` t_alpha.
  """

  scores: Array
  routed: Array
  num_inferences: Array
  uncertainty: Array
  amortized: Array
  lam: Array
  threshold: Array
  mask: Array | None = None


def _players(amortized: fastshap.FastSHAPExplainer) -> int:
  return amortized.groups.num_groups


def reference_explanations(amortized: fastshap.FastSHAPExplainer, x: Any, *,
                           key: Any = None, target: Any = None,
                           exact_max_players: int = 12,
                           num_samples: int | None = None,
                           chunk_size: int | None = None) -> Array:
  """High-quality target explanations HQ(x) of the amortized explainer's game.

  Exact Shapley values (`attribution.exact_shapley`, 2^d coalitions) when d
  <= `exact_max_players`, else KernelSHAP with `num_samples` coalitions
  (None: 2 d + 2048), on the same game (box, baseline, groups, space) as
  `amortized`. Returns `[batch, d]` for the target (None: predicted class).
  """
  e = amortized
  d = _players(e)
  kw = dict(target=target, baseline=e.baseline, groups=e.groups,
            space=e.space, chunk_size=chunk_size)
  if d <= int(exact_max_players):
    return attribution.exact_shapley(e.game, x, **kw)
  return attribution.kernel_shap(e.game, x, key=key, num_samples=num_samples,
                                 **kw)


def mc_explanations(amortized: fastshap.FastSHAPExplainer, x: Any, *,
                    key: Any, num_samples: int, method: str = 'kernel_shap',
                    paired: bool = False, target: Any = None,
                    chunk_size: int | None = None) -> Array:
  """The cheap Monte Carlo explainer MC^n(x) on the amortized game: `[batch, d]`.

  'kernel_shap': KernelSHAP with n coalitions per input (unpaired unless
  `paired`; sizes enumerated when the budget covers them;
  `attribution.kernel_shap`), each
  input drawing its OWN coalitions (`shared_coalitions=False`): a per-input
  Monte Carlo explainer whose errors are independent across inputs, so that
  the combination weight fitted on the calibration split transfers to new
  inputs (one shared draw per batch makes the whole batch's error one
  random draw). Costs n + 1 model rows per input (v(1) included) and one
  v(0) per call.
  """
  e = amortized
  _checks.check_choice('mc_method', method, MC_METHODS)
  return attribution.kernel_shap(
      e.game, x, key=key, target=target, baseline=e.baseline,
      groups=e.groups, space=e.space, num_samples=int(num_samples),
      paired=bool(paired), chunk_size=chunk_size, shared_coalitions=False)


def _bucket(n: int) -> int:
  """Rows a routed sub-batch is padded to (bounds recompilation): the next
  power of two up to 1024, then the next multiple of 1024."""
  if n <= 1024:
    return max(8, 1 << (n - 1).bit_length())
  return -(-n // 1024) * 1024


def fit(key: Any, model: Any, x: Any,
        config: ml_collections.ConfigDict | Mapping[str, Any] | None = None,
        *, x_calibration: Any = None, targets_calibration: Any = None,
        targets_train: Any = None,
        amortized: fastshap.FastSHAPExplainer | None = None,
        groups: masking.FeatureGroups | None = None,
        workdir: str | None = None, **overrides: Any) -> SelectiveExplainer:
  """Fits a selective explainer (paper Algorithm 1) on `x`.

  1. Splits x into the training split and the calibration split
     (`calibration_fraction`, shuffled by `key`) unless `x_calibration` is
     given.
  2. Trains the amortized explainer on the training split: FastSHAP
     (`fastshap.fit`) with `ensemble_size` members in one vmapped run,
     unless `amortized` is given.
  3. Computes the high-quality targets HQ on the calibration split
     (`reference_explanations`; or `targets_calibration`) and, for learned
     uncertainty, on the training split (or `targets_train`), and trains
     the uncertainty network on the amortized explainer's errors
     `||Amor - HQ||^2 / d` there.
  4. On the calibration split: s_h, MC^n and the terms of the closed-form
     lambda (`lambda_terms`), so that `explain` derives t_alpha and lambda
     for any coverage without new model calls.

  Every explanation is for the model's predicted class.

  Args:
    key: PRNG key or int seed (None: `config.seed`).
    model: the explained `BlackBox` (a classifier for space 'probs').
    x: `[n, *input_shape]` the training rows (and calibration rows when
      `x_calibration` is None).
    config: fields of `default_config` (None: defaults).
    x_calibration: `[n_cal, *input_shape]` calibration rows.
    targets_calibration: `[n_cal, d]` HQ explanations of the calibration
      rows for their predicted class.
    targets_train: `[n_train, d]` HQ explanations of the training rows
      (learned uncertainty only).
    amortized: an already trained `fastshap.FastSHAPExplainer` (then x is
      only used for the learned uncertainty and the split).
    groups: the players (default: FastSHAP's).
    workdir: checkpoints of the FastSHAP and uncertainty training.
    **overrides: fields of `default_config` by name.
  Returns:
    a `SelectiveExplainer`.
  Raises:
    ValueError: unknown config fields, ensemble_size < 2 for deep
      uncertainty, a calibration split too small for num_bins, targets of
      the wrong shape, bad x.
  """
  modality = protocol.peek('modality', config, overrides, 'tabular')
  cfg = protocol.merge_config(default_config(modality), config, overrides,
                              method='selective')
  kind = _checks.check_choice('uncertainty', cfg.uncertainty, UNCERTAINTIES)
  mc_method = _checks.check_choice('mc_method', cfg.mc_method, MC_METHODS)
  _check_coverage(cfg.coverage)
  k = _checks.check_int('ensemble_size', cfg.ensemble_size)
  if kind == 'deep' and k < 2:
    raise ValueError(f'deep uncertainty needs an ensemble: ensemble_size >= 2,'
                     f' got {k}.')
  num_bins = _checks.check_int('num_bins', cfg.num_bins)
  frac = float(cfg.calibration_fraction)
  if not 0.0 < frac < 1.0:
    raise ValueError(f'calibration_fraction must be in (0, 1), got {frac}.')
  key = _checks.as_key('key', key, default_seed=cfg.seed)
  k_split, k_fs, k_hq, k_mc, k_unc = jax.random.split(key, 5)
  x = np.asarray(x)
  if x_calibration is None:
    if x.ndim < 2 or x.shape[0] < 4:
      raise ValueError(f'x must be [n, *input_shape] with n >= 4 rows to '
                       f'split, got shape {x.shape}.')
    perm = np.asarray(jax.random.permutation(k_split, x.shape[0]))
    n_cal = max(1, int(round(frac * x.shape[0])))
    x_cal, x_train = x[perm[:n_cal]], x[perm[n_cal:]]
  else:
    x_train, x_cal = x, np.asarray(x_calibration)
  n_cal = int(x_cal.shape[0])
  if n_cal < 2 * num_bins:
    raise ValueError(f'the calibration split has {n_cal} rows, too few for '
                     f'num_bins={num_bins} (at least 2 per bin, and the '
                     'routed share of them at each coverage).')

  if amortized is None:
    fs_cfg = dict(cfg.fastshap.to_dict())
    fs_cfg.update(ensemble_size=k, baseline=cfg.baseline, space=cfg.space,
                  modality=modality)
    amortized = fastshap.fit(
        k_fs, model, x_train, fs_cfg, groups=groups,
        workdir=None if workdir is None else f'{workdir}/fastshap')
  elif not isinstance(amortized, fastshap.FastSHAPExplainer):
    raise ValueError(f'amortized must be a fastshap.FastSHAPExplainer, got '
                     f'{type(amortized).__name__}.')
  elif kind == 'deep' and amortized.ensemble_size < 2:
    raise ValueError('deep uncertainty needs an ensemble: the amortized '
                     f'explainer has ensemble_size={amortized.ensemble_size}'
                     ' (fit it with ensemble_size >= 2).')
  d = _players(amortized)
  n_mc = cfg.mc_samples if cfg.mc_samples is not None else 2 * d
  n_mc = _checks.check_int('mc_samples', n_mc)
  x_cal_j = _checks.check_model_input(amortized.model, x_cal, 'x_calibration')

  def targets(name, value, rows, key_):
    if value is None:
      return reference_explanations(
          amortized, rows, key=key_, exact_max_players=cfg.exact_max_players,
          num_samples=cfg.hq_samples, chunk_size=cfg.chunk_size)
    t = _checks.as_array(name, value)
    if tuple(t.shape) != (rows.shape[0], d):
      raise ValueError(f'{name} must have the shape of the explanations '
                       f'[n, d] = {(rows.shape[0], d)}, got {tuple(t.shape)}.')
    _checks.check_array(name, t, finite=True)
    return t

  hq_cal = targets('targets_calibration', targets_calibration, x_cal_j,
                   jax.random.fold_in(k_hq, 0))
  members = fastshap.explain(amortized, x_cal_j, members=True).scores
  amor_cal = jnp.mean(members, axis=0)
  unc_model = None
  if kind == 'deep':
    s_cal = deep_uncertainty(members)
  else:
    x_tr_j = _checks.check_model_input(amortized.model, x_train, 'x')
    hq_tr = targets('targets_train', targets_train, x_tr_j,
                    jax.random.fold_in(k_hq, 1))
    amor_tr = fastshap.explain(amortized, x_tr_j).scores
    errors = mse_per_input(amor_tr, hq_tr)
    unc_model = fit_learned_uncertainty(
        k_unc, x_tr_j, errors, modality=modality, groups=amortized.groups,
        vocab_size=_vocab(amortized, x_tr_j),
        workdir=None if workdir is None else f'{workdir}/uncertainty',
        **cfg.learned.to_dict())
    s_cal = predict_uncertainty(unc_model, x_cal_j)
  mc_cal = mc_explanations(amortized, x_cal_j, key=k_mc, num_samples=n_mc,
                           method=mc_method, paired=bool(cfg.mc_paired),
                           chunk_size=cfg.chunk_size)
  num, den = lambda_terms(amor_cal, mc_cal, hq_cal)
  return SelectiveExplainer(
      amortized=amortized, uncertainty_model=unc_model,
      cal_uncertainty=jnp.asarray(s_cal), cal_num=num, cal_den=den,
      coverage=float(cfg.coverage), uncertainty=kind, mc_method=mc_method,
      mc_samples=n_mc, mc_paired=bool(cfg.mc_paired), num_bins=num_bins, clip_lambda=bool(cfg.clip_lambda),
      chunk_size=cfg.chunk_size)


def _vocab(amortized: fastshap.FastSHAPExplainer, x: Array) -> int | None:
  if amortized.modality != 'text':
    return None
  return int(getattr(amortized.net, 'vocab_size', int(jnp.max(x)) + 1))


def uncertainty_scores(explainer: SelectiveExplainer, x: Any,
                       members: Array | None = None) -> Array:
  """s_h(x) `[batch]`: the ensemble's variance ('deep', from the members'
  scores `[k, batch, d]` when given) or the learned network's prediction."""
  if explainer.uncertainty == 'deep':
    if members is None:
      members = fastshap.explain(explainer.amortized, x, members=True).scores
    return deep_uncertainty(members)
  return predict_uncertainty(explainer.uncertainty_model, x)


def explain(explainer: SelectiveExplainer, x: Any, *, key: Any = None,
            target: Any = None, coverage: float | None = None
            ) -> SelectiveExplanation:
  """Selective explanations of `x` (paper Eq. for SE, Algorithm 1).

      SE(x) = Amor(x)                                  if s_h(x) <= t_alpha,
      SE(x) = lam(x) Amor(x) + (1 - lam(x)) MC^n(x)    otherwise,

  with t_alpha the alpha-quantile of s_h on the calibration split (alpha =
  `coverage`, the fraction that keeps the amortized explanation) and lam
  the closed-form least-squares combination fitted on the calibration
  points routed at this coverage (globally or per uncertainty bin).
  MC^n runs only on the routed rows, gathered into one padded sub-batch.

  Args:
    explainer: from `fit`.
    x: `[batch, *input_shape]`.
    key: PRNG key or int seed of MC^n (required when a row is routed).
    target: None (the predicted class), an int or int `[batch]`.
    coverage: alpha in [0, 1] (None: the explainer's default). 1 returns
      the amortized explanations exactly; 0 routes every input.
  Returns:
    a `SelectiveExplanation` (scores, routed, num_inferences, ...).
  Raises:
    ValueError: coverage outside [0, 1], bad x, target or key.
  """
  if not isinstance(explainer, SelectiveExplainer):
    raise ValueError(f'explainer must be a SelectiveExplainer (from '
                     f'selective.fit), got {type(explainer).__name__}.')
  e = explainer
  cov = e.coverage if coverage is None else coverage
  _check_coverage(cov)
  am = e.amortized
  x = _checks.check_model_input(am.model, x)
  bb.check_target(am.model, target, x.shape[0])
  phi, raw = fastshap.attributions(am, x, members=True, return_outputs=True)
  classes = fastshap.target_classes(am, x, target, raw)
  members = jnp.take_along_axis(phi, classes[None, :, None, None],
                                axis=-1)[..., 0]                # [k, b, d]
  amor = jnp.mean(members, axis=0)
  s = uncertainty_scores(e, x, members)
  t = calibrate_threshold(e.cal_uncertainty, cov)
  edges, lambdas = fit_lambdas(e.cal_num, e.cal_den, e.cal_uncertainty, t,
                               num_bins=e.num_bins, clip=e.clip_lambda)
  routed_np = np.asarray(route(s, t))
  idx = np.flatnonzero(routed_np)
  mc = jnp.zeros_like(amor)
  if idx.size:
    key = _checks.as_key('key', key, method='selective.explain')
    pad = np.resize(idx, _bucket(idx.size))       # repeats fill the bucket
    sub = mc_explanations(am, x[pad], key=key, num_samples=e.mc_samples,
                          method=e.mc_method, paired=e.mc_paired,
                          target=classes[pad],
                          chunk_size=e.chunk_size)
    mc = mc.at[idx].set(sub[:idx.size])
  scores, routed = selective_explanations(amor, mc, s, t, edges, lambdas)
  lam = jnp.where(routed, lambda_of(s, edges, lambdas), 1.0)
  inferences = 1 + routed.astype(jnp.int32) * (e.mc_samples + 1)
  return SelectiveExplanation(
      scores=scores, routed=routed, num_inferences=inferences,
      uncertainty=s, amortized=amor, lam=lam, threshold=jnp.asarray(t))


__all__ = [
    'LearnedUncertainty', 'MC_METHODS', 'SelectiveExplainer',
    'SelectiveExplanation', 'UNCERTAINTIES', 'calibrate_threshold', 'combine',
    'coverage_curve', 'default_config', 'deep_uncertainty', 'ensemble_mean',
    'explain', 'fit', 'fit_lambda', 'fit_lambdas', 'fit_learned_uncertainty',
    'lambda_of', 'lambda_terms', 'mc_explanations', 'mse_per_input',
    'predict_uncertainty', 'reference_explanations', 'route',
    'selective_explanations', 'spearman_per_input', 'uncertainty_auroc',
    'uncertainty_scores', 'uncertainty_spearman',
]
