"""Tests for xai_jax.blackbox: every adapter reproduces its model."""

import flax.linen as nn
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xai_jax import blackbox as bb
from xai_jax import models


class _Net(nn.Module):

  @nn.compact
  def __call__(self, x):
    h = nn.relu(nn.Dense(16, name='backbone')(x))
    h = nn.relu(nn.Dense(8, name='mid')(h))
    return nn.Dense(3, name='head')(h)


class _NnxNet(nnx.Module):

  def __init__(self, rngs):
    self.l1 = nnx.Linear(5, 7, rngs=rngs)
    self.l2 = nnx.Linear(7, 3, rngs=rngs)

  def __call__(self, x):
    return self.l2(nnx.relu(self.l1(x)))


@pytest.fixture(name='linen_box')
def _linen_box():
  m = _Net()
  v = m.init(jax.random.key(0), jnp.ones((1, 5)))
  return m, v, bb.from_linen(m, v, input_shape=(5,), split_at='mid')


def _x(n=6, d=5, seed=1):
  return jax.random.normal(jax.random.key(seed), (n, d))


def test_from_linen_matches_apply(linen_box):
  m, v, box = linen_box
  x = _x()
  np.testing.assert_allclose(box(x), m.apply(v, x), rtol=1e-6)
  assert box.num_outputs == 3 and box.input_shape == (5,)
  np.testing.assert_allclose(jax.jit(lambda b, x: b(x))(box, x), m.apply(v, x),
                             rtol=1e-5, atol=1e-6)


def test_linen_split_reproduces_model(linen_box):
  m, v, box = linen_box
  x = _x()
  assert box.is_split and box.latent_shape == (8,)
  latent = box.head(x)
  _, st = m.apply(v, x, capture_intermediates=True, mutable=['intermediates'])
  np.testing.assert_allclose(latent, st['intermediates']['mid']['__call__'][0],
                             rtol=1e-6)
  np.testing.assert_allclose(box.tail(latent), box(x), rtol=1e-5, atol=1e-6)
  # The tail really depends on the latent (not on the dummy input).
  assert not np.allclose(box.tail(latent + 1.0), box(x))
  # Gradients flow through the tail.
  g = jax.grad(lambda z: box.tail(z)[:, 0].sum())(latent)
  assert g.shape == latent.shape and np.all(np.isfinite(g))


def test_linen_split_of_cnn_layer():
  m = models.make_model('cnn', num_classes=4)
  x = jax.random.uniform(jax.random.key(0), (3, 28, 28, 1))
  v = m.init(jax.random.key(1), x)
  box = bb.from_linen(m, v, input_shape=(28, 28, 1), split_at='conv2')
  assert box.latent_shape == (14, 14, 32)
  np.testing.assert_allclose(box.tail(box.head(x)), box(x), rtol=1e-5,
                             atol=1e-5)


def test_unknown_split_layer_is_clear():
  m = _Net()
  v = m.init(jax.random.key(0), jnp.ones((1, 5)))
  with pytest.raises(ValueError, match='split_at') as err:
    bb.from_linen(m, v, input_shape=(5,), split_at='nope')
  # the message lists the layers one can split at
  names = bb.submodule_paths(v)
  assert 'mid' in names and all(n in str(err.value) for n in names)


def test_no_split_error(linen_box):
  m, v, _ = linen_box
  box = bb.from_linen(m, v, input_shape=(5,))
  with pytest.raises(ValueError, match='split'):
    box.head(_x())


def test_from_nnx_matches_module():
  model = _NnxNet(nnx.Rngs(0))
  box = bb.from_nnx(model, input_shape=(5,))
  x = _x()
  np.testing.assert_allclose(box(x), model(x), rtol=1e-6)
  np.testing.assert_allclose(jax.jit(lambda b, x: b(x))(box, x), model(x),
                             rtol=1e-5, atol=1e-6)
  g = jax.grad(lambda x: box.scores(x, 0).sum())(x)
  assert g.shape == x.shape and np.abs(g).sum() > 0


