"""Argument checks and PRNG key normalisation shared by every public function.

The one home for these rules: every public function that takes a key accepts
a `jax.random.key`, a raw `uint32[2]` key (`jax.random.PRNGKey`) or an int
seed, through `as_key`.

They run on concrete (host) values before anything is traced, so a user sees a
`ValueError` that names the offending argument instead of an XLA trace. Under
`jax.jit` the values are tracers: value checks (NaN, ranges) are skipped then and
only static properties (shapes, dtypes) are checked.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def is_tracer(x: Any) -> bool:
  """True if `x` is a JAX tracer (inside jit/vmap/grad), so its values are unknown."""
  return isinstance(x, jax.core.Tracer)


def check_array(
    name: str,
    x: Any,
    *,
    ndim: int | Sequence[int] | None = None,
    min_ndim: int | None = None,
    trailing_shape: Sequence[int] | None = None,
    floating: bool = False,
    finite: bool = False,
) -> None:
  """Checks an array argument and raises `ValueError` naming `name` if it fails.

  Args:
    name: the argument's name, used in the error message.
    x: the value to check (numpy or jax array, or a tracer).
    ndim: accepted number(s) of dimensions.
    min_ndim: the least number of dimensions.
    trailing_shape: the shape the last dimensions must have, e.g. the input
      shape of a model for `x: [batch, *input_shape]`.
    floating: require a floating dtype.
    finite: require no NaN/inf (skipped for tracers).
  """
  if not hasattr(x, 'shape') or not hasattr(x, 'dtype'):
    raise ValueError(f'{name} must be an array, got {type(x).__name__}.')
  shape = tuple(x.shape)
  if ndim is not None:
    allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if len(shape) not in allowed:
      raise ValueError(
          f'{name} must have {" or ".join(map(str, allowed))} dimensions, '
          f'got shape {shape}.')
  if min_ndim is not None and len(shape) < min_ndim:
    raise ValueError(
        f'{name} must have at least {min_ndim} dimensions, got shape {shape}.')
  if trailing_shape is not None:
    t = tuple(trailing_shape)
    if len(shape) < len(t) or (t and shape[len(shape) - len(t):] != t):
      raise ValueError(
          f'{name} must have shape [..., {", ".join(map(str, t))}], '
          f'got shape {shape}.')
  if floating and not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f'{name} must have a floating dtype, got {x.dtype}.')
  if finite and not is_tracer(x) and jnp.issubdtype(x.dtype, jnp.inexact):
    if not bool(np.all(np.isfinite(np.asarray(x)))):
      raise ValueError(f'{name} contains NaN or infinite values.')


def check_k(name: str, k: Any, d: int) -> int:
  """Checks that `k` is an integer with 1 <= k <= d and returns it as int."""
  if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
    raise ValueError(f'{name} must be a Python int, got {k!r}.')
  k = int(k)
  if k <= 0:
    raise ValueError(f'{name} must be positive, got {k}.')
  if k > d:
    raise ValueError(f'{name}={k} is larger than the number of features d={d}.')
  return k


def check_positive(name: str, value: Any) -> None:
  """Checks that a scalar hyper-parameter is > 0 (skipped for tracers)."""
  if is_tracer(value):
    return
  v = np.asarray(value)
  if v.size != 1 or not np.isfinite(v) or float(v) <= 0:
    raise ValueError(f'{name} must be a positive finite number, got {value!r}.')


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
  """Checks that `value` is one of `choices` (a name registry) and returns it."""
  choices = list(choices)
  if value not in choices:
    raise ValueError(
        f'Unknown {name} {value!r}; expected one of {sorted(choices)}.')
  return value


def check_int(name: str, value: Any, minimum: int = 1) -> int:
  """Checks that `value` is a Python/numpy int >= `minimum`; returns it as int."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise ValueError(f'{name} must be a Python int, got {value!r}.')
  if value < minimum:
    raise ValueError(f'{name} must be >= {minimum}, got {value}.')
  return int(value)


def check_chunk_size(chunk_size: Any) -> int:
  """Checks the memory bound `chunk_size` (model rows per call, >= 1)."""
  return check_int('chunk_size', chunk_size, 1)


