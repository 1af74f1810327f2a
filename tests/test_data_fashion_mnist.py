"""Tests for xai_jax/data/fashion_mnist.py (IDX reader, loader, class_pair)."""

import gzip
import os

import numpy as np
import pytest

from xai_jax import data
from xai_jax.data import fashion_mnist as fm


def _write_set(folder, gz, n_train=7, n_test=3, seed=0):
  rng = np.random.default_rng(seed)
  out = {}
  for split, n in (('train', n_train), ('test', n_test)):
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    img_stem, lab_stem = fm.FILES[split]
    suffix = '.gz' if gz else ''
    fm.write_idx(os.path.join(folder, img_stem + suffix), images)
    fm.write_idx(os.path.join(folder, lab_stem + suffix), labels)
    out[split] = images, labels
  return out


@pytest.mark.parametrize('gz', [True, False])
def test_tiny_idx_files_read_back_exactly(tmp_path, gz):
  ref = _write_set(str(tmp_path), gz)
  for split in ('train', 'test'):
    images, labels = ref[split]
    ds = fm.load_fashion_mnist(split, data_dir=tmp_path)
    assert ds.x.shape == (len(images), 28, 28, 1)
    assert ds.x.dtype == np.float32 and ds.y.dtype == np.int32
    np.testing.assert_array_equal(ds.x[..., 0] * 255.0, images)
    np.testing.assert_array_equal(ds.y, labels)
    assert ds.num_classes == 10 and ds.name == 'fashion_mnist'
    assert ds.meta['class_names'] == fm.CLASS_NAMES
    raw = fm.load_fashion_mnist(split, data_dir=tmp_path, normalize=False)
    assert raw.x.dtype == np.uint8
    np.testing.assert_array_equal(raw.x[..., 0], images)


def test_gzip_detected_by_content_and_header_bytes(tmp_path):
  arr = np.arange(6, dtype=np.uint8).reshape(2, 3)
  fm.write_idx(tmp_path / 'a.gz', arr)
  raw = gzip.decompress((tmp_path / 'a.gz').read_bytes())
  # Magic 0x00000802 (uint8, 2 dims), then the big-endian dims 2 and 3.
  assert raw[:4] == bytes([0, 0, 8, 2])
  assert raw[4:12] == bytes([0, 0, 0, 2, 0, 0, 0, 3])
  assert raw[12:] == bytes(range(6))
  # A gzipped file without the .gz suffix is still read.
  (tmp_path / 'b').write_bytes((tmp_path / 'a.gz').read_bytes())
  np.testing.assert_array_equal(fm.read_idx(tmp_path / 'b'), arr)


@pytest.mark.parametrize('dtype', [np.uint8, np.int8, np.int16, np.int32,
                                   np.float32, np.float64])
@pytest.mark.parametrize('suffix', ['', '.gz'])
def test_idx_round_trip(tmp_path, dtype, suffix):
  arr = (np.arange(24).reshape(2, 3, 4) * 3 - 7).astype(dtype)
  path = tmp_path / f'x{suffix}'
  fm.write_idx(path, arr)
  back = fm.read_idx(path)
  assert back.dtype == np.dtype(dtype) and back.shape == arr.shape
  np.testing.assert_array_equal(back, arr)


def test_env_var_and_precedence(tmp_path, monkeypatch):
  a, b = tmp_path / 'a', tmp_path / 'b'
  a.mkdir()
  b.mkdir()
  ref_a = _write_set(str(a), True, seed=1)
  ref_b = _write_set(str(b), False, seed=2)
  monkeypatch.setenv(fm.ENV_VAR, str(a))
  np.testing.assert_array_equal(fm.load_fashion_mnist('test').y,
                                ref_a['test'][1])
  # The argument beats the environment variable.
  np.testing.assert_array_equal(fm.load_fashion_mnist('test', b).y,
                                ref_b['test'][1])
  assert fm.fashion_mnist_dir() == str(a)
  monkeypatch.delenv(fm.ENV_VAR)
  assert fm.fashion_mnist_dir() == fm.DEFAULT_DIR


