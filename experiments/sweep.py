r"""Sweeps of the L2X experiment: data sets x seeds x L2X settings -> markdown.

  python -m experiments.l2x --config=experiments/configs/l2x.py:xor \
      --workdir=/tmp/l2x_sweep \
      --sweep_variants=xor,orange_skin,nonlinear_additive,switch \
      --sweep_seeds=0,1,2 --sweep_samplers=concrete,subset,straight_through

  # more settings: --sweep_setting='LABEL:key=value,key=value' (repeatable),
  # e.g. --sweep_setting='subset_tau0.5:sampler=subset,tau=0.5'

`--config.*` overrides given on the command line apply to every variant of a
sweep. The data, black box, EVAL-X evaluator and baselines are computed once
per data set and seed; each setting only refits L2X. Each run writes
`<workdir>/<variant>/<label>/seed<s>/metrics.json` (reused when present, so
an interrupted sweep resumes) and the tables go to `<workdir>/table.md` (or
`out_path`).
"""

from __future__ import annotations

import ast
import copy
import json
import os
import time
from typing import Any, Mapping, Sequence

from absl import logging
import ml_collections
import numpy as np

from experiments import common
from experiments import l2x as l2x_exp
from experiments import selection
from experiments.configs import l2x as l2x_configs
from xai_jax import timing
from xai_jax import train

