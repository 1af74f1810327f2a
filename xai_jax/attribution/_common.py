"""Helpers shared by every attribution method (gradients, perturbation, LIME, SHAP).

Every attribution method has one call shape (Captum / PAIR-saliency style)::

    method(model, x, *, target=None, baseline=..., key=..., **options)

and follows the same two stages:

1. **Checks, outside jit** (on concrete values, so a user sees a `ValueError`
   naming the argument): `prepare` (model -> `BlackBox`, `x` checked),
   `check_target`, `check_space`, `resolve_baseline`; keys, seeds and
   integer options through `xai_jax._checks` (`as_key`, `check_int`,
   `check_chunk_size`).
2. **A jitted core** (compiled once per shape and static options), written for
   ONE example and `jax.vmap`ped over the batch. Inside it: `resolve_targets`
   (None -> predicted class), `score_fn` / `example_score` (the explained
   scalar), and memory-bounded evaluation of many perturbed inputs with
   `blackbox.map_in_chunks` / `blackbox.sum_in_chunks` /
   `evaluate_in_chunks`.

Memory: a chunked helper evaluates `chunk` perturbations per model call. When the
per-example core is vmapped over a batch of `b` examples, a model call sees
`b * chunk` rows; `per_example_chunk(chunk_size, b, n)` picks `chunk` so that this
stays <= `chunk_size` (at least one row per example). Map over cheap
*descriptors* (indices, masks, path positions) and build the perturbed input
inside `fn`, so that only one chunk of full inputs exists at a time.

Multi-device: the cores are plain vmaps over the batch, so placing `x` (and a
`[batch, ...]` baseline / target) on a `jax.sharding.NamedSharding` over a
`Mesh('data')` shards the work over devices; no hand-made pmap.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from xai_jax import _checks
from xai_jax import blackbox as bb
from xai_jax import masking

Array = jax.Array

#: Default bound on the number of model rows evaluated in one call.
DEFAULT_CHUNK_SIZE = 1024

SPACES = ('raw', 'probs', 'log_probs')


# -------------------------------------------------------------------- checks
def prepare(model: bb.BlackBox | Callable, x: Any, *, name: str = 'x',
            input_shape: Sequence[int] | None = None) -> tuple[bb.BlackBox,
                                                               Array]:
  """Normalises `(model, x)`: model -> `BlackBox`, `x` checked and as a jax array.

  Args:
    model: a `BlackBox`, or a plain JAX callable `[batch, *input_shape] ->
      [batch, num_outputs]` (wrapped with `blackbox.as_blackbox`; its input
      shape defaults to `x.shape[1:]`).
    x: `[batch, *input_shape]`, finite (NaN/inf rejected unless traced).
    name: the argument's name in error messages.
    input_shape: the example shape for a plain callable (default `x.shape[1:]`).
  Returns:
    `(box, x)` with `x` a `jax.Array`.
  Raises:
    ValueError: naming `name` for a wrong shape, dtype or non-finite values.
  """
  x = _checks.as_array(name, x)
  if not isinstance(model, bb.BlackBox):
    if input_shape is None:
      _checks.check_array(name, x, min_ndim=2)
      input_shape = tuple(x.shape[1:])
    model = bb.as_blackbox(model, input_shape=input_shape)
  return model, _checks.check_model_input(model, x, name)


def check_target(box: bb.BlackBox, target: Any, batch: int) -> Array | None:
  """Validates `target` before tracing; returns None or int32 `[batch]`.

  Args:
    box: the black box (its `num_outputs` bounds the class index).
    target: None (= the predicted class, resolved inside the core by
      `resolve_targets`), one int for all examples, or ints `[batch]`.
    batch: the batch size.
  Raises:
    ValueError: naming `target` for a non-integer dtype, a wrong shape or an
      index outside `[0, num_outputs)`.
  """
  if target is None:
    return None
  t = bb.resolve_target(None, target, batch)
  if not _checks.is_tracer(t):
    tn = np.asarray(t)
    if tn.size and (tn.min() < 0 or tn.max() >= box.num_outputs):
      raise ValueError(f'target must be in [0, {box.num_outputs}) for black '
                       f'box {box.name!r}, got values in [{tn.min()}, '
                       f'{tn.max()}].')
  return t


def check_space(box: bb.BlackBox, space: str) -> str:
  """Checks the explained output space: 'raw', 'probs' or 'log_probs'.

  'raw' explains the box's own output (logit, probability, ...); 'probs' and
  'log_probs' convert classifier outputs first (not possible for regression).
  """
  _checks.check_choice('space', space, SPACES)
  if space != 'raw' and box.output == 'regression':
    raise ValueError(f"space={space!r} needs a classifier; black box "
                     f"{box.name!r} has output='regression'. Use space='raw'.")
  return space


def resolve_baseline(baseline: Any, x: Array, *,
                     key: Array | int | None = None, name: str = 'baseline',
                     **make_baseline_kwargs: Any) -> Array:
  """The reference input for every example: `[batch, *input_shape]`.

  Args:
    baseline: a kind for `masking.make_baseline` ('zero', 'mean', 'blur',
      'noise', 'reference'), a scalar, or an array of shape `[*input_shape]`
      or `[batch, *input_shape]`.
    x: `[batch, *input_shape]`.
    key: PRNG key or int seed, only for `baseline='noise'`.
    name: the argument's name in error messages.
    **make_baseline_kwargs: passed to `make_baseline` (reference, data_mean,
      blur_sigma, noise_std).
  Returns:
    `[batch, *input_shape]` with the dtype of `x`.
  Raises:
    ValueError: naming `name` for a wrong shape, an unknown kind or NaN.
  """
  if isinstance(baseline, str):
    if baseline not in masking.BASELINES:
      raise ValueError(f'Unknown {name} {baseline!r}; expected a scalar, an '
                       f'array or one of {sorted(masking.BASELINES)}.')
    if baseline == 'noise' and key is not None:
      key = _checks.as_key('key', key, method="baseline='noise'")
    return masking.make_baseline(baseline, x, key=key, **make_baseline_kwargs)
  if baseline is None:
    raise ValueError(f'{name} must be a kind {sorted(masking.BASELINES)}, a '
                     'scalar or an array, got None.')
  try:
    b = jnp.asarray(baseline, dtype=x.dtype)
  except TypeError:
    raise ValueError(f'{name} must be a kind, a scalar or an array, got '
                     f'{type(baseline).__name__}.') from None
  if b.ndim and tuple(b.shape) not in (tuple(x.shape), tuple(x.shape[1:])):
    raise ValueError(f'{name} must be a scalar, [*input_shape]={x.shape[1:]} or'
                     f' [batch, *input_shape]={x.shape}, got shape {b.shape}.')
  _checks.check_array(name, b, finite=True)
  return jnp.broadcast_to(b, x.shape)


# ------------------------------------------------------------ inside a core
def to_space(outputs: Array, box: bb.BlackBox, space: str = 'raw') -> Array:
  """The box's outputs `[..., num_outputs]` in the explained space.

  'raw' returns them unchanged; 'log_probs' / 'probs' convert a classifier's
  outputs (`blackbox.to_log_probs`, then `exp`). Traceable.
  """
  if space == 'raw':
    return outputs
  lp = bb.to_log_probs(outputs, box.output)
  return lp if space == 'log_probs' else jnp.exp(lp)


def score_fn(box: bb.BlackBox, space: str = 'raw'
             ) -> Callable[[Array, Array], Array]:
  """The explained scalar for a batch: `(x[n, *input_shape], t int[n]) -> [n]`.

  `space='raw'` selects the box's own output; 'probs' / 'log_probs' convert a
  classifier's outputs first. Traceable; calls `box.apply_fn` directly (no
  checks), so it also works under `vmap`.
  """
  def f(x: Array, t: Array) -> Array:
    return bb.select_target(to_space(box.apply_fn(box.params, x), box, space),
                            t)
  return f


def example_score(box: bb.BlackBox, space: str = 'raw'
                  ) -> Callable[[Array, Array], Array]:
  """The explained scalar for ONE example: `(x[*input_shape], t int[]) -> []`.

  The form to differentiate (`jax.grad`) and to `vmap` over paths, noise
  samples, perturbations and the batch.
  """
  f = score_fn(box, space)
  return lambda x, t: f(x[None], t[None])[0]


def resolve_targets(box: bb.BlackBox, x: Array, target: Array | None
                    ) -> Array:
  """Inside a core: int32 `[batch]` targets, None -> predicted class of `x`."""
  if target is not None:
    return target
  return jnp.argmax(box.apply_fn(box.params, x), axis=-1).astype(jnp.int32)


def per_example_chunk(chunk_size: int, batch: int, n: int) -> int:
  """Items per chunk for each example so that `batch * chunk <= chunk_size`.

  Args:
    chunk_size: the bound on model rows per call for the whole batch.
    batch: examples evaluated together (the vmapped batch).
    n: items (perturbations, steps, samples) per example.
  Returns:
    an int in `[1, n]`.
  """
  return max(1, min(n, chunk_size // max(batch, 1)))


def evaluate_in_chunks(box: bb.BlackBox, inputs: Array, *,
                       chunk_size: int = DEFAULT_CHUNK_SIZE,
                       target: Array | int | None = None,
                       space: str = 'raw') -> Array:
  """The box on many inputs in the explained space, `chunk_size` rows a call.

  `blackbox.forward_in_chunks`, then `to_space` and the target's column.
  Traceable (use inside a jitted core). For inputs generated from
  descriptors, prefer `blackbox.map_in_chunks` with a generating `fn`.

  Args:
    box: the black box.
    inputs: `[n, *input_shape]`.
    chunk_size: rows per model call; bounds peak memory.
    target: None -> all outputs; an int or int `[n]` -> the target's score.
    space: 'raw', 'probs' or 'log_probs'.
  Returns:
    `[n, num_outputs]` if `target` is None, else `[n]`.
  """
  out = to_space(bb.forward_in_chunks(box, inputs, chunk_size), box, space)
  if target is None:
    return out
  t = jnp.broadcast_to(jnp.asarray(target, jnp.int32), (inputs.shape[0],))
  return bb.select_target(out, t)


def is_image_shape(input_shape: Sequence[int]) -> bool:
  """True for `[H, W, C]` example shapes (spatial methods: Grad-CAM, RISE)."""
  return len(tuple(input_shape)) == 3


def ceil_div(a: int, b: int) -> int:
  """Integer ceil(a / b)."""
  return -(-a // b)


__all__ = [
    'DEFAULT_CHUNK_SIZE', 'SPACES', 'ceil_div',
    'check_space', 'check_target',
    'evaluate_in_chunks', 'example_score', 'is_image_shape',
    'per_example_chunk', 'prepare', 'resolve_baseline', 'resolve_targets',
    'score_fn', 'to_space',
]
