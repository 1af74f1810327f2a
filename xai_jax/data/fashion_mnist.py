"""Fashion-MNIST from local IDX files (no download).

Debian's `dataset-fashion-mnist` package installs the four gzipped IDX files
in `/usr/share/datasets/fashion-mnist/`:

    apt-get update && apt-get install -y dataset-fashion-mnist

Another folder is chosen by the `data_dir` argument or the environment
variable `XAI_JAX_FASHION_MNIST_DIR`. Files may be gzipped (`.gz`) or raw.
"""

from __future__ import annotations

import gzip
import os
from typing import Any, Sequence

import numpy as np

from xai_jax import _checks
from xai_jax.data.synthetic import Dataset

DEFAULT_DIR = '/usr/share/datasets/fashion-mnist/'
ENV_VAR = 'XAI_JAX_FASHION_MNIST_DIR'
CLASS_NAMES = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat',
               'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot')
# split -> (images file, labels file), without the optional '.gz'.
FILES = {
    'train': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
    'test': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'),
}
SPLITS = tuple(FILES)

# IDX type codes (the third magic byte) -> big-endian numpy dtypes.
_IDX_DTYPES = {0x08: np.dtype('u1'), 0x09: np.dtype('i1'),
               0x0B: np.dtype('>i2'), 0x0C: np.dtype('>i4'),
               0x0D: np.dtype('>f4'), 0x0E: np.dtype('>f8')}
_IDX_CODES = {v: k for k, v in _IDX_DTYPES.items()}


def read_idx(path: str | os.PathLike) -> np.ndarray:
  """Reads one IDX file (gzipped or raw, detected from its first bytes).

  Format: 2 zero bytes, a type byte (0x08 = uint8 ...), the number of
  dimensions, one big-endian uint32 per dimension, then the data row-major.

  Returns:
    The array with its stored shape, e.g. uint8 [n, 28, 28] or [n].
  """
  with open(path, 'rb') as f:
    raw = f.read()
  if raw[:2] == b'\x1f\x8b':
    raw = gzip.decompress(raw)
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
    raise ValueError(f'{path} is not an IDX file (bad magic number '
                     f'{raw[:4]!r}).')
  dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
  shape = tuple(int(v) for v in np.frombuffer(raw, '>u4', ndim, offset=4))
  size = int(np.prod(shape)) if shape else 1
  offset = 4 + 4 * ndim
  if len(raw) - offset != size * dtype.itemsize:
    raise ValueError(f'{path}: header says shape {shape} '
                     f'({size * dtype.itemsize} bytes of data) but the file '
                     f'holds {len(raw) - offset}.')
  data = np.frombuffer(raw, dtype, size, offset=offset).reshape(shape)
  return data.astype(dtype.newbyteorder('='))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
  """Writes `array` as an IDX file, gzipped if `path` ends with '.gz'."""
  array = np.asarray(array)
  code = _IDX_CODES.get(array.dtype.newbyteorder('>'),
                        _IDX_CODES.get(array.dtype))
  if code is None:
    raise ValueError(f'array dtype {array.dtype} has no IDX type code.')
  be = array.astype(_IDX_DTYPES[code], copy=False)
  header = bytes([0, 0, code, array.ndim]) + np.asarray(
      array.shape, '>u4').tobytes()
  payload = header + be.tobytes()
  if str(path).endswith('.gz'):
    payload = gzip.compress(payload)
  with open(path, 'wb') as f:
    f.write(payload)


def fashion_mnist_dir(data_dir: str | os.PathLike | None = None) -> str:
  """The folder: `data_dir`, else $XAI_JAX_FASHION_MNIST_DIR, else Debian's."""
  if data_dir is not None:
    return os.fspath(data_dir)
  return os.environ.get(ENV_VAR) or DEFAULT_DIR


