"""Tests for xai_jax/timing.py."""

import jax
import jax.numpy as jnp
import numpy as np

from xai_jax import timing


def test_timed_measures_compile_time():
  f = jax.jit(lambda v: jnp.sin(v) * 3.0 + jnp.cos(v * 2.0))
  with timing.timed() as t:
    jax.block_until_ready(f(jnp.arange(7.0)))
  assert 0.0 < t.compile <= t.wall
  assert t.excl_compile == t.wall - t.compile
  with timing.timed() as t2:
    jax.block_until_ready(f(jnp.arange(7.0)))
  assert t2.compile == 0.0 and t2.wall > 0.0


def test_nested_timers_each_count_their_own_block():
  g = jax.jit(lambda v: jnp.tanh(v) * 5.0 - v)
  with timing.timed() as outer:
    with timing.timed() as inner:
      jax.block_until_ready(g(jnp.arange(3.0)))
  assert 0.0 < inner.compile <= outer.compile <= outer.wall


def test_union_seconds_counts_overlaps_once():
  assert timing._union_seconds([(0, 2), (1, 3), (5, 6)]) == 4
  assert timing._union_seconds([]) == 0.0


def test_load_average_is_a_number():
  v = timing.load_average()
  assert isinstance(v, float) and (np.isnan(v) or v >= 0)
