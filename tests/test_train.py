"""Tests of xai_jax.train: optimizer factory, jit step, fit, sharding, resume.

Multi-device and kill-resume tests run this file as a script in a subprocess
(`python tests/test_train.py <mode> <args>`), because
`XLA_FLAGS=--xla_force_host_platform_device_count=4` must be set before jax is
imported and a SIGKILL must hit a separate process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

from xai_jax import train  # pylint: disable=g-import-not-at-top


# ----------------------------------------------------------------------------
# A small problem shared by the tests and the subprocess modes.


class MLP(nn.Module):
  hidden: int = 32
  out: int = 1
  batch_norm: bool = False

  @nn.compact
  def __call__(self, x, train: bool = True):
    if self.batch_norm:
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    x = nn.relu(nn.Dense(self.hidden)(x))
    x = nn.relu(nn.Dense(self.hidden)(x))
    x = nn.Dense(self.out)(x)
    return x[..., 0] if self.out == 1 else x


def regression_data(n: int = 512, d: int = 4, seed: int = 0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d)).astype(np.float32)
  y = (np.sin(2 * x[:, 0]) + x[:, 1] * x[:, 2]).astype(np.float32)
  return {'x': x, 'y': y}


def regression_problem(batch_norm: bool = False, noise: float = 0.01):
  """(model, variables, loss_fn); with noise > 0 the loss uses its key.

  (Drawing random numbers roughly doubles XLA's compile time of the step on
  CPU, so tests that do not need the key use noise=0.)
  """
  model = MLP(batch_norm=batch_norm)
  # jit: one compile instead of one per eager op.
  variables = jax.jit(model.init)(jax.random.key(42), jnp.zeros((2, 4)))

  def loss_fn(params, model_state, batch, key):
    x = batch['x']
    if noise:
      x = x + noise * jax.random.normal(key, x.shape)
    if batch_norm:
      pred, new_ms = model.apply({'params': params, **model_state}, x,
                                 mutable=['batch_stats'])
    else:
      pred, new_ms = model.apply({'params': params}, x), model_state
    loss = jnp.mean((pred - batch['y'])**2)
    return loss, (new_ms, {'mae': jnp.mean(jnp.abs(pred - batch['y']))})

  return model, variables, loss_fn


# One problem, loss_fn and optimizer shared by most tests (and the subprocess
# modes): `fit` reuses the compiled step for the same (loss_fn, tx, batch_size),
# which keeps this file fast.
_MODEL, _VARS, _LOSS = regression_problem()
_LOSS_NO_KEY = regression_problem(noise=0.0)[2]
_TX = optax.adam(3e-3)
_DATA = regression_data()
_KW = dict(key=0, batch_size=64)  # 512 rows: 8 steps per epoch


def _cfg(**kw):
  base = dict(optimizer='adam', learning_rate=3e-3)
  base.update(kw)
  return ml_collections.ConfigDict(base)


def _max_diff(a, b) -> float:
  return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _assert_tree_close(a, b, rtol=1e-5, atol=1e-6):
  chex.assert_trees_all_equal_structs(a, b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol,
                               atol=atol)


# ----------------------------------------------------------------------------
# Subprocess modes.


def _mode_multidevice() -> dict:
  """Same run on a 4-device mesh and a 1-device mesh; sharding checks."""
  assert jax.device_count() == 4, jax.devices()
  data, params = _DATA, _VARS['params']
  out = {}
  kw = dict(_KW, tx=_TX, num_steps=20, log_every=1)
  s4, h4 = train.fit(_LOSS, params, data, **kw)
  mesh1 = train.make_data_mesh(jax.devices()[:1])
  s1, h1 = train.fit(_LOSS, params, data, mesh=mesh1, **kw)
  out['loss4'] = h4['loss'].tolist()
  out['loss1'] = h1['loss'].tolist()
  out['param_diff'] = _max_diff(s4.params, s1.params)
  leaf = jax.tree.leaves(s4.params)[0]
  out['param_devices'] = len(leaf.sharding.device_set)
  out['param_replicated'] = bool(leaf.sharding.is_fully_replicated)

  # A host batch_fn (sharded over the 4 devices too) serving the rows the
  # in-memory path gathers on device gives the same trajectory.
  spe = len(data['y']) // 64

  def batch_fn(step):
    rows = train.epoch_batches(0, step // spe, len(data['y']), 64)
    idx = rows[step % spe]
    return {'x': data['x'][idx], 'y': data['y'][idx]}

  _, hb4 = train.fit(_LOSS, params, batch_fn, **kw)
  out['batch_fn_loss4'] = hb4['loss'].tolist()
  # Four steps per call on the 4-device mesh: stacked host batches and
  # in-memory gathers, sharded along the batch axis.
  kw5 = dict(kw, log_every=5)
  _, hs = train.fit(_LOSS, params, batch_fn, steps_per_call=4, **kw5)
  _, hm = train.fit(_LOSS, params, data, steps_per_call=4, **kw5)
  out['chunked_host_loss4'] = hs['loss'].tolist()
  out['chunked_memory_loss4'] = hm['loss'].tolist()
  out['loss4_every5'] = [float(np.mean(h4['loss'][i:i + 5]))
                         for i in range(0, 20, 5)]

  try:
    train.fit(_LOSS, params, data, tx=_TX, key=0, batch_size=30,
              num_steps=2)
    out['error'] = None
  except ValueError as e:
    out['error'] = str(e)
  return out


def _kill_kwargs(workdir):
  return dict(_KW, tx=_TX, num_steps=20, log_every=2, checkpoint_every=5,
              workdir=workdir)


def _mode_sigkill_child(workdir: str) -> dict:
  """Trains until step 8, then announces itself and hangs (to be killed)."""
  marker = os.path.join(workdir, 'hanging')

  def eval_fn(state):
    if int(state.step) >= 8:
      with open(marker, 'w') as f:
        f.write(str(int(state.step)))
      time.sleep(600)
    return {'step': float(state.step)}

  train.fit(_LOSS, _VARS['params'], _DATA, eval_fn=eval_fn, eval_every=1,
            **_kill_kwargs(workdir))
  return {'finished': True}


def _run_mode(mode: str, *args: str, devices: int = 1, wait: bool = True):
  env = dict(os.environ)
  env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  env['JAX_PLATFORMS'] = 'cpu'
  env['PYTHONPATH'] = _ROOT + os.pathsep + env.get('PYTHONPATH', '')
  cmd = [sys.executable, os.path.abspath(__file__), mode, *args]
  if not wait:
    # Output to a file: a full pipe would block the child.
    with open(os.path.join(args[0], 'child.log'), 'w') as log:
      return subprocess.Popen(cmd, env=env, stdout=log, stderr=log)
  proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-5000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------
# Optimizer factory.


def _quadratic_run(tx, steps=50):
  """(initial, final) loss of `steps` updates on sum ||w||^2 (one jit)."""
  params = {'w': jnp.ones((3, 2)), 'b': jnp.ones(2)}
  loss = lambda p: sum(jnp.sum(x**2) for x in jax.tree.leaves(p))

  @jax.jit
  def run(params):
    def body(_, carry):
      params, opt_state = carry
      updates, opt_state = tx.update(jax.grad(loss)(params), opt_state,
                                     params)
      return optax.apply_updates(params, updates), opt_state
    params, _ = jax.lax.fori_loop(0, steps, body, (params, tx.init(params)))
    return loss(params)

  return float(loss(params)), float(run(params))


@pytest.mark.parametrize('name,schedule', [
    *[(name, 'constant') for name in train.OPTIMIZERS],
    ('adam', 'cosine'), ('adamw', 'warmup_cosine'), ('sgd', 'warmup_cosine'),
    ('rmsprop', 'cosine')])
def test_make_optimizer_choices_descend(name, schedule):
  config = ml_collections.ConfigDict(dict(
      optimizer=name, learning_rate=0.05, schedule=schedule, warmup_steps=5,
      num_steps=50, momentum=0.5, weight_decay=1e-3, grad_clip=10.0))
  tx = train.make_optimizer(config)
  assert isinstance(tx, optax.GradientTransformation)
  first, last = _quadratic_run(tx)
  assert last < 0.7 * first, (name, schedule, first, last)


def test_make_optimizer_accepts_dict_and_overrides():
  tx = train.make_optimizer({'optimizer': 'sgd', 'learning_rate': 0.1})
  first, last = _quadratic_run(tx, steps=5)
  tx2 = train.make_optimizer(None, optimizer='sgd', learning_rate=0.1)
  assert _quadratic_run(tx2, steps=5) == (first, last)
  # Defaults: adam 1e-3.
  assert isinstance(train.make_optimizer(), optax.GradientTransformation)


def test_make_optimizer_unknown_name():
  with pytest.raises(ValueError, match='optimizer') as err:
    train.make_optimizer({'optimizer': 'adagrad', 'learning_rate': 0.1})
  for choice in train.OPTIMIZERS:
    assert choice in str(err.value)


def test_make_optimizer_bad_schedule_and_numbers():
  with pytest.raises(ValueError, match='schedule'):
    train.make_optimizer(optimizer='adam', schedule='step')
  with pytest.raises(ValueError, match='num_steps'):
    train.make_optimizer(optimizer='adam', schedule='cosine')
  with pytest.raises(ValueError, match='learning_rate'):
    train.make_optimizer(optimizer='adam', learning_rate=-1.0)
  with pytest.raises(ValueError, match='warmup_steps'):
    train.make_optimizer(schedule='warmup_cosine', warmup_steps=10,
                         num_steps=10)


def test_make_schedule_values():
  sched = train.make_schedule(learning_rate=0.1, schedule='warmup_cosine',
                              warmup_steps=10, num_steps=100)
  np.testing.assert_allclose(
      [sched(0), sched(5), sched(10), sched(100)], [0.0, 0.05, 0.1, 0.0],
      atol=1e-7)
  cos = train.make_schedule(learning_rate=0.1, schedule='cosine',
                            num_steps=100)
  np.testing.assert_allclose([cos(0), cos(50), cos(100)], [0.1, 0.05, 0.0],
                             atol=1e-7)
  const = train.make_schedule(learning_rate=0.1, warmup_steps=4)
  np.testing.assert_allclose([const(0), const(2), const(4), const(1000)],
                             [0.0, 0.05, 0.1, 0.1], atol=1e-7)


def test_grad_clip_and_weight_decay():
  params = {'w': jnp.zeros((2, 2)), 'b': jnp.zeros(2)}
  grads = {'w': jnp.full((2, 2), 100.0), 'b': jnp.full(2, 100.0)}
  tx = train.make_optimizer(optimizer='sgd', learning_rate=1.0, grad_clip=1.0)
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(optax.tree.norm(updates), 1.0, rtol=1e-5)
  # Coupled L2 decays kernels only (ndim >= 2), not biases.
  params = {'w': jnp.ones((2, 2)), 'b': jnp.ones(2)}
  zeros = jax.tree.map(jnp.zeros_like, params)
  tx = train.make_optimizer(optimizer='sgd', learning_rate=1.0,
                            weight_decay=0.1)
  updates, _ = tx.update(zeros, tx.init(params), params)
  np.testing.assert_allclose(updates['w'], -0.1)
  np.testing.assert_allclose(updates['b'], 0.0)
  tx = train.make_optimizer(optimizer='adamw', learning_rate=1.0,
                            weight_decay=0.1)
  updates, _ = tx.update(zeros, tx.init(params), params)
  np.testing.assert_allclose(updates['w'], -0.1)
  np.testing.assert_allclose(updates['b'], 0.0)


# ----------------------------------------------------------------------------
# State and step.


def test_create_train_state():
  params = {'w': jnp.ones(3)}
  tx = optax.adam(1e-3)
  state = train.create_train_state(params, tx, key=jax.random.key(0))
  assert state.step.dtype == jnp.int32 and state.step.shape == ()
  assert state.model_state == {}
  chex.assert_trees_all_equal_structs(state.opt_state, tx.init(params))
  # A raw key is wrapped: the same key data, the same random stream.
  raw = train.create_train_state(params, tx, key=jax.random.PRNGKey(1))
  assert jnp.issubdtype(raw.key.dtype, jax.dtypes.prng_key)
  np.testing.assert_array_equal(jax.random.key_data(raw.key),
                                jax.random.PRNGKey(1))
  seeded = train.create_train_state(params, tx, key=3)
  assert jnp.issubdtype(seeded.key.dtype, jax.dtypes.prng_key)
  with pytest.raises(ValueError, match='key'):
    train.create_train_state(params, tx, key='nope')
  with pytest.raises(ValueError, match='tx'):
    train.create_train_state(params, 'adam', key=0)
  # Python scalars and numpy leaves become arrays (tx.init runs in a jit).
  mixed = train.create_train_state({'w': np.ones(3), 'b': 0.5}, tx, key=0)
  assert isinstance(mixed.params['b'], jax.Array)
  assert mixed.params['b'].shape == () and float(mixed.params['b']) == 0.5
  np.testing.assert_array_equal(mixed.opt_state[0].mu['w'], np.zeros(3))


def test_make_train_step_traces_once_and_uses_fold_in_key():
  seen_keys = []

  @chex.assert_max_traces(n=1)
  def loss_fn(params, model_state, batch, key):
    noise = jax.random.normal(key, ())
    loss = jnp.mean((batch['x'] @ params['w'] - batch['y'])**2)
    return loss, (model_state, {'noise': noise})

  tx = optax.sgd(0.1)
  state = train.create_train_state({'w': jnp.zeros(3)}, tx,
                                   key=jax.random.key(7))
  step_fn = train.make_train_step(loss_fn, tx)
  batch = {'x': jnp.ones((8, 3)), 'y': jnp.ones(8)}
  losses = []
  for _ in range(10):
    state, metrics = step_fn(state, batch)
    losses.append(float(metrics['loss']))
    seen_keys.append(float(metrics['noise']))
  assert int(state.step) == 10
  assert losses[-1] < 0.1 * losses[0]
  expected = [float(jax.random.normal(
      jax.random.fold_in(jax.random.key(7), s), ())) for s in range(10)]
  np.testing.assert_allclose(seen_keys, expected, rtol=1e-6)


def test_update_is_the_step_of_make_train_step():
  tx = optax.adam(0.1)
  loss_fn = lambda p, ms, b, k: (jnp.sum((p['w'] * b) ** 2),
                                 (ms, {'noise': jax.random.normal(k, ())}))
  state = train.create_train_state({'w': jnp.ones(3)}, tx, key=2)
  batch = jnp.arange(3.0)
  new, metrics = jax.jit(lambda s: train.update(loss_fn, tx, s, batch))(state)
  ref, ref_metrics = train.make_train_step(loss_fn, tx, donate=False)(state,
                                                                      batch)
  assert int(new.step) == 1
  _assert_tree_close(new.params, ref.params)
  _assert_tree_close(metrics, ref_metrics)
  assert set(metrics) == {'loss', 'noise'}


def test_make_train_step_donates_state():
  tx = optax.sgd(0.1)
  loss_fn = lambda p, ms, b, k: (jnp.sum(p['w'] * b), (ms, {}))
  state = train.create_train_state({'w': jnp.ones(3)}, tx, key=0)
  step_fn = train.make_train_step(loss_fn, tx)
  new_state, _ = step_fn(state, jnp.ones(3))
  assert state.params['w'].is_deleted()
  assert not new_state.params['w'].is_deleted()


def test_bad_loss_fn_aux_is_reported():
  tx = optax.sgd(0.1)
  state = train.create_train_state({'w': jnp.ones(3)}, tx, key=0)
  step_fn = train.make_train_step(
      lambda p, ms, b, k: (jnp.sum(p['w']), {'acc': 1.0}), tx, donate=False)
  with pytest.raises(ValueError, match='new_model_state'):
    step_fn(state, jnp.ones(3))


# ----------------------------------------------------------------------------
# fit.


def test_fit_regression_converges_writes_metrics_keeps_user_params(tmp_path):
  params = _VARS['params']
  eval_fn = jax.jit(lambda s: {'norm': optax.tree.norm(s.params)})
  state, history = train.fit(_LOSS, params, _DATA, tx=_TX, num_steps=400,
                             log_every=50, workdir=tmp_path, eval_fn=eval_fn,
                             **_KW)
  assert int(state.step) == 400
  np.testing.assert_array_equal(history['step'], np.arange(50, 401, 50))
  assert set(history) == {'step', 'loss', 'mae', 'steps_per_sec',
                          'eval_step', 'eval/norm'}
  assert history['loss'][-1] < history['loss'][0] / 5, history['loss']
  # The caller's parameters were copied, not donated.
  assert not any(x.is_deleted() for x in jax.tree.leaves(params))
  with open(tmp_path / 'metrics.jsonl') as f:
    lines = [json.loads(line) for line in f]
  assert [l['step'] for l in lines] == list(range(50, 401, 50)) + [400]
  assert set(lines[0]) == {'step', 'loss', 'mae', 'steps_per_sec'}
  assert set(lines[-1]) == {'step', 'eval/norm'}
  np.testing.assert_allclose([l['loss'] for l in lines[:-1]], history['loss'])
  assert train.latest_checkpoint_step(tmp_path) == 400


def test_fit_classification_converges():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(1024, 4)).astype(np.float32)
  labels = ((x[:, 0] * x[:, 1]) > 0).astype(np.int32)  # XOR
  model = MLP(out=2)
  params = jax.jit(model.init)(jax.random.key(0), x[:1])['params']

  def loss_fn(params, ms, batch, key):
    logits = model.apply({'params': params}, batch['x'])
    loss = optax.softmax_cross_entropy_with_integer_labels(
        logits, batch['label']).mean()
    acc = jnp.mean(jnp.argmax(logits, -1) == batch['label'])
    return loss, (ms, {'accuracy': acc})

  @jax.jit
  def eval_fn(state):
    logits = model.apply({'params': state.params}, x)
    return {'accuracy': jnp.mean(jnp.argmax(logits, -1) == labels)}

  state, history = train.fit(
      loss_fn, params, {'x': x, 'label': labels},
      _cfg(learning_rate=1e-2, schedule='warmup_cosine', warmup_steps=20),
      key=1, batch_size=128, num_steps=300, log_every=100, eval_fn=eval_fn,
      eval_every=100)
  np.testing.assert_array_equal(history['eval_step'], [100, 200, 300])
  assert history['loss'][-1] < history['loss'][0] / 3, history['loss']
  assert history['eval/accuracy'][-1] > 0.9, history['eval/accuracy']


def test_fit_compiles_once():
  traces = []

  def counting_loss(*args):
    traces.append(1)
    return _LOSS_NO_KEY(*args)

  guarded = chex.assert_max_traces(counting_loss, n=1)
  # 8 steps per epoch: 5 epochs, logs, evals, all with one compiled step.
  train.fit(guarded, _VARS['params'], _DATA, tx=_TX, num_steps=40,
            log_every=3, eval_every=7, eval_fn=lambda s: {'step': s.step},
            **_KW)
  assert len(traces) == 1


def test_fit_model_state_batch_norm_and_config_fields():
  _, variables, loss_fn = regression_problem(batch_norm=True, noise=0.0)
  data = regression_data()
  data['x'] = data['x'] * 2.0 + 3.0   # mean 3, var 4
  before = variables['batch_stats']
  # batch_size, num_steps, log_every and the key come from the config.
  state, history = train.fit(
      loss_fn, variables['params'], data,
      _cfg(batch_size=64, num_steps=60, log_every=20, seed=0),
      model_state={'batch_stats': before})
  assert int(state.step) == 60 and len(history['loss']) == 3
  stats = state.model_state['batch_stats']['BatchNorm_0']
  np.testing.assert_allclose(stats['mean'], 3.0, atol=0.3)
  np.testing.assert_allclose(stats['var'], 4.0, rtol=0.25)
  assert np.all(np.isfinite(history['loss']))


def test_fit_in_memory_batches_follow_epoch_permutations():
  n, b = 40, 8
  data = {'i': np.arange(n, dtype=np.int32)}

  def loss_fn(params, ms, batch, key):
    return jnp.sum(params['w'] ** 2), (ms, {'first': batch['i'][0],
                                            'sum': jnp.sum(batch['i'])})

  state, history = train.fit(loss_fn, {'w': jnp.ones(())}, data,
                             tx=optax.sgd(0.1), key=5, batch_size=b,
                             num_steps=10, log_every=1)
  sums = history['sum']
  # Each epoch (5 steps) covers every row exactly once.
  assert sums[:5].sum() == sums[5:].sum() == n * (n - 1) / 2
  rows0 = train.epoch_batches(state.key, 0, n, b)
  np.testing.assert_array_equal(history['first'][:5], rows0[:, 0])
  np.testing.assert_array_equal(history['sum'][:5], rows0.sum(axis=1))
  assert not np.array_equal(history['first'][:5], history['first'][5:])


def test_epoch_batches_numpy_pcg64_rule():
  """Epoch e: `default_rng([*key_words, e]).permutation(n)`, cut into
  batches (remainder dropped), each batch's rows sorted."""
  key = jax.random.key(11)
  words = [int(w) for w in np.asarray(jax.random.key_data(key))]
  for epoch in (0, 3):
    perm = np.random.default_rng([*words, epoch]).permutation(103)
    want = [np.sort(perm[i * 10:(i + 1) * 10]) for i in range(10)]
    got = train.epoch_batches(key, epoch, 103, 10)
    assert got.shape == (10, 10) and got.dtype == np.int32
    np.testing.assert_array_equal(got, want)
  # A raw key and an int seed name the same key.
  np.testing.assert_array_equal(
      train.epoch_batches(jax.random.PRNGKey(4), 1, 50, 7),
      train.epoch_batches(4, 1, 50, 7))
  assert not np.array_equal(train.epoch_batches(4, 0, 50, 7),
                            train.epoch_batches(4, 1, 50, 7))
  with pytest.raises(ValueError, match='batch_size'):
    train.epoch_batches(4, 0, 5, 7)
  with pytest.raises(ValueError, match='epoch'):
    train.epoch_batches(4, -1, 50, 7)
  with pytest.raises(ValueError, match='key'):
    train.epoch_batches('nope', 0, 50, 7)


