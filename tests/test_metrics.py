"""Tests of xai_jax.metrics: real numbers on hand examples and linear models."""

import inspect
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from sklearn.metrics import roc_auc_score

from xai_jax import blackbox as bb
from xai_jax import masking
from xai_jax import metrics as M
from xai_jax import realx


# ----------------------------------------------------------------- helpers
def l2x_median_rank(scores, gt, rng):
  """L2X's create_rank + compute_median_rank in numpy (per-row gt sets)."""
  scores = np.abs(scores)
  n, d = scores.shape
  out = []
  for i in range(n):
    idx = rng.permutation(d)
    pr = (-scores[i][idx]).argsort().argsort() + 1
    rank = pr[np.argsort(idx)]
    out.append(np.median(rank[gt[i]]))
  return np.array(out)


def linear_box(w, b=0.0):
  """Two-class box with logits [0, w.x + b] (float32)."""
  w = jnp.asarray(w, jnp.float32)

  def fn(x):
    z = x @ w + b
    return jnp.stack([jnp.zeros_like(z), z], -1)
  return bb.from_jax(fn, input_shape=(w.shape[0],), name='linear')


def linear_regression_box(w):
  w = jnp.asarray(w, jnp.float32)
  return bb.from_jax(lambda x: (x @ w)[:, None], input_shape=(w.shape[0],),
                     output='regression', name='linreg')


# ------------------------------------------------------------- median rank
# One shape [N, D] for most median-rank tests: one compilation.
N, D = 4000, 10


def _first_k(k, n=N, d=D):
  gt = np.zeros((n, d), bool)
  gt[:, :k] = True
  return gt


def test_median_rank_perfect_selection_is_optimal():
  for k, seed in ((2, 0), (4, 1), (5, 2)):  # XOR 1.5, orange/additive 2.5, 3
    gt = _first_k(k)
    r = M.median_rank(gt.astype(np.float32), gt, jax.random.key(seed))
    np.testing.assert_allclose(r['median_rank'], (k + 1) / 2)
    np.testing.assert_allclose(r['median_rank_mean'], (k + 1) / 2)
    np.testing.assert_allclose(r['median_rank_std'], 0.0)


def test_median_rank_random_ties_average():
  gt = _first_k(2)
  # A selection of 3 features containing both true ones: the 3 tied ranks are
  # a random permutation of 1..3, E[median of the two true ones] = 2.
  sel = _first_k(3).astype(np.float32)
  r = M.median_rank(sel, gt, jax.random.key(0))
  assert abs(float(r['median_rank_mean']) - 2.0) < 0.02
  vals, counts = np.unique(np.asarray(r['median_rank']), return_counts=True)
  np.testing.assert_array_equal(vals, [1.5, 2.0, 2.5])
  np.testing.assert_allclose(counts / N, 1 / 3, atol=0.03)
  # Constant scores: every ranking equally likely, E = (d + 1) / 2.
  r = M.median_rank(np.ones((N, D), np.float32), gt, jax.random.key(1))
  assert abs(float(r['median_rank_mean']) - 5.5) < 0.1
  # Ranks are a permutation of 1..d in every row, uniform over positions.
  ranks = np.asarray(r['ranks'])
  np.testing.assert_array_equal(np.sort(ranks, 1),
                                np.tile(np.arange(1, D + 1), (N, 1)))
  np.testing.assert_allclose(ranks.mean(0), 5.5, atol=0.2)


def test_median_rank_ground_truth_last():
  rng = np.random.default_rng(0)
  k = 4
  gt = _first_k(k)
  s = np.where(gt, 0.0, rng.uniform(1, 2, (N, D))).astype(np.float32)
  r = M.median_rank(s, gt, jax.random.key(0))
  np.testing.assert_allclose(r['median_rank'], D - (k - 1) / 2)
  # Signed ranking (the default): large negative scores come last, so the
  # true features (score 0) are first; by |score| they are last again.
  r = M.median_rank(-s, gt, jax.random.key(0))
  np.testing.assert_allclose(r['median_rank'], (k + 1) / 2)
  r = M.median_rank(-s, gt, jax.random.key(0), rank_by='abs')
  np.testing.assert_allclose(r['median_rank'], D - (k - 1) / 2)


def test_median_rank_matches_l2x_numpy_and_varying_sizes():
  rng = np.random.default_rng(1)
  s = rng.normal(size=(N, D)).astype(np.float32)  # no ties: deterministic
  # Switch data set: {0..3, 9} or {4..7, 9}; plus rows of other sizes.
  regime = rng.integers(0, 2, N)
  gt = np.zeros((N, D), bool)
  gt[regime == 0, :4] = True
  gt[regime == 1, 4:8] = True
  gt[:, 9] = True
  gt[:50] = rng.uniform(size=(50, D)) < 0.5
  gt[:50, 0] = True
  want = l2x_median_rank(s, gt, rng)  # L2X ranks by |score|
  got = M.median_rank(s, gt, jax.random.key(3), rank_by='abs')['median_rank']
  np.testing.assert_allclose(got, want)
  # The L2X switch optimum 3.0 with a perfect binary selection.
  r = M.median_rank(gt * 1.0, gt, jax.random.key(0))
  np.testing.assert_allclose(r['median_rank'][50:], 3.0)
  np.testing.assert_allclose(r['median_rank'][:50],
                             (gt[:50].sum(1) + 1) / 2)


def test_median_rank_empty_row_is_nan_and_left_out_of_mean():
  s = np.array([[3., 2., 1.], [1., 2., 3.]], np.float32)
  gt = np.array([[True, False, False], [False, False, False]])
  with pytest.warns(UserWarning, match='median_rank: 1 of 2 examples have '
                    'an empty ground-truth mask'):
    r = M.median_rank(s, gt, jax.random.key(0))
  assert float(r['median_rank'][0]) == 1.0
  assert np.isnan(r['median_rank'][1])
  assert float(r['median_rank_mean']) == 1.0


