"""Background data, data statistics, other libraries' argument names and
non-finite model outputs across the attribution methods."""

import inspect
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xai_jax import attribution
from xai_jax import blackbox as bb
from xai_jax import masking
from xai_jax.attribution import shap

D = 5
M = 4


def _weights(d=D, h=8, c=3, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(d, h)).astype(np.float32),
          rng.normal(size=(h, c)).astype(np.float32))


W1, W2 = _weights()
F = lambda x: jnp.tanh(x @ W1) @ W2  # noqa: E731
BOX = bb.from_jax(F, input_shape=(D,))
X = np.random.default_rng(1).normal(size=(3, D)).astype(np.float32)
BG = np.random.default_rng(2).normal(size=(M, D)).astype(np.float32)
T = np.array([0, 1, 2])


def _interventional_shapley(x, bg, t):
  """Brute force: Shapley values of v(S) = mean_b f(x_S, b_not_S)."""
  d = x.shape[-1]

  def v(xi, s, ti):
    z = np.isin(np.arange(d), list(s))
    rows = np.where(z[None], xi[None], bg)
    return float(np.asarray(F(rows))[:, ti].mean())

  phi = np.zeros(x.shape)
  for b in range(x.shape[0]):
    for i in range(d):
      others = [j for j in range(d) if j != i]
      for size in range(d):
        w = math.factorial(size) * math.factorial(d - size - 1) / (
            math.factorial(d))
        for s in itertools.combinations(others, size):
          phi[b, i] += w * (v(x[b], set(s) | {i}, t[b]) - v(x[b], set(s),
                                                             t[b]))
  return phi


REF = _interventional_shapley(X, BG, T)
GAP = (np.asarray(F(X))[np.arange(3), T]
       - np.asarray(F(BG))[:, T].mean(0))      # f(x) - mean_b f(b)


def test_exact_shapley_with_background_is_the_interventional_value():
  phi = shap.exact_shapley(BOX, X, target=T, background=BG)
  np.testing.assert_allclose(phi, REF, atol=1e-5)
  np.testing.assert_allclose(phi.sum(-1), GAP, atol=1e-5)
  # chunking does not change it
  small = shap.exact_shapley(BOX, X, target=T, background=BG, chunk_size=7)
  np.testing.assert_allclose(small, phi, atol=1e-5)


def test_exact_shapley_with_background_and_groups():
  g = masking.FeatureGroups(assignment=jnp.array([0, 0, 1, 2, 2]),
                            num_groups=3, input_shape=(D,), kind='features')
  phi = shap.exact_shapley(BOX, X, target=T, background=BG, groups=g)
  assert phi.shape == (3, 3)
  np.testing.assert_allclose(phi.sum(-1), GAP, atol=1e-5)


def test_kernel_shap_with_every_coalition_and_row_is_exact():
  phi = shap.kernel_shap(BOX, X, target=T, background=BG, num_samples=10**4)
  np.testing.assert_allclose(phi, REF, atol=1e-4)


def test_kernel_shap_sampled_rows_efficiency_and_no_bias():
  one = shap.kernel_shap(BOX, X, target=T, background=BG, num_samples=20,
                         background_samples=1, key=0)
  np.testing.assert_allclose(one.sum(-1), GAP, atol=1e-5)
  runs = np.stack([np.asarray(shap.kernel_shap(
      BOX, X, target=T, background=BG, num_samples=30, background_samples=1,
      key=s)) for s in range(300)])
  se = runs.std(0) / np.sqrt(runs.shape[0])
  z = (runs.mean(0) - REF) / np.maximum(se, 1e-6)
  # unbiased: the mean of 300 estimates is within a few standard errors
  assert np.abs(z).mean() < 1.3 and np.abs(z).max() < 4.5, z


