"""Black-box models as pure, jittable functions.

A `BlackBox` wraps any model as `box(x) -> outputs` with `x: [batch, *input_shape]`
and `outputs: [batch, num_outputs]`. Its parameters are a pytree leaf of the box
(so a box can be passed through `jax.jit`, and `jax.vmap` can map over copies of
its parameters) while the apply function is static. Explainers only ever call
the box, its output conversions, or (for latent methods such as IBA/InputIBA and
Grad-CAM) the split `head_fn`/`tail_fn` at a named layer.

Adapters:
  * `from_linen`  Flax linen modules (optionally split at a named submodule),
  * `from_nnx`    Flax NNX modules (`nnx.split` / `nnx.merge`),
  * `from_jax`    any JAX callable (Haiku `transform`, Equinox, plain functions),
  * `from_numpy`  non-JAX models (numpy, scikit-learn, PyTorch) through one
                  batched `jax.pure_callback` per batch.
Each adapter checks the output shape once at wrap time on a probe batch of
zeros `[2, *input_shape]` (`jax.eval_shape` for JAX models, one tiny call for
`from_numpy`) and raises a ValueError naming the faulty argument.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from xai_jax import _checks

Array = jax.Array
PyTree = Any

OUTPUT_KINDS = ('logits', 'probs', 'log_probs', 'regression')
_TINY = 1e-12


def _as_tuple(shape: Sequence[int] | int) -> tuple[int, ...]:
  if isinstance(shape, (int, np.integer)):
    return (int(shape),)
  return tuple(int(s) for s in shape)


@flax.struct.dataclass
class BlackBox:
  """A model to explain: `outputs = apply_fn(params, x)`.

  Attributes:
    apply_fn: static pure function `(params, x[batch, *input_shape]) ->
      [batch, num_outputs]`.
    params: the model's parameters (any pytree; may be None). A pytree leaf
      of the box, so new parameters do not recompile jitted explainers.
    input_shape: the shape of one example, e.g. `(10,)` or `(28, 28, 1)`.
    output: what `apply_fn` returns: 'logits', 'probs', 'log_probs' or
      'regression'.
    num_outputs: size of the last output dimension.
    input_dtype: dtype kind of inputs ('float' or 'int' for token ids).
    head_fn: optional `(params, x) -> latent[batch, *latent_shape]`, the model
      up to the split layer.
    tail_fn: optional `(params, latent) -> outputs`, the rest of the model;
      `tail_fn(params, head_fn(params, x)) == apply_fn(params, x)`.
    latent_shape: the shape of one example's latent at the split.
    differentiable: False for boxes that cannot be differentiated
      (`from_numpy`); gradient explainers check it.
    name: a label for tables and figures.
  """

  apply_fn: Callable[[PyTree, Array], Array] = flax.struct.field(
      pytree_node=False)
  params: PyTree
  input_shape: tuple[int, ...] = flax.struct.field(pytree_node=False)
  output: str = flax.struct.field(pytree_node=False, default='logits')
  num_outputs: int = flax.struct.field(pytree_node=False, default=1)
  input_dtype: str = flax.struct.field(pytree_node=False, default='float')
  head_fn: Callable[[PyTree, Array], Array] | None = flax.struct.field(
      pytree_node=False, default=None)
  tail_fn: Callable[[PyTree, Array], Array] | None = flax.struct.field(
      pytree_node=False, default=None)
  latent_shape: tuple[int, ...] | None = flax.struct.field(
      pytree_node=False, default=None)
  differentiable: bool = flax.struct.field(pytree_node=False, default=True)
  name: str = flax.struct.field(pytree_node=False, default='blackbox')

  # ----------------------------------------------------------------- checks
  def check_input(self, x: Any, name: str = 'x', *, finite: bool = True
                  ) -> None:
    """Raises ValueError unless `x` is `[batch, *input_shape]` (and finite).

    Args:
      x: candidate input batch.
      name: the argument name used in error messages.
      finite: also reject NaN/inf (only for concrete, non-traced arrays).
    """
    _checks.check_array(name, x, ndim=1 + len(self.input_shape),
                        trailing_shape=self.input_shape, finite=finite)
    if self.input_dtype == 'float' and not jnp.issubdtype(x.dtype, jnp.floating):
      raise ValueError(
          f'{name} must have a floating dtype for black box {self.name!r}, '
          f'got {x.dtype}.')
    if self.input_dtype == 'int' and not jnp.issubdtype(x.dtype, jnp.integer):
      raise ValueError(
          f'{name} must hold integer token ids for black box {self.name!r}, '
          f'got {x.dtype}.')

  # ---------------------------------------------------------------- calling
  def __call__(self, x: Array) -> Array:
    """Model outputs for a batch: `x[batch, *input_shape] -> [batch, num_outputs]`."""
    self.check_input(x, finite=False)
    return self.apply_fn(self.params, x)

  def log_probs(self, x: Array) -> Array:
    """Log class probabilities `[batch, num_outputs]` (log-softmax of logits)."""
    return to_log_probs(self(x), self.output)

  def probs(self, x: Array) -> Array:
    """Class probabilities `[batch, num_outputs]`, rows sum to one."""
    return jnp.exp(self.log_probs(x))

  def predict(self, x: Array) -> Array:
    """Predicted class `[batch]` (argmax of the outputs; int32)."""
    if self.output == 'regression':
      raise ValueError('predict() needs a classifier; this black box has '
                       "output='regression'.")
    return jnp.argmax(self(x), axis=-1).astype(jnp.int32)

  def scores(self, x: Array, target: Array | int | None = None,
             space: str = 'raw') -> Array:
    """The explained scalar per example: output `target` of the box, `[batch]`.

    Args:
      x: `[batch, *input_shape]`.
      target: class index per example `[batch]`, one int for all, or None for
        the predicted class; every index in `[0, num_outputs)`.
      space: 'raw' (the box's own output kind), 'probs' or 'log_probs'.
    Returns:
      `[batch]`: `outputs[i, target[i]]` in the chosen space.
    Raises:
      ValueError: `space` is unknown, `x` is not `[batch, *input_shape]`, or
        `target` is not integer, has the wrong shape or holds an index
        outside `[0, num_outputs)` (negative indices included); checked
        before the model runs (skipped for traced targets).
    """
    _checks.check_choice('space', space, ('raw', 'probs', 'log_probs'))
    _checks.check_target_range('target', target, self.num_outputs,
                               model=f'black box {self.name!r}')
    raw = self(x)
    t = resolve_target(raw, target, x.shape[0])
    out = raw
    if space != 'raw':
      lp = to_log_probs(raw, self.output)
      out = lp if space == 'log_probs' else jnp.exp(lp)
    return select_target(out, t)

  def with_params(self, params: PyTree) -> 'BlackBox':
    """The same box with other parameters (no recompilation of explainers)."""
    return self.replace(params=params)

  @property
  def is_split(self) -> bool:
    """True when the box has a `head_fn`/`tail_fn` split for latent methods."""
    return self.head_fn is not None and self.tail_fn is not None

  def head(self, x: Array) -> Array:
    """Latent at the split layer: `[batch, *latent_shape]`."""
    if not self.is_split:
      raise ValueError(f'Black box {self.name!r} has no split; build it with '
                       "from_linen(..., split_at='layer_name').")
    self.check_input(x, finite=False)
    return self.head_fn(self.params, x)

  def tail(self, latent: Array) -> Array:
    """Outputs from the latent at the split layer: `[batch, num_outputs]`."""
    if not self.is_split:
      raise ValueError(f'Black box {self.name!r} has no split; build it with '
                       "from_linen(..., split_at='layer_name').")
    _checks.check_array('latent', latent, ndim=1 + len(self.latent_shape),
                        trailing_shape=self.latent_shape)
    return self.tail_fn(self.params, latent)


# ------------------------------------------------------------------ outputs
def to_log_probs(outputs: Array, output: str) -> Array:
  """Converts a box's outputs `[..., c]` of kind `output` to log-probabilities."""
  _checks.check_choice('output', output, OUTPUT_KINDS)
  if output == 'logits':
    return jax.nn.log_softmax(outputs, axis=-1)
  if output == 'probs':
    return jnp.log(jnp.clip(outputs, _TINY, 1.0))
  if output == 'log_probs':
    return outputs
  raise ValueError("This needs a classifier; the black box has "
                   "output='regression', which is not a distribution.")


SPACES = ('raw', 'probs', 'log_probs')


def to_space(outputs: Array, output: str, space: str = 'raw') -> Array:
  """A box's outputs `[..., c]` of kind `output` in the explained `space`.

  'raw' returns them unchanged; 'log_probs' / 'probs' convert a classifier's
  outputs (`to_log_probs`, then `exp`). The one conversion of every
  explainer that scores model outputs (attribution methods, FastSHAP).
  Traceable.
  """
  _checks.check_choice('space', space, SPACES)
  if space == 'raw':
    return outputs
  lp = to_log_probs(outputs, output)
  return lp if space == 'log_probs' else jnp.exp(lp)


def resolve_target(outputs: Array | None, target: Array | int | None,
                   batch: int, num_outputs: int | None = None, *,
                   model: str = 'the black box') -> Array:
  """Target class per example `[batch]` (int32).

  Args:
    outputs: the box's outputs `[batch, c]`, used when `target` is None
      (the predicted class = argmax).
    target: None, one int for all examples, or an int array `[batch]`.
    batch: the batch size.
    num_outputs: optional `c`; when given, every index of `target` must be
      in `[0, c)` (`_checks.check_target_range`; skipped for tracers).
    model: how an error message names the model.
  Returns:
    `[batch]` int32 class indices.
  Raises:
    ValueError: `target` is None without `outputs`, is not integer, has a
      shape other than `()` or `[batch]`, or (with `num_outputs`) holds an
      index outside `[0, num_outputs)`, negative indices included.
  """
  if num_outputs is not None:
    _checks.check_target_range('target', target, num_outputs, model=model)
  if target is None:
    if outputs is None:
      raise ValueError('target=None needs the model outputs.')
    return jnp.argmax(outputs, axis=-1).astype(jnp.int32)
  t = jnp.asarray(target)
  if not jnp.issubdtype(t.dtype, jnp.integer):
    raise ValueError(f'target must hold integer class indices, got {t.dtype}.')
  if t.ndim == 0:
    return jnp.full((batch,), t, jnp.int32)
  if t.shape != (batch,):
    raise ValueError(f'target must be an int or have shape [{batch}], got '
                     f'shape {t.shape}.')
  return t.astype(jnp.int32)


def check_target(box: 'BlackBox', target: Array | int | None, batch: int
                 ) -> Array | None:
  """A user's `target` checked before tracing: None, or int32 `[batch]`.

  The one target check of the explainers and metrics: None stays None (the
  predicted class, resolved inside a jitted core); an int or ints `[batch]`
  must be class indices in `[0, box.num_outputs)` (negative indices
  rejected; skipped for tracers).

  Raises:
    ValueError: naming `target` for a non-integer dtype, a wrong shape or an
      index outside `[0, num_outputs)`.
  """
  if target is None:
    return None
  return resolve_target(None, target, batch, box.num_outputs,
                        model=f'black box {box.name!r}')


def select_target(outputs: Array, target: Array) -> Array:
  """`outputs[i, target[i]]` for each row: `[batch, c], [batch] -> [batch]`."""
  return jnp.take_along_axis(outputs, target[:, None], axis=-1)[:, 0]


# ----------------------------------------------------------------- adapters
# Every adapter checks the model once, at wrap time, on a probe batch of
# `_PROBE_BATCH` rows of zeros (abstractly with `jax.eval_shape` for JAX
# models: a trace, no computation; one real call of the function for
# `from_numpy`). When the probe cannot tell `[batch, c]` from `[c, batch]`
# (c equal to the probe batch) a second probe of `_SECOND_PROBE_BATCH` rows
# settles it.
_PROBE_BATCH = 2
_SECOND_PROBE_BATCH = 3
_NOT_TRACEABLE = (jax.errors.TracerArrayConversionError,
                  jax.errors.ConcretizationTypeError,
                  jax.errors.TracerIntegerConversionError)


def _first_line(err: BaseException) -> str:
  """`'TypeError: <first line of the message>'`, without a final period."""
  lines = [l.strip() for l in str(err).splitlines() if l.strip()]
  if not lines:
    return type(err).__name__
  return f'{type(err).__name__}: {lines[0]}'.rstrip('.')


def _check_probe_output(out_shape: tuple[int, ...], batch: int,
                        input_shape: tuple[int, ...], arg: str) -> None:
  """ValueError naming `arg` unless the output is `[batch, num_outputs]`."""
  probe = (batch, *input_shape)
  if len(out_shape) == 2 and out_shape[0] == batch:
    return
  if len(out_shape) == 1 and out_shape[0] == batch:
    hint = (' For one output per example return shape [batch, 1] '
            '(e.g. y[:, None]); for a scikit-learn classifier wrap '
            'predict_proba, not predict.')
  elif len(out_shape) == 2 and out_shape[1] == batch:
    hint = (' Outputs must be batch-first: [batch, num_outputs], not '
            '[num_outputs, batch].')
  else:
    hint = ''
  raise ValueError(
      f'{arg} must map [batch, *input_shape] -> [batch, num_outputs], one '
      f'output row per input row: on a probe batch of shape {probe} it '
      f'returned shape {tuple(out_shape)}, expected ({batch}, num_outputs).'
      + hint)


def _eval_probe(fn: Callable, params: PyTree, input_shape: tuple[int, ...],
                dtype: Any, batch: int, arg: str) -> tuple[int, ...]:
  """The abstract output shape of `fn(params, zeros[batch, *input_shape])`."""
  spec = jax.ShapeDtypeStruct((batch, *input_shape), dtype)
  try:
    out = jax.eval_shape(fn, params, spec)
  except _NOT_TRACEABLE as e:
    raise ValueError(
        f'{arg} is not traceable by JAX ({_first_line(e)}); wrap a non-JAX '
        'model (numpy, scikit-learn, PyTorch) with from_numpy.') from e
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(
        f'input_shape={input_shape} does not fit {arg}: on a probe batch of '
        f'shape {spec.shape} ({np.dtype(dtype).name}) it raised '
        f'{_first_line(e)}. input_shape is the shape of ONE example, without '
        'the batch dimension (and input_dtype its kind).') from e
  if not isinstance(out, jax.ShapeDtypeStruct):
    raise ValueError(
        f'{arg} must return one array [batch, num_outputs], got a '
        f'{type(out).__name__} on a probe batch of shape {spec.shape}.')
  return tuple(out.shape)


def _probe_outputs(fn: Callable, params: PyTree, input_shape: tuple[int, ...],
                   dtype: Any, arg: str) -> int:
  """`num_outputs` of a JAX apply function, checked on abstract probes.

  Raises:
    ValueError: naming `input_shape` if the probe fails, `arg` if the output
      is not `[batch, num_outputs]` with the input's batch.
  """
  shape = _eval_probe(fn, params, input_shape, dtype, _PROBE_BATCH, arg)
  _check_probe_output(shape, _PROBE_BATCH, input_shape, arg)
  if shape[1] == _PROBE_BATCH:
    shape2 = _eval_probe(fn, params, input_shape, dtype, _SECOND_PROBE_BATCH,
                         arg)
    _check_probe_output(shape2, _SECOND_PROBE_BATCH, input_shape, arg)
  return int(shape[1])


def _dtype_of(input_dtype: str) -> Any:
  return jnp.float32 if input_dtype == 'float' else jnp.int32


def from_jax(fn: Callable, *, input_shape: Sequence[int], params: PyTree = None,
             output: str = 'logits', input_dtype: str = 'float',
             name: str = 'jax') -> BlackBox:
  """Wraps any JAX callable (Haiku `transform`, Equinox, plain function).

  At wrap time the output shape is checked with `jax.eval_shape` on a probe
  batch of zeros `[2, *input_shape]` (a trace, no computation; a second
  probe of 3 rows when `num_outputs == 2`).

  Args:
    fn: `fn(x)` if `params` is None, else `fn(params, x)`; maps
      `[batch, *input_shape] -> [batch, num_outputs]`; must be traceable by
      JAX (jit, vmap, grad).
    input_shape: the shape of one example (without the batch dimension).
    params: optional parameter pytree passed as the first argument.
    output: 'logits', 'probs', 'log_probs' or 'regression'.
    input_dtype: 'float' or 'int' (token ids).
    name: a label.
  Returns:
    a `BlackBox`: `box(x[batch, *input_shape]) -> [batch, num_outputs]`,
    `num_outputs` read from the probe.
  Raises:
    ValueError: `output` or `input_dtype` is unknown; `fn` is not callable
      or not traceable by JAX; `fn` fails on the probe batch (the message
      names `input_shape`, the probe's shape and the error's first line); or
      `fn` does not return `[batch, num_outputs]` with the input's batch.
  """
  return _from_jax(fn, input_shape=input_shape, params=params, output=output,
                   input_dtype=input_dtype, name=name, arg='fn')


def _from_jax(fn: Callable, *, input_shape: Sequence[int], params: PyTree,
              output: str, input_dtype: str, name: str, arg: str) -> BlackBox:
  _checks.check_choice('output', output, OUTPUT_KINDS)
  _checks.check_choice('input_dtype', input_dtype, ('float', 'int'))
  if not callable(fn):
    raise ValueError(f'{arg} must be callable, got {type(fn).__name__}.')
  input_shape = _as_tuple(input_shape)
  apply_fn = fn if params is not None else _ignore_params(fn)
  n = _probe_outputs(apply_fn, params, input_shape, _dtype_of(input_dtype),
                     arg)
  return BlackBox(apply_fn=apply_fn, params=params, input_shape=input_shape,
                  output=output, num_outputs=n, input_dtype=input_dtype,
                  name=name)


@functools.lru_cache(maxsize=None)
def _ignore_params(fn: Callable) -> Callable:
  def apply_fn(params, x):
    del params
    return fn(x)
  return apply_fn


def _module_path(split_at: str | Sequence[str]) -> tuple[str, ...]:
  if isinstance(split_at, str):
    return tuple(p for p in split_at.split('/') if p)
  return tuple(split_at)


def from_linen(module: nn.Module, variables: PyTree, *,
               input_shape: Sequence[int], method: str | Callable | None = None,
               output: str = 'logits', split_at: str | None = None,
               input_dtype: str = 'float', name: str | None = None,
               **apply_kwargs: Any) -> BlackBox:
  """Wraps a Flax linen module: `module.apply(variables, x, method=method)`.

  At wrap time the output shape is checked with `jax.eval_shape` on a probe
  batch of zeros `[2, *input_shape]` (a trace, no computation; a second
  probe of 3 rows when `num_outputs == 2`).

  Args:
    module: the linen module; maps `[batch, *input_shape] ->
      [batch, num_outputs]`.
    variables: its variables (`{'params': ..., 'batch_stats': ...}`).
    input_shape: the shape of one example (without the batch dimension).
    method: optional method name or function to apply instead of `__call__`.
    output: 'logits', 'probs', 'log_probs' or 'regression'.
    split_at: optional path of a submodule ('backbone/conv2' or 'Dense_1'):
      `head_fn` returns that submodule's output (found with
      `capture_intermediates`), `tail_fn` replaces it by a given latent
      (`nn.intercept_methods`). Under jit the unused half is dead code.
    input_dtype: 'float' or 'int'.
    name: a label (default: the module's class name).
    **apply_kwargs: static keyword arguments for apply (e.g. `train=False`).
  Returns:
    a `BlackBox`: `box(x[batch, *input_shape]) -> [batch, num_outputs]`;
    with `split_at`, also `head(x) -> [batch, *latent_shape]` and
    `tail(latent) -> [batch, num_outputs]`.
  Raises:
    ValueError: `output` or `input_dtype` is unknown; `module` is not a linen
      module; applying it fails on the probe batch (the message names
      `input_shape`, the probe's shape and the error's first line); it does
      not return `[batch, num_outputs]` with the input's batch; or
      `split_at` names no submodule called in apply.
  """
  _checks.check_choice('output', output, OUTPUT_KINDS)
  _checks.check_choice('input_dtype', input_dtype, ('float', 'int'))
  if not isinstance(module, nn.Module):
    raise ValueError(f'module must be a flax.linen.Module, got '
                     f'{type(module).__name__}.')
  input_shape = _as_tuple(input_shape)
  kwargs = tuple(sorted(apply_kwargs.items()))
  apply_fn = _cached(_linen_apply, module, method, kwargs)
  name = name or type(module).__name__
  n = _probe_outputs(apply_fn, variables, input_shape, _dtype_of(input_dtype),
                     'module')
  head_fn = tail_fn = latent_shape = None
  if split_at is not None:
    path = _module_path(split_at)
    head_fn = _cached(_linen_head, module, method, kwargs, path)
    tail_fn = _cached(_linen_tail, module, method, kwargs, path, input_shape,
                      _dtype_of(input_dtype))
    try:
      lat = jax.eval_shape(head_fn, variables,
                           jax.ShapeDtypeStruct((2, *input_shape),
                                                _dtype_of(input_dtype)))
    except KeyError:
      lat = None
    if lat is None:
      raise ValueError(f'split_at={split_at!r} names no submodule of '
                       f'{type(module).__name__} that is called in apply; '
                       f'its submodules with parameters: '
                       f'{submodule_paths(variables)}.')
    latent_shape = tuple(lat.shape[1:])
  return BlackBox(apply_fn=apply_fn, params=variables, input_shape=input_shape,
                  output=output, num_outputs=n, input_dtype=input_dtype,
                  head_fn=head_fn, tail_fn=tail_fn, latent_shape=latent_shape,
                  name=name)


def submodule_paths(variables: PyTree) -> list[str]:
  """The 'a/b' paths of the submodules holding parameters in a Linen
  `variables` dict (the names `from_linen(..., split_at=)` accepts; modules
  without parameters, such as pooling or dropout, are not listed)."""
  params = variables.get('params', {}) if hasattr(variables, 'get') else {}
  out: list[str] = []

  def walk(tree: Any, prefix: tuple[str, ...]) -> None:
    for name, sub in tree.items():
      if hasattr(sub, 'items'):
        path = (*prefix, str(name))
        out.append('/'.join(path))
        walk(sub, path)

  walk(params, ())
  return out


def _cached(factory: Callable, *args: Any) -> Callable:
  """`factory(*args)` memoised, so equal modules give the same (static)
  apply function and jitted explainers are not recompiled; modules with
  unhashable fields (e.g. lists) still work, uncached."""
  try:
    hash(args)
  except TypeError:
    return factory.__wrapped__(*args)
  return factory(*args)


@functools.lru_cache(maxsize=None)
def _linen_apply(module, method, kwargs):
  def apply_fn(variables, x):
    return module.apply(variables, x, method=method, **dict(kwargs))
  return apply_fn


@functools.lru_cache(maxsize=None)
def _linen_head(module, method, kwargs, path):
  def head_fn(variables, x):
    _, state = module.apply(
        variables, x, method=method, mutable=['intermediates'],
        capture_intermediates=lambda mdl, meth: (mdl.path == path and
                                                 meth == '__call__'),
        **dict(kwargs))
    node = state['intermediates']
    for p in path:
      node = node[p]
    return node['__call__'][0]
  return head_fn


@functools.lru_cache(maxsize=None)
def _linen_tail(module, method, kwargs, path, input_shape, dtype):
  def tail_fn(variables, latent):
    def interceptor(next_fun, args, kw, context):
      if context.module.path == path and context.method_name == '__call__':
        return latent
      return next_fun(*args, **kw)
    dummy = jnp.zeros((latent.shape[0], *input_shape), dtype)
    with nn.intercept_methods(interceptor):
      return module.apply(variables, dummy, method=method, **dict(kwargs))
  return tail_fn


def from_nnx(model: Any, *, input_shape: Sequence[int], output: str = 'logits',
             method: str | None = None, input_dtype: str = 'float',
             name: str | None = None) -> BlackBox:
  """Wraps a Flax NNX module through `nnx.split` / `nnx.merge`.

  The box evaluates the model in eval mode: at wrap time it clones the
  module (`nnx.clone`; the arrays are shared, not copied), sets the clone
  to eval mode (`.eval()`: `deterministic=True` for Dropout,
  `use_running_average=True` for BatchNorm) and splits the clone; each call
  merges a fresh copy of that state (`nnx.merge(..., copy=True)`). So the
  user's module is never mutated (its mode, batch statistics and RNG counts
  stay as they were), the box is deterministic, and jit/vmap/grad of it
  work whatever mode the module was in. The box holds the state at wrap
  time: after training the module further, wrap it again (or pass
  `nnx.state(model)` to `with_params`).

  At wrap time the output shape is checked with `jax.eval_shape` on a probe
  batch of zeros `[2, *input_shape]` (a trace, no computation; a second
  probe of 3 rows when `num_outputs == 2`).

  Args:
    model: an `nnx.Module` mapping `[batch, *input_shape] ->
      [batch, num_outputs]`.
    input_shape: the shape of one example (without the batch dimension).
    output: 'logits', 'probs', 'log_probs' or 'regression'.
    method: optional method name to call instead of `__call__`.
    input_dtype: 'float' or 'int'.
    name: a label (default: the module's class name).
  Returns:
    a `BlackBox`: `box(x[batch, *input_shape]) -> [batch, num_outputs]`,
    whose `params` are the eval-mode clone's `nnx.State`.
  Raises:
    ValueError: `model` is not an `nnx.Module`; `output` or `input_dtype` is
      unknown; `method` is not a method of `model`; calling the model fails
      on the probe batch (the message names `input_shape`, the probe's shape
      and the error's first line); or it does not return
      `[batch, num_outputs]` with the input's batch.
  """
  from flax import nnx  # pylint: disable=g-import-not-at-top
  if not isinstance(model, nnx.Module):
    raise ValueError(f'model must be a flax.nnx.Module, got '
                     f'{type(model).__name__}.')
  if method is not None and not callable(getattr(model, method, None)):
    raise ValueError(f'method={method!r} is not a method of '
                     f'{type(model).__name__}.')
  evaluated = nnx.clone(model)
  evaluated.eval()
  graphdef, state = nnx.split(evaluated)
  apply_fn = _nnx_apply(graphdef, method)
  return _from_jax(apply_fn, input_shape=input_shape, params=state,
                   output=output, input_dtype=input_dtype,
                   name=name or type(model).__name__, arg='model')


def _nnx_merge_copies() -> bool:
  import inspect  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  return 'copy' in inspect.signature(nnx.merge).parameters


@functools.lru_cache(maxsize=None)
def _nnx_apply(graphdef, method):
  from flax import nnx  # pylint: disable=g-import-not-at-top
  # Where `nnx.split` states hold the module's own Variables (flax >= 0.11),
  # merging without a copy would write any update back into them.
  kw = {'copy': True} if _nnx_merge_copies() else {}

  def apply_fn(state, x):
    m = nnx.merge(graphdef, state, **kw)
    return (m if method is None else getattr(m, method))(x)
  return apply_fn


def from_numpy(fn: Callable[[np.ndarray], np.ndarray], *,
               input_shape: Sequence[int], output_shape: Sequence[int] | int,
               dtype: Any = np.float32, output: str = 'probs',
               input_dtype: str = 'float', name: str = 'numpy') -> BlackBox:
  """Wraps a non-JAX model (numpy, scikit-learn, PyTorch) as a jittable box.

  The model runs on the host through `jax.pure_callback`; the callback is
  batch-aware: under `jax.vmap` (any depth) all mapped rows are flattened into
  ONE call `fn(x[n, *input_shape]) -> [n, *output_shape]`, never one per row.
  Gradients are not available (a clear error names the alternatives).

  At wrap time `fn` is called once on a probe batch of zeros
  `[2, *input_shape]` (a second call on 3 rows when `output_shape == (2,)`)
  to check that it returns `[batch, *output_shape]`: an error inside the
  callback later would surface as an opaque runtime error.

  Args:
    fn: numpy function `[n, *input_shape] -> [n, *output_shape]`, e.g.
      `sklearn_model.predict_proba`.
    input_shape: the shape of one example (without the batch dimension).
    output_shape: the shape of one example's output, `(num_outputs,)` or
      `num_outputs`, e.g. `(2,)`.
    dtype: the output dtype.
    output: 'logits', 'probs', 'log_probs' or 'regression'.
    input_dtype: 'float' (probe and inputs float32) or 'int' (int32).
    name: a label.
  Returns:
    a `BlackBox`: `box(x[batch, *input_shape]) -> [batch, num_outputs]`,
    jittable and vmappable, not differentiable.
  Raises:
    ValueError: `output` or `input_dtype` is unknown; `fn` is not callable;
      `output_shape` is not one-dimensional; `fn` fails on the probe batch
      (the message names `input_shape` and the error's first line); `fn`
      does not return one output row per input row; or its output per
      example differs from `output_shape` (the message names `output_shape`
      and the shape `fn` returned).
  """
  _checks.check_choice('output', output, OUTPUT_KINDS)
  _checks.check_choice('input_dtype', input_dtype, ('float', 'int'))
  if not callable(fn):
    raise ValueError(f'fn must be callable, got {type(fn).__name__}.')
  input_shape = _as_tuple(input_shape)
  output_shape = _as_tuple(output_shape)
  if len(output_shape) != 1:
    raise ValueError(f'output_shape must have one dimension (num_outputs,), '
                     f'got {output_shape}.')
  dtype = np.dtype(dtype)
  _probe_numpy(fn, input_shape, output_shape,
               np.dtype(_dtype_of(input_dtype)))
  apply_fn = _numpy_apply(fn, input_shape, output_shape, dtype)
  return BlackBox(apply_fn=apply_fn, params=None, input_shape=input_shape,
                  output=output, num_outputs=output_shape[0],
                  input_dtype=input_dtype, differentiable=False, name=name)


def _probe_numpy(fn: Callable, input_shape: tuple[int, ...],
                 output_shape: tuple[int, ...], in_dtype: np.dtype) -> None:
  """Calls `fn` on zeros `[2, *input_shape]` and checks its output shape."""
  batches = [_PROBE_BATCH]
  if output_shape[0] == _PROBE_BATCH:
    batches.append(_SECOND_PROBE_BATCH)
  for batch in batches:
    probe = np.zeros((batch, *input_shape), in_dtype)
    try:
      out = np.shape(fn(probe))
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(
          f'input_shape={input_shape} does not fit fn: on a probe batch of '
          f'shape {probe.shape} ({in_dtype.name}) it raised '
          f'{_first_line(e)}. input_shape is the shape of ONE example, '
          'without the batch dimension (and input_dtype its kind).') from e
    _check_probe_output(out, batch, input_shape, 'fn')
    if out[1:] != output_shape:
      raise ValueError(
          f'output_shape={output_shape} does not match fn: on a probe batch '
          f'of shape {probe.shape} it returned shape {out}, i.e. '
          f'output_shape={out[1:]} per example.')


class NotDifferentiableError(ValueError):
  """Raised when a gradient of a non-differentiable black box is requested."""


@functools.lru_cache(maxsize=None)
def _numpy_apply(fn, input_shape, output_shape, dtype):
  nin = len(input_shape)

  def host(x):
    x = np.asarray(x)
    lead = x.shape[:x.ndim - nin]
    flat = x.reshape((-1, *input_shape))
    out = np.asarray(fn(flat), dtype=dtype)
    if out.shape != (flat.shape[0], *output_shape):
      raise ValueError(
          f'The wrapped numpy model returned shape {out.shape} for an input of '
          f'shape {flat.shape}; expected {(flat.shape[0], *output_shape)}.')
    return out.reshape((*lead, *output_shape))

  @jax.custom_jvp
  def call(x):
    spec = jax.ShapeDtypeStruct((*x.shape[:x.ndim - nin], *output_shape),
                                dtype)
    return jax.pure_callback(host, spec, x, vmap_method='expand_dims')

  @call.defjvp
  def _jvp(primals, tangents):
    raise NotDifferentiableError(
        'This black box was wrapped with from_numpy and runs outside JAX, so '
        'it has no gradients. Use a perturbation explainer (occlusion, rise, '
        'lime, kernel_shap, permutation_shap), or wrap a JAX version of the '
        'model with from_linen/from_nnx/from_jax.')

  def apply_fn(params, x):
    del params
    return call(x)
  return apply_fn


def as_blackbox(model: BlackBox | Callable, *, input_shape: Sequence[int] |
                None = None, output: str = 'logits') -> BlackBox:
  """Returns `model` if it is a BlackBox, else wraps a JAX callable.

  A plain callable goes through the same wrap-time checks as `from_jax`
  (an abstract probe batch of zeros `[2, *input_shape]`).

  Args:
    model: a `BlackBox`, or a JAX callable `model(x[batch, *input_shape]) ->
      [batch, num_outputs]`.
    input_shape: the shape of one example; required for a plain callable,
      ignored for a BlackBox.
    output: 'logits', 'probs', 'log_probs' or 'regression' (plain callables).
  Returns:
    a `BlackBox`: `box(x[batch, *input_shape]) -> [batch, num_outputs]`.
  Raises:
    ValueError: `input_shape` is missing for a plain callable; `output` is
      unknown; `model` is not callable or not traceable by JAX; `model`
      fails on the probe batch (the message names `input_shape`); or it
      does not return `[batch, num_outputs]` with the input's batch.
  """
  if isinstance(model, BlackBox):
    return model
  if input_shape is None:
    raise ValueError('input_shape is required when model is a plain callable '
                     'and not a BlackBox.')
  return _from_jax(model, input_shape=input_shape, params=None, output=output,
                   input_dtype='float', name='jax', arg='model')


def require_differentiable(box: BlackBox, method: str) -> None:
  """Raises a clear error if a gradient method is used on a numpy box."""
  if not box.differentiable:
    raise NotDifferentiableError(
        f'{method} needs gradients, but black box {box.name!r} is not '
        'differentiable (from_numpy). Use a perturbation explainer (occlusion, '
        'rise, lime, kernel_shap, permutation_shap) instead.')


# ---------------------------------------------------------------------------
# Chunked, memory-bounded evaluation: the one home for it. Every explainer and
# metric that evaluates a model on many rows goes through these functions.


def even_chunks(n: int, chunk: int) -> tuple[int, int]:
  """`(num_chunks, rows_per_chunk)` for `n` rows, chunks as even as possible.

  `rows_per_chunk <= chunk`, and at most `num_chunks - 1` rows of padding
  are needed to make the chunks equal.
  """
  chunk = max(1, min(int(chunk), int(n)))
  num = -(-int(n) // chunk)
  return num, -(-int(n) // num)


def pad_rows(xs: PyTree, total: int) -> PyTree:
  """Pads every leaf of `xs` to `total` rows by repeating its last row.

  Repeating a real row (rather than zeros) keeps padded model evaluations
  finite; the padded outputs are always sliced off.
  """
  def pad(a):
    a = jnp.asarray(a)
    extra = total - a.shape[0]
    if not extra:
      return a
    return jnp.concatenate([a, jnp.repeat(a[-1:], extra, axis=0)])
  return jax.tree.map(pad, xs)


def num_rows(xs: PyTree) -> int:
  """The shared leading dimension of the leaves of `xs` (ValueError if none)."""
  leaves = jax.tree.leaves(xs)
  if not leaves:
    raise ValueError('xs must hold at least one array.')
  n = leaves[0].shape[0]
  if any(l.shape[0] != n for l in leaves):
    raise ValueError('All arrays in xs must share the leading dimension.')
  return int(n)


def map_batches(fn: Callable[[PyTree], PyTree], xs: PyTree, chunk: int
                ) -> PyTree:
  """`fn(xs)` for a row-wise `fn`, evaluated at most `chunk` rows per call.

  `fn` takes a batch (a pytree of `[c, ...]` arrays) and returns a pytree of
  `[c, ...]` arrays computed row by row (a model forward pass, a masked
  evaluation). Rows are padded to equal chunks (`even_chunks`) and the
  chunks run sequentially in one `lax.map`, so `fn` is traced once and peak
  memory is that of one chunk plus the stacked outputs. Traceable (use it
  inside a jitted function).

  Args:
    fn: batch function, pytree of `[c, ...]` -> pytree of `[c, ...]`.
    xs: pytree of arrays with leading dimension `n`.
    chunk: rows per call (>= 1).
  Returns:
    the outputs for all `n` rows, leading dimension `n`.
  """
  n = num_rows(xs)
  num, c = even_chunks(n, chunk)
  if num == 1:
    return fn(xs)
  xp = jax.tree.map(lambda a: a.reshape((num, c, *a.shape[1:])),
                    pad_rows(xs, num * c))
  out = jax.lax.map(fn, xp)
  return jax.tree.map(lambda a: a.reshape((num * c, *a.shape[2:]))[:n], out)


def map_in_chunks(fn: Callable[[PyTree], PyTree], xs: PyTree, chunk: int
                  ) -> PyTree:
  """`jnp.stack([fn(x) for x in xs])` for a per-item `fn`, `chunk` items a call.

  `fn` is written for ONE item and vmapped within a chunk; chunks run
  sequentially (`lax.map(..., batch_size=chunk)` on rows padded to equal
  chunks, so `fn` is traced once). Use it when each item expands into many
  model rows (perturbations built inside `fn` from cheap descriptors such as
  masks or indices): peak memory is one chunk of expanded items.

  Args:
    fn: per-item function (pytree in, pytree out).
    xs: pytree of arrays with leading dimension `n`.
    chunk: items per chunk (>= 1).
  Returns:
    the stacked outputs, leading dimension `n`.
  """
  n = num_rows(xs)
  num, chunk = even_chunks(n, chunk)
  if num == 1:
    return jax.vmap(fn)(xs)
  ys = jax.lax.map(fn, pad_rows(xs, num * chunk), batch_size=chunk)
  return jax.tree.map(lambda y: y[:n], ys)


def sum_in_chunks(fn: Callable[[PyTree], PyTree], xs: PyTree, chunk: int
                  ) -> PyTree:
  """`sum(fn(x) for x in xs)` for a per-item `fn`, `chunk` items at a time.

  Like `map_in_chunks` but accumulates the sum in a `lax.scan` carry, so only
  one chunk of outputs ever exists (gradients along an integration path, RISE
  masks times scores). Padding rows are excluded from the sum.

  Args:
    fn: per-item function; its outputs are summed over items.
    xs: pytree of arrays with leading dimension `n`.
    chunk: items per chunk (>= 1).
  Returns:
    the summed outputs (shapes of one `fn` output).
  """
  n = num_rows(xs)
  num, chunk = even_chunks(n, chunk)
  total = num * chunk

  def chunk_sum(c, valid):
    ys = jax.vmap(fn)(c)
    def s(y):
      v = valid.reshape((-1,) + (1,) * (y.ndim - 1))
      return jnp.sum(jnp.where(v, y, jnp.zeros_like(y)), axis=0)
    return jax.tree.map(s, ys)

  if num == 1:
    return chunk_sum(xs, jnp.ones((n,), bool))
  xp = jax.tree.map(lambda a: a.reshape((num, chunk, *a.shape[1:])),
                    pad_rows(xs, total))
  valid = (jnp.arange(total) < n).reshape(num, chunk)
  first = jax.tree.map(lambda a: a[0], xp)
  init = jax.tree.map(jnp.zeros_like,
                      jax.eval_shape(chunk_sum, first, valid[0]))

  def body(acc, inp):
    c, v = inp
    return jax.tree.map(jnp.add, acc, chunk_sum(c, v)), None

  out, _ = jax.lax.scan(body, init, (xp, valid))
  return out


def forward_in_chunks(box: BlackBox, x: Array, chunk_size: int) -> Array:
  """The box's raw outputs on a large batch, `chunk_size` rows per call.

  `map_batches` over the box's apply function, jitted (called eagerly it
  would dispatch a Linen module op by op: 28 ms instead of 0.2 ms for one
  CNN row). Traceable.

  Args:
    box: the black box.
    x: `[n, *input_shape]`.
    chunk_size: rows per model call (>= 1); bounds peak memory.
  Returns:
    `[n, num_outputs]`, equal to `box(x)`.
  Raises:
    ValueError: `chunk_size` is not a positive int.
  """
  _checks.check_int('chunk_size', chunk_size, minimum=1)
  return _forward_in_chunks(box, x, chunk_size)


@functools.partial(jax.jit, static_argnums=(2,))
def _forward_in_chunks(box: BlackBox, x: Array, chunk_size: int) -> Array:
  return map_batches(functools.partial(box.apply_fn, box.params), x,
                     chunk_size)


__all__ = [
    'BlackBox', 'NotDifferentiableError', 'OUTPUT_KINDS', 'as_blackbox',
    'check_target', 'even_chunks', 'forward_in_chunks', 'map_batches',
    'map_in_chunks', 'num_rows', 'pad_rows', 'sum_in_chunks', 'from_jax',
    'from_linen', 'from_nnx', 'from_numpy',
    'require_differentiable', 'resolve_target', 'select_target',
    'SPACES', 'to_log_probs', 'to_space',
]
