"""Tests for experiments/selective.py: config checks, a tiny end-to-end run."""

import json
import os

import pytest

from experiments import selective as selective_exp
from experiments.configs import selective as selective_config

ALPHAS = ('0.0', '0.5', '0.8', '0.9', '1.0')


def _config(variant, **overrides):
  c = selective_config.get_config(variant)
  c.update_from_flattened_dict(overrides)   # 'a.b' = field b of a
  return c


@pytest.mark.parametrize('variant', selective_config.VARIANTS)
def test_configs_are_valid(variant):
  c = selective_config.get_config(variant)
  selective_exp.check_config(c)
  assert c.mc_budget in c.mc_budgets


@pytest.mark.parametrize('overrides, match', [
    ({'data': 'mnist'}, 'config.data'),
    ({'mc_budget': '8d'}, 'mc_budgets'),
    ({'coverages': (0.2, 0.5)}, 'coverages'),
    ({'splits': (0.5, 0.5, 0.5)}, 'splits'),
    ({'ensemble_size': 1}, 'ensemble_size'),
])
def test_bad_config_raises_before_training(tmp_path, overrides, match):
  with pytest.raises(ValueError, match=match):
    selective_exp.run(_config('tabular_d10', **overrides), str(tmp_path))
  assert not os.path.exists(tmp_path / 'metrics.json')


def test_splits_are_disjoint_and_sized():
  c = _config('breast_cancer')
  tr, cal, te = selective_exp.load_splits(c)
  assert (len(tr), len(cal), len(te)) == (285, 142, 142)
  c = _config('tabular_d10', num_rows=400)
  tr, cal, te = selective_exp.load_splits(c)
  assert (len(tr), len(cal), len(te)) == (200, 100, 100)
  rows = {r.tobytes() for ds in (tr, cal, te) for r in ds.x}
  assert len(rows) == 400


@pytest.mark.slow
def test_tabular_d10_end_to_end_tiny(tmp_path, monkeypatch):
  c = _config('tabular_d10', num_rows=400, ensemble_size=3,
              coverages=tuple(float(a) for a in ALPHAS),
              mc_budgets=('2d', '4d'),
              **{'blackbox.num_steps': 300, 'fastshap.num_steps': 400,
                 'learned.num_steps': 100})
  res = selective_exp.run(c, str(tmp_path))
  with open(tmp_path / 'metrics.json') as f:
    saved = json.load(f)
  assert saved == pytest.approx(res)
  for key in ('mse/amortized', 'spearman/amortized', 'fastshap_spearman',
              'uncertainty_auroc/deep', 'uncertainty_spearman/learned',
              'time/fastshap_fit_s', 'time/hq_s', 'time/run_s'):
    assert key in saved, key
  assert 'hq_noise' not in saved          # d = 10: exact Shapley targets
  for b in ('2d', '4d'):
    assert f'mse/mc_n_{b}' in saved and f'inferences/{b}/0.5' in saved
  assert 'mse/mc_n_d_plus_1' not in saved
  for m in selective_exp.METHODS:
    for a in ALPHAS:
      assert f'mse/{m}/{a}' in saved and f'spearman/{m}/{a}' in saved
    assert f'mse/{m}_4d/0.5' in saved
    assert f'claim/selective_below_both/{m[10:]}' in saved
    # Coverage 1 keeps Amor on every row: the amortized numbers.
    assert saved[f'mse/{m}/1.0'] == pytest.approx(saved['mse/amortized'],
                                                  rel=1e-6)
    assert saved[f'spearman/{m}/1.0'] == pytest.approx(
        saved['spearman/amortized'], rel=1e-6)
  # Exact targets at d = 10: FastSHAP ranks features well even when tiny.
  assert saved['fastshap_spearman'] > 0.7
  # Combining every row with MC^2d (lambda fitted on calibration) is no
  # worse than Amor alone, and far better than MC^2d alone.
  assert saved['mse/selective_deep/0.0'] <= 1.05 * saved['mse/amortized']
  assert saved['mse/selective_deep/0.0'] < 0.5 * saved['mse/mc_n_2d']
  # The oracle ranking is the best any uncertainty can do.
  assert saved['mse_area/selective_oracle'] <= \
      saved['mse_area/selective_random'] * 1.001
  # Inferences per explanation: 1 + routed share * (n + 1), n = 2d = 20.
  assert saved['inferences/2d/0.0'] == 22.0
  assert saved['inferences/2d/1.0'] == 1.0
  assert os.path.isfile(tmp_path / 'figures' / 'mse_vs_coverage.png')
  assert os.path.isfile(tmp_path / 'config.json')

  # A finished run is not redone: its metrics come back as they are.
  def boom(*args, **kwargs):
    raise AssertionError('fastshap.fit called on a finished workdir')
  monkeypatch.setattr(selective_exp.fastshap, 'fit', boom)
  assert selective_exp.run(c, str(tmp_path)) == saved
  other = _config('tabular_d10', seed=1)
  with pytest.raises(ValueError, match='another config'):
    selective_exp.run(other, str(tmp_path))


def test_summarize_mean_and_spread(tmp_path):
  dirs = []
  for i, v in enumerate((1e-4, 3e-4)):
    d = tmp_path / f's{i}'
    d.mkdir()
    r = {'blackbox/test_accuracy': 0.9, 'mse/amortized': 2e-4,
         'spearman/amortized': 0.9, 'fastshap_spearman': 0.9,
         'time/run_s': 30.0, 'd': 10, 'mse/mc_n_2d': 1e-3,
         'spearman/mc_n_2d': 0.8}
    for s in selective_exp.SCORES:
      r[f'uncertainty_auroc/{s}'] = 0.7
      r[f'uncertainty_spearman/{s}'] = 0.3
    for m in selective_exp.METHODS:
      for a in ('0.5', '0.8', '0.9'):
        r[f'mse/{m}/{a}'] = v
      r[f'spearman/{m}/0.8'] = 0.9
      r[f'mse_area/{m}'] = v
      r[f'claim/selective_below_both/{m[10:]}'] = 1.0
    (d / 'metrics.json').write_text(json.dumps(r))
    dirs.append(str(d))
  out = selective_exp.summarize(dirs)
  # MSE columns in units of 1e-4: (1 + 3) / 2 = 2 +- 1.
  assert '| selective_deep | 2.000 ± 1.000 |' in out
  assert '| amortized | 2.000 ± 0.000 |' in out
  assert '| mc_n_2d | 10.000 ± 0.000 |' in out
  assert '| n = 2d | 20.000 ± 0.000 | 10.000 ± 0.000 |' in out
  assert '| setup | 0.900 ± 0.000 |' in out
  assert '2 run(s)' in out
