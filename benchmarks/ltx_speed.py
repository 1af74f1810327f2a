"""LTX speed: pretraining steps, batched per-instance finetuning, pLTX masks.

Workload (the anchor's): the Fashion-MNIST CNN `make_model('cnn',
features=(32, 64))` (conv32-pool-conv64-pool-dense128; 28x28x1 inputs),
trained for a few hundred Adam steps (`iba_speed.load_box`; random images
and a random model when the files are missing, the output says which); the
LTX CNN explainer of the same widths (`ltx.default_config('cnn')`,
features (32, 64), initialised from the box), reference hyper-parameters
(AdamW, batch 32, 25 finetuning steps).

Rows:
  a. Pretraining: seconds per step at batch 32: one `ltx.fit` of `--long`
     steps logging every `--short`, the median of the training loop's
     steps/s over the log periods after the first (compilation excluded);
     the anchor, the authors' code on this CPU class: 0.0315 s per step.
  b. Finetuning (LTX, 25 steps per image): seconds per image one image at
     a time (`--single` images, each its own `explain` call, after a
     compiling call) and in batches of `--batch` (the vmapped per-example
     optimisation; the mean of `--repeats` compiled calls, the first call's
     compilation subtracted): the batching ratio (target >= 5x) and the
     ratio to the anchor's 0.22 s per image (target >= 5x).
  c. pLTX inference: images per second of `ltx.masks` (one explainer
     forward pass) against the black box's own forward pass
     (`blackbox.forward_in_chunks`), both on `--infer` images, compiled
     (target >= 50%).
  d. The arithmetic of one image's finetuning (XLA cost analysis) and the
     machine's matmul rate (a 2048^2 float32 matmul): the floor on seconds
     per image. Per-instance finetuning shares no parameters between images,
     so a batch does the same arithmetic per image as one image alone:
     batching gains only where one image leaves the machine idle.

Run:  python benchmarks/ltx_speed.py [--out results.json] [--wait_quiet 600]
      python benchmarks/ltx_speed.py --quick      # the smoke run of the tests
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

from iba_speed import _flops  # pylint: disable=g-import-not-at-top
from iba_speed import load_box  # pylint: disable=g-import-not-at-top
from iba_speed import matmul_gflops  # pylint: disable=g-import-not-at-top
from iba_speed import time_method  # pylint: disable=g-import-not-at-top
from selective_speed import wait_quiet  # pylint: disable=g-import-not-at-top
from xai_jax import blackbox as bb  # pylint: disable=g-import-not-at-top
from xai_jax import ltx  # pylint: disable=g-import-not-at-top

ANCHOR_PRETRAIN_STEP_S = 0.0315
ANCHOR_FINETUNE_S = 0.22


def pretrain_step_seconds(box: bb.BlackBox, x: np.ndarray, features: tuple,
                          every: int, total: int) -> dict[str, float]:
  """Seconds per pretraining step (batch 32): one `ltx.fit` of `total`
  steps logging every `every`; the training loop's steps/s of each log
  period after the first (which holds the compilation), median."""
  e, h = ltx.fit(0, box, x, features=features, num_steps=total,
                 log_every=every, return_history=True)
  jax.block_until_ready(e.params)
  rates = np.asarray(h['steps_per_sec'])[1:]
  s = 1.0 / float(np.median(rates))
  return {'steps': total, 'log_every': every, 'periods': int(rates.size),
          's_per_step': s, 'steps_per_s': 1.0 / s,
          'vs_anchor': ANCHOR_PRETRAIN_STEP_S / s}


def finetune_arithmetic(e: ltx.LTXExplainer, x: np.ndarray
                        ) -> dict[str, float]:
  """FLOPs of one finetuning step of one image (XLA's cost analysis of the
  objective's value and gradient), times T + 1 (T steps and the final
  evaluation), and the machine's matmul rate: the floor on seconds per
  image when the arithmetic runs at that rate."""
  t = int(e.config.finetune_steps)
  cfg = e.config

  def step(p, a, c):
    f = lambda q: ltx.objective(e.net, e.model, q, a, c,
                                mask_weight=float(cfg.mask_weight),
                                mask_loss=cfg.mask_loss)[0][0]
    return jax.value_and_grad(f)(p)

  per_step = _flops(step, e.params, jnp.asarray(x[:1]),
                    jnp.zeros((1,), jnp.int32)) / 1e9
  rate = matmul_gflops()
  gflop = per_step * (t + 1)
  return {'gflop_per_step': per_step, 'gflop_per_image': gflop,
          'matmul_gflops': rate, 'floor_s_per_image': gflop / rate}


def inference(box: bb.BlackBox, e: ltx.LTXExplainer, x: np.ndarray,
              repeats: int) -> dict[str, float]:
  """Images per second of pLTX masks and of the box's forward pass."""
  out = {}
  for name, fn in (('pltx', lambda: ltx.masks(e, x)),
                   ('blackbox', lambda: bb.forward_in_chunks(box, x, 1024))):
    jax.block_until_ready(fn())
    t0 = time.perf_counter()
    for _ in range(repeats):
      jax.block_until_ready(fn())
    out[f'{name}_images_per_s'] = repeats * len(x) / (
        time.perf_counter() - t0)
  out['ratio'] = out['pltx_images_per_s'] / out['blackbox_images_per_s']
  return out


