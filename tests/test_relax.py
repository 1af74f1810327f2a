"""Tests for xai_jax.relax: relaxed top-k samplers."""

from __future__ import annotations

import functools

import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from xai_jax import relax

STOCHASTIC = ('concrete', 'subset', 'perturbed', 'straight_through')
DIFFERENTIABLE = ('concrete', 'subset', 'perturbed', 'straight_through')
EXACT_K = ('subset', 'perturbed', 'straight_through', 'hard')
BOUNDED = ('concrete', 'perturbed', 'straight_through', 'hard')


def _sampler(name, num_samples=64, noise='normal'):
  """The sampler `name`, with a small Monte Carlo size for 'perturbed'."""
  fn = relax.get_sampler(name)
  if name == 'perturbed':
    return functools.partial(fn, num_samples=num_samples, noise=noise)
  return fn


def _logits(seed, shape, scale=1.0):
  """Test logits from numpy (no random-bit program to compile per shape)."""
  rng = np.random.default_rng(seed)
  return jnp.asarray(scale * rng.standard_normal(shape), jnp.float32)


def _ref_subset(keys, k, t):
  """Xie & Ermon's successive softmax in float64 numpy (the paper's formula)."""
  alpha = np.asarray(keys, np.float64)
  total = np.zeros_like(alpha)
  a = np.zeros_like(alpha)
  for _ in range(k):
    alpha = alpha + np.log(np.maximum(1.0 - a, 1e-300))
    s = alpha / t
    s = s - s.max(-1, keepdims=True)
    a = np.exp(s) / np.exp(s).sum(-1, keepdims=True)
    total += a
  return total


# ----------------------------------------------------------------------------
# Shapes, range and sums.


@pytest.mark.parametrize('name,shape', [
    (name, shape) for name in sorted(relax.SAMPLERS)
    for shape in [(3, 10), (2, 3, 10)]
] + [(name, (10,)) for name in ('concrete', 'subset', 'hard')])
def test_shape_range_and_sum(name, shape):
  k = 3
  logits = _logits(0, shape)
  mask = _sampler(name)(jax.random.key(1), logits, k, 0.3)
  assert mask.shape == shape and mask.dtype == logits.dtype
  m = np.asarray(mask)
  assert np.all(np.isfinite(m))
  assert np.all(m >= 0.0)
  sums = m.sum(-1)
  if name in BOUNDED:
    assert np.all(m <= 1.0 + 1e-6)
  if name in EXACT_K:
    np.testing.assert_allclose(sums, k, atol=1e-5)
  else:  # concrete: with replacement
    assert np.all(sums <= k + 1e-5)
    assert np.all(sums >= 1.0 - 1e-5)  # each draw is a softmax summing to 1


@pytest.mark.parametrize('name', ['straight_through', 'hard'])
def test_exact_k_hot(name):
  mask = np.asarray(_sampler(name)(jax.random.key(3), _logits(2, (3, 10)), 3,
                                   0.5))
  assert set(np.unique(mask)) <= {0.0, 1.0}
  np.testing.assert_array_equal(mask.sum(-1), 3)


@hypothesis.settings(max_examples=25, deadline=None,
                     suppress_health_check=[hypothesis.HealthCheck.too_slow])
@hypothesis.given(
    name=st.sampled_from(sorted(relax.SAMPLERS)),
    k=st.sampled_from([1, 3, 10]),
    tau=st.floats(0.01, 10.0),
    scale=st.sampled_from([0.0, 1.0, 30.0, 1e3]),
    seed=st.integers(0, 2**16),
)
def test_property_range_and_sum(name, k, tau, scale, seed):
  # Few distinct shapes (one compile each); values, tau, k and keys vary.
  lead, d = (3,), 10
  logits = _logits(seed, lead + (d,), scale)
  mask = np.asarray(
      _sampler(name)(jax.random.key(seed + 1), logits, k, tau))
  assert mask.shape == lead + (d,)
  assert np.all(np.isfinite(mask)) and np.all(mask >= 0.0)
  sums = mask.sum(-1)
  if name in BOUNDED:
    assert np.all(mask <= 1.0 + 1e-6)
  if name in EXACT_K:
    np.testing.assert_allclose(sums, k, rtol=1e-5, atol=1e-5)
  else:
    assert np.all(sums <= k + 1e-4)


