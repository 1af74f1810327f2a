"""Smoke test of benchmarks/ltx_speed.py --quick (a subprocess): every part
runs and writes its fields; not the speed ratios (CI machines vary)."""

import json
import os
import subprocess
import sys

import pytest

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_ltx_speed_quick_writes_every_field(tmp_path):
  out = tmp_path / 'ltx.json'
  proc = subprocess.run(
      [sys.executable, os.path.join(_ROOT, 'benchmarks', 'ltx_speed.py'),
       '--quick', '--out', str(out)],
      capture_output=True, text=True, check=False, timeout=300,
      env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert proc.returncode == 0, proc.stderr[-3000:]
  res = json.loads(out.read_text())
  assert res['quick'] is True and res['batch'] == 4
  assert res['pretrain']['s_per_step'] > 0 and res['pretrain']['periods'] >= 1
  ft = res['finetune']
  assert ft['finetune_steps'] == 25
  assert ft['single_s_per_image'] > 0 and ft['batch_s_per_image'] > 0
  assert ft['batching_ratio'] > 0 and ft['vs_anchor'] > 0
  inf = res['inference']
  assert inf['pltx_images_per_s'] > 0 and inf['blackbox_images_per_s'] > 0
  ar = res['arithmetic']
  assert ar['gflop_per_image'] > ar['gflop_per_step'] > 0
  assert ar['floor_s_per_image'] > 0
