"""What the L2X experiments score selections with: data, black box, EVAL-X,
the metrics of a k-group selection, and the baselines as top-k selections.

`prepare(config, workdir)` builds a `Setup` (data, black box, feature groups,
EVAL-X evaluator); `score_selection` scores any selection `[n, d]`;
`baseline_metrics` explains the test rows with every baseline of
`config.baselines` through `xai_jax.EXPLAINERS` (the explainer protocol;
'random' draws N(0, 1) scores) and scores their top-k.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import xai_jax
from experiments import common
from experiments.configs import l2x as l2x_configs
from xai_jax import blackbox as bb
from xai_jax import l2x
from xai_jax import masking
from xai_jax import metrics as xm
from xai_jax import models
from xai_jax import realx
from xai_jax import timing
from xai_jax import viz
from xai_jax.data import synthetic

BASELINES = l2x_configs.BASELINES
BLACKBOXES = {'tabular': ('oracle', 'mlp'), 'image': ('cnn',),
              'text': ('text_cnn',)}
NEG = -1e9  # score of positions that must never be selected (PAD tokens)
SAME_ROWS_METRICS = ('median_rank', 'tpr', 'fdr', 'posthoc_accuracy',
                     'evalx_accuracy', 'num_explain')


def make_groups(config: ml_collections.ConfigDict,
                input_shape: tuple[int, ...]) -> masking.FeatureGroups:
  """The feature groups k is counted over: features, patches or tokens."""
  modality = common.modality_of(config.data)
  if modality == 'tabular':
    return masking.feature_groups(tuple(input_shape))
  if modality == 'image':
    return masking.patch_groups(tuple(input_shape), config.patch)
  return masking.token_groups(int(input_shape[0]))


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises a ValueError naming the field for an unusable config (before
  anything is trained)."""
  modality = common.modality_of(config.data)
  if config.blackbox not in BLACKBOXES[modality]:
    raise ValueError(
        f'config.blackbox={config.blackbox!r} is not available for '
        f'config.data={config.data!r} ({modality}); expected one of '
        f'{list(BLACKBOXES[modality])}.')
  d = {'tabular': synthetic.NUM_TABULAR_FEATURES, 'text': config.get('seq_len'),
       'image': None}[modality]
  if modality == 'image':  # a patch size that does not divide the image
    d = make_groups(config, common.IMAGE_SHAPE).num_groups
  k = config.k
  if isinstance(k, bool) or not isinstance(k, int) or k < 1:
    raise ValueError(f'config.k must be a positive int, got {k!r}.')
  if k > d:
    raise ValueError(f'config.k={k} is larger than the number of groups d={d}'
                     f' of config.data={config.data!r}; choose k < {d}.')
  if k == d:
    raise ValueError(f'config.k={k} selects all d={d} groups of config.data='
                     f'{config.data!r} (every mask all ones); choose k < {d}.')
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
  for name in ('num_train', 'num_test'):
    if not isinstance(config[name], int) or config[name] < 1:
      raise ValueError(f'config.{name} must be a positive int, got '
                       f'{config[name]!r}.')


@dataclasses.dataclass
class Setup:
  """Everything the explainers and metrics of one (config, seed) need."""
  config: ml_collections.ConfigDict
  modality: str
  train_ds: synthetic.Dataset
  test_ds: synthetic.Dataset
  box: bb.BlackBox
  groups: masking.FeatureGroups
  evaluator: realx.Evaluator | None
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


def _model_kwargs(config: ml_collections.ConfigDict,
                  train_ds: synthetic.Dataset) -> dict[str, Any]:
  kw = config.blackbox_train.model_kwargs.to_dict()
  kw['num_classes'] = int(train_ds.num_classes)
  if config.blackbox == 'text_cnn':
    kw['vocab_size'] = int(config.vocab_size)
  return kw


