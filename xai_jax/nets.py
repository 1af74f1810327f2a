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

import itertools
from typing import Any, Callable, ClassVar, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from xai_jax import _checks
from xai_jax import masking

Array = jax.Array
PyTree = Any

_SELU_SCALE = 1.0507009873554804934193349852946
_SELU_ALPHA = 1.6732632423543772848170429916717


@jax.custom_jvp
def selu(x: Array) -> Array:
  """SELU (Klambauer et al. 2017, Eq. 2), `x [...] -> [...]`.

  `scale * (x if x > 0 else alpha * (exp(x) - 1))`, the same values as
  `flax.linen.selu`; the derivative is taken from the output
  (`scale * alpha * exp(x) = y + scale * alpha` for x <= 0), so the backward
  pass evaluates no second exponential (~20% faster forward + backward on
  CPU).
  """
  return _SELU_SCALE * jnp.where(
      x > 0, x, _SELU_ALPHA * jnp.expm1(jnp.minimum(x, 0)))


@selu.defjvp
def _selu_jvp(primals: tuple[Array], tangents: tuple[Array]
              ) -> tuple[Array, Array]:
  (x,), (dx,) = primals, tangents
  y = selu(x)
  slope = jnp.where(x > 0, _SELU_SCALE, y + _SELU_SCALE * _SELU_ALPHA)
  return y, slope * dx


ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    'relu': nn.relu, 'selu': selu, 'gelu': nn.gelu, 'tanh': jnp.tanh,
    'elu': nn.elu}
MODALITIES = ('tabular', 'image', 'text')

# A finite, very negative logit for positions that must never be selected
# (PAD tokens): exp((PAD_LOGIT + g) / tau) underflows to exactly 0 for any
# tau <= 1 and Gumbel noise, yet an all-PAD row still gives finite softmaxes.
PAD_LOGIT = -1e9

_kernel_init = nn.initializers.glorot_uniform()  # Keras' default


def max_pool_2x2(x: Array) -> Array:
  """2x2 max pooling with stride 2 and VALID padding: `[b, H, W, C] ->
  [b, H // 2, W // 2, C]`, the outputs of `nn.max_pool(x, (2, 2), (2, 2))`.

  Written as a reshape and a max: its gradient on XLA:CPU is 3.5x faster
  than max_pool's select-and-scatter (14x14x64 maps, 640 rows: 42 ms
  against 148 ms), which dominates per-sample optimisations through a
  CNN (IBA) and every gradient method. At exact ties the gradient is
  shared among the tied inputs instead of going to the first.
  """
  b, h, w, c = x.shape
  h2, w2 = h // 2, w // 2
  x = x[:, :2 * h2, :2 * w2]
  return x.reshape(b, h2, 2, w2, 2, c).max(axis=(2, 4))


