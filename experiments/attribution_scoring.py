"""The metric suite of the attribution experiment (`experiments.attribution`).

`score` computes the ground-truth metrics (tabular: median rank, TPR/FDR,
AUROC; synthetic images: pointing game, effective heat ratio, patch AUROC)
and the black-box metrics (deletion/insertion, sensitivity-n, infidelity) of
one method's attributions; `shapley_errors` compares the Shapley estimators
with a reference (exact Shapley values, or permutation sampling with many
permutations).

Ranking (`metrics.RANK_BY`, passed explicitly): the tabular ground-truth
metrics (median rank, TPR/FDR, AUROC) and the patch AUROC rank by
|attribution| (`rank_by='abs'`, L2X's convention); the pointing game and
deletion/insertion by the signed attribution (`rank_by='signed'`, Petsiuk
et al.).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from xai_jax import attribution as xa
from xai_jax import blackbox as bb
from xai_jax import masking
from xai_jax import metrics as xm
from xai_jax.data import synthetic

SHAPLEY_ESTIMATORS = ('kernel_shap', 'permutation_shap')


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


def units_and_map(setup: Setup, attr: np.ndarray, x: jax.Array
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
  units, amap = units_and_map(setup, attr, x)
  out: dict[str, float] = {}
  k_rank, k_sens, k_inf = jax.random.split(key, 3)
  if 'features' in truth:          # tabular ground truth
    gt = truth['features']
    out['median_rank'] = xm.median_rank(units, gt, k_rank,
                                        rank_by='abs')['median_rank_mean']
    r = xm.tpr_fdr_at_k(units, gt, truth['k'], rank_by='abs')
    out['tpr'], out['fdr'] = r['tpr_mean'], r['fdr_mean']
    out['auroc'] = xm.auroc(units, gt, rank_by='abs')['auroc_mean']
  if 'box_mask' in truth:          # image ground truth
    out['pointing_game'] = xm.pointing_game(
        amap, truth['box_mask'], tolerance=mc.pointing_tolerance,
        rank_by='signed')['hit_mean']
    out['ehr'] = xm.effective_heat_ratio(amap, truth['box_mask'])['ehr_mean']
    out['auroc'] = xm.auroc(units, truth['patches'],
                            rank_by='abs')['auroc_mean']
  d = units.shape[1]
  di = xm.deletion_insertion(setup.box, x, units, target=target,
                             groups=setup.groups, baseline=mc.baseline,
                             num_steps=d, space='probs', rank_by='signed')
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


def ground_truth(ds: Any, groups: masking.FeatureGroups | None,
                  data: str) -> dict[str, Any]:
  if ds.ground_truth is None:
    return {}
  if ds.x.ndim == 2:
    return {'features': jnp.asarray(ds.ground_truth),
            'k': synthetic.TABULAR_K[data]}
  patches = jnp.asarray(ds.meta['ground_truth_patches'])
  box_mask = groups.expand(patches.astype(jnp.float32)) > 0.5
  return {'patches': patches, 'box_mask': box_mask}


def method_options(config: ml_collections.ConfigDict, name: str
                   ) -> dict[str, Any]:
  """The options of method `name`: `config.method_kwargs[name]`, with the
  explained output `space` defaulting to `config.space`."""
  kw = (config.method_kwargs[name].to_dict()
        if name in config.method_kwargs else {})
  return {'space': config.space, **kw}


def shapley_errors(setup: Setup, config: ml_collections.ConfigDict,
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
      t0 = time.perf_counter()
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
                   time.perf_counter() - t0)
    est = jnp.asarray(attributions[name]).reshape(x.shape[0], -1)
    err = xm.shapley_error(est, refs[ref_key])
    rows[name]['shapley_mae'] = float(err['mae_mean'])
    rows[name]['shapley_rmse'] = float(err['rmse_mean'])
    rows[name]['shapley_spearman'] = float(err['spearman_mean'])
