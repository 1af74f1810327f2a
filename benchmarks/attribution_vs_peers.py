"""xai_jax attribution methods side by side with shap, lime and captum.

Workload: an MLP d -> 200 -> 200 -> 2 (ReLU, softmax), the
class-1 probability is explained, X ~ N(0, I_d), 200 test rows, zero baseline;
the same random weights in JAX (xai_jax), numpy (shap, lime) and torch
(captum), on the CPU.

Each peer (shap, lime, captum) runs in a process of its own that never loads
JAX (`python attribution_vs_peers.py --peer NAME --inputs in.npz --result
out.npz`, started by the main run): the weights and rows go in through an
.npz in a temporary folder, the timings and attributions come back through
another; the child records whether `jax` was in `sys.modules` after its run
(`jax_loaded`, printed in the table). xai_jax runs in the main process; the
errors against the reference are computed there.

Rows of the table:
  (KernelSHAP with a background set against shap: kernel_shap_background.py.)
  1. KernelSHAP, d = 100, 2,248 coalitions per row: xai_jax.kernel_shap on 200
     rows vs shap.KernelExplainer (zeros background, l1_reg=False) and captum
     KernelShap on a few rows; explanations per second and the mean absolute
     error of each against a permutation reference (2,000 antithetic
     permutations) on the rows the peers explained.
  2. Exact Shapley, d = 10, 200 rows (2^10 coalitions each), time after
     compilation, and the model alone on the same 204,800 rows.
  3. LIME, d = 100, 5,000 samples: xai_jax.lime on 200 rows vs
     lime.LimeTabularExplainer (discretize_continuous=False, num_features=100).
     lime's default samples from the data distribution, so the n - 1
     perturbed rows do not depend on the instance: xai_jax evaluates them
     once per call (exact) and its time is the weighted ridge fits. Also
     timed: sampling around the instance (every row has its own samples).
  4. Integrated gradients, 50 steps (trapezoid), 200 rows, vs captum.
  5. Efficiency: model rows evaluated per second while explaining / the best
     rows per second of the jitted model alone (KernelSHAP, and LIME around
     the instance, where the model must see rows * n rows).
  6. Peak RSS of a fresh process explaining 10,000 rows (d = 100) with
     kernel_shap.

Run:  python benchmarks/attribution_vs_peers.py [--quick] [--out results.json]
          [--skip kernel,exact,lime,ig,memory,peers]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import subprocess
import sys
import time
from typing import Any, Callable

import numpy as np

import peer_process

# A peer child (`--peer NAME`, of this file or of a benchmark importing it)
# imports numpy and its peer package only: no JAX, no xai_jax.
PEER_CHILD = '--peer' in sys.argv[1:]

if not PEER_CHILD:
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')
  sys.path.insert(0, os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))))
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from xai_jax import blackbox as bb  # pylint: disable=g-import-not-at-top
  # The package re-exports the function `lime`, which shadows the module name.
  xlime = importlib.import_module('xai_jax.attribution.lime')
  from xai_jax.attribution import shap as xshap  # pylint: disable=g-import-not-at-top

HIDDEN = 200
TARGET = 1


# ------------------------------------------------------------------ models
def make_weights(d: int, seed: int = 0) -> dict[str, np.ndarray]:
  """He-initialised float32 weights of the MLP d -> 200 -> 200 -> 2."""
  rng = np.random.RandomState(seed)
  def lin(i, o):
    return (rng.normal(0, np.sqrt(2.0 / i), (i, o)).astype(np.float32),
            rng.normal(0, 0.1, (o,)).astype(np.float32))
  w1, b1 = lin(d, HIDDEN)
  w2, b2 = lin(HIDDEN, HIDDEN)
  w3, b3 = lin(HIDDEN, 2)
  return dict(w1=w1, b1=b1, w2=w2, b2=b2, w3=w3, b3=b3)


def jax_box(w: dict[str, np.ndarray]) -> bb.BlackBox:
  params = {k: jnp.asarray(v) for k, v in w.items()}

  def f(p, x):
    h = jax.nn.relu(x @ p['w1'] + p['b1'])
    h = jax.nn.relu(h @ p['w2'] + p['b2'])
    return jax.nn.softmax(h @ p['w3'] + p['b3'], axis=-1)
  return bb.from_jax(f, params=params, input_shape=(w['w1'].shape[0],),
                     output='probs', name='mlp')


def numpy_model(w: dict[str, np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
  def f(x):
    x = np.asarray(x, np.float32)
    h = np.maximum(x @ w['w1'] + w['b1'], 0)
    h = np.maximum(h @ w['w2'] + w['b2'], 0)
    z = h @ w['w3'] + w['b3']
    z = np.exp(z - z.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)
  return f


def torch_model(w: dict[str, np.ndarray]):
  import torch  # pylint: disable=g-import-not-at-top
  d = w['w1'].shape[0]
  m = torch.nn.Sequential(torch.nn.Linear(d, HIDDEN), torch.nn.ReLU(),
                          torch.nn.Linear(HIDDEN, HIDDEN), torch.nn.ReLU(),
                          torch.nn.Linear(HIDDEN, 2), torch.nn.Softmax(-1))
  with torch.no_grad():
    for layer, k in zip((m[0], m[2], m[4]), ('1', '2', '3')):
      layer.weight.copy_(torch.from_numpy(w['w' + k].T.copy()))
      layer.bias.copy_(torch.from_numpy(w['b' + k]))
  return m.eval()


# ------------------------------------------------------------------- peers
# Each peer runs in a child process of its own (`--peer NAME`), which imports
# numpy, the peer package and its dependencies only. The parent writes the
# inputs (the MLP's weights, the rows, the options) to an .npz; the child
# writes its timings and attributions to another.
WEIGHT_NAMES = ('w1', 'b1', 'w2', 'b2', 'w3', 'b3')


def peer_shap_kernel(w: dict[str, np.ndarray], x: np.ndarray,
                     opts: dict[str, Any]) -> tuple[dict[str, Any], np.ndarray]:
  """shap.KernelExplainer, zeros background, `nsamples` coalitions per row."""
  import shap  # pylint: disable=g-import-not-at-top
  f_np = numpy_model(w)
  f1 = lambda z: f_np(z)[:, TARGET]
  d = x.shape[1]
  expl = shap.KernelExplainer(f1, np.zeros((1, d), np.float32))
  t0, c0 = time.perf_counter(), time.process_time()
  sv = expl.shap_values(x, nsamples=opts['num_samples'], l1_reg=False,
                        silent=True)
  ts = time.perf_counter() - t0
  info = dict(rows=len(x), seconds=ts, expl_per_s=len(x) / ts,
              cpu_seconds=time.process_time() - c0, version=shap.__version__)
  return info, np.asarray(sv)


def peer_captum_kernel(w: dict[str, np.ndarray], x: np.ndarray,
                       opts: dict[str, Any]
                       ) -> tuple[dict[str, Any], np.ndarray]:
  """captum KernelShap, one row per call, batched perturbations."""
  import captum  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from captum.attr import KernelShap  # pylint: disable=g-import-not-at-top
  ks = KernelShap(torch_model(w))
  xt = torch.from_numpy(x)
  out = []
  t0, c0 = time.perf_counter(), time.process_time()
  with torch.no_grad():
    for i in range(len(x)):
      out.append(ks.attribute(xt[i:i + 1], baselines=0.0, target=TARGET,
                              n_samples=opts['num_samples'],
                              perturbations_per_eval=opts['ppe']
                              ).numpy()[0])
  tc = time.perf_counter() - t0
  info = dict(rows=len(x), seconds=tc, expl_per_s=len(x) / tc,
              cpu_seconds=time.process_time() - c0,
              perturbations_per_eval=opts['ppe'], version=captum.__version__,
              torch=torch.__version__, torch_threads=torch.get_num_threads())
  return info, np.stack(out)


def peer_lime_package(w: dict[str, np.ndarray], x: np.ndarray,
                      opts: dict[str, Any], train: np.ndarray
                      ) -> tuple[dict[str, Any], np.ndarray]:
  """lime.LimeTabularExplainer (continuous features), all d coefficients."""
  import lime  # pylint: disable=g-import-not-at-top
  from lime.lime_tabular import LimeTabularExplainer  # pylint: disable=g-import-not-at-top
  f_np = numpy_model(w)
  d = x.shape[1]
  expl = LimeTabularExplainer(train, mode='classification',
                              discretize_continuous=False, random_state=0)
  out = []
  t0, c0 = time.perf_counter(), time.process_time()
  for i in range(len(x)):
    e = expl.explain_instance(x[i], f_np, labels=(TARGET,), num_features=d,
                              num_samples=opts['num_samples'])
    c = np.zeros(d)
    for j, v in e.local_exp[TARGET]:
      c[j] = v
    out.append(c)
  tl = time.perf_counter() - t0
  info = dict(rows=len(x), seconds=tl, expl_per_s=len(x) / tl,
              cpu_seconds=time.process_time() - c0,
              version=getattr(lime, '__version__', '0.2.x'))
  return info, np.stack(out)


def peer_captum_ig(w: dict[str, np.ndarray], x: np.ndarray,
                   opts: dict[str, Any]) -> tuple[dict[str, Any], np.ndarray]:
  """captum IntegratedGradients (trapezoid), all rows in one call; best of
  `repeats` calls after one warm-up call."""
  import captum  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from captum.attr import IntegratedGradients  # pylint: disable=g-import-not-at-top
  igc = IntegratedGradients(torch_model(w))
  xt = torch.from_numpy(x)
  call = lambda: igc.attribute(xt, baselines=0.0, target=TARGET,
                               n_steps=opts['steps'],
                               method='riemann_trapezoid')
  call()
  best = float('inf')
  for _ in range(opts['repeats']):
    t0 = time.perf_counter()
    a = call()
    best = min(best, time.perf_counter() - t0)
  info = dict(rows=len(x), seconds=best, expl_per_s=len(x) / best,
              version=captum.__version__, torch=torch.__version__,
              torch_threads=torch.get_num_threads())
  return info, a.detach().numpy()


PEERS: dict[str, Callable[..., tuple[dict[str, Any], np.ndarray]]] = {
    'shap_kernel': peer_shap_kernel,
    'captum_kernel': peer_captum_kernel,
    'lime_package': peer_lime_package,
    'captum_ig': peer_captum_ig,
}


def run_peer(name: str, w: dict[str, np.ndarray], x: np.ndarray,
             opts: dict[str, Any], train: np.ndarray | None = None
             ) -> tuple[dict[str, Any], np.ndarray | None]:
  """`peer_process.run` for this file's peers (a fresh process, no JAX)."""
  return peer_process.run(__file__, name, w, x, opts, train)


