"""Tests of xai_jax.l2x: L2X (Chen et al., 2018) and its REAL-X option.

The quality tests train on the L2X synthetic sets with the oracle targets
(the true P(Y|X), L2X's own setting) and check the hard selections against
the ground-truth features. Everything else uses tiny networks and a few steps:
on CPU an L2X fit costs mostly its XLA compile (a few seconds), so the file
keeps the number of fits small.
"""

from __future__ import annotations

import os
import sys

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

from xai_jax import blackbox as bb  # pylint: disable=g-import-not-at-top
from xai_jax import l2x  # pylint: disable=g-import-not-at-top
from xai_jax import masking  # pylint: disable=g-import-not-at-top
from xai_jax import nets  # pylint: disable=g-import-not-at-top
from xai_jax.data import synthetic  # pylint: disable=g-import-not-at-top


def tiny_nets(num_classes: int = 2, d: int = 10):
  """Small tabular nets: the fit is then all compile, little compute."""
  return dict(selector=nets.MLPSelector(d, hidden=(16,)),
              approximator=nets.MLPApproximator(num_classes, hidden=(16,)))


def median_rank(scores: np.ndarray, truth: list[int], seed: int = 0) -> float:
  """L2X's median rank (`create_rank` of the reference): mean over rows of the
  median rank of the ground-truth features, ties broken at random."""
  scores = np.abs(np.asarray(scores, np.float64))
  n, d = scores.shape
  perm = np.argsort(np.random.default_rng(seed).random((n, d)), axis=1)
  permuted = np.take_along_axis(scores, perm, axis=1)
  rank_p = (-permuted).argsort(1, kind='stable').argsort(1) + 1
  ranks = np.empty_like(rank_p)
  np.put_along_axis(ranks, perm, rank_p, axis=1)
  return float(np.median(ranks[:, truth], axis=1).mean())


# ------------------------------------------------------------ XOR (oracle)


@pytest.fixture(scope='module')
def xor_data():
  return (synthetic.make_tabular('xor', 20_000, 0),
          synthetic.make_tabular('xor', 5_000, 1))


@pytest.fixture(scope='module')
def xor_model(xor_data):
  train, _ = xor_data
  # The reference nets, tau 0.1, Adam 1e-3; 600 steps of 250 rows.
  return l2x.fit(0, train.probs, train.x, k=2, batch_size=250, num_steps=600)


def test_xor_oracle_finds_the_two_features(xor_model, xor_data):
  _, test = xor_data
  out = l2x.explain(xor_model, test.x)
  mask, scores = out.mask, out.scores
  mask = np.asarray(mask)
  both = np.mean(mask[:, 0] * mask[:, 1])
  assert both > 0.9, both
  rank = median_rank(mask, [0, 1])
  assert rank < 1.6, rank  # optimum (k + 1) / 2 = 1.5
  assert median_rank(np.asarray(scores), [0, 1]) < 1.6
  acc = l2x.approximator_accuracy(xor_model, test.x, test.probs)
  assert acc > 0.85, acc


def test_explain_exactly_k_ones_matching_the_logits(xor_model, xor_data):
  _, test = xor_data
  x = test.x[:1000]
  out = l2x.explain(xor_model, x)
  mask, scores = out.mask, out.scores
  mask, scores = np.asarray(mask), np.asarray(scores)
  assert mask.shape == scores.shape == (1000, 10)
  assert set(np.unique(mask)) <= {0.0, 1.0}
  np.testing.assert_array_equal(mask.sum(1), 2)
  top = np.argsort(-scores, axis=1, kind='stable')[:, :2]
  np.testing.assert_array_equal(np.take_along_axis(mask, top, 1), 1)
  m3 = l2x.explain(xor_model, x, k=3).mask
  np.testing.assert_array_equal(np.asarray(m3).sum(1), 3)
  # key and target are accepted (the protocol) and change nothing.
  same = l2x.explain(xor_model, x, key=1, target=0)
  np.testing.assert_array_equal(same.mask, mask)
  np.testing.assert_array_equal(same.scores, scores)