def is_typed_key(x: Any) -> bool:
  """True for a new-style typed PRNG key array (`jax.random.key`)."""
  return hasattr(x, 'dtype') and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def as_key(name: str, key: Any, *, default_seed: int | None = None,
           method: str | None = None) -> jax.Array:
  """Normalises a PRNG key argument to one typed key (the rule everywhere).

  Accepted: a typed key `jax.random.key(seed)` (shape `()`), a raw key
  `jax.random.PRNGKey(seed)` (`uint32[2]`, wrapped with
  `jax.random.wrap_key_data`: the same random stream), or an int seed >= 0
  (`jax.random.key(seed)`). Works on tracers too (typed or raw keys).

  Args:
    name: the argument's name in error messages ('key').
    key: the value given.
    default_seed: the seed used when `key` is None; None = a key is required.
    method: the calling function's name, for the missing-key message.
  Returns:
    a typed PRNG key of shape `()`.
  Raises:
    ValueError: naming `name` if the key is missing, negative, batched or not
      a key at all.
  """
  if key is None:
    if default_seed is None:
      who = f'{method} is random and needs' if method else 'Missing'
      raise ValueError(f'{who} a PRNG key: pass {name}=jax.random.key(0) or '
                       f'an int seed (same key, same output).')
    key = default_seed
  if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
    if key < 0:
      raise ValueError(f'{name} must be a PRNG key or an int seed >= 0, got '
                       f'{key}.')
    return jax.random.key(int(key))
  if is_typed_key(key):
    if key.shape != ():
      raise ValueError(f'{name} must be a single PRNG key, got shape '
                       f'{key.shape}.')
    return key
  if (hasattr(key, 'dtype') and hasattr(key, 'shape')
      and key.dtype == jnp.uint32 and tuple(key.shape) == (2,)):
    return jax.random.wrap_key_data(jnp.asarray(key))
  raise ValueError(
      f'{name} must be a PRNG key (jax.random.key(seed) or '
      f'jax.random.PRNGKey(seed)) or an int seed, got {key!r}.')


def as_array(name: str, x: Any) -> jax.Array:
  """Returns `x` as a JAX array (lists and scalars converted), else raises.

  Raises:
    ValueError: naming `name` if `x` is neither an array nor a list, tuple or
      scalar.
  """
  if isinstance(x, (list, tuple, int, float, bool, np.number, np.bool_)):
    x = np.asarray(x)
  if not hasattr(x, 'shape') or not hasattr(x, 'dtype'):
    raise ValueError(f'{name} must be an array, got {type(x).__name__}.')
  return x if isinstance(x, jax.Array) else jnp.asarray(x)


def check_binary(name: str, m: Any, hint: str = '') -> jax.Array:
  """A bool or {0, 1}-valued array -> bool array (values unchecked for tracers).

  Args:
    name: the argument's name, used in the error message.
    m: the candidate mask or selection, any shape.
    hint: a sentence appended to the error message (how to get a binary
      array).
  Returns:
    `m > 0.5` as a bool array of `m`'s shape.
  """
  m = as_array(name, m)
  if m.dtype == jnp.bool_:
    return m
  if not is_tracer(m):
    v = np.asarray(m)
    if not np.all((v == 0) | (v == 1)):
      raise ValueError(f'{name} must be binary (bool or 0/1 values)'
                       f'{"; " + hint if hint else "."}')
  return m > 0.5


def check_probability(name: str, value: Any, *, open_right: bool = True
                      ) -> float:
  """Checks a probability in (0, 1) (or (0, 1] if not `open_right`)."""
  v = np.asarray(value)
  if v.size != 1 or not np.isfinite(v):
    raise ValueError(f'{name} must be a number in (0, 1), got {value!r}.')
  v = float(v)
  if not (0.0 < v < 1.0 or (v == 1.0 and not open_right)):
    interval = '(0, 1)' if open_right else '(0, 1]'
    raise ValueError(f'{name} must be in {interval}, got {value!r}.')
  return v


