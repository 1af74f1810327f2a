"""End-to-end: experiments.train_blackbox trains, writes its files, resumes."""

import json
import os

import numpy as np
import pytest

from experiments import train_blackbox
from experiments.configs import train_blackbox as cfg


def test_unknown_variant():
  with pytest.raises(ValueError, match="Unknown config variant 'nope'"):
    cfg.get_config('nope')


@pytest.mark.slow
def test_run_writes_outputs_and_restores(tmp_path):
  c = cfg.get_config('xor')
  c.num_train, c.num_test, c.num_steps = 20_000, 4_000, 400
  c.checkpoint_every = 200
  workdir = str(tmp_path)
  box, metrics = train_blackbox.run(c, workdir)
  # Agreement with the Bayes classifier argmax P(Y|X): XOR is learnable.
  assert metrics['test_accuracy'] > 0.85
  for f in ('config.json', 'metrics.json', 'metrics.jsonl',
            'figures/confusion.png'):
    assert os.path.exists(os.path.join(workdir, f)), f
  with open(os.path.join(workdir, 'metrics.json')) as fh:
    saved = json.load(fh)
  assert saved['test_accuracy'] == pytest.approx(metrics['test_accuracy'])
  restored = train_blackbox.restore_blackbox(workdir)
  x = np.random.default_rng(0).normal(size=(16, 10)).astype(np.float32)
  np.testing.assert_allclose(restored(x), box(x), rtol=1e-5, atol=1e-6)
  # Rerunning the same command resumes from the final checkpoint: same model.
  box2, metrics2 = train_blackbox.run(c, workdir)
  np.testing.assert_allclose(box2(x), box(x), rtol=1e-5, atol=1e-6)
  assert metrics2['test_accuracy'] == pytest.approx(metrics['test_accuracy'])
