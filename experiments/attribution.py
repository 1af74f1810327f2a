r"""Explains a black box with every attribution method and scores them.

  python -m experiments.attribution \
      --config=experiments/configs/attribution.py:tabular \
      --workdir=/tmp/attr_tabular

Trains the black box of the variant (or resumes it from `<workdir>/blackbox/`
with `models.fit_classifier(..., workdir=...)`), explains the first
`num_explain` test rows with every method of `config.methods` through the one
attribution call shape, times each method (the first call compiles, the
second identical call is timed), and scores the explanations:

* ground truth where the data set has it: median rank, TPR/FDR at the set's k
  and AUROC (tabular); pointing game, effective heat ratio and patch AUROC
  (synthetic images);
* against the black box: deletion/insertion AUC, sensitivity-n, infidelity;
* Shapley estimators: error against exact Shapley values (tabular) or a
  permutation-sampling reference with many permutations (images).

Writes config.json, metrics.json (keys `<method>/<metric>`, documented in the
config file), figures/ (attribution heatmaps or per-feature bars, mean
deletion/insertion curves) into --workdir and prints a table (rows = methods).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable

from absl import app
from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments import common
from xai_jax import blackbox as bb
from xai_jax import masking
from xai_jax import metrics as xm
from xai_jax import models
from xai_jax import train
from xai_jax import attribution as xa
from xai_jax.data import synthetic


# Every method, in table order. The index fixes each method's PRNG stream, so
# a method's explanation does not depend on which other methods run.
METHODS = ('saliency', 'grad_x_input', 'integrated_gradients', 'smoothgrad',
           'gradcam', 'occlusion', 'rise', 'lime', 'kernel_shap',
           'permutation_shap', 'exact_shapley', 'random')
SHAPLEY_ESTIMATORS = ('kernel_shap', 'permutation_shap')
IMAGE_DATA = ('images', 'fashion_mnist')
# Metric columns of the printed table, in order.
COLUMNS = ('median_rank', 'tpr', 'fdr', 'pointing_game', 'ehr', 'auroc',
           'deletion_auc', 'insertion_auc', 'sensitivity_n',
           'infidelity_normalized', 'shapley_mae', 'shapley_spearman',
           'explain_per_sec', 'compile_seconds')


@dataclasses.dataclass(frozen=True)
class Setup:
  """What every explainer and metric of a run needs.

  Attributes:
    box: the trained black box.
    split_box: the box split at 'conv2' (Grad-CAM), or None.
    groups: the players: patches for images, None (every feature) for tabular.
    image: True for image data.
    feature_mean: tabular training-data mean `[d]` (LIME's scaler), or None.
    feature_std: tabular training-data std `[d]`, or None.
    space: the explained output ('raw' logits by default).
  """
  box: bb.BlackBox
  split_box: bb.BlackBox | None
  groups: masking.FeatureGroups | None
  image: bool
  feature_mean: np.ndarray | None
  feature_std: np.ndarray | None
  space: str


# ----------------------------------------------------------------- methods
# Each: (setup, x [b, *input_shape], target int [b], key, space=..., **kwargs)
# -> attributions [b, *input_shape] or, for group methods on images,
# [b, num_groups]. `space` is the explained output (config.space, or the
# method's own `space` option, e.g. RISE's class probability).
def _saliency(s, x, t, key, **kw):
  del key
  return xa.saliency(s.box, x, target=t, **kw)


def _grad_x_input(s, x, t, key, **kw):
  del key
  return xa.grad_x_input(s.box, x, target=t, **kw)


def _integrated_gradients(s, x, t, key, **kw):
  return xa.integrated_gradients(s.box, x, target=t, key=key, **kw)


def _smoothgrad(s, x, t, key, **kw):
  return xa.smoothgrad(s.box, x, target=t, key=key, **kw)


def _gradcam(s, x, t, key, **kw):
  del key
  return xa.gradcam(s.split_box, x, target=t, **kw)


def _occlusion(s, x, t, key, **kw):
  return xa.occlusion(s.box, x, target=t, key=key, groups=s.groups, **kw)


def _rise(s, x, t, key, **kw):
  return xa.rise(s.box, x, target=t, key=key, **kw)


def _lime(s, x, t, key, **kw):
  if s.image:
    kw = {'mode': 'groups', 'groups': s.groups, **kw}
  else:
    kw = {'mode': 'tabular', 'feature_mean': s.feature_mean,
          'feature_std': s.feature_std, **kw}
  return xa.lime(s.box, x, key=key, target=t, **kw)


def _kernel_shap(s, x, t, key, **kw):
  return xa.kernel_shap(s.box, x, key=key, target=t, groups=s.groups, **kw)


def _permutation_shap(s, x, t, key, **kw):
  return xa.permutation_shap(s.box, x, key=key, target=t, groups=s.groups,
                              **kw)


def _exact_shapley(s, x, t, key, **kw):
  del key
  return xa.exact_shapley(s.box, x, target=t, groups=s.groups, **kw)


def _random(s, x, t, key, **kw):
  """A random baseline: N(0, 1) scores for every input element."""
  del s, t
  kw.pop('space', None)
  scale = kw.pop('scale', 1.0)
  if kw:
    raise ValueError(f'random takes only scale, got {sorted(kw)}.')
  return scale * jax.random.normal(key, x.shape, x.dtype)


EXPLAINERS: dict[str, Callable[..., jax.Array]] = {
    'saliency': _saliency, 'grad_x_input': _grad_x_input,
    'integrated_gradients': _integrated_gradients, 'smoothgrad': _smoothgrad,
    'gradcam': _gradcam, 'occlusion': _occlusion, 'rise': _rise,
    'lime': _lime, 'kernel_shap': _kernel_shap,
    'permutation_shap': _permutation_shap, 'exact_shapley': _exact_shapley,
    'random': _random,
}
assert tuple(EXPLAINERS) == METHODS


# ----------------------------------------------------------------- checks
def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises a ValueError naming the field for an unusable config."""
  tabular = config.data in common.TABULAR
  if not tabular and config.data not in IMAGE_DATA:
    raise ValueError(f'config.data={config.data!r} is not supported by this '
                     f'experiment; expected one of '
                     f'{list(common.TABULAR) + list(IMAGE_DATA)}.')
  methods = list(config.methods)
  if not methods:
    raise ValueError('config.methods is empty; choose from '
                     f'{list(METHODS)}.')
  for m in methods:
    if m not in EXPLAINERS:
      raise ValueError(f'Unknown method {m!r} in config.methods; expected '
                       f'names from {list(METHODS)}.')
  if len(set(methods)) != len(methods):
    raise ValueError(f'config.methods lists a method twice: {methods}.')
  if 'gradcam' in methods and config.model != 'cnn':
    raise ValueError(f"method 'gradcam' needs an image CNN (split at conv2), "
                     f'but config.model={config.model!r}; remove it from '
                     'config.methods.')
  if 'rise' in methods and tabular:
    raise ValueError("method 'rise' explains images; remove it from "
                     f'config.methods for config.data={config.data!r}.')
  if 'exact_shapley' in methods and not tabular:
    raise ValueError("method 'exact_shapley' enumerates 2^d coalitions and "
                     'is only run on tabular data (d = 10); remove it from '
                     f'config.methods for config.data={config.data!r}.')
  for m in config.method_kwargs:
    if m not in EXPLAINERS:
      raise ValueError(f'config.method_kwargs has options for an unknown '
                       f'method {m!r}; expected names from {list(METHODS)}.')
  if not isinstance(config.num_explain, int) or config.num_explain < 1:
    raise ValueError(f'config.num_explain must be a positive int, got '
                     f'{config.num_explain!r}.')
  if config.num_explain > config.num_test:
    raise ValueError(f'config.num_explain={config.num_explain} exceeds '
                     f'config.num_test={config.num_test}.')
  if config.space not in ('raw', 'probs', 'log_probs'):
    raise ValueError(f"config.space must be 'raw', 'probs' or 'log_probs', "
                     f'got {config.space!r}.')


def _model_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
  kw = config.model_kwargs.to_dict()
  if kw.get('activation') == 'auto':  # L2X: SELU on additive / switch
    kw['activation'] = ('selu' if config.data in ('nonlinear_additive',
                                                  'switch') else 'relu')
  return kw


def _targets(ds: Any) -> np.ndarray:
  """Soft targets P(Y|X) for the tabular sets, labels otherwise."""
  return ds.probs if (ds.probs is not None and ds.x.ndim == 2) else ds.y


# ----------------------------------------------------------------- running
def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
  t0 = time.perf_counter()
  out = jax.block_until_ready(fn())
  return out, time.perf_counter() - t0


def explain(setup: Setup, name: str, x: jax.Array, target: jax.Array,
            key: jax.Array, kwargs: dict[str, Any]
            ) -> tuple[np.ndarray, dict[str, float]]:
  """Runs one method twice (compile, then timed); returns attributions, times.

  `kwargs` are the method's options; its `space` (the explained output)
  defaults to `setup.space`.
  """
  kwargs = {'space': setup.space, **kwargs}
  fn = lambda: EXPLAINERS[name](setup, x, target, key, **kwargs)
  _, first = _timed(fn)
  attr, second = _timed(fn)
  attr = np.asarray(attr, np.float32)
  if not np.all(np.isfinite(attr)):
    raise FloatingPointError(f'{name} returned non-finite attributions.')
  n = x.shape[0]
  return attr, {'explain_seconds': second,
                'explain_per_sec': n / max(second, 1e-9),
                'compile_seconds': max(first - second, 0.0)}


def _units_and_map(setup: Setup, attr: np.ndarray, x: jax.Array
                   ) -> tuple[jax.Array, jax.Array]:
  """Attributions -> (player scores `[b, d]`, input-shaped map `[b, ...]`).

  Input-shaped attributions are summed per patch (the players of images);
  patch scores are spread evenly over their pixels (per-pixel density), so
  that the map has the same total as the scores.
  """
  a = jnp.asarray(attr)
  if setup.groups is None:
    return a.reshape(a.shape[0], -1), a.reshape(x.shape)
  g = setup.groups
  if a.shape == x.shape:
    return g.reduce(a, 'sum'), a
  size = float(np.prod(g.input_shape)) / g.num_groups
  return a, g.expand(a) / size


def score(setup: Setup, config: ml_collections.ConfigDict, attr: np.ndarray,
          x: jax.Array, target: jax.Array, truth: dict[str, Any],
          key: jax.Array, space: str
          ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
  """The metric suite for one method's attributions; returns (means, curves).

  `space` is the output the attributions explain; sensitivity-n and
  infidelity compare them with changes of that output. Deletion/insertion
  always record the target-class probability (Petsiuk et al.).
  """
  mc = config.metrics
  units, amap = _units_and_map(setup, attr, x)
  out: dict[str, float] = {}
  k_rank, k_sens, k_inf = jax.random.split(key, 3)
  if 'features' in truth:          # tabular ground truth
    gt = truth['features']
    out['median_rank'] = xm.median_rank(units, gt, k_rank)['median_rank_mean']
    r = xm.tpr_fdr_at_k(units, gt, truth['k'])
    out['tpr'], out['fdr'] = r['tpr_mean'], r['fdr_mean']
    out['auroc'] = xm.auroc(units, gt)['auroc_mean']
  if 'box_mask' in truth:          # image ground truth
    out['pointing_game'] = xm.pointing_game(
        amap, truth['box_mask'], tolerance=mc.pointing_tolerance)['hit_mean']
    out['ehr'] = xm.effective_heat_ratio(amap, truth['box_mask'])['ehr_mean']
    out['auroc'] = xm.auroc(units, truth['patches'])['auroc_mean']
  d = units.shape[1]
  di = xm.deletion_insertion(setup.box, x, units, target=target,
                             groups=setup.groups, baseline=mc.baseline,
                             num_steps=d, space='probs')
  out['deletion_auc'] = di['deletion_auc_mean']
  out['insertion_auc'] = di['insertion_auc_mean']
  out['sensitivity_n'] = xm.sensitivity_n(
      setup.box, x, units, n=min(mc.sensitivity_n, d), key=k_sens,
      num_subsets=mc.num_subsets, baseline=mc.baseline, target=target,
      groups=setup.groups, space=space)['sensitivity_n_mean']
  inf = xm.infidelity(setup.box, x, amap, key=k_inf,
                      num_samples=mc.infidelity_samples,
                      noise_std=mc.infidelity_noise, target=target,
                      space=space)
  out['infidelity'] = inf['infidelity_mean']
  out['infidelity_normalized'] = inf['infidelity_normalized_mean']
  curves = {'fractions': np.asarray(di['fractions']),
            'deletion': np.asarray(di['deletion_curve']).mean(0),
            'insertion': np.asarray(di['insertion_curve']).mean(0)}
  return {k: float(v) for k, v in out.items()}, curves


def _ground_truth(ds: Any, groups: masking.FeatureGroups | None,
                  data: str) -> dict[str, Any]:
  if ds.ground_truth is None:
    return {}
  if ds.x.ndim == 2:
    return {'features': jnp.asarray(ds.ground_truth),
            'k': synthetic.TABULAR_K[data]}
  patches = jnp.asarray(ds.meta['ground_truth_patches'])
  box_mask = groups.expand(patches.astype(jnp.float32)) > 0.5
  return {'patches': patches, 'box_mask': box_mask}


def train_blackbox(config: ml_collections.ConfigDict, workdir: str,
                   train_ds: Any, test_ds: Any
                   ) -> tuple[bb.BlackBox, dict[str, float]]:
  """Trains (or resumes from `workdir/blackbox`) the black box of `config`."""
  t0 = time.time()
  kw = _model_kwargs(config)
  box, _ = models.fit_classifier(
      config.model, kw, train_ds.x, _targets(train_ds), key=config.seed,
      num_steps=config.num_steps, batch_size=config.batch_size,
      optimizer={'optimizer': config.optimizer,
                 'learning_rate': config.learning_rate},
      workdir=os.path.join(workdir, 'blackbox'), log_every=config.log_every,
      checkpoint_every=config.checkpoint_every)
  seconds = time.time() - t0
  acc = models.accuracy(box, test_ds.x, _targets(test_ds))
  logging.info('black box %s: test accuracy %.4f (%.1f s)', config.model,
               acc, seconds)
  return box, {'blackbox/test_accuracy': acc,
               'blackbox/train_seconds': seconds}


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains/resumes the box, explains, scores; returns the flat metrics."""
  t_start = time.time()
  check_config(config)
  common.prepare_workdir(workdir, config)
  train_ds, test_ds = common.load_data(config)
  box, results = train_blackbox(config, workdir, train_ds, test_ds)
  image = config.data in IMAGE_DATA
  groups = (masking.patch_groups(box.input_shape, config.patch) if image
            else None)
  split_box = None
  if config.model == 'cnn':
    split_box = bb.from_linen(models.make_model(config.model,
                                                **_model_kwargs(config)),
                              box.params, input_shape=box.input_shape,
                              split_at='conv2', name=config.model)
  xtr = np.asarray(train_ds.x)
  setup = Setup(box=box, split_box=split_box, groups=groups, image=image,
                feature_mean=None if image else xtr.mean(0),
                feature_std=None if image else xtr.std(0),
                space=config.space)
  ds = test_ds.subset(slice(0, config.num_explain))
  x = jnp.asarray(ds.x)
  target = box.predict(x)
  truth = _ground_truth(ds, groups, config.data)
  key = jax.random.key(config.seed)
  k_explain, k_metric, k_ref = jax.random.split(key, 3)

  attributions: dict[str, np.ndarray] = {}
  rows: dict[str, dict[str, float]] = {}
  curves: dict[str, dict[str, np.ndarray]] = {}
  for name in config.methods:
    i = METHODS.index(name)
    kwargs = method_options(config, name)
    attr, times = explain(setup, name, x, target,
                          jax.random.fold_in(k_explain, i), kwargs)
    logging.info('%s: %.1f expl/s (%.2f s, compile %.1f s)', name,
                 times['explain_per_sec'], times['explain_seconds'],
                 times['compile_seconds'])
    attributions[name] = attr
    row, curves[name] = score(setup, config, attr, x, target, truth,
                              jax.random.fold_in(k_metric, i),
                              kwargs['space'])
    rows[name] = {**row, **times}
    logging.info('%s: %s', name, {k: round(v, 4) for k, v in row.items()})

  _shapley_errors(setup, config, x, target, attributions, rows, k_ref)
  for name, row in rows.items():
    for k, v in row.items():
      results[f'{name}/{k}'] = v
  results['num_explain'] = float(config.num_explain)
  _save_figures(setup, config, ds, attributions, curves, workdir)
  results['run_seconds'] = time.time() - t_start
  train.write_metrics_json(workdir, results)
  return results


def method_options(config: ml_collections.ConfigDict, name: str
                   ) -> dict[str, Any]:
  """The options of method `name`: `config.method_kwargs[name]`, with the
  explained output `space` defaulting to `config.space`."""
  kw = (config.method_kwargs[name].to_dict()
        if name in config.method_kwargs else {})
  return {'space': config.space, **kw}


def _shapley_errors(setup: Setup, config: ml_collections.ConfigDict,
                    x: jax.Array, target: jax.Array,
                    attributions: dict[str, np.ndarray],
                    rows: dict[str, dict[str, float]], key: jax.Array
                    ) -> None:
  """Adds shapley_mae/rmse/spearman of the Shapley estimators to `rows`.

  The reference has the estimator's baseline and output space: exact
  Shapley values (tabular; `exact_shapley`'s own run when its options
  match) or permutation sampling with `shapley_reference.num_permutations`
  antithetic permutations (images).
  """
  refs: dict[tuple[str, str], jax.Array] = {}
  for name in SHAPLEY_ESTIMATORS:
    if name not in attributions:
      continue
    opts = method_options(config, name)
    ref_opts = {'space': opts['space'],
                'baseline': opts.get('baseline', 'zero')}
    ref_key = (repr(ref_opts['baseline']), ref_opts['space'])
    if ref_key not in refs:
      t0 = time.time()
      if setup.groups is None:
        exact = method_options(config, 'exact_shapley')
        if ('exact_shapley' in attributions and
            (repr(exact.get('baseline', 'zero')), exact['space']) == ref_key):
          ref = attributions['exact_shapley']
        else:
          ref = xa.exact_shapley(setup.box, x, target=target, **ref_opts)
      else:
        ref = xa.permutation_shap(
            setup.box, x, key=key, target=target, groups=setup.groups,
            num_permutations=config.shapley_reference.num_permutations,
            **ref_opts)
      refs[ref_key] = jnp.asarray(ref).reshape(x.shape[0], -1)
      logging.info('Shapley reference %s: %.1f s', ref_opts,
                   time.time() - t0)
    est = jnp.asarray(attributions[name]).reshape(x.shape[0], -1)
    err = xm.shapley_error(est, refs[ref_key])
    rows[name]['shapley_mae'] = float(err['mae_mean'])
    rows[name]['shapley_rmse'] = float(err['rmse_mean'])
    rows[name]['shapley_spearman'] = float(err['spearman_mean'])


# ----------------------------------------------------------------- output
def table(results: dict[str, float], methods: Any = None) -> dict[str, dict]:
  """Flat `<method>/<metric>` results -> rows (methods) of table columns."""
  rows: dict[str, dict[str, float]] = {}
  for key, v in results.items():
    if '/' not in key:
      continue
    m, metric = key.split('/', 1)
    if m in METHODS and metric in COLUMNS:
      rows.setdefault(m, {})[metric] = v
  order = list(methods) if methods is not None else list(METHODS)
  return {m: {c: rows[m][c] for c in COLUMNS if c in rows[m]}
          for m in order if m in rows}


def _save_figures(setup: Setup, config: ml_collections.ConfigDict, ds: Any,
                  attributions: dict[str, np.ndarray],
                  curves: dict[str, dict[str, np.ndarray]],
                  workdir: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig_dir = os.path.join(workdir, 'figures')
  if setup.image:
    fig = heatmap_figure(setup, ds, attributions,
                         config.num_figure_examples, plt)
    fig.savefig(os.path.join(fig_dir, 'heatmaps.png'), dpi=90)
  else:
    fig = feature_bar_figure(ds, attributions, plt)
    fig.savefig(os.path.join(fig_dir, 'mean_abs_attribution.png'), dpi=90)
  plt.close(fig)
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  for name, c in curves.items():
    style = '--' if name == 'random' else '-'
    axes[0].plot(c['fractions'], c['deletion'], style, label=name)
    axes[1].plot(c['fractions'], c['insertion'], style, label=name)
  for ax, title in zip(axes, ('deletion (lower is better)',
                              'insertion (higher is better)')):
    ax.set_xlabel('fraction of units (by attribution)')
    ax.set_ylabel('target probability')
    ax.set_title(title)
  axes[1].legend(fontsize=7, loc='lower right')
  fig.tight_layout()
  fig.savefig(os.path.join(fig_dir, 'deletion_insertion.png'), dpi=90)
  plt.close(fig)


def heatmap_figure(setup: Setup, ds: Any, attributions: dict[str, np.ndarray],
                   num_examples: int, plt: Any) -> Any:
  """A grid: rows = images, columns = the input and each method's map
  (ground-truth pattern box outlined when the data set has one)."""
  n = min(num_examples, len(ds))
  names = list(attributions)
  fig, axes = plt.subplots(n, len(names) + 1,
                           figsize=(1.3 * (len(names) + 1), 1.4 * n),
                           squeeze=False)
  x = jnp.asarray(ds.x[:n])
  box_mask = None
  if ds.ground_truth is not None:
    box_mask = np.asarray(setup.groups.expand(jnp.asarray(
        ds.meta['ground_truth_patches'][:n], jnp.float32)))[..., 0]
  for i in range(n):
    ax = axes[i, 0]
    ax.imshow(np.asarray(ds.x[i])[..., 0], cmap='gray', vmin=0, vmax=1)
    if box_mask is not None:
      ax.contour(box_mask[i], levels=[0.5], colors='lime', linewidths=0.8)
    if i == 0:
      ax.set_title('input', fontsize=7)
    for j, name in enumerate(names):
      _, amap = _units_and_map(setup, attributions[name][:n], x)
      m = np.asarray(amap[i]).sum(-1)
      ax = axes[i, j + 1]
      if m.min() >= 0:  # non-negative maps (saliency, Grad-CAM, RISE)
        ax.imshow(m, cmap='Reds', vmin=m.min(), vmax=max(m.max(), 1e-12))
      else:             # signed maps: red positive, blue negative
        lim = max(float(np.abs(m).max()), 1e-12)
        ax.imshow(m, cmap='bwr', vmin=-lim, vmax=lim)
      if box_mask is not None:
        ax.contour(box_mask[i], levels=[0.5], colors='k', linewidths=0.6)
      if i == 0:
        ax.set_title(name.replace('_', '\n', 1), fontsize=7)
  for ax in axes.ravel():
    ax.set_xticks([])
    ax.set_yticks([])
  fig.tight_layout()
  return fig


def feature_bar_figure(ds: Any, attributions: dict[str, np.ndarray], plt: Any
                       ) -> Any:
  """Mean |attribution| per feature, one panel a method.

  Each row's |attributions| are normalised to sum 1; per feature, the orange
  bar averages over the rows where the feature is in the ground truth, the
  blue bar over the rows where it is not (switch: the regime decides). A good
  explainer has tall orange and short blue bars.
  """
  names = list(attributions)
  cols = min(4, len(names))
  rows = -(-len(names) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.2 * rows),
                           squeeze=False)
  d = ds.x.shape[1]
  gt = (np.asarray(ds.ground_truth, bool) if ds.ground_truth is not None
        else np.zeros((len(ds), d), bool))
  pos = np.arange(1, d + 1)
  for ax, name in zip(axes.ravel(), names):
    a = np.abs(attributions[name].reshape(len(ds), -1))
    a = a / np.maximum(a.sum(1, keepdims=True), 1e-12)
    with np.errstate(invalid='ignore'):
      in_gt = np.where(gt.any(0), (a * gt).sum(0) / gt.sum(0), 0.0)
      out_gt = np.where((~gt).any(0), (a * ~gt).sum(0) / (~gt).sum(0), 0.0)
    ax.bar(pos - 0.2, in_gt, width=0.4, color='tab:orange',
           label='in ground truth')
    ax.bar(pos + 0.2, out_gt, width=0.4, color='tab:blue',
           label='not in ground truth')
    ax.set_title(name, fontsize=8)
    ax.set_xticks(pos)
    ax.tick_params(labelsize=6)
  axes[0, 0].legend(fontsize=6)
  for ax in axes.ravel()[len(names):]:
    ax.axis('off')
  fig.suptitle(f'{ds.name}: mean |attribution| per feature (each row '
               'normalised to sum 1)', fontsize=9)
  fig.tight_layout()
  return fig


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
  config = _CONFIG.value
  results = run(config, _WORKDIR.value)
  print(common.format_table(
      table(results, config.methods),
      title=f'attribution {config.variant} ({config.data}, '
            f'{int(results["num_explain"])} rows, black box test accuracy '
            f'{results["blackbox/test_accuracy"]:.3f})'))


def _define_flags() -> None:
  """Defines the binary's flags (only when run as a program)."""
  global _CONFIG, _WORKDIR
  _CONFIG, _WORKDIR = common.define_config_flags(
      'experiments/configs/attribution.py:tabular')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
