r"""IBA and InputIBA against gradient and perturbation baselines.

  python -m experiments.input_iba \
      --config=experiments/configs/input_iba.py:synthetic_images \
      --workdir=/tmp/iiba_images
  python -m experiments.input_iba --summarize=DIR1,DIR2,...   # mean +- sd

Trains (or resumes) the black box, splits it, explains the first
`num_explain` test rows with every method through the explainer protocol
(`xai_jax.EXPLAINERS`) and scores the pixel (or token) maps: ground-truth
localisation on the synthetic images, insertion / deletion / sensitivity-n
on Fashion-MNIST, planted-token TPR on text. Writes config.json,
metrics.json (keys documented in experiments/configs/input_iba.py) and
figures/maps.png.
"""

from __future__ import annotations

import os
import time
from typing import Any

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments import common
from experiments import method_maps
from xai_jax import blackbox as bb
from xai_jax import masking
from xai_jax import metrics as xm
from xai_jax import train
from xai_jax import viz
from experiments.configs import input_iba as cfg_module

_CONFIG = _WORKDIR = _SUMMARIZE = None
SCORE_KEYS = ('ehr', 'pointing_game', 'auroc', 'insertion_auc',
              'deletion_auc', 'sensitivity_n', 'tpr')


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
  if config.data == 'text' and {'gradcam', 'occlusion', 'rise'} & set(
      methods):
    raise ValueError('config.methods: gradcam, occlusion and rise explain '
                     'images only, not config.data=text.')
  for name in ('num_explain', 'num_estimate'):
    if not isinstance(config[name], int) or config[name] < 2:
      raise ValueError(f'config.{name} must be an int >= 2, got '
                       f'{config[name]!r}.')
  if config.num_explain > config.num_test:
    raise ValueError(f'config.num_explain={config.num_explain} exceeds '
                     f'config.num_test={config.num_test}.')


def score(config: ml_collections.ConfigDict, box: bb.BlackBox, ds: Any,
          x: np.ndarray, target: jax.Array, m: np.ndarray, key: jax.Array
          ) -> dict[str, float]:
  """The variant's metrics for one method's maps `m`."""
  out: dict[str, float] = {}
  if config.data == 'images':
    gm = masking.patch_groups(box.input_shape, config.patch)
    mask = np.asarray(gm.expand(jnp.asarray(
        ds.meta['ground_truth_patches'], jnp.float32)) > 0.5)[..., 0]
    out['ehr'] = float(xm.effective_heat_ratio_curve(m, mask)['ehr_auc_mean'])
    out['pointing_game'] = float(xm.pointing_game(
        m, mask, tolerance=0.0)['hit_mean'])
    out['auroc'] = float(xm.auroc(m.reshape(len(m), -1),
                                  mask.reshape(len(mask), -1))['auroc_mean'])
  elif config.data == 'fashion_mnist':
    pixels = masking.patch_groups(box.input_shape, 1)
    units = m.reshape(len(m), -1)
    mc = config.metrics
    di = xm.deletion_insertion(box, x, units, target=target, groups=pixels,
                               baseline=0.0, insertion_baseline='blur',
                               num_steps=mc.insertion_steps, space='probs')
    out['insertion_auc'] = float(di['insertion_auc_mean'])
    out['deletion_auc'] = float(di['deletion_auc_mean'])
    sens = []
    for j, n in enumerate(mc.sensitivity_ns):
      r = xm.sensitivity_n(box, x, units, n=int(n),
                           key=jax.random.fold_in(key, j),
                           num_subsets=mc.num_subsets, baseline=0.0,
                           target=target, groups=pixels, space='raw')
      out[f'sensitivity_n/{n}'] = float(r['sensitivity_n_mean'])
      sens.append(out[f'sensitivity_n/{n}'])
    out['sensitivity_n'] = float(np.mean(sens))
  else:                                                   # text
    gt = np.asarray(ds.ground_truth, bool)
    # PAD positions are never selected (they carry no word)
    ranked = np.where(np.asarray(ds.x) > 0, m, np.min(m) - 1e6)
    r = xm.tpr_fdr_at_k(ranked, gt, int(config.num_planted))
    out['tpr'] = float(r['tpr_mean'])
  return out


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
  target = box.predict(jnp.asarray(x))
  key = jax.random.key(config.seed)
  k_explain, k_metric = jax.random.split(key)
  maps, seconds = method_maps.explain_maps(config, box, np.asarray(train_ds.x), x,
                                      target, k_explain)
  for i, (name, m) in enumerate(maps.items()):
    results[f'explain_seconds/{name}'] = seconds[name]
    for k, v in score(config, box, ds, x, target, m,
                      jax.random.fold_in(k_metric, i)).items():
      metric, _, rest = k.partition('/')
      results[f'{metric}/{name}' + (f'/{rest}' if rest else '')] = v
  results['num_explain'] = float(config.num_explain)
  _save_figure(config, ds, maps, workdir)
  results['run_seconds'] = time.perf_counter() - t_start
  train.write_metrics_json(workdir, results)
  return results


