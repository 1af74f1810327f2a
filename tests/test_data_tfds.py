"""Tests for xai_jax/data/tfds.py on tiny tfds builders made here.

The builders write array_record files with tfds' own
`GeneratorBasedBuilder.download_and_prepare(file_format='array_record')`;
TensorFlow is not installed and not needed: images are given as PNG bytes
(encoded with PIL: tfds would call tf.image.encode_png on numpy arrays), and
`DatasetInfo` is built directly (`dataset_info_from_configs` wants a package
folder with metadata files).
"""

import io
import os
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest

tfds = pytest.importorskip('tensorflow_datasets')

from xai_jax import data  # pylint: disable=g-import-not-at-top
from xai_jax.data import tfds as xtfds  # pylint: disable=g-import-not-at-top

TRAIN_TEXTS = ['A good movie, a GOOD film!', 'bad <br />bad plot',
               "It's great", 'boring and bad', 'good good good', 'the end']
TEST_TEXTS = ['good ending', 'unseen words here', 'bad']


def _images(seed, n=8):
  rng = np.random.RandomState(seed)
  return (rng.randint(0, 256, (n, 8, 8, 1)).astype(np.uint8),
          np.arange(n) % 3)


def _png(image):
  buf = io.BytesIO()
  PIL.Image.fromarray(image[..., 0]).save(buf, format='PNG')
  return buf.getvalue()


class XaiJaxTinyImages(tfds.core.GeneratorBasedBuilder):
  """8 random 8x8 grey images per split, 3 classes; tfds shuffles the rows."""
  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(8, 8, 1)),
            'label': tfds.features.ClassLabel(names=['a', 'b', 'c']),
            'id': tfds.features.Text(),
        }),
        supervised_keys=('image', 'label'))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples(0),
            'test': self._generate_examples(1)}

  def _generate_examples(self, seed):
    images, labels = _images(seed)
    for i, (im, lab) in enumerate(zip(images, labels)):
      yield i, {'image': _png(im), 'label': int(lab), 'id': f'{seed}-{i}'}


class XaiJaxTinyText(tfds.core.GeneratorBasedBuilder):
  """A few short reviews, 2 classes, no supervised keys, kept in order."""
  VERSION = tfds.core.Version('1.0.0')

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            'text': tfds.features.Text(),
            'label': tfds.features.ClassLabel(names=['neg', 'pos']),
        }),
        disable_shuffling=True)

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples(TRAIN_TEXTS),
            'test': self._generate_examples(TEST_TEXTS)}

  def _generate_examples(self, texts):
    for i, t in enumerate(texts):
      yield i, {'text': t, 'label': int('good' in t.lower() or 'great' in t)}


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp('tfds')
  for cls in (XaiJaxTinyImages, XaiJaxTinyText):
    cls(data_dir=str(root), file_format='array_record').download_and_prepare()
  return str(root)


def test_builders_wrote_array_record(data_dir):
  files = os.listdir(os.path.join(data_dir, 'xai_jax_tiny_images', '1.0.0'))
  assert any('array_record' in f for f in files)
  assert 'dataset_info.json' in files
  assert 'tensorflow' not in sys.modules


def _order(ds, seed):
  """Row permutation of a loaded tiny-images split (tfds shuffles on write)."""
  ids = [int(i.split('-')[1]) for i in ds.meta['id']]
  assert all(i.startswith(f'{seed}-') for i in ds.meta['id'])
  return np.asarray(ids)


def test_load_images(data_dir):
  ds = xtfds.load_tfds('xai_jax_tiny_images', 'train', data_dir=data_dir,
                       extra_keys=['id'])
  images, labels = _images(0)
  order = _order(ds, 0)
  assert sorted(order) == list(range(8))
  assert ds.x.shape == (8, 8, 8, 1) and ds.x.dtype == np.float32
  np.testing.assert_array_equal(ds.x * 255.0, images[order])
  np.testing.assert_array_equal(ds.y, labels[order])
  assert ds.y.dtype == np.int32 and ds.num_classes == 3
  assert ds.name == 'tfds:xai_jax_tiny_images'
  assert ds.meta['class_names'] == ('a', 'b', 'c')
  assert ds.meta['task'] == 'image' and ds.ground_truth is None
  raw = xtfds.load_tfds('xai_jax_tiny_images', 'test', data_dir=data_dir,
                        normalize=False, num_examples=3, extra_keys=['id'])
  assert raw.x.dtype == np.uint8 and len(raw) == 3
  np.testing.assert_array_equal(raw.x, _images(1)[0][_order(raw, 1)])
  part = xtfds.load_tfds('xai_jax_tiny_images', 'train[2:5]',
                         data_dir=data_dir)
  np.testing.assert_array_equal(part.y, ds.y[2:5])
  np.testing.assert_array_equal(part.x, ds.x[2:5])
  small = xtfds.load_tfds('xai_jax_tiny_images', 'train', data_dir=data_dir,
                          image_size=(4, 4))
  assert small.x.shape == (8, 4, 4, 1)
  assert 'tensorflow' not in sys.modules


