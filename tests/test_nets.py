"""Tests of xai_jax.nets: explainer selectors and approximators."""

from __future__ import annotations

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

from xai_jax import masking  # pylint: disable=g-import-not-at-top
from xai_jax import nets  # pylint: disable=g-import-not-at-top

KEY = jax.random.key(0)


def _apply(module, variables, *args, **kw):
  """`module.apply` under one jit (eager linen applies compile op by op)."""
  return jax.jit(lambda v, *a: module.apply(v, *a, **kw))(variables, *args)


def _apply_sel(module, x, **kw):
  params = nets.init_selector(module, KEY, x)
  return params, _apply(module, {'params': params}, x, **kw)


def _apply_app(module, x, mask, **kw):
  params, state = nets.init_approximator(module, KEY, x, mask)
  return params, state, _apply(module, {'params': params, **state}, x, mask,
                               **kw)


# ----------------------------------------------------------------- tabular


@pytest.mark.parametrize('activation', ['relu', 'selu'])
def test_mlp_selector_shapes_and_layers(activation):
  sel = nets.MLPSelector(num_groups=10, activation=activation)
  x = jax.random.normal(KEY, (7, 10))
  params, logits = _apply_sel(sel, x)
  assert logits.shape == (7, 10)
  assert params['hidden0']['kernel'].shape == (10, 100)
  assert params['hidden1']['kernel'].shape == (100, 100)
  assert params['logits']['kernel'].shape == (100, 10)
  assert np.all(np.isfinite(logits))


def test_mlp_approximator_is_blind_to_masked_features():
  app = nets.MLPApproximator(num_classes=3)
  x = jax.random.normal(KEY, (6, 10))
  mask = jnp.zeros((6, 10)).at[:, :3].set(1.0)
  x2 = x.at[:, 3:].set(123.0)  # change only the masked-out features
  params, state, out = _apply_app(app, x, mask)
  out2 = _apply(app, {'params': params, **state}, x2, mask)
  assert out.shape == (6, 3)
  np.testing.assert_allclose(out, out2, rtol=1e-6, atol=1e-6)
  assert set(state) == {'batch_stats'}


def test_marginal_imputing_approximator_fills_from_the_previous_row():
  app = nets.MarginalImputingApproximator(num_classes=2, hidden=(8,))
  x = jax.random.normal(KEY, (5, 6))
  mask = jnp.zeros((5, 6)).at[:, :2].set(1.0)
  seen = app.masked_input(x, mask)
  np.testing.assert_allclose(seen[:, :2], x[:, :2])
  np.testing.assert_allclose(seen[:, 2:], jnp.roll(x, 1, axis=0)[:, 2:])
  # Same nets and parameter tree as MLPApproximator; only the input differs.
  params, state, out = _apply_app(app, x, mask)
  plain = nets.MLPApproximator(num_classes=2, hidden=(8,))
  want = _apply(plain, {'params': params, **state}, seen, jnp.ones_like(x))
  np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-6)
  assert nets.MarginalImputingApproximator.l2_layers == (
      nets.MLPApproximator.l2_layers)


def test_mlp_approximator_batchnorm_train_updates_stats():
  app = nets.MLPApproximator(num_classes=2)
  x = 3.0 + jax.random.normal(KEY, (64, 10))
  mask = jnp.ones_like(x)
  params, state = nets.init_approximator(app, KEY, x, mask)
  _, new_state = _apply(app, {'params': params, **state}, x, mask,
                        train=True, mutable=['batch_stats'])
  before = jax.tree.leaves(state)
  after = jax.tree.leaves(new_state)
  assert any(not np.allclose(a, b) for a, b in zip(before, after))


def test_l2_penalty_sums_listed_kernels_only():
  sel = nets.MLPSelector(num_groups=4, hidden=(5, 6))
  params = nets.init_selector(sel, KEY, jnp.zeros((2, 4)))
  want = (np.sum(np.square(params['hidden0']['kernel']))
          + np.sum(np.square(params['hidden1']['kernel'])))
  np.testing.assert_allclose(nets.l2_penalty(sel, params), want, rtol=1e-6)
  app = nets.MLPApproximator(num_classes=2, hidden=(5,))
  ap, _ = nets.init_approximator(app, KEY, jnp.zeros((2, 4)),
                                 jnp.ones((2, 4)))
  want = (np.sum(np.square(ap['hidden0']['kernel']))
          + np.sum(np.square(ap['head']['kernel'])))
  np.testing.assert_allclose(nets.l2_penalty(app, ap), want, rtol=1e-6)
  assert float(nets.l2_penalty(nets.ConvApproximator(2), {})) == 0.0