def test_explain_chunked_equals_one_batch_and_is_compiled_once(xor_model,
                                                               xor_data):
  _, test = xor_data
  out = l2x.explain(xor_model, test.x)
  whole_mask, whole_scores = out.mask, out.scores
  for chunk in (1000, 1234):  # exact chunks, and chunks with padding
    out = l2x.explain(xor_model, test.x, chunk_size=chunk)
    m, s = out.mask, out.scores
    np.testing.assert_array_equal(m, whole_mask)
    np.testing.assert_allclose(s, whole_scores, rtol=1e-5, atol=1e-5)
  before = l2x._explain_jit._cache_size()  # pylint: disable=protected-access
  for _ in range(3):
    l2x.explain(xor_model, test.x[:777])
  after = l2x._explain_jit._cache_size()  # pylint: disable=protected-access
  assert after - before <= 1


def test_select_inputs_and_accuracy_inputs(xor_model, xor_data):
  _, test = xor_data
  x = test.x[:500]
  mask = l2x.explain(xor_model, x).mask
  xs = np.asarray(l2x.select_inputs(xor_model, x))
  mask = np.asarray(mask)
  np.testing.assert_array_equal(xs[mask == 0], 0.0)
  np.testing.assert_allclose(xs[mask == 1], x[mask == 1])
  by_probs = l2x.approximator_accuracy(xor_model, x, test.probs[:500])
  by_labels = l2x.approximator_accuracy(
      xor_model, x, np.argmax(test.probs[:500], 1).astype(np.int32))
  oracle = bb.from_jax(synthetic.xor_probs, input_shape=(10,),
                       output='probs')
  by_box = l2x.approximator_accuracy(xor_model, x, oracle)
  assert by_probs == by_labels == pytest.approx(by_box, abs=1e-3)


def test_explain_argument_errors(xor_model, xor_data):
  _, test = xor_data
  with pytest.raises(ValueError, match=r'k=11 .*number of groups d=10'):
    l2x.explain(xor_model, test.x[:5], k=11)
  with pytest.raises(ValueError, match='x must have'):
    l2x.explain(xor_model, test.x[:5, :9])
  bad = test.x[:5].copy()
  bad[0, 0] = np.nan
  with pytest.raises(ValueError, match='x contains NaN'):
    l2x.explain(xor_model, bad)
  with pytest.raises(ValueError, match='model must be an L2XModel'):
    l2x.explain('model', test.x[:5])


@pytest.mark.slow
def test_orange_skin_oracle_finds_the_four_features():
  train = synthetic.make_tabular('orange_skin', 30_000, 0)
  test = synthetic.make_tabular('orange_skin', 5_000, 1)
  model = l2x.fit(0, train.probs, train.x, k=4, batch_size=250,
                  num_steps=600)
  mask = l2x.explain(model, test.x).mask
  mask = np.asarray(mask)
  assert np.mean(mask[:, :4].all(1)) > 0.9
  assert median_rank(mask, [0, 1, 2, 3]) < 2.6  # optimum 2.5


# ------------------------------------------------------- samplers, config


@pytest.mark.parametrize('sampler, kwargs', [
    ('subset', {}),
    ('perturbed', {'num_samples': 4}),
])
def test_other_samplers_train_without_nan(sampler, kwargs):
  # 'concrete' is the XOR model above; 'straight_through' is the REAL-X test.
  data = synthetic.make_tabular('xor', 1000, 2)
  model, hist = l2x.fit(1, data.probs, data.x, k=2, sampler=sampler,
                        sampler_kwargs=kwargs, num_steps=6, batch_size=100,
                        log_every=2, return_history=True, **tiny_nets())
  assert model.sampler == sampler
  assert np.all(np.isfinite(hist['loss'])) and len(hist['loss']) == 3
  for leaf in jax.tree.leaves(model.params):
    assert np.all(np.isfinite(leaf))
  mask = l2x.explain(model, data.x[:50]).mask
  np.testing.assert_array_equal(np.asarray(mask).sum(1), 2)


