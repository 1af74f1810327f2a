"""Tests for experiments/attribution.py: config checks and end-to-end runs."""

import json
import os

import numpy as np
import pytest

from experiments import attribution
from experiments.configs import attribution as attribution_config


def _config(variant, **overrides):
  c = attribution_config.get_config(variant)
  c.update_from_flattened_dict(overrides)   # 'a.b' = field b of a
  return c


def _read_metrics(workdir):
  with open(os.path.join(workdir, 'metrics.json')) as f:
    return json.load(f)


# ------------------------------------------------------------- config checks
def test_get_config_unknown_variant():
  with pytest.raises(ValueError, match='Unknown config variant'):
    attribution_config.get_config('mnist')


@pytest.mark.parametrize('variant', attribution_config.VARIANTS)
def test_configs_are_valid(variant):
  c = attribution_config.get_config(variant)
  attribution.check_config(c)
  assert set(c.methods) <= set(attribution.METHODS)
  if variant == 'tabular':
    assert 'exact_shapley' in c.methods and 'gradcam' not in c.methods
  else:
    assert 'exact_shapley' not in c.methods and 'rise' in c.methods
  assert ('gradcam' in c.methods) == (c.model == 'cnn')


@pytest.mark.parametrize('variant, overrides, match', [
    ('tabular', {'methods': ('saliency', 'shap')}, "Unknown method 'shap'"),
    ('tabular', {'methods': ('gradcam',)}, 'needs an image CNN'),
    ('tabular', {'methods': ('rise',)}, 'explains images'),
    ('images', {'methods': ('exact_shapley',)}, 'only run on tabular'),
    ('fashion_mnist_vit', {'methods': ('gradcam',)}, 'needs an image CNN'),
    ('tabular', {'methods': ()}, 'config.methods is empty'),
    ('tabular', {'methods': ('random', 'random')}, 'lists a method twice'),
    ('tabular', {'data': 'text'}, 'config.data'),
    ('tabular', {'num_explain': 0}, 'config.num_explain'),
    ('tabular', {'num_explain': 10**6}, 'exceeds config.num_test'),
    ('tabular', {'space': 'logits'}, 'config.space'),
])
def test_bad_config_raises_before_training(tmp_path, variant, overrides,
                                           match):
  c = _config(variant, **overrides)
  with pytest.raises(ValueError, match=match):
    attribution.run(c, str(tmp_path))
  assert not os.path.exists(os.path.join(tmp_path, 'blackbox'))


def test_table_rows_and_columns():
  results = {'saliency/median_rank': 3.0, 'saliency/explain_per_sec': 10.0,
             'random/median_rank': 5.5, 'blackbox/test_accuracy': 0.9,
             'saliency/infidelity': 1.0, 'num_explain': 20.0}
  rows = attribution.table(results, ('random', 'saliency'))
  assert list(rows) == ['random', 'saliency']
  assert rows['saliency'] == {'median_rank': 3.0, 'explain_per_sec': 10.0}


# ------------------------------------------------------------- end to end
TABULAR_METHODS = ('saliency', 'integrated_gradients', 'occlusion',
                   'kernel_shap', 'permutation_shap', 'exact_shapley',
                   'random')


