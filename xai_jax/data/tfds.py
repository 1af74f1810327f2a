"""tensorflow-datasets classification sets as numpy, without TensorFlow.

Reads *prepared* data through `tfds.data_source(name, split=..., data_dir=...)`
(random access over array_record files; needs `array_record` and
`importlib_resources`, not TensorFlow; images are decoded with PIL or OpenCV).
Nothing is downloaded: prepare the data elsewhere in the array_record format,

    tfds.builder('mnist', data_dir=DIR).download_and_prepare(
        file_format='array_record')

copy `DIR` here and pass `data_dir=DIR` (or set $TFDS_DATA_DIR).

Image classification sets (an `Image` feature + a `ClassLabel`) become float32
`[n, H, W, C]` in [0, 1]; text classification sets (a `Text` feature + a
`ClassLabel`) become int32 token ids `[n, seq_len]` with a simple word-level
tokenizer: lower-case, HTML tags dropped, words = `\\w+('\\w+)?`, vocabulary
`['<pad>', '<unk>', most frequent words...]` built from the training split
(or given), post-truncation and post-padding with 0.
"""

from __future__ import annotations

import collections
import io
import os
import re
from typing import Any, Iterable, Sequence

import numpy as np

from xai_jax import _checks
from xai_jax.data.synthetic import Dataset

PAD_TOKEN, UNK_TOKEN = '<pad>', '<unk>'
PAD_ID, UNK_ID = 0, 1
TASKS = ('auto', 'image', 'text')

_TAG_RE = re.compile(r'<[^>]+>')
_WORD_RE = re.compile(r"\w+(?:'\w+)?")


# ----------------------------------------------------------------------------
# Tokenizer.
# ----------------------------------------------------------------------------


def tokenize(text: str | bytes, *, lowercase: bool = True) -> list[str]:
  """Splits one text into words: HTML tags dropped, `\\w+('\\w+)?`, lower-cased.

  >>> tokenize("It's <br />GREAT, isn't it?")
  ["it's", 'great', "isn't", 'it']
  """
  if isinstance(text, bytes):
    text = text.decode('utf-8', errors='replace')
  text = _TAG_RE.sub(' ', text)
  if lowercase:
    text = text.lower()
  return _WORD_RE.findall(text)


def build_vocab(texts: Iterable[str | bytes], vocab_size: int, *,
                lowercase: bool = True, min_count: int = 1) -> list[str]:
  """Word-level vocabulary: `['<pad>', '<unk>'] + most frequent words`.

  Ties in frequency are broken alphabetically, so the result does not depend
  on the order of `texts`.

  Args:
    texts: the corpus (usually the training split).
    vocab_size: V >= 3, the vocabulary size including PAD (0) and UNK (1).
    lowercase: lower-case before counting.
    min_count: drop words seen fewer times.

  Returns:
    A list of at most V strings; index = token id.
  """
  if isinstance(vocab_size, bool) or not isinstance(
      vocab_size, (int, np.integer)) or vocab_size < 3:
    raise ValueError(f'vocab_size must be an int >= 3, got {vocab_size!r}.')
  counts = collections.Counter()
  for text in texts:
    counts.update(tokenize(text, lowercase=lowercase))
  words = sorted((w for w, c in counts.items() if c >= min_count),
                 key=lambda w: (-counts[w], w))
  return [PAD_TOKEN, UNK_TOKEN] + words[:int(vocab_size) - 2]


