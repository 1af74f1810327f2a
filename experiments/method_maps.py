"""Explaining one batch with several methods, for the comparison binaries
(`experiments.input_iba`, `experiments.ltx`): every method through the
explainer protocol (`xai_jax.EXPLAINERS`), its maps reduced to one value per
pixel or token, its compiled call timed.
"""

from __future__ import annotations

from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import xai_jax
from xai_jax import blackbox as bb
from xai_jax import masking
from xai_jax import models
from xai_jax import timing

def method_kwargs(config: ml_collections.ConfigDict, name: str) -> dict[str, Any]:
  return (config.method_kwargs[name].to_dict()
          if name in config.method_kwargs else {})


def to_map(name: str, attr: np.ndarray,
            groups: masking.FeatureGroups | None, text: bool) -> np.ndarray:
  """One value per pixel `[b, H, W]` or token `[b, L]`: patch scores
  (occlusion, L2X) spread over their pixels, |gradient| methods summed over
  channels (and embeddings for tokens), other maps as returned."""
  a = np.asarray(attr, np.float32)
  if groups is not None and a.ndim == 2 and not text:      # patch scores
    a = np.asarray(groups.expand(jnp.asarray(a)))
  if text and a.ndim == 3:                                   # embeddings
    return np.abs(a[..., :-1]).sum(-1)
  if a.ndim == 4:
    a = (np.abs(a) if name in ('saliency', 'integrated_gradients',
                               'smoothgrad') else a).sum(-1)
  return a


def explain_maps(config: ml_collections.ConfigDict, box: bb.BlackBox,
                train_x: np.ndarray, x: np.ndarray, target: jax.Array,
                key: jax.Array) -> tuple[dict[str, np.ndarray],
                                         dict[str, float]]:
  """Maps and compiled-call seconds of every method of `config.methods`.

  The methods run through the explainer protocol (`xai_jax.EXPLAINERS`)
  with `config.method_kwargs[name]`: IBA and InputIBA on the box split at
  `config.split_at` (statistics from the first `config.num_estimate`
  training rows), Grad-CAM on the split box, L2X fit on the training rows
  over `config.patch` patches, occlusion over the same patches, random ~
  U(0, 1); every map reduced by `to_map`. Seconds: the compiled call on
  all rows (compilation excluded: a call that compiled is run again).
  """
  module = models.make_model(config.model, **config.model_kwargs.to_dict())
  text = config.data == 'text'
  dtype = 'int' if text else 'float'
  split = bb.from_linen(module, box.params, input_shape=box.input_shape,
                        input_dtype=dtype, split_at=config.split_at,
                        name=config.model)
  view = to_input = None
  if text:
    view, to_input = models.embedding_blackbox(box, module,
                                               split_at=config.split_at)
  groups = (None if text else
            masking.patch_groups(box.input_shape, config.patch))
  est = train_x[:config.num_estimate]
  maps, seconds = {}, {}
  for i, name in enumerate(config.methods):
    k = jax.random.fold_in(key, i)
    kw = method_kwargs(config, name)
    if name == 'random':
      fn = lambda: jax.random.uniform(k, (x.shape[0], *x.shape[1:3]))
    elif name == 'iba':
      e = xai_jax.iba.fit(k, split, est, kw)
      fn = lambda e=e: xai_jax.iba.explain(e, x, key=k, target=target).scores
    elif name == 'l2x':
      e = xai_jax.l2x.fit(k, box, train_x, {'modality': 'image', **kw},
                          groups=groups)
      fn = lambda e=e: xai_jax.l2x.explain(e, x, key=k).scores
    elif name == 'input_iba':
      m_box, xin = (view, to_input(x)) if text else (split, x)
      e = xai_jax.input_iba.fit(
          k, m_box, to_input(est) if text else est, kw)
      fn = lambda e=e, xin=xin: xai_jax.input_iba.explain(
          e, xin, key=k, target=target).scores
    else:
      method = xai_jax.EXPLAINERS[name]
      if name == 'occlusion':
        kw = {**kw, 'groups': groups}
      m_box = split if name == 'gradcam' else (view if text else box)
      xin = to_input(x) if text else x
      e = method.fit(0, m_box, np.zeros((1, *m_box.input_shape), np.float32),
                     kw)
      fn = lambda e=e, xin=xin, method=method: method.explain(
          e, xin, key=k, target=target).scores
    with timing.timed() as t:
      out = jax.block_until_ready(fn())
    if t.compile > 0.05 * t.wall and name != 'input_iba':
      with timing.timed() as t:
        out = jax.block_until_ready(fn())
    seconds[name] = t.excl_compile
    maps[name] = to_map(name, out, groups, text)
    if not np.all(np.isfinite(maps[name])):
      raise FloatingPointError(f'{name} returned non-finite maps.')
    logging.info('%s: %.2f s for %d rows', name, seconds[name], x.shape[0])
  return maps, seconds
