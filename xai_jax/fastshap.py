"""FastSHAP: amortized Shapley values (Jethani, Sudarshan, Covert, Lee,
Ranganath, "FastSHAP: Real-Time Shapley Value Estimation", ICLR 2022).

An explainer network `phi_theta(x) -> [num_groups, c]` (one Shapley value per
feature group and per output) is trained so that one forward pass gives the
Shapley values of every input, with the paper's objective (Eq. 4):

    L(theta) = E_x E_{s ~ p_Sh} sum_y (v_{x,y}(s) - v_{x,y}(0) - s^T phi_theta(x, y))^2,

p_Sh the Shapley-kernel distribution over coalitions `s in {0,1}^d`
(`attribution.coalitions.sample_shapley_coalitions`, paired `(s, 1 - s)` by
default), with the **additive efficient normalisation** applied to the
network's output inside the loss and at inference (paper Eq. 6):

    phi <- phi + (v(1) - v(0) - 1^T phi) / d,

so `sum_i phi_i(x, y) = v_{x,y}(1) - v_{x,y}(0)` exactly. The global optimum
of the objective is the Shapley value of the game (paper, Theorem 1).

The game `v_{x,y}(s)` (`config.value`):

* `'baseline'`: the black box on the masked input, `v(s) = f(x_s,
  b_{not s})_y`, absent groups set to a baseline (zero, the mean of the
  training data, or a number; the PAD id for tokens), in `config.space`
  ('probs' as the paper; 'log_probs', 'raw'). The Shapley values this game
  has are exactly what `attribution.exact_shapley` / `kernel_shap` compute
  with the same `baseline=` and `space=`.
* `'surrogate'`: the paper's recommended setup: a surrogate `q(y | x_s)`
  trained to match the black box's predictions on randomly masked inputs
  (the REAL-X / EVAL-X random-mask loss, `realx.train_evalx`, with the
  black box's probabilities as soft targets), and `v(s) = q(y | x_s)`.

`config.objective = 'regression'` instead trains the same network by mean
squared error to precomputed Shapley values (`fit(..., targets=)`, e.g.
KernelSHAP with many samples): the simpler amortized regressor of Yang et al.
(ACL 2023) and of the selective-explanations paper.

**Ensembles** (`config.ensemble_size = k`): k explainers that differ in their
initialisation are trained at once, their parameters stacked on a leading
axis and the per-member loss vmapped (one jit, one training loop; Adam is
elementwise, so each member follows exactly the trajectory it would follow
alone). By default the members share each step's batch and coalitions, so
the game is evaluated once per step for the whole ensemble
(`member_coalitions='independent'` draws per-member coalitions, k times the
model rows). Member `i` is initialised from `fold_in(key_init, i)`: an
ensemble equals its members trained one at a time with `ensemble_size=1,
first_member=i` up to float rounding (the vmapped matmuls sum in another
order): bit-equal for short runs (20 steps in the tests), while over 2,000
steps rounding differences grow to a max abs difference of ~0.03 in some
members (docs/speed.md), as between two runs on different hardware.
`explain` returns the ensemble mean; `attributions(...,
members=True)` every member (`selective.deep_uncertainty` scores their
disagreement).

    import xai_jax as xj
    explainer = xj.fastshap.fit(0, box, x_train, num_steps=3000)
    out = xj.fastshap.explain(explainer, x_test)     # out.scores [b, d]
"""

from __future__ import annotations

import functools
import math
from typing import Any, Mapping

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from xai_jax import _checks
from xai_jax import blackbox as bb
from xai_jax import masking
from xai_jax import nets
from xai_jax import protocol
from xai_jax import realx as realx_lib
from xai_jax import train
from xai_jax.attribution import coalitions

Array = jax.Array
PyTree = Any

MODALITIES = nets.MODALITIES
OBJECTIVES = ('fastshap', 'regression')
VALUES = ('baseline', 'surrogate')
NORMALIZATIONS = ('additive', 'none')
MEMBER_COALITIONS = ('shared', 'independent')
_CHUNK = {'tabular': 65536, 'image': 1024, 'text': 4096}


