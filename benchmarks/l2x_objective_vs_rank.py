"""Does the L2X objective prefer the ground-truth selection? (tabular sets)

Fixes one data set (training rows from seed `2 * data_seed`, test rows from
`2 * data_seed + 1`, as the L2X experiments) and fits L2X with several training
keys. For each fit it prints, on the test rows:

  * `ce`: the cross-entropy of q on the hard top-k selection against the true
    P(Y|X), i.e. minus the L2X objective (L2X Eq. 6 with V the hard k-hot
    mask; lower = a better fit of the bound);
  * the median rank of the ground-truth features (L2X's metric on the k-hot
    selection) and the TPR;
  * how often each feature is selected.

If a fit that misses a true feature reaches a *lower* `ce` than fits that
select all of them, the objective itself does not prefer the ground truth:
the selection pattern carries label information to a jointly trained
approximator (the point of REAL-X, Jethani et al. 2021). With
`--approximator blackbox` q is the frozen black box on x_S and cannot read
the pattern.

Run from the repository root:

  python benchmarks/l2x_objective_vs_rank.py [--set nonlinear_additive]
      [--data_seed 1] [--keys 0,1,2,3,4,5] [--sampler subset] [--tau 0.5]
      [--batch_size 250] [--approximator learned]

About 15 s per key on 2 CPU cores (10^6 training rows, 10^5 test rows).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import numpy as np
import optax

from xai_jax import l2x
from xai_jax import metrics as xm
from xai_jax.data import synthetic

SETS = ('xor', 'orange_skin', 'nonlinear_additive', 'switch')


def fit_and_score(key: int, train_ds: synthetic.Dataset,
                  test_ds: synthetic.Dataset, cfg, k: int
                  ) -> dict[str, object]:
  """One fit with training key `key`; its test cross-entropy and ranks."""
  box = synthetic.oracle_blackbox(train_ds.name)
  t0 = time.perf_counter()
  model = l2x.fit(jax.random.key(key), box, train_ds.x, k=k, config=cfg)
  jax.block_until_ready(model.params)
  secs = time.perf_counter() - t0
  mask = l2x.explain(model, test_ds.x).mask
  mask = np.asarray(mask, np.float32)
  logits = l2x.approximator_logits(model, test_ds.x)
  ce = float(jnp.mean(optax.softmax_cross_entropy(
      logits, jnp.asarray(test_ds.probs))))
  mr = xm.median_rank(mask, test_ds.ground_truth, jax.random.key(2))
  tf = xm.tpr_fdr_at_k(None, test_ds.ground_truth, selection=mask > 0.5)
  return {'key': key, 'ce': ce, 'median_rank': float(mr['median_rank_mean']),
          'tpr': float(tf['tpr_mean']), 'freq': mask.mean(0), 'fit_s': secs}


def main(argv=None) -> list[dict[str, object]]:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--set', default='nonlinear_additive', choices=SETS)
  p.add_argument('--data_seed', type=int, default=1)
  p.add_argument('--keys', default='0,1,2,3,4,5')
  p.add_argument('--sampler', default='subset')
  p.add_argument('--tau', type=float, default=0.5)
  p.add_argument('--batch_size', type=int, default=250)
  p.add_argument('--approximator', default='learned',
                 choices=('learned', 'blackbox'))
  p.add_argument('--num_train', type=int, default=10**6)
  p.add_argument('--num_test', type=int, default=10**5)
  args = p.parse_args(argv)
  try:
    keys = [int(s) for s in args.keys.split(',') if s]
  except ValueError:
    raise SystemExit(f'--keys must be comma-separated ints, got '
                     f'{args.keys!r}.') from None
  if not keys:
    raise SystemExit('--keys is empty.')
  train_ds = synthetic.make_tabular(args.set, args.num_train,
                                    2 * args.data_seed)
  test_ds = synthetic.make_tabular(args.set, args.num_test,
                                   2 * args.data_seed + 1)
  cfg = l2x.default_config('tabular')
  cfg.sampler, cfg.tau, cfg.batch_size = args.sampler, args.tau, \
      args.batch_size
  cfg.approximator = args.approximator
  cfg.activation = 'selu' if args.set in ('nonlinear_additive', 'switch') \
      else 'relu'
  cfg.log_every = 10**9
  k = synthetic.TABULAR_K[args.set]
  print(f'{args.set}, data seed {args.data_seed}; sampler {args.sampler}, '
        f'tau {args.tau}, batch {args.batch_size}, approximator '
        f'{args.approximator}; k = {k}.\n')
  print('| key | test CE (-objective) | median rank | TPR | selection '
        'frequency X0..X9 | fit s |')
  print('|---|---|---|---|---|---|')
  rows = []
  for key in keys:
    r = fit_and_score(key, train_ds, test_ds, cfg, k)
    rows.append(r)
    freq = ' '.join(f'{f:.2f}' for f in r['freq'])
    print(f"| {key} | {r['ce']:.4f} | {r['median_rank']:.3f} | "
          f"{r['tpr']:.3f} | {freq} | {r['fit_s']:.1f} |", flush=True)
  return rows


if __name__ == '__main__':
  main()
