r"""LTX (pLTX and per-instance finetuned LTX) against the baselines.

Run (variant after the colon):

  python -m experiments.ltx --config=experiments/configs/ltx.py:synthetic_images \
      --workdir=/tmp/ltx_images

  # seeds, then mean +- sd over the runs and the paper's claims:
  for s in 0 1 2; do python -m experiments.ltx \
      --config=experiments/configs/ltx.py:synthetic_images \
      --config.seed=$s --workdir=/tmp/ltx_images_s$s; done
  python -m experiments.ltx \
      --summarize=/tmp/ltx_images_s0,/tmp/ltx_images_s1,/tmp/ltx_images_s2

The binary trains the black box (or resumes it from `<workdir>/blackbox/`),
pretrains the LTX explainer on the first `num_pretrain` training rows
(`<workdir>/ltx/`, resumable; the objective on the next `num_validation`
training rows is logged, nothing is selected on them), explains the first
`num_explain` rows of the disjoint test split with pLTX (0 finetuning
steps), LTX (`method_kwargs.ltx.finetune_steps`) and every baseline of
`methods`, and scores every map. Target: the black box's predicted class
(for LTX's objective and for every metric).

Variants (docs/ltx.md has the tables with their commands):
  synthetic_images      CNN (conv16-conv32) on synthetic pattern images with
                        ground truth; LTX's CNN explainer (the CNN body +
                        1x1 conv, 7x7 mask) initialised from the box.
  synthetic_images_vit  small ViT on the same images; LTX's ViT explainer
                        (the ViT's blocks + token head, 7x7 mask).
  fashion_mnist         CNN (conv32-conv64, the anchor's network).
  fashion_mnist_vit     the ViT on Fashion-MNIST.

metrics.json keys (flat, `<metric>/<method>`, methods pltx, ltx and the
baselines; the perturbation AUCs in the reference's units, x 100, maximum
90):
  blackbox/test_accuracy, blackbox/train_seconds, num_explain, run_seconds
  ltx/pretrain_seconds, ltx/pretrain_steps, ltx/validation_objective
  ltx/kept_step_mean          mean kept finetuning step (0..T)
  explain_seconds/<method>    wall seconds of the compiled explanation of
                              all num_explain rows (compilation excluded)
  pos_auc/<method>            POS: pixels blacked out most salient first,
                              10..90%, top-1 agreement with the target
                              (lower is better)
  neg_auc/<method>            NEG: least salient first (higher is better)
  del_auc/<method>            the POS curve scored by the target's
                              probability (lower is better)
  ins_auc/<method>            the NEG curve scored by probability (higher is
                              better; not RISE insertion)
  ground truth (synthetic_images*): the pattern's box (its 2x2 cells of
      4x4 pixels) as the segmentation mask; maps binarised at their mean:
    miou/<method>             mean IoU of foreground and background
    pixel_accuracy/<method>
    map/<method>              mean average precision

Expected results (2-core CPU, mean over seeds 0-2; docs/ltx.md):
  synthetic_images      mIoU ltx 0.672 (pltx 0.661, occlusion 0.632, best
                        gradient method 0.485); POS ltx 48.1, NEG 86.4.
  synthetic_images_vit  the ViT does not learn these images (test accuracy
                        0.24, chance 0.25): not scored.
  fashion_mnist         POS ltx 21.7 (pltx 23.6), NEG ltx 79.9 (pltx 73.5).
  fashion_mnist_vit     POS ltx 19.9 (pltx 21.6), NEG ltx 71.3 (pltx 68.0).
"""

import ml_collections

import xai_jax

VARIANTS = ('synthetic_images', 'synthetic_images_vit', 'fashion_mnist',
            'fashion_mnist_vit')
METHODS = ('pltx', 'ltx', 'saliency', 'integrated_gradients', 'smoothgrad',
           'gradcam', 'rise', 'occlusion', 'iba', 'input_iba', 'l2x',
           'random')


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
  c.split_at = 'conv2'       # IBA / InputIBA / Grad-CAM layer
  c.optimizer = 'adam'
  c.learning_rate = 2e-3
  c.batch_size = 64
  c.num_steps = 500
  c.log_every = 100
  c.checkpoint_every = 250
  # ------------------------------------------------------------ explaining
  c.num_pretrain = 5000      # training rows LTX is pretrained on
  c.num_validation = 500     # the next training rows (objective logged)
  c.num_explain = 64         # test rows explained (the first ones)
  c.num_estimate = 1000      # training rows for IBA's latent statistics
  c.patch = 4                # occlusion / L2X patches (the images' cells)
  # InputIBA (about 4 s per image here) is left out of the default runs:
  # --config.methods adds it (docs/ltx.md has one run with it).
  c.methods = tuple(m for m in METHODS if m != 'input_iba')
  ltx = xai_jax.ltx.default_config('cnn')
  ltx.features = (16, 32)    # = the black box's: its weights copy in
  ltx.epochs = 10
  c.method_kwargs = ml_collections.ConfigDict({
      # every field of their default_config(), overridable:
      # --config.method_kwargs.ltx.mask_weight=20
      'ltx': ltx,
      'iba': xai_jax.iba.default_config(),
      'input_iba': xai_jax.input_iba.default_config(),
      'l2x': {'k': 4, 'epochs': 5},
      'saliency': {'absolute': True},
      'integrated_gradients': {'steps': 32},
      'smoothgrad': {'num_samples': 32, 'noise_level': 0.15},
      'gradcam': {},
      'occlusion': {'baseline': 'zero'},
      'rise': {'num_masks': 1000, 'grid': 7, 'p1': 0.5, 'space': 'probs'},
      'random': {},
  })
  c.num_figure_examples = 4

  if arg.endswith('_vit'):
    c.model = 'vit'
    c.model_kwargs = ml_collections.ConfigDict(
        {'num_classes': 4, 'patch': 4, 'dim': 64, 'depth': 4, 'heads': 4,
         'mlp_dim': 128})
    c.split_at = 'block1'
    c.learning_rate = 1e-3
    c.num_steps = 1500
    c.methods = tuple(m for m in c.methods if m != 'gradcam')
    ltx = xai_jax.ltx.default_config('vit')
    ltx.epochs = 10
    c.method_kwargs.ltx = ltx
  if arg.startswith('fashion_mnist'):
    c.data = 'fashion_mnist'
    c.num_train, c.num_test = 60_000, 1_000
    c.model_kwargs.num_classes = 10
    if arg == 'fashion_mnist':
      c.model_kwargs.features = (32, 64)
      c.method_kwargs.ltx.features = (32, 64)
      c.num_steps = 400
  return c
