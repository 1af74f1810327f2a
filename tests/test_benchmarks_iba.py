"""Smoke test of benchmarks/iba_speed.py --quick (a subprocess): the IBA and
WGAN-arithmetic parts run and write their fields; not the speed ratios (CI
machines vary)."""

import json
import os
import subprocess
import sys

import pytest

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_iba_speed_quick_writes_every_field(tmp_path):
  out = tmp_path / 'iba.json'
  proc = subprocess.run(
      [sys.executable, os.path.join(_ROOT, 'benchmarks', 'iba_speed.py'),
       '--quick', '--single', '1', '--skip', 'input_iba', '--out', str(out)],
      capture_output=True, text=True, check=False, timeout=300,
      env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert proc.returncode == 0, proc.stderr[-3000:]
  res = json.loads(out.read_text())
  assert res['quick'] is True and res['batch'] == 4
  # InputIBA's timing runs the same code path (time_method); the colab and
  # the experiment tests run InputIBA itself.
  assert 'input_iba' not in res
  for name in ('iba',):
    r = res[name]
    assert r['single_s_per_image'] > 0 and r['batch_s_per_image'] > 0
    assert r['batch_compile_s'] >= 0 and r['batch_calls'] >= 1
    assert r['batching_ratio'] > 0 and r['vs_anchor'] > 0
  w = res['wgan']
  assert (w['critic_steps'], w['generator_steps']) == (140, 40)
  # a critic step costs more than a generator step (64 vs 32 samples)
  assert w['critic_step_gflop'] > w['generator_step_gflop'] > 0
  assert w['wgan_floor_s_per_image'] > 0
