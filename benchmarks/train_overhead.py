"""Loop overhead of `xai_jax.train.fit` against a bare hand-written optax loop.

Both train the same flax MLP 10 -> 100 -> 100 -> 2 (softmax cross-entropy,
Adam 1e-3) on the same device-resident synthetic Gaussian data (1e5 rows),
batch 1000, in the same order: each epoch's rows `train.epoch_batches` (a host
permutation) copied to the device once, each batch gathered inside the
jitted step. Both are timed warm (compiled beforehand: `fit`
reuses its compiled step for the same loss_fn and tx), so the ratio measures
the loop: `fit`'s argument handling, state copy, metric fetch every
`log_every` steps, bookkeeping per step.

Run from the repository root:

  python benchmarks/train_overhead.py [--steps 2000] [--repeats 3]

It prints steps/s of both loops and their ratio (target >= 0.90).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flax.linen as nn  # pylint: disable=g-import-not-at-top
import jax
import jax.numpy as jnp
import numpy as np
import optax

from xai_jax import train


class MLP(nn.Module):
  """10 -> 100 -> 100 -> 2."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Dense(100)(x))
    x = nn.relu(nn.Dense(100)(x))
    return nn.Dense(2)(x)


def make_data(n: int, seed: int = 0) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, 10)).astype(np.float32)
  y = (x[:, 0] * x[:, 1] + x[:, 2] > 0).astype(np.int32)
  return {'x': x, 'y': y}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--n', type=int, default=100_000)
  parser.add_argument('--batch_size', type=int, default=1000)
  parser.add_argument('--steps', type=int, default=2000)
  parser.add_argument('--log_every', type=int, default=100)
  parser.add_argument('--repeats', type=int, default=3)
  args = parser.parse_args()

  model = MLP()
  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 10)))['params']
  data_np = make_data(args.n)
  tx = optax.adam(1e-3)
  n, b = args.n, args.batch_size
  spe = n // b

  def loss_fn(params, model_state, batch, key):
    del key
    logits = model.apply({'params': params}, batch['x'])
    loss = optax.softmax_cross_entropy_with_integer_labels(
        logits, batch['y']).mean()
    return loss, (model_state, {})

  # ---- fit (warm: a first short fit compiles the shared step).
  def run_fit(num_steps: int) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    state, _ = train.fit(loss_fn, params, data_np, tx=tx, key=0,
                         batch_size=b, num_steps=num_steps,
                         log_every=args.log_every)
    jax.block_until_ready(state)
    return time.perf_counter() - t0, time.process_time() - c0

  # ---- bare loop: same math, same device-resident data and gather.
  data = jax.device_put(data_np)

  def epoch_rows(epoch: int) -> jax.Array:
    return jax.device_put(train.epoch_batches(0, epoch, n, b).ravel())

  @jax.jit(donate_argnums=(0, 1))
  def bare_step(params, opt_state, perm, step):
    idx = jax.lax.dynamic_slice_in_dim(perm, (step % spe) * b, b)
    batch = jax.tree.map(
        lambda a: jnp.take(a, idx, axis=0, mode='clip', unique_indices=True),
        data)
    grads = jax.grad(lambda p: loss_fn(p, {}, batch, None)[0])(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, step + 1

  def run_bare(num_steps: int) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    p = jax.tree.map(jnp.copy, params)
    o = tx.init(p)
    step = jnp.zeros((), jnp.int32)
    perm = None
    for s in range(num_steps):
      if s % spe == 0:
        perm = epoch_rows(s // spe)
      p, o, step = bare_step(p, o, perm, step)
    jax.block_until_ready((p, o))
    return time.perf_counter() - t0, time.process_time() - c0

  run_fit(10)   # compile
  run_bare(10)  # compile
  fit_runs, bare_runs = [], []
  for _ in range(args.repeats):  # interleaved, to share machine noise
    bare_runs.append(run_bare(args.steps))
    fit_runs.append(run_fit(args.steps))
  med = statistics.median
  fit_rate = med(args.steps / w for w, _ in fit_runs)
  bare_rate = med(args.steps / w for w, _ in bare_runs)
  ratios = [bw / fw for (fw, _), (bw, _) in zip(fit_runs, bare_runs)]
  cpu_ratios = [bc / fc for (_, fc), (_, bc) in zip(fit_runs, bare_runs)]
  print(f'device: {jax.devices()[0].device_kind} x {jax.device_count()} '
        f'({jax.default_backend()}), jax {jax.__version__}, '
        f'{os.cpu_count()} cpus, load avg {os.getloadavg()[0]:.1f}')
  print(f'MLP 10-100-100-2, n={n}, batch={b}, steps={args.steps}, '
        f'log_every={args.log_every}, repeats={args.repeats} (warm)')
  fmt = lambda runs: ', '.join(f'{args.steps / w:.1f}' for w, _ in runs)
  print(f'bare jitted optax loop: {bare_rate:9.1f} steps/s  (runs: '
        f'{fmt(bare_runs)})')
  print(f'xai_jax.train.fit:      {fit_rate:9.1f} steps/s  (runs: '
        f'{fmt(fit_runs)})')
  print(f'ratio fit/bare steps/s: {fit_rate / bare_rate:.3f} (of medians); '
        f'per pair: {", ".join(f"{r:.3f}" for r in ratios)}')
  print(f'ratio by CPU time (bare/fit, less sensitive to other load): '
        f'{med(cpu_ratios):.3f} (median); per pair: '
        f'{", ".join(f"{r:.3f}" for r in cpu_ratios)}')

if __name__ == '__main__':
  main()