def test_selu_matches_flax_values_and_gradients():
  x = jnp.concatenate([jnp.linspace(-30.0, 8.0, 2001), jnp.zeros(1),
                       jnp.array([-1e-7, 1e-7, 80.0])])
  np.testing.assert_allclose(nets.selu(x), jax.nn.selu(x), rtol=1e-6,
                             atol=1e-7)
  grad = jax.vmap(jax.grad(nets.selu))(x)
  ref = jax.vmap(jax.grad(jax.nn.selu))(x)
  np.testing.assert_allclose(grad, ref, rtol=1e-6, atol=1e-6)
  assert np.all(np.isfinite(grad))
  # Second derivative (through the custom rule): scale * alpha * exp(x) on
  # the left, 0 on the right.
  g2 = jax.vmap(jax.grad(jax.grad(nets.selu)))(jnp.array([-2.0, -0.5, 3.0]))
  want = 1.0507009873554805 * 1.6732632423543772 * np.exp([-2.0, -0.5])
  np.testing.assert_allclose(g2[:2], want, rtol=1e-5)
  assert float(g2[2]) == 0.0
  assert nets.ACTIVATIONS['selu'] is nets.selu


def test_unknown_activation_raises():
  with pytest.raises(ValueError, match='activation'):
    nets.make_selector('tabular', num_groups=3, activation='swish_nope')


# ------------------------------------------------------------------ images


def test_patch_selector_one_logit_per_patch():
  groups = masking.patch_groups((28, 28, 1), 4)
  sel = nets.make_selector('image', num_groups=49, groups=groups,
                           features=(4,), context=8)
  assert isinstance(sel, nets.PatchSelector) and sel.patch == (4, 4)
  x = jax.random.uniform(KEY, (3, 28, 28, 1))
  _, logits = _apply_sel(sel, x)
  assert logits.shape == (3, 49)


def test_patch_selector_logits_follow_the_grid_order():
  # Without pixel convs and grid context, a cell's logit is an affine function
  # of its own patch's mean: lighting patch g changes logit g only, so the
  # logits are in the (row-major) group order of masking.patch_groups.
  groups = masking.patch_groups((8, 12, 1), 4)  # 2 x 3 grid
  sel = nets.PatchSelector(patch=(4, 4), features=(), context=0)
  x = jnp.zeros((1, 8, 12, 1))
  params = nets.init_selector(sel, KEY, x)
  fn = jax.jit(lambda p, x: sel.apply({'params': p}, x))
  base = np.asarray(fn(params, x))
  assert base.shape == (1, groups.num_groups)
  for g in range(groups.num_groups):
    lit = jnp.where(groups.assignment[None] == g, 1.0, x)
    diff = np.asarray(fn(params, lit)) - base
    changed = np.flatnonzero(np.abs(diff[0]) > 1e-6)
    assert changed.tolist() == [g]


def test_patch_selector_rejects_non_dividing_patch():
  sel = nets.PatchSelector(patch=(5, 5), features=(2,), context=2)
  with pytest.raises(ValueError, match='patch'):
    nets.init_selector(sel, KEY, jnp.zeros((1, 28, 28, 1)))


def test_image_selector_needs_patch_groups():
  with pytest.raises(ValueError, match='patch groups'):
    nets.make_selector('image', num_groups=10,
                       groups=masking.feature_groups((10,)))


def test_conv_approximator_is_blind_to_masked_pixels():
  app = nets.make_approximator('image', num_classes=4, features=(4, 8),
                               dense=16)
  x = jax.random.uniform(KEY, (2, 28, 28, 1))
  groups = masking.patch_groups((28, 28, 1), 4)
  gmask = jnp.zeros((2, 49)).at[:, [0, 10, 48]].set(1.0)
  mask = groups.expand(gmask)
  x2 = jnp.where(mask > 0, x, 7.0)
  params, state, out = _apply_app(app, x, mask)
  out2 = _apply(app, {'params': params, **state}, x2, mask)
  assert out.shape == (2, 4)
  np.testing.assert_allclose(out, out2, rtol=1e-5, atol=1e-5)