@pytest.mark.filterwarnings('ignore:median_rank')
def test_median_rank_same_key_same_result():
  rng = np.random.default_rng(0)
  s = rng.integers(0, 3, (N, D)).astype(np.float32)  # many ties
  gt = rng.uniform(size=(N, D)) < 0.4
  a = M.median_rank(s, gt, jax.random.key(5))
  b = M.median_rank(s, gt, jax.random.key(5))
  np.testing.assert_array_equal(a['ranks'], b['ranks'])
  c = M.median_rank(s, gt, jax.random.key(6))
  assert not np.array_equal(a['ranks'], c['ranks'])
  # An int seed and a raw uint32[2] key are the same key.
  for key in (5, jax.random.PRNGKey(5)):
    np.testing.assert_array_equal(M.median_rank(s, gt, key)['ranks'],
                                  a['ranks'])
  with pytest.raises(ValueError, match='median_rank is random'):
    M.median_rank(s, gt, None)
  # Tied rows of the same scores get different tie-breaks across rows.
  assert len({tuple(r) for r in np.asarray(a['ranks'])[s.std(1) == 0]}) != 1 \
      or not np.any(s.std(1) == 0)


# ------------------------------------------------------------------ TPR/FDR
def test_tpr_fdr_hand_examples():
  s = np.array([[5., 4., 3., 2., 1.],
                [1., 2., 3., 4., 5.],
                [-9., 0., 0., 1., 0.]], np.float32)
  gt = np.array([[1, 1, 0, 0, 0],
                 [1, 1, 0, 0, 0],
                 [1, 0, 0, 1, 1]], bool)
  r = M.tpr_fdr_at_k(s, gt, 2, rank_by='abs')
  np.testing.assert_allclose(r['tpr'], [1.0, 0.0, 2 / 3])
  np.testing.assert_allclose(r['fdr'], [0.0, 1.0, 0.0])
  # Signed ranking (the default): row 2 picks features 3 and then (tie) 1.
  r = M.tpr_fdr_at_k(s, gt, 2)
  np.testing.assert_allclose(r['tpr'], [1.0, 0.0, 1 / 3])
  np.testing.assert_allclose(r['fdr'], [0.0, 1.0, 0.5])
  # A selection of any size given directly.
  sel = np.array([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0], [1, 0, 0, 0, 0]])
  r = M.tpr_fdr_at_k(None, gt, selection=sel)
  np.testing.assert_allclose(r['tpr'], [1.0, 0.0, 1 / 3])
  np.testing.assert_allclose(r['fdr'], [1 / 3, 0.0, 0.0])
  np.testing.assert_allclose(r['tpr_mean'], (1 + 0 + 1 / 3) / 3, rtol=1e-6)


def test_top_k_mask_sums_to_k_with_random_ties():
  s = np.zeros((N, D), np.float32)
  m = M.top_k_mask(s, 2, key=jax.random.key(0))
  np.testing.assert_array_equal(np.asarray(m).sum(1), 2)
  freq = np.asarray(m).mean(0)
  np.testing.assert_allclose(freq, 2 / D, atol=0.03)
  m = M.top_k_mask(s, 2)  # deterministic: ties to the lower index
  np.testing.assert_array_equal(np.asarray(m)[0], [1, 1] + [0] * (D - 2))


# -------------------------------------------------------------------- AUROC
def test_auroc_perfect_constant_and_sklearn():
  rng = np.random.default_rng(0)
  s = np.round(rng.normal(size=(40, 30)), 1).astype(np.float32)  # ties
  g = rng.uniform(size=(40, 30)) < 0.3
  g[:, 0], g[:, 1] = True, False
  perfect = g * 10.0 + rng.uniform(size=(40, 30))
  np.testing.assert_allclose(M.auroc(perfect, g)['auroc'], 1.0)
  np.testing.assert_allclose(M.auroc(np.ones((40, 30)), g)['auroc'], 0.5)
  got = M.auroc(s, g)['auroc']  # signed (the default)
  want = [roc_auc_score(g[i], s[i]) for i in range(40)]
  np.testing.assert_allclose(got, want, atol=1e-5)
  got = M.auroc(s, g, rank_by='abs')['auroc']
  want = [roc_auc_score(g[i], np.abs(s[i])) for i in range(40)]
  np.testing.assert_allclose(got, want, atol=1e-5)
  np.testing.assert_allclose(M.auroc(s, g, rank_by='abs')['auroc_mean'],
                             np.mean(want), atol=1e-5)
  g[:2] = False
  g[2] = True
  with pytest.warns(UserWarning, match='auroc: 3 of 40 examples'):
    r = M.auroc(s, g)
  assert np.all(np.isnan(r['auroc'][:3]))
  np.testing.assert_allclose(r['auroc_mean'], np.mean(r['auroc'][3:]))
  assert np.isfinite(r['auroc_mean'])


# ----------------------------------------------------------- pointing game
def test_pointing_game_hand_examples():
  sal = np.zeros((3, 7, 7), np.float32)
  sal[:, 2, 2] = 1.0
  gt = np.zeros((3, 7, 7), bool)
  gt[0, 2, 2] = True           # on the maximum
  gt[1, 2, 4] = True           # 2 px to the right
  gt[2, 3, 3] = True           # diagonal, sqrt(2) px away
  r0 = M.pointing_game(sal, gt, tolerance=0)
  np.testing.assert_array_equal(r0['hit'], [1, 0, 0])
  np.testing.assert_array_equal(r0['point'], [[2, 2]] * 3)
  r1 = M.pointing_game(sal, gt, tolerance=1)
  np.testing.assert_array_equal(r1['hit'], [1, 0, 0])
  r2 = M.pointing_game(sal, gt, tolerance=2)
  np.testing.assert_array_equal(r2['hit'], [1, 1, 1])
  np.testing.assert_allclose(r1['hit_mean'], 1 / 3)
  # Channels are summed; an empty mask gives NaN, left out of the mean.
  sal4 = np.stack([sal, sal], -1)
  gt_e = gt.copy()
  gt_e[2] = False
  with pytest.warns(UserWarning, match='pointing_game: 1 of 3 examples'):
    r = M.pointing_game(sal4, gt_e, tolerance=15)
  assert r['hit'][0] == 1 and r['hit'][1] == 1 and np.isnan(r['hit'][2])
  assert float(r['hit_mean']) == 1.0