def default_config(modality: str = 'tabular') -> ml_collections.ConfigDict:
  """FastSHAP's hyper-parameters (an ml_collections ConfigDict).

  Fields:
    modality: 'tabular', 'image' (patch groups) or 'text' (token groups);
      chooses the default groups and network.
    objective: 'fastshap' (the paper's Eq. 4) or 'regression' (MSE to
      precomputed Shapley values given as `fit(..., targets=)`).
    value: the game v(s): 'baseline' (the black box on the masked input) or
      'surrogate' (a surrogate trained on randomly masked inputs).
    baseline: the value of absent groups for `value='baseline'` and of the
      surrogate's masks: 'zero', 'mean' (the mean of `fit`'s x, the training
      data) or a number. Tokens are always replaced by `pad_id`.
    space: the explained output: 'probs' (the paper), 'log_probs' or 'raw'
      (the box's own outputs; the only choice for regression boxes).
    num_samples: m, coalitions per example and step (the paper: 32; paired).
    paired: antithetic pairs (s, 1 - s) (the paper's default).
    normalization: 'additive' (paper Eq. 6, efficiency exact) or 'none'.
    ensemble_size: k explainers trained at once (vmapped; >= 1).
    first_member: the index of the first member (member i is initialised
      from `fold_in(key, i)`; `ensemble_size=1, first_member=i` trains
      member i of an ensemble alone).
    member_coalitions: 'shared' (one draw of coalitions per step for all
      members: the game is evaluated once) or 'independent'.
    hidden: hidden widths of the tabular network (`nets.MLPSelector`;
      images use `nets.PatchSelector`, text `nets.TextSelector`, each with c
      outputs per group).
    activation: hidden activation ('relu', 'selu', ...).
    patch: image patch size (None: `l2x.default_patch`-style choice, 4x4 on
      28x28).
    vocab_size: V for text (None: max(x) + 1); pad_id: the PAD token id.
    optimizer, learning_rate, schedule, weight_decay: optax optimizer
      (`train.make_optimizer`); the paper: Adam 2e-4 with plateau decay and
      early stopping; we use Adam 3e-3 with cosine decay over `num_steps`
      (about 2,000 steps reach the paper's accuracy on d = 10 in seconds).
    batch_size: examples per step (b).
    epochs: passes over x (num_steps = epochs * (n // batch_size)).
    num_steps: total steps; overrides epochs when set.
    surrogate_steps, surrogate_batch_size, surrogate_hidden,
      surrogate_keep_prob: the surrogate's training (`realx.train_evalx`:
      steps, batch, MLP widths, p of s_i ~ Bernoulli(p)).
    chunk_size: rows per jitted call when computing v(1), v(0) and
      explaining (None: 65536 tabular, 1024 image, 4096 text).
    log_every, checkpoint_every, steps_per_call: the training loop's
      (`train.fit`) log period, checkpoint period (None: about 4 per run)
      and optimizer steps per jitted call.
    seed: the PRNG seed used when `fit` gets key=None.
  """
  _checks.check_choice('modality', modality, MODALITIES)
  c = ml_collections.ConfigDict()
  c.modality = modality
  c.objective = 'fastshap'
  c.value = 'baseline'        # v(s): 'baseline' | 'surrogate'
  c.baseline = 'zero'         # absent value: 'zero' | 'mean' | a number
  c.space = 'probs'           # v in probabilities (the paper)
  c.num_samples = 32          # m: coalitions s ~ p_Sh per example and step
  c.paired = True             # antithetic (s, 1 - s)
  c.normalization = 'additive'  # phi + (v(1) - v(0) - 1^T phi) / d (Eq. 6)
  c.ensemble_size = 1         # k members trained at once
  c.first_member = 0
  c.member_coalitions = 'shared'
  c.hidden = (128, 128, 128)
  c.activation = 'relu'
  c.patch = None
  c.vocab_size = None
  c.pad_id = 0
  c.optimizer = 'adam'
  c.learning_rate = 3e-3      # eta
  c.schedule = 'cosine'
  c.weight_decay = 0.0
  c.batch_size = 64           # b
  c.epochs = 64
  c.num_steps = None          # total steps (None: epochs * (n // b))
  c.surrogate_steps = 2000
  c.surrogate_batch_size = 128
  c.surrogate_hidden = (128, 128)
  c.surrogate_keep_prob = 0.5  # p of s_i ~ Bernoulli(p) (EVAL-X)
  c.chunk_size = None
  c.log_every = 200
  c.checkpoint_every = None
  c.steps_per_call = 10 if modality == 'tabular' else 1
  c.seed = 0
  if modality != 'tabular':
    c.batch_size = 32
    c.epochs = 20
  return c


