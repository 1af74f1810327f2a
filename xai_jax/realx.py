"""REAL-X predictor and EVAL-X evaluator (Jethani et al. 2021).

Jethani, Sudarshan, Aphinyanaphongs and Ranganath, "Have We Learned to
Explain?: How Interpretability Methods Can Learn to Encode Predictions in
their Interpretations", AISTATS 2021 (`rajesh-lab/realx`).

A selector trained jointly with its approximator (L2X) can encode the label in
*which* features it selects. Both remedies of the paper fit a predictor
q(y | x_S) on randomly masked inputs, s_i ~ Bernoulli(p) i.i.d. per feature
group and per example, by the cross-entropy with the model's targets
(Eq. 5 of the paper, the EVAL-X objective):

  min_q  E_x E_{s ~ Bernoulli(p)^d} [ -sum_c y_c(x) log q_c(x * expand(s)) ].

* REAL-X trains the selector against this predictor, frozen (`l2x.fit` with
  `realx=True`, phase 1 being this loss).
* EVAL-X scores any selection with it: `train_evalx` fits an `Evaluator`, and
  `metrics.evalx_accuracy` / `metrics.evalx_auroc` score selections.

`random_mask_loss` is the one implementation of the objective; `linen_apply_fn`
adapts a Flax module to it.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from xai_jax import _checks
from xai_jax import blackbox as bb
from xai_jax import masking
from xai_jax import train as train_lib

Array = jax.Array
PyTree = Any

# `apply_fn(params, model_state, x, mask, dropout_key) -> (logits, new_state)`.
ApplyFn = Callable[[PyTree, PyTree, Array, Array, Array | None],
                   tuple[Array, PyTree]]
# `mask_keys(key) -> (mask_key, dropout_key or None)`.
MaskKeys = Callable[[Array], tuple[Array, Array | None]]


# =============================================================================
# The random-mask loss.
# =============================================================================


def split_mask_keys(key: Array) -> tuple[Array, Array]:
  """`(mask_key, dropout_key) = jax.random.split(key)`, as `train_evalx`."""
  mask_key, dropout_key = jax.random.split(key)
  return mask_key, dropout_key


def rbg_mask_keys(key: Array) -> tuple[Array, None]:
  """An 'rbg' mask key made from 4 random words of `key`, and no dropout key.

  `mask_key = jax.random.wrap_key_data(jax.random.bits(key, (1, 4),
  uint32)[0], impl='rbg')`: Bernoulli draws from an 'rbg' key use XLA's
  RngBitGenerator, which on CPU compiles and runs faster than threefry for
  large `[batch, d]` masks (the L2X/REAL-X training steps of `l2x.fit`).
  """
  words = jax.random.bits(key, (1, 4), jnp.uint32)
  return jax.random.wrap_key_data(words[0], impl='rbg'), None


def random_masks(key: Array, batch: int, num_groups: int, keep_prob: float
                 ) -> Array:
  """EVAL-X masks: float32 `[batch, num_groups]`, s_i ~ Bernoulli(keep_prob)."""
  s = jax.random.bernoulli(key, keep_prob, (batch, num_groups))
  return s.astype(jnp.float32)


def random_mask_loss(apply_fn: ApplyFn, num_groups: int, keep_prob: float,
                     expand: Callable[[Array], Array],
                     l2_fn: Callable[[PyTree], Array] | None = None, *,
                     mask_keys: MaskKeys = split_mask_keys
                     ) -> train_lib.LossFn:
  """The REAL-X predictor / EVAL-X evaluator loss (Jethani et al. 2021, Eq. 5).

  For a batch `{'x': [b, *input_shape], 'targets': ...}` and a step key:

    mask_key, dropout_key = mask_keys(key)
    s = bernoulli(mask_key, keep_prob, (b, num_groups))   # i.i.d. per row
    logits, new_state = apply_fn(params, model_state, x, expand(s), dropout_key)
    cross_entropy = mean_b CE(targets, softmax(logits))
    loss = cross_entropy + l2_fn(params)      # l2_fn None: no penalty

  with `s` cast to float32 before `expand`, `bernoulli` =
  `jax.random.bernoulli` and CE the soft-target cross-entropy
  `-sum_c y_c log q_c` (`optax.softmax_cross_entropy`) for float targets
  `[b, c]` (the black box's probabilities, L2X/REAL-X) or the categorical
  cross-entropy (`optax.softmax_cross_entropy_with_integer_labels`) for int
  labels `[b]`. The random draws are exactly those of the lines above, so a
  caller reproduces its masks by passing its key derivation as `mask_keys`:
  `split_mask_keys` (the default, `jax.random.split(key)`) or
  `rbg_mask_keys` (one 'rbg' key from `jax.random.bits(key, (1, 4),
  uint32)`, the derivation of `l2x.fit`'s REAL-X phase 1).

  Args:
    apply_fn: `(params, model_state, x, mask, dropout_key) -> (logits [b, c],
      new_model_state)`, the network on `x` masked by the input-shaped `mask`
      (`linen_apply_fn` builds it from a Flax module). `dropout_key` is None
      when `mask_keys` gives none.
    num_groups: d, the number of groups a mask is drawn over.
    keep_prob: p, the probability of keeping a group.
    expand: group mask `[b, d]` -> input mask `[b, *input_shape]` (e.g.
      `FeatureGroups.expand`).
    l2_fn: optional penalty of the parameters added to the loss (e.g.
      `lambda p: lam * nets.l2_penalty(module, p)`).
    mask_keys: `key -> (mask_key, dropout_key or None)`.
  Returns:
    a `train.LossFn`: `loss_fn(params, model_state, batch, key) -> (loss,
    (new_model_state, {'cross_entropy': [], 'approximator_agreement': []}))`,
    the agreement being the fraction of rows whose argmax matches the
    target's (argmax of soft targets).
  """
  num_groups = _checks.check_int('num_groups', num_groups)
  keep_prob = _checks.check_probability('keep_prob', keep_prob,
                                        open_right=False)

  def loss_fn(params, model_state, batch, key):
    x, targets = batch['x'], batch['targets']
    mask_key, dropout_key = mask_keys(key)
    s = random_masks(mask_key, x.shape[0], num_groups, keep_prob)
    logits, new_state = apply_fn(params, model_state, x, expand(s),
                                 dropout_key)
    if targets.ndim == 1:
      ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
      label = targets
    else:
      ce = optax.softmax_cross_entropy(logits, targets)
      label = jnp.argmax(targets, -1)
    ce = jnp.mean(ce)
    agree = jnp.mean(jnp.argmax(logits, -1) == label)
    loss = ce if l2_fn is None else ce + l2_fn(params)
    return loss, (new_state, {'cross_entropy': ce,
                              'approximator_agreement': agree})

  return loss_fn


def linen_apply_fn(module: nn.Module, *, baseline: Array | float | None = None,
                   **apply_kwargs: Any) -> ApplyFn:
  """A Flax linen module as the `apply_fn` of `random_mask_loss`.

  Args:
    module: with `baseline=None` a module called as `module(x, mask)` that
      masks its input itself (the L2X approximators of `nets`); otherwise a
      classifier of the masked input `module(masking.apply_mask(x, mask,
      baseline))`.
    baseline: the value of masked-out features (scalar or `[*input_shape]`;
      the pad id for token ids), or None (see `module`).
    **apply_kwargs: passed to `module.apply` (e.g. `train=True`).
  Returns:
    `apply_fn(params, model_state, x, mask, dropout_key) -> (logits,
    new_model_state)`: the variables are `{'params': params,
    **model_state}`; every `model_state` collection is mutable (BatchNorm
    statistics) and comes back updated; `dropout_key`, when given, is the
    'dropout' rng.
  """
  def apply_fn(params, model_state, x, mask, dropout_key):
    if baseline is None:
      inputs = (x, mask)
    else:
      inputs = (masking.apply_mask(x, mask, baseline),)
    variables = {'params': params, **model_state}
    rngs = None if dropout_key is None else {'dropout': dropout_key}
    if model_state:
      return module.apply(variables, *inputs, mutable=list(model_state),
                          rngs=rngs, **apply_kwargs)
    return module.apply(variables, *inputs, rngs=rngs,
                        **apply_kwargs), model_state

  return apply_fn


# =============================================================================
# EVAL-X evaluator.
# =============================================================================


class EvalxMLP(nn.Module):
  """The default EVAL-X evaluator: flatten, (Dense + ReLU) x len(hidden),
  logits.

  Attributes:
    hidden: the hidden widths.
    num_classes: c, the number of logits.
  """
  hidden: tuple[int, ...]
  num_classes: int

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """`x [batch, *input_shape]` -> logits `[batch, num_classes]`."""
    x = x.reshape((x.shape[0], -1)).astype(jnp.float32)
    for h in self.hidden:
      x = nn.relu(nn.Dense(h)(x))
    return nn.Dense(self.num_classes)(x)


@flax.struct.dataclass
class Evaluator:
  """An EVAL-X evaluator q(y | x_S) trained on randomly masked inputs.

  Attributes:
    box: the trained classifier as a `BlackBox` (logits `[batch, c]`); it can
      be used wherever a black box is expected (e.g. `posthoc_accuracy`).
    groups: the feature groups the training masks were drawn over.
    baseline: the masking value `[*input_shape]` (pad id for tokens).
    keep_prob: the Bernoulli probability of keeping a group in training.
  """
  box: bb.BlackBox
  groups: masking.FeatureGroups
  baseline: Array
  keep_prob: float = flax.struct.field(pytree_node=False, default=0.5)

  @property
  def num_classes(self) -> int:
    """The number of classes c of the evaluator."""
    return self.box.num_outputs

  def masked_input(self, x: Array, keep: Array) -> Array:
    """`x [batch, *input_shape]` with features where `keep` is 0 replaced by
    the evaluator's baseline (`masking.apply_mask`)."""
    return masking.apply_mask(x, keep, jnp.broadcast_to(self.baseline,
                                                        x.shape))

  def logits(self, x: Array, selection: Array | None = None, *,
             groups: masking.FeatureGroups | None = None) -> Array:
    """q's logits `[batch, c]` on `x` masked by a binary selection
    (`[batch, *input_shape]`, or `[batch, num_groups]` over `groups`, default
    the evaluator's groups); `selection=None` scores the full input."""
    x = _checks.check_model_input(self.box, x)
    if selection is None:
      return self.box(x)
    keep = masking.selection_mask(selection, x,
                                  self.groups if groups is None else groups)
    return self.box(self.masked_input(x, keep))


def train_evalx(key: Array | int, x: Array, y: Array, *,
                model: nn.Module | None = None,
                groups: masking.FeatureGroups | None = None,
                num_steps: int = 1000, batch_size: int = 256,
                learning_rate: float = 1e-3, weight_decay: float = 0.0,
                keep_prob: float = 0.5, baseline: float | int | Array = 0.0,
                num_classes: int | None = None,
                hidden_sizes: Sequence[int] = (200, 200),
                train_kwargs: dict[str, Any] | None = None,
                eval_kwargs: dict[str, Any] | None = None,
                tx: optax.GradientTransformation | None = None,
                workdir: str | None = None, log_every: int | None = None
                ) -> Evaluator:
  """Trains an EVAL-X evaluator (Jethani et al. 2021, §4, Eq. 5).

  q(y | x ⊙ s) is fit on the data with s_g ~ Bernoulli(keep_prob) i.i.d. per
  feature group and per example (a fresh mask every step), minimising
  `random_mask_loss` (masks from `split_mask_keys`, masked features set to
  `baseline`): int labels `[n]` -> categorical cross-entropy; soft targets
  `[n, c]` (e.g. L2X's true P(Y|X)) -> the cross-entropy -sum_c y_c log q_c.
  Training runs through `xai_jax.train.fit` (Adam; in-memory data,
  reshuffled every epoch), so the same key gives the same evaluator.

  Args:
    key: PRNG key or int seed (initialisation, masks, shuffling).
    x: training inputs `[n, *input_shape]` (float, or int token ids).
    y: int labels `[n]` or soft targets float `[n, c]`.
    model: a Flax linen module `x[batch, *input_shape] -> logits[batch, c]`;
      default `EvalxMLP(hidden_sizes)` (ReLU). Modules with BatchNorm or
      Dropout get `train_kwargs` in training (e.g. `{'train': True}`; mutable
      collections and a 'dropout' rng are handled) and `eval_kwargs` after.
    groups: the groups masks are drawn over (default: every input element).
    num_steps: training steps (T).
    batch_size: examples per step (capped at n).
    learning_rate: Adam's learning rate (eta).
    weight_decay: L2 penalty (lambda) on kernels.
    keep_prob: Bernoulli probability p of keeping a group (0.5 in EVAL-X).
    baseline: the value of masked features, scalar or `[*input_shape]` (0; the
      pad id for tokens).
    num_classes: c (default: from `y`).
    hidden_sizes: widths of the default MLP.
    train_kwargs: keyword arguments of `model.apply` in training/init.
    eval_kwargs: keyword arguments of `model.apply` in evaluation.
    tx: an optax optimizer instead of Adam(learning_rate, weight_decay).
    workdir: optional folder for checkpoints/metrics (resumes from it).
    log_every: log interval of the training loop (default num_steps // 10).

  Returns:
    The `Evaluator`.
  """
  key = _checks.as_key('key', key, method='train_evalx')
  x = _checks.as_array('x', x)
  _checks.check_array('x', x, min_ndim=2, finite=True)
  n = x.shape[0]
  input_shape = tuple(x.shape[1:])
  input_dtype = 'int' if jnp.issubdtype(x.dtype, jnp.integer) else 'float'
  if input_dtype == 'float' and not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f'x must be float features or int token ids, got '
                     f'{x.dtype}.')
  y, c, _ = _checks.check_labels('y', y, n, num_classes)
  if groups is None:
    groups = masking.feature_groups(input_shape)
  masking.check_groups(groups, input_shape)
  masking.require_shared_groups(groups, 'realx')
  num_steps = _checks.check_int('num_steps', num_steps, minimum=0)
  batch_size = min(_checks.check_int('batch_size', batch_size), n)
  keep_prob = _checks.check_probability('keep_prob', keep_prob)
  base = _checks.as_array('baseline', baseline)
  if base.ndim and base.shape != input_shape:
    raise ValueError(f'baseline must be a scalar or [*input_shape]='
                     f'{input_shape}, got {base.shape}.')
  base = jnp.broadcast_to(base.astype(x.dtype), input_shape)
  if model is None:
    model = EvalxMLP(tuple(int(h) for h in hidden_sizes), c)
  elif not isinstance(model, nn.Module):
    raise ValueError(f'model must be a flax.linen.Module, got '
                     f'{type(model).__name__}.')
  train_kwargs = dict(train_kwargs or {})
  eval_kwargs = dict(eval_kwargs or {})

  k_init, k_drop, k_train = jax.random.split(key, 3)
  variables = flax.core.unfreeze(model.init(
      {'params': k_init, 'dropout': k_drop}, x[:2], **train_kwargs))
  params = variables.pop('params')
  model_state = variables
  out = jax.eval_shape(lambda v: model.apply(v, x[:2], **eval_kwargs),
                       {'params': params, **model_state})
  if out.shape != (2, c):
    raise ValueError(f'model must return logits [batch, {c}], got '
                     f'{out.shape} for a batch of 2.')

  loss_fn = random_mask_loss(
      linen_apply_fn(model, baseline=base, **train_kwargs),
      groups.num_groups, keep_prob, groups.expand)
  if tx is None:
    tx = train_lib.make_optimizer(None, optimizer='adam',
                                  learning_rate=learning_rate,
                                  weight_decay=weight_decay)
  if num_steps > 0:
    state, _ = train_lib.fit(
        loss_fn, params, {'x': x, 'targets': y}, tx=tx,
        batch_size=batch_size, num_steps=num_steps, key=k_train,
        model_state=model_state, workdir=workdir,
        log_every=log_every or max(1, num_steps // 10))
    params, model_state = state.params, state.model_state
  variables = jax.device_get({'params': params, **model_state})
  box = bb.from_linen(model, variables, input_shape=input_shape,
                      output='logits', input_dtype=input_dtype, name='evalx',
                      **eval_kwargs)
  return Evaluator(box=box, groups=groups, baseline=base, keep_prob=keep_prob)


__all__ = [
    'ApplyFn', 'EvalxMLP', 'Evaluator', 'MaskKeys', 'linen_apply_fn',
    'random_mask_loss', 'random_masks', 'rbg_mask_keys',
    'split_mask_keys', 'train_evalx',
]
