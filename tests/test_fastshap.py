"""FastSHAP (xai_jax.fastshap): efficiency, the objective's optimum, ensembles."""

from __future__ import annotations

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import xai_jax as xj
from xai_jax import attribution
from xai_jax import blackbox as bb
from xai_jax import fastshap
from xai_jax import masking

D = 6


def _mlp_box(d=D, c=3, seed=0):
  rng = np.random.default_rng(seed)
  w1 = jnp.asarray(rng.normal(size=(d, 16)), jnp.float32)
  w2 = jnp.asarray(rng.normal(size=(16, c)), jnp.float32)
  return bb.from_jax(lambda x: jnp.tanh(x @ w1) @ w2, input_shape=(d,),
                     output='logits', name='mlp')


def _x(n=256, d=D, seed=1):
  return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def test_additive_normalisation_gives_efficiency_for_every_output():
  box = _mlp_box()
  x = _x(64)
  e = fastshap.fit(0, box, x, num_steps=0, baseline='mean')
  phi = fastshap.attributions(e, x[:10])                    # [10, d, c]
  base = masking.data_mean(x, (D,))
  gap = box.probs(x[:10]) - box.probs(base[None])
  np.testing.assert_allclose(phi.sum(1), gap, atol=1e-5)
  out = fastshap.explain(e, x[:10], target=2)
  np.testing.assert_allclose(out.scores.sum(1), gap[:, 2], atol=1e-5)


def test_normalize_spreads_the_gap_over_active_players_only():
  phi = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, 3)),
                    jnp.float32)
  active = jnp.asarray([[1, 1, 0, 1], [1, 1, 1, 1]], jnp.float32)
  gap = jnp.asarray([[1.0, 2.0, 3.0], [0.0, -1.0, 0.5]])
  out = fastshap.normalize(phi, gap, active, 'additive')
  np.testing.assert_allclose(out.sum(1), gap, atol=1e-6)
  np.testing.assert_array_equal(out[0, 2], 0.0)
  np.testing.assert_allclose(fastshap.normalize(phi, gap, active, 'none'),
                             phi * active[..., None])


def test_trained_explainer_recovers_a_linear_models_shapley_values():
  # raw space, zero baseline: phi_i = w_i x_i exactly (the objective's optimum).
  w = jnp.asarray([2.0, -1.0, 0.5, 0.0, 1.5, -2.5])
  box = bb.from_jax(lambda x: jnp.stack([x @ w, -(x @ w)], -1),
                    input_shape=(D,), output='regression', name='linear')
  x = _x(1024)
  e = fastshap.fit(0, box, x, space='raw', num_steps=800, batch_size=64,
                   learning_rate=3e-3)
  xt = _x(200, seed=7)
  phi = fastshap.explain(e, xt, target=0).scores
  want = xt * np.asarray(w)
  err = float(jnp.mean((phi - want) ** 2)) / float(np.var(want))
  assert err < 0.05, err


def test_fastshap_matches_exact_shapley_on_a_small_classifier():
  box = _mlp_box(c=2)
  x = _x(2048)
  e = fastshap.fit(0, box, x, num_steps=1500, learning_rate=3e-3)
  xt = _x(200, seed=5)
  ref = attribution.exact_shapley(box, xt, space='probs', baseline='zero')
  phi = fastshap.explain(e, xt).scores
  rel = float(jnp.mean((phi - ref) ** 2) / jnp.var(ref))
  assert rel < 0.15, rel


def test_ensemble_by_vmap_equals_members_trained_alone():
  box = _mlp_box()
  x = _x(256)
  kw = dict(num_steps=20, batch_size=32, steps_per_call=1)
  ens = fastshap.fit(3, box, x, ensemble_size=3, **kw)
  assert ens.ensemble_size == 3
  members = fastshap.attributions(ens, x[:16], members=True)   # [3, 16, d, c]
  for i in range(3):
    alone = fastshap.fit(3, box, x, ensemble_size=1, first_member=i, **kw)
    np.testing.assert_allclose(fastshap.attributions(alone, x[:16]),
                               members[i], atol=2e-5)
  np.testing.assert_allclose(fastshap.attributions(ens, x[:16]),
                             members.mean(0), atol=1e-6)
  # members differ (their initialisations differ)
  assert float(jnp.max(jnp.abs(members[0] - members[1]))) > 1e-3


def test_independent_member_coalitions_train_and_differ_from_shared():
  box = _mlp_box()
  x = _x(128)
  kw = dict(num_steps=10, batch_size=32, steps_per_call=1, ensemble_size=2)
  a = fastshap.fit(0, box, x, **kw)
  b = fastshap.fit(0, box, x, member_coalitions='independent', **kw)
  pa = fastshap.attributions(a, x[:8], members=True)
  pb = fastshap.attributions(b, x[:8], members=True)
  assert pa.shape == pb.shape == (2, 8, D, 3)
  assert float(jnp.max(jnp.abs(pa - pb))) > 1e-6


def test_same_key_same_explainer_and_jit_matches_members_mean():
  box = _mlp_box()
  x = _x(128)
  kw = dict(num_steps=10, batch_size=32)
  a = fastshap.explain(fastshap.fit(5, box, x, **kw), x[:8]).scores
  b = fastshap.explain(fastshap.fit(5, box, x, **kw), x[:8]).scores
  np.testing.assert_array_equal(a, b)