def test_missing_files_message(tmp_path):
  with pytest.raises(FileNotFoundError) as e:
    fm.load_fashion_mnist('train', data_dir=tmp_path)
  msg = str(e.value)
  assert 'apt-get install -y dataset-fashion-mnist' in msg
  assert fm.ENV_VAR in msg and 'data_dir' in msg and str(tmp_path) in msg
  assert 'train-images-idx3-ubyte' in msg


def test_bad_split_and_bad_files(tmp_path):
  with pytest.raises(ValueError, match='split'):
    fm.load_fashion_mnist('validation', data_dir=tmp_path)
  (tmp_path / 'bad').write_bytes(b'\x01\x02\x03\x04hello')
  with pytest.raises(ValueError, match='IDX'):
    fm.read_idx(tmp_path / 'bad')
  arr = np.zeros((2, 2), np.uint8)
  fm.write_idx(tmp_path / 'short', arr)
  (tmp_path / 'short').write_bytes((tmp_path / 'short').read_bytes()[:-1])
  with pytest.raises(ValueError, match='shape'):
    fm.read_idx(tmp_path / 'short')


def test_class_pair(tmp_path):
  _write_set(str(tmp_path), True, n_train=200)
  ds = fm.load_fashion_mnist('train', data_dir=tmp_path)
  pair = fm.class_pair(ds, (3, 8))
  keep = (ds.y == 3) | (ds.y == 8)
  assert len(pair) == keep.sum() > 0
  np.testing.assert_array_equal(pair.x, ds.x[keep])
  np.testing.assert_array_equal(pair.y, (ds.y[keep] == 8).astype(np.int32))
  assert pair.num_classes == 2 and pair.y.dtype == np.int32
  assert pair.meta['class_names'] == ('Dress', 'Bag')
  assert pair.name == 'fashion_mnist_3_vs_8'
  # Order (b, a) flips the labels.
  flipped = fm.class_pair(ds, (8, 3))
  np.testing.assert_array_equal(flipped.y, 1 - pair.y)
  for bad in [(3, 3), (3, 10), (-1, 2), (1,), 'ab', (1.0, 2)]:
    with pytest.raises(ValueError, match='classes'):
      fm.class_pair(ds, bad)


def test_class_pair_keeps_soft_targets_and_ground_truth():
  ds = data.make_images(40, 0, num_classes=4)
  pair = data.class_pair(ds, (1, 2))
  keep = (ds.y == 1) | (ds.y == 2)
  np.testing.assert_array_equal(pair.probs, ds.probs[keep][:, [1, 2]])
  np.testing.assert_array_equal(pair.ground_truth, ds.ground_truth[keep])
  np.testing.assert_array_equal(pair.meta['ground_truth_patches'],
                                ds.meta['ground_truth_patches'][keep])


def test_registry_loads_fashion_mnist(tmp_path):
  ref = _write_set(str(tmp_path), True)
  ds = data.load('fashion_mnist', split='test', data_dir=str(tmp_path))
  np.testing.assert_array_equal(ds.y, ref['test'][1])


REAL = all(
    os.path.exists(os.path.join(fm.DEFAULT_DIR, stem + '.gz'))
    or os.path.exists(os.path.join(fm.DEFAULT_DIR, stem))
    for pair in fm.FILES.values() for stem in pair)


@pytest.mark.skipif(not REAL, reason='dataset-fashion-mnist not installed')
def test_real_fashion_mnist(monkeypatch):
  monkeypatch.delenv(fm.ENV_VAR, raising=False)
  test = fm.load_fashion_mnist('test')
  assert test.x.shape == (10000, 28, 28, 1) and test.y.shape == (10000,)
  np.testing.assert_array_equal(np.bincount(test.y), [1000] * 10)
  assert 0.0 <= test.x.min() and test.x.max() == 1.0
  train = fm.load_fashion_mnist('train', normalize=False)
  assert train.x.shape == (60000, 28, 28, 1) and train.x.dtype == np.uint8
  np.testing.assert_array_equal(np.bincount(train.y), [6000] * 10)
  # Plausible images: the mean pixel of Fashion-MNIST train is ~72.9 / 255.
  assert abs(train.x.mean() - 72.94) < 0.5
