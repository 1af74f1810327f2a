"""Tests for xai_jax.models: shapes, registry, a quick fit, bad names."""

import jax
import jax.numpy as jnp
import numpy as np
import flax.linen as nn
import pytest

from xai_jax import blackbox as bb
from xai_jax import models


@pytest.mark.parametrize('name,kw,x', [
    ('mlp', dict(num_classes=3, hidden=(8,)), jnp.ones((2, 10))),
    ('cnn', dict(num_classes=10), jnp.ones((2, 28, 28, 1))),
    ('vit', dict(num_classes=10, dim=16, depth=1, heads=2, mlp_dim=16),
     jnp.ones((2, 28, 28, 1))),
    ('text_cnn', dict(num_classes=2, vocab_size=30, embed_dim=4, filters=8,
                      hidden=8), jnp.ones((2, 12), jnp.int32)),
])
def test_output_shapes(name, kw, x):
  m = models.make_model(name, **kw)
  v = m.init(jax.random.key(0), x)
  out = m.apply(v, x)
  assert out.shape == (2, kw['num_classes'])
  assert np.all(np.isfinite(out))


def test_text_cnn_ignores_padding_content():
  m = models.make_model('text_cnn', num_classes=2, vocab_size=30, embed_dim=4,
                        filters=8, hidden=8)
  tok = jnp.array([[5, 6, 7, 0, 0, 0]])
  v = m.init(jax.random.key(0), tok)
  # PAD embeds to zero, so the embedding row of id 0 has no effect.
  v2 = jax.tree_util.tree_map(lambda a: a, v)
  v2['params']['embed']['embedding'] = v['params']['embed']['embedding'].at[
      0].set(100.0)
  np.testing.assert_allclose(m.apply(v, tok), m.apply(v2, tok), rtol=1e-6)


def test_fit_classifier_learns_linear_rule():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(4000, 5)).astype(np.float32)
  y = (x[:, 0] - x[:, 1] > 0).astype(np.int32)
  box, last = models.fit_classifier('mlp', dict(num_classes=2, hidden=(32,)),
                                    x, y, key=0, num_steps=300,
                                    batch_size=100)
  xt = rng.normal(size=(2000, 5)).astype(np.float32)
  yt = (xt[:, 0] - xt[:, 1] > 0).astype(np.int32)
  assert models.accuracy(box, xt, yt) > 0.95
  assert last['step'] == 300


def test_unknown_names():
  with pytest.raises(ValueError, match="Unknown model 'resnet'"):
    models.make_model('resnet', num_classes=2)
  with pytest.raises(ValueError, match='activation'):
    models.make_model('mlp', num_classes=2, activation='swishy')


def test_embedding_blackbox_is_the_text_model_on_embeddings():
  from xai_jax import blackbox as bb  # pylint: disable=g-import-not-at-top
  m = models.make_model('text_cnn', num_classes=2, vocab_size=30, embed_dim=4,
                        filters=8, hidden=8)
  tok = jnp.array([[5, 6, 7, 0, 0, 0], [1, 2, 29, 3, 4, 0]])
  variables = m.init(jax.random.key(0), tok)
  box = bb.from_linen(m, variables, input_shape=(6,), input_dtype='int')
  view, to_input = models.embedding_blackbox(box, m)
  z = to_input(tok)
  assert z.shape == (2, 6, 5) and view.input_shape == (6, 5)
  np.testing.assert_array_equal(z[..., -1], tok > 0)
  np.testing.assert_allclose(view(z), box(tok), rtol=1e-5, atol=1e-6)
  # Float inputs: gradients exist for every real token; PAD has none.
  g = jax.grad(lambda v: view(v)[:, 1].sum())(z)[..., :-1].sum(-1)
  assert np.all(np.asarray(g)[tok == 0] == 0)
  assert np.all(np.isfinite(np.asarray(g)))


def test_embedding_blackbox_needs_an_embedding():
  from xai_jax import blackbox as bb  # pylint: disable=g-import-not-at-top
  m = models.make_model('mlp', num_classes=2, hidden=(4,))
  v = m.init(jax.random.key(0), jnp.ones((1, 3)))
  box = bb.from_linen(m, v, input_shape=(3,))
  with pytest.raises(ValueError, match="'embed'"):
    models.embedding_blackbox(box, m)


def test_fit_classifier_takes_int_seeds_and_keys():
  x = np.random.default_rng(0).standard_normal((64, 3)).astype(np.float32)
  y = (x[:, 0] > 0).astype(np.int32)
  kw = dict(num_steps=2, batch_size=32, log_every=10**9)
  a, _ = models.fit_classifier('mlp', {'num_classes': 2, 'hidden': (4,)}, x,
                               y, key=3, **kw)
  b, _ = models.fit_classifier('mlp', {'num_classes': 2, 'hidden': (4,)}, x,
                               y, key=jax.random.key(3), **kw)
  np.testing.assert_allclose(a(x), b(x))
  with pytest.raises(ValueError, match='key'):
    models.fit_classifier('mlp', {'num_classes': 2}, x, y, key=-1, **kw)


def test_embedding_blackbox_split_recomposes_and_names_layers():
  m = models.TextCNN(num_classes=2, vocab_size=30, embed_dim=8, filters=16,
                     hidden=16)
  t = jnp.asarray(np.random.RandomState(0).randint(0, 30, (3, 12)))
  v = m.init(jax.random.key(0), t)
  box = bb.from_linen(m, v, input_shape=(12,), input_dtype='int')
  view, to_input = models.embedding_blackbox(box, m, split_at='conv')
  z = to_input(t)
  assert view.latent_shape == (12, 16)
  np.testing.assert_allclose(view.tail(view.head(z)), box(t), atol=1e-5)
  # the head is the conv's pre-activation output on the masked embeddings
  e = jnp.take(v['params']['embed']['embedding'], t, axis=0)
  e = e * (t > 0)[..., None]
  ref = nn.Conv(16, (3,)).apply({'params': v['params']['conv']}, e)
  np.testing.assert_allclose(view.head(z), ref, atol=1e-5)
  with pytest.raises(ValueError, match="'embed', 'conv', 'dense1', 'head'"):
    models.embedding_blackbox(box, m, split_at='nope')
