"""Tests for xai_jax.attribution.gradients: closed forms, IG quadrature,
SmoothGrad randomness, Grad-CAM, invariances and argument errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xai_jax import blackbox as bb
from xai_jax import models
from xai_jax.attribution import gradients as G

D, C = 5, 3


def init_numpy(module, input_shape, seed=0, **init_kw):
  """Variables of a linen module drawn with numpy (LeCun-normal kernels).

  Tracing `init` under `eval_shape` only gives shapes; filling them with numpy
  avoids compiling Flax's initializers (seconds each on a loaded CPU).
  """
  shapes = jax.eval_shape(module.init, jax.random.key(0),
                          jnp.ones((1, *input_shape)), **init_kw)
  rng = np.random.default_rng(seed)

  def fill(path, s):
    name = jax.tree_util.keystr(path)
    if 'kernel' in name:
      fan_in = int(np.prod(s.shape[:-1]))
      return jnp.asarray(rng.normal(0, fan_in ** -0.5, s.shape), s.dtype)
    return jnp.asarray(rng.normal(0, 0.1, s.shape), s.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.fixture(name='linear', scope='module')
def _linear():
  rng = np.random.default_rng(0)
  w = rng.normal(size=(D, C)).astype(np.float32)
  params = {'w': jnp.asarray(w), 'b': jnp.array([0.3, -0.2, 0.1])}
  box = bb.from_jax(lambda p, x: x @ p['w'] + p['b'], params=params,
                    input_shape=(D,), name='linear')
  x = jnp.asarray(rng.normal(size=(6, D)), jnp.float32)
  return box, w, x


@pytest.fixture(name='mlp', scope='module')
def _mlp():
  m = models.make_model('mlp', num_classes=C, hidden=(16, 16),
                        activation='tanh')
  v = init_numpy(m, (D,), seed=2)
  box = bb.from_linen(m, v, input_shape=(D,))
  x = jnp.asarray(2.0 * np.random.default_rng(3).normal(size=(8, D)),
                  jnp.float32)
  return box, x


# ------------------------------------------------------------ closed forms
def test_saliency_linear_is_abs_weight(linear):
  box, w, x = linear
  np.testing.assert_allclose(G.saliency(box, x, target=1),
                             np.broadcast_to(np.abs(w[:, 1]), x.shape),
                             rtol=1e-6)
  signed = G.saliency(box, x, target=2, absolute=False)
  np.testing.assert_allclose(signed, np.broadcast_to(w[:, 2], x.shape),
                             rtol=1e-6)
  # target=None is the predicted class.
  pred = np.argmax(np.asarray(x) @ w + np.array([0.3, -0.2, 0.1]), -1)
  np.testing.assert_allclose(G.saliency(box, x), np.abs(w[:, pred].T),
                             rtol=1e-6)


def test_grad_x_input_linear(linear):
  box, w, x = linear
  t = jnp.array([0, 1, 2, 0, 1, 2])
  np.testing.assert_allclose(G.grad_x_input(box, x, target=t),
                             w[:, t].T * np.asarray(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('rule', G.IG_RULES)
def test_ig_linear_zero_baseline_is_w_times_x(linear, rule):
  box, w, x = linear
  ig = G.integrated_gradients(box, x, target=1, steps=3, rule=rule)
  np.testing.assert_allclose(ig, w[:, 1] * np.asarray(x), rtol=1e-5,
                             atol=1e-6)


def test_ig_baselines_of_every_form(linear):
  box, w, x = linear
  ref = jnp.asarray(np.random.default_rng(5).normal(size=D), jnp.float32)
  expected = w[:, 0] * (np.asarray(x) - np.asarray(ref))
  for baseline in (ref, jnp.broadcast_to(ref, x.shape)):
    np.testing.assert_allclose(
        G.integrated_gradients(box, x, target=0, baseline=baseline, steps=4),
        expected, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(
      G.integrated_gradients(box, x, target=0, baseline=0.5, steps=4),
      w[:, 0] * (np.asarray(x) - 0.5), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(
      G.integrated_gradients(box, x, target=0, baseline='reference',
                             reference=ref, steps=4),
      expected, rtol=1e-4, atol=1e-5)


def test_ig_quadrature_rules():
  for rule in G.IG_RULES:
    a, w = G.ig_quadrature(rule, 7)
    assert a.shape == w.shape == (7,)
    assert np.all((a >= 0) & (a <= 1))
    np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-12)
  # Gauss-Legendre with m nodes integrates degree 2m - 1 exactly.
  a, w = G.ig_quadrature('gauss_legendre', 4)
  np.testing.assert_allclose(np.sum(w * a ** 7), 1 / 8, rtol=1e-12)


# ---------------------------------------------------------- IG completeness
def test_ig_completeness_shrinks_with_steps_and_gauss_legendre_wins(mlp):
  box, x = mlp
  err = {}
  for rule in ('riemann_trapezoid', 'riemann_middle', 'riemann_left',
               'gauss_legendre'):
    for steps in (4, 16):   # the rules share one compiled core per steps
      ig = G.integrated_gradients(box, x, steps=steps, rule=rule)
      err[rule, steps] = float(jnp.mean(G.ig_completeness_error(box, x, ig)))
  for rule in ('riemann_trapezoid', 'riemann_middle', 'riemann_left'):
    assert err[rule, 16] < 0.5 * err[rule, 4], err
    assert err['gauss_legendre', 4] < err[rule, 4], err
    assert err['gauss_legendre', 16] < err[rule, 16], err
  assert err['gauss_legendre', 16] < 1e-4, err
  # Completeness in probability space, too.
  ig = G.integrated_gradients(box, x, steps=16, rule='gauss_legendre',
                              space='probs', target=0)
  gap = G.ig_completeness_error(box, x, ig, 'zero', 0, space='probs')
  assert gap.shape == (x.shape[0],) and float(jnp.max(gap)) < 1e-4


def test_ig_chunk_size_does_not_change_result(mlp):
  box, x = mlp
  a = G.integrated_gradients(box, x, steps=16, rule='riemann_middle')
  b = G.integrated_gradients(box, x, steps=16, rule='riemann_middle',
                             chunk_size=24)   # 3 path points per example
  np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- smoothgrad
def test_smoothgrad_key_semantics(mlp):
  box, x = mlp
  a = G.smoothgrad(box, x, key=jax.random.key(0), num_samples=4)
  b = G.smoothgrad(box, x, key=jax.random.key(0), num_samples=4)
  c = G.smoothgrad(box, x, key=jax.random.key(1), num_samples=4)
  np.testing.assert_array_equal(a, b)
  assert float(jnp.max(jnp.abs(a - c))) > 1e-4
  # Legacy uint32 keys are accepted.
  np.testing.assert_array_equal(
      G.smoothgrad(box, x, key=jax.random.PRNGKey(0), num_samples=4), a)
  # An int seed is jax.random.key(seed).
  np.testing.assert_array_equal(
      G.smoothgrad(box, x, key=0, num_samples=4), a)
  with pytest.raises(ValueError, match='key'):
    G.smoothgrad(box, x, key=-1, num_samples=4)


def test_smoothgrad_limits(linear, mlp):
  box, w, x = linear
  # Gradient of a linear model is constant: SmoothGrad = w whatever the noise.
  np.testing.assert_allclose(
      G.smoothgrad(box, x, target=1, key=jax.random.key(0), num_samples=4),
      np.broadcast_to(w[:, 1], x.shape), rtol=1e-5)
  np.testing.assert_allclose(
      G.smoothgrad(box, x, target=1, key=jax.random.key(0), num_samples=4,
                   square=True),
      np.broadcast_to(w[:, 1] ** 2, x.shape), rtol=1e-5)
  mbox, mx = mlp
  # noise_level=0 is the plain gradient.
  np.testing.assert_allclose(
      G.smoothgrad(mbox, mx, key=jax.random.key(0), num_samples=4,
                   noise_level=0.0),
      G.saliency(mbox, mx, absolute=False), rtol=1e-5, atol=1e-7)
  sq = G.smoothgrad(mbox, mx, key=jax.random.key(0), num_samples=4,
                    square=True)
  assert bool(jnp.all(sq >= 0))


# ------------------------------------------------------------------- gradcam
class _GapNet(nn.Module):
  """conv (split, same spatial size) -> ReLU -> global average pool -> dense."""

  @nn.compact
  def __call__(self, x):
    a = nn.Conv(4, (3, 3), name='conv')(x)
    return nn.Dense(C, name='head')(jnp.mean(nn.relu(a), axis=(1, 2)))


def _cam_net():
  m = _GapNet()
  v = init_numpy(m, (8, 8, 1))
  return m, v, bb.from_linen(m, v, input_shape=(8, 8, 1), split_at='conv')


def test_gradcam_on_models_cnn_shape_and_sign():
  m = models.make_model('cnn', num_classes=C, features=(4, 8), dense=16)
  v = init_numpy(m, (8, 8, 1))
  box = bb.from_linen(m, v, input_shape=(8, 8, 1), split_at='conv2')
  assert box.latent_shape == (4, 4, 8)
  x = jnp.asarray(np.random.default_rng(1).uniform(size=(3, 8, 8, 1)),
                  jnp.float32)
  flat = G.gradcam(box, x, keep_channels=False)
  assert flat.shape == (3, 8, 8)
  assert bool(jnp.all(flat >= 0)) and bool(jnp.all(jnp.isfinite(flat)))
  assert float(flat.max()) > 0
  cam = G.gradcam(box, x)  # same compiled core; map repeated over channels
  assert cam.shape == x.shape
  np.testing.assert_array_equal(cam[..., 0], flat)


def test_gradcam_equals_cam_for_gap_network():
  # For conv -> GAP -> linear, Grad-CAM (Eq. 1-2) is CAM (Zhou et al. 2016)
  # up to 1/Z: alpha_k = w_kc / (h w) wherever the ReLU is active.
  m, v, box = _cam_net()
  x = jnp.asarray(np.random.default_rng(3).uniform(size=(2, 8, 8, 1)),
                  jnp.float32)
  cam = np.asarray(G.gradcam(box, x, target=2, keep_channels=False))
  # alpha_k = mean_ij d(mean_ij ReLU(A) @ w)/dA_ij = w_k2 * frac_active / 64.
  a = np.asarray(jax.jit(box.head)(x))                          # [2, 8, 8, 4]
  w_head = np.asarray(v['params']['head']['kernel'])             # [4, C]
  alpha = w_head[:, 2] * (a > 0).mean(axis=(1, 2)) / 64          # [2, 4]
  np.testing.assert_allclose(
      cam, np.maximum(np.einsum('bhwk,bk->bhw', a, alpha), 0), rtol=1e-4,
      atol=1e-6)


def test_gradcam_concentrates_on_the_pattern():
  # A detector of bright pixels: the target logit is the mean of ReLU(x - .5);
  # an image that is bright only in its top-left quadrant gets its Grad-CAM
  # mass there.
  class Detector(nn.Module):

    @nn.compact
    def __call__(self, x):
      a = nn.Conv(1, (1, 1), name='conv')(x)  # kernel 1, bias -0.5
      s = jnp.mean(nn.relu(a), axis=(1, 2))
      return jnp.concatenate([s, -s], axis=-1)

  m = Detector()
  v = {'params': {'conv': {'kernel': jnp.ones((1, 1, 1, 1)),
                           'bias': jnp.full((1,), -0.5)}}}
  box = bb.from_linen(m, v, input_shape=(8, 8, 1), split_at='conv')
  x = 0.3 * np.random.default_rng(1).uniform(size=(2, 8, 8, 1))
  x[:, :4, :4] += 0.6
  x = jnp.asarray(x, jnp.float32)
  cam = G.gradcam(box, x, target=0, keep_channels=False)
  inside = cam[:, :4, :4].sum(axis=(1, 2))
  total = cam.sum(axis=(1, 2))
  assert bool(jnp.all(inside / total > 0.9)), inside / total


def test_gradcam_errors(linear):
  box, _, x = linear
  with pytest.raises(ValueError, match='split'):
    G.gradcam(box, x)
  m = models.make_model('mlp', num_classes=C, hidden=(8,))
  v = init_numpy(m, (D,))
  split_mlp = bb.from_linen(m, v, input_shape=(D,), split_at='dense0')
  with pytest.raises(ValueError, match='image'):
    G.gradcam(split_mlp, x)


# -------------------------------------------------------------- invariances
_METHODS = {
    'saliency': lambda b, x: G.saliency(b, x),
    'grad_x_input': lambda b, x: G.grad_x_input(b, x),
    'integrated_gradients': lambda b, x: G.integrated_gradients(b, x, steps=8),
    'smoothgrad': lambda b, x: G.smoothgrad(b, x, key=jax.random.key(4),
                                            num_samples=4),
}
# Methods with chunked loops inside: also check per-example vmap (batch of 1
# under vmap == the batched result, i.e. no dependence on batch composition).
_VMAP_CHECKED = ('integrated_gradients', 'smoothgrad')


@pytest.mark.parametrize('name', sorted(_METHODS))
def test_batch_order_and_jit(mlp, name):
  box, x = mlp
  fn = _METHODS[name]
  base = fn(box, x)
  assert base.shape == x.shape
  perm = np.array([3, 0, 7, 1, 6, 2, 5, 4])
  np.testing.assert_allclose(fn(box, x[perm]), base[perm], rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(jax.jit(fn)(box, x), base, rtol=1e-5, atol=1e-6)
  if name in _VMAP_CHECKED:
    per_example = jax.vmap(lambda xi: fn(box, xi[None])[0])(x)
    np.testing.assert_allclose(per_example, base, rtol=1e-5, atol=1e-6)


def test_compiled_once_per_shape(mlp):
  box, x = mlp
  G.integrated_gradients(box, x, steps=16)
  n = G._ig_core._cache_size()
  # New parameters, new values, another rule: no new compile.
  new_params = jax.tree.map(lambda p: p * 1.1, box.params)
  G.integrated_gradients(box.with_params(new_params), x + 1.0, steps=16,
                         rule='gauss_legendre')
  assert G._ig_core._cache_size() == n
  # An explicit target array is one more trace, whatever its values.
  G.integrated_gradients(box, x, steps=16, target=jnp.zeros(8, jnp.int32))
  G.integrated_gradients(box, x, steps=16, target=jnp.ones(8, jnp.int32))
  assert G._ig_core._cache_size() <= n + 1


def test_plain_callable_model(linear):
  _, w, x = linear
  got = G.saliency(lambda z: z @ jnp.asarray(w), x, target=0)
  np.testing.assert_allclose(got, np.broadcast_to(np.abs(w[:, 0]), x.shape),
                             rtol=1e-6)


# -------------------------------------------------------------------- errors
def test_gradient_methods_reject_numpy_box(linear):
  _, w, x = linear
  nbox = bb.from_numpy(lambda z: z @ w, input_shape=(D,), output_shape=(C,),
                       output='logits')
  for call in (lambda: G.saliency(nbox, x),
               lambda: G.grad_x_input(nbox, x),
               lambda: G.integrated_gradients(nbox, x),
               lambda: G.smoothgrad(nbox, x, key=jax.random.key(0))):
    with pytest.raises(bb.NotDifferentiableError, match='occlusion'):
      call()


def test_argument_errors(linear):
  box, _, x = linear
  with pytest.raises(ValueError, match='baseline'):
    G.integrated_gradients(box, x, baseline=jnp.zeros((D + 1,)))
  with pytest.raises(ValueError, match='baseline'):
    G.integrated_gradients(box, x, baseline=jnp.zeros((2, D)))
  with pytest.raises(ValueError, match='baseline'):
    G.integrated_gradients(box, x, baseline='gray')
  with pytest.raises(ValueError, match='x contains NaN'):
    G.saliency(box, x.at[0, 0].set(jnp.nan))
  with pytest.raises(ValueError, match='x must have'):
    G.saliency(box, x[:, :3])
  with pytest.raises(ValueError, match='key'):
    G.smoothgrad(box, x)
  with pytest.raises(ValueError, match='target'):
    G.saliency(box, x, target=C)
  with pytest.raises(ValueError, match='target'):
    G.saliency(box, x, target=jnp.zeros(2, jnp.int32))
  with pytest.raises(ValueError, match='rule'):
    G.integrated_gradients(box, x, rule='simpson')
  with pytest.raises(ValueError, match='steps'):
    G.integrated_gradients(box, x, steps=0)
  with pytest.raises(ValueError, match='space'):
    G.saliency(box, x, space='logits')
  with pytest.raises(ValueError, match='noise_level'):
    G.smoothgrad(box, x, key=jax.random.key(0), noise_level=-1.0)
  with pytest.raises(ValueError, match='attributions'):
    G.ig_completeness_error(box, x, jnp.zeros((1, D)))
  tokens = bb.from_jax(lambda t: jax.nn.one_hot(t[:, 0], C), input_shape=(4,),
                       input_dtype='int')
  with pytest.raises(ValueError, match='token'):
    G.saliency(tokens, jnp.zeros((2, 4), jnp.int32))