def test_fit_batch_fn_host_and_traced_agree():
  base = jax.random.key(3)

  def make_batch(step):
    k = jax.random.fold_in(base, step)
    x = jax.random.normal(k, (64, 4))
    return {'x': x, 'y': jnp.sin(2 * x[:, 0]) + x[:, 1] * x[:, 2]}

  kw = dict(_KW, tx=_TX, num_steps=30, log_every=5)
  params = _VARS['params']
  host, h_host = train.fit(_LOSS_NO_KEY, params,
                           lambda s: jax.device_get(make_batch(s)), **kw)
  traced, h_traced = train.fit(_LOSS_NO_KEY, params, make_batch,
                               trace_batch_fn=True, **kw)
  np.testing.assert_allclose(h_host['loss'], h_traced['loss'], rtol=1e-5)
  _assert_tree_close(host.params, traced.params)
  with pytest.raises(ValueError, match='batch_size'):
    train.fit(_LOSS_NO_KEY, params, lambda s: jax.device_get(make_batch(s)),
              **dict(kw, batch_size=32))


@pytest.mark.parametrize('kind', ['in_memory', 'host', 'traced'])
def test_fit_steps_per_call_equals_one_step_per_call(kind):
  """Several steps per jitted call (lax.scan): the same keys, batches and
  result; calls stop at log and epoch boundaries (8 steps per epoch)."""
  base = jax.random.key(3)

  def make_batch(step):
    x = jax.random.normal(jax.random.fold_in(base, step), (64, 4))
    return {'x': x, 'y': jnp.sin(2 * x[:, 0]) + x[:, 1] * x[:, 2]}

  data = {'in_memory': _DATA, 'traced': make_batch,
          'host': lambda s: jax.device_get(make_batch(s))}[kind]
  kw = dict(_KW, tx=_TX, num_steps=23, log_every=5,
            trace_batch_fn=kind == 'traced')
  # _LOSS draws noise from the step key: the keys must match too.
  one, h1 = train.fit(_LOSS, _VARS['params'], data, **kw)
  many, h4 = train.fit(_LOSS, _VARS['params'], data, steps_per_call=4, **kw)
  np.testing.assert_array_equal(h4['step'], [5, 10, 15, 20, 23])
  np.testing.assert_array_equal(h1['step'], h4['step'])
  np.testing.assert_allclose(h4['loss'], h1['loss'], rtol=1e-5)
  np.testing.assert_allclose(h4['mae'], h1['mae'], rtol=1e-5)
  assert int(many.step) == 23
  _assert_tree_close(many.params, one.params)
  _assert_tree_close(many.opt_state, one.opt_state)