def test_load_text_with_vocab_from_train(data_dir):
  train = xtfds.load_tfds('xai_jax_tiny_text', 'train', data_dir=data_dir,
                          seq_len=6, vocab_size=8)
  vocab = train.meta['vocab']
  # 'good' x5, 'bad' x3, 'a' x2, then count-1 words alphabetically.
  assert vocab == ['<pad>', '<unk>', 'good', 'bad', 'a', 'and', 'boring',
                   'end']
  assert train.x.shape == (6, 6) and train.x.dtype == np.int32
  idx = {w: i for i, w in enumerate(vocab)}
  # 'A good movie, a GOOD film!' -> a good <unk> a good <unk>
  np.testing.assert_array_equal(
      train.x[0], [idx['a'], idx['good'], 1, idx['a'], idx['good'], 1])
  # 'bad <br />bad plot': the HTML tag is dropped; post-padding with 0.
  np.testing.assert_array_equal(train.x[1],
                                [idx['bad'], idx['bad'], 1, 0, 0, 0])
  np.testing.assert_array_equal(train.meta['lengths'], [6, 3, 2, 3, 3, 2])
  np.testing.assert_array_equal(train.y, [1, 0, 1, 0, 1, 0])
  assert train.meta['text'][1] == 'bad <br />bad plot'
  assert train.meta['task'] == 'text' and train.num_classes == 2
  # The test split builds its vocabulary from 'train' (not from itself) ...
  test = xtfds.load_tfds('xai_jax_tiny_text', 'test', data_dir=data_dir,
                         seq_len=4, vocab_size=8)
  assert test.meta['vocab'] == vocab
  np.testing.assert_array_equal(test.x, [[idx['good'], 1, 0, 0],
                                         [1, 1, 1, 0],
                                         [idx['bad'], 0, 0, 0]])
  # ... or uses a given one.
  given = xtfds.load_tfds('xai_jax_tiny_text', 'test', data_dir=data_dir,
                          seq_len=4, vocab=['<pad>', 'bad', 'good'])
  np.testing.assert_array_equal(given.x, [[2, 0, 0, 0], [0, 0, 0, 0],
                                          [1, 0, 0, 0]])
  sub = test.subset(np.array([2]))
  assert list(sub.meta['text']) == ['bad']


def test_missing_data_set_names_it_and_data_dir(tmp_path, data_dir):
  # A known tfds builder that is not prepared in data_dir.
  with pytest.raises(FileNotFoundError) as e:
    xtfds.load_tfds('mnist', 'train', data_dir=tmp_path)
  msg = str(e.value)
  assert "'mnist'" in msg and str(tmp_path) in msg and 'data_dir' in msg
  assert 'array_record' in msg
  assert not os.listdir(tmp_path)          # nothing written, nothing fetched
  # An unknown name.
  with pytest.raises(FileNotFoundError, match='no_such_set_xyz'):
    xtfds.load_tfds('no_such_set_xyz', 'train', data_dir=data_dir)


def test_bad_arguments(data_dir):
  with pytest.raises(ValueError, match='split'):
    xtfds.load_tfds('xai_jax_tiny_images', 'validation', data_dir=data_dir)
  with pytest.raises(ValueError, match='task'):
    xtfds.load_tfds('xai_jax_tiny_images', 'train', data_dir=data_dir,
                    task='audio')
  with pytest.raises(ValueError, match='image_key'):
    xtfds.load_tfds('xai_jax_tiny_images', 'train', data_dir=data_dir,
                    image_key='pixels')
  with pytest.raises(ValueError, match='num_examples'):
    xtfds.load_tfds('xai_jax_tiny_images', 'train', data_dir=data_dir,
                    num_examples=0)
  with pytest.raises(ValueError, match='name'):
    xtfds.load_tfds('', 'train', data_dir=data_dir)
  with pytest.raises(ValueError, match='extra_keys'):
    xtfds.load_tfds('xai_jax_tiny_images', 'train', data_dir=data_dir,
                    extra_keys=['filename'])


def test_registry_prefix(data_dir):
  ds = data.load('tfds:xai_jax_tiny_images', split='test', data_dir=data_dir,
                 extra_keys=('id',))
  np.testing.assert_array_equal(ds.y, _images(1)[1][_order(ds, 1)])


def test_fresh_process_reads_without_builder_code(data_dir):
  """The real use: no builder class registered, no TensorFlow installed."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  code = (
      'import sys\n'
      'from xai_jax.data.tfds import load_tfds\n'
      f'ds = load_tfds("xai_jax_tiny_images", "test", data_dir={data_dir!r})\n'
      f'tx = load_tfds("xai_jax_tiny_text", "train", data_dir={data_dir!r},'
      ' seq_len=3)\n'
      'print(ds.x.shape, int(ds.y.sum()), tx.x.shape,'
      ' "tensorflow" in sys.modules)\n')
  env = dict(os.environ, PYTHONPATH=root, JAX_PLATFORMS='cpu')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                       text=True, env=env, timeout=120, check=True)
  assert out.stdout.strip().splitlines()[-1] == (
      f'(8, 8, 8, 1) {_images(1)[1].sum()} (6, 3) False')


def test_tokenizer_helpers():
  assert xtfds.tokenize("It's <br />GREAT, isn't it?") == [
      "it's", 'great', "isn't", 'it']
  assert xtfds.tokenize(b'Caf\xc3\xa9 OK', lowercase=False) == ['Café', 'OK']
  vocab = xtfds.build_vocab(['b a', 'a c', 'c a'], 10)
  assert vocab == ['<pad>', '<unk>', 'a', 'c', 'b']
  assert xtfds.build_vocab(['c a', 'b a', 'a c'], 10) == vocab
  ids, lengths = xtfds.encode_texts(['a b z', ''], vocab, 2)
  np.testing.assert_array_equal(ids, [[2, 4], [0, 0]])
  np.testing.assert_array_equal(lengths, [2, 0])
  with pytest.raises(ValueError, match='vocab_size'):
    xtfds.build_vocab(['a'], 2)
  with pytest.raises(ValueError, match='seq_len'):
    xtfds.encode_texts(['a'], vocab, 0)
