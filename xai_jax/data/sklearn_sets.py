"""scikit-learn's bundled tabular sets (real data, shipped with the package).

`load_breast_cancer` (569 rows, 30 features, 2 classes): a seeded stratified
train/test split, standardised with the *training* split's mean and standard
deviation (so no statistic comes from the rows being explained). Needs
scikit-learn (`pip install scikit-learn`, part of the `test` extra); nothing
is downloaded.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from xai_jax import _checks
from xai_jax.data.synthetic import Dataset

SPLITS = ('train', 'test')


def load_breast_cancer(split: str = 'train', key_or_seed: Any = 0, *,
                       test_fraction: float = 0.25) -> Dataset:
  """The Wisconsin breast cancer set, one split, standardised.

  Args:
    split: 'train' or 'test'.
    key_or_seed: int seed of the split (the same seed gives complementary
      train and test rows).
    test_fraction: share of the rows in the test split, in (0, 1).
  Returns:
    `Dataset(x float32 [n, 30], y int32 [n], num_classes=2,
    name='breast_cancer', meta={'feature_names', 'mean', 'std'})`;
    y = 1 is benign (scikit-learn's coding).
  """
  _checks.check_choice('split', split, SPLITS)
  if not 0.0 < float(test_fraction) < 1.0:
    raise ValueError(f'test_fraction must be in (0, 1), got {test_fraction}.')
  try:
    from sklearn import datasets  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ImportError('load_breast_cancer needs scikit-learn: pip install '
                      'scikit-learn') from None
  raw = datasets.load_breast_cancer()
  x = np.asarray(raw.data, np.float64)
  y = np.asarray(raw.target, np.int32)
  seed = int(key_or_seed) if np.ndim(key_or_seed) == 0 else int(
      np.asarray(key_or_seed).ravel()[-1])
  rng = np.random.default_rng(seed)
  test = np.zeros(len(y), bool)
  for c in np.unique(y):                    # stratified by class
    rows = rng.permutation(np.flatnonzero(y == c))
    test[rows[:int(round(test_fraction * len(rows)))]] = True
  mean = x[~test].mean(0)
  std = x[~test].std(0)
  std = np.where(std > 0, std, 1.0)
  keep = test if split == 'test' else ~test
  xs = ((x[keep] - mean) / std).astype(np.float32)
  return Dataset(x=xs, y=y[keep], num_classes=2, name='breast_cancer',
                 meta={'feature_names': list(raw.feature_names),
                       'mean': mean.astype(np.float32),
                       'std': std.astype(np.float32)})


__all__ = ['load_breast_cancer']