TABULAR = l2x_configs.TABULAR
OPTIMUM = {'xor': 1.5, 'orange_skin': 2.5, 'nonlinear_additive': 2.5,
           'switch': 3.0}


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
  `--config.*` overrides of the command line), by dotted path."""
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
  literals where they parse (0.5, True, None, (1, 2)), else strings. A bare
  sampler name is `sampler=<name>`."""
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

  Args:
    config: the base config; its fields that differ from its variant's
      defaults are applied to every variant.
    workdir: the sweep's folder.
    variants: config variants (data sets).
    seeds: `config.seed` values.
    settings: `(label, {field: value})` L2X settings.
    out_path: markdown file (default `<workdir>/table.md`).
  """
  overrides = config_overrides(config)
  overrides.pop('variant', None)
  overrides.pop('seed', None)
  for key in overrides:
    if key in ('data', 'k', 'activation', 'epochs', 'batch_size') or \
        key.startswith('blackbox_train.'):
      logging.warning('sweep: --config.%s=%r applies to every variant.', key,
                      overrides[key])
  results: dict[tuple[str, str, int], dict[str, float]] = {}
  loads = [timing.load_average()]
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
      shared_dir = os.path.join(workdir, variant, f'_shared_seed{seed}')
      common.prepare_workdir(shared_dir, cfg)
      setup = selection.prepare(cfg, shared_dir)
      base_path = os.path.join(shared_dir, 'baselines.json')
      if os.path.exists(base_path):
        base_m = common.read_json(base_path)
      else:
        base_m, _ = selection.baseline_metrics(setup)
        with open(base_path, 'w') as f:
          json.dump(base_m, f, indent=2, sort_keys=True)
      for label, fields, run_dir in todo:
        rc = copy.deepcopy(cfg)
        for k, v in fields.items():
          _set(rc, k, v)
        selection.check_config(rc)
        common.prepare_workdir(run_dir, rc)
        m, sel = l2x_exp.l2x_metrics(setup, rc, None)
        metrics = {**setup.info, **m, **base_m}
        metrics.update(selection.same_rows_metrics(setup, sel['l2x'],
                                                   metrics))
        train.write_metrics_json(run_dir, metrics)
        if seed == seeds[0]:
          selection.save_figures(setup, sel, run_dir)
        results[(variant, label, seed)] = metrics
        loads.append(timing.load_average())
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


def _mean_sd(values: Sequence[float], digits: int = 2) -> str:
  v = np.asarray([x for x in values if x is not None and np.isfinite(x)],
                 np.float64)
  if v.size == 0:
    return '—'
  if v.size == 1:
    return f'{v[0]:.{digits}f}'
  return f'{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}'


def sweep_markdown(results: Mapping[tuple[str, str, int], Mapping[str, float]],
                   variants: Sequence[str], labels: Sequence[str],
                   seeds: Sequence[int], config: ml_collections.ConfigDict,
                   loads: Sequence[float], seconds: float) -> str:
  """Markdown tables of a sweep (mean ± sd over seeds)."""
  def get(v, lab, s, key):
    return results.get((v, lab, s), {}).get(key)

  def cell(v, lab, key, digits=2):
    return _mean_sd([get(v, lab, s, key) for s in seeds], digits)

  base_names = [b for b in l2x_configs.BASELINES
                if any(f'{b}/posthoc_accuracy' in r for r in results.values())]
  lines = []
  lines.append(f'Seeds {list(seeds)}; mean ± sd over seeds. Black box: '
               f'`{config.blackbox}` for the tabular sets. Load average '
               f'during the sweep: {min(loads):.1f}-{max(loads):.1f} '
               f'(2 shared CPU cores); sweep wall time {seconds / 60:.1f} '
               'min.\n')
  tab = [v for v in variants if v in TABULAR]
  for key, title in (
      ('median_rank', '**Median rank of the ground-truth features** (lower '
       'is better; L2X on its k-hot selection as the original code, '
       'baselines on |attribution|)'),
      ('median_rank_scores', '**Median rank, L2X ranked by its selector '
       'logits** (the full ranking, as the baselines; not the original '
       'protocol)')):
    if not tab or not any(key in r for r in results.values()):
      continue
    lines.append(title + '\n')
    head = ['data set', 'optimum'] + [f'L2X {lab}' for lab in labels]
    if key == 'median_rank':
      head += base_names
    lines.append('| ' + ' | '.join(head) + ' |')
    lines.append('|' + '---|' * len(head))
    for v in tab:
      row = [v, f'{OPTIMUM[v]:.1f}']
      row += [cell(v, lab, key) for lab in labels]
      if key == 'median_rank':
        row += [cell(v, labels[0], f'{b}/median_rank') for b in base_names]
      lines.append('| ' + ' | '.join(row) + ' |')
    lines.append('')
  for key, title in (('tpr', 'TPR of the top-k (ground truth)'),
                     ('fdr', 'FDR of the top-k (ground truth)'),
                     ('posthoc_accuracy', 'Post-hoc accuracy (black box on '
                      'x_S agrees with the black box on x)'),
                     ('evalx_accuracy', 'EVAL-X accuracy (evaluator trained '
                      'on random masks, on x_S, vs the labels)'),
                     ('switch_selects_x10', 'Switch: fraction of rows whose '
                      'selection holds X10 (the regime feature)')):
    have = [v for v in variants if any(
        key in r or any(f'{b}/{key}' in r for b in base_names)
        for (rv, _, _), r in results.items() if rv == v)]
    if not have:
      continue
    lines.append(f'**{title}**\n')
    head = ['data set'] + [f'L2X {lab}' for lab in labels] + base_names
    lines.append('| ' + ' | '.join(head) + ' |')
    lines.append('|' + '---|' * len(head))
    for v in have:
      row = [v] + [cell(v, lab, key, 3) for lab in labels]
      row += [cell(v, labels[0], f'{b}/{key}', 3) for b in base_names]
      lines.append('| ' + ' | '.join(row) + ' |')
    lines.append('')
  lines.append('**L2X timing** (seconds, wall clock on the loaded machine; '
               'compile = jit tracing + lowering + XLA compilation inside '
               'the fit; explain = the second, compiled call on all test '
               'rows)\n')
  head = ['data set', 'setting', 'train', 'compile', 'train excl. compile',
          'train CPU s', 'steps', 'explain s', 'explain compile s',
          'rows/s', 'load']
  lines.append('| ' + ' | '.join(head) + ' |')
  lines.append('|' + '---|' * len(head))
  for v in variants:
    for lab in labels:
      row = [v, lab] + [cell(v, lab, k, d) for k, d in (
          ('train_seconds', 1), ('train_compile_seconds', 1),
          ('train_seconds_excl_compile', 1), ('train_cpu_seconds', 1),
          ('train_steps', 0), ('explain_seconds', 3),
          ('explain_compile_seconds', 2), ('explain_per_second', 0),
          ('load_average', 1))]
      lines.append('| ' + ' | '.join(row) + ' |')
  lines.append('')
  per_seed = ['**Per seed** (median rank, or post-hoc accuracy without '
              'ground truth)\n', '| data set | setting | ' + ' | '.join(
                  f'seed {s}' for s in seeds) + ' |',
              '|---|---|' + '---|' * len(seeds)]
  for v in variants:
    key = 'median_rank' if v in TABULAR else 'posthoc_accuracy'
    for lab in labels:
      vals = [get(v, lab, s, key) for s in seeds]
      per_seed.append(f'| {v} | {lab} | ' + ' | '.join(
          '—' if x is None else f'{x:.3f}' for x in vals) + ' |')
  lines += per_seed
  lines.append('')
  return '\n'.join(lines)
