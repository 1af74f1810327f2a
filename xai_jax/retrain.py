"""Keep-and-retrain (KAR) and remove-and-retrain (ROAR) curves.

Hooker, Erhan, Kindermans & Kim, "A Benchmark for Interpretability Methods
in Deep Neural Networks", NeurIPS 2019 (arXiv:1806.10758).

An attribution method ranks the input features of every train and test
example. For each fraction `t`, the top `t` of the features are kept (KAR)
or removed (ROAR); the features that are not kept are replaced by a fill
value, a classifier is trained *from scratch* on the modified training set
and its accuracy is measured on the modified test set. Retraining removes
the confound of plain deletion curves (a model evaluated on inputs unlike
anything it was trained on): accuracy only changes when the removed features
carried information.

* KAR: a good ranking keeps the informative features first, so accuracy is
  high already at small `t` (higher curve / area is better).
* ROAR: a good ranking removes the informative features first, so accuracy
  drops fast as `t` grows (lower curve / area is better).

The area under a curve (`RetrainResult.auc`, trapezoid rule over `t`
divided by the range of `t`, so it is in accuracy units) summarises it.

Cost: every retraining of one call (rankings x fractions x repeats) is one
copy of the parameters, and all copies are trained at once: one jitted
function runs `num_steps` steps in a `lax.scan`, each step `jax.vmap`-ed over
the copies, then every copy is evaluated on the test set (vmapped, in chunks
of test rows). Convolutional models on a CPU use one jitted call per step
instead, the copies unrolled inside it (`loop='steps'`; XLA:CPU runs
convolutions far slower inside loops and vmapped over per-copy kernels).
Either way the training program is compiled once per shape (data, number
of rankings, fractions and repeats, model, steps, batch size) and shared by
both modes and every fill, key and learning rate. The masked inputs are
built on the fly for each step's minibatch from integer feature ranks, so
memory is that of the ranks `[R, n, F]` plus one minibatch per copy, never
`[copies, n, *input_shape]`.

Differences from the paper: Hooker et al. replace the removed pixels by the
per-channel mean of the training set; `fill='mean'` here uses the mean of
every input element over the training inputs (`[*input_shape]`), which for
images is a per-pixel mean image (use `fill=<float>` for a global constant).
Token inputs (`groups.kind == 'tokens'`) are masked hard: removed tokens
become `pad_id`. The paper retrains 5 times per point; `repeats` sets the
number here (default 1).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence

import flax.linen as nn
import jax
from jax.extend import core as jax_core
import jax.numpy as jnp
import numpy as np
import optax

from xai_jax import _checks
from xai_jax import blackbox
from xai_jax import masking
from xai_jax import metrics
from xai_jax import models
from xai_jax import train as train_lib

Array = jax.Array

FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
MODES = ('keep', 'remove')
FILLS = ('mean', 'zero')
LOOPS = ('auto', 'scan', 'steps')

# Model-input elements per test chunk of the vmapped evaluation (all copies).
_EVAL_ELEMENTS = 1 << 23


class RetrainResult(NamedTuple):
  """The KAR / ROAR curves of `retrain_curve`.

  Attributes:
    fractions: `[m]`, the fractions `t` of features kept or removed.
    accuracy: `[R, m]`, test accuracy of ranking `r` at fraction `t`, the mean
      over repeats.
    accuracy_runs: `[R, repeats, m]`, the accuracy of every retraining.
    auc: `[R]`, the trapezoid area under `accuracy` over `fractions` divided
      by `fractions[-1] - fractions[0]` (accuracy units; with one fraction,
      that fraction's accuracy). KAR: higher is better; ROAR: lower is better.
    num_kept: int `[m]`, the number of features kept (mode 'keep') or removed
      (mode 'remove') at each fraction, `round(t * F)` clipped to `[1, F-1]`.
  """

  fractions: np.ndarray
  accuracy: np.ndarray
  accuracy_runs: np.ndarray
  auc: np.ndarray
  num_kept: np.ndarray


# ----------------------------------------------------------------------------
# Rankings and masks.


def _check_fractions(fractions: Any) -> np.ndarray:
  f = np.asarray(fractions, dtype=np.float64)
  if f.ndim != 1 or f.size == 0:
    raise ValueError(f'fractions must be a non-empty 1-D sequence, got '
                     f'{fractions!r}.')
  if not np.all(np.isfinite(f)) or np.any(f <= 0) or np.any(f >= 1):
    raise ValueError(f'fractions must lie in (0, 1), got {fractions!r}.')
  if np.any(np.diff(f) <= 0):
    raise ValueError(f'fractions must be strictly increasing, got '
                     f'{fractions!r}.')
  return f


def _counts(fractions: np.ndarray, num_features: int) -> np.ndarray:
  """`round(t * F)` (halves up) clipped to `[1, F - 1]`, int `[m]`."""
  k = np.floor(fractions * num_features + 0.5 + 1e-9).astype(np.int64)
  return np.clip(k, 1, num_features - 1).astype(np.int32)


def _check_importance(name: str, importance: Any, *,
                      num_features: int | None = None,
                      num_rows: int | None = None) -> Array:
  imp = _checks.as_array(name, importance)
  _checks.check_array(name, imp, ndim=(2, 3), finite=True)
  if not (jnp.issubdtype(imp.dtype, jnp.floating)
          or jnp.issubdtype(imp.dtype, jnp.integer)):
    raise ValueError(f'{name} must hold real numbers, got {imp.dtype}.')
  if num_features is not None and imp.shape[-1] != num_features:
    raise ValueError(
        f'{name} must have F={num_features} features in its last dimension '
        f'(the number of feature groups, or of input elements without '
        f'groups), got shape {imp.shape}.')
  if imp.shape[-1] < 2:
    raise ValueError(f'{name} must rank at least 2 features, got shape '
                     f'{imp.shape}.')
  if imp.ndim == 3 and num_rows is not None and imp.shape[1] != num_rows:
    raise ValueError(f'{name} is per example [R, n, F] with n={imp.shape[1]}, '
                     f'but the data has {num_rows} examples.')
  if imp.shape[0] == 0:
    raise ValueError(f'{name} must hold at least one ranking, got shape '
                     f'{imp.shape}.')
  return imp


@jax.jit
def _rank_rows(importance: Array, key: Array | None) -> Array:
  """Rank of every feature (0 = most important) of `[R, ..., F]` maps.

  Features are sorted by decreasing importance; ties are broken by a
  uniform random priority from `fold_in(key, r)` for ranking `r` (so a
  ranking's ties do not depend on how many rankings are passed), or by index
  when `key` is None.
  """
  f = importance.shape[-1]
  row_shape = importance.shape[1:]
  if key is None:
    prio = jnp.broadcast_to(jnp.arange(f, dtype=jnp.float32), importance.shape)
  else:
    prio = jax.vmap(lambda r: jax.random.uniform(
        jax.random.fold_in(key, r), row_shape))(jnp.arange(importance.shape[0]))
  neg = -importance.astype(jnp.float32)
  order = jnp.lexsort((prio, neg), axis=-1)
  ranks = jnp.argsort(order, axis=-1)
  return ranks.astype(jnp.int16 if f < 2**15 else jnp.int32)


def _kept(ranks: Array, k: Array, keep: bool | Array) -> Array:
  """Bool mask of the kept features: the top `k` (keep) or all but them."""
  return jnp.where(keep, ranks < k, ranks >= k)


def feature_masks(importance: Array | np.ndarray,
                  fractions: Sequence[float] = FRACTIONS, *, mode: str = 'keep',
                  key: Array | int | None = None) -> Array:
  """The KAR / ROAR feature masks of importance maps at every fraction.

  Features are ranked by decreasing importance (the signed value: pass
  `abs(attribution)` to rank by magnitude). At fraction `t` the top
  `k = round(t * F)` features (at least 1, at most F - 1) are kept
  (mode 'keep', KAR) or removed (mode 'remove', ROAR; the rest are kept).
  Hooker et al., NeurIPS 2019 (arXiv:1806.10758).

  Args:
    importance: `[R, F]`, one global ranking per `r` shared by all examples,
      or `[R, n, F]`, one map per example.
    fractions: `[m]`, increasing, in (0, 1).
    mode: 'keep' or 'remove'.
    key: breaks ties uniformly at random (a PRNG key or an int seed; the
      same key gives the same masks), so a constant map is a random
      ordering; None breaks ties by feature index.

  Returns:
    bool `[R, m, F]` (global maps) or `[R, m, n, F]` (per example): True
    where the feature is KEPT in the input.

  Raises:
    ValueError: naming the argument for maps of the wrong rank, with NaN or
      inf, or fewer than 2 features; fractions outside (0, 1) or not
      increasing; an unknown mode.
  """
  _checks.check_choice('mode', mode, MODES)
  imp = _check_importance('importance', importance)
  f = _check_fractions(fractions)
  key = None if key is None else _checks.as_key('key', key)
  ranks = _rank_rows(imp, key)
  k = jnp.asarray(_counts(f, imp.shape[-1]))
  k = k.reshape((len(f),) + (1,) * (imp.ndim - 1))
  return _kept(ranks[:, None], k, mode == 'keep')


# ----------------------------------------------------------------------------
# The vmapped retraining.


def _input_mask(groups: masking.FeatureGroups, kept: Array) -> Array:
  """Group mask `[b, F]` -> float input mask `[b, *input_shape]`."""
  return groups.expand(kept.astype(jnp.float32))


def _masked(x: Array, kept: Array, groups: masking.FeatureGroups,
            fill: Array, pad_id: Array) -> Array:
  mask = _input_mask(groups, kept)
  if groups.kind == 'tokens':
    return masking.mask_tokens(x, mask, pad_id)
  return masking.apply_mask(x, mask, fill)


def _rows_ranks(ranks: Array, idx: Array | None) -> Array:
  """The ranks of rows `idx` (per-example maps) or the global ranks `[F]`."""
  return ranks if ranks.ndim == 1 else ranks[idx]


def _init_states(copy_keys: Array, x_example: Array, learning_rate: Array, *,
                 module: nn.Module) -> train_lib.TrainState:
  """A fresh `TrainState` per copy (stacked `[copies, ...]`)."""
  tx = optax.adam(learning_rate)

  def init(key):
    init_key, run_key = jax.random.split(key)
    params = module.init(init_key, x_example)['params']
    return train_lib.create_train_state(params, tx, key=run_key)

  return jax.vmap(init)(copy_keys)


def _train_steps(states: train_lib.TrainState, start: Array, copy_rank: Array,
                 copy_k: Array, copy_rep: Array, data_key: Array,
                 x_train: Array, y_train: Array, ranks_train: Array,
                 fill: Array, learning_rate: Array, pad_id: Array,
                 keep: Array, groups: masking.FeatureGroups, *,
                 module: nn.Module, length: int, batch_size: int,
                 num_repeats: int, train_flag: bool,
                 copies_per_step: int | None) -> train_lib.TrainState:
  """Steps `start .. start + length - 1` of every copy."""
  tx = optax.adam(learning_rate)
  loss_fn = models.classifier_loss(module, soft_targets=False,
                                   train_flag=train_flag)
  n = x_train.shape[0]
  rep_keys = jax.vmap(lambda i: jax.random.fold_in(data_key, i))(
      jnp.arange(num_repeats))

  def copy_step(state, r, k, idx):
    kept = _kept(_rows_ranks(ranks_train[r], idx), k, keep)
    kept = jnp.broadcast_to(kept, (batch_size, kept.shape[-1]))
    batch = {'x': _masked(x_train[idx], kept, groups, fill, pad_id),
             'y': y_train[idx]}
    state, _ = train_lib.update(loss_fn, tx, state, batch)
    return state

  def body(states, step):
    # The minibatch rows of every repeat: [repeats, batch_size].
    rows = jax.vmap(lambda k: jax.random.randint(
        jax.random.fold_in(k, step), (batch_size,), 0, n))(rep_keys)
    args = (states, copy_rank, copy_k, rows[copy_rep])
    if copies_per_step is None:
      return jax.vmap(copy_step)(*args), None
    # Groups of copies one after the other, unrolled when traced (no loop
    # primitive: XLA:CPU runs convolutions inside loops far slower).
    total = copy_rank.shape[0]
    parts = []
    for lo in range(0, total, copies_per_step):
      part = jax.tree.map(lambda a, lo=lo: a[lo:lo + copies_per_step], args)
      parts.append(jax.vmap(copy_step)(*part))
    return jax.tree.map(lambda *a: jnp.concatenate(a), *parts), None

  if length == 1:
    return body(states, start)[0]
  states, _ = jax.lax.scan(body, states, start + jnp.arange(length))
  return states


def _evaluate(params: Any, copy_rank: Array, copy_k: Array, x_test: Array,
              y_test: Array, ranks_test: Array, fill: Array, pad_id: Array,
              keep: Array, groups: masking.FeatureGroups, *,
              module: nn.Module, eval_chunk: int) -> Array:
  """Test accuracy of every copy `[copies]` (vmapped, chunks of rows)."""
  per_example = ranks_test.ndim == 3

  def correct(rows):
    def one(p, r, k):
      ranks = rows['ranks'][:, r] if per_example else ranks_test[r]
      kept = _kept(ranks, k, keep)
      kept = jnp.broadcast_to(kept, (rows['x'].shape[0], kept.shape[-1]))
      logits = module.apply({'params': p},
                            _masked(rows['x'], kept, groups, fill, pad_id))
      return jnp.argmax(logits, -1) == rows['y']
    return jax.vmap(one, in_axes=(0, 0, 0), out_axes=1)(
        params, copy_rank, copy_k)

  rows = {'x': x_test, 'y': y_test}
  if per_example:  # [n_test, R, F]: rows first for map_batches
    rows['ranks'] = jnp.swapaxes(ranks_test, 0, 1)
  hits = blackbox.map_batches(correct, rows, eval_chunk)  # [n_test, copies]
  return jnp.mean(hits.astype(jnp.float32), axis=0)


_init_states_jit = jax.jit(_init_states, static_argnames=('module',))
_train_steps_jit = jax.jit(
    _train_steps, donate_argnums=(0,),
    static_argnames=('module', 'length', 'batch_size', 'num_repeats',
                     'train_flag', 'copies_per_step'))
_evaluate_jit = jax.jit(_evaluate, static_argnames=('module', 'eval_chunk'))


def _has_convolution(module: nn.Module, x: Array) -> bool:
  """Whether `module` applies a convolution (read from its jaxpr)."""
  def walk(jaxpr) -> bool:
    for eqn in jaxpr.eqns:
      if eqn.primitive.name == 'conv_general_dilated':
        return True
      for sub in jax_core.jaxprs_in_params(eqn.params):
        if walk(sub):
          return True
    return False
  closed = jax.make_jaxpr(lambda: module.init_with_output(
      jax.random.key(0), x[:1])[0])()
  return walk(closed.jaxpr)


class EvalxResult(NamedTuple):
  """`evalx_curve`'s output.

  Attributes:
    fractions: `[m]`.
    accuracy: `[R, m]` EVAL-X accuracy of every ranking at every fraction.
    auc: `[R]` trapezoid area / (fractions[-1] - fractions[0]).
  """
  fractions: np.ndarray
  accuracy: np.ndarray
  auc: np.ndarray


def evalx_curve(evaluator: Any, x: Any, y: Any, importance: Any, *,
                groups: masking.FeatureGroups | None = None,
                fractions: Sequence[float] = FRACTIONS,
                key: Array | int | None = None) -> EvalxResult:
  """The keep curve scored by an EVAL-X evaluator instead of retraining.

  For every ranking and fraction t, the top-t features of each test row are
  kept (`feature_masks(..., mode='keep')`) and the evaluator q, trained once
  on random masks (`realx.train_evalx`, Jethani et al. 2021, Eq. 5), is
  scored on the masked rows (`metrics.evalx_accuracy`). Unlike KAR, q never
  trains on a ranking's masks, so a ranking cannot pass the label to it
  through the pattern of its masks (per-row maps chosen by the predicted
  class do exactly that under KAR/ROAR).

  Args:
    evaluator: a `realx.Evaluator`.
    x: `[n, *input_shape]` test rows.
    y: int labels `[n]`.
    importance: `[R, F]` or `[R, n, F]` maps (as `retrain_curve`).
    groups: the features' groups (None: every input element).
    fractions: `[m]` increasing in (0, 1).
    key: breaks ties in the rankings (None: by index).
  Returns:
    an `EvalxResult` (`accuracy [R, m]`, `auc [R]`).
  """
  f = _check_fractions(fractions)
  masks = np.asarray(feature_masks(importance, f, mode='keep', key=key))
  n = int(np.shape(x)[0])
  acc = np.zeros(masks.shape[:2])
  for r in range(masks.shape[0]):
    for j in range(masks.shape[1]):
      sel = np.broadcast_to(masks[r, j], (n, masks.shape[-1]))
      acc[r, j] = float(metrics.evalx_accuracy(
          evaluator, x, sel.astype(np.float32), y,
          groups=groups)['evalx_accuracy'])
  auc = (np.trapezoid(acc, f, axis=-1) / (f[-1] - f[0]) if len(f) > 1
         else acc[:, 0])
  return EvalxResult(fractions=f, accuracy=acc, auc=np.asarray(auc))


def _check_data(name: str, data: Any) -> tuple[Array, Array]:
  if not isinstance(data, (tuple, list)) or len(data) != 2:
    raise ValueError(f'{name} must be a pair (x, y), got '
                     f'{type(data).__name__}.')
  x = _checks.as_array(f'{name}[0] (x)', data[0])
  _checks.check_array(f'{name}[0] (x)', x, min_ndim=2, finite=True)
  y = _checks.as_array(f'{name}[1] (y)', data[1])
  if y.ndim != 1 or not jnp.issubdtype(y.dtype, jnp.integer):
    raise ValueError(f'{name}[1] (y) must be int class labels [n], got '
                     f'{y.dtype} {y.shape}.')
  if y.shape[0] != x.shape[0]:
    raise ValueError(f'{name}: x has {x.shape[0]} examples but y has '
                     f'{y.shape[0]} labels.')
  if x.shape[0] == 0:
    raise ValueError(f'{name} must hold at least one example.')
  return x, y


def _num_outputs(module: nn.Module, x: Array) -> int | None:
  """The number of logits of `module` on `x` (shape inference, no FLOPs)."""
  try:
    out = jax.eval_shape(lambda: module.init_with_output(
        jax.random.key(0), x[:1])[0])
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f'module cannot be applied to train[0] (x) of shape '
                     f'{x.shape}: {e}') from e
  if out.ndim != 2:
    raise ValueError(f'module must output logits [batch, num_classes], got '
                     f'shape {out.shape}.')
  return int(out.shape[-1])


def _fill_value(fill: Any, x_train: Array) -> Array:
  if isinstance(fill, str):
    _checks.check_choice('fill', fill, FILLS)
    if fill == 'zero':
      return jnp.zeros((), x_train.dtype)
    mean = jnp.mean(x_train.astype(jnp.float32), axis=0)
    return mean.astype(x_train.dtype)
  if isinstance(fill, bool) or not isinstance(fill, (int, float, np.number)):
    raise ValueError(f"fill must be 'mean', 'zero' or a number, got {fill!r}.")
  if not math.isfinite(float(fill)):
    raise ValueError(f'fill must be finite, got {fill!r}.')
  return jnp.asarray(fill, x_train.dtype)


def retrain_curve(
    key: Array | int,
    module: nn.Module,
    train: tuple[Any, Any],
    test: tuple[Any, Any],
    importance_train: Array | np.ndarray,
    importance_test: Array | np.ndarray,
    *,
    groups: masking.FeatureGroups | None = None,
    fractions: Sequence[float] = FRACTIONS,
    mode: str = 'keep',
    fill: str | float = 'mean',
    num_steps: int = 500,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    repeats: int = 1,
    train_flag: bool = False,
    pad_id: int = 0,
    loop: str = 'auto',
) -> RetrainResult:
  """KAR (mode 'keep') or ROAR (mode 'remove') accuracy curves of rankings.

  Hooker et al., NeurIPS 2019 (arXiv:1806.10758). For every ranking `r`,
  fraction `t` and repeat, a fresh copy of `module` is trained with Adam on
  the training set whose examples keep only their top-`t` features (keep)
  or lose them (remove), the other features set to `fill`, and is evaluated
  on the test set masked by the test importance maps the same way. All
  `R * m * repeats` copies train together in one jitted program (a
  `lax.scan` over steps of a step `vmap`-ed over the copies), so one call
  compiles the training once.

  Details: copy `c = (r * m + j) * repeats + i` (ranking r, fraction j,
  repeat i) is initialised from `fold_in(key, c)` (split into the
  initialisation key and the dropout key of `train.update`); its minibatch
  at each step is `batch_size` rows drawn uniformly with replacement from
  the stream of repeat `i` (shared by the copies of that repeat).
  Features are ranked by decreasing importance (signed: pass magnitudes to
  rank by |attribution|), ties broken at random from `key`. See the module
  docstring for the fill value's difference from the paper.

  Args:
    key: PRNG key or int seed; the same key gives the same result.
    module: a linen classifier `x [b, *input_shape] -> logits [b, c]`, e.g.
      `models.make_model('mlp', num_classes=2)` (hashable: tuples, not
      lists, for its fields).
    train: `(x [n, *input_shape], y int [n])`, the training set.
    test: `(x [n_test, *input_shape], y int [n_test])`, the test set.
    importance_train: `[R, F]` (one global map per ranking, shared by every
      example) or `[R, n, F]` (per example), where `F = groups.num_groups`,
      or the number of input elements when `groups` is None.
    importance_test: `[R, F]` or `[R, n_test, F]`, the same R rankings.
    groups: feature groups (`masking.patch_groups`, `token_groups`, ...);
      None: every input element is a feature.
    fractions: `[m]` fractions of features kept / removed, increasing, in
      (0, 1).
    mode: 'keep' (KAR) or 'remove' (ROAR).
    fill: the value of the features that are not kept: 'mean' (the mean of
      every input element over the training inputs, `[*input_shape]`),
      'zero', or a number. Ignored for token inputs (`groups.kind ==
      'tokens'`), whose removed tokens become `pad_id`.
    num_steps: optimizer steps per retraining.
    batch_size: minibatch rows per step.
    learning_rate: Adam's learning rate.
    repeats: retrainings per (ranking, fraction), each from its own
      initialisation and minibatches.
    train_flag: call the module with `train=True, rngs={'dropout': k}`
      during training (modules with dropout; `models.takes_train_flag`).
    pad_id: the token id of removed tokens.
    loop: how the copies are stepped. 'scan': all `num_steps` steps in one
      jitted `lax.scan`, every step `vmap`-ed over the copies (fastest for
      dense models). 'steps': one jitted call per step (compiled once),
      the copies one after another inside it, unrolled: XLA:CPU runs a
      convolution ~30x slower inside a loop body and ~4x slower vmapped
      over per-copy kernels. 'auto': 'steps' for a module with a
      convolution on a CPU backend, else 'scan'.

  Returns:
    a `RetrainResult`: `fractions [m]`, `accuracy [R, m]`, `accuracy_runs
    [R, repeats, m]`, `auc [R]`, `num_kept [m]`.

  Raises:
    ValueError: naming the argument for importance maps of the wrong rank,
      F or n, or with NaN/inf; fractions outside (0, 1) or not increasing;
      unknown mode or fill; x and y of different lengths; labels outside the
      module's outputs; repeats, num_steps or batch_size < 1.
  """
  key = _checks.as_key('key', key)
  _checks.check_choice('mode', mode, MODES)
  num_steps = _checks.check_int('num_steps', num_steps, 1)
  batch_size = _checks.check_int('batch_size', batch_size, 1)
  repeats = _checks.check_int('repeats', repeats, 1)
  _checks.check_positive('learning_rate', learning_rate)
  if isinstance(pad_id, bool) or not isinstance(pad_id, (int, np.integer)):
    raise ValueError(f'pad_id must be an int, got {pad_id!r}.')
  if not isinstance(module, nn.Module):
    raise ValueError(f'module must be a flax.linen.Module, got '
                     f'{type(module).__name__}.')
  try:
    hash(module)
  except TypeError:
    raise ValueError('module must be hashable (give its fields as tuples, '
                     'not lists).') from None
  f = _check_fractions(fractions)
  x_tr, y_tr = _check_data('train', train)
  x_te, y_te = _check_data('test', test)
  if x_te.shape[1:] != x_tr.shape[1:] or x_te.dtype != x_tr.dtype:
    raise ValueError(f'test[0] (x) must have examples like train[0]: '
                     f'{x_tr.dtype} {x_tr.shape[1:]}, got {x_te.dtype} '
                     f'{x_te.shape[1:]}.')
  input_shape = tuple(x_tr.shape[1:])
  masking.check_groups(groups, input_shape)
  masking.require_shared_groups(groups, 'retrain_curve')
  if groups is None:
    groups = masking.feature_groups(input_shape)
  num_features = groups.num_groups
  imp_tr = _check_importance('importance_train', importance_train,
                             num_features=num_features, num_rows=x_tr.shape[0])
  imp_te = _check_importance('importance_test', importance_test,
                             num_features=num_features, num_rows=x_te.shape[0])
  if imp_tr.shape[0] != imp_te.shape[0]:
    raise ValueError(f'importance_train holds {imp_tr.shape[0]} rankings but '
                     f'importance_test holds {imp_te.shape[0]}.')
  num_classes = _num_outputs(module, x_tr)
  _checks.check_labels('train[1] (y)', y_tr, x_tr.shape[0], num_classes)
  _checks.check_labels('test[1] (y)', y_te, x_te.shape[0], num_classes)
  # One shape for every fill, so that they share the compiled program.
  fill_value = jnp.broadcast_to(_fill_value(fill, x_tr), input_shape)

  num_rankings, m = imp_tr.shape[0], len(f)
  counts = _counts(f, num_features)
  tie_key, data_key = jax.random.fold_in(key, 1 << 30), jax.random.fold_in(
      key, (1 << 30) + 1)
  ranks_tr = _rank_rows(imp_tr, jax.random.fold_in(tie_key, 0))
  ranks_te = _rank_rows(imp_te, jax.random.fold_in(tie_key, 1))

  grid = np.indices((num_rankings, m, repeats)).reshape(3, -1)
  num_copies = grid.shape[1]
  copy_keys = jax.vmap(lambda c: jax.random.fold_in(key, c))(
      jnp.arange(num_copies))
  elems = int(np.prod(input_shape)) * num_copies
  eval_chunk = max(1, min(x_te.shape[0], _EVAL_ELEMENTS // max(elems, 1)))
  _checks.check_choice('loop', loop, LOOPS)
  if loop == 'auto':
    loop = ('steps' if jax.default_backend() == 'cpu'
            and _has_convolution(module, x_tr) else 'scan')
  lr = jnp.asarray(learning_rate, jnp.float32)
  pad = jnp.asarray(pad_id, x_tr.dtype)
  keep = jnp.asarray(mode == 'keep')
  copy_rank = jnp.asarray(grid[0], jnp.int32)
  copy_k = jnp.asarray(counts[grid[1]], jnp.int32)
  copy_rep = jnp.asarray(grid[2], jnp.int32)
  states = _init_states_jit(copy_keys, x_tr[:1], lr, module=module)
  step_args = (copy_rank, copy_k, copy_rep, data_key, x_tr,
               y_tr.astype(jnp.int32), ranks_tr, fill_value, lr, pad, keep,
               groups)
  step_kw = dict(module=module, batch_size=batch_size, num_repeats=repeats,
                 train_flag=bool(train_flag))
  if loop == 'scan':
    states = _train_steps_jit(states, jnp.int32(0), *step_args,
                              length=num_steps, copies_per_step=None,
                              **step_kw)
  else:
    for step in range(num_steps):
      states = _train_steps_jit(states, jnp.int32(step), *step_args,
                                length=1, copies_per_step=1, **step_kw)
  acc = _evaluate_jit(states.params, copy_rank, copy_k, x_te,
                      y_te.astype(jnp.int32), ranks_te, fill_value, pad, keep,
                      groups, module=module, eval_chunk=eval_chunk)
  runs = np.asarray(acc, np.float64).reshape(num_rankings, m, repeats)
  runs = runs.transpose(0, 2, 1)  # [R, repeats, m]
  accuracy = runs.mean(axis=1)
  if m > 1:
    auc = np.trapezoid(accuracy, f, axis=-1) / (f[-1] - f[0])
  else:
    auc = accuracy[:, 0]
  return RetrainResult(fractions=f, accuracy=accuracy, accuracy_runs=runs,
                       auc=np.asarray(auc), num_kept=counts.astype(np.int64))
