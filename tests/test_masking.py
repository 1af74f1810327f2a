"""Tests for xai_jax.masking."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xai_jax import masking


def test_patch_groups_grid_and_expand():
  g = masking.patch_groups((28, 28, 1), 4)
  assert g.num_groups == 49 and g.grid_shape == (7, 7)
  a = np.asarray(g.assignment)[..., 0]
  assert a[0, 0] == 0 and a[3, 3] == 0 and a[0, 4] == 1 and a[4, 0] == 7
  assert a[27, 27] == 48
  counts = np.bincount(a.ravel())
  assert np.all(counts == 16)
  m = jnp.zeros((2, 49)).at[0, 8].set(1.0).at[1, 48].set(1.0)
  pix = g.expand(m)
  assert pix.shape == (2, 28, 28, 1)
  assert float(pix[0].sum()) == 16 and float(pix[0, 4:8, 4:8].sum()) == 16
  assert float(pix[1, 24:, 24:].sum()) == 16


def test_reduce_is_adjoint_of_expand():
  g = masking.patch_groups((8, 8, 3), 2)
  key = jax.random.key(0)
  m = jax.random.uniform(key, (3, g.num_groups))
  v = jax.random.normal(jax.random.key(1), (3, 8, 8, 3))
  lhs = jnp.sum(g.expand(m) * v)
  rhs = jnp.sum(m * g.reduce(v))
  np.testing.assert_allclose(lhs, rhs, rtol=1e-5)
  means = g.reduce(jnp.ones((1, 8, 8, 3)), 'mean')
  np.testing.assert_allclose(means, 1.0)


def test_feature_token_segment_groups():
  g = masking.feature_groups((10,))
  m = jnp.eye(10)[:3]
  np.testing.assert_array_equal(g.expand(m), m)
  t = masking.token_groups(7)
  assert t.num_groups == 7 and t.kind == 'tokens'
  seg = np.array([[5, 5, 9], [9, 2, 2]])
  s = masking.segment_groups(seg, (2, 3, 3))
  assert s.num_groups == 3
  pix = s.expand(jnp.array([[0.0, 1.0, 0.0]]))  # id 5 -> group 1
  np.testing.assert_array_equal(pix[0, :, :, 0], [[1, 1, 0], [0, 0, 0]])


def test_apply_mask_baselines():
  x = jnp.arange(12.0).reshape(2, 6)
  m = jnp.array([[1, 0, 1, 0, 1, 0], [0] * 6], jnp.float32)
  out = masking.apply_mask(x, m)
  np.testing.assert_array_equal(out[0], [0, 0, 2, 0, 4, 0])
  np.testing.assert_array_equal(out[1], 0)
  ref = jnp.full((6,), -1.0)
  out = masking.apply_mask(x, m, ref)
  np.testing.assert_array_equal(out[1], -1)
  # relaxed masks interpolate
  np.testing.assert_allclose(masking.apply_mask(x, 0.25 * jnp.ones_like(x),
                                                ref), 0.25 * x - 0.75)


def test_make_baseline_kinds():
  x = jax.random.uniform(jax.random.key(0), (4, 16, 16, 1))
  assert float(jnp.abs(masking.make_baseline('zero', x)).sum()) == 0
  data = jax.random.uniform(jax.random.key(1), (10, 16, 16, 1))
  mean = masking.make_baseline('mean', x, data=data)
  np.testing.assert_allclose(mean[0], data.mean(0), rtol=1e-6)
  np.testing.assert_allclose(
      masking.make_baseline('mean', x, data=data.mean(0)), mean)
  # never from the batch itself: a row's baseline does not depend on it
  np.testing.assert_array_equal(
      masking.make_baseline('mean', x[:1], data=data)[0], mean[0])
  with pytest.raises(ValueError, match='data is needed'):
    masking.make_baseline('mean', x)
  with pytest.raises(ValueError, match=r'data must have shape \[m, 16, 16, 1\]'):
    masking.make_baseline('mean', x, data=jnp.ones((3, 8)))
  with pytest.raises(ValueError, match='data contains NaN'):
    masking.make_baseline('mean', x, data=data.at[0, 0, 0, 0].set(jnp.nan))
  blur = masking.make_baseline('blur', x, blur_sigma=2.0)
  assert blur.shape == x.shape
  assert float(blur.std()) < float(x.std()) / 2  # smoothing removes variance
  np.testing.assert_allclose(blur.mean(), x.mean(), atol=0.02)
  const = jnp.ones((1, 16, 16, 1))
  np.testing.assert_allclose(masking.gaussian_blur(const, 3.0), const,
                             rtol=1e-5)
  n1 = masking.make_baseline('noise', x, key=jax.random.key(1))
  n2 = masking.make_baseline('noise', x, key=jax.random.key(1))
  np.testing.assert_array_equal(n1, n2)
  r = masking.make_baseline('reference', x, reference=jnp.full((16, 16, 1), .5))
  np.testing.assert_allclose(r, 0.5)


def test_mask_tokens():
  tok = jnp.array([[3, 4, 5, 6]])
  out = masking.mask_tokens(tok, jnp.array([[1.0, 0.0, 0.9, 0.1]]))
  np.testing.assert_array_equal(out, [[3, 0, 5, 0]])


def test_apply_mask_on_token_ids_is_hard():
  tok = jnp.array([[3, 4, 5, 6], [7, 8, 9, 10]], jnp.int32)
  keep = jnp.array([[1.0, 0.0, 0.9, 0.1], [0.0, 1.0, 1.0, 0.0]])
  out = masking.apply_mask(tok, keep, 0)
  assert out.dtype == jnp.int32
  np.testing.assert_array_equal(out[:1], masking.mask_tokens(tok[:1], keep[:1]))
  np.testing.assert_array_equal(out, [[3, 0, 5, 0], [0, 8, 9, 0]])
  np.testing.assert_array_equal(
      masking.apply_mask(tok, keep > 0.5, jnp.array([1, 2, 3, 4])),
      [[3, 2, 5, 4], [1, 8, 9, 4]])


def test_make_baseline_scalar_reference():
  x = jnp.ones((2, 3))
  np.testing.assert_array_equal(
      masking.make_baseline('reference', x, reference=0.5), jnp.full((2, 3), .5))
  with pytest.raises(ValueError, match='reference must be a scalar'):
    masking.make_baseline('reference', x, reference=jnp.ones((4,)))


def test_selection_mask_and_check_groups():
  x = jnp.ones((2, 4, 4))
  g = masking.patch_groups((4, 4), 2)
  sel = jnp.array([[1, 0, 0, 1], [0, 0, 0, 0]])
  np.testing.assert_array_equal(masking.selection_mask(sel, x, g),
                                g.expand(sel.astype(jnp.float32)))
  full = np.zeros((2, 4, 4), bool)
  full[0, 0, 0] = True
  m = masking.selection_mask(full, x)
  assert m.dtype == jnp.float32 and float(m.sum()) == 1.0
  with pytest.raises(ValueError, match='binary'):
    masking.selection_mask(jnp.full((2, 4), 0.5), x, g)
  with pytest.raises(ValueError, match='pass groups='):
    masking.selection_mask(sel, x)
  with pytest.raises(ValueError, match='mine must have shape'):
    masking.selection_mask(jnp.ones((2, 5)), x, g, name='mine')
  masking.check_groups(None, (4, 4))
  masking.check_groups(g, (4, 4))
  with pytest.raises(ValueError, match='built for inputs of shape'):
    masking.check_groups(g, (8, 8))
  with pytest.raises(ValueError, match='FeatureGroups'):
    masking.check_groups('patches', (4, 4))


def test_bad_inputs():
  with pytest.raises(ValueError, match='patch=5 does not divide'):
    masking.patch_groups((28, 28, 1), 5)
  with pytest.raises(ValueError, match='baseline'):
    masking.make_baseline('gray', jnp.ones((2, 3)))
  with pytest.raises(ValueError, match='needs a PRNG key'):
    masking.make_baseline('noise', jnp.ones((2, 3)))
  with pytest.raises(ValueError, match='baseline must be'):
    masking.apply_mask(jnp.ones((2, 3)), jnp.ones((2, 3)), jnp.ones((4,)))
  with pytest.raises(ValueError, match='mask of shape'):
    masking.apply_mask(jnp.ones((2, 3)), jnp.ones((2, 4)))
  with pytest.raises(ValueError, match='group_mask'):
    masking.patch_groups((8, 8), 4).expand(jnp.ones((1, 5)))
  with pytest.raises(ValueError, match='blur'):
    masking.make_baseline('blur', jnp.ones((2, 3)))


# ------------------------------------------------- per-image (batched) groups
def _two_region_images():
  """2 images 16x16x1, each with two flat regions (a different split)."""
  imgs = np.zeros((2, 16, 16, 1), np.float32)
  imgs[0, :, 8:] = 1.0                      # left / right
  imgs[1, 10:, :] = 1.0                     # top / bottom
  return imgs


def test_superpixel_groups_slic_gives_consecutive_ids_per_image():
  pytest.importorskip('skimage')
  imgs = _two_region_images()
  g = masking.superpixel_groups(imgs, n_segments=6, compactness=0.1)
  assert g.batched and g.batch_size == 2 and g.kind == 'segments'
  assert g.input_shape == (16, 16, 1) and g.assignment.shape == (2, 16, 16, 1)
  assert g.assignment.dtype == jnp.int32
  a = np.asarray(g.assignment[..., 0])
  counts = []
  for i in range(2):
    ids = np.unique(a[i])
    np.testing.assert_array_equal(ids, np.arange(ids.size))  # consecutive
    counts.append(ids.size)
    for s in ids:                         # segments follow the flat regions
      assert np.unique(imgs[i, ..., 0][a[i] == s]).size == 1
  assert g.num_groups == max(counts) >= 2
  masking.check_groups(g, (16, 16, 1), batch=2)
  # Channels share the pixel's id; quickshift converts grayscale to RGB.
  rgb = np.repeat(imgs, 3, axis=-1)
  g3 = masking.superpixel_groups(rgb, n_segments=6, compactness=0.1)
  np.testing.assert_array_equal(g3.assignment[..., 0], g3.assignment[..., 2])
  gq = masking.superpixel_groups(imgs, method='quickshift')
  assert gq.assignment.shape == (2, 16, 16, 1) and gq.batched
  gf = masking.superpixel_groups(imgs[..., 0], method='felzenszwalb')
  assert gf.input_shape == (16, 16) and gf.num_groups == 2
  with pytest.raises(ValueError, match='method'):
    masking.superpixel_groups(imgs, method='watershed')
  with pytest.raises(ValueError, match='images must be'):
    masking.superpixel_groups(imgs[0, ..., 0])


def test_superpixel_groups_without_scikit_image(monkeypatch):
  import sys
  monkeypatch.setitem(sys.modules, 'skimage', None)
  monkeypatch.setitem(sys.modules, 'skimage.segmentation', None)
  with pytest.raises(ImportError, match='pip install scikit-image'):
    masking.superpixel_groups(_two_region_images())


def _batched_groups(shape=(4, 4, 2), m=5, seed=0):
  """Random per-example maps; example 2 leaves ids 3 and 4 unused."""
  rng = np.random.RandomState(seed)
  maps = [rng.randint(0, m, shape[:2]), rng.randint(0, m, shape[:2]),
          rng.randint(0, 3, shape[:2])]
  ids = np.stack([np.broadcast_to(a[..., None], shape) for a in maps])
  return masking.FeatureGroups(jnp.asarray(ids, jnp.int32), m, shape,
                               kind='segments'), ids


def test_segment_descriptors_equal_a_numpy_loop():
  g, ids = _batched_groups()
  imgs = np.random.RandomState(1).uniform(size=(3, 4, 4, 2)).astype(np.float32)
  desc, present = masking.segment_descriptors(jnp.asarray(imgs), g)
  desc, present = np.asarray(desc), np.asarray(present)
  assert desc.shape == (3, 5, 2 * 2 + 3) and desc.dtype == np.float32
  rows, cols = np.meshgrid(np.arange(4) / 4, np.arange(4) / 4, indexing='ij')
  for i in range(3):
    for s in range(5):
      sel = ids[i, ..., 0] == s
      assert bool(present[i, s]) == bool(sel.any())
      if not sel.any():
        np.testing.assert_array_equal(desc[i, s], 0.0)
        continue
      px = imgs[i][sel]                                     # [p, C]
      want = np.concatenate([px.mean(0), px.std(0),
                             [rows[sel].mean(), cols[sel].mean(),
                              sel.sum() / 16]])
      np.testing.assert_allclose(desc[i, s], want, rtol=1e-5, atol=1e-6)
  assert not bool(present[2, 3]) and not bool(present[2, 4])
  # Shared groups describe every image with the same map.
  gs = masking.patch_groups((4, 4, 2), 2)
  d2, p2 = masking.segment_descriptors(jnp.asarray(imgs), gs)
  assert d2.shape == (3, 4, 7) and bool(p2.all())
  np.testing.assert_allclose(d2[:, :, -1], 0.25)
  with pytest.raises(ValueError, match='groups'):
    masking.segment_descriptors(jnp.asarray(imgs[:2]), g)


def test_batched_groups_expand_reduce_and_checks():
  g, ids = _batched_groups()
  assert g.batched and not masking.patch_groups((4, 4, 2), 2).batched
  mask = jax.random.bernoulli(jax.random.key(0), 0.5, (3, 5)).astype(
      jnp.float32)
  out = g.expand(mask)
  assert out.shape == (3, 4, 4, 2)
  for i in range(3):
    gi = masking.FeatureGroups(jnp.asarray(ids[i]), 5, (4, 4, 2))
    np.testing.assert_array_equal(out[i], gi.expand(mask[i]))
  # Several masks per example: [batch, n, M] -> [batch, n, *input_shape].
  many = jnp.stack([mask, 1 - mask], axis=1)
  np.testing.assert_array_equal(g.expand(many)[:, 0], out)
  vals = jax.random.normal(jax.random.key(1), (3, 4, 4, 2))
  red = np.asarray(g.reduce(vals))
  v = np.asarray(vals)
  want = [[v[i][ids[i] == s].sum() for s in range(5)] for i in range(3)]
  np.testing.assert_allclose(red, want, rtol=1e-5, atol=1e-5)
  # reduce is the adjoint of expand, example by example.
  np.testing.assert_allclose(jnp.sum(red * mask, -1),
                             jnp.sum(vals * out, (1, 2, 3)), rtol=1e-5,
                             atol=1e-5)
  mean = g.reduce(vals, 'mean')
  np.testing.assert_allclose(mean[2, 1], np.asarray(vals[2])[ids[2] == 1]
                             .mean(), rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(mean[2, 3:], 0.0)          # unused ids
  with pytest.raises(ValueError, match='group_mask'):
    g.expand(mask[:2])
  with pytest.raises(ValueError, match='group_mask'):
    g.expand(mask[0])
  masking.check_groups(g, (4, 4, 2))
  masking.check_groups(g, (4, 4, 2), batch=3)
  with pytest.raises(ValueError, match='groups are batched for 3'):
    masking.check_groups(g, (4, 4, 2), batch=2)
  bad = masking.FeatureGroups(jnp.zeros((2, 3, 4, 4, 2), jnp.int32), 5,
                              (4, 4, 2))
  with pytest.raises(ValueError, match='groups.assignment'):
    masking.check_groups(bad, (4, 4, 2))
  masking.require_shared_groups(None, 'occlusion')
  masking.require_shared_groups(masking.patch_groups((4, 4), 2), 'occlusion')
  with pytest.raises(ValueError, match='occlusion needs groups shared'):
    masking.require_shared_groups(g, 'occlusion')


def test_methods_that_need_shared_groups_reject_batched_ones():
  import jax.numpy as jnp
  from xai_jax import attribution
  from xai_jax import blackbox as bb
  from xai_jax import metrics
  box = bb.from_jax(lambda x: jnp.stack([x.sum((1, 2, 3)), -x.sum((1, 2, 3))],
                                        -1), input_shape=(4, 4, 1))
  x = np.random.default_rng(0).uniform(size=(2, 4, 4, 1)).astype(np.float32)
  seg = np.zeros((2, 4, 4, 1), np.int32)
  seg[:, :, 2:] = 1
  groups = masking.FeatureGroups(assignment=jnp.asarray(seg), num_groups=2,
                                 input_shape=(4, 4, 1), kind='segments')
  assert groups.batched
  with pytest.raises(ValueError, match='occlusion needs groups shared'):
    attribution.occlusion(box, x, groups=groups)
  with pytest.raises(ValueError, match='rise needs groups shared'):
    attribution.rise(box, x, key=0, groups=groups, num_masks=8)
  with pytest.raises(ValueError, match='needs groups shared'):
    metrics.deletion_insertion(box, x, np.ones((2, 2)), groups=groups)
