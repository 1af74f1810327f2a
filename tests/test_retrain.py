"""Tests for xai_jax.retrain (KAR / ROAR, Hooker et al. 2019)."""

import logging

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xai_jax import masking
from xai_jax import models
from xai_jax import retrain

D = 10  # features; only 0..2 carry the label
# The true ranking (features 0, 1, 2 first, no ties) and its reverse.
TRUE = np.array([3.0, 2.9, 2.8] + [1.0 - 0.1 * i for i in range(D - 3)],
                np.float32)
RANKINGS = np.stack([TRUE, -TRUE])
FAST = dict(num_steps=300, batch_size=64, learning_rate=3e-3)
FRACS = (0.1, 0.3, 0.5, 0.7, 0.9)


def _data(seed, n):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, D)).astype(np.float32)
  y = (x[:, :3].sum(1) > 0).astype(np.int32)
  return x, y


TRAIN, TEST = _data(0, 1000), _data(1, 500)


def _mlp():
  return models.make_model('mlp', num_classes=2, hidden=(32,))


# ----------------------------------------------------------------------------
# feature_masks


def test_masks_keep_and_remove_exactly_round_t_f():
  imp = np.random.default_rng(0).normal(size=(3, D))
  keep = np.asarray(retrain.feature_masks(imp, retrain.FRACTIONS, mode='keep'))
  remove = np.asarray(retrain.feature_masks(imp, retrain.FRACTIONS,
                                            mode='remove'))
  assert keep.shape == remove.shape == (3, 9, D) and keep.dtype == bool
  k = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9])
  np.testing.assert_array_equal(keep.sum(-1), np.broadcast_to(k, (3, 9)))
  np.testing.assert_array_equal(remove.sum(-1), D - np.broadcast_to(k, (3, 9)))
  np.testing.assert_array_equal(remove, ~keep)
  order = np.argsort(-imp, axis=-1)
  for r in range(3):
    for j, kj in enumerate(k):
      assert set(np.flatnonzero(keep[r, j])) == set(order[r, :kj])


def test_masks_clip_to_one_and_f_minus_one():
  imp = np.arange(4.0)[None]
  keep = np.asarray(retrain.feature_masks(imp, (0.05, 0.99)))
  np.testing.assert_array_equal(keep.sum(-1), [[1, 3]])
  np.testing.assert_array_equal(keep[0, 0], [False, False, False, True])


def test_per_example_maps_equal_the_global_map():
  imp = np.random.default_rng(1).normal(size=(2, D))
  per = np.broadcast_to(imp[:, None], (2, 7, D))
  for mode in retrain.MODES:
    g = np.asarray(retrain.feature_masks(imp, (0.2, 0.6), mode=mode))
    p = np.asarray(retrain.feature_masks(per, (0.2, 0.6), mode=mode))
    assert p.shape == (2, 2, 7, D)
    np.testing.assert_array_equal(p, np.broadcast_to(g[:, :, None], p.shape))


def test_ties_are_broken_at_random_with_a_key():
  const = np.zeros((1, 50, 20))
  by_index = np.asarray(retrain.feature_masks(const, (0.25,)))
  assert np.all(by_index[..., :5]) and not np.any(by_index[..., 5:])
  a = np.asarray(retrain.feature_masks(const, (0.25,), key=0))
  b = np.asarray(retrain.feature_masks(const, (0.25,), key=0))
  c = np.asarray(retrain.feature_masks(const, (0.25,),
                                       key=jax.random.key(1)))
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  np.testing.assert_array_equal(a.sum(-1), 5)
  # A random ordering: every feature is kept about 1/4 of the time.
  freq = a[0, 0].mean(0)
  assert len(np.unique(a[0, 0], axis=0)) > 40
  assert 0.05 < freq.min() and freq.max() < 0.5
  # Ties only: strict orderings are unaffected by the key.
  imp = np.random.default_rng(2).normal(size=(2, D))
  np.testing.assert_array_equal(retrain.feature_masks(imp, key=3),
                                retrain.feature_masks(imp))


@pytest.mark.parametrize('kwargs,name', [
    (dict(importance=np.zeros(5)), 'importance'),
    (dict(importance=np.zeros((1, 1))), 'importance'),
    (dict(importance=np.array([[0.0, np.nan, 1.0]])), 'importance'),
    (dict(fractions=(0.0, 0.5)), 'fractions'),
    (dict(fractions=(0.5, 1.0)), 'fractions'),
    (dict(fractions=(0.5, 0.2)), 'fractions'),
    (dict(mode='drop'), 'mode'),
])
def test_feature_masks_bad_inputs(kwargs, name):
  args = dict(importance=np.zeros((1, 4)), fractions=(0.5,))
  args.update(kwargs)
  imp = args.pop('importance')
  with pytest.raises(ValueError, match=name):
    retrain.feature_masks(imp, **args)


# ----------------------------------------------------------------------------
# retrain_curve


