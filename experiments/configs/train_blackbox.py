"""Trains the black boxes that the explainer experiments explain.

Run (variant after the colon):

  python -m experiments.train_blackbox \
      --config=experiments/configs/train_blackbox.py:switch --workdir=/tmp/bb_switch

Variants and the test accuracy each reaches (2 CPU cores; docs/blackboxes.md
has the table with its command and train times):
  xor, orange_skin, nonlinear_additive, switch  MLP 10->200->200->2 on L2X's
      synthetic sets (soft targets P(Y|X); accuracy = agreement with
      argmax P(Y|X)): switch 0.965
  images            CNN on synthetic pattern images (28x28, 4 classes): 0.999
  fashion_mnist     CNN on Fashion-MNIST (Debian's dataset-fashion-mnist),
                    6 epochs, cosine 2e-3: 0.913
  fashion_mnist_vit small ViT (patch 4, dim 64, depth 4) on Fashion-MNIST:
                    0.865
  text              text CNN on synthetic text with planted tokens: 1.000
  imdb              text CNN on tfds imdb_reviews (needs --config.data_dir
                    with prepared data; nothing is downloaded)

metrics.json keys: test_accuracy, train_accuracy (last logged batch),
train_seconds, num_params, num_train, num_test.

The black box is trained by `experiments.common.fit_blackbox` and restored
by `common.restore_blackbox(workdir)`.
"""

import ml_collections

VARIANTS = ('xor', 'orange_skin', 'nonlinear_additive', 'switch', 'images',
            'fashion_mnist', 'fashion_mnist_vit', 'text', 'imdb')


def get_config(arg: str = 'switch') -> ml_collections.ConfigDict:
  """Returns the config of one variant (see the module docstring)."""
  if arg not in VARIANTS:
    raise ValueError(f'Unknown config variant {arg!r}; expected one of '
                     f'{list(VARIANTS)}.')
  c = ml_collections.ConfigDict()
  c.variant = arg
  c.seed = 0
  c.data = arg  # data set name (xai_jax.data)
  c.data_dir = ''  # Fashion-MNIST IDX folder or tfds data_dir ('' = default)
  c.num_train = 100_000
  c.num_test = 10_000
  c.model = 'mlp'
  c.model_kwargs = ml_collections.ConfigDict({'num_classes': 2,
                                              'hidden': (200, 200),
                                              'activation': 'relu'})
  c.optimizer = 'adam'
  c.learning_rate = 1e-3  # Adam step size
  c.schedule = 'constant'  # xai_jax.train.SCHEDULES: constant, cosine, ...
  c.warmup_steps = 0
  c.batch_size = 256
  c.num_steps = 3000
  c.log_every = 200
  c.checkpoint_every = 1000
  if arg in ('nonlinear_additive', 'switch'):
    c.model_kwargs.activation = 'selu'  # L2X uses SELU on these two sets
  if arg == 'images':
    c.model = 'cnn'
    c.model_kwargs = ml_collections.ConfigDict({'num_classes': 4})
    c.num_train, c.num_test = 20_000, 2_000
    c.batch_size, c.num_steps = 128, 1500
  if arg.startswith('fashion_mnist'):
    c.data = 'fashion_mnist'
    c.model = 'cnn'
    c.model_kwargs = ml_collections.ConfigDict({'num_classes': 10})
    c.num_train, c.num_test = 60_000, 10_000
    # 6 epochs, cosine decay from 2e-3 (a constant 1e-3 for 3 epochs
    # reaches 0.891).
    c.batch_size, c.num_steps = 128, 2800
    c.learning_rate, c.schedule, c.warmup_steps = 2e-3, 'cosine', 100
  if arg == 'fashion_mnist_vit':
    c.model = 'vit'
    c.model_kwargs = ml_collections.ConfigDict(
        {'num_classes': 10, 'patch': 4, 'dim': 64, 'depth': 4, 'heads': 4,
         'mlp_dim': 128})
    c.num_steps = 2400
  if arg in ('text', 'imdb'):
    c.model = 'text_cnn'
    c.seq_len = 50 if arg == 'text' else 400
    c.vocab_size = 200 if arg == 'text' else 5000
    c.model_kwargs = ml_collections.ConfigDict(
        {'num_classes': 2, 'vocab_size': c.vocab_size, 'embed_dim': 50,
         'filters': 250 if arg == 'imdb' else 64, 'hidden': 250 if arg ==
         'imdb' else 64})
    c.num_train, c.num_test = (20_000, 2_000) if arg == 'text' else (25_000,
                                                                     25_000)
    c.batch_size, c.num_steps = (128, 800) if arg == 'text' else (40, 3125)
  return c
