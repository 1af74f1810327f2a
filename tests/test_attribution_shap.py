"""Tests for xai_jax.attribution.shap: exact, KernelSHAP, permutation sampling."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xai_jax import blackbox as bb
from xai_jax import masking
from xai_jax.attribution import coalitions
from xai_jax.attribution import shap


def _mlp_box(d, num_outputs=3, seed=0):
  k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
  params = {'w1': jax.random.normal(k1, (d, 16)) / np.sqrt(d),
            'b1': 0.1 * jax.random.normal(k3, (16,)),
            'w2': jax.random.normal(k2, (16, num_outputs))}

  def f(p, x):
    x = x.reshape(x.shape[0], -1)
    return jnp.tanh(x @ p['w1'] + p['b1']) @ p['w2']
  return bb.from_jax(f, params=params, input_shape=(d,), name='mlp')


def _x(n, d, seed=1):
  return jax.random.normal(jax.random.key(seed), (n, d))


# One box and batch shape shared by most tests, so that jit caches are reused
# across tests (compilation dominates the run time of this file).
D = 8
BOX = _mlp_box(D)
X = _x(4, D)


def _brute_force(box, x, target, baseline):
  """Shapley 1953 formula, one coalition at a time (numpy loops)."""
  d = x.shape[-1]
  out = np.zeros(x.shape)
  for b in range(x.shape[0]):
    def v(z, b=b):
      inp = np.where(z, np.asarray(x[b]), np.asarray(baseline[b]))[None]
      return float(box(jnp.asarray(inp, jnp.float32))[0, target])
    cache = {}
    for r in range(d + 1):
      for s in itertools.combinations(range(d), r):
        z = np.zeros(d, bool)
        z[list(s)] = True
        cache[s] = v(z)
    for i in range(d):
      others = [j for j in range(d) if j != i]
      for r in range(d):
        w = math.factorial(r) * math.factorial(d - r - 1) / math.factorial(d)
        for s in itertools.combinations(others, r):
          out[b, i] += w * (cache[tuple(sorted(s + (i,)))] - cache[s])
  return out


def _gap(box, x, baseline, target):
  return np.asarray(box(x)[:, target] - box(baseline)[:, target])


# ------------------------------------------------------------------ exact
def test_exact_matches_brute_force_and_is_efficient():
  box, x = _mlp_box(5), _x(3, 5)
  base = 0.3 * jnp.ones_like(x)
  phi = shap.exact_shapley(box, x, target=2, baseline=base)
  np.testing.assert_allclose(phi, _brute_force(box, x, 2, base), atol=2e-5)
  np.testing.assert_allclose(phi.sum(-1), _gap(box, x, base, 2), atol=2e-5)


def test_exact_linear_model_closed_form():
  d = 8
  w = jax.random.normal(jax.random.key(3), (d, 2))
  box = bb.from_jax(lambda x: x @ w, input_shape=(d,), output='regression')
  x, ref = _x(4, d), _x(1, d, seed=9)[0]
  phi = shap.exact_shapley(box, x, target=1, baseline=ref)
  np.testing.assert_allclose(phi, w[:, 1] * (x - ref), atol=1e-5)


def test_exact_chunking_and_target_none():
  full = shap.exact_shapley(BOX, X)
  chunked = shap.exact_shapley(BOX, X, chunk_size=7)
  np.testing.assert_allclose(full, chunked, atol=1e-5)
  pred = np.asarray(jnp.argmax(BOX(X), -1))
  per_t = shap.exact_shapley(BOX, X, target=jnp.asarray(pred))
  np.testing.assert_allclose(full, per_t, atol=1e-6)


def test_exact_patch_groups_on_images():
  k = jax.random.key(4)
  w = jax.random.normal(k, (8 * 8 * 2, 3))
  box = bb.from_jax(lambda x: jnp.tanh(x.reshape(x.shape[0], -1) @ w),
                    input_shape=(8, 8, 2))
  g = masking.patch_groups((8, 8, 2), 4)          # 2x2 grid -> 4 players
  x = jax.random.normal(jax.random.key(5), (3, 8, 8, 2))
  phi = shap.exact_shapley(box, x, target=0, groups=g)
  assert phi.shape == (3, g.num_groups) == (3, 4)
  np.testing.assert_allclose(phi.sum(-1), _gap(box, x, jnp.zeros_like(x), 0),
                             atol=1e-5)
  ks = shap.kernel_shap(box, x, target=0, groups=g, num_samples=14)
  np.testing.assert_allclose(ks, phi, atol=1e-4)


def test_exact_too_many_players():
  box, x = _mlp_box(21), _x(1, 21)
  with pytest.raises(ValueError, match=r'max_players=20.*kernel_shap'):
    shap.exact_shapley(box, x)


# ------------------------------------------------------------- KernelSHAP
def test_kernel_full_enumeration_is_exact():
  exact = shap.exact_shapley(BOX, X, target=0)
  ks = shap.kernel_shap(BOX, X, target=0, num_samples=2 ** D - 2)
  np.testing.assert_allclose(ks, exact, atol=5e-5)
  more = shap.kernel_shap(BOX, X, target=0, num_samples=10 ** 6)   # capped
  np.testing.assert_allclose(more, ks, atol=1e-6)


@pytest.mark.parametrize('enumerate_sizes,stratify', [(True, False),
                                                       (False, True)])
def test_kernel_converges_to_exact(enumerate_sizes, stratify):
  exact = np.asarray(shap.exact_shapley(BOX, X, target=0))
  errs = []
  for n in (16, 160):
    e = [np.abs(np.asarray(shap.kernel_shap(
        BOX, X, target=0, num_samples=n, key=jax.random.key(s),
        enumerate_sizes=enumerate_sizes, stratify=stratify)) - exact).mean()
         for s in range(4)]
    errs.append(np.mean(e))
  assert errs[1] < 0.5 * errs[0], errs
  assert errs[1] < 0.1 * np.abs(exact).mean(), errs


def test_kernel_efficiency_determinism_and_compiles_once():
  key = jax.random.key(2)
  data = _x(50, D, seed=7)
  base = masking.make_baseline('mean', X, data=data)
  before = shap._kernel_core._cache_size()  # pylint: disable=protected-access
  a = shap.kernel_shap(BOX, X, key=key, baseline='mean', data=data,
                       num_samples=160, target=0)
  b = shap.kernel_shap(BOX, X, key=key, baseline='mean', data=data,
                       num_samples=160, target=0)
  np.testing.assert_array_equal(a, b)
  np.testing.assert_allclose(a.sum(-1), _gap(BOX, X, base, 0), atol=1e-5)
  for s in range(3):   # new values of x, key and baseline: no new trace
    shap.kernel_shap(BOX, _x(4, D, seed=10 + s), key=jax.random.key(s),
                     baseline=0.1 * s, num_samples=160, target=0)
  assert shap._kernel_core._cache_size() - before <= 1  # pylint: disable=protected-access


def test_kernel_rows_independent_of_batch_and_chunks():
  key = jax.random.key(0)
  full = shap.kernel_shap(BOX, X, key=key, num_samples=160, target=0)
  part = shap.kernel_shap(BOX, X[:2], key=key, num_samples=160, target=0,
                          chunk_size=30)
  np.testing.assert_allclose(full[:2], part, atol=1e-5)


def test_kernel_bad_inputs():
  key = jax.random.key(0)
  with pytest.raises(ValueError, match='num_samples'):
    shap.kernel_shap(BOX, X, key=key, num_samples=D)
  with pytest.raises(ValueError, match='baseline'):
    shap.kernel_shap(BOX, X, key=key, baseline=jnp.zeros((D + 1,)))
  with pytest.raises(ValueError, match='x contains NaN'):
    shap.kernel_shap(BOX, X.at[0, 0].set(jnp.nan), key=key)
  with pytest.raises(ValueError, match='key'):
    shap.kernel_shap(BOX, X, num_samples=50)
  with pytest.raises(ValueError, match='target'):
    shap.kernel_shap(BOX, X, key=key, target=5)
  with pytest.raises(ValueError, match='num_permutations'):
    shap.permutation_shap(BOX, X, key=key, num_permutations=0)


def test_kernel_shap_paired_needs_twice_the_players():
  # A pair (z, 1 - z) fixes one direction of phi: paired sampling is
  # singular below 2 (d - 1) samples; unpaired needs d + 1.
  box, x = _mlp_box(20), _x(6, 20)
  with pytest.raises(ValueError, match='paired=True'):
    shap.kernel_shap(box, x, key=0, num_samples=21, target=0)
  for own in (True, False):
    phi = shap.kernel_shap(box, x, key=0, num_samples=21, paired=False,
                           target=0, shared_coalitions=own)
    assert bool(jnp.isfinite(phi).all())
    np.testing.assert_allclose(phi.sum(-1), _gap(box, x, jnp.zeros_like(x), 0),
                               atol=1e-4)
  assert bool(jnp.isfinite(shap.kernel_shap(box, x, key=0, num_samples=38,
                                            target=0)).all())


@pytest.mark.parametrize('d,n', [(10, 100), (100, 2248), (9, 57)])
def test_kernel_plan_weights_cover_the_kernel_mass(d, n):
  for es, st, paired in [(True, False, True), (True, True, True),
                         (False, True, False), (False, False, True)]:
    plan = shap._kernel_plan(d, n, es, paired, st)  # pylint: disable=protected-access
    m = len(plan.w_fixed) + plan.num_sampled
    assert n - 1 <= m <= n
    total = plan.w_fixed.sum() + plan.w_sampled.sum()
    np.testing.assert_allclose(total, 1.0, rtol=1e-5)
    if st and plan.base_sizes.size:   # strata weights = their kernel mass
      sizes = np.asarray(plan.base_sizes)
      assert sizes.min() >= 1 and sizes.max() <= d - 1


def test_sample_shapley_coalitions_distribution():
  d, n = 6, 40000
  z = np.asarray(
      coalitions.sample_shapley_coalitions(jax.random.key(0), n, d))
  assert z.shape == (n, d) and z.dtype == bool
  sizes = z.sum(-1)
  assert sizes.min() >= 1 and sizes.max() <= d - 1
  np.testing.assert_array_equal(z[1::2], ~z[0::2])              # paired
  freq = np.bincount(sizes, minlength=d + 1) / n
  np.testing.assert_allclose(freq, coalitions.shapley_kernel(d), atol=0.01)
  np.testing.assert_allclose(z.mean(0), 0.5, atol=0.02)         # symmetric


def test_constrained_regression_closed_form():
  # With A = E[zz^T] exact and b from exact Shapley values of a linear game,
  # the closed form returns the linear coefficients.
  d = 5
  z = np.asarray(shap._all_coalitions(d), np.float32)  # pylint: disable=protected-access
  p = coalitions.shapley_kernel(d)
  w = p[z.sum(-1).astype(int)] / np.array(
      [math.comb(d, int(s)) for s in z.sum(-1)])
  beta = np.arange(1.0, d + 1)
  a = (z * w[:, None]).T @ z
  b = ((z * w[:, None]).T @ (z @ beta))[None]
  phi = shap.constrained_shapley_regression(jnp.asarray(a), jnp.asarray(b),
                                            jnp.asarray([beta.sum()]))
  np.testing.assert_allclose(phi[0], beta, rtol=1e-5)


# ------------------------------------------------------------ permutation
def test_permutation_converges_and_is_efficient():
  exact = np.asarray(shap.exact_shapley(BOX, X, target=0))
  gap = _gap(BOX, X, jnp.zeros_like(X), 0)
  errs = []
  for p in (8, 128):
    phi = np.asarray(shap.permutation_shap(BOX, X, target=0,
                                           num_permutations=p,
                                           key=jax.random.key(p)))
    np.testing.assert_allclose(phi.sum(-1), gap, atol=1e-5)
    errs.append(np.abs(phi - exact).mean())
  assert errs[1] < 0.5 * errs[0], errs


def test_permutation_antithetic_pairs_and_chunking():
  perms = np.asarray(shap.sample_permutations(jax.random.key(0), 6, 5))
  np.testing.assert_array_equal(perms[1::2], perms[0::2, ::-1])
  assert all(sorted(p) == list(range(5)) for p in perms)
  key = jax.random.key(1)
  a = shap.permutation_shap(BOX, X, key=key, num_permutations=8, target=0)
  b = shap.permutation_shap(BOX, X, key=key, num_permutations=8, target=0,
                            chunk_size=11)
  np.testing.assert_allclose(a, b, atol=1e-5)


def test_permutation_exact_on_linear_model():
  # A linear game has every marginal contribution equal to w_i (x_i - b_i).
  d = 6
  w = jnp.arange(1.0, d + 1)[:, None]
  box = bb.from_jax(lambda x: x @ w, input_shape=(d,), output='regression')
  x = _x(2, d)
  phi = shap.permutation_shap(box, x, key=jax.random.key(0),
                              num_permutations=3, antithetic=False)
  np.testing.assert_allclose(phi, w[:, 0] * x, atol=1e-5)


def test_int_seeds_are_keys():
  """Every random function takes an int seed as `jax.random.key(seed)`."""
  key = jax.random.key(7)
  np.testing.assert_array_equal(
      shap.kernel_shap(BOX, X, key=7, num_samples=160, target=0),
      shap.kernel_shap(BOX, X, key=key, num_samples=160, target=0))
  np.testing.assert_array_equal(
      shap.permutation_shap(BOX, X, key=7, num_permutations=8, target=0),
      shap.permutation_shap(BOX, X, key=key, num_permutations=8, target=0))
  np.testing.assert_array_equal(
      coalitions.sample_shapley_coalitions(7, 20, D),
      coalitions.sample_shapley_coalitions(key, 20, D))
  np.testing.assert_array_equal(shap.sample_permutations(7, 4, D),
                                shap.sample_permutations(key, 4, D))
  for a, b in zip(shap.kernel_shap_coalitions(7, D, 40),
                  shap.kernel_shap_coalitions(key, D, 40)):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match='key'):
    shap.kernel_shap(BOX, X, key=-1, num_samples=160)


# ------------------------------------------- per-example coalitions (selective)
def test_kernel_shap_own_coalitions_per_example():
  rng = np.random.default_rng(0)
  d = 6
  w1 = jnp.asarray(rng.normal(size=(d, 8)), jnp.float32)
  box = bb.from_jax(lambda x: jnp.tanh(x @ w1)[:, :2], input_shape=(d,),
                    output='logits')
  x = jnp.asarray(rng.normal(size=(300, d)), jnp.float32)
  ref = shap.exact_shapley(box, x, space='probs')
  kw = dict(space='probs', num_samples=12, shared_coalitions=False)
  own = shap.kernel_shap(box, x, key=1, **kw)
  # a row's estimate does not depend on the rest of its batch
  np.testing.assert_allclose(shap.kernel_shap(box, x[:7], key=1, **kw),
                             own[:7], atol=1e-4)
  # rows draw their own coalitions: two copies of a row get two estimates
  twice = jnp.concatenate([x[:1], x[:1]])
  a = shap.kernel_shap(box, twice, key=1, **kw)
  assert float(jnp.max(jnp.abs(a[0] - a[1]))) > 1e-4
  b = shap.kernel_shap(box, twice, key=1, space='probs', num_samples=12)
  np.testing.assert_array_equal(b[0], b[1])
  # efficiency holds per row, and every coalition enumerated is exact
  np.testing.assert_allclose(own.sum(1), ref.sum(1), atol=1e-5)
  full = shap.kernel_shap(box, x[:20], key=1, space='probs',
                          num_samples=2 ** d, shared_coalitions=False)
  np.testing.assert_allclose(full, ref[:20], atol=1e-5)
  with pytest.raises(ValueError, match='background'):
    shap.kernel_shap(box, x[:3], key=1, background=x[:4],
                     shared_coalitions=False, num_samples=12)