# ----------------------------------------------------------------- timing
def timed(fn: Callable[[], Any], repeats: int = 1) -> tuple[float, Any]:
  """Best wall time of `repeats` calls (outputs blocked), and the output."""
  t, _, out = timed_cpu(fn, repeats)
  return t, out


def timed_cpu(fn: Callable[[], Any], repeats: int = 1
              ) -> tuple[float, float, Any]:
  """Best wall time and best process CPU time (all threads) of `repeats`
  calls, and the output. CPU time is the fairer measure of work on a machine
  shared with other jobs."""
  best, best_cpu, out = float('inf'), float('inf'), None
  for _ in range(repeats):
    t, c = time.perf_counter(), time.process_time()
    out = jax.block_until_ready(fn())
    best = min(best, time.perf_counter() - t)
    best_cpu = min(best_cpu, time.process_time() - c)
  return best, best_cpu, out


def model_rows_per_s(box: bb.BlackBox, d: int) -> dict[str, float]:
  """Best rows/s (wall and per CPU-second) of the jitted model over batch
  sizes 1k-64k."""
  f = jax.jit(lambda x: box.apply_fn(box.params, x)[:, TARGET])
  best = dict(rows_per_s=0.0, rows_per_cpu_s=0.0, best_batch=0)
  for n in (1024, 2048, 4096, 8192, 16384, 65536):
    x = jax.random.normal(jax.random.key(0), (n, d))
    f(x).block_until_ready()
    reps = max(3, 200000 // n)
    t, c, _ = timed_cpu(lambda: f(x), reps)
    if n / t > best['rows_per_s']:
      best['rows_per_s'], best['best_batch'] = n / t, n
    best['rows_per_cpu_s'] = max(best['rows_per_cpu_s'], n / c)
  return best


def model_sustained(box: bb.BlackBox, d: int, batch: int, repeats: int
                    ) -> tuple[float, float]:
  """Rows/s (wall, per CPU-second) of the jitted model run back to back on
  ~262k rows in calls of `batch` rows (a lax.map loop, like the explainers'
  chunked evaluation); measured right next to an explainer so that both see
  the same machine load."""
  f = lambda z: box.apply_fn(box.params, z)[:, TARGET]
  loop = jax.jit(lambda zs: jax.lax.map(f, zs))
  num = max(1, (1 << 18) // batch)
  zs = jax.random.normal(jax.random.key(11), (num, batch, d))
  loop(zs).block_until_ready()
  t, c, _ = timed_cpu(lambda: loop(zs), repeats)
  return num * batch / t, num * batch / c


def mae(a: Any, b: Any) -> float:
  return float(np.mean(np.abs(np.asarray(a, np.float64) -
                              np.asarray(b, np.float64))))


# ------------------------------------------------------------ benchmarks
def bench_kernel_shap(args, res: dict) -> None:
  d, n = 100, 2248
  w = make_weights(d)
  box = jax_box(w)
  x = np.random.RandomState(1).normal(size=(args.rows, d)).astype(np.float32)
  xj = jnp.asarray(x)
  key = jax.random.key(0)
  run = lambda: xshap.kernel_shap(box, xj, key=key, target=TARGET,
                                  num_samples=n)
  run()                                                   # compile
  t, c, phi = timed_cpu(run, args.repeats)
  rows = args.rows * (n + 2)
  sus, sus_cpu = model_sustained(box, d, res['model']['best_batch'],
                                 args.repeats)
  res['kernel_shap'] = dict(rows=args.rows, seconds=t, cpu_seconds=c,
                            model_sustained_rows_per_s=sus,
                            model_sustained_rows_per_cpu_s=sus_cpu,
                            expl_per_s=args.rows / t,
                            model_rows_per_s=rows / t,
                            model_rows_per_cpu_s=rows / c)
  # Reference: antithetic permutation sampling on the peers' rows.
  m = args.peer_rows
  t_ref, ref = timed(lambda: xshap.permutation_shap(
      box, xj[:m], key=jax.random.key(1), target=TARGET,
      num_permutations=args.ref_permutations))
  res['kernel_shap']['mae_vs_reference'] = mae(phi[:m], ref)
  res['reference'] = dict(rows=m, permutations=args.ref_permutations,
                          seconds=t_ref,
                          mean_abs_phi=float(np.mean(np.abs(ref))))
  if args.no_peers:
    return
  # shap KernelExplainer, in a process of its own.
  info, sv = run_peer('shap_kernel', w, x[:m], dict(num_samples=n))
  if sv is not None:
    info['mae_vs_reference'] = mae(sv, ref)
  res['shap_kernel'] = info
  # captum KernelShap (batched perturbations for a fair comparison).
  mc = args.captum_rows
  info, out = run_peer('captum_kernel', w, x[:mc],
                       dict(num_samples=n, ppe=args.captum_ppe))
  if out is not None:
    info['mae_vs_reference'] = mae(out, ref[:mc])
  res['captum_kernel'] = info


def bench_exact(args, res: dict) -> None:
  d = 10
  w = make_weights(d)
  box = jax_box(w)
  xj = jax.random.normal(jax.random.key(2), (args.rows, d))
  run = lambda: xshap.exact_shapley(box, xj, target=TARGET)
  run()
  t, c, phi = timed_cpu(run, max(args.repeats, 5))
  # The model-bound floor: the same rows at the model's best rows/s (d = 10).
  m = model_rows_per_s(box, d)
  rows = args.rows * 2 ** d
  gap = box(xj)[:, TARGET] - box(jnp.zeros_like(xj))[:, TARGET]
  res['exact_shapley'] = dict(
      rows=args.rows, players=d, seconds=t, cpu_seconds=c, model_rows=rows,
      model_only_seconds=rows / m['rows_per_s'],
      model_only_cpu_seconds=rows / m['rows_per_cpu_s'],
      efficiency_error=float(jnp.max(jnp.abs(phi.sum(-1) - gap))))


def bench_lime(args, res: dict) -> None:
  d, n = 100, 5000
  w = make_weights(d)
  box = jax_box(w)
  rng = np.random.RandomState(4)
  train = rng.normal(size=(1000, d)).astype(np.float32)
  x = rng.normal(size=(args.rows, d)).astype(np.float32)
  mu, sd = train.mean(0), train.std(0)
  xj = jnp.asarray(x)
  key = jax.random.key(5)
  run = lambda: xlime.lime(box, xj, key=key, target=TARGET, num_samples=n,
                           feature_mean=mu, feature_std=sd)
  run()
  t, c, coef = timed_cpu(run, args.repeats)
  sus, sus_cpu = model_sustained(box, d, res['model']['best_batch'],
                                 args.repeats)
  # lime's default samples from the data distribution: rows 1..n-1 do not
  # depend on the instance and xai_jax evaluates them once per call (exact),
  # so the model sees n + rows rows, not rows * n.
  res['lime'] = dict(rows=args.rows, seconds=t, cpu_seconds=c,
                     expl_per_s=args.rows / t,
                     model_rows_evaluated=n + args.rows,
                     model_rows_equivalent_per_s=args.rows * n / t)
  # Sampling around the instance: every example has its own n rows, the
  # model evaluates rows * n of them; the efficiency figure is measured here.
  run_a = lambda: xlime.lime(box, xj, key=key, target=TARGET, num_samples=n,
                             feature_mean=mu, feature_std=sd,
                             sample_around_instance=True)
  run_a()
  ta, ca, _ = timed_cpu(run_a, args.repeats)
  res['lime_around'] = dict(rows=args.rows, seconds=ta, cpu_seconds=ca,
                            model_sustained_rows_per_s=sus,
                            model_sustained_rows_per_cpu_s=sus_cpu,
                            expl_per_s=args.rows / ta,
                            model_rows_per_s=args.rows * n / ta,
                            model_rows_per_cpu_s=args.rows * n / ca)
  if args.no_peers:
    return
  # lime's LimeTabularExplainer, in a process of its own.
  m = args.lime_rows
  info, out = run_peer('lime_package', w, x[:m], dict(num_samples=n),
                       train=train)
  if out is not None:
    ours = np.asarray(coef[:m])
    info['mean_coef_correlation_with_xai_jax'] = float(np.mean(
        [np.corrcoef(a, b)[0, 1] for a, b in zip(ours, out)]))
  res['lime_package'] = info


def bench_ig(args, res: dict) -> None:
  try:
    from xai_jax.attribution import gradients  # pylint: disable=g-import-not-at-top
    ig = gradients.integrated_gradients
  except (ImportError, AttributeError) as e:
    res['integrated_gradients'] = dict(skipped=f'xai_jax IG missing: {e}')
    return
  d = 100
  w = make_weights(d)
  box = jax_box(w)
  x = np.random.RandomState(6).normal(size=(args.rows, d)).astype(np.float32)
  xj = jnp.asarray(x)
  run = lambda: ig(box, xj, target=TARGET, baseline='zero', steps=50)
  run()
  t, attr = timed(run, max(args.repeats, 3))
  res['integrated_gradients'] = dict(rows=args.rows, seconds=t,
                                     expl_per_s=args.rows / t)
  if args.no_peers:
    return
  # captum IntegratedGradients, in a process of its own.
  info, a = run_peer('captum_ig', w, x,
                     dict(steps=50, repeats=max(args.repeats, 3)))
  if a is not None:
    info['mae_vs_xai_jax'] = mae(a, attr)
  res['captum_ig'] = info


_MEMORY_CHILD = r'''
import os, sys, time
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
sys.path.insert(0, sys.argv[2])
sys.path.insert(0, os.path.join(sys.argv[2], 'benchmarks'))
import jax
import attribution_vs_peers as b
from xai_jax.attribution import shap as xshap

def hwm_kib():
  # VmHWM: peak resident set of this process image (ru_maxrss would also
  # count the parent's memory at fork time).
  with open('/proc/self/status') as f:
    for line in f:
      if line.startswith('VmHWM:'):
        return int(line.split()[1])
  return -1

rows = int(sys.argv[1])
box = b.jax_box(b.make_weights(100))
x = jax.random.normal(jax.random.key(7), (rows, 100)).block_until_ready()
before = hwm_kib()
t = time.perf_counter()
phi = xshap.kernel_shap(box, x, key=jax.random.key(0), target=1,
                        num_samples=2248).block_until_ready()
t = time.perf_counter() - t
peak = hwm_kib()
print(f'{rows} {before} {peak} {t}')
'''


def bench_memory(args, res: dict) -> None:
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, '-c', _MEMORY_CHILD,
                        str(args.memory_rows), root], capture_output=True,
                       text=True, check=True)
  rows, before, peak, t = out.stdout.split()[-4:]
  # Seconds include the one compilation of the call.
  res['memory'] = dict(rows=int(rows), rss_before_mib=int(before) / 1024,
                       peak_rss_mib=int(peak) / 1024, seconds=float(t),
                       expl_per_s=int(rows) / float(t))


