"""Figures of explanations (matplotlib, imported only when a figure is drawn).

    from xai_jax import viz
    fig = viz.selected_patches(x[:8], {'L2X': out.mask}, groups)
    viz.save(fig, '/tmp/patches.png')

Every function returns a `matplotlib.figure.Figure` and takes numpy or JAX
arrays:

* `heatmap_overlays`: input-shaped attribution maps of images, one column a
  method (signed maps red/blue, non-negative maps red), ground-truth
  outlined;
* `map_grid`: a grid of image-shaped maps, one titled panel each (e.g.
  NormLIME's global and per-class maps);
* `map_bars`: one bar chart per global map (e.g. NormLIME's global and
  per-class maps over tabular columns or vocabulary ids);
* `selected_patches`: images with the selected patches kept and outlined,
  the rest dimmed (L2X and other selection methods on images);
* `token_highlights`: token rows with the selected words highlighted;
* `selection_frequency`: how often each feature is selected, per method
  (and per regime, e.g. the two regimes of L2X's switch set);
* `feature_bars`: mean |attribution| per feature inside and outside the
  ground truth, one panel a method;
* `curves`: line plots, one panel a metric (deletion / insertion curves);
* `confusion`: a row-normalised confusion matrix of a classifier.

`pyplot()` gives `matplotlib.pyplot` with the non-interactive Agg backend
unless a notebook backend is active; `save` writes and closes a figure.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np

from xai_jax import masking

Figure = Any  # matplotlib.figure.Figure (matplotlib is imported lazily)

_INLINE_BACKEND = 'module://matplotlib_inline.backend_inline'


def pyplot() -> Any:
  """`matplotlib.pyplot`, on the Agg backend unless a notebook backend is on."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  if matplotlib.get_backend().lower() not in ('agg', _INLINE_BACKEND):
    try:
      matplotlib.use('Agg')
    except Exception:  # pylint: disable=broad-except
      pass
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def save(fig: Figure, path: str, *, dpi: int = 100) -> str:
  """Writes `fig` to `path` (folders created), closes it, returns `path`."""
  plt = pyplot()
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fig.savefig(path, dpi=dpi)
  plt.close(fig)
  return path


def _check_selections(selections: Mapping[str, Any]) -> list[str]:
  if not selections:
    raise ValueError('selections must name at least one method.')
  return list(selections)


