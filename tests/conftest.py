"""Shared pytest setup: CPU-only, a fixed hypothesis profile, data helpers."""

import os
import sys

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hypothesis import settings  # pylint: disable=g-import-not-at-top

settings.register_profile('xai_jax', deadline=None, max_examples=25,
                          derandomize=True)
settings.load_profile('xai_jax')


# ------------------------------------------------- latent bottleneck toys
import flax.linen as nn  # pylint: disable=g-import-not-at-top
import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top


class _RegionNet(nn.Module):
  """Class 1 iff the top-left 4x4 region of an 8x8 image is bright: a 1x1
  conv (all-ones weights: the split point), then a fixed read-out of that
  region; the rest of the image is ignored."""

  @nn.compact
  def __call__(self, x):
    h = nn.Conv(4, (1, 1), name='conv')(x)                  # [b, 8, 8, 4]
    region = jnp.mean(h[:, :4, :4, :], axis=(1, 2, 3))
    rest = jnp.mean(h[:, 4:, :, :], axis=(1, 2, 3)) * 0.0
    s = 60.0 * (region - 0.5) + rest
    return jnp.stack([-s, s], axis=-1)


@pytest.fixture(scope='session')
def region_box():
  """The `_RegionNet` black box split at 'conv' (IBA / InputIBA tests)."""
  from xai_jax import blackbox as bb  # pylint: disable=g-import-not-at-top
  m = _RegionNet()
  v = m.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
  v = jax.tree_util.tree_map(lambda a: jnp.ones_like(a) if a.ndim == 4
                             else jnp.zeros_like(a), v)
  return bb.from_linen(m, v, input_shape=(8, 8, 1), split_at='conv')


def region_data(n, seed=0):
  """`[n, 8, 8, 1]` uniform images for `region_box`."""
  return jax.random.uniform(jax.random.key(seed), (n, 8, 8, 1))
