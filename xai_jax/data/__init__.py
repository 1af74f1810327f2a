"""Data sets with ground truth (synthetic) and real ones read offline.

    from xai_jax import data
    train = data.load('xor', n=10**6, key_or_seed=0)    # L2X §4.1 tabular
    imgs = data.load('images', n=10_000, key_or_seed=0)  # pattern-in-clutter
    fm = data.load('fashion_mnist', split='test')        # Debian's IDX files
    bc = data.load('breast_cancer', split='train')       # scikit-learn's copy
    mnist = data.load('tfds:mnist', split='train', data_dir='/data/tfds')

Every loader returns a `Dataset` (numpy arrays: x [n, ...], y [n], probs,
ground_truth, num_classes, name, meta). Nothing is downloaded at run time.
`oracle_blackbox(name)` is the true P(Y|X) of a tabular set as a black box.
"""

from __future__ import annotations

from typing import Any, Callable

from xai_jax import _checks
from xai_jax.data.fashion_mnist import CLASS_NAMES as FASHION_MNIST_CLASSES
from xai_jax.data.fashion_mnist import class_pair
from xai_jax.data.fashion_mnist import load_fashion_mnist
from xai_jax.data.fashion_mnist import read_idx
from xai_jax.data.fashion_mnist import write_idx
from xai_jax.data.sklearn_sets import load_breast_cancer
from xai_jax.data.synthetic import Dataset
from xai_jax.data.synthetic import decode_tokens
from xai_jax.data.synthetic import make_dense
from xai_jax.data.synthetic import make_images
from xai_jax.data.synthetic import make_patterns
from xai_jax.data.synthetic import make_tabular
from xai_jax.data.synthetic import make_text
from xai_jax.data.synthetic import nonlinear_additive_logit
from xai_jax.data.synthetic import nonlinear_additive_probs
from xai_jax.data.synthetic import oracle_blackbox
from xai_jax.data.synthetic import orange_skin_logit
from xai_jax.data.synthetic import orange_skin_probs
from xai_jax.data.synthetic import probs_from_logit
from xai_jax.data.synthetic import switch_probs
from xai_jax.data.synthetic import TABULAR
from xai_jax.data.synthetic import TABULAR_FEATURES
from xai_jax.data.synthetic import TABULAR_K
from xai_jax.data.synthetic import text_vocab
from xai_jax.data.synthetic import xor_logit
from xai_jax.data.synthetic import xor_probs
from xai_jax.data.tfds import build_vocab
from xai_jax.data.tfds import encode_texts
from xai_jax.data.tfds import load_tfds
from xai_jax.data.tfds import tokenize

TFDS_PREFIX = 'tfds:'


def _tabular(name: str) -> Callable[..., Dataset]:
  def make(**kw: Any) -> Dataset:
    return make_tabular(name, **kw)
  make.__doc__ = f'make_tabular({name!r}, **kw)'
  return make


# name -> loader(**kw); plus 'tfds:<name>' for any prepared tfds data set.
REGISTRY: dict[str, Callable[..., Dataset]] = {
    **{name: _tabular(name) for name in TABULAR},
    'dense': make_dense,
    'images': make_images,
    'text': make_text,
    'fashion_mnist': load_fashion_mnist,
    'breast_cancer': load_breast_cancer,
}


def load(name: str, **kw: Any) -> Dataset:
  """Loads a data set by name; keyword arguments go to its loader.

  Names: 'xor', 'orange_skin', 'nonlinear_additive', 'switch'
  (`make_tabular(name, n, key_or_seed, ...)`), 'images' (`make_images`),
  'text' (`make_text`), 'dense' (`make_dense`, every feature matters),
  'fashion_mnist' (`load_fashion_mnist`),
  'breast_cancer' (`load_breast_cancer`, scikit-learn's bundled copy) and
  'tfds:<tfds name>' (`load_tfds(<tfds name>, ...)`), e.g. 'tfds:mnist'.

  Raises:
    ValueError: unknown name (the message lists the valid ones).
  """
  if isinstance(name, str) and name.startswith(TFDS_PREFIX):
    tfds_name = name[len(TFDS_PREFIX):]
    if not tfds_name:
      raise ValueError(f'name {name!r} lacks the tfds data set name, e.g. '
                       f'"tfds:mnist".')
    return load_tfds(tfds_name, **kw)
  _checks.check_choice('name', name, [*REGISTRY, TFDS_PREFIX + '<name>'])
  return REGISTRY[name](**kw)


__all__ = [
    'Dataset', 'FASHION_MNIST_CLASSES', 'REGISTRY', 'TABULAR',
    'TABULAR_FEATURES', 'TABULAR_K', 'TFDS_PREFIX', 'build_vocab',
    'class_pair', 'decode_tokens', 'encode_texts', 'load',
    'load_breast_cancer', 'load_fashion_mnist', 'load_tfds', 'make_dense', 'make_images', 'make_patterns',
    'make_tabular', 'make_text', 'nonlinear_additive_logit',
    'nonlinear_additive_probs', 'oracle_blackbox', 'orange_skin_logit', 'orange_skin_probs',
    'probs_from_logit', 'read_idx', 'switch_probs', 'text_vocab', 'tokenize',
    'write_idx', 'xor_logit', 'xor_probs',
]