def heatmap_overlays(images: Any, maps: Mapping[str, Any], *,
                     ground_truth: Any = None,
                     num_examples: int | None = None,
                     alpha: float | None = None) -> Figure:
  """A grid of attribution maps: rows = images, columns = input + methods.

  Args:
    images: `[n, H, W, C]` images in [0, 1] (the first channel is shown).
    maps: method -> input-shaped maps `[>= n, H, W, C]` (channels summed).
      Non-negative maps (saliency, Grad-CAM, RISE) are drawn red; signed
      maps red (positive) / blue (negative), symmetric around 0.
    ground_truth: optional bool `[n, H, W]` or `[n, H, W, 1]` pixel mask,
      outlined on every panel.
    num_examples: rows shown (default all n).
    alpha: opacity of the maps drawn over the grayscale input (None: the
      maps alone).
  Returns:
    the figure (`n x (len(maps) + 1)` axes).
  Raises:
    ValueError: images not `[n, H, W, C]`, or a map of another shape.
  """
  plt = pyplot()
  images = np.asarray(images)
  if images.ndim != 4:
    raise ValueError(f'images must be [n, H, W, C], got shape {images.shape}.')
  n = images.shape[0] if num_examples is None else min(int(num_examples),
                                                        images.shape[0])
  names = list(maps)
  arrays = {}
  for name in names:
    a = np.asarray(maps[name])[:n]
    if a.shape[1:] != images.shape[1:]:
      raise ValueError(f'maps[{name!r}] must be input-shaped '
                       f'{images.shape[1:]}, got {a.shape[1:]}.')
    arrays[name] = a.sum(-1)
  gt = None
  if ground_truth is not None:
    gt = np.asarray(ground_truth, np.float32)[:n]
    gt = gt[..., 0] if gt.ndim == 4 else gt
  fig, axes = plt.subplots(n, len(names) + 1,
                           figsize=(1.3 * (len(names) + 1), 1.4 * n),
                           squeeze=False)
  for i in range(n):
    ax = axes[i, 0]
    ax.imshow(images[i, ..., 0], cmap='gray', vmin=0, vmax=1)
    if gt is not None:
      ax.contour(gt[i], levels=[0.5], colors='lime', linewidths=0.8)
    if i == 0:
      ax.set_title('input', fontsize=7)
    for j, name in enumerate(names):
      m = arrays[name][i]
      ax = axes[i, j + 1]
      if alpha is not None:
        ax.imshow(images[i, ..., 0], cmap='gray', vmin=0, vmax=1)
      over = {} if alpha is None else {'alpha': float(alpha)}
      if m.min() >= 0:
        ax.imshow(m, cmap='Reds', vmin=m.min(), vmax=max(m.max(), 1e-12),
                  **over)
      else:
        lim = max(float(np.abs(m).max()), 1e-12)
        ax.imshow(m, cmap='bwr', vmin=-lim, vmax=lim, **over)
      if gt is not None:
        ax.contour(gt[i], levels=[0.5], colors='k', linewidths=0.6)
      if i == 0:
        ax.set_title(name.replace('_', '\n', 1), fontsize=7)
  for ax in axes.ravel():
    ax.set_xticks([])
    ax.set_yticks([])
  fig.tight_layout()
  return fig


def map_grid(maps: Any, titles: Sequence[str], *, columns: int = 6,
             cmap: str = 'Reds') -> Figure:
  """Image-shaped maps side by side, one titled panel each.

  Args:
    maps: `[n, H, W]` or `[n, H, W, C]` (channels summed) maps, e.g.
      NormLIME's class maps expanded to pixels by `FeatureGroups.expand`.
    titles: n panel titles.
    columns: panels per row.
    cmap: matplotlib colour map; each panel is scaled to its own maximum.
  Returns:
    the figure.
  Raises:
    ValueError: maps not `[n, H, W(, C)]`, or a title count other than n.
  """
  plt = pyplot()
  m = np.asarray(maps, np.float32)
  if m.ndim == 4:
    m = m.sum(-1)
  if m.ndim != 3:
    raise ValueError(f'maps must be [n, H, W] or [n, H, W, C], got shape '
                     f'{np.shape(maps)}.')
  titles = list(titles)
  if len(titles) != m.shape[0]:
    raise ValueError(f'titles must name the {m.shape[0]} maps, got '
                     f'{len(titles)}.')
  cols = max(1, min(int(columns), m.shape[0]))
  rows = -(-m.shape[0] // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(1.5 * cols, 1.65 * rows),
                           squeeze=False)
  for ax in axes.ravel():
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_axis_off()
  for i in range(m.shape[0]):
    ax = axes.ravel()[i]
    ax.set_axis_on()
    hi = float(np.nanmax(m[i])) if np.isfinite(m[i]).any() else 1.0
    ax.imshow(m[i], cmap=cmap, vmin=min(0.0, float(np.nanmin(m[i]))),
              vmax=max(hi, 1e-12))
    ax.set_title(titles[i], fontsize=7)
  fig.tight_layout()
  return fig


