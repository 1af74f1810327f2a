"""InputIBA: an information bottleneck on the input with a learned prior.

Zhang, Khakzar, Li, Navab, Hofmann, Kim, "Fine-Grained Neural Network
Explanation by Identifying Input Features with Predictive Information",
NeurIPS 2021. IBA's Gaussian prior over-estimates the information at early
layers; InputIBA fits IBA deep in the network, learns an input mask whose
noised inputs reproduce that bottleneck, and uses it as the prior of an
input bottleneck. Per example, on a split black box (head = the model up to
the layer, tail = the rest):

1. Feature IBA (`iba.bottleneck`, reference beta = 20, 10 steps, no
   smoothing): the per-feature capacity c = D_KL at the layer.
2. A Wasserstein GAN (Arjovsky et al. 2017): the generator holds mask logits
   m (one per input pixel and channel, started at IBA's capacity map in bits
   per pixel) and a per-channel noise mean mu_G and scale s_G; its sample is
   head(sigmoid(m) x + (1 - sigmoid(m)) (s_G z + mu_G)), z ~ N(0, 1) in
   normalised input units. The critic (3 convolutions with batch statistics
   and a 3-layer MLP, weights clipped to +-0.01, RMSprop) tells it from
   "real" samples c R + (1 - c)(sigma_k n + mu_k) built from the clean latent
   R (10 groups with their own mu_k ~ U(-2, 2), sigma_k ~ U(0, 5); c the
   capacity, unbounded, as the reference). lambda_G = sigmoid(m).
3. The input bottleneck Z = lambda x + (1 - lambda) eps (eps ~ N(0, 1) in
   normalised input units; lambda = G * sigmoid(alpha), smoothing sigma 1)
   minimises CE(f(Z), y) + beta * mean D with the KL to the GAN prior (the
   same bottleneck at keep rate lambda_G lambda):

       r = (1 - g)(x - mu) / ((1 - g lambda) sigma),
       v = (1 - lambda)^2 / (1 - g lambda)^2,
       D = -1/2 [1 + log v - (lambda r)^2 - v]                  (Eq. 9)

   (g = lambda_G; g = 0 gives IBA's capacity). The attribution is
   sigmoid(alpha) after the last step, averaged over channels, in [0, 1].

Every stage is written for ONE example and the whole pipeline is vmapped
over the batch: each example keeps its own alpha, generator, critic and
optimiser states, and one jitted call explains a chunk of the batch (the
reference explains one image at a time).

    import xai_jax as xj
    box = xj.blackbox.from_linen(cnn, variables, input_shape=(28, 28, 1),
                                 split_at='conv2')
    explainer = xj.input_iba.fit(0, box, x_estimation)
    out = xj.input_iba.explain(explainer, x, key=1)   # out.scores [b, 28, 28]

Text: explain the embedding view, `view, to_input =
models.embedding_blackbox(box, module, split_at='conv')`, with
`mask_per_channel=False` (one lambda per token) and `fixed_channels=1` (the
view's PAD indicator channel passes through untouched); maps are `[b, L]`.
"""

from __future__ import annotations

import functools
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from xai_jax import _checks
from xai_jax import blackbox as bb
from xai_jax import iba
from xai_jax import nets
from xai_jax import protocol

Array = jax.Array