def test_effective_heat_ratio_hand_examples():
  sal = np.array([[[4., 1.], [-3., 0.]]], np.float32)
  gt = np.array([[[1, 0], [1, 1]]], bool)
  np.testing.assert_allclose(M.effective_heat_ratio(sal, gt)['ehr'], [0.8])
  np.testing.assert_allclose(
      M.effective_heat_ratio(sal, gt, top_q=0.25)['ehr'], [1.0])
  np.testing.assert_allclose(
      M.effective_heat_ratio(sal, ~gt, top_q=0.5)['ehr'], [0.2])


def _ehr_numpy(heat, roi, base=0.1, weight=True):
  heat = heat.astype(float).copy()
  poi = heat >= base
  heat[~poi] = 0.0
  vals = heat[poi]
  qs = np.linspace(0, 1, 11)
  ratios = []
  for q in qs:
    t = min(np.quantile(vals, q), heat.max() * 0.99)
    bm = heat >= t
    num = heat[bm & roi].sum() if weight else (bm & roi).sum()
    ratios.append(num / (bm.sum() + 1e-8))
  return np.trapezoid(ratios, qs)


def test_effective_heat_ratio_curve_matches_inputiba_numpy():
  rng = np.random.default_rng(0)
  heat = rng.uniform(size=(4, 12, 12)).astype(np.float32) ** 2
  roi = np.zeros((4, 12, 12), bool)
  roi[:, 3:8, 2:9] = True
  heat[:, 3:8, 2:9] += 0.3
  heat /= heat.max(axis=(1, 2), keepdims=True)
  # Make m - 1 (m = #pixels >= 0.1) coprime to 10, to avoid quantile
  # positions on data points, where numpy's float linspace can land one ulp
  # above the data value; our positions are exact).
  heat = np.where(heat < 0.1, 0.05, heat)
  flat = heat.reshape(4, -1)
  for i in range(4):
    m = int((flat[i] >= 0.1).sum())
    while (m - 1) % 2 == 0 or (m - 1) % 5 == 0:
      j = np.flatnonzero(flat[i] >= 0.1)
      flat[i, j[np.argmin(flat[i, j])]] = 0.05
      m -= 1
  heat = flat.reshape(4, 12, 12)
  for weight in (True, False):
    got = M.effective_heat_ratio_curve(heat, roi, normalize=False,
                                       weight_by_heat=weight)['ehr_auc']
    want = [_ehr_numpy(heat[i], roi[i], weight=weight) for i in range(4)]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------- post-hoc accuracy
def test_posthoc_accuracy_linear_box_hand_computation():
  rng = np.random.default_rng(0)
  d, n = 6, 200
  w = np.array([2.0, -1.0, 0.5, 0.0, 0.0, 1.5], np.float32)
  box = linear_box(w, b=0.1)
  x = rng.normal(size=(n, d)).astype(np.float32)
  ones = np.ones((n, d), np.float32)
  r = M.posthoc_accuracy(box, x, ones)
  np.testing.assert_array_equal(r['agreement'], 1.0)
  assert float(r['posthoc_accuracy']) == 1.0
  sel = rng.uniform(size=(n, d)) < 0.5
  r = M.posthoc_accuracy(box, x, sel)
  pred = (x @ w + 0.1) > 0
  pred_s = ((x * sel) @ w + 0.1) > 0
  np.testing.assert_array_equal(r['agreement'], (pred == pred_s) * 1.0)
  np.testing.assert_allclose(r['posthoc_accuracy'], np.mean(pred == pred_s))
  # A non-zero baseline and a selection over groups (pairs of features).
  groups = masking.FeatureGroups(
      assignment=jnp.array([0, 0, 1, 1, 2, 2], jnp.int32), num_groups=3,
      input_shape=(6,))
  gsel = rng.uniform(size=(n, 3)) < 0.5
  r = M.posthoc_accuracy(box, x, gsel, groups=groups, baseline=1.0)
  keep = np.repeat(gsel, 2, axis=1)
  pred_s = (np.where(keep, x, 1.0) @ w + 0.1) > 0
  np.testing.assert_array_equal(r['agreement'], (pred == pred_s) * 1.0)


def test_posthoc_accuracy_token_inputs_use_pad():
  vocab, seq = 5, 4
  emb = jnp.array([0.0, 1.0, -1.0, 2.0, -2.0])

  def fn(tokens):
    z = emb[tokens].sum(-1)
    return jnp.stack([-z, z], -1)
  box = bb.from_jax(fn, input_shape=(seq,), input_dtype='int')
  x = jnp.array([[1, 2, 3, 0], [4, 1, 1, 2]], jnp.int32)
  sel = jnp.array([[1, 0, 1, 0], [0, 1, 1, 1]])
  r = M.posthoc_accuracy(box, x, sel)
  # row0: z = 2 -> 1; selected {1, 3}: 3 -> 1; row1: -2 -> 0; {1,1,2}: 1 -> 1.
  np.testing.assert_array_equal(r['agreement'], [1.0, 0.0])
  del vocab


