"""scikit-learn's bundled sets (xai_jax.data.sklearn_sets)."""

import numpy as np
import pytest

from xai_jax import data


def test_breast_cancer_split_is_complementary_stratified_and_train_standardised():
  tr = data.load('breast_cancer', split='train', key_or_seed=3)
  te = data.load('breast_cancer', split='test', key_or_seed=3)
  assert tr.x.shape == (427, 30) and te.x.shape == (142, 30)
  assert tr.x.dtype == np.float32 and tr.y.dtype == np.int32
  # Standardised with the training split only.
  np.testing.assert_allclose(tr.x.mean(0), 0.0, atol=1e-5)
  np.testing.assert_allclose(tr.x.std(0), 1.0, atol=1e-4)
  assert abs(te.x.mean()) > 1e-4
  # Stratified: both splits keep the class balance (212 malignant of 569).
  assert abs(tr.y.mean() - te.y.mean()) < 0.01
  # The two splits hold every row once: undo the scaling and compare.
  raw = np.concatenate([tr.x, te.x]) * tr.meta['std'] + tr.meta['mean']
  assert len(np.unique(np.round(raw[:, 0], 3))) >= 450
  again = data.load('breast_cancer', split='test', key_or_seed=3)
  np.testing.assert_array_equal(te.x, again.x)
  other = data.load('breast_cancer', split='test', key_or_seed=4)
  assert not np.array_equal(te.x, other.x)


def test_breast_cancer_bad_arguments():
  with pytest.raises(ValueError, match='split'):
    data.load('breast_cancer', split='valid')
  with pytest.raises(ValueError, match='test_fraction'):
    data.load('breast_cancer', test_fraction=1.5)