def test_chunk_length_stops_at_every_boundary():
  chunk = train._chunk_length  # pylint: disable=protected-access
  assert chunk(0, 100, 10, [100]) == 10
  assert chunk(0, 7, 10, [100]) == 7            # num_steps
  assert chunk(3, 100, 10, [5]) == 2            # next multiple of 5
  assert chunk(5, 100, 10, [5, 8]) == 3         # epoch end at 8
  assert chunk(8, 100, 1, [5, 8]) == 1


def test_fit_steps_per_call_resumes_exactly(tmp_path):
  kw = dict(_KW, tx=_TX, log_every=6, checkpoint_every=5)
  ref, ref_hist = train.fit(_LOSS, _VARS['params'], _DATA, num_steps=24,
                            **kw)
  s12, h12 = train.fit(_LOSS, _VARS['params'], _DATA, num_steps=12,
                       workdir=tmp_path, steps_per_call=4, **kw)
  assert train.latest_checkpoint_step(tmp_path) == 12
  s24, h24 = train.fit(_LOSS, _VARS['params'], _DATA, num_steps=24,
                       workdir=tmp_path, steps_per_call=4, **kw)
  assert int(s24.step) == 24
  _assert_tree_close(s24.params, ref.params)
  np.testing.assert_allclose(np.concatenate([h12['loss'], h24['loss']]),
                             ref_hist['loss'], rtol=1e-5)