def test_blackbox_targets_and_determinism():
  # A random linear black box with 3 classes (logits): its probabilities are
  # the targets. The same key gives the same parameters, bit for bit.
  data = synthetic.make_tabular('xor', 1000, 3)
  lin = nn.Dense(3)
  variables = jax.jit(lin.init)(jax.random.key(0), jnp.zeros((1, 10)))
  box = bb.from_linen(lin, variables, input_shape=(10,))
  kw = dict(k=3, num_steps=5, batch_size=100,
            selector=nets.MLPSelector(10, hidden=(8,)),
            approximator=nets.MLPApproximator(3, hidden=(8,),
                                              batch_norm=False))
  a = l2x.fit(jax.random.key(7), box, data.x, **kw)
  b = l2x.fit(jax.random.key(7), box, data.x, **kw)
  assert a.num_classes == 3
  jax.tree.map(np.testing.assert_array_equal, a.params, b.params)
  for leaf in jax.tree.leaves(a.params):
    assert np.all(np.isfinite(leaf))
  # Another key gives other initial parameters.
  x0 = jnp.asarray(data.x[:2])
  p7 = l2x.init_params(kw['selector'], kw['approximator'],
                       jax.random.key(7), x0)[0]
  p8 = l2x.init_params(kw['selector'], kw['approximator'],
                       jax.random.key(8), x0)[0]
  assert not np.allclose(p7['hidden0']['kernel'], p8['hidden0']['kernel'])
  # An int seed is its key.
  jax.tree.map(np.testing.assert_array_equal, p7, l2x.init_params(
      kw['selector'], kw['approximator'], 7, x0)[0])


def test_public_step_pieces_give_a_finite_loss_and_gradient():
  # The pieces `fit` is made of (used by benchmarks/l2x_step_costs.py).
  data = synthetic.make_tabular('xor', 64, 0)
  sel, app = nets.MLPSelector(10, hidden=(8,)), nets.MLPApproximator(
      2, hidden=(8,))
  x = jnp.asarray(data.x)
  sp, ap, state, logits, key = l2x.init_params(sel, app, 0, x[:2])
  assert logits.shape == (2, 10)
  sample = l2x.make_sampler('concrete', 0.1, {})
  mask = sample(jax.random.key(1), logits, 2)
  assert mask.shape == (2, 10) and np.all(np.asarray(mask).sum(1) <= 2 + 1e-5)
  loss_fn = l2x.l2x_loss(sel, app, sample, 2, lambda v: v, 1e-3)
  batch = {'x': x, 'targets': jnp.asarray(data.probs)}
  grad, (new_state, metrics) = jax.grad(loss_fn, has_aux=True)(
      {'selector': sp, 'approximator': ap}, state, batch, key)
  assert set(metrics) == {'cross_entropy', 'approximator_agreement',
                          'mask_sum'}
  assert jax.tree.structure(new_state) == jax.tree.structure(state)
  for leaf in jax.tree.leaves(grad):
    assert np.all(np.isfinite(leaf))
  with pytest.raises(ValueError, match="sampler='hard' has no gradient"):
    l2x.make_sampler('hard', 0.1, {})


def test_steps_per_call_gives_the_same_fit():
  """10 steps per jitted call (the tabular default) trains the same model as
  one step per call: same keys, same batches, batch norm and the concrete
  sampler included."""
  data = synthetic.make_tabular('switch', 2000, 0)
  kw = dict(k=4, batch_size=100, num_steps=25, tau=0.5,
            selector=nets.MLPSelector(10, hidden=(16,)),
            approximator=nets.MLPApproximator(2, hidden=(16,)))
  assert l2x.default_config('tabular').steps_per_call == 10
  assert l2x.default_config('image').steps_per_call == 1
  one, h1 = l2x.fit(3, data.probs, data.x, config={'steps_per_call': 1},
                    log_every=5, return_history=True, **kw)
  ten, h10 = l2x.fit(3, data.probs, data.x, log_every=5, return_history=True,
                     **kw)
  np.testing.assert_array_equal(h1['step'], [5, 10, 15, 20, 25])
  np.testing.assert_array_equal(h10['step'], h1['step'])
  np.testing.assert_allclose(h10['cross_entropy'], h1['cross_entropy'],
                             rtol=1e-4)
  for a, b in zip(jax.tree.leaves((one.params, one.model_state)),
                  jax.tree.leaves((ten.params, ten.model_state))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match='steps_per_call'):
    l2x.fit(3, data.probs, data.x, config={'steps_per_call': 0}, **kw)


def test_default_config_follows_the_reference():
  c = l2x.default_config('tabular')
  assert (c.tau, c.sampler, c.optimizer, c.learning_rate, c.batch_size,
          c.epochs, c.l2) == (0.1, 'concrete', 'adam', 1e-3, 1000, 1, 1e-3)
  t = l2x.default_config('text')
  assert (t.tau, t.batch_size, t.optimizer) == (0.5, 40, 'rmsprop')
  # Every hyper-parameter is a field; k must be given.
  assert (c.k, c.modality, c.patch, c.vocab_size, c.chunk_size, c.seed) == (
      None, 'tabular', None, None, None, 0)
  assert c.checkpoint_every is None  # default_checkpoint_every
  assert l2x.default_config('image').modality == 'image'