def _linear_box(output='logits', d=6, c=3):
  from xai_jax import blackbox as bb  # pylint: disable=g-import-not-at-top
  w = jax.random.normal(KEY, (d, c))
  fn = {'logits': lambda p, v: v @ p,
        'probs': lambda p, v: jax.nn.softmax(v @ p),
        'log_probs': lambda p, v: jax.nn.log_softmax(v @ p)}[output]
  return bb.BlackBox(apply_fn=fn, params=w, input_shape=(d,), output=output,
                     num_outputs=c)


@pytest.mark.parametrize('output', ['logits', 'probs', 'log_probs'])
def test_blackbox_approximator_is_the_box_on_the_masked_input(output):
  box = _linear_box(output)
  module, state = nets.blackbox_approximator(box)
  x = jax.random.normal(jax.random.key(1), (5, 6))
  mask = (jax.random.uniform(jax.random.key(2), (5, 6)) > 0.5).astype(
      jnp.float32)
  params, init_state = nets.init_approximator(module, KEY, x, mask)
  assert params == {} and init_state == {}  # nothing to train
  out = _apply(module, {'params': params, **state}, x, mask)
  want = jax.nn.log_softmax(x * mask @ box.params)
  np.testing.assert_allclose(jax.nn.log_softmax(out), want, atol=1e-5)
  # Masked-out features do not matter; the box's gradient reaches the mask.
  x2 = jnp.where(mask > 0, x, 9.0)
  np.testing.assert_allclose(
      _apply(module, {'params': params, **state}, x2, mask), out, atol=1e-5)
  g = jax.grad(lambda m: module.apply({'params': {}, **state}, x, m)[:, 0]
               .sum())(mask)
  assert float(jnp.abs(g).sum()) > 0
  with pytest.raises(ValueError, match="in the 'box' collection"):
    module.apply({'params': {}}, x, mask)


def test_blackbox_approximator_rejects_token_and_regression_boxes():
  from xai_jax import blackbox as bb  # pylint: disable=g-import-not-at-top
  text = bb.BlackBox(apply_fn=lambda p, v: jnp.zeros((v.shape[0], 2)),
                     params=None, input_shape=(7,), output='logits',
                     num_outputs=2, input_dtype='int')
  with pytest.raises(ValueError, match='token ids'):
    nets.blackbox_approximator(text)
  reg = _linear_box().replace(output='regression')
  with pytest.raises(ValueError, match='distribution'):
    nets.blackbox_approximator(reg)
  with pytest.raises(ValueError, match='differentiable'):
    nets.blackbox_approximator(_linear_box().replace(differentiable=False))
  with pytest.raises(ValueError, match='needs a xai_jax BlackBox'):
    nets.blackbox_approximator(lambda v: v)


# -------------------------------------------------------------------- text


def test_text_selector_shapes_and_pad_logits():
  sel = nets.make_selector('text', num_groups=12, vocab_size=30)
  tokens = jnp.array([[5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0, 0],
                      [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]], jnp.int32)
  _, logits = _apply_sel(sel, tokens)
  assert logits.shape == (2, 12)
  assert np.all(np.asarray(logits[0, 4:]) == nets.PAD_LOGIT)
  assert np.all(np.asarray(logits[0, :4]) > nets.PAD_LOGIT / 2)
  # PAD is never among the top-k while a row has >= k real tokens.
  top = np.argsort(-np.asarray(logits[0]))[:3]
  assert np.all(top < 4)


def test_text_selector_dropout_only_in_training():
  sel = nets.TextSelector(vocab_size=20, dropout=0.5)
  tokens = jax.random.randint(KEY, (2, 9), 1, 20)
  params = nets.init_selector(sel, KEY, tokens)
  fn = jax.jit(lambda p, t, key, train: sel.apply(
      {'params': p}, t, train=train, rngs={'dropout': key}),
               static_argnames='train')
  a = fn(params, tokens, jax.random.key(3), False)
  b = fn(params, tokens, jax.random.key(4), False)
  np.testing.assert_array_equal(a, b)
  c = fn(params, tokens, jax.random.key(3), True)
  assert not np.allclose(a, c)


