"""Tests of the generic argument checks in xai_jax._checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xai_jax import _checks
from xai_jax import blackbox as bb


def test_as_array():
  assert _checks.as_array('x', [1.0, 2.0]).shape == (2,)
  assert _checks.as_array('x', 3).shape == ()
  a = jnp.ones(3)
  assert _checks.as_array('x', a) is a
  with pytest.raises(ValueError, match='scores must be an array'):
    _checks.as_array('scores', {'a': 1})


def test_check_binary():
  np.testing.assert_array_equal(_checks.check_binary('m', [0, 1, 1.0]),
                                [False, True, True])
  m = jnp.array([True, False])
  assert _checks.check_binary('m', m) is m
  with pytest.raises(ValueError, match=r'gt must be binary .*; try this'):
    _checks.check_binary('gt', [0.5], 'try this')
  # Values of tracers are unknown: only thresholded.
  out = jax.jit(lambda v: _checks.check_binary('m', v))(jnp.array([0.2, 0.7]))
  np.testing.assert_array_equal(out, [False, True])


def test_check_probability():
  assert _checks.check_probability('p', 0.3) == 0.3
  assert _checks.check_probability('p', 1.0, open_right=False) == 1.0
  for bad in (0.0, 1.0, -0.1, float('nan'), [0.1, 0.2]):
    with pytest.raises(ValueError, match='p must be'):
      _checks.check_probability('p', bad)


def test_check_labels():
  y, c, soft = _checks.check_labels('y', np.array([0, 2, 1]), 3)
  assert (c, soft, y.dtype) == (3, False, jnp.int32)
  assert _checks.check_labels('y', np.array([0, 0]), 2)[1] == 2
  p = np.full((2, 4), 0.25, np.float32)
  y, c, soft = _checks.check_labels('y', p, 2)
  assert (c, soft) == (4, True)
  with pytest.raises(ValueError, match='y must have 3 rows'):
    _checks.check_labels('y', np.array([0, 1]), 3)
  with pytest.raises(ValueError, match='class 2 >= num_classes=2'):
    _checks.check_labels('y', np.array([0, 2]), 2, num_classes=2)
  with pytest.raises(ValueError, match='non-negative'):
    _checks.check_labels('y', -p, 2)
  with pytest.raises(ValueError, match='4 columns but num_classes=3'):
    _checks.check_labels('y', p, 2, num_classes=3)
  with pytest.raises(ValueError, match='int class labels'):
    _checks.check_labels('y', np.ones((2, 2, 2), np.float32), 2)


def test_check_model_input():
  box = bb.from_jax(lambda x: x @ jnp.ones((3, 2)), input_shape=(3,))
  x = _checks.check_model_input(box, np.ones((4, 3), np.float32))
  assert isinstance(x, jax.Array) and x.shape == (4, 3)
  with pytest.raises(ValueError, match='inputs must have'):
    _checks.check_model_input(box, np.ones((4, 2), np.float32), 'inputs')
  with pytest.raises(ValueError, match='at least one example'):
    _checks.check_model_input(box, np.ones((0, 3), np.float32))


@pytest.mark.parametrize('target', [-1, 3, np.array([0, 5])])
def test_check_target_range_rejects_out_of_range_and_negative(target):
  with pytest.raises(ValueError, match=r'target must be in \[0, 3\)'):
    _checks.check_target_range('target', target, 3)


def test_check_target_range_accepts_valid_and_rejects_floats():
  _checks.check_target_range('target', np.array([0, 1, 2]), 3)
  _checks.check_target_range('target', None, 3)
  with pytest.raises(ValueError, match='integer class indices'):
    _checks.check_target_range('target', 1.0, 3)


def test_check_finite_outputs_names_the_rows():
  _checks.check_finite_outputs(np.ones((4, 2)), method='m')
  v = np.ones((4, 2))
  v[2, 1] = np.inf
  v[3, 0] = np.nan
  with pytest.raises(ValueError, match=r'kernel_shap: .* 2 of 4 rows '
                     r'\(first: row 2\)'):
    _checks.check_finite_outputs(v, method='kernel_shap')
