"""Tests for experiments/normlime.py: config checks and a tiny end-to-end run."""

import json
import os

import pytest

from experiments import normlime as normlime_exp
from experiments.configs import normlime as normlime_config


def _config(variant, **overrides):
  c = normlime_config.get_config(variant)
  c.update_from_flattened_dict(overrides)   # 'a.b' = field b of a
  return c


@pytest.mark.parametrize('variant', normlime_config.VARIANTS)
def test_configs_are_valid(variant):
  c = normlime_config.get_config(variant)
  normlime_exp.check_config(c)
  assert set(c.methods) == set(normlime_exp.METHODS)


@pytest.mark.parametrize('overrides, match', [
    ({'methods': ('normlime', 'shap')}, 'unknown method'),
    ({'methods': ()}, 'empty'),
    ({'num_explain': 10**6}, 'exceeds'),
    ({'retrain.modes': ('drop',)}, 'retrain.modes'),
    ({'data': 'mnist'}, 'config.data'),
])
def test_bad_config_raises_before_training(tmp_path, overrides, match):
  with pytest.raises(ValueError, match=match):
    normlime_exp.run(_config('switch', **overrides), str(tmp_path))
  assert not os.path.exists(tmp_path / 'metrics.json')


@pytest.mark.slow
def test_switch_end_to_end_tiny(tmp_path):
  c = _config('switch', num_train=2000, num_test=500, num_explain=200,
              **{'blackbox.num_steps': 300, 'normlime.num_samples': 300,
                 'kernel_shap.num_samples': 64, 'retrain.num_train': 1000,
                 'retrain.num_steps': 150, 'retrain.num_random': 2,
                 'retrain.fractions': (0.2, 0.5, 0.8),
                 'evalx.num_steps': 200})
  res = normlime_exp.run(c, str(tmp_path))
  with open(tmp_path / 'metrics.json') as f:
    saved = json.load(f)
  for m in normlime_exp.METHODS:
    assert f'kar_auc/{m}' in saved and f'roar_auc/{m}' in saved
    assert f'kar/{m}/0.5' in saved and f'evalx_auc/{m}' in saved
  assert 'class_topk_recall/normlime_class' in saved
  # The switch label depends on X10's regime: every informed map ranks
  # better than random orderings when retrained on its top half.
  assert res['kar/normlime/0.5'] > res['kar/random/0.5']
  assert res['evalx/normlime/0.5'] > res['evalx/random/0.5']
  assert os.path.isfile(tmp_path / 'figures' / 'kar_roar.png')
  assert os.path.isfile(tmp_path / 'figures' / 'class_maps.png')


def test_summarize_mean_and_spread(tmp_path):
  for i, v in enumerate((0.8, 0.9)):
    d = tmp_path / f's{i}'
    d.mkdir()
    (d / 'metrics.json').write_text(json.dumps({
        'blackbox/test_accuracy': 0.95, 'kar_auc/normlime': v,
        'kar_auc/random': 0.5, 'roar_auc/normlime': 0.6}))
  out = normlime_exp.summarize([str(tmp_path / 's0'), str(tmp_path / 's1')])
  assert '| normlime | 0.850 ± 0.050 | 0.600 ± 0.000 |' in out
  assert '| random | 0.500 ± 0.000 |  |' in out
  assert '2 run(s)' in out
