"""InputIBA: the prior KL, the critic, the batched three-stage pipeline."""

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

# every stage tiny: one GAN epoch of 2 batches, a few bottleneck steps
TINY = dict(feat_steps=10, input_steps=20, gan_samples=16, gan_groups=2,
            gan_batch=8, gan_epochs=2, critic_iters=1, num_noise=4,
            beta_input=1.0)


@pytest.fixture(scope='module')
def fitted(region_box):
  return input_iba.fit(0, region_box, region_data(128), **TINY)


def test_input_capacity_is_the_kl_to_the_gan_prior():
  lam = jnp.linspace(0.0, 0.95, 7)
  xn = jnp.full(7, 1.3)
  # g = 0: IBA's capacity; g = 1: the prior is the bottleneck itself
  np.testing.assert_allclose(input_iba.input_capacity(lam, xn, 0.0),
                             iba.capacity(lam, xn), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(input_iba.input_capacity(lam, xn, 1.0), 0.0,
                             atol=1e-6)
  np.testing.assert_allclose(input_iba.input_capacity(0.0, xn, 0.4), 0.0,
                             atol=1e-6)
  # closed form of KL[N(l x, (1-l)^2) || N(g l x, (1-g l)^2)]
  l, g, x = 0.7, 0.4, 1.3
  m1, s1, m2, s2 = l * x, 1 - l, g * l * x, 1 - g * l
  kl = np.log(s2 / s1) + (s1 ** 2 + (m1 - m2) ** 2) / (2 * s2 ** 2) - 0.5
  np.testing.assert_allclose(
      input_iba.input_capacity(jnp.float32(l), jnp.float32(x),
                               jnp.float32(g)), kl, rtol=1e-5)
  # the KL falls as the prior's keep rate g rises
  gs = jnp.linspace(0.0, 1.0, 6)
  d = np.asarray(input_iba.input_capacity(jnp.float32(0.8), 1.0, gs))
  assert np.all(np.diff(d) < 0)


@pytest.mark.parametrize('shape', [(5, 8, 8, 4), (5, 9, 3), (5, 12)])
def test_critic_scores_images_tokens_and_flat_latents(shape):
  h = jax.random.normal(jax.random.key(0), shape)
  c = input_iba.Critic(channels=shape[-1], spatial=len(shape) - 2)
  p = c.init(jax.random.key(1), h)
  out = c.apply(p, h)
  assert out.shape == (5,) and np.all(np.isfinite(out))


def test_region_gets_the_mask_and_stages_are_returned(fitted):
  x = region_data(4, seed=1).at[:, :4, :4, :].set(0.95)             # class 1
  out, stages = input_iba.explain(fitted, x, key=0, return_stages=True)
  s = np.asarray(out.scores)
  assert s.shape == (4, 8, 8)
  assert s.min() >= 0 and s.max() <= 1
  assert stages['iba'].shape == (4, 8, 8) and stages['gan'].shape == (4, 8, 8)
  inside = s[:, :4, :4].mean(axis=(1, 2))
  outside = s[:, 4:, :].mean(axis=(1, 2))
  # irrelevant pixels are noised away, the region kept
  assert np.all(inside > 2 * outside), (inside, outside)


def test_batched_equals_one_at_a_time_with_the_same_keys(fitted):
  e = fitted
  box = e.model
  x = region_data(4, seed=2)
  key = jax.random.key(3)
  out, st = input_iba.explain(e, x, key=key, target=1, return_stages=True)
  c = e.config
  head = lambda v: box.head(v).astype(jnp.float32)

  @jax.jit
  def one(xi, ki):
    k1, k2, k3 = jax.random.split(ki, 3)
    latent = head(xi[None])[0]
    cap = iba.bottleneck(
        k1, latent, jnp.int32(1), tail=box.tail, mean=e.mean, std=e.std,
        active=e.active, beta=c.beta_feat, num_steps=c.feat_steps,
        learning_rate=c.feat_lr, num_noise=c.num_noise,
        alpha_init=c.alpha_init, smooth_sigma=c.feat_smooth_sigma,
        relu=c.relu)
    bits = iba.capacity_map(cap[None], box.input_shape)[0]
    g = input_iba.gan_mask(
        k2, xi, latent, cap, bits[..., None], head=head,
        in_mean=e.input_mean, in_std=e.input_std, fixed=0,
        num_samples=c.gan_samples, num_groups=c.gan_groups,
        batch=c.gan_batch, epochs=c.gan_epochs, critic_iters=c.critic_iters,
        critic_lr=c.critic_lr, clip=c.critic_clip, lr_mask=c.gen_lr_mask,
        lr_mean=c.gen_lr_mean, lr_scale=c.gen_lr_scale,
        mu_range=c.real_mu_range, sigma_max=c.real_sigma_max)
    lam = input_iba.input_bottleneck(
        k3, xi, jnp.int32(1), g, apply=box, in_mean=e.input_mean,
        in_std=e.input_std, fixed=0, beta=c.beta_input,
        num_steps=c.input_steps, learning_rate=c.input_lr,
        num_noise=c.num_noise, alpha_init=c.alpha_init,
        smooth_sigma=c.input_smooth_sigma)
    return bits, g, lam

  for i, ki in enumerate(jax.random.split(key, 4)):
    bits, g, lam = one(x[i], ki)
    np.testing.assert_allclose(st['iba'][i], bits, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(st['gan'][i], g[..., 0], rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(out.scores[i], lam[..., 0], rtol=1e-3,
                               atol=1e-4)


def test_same_key_same_result_and_registered(fitted):
  x = region_data(4, seed=4)                 # the shapes compiled above
  a = input_iba.explain(fitted, x, key=5).scores
  np.testing.assert_array_equal(a, input_iba.explain(fitted, x, key=5).scores)
  assert xj.EXPLAINERS['input_iba'] is input_iba
  cfg = input_iba.default_config()
  assert (cfg.beta_feat, cfg.beta_input, cfg.input_steps, cfg.gan_epochs,
          cfg.critic_iters, cfg.gan_samples, cfg.gan_batch) == (
              20.0, 20.0, 60, 20, 5, 200, 32)


def test_text_embedding_view_keeps_the_pad_channel_and_maps_tokens():
  m = models.TextCNN(num_classes=2, vocab_size=30, embed_dim=6, filters=8,
                     hidden=8)
  t = jnp.asarray(np.random.RandomState(0).randint(0, 30, (40, 10)))
  t = t.at[:, 7:].set(0)                                    # padding
  v = m.init(jax.random.key(0), t)
  box = bb.from_linen(m, v, input_shape=(10,), input_dtype='int')
  view, to_input = models.embedding_blackbox(box, m, split_at='conv')
  z = to_input(t)
  e = input_iba.fit(0, view, z, mask_per_channel=False, fixed_channels=1,
                    **TINY)
  assert e.input_mean.shape == (6,)
  out = input_iba.explain(e, z[:3], key=1)
  assert out.scores.shape == (3, 10)
  assert np.all(np.isfinite(out.scores))
  # the noised inputs keep the PAD indicator: the view sees the same tokens
  lam = jnp.full((10, 1), 0.3)
  noised = input_iba._noised(z[:1], lam, jnp.ones((1, 10, 6)),  # pylint: disable=protected-access
                             e.input_mean, e.input_std, 1)
  np.testing.assert_array_equal(noised[..., -1], z[:1, :, -1])


def test_clear_errors(fitted, region_box):
  box = region_box
  plain = bb.from_jax(lambda x: x.reshape(x.shape[0], -1)[:, :2],
                      input_shape=(8, 8, 1))
  with pytest.raises(ValueError, match='split'):
    input_iba.fit(0, plain, region_data(8))
  m = models.TextCNN(num_classes=2, vocab_size=30, embed_dim=6, filters=8,
                     hidden=8)
  t = jnp.ones((4, 10), jnp.int32)
  tbox = bb.from_linen(m, m.init(jax.random.key(0), t), input_shape=(10,),
                       input_dtype='int', split_at='conv')
  with pytest.raises(ValueError, match='embedding_blackbox'):
    input_iba.fit(0, tbox, t)
  with pytest.raises(ValueError, match='fixed_channels'):
    input_iba.fit(0, box, region_data(8), fixed_channels=1)
  with pytest.raises(ValueError, match='gan_epochs'):
    input_iba.fit(0, box, region_data(8), gan_epochs=0)
  with pytest.raises(ValueError, match='beta_input'):
    input_iba.fit(0, box, region_data(8), beta_input=-1.0)
  with pytest.raises(ValueError, match='gan_stepz|valid|Unknown|unknown'):
    input_iba.fit(0, box, region_data(8), gan_stepz=3)
  with pytest.raises(ValueError, match='input_iba.fit'):
    input_iba.explain(iba.fit(0, box, region_data(8)), region_data(2))
  with pytest.raises(ValueError, match='target'):
    input_iba.explain(fitted, region_data(2), target=5)
  with pytest.raises(ValueError, match='x'):
    input_iba.explain(fitted, jnp.ones((2, 7, 7, 1)))
