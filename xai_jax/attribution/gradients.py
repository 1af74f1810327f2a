"""Gradient attributions: saliency, gradient x input, Integrated Gradients,
SmoothGrad and Grad-CAM.

One call shape for all (Captum / PAIR-saliency style)::

    method(model, x, *, target=None, baseline=..., key=..., **options)
        -> attributions [batch, *input_shape]

* `model`: a `BlackBox` (or a plain JAX callable, wrapped with `from_jax`).
  Boxes from `from_numpy` have no gradients: every method here raises
  `blackbox.NotDifferentiableError` before tracing (use `occlusion`, `rise`,
  LIME or SHAP instead).
* `target`: None (the predicted class), one int, or ints `[batch]`.
* The explained scalar `F(x)` is the box's output for the target class in
  `space='raw'` (the box's own logit / probability), or in 'probs' /
  'log_probs'.

Each method checks its arguments on concrete values, then calls a jitted core
(compiled once per shape and static option) written for one example and
`vmap`ped over the batch; path / noise samples are evaluated in chunks of at
most `chunk_size` model rows per call. The methods themselves also trace
cleanly under a user's `jax.jit` / `jax.vmap`. To use several devices, shard
`x` over its batch dimension (e.g. `NamedSharding(Mesh(devices, ('data',)),
P('data'))`); XLA partitions the vmapped core.

Channel reduction (max |.| over colour channels, as in Simonyan et al. 2014
Fig. 2) is left to visualisation.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from xai_jax import _checks
from xai_jax import blackbox as bb
from xai_jax.attribution import _common

Array = jax.Array

IG_RULES = ('riemann_trapezoid', 'riemann_left', 'riemann_right',
            'riemann_middle', 'gauss_legendre')


def _check_gradient_box(model: bb.BlackBox | Callable, x: Any, method: str
                        ) -> tuple[bb.BlackBox, Array]:
  """prepare(); gradients available; float inputs (checked before tracing)."""
  if isinstance(model, bb.BlackBox):
    bb.require_differentiable(model, method)
  box, x = _common.prepare(model, x)
  bb.require_differentiable(box, method)
  if box.input_dtype != 'float':
    raise ValueError(
        f'{method} needs float inputs, but black box {box.name!r} takes integer '
        'token ids (no gradient w.r.t. ids). Use occlusion/rise/lime/shap with '
        'token groups, or split the box after its embedding.')
  return box, x


# ----------------------------------------------------------------- saliency
@functools.partial(jax.jit, static_argnames=('space',))
def _saliency_core(box, x, target, absolute, *, space):
  t = _common.resolve_targets(box, x, target)
  v, g = jax.vmap(jax.value_and_grad(_common.example_score(box, space)))(x, t)
  return jnp.where(absolute, jnp.abs(g), g), v


def saliency(model: bb.BlackBox | Callable, x: Array, *,
             target: Array | int | None = None, absolute: bool = True,
             space: str = 'raw', **unknown: Any) -> Array:
  """Vanilla gradient saliency (Simonyan, Vedaldi & Zisserman 2014, §3.1).

  `M(x) = |w|` with `w = dF_c / dx |_{x}`, the weight of the first-order Taylor
  expansion `F_c(x') ~ w^T x' + b` around `x` (the paper then takes the max of
  `|w|` over colour channels, which is left to visualisation).

  Args:
    model: black box (differentiable).
    x: `[batch, *input_shape]`.
    target: None (predicted class), an int, or int `[batch]`.
    absolute: return `|grad|` (the paper's map); False for the signed gradient.
    space: explained output: 'raw', 'probs' or 'log_probs'.
    **unknown: none; another library's name (nsamples, n_steps,
      baselines, ...) raises a ValueError naming ours.
  Returns:
    `[batch, *input_shape]`.
  """
  _common.check_options('saliency', unknown, allowed=())
  box, x = _check_gradient_box(model, x, 'saliency')
  t = _common.check_target(box, target, x.shape[0])
  _common.check_space(box, space)
  g, v = _saliency_core(box, x, t, jnp.asarray(bool(absolute)), space=space)
  _common.check_finite_result(v, 'saliency', 'x')
  return _common.check_finite_result(g, 'saliency', 'x (gradients)')


# ------------------------------------------------------------ grad x input
@functools.partial(jax.jit, static_argnames=('space',))
def _grad_x_input_core(box, x, target, *, space):
  t = _common.resolve_targets(box, x, target)
  v, g = jax.vmap(jax.value_and_grad(_common.example_score(box, space)))(x, t)
  return g * x, v


def grad_x_input(model: bb.BlackBox | Callable, x: Array, *,
                 target: Array | int | None = None, space: str = 'raw',
                 **unknown: Any) -> Array:
  """Gradient * Input (Shrikumar et al. 2016; Ancona et al. 2018, §2.1).

  `R_i(x) = x_i * dF_c(x) / dx_i`. Exact for a linear model without bias
  (then `sum_i R_i = F(x) - F(0)`).

  Args:
    model: black box (differentiable).
    x: `[batch, *input_shape]`.
    target: None (predicted class), an int, or int `[batch]`.
    space: explained output: 'raw', 'probs' or 'log_probs'.
    **unknown: none; another library's name (nsamples, n_steps,
      baselines, ...) raises a ValueError naming ours.
  Returns:
    `[batch, *input_shape]`.
  """
  _common.check_options('grad_x_input', unknown, allowed=())
  box, x = _check_gradient_box(model, x, 'grad_x_input')
  t = _common.check_target(box, target, x.shape[0])
  _common.check_space(box, space)
  g, v = _grad_x_input_core(box, x, t, space=space)
  _common.check_finite_result(v, 'grad_x_input', 'x')
  return _common.check_finite_result(g, 'grad_x_input', 'x (gradients)')


# ------------------------------------------------------- integrated gradients
def ig_quadrature(rule: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
  """Nodes `alpha_k` in [0, 1] and weights `w_k` (sum 1) for the IG path integral.

  `int_0^1 g(alpha) d alpha ~= sum_k w_k g(alpha_k)` (Sundararajan et al. 2017,
  Eq. 3 is 'riemann_right': `alpha_k = k / m`, `w_k = 1 / m`).

  Args:
    rule: 'riemann_trapezoid', 'riemann_left', 'riemann_right',
      'riemann_middle' or 'gauss_legendre'.
    steps: number of nodes m (>= 2 for the trapezoid rule).
  Returns:
    `(alphas[m], weights[m])` as float64 numpy arrays.
  """
  if rule not in IG_RULES:
    raise ValueError(f'Unknown rule {rule!r}; expected one of {sorted(IG_RULES)}.')
  steps = _checks.check_int('steps', steps, 2 if rule == 'riemann_trapezoid'
                            else 1)
  m = steps
  if rule == 'riemann_left':
    a = np.arange(m) / m
    w = np.full(m, 1.0 / m)
  elif rule == 'riemann_right':
    a = np.arange(1, m + 1) / m
    w = np.full(m, 1.0 / m)
  elif rule == 'riemann_middle':
    a = (np.arange(m) + 0.5) / m
    w = np.full(m, 1.0 / m)
  elif rule == 'riemann_trapezoid':
    a = np.linspace(0.0, 1.0, m)
    w = np.full(m, 1.0 / (m - 1))
    w[0] = w[-1] = 0.5 / (m - 1)
  else:
    nodes, wts = np.polynomial.legendre.leggauss(m)
    a = (nodes + 1.0) / 2.0
    w = wts / 2.0
  return a, w


@functools.partial(jax.jit, static_argnames=('space', 'chunk'))
def _ig_core(box, x, baseline, target, aw, *, space, chunk):
  # aw: [steps, 2] quadrature nodes and weights (traced: rules share a compile).
  t = _common.resolve_targets(box, x, target)
  f = _common.example_score(box, space)
  grad_fn = jax.value_and_grad(f)

  def one(xi, bi, ti):
    def item(a_w):
      v, g = grad_fn(bi + a_w[0] * (xi - bi), ti)
      return a_w[1] * g, jnp.abs(v)
    g, v = bb.sum_in_chunks(item, aw, chunk)
    return (xi - bi) * g, v + jnp.abs(f(xi, ti))

  return jax.vmap(one)(x, baseline, t)


def integrated_gradients(model: bb.BlackBox | Callable, x: Array, *,
                         target: Array | int | None = None,
                         baseline: Any = 'zero', steps: int = 50,
                         rule: str = 'riemann_trapezoid',
                         space: str = 'raw', key: Array | int | None = None,
                         chunk_size: int = _common.DEFAULT_CHUNK_SIZE,
                         data: Array | None = None,
                         **baseline_options: Any) -> Array:
  """Integrated Gradients (Sundararajan, Taly & Yan 2017, Eq. 1-3).

  `IG_i(x) = (x_i - x'_i) * int_0^1 dF(x' + a (x - x')) / dx_i da` (Eq. 1),
  approximated by `(x_i - x'_i) * sum_k w_k dF(x' + a_k (x - x'))/dx_i`
  (Eq. 3 with the quadrature `rule`). Completeness (Prop. 1):
  `sum_i IG_i(x) = F(x) - F(x')`; report `ig_completeness_error`.

  All `steps` path points of an example are differentiated in one vmapped,
  batched model call per chunk (`chunk_size` bounds the rows per call).

  Args:
    model: black box (differentiable).
    x: `[batch, *input_shape]`.
    target: None (predicted class at x), an int, or int `[batch]`.
    baseline: x' -- a `masking.make_baseline` kind ('zero', 'mean' (the
      mean of `data`), 'blur', 'noise', 'reference'), a scalar, or
      `[*input_shape]` / `[batch, *input_shape]`.
    steps: number of path points m (paper: 20 to 300).
    rule: 'riemann_trapezoid', 'riemann_left', 'riemann_right' (the paper's
      Eq. 3), 'riemann_middle' or 'gauss_legendre'.
    space: explained output: 'raw', 'probs' or 'log_probs'.
    key: PRNG key or int seed, only for `baseline='noise'`.
    chunk_size: bound on model rows per call.
    data: `[m, *input_shape]` data set for `baseline='mean'`.
    **baseline_options: for `make_baseline` (reference, blur_sigma,
      noise_std). Captum's names (`n_steps`, `baselines`) raise a ValueError
      naming ours.
  Returns:
    `[batch, *input_shape]`.
  Raises:
    ValueError: bad arguments (named), a model returning NaN or inf on x,
      the baseline or the path.
  """
  _common.check_options('integrated_gradients', baseline_options)
  box, x = _check_gradient_box(model, x, 'integrated_gradients')
  t = _common.check_target(box, target, x.shape[0])
  _common.check_space(box, space)
  alphas, weights = ig_quadrature(rule, steps)  # also checks rule and steps
  aw = jnp.asarray(np.stack([alphas, weights], axis=-1), x.dtype)
  chunk_size = _checks.check_chunk_size(chunk_size)
  b = _common.resolve_baseline(baseline, x, key=key, data=data,
                               **baseline_options)
  chunk = _common.per_example_chunk(chunk_size, x.shape[0], steps)
  ig, v = _ig_core(box, x, b, t, aw, space=space, chunk=chunk)
  _common.check_finite_result(v, 'integrated_gradients',
                              'x or its integration path')
  return _common.check_finite_result(ig, 'integrated_gradients',
                                     'the integration path (gradients)')


@functools.partial(jax.jit, static_argnames=('space',))
def _completeness_core(box, x, baseline, attributions, target, *, space):
  t = _common.resolve_targets(box, x, target)
  f = _common.score_fn(box, space)
  delta = f(x, t) - f(baseline, t)
  total = jnp.sum(attributions.reshape(x.shape[0], -1), axis=-1)
  return jnp.abs(total - delta)


def ig_completeness_error(model: bb.BlackBox | Callable, x: Array,
                          attributions: Array, baseline: Any = 'zero',
                          target: Array | int | None = None, *,
                          space: str = 'raw', key: Array | int | None = None,
                          data: Array | None = None,
                          **baseline_options: Any) -> Array:
  """Completeness gap of IG (Sundararajan et al. 2017, Prop. 1), per example.

  `|sum_i attr_i - (F(x) - F(x'))|`; zero for exact IG, so it measures the
  quadrature error (the paper suggests steps until it is within 5%).

  Args:
    model: the explained black box.
    x: `[batch, *input_shape]`.
    attributions: `[batch, *input_shape]` from `integrated_gradients`.
    baseline: the same baseline x' as used for the attributions.
    target: the same target (None = predicted class at x).
    space: the same explained output space.
    key: PRNG key or int seed, only for `baseline='noise'` (use the same
      key).
    data: the same data set for `baseline='mean'`.
    **baseline_options: for `make_baseline` (reference, blur_sigma,
      noise_std).
  Returns:
    `[batch]`, non-negative.
  """
  _common.check_options('ig_completeness_error', baseline_options)
  box, x = _common.prepare(model, x)
  if not hasattr(attributions, 'shape') or tuple(attributions.shape) != tuple(
      x.shape):
    raise ValueError(f'attributions must have the shape of x {tuple(x.shape)},'
                     f' got {getattr(attributions, "shape", None)}.')
  t = _common.check_target(box, target, x.shape[0])
  _common.check_space(box, space)
  b = _common.resolve_baseline(baseline, x, key=key, data=data,
                               **baseline_options)
  return _completeness_core(box, x, b, jnp.asarray(attributions, x.dtype), t,
                            space=space)


# ---------------------------------------------------------------- smoothgrad
@functools.partial(jax.jit, static_argnames=('space', 'num_samples', 'chunk'))
def _smoothgrad_core(box, x, target, key, noise_level, mode, *, space,
                     num_samples, chunk):
  # mode (traced int, so that the variants share a compile): 0 = gradient,
  # 1 = squared gradient, 2 = absolute gradient.
  t = _common.resolve_targets(box, x, target)
  f = _common.example_score(box, space)
  grad_fn = jax.value_and_grad(f)
  idx = jnp.arange(num_samples)

  def one(xi, ti):
    sigma = noise_level * (jnp.max(xi) - jnp.min(xi))

    def item(i):
      eps = jax.random.normal(jax.random.fold_in(key, i), xi.shape, xi.dtype)
      v, g = grad_fn(xi + sigma * eps, ti)
      return (jnp.where(mode == 1, g * g, jnp.where(mode == 2, jnp.abs(g), g)),
              jnp.abs(v))

    g, v = bb.sum_in_chunks(item, idx, chunk)
    return g / num_samples, v + jnp.abs(f(xi, ti))

  return jax.vmap(one)(x, t)


def smoothgrad(model: bb.BlackBox | Callable, x: Array, *,
               target: Array | int | None = None,
               key: Array | int | None = None,
               num_samples: int = 50, noise_level: float = 0.15,
               square: bool = False, absolute: bool = False,
               space: str = 'raw',
               chunk_size: int = _common.DEFAULT_CHUNK_SIZE,
               **unknown: Any) -> Array:
  """SmoothGrad (Smilkov et al. 2017, §3).

  `M^_c(x) = 1/n sum_{i=1..n} M_c(x + N(0, sigma^2))` with `M_c` the gradient
  of `F_c`, and `sigma = noise_level * (max(x) - min(x))` per example (the
  paper's noise level, 10-20% works best). `square=True` averages squared
  gradients (SmoothGrad-Squared, Hooker et al. 2019); `absolute=True` averages
  `|grad|`.

  The noise draws `eps_i ~ N(0, I)` come from `fold_in(key, i)` and are shared by
  all examples of the batch (each scaled by its own sigma): an example's
  attribution does not depend on the rest of the batch or its order, and is
  independent of `chunk_size` (up to float summation order).

  Args:
    model: black box (differentiable).
    x: `[batch, *input_shape]`.
    target: None (predicted class at x), an int, or int `[batch]`.
    key: PRNG key or int seed (required). Same key, same output.
    num_samples: number of noisy samples n (paper: 50).
    noise_level: sigma / (max(x) - min(x)), >= 0.
    square: average squared gradients.
    absolute: average absolute gradients.
    space: explained output: 'raw', 'probs' or 'log_probs'.
    chunk_size: bound on model rows per call.
    **unknown: none; another library's name (nsamples, n_steps,
      baselines, ...) raises a ValueError naming ours.
  Returns:
    `[batch, *input_shape]`.
  """
  _common.check_options('smoothgrad', unknown, allowed=())
  box, x = _check_gradient_box(model, x, 'smoothgrad')
  key = _checks.as_key('key', key, method='smoothgrad')
  t = _common.check_target(box, target, x.shape[0])
  _common.check_space(box, space)
  num_samples = _checks.check_int('num_samples', num_samples, 1)
  chunk_size = _checks.check_chunk_size(chunk_size)
  if not _checks.is_tracer(noise_level):
    nl = np.asarray(noise_level)
    if nl.size != 1 or not np.isfinite(nl) or float(nl) < 0:
      raise ValueError(f'noise_level must be a finite number >= 0, got '
                       f'{noise_level!r}.')
  if square and absolute:
    raise ValueError('Choose at most one of square=True and absolute=True.')
  mode = 1 if square else (2 if absolute else 0)
  chunk = _common.per_example_chunk(chunk_size, x.shape[0], num_samples)
  g, v = _smoothgrad_core(box, x, t, key, jnp.asarray(noise_level, x.dtype),
                          jnp.asarray(mode, jnp.int32), space=space,
                          num_samples=num_samples, chunk=chunk)
  _common.check_finite_result(v, 'smoothgrad', 'x or its noisy copies')
  return _common.check_finite_result(g, 'smoothgrad',
                                     'noisy copies of x (gradients)')


# ------------------------------------------------------------------- gradcam
@functools.partial(jax.jit, static_argnames=('space',))
def _gradcam_core(box, x, target, *, space):
  latent = box.head_fn(box.params, x)                        # [b, h, w, k]
  if target is None:
    target = jnp.argmax(box.tail_fn(box.params, latent), axis=-1).astype(
        jnp.int32)

  def latent_score(a, ti):
    out = box.tail_fn(box.params, a[None])
    if space != 'raw':
      out = bb.to_log_probs(out, box.output)
      if space == 'probs':
        out = jnp.exp(out)
    return out[0, ti]

  v, grads = jax.vmap(jax.value_and_grad(latent_score))(latent, target)
  alpha = jnp.mean(grads, axis=(1, 2))                        # Eq. 1: [b, k]
  cam = jax.nn.relu(jnp.einsum('bhwk,bk->bhw', latent, alpha))  # Eq. 2
  h, w = box.input_shape[:2]
  cam = jax.image.resize(cam, (x.shape[0], h, w), method='bilinear')
  return jnp.maximum(cam, 0.0), v


def gradcam(model: bb.BlackBox, x: Array, *,
            target: Array | int | None = None, space: str = 'raw',
            keep_channels: bool = True, **unknown: Any) -> Array:
  """Grad-CAM (Selvaraju et al. 2017, Eq. 1-2) at the split layer of a box.

  With `A = box.head(x)` the latent `[h, w, K]` at the split layer and
  `y^c = F_c(box.tail(A))`: channel weights `alpha_k = 1/(h w) sum_ij
  dy^c / dA^k_ij` (Eq. 1, global average pooling of the gradients), map
  `L = ReLU(sum_k alpha_k A^k)` (Eq. 2), upsampled bilinearly
  (`jax.image.resize`) to the input's `H x W`.

  The box must be split at a convolutional layer (`from_linen(...,
  split_at='conv2')`); the paper uses the last one. Note that `models.CNN`'s
  split points are the pre-activation conv outputs.

  Args:
    model: a split, differentiable `BlackBox` with images `[H, W, C]` (or
      `[H, W]`) and a latent `[h, w, K]`.
    x: `[batch, H, W, C]`.
    target: None (predicted class), an int, or int `[batch]`.
    space: explained output: 'raw' (the paper uses the pre-softmax score),
      'probs' or 'log_probs'.
    keep_channels: True -> `[batch, *input_shape]` (the map repeated over
      channels, the uniform attribution shape); False -> `[batch, H, W]`.
    **unknown: none; another library's name (nsamples, n_steps,
      baselines, ...) raises a ValueError naming ours.
  Returns:
    `[batch, H, W, C]` (or `[batch, H, W]`), non-negative.
  """
  _common.check_options('gradcam', unknown, allowed=())
  if not isinstance(model, bb.BlackBox) or not model.is_split:
    name = model.name if isinstance(model, bb.BlackBox) else type(model).__name__
    raise ValueError(
        f'gradcam needs a black box split at a convolutional layer, but model '
        f'{name!r} has no split; build it with '
        "blackbox.from_linen(module, variables, input_shape=..., "
        "split_at='conv2').")
  box, x = _check_gradient_box(model, x, 'gradcam')
  if len(box.input_shape) not in (2, 3):
    raise ValueError(f'gradcam needs image inputs [H, W, C]; black box '
                     f'{box.name!r} takes {box.input_shape}.')
  if box.latent_shape is None or len(box.latent_shape) != 3:
    raise ValueError(
        f'gradcam needs a spatial latent [h, w, K] at the split; black box '
        f'{box.name!r} has latent shape {box.latent_shape}. Split at a '
        'convolutional layer.')
  t = _common.check_target(box, target, x.shape[0])
  _common.check_space(box, space)
  cam, v = _gradcam_core(box, x, t, space=space)               # [b, H, W]
  _common.check_finite_result(v, 'gradcam', 'x')
  _common.check_finite_result(cam, 'gradcam', 'x (gradients)')
  if keep_channels and len(box.input_shape) == 3:
    cam = jnp.broadcast_to(cam[..., None], x.shape)
  return cam


__all__ = [
    'IG_RULES', 'grad_x_input', 'gradcam', 'ig_completeness_error',
    'ig_quadrature', 'integrated_gradients', 'saliency', 'smoothgrad',
]
