"""Tests for xai_jax/data/synthetic.py (L2X tabular sets, images, text)."""

import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xai_jax import data
from xai_jax.data import synthetic as syn

NAMES = ('xor', 'orange_skin', 'nonlinear_additive', 'switch')


def _p1(f):
  """P(Y=1|X) = 1 / (1 + exp(f)), in float64."""
  return 1.0 / (1.0 + math.exp(f))


# ---------------------------------------------------------------------------
# Tabular.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize('name', NAMES)
def test_tabular_shapes_and_dtypes(name):
  ds = syn.make_tabular(name, 1000, 0)
  assert len(ds) == 1000 and ds.feature_shape == (10,)
  assert ds.x.shape == (1000, 10) and ds.x.dtype == np.float32
  assert ds.y.shape == (1000,) and ds.y.dtype == np.int32
  assert set(np.unique(ds.y)) <= {0, 1}
  assert ds.probs.shape == (1000, 2) and ds.probs.dtype == np.float32
  np.testing.assert_allclose(ds.probs.sum(1), 1.0, atol=1e-6)
  assert ds.ground_truth.shape == (1000, 10) and ds.ground_truth.dtype == bool
  assert (ds.ground_truth.sum(1) == syn.TABULAR_K[name]).all()
  assert ds.num_classes == 2 and ds.name == name
  assert ds.meta['k'] == syn.TABULAR_K[name]


def test_tabular_k_registry():
  assert syn.TABULAR_K == {'xor': 2, 'orange_skin': 4,
                           'nonlinear_additive': 4, 'switch': 5}
  assert set(syn.TABULAR) == set(NAMES)


@pytest.mark.parametrize('name', NAMES)
def test_tabular_same_key_same_data(name):
  a = syn.make_tabular(name, 500, 3)
  b = syn.make_tabular(name, 500, jax.random.key(3))
  c = syn.make_tabular(name, 500, jax.random.PRNGKey(3))
  d = syn.make_tabular(name, 500, 4)
  for other in (b, c):
    np.testing.assert_array_equal(a.x, other.x)
    np.testing.assert_array_equal(a.y, other.y)
    np.testing.assert_array_equal(a.probs, other.probs)
    np.testing.assert_array_equal(a.ground_truth, other.ground_truth)
  assert not np.array_equal(a.x, d.x)


def test_tabular_label_mode_does_not_change_x():
  a = syn.make_tabular('xor', 2000, 0, label='sample')
  b = syn.make_tabular('xor', 2000, 0, label='argmax')
  np.testing.assert_array_equal(a.x, b.x)
  np.testing.assert_array_equal(a.probs, b.probs)
  # argmax labels: y = 1 iff f(X) < 0.
  np.testing.assert_array_equal(b.y, (syn.xor_logit(b.x) < 0).astype(int))


def test_tabular_hand_computed_rows():
  x = np.zeros((6, 10))
  x[0, :2] = [1.0, 2.0]             # xor: f = 2
  x[1, :2] = [-1.5, 2.0]            # xor: f = -3
  x[2, :4] = [1.0, 1.0, 1.0, 1.0]   # orange: f = 0
  x[3, :4] = [2.0, 1.0, 0.0, 0.0]   # orange: f = 1
  x[4, :4] = [0.0, 0.0, 0.0, 0.0]   # additive: f = 1 - 2.4 = -1.4
  x[5, :4] = [5.0, -1.0, 2.0, 0.5]  # additive: -100 sin(1) + 3 + e^-.5 - 2.4
  np.testing.assert_allclose(syn.xor_probs(x[0])[1], _p1(2.0), rtol=1e-12)
  np.testing.assert_allclose(syn.xor_probs(x[1])[1], _p1(-3.0), rtol=1e-12)
  np.testing.assert_allclose(syn.xor_probs(x[0])[0], 1 - _p1(2.0), rtol=1e-12)
  np.testing.assert_allclose(syn.orange_skin_probs(x[2])[1], 0.5)
  np.testing.assert_allclose(syn.orange_skin_probs(x[3])[1], _p1(1.0))
  np.testing.assert_allclose(syn.orange_skin_probs(x[4])[1], _p1(-4.0))
  np.testing.assert_allclose(syn.nonlinear_additive_probs(x[4])[1],
                             _p1(-1.4), rtol=1e-12)
  f5 = -100 * math.sin(1.0) + 1.0 + 2.0 + math.exp(-0.5) - 2.4
  np.testing.assert_allclose(syn.nonlinear_additive_logit(x[5]), f5)
  # The tail stays exact (no 1 - p cancellation, no overflow at |f| ~ 80).
  np.testing.assert_allclose(syn.nonlinear_additive_probs(x[5])[0],
                             math.exp(f5), rtol=1e-10)
  assert syn.nonlinear_additive_probs(x[5])[1] == 1.0
  # Unnormalised targets as in the original code: [e^f/(1+e^f), 1/(1+e^f)].
  f = syn.orange_skin_logit(x[3])
  np.testing.assert_allclose(syn.orange_skin_probs(x[3]),
                             [np.exp(f) / (1 + np.exp(f)), 1 / (1 + np.exp(f))])


