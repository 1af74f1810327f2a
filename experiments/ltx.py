r"""LTX (pLTX and LTX) against gradient, perturbation and learned baselines.

  python -m experiments.ltx --config=experiments/configs/ltx.py:synthetic_images \
      --workdir=/tmp/ltx_images
  python -m experiments.ltx --summarize=DIR1,DIR2,...   # mean +- sd, claims

Trains (or resumes) the black box, pretrains the LTX explainer on training
rows, explains the first `num_explain` rows of the disjoint test split with
pLTX, LTX and every baseline through the explainer protocol
(`xai_jax.EXPLAINERS`), and scores the pixel maps: POS / NEG (and their
probability versions) on every variant, segmentation against the pattern's
box on the synthetic images. Writes config.json, metrics.json (keys
documented in experiments/configs/ltx.py) and figures/maps.png.
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

import xai_jax
from experiments import common
from experiments import method_maps
from xai_jax import blackbox as bb
from xai_jax import masking
from xai_jax import metrics as xm
from xai_jax import timing
from xai_jax import train
from xai_jax import viz
from experiments.configs import ltx as cfg_module

_CONFIG = _WORKDIR = _SUMMARIZE = None
SCORE_KEYS = ('pos_auc', 'neg_auc', 'del_auc', 'ins_auc', 'miou',
              'pixel_accuracy', 'map')
LOWER_IS_BETTER = ('pos_auc', 'del_auc')
GRADIENT_BASELINES = ('saliency', 'integrated_gradients', 'smoothgrad',
                      'gradcam')


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises a ValueError naming the field for an unusable config."""
  methods = list(config.methods)
  if not methods:
    raise ValueError('config.methods is empty; choose from '
                     f'{list(cfg_module.METHODS)}.')
  for m in methods:
    if m not in cfg_module.METHODS:
      raise ValueError(f'Unknown method {m!r} in config.methods; expected '
                       f'one of {list(cfg_module.METHODS)}.')
  if len(set(methods)) != len(methods):
    raise ValueError(f'config.methods lists a method twice: {methods}.')
  if 'gradcam' in methods and config.model != 'cnn':
    raise ValueError("config.methods has 'gradcam', which needs the CNN, but "
                     f'config.model={config.model!r}.')
  for name in ('num_explain', 'num_estimate', 'num_pretrain'):
    if not isinstance(config[name], int) or config[name] < 2:
      raise ValueError(f'config.{name} must be an int >= 2, got '
                       f'{config[name]!r}.')
  if not isinstance(config.num_validation, int) or config.num_validation < 0:
    raise ValueError('config.num_validation must be an int >= 0, got '
                     f'{config.num_validation!r}.')
  if config.num_pretrain + config.num_validation > config.num_train:
    raise ValueError(
        f'config.num_pretrain + config.num_validation = '
        f'{config.num_pretrain + config.num_validation} exceeds '
        f'config.num_train={config.num_train}.')
  if config.num_explain > config.num_test:
    raise ValueError(f'config.num_explain={config.num_explain} exceeds '
                     f'config.num_test={config.num_test}.')


def explain_ltx(config: ml_collections.ConfigDict, box: bb.BlackBox,
                train_x: np.ndarray, x: np.ndarray, target: jax.Array,
                workdir: str) -> tuple[dict[str, np.ndarray],
                                       dict[str, float], dict[str, float]]:
  """pLTX and LTX maps of x, their compiled seconds, and the pretraining
  and finetuning figures (`ltx/...` keys of metrics.json)."""
  kw = config.method_kwargs.ltx.to_dict()
  n_pre, n_val = config.num_pretrain, config.num_validation
  val = train_x[n_pre:n_pre + n_val] if n_val else None
  with timing.timed() as t:
    e, history = xai_jax.ltx.fit(
        config.seed, box, train_x[:n_pre], kw, validation=val,
        workdir=os.path.join(workdir, 'ltx'), return_history=True)
  info = {'ltx/pretrain_seconds': t.wall,
          'ltx/pretrain_steps': float(train.resolve_steps(
              n_pre, kw['batch_size'], kw['num_steps'], kw['epochs'])[1])}
  if 'eval/objective' in history and len(history['eval/objective']):
    info['ltx/validation_objective'] = float(history['eval/objective'][-1])
  maps, seconds = {}, {}
  for name, steps in (('pltx', 0), ('ltx', int(kw['finetune_steps']))):
    if name not in config.methods:
      continue
    fn = lambda steps=steps: xai_jax.ltx.explain(
        e, x, target=target, finetune_steps=steps, return_info=steps > 0)
    out, _, t = common.time_twice(fn)
    if steps > 0:
      out, extra = out
      info['ltx/kept_step_mean'] = float(np.mean(extra['step']))
    maps[name] = np.asarray(out.scores)
    seconds[name] = t.excl_compile
  return maps, seconds, info


def score(config: ml_collections.ConfigDict, box: bb.BlackBox, ds: Any,
          x: np.ndarray, target: jax.Array, m: np.ndarray) -> dict[str, float]:
  """The variant's metrics for one method's maps `m` `[b, H, W]`."""
  out: dict[str, float] = {}
  for order, acc_key, prob_key in (('most', 'pos_auc', 'del_auc'),
                                   ('least', 'neg_auc', 'ins_auc')):
    r = xm.blackout_curves(box, x, m, target=target, order=order)
    out[acc_key] = 100 * float(r['accuracy_auc_mean'])
    out[prob_key] = 100 * float(r['prob_auc_mean'])
  if config.data == 'images':
    seg = xm.segmentation_scores(m, ground_truth_box(config, ds))
    for k in ('miou', 'pixel_accuracy', 'map'):
      out[k] = float(seg[k])
  return out


