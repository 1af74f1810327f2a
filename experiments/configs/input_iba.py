r"""IBA and InputIBA against gradient and perturbation baselines.

Run (variant after the colon):

  python -m experiments.input_iba \
      --config=experiments/configs/input_iba.py:synthetic_images \
      --workdir=/tmp/iiba_images

  # seeds, then mean +- sd over the runs:
  for s in 0 1 2; do python -m experiments.input_iba \
      --config=experiments/configs/input_iba.py:synthetic_images \
      --config.seed=$s --workdir=/tmp/iiba_images_s$s; done
  python -m experiments.input_iba \
      --summarize=/tmp/iiba_images_s0,/tmp/iiba_images_s1,/tmp/iiba_images_s2

The binary trains the black box (or resumes it from `<workdir>/blackbox/`),
splits it at `split_at`, fits IBA and InputIBA on `num_estimate` training
rows (the latent statistics), explains the first `num_explain` test rows
with every method of `methods` (target: the black box's predicted class),
and scores the maps. Every map is reduced to one value per pixel (images)
or token (text): IBA's capacity in bits per pixel, InputIBA's
sigmoid(alpha) averaged over channels, |gradient| methods summed over
channels, Grad-CAM / RISE as returned, occlusion's patch scores spread over
their pixels, random ~ U(0, 1).

Variants (docs/input_iba.md has the tables with their commands):
  synthetic_images      CNN (conv16-conv32) on synthetic pattern images with
                        ground truth, split at conv2 (latent 14x14x32).
  synthetic_images_vit  small ViT (patch 4, 4 blocks) on the same images,
                        split after block1 (50 tokens x 64).
  fashion_mnist         CNN (conv32-conv64, the anchor's network) on
                        Fashion-MNIST, split at conv2 (14x14x64).
  fashion_mnist_vit     the ViT on Fashion-MNIST, split after block1.
  synthetic_text        text CNN on planted-token text; IBA on the token box
                        split at its conv, InputIBA on the embedding view
                        (one lambda per token), gradients on the embeddings.

metrics.json keys (flat, `<metric>/<method>`):
  blackbox/test_accuracy, blackbox/train_seconds, num_explain, run_seconds
  explain_seconds/<method>   wall seconds of the compiled explanation of
                             all num_explain rows (compilation excluded)
  ground truth (synthetic_images*): the pattern's box (the 2x2 patches of
      4x4 pixels holding the pattern, 8x8 pixels) as the mask:
    ehr/<method>             InputIBA's effective heat ratio (maps min-max
                             scaled, heat >= 0.1, 11 quantiles; higher is
                             better)
    pointing_game/<method>   the hottest pixel inside the box (tolerance 0)
    auroc/<method>           AUROC of the pixel map against the box mask
  fashion_mnist*:
    insertion_auc/<method>   pixels inserted by decreasing heat into a
                             blurred image, target probability (higher is
                             better; `metrics.insertion_steps` steps)
    deletion_auc/<method>    pixels set to 0 by decreasing heat (lower is
                             better)
    sensitivity_n/<method>   Pearson correlation between the summed heat of
                             n random pixels and the logit drop when they are
                             set to 0, 100 subsets, mean over the n of
                             `metrics.sensitivity_ns` (higher is better)
    sensitivity_n/<method>/<n> the same per n
  synthetic_text:
    tpr/<method>             share of the planted tokens among the top-k
                             tokens of the map (k = num_planted)

Expected results (2-core CPU, mean over seeds 0-2; docs/input_iba.md):
  synthetic_images      EHR input_iba 0.605 (iba 0.321), AUROC iba 0.872
                        (input_iba 0.747), black box accuracy 0.988.
  synthetic_images_vit  the ViT does not learn these images with this
                        recipe (test accuracy 0.24, chance 0.25): its maps
                        explain a constant function; not scored.
  fashion_mnist         insertion AUC iba 0.796, input_iba 0.724.
  fashion_mnist_vit     insertion AUC input_iba 0.742, iba 0.48.
  synthetic_text        see docs/input_iba.md (planted-token TPR).
"""

import ml_collections

import xai_jax

VARIANTS = ('synthetic_images', 'synthetic_images_vit', 'fashion_mnist',
            'fashion_mnist_vit', 'synthetic_text')