@pytest.mark.parametrize('name', ['concrete', 'subset', 'hard'])
def test_single_feature(name):
  mask = _sampler(name)(jax.random.key(0), jnp.array([[0.5], [-2.0]]), 1, 0.1)
  np.testing.assert_allclose(mask, 1.0, atol=1e-6)


def test_subset_matches_reference_formula():
  """Same Gumbel keys through the paper's formula in float64 numpy."""
  key, logits, k, tau = jax.random.key(4), _logits(3, (2, 3, 10)), 3, 0.3
  keys = logits + relax._noise(key, logits.shape, jnp.float32)
  np.testing.assert_allclose(
      relax.subset_topk(key, logits, k, tau), _ref_subset(keys, k, tau),
      atol=2e-5)


def test_subset_exact_in_log_space_for_large_gaps():
  """A clamp `max(1 - a, tiny)` would pick a feature with a 1e3 gap twice."""
  logits = jnp.array([[1000.0, 0.0, 0.0, -5.0]])
  mask = np.asarray(relax.subset_topk(jax.random.key(0), logits, 2, 0.01))
  assert mask.max() <= 1.0 + 1e-6
  np.testing.assert_allclose(mask.sum(), 2.0, atol=1e-5)
  assert mask[0, 0] == pytest.approx(1.0, abs=1e-6)


# ----------------------------------------------------------------------------
# Limits tau -> 0.


def test_low_tau_matches_hard_topk_of_noisy_keys():
  key, logits, k = jax.random.key(5), _logits(6, (2, 3, 10)), 3
  keys = logits + relax._noise(key, logits.shape, jnp.float32)
  want = relax.hard_topk(None, keys, k)
  np.testing.assert_allclose(
      relax.subset_topk(key, logits, k, 1e-5), want, atol=1e-3)
  np.testing.assert_array_equal(
      relax.straight_through_topk(key, logits, k, 1e-4), want)
  np.testing.assert_array_equal(
      relax.straight_through_topk(key, logits, k, 10.0), want)


def test_concrete_low_tau_is_union_of_argmaxes():
  key, logits, k = jax.random.key(7), _logits(8, (2, 3, 10)), 3
  g = relax._noise(key, logits.shape[:-1] + (k, 10), jnp.float32)
  winners = jnp.argmax(logits[..., None, :] + g, axis=-1)  # [2, 3, k]
  want = jax.nn.one_hot(winners, 10).max(axis=-2)
  got = relax.concrete_topk(key, logits, k, 1e-4)
  np.testing.assert_allclose(got, want, atol=1e-3)
  # With replacement: some rows pick a feature twice and have fewer than k.
  assert np.any(np.asarray(want).sum(-1) < k)


def test_low_tau_large_gaps_gives_hard_topk_of_logits():
  perm = np.random.default_rng(9).permutation(10).astype(np.float32)
  logits = jnp.asarray([10 * perm, -10 * perm, 20 * perm])  # gaps >> noise
  k = 3
  want = np.asarray(relax.hard_topk(None, logits, k))
  for name in ('subset', 'straight_through', 'perturbed'):
    got = _sampler(name)(jax.random.key(10), logits, k, 0.01)
    np.testing.assert_allclose(got, want, atol=1e-4, err_msg=name)
  # Concrete: every draw picks the single largest logit.
  got = relax.concrete_topk(jax.random.key(10), logits, k, 0.01)
  np.testing.assert_allclose(got, jax.nn.one_hot(jnp.argmax(logits, -1), 10),
                             atol=1e-4)


def test_hard_topk_ties_by_index_and_ignores_key_and_tau():
  logits = jnp.zeros((2, 6)).at[1, 4].set(1.0)
  mask = relax.hard_topk(None, logits, 3)
  np.testing.assert_array_equal(
      mask, [[1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 1, 0]])
  np.testing.assert_array_equal(
      relax.hard_topk(jax.random.key(0), logits, 3, 0.5), mask)


# ----------------------------------------------------------------------------
# Gradients.