@pytest.mark.parametrize('name', ['xor', 'orange_skin', 'nonlinear_additive'])
def test_tabular_probs_are_the_formula_of_x(name):
  ds = syn.make_tabular(name, 5000, 1)
  np.testing.assert_allclose(ds.probs, syn.TABULAR[name](ds.x.astype(
      np.float64)), atol=2e-6)
  cols = list(syn.TABULAR_FEATURES[name][0])
  assert ds.ground_truth[:, cols].all() and ds.ground_truth.sum() == len(
      ds) * len(cols)


def test_tabular_probs_functions_jit():
  x = syn.make_tabular('switch', 256, 0).x
  for name, fn in syn.TABULAR.items():
    out = jax.jit(fn)(jnp.asarray(x))
    assert out.shape == (256, 2)
    np.testing.assert_allclose(np.asarray(out), fn(x), atol=1e-5, err_msg=name)


def test_tabular_balance_and_sampled_labels():
  n = 40000
  for name, expected in [('xor', 0.5), ('nonlinear_additive', 0.5),
                         ('switch', None)]:
    ds = syn.make_tabular(name, n, 2)
    p1 = ds.probs[:, 1].mean()
    if expected is not None:
      assert abs(p1 - expected) < 0.02, (name, p1)
    # Sampled labels follow P(Y=1|X): mean(y) ~ mean(P1) within 4 sd.
    assert abs(ds.y.mean() - p1) < 4 * 0.5 / math.sqrt(n), name
    # ... and agree with the argmax label on confident rows.
    confident = np.abs(ds.probs[:, 1] - 0.5) > 0.49
    assert (ds.y[confident] == (ds.probs[confident, 1] > 0.5)).mean() > 0.97
  # Orange skin: P(Y=1) = P(chi2_4 < 4)-ish, ~0.557 (not balanced, as L2X).
  p1 = syn.make_tabular('orange_skin', n, 2).probs[:, 1].mean()
  assert 0.53 < p1 < 0.58


