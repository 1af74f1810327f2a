"""The wiring shared by the experiment binaries.

One data loader (`load_data`), one black-box trainer and loader
(`fit_blackbox`, `restore_blackbox`, on `models.fit_classifier`), one
targets rule (`targets`: soft P(Y|X) or labels), one way to time a call
(`time_twice`, on `xai_jax.timing`), and the workdir, flag and table
helpers.
"""

from __future__ import annotations

import json
import logging as py_logging
import os
from typing import Any, Callable, Mapping

from absl import flags
from absl import logging
import jax
import ml_collections
from ml_collections import config_flags
import numpy as np

from xai_jax import blackbox as bb
from xai_jax import models
from xai_jax import timing
from xai_jax import train
from xai_jax.data import synthetic

TABULAR = tuple(synthetic.TABULAR)
REAL_TABULAR = ('breast_cancer',)
IMAGE_DATA = ('images', 'fashion_mnist')
TEXT_DATA = ('text', 'imdb')
IMAGE_SHAPE = (28, 28, 1)


# ----------------------------------------------------------------------------
# Data.
# ----------------------------------------------------------------------------


def modality_of(data: str) -> str:
  """'tabular', 'image' or 'text' for a data set name (ValueError if unknown)."""
  if data in TABULAR or data in REAL_TABULAR:
    return 'tabular'
  if data in IMAGE_DATA:
    return 'image'
  if data in TEXT_DATA:
    return 'text'
  raise ValueError(f'config.data={data!r} is not supported; expected one of '
                   f'{list(TABULAR + REAL_TABULAR + IMAGE_DATA + TEXT_DATA)}.')


def load_data(config: ml_collections.ConfigDict, *, num_classes: int = 4
              ) -> tuple[synthetic.Dataset, synthetic.Dataset]:
  """Train and test `Dataset`s of `config.data`, seeded by `config.seed`.

  Synthetic sets are generated (train from seed `2 * seed`, test from
  `2 * seed + 1`: they never overlap); Fashion-MNIST is read from its IDX
  files (`config.data_dir` or the Debian default; `config.classes` keeps a
  class pair); 'imdb' comes from tfds (`config.data_dir`, prepared
  beforehand: nothing is downloaded). Optional fields read: data_dir,
  classes, patch (images), seq_len, vocab_size, num_planted (text),
  tfds_name (imdb).

  Args:
    config: the experiment config (data, seed, num_train, num_test, ...).
    num_classes: classes of the synthetic images.
  Returns:
    `(train, test)` with `num_train` and `num_test` rows (Fashion-MNIST
    pairs: the pair's rows among them; breast_cancer: scikit-learn's 569 rows
    split 75/25 by `seed`, whatever num_train and num_test say).
  """
  name, get = config.data, config.get
  s_train, s_test = 2 * config.seed, 2 * config.seed + 1
  n_train, n_test = config.num_train, config.num_test
  if name in TABULAR:
    return (synthetic.make_tabular(name, n_train, s_train),
            synthetic.make_tabular(name, n_test, s_test))
  if name == 'breast_cancer':
    from xai_jax.data import sklearn_sets  # pylint: disable=g-import-not-at-top
    return (sklearn_sets.load_breast_cancer('train', config.seed),
            sklearn_sets.load_breast_cancer('test', config.seed))
  if name == 'images':
    kw = dict(num_classes=num_classes, patch=get('patch', None) or 4)
    return (synthetic.make_images(n_train, s_train, **kw),
            synthetic.make_images(n_test, s_test, **kw))
  if name == 'text':
    kw = {f: get(f) for f in ('seq_len', 'vocab_size', 'num_planted')
          if get(f) is not None}
    return (synthetic.make_text(n_train, s_train, **kw),
            synthetic.make_text(n_test, s_test, **kw))
  if name == 'fashion_mnist':
    from xai_jax.data import fashion_mnist  # pylint: disable=g-import-not-at-top
    d = get('data_dir', '') or None
    tr = fashion_mnist.load_fashion_mnist('train', data_dir=d).subset(
        slice(0, n_train))
    te = fashion_mnist.load_fashion_mnist('test', data_dir=d).subset(
        slice(0, n_test))
    if get('classes', ()):
      classes = tuple(config.classes)
      if len(classes) != 2:
        raise ValueError(f'config.classes must be two class ids, got '
                         f'{classes!r}.')
      tr, te = (fashion_mnist.class_pair(tr, classes),
                fashion_mnist.class_pair(te, classes))
    return tr, te
  if name == 'imdb':
    from xai_jax.data import tfds as tfds_data  # pylint: disable=g-import-not-at-top
    if not get('data_dir', ''):
      raise ValueError('config.data_dir must point at a tfds data_dir holding '
                       'a prepared imdb_reviews (no downloads are made).')
    kw = dict(data_dir=config.data_dir, task='text', seq_len=config.seq_len)
    tfds_name = get('tfds_name', 'imdb_reviews')
    tr = tfds_data.load_tfds(tfds_name, 'train', vocab_size=config.vocab_size,
                             num_examples=n_train, **kw)
    te = tfds_data.load_tfds(tfds_name, 'test', vocab=tr.meta['vocab'],
                             num_examples=n_test, **kw)
    return tr, te
  raise ValueError(f'Unknown data set config.data={name!r}.')