class PatchConv(nn.Module):
  """A convolution written as patch extraction and one matmul: the outputs
  of `nn.Conv(features, (kernel,) * s, strides=(stride,) * s,
  padding=[(padding, padding)] * s)` on `[batch, *spatial, C]` (s = 1 or
  2 spatial axes), with its parameters laid out as `kernel [kernel^s * C,
  features]` and `bias [features]`.

  On XLA:CPU the gradients of a strided `lax.conv` are slow (a 4x4 stride-2
  conv 64 -> 128 on 32 maps of 14x14: 65 ms for the weight gradient, 72 ms
  for the input gradient, 9x its forward pass); as strided slices and a
  matmul they take 18 ms and 8 ms. Used by InputIBA's critic, which takes
  140 gradient steps per explained example.
  """

  features: int
  kernel: int
  stride: int = 1
  padding: int = 0

  @nn.compact
  def __call__(self, x: Array) -> Array:
    s = x.ndim - 2
    k, st, p = self.kernel, self.stride, self.padding
    w = self.param('kernel', nn.initializers.lecun_normal(),
                   (k ** s * x.shape[-1], self.features))
    b = self.param('bias', nn.initializers.zeros, (self.features,))
    xp = jnp.pad(x, [(0, 0)] + [(p, p)] * s + [(0, 0)])
    outs = [(xp.shape[1 + a] - k) // st + 1 for a in range(s)]
    cols = []
    for off in itertools.product(range(k), repeat=s):
      idx = tuple(slice(o, o + st * (n - 1) + 1, st)
                  for o, n in zip(off, outs))
      cols.append(xp[(slice(None),) + idx])
    return jnp.concatenate(cols, axis=-1) @ w + b


def _embed_init(key: Array, shape: Sequence[int], dtype: Any = jnp.float32
                ) -> Array:
  """Keras' Embedding initialiser: U(-0.05, 0.05)."""
  return jax.random.uniform(key, shape, dtype, -0.05, 0.05)


def _act(name: str) -> Callable[[Array], Array]:
  _checks.check_choice('activation', name, ACTIVATIONS)
  return ACTIVATIONS[name]


def _batch_norm(train: bool, name: str) -> nn.BatchNorm:
  # Keras BatchNormalization defaults (momentum 0.99, epsilon 1e-3).
  return nn.BatchNorm(use_running_average=not train, momentum=0.99,
                      epsilon=1e-3, name=name)


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
    num_outputs: 0 (a selector: `[batch, num_groups]`) or c > 0: c values
      per group, `[batch, num_groups, c]` (an amortized attribution network,
      e.g. FastSHAP's `phi(x)` for c classes).
  """

  num_groups: int
  hidden: Sequence[int] = (100, 100)
  activation: str = 'relu'
  num_outputs: int = 0
  l2_layers: ClassVar[tuple[str, ...]] = ('hidden0', 'hidden1')

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    del train
    act = _act(self.activation)
    h = x.reshape((x.shape[0], -1)).astype(jnp.float32)
    for i, width in enumerate(self.hidden):
      h = act(nn.Dense(width, kernel_init=_kernel_init, name=f'hidden{i}')(h))
    c = max(int(self.num_outputs), 1)
    out = nn.Dense(self.num_groups * c, kernel_init=_kernel_init,
                   name='logits')(h)
    if self.num_outputs:
      return out.reshape((out.shape[0], self.num_groups, c))
    return out


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

  def masked_input(self, x: Array, mask: Array) -> Array:
    """What the network sees: `x * mask` (Eq. 6; subclasses may impute)."""
    return masking.apply_mask(x.astype(jnp.float32), mask, 0.0)

  @nn.compact
  def __call__(self, x: Array, mask: Array, train: bool = False) -> Array:
    act = _act(self.activation)
    h = self.masked_input(x, mask)
    h = h.reshape((h.shape[0], -1))
    for i, width in enumerate(self.hidden):
      h = act(nn.Dense(width, kernel_init=_kernel_init, name=f'hidden{i}')(h))
      if self.batch_norm:
        h = _batch_norm(train, f'bn{i}')(h)
    return nn.Dense(self.num_classes, kernel_init=_kernel_init,
                    name='head')(h)


class MarginalImputingApproximator(MLPApproximator):
  """L2X's tabular approximator with unselected features *imputed*, not zeroed.

  `x_tilde = V * x + (1 - V) * x_other`, where `x_other` holds the same
  features of another row of the batch (the batch rolled by one row: a draw
  from the data's marginal when the rows are shuffled), then L2X's
  [Dense(200) -> act -> BatchNorm] x 2 -> Dense(c) (`MLPApproximator`).
  With zeros (L2X Eq. 6) the approximator sees *which* features were
  selected and can decode a label or a regime from the selection pattern
  (REAL-X, Jethani et al. 2021: the selector then need not select the
  informative feature itself, e.g. X10 of the switch set); imputed values
  are indistinguishable from real ones, so only the selected values carry
  information. Needs batches of at least 2 rows; an explanation (the
  selector's top-k) does not use the approximator.

  Attributes: those of `MLPApproximator`.
  """

  def masked_input(self, x: Array, mask: Array) -> Array:
    """`mask * x + (1 - mask) * roll(x, 1, axis=0)`, `[batch, *input_shape]`."""
    x = x.astype(jnp.float32)
    m = jnp.broadcast_to(mask.astype(jnp.float32), x.shape)
    return m * x + (1.0 - m) * jnp.roll(x, 1, axis=0)


# ----------------------------------------------------------------------------
# Images.


class PatchSelector(nn.Module):
  """One logit per patch of a `patch_groups` grid: `[b, H, W, C] -> [b, gh*gw]`.

  Conv3x3(features[0]) -> act -> [2x2 max-pool when `downsample` and the
  patch is even] -> Conv3x3(features[1]) -> act, average-pooled to the patch
  grid (window = stride = the remaining patch size),
  then a grid-level Conv3x3(context) -> act (so a cell sees its neighbours,
  e.g. the other cells of a pattern) and a 1x1 conv to one logit per cell.
  Logits are returned row-major over the grid, the group order of
  `masking.patch_groups`.

  Attributes:
    patch: `(ph, pw)` patch size in pixels; must divide H and W.
    features: conv widths at pixel level.
    context: width of the grid-level conv (0: none, so each logit sees only
      its own patch).
    activation: key of `ACTIVATIONS`.
    downsample: pool 2x2 after the first conv when both patch sides are
      even (4x fewer multiply-adds in the second conv, the bulk of the cost
      on CPU; the logits still see every pixel of their patch).
    num_outputs: 0 (one logit per cell, `[b, gh*gw]`) or c > 0 (c values per
      cell, `[b, gh*gw, c]`, an amortized attribution network).
  """

  patch: tuple[int, int]
  features: Sequence[int] = (16, 32)
  context: int = 64
  downsample: bool = True
  activation: str = 'relu'
  num_outputs: int = 0
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
    pool = (self.downsample and len(self.features) > 0 and ph % 2 == 0
            and pw % 2 == 0)
    for i, f in enumerate(self.features):
      h = act(nn.Conv(f, (3, 3), kernel_init=_kernel_init, name=f'conv{i}')(h))
      if pool and i == 0:
        h = max_pool_2x2(h)
    if pool:
      ph, pw = ph // 2, pw // 2
    h = nn.avg_pool(h, (ph, pw), strides=(ph, pw))       # [b, gh, gw, F]
    if self.context:
      h = act(nn.Conv(self.context, (3, 3), kernel_init=_kernel_init,
                      name='context')(h))
    c = max(int(self.num_outputs), 1)
    logits = nn.Conv(c, (1, 1), kernel_init=_kernel_init, name='logits')(h)
    if self.num_outputs:
      return logits.reshape((logits.shape[0], -1, c))
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
  features: Sequence[int] = (16, 32)
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
      h = max_pool_2x2(h)
    h = h.reshape((h.shape[0], -1))
    h = act(nn.Dense(self.dense, kernel_init=_kernel_init, name='hidden0')(h))
    return nn.Dense(self.num_classes, kernel_init=_kernel_init,
                    name='head')(h)


class BlackBoxApproximator(nn.Module):
  """The explained model itself as the approximator: `(x, mask) -> log f(x * mask)`.

  L2X's objective (Eq. 6) is a variational lower bound of I(X_S; Y) for any
  family q; this module fixes q to the black box on the masked input,
  `q(y | x_S) = f(x * mask)_y`, so the selector is trained to keep the groups
  on which the model alone keeps its prediction -- exactly what post-hoc
  accuracy measures -- and cannot pass the class to a co-trained decoder
  through *where* it selects (the encoding REAL-X warns about; the black
  box was never trained on masked inputs).

  The box's parameters are not trained: they live in the non-trainable
  collection 'box' (`{'box': {'params': box.params}}`, see `box_variables`),
  so `apply` returns the black box's own log-probabilities.

  Attributes:
    apply_fn: the black box's pure `(params, x) -> outputs` (static).
    output: what `apply_fn` returns ('logits', 'probs' or 'log_probs').
    num_classes: size of the output.
  """

  apply_fn: Callable[[PyTree, Array], Array]
  output: str
  num_classes: int
  l2_layers: ClassVar[tuple[str, ...]] = ()

  @nn.compact
  def __call__(self, x: Array, mask: Array, train: bool = False) -> Array:
    del train
    if not self.has_variable('box', 'params'):
      if self.is_initializing():
        return jnp.zeros((x.shape[0], self.num_classes), jnp.float32)
      raise ValueError("BlackBoxApproximator needs the box's parameters in "
                       "the 'box' collection: apply({'params': {}, "
                       "**nets.box_variables(box)}, x, mask).")
    h = masking.apply_mask(x.astype(jnp.float32), mask, 0.0)
    out = self.apply_fn(self.get_variable('box', 'params'), h)
    if self.output == 'probs':
      return jnp.log(jnp.clip(out, 1e-30, None))
    return out  # logits or log-probabilities: both are valid logits


def blackbox_approximator(box: Any) -> tuple[BlackBoxApproximator, PyTree]:
  """`(module, model_state)` of a `BlackBoxApproximator` for a `BlackBox`.

  Args:
    box: a `xai_jax.blackbox.BlackBox` with float inputs whose output is a
      distribution ('logits', 'probs' or 'log_probs').

  Returns:
    The module and its non-trainable variables `{'box': {'params': ...}}`.

  Raises:
    ValueError: token-id inputs (a relaxed mask cannot pass through an
      embedding lookup), an output that is not a distribution, or a box
      that cannot be differentiated.
  """
  for name in ('apply_fn', 'params', 'output', 'num_outputs', 'input_dtype'):
    if not hasattr(box, name):
      raise ValueError("approximator='blackbox' needs a xai_jax BlackBox, got "
                       f'{type(box).__name__}.')
  if box.input_dtype != 'float':
    raise ValueError("approximator='blackbox' needs a black box on float "
                     'inputs (tabular or image); this one takes token ids, '
                     'which a relaxed mask cannot scale.')
  if box.output not in ('logits', 'probs', 'log_probs'):
    raise ValueError("approximator='blackbox' needs a black box whose output "
                     f"is a distribution, got output={box.output!r}.")
  if not getattr(box, 'differentiable', True):
    raise ValueError("approximator='blackbox' needs a differentiable black "
                     f'box; {box.name!r} is not (from_numpy): train the '
                     "selector with approximator='learned'.")
  module = BlackBoxApproximator(apply_fn=box.apply_fn, output=box.output,
                                num_classes=int(box.num_outputs))
  return module, box_variables(box)


def box_variables(box: Any) -> PyTree:
  """The variables `{'box': {'params': box.params}}` of a `BlackBoxApproximator`."""
  return {'box': {'params': box.params}}


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
    num_outputs: 0 (one logit per token, `[b, L]`) or c > 0 (c values per
      token, `[b, L, c]`, zero at PAD positions: an amortized attribution
      network).
  """

  vocab_size: int
  embed_dim: int = 50
  filters: int = 100
  hidden: int = 100
  kernel: int = 3
  dropout: float = 0.2
  pad_id: int = 0
  num_outputs: int = 0
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
    if self.num_outputs:  # c values per token; PAD tokens get 0
      return conv(int(self.num_outputs), 1, 'logits')(h) * valid
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


def _check_factory(modality: str, activation: str) -> None:
  _checks.check_choice('modality', modality, MODALITIES)
  _checks.check_choice('activation', activation, ACTIVATIONS)


def _text_vocab(vocab_size: Any) -> int:
  if vocab_size is None or int(vocab_size) <= 1:
    raise ValueError(f"modality='text' needs vocab_size > 1, got {vocab_size!r}.")
  return int(vocab_size)


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
  _check_factory(modality, activation)
  if modality == 'tabular':
    return MLPSelector(num_groups=int(num_groups), activation=activation,
                       **kwargs)
  if modality == 'image':
    patch = _patch_of(groups)
    if groups.num_groups != num_groups:
      raise ValueError(f'num_groups={num_groups} does not match the patch grid '
                       f'{groups.grid_shape} ({groups.num_groups} groups).')
    return PatchSelector(patch=patch, activation=activation, **kwargs)
  return TextSelector(vocab_size=_text_vocab(vocab_size), **kwargs)


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
    activation: hidden activation, a key of `ACTIVATIONS` (used by the
      'tabular' and 'image' nets).
    vocab_size: V, the vocabulary size of 'text'.
    **kwargs: further fields of the approximator module.

  Returns:
    An unbound linen module `(x, mask) -> logits`.
  """
  _check_factory(modality, activation)
  if modality == 'tabular':
    return MLPApproximator(num_classes=int(num_classes), activation=activation,
                           **kwargs)
  if modality == 'image':
    return ConvApproximator(num_classes=int(num_classes),
                            activation=activation, **kwargs)
  vocab_size = _text_vocab(vocab_size)
  if k is None or int(k) <= 0:
    raise ValueError(f"modality='text' needs k > 0, got {k!r}.")
  return TextApproximator(vocab_size=vocab_size,
                          num_classes=int(num_classes), k=int(k), **kwargs)


def _init_key(key: Array) -> Array:
  """A cheap-to-compile 'unsafe_rbg' key derived from a typed PRNG key.

  Flax draws every kernel with its own `fold_in`; with threefry keys the
  XLA:CPU compile of an init grows by ~0.5 s per kernel shape. XLA's
  RngBitGenerator ('unsafe_rbg') compiles in a fraction of that.
  """
  return jax.random.wrap_key_data(jax.random.bits(key, (4,), jnp.uint32),
                                  impl='unsafe_rbg')


# Initialisation runs once: compile it with the cheapest XLA backend
# optimisation (~40% less compile time on CPU; the runtime does not matter).
# The `compiler_options` of `jax.jit` for functions that only initialise.
INIT_COMPILER_OPTIONS = {'xla_backend_optimization_level': 0}


def _init_selector_impl(module: nn.Module, key: Array, x: Array) -> PyTree:
  return module.init({'params': _init_key(key)}, x, train=False)['params']


def _init_approximator_impl(module: nn.Module, key: Array, x: Array,
                            mask: Array) -> PyTree:
  return module.init({'params': _init_key(key)}, x, mask, train=False)


_init_selector_jit = jax.jit(_init_selector_impl, static_argnames=('module',),
                             compiler_options=INIT_COMPILER_OPTIONS)
_init_approximator_jit = jax.jit(_init_approximator_impl,
                                 static_argnames=('module',),
                                 compiler_options=INIT_COMPILER_OPTIONS)


def _traced(*args: Any) -> bool:
  return any(_checks.is_tracer(a) for a in args)


def init_selector(module: nn.Module, key: Array | int, x: Array) -> PyTree:
  """Initial `params` of a selector (one jitted call).

  Jitted with XLA backend optimisation level 0 (compiles ~40% faster; the
  initialisers run once), or traced inline when called inside a jit.

  Args:
    module: the selector.
    key: PRNG key (typed or raw) or int seed; the weights are drawn from an
      'unsafe_rbg' key derived from it (same key, same weights).
    x: example inputs `[batch, *input_shape]` (only shapes/dtypes matter).

  Returns:
    The `params` collection.
  """
  key = _checks.as_key('key', key)
  if _traced(key, x):  # inside a user's jit: no nested compile options
    return _init_selector_impl(module, key, x)
  return _init_selector_jit(module, key, jnp.asarray(x))


def init_approximator(module: nn.Module, key: Array | int, x: Array,
                      mask: Array) -> tuple[PyTree, PyTree]:
  """Initial `(params, model_state)` of an approximator (one jitted call).

  Args:
    module: the approximator.
    key: PRNG key or int seed (see `init_selector`).
    x: example inputs `[batch, *input_shape]`.
    mask: example masks `[batch, *input_shape]`.

  Returns:
    `params` and the non-trainable collections (`{'batch_stats': ...}` or
    `{}`).
  """
  key = _checks.as_key('key', key)
  if _traced(key, x, mask):
    variables = dict(_init_approximator_impl(module, key, x, mask))
  else:
    variables = dict(_init_approximator_jit(module, key, jnp.asarray(x),
                                            jnp.asarray(mask, jnp.float32)))
  params = variables.pop('params', {})
  return params, variables


__all__ = [
    'ACTIVATIONS', 'BlackBoxApproximator', 'ConvApproximator',
    'INIT_COMPILER_OPTIONS', 'MLPApproximator', 'MLPSelector', 'MODALITIES',
    'MarginalImputingApproximator', 'PAD_LOGIT', 'PatchSelector',
    'TextApproximator', 'TextSelector', 'blackbox_approximator',
    'box_variables', 'init_approximator', 'init_selector', 'l2_penalty',
    'make_approximator', 'make_selector', 'selu',
]


# ----------------------------------------------------------------------------
# Mask networks (LTX): x -> a mask in [0, 1] on a grid that upsamples to x.


class EncoderBlock(nn.Module):
  """A pre-LN Transformer encoder block `[batch, tokens, dim] -> same`:
  x + MHA(LN(x)), then x + MLP(LN(x)) (GELU). The block of `models.ViT`
  and of `ViTMasker` (same parameter names, so weights copy across)."""

  dim: int
  heads: int
  mlp_dim: int

  @nn.compact
  def __call__(self, x: Array) -> Array:
    y = nn.LayerNorm()(x)
    x = x + nn.MultiHeadDotProductAttention(num_heads=self.heads)(y, y)
    y = nn.LayerNorm()(x)
    y = nn.Dense(self.dim)(nn.gelu(nn.Dense(self.mlp_dim)(y)))
    return x + y


def vit_tokens(module: nn.Module, x: Array, patch: int, dim: int
               ) -> tuple[Array, tuple[int, int]]:
  """A ViT's input tokens, built inside `module`'s compact `__call__`:
  the patch embedding 'embed' (a `patch` x `patch` stride-`patch` conv),
  the learned [CLS] token 'cls' prepended and the position embeddings
  'pos' added. `x[b, H, W, C] -> ([b, 1 + h w, dim], (h, w))`, h = H //
  patch. Shared by `models.ViT` and `ViTMasker` (same parameter names)."""
  x = nn.Conv(dim, (patch, patch), (patch, patch), padding='VALID',
              name='embed')(x)
  b, h, w, c = x.shape
  x = x.reshape((b, h * w, c))
  cls = module.param('cls', nn.initializers.zeros, (1, 1, c))
  x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, c)), x], axis=1)
  x = x + module.param('pos', nn.initializers.normal(0.02), (1, h * w + 1, c))
  return x, (h, w)


def upsample_bilinear(m: Array, spatial: Sequence[int]) -> Array:
  """Bilinear resize of maps `[batch, h, w] -> [batch, H, W]` (half-pixel
  centres, as `torch.nn.functional.interpolate(mode='bilinear',
  align_corners=False)`); the identity when the sizes match."""
  spatial = tuple(int(s) for s in spatial)
  if tuple(m.shape[1:]) == spatial:
    return m
  return jax.image.resize(m, (m.shape[0], *spatial), method='bilinear')


class ViTMasker(nn.Module):
  """LTX's explainer for a ViT (Barkan et al., ICDM 2023): the ViT's own
  architecture (patch embedding 'embed', 'cls', 'pos', blocks 'block{i}',
  final LayerNorm 'norm': the names of `models.ViT`, so its weights copy
  in), and on every patch token (the [CLS] token dropped) the head
  Linear(D, D) -> tanh -> Linear(D, 1) -> sigmoid.

  `x[batch, H, W, C] -> mask[batch, H // patch, W // patch]` in (0, 1).
  """

  patch: int = 4
  dim: int = 64
  depth: int = 4
  heads: int = 4
  mlp_dim: int = 128

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    del train
    x, (h, w) = vit_tokens(self, x, self.patch, self.dim)
    b = x.shape[0]
    for i in range(self.depth):
      x = EncoderBlock(self.dim, self.heads, self.mlp_dim, name=f'block{i}')(x)
    x = nn.LayerNorm(name='norm')(x)[:, 1:]
    x = jnp.tanh(nn.Dense(self.dim, name='mask_hidden')(x))
    x = nn.Dense(1, name='mask_out')(x)[..., 0]
    return nn.sigmoid(x.reshape((b, h, w)))


class CNNMasker(nn.Module):
  """LTX's explainer for a CNN: the body of `models.CNN` (3x3 convolutions
  'conv{i}' + ReLU + 2x2 max-pool; same names, so the black box's weights
  copy in) -> a 1x1 convolution 'mask_out' -> sigmoid.

  `x[batch, H, W, C] -> mask[batch, H // 2^L, W // 2^L]` in (0, 1), L =
  len(features). The convolutions are `PatchConv`s (patches and one
  matmul; kernels `[9 C, F]`): vmapped over per-example parameters (LTX's
  per-instance finetuning) they become batched matmuls instead of grouped
  convolutions, which XLA:CPU runs slowly.
  """

  features: Sequence[int] = (16, 32)

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    del train
    for i, f in enumerate(self.features):
      x = max_pool_2x2(nn.relu(PatchConv(f, 3, padding=1,
                                         name=f'conv{i + 1}')(x)))
    return nn.sigmoid(nn.Dense(1, name='mask_out')(x)[..., 0])


class UNetMasker(nn.Module):
  """A small U-Net-style mask network (a documented LTX option): the
  `CNNMasker` encoder ('conv{i}', 3x3 + ReLU + 2x2 max-pool), then per
  level a 2x bilinear upsampling, concatenation with the encoder's
  features of that resolution (skip connection) and a 3x3 convolution
  'up{i}' + ReLU, and a 1x1 convolution 'mask_out' -> sigmoid at the full
  resolution: `x[batch, H, W, C] -> mask[batch, H, W]` in (0, 1)."""

  features: Sequence[int] = (16, 32)

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    del train
    skips = []
    for i, f in enumerate(self.features):
      x = nn.relu(PatchConv(f, 3, padding=1, name=f'conv{i + 1}')(x))
      skips.append(x)
      x = max_pool_2x2(x)
    for i, f in reversed(list(enumerate(self.features))):
      s = skips[i]
      x = jax.image.resize(x, (x.shape[0], *s.shape[1:3], x.shape[-1]),
                           method='bilinear')
      x = jnp.concatenate([x, s], axis=-1)
      x = nn.relu(PatchConv(f, 3, padding=1, name=f'up{i + 1}')(x))
    return nn.sigmoid(nn.Dense(1, name='mask_out')(x)[..., 0])


MASKERS: dict[str, type[nn.Module]] = {
    'vit': ViTMasker, 'cnn': CNNMasker, 'unet': UNetMasker}