def map_bars(maps: Mapping[str, Any], *, labels: Sequence[str] | None = None,
             top: int | None = None, title: str = '') -> Figure:
  """Global importance maps as bar charts, one panel a map.

  Args:
    maps: panel title -> `[F]` importance per feature.
    labels: F feature names for the ticks (default '0' ... 'F-1').
    top: show only each panel's `top` largest features, in decreasing order
      (None: every feature in its own order).
    title: the figure's title.
  Returns:
    the figure (one axes a panel).
  Raises:
    ValueError: no maps, maps of different lengths, or a label count other
      than F.
  """
  plt = pyplot()
  if not maps:
    raise ValueError('maps must hold at least one map.')
  arrays = {k: np.asarray(v, np.float32).reshape(-1) for k, v in maps.items()}
  sizes = {a.shape[0] for a in arrays.values()}
  if len(sizes) != 1:
    raise ValueError(f'maps must all have the same length, got {sorted(sizes)}.')
  f = sizes.pop()
  labels = [str(i) for i in range(f)] if labels is None else list(labels)
  if len(labels) != f:
    raise ValueError(f'labels must name the {f} features, got {len(labels)}.')
  shown = f if top is None else max(1, min(int(top), f))
  fig, axes = plt.subplots(len(arrays), 1,
                           figsize=(max(4.0, 0.28 * shown + 1.5),
                                    1.9 * len(arrays)), squeeze=False)
  for ax, (name, a) in zip(axes[:, 0], arrays.items()):
    order = (np.arange(f) if top is None
             else np.argsort(-np.nan_to_num(a, nan=-np.inf), kind='stable')[:shown])
    ax.bar(np.arange(shown), np.nan_to_num(a[order]), color='tab:red')
    ax.set_xticks(np.arange(shown))
    ax.set_xticklabels([labels[i] for i in order], rotation=90, fontsize=6)
    ax.set_title(name, fontsize=8)
  if title:
    fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  return fig


def selected_patches(images: Any, selections: Mapping[str, Any],
                     groups: masking.FeatureGroups, *,
                     titles: Sequence[str] | None = None,
                     ground_truth: Any = None) -> Figure:
  """Images with the selected patches kept and outlined (the rest dimmed).

  Args:
    images: `[n, H, W, 1]` images in [0, 1].
    selections: method -> 0/1 group selection `[>= n, num_groups]`.
    groups: the patch groups (`masking.patch_groups`).
    titles: optional per-image titles (e.g. the predicted classes).
    ground_truth: optional `[n, num_groups]` true patches (dashed gold).
  Returns:
    the figure (rows = methods, columns = images).
  Raises:
    ValueError: no method, or `groups` that are not patches.
  """
  plt = pyplot()
  names = _check_selections(selections)
  if groups.grid_shape is None:
    raise ValueError('groups must be patch groups (masking.patch_groups).')
  images = np.asarray(images)
  n = images.shape[0]
  fig, axes = plt.subplots(len(names), n,
                           figsize=(1.3 * n, 1.45 * len(names)),
                           squeeze=False)
  gh, gw = groups.grid_shape
  ph, pw = images.shape[1] // gh, images.shape[2] // gw
  for r, name in enumerate(names):
    sel = np.asarray(selections[name], np.float32)[:n]
    keep = np.asarray(groups.expand(sel))
    for c in range(n):
      ax = axes[r, c]
      shown = images[c, ..., 0] * (0.25 + 0.75 * keep[c, ..., 0])
      ax.imshow(shown, cmap='gray', vmin=0, vmax=1)
      for g in np.flatnonzero(sel[c] > 0.5):
        i, j = divmod(int(g), gw)
        ax.add_patch(plt.Rectangle((j * pw - 0.5, i * ph - 0.5), pw, ph,
                                   fill=False, ec='red', lw=1.2))
      if ground_truth is not None:
        for g in np.flatnonzero(np.asarray(ground_truth)[c]):
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


