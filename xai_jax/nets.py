"""Flax linen explainer networks: selectors and approximators.

Learned explainers (L2X, REAL-X, LTX, FastSHAP, ...) are made of two kinds of
small networks, shared here so that every method builds on the same pieces:

* a **selector** `x[batch, *input_shape] -> logits[batch, num_groups]`, one
  score per feature group (tabular feature, image patch, token); a relaxed
  top-k sampler of `xai_jax.relax` turns the logits into a mask.
* an **approximator** (L2X's variational family q, REAL-X's predictor, an
  EVAL-X evaluator) `(x[batch, *input_shape], mask[batch, *input_shape]) ->
  logits[batch, num_classes]` that predicts from the masked input only. Masks
  are input shaped (expand a group mask with `FeatureGroups.expand` first) and
  may be relaxed (values in [0, 1]).

Call shapes, for every module of this file::

    selector.apply({'params': p}, x, train=False, rngs=...) -> [batch, d]
    approximator.apply({'params': p, **state}, x, mask, train=False)
        -> [batch, num_classes]

`train=True` enables dropout (pass `rngs={'dropout': key}`) and BatchNorm batch
statistics (pass `mutable=['batch_stats']`).

L2 regularisation: each module lists the layers whose kernels the reference
implementation regularises in `l2_layers` (a class attribute, e.g. L2X's
synthetic nets: the selector's two hidden layers; the approximator's hidden
layers and output layer); `l2_penalty(module, params)` sums their squared
kernels (Keras' `regularizers.l2(lam)` adds `lam * sum(w ** 2)` to the loss).

Initialisers follow Keras (the reference code): Glorot-uniform kernels, zero
biases, embeddings U(-0.05, 0.05), BatchNorm momentum 0.99 and epsilon 1e-3.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from xai_jax import _checks
from xai_jax import masking

Array = jax.Array
PyTree = Any

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    'relu': nn.relu, 'selu': nn.selu, 'gelu': nn.gelu, 'tanh': jnp.tanh,
    'elu': nn.elu}
MODALITIES = ('tabular', 'image', 'text')

# A finite, very negative logit for positions that must never be selected
# (PAD tokens): exp((PAD_LOGIT + g) / tau) underflows to exactly 0 for any
# tau <= 1 and Gumbel noise, yet an all-PAD row still gives finite softmaxes.
PAD_LOGIT = -1e9

_kernel_init = nn.initializers.glorot_uniform()  # Keras' default


def _embed_init(key: Array, shape: Sequence[int], dtype: Any = jnp.float32
                ) -> Array:
  """Keras' Embedding initialiser: U(-0.05, 0.05)."""
  return jax.random.uniform(key, shape, dtype, -0.05, 0.05)


def _act(name: str) -> Callable[[Array], Array]:
  _checks.check_choice('activation', name, ACTIVATIONS)
  return ACTIVATIONS[name]


class BatchNorm(nn.Module):
  """Batch normalisation over the leading axis (Ioffe & Szegedy, 2015).

  Keras' `BatchNormalization()` as used by the L2X reference: with
  `train=True` normalise by the batch mean and (biased) variance and update
  the running averages `r <- momentum * r + (1 - momentum) * batch_stat`;
  with `train=False` use the running averages. Params 'scale', 'bias';
  state 'batch_stats' {'mean', 'var'} (the layout of `flax.linen.BatchNorm`).
  A lean version of `nn.BatchNorm` (one fused pass for both moments), which
  compiles ~2x faster on CPU.

  Attributes:
    momentum: running-average momentum (Keras 0.99).
    epsilon: added to the variance (Keras 1e-3).
  """

  momentum: float = 0.99
  epsilon: float = 1e-3

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    f = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (f,), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (f,), jnp.float32)
    ra_mean = self.variable('batch_stats', 'mean', jnp.zeros, (f,),
                            jnp.float32)
    ra_var = self.variable('batch_stats', 'var', jnp.ones, (f,), jnp.float32)
    if train:
      axes = tuple(range(x.ndim - 1))
      mean = jnp.mean(x, axis=axes)
      var = jnp.maximum(jnp.mean(jnp.square(x), axis=axes) - jnp.square(mean),
                        0.0)
      if not self.is_initializing():
        m = self.momentum
        ra_mean.value = m * ra_mean.value + (1 - m) * lax_stop(mean)
        ra_var.value = m * ra_var.value + (1 - m) * lax_stop(var)
    else:
      mean, var = ra_mean.value, ra_var.value
    return (x - mean) * (scale * jax.lax.rsqrt(var + self.epsilon)) + bias