def test_switch_regimes_ground_truth_and_correct_swap():
  n = 20000
  ds = syn.make_tabular('switch', n, 0)
  regime = ds.meta['regime']
  orange, add = regime == 0, regime == 1
  assert orange.sum() == n // 2 and add.sum() == n - n // 2   # exact halves
  assert not (orange[: n // 2].all())                          # shuffled
  # X10 (col 9) is N(+3, 1) for orange rows and N(-3, 1) for additive rows.
  assert abs(ds.x[orange, 9].mean() - 3) < 0.05
  assert abs(ds.x[add, 9].mean() + 3) < 0.05
  # Ground truth per row.
  gt_orange = np.zeros(10, bool)
  gt_orange[[0, 1, 2, 3, 9]] = True
  gt_add = np.zeros(10, bool)
  gt_add[[4, 5, 6, 7, 9]] = True
  assert (ds.ground_truth[orange] == gt_orange).all()
  assert (ds.ground_truth[add] == gt_add).all()
  # The swap is really correct: the additive rows' probs are a function of
  # columns 4..7 ...
  x = ds.x.astype(np.float64)
  np.testing.assert_allclose(ds.probs[add],
                             syn.nonlinear_additive_probs(x[add, 4:8]),
                             atol=2e-6)
  np.testing.assert_allclose(ds.probs[orange],
                             syn.orange_skin_probs(x[orange, 0:4]), atol=2e-6)
  # ... and not of columns 0..3, which are fresh independent noise there
  # (the legacy bug would make them equal to 4..7).
  wrong = syn.nonlinear_additive_probs(x[add, 0:4])
  assert np.abs(wrong - ds.probs[add]).mean() > 0.3
  assert not np.isclose(x[add, 0:4], x[add, 4:8]).any()
  corr = np.corrcoef(x[add, 0], x[add, 4])[0, 1]
  assert abs(corr) < 0.05
  # Every column is N(0, 1) in both regimes (besides the switch column).
  for rows in (orange, add):
    np.testing.assert_allclose(x[rows, :9].std(0), 1.0, atol=0.05)
    np.testing.assert_allclose(x[rows, :9].mean(0), 0.0, atol=0.05)


def test_switch_legacy_bug_reproduced_explicitly():
  ds = syn.make_tabular('switch', 4000, 0, legacy_switch_bug=True)
  add = ds.meta['regime'] == 1
  assert ds.meta['legacy_switch_bug']
  # Columns 0..3 and 4..7 of additive rows both hold the signal columns.
  np.testing.assert_array_equal(ds.x[add, 0:4], ds.x[add, 4:8])
  np.testing.assert_allclose(
      ds.probs[add], syn.nonlinear_additive_probs(
          ds.x[add, 0:4].astype(np.float64)), atol=2e-6)
  # Same ground truth as the original evaluation.
  assert ds.ground_truth[add][:, [4, 5, 6, 7, 9]].all()
  # Orange rows are untouched by the bug.
  fixed = syn.make_tabular('switch', 4000, 0)
  orange = ~add
  np.testing.assert_array_equal(ds.x[orange], fixed.x[orange])


def _original_make_data(n, datatype, seed):
  """The original L2X `generate_data` (synthetic/make_data.py), float64."""
  np.random.seed(seed)
  x = np.random.randn(n, 10)
  if datatype == 'switch':
    x[:n // 2, -1] += 3
    x[n // 2:, -1] += -3
    x1, x2 = x[:n // 2], x[n // 2:]
    e1 = np.exp(np.sum(x1[:, :4] ** 2, axis=1) - 4.0)
    e2 = np.exp(-100 * np.sin(0.2 * x2[:, 0]) + abs(x2[:, 1]) + x2[:, 2]
                + np.exp(-x2[:, 3]) - 2.4)
    y = np.concatenate([np.stack([e1 / (1 + e1), 1 / (1 + e1)], 1),
                        np.stack([e2 / (1 + e2), 1 / (1 + e2)], 1)])
    x2[:, 4:8], x2[:, :4] = x2[:, :4], x2[:, 4:8]   # the bug, verbatim
    x = np.concatenate([x1, x2], axis=0)
    perm = np.random.permutation(n)
    return x[perm], y[perm]
  e = np.exp(x[:, 0] * x[:, 1])
  return x, np.stack([e / (1 + e), 1 / (1 + e)], 1)


@pytest.mark.parametrize('name', ['xor', 'switch'])
def test_legacy_rng_is_bit_compatible_with_original(name):
  x_ref, p_ref = _original_make_data(3000, 'XOR' if name == 'xor' else name, 7)
  ds = syn.make_tabular(name, 3000, 7, rng='legacy', dtype=np.float64,
                        legacy_switch_bug=(name == 'switch'))
  np.testing.assert_array_equal(ds.x, x_ref)
  np.testing.assert_allclose(ds.probs, p_ref, rtol=1e-9, atol=1e-300)


def test_switch_bayes_probs_match_rows_with_clear_regime():
  ds = syn.make_tabular('switch', 5000, 5)
  bayes = syn.switch_probs(ds.x.astype(np.float64))
  clear = np.abs(ds.x[:, 9]) > 1.5
  np.testing.assert_allclose(bayes[clear], ds.probs[clear], atol=1e-3)
  np.testing.assert_allclose(bayes.sum(1), 1.0, atol=1e-12)


def test_tabular_million_rows_is_fast():
  # CPU seconds (single-threaded numpy, so = wall time on an idle machine) are
  # asserted; wall time is only printed, as the test machine may be shared.
  cpu, wall = {}, {}
  for name in NAMES:
    cpu[name] = wall[name] = float('inf')
    for seed in (11,):  # a fresh seed: includes any per-call setup
      t0, c0 = time.perf_counter(), time.process_time()
      ds = syn.make_tabular(name, 10**6, seed)
      wall[name] = min(wall[name], time.perf_counter() - t0)
      cpu[name] = min(cpu[name], time.process_time() - c0)
    assert ds.x.shape == (10**6, 10)
  print('make_tabular 10^6 rows: cpu s', cpu, 'wall s', wall)
  assert max(cpu.values()) < 2.0, cpu


def test_tabular_bad_arguments():
  with pytest.raises(ValueError, match='name'):
    syn.make_tabular('moons', 10)
  for n in (0, -5, 2.5, None):
    with pytest.raises(ValueError, match=r'\bn\b'):
      syn.make_tabular('xor', n)
  with pytest.raises(ValueError, match='label'):
    syn.make_tabular('xor', 10, label='soft')
  with pytest.raises(ValueError, match='rng'):
    syn.make_tabular('xor', 10, rng='torch')
  with pytest.raises(ValueError, match='legacy_switch_bug'):
    syn.make_tabular('xor', 10, legacy_switch_bug=True)
  with pytest.raises(ValueError, match='key_or_seed'):
    syn.make_tabular('xor', 10, jax.random.key(0), rng='legacy')
  with pytest.raises(ValueError, match='key_or_seed'):
    syn.make_tabular('xor', 10, 'zero')
  with pytest.raises(ValueError, match='key_or_seed'):
    syn.make_tabular('xor', 10, -1)


def test_subset_keeps_per_row_meta():
  ds = syn.make_tabular('switch', 100, 0)
  sub = ds.subset(np.arange(10, 20))
  assert len(sub) == 10
  np.testing.assert_array_equal(sub.meta['regime'], ds.meta['regime'][10:20])
  np.testing.assert_array_equal(sub.ground_truth, ds.ground_truth[10:20])
  assert sub.meta['k'] == 5


# ---------------------------------------------------------------------------
# Images.
# ---------------------------------------------------------------------------


def _cell_pieces(ds, **kw):
  """Identifies the piece in every cell of noise-free images -> [n, g*g]."""
  patch = ds.meta['patch']
  n, size = ds.x.shape[0], ds.x.shape[1]
  g = size // patch
  pats = ds.meta['patterns']
  c, side = pats.shape[0], pats.shape[1]
  p = side // patch
  pieces = pats.reshape(c, p, patch, p, patch).transpose(0, 1, 3, 2, 4)
  pieces = pieces.reshape(c * p * p, patch * patch)
  cells = (ds.x[..., 0] > 0).reshape(n, g, patch, g, patch).transpose(
      0, 1, 3, 2, 4).reshape(n, g * g, patch * patch)
  match = (cells[:, :, None, :] == pieces[None, None]).all(-1)  # [n, cells, P]
  empty = ~cells.any(-1)
  assert (match.sum(-1) + empty == 1).all()   # every cell: one piece or empty
  return np.where(empty, -1, match.argmax(-1)), g, p, c


def test_images_shapes_balance_determinism():
  ds = syn.make_images(400, 0)
  assert ds.x.shape == (400, 28, 28, 1) and ds.x.dtype == np.float32
  assert ds.x.min() >= 0 and ds.x.max() <= 1
  assert ds.y.dtype == np.int32 and ds.num_classes == 4
  np.testing.assert_array_equal(np.bincount(ds.y), [100] * 4)
  assert ds.ground_truth.shape == (400, 28, 28, 1)
  assert ds.meta['ground_truth_patches'].shape == (400, 49)
  assert (ds.meta['ground_truth_patches'].sum(1) == 4).all()
  assert ds.meta['k'] == 4
  np.testing.assert_array_equal(ds.probs, np.eye(4)[ds.y])
  again = syn.make_images(400, jax.random.key(0))
  np.testing.assert_array_equal(ds.x, again.x)
  np.testing.assert_array_equal(ds.ground_truth, again.ground_truth)
  assert not np.array_equal(ds.x, syn.make_images(400, 1).x)
  # Patterns depend on pattern_seed only.
  np.testing.assert_array_equal(ds.meta['patterns'],
                                syn.make_images(10, 9).meta['patterns'])


def test_images_ground_truth_is_the_label_pattern():
  ds = syn.make_images(600, 3, noise=0.0)
  n = len(ds)
  gt = ds.ground_truth[..., 0]
  # GT pixels are lit, lie in the GT patches, and form the label's pattern.
  assert (ds.x[..., 0][gt] > 0).all()
  assert (gt.sum((1, 2)) == 4 * 6).all()
  cells = ds.meta['ground_truth_patches'].reshape(n, 7, 7)
  cell_of_px = np.repeat(np.repeat(cells, 4, 1), 4, 2)
  assert not (gt & ~cell_of_px).any()
  loc = ds.meta['location']
  for i in range(0, n, 37):
    r, c = loc[i] * 4
    np.testing.assert_array_equal(gt[i, r:r + 8, c:c + 8],
                                  ds.meta['patterns'][ds.y[i]])
    assert cells[i, loc[i][0]:loc[i][0] + 2, loc[i][1]:loc[i][1] + 2].all()
  # Every image holds every piece of every class exactly once and the same
  # number of lit pixels, and exactly one class appears in its arrangement:
  # the label.
  piece, g, p, c = _cell_pieces(ds)
  counts = np.stack([(piece == k).sum(1) for k in range(c * p * p)], 1)
  assert (counts == 1).all()
  assert ((ds.x > 0).sum((1, 2, 3)) == c * p * p * 6).all()
  pos = np.stack([np.argmax(piece == k, axis=1) for k in range(c * p * p)], 1)
  pi, pj = np.divmod(pos.reshape(n, c, p * p), g)
  di, dj = np.divmod(np.arange(p * p), p)
  arranged = ((pi - pi[..., :1] == di) & (pj - pj[..., :1] == dj)).all(-1)
  assert (arranged.sum(1) == 1).all()
  np.testing.assert_array_equal(arranged.argmax(1), ds.y)


def test_images_not_solvable_by_pixel_statistics():
  tr = syn.make_images(2400, 0)
  te = syn.make_images(1200, 1)
  means = [tr.x[tr.y == k].mean() for k in range(4)]
  assert max(means) - min(means) < 0.01 * np.mean(means)
  # A linear model on raw pixels (ridge least squares) stays near chance.
  feats = lambda d: np.c_[d.x.reshape(len(d), -1), np.ones(len(d))].astype(
      np.float64)
  f = feats(tr)
  w = np.linalg.solve(f.T @ f + np.eye(f.shape[1]), f.T @ np.eye(4)[tr.y])
  acc = (feats(te) @ w).argmax(1).__eq__(te.y).mean()
  assert acc < 0.35, acc


def test_images_options_and_errors():
  ds = syn.make_images(20, 0, size=32, patch=8, num_classes=3,
                       pattern_patches=1, pixels_per_patch=20)
  assert ds.x.shape == (20, 32, 32, 1)
  assert (ds.meta['ground_truth_patches'].sum(1) == 1).all()
  assert (ds.ground_truth.sum((1, 2, 3)) == 20).all()
  with pytest.raises(ValueError, match='size'):
    syn.make_images(10, 0, size=30, patch=4)
  with pytest.raises(ValueError, match='num_classes'):
    syn.make_images(10, 0, num_classes=13)
  with pytest.raises(ValueError, match=r'\bn\b'):
    syn.make_images(0, 0)
  with pytest.raises(ValueError, match='noise'):
    syn.make_images(10, 0, noise=-1.0)
  with pytest.raises(ValueError, match='pixels_per_patch'):
    syn.make_images(10, 0, pixels_per_patch=16)


# ---------------------------------------------------------------------------
# Text.
# ---------------------------------------------------------------------------


def test_text_planted_tokens_match_ground_truth():
  ds = syn.make_text(2000, 0, seq_len=40, vocab_size=100, num_planted=3,
                     tokens_per_class=5)
  x, gt, y = ds.x, ds.ground_truth, ds.y
  assert x.shape == (2000, 40) and x.dtype == np.int32 and gt.dtype == bool
  np.testing.assert_array_equal(np.bincount(y), [1000, 1000])
  lengths = ds.meta['lengths']
  pos = np.arange(40)
  inside = pos < lengths[:, None]
  assert ((x == 0) == ~inside).all()                 # PAD exactly after length
  assert lengths.min() >= 20 and lengths.max() <= 40
  assert (gt.sum(1) == 3).all() and not (gt & ~inside).any()
  cls_of_token = np.full(100, -1)
  cls_of_token[ds.meta['class_token_ids']] = np.arange(2)[:, None]
  token_cls = cls_of_token[x]
  # Planted positions hold tokens of the label's class; nothing else does.
  assert (token_cls[gt] == np.repeat(y, 3)).all()
  assert (token_cls[~gt] == -1).all()
  vocab = ds.meta['vocab']
  assert len(vocab) == 100 and vocab[0] == '<pad>'
  assert len(set(vocab)) == 100
  words = syn.decode_tokens(x[0], vocab)[0].split()
  assert len(words) == lengths[0]
  planted_words = {vocab[t] for t in x[0][gt[0]]}
  assert planted_words <= set(syn._SENTIMENT_WORDS[y[0]])
  again = syn.make_text(2000, jax.random.key(0), seq_len=40, vocab_size=100,
                        num_planted=3, tokens_per_class=5)
  np.testing.assert_array_equal(x, again.x)
  np.testing.assert_array_equal(gt, again.ground_truth)


def test_text_distractors_majority_decides():
  ds = syn.make_text(1000, 1, num_classes=3, num_planted=3,
                     num_distractors=2, tokens_per_class=4, vocab_size=60)
  cls_of_token = np.full(60, -1)
  cls_of_token[ds.meta['class_token_ids']] = np.arange(3)[:, None]
  token_cls = cls_of_token[ds.x]
  counts = np.stack([(token_cls == k).sum(1) for k in range(3)], 1)
  assert (counts.argmax(1) == ds.y).all()
  assert (counts.max(1) == 3).all()
  dm = ds.meta['distractor_mask']
  assert (dm.sum(1) == 2).all() and not (dm & ds.ground_truth).any()
  assert (token_cls[dm] != np.repeat(ds.y, 2)).all()
  assert (token_cls[dm] >= 0).all()


def test_text_errors():
  with pytest.raises(ValueError, match='num_distractors'):
    syn.make_text(10, 0, num_planted=2, num_distractors=2)
  with pytest.raises(ValueError, match='vocab_size'):
    syn.make_text(10, 0, vocab_size=10, tokens_per_class=5)
  with pytest.raises(ValueError, match='min_len'):
    syn.make_text(10, 0, seq_len=10, min_len=2, num_planted=3)
  with pytest.raises(ValueError, match=r'\bn\b'):
    syn.make_text(-1, 0)


# ---------------------------------------------------------------------------
# The registry.
# ---------------------------------------------------------------------------


def test_load_registry():
  ds = data.load('switch', n=100, key_or_seed=1)
  ref = syn.make_tabular('switch', 100, 1)
  np.testing.assert_array_equal(ds.x, ref.x)
  assert data.load('images', n=8).x.shape == (8, 28, 28, 1)
  assert data.load('text', n=8, seq_len=12).x.shape == (8, 12)
  with pytest.raises(ValueError, match='fashion_mnist') as e:
    data.load('mnist')
  assert 'tfds:' in str(e.value) and 'xor' in str(e.value)
  with pytest.raises(ValueError, match='tfds'):
    data.load('tfds:')


# ----------------------------------------------------------------- oracle
@pytest.mark.parametrize('name', list(syn.TABULAR))
def test_oracle_blackbox_is_the_true_distribution(name):
  ds = syn.make_tabular(name, 2000, 3)
  box = syn.oracle_blackbox(name)
  assert box.output == 'logits' and box.input_shape == (10,)
  probs = np.asarray(box.probs(jnp.asarray(ds.x)))
  np.testing.assert_allclose(probs, syn.TABULAR[name](ds.x), atol=2e-5)
  # Gradients of the centred log-odds do not saturate where P(Y|X) ~ 0 / 1.
  g = jax.vmap(jax.grad(lambda v: box(v[None])[0, 1]))(jnp.asarray(ds.x))
  assert np.all(np.isfinite(np.asarray(g)))
  gt = ds.ground_truth
  assert np.mean(np.sum(np.abs(np.asarray(g)) > 0, -1) >= gt.sum(-1)) > 0.99


def test_oracle_blackbox_rejects_other_sets():
  with pytest.raises(ValueError, match='name.*xor'):
    syn.oracle_blackbox('images')