def test_fit_argument_errors():
  data = regression_data(n=64)
  p = _VARS['params']
  with pytest.raises(ValueError, match='batch_size'):
    train.fit(_LOSS, p, data, _cfg(), key=0, batch_size=128, num_steps=2)
  with pytest.raises(ValueError, match='batch_size'):
    train.fit(_LOSS, p, data, _cfg(), key=0, num_steps=2)
  with pytest.raises(ValueError, match='batch_size'):
    train.fit(_LOSS, p, data, _cfg(), key=0, batch_size=0, num_steps=2)
  with pytest.raises(ValueError, match='num_steps'):
    train.fit(_LOSS, p, data, _cfg(), key=0, batch_size=8)
  with pytest.raises(ValueError, match='key'):
    train.fit(_LOSS, p, data, _cfg(), batch_size=8, num_steps=2)
  with pytest.raises(ValueError, match='leading dim'):
    train.fit(_LOSS, p, {'x': data['x'], 'y': data['y'][:10]}, _cfg(),
              key=0, batch_size=8, num_steps=2)
  with pytest.raises(ValueError, match='optimizer'):
    train.fit(_LOSS, p, data, _cfg(optimizer='lbfgs'), key=0, batch_size=8,
              num_steps=2)
  with pytest.raises(ValueError, match='tx'):
    train.fit(_LOSS, p, data, key=0, batch_size=8, num_steps=2)
  with pytest.raises(ValueError, match='log_every'):
    train.fit(_LOSS, p, data, _cfg(), key=0, batch_size=8, num_steps=2,
              log_every=0)
  for bad in (0, 2.5, True):
    with pytest.raises(ValueError, match='steps_per_call'):
      train.fit(_LOSS, p, data, _cfg(), key=0, batch_size=8, num_steps=2,
                steps_per_call=bad)