@pytest.mark.parametrize('name', DIFFERENTIABLE)
@pytest.mark.parametrize('offset,scale', [(0.0, 1e3), (1e3, 0.05)])
def test_finite_gradients_small_tau_large_logits(name, offset, scale):
  logits = offset + _logits(11, (3, 10), scale)
  w = _logits(12, (3, 10))
  fn = _sampler(name)
  value = fn(jax.random.key(13), logits, 3, 0.01)
  grad = jax.grad(lambda x: jnp.sum(w * fn(jax.random.key(13), x, 3, 0.01)))(
      logits)
  assert np.all(np.isfinite(value)) and np.all(np.isfinite(grad))


@pytest.mark.parametrize('name', DIFFERENTIABLE)
def test_gradients_nonzero_at_moderate_tau(name):
  logits, w = _logits(14, (3, 10)), _logits(15, (3, 10))
  fn = _sampler(name)
  grad = jax.grad(lambda x: jnp.sum(w * fn(jax.random.key(16), x, 3, 0.5)))(
      logits)
  assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 1e-3


def test_straight_through_gradient_is_subset_gradient():
  logits, w = _logits(17, (3, 10)), _logits(18, (3, 10))
  key = jax.random.key(19)
  g_st = jax.grad(lambda x: jnp.sum(
      w * relax.straight_through_topk(key, x, 3, 0.5)))(logits)
  g_sub = jax.grad(lambda x: jnp.sum(w * relax.subset_topk(key, x, 3, 0.5)))(
      logits)
  np.testing.assert_allclose(g_st, g_sub, rtol=1e-5, atol=1e-6)


def test_hard_topk_has_zero_gradient():
  grad = jax.grad(lambda x: jnp.sum(jnp.arange(10.0) * relax.hard_topk(
      None, x, 3)))(_logits(20, (10,)))
  np.testing.assert_array_equal(grad, 0.0)


@pytest.mark.parametrize('noise', ['normal', 'gumbel'])
def test_perturbed_matches_analytic_two_features(noise):
  """d = 2, k = 1: y_1 = P(theta_1 + s Z_1 > theta_2 + s Z_2) in closed form.

  Normal noise: Phi(delta / (s sqrt 2)); Gumbel: sigmoid(delta / s) (the
  difference of two Gumbels is logistic).
  """
  sigma = 0.5
  theta = jnp.array([[0.2, -0.1], [-0.3, 0.3], [1.0, 0.0]])
  delta = np.asarray(theta[:, 0] - theta[:, 1], np.float64)
  if noise == 'normal':
    y1 = stats.norm.cdf(delta / (sigma * np.sqrt(2)))
    dy1 = stats.norm.pdf(delta / (sigma * np.sqrt(2))) / (sigma * np.sqrt(2))
  else:
    y1 = 1 / (1 + np.exp(-delta / sigma))
    dy1 = y1 * (1 - y1) / sigma
  fn = functools.partial(relax.perturbed_topk, jax.random.key(21), k=1,
                         tau=sigma, num_samples=40000, noise=noise)
  np.testing.assert_allclose(fn(theta)[:, 0], y1, atol=0.015)
  jac = jax.vmap(jax.jacrev(lambda t: fn(t[None])[0]))(theta)  # [3, 2, 2]
  want = np.stack([np.stack([dy1, -dy1], -1), np.stack([-dy1, dy1], -1)], 1)
  np.testing.assert_allclose(jac, want, atol=0.06)


def test_perturbed_gradient_matches_finite_differences_of_smoothed_fn():
  """MC VJP vs central differences of y_sigma (common random numbers)."""
  sigma, k, m = 0.5, 2, 40000
  theta = jnp.array([0.3, -0.2, 0.1, 0.5, -0.6])
  w = jnp.array([1.0, -0.5, 0.3, 0.8, -1.0])
  f = lambda t, key: jnp.dot(w, relax.perturbed_topk(
      key, t, k, sigma, num_samples=m))
  grad = jax.grad(f)(theta, jax.random.key(22))
  h, key = 0.1, jax.random.key(23)
  fd = jnp.stack([
      (f(theta + h * e, key) - f(theta - h * e, key)) / (2 * h)
      for e in jnp.eye(5)])
  np.testing.assert_allclose(grad, fd, atol=0.08)
  # Increasing logit i increases mask_i: positive diagonal Jacobian.
  jac = jax.jacrev(lambda t: relax.perturbed_topk(
      jax.random.key(24), t, k, sigma, num_samples=m))(theta)
  assert np.all(np.diag(np.asarray(jac)) > 0.1)


