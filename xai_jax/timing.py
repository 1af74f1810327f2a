"""Timing of JAX code: wall clock, CPU time and the compile time inside it.

    from xai_jax import timing
    with timing.timed() as t:
      jax.block_until_ready(l2x.fit(0, box, x, k=4))
    t.wall, t.compile, t.excl_compile, t.cpu

The compile time is the union of the time spans of JAX's compile events
(`jax.monitoring`: jaxpr tracing, lowering to MLIR, XLA compilation) that
fall inside the block; nested jit traces are counted once. Block on the
results inside the block (`jax.block_until_ready`): JAX dispatches
asynchronously.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from typing import Any, Iterator, Sequence

import jax

COMPILE_EVENTS = ('/jax/core/compile/jaxpr_trace_duration',
                  '/jax/core/compile/jaxpr_to_mlir_module_duration',
                  '/jax/core/compile/backend_compile_duration')
_ACTIVE: list[list[tuple[float, float]]] = []
_LISTENING: list[bool] = []


def _on_span(event: str, start: float, end: float, **kwargs: Any) -> None:
  del kwargs
  if event in COMPILE_EVENTS:
    for spans in _ACTIVE:
      spans.append((start, end))


def _union_seconds(spans: Sequence[tuple[float, float]]) -> float:
  """Length of the union of time intervals `(start, end)`."""
  total, cur_s, cur_e = 0.0, None, None
  for s, e in sorted(spans):
    if cur_e is None or s > cur_e:
      if cur_e is not None:
        total += cur_e - cur_s
      cur_s, cur_e = s, e
    else:
      cur_e = max(cur_e, e)
  if cur_e is not None:
    total += cur_e - cur_s
  return total


@dataclasses.dataclass
class Timing:
  """Seconds of a timed block.

  Attributes:
    wall: wall-clock seconds.
    cpu: process CPU seconds (all threads).
    compile: seconds of jit tracing, lowering and XLA compilation inside the
      block (`<= wall`).
  """

  wall: float = 0.0
  cpu: float = 0.0
  compile: float = 0.0

  @property
  def excl_compile(self) -> float:
    """`wall - compile` (>= 0)."""
    return max(self.wall - self.compile, 0.0)


@contextlib.contextmanager
def timed() -> Iterator[Timing]:
  """Times a block: wall clock, process CPU time and JAX compile time.

  Yields a `Timing` filled in when the block exits. Timers nest: each
  counts the compile events inside its own block.
  """
  if not _LISTENING:
    jax.monitoring.register_event_time_span_listener(_on_span)
    _LISTENING.append(True)
  spans: list[tuple[float, float]] = []
  _ACTIVE.append(spans)
  out = Timing()
  w0, c0 = time.perf_counter(), time.process_time()
  try:
    yield out
  finally:
    out.wall = time.perf_counter() - w0
    out.cpu = time.process_time() - c0
    for i, active in enumerate(_ACTIVE):  # by identity: nested timers
      if active is spans:                 # may hold equal lists
        del _ACTIVE[i]
        break
    out.compile = min(_union_seconds(spans), out.wall)


def load_average() -> float:
  """The 1-minute load average of the machine (NaN where unavailable)."""
  try:
    return float(os.getloadavg()[0])
  except OSError:
    return float('nan')


__all__ = ['COMPILE_EVENTS', 'Timing', 'load_average', 'timed']
