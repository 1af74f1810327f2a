"""Helpers shared by the experiment binaries: data, workdir files, tables,
timing (wall, CPU and compile seconds of a block)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import time
from typing import Any, Iterator, Mapping, Sequence

from absl import flags
import jax
import ml_collections
from ml_collections import config_flags
import numpy as np

from xai_jax.data import synthetic

TABULAR = ('xor', 'orange_skin', 'nonlinear_additive', 'switch')


def load_data(config: ml_collections.ConfigDict):
  """Train and test `Dataset`s for `config.data` (seeded by `config.seed`).

  Synthetic sets are generated (train from seed `2*seed`, test from
  `2*seed + 1`, so they never overlap); Fashion-MNIST is read from its IDX
  files (`config.data_dir` or the Debian default); 'imdb' comes from tfds
  (`config.data_dir`, prepared beforehand: nothing is downloaded).
  """
  name = config.data
  s_train, s_test = 2 * config.seed, 2 * config.seed + 1
  if name in TABULAR:
    return (synthetic.make_tabular(name, config.num_train, s_train),
            synthetic.make_tabular(name, config.num_test, s_test))
  if name == 'images':
    return (synthetic.make_images(config.num_train, s_train,
                                  num_classes=config.model_kwargs.num_classes),
            synthetic.make_images(config.num_test, s_test,
                                  num_classes=config.model_kwargs.num_classes))
  if name == 'text':
    kw = dict(seq_len=config.seq_len, vocab_size=config.vocab_size)
    return (synthetic.make_text(config.num_train, s_train, **kw),
            synthetic.make_text(config.num_test, s_test, **kw))
  if name == 'fashion_mnist':
    from xai_jax.data import fashion_mnist  # pylint: disable=g-import-not-at-top
    d = config.data_dir or None
    tr = fashion_mnist.load_fashion_mnist('train', data_dir=d)
    te = fashion_mnist.load_fashion_mnist('test', data_dir=d)
    return tr.subset(slice(0, config.num_train)), te.subset(
        slice(0, config.num_test))
  if name == 'imdb':
    from xai_jax.data import tfds as tfds_data  # pylint: disable=g-import-not-at-top
    if not config.data_dir:
      raise ValueError('config.data_dir must point at a tfds data_dir holding '
                       'a prepared imdb_reviews (no downloads are made).')
    tr = tfds_data.load_tfds('imdb_reviews', 'train', data_dir=config.data_dir,
                             task='text', seq_len=config.seq_len,
                             vocab_size=config.vocab_size)
    te = tfds_data.load_tfds('imdb_reviews', 'test', data_dir=config.data_dir,
                             task='text', seq_len=config.seq_len,
                             vocab=tr.meta['vocab'])
    return tr, te
  raise ValueError(f'Unknown data set config.data={name!r}.')


class _DropLibraryInfo(logging.Filter):
  """Drops INFO/DEBUG records of orbax (its checkpoint chatter) from absl logs."""

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or 'orbax' not in record.pathname


def quiet_library_logs() -> None:
  """Keeps the binaries' progress lines readable (idempotent)."""
  logger = logging.getLogger('absl')
  if not any(isinstance(f, _DropLibraryInfo) for f in logger.filters):
    logger.addFilter(_DropLibraryInfo())


def prepare_workdir(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Creates `workdir` (and figures/), writes `config.json`, quiets orbax logs."""
  quiet_library_logs()
  os.makedirs(os.path.join(workdir, 'figures'), exist_ok=True)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True))


def format_table(rows: Mapping[str, Mapping[str, Any]] | Mapping[str, Any],
                 title: str = '') -> str:
  """A plain-text table: one row per key, one column per metric."""
  if rows and not isinstance(next(iter(rows.values())), Mapping):
    rows = {k: {'value': v} for k, v in rows.items()}
  cols: list[str] = []
  for r in rows.values():
    cols += [c for c in r if c not in cols]
  fmt = lambda v: f'{v:.4g}' if isinstance(v, (float, np.floating)) else str(v)
  width = [max(len(c), *(len(fmt(r.get(c, ''))) for r in rows.values()))
           for c in cols]
  first = max([len(k) for k in rows] + [6])
  lines = [title] if title else []
  lines.append(' ' * first + ' | ' + ' | '.join(
      c.rjust(w) for c, w in zip(cols, width)))
  lines.append('-' * len(lines[-1]))
  for k, r in rows.items():
    lines.append(k.ljust(first) + ' | ' + ' | '.join(
        fmt(r.get(c, '')).rjust(w) for c, w in zip(cols, width)))
  return '\n'.join(lines)


def read_json(path: str) -> dict[str, Any]:
  """Reads a JSON file."""
  with open(path) as f:
    return json.load(f)


def define_config_flags(default_config: str, *, workdir_required: bool = True
                        ) -> tuple[Any, Any]:
  """Defines a binary's `--config` (file:variant) and `--workdir` flags.

  Call it only when the binary runs as a program (`__main__`), so that
  importing several binaries in one process defines no flag twice.

  Returns:
    `(config_flag, workdir_flag)` holders (read `.value`).
  """
  config = config_flags.DEFINE_config_file(
      'config', default_config, 'Experiment config (file:variant).',
      lock_config=True)
  workdir = flags.DEFINE_string('workdir', None, 'Output folder.',
                                required=workdir_required)
  return config, workdir


# ----------------------------------------------------------------------------
# Timing: wall clock, CPU time, and the compile time inside a block.
# ----------------------------------------------------------------------------

_COMPILE_EVENTS = ('/jax/core/compile/jaxpr_trace_duration',
                   '/jax/core/compile/jaxpr_to_mlir_module_duration',
                   '/jax/core/compile/backend_compile_duration')
_ACTIVE_TIMERS: list[list[tuple[float, float]]] = []
_LISTENING = []


def _on_span(event: str, start: float, end: float, **kwargs: Any) -> None:
  del kwargs
  if event in _COMPILE_EVENTS:
    for spans in _ACTIVE_TIMERS:
      spans.append((start, end))


def _union_seconds(spans: Sequence[tuple[float, float]]) -> float:
  """Length of the union of time intervals (nested jit traces counted once)."""
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
  """Wall, CPU and compile seconds of a block (`compile` <= `wall`)."""
  wall: float = 0.0
  cpu: float = 0.0
  compile: float = 0.0

  @property
  def excl_compile(self) -> float:
    return max(self.wall - self.compile, 0.0)


@contextlib.contextmanager
def timed() -> Iterator[Timing]:
  """Times a block: wall clock, process CPU time, and the time spent in jit
  tracing, lowering and XLA compilation (the union of the spans of JAX's
  compile events, `jax.monitoring`). Block on results inside the block."""
  if not _LISTENING:
    jax.monitoring.register_event_time_span_listener(_on_span)
    _LISTENING.append(True)
  spans: list[tuple[float, float]] = []
  _ACTIVE_TIMERS.append(spans)
  out = Timing()
  w0, c0 = time.perf_counter(), time.process_time()
  try:
    yield out
  finally:
    out.wall = time.perf_counter() - w0
    out.cpu = time.process_time() - c0
    for i, active in enumerate(_ACTIVE_TIMERS):  # by identity: nested
      if active is spans:                        # timers hold equal lists
        del _ACTIVE_TIMERS[i]
        break
    out.compile = min(_union_seconds(spans), out.wall)


def load_average() -> float:
  """The 1-minute load average (NaN where unavailable)."""
  try:
    return float(os.getloadavg()[0])
  except OSError:
    return float('nan')
