"""Argument checks shared by every public function.

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
