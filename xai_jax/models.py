"""Black-box models we train for experiments (Flax linen).

Small, fast-to-train classifiers that stand in for the models users explain:
an MLP for tabular data, a CNN and a small ViT for images, and a text CNN
(the L2X IMDB black box: Embedding -> Conv1D -> global max-pool -> Dense ->
Dense). Submodules carry stable names so black boxes can be split at a layer
(`blackbox.from_linen(..., split_at='conv2')`) for latent methods (IBA,
InputIBA, Grad-CAM).

`make_model(name, **kw)` builds one by registry name; `input_dtype(name)` says
whether it takes floats or token ids.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from xai_jax import _checks
from xai_jax import nets

_ACTS: dict[str, Callable[[jax.Array], jax.Array]] = {
    'relu': nn.relu, 'selu': nn.selu, 'gelu': nn.gelu, 'tanh': jnp.tanh}


class MLP(nn.Module):
  """Multi-layer perceptron `[batch, d] -> [batch, num_classes]` logits.

  Hidden layers are named `dense{i}` and the output layer `head`.
  """

  num_classes: int
  hidden: Sequence[int] = (200, 200)
  activation: str = 'relu'

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    act = _ACTS[self.activation]
    x = x.reshape((x.shape[0], -1))
    for i, h in enumerate(self.hidden):
      x = act(nn.Dense(h, name=f'dense{i}')(x))
    return nn.Dense(self.num_classes, name='head')(x)


class CNN(nn.Module):
  """A small CNN `[batch, H, W, C] -> [batch, num_classes]` logits.

  conv1 (3x3, `features[0]`) -> ReLU -> 2x2 max-pool -> conv2 (3x3,
  `features[1]`) -> ReLU -> 2x2 max-pool -> dense1 -> ReLU -> dropout -> head.
  Split points for latent methods: 'conv1', 'conv2' (pre-activation outputs).
  """

  num_classes: int
  features: Sequence[int] = (16, 32)
  dense: int = 128
  dropout: float = 0.25

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    for i, f in enumerate(self.features):
      x = nn.relu(nn.Conv(f, (3, 3), name=f'conv{i + 1}')(x))
      x = nets.max_pool_2x2(x)
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(self.dense, name='dense1')(x))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes, name='head')(x)


class ViT(nn.Module):
  """A small Vision Transformer `[batch, H, W, C] -> [batch, num_classes]`.

  Patch embedding (`patch` x `patch`, named 'embed'), learned position
  embeddings, a [CLS] token, `depth` pre-LN encoder blocks ('block{i}'), and a
  linear 'head' on the final [CLS] state.
  """

  num_classes: int
  patch: int = 4
  dim: int = 64
  depth: int = 4
  heads: int = 4
  mlp_dim: int = 128

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    del train
    x, _ = nets.vit_tokens(self, x, self.patch, self.dim)
    for i in range(self.depth):
      x = nets.EncoderBlock(self.dim, self.heads, self.mlp_dim,
                            name=f'block{i}')(x)
    x = nn.LayerNorm(name='norm')(x)
    return nn.Dense(self.num_classes, name='head')(x[:, 0])


class TextCNN(nn.Module):
  """Word-level text CNN `int[batch, L] -> [batch, num_classes]` logits.

  The L2X IMDB black box: Embedding(vocab, embed_dim) -> Conv1D(filters, 3) ->
  ReLU -> global max-pool -> Dense(hidden) -> ReLU -> Dense(num_classes).
  Token id 0 is PAD and embeds to zero.
  """

  num_classes: int
  vocab_size: int
  embed_dim: int = 50
  filters: int = 250
  kernel: int = 3
  hidden: int = 250

  @nn.compact
  def __call__(self, tokens: jax.Array, train: bool = False) -> jax.Array:
    del train
    e = nn.Embed(self.vocab_size, self.embed_dim, name='embed')(tokens)
    e = e * (tokens > 0)[..., None].astype(e.dtype)
    h = nn.relu(nn.Conv(self.filters, (self.kernel,), name='conv')(e))
    h = jnp.max(h, axis=1)
    h = nn.relu(nn.Dense(self.hidden, name='dense1')(h))
    return nn.Dense(self.num_classes, name='head')(h)


MODELS: dict[str, type[nn.Module]] = {
    'mlp': MLP, 'cnn': CNN, 'vit': ViT, 'text_cnn': TextCNN}


def make_model(name: str, **kwargs: Any) -> nn.Module:
  """Builds a model by registry name ('mlp', 'cnn', 'vit', 'text_cnn').

  Args:
    name: the model name.
    **kwargs: the module's fields (num_classes, hidden, ...).
  """
  _checks.check_choice('model', name, MODELS)
  if 'activation' in kwargs:
    _checks.check_choice('activation', kwargs['activation'], _ACTS)
  return MODELS[name](**kwargs)


def input_dtype(name: str) -> str:
  """'int' for token models, else 'float' (for `blackbox.from_linen`)."""
  _checks.check_choice('model', name, MODELS)
  return 'int' if name == 'text_cnn' else 'float'


def takes_train_flag(name: str) -> bool:
  """True if the module's `__call__` takes `train` (dropout)."""
  return name != 'mlp'