def lax_stop(x: Array) -> Array:
  return jax.lax.stop_gradient(x)


def _batch_norm(train: bool, name: str) -> nn.Module:
  del train
  # Keras BatchNormalization defaults (momentum 0.99, epsilon 1e-3).
  return BatchNorm(momentum=0.99, epsilon=1e-3, name=name)


def l2_penalty(module: nn.Module, params: PyTree) -> Array:
  """Sum of squared kernels of `module.l2_layers`: `sum_l ||W_l||_F^2`.

  Multiply by lambda and add to the loss (Keras `regularizers.l2(lambda)`, the
  L2X reference: lambda = 1e-3). Layers a module does not regularise
  (biases, BatchNorm, embeddings unless listed) are left out.

  Args:
    module: a module of this file (or any module with an `l2_layers` tuple of
      top-level submodule names).
    params: the module's `params` collection.

  Returns:
    A float32 scalar `[]` (0 when `l2_layers` is empty).
  """
  total = jnp.zeros((), jnp.float32)
  for name in getattr(module, 'l2_layers', ()):
    if name in params:
      total = total + jnp.sum(jnp.square(params[name]['kernel']))
  return total


# ----------------------------------------------------------------------------
# Tabular.


class MLPSelector(nn.Module):
  """L2X's synthetic-data selector: `x[batch, ...] -> logits[batch, num_groups]`.

  Dense(100) -> act -> Dense(100) -> act -> Dense(num_groups) (`synthetic/
  explain.py` of the reference code; inputs are flattened). The hidden layers
  are L2 regularised in the reference (`l2_layers`); the logits layer is not.

  Attributes:
    num_groups: d, the number of logits (features or groups).
    hidden: hidden widths.
    activation: 'relu' (L2X: XOR, orange skin) or 'selu' (additive, switch),
      or another key of `ACTIVATIONS`.
  """

  num_groups: int
  hidden: Sequence[int] = (100, 100)
  activation: str = 'relu'
  l2_layers: ClassVar[tuple[str, ...]] = ('hidden0', 'hidden1')

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    del train
    act = _act(self.activation)
    h = x.reshape((x.shape[0], -1)).astype(jnp.float32)
    for i, width in enumerate(self.hidden):
      h = act(nn.Dense(width, kernel_init=_kernel_init, name=f'hidden{i}')(h))
    return nn.Dense(self.num_groups, kernel_init=_kernel_init,
                    name='logits')(h)


class MLPApproximator(nn.Module):
  """L2X's synthetic-data approximator q(y | x_S): `(x, mask) -> logits`.

  `x * mask` (Eq. 6: unselected features set to 0) -> [Dense(200) -> act ->
  BatchNorm] x 2 -> Dense(num_classes). As the reference code (Keras
  `Dense(200, activation=act)` followed by `BatchNormalization()`), the
  activation comes before the BatchNorm. All Dense kernels (hidden and
  output) are L2 regularised in the reference (`l2_layers`).

  Attributes:
    num_classes: number of outputs (logits).
    hidden: hidden widths.
    activation: key of `ACTIVATIONS`.
    batch_norm: BatchNorm after each hidden layer (state in 'batch_stats').
  """

  num_classes: int
  hidden: Sequence[int] = (200, 200)
  activation: str = 'relu'
  batch_norm: bool = True
  l2_layers: ClassVar[tuple[str, ...]] = ('hidden0', 'hidden1', 'head')

  @nn.compact
  def __call__(self, x: Array, mask: Array, train: bool = False) -> Array:
    act = _act(self.activation)
    h = masking.apply_mask(x.astype(jnp.float32), mask, 0.0)
    h = h.reshape((h.shape[0], -1))
    for i, width in enumerate(self.hidden):
      h = act(nn.Dense(width, kernel_init=_kernel_init, name=f'hidden{i}')(h))
      if self.batch_norm:
        h = _batch_norm(train, f'bn{i}')(h, train=train)
    return nn.Dense(self.num_classes, kernel_init=_kernel_init,
                    name='head')(h)