# ----------------------------------------------------------------------------
# Resume.

_RESUME_KW = dict(_KW, tx=_TX, log_every=2)


@pytest.fixture(scope='module')
def reference_24():
  return train.fit(_LOSS, _VARS['params'], _DATA, num_steps=24, **_RESUME_KW)


def test_fit_twice_equals_uninterrupted(tmp_path, reference_24):
  s12, h12 = train.fit(_LOSS, _VARS['params'], _DATA, num_steps=12,
                       workdir=tmp_path, **_RESUME_KW)
  assert int(s12.step) == 12
  assert train.latest_checkpoint_step(tmp_path) == 12
  s24, h24 = train.fit(_LOSS, _VARS['params'], _DATA, num_steps=24,
                       workdir=tmp_path, **_RESUME_KW)
  ref, ref_hist = reference_24
  assert int(s24.step) == 24
  _assert_tree_close(s24.params, ref.params)
  _assert_tree_close(s24.opt_state, ref.opt_state)
  np.testing.assert_allclose(np.concatenate([h12['loss'], h24['loss']]),
                             ref_hist['loss'], rtol=1e-5)
  # The same command again: nothing left to do, returns the final state.
  s_again, h_again = train.fit(_LOSS, _VARS['params'], _DATA, num_steps=24,
                               workdir=tmp_path, **_RESUME_KW)
  assert int(s_again.step) == 24 and h_again == {}
  _assert_tree_close(s_again.params, ref.params)
  with open(tmp_path / 'metrics.jsonl') as f:
    steps = [json.loads(line)['step'] for line in f]
  assert steps == list(range(2, 25, 2))


