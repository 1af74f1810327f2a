"""Smoke tests of the L2X benchmark scripts on tiny data (not timed)."""

import importlib.util
import os

import numpy as np
import pytest

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(name):
  path = os.path.join(_ROOT, 'benchmarks', f'{name}.py')
  spec = importlib.util.spec_from_file_location(f'bench_{name}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_l2x_speed_blackbox_approximator_runs_and_reports(capsys):
  bench = _load('l2x_speed')
  rows = bench.main(['--sets', 'xor', '--num_train', '4000', '--num_test',
                     '1000', '--approximator', 'blackbox'])
  assert len(rows) == 1 and rows[0]['set'] == 'xor'
  r = rows[0]
  assert r['train_s'] >= r['compile_s'] >= 0
  assert r['explain_s'] > 0 and r['rows_per_s'] > 0
  assert 'approximator blackbox' in capsys.readouterr().out


def test_l2x_objective_vs_rank_scores_every_key():
  bench = _load('l2x_objective_vs_rank')
  rows = bench.main(['--set', 'xor', '--keys', '0,1', '--num_train', '4000',
                     '--num_test', '1000', '--batch_size', '500',
                     '--approximator', 'blackbox', '--sampler', 'concrete',
                     '--tau', '0.1'])
  assert [r['key'] for r in rows] == [0, 1]
  for r in rows:
    assert np.isfinite(r['ce']) and r['ce'] > 0
    assert 1.5 <= r['median_rank'] <= 9.5
    assert 0.0 <= r['tpr'] <= 1.0
    # k = 2 features per row: the frequencies sum to 2.
    np.testing.assert_allclose(np.sum(r['freq']), 2.0, atol=1e-5)


def test_l2x_objective_vs_rank_rejects_bad_keys():
  bench = _load('l2x_objective_vs_rank')
  with pytest.raises(SystemExit, match='--keys'):
    bench.main(['--keys', 'a,b'])
  with pytest.raises(SystemExit, match='--keys'):
    bench.main(['--keys', ','])


def test_l2x_step_costs_times_every_case(capsys):
  bench = _load('l2x_step_costs')
  bench.main(['--batch_size', '100', '--repeats', '1'])
  out = capsys.readouterr().out
  rows = [l for l in out.splitlines() if l.startswith('| ') and 'ms' not in l
          and '---' not in l]
  assert len(rows) == 5
  for row in rows:
    ms = float(row.split('|')[2])
    assert ms > 0