def train_evaluator(config: ml_collections.ConfigDict,
                    train_ds: synthetic.Dataset,
                    groups: masking.FeatureGroups) -> tuple[realx.Evaluator,
                                                            float]:
  """The EVAL-X evaluator (Jethani et al. 2021) and its training seconds."""
  ec = config.evalx
  kw = dict(ec.model_kwargs.to_dict()) if ec.model_kwargs else {}
  model, train_kw, eval_kw, hidden = None, None, None, ()
  c = int(train_ds.num_classes)
  if ec.model == 'mlp':
    hidden = tuple(kw.get('hidden', (200, 200)))
  elif ec.model == 'cnn':
    model = models.make_model('cnn', num_classes=c, **kw)
    train_kw, eval_kw = {'train': True}, {'train': False}
  elif ec.model == 'text_cnn':
    kw.setdefault('vocab_size', int(config.vocab_size))
    for f in ('embed_dim', 'filters', 'hidden'):
      if f in config.blackbox_train.model_kwargs:
        kw.setdefault(f, config.blackbox_train.model_kwargs[f])
    model = models.make_model('text_cnn', num_classes=c, **kw)
  else:
    raise ValueError(f"config.evalx.model must be 'mlp', 'cnn' or 'text_cnn',"
                     f' got {ec.model!r}.')
  key = jax.random.fold_in(jax.random.key(config.seed), 7)
  with timing.timed() as t:
    ev = realx.train_evalx(
        key, np.asarray(train_ds.x), common.targets(train_ds), model=model,
        groups=groups, num_steps=ec.num_steps, batch_size=ec.batch_size,
        learning_rate=ec.learning_rate, keep_prob=ec.keep_prob, baseline=0,
        num_classes=c, hidden_sizes=hidden or (200, 200),
        train_kwargs=train_kw, eval_kwargs=eval_kw)
  return ev, t.wall


def prepare(config: ml_collections.ConfigDict, workdir: str | None) -> Setup:
  """Data, black box and EVAL-X evaluator of a config (checked first)."""
  check_config(config)
  modality = common.modality_of(config.data)
  train_ds, test_ds = common.load_data(
      config, num_classes=config.blackbox_train.model_kwargs.num_classes)
  logging.info('data %s: %d train, %d test rows, x %s', config.data,
               len(train_ds), len(test_ds), train_ds.x.shape[1:])
  groups = make_groups(config, train_ds.x.shape[1:])
  if config.k > groups.num_groups:  # e.g. a shorter tfds seq_len
    raise ValueError(f'config.k={config.k} is larger than the number of '
                     f'groups d={groups.num_groups}.')
  if config.blackbox == 'oracle':
    box = synthetic.oracle_blackbox(config.data)
    info = {'blackbox/train_seconds': 0.0, 'blackbox/test_accuracy':
            models.accuracy(box, np.asarray(test_ds.x),
                            common.eval_labels(test_ds))}
  else:
    wd = None if workdir is None else os.path.join(workdir, 'blackbox')
    box, bb_info = common.fit_blackbox(
        config.blackbox, _model_kwargs(config, train_ds),
        config.blackbox_train, train_ds, test_ds, seed=config.seed,
        workdir=wd)
    info = {f'blackbox/{k}': v for k, v in bb_info.items()}
  evaluator = None
  if config.evalx.num_steps > 0:
    evaluator, secs = train_evaluator(config, train_ds, groups)
    info['evalx/train_seconds'] = secs
    full = xm.evalx_accuracy(
        evaluator, np.asarray(test_ds.x),
        np.ones((len(test_ds), groups.num_groups), np.float32),
        common.eval_labels(test_ds))
    info['evalx/full_accuracy'] = float(full['evalx_accuracy'])
  text_module = (models.make_model('text_cnn', **_model_kwargs(config,
                                                               train_ds))
                 if modality == 'text' else None)
  return Setup(config=config, modality=modality, train_ds=train_ds,
               test_ds=test_ds, box=box, groups=groups, evaluator=evaluator,
               info=info, text_module=text_module)


def score_selection(setup: Setup, selection: np.ndarray,
                    scores: np.ndarray | None, rows: slice, *,
                    rank_by: str = 'abs', key: jax.Array) -> dict[str, float]:
  """Ground-truth and black-box metrics of a selection `[n, d]` (1 = kept).

  `scores` (`[n, d]`) rank all groups for the median rank (None: rank the
  selection itself, L2X's own metric on its k-hot explanation), by
  `rank_by` ('abs': |score|, L2X's convention for tabular attributions;
  'signed'; the same for a 0/1 selection).
  """
  out: dict[str, float] = {}
  x = np.asarray(setup.test_ds.x)[rows]
  sel = np.asarray(selection, np.float32)
  gt = setup.ground_truth(rows)
  if gt is not None:
    if setup.modality == 'tabular':
      mr = xm.median_rank(sel if scores is None else scores, gt, key,
                          rank_by=rank_by)
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
                           common.eval_labels(setup.test_ds)[rows],
                           groups=setup.groups, batch_size=chunk)
    out['evalx_accuracy'] = float(ev['evalx_accuracy'])
  out['num_explain'] = float(x.shape[0])
  return out


