"""Where one L2X training step goes (tabular, the paper's networks).

Times 100 optimizer steps inside one `lax.scan` (no dispatch or host work),
best of `--repeats`, for:

  * the full L2X step of `l2x.fit` on the switch set (selector MLP 100-100,
    approximator MLP 200-200 with batch norm, selu, the Concrete sampler,
    Adam, L2 penalty);
  * the same with relu, no batch norm and sigmoid(logits) instead of the
    sampler;
  * the matmuls of the two MLPs alone (forward + backward, plain SGD), with
    selu, relu or no activation: a floor for these networks on this machine.

Run from the repository root:

  python benchmarks/l2x_step_costs.py [--batch_size 1000] [--repeats 5]

Prints ms per step and the implied seconds per 10^6-row epoch.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp

from xai_jax import l2x
from xai_jax import nets
from xai_jax import train
from xai_jax.data import synthetic

STEPS = 100


def l2x_step(batch, k: int, activation: str, batch_norm: bool, sampler: str):
  """(jitted 100-step scan, initial state) of the L2X loss of `l2x.fit`."""
  d = batch['x'].shape[1]
  sel = nets.MLPSelector(num_groups=d, activation=activation)
  app = nets.MLPApproximator(num_classes=2, activation=activation,
                             batch_norm=batch_norm)
  sp, ap, ms, _, key = l2x.init_params(sel, app, jax.random.key(0),
                                       batch['x'][:2])
  if sampler == 'sigmoid':
    sample = lambda key, logits, k: jax.nn.sigmoid(logits)
  else:
    sample = l2x.make_sampler(sampler, 0.1, {})
  loss_fn = l2x.l2x_loss(sel, app, sample, k, lambda v: v, 1e-3)
  tx = train.make_optimizer({'optimizer': 'adam', 'learning_rate': 1e-3})
  state = train.create_train_state({'selector': sp, 'approximator': ap}, tx,
                                   key=key, model_state=ms)
  body = lambda s, _: train.update(loss_fn, tx, s, batch)
  return jax.jit(lambda s: jax.lax.scan(body, s, None, length=STEPS)[0]), state


def matmul_floor(x, act):
  """The two MLPs' layers only (no batch norm, sampler or Adam), SGD."""
  shapes = {'s1': (10, 100), 's2': (100, 100), 's3': (100, 10),
            'a1': (10, 200), 'a2': (200, 200), 'a3': (200, 2)}
  keys = jax.random.split(jax.random.key(1), len(shapes))
  params = {n: 0.05 * jax.random.normal(k, s)
            for (n, s), k in zip(shapes.items(), keys)}

  def loss(p):
    h = act(act(x @ p['s1']) @ p['s2'])
    mask = jax.nn.sigmoid(h @ p['s3'])
    h = act(act((x * mask) @ p['a1']) @ p['a2'])
    return jnp.mean((h @ p['a3']) ** 2)

  def body(p, _):
    g = jax.grad(loss)(p)
    return jax.tree.map(lambda a, b: a - 1e-3 * b, p, g), None

  return jax.jit(lambda p: jax.lax.scan(body, p, None, length=STEPS)[0]), params


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--batch_size', type=int, default=1000)
  p.add_argument('--repeats', type=int, default=5)
  args = p.parse_args(argv)
  ds = synthetic.make_tabular('switch', args.batch_size, 0)
  box = synthetic.oracle_blackbox('switch')
  probs = jax.nn.softmax(box(jnp.asarray(ds.x)))
  batch = {'x': jnp.asarray(ds.x), 'targets': probs}
  k = synthetic.TABULAR_K['switch']
  x = batch['x']
  cases = {
      'L2X step: selu, batch norm, concrete, Adam (l2x.fit)':
          l2x_step(batch, k, 'selu', True, 'concrete'),
      'L2X step: relu, no batch norm, sigmoid instead of the sampler':
          l2x_step(batch, k, 'relu', False, 'sigmoid'),
      'matmuls only, selu, SGD': matmul_floor(x, nets.selu),
      'matmuls only, relu, SGD': matmul_floor(x, jax.nn.relu),
      'matmuls only, no activation, SGD': matmul_floor(x, lambda h: h),
  }
  for f, s in cases.values():
    jax.block_until_ready(f(s))
  best = {name: float('inf') for name in cases}
  for _ in range(args.repeats):  # interleaved: machine drift hits all alike
    for name, (f, s) in cases.items():
      t = time.perf_counter()
      jax.block_until_ready(f(s))
      best[name] = min(best[name], (time.perf_counter() - t) / STEPS)
  print(f'jax {jax.__version__}, {os.cpu_count()} CPUs, batch '
        f'{args.batch_size}, best of {args.repeats} x {STEPS} steps\n')
  print('| step | ms per step | s per 10^6-row epoch |')
  print('| --- | --- | --- |')
  for name, sec in best.items():
    print(f'| {name} | {sec * 1e3:.2f} | {sec * 1e6 / args.batch_size:.2f} |')


if __name__ == '__main__':
  main()
