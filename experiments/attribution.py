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
  (synthetic images); features and patches ranked by |attribution|
  (`rank_by='abs'`), the pointing game by the signed map;
* against the black box: deletion/insertion AUC (units deleted by signed
  attribution, `rank_by='signed'`), sensitivity-n, infidelity;
* Shapley estimators: error against exact Shapley values (tabular) or a
  permutation-sampling reference with many permutations (images).

Writes config.json, metrics.json (keys `<method>/<metric>`, documented in the
config file), figures/ (attribution heatmaps or per-feature bars, mean
deletion/insertion curves) into --workdir and prints a table (rows = methods).
"""

from __future__ import annotations

import os
import time
from typing import Any

from absl import app
from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import xai_jax
from experiments import attribution_scoring as scoring
from experiments import common
from xai_jax import blackbox as bb
from xai_jax import masking
from xai_jax import models
from xai_jax import train
from xai_jax import viz


# Every method, in table order. The index fixes each method's PRNG stream, so
# a method's explanation does not depend on which other methods run.
METHODS = ('saliency', 'grad_x_input', 'integrated_gradients', 'smoothgrad',
           'gradcam', 'occlusion', 'rise', 'lime', 'kernel_shap',
           'permutation_shap', 'exact_shapley', 'random')
# Metric columns of the printed table, in order.
COLUMNS = ('median_rank', 'tpr', 'fdr', 'pointing_game', 'ehr', 'auroc',
           'deletion_auc', 'insertion_auc', 'sensitivity_n',
           'infidelity_normalized', 'shapley_mae', 'shapley_spearman',
           'explain_per_sec', 'compile_seconds')


# ----------------------------------------------------------------- methods
def setup_options(setup: scoring.Setup, name: str) -> dict[str, Any]:
  """The options of method `name` that come from the data: the players
  (patches of images) and LIME's mode and scaler."""
  if name in ('occlusion', 'kernel_shap', 'permutation_shap', 'exact_shapley'):
    return {'groups': setup.groups}
  if name == 'lime':
    if setup.image:
      return {'mode': 'groups', 'groups': setup.groups}
    return {'mode': 'tabular', 'feature_mean': setup.feature_mean,
            'feature_std': setup.feature_std}
  return {}


def make_explain_fn(setup: scoring.Setup, name: str, options: dict[str, Any]):
  """`fn(x, target, key) -> attributions` of method `name` with `options`:
  `xai_jax.EXPLAINERS[name]` fitted once (Grad-CAM on the box split at
  conv2), or N(0, 1) scores for 'random'. Attributions are input-shaped, or
  `[b, num_groups]` for group methods on images."""
  options = {**options, **setup_options(setup, name)}
  if name == 'random':
    scale = options.pop('scale', 1.0)
    options.pop('space', None)
    if options:
      raise ValueError(f'random takes only scale, got {sorted(options)}.')
    return lambda x, t, key: scale * jax.random.normal(key, x.shape, x.dtype)
  method = xai_jax.EXPLAINERS[name]
  box = setup.split_box if name == 'gradcam' else setup.box
  explainer = method.fit(0, box, np.zeros((1, *setup.box.input_shape),
                                          np.float32), options)
  return lambda x, t, key: method.explain(explainer, x, key=key,
                                          target=t).scores