def token_highlights(tokens: Any, selections: Mapping[str, Any],
                     vocab: Sequence[str], *, ground_truth: Any = None,
                     max_tokens: int = 40,
                     titles: Sequence[str] | None = None) -> Figure:
  """Token rows with each method's selected words highlighted.

  Args:
    tokens: int `[n, L]` token ids (0 = PAD, not shown).
    selections: method -> 0/1 selection `[>= n, L]`.
    vocab: id -> word (ids past its end are shown as `#id`).
    ground_truth: optional `[n, L]` true tokens (bold).
    max_tokens: words shown per row.
    titles: optional per-row labels.
  Returns:
    the figure (one text line per row and method, one axes).
  """
  plt = pyplot()
  names = _check_selections(selections)
  tokens = np.asarray(tokens)
  n = tokens.shape[0]
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
      ax.text(0.005, y, label, fontsize=7, family='monospace',
              transform=ax.transAxes, va='center')
      xpos = 0.17
      for p in np.flatnonzero(tokens[r] > 0)[:max_tokens]:
        tid = int(tokens[r, p])
        word = vocab[tid] if tid < len(vocab) else f'#{tid}'
        bold = ground_truth is not None and bool(np.asarray(ground_truth)[r, p])
        box = (dict(facecolor=colors[m % len(colors)], pad=1.0, lw=0)
               if sel[p] > 0.5 else None)
        t = ax.text(xpos, y, word, fontsize=7, family='monospace',
                    transform=ax.transAxes, va='center', bbox=box,
                    fontweight='bold' if bold else 'normal')
        xpos += t.get_window_extent(renderer=renderer).width / \
            fig.bbox.width + 0.004
        if xpos > 0.99:
          break
      y -= dy
  return fig


def selection_frequency(selections: Mapping[str, Any], ground_truth: Any, *,
                        k: int, regime: Any = None,
                        regime_names: Sequence[str] | None = None,
                        title: str = '') -> Figure:
  """How often each feature is selected, per method (bars), per regime.

  Args:
    selections: method -> 0/1 selection `[n_m, d]` of the first n_m rows.
    ground_truth: bool `[n, d]` true features (shaded gold where a feature
      is relevant in most rows of a panel).
    k: the number of selected features (axis label).
    regime: optional int `[n]` regime of each row (one panel a regime, e.g.
      L2X's switch set); None: one panel of all rows.
    regime_names: names of the regimes (default 'regime i').
    title: prefix of the panel titles (e.g. the data set's name).
  Returns:
    the figure (one axes a panel).
  """
  plt = pyplot()
  names = _check_selections(selections)
  gt_rows = np.asarray(ground_truth)
  d = gt_rows.shape[1]
  if regime is None:
    panels = [('all rows', None)]
  else:
    regime = np.asarray(regime)
    ids = sorted(int(r) for r in np.unique(regime))
    label = (lambda r: regime_names[r]) if regime_names else (
        lambda r: f'regime {r}')
    panels = [(f'{label(r)} rows', r) for r in ids]
  fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 3.4),
                           squeeze=False)
  width = 0.8 / len(names)
  for ax, (panel, r) in zip(axes[0], panels):
    for j, name in enumerate(names):
      sel = np.asarray(selections[name]) > 0.5
      keep = np.ones(sel.shape[0], bool) if r is None else (
          regime[:sel.shape[0]] == r)
      freq = sel[keep].mean(0) if keep.any() else np.zeros(d)
      ax.bar(np.arange(d) + (j - (len(names) - 1) / 2) * width, freq, width,
             label=name)
    keep_gt = np.ones(len(gt_rows), bool) if r is None else regime == r
    truth = gt_rows[keep_gt].mean(0)
    for i in np.flatnonzero(truth > 0.5):
      ax.axvspan(i - 0.45, i + 0.45, color='gold', alpha=0.25, lw=0)
    ax.set_xticks(np.arange(d))
    ax.set_xticklabels([f'X{i + 1}' for i in range(d)])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(f'fraction of rows in the top-{k}')
    ax.set_title(f'{title}: {panel} (gold = ground truth)' if title else
                 f'{panel} (gold = ground truth)')
  axes[0, -1].legend(fontsize=7, loc='upper right')
  fig.tight_layout()
  return fig


