"""Smoke test of benchmarks/selective_speed.py --smoke (a subprocess).

Checks that every part runs and writes its fields, and that member i of
the FastSHAP ensemble equals member i trained alone; not the speed ratios
(CI machines vary).
"""

import json
import math
import os
import subprocess
import sys

import pytest

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_selective_speed_smoke_writes_every_field(tmp_path):
  out = tmp_path / 'selective.json'
  proc = subprocess.run(
      [sys.executable, os.path.join(_ROOT, 'benchmarks', 'selective_speed.py'),
       '--smoke', '--seed', '0', '--out', str(out)],
      capture_output=True, text=True, check=False, timeout=300,
      env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'HEADLINE' in proc.stdout
  res = json.loads(out.read_text())
  assert res['smoke'] is True and res['d'] == 10
  k = res['settings']['ensemble_size']
  assert len(res['runs']) == 1
  run = res['runs'][0]

  # Part 1: the vmapped ensemble against k sequential runs.
  tr = run['train']
  for side in (tr['ensemble'], tr['sequential']):
    assert side['wall_s'] >= side['compile_s'] >= 0
    assert side['steady_s'] > 0
  assert len(tr['members']) == k
  assert all(r > 0 for r in (tr['ratio']['wall_s'], tr['ratio']['steady_s']))
  assert {'hit_wall', 'hit_steady', 'ratio'} <= set(tr['target'])
  eq = tr['equality']
  assert len(eq['per_member']) == k
  assert eq['passed'], eq
  assert eq['max_abs_diff'] <= eq['atol']
  # The members differ from each other (so equality is not vacuous).
  assert eq['member_spread'] > 100 * eq['atol']

  # Part 2: selective.explain at every coverage.
  ex = run['explain']
  n = ex['mc_samples']
  assert n == 2 * res['d']
  assert ex['box']['rows_per_s'] > 0
  assert ex['box']['best_rows_per_s'] >= ex['box']['rows_per_s']
  assert ex['amortized_forward_s'] > 0
  assert [c['coverage'] for c in ex['coverages']] == res['settings'][
      'coverages']
  for c in ex['coverages']:
    assert c['finite']
    assert c['seconds'] > 0 and c['expl_per_s'] > 0
    assert c['effective_rows_per_s'] > 0 and c['efficiency'] > 0
    assert c['efficiency_vs_best'] > 0
    assert math.isclose(c['formula'], 1 + (1 - c['coverage']) * (n + 1))
    # num_inferences as explain reports it: 1 per row, n + 1 more per routed
    # row.
    assert math.isclose(c['mean_num_inferences'],
                        1 + c['routed_fraction'] * (n + 1), rel_tol=1e-9)
    if c['coverage'] in (0.0, 1.0):
      assert math.isclose(c['mean_num_inferences'], c['formula'])
    assert c['rows_evaluated'] >= ex['rows'] * c['mean_num_inferences']

  hl = res['headline']
  assert hl['equality_passed'] is True
  assert hl['others_cores_max'] >= 0
  for key in ('train_ratio_wall', 'train_ratio_steady'):
    assert hl[key]['mean'] > 0
  assert set(map(float, hl['efficiency'])) == set(res['settings']['coverages'])


def test_padded_rows_restates_selective_bucketing():
  import importlib.util  # pylint: disable=g-import-not-at-top
  from xai_jax import selective  # pylint: disable=g-import-not-at-top
  path = os.path.join(_ROOT, 'benchmarks', 'selective_speed.py')
  spec = importlib.util.spec_from_file_location('bench_selective_speed', path)
  bench = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(bench)
  assert bench.padded_rows(0) == 0
  bucket = selective._bucket  # pylint: disable=protected-access
  for n in list(range(1, 2100)) + [10_000, 10_240, 10_241]:
    assert bench.padded_rows(n) == bucket(n), n
