"""Selective explanations under the explainer protocol (xai_jax.selective)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import xai_jax as xj
from xai_jax import blackbox as bb
from xai_jax import fastshap
from xai_jax import selective

D = 5


def _box(seed=0):
  rng = np.random.default_rng(seed)
  w1 = jnp.asarray(rng.normal(size=(D, 16)), jnp.float32)
  w2 = jnp.asarray(rng.normal(size=(16, 2)), jnp.float32)
  return bb.from_jax(lambda x: jnp.tanh(x @ w1) @ w2, input_shape=(D,),
                     output='logits', name='mlp')


def _x(n, seed=1):
  return np.random.default_rng(seed).normal(size=(n, D)).astype(np.float32)


@pytest.fixture(scope='module')
def fitted():
  box = _box()
  amortized = fastshap.fit(0, box, _x(300), ensemble_size=3, num_steps=60,
                           batch_size=32)
  sel = selective.fit(0, box, _x(300, seed=2), amortized=amortized,
                      coverage=0.7, mc_samples=8)
  return box, amortized, sel


def test_coverage_one_is_the_amortized_explanation_exactly(fitted):
  _, amortized, sel = fitted
  x = _x(40, seed=3)
  out = selective.explain(sel, x, key=1, coverage=1.0)
  want = fastshap.explain(amortized, x).scores
  np.testing.assert_array_equal(out.scores, out.amortized)
  np.testing.assert_allclose(out.amortized, want, atol=1e-6)
  assert not bool(out.routed.any())
  np.testing.assert_array_equal(out.num_inferences, 1)
  np.testing.assert_array_equal(out.lam, 1.0)


def test_coverage_zero_routes_every_input_and_counts_its_inferences(fitted):
  _, _, sel = fitted
  x = _x(40, seed=3)
  out = selective.explain(sel, x, key=1, coverage=0.0)
  assert bool(out.routed.all())
  np.testing.assert_array_equal(out.num_inferences, 1 + sel.mc_samples + 1)
  lam = out.lam[:, None]
  mc = (out.scores - lam * out.amortized) / (1 - lam)
  want = selective.mc_explanations(sel.amortized, x, key=1,
                                   num_samples=sel.mc_samples)
  # MC^n ran on exactly these rows (padded sub-batch, per-input draws).
  np.testing.assert_allclose(mc, want, atol=2e-4)


def test_routed_fraction_follows_coverage_and_default(fitted):
  _, _, sel = fitted
  x = _x(2000, seed=4)
  out = selective.explain(sel, x, key=2)             # default coverage 0.7
  assert abs(float(out.routed.mean()) - 0.3) < 0.08
  kept = ~np.asarray(out.routed)
  np.testing.assert_array_equal(np.asarray(out.scores)[kept],
                                np.asarray(out.amortized)[kept])
  assert float(out.num_inferences.mean()) == pytest.approx(
      1 + float(out.routed.mean()) * (sel.mc_samples + 1))


def test_same_key_same_explanations_and_registry(fitted):
  _, _, sel = fitted
  x = _x(30, seed=5)
  a = selective.explain(sel, x, key=3, coverage=0.5).scores
  b = selective.explain(sel, x, key=3, coverage=0.5).scores
  np.testing.assert_array_equal(a, b)
  assert xj.EXPLAINERS['selective'] is selective


def test_learned_uncertainty_path():
  box = _box()
  sel = selective.fit(0, box, _x(240), uncertainty='learned', ensemble_size=1,
                      mc_samples=8, fastshap={'num_steps': 20},
                      learned={'num_steps': 20})
  assert sel.uncertainty == 'learned' and sel.uncertainty_model is not None
  out = selective.explain(sel, _x(20, seed=6), key=0, coverage=0.5)
  assert out.scores.shape == (20, D)
  assert 0 < int(out.routed.sum()) < 20


def test_bad_input_raises_named_errors(fitted):
  box, amortized, sel = fitted
  x = _x(30, seed=7)
  for cov in (-0.1, 1.5, float('nan')):
    with pytest.raises(ValueError, match='coverage'):
      selective.explain(sel, x, key=0, coverage=cov)
  with pytest.raises(ValueError, match='coverage'):
    selective.fit(0, box, _x(60), amortized=amortized, coverage=2.0)
  single = fastshap.fit(0, box, _x(64), num_steps=0)
  with pytest.raises(ValueError, match='ensemble'):
    selective.fit(0, box, _x(60), amortized=single)
  with pytest.raises(ValueError, match='ensemble_size'):
    selective.fit(0, box, _x(60), ensemble_size=1)
  with pytest.raises(ValueError, match='num_bins'):
    selective.fit(0, box, _x(30), amortized=amortized, num_bins=8)
  with pytest.raises(ValueError, match='targets_calibration'):
    selective.fit(0, box, _x(60), amortized=amortized,
                  x_calibration=_x(20), targets_calibration=np.zeros((20, 3)))
  with pytest.raises(ValueError, match='did you mean'):
    selective.fit(0, box, _x(60), amortized=amortized, coverag=0.5)
  with pytest.raises(ValueError, match='target'):
    selective.explain(sel, x, key=0, target=5)
  with pytest.raises(ValueError, match='x'):
    selective.explain(sel, x[:, :2], key=0)