METHODS = ('iba', 'input_iba', 'saliency', 'integrated_gradients',
           'smoothgrad', 'gradcam', 'occlusion', 'rise', 'random')


def get_config(arg: str = 'synthetic_images') -> ml_collections.ConfigDict:
  """Returns the config of one variant (see the module docstring)."""
  if arg not in VARIANTS:
    raise ValueError(f'Unknown config variant {arg!r}; expected one of '
                     f'{list(VARIANTS)}.')
  c = ml_collections.ConfigDict()
  c.variant = arg
  c.seed = 0
  c.data = 'images'
  c.data_dir = ''            # Fashion-MNIST IDX folder ('' = Debian's)
  c.num_train = 10_000
  c.num_test = 1_000
  # ------------------------------------------------------------ black box
  c.model = 'cnn'
  c.model_kwargs = ml_collections.ConfigDict(
      {'num_classes': 4, 'features': (16, 32)})
  c.split_at = 'conv2'
  c.optimizer = 'adam'
  c.learning_rate = 2e-3
  c.batch_size = 64
  c.num_steps = 500
  c.log_every = 100
  c.checkpoint_every = 250
  # ------------------------------------------------------------ explaining
  c.num_explain = 32          # test rows explained (the first ones)
  c.num_estimate = 1000       # training rows for the latent statistics
  c.patch = 4                 # occlusion's patches (and the images' cells)
  c.methods = METHODS
  # Each method's options (fields of its default_config()).
  c.method_kwargs = ml_collections.ConfigDict({
      # every field of their default_config() (the reference values),
      # overridable: --config.method_kwargs.input_iba.gan_epochs=5
      'iba': xai_jax.iba.default_config(),          # beta 10, T 10, lr 1
      'input_iba': xai_jax.input_iba.default_config(),
      'saliency': {'absolute': True},
      'integrated_gradients': {'steps': 32},        # m, zero baseline
      'smoothgrad': {'num_samples': 32, 'noise_level': 0.15},
      'gradcam': {},
      'occlusion': {'baseline': 'zero'},
      'rise': {'num_masks': 1000, 'grid': 7, 'p1': 0.5, 'space': 'probs'},
      'random': {},
  })
  # ------------------------------------------------------------ metrics
  c.metrics = ml_collections.ConfigDict({
      'insertion_steps': 49,           # curve points (16 pixels each)
      'sensitivity_ns': (7, 49, 196),  # pixels set to 0 per subset
      'num_subsets': 100,              # random subsets per n (reference)
  })
  c.num_figure_examples = 4

  if arg == 'synthetic_images_vit' or arg == 'fashion_mnist_vit':
    c.model = 'vit'
    c.model_kwargs = ml_collections.ConfigDict(
        {'num_classes': 4, 'patch': 4, 'dim': 64, 'depth': 4, 'heads': 4,
         'mlp_dim': 128})
    c.split_at = 'block1'
    c.learning_rate = 1e-3
    c.num_steps = 1500
    c.methods = tuple(m for m in METHODS if m != 'gradcam')
  if arg.startswith('fashion_mnist'):
    c.data = 'fashion_mnist'
    c.num_train, c.num_test = 60_000, 1_000
    c.model_kwargs.num_classes = 10
    if arg == 'fashion_mnist':
      c.model_kwargs.features = (32, 64)
      c.num_steps = 400
  if arg == 'synthetic_text':
    c.data = 'text'
    c.seq_len = 50
    c.vocab_size = 200
    c.num_planted = 3
    c.num_train = 5000
    c.model = 'text_cnn'
    c.model_kwargs = ml_collections.ConfigDict(
        {'num_classes': 2, 'vocab_size': 200, 'embed_dim': 50,
         'filters': 64, 'hidden': 64})
    c.split_at = 'conv'
    c.batch_size = 128
    c.num_steps = 800
    c.learning_rate = 1e-3
    c.methods = ('iba', 'input_iba', 'saliency', 'integrated_gradients',
                 'smoothgrad', 'random')
    c.method_kwargs.input_iba.mask_per_channel = False  # lambda per token
    c.method_kwargs.input_iba.fixed_channels = 1  # the view's PAD channel
    c.num_explain = 64
  return c
