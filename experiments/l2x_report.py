"""Figures and markdown tables of the L2X experiments (`experiments.l2x`).

Pure helpers, no training: `plot_tabular` (how often each feature is
selected), `plot_patches` (selected image patches), `plot_tokens`
(highlighted words) and `sweep_markdown` (the tables of a seed x setting
sweep). `experiments.l2x` re-exports them.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments.configs import l2x as l2x_configs
from xai_jax import masking
from xai_jax.data import synthetic

TABULAR = l2x_configs.TABULAR
BASELINES = l2x_configs.BASELINES

# =============================================================================
# Figures.
# =============================================================================


def pyplot():
  """matplotlib.pyplot, with the Agg backend unless a notebook backend is on."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  if matplotlib.get_backend().lower() not in ('agg', 'module://matplotlib_'
                                              'inline.backend_inline'):
    try:
      matplotlib.use('Agg')
    except Exception:  # pylint: disable=broad-except
      pass
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def plot_tabular(selections: Mapping[str, np.ndarray],
                 test_ds: synthetic.Dataset, k: int):
  """Selection frequency of every feature per method (per regime for switch).

  Args:
    selections: method -> k-hot selection `[n_m, 10]` (first n_m test rows).
    test_ds: the test set (ground truth, switch regimes).
    k: the number of selected features.

  Returns:
    A matplotlib figure.
  """
  plt = pyplot()
  regime = test_ds.meta.get('regime')
  panels = ([('all rows', None)] if regime is None else
            [(f'{n} rows', r) for r, n in
             enumerate(test_ds.meta['regime_names'])])
  d = synthetic.NUM_TABULAR_FEATURES
  fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 3.4),
                           squeeze=False)
  width = 0.8 / max(len(selections), 1)
  for ax, (title, r) in zip(axes[0], panels):
    gt_rows = np.asarray(test_ds.ground_truth)
    for j, (name, sel) in enumerate(selections.items()):
      sel = np.asarray(sel) > 0.5
      keep = np.ones(sel.shape[0], bool) if r is None else (
          np.asarray(regime)[:sel.shape[0]] == r)
      freq = sel[keep].mean(0) if keep.any() else np.zeros(d)
      ax.bar(np.arange(d) + (j - (len(selections) - 1) / 2) * width, freq,
             width, label=name)
    keep_gt = np.ones(len(gt_rows), bool) if r is None else (
        np.asarray(regime) == r)
    truth = gt_rows[keep_gt].mean(0)
    for i in np.flatnonzero(truth > 0.5):
      ax.axvspan(i - 0.45, i + 0.45, color='gold', alpha=0.25, lw=0)
    ax.set_xticks(np.arange(d))
    ax.set_xticklabels([f'X{i + 1}' for i in range(d)])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(f'fraction of rows in the top-{k}')
    ax.set_title(f'{test_ds.name}: {title} (gold = ground truth)')
  axes[0, -1].legend(fontsize=7, loc='upper right')
  fig.tight_layout()
  return fig


def plot_patches(x: np.ndarray, selections: Mapping[str, np.ndarray],
                 groups: masking.FeatureGroups, *,
                 titles: Sequence[str] | None = None,
                 ground_truth: np.ndarray | None = None):
  """Images with the selected patches highlighted (the rest dimmed).

  Args:
    x: `[n, H, W, 1]` images.
    selections: method -> group selection `[>= n, d]`.
    groups: the patch groups.
    titles: optional per-image titles (e.g. predictions).
    ground_truth: optional `[n, d]` ground-truth patches (outlined in gold).

  Returns:
    A matplotlib figure (rows = methods, columns = images).
  """
  plt = pyplot()
  n = x.shape[0]
  names = list(selections)
  fig, axes = plt.subplots(len(names), n, figsize=(1.3 * n,
                                                   1.45 * len(names)),
                           squeeze=False)
  gh, gw = groups.grid_shape
  ph, pw = x.shape[1] // gh, x.shape[2] // gw
  for r, name in enumerate(names):
    sel = np.asarray(selections[name])[:n]
    keep = np.asarray(groups.expand(jnp.asarray(sel, jnp.float32)))
    for c in range(n):
      ax = axes[r, c]
      img = x[c, ..., 0]
      shown = img * (0.25 + 0.75 * keep[c, ..., 0])
      ax.imshow(shown, cmap='gray', vmin=0, vmax=1)
      for g in np.flatnonzero(sel[c] > 0.5):
        i, j = divmod(int(g), gw)
        ax.add_patch(plt.Rectangle((j * pw - 0.5, i * ph - 0.5), pw, ph,
                                   fill=False, ec='red', lw=1.2))
      if ground_truth is not None:
        for g in np.flatnonzero(ground_truth[c]):
          i, j = divmod(int(g), gw)
          ax.add_patch(plt.Rectangle((j * pw - 0.5, i * ph - 0.5), pw, ph,
                                     fill=False, ec='gold', lw=0.8, ls='--'))
      ax.set_xticks([])
      ax.set_yticks([])
      if c == 0:
        ax.set_ylabel(name, fontsize=7)
      if r == 0 and titles is not None:
        ax.set_title(titles[c], fontsize=6)
  fig.tight_layout()
  return fig