def encode_texts(texts: Sequence[str | bytes], vocab: Sequence[str],
                 seq_len: int, *, lowercase: bool = True
                 ) -> tuple[np.ndarray, np.ndarray]:
  """Token ids of `texts` under `vocab`, truncated/padded (post) to `seq_len`.

  Unknown words map to '<unk>' if the vocabulary has it, else are dropped.

  Returns:
    ids int32 [n, seq_len] (0 = PAD) and lengths int32 [n] (number of
    non-PAD tokens, <= seq_len).
  """
  if isinstance(seq_len, bool) or not isinstance(
      seq_len, (int, np.integer)) or seq_len < 1:
    raise ValueError(f'seq_len must be a positive int, got {seq_len!r}.')
  index = {w: i for i, w in enumerate(vocab)}
  unk = index.get(UNK_TOKEN)
  ids = np.zeros((len(texts), seq_len), np.int32)
  lengths = np.zeros(len(texts), np.int32)
  for r, text in enumerate(texts):  # strings: one Python pass per text
    row = [index.get(w, unk) for w in tokenize(text, lowercase=lowercase)]
    row = [i for i in row if i is not None][:seq_len]
    ids[r, :len(row)] = row
    lengths[r] = len(row)
  return ids, lengths


# ----------------------------------------------------------------------------
# Loader.
# ----------------------------------------------------------------------------


def _import_tfds():
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        'load_tfds needs tensorflow-datasets, array_record and '
        'importlib_resources (not TensorFlow): pip install tensorflow-datasets '
        'array_record importlib_resources') from e
  return tfds


def _shown_dir(data_dir: Any) -> str:
  if data_dir is not None:
    return os.fspath(data_dir)
  return os.environ.get('TFDS_DATA_DIR') or os.path.expanduser(
      '~/tensorflow_datasets')


def _missing(name: str, data_dir: Any, why: str) -> FileNotFoundError:
  shown = _shown_dir(data_dir)
  return FileNotFoundError(
      f'tfds data set {name!r} is not available in data_dir={shown!r} ({why}). '
      f'Nothing is downloaded here: prepare it on a machine with internet, '
      f'e.g. tfds.builder({name!r}, data_dir=DIR).download_and_prepare('
      f"file_format='array_record'), copy DIR here and pass data_dir=DIR "
      f'(or set $TFDS_DATA_DIR).')


def _builder(tfds, name: str, data_dir: Any):
  """The prepared builder of `name`, or a FileNotFoundError naming data_dir."""
  kw = {} if data_dir is None else {'data_dir': os.fspath(data_dir)}
  try:
    builder = tfds.builder(name, try_gcs=False, **kw)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise _missing(name, data_dir, 'no prepared files and no such builder') \
        from e
  if not builder.is_prepared():
    raise _missing(name, data_dir, 'not prepared')
  fmt = builder.info.file_format
  random_access = tfds.core.file_adapters.FileFormat.with_random_access()
  if fmt is not None and fmt not in random_access:
    raise ValueError(
        f'tfds data set {name!r} in data_dir={_shown_dir(data_dir)!r} is '
        f'stored as {fmt.value}, which has no random access without '
        f"TensorFlow; prepare it with file_format='array_record'.")
  return builder


def _pick_key(features, key: str | None, kind, what: str, supervised: Any,
              position: int, name: str) -> str:
  """The feature key of type `kind`: given, supervised, or the only such."""
  if key is not None:
    if key not in features:
      raise ValueError(f'{what}={key!r} is not a feature of {name!r}; '
                       f'features: {sorted(features)}.')
    return key
  if supervised and isinstance(features[supervised[position]], kind):
    return supervised[position]
  found = [k for k, f in features.items() if isinstance(f, kind)]
  if not found:
    raise ValueError(f'{name!r} has no {kind.__name__} feature; pass {what}= '
                     f'(features: {sorted(features)}).')
  return found[0]


def _read(source, keys: Sequence[str], num: int, chunk: int = 1024
          ) -> dict[str, list[Any]]:
  out: dict[str, list[Any]] = {k: [] for k in keys}
  for start in range(0, num, chunk):
    idx = list(range(start, min(num, start + chunk)))
    rows = (source.__getitems__(idx) if hasattr(source, '__getitems__')
            else [source[i] for i in idx])
    for k in keys:
      out[k].extend(r[k] for r in rows)
  return out