def default_config() -> ml_collections.ConfigDict:
  """InputIBA's hyper-parameters, at the reference values
  (CAMP-eXplain-AI/InputIBA, `configs/vgg_imagenet.py`).

  Fields (paper symbols in brackets):
    beta_feat: [beta] of the feature bottleneck, on the MEAN capacity (20).
    feat_steps, feat_lr: its Adam steps (10) and learning rate (1.0).
    feat_smooth_sigma: its smoothing (0: the reference does not smooth it).
    num_noise: noise copies per bottleneck step (the reference's batch 10).
    alpha_init: [alpha_0] of both bottlenecks (5).
    min_std, active_threshold, relu: the latent statistics as in IBA.
    gan_samples: "real" latent samples per example (200).
    gan_groups: groups of real samples sharing mu_k, sigma_k (10).
    gan_batch: GAN batch size (32).
    gan_epochs: epochs over the real samples (20; ceil(200 / 32) = 7
      batches each, the last wrapping around to the first samples).
    critic_iters: a generator step after batches whose index in the epoch
      is a multiple of this (5: 2 per epoch; 140 critic, 40 generator steps).
    critic_lr: RMSprop learning rate of the critic (5e-5).
    critic_clip: the critic's weights are clipped to +-this (0.01).
    gen_lr_mask, gen_lr_mean, gen_lr_scale: RMSprop learning rates of the
      generator's mask logits (0.003), noise mean mu_G (0.1) and scale
      s_G (0.05).
    real_mu_range: mu_k ~ U(-range, range) (2).
    real_sigma_max: sigma_k ~ U(0, max) (5).
    beta_input: [beta] of the input bottleneck, on the mean KL (20).
    input_steps, input_lr: its Adam steps (60) and learning rate (1.0).
    input_smooth_sigma: [sigma_s] its smoothing of sigmoid(alpha) (1).
    mask_per_channel: one lambda per input channel (images, as the
      reference) or one per position shared by the channels (text tokens).
    fixed_channels: the last this-many input channels pass through both
      the GAN and the input bottleneck untouched (1 for the text embedding
      view's PAD indicator).
    estimate_rows: rows of `fit`'s x used for the statistics (None: all).
    chunk_size: examples per jitted call of `explain` (None: 16).
    seed: the PRNG seed used when a key is None.
  """
  c = ml_collections.ConfigDict()
  c.beta_feat = 20.0            # beta (feature bottleneck, mean KL)
  c.feat_steps = 10
  c.feat_lr = 1.0
  c.feat_smooth_sigma = 0.0
  c.num_noise = 10
  c.alpha_init = 5.0            # alpha_0
  c.min_std = 0.01
  c.active_threshold = 0.01
  c.relu = False
  c.gan_samples = 200
  c.gan_groups = 10
  c.gan_batch = 32
  c.gan_epochs = 20
  c.critic_iters = 5
  c.critic_lr = 5e-5
  c.critic_clip = 0.01
  c.gen_lr_mask = 0.003
  c.gen_lr_mean = 0.1
  c.gen_lr_scale = 0.05
  c.real_mu_range = 2.0
  c.real_sigma_max = 5.0
  c.beta_input = 20.0           # beta (input bottleneck, mean KL)
  c.input_steps = 60
  c.input_lr = 1.0
  c.input_smooth_sigma = 1.0    # sigma_s
  c.mask_per_channel = True
  c.fixed_channels = 0
  c.estimate_rows = None
  c.chunk_size = None
  c.seed = 0
  return c


@flax.struct.dataclass
class InputIBAExplainer:
  """What `fit` returns.

  Attributes:
    model: the split `BlackBox` (float inputs).
    mean, std, active: `[*latent_shape]` latent statistics (as IBA).
    input_mean, input_std: `[channels]` per-channel mean and std of the
      estimation inputs: the normalisation in which the GAN's and the
      input bottleneck's noise is N(0, 1) (the reference works on
      normalised images).
    config: the merged config (static).
  """

  model: bb.BlackBox
  mean: Array
  std: Array
  active: Array
  input_mean: Array
  input_std: Array
  config: ml_collections.FrozenConfigDict = flax.struct.field(
      pytree_node=False)


# ------------------------------------------------------------------ critic
class _BatchStatNorm(nn.Module):
  """Batch normalisation with the batch's own statistics (training mode,
  as the reference critic runs), over every axis but the last."""

  @nn.compact
  def __call__(self, h: Array) -> Array:
    axes = tuple(range(h.ndim - 1))
    mu = jnp.mean(h, axes, keepdims=True)
    var = jnp.var(h, axes, keepdims=True)
    scale = self.param('scale', nn.initializers.ones, (h.shape[-1],))
    bias = self.param('bias', nn.initializers.zeros, (h.shape[-1],))
    return (h - mu) * jax.lax.rsqrt(var + 1e-5) * scale + bias


