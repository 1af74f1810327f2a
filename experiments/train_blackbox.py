r"""Trains a black box (MLP / CNN / ViT / text CNN) for the explainer experiments.

  python -m experiments.train_blackbox \
      --config=experiments/configs/train_blackbox.py:fashion_mnist \
      --workdir=/tmp/bb_fmnist

Writes config.json, metrics.json, figures/, checkpoints/ into --workdir and
prints the test accuracy. Rerunning with the same workdir resumes (or returns
at once if training had finished). Later binaries restore the trained box with
`restore_blackbox(workdir)`.
"""

from __future__ import annotations

import time
from typing import Any

from absl import app
from absl import logging
import jax
import ml_collections
import numpy as np

from experiments import common
from xai_jax import blackbox as bb
from xai_jax import models
from xai_jax import train



def targets(ds: Any) -> np.ndarray:
  """Soft targets P(Y|X) where the data set has them, else the labels."""
  return ds.probs if (ds.probs is not None and ds.ground_truth is not None
                      and ds.x.ndim == 2) else ds.y


def run(config: ml_collections.ConfigDict, workdir: str
        ) -> tuple[bb.BlackBox, dict[str, float]]:
  """Trains (or resumes) the black box of `config`; returns it and metrics."""
  common.prepare_workdir(workdir, config)
  train_ds, test_ds = common.load_data(config)
  logging.info('data %s: %d train, %d test rows, x %s', config.data,
               len(train_ds), len(test_ds), train_ds.x.shape[1:])
  t0 = time.time()
  box, last = models.fit_classifier(
      config.model, config.model_kwargs.to_dict(), train_ds.x,
      targets(train_ds), key=config.seed, num_steps=config.num_steps,
      batch_size=config.batch_size,
      optimizer={'optimizer': config.optimizer,
                 'learning_rate': config.learning_rate,
                 'schedule': config.get('schedule', 'constant'),
                 'warmup_steps': config.get('warmup_steps', 0),
                 'num_steps': config.num_steps},
      workdir=workdir, log_every=config.log_every,
      checkpoint_every=config.checkpoint_every)
  seconds = time.time() - t0
  metrics = {
      'test_accuracy': models.accuracy(box, test_ds.x, targets(test_ds)),
      'train_accuracy': last.get('accuracy', float('nan')),
      'train_seconds': seconds,
      'num_params': float(sum(np.size(p) for p in
                              jax.tree.leaves(box.params))),
      'num_train': float(len(train_ds)),
      'num_test': float(len(test_ds)),
  }
  train.write_metrics_json(workdir, metrics)
  _save_figure(box, test_ds, workdir)
  return box, metrics


def restore_blackbox(workdir: str) -> bb.BlackBox:
  """The trained black box saved in `workdir` by this binary."""
  import json  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  with open(os.path.join(workdir, 'config.json')) as f:
    config = ml_collections.ConfigDict(json.load(f))
  kwargs = {k: tuple(v) if isinstance(v, list) else v
            for k, v in config.model_kwargs.to_dict().items()}
  module = models.make_model(config.model, **kwargs)
  shape = _input_shape(config)
  dtype = models.input_dtype(config.model)
  dummy = np.zeros((1, *shape), np.int32 if dtype == 'int' else np.float32)
  params = module.init(jax.random.key(0), dummy)['params']
  tx = train.make_optimizer({'optimizer': config.optimizer,
                             'learning_rate': config.learning_rate},
                            num_steps=config.num_steps)
  target = train.create_train_state(params, tx, key=0)
  state = train.restore_latest(workdir, target)
  if state is None:
    raise FileNotFoundError(f'No checkpoint in {workdir}/checkpoints; run '
                            'experiments.train_blackbox with this workdir.')
  return bb.from_linen(module, {'params': state.params}, input_shape=shape,
                       input_dtype=dtype, name=config.model)


def _input_shape(config: ml_collections.ConfigDict) -> tuple[int, ...]:
  if config.data in common.TABULAR:
    return (10,)
  if config.data in ('images', 'fashion_mnist'):
    return (28, 28, 1)
  return (config.seq_len,)


def _save_figure(box: bb.BlackBox, ds: Any, workdir: str) -> None:
  import os  # pylint: disable=g-import-not-at-top
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  n = min(len(ds), 2000)
  pred = np.asarray(box.predict(np.asarray(ds.x[:n])))
  y = np.asarray(ds.y[:n])
  c = box.num_outputs
  cm = np.zeros((c, c))
  np.add.at(cm, (y, pred), 1)
  fig, ax = plt.subplots(figsize=(4, 4))
  ax.imshow(cm / np.maximum(cm.sum(1, keepdims=True), 1), cmap='Blues',
            vmin=0, vmax=1)
  ax.set_xlabel('predicted')
  ax.set_ylabel('label')
  ax.set_title(f'{box.name}: accuracy {np.mean(pred == y):.3f} (n={n})')
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, 'figures', 'confusion.png'), dpi=100)
  plt.close(fig)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
  config = _CONFIG.value
  _, metrics = run(config, _WORKDIR.value)
  print(common.format_table(metrics, title=f'train_blackbox '
                            f'{config.variant}: final metrics'))


def _define_flags() -> None:
  """Defines the binary's flags (only when run as a program)."""
  global _CONFIG, _WORKDIR
  _CONFIG, _WORKDIR = common.define_config_flags(
      'experiments/configs/train_blackbox.py:switch')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