# ----------------------------------------------------------------------------
# Images.


class PatchSelector(nn.Module):
  """One logit per patch of a `patch_groups` grid: `[b, H, W, C] -> [b, gh*gw]`.

  Conv3x3(features[0]) -> act -> Conv3x3(features[1]) -> act at full
  resolution, average-pooled to the patch grid (window = stride = patch),
  then a grid-level Conv3x3(context) -> act (so a cell sees its neighbours,
  e.g. the other cells of a pattern) and a 1x1 conv to one logit per cell.
  Logits are returned row-major over the grid, the group order of
  `masking.patch_groups`.

  Attributes:
    patch: `(ph, pw)` patch size in pixels; must divide H and W.
    features: conv widths at pixel level.
    context: width of the grid-level conv.
    activation: key of `ACTIVATIONS`.
  """

  patch: tuple[int, int]
  features: Sequence[int] = (32, 32)
  context: int = 64
  activation: str = 'relu'
  l2_layers: ClassVar[tuple[str, ...]] = ()

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    del train
    act = _act(self.activation)
    h = x.astype(jnp.float32)
    if h.ndim == 3:
      h = h[..., None]
    ph, pw = self.patch
    if h.shape[1] % ph or h.shape[2] % pw:
      raise ValueError(f'patch={self.patch} does not divide the image size '
                       f'{h.shape[1]}x{h.shape[2]}.')
    for i, f in enumerate(self.features):
      h = act(nn.Conv(f, (3, 3), kernel_init=_kernel_init, name=f'conv{i}')(h))
    h = nn.avg_pool(h, (ph, pw), strides=(ph, pw))       # [b, gh, gw, F]
    h = act(nn.Conv(self.context, (3, 3), kernel_init=_kernel_init,
                    name='context')(h))
    logits = nn.Conv(1, (1, 1), kernel_init=_kernel_init, name='logits')(h)
    return logits.reshape((logits.shape[0], -1))


class ConvApproximator(nn.Module):
  """A small CNN on masked images: `(x[b, H, W, C], mask) -> logits[b, c]`.

  `x * mask` -> [Conv3x3 -> act -> 2x2 max-pool] per entry of `features` ->
  Dense(dense) -> act -> Dense(num_classes).

  Attributes:
    num_classes: number of outputs.
    features: conv widths.
    dense: hidden width of the classifier head.
    activation: key of `ACTIVATIONS`.
  """

  num_classes: int
  features: Sequence[int] = (32, 64)
  dense: int = 128
  activation: str = 'relu'
  l2_layers: ClassVar[tuple[str, ...]] = ()

  @nn.compact
  def __call__(self, x: Array, mask: Array, train: bool = False) -> Array:
    del train
    act = _act(self.activation)
    h = masking.apply_mask(x.astype(jnp.float32), mask, 0.0)
    if h.ndim == 3:
      h = h[..., None]
    for i, f in enumerate(self.features):
      h = act(nn.Conv(f, (3, 3), kernel_init=_kernel_init, name=f'conv{i}')(h))
      h = nn.max_pool(h, (2, 2), strides=(2, 2))
    h = h.reshape((h.shape[0], -1))
    h = act(nn.Dense(self.dense, kernel_init=_kernel_init, name='hidden0')(h))
    return nn.Dense(self.num_classes, kernel_init=_kernel_init,
                    name='head')(h)


# ----------------------------------------------------------------------------
# Text.