# ----------------------------------------------------------------- checks
def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises a ValueError naming the field for an unusable config."""
  tabular = config.data in common.TABULAR
  if not tabular and config.data not in common.IMAGE_DATA:
    raise ValueError(f'config.data={config.data!r} is not supported by this '
                     f'experiment; expected one of '
                     f'{list(common.TABULAR) + list(common.IMAGE_DATA)}.')
  methods = list(config.methods)
  if not methods:
    raise ValueError('config.methods is empty; choose from '
                     f'{list(METHODS)}.')
  for m in methods:
    if m not in METHODS:
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
    if m not in METHODS:
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


def explain(setup: scoring.Setup, name: str, x: jax.Array, target: jax.Array,
            key: jax.Array, options: dict[str, Any]
            ) -> tuple[np.ndarray, dict[str, float]]:
  """Runs one method twice (compile, then timed); returns attributions, times.

  `options` are the method's options (`method_options`).
  """
  fn = make_explain_fn(setup, name, options)
  attr, first, second = common.time_twice(lambda: fn(x, target, key))
  attr = np.asarray(attr, np.float32)
  if not np.all(np.isfinite(attr)):
    raise FloatingPointError(f'{name} returned non-finite attributions.')
  return attr, {'explain_seconds': second.wall,
                'explain_per_sec': x.shape[0] / max(second.wall, 1e-9),
                'compile_seconds': max(first.wall - second.wall, 0.0)}


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains/resumes the box, explains, scores; returns the flat metrics."""
  t_start = time.perf_counter()
  check_config(config)
  common.prepare_workdir(workdir, config)
  train_ds, test_ds = common.load_data(
      config, num_classes=config.model_kwargs.num_classes)
  box, info = common.fit_blackbox(
      config.model, _model_kwargs(config), config, train_ds, test_ds,
      seed=config.seed, workdir=os.path.join(workdir, 'blackbox'))
  results = {'blackbox/test_accuracy': info['test_accuracy'],
             'blackbox/train_seconds': info['train_seconds']}
  image = config.data in common.IMAGE_DATA
  groups = (masking.patch_groups(box.input_shape, config.patch) if image
            else None)
  split_box = None
  if config.model == 'cnn':
    split_box = bb.from_linen(models.make_model(config.model,
                                                **_model_kwargs(config)),
                              box.params, input_shape=box.input_shape,
                              split_at='conv2', name=config.model)
  xtr = np.asarray(train_ds.x)
  setup = scoring.Setup(box=box, split_box=split_box, groups=groups,
                        image=image, space=config.space,
                        feature_mean=None if image else xtr.mean(0),
                        feature_std=None if image else xtr.std(0))
  ds = test_ds.subset(slice(0, config.num_explain))
  x = jnp.asarray(ds.x)
  target = box.predict(x)
  truth = scoring.ground_truth(ds, groups, config.data)
  key = jax.random.key(config.seed)
  k_explain, k_metric, k_ref = jax.random.split(key, 3)

  attributions: dict[str, np.ndarray] = {}
  rows: dict[str, dict[str, float]] = {}
  curves: dict[str, dict[str, np.ndarray]] = {}
  for name in config.methods:
    i = METHODS.index(name)
    options = scoring.method_options(config, name)
    attr, times = explain(setup, name, x, target,
                          jax.random.fold_in(k_explain, i), options)
    logging.info('%s: %.1f expl/s (%.2f s, compile %.1f s)', name,
                 times['explain_per_sec'], times['explain_seconds'],
                 times['compile_seconds'])
    attributions[name] = attr
    row, curves[name] = scoring.score(setup, config, attr, x, target, truth,
                              jax.random.fold_in(k_metric, i),
                              options['space'])
    rows[name] = {**row, **times}
    logging.info('%s: %s', name, {k: round(v, 4) for k, v in row.items()})

  scoring.shapley_errors(setup, config, x, target, attributions, rows, k_ref)
  for name, row in rows.items():
    for k, v in row.items():
      results[f'{name}/{k}'] = v
  results['num_explain'] = float(config.num_explain)
  _save_figures(setup, config, ds, attributions, curves, workdir)
  results['run_seconds'] = time.perf_counter() - t_start
  train.write_metrics_json(workdir, results)
  return results


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


def _save_figures(setup: scoring.Setup, config: ml_collections.ConfigDict,
                  ds: Any,
                  attributions: dict[str, np.ndarray],
                  curves: dict[str, dict[str, np.ndarray]],
                  workdir: str) -> None:
  """figures/heatmaps.png (images) or mean_abs_attribution.png (tabular),
  and deletion_insertion.png (mean curves)."""
  fig_dir = os.path.join(workdir, 'figures')
  if setup.image:
    n = min(config.num_figure_examples, len(ds))
    x = jnp.asarray(ds.x[:n])
    maps = {name: scoring.units_and_map(setup, a[:n], x)[1]
            for name, a in attributions.items()}
    box_mask = None
    if ds.ground_truth is not None:
      box_mask = setup.groups.expand(jnp.asarray(
          ds.meta['ground_truth_patches'][:n], jnp.float32)) > 0.5
    viz.save(viz.heatmap_overlays(ds.x[:n], maps, ground_truth=box_mask),
             os.path.join(fig_dir, 'heatmaps.png'), dpi=90)
  else:
    fig = viz.feature_bars(
        attributions, ds.ground_truth,
        title=f'{ds.name}: mean |attribution| per feature (each row '
        'normalised to sum 1)')
    viz.save(fig, os.path.join(fig_dir, 'mean_abs_attribution.png'), dpi=90)
  panels = {title: {name: (c['fractions'], c[kind])
                    for name, c in curves.items()}
            for kind, title in (('deletion', 'deletion (lower is better)'),
                                ('insertion', 'insertion (higher is better)'))}
  fig = viz.curves(panels, xlabel='fraction of units (by attribution)',
                   ylabel='target probability')
  viz.save(fig, os.path.join(fig_dir, 'deletion_insertion.png'), dpi=90)


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