def test_kar_true_ranking_beats_reversed():
  res = retrain.retrain_curve(0, _mlp(), TRAIN, TEST, RANKINGS, RANKINGS,
                              fractions=FRACS, **FAST)
  assert res.accuracy.shape == (2, 5) and res.accuracy_runs.shape == (2, 1, 5)
  np.testing.assert_array_equal(res.num_kept, [1, 3, 5, 7, 9])
  np.testing.assert_allclose(res.fractions, [0.1, 0.3, 0.5, 0.7, 0.9])
  assert res.accuracy[0, 1] > 0.85  # keeps 0, 1, 2 at t = 0.3
  assert res.accuracy[1, 1] < 0.65  # keeps 7, 8, 9: chance
  assert res.auc[0] > res.auc[1] + 0.2
  manual = np.trapezoid(res.accuracy, res.fractions, axis=-1) / 0.8
  np.testing.assert_allclose(res.auc, manual)


def test_roar_true_ranking_drops_faster():
  res = retrain.retrain_curve(1, _mlp(), TRAIN, TEST, RANKINGS, RANKINGS,
                              mode='remove', fractions=FRACS, **FAST)
  assert res.accuracy[0, 1] < 0.65  # 0, 1, 2 removed at t = 0.3
  assert res.accuracy[1, 1] > 0.85  # 7, 8, 9 removed
  assert res.auc[0] < res.auc[1] - 0.2


def test_vmapped_copies_equal_a_single_run_and_one_compile(caplog):
  """R=2 rankings x 3 fractions x 2 repeats train in ONE compiled program,
  and its first copy equals a single-copy run with the same key."""
  imp = np.random.default_rng(3).normal(size=(2, D))
  orig = models.classifier_loss
  calls = []

  def counted_loss(*args, **kwargs):
    calls.append(1)
    # The training step (and with it the loss) is traced once per call.
    return chex.assert_max_traces(orig(*args, **kwargs), n=1)

  kw = dict(num_steps=100, batch_size=32, learning_rate=3e-3)
  with pytest.MonkeyPatch.context() as mp, jax.log_compiles():
    mp.setattr(models, 'classifier_loss', counted_loss)
    caplog.set_level(logging.WARNING)
    full = retrain.retrain_curve(7, _mlp(), TRAIN, TEST, imp, imp,
                                 fractions=(0.2, 0.5, 0.8), repeats=2, **kw)
  compiles = [r for r in caplog.records
              if 'Compiling jit(_train_steps)' in r.getMessage()]
  assert len(compiles) == 1 and len(calls) == 1
  assert full.accuracy_runs.shape == (2, 2, 3)
  np.testing.assert_allclose(full.accuracy, full.accuracy_runs.mean(1))
  single = retrain.retrain_curve(7, _mlp(), TRAIN, TEST, imp[:1], imp[:1],
                                 fractions=(0.2,), repeats=1, **kw)
  assert single.accuracy.shape == (1, 1)
  np.testing.assert_allclose(single.accuracy[0, 0],
                             full.accuracy_runs[0, 0, 0], atol=4e-3)
  np.testing.assert_allclose(single.auc, single.accuracy[:, 0])


def test_same_key_same_result_and_per_example_maps():
  # (The shapes of the KAR test: the compiled program is reused.)
  kw = dict(fractions=FRACS, fill=0.5, **FAST)
  a = retrain.retrain_curve(jax.random.key(5), _mlp(), TRAIN, TEST, RANKINGS,
                            RANKINGS, **kw)
  b = retrain.retrain_curve(jax.random.key(5), _mlp(), TRAIN, TEST, RANKINGS,
                            RANKINGS, **kw)
  for u, v in zip(a, b):
    np.testing.assert_array_equal(u, v)
  # Per-example maps that are all equal give the global maps' result.
  per_tr = np.broadcast_to(RANKINGS[:, None], (2, len(TRAIN[0]), D))
  per_te = np.broadcast_to(RANKINGS[:, None], (2, len(TEST[0]), D))
  c = retrain.retrain_curve(jax.random.key(5), _mlp(), TRAIN, TEST, per_tr,
                            per_te, **kw)
  np.testing.assert_allclose(c.accuracy_runs, a.accuracy_runs, atol=4e-3)


def test_patch_groups_and_per_example_importance():
  """8x8 images, 4 patches of 4x4; the label is the sign of the mean of the
  patch given by each example's own map (per-example importance)."""
  rng = np.random.default_rng(5)
  groups = masking.patch_groups((8, 8, 1), 4)

  def data(n):
    x = rng.normal(size=(n, 8, 8, 1)).astype(np.float32)
    where = rng.integers(0, 4, size=n)
    patches = np.asarray(groups.reduce(x, 'mean'))
    y = (patches[np.arange(n), where] > 0).astype(np.int32)
    imp = np.eye(4, dtype=np.float32)[where][None]  # [1, n, 4]
    return (x, y), imp

  (tr, imp_tr), (te, imp_te) = data(800), data(400)
  res = retrain.retrain_curve(0, _mlp(), tr, te, imp_tr, imp_te,
                              groups=groups, fractions=(0.25,), fill='zero',
                              num_steps=300, batch_size=64,
                              learning_rate=3e-3)
  np.testing.assert_array_equal(res.num_kept, [1])
  # Only the informative patch is kept (the rest zeroed): the label is the
  # sign of the sum of what is left.
  assert res.accuracy[0, 0] > 0.85


