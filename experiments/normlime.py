r"""NormLIME's maps against SP-LIME, KernelSHAP, gradients and random, by KAR/ROAR.

  python -m experiments.normlime \
      --config=experiments/configs/normlime.py:switch --workdir=/tmp/normlime_switch

Trains the black box of the variant (or resumes it from `<workdir>/blackbox/`),
explains `num_explain` training rows with LIME, KernelSHAP and gradients,
aggregates them into global (and class-specific) maps, and retrains the
black box's architecture on data that keeps (KAR) or loses (ROAR) the top t%
features of each map (`xai_jax.retrain.retrain_curve`). Writes config.json,
metrics.json (keys documented in the config file), figures/ (per-class maps,
KAR and ROAR curves) into --workdir and prints a table (rows = methods).

  # mean +- std over seeds of finished runs:
  python -m experiments.normlime --summarize=/tmp/nl_s0,/tmp/nl_s1,/tmp/nl_s2
"""

from __future__ import annotations

import os
import time
from typing import Any

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments import common
from xai_jax import attribution
from xai_jax import masking
from xai_jax import models
from xai_jax import metrics
from xai_jax import normlime
from xai_jax import realx
from xai_jax import retrain
from xai_jax import timing
from xai_jax import train
from xai_jax import viz
from xai_jax.data import synthetic

GLOBAL = ('normlime', 'sp_lime', 'kernel_shap', 'gradient')
METHODS = (*GLOBAL, 'normlime_class', 'random')


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError for a config that cannot run (before any training)."""
  common.modality_of(config.data)
  methods = tuple(config.methods)
  unknown = sorted(set(methods) - set(METHODS))
  if unknown:
    raise ValueError(f'config.methods: unknown method(s) {unknown}; expected '
                     f'some of {list(METHODS)}.')
  if not methods:
    raise ValueError('config.methods is empty.')
  if config.num_explain < 2:
    raise ValueError(f'config.num_explain must be >= 2, got '
                     f'{config.num_explain}.')
  if config.data != 'breast_cancer' and config.num_explain > config.num_train:
    raise ValueError(f'config.num_explain={config.num_explain} exceeds '
                     f'config.num_train={config.num_train}.')
  bad = [m for m in config.retrain.modes if m not in retrain.MODES]
  if bad or not config.retrain.modes:
    raise ValueError(f'config.retrain.modes must be some of {retrain.MODES}, '
                     f'got {tuple(config.retrain.modes)}.')
  if config.retrain.num_random < 1:
    raise ValueError('config.retrain.num_random must be >= 1.')


def _groups(config: ml_collections.ConfigDict, x: np.ndarray
            ) -> masking.FeatureGroups | None:
  modality = common.modality_of(config.data)
  if modality == 'image':
    return masking.patch_groups(x.shape[1:], config.patch)
  if modality == 'text':
    return masking.token_groups(x.shape[1])
  return None


def _gradient(box: Any, module: Any, x: np.ndarray, groups: Any,
              modality: str) -> jax.Array:
  """|gradient| of the predicted class per local feature `[n, m]`."""
  if modality == 'text':
    view, to_input = models.embedding_blackbox(box, module)
    g = attribution.saliency(view, to_input(x), absolute=True)
    return jnp.sum(g[..., :-1], -1)
  g = attribution.saliency(box, x, absolute=True)
  if groups is not None:
    return groups.reduce(g, 'sum')
  return g.reshape(g.shape[0], -1)


def _per_row(maps: jax.Array, x: np.ndarray, modality: str) -> jax.Array:
  """Rankings over a row's features: `[R, F]` maps -> `[R, n, L]` for text
  (each token's id's value; padding last), else the maps unchanged."""
  if modality != 'text':
    return maps
  tokens = jnp.asarray(x)
  vals = jnp.take(maps, tokens, axis=-1)                       # [R, n, L]
  low = jnp.min(maps) - 1.0
  return jnp.where(tokens[None] == 0, low, vals)


def _recall(maps_by_group: np.ndarray, truth: np.ndarray, k: int) -> float:
  """Mean over groups of the top-k recall (TPR at k) of each group's map."""
  maps_by_group = np.nan_to_num(np.asarray(maps_by_group, np.float32))
  return float(metrics.tpr_fdr_at_k(jnp.asarray(maps_by_group),
                                    truth, k, rank_by='signed')['tpr_mean'])


