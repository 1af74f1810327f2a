"""Tests for experiments/input_iba.py: config checks, tiny end-to-end runs."""

import json
import math
import os

import pytest

from experiments import input_iba as iiba_exp
from experiments.configs import input_iba as iiba_config


def _config(variant, **overrides):
  c = iiba_config.get_config(variant)
  c.update_from_flattened_dict(overrides)   # 'a.b' = field b of a
  return c


# InputIBA shortened: one GAN epoch of 2 batches, a few bottleneck steps.
_TINY_INPUT_IBA = {'method_kwargs.input_iba.gan_epochs': 1,
                   'method_kwargs.input_iba.gan_samples': 64,
                   'method_kwargs.input_iba.input_steps': 10}


@pytest.mark.parametrize('variant', iiba_config.VARIANTS)
def test_configs_are_valid(variant):
  c = iiba_config.get_config(variant)
  iiba_exp.check_config(c)
  assert 'iba' in c.methods and 'input_iba' in c.methods
  assert c.method_kwargs.input_iba.gan_epochs == 20       # the reference


@pytest.mark.parametrize('variant, overrides, match', [
    ('synthetic_images', {'methods': ('iba', 'lime')}, 'Unknown method'),
    ('synthetic_images', {'methods': ()}, 'empty'),
    ('synthetic_images', {'methods': ('iba', 'iba')}, 'twice'),
    ('synthetic_images_vit', {'methods': ('iba', 'gradcam')}, 'gradcam'),
    ('synthetic_text', {'methods': ('iba', 'occlusion')}, 'images only'),
    ('synthetic_images', {'num_explain': 5000}, 'num_explain'),
    ('synthetic_images', {'num_estimate': 1}, 'num_estimate'),
])
def test_bad_config_raises_before_training(tmp_path, variant, overrides,
                                           match):
  with pytest.raises(ValueError, match=match):
    iiba_exp.run(_config(variant, **overrides), str(tmp_path))
  assert not os.path.exists(tmp_path / 'metrics.json')


@pytest.mark.slow
def test_synthetic_images_end_to_end_tiny(tmp_path):
  c = _config('synthetic_images', num_train=2000, num_test=50, num_explain=6,
              num_estimate=200, num_steps=300,
              methods=('iba', 'input_iba', 'saliency', 'random'),
              **_TINY_INPUT_IBA)
  res = iiba_exp.run(c, str(tmp_path))
  with open(tmp_path / 'metrics.json') as f:
    saved = json.load(f)
  assert saved == pytest.approx(res)
  assert res['blackbox/test_accuracy'] > 0.8
  for m in c.methods:
    for metric in ('ehr', 'pointing_game', 'auroc'):
      v = res[f'{metric}/{m}']
      assert 0.0 <= v <= 1.0 and math.isfinite(v), (metric, m, v)
    assert res[f'explain_seconds/{m}'] >= 0
  # the latent bottleneck localises the pattern far better than chance
  assert res['auroc/iba'] > res['auroc/random'] + 0.2
  assert res['ehr/iba'] > res['ehr/random']
  assert res['ehr/input_iba'] > res['ehr/random']
  assert os.path.exists(tmp_path / 'figures' / 'maps.png')
  assert iiba_exp.table(res, c.methods)['iba']['auroc'] == res['auroc/iba']


@pytest.mark.slow
def test_synthetic_text_end_to_end_tiny(tmp_path):
  c = _config('synthetic_text', num_train=500, num_test=20, num_explain=4,
              num_estimate=100, num_steps=150,
              methods=('iba', 'input_iba', 'integrated_gradients', 'random'),
              **_TINY_INPUT_IBA)
  res = iiba_exp.run(c, str(tmp_path))
  for m in c.methods:
    assert 0.0 <= res[f'tpr/{m}'] <= 1.0
  assert res['tpr/integrated_gradients'] > res['tpr/random']
  assert os.path.exists(tmp_path / 'figures' / 'maps.png')


def test_claim_counts():
  runs = [{'ehr/input_iba': 0.6, 'ehr/iba': 0.3, 'ehr/saliency': 0.1,
           'auroc/input_iba': 0.7, 'auroc/iba': 0.9, 'auroc/saliency': 0.8},
          {'ehr/input_iba': 0.2, 'ehr/iba': 0.3, 'ehr/saliency': 0.1,
           'auroc/input_iba': 0.9, 'auroc/iba': 0.8, 'auroc/saliency': 0.6}]
  c = iiba_exp.claim_counts(runs)
  assert c['ehr: input_iba > iba'] == '1/2'
  assert c['ehr: input_iba > every gradient baseline'] == '2/2'
  assert c['auroc: input_iba > iba'] == '1/2'
  assert c['auroc: input_iba > every gradient baseline'] == '1/2'
  assert not any(k.startswith('insertion_auc') for k in c)