@flax.struct.dataclass
class FastSHAPExplainer:
  """A trained FastSHAP explainer (or ensemble), what `fit` returns.

  Attributes:
    params: the network's parameters, stacked on a leading member axis
      `[k, ...]` (k = `ensemble_size`, 1 for a single explainer).
    game: the box whose masked outputs define v(s): the black box
      (`value='baseline'`) or the surrogate's box.
    model: the explained black box (targets default to its prediction).
    baseline: `[*input_shape]`, the value of absent groups.
    null: `[c]`, v(0) in `space`.
    groups: the players.
    net: the explainer network (static).
    modality, space, normalization, value: as in the config (static).
    num_classes: c, the number of explained outputs (static).
    ensemble_size: k (static).
    pad_id: the PAD token id (text; static).
    chunk_size: rows per jitted call in `explain` (static).
  """

  params: PyTree
  game: bb.BlackBox
  model: bb.BlackBox
  baseline: Array
  null: Array
  groups: masking.FeatureGroups
  net: nn.Module = flax.struct.field(pytree_node=False)
  modality: str = flax.struct.field(pytree_node=False)
  space: str = flax.struct.field(pytree_node=False)
  normalization: str = flax.struct.field(pytree_node=False)
  value: str = flax.struct.field(pytree_node=False)
  num_classes: int = flax.struct.field(pytree_node=False)
  ensemble_size: int = flax.struct.field(pytree_node=False)
  pad_id: int = flax.struct.field(pytree_node=False, default=0)
  chunk_size: int = flax.struct.field(pytree_node=False, default=4096)

  @property
  def num_groups(self) -> int:
    """d, the number of players."""
    return self.groups.num_groups


# ----------------------------------------------------------------------------
# The game and the normalisation (pure, traceable).


def active_players(x: Array, modality: str, num_groups: int, pad_id: int = 0
                   ) -> Array:
  """float `[batch, d]`: 1 for real players, 0 for PAD tokens (text).

  A PAD position is a null player of the token game (masking it changes
  nothing): its Shapley value is 0, and the efficiency normalisation spreads
  the gap over the other players only.
  """
  if modality == 'text':
    return (x != pad_id).astype(jnp.float32)
  return jnp.ones((x.shape[0], num_groups), jnp.float32)


def game_values(game: bb.BlackBox, x: Array, coalitions_: Array,
                baseline: Array, groups: masking.FeatureGroups, space: str
                ) -> Array:
  """v_x(s) for a set of coalitions per example: `[batch, m, c]`.

  Args:
    game: the box scored on masked inputs.
    x: `[batch, *input_shape]`.
    coalitions_: `[batch, m, d]` 0/1 (1 = present).
    baseline: `[*input_shape]`, the value of absent groups.
    groups: the players.
    space: 'raw', 'probs' or 'log_probs'.
  Returns:
    `[batch, m, c]`: `to_space(game(x * S + baseline * (1 - S)))`.
  """
  b, m = coalitions_.shape[:2]
  mask = groups.expand(coalitions_.astype(jnp.float32))   # [b, m, *shape]
  xm = masking.apply_mask(x[:, None], mask, baseline[None])
  out = game.apply_fn(game.params, xm.reshape((b * m,) + x.shape[1:]))
  return bb.to_space(out, game.output, space).reshape((b, m, -1))


def normalize(phi: Array, gap: Array, active: Array, normalization: str
              ) -> Array:
  """FastSHAP's additive efficient normalisation (paper Eq. 6).

  `phi + active * (gap - sum_i active_i phi_i) / sum_i active_i`, so that
  `sum_i phi_i = gap = v(1) - v(0)` for every output.

  Args:
    phi: `[batch, d, c]` raw network outputs (zero at inactive players).
    gap: `[batch, c]`, v(1) - v(0).
    active: `[batch, d]` 1 for real players, 0 for PAD tokens.
    normalization: 'additive' or 'none'.
  Returns:
    `[batch, d, c]`.
  """
  phi = phi * active[..., None]
  if normalization == 'none':
    return phi
  count = jnp.maximum(jnp.sum(active, axis=1), 1.0)[:, None]     # [b, 1]
  shift = (gap - jnp.sum(phi, axis=1)) / count                    # [b, c]
  return phi + active[..., None] * shift[:, None, :]