@pytest.mark.slow
def test_tabular_end_to_end(tmp_path):
  workdir = str(tmp_path)
  c = _config('tabular', data='xor', num_train=20_000, num_test=200,
              num_steps=300, log_every=100, checkpoint_every=300,
              num_explain=20, methods=TABULAR_METHODS,
              **{'method_kwargs.integrated_gradients.steps': 16,
                 'method_kwargs.kernel_shap.num_samples': 64,
                 'method_kwargs.permutation_shap.num_permutations': 8,
                 'metrics.num_subsets': 20, 'metrics.infidelity_samples': 20})
  results = attribution.run(c, workdir)
  m = _read_metrics(workdir)
  assert m == pytest.approx(results)
  for name in TABULAR_METHODS:
    for metric in ('median_rank', 'tpr', 'fdr', 'auroc', 'deletion_auc',
                   'insertion_auc', 'sensitivity_n', 'infidelity',
                   'infidelity_normalized', 'explain_per_sec',
                   'compile_seconds'):
      assert np.isfinite(m[f'{name}/{metric}']), (name, metric)
    assert m[f'{name}/explain_per_sec'] > 0
  for name in ('kernel_shap', 'permutation_shap'):
    for metric in ('shapley_mae', 'shapley_rmse', 'shapley_spearman'):
      assert f'{name}/{metric}' in m
  assert 'exact_shapley/shapley_mae' not in m
  assert m['blackbox/test_accuracy'] > 0.8
  # XOR: two true features of ten; optimum median rank 1.5, random ~5.5.
  assert m['random/median_rank'] > 4.0
  for name in ('exact_shapley', 'kernel_shap', 'permutation_shap',
               'occlusion'):
    assert m[f'{name}/median_rank'] < m['random/median_rank'] - 1.5, name
    assert m[f'{name}/tpr'] > m['random/tpr'] + 0.2, name
    assert m[f'{name}/insertion_auc'] > m['random/insertion_auc'], name
  # The estimators are close to the exact values (64 coalitions, 8 perms).
  assert m['kernel_shap/shapley_spearman'] > 0.7
  assert m['permutation_shap/shapley_spearman'] > 0.7
  for f in ('mean_abs_attribution.png', 'deletion_insertion.png'):
    assert os.path.getsize(os.path.join(workdir, 'figures', f)) > 0
  with open(os.path.join(workdir, 'config.json')) as f:
    assert json.load(f)['data'] == 'xor'
  assert os.path.isdir(os.path.join(workdir, 'blackbox', 'checkpoints'))


# Saliency, integrated gradients and KernelSHAP run in the tabular test; the
# image test covers the image-only paths (Grad-CAM on the split CNN, RISE in
# probability space, patch players for occlusion / LIME / permutation SHAP
# and the permutation-sampling Shapley reference).
IMAGE_METHODS = ('gradcam', 'occlusion', 'rise', 'lime', 'permutation_shap',
                 'random')


@pytest.mark.slow
def test_images_end_to_end(tmp_path):
  workdir = str(tmp_path)
  c = _config('images', num_train=1_000, num_test=100, num_steps=40,
              log_every=20, checkpoint_every=40, num_explain=12,
              methods=IMAGE_METHODS, num_figure_examples=2,
              **{'model_kwargs.features': (8, 16), 'model_kwargs.dense': 32,
                 'method_kwargs.rise.num_masks': 100,
                 'method_kwargs.lime.num_samples': 100,
                 'method_kwargs.permutation_shap.num_permutations': 4,
                 'shapley_reference.num_permutations': 40,
                 'metrics.num_subsets': 20, 'metrics.infidelity_samples': 20})
  attribution.run(c, workdir)
  m = _read_metrics(workdir)
  for name in IMAGE_METHODS:
    for metric in ('pointing_game', 'auroc', 'deletion_auc', 'insertion_auc',
                   'sensitivity_n', 'infidelity_normalized',
                   'explain_per_sec'):
      assert np.isfinite(m[f'{name}/{metric}']), (name, metric)
    assert 0.0 <= m[f'{name}/pointing_game'] <= 1.0
    assert 0.0 <= m[f'{name}/deletion_auc'] <= 1.0
    assert 0.0 <= m[f'{name}/insertion_auc'] <= 1.0
  assert not any(k.endswith('/median_rank') for k in m)  # tabular only
  # Non-negative maps (Grad-CAM; RISE explains probabilities) have positive
  # heat: a finite heat ratio.
  for name in ('gradcam', 'rise'):
    assert 0.0 <= m[f'{name}/ehr'] <= 1.0
  # Occlusion and permutation SHAP scores are output drops of patches, so the
  # summed scores of random patch subsets track the drop when those patches
  # are removed (sensitivity-n), unlike random scores.
  for name in ('occlusion', 'permutation_shap'):
    assert m[f'{name}/sensitivity_n'] > m['random/sensitivity_n'] + 0.3, name
  # 4 permutations agree with the 40-permutation reference in ranking.
  assert m['permutation_shap/shapley_spearman'] > 0.5
  assert 'occlusion/shapley_mae' not in m
  for f in ('heatmaps.png', 'deletion_insertion.png'):
    assert os.path.getsize(os.path.join(workdir, 'figures', f)) > 0