def test_kernel_shap_row_control_variate_reduces_error():
  d, m = 40, 64
  w1, w2 = _weights(d=d, h=32, c=2, seed=3)
  box = bb.from_jax(lambda x: jnp.tanh(x @ w1) @ w2, input_shape=(d,))
  x = np.random.default_rng(4).normal(size=(8, d)).astype(np.float32)
  bg = np.random.default_rng(5).normal(size=(m, d)).astype(np.float32)
  ref = shap.kernel_shap(box, x, target=1, background=bg, num_samples=3000,
                         key=9)
  err = lambda r, n: np.mean([np.abs(np.asarray(shap.kernel_shap(  # noqa
      box, x, target=1, background=bg, num_samples=n, background_samples=r,
      key=s)) - ref).mean() for s in range(3)])
  # With a fixed budget of 8,000 model rows per example, one row per
  # coalition beats every row for fewer coalitions.
  assert err(1, 8000) < err(None, 125), (err(1, 8000), err(None, 125))


def test_permutation_shap_with_background():
  phi = shap.permutation_shap(BOX, X, target=T, background=BG,
                              num_permutations=600, key=0)
  np.testing.assert_allclose(phi.sum(-1), GAP, atol=1e-5)
  np.testing.assert_allclose(phi, REF, atol=0.05 * np.abs(REF).max())
  one = shap.permutation_shap(BOX, X, target=T, background=BG,
                              num_permutations=2000, key=1,
                              background_samples=1)
  np.testing.assert_allclose(one.sum(-1), GAP, atol=1e-5)
  np.testing.assert_allclose(one, REF, atol=0.1 * np.abs(REF).max())


def test_occlusion_with_background_is_the_mean_over_rows():
  phi = attribution.occlusion(BOX, X, target=T, background=BG)
  per_row = np.mean([np.asarray(attribution.occlusion(
      BOX, X, target=T, baseline=b)) for b in BG], axis=0)
  np.testing.assert_allclose(phi, per_row, atol=1e-5)
  small = attribution.occlusion(BOX, X, target=T, background=BG,
                                chunk_size=3)
  np.testing.assert_allclose(small, phi, atol=1e-5)


def test_mean_baseline_comes_from_data_never_from_the_batch():
  data = np.random.default_rng(6).normal(size=(50, D)).astype(np.float32)
  for fn in (shap.exact_shapley, attribution.occlusion,
             attribution.integrated_gradients):
    whole = fn(BOX, X, target=0, baseline='mean', data=data)
    alone = fn(BOX, X[:1], target=0, baseline='mean', data=data)
    np.testing.assert_allclose(alone[0], whole[0], atol=1e-5)
    with pytest.raises(ValueError, match='data is needed'):
      fn(BOX, X, target=0, baseline='mean')
  # efficiency against the data mean
  phi = shap.exact_shapley(BOX, X, target=0, baseline='mean', data=data)
  gap = np.asarray(F(X))[:, 0] - np.asarray(F(data.mean(0)[None]))[0, 0]
  np.testing.assert_allclose(phi.sum(-1), gap, atol=1e-5)


@pytest.mark.parametrize('call, match', [
    (lambda: shap.kernel_shap(BOX, X, background=BG, baseline=0.5, key=0),
     'not both'),
    (lambda: shap.kernel_shap(BOX, X, background=BG[:, :3], key=0),
     'background must have shape'),
    (lambda: shap.kernel_shap(BOX, X, background=BG[:0], key=0),
     'background must hold at least one'),
    (lambda: shap.exact_shapley(BOX, X, background=np.full((2, D), np.nan)),
     'background contains NaN'),
    (lambda: shap.kernel_shap(BOX, X, background_samples=2, key=0),
     'background_samples needs background'),
    (lambda: shap.kernel_shap(BOX, X, background=BG, background_samples=0,
                              key=0), 'background_samples'),
    (lambda: attribution.occlusion(BOX, X, background=BG, baseline='mean'),
     'not both'),
])
def test_background_errors(call, match):
  with pytest.raises(ValueError, match=match):
    call()