class TextSelector(nn.Module):
  """L2X's word-level selector: `tokens int[b, L] -> logits[b, L]`.

  Reference `construct_gumbel_selector` (`imdb-word/explain.py`):
  Embedding -> Conv1D(filters, 3, same) -> relu = `first`;
  global: max-pool(first) over positions -> Dense(hidden) -> relu, tiled over
  positions; local: Conv1D(filters, 3) -> relu -> Conv1D(filters, 3) -> relu;
  concat -> dropout -> Conv1D(hidden, 1) -> relu -> Conv1D(1, 1) = logits.
  PAD positions (`tokens == pad_id`) get `PAD_LOGIT` (never selected by any
  sampler unless a row has fewer than k tokens) and are left out of the
  global max-pool.

  Attributes:
    vocab_size: V, token ids in [0, V).
    embed_dim: embedding width (50 in the reference).
    filters: conv widths (100).
    hidden: global dense and 1x1 conv width (100).
    kernel: conv kernel size (3).
    dropout: rate of the dropout after the concat (0.2), active with
      `train=True` (needs `rngs={'dropout': key}`).
    pad_id: the PAD token id.
  """

  vocab_size: int
  embed_dim: int = 50
  filters: int = 100
  hidden: int = 100
  kernel: int = 3
  dropout: float = 0.2
  pad_id: int = 0
  l2_layers: ClassVar[tuple[str, ...]] = ()

  @nn.compact
  def __call__(self, tokens: Array, train: bool = False) -> Array:
    valid = (tokens != self.pad_id)[..., None].astype(jnp.float32)  # [b,L,1]
    e = nn.Embed(self.vocab_size, self.embed_dim, embedding_init=_embed_init,
                 name='embed')(tokens)
    conv = lambda f, k, name: nn.Conv(f, (k,), padding='SAME',
                                      kernel_init=_kernel_init, name=name)
    first = nn.relu(conv(self.filters, self.kernel, 'conv1')(e))
    pooled = jnp.max(first * valid, axis=1)                 # relu >= 0
    glob = nn.relu(nn.Dense(self.hidden, kernel_init=_kernel_init,
                            name='global_dense')(pooled))
    glob = jnp.broadcast_to(glob[:, None, :],
                            (tokens.shape[0], tokens.shape[1], self.hidden))
    local = nn.relu(conv(self.filters, self.kernel, 'conv2')(first))
    local = nn.relu(conv(self.filters, self.kernel, 'conv3')(local))
    h = jnp.concatenate([glob, local], axis=-1)
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    h = nn.relu(conv(self.hidden, 1, 'conv_last')(h))
    logits = conv(1, 1, 'logits')(h)[..., 0]
    return jnp.where(valid[..., 0] > 0, logits, PAD_LOGIT)


class TextApproximator(nn.Module):
  """L2X's word-level approximator: `(tokens int[b, L], mask[b, L]) -> logits`.

  Its own Embedding, times the mask (and zero for PAD) -> sum over positions
  / k (the reference's `Mean` layer divides by k even when a relaxed mask
  sums to less) -> Dense(hidden) -> relu -> Dense(num_classes).

  Attributes:
    vocab_size: V.
    num_classes: number of outputs.
    k: the divisor of the pooled sum (L2X's number of selected words).
    embed_dim: embedding width (50).
    hidden: hidden width (250).
    pad_id: the PAD token id.
  """

  vocab_size: int
  num_classes: int
  k: int
  embed_dim: int = 50
  hidden: int = 250
  pad_id: int = 0
  l2_layers: ClassVar[tuple[str, ...]] = ()

  @nn.compact
  def __call__(self, tokens: Array, mask: Array, train: bool = False
               ) -> Array:
    del train
    valid = (tokens != self.pad_id).astype(jnp.float32)
    e = nn.Embed(self.vocab_size, self.embed_dim, embedding_init=_embed_init,
                 name='embed')(tokens)
    w = (mask.astype(jnp.float32) * valid)[..., None]
    h = jnp.sum(e * w, axis=1) / float(self.k)
    h = nn.relu(nn.Dense(self.hidden, kernel_init=_kernel_init,
                         name='hidden0')(h))
    return nn.Dense(self.num_classes, kernel_init=_kernel_init,
                    name='head')(h)


# ----------------------------------------------------------------------------
# Factories.