def _net_phi(net: nn.Module, params: PyTree, x: Array, d: int, c: int
             ) -> Array:
  out = net.apply({'params': params}, x, train=False)
  return out.reshape((x.shape[0], d, c)).astype(jnp.float32)


# ----------------------------------------------------------------------------
# Losses.


def fastshap_loss(net: nn.Module, game: bb.BlackBox, baseline: Array,
                  null: Array, groups: masking.FeatureGroups, *, space: str,
                  num_samples: int, paired: bool, normalization: str,
                  modality: str, pad_id: int, members: tuple[int, ...],
                  member_coalitions: str = 'shared') -> train.LossFn:
  """The FastSHAP objective (paper Eq. 4) for a stack of members.

  For a batch `{'x': [b, *input_shape], 'grand': [b, c]}` (`grand` = v(1)
  precomputed once) and a step key: every member j (parameters stacked on
  the leading axis) gives `phi_j = normalize(net(x))`; coalitions `S [b, m,
  d] ~ p_Sh` (paired), drawn from the step key ('shared', the game is
  evaluated once for all members) or from `fold_in(key, members[j])`
  ('independent'); the member's loss is

      mean_{b, m} sum_c (v(S) - v(0) - S phi_j)^2,

  and the loss is the SUM over members (so each member's gradient is its own
  loss's gradient). Logged metrics: 'fastshap_mse' (the members' mean).
  """
  d = groups.num_groups
  c = int(null.shape[-1])
  m = int(num_samples)
  member_ids = jnp.asarray(members, jnp.int32)

  def draw(key, b):
    s = coalitions.sample_shapley_coalitions(key, b * m, d, paired=paired)
    return s.reshape((b, m, d)).astype(jnp.float32)

  def member_mse(params, x, active, gap, s, v):
    phi = normalize(_net_phi(net, params, x, d, c), gap, active,
                    normalization)
    pred = null + jnp.einsum('bmd,bdc->bmc', s, phi)
    return jnp.mean(jnp.sum((v - pred) ** 2, axis=-1))

  def loss_fn(params, model_state, batch, key):
    x, grand = batch['x'], batch['grand']
    b = x.shape[0]
    active = active_players(x, modality, d, pad_id)
    gap = grand - null
    if member_coalitions == 'shared':
      s = draw(key, b)
      v = jax.lax.stop_gradient(game_values(game, x, s, baseline, groups,
                                            space))
      mses = jax.vmap(member_mse, in_axes=(0, None, None, None, None, None))(
          params, x, active, gap, s, v)
    else:
      def one(p, i):
        s = draw(jax.random.fold_in(key, i), b)
        v = jax.lax.stop_gradient(game_values(game, x, s, baseline, groups,
                                              space))
        return member_mse(p, x, active, gap, s, v)
      mses = jax.vmap(one)(params, member_ids)
    return jnp.sum(mses), (model_state, {'fastshap_mse': jnp.mean(mses)})

  return loss_fn


def regression_loss(net: nn.Module, null: Array, groups: masking.FeatureGroups,
                    *, normalization: str, modality: str, pad_id: int
                    ) -> train.LossFn:
  """MSE to precomputed Shapley values, summed over stacked members.

  Batch `{'x', 'grand' [b, c], 'phi' [b, d, c]}`; each member's loss is
  `mean_b sum_{i,c} (normalize(net(x)) - phi)^2 / d`. Metric 'phi_mse'.
  """
  d = groups.num_groups
  c = int(null.shape[-1])

  def member_mse(params, x, active, gap, target):
    phi = normalize(_net_phi(net, params, x, d, c), gap, active,
                    normalization)
    return jnp.mean(jnp.sum((phi - target) ** 2, axis=(1, 2)) / d)

  def loss_fn(params, model_state, batch, key):
    del key
    x = batch['x']
    active = active_players(x, modality, d, pad_id)
    gap = batch['grand'] - null
    mses = jax.vmap(member_mse, in_axes=(0, None, None, None, None))(
        params, x, active, gap, batch['phi'])
    return jnp.sum(mses), (model_state, {'phi_mse': jnp.mean(mses)})

  return loss_fn


# ----------------------------------------------------------------------------
# fit.


