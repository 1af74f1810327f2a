"""NormLIME speed: xai_jax.normlime against loops over the `lime` package.

Workload: NormLIME (Ahern et al. 2019) over Fashion-MNIST test images (random
images in [0, 1] when the files are missing; the output says which): LIME on
the 49 patches of a 7x7 grid of 4x4 patches, 1,000 samples per image (each
patch on w.p. 1/2, off patches set to zero, cosine distance, kernel width
0.25, Ridge(alpha=1)), explaining the predicted class's probability, then the
NormLIME aggregation. Two black boxes, the same weights in JAX and in numpy:

  * mlp: `xai_jax.models.make_model('mlp')`, 784 -> 200 -> 200 -> 10;
  * cnn: `make_model('cnn')`, conv3x3(16)-relu-maxpool2-conv3x3(32)-relu-
    maxpool2-dense128-relu-head; its numpy twin (im2col + matmul, 'SAME'
    padding like flax's nn.Conv) is checked against JAX to 1e-4 on a few
    rows before anything is timed.

Both are trained for a few hundred Adam steps on the training images (a few
seconds; random initialisation when the files are missing) so that the
explanations are not those of a constant function.

Rows of the table:
  a. xai_jax `normlime.fit` over 1,000 and 10,000 images per model: wall time
     after compilation (compiled first on a small call, whose time is
     reported), explanations per second, model rows per second achieved
     (images x 1,000 samples / wall time) against the jitted model's own best
     rows per second on this machine (efficiency). Target: 10,000 images in
     under 3 minutes; when the model alone needs longer (10M rows / its best
     rows/s, the floor), the row says so.
  b. lime.lime_image.LimeImageExplainer in a Python loop, on a few images per
     model (hide_color=0, top_labels=1, the same fixed 7x7 grid as
     segmentation_fn, all 1,000 samples in one classifier call), the numpy
     model as classifier_fn (lime makes the grayscale image RGB; the
     classifier reads the first channel). Ratio = xai_jax's explanations per
     second at 10,000 images / lime's (target >= 20x), and the mean per-image
     Pearson and Spearman correlation between lime's weights and xai_jax's
     LIME coefficients for the same images and class (independent random
     samples, so the agreement is approximate).
  c. lime.lime_tabular.LimeTabularExplainer (discretize_continuous=False,
     5,000 samples, the standardised training rows as training data) in a
     loop, against `normlime.fit(mode='tabular')` on all 569 rows, for an
     MLP 30 -> 200 -> 200 -> 2 trained on scikit-learn's breast cancer data.
     lime_tabular samples from the data distribution, so the perturbed rows
     do not depend on the instance and xai_jax evaluates them once per call.
  d. Peak memory of a fresh process running `normlime.fit` (mlp) over 1,000
     and over 10,000 images: `ru_maxrss` of the child and its VmHWM (the
     kernel's high-water mark of the process image), and their ratio. Bounded
     means the growth is about the data itself (10,000 x 784 x 4 bytes =
     31 MB), not the 10M perturbed rows (31 GB).

Each peer runs in a process of its own that never imports JAX
(`python normlime_speed.py --peer NAME --inputs in.npz --result out.npz`,
started by the main run): the weights, inputs and options go in through an
.npz in a temporary folder, timings and weights come back through another.

Run:  python benchmarks/normlime_speed.py [--quick] [--out results.json]
          [--skip mlp,cnn,peers,tabular,memory]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from typing import Any, Callable

import numpy as np

import peer_process

# A peer child (`--peer NAME`) imports numpy and its peer package only: no
# JAX, no xai_jax.
PEER_CHILD = __name__ == '__main__' and '--peer' in sys.argv[1:]

if not PEER_CHILD:
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')
  sys.path.insert(0, os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))))
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  import xai_jax  # pylint: disable=g-import-not-at-top
  from xai_jax import masking  # pylint: disable=g-import-not-at-top
  from xai_jax import models  # pylint: disable=g-import-not-at-top
  from xai_jax import normlime  # pylint: disable=g-import-not-at-top

IMAGE_SHAPE = (28, 28, 1)
PATCH = 4
NUM_SAMPLES = 1000
TABULAR_SAMPLES = 5000
TARGET_SECONDS = 180.0
TARGET_RATIO = 20.0


# ------------------------------------------------------- numpy black boxes
# Used by the peer children (numpy only) and, for the agreement check, by the
# main process. Weights: a flat dict 'layer/kernel', 'layer/bias'.
def _softmax(z: np.ndarray) -> np.ndarray:
  z = np.asarray(z, np.float64)
  z = np.exp(z - z.max(-1, keepdims=True))
  return z / z.sum(-1, keepdims=True)


def numpy_mlp_logits(w: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
  """The flax MLP (dense0, dense1, ..., head; ReLU) in numpy."""
  h = np.asarray(x, np.float32).reshape(len(x), -1)
  i = 0
  while f'dense{i}/kernel' in w:
    h = np.maximum(h @ w[f'dense{i}/kernel'] + w[f'dense{i}/bias'], 0)
    i += 1
  return h @ w['head/kernel'] + w['head/bias']


def _conv3x3_same(x: np.ndarray, k: np.ndarray, b: np.ndarray) -> np.ndarray:
  """flax nn.Conv((3, 3)) with 'SAME' padding, stride 1: im2col + matmul."""
  n, h, wd, c = x.shape
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  cols = np.stack([xp[:, i:i + h, j:j + wd, :] for i in range(3)
                   for j in range(3)], axis=3)                 # [n,h,w,9,c]
  return cols.reshape(n, h, wd, 9 * c) @ k.reshape(9 * c, -1) + b


def _maxpool2(x: np.ndarray) -> np.ndarray:
  n, h, wd, c = x.shape
  return x.reshape(n, h // 2, 2, wd // 2, 2, c).max(axis=(2, 4))


def numpy_cnn_logits(w: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
  """The flax CNN (conv1, conv2, dense1, head; eval mode) in numpy."""
  h = np.asarray(x, np.float32)
  for name in ('conv1', 'conv2'):
    h = _maxpool2(np.maximum(
        _conv3x3_same(h, w[f'{name}/kernel'], w[f'{name}/bias']), 0))
  h = h.reshape(len(h), -1)
  h = np.maximum(h @ w['dense1/kernel'] + w['dense1/bias'], 0)
  return h @ w['head/kernel'] + w['head/bias']


NUMPY_LOGITS = {'mlp': numpy_mlp_logits, 'cnn': numpy_cnn_logits,
                'tabular_mlp': numpy_mlp_logits}


def grid_segments(shape: tuple[int, int] = IMAGE_SHAPE[:2],
                  patch: int = PATCH) -> np.ndarray:
  """The fixed grid of `patch x patch` patches, numbered row-major (the
  numbering of `xai_jax.masking.patch_groups`)."""
  h, w = shape
  return ((np.arange(h)[:, None] // patch) * (w // patch)
          + np.arange(w)[None, :] // patch)


# ------------------------------------------------------------------- peers
def _spearman(a: np.ndarray, b: np.ndarray) -> float:
  ra = np.argsort(np.argsort(a)).astype(np.float64)
  rb = np.argsort(np.argsort(b)).astype(np.float64)
  return float(np.corrcoef(ra, rb)[0, 1])


def peer_lime_image(w: dict[str, np.ndarray], x: np.ndarray,
                    opts: dict[str, Any]) -> tuple[dict[str, Any], np.ndarray]:
  """lime_image.LimeImageExplainer in a loop; returns [N, 1 + G]: the
  explained label, then the weights of the G patches."""
  import lime  # pylint: disable=g-import-not-at-top
  from lime import lime_image  # pylint: disable=g-import-not-at-top
  logits = NUMPY_LOGITS[opts['model']]
  model_s = [0.0]

  def classifier_fn(imgs):
    t = time.perf_counter()
    p = _softmax(logits(w, np.asarray(imgs)[..., :1]))
    model_s[0] += time.perf_counter() - t
    return p
  seg = grid_segments()
  num_groups = int(seg.max()) + 1
  expl = lime_image.LimeImageExplainer(random_state=0)
  n = opts['num_samples']
  out = np.zeros((len(x), 1 + num_groups))
  t0, c0 = time.perf_counter(), time.process_time()
  for i in range(len(x)):
    e = expl.explain_instance(
        np.asarray(x[i, :, :, 0], np.float64), classifier_fn, top_labels=1,
        hide_color=0, num_samples=n, batch_size=n,
        segmentation_fn=lambda image: seg, random_seed=i)
    label = int(e.top_labels[0])
    out[i, 0] = label
    for j, v in e.local_exp[label]:
      out[i, 1 + j] = v
  t = time.perf_counter() - t0
  info = dict(images=len(x), num_samples=n, seconds=t,
              cpu_seconds=time.process_time() - c0,
              s_per_expl=t / len(x), expl_per_s=len(x) / t,
              model_seconds=model_s[0],
              version=getattr(lime, '__version__', '0.2.x'))
  return info, out


def peer_lime_tabular(w: dict[str, np.ndarray], x: np.ndarray,
                      opts: dict[str, Any], train: np.ndarray
                      ) -> tuple[dict[str, Any], np.ndarray]:
  """lime_tabular.LimeTabularExplainer (continuous features) in a loop;
  returns [N, 1 + d]: the explained label, then the d coefficients."""
  import lime  # pylint: disable=g-import-not-at-top
  from lime.lime_tabular import LimeTabularExplainer  # pylint: disable=g-import-not-at-top
  predict = lambda z: _softmax(numpy_mlp_logits(w, z))
  d = x.shape[1]
  expl = LimeTabularExplainer(train, mode='classification',
                              discretize_continuous=False, random_state=0)
  out = np.zeros((len(x), 1 + d))
  t0, c0 = time.perf_counter(), time.process_time()
  for i in range(len(x)):
    e = expl.explain_instance(x[i], predict, top_labels=1, num_features=d,
                              num_samples=opts['num_samples'])
    label = int(e.top_labels[0])
    out[i, 0] = label
    for j, v in e.local_exp[label]:
      out[i, 1 + j] = v
  t = time.perf_counter() - t0
  info = dict(rows=len(x), num_samples=opts['num_samples'], seconds=t,
              cpu_seconds=time.process_time() - c0, s_per_expl=t / len(x),
              expl_per_s=len(x) / t,
              version=getattr(lime, '__version__', '0.2.x'))
  return info, out


PEERS: dict[str, Callable[..., tuple[dict[str, Any], np.ndarray]]] = {
    'lime_image': peer_lime_image,
    'lime_tabular': peer_lime_tabular,
}


def run_peer(name: str, w: dict[str, np.ndarray], x: np.ndarray,
             opts: dict[str, Any], train: np.ndarray | None = None
             ) -> tuple[dict[str, Any], np.ndarray | None]:
  """`peer_process.run` for this file's peers (a fresh process, no JAX)."""
  return peer_process.run(__file__, name, w, x, opts, train)