def _recalls(config, ds, local, ks_local, maps, globals_) -> dict[str, float]:
  """class_topk_recall/<method> (and label_topk_recall) on synthetic sets."""
  if ds.ground_truth is None or config.data not in synthetic.TABULAR:
    return {}
  n = local.weights.shape[0]
  gt = np.asarray(ds.ground_truth[:n], bool)
  k = synthetic.TABULAR_K[config.data]
  patterns, group = np.unique(gt, axis=0, return_inverse=True)
  group = group.reshape(-1).astype(np.int32)
  g = len(patterns)
  by_group = lambda loc: np.asarray(normlime.aggregate(
      loc.weights, loc.feature_ids, group, num_features=loc.num_features,
      num_classes=g, variant=config.normlime.variant if loc is local
      else 'avg').per_class)
  out = {}
  for name, m in globals_.items():
    out[f'class_topk_recall/{name}'] = _recall(
        np.broadcast_to(np.asarray(m), (g, m.shape[-1])), patterns, k)
  out['class_topk_recall/normlime_class'] = _recall(by_group(local),
                                                    patterns, k)
  out['class_topk_recall/kernel_shap'] = _recall(by_group(ks_local),
                                                 patterns, k)
  labels = np.asarray(local.labels)
  truth = np.stack([gt[labels == c].mean(0) >= 0.5 if (labels == c).any()
                    else np.zeros(gt.shape[1], bool)
                    for c in range(local.num_classes)])
  out['label_topk_recall/normlime_class'] = _recall(
      np.asarray(maps.per_class), truth, k)
  return out


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """The experiment (module docstring); returns the flat metrics."""
  t_start = time.perf_counter()
  check_config(config)
  common.prepare_workdir(workdir, config)
  key = jax.random.key(config.seed)
  k_lime, k_shap, k_rand, k_retrain = jax.random.split(key, 4)
  train_ds, test_ds = common.load_data(config)
  modality = common.modality_of(config.data)
  bcfg = config.blackbox
  box, info = common.fit_blackbox(
      bcfg.model, bcfg.model_kwargs, bcfg, train_ds, test_ds,
      seed=config.seed, workdir=os.path.join(workdir, 'blackbox'))
  module = models.make_model(bcfg.model, **bcfg.model_kwargs)
  results = {f'blackbox/{k}': v for k, v in info.items()
             if k in ('test_accuracy', 'train_seconds')}
  x_fit = np.asarray(train_ds.x[:config.num_explain])
  groups = _groups(config, x_fit)

  # ---- local explanations -> maps (one LIME pass serves NormLIME and SP).
  with timing.timed() as t_lime:
    local = normlime.local_explanations(k_lime, box, x_fit, config.normlime,
                                        groups=groups)
    jax.block_until_ready(local.weights)
  results['lime_seconds'] = t_lime.wall
  f, c = local.num_features, local.num_classes
  maps = normlime.aggregate(local.weights, local.feature_ids, local.labels,
                            num_features=f, num_classes=c,
                            variant=config.normlime.variant,
                            positive_only=config.normlime.positive_only)
  sp = normlime.sp_lime(local.weights, local.feature_ids, num_features=f,
                        explanation_features=config.sp_lime_features)
  ks = attribution.kernel_shap(
      box, x_fit, key=k_shap, target=np.asarray(local.labels),
      groups=groups, num_samples=config.kernel_shap.num_samples,
      baseline=config.kernel_shap.baseline, space=config.normlime.space)
  ks_local = local._replace(weights=ks.reshape(ks.shape[0], -1))
  grad_local = local._replace(weights=_gradient(box, module, x_fit, groups,
                                                modality))
  avg = lambda loc: normlime.aggregate(
      loc.weights, loc.feature_ids, loc.labels, num_features=f,
      num_classes=c, variant='avg', positive_only=False).global_
  globals_ = {'normlime': maps.global_, 'sp_lime': sp.importance,
              'kernel_shap': avg(ks_local), 'gradient': avg(grad_local)}
  results['num_explain'] = float(len(x_fit))
  results.update(_recalls(config, train_ds, local, ks_local, maps, globals_))

  # ---- KAR / ROAR: every global map in one call, the class maps in another.
  rc = config.retrain
  n_tr = min(rc.num_train, len(train_ds))
  x_tr = np.asarray(train_ds.x[:n_tr])
  y_tr = common.eval_labels(train_ds)[:n_tr]
  x_te, y_te = np.asarray(test_ds.x), common.eval_labels(test_ds)
  names = [m for m in GLOBAL if m in config.methods]
  table = jnp.stack([globals_[m] for m in names])              # [R, F]
  rand = jax.random.normal(k_rand, (rc.num_random, f))
  explainer = normlime.NormLIMEExplainer(
      maps=maps, model=box, kind='tokens' if modality == 'text' else 'groups',
      pad_id=0 if modality == 'text' else -1)
  runs = {'global': (names, _per_row(table, x_tr, modality),
                     _per_row(table, x_te, modality)),
          'random': (['random'], _per_row(rand, x_tr, modality),
                     _per_row(rand, x_te, modality))}
  if 'normlime_class' in config.methods:
    runs['class'] = (['normlime_class'],
                     normlime.explain(explainer, x_tr).scores[None],
                     normlime.explain(explainer, x_te).scores[None])
  kw = dict(groups=groups, fractions=tuple(rc.fractions), fill=rc.fill,
            num_steps=rc.num_steps, batch_size=rc.batch_size,
            learning_rate=rc.learning_rate, repeats=rc.repeats,
            train_flag=models.takes_train_flag(bcfg.model))
  curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
  with timing.timed() as t_re:
    for mode in rc.modes:
      tag = 'kar' if mode == 'keep' else 'roar'
      for i, (what, (mnames, imp_tr, imp_te)) in enumerate(runs.items()):
        if not mnames:
          continue
        logging.info('%s: retraining %s (%d maps x %d fractions)', tag, what,
                     imp_tr.shape[0], len(rc.fractions))
        res = retrain.retrain_curve(
            jax.random.fold_in(k_retrain, i), module, (x_tr, y_tr),
            (x_te, y_te), imp_tr, imp_te, mode=mode, **kw)
        acc = np.asarray(res.accuracy)
        if what == 'random':
          acc, auc = acc.mean(0, keepdims=True), [float(np.mean(res.auc))]
        else:
          auc = [float(a) for a in res.auc]
        for name, a, row in zip(mnames, auc, acc):
          results[f'{tag}_auc/{name}'] = a
          for t, v in zip(res.fractions, row):
            results[f'{tag}/{name}/{t:.1f}'] = float(v)
          curves.setdefault(tag, {})[name] = (np.asarray(res.fractions), row)
  results['retrain_seconds'] = t_re.wall
  if config.evalx.num_steps > 0:
    with timing.timed() as t_ev:
      _evalx_curves(config, module, modality, groups, x_tr, y_tr, x_te, y_te,
                    runs, jax.random.fold_in(k_retrain, 99), results, curves)
    results['evalx_seconds'] = t_ev.wall
  _figures(config, train_ds, maps, globals_, curves, groups, f, workdir)
  results['run_seconds'] = time.perf_counter() - t_start
  train.write_metrics_json(workdir, results)
  return results


