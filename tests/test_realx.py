"""Tests of xai_jax.realx: the random-mask loss and the EVAL-X evaluator."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xai_jax import masking
from xai_jax import metrics as M
from xai_jax import realx


def _linear_apply(w):
  """A tiny 'network': logits = (x * mask) @ w, no state."""
  def apply_fn(params, model_state, x, mask, dropout_key):
    del dropout_key
    return (x * mask) @ (params['w'] * w), model_state
  return apply_fn


def _sign_task(n, seed):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, 6)).astype(np.float32)
  y = (x[:, 0] + x[:, 1] > 0).astype(np.int32)
  return x, y


def _log_softmax(z):
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_loss_matches_a_hand_computation_soft_and_hard_targets():
  rng = np.random.default_rng(0)
  b, d, c = 7, 5, 3
  x = rng.normal(size=(b, d)).astype(np.float32)
  w = rng.normal(size=(d, c)).astype(np.float32)
  p = rng.dirichlet(np.ones(c), size=b).astype(np.float32)
  params = {'w': jnp.ones((d, c))}
  key = jax.random.key(7)
  l2 = lambda q: 0.5 * jnp.sum(q['w'] ** 2)
  loss_fn = realx.random_mask_loss(_linear_apply(w), d, 0.4, lambda s: s, l2)
  loss, (state, mets) = loss_fn(params, {}, {'x': x, 'targets': p}, key)
  # The documented draws: split, Bernoulli(0.4) of [b, d].
  mask_key, _ = jax.random.split(key)
  s = np.asarray(jax.random.bernoulli(mask_key, 0.4, (b, d)), np.float32)
  lp = _log_softmax((x * s) @ w)
  ce = -(p * lp).sum(-1).mean()
  np.testing.assert_allclose(mets['cross_entropy'], ce, rtol=1e-5)
  np.testing.assert_allclose(loss, ce + 0.5 * d * c, rtol=1e-5)
  agree = (lp.argmax(-1) == p.argmax(-1)).mean()
  np.testing.assert_allclose(mets['approximator_agreement'], agree)
  assert state == {}
  # Int labels: the categorical cross-entropy of the same logits.
  y = p.argmax(-1).astype(np.int32)
  loss_fn = realx.random_mask_loss(_linear_apply(w), d, 0.4, lambda s: s)
  loss, (_, mets) = loss_fn(params, {}, {'x': x, 'targets': y}, key)
  np.testing.assert_allclose(loss, -lp[np.arange(b), y].mean(), rtol=1e-5)
  np.testing.assert_allclose(mets['approximator_agreement'],
                             (lp.argmax(-1) == y).mean())


def test_rbg_mask_keys_are_the_l2x_derivation():
  key = jax.random.key(3)
  mask_key, dropout_key = realx.rbg_mask_keys(key)
  assert dropout_key is None
  words = jax.random.bits(key, (1, 4), jnp.uint32)
  want = jax.random.wrap_key_data(words[0], impl='rbg')
  np.testing.assert_array_equal(
      jax.random.bernoulli(mask_key, 0.5, (4, 9)),
      jax.random.bernoulli(want, 0.5, (4, 9)))
  # The loss draws its mask from that key.
  seen = {}

  def apply_fn(params, model_state, x, mask, dropout_key):
    seen['mask'], seen['dropout'] = mask, dropout_key
    return jnp.zeros((x.shape[0], 2)), model_state

  loss_fn = realx.random_mask_loss(apply_fn, 9, 0.5, lambda s: s,
                                   mask_keys=realx.rbg_mask_keys)
  loss_fn({}, {}, {'x': jnp.ones((4, 9)), 'targets': jnp.ones((4, 2)) / 2},
          key)
  np.testing.assert_array_equal(
      seen['mask'], jax.random.bernoulli(want, 0.5, (4, 9)).astype(float))
  assert seen['dropout'] is None


@pytest.mark.parametrize('keep_prob', [0.1, 0.5, 0.9])
def test_mask_frequency_is_keep_prob(keep_prob):
  def apply_fn(params, model_state, x, mask, dropout_key):
    return jnp.zeros((x.shape[0], 2)), {'mask': mask}

  groups = masking.patch_groups((8, 8), 2)           # 16 groups of 4 pixels
  loss_fn = realx.random_mask_loss(apply_fn, groups.num_groups, keep_prob,
                                   groups.expand)
  x = jnp.ones((2000, 8, 8))
  _, (state, _) = jax.jit(loss_fn)({}, {'mask': jnp.zeros_like(x)},
                                   {'x': x, 'targets': jnp.zeros((2000,),
                                                                 jnp.int32)},
                                   jax.random.key(0))
  m = np.asarray(state['mask'])
  assert abs(m.mean() - keep_prob) < 0.01
  # One Bernoulli draw per group: the 4 pixels of a patch agree.
  np.testing.assert_array_equal(m[:, 0, 0], m[:, 1, 1])
  # i.i.d. over groups and rows: every group's frequency is keep_prob and a
  # row's count of kept groups is Binomial(16, keep_prob).
  s = m[:, ::2, ::2].reshape(2000, 16)
  assert np.all(np.abs(s.mean(0) - keep_prob) < 0.05)
  var = 16 * keep_prob * (1 - keep_prob)
  assert abs(s.sum(1).var() / var - 1) < 0.2


def test_linen_apply_fn_masks_with_the_baseline_and_updates_state():
  class Net(nn.Module):
    @nn.compact
    def __call__(self, x, train=True):
      x = nn.BatchNorm(use_running_average=not train)(x)
      return nn.Dense(2)(x)

  net = Net()
  x = jnp.arange(12.0).reshape(3, 4)
  variables = net.init(jax.random.key(0), x)
  params, state = variables['params'], {'batch_stats':
                                        variables['batch_stats']}
  apply_fn = realx.linen_apply_fn(net, baseline=jnp.full((4,), 9.0),
                                  train=True)
  mask = jnp.array([[1., 0., 1., 0.]] * 3)
  out, new_state = apply_fn(params, state, x, mask, jax.random.key(1))
  want, upd = net.apply({'params': params, **state},
                        jnp.where(mask > 0, x, 9.0), mutable=['batch_stats'])
  np.testing.assert_allclose(out, want)
  jax.tree.map(np.testing.assert_allclose, new_state, upd)


def test_loss_checks_its_arguments():
  with pytest.raises(ValueError, match='keep_prob'):
    realx.random_mask_loss(_linear_apply(1.0), 3, 0.0, lambda s: s)
  with pytest.raises(ValueError, match='num_groups'):
    realx.random_mask_loss(_linear_apply(1.0), 0, 0.5, lambda s: s)


# ------------------------------------------------------------------ EVAL-X
@pytest.mark.slow
def test_evalx_scores_true_selection_higher():
  x, y = _sign_task(4000, 0)
  ev = realx.train_evalx(jax.random.key(0), x, y, num_steps=1500,
                         batch_size=128, learning_rate=3e-3,
                         hidden_sizes=(64, 64))
  xt, yt = _sign_task(2000, 1)
  true_sel = np.zeros((2000, 6), bool)
  true_sel[:, :2] = True
  wrong_sel = np.zeros((2000, 6), bool)
  wrong_sel[:, 4:] = True
  acc_true = float(M.evalx_accuracy(ev, xt, true_sel, yt)['evalx_accuracy'])
  acc_wrong = float(M.evalx_accuracy(ev, xt, wrong_sel, yt)['evalx_accuracy'])
  auc_true = float(M.evalx_auroc(ev, xt, true_sel, yt)['evalx_auroc'])
  auc_wrong = float(M.evalx_auroc(ev, xt, wrong_sel, yt)['evalx_auroc'])
  assert acc_true > 0.9, acc_true
  assert acc_wrong < 0.6, acc_wrong
  assert auc_true > 0.95 and auc_wrong < 0.65, (auc_true, auc_wrong)
  # One-feature selections lie between the two.
  one = np.zeros((2000, 6), bool)
  one[:, 0] = True
  acc_one = float(M.evalx_accuracy(ev, xt, one, yt)['evalx_accuracy'])
  assert acc_wrong + 0.1 < acc_one < acc_true


@pytest.mark.slow
def test_evalx_same_key_same_evaluator_and_soft_targets():
  x, y = _sign_task(256, 0)
  soft = np.eye(2, dtype=np.float32)[y]
  kw = dict(num_steps=20, batch_size=64, hidden_sizes=(16,))
  a = realx.train_evalx(jax.random.key(3), x, soft, **kw)
  b = realx.train_evalx(3, x, soft, **kw)          # an int seed: same key
  jax.tree.map(np.testing.assert_array_equal, a.box.params, b.box.params)
  c = realx.train_evalx(jax.random.key(4), x, soft, **kw)
  assert not np.allclose(a.box.params['params']['Dense_0']['kernel'],
                         c.box.params['params']['Dense_0']['kernel'])
  r = M.evalx_accuracy(a, x, np.ones_like(x, bool), soft)
  assert r['correct'].shape == (256,)
  assert np.all(np.asarray(r['log_likelihood']) <= 0)
  assert a.logits(x[:3]).shape == (3, 2)
  with pytest.raises(ValueError, match='labels'):
    M.evalx_accuracy(a, x, np.ones_like(x, bool), y[:10])
  with pytest.raises(ValueError, match='selection'):
    M.evalx_accuracy(a, x, np.ones((256, 5)), y)


def test_untrained_evaluator_masks_with_its_baseline():
  x, y = _sign_task(64, 0)
  ev = realx.train_evalx(0, x, y, num_steps=0, hidden_sizes=(8,))
  assert ev.keep_prob == 0.5 and ev.num_classes == 2
  assert ev.logits(x[:2], np.ones((2, 6), bool)).shape == (2, 2)
  np.testing.assert_allclose(ev.logits(x[:2], np.ones((2, 6), bool)),
                             ev.logits(x[:2]))
  zero = ev.logits(x[:2], np.zeros((2, 6), bool))
  np.testing.assert_allclose(zero, ev.box(jnp.zeros((2, 6))), rtol=1e-6)


def test_train_evalx_checks_its_arguments():
  key = jax.random.key(0)
  x = np.ones((4, 5), np.float32)
  with pytest.raises(ValueError, match='y'):
    realx.train_evalx(key, x, np.ones((4, 2, 2), np.float32), num_steps=1)
  with pytest.raises(ValueError, match='keep_prob'):
    realx.train_evalx(key, x, np.zeros(4, np.int32), keep_prob=1.0)
  with pytest.raises(ValueError, match='key'):
    realx.train_evalx(None, x, np.zeros(4, np.int32))
  with pytest.raises(ValueError, match='baseline'):
    realx.train_evalx(key, x, np.zeros(4, np.int32), baseline=np.zeros(3))
