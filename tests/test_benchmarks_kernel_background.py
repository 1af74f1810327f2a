"""Smoke test of benchmarks/kernel_shap_background.py --quick (a subprocess)."""

import json
import os
import subprocess
import sys

import pytest

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_kernel_shap_background_quick(tmp_path):
  out = tmp_path / 'kb.json'
  proc = subprocess.run(
      [sys.executable,
       os.path.join(_ROOT, 'benchmarks', 'kernel_shap_background.py'),
       '--quick', '--no-peers', '--no-memory', '--out', str(out)],
      capture_output=True, text=True, check=False, timeout=300,
      env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert proc.returncode == 0, proc.stderr[-3000:]
  res = json.loads(out.read_text())
  (run,) = res['runs']
  assert run['reference']['ref_error'] < run['reference']['mean_abs_phi']
  rows = {(r['num_samples'], r['background_samples']): r for r in run['ours']}
  assert set(rows) == {(2248, None), tuple(res['headline'])}
  for r in rows.values():
    assert r['expl_per_s'] > 0
    # both settings are far better than explaining with zeros (mae ~ |phi|)
    assert r['mae'] < 0.5 * run['reference']['mean_abs_phi']
  assert rows[(2248, None)]['model_rows_per_expl'] == 224800