def test_text_approximator_mean_over_k_and_mask():
  app = nets.make_approximator('text', num_classes=2, k=2, vocab_size=30)
  tokens = jnp.array([[3, 4, 5, 0], [3, 9, 9, 9]], jnp.int32)
  mask = jnp.array([[1., 0., 0., 1.], [1., 0., 0., 0.]])
  params, state, out = _apply_app(app, tokens, mask)
  assert state == {}
  assert out.shape == (2, 2)
  # Row 0 keeps token 3 and a PAD (which embeds to zero), row 1 only token 3:
  # the same pooled embedding, so the same logits.
  np.testing.assert_allclose(out[0], out[1], rtol=1e-6, atol=1e-6)
  emb = params['embed']['embedding']
  h = emb[3] / 2.0  # sum / k
  h = jax.nn.relu(h @ params['hidden0']['kernel'] + params['hidden0']['bias'])
  want = h @ params['head']['kernel'] + params['head']['bias']
  np.testing.assert_allclose(out[1], want, rtol=1e-5, atol=1e-6)


def test_text_factories_need_vocab_and_k():
  with pytest.raises(ValueError, match='vocab_size'):
    nets.make_selector('text', num_groups=5)
  with pytest.raises(ValueError, match='k'):
    nets.make_approximator('text', num_classes=2, vocab_size=10)


def test_unknown_modality_raises():
  with pytest.raises(ValueError, match='modality'):
    nets.make_selector('audio', num_groups=3)
  with pytest.raises(ValueError, match='modality'):
    nets.make_approximator('audio', num_classes=3)


def test_selector_jit_equals_eager():
  sel = nets.MLPSelector(num_groups=10)
  x = jax.random.normal(KEY, (5, 10))
  params = nets.init_selector(sel, KEY, x)
  with jax.disable_jit():
    eager = sel.apply({'params': params}, x)
  jitted = jax.jit(lambda p, x: sel.apply({'params': p}, x))(params, x)
  np.testing.assert_allclose(eager, jitted, rtol=1e-5, atol=1e-6)


def test_int_seed_equals_its_key():
  sel = nets.MLPSelector(4, hidden=(8,))
  x = jnp.zeros((2, 4))
  a = nets.init_selector(sel, 3, x)
  b = nets.init_selector(sel, jax.random.key(3), x)
  jax.tree.map(np.testing.assert_array_equal, a, b)
  app = nets.MLPApproximator(2, hidden=(8,))
  pa, sa = nets.init_approximator(app, 3, x, jnp.ones_like(x))
  pb, sb = nets.init_approximator(app, jax.random.key(3), x, jnp.ones_like(x))
  jax.tree.map(np.testing.assert_array_equal, (pa, sa), (pb, sb))


@pytest.mark.parametrize('shape', [(3, 14, 14, 5), (2, 7, 9, 3), (1, 2, 2, 1)])
def test_max_pool_2x2_equals_linen_max_pool(shape):
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  x = jax.random.normal(jax.random.key(0), shape)
  np.testing.assert_array_equal(nets.max_pool_2x2(x),
                                nn.max_pool(x, (2, 2), (2, 2)))
  # without ties the gradient is the same one-hot routing
  g = jax.grad(lambda a: jnp.sum(nets.max_pool_2x2(a) ** 2))(x)
  want = jax.grad(lambda a: jnp.sum(nn.max_pool(a, (2, 2), (2, 2)) ** 2))(x)
  np.testing.assert_allclose(g, want, atol=1e-6)


@pytest.mark.parametrize('shape,kernel,stride,padding', [
    ((2, 14, 14, 6), 4, 2, 1), ((2, 7, 7, 5), 3, 1, 1), ((3, 9, 4), 4, 2, 1)])
def test_patch_conv_equals_linen_conv(shape, kernel, stride, padding):
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  x = jax.random.normal(jax.random.key(0), shape)
  s = len(shape) - 2
  pc = nets.PatchConv(7, kernel, stride, padding)
  p = pc.init(jax.random.key(1), x)
  p = jax.tree.map(lambda a: a + 0.1, p)           # a non-zero bias
  conv = nn.Conv(7, (kernel,) * s, strides=(stride,) * s,
                 padding=[(padding, padding)] * s)
  cp = {'params': {'kernel': p['params']['kernel'].reshape(
      (kernel,) * s + (shape[-1], 7)), 'bias': p['params']['bias']}}
  np.testing.assert_allclose(pc.apply(p, x), conv.apply(cp, x), atol=1e-5)
  g = jax.grad(lambda a: jnp.sum(pc.apply(p, a) ** 2))(x)
  want = jax.grad(lambda a: jnp.sum(conv.apply(cp, a) ** 2))(x)
  np.testing.assert_allclose(g, want, rtol=1e-4, atol=1e-4)