def _stack_images(images: list[np.ndarray], image_size: Sequence[int] | None,
                  name: str) -> np.ndarray:
  if image_size is not None:
    import PIL.Image  # pylint: disable=g-import-not-at-top
    h, w = (int(s) for s in image_size)
    resized = []
    for im in images:  # decoded one by one anyway
      sq = im[..., 0] if im.shape[-1] == 1 else im
      res = np.asarray(PIL.Image.fromarray(sq).resize(
          (w, h), PIL.Image.BILINEAR))
      resized.append(res.reshape(h, w, im.shape[-1]))
    images = resized
  shapes = {im.shape for im in images}
  if len(shapes) > 1:
    raise ValueError(f'Images of {name!r} have different shapes '
                     f'({sorted(shapes)[:3]}...); pass image_size=(H, W).')
  return np.stack(images)


def load_tfds(
    name: str,
    split: str = 'train',
    *,
    data_dir: str | os.PathLike | None = None,
    task: str = 'auto',
    num_examples: int | None = None,
    image_key: str | None = None,
    text_key: str | None = None,
    label_key: str | None = None,
    normalize: bool = True,
    image_size: Sequence[int] | None = None,
    seq_len: int = 400,
    vocab: Sequence[str] | None = None,
    vocab_size: int = 5000,
    vocab_split: str = 'train',
    lowercase: bool = True,
    extra_keys: Sequence[str] = (),
) -> Dataset:
  """Loads a prepared tfds classification set as numpy, without TensorFlow.

  Uses `tfds.data_source(name, split=split, data_dir=data_dir,
  download=False, try_gcs=False)`. The data must already be prepared in
  `data_dir` in a random-access format (array_record).

  Args:
    name: tfds name, optionally with config/version ('mnist',
      'imdb_reviews/plain_text', 'cifar10:3.0.2').
    split: a tfds split ('train', 'test', 'train[:10%]', ...).
    data_dir: the tfds data folder (default $TFDS_DATA_DIR or
      ~/tensorflow_datasets).
    task: 'image', 'text' or 'auto' (from the features: an Image feature ->
      image, else a Text feature -> text).
    num_examples: read only the first `num_examples` rows (default all).
    image_key, text_key, label_key: feature names (default: the supervised
      keys, else the only Image/Text feature, and 'label').
    normalize: images as float32 / 255 in [0, 1] (else the stored dtype).
    image_size: (H, W) to resize every image to (PIL bilinear); needed when
      the images differ in size.
    seq_len: text: padded length L.
    vocab: text: the vocabulary (index = id); default built by `build_vocab`
      from `vocab_split` with `vocab_size` words (pass the returned
      `meta['vocab']` when loading the test split to skip rebuilding it).
    vocab_size: text: V including '<pad>' and '<unk>'.
    vocab_split: text: the split the vocabulary is built from.
    lowercase: text: lower-case before lookup.
    extra_keys: other features to return as `meta[key]` (numpy arrays [n],
      bytes decoded to str), e.g. file names or ids.

  Returns:
    Dataset named 'tfds:<name>' with y int32 [n], num_classes from the
    ClassLabel, no probs/ground truth, and
    image: x [n, H, W, C]; text: x int32 [n, L] (0 = PAD, 1 = UNK),
    meta['vocab'], meta['lengths'] int32 [n], meta['text'] (object array
    [n] of the raw strings).
    meta also holds 'class_names', 'split', 'data_dir', 'task'.

  Raises:
    FileNotFoundError: the data set is not prepared in `data_dir` (the
      message names both).
    ValueError: bad split, task or feature keys, or a non-random-access
      format.
  """
  if not isinstance(name, str) or not name:
    raise ValueError(f'name must be a non-empty tfds name, got {name!r}.')
  if not isinstance(split, str) or not split:
    raise ValueError(f'split must be a non-empty string, got {split!r}.')
  _checks.check_choice('task', task, TASKS)
  if num_examples is not None and (isinstance(num_examples, bool) or not
                                   isinstance(num_examples, (int, np.integer))
                                   or num_examples < 1):
    raise ValueError(f'num_examples must be a positive int or None, got '
                     f'{num_examples!r}.')
  tfds = _import_tfds()
  builder = _builder(tfds, name, data_dir)
  kw = {} if data_dir is None else {'data_dir': os.fspath(data_dir)}

  def source(which: str):
    try:
      return tfds.data_source(name, split=which, download=False,
                              try_gcs=False, **kw)
    except (ValueError, KeyError, AssertionError) as e:
      raise ValueError(
          f'split={which!r} is not a valid split of {name!r}: {e} '
          f'(available: {sorted(builder.info.splits)}).') from e

  features = builder.info.features
  supervised = builder.info.supervised_keys
  if supervised is not None and not (
      isinstance(supervised, tuple) and len(supervised) == 2
      and all(isinstance(k, str) for k in supervised)):
    supervised = None
  F = tfds.features  # pylint: disable=invalid-name
  if task == 'auto':
    has = lambda kind: any(isinstance(f, kind) for f in features.values())
    if image_key is not None or (text_key is None and has(F.Image)):
      task = 'image'
    elif text_key is not None or has(F.Text):
      task = 'text'
    else:
      raise ValueError(f'task="auto": {name!r} has neither an Image nor a Text '
                       f'feature ({sorted(features)}); pass task= and keys.')
  if task == 'image':
    in_key = _pick_key(features, image_key, F.Image, 'image_key', supervised,
                       0, name)
  else:
    in_key = _pick_key(features, text_key, F.Text, 'text_key', supervised, 0,
                       name)
  label_key = _pick_key(features, label_key, F.ClassLabel, 'label_key',
                        supervised, 1, name)

  extra_keys = list(extra_keys)
  for key in extra_keys:
    if key not in features:
      raise ValueError(f'extra_keys: {key!r} is not a feature of {name!r}; '
                       f'features: {sorted(features)}.')

  data = source(split)
  num = len(data) if num_examples is None else min(len(data), num_examples)
  if num == 0:
    raise ValueError(f'split={split!r} of {name!r} is empty.')
  rows = _read(data, [in_key, label_key, *extra_keys], num)
  y = np.asarray(rows[label_key], np.int32)
  label_feature = features[label_key]
  meta: dict[str, Any] = {'class_names': tuple(label_feature.names),
                          'split': split, 'data_dir': _shown_dir(data_dir),
                          'task': task, 'tfds_name': name}

  if task == 'image':
    x = _stack_images([np.asarray(im) for im in rows[in_key]], image_size,
                      name)
    if normalize and x.dtype == np.uint8:
      x = x.astype(np.float32) / np.float32(255.0)
    elif normalize and x.dtype == np.uint16:
      x = x.astype(np.float32) / np.float32(65535.0)
  else:
    texts = [t.decode('utf-8', errors='replace') if isinstance(t, bytes)
             else str(t) for t in rows[in_key]]
    if vocab is None:
      if vocab_split == split and num_examples is None:
        corpus = texts
      else:
        vocab_data = source(vocab_split)
        corpus = _read(vocab_data, [in_key], len(vocab_data))[in_key]
      vocab = build_vocab(corpus, vocab_size, lowercase=lowercase)
    vocab = list(vocab)
    x, lengths = encode_texts(texts, vocab, seq_len, lowercase=lowercase)
    meta.update(vocab=vocab, lengths=lengths, pad_id=PAD_ID,
                text=np.asarray(texts, dtype=object))
  for key in extra_keys:
    values = [v.decode('utf-8', errors='replace') if isinstance(v, bytes)
              else v for v in rows[key]]
    try:
      meta[key] = np.asarray(values)
    except ValueError:  # ragged
      meta[key] = np.asarray(values + [None], dtype=object)[:-1]
  return Dataset(x=x, y=y, num_classes=int(label_feature.num_classes),
                 name=f'tfds:{name}', meta=meta)
