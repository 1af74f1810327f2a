"""Tests of xai_jax.train's checkpoints: checksums, fallback, rotation.

Each corruption of the newest checkpoint step (flipped bytes or truncation of
its data file, a deleted `_METADATA`, an empty step folder, a step left as a
temporary folder by an interrupted save) must make `train.fit` fall back to
the previous good step with a warning naming the step and the workdir, and end
bit-identical to a run resumed from that step; the rotation must not delete
the last good step meanwhile. What cannot be restored fails with one line.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from xai_jax import train

# ----------------------------------------------------------------------------
# A tiny problem: a linear model whose loss uses the step key (so the key must
# restore) and a model_state counter (so model_state must restore).

_D, _OUT, _BATCH = 32, 16, 16
_RNG = np.random.default_rng(0)
_DATA = {'x': _RNG.normal(size=(64, _D)).astype(np.float32),
         'y': _RNG.normal(size=(64, _OUT)).astype(np.float32)}
_PARAMS = {'w': jnp.zeros((_D, _OUT)), 'b': jnp.zeros(_OUT)}
_MODEL_STATE = {'count': {'n': jnp.zeros((), jnp.float32)}}
_TX = optax.adam(1e-2)  # one object: fit's compiled step is reused
_CHECKSUM_FILE = train._CHECKSUM_FILE  # pylint: disable=protected-access


def _loss(params, model_state, batch, key):
  x = batch['x'] + 0.01 * jax.random.normal(key, batch['x'].shape)
  pred = x @ params['w'] + params['b']
  new_state = {'count': {'n': model_state['count']['n'] + 1}}
  return jnp.mean((pred - batch['y'])**2), (new_state, {})


_FIT = dict(tx=_TX, key=0, batch_size=_BATCH, checkpoint_every=5,
            log_every=5, model_state=_MODEL_STATE)


def _fit(workdir, num_steps, params=None, **kw):
  return train.fit(_loss, _PARAMS if params is None else params, _DATA,
                   workdir=None if workdir is None else str(workdir),
                   num_steps=num_steps, **{**_FIT, **kw})


def _steps(workdir) -> list[int]:
  folder = os.path.join(workdir, 'checkpoints')
  return sorted(int(n) for n in os.listdir(folder) if n.isdigit())


def _assert_bit_identical(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(la, lb):
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
      x, y = jax.random.key_data(x), jax.random.key_data(y)
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _files(step_dir) -> list[str]:
  out = []
  for root, _, names in os.walk(step_dir):
    out += [os.path.join(root, n) for n in names
            if n != _CHECKSUM_FILE]
  return out


def _data_file(step_dir) -> str:
  """The step's largest file: orbax's array data (ocdbt.process_0/d/...)."""
  return max(_files(step_dir), key=os.path.getsize)


@contextlib.contextmanager
def _no_warnings():
  """Fails if a checkpoint warning is raised inside."""
  with warnings.catch_warnings(record=True) as record:
    warnings.simplefilter('always')
    yield
  msgs = [str(w.message) for w in record
          if 'checkpoint' in str(w.message).lower()]
  assert not msgs, msgs


# The corruptions of a step folder `d`.


def _flip_bytes(d):
  path = _data_file(d)
  data = bytearray(open(path, 'rb').read())
  mid = len(data) // 2
  for i in range(mid, min(mid + 64, len(data))):
    data[i] ^= 0xFF
  with open(path, 'wb') as f:
    f.write(bytes(data))


def _truncate(d):
  path = _data_file(d)
  os.truncate(path, os.path.getsize(path) // 2)


def _delete_metadata(d):
  os.remove(os.path.join(d, 'default', '_METADATA'))


def _empty_folder(d):
  shutil.rmtree(d)
  os.mkdir(d)


def _leave_temporary(d):
  # What a save killed before orbax's final rename leaves: a partial folder.
  os.remove(os.path.join(d, 'commit_success.txt'))
  os.rename(d, f'{d}.orbax-checkpoint-tmp-1733000000000000')


# name: (corruption, what the warning says about step 10)
_CORRUPTIONS = {
    'flipped_bytes': (_flip_bytes, 'does not match its sha256 checksum'),
    'truncated': (_truncate, 'bytes where its checksum recorded'),
    'deleted_metadata': (_delete_metadata, 'default/_METADATA missing'),
    'empty_folder': (_empty_folder, 'its folder is empty'),
    'temporary_folder': (_leave_temporary,
                         'temporary folder of an interrupted save'),
}


@pytest.fixture(scope='module')
def resumed_from_5(tmp_path_factory):
  """A clean run stopped at step 5 and resumed to step 20."""
  workdir = tmp_path_factory.mktemp('reference')
  _fit(workdir, 5)
  state, history = _fit(workdir, 20)
  np.testing.assert_array_equal(history['step'], [10, 15, 20])
  return state


# ----------------------------------------------------------------------------
# The checksum file.


def test_every_step_has_a_checksum_of_its_files(tmp_path):
  _fit(tmp_path, 10, max_to_keep=None)
  assert _steps(tmp_path) == [5, 10]
  for step in (5, 10):
    d = os.path.join(tmp_path, 'checkpoints', str(step))
    with open(os.path.join(d, _CHECKSUM_FILE)) as f:
      record = json.load(f)
    assert record['step'] == step and record['algorithm'] == 'sha256'
    rel = sorted(os.path.relpath(p, d) for p in _files(d))
    assert sorted(record['files']) == rel
    assert any(name.endswith('_METADATA') for name in rel)
    assert 'params/w' in record['arrays']
    assert record['arrays']['params/w'] == [[_D, _OUT], 'float32']
  assert train.latest_checkpoint_step(tmp_path) == 10


def test_unchanged_checkpoint_restores_and_resumes(tmp_path, resumed_from_5):
  # The checksum of a healthy checkpoint verifies, so the run resumes from it
  # (step 10 here) without a warning.
  _fit(tmp_path, 10)
  with _no_warnings():
    state, history = _fit(tmp_path, 20)
  np.testing.assert_array_equal(history['step'], [15, 20])
  _assert_bit_identical(state, resumed_from_5)


# ----------------------------------------------------------------------------
# Corrupted newest step: fall back to the previous good one.


@pytest.mark.parametrize('case', list(_CORRUPTIONS))
def test_corrupted_newest_step_resumes_from_previous(tmp_path, case,
                                                     resumed_from_5):
  corrupt, reason = _CORRUPTIONS[case]
  workdir = str(tmp_path / 'run')
  ckdir = os.path.join(workdir, 'checkpoints')
  _fit(workdir, 10, max_to_keep=2)
  assert _steps(workdir) == [5, 10]
  corrupt(os.path.join(ckdir, '10'))
  seen = []  # the steps on disk after each checkpoint of the resumed run

  def eval_fn(state):
    seen.append((int(state.step), _steps(workdir)))
    return {}

  with pytest.warns(RuntimeWarning) as record:
    state, history = _fit(workdir, 20, max_to_keep=2, eval_fn=eval_fn,
                          eval_every=5)
  msgs = [str(w.message) for w in record]
  assert all('\n' not in m for m in msgs), msgs
  # The first warning names the step, the folder and what is wrong.
  assert re.search(rf'step 10 in {re.escape(ckdir)}: .*{reason}', msgs[0]), (
      msgs)
  np.testing.assert_array_equal(history['step'], [10, 15, 20])  # from 5
  _assert_bit_identical(state, resumed_from_5)
  # Step 5 stayed until a newer verified step existed; then the usual
  # rotation (the two newest) went on.
  assert seen == [(10, [5, 10]), (15, [10, 15]), (20, [15, 20])]
  assert sorted(os.listdir(ckdir)) == ['15', '20']
  # The skipped step folder was moved aside (a temporary one is removed).
  skipped = os.path.join(workdir, 'checkpoints_skipped')
  if case == 'temporary_folder':
    assert not os.path.exists(skipped)
  else:
    assert os.listdir(skipped) == ['10']
  # The same command again: nothing left to do, no warning.
  with _no_warnings():
    again, history = _fit(workdir, 20, max_to_keep=2)
  assert history == {}
  _assert_bit_identical(again, resumed_from_5)


def test_restore_latest_skips_a_corrupted_step_and_names_it(tmp_path):
  workdir = str(tmp_path)
  _fit(workdir, 10)
  _flip_bytes(os.path.join(workdir, 'checkpoints', '10'))
  target = train.create_train_state(_PARAMS, _TX, key=0,
                                    model_state=_MODEL_STATE)
  with pytest.warns(RuntimeWarning) as record:
    restored = train.restore_latest(workdir, target)
  assert int(restored.step) == 5
  msgs = [str(w.message) for w in record]
  assert len(msgs) == 1 and '\n' not in msgs[0]
  assert 'step 10' in msgs[0] and workdir in msgs[0]
  assert 'sha256' in msgs[0] or 'checksum' in msgs[0]
  # latest_checkpoint_step names the step a restore would use.
  assert train.latest_checkpoint_step(workdir) == 5
  # restore_latest only reads: the corrupted step is still there.
  assert _steps(workdir) == [5, 10]


def test_only_step_corrupted_fails_with_one_line(tmp_path):
  workdir = str(tmp_path / 'run')
  _fit(workdir, 10, max_to_keep=1)
  assert _steps(workdir) == [10]
  _truncate(os.path.join(workdir, 'checkpoints', '10'))
  with pytest.warns(RuntimeWarning):
    with pytest.raises(RuntimeError) as info:
      _fit(workdir, 20, max_to_keep=1)
  msg = str(info.value)
  assert '\n' not in msg and len(msg) < 600, msg
  assert os.path.join(workdir, 'checkpoints') in msg and 'step 10' in msg
  assert _steps(workdir) == [10]  # nothing deleted


# ----------------------------------------------------------------------------
# Rotation.


def _state(step):
  state = train.create_train_state(_PARAMS, _TX, key=0,
                                   model_state=_MODEL_STATE)
  return state.replace(step=jnp.asarray(step, jnp.int32),
                       params=jax.tree.map(lambda p: p + step, state.params))


def test_rotation_keeps_the_verified_step_while_the_newer_is_unverified(
    tmp_path, monkeypatch):
  workdir = str(tmp_path)
  assert train.save_checkpoint(workdir, _state(5), 5, max_to_keep=1)

  def killed(*args, **kwargs):
    raise OSError('killed while writing the checksum')

  # A save interrupted after orbax's rename, before the checksum is written.
  with monkeypatch.context() as m:
    m.setattr(train, '_write_checksum', killed)
    with pytest.raises(OSError, match='killed'):
      train.save_checkpoint(workdir, _state(10), 10, max_to_keep=1)
  assert _steps(workdir) == [5, 10]  # the verified step 5 is kept
  # Step 10 is complete but unverified: it restores, with a warning.
  with pytest.warns(RuntimeWarning, match=r'step 10 .*unverified'):
    restored = train.restore_latest(workdir, _state(0))
  assert int(restored.step) == 10
  # A newer verified step: now the rotation keeps only it.
  assert train.save_checkpoint(workdir, _state(15), 15, max_to_keep=1)
  assert _steps(workdir) == [15]


def test_save_replaces_a_corrupted_step_of_the_same_number(tmp_path):
  workdir = str(tmp_path)
  train.save_checkpoint(workdir, _state(5), 5, max_to_keep=2)
  train.save_checkpoint(workdir, _state(10), 10, max_to_keep=2)
  assert not train.save_checkpoint(workdir, _state(10), 10)  # intact: kept
  _flip_bytes(os.path.join(workdir, 'checkpoints', '10'))
  with pytest.warns(RuntimeWarning, match=r'step 10 .*moved'):
    assert train.save_checkpoint(workdir, _state(10), 10, max_to_keep=2)
  assert _steps(workdir) == [5, 10]
  with _no_warnings():
    restored = train.restore_latest(workdir, _state(0))
  _assert_bit_identical(restored, _state(10))
  moved = os.listdir(os.path.join(workdir, 'checkpoints_skipped'))
  assert moved == ['10']


# ----------------------------------------------------------------------------
# Checkpoints written before checksums (no checksum file).


def _drop_checksums(workdir):
  for step in _steps(workdir):
    os.remove(os.path.join(workdir, 'checkpoints', str(step),
                           _CHECKSUM_FILE))


def test_checkpoints_without_checksum_restore_unverified(tmp_path,
                                                         resumed_from_5):
  workdir = str(tmp_path)
  _fit(workdir, 10)
  _drop_checksums(workdir)
  with pytest.warns(RuntimeWarning, match=r'step 10 .*unverified'):
    state, history = _fit(workdir, 20)
  np.testing.assert_array_equal(history['step'], [15, 20])  # from 10
  _assert_bit_identical(state, resumed_from_5)


# orbax leaves coroutines of the failed read behind (noise at collection).
@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')
def test_unreadable_step_without_checksum_falls_back(tmp_path,
                                                     resumed_from_5):
  workdir = str(tmp_path)
  _fit(workdir, 10)
  _drop_checksums(workdir)
  _truncate(os.path.join(workdir, 'checkpoints', '10'))
  with pytest.warns(RuntimeWarning) as record:
    state, history = _fit(workdir, 20)
  msgs = [str(w.message) for w in record]
  assert re.search(r'step 10 .*no checksum file and could not be read',
                   msgs[0]), msgs
  assert re.search(r'step 5 .*restored unverified', msgs[1]), msgs
  assert re.search(r'step 10 .*moved to .*checkpoints_skipped', msgs[2]), msgs
  np.testing.assert_array_equal(history['step'], [10, 15, 20])  # from 5
  _assert_bit_identical(state, resumed_from_5)


# ----------------------------------------------------------------------------
# Errors that remain: one clear line.


def test_structure_mismatch_is_one_clear_line(tmp_path):
  workdir = str(tmp_path)
  _fit(workdir, 5)
  other = {'w': jnp.zeros((_D, 8)), 'b': jnp.zeros(8), 'extra': jnp.zeros(2)}
  with pytest.raises(ValueError) as info:
    train.fit(_loss, other, _DATA, workdir=workdir, num_steps=10, **_FIT)
  msg = str(info.value)
  assert '\n' not in msg and len(msg) < 600, msg
  assert os.path.join(workdir, 'checkpoints') in msg and 'step 5' in msg
  assert 'params/w' in msg and 'params/extra' in msg
  assert _steps(workdir) == [5]


def test_unreadable_checksum_file_is_a_bad_step(tmp_path):
  workdir = str(tmp_path)
  _fit(workdir, 10)
  with open(os.path.join(workdir, 'checkpoints', '10',
                         _CHECKSUM_FILE), 'w') as f:
    f.write('{"truncat')
  with pytest.warns(RuntimeWarning, match=r'step 10 .*checksum file'):
    restored = train.restore_latest(workdir, _state(0))
  assert int(restored.step) == 5


# ----------------------------------------------------------------------------
# Cost.


def test_checksum_adds_little_time(tmp_path):
  # ~12 MB on disk: 1M float32 parameters and two (random) Adam moments.
  keys = jax.random.split(jax.random.key(0), 3)
  state = {name: jax.random.normal(k, (1000, 1000))
           for name, k in zip(('params', 'mu', 'nu'), keys)}
  train.save_checkpoint(tmp_path / 'warmup', state, 0)
  t0 = time.perf_counter()
  train.save_checkpoint(tmp_path / 'run', state, 1)
  save = time.perf_counter() - t0
  step_dir = os.path.join(tmp_path, 'run', 'checkpoints', '1')
  size = sum(os.path.getsize(p) for p in _files(step_dir))
  assert size > 10e6
  t0 = time.perf_counter()
  train._file_digests(step_dir)  # pylint: disable=protected-access
  digest = time.perf_counter() - t0
  # sha256 runs at hundreds of MB/s: ~20-50 ms here, a fraction of the save.
  assert digest < 0.25 + 0.5 * save, (digest, save, size)
