"""Metrics that score explanations against ground truth or the black box.

Every metric is batched: inputs are `[batch, ...]` and the result is a plain
dict of arrays holding per-example values `[batch]` under the metric's name
(e.g. `'median_rank'`) and, where a mean is sensible, the mean over the batch
under `'<name>_mean'` (NaN rows, e.g. rows without any ground-truth feature,
are left out of means). Arguments are checked on concrete values before
anything is traced (`ValueError` naming the argument); the compute cores run
under `jax.jit`, and model evaluations of perturbation metrics run in
memory-bounded chunks of `batch_size` rows (`blackbox.map_batches`). Keys are
PRNG keys or int seeds (`_checks.as_key`); inputs are masked with
`masking.apply_mask` (token ids: replaced by the pad id).

Ground truth (synthetic data with known relevant features or masks):
  * `median_rank`     L2X (Chen et al. 2018), `compute_median_rank`.
  * `tpr_fdr_at_k`    true-positive and false-discovery rates of a top-k.
  * `auroc`           per-example AUROC (Mann-Whitney U, ties averaged).
  * `pointing_game`   Zhang et al. 2016: is the maximum within `tolerance` px.
  * `effective_heat_ratio`, `effective_heat_ratio_curve`  heat mass inside the
    ground-truth mask; the latter is InputIBA's EHR (Zhang et al. 2021).
  * `segmentation_scores`  LTX's segmentation protocol (map binarised at its
    mean: pixel accuracy, mIoU; average precision).

Against the black box:
  * `posthoc_accuracy`  L2X post-hoc accuracy (f(x_S) agrees with f(x)).
  * `evalx_accuracy`, `evalx_auroc`: EVAL-X (Jethani et al. 2021), scored
    with an evaluator from `realx.train_evalx`.
  * `deletion_insertion`  Petsiuk et al. 2018 (RISE) deletion/insertion curves.
  * `blackout_curves`  LTX's POS/NEG perturbation tests (pixels blacked out
    by the map's order; accuracy and probability AUCs).
  * `sensitivity_n`   Ancona et al. 2018.
  * `infidelity`      Yeh et al. 2019, Eq. 2 (and the optimally scaled version).

Against reference attributions:
  * `shapley_error`   MAE, RMSE and Spearman correlation to exact Shapley
    values.

Ranking rule (one rule for every metric that orders features): features
are ranked by their signed score (most positive first), the explanation's own
claim, by default; `rank_by='abs'` opts into ranking by |score| (e.g. L2X's
convention for attributions whose sign is not evidence). Every ranking metric
takes the same argument with the same default `rank_by='signed'`:
`median_rank`, `top_k_mask`, `tpr_fdr_at_k`, `auroc`, `pointing_game` (its
maximum is the top of the ranking) and `deletion_insertion` (the deletion
order). The heat-mass metrics (`effective_heat_ratio`,
`effective_heat_ratio_curve`) score the positive heat of the map, not a
ranking: pass |saliency| (or `channel_reduce='abs_sum'`) for magnitudes.
The former `absolute=` flag raises a ValueError pointing to `rank_by`.

Empty ground truth (one rule for the ground-truth metrics `median_rank`,
`tpr_fdr_at_k`, `auroc`, `pointing_game`, `effective_heat_ratio`,
`effective_heat_ratio_curve`): an example whose ground-truth mask is empty
has no defined value; every per-example value of it is NaN (`auroc`: also a
mask that covers every feature, which leaves no negatives). The means
(`<name>_mean`, e.g. `ehr_mean`) leave such examples out, and the call warns
once (a `UserWarning`) with how many were left out.

Targets: `target` (deletion/insertion, sensitivity-n, infidelity) is a class
index in `[0, num_outputs)`, checked before tracing; negative indices are
errors (`target=-1` is never "the last class").

NaN policy: raise. A metric that runs the model (`deletion_insertion`,
`sensitivity_n`, `infidelity`, `posthoc_accuracy`, `evalx_accuracy`,
`evalx_auroc`) raises a ValueError when the model returns NaN or inf on x or
on its masked/perturbed copies (`_checks.check_finite_outputs`), instead of
returning NaN or a silently wrong value. Checked are the model values the
metric uses: the explained (target) score for the removal metrics (a NaN
elsewhere in a row also lands there when `target=None` picks it by argmax),
every output for the argmax-based post-hoc accuracy and EVAL-X. The jitted
cores return those values and the check runs on them afterwards, so the hot
path stays jitted; inside a user's `jax.jit` (tracers) it is skipped.
"""

from __future__ import annotations

import functools
import math
import sys
import warnings
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from xai_jax import _checks
from xai_jax import blackbox as bb
from xai_jax import masking
from xai_jax import realx

Array = jax.Array
PyTree = Any
Model = bb.BlackBox | Callable[[Array], Array]
Baseline = float | int | Array | np.ndarray | str

_DEFAULT_BATCH = 1024
_SPACES = ('raw', 'probs', 'log_probs')
_BINARY_HINT = 'use top_k_mask(scores, k) to turn scores into a selection.'
RANK_BY = ('signed', 'abs')  # the ranking rule of every ranking metric


# =============================================================================
# Argument checks (on concrete values, before tracing).
# =============================================================================


def _check_scores(name: str, s: Any, ndim: int | Sequence[int] = 2) -> Array:
  s = _checks.as_array(name, s)
  _checks.check_array(name, s, ndim=ndim, finite=True)
  if not (jnp.issubdtype(s.dtype, jnp.floating) or
          jnp.issubdtype(s.dtype, jnp.integer) or s.dtype == jnp.bool_):
    raise ValueError(f'{name} must be numeric, got dtype {s.dtype}.')
  if s.shape[0] == 0:
    raise ValueError(f'{name} must hold at least one example, got shape '
                     f'{s.shape}.')
  return s.astype(jnp.float32) if not jnp.issubdtype(
      s.dtype, jnp.floating) else s


def _check_ground_truth(name: str, gt: Any, shape: tuple[int, ...]) -> Array:
  """Binary `[batch, d]` (or `[d]`, broadcast over the batch) -> bool."""
  gt = _checks.check_binary(name, gt, _BINARY_HINT)
  if gt.shape == shape[1:]:
    gt = jnp.broadcast_to(gt, shape)
  if gt.shape != shape:
    raise ValueError(f'{name} must have shape {shape} (or {shape[1:]}), got '
                     f'{gt.shape}.')
  return gt


def _nanmean(v: Array) -> Array:
  return jnp.nanmean(v) if v.size else jnp.array(jnp.nan, jnp.float32)


def _box(model: Model, x: Array) -> bb.BlackBox:
  if isinstance(model, bb.BlackBox):
    return model
  if not callable(model):
    raise ValueError(f'model must be a BlackBox or a callable, got '
                     f'{type(model).__name__}.')
  return bb.as_blackbox(model, input_shape=x.shape[1:])


def _check_classifier(box: bb.BlackBox, what: str) -> None:
  if box.output == 'regression':
    raise ValueError(f'{what} needs a classifier; black box {box.name!r} has '
                     "output='regression'.")


def _baseline_array(name: str, baseline: Baseline, x: Array,
                    box: bb.BlackBox, data: Any = None) -> Array:
  """Any accepted baseline -> `[batch, *input_shape]` of x's dtype, built by
  `masking.make_baseline` (a name, or an array as its 'reference'; 'mean'
  is the mean of `data`, never of the batch)."""
  kind, reference = baseline, None
  if isinstance(baseline, str):
    if box.input_dtype == 'int':
      raise ValueError(f'{name} must be a pad token id for token inputs, got '
                       f'{baseline!r}.')
    if baseline == 'noise':
      raise ValueError(f"{name}='noise' is random; build it with "
                       "masking.make_baseline('noise', x, key=...) and pass "
                       'the array.')
  else:
    kind, reference = 'reference', _checks.as_array(name, baseline)
    _checks.check_array(name, reference, finite=True)
    if (box.input_dtype == 'int'
        and not jnp.issubdtype(reference.dtype, jnp.integer)):
      if (_checks.is_tracer(reference)
          or not np.all(np.mod(np.asarray(reference), 1) == 0)):
        raise ValueError(f'{name} must be an integer pad id for token inputs, '
                         f'got {baseline!r}.')
  try:
    return masking.make_baseline(kind, x, reference=reference, data=data)
  except ValueError as e:
    raise ValueError(f'{name}: {e}') from None


def _rank_abs(rank_by: str) -> bool:
  """Checks `rank_by` ('signed' | 'abs'); True when ranking by |score|."""
  return _checks.check_choice('rank_by', rank_by, RANK_BY) == 'abs'


def _ranking(fn: Callable[..., Any]) -> Callable[..., Any]:
  """Marks a ranking metric: the removed `absolute=` flag is a ValueError
  that points to `rank_by` (instead of a silent or a bare TypeError)."""

  @functools.wraps(fn)
  def wrapper(*args: Any, **kwargs: Any) -> Any:
    if 'absolute' in kwargs:
      a = kwargs['absolute']
      raise ValueError(
          f'{fn.__name__}: absolute= was replaced by rank_by: pass '
          f"rank_by='abs' (rank by |score|) or rank_by='signed' (the "
          f'default); got absolute={a!r}.')
    return fn(*args, **kwargs)
  return wrapper


