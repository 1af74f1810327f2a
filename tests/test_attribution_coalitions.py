"""Tests for xai_jax.attribution.coalitions: plans, masked evaluation, the
chunked linear reduction and Shapley-kernel sampling."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xai_jax import blackbox as bb
from xai_jax import masking
from xai_jax.attribution import _common
from xai_jax.attribution import coalitions as C

D = 6


def _box(d=D, num_outputs=3, seed=0):
  k1, k2 = jax.random.split(jax.random.key(seed))
  params = {'w1': jax.random.normal(k1, (d, 8)) / np.sqrt(d),
            'w2': jax.random.normal(k2, (8, num_outputs))}

  def f(p, x):
    return jnp.tanh(x.reshape(x.shape[0], -1) @ p['w1']) @ p['w2']
  return bb.from_jax(f, params=params, input_shape=(d,), name='mlp')


BOX = _box()
X = jax.random.normal(jax.random.key(1), (5, D))
BASE = jnp.full((5, D), 0.25)
T = jnp.array([0, 1, 2, 0, 1], jnp.int32)
Z = np.array(list(itertools.product([False, True], repeat=D)))   # [64, D]
SCORE = _common.score_fn(BOX, 'raw')


def _dense_values(box, x, base, t, z):
  """v_b(z_k) one coalition at a time (numpy masks)."""
  out = np.zeros((x.shape[0], z.shape[0]), np.float32)
  for k, zk in enumerate(z):
    inp = np.where(zk[None], np.asarray(x), np.asarray(base))
    out[:, k] = np.asarray(box(jnp.asarray(inp)))[np.arange(x.shape[0]), t]
  return out


V = _dense_values(BOX, X, BASE, np.asarray(T), Z)


# ----------------------------------------------------------------- sizes
def test_auto_chunk_size_bounds():
  assert C.auto_chunk_size((10,)) == C.MAX_AUTO_CHUNK
  assert C.auto_chunk_size((1024, 1024, 3)) == C.MIN_AUTO_CHUNK
  assert C.auto_chunk_size((64, 64, 4)) == C.AUTO_CHUNK_ELEMENTS // (64 * 64 * 4)
  assert C.resolve_chunk_size(None, BOX) == C.auto_chunk_size(BOX.input_shape)
  assert C.resolve_chunk_size(7, BOX) == 7
  with pytest.raises(ValueError, match='chunk_size'):
    C.resolve_chunk_size(0, BOX)


def test_num_players_and_to_input_shape():
  box = _box(12)
  g = masking.FeatureGroups(jnp.arange(12) // 4, 3, (12,))
  assert C.num_players(box, None) == 12
  assert C.num_players(box, g) == 3
  v = jnp.arange(24.0).reshape(2, 12)
  assert C.to_input_shape(v, box, None).shape == (2, 12)
  img = bb.from_jax(lambda x: x.reshape(x.shape[0], -1)[:, :2],
                    input_shape=(2, 3))
  assert C.to_input_shape(jnp.zeros((4, 6)), img, None).shape == (4, 2, 3)
  assert C.to_input_shape(v[:, :3], box, g).shape == (2, 3)


@pytest.mark.parametrize('batch,n_units,unit,chunk', [
    (5, 64, 1, 1024), (5, 64, 1, 100), (5, 64, 1, 10), (7, 10, 5, 12),
    (3, 7, 9, 4), (1, 1, 1, 1), (100, 3, 2, 64)])
def test_plan_covers_every_row_within_the_bound(batch, n_units, unit, chunk):
  p = C.plan(batch, n_units, unit, chunk)
  assert p.unit == unit
  assert p.num_e * p.be >= batch and (p.num_e - 1) * p.be < batch
  assert p.num_c * p.units >= n_units and (p.num_c - 1) * p.units < n_units
  assert p.rows == p.be * p.units * unit
  assert p.rows <= max(chunk, unit)          # one unit is indivisible
  if p.num_c > 1:
    assert p.be == 1 and p.num_e == batch
  hash(p)                                    # a static jit argument


# ------------------------------------------------------------ evaluation
def test_masked_scores_equal_a_loop_over_coalitions():
  got = C.masked_scores(SCORE, None, X, BASE, T, jnp.asarray(Z[:9]))
  np.testing.assert_allclose(got, V[:, :9], rtol=1e-5, atol=1e-6)
  # Groups: a coalition of groups is its expansion to the elements.
  g = masking.FeatureGroups(jnp.array([0, 0, 1, 1, 2, 2]), 3, (D,))
  zg = np.array(list(itertools.product([False, True], repeat=3)))
  got = C.masked_scores(SCORE, g, X, BASE, T, jnp.asarray(zg))
  want = _dense_values(BOX, X, BASE, np.asarray(T), zg[:, [0, 0, 1, 1, 2, 2]])
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('chunk', [1024, 70, 9, 1])
def test_reduce_coalitions_equals_the_dense_matmul(chunk):
  m = np.asarray(jax.random.normal(jax.random.key(2), (Z.shape[0], 4)))
  p = C.plan(X.shape[0], Z.shape[0], 1, chunk)
  out = jax.jit(lambda x, b, t: C.reduce_coalitions(
      SCORE, None, x, b, t, C.fixed_chunks(jnp.asarray(Z), jnp.asarray(m), p),
      p, 4))(X, BASE, T)
  np.testing.assert_allclose(out, V @ m, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('chunk', [1024, 70, 9, 1])
def test_coalition_values_equal_the_dense_values(chunk):
  p = C.plan(X.shape[0], Z.shape[0], 1, chunk)
  got = jax.jit(lambda x, b, t: C.coalition_values(
      SCORE, None, x, b, t, jnp.asarray(Z), p))(X, BASE, T)
  np.testing.assert_allclose(got, V, rtol=1e-5, atol=1e-6)


def test_fixed_chunks_pad_with_empty_coalitions_and_zero_rows():
  z = jnp.asarray(Z[:10])
  m = jnp.ones((10, 2))
  p = C.plan(1, 10, 1, 4)                    # 3 chunks of 4 coalitions
  gen = C.fixed_chunks(z, m, p)
  zs, ms = zip(*(gen(jnp.int32(c)) for c in range(p.num_c)))
  zs, ms = np.concatenate(zs), np.concatenate(ms)
  np.testing.assert_array_equal(zs[:10], Z[:10])
  assert not zs[10:].any() and not ms[10:].any()
  np.testing.assert_array_equal(ms[:10], 1.0)


def test_endpoints_are_the_full_and_empty_coalitions():
  t, v1, v0 = C.endpoints(BOX, X, BASE, None, 'probs', 2)
  probs_x = jax.nn.softmax(BOX(X))
  np.testing.assert_array_equal(t, jnp.argmax(BOX(X), -1))
  np.testing.assert_allclose(v1, probs_x[jnp.arange(5), t], rtol=1e-5)
  np.testing.assert_allclose(
      v0, jax.nn.softmax(BOX(BASE))[jnp.arange(5), t], rtol=1e-5)
  t2, v1r, v0r = C.endpoints(BOX, X, BASE, T, 'raw', 1024)
  np.testing.assert_array_equal(t2, T)
  np.testing.assert_allclose(v1r, V[:, -1], rtol=1e-5, atol=1e-6)  # all on
  np.testing.assert_allclose(v0r, V[:, 0], rtol=1e-5, atol=1e-6)   # all off


# -------------------------------------------------------------- sampling
@pytest.mark.parametrize('d', [2, 3, 10, 101])
def test_shapley_kernel_is_a_symmetric_distribution(d):
  p = C.shapley_kernel(d)
  assert p.shape == (d + 1,)
  assert p[0] == 0 and p[d] == 0
  np.testing.assert_allclose(p.sum(), 1.0)
  np.testing.assert_allclose(p, p[::-1])
  # p(s) (d - s) s is constant (Lundberg & Lee 2017, Thm. 2).
  s = np.arange(1, d)
  np.testing.assert_allclose(p[1:d] * s * (d - s), p[1] * (d - 1))
  with pytest.raises(ValueError, match='num_players'):
    C.shapley_kernel(1)


def test_size_cdf_is_a_cumulative_distribution():
  c = C.size_cdf(np.array([1.0, 3.0, 0.0, 4.0]))
  np.testing.assert_allclose(c, [0.125, 0.5, 0.5, 1.0])
  assert c.dtype == np.float32


def test_sample_sized_coalitions_sizes_and_pairs():
  sizes = jnp.array([2, 5], jnp.int32)
  cdf = jnp.asarray(C.size_cdf(np.array([0.25, 0.75])))
  z = np.asarray(C.sample_sized_coalitions(3, 4001, 7, sizes, cdf))
  assert z.shape == (4001, 7)
  # Paired: odd rows are the complements of the even rows before them.
  np.testing.assert_array_equal(z[1::2], ~z[0:-1:2])
  base = z[0::2].sum(-1)
  assert set(np.unique(base)) <= {2, 5}
  np.testing.assert_allclose(np.mean(base == 5), 0.75, atol=0.03)
  # Within a size, every element is equally likely.
  np.testing.assert_allclose(z[0::2][base == 2].mean(0), 2 / 7, atol=0.04)
  np.testing.assert_array_equal(
      z, C.sample_sized_coalitions(jax.random.key(3), 4001, 7, sizes, cdf))


def test_sample_shapley_coalitions_pairs_and_seeds():
  z = np.asarray(C.sample_shapley_coalitions(0, 9, 5))
  assert z.shape == (9, 5)
  np.testing.assert_array_equal(z[1::2], ~z[0:-1:2])
  s = z.sum(-1)
  assert s.min() >= 1 and s.max() <= 4
  np.testing.assert_array_equal(
      z, C.sample_shapley_coalitions(jax.random.key(0), 9, 5))
  unpaired = np.asarray(C.sample_shapley_coalitions(0, 8, 5, paired=False))
  assert not np.array_equal(unpaired[1::2], ~unpaired[0::2])
  with pytest.raises(ValueError, match='key'):
    C.sample_shapley_coalitions(None, 9, 5)


# ------------------------------------------------------ batched groups
def _batched_groups():
  """Per-example groups of the D = 6 features into 3 ids (example 4 uses 2)."""
  rng = np.random.RandomState(3)
  ids = np.stack([rng.randint(0, 3, D) for _ in range(4)] +
                 [np.array([0, 0, 1, 1, 0, 1])]).astype(np.int32)
  return masking.FeatureGroups(jnp.asarray(ids), 3, (D,)), ids


ZG = np.array(list(itertools.product([False, True], repeat=3)))  # [8, 3]
V_BATCHED = np.stack([
    _dense_values(BOX, X[i:i + 1], BASE[i:i + 1], np.asarray(T[i:i + 1]),
                  ZG[:, ids])[0]
    for i, ids in enumerate(_batched_groups()[1])])              # [5, 8]


def test_masked_scores_expand_each_example_with_its_own_groups():
  g, _ = _batched_groups()
  got = C.masked_scores(SCORE, g, X, BASE, T, jnp.asarray(ZG))
  np.testing.assert_allclose(got, V_BATCHED, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('chunk', [1024, 9, 3])
def test_batched_groups_are_chunked_with_the_examples(chunk):
  g, _ = _batched_groups()
  m = np.asarray(jax.random.normal(jax.random.key(2), (ZG.shape[0], 4)))
  p = C.plan(X.shape[0], ZG.shape[0], 1, chunk)
  red, val = jax.jit(lambda x, b, t, gg: (
      C.reduce_coalitions(SCORE, gg, x, b, t, C.fixed_chunks(
          jnp.asarray(ZG), jnp.asarray(m), p), p, 4),
      C.coalition_values(SCORE, gg, x, b, t, jnp.asarray(ZG), p)))(
          X, BASE, T, g)
  np.testing.assert_allclose(val, V_BATCHED, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(red, V_BATCHED @ m, rtol=1e-4, atol=1e-4)


def test_batched_groups_of_another_batch_are_rejected():
  g, _ = _batched_groups()
  p = C.plan(4, ZG.shape[0], 1, 1024)
  with pytest.raises(ValueError, match='groups are batched for 5'):
    C.coalition_values(SCORE, g, X[:4], BASE[:4], T[:4], jnp.asarray(ZG), p)
  with pytest.raises(ValueError, match='groups are batched for 5'):
    C.reduce_coalitions(SCORE, g, X[:4], BASE[:4], T[:4], C.fixed_chunks(
        jnp.asarray(ZG), jnp.ones((8, 1)), p), p, 1)
  assert C.num_players(BOX, g) == 3
  assert C.to_input_shape(jnp.zeros((5, 3)), BOX, g).shape == (5, 3)
  C.require_shared_groups(masking.feature_groups((D,)), 'method')
  with pytest.raises(ValueError, match='method needs groups shared'):
    C.require_shared_groups(g, 'method')


@pytest.mark.parametrize('d', [1, 10, 32, 33, 100])
def test_smallest_mask_equals_double_argsort(d):
  u = jax.random.uniform(jax.random.key(d), (257, d))
  k = jax.random.randint(jax.random.key(d + 1), (257,), 0, d + 1)
  want = jnp.argsort(jnp.argsort(u, axis=-1), axis=-1) < k[:, None]
  got = C.smallest_mask(u, k)
  np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(got.sum(-1), k)