def _find(folder: str, stem: str) -> str:
  for name in (stem + '.gz', stem):
    path = os.path.join(folder, name)
    if os.path.isfile(path):
      return path
  raise FileNotFoundError(
      f'Fashion-MNIST file {stem}[.gz] not found in {folder!r}. Install the '
      f'Debian package (`apt-get update && apt-get install -y '
      f'dataset-fashion-mnist`, files in {DEFAULT_DIR}) or point to a folder '
      f'holding the four IDX files with load_fashion_mnist(data_dir=...) or '
      f'the environment variable {ENV_VAR}.')


def load_fashion_mnist(
    split: str = 'train',
    data_dir: str | os.PathLike | None = None,
    *,
    normalize: bool = True,
) -> Dataset:
  """Loads a Fashion-MNIST split from the local IDX files.

  Args:
    split: 'train' (60000 images) or 'test' (10000).
    data_dir: folder with the IDX files; default $XAI_JAX_FASHION_MNIST_DIR
      or `/usr/share/datasets/fashion-mnist/`.
    normalize: float32 in [0, 1] (pixel / 255) if True, else raw uint8.

  Returns:
    Dataset(x [n, 28, 28, 1], y int32 [n], num_classes=10,
    name='fashion_mnist', meta={'class_names', 'split', 'data_dir'}); no
    probs, no ground truth.

  Raises:
    FileNotFoundError: the files are missing (the message says how to
      install them or point elsewhere).
    ValueError: unknown split, or malformed files.
  """
  _checks.check_choice('split', split, SPLITS)
  folder = fashion_mnist_dir(data_dir)
  images_stem, labels_stem = FILES[split]
  images = read_idx(_find(folder, images_stem))
  labels = read_idx(_find(folder, labels_stem))
  if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
    raise ValueError(f'Fashion-MNIST files in {folder!r} have inconsistent '
                     f'shapes: images {images.shape}, labels {labels.shape}.')
  x = images[..., None]
  if normalize:
    x = x.astype(np.float32) / np.float32(255.0)
  return Dataset(x=x, y=labels.astype(np.int32), num_classes=10,
                 name='fashion_mnist',
                 meta={'class_names': CLASS_NAMES, 'split': split,
                       'data_dir': folder})


def class_pair(ds: Dataset, classes: Sequence[int]) -> Dataset:
  """The rows of two classes `(a, b)`, relabelled a -> 0, b -> 1.

  E.g. L2X's MNIST 3-vs-8 setting on any multi-class Dataset. `probs`, if
  present, keeps columns (a, b) renormalised to sum to 1; `class_names` in
  `meta` become `(name_a, name_b)`.

  Args:
    ds: a Dataset with integer labels y [n].
    classes: two distinct labels in [0, ds.num_classes).

  Returns:
    Dataset with the m matching rows, y int32 [m] in {0, 1}, num_classes 2.
  """
  pair = tuple(classes) if not isinstance(classes, (str, bytes)) else ()
  if len(pair) != 2 or any(isinstance(c, bool) or not isinstance(
      c, (int, np.integer)) for c in pair):
    raise ValueError(f'classes must be a pair of int labels, got {classes!r}.')
  a, b = (int(c) for c in pair)
  if a == b or not (0 <= a < ds.num_classes and 0 <= b < ds.num_classes):
    raise ValueError(f'classes must be two distinct labels in [0, '
                     f'{ds.num_classes}), got {classes!r}.')
  y = np.asarray(ds.y)
  sub = ds.subset(np.flatnonzero((y == a) | (y == b)))
  meta: dict[str, Any] = dict(sub.meta)
  names = meta.get('class_names')
  if names is not None and len(names) == ds.num_classes:
    meta['class_names'] = (names[a], names[b])
  meta['original_classes'] = (a, b)
  probs = sub.probs
  if probs is not None:
    probs = np.asarray(probs)[:, [a, b]]
    probs = probs / np.maximum(probs.sum(-1, keepdims=True), 1e-30)
  return Dataset(x=sub.x, y=(np.asarray(sub.y) == b).astype(np.int32),
                 probs=probs, ground_truth=sub.ground_truth, num_classes=2,
                 name=f'{ds.name}_{a}_vs_{b}', meta=meta)