@pytest.mark.parametrize('fn, name, ours', [
    (attribution.integrated_gradients, 'n_steps', "'steps'"),
    (attribution.integrated_gradients, 'baselines', "'baseline'"),
    (attribution.integrated_gradients, 'data_mean', "'data'"),
    (attribution.integrated_gradients, 'internal_batch_size', "'chunk_size'"),
    (attribution.occlusion, 'sliding_window_shapes', "'groups'"),
    (attribution.occlusion, 'blur_sgima', "did you mean 'blur_sigma'"),
    (attribution.rise, 'n_masks', 'pass-through options'),
    (shap.kernel_shap, 'nsamples', "'num_samples'"),
    (shap.exact_shapley, 'baselines', "'baseline'"),
    (shap.permutation_shap, 'feature_mask', "'groups'"),
    (attribution.lime, 'n_samples', "'num_samples'"),
    (attribution.smoothgrad, 'stdevs', "'noise_level'"),
    (attribution.saliency, 'abs', 'help'),
    (attribution.grad_x_input, 'labels', "'target'"),
    (shap.kernel_shap, 'num_sample', "did you mean 'num_samples'"),
])
def test_other_libraries_argument_names_name_ours(fn, name, ours):
  kw = {'key': 0} if 'key' in inspect.signature(fn).parameters else {}
  with pytest.raises(ValueError, match=f"unknown argument '{name}'.*{ours}"):
    fn(BOX, X, **kw, **{name: 1})


def _nan_box(where):
  """A box that returns NaN where `where(x)` holds (row-wise)."""
  def f(x):
    out = F(x)
    return jnp.where(where(x)[:, None], jnp.nan, out)
  return bb.from_jax(f, input_shape=(D,))


NAN_ON_X = _nan_box(lambda x: x[:, 0] == X[1, 0])
NAN_ON_ZEROS = _nan_box(lambda x: jnp.any(x == 0.0, axis=-1))
METHODS = {
    'saliency': lambda b: attribution.saliency(b, X),
    'grad_x_input': lambda b: attribution.grad_x_input(b, X),
    'integrated_gradients': lambda b: attribution.integrated_gradients(b, X),
    'smoothgrad': lambda b: attribution.smoothgrad(b, X, key=0,
                                                   num_samples=4),
    'occlusion': lambda b: attribution.occlusion(b, X),
    'rise': lambda b: attribution.rise(b, X, key=0, num_masks=16),
    'lime': lambda b: attribution.lime(b, X, key=0, num_samples=50, data=BG),
    'kernel_shap': lambda b: shap.kernel_shap(b, X, key=0, num_samples=20),
    'exact_shapley': lambda b: shap.exact_shapley(b, X),
    'permutation_shap': lambda b: shap.permutation_shap(
        b, X, key=0, num_permutations=4),
}


@pytest.mark.parametrize('name', sorted(METHODS))
def test_a_model_returning_nan_on_x_raises(name):
  with pytest.raises(ValueError, match=f'{name}: the model returned NaN'):
    METHODS[name](NAN_ON_X)


@pytest.mark.parametrize('name', ['integrated_gradients', 'occlusion',
                                  'kernel_shap', 'exact_shapley',
                                  'permutation_shap', 'rise'])
def test_a_model_returning_nan_on_perturbed_inputs_raises(name):
  # finite on x, NaN wherever the zero baseline shows
  with pytest.raises(ValueError, match=f'{name}: the model returned NaN'):
    METHODS[name](NAN_ON_ZEROS)


def test_kernel_shap_background_through_the_protocol():
  import xai_jax  # pylint: disable=g-import-not-at-top
  method = xai_jax.EXPLAINERS['kernel_shap']
  ex = method.fit(0, BOX, X, background=BG, num_samples=10**4)
  out = method.explain(ex, X, key=0, target=T)
  np.testing.assert_allclose(out.scores, REF, atol=1e-4)