def check_labels(name: str, y: Any, n: int, num_classes: int | None = None
                 ) -> tuple[jax.Array, int, bool]:
  """Checks classification targets: int labels `[n]` or soft targets `[n, c]`.

  Args:
    name: the argument's name, used in error messages.
    y: int class indices `[n]` (>= 0) or non-negative float targets `[n, c]`
      (e.g. a model's probabilities).
    n: the number of rows `y` must have.
    num_classes: c if known; None = from `y` (max label + 1, at least 2; or
      the number of columns of soft targets).
  Returns:
    `(labels, num_classes, soft)`: int32 labels `[n]` or the soft targets
    `[n, c]`, the number of classes, and whether the targets are soft.
  """
  y = as_array(name, y)
  if y.ndim == 1 and jnp.issubdtype(y.dtype, jnp.integer):
    if y.shape[0] != n:
      raise ValueError(f'{name} must have {n} rows, got shape {y.shape}.')
    if not is_tracer(y):
      lo, hi = int(np.min(np.asarray(y))), int(np.max(np.asarray(y)))
      if lo < 0:
        raise ValueError(f'{name} must hold class indices >= 0, got {lo}.')
      c = num_classes if num_classes is not None else max(hi + 1, 2)
      if hi >= c:
        raise ValueError(f'{name} holds class {hi} >= num_classes={c}.')
    else:
      if num_classes is None:
        raise ValueError('num_classes is required for traced int labels.')
      c = num_classes
    return y.astype(jnp.int32), int(c), False
  if y.ndim == 2 and jnp.issubdtype(y.dtype, jnp.floating):
    if y.shape[0] != n:
      raise ValueError(f'{name} must have {n} rows, got shape {y.shape}.')
    check_array(name, y, finite=True)
    if num_classes is not None and y.shape[1] != num_classes:
      raise ValueError(f'{name} has {y.shape[1]} columns but num_classes='
                       f'{num_classes}.')
    if not is_tracer(y) and np.any(np.asarray(y) < 0):
      raise ValueError(f'{name} (soft targets) must be non-negative.')
    return y, int(y.shape[1]), True
  raise ValueError(f'{name} must be int class labels [n] or soft targets '
                   f'float [n, num_classes], got {y.dtype} {y.shape}.')


def check_model_input(box: Any, x: Any, name: str = 'x') -> jax.Array:
  """`x` as an array accepted by the black box `box`, with at least one row.

  Args:
    box: a `blackbox.BlackBox` (its `check_input` checks the shape
      `[batch, *input_shape]`, finiteness and the input dtype).
    x: the candidate batch.
    name: the argument's name, used in error messages.
  Returns:
    `x` as an array `[batch >= 1, *input_shape]`.
  """
  x = as_array(name, x)
  box.check_input(x, name)
  if x.shape[0] == 0:
    raise ValueError(f'{name} must hold at least one example.')
  return x


def check_target_range(name: str, target: Any, num_outputs: int,
                       *, model: str = 'the black box') -> None:
  """Raises a ValueError naming `name` if a class index is outside `[0, c)`.

  Negative indices are rejected too: `target=-1` is never "the last class".
  Skipped for tracers (the values are unknown under jit).

  Args:
    name: the argument's name, used in the error message.
    target: an int or an int array of class indices (or None: no check).
    num_outputs: `c`, the number of model outputs.
    model: how the message names the model.
  """
  if target is None or is_tracer(target):
    return
  t = np.asarray(target)
  if t.dtype == bool or not np.issubdtype(t.dtype, np.integer):
    raise ValueError(f'{name} must hold integer class indices, got {t.dtype}.')
  if t.size and (t.min() < 0 or t.max() >= num_outputs):
    raise ValueError(f'{name} must be in [0, {num_outputs}) for {model} '
                     f'({num_outputs} outputs), got values in [{t.min()}, '
                     f'{t.max()}].')


def check_finite_outputs(values: Any, *, method: str,
                         where: str = 'x') -> None:
  """Raises a ValueError when a black box returned NaN or inf.

  The one rule for non-finite model outputs (`nan_policy='raise'`, the only
  policy): an explainer or metric whose model values are NaN or inf raises
  instead of returning NaN (or zero) attributions. Skipped for tracers.

  Args:
    values: model outputs, scores or results computed from them, `[n, ...]`
      (row i belongs to example i of the explained batch).
    method: the explainer or metric, for the message.
    where: which inputs produced them ('x', 'perturbed copies of x', ...).
  Raises:
    ValueError: counting the rows with non-finite values and naming the first.
  """
  if values is None or is_tracer(values):
    return
  v = np.asarray(values)
  if not np.issubdtype(v.dtype, np.inexact):
    return
  bad = ~np.isfinite(v.reshape(v.shape[0], -1)).all(-1) if v.ndim else (
      ~np.isfinite(v)[None])
  if bad.any():
    rows = np.flatnonzero(bad)
    raise ValueError(
        f'{method}: the model returned NaN or inf on {where} for {rows.size} '
        f'of {bad.size} rows (first: row {int(rows[0])}); the explanation '
        'would be NaN or wrong. Fix the model or drop those rows.')