# ------------------------------------------------------------------ report
def table(res: dict) -> list[tuple[str, str, str, str, str]]:
  rows = []
  def add(name, ours, peer, ratio, target, hit):
    rows.append((name, ours, peer, ratio, f'{target} -> ' +
                 ('HIT' if hit else 'MISS') if hit is not None else target))
  ks, sk, ck = res['kernel_shap'], res.get('shap_kernel', {}), res.get(
      'captum_kernel', {})
  if 'expl_per_s' in sk:
    r = ks['expl_per_s'] / sk['expl_per_s']
    add('KernelSHAP d=100 vs shap (expl/s)', f"{ks['expl_per_s']:.1f}",
        f"{sk['expl_per_s']:.2f}", f'{r:.0f}x', '>= 20x', r >= 20)
    rc = (sk['cpu_seconds'] / sk['rows']) / (ks['cpu_seconds'] / ks['rows'])
    add('  per CPU-second', '', '', f'{rc:.0f}x', 'info', None)
    add('  error vs reference (MAE)', f"{ks['mae_vs_reference']:.2e}",
        f"{sk['mae_vs_reference']:.2e}",
        f"{ks['mae_vs_reference'] / sk['mae_vs_reference']:.2f}",
        '<= shap', ks['mae_vs_reference'] <= sk['mae_vs_reference'])
  else:
    add('KernelSHAP d=100 (expl/s)', f"{ks['expl_per_s']:.1f}", '', '',
        'info', None)
    add('  error vs reference (MAE)', f"{ks['mae_vs_reference']:.2e}", '', '',
        'info', None)
  if 'expl_per_s' in ck:
    r = ks['expl_per_s'] / ck['expl_per_s']
    add('KernelSHAP d=100 vs captum (expl/s)', f"{ks['expl_per_s']:.1f}",
        f"{ck['expl_per_s']:.2f}", f'{r:.0f}x', '>= 50x', r >= 50)
    add('  captum error vs reference (MAE)', '',
        f"{ck['mae_vs_reference']:.2e}", '', 'info', None)
  ex = res['exact_shapley']
  add(f"exact Shapley d=10, {ex['rows']} rows (s)", f"{ex['seconds']:.3f}",
      f"model alone {ex['model_only_seconds']:.3f}",
      f"cpu {ex['cpu_seconds']:.3f}/{ex['model_only_cpu_seconds']:.3f}",
      '< 0.1 s', ex['seconds'] < 0.1)
  li, lp = res['lime'], res.get('lime_package', {})
  if 'expl_per_s' in lp:
    r = li['expl_per_s'] / lp['expl_per_s']
    add('LIME d=100, 5000 samples (expl/s)', f"{li['expl_per_s']:.1f}",
        f"{lp['expl_per_s']:.2f}", f'{r:.0f}x', '>= 20x', r >= 20)
    rc = (lp['cpu_seconds'] / lp['rows']) / (li['cpu_seconds'] / li['rows'])
    add('  per CPU-second', '', '', f'{rc:.0f}x', 'info', None)
  else:
    add('LIME d=100, 5000 samples (expl/s)', f"{li['expl_per_s']:.1f}", '',
        '', 'info', None)
  ig, ic = res.get('integrated_gradients', {}), res.get('captum_ig', {})
  if 'expl_per_s' in ig and 'expl_per_s' in ic:
    r = ig['expl_per_s'] / ic['expl_per_s']
    add('IG 50 steps (expl/s)', f"{ig['expl_per_s']:.0f}",
        f"{ic['expl_per_s']:.0f}", f'{r:.1f}x', '>= 2x', r >= 2)
  elif 'expl_per_s' in ig:
    add('IG 50 steps (expl/s)', f"{ig['expl_per_s']:.0f}", '', '', 'info',
        None)
  elif 'skipped' in ig:
    add('IG 50 steps', 'skipped', ig['skipped'], '', '>= 2x', None)
  best = res['model']['rows_per_s']
  if 'lime_around' in res:
    add('LIME around the instance (expl/s)',
        f"{res['lime_around']['expl_per_s']:.1f}", '', '', 'info', None)
  for name in ('kernel_shap', 'lime_around'):
    r = res[name]
    e = r['model_rows_per_s'] / best
    add(f'efficiency {name} (model rows/s)',
        f"{r['model_rows_per_s'] / 1e6:.2f}M",
        f'model best {best / 1e6:.2f}M', f'{100 * e:.0f}%', '>= 50%', e >= 0.5)
    e = r['model_rows_per_s'] / r['model_sustained_rows_per_s']
    add('  vs model run next to it', '',
        f"{r['model_sustained_rows_per_s'] / 1e6:.2f}M", f'{100 * e:.0f}%',
        'info', None)
    e = r['model_rows_per_cpu_s'] / r['model_sustained_rows_per_cpu_s']
    add('  per CPU-second', f"{r['model_rows_per_cpu_s'] / 1e6:.2f}M",
        f"{r['model_sustained_rows_per_cpu_s'] / 1e6:.2f}M",
        f'{100 * e:.0f}%', 'info', None)
  peers = [k for k in PEERS if k in res and 'jax_loaded' in res[k]]
  if peers:
    dirty = [k for k in peers if res[k]['jax_loaded']]
    add('peers in processes without JAX', '', ', '.join(peers),
        f'{len(peers) - len(dirty)}/{len(peers)}', 'all',
        not dirty)
  for k in PEERS:
    if k in res and ('failed' in res[k] or 'skipped' in res[k]):
      why = res[k].get('skipped') or res[k]['failed'].strip().splitlines()[-1]
      add(f'{k}: not run', '', why[:60], '', 'info', None)
  if 'memory' in res:
    mem = res['memory']
    add(f"peak RSS, kernel_shap {mem['rows']} rows (MiB)",
        f"{mem['peak_rss_mib']:.0f}", f"before {mem['rss_before_mib']:.0f}",
        f"{mem['expl_per_s']:.0f} expl/s", '< 2048 MiB',
        mem['peak_rss_mib'] < 2048)
  return rows


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--quick', action='store_true',
                 help='fewer rows/permutations/repeats (about a minute)')
  p.add_argument('--out', default=None, help='write the results as JSON')
  p.add_argument('--skip', default='', help='comma list of: kernel,exact,'
                 'lime,ig,memory,peers (peers: no peer processes)')
  args = p.parse_args(argv)
  q = args.quick
  args.rows = 200
  args.peer_rows = 10 if q else 20
  args.captum_rows = 3 if q else 5
  args.captum_ppe = 256
  args.lime_rows = 5 if q else 10
  args.ref_permutations = 500 if q else 2000
  args.memory_rows = 2000 if q else 10000
  args.repeats = 1 if q else 3
  skip = set(filter(None, args.skip.split(',')))
  args.no_peers = 'peers' in skip
  res: dict[str, Any] = dict(
      load_average_start=os.getloadavg(), cpus=os.cpu_count(),
      python=platform.python_version(), jax=jax.__version__,
      platform=platform.platform(), quick=q)
  t_all = time.perf_counter()
  res['model'] = dict(d=100, **model_rows_per_s(jax_box(make_weights(100)),
                                                100))
  if 'kernel' not in skip:
    bench_kernel_shap(args, res)
  if 'exact' not in skip:
    bench_exact(args, res)
  if 'lime' not in skip:
    bench_lime(args, res)
  if 'ig' not in skip:
    bench_ig(args, res)
  if 'memory' not in skip:
    bench_memory(args, res)
  res['total_seconds'] = time.perf_counter() - t_all
  res['load_average_end'] = os.getloadavg()
  if {'kernel', 'exact', 'lime'} & skip:
    print(json.dumps(res, indent=1, default=float))
  else:
    rows = table(res)
    widths = [max(len(r[i]) for r in rows + [('metric', 'xai_jax', 'peer',
                                               'ratio', 'target')])
              for i in range(5)]
    head = ('metric', 'xai_jax', 'peer', 'ratio', 'target')
    for r in [head] + rows:
      print('  '.join(c.ljust(w) for c, w in zip(r, widths)))
  print(f"load average start {res['load_average_start']}, end "
        f"{res['load_average_end']}; {res['cpus']} CPUs; total "
        f"{res['total_seconds']:.0f} s")
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(res, f, indent=1, default=float)
  return res


if __name__ == '__main__':
  if PEER_CHILD:
    peer_process.child_main(sys.argv[1:], PEERS)
  else:
    main()