def main(argv=None) -> dict[str, Any]:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--quick', action='store_true',
                 help='a conv8-conv16 CNN and tiny sizes (smoke test)')
  p.add_argument('--batch', type=int, default=64)
  p.add_argument('--single', type=int, default=16)
  p.add_argument('--repeats', type=int, default=3)
  p.add_argument('--short', type=int, default=50,
                 help='pretraining log period (steps)')
  p.add_argument('--long', type=int, default=300,
                 help='pretraining steps timed')
  p.add_argument('--infer', type=int, default=1024)
  p.add_argument('--train_steps', type=int, default=300)
  p.add_argument('--wait_quiet', type=float, default=0.0)
  p.add_argument('--out', default=None)
  args = p.parse_args(argv)
  features = (32, 64)
  if args.quick:
    (args.batch, args.single, args.repeats, args.short, args.long,
     args.infer, args.train_steps) = 4, 2, 1, 2, 8, 64, 20
    features = (8, 16)
  res: dict[str, Any] = dict(
      quick=args.quick, batch=args.batch, platform=platform.platform(),
      cpu_count=os.cpu_count(), jax=jax.__version__,
      device=str(jax.devices()[0]))
  if args.wait_quiet > 0:
    res['wait_quiet'] = wait_quiet(args.wait_quiet)
  box, x, source = load_box(args.train_steps, features=features)
  res['data'] = source
  res['pretrain'] = pretrain_step_seconds(box, x[:2000], features,
                                          args.short, args.long)
  e = ltx.fit(0, box, x[:2000], features=features, num_steps=args.short,
              log_every=10**6)
  r = time_method(ltx, e, x, single=args.single, batch=args.batch,
                  repeats=args.repeats)
  r['finetune_steps'] = int(e.config.finetune_steps)
  r['vs_anchor'] = ANCHOR_FINETUNE_S / r['batch_s_per_image']
  res['finetune'] = r
  res['inference'] = inference(box, e, x[:args.infer], args.repeats)
  res['arithmetic'] = finetune_arithmetic(e, x)
  pt, ft, inf = res['pretrain'], res['finetune'], res['inference']
  print(f"data: {source}; {res['device']}" +
        ('; QUICK: tiny sizes' if args.quick else ''))
  print(f"pretraining: {pt['s_per_step']:.5f} s/step at batch 32 "
        f"({pt['steps_per_s']:.1f} steps/s); anchor "
        f"{ANCHOR_PRETRAIN_STEP_S} s/step -> {pt['vs_anchor']:.2f}x")
  print(f"finetuning ({ft['finetune_steps']} steps): one at a time "
        f"{ft['single_s_per_image']:.4f} s/img, batch {args.batch} "
        f"{ft['batch_s_per_image']:.4f} s/img -> batching "
        f"{ft['batching_ratio']:.2f}x; anchor {ANCHOR_FINETUNE_S} s/img -> "
        f"{ft['vs_anchor']:.2f}x")
  ar = res['arithmetic']
  print(f"arithmetic: {ar['gflop_per_image']:.3f} GFLOP per finetuned image "
        f"({ar['gflop_per_step']:.4f} per step); matmul rate "
        f"{ar['matmul_gflops']:.0f} GFLOP/s -> floor "
        f"{ar['floor_s_per_image']:.4f} s per image")
  print(f"pLTX masks {inf['pltx_images_per_s']:.0f} img/s vs black box "
        f"forward {inf['blackbox_images_per_s']:.0f} img/s -> "
        f"{100 * inf['ratio']:.0f}%")
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(res, f, indent=1)
  return res


if __name__ == '__main__':
  main()
