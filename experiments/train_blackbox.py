r"""Trains a black box (MLP / CNN / ViT / text CNN) for the explainer experiments.

  python -m experiments.train_blackbox \
      --config=experiments/configs/train_blackbox.py:fashion_mnist \
      --workdir=/tmp/bb_fmnist

Writes config.json, metrics.json, figures/, checkpoints/ into --workdir and
prints the test accuracy. Rerunning with the same workdir resumes (or returns
at once if training had finished). Later binaries restore the trained box with
`common.restore_blackbox(workdir)`.
"""

from __future__ import annotations

import os

from absl import app
from absl import logging
import jax
import ml_collections
import numpy as np

from experiments import common
from xai_jax import blackbox as bb
from xai_jax import train
from xai_jax import viz

restore_blackbox = common.restore_blackbox


def run(config: ml_collections.ConfigDict, workdir: str
        ) -> tuple[bb.BlackBox, dict[str, float]]:
  """Trains (or resumes) the black box of `config`; returns it and metrics."""
  common.prepare_workdir(workdir, config)
  train_ds, test_ds = common.load_data(
      config, num_classes=config.model_kwargs.num_classes)
  logging.info('data %s: %d train, %d test rows, x %s', config.data,
               len(train_ds), len(test_ds), train_ds.x.shape[1:])
  box, info = common.fit_blackbox(
      config.model, config.model_kwargs.to_dict(), config, train_ds,
      test_ds, seed=config.seed, workdir=workdir)
  metrics = {
      **info,
      'num_params': float(sum(np.size(p) for p in
                              jax.tree.leaves(box.params))),
      'num_train': float(len(train_ds)),
      'num_test': float(len(test_ds)),
  }
  train.write_metrics_json(workdir, metrics)
  n = min(len(test_ds), 2000)
  pred = np.asarray(box.predict(np.asarray(test_ds.x[:n])))
  y = np.asarray(test_ds.y[:n])
  fig = viz.confusion(y, pred, box.num_outputs,
                      title=f'{box.name}: accuracy {np.mean(pred == y):.3f} '
                      f'(n={n})')
  viz.save(fig, os.path.join(workdir, 'figures', 'confusion.png'))
  return box, metrics


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