# ---------------------------------------------------------- image and text


def test_tiny_image_task_returns_patch_masks():
  data = synthetic.make_images(48, 0, size=28, patch=4, num_classes=2)
  # Small nets (the default ones are tested in test_nets.py).
  model = l2x.fit(0, data.probs, data.x, k=4, modality='image', patch=4,
                  num_steps=3, batch_size=16,
                  selector=nets.PatchSelector((4, 4), features=(4,),
                                              context=8),
                  approximator=nets.ConvApproximator(2, features=(4,),
                                                     dense=16))
  assert model.groups.num_groups == 49
  out = l2x.explain(model, data.x[:10])
  mask, scores = out.mask, out.scores
  assert mask.shape == scores.shape == (10, 49)
  np.testing.assert_array_equal(np.asarray(mask).sum(1), 4)
  kept = np.asarray(l2x.select_inputs(model, data.x[:10]))
  assert kept.shape == (10, 28, 28, 1)
  # Only the 4 selected 4x4 patches survive.
  assert np.all((kept != 0).reshape(10, -1).sum(1) <= 4 * 16)


def test_tiny_text_task_never_selects_padding():
  data = synthetic.make_text(120, 0, seq_len=20, vocab_size=40,
                             num_planted=3)
  model = l2x.fit(0, data.probs, data.x, k=3, modality='text', num_steps=4,
                  batch_size=20,
                  selector=nets.TextSelector(40, embed_dim=8, filters=8,
                                             hidden=8),
                  approximator=nets.TextApproximator(40, 2, k=3, embed_dim=8,
                                                     hidden=8))
  assert model.groups.num_groups == 20
  mask = l2x.explain(model, data.x).mask
  mask = np.asarray(mask)
  assert mask.shape == (120, 20)
  np.testing.assert_array_equal(mask.sum(1), 3)
  assert not np.any(mask[data.x == 0])  # every row has >= 10 real tokens
  kept = np.asarray(l2x.select_inputs(model, data.x))
  assert np.all((kept != 0).sum(1) <= 3)
  acc = l2x.approximator_accuracy(model, data.x, data.y)
  assert 0.0 <= acc <= 1.0


# ------------------------------------------------------------------ REAL-X


def test_realx_freezes_the_predictor_in_phase_two(tmp_path):
  data = synthetic.make_tabular('xor', 1000, 4)
  kw = dict(k=2, realx=True, realx_num_steps=10, batch_size=100,
            sampler='straight_through', workdir=str(tmp_path), **tiny_nets())
  # Phase 1 only (phase 2 with 0 steps): the predictor trained on
  # Bernoulli(0.5) masks, checkpointed in workdir/realx_predictor.
  phase1 = l2x.fit(0, data.probs, data.x, num_steps=0, **kw)
  # Phase 1 resumes from its checkpoint; phase 2 trains the selector only.
  model, hist = l2x.fit(0, data.probs, data.x, num_steps=10,
                        return_history=True, **kw)
  assert model.realx and model.sampler == 'straight_through'
  assert 'predictor/loss' not in hist  # phase 1 was restored, not rerun
  jax.tree.map(np.testing.assert_array_equal, phase1.params['approximator'],
               model.params['approximator'])
  jax.tree.map(np.testing.assert_array_equal, phase1.model_state,
               model.model_state)
  moved = [not np.allclose(a, b) for a, b in zip(
      jax.tree.leaves(phase1.params['selector']),
      jax.tree.leaves(model.params['selector']))]
  assert any(moved)
  assert np.all(np.isfinite(hist['loss']))
  mask = l2x.explain(model, data.x[:20]).mask
  np.testing.assert_array_equal(np.asarray(mask).sum(1), 2)


# ------------------------------------------- the black box as approximator


