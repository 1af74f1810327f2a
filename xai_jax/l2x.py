"""L2X: Learning to Explain (Chen, Song, Wainwright & Jordan, ICML 2018).

An explainer network (the *selector*) maps an input x to logits over its `d`
feature groups; a relaxed top-k sampler turns them into a mask V(theta, zeta)
of about k groups, and a variational *approximator* g_alpha predicts the
black box's output from the masked input only. Both are trained jointly to
maximise the variational lower bound of the mutual information I(X_S; Y),
L2X Eq. (6)/(8):

    max_{theta, alpha}  E_{x} E_{zeta} [ sum_y P_m(y | x) log g_alpha(V(theta, zeta) * x, y) ],

i.e. the cross-entropy between the black box's predictive distribution
P_m(. | x) (soft targets; never labels, never sampled y) and the
approximator's prediction on the masked input. Unselected features are set to
0 (`masking.apply_mask(x, groups.expand(V), 0)`; for tokens the approximator
multiplies its own embeddings by the mask). At explanation time the mask is
the deterministic top-k of the selector's logits (`relax.hard_topk`: exactly
k ones per row).

Usage (the explainer protocol of `xai_jax.protocol`)::

    explainer = l2x.fit(jax.random.key(0), box_or_probs, x_train, k=2)
    out = l2x.explain(explainer, x_test)
    out.mask, out.scores                            # [n, d] k-hot, logits

Reference settings (official code, synthetic data): selector Dense(100) x 2 ->
d logits, approximator x*V -> [Dense(200) -> act -> BN] x 2 -> Dense(2), relu
(XOR, orange skin) or selu (additive, switch), L2 1e-3, Adam 1e-3, tau 0.1,
1 epoch of 10^6 rows, batch 1000 (`default_config('tabular')`).

REAL-X (Jethani, Sudarshan, Aphinyanaphongs & Ranganath, "Have We Learned to
Explain?", AISTATS 2021): joint training lets the selector *encode* the
prediction in which features it picks, decoded by the co-trained
approximator. With `realx=True` the approximator is first trained alone on
inputs masked with i.i.d. Bernoulli(keep_prob) group masks (phase 1; REAL-X /
EVAL-X's predictor), then frozen while only the selector is trained through
the relaxed top-k (phase 2). Difference to REAL-X: the selector here keeps
L2X's k-constrained relaxed top-k (any sampler of `xai_jax.relax`), not
REAL-X's per-feature Bernoulli selector with REBAR gradients and a sparsity
penalty lambda; the explanation is the hard top-k.

The black box as the variational family (`approximator='blackbox'`): the
bound of Eq. (6) holds for any q, and q = the explained model itself on the
masked input, `q(y | x_S) = f(x * V)_y` (`nets.BlackBoxApproximator`,
frozen), leaves only the selector to train. The objective is then the
model's own fidelity on x_S -- what post-hoc accuracy scores -- and the
selection cannot carry the class to a co-trained decoder, since nothing is
co-trained. It needs a differentiable `BlackBox` on float inputs.

REAL-X's phase 1 is the one random-mask loss of `xai_jax.realx`
(`realx.random_mask_loss`, shared with the EVAL-X evaluator).

All training goes through the shared loop `xai_jax.train.fit` (one jitted
step; per-step key `fold_in(key, step)`; one Gumbel draw per example per
step; BatchNorm statistics in `model_state`), which takes `x` and the
targets as an in-memory dataset: epoch e's batches are
`train.epoch_batches(key, e, n, batch_size)`, a host permutation per epoch
(remainder dropped, rows sorted within a batch).
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import Any, Callable, Mapping

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from xai_jax import _checks
from xai_jax import blackbox as bb
from xai_jax import masking
from xai_jax import nets
from xai_jax import protocol
from xai_jax import realx as realx_lib
from xai_jax import relax
from xai_jax import train

Array = jax.Array
PyTree = Any

MODALITIES = nets.MODALITIES
# Rows per jitted chunk when explaining / computing targets, per modality.
_CHUNK = {'tabular': 65536, 'image': 1024, 'text': 4096}
_TARGET_ATOL = 1e-3  # rows of the targets must sum to 1 within this


# ----------------------------------------------------------------------------
# Config.


def default_config(modality: str = 'tabular') -> ml_collections.ConfigDict:
  """L2X's hyper-parameters for a modality (an ml_collections ConfigDict).

  'tabular' follows the official synthetic code exactly; 'text' the IMDB
  word-level code (tau 0.5, RMSprop, batch 40, 5 epochs); 'image' (the
  MNIST code was never released) uses our choice: tau 0.5, Adam 1e-3,
  batch 100, 5 epochs. Every field can be overridden by name in `fit`
  (`fit(key, model, x, config, k=2, tau=0.5)`); None = not set.

  Fields:
    k: the number of groups to select, `1 <= k < d` (required; k = d
      would select everything: a ValueError naming k and d).
    modality: 'tabular', 'image' or 'text' (chooses these defaults, the
      default groups and the default nets).
    patch: patch size p of the default image groups (None:
      `default_patch(image_shape)`: L2X's 4x4 patches when they divide the
      image into a grid of at least 4x4 patches, e.g. 28x28 -> 7x7 grid;
      else the largest p in 3, 2, 1 that does, e.g. 8x8 -> p = 2).
    vocab_size: V for text (None: max(x) + 1).
    tau: Concrete temperature tau of the relaxed top-k (L2X Eq. 5).
    sampler: relaxed top-k of `xai_jax.relax` ('concrete' = L2X).
    sampler_kwargs: extra options of the sampler (e.g. num_samples; M =
      `PERTURBED_NUM_SAMPLES` for 'perturbed' when not set).
    optimizer, learning_rate: optax optimizer (Adam, eta = 1e-3).
    batch_size: rows per step.
    epochs: passes over the data (num_steps = epochs * (n // batch_size)).
    num_steps: total steps; overrides epochs when set.
    l2: lambda of the L2 penalty lambda * sum ||W||^2 on the layers the
      reference regularises (`nets.l2_penalty`).
    activation: hidden activation of the tabular/image nets ('relu' for XOR
      and orange skin, 'selu' for additive and switch).
    realx: REAL-X two-phase training instead of joint training.
    realx_num_steps: phase-1 steps (None: num_steps).
    realx_keep_prob: p of the Bernoulli(p) group masks of phase 1 (0.5).
    approximator: 'learned' (L2X: a network trained jointly with the
      selector) or 'blackbox' (q = the explained model on the masked input,
      frozen; only the selector trains: `nets.BlackBoxApproximator`).
    chunk_size: rows per jitted chunk when computing the black box's
      targets and explaining (None: 65536 tabular, 1024 image, 4096 text).
    log_every: the training loop's log period in steps.
    checkpoint_every: steps between checkpoints in `fit`'s `workdir` (None:
      `default_checkpoint_every(num_steps, steps_per_call)`, about 4 per
      run and at most every 1000 steps, so short runs are resumable too).
    steps_per_call: optimizer steps per jitted call of the training loop
      (`train.fit`; a `lax.scan`, same result as 1 up to float rounding):
      10 for tabular (~10% faster on CPU for the small MLPs), 1 for images
      and text (XLA:CPU runs convolutions inside a loop ~4x slower).
    seed: the PRNG seed used when `fit` gets key=None.
  """
  _checks.check_choice('modality', modality, MODALITIES)
  c = ml_collections.ConfigDict()
  c.k = None               # k: number of selected groups (required)
  c.modality = modality
  c.patch = None           # image groups: p x p pixels (None: default_patch)
  c.vocab_size = None      # V, text vocabulary size (None: max(x) + 1)
  c.tau = 0.1              # tau: Concrete temperature (L2X: 0.1 synthetic)
  c.sampler = 'concrete'   # V(theta, zeta): relaxed top-k, L2X Eq. (5)
  c.sampler_kwargs = ml_collections.ConfigDict()
  c.optimizer = 'adam'
  c.learning_rate = 1e-3   # eta
  c.batch_size = 1000
  c.epochs = 1
  c.num_steps = None       # total steps (None: epochs * (n // batch_size))
  c.l2 = 1e-3              # lambda of lambda * sum ||W||^2 (Keras l2(1e-3))
  c.activation = 'relu'
  c.realx = False
  c.realx_num_steps = None  # REAL-X phase-1 steps (None: num_steps)
  c.realx_keep_prob = 0.5  # p of s_i ~ Bernoulli(p) (REAL-X / EVAL-X)
  c.approximator = 'learned'  # q: 'learned' or 'blackbox' (the frozen box)
  c.chunk_size = None      # rows per jitted chunk (None: per modality)
  c.log_every = 100
  c.checkpoint_every = None  # steps (None: default_checkpoint_every)
  c.steps_per_call = 10 if modality == 'tabular' else 1
  c.seed = 0
  if modality == 'text':
    c.tau = 0.5            # IMDB word: tau 0.5, k = 10
    c.optimizer = 'rmsprop'
    c.batch_size = 40
    c.epochs = 5
    c.l2 = 0.0
  elif modality == 'image':
    c.tau = 0.5
    c.batch_size = 100
    c.epochs = 5
    c.l2 = 0.0
  return c


# ----------------------------------------------------------------------------
# The fitted model.


@flax.struct.dataclass
class L2XModel:
  """A trained L2X explainer (a pytree; modules and sizes are static).

  Attributes:
    params: `{'selector': ..., 'approximator': ...}` linen params.
    model_state: the approximator's non-trainable collections
      (`{'batch_stats': ...}` for BatchNorm, else `{}`).
    groups: the feature groups the k-subsets are drawn over (`d =
      groups.num_groups`).
    selector: the selector module `x -> logits[batch, d]` (static).
    approximator: the approximator module `(x, mask) -> logits[batch, c]`
      (static).
    k: the number of selected groups.
    modality: 'tabular', 'image' or 'text'.
    num_classes: c, the black box's number of classes.
    input_shape: the shape of one example.
    sampler: the relaxed top-k used in training.
    tau: its temperature.
    realx: True if trained with REAL-X's fixed predictor.
    chunk_size: rows per jitted chunk of `explain` and the other functions
      of a fitted model (None: 65536 tabular, 1024 image, 4096 text).
  """

  params: PyTree
  model_state: PyTree
  groups: masking.FeatureGroups
  selector: nn.Module = flax.struct.field(pytree_node=False)
  approximator: nn.Module = flax.struct.field(pytree_node=False)
  k: int = flax.struct.field(pytree_node=False)
  modality: str = flax.struct.field(pytree_node=False)
  num_classes: int = flax.struct.field(pytree_node=False)
  input_shape: tuple[int, ...] = flax.struct.field(pytree_node=False)
  sampler: str = flax.struct.field(pytree_node=False, default='concrete')
  tau: float = flax.struct.field(pytree_node=False, default=0.1)
  realx: bool = flax.struct.field(pytree_node=False, default=False)
  chunk_size: int | None = flax.struct.field(pytree_node=False, default=None)

  @property
  def num_groups(self) -> int:
    """d, the number of feature groups."""
    return self.groups.num_groups


# ----------------------------------------------------------------------------
# Helpers.


def _fast_keys(key: Array, num: int, impl: str = 'rbg') -> list[Array]:
  """`num` independent 'rbg' keys derived from one (threefry) key.

  Noise drawn from an 'rbg' key uses XLA's RngBitGenerator: on CPU it
  compiles ~1.3 s faster and runs ~2x faster than threefry for the
  per-step Gumbel/Bernoulli draws `[batch, k, d]` (the threefry hash is only
  evaluated on the 4*num derived words). Deterministic on a given backend
  and device count.
  """
  words = jax.random.bits(key, (num, 4), jnp.uint32)
  return [jax.random.wrap_key_data(words[i], impl=impl) for i in range(num)]


@functools.partial(jax.jit, static_argnames=('selector', 'approximator'),
                   compiler_options=nets.INIT_COMPILER_OPTIONS)
def _init_params_jit(selector: nn.Module, approximator: nn.Module, key: Array,
                     x0: Array) -> tuple[PyTree, PyTree, PyTree, Array, Array]:
  init_key, train_key = jax.random.split(key)
  sel_key, app_key = jax.random.split(init_key)
  sel_params = nets.init_selector(selector, sel_key, x0)
  logits = selector.apply({'params': sel_params}, x0)
  mask0 = jnp.ones(x0.shape, jnp.float32)
  app_params, model_state = nets.init_approximator(approximator, app_key, x0,
                                                   mask0)
  return sel_params, app_params, model_state, logits, train_key


def init_params(selector: nn.Module, approximator: nn.Module, key: Any,
                x0: Any) -> tuple[PyTree, PyTree, PyTree, Array, Array]:
  """Initial selector params, approximator params and state, in one jit.

  What `fit` starts from: `key` is split into an init key and the training
  key. Initial weights are drawn from 'unsafe_rbg' keys
  (`nets.init_selector`): threefry's codegen for every kernel shape would
  cost seconds of XLA compile on CPU; the jit uses
  `nets.INIT_COMPILER_OPTIONS`.

  Args:
    selector: the selector module `x -> logits[b, d]`.
    approximator: the approximator module `(x, mask) -> logits[b, c]`.
    key: PRNG key or int seed.
    x0: example inputs `[b, *input_shape]` (a few rows; shapes matter).

  Returns:
    `(selector_params, approximator_params, model_state, logits [b, d] of
    x0, train_key)`.
  """
  key = _checks.as_key('key', key)
  return _init_params_jit(selector, approximator, key, jnp.asarray(x0))


def _is_identity(groups: masking.FeatureGroups) -> bool:
  """True if group i is exactly input element i (expand = reshape)."""
  a = np.asarray(groups.assignment).reshape(-1)
  return a.size == groups.num_groups and bool(
      np.array_equal(a, np.arange(a.size)))


def _expander(groups: masking.FeatureGroups, identity: bool
              ) -> Callable[[Array], Array]:
  """group mask [b, d] -> input mask [b, *input_shape]."""
  shape = groups.input_shape
  if identity:
    return lambda v: v.reshape((v.shape[0], *shape))
  return groups.expand


def _check_k(k: Any, groups: masking.FeatureGroups) -> int:
  """`_checks.check_k` over the groups, and k < d: k = d selects every group
  (every mask all ones), which explains nothing."""
  d = groups.num_groups
  if isinstance(k, (int, np.integer)) and not isinstance(k, bool) and k > d:
    raise ValueError(
        f'k={k} is larger than the number of groups d={d} ({groups.kind}); '
        f'choose k < {d}.')
  k = _checks.check_k('k', k, d)
  if k == d:
    hint = (' or smaller patches (patch=...)' if groups.kind == 'patches'
            else '')
    raise ValueError(
        f'k={k} selects all d={d} groups ({groups.kind}): every mask would '
        f'be all ones. Choose k < {d}{hint}.')
  return k


def _check_x(x: Any, modality: str) -> np.ndarray | Array:
  if isinstance(x, (list, tuple)):
    x = np.asarray(x)
  _checks.check_array('x', x, min_ndim=2)
  if x.shape[0] == 0:
    raise ValueError('x must have at least one row, got shape '
                     f'{tuple(x.shape)}.')
  if modality == 'text':
    if x.ndim != 2 or not jnp.issubdtype(x.dtype, jnp.integer):
      raise ValueError("x must be int token ids [n, seq_len] for modality="
                       f"'text', got {x.dtype} of shape {tuple(x.shape)}.")
    if int(np.min(np.asarray(x))) < 0:
      raise ValueError('x must hold token ids >= 0.')
    return x
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f'x must have a floating dtype for modality={modality!r},'
                     f' got {x.dtype}.')
  if modality == 'image' and x.ndim != 4:
    raise ValueError("x must be images [n, H, W, C] for modality='image', got "
                     f'shape {tuple(x.shape)}.')
  _checks.check_array('x', x, finite=True)
  return x


def default_patch(image_shape: tuple[int, ...]) -> int:
  """The default patch size p of L2X's image groups for `[H, W, ...]` images.

  L2X's MNIST setting, p = 4 (28x28 -> a 7x7 grid of 49 patches), when 4
  divides H and W and leaves a grid of at least 4x4 patches; otherwise the
  largest p in 3, 2, 1 that does (8x8 -> p = 2, a 4x4 grid; 12x12 -> 3),
  and p = 1 (pixels) for images under 4 pixels a side. So small images get
  enough groups for a meaningful top-k instead of, e.g., the 2x2 grid of
  4x4 patches of an 8x8 image, where k = 4 would select everything.

  Args:
    image_shape: `(H, W)` or `(H, W, C)`.

  Returns:
    p, a patch size that divides H and W.
  """
  h, w = int(image_shape[0]), int(image_shape[1])
  for p in (4, 3, 2):
    if h % p == 0 and w % p == 0 and h // p >= 4 and w // p >= 4:
      return p
  return 1


# The checkpoint cadence of every learned explainer lives in `train`.
default_checkpoint_every = train.default_checkpoint_every


def _default_groups(modality: str, input_shape: tuple[int, ...],
                    patch: Any) -> masking.FeatureGroups:
  if modality == 'tabular':
    if patch is not None:
      raise ValueError("patch applies to modality='image' only.")
    return masking.feature_groups(input_shape)
  if modality == 'image':
    return masking.patch_groups(
        input_shape, default_patch(input_shape) if patch is None else patch)
  return masking.token_groups(input_shape[0])


def _check_groups(groups: Any, input_shape: tuple[int, ...]) -> None:
  if not isinstance(groups, masking.FeatureGroups):
    raise ValueError('groups must be a masking.FeatureGroups (feature_groups, '
                     f'patch_groups, token_groups, ...), got '
                     f'{type(groups).__name__}.')
  masking.require_shared_groups(groups, 'l2x')
  if tuple(groups.input_shape) != tuple(input_shape):
    raise ValueError(f'groups were made for inputs of shape '
                     f'{tuple(groups.input_shape)}, but x has examples of '
                     f'shape {tuple(input_shape)}.')


def _targets_from_box(box: bb.BlackBox, x: Any, chunk_size: int) -> np.ndarray:
  """`box.probs(x)` `[n, c]`, computed in jitted chunks."""
  if box.output == 'regression':
    raise ValueError(
        'L2X needs a black box that outputs a distribution over classes '
        "(output='logits', 'probs' or 'log_probs'); this black box has "
        "output='regression'. Explain a classifier, or pass soft targets "
        '[n, num_classes] instead.')
  box.check_input(x, 'x')
  if box.num_outputs < 2:
    raise ValueError(f'L2X needs a black box with >= 2 classes, got '
                     f'num_outputs={box.num_outputs}.')
  fn = jax.jit(lambda b, xx: jnp.exp(bb.to_log_probs(
      bb.forward_in_chunks(b, xx, chunk_size), b.output)))
  return np.asarray(fn(box, jnp.asarray(x)))


def _check_targets(targets: Any, n: int, name: str = 'targets') -> np.ndarray:
  t = np.asarray(targets)
  if t.ndim != 2 or t.shape[0] != n or t.shape[1] < 2:
    raise ValueError(f'{name} must be a distribution [n={n}, num_classes >= 2]'
                     f' (e.g. black-box probabilities), got shape {t.shape}.')
  if not np.issubdtype(t.dtype, np.floating):
    raise ValueError(f'{name} must be floating probabilities, got {t.dtype}.')
  if not np.all(np.isfinite(t)):
    raise ValueError(f'{name} contains NaN or infinite values.')
  if np.any(t < -_TARGET_ATOL):
    raise ValueError(f'{name} must be probabilities (>= 0); found '
                     f'{float(t.min()):.3g}.')
  sums = t.sum(axis=1)
  bad = np.abs(sums - 1.0) > _TARGET_ATOL
  if np.any(bad):
    i = int(np.argmax(bad))
    raise ValueError(
        f'{name} must be a distribution: every row must sum to 1, but row {i} '
        f'sums to {float(sums[i]):.4g} ({int(bad.sum())} bad rows). Pass '
        'probabilities (not logits or labels), or a BlackBox.')
  return np.clip(t, 0.0, 1.0).astype(np.float32)


def _resolve_targets(model: Any, x: Any, modality: str,
                     chunk_size: int) -> np.ndarray:
  """Soft targets `[n, c]` from a BlackBox, a probs callable, or an array."""
  n = x.shape[0]
  obj = model
  if isinstance(obj, bb.BlackBox):
    return _check_targets(_targets_from_box(obj, x, chunk_size), n,
                          'the black box probabilities')
  if callable(obj) and not hasattr(obj, 'shape'):
    # A plain JAX function of x returning probabilities (e.g. the synthetic
    # oracles `synthetic.TABULAR[name]`).
    box = bb.from_jax(obj, input_shape=tuple(x.shape[1:]), output='probs',
                      input_dtype='int' if modality == 'text' else 'float',
                      name=getattr(obj, '__name__', 'callable'))
    return _check_targets(_targets_from_box(box, x, chunk_size), n,
                          'the outputs of model (a callable is '
                          'read as returning probabilities; wrap a logits '
                          "function with blackbox.from_jax(output='logits'))")
  if hasattr(obj, 'shape') or isinstance(obj, (list, tuple)):
    return _check_targets(obj, n)
  raise ValueError('model must be a BlackBox, a callable '
                   'returning probabilities, or soft targets [n, num_classes],'
                   f' got {type(obj).__name__}.')


APPROXIMATORS = ('learned', 'blackbox')
PERTURBED_NUM_SAMPLES = 128  # L2X's default M for sampler='perturbed'


def make_sampler(name: str, tau: Any, kwargs: Mapping[str, Any] | None
                 ) -> Callable[[Array, Array, int], Array]:
  """The training sampler V(theta, zeta) of L2X Eq. (5): `(key, logits, k) -> mask`.

  A relaxed top-k of `xai_jax.relax` with its temperature and options bound:
  the returned function maps a PRNG key, logits `[b, d]` and a static k to
  the relaxed mask `[b, d]`. For 'perturbed' the Monte Carlo size defaults
  to M = `PERTURBED_NUM_SAMPLES`.

  Args:
    name: a key of `relax.SAMPLERS` other than 'hard' (no gradient).
    tau: the temperature (> 0).
    kwargs: the sampler's keyword options (e.g. `{'num_samples': 8}`).

  Returns:
    `sample(key, logits, k) -> mask`.

  Raises:
    ValueError: unknown or gradient-free sampler, bad tau, unknown option.
  """
  fn = relax.get_sampler(name)
  if name == 'hard':
    raise ValueError("sampler='hard' has no gradient; train with 'concrete', "
                     "'subset', 'straight_through' or 'perturbed'.")
  if (tau is None or isinstance(tau, bool)
      or not isinstance(tau, (int, float, np.integer, np.floating))):
    raise ValueError(f'tau must be a positive finite number, got {tau!r}.')
  _checks.check_positive('tau', tau)
  kwargs = dict(kwargs or {})
  allowed = [p.name for p in inspect.signature(fn).parameters.values()
             if p.kind == inspect.Parameter.KEYWORD_ONLY]
  for key in kwargs:
    if key not in allowed:
      raise ValueError(f'sampler_kwargs: sampler {name!r} has no option '
                       f'{key!r}; its options are {allowed}.')
  if name == 'perturbed':
    # M = 1000 (Berthet et al.'s default in relax) costs ~450 s per 10^6-row
    # epoch on 2 CPU cores; M = 128 gave the same median rank on L2X's
    # switch set (3.317 vs 3.319, seed 0) in 50 s.
    kwargs.setdefault('num_samples', PERTURBED_NUM_SAMPLES)
  tau = float(tau)
  return lambda key, logits, k: fn(key, logits, k, tau, **kwargs)


# ----------------------------------------------------------------------------
# Losses (L2X Eq. 6/8; REAL-X phases).


def l2x_loss(selector: nn.Module, approximator: nn.Module,
             sample: Callable[[Array, Array, int], Array], k: int,
             expand: Callable[[Array], Array], l2: float) -> train.LossFn:
  """The joint L2X loss of L2X Eq. (6)/(8), as a `train.fit` loss function.

      CE(P_m(.|x), g_alpha(x * V(theta, zeta))) + lambda * sum ||W||^2,

  averaged over the batch, with one noise draw zeta per row and step.

  Args:
    selector: the selector module `x -> logits[b, d]`.
    approximator: the approximator module `(x, mask) -> logits[b, c]`
      (its collection 'box', if any, is read only).
    sample: the relaxed top-k, `make_sampler(...)`.
    k: the number of groups to select.
    expand: group mask `[b, d]` -> input mask `[b, *input_shape]`
      (`FeatureGroups.expand`; the identity for one group per feature).
    l2: lambda of the L2 penalty (`nets.l2_penalty` of both modules).

  Returns:
    `loss_fn(params, model_state, batch, key) -> (loss, (model_state,
    metrics))` with `params = {'selector': ..., 'approximator': ...}`,
    `batch = {'x': [b, *input_shape], 'targets': [b, c]}` (soft targets)
    and metrics 'cross_entropy', 'approximator_agreement', 'mask_sum'.
  """
  def loss_fn(params, model_state, batch, key):
    x, p = batch['x'], batch['targets']
    noise_key, drop_key = _fast_keys(key, 2)
    logits = selector.apply({'params': params['selector']}, x, train=True,
                            rngs={'dropout': drop_key})
    v = sample(noise_key, logits, k)                       # [b, d] relaxed
    mask = expand(v)                                       # [b, *shape]
    variables = {'params': params['approximator'], **model_state}
    # 'box' holds a frozen black box (approximator='blackbox'): read only.
    mutable = [c for c in model_state if c != 'box']
    if mutable:
      out, updates = approximator.apply(variables, x, mask, train=True,
                                        mutable=mutable)
      new_state = {**model_state, **updates}
    else:
      out, new_state = approximator.apply(variables, x, mask,
                                          train=True), model_state
    ce = jnp.mean(optax.softmax_cross_entropy(out, p))
    penalty = (nets.l2_penalty(selector, params['selector'])
               + nets.l2_penalty(approximator, params['approximator']))
    agree = jnp.mean(jnp.argmax(out, -1) == jnp.argmax(p, -1))
    metrics = {'cross_entropy': ce, 'approximator_agreement': agree,
               'mask_sum': jnp.mean(jnp.sum(v, -1))}
    return ce + l2 * penalty, (new_state, metrics)

  return loss_fn


def _realx_selector_loss(selector: nn.Module, approximator: nn.Module,
                         approx_variables: PyTree,
                         sample: Callable[[Array, Array, int], Array], k: int,
                         expand: Callable[[Array], Array], l2: float
                         ) -> train.LossFn:
  """REAL-X phase 2: the frozen predictor q scores the selection (only theta trains)."""

  def loss_fn(params, model_state, batch, key):
    x, p = batch['x'], batch['targets']
    noise_key, drop_key = _fast_keys(key, 2)
    logits = selector.apply({'params': params}, x, train=True,
                            rngs={'dropout': drop_key})
    v = sample(noise_key, logits, k)
    out = approximator.apply(approx_variables, x, expand(v), train=False)
    ce = jnp.mean(optax.softmax_cross_entropy(out, p))
    agree = jnp.mean(jnp.argmax(out, -1) == jnp.argmax(p, -1))
    loss = ce + l2 * nets.l2_penalty(selector, params)
    return loss, (model_state, {'cross_entropy': ce,
                                'approximator_agreement': agree,
                                'mask_sum': jnp.mean(jnp.sum(v, -1))})

  return loss_fn


# ----------------------------------------------------------------------------
# fit.


def fit(
    key: Array | int | None,
    model: bb.BlackBox | Callable[[Array], Array] | Any,
    x: Any,
    config: ml_collections.ConfigDict | Mapping[str, Any] | None = None,
    *,
    groups: masking.FeatureGroups | None = None,
    selector: nn.Module | None = None,
    approximator: nn.Module | str | None = None,
    workdir: str | None = None,
    return_history: bool = False,
    **overrides: Any,
) -> L2XModel | tuple[L2XModel, dict[str, Any]]:
  """Trains an L2X explainer (selector + approximator jointly, L2X Eq. 6/8).

  Objective (maximised over theta, alpha; minimised here as a loss):

      E_x E_zeta [ sum_y P_m(y|x) log g_alpha(x * V(theta, zeta), y) ]
        - lambda * sum ||W||^2,

  with V the relaxed top-k of the selector's logits (one noise draw per row
  and step), P_m the black box's predictive distribution computed once up
  front in jitted chunks (or given soft targets, e.g. the true P(Y|X) of
  synthetic data: L2X's own setting), and unselected groups set to 0.

  The hyper-parameters are the fields of `default_config(modality)`:
  `config` (a ConfigDict or dict of some of them) and then `overrides`
  (field=value) are merged into it (`protocol.merge_config`), e.g.
  `fit(key, box, x, k=2, sampler='subset', config=cfg)`. `modality` is read
  first and chooses the defaults.

  Args:
    key: PRNG key or int seed (None: `config.seed`). Same key, same model.
    model: the explained model: a `BlackBox` whose output is a distribution
      ('logits', 'probs', 'log_probs'); or a JAX callable `x -> probs[n, c]`;
      or soft targets `[n, c]` (rows summing to 1).
    x: training inputs `[n, *input_shape]`: float (tabular `[n, d]`, image
      `[n, H, W, C]`) or int token ids `[n, L]` (text, 0 = PAD).
    config: a ConfigDict/dict of fields of `default_config` (None: the
      defaults).
    groups: the feature groups `d` is counted over; default: every feature
      (tabular), `patch x patch` patches (image; `patch=None`:
      `default_patch`, 4x4 on 28x28 images, 2x2 on 8x8), tokens (text).
      k must be smaller than d.
    selector: a custom selector module `x -> logits[b, d]` (default
      `nets.make_selector(modality, ...)`).
    approximator: a custom approximator module `(x, mask) -> logits[b, c]`,
      or the name of the config field `approximator`: 'learned' (the default
      net of the modality, trained jointly) or 'blackbox': the black box
      itself on the masked input, `q(y | x_S) = f(x * mask)_y`, frozen, so
      only the selector trains and the objective is the model's own
      fidelity on x_S (post-hoc accuracy); the selection cannot encode the
      class for a co-trained decoder. 'blackbox' needs a `BlackBox` on
      float inputs (tabular, image) as `model`.
    workdir: checkpoints (every `config.checkpoint_every` steps and at the
      end) and metrics of `train.fit` (REAL-X: `workdir/realx_predictor`
      and `workdir/realx_selector`); a rerun with the same arguments resumes
      from the newest checkpoint and ends with the same model as an
      uninterrupted run.
    return_history: also return the training history of `train.fit`.
    **overrides: fields of `default_config` by name (k, tau, sampler,
      num_steps, batch_size, modality, patch, vocab_size, chunk_size, ...).

  Returns:
    The `L2XModel` (and, if `return_history`, a dict of history arrays:
    'step', 'loss', 'cross_entropy', 'approximator_agreement', ...; REAL-X
    phase-1 entries prefixed 'predictor/').

  Raises:
    ValueError: an unknown config field (the message lists the valid ones),
      bad k (k >= d included) / tau / sampler / modality / groups / x /
      targets, or a black box that does not output a distribution.
  """
  # ---- config.
  if isinstance(approximator, str):
    overrides = {**overrides, 'approximator': approximator}
    approximator = None
  modality = protocol.peek('modality', config, overrides, 'tabular')
  _checks.check_choice('modality', modality, MODALITIES)
  cfg = protocol.merge_config(default_config(modality), config, overrides,
                              method='l2x')
  sampler = cfg.sampler
  _checks.check_choice('sampler', sampler, relax.SAMPLERS)
  tau = cfg.tau
  sample = make_sampler(sampler, tau, cfg.sampler_kwargs.to_dict())
  l2 = float(cfg.l2)
  if not math.isfinite(l2) or l2 < 0:
    raise ValueError(f'l2 must be >= 0, got {l2}.')
  activation = cfg.activation
  _checks.check_choice('activation', activation, nets.ACTIVATIONS)
  realx = bool(cfg.realx)
  keep_prob = float(cfg.realx_keep_prob)
  if not 0.0 < keep_prob <= 1.0:
    raise ValueError(f'realx_keep_prob must be in (0, 1], got {keep_prob}.')
  log_every = _checks.check_int('log_every', cfg.log_every)
  if approximator is None:
    approximator = cfg.approximator
    _checks.check_choice('approximator', approximator, APPROXIMATORS)
    if approximator == 'blackbox':
      if not isinstance(model, bb.BlackBox):
        raise ValueError("approximator='blackbox' needs a BlackBox as "
                         'model (soft targets or a plain callable cannot '
                         'score masked inputs).')
      if realx:
        raise ValueError("approximator='blackbox' and realx=True exclude "
                         "each other: REAL-X trains its own predictor.")
  key = _checks.as_key('key', key, default_seed=cfg.seed)
  if cfg.k is None:
    raise ValueError('k is required: the number of groups to select, '
                     'fit(key, model, x, k=...) or config.k.')

  # ---- data, groups, k.
  x = _check_x(x, modality)
  n = int(x.shape[0])
  input_shape = tuple(int(s) for s in x.shape[1:])
  if groups is None:
    groups = _default_groups(modality, input_shape, cfg.patch)
  else:
    _check_groups(groups, input_shape)
  k = _check_k(cfg.k, groups)
  d = groups.num_groups
  vocab_size = cfg.vocab_size
  if modality == 'text':
    vmax = int(np.max(np.asarray(x)))
    if vocab_size is None:
      vocab_size = vmax + 1
    vocab_size = _checks.check_int('vocab_size', vocab_size)
    if vmax >= vocab_size:
      raise ValueError(f'x holds token id {vmax} >= vocab_size={vocab_size}.')
  chunk_size = _checks.check_chunk_size(cfg.chunk_size or _CHUNK[modality])
  targets = _resolve_targets(model, x, modality, chunk_size)
  num_classes = int(targets.shape[1])

  # ---- schedule.
  batch_size, num_steps = train.resolve_steps(n, cfg.batch_size,
                                              cfg.num_steps, cfg.epochs)
  realx_num_steps = cfg.realx_num_steps
  realx_num_steps = _checks.check_int(
      'realx_num_steps',
      num_steps if realx_num_steps is None else realx_num_steps, minimum=0)
  opt_cfg = {'optimizer': cfg.optimizer, 'learning_rate': cfg.learning_rate}
  train.make_optimizer(opt_cfg)  # validates names and numbers
  steps_per_call = _checks.check_int('steps_per_call', cfg.steps_per_call)
  if cfg.checkpoint_every is not None:
    _checks.check_int('checkpoint_every', cfg.checkpoint_every)

  def checkpoint_every(steps: int) -> int:
    if cfg.checkpoint_every is not None:
      return int(cfg.checkpoint_every)
    return default_checkpoint_every(steps, steps_per_call)

  # ---- modules and initial parameters.
  if selector is None:
    selector = nets.make_selector(modality, num_groups=d, groups=groups,
                                  activation=activation, vocab_size=vocab_size)
  box_state = None
  if approximator == 'blackbox':
    approximator, box_state = nets.blackbox_approximator(model)
  elif isinstance(approximator, str):  # 'learned'
    approximator = nets.make_approximator(
        modality, num_classes=num_classes, k=k, activation=activation,
        vocab_size=vocab_size)
  x0 = jnp.asarray(np.asarray(x[:2]))
  expand = _expander(groups, _is_identity(groups))
  sel_params, app_params, model_state, logits0, train_key = init_params(
      selector, approximator, key, x0)
  if box_state is not None:
    model_state = {**model_state, **box_state}
  if tuple(logits0.shape) != (x0.shape[0], d):
    raise ValueError(f'selector must return logits [batch, d={d}], got '
                     f'{tuple(logits0.shape)} per batch of {x0.shape[0]}.')

  data = {'x': np.asarray(x), 'targets': targets}
  fit_kw = dict(batch_size=batch_size, log_every=log_every,
                steps_per_call=steps_per_call)
  history: dict[str, Any] = {}

  if not realx:
    tx = train.make_optimizer(opt_cfg, num_steps=max(num_steps, 1))
    loss_fn = l2x_loss(selector, approximator, sample, k, expand, l2)
    state, history = train.fit(
        loss_fn, {'selector': sel_params, 'approximator': app_params},
        data, tx=tx, key=train_key,
        model_state=model_state, num_steps=num_steps, workdir=workdir,
        checkpoint_every=checkpoint_every(num_steps),
        # the box's parameters are an input: kept out of the checkpoints.
        unsaved_collections=('box',) if box_state is not None else (),
        **fit_kw)
    params, model_state = state.params, state.model_state
  else:
    k1 = jax.random.fold_in(train_key, 1)
    k2 = jax.random.fold_in(train_key, 2)
    wd1 = None if workdir is None else f'{workdir}/realx_predictor'
    wd2 = None if workdir is None else f'{workdir}/realx_selector'
    tx1 = train.make_optimizer(opt_cfg, num_steps=max(realx_num_steps, 1))
    loss1 = realx_lib.random_mask_loss(
        realx_lib.linen_apply_fn(approximator, train=True), d, keep_prob,
        expand, lambda p: l2 * nets.l2_penalty(approximator, p),
        mask_keys=realx_lib.rbg_mask_keys)
    state1, hist1 = train.fit(
        loss1, app_params, data, tx=tx1, key=k1,
        model_state=model_state, num_steps=realx_num_steps, workdir=wd1,
        checkpoint_every=checkpoint_every(realx_num_steps), **fit_kw)
    app_params = jax.device_get(state1.params)
    model_state = jax.device_get(state1.model_state)
    frozen = {'params': app_params, **model_state}
    tx2 = train.make_optimizer(opt_cfg, num_steps=max(num_steps, 1))
    loss2 = _realx_selector_loss(selector, approximator, frozen, sample, k,
                                 expand, l2)
    state2, history = train.fit(
        loss2, sel_params, data, tx=tx2, key=k2,
        num_steps=num_steps, workdir=wd2,
        checkpoint_every=checkpoint_every(num_steps), **fit_kw)
    history = dict(history)
    history.update({f'predictor/{name}': v for name, v in hist1.items()})
    params = {'selector': state2.params, 'approximator': app_params}

  explainer = L2XModel(
      params=params, model_state=model_state, groups=groups,
      selector=selector, approximator=approximator, k=k, modality=modality,
      num_classes=num_classes, input_shape=input_shape, sampler=sampler,
      tau=float(tau), realx=realx, chunk_size=chunk_size)
  return (explainer, history) if return_history else explainer


# ----------------------------------------------------------------------------
# Explanations.


def _check_model_input(model: L2XModel, x: Any, k: int | None
                       ) -> tuple[Any, int]:
  if not isinstance(model, L2XModel):
    raise ValueError(f'model must be an L2XModel (from l2x.fit), got '
                     f'{type(model).__name__}.')
  if isinstance(x, (list, tuple)):
    x = np.asarray(x)
  _checks.check_array('x', x, ndim=1 + len(model.input_shape),
                      trailing_shape=model.input_shape)
  x = _check_x(x, model.modality)
  k = model.k if k is None else _check_k(k, model.groups)
  return x, k


def _chunk_for(model: L2XModel, chunk_size: int | None) -> int:
  return _checks.check_chunk_size(
      chunk_size or model.chunk_size or _CHUNK[model.modality])


@functools.partial(jax.jit, static_argnames=('selector', 'k', 'chunk_size'))
def _explain_jit(selector: nn.Module, params: PyTree, x: Array, *, k: int,
                 chunk_size: int) -> tuple[Array, Array]:
  def one(xc):
    logits = selector.apply({'params': params}, xc, train=False)
    return relax.hard_topk(None, logits, k), logits
  return bb.map_batches(one, x, chunk_size)


def explain(model: L2XModel, x: Any, *, key: Any = None, target: Any = None,
            k: int | None = None, chunk_size: int | None = None
            ) -> protocol.Explanation:
  """L2X explanations: the hard top-k of the selector's logits.

  At test time L2X replaces the relaxed sample V(theta, zeta) by the
  deterministic top-k of the logits (L2X §3, `Sample_Concrete` at test;
  here `relax.hard_topk`, ties broken by index, so exactly k ones per row).
  One jitted call for the whole batch (`lax.map` over chunks of
  `chunk_size` rows for large n).

  Args:
    model: a fitted `L2XModel`.
    x: `[n, *input_shape]` inputs to explain.
    key: unused (the explanation is deterministic); accepted for the
      explainer protocol.
    target: unused: L2X explains the prediction of the model it was trained
      on (its soft targets); accepted for the explainer protocol.
    k: groups to select (default `model.k`), `1 <= k <= d`.
    chunk_size: rows per chunk (default `model.chunk_size`, else 65536
      tabular, 1024 image, 4096 text).

  Returns:
    `Explanation(scores, mask)`: `scores[n, d]` the selector logits (a
    ranking of all groups; PAD tokens get `nets.PAD_LOGIT`) and `mask[n, d]`
    float32 with exactly k ones per row (1 = selected group).
  """
  del key, target
  x, k = _check_model_input(model, x, k)
  mask, scores = _explain_jit(model.selector, model.params['selector'], x,
                              k=k, chunk_size=_chunk_for(model, chunk_size))
  return protocol.Explanation(scores=scores, mask=mask)


@functools.partial(
    jax.jit, static_argnames=('selector', 'k', 'chunk_size', 'identity',
                              'tokens'))
def _select_jit(selector: nn.Module, params: PyTree,
                groups: masking.FeatureGroups, x: Array, *, k: int,
                chunk_size: int, identity: bool, tokens: bool) -> Array:
  expand = _expander(groups, identity)

  def one(xc):
    logits = selector.apply({'params': params}, xc, train=False)
    mask = expand(relax.hard_topk(None, logits, k))
    if tokens:
      return masking.mask_tokens(xc, mask, 0)
    return masking.apply_mask(xc, mask, 0.0)
  return bb.map_batches(one, x, chunk_size)


def select_inputs(model: L2XModel, x: Any, *, k: int | None = None,
                  chunk_size: int | None = None) -> Array:
  """The inputs with only the selected groups kept (L2X's x_S, zeros elsewhere).

  One jitted call (chunked like `explain`).

  Args:
    model: a fitted `L2XModel`.
    x: `[n, *input_shape]`.
    k: groups to keep (default `model.k`).
    chunk_size: rows per chunk (default as `explain`).

  Returns:
    `[n, *input_shape]`: `apply_mask(x, groups.expand(mask), 0)` for float
    inputs (Eq. 6); for tokens, unselected ids replaced by PAD (0).
  """
  x, k = _check_model_input(model, x, k)
  return _select_jit(model.selector, model.params['selector'], model.groups,
                     x, k=k, chunk_size=_chunk_for(model, chunk_size),
                     identity=_is_identity(model.groups),
                     tokens=model.modality == 'text')


@functools.partial(
    jax.jit, static_argnames=('selector', 'approximator', 'k', 'chunk_size',
                              'identity'))
def _approx_jit(selector: nn.Module, approximator: nn.Module, params: PyTree,
                model_state: PyTree, groups: masking.FeatureGroups, x: Array,
                *, k: int, chunk_size: int, identity: bool) -> Array:
  expand = _expander(groups, identity)

  def one(xc):
    logits = selector.apply({'params': params['selector']}, xc)
    mask = expand(relax.hard_topk(None, logits, k))
    return approximator.apply(
        {'params': params['approximator'], **model_state}, xc, mask,
        train=False)
  return bb.map_batches(one, x, chunk_size)


def approximator_logits(model: L2XModel, x: Any, *, k: int | None = None,
                        chunk_size: int | None = None) -> Array:
  """The approximator's logits on the hard-selected inputs: g_alpha(x_S).

  Args:
    model: a fitted `L2XModel`.
    x: `[n, *input_shape]`.
    k: groups to keep (default `model.k`).
    chunk_size: rows per jitted chunk.

  Returns:
    `[n, num_classes]` logits (BatchNorm in inference mode).
  """
  x, k = _check_model_input(model, x, k)
  return _approx_jit(model.selector, model.approximator, model.params,
                     model.model_state, model.groups, x, k=k,
                     chunk_size=_chunk_for(model, chunk_size),
                     identity=_is_identity(model.groups))


def approximator_accuracy(model: L2XModel, x: Any, targets: Any, *,
                          k: int | None = None,
                          chunk_size: int | None = None) -> float:
  """L2X's own fidelity: how often g_alpha(x_S) agrees with the explained model.

  `mean_i [argmax g_alpha(x_S)_i == argmax P_m(.|x_i)]` with x_S the hard
  top-k selection (the 'approximator accuracy' the reference code monitors
  as val_acc). Caveat (REAL-X): a jointly trained approximator can decode
  labels encoded in *which* features are picked; score selections with an
  independent evaluator (EVAL-X) too.

  Args:
    model: a fitted `L2XModel`.
    x: `[n, *input_shape]`.
    targets: a `BlackBox` (its predictions), soft targets `[n, c]`, or int
      labels `[n]`.
    k: groups to keep (default `model.k`).
    chunk_size: rows per jitted chunk.

  Returns:
    The agreement rate in [0, 1] (a Python float).
  """
  x, k = _check_model_input(model, x, k)
  n = x.shape[0]
  if isinstance(targets, bb.BlackBox):
    t = _targets_from_box(targets, x, _chunk_for(model, chunk_size))
    labels = np.argmax(t, -1)
  else:
    t = np.asarray(targets)
    if t.ndim == 2 and t.shape[0] == n:
      labels = np.argmax(t, -1)
    elif t.ndim == 1 and t.shape[0] == n and np.issubdtype(t.dtype,
                                                          np.integer):
      labels = t
    else:
      raise ValueError(f'targets must be a BlackBox, soft targets [n={n}, c] '
                       f'or int labels [n={n}], got shape {t.shape}.')
  logits = approximator_logits(model, x, k=k, chunk_size=chunk_size)
  return float(np.mean(np.argmax(np.asarray(logits), -1) == labels))


__all__ = [
    'APPROXIMATORS', 'L2XModel', 'MODALITIES', 'PERTURBED_NUM_SAMPLES',
    'approximator_accuracy', 'approximator_logits',
    'default_checkpoint_every', 'default_config', 'default_patch', 'explain',
    'fit', 'init_params', 'l2x_loss', 'make_sampler', 'select_inputs',
]