def _patch_of(groups: masking.FeatureGroups) -> tuple[int, int]:
  if groups is None or groups.grid_shape is None:
    raise ValueError("modality='image' needs patch groups "
                     '(masking.patch_groups) for its PatchSelector; got '
                     f'groups of kind {getattr(groups, "kind", None)!r}.')
  gh, gw = groups.grid_shape
  h, w = groups.input_shape[:2]
  return (h // gh, w // gw)


def make_selector(modality: str, *, num_groups: int,
                  groups: masking.FeatureGroups | None = None,
                  activation: str = 'relu', vocab_size: int | None = None,
                  **kwargs: Any) -> nn.Module:
  """The default selector of a modality (`x -> logits[batch, num_groups]`).

  Args:
    modality: 'tabular' (`MLPSelector`), 'image' (`PatchSelector` over the
      grid of `groups`) or 'text' (`TextSelector`, one logit per token).
    num_groups: d, the number of logits.
    groups: the feature groups (needed for 'image': a patch grid).
    activation: key of `ACTIVATIONS` ('tabular' and 'image').
    vocab_size: V (needed for 'text').
    **kwargs: further fields of the module (e.g. `hidden=(64, 64)`).

  Returns:
    An unbound linen module.
  """
  _checks.check_choice('modality', modality, MODALITIES)
  _checks.check_choice('activation', activation, ACTIVATIONS)
  if modality == 'tabular':
    return MLPSelector(num_groups=int(num_groups), activation=activation,
                       **kwargs)
  if modality == 'image':
    patch = _patch_of(groups)
    if groups.num_groups != num_groups:
      raise ValueError(f'num_groups={num_groups} does not match the patch grid '
                       f'{groups.grid_shape} ({groups.num_groups} groups).')
    return PatchSelector(patch=patch, activation=activation, **kwargs)
  if vocab_size is None or int(vocab_size) <= 1:
    raise ValueError(f"modality='text' needs vocab_size > 1, got {vocab_size!r}.")
  return TextSelector(vocab_size=int(vocab_size), **kwargs)


def make_approximator(modality: str, *, num_classes: int,
                      k: int | None = None, activation: str = 'relu',
                      vocab_size: int | None = None,
                      **kwargs: Any) -> nn.Module:
  """The default approximator of a modality (`(x, mask) -> logits[b, c]`).

  Args:
    modality: 'tabular' (`MLPApproximator`), 'image' (`ConvApproximator`) or
      'text' (`TextApproximator`).
    num_classes: number of outputs.
    k: the number of selected groups (the divisor of 'text's mean).
    activation: key of `ACTIVATIONS` ('tabular' and 'image').
    vocab_size: V (needed for 'text').
    **kwargs: further fields of the module.

  Returns:
    An unbound linen module.
  """
  _checks.check_choice('modality', modality, MODALITIES)
  _checks.check_choice('activation', activation, ACTIVATIONS)
  if modality == 'tabular':
    return MLPApproximator(num_classes=int(num_classes), activation=activation,
                           **kwargs)
  if modality == 'image':
    return ConvApproximator(num_classes=int(num_classes),
                            activation=activation, **kwargs)
  if vocab_size is None or int(vocab_size) <= 1:
    raise ValueError(f"modality='text' needs vocab_size > 1, got {vocab_size!r}.")
  if k is None or int(k) <= 0:
    raise ValueError(f"modality='text' needs k > 0, got {k!r}.")
  return TextApproximator(vocab_size=int(vocab_size),
                          num_classes=int(num_classes), k=int(k), **kwargs)


def init_selector(module: nn.Module, key: Array, x: Array) -> PyTree:
  """Initial `params` of a selector for example inputs `x[batch, ...]`."""
  return module.init({'params': key}, x, train=False)['params']


def init_approximator(module: nn.Module, key: Array, x: Array,
                      mask: Array) -> tuple[PyTree, PyTree]:
  """Initial `(params, model_state)` of an approximator.

  Args:
    module: the approximator.
    key: PRNG key.
    x: example inputs `[batch, *input_shape]`.
    mask: example masks `[batch, *input_shape]`.

  Returns:
    `params` and the non-trainable collections (`{'batch_stats': ...}` or
    `{}`).
  """
  variables = dict(module.init({'params': key}, x, mask, train=False))
  params = variables.pop('params')
  return params, variables


__all__ = [
    'ACTIVATIONS', 'BatchNorm', 'ConvApproximator', 'MLPApproximator', 'MLPSelector',
    'MODALITIES', 'PAD_LOGIT', 'PatchSelector', 'TextApproximator',
    'TextSelector', 'init_approximator', 'init_selector', 'l2_penalty',
    'make_approximator', 'make_selector',
]
