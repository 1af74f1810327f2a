"""LIME: local interpretable model-agnostic explanations (Ribeiro et al. 2016).

The `lime` package's semantics are the defaults, in batched, jitted JAX:

    g = argmin_{g linear} sum_k pi_x(z_k) (f_t(z_k) - g(z'_k))^2 + alpha ||g||^2,
    pi_x(z) = sqrt(exp(-D(x, z)^2 / w^2)) = exp(-D^2 / (2 w^2)),

a weighted ridge regression (`Ridge(alpha=1, fit_intercept=True)` with the
kernel values as sample weights, `lime/lime_base.py`) of the model's score on
an interpretable representation `z'` of perturbations `z` around `x`:

* `mode='tabular'` (`LimeTabularExplainer` with `discretize_continuous=False`):
  perturbations `z = N(0, 1) * sigma + mu` (training-data statistics
  `feature_mean` / `feature_std`, or those of `data=train_x`; never of the
  batch unless `stats_from_batch=True`; `sample_around_instance=True`: `+ x`
  instead of `+ mu`), row 0 is `x` itself; `z' = (z - mu) / sigma`;
  `D` Euclidean on `z'`; `w = 0.75 sqrt(d)`.
  NOT reproduced: lime's default `discretize_continuous=True` (quartile bins,
  binary "same bin as x" features); pass `discretize_continuous=False` to the
  package for the same estimator.
* `mode='groups'` (`LimeImageExplainer` / `LimeTextExplainer`): `z'` in
  {0,1}^G switches feature groups (patches, superpixels, tokens) on or off,
  off groups take the baseline; row 0 is all on; `D` is the cosine distance
  of `z'` to the all-ones vector (x100 for tokens, as lime_text); `w = 0.25`
  (images) or 25 (tokens). Sampling: each group on w.p. 1/2 (lime_image), or
  for tokens the number of removed tokens ~ U{1..G}, chosen without
  replacement (lime_text). The groups may differ per example (batched
  `FeatureGroups`, e.g. `masking.superpixel_groups`: lime_image's per-image
  quickshift superpixels): the on/off samples over the G ids are shared and
  each example expands them with its own segment map.
* `num_features=K` reproduces lime's `'highest_weights'` feature selection
  (Ridge(alpha=0.01) on all features, keep the top-K by |coef * z'_0|, refit);
  the default `None` keeps all features (lime with `num_features = d`; lime's
  `forward_selection` for K <= 6 is not reproduced).

Perturbations are drawn once per call and SHARED by the examples of the batch
(tabular: the same N(0, 1) noise, shifted per example when sampling around the
instance; groups: the same binary masks, hence the same kernel weights and one
Gram matrix for the whole batch). Everything is jitted (one compilation per
shape and static options) and evaluated in memory-bounded chunks
(`blackbox.map_batches`; groups mode: `coalitions.reduce_coalitions`, the
chunked evaluation KernelSHAP uses), so thousands of rows (NormLIME) run as
one call.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from xai_jax import _checks
from xai_jax import blackbox as bb
from xai_jax import masking
from xai_jax.attribution import _common
from xai_jax.attribution import coalitions

Array = jax.Array

MODES = ('tabular', 'groups')
GROUP_SAMPLINGS = ('bernoulli', 'num_removed')


class RidgeFit(NamedTuple):
  """A weighted ridge fit per example (fields `[batch, ...]`).

  Attributes:
    coef: `[batch, d]` coefficients (LIME's explanation).
    intercept: `[batch]`.
    score: `[batch]` weighted R^2 of the fit on the samples (lime's `score`).
    local_pred: `[batch]` the fit's prediction at sample row 0 (the instance).
  """
  coef: Array
  intercept: Array
  score: Array
  local_pred: Array


class LimeInfo(NamedTuple):
  """Extra outputs of `lime(..., return_info=True)` (fields `[batch]`).

  Attributes:
    intercept: the local model's intercept.
    local_pred: the local model's prediction at `x` (lime's `local_pred`).
    score: weighted R^2 of the local model (lime's `score`).
    prediction: the explained model score `f_t(x)`.
    target: int `[batch]`, the explained class.
  """
  intercept: Array
  local_pred: Array
  score: Array
  prediction: Array
  target: Array


# ------------------------------------------------------------ primitives
def lime_kernel(distances: Array, kernel_width: float | Array) -> Array:
  """lime's exponential kernel `sqrt(exp(-D^2 / w^2))`, elementwise."""
  return jnp.sqrt(jnp.exp(-(distances ** 2) / kernel_width ** 2))


def _r2(y: Array, pred: Array, w: Array) -> Array:
  """Weighted R^2 like sklearn's `r2_score(..., sample_weight=w)`."""
  ybar = jnp.sum(w * y, -1, keepdims=True) / jnp.sum(w, -1, keepdims=True)
  num = jnp.sum(w * (y - pred) ** 2, -1)
  den = jnp.sum(w * (y - ybar) ** 2, -1)
  safe = jnp.where(den > 0, den, 1.0)
  return jnp.where(den > 0, 1.0 - num / safe, jnp.where(num == 0, 1.0, 0.0))


def _ridge_one(data: Array, y: Array, w: Array, alpha: float,
               keep: Array | None = None) -> tuple[Array, Array]:
  """One weighted ridge with intercept (sklearn's centring): coef, intercept."""
  sw = jnp.sum(w)
  x_off = (w @ data) / sw
  y_off = jnp.sum(w * y) / sw
  xc = data - x_off
  if keep is not None:
    xc = xc * keep
  swx = xc * jnp.sqrt(w)[:, None]
  gram = swx.T @ swx + alpha * jnp.eye(data.shape[-1], dtype=data.dtype)
  rhs = xc.T @ (w * (y - y_off))
  coef = jax.scipy.linalg.solve(gram, rhs, assume_a='pos')
  return coef, y_off - x_off @ coef


@functools.partial(jax.jit, static_argnames=('alpha', 'num_features'))
def fit_weighted_ridge(data: Array, labels: Array, weights: Array, *,
                       alpha: float = 1.0,
                       num_features: int | None = None) -> RidgeFit:
  """Batched closed-form weighted ridge regression with intercept (LIME's fit).

  Per example b (sklearn `Ridge(alpha, fit_intercept=True)` with
  `sample_weight=w_b`): with weighted means `mu = sum w z / sum w`,
  `ybar = sum w y / sum w` and centred `Zc = Z - mu`,

      beta = (Zc^T W Zc + alpha I)^{-1} Zc^T W (y - ybar),
      intercept = ybar - mu^T beta.

  `score` is the weighted R^2 on the samples, `local_pred` the prediction at
  row 0 (lime's instance). `num_features=K` first fits `alpha=0.01` and keeps
  the K features with the largest `|beta_j * z_0j|` (lime's
  'highest_weights'); the others get coefficient 0.

  Args:
    data: `[n, d]` (shared by the batch) or `[batch, n, d]`.
    labels: `[batch, n]` (or `[n]`).
    weights: `[n]` (shared) or `[batch, n]`.
    alpha: the ridge penalty (lime: 1); static (a Python float).
    num_features: None (all) or K in [1, d]; static.
  Returns:
    `RidgeFit` with `coef[batch, d]` and `[batch]` fields.
  """
  labels = jnp.asarray(labels)
  squeeze = labels.ndim == 1
  if squeeze:
    labels = labels[None]
  batch = labels.shape[0]
  data = jnp.asarray(data)
  weights = jnp.asarray(weights, labels.dtype)
  data_b = jnp.broadcast_to(data, (batch, *data.shape[-2:]))
  w_b = jnp.broadcast_to(weights, labels.shape)
  keep = None
  if num_features is not None:
    d = data.shape[-1]
    k = _checks.check_k('num_features', num_features, d)
    c0, _ = jax.vmap(lambda z, y, w: _ridge_one(z, y, w, 0.01))(data_b, labels,
                                                                w_b)
    imp = jnp.abs(c0 * data_b[:, 0])
    thr = jax.lax.top_k(imp, k)[1]
    keep = jnp.zeros_like(imp).at[jnp.arange(batch)[:, None], thr].set(1.0)
  if keep is None:
    coef, icpt = jax.vmap(lambda z, y, w: _ridge_one(z, y, w, alpha))(
        data_b, labels, w_b)
  else:
    coef, icpt = jax.vmap(lambda z, y, w, m: _ridge_one(z, y, w, alpha, m))(
        data_b, labels, w_b, keep)
  pred = jnp.einsum('bnd,bd->bn', data_b, coef) + icpt[:, None]
  fit = RidgeFit(coef, icpt, _r2(labels, pred, w_b), pred[:, 0])
  if squeeze:
    fit = RidgeFit(*(f[0] for f in fit))
  return fit


def _fit_ridge_shared_rows(shared: Array, own: Array, y: Array, w: Array,
                           alpha: float, chunk: int = 1024) -> RidgeFit:
  """`fit_weighted_ridge` when all examples share the sample rows 1..n-1.

  `shared[n, d]` (row 0 unused), `own[b, d]` each example's row 0, labels
  and weights `[b, n]`. The same estimator (sklearn's centred weighted
  ridge), computed from uncentred moments: the weighted Gram matrices of all
  examples are ONE matrix product `w[:, 1:] @ (z z^T)_upper` over chunks of
  rows (the upper triangle only), about 2x faster on CPU than b separate
  `[d, n] @ [n, d]` products.
  """
  n, d = shared.shape
  b = own.shape[0]
  rows, cols = np.triu_indices(d)
  z1, w1 = shared[1:], w[:, 1:]
  m = n - 1
  # Full chunks of `chunk` rows (a multiple of 8 keeps the matmul aligned;
  # the zero padding of the last chunk adds nothing to the moments).
  size = max(1, min(chunk, m))
  num = -(-m // size)
  pad = num * size - m
  zp = jnp.concatenate([z1, jnp.zeros((pad, d), z1.dtype)]) if pad else z1
  wp = jnp.concatenate([w1, jnp.zeros((b, pad), w1.dtype)], 1) if pad else w1

  def part(c):
    zc = jax.lax.dynamic_slice_in_dim(zp, c * size, size)
    wc = jax.lax.dynamic_slice_in_dim(wp, c * size, size, axis=1)
    return wc @ (zc[:, rows] * zc[:, cols])
  upper = jax.lax.map(part, jnp.arange(num)).sum(0)           # [b, d(d+1)/2]
  g = jnp.zeros((b, d, d), shared.dtype).at[:, rows, cols].set(upper)
  g = g + jnp.swapaxes(g, 1, 2) - g * jnp.eye(d, dtype=g.dtype)
  w0 = w[:, 0]
  g = g + w0[:, None, None] * own[:, :, None] * own[:, None, :]
  sw = jnp.sum(w, -1)                                          # [b]
  x_off = (w1 @ z1 + w0[:, None] * own) / sw[:, None]          # [b, d]
  y_off = jnp.sum(w * y, -1) / sw
  gram = (g - sw[:, None, None] * x_off[:, :, None] * x_off[:, None, :]
          + alpha * jnp.eye(d, dtype=g.dtype))
  r = w * (y - y_off[:, None])                                 # [b, n]
  rhs = r[:, 1:] @ z1 + r[:, :1] * own                         # sum r = 0
  coef = jax.vmap(lambda a, v: jax.scipy.linalg.solve(a, v, assume_a='pos'))(
      gram, rhs)
  icpt = y_off - jnp.sum(x_off * coef, -1)
  pred = (coef @ shared.T).at[:, 0].set(jnp.sum(coef * own, -1)) \
      + icpt[:, None]
  return RidgeFit(coef, icpt, _r2(y, pred, w), pred[:, 0])


def _shared_ridge_operator(data: Array, w: Array, alpha: float
                           ) -> tuple[Array, Array]:
  """For shared data `[n, d]` and weights `[n]`, the linear maps with
  `coef = y @ m_coef` (`[n, d]`) and `intercept = y @ m_icpt` (`[n]`)."""
  sw = jnp.sum(w)
  x_off = (w @ data) / sw
  xc = data - x_off
  swx = xc * jnp.sqrt(w)[:, None]
  gram = swx.T @ swx + alpha * jnp.eye(data.shape[-1], dtype=data.dtype)
  # coef = G^{-1} Xc^T W (y - ybar) = G^{-1} Xc^T W y  (Xc^T w = 0).
  m_coef = jax.scipy.linalg.solve(gram, (xc * w[:, None]).T,
                                  assume_a='pos').T              # [n, d]
  m_icpt = w / sw - m_coef @ x_off                               # [n]
  return m_coef, m_icpt


# ------------------------------------------------------------ sampling
def lime_group_samples(key: Array | int, num_samples: int, num_groups: int,
                       *, sampling: str = 'bernoulli') -> Array:
  """Binary on/off samples of feature groups, `bool[num_samples, G]`.

  Row 0 is all on (the instance). 'bernoulli': every group on w.p. 1/2
  (lime_image). 'num_removed': the number of removed groups ~ U{1..G}, then
  that many groups chosen without replacement (lime_text). Traceable.

  Args:
    key: PRNG key or int seed.
    num_samples: n >= 1 (static).
    num_groups: G >= 1 (static).
    sampling: 'bernoulli' or 'num_removed'.
  Returns:
    `bool[num_samples, num_groups]`.
  """
  key = _checks.as_key('key', key, method='lime_group_samples')
  _checks.check_choice('sampling', sampling, GROUP_SAMPLINGS)
  return _group_samples(key, _checks.check_int('num_samples', num_samples),
                        _checks.check_int('num_groups', num_groups),
                        sampling)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _group_samples(key: Array | int, n: int, g: int, sampling: str) -> Array:
  if sampling == 'bernoulli':
    z = jax.random.uniform(key, (n, g)) < 0.5
  else:
    u = jax.random.uniform(key, (n, g + 1))
    removed = jnp.minimum(jnp.floor(u[:, :1] * g).astype(jnp.int32) + 1, g)
    z = ~coalitions.smallest_mask(u[:, 1:], removed[:, 0])
  return z.at[0].set(True)


def _feature_stat(name: str, value: Any, default: Array) -> Array:
  """A per-feature statistic `[d]`: `value` flattened, or `default` if None."""
  if value is None:
    return default
  out = jnp.asarray(value, default.dtype).reshape(-1)
  if out.shape != default.shape:
    raise ValueError(f'{name} must have {default.shape[0]} values (one per '
                     f'input element), got shape {np.shape(value)}.')
  _checks.check_array(name, out, finite=True)
  return out


def _tabular_stats(x_flat: Array, feature_mean: Any, feature_std: Any
                   ) -> tuple[Array, Array]:
  mu = _feature_stat('feature_mean', feature_mean, jnp.mean(x_flat, axis=0))
  sd = _feature_stat('feature_std', feature_std, jnp.std(x_flat, axis=0))
  if not _checks.is_tracer(sd) and bool(jnp.any(sd < 0)):
    raise ValueError('feature_std must be non-negative.')
  # StandardScaler: a zero standard deviation becomes 1.
  return mu, jnp.where(sd > 0, sd, 1.0)


def _data_stats(x: Array, feature_mean: Any, feature_std: Any, data: Any,
                stats_from_batch: bool) -> tuple[Any, Any]:
  """The tabular statistics' source, resolved before tracing.

  Given `feature_mean` and `feature_std` win; a missing one comes from
  `data` (`[m, *input_shape]`, e.g. the training set, as lime's
  `LimeTabularExplainer(training_data)`); with neither, the batch `x` itself
  only when `stats_from_batch=True` (then a row's explanation depends on the
  rest of its batch); otherwise a ValueError saying what to pass.
  """
  if feature_mean is not None and feature_std is not None:
    if data is not None:
      raise ValueError('give data= or feature_mean= and feature_std=, not '
                       'both.')
    return feature_mean, feature_std
  if data is not None:
    if stats_from_batch:
      raise ValueError('give data= or stats_from_batch=True, not both.')
    rows = _checks.as_array('data', data)
    shape = tuple(x.shape[1:])
    if rows.ndim != len(shape) + 1 or tuple(rows.shape[1:]) != shape:
      raise ValueError(f'data must have shape [m, '
                       f'{", ".join(map(str, shape))}] (e.g. the training '
                       f'set), got {tuple(rows.shape)}.')
    if rows.shape[0] < 2:
      raise ValueError('data must hold at least 2 rows (its standard '
                       'deviation scales the samples).')
    _checks.check_array('data', rows, finite=True)
    rows = rows.astype(x.dtype)
    return (jnp.mean(rows, 0) if feature_mean is None else feature_mean,
            jnp.std(rows, 0) if feature_std is None else feature_std)
  if stats_from_batch:
    return feature_mean, feature_std
  raise ValueError(
      "tabular LIME needs feature statistics: pass data=[m, *input_shape] "
      '(e.g. the training set, as lime.LimeTabularExplainer(training_data)) '
      'or feature_mean= and feature_std=; stats_from_batch=True takes them '
      'from the batch being explained (a row then depends on its batch).')


def _tabular_rows(noise: Array, x_flat: Array, mu: Array, sd: Array,
                  around: bool) -> tuple[Array, Array]:
  """Scaled samples `z'[be, n, d]` and model inputs `z[be, n, d]` (row 0 = x)."""
  xs = (x_flat - mu) / sd                                        # [be, d]
  scaled = jnp.broadcast_to(noise, (x_flat.shape[0], *noise.shape))
  if around:
    scaled = scaled + xs[:, None]
  scaled = scaled.at[:, 0].set(xs)
  inputs = (scaled * sd + mu).at[:, 0].set(x_flat)
  return scaled, inputs


def lime_tabular_samples(key: Array | int, x: Array, num_samples: int, *,
                         feature_mean: Array | None = None,
                         feature_std: Array | None = None,
                         data: Array | None = None,
                         stats_from_batch: bool = False,
                         sample_around_instance: bool = False
                         ) -> tuple[Array, Array]:
  """The tabular neighbourhood `lime(..., mode='tabular')` uses for `key`.

  `z = N(0, 1) sigma + mu` (or `+ x` around the instance), row 0 = x,
  interpretable rows `z' = (z - mu) / sigma` (lime_tabular `__data_inverse`
  without discretisation). The noise is shared by the examples.

  Args:
    key: PRNG key or int seed (the one given to `lime`).
    x: `[batch, *input_shape]`.
    num_samples: n.
    feature_mean, feature_std: `[*input_shape]` training-data statistics.
    data: `[m, *input_shape]` data set giving the missing statistics.
    stats_from_batch: take missing statistics from `x` (opt-in).
    sample_around_instance: centre the samples at x instead of the mean.
  Returns:
    `(scaled[batch, n, d], inputs[batch, n, *input_shape])`.
  Raises:
    ValueError: no source of statistics (see `lime`).
  """
  key = _checks.as_key('key', key, method='lime_tabular_samples')
  x = _checks.as_array('x', x)
  feature_mean, feature_std = _data_stats(x, feature_mean, feature_std, data,
                                          bool(stats_from_batch))
  return _tabular_samples(key, x, _checks.check_int('num_samples',
                                                    num_samples),
                          feature_mean, feature_std,
                          bool(sample_around_instance))


@functools.partial(jax.jit, static_argnums=(2, 5))
def _tabular_samples(key: Array | int, x: Array, num_samples: int,
                     feature_mean: Array | None, feature_std: Array | None,
                     sample_around_instance: bool) -> tuple[Array, Array]:
  x = jnp.asarray(x)
  x_flat = x.reshape(x.shape[0], -1)
  mu, sd = _tabular_stats(x_flat, feature_mean, feature_std)
  noise = jax.random.normal(key, (num_samples, x_flat.shape[1]), x.dtype)
  scaled, inputs = _tabular_rows(noise, x_flat, mu, sd, sample_around_instance)
  return scaled, inputs.reshape((x.shape[0], num_samples, *x.shape[1:]))


# ---------------------------------------------------------------- cores
@functools.partial(jax.jit, static_argnames=(
    'space', 'num_samples', 'around', 'alpha', 'num_features', 'be', 'chunk'))
def _tabular_core(box: bb.BlackBox, x: Array, target: Array | None,
                  key: Array, mu: Array, sd: Array, width: Array, *,
                  space: str, num_samples: int, around: bool, alpha: float,
                  num_features: int | None, be: int, chunk: int
                  ) -> tuple[RidgeFit, Array, Array]:
  batch = x.shape[0]
  t = (jnp.argmax(bb.forward_in_chunks(box, x, chunk), -1).astype(jnp.int32)
       if target is None else target)
  x_flat = x.reshape(batch, -1)
  noise = jax.random.normal(key, (num_samples, x_flat.shape[1]), x.dtype)
  score = _common.score_fn(box, space)
  n = num_samples

  if not around:
    # Sampling from the data distribution (lime's default): rows 1..n-1 do
    # not depend on the instance, so the model sees them once for the whole
    # batch (every class), and each example adds only its own row 0. Exact:
    # the same values as evaluating every example's n rows.
    shared = (noise * sd + mu).reshape((n, *x.shape[1:]))
    out_shared = _common.to_space(bb.forward_in_chunks(box, shared, chunk),
                                  box, space)                    # [n, C]
    own = bb.map_batches(lambda a: score(*a), (x, t), chunk)     # [batch]

  def one_chunk(args):
    xe, te, own_e = args
    if not around and num_features is None:
      # Nothing of size [examples, n, d] is built: distances from the norms,
      # the fit from the shared rows' moments.
      xs = (xe - mu) / sd
      d2 = (jnp.sum(noise ** 2, -1)[None] + jnp.sum(xs ** 2, -1)[:, None]
            - 2.0 * xs @ noise.T)
      dist = jnp.sqrt(jnp.maximum(d2, 0.0)).at[:, 0].set(0.0)
      y = jnp.take(out_shared, te, axis=1).T.at[:, 0].set(own_e)
      fit = _fit_ridge_shared_rows(noise, xs, y, lime_kernel(dist, width),
                                   alpha)
      return fit, y[:, 0]
    scaled, inputs = _tabular_rows(noise, xe, mu, sd, around)
    if around:
      y = bb.map_batches(lambda a: score(*a),
                         (inputs.reshape((-1, *x.shape[1:])),
                          jnp.repeat(te, n)), chunk).reshape(xe.shape[0], n)
    else:
      y = jnp.take(out_shared, te, axis=1).T.at[:, 0].set(own_e)
    dist = jnp.sqrt(jnp.sum((scaled - scaled[:, :1]) ** 2, -1))
    w = lime_kernel(dist, width)
    fit = fit_weighted_ridge(scaled, y, w, alpha=alpha,
                             num_features=num_features)
    return fit, y[:, 0]

  if around:
    own = jnp.zeros((batch,), jnp.float32)
  elif num_features is None:
    # The shared-rows fit costs [examples, n] memory per chunk, not
    # [examples, n, d]: up to 512 examples per chunk amortise its matmuls.
    be = max(be, min(batch, 512))
  fit, pred = bb.map_batches(one_chunk, (x_flat, t, own), be)
  return fit, pred, t


@functools.partial(jax.jit, static_argnames=(
    'space', 'num_samples', 'sampling', 'alpha', 'num_features', 'd', 'plan',
    'info'))
def _groups_core(box: bb.BlackBox, x: Array, base: Array,
                 target: Array | None, groups: masking.FeatureGroups | None,
                 key: Array, width: Array, dscale: Array, *, space: str,
                 num_samples: int, sampling: str, alpha: float,
                 num_features: int | None, d: int, plan: coalitions.Plan, info: bool
                 ) -> tuple[RidgeFit, Array, Array]:
  t, v1, _ = coalitions.endpoints(box, x, base, target, space, plan.rows)
  z = lime_group_samples(key, num_samples, d, sampling=sampling)
  zf = z.astype(jnp.float32)
  s = jnp.sum(zf, -1)
  dist = dscale * (1.0 - jnp.sqrt(s / d))                # cosine to all-ones
  w = lime_kernel(dist, width)
  score = _common.score_fn(box, space)
  if num_features is None and not info:
    # The fit is linear in the values: reduce chunks by a matmul, never
    # storing the [batch, n] values.
    m_coef, m_icpt = _shared_ridge_operator(zf, w, alpha)
    m = jnp.concatenate([m_coef, m_icpt[:, None]], axis=1)      # [n, d + 1]
    out = coalitions.reduce_coalitions(score, groups, x, base, t,
                                       coalitions.fixed_chunks(z, m, plan),
                                       plan, d + 1)
    coef, icpt = out[:, :d], out[:, d]
    zero = jnp.zeros_like(icpt)
    return RidgeFit(coef, icpt, zero, icpt + jnp.sum(coef, -1)), v1, t
  # Values needed (R^2 / feature selection): collect them, [batch, n].
  values = coalitions.coalition_values(score, groups, x, base, t, z, plan)
  fit = fit_weighted_ridge(zf, values, w, alpha=alpha,
                           num_features=num_features)
  return fit, v1, t


# ----------------------------------------------------------------- public
def lime(model: bb.BlackBox | Callable, x: Array, *,
         key: Array | int | None = None, target: Array | int | None = None,
         baseline: Array | float | str | None = None,
         num_samples: int = 5000, kernel_width: float | None = None,
         mode: str = 'tabular', groups: masking.FeatureGroups | None = None,
         feature_mean: Array | None = None, feature_std: Array | None = None,
         data: Array | None = None, stats_from_batch: bool = False,
         sample_around_instance: bool = False, sampling: str | None = None,
         distance_scale: float | None = None, alpha: float = 1.0,
         num_features: int | None = None, space: str = 'raw',
         chunk_size: int | None = None, return_info: bool = False,
         **unknown: Any) -> Array | tuple[Array, LimeInfo]:
  """LIME coefficients (Ribeiro, Singh & Guestrin 2016, Eq. 1) for a batch.

      xi(x) = argmin_g L(f, g, pi_x) + Omega(g),
      L = sum_z pi_x(z) (f_t(z) - g(z'))^2,  Omega(g) = alpha ||w_g||^2,
      pi_x(z) = sqrt(exp(-D(x, z)^2 / w^2)),

  with the `lime` package's sampling, distances and widths (module docstring).

  Args:
    model: a `BlackBox` or a JAX callable `[n, *input_shape] -> [n, c]`.
    x: `[batch, *input_shape]`.
    key: PRNG key or int seed (required).
    target: None (predicted class), an int, or int `[batch]`.
    baseline: groups mode only: the value of switched-off groups ('zero'
      default, 'mean', scalar, array); must be None in tabular mode.
    num_samples: perturbations n per example, row 0 included (lime: 5000).
    kernel_width: w; None = 0.75 sqrt(d) (tabular), 0.25 (groups), 25
      (token groups).
    mode: 'tabular' or 'groups'.
    groups: groups mode: the players (patches, segments, tokens); None =
      every input element. Batched groups (one assignment per example, e.g.
      `masking.superpixel_groups(x)`) give each example its own segments:
      the samples `z [n, num_groups]` are shared, example i expands them
      with its own assignment, and its coefficients for ids it does not use
      are those of switches that change nothing (near 0; see
      `masking.segment_descriptors` for which ids each image uses).
    feature_mean, feature_std: tabular: training-data statistics
      `[*input_shape]` (lime's StandardScaler; a zero std becomes 1).
    data: tabular: `[m, *input_shape]` data set (e.g. the training set, as
      `LimeTabularExplainer(training_data)`) giving the statistics not
      passed as `feature_mean` / `feature_std`.
    stats_from_batch: tabular: take the missing statistics from the batch
      `x` itself (opt-in: a row's explanation then depends on its batch).
      Tabular mode without `data`, both statistics or this flag raises.
    sample_around_instance: tabular: sample `N(0,1) sigma + x`.
    sampling: groups: 'bernoulli' (default; lime_image) or 'num_removed'
      (default for token groups; lime_text).
    distance_scale: groups: multiplies the cosine distance (None: 100 for
      token groups as lime_text, else 1).
    alpha: ridge penalty (lime: 1).
    num_features: None (all features) or K (lime's 'highest_weights').
    space: 'raw', 'probs' or 'log_probs' (lime explains probabilities; use
      'probs' for a logits model to match it).
    chunk_size: model rows per call (memory bound); None = automatic.
    return_info: also return a `LimeInfo` (intercept, local_pred, R^2, f_t(x)).
    **unknown: none; another library's name (nsamples, n_steps,
      baselines, ...) raises a ValueError naming ours.
  Returns:
    coefficients `[batch, *input_shape]` (tabular, or groups=None) or
    `[batch, num_groups]` (shared or batched groups); with `return_info`,
    `(coefficients, LimeInfo)`.
    Tabular coefficients are per unit of the *standardised* feature (as lime).
  """
  _common.check_options('lime', unknown, allowed=())
  _checks.check_choice('mode', mode, MODES)
  box, x = _common.prepare(model, x)
  t = _common.check_target(box, target, x.shape[0])
  _common.check_space(box, space)
  key = _checks.as_key('key', key, method='lime')
  n = _checks.check_int('num_samples', num_samples, 2)
  chunk = coalitions.resolve_chunk_size(chunk_size, box)
  _checks.check_positive('alpha', alpha)
  if mode == 'tabular':
    if baseline is not None:
      raise ValueError("baseline is only used with mode='groups' (tabular "
                       'LIME samples N(0,1) * feature_std + feature_mean).')
    if groups is not None:
      raise ValueError("groups needs mode='groups'.")
    if box.input_dtype != 'float':
      raise ValueError("mode='tabular' needs float inputs; use mode='groups' "
                       'with token groups for token ids.')
    d = int(np.prod(box.input_shape))
    if num_features is not None:
      _checks.check_k('num_features', num_features, d)
    width = 0.75 * np.sqrt(d) if kernel_width is None else kernel_width
    _checks.check_positive('kernel_width', width)
    feature_mean, feature_std = _data_stats(x, feature_mean, feature_std,
                                            data, bool(stats_from_batch))
    mu, sd = _tabular_stats(x.reshape(x.shape[0], -1), feature_mean,
                            feature_std)
    be = max(1, min(x.shape[0], chunk // n))
    _, be = bb.even_chunks(x.shape[0], be)
    fit, pred, tt = _tabular_core(
        box, x, t, key, mu, sd, jnp.float32(width), space=space,
        num_samples=n, around=bool(sample_around_instance),
        alpha=float(alpha), num_features=num_features, be=be, chunk=chunk)
    coef = fit.coef.reshape((x.shape[0], *box.input_shape))
  else:
    base = _common.resolve_baseline('zero' if baseline is None else baseline,
                                    x, data=data)
    masking.check_groups(groups, box.input_shape, batch=x.shape[0])
    d = coalitions.num_players(box, groups)
    if num_features is not None:
      _checks.check_k('num_features', num_features, d)
    tokens = groups is not None and groups.kind == 'tokens'
    if kernel_width is None:
      kernel_width = 25.0 if tokens else 0.25
    _checks.check_positive('kernel_width', kernel_width)
    if distance_scale is None:
      distance_scale = 100.0 if tokens else 1.0
    _checks.check_positive('distance_scale', distance_scale)
    if sampling is None:
      sampling = 'num_removed' if tokens else 'bernoulli'
    _checks.check_choice('sampling', sampling, GROUP_SAMPLINGS)
    plan = coalitions.plan(x.shape[0], n, 1, chunk)
    fit, pred, tt = _groups_core(
        box, x, base, t, groups, key, jnp.float32(kernel_width),
        jnp.float32(distance_scale), space=space, num_samples=n,
        sampling=sampling, alpha=float(alpha), num_features=num_features,
        d=d, plan=plan, info=bool(return_info))
    coef = coalitions.to_input_shape(fit.coef, box, groups)
  _common.check_finite_result(coef, 'lime', 'x or its perturbed copies')
  if not return_info:
    return coef
  return coef, LimeInfo(fit.intercept, fit.local_pred, fit.score, pred, tt)


__all__ = [
    'LimeInfo', 'RidgeFit', 'fit_weighted_ridge', 'lime', 'lime_group_samples',
    'lime_kernel', 'lime_tabular_samples',
]
