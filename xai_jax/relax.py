"""Relaxed top-k samplers: differentiable k-subset selection masks.

Learned explainers (L2X, LTX, ...) pick `k` of `d` features per example and
need gradients through that choice. Every sampler here has one call shape:

    mask = fn(key, logits, k, tau, **options)

* `key`: one `jax.random` key (typed `jax.random.key`, raw `PRNGKey`) or an
  int seed (`_checks.as_key`); every row of `logits` gets its own
  independent noise drawn from it.
* `logits`: float `[..., d]`, any number of leading batch dimensions.
* `k`: a static Python int, `1 <= k <= d`.
* `tau`: temperature (> 0); may be a traced scalar.
* `mask`: `[..., d]`, same shape and dtype as `logits`.

| name               | function                | sum of a row | values      |
|--------------------|-------------------------|--------------|-------------|
| 'concrete'         | `concrete_topk`         | <= k         | [0, 1]      |
| 'subset'           | `subset_topk`           | == k         | >= 0 (*)    |
| 'perturbed'        | `perturbed_topk`        | == k         | [0, 1]      |
| 'straight_through' | `straight_through_topk` | == k         | {0, 1}      |
| 'hard'             | `hard_topk`             | == k         | {0, 1}      |

(*) Xie & Ermon's successive softmax can put more than 1 on a feature when
several Gumbel keys lie within a few `tau` of each other (d = k = 2 with
keys (0, 0.01) at `tau = 0.1` gives `[1.19, 0.81]`, not `[1, 1]`); it tends
to an exact k-hot as `tau -> 0`. Use `straight_through_topk` for an exact
k-hot forward pass with the same gradient.

All arguments are checked on the host before tracing (`ValueError` naming the
argument): in particular concrete logits must be finite (NaN or +-inf would
give NaN masks; mask a feature out with a large finite negative logit).
Inside a user's `jax.jit` the logits are tracers and these value checks are
skipped (only shapes and dtypes are checked).
Computations run in at least float32 and the mask is cast back to the dtype
of `logits`.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Literal

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from xai_jax import _checks

Array = jax.Array
Sampler = Callable[..., Array]

NOISES = ('normal', 'gumbel')


# ----------------------------------------------------------------------------
# Argument checks.


def _check_logits(logits: Any) -> Array:
  """Floating `[..., d]` array of finite values (no NaN, no +-inf).

  Non-finite logits would give NaN masks (softmax of inf - inf), so they are
  a `ValueError` naming `logits`; the value check is skipped for tracers
  (inside a user's `jax.jit`), where only shape and dtype are checked. Mask
  a feature out with a large finite negative logit (e.g. `nets.PAD_LOGIT`).
  """
  if not hasattr(logits, 'shape') or not hasattr(logits, 'dtype'):
    if isinstance(logits, (list, tuple, float, int, np.number)):
      logits = np.asarray(logits)
  _checks.check_array('logits', logits, min_ndim=1, floating=True,
                      finite=True)
  if logits.shape[-1] == 0:
    raise ValueError(
        f'logits must have at least one feature, got shape {logits.shape}.')
  return jnp.asarray(logits)


def _check_tau(tau: Any) -> None:
  if tau is None:
    raise ValueError('tau must be a positive finite number, got None.')
  if not _checks.is_tracer(tau) and not isinstance(tau, (int, float)):
    if not hasattr(tau, 'dtype') or not (
        jnp.issubdtype(tau.dtype, jnp.floating)
        or jnp.issubdtype(tau.dtype, jnp.integer)):
      raise ValueError(f'tau must be a positive finite number, got {tau!r}.')
  _checks.check_positive('tau', tau)


def _check_common(key: Any, logits: Any, k: Any, tau: Any
                  ) -> tuple[Array, Array, int]:
  key = _checks.as_key('key', key)
  logits = _check_logits(logits)
  k = _checks.check_k('k', k, logits.shape[-1])
  _check_tau(tau)
  return key, logits, k


def _compute_dtype(dtype: Any) -> Any:
  """At least float32 (so bf16/f16 logits / tau do not overflow)."""
  return jnp.promote_types(dtype, jnp.float32)


# ----------------------------------------------------------------------------
# Building blocks (no checks; shapes [..., d]).


def _gumbel(key: Array, shape: tuple[int, ...], dtype: Any) -> Array:
  """Standard Gumbel noise g = -log(-log u), u ~ U(tiny, 1) (L2X's sampler)."""
  tiny = jnp.finfo(dtype).tiny
  u = jax.random.uniform(key, shape, dtype, minval=tiny, maxval=1.0)
  return -jnp.log(-jnp.log(u))


def _noise(key: Array, shape: tuple[int, ...], dtype: Any,
           kind: str = 'gumbel') -> Array:
  """Noise of `shape` from one key: 'gumbel' (`_gumbel`) or 'normal'.

  Jitted on its own (static shape and dtype), so that in eager use the
  random-bit program is compiled once per noise shape and shared by the
  samplers and by every `k` that draws the same shape; under a user's jit it
  is inlined.
  """
  return _noise_jit(key, tuple(int(n) for n in shape), jnp.dtype(dtype), kind)


@functools.partial(jax.jit, static_argnames=('shape', 'dtype', 'kind'))
def _noise_jit(key: Array, shape: tuple[int, ...], dtype: Any,
               kind: str) -> Array:
  if kind == 'normal':
    return jax.random.normal(key, shape, dtype)
  return _gumbel(key, shape, dtype)


def _khot(x: Array, k: int, dtype: Any) -> Array:
  """Exact k-hot of the k largest entries of `x` along the last axis.

  `lax.top_k` breaks ties by index (the lower index wins), so every row has
  exactly k ones. One scatter per row: O(k) memory beyond the output.
  """
  lead, d = x.shape[:-1], x.shape[-1]
  _, idx = lax.top_k(lax.stop_gradient(x), k)
  idx = idx.reshape(-1, k)
  n = idx.shape[0]
  out = jnp.zeros((n, d), dtype).at[jnp.arange(n)[:, None], idx].set(1)
  return out.reshape(*lead, d)


def _log1m_softmax(s: Array, axis: int = -1) -> Array:
  """log(1 - softmax(s)) along `axis`, accurate where softmax ~ 1.

  Where p_i <= 1/2, log1p(-p_i) is accurate. At most one entry has
  p_i > 1/2 and there 1 - p_i = sum_{j != i} p_j, i.e.
  log(1 - p_i) = logsumexp_{j != i}(s_j) - logsumexp(s): no cancellation and
  no clamping, so the value stays finite and exact for any logit gap (a clamp
  at `tiny` would let a feature with a large logit gap be picked twice).
  """
  lse = jax.nn.logsumexp(s, axis=axis, keepdims=True)
  p = jnp.exp(s - lse)
  big = p > 0.5
  lse_rest = jax.nn.logsumexp(
      jnp.where(big, -jnp.inf, s), axis=axis, keepdims=True)
  small = jnp.log1p(-jnp.where(big, 0.5, p))  # safe branch: no inf grads
  return jnp.where(big, lse_rest - lse, small)


# The successive softmax is unrolled up to this many steps (a lax.scan
# beyond); unrolled, XLA fuses the steps (~15% faster forward + backward).
_UNROLL_MAX = 16


def _successive_softmax(keys: Array, k: int, tau: Array) -> Array:
  """Xie & Ermon (2019) continuous top-k of `keys` (already perturbed).

  alpha^1 = keys; a^j = softmax(alpha^j / tau);
  alpha^{j+1} = alpha^j + log(1 - a^j); mask = sum_{j=1..k} a^j.
  Run in scaled units s = alpha / tau: s^{j+1} = s^j + log(1 - a^j) / tau.
  Computed feature-major (see `_feature_major`).
  """
  s = _feature_major(keys) / tau                       # [d, ...]
  a = jax.nn.softmax(s, axis=0)

  def step(carry, _):
    s, a, total = carry
    s = s + _log1m_softmax(s, axis=0) / tau
    a = jax.nn.softmax(s, axis=0)
    return (s, a, total + a), None

  if k > 1:
    (_, _, total), _ = lax.scan(step, (s, a, a), None, length=k - 1,
                                unroll=min(k - 1, _UNROLL_MAX))
  else:
    total = a
  return _feature_minor(total)


def _feature_major(x: Array, num_axes: int = 1) -> Array:
  """Moves the last `num_axes` axes to the front: `[..., d] -> [d, ...]`.

  The samplers reduce over d (softmax, max over draws). With d small (10
  features, 16-49 patches) and the batch large, XLA:CPU vectorises a
  reduction along the minor axis poorly; in the feature-major layout the
  reductions run across rows and every element-wise op is contiguous along
  the batch: about 2x faster forward + backward at d = 10 on CPU, the same
  values.
  """
  n = x.ndim
  return jnp.transpose(x, tuple(range(n - num_axes, n))
                       + tuple(range(n - num_axes)))


def _feature_minor(x: Array) -> Array:
  """Inverse of `_feature_major` with one axis: `[d, ...] -> [..., d]`."""
  return jnp.moveaxis(x, 0, -1)


# ----------------------------------------------------------------------------
# Jitted cores (k and options static; tau traced so it never recompiles).
# Each takes the noise drawn by `_noise` from the caller's key in this call.


@jax.jit
def _concrete_core(g: Array, logits: Array, tau: Array) -> Array:
  """g: Gumbel noise [..., k, d], one row of noise per draw."""
  cdtype = g.dtype
  theta = _feature_major(logits.astype(cdtype))            # [d, ...]
  z = (theta[None] + _feature_major(g, 2)) / tau.astype(cdtype)  # [k, d, ...]
  c = jax.nn.softmax(z, axis=1)
  return _feature_minor(jnp.max(c, axis=0)).astype(logits.dtype)


@functools.partial(jax.jit, static_argnames=('k',))
def _subset_core(g: Array, logits: Array, k: int, tau: Array) -> Array:
  """g: Gumbel noise [..., d]."""
  cdtype = g.dtype
  keys = logits.astype(cdtype) + g
  return _successive_softmax(keys, k, tau.astype(cdtype)).astype(logits.dtype)


@functools.partial(jax.jit, static_argnames=('k',))
def _straight_through_core(g: Array, logits: Array, k: int,
                           tau: Array) -> Array:
  """g: Gumbel noise [..., d] (the same draw as `subset_topk`'s)."""
  cdtype = g.dtype
  keys = logits.astype(cdtype) + g
  soft = _successive_softmax(keys, k, tau.astype(cdtype))
  hard = _khot(keys, k, cdtype)
  # hard + (soft - soft) is exactly `hard` in the forward pass.
  return (hard + (soft - lax.stop_gradient(soft))).astype(logits.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _perturbed_mean(theta: Array, sigma: Array, z: Array, k: int,
                    noise: str) -> Array:
  """(1/M) sum_m y*(theta + sigma Z_m); theta [..., d], z [..., M, d]."""
  y = _khot(theta[..., None, :] + sigma * z, k, theta.dtype)
  return jnp.mean(y, axis=-2)


def _perturbed_fwd(theta, sigma, z, k, noise):
  y = _khot(theta[..., None, :] + sigma * z, k, theta.dtype)
  return jnp.mean(y, axis=-2), (y.astype(jnp.bool_), sigma, z)


def _perturbed_bwd(k, noise, res, g):
  del k
  y, sigma, z = res
  num_samples = z.shape[-2]
  grad_nu = z if noise == 'normal' else -jnp.expm1(-z)  # 1 - exp(-z)
  # <dL/dy, y*(theta + sigma Z_m)> for every sample m: [..., M].
  inner = jnp.einsum('...md,...d->...m', y.astype(g.dtype), g)
  grad_theta = jnp.einsum('...m,...md->...d', inner, grad_nu) / (
      num_samples * sigma)
  return grad_theta, jnp.zeros_like(sigma), jnp.zeros_like(z)


_perturbed_mean.defvjp(_perturbed_fwd, _perturbed_bwd)


@functools.partial(jax.jit, static_argnames=('k', 'noise'))
def _perturbed_core(z: Array, logits: Array, k: int, tau: Array,
                    noise: str) -> Array:
  """z: noise [..., M, d] of kind `noise`."""
  cdtype = z.dtype
  theta = logits.astype(cdtype)
  out = _perturbed_mean(theta, tau.astype(cdtype), z, k, noise)
  return out.astype(logits.dtype)


@functools.partial(jax.jit, static_argnames=('k',))
def _hard_core(logits: Array, k: int) -> Array:
  return _khot(logits, k, logits.dtype)


# ----------------------------------------------------------------------------
# Public samplers.


def concrete_topk(key: Array, logits: Array, k: int, tau: float | Array
                  ) -> Array:
  """Concrete (Gumbel-softmax) top-k of L2X: k draws with replacement, max.

  Chen, Song, Wainwright & Jordan, "Learning to Explain", ICML 2018, §3
  (the `Sample_Concrete` layer of the reference code). For each row
  `theta = logits[..., :]` and each of k independent draws j,

      u_j ~ U(tiny, 1)^d,  g_j = -log(-log u_j),
      c_j = softmax((theta + g_j) / tau)          (Concrete, Maddison et al.
                                                   2017; Jang et al. 2017)
      V_i = max_j c_{j,i}.

  All k draws are one `[..., k, d]` softmax. Because the draws are with
  replacement a feature can win several of them: `V in [0, 1]^d` and
  `sum_i V_i <= k` (not `== k`). As `tau -> 0`, V is the union of the k
  arg-maxes of `theta + g_j`. Stable for large logits and small `tau`
  (max-shifted softmax; logits ~ 1e3 with tau = 0.01 give finite values and
  gradients).

  Args:
    key: one PRNG key or int seed; every row gets independent noise.
    logits: finite float `[..., d]` (unnormalised; softmax is shift
      invariant).
    k: number of draws (a static Python int, `1 <= k <= d`).
    tau: temperature > 0 (L2X uses 0.1 on synthetic data, 0.5 on IMDB).

  Returns:
    The relaxed mask `V`, `[..., d]`, dtype of `logits`.
  """
  key, logits, k = _check_common(key, logits, k, tau)
  g = _noise(key, logits.shape[:-1] + (k, logits.shape[-1]),
             _compute_dtype(logits.dtype))
  return _concrete_core(g, logits, jnp.asarray(tau))


def subset_topk(key: Array, logits: Array, k: int, tau: float | Array
                ) -> Array:
  """Relaxed k-subset sample of Xie & Ermon (successive softmax).

  Xie & Ermon, "Reparameterizable Subset Sampling via Continuous
  Relaxations", IJCAI 2019, §3 (`continuous_topk` in `ermongroup/subsets`).
  With one Gumbel per feature the keys `r = theta + g` have an exact
  k-subset sample without replacement as their top-k (Gumbel-top-k); the
  top-k is relaxed by k successive softmaxes:

      alpha^1 = r,
      a^j = softmax(alpha^j / tau),
      alpha^{j+1} = alpha^j + log(1 - a^j),     j = 1..k,
      mask = sum_j a^j.

  `sum_i mask_i == k` exactly (each `a^j` sums to 1) and `mask >= 0`. As
  `tau -> 0` the mask tends to the hard top-k of `r`. log(1 - a^j) is
  evaluated in log space (no `max(1 - a, tiny)` clamp), so the update stays
  exact for any logit gap and small `tau`.

  Caveat (a property of the relaxation, not of this code): entries can exceed
  1 when keys lie within a few `tau` of each other: d = k = 2 with keys
  (0, 0.01) at tau = 0.1 gives `[1.19, 0.81]` instead of `[1, 1]`. Use
  `straight_through_topk` for an exact k-hot forward pass with this gradient.
  At small `tau` and large `k` the (exact) gradient of this relaxation can be
  very large (each of the k steps scales sensitivities by up to ~1/tau).

  Args:
    key: one PRNG key or int seed; every row gets independent noise.
    logits: finite float `[..., d]`, the log-weights `log w`.
    k: subset size (a static Python int, `1 <= k <= d`).
    tau: temperature t > 0 (the paper's default 0.1).

  Returns:
    The relaxed k-hot mask, `[..., d]`, dtype of `logits`.
  """
  key, logits, k = _check_common(key, logits, k, tau)
  g = _noise(key, logits.shape, _compute_dtype(logits.dtype))
  return _subset_core(g, logits, k, jnp.asarray(tau))


def perturbed_topk(key: Array, logits: Array, k: int, tau: float | Array, *,
                   num_samples: int = 1000,
                   noise: Literal['normal', 'gumbel'] = 'normal') -> Array:
  """Perturbed (Monte Carlo smoothed) top-k of Berthet et al.

  Berthet, Blondel, Teboul, Cuturi, Vert & Bach, "Learning with
  Differentiable Perturbed Optimizers", NeurIPS 2020, §3 (Prop. 3.1).
  With `y*(theta) = argmax_{y in C} <y, theta>` the k-hot of the top-k
  (C = {y in [0,1]^d : sum y = k}) and `tau` in the role of sigma:

      y_sigma(theta) = E_Z[y*(theta + sigma Z)]
                    ~= (1/M) sum_m y*(theta + sigma Z_m),
      J_theta y_sigma = (1/sigma) E[y*(theta + sigma Z) grad nu(Z)^T].

  The backward pass is a `jax.custom_vjp` with the Monte Carlo estimate

      dL/dtheta = (1/(M sigma)) sum_m <dL/dy, y*(theta + sigma Z_m)>
                                      * grad nu(Z_m)

  on the same samples as the forward pass, where the noise density is
  ∝ exp(-nu): Normal `grad nu(z) = z`, Gumbel `grad nu(z) = 1 - exp(-z)`.
  Values lie in [0, 1] and every row sums to k. No gradient flows to `tau`
  (its cotangent is zero); forward-mode (jvp) is not supported.

  Args:
    key: one PRNG key or int seed; every row gets its own M noise
      samples.
    logits: finite float `[..., d]`, the scores theta.
    k: number of selected features (a static Python int, `1 <= k <= d`).
    tau: noise scale sigma > 0.
    num_samples: M, Monte Carlo samples per row (static; default 1000 as in
      `jaxopt.perturbations`). Memory: `[..., M, d]`.
    noise: 'normal' (as in Cordonnier et al. 2021's perturbed top-k) or
      'gumbel' (with sigma = 1 each sample is an exact Gumbel-top-k sample).

  Returns:
    The smoothed top-k indicator, `[..., d]`, dtype of `logits`.
  """
  key, logits, k = _check_common(key, logits, k, tau)
  if (isinstance(num_samples, bool)
      or not isinstance(num_samples, (int, np.integer)) or num_samples < 1):
    raise ValueError(
        f'num_samples must be a positive Python int, got {num_samples!r}.')
  _checks.check_choice('noise', noise, NOISES)
  z = _noise(key, logits.shape[:-1] + (int(num_samples), logits.shape[-1]),
             _compute_dtype(logits.dtype), noise)
  return _perturbed_core(z, logits, k, jnp.asarray(tau), noise=noise)


def straight_through_topk(key: Array, logits: Array, k: int,
                          tau: float | Array) -> Array:
  """Exact k-subset sample forward, subset-relaxation gradient backward.

  Forward: the hard top-k of the Gumbel keys `r = theta + g`, an exact
  sample of k features without replacement (Gumbel-top-k; Kool, van Hoof &
  Welling, ICML 2019; Xie & Ermon 2019, §3). Backward: the gradient of the
  successive softmax relaxation `subset_topk` on the same keys (straight-through
  estimator, Bengio et al. 2013; `SubsetOperator(hard=True)` in
  `ermongroup/subsets`, which however takes the top-k of the relaxed mask):

      mask = hard_topk(r) + soft(r) - stop_gradient(soft(r)).

  The forward value is exactly k-hot (sum == k, values in {0, 1}). For the
  same key the noise equals that of `subset_topk`.

  Args:
    key: one PRNG key or int seed; every row gets independent noise.
    logits: finite float `[..., d]`.
    k: subset size (a static Python int, `1 <= k <= d`).
    tau: temperature of the relaxation used for the gradient, > 0.

  Returns:
    The k-hot sample, `[..., d]`, dtype of `logits`.
  """
  key, logits, k = _check_common(key, logits, k, tau)
  g = _noise(key, logits.shape, _compute_dtype(logits.dtype))
  return _straight_through_core(g, logits, k, jnp.asarray(tau))


def hard_topk(key: Array | None, logits: Array, k: int,
              tau: float | Array | None = None) -> Array:
  """Deterministic k-hot of the k largest logits (L2X's explanation mask).

  L2X (Chen et al., ICML 2018) explains with the top-k of the selector's
  logits at test time. Unlike the reference code's threshold
  `1[theta >= k-th largest]`, which gives more than k ones on ties, this
  uses `lax.top_k` indices: ties are broken by index (lower index first) and
  every row has exactly k ones. No gradient flows (piecewise constant).

  Args:
    key: ignored (may be None); present for the uniform call shape.
    logits: finite float `[..., d]`.
    k: number of selected features (a static Python int, `1 <= k <= d`).
    tau: ignored (may be None).

  Returns:
    The k-hot mask, `[..., d]`, dtype of `logits`.
  """
  del key, tau
  logits = _check_logits(logits)
  k = _checks.check_k('k', k, logits.shape[-1])
  return _hard_core(logits, k)


SAMPLERS: dict[str, Sampler] = {
    'concrete': concrete_topk,
    'subset': subset_topk,
    'perturbed': perturbed_topk,
    'straight_through': straight_through_topk,
    'hard': hard_topk,
}


def get_sampler(name: str) -> Sampler:
  """Returns the sampler registered under `name` (a key of `SAMPLERS`).

  Raises:
    ValueError: naming the unknown `name` and listing the choices.
  """
  _checks.check_choice('sampler', name, SAMPLERS)
  return SAMPLERS[name]


__all__ = [
    'SAMPLERS',
    'concrete_topk',
    'get_sampler',
    'hard_topk',
    'perturbed_topk',
    'straight_through_topk',
    'subset_topk',
]
