"""LTX: objective, pretraining (resume), batched per-instance finetuning, errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import shutil

import xai_jax as xj
from xai_jax import blackbox as bb
from xai_jax import ltx
from xai_jax import models
from xai_jax import nets
from conftest import region_data

SMALL = {'net': 'cnn', 'features': (4,), 'batch_size': 16, 'log_every': 1000}


def _linear_box():
  """Class 0 score grows with every kept pixel: s = 10 (mean(x) - 0.2)."""
  def fn(x):
    s = 10.0 * (jnp.mean(x, axis=(1, 2, 3)) - 0.2)
    return jnp.stack([s, -s], -1)
  return bb.from_jax(fn, input_shape=(8, 8, 1))


def test_registered_and_protocol(region_box):
  assert xj.EXPLAINERS['ltx'] is ltx
  x = region_data(32)
  e = ltx.fit(0, region_box, x, num_steps=4, **SMALL)
  out = ltx.explain(e, x[:3], finetune_steps=2)
  assert out.scores.shape == (3, 8, 8)
  assert float(out.scores.min()) > 0 and float(out.scores.max()) < 1
  assert e.grid == (4, 4)


def test_objective_terms(region_box):
  net = nets.CNNMasker(features=(4,))
  x = region_data(4)
  p = net.init(jax.random.key(0), x)['params']
  c = jnp.array([0, 1, 0, 1])
  loss, aux = ltx.objective(net, region_box, p, x, c, mask_weight=3.0)
  m_low = net.apply({'params': p}, x)
  m = jax.image.resize(m_low, (4, 8, 8), 'bilinear')
  lp = jax.nn.log_softmax(region_box(x * m[..., None]))
  ce = -lp[jnp.arange(4), c]
  want = ce + 3.0 * jnp.mean(jax.nn.softplus(m_low), (1, 2))
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  np.testing.assert_allclose(aux['mask'], m, rtol=1e-6)
  l1, _ = ltx.objective(net, region_box, p, x, c, mask_weight=3.0,
                        mask_loss='l1')
  np.testing.assert_allclose(l1, ce + 3.0 * jnp.mean(m_low, (1, 2)),
                             rtol=1e-5)


def test_lambda_zero_keeps_everything_large_lambda_removes_everything():
  box = _linear_box()
  x = region_data(64)
  areas = {}
  for lam in (0.0, 200.0):
    e = ltx.fit(1, box, x, num_steps=150, learning_rate=5e-2,
                mask_weight=lam, **SMALL)
    areas[lam] = float(jnp.mean(ltx.masks(e, x)))
  assert areas[0.0] > 0.95, areas
  assert areas[200.0] < 0.05, areas


def test_region_toy_gets_the_mask(region_box):
  x = jnp.concatenate([region_data(128, 1), region_data(128, 2)])
  x = x.at[128:, :4, :4].set(0.9)            # class 1: bright region
  e = ltx.fit(0, region_box, x, num_steps=200, learning_rate=3e-2,
              mask_weight=20.0, **{**SMALL, 'features': (8,)})
  m = np.asarray(ltx.explain(e, x[128:160]).scores)
  assert m[:, :4, :4].mean() > m[:, 4:, :].mean() + 0.3


def test_batched_finetuning_equals_one_at_a_time(region_box):
  x = region_data(48)
  e = ltx.fit(0, region_box, x, num_steps=20, **SMALL)
  xs = x[:5]
  out, info = ltx.explain(e, xs, finetune_steps=6, return_info=True)
  for i in range(5):
    one, one_info = ltx.explain(e, xs[i:i + 1], finetune_steps=6,
                                return_info=True)
    np.testing.assert_allclose(out.scores[i], one.scores[0], atol=1e-5)
    assert int(info['step'][i]) == int(one_info['step'][0])


def test_finetuning_lowers_the_objective_and_zero_steps_is_pltx(region_box):
  x = region_data(48)
  e = ltx.fit(0, region_box, x, num_steps=10, **SMALL)
  p0, i0 = ltx.explain(e, x[:8], finetune_steps=0, return_info=True)
  np.testing.assert_allclose(p0.scores, ltx.masks(e, x[:8]), atol=1e-6)
  np.testing.assert_allclose(p0.scores,
                             ltx.explain(e, x[:8], finetune_steps=0).scores,
                             atol=1e-6)
  assert np.all(np.asarray(i0['step']) == 0)
  p25, i25 = ltx.explain(e, x[:8], finetune_steps=25, return_info=True)
  assert np.all(np.asarray(i25['objective']) <= np.asarray(i0['objective'])
                + 1e-6)
  assert float(jnp.mean(i25['objective'])) < float(jnp.mean(i0['objective']))


def test_keep_last_rule(region_box):
  x = region_data(32)
  e = ltx.fit(0, region_box, x, num_steps=5, finetune_keep='last', **SMALL)
  _, info = ltx.explain(e, x[:4], finetune_steps=4, return_info=True)
  assert np.all(np.asarray(info['step']) == 4)


def test_same_key_same_explainer_and_resume_is_exact(region_box, tmp_path):
  x = region_data(64)
  a = ltx.fit(3, region_box, x, num_steps=12, checkpoint_every=6, **SMALL)
  b = ltx.fit(3, region_box, x, num_steps=12, **SMALL)
  jax.tree.map(np.testing.assert_array_equal, a.params, b.params)
  # A 12-step run cut after its step-6 checkpoint resumes exactly.
  wd2 = str(tmp_path / 'run2')
  full = ltx.fit(3, region_box, x, num_steps=12, checkpoint_every=6,
                 workdir=wd2, **SMALL)
  shutil.rmtree(f'{wd2}/checkpoints/12')
  resumed = ltx.fit(3, region_box, x, num_steps=12, checkpoint_every=6,
                    workdir=wd2, **SMALL)
  jax.tree.map(np.testing.assert_array_equal, full.params, resumed.params)
  jax.tree.map(np.testing.assert_array_equal, full.params, a.params)


def test_vit_explainer_copies_the_box_and_freezes_the_embedding():
  kw = {'num_classes': 3, 'patch': 4, 'dim': 16, 'depth': 1, 'heads': 2,
        'mlp_dim': 32}
  module = models.ViT(**kw)
  x = region_data(32)
  v = module.init(jax.random.key(5), x[:1])
  box = bb.from_linen(module, v, input_shape=(8, 8, 1))
  e = ltx.fit(0, box, x, net='vit', patch=4, dim=16, depth=1, heads=2,
              mlp_dim=32, num_steps=5, batch_size=16, learning_rate=1e-2,
              log_every=1000)
  assert e.frozen == ('embed', 'cls', 'pos')
  for name in ('embed', 'cls', 'pos'):
    jax.tree.map(np.testing.assert_array_equal, e.params[name],
                 v['params'][name])
  moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))),
                       e.params['block0'], v['params']['block0'])
  assert max(jax.tree.leaves(moved)) > 0
  assert e.grid == (2, 2)
  out = ltx.explain(e, x[:2], finetune_steps=3)
  assert out.scores.shape == (2, 8, 8)


def test_cnn_explainer_body_equals_the_box_body():
  module = models.CNN(num_classes=4, features=(4, 8))
  x = region_data(2)
  v = module.init(jax.random.key(1), x)
  net = nets.CNNMasker(features=(4, 8))
  p = net.init(jax.random.key(0), x)['params']
  p, count = ltx.copy_matching(p, v)
  assert count == 4                              # conv1, conv2 kernel + bias
  feats = lambda y: nets.max_pool_2x2(nn.relu(nn.Conv(4, (3, 3)).apply(
      {'params': v['params']['conv1']}, y)))
  mine = lambda y: nets.max_pool_2x2(nn.relu(nets.PatchConv(
      4, 3, padding=1).apply({'params': p['conv1']}, y)))
  np.testing.assert_allclose(feats(x), mine(x), atol=1e-5)


def test_unet_gives_full_resolution_masks(region_box):
  x = region_data(32)
  e = ltx.fit(0, region_box, x, net='unet', features=(4, 4), num_steps=3,
              batch_size=16, log_every=1000)
  assert e.grid == (8, 8)
  assert ltx.explain(e, x[:2], finetune_steps=2).scores.shape == (2, 8, 8)


class _BadMask(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.sigmoid(nn.Dense(1)(x[:, :3, :3]))[..., 0]    # [b, 3, 3]


def test_errors(region_box):
  x = region_data(32)
  with pytest.raises(ValueError, match='upsamples onto the image'):
    ltx.fit(0, region_box, x, network=_BadMask(), num_steps=1, **SMALL)
  with pytest.raises(ValueError, match='patch'):
    ltx.fit(0, region_box, x, net='vit', patch=3, num_steps=1,
            batch_size=16)
  reg = bb.from_jax(lambda v: jnp.mean(v, (1, 2)), input_shape=(8, 8, 1),
                    output='regression')
  with pytest.raises(ValueError, match='class scores'):
    ltx.fit(0, reg, x, num_steps=1, **SMALL)
  with pytest.raises(ValueError, match='unknown|Unknown'):
    ltx.fit(0, region_box, x, num_steps=1, mask_wieght=2.0, **SMALL)
  with pytest.raises(ValueError, match='labels'):
    ltx.fit(0, region_box, x, num_steps=1, mode='target', **SMALL)
  with pytest.raises(ValueError, match='mask_weight'):
    ltx.fit(0, region_box, x, num_steps=1, mask_weight=-1.0, **SMALL)
  e = ltx.fit(0, region_box, x, num_steps=1, **SMALL)
  with pytest.raises(ValueError, match='finetune_steps'):
    ltx.explain(e, x[:2], finetune_steps=-1)
  with pytest.raises(ValueError, match='finetune_steps'):
    ltx.fit(0, region_box, x, num_steps=1, finetune_steps=2.5, **SMALL)
  with pytest.raises(ValueError, match='target'):
    ltx.explain(e, x[:2], target=5)
  with pytest.raises(ValueError, match='x'):
    ltx.explain(e, x[:2, :4])
  with pytest.raises(ValueError, match='x'):
    ltx.explain(e, x[:2].at[0, 0, 0, 0].set(jnp.nan))
  with pytest.raises(ValueError, match='LTXExplainer'):
    ltx.explain(object(), x[:2])


def test_target_mode_uses_labels(region_box):
  x = region_data(32)
  y = np.arange(32) % 2
  e = ltx.fit(0, region_box, x, labels=y, mode='target', num_steps=3,
              **SMALL)
  out = ltx.explain(e, x[:4], target=jnp.asarray(y[:4]), finetune_steps=2)
  assert out.scores.shape == (4, 8, 8)


def test_a_model_returning_nan_is_an_error(region_box):
  x = region_data(16)
  nan_box = bb.from_jax(
      lambda v: jnp.stack([jnp.log(jnp.mean(v, (1, 2, 3)) - 2.0)] * 2, -1),
      input_shape=(8, 8, 1))
  with pytest.raises(ValueError, match='NaN or inf'):
    ltx.fit(0, nan_box, x, num_steps=1, **SMALL)
  e = ltx.fit(0, region_box, x, num_steps=2, **SMALL)
  # finite on x, NaN once pixels are removed: no step can be kept.
  half = bb.from_jax(
      lambda v: jnp.stack([jnp.log(jnp.mean(v, (1, 2, 3)) - 0.999)] * 2, -1),
      input_shape=(8, 8, 1))
  bright = jnp.ones((2, 8, 8, 1))
  with pytest.raises(ValueError, match='masked copies'):
    ltx.explain(e.replace(model=half), bright, finetune_steps=2)