def test_from_jax_with_and_without_params():
  w = jax.random.normal(jax.random.key(0), (5, 2))
  box1 = bb.from_jax(lambda x: x @ w, input_shape=(5,))
  box2 = bb.from_jax(lambda p, x: x @ p, input_shape=(5,), params=w)
  x = _x()
  np.testing.assert_allclose(box1(x), x @ w, rtol=1e-6)
  np.testing.assert_allclose(box2(x), x @ w, rtol=1e-6)
  # vmap over parameter copies: one box, a stack of parameters.
  ws = jnp.stack([w, 2 * w, -w])
  outs = jax.vmap(lambda p: box2.with_params(p)(x))(ws)
  np.testing.assert_allclose(outs[1], 2 * (x @ w), rtol=1e-5)
  np.testing.assert_allclose(outs[2], -(x @ w), rtol=1e-5)


def test_from_numpy_batched_callback_and_jit_vmap():
  w = np.random.default_rng(0).normal(size=(5, 2)).astype(np.float32)
  calls = []

  def f(a):
    calls.append(a.shape)
    return a @ w

  box = bb.from_numpy(f, input_shape=(5,), output_shape=(2,), output='logits')
  x = np.asarray(_x(8))
  np.testing.assert_allclose(jax.jit(box)(x), x @ w, rtol=1e-5)
  calls.clear()
  # Per-row function vmapped over 8 rows: ONE callback of 8 rows.
  y = jax.jit(jax.vmap(lambda r: box(r[None])[0]))(x)
  np.testing.assert_allclose(y, x @ w, rtol=1e-5)
  assert calls == [(8, 5)]
  # Nested vmap (e.g. 3 perturbations per row) is still one callback.
  calls.clear()
  xs = np.stack([x, x + 1, x - 1], 1)  # [8, 3, 5]
  y2 = jax.vmap(jax.vmap(lambda r: box(r[None])[0]))(xs)
  assert y2.shape == (8, 3, 2) and calls == [(24, 5)]
  np.testing.assert_allclose(y2[:, 1], (x + 1) @ w, rtol=1e-5)


def test_from_numpy_gradient_error_names_alternative():
  box = bb.from_numpy(lambda a: a[:, :2], input_shape=(5,), output_shape=2)
  with pytest.raises(bb.NotDifferentiableError, match='kernel_shap'):
    jax.grad(lambda x: box(x).sum())(_x())
  with pytest.raises(bb.NotDifferentiableError, match='perturbation'):
    bb.require_differentiable(box, 'saliency')


def test_from_numpy_sklearn_model():
  sklearn = pytest.importorskip('sklearn.linear_model')
  rng = np.random.default_rng(0)
  xtr = rng.normal(size=(200, 4)).astype(np.float32)
  ytr = (xtr[:, 0] + xtr[:, 1] > 0).astype(int)
  clf = sklearn.LogisticRegression().fit(xtr, ytr)
  box = bb.from_numpy(clf.predict_proba, input_shape=(4,), output_shape=(2,),
                      output='probs')
  np.testing.assert_allclose(jax.jit(box)(xtr[:10]),
                             clf.predict_proba(xtr[:10]), rtol=1e-5)
  np.testing.assert_array_equal(box.predict(xtr[:10]), clf.predict(xtr[:10]))


