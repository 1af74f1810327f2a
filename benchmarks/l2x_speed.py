"""L2X speed on the four synthetic sets at the paper protocol.

For each set: `l2x.fit` on 10^6 rows (1 epoch, batch 1000: 1000 steps;
the black box is the true P(Y|X), as in L2X's code), then `l2x.explain` of
10^5 rows. Compile time is split off: the fit's jit tracing, lowering and XLA
compilation are summed from JAX's compile events (`jax.monitoring`; the
union of their time spans), and the explanation is called twice (the first
call compiles, the second is timed). Targets (issue): training <= 5 s per
set and explaining 10^5 rows <= 0.5 s on 2 CPU cores, jit time stated
separately.

Run from the repository root:

  python benchmarks/l2x_speed.py [--sets xor,orange_skin,nonlinear_additive,switch]
      [--sampler concrete] [--tau 0.1] [--batch_size 1000]
      [--steps_per_call 10] [--approximator learned] [--repeats 1]

`--approximator blackbox` times L2X with q = the explained model on x_S
(frozen; only the selector trains), the setting that meets the nonlinear
additive target.

Prints a markdown table with wall seconds, compile seconds, the process CPU
seconds (a load-independent cost: on an idle 2-core machine the wall time is
at most about this), steps/s and the 1-minute load average at each
measurement (the machine may be shared: compare with the load).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top

from xai_jax import l2x  # pylint: disable=g-import-not-at-top
from xai_jax import timing
from xai_jax.data import synthetic

SETS = ('xor', 'orange_skin', 'nonlinear_additive', 'switch')


def bench_set(name: str, sampler: str, tau: float, batch_size: int,
              num_train: int, num_test: int, seed: int,
              steps_per_call: int = 10,
              approximator: str = 'learned') -> dict[str, float]:
  """One fit + explain of one set; returns the timings."""
  train_ds = synthetic.make_tabular(name, num_train, 2 * seed)
  test_ds = synthetic.make_tabular(name, num_test, 2 * seed + 1)
  box = synthetic.oracle_blackbox(name)
  cfg = l2x.default_config('tabular')
  cfg.sampler, cfg.tau, cfg.batch_size = sampler, tau, batch_size
  cfg.steps_per_call = steps_per_call
  cfg.approximator = approximator
  cfg.activation = 'selu' if name in ('nonlinear_additive', 'switch') else \
      'relu'
  cfg.log_every = 10**9
  load0 = timing.load_average()
  with timing.timed() as t:
    model = l2x.fit(jax.random.key(seed), box, train_ds.x,
                    k=synthetic.TABULAR_K[name], config=cfg)
    jax.block_until_ready(model.params)
  load1 = timing.load_average()
  with timing.timed() as e1:
    jax.block_until_ready(l2x.explain(model, test_ds.x))
  with timing.timed() as e2:
    jax.block_until_ready(l2x.explain(model, test_ds.x))
  steps = num_train // cfg.batch_size
  return {
      'train_s': t.wall, 'compile_s': t.compile,
      'train_excl_compile_s': t.excl_compile, 'train_cpu_s': t.cpu,
      'steps_per_s': steps / max(t.excl_compile, 1e-9),
      'explain_s': e2.wall, 'explain_first_s': e1.wall,
      'explain_compile_s': max(e1.wall - e2.wall, 0.0),
      'rows_per_s': num_test / max(e2.wall, 1e-9),
      'load': 0.5 * (load0 + load1),
  }


def main(argv=None) -> list[dict[str, float]]:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--sets', default=','.join(SETS))
  p.add_argument('--sampler', default='concrete')
  p.add_argument('--tau', type=float, default=0.1)
  p.add_argument('--batch_size', type=int, default=1000)
  p.add_argument('--steps_per_call', type=int, default=10,
                 help='optimizer steps per jitted call (l2x default 10)')
  p.add_argument('--approximator', default='learned',
                 choices=('learned', 'blackbox'),
                 help="q: 'learned' (L2X) or 'blackbox' (the frozen box)")
  p.add_argument('--num_train', type=int, default=10**6)
  p.add_argument('--num_test', type=int, default=10**5)
  p.add_argument('--repeats', type=int, default=1,
                 help='fits per set (the median is reported)')
  p.add_argument('--seed', type=int, default=0)
  args = p.parse_args(argv)
  sets = [s for s in args.sets.split(',') if s]
  for s in sets:
    if s not in SETS:
      raise SystemExit(f'Unknown set {s!r}; expected names from {SETS}.')
  print(f'jax {jax.__version__} on {jax.devices()[0].platform} '
        f'({os.cpu_count()} CPUs visible); sampler {args.sampler}, tau '
        f'{args.tau}, batch {args.batch_size}, approximator '
        f'{args.approximator}, {args.steps_per_call} steps '
        f'per call; {args.num_train} training rows, {args.num_test} '
        'explained rows.\n')
  cols = ('train_s', 'compile_s', 'train_excl_compile_s', 'train_cpu_s',
          'steps_per_s', 'explain_s', 'explain_compile_s', 'rows_per_s',
          'load')
  print('| set | ' + ' | '.join(cols) + ' |')
  print('|---|' + '---|' * len(cols))
  rows = []
  t0 = time.perf_counter()
  for name in sets:
    runs = [bench_set(name, args.sampler, args.tau, args.batch_size,
                      args.num_train, args.num_test, args.seed + r,
                      args.steps_per_call, args.approximator)
            for r in range(args.repeats)]
    med = {c: statistics.median(r[c] for r in runs) for c in cols}
    # Later repeats reuse the compiled explain: report the first's.
    med['explain_compile_s'] = runs[0]['explain_compile_s']
    rows.append({'set': name, **med})
    fmt = lambda c, v: (f'{v:.0f}' if c in ('steps_per_s', 'rows_per_s')
                        else f'{v:.3f}' if c.startswith('explain') else
                        f'{v:.1f}' if c == 'load' else f'{v:.2f}')
    print(f'| {name} | ' + ' | '.join(fmt(c, med[c]) for c in cols) + ' |',
          flush=True)
  print(f'\ntotal {time.perf_counter() - t0:.0f} s; targets: train <= 5 s '
        '(excl. compile), explain 10^5 rows <= 0.5 s.')
  return rows


if __name__ == '__main__':
  main()
