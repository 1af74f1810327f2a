"""IBA: capacity, smoothing, estimation, the batched per-sample bottleneck."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import xai_jax as xj
from conftest import region_data
from xai_jax import blackbox as bb
from xai_jax import iba
from xai_jax import input_iba
from xai_jax import models


def test_capacity_is_zero_at_lambda_zero_and_grows_with_lambda():
  r = jnp.array([0.0, 0.5, -2.0])
  np.testing.assert_allclose(iba.capacity(jnp.zeros(3), r), 0.0, atol=1e-7)
  lams = jnp.linspace(0.0, 0.99, 12)[:, None]
  cap = np.asarray(iba.capacity(lams, r[None]))
  assert np.all(np.diff(cap, axis=0) > 0)
  # the closed form equals the KL of N(lam r, (1-lam)^2) to N(0, 1)
  lam, rr = 0.7, 1.3
  mu, s = lam * rr, 1 - lam
  kl = np.log(1 / s) + (s ** 2 + mu ** 2) / 2 - 0.5
  np.testing.assert_allclose(iba.capacity(jnp.float32(lam), jnp.float32(rr)),
                             kl, rtol=1e-5)


def test_smoothing_keeps_constants_and_mass():
  lam = jnp.full((6, 5, 3), 0.4)
  np.testing.assert_allclose(iba.smooth(lam, 1.0, 2), lam, atol=1e-6)
  spike = jnp.zeros((9, 9, 1)).at[4, 4, 0].set(1.0)
  out = iba.smooth(spike, 1.0, 2)
  np.testing.assert_allclose(out.sum(), 1.0, atol=1e-5)
  assert float(out[4, 4, 0]) < 1.0 and float(out[3, 4, 0]) > 0
  k = iba.gaussian_kernel(1.0)
  assert k.shape == (5,) and abs(k.sum() - 1) < 1e-6


def test_estimate_matches_numpy(region_box):
  box = region_box
  x = region_data(300)
  mean, std, active = iba.estimate(box, x, chunk_size=64)
  lat = np.asarray(box.head(x))
  np.testing.assert_allclose(mean, lat.mean(0), atol=1e-5)
  np.testing.assert_allclose(std, np.maximum(lat.std(0, ddof=1), 0.01),
                             rtol=1e-3, atol=1e-5)
  assert float(active.min()) == 1.0


def test_iba_puts_its_mass_on_the_deciding_region(region_box):
  # beta = 1: on this 256-feature toy the reference beta = 10 (on the mean
  # capacity) outweighs the cross-entropy everywhere in 10 steps.
  box = region_box
  e = iba.fit(0, box, region_data(256), beta=1.0)
  x = region_data(6, seed=1).at[:, :4, :4, :].set(0.95)             # class 1
  out = iba.explain(e, x, key=0)
  assert out.scores.shape == (6, 8, 8)
  s = np.asarray(out.scores)
  inside = s[:, :4, :4].mean(axis=(1, 2))
  outside = s[:, 4:, :].mean(axis=(1, 2))
  # per example the ratio varies with the noise draw (1.5x-15x over keys);
  # on average the region holds > 3x the heat of the rest, and more in
  # every example.
  assert inside.mean() > 3 * outside.mean(), (inside, outside)
  assert np.all(inside > 1.2 * outside), (inside, outside)


def test_batched_equals_one_at_a_time_with_the_same_keys(region_box):
  box = region_box
  e = iba.fit(0, box, region_data(128), num_steps=4)
  x = region_data(5, seed=2)
  key = jax.random.key(3)
  _, cap = iba.explain(e, x, key=key, target=1, return_capacity=True)
  keys = jax.random.split(key, 5)
  c = e.config
  for i in range(5):
    one = iba.bottleneck(
        keys[i], box.head(x[i:i + 1])[0], jnp.int32(1),
        tail=box.tail, mean=e.mean, std=e.std, active=e.active,
        beta=c.beta, num_steps=c.num_steps, learning_rate=c.learning_rate,
        num_noise=c.num_noise, alpha_init=c.alpha_init,
        smooth_sigma=c.smooth_sigma, relu=c.relu)
    np.testing.assert_allclose(cap[i], one, rtol=1e-4, atol=1e-5)


def test_same_key_same_result_and_registered(region_box):
  box = region_box
  e = xj.EXPLAINERS['iba'].fit(0, box, region_data(64), num_steps=2)
  x = region_data(3, seed=4)
  a = iba.explain(e, x, key=5).scores
  np.testing.assert_array_equal(a, iba.explain(e, x, key=5).scores)
  assert set(iba.default_config()) >= {'beta', 'num_steps', 'smooth_sigma'}


def test_clear_errors(region_box):
  box = region_box
  plain = bb.from_jax(lambda x: x.reshape(x.shape[0], -1)[:, :2],
                      input_shape=(8, 8, 1))
  with pytest.raises(ValueError, match='split'):
    iba.fit(0, plain, region_data(8))
  with pytest.raises(ValueError, match='betta'):
    iba.fit(0, box, region_data(8), betta=3)
  with pytest.raises(ValueError, match='iba.fit'):
    iba.explain(object(), region_data(2))
  e = iba.fit(0, box, region_data(8), num_steps=1)
  with pytest.raises(ValueError, match='target'):
    iba.explain(e, region_data(2), target=2)
  with pytest.raises(ValueError, match='x'):
    iba.explain(e, region_data(2).at[0, 0, 0, 0].set(jnp.nan))
  with pytest.raises(ValueError, match='cannot be laid'):
    iba.capacity_map(jnp.ones((1, 3, 2, 2, 4)), (8, 8, 1))


def test_layer_errors_name_the_layers_and_come_at_fit():
  cnn = models.CNN(num_classes=3, features=(4, 8), dense=8)
  v = cnn.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
  with pytest.raises(ValueError, match="'conv1', 'conv2', 'dense1'"):
    bb.from_linen(cnn, v, input_shape=(8, 8, 1), split_at='conv9')
  flat = bb.from_linen(cnn, v, input_shape=(8, 8, 1), split_at='dense1')
  for method in (iba, input_iba):
    with pytest.raises(ValueError, match='cannot be laid'):
      method.fit(0, flat, region_data(8))


def test_gaussian_noise_is_standard_normal_and_keyed():
  z = np.asarray(iba.gaussian_noise(jax.random.key(0), (200, 1000)))
  assert z.shape == (200, 1000) and z.dtype == np.float32
  assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01
  assert abs((z ** 4).mean() - 3) < 0.1                     # Gaussian tails
  np.testing.assert_allclose(np.mean(z < -1.96), 0.025, atol=0.002)
  assert abs(np.corrcoef(z.ravel()[:-1], z.ravel()[1:])[0, 1]) < 0.01
  w = np.asarray(iba.gaussian_noise(jax.random.key(1), (200, 1000)))
  assert abs(np.corrcoef(z.ravel(), w.ravel())[0, 1]) < 0.01
  np.testing.assert_array_equal(
      z, iba.gaussian_noise(jax.random.key(0), (200, 1000)))