class Critic(nn.Module):
  """The WGAN critic of the reference (`vision_discriminator.py`) for a
  latent `[n, *spatial, C]`: Conv(2C, k4 s2 p1)-BN-LReLU(0.2), Conv(4C, k4
  s2 p1)-BN-LReLU, Conv(C, k3 s1 p1)-BN-LReLU over the spatial (or token)
  axes, then Dense(512)-LReLU-Dense(256)-LReLU-Dense(1). A flat latent
  skips the convolutions. Returns `[n]` scores. The convolutions are
  `nets.PatchConv` (the same function as `nn.Conv`, 4-9x faster gradients
  on XLA:CPU)."""

  channels: int
  spatial: int

  @nn.compact
  def __call__(self, h: Array) -> Array:
    c, s = self.channels, self.spatial
    act = lambda v: nn.leaky_relu(v, 0.2)
    if s:
      for f, k, stride in ((2 * c, 4, 2), (4 * c, 4, 2), (c, 3, 1)):
        h = nets.PatchConv(f, k, stride, padding=1)(h)
        h = act(_BatchStatNorm()(h))
    h = h.reshape((h.shape[0], -1))
    h = act(nn.Dense(512)(h))
    h = act(nn.Dense(256)(h))
    return nn.Dense(1)(h)[:, 0]


def _rmsprop(lr: float) -> optax.GradientTransformation:
  # PyTorch's RMSprop defaults (alpha 0.99, eps 1e-8 outside the sqrt).
  return optax.rmsprop(lr, decay=0.99, eps=1e-8, eps_in_sqrt=False)


# ------------------------------------------------------------ pure stages
def _split_channels(x: Array, fixed: int) -> tuple[Array, Array]:
  c = x.shape[-1] - fixed
  return x[..., :c], x[..., c:]


def _noised(x: Array, lam: Array, z: Array, in_mean: Array, in_std: Array,
            fixed: int) -> Array:
  """lam x + (1 - lam) eps with eps = in_mean + in_std z on the free
  channels; the fixed channels pass through."""
  free, keep = _split_channels(x, fixed)
  out = lam * free + (1.0 - lam) * (in_mean + in_std * z)
  if not fixed:
    return out
  keep = jnp.broadcast_to(keep, (*out.shape[:-1], keep.shape[-1]))
  return jnp.concatenate([out, keep], axis=-1)


