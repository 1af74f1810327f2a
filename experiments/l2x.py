r"""L2X experiments: explain a black box with L2X and baselines, score them.

  python -m experiments.l2x --config=experiments/configs/l2x.py:switch \
      --workdir=/tmp/l2x_switch

Pipeline of `run(config, workdir)` (data flows one way):

  data (synthetic with ground truth, Fashion-MNIST, tfds imdb_reviews)
  -> black box ('oracle' = the true P(Y|X) of a synthetic set, or an
     MLP / CNN / text CNN trained into `<workdir>/blackbox`, resumable)
  -> EVAL-X evaluator (trained on random Bernoulli group masks)
  -> L2X fit (timed; compile time split off with jax.monitoring events)
  -> L2X explanations of the test set (timed: first call compiles, the
     second identical call gives explain_per_second)
  -> baselines at the same k: random groups, top-k of gradient saliency,
     of integrated gradients and of KernelSHAP (costly ones on the first
     rows, see `config.baseline_num_explain`)
  -> metrics (median rank, TPR/FDR, post-hoc accuracy, EVAL-X accuracy),
     `metrics.json`, `figures/*.png`, a printed table.

Sweep mode (every data set x seed x sampler, one markdown table; the black
box, EVAL-X and the baselines are computed once per data set and seed):

  python -m experiments.l2x --config=experiments/configs/l2x.py:xor \
      --workdir=/tmp/l2x_sweep \
      --sweep_variants=xor,orange_skin,nonlinear_additive,switch \
      --sweep_seeds=0,1,2 --sweep_samplers=concrete,subset,straight_through

  # more settings: --sweep_setting='LABEL:key=value,key=value' (repeatable),
  # e.g. --sweep_setting='subset_tau0.5:sampler=subset,tau=0.5'

`--config.*` overrides given on the command line apply to every variant of a
sweep. Each run writes `<workdir>/<variant>/<label>/seed<s>/metrics.json`
(reused when present, so an interrupted sweep resumes) and the tables go to
`<workdir>/table.md` (or `--sweep_out`). Metric keys: see
experiments/configs/l2x.py.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import functools
import json
import os
import time
from typing import Any, Callable, Mapping, Sequence

from absl import app
from absl import flags
from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags
import numpy as np

from experiments import common
from experiments.common import load_average  # re-exported
from experiments.common import timed  # re-exported
from experiments.configs import l2x as l2x_configs
from experiments.l2x_report import pyplot
from experiments.l2x_report import plot_patches  # re-exported
from experiments.l2x_report import plot_tabular  # re-exported
from experiments.l2x_report import plot_tokens  # re-exported
from experiments.l2x_report import sweep_markdown  # re-exported
from xai_jax import blackbox as bb
from xai_jax import l2x
from xai_jax import masking
from xai_jax import metrics as xm
from xai_jax import models
from xai_jax import nets
from xai_jax import train
from xai_jax.attribution import gradients
from xai_jax.data import synthetic

# Flags are defined by `_define_flags()` when this module runs as a binary, so
# that `experiments.quickstart`, tests and colabs can import it.
_CONFIG = _WORKDIR = _SWEEP_VARIANTS = _SWEEP_SEEDS = None
_SWEEP_SAMPLERS = _SWEEP_SETTING = _SWEEP_OUT = None

TABULAR = l2x_configs.TABULAR
IMAGE_DATA = ('fashion_mnist', 'images')
TEXT_DATA = ('text', 'imdb')
BASELINES = l2x_configs.BASELINES
BLACKBOXES = {'tabular': ('oracle', 'mlp'), 'image': ('cnn',),
              'text': ('text_cnn',)}
# Fields of the config that are L2X hyper-parameters (`l2x.default_config`).
L2X_FIELDS = ('tau', 'sampler', 'sampler_kwargs', 'optimizer',
              'learning_rate', 'batch_size', 'epochs', 'num_steps', 'l2',
              'activation', 'realx', 'realx_num_steps', 'realx_keep_prob',
              'approximator', 'log_every', 'steps_per_call', 'seed')
METHODS = ('l2x',) + BASELINES
# Columns of the printed table.
COLUMNS = ('median_rank', 'tpr', 'fdr', 'posthoc_accuracy', 'evalx_accuracy',
           'approximator_accuracy', 'explain_per_second', 'num_explain')
NEG = -1e9  # score of positions that must never be selected (PAD tokens)


# =============================================================================
# Config checks and data.
# =============================================================================


def modality_of(config: ml_collections.ConfigDict) -> str:
  """'tabular', 'image' or 'text' for `config.data`."""
  if config.data in TABULAR:
    return 'tabular'
  if config.data in IMAGE_DATA:
    return 'image'
  if config.data in TEXT_DATA:
    return 'text'
  raise ValueError(f'config.data={config.data!r} is not supported; expected '
                   f'one of {list(TABULAR + IMAGE_DATA + TEXT_DATA)}.')


def _num_groups(config: ml_collections.ConfigDict) -> int:
  modality = modality_of(config)
  if modality == 'tabular':
    return synthetic.NUM_TABULAR_FEATURES
  if modality == 'image':
    return make_groups(config, (28, 28, 1)).num_groups
  return int(config.seq_len)


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises a ValueError naming the field for an unusable config (before
  anything is trained)."""
  modality = modality_of(config)
  if config.blackbox not in BLACKBOXES[modality]:
    raise ValueError(
        f'config.blackbox={config.blackbox!r} is not available for '
        f'config.data={config.data!r} ({modality}); expected one of '
        f'{list(BLACKBOXES[modality])}.')
  if modality == 'image':  # a patch size that does not divide the image
    make_groups(config, (28, 28, 1))
  d = _num_groups(config)
  k = config.k
  if isinstance(k, bool) or not isinstance(k, int) or k < 1:
    raise ValueError(f'config.k must be a positive int, got {k!r}.')
  if k > d:
    raise ValueError(f'config.k={k} is larger than the number of groups d={d}'
                     f' of config.data={config.data!r}; choose k <= {d}.')
  if config.sampler not in l2x_configs.SAMPLERS:
    raise ValueError(f'config.sampler={config.sampler!r}: expected one of '
                     f'{list(l2x_configs.SAMPLERS)} (hard top-k has no '
                     'gradient).')
  if not float(config.tau) > 0:
    raise ValueError(f'config.tau must be > 0, got {config.tau!r}.')
  if config.approximator not in l2x.APPROXIMATORS:
    raise ValueError(f'config.approximator={config.approximator!r}: expected '
                     f'one of {list(l2x.APPROXIMATORS)}.')
  if config.approximator == 'blackbox' and (modality == 'text' or
                                            config.realx):
    raise ValueError("config.approximator='blackbox' (q = the black box on "
                     'x_S) needs float inputs (tabular, images) and '
                     'realx=False.')
  for b in config.baselines:
    if b not in BASELINES:
      raise ValueError(f'Unknown baseline {b!r} in config.baselines; expected '
                       f'names from {list(BASELINES)}.')
  if len(set(config.baselines)) != len(config.baselines):
    raise ValueError(f'config.baselines lists a baseline twice: '
                     f'{list(config.baselines)}.')
  if config.data == 'fashion_mnist' and config.classes:
    if len(config.classes) != 2:
      raise ValueError(f'config.classes must be two class ids, got '
                       f'{config.classes!r}.')
  for name in ('num_train', 'num_test'):
    if not isinstance(config[name], int) or config[name] < 1:
      raise ValueError(f'config.{name} must be a positive int, got '
                       f'{config[name]!r}.')