def test_crash_then_resume_equals_uninterrupted(tmp_path, reference_24):
  def crashing_eval(state):
    if int(state.step) == 8:
      raise RuntimeError('injected crash')
    return {}

  with pytest.raises(RuntimeError, match='injected'):
    train.fit(_LOSS, _VARS['params'], _DATA, num_steps=24, workdir=tmp_path,
              checkpoint_every=5, eval_fn=crashing_eval, eval_every=1,
              **_RESUME_KW)
  assert train.latest_checkpoint_step(tmp_path) == 5
  state, history = train.fit(_LOSS, _VARS['params'], _DATA, num_steps=24,
                             workdir=tmp_path, checkpoint_every=5,
                             **_RESUME_KW)
  ref, ref_hist = reference_24
  _assert_tree_close(state.params, ref.params)
  np.testing.assert_array_equal(history['step'], np.arange(6, 25, 2))
  np.testing.assert_allclose(history['loss'][1:], ref_hist['loss'][3:],
                             rtol=1e-5)
  with open(tmp_path / 'metrics.jsonl') as f:
    lines = [json.loads(line) for line in f]
  train_steps = [l['step'] for l in lines if 'loss' in l]
  eval_steps = [l['step'] for l in lines if 'loss' not in l]
  assert train_steps == list(range(2, 25, 2))  # none twice after the resume
  assert eval_steps == [1, 2, 3, 4, 5]  # the crashed run's, up to step 5
  assert sorted(os.listdir(tmp_path / 'checkpoints'))[-1] == '24'