def test_blackbox_approximator_trains_only_the_selector():
  # A linear box whose logits use features 0 and 1 only: any selection that
  # holds both keeps its output exactly, so L2X with q = the box itself
  # (approximator='blackbox') must learn to pick {0, 1}.
  data = synthetic.make_tabular('xor', 4000, 6)
  w = np.zeros((10, 2), np.float32)
  w[0], w[1] = (3.0, -3.0), (-2.0, 2.0)
  box = bb.BlackBox(apply_fn=lambda p, v: v @ p, params=jnp.asarray(w),
                    input_shape=(10,), output='logits', num_outputs=2)
  model, hist = l2x.fit(0, box, data.x, k=2, approximator='blackbox',
                        sampler='straight_through', tau=0.5,
                        learning_rate=1e-2, batch_size=200, num_steps=200,
                        selector=nets.MLPSelector(10, hidden=(16,)),
                        return_history=True)
  assert model.params['approximator'] == {}
  np.testing.assert_array_equal(model.model_state['box']['params'], w)
  assert hist['loss'][-1] < hist['loss'][0]
  mask = l2x.explain(model, data.x[:1000]).mask
  mask = np.asarray(mask)
  assert np.mean(mask[:, 0] * mask[:, 1]) > 0.95
  # Its own approximator accuracy is the black box's post-hoc accuracy.
  kept = np.asarray(l2x.select_inputs(model, data.x[:1000]))
  posthoc = np.mean(np.argmax(kept @ w, 1) == np.argmax(data.x[:1000] @ w, 1))
  acc = l2x.approximator_accuracy(model, data.x[:1000], box)
  assert acc == pytest.approx(posthoc) and acc > 0.95


def test_blackbox_approximator_box_stays_out_of_checkpoints(tmp_path):
  # The box's parameters are an input: the checkpoints hold the selector and
  # the optimizer state only, and a resumed fit uses the box it is given.
  data = synthetic.make_tabular('xor', 400, 6)
  w = np.zeros((10, 2), np.float32)
  w[0], w[1] = (3.0, -3.0), (-2.0, 2.0)

  def linear(weights):
    return bb.BlackBox(apply_fn=lambda p, v: v @ p,
                       params=jnp.asarray(weights), input_shape=(10,),
                       output='logits', num_outputs=2)

  kw = dict(k=2, approximator='blackbox', batch_size=100, num_steps=8,
            selector=nets.MLPSelector(10, hidden=(8,)),
            workdir=str(tmp_path))
  first = l2x.fit(0, linear(w), data.x, **kw)
  # The tree's keys are in each checkpoint's _METADATA (orbax).
  saved = b''.join(p.read_bytes()
                   for p in tmp_path.glob('checkpoints/*/*/_METADATA'))
  assert b'selector' in saved and b'box' not in saved
  again = l2x.fit(0, linear(2 * w), data.x, **kw)   # finished: resumes at 8
  np.testing.assert_array_equal(again.model_state['box']['params'], 2 * w)
  chex.assert_trees_all_close(again.params['selector'],
                              first.params['selector'])


# -------------------------------------------------------- argument errors


def _xor(n=200):
  return synthetic.make_tabular('xor', n, 5)