def make_groups(config: ml_collections.ConfigDict,
                input_shape: Sequence[int]) -> masking.FeatureGroups:
  """The feature groups k is counted over: features, patches or tokens."""
  modality = modality_of(config)
  if modality == 'tabular':
    return masking.feature_groups(tuple(input_shape))
  if modality == 'image':
    return masking.patch_groups(tuple(input_shape), config.patch)
  return masking.token_groups(int(input_shape[0]))


def load_data(config: ml_collections.ConfigDict
              ) -> tuple[synthetic.Dataset, synthetic.Dataset]:
  """Train and test sets of `config.data` (synthetic: train from seed
  `2 * seed`, test from `2 * seed + 1`, as `experiments.common`)."""
  name = config.data
  s_train, s_test = 2 * config.seed, 2 * config.seed + 1
  if name in TABULAR:
    return (synthetic.make_tabular(name, config.num_train, s_train),
            synthetic.make_tabular(name, config.num_test, s_test))
  if name == 'images':
    c = config.blackbox_train.model_kwargs.num_classes
    kw = dict(num_classes=c, patch=config.patch)
    return (synthetic.make_images(config.num_train, s_train, **kw),
            synthetic.make_images(config.num_test, s_test, **kw))
  if name == 'text':
    kw = dict(seq_len=config.seq_len, vocab_size=config.vocab_size,
              num_planted=config.get('num_planted', config.k))
    return (synthetic.make_text(config.num_train, s_train, **kw),
            synthetic.make_text(config.num_test, s_test, **kw))
  if name == 'fashion_mnist':
    from xai_jax.data import fashion_mnist  # pylint: disable=g-import-not-at-top
    d = config.data_dir or None
    tr = fashion_mnist.load_fashion_mnist('train', data_dir=d).subset(
        slice(0, config.num_train))
    te = fashion_mnist.load_fashion_mnist('test', data_dir=d).subset(
        slice(0, config.num_test))
    if config.classes:
      tr = fashion_mnist.class_pair(tr, tuple(config.classes))
      te = fashion_mnist.class_pair(te, tuple(config.classes))
    return tr, te
  if name == 'imdb':
    from xai_jax.data import tfds as tfds_data  # pylint: disable=g-import-not-at-top
    if not config.data_dir:
      raise ValueError('config.data_dir must point at a tfds data_dir holding '
                       'a prepared imdb_reviews (no downloads are made).')
    tfds_name = config.get('tfds_name', 'imdb_reviews')
    tr = tfds_data.load_tfds(tfds_name, 'train', data_dir=config.data_dir,
                             task='text', seq_len=config.seq_len,
                             vocab_size=config.vocab_size,
                             num_examples=config.num_train)
    te = tfds_data.load_tfds(tfds_name, 'test', data_dir=config.data_dir,
                             task='text', seq_len=config.seq_len,
                             vocab=tr.meta['vocab'],
                             num_examples=config.num_test)
    return tr, te
  raise ValueError(f'Unknown data set config.data={name!r}.')


def soft_or_labels(ds: synthetic.Dataset) -> np.ndarray:
  """Soft targets P(Y|X) for the tabular sets, else the int labels."""
  if ds.probs is not None and np.asarray(ds.x).ndim == 2 and \
      np.issubdtype(np.asarray(ds.x).dtype, np.floating):
    return np.asarray(ds.probs)
  return np.asarray(ds.y)


def eval_labels(ds: synthetic.Dataset) -> np.ndarray:
  """Int labels to score accuracy against (tabular: argmax P(Y|X))."""
  t = soft_or_labels(ds)
  return np.argmax(t, -1).astype(np.int32) if t.ndim == 2 else t


# =============================================================================
# Black boxes.
# =============================================================================