def baseline_scores(setup: Setup, name: str, rows: slice,
                    key: jax.Array) -> np.ndarray:
  """Group scores `[n, d]` of a baseline (higher = more important; PAD
  tokens get `NEG`): `xai_jax.EXPLAINERS[name]` with
  `config.baseline_kwargs[name]`, explaining the raw logits of the
  predicted class; 'random': N(0, 1) scores."""
  x = np.asarray(setup.test_ds.x)[rows]
  n, d = x.shape[0], setup.groups.num_groups
  if name == 'random':  # numpy: nothing to compile
    seed = [int(w) for w in np.asarray(jax.random.key_data(key)).ravel()]
    s = np.random.default_rng(seed).standard_normal((n, d))
  else:
    options = {'space': 'raw',
               **dict(setup.config.baseline_kwargs.get(name, {}) or {})}
    box, inputs = setup.box, jnp.asarray(x)
    gradient = name in ('saliency', 'integrated_gradients')
    if setup.modality == 'text' and gradient:  # d/d token embeddings
      box, to_input = models.embedding_blackbox(setup.box, setup.text_module)
      inputs = to_input(x)
      if name == 'integrated_gradients':  # x' = zero embeddings, PAD kept
        options['baseline'] = inputs.at[..., :-1].set(0.0)
    if name == 'saliency':
      options['absolute'] = True
    if not gradient:
      options['groups'] = setup.groups
    method = xai_jax.EXPLAINERS[name]
    a = method.explain(method.fit(key, box, inputs, options), inputs,
                       key=key).scores
    if setup.modality == 'text' and gradient:
      a = jnp.sum(a[..., :-1], axis=-1)
    elif setup.modality == 'image' and gradient:
      a = setup.groups.reduce(a, 'sum')
    s = np.asarray(a)
  s = np.asarray(s, np.float32).reshape(n, d)
  if not np.all(np.isfinite(s)):
    raise FloatingPointError(f'{name} returned non-finite attributions.')
  pad = setup.pad(rows)
  return s if pad is None else np.where(pad, NEG, s)


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
  rank_by = 'signed' if config.rank_signed else 'abs'
  for i, name in enumerate(config.baselines):
    n = config.baseline_num_explain.get(name, -1)
    rows = slice(0, n_test if n is None or n < 0 else min(int(n), n_test))
    key = jax.random.fold_in(jax.random.key(config.seed), 100 + i)
    with timing.timed() as t:
      s = baseline_scores(setup, name, rows, key)
    rank = (np.abs(s) if rank_by == 'abs' and setup.modality == 'tabular'
            else s)
    sel = np.asarray(xm.top_k_mask(rank, setup.k, rank_by='signed'),
                     np.float32)
    m = score_selection(setup, sel, s, rows, rank_by=rank_by,
                        key=jax.random.fold_in(key, 1))
    m['explain_seconds'] = t.wall
    m['explain_compile_seconds'] = t.compile
    m['explain_per_second'] = (rows.stop - rows.start) / max(
        t.excl_compile, 1e-9)
    out.update({f'{name}/{k}': v for k, v in m.items()})
    selections[name] = sel
    logging.info('%s: %s', name, {k: round(v, 4) for k, v in m.items()})
  return out, selections


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
    m = score_selection(setup, l2x_selection[:n], None, slice(0, n),
                        rank_by='abs', key=key)
    out.update({f'l2x@{b}/{k}': v for k, v in m.items()
                if k in SAME_ROWS_METRICS})
  return out


def save_figures(setup: Setup, selections: Mapping[str, np.ndarray],
                 workdir: str) -> list[str]:
  """Writes the figure of the modality into `<workdir>/figures/`."""
  rows = int(setup.config.num_figure_rows)
  ds = setup.test_ds
  if setup.modality == 'tabular':
    fig = viz.selection_frequency(
        selections, ds.ground_truth, k=setup.k, regime=ds.meta.get('regime'),
        regime_names=ds.meta.get('regime_names'), title=ds.name)
    name = 'selection_frequency.png'
  elif setup.modality == 'image':
    x = np.asarray(ds.x)[:rows]
    pred = np.asarray(setup.box.predict(jnp.asarray(x)))
    cn = ds.meta.get('class_names')
    fig = viz.selected_patches(
        x, selections, setup.groups,
        titles=[str(cn[p]) if cn is not None else str(p) for p in pred],
        ground_truth=setup.ground_truth(slice(0, rows)))
    name = 'patches.png'
  else:
    x = np.asarray(ds.x)[:min(rows, 6)]
    pred = np.asarray(setup.box.predict(jnp.asarray(x)))
    fig = viz.token_highlights(
        x, selections, ds.meta['vocab'],
        ground_truth=setup.ground_truth(slice(0, x.shape[0])),
        titles=[f'pred {p}' for p in pred])
    name = 'tokens.png'
  return [viz.save(fig, os.path.join(workdir, 'figures', name), dpi=110)]
