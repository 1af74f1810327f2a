"""Attribution methods on 4 fake CPU devices: inputs placed on a data mesh.

Runs in a subprocess (XLA_FLAGS must be set before JAX starts). The methods
are vmaps over the batch, so a batch sharded over `Mesh('data')` is explained
on every device; the results must equal the single-device ones.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent("""
    import json
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from xai_jax import blackbox as bb
    from xai_jax.attribution import gradients, perturbation, shap
    import importlib
    xlime = importlib.import_module('xai_jax.attribution.lime')

    k1, k2, kx = jax.random.split(jax.random.key(0), 3)
    w1 = jax.random.normal(k1, (8, 16)) / 3.0
    w2 = jax.random.normal(k2, (16, 3))
    box = bb.from_jax(lambda p, x: jnp.tanh(x @ p[0]) @ p[1], params=(w1, w2),
                      input_shape=(8,))
    x = jax.random.normal(kx, (16, 8))
    mesh = Mesh(np.array(jax.devices()), ('data',))
    xs = jax.device_put(x, NamedSharding(mesh, P('data')))
    key = jax.random.key(1)
    calls = {
        'integrated_gradients': lambda v: gradients.integrated_gradients(
            box, v, target=0, steps=16),
        'smoothgrad': lambda v: gradients.smoothgrad(box, v, target=0,
                                                     key=key, num_samples=8),
        'occlusion': lambda v: perturbation.occlusion(box, v, target=0),
        'exact_shapley': lambda v: shap.exact_shapley(box, v, target=0),
        'kernel_shap': lambda v: shap.kernel_shap(box, v, target=0, key=key,
                                                  num_samples=100),
        'permutation_shap': lambda v: shap.permutation_shap(
            box, v, target=0, key=key, num_permutations=4),
        'lime': lambda v: xlime.lime(box, v, target=0, key=key,
                                     num_samples=300, data=x),
    }
    out = {'devices': jax.device_count()}
    for name, fn in calls.items():
      one = np.asarray(fn(x))
      many = fn(xs)
      out[name] = {'max_diff': float(np.abs(np.asarray(many) - one).max()),
                   'scale': float(np.abs(one).max()),
                   'num_devices': len(many.sharding.device_set)}
    print('RESULT' + json.dumps(out))
""")


@pytest.mark.slow
def test_sharded_batch_equals_single_device():
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4',
             JAX_PLATFORMS='cpu')
  proc = subprocess.run([sys.executable, '-c', SCRIPT], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith('RESULT')][-1]
  out = json.loads(line[len('RESULT'):])
  assert out['devices'] == 4
  for name, r in out.items():
    if name == 'devices':
      continue
    assert r['max_diff'] <= 1e-4 * max(1.0, r['scale']), (name, r)
    assert r['num_devices'] == 4, (name, r)   # the output stays sharded
