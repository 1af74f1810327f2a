r"""Selective explanations: when to keep FastSHAP, when to mix in MC^n.

  python -m experiments.selective \
      --config=experiments/configs/selective.py:tabular_d10 --workdir=/tmp/sel_d10
  python -m experiments.selective --summarize=/tmp/sel_s0,/tmp/sel_s1  # mean+-sd

N rows -> train / calibration / test -> black box (`common.fit_blackbox`) ->
FastSHAP ensemble of k in one `fastshap.fit` (Amor = the members' mean) ->
HQ targets, deep and learned uncertainty -> per budget n: MC^n, lambda terms
on calibration, `selective.coverage_curve` per uncertainty (and random /
oracle rankings) -> metrics.json (keys in the config file), figures/, tables.
A workdir holding metrics.json of the same config is not rerun (its figure
is redrawn from it).
"""

from __future__ import annotations

import json
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
from xai_jax import data as xdata
from xai_jax import fastshap
from xai_jax import selective
from xai_jax import timing
from xai_jax import train
from xai_jax import viz

METHODS = ('selective_deep', 'selective_learned', 'selective_deep_bins',
           'selective_random', 'selective_oracle')
SCORES = ('deep', 'learned')
BUDGETS = ('d_plus_1', '2d', '4d')
DATA = ('dense', 'breast_cancer', 'text')
TABLE_ALPHAS = (0.5, 0.8, 0.9)
MSE_UNIT = 1e-4  # the tables' MSE columns are in units of 1e-4


