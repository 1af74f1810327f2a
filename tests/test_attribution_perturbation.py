"""Tests for xai_jax.attribution.perturbation (occlusion, RISE) and the shared
helpers in xai_jax.attribution._common."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xai_jax import blackbox as bb
from xai_jax import masking
from xai_jax import models
from xai_jax.attribution import _common
from xai_jax.attribution import perturbation as P

D, C = 5, 3
BIAS = np.array([0.3, -0.2, 0.1], np.float32)


def init_numpy(module, input_shape, seed=0):
  """Linen variables drawn with numpy (no compiled Flax initializers)."""
  shapes = jax.eval_shape(module.init, jax.random.key(0),
                          jnp.ones((1, *input_shape)))
  rng = np.random.default_rng(seed)

  def fill(path, s):
    fan_in = int(np.prod(s.shape[:-1])) if len(s.shape) > 1 else 100
    return jnp.asarray(rng.normal(0, fan_in ** -0.5, s.shape), s.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.fixture(name='linear', scope='module')
def _linear():
  rng = np.random.default_rng(0)
  w = rng.normal(size=(D, C)).astype(np.float32)
  box = bb.from_jax(lambda p, x: x @ p['w'] + p['b'],
                    params={'w': jnp.asarray(w), 'b': jnp.asarray(BIAS)},
                    input_shape=(D,), name='linear')
  x = jnp.asarray(rng.normal(size=(6, D)), jnp.float32)
  return box, w, x


@pytest.fixture(name='cnn', scope='module')
def _cnn():
  m = models.make_model('cnn', num_classes=C, features=(4, 8), dense=16)
  v = init_numpy(m, (8, 8, 1))
  box = bb.from_linen(m, v, input_shape=(8, 8, 1))
  x = jnp.asarray(np.random.default_rng(1).uniform(size=(2, 8, 8, 1)),
                  jnp.float32)
  return box, x


def _region_box(h=12, w=12, region=(slice(0, 4), slice(6, 12))):
  """A 'model' whose class-0 logit is the mean of a known image region."""
  sel = np.zeros((h, w, 1), np.float32)
  sel[region] = 1.0
  sel = jnp.asarray(sel / sel.sum())

  def fn(x):
    s = jnp.sum(x * sel, axis=(1, 2, 3))
    return jnp.stack([s, -s], axis=-1)

  return bb.from_jax(fn, input_shape=(h, w, 1), name='region'), np.asarray(
      sel[..., 0] > 0)


# ----------------------------------------------------------------- occlusion
def test_occlusion_linear_closed_form(linear):
  box, w, x = linear
  t = jnp.array([0, 1, 2, 0, 1, 2])
  xn = np.asarray(x)
  np.testing.assert_allclose(P.occlusion(box, x, target=t), w[:, t].T * xn,
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(P.occlusion(box, x, target=1, baseline=0.5),
                             w[:, 1] * (xn - 0.5), rtol=1e-5, atol=1e-5)
  # Groups sum the per-feature effects of a linear model.
  groups = masking.FeatureGroups(assignment=jnp.array([0, 0, 1, 1, 1]),
                                 num_groups=2, input_shape=(D,))
  got = P.occlusion(box, x, target=1, groups=groups)
  np.testing.assert_allclose(
      got, np.stack([(w[:2, 1] * xn[:, :2]).sum(1),
                     (w[2:, 1] * xn[:, 2:]).sum(1)], 1), rtol=1e-5, atol=1e-5)


def test_occlusion_patch_groups_equal_manual_loop(cnn):
  box, x = cnn
  groups = masking.patch_groups((8, 8, 1), 4)
  got = np.asarray(P.occlusion(box, x, groups=groups, chunk_size=3))
  assert got.shape == (2, 4)
  assign = np.asarray(groups.assignment)
  fwd = jax.jit(lambda z: box(z))
  logits = np.asarray(fwd(x))
  expected = np.zeros((2, 4), np.float32)
  for i in range(2):
    t = int(np.argmax(logits[i]))
    occluded = np.stack([np.where(assign == g, 0.0, np.asarray(x[i]))
                         for g in range(4)]).astype(np.float32)
    expected[i] = logits[i, t] - np.asarray(fwd(jnp.asarray(occluded)))[:, t]
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_occlusion_numpy_box_matches_jax_box(linear):
  box, w, x = linear
  nbox = bb.from_numpy(lambda z: z @ w + BIAS, input_shape=(D,),
                       output_shape=(C,), output='logits')
  np.testing.assert_allclose(P.occlusion(nbox, x, target=2, chunk_size=4),
                             P.occlusion(box, x, target=2), rtol=1e-5,
                             atol=1e-5)


def test_occlusion_token_box():
  # Class-0 score counts token 3; occluding with PAD (0) removes one count.
  box = bb.from_jax(
      lambda t: jnp.stack([jnp.sum(t == 3, -1), jnp.sum(t == 4, -1)],
                          -1).astype(jnp.float32),
      input_shape=(6,), input_dtype='int', name='tokens')
  tokens = jnp.array([[3, 1, 3, 2, 0, 4], [4, 4, 3, 1, 1, 1]], jnp.int32)
  got = P.occlusion(box, tokens, target=0, baseline=0,
                    groups=masking.token_groups(6))
  np.testing.assert_allclose(got, (np.asarray(tokens) == 3).astype(float))


_METHODS = {
    'occlusion': lambda b, x: P.occlusion(b, x, target=1, chunk_size=16),
    'rise': lambda b, x: P.rise(b, x, target=1, key=jax.random.key(1),
                                num_masks=4000),   # p1 = 0.5
}


# ---------------------------------------------------------------------- RISE
def test_rise_mask_properties():
  m = jax.jit(lambda k: jax.vmap(lambda i: P.rise_mask(
      jax.random.fold_in(k, i), (12, 10), 3, 0.5))(jnp.arange(400)))(
          jax.random.key(0))
  assert m.shape == (400, 12, 10)
  assert float(m.min()) >= 0.0 and float(m.max()) <= 1.0
  assert abs(float(m.mean()) - 0.5) < 0.05


# One static configuration for the image-RISE tests (they share a compile).
_RISE_IMG = dict(target=0, num_masks=500, grid=4, keep_channels=False)


def test_rise_finds_the_region_the_model_looks_at():
  box, region = _region_box()
  x = jnp.asarray(np.random.default_rng(2).uniform(0.5, 1.0, (3, 12, 12, 1)),
                  jnp.float32)
  sal = np.asarray(P.rise(box, x, key=jax.random.key(0), **_RISE_IMG))
  assert sal.shape == (3, 12, 12)
  for s in sal:
    assert s[region].mean() > s[~region].mean() + 3 * s[~region].std()


def test_rise_groups_linear_expectation(linear):
  # E[f(x . M) | m_j = 1] = (1 - p1) w_j x_j + p1 F_lin(x) + bias.
  box, w, x = linear
  p1 = 0.5
  sal = np.asarray(_METHODS['rise'](box, x))
  xn = np.asarray(x)
  expected = (1 - p1) * w[:, 1] * xn + (p1 * (xn @ w[:, 1]) + BIAS[1])[:, None]
  np.testing.assert_allclose(sal, expected, atol=0.15)
  # Feature ranking within each example follows w_j x_j.
  for s, e in zip(sal, w[:, 1] * xn):
    assert np.corrcoef(s, e)[0, 1] > 0.95


def test_rise_key_chunk_batch_semantics():
  box, _ = _region_box()
  x = jnp.asarray(np.random.default_rng(3).uniform(size=(3, 12, 12, 1)),
                  jnp.float32)
  kw = _RISE_IMG
  a = P.rise(box, x, key=jax.random.key(0), **kw)
  np.testing.assert_array_equal(a, P.rise(box, x, key=jax.random.key(0), **kw))
  assert float(jnp.max(jnp.abs(a - P.rise(box, x, key=jax.random.key(1),
                                          **kw)))) > 1e-4
  # An int seed is jax.random.key(seed).
  np.testing.assert_array_equal(P.rise(box, x, key=0, **kw), a)
  np.testing.assert_array_equal(P.rise_mask(3, (12, 12), 3, 0.5),
                                P.rise_mask(jax.random.key(3), (12, 12), 3,
                                            0.5))
  # chunk_size only changes the summation order.
  np.testing.assert_allclose(
      P.rise(box, x, key=jax.random.key(0), chunk_size=333, **kw), a,
      rtol=1e-4, atol=1e-6)
  # Batch order / composition.
  perm = np.array([2, 0, 1])
  np.testing.assert_allclose(P.rise(box, x[perm], key=jax.random.key(0), **kw),
                             a[perm], rtol=1e-5, atol=1e-6)
  full = P.rise(box, x, key=jax.random.key(0),
                **dict(_RISE_IMG, keep_channels=True))
  assert full.shape == x.shape
  np.testing.assert_array_equal(full[..., 0], a)


# ------------------------------------------------------- invariances / jit


@pytest.mark.parametrize('name', sorted(_METHODS))
def test_batch_order_and_jit(linear, name):
  box, _, x = linear
  fn = _METHODS[name]
  base = fn(box, x)
  assert base.shape == x.shape
  perm = np.array([5, 3, 0, 1, 4, 2])
  np.testing.assert_allclose(fn(box, x[perm]), base[perm], rtol=1e-5,
                             atol=1e-5)
  np.testing.assert_allclose(jax.jit(fn)(box, x), base, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------- shared helpers
def test_chunk_helpers_match_direct_evaluation(linear):
  box, w, x = linear
  xs = jnp.asarray(np.random.default_rng(4).normal(size=(23, D)), jnp.float32)

  @jax.jit
  def run(xs):
    mapped = bb.map_in_chunks(lambda r: (r * 2.0, r.sum()), xs, 5)
    summed = bb.sum_in_chunks(lambda r: r * 2.0, xs, 5)
    outs = _common.evaluate_in_chunks(box, xs, chunk_size=4)
    probs = _common.evaluate_in_chunks(box, xs, chunk_size=4, target=1,
                                       space='probs')
    return mapped, summed, outs, probs

  (m2, msum), summed, outs, probs = run(xs)
  xn = np.asarray(xs)
  np.testing.assert_allclose(m2, 2 * xn, rtol=1e-6)
  np.testing.assert_allclose(msum, xn.sum(1), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(summed, 2 * xn.sum(0), rtol=1e-5, atol=1e-5)
  logits = xn @ w + BIAS
  np.testing.assert_allclose(outs, logits, rtol=1e-5, atol=1e-5)
  p = np.exp(logits - logits.max(1, keepdims=True))
  np.testing.assert_allclose(probs, (p / p.sum(1, keepdims=True))[:, 1],
                             rtol=1e-5, atol=1e-6)
  assert _common.per_example_chunk(1024, 8, 50) == 50
  assert _common.per_example_chunk(100, 8, 50) == 12
  assert _common.per_example_chunk(4, 8, 50) == 1


def test_resolve_baseline_forms(linear):
  _, _, x = linear
  ref = np.arange(D, dtype=np.float32)
  for b in (ref, np.broadcast_to(ref, x.shape), 'reference'):
    got = _common.resolve_baseline(b, x, reference=ref)
    np.testing.assert_array_equal(got, np.broadcast_to(ref, x.shape))
  np.testing.assert_array_equal(_common.resolve_baseline(2.0, x),
                                np.full(x.shape, 2.0))
  np.testing.assert_array_equal(_common.resolve_baseline('zero', x),
                                np.zeros(x.shape))
  with pytest.raises(ValueError, match='baseline'):
    _common.resolve_baseline(np.zeros((3, D)), x)
  with pytest.raises(ValueError, match='baseline'):
    _common.resolve_baseline(np.full(D, np.nan), x)
  with pytest.raises(ValueError, match='baseline'):
    _common.resolve_baseline('grey', x)


# -------------------------------------------------------------------- errors
def test_argument_errors(linear, cnn):
  box, _, x = linear
  with pytest.raises(ValueError, match='baseline'):
    P.occlusion(box, x, baseline=jnp.zeros((D, 2)))
  with pytest.raises(ValueError, match='baseline'):
    P.rise(box, x, key=jax.random.key(0), baseline=jnp.zeros((4, D)))
  with pytest.raises(ValueError, match='x contains NaN'):
    P.occlusion(box, x.at[1, 2].set(jnp.nan))
  with pytest.raises(ValueError, match='key'):
    P.rise(box, x)
  with pytest.raises(ValueError, match='key'):
    P.rise(box, x, key=-3)
  with pytest.raises(ValueError, match='p1'):
    P.rise(box, x, key=jax.random.key(0), p1=1.5)
  with pytest.raises(ValueError, match='num_masks'):
    P.rise(box, x, key=jax.random.key(0), num_masks=0)
  with pytest.raises(ValueError, match='chunk_size'):
    P.occlusion(box, x, chunk_size=0)
  with pytest.raises(ValueError, match='target'):
    P.occlusion(box, x, target=-1)
  with pytest.raises(ValueError, match='space'):
    P.occlusion(box, x, space='softmax')
  with pytest.raises(ValueError, match='groups'):
    P.occlusion(box, x, groups=masking.patch_groups((8, 8, 1), 4))
  with pytest.raises(ValueError, match='groups'):
    P.rise(box, x, key=jax.random.key(0), groups='patches')
  cbox, cx = cnn
  with pytest.raises(ValueError, match='x must have'):
    P.occlusion(cbox, cx[:, :4])
