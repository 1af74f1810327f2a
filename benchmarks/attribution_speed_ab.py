"""xai_jax's own attribution speed in two checkouts, interleaved (A/B).

Compares two source trees of xai_jax (e.g. a release and a change) on the
workload of `attribution_vs_peers.py` (MLP d -> 200 -> 200 -> 2, 200 rows):
KernelSHAP (d = 100, 2,248 coalitions), LIME (d = 100, 5,000 samples, data
statistics given), exact Shapley (d = 10) and integrated gradients (50
steps). Each round runs one process per tree, alternating A, B, A, B ...; a
process times each method as the best of 5 calls after a compiling call.
On a machine whose speed drifts, the best over the rounds compares the trees
more fairly than two back-to-back runs of the full benchmark.

Run:  python benchmarks/attribution_speed_ab.py OLD_TREE NEW_TREE [--rounds 4]

(OLD_TREE: e.g. `git worktree add /tmp/old <commit>`.) Prints explanations
per second per method: each round's figures and the best over the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r'''
import json, os, sys, time
sys.path.insert(0, os.getcwd())
import importlib
import jax, jax.numpy as jnp, numpy as np
from xai_jax import blackbox as bb
from xai_jax.attribution import gradients, shap
lime = importlib.import_module('xai_jax.attribution.lime')
rng = np.random.RandomState(0)

def box_for(d):
  def lin(i, o):
    return (rng.normal(0, np.sqrt(2 / i), (i, o)).astype(np.float32),
            rng.normal(0, .1, (o,)).astype(np.float32))
  w1, b1 = lin(d, 200); w2, b2 = lin(200, 200); w3, b3 = lin(200, 2)
  p = dict(w1=w1, b1=b1, w2=w2, b2=b2, w3=w3, b3=b3)
  def f(p, x):
    h = jax.nn.relu(x @ p['w1'] + p['b1'])
    h = jax.nn.relu(h @ p['w2'] + p['b2'])
    return jax.nn.softmax(h @ p['w3'] + p['b3'], -1)
  return bb.from_jax(f, params={k: jnp.asarray(v) for k, v in p.items()},
                     input_shape=(d,), output='probs')

b100, b10 = box_for(100), box_for(10)
x = jnp.asarray(rng.normal(size=(200, 100)).astype(np.float32))
x10 = jnp.asarray(rng.normal(size=(200, 10)).astype(np.float32))
key = jax.random.key(0)
mu, sd = np.zeros(100, np.float32), np.ones(100, np.float32)
calls = {
    'kernel_shap': lambda: shap.kernel_shap(b100, x, key=key, target=1,
                                            num_samples=2248),
    'lime': lambda: lime.lime(b100, x, key=key, target=1, num_samples=5000,
                              feature_mean=mu, feature_std=sd),
    'exact_shapley': lambda: shap.exact_shapley(b10, x10, target=1),
    'integrated_gradients': lambda: gradients.integrated_gradients(
        b100, x, target=1, steps=50),
}
out = {}
for name, call in calls.items():
  jax.block_until_ready(call())
  best = float('inf')
  for _ in range(5):
    t = time.perf_counter()
    jax.block_until_ready(call())
    best = min(best, time.perf_counter() - t)
  out[name] = 200 / best
print(json.dumps(out))
'''


def run_tree(tree: str) -> dict[str, float]:
  """Explanations/s per method, measured in a fresh process inside `tree`."""
  env = dict(os.environ, JAX_PLATFORMS=os.environ.get('JAX_PLATFORMS', 'cpu'))
  res = subprocess.run([sys.executable, '-c', CHILD], cwd=tree, env=env,
                       capture_output=True, text=True, check=False)
  if res.returncode:
    raise SystemExit(f'{tree}: the timing process failed:\n{res.stderr}')
  return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('tree_a', help='checkout A (e.g. the release)')
  p.add_argument('tree_b', help='checkout B (e.g. the change)')
  p.add_argument('--rounds', type=int, default=4)
  args = p.parse_args(argv)
  if args.rounds < 1:
    p.error('--rounds must be >= 1')
  for tree in (args.tree_a, args.tree_b):
    if not os.path.isdir(os.path.join(tree, 'xai_jax')):
      p.error(f'{tree} is not a checkout of xai_jax (no xai_jax/ folder)')
  best: dict[str, dict[str, float]] = {'A': {}, 'B': {}}
  for r in range(args.rounds):
    for label, tree in (('A', args.tree_a), ('B', args.tree_b)):
      res = run_tree(tree)
      print(f'round {r} {label}: ' + '  '.join(
          f'{k}={v:.0f}' for k, v in res.items()), flush=True)
      for k, v in res.items():
        best[label][k] = max(best[label].get(k, 0.0), v)
  print('best over rounds (explanations/s):')
  for k in best['A']:
    a, b = best['A'][k], best['B'][k]
    print(f'  {k:22s} A {a:9.0f}  B {b:9.0f}  B/A {b / a:.3f}')
  return best


if __name__ == '__main__':
  main()
