"""Every registered method follows the explainer protocol (xai_jax.protocol)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import xai_jax as xj
from xai_jax import blackbox as bb
from xai_jax import masking
from xai_jax import protocol

C = 3
SHAPE = (8, 8, 1)


class _Net(nn.Module):

  @nn.compact
  def __call__(self, x):
    a = nn.relu(nn.Conv(4, (3, 3), name='conv')(x))
    return nn.Dense(C, name='head')(jnp.mean(a, axis=(1, 2)))


@pytest.fixture(scope='module')
def image_box():
  m = _Net()
  v = m.init(jax.random.key(0), jnp.zeros((1, *SHAPE)))
  return bb.from_linen(m, v, input_shape=SHAPE, split_at='conv')


@pytest.fixture(scope='module')
def images():
  return np.random.default_rng(0).uniform(size=(4, *SHAPE)).astype(np.float32)


GROUPS = masking.patch_groups(SHAPE, 4)  # 4 patches
# Small budgets so every method runs in well under a second.
OVERRIDES = {
    'smoothgrad': dict(num_samples=4),
    'integrated_gradients': dict(steps=8),
    'occlusion': dict(groups=GROUPS),
    'rise': dict(num_masks=32, grid=2),
    'lime': dict(mode='groups', groups=GROUPS, num_samples=64),
    'exact_shapley': dict(groups=GROUPS),
    'kernel_shap': dict(groups=GROUPS, num_samples=10),
    'permutation_shap': dict(groups=GROUPS, num_permutations=4),
}
ATTRIBUTION = sorted(protocol.ATTRIBUTION_EXPLAINERS)


def test_registry_lists_l2x_and_every_attribution_method():
  assert 'l2x' in xj.EXPLAINERS
  assert set(xj.attribution.METHODS) <= set(xj.EXPLAINERS)
  for name, method in xj.EXPLAINERS.items():
    for fn in ('default_config', 'fit', 'explain'):
      assert callable(getattr(method, fn)), (name, fn)
    assert isinstance(method.default_config(), ml_collections.ConfigDict)


@pytest.mark.parametrize('name', ATTRIBUTION)
def test_attribution_method_under_the_protocol(name, image_box, images):
  method = xj.EXPLAINERS[name]
  explainer = method.fit(0, image_box, images, **OVERRIDES.get(name, {}))
  out = method.explain(explainer, images, key=1, target=2)
  assert isinstance(out, xj.Explanation)
  assert out.mask is None
  grouped = 'groups' in OVERRIDES.get(name, {})
  assert out.scores.shape == ((4, GROUPS.num_groups) if grouped
                              else (4, *SHAPE))
  assert bool(jnp.all(jnp.isfinite(out.scores)))
  # The protocol returns exactly what the one-call function returns.
  fn = xj.attribution.METHODS[name]
  kw = dict(OVERRIDES.get(name, {}))
  if 'key' in fn.__code__.co_varnames[:fn.__code__.co_argcount
                                      + fn.__code__.co_kwonlyargcount]:
    kw['key'] = jax.random.key(1)
  np.testing.assert_array_equal(out.scores,
                                fn(image_box, images, target=2, **kw))


def test_unknown_override_lists_the_valid_fields(image_box, images):
  with pytest.raises(ValueError, match=r"Unknown kernel_shap override field"
                     r"\(s\) \['num_sample'\] \(did you mean "
                     r"'num_samples'\?\); valid fields: .*num_samples"):
    xj.EXPLAINERS['kernel_shap'].fit(0, image_box, images, num_sample=10)
  with pytest.raises(ValueError, match=r"Unknown saliency config field"):
    xj.EXPLAINERS['saliency'].fit(0, image_box, images,
                                  config={'steps': 3})


def test_explainer_of_another_method_is_refused(image_box, images):
  e = xj.EXPLAINERS['saliency'].fit(0, image_box, images)
  with pytest.raises(ValueError, match="fitted by 'saliency'"):
    xj.EXPLAINERS['grad_x_input'].explain(e, images)


def test_merge_config_overrides_win_and_defaults_stay_untouched():
  d = ml_collections.ConfigDict({'tau': 0.1, 'k': 2})
  merged = protocol.merge_config(d, {'tau': 0.5}, {'k': 3}, method='m')
  assert (merged.tau, merged.k) == (0.5, 3)
  assert (d.tau, d.k) == (0.1, 2)
  with pytest.raises(ValueError, match=r"m config field 'k'"):
    protocol.merge_config(d, None, {'k': 'three'}, method='m')
  with pytest.raises(ValueError, match='config must be an ml_collections'):
    protocol.merge_config(d, 3, None)
  assert protocol.peek('k', {'k': 1}, {'k': 2}) == 2
  assert protocol.peek('k', {'k': 1}, {}) == 1
  assert protocol.peek('tau', None, {}, 0.1) == 0.1


def test_l2x_under_the_protocol():
  ds = xj.data.make_tabular('xor', n=2000, key_or_seed=0)
  method = xj.EXPLAINERS['l2x']
  cfg = method.default_config()
  explainer = method.fit(0, ds.probs, ds.x, cfg, k=2, num_steps=20,
                         batch_size=100)
  out = method.explain(explainer, ds.x[:7])
  assert isinstance(out, xj.Explanation)
  assert out.scores.shape == (7, 10) and out.mask.shape == (7, 10)
  np.testing.assert_array_equal(np.asarray(out.mask).sum(-1), 2)
  # The mask is the top-k of the scores.
  top = np.argsort(-np.asarray(out.scores), -1)[:, :2]
  assert np.all(np.take_along_axis(np.asarray(out.mask), top, -1) == 1)
  with pytest.raises(ValueError, match='valid fields'):
    method.fit(0, ds.probs, ds.x, k=2, taus=0.5)


def test_misspelt_field_suggests_the_closest_name():
  from xai_jax import l2x  # pylint: disable=g-import-not-at-top
  p = np.full((20, 2), 0.5, np.float32)
  x = np.zeros((20, 4), np.float32)
  # A misspelt field in config= or as an override never trains silently.
  with pytest.raises(ValueError, match=r"Unknown l2x config field\(s\) "
                     r"\['smapler'\] \(did you mean 'sampler'\?\)"):
    l2x.fit(0, p, x, k=2, config={'smapler': 'subset'})
  with pytest.raises(ValueError, match=r"\['tua'\] \(did you mean 'tau'\?\)"):
    l2x.fit(0, p, x, k=2, tua=0.5)
  # Several unknown names: one hint each; no hint for a name far from all.
  defaults = l2x.default_config()
  with pytest.raises(ValueError) as e:
    protocol.merge_config(defaults, {'smapler': 1, 'tua': 2, 'zzzq': 3},
                          method='l2x')
  msg = str(e.value)
  assert ("(did you mean 'sampler' for 'smapler', 'tau' for 'tua'?)"
          in msg), msg
  assert "for 'zzzq'" not in msg
  with pytest.raises(ValueError) as e:
    protocol.merge_config(defaults, {'zzzq': 3}, method='l2x')
  assert 'did you mean' not in str(e.value)