# ----------------------------------------------------------------------------
# Keys, jit, batching.


def test_jit_equals_no_jit():
  logits = _logits(25, (3, 10))
  names = sorted(relax.SAMPLERS)

  @jax.jit
  def all_samplers(key, x, tau):  # tau traced: value checks skipped
    return {n: _sampler(n)(key, x, 3, tau) for n in names}

  jitted = all_samplers(jax.random.key(26), logits, 0.4)
  for n in names:
    eager = _sampler(n)(jax.random.key(26), logits, 3, 0.4)
    np.testing.assert_allclose(jitted[n], eager, rtol=1e-5, atol=1e-6,
                               err_msg=n)


@pytest.mark.parametrize('name', STOCHASTIC)
def test_same_key_same_mask_different_key_different_mask(name):
  logits, fn = _logits(27, (3, 10)), _sampler(name)
  a = fn(jax.random.key(28), logits, 3, 0.5)
  np.testing.assert_array_equal(a, fn(jax.random.key(28), logits, 3, 0.5))
  assert not np.allclose(a, fn(jax.random.key(29), logits, 3, 0.5))


def test_raw_prng_key_accepted():
  logits = _logits(30, (3, 10))
  mask = relax.subset_topk(jax.random.PRNGKey(0), logits, 3, 0.5)
  np.testing.assert_allclose(mask.sum(-1), 3.0, atol=1e-5)


@pytest.mark.parametrize('name', STOCHASTIC)
@pytest.mark.parametrize('lead', [(3,), (2, 3)])
def test_rows_get_independent_noise(name, lead):
  row = _logits(31, (10,))
  logits = jnp.broadcast_to(row, lead + (10,))
  mask = np.asarray(_sampler(name)(jax.random.key(32), logits, 3, 0.5))
  rows = {tuple(np.round(r, 5)) for r in mask.reshape(-1, 10)}
  if name == 'straight_through':  # k-hot: only C(10, 3) values, may repeat
    assert len(rows) > 1
  else:
    assert len(rows) == int(np.prod(lead))


def test_hard_batched_equals_vmap_over_rows():
  """Batched call == the per-row call vmapped over the leading dims."""
  logits = _logits(33, (2, 3, 10))
  want = jax.vmap(jax.vmap(lambda x: relax.hard_topk(None, x, 3)))(logits)
  np.testing.assert_array_equal(relax.hard_topk(None, logits, 3), want)


def test_low_precision_logits():
  logits = _logits(36, (3, 10), 1e3).astype(jnp.bfloat16)
  for name in ('concrete', 'subset'):  # the others only compare / average
    mask = _sampler(name)(jax.random.key(37), logits, 3, 0.01)
    assert mask.dtype == jnp.bfloat16
    assert np.all(np.isfinite(np.asarray(mask, np.float32))), name


# ----------------------------------------------------------------------------
# Argument checks.


@pytest.mark.parametrize('name', sorted(relax.SAMPLERS))
@pytest.mark.parametrize('k,match', [
    (11, 'k=11 is larger than the number of features d=10'),
    (0, 'k must be positive'),
    (-2, 'k must be positive'),
    (2.0, 'k must be a Python int'),
])
def test_bad_k(name, k, match):
  with pytest.raises(ValueError, match=match):
    _sampler(name)(jax.random.key(0), jnp.zeros((3, 10)), k, 0.5)


@pytest.mark.parametrize('name', STOCHASTIC)
@pytest.mark.parametrize('tau', [0.0, -1.0, float('nan'), None])
def test_bad_tau(name, tau):
  with pytest.raises(ValueError, match='tau'):
    _sampler(name)(jax.random.key(0), jnp.zeros((3, 10)), 2, tau)