def ground_truth_box(config: ml_collections.ConfigDict, ds: Any
                     ) -> np.ndarray:
  """The pattern's cells as a pixel mask, bool `[b, H, W]`."""
  gm = masking.patch_groups(ds.x.shape[1:], config.patch)
  return np.asarray(gm.expand(jnp.asarray(
      ds.meta['ground_truth_patches'], jnp.float32)) > 0.5)[..., 0]


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains/resumes the box, explains, scores; returns the flat metrics."""
  t_start = time.perf_counter()
  check_config(config)
  common.prepare_workdir(workdir, config)
  train_ds, test_ds = common.load_data(
      config, num_classes=config.model_kwargs.num_classes)
  box, info = common.fit_blackbox(
      config.model, config.model_kwargs.to_dict(), config, train_ds,
      test_ds, seed=config.seed, workdir=os.path.join(workdir, 'blackbox'))
  results: dict[str, float] = {
      'blackbox/test_accuracy': info['test_accuracy'],
      'blackbox/train_seconds': info['train_seconds']}
  ds = test_ds.subset(slice(0, config.num_explain))
  x = np.asarray(ds.x)
  train_x = np.asarray(train_ds.x)
  target = box.predict(jnp.asarray(x))
  key = jax.random.key(config.seed)
  maps, seconds, ltx_info = explain_ltx(config, box, train_x, x, target,
                                        workdir)
  results.update(ltx_info)
  others = ml_collections.ConfigDict(config.to_dict())
  others.methods = tuple(m for m in config.methods
                         if m not in ('pltx', 'ltx'))
  if others.methods:
    m2, s2 = method_maps.explain_maps(others, box, train_x[:config.num_pretrain],
                                 x, target, key)
    maps.update(m2)
    seconds.update(s2)
  for name in config.methods:
    results[f'explain_seconds/{name}'] = seconds[name]
    for k, v in score(config, box, ds, x, target, maps[name]).items():
      results[f'{k}/{name}'] = v
    logging.info('%s scored', name)
  results['num_explain'] = float(config.num_explain)
  _save_figure(config, ds, {k: maps[k] for k in config.methods}, workdir)
  results['run_seconds'] = time.perf_counter() - t_start
  train.write_metrics_json(workdir, results)
  return results


def _save_figure(config: ml_collections.ConfigDict, ds: Any,
                 maps: dict[str, np.ndarray], workdir: str) -> None:
  n = min(config.num_figure_examples, len(ds))
  gt = None
  if config.data == 'images':
    gt = ground_truth_box(config, ds.subset(slice(0, n)))[..., None]
  fig = viz.heatmap_overlays(ds.x[:n], {k: v[:n, ..., None]
                                        for k, v in maps.items()},
                             ground_truth=gt)
  viz.save(fig, os.path.join(workdir, 'figures', 'maps.png'), dpi=90)


def table(results: dict[str, float], methods: Any) -> dict[str, dict]:
  """Flat `<metric>/<method>` results -> rows (methods) x metrics."""
  rows: dict[str, dict[str, float]] = {m: {} for m in methods}
  for k, v in results.items():
    metric, _, method = k.partition('/')
    if metric in SCORE_KEYS + ('explain_seconds',) and method in rows:
      rows[method][metric] = v
  return rows


def claim_counts(runs: list[dict[str, float]]) -> dict[str, str]:
  """The paper's claims as 'runs holding it / runs': LTX better than pLTX,
  and better than every gradient baseline present, on NEG AUC (higher),
  POS AUC (lower) and mIoU (higher, synthetic images)."""
  out = {}
  for metric in ('neg_auc', 'pos_auc', 'miou'):
    have = [r for r in runs if f'{metric}/ltx' in r]
    if not have:
      continue
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0

    def beats(r, others):
      return all(sign * (r[f'{metric}/ltx'] - r[f'{metric}/{m}']) > 0
                 for m in others if f'{metric}/{m}' in r)
    out[f'{metric}: ltx better than pltx'] = (
        f'{sum(beats(r, ("pltx",)) for r in have)}/{len(have)}')
    out[f'{metric}: ltx better than every gradient baseline'] = (
        f'{sum(beats(r, GRADIENT_BASELINES) for r in have)}/{len(have)}')
  return out


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
  if _SUMMARIZE.value:
    dirs = [d for d in _SUMMARIZE.value.split(',') if d]
    print(common.summarize_runs(
        dirs, lambda r: {k: v for k, v in table(
            r, cfg_module.METHODS).items() if v},
        SCORE_KEYS + ('explain_seconds',), claims=claim_counts))
    return
  if _WORKDIR.value is None:
    raise app.UsageError('--workdir is required (or --summarize).')
  config = _CONFIG.value
  results = run(config, _WORKDIR.value)
  print(common.format_table(
      table(results, config.methods),
      title=f'ltx {config.variant} ({int(results["num_explain"])} rows, '
            f'black box test accuracy '
            f'{results["blackbox/test_accuracy"]:.3f})'))


def _define_flags() -> None:
  """Defines the binary's flags (only when run as a program)."""
  global _CONFIG, _WORKDIR, _SUMMARIZE
  _CONFIG, _WORKDIR = common.define_config_flags(
      'experiments/configs/ltx.py:synthetic_images', workdir_required=False)
  _SUMMARIZE = flags.DEFINE_string(
      'summarize', None, 'Comma-separated workdirs of finished runs: print '
      'the mean +- sd of their metrics and the claim counts instead of '
      'running.')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