def feature_bars(attributions: Mapping[str, Any], ground_truth: Any = None, *,
                 title: str = '') -> Figure:
  """Mean |attribution| per feature inside and outside the ground truth.

  Each row's |attributions| are normalised to sum 1; per feature the orange
  bar averages over the rows where the feature is in the ground truth, the
  blue bar over the rows where it is not. A good explainer has tall orange
  and short blue bars.

  Args:
    attributions: method -> `[n, d]` attributions (or `[n, ...]`, flattened).
    ground_truth: optional bool `[n, d]` (None: every bar is blue).
    title: the figure's title.
  Returns:
    the figure (one axes a method, at most 4 a row).
  """
  plt = pyplot()
  names = _check_selections(attributions)
  first = np.asarray(attributions[names[0]])
  n = first.shape[0]
  d = int(np.prod(first.shape[1:]))
  gt = (np.asarray(ground_truth, bool).reshape(n, d)
        if ground_truth is not None else np.zeros((n, d), bool))
  cols = min(4, len(names))
  rows = -(-len(names) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.2 * rows),
                           squeeze=False)
  pos = np.arange(1, d + 1)
  for ax, name in zip(axes.ravel(), names):
    a = np.abs(np.asarray(attributions[name]).reshape(n, -1))
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
  if title:
    fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  return fig


def curves(panels: Mapping[str, Mapping[str, tuple[Any, Any]]], *,
           xlabel: str = '', ylabel: str = '',
           dashed: Sequence[str] = ('random',)) -> Figure:
  """Line plots: one panel per title, one line per method.

  Args:
    panels: panel title -> method -> `(x [m], y [m])`, e.g.
      `{'deletion (lower is better)': {'saliency': (fractions, curve)}}`.
    xlabel, ylabel: axis labels of every panel.
    dashed: methods drawn dashed (reference lines such as 'random').
  Returns:
    the figure (one axes a panel; the legend on the last one).
  """
  plt = pyplot()
  if not panels:
    raise ValueError('panels must hold at least one panel.')
  fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4),
                           squeeze=False)
  for ax, (title, lines) in zip(axes[0], panels.items()):
    for name, (x, y) in lines.items():
      ax.plot(np.asarray(x), np.asarray(y),
              '--' if name in dashed else '-', label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
  axes[0, -1].legend(fontsize=7, loc='best')
  fig.tight_layout()
  return fig


def confusion(labels: Any, predictions: Any, num_classes: int, *,
              title: str = '') -> Figure:
  """A row-normalised confusion matrix (rows = labels, columns = predicted).

  Args:
    labels: int `[n]` true classes.
    predictions: int `[n]` predicted classes.
    num_classes: c (the matrix is `[c, c]`).
    title: the axes title.
  Returns:
    the figure (one axes).
  """
  plt = pyplot()
  labels = np.asarray(labels).astype(np.int64)
  predictions = np.asarray(predictions).astype(np.int64)
  if labels.shape != predictions.shape:
    raise ValueError(f'labels {labels.shape} and predictions '
                     f'{predictions.shape} must have the same shape.')
  cm = np.zeros((num_classes, num_classes))
  np.add.at(cm, (labels, predictions), 1)
  fig, ax = plt.subplots(figsize=(4, 4))
  ax.imshow(cm / np.maximum(cm.sum(1, keepdims=True), 1), cmap='Blues',
            vmin=0, vmax=1)
  ax.set_xlabel('predicted')
  ax.set_ylabel('label')
  if title:
    ax.set_title(title)
  fig.tight_layout()
  return fig


__all__ = [
    'confusion', 'curves', 'feature_bars', 'heatmap_overlays', 'map_bars', 'map_grid',
    'pyplot',
    'save', 'selected_patches', 'selection_frequency', 'token_highlights',
]