def embedding_blackbox(box: Any, module: nn.Module, *,
                       split_at: str | None = None
                       ) -> tuple[Any, Callable[[Any], jax.Array]]:
  """A float-input view of a `TextCNN` black box, for gradient methods.

  Gradient attributions (saliency, integrated gradients) need float
  inputs; a text model takes token ids. The view's input is
  `z [n, L, D + 1]`: the token embeddings and, in the last channel, 1 for
  real tokens and 0 for PAD (the model zeroes PAD embeddings). Gradients of
  the view w.r.t. the first D channels are the embedding gradients; summed
  over D they give one score per token.

  Args:
    box: a `blackbox.BlackBox` of `module` (`from_linen`, input `int[n, L]`,
      parameters with an 'embed' layer).
    module: the `TextCNN` (or any module with an `nn.Embed` named 'embed').
    split_at: optional submodule name ('conv'): the view is then split
      there like `blackbox.from_linen(..., split_at=)`, `view.head(z)` the
      submodule's output and `view.tail(latent)` the rest (latent methods
      on the embeddings: InputIBA's text bottleneck).
  Returns:
    `(view, to_input)`: the view, a logits `BlackBox` on `[n, L, D + 1]`,
    and `to_input(tokens int[n, L]) -> z [n, L, D + 1]`, so that
    `view(to_input(t)) == box(t)`.
  Raises:
    ValueError: the box's parameters have no 'embed' embedding table;
      `split_at` names no submodule called in apply.
  """
  from xai_jax import blackbox as bb  # pylint: disable=g-import-not-at-top
  params = box.params
  try:
    table = params['params']['embed']['embedding']
  except (KeyError, TypeError):
    raise ValueError("box must hold the parameters of a module with an "
                     "nn.Embed named 'embed' (models.TextCNN).") from None

  def apply_fn(variables, z):
    e, valid = z[..., :-1], z[..., -1]
    tokens = (valid > 0.5).astype(jnp.int32)  # ids only matter through > 0

    def interceptor(next_fun, args, kwargs, context):
      if context.module.name == 'embed' and context.method_name == '__call__':
        return e
      return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
      return module.apply(variables, tokens)

  def to_input(tokens: Any) -> jax.Array:
    tokens = jnp.asarray(tokens)
    valid = (tokens > 0).astype(jnp.float32)[..., None]
    return jnp.concatenate([jnp.take(table, tokens, axis=0) * valid, valid],
                           axis=-1)

  seq_len = box.input_shape[0]
  view = bb.from_jax(apply_fn, input_shape=(seq_len, table.shape[1] + 1),
                     params=params, output='logits', name='text_embeddings')
  if split_at is not None:
    path = tuple(p for p in str(split_at).split('/') if p)

    def head_fn(variables, z):
      e, valid = z[..., :-1], z[..., -1]
      tokens = (valid > 0.5).astype(jnp.int32)

      def interceptor(next_fun, args, kwargs, context):
        if context.module.name == 'embed' and context.method_name == '__call__':
          return e
        return next_fun(*args, **kwargs)

      with nn.intercept_methods(interceptor):
        _, state = module.apply(
            variables, tokens, mutable=['intermediates'],
            capture_intermediates=lambda mdl, meth: (mdl.path == path and
                                                     meth == '__call__'))
      node = state['intermediates']
      for p in path:
        node = node[p]
      return node['__call__'][0]

    def tail_fn(variables, latent):
      def interceptor(next_fun, args, kwargs, context):
        if context.module.path == path and context.method_name == '__call__':
          return latent
        return next_fun(*args, **kwargs)
      dummy = jnp.ones((latent.shape[0], seq_len), jnp.int32)
      with nn.intercept_methods(interceptor):
        return module.apply(variables, dummy)

    probe = jax.ShapeDtypeStruct((2, seq_len, table.shape[1] + 1),
                                 jnp.float32)
    try:
      lat = jax.eval_shape(head_fn, params, probe)
    except KeyError:
      raise ValueError(
          f'split_at={split_at!r} names no submodule of '
          f'{type(module).__name__} that is called in apply; its submodules '
          f'with parameters: {bb.submodule_paths(params)}.') from None
    view = view.replace(head_fn=head_fn, tail_fn=tail_fn,
                        latent_shape=tuple(lat.shape[1:]))
  return view, to_input


