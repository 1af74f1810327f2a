"""Tests for xai_jax/viz.py: every figure draws to a PNG with the right axes."""

import os

import numpy as np
import pytest

from xai_jax import masking
from xai_jax import viz
from xai_jax.data import synthetic


def _saved(fig, tmp_path, name):
  path = viz.save(fig, str(tmp_path / 'figs' / name))
  assert os.path.isfile(path) and os.path.getsize(path) > 1000
  with open(path, 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  return path


def test_pyplot_is_non_interactive():
  plt = viz.pyplot()
  assert plt.get_backend().lower() in (
      'agg', 'module://matplotlib_inline.backend_inline')


def test_heatmap_overlays(tmp_path):
  rng = np.random.default_rng(0)
  x = rng.uniform(size=(3, 8, 8, 1)).astype(np.float32)
  maps = {'saliency': np.abs(rng.normal(size=x.shape)),
          'integrated_gradients': rng.normal(size=x.shape)}
  gt = np.zeros((3, 8, 8), bool)
  gt[:, 2:4, 2:4] = True
  fig = viz.heatmap_overlays(x, maps, ground_truth=gt, num_examples=2)
  assert len(fig.axes) == 2 * 3
  assert fig.axes[1].get_title() == 'saliency'
  _saved(fig, tmp_path, 'heatmaps.png')
  fig = viz.heatmap_overlays(x, maps, alpha=0.5)
  assert len(fig.axes[1].images) == 2                # input + map
  assert fig.axes[1].images[1].get_alpha() == 0.5
  _saved(fig, tmp_path, 'overlays.png')
  with pytest.raises(ValueError, match=r"maps\['bad'\]"):
    viz.heatmap_overlays(x, {'bad': np.zeros((3, 4, 4, 1))})
  with pytest.raises(ValueError, match='images'):
    viz.heatmap_overlays(x[..., 0], maps)


def test_map_grid_one_titled_panel_per_map(tmp_path):
  maps = np.random.default_rng(0).uniform(size=(7, 8, 8, 1))
  fig = viz.map_grid(maps, [f'class {i}' for i in range(7)], columns=3)
  assert len(fig.axes) == 9                          # 3 x 3, two blank
  assert fig.axes[6].get_title() == 'class 6' and not fig.axes[7].axison
  _saved(fig, tmp_path, 'grid.png')
  with pytest.raises(ValueError, match='titles'):
    viz.map_grid(maps, ['a'])
  with pytest.raises(ValueError, match='maps'):
    viz.map_grid(np.zeros((2, 3)), ['a', 'b'])


def test_map_bars_top_features_in_order(tmp_path):
  maps = {'global': np.array([0.1, 0.5, 0.2, 0.0]),
          'class 0': np.array([0.3, 0.0, 0.0, 0.9])}
  fig = viz.map_bars(maps, labels=['a', 'b', 'c', 'd'], top=2, title='t')
  assert len(fig.axes) == 2
  assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ['b', 'c']
  assert [t.get_text() for t in fig.axes[1].get_xticklabels()] == ['d', 'a']
  _saved(fig, tmp_path, 'bars.png')
  with pytest.raises(ValueError, match='same length'):
    viz.map_bars({'a': np.ones(3), 'b': np.ones(4)})
  with pytest.raises(ValueError, match='labels'):
    viz.map_bars(maps, labels=['a'])


def test_selected_patches(tmp_path):
  x = np.random.default_rng(1).uniform(size=(4, 8, 8, 1))
  groups = masking.patch_groups((8, 8, 1), 4)         # 2 x 2 patches
  sel = np.array([[1, 0, 0, 1]] * 4, np.float32)
  fig = viz.selected_patches(x, {'L2X': sel, 'random': sel[:, ::-1]}, groups,
                             titles=list('abcd'), ground_truth=sel > 0)
  assert len(fig.axes) == 2 * 4
  # Two selected patches (red) and two true ones (gold) on the first image.
  assert len(fig.axes[0].patches) == 4
  assert fig.axes[0].get_title() == 'a'
  _saved(fig, tmp_path, 'patches.png')
  with pytest.raises(ValueError, match='patch groups'):
    viz.selected_patches(x, {'L2X': sel}, masking.feature_groups((8, 8, 1)))


def test_token_highlights(tmp_path):
  ds = synthetic.make_text(3, 0, seq_len=12, vocab_size=40)
  sel = np.zeros((3, 12), np.float32)
  sel[:, :3] = 1
  fig = viz.token_highlights(ds.x, {'L2X': sel, 'saliency': sel},
                             ds.meta['vocab'], ground_truth=ds.ground_truth,
                             titles=['r0', 'r1', 'r2'])
  assert len(fig.axes) == 1
  texts = [t.get_text() for t in fig.axes[0].texts]
  assert 'r0 L2X:' in texts and 'r2 saliency:' in texts
  boxed = [t for t in fig.axes[0].texts if t.get_bbox_patch() is not None]
  assert len(boxed) == 2 * 3 * 3  # 3 highlighted words a line, 6 lines
  _saved(fig, tmp_path, 'tokens.png')
  with pytest.raises(ValueError, match='selections'):
    viz.token_highlights(ds.x, {}, ds.meta['vocab'])


def test_selection_frequency_one_panel_per_regime(tmp_path):
  ds = synthetic.make_tabular('switch', 400, 0)
  sel = np.asarray(ds.ground_truth, np.float32)
  fig = viz.selection_frequency(
      {'truth': sel, 'first 100 rows': sel[:100]}, ds.ground_truth, k=5,
      regime=ds.meta['regime'], regime_names=ds.meta['regime_names'],
      title='switch')
  assert len(fig.axes) == 2
  assert 'orange_skin rows' in fig.axes[0].get_title()
  # The 'truth' bars are the per-regime ground-truth frequencies.
  heights = [p.get_height() for p in fig.axes[0].patches[:10]]
  np.testing.assert_allclose(heights, [1, 1, 1, 1, 0, 0, 0, 0, 0, 1])
  _saved(fig, tmp_path, 'selection_frequency.png')
  fig = viz.selection_frequency({'truth': sel}, ds.ground_truth, k=5)
  assert len(fig.axes) == 1
  _saved(fig, tmp_path, 'one_panel.png')


def test_feature_bars(tmp_path):
  rng = np.random.default_rng(0)
  gt = np.zeros((50, 10), bool)
  gt[:, :4] = True
  attrs = {name: rng.normal(size=(50, 10)) + 5 * gt
           for name in ('a', 'b', 'c', 'd', 'e')}
  fig = viz.feature_bars(attrs, gt, title='orange skin')
  assert len(fig.axes) == 8                 # 2 rows of 4, 3 switched off
  orange = [p.get_height() for p in fig.axes[0].patches[:10]]
  blue = [p.get_height() for p in fig.axes[0].patches[10:]]
  assert min(orange[:4]) > max(blue[4:])
  _saved(fig, tmp_path, 'bars.png')
  _saved(viz.feature_bars({'a': attrs['a']}), tmp_path, 'no_truth.png')


def test_curves(tmp_path):
  f = np.linspace(0, 1, 11)
  fig = viz.curves({'deletion': {'saliency': (f, 1 - f), 'random': (f, f)},
                    'insertion': {'saliency': (f, f)}},
                   xlabel='fraction', ylabel='probability')
  assert len(fig.axes) == 2
  assert fig.axes[0].lines[1].get_linestyle() == '--'
  assert fig.axes[1].get_xlabel() == 'fraction'
  _saved(fig, tmp_path, 'curves.png')
  with pytest.raises(ValueError, match='panels'):
    viz.curves({})


def test_confusion(tmp_path):
  fig = viz.confusion([0, 1, 1, 2], [0, 1, 2, 2], 3, title='mlp')
  im = fig.axes[0].images[0].get_array()
  np.testing.assert_allclose(im[1], [0, 0.5, 0.5])
  _saved(fig, tmp_path, 'confusion.png')
  with pytest.raises(ValueError, match='same shape'):
    viz.confusion([0, 1], [0], 2)