# ------------------------------------------------------------------ EVAL-X
def test_evalx_metrics_on_a_hand_built_evaluator():
  # q = the linear box on x0 + x1 with masked features set to 0.
  box = linear_box(np.array([5., 5., 0., 0., 0., 0.], np.float32))
  ev = realx.Evaluator(box=box, groups=masking.feature_groups((6,)),
                       baseline=jnp.zeros((6,)))
  x = np.random.default_rng(2).normal(size=(500, 6)).astype(np.float32)
  y = (x[:, 0] + x[:, 1] > 0).astype(np.int32)
  sel = np.zeros((500, 6), bool)
  sel[:, 0] = True
  r = M.evalx_accuracy(ev, x, sel, y)
  want = ((x[:, 0] > 0) == y).mean()
  np.testing.assert_allclose(r['evalx_accuracy'], want, rtol=1e-6)
  logit = 5 * x[:, 0]
  ll = np.where(y == 1, -np.logaddexp(0, -logit), -np.logaddexp(0, logit))
  np.testing.assert_allclose(r['log_likelihood'], ll, rtol=1e-4, atol=1e-5)
  a = M.evalx_auroc(ev, x, sel, y)
  np.testing.assert_allclose(a['evalx_auroc'], roc_auc_score(y, x[:, 0]),
                             atol=1e-5)
  full = M.evalx_accuracy(ev, x, np.ones_like(sel), np.eye(2)[y] * 1.0)
  assert float(full['evalx_accuracy']) == 1.0
  # Group-level selections over the evaluator's groups.
  r2 = M.evalx_accuracy(ev, x, sel * 1, y, groups=masking.feature_groups((6,)))
  np.testing.assert_allclose(r2['correct'], r['correct'])


# -------------------------------------------------------- deletion/insertion
def test_deletion_insertion_linear_model_orders():
  rng = np.random.default_rng(0)
  d, n = 12, 16
  w = rng.normal(size=d).astype(np.float32)
  box = linear_box(w)
  x = rng.normal(size=(n, d)).astype(np.float32)
  attr = x * w  # exact contributions to the logit of class 1
  tgt = np.ones(n, np.int32)
  good = M.deletion_insertion(box, x, attr, target=tgt)
  bad = M.deletion_insertion(box, x, -attr, target=tgt)
  assert np.all(np.asarray(good['deletion_auc']) <
                np.asarray(bad['deletion_auc']))
  assert np.all(np.asarray(good['insertion_auc']) >
                np.asarray(bad['insertion_auc']))
  # Curve end points: p(x) and p(baseline) = sigmoid(0) = 0.5.
  p = 1 / (1 + np.exp(-(x @ w)))
  np.testing.assert_allclose(good['deletion_curve'][:, 0], p, rtol=1e-5)
  np.testing.assert_allclose(good['deletion_curve'][:, -1], 0.5, rtol=1e-5)
  np.testing.assert_allclose(good['insertion_curve'][:, 0], 0.5, rtol=1e-5)
  np.testing.assert_allclose(good['insertion_curve'][:, -1], p, rtol=1e-5)
  # Hand computation of one deletion curve and its trapezoid AUC.
  order = np.argsort(-attr[0], kind='stable')
  curve = []
  for t in range(d + 1):
    keep = np.ones(d)
    keep[order[:t]] = 0
    curve.append(1 / (1 + np.exp(-(x[0] * keep) @ w)))
  np.testing.assert_allclose(good['deletion_curve'][0], curve, rtol=1e-5)
  np.testing.assert_allclose(good['deletion_auc'][0],
                             np.trapezoid(curve, np.arange(d + 1) / d),
                             rtol=1e-5)
  # Chunking does not change anything; coarser steps; one mode only.
  small = M.deletion_insertion(box, x, attr, target=tgt, batch_size=7)
  np.testing.assert_allclose(small['deletion_curve'], good['deletion_curve'],
                             rtol=1e-6)
  coarse = M.deletion_insertion(box, x, attr, num_steps=4, mode='deletion')
  assert coarse['deletion_curve'].shape == (n, 5)
  assert 'insertion_auc' not in coarse
  np.testing.assert_allclose(coarse['fractions'], [0, .25, .5, .75, 1.0])


def test_deletion_on_image_groups_and_blur_baseline():
  rng = np.random.default_rng(0)
  x = rng.uniform(size=(3, 8, 8, 3)).astype(np.float32)
  w = rng.normal(size=(8 * 8 * 3,)).astype(np.float32)

  def fn(v):
    z = v.reshape(v.shape[0], -1) @ w
    return jnp.stack([jnp.zeros_like(z), z], -1)
  box = bb.from_jax(fn, input_shape=(8, 8, 3))
  attr = x * w.reshape(8, 8, 3)
  groups = masking.patch_groups((8, 8, 3), 2)
  r = M.deletion_insertion(box, x, attr, groups=groups, target=1,
                           insertion_baseline='blur', batch_size=8)
  assert r['deletion_curve'].shape == (3, 17)
  rr = M.deletion_insertion(box, x, -attr, groups=groups, target=1,
                            insertion_baseline='blur')
  assert np.all(np.asarray(r['deletion_auc']) < np.asarray(rr['deletion_auc']))
  assert np.all(np.asarray(r['insertion_auc']) >
                np.asarray(rr['insertion_auc']))


