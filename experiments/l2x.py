r"""L2X experiments: explain a black box with L2X and baselines, score them.

  python -m experiments.l2x --config=experiments/configs/l2x.py:switch \
      --workdir=/tmp/l2x_switch

`run(config, workdir)`: data (`common.load_data`) -> black box ('oracle' =
`data.synthetic.oracle_blackbox`, or a model trained by
`common.fit_blackbox` into `<workdir>/blackbox`, resumable) -> EVAL-X
evaluator (`realx.train_evalx`) -> `l2x.fit` (timed, compile split off) ->
`l2x.explain` of the test set (timed) -> baselines at the same k
(`experiments.selection`) -> metrics, `metrics.json`, `figures/*.png`, a
printed table. The config is `l2x.default_config` plus experiment fields
(experiments/configs/l2x.py, which documents the metric keys).

Sweep mode (data sets x seeds x L2X settings -> markdown tables, see
`experiments.sweep`):

  python -m experiments.l2x --config=experiments/configs/l2x.py:xor \
      --workdir=/tmp/l2x_sweep \
      --sweep_variants=xor,orange_skin,nonlinear_additive,switch \
      --sweep_seeds=0,1,2 --sweep_samplers=concrete,subset,straight_through \
      --sweep_setting='subset_tau0.5:sampler=subset,tau=0.5'
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Mapping

from absl import app
from absl import flags
from absl import logging
import jax
import ml_collections
import numpy as np

from experiments import common
from experiments import selection
from experiments.configs import l2x as l2x_configs
from xai_jax import l2x
from xai_jax import metrics as xm
from xai_jax import nets
from xai_jax import timing
from xai_jax import train

BASELINES = l2x_configs.BASELINES
# Columns of the printed table.
COLUMNS = ('median_rank', 'tpr', 'fdr', 'posthoc_accuracy', 'evalx_accuracy',
           'approximator_accuracy', 'explain_per_second', 'num_explain')
check_config = selection.check_config
prepare = selection.prepare


def l2x_fields(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The L2X hyper-parameters of an experiment config: its fields that
  `l2x.default_config(modality)` has (what `l2x.fit` gets as `config=`)."""
  modality = common.modality_of(config.data)
  fields = {f: config[f] for f in l2x.default_config(modality).keys()}
  fields['modality'] = modality
  return fields


def make_approximator(setup: selection.Setup,
                      config: ml_collections.ConfigDict):
  """The approximator module of `config` (None: l2x's default net)."""
  masking_mode = config.approximator_masking
  kw = config.approximator_kwargs.to_dict()
  if config.approximator == 'blackbox' and (masking_mode != 'zero' or kw):
    raise ValueError("config.approximator='blackbox' (q = the frozen black "
                     'box) takes no approximator_kwargs and needs '
                     "approximator_masking='zero'.")
  c = int(setup.train_ds.num_classes)
  if masking_mode == 'impute':
    if setup.modality != 'tabular':
      raise ValueError("config.approximator_masking='impute' is for tabular "
                       'data only.')
    return nets.MarginalImputingApproximator(
        num_classes=c, activation=config.activation, **kw)
  if masking_mode != 'zero':
    raise ValueError("config.approximator_masking must be 'zero' (L2X) or "
                     f"'impute', got {masking_mode!r}.")
  if not kw:
    return None
  return nets.make_approximator(
      setup.modality, num_classes=c, k=config.k, activation=config.activation,
      vocab_size=config.vocab_size, **kw)


# Config fields that do not change what L2X trains (scoring, logging,
# checkpoint cadence): a rerun may change them and still resume.
RESUME_IGNORES = ('baselines', 'baseline_num_explain', 'baseline_kwargs',
                  'evalx', 'num_figure_rows', 'num_test', 'log_every',
                  'checkpoint', 'checkpoint_every', 'chunk_size',
                  'rank_signed')


def check_resume(config: ml_collections.ConfigDict, l2x_dir: str) -> None:
  """Guards a resume: `l2x_dir` may only hold checkpoints of this config.

  The first run writes the config (less `RESUME_IGNORES`) to
  `<l2x_dir>/l2x_config.json`; a rerun whose config differs in any other
  field would resume another run's training, so it raises instead.

  Raises:
    ValueError: naming the fields that differ.
  """
  fields = json.loads(config.to_json_best_effort(sort_keys=True))
  mine = {k: v for k, v in fields.items() if k not in RESUME_IGNORES}
  path = os.path.join(l2x_dir, 'l2x_config.json')
  if os.path.exists(path):
    saved = common.read_json(path)
    diff = sorted(k for k in set(saved) | set(mine)
                  if saved.get(k) != mine.get(k))
    if diff:
      raise ValueError(
          f'{l2x_dir} holds L2X checkpoints of another config (fields '
          f'{diff} differ), which a rerun would resume; use another '
          f'--workdir, delete {l2x_dir}, or pass --config.checkpoint=False.')
    return
  os.makedirs(l2x_dir, exist_ok=True)
  with open(path, 'w') as f:
    json.dump(mine, f, indent=2, sort_keys=True)