def _bad_calls():
  d = _xor()
  x, p = d.x, d.probs
  nan_x = x.copy()
  nan_x[3, 2] = np.nan
  regression = bb.from_jax(lambda v: v[:, :1], input_shape=(10,),
                           output='regression')
  box5 = bb.from_jax(lambda v: v[:, :2], input_shape=(5,))
  linear10 = bb.from_jax(lambda v: v[:, :2], input_shape=(10,))
  imgs = synthetic.make_images(8, 0, size=28, patch=4, num_classes=2)
  return [
      ('k=11 is larger than the number of groups d=10',
       lambda: l2x.fit(0, p, x, k=11)),
      (r'k=10 selects all d=10 groups \(features\): every mask would be '
       'all ones', lambda: l2x.fit(0, p, x, k=10, batch_size=100)),
      ("Unknown l2x config field.*'smapler'.*did you mean 'sampler'",
       lambda: l2x.fit(0, p, x, k=2, config={'smapler': 'subset'})),
      ('checkpoint_every must be >= 1', lambda: l2x.fit(
          0, p, x, k=2, batch_size=100, checkpoint_every=0)),
      ('k must be positive', lambda: l2x.fit(0, p, x, k=0)),
      ('k must be a Python int', lambda: l2x.fit(0, p, x, k=2.0)),
      ('tau', lambda: l2x.fit(0, p, x, k=2, tau=0.0)),
      ('tau', lambda: l2x.fit(0, p, x, k=2, tau=-1.0)),
      ('sampler', lambda: l2x.fit(0, p, x, k=2, sampler='gumbel_nope')),
      ("sampler='hard'", lambda: l2x.fit(0, p, x, k=2, sampler='hard')),
      ('sampler_kwargs', lambda: l2x.fit(0, p, x, k=2, sampler='perturbed',
                                         sampler_kwargs={'bogus': 1})),
      ('modality', lambda: l2x.fit(0, p, x, k=2, modality='audio')),
      ('patch=5 does not divide', lambda: l2x.fit(
          0, imgs.probs, imgs.x, k=2, modality='image', patch=5)),
      ('L2X needs a black box that outputs a distribution',
       lambda: l2x.fit(0, regression, x, k=2)),
      ('must sum to 1', lambda: l2x.fit(0, p * 2.0, x, k=2)),
      ('targets must be a distribution', lambda: l2x.fit(0, p[:, 0], x, k=2)),
      ('targets must be a distribution', lambda: l2x.fit(0, p[:50], x, k=2)),
      ('x contains NaN', lambda: l2x.fit(0, p, nan_x, k=2)),
      ('x must have shape', lambda: l2x.fit(0, box5, x, k=2)),
      ('x must have a floating dtype',
       lambda: l2x.fit(0, p, x.astype(np.int32), k=2)),
      ('x must be int token ids', lambda: l2x.fit(0, p, x, k=2,
                                                   modality='text')),
      ('x must be images', lambda: l2x.fit(0, p, x, k=2, modality='image')),
      ('groups were made for inputs of shape', lambda: l2x.fit(
          0, p, x, k=2, groups=masking.feature_groups((9,)))),
      ('batch_size=1000 is larger', lambda: l2x.fit(0, p, x, k=2)),
      ('realx_keep_prob', lambda: l2x.fit(0, p, x, k=2, realx=True,
                                          realx_keep_prob=0.0)),
      ('key', lambda: l2x.fit('seed', p, x, k=2)),
      ('model must be a BlackBox', lambda: l2x.fit(0, 'box', x, k=2)),
      ('approximator', lambda: l2x.fit(0, p, x, k=2, approximator='nope')),
      ("approximator='blackbox' needs a BlackBox", lambda: l2x.fit(
          0, p, x, k=2, approximator='blackbox')),
      ("approximator='blackbox' and realx=True", lambda: l2x.fit(
          0, linear10, x, k=2, approximator='blackbox', realx=True,
          batch_size=100)),
      ("Unknown l2x override field.*'taus'.*valid fields.*'tau'",
       lambda: l2x.fit(0, p, x, k=2, taus=0.5)),
      ("Unknown l2x config field.*'kk'", lambda: l2x.fit(0, p, x, {'kk': 2})),
      ('k is required', lambda: l2x.fit(0, p, x, batch_size=100)),
  ]


@pytest.mark.parametrize('index', range(len(_bad_calls())))
def test_bad_arguments_raise_value_error_naming_them(index):
  match, call = _bad_calls()[index]
  with pytest.raises(ValueError, match=match):
    call()


# ------------------------------------------- k < d and the default patches


def test_default_patch_leaves_a_grid_of_at_least_4x4():
  # L2X's 4x4 patches where they fit (28x28 -> 7x7 grid, unchanged).
  assert l2x.default_patch((28, 28, 1)) == 4
  assert l2x.default_patch((32, 32, 3)) == 4
  # Smaller images: the largest patch that still gives a 4x4 grid.
  assert l2x.default_patch((8, 8, 1)) == 2
  assert l2x.default_patch((12, 12)) == 3
  assert l2x.default_patch((30, 30, 1)) == 3   # 4 does not divide 30
  assert l2x.default_patch((6, 6, 1)) == 1
  assert l2x.default_patch((2, 3, 1)) == 1
  for shape in ((28, 28, 1), (8, 8, 1), (12, 12), (30, 30, 1), (6, 6, 1)):
    p = l2x.default_patch(shape)
    assert shape[0] % p == 0 and shape[1] % p == 0
    assert min(shape[0], shape[1]) // p >= min(4, min(shape[0], shape[1]))


