"""NormLIME (xai_jax.normlime): the formula, invariances, the protocol."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import xai_jax as xj
from xai_jax import attribution
from xai_jax import blackbox as bb
from xai_jax import masking
from xai_jax import normlime


def _loop_normlime(w, ids, y, f, c, variant='squared', positive_only=False):
  """The formula as a plain loop over instances and local features."""
  sums = np.zeros((c, f))
  counts = np.zeros((c, f), int)
  for i in range(w.shape[0]):
    valid = ids[i] >= 0
    norm = np.abs(w[i][valid]).sum()
    for j in range(w.shape[1]):
      if ids[i, j] < 0 or (positive_only and w[i, j] <= 0):
        continue
      num = w[i, j] ** 2 if variant == 'squared' else abs(w[i, j])
      if variant == 'avg':
        sums[y[i], ids[i, j]] += num
      else:
        sums[y[i], ids[i, j]] += num / norm if norm > 0 else 0.0
      counts[y[i], ids[i, j]] += 1
  per_class = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
  per_class[~np.isin(np.arange(c), y)] = np.nan
  tot = counts.sum(0)
  glob = np.where(tot > 0, sums.sum(0) / np.maximum(tot, 1), 0.0)
  return glob, per_class, counts


def _random_local(seed, n=40, m=6, f=9, c=4):
  rng = np.random.default_rng(seed)
  w = rng.normal(size=(n, m)).astype(np.float32)
  ids = rng.integers(0, f - 1, size=(n, m))          # repeated ids; f-1 unused
  ids[rng.uniform(size=(n, m)) < 0.15] = -1           # padding
  y = rng.integers(0, c - 1, size=n)                  # class c-1 never occurs
  return w, ids, y, f, c


@pytest.mark.parametrize('variant', ['squared', 'abs', 'avg'])
@pytest.mark.parametrize('positive_only', [False, True])
def test_aggregate_matches_the_formula_loop(variant, positive_only):
  w, ids, y, f, c = _random_local(0)
  with pytest.warns(UserWarning, match=r'class\(es\) \[3\]'):
    maps = normlime.aggregate(w, ids, y, num_features=f, num_classes=c,
                              variant=variant, positive_only=positive_only)
  glob, per_class, counts = _loop_normlime(w, ids, y, f, c, variant,
                                           positive_only)
  np.testing.assert_allclose(maps.global_, glob, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(maps.per_class, per_class, rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(maps.counts, counts)
  assert np.all(np.isnan(np.asarray(maps.per_class)[3]))
  assert float(maps.global_[f - 1]) == 0.0 and int(maps.counts[:, f - 1].sum()) == 0


def test_aggregate_is_invariant_to_instance_order():
  w, ids, y, f, c = _random_local(1)
  perm = np.random.default_rng(2).permutation(w.shape[0])
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', UserWarning)
    a = normlime.aggregate(w, ids, y, num_features=f, num_classes=c)
    b = normlime.aggregate(w[perm], ids[perm], y[perm], num_features=f,
                           num_classes=c)
  np.testing.assert_allclose(a.global_, b.global_, rtol=1e-5)
  np.testing.assert_allclose(a.per_class, b.per_class, rtol=1e-5)


def test_aggregate_occurrence_mean_not_instance_mean():
  # Feature 1 occurs once (weight 1 of norm 2); feature 0 in both rows.
  w = np.array([[1.0, 1.0], [2.0, 0.0]], np.float32)
  ids = np.array([[0, 1], [0, -1]])
  maps = normlime.aggregate(w, ids, np.array([0, 0]), num_features=2,
                            num_classes=1)
  np.testing.assert_allclose(maps.global_, [(0.5 + 2.0) / 2, 0.5])


@pytest.mark.parametrize('kwargs,match', [
    (dict(feature_ids=np.zeros((3, 2), int)), 'feature_ids must have the shape'),
    (dict(feature_ids=np.full((4, 2), 5)), r'feature_ids must be in \[0, 5\)'),
    (dict(feature_ids=np.zeros((4, 2))), 'feature_ids must be integers'),
    (dict(labels=np.array([0, 1, 2, 3])), r'labels must be in \[0, 2\)'),
    (dict(labels=np.array([0, 1])), r'labels must have shape \[4\]'),
    (dict(weights=np.full((4, 2), np.nan)), 'weights'),
    (dict(variant='cube'), 'variant'),
])
def test_aggregate_bad_input(kwargs, match):
  args = dict(weights=np.ones((4, 2), np.float32),
              feature_ids=np.zeros((4, 2), int), labels=np.array([0, 1, 0, 1]),
              num_features=5, num_classes=2)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    normlime.aggregate(**args)


def _np_sp_lime(w, ids, f, num_exps, top):
  a = np.where(ids >= 0, np.abs(w), 0.0)
  thr = -np.sort(-a, 1)[:, top - 1:top]
  a = np.where(a >= thr, a, 0.0)
  big = np.zeros((w.shape[0], f))
  for i in range(w.shape[0]):
    for j in range(w.shape[1]):
      if ids[i, j] >= 0:
        big[i, ids[i, j]] += a[i, j]
  imp = np.sqrt(big.sum(0))
  covered = np.zeros(f, bool)
  picks = []
  for _ in range(num_exps):
    gain = [(-np.inf if i in picks else imp[(big[i] > 0) & ~covered].sum())
            for i in range(w.shape[0])]
    i = int(np.argmax(gain))
    picks.append(i)
    covered |= big[i] > 0
  return imp, picks


def test_sp_lime_matches_a_numpy_greedy_pick():
  w, ids, _, f, _ = _random_local(3, n=30, m=8, f=20)
  ids = np.where(ids >= 0, ids, -1)
  sp = normlime.sp_lime(w, ids, num_features=f, num_exps=4,
                        explanation_features=3)
  imp, picks = _np_sp_lime(w, ids, f, 4, 3)
  np.testing.assert_allclose(sp.importance, imp, rtol=1e-5)
  assert list(np.asarray(sp.picks)) == picks
  assert np.all(np.diff(np.asarray(sp.coverage)) >= 0)
  with pytest.raises(ValueError, match='num_exps'):
    normlime.sp_lime(w, ids, num_features=f, num_exps=31)


# ------------------------------------------------------------ end to end
def _linear_box(c=3, d=6, relevant=(0, 1)):
  wmat = np.zeros((d, c), np.float32)
  for j, r in enumerate(relevant):
    wmat[r, j % c] = 3.0
    wmat[r, (j + 1) % c] = -3.0
  return bb.from_jax(lambda x: x @ jnp.asarray(wmat), input_shape=(d,),
                     output='logits')


def test_fit_finds_the_relevant_columns_and_explains_per_class():
  box = _linear_box()
  x = np.random.default_rng(0).normal(size=(300, 6)).astype(np.float32)
  ex = normlime.fit(0, box, x, num_samples=500)
  top2 = set(np.argsort(-np.asarray(ex.maps.global_))[:2].tolist())
  assert top2 == {0, 1}
  out = normlime.explain(ex, x[:5])
  assert out.scores.shape == (5, 6)
  pred = np.argmax(np.asarray(box.apply_fn(box.params, x[:5])), -1)
  np.testing.assert_allclose(out.scores, np.asarray(ex.maps.per_class)[pred])


def test_chunking_and_order_do_not_change_the_explanations():
  box = _linear_box()
  x = np.random.default_rng(1).normal(size=(23, 6)).astype(np.float32)
  a = normlime.local_explanations(0, box, x, num_samples=200)
  b = normlime.local_explanations(0, box, x, num_samples=200,
                                  examples_per_chunk=5)
  np.testing.assert_allclose(a.weights, b.weights, rtol=1e-4, atol=1e-6)
  perm = np.random.default_rng(2).permutation(23)
  c = normlime.local_explanations(0, box, x[perm], num_samples=200,
                                  examples_per_chunk=5)
  np.testing.assert_allclose(np.asarray(a.weights)[perm], c.weights,
                             rtol=1e-4, atol=1e-6)
  # The local weights are attribution.lime's on the whole batch.
  ref = attribution.lime(box, x, key=0, num_samples=200, space='probs',
                         feature_mean=x.mean(0), feature_std=x.std(0),
                         target=np.asarray(a.labels))
  np.testing.assert_allclose(a.weights, ref, rtol=1e-4, atol=1e-6)


def test_image_patches_default_grid():
  def f(x):   # class 1 iff the top-left 4x4 patch is bright
    s = jnp.mean(x[:, :4, :4, 0], axis=(1, 2)) - 0.5
    return jnp.stack([-s, s], -1) * 10.0
  box = bb.from_jax(f, input_shape=(8, 8, 1), output='logits')
  x = np.random.default_rng(0).uniform(size=(64, 8, 8, 1)).astype(np.float32)
  ex = normlime.fit(0, box, x, num_samples=300)
  assert ex.maps.global_.shape == (4,)
  assert int(np.argmax(ex.maps.global_)) == 0
  assert normlime.explain(ex, x[:3]).scores.shape == (3, 4)


def test_tokens_use_vocabulary_ids_and_skip_padding():
  v = 12

  def f(t):   # class 1 iff token 5 is present
    has = jnp.any(t == 5, axis=-1).astype(jnp.float32)
    return jnp.stack([-has, has], -1) * 4.0
  box = bb.from_jax(f, input_shape=(7,), output='logits', input_dtype='int')
  rng = np.random.default_rng(0)
  x = rng.integers(1, v, size=(80, 7)).astype(np.int32)
  x[:, 5:] = 0                                              # padding
  ex = normlime.fit(0, box, x, num_samples=200, vocab_size=v,
                    positive_only=True)
  assert ex.maps.global_.shape == (v,)
  assert int(np.argmax(ex.maps.global_)) == 5
  assert int(ex.maps.counts[:, 0].sum()) == 0              # PAD left out
  s = np.asarray(normlime.explain(ex, x[:4]).scores)
  assert s.shape == (4, 7) and np.all(s[:, 5:] == 0)
  with pytest.raises(ValueError, match='vocab_size'):
    normlime.fit(0, box, x, num_samples=50, vocab_size=4)


def test_registry_round_trip_and_config_errors():
  method = xj.EXPLAINERS['normlime']
  assert method is normlime
  box = _linear_box()
  x = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
  ex = method.fit(0, box, x, method.default_config(), num_samples=100)
  out = method.explain(ex, x[:2])
  assert isinstance(out, xj.Explanation) and out.scores.shape == (2, 6)
  with pytest.raises(ValueError, match='num_sampels'):
    method.fit(0, box, x, num_sampels=10)
  with pytest.raises(ValueError, match='mode'):
    method.fit(0, box, x, mode='pixels')
  with pytest.raises(ValueError, match='target'):
    method.fit(0, box, x, target=np.full(40, 7))
  # Same key, same maps.
  again = method.fit(0, box, x, method.default_config(), num_samples=100)
  np.testing.assert_array_equal(ex.maps.global_, again.maps.global_)


def test_explain_uses_the_global_map_for_a_class_never_seen():
  box = _linear_box()
  x = np.random.default_rng(0).normal(size=(30, 6)).astype(np.float32)
  with pytest.warns(UserWarning, match='no explained instance'):
    ex = normlime.fit(0, box, x, num_samples=100, target=np.zeros(30, int))
  out = normlime.explain(ex, x[:2], target=2)
  np.testing.assert_allclose(out.scores, np.broadcast_to(ex.maps.global_,
                                                         (2, 6)))
  assert np.isfinite(np.asarray(out.scores)).all()


def test_switch_regime_maps_need_local_sampling():
  """On L2X's switch set the maps per regime find each regime's features
  when LIME samples around the row, better than with lime's global sampling."""
  from xai_jax.data import synthetic
  ds = synthetic.make_tabular('switch', 600, 1)
  box = synthetic.oracle_blackbox('switch')
  gt = np.asarray(ds.ground_truth, bool)
  patterns, regime = np.unique(gt, axis=0, return_inverse=True)

  def recall(around):
    loc = normlime.local_explanations(0, box, ds.x, num_samples=500,
                                      sample_around_instance=around)
    maps = normlime.aggregate(loc.weights, loc.feature_ids,
                              regime.reshape(-1), num_features=10,
                              num_classes=2)
    top = np.argsort(-np.asarray(maps.per_class), 1)[:, :5]
    return np.mean([patterns[g][top[g]].mean() for g in range(2)])

  local, global_ = recall(True), recall(False)
  assert local >= 0.8 and local > global_