def fit_l2x(setup: selection.Setup,
            config: ml_collections.ConfigDict | None = None,
            workdir: str | None = None
            ) -> tuple[l2x.L2XModel, dict[str, float]]:
  """Trains L2X on the setup's black box; returns the model and timings."""
  config = setup.config if config is None else config
  selector = None
  if config.selector_kwargs:
    selector = nets.make_selector(
        setup.modality, num_groups=setup.groups.num_groups,
        groups=setup.groups, activation=config.activation,
        vocab_size=config.vocab_size, **config.selector_kwargs.to_dict())
  approximator = make_approximator(setup, config)
  wd = os.path.join(workdir, 'l2x') if workdir and config.checkpoint else None
  if wd is not None:
    check_resume(config, wd)
  key = jax.random.fold_in(jax.random.key(config.seed), 1)
  load0 = timing.load_average()
  with timing.timed() as t:
    model, hist = l2x.fit(
        key, setup.box, np.asarray(setup.train_ds.x), l2x_fields(config),
        groups=setup.groups, selector=selector, approximator=approximator,
        workdir=wd, return_history=True)
    jax.block_until_ready(model.params)
  steps = np.asarray(hist.get('step', ()))
  info = {'train_seconds': t.wall, 'train_compile_seconds': t.compile,
          'train_seconds_excl_compile': t.excl_compile,
          'train_cpu_seconds': t.cpu,
          'train_steps': float(steps[-1]) if steps.size else float('nan'),
          'load_average': 0.5 * (load0 + timing.load_average())}
  logging.info('L2X fit: %.1f s (%.1f s compile), load %.1f', t.wall,
               t.compile, info['load_average'])
  return model, info


def l2x_metrics(setup: selection.Setup,
                config: ml_collections.ConfigDict | None = None,
                workdir: str | None = None
                ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
  """Fits, explains (timed) and scores L2X; returns (metrics, {'l2x': mask})."""
  config = setup.config if config is None else config
  model, info = fit_l2x(setup, config, workdir)
  x = np.asarray(setup.test_ds.x)
  out, first, second = common.time_twice(lambda: l2x.explain(model, x))
  mask, scores = np.asarray(out.mask), np.asarray(out.scores)
  info.update({'explain_seconds': second.wall,
               'explain_per_second': x.shape[0] / max(second.wall, 1e-9),
               'explain_compile_seconds': max(first.wall - second.wall, 0.0),
               'explain_first_call_seconds': first.wall})
  key = jax.random.fold_in(jax.random.key(config.seed), 2)
  rows = slice(0, mask.shape[0])
  info.update(selection.score_selection(setup, mask, None, rows,
                                        rank_by='abs', key=key))
  if setup.modality == 'tabular':
    # The full ranking by the selector's logits (signed), as the baselines
    # are ranked by their full attributions; the k-hot `median_rank` above
    # is the original protocol.
    mr = xm.median_rank(scores, setup.ground_truth(rows), key,
                        rank_by='signed')
    info['median_rank_scores'] = float(mr['median_rank_mean'])
  info['approximator_accuracy'] = l2x.approximator_accuracy(
      model, x, setup.box)
  return info, {'l2x': mask}


def method_table(metrics: Mapping[str, float], methods: tuple[str, ...]
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
  load0 = timing.load_average()
  check_config(config)
  common.prepare_workdir(workdir, config)
  setup = prepare(config, workdir)
  metrics: dict[str, float] = dict(setup.info)
  l2x_m, selections = l2x_metrics(setup, config, workdir)
  metrics.update(l2x_m)
  base_m, base_sel = selection.baseline_metrics(setup)
  metrics.update(base_m)
  metrics.update(selection.same_rows_metrics(setup, selections['l2x'],
                                             metrics))
  selections.update(base_sel)
  metrics['run_seconds'] = time.perf_counter() - t0
  metrics['load_average'] = 0.5 * (load0 + timing.load_average())
  train.write_metrics_json(workdir, metrics)
  selection.save_figures(setup, selections, workdir)
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


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
  config = _CONFIG.value
  sweeping = (_SWEEP_VARIANTS.value or _SWEEP_SEEDS.value or
              _SWEEP_SAMPLERS.value or _SWEEP_SETTING.value)
  if not sweeping:
    run(config, _WORKDIR.value)
    return
  from experiments import sweep  # pylint: disable=g-import-not-at-top
  variants = _SWEEP_VARIANTS.value or [config.variant]
  for v in variants:
    if v not in l2x_configs.VARIANTS:
      raise app.UsageError(f'Unknown variant {v!r} in --sweep_variants; '
                           f'expected names from {list(l2x_configs.VARIANTS)}.')
  seeds = [int(s) for s in _SWEEP_SEEDS.value] or [int(config.seed)]
  settings = [(s, {'sampler': s}) for s in _SWEEP_SAMPLERS.value]
  settings += [sweep.parse_setting(s) for s in _SWEEP_SETTING.value]
  settings = settings or [(config.sampler, {})]
  labels = [s[0] for s in settings]
  if len(set(labels)) != len(labels):
    raise app.UsageError(f'Sweep setting labels must be unique: {labels}.')
  print(sweep.sweep(config, _WORKDIR.value, variants, seeds, settings,
                    _SWEEP_OUT.value or None))


def _define_flags() -> None:
  """Defines the binary's flags (--config, --workdir, --sweep_*)."""
  global _CONFIG, _WORKDIR, _SWEEP_VARIANTS, _SWEEP_SEEDS
  global _SWEEP_SAMPLERS, _SWEEP_SETTING, _SWEEP_OUT
  _CONFIG, _WORKDIR = common.define_config_flags(
      'experiments/configs/l2x.py:switch')
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


_CONFIG = _WORKDIR = _SWEEP_VARIANTS = _SWEEP_SEEDS = None
_SWEEP_SAMPLERS = _SWEEP_SETTING = _SWEEP_OUT = None

if __name__ == '__main__':
  _define_flags()
  app.run(main)