def _oracle_fn(name: str) -> Callable[[jax.Array], jax.Array]:
  """Logits `[n, 2]` whose softmax is the true P(Y|X) of an L2X set.

  Centered log-odds `[-g/2, g/2]`, g = log P(Y=1|X) - log P(Y=0|X), computed
  in log space: the raw logit of either class has gradient +-dg/2, which
  never saturates (a probability box's gradient underflows to 0 where
  |f| > ~17 in float32, e.g. for ~40% of the nonlinear additive rows).
  """
  softplus = jax.nn.softplus

  def fn(x):
    if name == 'switch':
      s = 2.0 * synthetic.SWITCH_SHIFT * x[..., 9]
      log_w, log_1mw = -softplus(-s), -softplus(s)   # P(orange | X10)
      fo = synthetic.orange_skin_logit(x[..., 0:4])
      fa = synthetic.nonlinear_additive_logit(x[..., 4:8])
      # P(Y=1 | f) = 1 / (1 + e^f): log = -softplus(f).
      lp1 = jnp.logaddexp(log_w - softplus(fo), log_1mw - softplus(fa))
      lp0 = jnp.logaddexp(log_w - softplus(-fo), log_1mw - softplus(-fa))
      g = lp1 - lp0
    else:
      f = {'xor': synthetic.xor_logit,
           'orange_skin': synthetic.orange_skin_logit,
           'nonlinear_additive': synthetic.nonlinear_additive_logit}[name](x)
      g = -f
    return jnp.stack([-0.5 * g, 0.5 * g], axis=-1)

  fn.__name__ = f'oracle_{name}'
  return fn


@functools.lru_cache(maxsize=None)
def oracle_blackbox(name: str) -> bb.BlackBox:
  """The true P(Y|X) of an L2X synthetic set as a logits black box.

  `softmax(box(x)) == data.synthetic.TABULAR[name](x)` (up to float
  rounding); see `_oracle_fn`.
  """
  if name not in synthetic.TABULAR:
    raise ValueError(f"blackbox='oracle' exists for the synthetic tabular "
                     f'sets {list(synthetic.TABULAR)}, got {name!r}.')
  return bb.from_jax(_oracle_fn(name),
                     input_shape=(synthetic.NUM_TABULAR_FEATURES,),
                     output='logits', name=f'oracle_{name}')


def _model_kwargs(config: ml_collections.ConfigDict,
                  train_ds: synthetic.Dataset) -> dict[str, Any]:
  kw = config.blackbox_train.model_kwargs.to_dict()
  kw['num_classes'] = int(train_ds.num_classes)
  if config.blackbox == 'text_cnn':
    kw['vocab_size'] = int(config.vocab_size)
  return kw


def make_blackbox(config: ml_collections.ConfigDict,
                  train_ds: synthetic.Dataset, test_ds: synthetic.Dataset,
                  workdir: str | None) -> tuple[bb.BlackBox, dict[str, float]]:
  """The explained model and its metrics (`blackbox/...`).

  'oracle': the true P(Y|X) (no training). Otherwise a registry model
  trained with `models.fit_classifier` into `<workdir>/blackbox` (resumed
  when a checkpoint exists), on soft targets P(Y|X) for tabular data.
  """
  info: dict[str, float] = {}
  if config.blackbox == 'oracle':
    box = oracle_blackbox(config.data)
    info['blackbox/train_seconds'] = 0.0
  else:
    tc = config.blackbox_train
    wd = None if workdir is None else os.path.join(workdir, 'blackbox')
    with timed() as t:
      box, last = models.fit_classifier(
          config.blackbox, _model_kwargs(config, train_ds),
          np.asarray(train_ds.x), soft_or_labels(train_ds), key=config.seed,
          num_steps=tc.num_steps, batch_size=tc.batch_size,
          optimizer={'optimizer': tc.optimizer,
                     'learning_rate': tc.learning_rate},
          workdir=wd, log_every=tc.log_every,
          checkpoint_every=tc.checkpoint_every)
    info['blackbox/train_seconds'] = t.wall
    info['blackbox/train_accuracy'] = float(last.get('accuracy', np.nan))
  info['blackbox/test_accuracy'] = models.accuracy(
      box, np.asarray(test_ds.x), eval_labels(test_ds))
  return box, info


def _text_module(config: ml_collections.ConfigDict,
                 train_ds: synthetic.Dataset) -> nn.Module:
  return models.make_model('text_cnn', **_model_kwargs(config, train_ds))


def embedding_blackbox(box: bb.BlackBox, module: nn.Module
                       ) -> tuple[bb.BlackBox, Callable[[Any], jax.Array]]:
  """A float-input view of a `models.TextCNN` box for gradient baselines.

  Input `z [n, L, D + 1]`: the token embeddings and, in the last channel,
  1 for real tokens and 0 for PAD (the model zeroes PAD embeddings). The
  second return value maps token ids to that input. Gradients of the box
  w.r.t. the first D channels are the embedding gradients; summed over D
  they give one score per token.
  """
  params = box.params

  def apply_fn(variables, z):
    e, valid = z[..., :-1], z[..., -1]
    tokens = (valid > 0.5).astype(jnp.int32)  # ids only matter through > 0

    def interceptor(next_fun, args, kwargs, context):
      if context.module.name == 'embed' and context.method_name == '__call__':
        return e
      return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
      return module.apply(variables, tokens)

  table = params['params']['embed']['embedding']

  def to_input(tokens):
    tokens = jnp.asarray(tokens)
    valid = (tokens > 0).astype(jnp.float32)[..., None]
    return jnp.concatenate([jnp.take(table, tokens, axis=0) * valid, valid],
                           axis=-1)

  l = box.input_shape[0]
  ebox = bb.from_jax(apply_fn, input_shape=(l, table.shape[1] + 1),
                     params=params, output='logits', name='text_embeddings')
  return ebox, to_input


# =============================================================================
# Setup shared by L2X and the baselines.
# =============================================================================


