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
  mean = masking.make_baseline('mean', x)
  np.testing.assert_allclose(mean[0], x.mean(0), rtol=1e-6)
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