def test_sigkill_then_rerun_equals_uninterrupted(tmp_path):
  """A child process trains, checkpoints at step 5, hangs at step 8 and is
  SIGKILLed; rerunning its command here resumes from step 5 and ends where an
  uninterrupted run ends (both on one CPU device, like the child)."""
  workdir = str(tmp_path / 'run')
  os.makedirs(workdir)
  proc = _run_mode('sigkill_child', workdir, wait=False)
  marker = os.path.join(workdir, 'hanging')
  deadline = time.time() + 240
  while not os.path.exists(marker) and proc.poll() is None:
    assert time.time() < deadline, 'child never reached step 8'
    time.sleep(0.1)
  if proc.poll() is not None:
    with open(os.path.join(workdir, 'child.log')) as f:
      pytest.fail('child exited early:\n' + f.read()[-3000:])
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait(timeout=60)
  assert proc.returncode == -signal.SIGKILL
  assert train.latest_checkpoint_step(workdir) == 5

  mesh1 = train.make_data_mesh(jax.devices()[:1])
  state, history = train.fit(_LOSS, _VARS['params'], _DATA, mesh=mesh1,
                             **_kill_kwargs(workdir))
  ref, _ = train.fit(_LOSS, _VARS['params'], _DATA, mesh=mesh1,
                     **_kill_kwargs(None))
  assert int(state.step) == 20
  np.testing.assert_array_equal(history['step'], np.arange(6, 21, 2))
  _assert_tree_close(state.params, ref.params, rtol=1e-6, atol=1e-7)
  _assert_tree_close(state.opt_state, ref.opt_state, rtol=1e-6, atol=1e-7)
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    steps = [json.loads(line)['step'] for line in f if '"loss"' in line]
  assert steps == list(range(2, 21, 2))


# ----------------------------------------------------------------------------
# Multi-device (4 fake CPU devices in a subprocess).


def test_multidevice_matches_single_device():
  out = _run_mode('multidevice', devices=4)
  assert out['param_devices'] == 4 and out['param_replicated']
  np.testing.assert_allclose(out['loss4'], out['loss1'], rtol=1e-4)
  assert len(out['loss4']) == 20
  assert out['loss4'][-1] < out['loss4'][0]
  assert out['param_diff'] < 1e-4
  np.testing.assert_allclose(out['batch_fn_loss4'], out['loss1'], rtol=1e-4)
  np.testing.assert_allclose(out['chunked_host_loss4'], out['loss4_every5'],
                             rtol=1e-4)
  np.testing.assert_allclose(out['chunked_memory_loss4'],
                             out['loss4_every5'], rtol=1e-4)
  assert out['error'] is not None
  assert 'batch_size' in out['error'] and '4' in out['error']


# ----------------------------------------------------------------------------
# Checkpoints and metric files.


@pytest.mark.parametrize('key', [jax.random.key(3), jax.random.PRNGKey(3)])
def test_checkpoint_roundtrip(tmp_path, key):
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))
  params = {'dense': {'kernel': jnp.arange(6.0).reshape(2, 3),
                      'bias': jnp.zeros(3)}}
  state = train.create_train_state(
      params, tx, key=key, model_state={'batch_stats': {'mean': jnp.ones(3)}})
  # Saved with the key as given (a raw key is the uint32 key data that
  # checkpoints hold for typed keys too); restored into the typed-key state.
  state = state.replace(step=jnp.asarray(7, jnp.int32), key=key)
  assert train.restore_latest(tmp_path, state) is None
  assert train.restore_latest(None, state) is None
  assert train.latest_checkpoint_step(tmp_path) is None
  assert train.save_checkpoint(tmp_path, state, 7)
  assert not train.save_checkpoint(tmp_path, state, 7)  # already there
  target = state.replace(step=jnp.zeros((), jnp.int32),
                         params=jax.tree.map(jnp.zeros_like, params),
                         key=train.create_train_state(params, tx, key=0).key)
  restored = train.restore_latest(tmp_path, target)
  assert isinstance(restored, train.TrainState)
  assert int(restored.step) == 7
  _assert_tree_close(restored.params, params)
  _assert_tree_close(restored.model_state, state.model_state)
  assert jnp.issubdtype(restored.key.dtype, jax.dtypes.prng_key)
  np.testing.assert_array_equal(
      jax.random.key_data(restored.key),
      key if key.dtype == jnp.uint32 else jax.random.key_data(key))
  for step in (8, 9, 10):
    train.save_checkpoint(tmp_path, state, step, max_to_keep=2)
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['10', '9']
  assert train.latest_checkpoint_step(tmp_path) == 10