def _evalx_curves(config, module, modality, groups, x_tr, y_tr, x_te, y_te,
                  runs, key, results, curves) -> None:
  """EVAL-X accuracy of the top-t features of every map (evalx/...).

  One evaluator, trained on random masks (Jethani et al. 2021), scores the
  kept features of every map without retraining on them, so a map cannot
  teach it anything through the pattern of its masks (the class-specific
  maps of KAR/ROAR do: docs/normlime.md).
  """
  ec = config.evalx
  kw = {} if modality == 'tabular' else {'model': module}
  evaluator = realx.train_evalx(
      key, x_tr, y_tr, groups=groups, num_steps=ec.num_steps,
      batch_size=ec.batch_size, learning_rate=ec.learning_rate,
      keep_prob=ec.keep_prob, **kw)
  for names, _, imp_te in runs.values():
    res = retrain.evalx_curve(evaluator, x_te, y_te, imp_te, groups=groups,
                              fractions=tuple(config.retrain.fractions),
                              key=key)
    acc, auc = np.asarray(res.accuracy), np.asarray(res.auc)
    if names == ['random']:
      acc, auc = acc.mean(0, keepdims=True), auc.mean(keepdims=True)
    for name, a, row in zip(names, auc, acc):
      results[f'evalx_auc/{name}'] = float(a)
      for t, v in zip(res.fractions, row):
        results[f'evalx/{name}/{t:.1f}'] = float(v)
      curves.setdefault('evalx', {})[name] = (res.fractions, row)