# ------------------------------------------------------------- sensitivity-n
def test_sensitivity_n_exact_linear_attributions_is_one():
  rng = np.random.default_rng(0)
  d, n = 10, 8
  w = rng.normal(size=d).astype(np.float32)
  x = rng.normal(size=(n, d)).astype(np.float32)
  box = linear_box(w)
  for k in (1, 3, 7):
    r = M.sensitivity_n(box, x, x * w, n=k, num_subsets=50,
                        key=jax.random.key(k), target=1, batch_size=64)
    np.testing.assert_allclose(r['sensitivity_n'], 1.0, atol=1e-4)
    np.testing.assert_allclose(r['attribution_sums'], r['output_drops'],
                               atol=1e-4)
  noisy = x * w + rng.normal(size=(n, d)).astype(np.float32)
  r = M.sensitivity_n(box, x, noisy, n=3, num_subsets=50,
                      key=jax.random.key(0), target=1, batch_size=64)
  assert float(r['sensitivity_n_mean']) < 0.95
  # Every subset has n elements: removing all of them drops the logit by the
  # full attribution sum; same key, same subsets.
  r2 = M.sensitivity_n(box, x, noisy, n=3, num_subsets=50,
                       key=jax.random.key(0), target=1, batch_size=64)
  np.testing.assert_array_equal(r['attribution_sums'], r2['attribution_sums'])
  r = M.sensitivity_n(box, x, x * w, n=d, num_subsets=50,
                      key=jax.random.key(0), target=1, batch_size=64)
  np.testing.assert_allclose(r['output_drops'],
                             np.tile((x * w).sum(1, keepdims=True), (1, 50)),
                             rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- infidelity
def test_infidelity_linear_gradient_is_zero():
  rng = np.random.default_rng(0)
  d, n = 7, 5
  w = rng.normal(size=d).astype(np.float32)
  x = rng.normal(size=(n, d)).astype(np.float32)
  box = linear_regression_box(w)
  grad = np.tile(w, (n, 1))
  kw = dict(num_samples=2000, noise_std=0.5, batch_size=4096)
  r = M.infidelity(box, x, grad, key=jax.random.key(0), **kw)
  np.testing.assert_allclose(r['infidelity'], 0.0, atol=1e-9)
  # Noisy-baseline perturbations: still exact for a linear model.
  r = M.infidelity(box, x, grad, key=jax.random.key(1), baseline=0.0, **kw)
  np.testing.assert_allclose(r['infidelity'], 0.0, atol=1e-8)
  # A scaled gradient: infidelity = E[(I.w)^2] (1 - 2)^2 = sigma^2 |w|^2,
  # but the optimally scaled version (beta = 1/2) is 0.
  r = M.infidelity(box, x, 2 * grad, key=jax.random.key(0), **kw)
  np.testing.assert_allclose(r['infidelity'], 0.25 * np.sum(w ** 2),
                             rtol=0.1)
  np.testing.assert_allclose(r['infidelity_normalized'], 0.0, atol=1e-8)
  np.testing.assert_allclose(r['beta'], 0.5, rtol=1e-5)


# ------------------------------------------------------------ Shapley error
def test_shapley_error_matches_numpy_scipy():
  rng = np.random.default_rng(0)
  ref = rng.normal(size=(20, 9)).astype(np.float32)
  est = (ref + 0.3 * rng.normal(size=ref.shape)).astype(np.float32)
  est[0] = np.round(est[0])  # ties
  r = M.shapley_error(est, ref)
  np.testing.assert_allclose(r['mae'], np.abs(est - ref).mean(1), rtol=1e-5)
  np.testing.assert_allclose(r['rmse'], np.sqrt(((est - ref) ** 2).mean(1)),
                             rtol=1e-5)
  rho = [scipy.stats.spearmanr(est[i], ref[i]).statistic for i in range(20)]
  np.testing.assert_allclose(r['spearman'], rho, atol=1e-5)
  np.testing.assert_allclose(r['spearman_mean'], np.mean(rho), atol=1e-5)
  np.testing.assert_allclose(r['mae_mean'], np.abs(est - ref).mean(),
                             rtol=1e-5)


def test_jit_matches_no_jit():
  rng = np.random.default_rng(3)
  s = np.round(rng.normal(size=(6, 9)), 1).astype(np.float32)
  g = rng.uniform(size=(6, 9)) < 0.4
  fns = (lambda: M.shapley_error(s, s + g)['spearman'],
         lambda: M.tpr_fdr_at_k(s, g, 3)['fdr'])
  for f in fns:
    a = f()
    with jax.disable_jit():
      b = f()
    np.testing.assert_allclose(a, b, rtol=1e-6)


# --------------------------------------------------------------- bad inputs
def test_bad_inputs_raise_value_errors_naming_the_argument():
  s = np.zeros((4, 5), np.float32)
  gt = np.zeros((4, 5), bool)
  key = jax.random.key(0)
  with pytest.raises(ValueError, match='ground_truth'):
    M.median_rank(s, gt[:, :4], key)
  with pytest.raises(ValueError, match='scores'):
    M.median_rank(np.full((4, 5), np.nan, np.float32), gt, key)
  with pytest.raises(ValueError, match='key'):
    M.median_rank(s, gt, None)
  with pytest.raises(ValueError, match='ground_truth'):
    M.median_rank(s, np.full((4, 5), 0.5), key)
  with pytest.raises(ValueError, match='k=6'):
    M.tpr_fdr_at_k(s, gt, 6)
  with pytest.raises(ValueError, match='selection'):
    M.tpr_fdr_at_k(None, gt, selection=np.full((4, 5), 0.3))
  with pytest.raises(ValueError, match='scores'):
    M.auroc(s[0], gt[0])
  with pytest.raises(ValueError, match='gt_mask'):
    M.pointing_game(np.zeros((2, 4, 4)), np.zeros((2, 3, 4), bool))
  with pytest.raises(ValueError, match='tolerance'):
    M.pointing_game(np.zeros((2, 4, 4)), np.zeros((2, 4, 4), bool),
                    tolerance=-1)
  with pytest.raises(ValueError, match='top_q'):
    M.effective_heat_ratio(np.zeros((2, 4, 4)), np.ones((2, 4, 4), bool),
                           top_q=0.0)
  box = linear_box(np.ones(5, np.float32))
  x = np.ones((4, 5), np.float32)
  with pytest.raises(ValueError, match='selection'):
    M.posthoc_accuracy(box, x, np.ones((4, 3)))
  with pytest.raises(ValueError, match='x'):
    M.posthoc_accuracy(box, np.ones((4, 6), np.float32), np.ones((4, 6)))
  with pytest.raises(ValueError, match='attributions'):
    M.deletion_insertion(box, x, np.ones((4, 4), np.float32))
  with pytest.raises(ValueError, match='num_steps'):
    M.deletion_insertion(box, x, x, num_steps=6)
  with pytest.raises(ValueError, match='baseline'):
    M.deletion_insertion(box, x, x, baseline=np.zeros(3))
  with pytest.raises(ValueError, match='n=6'):
    M.sensitivity_n(box, x, x, n=6, key=key)
  with pytest.raises(ValueError, match='attributions'):
    M.infidelity(box, x, np.full((4, 5), np.nan, np.float32), key=key)
  with pytest.raises(ValueError, match='noise_std'):
    M.infidelity(box, x, x, key=key, noise_std=0.0)
  with pytest.raises(ValueError, match='reference'):
    M.shapley_error(s, s[:, :3])
  with pytest.raises(ValueError, match='estimate'):
    M.shapley_error(np.full((4, 5), np.inf, np.float32), s)
  with pytest.raises(ValueError, match='regression'):
    M.posthoc_accuracy(linear_regression_box(np.ones(5)), x, np.ones((4, 5)))


# ----------------------------------------------------- targets out of range
def _removal_metrics(box, x, attr):
  """Every metric taking a `target`: name -> fn(target)."""
  return {
      'deletion_insertion': lambda t: M.deletion_insertion(
          box, x, attr, target=t)['deletion_auc'],
      'sensitivity_n': lambda t: M.sensitivity_n(
          box, x, attr, n=2, num_subsets=4, key=0, target=t)['output_drops'],
      'infidelity': lambda t: M.infidelity(
          box, x, attr, key=0, num_samples=4, target=t)['infidelity'],
  }


@pytest.mark.parametrize('metric', ['deletion_insertion', 'sensitivity_n',
                                    'infidelity'])
def test_target_outside_the_classes_or_negative_is_an_error(metric):
  # Before: target=2 of a 2-class box gave NaN, target=-1 the last class.
  rng = np.random.default_rng(0)
  w = rng.normal(size=4).astype(np.float32)
  box = linear_box(w)
  x = rng.normal(size=(3, 4)).astype(np.float32)
  fn = _removal_metrics(box, x, x * w)[metric]
  for bad in (2, -1, np.array([0, 1, 5], np.int32),
              np.array([1, -1, 0], np.int32)):
    with pytest.raises(ValueError, match=r"target must be in \[0, 2\) for "
                       r"black box 'linear'"):
      fn(bad)
  with pytest.raises(ValueError, match='target must hold integer'):
    fn(1.0)
  # Valid targets: finite values, the last class by its own index.
  assert np.all(np.isfinite(np.asarray(fn(1))))
  np.testing.assert_array_equal(fn(np.array([1, 1, 1], np.int32)), fn(1))


# ------------------------------------------------- non-finite model outputs
def _recip_box(d):
  """Finite on inputs without zeros, inf where a feature is 0 (the
  baseline of masked copies)."""
  def fn(v):
    z = jnp.sum(1.0 / v, -1)
    return jnp.stack([jnp.zeros_like(z), z], -1)
  return bb.from_jax(fn, input_shape=(d,), name='recip')


def _log_box(d):
  """NaN on inputs with a negative feature."""
  def fn(v):
    z = jnp.sum(jnp.log(v), -1)
    return jnp.stack([jnp.zeros_like(z), z], -1)
  return bb.from_jax(fn, input_shape=(d,), name='log')


def test_nan_or_inf_model_outputs_raise_in_every_metric_that_runs_it():
  # Before: NaN curves, correlations and infidelities (post-hoc accuracy 1.0
  # from argmax of NaN); now a ValueError saying where.
  rng = np.random.default_rng(0)
  x_pos = rng.uniform(0.5, 1.0, size=(3, 4)).astype(np.float32)
  x_neg = x_pos.copy()
  x_neg[1, 2] = -1.0                     # log(-1) = NaN on row 1 of x
  attr = x_pos.copy()
  sel = np.ones((3, 4), np.float32)
  sel[:, 0] = 0
  on_x = r'model returned NaN or inf on x for 1 of 3 rows \(first: row 1\)'
  masked = 'model returned NaN or inf on masked copies of x'
  log4, recip4 = _log_box(4), _recip_box(4)
  cases = [
      (lambda: M.deletion_insertion(log4, x_neg, attr), on_x),
      (lambda: M.deletion_insertion(recip4, x_pos, attr, target=1), masked),
      (lambda: M.deletion_insertion(recip4, x_pos, attr, mode='insertion'),
       masked),
      (lambda: M.sensitivity_n(log4, x_neg, attr, n=2, key=0), on_x),
      (lambda: M.sensitivity_n(recip4, x_pos, attr, n=2, key=0), masked),
      (lambda: M.infidelity(log4, x_neg, attr, key=0), on_x),
      # |noise| up to ~2 > x: some perturbed copies have log(< 0) = NaN in
      # the explained class 1.
      (lambda: M.infidelity(log4, x_pos, attr, key=0, noise_std=1.0,
                            target=1),
       'model returned NaN or inf on perturbed copies of x'),
      (lambda: M.posthoc_accuracy(log4, x_neg, sel), on_x),
      (lambda: M.posthoc_accuracy(recip4, x_pos, sel), masked),
  ]
  for fn, match in cases:
    with pytest.raises(ValueError, match=match):
      fn()
  # Only the scores used count: class 0 (constant 0) stays finite.
  # (f_0 = 0 everywhere: no output change, beta = 0, infidelity E[(I.a)^2]).
  r = M.infidelity(log4, x_pos, attr, key=0, noise_std=1.0, target=0)
  assert np.all(np.isfinite(r['infidelity'])) and np.all(r['infidelity'] > 0)
  np.testing.assert_array_equal(r['beta'], 0.0)
  # The same models on inputs where they are finite give finite numbers.
  assert np.isfinite(float(M.deletion_insertion(
      log4, x_pos, attr)['deletion_auc_mean']))
  assert np.isfinite(float(M.infidelity(
      log4, x_pos, attr, key=0, noise_std=0.01)['infidelity_mean']))
  # EVAL-X: an evaluator that returns inf on the masked inputs.
  ev = realx.Evaluator(box=recip4, groups=masking.feature_groups((4,)),
                       baseline=jnp.zeros((4,)))
  y = np.zeros(3, np.int32)
  with pytest.raises(ValueError, match='evalx_accuracy.*masked copies'):
    M.evalx_accuracy(ev, x_pos, sel, y)
  with pytest.raises(ValueError, match='evalx_auroc.*masked copies'):
    M.evalx_auroc(ev, x_pos, sel, y)
  np.testing.assert_array_equal(
      M.evalx_accuracy(ev, x_pos, np.ones((3, 4)), y)['correct'], 0.0)


# ------------------------------------------------------------ ranking rule
RANKING_METRICS = (M.median_rank, M.top_k_mask, M.tpr_fdr_at_k, M.auroc,
                   M.pointing_game, M.deletion_insertion)


@pytest.mark.parametrize('fn', RANKING_METRICS, ids=lambda f: f.__name__)
def test_every_ranking_metric_has_rank_by_signed_by_default(fn):
  params = inspect.signature(fn).parameters
  assert 'absolute' not in params
  assert params['rank_by'].default == 'signed'
  assert params['rank_by'].kind == inspect.Parameter.KEYWORD_ONLY
  assert M.RANK_BY == ('signed', 'abs')


def test_rank_by_signed_and_abs_and_the_removed_absolute_flag():
  s = np.array([[-5., 1., 2., 0.5]], np.float32)
  gt = np.array([[1, 0, 0, 0]], bool)
  # Signed (default): -5 is the least important; 'abs': the most.
  np.testing.assert_array_equal(M.top_k_mask(s, 1), [[0, 0, 1, 0]])
  np.testing.assert_array_equal(M.top_k_mask(s, 1, rank_by='abs'),
                                [[1, 0, 0, 0]])
  assert float(M.median_rank(s, gt, 0)['median_rank_mean']) == 4.0
  assert float(M.median_rank(s, gt, 0, rank_by='abs')['median_rank_mean']
               ) == 1.0
  assert float(M.tpr_fdr_at_k(s, gt, 1)['tpr_mean']) == 0.0
  assert float(M.tpr_fdr_at_k(s, gt, 1, rank_by='abs')['tpr_mean']) == 1.0
  assert float(M.auroc(s, gt)['auroc_mean']) == 0.0
  assert float(M.auroc(s, gt, rank_by='abs')['auroc_mean']) == 1.0
  sal = np.zeros((1, 4, 4), np.float32)
  sal[0, 0, 0], sal[0, 3, 3] = -2.0, 1.0
  mask = np.zeros((1, 4, 4), bool)
  mask[0, 0, 0] = True
  assert float(M.pointing_game(sal, mask, tolerance=0)['hit_mean']) == 0.0
  r = M.pointing_game(sal, mask, tolerance=0, rank_by='abs')
  assert float(r['hit_mean']) == 1.0
  np.testing.assert_array_equal(r['point'], [[0, 0]])
  # Deletion order: rank_by='abs' deletes by |attribution|.
  rng = np.random.default_rng(0)
  w = rng.normal(size=6).astype(np.float32)
  box = linear_box(w)
  x = rng.normal(size=(4, 6)).astype(np.float32)
  a = x * w
  by_abs = M.deletion_insertion(box, x, a, target=1, rank_by='abs')
  of_abs = M.deletion_insertion(box, x, np.abs(a), target=1)
  np.testing.assert_allclose(by_abs['deletion_curve'],
                             of_abs['deletion_curve'])
  signed = M.deletion_insertion(box, x, a, target=1)
  assert not np.allclose(signed['deletion_curve'], by_abs['deletion_curve'])
  # The removed flag is an error that points to rank_by; bad values named.
  calls = [lambda **kw: M.median_rank(s, gt, 0, **kw),
           lambda **kw: M.top_k_mask(s, 1, **kw),
           lambda **kw: M.tpr_fdr_at_k(s, gt, 1, **kw),
           lambda **kw: M.auroc(s, gt, **kw),
           lambda **kw: M.pointing_game(sal, mask, **kw),
           lambda **kw: M.deletion_insertion(box, x, a, **kw)]
  for call in calls:
    with pytest.raises(ValueError, match="absolute= was replaced by rank_by: "
                       "pass rank_by='abs'"):
      call(absolute=True)
    with pytest.raises(ValueError, match="Unknown rank_by 'magnitude'"):
      call(rank_by='magnitude')


# ---------------------------------------------------- empty ground truth
def test_empty_ground_truth_is_nan_for_every_metric_left_out_with_a_warning():
  # Before: effective_heat_ratio gave 0 for an empty mask (ehr_mean counted
  # it as 0) while the pointing game gave NaN; FDR was 1.
  rng = np.random.default_rng(0)
  sal = rng.uniform(size=(3, 6, 6)).astype(np.float32)
  mask = np.zeros((3, 6, 6), bool)
  mask[0, 1:3, 1:3] = True
  mask[2, 3:6, 0:2] = True                  # row 1: empty
  scores = sal.reshape(3, -1)
  gt = mask.reshape(3, -1)
  results = {
      'median_rank': lambda: M.median_rank(scores, gt, 0),
      'tpr_fdr_at_k': lambda: M.tpr_fdr_at_k(scores, gt, 4),
      'auroc': lambda: M.auroc(scores, gt),
      'pointing_game': lambda: M.pointing_game(sal, mask, tolerance=0),
      'effective_heat_ratio': lambda: M.effective_heat_ratio(sal, mask),
      'effective_heat_ratio_curve': lambda: M.effective_heat_ratio_curve(
          sal, mask),
  }
  values = {'median_rank': ['median_rank'], 'tpr_fdr_at_k': ['tpr', 'fdr'],
            'auroc': ['auroc'], 'pointing_game': ['hit'],
            'effective_heat_ratio': ['ehr'],
            'effective_heat_ratio_curve': ['ehr_auc', 'ratios']}
  for name, fn in results.items():
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter('always')
      r = fn()
    msgs = [str(w.message) for w in caught]
    assert msgs == [f'{name}: 1 of 3 examples have an empty ground-truth '
                    'mask; their values are NaN and the means leave them '
                    'out.'] or (name == 'auroc' and len(msgs) == 1
                                and '1 of 3' in msgs[0]), (name, msgs)
    for key in values[name]:
      v = np.asarray(r[key])
      assert np.all(np.isnan(v[1])), (name, key)
      assert np.all(np.isfinite(v[[0, 2]])), (name, key)
      mean_key = f'{key}_mean'
      if mean_key in r:
        np.testing.assert_allclose(r[mean_key], v[[0, 2]].mean(),
                                   rtol=1e-6, err_msg=name)
  # The EHR of the non-empty rows is unchanged by the empty one.
  with pytest.warns(UserWarning, match='effective_heat_ratio: 1 of 3'):
    ehr = np.asarray(M.effective_heat_ratio(sal, mask)['ehr'])
  np.testing.assert_allclose(
      ehr[[0, 2]], M.effective_heat_ratio(sal[[0, 2]], mask[[0, 2]])['ehr'],
      rtol=1e-6)
  # No warning when every mask has a feature.
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    M.effective_heat_ratio(sal[[0, 2]], mask[[0, 2]])



def test_mean_baseline_comes_from_data_in_the_removal_metrics():
  d = 6
  w = jnp.arange(1.0, d + 1.0)
  box = bb.from_jax(lambda z: jnp.stack([z @ w, -(z @ w)], -1),
                    input_shape=(d,))
  x = jax.random.normal(jax.random.key(0), (4, d))
  data = jax.random.normal(jax.random.key(1), (30, d)) + 2.0
  attr = jnp.broadcast_to(w, x.shape)
  with pytest.raises(ValueError, match='data is needed'):
    M.deletion_insertion(box, x, attr, baseline='mean', target=0)
  whole = M.deletion_insertion(box, x, attr, baseline='mean', data=data,
                                     target=0, space='raw')
  alone = M.deletion_insertion(box, x[:1], attr[:1], baseline='mean',
                                     data=data, target=0, space='raw')
  np.testing.assert_allclose(alone['deletion_curve'][0],
                             whole['deletion_curve'][0], atol=1e-5)
  # every feature removed: the model at the data mean
  np.testing.assert_allclose(whole['deletion_curve'][:, -1],
                             float(data.mean(0) @ w), rtol=1e-5)


# ------------------------------------------------ LTX perturbation tests
def _bright_box():
  """Class 1 iff the mean brightness exceeds 0.3: [s, -s]... as logits."""
  def fn(v):
    s = 20.0 * (jnp.mean(v, axis=(1, 2, 3)) - 0.3)
    return jnp.stack([-s, s], -1)
  return bb.from_jax(fn, input_shape=(4, 4, 1))


def test_blackout_curves_match_a_hand_computation():
  box = _bright_box()
  x = jnp.full((1, 4, 4, 1), 0.5)
  sal = jnp.arange(16, dtype=jnp.float32).reshape(1, 4, 4)
  r = M.blackout_curves(box, x, sal, order='most', fractions=(0.25, 0.5))
  # 0, 4 and 8 of 16 pixels removed: mean 0.5, 0.375, 0.25.
  want_p = jax.nn.sigmoid(2 * 20.0 * (jnp.array([0.5, 0.375, 0.25]) - 0.3))
  np.testing.assert_allclose(r['prob_curve'][0], want_p, rtol=1e-5)
  np.testing.assert_array_equal(r['accuracy_curve'][0], [1, 1, 0])
  np.testing.assert_allclose(r['accuracy_auc'][0], 0.25 * 1 + 0.25 * 0.5)
  np.testing.assert_allclose(r['fractions'], [0, 0.25, 0.5])
  # 'least' removes the low-saliency pixels: the same counts here.
  x2 = x.at[0, 2:, :, 0].set(1.0)           # bright bottom half
  most = M.blackout_curves(box, x2, sal, order='most')
  least = M.blackout_curves(box, x2, sal, order='least')
  assert float(most['prob_auc'][0]) < float(least['prob_auc'][0])
  with pytest.raises(ValueError, match='fractions'):
    M.blackout_curves(box, x, sal, fractions=(0.5, 0.2))
  with pytest.raises(ValueError, match='saliency'):
    M.blackout_curves(box, x, sal[:, :2])
  with pytest.raises(ValueError, match='order'):
    M.blackout_curves(box, x, sal, order='top')


def test_segmentation_scores_match_sklearn_and_counts():
  from sklearn.metrics import average_precision_score
  rng = np.random.default_rng(0)
  sal = np.round(rng.random((3, 6, 6)), 1).astype(np.float32)
  gt = rng.random((3, 6, 6)) > 0.6
  r = M.segmentation_scores(sal, gt)
  norm = [(s - s.min()) / (s.max() - s.min()) for s in sal]
  pred = np.stack([n > n.mean() for n in norm])
  inter = [np.sum(~pred & ~gt), np.sum(pred & gt)]
  union = [np.sum(~pred | ~gt), np.sum(pred | gt)]
  np.testing.assert_allclose(r['miou'], np.mean(np.divide(inter, union)),
                             rtol=1e-6)
  np.testing.assert_allclose(r['pixel_accuracy'], np.mean(pred == gt))
  ap = [np.mean([average_precision_score(g.ravel(), n.ravel()),
                 average_precision_score(~g.ravel(), 1 - n.ravel())])
        for n, g in zip(norm, gt)]
  np.testing.assert_allclose(r['ap'], ap, rtol=1e-5)
  perfect = M.segmentation_scores(gt.astype(np.float32), gt)
  assert float(perfect['miou']) == 1.0 and float(perfect['map']) == 1.0