def test_output_kinds_and_targets(linen_box):
  _, _, box = linen_box
  x = _x()
  logits = box(x)
  lp = jax.nn.log_softmax(logits)
  np.testing.assert_allclose(box.log_probs(x), lp, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(box.probs(x).sum(-1), 1.0, rtol=1e-5)
  pred = jnp.argmax(logits, -1)
  np.testing.assert_allclose(box.scores(x), logits[jnp.arange(6), pred])
  np.testing.assert_allclose(box.scores(x, 2, space='probs'),
                             jnp.exp(lp[:, 2]), rtol=1e-5)
  t = jnp.array([0, 1, 2, 0, 1, 2])
  np.testing.assert_allclose(box.scores(x, t, space='log_probs'),
                             lp[jnp.arange(6), t], rtol=1e-5)
  pbox = bb.from_jax(jax.nn.softmax, input_shape=(3,), output='probs')
  np.testing.assert_allclose(pbox.log_probs(logits), lp, rtol=1e-4, atol=1e-5)


def test_bad_inputs_name_the_argument(linen_box):
  _, _, box = linen_box
  with pytest.raises(ValueError, match='x must have shape'):
    box(jnp.ones((3, 4)))
  with pytest.raises(ValueError, match='x must have 2 dimensions'):
    box(jnp.ones((5,)))
  with pytest.raises(ValueError, match='x contains NaN'):
    box.check_input(jnp.array([[np.nan] * 5]))
  with pytest.raises(ValueError, match='target'):
    box.scores(_x(), jnp.array([0, 1]))
  with pytest.raises(ValueError, match='output'):
    bb.from_jax(lambda x: x, input_shape=(5,), output='softmax')
  with pytest.raises(ValueError, match='floating'):
    box(jnp.ones((2, 5), jnp.int32))
  rbox = bb.from_jax(lambda x: x[:, :1], input_shape=(5,), output='regression')
  with pytest.raises(ValueError, match='distribution'):
    rbox.log_probs(_x())


def test_forward_in_chunks_equals_full(linen_box):
  _, _, box = linen_box
  x = _x(37)
  np.testing.assert_allclose(bb.forward_in_chunks(box, x, 8), box(x),
                             rtol=1e-5, atol=1e-6)


def test_text_box_takes_token_ids():
  m = models.make_model('text_cnn', num_classes=2, vocab_size=50, embed_dim=8,
                        filters=16, hidden=16)
  tok = jax.random.randint(jax.random.key(0), (4, 20), 0, 50)
  v = m.init(jax.random.key(1), tok)
  box = bb.from_linen(m, v, input_shape=(20,), input_dtype='int')
  np.testing.assert_allclose(box(tok), m.apply(v, tok), rtol=1e-6)
  with pytest.raises(ValueError, match='integer token ids'):
    box(tok.astype(jnp.float32))


# --------------------------------------------------- wrap-time output probes
class _Mean(nn.Module):
  """Averages over the batch: one output row for any number of input rows."""

  @nn.compact
  def __call__(self, x):
    return nn.Dense(3)(x).mean(0, keepdims=True)


class _NnxMean(nnx.Module):

  def __init__(self, rngs):
    self.l = nnx.Linear(5, 3, rngs=rngs)

  def __call__(self, x):
    return self.l(x).sum(0, keepdims=True)


def _batch_mismatched_boxes():
  """One wrapper per adapter around a model returning [1, c] for [b, 5]."""
  w = np.ones((5, 3), np.float32)
  m = _Mean()
  v = m.init(jax.random.key(0), jnp.ones((1, 5)))
  return {
      'from_jax': lambda: bb.from_jax(lambda x: (x @ w)[:1], input_shape=(5,)),
      'from_jax_params': lambda: bb.from_jax(
          lambda p, x: (x @ p).sum(0, keepdims=True), input_shape=(5,),
          params=jnp.asarray(w)),
      'as_blackbox': lambda: bb.as_blackbox(lambda x: (x @ w)[:1],
                                            input_shape=(5,)),
      'from_linen': lambda: bb.from_linen(m, v, input_shape=(5,)),
      'from_nnx': lambda: bb.from_nnx(_NnxMean(nnx.Rngs(0)), input_shape=(5,)),
      'from_numpy': lambda: bb.from_numpy(lambda a: (a @ w)[:1],
                                          input_shape=(5,), output_shape=3),
  }


@pytest.mark.parametrize('adapter', sorted(_batch_mismatched_boxes()))
def test_adapters_reject_output_batch_unlike_input(adapter):
  arg = {'as_blackbox': 'model', 'from_linen': 'module',
         'from_nnx': 'model'}.get(adapter, 'fn')
  with pytest.raises(ValueError) as e:
    _batch_mismatched_boxes()[adapter]()
  msg = str(e.value)
  assert msg.startswith(f'{arg} must map [batch, *input_shape] -> '
                        '[batch, num_outputs]')
  assert 'probe batch of shape (2, 5)' in msg
  assert 'returned shape (1, 3), expected (2, num_outputs)' in msg


def test_adapters_reject_transposed_and_1d_outputs():
  # [c, batch] with c == 2 looks right on a 2-row probe; the second probe
  # (3 rows) catches it, for JAX and numpy models alike.
  with pytest.raises(ValueError, match=r'returned shape \(2, 3\).*batch-first'):
    bb.from_jax(lambda x: jnp.stack([x[:, 0], -x[:, 0]]), input_shape=(5,))
  with pytest.raises(ValueError, match=r'returned shape \(2, 3\).*batch-first'):
    bb.from_numpy(lambda a: np.stack([a[:, 0], -a[:, 0]]), input_shape=(5,),
                  output_shape=(2,))
  # One value per example must be [batch, 1].
  with pytest.raises(ValueError, match=r'returned shape \(2,\).*y\[:, None\]'):
    bb.from_jax(lambda x: x.sum(-1), input_shape=(5,), output='regression')
  with pytest.raises(ValueError, match='predict_proba'):
    bb.from_numpy(lambda a: (a[:, 0] > 0).astype(int), input_shape=(5,),
                  output_shape=(2,))
  with pytest.raises(ValueError, match='one array .* got a tuple'):
    bb.from_jax(lambda x: (x, x), input_shape=(5,))
  # Well-formed binary and regression boxes still wrap.
  assert bb.from_jax(lambda x: x[:, :2], input_shape=(5,)).num_outputs == 2
  assert bb.from_jax(lambda x: x[:, :1], input_shape=(5,),
                     output='regression').num_outputs == 1


def test_wrap_time_probe_is_abstract_and_keeps_jit_vmap_grad():
  calls = []

  def f(x):
    jax.debug.callback(lambda: calls.append(1))
    return x[:, :2] * 2.0

  box = bb.from_jax(f, input_shape=(5,))
  assert calls == []  # eval_shape traces, it never runs the model
  x = _x()
  np.testing.assert_allclose(jax.jit(lambda b, x: b(x))(box, x), 2 * x[:, :2])
  np.testing.assert_allclose(jax.vmap(lambda r: box(r[None])[0])(x),
                             2 * x[:, :2])
  g = jax.grad(lambda x: box.scores(x, 1).sum())(x)
  np.testing.assert_allclose(g, np.eye(5)[1][None].repeat(6, 0) * 2.0)


def test_wrong_input_shape_names_input_shape():
  w = jnp.ones((5, 3))
  with pytest.raises(ValueError) as e:
    bb.from_jax(lambda x: x @ w, input_shape=(4,))
  msg = str(e.value)
  assert msg.startswith('input_shape=(4,) does not fit fn')
  assert 'probe batch of shape (2, 4) (float32)' in msg
  assert 'TypeError: dot_general requires contracting dimensions' in msg
  assert isinstance(e.value.__cause__, TypeError)
  m = _Net()
  v = m.init(jax.random.key(0), jnp.ones((1, 5)))
  with pytest.raises(ValueError, match=r'input_shape=\(28, 28\) does not fit '
                     r'module.*\(2, 28, 28\)'):
    bb.from_linen(m, v, input_shape=(28, 28))
  with pytest.raises(ValueError, match=r'input_shape=\(4,\) does not fit '
                     r'model.*\(2, 4\)'):
    bb.from_nnx(_NnxNet(nnx.Rngs(0)), input_shape=(4,))
  with pytest.raises(ValueError, match=r'input_shape=\(4,\) does not fit fn.*'
                     r'ValueError: matmul'):
    bb.from_numpy(lambda a: a @ np.ones((5, 2)), input_shape=(4,),
                  output_shape=2)


def test_non_jax_callable_points_to_from_numpy():
  with pytest.raises(ValueError, match='fn is not traceable by JAX.*from_numpy'):
    bb.from_jax(lambda x: np.asarray(x)[:, :2], input_shape=(5,))


def test_from_numpy_wrong_output_shape_names_it_at_wrap_time():
  calls = []

  def f(a):
    calls.append(a.shape)
    return a[:, :2]

  with pytest.raises(ValueError) as e:
    bb.from_numpy(f, input_shape=(5,), output_shape=(3,))
  assert str(e.value).startswith('output_shape=(3,) does not match fn: on a '
                                 'probe batch of shape (2, 5) it returned '
                                 'shape (2, 2), i.e. output_shape=(2,)')
  assert calls == [(2, 5)]  # one tiny probe call
  # The right declaration wraps and gives the model's outputs under jit.
  calls.clear()
  box = bb.from_numpy(f, input_shape=(5,), output_shape=(2,), output='logits')
  assert calls == [(2, 5), (3, 5)]  # num_outputs == 2: a second probe
  x = np.asarray(_x())
  np.testing.assert_allclose(jax.jit(box)(x), x[:, :2])


def test_scores_rejects_out_of_range_and_negative_targets():
  calls = []
  w = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)

  def f(a):
    calls.append(a.shape)
    return a @ w

  box = bb.from_numpy(f, input_shape=(5,), output_shape=(3,), output='logits',
                      name='lin')
  x = np.asarray(_x())
  calls.clear()
  for bad in (3, -1, np.array([0, 1, 2, 3, 0, 1]), np.array([0] * 5 + [-2])):
    with pytest.raises(ValueError, match=r"target must be in \[0, 3\) for "
                       r"black box 'lin'"):
      box.scores(x, bad)
  assert calls == []  # checked before the model runs
  np.testing.assert_allclose(box.scores(x, 2), (x @ w)[:, 2], rtol=1e-5)
  # Traced targets are not checked (values unknown), valid ones still work.
  t = jnp.array([0, 1, 2, 0, 1, 2])
  np.testing.assert_allclose(jax.jit(box.scores)(x, t),
                             (x @ w)[np.arange(6), t], rtol=1e-5)


