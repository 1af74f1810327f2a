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

import difflib
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

SPACES = bb.SPACES


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
  return bb.check_target(box, target, batch)


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


#: Options of `masking.make_baseline` a method passes on (`**baseline_options`).
BASELINE_OPTIONS = ('reference', 'blur_sigma', 'noise_std')

#: Argument names of other libraries (Captum, shap, lime) -> ours.
ALIASES = {
    'n_steps': 'steps', 'baselines': 'baseline', 'data_mean': 'data',
    'nsamples': 'num_samples', 'n_samples': 'num_samples',
    'nt_samples': 'num_samples', 'stdevs': 'noise_level',
    'internal_batch_size': 'chunk_size', 'perturbations_per_eval':
    'chunk_size', 'batch_size': 'chunk_size', 'feature_mask': 'groups',
    'sliding_window_shapes': 'groups', 'labels': 'target',
    'class_idx': 'target', 'method': 'rule', 'background_data': 'background',
}


#: The attribution methods' own option names (suggestions for misspellings).
OPTION_NAMES = (
    'target', 'key', 'baseline', 'background', 'background_samples', 'data',
    'groups', 'space', 'chunk_size', 'steps', 'rule', 'num_samples',
    'noise_level', 'square', 'absolute', 'keep_channels', 'num_masks',
    'grid', 'p1', 'num_permutations', 'antithetic', 'paired',
    'enumerate_sizes', 'stratify', 'max_players', 'mode', 'kernel_width',
    'feature_mean', 'feature_std', 'stats_from_batch',
    'sample_around_instance', 'sampling', 'distance_scale', 'alpha',
    'num_features', 'return_info')


def check_options(method: str, options: dict[str, Any],
                  allowed: Sequence[str] = BASELINE_OPTIONS) -> dict[str, Any]:
  """Checks the names of a method's pass-through options (`**options`).

  Args:
    method: the method's name, for the message.
    options: the keyword arguments given.
    allowed: the accepted names.
  Returns:
    `options`, unchanged.
  Raises:
    ValueError: naming the first unknown argument and ours for a known name of
      another library (`n_steps` -> `steps`, `baselines` -> `baseline`, ...).
  """
  for name in options:
    if name in allowed:
      continue
    hint = ''
    if name in ALIASES:
      hint = f' (xai_jax calls it {ALIASES[name]!r})'
    else:
      close = difflib.get_close_matches(
          name, list(allowed) or list(OPTION_NAMES), n=1)
      if close:
        hint = f' (did you mean {close[0]!r}?)'
    tail = (f'; the pass-through options are {sorted(allowed)}.' if allowed
            else f'; see help(xai_jax.attribution.{method}).')
    raise ValueError(f'{method}: unknown argument {name!r}{hint}{tail}')
  return options


def resolve_baseline(baseline: Any, x: Array, *,
                     key: Array | int | None = None, data: Any = None,
                     name: str = 'baseline', **baseline_options: Any) -> Array:
  """The reference input for every example: `[batch, *input_shape]`.

  Args:
    baseline: a kind for `masking.make_baseline` ('zero', 'mean', 'blur',
      'noise', 'reference'), a scalar, or an array of shape `[*input_shape]`
      or `[batch, *input_shape]`.
    x: `[batch, *input_shape]`.
    key: PRNG key or int seed, only for `baseline='noise'`.
    data: `[m, *input_shape]` data set for 'mean' (its mean is the baseline;
      the batch `x` is never used).
    name: the argument's name in error messages.
    **baseline_options: `BASELINE_OPTIONS` of `make_baseline` (reference,
      blur_sigma, noise_std).
  Returns:
    `[batch, *input_shape]` with the dtype of `x`.
  Raises:
    ValueError: naming `name` for a wrong shape, an unknown kind or NaN;
      'mean' without `data`.
  """
  check_options('baseline', baseline_options)
  if isinstance(baseline, str):
    if baseline not in masking.BASELINES:
      raise ValueError(f'Unknown {name} {baseline!r}; expected a scalar, an '
                       f'array or one of {sorted(masking.BASELINES)}.')
    if baseline == 'noise' and key is not None:
      key = _checks.as_key('key', key, method="baseline='noise'")
    return masking.make_baseline(baseline, x, key=key, data=data,
                                 **baseline_options)
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


def resolve_background(background: Any, box: bb.BlackBox, baseline: Any, *,
                       default_baseline: Any = 'zero') -> Array | None:
  """A background set for interventional values: `[m, *input_shape]` or None.

  With a background set, absent players take the values of background rows
  and a coalition's value is the mean over the rows `b` of
  `f(x_S, b_not_S)` (SHAP's interventional value function).

  Args:
    background: None, or `[m, *input_shape]` rows (m >= 1), finite.
    box: the black box (its input shape and dtype).
    baseline: the method's `baseline` argument; must be left at its default
      when a background is given (one source of absent values).
    default_baseline: the method's default baseline.
  Returns:
    the background as an array of the box's input dtype, or None.
  Raises:
    ValueError: naming `background` for a bad shape or dtype, no rows or
      NaN/inf, or naming `baseline` when both are given.
  """
  if background is None:
    return None
  if not (isinstance(baseline, str) and baseline == default_baseline):
    raise ValueError('give either background=[m, *input_shape] (absent '
                     'players take background rows) or baseline=, not both.')
  return _checks.check_model_input(box, background, 'background')


def check_finite_result(values: Any, method: str,
                        where: str = 'x or its perturbed copies') -> Any:
  """`values` (a method's result or its model values), after checking that the
  model gave finite outputs (`_checks.check_finite_outputs`)."""
  _checks.check_finite_outputs(values, method=method, where=where)
  return values


# ------------------------------------------------------------ inside a core
def to_space(outputs: Array, box: bb.BlackBox, space: str = 'raw') -> Array:
  """The box's outputs `[..., num_outputs]` in the explained space.

  'raw' returns them unchanged; 'log_probs' / 'probs' convert a classifier's
  outputs (`blackbox.to_log_probs`, then `exp`). Traceable.
  """
  return bb.to_space(outputs, box.output, space)


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
    'ALIASES', 'BASELINE_OPTIONS', 'DEFAULT_CHUNK_SIZE', 'SPACES', 'ceil_div',
    'check_finite_result', 'check_options', 'check_space', 'check_target',
    'resolve_background',
    'evaluate_in_chunks', 'example_score', 'is_image_shape',
    'per_example_chunk', 'prepare', 'resolve_baseline', 'resolve_targets',
    'score_fn', 'to_space',
]