def test_regression_objective_fits_given_targets():
  box = _mlp_box(c=2)
  x = _x(512)
  targets = jnp.stack([
      attribution.exact_shapley(box, x, space='probs', baseline='zero',
                                target=c) for c in (0, 1)], -1)
  e = fastshap.fit(0, box, x, objective='regression', targets=targets,
                   num_steps=1500, learning_rate=3e-3)
  xt = _x(200, seed=9)
  ref = attribution.exact_shapley(box, xt, space='probs', baseline='zero',
                                  target=1)
  got = fastshap.explain(e, xt, target=1).scores
  rel = float(jnp.mean((got - ref) ** 2) / jnp.var(ref))
  assert rel < 0.2, rel


def test_surrogate_game_is_the_evalx_surrogate():
  box = _mlp_box(c=2)
  x = _x(512)
  e = fastshap.fit(0, box, x, value='surrogate', surrogate_steps=50,
                   num_steps=5, batch_size=32)
  assert e.value == 'surrogate' and e.game.name == 'evalx'
  phi = fastshap.attributions(e, x[:4])
  gap = e.game.probs(x[:4]) - e.game.probs(e.baseline[None])
  np.testing.assert_allclose(phi.sum(1), gap, atol=1e-5)


def test_text_tokens_pad_positions_get_zero():
  vocab, length = 12, 8
  table = jnp.asarray(np.random.default_rng(0).normal(size=(vocab, 2)),
                      jnp.float32)
  box = bb.from_jax(lambda t: table[t].sum(1), input_shape=(length,),
                    output='logits', input_dtype='int', name='bag')
  rng = np.random.default_rng(1)
  tok = rng.integers(1, vocab, size=(64, length)).astype(np.int32)
  tok[:, 6:] = 0                                   # PAD tail
  e = fastshap.fit(0, box, tok, modality='text', num_steps=3, batch_size=16)
  phi = fastshap.attributions(e, tok[:5])
  np.testing.assert_array_equal(phi[:, 6:], 0.0)
  gap = box.probs(tok[:5]) - box.probs(jnp.zeros((1, length), jnp.int32))
  np.testing.assert_allclose(phi.sum(1), gap, atol=1e-5)


def test_image_patches():
  box = bb.from_jax(lambda x: jnp.stack([x.mean((1, 2, 3)),
                                         -x.mean((1, 2, 3))], -1),
                    input_shape=(8, 8, 1), output='logits', name='img')
  x = np.random.default_rng(0).normal(size=(32, 8, 8, 1)).astype(np.float32)
  e = fastshap.fit(0, box, x, modality='image', patch=2, num_steps=2,
                   batch_size=8)
  out = fastshap.explain(e, x[:3])
  assert out.scores.shape == (3, 16)


def test_protocol_registration_and_config_errors():
  assert xj.EXPLAINERS['fastshap'] is fastshap
  box = _mlp_box()
  x = _x(64)
  with pytest.raises(ValueError, match="did you mean 'num_samples'"):
    fastshap.fit(0, box, x, num_sample=3)
  with pytest.raises(ValueError, match='targets'):
    fastshap.fit(0, box, x, objective='regression', num_steps=1)
  with pytest.raises(ValueError, match=r'targets must have shape'):
    fastshap.fit(0, box, x, objective='regression', num_steps=1,
                 targets=np.zeros((64, D, 2)))
  with pytest.raises(ValueError, match='ensemble_size'):
    fastshap.fit(0, box, x, ensemble_size=0)
  with pytest.raises(ValueError, match='batch_size'):
    fastshap.fit(0, box, x, batch_size=65)
  with pytest.raises(ValueError, match='NaN'):
    fastshap.fit(0, box, np.full((8, D), np.nan, np.float32))
  reg = bb.from_jax(lambda x: x[:, :1], input_shape=(D,), output='regression')
  with pytest.raises(ValueError, match='space'):
    fastshap.fit(0, reg, x)
  e = fastshap.fit(0, box, x, num_steps=0)
  with pytest.raises(ValueError, match='target'):
    fastshap.explain(e, x[:2], target=3)
  with pytest.raises(ValueError, match='x'):
    fastshap.explain(e, x[:2, :3])


def test_resume_from_workdir_is_exact(tmp_path):
  box = _mlp_box()
  x = _x(128)
  kw = dict(batch_size=32, steps_per_call=1, checkpoint_every=5,
            ensemble_size=2)
  fastshap.fit(0, box, x, num_steps=20, workdir=str(tmp_path), **kw)
  for step in ('15', '20'):   # an interruption after step 10
    shutil.rmtree(tmp_path / 'checkpoints' / step)
  resumed = fastshap.fit(0, box, x, num_steps=20, workdir=str(tmp_path), **kw)
  fresh = fastshap.fit(0, box, x, num_steps=20, **kw)
  np.testing.assert_allclose(fastshap.attributions(resumed, x[:8]),
                             fastshap.attributions(fresh, x[:8]), atol=1e-6)
