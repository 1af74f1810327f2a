"""NormLIME: global and class-specific importance from many LIME explanations.

Ahern, Bhattacharya, Nabbout, Wang, "NormLIME: A New Feature Importance
Metric for Explaining Deep Neural Networks" (arXiv:1909.04200), as its
authors' code computes it (InterpretDL `_normlime_base.py`, PaddleX
`normlime_base.py`). Explain every instance i of a data set with LIME for its
label y_i (by default the model's predicted class); map each local feature f
of i to a global feature id c(i, f); then for every label y and global
feature c

    NormLIME_y(c) = 1/|S_{y,c}| * sum_{(i,f) in S_{y,c}} (w_f^(i))^2 / sum_f' |w_f'^(i)|,
    S_{y,c} = {(i, f): y_i = y and c(i, f) = c},

each instance's squared weight divided by the L1 norm of that instance's
explanation, averaged over the *occurrences* of c (not over all instances).
The global map pools every label: the same mean over all occurrences of c.

* `variant='squared'` is the formula above (the authors' code);
  `variant='abs'` uses |w_f| / ||w||_1 (the paper's prose reading);
  `variant='avg'` is the plain mean |w_f| over occurrences (no per-instance
  normalisation; InterpretDL's 'avg', used here to aggregate KernelSHAP and
  gradients into global maps the same way).
* `positive_only=True` (the authors' text variant): only occurrences with a
  positive weight enter the mean (the L1 norm still counts every weight).
* A feature that never occurs gets 0 with count 0. A class with no explained
  instance gets a NaN row in `per_class` and a warning naming it.

Global feature identities (`c(i, f)`):

* tabular: the column (LIME `mode='tabular'`, coefficients per standardised
  column as the `lime` package);
* images: a fixed grid of patches (`masking.patch_groups`): the patch index;
* text: the vocabulary id of the token at each position (`token_groups`);
  padding positions (`pad_id`) are left out (feature id -1);
* any other assignment through `local_explanations(..., feature_ids=...)`
  (e.g. superpixels clustered into global ids, as InterpretDL does with a
  KMeans over superpixel descriptors).

The LIME step is `attribution.lime` (batched: the perturbations are shared
by the examples of a call) streamed over the data set in chunks of
`examples_per_chunk` instances with the same key, so the result does not
depend on the chunking or on the order of the instances, and memory is
bounded by the chunk, not by the data set. The aggregation is one jitted
segment reduction over all instances.

`sp_lime` is the global importance NormLIME replaces: SP-LIME (Ribeiro et
al. 2016, Section 4; `lime/submodular_pick.py`), I_j = sqrt(sum_i |W_ij|) and
the greedy coverage pick.

Protocol: `default_config()`, `fit(key, model, x, config=None, **overrides)`
(LIME over `x` + `aggregate`), `explain(explainer, x)` -> the class-specific
map of each input's predicted class over its features (PaddleX's "NormLIME
map"), so NormLIME can be scored by every per-instance metric.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple
import warnings

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from xai_jax import _checks
from xai_jax import blackbox as bb
from xai_jax import masking
from xai_jax import protocol
from xai_jax import attribution

Array = jax.Array

VARIANTS = ('squared', 'abs', 'avg')
MODES = ('auto', 'tabular', 'groups')


def default_config() -> ml_collections.ConfigDict:
  """NormLIME's options (an ml_collections ConfigDict); override by name in `fit`.

  Fields:
    num_samples: LIME perturbations n per instance, row 0 included (1000:
      the authors' image pipeline and `LimeImageExplainer`).
    mode: 'auto' (tabular for float vectors, groups otherwise), 'tabular'
      or 'groups' (patches, tokens, any `FeatureGroups`).
    patch: patch size of the default image groups (a `patch x patch` grid).
    sample_around_instance: tabular: LIME samples N(x, sigma^2) around
      each row instead of the data distribution N(mu, sigma^2) (the `lime`
      package's default, False). With False every row's surrogate is fit on
      the same global samples, only re-weighted by distance, so LIME stays
      close to one global linear fit and misses features that matter only
      in part of the space (L2X's switch set: docs/normlime.md).
    kernel_width: LIME's kernel width w (None: the `lime` package default,
      0.75 sqrt(d) tabular, 0.25 groups, 25 tokens).
    alpha: LIME's ridge penalty (the `lime` package: 1; the authors' image
      pipeline used 0 with normalised columns).
    space: the explained output: 'probs' (LIME explains probabilities),
      'log_probs' or 'raw'.
    baseline: groups mode: the value of switched-off groups ('zero',
      'mean', a float); tokens are replaced by `pad_id`.
    sampling, distance_scale: LIME's group sampling and cosine scale (None:
      the package defaults per modality).
    variant: 'squared' (w^2 / ||w||_1, the authors' code), 'abs'
      (|w| / ||w||_1) or 'avg' (mean |w|, no normalisation).
    positive_only: only positive weights enter (the authors' text variant).
    vocab_size: text: the number of global features V (None: max(x) + 1).
    pad_id: text: padding token, left out of the maps (None: keep it).
    examples_per_chunk: instances per streamed LIME call (memory bound).
    chunk_size: model rows per call inside LIME (None: automatic).
    seed: the key when `fit` gets `key=None`.
  """
  c = ml_collections.ConfigDict()
  c.num_samples = 1000
  c.mode = 'auto'
  c.patch = 4
  c.sample_around_instance = False
  c.kernel_width = ml_collections.config_dict.placeholder(float)
  c.alpha = 1.0
  c.space = 'probs'
  c.baseline = 'zero'
  c.sampling = ml_collections.config_dict.placeholder(str)
  c.distance_scale = ml_collections.config_dict.placeholder(float)
  c.variant = 'squared'
  c.positive_only = False
  c.vocab_size = ml_collections.config_dict.placeholder(int)
  c.pad_id = ml_collections.config_dict.placeholder(int)  # None allowed
  c.pad_id = 0
  c.examples_per_chunk = 1000
  c.chunk_size = ml_collections.config_dict.placeholder(int)
  c.seed = 0
  return c


class NormLIMEMaps(NamedTuple):
  """Aggregated importance (float32 unless noted).

  Attributes:
    global_: `[F]` NormLIME over every explained instance.
    per_class: `[C, F]` NormLIME_y per label y (NaN rows for labels with no
      explained instance).
    counts: int32 `[C, F]` occurrences |S_{y,c}| of each feature per label.
  """
  global_: Array
  per_class: Array
  counts: Array


class LocalExplanations(NamedTuple):
  """LIME explanations of a data set, keyed by global feature ids.

  Attributes:
    weights: `[n, m]` LIME coefficients of each instance's m local features.
    feature_ids: int32 `[n, m]` the global id c(i, f) in `[0, F)`, or -1 for
      a local feature left out (padding).
    labels: int32 `[n]` the explained label of each instance.
    num_features: F, the number of global features.
    num_classes: C, the number of labels.
  """
  weights: Array
  feature_ids: Array
  labels: Array
  num_features: int
  num_classes: int


class SPLime(NamedTuple):
  """SP-LIME's global importance and greedy pick.

  Attributes:
    importance: `[F]` I_j = sqrt(sum_i |W_ij|).
    picks: int32 `[num_exps]` the instances picked greedily.
    coverage: `[num_exps]` c(V) after each pick.
  """
  importance: Array
  picks: Array
  coverage: Array


@flax.struct.dataclass
class NormLIMEExplainer:
  """What `fit` returns: the maps and what `explain` needs.

  Attributes:
    maps: the `NormLIMEMaps` of the fitted data set.
    model: the explained black box (its predicted class picks the map).
    kind: 'tabular', 'groups' or 'tokens' (how inputs map to features).
    pad_id: text padding id left out (-1: none).
    chunk_size: model rows per call of `explain`.
  """
  maps: NormLIMEMaps
  model: bb.BlackBox
  kind: str = flax.struct.field(pytree_node=False, default='tabular')
  pad_id: int = flax.struct.field(pytree_node=False, default=-1)
  chunk_size: int = flax.struct.field(pytree_node=False, default=4096)


# ------------------------------------------------------------- aggregation
@functools.partial(jax.jit, static_argnames=('num_features', 'num_classes',
                                             'variant', 'positive_only'))
def _aggregate(weights: Array, ids: Array, labels: Array, *,
               num_features: int, num_classes: int, variant: str,
               positive_only: bool) -> NormLIMEMaps:
  f_, c_ = num_features, num_classes
  valid = ids >= 0
  w = jnp.where(valid, weights, 0.0)
  norm = jnp.sum(jnp.abs(w), -1, keepdims=True)                   # ||w||_1
  num = w ** 2 if variant == 'squared' else jnp.abs(w)
  if variant == 'avg':
    contrib = num
  else:
    contrib = jnp.where(norm > 0, num / jnp.where(norm > 0, norm, 1.0), 0.0)
  occurs = valid & (w > 0) if positive_only else valid
  seg = jnp.where(occurs, labels[:, None] * f_ + ids, c_ * f_)    # c_*f_: drop
  seg = seg.reshape(-1)
  sums = jax.ops.segment_sum(jnp.where(occurs, contrib, 0.0).reshape(-1), seg,
                             c_ * f_ + 1)[:-1].reshape(c_, f_)
  counts = jax.ops.segment_sum(occurs.reshape(-1).astype(jnp.int32), seg,
                               c_ * f_ + 1)[:-1].reshape(c_, f_)
  per_class = jnp.where(counts > 0, sums / jnp.maximum(counts, 1), 0.0)
  explained = jnp.zeros((c_,), bool).at[labels].set(True)
  per_class = jnp.where(explained[:, None], per_class, jnp.nan)
  total = jnp.sum(counts, 0)
  global_ = jnp.where(total > 0, jnp.sum(sums, 0) / jnp.maximum(total, 1), 0.0)
  return NormLIMEMaps(global_, per_class, counts)


def aggregate(weights: Any, feature_ids: Any, labels: Any, *,
              num_features: int, num_classes: int, variant: str = 'squared',
              positive_only: bool = False) -> NormLIMEMaps:
  """NormLIME maps from local explanations (Ahern et al. 2019, Section 3).

      NormLIME_y(c) = mean over {(i, f): y_i = y, c(i, f) = c} of
                      (w_f^(i))^2 / sum_f' |w_f'^(i)|

  (`variant='abs'`: |w_f^(i)| in the numerator; `variant='avg'`: the mean
  |w_f^(i)| without the normalisation, InterpretDL's 'avg', the way to turn
  any per-instance attribution into a global map). The global map is the same
  mean over the occurrences of every label. One jitted segment reduction;
  the result does not depend on the order of the instances.

  Args:
    weights: `[n, m]` local weights (e.g. LIME coefficients), finite.
    feature_ids: int `[n, m]` global id of each local feature in
      `[0, num_features)`; -1 leaves the local feature out (padding).
    labels: int `[n]` the label each instance was explained for, in
      `[0, num_classes)`.
    num_features: F.
    num_classes: C.
    variant: 'squared', 'abs' or 'avg'.
    positive_only: only positive weights count as occurrences.
  Returns:
    `NormLIMEMaps(global_ [F], per_class [C, F], counts [C, F])`; a feature
    that never occurs gets 0 (count 0); a label with no instance gets a NaN
    row and a `UserWarning` naming it.
  Raises:
    ValueError: naming the argument for mismatched shapes, non-integer or
      out-of-range ids or labels, non-finite weights, or bad options.
  """
  num_features = _checks.check_int('num_features', num_features)
  num_classes = _checks.check_int('num_classes', num_classes)
  _checks.check_choice('variant', variant, VARIANTS)
  w = _checks.as_array('weights', weights)
  _checks.check_array('weights', w, ndim=2, finite=True)
  if not jnp.issubdtype(w.dtype, jnp.floating):
    w = w.astype(jnp.float32)
  ids = np.asarray(feature_ids)
  if ids.shape != tuple(w.shape):
    raise ValueError(f'feature_ids must have the shape of weights {w.shape}, '
                     f'got {ids.shape}.')
  if not np.issubdtype(ids.dtype, np.integer):
    raise ValueError(f'feature_ids must be integers, got {ids.dtype}.')
  if ids.size and (ids.min() < -1 or ids.max() >= num_features):
    raise ValueError(f'feature_ids must be in [0, {num_features}) (or -1 for '
                     f'padding), got values in [{ids.min()}, {ids.max()}].')
  y = np.asarray(labels)
  if y.shape != (w.shape[0],):
    raise ValueError(f'labels must have shape [{w.shape[0]}] (one per row of '
                     f'weights), got {y.shape}.')
  if not np.issubdtype(y.dtype, np.integer):
    raise ValueError(f'labels must be integers, got {y.dtype}.')
  if y.size and (y.min() < 0 or y.max() >= num_classes):
    raise ValueError(f'labels must be in [0, {num_classes}), got values in '
                     f'[{y.min()}, {y.max()}].')
  missing = sorted(set(range(num_classes)) - set(np.unique(y).tolist()))
  if missing:
    warnings.warn(f'NormLIME: no explained instance for class(es) {missing}; '
                  'their per-class rows are NaN.', UserWarning, stacklevel=2)
  return _aggregate(w, jnp.asarray(ids, jnp.int32), jnp.asarray(y, jnp.int32),
                    num_features=num_features, num_classes=num_classes,
                    variant=variant, positive_only=bool(positive_only))


# ------------------------------------------------------------------ SP-LIME
@functools.partial(jax.jit, static_argnames=('num_features', 'num_exps',
                                             'explanation_features'))
def _sp_lime(w: Array, ids: Array, *, num_features: int, num_exps: int,
             explanation_features: int | None) -> SPLime:
  n, m = w.shape
  a = jnp.where(ids >= 0, jnp.abs(w), 0.0)
  if explanation_features is not None and explanation_features < m:
    # lime's explanations keep num_features (10) features each.
    thr = jax.lax.top_k(a, explanation_features)[0][:, -1:]
    a = jnp.where(a >= thr, a, 0.0)
  big = jnp.zeros((n, num_features), a.dtype).at[
      jnp.arange(n)[:, None], jnp.maximum(ids, 0)].add(a)          # W [n, F]
  imp = jnp.sqrt(jnp.sum(big, 0))
  nz = big > 0

  def pick(state, _):
    covered, chosen = state
    gain = jnp.sum(jnp.where(nz & ~covered[None], imp[None], 0.0), -1)
    gain = jnp.where(chosen, -jnp.inf, gain)
    i = jnp.argmax(gain)
    covered = covered | nz[i]
    chosen = chosen.at[i].set(True)
    return (covered, chosen), (i, jnp.sum(jnp.where(covered, imp, 0.0)))

  init = (jnp.zeros((num_features,), bool), jnp.zeros((n,), bool))
  _, (picks, cov) = jax.lax.scan(pick, init, None, length=num_exps)
  return SPLime(imp, picks.astype(jnp.int32), cov)


def sp_lime(weights: Any, feature_ids: Any, *, num_features: int,
            num_exps: int = 5, explanation_features: int | None = 10
            ) -> SPLime:
  """SP-LIME (Ribeiro et al. 2016, Algorithm 2): global importance and picks.

  With the explanation matrix `W [n, F]` (|w| of each instance's local
  features scattered to their global ids; lime keeps the top
  `explanation_features` of each explanation),

      I_j = sqrt(sum_i |W_ij|),
      c(V) = sum_j 1[exists i in V: W_ij > 0] I_j,

  and `num_exps` instances are picked greedily to maximise the coverage c.

  Args:
    weights: `[n, m]` local weights.
    feature_ids: int `[n, m]` global ids in `[0, num_features)` (-1: left out).
    num_features: F.
    num_exps: B, the number of instances to pick (lime: 5), `<= n`.
    explanation_features: keep the top-K |w| per explanation (lime's
      `num_features=10`); None keeps all.
  Returns:
    `SPLime(importance [F], picks [num_exps], coverage [num_exps])`.
  """
  num_features = _checks.check_int('num_features', num_features)
  w = _checks.as_array('weights', weights)
  _checks.check_array('weights', w, ndim=2, finite=True)
  ids = np.asarray(feature_ids)
  if ids.shape != tuple(w.shape) or not np.issubdtype(ids.dtype, np.integer):
    raise ValueError(f'feature_ids must be integers of the shape of weights '
                     f'{w.shape}, got {ids.dtype} {ids.shape}.')
  if ids.size and (ids.min() < -1 or ids.max() >= num_features):
    raise ValueError(f'feature_ids must be in [0, {num_features}) (or -1), '
                     f'got values in [{ids.min()}, {ids.max()}].')
  num_exps = _checks.check_int('num_exps', num_exps)
  if num_exps > w.shape[0]:
    raise ValueError(f'num_exps must be <= the number of instances '
                     f'{w.shape[0]}, got {num_exps}.')
  if explanation_features is not None:
    explanation_features = _checks.check_int('explanation_features',
                                             explanation_features)
  return _sp_lime(w.astype(jnp.float32), jnp.asarray(ids, jnp.int32),
                  num_features=num_features, num_exps=num_exps,
                  explanation_features=explanation_features)


# ---------------------------------------------------------- local features
def _resolve(box: bb.BlackBox, x: Array, cfg: ml_collections.ConfigDict,
             groups: masking.FeatureGroups | None
             ) -> tuple[str, masking.FeatureGroups | None]:
  """(kind, groups): 'tabular' (no groups), 'groups' or 'tokens'."""
  _checks.check_choice('mode', cfg.mode, MODES)
  tokens_in = box.input_dtype != 'float'
  mode = cfg.mode
  if mode == 'auto':
    mode = ('groups' if groups is not None or tokens_in
            or len(box.input_shape) > 1 else 'tabular')
  if mode == 'tabular':
    if groups is not None:
      raise ValueError("groups needs mode='groups' (or 'auto').")
    if tokens_in:
      raise ValueError("mode='tabular' needs float inputs; token ids use "
                       "mode='groups' (or 'auto').")
    return 'tabular', None
  if groups is None:
    if tokens_in:
      groups = masking.token_groups(int(np.prod(box.input_shape)))
    elif len(box.input_shape) in (2, 3):
      patch = _checks.check_int('patch', cfg.patch)
      groups = masking.patch_groups(box.input_shape, patch)
    else:
      groups = masking.feature_groups(box.input_shape)
  masking.check_groups(groups, box.input_shape,
                       batch=x.shape[0] if groups.batched else None)
  if groups.kind == 'tokens' and not tokens_in:
    raise ValueError('token groups need a black box with token inputs.')
  return ('tokens' if groups.kind == 'tokens' else 'groups'), groups


def _token_ids(x: Array, pad_id: int) -> Array:
  t = x.reshape(x.shape[0], -1).astype(jnp.int32)
  return jnp.where(t == pad_id, -1, t) if pad_id >= 0 else t


def local_explanations(key: Array | int | None, model: bb.BlackBox | Callable,
                       x: Any, config: protocol.ConfigLike = None, *,
                       groups: masking.FeatureGroups | None = None,
                       feature_ids: Any = None, target: Any = None,
                       **overrides: Any) -> LocalExplanations:
  """LIME explanations of every instance of a data set, with global ids.

  `attribution.lime` over chunks of `examples_per_chunk` instances, each
  chunk with the same key (the same perturbations), so the explanations do
  not depend on the chunking or on the order of the rows.

  Args:
    key: PRNG key or int seed (None: `config.seed`).
    model: a `BlackBox` or a JAX callable `[n, *input_shape] -> [n, C]`.
    x: `[n, *input_shape]`, the data set.
    config: some fields of `default_config()`; then `overrides`.
    groups: the local features (None: columns, 4x4 patches of an image,
      the tokens of a sequence), or per-image superpixels
      (`masking.superpixel_groups`, batched over the rows of `x`; pass
      `feature_ids` from `cluster_segments`).
    feature_ids: int `[n, num_groups]` global id of each group of each
      instance (-1: left out) for other identities (e.g. clustered
      superpixels); None: the defaults of the module docstring.
    target: the label explained per instance (int `[n]` or one int; None:
      the predicted class, NormLIME's default).
  Returns:
    `LocalExplanations` (weights `[n, m]`, feature_ids `[n, m]`, labels `[n]`).
  """
  cfg = protocol.merge_config(default_config(), config, overrides,
                              method='normlime')
  key = _checks.as_key('key', key, default_seed=cfg.seed, method='normlime')
  box = bb.as_blackbox(model, input_shape=np.shape(x)[1:]) \
      if not isinstance(model, bb.BlackBox) else model
  x = _checks.check_model_input(box, _checks.as_array('x', x), 'x')
  n = int(x.shape[0])
  if box.output == 'regression':
    raise ValueError('NormLIME needs a classifier (class scores); black box '
                     f'{box.name!r} has output=regression.')
  kind, groups = _resolve(box, x, cfg, groups)
  chunk = _checks.check_int('examples_per_chunk', cfg.examples_per_chunk)
  rows = 4096 if cfg.chunk_size is None else _checks.check_int(
      'chunk_size', cfg.chunk_size)
  labels = _labels(box, x, target, rows)
  opts = dict(num_samples=cfg.num_samples, kernel_width=cfg.kernel_width,
              alpha=cfg.alpha, space=cfg.space, chunk_size=cfg.chunk_size)
  if kind == 'tabular':
    flat = x.reshape(n, -1)
    opts.update(mode='tabular',
                sample_around_instance=bool(cfg.sample_around_instance),
                feature_mean=jnp.mean(flat, 0).reshape(box.input_shape),
                feature_std=jnp.std(flat, 0).reshape(box.input_shape))
  else:
    opts.update(mode='groups', groups=groups, sampling=cfg.sampling,
                distance_scale=cfg.distance_scale,
                baseline=(cfg.pad_id if kind == 'tokens'
                          and cfg.pad_id is not None else cfg.baseline))
  num, size = bb.even_chunks(n, chunk)
  parts = []
  for c in range(num):
    lo, hi = c * size, min(n, (c + 1) * size)
    xc, tc = bb.pad_rows((x[lo:hi], labels[lo:hi]), size)
    if groups is not None and groups.batched:   # per-image superpixels
      opts['groups'] = groups.replace(assignment=bb.pad_rows(
          groups.assignment[lo:hi], size))
    coef = attribution.lime(box, xc, key=key, target=tc, **opts)
    parts.append(coef.reshape(size, -1)[:hi - lo])
  # (attribution.lime raises when the model is NaN or inf on its rows.)
  weights = jnp.concatenate(parts) if len(parts) > 1 else parts[0]
  m = weights.shape[1]
  num_classes = int(box.num_outputs)
  if feature_ids is not None:
    ids = np.asarray(feature_ids)
    if ids.shape != (n, m) or not np.issubdtype(ids.dtype, np.integer):
      raise ValueError(f'feature_ids must be integers of shape [{n}, {m}] '
                       f'(one global id per local feature), got {ids.dtype} '
                       f'{ids.shape}.')
    f = int(ids.max()) + 1 if ids.size else 1
    ids = jnp.asarray(ids, jnp.int32)
  elif kind == 'tokens':
    pad = -1 if cfg.pad_id is None else int(cfg.pad_id)
    ids = _token_ids(x, pad)
    f = int(cfg.vocab_size) if cfg.vocab_size is not None else int(
        jnp.max(x)) + 1
    if int(jnp.max(x)) >= f:
      raise ValueError(f'vocab_size={f} but x holds token id {int(jnp.max(x))}.')
  else:
    f = m
    ids = jnp.broadcast_to(jnp.arange(m, dtype=jnp.int32), (n, m))
  return LocalExplanations(weights, ids, labels, f, num_classes)


def _labels(box: bb.BlackBox, x: Array, target: Any, rows: int) -> Array:
  """The explained labels `[n]`: `target`, or the predicted class. Raises a
  ValueError when the black box returns NaN or inf on `x`."""
  n = x.shape[0]
  out = jax.jit(bb.forward_in_chunks, static_argnums=2)(box, x, rows)
  bad = int(jnp.sum(~jnp.all(jnp.isfinite(out), axis=-1)))
  if bad:
    raise ValueError(f'model returned NaN or inf outputs on {bad} of the {n} '
                     'rows of x; NormLIME cannot explain them.')
  if target is None:
    return jnp.argmax(out, -1).astype(jnp.int32)
  t = np.asarray(bb.resolve_target(None, target, n))
  if t.size and (t.min() < 0 or t.max() >= box.num_outputs):
    raise ValueError(f'target must be in [0, {box.num_outputs}), got values '
                     f'in [{t.min()}, {t.max()}].')
  return jnp.asarray(t, jnp.int32)


# ------------------------------------------------------------ superpixels
@functools.partial(jax.jit, static_argnames=('num_clusters', 'num_iters'))
def _kmeans(key: Array, points: Array, valid: Array, *, num_clusters: int,
            num_iters: int) -> tuple[Array, Array]:
  """Lloyd's k-means on `points[p, D]` (rows with `valid` False ignored)."""
  w = valid.astype(points.dtype)
  mean = (w @ points) / jnp.maximum(jnp.sum(w), 1.0)
  std = jnp.sqrt((w @ (points - mean) ** 2) / jnp.maximum(jnp.sum(w), 1.0))
  z = (points - mean) / jnp.where(std > 0, std, 1.0)
  # k-means++ style seeding would need a sequential loop; a uniform draw of
  # distinct valid points is enough for descriptor clustering.
  start = jax.random.choice(key, points.shape[0], (num_clusters,),
                            replace=False, p=w / jnp.sum(w))
  centers = z[start]

  def assign(c):
    d2 = (jnp.sum(z ** 2, 1)[:, None] - 2.0 * z @ c.T
          + jnp.sum(c ** 2, 1)[None])
    return jnp.argmin(d2, 1)

  def step(c, _):
    a = assign(c)
    sums = jax.ops.segment_sum(z * w[:, None], a, num_clusters)
    cnt = jax.ops.segment_sum(w, a, num_clusters)
    return jnp.where(cnt[:, None] > 0, sums / jnp.maximum(cnt, 1.0)[:, None],
                     c), None

  centers, _ = jax.lax.scan(step, centers, None, length=num_iters)
  return jnp.where(valid, assign(centers), -1).astype(jnp.int32), centers


def cluster_segments(key: Array | int, descriptors: Any, present: Any, *,
                     num_clusters: int, num_iters: int = 25) -> Array:
  """Global ids of per-image segments by k-means on their descriptors.

  NormLIME needs the same id for "the same" feature in different images;
  superpixels differ per image, so (as InterpretDL does with a KMeans over
  superpixel features) the segments of every image are clustered and a
  segment's global id is its cluster. Descriptors are standardised over
  the present segments; Lloyd's algorithm from `num_clusters` distinct
  present segments drawn with `key`, jitted.

  Args:
    key: PRNG key or int seed.
    descriptors: `[n, M, D]` per-segment descriptors (e.g.
      `masking.segment_descriptors`: channel means and stds, centroid, area).
    present: bool `[n, M]`, False for segment ids an image does not use.
    num_clusters: F, the number of global features, <= the present segments.
    num_iters: Lloyd iterations.
  Returns:
    int32 `[n, M]` global ids in `[0, num_clusters)`, -1 where not present
    (pass as `feature_ids` to `fit` / `local_explanations`).
  """
  key = _checks.as_key('key', key, method='cluster_segments')
  d = _checks.as_array('descriptors', descriptors)
  _checks.check_array('descriptors', d, ndim=3, finite=True)
  p = np.asarray(present)
  if p.shape != tuple(d.shape[:2]) or p.dtype != bool:
    raise ValueError(f'present must be bool of shape {tuple(d.shape[:2])}, got '
                     f'{p.dtype} {p.shape}.')
  k = _checks.check_int('num_clusters', num_clusters)
  if k > int(p.sum()):
    raise ValueError(f'num_clusters={k} exceeds the {int(p.sum())} present '
                     'segments.')
  ids, _ = _kmeans(key, d.reshape(-1, d.shape[-1]).astype(jnp.float32),
                   jnp.asarray(p.reshape(-1)), num_clusters=k,
                   num_iters=_checks.check_int('num_iters', num_iters))
  return ids.reshape(p.shape)


# ---------------------------------------------------------------- protocol
def fit(key: Array | int | None, model: bb.BlackBox | Callable, x: Any,
        config: protocol.ConfigLike = None, *,
        groups: masking.FeatureGroups | None = None, feature_ids: Any = None,
        target: Any = None, **overrides: Any) -> NormLIMEExplainer:
  """LIME over the data set `x`, aggregated into NormLIME maps.

  `local_explanations` then `aggregate` (see both). The returned explainer's
  `maps` hold the global map `[F]` and the class-specific maps `[C, F]`.

  Args:
    key: PRNG key or int seed (None: `config.seed`).
    model: a `BlackBox` or a JAX callable.
    x: `[n, *input_shape]`, the data set to aggregate over.
    config, overrides: fields of `default_config()`.
    groups, feature_ids, target: as `local_explanations`.
  Returns:
    a `NormLIMEExplainer`.
  """
  cfg = protocol.merge_config(default_config(), config, overrides,
                              method='normlime')
  _checks.check_choice('variant', cfg.variant, VARIANTS)  # before LIME runs
  box = bb.as_blackbox(model, input_shape=np.shape(x)[1:]) \
      if not isinstance(model, bb.BlackBox) else model
  local = local_explanations(key, box, x, cfg, groups=groups,
                             feature_ids=feature_ids, target=target)
  maps = aggregate(local.weights, local.feature_ids, local.labels,
                   num_features=local.num_features,
                   num_classes=local.num_classes, variant=cfg.variant,
                   positive_only=cfg.positive_only)
  kind, _ = _resolve(box, x, cfg, groups)
  if feature_ids is not None:
    kind = 'ids'
  pad = -1 if cfg.pad_id is None else int(cfg.pad_id)
  rows = 4096 if cfg.chunk_size is None else int(cfg.chunk_size)
  return NormLIMEExplainer(maps=maps, model=box, kind=kind, pad_id=pad,
                           chunk_size=rows)


def explain(explainer: NormLIMEExplainer, x: Any, *, key: Any = None,
            target: Any = None) -> protocol.Explanation:
  """The class-specific NormLIME map of each input's class over its features.

  `scores[b, f] = NormLIME_{t_b}(c(b, f))` with `t_b` the predicted class
  (or `target`): `[batch, F]` for columns and patches, `[batch, L]` for
  tokens (the map of each token's vocabulary id; padding 0). A class with no
  map (no instance of it was explained by `fit`) uses the global map.

  Args:
    explainer: from `fit`.
    x: `[batch, *input_shape]`.
    key: unused (the maps are deterministic).
    target: None (predicted class), one int or int `[batch]`.
  Returns:
    `Explanation(scores)`.
  """
  del key
  if not isinstance(explainer, NormLIMEExplainer):
    raise ValueError('explainer must be what normlime.fit returns, got '
                     f'{type(explainer).__name__}.')
  if explainer.kind == 'ids':
    raise ValueError('explain needs the global ids of new inputs; this '
                     'explainer was fitted with custom feature_ids. Read '
                     'explainer.maps directly.')
  box = explainer.model
  x = _checks.check_model_input(box, _checks.as_array('x', x), 'x')
  t = _labels(box, x, target, explainer.chunk_size)
  maps = explainer.maps
  table = jnp.where(jnp.isnan(maps.per_class), maps.global_[None],
                    maps.per_class)
  rows = table[t]                                                # [b, F]
  if explainer.kind == 'tokens':
    ids = _token_ids(x, explainer.pad_id)
    if int(jnp.max(ids)) >= table.shape[1]:
      raise ValueError(f'x holds token ids >= the {table.shape[1]} features '
                       'NormLIME was fitted with.')
    scores = jnp.where(ids >= 0, jnp.take_along_axis(
        rows, jnp.maximum(ids, 0), axis=1), 0.0)
  else:
    scores = rows
  return protocol.Explanation(scores=scores)


__all__ = [
    'LocalExplanations', 'NormLIMEExplainer', 'NormLIMEMaps', 'SPLime',
    'aggregate', 'cluster_segments', 'default_config', 'explain', 'fit',
    'local_explanations',
    'sp_lime',
]
