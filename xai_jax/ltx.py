"""LTX: a learned explainer network, pretrained on a data set, then finetuned
per instance (Barkan, Asher, Eshel, Elisha, Koenigstein, "Learning to
Explain: A Model-Agnostic Framework for Explaining Black Box Models", ICDM
2023, arXiv 2310.16584).

An explainer network `g_theta(x) -> m_low[h, w]` in (0, 1) gives a mask on a
coarse grid, bilinearly upsampled to the image, `m = up(m_low)`. The frozen
explained model f sees the masked image `x * m + (1 - m) * b` (b = 0: the
removed pixels black, as the reference on [0, 1] images), and the
explainer minimises, per example,

    L(theta; x) = CE(f(x * m + (1 - m) b), c) + lambda * L_mask(m_low),

c the class f predicts on x ('predicted' mode) or the label ('target'
mode), L_mask = mean(softplus(m_low)) (the reference's default 'bce':
`BCEWithLogitsLoss(m_low, 0)` on the already-sigmoided mask, a monotone size
penalty of slope 0.5-0.73) or mean(m_low) ('l1'). The prediction must be
recoverable from the kept pixels alone, with as few kept as possible.

Two stages:

* **pLTX** (`fit`): the explainer is pretrained on a data set with the
  shared training loop (`train.fit`: AdamW, lr 2e-3, linear warm-up over
  20% of the steps then linear decay to 0, batch 32; checkpoints and exact
  resume from `workdir`). The last step is kept: the schedule ends at lr 0,
  and no test image or test metric picks a checkpoint (the reference picks
  the epoch with the best POS AUC on images it then reports on). A
  `validation=` set logs the objective on held-out rows.
* **LTX** (`explain(..., finetune_steps=T)`): per instance, T AdamW steps
  from the pretrained weights with a fresh optimiser (lr `finetune_lr`, no
  schedule). The whole batch is finetuned at once: the optimisation is
  vmapped over per-example copies of the parameters and optimiser states
  (one `lax.scan` of T steps, jitted; the reference finetunes one image at
  a time). Kept mask (`finetune_keep`): 'objective' (default) = the mask
  of the step (0..T, step 0 the pretrained one) with the lowest training
  objective L on that instance, or 'last'. Neither rule uses labels or an
  evaluation metric (the reference keeps the step with the best POS AUC
  against the test label). `finetune_steps=0` gives pLTX.

Explainer networks (`nets.MASKERS`, `config.net`): 'vit' (`nets.ViTMasker`:
the ViT's architecture, patch embedding / [CLS] / position embeddings
frozen, blocks and the token head Linear-tanh-Linear-sigmoid trained), 'cnn'
(`nets.CNNMasker`: the CNN body + 1x1 conv + sigmoid) and 'unet'
(`nets.UNetMasker`, full-resolution masks). With `init_from_model=True` every
explainer parameter whose name and size match one of the explained model's
(e.g. a `models.ViT` / `models.CNN` black box of the same widths, as the
reference copies the explained model's pretrained weights) starts from it.

    import xai_jax as xj
    explainer = xj.ltx.fit(0, box, x_train, net='cnn', features=(16, 32))
    out = xj.ltx.explain(explainer, x_test)                 # LTX, 25 steps
    plt = xj.ltx.explain(explainer, x_test, finetune_steps=0)  # pLTX
    out.scores                                            # [b, H, W] in (0,1)
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

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
from xai_jax import train

Array = jax.Array
PyTree = Any

NETS = ('vit', 'cnn', 'unet')
MODES = ('predicted', 'target')
MASK_LOSSES = ('bce', 'l1')
KEEP = ('objective', 'last')
_VIT_FROZEN = ('embed', 'cls', 'pos')


def default_config(net: str = 'cnn') -> ml_collections.ConfigDict:
  """LTX's hyper-parameters (an ml_collections ConfigDict).

  Fields:
    net: the explainer network: 'vit', 'cnn' or 'unet' (`nets.MASKERS`).
    features: conv widths of 'cnn' / 'unet' (those of the explained
      `models.CNN` to copy its weights).
    patch, dim, depth, heads, mlp_dim: the 'vit' explainer (those of the
      explained `models.ViT` to copy its weights).
    init_from_model: start every explainer parameter whose name and size
      match one of the black box's parameters from it (the reference
      initialises the explainer from the explained model).
    frozen: top-level parameter names kept fixed in both stages (None: the
      reference's choice, the ViT's patch embedding, [CLS] and position
      embeddings; nothing for CNNs).
    mode: 'predicted' (c = argmax f(x)) or 'target' (c = the label, given
      as `fit(..., labels=)`; explaining then needs `target=`).
    mask_loss: 'bce' (mean softplus(m_low), the reference) or 'l1'.
    mask_weight: lambda (the reference: 50 for ViT-B / ResNet-101, 30 for
      ViT-S on ImageNet; our default 10 suits the 4-10 class models here).
    baseline: the value of removed pixels (0: black).
    optimizer, learning_rate, weight_decay, warmup_fraction, schedule: the
      pretraining optimiser (AdamW 2e-3, weight decay 1e-4, linear warm-up
      over 20% of the steps then linear decay: 'warmup_linear').
    batch_size, epochs, num_steps: pretraining batch (32), passes over x,
      total steps (overrides epochs when set).
    finetune_steps: T, per-instance AdamW steps in `explain` (the
      reference: up to 25); 0 = pLTX.
    finetune_lr: the per-instance AdamW learning rate (fresh optimiser).
    finetune_keep: 'objective' (the step with the lowest objective on the
      instance) or 'last'.
    chunk_size: examples finetuned (or masked) per jitted call.
    log_every, checkpoint_every, eval_every: the training loop's periods
      (None: about 4 checkpoints per run; eval only at the end).
    seed: the PRNG seed used when `fit` gets key=None.
  """
  _checks.check_choice('net', net, NETS)
  c = ml_collections.ConfigDict()
  c.net = net
  c.features = (16, 32)
  c.patch = 4
  c.dim = 64
  c.depth = 4
  c.heads = 4
  c.mlp_dim = 128
  c.init_from_model = True
  c.frozen = None
  c.mode = 'predicted'
  c.mask_loss = 'bce'
  c.mask_weight = 10.0          # lambda
  c.baseline = 0.0
  c.optimizer = 'adamw'
  c.learning_rate = 2e-3
  c.weight_decay = 1e-4
  c.warmup_fraction = 0.2
  c.schedule = 'warmup_linear'
  c.batch_size = 32
  c.epochs = 30
  c.num_steps = None
  c.finetune_steps = 25         # T (0 = pLTX)
  c.finetune_lr = 2e-3          # the reference's nominal lr
  c.finetune_keep = 'objective'
  c.chunk_size = 64
  c.log_every = 100
  c.checkpoint_every = None
  c.eval_every = None
  c.seed = 0
  return c


@flax.struct.dataclass
class LTXExplainer:
  """A pretrained LTX explainer, what `fit` returns.

  Attributes:
    params: the explainer network's parameters.
    model: the explained black box (frozen).
    net: the explainer network (static).
    frozen: top-level parameter names kept fixed (static).
    config: the frozen config it was fit with (static).
    grid: `(h, w)`, the explainer's mask grid (static).
  """

  params: PyTree
  model: bb.BlackBox
  net: nn.Module = flax.struct.field(pytree_node=False)
  frozen: tuple[str, ...] = flax.struct.field(pytree_node=False)
  config: ml_collections.FrozenConfigDict = flax.struct.field(
      pytree_node=False)
  grid: tuple[int, int] = flax.struct.field(pytree_node=False)


# ----------------------------------------------------------------------------
# Network, initialisation, optimiser.


def make_net(cfg: Any) -> nn.Module:
  """The explainer network of a config (`nets.MASKERS[cfg.net]`)."""
  name = _checks.check_choice('net', cfg.net, NETS)
  if name == 'vit':
    return nets.ViTMasker(
        patch=_checks.check_int('patch', cfg.patch),
        dim=_checks.check_int('dim', cfg.dim),
        depth=_checks.check_int('depth', cfg.depth, minimum=0),
        heads=_checks.check_int('heads', cfg.heads),
        mlp_dim=_checks.check_int('mlp_dim', cfg.mlp_dim))
  feats = tuple(_checks.check_int('features', f) for f in cfg.features)
  if not feats:
    raise ValueError('features must list at least one conv width.')
  return nets.MASKERS[name](features=feats)


def _flat(tree: PyTree) -> dict[tuple[str, ...], Any]:
  return {tuple(str(getattr(k, 'key', k)) for k in path): v
          for path, v in jax.tree_util.tree_leaves_with_path(tree)}


def copy_matching(params: PyTree, source: PyTree) -> tuple[PyTree, int]:
  """Explainer parameters with every leaf whose path (under 'params', if
  `source` has it) and number of elements match a leaf of `source` replaced
  by it (reshaped: a 3x3 `nn.Conv` kernel `[3, 3, C, F]` fills a
  `PatchConv` kernel `[9 C, F]`). Returns `(params, number of copied
  leaves)`."""
  src = source.get('params', source) if isinstance(source, Mapping) else None
  if src is None:
    return params, 0
  table = _flat(src)
  count = 0

  def pick(path, leaf):
    nonlocal count
    key = tuple(str(getattr(k, 'key', k)) for k in path)
    v = table.get(key)
    if v is None or np.size(v) != np.size(leaf):
      return leaf
    count += 1
    return jnp.asarray(v, leaf.dtype).reshape(leaf.shape)

  out = jax.tree_util.tree_map_with_path(pick, params)
  return out, count


def _frozen(cfg: Any, params: PyTree) -> tuple[str, ...]:
  names = (_VIT_FROZEN if cfg.net == 'vit' else ()) if cfg.frozen is None \
      else tuple(cfg.frozen)
  unknown = [n for n in names if n not in params]
  if unknown:
    raise ValueError(f'frozen names {unknown} are not parameters of the '
                     f'{cfg.net!r} explainer (it has {sorted(params)}).')
  return names


def _freeze(tx: optax.GradientTransformation, frozen: tuple[str, ...]
            ) -> optax.GradientTransformation:
  if not frozen:
    return tx
  labels = lambda p: {k: ('frozen' if k in frozen else 'train') for k in p}
  return optax.multi_transform({'train': tx, 'frozen': optax.set_to_zero()},
                               labels)


def finetune_optimizer(cfg: Any, frozen: tuple[str, ...]
                       ) -> optax.GradientTransformation:
  """The per-instance optimiser: AdamW at `finetune_lr` (constant), with
  the frozen parameters fixed."""
  return _freeze(train.make_optimizer(
      optimizer='adamw', learning_rate=float(cfg.finetune_lr),
      weight_decay=float(cfg.weight_decay)), frozen)


# ----------------------------------------------------------------------------
# The objective.


def objective(net: nn.Module, box: bb.BlackBox, params: PyTree, x: Array,
              c: Array, *, mask_weight: float, mask_loss: str = 'bce',
              baseline: Any = 0.0) -> tuple[Array, dict[str, Array]]:
  """LTX's per-example loss (see the module docstring).

  Args:
    net: the explainer network, `x -> m_low[b, h, w]` in (0, 1).
    box: the explained (frozen) black box.
    params: the explainer's parameters.
    x: `[b, H, W, C]` images.
    c: int `[b]`, the class whose cross-entropy is minimised.
    mask_weight: lambda.
    mask_loss: 'bce' (mean softplus(m_low)) or 'l1' (mean m_low).
    baseline: the fill of removed pixels (scalar or broadcastable).
  Returns:
    `(loss [b], {'ce': [b], 'mask_loss': [b], 'area': [b] (mean of the
    upsampled mask), 'mask': [b, H, W]})`.
  """
  m_low = net.apply({'params': params}, x)
  m = nets.upsample_bilinear(m_low, x.shape[1:3])
  xm = masking.apply_mask(x, m[..., None], baseline)
  lp = bb.to_log_probs(box.apply_fn(box.params, xm), box.output)
  ce = -jnp.take_along_axis(lp, c[:, None], axis=-1)[:, 0]
  axes = tuple(range(1, m_low.ndim))
  size = (jnp.mean(jax.nn.softplus(m_low), axes) if mask_loss == 'bce'
          else jnp.mean(m_low, axes))
  loss = ce + mask_weight * size
  return loss, {'ce': ce, 'mask_loss': size, 'area': jnp.mean(m, (1, 2)),
                'mask': m}


def _objective_fn(e_or_net, box, cfg):
  return functools.partial(objective, e_or_net, box,
                           mask_weight=float(cfg.mask_weight),
                           mask_loss=cfg.mask_loss, baseline=cfg.baseline)


# ----------------------------------------------------------------------------
# Checks.


def _check_box(model: Any, x: Any) -> tuple[bb.BlackBox, Array]:
  x = _checks.as_array('x', x)
  box = bb.as_blackbox(model, input_shape=tuple(x.shape[1:]))
  x = _checks.check_model_input(box, x)
  if box.output == 'regression' or box.num_outputs < 2:
    raise ValueError(
        'LTX explains classifiers: the model must return class scores '
        "(logits, probs or log_probs) for >= 2 classes; black box "
        f"{box.name!r} has output={box.output!r} with {box.num_outputs} "
        'output(s).')
  if len(box.input_shape) != 3 or box.input_dtype != 'float':
    raise ValueError('LTX explains image models: x must be float [n, H, W, '
                     f'C]; the black box takes {box.input_shape} '
                     f'({box.input_dtype}).')
  return box, x


def _check_grid(net: nn.Module, params: PyTree, input_shape: tuple[int, ...]
                ) -> tuple[int, int]:
  out = jax.eval_shape(lambda p, v: net.apply({'params': p}, v), params,
                       jax.ShapeDtypeStruct((2, *input_shape), jnp.float32))
  h, w = input_shape[:2]
  if (len(out.shape) != 3 or out.shape[0] != 2 or out.shape[1] < 1
      or out.shape[2] < 1 or h % out.shape[1] or w % out.shape[2]):
    raise ValueError(
        f'The explainer network returns masks of shape {out.shape[1:]} for '
        f'inputs {input_shape}; a mask must be [batch, h, w] with h dividing '
        f'H={h} and w dividing W={w} so that it upsamples onto the image '
        '(for the ViT explainer: patch must divide the image size).')
  return int(out.shape[1]), int(out.shape[2])


# ----------------------------------------------------------------------------
# Pretraining (pLTX).


def fit(key: Any, model: Any, x: Any, config: Any = None, *,
        labels: Any = None, validation: Any = None,
        network: nn.Module | None = None,
        workdir: str | None = None, return_history: bool = False,
        **overrides: Any) -> LTXExplainer | tuple[LTXExplainer, dict]:
  """Pretrains the LTX explainer on `x` (pLTX).

  Minimises the mean over the data of the objective (module docstring)
  with `train.fit` (AdamW, linear warm-up and decay, `batch_size`,
  checkpoints in `workdir` and exact resume); the last step is kept.

  Args:
    key: PRNG key or int seed (None: `config.seed`): initialisation and
      data order. Same key, same explainer.
    model: the explained classifier (`BlackBox` on float images `[H, W,
      C]`, or a JAX callable returning class scores).
    x: training images `[n, H, W, C]`.
    config: a config from `default_config()` (or a dict of its fields).
    labels: int `[n]` labels, for `mode='target'`.
    validation: optional held-out images `[m, H, W, C]`: the objective on
      them is logged every `eval_every` steps and at the end (in the
      history as `eval/objective`; it does not pick a checkpoint).
    network: a custom explainer network `x -> [batch, h, w]` in [0, 1]
      (default `make_net(config)`, the network `config.net` names).
    workdir: checkpoints and metrics of the training loop (resumes).
    return_history: also return the training history.
    **overrides: fields of `default_config` by name.
  Returns:
    an `LTXExplainer` (and the history dict if `return_history`).
  Raises:
    ValueError: an unknown config field, a model that does not return
      class scores (or returns NaN / inf on x), non-image inputs, a mask
      that does not upsample to the input, bad labels or config values,
      parameters that diverged to NaN.
  """
  net_name = protocol.peek('net', config, overrides, 'cnn')
  _checks.check_choice('net', net_name, NETS)
  cfg = protocol.merge_config(default_config(net_name), config, overrides,
                              method='ltx')
  _check_settings(cfg)
  key = _checks.as_key('key', key, default_seed=cfg.seed, method='ltx')
  box, x = _check_box(model, x)
  n = int(x.shape[0])
  k_init, k_train = jax.random.split(key)
  outputs = bb.forward_in_chunks(box, x, 1024)
  _checks.check_finite_outputs(outputs, method='ltx', where='x')
  net = make_net(cfg) if network is None else network
  if network is None and cfg.net == 'vit' and any(
      s % int(cfg.patch) for s in box.input_shape[:2]):
    raise ValueError(
        f'patch={cfg.patch} does not divide the image size '
        f'{box.input_shape[:2]}: the ViT explainer\'s mask would not upsample '
        'onto the image.')
  params = jax.jit(lambda k, v: net.init(k, v))(k_init, x[:2])['params']
  grid = _check_grid(net, params, box.input_shape)
  if cfg.init_from_model:
    params, _ = copy_matching(params, box.params)
  frozen = _frozen(cfg, params)
  if cfg.mode == 'target':
    if labels is None:
      raise ValueError("mode='target' needs labels=[n] class indices.")
    c, _, soft = _checks.check_labels('labels', labels, n, box.num_outputs)
    if soft:
      raise ValueError('labels must be int class indices [n], not soft '
                       'targets.')
  else:
    if labels is not None:
      raise ValueError("labels are only used with mode='target'.")
    c = jnp.argmax(outputs, -1)
  c = np.asarray(c, np.int32)
  batch_size, num_steps = train.resolve_steps(n, cfg.batch_size,
                                              cfg.num_steps, cfg.epochs)
  warmup = int(round(float(cfg.warmup_fraction) * num_steps))
  tx = _freeze(train.make_optimizer(
      optimizer=cfg.optimizer, learning_rate=float(cfg.learning_rate),
      weight_decay=float(cfg.weight_decay), schedule=cfg.schedule,
      warmup_steps=min(warmup, max(num_steps - 1, 0)),
      num_steps=max(num_steps, 1)), frozen)
  obj = _objective_fn(net, box, cfg)

  def loss_fn(p, model_state, batch, key):
    del key
    loss, aux = obj(p, batch['x'], batch['c'])
    return jnp.mean(loss), (model_state, {
        'ce': jnp.mean(aux['ce']), 'mask_loss': jnp.mean(aux['mask_loss']),
        'area': jnp.mean(aux['area'])})

  eval_fn = None
  if validation is not None:
    xv = _checks.check_model_input(box, _checks.as_array('validation',
                                                         validation),
                                   'validation')
    cv = jnp.argmax(bb.forward_in_chunks(box, xv, 1024), -1)
    chunk = _checks.check_chunk_size(cfg.chunk_size)
    mean_obj = jax.jit(lambda p: jnp.mean(bb.map_batches(
        lambda a: obj(p, a[0], a[1])[0], (xv, cv), chunk)))
    eval_fn = lambda state: {'objective': mean_obj(state.params)}
  every = (_checks.check_int('checkpoint_every', cfg.checkpoint_every)
           if cfg.checkpoint_every is not None
           else train.default_checkpoint_every(num_steps))
  history: dict[str, Any] = {}
  if num_steps > 0:
    state, history = train.fit(
        loss_fn, params, {'x': np.asarray(x), 'c': c}, tx=tx, key=k_train,
        batch_size=batch_size, num_steps=num_steps, workdir=workdir,
        checkpoint_every=every, eval_fn=eval_fn,
        eval_every=cfg.eval_every,
        log_every=_checks.check_int('log_every', cfg.log_every))
    params = jax.device_get(state.params)
    if not all(np.all(np.isfinite(v)) for v in jax.tree.leaves(params)):
      raise ValueError('ltx pretraining diverged: the explainer parameters '
                       'hold NaN or inf (the model returned NaN or inf on '
                       'masked copies of x, or learning_rate is too large).')
  explainer = LTXExplainer(params=params, model=box, net=net, frozen=frozen,
                           config=ml_collections.FrozenConfigDict(cfg),
                           grid=grid)
  return (explainer, dict(history)) if return_history else explainer


def _check_settings(cfg: Any) -> None:
  _checks.check_choice('mode', cfg.mode, MODES)
  _checks.check_choice('mask_loss', cfg.mask_loss, MASK_LOSSES)
  _checks.check_choice('finetune_keep', cfg.finetune_keep, KEEP)
  for name in ('mask_weight', 'weight_decay'):
    v = cfg[name]
    if not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0:
      raise ValueError(f'{name} must be a finite number >= 0, got {v!r}.')
  _checks.check_positive('learning_rate', cfg.learning_rate)
  _checks.check_positive('finetune_lr', cfg.finetune_lr)
  if not 0.0 <= float(cfg.warmup_fraction) < 1.0:
    raise ValueError('warmup_fraction must be in [0, 1), got '
                     f'{cfg.warmup_fraction!r}.')
  if not isinstance(cfg.baseline, (int, float)) or not np.isfinite(
      cfg.baseline):
    raise ValueError(f'baseline must be a finite number, got '
                     f'{cfg.baseline!r}.')
  _check_steps(cfg.finetune_steps)


def _check_steps(steps: Any) -> int:
  if (isinstance(steps, bool) or not isinstance(steps, (int, np.integer))
      or steps < 0):
    raise ValueError(f'finetune_steps must be an int >= 0 (0 = pLTX), got '
                     f'{steps!r}.')
  return int(steps)


# ----------------------------------------------------------------------------
# Per-instance finetuning (LTX) and pLTX masks.


@functools.partial(jax.jit, static_argnames=('chunk',))
def _masks_core(e: LTXExplainer, x: Array, chunk: int) -> Array:
  return bb.map_batches(
      lambda xc: nets.upsample_bilinear(e.net.apply({'params': e.params}, xc),
                                        xc.shape[1:3]), x, chunk)


def masks(explainer: LTXExplainer, x: Any) -> Array:
  """pLTX masks: one forward pass of the pretrained explainer, `x[b, H, W,
  C] -> [b, H, W]` in (0, 1) (jitted, `chunk_size` rows per call)."""
  e = _check_explainer(explainer)
  x = _checks.check_model_input(e.model, _checks.as_array('x', x), 'x')
  return _masks_core(e, x, min(int(e.config.chunk_size), x.shape[0]))


def finetune_one(e: LTXExplainer, x: Array, c: Array, steps: int
                 ) -> tuple[Array, Array, Array]:
  """LTX on one example (traceable): `steps` AdamW steps from the pretrained
  parameters on `x[H, W, C]`, class `c` `[]`.

  Returns `(kept mask [H, W], its objective [], its step [] int)`: the
  mask of the step 0..steps (the parameters after that many updates) with
  the lowest objective (`finetune_keep='objective'`), or the last one.
  """
  cfg = e.config
  obj = _objective_fn(e.net, e.model, cfg)
  tx = finetune_optimizer(cfg, e.frozen)
  xb, cb = x[None], c[None]

  def value(p):
    loss, aux = obj(p, xb, cb)
    return loss[0], aux['mask'][0]

  grad_fn = jax.value_and_grad(value, has_aux=True)
  last = cfg.finetune_keep == 'last'

  def step(carry, i):
    p, s, best_l, best_m, best_i = carry
    (loss, m), g = grad_fn(p)
    better = jnp.logical_or(last, loss < best_l)
    best_l = jnp.where(better, loss, best_l)
    best_m = jnp.where(better, m, best_m)
    best_i = jnp.where(better, i, best_i)
    u, s = tx.update(g, s, p)
    return (optax.apply_updates(p, u), s, best_l, best_m, best_i), None

  p0 = e.params
  init = (p0, tx.init(p0), jnp.array(jnp.inf, jnp.float32),
          jnp.zeros(x.shape[:2], jnp.float32), jnp.array(0, jnp.int32))
  (p, _, best_l, best_m, best_i), _ = jax.lax.scan(
      step, init, jnp.arange(steps, dtype=jnp.int32))
  loss, m = value(p)
  better = jnp.logical_or(last, loss < best_l)
  return (jnp.where(better, m, best_m), jnp.where(better, loss, best_l),
          jnp.where(better, steps, best_i))


@functools.partial(jax.jit, static_argnames=('steps', 'chunk'))
def _finetune_core(e: LTXExplainer, x: Array, c: Array, steps: int,
                   chunk: int) -> tuple[Array, Array, Array]:
  fn = jax.vmap(lambda xi, ci: finetune_one(e, xi, ci, steps))
  return bb.map_batches(lambda a: fn(*a), (x, c), chunk)


def _check_explainer(explainer: Any) -> LTXExplainer:
  if not isinstance(explainer, LTXExplainer):
    raise ValueError('explainer must be an LTXExplainer (from ltx.fit), got '
                     f'{type(explainer).__name__}.')
  return explainer


def explain(explainer: LTXExplainer, x: Any, *, key: Any = None,
            target: Any = None, finetune_steps: int | None = None,
            return_info: bool = False
            ) -> protocol.Explanation | tuple[protocol.Explanation,
                                              dict[str, Array]]:
  """LTX masks of `x`: every example finetuned from the pretrained explainer
  (all at once: vmapped per-example parameter copies), the kept mask
  returned.

  Args:
    explainer: from `fit`.
    x: `[batch, H, W, C]`.
    key: unused (finetuning is deterministic); checked like every key.
    target: the class whose cross-entropy the mask keeps: None (the black
      box's prediction on x), an int, or int `[batch]`. With
      `mode='target'` pretraining, pass the labels here.
    finetune_steps: T per-instance steps (None: `config.finetune_steps`);
      0 gives pLTX (the pretrained explainer's mask, one forward pass).
    return_info: also return `{'objective': [batch], 'step': int [batch]}`,
      the kept mask's objective and step.
  Returns:
    `Explanation(scores=[batch, H, W])`, masks in (0, 1) (1 = kept).
  Raises:
    ValueError: an explainer not from `fit`, bad x, target or key,
      `finetune_steps < 0`, a model that returns NaN or inf on x or on its
      masked copies.
  """
  e = _check_explainer(explainer)
  cfg = e.config
  steps = _check_steps(cfg.finetune_steps if finetune_steps is None
                       else finetune_steps)
  _checks.as_key('key', key, default_seed=0, method='ltx')
  x = _checks.check_model_input(e.model, _checks.as_array('x', x), 'x')
  n = x.shape[0]
  outputs = bb.forward_in_chunks(e.model, x, 1024)
  _checks.check_finite_outputs(outputs, method='ltx', where='x')
  c = bb.resolve_target(outputs, target, n, num_outputs=e.model.num_outputs,
                        model=e.model.name)
  chunk = min(_checks.check_chunk_size(cfg.chunk_size), n)
  if steps == 0 and not return_info:
    m = _masks_core(e, x, chunk)
  else:
    m, loss, step = _finetune_core(e, x, jnp.asarray(c, jnp.int32), steps,
                                   chunk)
  _checks.check_finite_outputs(m, method='ltx', where='x')
  if steps > 0 or return_info:
    # A NaN objective at every step would keep no step: raise instead.
    _checks.check_finite_outputs(loss, method='ltx',
                                 where='masked copies of x (the objective)')
  out = protocol.Explanation(scores=m)
  if return_info:
    return out, {'objective': loss, 'step': step}
  return out


__all__ = [
    'KEEP', 'LTXExplainer', 'MASK_LOSSES', 'MODES', 'NETS', 'copy_matching',
    'default_config', 'explain', 'finetune_one', 'finetune_optimizer', 'fit',
    'make_net', 'masks', 'objective',
]
