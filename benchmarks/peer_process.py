"""A peer library (shap, lime, captum) in a process of its own, without JAX.

The side-by-side benchmarks time xai_jax in their main process and every
peer in a fresh child process that imports numpy and the peer only, so
neither competes with the other's threads or memory:

    # in the benchmark script (run as `python benchmarks/<name>.py`)
    PEERS = {'lime_image': peer_lime_image, ...}   # fn(w, x, opts, [train])
    info, values = peer_process.run(__file__, 'lime_image', weights, x, opts)
    ...
    if '--peer' in sys.argv[1:]:
      peer_process.child_main(sys.argv[1:], PEERS)

The weights, inputs and options go in through an .npz in a temporary folder,
the timings and values come back through another. `info['jax_loaded']` and
`info['xai_jax_loaded']` record whether the child ever imported them.
Imports numpy and the standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from typing import Any, Callable, Mapping

import numpy as np

PeerFn = Callable[..., tuple[dict[str, Any], np.ndarray]]


def child_main(argv: list[str], peers: Mapping[str, PeerFn]) -> None:
  """The body of a peer process: `--peer NAME --inputs in.npz --result out.npz`.

  Calls `peers[NAME](weights, x, options[, train=])`; a peer whose package is
  missing (ImportError) is reported as `skipped`.
  """
  p = argparse.ArgumentParser()
  p.add_argument('--peer', required=True, choices=sorted(peers))
  p.add_argument('--inputs', required=True)
  p.add_argument('--result', required=True)
  args = p.parse_args(argv)
  data = np.load(args.inputs)
  w = {k[2:]: data[k] for k in data.files if k.startswith('w:')}
  opts = json.loads(str(data['options']))
  extra = {'train': data['train']} if 'train' in data.files else {}
  try:
    info, values = peers[args.peer](w, data['x'], opts, **extra)
  except ImportError as e:
    info, values = dict(skipped=str(e)), np.zeros((0,))
  # The point of the separate process: the peer ran without JAX loaded.
  info['jax_loaded'] = 'jax' in sys.modules
  info['xai_jax_loaded'] = 'xai_jax' in sys.modules
  info['pid'] = os.getpid()
  np.savez(args.result, values=values, info=json.dumps(info))


def run(script: str, name: str, w: Mapping[str, np.ndarray], x: np.ndarray,
        opts: Mapping[str, Any], train: np.ndarray | None = None
        ) -> tuple[dict[str, Any], np.ndarray | None]:
  """Runs peer `name` of `script` in a fresh process; returns (info, values).

  Args:
    script: the benchmark file whose `child_main` serves `--peer`.
    name: the peer's key in that file's peers.
    w: the model's weights (numpy arrays).
    x: the rows to explain (sent as float32).
    opts: JSON-serialisable options of the peer.
    train: optional training rows (e.g. lime_tabular's data statistics).
  Returns:
    the child's `info` (timings, versions, `jax_loaded`) and its values;
    a child that fails gives `failed` (its stderr's tail) and None.
  """
  with tempfile.TemporaryDirectory(prefix='xai_jax_peer_') as tmp:
    inputs = os.path.join(tmp, 'inputs.npz')
    result = os.path.join(tmp, 'result.npz')
    arrays = {f'w:{k}': v for k, v in w.items()}
    arrays.update(x=np.ascontiguousarray(x, np.float32),
                  options=json.dumps(dict(opts)))
    if train is not None:
      arrays['train'] = train
    np.savez(inputs, **arrays)
    proc = subprocess.run(
        [sys.executable, os.path.abspath(script), '--peer', name,
         '--inputs', inputs, '--result', result],
        capture_output=True, text=True, check=False,
        env=dict(os.environ, TQDM_DISABLE='1'))
    if proc.returncode != 0 or not os.path.exists(result):
      return dict(failed=proc.stderr[-2000:]), None
    out = np.load(result)
    info = json.loads(str(out['info']))
    return info, (None if 'skipped' in info else np.asarray(out['values']))