def _figures(config, ds, maps, globals_, curves, groups, f, workdir) -> None:
  """figures/class_maps.png and figures/kar_roar.png."""
  fig_dir = os.path.join(workdir, 'figures')
  per_class = np.nan_to_num(np.asarray(maps.per_class))
  nc = min(config.num_figure_classes, per_class.shape[0])
  names = ds.meta.get('class_names') if isinstance(ds.meta, dict) else None
  label = lambda i: (str(names[i]) if names is not None and i < len(names)
                     else f'class {i}')
  if groups is not None and groups.kind == 'patches':
    expand = lambda m: np.asarray(groups.expand(jnp.asarray(m, jnp.float32)))
    images = np.stack([expand(np.asarray(globals_['normlime']))]
                      + [expand(per_class[i]) for i in range(nc)])
    fig = viz.map_grid(images, ['NormLIME global'] + [label(i)
                                                      for i in range(nc)])
  else:
    names = ds.meta.get('feature_names') if isinstance(ds.meta, dict) else None
    if names is None and isinstance(ds.meta, dict) and 'vocab' in ds.meta:
      names = ds.meta['vocab']
    labels = ([str(v) for v in names][:f] + [f'#{i}' for i in range(
        len(names), f)]) if names is not None else [f'X{i + 1}' for i in
                                                     range(f)]
    bars = {'NormLIME global': globals_['normlime']}
    for i in range(nc):
      bars[f'NormLIME {label(i)}'] = per_class[i]
    fig = viz.map_bars(bars, labels=labels, top=None if f <= 30 else 25,
                       title=f'{ds.name}: NormLIME maps')
  viz.save(fig, os.path.join(fig_dir, 'class_maps.png'), dpi=90)
  titles = {'kar': 'KAR: keep top t, retrain (higher is better)',
            'roar': 'ROAR: remove top t, retrain (lower is better)',
            'evalx': 'EVAL-X: keep top t (higher is better)'}
  panels = {titles[tag]: c for tag, c in curves.items()}
  if panels:
    fig = viz.curves(panels, xlabel='fraction t of features',
                     ylabel='test accuracy')
    viz.save(fig, os.path.join(fig_dir, 'kar_roar.png'), dpi=90)


# ----------------------------------------------------------------- output
def table(results: dict[str, float], methods: Any) -> dict[str, dict]:
  """Rows = methods; columns = KAR/ROAR AUC, accuracy at t = 0.1 and 0.5,
  the ground-truth recall where measured."""
  rows = {}
  for m in methods:
    row = {}
    for col, key in (('kar_auc', f'kar_auc/{m}'), ('kar@0.1', f'kar/{m}/0.1'),
                     ('kar@0.5', f'kar/{m}/0.5'),
                     ('roar_auc', f'roar_auc/{m}'),
                     ('roar@0.5', f'roar/{m}/0.5'),
                     ('evalx_auc', f'evalx_auc/{m}'),
                     ('class_recall', f'class_topk_recall/{m}')):
      if key in results:
        row[col] = results[key]
    if row:
      rows[m] = row
  return rows


SUMMARY_COLUMNS = ('kar_auc', 'roar_auc', 'evalx_auc', 'kar@0.1',
                   'class_recall')


def summarize(workdirs: list[str]) -> str:
  """Mean +- std over finished runs (e.g. seeds) of `table`'s columns."""
  return common.summarize_runs(workdirs, lambda r: table(r, METHODS),
                               SUMMARY_COLUMNS)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
  if _SUMMARIZE.value:
    print(summarize(_SUMMARIZE.value))
    return
  config = _CONFIG.value
  if not _WORKDIR.value:
    raise app.UsageError('--workdir is required (or --summarize).')
  results = run(config, _WORKDIR.value)
  print(common.format_table(
      table(results, config.methods),
      title=f'normlime {config.variant} ({config.data}, '
            f'{int(results["num_explain"])} rows explained, black box test '
            f'accuracy {results["blackbox/test_accuracy"]:.3f})'))


def _define_flags() -> None:
  """Defines the binary's flags (only when run as a program)."""
  global _CONFIG, _WORKDIR, _SUMMARIZE
  _CONFIG, _WORKDIR = common.define_config_flags(
      'experiments/configs/normlime.py:switch', workdir_required=False)
  _SUMMARIZE = flags.DEFINE_list(
      'summarize', None, 'Workdirs of finished runs (e.g. one per seed): '
      'print the mean +- std table of their metrics.json and exit.')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