def gan_mask(key: Array, x: Array, latent: Array, cap: Array,
             init_logits: Array, *, head: Any, in_mean: Array,
             in_std: Array, fixed: int, num_samples: int, num_groups: int,
             batch: int, epochs: int, critic_iters: int, critic_lr: float,
             clip: float, lr_mask: float, lr_mean: float, lr_scale: float,
             mu_range: float, sigma_max: float) -> Array:
  """Stage 2 for ONE example: the GAN mask lambda_G `[*mask_shape]`.

  Args:
    key: PRNG key.
    x: `[*input_shape]` the example.
    latent: `[*latent_shape]` its clean latent R = head(x).
    cap: `[*latent_shape]` the feature bottleneck's capacity c (nats).
    init_logits: `[*mask_shape]` initial mask logits m (mask_shape = the
      input's spatial shape and its free channels, or 1 channel).
    head: `latent = head(x[n, *input_shape])`.
    in_mean, in_std: `[free channels]` the input normalisation.
    fixed: input channels passed through untouched.
    (the rest: `default_config` fields.)
  Returns:
    sigmoid(m) after `epochs` epochs: `[*mask_shape]` in (0, 1).
  """
  k_group, k_real, k_init, k_epochs = jax.random.split(key, 4)
  # "real" samples: c R + (1 - c)(sigma_k n + mu_k), groups of samples
  km, ks = jax.random.split(k_group)
  mu_k = jax.random.uniform(km, (num_groups,), minval=-mu_range,
                            maxval=mu_range)
  sig_k = jax.random.uniform(ks, (num_groups,), maxval=sigma_max)
  group = jnp.arange(num_samples) * num_groups // num_samples
  shape_b = (num_samples,) + (1,) * latent.ndim
  n = iba.gaussian_noise(k_real, (num_samples, *latent.shape))
  real = cap * latent + (1.0 - cap) * (sig_k[group].reshape(shape_b) * n +
                                      mu_k[group].reshape(shape_b))

  critic = Critic(channels=latent.shape[-1], spatial=latent.ndim - 1)
  d_params = critic.init(k_init, real[:2])
  d_tx = _rmsprop(critic_lr)
  d_opt = d_tx.init(d_params)
  free_c = x.shape[-1] - fixed
  gen = {'m': init_logits, 'mu': jnp.zeros((free_c,), jnp.float32),
         's': jnp.ones((free_c,), jnp.float32)}
  g_tx = optax.multi_transform(
      {'m': _rmsprop(lr_mask), 'mu': _rmsprop(lr_mean),
       's': _rmsprop(lr_scale)}, {'m': 'm', 'mu': 'mu', 's': 's'})
  g_opt = g_tx.init(gen)
  per_epoch = -(-num_samples // batch)
  k_perm, k_z = jax.random.split(k_epochs)
  perms = jax.vmap(lambda k: jax.random.permutation(k, num_samples))(
      jax.random.split(k_perm, epochs))                       # [epochs, S]

  def fake(g, z):
    lam = jax.nn.sigmoid(g['m'])
    xm = _noised(x[None], lam, g['s'] * z + g['mu'], in_mean, in_std, fixed)
    return head(xm)

  def d_loss(dp, real_b, fake_b):
    return (-jnp.mean(critic.apply(dp, real_b)) +
            jnp.mean(critic.apply(dp, fake_b)))

  def g_loss(g, dp, z):
    return -jnp.mean(critic.apply(dp, fake(g, z)))

  def g_step(args):
    g, gopt, dp, z = args
    gg = jax.grad(g_loss)(g, dp, z)
    upd, gopt = g_tx.update(gg, gopt, g)
    return optax.apply_updates(g, upd), gopt

  def step(carry, i):
    dp, dopt, g, gopt = carry
    j = i % per_epoch
    idx = perms[i // per_epoch][(j * batch + jnp.arange(batch)) %
                                num_samples]
    z = iba.gaussian_noise(jax.random.fold_in(k_z, i),
                           (batch, *x.shape[:-1], free_c))
    fb = jax.lax.stop_gradient(fake(g, z))
    gd = jax.grad(d_loss)(dp, real[idx], fb)
    upd, dopt = d_tx.update(gd, dopt, dp)
    dp = jax.tree.map(lambda p: jnp.clip(p, -clip, clip),
                      optax.apply_updates(dp, upd))
    # a generator step after batches j = 0, critic_iters, ... of each epoch
    # (a real branch: gan_mask runs un-vmapped, one example at a time)
    g, gopt = jax.lax.cond(j % critic_iters == 0, g_step,
                           lambda a: (a[0], a[1]), (g, gopt, dp, z))
    return (dp, dopt, g, gopt), None

  (_, _, gen, _), _ = jax.lax.scan(step, (d_params, d_opt, gen, g_opt),
                                   jnp.arange(epochs * per_epoch))
  return jax.nn.sigmoid(gen['m'])


def input_capacity(lam: Array, xn: Array, prior: Array) -> Array:
  """The input bottleneck's KL per feature (nats), InputIBA Eq. 9.

  KL[N(lam xn, (1 - lam)^2) || N(g lam xn, (1 - g lam)^2)] with g = `prior`
  and xn the normalised input: the prior is the same bottleneck at keep
  rate g lam. g = 0 gives IBA's capacity (`iba.capacity(lam, xn)`); zero
  where lam = 0 or g = 1. Shapes broadcast.
  """
  one_minus = jnp.maximum(1.0 - lam, 1e-6)
  one_minus_g = jnp.maximum(1.0 - prior * lam, 1e-6)
  r = (1.0 - prior) * xn / one_minus_g
  v = (one_minus / one_minus_g) ** 2
  return -0.5 * (1.0 + jnp.log(v) - (lam * r) ** 2 - v)


def input_bottleneck(key: Array, x: Array, target: Array, prior: Array, *,
                     apply: Any, in_mean: Array, in_std: Array, fixed: int,
                     beta: float, num_steps: int, learning_rate: float,
                     num_noise: int, alpha_init: float, smooth_sigma: float
                     ) -> Array:
  """Stage 3 for ONE example: sigmoid(alpha) `[*mask_shape]` after
  `num_steps` Adam steps on

      mean_copies CE(f(Z), target) + beta * mean(input_capacity),
      Z = lam x + (1 - lam) eps,  lam = smooth(sigmoid(alpha)),

  eps ~ N(in_mean, in_std^2) per free channel (`iba.gaussian_noise`), the
  fixed channels untouched. `prior` (the GAN mask) broadcasts to the mask.
  """
  free, _ = _split_channels(x, fixed)
  xn = (free - in_mean) / in_std
  spatial = x.ndim - 1
  tx = optax.adam(learning_rate)
  alpha = jnp.full(prior.shape, alpha_init, jnp.float32)

  def loss(a, k):
    lam = iba.smooth(jax.nn.sigmoid(a), smooth_sigma, spatial)
    z = iba.gaussian_noise(k, (num_noise, *free.shape))
    logp = jax.nn.log_softmax(apply(_noised(x[None], lam, z, in_mean,
                                            in_std, fixed)), axis=-1)
    kl = input_capacity(lam, xn, prior)
    return -jnp.mean(logp[:, target]) + beta * jnp.mean(kl)

  def step(carry, k):
    a, opt = carry
    g = jax.grad(loss)(a, k)
    upd, opt = tx.update(g, opt, a)
    return (optax.apply_updates(a, upd), opt), None

  (alpha, _), _ = jax.lax.scan(step, (alpha, tx.init(alpha)),
                               jax.random.split(key, num_steps))
  return jax.nn.sigmoid(alpha)


# ------------------------------------------------------------------ protocol
def _check_config(cfg: ml_collections.ConfigDict) -> None:
  for name in ('beta_feat', 'beta_input', 'feat_lr', 'input_lr', 'min_std',
               'critic_lr', 'critic_clip', 'gen_lr_mask', 'gen_lr_mean',
               'gen_lr_scale'):
    _checks.check_positive(name, cfg[name])
  for name in ('feat_steps', 'input_steps', 'num_noise', 'gan_epochs',
               'critic_iters', 'gan_batch'):
    _checks.check_int(name, cfg[name])
  _checks.check_int('gan_groups', cfg.gan_groups)
  _checks.check_int('gan_samples', cfg.gan_samples, cfg.gan_groups)
  _checks.check_int('fixed_channels', cfg.fixed_channels, 0)
  for name in ('feat_smooth_sigma', 'input_smooth_sigma', 'real_mu_range',
               'real_sigma_max'):
    if cfg[name] < 0:
      raise ValueError(f'{name} must be >= 0, got {cfg[name]}.')


def _mask_shape(input_shape: tuple[int, ...], cfg: Any) -> tuple[int, ...]:
  free = input_shape[-1] - cfg.fixed_channels
  return (*input_shape[:-1], free if cfg.mask_per_channel else 1)


def fit(key: Any, model: bb.BlackBox, x: Any,
        config: protocol.ConfigLike = None, **overrides: Any
        ) -> InputIBAExplainer:
  """Estimates the latent statistics (as `iba.estimate`) and the per-channel
  input normalisation over `x`.

  Args:
    key: PRNG key or int seed (checked; the estimation is deterministic).
    model: a split `BlackBox` with float inputs `[*spatial, channels]`
      (images `[H, W, C]`; text: the embedding view of
      `models.embedding_blackbox(box, module, split_at=...)`).
    x: `[n, *input_shape]` estimation rows (n >= 2).
    config: fields of `default_config()`; `overrides` name fields too.
  Returns:
    an `InputIBAExplainer`.
  Raises:
    ValueError: a box without a split or with token inputs, a latent that
      cannot be laid on the input (`iba.capacity_map`), bad x, an unknown or
      invalid config field, `fixed_channels` leaving no channel.
  """
  cfg = protocol.merge_config(default_config(), config, overrides,
                              method='input_iba')
  _checks.as_key('key', key, default_seed=cfg.seed, method='input_iba')
  _check_config(cfg)
  iba.check_split_box(model)
  if model.input_dtype != 'float':
    raise ValueError('InputIBA needs float inputs; for a text model explain '
                     'its embedding view: models.embedding_blackbox(box, '
                     "module, split_at='conv').")
  if len(model.input_shape) < 2:
    raise ValueError(f'model.input_shape must be [*spatial, channels], got '
                     f'{model.input_shape}.')
  if cfg.fixed_channels >= model.input_shape[-1]:
    raise ValueError(f'fixed_channels={cfg.fixed_channels} leaves no input '
                     f'channel to mask (input_shape {model.input_shape}).')
  x = _checks.check_model_input(model, _checks.as_array('x', x), 'x')
  if cfg.estimate_rows is not None:
    x = x[:_checks.check_int('estimate_rows', cfg.estimate_rows, 2)]
  mean, std, active = iba.estimate(model, x, min_std=cfg.min_std,
                                   active_threshold=cfg.active_threshold,
                                   chunk_size=cfg.chunk_size)
  free, _ = _split_channels(jnp.asarray(x, jnp.float32), cfg.fixed_channels)
  axes = tuple(range(free.ndim - 1))
  in_mean = jnp.mean(free, axes)
  in_std = jnp.maximum(jnp.std(free, axes), 1e-6)
  return InputIBAExplainer(model=model, mean=mean, std=std, active=active,
                           input_mean=in_mean, input_std=in_std,
                           config=ml_collections.FrozenConfigDict(cfg))


def _settings(cfg: Any) -> tuple:
  names = ('beta_feat', 'feat_steps', 'feat_lr', 'feat_smooth_sigma',
           'num_noise', 'alpha_init', 'relu', 'gan_samples', 'gan_groups',
           'gan_batch', 'gan_epochs', 'critic_iters', 'critic_lr',
           'critic_clip', 'gen_lr_mask', 'gen_lr_mean', 'gen_lr_scale',
           'real_mu_range', 'real_sigma_max', 'beta_input', 'input_steps',
           'input_lr', 'input_smooth_sigma', 'mask_per_channel',
           'fixed_channels')
  return tuple((n, cfg[n]) for n in names)


@functools.partial(jax.jit, static_argnames=('settings', 'chunk'))
def _explain_core(e: InputIBAExplainer, x: Array, target: Array, keys: Array,
                  *, settings: tuple, chunk: int
                  ) -> tuple[Array, Array, Array]:
  s = dict(settings)
  box = e.model
  head = lambda v: box.head_fn(box.params, v).astype(jnp.float32)
  tail = lambda z: box.tail_fn(box.params, z)
  apply = lambda v: box.apply_fn(box.params, v)
  fixed = int(s['fixed_channels'])
  mask_shape = _mask_shape(box.input_shape, ml_collections.ConfigDict(s))

  def stage1(xi, ti, ki):
    latent = head(xi[None])[0]
    cap = iba.bottleneck(
        ki, latent, ti, tail=tail, mean=e.mean, std=e.std, active=e.active,
        beta=s['beta_feat'], num_steps=s['feat_steps'],
        learning_rate=s['feat_lr'], num_noise=s['num_noise'],
        alpha_init=s['alpha_init'], smooth_sigma=s['feat_smooth_sigma'],
        relu=s['relu'])
    return latent, cap

  def stage2(args):
    xi, latent, cap, init, ki = args
    return gan_mask(
        ki, xi, latent, cap, init, head=head, in_mean=e.input_mean,
        in_std=e.input_std, fixed=fixed, num_samples=s['gan_samples'],
        num_groups=s['gan_groups'], batch=s['gan_batch'],
        epochs=s['gan_epochs'], critic_iters=s['critic_iters'],
        critic_lr=s['critic_lr'], clip=s['critic_clip'],
        lr_mask=s['gen_lr_mask'], lr_mean=s['gen_lr_mean'],
        lr_scale=s['gen_lr_scale'], mu_range=s['real_mu_range'],
        sigma_max=s['real_sigma_max'])

  def stage3(xi, ti, g, ki):
    return input_bottleneck(
        ki, xi, ti, g, apply=apply, in_mean=e.input_mean,
        in_std=e.input_std, fixed=fixed, beta=s['beta_input'],
        num_steps=s['input_steps'], learning_rate=s['input_lr'],
        num_noise=s['num_noise'], alpha_init=s['alpha_init'],
        smooth_sigma=s['input_smooth_sigma'])

  def per_chunk(args):
    xs, ts, ks = args
    k = jax.vmap(lambda kk: jax.random.split(kk, 3))(ks)       # [c, 3]
    latent, cap = jax.vmap(stage1)(xs, ts, k[:, 0])
    bits = iba.capacity_map(cap, box.input_shape)
    init = jnp.broadcast_to(bits[..., None], (xs.shape[0], *mask_shape))
    # The GAN is FLOP-bound (vmapping gains nothing) and its generator
    # step is a branch, real only un-vmapped: examples run in sequence.
    g = jax.lax.map(stage2, (xs, latent, cap, init, k[:, 1]))
    lam = jax.vmap(stage3)(xs, ts, g, k[:, 2])
    return jnp.mean(lam, axis=-1), jnp.mean(g, axis=-1), bits

  return bb.map_batches(per_chunk, (x, target, keys), chunk)


def explain(explainer: InputIBAExplainer, x: Any, *, key: Any = None,
            target: Any = None, return_stages: bool = False
            ) -> protocol.Explanation | tuple[protocol.Explanation,
                                              dict[str, Array]]:
  """InputIBA attribution maps of `x`.

  Every example runs the three stages with its own parameters; the
  pipeline is vmapped within chunks of `chunk_size` examples; example i
  uses `jax.random.split(key, batch)[i]`.

  Args:
    explainer: from `fit`.
    x: `[batch, *input_shape]`.
    key: PRNG key or int seed (None: the config's seed).
    target: None (predicted class), an int, or int `[batch]`.
    return_stages: also return `{'iba': [batch, *spatial]` the feature
      bottleneck's capacity map in bits per pixel, `'gan': [batch,
      *spatial]` the GAN mask lambda_G averaged over channels}.
  Returns:
    `Explanation(scores)`: `[batch, *spatial]` (`[batch, H, W]` images,
    `[batch, L]` tokens), sigmoid(alpha) averaged over channels, in [0, 1].
  Raises:
    ValueError: an explainer not from `fit`, bad x or target.
  """
  e = explainer
  if not isinstance(e, InputIBAExplainer):
    raise ValueError('explainer must come from input_iba.fit (the latent '
                     'statistics are estimated there).')
  cfg = e.config
  x, t, keys = iba.prepare_explain(e.model, x, key, target, seed=cfg.seed,
                                   method='input_iba')
  n = x.shape[0]
  chunk = (_checks.check_chunk_size(cfg.chunk_size) if cfg.chunk_size
           else 16)
  lam, gan, bits = _explain_core(e, x, t, keys, settings=_settings(cfg),
                                 chunk=min(chunk, n))
  _checks.check_finite_outputs(lam, method='input_iba', where='x')
  out = protocol.Explanation(scores=lam)
  return (out, {'iba': bits, 'gan': gan}) if return_stages else out