def test_resolve_target_range_check_is_optional():
  out = jnp.zeros((4, 3))
  # The three-argument form is unchanged (no range check).
  np.testing.assert_array_equal(bb.resolve_target(out, -1, 4), [-1] * 4)
  np.testing.assert_array_equal(bb.resolve_target(out, 2, 4, 3), [2] * 4)
  np.testing.assert_array_equal(bb.resolve_target(out, None, 4, 3), [0] * 4)
  with pytest.raises(ValueError, match=r'target must be in \[0, 3\) for m'):
    bb.resolve_target(out, jnp.array([0, 1, 2, 3]), 4, num_outputs=3,
                      model='m')
  with pytest.raises(ValueError, match=r'got values in \[-1, -1\]'):
    bb.resolve_target(None, -1, 4, num_outputs=3)


class _TrainModeNet(nnx.Module):

  def __init__(self, rngs):
    self.l1 = nnx.Linear(5, 7, rngs=rngs)
    self.bn = nnx.BatchNorm(7, rngs=rngs)
    self.drop = nnx.Dropout(0.5, rngs=rngs)
    self.l2 = nnx.Linear(7, 3, rngs=rngs)

  def __call__(self, x):
    return self.l2(self.drop(nnx.relu(self.bn(self.l1(x)))))