def _warn_undefined(metric: str, undefined: Any, what: str) -> None:
  """Warns once per call how many examples have no defined value (NaN per
  example, left out of the means). Skipped for tracers."""
  if _checks.is_tracer(undefined):
    return
  u = np.asarray(undefined, bool)
  n = int(u.sum())
  if n:
    # Attribute the warning to the first caller outside this module.
    frame, level = sys._getframe(0), 1  # pylint: disable=protected-access
    while frame.f_back is not None and frame.f_code.co_filename == __file__:
      frame, level = frame.f_back, level + 1
    warnings.warn(
        f'{metric}: {n} of {u.size} examples have {what}; their values are '
        'NaN and the means leave them out.', UserWarning, stacklevel=level)


def _warn_empty_ground_truth(metric: str, gt: Any, axes: tuple[int, ...]
                             ) -> None:
  """The empty-ground-truth rule's warning (`gt` bool `[b, ...]`)."""
  if _checks.is_tracer(gt):
    return
  g = np.asarray(gt, bool)
  _warn_undefined(metric, ~g.any(axis=axes), 'an empty ground-truth mask')


def _units(name: str, attributions: Any, x: Array,
           groups: masking.FeatureGroups | None) -> Array:
  """Attributions over the input or over groups -> `[batch, d]` unit scores."""
  a = _checks.as_array(name, attributions)
  _checks.check_array(name, a, finite=True)
  if not jnp.issubdtype(a.dtype, jnp.floating):
    a = a.astype(jnp.float32)
  b = x.shape[0]
  if groups is not None:
    if a.shape == x.shape:
      return groups.reduce(a, 'sum')
    if a.shape == (b, groups.num_groups):
      return a
    raise ValueError(f'{name} must have shape {x.shape} or [batch, num_groups]'
                     f'={(b, groups.num_groups)}, got {a.shape}.')
  if a.shape != x.shape:
    raise ValueError(f'{name} must have the shape of x {x.shape}, got '
                     f'{a.shape}.')
  return a.reshape(b, -1)


def _removal_inputs(model: Model, x: Any, attributions: Any,
                    groups: masking.FeatureGroups | None, space: str,
                    what: str) -> tuple[bb.BlackBox, Array, Array,
                                        masking.FeatureGroups]:
  """Checked `(box, x, units [batch, d], groups)` of a metric that removes
  units of the input; `groups` defaults to one group per input element."""
  box = _box(model, x)
  x = _checks.check_model_input(box, x)
  masking.check_groups(groups, box.input_shape)
  masking.require_shared_groups(groups, 'this metric')
  _checks.check_choice('space', space, _SPACES)
  if space != 'raw':
    _check_classifier(box, f'{what}(space={space!r})')
  units = _units('attributions', attributions, x, groups)
  if groups is None:
    groups = masking.feature_groups(box.input_shape)
  return box, x, units, groups


# =============================================================================
# Shared jitted helpers.
# =============================================================================


@jax.jit
def _random_tie_ranks(scores: Array, key: Array, absolute: Array) -> Array:
  """L2X `create_rank`: 1-based ranks of `scores[b, d]` (1 = largest score,
  or |score| when `absolute`), ties broken uniformly at random by the
  random-permutation trick.

  Each row's permutation `idx` is the argsort of i.i.d. random 32-bit words
  (a uniformly random permutation, as `np.random.permutation(d)`; one random
  draw for the whole batch keeps compilation cheap).
  """
  scores = scores.astype(jnp.float32)
  a = jnp.where(absolute, jnp.abs(scores), scores)
  b, d = a.shape
  idx = jnp.argsort(jax.random.bits(key, (b, d), jnp.uint32), axis=1)
  p = jnp.take_along_axis(a, idx, 1)                   # permutated_weights
  neg = 0.0 - p                                        # -0.0 -> +0.0
  prank = jnp.argsort(jnp.argsort(neg, axis=1, stable=True), axis=1,
                      stable=True).astype(jnp.int32) + 1
  rows = jnp.arange(b)[:, None]
  return jnp.zeros((b, d), jnp.int32).at[rows, idx].set(prank)  # [argsort(idx)]


def _order_positions(scores: Array) -> Array:
  """0-based position of each column in decreasing order (stable, ties by
  index): `[b, d] -> int [b, d]`."""
  order = jnp.argsort(0.0 - scores, axis=-1, stable=True)
  b, d = scores.shape
  pos = jnp.zeros((b, d), jnp.int32)
  return pos.at[jnp.arange(b)[:, None], order].set(
      jnp.broadcast_to(jnp.arange(d, dtype=jnp.int32), (b, d)))


def _midranks(v: Array) -> Array:
  """1-based ranks of `v[..., d]` in increasing order, ties averaged."""
  d = v.shape[-1]
  flat = v.reshape(-1, d)
  order = jnp.argsort(flat, axis=1, stable=True)
  s = jnp.take_along_axis(flat, order, 1)
  idx = jnp.broadcast_to(jnp.arange(d), flat.shape)
  diff = s[:, 1:] != s[:, :-1]
  ones = jnp.ones((flat.shape[0], 1), bool)
  first = jnp.concatenate([ones, diff], 1)   # starts a run of ties
  last = jnp.concatenate([diff, ones], 1)    # ends a run of ties
  start = jax.lax.cummax(jnp.where(first, idx, 0), axis=1)
  end = jax.lax.cummin(jnp.where(last, idx, d - 1), axis=1, reverse=True)
  mid = (start + end).astype(jnp.float32) / 2.0 + 1.0
  rows = jnp.arange(flat.shape[0])[:, None]
  return jnp.zeros(flat.shape, jnp.float32).at[rows, order].set(mid).reshape(
      v.shape)


def _pearson(a: Array, b: Array) -> Array:
  """Pearson correlation along the last axis (NaN if a variance is zero)."""
  a = a - a.mean(-1, keepdims=True)
  b = b - b.mean(-1, keepdims=True)
  num = (a * b).sum(-1)
  den = jnp.sqrt((a * a).sum(-1) * (b * b).sum(-1))
  return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), jnp.nan)


def _auroc_rows(scores: Array, positive: Array) -> Array:
  """Mann-Whitney AUROC of each row: P(score_pos > score_neg) + 0.5 P(=)."""
  r = _midranks(scores)
  pos = positive.astype(jnp.float32)
  n1 = pos.sum(-1)
  n0 = scores.shape[-1] - n1
  mean_r = (r * pos).sum(-1) / jnp.maximum(n1, 1.0)
  auc = (mean_r - (n1 + 1.0) / 2.0) / jnp.maximum(n0, 1.0)
  return jnp.where((n1 > 0) & (n0 > 0), auc, jnp.nan)


def _target_scores(box: bb.BlackBox, outputs: Array, target: Array,
                   space: str) -> Array:
  if space != 'raw':
    lp = bb.to_log_probs(outputs, box.output)
    outputs = lp if space == 'log_probs' else jnp.exp(lp)
  return bb.select_target(outputs, target)


def _result(name: str, per_example: Array, **extra: Array) -> dict[str, Array]:
  return {name: per_example, f'{name}_mean': _nanmean(per_example), **extra}


# =============================================================================
# Ground-truth metrics.
# =============================================================================


