"""Synthetic data sets with known ground-truth features.

Three families, all generated on the host with numpy (vectorised, no per-row
Python loops) from an explicit seed or `jax.random` key; same key, same data:

* `make_tabular`: the four L2X sets (Chen et al., ICML 2018, §4.1; official
  code `Jianbo-Lab/L2X` `synthetic/make_data.py`): 10 features X ~ N(0, I),
  soft targets `[P(Y=0|X), P(Y=1|X)]` with `P(Y=1|X) = 1 / (1 + exp(f(X)))`,
  a per-row ground-truth mask of the features f depends on. The switch set is
  generated correctly (the original release's column-swap bug is an explicit
  `legacy_switch_bug=True` option).
* `make_images`: a class pattern at a random patch-aligned place among
  scrambled pieces of every other class's pattern, plus noise; ground truth =
  the pattern's pixels and patch cells.
* `make_text`: label-bearing tokens planted at random positions among neutral
  filler tokens; ground truth = the planted positions.

Why numpy and not `jax.random`: on a 2-core CPU, threefry normals for 10^6 x 10
take ~0.5 s and `jax.random.permutation(10^6)` ~1 s, while numpy's PCG64 does
both in ~0.15 s. A `jax.random` key is accepted everywhere and turned into a
numpy seed (`key_data`), so `key_or_seed=s` and `jax.random.key(s)` give the
same data (for s < 2^32 and JAX's default threefry keys). All arrays
returned are numpy; `jnp.asarray` moves them to a device.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from xai_jax import _checks
from xai_jax import blackbox as bb

# ----------------------------------------------------------------------------
# The data set container shared by the whole data package.
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """An in-memory data set (numpy arrays, batch first).

  Attributes:
    x: inputs `[n, *feature_shape]`: float32 `[n, d]` (tabular), float32
      `[n, H, W, C]` in [0, 1] (images), int32 `[n, L]` token ids, 0 = PAD
      (text).
    y: int32 `[n]` class labels in `[0, num_classes)`.
    probs: float32 `[n, num_classes]` soft targets (the true P(Y|X) of a
      synthetic set), or None.
    ground_truth: bool `[n, *feature_shape]` mask of the features that decide
      the label (`[n, d]` tabular, `[n, H, W, 1]` images, `[n, L]` text), or
      None for real data.
    num_classes: number of classes.
    name: the data set's name.
    meta: anything else (vocabularies, class names, per-row extras such as the
      switch regime). Per-row numpy arrays in `meta` have leading dim `n` and
      are kept in step by `subset`.
  """
  x: Any
  y: Any
  probs: Any = None
  ground_truth: Any = None
  num_classes: int = 2
  name: str = ''
  meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __len__(self) -> int:
    return int(self.x.shape[0])

  @property
  def feature_shape(self) -> tuple[int, ...]:
    """The shape of one example, `x.shape[1:]`."""
    return tuple(self.x.shape[1:])

  def subset(self, index: Any) -> 'Dataset':
    """Rows `index` (slice, int array or bool mask `[n]`) of per-row arrays.

    Per-row arrays in `meta` (numpy arrays with leading dim `n`) are indexed
    too; other `meta` entries are shared.
    """
    n = len(self)
    take = lambda a: None if a is None else a[index]
    meta = {k: (v[index] if isinstance(v, np.ndarray) and v.ndim >= 1
                and v.shape[0] == n else v) for k, v in self.meta.items()}
    return dataclasses.replace(
        self, x=take(self.x), y=take(self.y), probs=take(self.probs),
        ground_truth=take(self.ground_truth), meta=meta)


# ----------------------------------------------------------------------------
# Argument helpers.
# ----------------------------------------------------------------------------


def _seed_words(key_or_seed: Any) -> list[int]:
  """The uint32 words of a key; an int seed s gives those of `PRNGKey(s)`."""
  if isinstance(key_or_seed, bool):
    raise ValueError(f'key_or_seed must be an int or a jax.random key, got '
                     f'{key_or_seed!r}.')
  if isinstance(key_or_seed, (int, np.integer)):
    if key_or_seed < 0:
      raise ValueError(f'key_or_seed must be >= 0, got {key_or_seed}.')
    # The words of jax.random.PRNGKey(s) (threefry, s < 2^32), without JAX.
    s = int(key_or_seed)
    return [(s >> 32) & 0xFFFFFFFF, s & 0xFFFFFFFF] + (
        [s >> 64] if s >> 64 else [])
  if _checks.is_tracer(key_or_seed):
    raise ValueError('key_or_seed must be concrete: the data generators run on '
                     'the host and cannot be traced by jit/vmap.')
  if not hasattr(key_or_seed, 'dtype'):
    raise ValueError(f'key_or_seed must be an int or a jax.random key, got '
                     f'{type(key_or_seed).__name__}.')
  if jnp.issubdtype(key_or_seed.dtype, jax.dtypes.prng_key):
    key_or_seed = jax.random.key_data(key_or_seed)
  words = np.asarray(key_or_seed)
  if words.dtype != np.uint32:
    raise ValueError(f'key_or_seed must be an int or a jax.random key, got an '
                     f'array of dtype {words.dtype}.')
  return [int(w) for w in words.ravel()]


def _rngs(key_or_seed: Any, num: int) -> list[np.random.Generator]:
  """`num` independent numpy Generators derived from one key (or seed)."""
  seq = np.random.SeedSequence(_seed_words(key_or_seed))
  return [np.random.Generator(np.random.PCG64(s)) for s in seq.spawn(num)]


def _xp(x: Any):
  return jnp if isinstance(x, jax.Array) else np


def _sigmoid(z: Any) -> Any:
  """1 / (1 + exp(-z)), accurate in both tails, for numpy or jax arrays."""
  xp = _xp(z)
  return xp.exp(-xp.logaddexp(0.0, -z))


# ----------------------------------------------------------------------------
# L2X tabular sets.
# ----------------------------------------------------------------------------

NUM_TABULAR_FEATURES = 10

# Switch: the regime shift of X10 (0-based column 9), and the Bayes weight
# P(orange | x) = sigmoid(2 * SWITCH_SHIFT * x9) of the equal-weight mixture
# N(+3, 1) / N(-3, 1).
SWITCH_SHIFT = 3.0
SWITCH_REGIMES = ('orange_skin', 'nonlinear_additive')


def xor_logit(x: Any) -> Any:
  """L2X XOR logit f(X) = X1 * X2 (0-based cols 0, 1); x [..., 10] -> [...]."""
  return x[..., 0] * x[..., 1]


def orange_skin_logit(x: Any) -> Any:
  """L2X orange-skin logit f(X) = sum_{i<=4} X_i^2 - 4; [..., >=4] -> [...]."""
  return _xp(x).sum(x[..., :4] ** 2, axis=-1) - 4.0


def nonlinear_additive_logit(x: Any) -> Any:
  """L2X additive logit f(X) = -100 sin(0.2 X1) + |X2| + X3 + exp(-X4) - 2.4.

  (0-based columns 0..3, as in the official code; the paper's text writes
  sin(2 X1) and 2|X2|.) x: [..., >=4] -> [...].
  """
  xp = _xp(x)
  return (-100.0 * xp.sin(0.2 * x[..., 0]) + xp.abs(x[..., 1]) + x[..., 2]
          + xp.exp(-x[..., 3]) - 2.4)


def probs_from_logit(f: Any) -> Any:
  """L2X soft targets `[P(Y=0|X), P(Y=1|X)] = [e^f/(1+e^f), 1/(1+e^f)]`.

  f: [...] -> [..., 2]; computed as `exp(f - t), exp(-t)` with
  `t = log(1 + e^f)`, exact in both tails for |f| in the hundreds (the
  additive logit reaches about +-110).
  """
  xp = _xp(f)
  t = xp.logaddexp(0.0, f)
  return xp.stack([xp.exp(f - t), xp.exp(-t)], axis=-1)


def xor_probs(x: Any) -> Any:
  """True P(Y|X) of the XOR set: x [..., 10] -> [..., 2], f = X1*X2."""
  return probs_from_logit(xor_logit(x))


def orange_skin_probs(x: Any) -> Any:
  """True P(Y|X) of orange skin (see its logit): x [..., 10] -> [..., 2]."""
  return probs_from_logit(orange_skin_logit(x))


def nonlinear_additive_probs(x: Any) -> Any:
  """True P(Y|X) of the additive set: x [..., 10] -> [..., 2] (see logit)."""
  return probs_from_logit(nonlinear_additive_logit(x))


def switch_probs(x: Any) -> Any:
  """Bayes P(Y|X) of the (correct) switch set as a function of x alone.

  The regime is hidden: orange rows have X10 ~ N(+3, 1), additive rows
  X10 ~ N(-3, 1) and all other columns are N(0, 1) in both regimes, so
  `P(orange | x) = w = sigmoid(6 * X10)` and

      P(Y|X) = w * probs(f_orange(X1..X4)) + (1 - w) * probs(f_add(X5..X8)).

  `Dataset.probs` of `make_tabular('switch', ...)` holds the per-row
  component given the true regime instead (as the original code); the two
  differ only for the ~0.1% of rows whose X10 falls on the wrong side of 0.
  x: [..., 10] -> [..., 2].
  """
  w = _sigmoid(2.0 * SWITCH_SHIFT * x[..., 9])[..., None]
  return (w * orange_skin_probs(x[..., 0:4])
          + (1.0 - w) * nonlinear_additive_probs(x[..., 4:8]))


# name -> true P(Y|X) as a function of x [..., 10] -> [..., 2]; works on numpy
# and jax arrays (jittable), so it doubles as the "oracle" black box.
TABULAR: dict[str, Callable[[Any], Any]] = {
    'xor': xor_probs,
    'orange_skin': orange_skin_probs,
    'nonlinear_additive': nonlinear_additive_probs,
    'switch': switch_probs,
}
# The number of relevant features per row (L2X's `ks`).
TABULAR_K: dict[str, int] = {
    'xor': 2, 'orange_skin': 4, 'nonlinear_additive': 4, 'switch': 5}
# 0-based relevant columns (switch: per regime, orange first).
TABULAR_FEATURES: dict[str, tuple[tuple[int, ...], ...]] = {
    'xor': ((0, 1),),
    'orange_skin': ((0, 1, 2, 3),),
    'nonlinear_additive': ((0, 1, 2, 3),),
    'switch': ((0, 1, 2, 3, 9), (4, 5, 6, 7, 9)),
}

def _oracle_logits(name: str) -> Callable[[jax.Array], jax.Array]:
  """Centred log-odds `[n, 10] -> [n, 2]` whose softmax is `TABULAR[name]`."""
  softplus = jax.nn.softplus

  def fn(x: jax.Array) -> jax.Array:
    if name == 'switch':
      s = 2.0 * SWITCH_SHIFT * x[..., 9]
      log_w, log_1mw = -softplus(-s), -softplus(s)   # P(orange | X10)
      fo = orange_skin_logit(x[..., 0:4])
      fa = nonlinear_additive_logit(x[..., 4:8])
      # P(Y=1 | f) = 1 / (1 + e^f): log = -softplus(f).
      lp1 = jnp.logaddexp(log_w - softplus(fo), log_1mw - softplus(fa))
      lp0 = jnp.logaddexp(log_w - softplus(-fo), log_1mw - softplus(-fa))
      g = lp1 - lp0
    else:
      f = {'xor': xor_logit, 'orange_skin': orange_skin_logit,
           'nonlinear_additive': nonlinear_additive_logit}[name](x)
      g = -f
    return jnp.stack([-0.5 * g, 0.5 * g], axis=-1)

  fn.__name__ = f'oracle_{name}'
  return fn


@functools.lru_cache(maxsize=None)
def oracle_blackbox(name: str) -> bb.BlackBox:
  """The true P(Y|X) of an L2X tabular set as a logits black box.

  L2X's own setting explains this function (Chen et al. 2018, §4.1).
  `softmax(box(x)) == TABULAR[name](x)` up to float rounding, `x [n, 10]
  -> logits [n, 2]`: the centred log-odds `[-g/2, g/2]` with
  `g = log P(Y=1|X) - log P(Y=0|X)`, computed in log space, so the
  gradient of either logit (+-dg/2) never saturates (a probability box's
  gradient underflows to 0 where |f| > ~17 in float32, e.g. on ~40% of the
  nonlinear additive rows). Switch: the Bayes mixture of `switch_probs`.

  Args:
    name: 'xor', 'orange_skin', 'nonlinear_additive' or 'switch'.
  Returns:
    a `blackbox.BlackBox` (input shape `(10,)`, output 'logits').
  Raises:
    ValueError: `name` is not a tabular set (the message lists them).
  """
  _checks.check_choice('name', name, TABULAR)
  return bb.from_jax(_oracle_logits(name),
                     input_shape=(NUM_TABULAR_FEATURES,), output='logits',
                     name=f'oracle_{name}')


LABEL_MODES = ('sample', 'argmax')
RNG_MODES = ('numpy', 'legacy')


def _legacy_switch(x: np.ndarray, rs: np.random.RandomState, bug: bool
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The original `make_data.py` switch steps on float64 x (in place)."""
  n = x.shape[0]
  x[:n // 2, -1] += SWITCH_SHIFT
  x[n // 2:, -1] -= SWITCH_SHIFT
  x1, x2 = x[:n // 2], x[n // 2:]
  probs = np.concatenate([orange_skin_probs(x1), nonlinear_additive_probs(x2)])
  if bug:
    # The original `X2[:,4:8],X2[:,:4] = X2[:,:4],X2[:,4:8]` on numpy views:
    # columns 0..3 AND 4..7 end up holding the original columns 0..3.
    x2[:, 4:8] = x2[:, 0:4]
  else:
    x2[:, :8] = x2[:, [4, 5, 6, 7, 0, 1, 2, 3]]
  regime = np.repeat(np.array([0, 1], np.int8), [n // 2, n - n // 2])
  perm = rs.permutation(n)
  return x[perm], probs[perm], regime[perm]


def make_tabular(
    name: str,
    n: int,
    key_or_seed: Any = 0,
    *,
    label: str = 'sample',
    legacy_switch_bug: bool = False,
    rng: str = 'numpy',
    dtype: Any = np.float32,
) -> Dataset:
  """One of the four L2X synthetic tabular sets (L2X §4.1).

  X ~ N(0, I_10) and `P(Y=1|X) = 1 / (1 + exp(f(X)))`, soft targets
  `probs = [P(Y=0|X), P(Y=1|X)]` (what L2X's code fits, never sampled labels).
  With 0-based columns X0..X9:

  | name               | f(X)                                         | k |
  |--------------------|----------------------------------------------|---|
  | xor                | X0 * X1                                      | 2 |
  | orange_skin        | X0^2 + X1^2 + X2^2 + X3^2 - 4                | 4 |
  | nonlinear_additive | -100 sin(0.2 X0) + |X1| + X2 + exp(-X3) - 2.4 | 4 |
  | switch             | orange rows: orange f(X0..X3);               | 5 |
  |                    | additive rows: additive f(X4..X7)            |   |

  Ground truth: {0, 1} (xor), {0, 1, 2, 3} (orange, additive); switch per
  row {0, 1, 2, 3, 9} (orange) or {4, 5, 6, 7, 9} (additive).

  Switch: exactly `n // 2` orange rows with X9 += 3 and `n - n // 2` additive
  rows with X9 -= 3, in random order; the additive rows' signal columns are
  moved to 4..7 by a *copying* swap (X[:, :8] = X[:, [4..7, 0..3]]), so the
  original columns 4..7 land in 0..3 as noise. `legacy_switch_bug=True`
  reproduces the original release instead: both 0..3 and 4..7 of additive
  rows hold the original columns 0..3 (the signal exists twice; the original
  4..7 are lost); its ground truth stays {4..7, 9} as the original evaluation.
  `meta['regime']` int8 [n] is 0 (orange) / 1 (additive) per row.

  Args:
    name: 'xor', 'orange_skin', 'nonlinear_additive' or 'switch'.
    n: number of rows (L2X: 10^6 train with seed 0, 10^5 test with seed 1).
    key_or_seed: a `jax.random` key or an int seed (s == jax.random.key(s)).
    label: how `y` is made from `probs`: 'sample' (default) draws
      y ~ Bernoulli(P(Y=1|X)), a sample of the generative model (for training
      a black box on data); 'argmax' takes y = argmax probs, i.e. 1 iff f < 0.
      Either way `probs` holds the exact soft targets.
    legacy_switch_bug: reproduce the original switch column-copy bug.
    rng: 'numpy' (default): a PCG64 stream derived from the key. 'legacy':
      `np.random.seed(seed); X = np.random.randn(n, 10)` (and the switch
      permutation) exactly as the original `make_data.py`, for bit-compatible
      X; needs an int seed; labels are then sampled from a separate stream.
    dtype: float dtype of `x` and `probs` (float32 by default; with
      rng='numpy' the draws themselves are float32).

  Returns:
    Dataset with x [n, 10], y int32 [n], probs [n, 2], ground_truth bool
    [n, 10], num_classes 2, meta {'k', 'regime' (switch only)}.
  """
  _checks.check_choice('name', name, TABULAR)
  n = _checks.check_int('n', n)
  _checks.check_choice('label', label, LABEL_MODES)
  _checks.check_choice('rng', rng, RNG_MODES)
  if legacy_switch_bug and name != 'switch':
    raise ValueError(f'legacy_switch_bug applies to name="switch" only, got '
                     f'name={name!r}.')
  d = NUM_TABULAR_FEATURES

  if rng == 'legacy':
    if isinstance(key_or_seed, bool) or not isinstance(
        key_or_seed, (int, np.integer)) or key_or_seed < 0:
      raise ValueError(f'key_or_seed must be an int seed >= 0 for '
                       f'rng="legacy", got {key_or_seed!r}.')
    rs = np.random.RandomState(int(key_or_seed))
    x = rs.randn(n, d)
    label_rng = np.random.default_rng([int(key_or_seed), 1])
    if name == 'switch':
      x, probs, regime = _legacy_switch(x, rs, legacy_switch_bug)
    else:
      probs, regime = TABULAR[name](x), None
  else:
    x_rng, label_rng, perm_rng = _rngs(key_or_seed, 3)
    z = x_rng.standard_normal((n, d), dtype=np.float32)
    if name == 'switch':
      # Rows are i.i.d., so a random permutation of the regime labels (exact
      # halves) is the original's "halves, then permute rows", without moving
      # the data; whole-column `np.where`s are cheaper than row gathers.
      h = n // 2
      regime = perm_rng.permutation(
          np.repeat(np.array([0, 1], np.int8), [h, n - h]))
      add = (regime == 1)[:, None]
      probs = probs_from_logit(np.where(
          add[:, 0], nonlinear_additive_logit(z), orange_skin_logit(z)))
      if legacy_switch_bug:
        cols = [0, 1, 2, 3, 0, 1, 2, 3]
      else:
        cols = [4, 5, 6, 7, 0, 1, 2, 3]        # a copying swap
      x = z                                     # np.where reads z first
      x[:, :8] = np.where(add, z[:, cols], z[:, :8])
      x[:, 9] += np.where(add[:, 0], -SWITCH_SHIFT, SWITCH_SHIFT).astype(
          np.float32)
    else:
      x, probs, regime = z, TABULAR[name](z), None

  probs = probs.astype(dtype)
  x = x.astype(dtype, copy=False)
  if label == 'sample':
    y = (label_rng.random(n) < probs[:, 1]).astype(np.int32)
  else:
    y = (probs[:, 1] > probs[:, 0]).astype(np.int32)

  meta: dict[str, Any] = {'k': TABULAR_K[name], 'label': label}
  rows_gt = np.zeros((len(TABULAR_FEATURES[name]), d), bool)
  for r, cols in enumerate(TABULAR_FEATURES[name]):
    rows_gt[r, list(cols)] = True
  if name == 'switch':
    ground_truth = rows_gt[regime]          # per row: orange or additive set
    meta['regime'] = regime
    meta['regime_names'] = SWITCH_REGIMES
    meta['legacy_switch_bug'] = legacy_switch_bug
  else:
    ground_truth = np.broadcast_to(rows_gt, (n, d)).copy()
  return Dataset(x=x, y=y, probs=probs, ground_truth=ground_truth,
                 num_classes=2, name=name, meta=meta)


def make_dense(
    n: int,
    key_or_seed: Any = 0,
    *,
    d: int = 100,
    interaction_scale: float = 1.0,
    label: str = 'sample',
) -> Dataset:
  """Dense tabular data where every feature matters, with interactions.

  For amortized Shapley explainers, whose quality is judged against exact
  or many-sample Shapley values of every feature (selective explanations):
  `X ~ N(0, I_d)` and `P(Y=1|X) = sigmoid(f(X))` with

      f(X) = sum_i w_i X_i + interaction_scale * sum_i u_i X_i X_{pi(i)}
             + 0.5 * sum_i v_i sin(2 X_i),

  `w, u, v` drawn once per seed (`w_i ~ N(0, 4/d) * r_i` with importances
  `r_i = 1/sqrt(1 + i/4)` decaying with the feature index, `u_i, v_i ~ N(0,
  1/d)`) and `pi` a random permutation without fixed points, so the
  features' importances are graded (no ties at zero) and non-additive.

  Args:
    n: number of rows.
    key_or_seed: a `jax.random` key or an int seed: it draws the function
      (w, u, v, pi) and the rows (another seed is another function: split
      one draw into train/calibration/test).
    d: number of features (>= 2).
    interaction_scale: weight of the pairwise terms.
    label: 'sample' (y ~ Bernoulli(P(Y=1|X))) or 'argmax'.
  Returns:
    Dataset with x float32 [n, d], y int32 [n], probs [n, 2],
    ground_truth None, num_classes 2, meta {'weights': w, 'importance': r}.
  """
  n = _checks.check_int('n', n)
  d = _checks.check_int('d', d, 2)
  _checks.check_choice('label', label, LABEL_MODES)
  f_rng, x_rng, label_rng = _rngs(key_or_seed, 3)
  r = 1.0 / np.sqrt(1.0 + np.arange(d) / 4.0)
  w = f_rng.normal(0.0, 2.0 / np.sqrt(d), d) * r
  u = f_rng.normal(0.0, 1.0 / np.sqrt(d), d)
  v = f_rng.normal(0.0, 1.0 / np.sqrt(d), d)
  perm = (np.arange(d) + 1 + f_rng.integers(0, d - 1)) % d  # no fixed point
  x = x_rng.standard_normal((n, d), dtype=np.float32)
  f = (x @ w + float(interaction_scale) * (x * x[:, perm]) @ u
       + 0.5 * np.sin(2.0 * x) @ v)
  p1 = 1.0 / (1.0 + np.exp(-f))
  probs = np.stack([1.0 - p1, p1], axis=1).astype(np.float32)
  if label == 'sample':
    y = (label_rng.random(n) < p1).astype(np.int32)
  else:
    y = (p1 > 0.5).astype(np.int32)
  return Dataset(x=x, y=y, probs=probs, ground_truth=None, num_classes=2,
                 name=f'dense{d}', meta={'weights': w, 'importance': r,
                                         'label': label})


# ----------------------------------------------------------------------------
# Synthetic images: a class pattern among scrambled pieces of the others.
# ----------------------------------------------------------------------------


def make_patterns(
    num_classes: int,
    *,
    patch: int = 4,
    pattern_patches: int = 2,
    pixels_per_patch: int = 6,
    pattern_seed: int = 0,
) -> np.ndarray:
  """Class patterns: bool `[num_classes, P*patch, P*patch]`, P: pattern_patches.

  Each pattern is P x P *pieces* of `patch x patch` pixels, every piece with
  exactly `pixels_per_patch` pixels on; all `num_classes * P^2` pieces are
  distinct. Fixed by `pattern_seed` (not by the data key), so train and test
  sets drawn with different keys share the patterns.
  """
  num_classes = _checks.check_int('num_classes', num_classes, 2)
  patch = _checks.check_int('patch', patch)
  pattern_patches = _checks.check_int('pattern_patches', pattern_patches)
  pixels_per_patch = _checks.check_int('pixels_per_patch', pixels_per_patch)
  if pixels_per_patch >= patch * patch:
    raise ValueError(f'pixels_per_patch must be < patch**2 = {patch * patch}, '
                     f'got {pixels_per_patch}.')
  num_pieces = num_classes * pattern_patches ** 2
  if num_pieces > math.comb(patch * patch, pixels_per_patch):
    raise ValueError(f'num_classes * pattern_patches**2 = {num_pieces} '
                     f'distinct pieces do not exist with patch={patch}, '
                     f'pixels_per_patch={pixels_per_patch}.')
  rng = np.random.default_rng(pattern_seed)
  pieces: list[np.ndarray] = []
  seen: set[bytes] = set()
  while len(pieces) < num_pieces:  # a few draws; not per data row
    piece = np.zeros(patch * patch, bool)
    piece[rng.permutation(patch * patch)[:pixels_per_patch]] = True
    if piece.tobytes() not in seen:
      seen.add(piece.tobytes())
      pieces.append(piece)
  p = pattern_patches
  arr = np.stack(pieces).reshape(num_classes, p, p, patch, patch)
  return arr.transpose(0, 1, 3, 2, 4).reshape(num_classes, p * patch,
                                               p * patch)


def make_images(
    n: int,
    key_or_seed: Any = 0,
    *,
    size: int = 28,
    patch: int = 4,
    num_classes: int = 4,
    pattern_patches: int = 2,
    pixels_per_patch: int = 6,
    noise: float = 0.1,
    intensity: tuple[float, float] = (0.6, 1.0),
    pattern_seed: int = 0,
) -> Dataset:
  """Images whose class is a pattern at a random place, with ground truth.

  The image is a `g x g` grid of `patch x patch` cells (g = size / patch;
  28 / 4 -> the 7 x 7 grid of L2X's MNIST setting). The class-c pattern
  (`make_patterns`) covers a P x P block of cells (P = pattern_patches) at a
  uniformly random patch-aligned place. Clutter: every *other* class's P^2
  pieces, each placed once in a random free cell (scrambled: a class whose
  pieces happen to land in their pattern's arrangement gets two of them
  swapped). So every image holds exactly one copy of every piece of every
  class and the same number of lit pixels: global statistics and any
  bag-of-pieces detector carry no label information; only the arrangement of
  the label's pieces does (a CNN with a receptive field of P cells learns it).
  Each piece gets a brightness ~ U(intensity); then Gaussian noise of std
  `noise` and clipping to [0, 1]. Labels are exactly balanced (n % C aside).

  Args:
    n: number of images.
    key_or_seed: a `jax.random` key or an int seed.
    size: image height = width; a multiple of `patch`.
    patch: cell size in pixels.
    num_classes: C >= 2 with C * P^2 <= g^2.
    pattern_patches: P, the pattern's side in cells.
    pixels_per_patch: lit pixels per piece (the same for all pieces).
    noise: std of the additive Gaussian pixel noise (>= 0).
    intensity: (low, high) range of a piece's brightness.
    pattern_seed: fixes the class patterns.

  Returns:
    Dataset with x float32 [n, size, size, 1] in [0, 1], y int32 [n],
    probs one-hot float32 [n, C], ground_truth bool [n, size, size, 1] (the
    label pattern's lit pixels), and meta:
    'ground_truth_patches' bool [n, g*g] (the pattern's cells, row-major as
    `masking.patch_groups`), 'location' int32 [n, 2] (top-left cell),
    'patterns' bool [C, P*patch, P*patch], 'patch', 'k' (= P^2 cells),
    'class_names'.
  """
  n = _checks.check_int('n', n)
  size = _checks.check_int('size', size)
  patch = _checks.check_int('patch', patch)
  if size % patch:
    raise ValueError(f'size={size} must be a multiple of patch={patch}.')
  g = size // patch
  c = _checks.check_int('num_classes', num_classes, 2)
  p = _checks.check_int('pattern_patches', pattern_patches)
  if c * p * p > g * g:
    raise ValueError(
        f'num_classes * pattern_patches**2 = {c * p * p} pieces do not fit in '
        f'the {g}x{g} grid; use fewer num_classes or a larger size.')
  if not np.isfinite(noise) or noise < 0:
    raise ValueError(f'noise must be >= 0, got {noise!r}.')
  lo, hi = (float(v) for v in intensity)
  if not 0.0 <= lo <= hi <= 1.0:
    raise ValueError(f'intensity must be (low, high) with 0 <= low <= high '
                     f'<= 1, got {intensity!r}.')
  patterns = make_patterns(c, patch=patch, pattern_patches=p,
                           pixels_per_patch=pixels_per_patch,
                           pattern_seed=pattern_seed)
  pp = p * p
  # Piece table [C*P^2 + 1, patch, patch]; the last entry is the empty cell.
  pieces = patterns.reshape(c, p, patch, p, patch).transpose(0, 1, 3, 2, 4)
  table = np.concatenate([pieces.reshape(c * pp, patch, patch),
                          np.zeros((1, patch, patch), bool)])

  (label_rng, loc_rng, cell_rng, bright_rng,
   noise_rng) = _rngs(key_or_seed, 5)
  y = label_rng.permutation(np.arange(n) % c).astype(np.int32)
  loc = loc_rng.integers(0, g - p + 1, size=(n, 2)).astype(np.int32)
  rows = np.arange(n)[:, None]
  # Cells of the label pattern, in piece order (i, j) row-major.
  di, dj = np.divmod(np.arange(pp), p)
  pat_cells = (loc[:, :1] + di) * g + (loc[:, 1:] + dj)  # [n, P^2]
  # The other classes' pieces, scrambled over the free cells. Piece (i, j) of
  # any class goes to a random free cell in the range the label's piece (i, j)
  # can occupy (rows i..g-P+i, cols j..g-P+j), so that every piece has about
  # the same spatial distribution whatever the label: per-pixel statistics
  # (a linear model on pixels) carry almost no label information.
  others = (y[:, None] + 1 + np.arange(c - 1)) % c       # [n, C-1]
  other_ids = others[:, :, None] * pp + np.arange(pp)     # [n, C-1, P^2]
  cell_i, cell_j = np.divmod(np.arange(g * g), g)
  allowed = ((cell_i >= di[:, None]) & (cell_i <= g - p + di[:, None])
             & (cell_j >= dj[:, None]) & (cell_j <= g - p + dj[:, None]))
  taken = np.zeros((n, g * g), bool)
  taken[rows, pat_cells] = True
  cells = np.empty((n, c - 1, pp), np.int64)
  for o in range(c - 1):   # static loops over the (C-1) * P^2 piece slots,
    for q in range(pp):    # vectorised over the rows
      # Free allowed cells first, then (if none is left) any free cell.
      scores = cell_rng.random((n, g * g)) + 2.0 * ~allowed[q] + 4.0 * taken
      cells[:, o, q] = np.argmin(scores, axis=1)
      taken[rows[:, 0], cells[:, o, q]] = True
  # A class whose pieces landed in its own arrangement: swap pieces 0 and 1.
  if pp > 1:
    ci, cj = np.divmod(cells, g)
    arranged = np.all((ci - ci[..., :1] == di) & (cj - cj[..., :1] == dj), -1)
    first = cells[..., 0].copy()
    cells[..., 0] = np.where(arranged, cells[..., 1], cells[..., 0])
    cells[..., 1] = np.where(arranged, first, cells[..., 1])
  piece_of_cell = np.full((n, g * g), c * pp, np.int64)
  piece_of_cell[rows, pat_cells] = y[:, None] * pp + np.arange(pp)
  piece_of_cell[rows, cells.reshape(n, -1)] = other_ids.reshape(n, -1)

  bright = bright_rng.uniform(lo, hi, (n, g, 1, g, 1)).astype(np.float32)
  gt_cells = np.zeros((n, g * g), bool)
  gt_cells[rows, pat_cells] = True
  # Assemble straight into the image layout [n, g, patch, g, patch] (one
  # gather per piece row; avoids a strided transpose of the whole set).
  piece_grid = piece_of_cell.reshape(n, g, g)
  lit = np.empty((n, g, patch, g, patch), bool)
  for r in range(patch):  # static loop over the rows of a piece
    lit[:, :, r] = table[piece_grid, r]
  x = (lit * bright).reshape(n, size, size, 1)
  if noise > 0:
    x += noise * noise_rng.standard_normal(x.shape, dtype=np.float32)
  np.clip(x, 0.0, 1.0, out=x)
  ground_truth = (lit & gt_cells.reshape(n, g, 1, g, 1)).reshape(
      n, size, size, 1)
  probs = np.eye(c, dtype=np.float32)[y]
  meta = {
      'ground_truth_patches': gt_cells,
      'location': loc,
      'patterns': patterns,
      'patch': patch,
      'k': pp,
      'class_names': tuple(f'pattern{i}' for i in range(c)),
  }
  return Dataset(x=x, y=y, probs=probs, ground_truth=ground_truth,
                 num_classes=c, name='images', meta=meta)


# ----------------------------------------------------------------------------
# Synthetic text: planted label tokens among neutral fillers.
# ----------------------------------------------------------------------------

PAD_ID = 0
PAD_TOKEN = '<pad>'

_SENTIMENT_WORDS = (
    ('awful', 'terrible', 'boring', 'dreadful', 'worst', 'dull', 'poor',
     'bad', 'mediocre', 'annoying', 'waste', 'horrible'),
    ('great', 'excellent', 'wonderful', 'superb', 'brilliant', 'delightful',
     'moving', 'fantastic', 'beautiful', 'enjoyable', 'best', 'perfect'),
)
_FILLER_WORDS = (
    'the', 'a', 'movie', 'film', 'and', 'of', 'to', 'is', 'it', 'this', 'that',
    'with', 'was', 'for', 'as', 'on', 'plot', 'actor', 'scene', 'story', 'by',
    'an', 'at', 'from', 'his', 'her', 'they', 'one', 'all', 'about', 'there',
    'cast', 'director', 'time', 'character', 'ending', 'music', 'script',
    'some', 'when', 'which', 'who', 'then', 'into', 'out', 'up', 'more', 'also',
    'series', 'scenes', 'people', 'first', 'after', 'while', 'where', 'two',
    'other', 'role', 'show', 'work')


def text_vocab(vocab_size: int, num_classes: int, tokens_per_class: int
               ) -> list[str]:
  """Words for the ids of `make_text`: 0 '<pad>', class tokens, then fillers.

  Class c's tokens are ids `1 + c*T .. c*T + T` (T = tokens_per_class);
  sentiment words for 2 classes (class 0 negative, 1 positive), else
  'class{c}_{j}'. Fillers are neutral words, then 'w{id}'.
  """
  t = tokens_per_class
  words = [PAD_TOKEN]
  for cls in range(num_classes):
    if num_classes == 2 and t <= len(_SENTIMENT_WORDS[cls]):
      words += list(_SENTIMENT_WORDS[cls][:t])
    else:
      words += [f'class{cls}_{j}' for j in range(t)]
  start = len(words)
  fillers = list(_FILLER_WORDS[:vocab_size - start])
  fillers += [f'w{i}' for i in range(start + len(fillers), vocab_size)]
  return words + fillers


def make_text(
    n: int,
    key_or_seed: Any = 0,
    *,
    seq_len: int = 50,
    vocab_size: int = 200,
    num_classes: int = 2,
    num_planted: int = 3,
    tokens_per_class: int = 8,
    num_distractors: int = 0,
    min_len: int | None = None,
) -> Dataset:
  """Token sequences labelled by planted class tokens, with ground truth.

  Vocabulary (see `text_vocab`): 0 = PAD, ids `1 + c*T .. c*T + T` are class
  c's tokens (T = tokens_per_class), the rest neutral fillers. Each row has a
  length ~ U{min_len..seq_len} (PAD after it), filler tokens drawn uniformly,
  and `num_planted` tokens of its class (uniform among the class's T) at
  distinct random positions inside its length. Optionally `num_distractors`
  (< num_planted) further positions get tokens of random *other* classes, so
  the label is the class with the most planted tokens and a bag-of-words
  count is needed rather than mere presence. Labels are exactly balanced.

  Args:
    n: number of rows.
    key_or_seed: a `jax.random` key or an int seed.
    seq_len: L, padded length.
    vocab_size: V, including PAD; needs V > 1 + C*T.
    num_classes: C >= 2.
    num_planted: label tokens per row (the k of a token explainer).
    tokens_per_class: T, distinct label tokens per class.
    num_distractors: other-class tokens per row, < num_planted.
    min_len: shortest row (default L // 2, at least num_planted +
      num_distractors).

  Returns:
    Dataset with x int32 [n, L], y int32 [n], probs one-hot float32 [n, C],
    ground_truth bool [n, L] (positions of the label's planted tokens), meta:
    'vocab' (list of V strings), 'lengths' int32 [n], 'distractor_mask'
    bool [n, L], 'class_token_ids' int32 [C, T], 'k' (= num_planted),
    'class_names', 'pad_id'.
  """
  n = _checks.check_int('n', n)
  seq_len = _checks.check_int('seq_len', seq_len)
  c = _checks.check_int('num_classes', num_classes, 2)
  k = _checks.check_int('num_planted', num_planted)
  t = _checks.check_int('tokens_per_class', tokens_per_class)
  nd = _checks.check_int('num_distractors', num_distractors, 0)
  if nd >= k:
    raise ValueError(f'num_distractors must be < num_planted={k}, got {nd}.')
  vocab_size = _checks.check_int('vocab_size', vocab_size)
  if vocab_size <= 1 + c * t:
    raise ValueError(f'vocab_size must be > 1 + num_classes * tokens_per_class'
                     f' = {1 + c * t}, got {vocab_size}.')
  if min_len is None:
    min_len = min(seq_len, max(seq_len // 2, k + nd))
  min_len = _checks.check_int('min_len', min_len)
  if not k + nd <= min_len <= seq_len:
    raise ValueError(f'min_len must be in [num_planted + num_distractors, '
                     f'seq_len] = [{k + nd}, {seq_len}], got {min_len}.')

  (label_rng, len_rng, fill_rng, pos_rng, tok_rng,
   dis_rng) = _rngs(key_or_seed, 6)
  y = label_rng.permutation(np.arange(n) % c).astype(np.int32)
  lengths = len_rng.integers(min_len, seq_len + 1, n).astype(np.int32)
  pos = np.arange(seq_len)
  inside = pos < lengths[:, None]
  x = fill_rng.integers(1 + c * t, vocab_size, (n, seq_len)).astype(np.int32)
  x[~inside] = PAD_ID
  scores = pos_rng.random((n, seq_len))
  scores[~inside] = 2.0
  chosen = np.argsort(scores, axis=1)[:, :k + nd]
  rows = np.arange(n)[:, None]
  planted = chosen[:, :k]
  x[rows, planted] = (1 + y[:, None] * t
                      + tok_rng.integers(0, t, (n, k))).astype(np.int32)
  ground_truth = np.zeros((n, seq_len), bool)
  ground_truth[rows, planted] = True
  distractor_mask = np.zeros((n, seq_len), bool)
  if nd:
    dpos = chosen[:, k:]
    dcls = (y[:, None] + dis_rng.integers(1, c, (n, nd))) % c
    x[rows, dpos] = (1 + dcls * t + dis_rng.integers(0, t, (n, nd))).astype(
        np.int32)
    distractor_mask[rows, dpos] = True
  class_names = (('negative', 'positive') if c == 2
                 else tuple(f'class{i}' for i in range(c)))
  meta = {
      'vocab': text_vocab(vocab_size, c, t),
      'lengths': lengths,
      'distractor_mask': distractor_mask,
      'class_token_ids': (1 + np.arange(c * t, dtype=np.int32)).reshape(c, t),
      'k': k,
      'class_names': class_names,
      'pad_id': PAD_ID,
  }
  return Dataset(x=x, y=y, probs=np.eye(c, dtype=np.float32)[y],
                 ground_truth=ground_truth, num_classes=c, name='text',
                 meta=meta)


def decode_tokens(tokens: Any, vocab: list[str], *, skip_pad: bool = True
                  ) -> list[str]:
  """Token ids [L] (or [n, L]) -> space-joined words (one string per row)."""
  arr = np.asarray(tokens)
  if arr.ndim == 1:
    arr = arr[None]
  if arr.ndim != 2:
    raise ValueError(f'tokens must have shape [L] or [n, L], got {arr.shape}.')
  out = []
  for row in arr:  # display helper: per-row strings
    out.append(' '.join(vocab[i] for i in row
                        if not (skip_pad and i == PAD_ID)))
  return out