def plot_tokens(tokens: np.ndarray, selections: Mapping[str, np.ndarray],
                vocab: Sequence[str], *, ground_truth: np.ndarray | None = None,
                max_tokens: int = 40, titles: Sequence[str] | None = None):
  """Token rows with the selected words highlighted.

  Args:
    tokens: int `[n, L]` (0 = PAD, not shown).
    selections: method -> selection `[>= n, L]`.
    vocab: id -> word.
    ground_truth: optional `[n, L]` (underlined, bold).
    max_tokens: words shown per row.
    titles: optional per-row labels.

  Returns:
    A matplotlib figure (one text line per row and method).
  """
  plt = pyplot()
  n = tokens.shape[0]
  names = list(selections)
  lines = n * len(names)
  fig = plt.figure(figsize=(12, 0.32 * lines + 0.6))
  ax = fig.add_axes([0, 0, 1, 1])
  ax.axis('off')
  colors = ['#ff9f9f', '#9fd0ff', '#b5f5a5', '#ffd27f', '#d9b3ff']
  y = 1.0 - 0.3 / (lines + 1)
  dy = 0.95 / (lines + 1)
  renderer = fig.canvas.get_renderer()
  for r in range(n):
    for m, name in enumerate(names):
      sel = np.asarray(selections[name])[r]
      label = f'{name}:' if titles is None else f'{titles[r]} {name}:'
      t = ax.text(0.005, y, label, fontsize=7, family='monospace',
                  transform=ax.transAxes, va='center')
      xpos = 0.17
      for p in np.flatnonzero(tokens[r] > 0)[:max_tokens]:
        word = vocab[int(tokens[r, p])] if int(tokens[r, p]) < len(vocab) \
            else f'#{int(tokens[r, p])}'
        bold = ground_truth is not None and bool(ground_truth[r, p])
        box = (dict(facecolor=colors[m % len(colors)], pad=1.0, lw=0)
               if sel[p] > 0.5 else None)
        t = ax.text(xpos, y, word, fontsize=7, family='monospace',
                    transform=ax.transAxes, va='center', bbox=box,
                    fontweight='bold' if bold else 'normal')
        bb_ = t.get_window_extent(renderer=renderer)
        xpos += bb_.width / fig.bbox.width + 0.004
        if xpos > 0.99:
          break
      y -= dy
  return fig



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

  base_names = [b for b in BASELINES
                if any(f'{b}/posthoc_accuracy' in r for r in results.values())]
  lines = []
  lines.append(f'Seeds {list(seeds)}; mean ± sd over seeds. Black box: '
               f'`{config.blackbox}` for the tabular sets. Load average '
               f'during the sweep: {min(loads):.1f}-{max(loads):.1f} '
               f'(2 shared CPU cores); sweep wall time {seconds / 60:.1f} '
               'min.\n')
  optimum = {'xor': 1.5, 'orange_skin': 2.5, 'nonlinear_additive': 2.5,
             'switch': 3.0}
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
      row = [v, f'{optimum[v]:.1f}']
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
