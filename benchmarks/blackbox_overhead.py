r"""Black-box adapter overhead.

  python benchmarks/blackbox_overhead.py [--rows 100000] [--repeats 20]

1. `from_linen` box vs raw `module.apply` under jit, batched (MLP 10->200->200->2
   and the Fashion-MNIST CNN): the ratio of their throughputs (target: within 5%).
2. `from_numpy` box (a numpy MLP through one `jax.pure_callback` per batch) vs
   calling the numpy function directly: rows/s of both, and under `jax.vmap`
   of a per-row function (still one callback per batch).
3. The cost of wrapping (`--wrap-only` runs just this part): each adapter's
   wall time to build a box, which includes the wrap-time output probe
   (`jax.eval_shape`, a trace without computation; one tiny numpy call for
   `from_numpy`), beside the first jitted call of the box on 2 rows (trace
   and compile, which every use pays anyway).
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

from xai_jax import blackbox as bb
from xai_jax import models


def _best(fn, repeats):
  jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t)
  return min(times)


def linen_overhead(name, kw, x, repeats):
  m = models.make_model(name, **kw)
  v = m.init(jax.random.key(0), x[:2])
  box = bb.from_linen(m, v, input_shape=x.shape[1:])
  raw = jax.jit(lambda v, x: m.apply(v, x))
  boxed = jax.jit(lambda b, x: b(x))
  # Interleave to share any drift of the machine's load.
  t_raw, t_box = [], []
  for _ in range(3):
    t_raw.append(_best(lambda: raw(v, x), repeats))
    t_box.append(_best(lambda: boxed(box, x), repeats))
  r, b = min(t_raw), min(t_box)
  return {'model': name, 'rows': x.shape[0], 'raw_rows_per_s': x.shape[0] / r,
          'box_rows_per_s': x.shape[0] / b, 'box_over_raw': r / b}


def numpy_overhead(rows, repeats):
  rng = np.random.default_rng(0)
  w1 = rng.normal(size=(10, 200)).astype(np.float32) / 3
  w2 = rng.normal(size=(200, 200)).astype(np.float32) / 14
  w3 = rng.normal(size=(200, 2)).astype(np.float32) / 14

  def f(a):
    h = np.maximum(a @ w1, 0)
    h = np.maximum(h @ w2, 0)
    z = h @ w3
    z = np.exp(z - z.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)

  x = rng.normal(size=(rows, 10)).astype(np.float32)
  box = bb.from_numpy(f, input_shape=(10,), output_shape=(2,), output='probs')
  direct = _best(lambda: f(x), repeats)
  xj = jnp.asarray(x)
  jitted = jax.jit(lambda x: box(x))
  boxed = _best(lambda: jitted(xj), repeats)
  per_row = jax.jit(jax.vmap(lambda r: box(r[None])[0]))
  vmapped = _best(lambda: per_row(xj), repeats)
  return {'rows': rows, 'numpy_rows_per_s': rows / direct,
          'box_rows_per_s': rows / boxed, 'vmapped_box_rows_per_s':
          rows / vmapped, 'box_over_numpy': direct / boxed}


def _timed(fn):
  t = time.perf_counter()
  out = fn()
  return out, time.perf_counter() - t


def wrap_cost():
  """Seconds to wrap each adapter (cold: first wrap of that model) and to
  run the box's first jitted call on 2 rows."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  rows = []
  for name, kw, shape in [('mlp', dict(num_classes=2, hidden=(200, 200)), (10,)),
                          ('cnn', dict(num_classes=10), (28, 28, 1)),
                          ('vit', dict(num_classes=10), (28, 28, 1))]:
    m = models.make_model(name, **kw)
    x = jnp.zeros((2, *shape))
    v = m.init(jax.random.key(0), x)
    box, t_wrap = _timed(lambda: bb.from_linen(m, v, input_shape=shape))
    _, t_call = _timed(lambda: jax.block_until_ready(
        jax.jit(lambda b, x: b(x))(box, x)))
    rows.append((f'from_linen {name}', t_wrap, t_call))

  class Mlp(nnx.Module):

    def __init__(self, rngs):
      self.l1 = nnx.Linear(10, 200, rngs=rngs)
      self.bn = nnx.BatchNorm(200, rngs=rngs)
      self.drop = nnx.Dropout(0.1, rngs=rngs)
      self.l2 = nnx.Linear(200, 2, rngs=rngs)

    def __call__(self, x):
      return self.l2(self.drop(nnx.relu(self.bn(self.l1(x)))))

  net = Mlp(nnx.Rngs(0))
  x = jnp.zeros((2, 10))
  box, t_wrap = _timed(lambda: bb.from_nnx(net, input_shape=(10,)))
  _, t_call = _timed(lambda: jax.block_until_ready(
      jax.jit(lambda b, x: b(x))(box, x)))
  rows.append(('from_nnx mlp+bn+dropout', t_wrap, t_call))
  w = np.ones((10, 2), np.float32)
  box, t_wrap = _timed(lambda: bb.from_numpy(lambda a: a @ w,
                                             input_shape=(10,),
                                             output_shape=(2,)))
  _, t_call = _timed(lambda: jax.block_until_ready(
      jax.jit(lambda b, x: b(x))(box, x)))
  rows.append(('from_numpy linear', t_wrap, t_call))
  return rows


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--rows', type=int, default=100_000)
  p.add_argument('--repeats', type=int, default=20)
  p.add_argument('--wrap-only', action='store_true',
                 help='only measure the cost of wrapping (part 3)')
  a = p.parse_args()
  print(f'devices: {jax.devices()}  load average: {os.getloadavg()}')
  for label, t_wrap, t_call in wrap_cost():
    print(f'{label:>24}: wrap {t_wrap * 1e3:7.1f} ms (with the output probe), '
          f'first jitted call on 2 rows {t_call * 1e3:7.1f} ms')
  if a.wrap_only:
    return
  key = jax.random.key(0)
  x = jax.random.normal(key, (a.rows, 10))
  r1 = linen_overhead('mlp', dict(num_classes=2, hidden=(200, 200)), x,
                      a.repeats)
  img = jax.random.uniform(key, (2048, 28, 28, 1))
  r2 = linen_overhead('cnn', dict(num_classes=10), img, max(3, a.repeats // 4))
  for r in (r1, r2):
    print(f"from_linen {r['model']:>4} rows={r['rows']:>6}: raw apply "
          f"{r['raw_rows_per_s']:,.0f} rows/s, box {r['box_rows_per_s']:,.0f} "
          f"rows/s, box/raw = {r['box_over_raw']:.3f}")
  r3 = numpy_overhead(a.rows, a.repeats)
  print(f"from_numpy rows={r3['rows']}: numpy direct "
        f"{r3['numpy_rows_per_s']:,.0f} rows/s, box (jit) "
        f"{r3['box_rows_per_s']:,.0f} rows/s, vmapped per-row box "
        f"{r3['vmapped_box_rows_per_s']:,.0f} rows/s, box/numpy = "
        f"{r3['box_over_numpy']:.3f}")


if __name__ == '__main__':
  main()