@pytest.mark.parametrize('name', sorted(relax.SAMPLERS))
def test_bad_logits(name):
  fn = _sampler(name)
  key = jax.random.key(0)
  with pytest.raises(ValueError, match='logits contains NaN'):
    fn(key, jnp.zeros((3, 10)).at[1, 2].set(jnp.nan), 2, 0.5)
  with pytest.raises(ValueError, match='logits must have a floating dtype'):
    fn(key, jnp.zeros((3, 10), jnp.int32), 2, 0.5)
  with pytest.raises(ValueError, match='logits must have at least 1'):
    fn(key, jnp.float32(1.0), 1, 0.5)


@pytest.mark.parametrize('name', STOCHASTIC)
def test_bad_key(name):
  with pytest.raises(ValueError, match='key'):
    _sampler(name)(None, jnp.zeros((3, 10)), 2, 0.5)
  with pytest.raises(ValueError, match='key'):
    _sampler(name)(jax.random.split(jax.random.key(0), 2), jnp.zeros((3, 10)),
                   2, 0.5)


@pytest.mark.parametrize('name', STOCHASTIC)
def test_int_seed_and_raw_key_equal_the_typed_key(name):
  logits = jnp.linspace(-1.0, 1.0, 30).reshape(3, 10)
  fn = _sampler(name)
  want = fn(jax.random.key(5), logits, 2, 0.5)
  np.testing.assert_array_equal(fn(5, logits, 2, 0.5), want)
  np.testing.assert_array_equal(fn(jax.random.PRNGKey(5), logits, 2, 0.5),
                                want)
  with pytest.raises(ValueError, match='key must be a PRNG key or an int'):
    fn(-1, logits, 2, 0.5)


def test_bad_perturbed_options():
  args = (jax.random.key(0), jnp.zeros((3, 10)), 2, 0.5)
  with pytest.raises(ValueError, match='num_samples'):
    relax.perturbed_topk(*args, num_samples=0)
  with pytest.raises(ValueError, match="noise 'cauchy'"):
    relax.perturbed_topk(*args, noise='cauchy')


@pytest.mark.parametrize('name', sorted(relax.SAMPLERS))
@pytest.mark.parametrize('value', [np.inf, -np.inf, np.nan])
def test_non_finite_logits_raise_naming_logits(name, value):
  # Before: +inf logits gave NaN masks silently (softmax of inf - inf).
  fn = _sampler(name)
  logits = jnp.zeros((3, 10)).at[1, 2].set(value)
  with pytest.raises(ValueError,
                     match='logits contains NaN or infinite values'):
    fn(jax.random.key(0), logits, 2, 0.5)
  # numpy and list logits are checked the same way.
  with pytest.raises(ValueError, match='logits contains NaN or infinite'):
    fn(jax.random.key(0), np.asarray(logits).tolist(), 2, 0.5)
  # A large finite negative logit is the way to rule a feature out.
  mask = fn(jax.random.key(0), jnp.zeros((3, 10)).at[1, 2].set(-1e9), 2, 0.5)
  assert np.all(np.isfinite(np.asarray(mask)))
  assert float(mask[1, 2]) < 1e-6


def test_checks_skip_values_under_jit():
  """Under jit, NaN/tau value checks are skipped; static k checks still run."""
  f = jax.jit(lambda x, tau: relax.subset_topk(jax.random.key(0), x, 3, tau))
  assert f(jnp.zeros((3, 10)).at[0, 0].set(jnp.nan), 0.5).shape == (3, 10)
  # (documented: traced logits are not value-checked; inf gives NaN there.)
  out = f(jnp.zeros((3, 10)).at[0, 0].set(jnp.inf), 0.5)
  assert np.isnan(np.asarray(out)[0]).any()
  g = jax.jit(lambda x: relax.subset_topk(jax.random.key(0), x, 11, 0.5))
  with pytest.raises(ValueError, match='k=11 is larger'):
    g(jnp.zeros((3, 10)))


def test_registry():
  assert set(relax.SAMPLERS) == {
      'concrete', 'subset', 'perturbed', 'straight_through', 'hard'}
  assert relax.get_sampler('subset') is relax.subset_topk
  with pytest.raises(ValueError, match=r"Unknown sampler 'gumbel_max'.*"
                     r"concrete.*hard.*perturbed.*straight_through.*subset"):
    relax.get_sampler('gumbel_max')
