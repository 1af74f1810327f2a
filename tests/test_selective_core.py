"""Tests of the building blocks of xai_jax.selective (Monteiro Paes et al. 2024).

Uncertainty scores, threshold calibration, the closed-form combination
function lambda (global and per bin), the selective explanation, the metrics
and the learned uncertainty.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize
from scipy import stats
from sklearn import metrics as skm

from xai_jax import masking
from xai_jax import selective


def _explanations(seed, n=200, d=6):
  """Random Amor, MC and HQ explanations `[n, d]` (float32)."""
  r = np.random.default_rng(seed)
  hq = r.normal(size=(n, d))
  amor = hq + 0.7 * r.normal(size=(n, d))
  mc = hq + 1.1 * r.normal(size=(n, d))
  return tuple(a.astype(np.float32) for a in (amor, mc, hq))


def _sse(lam, amor, mc, hq):
  amor, mc, hq = (np.asarray(a, np.float64) for a in (amor, mc, hq))
  return float(np.sum((lam * amor + (1 - lam) * mc - hq) ** 2))


# ---------------------------------------------------------------- lambda (§4)


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_closed_form_lambda_is_the_least_squares_minimiser(seed):
  r = np.random.default_rng(seed)
  amor, mc, hq = _explanations(seed, n=100, d=5)
  hq = hq + r.normal() * (amor - mc)  # move the optimum around, maybe outside
  num, den = selective.lambda_terms(amor, mc, hq)
  lam = float(selective.fit_lambda(num, den, clip=False))
  best = optimize.minimize_scalar(lambda l: _sse(l, amor, mc, hq))
  np.testing.assert_allclose(lam, best.x, atol=1e-4)


@pytest.mark.parametrize('true_lam', [2.0, -1.0, 0.3])
def test_clipping_keeps_lambda_in_the_unit_interval(true_lam):
  amor, mc, _ = _explanations(3, n=50, d=4)
  hq = mc + true_lam * (amor - mc)   # sum of squares minimised at true_lam
  num, den = selective.lambda_terms(amor, mc, hq)
  np.testing.assert_allclose(selective.fit_lambda(num, den, clip=False),
                             true_lam, rtol=1e-5)
  clipped = float(selective.fit_lambda(num, den))
  np.testing.assert_allclose(clipped, np.clip(true_lam, 0.0, 1.0), rtol=1e-5)
  # The clipped value is the best lambda in [0, 1].
  best = optimize.minimize_scalar(lambda l: _sse(l, amor, mc, hq),
                                  bounds=(0.0, 1.0), method='bounded')
  assert _sse(clipped, amor, mc, hq) <= best.fun * (1 + 1e-6) + 1e-6


def test_lambda_without_points_keeps_amortized_and_equal_explanations_give_0():
  num, den = jnp.array([1.0, -2.0]), jnp.array([3.0, 4.0])
  assert float(selective.fit_lambda(num, den, weights=jnp.zeros(2))) == 1.0
  amor, _, hq = _explanations(4, n=10, d=3)
  num, den = selective.lambda_terms(amor, amor, hq)  # Amor == MC
  assert float(selective.fit_lambda(num, den)) == 0.0
  # weights select the points: weight 0 drops a point.
  num, den = jnp.array([1.0, 5.0]), jnp.array([2.0, 1.0])
  np.testing.assert_allclose(
      selective.fit_lambda(num, den, weights=jnp.array([1.0, 0.0]),
                           clip=False), 0.5, rtol=1e-6)


@pytest.mark.parametrize('clip', [True, False])
def test_combined_mse_is_not_worse_than_either_explainer(clip):
  amor, mc, hq = _explanations(5, n=300, d=8)
  num, den = selective.lambda_terms(amor, mc, hq)
  lam = selective.fit_lambda(num, den, clip=clip)
  comb = selective.combine(amor, mc, lam)
  mse = lambda s: float(jnp.mean(selective.mse_per_input(s, hq)))
  assert mse(comb) <= min(mse(amor), mse(mc)) * (1 + 1e-6)
  assert mse(comb) < min(mse(amor), mse(mc)) - 0.05  # strictly better here


def _binned_data(direction, n=4000, d=8, seed=0):
  """Calibration data whose noise ratio varies with the uncertainty u."""
  r = np.random.default_rng(seed)
  u = r.uniform(size=n)
  hq = r.normal(size=(n, d))
  grows = 0.2 + 2.0 * u
  sd_a, sd_m = ((np.ones(n), grows) if direction == 'mc_noise_grows'
                else (grows, np.ones(n)))
  amor = hq + sd_a[:, None] * r.normal(size=(n, d))
  mc = hq + sd_m[:, None] * r.normal(size=(n, d))
  f = lambda a: np.asarray(a, np.float32)
  return f(u), f(amor), f(mc), f(hq), sd_a ** 2, sd_m ** 2


@pytest.mark.parametrize('direction', ['mc_noise_grows', 'amor_noise_grows'])
def test_per_bin_lambdas_follow_the_noise_ratio(direction):
  # lam* -> sigma_M^2 / (sigma_A^2 + sigma_M^2): when MC's error grows with the
  # uncertainty, lam grows with it (more weight on Amor); when Amor's grows,
  # lam shrinks (more weight on MC, the paper's expected trend).
  u, amor, mc, hq, var_a, var_m = _binned_data(direction)
  num, den = selective.lambda_terms(amor, mc, hq)
  t = selective.calibrate_threshold(u, 0.2)
  edges, lams = selective.fit_lambdas(num, den, u, t, num_bins=4)
  assert edges.shape == (3,) and lams.shape == (4,)
  steps = np.diff(np.asarray(lams))
  assert np.all(steps > 0) if direction == 'mc_noise_grows' else np.all(
      steps < 0)
  # Each bin's lam is close to its noise ratio.
  routed = np.asarray(u > t)
  bins = np.asarray(jnp.searchsorted(edges, u, side='left'))
  for b in range(4):
    sel = routed & (bins == b)
    expected = var_m[sel].sum() / (var_a[sel] + var_m[sel]).sum()
    np.testing.assert_allclose(lams[b], expected, atol=0.05)
  # On the routed calibration points, per-bin lams fit at least as well.
  _, glam = selective.fit_lambdas(num, den, u, t, num_bins=1)
  per_bin, _ = selective.selective_explanations(amor, mc, u, t, edges, lams)
  glob, _ = selective.selective_explanations(amor, mc, u, t, jnp.zeros(0),
                                             glam)
  mse = lambda s: float(jnp.mean(selective.mse_per_input(s, hq)[routed]))
  assert mse(per_bin) <= mse(glob)


def test_bins_are_equal_count_and_lambda_of_uses_the_same_side():
  r = np.random.default_rng(1)
  u = r.uniform(size=103).astype(np.float32)
  amor, mc, hq = _explanations(6, n=103, d=4)
  num, den = selective.lambda_terms(amor, mc, hq)
  t = selective.calibrate_threshold(u, 0.0)      # every point routed
  edges, lams = selective.fit_lambdas(num, den, u, t, num_bins=4,
                                      clip=False)
  # Edges are calibration scores; a score equal to an edge is in the lower
  # bin (bins closed on the right, like "kept iff s <= t").
  counts = [int(np.sum(u <= edges[0]))]
  counts += [int(np.sum((u > lo) & (u <= hi)))
             for lo, hi in zip(edges[:-1], edges[1:])]
  counts.append(int(np.sum(u > edges[-1])))
  assert counts == [26, 26, 26, 25]   # ceil(b * 103 / 4) - ceil((b-1) ...)
  lam_each = selective.lambda_of(u, edges, lams)
  for b in range(4):
    sel = np.asarray(lam_each) == np.asarray(lams[b])
    assert sel.sum() >= 25
    np.testing.assert_allclose(
        lams[b], selective.fit_lambda(num, den, weights=sel, clip=False),
        rtol=1e-5)
  np.testing.assert_array_equal(
      selective.lambda_of(edges, edges, lams), lams[:3])


def test_no_routed_calibration_point_gives_lambda_one():
  u = jnp.linspace(0.0, 1.0, 20)
  num, den = jnp.ones(20), jnp.ones(20)
  t = selective.calibrate_threshold(u, 1.0)
  edges, lams = selective.fit_lambdas(num, den, u, t, num_bins=3)
  assert edges.shape == (2,)
  np.testing.assert_array_equal(lams, jnp.ones(3))


# ------------------------------------------------------ selection (§3, §4)


def test_coverage_one_returns_the_amortized_explanations_exactly():
  amor, mc, hq = _explanations(7, n=100)
  r = np.random.default_rng(7)
  u_cal = r.normal(size=100).astype(np.float32)
  u_test = np.concatenate([r.normal(size=98), [1e6, -1e6]]).astype(np.float32)
  num, den = selective.lambda_terms(amor, mc, hq)
  t = selective.calibrate_threshold(u_cal, 1.0)
  assert float(t) == math.inf
  edges, lams = selective.fit_lambdas(num, den, u_cal, t, num_bins=2)
  scores, routed = selective.selective_explanations(
      amor, mc * np.nan, u_test, t, edges, lams)   # MC never read
  np.testing.assert_array_equal(scores, amor)
  assert not bool(jnp.any(routed))


def test_coverage_zero_routes_everything():
  amor, mc, hq = _explanations(8, n=100)
  u = np.random.default_rng(8).normal(size=100).astype(np.float32)
  num, den = selective.lambda_terms(amor, mc, hq)
  t = selective.calibrate_threshold(u, 0.0)
  assert float(t) == -math.inf
  edges, lams = selective.fit_lambdas(num, den, u, t)
  scores, routed = selective.selective_explanations(amor, mc, u, t, edges,
                                                    lams)
  assert bool(jnp.all(routed))
  np.testing.assert_allclose(scores, selective.combine(amor, mc, lams[0]),
                             rtol=1e-6)


@pytest.mark.parametrize('n', [1000, 997])
def test_threshold_keeps_the_coverage_fraction(n):
  r = np.random.default_rng(n)
  cal = r.normal(size=n).astype(np.float32)
  t = selective.calibrate_threshold(cal, 0.7)
  kept_cal = int(jnp.sum(~selective.route(cal, t)))
  assert kept_cal == math.ceil(0.7 * n)          # fraction ceil(0.7 n) / n
  fresh = r.normal(size=20000).astype(np.float32)
  kept = float(jnp.mean(~selective.route(fresh, t)))
  assert abs(kept - 0.7) < 0.05


def test_threshold_with_ties_keeps_the_smallest_fraction_above_coverage():
  cal = jnp.array([0.0, 1.0, 1.0, 1.0, 2.0])
  t = selective.calibrate_threshold(cal, 0.3)   # k = 2 -> s_(2) = 1
  assert float(t) == 1.0
  assert int(jnp.sum(cal <= t)) == 4            # 1/5 < 0.3 is not enough
  # Round-off: 0.07 * 100 = 7.000000000000001 must still pick s_(7).
  t = selective.calibrate_threshold(jnp.arange(100.0), 0.07)
  assert float(t) == 6.0


def test_selective_explanations_jit_equals_eager():
  amor, mc, hq = _explanations(9, n=64)
  u = np.random.default_rng(9).uniform(size=64).astype(np.float32)
  num, den = selective.lambda_terms(amor, mc, hq)
  t = selective.calibrate_threshold(u, 0.5)
  edges, lams = selective.fit_lambdas(num, den, u, t, num_bins=2)
  eager = selective.selective_explanations(amor, mc, u, t, edges, lams)
  jitted = jax.jit(selective.selective_explanations)(amor, mc, u, t, edges,
                                                     lams)
  np.testing.assert_allclose(eager[0], jitted[0], rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(eager[1], jitted[1])
  kept = ~np.asarray(eager[1])
  np.testing.assert_array_equal(np.asarray(jitted[0])[kept], amor[kept])


# ------------------------------------------------------- uncertainty (§3)


def test_deep_uncertainty_is_the_mean_ensemble_variance():
  m = np.random.default_rng(10).normal(size=(5, 7, 3)).astype(np.float32)
  np.testing.assert_allclose(selective.deep_uncertainty(m),
                             np.var(m, axis=0).mean(-1), rtol=1e-5)
  np.testing.assert_allclose(selective.ensemble_mean(m), m.mean(0),
                             rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match='at least 2 members'):
    selective.deep_uncertainty(m[:1])
  with pytest.raises(ValueError, match='member_scores'):
    selective.deep_uncertainty(m[0])
  with pytest.raises(ValueError, match='member_scores'):
    selective.deep_uncertainty(np.where(m > 1, np.nan, m))


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize('coverage', [-0.1, 1.5, float('nan'), 'half', None,
                                      True])
def test_bad_coverage_is_refused(coverage):
  with pytest.raises(ValueError, match='coverage'):
    selective.calibrate_threshold(jnp.arange(10.0), coverage)


def test_bad_calibration_scores_are_refused():
  with pytest.raises(ValueError, match='calibration_scores'):
    selective.calibrate_threshold(jnp.zeros(0), 0.5)
  with pytest.raises(ValueError, match='calibration_scores'):
    selective.calibrate_threshold(jnp.array([1.0, jnp.inf]), 0.5)
  with pytest.raises(ValueError, match='calibration_scores'):
    selective.calibrate_threshold(jnp.zeros((2, 3)), 0.5)


def test_too_few_calibration_points_for_the_bins_is_refused():
  u = jnp.linspace(0.0, 1.0, 20)
  num, den = jnp.ones(20), jnp.ones(20)
  t = selective.calibrate_threshold(u, 0.75)          # 5 points routed
  with pytest.raises(ValueError, match='num_bins=3.*got 5 of 20'):
    selective.fit_lambdas(num, den, u, t, num_bins=3)
  edges, lams = selective.fit_lambdas(num, den, u, t, num_bins=2)
  assert lams.shape == (2,)
  tied = jnp.array([0.0] * 10 + [1.0] * 10)           # ties empty a bin
  with pytest.raises(ValueError, match='num_bins=4'):
    selective.fit_lambdas(num, den, tied, -jnp.inf, num_bins=4)


def test_targets_of_the_wrong_shape_are_refused():
  amor, mc, hq = _explanations(11, n=10, d=4)
  with pytest.raises(ValueError, match='targets must have the shape'):
    selective.lambda_terms(amor, mc, hq[:, :3])
  with pytest.raises(ValueError, match='mc must have the shape'):
    selective.lambda_terms(amor, mc[:5], hq)
  with pytest.raises(ValueError, match='lambdas'):
    selective.lambda_of(jnp.zeros(3), jnp.zeros(2), jnp.ones(2))


# --------------------------------------------------------------- metrics


def test_spearman_per_input_matches_scipy():
  r = np.random.default_rng(12)
  s = r.normal(size=(40, 9)).astype(np.float32)
  t = r.normal(size=(40, 9)).astype(np.float32)
  s[:10] = np.round(s[:10])              # ties
  t[5:15] = np.round(t[5:15] * 2) / 2
  s[20] = 1.0                            # constant row -> NaN
  got = np.asarray(selective.spearman_per_input(s, t))
  want = np.array([stats.spearmanr(a, b).statistic if np.ptp(a) > 0 else
                   np.nan for a, b in zip(s, t)])
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  assert np.isnan(got[20])
  np.testing.assert_allclose(
      jax.jit(selective.spearman_per_input)(s, t), got, rtol=1e-6,
      atol=1e-6)
  np.testing.assert_allclose(
      selective.mse_per_input(s, t), np.mean((s - t) ** 2, -1), rtol=1e-5)


def test_uncertainty_auroc_and_spearman_match_sklearn_and_scipy():
  r = np.random.default_rng(13)
  errors = np.exp(r.normal(size=500)).astype(np.float32)
  u = (np.log(errors) + r.normal(size=500)).astype(np.float32)
  u = np.round(u * 2) / 2                  # ties in the uncertainty
  positives = errors >= np.sort(errors)[-50]
  assert positives.sum() == 50
  np.testing.assert_allclose(selective.uncertainty_auroc(u, errors),
                             skm.roc_auc_score(positives, u), rtol=1e-5)
  np.testing.assert_allclose(
      selective.uncertainty_auroc(u, errors, top_fraction=0.25),
      skm.roc_auc_score(errors >= np.sort(errors)[-125], u), rtol=1e-5)
  np.testing.assert_allclose(selective.uncertainty_spearman(u, errors),
                             stats.spearmanr(u, errors).statistic, rtol=1e-5)
  assert np.isnan(float(selective.uncertainty_auroc(u, np.ones(500))))


def test_coverage_curve_end_points_and_oracle_beats_random():
  r = np.random.default_rng(14)
  n, d = 600, 6
  hq = r.normal(size=(n, d))
  sd = np.exp(r.normal(size=n))                  # Amor's error varies a lot
  amor = (hq + sd[:, None] * r.normal(size=(n, d))).astype(np.float32)
  mc = (hq + 0.8 * r.normal(size=(n, d))).astype(np.float32)
  hq = hq.astype(np.float32)
  cal, test = slice(0, 300), slice(300, None)
  num, den = selective.lambda_terms(amor[cal], mc[cal], hq[cal])
  err = np.asarray(selective.mse_per_input(amor, hq))
  rnd = r.uniform(size=n).astype(np.float32)
  grid = [0.0, 0.5, 1.0]
  curve = lambda u, **kw: selective.coverage_curve(
      amor[test], mc[test], u[test], u[cal], num, den, hq[test], grid, **kw)
  oracle, random = curve(err), curve(rnd)
  np.testing.assert_allclose(oracle['mse'][-1],
                             np.mean(err[test]), rtol=1e-5)
  np.testing.assert_allclose(oracle['routed_fraction'], [1.0, 0.5, 0.0],
                             atol=0.06)
  assert np.isnan(float(oracle['lambda_mean'][-1]))
  assert float(oracle['mse'][1]) < float(random['mse'][1])
  assert float(oracle['spearman'][1]) > float(random['spearman'][1])
  binned = curve(err, num_bins=2)
  assert set(binned) == {'coverage', 'mse', 'spearman', 'routed_fraction',
                         'lambda_mean'}
  assert binned['mse'].shape == (3,)


# ------------------------------------------------- learned uncertainty (§3)


@pytest.fixture(scope='module')
def tabular_errors():
  r = np.random.default_rng(15)
  x = r.normal(size=(1000, 4)).astype(np.float32)
  x_new = r.normal(size=(500, 4)).astype(np.float32)
  return x, np.exp(2 * x[:, 0]), x_new, np.exp(2 * x_new[:, 0])


def test_learned_uncertainty_ranks_a_smooth_error(tabular_errors):
  x, e, x_new, e_new = tabular_errors
  model = selective.fit_learned_uncertainty(0, x, e, hidden=(64, 64),
                                            num_steps=300)
  s = selective.predict_uncertainty(model, x_new, chunk_size=128)
  assert s.shape == (500,)
  assert stats.spearmanr(s, e_new).statistic > 0.8
  again = selective.fit_learned_uncertainty(0, x, e, hidden=(64, 64),
                                            num_steps=300)
  jax.tree.map(np.testing.assert_array_equal, model.params, again.params)
  np.testing.assert_array_equal(
      selective.predict_uncertainty(again, x_new, chunk_size=128), s)


def test_learned_uncertainty_text_and_image_give_one_score_per_input():
  r = np.random.default_rng(16)
  tokens = r.integers(1, 30, size=(32, 10))
  tokens[:, 7:] = 0
  tokens[0] = 0                                     # an all-PAD row
  model = selective.fit_learned_uncertainty(
      0, tokens, r.uniform(size=32), modality='text', vocab_size=30,
      num_steps=2, batch_size=16)
  s = selective.predict_uncertainty(model, tokens)
  assert s.shape == (32,) and bool(jnp.all(jnp.isfinite(s)))
  images = r.uniform(size=(16, 8, 8, 1)).astype(np.float32)
  model = selective.fit_learned_uncertainty(
      0, images, r.uniform(size=16), modality='image',
      groups=masking.patch_groups((8, 8, 1), 4), num_steps=2, batch_size=8)
  assert selective.predict_uncertainty(model, images).shape == (16,)


def test_learned_uncertainty_refuses_bad_errors(tabular_errors):
  x, e, _, _ = tabular_errors
  with pytest.raises(ValueError, match='errors must be >= 0'):
    selective.fit_learned_uncertainty(0, x, -e, num_steps=0)
  with pytest.raises(ValueError, match='errors must have one entry'):
    selective.fit_learned_uncertainty(0, x, e[:10], num_steps=0)
  with pytest.raises(ValueError, match='errors'):
    selective.fit_learned_uncertainty(0, x, np.where(e > 5, np.nan, e),
                                      num_steps=0)
  with pytest.raises(ValueError, match='errors must be'):
    selective.fit_learned_uncertainty(0, x, e[:, None], num_steps=0)
