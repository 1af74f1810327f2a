"""Tests for experiments/ltx.py: config checks, claim counting, a tiny
end-to-end run."""

import json
import os

import pytest

from experiments import ltx as ltx_exp
from experiments.configs import ltx as ltx_config


def _config(variant, **overrides):
  c = ltx_config.get_config(variant)
  c.update_from_flattened_dict(overrides)   # 'a.b' = field b of a
  return c


@pytest.mark.parametrize('variant', ltx_config.VARIANTS)
def test_configs_are_valid(variant):
  c = ltx_config.get_config(variant)
  ltx_exp.check_config(c)
  assert c.methods[:2] == ('pltx', 'ltx')
  kw = c.method_kwargs.ltx
  assert kw.finetune_steps == 25 and kw.batch_size == 32   # the reference
  assert kw.net == c.model                  # the explained model's family
  if c.model == 'cnn':
    assert tuple(kw.features) == tuple(c.model_kwargs.features)
  else:
    for f in ('patch', 'dim', 'depth', 'heads', 'mlp_dim'):
      assert kw[f] == c.model_kwargs[f]


@pytest.mark.parametrize('variant, overrides, match', [
    ('synthetic_images', {'methods': ('ltx', 'lime')}, 'Unknown method'),
    ('synthetic_images', {'methods': ()}, 'empty'),
    ('synthetic_images', {'methods': ('ltx', 'ltx')}, 'twice'),
    ('synthetic_images_vit', {'methods': ('ltx', 'gradcam')}, 'gradcam'),
    ('synthetic_images', {'num_explain': 5000}, 'num_explain'),
    ('synthetic_images', {'num_pretrain': 9900}, 'num_pretrain'),
])
def test_bad_config_raises_before_training(tmp_path, variant, overrides,
                                           match):
  with pytest.raises(ValueError, match=match):
    ltx_exp.run(_config(variant, **overrides), str(tmp_path))
  assert not os.path.exists(tmp_path / 'metrics.json')


def test_claim_counts():
  runs = [{'neg_auc/ltx': 80, 'neg_auc/pltx': 70, 'neg_auc/saliency': 60,
           'pos_auc/ltx': 20, 'pos_auc/pltx': 30, 'pos_auc/saliency': 10,
           'miou/ltx': 0.5, 'miou/pltx': 0.5},
          {'neg_auc/ltx': 60, 'neg_auc/pltx': 70, 'neg_auc/saliency': 50,
           'pos_auc/ltx': 20, 'pos_auc/pltx': 30, 'pos_auc/saliency': 40}]
  c = ltx_exp.claim_counts(runs)
  assert c['neg_auc: ltx better than pltx'] == '1/2'
  assert c['neg_auc: ltx better than every gradient baseline'] == '2/2'
  assert c['pos_auc: ltx better than pltx'] == '2/2'          # lower wins
  assert c['pos_auc: ltx better than every gradient baseline'] == '1/2'
  assert c['miou: ltx better than pltx'] == '0/1'             # a tie fails


@pytest.mark.slow
def test_synthetic_images_end_to_end_tiny(tmp_path):
  c = _config('synthetic_images', num_train=2000, num_test=40, num_explain=6,
              num_pretrain=1000, num_validation=100, num_estimate=200,
              num_steps=300, methods=('pltx', 'ltx', 'saliency', 'random'),
              **{'method_kwargs.ltx.epochs': 2,
                 'method_kwargs.ltx.finetune_steps': 5})
  res = ltx_exp.run(c, str(tmp_path))
  with open(tmp_path / 'metrics.json') as f:
    assert json.load(f) == pytest.approx(res)
  assert res['blackbox/test_accuracy'] > 0.8
  assert res['ltx/pretrain_steps'] == 62
  assert 0 <= res['ltx/kept_step_mean'] <= 5
  assert 'ltx/validation_objective' in res
  for m in c.methods:
    for k in ('pos_auc', 'neg_auc', 'del_auc', 'ins_auc'):
      assert 0 <= res[f'{k}/{m}'] <= 90
    assert 0 <= res[f'miou/{m}'] <= 1 and 0 <= res[f'map/{m}'] <= 1
  assert os.path.exists(tmp_path / 'figures' / 'maps.png')
  # A rerun resumes the black box and the pretrained explainer.
  again = ltx_exp.run(c, str(tmp_path))
  assert again['pos_auc/pltx'] == pytest.approx(res['pos_auc/pltx'])