# ------------------------------------------------------- data and models
def load_images(num_test: int, with_train: bool = True
                ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None,
                           str]:
  """Test images `[num_test, 28, 28, 1]`, training images and labels (None
  without the files or with `with_train=False`) and the data's name."""
  from xai_jax.data import fashion_mnist  # pylint: disable=g-import-not-at-top
  try:
    test = fashion_mnist.load_fashion_mnist('test')
    train = fashion_mnist.load_fashion_mnist('train') if with_train else None
  except FileNotFoundError:
    rng = np.random.RandomState(0)
    x = rng.uniform(0, 1, (num_test, *IMAGE_SHAPE)).astype(np.float32)
    return x, None, None, 'random images in [0, 1] (Fashion-MNIST not found)'
  x = test.x
  if num_test > len(x):      # more than the 10,000 test images: repeat them
    x = np.concatenate([x] * (-(-num_test // len(x))))
  return (np.ascontiguousarray(x[:num_test]),
          None if train is None else train.x,
          None if train is None else train.y, 'Fashion-MNIST test images')


def train_box(name: str, num_classes: int, input_shape: tuple[int, ...],
              x: np.ndarray | None, y: np.ndarray | None, steps: int,
              seed: int = 0):
  """A linen black box (logits): Adam for `steps` steps on (x, y), or the
  random initialisation when there is no data or `steps == 0`."""
  import optax  # pylint: disable=g-import-not-at-top
  module = models.make_model(name, num_classes=num_classes)
  key = jax.random.key(seed)
  params = module.init(key, jnp.zeros((2, *input_shape)))['params']
  info = dict(train_steps=0, train_seconds=0.0)
  if x is not None and steps > 0:
    tx = optax.adam(1e-3)
    opt = tx.init(params)

    @jax.jit
    def step(params, opt, xb, yb):
      def loss(p):
        logits = module.apply({'params': p}, xb)
        return optax.softmax_cross_entropy_with_integer_labels(
            logits, yb).mean()
      lv, g = jax.value_and_grad(loss)(params)
      upd, opt = tx.update(g, opt, params)
      return optax.apply_updates(params, upd), opt, lv
    rng = np.random.RandomState(seed)
    t = time.perf_counter()
    for _ in range(steps):
      idx = rng.randint(0, len(x), 128)
      params, opt, lv = step(params, opt, jnp.asarray(x[idx]),
                             jnp.asarray(y[idx]))
    info = dict(train_steps=steps, train_seconds=time.perf_counter() - t,
                final_loss=float(lv))
  box = xai_jax.from_linen(module, {'params': params},
                           input_shape=input_shape, name=name)
  return box, info


def numpy_weights(box) -> dict[str, np.ndarray]:
  """The box's linen params as a flat numpy dict 'layer/kernel'."""
  flat = {}
  for layer, leaves in box.params['params'].items():
    for k, v in leaves.items():
      flat[f'{layer}/{k}'] = np.asarray(v, np.float32)
  return flat


def check_numpy_twin(name: str, box, w: dict[str, np.ndarray],
                     x: np.ndarray) -> dict[str, Any]:
  """Max |numpy - JAX| of the logits and probabilities on a few rows."""
  ref = np.asarray(jax.jit(lambda z: box.apply_fn(box.params, z))(
      jnp.asarray(x)), np.float64)
  ours = np.asarray(NUMPY_LOGITS[name](w, x), np.float64)
  err_logits = float(np.max(np.abs(ours - ref)))
  err_probs = float(np.max(np.abs(_softmax(ours) - _softmax(ref))))
  return dict(rows=len(x), max_abs_err_logits=err_logits,
              max_abs_err_probs=err_probs,
              match_1e4=bool(err_logits < 1e-4 and err_probs < 1e-4))


# ----------------------------------------------------------------- timing
def model_best_rows_per_s(box, input_shape: tuple[int, ...],
                          batches=(1024, 4096, 16384)) -> dict[str, float]:
  """Best rows/s of the jitted model alone over a few batch sizes."""
  f = jax.jit(lambda z: box.apply_fn(box.params, z))
  best = dict(rows_per_s=0.0, best_batch=0)
  for n in batches:
    z = jax.random.uniform(jax.random.key(0), (n, *input_shape))
    f(z).block_until_ready()
    reps = max(2, 50000 // n)
    t = float('inf')
    for _ in range(reps):
      t0 = time.perf_counter()
      f(z).block_until_ready()
      t = min(t, time.perf_counter() - t0)
    if n / t > best['rows_per_s']:
      best = dict(rows_per_s=n / t, best_batch=n)
  return best


def chunk_shape(n: int, examples_per_chunk: int) -> int:
  """Images per streamed LIME call of normlime.fit on n images (its even
  chunks: ceil(n / ceil(n / examples_per_chunk)))."""
  num = -(-n // examples_per_chunk)
  return -(-n // num)


def _block(tree: Any) -> Any:
  return jax.block_until_ready(tree)


def time_fit(box, x: np.ndarray, groups, key, **overrides
             ) -> tuple[float, float, Any]:
  """Wall and CPU seconds of one normlime.fit call (outputs blocked)."""
  t, c = time.perf_counter(), time.process_time()
  explainer = normlime.fit(key, box, x, groups=groups, **overrides)
  _block(explainer.maps)
  return time.perf_counter() - t, time.process_time() - c, explainer


def local_coefficients(local) -> tuple[np.ndarray, np.ndarray]:
  """LocalExplanations -> dense weights [n, F] and labels [n]."""
  wts = np.asarray(local.weights, np.float64)
  ids = np.asarray(local.feature_ids)
  dense = np.zeros((wts.shape[0], int(local.num_features)))
  valid = (ids >= 0) & (ids < dense.shape[1])
  rows = np.broadcast_to(np.arange(wts.shape[0])[:, None], ids.shape)
  dense[rows[valid], ids[valid]] = wts[valid]
  return dense, np.asarray(local.labels)


def agreement(ours: np.ndarray, our_labels: np.ndarray,
              peer: np.ndarray) -> dict[str, Any]:
  """Mean per-row Pearson and Spearman correlation of xai_jax's and the
  peer's weights (peer rows: label, weights), on rows where both explained
  the same class."""
  same = our_labels == peer[:, 0].astype(int)
  pear, spear = [], []
  for a, b in zip(ours[same], peer[same, 1:]):
    if np.std(a) > 0 and np.std(b) > 0:
      pear.append(float(np.corrcoef(a, b)[0, 1]))
      spear.append(_spearman(a, b))
  return dict(same_label_rows=int(same.sum()), rows=len(peer),
              mean_pearson=float(np.mean(pear)) if pear else float('nan'),
              mean_spearman=float(np.mean(spear)) if spear else float('nan'))


# ------------------------------------------------------------ benchmarks
def bench_images(name: str, args, res: dict, data: dict) -> None:
  """Rows a and b for one image model."""
  x_all = data['x']
  groups = masking.patch_groups(IMAGE_SHAPE, PATCH)
  box, tinfo = train_box(name, 10, IMAGE_SHAPE, data['train_x'],
                         data['train_y'], args.train_steps)
  w = numpy_weights(box)
  check = check_numpy_twin(name, box, w, x_all[:8])
  model = model_best_rows_per_s(box, IMAGE_SHAPE, args.model_batches)
  out: dict[str, Any] = dict(train=tinfo, numpy_twin=check, model=model,
                             sizes={})
  res[name] = out
  if not check['match_1e4']:
    raise SystemExit(f'numpy {name} does not match JAX: {check}')
  key = jax.random.key(0)
  # Compilation: normlime.fit streams LIME over chunks of at most
  # `examples_per_chunk` images, padded to one shape per call, so one call
  # per chunk shape compiles everything the timed calls run (but the small
  # jitted label and aggregation steps, compiled per data set size).
  epc = int(normlime.default_config().examples_per_chunk)
  shapes = sorted({chunk_shape(s, epc) for s in args.sizes})
  out['compile_calls'] = []
  for shape in shapes:
    t, _, _ = time_fit(box, x_all[:shape], groups, key)
    out['compile_calls'].append(dict(images=shape, seconds=t))
  for size in args.sizes:
    x = x_all[:size]
    t, c, explainer = time_fit(box, x, groups, key)
    rows = size * NUM_SAMPLES
    out['sizes'][str(size)] = dict(
        images=size, seconds=t, cpu_seconds=c, expl_per_s=size / t,
        model_rows_per_s=rows / t,
        efficiency=rows / t / model['rows_per_s'],
        model_floor_seconds=rows / model['rows_per_s'],
        finite=bool(np.all(np.isfinite(np.asarray(explainer.maps.global_)))))
  # Compilation time: the first call at a chunk shape minus a compiled call
  # on the same images.
  for cc in out['compile_calls']:
    same = out['sizes'].get(str(cc['images']))
    if same is not None:
      cc['compile_seconds'] = max(0.0, cc['seconds'] - same['seconds'])
  big = out['sizes'][str(max(args.sizes))]
  floor_10k = 10_000 * NUM_SAMPLES / model['rows_per_s']
  out['target'] = dict(
      images=max(args.sizes), seconds=big['seconds'],
      seconds_at_10000=10_000 / big['expl_per_s'],
      model_floor_seconds_at_10000=floor_10k,
      target_seconds=TARGET_SECONDS,
      hit=bool(10_000 / big['expl_per_s'] < TARGET_SECONDS),
      model_bound=bool(floor_10k > TARGET_SECONDS))
  if args.no_peers:
    return
  m = args.peer_images
  info, peer = run_peer('lime_image', w, x_all[:m],
                        dict(model=name, num_samples=NUM_SAMPLES))
  if peer is not None:
    local = normlime.local_explanations(jax.random.key(1), box, x_all[:m],
                                        groups=groups)
    ours, labels = local_coefficients(local)
    info['agreement'] = agreement(ours, labels, peer)
    info['ratio'] = big['expl_per_s'] / info['expl_per_s']
  out['lime_image'] = info


def bench_tabular(args, res: dict) -> None:
  """Row c: breast cancer, MLP 30 -> 200 -> 200 -> 2."""
  from sklearn.datasets import load_breast_cancer  # pylint: disable=g-import-not-at-top
  xb, yb = load_breast_cancer(return_X_y=True)
  xb = ((xb - xb.mean(0)) / xb.std(0)).astype(np.float32)
  yb = yb.astype(np.int32)
  box, tinfo = train_box('mlp', 2, (xb.shape[1],), xb, yb, args.train_steps)
  w = numpy_weights(box)
  check = check_numpy_twin('tabular_mlp', box, w, xb[:8])
  key = jax.random.key(2)
  # normlime's tabular LIME standardises with the statistics of the rows it
  # explains (all 569): the StandardScaler lime_tabular fits on `train=xb`.
  opts = dict(mode='tabular', num_samples=TABULAR_SAMPLES)
  time_fit(box, xb, None, key, **opts)                       # compile
  t, c, _ = time_fit(box, xb, None, key, **opts)
  out: dict[str, Any] = dict(train=tinfo, numpy_twin=check, rows=len(xb),
                             features=xb.shape[1],
                             num_samples=TABULAR_SAMPLES, seconds=t,
                             cpu_seconds=c, expl_per_s=len(xb) / t)
  res['tabular'] = out
  if args.no_peers:
    return
  m = args.tabular_rows
  info, peer = run_peer('lime_tabular', w, xb[:m],
                        dict(num_samples=TABULAR_SAMPLES), train=xb)
  if peer is not None:
    local = normlime.local_explanations(key, box, xb, **opts)
    ours, labels = local_coefficients(local)
    info['agreement'] = agreement(ours[:m], labels[:m], peer)
    info['ratio'] = out['expl_per_s'] / info['expl_per_s']
  out['lime_tabular'] = info


def _vm_kib(field: str) -> int:
  with open('/proc/self/status') as f:
    for line in f:
      if line.startswith(field + ':'):
        return int(line.split()[1])
  return -1


def memory_child_main(size: int) -> None:
  """Body of a memory child: normlime.fit (mlp) over `size` images."""
  x, _, _, _ = load_images(size, with_train=False)
  box, _ = train_box('mlp', 10, IMAGE_SHAPE, None, None, 0)
  groups = masking.patch_groups(IMAGE_SHAPE, PATCH)
  x = jnp.asarray(x).block_until_ready()
  before = _vm_kib('VmRSS')
  t = time.perf_counter()
  explainer = normlime.fit(jax.random.key(0), box, x, groups=groups)
  _block(explainer.maps)
  t = time.perf_counter() - t
  print(json.dumps(dict(
      images=size, rss_before_kib=before, vm_hwm_kib=_vm_kib('VmHWM'),
      ru_maxrss_kib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
      seconds=t)))


def bench_memory(args, res: dict) -> None:
  out = {}
  for size in args.memory_sizes:
    # Through a shell that forks the child (`; exit $?` keeps it from
    # exec-ing it in place): Linux carries ru_maxrss across exec, so a child
    # exec-ed straight from this process would report this process's peak.
    proc = subprocess.run(
        ['sh', '-c', '"$0" "$@"; exit $?', sys.executable,
         os.path.abspath(__file__), '--memory_child', str(size)],
        capture_output=True, text=True, check=False)
    if proc.returncode != 0:
      out[str(size)] = dict(failed=proc.stderr[-2000:])
      continue
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    out[str(size)] = dict(
        images=size, rss_before_mib=r['rss_before_kib'] / 1024,
        peak_rss_mib=r['ru_maxrss_kib'] / 1024,
        vm_hwm_mib=r['vm_hwm_kib'] / 1024, seconds_incl_compile=r['seconds'])
  sizes = [str(s) for s in args.memory_sizes]
  if all('peak_rss_mib' in out[s] for s in sizes):
    lo, hi = out[sizes[0]], out[sizes[-1]]
    out['ratio'] = hi['peak_rss_mib'] / lo['peak_rss_mib']
    out['growth_mib'] = hi['peak_rss_mib'] - lo['peak_rss_mib']
    out['data_growth_mib'] = ((int(sizes[-1]) - int(sizes[0])) *
                              int(np.prod(IMAGE_SHAPE)) * 4 / 2 ** 20)
    out['perturbed_rows_gib'] = (int(sizes[-1]) * NUM_SAMPLES *
                                 int(np.prod(IMAGE_SHAPE)) * 4 / 2 ** 30)
  res['memory'] = out


# ------------------------------------------------------------------ report
def table(res: dict) -> list[tuple[str, ...]]:
  rows = []

  def add(name, ours, peer, ratio, target, hit=None):
    rows.append((name, ours, peer, ratio, f'{target} -> ' +
                 ('HIT' if hit else 'MISS') if hit is not None else target))
  for name in ('mlp', 'cnn'):
    if name not in res:
      continue
    r = res[name]
    tw = r['numpy_twin']
    add(f'{name}: numpy twin vs JAX (max |err|)',
        f"{tw['max_abs_err_logits']:.1e}", 'logits',
        f"probs {tw['max_abs_err_probs']:.1e}", '< 1e-4', tw['match_1e4'])
    for cc in r['compile_calls']:
      add(f"{name}: first call, {cc['images']:,} images (s)",
          f"{cc['seconds']:.1f}",
          f"compile ~{cc['compile_seconds']:.1f}" if 'compile_seconds' in cc
          else '', '', 'info')
    for s in r['sizes'].values():
      add(f"{name}: normlime.fit {s['images']:,} images (s)",
          f"{s['seconds']:.1f}", f"floor {s['model_floor_seconds']:.1f}",
          f"{s['expl_per_s']:.0f} expl/s", 'info')
      add(f"  model rows/s (efficiency)", f"{s['model_rows_per_s'] / 1e3:.0f}k",
          f"model best {r['model']['rows_per_s'] / 1e3:.0f}k",
          f"{100 * s['efficiency']:.0f}%", 'info')
    tg = r['target']
    note = ('model-bound: floor ' f"{tg['model_floor_seconds_at_10000']:.0f} s"
            if tg['model_bound'] else
            f"floor {tg['model_floor_seconds_at_10000']:.0f} s")
    measured = ('measured' if tg['images'] >= 10_000 else
                f"extrapolated from {tg['images']:,}")
    add(f'{name}: 10,000 images (s, {measured})',
        f"{tg['seconds_at_10000']:.0f}", note, '', '< 180 s', tg['hit'])
    li = r.get('lime_image', {})
    if 'expl_per_s' in li:
      add(f"{name}: lime_image loop, {li['images']} images (s/expl)",
          f"{1 / r['sizes'][str(max(int(k) for k in r['sizes']))]['expl_per_s']:.4f}",
          f"{li['s_per_expl']:.3f}", f"{li['ratio']:.0f}x", '>= 20x',
          li['ratio'] >= TARGET_RATIO)
      ag = li['agreement']
      add('  agreement with lime (mean corr)',
          f"pearson {ag['mean_pearson']:.2f}",
          f"spearman {ag['mean_spearman']:.2f}",
          f"{ag['same_label_rows']}/{ag['rows']} same label", 'info')
      add("  lime's time in the numpy model (s/expl)", '',
          f"{li['model_seconds'] / li['images']:.3f}",
          f"{100 * li['model_seconds'] / li['seconds']:.0f}%", 'info')
    elif li:
      why = li.get('skipped') or li.get('failed', '').strip().splitlines()[-1]
      add(f'{name}: lime_image not run', '', why[:60], '', 'info')
  if 'tabular' in res:
    tb = res['tabular']
    lt = tb.get('lime_tabular', {})
    add(f"tabular d=30, {tb['num_samples']} samples, {tb['rows']} rows "
        '(expl/s)', f"{tb['expl_per_s']:.0f}",
        f"{lt['expl_per_s']:.1f}" if 'expl_per_s' in lt else '',
        f"{lt['ratio']:.0f}x" if 'ratio' in lt else '', '>= 20x',
        lt['ratio'] >= TARGET_RATIO if 'ratio' in lt else None)
    if 'agreement' in lt:
      ag = lt['agreement']
      add('  agreement with lime (mean corr)',
          f"pearson {ag['mean_pearson']:.2f}",
          f"spearman {ag['mean_spearman']:.2f}",
          f"{ag['same_label_rows']}/{ag['rows']} same label", 'info')
  peers = [(n, res[n][p]) for n in ('mlp', 'cnn') if n in res
           for p in ('lime_image',) if p in res[n]]
  if 'tabular' in res and 'lime_tabular' in res['tabular']:
    peers.append(('tabular', res['tabular']['lime_tabular']))
  ran = [(n, i) for n, i in peers if 'jax_loaded' in i]
  if ran:
    clean = sum(not i['jax_loaded'] for _, i in ran)
    add('peers in processes without JAX', '', '', f'{clean}/{len(ran)}',
        'all', clean == len(ran))
  if 'memory' in res:
    mem = res['memory']
    for k, m in mem.items():
      if isinstance(m, dict) and 'peak_rss_mib' in m:
        add(f"peak RSS, fit mlp {m['images']:,} images (MiB)",
            f"{m['peak_rss_mib']:.0f}", f"VmHWM {m['vm_hwm_mib']:.0f}",
            f"before {m['rss_before_mib']:.0f}", 'info')
      elif isinstance(m, dict) and 'failed' in m:
        add(f'peak RSS {k} images: failed', '',
            m['failed'].strip().splitlines()[-1][:60], '', 'info')
    if 'ratio' in mem:
      add('  peak RSS ratio (growth MiB)', f"{mem['ratio']:.2f}x",
          f"+{mem['growth_mib']:.0f} MiB",
          f"data +{mem['data_growth_mib']:.0f} MiB",
          f"bounded (rows: {mem['perturbed_rows_gib']:.0f} GiB)",
          mem['growth_mib'] < 4 * mem['data_growth_mib'] + 256)
  return rows


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--quick', action='store_true',
                 help='fewer images and peer explanations (under a minute)')
  p.add_argument('--out', default=None, help='write the results as JSON')
  p.add_argument('--skip', default='', help='comma list of: mlp,cnn,peers,'
                 'tabular,memory')
  args = p.parse_args(argv)
  q = args.quick
  args.sizes = (300,) if q else (1000, 10_000)
  args.cnn_sizes = (50,) if q else (1000, 10_000)
  args.memory_sizes = (100, 300) if q else (1000, 10_000)
  args.peer_images = 2 if q else 20
  args.tabular_rows = 3 if q else 20
  args.train_steps = 20 if q else 300
  args.model_batches = (1024, 4096) if q else (1024, 4096, 16384)
  skip = set(filter(None, args.skip.split(',')))
  args.no_peers = 'peers' in skip
  res: dict[str, Any] = dict(
      load_average_start=os.getloadavg(), cpus=os.cpu_count(),
      python=platform.python_version(), jax=jax.__version__,
      platform=platform.platform(), quick=q, num_samples=NUM_SAMPLES,
      patches=(IMAGE_SHAPE[0] // PATCH) ** 2)
  t_all = time.perf_counter()
  x, tx, ty, data_name = load_images(max(args.sizes + args.cnn_sizes))
  res['data'] = data_name
  data = dict(x=x, train_x=tx, train_y=ty)
  sizes = args.sizes
  res['section_seconds'] = {}
  for name in ('mlp', 'cnn'):
    if name in skip:
      continue
    args.sizes = sizes if name == 'mlp' else args.cnn_sizes
    t = time.perf_counter()
    bench_images(name, args, res, data)
    res['section_seconds'][name] = time.perf_counter() - t
  args.sizes = sizes
  for name, bench in (('tabular', bench_tabular), ('memory', bench_memory)):
    if name not in skip:
      t = time.perf_counter()
      bench(args, res)
      res['section_seconds'][name] = time.perf_counter() - t
  res['total_seconds'] = time.perf_counter() - t_all
  res['load_average_end'] = os.getloadavg()
  rows = table(res)
  head = ('metric', 'xai_jax', 'peer / reference', 'ratio', 'target')
  widths = [max(len(r[i]) for r in rows + [head]) for i in range(5)]
  print(f"data: {data_name}; {res['patches']} patches, {NUM_SAMPLES} LIME "
        'samples per image')
  for r in [head] + rows:
    print('  '.join(c.ljust(wd) for c, wd in zip(r, widths)).rstrip())
  print('seconds per part: ' + ', '.join(
      f'{k} {v:.0f}' for k, v in res['section_seconds'].items()))
  print(f"load average start {res['load_average_start']}, end "
        f"{res['load_average_end']}; {res['cpus']} CPUs; total "
        f"{res['total_seconds']:.0f} s")
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(res, f, indent=1, default=float)
  return res


if __name__ == '__main__':
  if PEER_CHILD:
    peer_process.child_main(sys.argv[1:], PEERS)
  elif '--memory_child' in sys.argv[1:]:
    memory_child_main(int(sys.argv[sys.argv.index('--memory_child') + 1]))
  else:
    main()