# ---------------------------------------------------------------- training
def classifier_loss(module: nn.Module, *, soft_targets: bool,
                    train_flag: bool) -> Callable:
  """Cross-entropy loss for `train.fit`: batch = `{'x', 'y'}`.

  `y` is int labels `[batch]` or soft targets `[batch, c]` (then the
  cross-entropy against the distribution, as L2X fits P(Y|X)).

  Args:
    module: the linen classifier (outputs logits).
    soft_targets: True if `y` holds distributions.
    train_flag: pass `train=True` (dropout) to the module.
  """
  import optax  # pylint: disable=g-import-not-at-top

  def loss_fn(params, model_state, batch, key):
    kw = {'train': True, 'rngs': {'dropout': key}} if train_flag else {}
    logits = module.apply({'params': params}, batch['x'], **kw)
    if soft_targets:
      loss = optax.softmax_cross_entropy(logits, batch['y']).mean()
      labels = jnp.argmax(batch['y'], -1)
    else:
      loss = optax.softmax_cross_entropy_with_integer_labels(
          logits, batch['y']).mean()
      labels = batch['y']
    acc = jnp.mean(jnp.argmax(logits, -1) == labels)
    return loss, (model_state, {'accuracy': acc})
  return loss_fn


def accuracy(box: Any, x: Any, y: Any, *, chunk_size: int = 4096) -> float:
  """Accuracy of a black box on `x [n, ...]` vs labels `y [n]` (or soft `[n, c]`)."""
  from xai_jax import blackbox as bb  # pylint: disable=g-import-not-at-top
  y = jnp.asarray(y)
  labels = jnp.argmax(y, -1) if y.ndim == 2 else y
  out = jax.jit(bb.forward_in_chunks, static_argnums=2)(
      box, jnp.asarray(x), chunk_size)
  return float(jnp.mean(jnp.argmax(out, -1) == labels))


def fit_classifier(name: str, model_kwargs: dict[str, Any], x: Any, y: Any, *,
                   key: jax.Array | int, num_steps: int, batch_size: int,
                   optimizer: Any = None, workdir: str | None = None,
                   log_every: int = 100, checkpoint_every: int = 1000
                   ) -> tuple[Any, dict[str, float]]:
  """Trains a registry model as a black box with the shared loop (`train.fit`).

  Args:
    name: registry name ('mlp', 'cnn', 'vit', 'text_cnn').
    model_kwargs: the module's fields (must include num_classes).
    x: training inputs `[n, *input_shape]`.
    y: int labels `[n]` or soft targets `[n, num_classes]`.
    key: PRNG key or int seed (initialisation, shuffling, dropout).
    num_steps: optimizer steps.
    batch_size: global batch size.
    optimizer: ConfigDict/dict for `train.make_optimizer` (default Adam 1e-3).
    workdir: checkpoints go to `workdir/checkpoints` (resumable), or None.
    log_every: progress log period in steps.
    checkpoint_every: checkpoint period in steps.

  Returns:
    `(BlackBox, train_metrics)`: a `from_linen` box with output 'logits'.
  """
  from xai_jax import blackbox as bb  # pylint: disable=g-import-not-at-top
  from xai_jax import train  # pylint: disable=g-import-not-at-top
  module = make_model(name, **model_kwargs)
  key = _checks.as_key('key', key)
  init_key, fit_key = jax.random.split(key)
  x = np.asarray(x)
  y = np.asarray(y)
  variables = module.init(init_key, jnp.asarray(x[:2]))
  optimizer = dict(optimizer or {'optimizer': 'adam', 'learning_rate': 1e-3})
  tx = train.make_optimizer(optimizer, num_steps=num_steps)
  state = train.create_train_state(variables['params'], tx, key=fit_key)
  loss_fn = classifier_loss(module, soft_targets=y.ndim == 2,
                            train_flag=takes_train_flag(name))
  state, history = train.fit(loss_fn, state, {'x': x, 'y': y}, tx=tx,
                             workdir=workdir, batch_size=batch_size,
                             num_steps=num_steps, log_every=log_every,
                             checkpoint_every=checkpoint_every)
  box = bb.from_linen(module, {'params': state.params},
                      input_shape=x.shape[1:], input_dtype=input_dtype(name),
                      name=name)
  last = {k: float(np.asarray(v)[-1]) for k, v in history.items()
          if np.size(v)}
  return box, last


__all__ = ['CNN', 'MLP', 'MODELS', 'TextCNN', 'ViT', 'accuracy',
           'classifier_loss', 'embedding_blackbox', 'fit_classifier', 'input_dtype', 'make_model',
           'takes_train_flag']