@dataclasses.dataclass
class Setup:
  """Everything the explainers and metrics of one (config, seed) need."""
  config: ml_collections.ConfigDict
  modality: str
  train_ds: synthetic.Dataset
  test_ds: synthetic.Dataset
  box: bb.BlackBox
  groups: masking.FeatureGroups
  evaluator: xm.Evaluator | None
  info: dict[str, float]
  text_module: nn.Module | None = None

  @property
  def k(self) -> int:
    return int(self.config.k)

  def ground_truth(self, rows: slice) -> np.ndarray | None:
    """Ground-truth groups `[n, d]` (features, patches or tokens) or None."""
    ds = self.test_ds
    if ds.ground_truth is None:
      return None
    if self.modality == 'image':
      gt = ds.meta.get('ground_truth_patches')
      return None if gt is None else np.asarray(gt)[rows]
    return np.asarray(ds.ground_truth)[rows]

  def pad(self, rows: slice) -> np.ndarray | None:
    """bool `[n, L]` PAD positions (text), else None."""
    if self.modality != 'text':
      return None
    return np.asarray(self.test_ds.x)[rows] == 0


def train_evaluator(config: ml_collections.ConfigDict,
                    train_ds: synthetic.Dataset,
                    groups: masking.FeatureGroups, modality: str
                    ) -> tuple[xm.Evaluator, float]:
  """The EVAL-X evaluator (Jethani et al. 2021) and its training seconds."""
  ec = config.evalx
  kw = dict(ec.model_kwargs.to_dict()) if ec.model_kwargs else {}
  model, train_kw, eval_kw = None, None, None
  c = int(train_ds.num_classes)
  if ec.model == 'mlp':
    hidden = tuple(kw.get('hidden', (200, 200)))
  elif ec.model == 'cnn':
    model = models.make_model('cnn', num_classes=c, **kw)
    train_kw, eval_kw = {'train': True}, {'train': False}
    hidden = ()
  elif ec.model == 'text_cnn':
    kw.setdefault('vocab_size', int(config.vocab_size))
    for f in ('embed_dim', 'filters', 'hidden'):
      if f in config.blackbox_train.model_kwargs:
        kw.setdefault(f, config.blackbox_train.model_kwargs[f])
    model = models.make_model('text_cnn', num_classes=c, **kw)
    hidden = ()
  else:
    raise ValueError(f"config.evalx.model must be 'mlp', 'cnn' or 'text_cnn',"
                     f' got {ec.model!r}.')
  key = jax.random.fold_in(jax.random.key(config.seed), 7)
  with timed() as t:
    ev = xm.train_evalx(
        key, np.asarray(train_ds.x), soft_or_labels(train_ds), model=model,
        groups=groups, num_steps=ec.num_steps, batch_size=ec.batch_size,
        learning_rate=ec.learning_rate, keep_prob=ec.keep_prob, baseline=0,
        num_classes=c, hidden_sizes=hidden or (200, 200),
        train_kwargs=train_kw, eval_kwargs=eval_kw)
  return ev, t.wall


def prepare(config: ml_collections.ConfigDict, workdir: str | None) -> Setup:
  """Data, black box and EVAL-X evaluator of a config (checked first)."""
  check_config(config)
  modality = modality_of(config)
  train_ds, test_ds = load_data(config)
  logging.info('data %s: %d train, %d test rows, x %s', config.data,
               len(train_ds), len(test_ds), train_ds.x.shape[1:])
  groups = make_groups(config, train_ds.x.shape[1:])
  if config.k > groups.num_groups:  # e.g. a shorter tfds seq_len
    raise ValueError(f'config.k={config.k} is larger than the number of '
                     f'groups d={groups.num_groups}.')
  box, info = make_blackbox(config, train_ds, test_ds, workdir)
  logging.info('black box %s: test accuracy %.4f', box.name,
               info['blackbox/test_accuracy'])
  evaluator = None
  if config.evalx.num_steps > 0:
    evaluator, secs = train_evaluator(config, train_ds, groups, modality)
    info['evalx/train_seconds'] = secs
    full = xm.evalx_accuracy(
        evaluator, np.asarray(test_ds.x),
        np.ones((len(test_ds), groups.num_groups), np.float32),
        eval_labels(test_ds))
    info['evalx/full_accuracy'] = float(full['evalx_accuracy'])
  text_module = _text_module(config, train_ds) if modality == 'text' else None
  return Setup(config=config, modality=modality, train_ds=train_ds,
               test_ds=test_ds, box=box, groups=groups, evaluator=evaluator,
               info=info, text_module=text_module)


# =============================================================================
# Scoring a selection.
# =============================================================================


def _rows(n_total: int, n: int) -> slice:
  return slice(0, n_total if n is None or n < 0 else min(int(n), n_total))


def score_selection(setup: Setup, selection: np.ndarray,
                    scores: np.ndarray | None, rows: slice, *,
                    absolute: bool = True, key: jax.Array) -> dict[str, float]:
  """Ground-truth and black-box metrics of a selection `[n, d]` (1 = kept).

  `scores` (`[n, d]`) rank all groups for the median rank (None: rank the
  selection itself, L2X's own metric on its k-hot explanation).
  """
  out: dict[str, float] = {}
  x = np.asarray(setup.test_ds.x)[rows]
  sel = np.asarray(selection, np.float32)
  gt = setup.ground_truth(rows)
  if gt is not None:
    if setup.modality == 'tabular':
      mr = xm.median_rank(sel if scores is None else scores, gt, key,
                          absolute=absolute)
      out['median_rank'] = float(mr['median_rank_mean'])
      out['median_rank_std'] = float(mr['median_rank_std'])
    r = xm.tpr_fdr_at_k(None, gt, selection=sel > 0.5)
    out['tpr'], out['fdr'] = float(r['tpr_mean']), float(r['fdr_mean'])
  if setup.config.data == 'switch':
    out['switch_selects_x10'] = float(np.mean(sel[:, 9] > 0.5))
  chunk = 4096 if setup.modality == 'tabular' else 512
  ph = xm.posthoc_accuracy(setup.box, x, sel, groups=setup.groups,
                           baseline=0, batch_size=chunk)
  out['posthoc_accuracy'] = float(ph['posthoc_accuracy'])
  if setup.evaluator is not None:
    ev = xm.evalx_accuracy(setup.evaluator, x, sel,
                           eval_labels(setup.test_ds)[rows],
                           groups=setup.groups, batch_size=chunk)
    out['evalx_accuracy'] = float(ev['evalx_accuracy'])
  out['num_explain'] = float(x.shape[0])
  return out