def test_small_images_get_small_default_patches_and_k_equal_d_is_an_error():
  # Before: 8x8 images got the 2x2 grid of 4x4 patches, d = 4 = k, and every
  # mask was all ones, silently.
  rng = np.random.default_rng(0)
  x = rng.uniform(size=(32, 8, 8, 1)).astype(np.float32)
  z = x[:, :4, :4, 0].mean((1, 2)) - x[:, 4:, 4:, 0].mean((1, 2))
  p1 = 1 / (1 + np.exp(-20 * z))
  probs = np.stack([1 - p1, p1], 1).astype(np.float32)
  kw = dict(k=4, modality='image', num_steps=2, batch_size=16)
  with pytest.raises(ValueError, match=r'k=4 selects all d=4 groups '
                     r'\(patches\).*Choose k < 4 or smaller patches'):
    l2x.fit(0, probs, x, patch=4, **kw)
  model = l2x.fit(0, probs, x, **kw)          # default patch 2: d = 16
  assert model.groups.num_groups == 16
  assert model.groups.grid_shape == (4, 4)
  mask = np.asarray(l2x.explain(model, x).mask)
  assert mask.shape == (32, 16)
  np.testing.assert_array_equal(mask.sum(1), 4)
  # explain with k = d is refused as well; k < d is fine.
  with pytest.raises(ValueError, match='k=16 selects all d=16 groups'):
    l2x.explain(model, x, k=16)
  np.testing.assert_array_equal(
      np.asarray(l2x.explain(model, x, k=15).mask).sum(1), 15)


# ------------------------------------------------------------- checkpoints


def test_default_checkpoint_every_gives_a_few_checkpoints():
  assert l2x.default_checkpoint_every(1000, 10) == 250   # the paper's run
  assert l2x.default_checkpoint_every(40, 10) == 10
  assert l2x.default_checkpoint_every(7, 1) == 2
  assert l2x.default_checkpoint_every(0, 1) == 1
  assert l2x.default_checkpoint_every(10**6, 10) == 1000  # train.fit's
  assert l2x.default_checkpoint_every(90, 4) == 24       # multiple of 4


def test_interrupted_tabular_run_resumes_bit_identical(tmp_path, monkeypatch):
  # Before: l2x.fit did not pass checkpoint_every on (train.fit's default is
  # 1000 steps), so a shorter run had nothing to resume from.
  from xai_jax import train  # pylint: disable=g-import-not-at-top
  data = _xor(400)
  kw = dict(k=2, batch_size=50, num_steps=8, log_every=2, steps_per_call=1,
            **tiny_nets())
  full = l2x.fit(0, data.probs, data.x, workdir=str(tmp_path / 'full'), **kw)

  class Interrupted(Exception):
    pass

  save = train.save_checkpoint

  def save_then_stop(workdir, state, step, **save_kw):
    save(workdir, state, step, **save_kw)
    if step >= 3:  # the process dies right after a checkpoint at step >= 3
      raise Interrupted

  cut = str(tmp_path / 'cut')
  monkeypatch.setattr(train, 'save_checkpoint', save_then_stop)
  with pytest.raises(Interrupted):
    l2x.fit(0, data.probs, data.x, workdir=cut, **kw)
  monkeypatch.undo()
  # default_checkpoint_every(8, 1) = 2: checkpoints at 2 and 4 (of 8).
  assert train.latest_checkpoint_step(cut) == 4
  resumed, hist = l2x.fit(0, data.probs, data.x, workdir=cut,
                          return_history=True, **kw)
  np.testing.assert_array_equal(hist['step'], [6, 8])  # resumed at step 4
  assert train.latest_checkpoint_step(cut) == 8
  leaves = jax.tree.leaves((full.params, full.model_state))
  leaves_r = jax.tree.leaves((resumed.params, resumed.model_state))
  assert len(leaves) == len(leaves_r) > 0
  for a, b in zip(leaves, leaves_r):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  np.testing.assert_array_equal(l2x.explain(full, data.x).scores,
                                l2x.explain(resumed, data.x).scores)
  # A finished run returns at once with the same model.
  again = l2x.fit(0, data.probs, data.x, workdir=cut, **kw)
  for a, b in zip(leaves, jax.tree.leaves((again.params, again.model_state))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # config.checkpoint_every is passed on to the training loop.
  every = str(tmp_path / 'every')
  monkeypatch.setattr(train, 'save_checkpoint', save_then_stop)
  with pytest.raises(Interrupted):
    l2x.fit(0, data.probs, data.x, workdir=every, checkpoint_every=3, **kw)
  monkeypatch.undo()
  assert train.latest_checkpoint_step(every) == 3