def test_cluster_segments_groups_similar_segments_across_images():
  rng = np.random.default_rng(0)
  d = np.concatenate([rng.normal(0, 0.1, (6, 4, 3)),
                      rng.normal(5, 0.1, (6, 4, 3))], 1)        # [6, 8, 3]
  present = np.ones((6, 8), bool)
  present[:, 7] = False
  ids = np.asarray(normlime.cluster_segments(0, d, present, num_clusters=2))
  assert np.all(ids[:, 7] == -1)
  assert len(set(ids[:, :4].ravel())) == 1 and len(set(ids[:, 4:7].ravel())) == 1
  assert ids[0, 0] != ids[0, 4]
  np.testing.assert_array_equal(
      ids, normlime.cluster_segments(0, d, present, num_clusters=2))
  with pytest.raises(ValueError, match='num_clusters'):
    normlime.cluster_segments(0, d, present, num_clusters=100)
  with pytest.raises(ValueError, match='present'):
    normlime.cluster_segments(0, d, present[:, :3], num_clusters=2)


def test_superpixels_end_to_end():
  pytest.importorskip('skimage')
  rng = np.random.default_rng(0)
  x = np.zeros((12, 16, 16, 1), np.float32)
  x[:, :, :8] = 0.9                        # the left half decides
  x[6:, :, :8] = 0.6
  x += rng.uniform(0, 0.05, size=x.shape).astype(np.float32)

  def f(z):
    s = jnp.mean(z[:, :, :8, 0], axis=(1, 2)) - 0.75
    return jnp.stack([-s, s], -1) * 10.0
  box = bb.from_jax(f, input_shape=(16, 16, 1), output='logits')
  groups = masking.superpixel_groups(x, n_segments=4, compactness=0.1)
  desc, present = masking.segment_descriptors(x, groups)
  ids = normlime.cluster_segments(0, desc, present, num_clusters=2)
  ex = normlime.fit(0, box, x, groups=groups, feature_ids=ids,
                    num_samples=200, examples_per_chunk=5)
  assert ex.maps.global_.shape == (2,)
  # The cluster of the left-half segments carries the importance.
  left = np.asarray(ids)[np.arange(12), np.asarray(
      groups.assignment)[:, 8, 2, 0]]
  assert len(set(left.tolist())) == 1
  assert int(np.argmax(ex.maps.global_)) == int(left[0])
  with pytest.raises(ValueError, match='custom feature_ids'):
    normlime.explain(ex, x[:2])


def test_a_model_that_returns_nan_raises():
  x = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
  nan_on_x = bb.from_jax(lambda z: jnp.log(z) @ jnp.ones((4, 3)),
                         input_shape=(4,))
  with pytest.raises(ValueError, match='model returned NaN or inf outputs'):
    normlime.fit(0, nan_on_x, x, num_samples=50)
  # Finite on x, NaN on LIME's perturbed rows (far from the data).
  nan_far = bb.from_jax(
      lambda z: jnp.where(jnp.abs(z).max(-1, keepdims=True) > 2.5, jnp.nan,
                          z @ jnp.ones((4, 3))), input_shape=(4,))
  with pytest.raises(ValueError, match='NaN or inf on x or its perturbed'):
    normlime.fit(0, nan_far, np.clip(x, -2, 2), num_samples=200)
  ok = normlime.fit(0, _linear_box(d=4), x, num_samples=50)
  with pytest.raises(ValueError, match='model returned NaN'):
    normlime.explain(ok.replace(model=nan_on_x), x)