@jax.jit
def _median_rank_core(ranks, gt):
  d = ranks.shape[1]
  m = gt.sum(1)
  srt = jnp.sort(jnp.where(gt, ranks.astype(jnp.float32), jnp.inf), axis=1)
  lo = jnp.clip((m - 1) // 2, 0, d - 1)
  hi = jnp.clip(m // 2, 0, d - 1)
  med = (jnp.take_along_axis(srt, lo[:, None], 1)[:, 0] +
         jnp.take_along_axis(srt, hi[:, None], 1)[:, 0]) / 2.0
  return jnp.where(m > 0, med, jnp.nan)


@_ranking
def median_rank(scores: Array, ground_truth: Array, key: Array, *,
                rank_by: str = 'signed') -> dict[str, Array]:
  """Median rank of the ground-truth features (L2X, Chen et al. 2018, §4.1).

  Exactly L2X's `create_rank` + `compute_median_rank`: per row, features are
  ranked by score (1 = most important; by |score| with `rank_by='abs'`, L2X's
  convention for attributions) after a uniformly random permutation
  of the columns, so ties are broken uniformly at random (argsort of argsort);
  the row's value is the median (numpy convention: mean of the two middle
  values for an even count) of the ranks of its ground-truth features. Rows
  may have different numbers of ground-truth features (the switch data set).
  The optimum is (k+1)/2 for k true features: XOR 1.5, orange skin and
  additive 2.5, switch 3.0. Lower is better.

  Args:
    scores: `[batch, d]` feature scores (attributions, selector logits or a
      binary selection).
    ground_truth: bool/0-1 `[batch, d]` (or `[d]` for all rows), the true
      features of each row.
    key: PRNG key of the random tie-breaking (same key, same ranks).
    rank_by: 'signed' (default: the score itself, most positive first) or
      'abs' (|score|, L2X's convention).

  Returns:
    `median_rank` `[batch]` (NaN for a row without true features, left out
    of the mean with a warning),
    `median_rank_mean` and `median_rank_std` `[]` (L2X reports mean and sd),
    and `ranks` int `[batch, d]`.
  """
  scores = _check_scores('scores', scores)
  gt = _check_ground_truth('ground_truth', ground_truth, scores.shape)
  key = _checks.as_key('key', key, method='median_rank')
  absolute = _rank_abs(rank_by)
  _warn_empty_ground_truth('median_rank', gt, (1,))
  ranks = _random_tie_ranks(scores, key, jnp.bool_(absolute))
  med = _median_rank_core(ranks, gt)
  return _result('median_rank', med, median_rank_std=jnp.nanstd(med),
                 ranks=ranks)


@functools.partial(jax.jit, static_argnames=('k',))
def _top_k_core(scores, k, absolute):
  scores = scores.astype(jnp.float32)
  a = jnp.where(absolute, jnp.abs(scores), scores)
  _, idx = jax.lax.top_k(a, k)
  b = scores.shape[0]
  return jnp.zeros(scores.shape, bool).at[jnp.arange(b)[:, None], idx].set(
      True)


@_ranking
def top_k_mask(scores: Array, k: int, *, key: Array | None = None,
               rank_by: str = 'signed') -> Array:
  """Hard top-k selection of each row: bool `[batch, d]` with exactly k True.

  Args:
    scores: `[batch, d]`.
    k: the number of selected features, 1 <= k <= d.
    key: optional PRNG key: ties are then broken uniformly at random (as in
      `median_rank`); without it ties go to the lower index.
    rank_by: 'signed' (default: the k largest scores) or 'abs' (the k
      largest |score|).

  Returns:
    bool `[batch, d]`.
  """
  scores = _check_scores('scores', scores)
  k = _checks.check_k('k', k, scores.shape[1])
  absolute = _rank_abs(rank_by)
  if key is not None:
    return _random_tie_ranks(scores, _checks.as_key('key', key),
                             jnp.bool_(absolute)) <= k
  return _top_k_core(scores, k, jnp.bool_(absolute))


@jax.jit
def _tpr_fdr_core(sel, gt):
  sel_f, gt_f = sel.astype(jnp.float32), gt.astype(jnp.float32)
  tp = (sel_f * gt_f).sum(1)
  n_gt, n_sel = gt_f.sum(1), sel_f.sum(1)
  tpr = jnp.where(n_gt > 0, tp / jnp.maximum(n_gt, 1.0), jnp.nan)
  fdr = jnp.where(n_sel > 0, (n_sel - tp) / jnp.maximum(n_sel, 1.0), 0.0)
  return tpr, jnp.where(n_gt > 0, fdr, jnp.nan)


@_ranking
def tpr_fdr_at_k(scores: Array | None, ground_truth: Array,
                 k: int | None = None, *, selection: Array | None = None,
                 key: Array | None = None, rank_by: str = 'signed'
                 ) -> dict[str, Array]:
  """True-positive and false-discovery rates of a top-k selection.

  With S the selected and G the true features of a row:
  TPR = |S ∩ G| / |G| (recall) and FDR = |S \\ G| / |S| (as in the
  instance-wise feature selection literature, e.g. INVASE, Yoon et al. 2019).

  Args:
    scores: `[batch, d]`, turned into the top-k selection by `top_k_mask`
      (None when `selection` is given).
    ground_truth: bool/0-1 `[batch, d]` (or `[d]`).
    k: the number of selected features (needed with `scores`).
    selection: a binary selection `[batch, d]` to score directly (any size
      per row) instead of `scores` and `k`.
    key: optional PRNG key for random tie-breaking in the top-k.
    rank_by: 'signed' (default) or 'abs': how `scores` are ranked into the
      top-k (`top_k_mask`).

  Returns:
    `tpr`, `fdr` `[batch]` (both NaN for a row without true features, left
    out of the means with a warning; FDR is 0 for an empty selection) and
    their means `tpr_mean`, `fdr_mean`.
  """
  absolute = _rank_abs(rank_by)
  if (selection is None) == (scores is None):
    raise ValueError('Pass exactly one of scores (with k) and selection.')
  if selection is None:
    if k is None:
      raise ValueError('k is required with scores (or pass selection=).')
    scores = _check_scores('scores', scores)
    sel = top_k_mask(scores, k, key=key,
                     rank_by='abs' if absolute else 'signed')
  else:
    sel = _checks.check_binary('selection', selection, _BINARY_HINT)
    _checks.check_array('selection', sel, ndim=2)
  gt = _check_ground_truth('ground_truth', ground_truth, sel.shape)
  _warn_empty_ground_truth('tpr_fdr_at_k', gt, (1,))
  tpr, fdr = _tpr_fdr_core(sel, gt)
  # (jnp.mean when no row is NaN: the same float sum as for any selection.)
  fdr_nan = _checks.is_tracer(fdr) or bool(np.isnan(np.asarray(fdr)).any())
  return {'tpr': tpr, 'fdr': fdr, 'tpr_mean': _nanmean(tpr),
          'fdr_mean': _nanmean(fdr) if fdr_nan else jnp.mean(fdr)}


@jax.jit
def _auroc_core(scores, gt, absolute):
  scores = scores.astype(jnp.float32)
  return _auroc_rows(jnp.where(absolute, jnp.abs(scores), scores), gt)


@_ranking
def auroc(scores: Array, ground_truth: Array, *, rank_by: str = 'signed'
          ) -> dict[str, Array]:
  """Per-example AUROC of scores against the ground-truth features.

  The Mann-Whitney U statistic from mid-ranks (ties averaged):
  AUROC = (R_+ - n_+(n_+ + 1)/2) / (n_+ n_-), with R_+ the sum of the ranks
  of the true features; equal to `sklearn.metrics.roc_auc_score` on the row.

  Args:
    scores: `[batch, d]`.
    ground_truth: bool/0-1 `[batch, d]` (or `[d]`).
    rank_by: 'signed' (default: the score ranks the features) or 'abs'
      (|score| does).

  Returns:
    `auroc` `[batch]` (NaN for rows with only one class: an empty or a full
    ground-truth mask; left out of the mean with a warning) and
    `auroc_mean`.
  """
  scores = _check_scores('scores', scores)
  gt = _check_ground_truth('ground_truth', ground_truth, scores.shape)
  absolute = _rank_abs(rank_by)
  if not _checks.is_tracer(gt):
    g = np.asarray(gt, bool)
    _warn_undefined('auroc', ~g.any(1) | g.all(1),
                    'an empty or a full ground-truth mask (one class only)')
  return _result('auroc', _auroc_core(scores, gt, jnp.bool_(absolute)))


_CHANNEL_REDUCE = ('sum', 'mean', 'abs_sum', 'max', 'max_abs')


def _check_maps(saliency: Any, gt_mask: Any, channel_reduce: str
                ) -> tuple[Array, Array]:
  """-> saliency `[b, H, W]` float and gt bool `[b, H, W]`."""
  _checks.check_choice('channel_reduce', channel_reduce, _CHANNEL_REDUCE)
  s = _check_scores('saliency', saliency, ndim=(3, 4))
  g = _checks.check_binary('gt_mask', gt_mask)
  if s.ndim == 4:
    s = {'sum': lambda v: v.sum(-1), 'mean': lambda v: v.mean(-1),
         'abs_sum': lambda v: jnp.abs(v).sum(-1),
         'max': lambda v: v.max(-1),
         'max_abs': lambda v: jnp.abs(v).max(-1)}[channel_reduce](s)
  if g.ndim == 4:
    g = g.any(-1)
  if g.shape == s.shape[1:]:
    g = jnp.broadcast_to(g, s.shape)
  if g.shape != s.shape:
    raise ValueError(f'gt_mask must have shape {s.shape} (batch, H, W; an '
                     f'optional channel axis is reduced with any), got '
                     f'{_checks.as_array("gt_mask", gt_mask).shape}.')
  return s, g


@jax.jit
def _pointing_core(sal, gt, tolerance):
  b, h, w = sal.shape
  flat = jnp.argmax(sal.reshape(b, -1), axis=1)
  i0, j0 = flat // w, flat % w
  ii = jnp.arange(h)[None, :, None] - i0[:, None, None]
  jj = jnp.arange(w)[None, None, :] - j0[:, None, None]
  near = (ii * ii + jj * jj).astype(jnp.float32) <= tolerance ** 2
  hit = jnp.any(gt & near, axis=(1, 2)).astype(jnp.float32)
  return jnp.where(gt.any(axis=(1, 2)), hit, jnp.nan), jnp.stack([i0, j0], 1)


@_ranking
def pointing_game(saliency: Array, gt_mask: Array, *,
                  tolerance: float = 15.0, channel_reduce: str = 'sum',
                  rank_by: str = 'signed') -> dict[str, Array]:
  """Pointing game (Zhang et al., "Top-down neural attention by excitation
  backprop", ECCV 2016): a hit if the saliency maximum lies within
  `tolerance` pixels (Euclidean) of the ground-truth mask, i.e. inside the mask
  dilated by a disc of that radius (TorchRay's default: 15 px).

  Ties of the maximum go to the first pixel in row-major order.

  Args:
    saliency: `[batch, H, W]` or `[batch, H, W, C]` (channels reduced by
      `channel_reduce`).
    gt_mask: bool/0-1 `[batch, H, W]` (`[batch, H, W, C]` is reduced by any).
    tolerance: radius in pixels, >= 0 (0: the maximum must be in the mask).
    channel_reduce: 'sum', 'mean', 'abs_sum', 'max' or 'max_abs'.
    rank_by: 'signed' (default: the pixel of the largest reduced saliency)
      or 'abs' (of the largest |reduced saliency|).

  Returns:
    `hit` float `[batch]` (1/0; NaN when a mask is empty, left out of the
    mean with a warning),
    `hit_mean` (the pointing-game accuracy) and `point` int `[batch, 2]`,
    the (row, col) of each maximum.
  """
  s, g = _check_maps(saliency, gt_mask, channel_reduce)
  tol = np.asarray(tolerance)
  if tol.size != 1 or not np.isfinite(tol) or float(tol) < 0:
    raise ValueError(f'tolerance must be a finite number >= 0, got '
                     f'{tolerance!r}.')
  if _rank_abs(rank_by):
    s = jnp.abs(s)
  _warn_empty_ground_truth('pointing_game', g, (1, 2))
  hit, point = _pointing_core(s, g, jnp.float32(tolerance))
  return _result('hit', hit, point=point)


@functools.partial(jax.jit, static_argnames=('k',))
def _ehr_core(sal, gt, k):
  b = sal.shape[0]
  s = sal.reshape(b, -1)
  g = gt.reshape(b, -1).astype(jnp.float32)
  if k is not None:
    s, idx = jax.lax.top_k(s, k)
    g = jnp.take_along_axis(g, idx, 1)
  pos = jnp.maximum(s, 0.0)
  tot = pos.sum(1)
  ok = (tot > 0) & gt.reshape(b, -1).any(1)
  return jnp.where(ok, (pos * g).sum(1) / jnp.where(tot > 0, tot, 1.0),
                   jnp.nan)


def effective_heat_ratio(saliency: Array, gt_mask: Array, *,
                         top_q: float | None = None,
                         channel_reduce: str = 'sum') -> dict[str, Array]:
  """Fraction of the positive attribution mass inside the ground-truth mask.

  ratio = sum_{p in G} max(s_p, 0) / sum_p max(s_p, 0) (the "energy-based
  pointing game" of Score-CAM, Wang et al. 2020). With `top_q` only the
  ceil(q * H * W) highest-saliency pixels count (InputIBA's bounding-box
  metric uses q = box area / image area). See `effective_heat_ratio_curve`
  for InputIBA's thresholded EHR curve.

  Args:
    saliency: `[batch, H, W]` or `[batch, H, W, C]`.
    gt_mask: bool/0-1 `[batch, H, W]`.
    top_q: optional fraction in (0, 1] of pixels to keep.
    channel_reduce: how channels are combined (see `pointing_game`).

  Returns:
    `ehr` `[batch]` (NaN when a map has no positive mass or its ground-truth
    mask is empty) and `ehr_mean`, the mean over the other examples (a
    warning counts the examples with an empty mask).
  """
  s, g = _check_maps(saliency, gt_mask, channel_reduce)
  k = None
  if top_q is not None:
    if not 0.0 < float(top_q) <= 1.0:
      raise ValueError(f'top_q must be in (0, 1], got {top_q!r}.')
    n = s.shape[1] * s.shape[2]
    k = max(1, min(n, math.ceil(float(top_q) * n - 1e-9)))
  _warn_empty_ground_truth('effective_heat_ratio', g, (1, 2))
  return _result('ehr', _ehr_core(s, g, k))


@functools.partial(jax.jit, static_argnames=('num_quantiles', 'normalize',
                                             'weight_by_heat'))
def _ehr_curve_core(sal, gt, base_threshold, num_quantiles, normalize,
                    weight_by_heat):
  b = sal.shape[0]
  h = sal.reshape(b, -1)
  g = gt.reshape(b, -1)
  if normalize:
    lo, hi = h.min(1, keepdims=True), h.max(1, keepdims=True)
    h = jnp.where(hi > lo, (h - lo) / jnp.where(hi > lo, hi - lo, 1.0), 0.0)
  poi = h >= base_threshold
  h = jnp.where(poi, h, 0.0)
  m = poi.sum(1)
  srt = jnp.sort(jnp.where(poi, h, jnp.inf), axis=1)
  max_heat = h.max(1)
  qs = jnp.linspace(0.0, 1.0, num_quantiles)
  den = num_quantiles - 1

  def ratio(j):
    # numpy's 'linear' quantile at q = j / den: position q (m - 1), computed
    # in integers so that positions on a data point are exact.
    num = j * jnp.maximum(m - 1, 0)
    i_lo = num // den
    frac = (num % den).astype(jnp.float32) / den
    i_hi = jnp.minimum(i_lo + 1, jnp.maximum(m - 1, 0))
    v_lo = jnp.take_along_axis(srt, i_lo[:, None], 1)[:, 0]
    v_hi = jnp.take_along_axis(srt, i_hi[:, None], 1)[:, 0]
    quant = jnp.where(frac > 0, v_lo + frac * (v_hi - v_lo), v_lo)
    t = jnp.minimum(quant, 0.99 * max_heat)
    binm = h >= t[:, None]
    inside = binm & g
    num = jnp.where(inside, h, 0.0).sum(1) if weight_by_heat else inside.sum(1)
    return num / (binm.sum(1) + 1e-8)

  ratios = jax.vmap(ratio, out_axes=1)(jnp.arange(num_quantiles))  # [b, Q]
  auc = jnp.trapezoid(ratios, qs, axis=1)
  ok = (m > 0) & g.any(1)
  return (jnp.where(ok, auc, jnp.nan), jnp.where(ok[:, None], ratios, jnp.nan),
          qs)


def effective_heat_ratio_curve(saliency: Array, gt_mask: Array, *,
                               base_threshold: float = 0.1,
                               num_quantiles: int = 11,
                               weight_by_heat: bool = True,
                               normalize: bool = True,
                               channel_reduce: str = 'sum'
                               ) -> dict[str, Array]:
  """InputIBA's effective heat ratios (Zhang, Khakzar et al., NeurIPS 2021;
  `input_iba/evaluation/vision/effective_heat_ratios.py`).

  Per map h in [0, 1]: P = {h >= base_threshold}, h := 0 outside P; for
  q in linspace(0, 1, num_quantiles): t_q = min(quantile_q(h[P]),
  0.99 max h) (numpy's linear quantile), B = {h >= t_q}, ratio_q =
  sum_{B ∩ G} h / |B| (counts instead of heat if not `weight_by_heat`);
  EHR = trapezoid of ratio_q over q. Higher is better.

  Args:
    saliency: `[batch, H, W]` or `[batch, H, W, C]`.
    gt_mask: bool/0-1 `[batch, H, W]` (boxes rasterised to a mask).
    base_threshold: the heat threshold defining P (0.1).
    num_quantiles: number of quantile levels (11: 0, 0.1, ..., 1).
    weight_by_heat: sum heat (True, the default there) or count pixels.
    normalize: min-max scale each map to [0, 1] first (InputIBA reads maps
      from 8-bit PNGs, already in [0, 1]); False for maps already in [0, 1].
    channel_reduce: how channels are combined (see `pointing_game`).

  Returns:
    `ehr_auc` `[batch]` (NaN when P or the ground-truth mask is empty),
    `ehr_auc_mean` (over the other examples; a warning counts the examples
    with an empty mask), `ratios` `[batch, num_quantiles]` (NaN rows
    likewise) and `quantiles` `[num_quantiles]`.
  """
  s, g = _check_maps(saliency, gt_mask, channel_reduce)
  num_quantiles = _checks.check_int('num_quantiles', num_quantiles, minimum=2)
  _warn_empty_ground_truth('effective_heat_ratio_curve', g, (1, 2))
  auc, ratios, qs = _ehr_curve_core(s, g, jnp.float32(base_threshold),
                                    num_quantiles, bool(normalize),
                                    bool(weight_by_heat))
  return _result('ehr_auc', auc, ratios=ratios, quantiles=qs)


# =============================================================================
# Post-hoc accuracy (L2X).
# =============================================================================


@functools.partial(jax.jit, static_argnames=('chunk',))
def _posthoc_core(box, x, keep, baseline, chunk):
  out = bb.forward_in_chunks(box, x, chunk)
  xm = masking.apply_mask(x, keep, baseline)
  out_s = bb.forward_in_chunks(box, xm, chunk)
  pred, pred_s = jnp.argmax(out, -1), jnp.argmax(out_s, -1)
  return (pred == pred_s).astype(jnp.float32), pred, pred_s, out, out_s


def posthoc_accuracy(model: Model, x: Array, selection: Array, *,
                     groups: masking.FeatureGroups | None = None,
                     baseline: float | int | Array = 0.0,
                     data: Array | None = None,
                     batch_size: int = _DEFAULT_BATCH) -> dict[str, Array]:
  """L2X post-hoc accuracy (Chen et al. 2018, §4.2-4.3): the original black
  box's agreement with itself on the selected features only.

  x_S = apply_mask(x, S, baseline) (unselected features set to the baseline,
  0 as in L2X; for token inputs, `box.input_dtype == 'int'`, unselected tokens
  become the pad id `baseline`, default 0, positions kept, as
  `masking.mask_tokens`); score = mean_i [argmax f(x_S)_i == argmax f(x)_i]
  (agreement with the model, not the label).

  Args:
    model: the black box (a `BlackBox` or a JAX callable `x -> logits`).
    x: `[batch, *input_shape]`.
    selection: binary, `[batch, *input_shape]` or, with `groups`,
      `[batch, num_groups]`.
    groups: the feature groups a group-level selection refers to.
    baseline: scalar, `[*input_shape]` or `[batch, *input_shape]` (pad id for
      tokens).
    data: `[m, *input_shape]` data set whose mean is `baseline='mean'`.
    batch_size: rows per model call.

  Returns:
    `agreement` float `[batch]` (1/0), `posthoc_accuracy` `[]`, `prediction`
    and `prediction_selected` int `[batch]`.

  Raises:
    ValueError: the model returned NaN or inf on x or on x_S.
  """
  box = _box(model, x)
  _check_classifier(box, 'posthoc_accuracy')
  x = _checks.check_model_input(box, x)
  masking.check_groups(groups, box.input_shape)
  masking.require_shared_groups(groups, 'this metric')
  keep = masking.selection_mask(selection, x, groups)
  base = _baseline_array('baseline', baseline, x, box, data)
  chunk = _checks.check_int('batch_size', batch_size)
  agree, pred, pred_s, out, out_s = _posthoc_core(box, x, keep, base, chunk)
  _checks.check_finite_outputs(out, method='posthoc_accuracy', where='x')
  _checks.check_finite_outputs(out_s, method='posthoc_accuracy',
                               where='masked copies of x')
  return {'agreement': agree, 'posthoc_accuracy': jnp.mean(agree),
          'prediction': pred, 'prediction_selected': pred_s}


# =============================================================================
# EVAL-X (Jethani et al. 2021).
# =============================================================================


# The EVAL-X evaluator and its training live in `xai_jax.realx`; the metrics
# below score a selection with a trained `realx.Evaluator`.


@functools.partial(jax.jit, static_argnames=('soft', 'chunk'))
def _evalx_core(evaluator, x, keep, y, soft, chunk):
  box = evaluator.box
  xm = evaluator.masked_input(x, keep)
  lp = jax.nn.log_softmax(bb.forward_in_chunks(box, xm, chunk), -1)
  if soft:
    label, ll = jnp.argmax(y, -1), (y * lp).sum(-1)
  else:
    label, ll = y, bb.select_target(lp, y)
  correct = (jnp.argmax(lp, -1) == label).astype(jnp.float32)
  auc = (_auroc_rows(lp[None, :, 1], (label == 1)[None])[0]
         if lp.shape[-1] == 2 else jnp.nan)
  return correct, ll, jnp.exp(lp), auc, lp


def _evalx_prepare(evaluator: realx.Evaluator, x: Array, selection: Array,
                   labels: Array, groups: masking.FeatureGroups | None
                   ) -> tuple[Array, Array, bool]:
  if not isinstance(evaluator, realx.Evaluator):
    raise ValueError(f'evaluator must be a realx.Evaluator (from '
                     f'realx.train_evalx), got '
                     f'{type(evaluator).__name__}.')
  x = _checks.check_model_input(evaluator.box, x)
  groups = groups if groups is not None else evaluator.groups
  masking.check_groups(groups, evaluator.box.input_shape)
  masking.require_shared_groups(groups, 'evalx')
  keep = masking.selection_mask(selection, x, groups)
  y, _, soft = _checks.check_labels('labels', labels, x.shape[0],
                             evaluator.num_classes)
  return keep, y, soft


def evalx_accuracy(evaluator: realx.Evaluator, x: Array, selection: Array,
                   labels: Array, *,
                   groups: masking.FeatureGroups | None = None,
                   batch_size: int = _DEFAULT_BATCH) -> dict[str, Array]:
  """EVAL-X accuracy (eACC, Jethani et al. 2021): the accuracy of the
  evaluator q on inputs masked by an explainer's selection.

  Args:
    evaluator: from `realx.train_evalx`.
    x: `[batch, *input_shape]`.
    selection: binary, `[batch, *input_shape]` or `[batch, num_groups]` over
      `groups` (default the evaluator's groups).
    labels: int `[batch]` or soft targets `[batch, c]` (argmax taken for the
      accuracy).
    groups: the groups of a group-level selection.
    batch_size: rows per model call.

  Returns:
    `correct` `[batch]` (1/0), `evalx_accuracy` `[]`, `log_likelihood`
    `[batch]` (log q(y | x_S); for soft targets sum_c y_c log q_c) and
    `log_likelihood_mean`.
  """
  keep, y, soft = _evalx_prepare(evaluator, x, selection, labels, groups)
  correct, ll, _, _, lp = _evalx_core(
      evaluator, x, keep, y, soft, _checks.check_int('batch_size', batch_size))
  _checks.check_finite_outputs(lp, method='evalx_accuracy (the evaluator)',
                               where='masked copies of x')
  return {'correct': correct, 'evalx_accuracy': jnp.mean(correct),
          'log_likelihood': ll, 'log_likelihood_mean': jnp.mean(ll)}


def evalx_auroc(evaluator: realx.Evaluator, x: Array, selection: Array,
                labels: Array, *, groups: masking.FeatureGroups | None = None,
                batch_size: int = _DEFAULT_BATCH) -> dict[str, Array]:
  """EVAL-X AUROC (eAUROC, Jethani et al. 2021) of a binary task: the AUROC
  over the examples of q(y=1 | x_S) against the labels (a data-set-level
  number; Mann-Whitney with ties averaged).

  Args:
    evaluator: from `realx.train_evalx`, with 2 classes.
    x: `[batch, *input_shape]`.
    selection: as in `evalx_accuracy`.
    labels: int 0/1 `[batch]` or soft targets `[batch, 2]` (argmax taken).
    groups: the groups of a group-level selection.
    batch_size: rows per model call.

  Returns:
    `evalx_auroc` `[]` (NaN if only one class is present) and `prob`
    `[batch]`, q(y=1 | x_S).
  """
  if isinstance(evaluator, realx.Evaluator) and evaluator.num_classes != 2:
    raise ValueError(f'evalx_auroc needs a binary evaluator, this one has '
                     f'{evaluator.num_classes} classes; use evalx_accuracy.')
  keep, y, soft = _evalx_prepare(evaluator, x, selection, labels, groups)
  _, _, probs, auc, lp = _evalx_core(
      evaluator, x, keep, y, soft, _checks.check_int('batch_size', batch_size))
  _checks.check_finite_outputs(lp, method='evalx_auroc (the evaluator)',
                               where='masked copies of x')
  return {'evalx_auroc': auc, 'prob': probs[:, 1]}


# =============================================================================
# Faithfulness against the black box.
# =============================================================================


@functools.partial(jax.jit, static_argnames=('modes', 'space', 'chunk'))
def _del_ins_core(box, x, units, target, counts, groups, del_base, ins_base,
                  modes, space, chunk):
  b = x.shape[0]
  if target is None:
    target = jnp.argmax(bb.forward_in_chunks(box, x, chunk),
                        -1).astype(jnp.int32)
  pos = _order_positions(units)
  t1 = counts.shape[0]

  def fn(idx):
    i, t = idx // t1, idx % t1
    top = (pos[i] < counts[t][:, None]).astype(jnp.float32)
    top_x = groups.expand(top)
    xi, tg = x[i], target[i]
    out = {}
    if 'deletion' in modes:
      xd = masking.apply_mask(xi, 1.0 - top_x, del_base[i])
      out['deletion'] = _target_scores(box, box.apply_fn(box.params, xd), tg,
                                       space)
    if 'insertion' in modes:
      xn = masking.apply_mask(xi, top_x, ins_base[i])
      out['insertion'] = _target_scores(box, box.apply_fn(box.params, xn), tg,
                                        space)
    return out

  curves = bb.map_batches(fn, jnp.arange(b * t1, dtype=jnp.int32), chunk)
  frac = counts.astype(jnp.float32) / units.shape[1]
  res = {}
  for m in modes:
    curve = curves[m].reshape(b, t1)
    res[m] = (curve, jnp.trapezoid(curve, frac, axis=1))
  return res, frac, target


@_ranking
def deletion_insertion(model: Model, x: Array, attributions: Array, *,
                       target: Array | int | None = None,
                       groups: masking.FeatureGroups | None = None,
                       baseline: Baseline = 0.0,
                       data: Array | None = None,
                       insertion_baseline: Baseline | None = None,
                       num_steps: int | None = None, mode: str = 'both',
                       space: str = 'probs', rank_by: str = 'signed',
                       batch_size: int = _DEFAULT_BATCH) -> dict[str, Array]:
  """Deletion and insertion curves (Petsiuk et al., "RISE", BMVC 2018, §4.1).

  Units (input elements, or `groups`) are ordered by decreasing attribution
  (group attributions are sums over the group; by |attribution| with
  `rank_by='abs'`; ties by index). Step t of
  `num_steps` affects the first n_t = round(t d / num_steps) units:
  deletion replaces them by `baseline` in x, insertion copies them from x
  into `insertion_baseline` (Petsiuk: zero for deletion, a blurred image for
  insertion: `insertion_baseline='blur'`). After each step the target
  score (softmax probability by default) is recorded; the AUC is the
  trapezoid rule over the fractions n_t / d in [0, 1]. Deletion: lower is
  better; insertion: higher is better. All `batch * (num_steps + 1)` model
  inputs are built and evaluated chunk by chunk (`batch_size` rows each).

  Args:
    model: the black box.
    x: `[batch, *input_shape]`.
    attributions: `[batch, *input_shape]`, or `[batch, num_groups]` with
      `groups`. For images pass pixel groups (`patch_groups(shape, 1)`) to
      delete whole pixels rather than single channels.
    target: class per example `[batch]`, one int, or None for the predicted
      class on the clean input; indices in `[0, num_outputs)`.
    groups: optional feature groups (units of deletion).
    baseline: the deletion fill: scalar, `[*input_shape]`, `[batch,
      *input_shape]`, or 'zero' / 'mean' / 'blur' (`masking.make_baseline`).
      For token inputs the pad id.
    data: `[m, *input_shape]` data set whose mean is `baseline='mean'`.
    insertion_baseline: the insertion canvas (default: `baseline`).
    num_steps: number of steps T (default min(d, 100)), 1 <= T <= d.
    mode: 'both', 'deletion' or 'insertion'.
    space: 'probs' (Petsiuk), 'log_probs' or 'raw' model outputs.
    rank_by: the deletion order: 'signed' (default, Petsiuk: most positive
      attribution first) or 'abs' (largest |attribution| first).
    batch_size: model rows per chunk.

  Returns:
    `fractions` `[T+1]`, `target` `[batch]` and, per computed mode m,
    `m_curve` `[batch, T+1]`, `m_auc` `[batch]`, `m_auc_mean` `[]`.

  Raises:
    ValueError: a bad argument (named), a target outside `[0, num_outputs)`,
      or a model that returns NaN or inf on x or on its masked copies.
  """
  _checks.check_choice('mode', mode, ('both', 'deletion', 'insertion'))
  absolute = _rank_abs(rank_by)
  box, x, units, groups = _removal_inputs(model, x, attributions, groups,
                                          space, 'deletion_insertion')
  if absolute:
    units = jnp.abs(units)
  d = units.shape[1]
  num_steps = min(d, 100) if num_steps is None else num_steps
  num_steps = _checks.check_int('num_steps', num_steps)
  if num_steps > d:
    raise ValueError(f'num_steps={num_steps} is larger than the number of '
                     f'units d={d}.')
  tgt = bb.check_target(box, target, x.shape[0])
  del_base = _baseline_array('baseline', baseline, x, box, data)
  ins_base = (del_base if insertion_baseline is None else
              _baseline_array('insertion_baseline', insertion_baseline, x,
                              box, data))
  counts = jnp.asarray(np.round(np.linspace(0, d, num_steps + 1)), jnp.int32)
  modes = ('deletion', 'insertion') if mode == 'both' else (mode,)
  res, frac, tgt = _del_ins_core(
      box, x, units, tgt, counts, groups, del_base, ins_base, modes, space,
      _checks.check_int('batch_size', batch_size))
  # The scores used, on x itself (deletion's first point, insertion's last;
  # a NaN output picked by the argmax of target=None lands here too), then
  # on the masked copies.
  for m, (curve, _) in res.items():
    _checks.check_finite_outputs(curve[:, 0 if m == 'deletion' else -1],
                                 method='deletion_insertion', where='x')
  for m, (curve, _) in res.items():
    _checks.check_finite_outputs(curve, method='deletion_insertion',
                                 where=f'masked copies of x ({m} curve)')
  out = {'fractions': frac, 'target': tgt}
  for m, (curve, auc) in res.items():
    out[f'{m}_curve'] = curve
    out.update(_result(f'{m}_auc', auc))
  return out


@functools.partial(jax.jit, static_argnames=('chunk',))
def _blackout_core(box, x, units, target, counts, groups, base, chunk):
  b, t1 = x.shape[0], counts.shape[0]
  pos = _order_positions(units)

  def fn(idx):                                   # a chunk of rows [r]
    i, t = idx // t1, idx % t1
    removed = groups.expand((pos[i] < counts[t][:, None]).astype(jnp.float32))
    out = box.apply_fn(box.params, masking.apply_mask(x[i], 1.0 - removed,
                                                      base[i]))
    lp = bb.to_log_probs(out, box.output)
    tg = target[i]
    return {'hit': (jnp.argmax(out, -1) == tg).astype(jnp.float32),
            'prob': jnp.exp(jnp.take_along_axis(lp, tg[:, None], -1)[:, 0])}

  r = bb.map_batches(fn, jnp.arange(b * t1, dtype=jnp.int32), chunk)
  return r['hit'].reshape(b, t1), r['prob'].reshape(b, t1)


def blackout_curves(model: Model, x: Array, saliency: Array, *,
                    target: Array | int | None = None, order: str = 'most',
                    fractions: Sequence[float] | None = None,
                    baseline: Baseline = 0.0, channel_reduce: str = 'sum',
                    batch_size: int = _DEFAULT_BATCH) -> dict[str, Array]:
  """LTX's perturbation tests (Barkan et al., ICDM 2023; the POS/NEG tests of
  Chefer et al. 2021): pixels blacked out by the map's order.

  For each fraction p of `fractions` (default 0.1, 0.2, ..., 0.9) the
  floor(p H W) pixels of highest saliency (`order='most'`, the POS test) or
  of lowest saliency (`order='least'`, the NEG test) are set to `baseline`
  in every channel (ties by pixel index). Each masked image is scored by
  top-1 agreement with `target` (accuracy) and by the target's softmax
  probability. The curves start at p = 0 (the clean image); the AUCs are
  the trapezoid rule over p in [0, max fraction] (the reference's
  `sklearn.metrics.auc`; multiply by 100 for its units, maximum 90 with the
  default fractions). POS: lower is better; NEG: higher is better. The
  reference's "DEL" / "INS" are the probability AUCs of the POS / NEG
  curves (not RISE's deletion/insertion: `deletion_insertion`).

  Args:
    model: a classifier black box on images `[*input_shape] = [H, W, C]`.
    x: `[batch, H, W, C]`.
    saliency: `[batch, H, W]` (or `[batch, H, W, C]`, reduced over channels
      by `channel_reduce`).
    target: class per example `[batch]`, one int, or None for the predicted
      class on the clean image; indices in `[0, num_outputs)`.
    order: 'most' (POS) or 'least' (NEG) salient pixels removed first.
    fractions: increasing fractions in (0, 1].
    baseline: the fill of removed pixels (scalar, an array, or 'zero' /
      'mean' / 'blur' as `deletion_insertion`); 0 = black for [0, 1] images.
    channel_reduce: 'sum', 'mean', 'abs_sum', 'max' or 'max_abs'.
    batch_size: model rows per chunk.

  Returns:
    `fractions` `[T+1]` (0 first), `target` `[batch]`, `accuracy_curve`,
    `prob_curve` `[batch, T+1]`, `accuracy_auc`, `prob_auc` `[batch]` and
    their means `accuracy_auc_mean`, `prob_auc_mean`, and the curves' means
    over the batch `accuracy_curve_mean`, `prob_curve_mean` `[T+1]`.

  Raises:
    ValueError: a bad argument (named), a non-classifier, a target outside
      `[0, num_outputs)`, or a model that returns NaN or inf.
  """
  _checks.check_choice('order', order, ('most', 'least'))
  box = _box(model, x)
  _check_classifier(box, 'blackout_curves')
  x = _checks.check_model_input(box, x)
  if len(box.input_shape) != 3:
    raise ValueError('blackout_curves needs images [batch, H, W, C]; the '
                     f'black box takes {box.input_shape}.')
  shape = tuple(_checks.as_array('saliency', saliency).shape)
  sal, _ = _check_maps(saliency, jnp.ones(shape[1:3], bool), channel_reduce)
  if sal.shape != x.shape[:3]:
    raise ValueError(f'saliency must have shape {x.shape[:3]} (batch, H, W) '
                     f'or {x.shape}, got {sal.shape}.')
  f = np.arange(1, 10) / 10 if fractions is None else np.asarray(
      fractions, np.float64)
  if (f.ndim != 1 or not f.size or not np.all(np.isfinite(f))
      or np.any(f <= 0) or np.any(f > 1) or np.any(np.diff(f) <= 0)):
    raise ValueError('fractions must be increasing values in (0, 1], got '
                     f'{fractions!r}.')
  tgt = bb.check_target(box, target, x.shape[0])
  if tgt is None:
    tgt = box.predict(x)
  base = _baseline_array('baseline', baseline, x, box)
  d = sal.shape[1] * sal.shape[2]
  units = sal.reshape(sal.shape[0], d)
  units = units if order == 'most' else 0.0 - units
  counts = jnp.asarray(np.concatenate([[0], np.floor(f * d + 1e-9)]),
                       jnp.int32)
  pixels = masking.patch_groups(box.input_shape, 1)
  hit, prob = _blackout_core(box, x, units, jnp.asarray(tgt, jnp.int32),
                             counts, pixels, base,
                             _checks.check_int('batch_size', batch_size))
  _checks.check_finite_outputs(prob, method='blackout_curves',
                               where='x or its blacked-out copies')
  xs = jnp.asarray(np.concatenate([[0.0], f]), jnp.float32)
  out = {'fractions': xs, 'target': jnp.asarray(tgt, jnp.int32),
         'accuracy_curve': hit, 'prob_curve': prob,
         'accuracy_curve_mean': hit.mean(0), 'prob_curve_mean': prob.mean(0)}
  out.update(_result('accuracy_auc', jnp.trapezoid(hit, xs, axis=1)))
  out.update(_result('prob_auc', jnp.trapezoid(prob, xs, axis=1)))
  return out


@jax.jit
def _average_precision(scores: Array, positive: Array) -> Array:
  """sklearn's `average_precision_score` per row of `[b, d]` (ties: one
  threshold per distinct score); NaN for a row without positives."""
  order = jnp.argsort(0.0 - scores, axis=-1, stable=True)
  s = jnp.take_along_axis(scores, order, -1)
  p = jnp.take_along_axis(positive, order, -1).astype(jnp.float32)
  d = s.shape[-1]
  tp = jnp.cumsum(p, -1)
  idx = jnp.arange(d)
  is_end = jnp.concatenate([s[:, 1:] != s[:, :-1],
                            jnp.ones((s.shape[0], 1), bool)], -1)
  end = jax.lax.cummin(jnp.where(is_end, idx, d), axis=1, reverse=True)
  precision = jnp.take_along_axis(tp, end, -1) / (end + 1.0)
  npos = tp[:, -1]
  return jnp.where(npos > 0, jnp.sum(p * precision, -1) / jnp.maximum(npos, 1),
                   jnp.nan)


@jax.jit
def _segmentation_core(sal, gt):
  b = sal.shape[0]
  flat = sal.reshape(b, -1)
  lo, hi = flat.min(1, keepdims=True), flat.max(1, keepdims=True)
  norm = (flat - lo) / jnp.where(hi > lo, hi - lo, 1.0)
  pred = norm > norm.mean(1, keepdims=True)
  g = gt.reshape(b, -1)
  correct = jnp.sum(pred == g, 1)
  inter = jnp.stack([jnp.sum(~pred & ~g, 1), jnp.sum(pred & g, 1)], 1)
  union = jnp.stack([jnp.sum(~pred | ~g, 1), jnp.sum(pred | g, 1)], 1)
  ap = jnp.stack([_average_precision(1.0 - norm, ~g),
                  _average_precision(norm, g)], 1)
  return correct, inter, union, ap


def segmentation_scores(saliency: Array, gt_mask: Array, *,
                        channel_reduce: str = 'sum') -> dict[str, Array]:
  """LTX's segmentation scores of maps against ground-truth masks (Barkan et
  al., ICDM 2023; the protocol of Chefer et al. 2021).

  Each map is min-max normalised and binarised at its mean (foreground =
  above the mean). Pixel accuracy and the IoU of the two classes
  (background, foreground) are accumulated over the whole batch (summed
  intersections over summed unions); mIoU is the mean of the two IoUs. mAP
  is the per-image average precision of (1 - map, map) against the
  (background, foreground) masks (sklearn's `average_precision_score`),
  averaged over the classes and then over images.

  Args:
    saliency: `[batch, H, W]` (or `[batch, H, W, C]`, reduced by
      `channel_reduce`).
    gt_mask: binary `[batch, H, W]` (an optional channel axis is reduced
      with any), or `[H, W]` for every example.
    channel_reduce: 'sum', 'mean', 'abs_sum', 'max' or 'max_abs'.

  Returns:
    `pixel_accuracy`, `miou`, `iou_foreground`, `iou_background`, `map`
    (scalars over the batch) and the per-example `pixel_accuracy_per_example`,
    `iou_per_example` (foreground IoU), `ap` `[batch]` (NaN where a class is
    absent from the mask).

  Raises:
    ValueError: bad shapes or non-binary masks (named).
  """
  sal, gt = _check_maps(saliency, gt_mask, channel_reduce)
  correct, inter, union, ap = _segmentation_core(sal, gt)
  npix = sal.shape[1] * sal.shape[2]
  iou = inter.sum(0) / jnp.maximum(union.sum(0), 1)
  ap_img = jnp.mean(ap, 1)
  return {'pixel_accuracy': correct.sum() / (npix * sal.shape[0]),
          'miou': iou.mean(), 'iou_background': iou[0],
          'iou_foreground': iou[1], 'map': _nanmean(ap_img),
          'pixel_accuracy_per_example': correct / npix,
          'iou_per_example': inter[:, 1] / jnp.maximum(union[:, 1], 1),
          'ap': ap_img}



@functools.partial(jax.jit, static_argnames=('num_subsets', 'space',
                                             'chunk'))
def _sens_n_core(box, x, units, key, target, groups, base, n, num_subsets,
                 space, chunk):
  b, d = units.shape
  out0 = bb.forward_in_chunks(box, x, chunk)
  if target is None:
    target = jnp.argmax(out0, -1).astype(jnp.int32)
  f0 = _target_scores(box, out0, target, space)

  def subset(i, s):
    u = jax.random.bits(jax.random.fold_in(jax.random.fold_in(key, i), s),
                        (d,), jnp.uint32)
    order = jnp.argsort(u)  # a uniformly random order; its first n: S
    return jnp.zeros((d,), jnp.float32).at[order].set(
        (jnp.arange(d) < n).astype(jnp.float32))

  def fn(idx):
    i, s = idx // num_subsets, idx % num_subsets
    m = jax.vmap(subset)(i, s)
    attr_sum = (m * units[i]).sum(1)
    xr = masking.apply_mask(x[i], 1.0 - groups.expand(m),
                     base[i])
    drop = f0[i] - _target_scores(box, box.apply_fn(box.params, xr),
                                  target[i], space)
    return attr_sum, drop

  attr_sum, drop = bb.map_batches(
      fn, jnp.arange(b * num_subsets, dtype=jnp.int32), chunk)
  attr_sum = attr_sum.reshape(b, num_subsets)
  drop = drop.reshape(b, num_subsets)
  return _pearson(attr_sum, drop), attr_sum, drop, f0


def sensitivity_n(model: Model, x: Array, attributions: Array, *, n: int,
                  key: Array, num_subsets: int = 100,
                  baseline: Baseline = 0.0,
                  data: Array | None = None,
                  target: Array | int | None = None,
                  groups: masking.FeatureGroups | None = None,
                  space: str = 'raw', batch_size: int = _DEFAULT_BATCH
                  ) -> dict[str, Array]:
  """Sensitivity-n (Ancona et al., "Towards better understanding of
  gradient-based attribution methods", ICLR 2018, Def. 3 / §4).

  For each example, `num_subsets` random subsets S of n units (drawn
  uniformly, independently per example and subset from `key`): the Pearson
  correlation between sum_{i in S} R_i and f_t(x) - f_t(x_{S <- baseline}).
  Attributions that satisfy sensitivity-n (e.g. exact attributions of a
  linear model with the zero baseline) give 1.

  Args:
    model: the black box.
    x: `[batch, *input_shape]`.
    attributions: `[batch, *input_shape]`, or `[batch, num_groups]` with
      `groups` (input-shaped ones are summed per group).
    n: the subset size, 1 <= n <= d.
    key: PRNG key of the subsets.
    num_subsets: subsets per example (100 in Ancona et al. and InputIBA).
    baseline: the value of removed features (see `deletion_insertion`).
    data: `[m, *input_shape]` data set whose mean is `baseline='mean'`.
    target: class per example, one int, or None (predicted class); indices
      in `[0, num_outputs)`.
    groups: optional feature groups (units of removal).
    space: the scored output: 'raw' (logits, the default as in InputIBA),
      'probs' or 'log_probs'.
    batch_size: model rows per chunk.

  Returns:
    `sensitivity_n` `[batch]` (NaN where a variance is zero),
    `sensitivity_n_mean`, and `attribution_sums`, `output_drops`
    `[batch, num_subsets]`.

  Raises:
    ValueError: a bad argument (named), a target outside `[0, num_outputs)`,
      or a model that returns NaN or inf on x or on its masked copies.
  """
  box, x, units, groups = _removal_inputs(model, x, attributions, groups,
                                          space, 'sensitivity_n')
  n = _checks.check_k('n', n, units.shape[1])
  num_subsets = _checks.check_int('num_subsets', num_subsets, minimum=2)
  key = _checks.as_key('key', key, method='sensitivity_n')
  tgt = bb.check_target(box, target, x.shape[0])
  base = _baseline_array('baseline', baseline, x, box, data)
  corr, sums, drops, f0 = _sens_n_core(
      box, x, units, key, tgt, groups, base, jnp.int32(n), num_subsets, space,
      _checks.check_int('batch_size', batch_size))
  _checks.check_finite_outputs(f0, method='sensitivity_n', where='x')
  _checks.check_finite_outputs(drops, method='sensitivity_n',
                               where='masked copies of x')
  return _result('sensitivity_n', corr, attribution_sums=sums,
                 output_drops=drops)


@functools.partial(jax.jit, static_argnames=('num_samples', 'space', 'chunk'))
def _infidelity_core(box, x, attr, key, target, base, use_base, noise_std,
                     num_samples, space, chunk):
  b = x.shape[0]
  out0 = bb.forward_in_chunks(box, x, chunk)
  if target is None:
    target = jnp.argmax(out0, -1).astype(jnp.int32)
  f0 = _target_scores(box, out0, target, space)

  def noise(i, s):
    k = jax.random.fold_in(jax.random.fold_in(key, i), s)
    return noise_std * jax.random.normal(k, box.input_shape, x.dtype)

  def fn(idx):
    i, s = idx // num_samples, idx % num_samples
    eps = jax.vmap(noise)(i, s)
    xi = x[i]
    # use_base = 0: I = eps; 1: I = x - x0 + eps ~ x - (x0 + eps') (symmetric).
    pert = use_base * (xi - base[i]) + eps
    fx = _target_scores(box, box.apply_fn(box.params, xi - pert), target[i],
                        space)
    dot = (pert * attr[i]).reshape(idx.shape[0], -1).sum(1)
    return dot, f0[i] - fx

  dot, diff = bb.map_batches(
      fn, jnp.arange(b * num_samples, dtype=jnp.int32), chunk)
  dot, diff = dot.reshape(b, num_samples), diff.reshape(b, num_samples)
  infid = jnp.mean((dot - diff) ** 2, axis=1)
  dd = jnp.mean(dot * dot, axis=1)
  beta = jnp.where(dd > 0, jnp.mean(dot * diff, axis=1) /
                   jnp.where(dd > 0, dd, 1.0), 0.0)
  infid_n = jnp.mean((beta[:, None] * dot - diff) ** 2, axis=1)
  return infid, infid_n, beta, f0, diff


def infidelity(model: Model, x: Array, attributions: Array, *, key: Array,
               num_samples: int = 100, noise_std: float = 0.1,
               baseline: float | Array | None = None,
               data: Array | None = None,
               target: Array | int | None = None, space: str = 'raw',
               batch_size: int = _DEFAULT_BATCH) -> dict[str, Array]:
  """Explanation infidelity (Yeh et al., "On the (in)fidelity and sensitivity
  of explanations", NeurIPS 2019, Eq. 2).

  INFD(Phi, f, x) = E_I[(I^T Phi(x) - (f(x) - f(x - I)))^2], estimated with
  `num_samples` perturbations per example: Gaussian I ~ N(0, noise_std^2 Id)
  (`baseline=None`), or the noisy-baseline perturbation I = x - (x0 + eps),
  eps ~ N(0, noise_std^2 Id), around a baseline x0 (drawn as x - x0 + eps,
  the same distribution). Also returns the
  scale-invariant version with the optimal scaling beta = E[I^T Phi Δf] /
  E[(I^T Phi)^2] (INFD of beta Phi; Captum's `normalize=True`). The exact
  gradient of a linear model has infidelity 0. Lower is better.

  Args:
    model: the black box (float inputs).
    x: `[batch, *input_shape]`.
    attributions: `[batch, *input_shape]` (Phi).
    key: PRNG key of the perturbations.
    num_samples: perturbations per example.
    noise_std: sigma of the Gaussian perturbation.
    baseline: None (pure Gaussian perturbations) or x0 (scalar,
      `[*input_shape]` or `[batch, *input_shape]`).
    data: `[m, *input_shape]` data set whose mean is `baseline='mean'`.
    target: class per example, one int, or None (predicted class); indices
      in `[0, num_outputs)`.
    space: the explained output: 'raw' (default), 'probs' or 'log_probs'.
    batch_size: model rows per chunk.

  Returns:
    `infidelity` `[batch]`, `infidelity_mean`, `infidelity_normalized`
    `[batch]`, `infidelity_normalized_mean` and `beta` `[batch]`.

  Raises:
    ValueError: a bad argument (named), a target outside `[0, num_outputs)`,
      or a model that returns NaN or inf on x or on its perturbed copies.
  """
  box = _box(model, x)
  if box.input_dtype == 'int':
    raise ValueError('infidelity needs continuous inputs; x holds token ids.')
  x = _checks.check_model_input(box, x)
  _checks.check_choice('space', space, _SPACES)
  if space != 'raw':
    _check_classifier(box, f'infidelity(space={space!r})')
  attr = _checks.as_array('attributions', attributions)
  _checks.check_array('attributions', attr, finite=True)
  if attr.shape != x.shape:
    raise ValueError(f'attributions must have the shape of x {x.shape}, got '
                     f'{attr.shape}.')
  attr = attr.astype(x.dtype)
  num_samples = _checks.check_int('num_samples', num_samples)
  _checks.check_positive('noise_std', noise_std)
  key = _checks.as_key('key', key, method='infidelity')
  tgt = bb.check_target(box, target, x.shape[0])
  if baseline is None:
    base, use_base = jnp.zeros_like(x), 0.0
  else:
    base, use_base = _baseline_array('baseline', baseline, x, box, data), 1.0
  infid, infid_n, beta, f0, diff = _infidelity_core(
      box, x, attr, key, tgt, base, jnp.asarray(use_base, x.dtype),
      jnp.asarray(noise_std, x.dtype),
      num_samples, space, _checks.check_int('batch_size', batch_size))
  _checks.check_finite_outputs(f0, method='infidelity', where='x')
  _checks.check_finite_outputs(diff, method='infidelity',
                               where='perturbed copies of x')
  out = _result('infidelity', infid)
  out.update(_result('infidelity_normalized', infid_n, beta=beta))
  return out


# =============================================================================
# Shapley estimation error.
# =============================================================================


@jax.jit
def _shapley_error_core(est, ref):
  err = est - ref
  mae = jnp.mean(jnp.abs(err), axis=1)
  rmse = jnp.sqrt(jnp.mean(err * err, axis=1))
  spearman = _pearson(_midranks(est), _midranks(ref))
  return mae, rmse, spearman


def shapley_error(estimate: Array, reference: Array) -> dict[str, Array]:
  """Error of estimated Shapley values against reference (e.g. exact) ones.

  Per example: MAE = mean_i |e_i - r_i|, RMSE = sqrt(mean_i (e_i - r_i)^2)
  and Spearman's rho = Pearson correlation of the mid-ranks (ties averaged,
  as `scipy.stats.spearmanr`), as used to compare KernelSHAP / FastSHAP
  (Jethani et al. 2022) estimates with exact values.

  Args:
    estimate: `[batch, d]`.
    reference: `[batch, d]`.

  Returns:
    `mae`, `rmse`, `spearman` `[batch]` (Spearman is NaN for a constant
    row) and their means over the batch `mae_mean`, `rmse_mean`,
    `spearman_mean`.
  """
  est = _check_scores('estimate', estimate)
  ref = _check_scores('reference', reference)
  if ref.shape != est.shape:
    raise ValueError(f'reference must have the shape of estimate {est.shape}, '
                     f'got {ref.shape}.')
  mae, rmse, spearman = _shapley_error_core(est, ref)
  out = _result('mae', mae)
  out.update(_result('rmse', rmse))
  out.update(_result('spearman', spearman))
  return out


__all__ = [
    'auroc', 'blackout_curves', 'deletion_insertion', 'effective_heat_ratio',
    'effective_heat_ratio_curve', 'evalx_accuracy', 'evalx_auroc',
    'infidelity', 'median_rank', 'pointing_game', 'posthoc_accuracy',
    'segmentation_scores', 'sensitivity_n', 'shapley_error', 'top_k_mask',
    'tpr_fdr_at_k',
]