def _check_x(x: Any, modality: str) -> np.ndarray:
  arr = np.asarray(x)
  if arr.ndim < 2 or arr.shape[0] == 0:
    raise ValueError(f'x must be [n, *input_shape] with n >= 1, got shape '
                     f'{arr.shape}.')
  if modality == 'text':
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
      raise ValueError(f"modality='text' needs int token ids x [n, L], got "
                       f'{arr.dtype} {arr.shape}.')
  else:
    if not np.issubdtype(arr.dtype, np.floating):
      raise ValueError(f'x must hold float features for modality='
                       f'{modality!r}, got {arr.dtype}.')
    if not np.all(np.isfinite(arr)):
      raise ValueError('x holds NaN or inf.')
  return arr


def _default_groups(modality: str, input_shape: tuple[int, ...],
                    patch: Any) -> masking.FeatureGroups:
  if modality == 'tabular':
    return masking.feature_groups(input_shape)
  if modality == 'text':
    return masking.token_groups(input_shape[0])
  if patch is None:
    h, w = input_shape[:2]
    patch = next((p for p in (4, 3, 2, 1)
                  if h % p == 0 and w % p == 0 and h // p >= 4
                  and w // p >= 4), 1)
  return masking.patch_groups(input_shape, int(patch))


def _baseline(cfg: ml_collections.ConfigDict, x: np.ndarray,
              input_shape: tuple[int, ...]) -> Array:
  if cfg.modality == 'text':
    return jnp.full(input_shape, int(cfg.pad_id), jnp.int32)
  base = cfg.baseline
  if isinstance(base, str):
    _checks.check_choice('baseline', base, ('zero', 'mean'))
    if base == 'zero':
      return jnp.zeros(input_shape, jnp.float32)
    return masking.data_mean(x, input_shape, name='x').astype(jnp.float32)
  if isinstance(base, bool) or not isinstance(base, (int, float)):
    raise ValueError(f"baseline must be 'zero', 'mean' or a number, got "
                     f'{base!r}.')
  if not math.isfinite(float(base)):
    raise ValueError(f'baseline must be finite, got {base!r}.')
  return jnp.full(input_shape, float(base), jnp.float32)


def make_net(modality: str, *, num_groups: int, num_classes: int,
             groups: masking.FeatureGroups, hidden: Any = (128, 128, 128),
             activation: str = 'relu', vocab_size: int | None = None,
             pad_id: int = 0) -> nn.Module:
  """FastSHAP's explainer network `x -> [batch, num_groups, num_classes]`.

  'tabular': `nets.MLPSelector` (Dense(hidden) x len(hidden), as the
  paper's tabular explainer with 128-wide layers) with c outputs per
  feature; 'image': `nets.PatchSelector` with c outputs per patch (the
  paper uses a U-Net at patch resolution); 'text': `nets.TextSelector` with
  c outputs per token (0 at PAD).
  """
  if modality == 'tabular':
    return nets.make_selector('tabular', num_groups=num_groups,
                              activation=activation, num_outputs=num_classes,
                              hidden=tuple(int(h) for h in hidden))
  if modality == 'image':
    return nets.make_selector('image', num_groups=num_groups, groups=groups,
                              activation=activation, num_outputs=num_classes)
  return nets.make_selector('text', num_groups=num_groups,
                            vocab_size=vocab_size, num_outputs=num_classes,
                            pad_id=pad_id)


def _stack_init(net: nn.Module, key: Array, x0: Array,
                members: tuple[int, ...]) -> PyTree:
  ps = [nets.init_selector(net, jax.random.fold_in(key, i), x0)
        for i in members]
  return jax.tree.map(lambda *a: jnp.stack(a), *ps)


def _outputs(box: bb.BlackBox, x: Any, space: str, chunk: int) -> np.ndarray:
  out = _outputs_jit(box, jnp.asarray(x), space, chunk)
  return np.asarray(out)


@functools.partial(jax.jit, static_argnames=('space', 'chunk'))
def _outputs_jit(box, x, space, chunk):
  return bb.to_space(bb.forward_in_chunks(box, x, chunk), box.output, space)


def fit(key: Array | int | None, model: bb.BlackBox | Any, x: Any,
        config: ml_collections.ConfigDict | Mapping[str, Any] | None = None,
        *, groups: masking.FeatureGroups | None = None,
        targets: Any = None, net: nn.Module | None = None,
        workdir: str | None = None, return_history: bool = False,
        **overrides: Any
        ) -> FastSHAPExplainer | tuple[FastSHAPExplainer, dict[str, Any]]:
  """Trains a FastSHAP explainer (or an ensemble of k) on `x`.

  Minimises the FastSHAP objective (paper Eq. 4, `fastshap_loss`) over the
  rows of `x` with the shared training loop (`train.fit`, Adam), v(1) being
  computed once per row up front and v(0) once; or, with
  `objective='regression'`, the MSE to the given `targets`
  (`regression_loss`). With `value='surrogate'` a surrogate is first trained
  on randomly masked inputs (`realx.train_evalx` with the black box's
  probabilities as soft targets) and defines the game.

  Args:
    key: PRNG key or int seed (None: `config.seed`): initialisation, data
      order, coalitions, the surrogate. Same key, same explainer.
    model: the explained `BlackBox` (or a JAX callable on float inputs).
    x: training inputs `[n, *input_shape]` (float; int token ids `[n, L]`
      for text).
    config: a ConfigDict/dict of fields of `default_config` (None: the
      defaults).
    groups: the players (default: every feature, 4x4-style patches, tokens).
    targets: `[n, d, c]` Shapley values of the rows of x (every output c of
      the box, in `space`) for `objective='regression'`.
    net: a custom network `x -> [batch, d, c]` (or `[batch, d * c]`).
    workdir: checkpoints and metrics of `train.fit` (resumes from it; the
      surrogate in `workdir/surrogate`).
    return_history: also return the training history.
    **overrides: fields of `default_config` by name.
  Returns:
    a `FastSHAPExplainer` (and the history dict if `return_history`).
  Raises:
    ValueError: an unknown config field, bad x / groups / targets / config
      values, a classifier space for a regression box.
  """
  modality = protocol.peek('modality', config, overrides, 'tabular')
  _checks.check_choice('modality', modality, MODALITIES)
  cfg = protocol.merge_config(default_config(modality), config, overrides,
                              method='fastshap')
  objective = _checks.check_choice('objective', cfg.objective, OBJECTIVES)
  value = _checks.check_choice('value', cfg.value, VALUES)
  normalization = _checks.check_choice('normalization', cfg.normalization,
                                       NORMALIZATIONS)
  member_coalitions = _checks.check_choice(
      'member_coalitions', cfg.member_coalitions, MEMBER_COALITIONS)
  space = _checks.check_choice('space', cfg.space, bb.SPACES)
  k = _checks.check_int('ensemble_size', cfg.ensemble_size)
  first = _checks.check_int('first_member', cfg.first_member, minimum=0)
  members = tuple(range(first, first + k))
  num_samples = _checks.check_int('num_samples', cfg.num_samples)
  pad_id = int(cfg.pad_id)
  key = _checks.as_key('key', key, default_seed=cfg.seed)

  x = _check_x(x, modality)
  n = int(x.shape[0])
  input_shape = tuple(int(s) for s in x.shape[1:])
  box = bb.as_blackbox(model, input_shape=input_shape)
  box.check_input(jnp.asarray(x[:1]))
  if space != 'raw' and box.output == 'regression':
    raise ValueError(f"space={space!r} needs a classifier; the black box has "
                     "output='regression' (use space='raw').")
  if groups is None:
    groups = _default_groups(modality, input_shape, cfg.patch)
  masking.check_groups(groups, input_shape)
  masking.require_shared_groups(groups, 'fastshap')
  d = groups.num_groups
  if d < 2:
    raise ValueError(f'FastSHAP needs at least 2 players, got d={d}.')
  vocab_size = cfg.vocab_size
  if modality == 'text':
    vmax = int(x.max())
    vocab_size = _checks.check_int('vocab_size', vocab_size or vmax + 1)
    if vmax >= vocab_size:
      raise ValueError(f'x holds token id {vmax} >= vocab_size={vocab_size}.')
  chunk = _checks.check_chunk_size(cfg.chunk_size or _CHUNK[modality])
  baseline = _baseline(cfg, x, input_shape)
  batch_size, num_steps = train.resolve_steps(n, cfg.batch_size,
                                              cfg.num_steps, cfg.epochs)
  opt_cfg = {'optimizer': cfg.optimizer, 'learning_rate': cfg.learning_rate,
             'schedule': cfg.schedule, 'weight_decay': cfg.weight_decay,
             'num_steps': max(num_steps, 1)}
  tx = train.make_optimizer(opt_cfg)
  k_init, k_train, k_sur = jax.random.split(key, 3)

  # ---- the game.
  history: dict[str, Any] = {}
  game = box
  if value == 'surrogate':
    probs = _outputs(box, x, 'probs', chunk) if box.output != 'regression' \
        else None
    if probs is None:
      raise ValueError("value='surrogate' needs a classifier black box.")
    evaluator = realx_lib.train_evalx(
        k_sur, jnp.asarray(x), jnp.asarray(probs), groups=groups,
        num_steps=_checks.check_int('surrogate_steps', cfg.surrogate_steps,
                                    minimum=0),
        batch_size=_checks.check_int('surrogate_batch_size',
                                     cfg.surrogate_batch_size),
        keep_prob=cfg.surrogate_keep_prob, baseline=baseline,
        hidden_sizes=tuple(cfg.surrogate_hidden),
        workdir=None if workdir is None else f'{workdir}/surrogate')
    game = evaluator.box
  c = game.num_outputs
  grand = _outputs(game, x, space, chunk)                      # [n, c]
  null = jnp.asarray(_outputs(game, baseline[None], space, chunk)[0])

  # ---- network and data.
  if net is None:
    net = make_net(modality, num_groups=d, num_classes=c, groups=groups,
                   hidden=cfg.hidden, activation=cfg.activation,
                   vocab_size=vocab_size, pad_id=pad_id)
  x0 = jnp.asarray(x[:2])
  probe = jax.eval_shape(
      lambda p: net.apply({'params': p}, x0, train=False),
      nets.init_selector(net, k_init, x0))
  if int(np.prod(probe.shape)) != 2 * d * c:
    raise ValueError(f'net must return [batch, d={d}, c={c}] values, got '
                     f'{probe.shape} for a batch of 2.')
  params = _stack_init(net, k_init, x0, members)
  data = {'x': x, 'grand': grand}
  if objective == 'regression':
    if targets is None:
      raise ValueError("objective='regression' needs targets=[n, d, c] "
                       'Shapley values of the rows of x.')
    t = np.asarray(targets, np.float32)
    if t.shape != (n, d, c):
      raise ValueError(f'targets must have shape [n, d, c] = {(n, d, c)}, '
                       f'got {t.shape}.')
    if not np.all(np.isfinite(t)):
      raise ValueError('targets hold NaN or inf.')
    data['phi'] = t
    loss_fn = regression_loss(net, null, groups, normalization=normalization,
                              modality=modality, pad_id=pad_id)
  else:
    if targets is not None:
      raise ValueError("targets are only used by objective='regression'.")
    loss_fn = fastshap_loss(
        net, game, baseline, null, groups, space=space,
        num_samples=num_samples, paired=bool(cfg.paired),
        normalization=normalization, modality=modality, pad_id=pad_id,
        members=members, member_coalitions=member_coalitions)
  steps_per_call = _checks.check_int('steps_per_call', cfg.steps_per_call)
  if cfg.checkpoint_every is not None:
    every = _checks.check_int('checkpoint_every', cfg.checkpoint_every)
  else:
    every = train.default_checkpoint_every(num_steps, steps_per_call)
  if num_steps > 0:
    state, history = train.fit(
        loss_fn, params, data, tx=tx, key=k_train, batch_size=batch_size,
        num_steps=num_steps, workdir=workdir, checkpoint_every=every,
        log_every=_checks.check_int('log_every', cfg.log_every),
        steps_per_call=steps_per_call)
    params = jax.device_get(state.params)
  explainer = FastSHAPExplainer(
      params=params, game=game, model=box, baseline=baseline, null=null,
      groups=groups, net=net, modality=modality, space=space,
      normalization=normalization, value=value, num_classes=c,
      ensemble_size=k, pad_id=pad_id, chunk_size=chunk)
  return (explainer, dict(history)) if return_history else explainer


# ----------------------------------------------------------------------------
# Explanations.


def _check_explainer(explainer: Any) -> FastSHAPExplainer:
  if not isinstance(explainer, FastSHAPExplainer):
    raise ValueError(f'explainer must be a FastSHAPExplainer (from '
                     f'fastshap.fit), got {type(explainer).__name__}.')
  return explainer


def _check_input(explainer: FastSHAPExplainer, x: Any) -> Array:
  x = _checks.check_model_input(explainer.model, x)
  return x


@functools.partial(jax.jit, static_argnames=('members',))
def _attributions_jit(e: FastSHAPExplainer, x: Array, members: bool
                      ) -> tuple[Array, Array]:
  d, c = e.groups.num_groups, e.num_classes

  def chunk_fn(xc):
    raw = e.game.apply_fn(e.game.params, xc)
    grand = bb.to_space(raw, e.game.output, e.space)
    active = active_players(xc, e.modality, d, e.pad_id)
    phi = jax.vmap(lambda p: normalize(_net_phi(e.net, p, xc, d, c),
                                       grand - e.null, active,
                                       e.normalization))(e.params)
    phi = jnp.moveaxis(phi, 0, 1)                          # [b, k, d, c]
    if not members:
      phi = jnp.mean(phi, axis=1)
    return phi, raw

  phi, raw = bb.map_batches(chunk_fn, x, e.chunk_size)
  if members:
    phi = jnp.moveaxis(phi, 1, 0)                          # [k, b, d, c]
  return phi, raw


def attributions(explainer: FastSHAPExplainer, x: Any, *,
                 members: bool = False, return_outputs: bool = False
                 ) -> Array | tuple[Array, Array]:
  """Shapley values of every output: `[batch, d, c]` (the members' mean),
  or `[k, batch, d, c]` per member with `members=True`.

  One explainer inference and one game inference (v(1), for the efficiency
  normalisation) per row, jitted, `chunk_size` rows per call. With
  `return_outputs`, also the game's raw outputs on x `[batch, c]` (the
  black box's own outputs for `value='baseline'`), for `target_classes`.
  """
  e = _check_explainer(explainer)
  x = _check_input(e, x)
  phi, raw = _attributions_jit(e, x, bool(members))
  return (phi, raw) if return_outputs else phi


def target_classes(explainer: FastSHAPExplainer, x: Any, target: Any = None,
                   outputs: Array | None = None) -> Array:
  """The explained class per row, int32 `[batch]`.

  `target` None: the black box's predicted class, from `outputs` (the raw
  game outputs of `attributions(..., return_outputs=True)`, which are the
  black box's for `value='baseline'`: no further model call) or, for a
  surrogate game, one black-box forward pass.
  """
  e = _check_explainer(explainer)
  x = _check_input(e, x)
  if target is None and (outputs is None or e.value != 'baseline'):
    outputs = bb.forward_in_chunks(e.model, x, e.chunk_size)
  return bb.resolve_target(outputs, target, x.shape[0],
                           num_outputs=e.num_classes, model=e.model.name)


def explain(explainer: FastSHAPExplainer, x: Any, *, key: Any = None,
            target: Any = None, members: bool = False
            ) -> protocol.Explanation:
  """FastSHAP explanations of `x` for one output per row.

  Args:
    explainer: from `fit`.
    x: `[batch, *input_shape]`.
    key: unused (one deterministic forward pass); checked like every key.
    target: None (the black box's predicted class), an int, or int
      `[batch]`.
    members: return every member's scores `[k, batch, d]` instead of the
      ensemble mean.
  Returns:
    `Explanation(scores=[batch, d])` (or `[k, batch, d]`): the Shapley value
    of each group for the target output, in `explainer.space`; rows sum to
    `v(1) - v(0)` with the additive normalisation.
  Raises:
    ValueError: a bad x, target or key.
  """
  e = _check_explainer(explainer)
  _checks.as_key('key', key, default_seed=0)
  x = _check_input(e, x)
  bb.check_target(e.model, target, x.shape[0])
  phi, raw = _attributions_jit(e, x, bool(members))
  t = target_classes(e, x, target, raw)
  if members:
    scores = jnp.take_along_axis(phi, t[None, :, None, None], axis=-1)[..., 0]
  else:
    scores = jnp.take_along_axis(phi, t[:, None, None], axis=-1)[..., 0]
  return protocol.Explanation(scores=scores)


__all__ = [
    'FastSHAPExplainer', 'MEMBER_COALITIONS', 'MODALITIES',
    'NORMALIZATIONS', 'OBJECTIVES', 'VALUES', 'active_players',
    'attributions', 'default_config', 'explain', 'fastshap_loss', 'fit',
    'game_values', 'make_net', 'normalize', 'regression_loss',
    'target_classes',
]