def _save_figure(config: ml_collections.ConfigDict, ds: Any,
                 maps: dict[str, np.ndarray], workdir: str) -> None:
  n = min(config.num_figure_examples, len(ds))
  path = os.path.join(workdir, 'figures', 'maps.png')
  if config.data == 'text':
    k = int(config.num_planted)
    fig = viz.token_highlights(
        ds.x[:n], {name: np.asarray(xm.top_k_mask(jnp.asarray(v[:n]), k))
                   for name, v in maps.items()},
        ds.meta['vocab'], ground_truth=np.asarray(ds.ground_truth[:n]))
  else:
    gt = None
    if config.data == 'images':
      gm = masking.patch_groups(ds.x.shape[1:], config.patch)
      gt = np.asarray(gm.expand(jnp.asarray(
          ds.meta['ground_truth_patches'][:n], jnp.float32)) > 0.5)
    fig = viz.heatmap_overlays(ds.x[:n], {k: v[:n, ..., None]
                                          for k, v in maps.items()},
                               ground_truth=gt)
  viz.save(fig, path, dpi=90)


def table(results: dict[str, float], methods: Any) -> dict[str, dict]:
  """Flat `<metric>/<method>` results -> rows (methods) x metrics."""
  rows: dict[str, dict[str, float]] = {m: {} for m in methods}
  for k, v in results.items():
    metric, _, method = k.partition('/')
    if metric in SCORE_KEYS + ('explain_seconds',) and method in rows:
      rows[method][metric] = v
  return rows


GRADIENT_BASELINES = ('saliency', 'integrated_gradients', 'smoothgrad',
                      'gradcam')


def claim_counts(runs: list[dict[str, float]]) -> dict[str, str]:
  """The papers' claims, as 'runs holding it / runs': InputIBA above IBA,
  and above every gradient baseline present, on each ground-truth metric
  (EHR, AUROC) and on insertion AUC."""
  out = {}
  for metric in ('ehr', 'auroc', 'insertion_auc'):
    have = [r for r in runs if f'{metric}/input_iba' in r]
    if not have:
      continue
    def beats(r, others):
      return all(r[f'{metric}/input_iba'] > r[f'{metric}/{m}']
                 for m in others if f'{metric}/{m}' in r)
    out[f'{metric}: input_iba > iba'] = (
        f'{sum(beats(r, ("iba",)) for r in have)}/{len(have)}')
    if metric != 'insertion_auc':
      out[f'{metric}: input_iba > every gradient baseline'] = (
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
      title=f'input_iba {config.variant} ({int(results["num_explain"])} '
            f'rows, black box test accuracy '
            f'{results["blackbox/test_accuracy"]:.3f})'))


def _define_flags() -> None:
  """Defines the binary's flags (only when run as a program)."""
  global _CONFIG, _WORKDIR, _SUMMARIZE
  _CONFIG, _WORKDIR = common.define_config_flags(
      'experiments/configs/input_iba.py:synthetic_images',
      workdir_required=False)
  _SUMMARIZE = flags.DEFINE_string(
      'summarize', None, 'Comma-separated workdirs of finished runs: print '
      'the mean +- sd of their metrics instead of running.')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