def budget_samples(name: str, d: int) -> int:
  """n of a budget: 'd_plus_1' -> d + 1, '2d' -> 2d, '4d' -> 4d."""
  return {'d_plus_1': d + 1, '2d': 2 * d, '4d': 4 * d}[name]


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError for a config that cannot run (before any training)."""
  cov = [float(a) for a in config.coverages]
  for ok, msg in (
      (config.data in DATA, f'config.data must be one of {DATA}, got '
       f'{config.data!r}'),
      (set(config.mc_budgets) <= set(BUDGETS) and config.mc_budget in
       config.mc_budgets, f'config.mc_budgets must be some of {BUDGETS} and '
       f'hold config.mc_budget, got {tuple(config.mc_budgets)} and '
       f'{config.mc_budget!r}'),
      (cov and 0.0 in cov and 1.0 in cov and 0 <= min(cov) <= max(cov) <= 1,
       f'config.coverages must lie in [0, 1] and hold 0 and 1, got {cov}'),
      (len(config.splits) == 3 and abs(sum(config.splits) - 1) < 1e-6,
       f'config.splits must be 3 fractions summing to 1, got '
       f'{tuple(config.splits)}'),
      (config.ensemble_size >= 2, f'config.ensemble_size must be >= 2 (deep '
       f'uncertainty), got {config.ensemble_size}')):
    if not ok:
      raise ValueError(msg + '.')


def load_splits(config: ml_collections.ConfigDict) -> tuple[Any, Any, Any]:
  """Train, calibration and test `Dataset`s (config.splits of the rows)."""
  rng = np.random.default_rng(config.seed)
  f_tr, f_cal, _ = config.splits
  if config.data == 'breast_cancer':   # standardised by the train split
    kw = dict(key_or_seed=config.seed, test_fraction=1.0 - f_tr)
    tr, rest = (xdata.load_breast_cancer('train', **kw),
                xdata.load_breast_cancer('test', **kw))
    perm = rng.permutation(len(rest))
    n_cal = int(round(len(rest) * f_cal / (1.0 - f_tr)))
    return tr, rest.subset(perm[:n_cal]), rest.subset(perm[n_cal:])
  if config.data == 'dense':
    ds = xdata.make_dense(config.num_rows, config.seed, d=config.d)
  else:                                # every row seq_len tokens long
    ds = xdata.make_text(config.num_rows, config.seed,
                         seq_len=config.seq_len, vocab_size=config.vocab_size,
                         num_planted=config.num_planted,
                         min_len=config.seq_len)
  perm = rng.permutation(len(ds))
  n_tr, n_cal = int(round(f_tr * len(ds))), int(round(f_cal * len(ds)))
  return (ds.subset(perm[:n_tr]), ds.subset(perm[n_tr:n_tr + n_cal]),
          ds.subset(perm[n_tr + n_cal:]))


def _mean(v: Any) -> float:
  return float(jnp.nanmean(jnp.asarray(v)))


def _finished(config: ml_collections.ConfigDict, workdir: str
              ) -> dict[str, float] | None:
  """The metrics of a finished run of this config in `workdir`, else None."""
  done = common.finished_metrics(workdir, config)
  if done is not None:
    logging.info('%s holds a finished run: not rerun.', workdir)
    _figure(config, done, workdir)         # redrawn from the metrics
  return done


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """The experiment (module docstring); returns the flat metrics."""
  t_start = time.perf_counter()
  check_config(config)
  done = _finished(config, workdir)
  if done is not None:
    return done
  common.prepare_workdir(workdir, config)
  k_fs, k_hq, k_mc, k_unc, k_rand = jax.random.split(
      jax.random.key(config.seed), 5)
  tr, cal, te = load_splits(config)
  splits = {'tr': tr, 'cal': cal, 'te': te}
  b = config.blackbox
  box, info = common.fit_blackbox(b.model, b.model_kwargs, b, tr, te,
                                  seed=config.seed,
                                  workdir=os.path.join(workdir, 'blackbox'))
  res = {'blackbox/test_accuracy': info['test_accuracy'],
         'time/blackbox_s': info['train_seconds'],
         'num_train': len(tr), 'num_cal': len(cal), 'num_test': len(te)}

  # ---- Amor: k FastSHAP members trained in one run.
  with timing.timed() as t:
    amor = fastshap.fit(k_fs, box, tr.x, config.fastshap,
                        ensemble_size=config.ensemble_size,
                        baseline=config.baseline, space=config.space,
                        workdir=os.path.join(workdir, 'fastshap'))
  res['time/fastshap_fit_s'] = t.wall
  members = {s: fastshap.explain(amor, ds.x, members=True).scores
             for s, ds in splits.items()}
  a = {s: jnp.mean(m, axis=0) for s, m in members.items()}
  res['d'] = d = int(a['te'].shape[-1])

  # ---- HQ targets (exact Shapley values when d <= exact_max_players).
  exact = d <= config.exact_max_players
  hq_fn = lambda s, i, n: selective.reference_explanations(
      amor, splits[s].x, key=jax.random.fold_in(k_hq, i),
      exact_max_players=config.exact_max_players, num_samples=n)
  with timing.timed() as t:
    hq = jax.block_until_ready({
        'tr': hq_fn('tr', 0, config.hq_train_samples),
        'cal': hq_fn('cal', 1, config.hq_samples),
        'te': hq_fn('te', 2, config.hq_samples)})
  res['time/hq_s'] = t.wall
  res['hq_samples'] = 0 if exact else config.hq_samples
  if not exact:
    with timing.timed() as t:
      hq2 = jax.block_until_ready(hq_fn('te', 3, config.hq_samples))
    res['hq_noise'] = _mean(selective.mse_per_input(hq['te'], hq2)) / 2
    res['time/hq_noise_s'] = t.wall
  err = {s: selective.mse_per_input(a[s], hq[s]) for s in a}
  res['mse/amortized'] = float(jnp.mean(err['te']))
  res['spearman/amortized'] = res['fastshap_spearman'] = _mean(
      selective.spearman_per_input(a['te'], hq['te']))
  res['fastshap_member_spearman'] = float(np.mean([_mean(
      selective.spearman_per_input(m, hq['te'])) for m in members['te']]))
  logging.info('Amor: MSE %.3g, Spearman %.3f to HQ (%s)', res['mse/amortized'],
               res['fastshap_spearman'], 'exact' if exact else
               f'KernelSHAP {config.hq_samples}')

  # ---- uncertainty scores on calibration and test.
  with timing.timed() as t:
    learned = selective.fit_learned_uncertainty(
        k_unc, tr.x, err['tr'], vocab_size=config.get('vocab_size'),
        modality='text' if config.data == 'text' else 'tabular',
        **config.learned.to_dict())
  res['time/learned_fit_s'] = t.wall
  rand = jax.random.uniform(k_rand, (len(cal) + len(te),))
  u = {'deep': {s: selective.deep_uncertainty(members[s])
                for s in ('cal', 'te')},
       'learned': {s: selective.predict_uncertainty(learned, splits[s].x)
                   for s in ('cal', 'te')},
       'random': {'cal': rand[:len(cal)], 'te': rand[len(cal):]},
       'oracle': {'cal': err['cal'], 'te': err['te']}}
  for score in SCORES:
    res[f'uncertainty_auroc/{score}'] = float(selective.uncertainty_auroc(
        u[score]['te'], err['te'], top_fraction=config.auroc_top_fraction))
    res[f'uncertainty_spearman/{score}'] = float(
        selective.uncertainty_spearman(u[score]['te'], err['te']))
  runs = {m: (m[10:], config.num_bins) for m in METHODS}
  runs['selective_deep_bins'] = ('deep', config.bins_deep)

  # ---- per budget: MC^n, the coverage curves and the paper's claim.
  cov = [float(c) for c in config.coverages]
  order = np.argsort(cov)
  res['time/mc_s'] = 0.0
  for i, bname in enumerate(config.mc_budgets):
    n = budget_samples(bname, d)
    with timing.timed() as t:
      try:
        mc = {s: selective.mc_explanations(
            amor, splits[s].x, key=jax.random.fold_in(k_mc, 2 * i + j),
            num_samples=n, paired=config.mc_paired)
              for j, s in enumerate(('cal', 'te'))}
      except ValueError as e:        # a budget KernelSHAP cannot solve
        if bname == config.mc_budget:
          raise
        logging.warning('MC^%d failed, budget %s skipped: %s', n, bname, e)
        res[f'mc_failed/{bname}'] = 1.0
        continue
    res['time/mc_s'] += t.wall
    res[f'mse/mc_n_{bname}'] = float(jnp.mean(selective.mse_per_input(
        mc['te'], hq['te'])))
    res[f'spearman/mc_n_{bname}'] = _mean(selective.spearman_per_input(
        mc['te'], hq['te']))
    if config.compare_pairing:       # the other pairing, test split only
      other = 'unpaired' if config.mc_paired else 'paired'
      try:
        alt = selective.mc_explanations(
            amor, te.x, key=jax.random.fold_in(k_mc, 2 * i + 1),
            num_samples=n, paired=not config.mc_paired)
        res[f'mse/mc_n_{bname}_{other}'] = float(jnp.mean(
            selective.mse_per_input(alt, hq['te'])))
      except ValueError as e:        # paired below 2 (d - 1): singular
        logging.warning('MC^%d %s: %s', n, other, e)
        res[f'mc_failed/{bname}_{other}'] = 1.0
    num, den = selective.lambda_terms(a['cal'], mc['cal'], hq['cal'])
    best = min(res['mse/amortized'], res[f'mse/mc_n_{bname}'])
    sfx = '' if bname == config.mc_budget else f'_{bname}'
    for method, (score, bins) in runs.items():
      c = selective.coverage_curve(
          a['te'], mc['te'], u[score]['te'], u[score]['cal'], num, den,
          hq['te'], cov, num_bins=bins, clip=config.clip_lambda)
      c = {k: np.asarray(v) for k, v in c.items()}
      for j, alpha in enumerate(cov):
        res[f'mse/{method}{sfx}/{alpha:.1f}'] = float(c['mse'][j])
        res[f'spearman/{method}{sfx}/{alpha:.1f}'] = float(c['spearman'][j])
        if not sfx and np.isfinite(c['lambda_mean'][j]):
          res[f'lambda/{method}/{alpha:.1f}'] = float(c['lambda_mean'][j])
        if method == 'selective_deep':
          res[f'inferences/{bname}/{alpha:.1f}'] = float(
              1 + c['routed_fraction'][j] * (n + 1))
      res[f'claim/selective_below_both/{method[10:]}{sfx}'] = float(all(
          c['mse'][j] < best for j, x in enumerate(cov) if 0.0 < x < 1.0))
      res[f'mse_area/{method}{sfx}'] = float(np.trapezoid(
          c['mse'][order], np.asarray(cov)[order]))
  _figure(config, res, workdir)
  res['time/run_s'] = time.perf_counter() - t_start
  train.write_metrics_json(workdir, res)
  return res


def _figure(config: ml_collections.ConfigDict, r: dict[str, float],
            workdir: str) -> None:
  """figures/mse_vs_coverage.png from the metrics, primary budget: every
  line on a log MSE axis, then the same lines zoomed on the selective ones."""
  n, b = budget_samples(config.mc_budget, int(r['d'])), config.mc_budget
  cov = sorted(float(c) for c in config.coverages)
  lines = {'amortized (FastSHAP)': (cov, [r['mse/amortized']] * len(cov)),
           f'MC^{n} (KernelSHAP)': (cov, [r[f'mse/mc_n_{b}']] * len(cov))}
  for m in METHODS:
    lines[m.replace('_', ' ')] = (cov, [r[f'mse/{m}/{a:.1f}'] for a in cov])
  fig = viz.curves(
      {f'{config.variant} seed {config.seed}, n = {n}': lines,
       'zoom on Amor and the selective curves': lines},
      xlabel='coverage alpha (fraction keeping Amor)',
      ylabel='MSE to HQ (test)',
      dashed=(*list(lines)[:2], 'selective random', 'selective oracle'))
  fig.axes[0].set_yscale('log')
  zoom = [v for k, (_, ys) in lines.items() if not k.startswith('MC')
          for v in ys]
  pad = 0.05 * (max(zoom) - min(zoom)) + 1e-12
  fig.axes[1].set_ylim(min(zoom) - pad, max(zoom) + pad)
  viz.save(fig, os.path.join(workdir, 'figures', 'mse_vs_coverage.png'),
           dpi=90)


# ----------------------------------------------------------------- output
def _primary(r: dict[str, float]) -> str:
  """The primary budget: the one whose curves carry no _<budget> suffix."""
  return next(b for b in BUDGETS if f'mse/mc_n_{b}' in r
              and f'mse/selective_deep_{b}/0.8' not in r)


def table(r: dict[str, float]) -> dict[str, dict]:
  """Rows = Amor, MC^n and the methods at the primary budget: MSE (1e-4) at
  coverage 0.5, 0.8, 0.9, Spearman at 0.8, the MSE area, the claim."""
  rows = {}
  for name in ('amortized', f'mc_n_{_primary(r)}', *METHODS):
    at = (lambda a: f'/{a}') if name in METHODS else (lambda a: '')
    rows[name] = {f'mse@{a}': r[f'mse/{name}{at(a)}'] / MSE_UNIT
                  for a in TABLE_ALPHAS}
    rows[name]['spearman@0.8'] = r[f'spearman/{name}{at(0.8)}']
    if name in METHODS:
      rows[name]['mse_area'] = r[f'mse_area/{name}'] / MSE_UNIT
      rows[name]['below_both'] = r[f'claim/selective_below_both/{name[10:]}']
  return rows


def budget_table(r: dict[str, float]) -> dict[str, dict]:
  """Rows = budgets: n, MC^n alone, selective deep at 0.5 and 0.8, the
  oracle at 0.8 (MSE in 1e-4), the claim for deep."""
  rows = {}
  for b in BUDGETS:
    if f'mse/mc_n_{b}' in r:
      sfx = '' if b == _primary(r) else f'_{b}'
      other = [k for k in (f'mse/mc_n_{b}_paired', f'mse/mc_n_{b}_unpaired')
               if k in r]
      rows[f'n = {b}'] = {
          'n': budget_samples(b, int(r['d'])),
          'mse_mc': r[f'mse/mc_n_{b}'] / MSE_UNIT,
          'mse_mc_other_pairing': (r[other[0]] / MSE_UNIT if other
                                   else float('nan')),
          'spearman_mc': r[f'spearman/mc_n_{b}'],
          'deep@0.5': r[f'mse/selective_deep{sfx}/0.5'] / MSE_UNIT,
          'deep@0.8': r[f'mse/selective_deep{sfx}/0.8'] / MSE_UNIT,
          'oracle@0.8': r[f'mse/selective_oracle{sfx}/0.8'] / MSE_UNIT,
          'below_both_deep': r[f'claim/selective_below_both/deep{sfx}']}
  return rows


def setup_table(r: dict[str, float]) -> dict[str, dict]:
  """One row: FastSHAP's Spearman and MSE, HQ's noise, the uncertainties."""
  row = {'fastshap_spearman': r['fastshap_spearman'],
         'mse_amortized': r['mse/amortized'] / MSE_UNIT}
  if 'hq_noise' in r:
    row['hq_noise'] = r['hq_noise'] / MSE_UNIT
  for s in SCORES:
    row[f'auroc_{s}'] = r[f'uncertainty_auroc/{s}']
    row[f'spearman_{s}'] = r[f'uncertainty_spearman/{s}']
  row['run_s'] = r['time/run_s']
  return {'setup': row}


TABLES = ((table, ('mse@0.5', 'mse@0.8', 'mse@0.9', 'spearman@0.8',
                   'mse_area', 'below_both')),
          (budget_table, ('n', 'mse_mc', 'mse_mc_other_pairing',
                          'spearman_mc', 'deep@0.5',
                          'deep@0.8', 'oracle@0.8', 'below_both_deep')),
          (setup_table, ('fastshap_spearman', 'mse_amortized', 'hq_noise',
                         'auroc_deep', 'spearman_deep', 'auroc_learned',
                         'spearman_learned', 'run_s')))


def summarize(workdirs: list[str]) -> str:
  """Mean +- sd over finished runs (e.g. seeds) of the three tables."""
  return '\n\n'.join(common.summarize_runs(workdirs, fn, cols)
                     for fn, cols in TABLES)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError('Too many command-line arguments.')
  if _SUMMARIZE.value:
    print(summarize(_SUMMARIZE.value))
    return
  config = _CONFIG.value
  if not _WORKDIR.value:
    raise app.UsageError('--workdir is required (or --summarize).')
  r = run(config, _WORKDIR.value)
  print(f'selective {config.variant} seed {config.seed}: d = {int(r["d"])}, '
        f'black box accuracy {r["blackbox/test_accuracy"]:.3f}, MSE in 1e-4')
  for fn, _ in TABLES:
    print(common.format_table(fn(r)))


def _define_flags() -> None:
  """Defines the binary's flags (only when run as a program)."""
  global _CONFIG, _WORKDIR, _SUMMARIZE
  _CONFIG, _WORKDIR = common.define_config_flags(
      'experiments/configs/selective.py:tabular_d10', workdir_required=False)
  _SUMMARIZE = flags.DEFINE_list(
      'summarize', None, 'Workdirs of finished runs (e.g. one per seed): '
      'print the mean +- sd tables of their metrics.json and exit.')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
