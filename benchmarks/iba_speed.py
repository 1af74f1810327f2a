"""IBA and InputIBA speed: one image at a time against batches, same run.

Workload (the anchor's): the Fashion-MNIST CNN `make_model('cnn',
features=(32, 64))` (conv32-pool-conv64-pool-dense128; 28x28x1 inputs),
split at 'conv2' (latent 14x14x64), trained for a few hundred Adam steps on
the training images (random images in [0, 1] and a random model when the
files are missing; the output says which). Reference hyper-parameters:
`iba.default_config()` (10 steps x 10 noise copies) and
`input_iba.default_config()` (feature IBA 10 steps, WGAN 140 critic and 40
generator steps on 200 samples, input bottleneck 60 steps x 10 copies).

Rows:
  a. IBA: seconds per image explained one at a time (`--single` images, each
     its own `explain` call after a compiling call) and in batches of
     `--batch` (the mean of `--repeats` compiled calls); the batching
     ratio (target >= 5x) and the ratio to the anchor, the authors' PyTorch
     code on this CPU class, 0.061 s per image (target >= 5x).
  b. InputIBA: the same, with the anchor 7.7 s per image (7.2 s of it the
     WGAN); the batch is explained once (`--input_iba_repeats` more).
  The first call of each shape is timed with `xai_jax.timing.timed` and its
  compilation (JAX's compile events) subtracted and reported.
  c. The WGAN's arithmetic: multiply-adds per critic step (32 real + 32 fake
     samples, forward and weight gradient, plus the fake samples' forward
     through the head) and per generator step, from XLA's cost analysis,
     times 140 and 40; the machine's matmul rate (a 2048^2 float32 matmul);
     hence the floor on seconds per image for the WGAN alone on this CPU.

Run:  python benchmarks/iba_speed.py [--out results.json] [--wait_quiet 600]
      python benchmarks/iba_speed.py --quick      # the smoke run of the tests
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import optax  # pylint: disable=g-import-not-at-top

from selective_speed import wait_quiet  # pylint: disable=g-import-not-at-top
from xai_jax import blackbox as bb  # pylint: disable=g-import-not-at-top
from xai_jax import data  # pylint: disable=g-import-not-at-top
from xai_jax import iba  # pylint: disable=g-import-not-at-top
from xai_jax import input_iba  # pylint: disable=g-import-not-at-top
from xai_jax import models  # pylint: disable=g-import-not-at-top
from xai_jax import timing  # pylint: disable=g-import-not-at-top

ANCHOR_IBA_S = 0.061
ANCHOR_INPUT_IBA_S = 7.7
ANCHOR_WGAN_S = 7.2


def load_box(train_steps: int, seed: int = 0,
             features: tuple[int, int] = (32, 64)
             ) -> tuple[bb.BlackBox, np.ndarray, str]:
  """The split CNN and test images (Fashion-MNIST when installed)."""
  try:
    tr = data.load_fashion_mnist('train')
    te = data.load_fashion_mnist('test')
    x_tr, y_tr, x_te = tr.x, tr.y, te.x
    source = 'fashion_mnist'
  except Exception:  # pylint: disable=broad-except
    rs = np.random.RandomState(seed)
    x_tr = rs.rand(2000, 28, 28, 1).astype(np.float32)
    y_tr = rs.randint(0, 10, 2000)
    x_te = rs.rand(1000, 28, 28, 1).astype(np.float32)
    source, train_steps = 'random images, random model', 0
  m = models.make_model('cnn', num_classes=10, features=features)
  v = m.init(jax.random.key(seed), jnp.zeros((1, 28, 28, 1)))
  if train_steps:
    tx = optax.adam(1e-3)
    opt = tx.init(v)

    @jax.jit
    def step(v, opt, xb, yb):
      def loss(v):
        return optax.softmax_cross_entropy_with_integer_labels(
            m.apply(v, xb), yb).mean()
      g = jax.grad(loss)(v)
      u, opt = tx.update(g, opt, v)
      return optax.apply_updates(v, u), opt

    rs = np.random.RandomState(seed)
    for _ in range(train_steps):
      i = rs.randint(0, len(x_tr), 128)
      v, opt = step(v, opt, jnp.asarray(x_tr[i]), jnp.asarray(y_tr[i]))
  box = bb.from_linen(m, v, input_shape=(28, 28, 1), split_at='conv2')
  return box, np.asarray(x_te, np.float32), source


def _block(out: Any) -> Any:
  return jax.block_until_ready(out.scores)


def time_method(module, e, x: np.ndarray, *, single: int, batch: int,
                repeats: int) -> dict[str, float]:
  """Seconds per image one at a time and in batches. The first call of
  each shape is timed with `timing.timed`, its compilation (jax's compile
  events) subtracted; `repeats` more calls are averaged with it."""
  r: dict[str, float] = {}
  with timing.timed() as t:
    _block(module.explain(e, x[:1], key=0))
  r['single_compile_s'] = t.compile
  with timing.timed() as t:
    for i in range(single):
      _block(module.explain(e, x[1 + i:2 + i], key=i))
  r['single_s_per_image'] = t.wall / single
  walls = []
  with timing.timed() as t:
    _block(module.explain(e, x[:batch], key=0))
  r['batch_compile_s'] = t.compile
  walls.append(t.excl_compile)
  for i in range(repeats):
    with timing.timed() as t:
      _block(module.explain(e, x[:batch], key=1 + i))
    walls.append(t.wall)
  r['batch_calls'] = len(walls)
  r['batch_s_per_image'] = float(np.mean(walls)) / batch
  r['batching_ratio'] = r['single_s_per_image'] / r['batch_s_per_image']
  return r


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
  a = jax.random.normal(jax.random.key(0), (n, n))
  f = jax.jit(lambda a: a @ a)
  f(a).block_until_ready()
  t = time.perf_counter()
  for _ in range(repeats):
    f(a).block_until_ready()
  return 2 * n ** 3 * repeats / (time.perf_counter() - t) / 1e9


def _flops(fn, *args) -> float:
  cost = jax.jit(fn).lower(*args).compile().cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  return float(cost.get('flops', float('nan')))


def wgan_arithmetic(box: bb.BlackBox, x: np.ndarray) -> dict[str, float]:
  """GFLOP of one critic step and one generator step, and the WGAN's
  floor in seconds per image at this machine's matmul rate."""
  cfg = input_iba.default_config()
  b = cfg.gan_batch
  head = lambda v: box.head(v).astype(jnp.float32)
  lat = head(jnp.asarray(x[:b]))
  critic = input_iba.Critic(channels=lat.shape[-1], spatial=lat.ndim - 2)
  dp = critic.init(jax.random.key(0), lat[:2])
  xb = jnp.asarray(x[:b])

  def d_step(dp, real, xin):
    fake = jax.lax.stop_gradient(head(xin))
    return jax.grad(lambda p: -critic.apply(p, real).mean() +
                    critic.apply(p, fake).mean())(dp)

  def g_step(m, dp, xin):
    return jax.grad(lambda mm: -critic.apply(
        dp, head(jax.nn.sigmoid(mm) * xin)).mean())(m)

  d = _flops(d_step, dp, lat, xb)
  g = _flops(g_step, jnp.zeros((28, 28, 1)), dp, xb)
  rate = matmul_gflops()
  steps_d = cfg.gan_epochs * -(-cfg.gan_samples // b)
  steps_g = cfg.gan_epochs * len(range(0, -(-cfg.gan_samples // b),
                                       cfg.critic_iters))
  total = steps_d * d + steps_g * g
  return dict(critic_step_gflop=d / 1e9, generator_step_gflop=g / 1e9,
              critic_steps=steps_d, generator_steps=steps_g,
              wgan_gflop_per_image=total / 1e9, matmul_gflops=rate,
              wgan_floor_s_per_image=total / 1e9 / rate)


def main(argv=None) -> dict[str, Any]:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--quick', action='store_true',
                 help='a conv8-conv16 CNN, tiny sizes and a shortened '
                 'InputIBA (smoke test)')
  p.add_argument('--batch', type=int, default=64)
  p.add_argument('--single', type=int, default=None,
                 help='images explained one at a time (default 16 / 3)')
  p.add_argument('--repeats', type=int, default=3,
                 help='IBA batch calls after the first')
  p.add_argument('--input_iba_repeats', type=int, default=0,
                 help='InputIBA batch calls after the first')
  p.add_argument('--train_steps', type=int, default=300)
  p.add_argument('--wait_quiet', type=float, default=0.0)
  p.add_argument('--skip', default='', help='comma list: iba,input_iba,flops')
  p.add_argument('--out', default=None)
  args = p.parse_args(argv)
  skip = set(filter(None, args.skip.split(',')))
  overrides: dict[str, Any] = {}
  if args.quick:
    args.batch, args.repeats, args.train_steps = 4, 1, 20
    overrides = dict(gan_epochs=1, gan_samples=32, input_steps=5)
  res: dict[str, Any] = dict(
      quick=args.quick, batch=args.batch, platform=platform.platform(),
      cpu_count=os.cpu_count(), jax=jax.__version__,
      device=str(jax.devices()[0]))
  if args.wait_quiet > 0:
    res['wait_quiet'] = wait_quiet(args.wait_quiet)
  box, x, source = load_box(args.train_steps,
                            features=(8, 16) if args.quick else (32, 64))
  res['data'] = source
  if 'iba' not in skip:
    e = iba.fit(0, box, x[:1000])
    r = time_method(iba, e, x, single=args.single or 16, batch=args.batch,
                    repeats=args.repeats)
    r['vs_anchor'] = ANCHOR_IBA_S / r['batch_s_per_image']
    res['iba'] = r
  if 'input_iba' not in skip:
    e = input_iba.fit(0, box, x[:1000], **overrides)
    r = time_method(input_iba, e, x, single=args.single or 3,
                    batch=args.batch, repeats=args.input_iba_repeats)
    r['vs_anchor'] = ANCHOR_INPUT_IBA_S / r['batch_s_per_image']
    res['input_iba'] = r
  if 'flops' not in skip:
    res['wgan'] = wgan_arithmetic(box, x)
  print(f"data: {source}; batch {args.batch}; {res['device']}" +
        ('; QUICK: shortened InputIBA, not the reference settings'
         if args.quick else ''))
  print(f"{'method':10s} {'one-at-a-time s/img':>20s} {'batch s/img':>12s} "
        f"{'batching':>9s} {'anchor s/img':>13s} {'vs anchor':>10s}")
  for name, anchor in (('iba', ANCHOR_IBA_S), ('input_iba',
                                                ANCHOR_INPUT_IBA_S)):
    if name in res:
      r = res[name]
      print(f"{name:10s} {r['single_s_per_image']:20.4f} "
            f"{r['batch_s_per_image']:12.4f} {r['batching_ratio']:8.2f}x "
            f"{anchor:13.3f} {r['vs_anchor']:9.2f}x")
  if 'wgan' in res:
    w = res['wgan']
    print(f"WGAN: {w['critic_step_gflop']:.2f} GFLOP per critic step x "
          f"{w['critic_steps']}, {w['generator_step_gflop']:.2f} per "
          f"generator step x {w['generator_steps']} = "
          f"{w['wgan_gflop_per_image']:.0f} GFLOP per image; matmul rate "
          f"{w['matmul_gflops']:.0f} GFLOP/s -> floor "
          f"{w['wgan_floor_s_per_image']:.2f} s per image (anchor's WGAN "
          f"{ANCHOR_WGAN_S} s)")
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(res, f, indent=1)
  return res


if __name__ == '__main__':
  main()