def test_metric_writer_and_metrics_json(tmp_path):
  with train.MetricWriter(tmp_path) as w:
    for step in (1, 2, 3):
      w.write(step, {'loss': jnp.float32(step / 2), 'n': 3})
  with open(tmp_path / 'metrics.jsonl') as f:
    lines = [json.loads(line) for line in f]
  assert lines == [{'step': s, 'loss': s / 2, 'n': 3} for s in (1, 2, 3)]
  with train.MetricWriter(tmp_path / 'metrics.jsonl', resume_step=2) as w:
    w.write(3, {'loss': 9.0})
  with open(tmp_path / 'metrics.jsonl') as f:
    lines = [json.loads(line) for line in f]
  assert [l['step'] for l in lines] == [1, 2, 3] and lines[-1]['loss'] == 9.0
  with train.MetricWriter(tmp_path / 'off.jsonl', enabled=False) as w:
    w.write(1, {'loss': 1.0})
  assert not os.path.exists(tmp_path / 'off.jsonl')

  path = train.write_metrics_json(
      tmp_path / 'out', {'acc': np.float32(0.5), 'n': 3,
                         'eval': {'loss': jnp.array(0.25)}})
  with open(path) as f:
    assert json.load(f) == {'acc': 0.5, 'eval/loss': 0.25, 'n': 3.0}
  with pytest.raises(ValueError, match='vec'):
    train.write_metrics_json(tmp_path, {'vec': np.ones(3)})


if __name__ == '__main__':
  _MODES = {'multidevice': _mode_multidevice,
            'sigkill_child': _mode_sigkill_child}
  print(json.dumps(_MODES[sys.argv[1]](*sys.argv[2:])), flush=True)


# ----------------------------------------------------------------------------
# unsaved_collections: frozen inputs kept out of checkpoints.


def _scaled_loss(params, model_state, batch, key):
  del key
  pred = batch['x'] @ params['w'] * model_state['frozen']['scale']
  return jnp.mean((pred - batch['y'])**2), (model_state, {})


def _frozen_state(scale):
  return {'frozen': {'scale': jnp.float32(scale)},
          'count': {'c': jnp.zeros((), jnp.float32)}}


def _checkpoint_bytes(workdir):
  # The tree's keys are in each checkpoint's _METADATA (orbax).
  out = b''
  for root, _, files in os.walk(os.path.join(workdir, 'checkpoints')):
    if '_METADATA' in files:
      with open(os.path.join(root, '_METADATA'), 'rb') as fh:
        out += fh.read()
  return out


def test_fit_unsaved_collections_stay_out_of_checkpoints(tmp_path):
  kw = dict(tx=optax.adam(1e-2), key=0, batch_size=64)
  p0 = {'w': jnp.zeros(4)}
  # Reference: 6 steps with scale 1, then 6 with scale 2.
  s6, _ = train.fit(_scaled_loss, p0, _DATA, num_steps=6,
                    model_state=_frozen_state(1.0), **kw)
  s6 = s6.replace(model_state=_frozen_state(2.0))
  ref, _ = train.fit(_scaled_loss, s6, _DATA, num_steps=12, **kw)

  new, old = str(tmp_path / 'new'), str(tmp_path / 'old')
  train.fit(_scaled_loss, p0, _DATA, num_steps=6, workdir=new,
            model_state=_frozen_state(1.0), unsaved_collections=('frozen',),
            **kw)
  saved = _checkpoint_bytes(new)
  assert b'count' in saved and b'frozen' not in saved
  # Resuming takes the given (new) value of the unsaved collection.
  out, _ = train.fit(_scaled_loss, p0, _DATA, num_steps=12, workdir=new,
                     model_state=_frozen_state(2.0),
                     unsaved_collections=('frozen',), **kw)
  assert float(out.model_state['frozen']['scale']) == 2.0
  _assert_tree_close(out.params, ref.params)
  # A checkpoint written with the collection (older release) still resumes.
  train.fit(_scaled_loss, p0, _DATA, num_steps=6, workdir=old,
            model_state=_frozen_state(1.0), **kw)
  assert b'frozen' in _checkpoint_bytes(old)
  out, _ = train.fit(_scaled_loss, p0, _DATA, num_steps=12, workdir=old,
                     model_state=_frozen_state(2.0),
                     unsaved_collections='frozen', **kw)
  assert float(out.model_state['frozen']['scale']) == 2.0
  _assert_tree_close(out.params, ref.params)
  with pytest.raises(ValueError, match='unsaved_collections'):
    train.fit(_scaled_loss, p0, _DATA, num_steps=1,
              model_state=_frozen_state(1.0), unsaved_collections=('nope',),
              **kw)


def test_warmup_linear_schedule():
  f = train.make_schedule(learning_rate=1.0, schedule='warmup_linear',
                          warmup_steps=2, num_steps=10)
  np.testing.assert_allclose([float(f(i)) for i in (0, 1, 2, 6, 10)],
                             [0.0, 0.5, 1.0, 0.5, 0.0], atol=1e-7)
  with pytest.raises(ValueError, match='warmup_steps'):
    train.make_schedule(schedule='warmup_linear', warmup_steps=10,
                        num_steps=10)
