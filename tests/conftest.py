"""Shared pytest setup: CPU-only, a fixed hypothesis profile, data helpers."""

import os
import sys

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hypothesis import settings  # pylint: disable=g-import-not-at-top

settings.register_profile('xai_jax', deadline=None, max_examples=25,
                          derandomize=True)
settings.load_profile('xai_jax')
