"""Tests for xai_jax.attribution.lime, against the `lime` package."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xai_jax import blackbox as bb
from xai_jax import masking
# The package re-exports the function `lime`, which shadows the module name.
xlime = importlib.import_module('xai_jax.attribution.lime')


def _prob_box(d, num_outputs=3, seed=0):
  k1, k2 = jax.random.split(jax.random.key(seed))
  w1 = jax.random.normal(k1, (d, 16)) / np.sqrt(d)
  w2 = jax.random.normal(k2, (16, num_outputs))

  def f(x):
    return jax.nn.softmax(jnp.tanh(x.reshape(x.shape[0], -1) @ w1) @ w2)
  return f


def _lime_base_fit(scaled, ys, distances, label, width, num_features):
  lime_base = pytest.importorskip('lime.lime_base')
  base = lime_base.LimeBase(
      lambda dd: np.sqrt(np.exp(-(dd ** 2) / width ** 2)))
  icpt, exp, score, local_pred = base.explain_instance_with_data(
      scaled, ys, distances, label, num_features)
  coef = np.zeros(scaled.shape[1])
  for j, c in exp:
    coef[j] = c
  return coef, icpt, score, local_pred[0]


@pytest.mark.parametrize('around', [False, True])
def test_tabular_matches_lime_package(around):
  pytest.importorskip('lime')
  d = 6
  f = _prob_box(d)
  box = bb.from_jax(f, input_shape=(d,), output='probs')
  train = np.random.RandomState(0).normal(1.0, 2.0, (500, d))
  mu, sd = train.mean(0), train.std(0)
  x = jnp.asarray(train[:4], jnp.float32)
  key = jax.random.key(3)
  coef, info = xlime.lime(box, x, key=key, num_samples=2000, feature_mean=mu,
                          feature_std=sd, sample_around_instance=around,
                          return_info=True)
  scaled, inputs = xlime.lime_tabular_samples(
      key, x, 2000, feature_mean=mu, feature_std=sd,
      sample_around_instance=around)
  width = 0.75 * np.sqrt(d)
  for b in range(x.shape[0]):
    sc = np.asarray(scaled[b], np.float64)
    ys = np.asarray(f(inputs[b]), np.float64)
    dist = np.sqrt(((sc - sc[0]) ** 2).sum(1))
    c, icpt, score, lp = _lime_base_fit(sc, ys, dist, int(info.target[b]),
                                        width, d)
    np.testing.assert_allclose(coef[b], c, atol=1e-4)
    np.testing.assert_allclose(info.intercept[b], icpt, atol=1e-4)
    np.testing.assert_allclose(info.score[b], score, atol=1e-4)
    np.testing.assert_allclose(info.local_pred[b], lp, atol=1e-4)
    np.testing.assert_allclose(info.prediction[b], ys[0, info.target[b]],
                               atol=1e-6)


def test_tabular_feature_selection_matches_lime_highest_weights():
  pytest.importorskip('lime')
  d, k = 8, 3
  f = _prob_box(d, seed=1)
  box = bb.from_jax(f, input_shape=(d,), output='probs')
  x = jax.random.normal(jax.random.key(0), (2, d))
  key = jax.random.key(1)
  mu, sd = np.zeros(d), np.ones(d)
  coef = xlime.lime(box, x, key=key, num_samples=1500, target=0,
                    feature_mean=mu, feature_std=sd, num_features=k)
  scaled, inputs = xlime.lime_tabular_samples(key, x, 1500, feature_mean=mu,
                                              feature_std=sd)
  for b in range(2):
    sc = np.asarray(scaled[b], np.float64)
    ys = np.asarray(f(inputs[b]), np.float64)
    dist = np.sqrt(((sc - sc[0]) ** 2).sum(1))
    # lime's 'auto' picks forward selection for K <= 6: ask for the method.
    lime_base = pytest.importorskip('lime.lime_base')
    width = 0.75 * np.sqrt(d)
    base = lime_base.LimeBase(
        lambda dd: np.sqrt(np.exp(-(dd ** 2) / width ** 2)))
    _, exp, _, _ = base.explain_instance_with_data(
        sc, ys, dist, 0, k, feature_selection='highest_weights')
    c = np.zeros(d)
    for j, v in exp:
      c[j] = v
    assert int((np.asarray(coef[b]) != 0).sum()) == k
    np.testing.assert_allclose(coef[b], c, atol=1e-4)


def test_groups_match_weighted_ridge_of_lime_image():
  pytest.importorskip('lime')
  shape = (8, 8, 1)
  g = masking.patch_groups(shape, 2)                      # 16 patches
  w = jax.random.normal(jax.random.key(0), (64, 3))
  f = lambda x: jax.nn.softmax(x.reshape(x.shape[0], -1) @ w)
  box = bb.from_jax(f, input_shape=shape, output='probs')
  x = jax.random.normal(jax.random.key(1), (3, *shape))
  key = jax.random.key(2)
  coef, info = xlime.lime(box, x, key=key, mode='groups', groups=g,
                          num_samples=1000, return_info=True, chunk_size=300)
  fast = xlime.lime(box, x, key=key, mode='groups', groups=g,
                    num_samples=1000)
  np.testing.assert_allclose(coef, fast, atol=1e-5)
  z = np.asarray(xlime.lime_group_samples(key, 1000, g.num_groups))
  assert coef.shape == (3, 16) and z[0].all()
  from sklearn.metrics import pairwise_distances  # pylint: disable=g-import-not-at-top
  dist = pairwise_distances(z.astype(float), z[:1].astype(float),
                            metric='cosine').ravel()
  for b in range(3):
    inputs = np.where(np.asarray(g.expand(jnp.asarray(z))), np.asarray(x[b]),
                      0.0)
    ys = np.asarray(f(jnp.asarray(inputs)), np.float64)
    c, icpt, score, lp = _lime_base_fit(z.astype(float), ys, dist,
                                        int(info.target[b]), 0.25, 16)
    np.testing.assert_allclose(coef[b], c, atol=1e-4)
    np.testing.assert_allclose(info.intercept[b], icpt, atol=1e-4)
    np.testing.assert_allclose(info.score[b], score, atol=1e-4)
    np.testing.assert_allclose(info.local_pred[b], lp, atol=1e-4)


def test_token_groups_use_lime_text_defaults():
  seq = 12
  emb = jax.random.normal(jax.random.key(0), (30, 4))
  head = jax.random.normal(jax.random.key(1), (4, 2))
  box = bb.from_jax(lambda t: jnp.mean(emb[t], 1) @ head, input_shape=(seq,),
                    input_dtype='int')
  tokens = jax.random.randint(jax.random.key(2), (2, seq), 1, 30)
  g = masking.token_groups(seq)
  coef = xlime.lime(box, tokens, key=jax.random.key(3), mode='groups',
                    groups=g, num_samples=500)
  assert coef.shape == (2, seq) and bool(jnp.all(jnp.isfinite(coef)))
  z = np.asarray(xlime.lime_group_samples(jax.random.key(4), 4000, seq,
                                          sampling='num_removed'))
  removed = seq - z[1:].sum(-1)
  assert removed.min() >= 1 and removed.max() <= seq
  assert abs(removed.mean() - (seq + 1) / 2) < 0.3        # U{1..seq}


def test_fit_weighted_ridge_matches_sklearn():
  from sklearn.linear_model import Ridge  # pylint: disable=g-import-not-at-top
  rng = np.random.RandomState(0)
  z = rng.normal(size=(300, 5))
  y = rng.normal(size=(2, 300))
  w = rng.uniform(0.1, 1.0, size=(2, 300))
  fit = xlime.fit_weighted_ridge(jnp.asarray(z, jnp.float32),
                                 jnp.asarray(y, jnp.float32),
                                 jnp.asarray(w, jnp.float32), alpha=1.0)
  for b in range(2):
    r = Ridge(alpha=1.0).fit(z, y[b], sample_weight=w[b])
    np.testing.assert_allclose(fit.coef[b], r.coef_, atol=1e-5)
    np.testing.assert_allclose(fit.intercept[b], r.intercept_, atol=1e-5)
    np.testing.assert_allclose(fit.score[b],
                               r.score(z, y[b], sample_weight=w[b]), atol=1e-5)


def test_lime_recovers_linear_model_and_compiles_once():
  d = 5
  beta = jnp.arange(1.0, d + 1)
  box = bb.from_jax(lambda x: (x @ beta)[:, None], input_shape=(d,),
                    output='regression')
  mu, sd = np.zeros(d), 2.0 * np.ones(d)
  before = xlime._tabular_core._cache_size()  # pylint: disable=protected-access
  for s in range(3):
    x = jax.random.normal(jax.random.key(s), (4, d))
    coef = xlime.lime(box, x, key=jax.random.key(s), feature_mean=mu + s,
                      feature_std=sd, num_samples=3000, kernel_width=100.0)
    # Coefficients per standardised unit: beta * sigma (ridge shrinks ~1e-3).
    np.testing.assert_allclose(coef, jnp.broadcast_to(beta * 2.0, (4, d)),
                               rtol=1e-2)
  assert xlime._tabular_core._cache_size() - before == 1  # pylint: disable=protected-access


def test_lime_chunking_and_batch_invariance():
  d = 4
  box = bb.from_jax(_prob_box(d), input_shape=(d,), output='probs')
  x = jax.random.normal(jax.random.key(0), (5, d))
  key = jax.random.key(1)
  a = xlime.lime(box, x, key=key, num_samples=300, stats_from_batch=True)
  # Two rows, 100 model rows per call, the statistics of the full batch.
  c = xlime.lime(box, x[:2], key=key, num_samples=300, chunk_size=100,
                 feature_mean=jnp.mean(x, 0), feature_std=jnp.std(x, 0))
  np.testing.assert_allclose(a[:2], c, atol=1e-5)
  # data= gives the same statistics, and a row no longer depends on its batch
  e = xlime.lime(box, x[:2], key=key, num_samples=300, data=x)
  np.testing.assert_allclose(e, c, atol=1e-5)
  one = xlime.lime(box, x[:1], key=key, num_samples=300, data=x)
  np.testing.assert_allclose(one, e[:1], atol=1e-5)


def test_lime_tabular_needs_a_source_of_statistics():
  d = 4
  box = bb.from_jax(_prob_box(d), input_shape=(d,), output='probs')
  x = jax.random.normal(jax.random.key(0), (3, d))
  with pytest.raises(ValueError, match='pass data='):
    xlime.lime(box, x, key=0)
  with pytest.raises(ValueError, match='pass data='):
    xlime.lime_tabular_samples(0, x, 10)
  with pytest.raises(ValueError, match=r'data must have shape \[m, 4\]'):
    xlime.lime(box, x, key=0, data=jnp.ones((5, 3)))
  with pytest.raises(ValueError, match='not both'):
    xlime.lime(box, x, key=0, data=x, stats_from_batch=True)


def test_lime_bad_inputs():
  d = 4
  box = bb.from_jax(_prob_box(d), input_shape=(d,), output='probs')
  x = jax.random.normal(jax.random.key(0), (2, d))
  key = jax.random.key(0)
  with pytest.raises(ValueError, match='key'):
    xlime.lime(box, x)
  with pytest.raises(ValueError, match='x contains NaN'):
    xlime.lime(box, x.at[1, 1].set(jnp.nan), key=key)
  with pytest.raises(ValueError, match='feature_std'):
    xlime.lime(box, x, key=key, feature_mean=jnp.zeros(d),
               feature_std=jnp.ones(d + 1))
  with pytest.raises(ValueError, match='baseline'):
    xlime.lime(box, x, key=key, baseline=0.0)
  with pytest.raises(ValueError, match='baseline'):
    xlime.lime(box, x, key=key, mode='groups', baseline=jnp.zeros((3,)))
  with pytest.raises(ValueError, match='mode'):
    xlime.lime(box, x, key=key, mode='image')
  with pytest.raises(ValueError, match='num_samples'):
    xlime.lime(box, x, key=key, num_samples=1)


def test_shared_rows_ridge_equals_the_per_example_fit():
  # Tabular LIME's default neighbourhood shares rows 1..n-1 between examples;
  # the one-matmul Gram path must give the per-example weighted ridge.
  kz, ko, ky, kw = jax.random.split(jax.random.key(3), 4)
  n, d, b = 1030, 7, 5            # n - 1 not a multiple of the row chunk
  shared = jax.random.normal(kz, (n, d))
  own = jax.random.normal(ko, (b, d))
  data = jnp.broadcast_to(shared, (b, n, d)).at[:, 0].set(own)
  y = jax.random.normal(ky, (b, n))
  w = jax.random.uniform(kw, (b, n), minval=0.1)
  ref = xlime.fit_weighted_ridge(data, y, w, alpha=1.0)
  got = xlime._fit_ridge_shared_rows(shared, own, y, w, 1.0, chunk=256)  # pylint: disable=protected-access
  for a, r in zip(got, ref):
    np.testing.assert_allclose(np.asarray(a), np.asarray(r), rtol=2e-4,
                               atol=2e-5)


def test_int_seeds_are_keys():
  """`lime` and its samplers take an int seed as `jax.random.key(seed)`."""
  d = 6
  box = _prob_box(d)
  x = jax.random.normal(jax.random.key(0), (2, d))
  key = jax.random.key(5)
  np.testing.assert_array_equal(xlime.lime(box, x, key=5, num_samples=300, data=x),
                                xlime.lime(box, x, key=key, num_samples=300, data=x))
  g = masking.feature_groups((d,))
  np.testing.assert_array_equal(
      xlime.lime(box, x, key=5, mode='groups', groups=g, num_samples=64),
      xlime.lime(box, x, key=key, mode='groups', groups=g, num_samples=64))
  np.testing.assert_array_equal(xlime.lime_group_samples(5, 10, d),
                                xlime.lime_group_samples(key, 10, d))
  for a, b in zip(xlime.lime_tabular_samples(5, x, 10, data=x),
                  xlime.lime_tabular_samples(key, x, 10, data=x)):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match='key'):
    xlime.lime(box, x, key=-1)


# ---------------------------------------------- per-image (batched) groups
def _image_box(shape=(4, 4, 2)):
  k1, k2 = jax.random.split(jax.random.key(0))
  d = int(np.prod(shape))
  w1 = jax.random.normal(k1, (d, 8)) / np.sqrt(d)
  w2 = jax.random.normal(k2, (8, 3))
  f = lambda x: jax.nn.softmax(jnp.tanh(x.reshape(x.shape[0], -1) @ w1) @ w2)
  return bb.from_jax(f, input_shape=shape, output='probs')


def _segment_maps(num, m=5, shape=(4, 4, 2)):
  """Random per-image segment maps broadcast over channels; image 2 uses
  fewer ids than m."""
  rng = np.random.RandomState(0)
  return np.stack([np.broadcast_to(
      rng.randint(0, m - 2 if i == 2 else m, shape[:2])[..., None], shape)
      for i in range(num)]).astype(np.int32)


def test_batched_groups_with_one_map_equal_shared_groups():
  shape = (4, 4, 2)
  box = _image_box(shape)
  x = jax.random.normal(jax.random.key(1), (3, *shape))
  ids = _segment_maps(1)[0]
  shared = masking.FeatureGroups(jnp.asarray(ids), 5, shape, kind='segments')
  batched = shared.replace(assignment=jnp.asarray(np.stack([ids] * 3)))
  key = jax.random.key(4)
  # chunk_size=70: several chunks of examples and of coalitions.
  a = xlime.lime(box, x, key=key, mode='groups', groups=shared,
                 num_samples=200, chunk_size=70)
  b = xlime.lime(box, x, key=key, mode='groups', groups=batched,
                 num_samples=200, chunk_size=70)
  np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_batched_groups_equal_lime_on_each_example():
  """Coalitions are shared by the batch, so example i of the batched call is
  lime on x[i] alone with its own (shared) groups and the same key."""
  shape = (4, 4, 2)
  box = _image_box(shape)
  x = jax.random.normal(jax.random.key(1), (3, *shape))
  maps = _segment_maps(3)
  g = masking.FeatureGroups(jnp.asarray(maps), 5, shape, kind='segments')
  key = jax.random.key(4)
  coef, info = xlime.lime(box, x, key=key, mode='groups', groups=g,
                          num_samples=200, chunk_size=150, return_info=True)
  assert coef.shape == (3, 5)
  for i in range(3):
    gi = g.replace(assignment=jnp.asarray(maps[i]))
    ci, ii = xlime.lime(box, x[i:i + 1], key=key, mode='groups', groups=gi,
                        num_samples=200, return_info=True)
    np.testing.assert_allclose(coef[i], ci[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(info.score[i], ii.score[0], rtol=1e-4,
                               atol=1e-5)
  # Ids image 2 does not use switch nothing: only the ridge's shrinkage of
  # chance correlations is left.
  assert float(jnp.max(jnp.abs(coef[2, 3:]))) < 0.1 * float(
      jnp.max(jnp.abs(coef[2, :3])))


def test_batched_groups_of_another_batch_raise():
  shape = (4, 4, 2)
  box = _image_box(shape)
  x = jax.random.normal(jax.random.key(1), (2, *shape))
  g = masking.FeatureGroups(jnp.asarray(_segment_maps(3)), 5, shape)
  with pytest.raises(ValueError, match='groups'):
    xlime.lime(box, x, key=0, mode='groups', groups=g, num_samples=50)