def test_token_inputs_are_padded():
  """Tokens: removed positions become pad_id; the label is token 0's class."""
  rng = np.random.default_rng(6)
  seq = 6

  def data(n):
    x = rng.integers(1, 5, size=(n, seq)).astype(np.int32)
    return x, (x[:, 0] > 2).astype(np.int32)

  imp = np.arange(seq, 0, -1, dtype=np.float32)[None]  # position 0 first
  imp = np.concatenate([imp, -imp])
  res = retrain.retrain_curve(0, _mlp(), data(600), data(300), imp, imp,
                              groups=masking.token_groups(seq),
                              fractions=(0.2,), num_steps=300, batch_size=64,
                              learning_rate=3e-3)
  assert res.accuracy[0, 0] > 0.9 and res.accuracy[1, 0] < 0.7


@pytest.mark.parametrize('kwargs,name', [
    (dict(importance_train=np.zeros(D)), 'importance_train'),
    (dict(importance_train=np.zeros((1, D + 1))), 'importance_train'),
    (dict(importance_test=np.zeros((1, 7, D))), 'importance_test'),
    (dict(importance_train=np.full((1, D), np.inf)), 'importance_train'),
    (dict(importance_test=np.zeros((2, D))), 'importance_test'),
    (dict(fractions=(0.3, 0.2)), 'fractions'),
    (dict(fractions=(0.0,)), 'fractions'),
    (dict(mode='roar'), 'mode'),
    (dict(fill='median'), 'fill'),
    (dict(fill=float('nan')), 'fill'),
    (dict(train=(TRAIN[0], TRAIN[1][:-1])), 'train'),
    (dict(test=(TEST[0], TEST[1] + 1)), r'test\[1\]'),
    (dict(repeats=0), 'repeats'),
    (dict(num_steps=0), 'num_steps'),
    (dict(key=-1), 'key'),
    (dict(groups=masking.patch_groups((4, 4), 2)), 'groups'),
])
def test_retrain_curve_bad_inputs(kwargs, name):
  args = dict(key=0, module=_mlp(), train=TRAIN, test=TEST,
              importance_train=np.zeros((1, D)),
              importance_test=np.zeros((1, D)))
  args.update(kwargs)
  with pytest.raises(ValueError, match=name):
    retrain.retrain_curve(**args)


def test_step_loop_equals_the_scan_and_is_chosen_for_convolutions():
  """loop='steps' (one call per step, copies unrolled) trains exactly what
  loop='scan' trains; 'auto' picks it for a convolutional module on CPU."""
  imp = np.random.default_rng(5).normal(size=(2, D))
  kw = dict(num_steps=30, batch_size=32, fractions=(0.3, 0.6))
  a = retrain.retrain_curve(2, _mlp(), TRAIN, TEST, imp, imp, loop='scan', **kw)
  b = retrain.retrain_curve(2, _mlp(), TRAIN, TEST, imp, imp, loop='steps',
                            **kw)
  np.testing.assert_allclose(a.accuracy_runs, b.accuracy_runs, atol=1e-6)
  conv = nn.Sequential([nn.Conv(2, (3,)), lambda h: h.reshape(h.shape[0], -1),
                        nn.Dense(2)])
  assert retrain._has_convolution(conv, jnp.zeros((1, 8, 1)))
  assert not retrain._has_convolution(_mlp(), jnp.zeros((1, D)))
  with pytest.raises(ValueError, match='loop'):
    retrain.retrain_curve(2, _mlp(), TRAIN, TEST, imp, imp, loop='fast', **kw)


def test_evalx_curve_scores_rankings_without_retraining():
  from xai_jax import realx
  evaluator = realx.train_evalx(0, TRAIN[0], TRAIN[1], num_steps=600,
                                batch_size=64)
  imp = np.stack([np.arange(D, 0, -1), np.arange(D)]).astype(np.float32)
  res = retrain.evalx_curve(evaluator, TEST[0], TEST[1], imp,
                            fractions=(0.3, 0.7))
  assert res.accuracy.shape == (2, 2)
  assert res.accuracy[0, 0] > 0.8 > 0.65 > res.accuracy[1, 0]
  np.testing.assert_allclose(res.auc, res.accuracy.mean(1))
  per_row = np.broadcast_to(imp[:, None], (2, len(TEST[0]), D))
  same = retrain.evalx_curve(evaluator, TEST[0], TEST[1], per_row,
                             fractions=(0.3, 0.7))
  np.testing.assert_allclose(same.accuracy, res.accuracy)
