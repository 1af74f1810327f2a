"""Tests for experiments/common.py: the shared data loader, targets rule,
black-box trainer/loader, timing and table helpers."""

import json
import os

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from experiments import common


def _cfg(**fields):
  base = {'seed': 0, 'num_train': 40, 'num_test': 20}
  return ml_collections.ConfigDict({**base, **fields})


def test_modality_of_names_the_sets():
  assert common.modality_of('switch') == 'tabular'
  assert common.modality_of('fashion_mnist') == 'image'
  assert common.modality_of('imdb') == 'text'
  with pytest.raises(ValueError, match="config.data='mnist'.*xor"):
    common.modality_of('mnist')


def test_load_data_synthetic_sets_do_not_overlap():
  tr, te = common.load_data(_cfg(data='xor'))
  assert tr.x.shape == (40, 10) and te.x.shape == (20, 10)
  assert not np.allclose(tr.x[:20], te.x)
  tr2, _ = common.load_data(_cfg(data='xor'))
  np.testing.assert_array_equal(tr.x, tr2.x)      # same seed, same data
  tr, te = common.load_data(_cfg(data='images', patch=4), num_classes=3)
  assert tr.x.shape == (40, 28, 28, 1) and tr.num_classes == 3
  tr, te = common.load_data(_cfg(data='text', seq_len=12, vocab_size=40,
                                 num_planted=2))
  assert tr.x.shape == (40, 12) and int(tr.ground_truth[0].sum()) == 2
  with pytest.raises(ValueError, match='data_dir'):
    common.load_data(_cfg(data='imdb', data_dir='', seq_len=8,
                          vocab_size=10))


def test_targets_are_soft_for_tabular_sets_and_labels_otherwise():
  tr, _ = common.load_data(_cfg(data='switch'))
  t = common.targets(tr)
  assert t.shape == (40, 2)
  np.testing.assert_allclose(t.sum(-1), 1.0, atol=1e-6)
  np.testing.assert_array_equal(common.eval_labels(tr), t.argmax(-1))
  tr, _ = common.load_data(_cfg(data='text', seq_len=12, vocab_size=40))
  np.testing.assert_array_equal(common.targets(tr), tr.y)
  np.testing.assert_array_equal(common.eval_labels(tr), tr.y)


def test_fit_blackbox_trains_resumes_and_restores(tmp_path):
  config = _cfg(data='xor', num_train=2000, num_test=500, model='mlp',
                model_kwargs={'num_classes': 2, 'hidden': (16,)},
                optimizer='adam', learning_rate=3e-3, batch_size=100,
                num_steps=60, log_every=30, checkpoint_every=60)
  tr, te = common.load_data(config)
  workdir = str(tmp_path)
  common.prepare_workdir(workdir, config)
  assert json.load(open(os.path.join(workdir, 'config.json')))['data'] == 'xor'
  box, info = common.fit_blackbox('mlp', config.model_kwargs, config, tr, te,
                                  seed=0, workdir=workdir)
  assert set(info) == {'train_seconds', 'train_accuracy', 'test_accuracy'}
  assert 0.0 <= info['test_accuracy'] <= 1.0 and info['train_seconds'] > 0
  restored = common.restore_blackbox(workdir)
  np.testing.assert_allclose(restored(te.x[:8]), box(te.x[:8]), rtol=1e-5,
                             atol=1e-6)
  with pytest.raises(FileNotFoundError, match='No checkpoint'):
    empty = str(tmp_path / 'empty')
    common.prepare_workdir(empty, config)
    common.restore_blackbox(empty)


def test_time_twice_splits_the_compiling_call():
  calls = []

  def fn():
    calls.append(1)
    return jnp.arange(3.0) * 2
  out, first, second = common.time_twice(fn)
  assert len(calls) == 2 and first.wall >= 0 and second.wall >= 0
  np.testing.assert_allclose(out, [0.0, 2.0, 4.0])


def test_format_table():
  text = common.format_table({'l2x': {'median_rank': 3.0, 'tpr': 0.9},
                              'random': {'median_rank': 5.5}}, title='T')
  lines = text.splitlines()
  assert lines[0] == 'T' and 'median_rank' in lines[1] and 'tpr' in lines[1]
  assert lines[3].startswith('l2x') and '5.5' in lines[4]
  assert 'value' in common.format_table({'a': 1.0})