def _nnx_snapshot(model):
  def host(a):
    if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
      a = jax.random.key_data(a)
    return np.array(a)
  return [host(a) for a in jax.tree.leaves(nnx.state(model))]


def test_from_nnx_train_mode_model_is_not_mutated_and_saliency_works():
  from xai_jax import attribution  # pylint: disable=g-import-not-at-top
  model = _TrainModeNet(nnx.Rngs(0))  # nnx modules start in train mode
  before = _nnx_snapshot(model)
  box = bb.from_nnx(model, input_shape=(5,))
  x = _x(8)
  y1, y2 = box(x), jax.jit(lambda b, x: b(x))(box, x)
  np.testing.assert_allclose(y1, y2, rtol=1e-5, atol=1e-6)  # no dropout
  s = attribution.saliency(box, x)
  assert s.shape == x.shape and np.all(np.isfinite(s)) and s.sum() > 0
  box.scores(x, 0)
  after = _nnx_snapshot(model)
  assert len(before) == len(after)
  for a, b in zip(before, after):  # batch stats, params, RNG counts
    np.testing.assert_array_equal(a, b)
  assert not model.drop.deterministic and not model.bn.use_running_average
  # The box is the model in eval mode (running averages, no dropout).
  ref = nnx.clone(model)
  ref.eval()
  np.testing.assert_allclose(y1, ref(x), rtol=1e-5, atol=1e-6)
