r"""Quickstart: explain an MLP on L2X's switch data with L2X and baselines.

  python -m experiments.quickstart --workdir=/tmp/xai_jax_quickstart

What it does (a small version of `experiments.l2x` with the switch config,
under 2 minutes on 2 CPU cores):

1. generates the switch data set (L2X §4.1, 10 features; X10 = +-3 picks
   the regime: orange skin on X1..X4 or nonlinear additive on X5..X8;
   ground truth {X1..X4, X10} or {X5..X8, X10}, k = 5);
2. trains the black box, an MLP 10-200-200-2 (SELU), on the data;
3. trains L2X to explain it and selects k = 5 features of every test row;
4. explains the same rows with the baselines: random features and the top-5
   of gradient saliency, integrated gradients and KernelSHAP (exact here:
   all 2^10 - 2 coalitions);
5. prints the ground-truth table (median rank of the true features, TPR,
   FDR) with post-hoc accuracy and EVAL-X accuracy, and saves
   `figures/selection_frequency.png` (how often each feature is selected,
   per regime) in --workdir.

Expected result (seed 0, 2 CPU cores; docs/l2x.md#quickstart has the whole
table): median rank of the true features L2X 3.41, saliency 4.27,
integrated gradients 4.54, KernelSHAP 4.63, random 5.47 (optimum 3.0).

The full paper protocol (10^6 training rows, 3 seeds, every sampler) is
`python -m experiments.l2x --config=experiments/configs/l2x.py:switch`; see
docs/l2x.md.
"""

from __future__ import annotations

import os
import time

from absl import app
from absl import flags
import ml_collections

from experiments import l2x as l2x_exp
from experiments.configs import l2x as l2x_configs
from xai_jax import timing


def quickstart_config(seed: int = 0, sampler: str = 'concrete'
                      ) -> ml_collections.ConfigDict:
  """The switch config at quickstart size (documented values below)."""
  c = l2x_configs.get_config('switch')
  c.seed = seed
  c.sampler = sampler
  c.blackbox = 'mlp'                      # an MLP trained on the data
  c.num_train = 100_000                   # n (paper: 10^6)
  c.num_test = 10_000                     # explained rows (paper: 10^5)
  c.blackbox_train.num_steps = 1500       # MLP: 1500 steps of 256 rows
  c.num_steps = 1000                      # L2X: 10 epochs of batch 1000
  c.evalx.num_steps = 1000                # EVAL-X evaluator steps
  c.baseline_num_explain.integrated_gradients = 2000
  c.baseline_num_explain.kernel_shap = 500
  c.log_every = 250
  return c


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
  t0 = time.perf_counter()
  config = quickstart_config(_SEED.value, _SAMPLER.value)
  metrics = l2x_exp.run(config, _WORKDIR.value)
  print(f'\nSwitch: optimum median rank 3.0 (the 5 true features ranked '
        f'1..5), random ~5.5. Black box test accuracy '
        f'{metrics["blackbox/test_accuracy"]:.3f}; L2X selects X10 in '
        f'{metrics["switch_selects_x10"]:.0%} of the rows.')
  print(f'Figure: {os.path.join(_WORKDIR.value, "figures", "selection_frequency.png")}')
  print(f'Total wall time {time.perf_counter() - t0:.1f} s (load average '
        f'{timing.load_average():.1f}).')


def _define_flags() -> None:
  """Defines the binary's flags (only when run as a program)."""
  global _WORKDIR, _SEED, _SAMPLER
  _WORKDIR = flags.DEFINE_string('workdir', '/tmp/xai_jax_quickstart',
                                 'Output folder (metrics.json, figures/).')
  _SEED = flags.DEFINE_integer('seed', 0, 'Seed of every random choice.')
  _SAMPLER = flags.DEFINE_string('sampler', 'concrete',
                                 "L2X's relaxed top-k: concrete (the paper), "
                                 'subset, straight_through or perturbed.')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