# =============================================================================
# L2X.
# =============================================================================


class MarginalImputingApproximator(nets.MLPApproximator):
  """L2X's tabular approximator with unselected features *imputed*, not zeroed.

  `x_tilde = V * x + (1 - V) * x_other`, where `x_other` is the same
  features of another row of the batch (the batch rolled by one row: a draw
  from the data's marginal, as the rows are shuffled), then L2X's
  [Dense(200) -> act -> BatchNorm] x 2 -> Dense(c) (`nets.MLPApproximator`).
  With zeros (L2X Eq. 6) the approximator sees *which* features were
  selected and can decode a label or a regime from the selection pattern
  (REAL-X, Jethani et al. 2021: the selector then need not select the
  informative feature itself, e.g. X10 of the switch set); imputed values
  are indistinguishable from real ones, so only the selected values carry
  information. Needs batches of at least 2 rows; the explanation (the
  selector's top-k) does not use the approximator.
  """

  def masked_input(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    x = x.astype(jnp.float32)
    m = jnp.broadcast_to(mask.astype(jnp.float32), x.shape)
    return m * x + (1.0 - m) * jnp.roll(x, 1, axis=0)


def l2x_config(config: ml_collections.ConfigDict, modality: str
               ) -> ml_collections.ConfigDict:
  """`l2x.default_config(modality)` with the experiment's fields."""
  c = l2x.default_config(modality)
  for f in L2X_FIELDS:
    v = config[f]
    if isinstance(v, ml_collections.ConfigDict):
      v = ml_collections.ConfigDict(v.to_dict())
    c[f] = v
  return c


def fit_l2x(setup: Setup, config: ml_collections.ConfigDict | None = None,
            workdir: str | None = None
            ) -> tuple[l2x.L2XModel, dict[str, float]]:
  """Trains L2X on the setup's black box; returns the model and timings."""
  config = setup.config if config is None else config
  modality = setup.modality
  cfg = l2x_config(config, modality)
  vocab = int(config.vocab_size) if modality == 'text' else None
  d = setup.groups.num_groups
  selector = approximator = None
  if config.selector_kwargs:
    selector = nets.make_selector(
        modality, num_groups=d, groups=setup.groups,
        activation=config.activation, vocab_size=vocab,
        **config.selector_kwargs.to_dict())
  masking_mode = config.get('approximator_masking', 'zero')
  if config.approximator == 'blackbox' and (
      masking_mode != 'zero' or config.approximator_kwargs):
    raise ValueError("config.approximator='blackbox' (q = the frozen black "
                     'box) takes no approximator_kwargs and needs '
                     "approximator_masking='zero'.")
  if masking_mode == 'impute':
    if modality != 'tabular':
      raise ValueError("config.approximator_masking='impute' is for tabular "
                       'data only.')
    approximator = MarginalImputingApproximator(
        num_classes=int(setup.train_ds.num_classes),
        activation=config.activation,
        **(config.approximator_kwargs.to_dict()
           if config.approximator_kwargs else {}))
  elif masking_mode != 'zero':
    raise ValueError("config.approximator_masking must be 'zero' (L2X) or "
                     f"'impute', got {masking_mode!r}.")
  elif config.approximator_kwargs:
    approximator = nets.make_approximator(
        modality, num_classes=int(setup.train_ds.num_classes), k=config.k,
        activation=config.activation, vocab_size=vocab,
        **config.approximator_kwargs.to_dict())
  wd = None
  if workdir is not None and config.checkpoint:
    wd = os.path.join(workdir, 'l2x')
  key = jax.random.fold_in(jax.random.key(config.seed), 1)
  load0 = load_average()
  with timed() as t:
    model, hist = l2x.fit(
        key, setup.box, np.asarray(setup.train_ds.x), k=config.k,
        groups=setup.groups, modality=modality, config=cfg,
        vocab_size=vocab, selector=selector, approximator=approximator,
        workdir=wd, return_history=True)
    jax.block_until_ready(model.params)
  info = {'train_seconds': t.wall, 'train_compile_seconds': t.compile,
          'train_seconds_excl_compile': t.excl_compile,
          'train_cpu_seconds': t.cpu,
          'train_steps': float(np.asarray(hist['step'])[-1]) if len(
              hist.get('step', ())) else float('nan'),
          'load_average': 0.5 * (load0 + load_average())}
  logging.info('L2X fit: %.1f s (%.1f s compile), load %.1f', t.wall,
               t.compile, info['load_average'])
  return model, info


def explain_l2x(setup: Setup, model: l2x.L2XModel
                ) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
  """L2X explanations of the whole test set, timed (compile, then timed)."""
  x = np.asarray(setup.test_ds.x)
  with timed() as first:
    jax.block_until_ready(l2x.explain(model, x))
  with timed() as second:
    mask, scores = jax.block_until_ready(l2x.explain(model, x))
  n = x.shape[0]
  info = {'explain_seconds': second.wall,
          'explain_per_second': n / max(second.wall, 1e-9),
          'explain_compile_seconds': max(first.wall - second.wall, 0.0),
          'explain_first_call_seconds': first.wall}
  return np.asarray(mask), np.asarray(scores), info


def l2x_metrics(setup: Setup, config: ml_collections.ConfigDict | None = None,
                workdir: str | None = None
                ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
  """Fits, explains and scores L2X; returns (metrics, {'l2x': mask})."""
  config = setup.config if config is None else config
  model, info = fit_l2x(setup, config, workdir)
  mask, scores, ex = explain_l2x(setup, model)
  info.update(ex)
  key = jax.random.fold_in(jax.random.key(config.seed), 2)
  rows = slice(0, mask.shape[0])
  info.update(score_selection(setup, mask, None, rows, key=key))
  if setup.modality == 'tabular':
    # The full ranking by the selector's logits (signed), as the baselines
    # are ranked by their full attributions; the k-hot `median_rank` above
    # is the original protocol.
    mr = xm.median_rank(scores, setup.ground_truth(rows), key,
                        absolute=False)
    info['median_rank_scores'] = float(mr['median_rank_mean'])
  x = np.asarray(setup.test_ds.x)
  info['approximator_accuracy'] = l2x.approximator_accuracy(
      model, x, setup.box)
  return info, {'l2x': mask}


# =============================================================================
# Baselines: top-k of attributions at the same k.
# =============================================================================


def baseline_scores(setup: Setup, name: str, rows: slice,
                    key: jax.Array) -> np.ndarray:
  """Group scores `[n, d]` of a baseline (higher = more important; PAD
  tokens get `NEG`)."""
  config = setup.config
  x = np.asarray(setup.test_ds.x)[rows]
  n, d = x.shape[0], setup.groups.num_groups
  kw = dict(config.baseline_kwargs.get(name, {}) or {})
  if name == 'random':  # uniform random k groups (numpy: nothing to compile)
    seed = [int(w) for w in np.asarray(jax.random.key_data(key)).ravel()]
    s = np.random.default_rng(seed).standard_normal((n, d))
  elif name in ('saliency', 'integrated_gradients'):
    gbox, gx = setup.box, jnp.asarray(x)
    if setup.modality == 'text':
      gbox, to_input = embedding_blackbox(setup.box, setup.text_module)
      gx = to_input(x)
      if name == 'integrated_gradients':
        # x' = zero embeddings, the validity channel kept.
        kw['baseline'] = gx.at[..., :-1].set(0.0)
    if name == 'saliency':
      a = gradients.saliency(gbox, gx, space='raw', absolute=True, **kw)
    else:
      a = gradients.integrated_gradients(gbox, gx, space='raw', key=key,
                                         **kw)
    a = jnp.asarray(a)
    if setup.modality == 'text':
      s = jnp.sum(a[..., :-1], axis=-1)
    elif setup.modality == 'image':
      s = setup.groups.reduce(a, 'sum')
    else:
      s = a.reshape(n, d)
    s = np.asarray(s)
  elif name == 'kernel_shap':
    from xai_jax.attribution import shap  # pylint: disable=g-import-not-at-top
    s = np.asarray(shap.kernel_shap(setup.box, jnp.asarray(x), key=key,
                                    groups=setup.groups, space='raw', **kw))
  else:
    raise ValueError(f'Unknown baseline {name!r}; expected one of '
                     f'{list(BASELINES)}.')
  s = np.asarray(s, np.float32).reshape(n, d)
  if not np.all(np.isfinite(s)):
    raise FloatingPointError(f'{name} returned non-finite attributions.')
  pad = setup.pad(rows)
  if pad is not None:
    s = np.where(pad, NEG, s)
  return s


def baseline_metrics(setup: Setup
                     ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
  """Every baseline of `config.baselines`: explain (timed), top-k, score.

  Returns flat metrics `<baseline>/<metric>` and each baseline's selection.
  Ranking: by |score| for tabular data (L2X's convention), by the signed
  score for images and text (`config.rank_signed`: positive evidence for
  the explained class; saliency is |gradient| anyway).
  """
  config = setup.config
  out: dict[str, float] = {}
  selections: dict[str, np.ndarray] = {}
  n_test = len(setup.test_ds)
  absolute = not config.rank_signed
  for i, name in enumerate(config.baselines):
    if name == 'kernel_shap' and not _has_kernel_shap():
      logging.warning('kernel_shap is not available; skipped.')
      continue
    rows = _rows(n_test, config.baseline_num_explain.get(name, -1))
    key = jax.random.fold_in(jax.random.key(config.seed), 100 + i)
    with timed() as t:
      s = baseline_scores(setup, name, rows, key)
    if absolute and setup.modality == 'tabular':
      rank = np.abs(s)
    else:
      rank = s
    sel = np.asarray(xm.top_k_mask(rank, setup.k, absolute=False),
                     np.float32)
    m = score_selection(setup, sel, s, rows, absolute=absolute,
                        key=jax.random.fold_in(key, 1))
    n = rows.stop - rows.start
    m['explain_seconds'] = t.wall
    m['explain_compile_seconds'] = t.compile
    m['explain_per_second'] = n / max(t.excl_compile, 1e-9)
    out.update({f'{name}/{k}': v for k, v in m.items()})
    selections[name] = sel
    logging.info('%s: %s', name, {k: round(v, 4) for k, v in m.items()})
  return out, selections


def _has_kernel_shap() -> bool:
  try:
    from xai_jax.attribution import shap  # pylint: disable=g-import-not-at-top
  except ImportError:
    return False
  return hasattr(shap, 'kernel_shap')


def save_figures(setup: Setup, selections: Mapping[str, np.ndarray],
                 workdir: str) -> list[str]:
  """Writes the figure of the modality into `<workdir>/figures/`."""
  plt = pyplot()
  os.makedirs(os.path.join(workdir, 'figures'), exist_ok=True)
  rows = int(setup.config.num_figure_rows)
  ds = setup.test_ds
  if setup.modality == 'tabular':
    fig = plot_tabular(selections, ds, setup.k)
    name = 'selection_frequency.png'
  elif setup.modality == 'image':
    x = np.asarray(ds.x)[:rows]
    pred = np.asarray(setup.box.predict(jnp.asarray(x)))
    cn = ds.meta.get('class_names')
    titles = [str(cn[p]) if cn is not None else str(p) for p in pred]
    gt = setup.ground_truth(slice(0, rows))
    fig = plot_patches(x, selections, setup.groups, titles=titles,
                       ground_truth=gt)
    name = 'patches.png'
  else:
    x = np.asarray(ds.x)[:min(rows, 6)]
    pred = np.asarray(setup.box.predict(jnp.asarray(x)))
    gt = setup.ground_truth(slice(0, x.shape[0]))
    fig = plot_tokens(x, selections, ds.meta['vocab'], ground_truth=gt,
                      titles=[f'pred {p}' for p in pred])
    name = 'tokens.png'
  path = os.path.join(workdir, 'figures', name)
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return [path]


# =============================================================================
# One run.
# =============================================================================


SAME_ROWS_METRICS = ('median_rank', 'tpr', 'fdr', 'posthoc_accuracy',
                     'evalx_accuracy')


def same_rows_metrics(setup: Setup, l2x_selection: np.ndarray,
                      metrics: Mapping[str, float]) -> dict[str, float]:
  """L2X scored on exactly the rows each subsampled baseline explained.

  Costly baselines explain only the first `baseline_num_explain` test rows;
  for each of them this adds `l2x@<baseline>/<metric>`: L2X's selection on
  those same rows, so that the comparison is row for row.
  """
  out: dict[str, float] = {}
  n_all = int(l2x_selection.shape[0])
  key = jax.random.fold_in(jax.random.key(setup.config.seed), 2)
  for b in setup.config.baselines:
    n = int(metrics.get(f'{b}/num_explain', n_all))
    if n >= n_all:
      continue
    m = score_selection(setup, l2x_selection[:n], None, slice(0, n), key=key)
    out.update({f'l2x@{b}/{k}': v for k, v in m.items()
                if k in SAME_ROWS_METRICS + ('num_explain',)})
  return out


def method_table(metrics: Mapping[str, float], methods: Sequence[str]
                 ) -> dict[str, dict[str, float]]:
  """Rows = methods, columns = `COLUMNS` present in `metrics`."""
  rows: dict[str, dict[str, float]] = {}
  for m in methods:
    prefix = '' if m == 'l2x' else f'{m}/'
    r = {c: metrics[prefix + c] for c in COLUMNS if prefix + c in metrics}
    if r:
      rows[m] = r
  return rows


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """One experiment: data, black box, L2X, baselines, metrics.json, figure.

  Args:
    config: from `experiments/configs/l2x.py`.
    workdir: output folder (config.json, metrics.json, figures/, blackbox/,
      l2x/ checkpoints when `config.checkpoint`).

  Returns:
    The flat metrics written to `<workdir>/metrics.json`.
  """
  t0 = time.perf_counter()
  load0 = load_average()
  check_config(config)
  common.prepare_workdir(workdir, config)
  setup = prepare(config, workdir)
  metrics: dict[str, float] = dict(setup.info)
  l2x_m, selections = l2x_metrics(setup, config, workdir)
  metrics.update(l2x_m)
  base_m, base_sel = baseline_metrics(setup)
  metrics.update(base_m)
  metrics.update(same_rows_metrics(setup, selections['l2x'], metrics))
  selections.update(base_sel)
  metrics['run_seconds'] = time.perf_counter() - t0
  metrics['load_average'] = 0.5 * (load0 + load_average())
  train.write_metrics_json(workdir, metrics)
  save_figures(setup, selections, workdir)
  same = tuple(f'l2x@{b}' for b in config.baselines
               if f'l2x@{b}/num_explain' in metrics)
  print(common.format_table(
      method_table(metrics, ('l2x',) + same + tuple(config.baselines)),
      title=f'L2X {config.variant} (black box {config.blackbox}, sampler '
            f'{config.sampler}, tau {config.tau}, k {config.k}, seed '
            f'{config.seed})'))
  print(f'L2X train {metrics["train_seconds"]:.2f} s (compile '
        f'{metrics["train_compile_seconds"]:.2f} s, excl. compile '
        f'{metrics["train_seconds_excl_compile"]:.2f} s); explain '
        f'{metrics["explain_seconds"]:.3f} s for {int(metrics["num_explain"])}'
        f' rows (first call incl. compile '
        f'{metrics["explain_first_call_seconds"]:.3f} s); load average '
        f'{metrics["load_average"]:.1f}')
  return metrics


# =============================================================================
# Sweep: variants x seeds x L2X settings -> markdown tables.
# =============================================================================


def _leaves(c: Any, prefix: str = '') -> dict[str, Any]:
  out = {}
  for k in c.keys():
    v = c[k]
    if isinstance(v, ml_collections.ConfigDict):
      out.update(_leaves(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


def config_overrides(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The fields of `config` that differ from its variant's defaults (the
  `--config.*` overrides of the command line)."""
  base = _leaves(l2x_configs.get_config(config.variant))
  return {k: v for k, v in _leaves(config).items()
          if k not in base or base[k] != v}


def _set(config: ml_collections.ConfigDict, path: str, value: Any) -> None:
  *parents, leaf = path.split('.')
  node = config
  for p in parents:
    node = node[p]
  with node.ignore_type():
    node[leaf] = value


def parse_setting(text: str) -> tuple[str, dict[str, Any]]:
  """'LABEL:key=value,key=value' -> (label, {key: value}); values are Python
  literals where they parse (0.5, True, None, (1, 2)), else strings."""
  if ':' in text:
    label, body = text.split(':', 1)
  else:
    label, body = text, text
  fields: dict[str, Any] = {}
  for item in filter(None, (s.strip() for s in body.split(','))):
    if '=' not in item:
      if item in l2x_configs.SAMPLERS and not fields.get('sampler'):
        fields['sampler'] = item
        continue
      raise ValueError(f'Bad sweep setting item {item!r} in {text!r}; '
                       "expected 'key=value'.")
    k, v = item.split('=', 1)
    try:
      fields[k.strip()] = ast.literal_eval(v.strip())
    except (ValueError, SyntaxError):
      fields[k.strip()] = v.strip()
  return label.strip(), fields


def sweep(config: ml_collections.ConfigDict, workdir: str,
          variants: Sequence[str], seeds: Sequence[int],
          settings: Sequence[tuple[str, Mapping[str, Any]]],
          out_path: str | None = None) -> str:
  """Runs every variant x seed x L2X setting; returns (and writes) markdown.

  The data, black box, EVAL-X evaluator and baselines are computed once per
  variant and seed; each setting only refits L2X. Runs whose metrics.json
  exists are read instead of rerun.
  """
  overrides = config_overrides(config)
  overrides.pop('variant', None)
  overrides.pop('seed', None)
  for key in list(overrides):
    if key in ('data', 'k', 'activation', 'epochs', 'batch_size') or \
        key.startswith('blackbox_train.'):
      logging.warning('sweep: --config.%s=%r applies to every variant.', key,
                      overrides[key])
  results: dict[tuple[str, str, int], dict[str, float]] = {}
  loads = [load_average()]
  t_start = time.perf_counter()
  for variant in variants:
    for seed in seeds:
      cfg = l2x_configs.get_config(variant)
      for k, v in overrides.items():
        _set(cfg, k, v)
      cfg.seed = int(seed)
      todo = []
      for label, fields in settings:
        run_dir = os.path.join(workdir, variant, label, f'seed{seed}')
        path = os.path.join(run_dir, 'metrics.json')
        if os.path.exists(path):
          results[(variant, label, seed)] = common.read_json(path)
        else:
          todo.append((label, fields, run_dir))
      if not todo:
        continue
      common_dir = os.path.join(workdir, variant, f'_shared_seed{seed}')
      common.prepare_workdir(common_dir, cfg)
      setup = prepare(cfg, common_dir)
      base_path = os.path.join(common_dir, 'baselines.json')
      if os.path.exists(base_path):
        base_m = common.read_json(base_path)
      else:
        base_m, _ = baseline_metrics(setup)
        with open(base_path, 'w') as f:
          json.dump(base_m, f, indent=2, sort_keys=True)
      for label, fields, run_dir in todo:
        rc = copy.deepcopy(cfg)
        for k, v in fields.items():
          _set(rc, k, v)
        check_config(rc)
        common.prepare_workdir(run_dir, rc)
        m, sel = l2x_metrics(setup, rc, None)
        metrics = {**setup.info, **m, **base_m}
        metrics.update(same_rows_metrics(setup, sel['l2x'], metrics))
        train.write_metrics_json(run_dir, metrics)
        if seed == seeds[0]:
          save_figures(setup, sel, run_dir)
        results[(variant, label, seed)] = metrics
        loads.append(load_average())
        logging.info('sweep %s %s seed %d: median rank %s, train %.1f s',
                     variant, label, seed, metrics.get('median_rank'),
                     metrics['train_seconds'])
  md = sweep_markdown(results, variants, [s[0] for s in settings],
                      [int(s) for s in seeds], config, loads,
                      time.perf_counter() - t_start)
  out_path = out_path or os.path.join(workdir, 'table.md')
  os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
  with open(out_path, 'w') as f:
    f.write(md)
  return md


def _sweep_settings(config: ml_collections.ConfigDict
                    ) -> list[tuple[str, dict[str, Any]]]:
  settings = [(s, {'sampler': s}) for s in _SWEEP_SAMPLERS.value]
  settings += [parse_setting(s) for s in _SWEEP_SETTING.value]
  if not settings:
    settings = [(config.sampler, {})]
  labels = [s[0] for s in settings]
  if len(set(labels)) != len(labels):
    raise app.UsageError(f'Sweep setting labels must be unique: {labels}.')
  return settings


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
  if not _WORKDIR.value:
    raise app.UsageError('--workdir is required.')
  config = _CONFIG.value
  sweeping = (_SWEEP_VARIANTS.value or _SWEEP_SEEDS.value or
              _SWEEP_SAMPLERS.value or _SWEEP_SETTING.value)
  if not sweeping:
    run(config, _WORKDIR.value)
    return
  variants = _SWEEP_VARIANTS.value or [config.variant]
  for v in variants:
    if v not in l2x_configs.VARIANTS:
      raise app.UsageError(f'Unknown variant {v!r} in --sweep_variants; '
                           f'expected names from {list(l2x_configs.VARIANTS)}.')
  seeds = [int(s) for s in _SWEEP_SEEDS.value] or [int(config.seed)]
  md = sweep(config, _WORKDIR.value, variants, seeds, _sweep_settings(config),
             _SWEEP_OUT.value or None)
  print(md)


def _define_flags() -> None:
  """Defines the binary's flags (--config, --workdir, --sweep_*)."""
  global _CONFIG, _WORKDIR, _SWEEP_VARIANTS, _SWEEP_SEEDS
  global _SWEEP_SAMPLERS, _SWEEP_SETTING, _SWEEP_OUT
  _CONFIG = config_flags.DEFINE_config_file(
      'config', 'experiments/configs/l2x.py:switch',
      'Experiment config (file:variant).', lock_config=True)
  _WORKDIR = flags.DEFINE_string('workdir', None, 'Output folder.')
  _SWEEP_VARIANTS = flags.DEFINE_list(
      'sweep_variants', [], 'Sweep mode: config variants to run (default: '
      'the --config variant when other sweep flags are given).')
  _SWEEP_SEEDS = flags.DEFINE_list(
      'sweep_seeds', [], 'Sweep mode: seeds (default: config.seed).')
  _SWEEP_SAMPLERS = flags.DEFINE_list(
      'sweep_samplers', [], 'Sweep mode: one L2X setting per sampler name.')
  _SWEEP_SETTING = flags.DEFINE_multi_string(
      'sweep_setting', [], "Sweep mode: 'LABEL:key=value,key=value' L2X "
      'settings (config fields), repeatable.')
  _SWEEP_OUT = flags.DEFINE_string(
      'sweep_out', '', 'Sweep mode: markdown file for the tables (default '
      '<workdir>/table.md).')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
