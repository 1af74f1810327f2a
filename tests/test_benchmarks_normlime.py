"""Smoke test of benchmarks/normlime_speed.py --quick (a subprocess)."""

import json
import os
import subprocess
import sys

import pytest

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_normlime_speed_quick_writes_every_part(tmp_path):
  out = tmp_path / 'normlime.json'
  proc = subprocess.run(
      [sys.executable, os.path.join(_ROOT, 'benchmarks', 'normlime_speed.py'),
       '--quick', '--skip', 'cnn,memory', '--out', str(out)],
      capture_output=True, text=True, check=False, timeout=300,
      env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'normlime.fit' in proc.stdout
  res = json.loads(out.read_text())
  assert res['quick'] is True and res['num_samples'] == 1000
  assert res['patches'] == 49
  # Skipped here (the CNN's compilation and the memory children's start-up
  # cost ~30 s); every full run checks the CNN's twin and the memory.
  assert 'cnn' not in res and 'memory' not in res
  for name in ('mlp',):
    r = res[name]
    # The numpy twin the lime peers call matches the JAX black box.
    assert r['numpy_twin']['match_1e4'], r['numpy_twin']
    assert r['numpy_twin']['max_abs_err_logits'] < 1e-4
    assert r['model']['rows_per_s'] > 0
    assert r['compile_calls'] and r['sizes']
    for s in r['sizes'].values():
      assert s['seconds'] > 0 and s['expl_per_s'] > 0 and s['finite']
      assert 0 < s['efficiency']
    assert {'seconds_at_10000', 'model_floor_seconds_at_10000', 'hit',
            'model_bound'} <= set(r['target'])
    li = r['lime_image']
    assert 'failed' not in li, li.get('failed')
    assert li['jax_loaded'] is False and li['xai_jax_loaded'] is False
    assert li['expl_per_s'] > 0 and li['ratio'] > 0
    assert li['agreement']['same_label_rows'] >= 1
    assert li['agreement']['mean_pearson'] > 0.5
  tab = res['tabular']
  assert tab['numpy_twin']['match_1e4']
  assert tab['expl_per_s'] > 0
  assert tab['lime_tabular']['jax_loaded'] is False
  assert tab['lime_tabular']['ratio'] > 0
  assert tab['lime_tabular']['agreement']['mean_pearson'] > 0.5