def targets(ds: synthetic.Dataset) -> np.ndarray:
  """What a black box is trained on: soft targets P(Y|X) `[n, c]` for the
  tabular sets (float `[n, d]` inputs with probabilities), else labels `[n]`."""
  x = np.asarray(ds.x)
  if ds.probs is not None and x.ndim == 2 and np.issubdtype(x.dtype,
                                                            np.floating):
    return np.asarray(ds.probs)
  return np.asarray(ds.y)


def eval_labels(ds: synthetic.Dataset) -> np.ndarray:
  """Int labels `[n]` to score accuracy against (tabular: argmax P(Y|X))."""
  t = targets(ds)
  return np.argmax(t, -1).astype(np.int32) if t.ndim == 2 else t


def input_shape(config: ml_collections.ConfigDict) -> tuple[int, ...]:
  """The shape of one input of `config.data` (for restoring a model)."""
  modality = modality_of(config.data)
  if config.data == 'breast_cancer':
    return (30,)
  if modality == 'tabular':
    return (synthetic.NUM_TABULAR_FEATURES,)
  if modality == 'image':
    return IMAGE_SHAPE
  return (int(config.seq_len),)


# ----------------------------------------------------------------------------
# Black boxes.
# ----------------------------------------------------------------------------


def optimizer_config(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The `train.make_optimizer` fields of a black-box training config."""
  return {'optimizer': config.optimizer,
          'learning_rate': config.learning_rate,
          'schedule': config.get('schedule', 'constant'),
          'warmup_steps': config.get('warmup_steps', 0),
          'num_steps': config.num_steps}


def fit_blackbox(model: str, model_kwargs: Mapping[str, Any],
                 config: ml_collections.ConfigDict,
                 train_ds: synthetic.Dataset, test_ds: synthetic.Dataset, *,
                 seed: int, workdir: str | None
                 ) -> tuple[bb.BlackBox, dict[str, float]]:
  """Trains a registry model as the black box, or resumes it from `workdir`.

  `models.fit_classifier` on `targets(train_ds)` (soft P(Y|X) for the
  tabular sets), checkpoints in `<workdir>/checkpoints` (None: none).

  Args:
    model: registry name ('mlp', 'cnn', 'vit', 'text_cnn').
    model_kwargs: the module's fields (num_classes, hidden, ...).
    config: optimizer, learning_rate, [schedule, warmup_steps], batch_size,
      num_steps, log_every, checkpoint_every.
    train_ds, test_ds: the data.
    seed: initialisation and batch order.
    workdir: the model's checkpoint folder, or None.
  Returns:
    `(box, info)` with info keys train_seconds, train_accuracy (last logged
    batch) and test_accuracy (against `eval_labels(test_ds)`).
  """
  with timing.timed() as t:
    box, last = models.fit_classifier(
        model, dict(model_kwargs), np.asarray(train_ds.x), targets(train_ds),
        key=seed, num_steps=config.num_steps, batch_size=config.batch_size,
        optimizer=optimizer_config(config), workdir=workdir,
        log_every=config.log_every, checkpoint_every=config.checkpoint_every)
  info = {'train_seconds': t.wall,
          'train_accuracy': float(last.get('accuracy', np.nan)),
          'test_accuracy': models.accuracy(box, np.asarray(test_ds.x),
                                           eval_labels(test_ds))}
  logging.info('black box %s: test accuracy %.4f (%.1f s)', model,
               info['test_accuracy'], t.wall)
  return box, info


def restore_blackbox(workdir: str) -> bb.BlackBox:
  """The black box that `experiments.train_blackbox` trained into `workdir`.

  Reads `<workdir>/config.json` (model, model_kwargs, optimizer, data) and
  the latest checkpoint. Raises FileNotFoundError without a checkpoint.
  """
  config = ml_collections.ConfigDict(read_json(
      os.path.join(workdir, 'config.json')))
  kwargs = {k: tuple(v) if isinstance(v, list) else v
            for k, v in config.model_kwargs.to_dict().items()}
  module = models.make_model(config.model, **kwargs)
  shape = input_shape(config)
  dtype = models.input_dtype(config.model)
  dummy = np.zeros((1, *shape), np.int32 if dtype == 'int' else np.float32)
  params = module.init(jax.random.key(0), dummy)['params']
  tx = train.make_optimizer(optimizer_config(config))
  state = train.restore_latest(workdir,
                               train.create_train_state(params, tx, key=0))
  if state is None:
    raise FileNotFoundError(f'No checkpoint in {workdir}/checkpoints; run '
                            'experiments.train_blackbox with this workdir.')
  return bb.from_linen(module, {'params': state.params}, input_shape=shape,
                       input_dtype=dtype, name=config.model)


# ----------------------------------------------------------------------------
# Timing.
# ----------------------------------------------------------------------------


def time_twice(fn: Callable[[], Any]
               ) -> tuple[Any, timing.Timing, timing.Timing]:
  """Calls `fn()` twice (the first call compiles), blocking on each result.

  Returns `(second result, first Timing, second Timing)`: the second call
  is the compiled speed.
  """
  with timing.timed() as first:
    jax.block_until_ready(fn())
  with timing.timed() as second:
    out = jax.block_until_ready(fn())
  return out, first, second


# ----------------------------------------------------------------------------
# Workdir, flags, tables.
# ----------------------------------------------------------------------------


class _DropLibraryInfo(py_logging.Filter):
  """Drops INFO/DEBUG records of orbax (its checkpoint chatter) from absl logs."""

  def filter(self, record: py_logging.LogRecord) -> bool:
    return record.levelno >= py_logging.WARNING or 'orbax' not in record.pathname


def quiet_library_logs() -> None:
  """Keeps the binaries' progress lines readable (idempotent)."""
  logger = py_logging.getLogger('absl')
  if not any(isinstance(f, _DropLibraryInfo) for f in logger.filters):
    logger.addFilter(_DropLibraryInfo())


def prepare_workdir(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Creates `workdir` (and figures/), writes `config.json`, quiets orbax logs."""
  quiet_library_logs()
  os.makedirs(os.path.join(workdir, 'figures'), exist_ok=True)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True))


def finished_metrics(workdir: str, config: ml_collections.ConfigDict
                     ) -> dict[str, Any] | None:
  """The metrics.json of a finished run of `config` in `workdir`, else None.

  Raises:
    ValueError: `workdir` holds a finished run of another config (naming
      the fields that differ).
  """
  if not os.path.exists(os.path.join(workdir, 'metrics.json')):
    return None
  mine = json.loads(config.to_json_best_effort(sort_keys=True))
  saved = read_json(os.path.join(workdir, 'config.json'))
  diff = sorted(k for k in set(saved) | set(mine) if saved.get(k) != mine.get(k))
  if diff:
    raise ValueError(f'{workdir} holds a finished run of another config '
                     f'(fields {diff} differ); use another --workdir.')
  return read_json(os.path.join(workdir, 'metrics.json'))


def read_json(path: str) -> dict[str, Any]:
  """Reads a JSON file."""
  with open(path) as f:
    return json.load(f)


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


def summarize_runs(workdirs: list[str],
                   table_fn: Callable[[dict[str, Any]], Mapping[str, Mapping]],
                   columns: tuple[str, ...],
                   claims: Callable[[list[dict[str, Any]]],
                                    Mapping[str, str]] | None = None) -> str:
  """A markdown table of mean +- std over runs (e.g. one per seed).

  Args:
    workdirs: folders of finished runs, each with a metrics.json.
    table_fn: flat metrics -> rows (name -> column -> value), the binary's
      own table.
    columns: the columns to show, in order (those present in some run).
    claims: optional `runs -> {claim: 'holding / runs'}`, one line each.
  Returns:
    the markdown table, a line with the black box's test accuracy and the
    claim lines.
  """
  runs = [read_json(os.path.join(w, 'metrics.json')) for w in workdirs]
  if not runs:
    raise ValueError('summarize needs at least one workdir.')
  tables = [table_fn(r) for r in runs]
  names = list(dict.fromkeys(n for t in tables for n in t))
  cols = [c for c in columns if any(c in t.get(n, {}) for t in tables
                                    for n in t)]
  lines = ['| method | ' + ' | '.join(cols) + ' |',
           '| --- |' + ' --- |' * len(cols)]
  for name in names:
    cells = []
    for c in cols:
      v = np.array([t[name][c] for t in tables if c in t.get(name, {})])
      cells.append('' if not v.size else f'{v.mean():.3f} ± {v.std():.3f}'
                   if v.size > 1 else f'{v[0]:.3f}')
    lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
  acc = [r.get('blackbox/test_accuracy', np.nan) for r in runs]
  lines.append(f'\n{len(runs)} run(s); black box test accuracy '
               f'{np.mean(acc):.3f} ± {np.std(acc):.3f}.')
  for claim, count in (claims(runs) if claims else {}).items():
    lines.append(f'{claim}: {count} runs')
  return '\n'.join(lines)


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
