r"""Explains a black box with every attribution method and scores them.

Run (variant after the colon):

  python -m experiments.attribution \
      --config=experiments/configs/attribution.py:tabular --workdir=/tmp/attr_tabular

  # another L2X set (xor, orange_skin, nonlinear_additive, switch):
  python -m experiments.attribution \
      --config=experiments/configs/attribution.py:tabular --config.data=xor \
      --workdir=/tmp/attr_xor

The binary trains the black box (or resumes it from `<workdir>/blackbox/`),
explains the first `num_explain` test rows with each method of
`config.methods` through the explainer protocol (`xai_jax.EXPLAINERS[name]`
with the options `method_kwargs[name]`: the method's `default_config()`
set to the values below; the players, LIME's mode and the explained output
`config.space` come from the data and the config), times each method (a
first call compiles, a second identical call is timed) and scores the
explanations.

Variants and one expected result each (2-core CPU; docs/attribution.md has
every table with its command):
  tabular            MLP 10->200->200->2 on an L2X synthetic set (`data`,
                     default 'switch'), trained on the soft targets P(Y|X);
                     players = the 10 features, exact Shapley values as the
                     reference. Saliency median rank 3.41 (optimum 3.0,
                     random 5.86).
  images             CNN on synthetic pattern images (28x28, 4 classes) with
                     ground-truth pattern masks; players = 7x7 patches of 4x4.
                     Occlusion pointing game 1.0 (random 0.125).
  fashion_mnist      CNN on Fashion-MNIST (no ground truth). Integrated
                     gradients deletion AUC 0.149 (random 0.506).
  fashion_mnist_vit  small ViT on Fashion-MNIST (no Grad-CAM). Occlusion
                     deletion AUC 0.0609 (random 0.252).

metrics.json keys (flat):
  blackbox/test_accuracy, blackbox/train_seconds, num_explain, run_seconds
  <method>/explain_per_sec   explanations per second (second, compiled call)
  <method>/explain_seconds   seconds of that call for all num_explain rows
  <method>/compile_seconds   first call minus second call (compilation)
  ground truth (tabular): <method>/median_rank (L2X, lower is better),
      <method>/tpr, <method>/fdr (top-k, k = the set's k), <method>/auroc
  ground truth (images): <method>/pointing_game (max inside the pattern's
      8x8 box), <method>/ehr (positive heat inside the box),
      <method>/auroc (patch scores vs the pattern's 4 patches)
  every variant: <method>/deletion_auc (lower is better),
      <method>/insertion_auc (higher is better; target-class probability,
      units = features or patches, baseline 0), <method>/sensitivity_n
      (Pearson, n = metrics.sensitivity_n units), <method>/infidelity and
      <method>/infidelity_normalized (Yeh et al., Gaussian noise)
  Shapley estimators (kernel_shap, permutation_shap): <method>/shapley_mae,
      <method>/shapley_rmse, <method>/shapley_spearman against exact Shapley
      values (tabular) or a permutation-sampling reference with
      `shapley_reference.num_permutations` permutations (images).

Methods: saliency, grad_x_input, integrated_gradients, smoothgrad, gradcam
(CNN only, split at conv2), occlusion, rise (images), lime, kernel_shap,
permutation_shap, exact_shapley (tabular only), random (N(0, 1) scores).
"""

import ml_collections

import xai_jax

VARIANTS = ('tabular', 'images', 'fashion_mnist', 'fashion_mnist_vit')
TABULAR_METHODS = ('saliency', 'grad_x_input', 'integrated_gradients',
                   'smoothgrad', 'occlusion', 'lime', 'kernel_shap',
                   'permutation_shap', 'exact_shapley', 'random')
CNN_METHODS = ('saliency', 'grad_x_input', 'integrated_gradients',
               'smoothgrad', 'gradcam', 'occlusion', 'rise', 'lime',
               'kernel_shap', 'permutation_shap', 'random')
# Options the binary sets from the data (the players, LIME's mode and
# scaler) and the explained output (`config.space` unless a method's
# options set `space`): not listed in `method_kwargs`.
SETUP_FIELDS = ('space', 'groups', 'mode', 'feature_mean', 'feature_std')


def method_options(name: str, **values) -> ml_collections.ConfigDict:
  """`xai_jax.EXPLAINERS[name].default_config()` without `SETUP_FIELDS`,
  updated by `values` ('random': N(0, 1) scores times `scale`)."""
  if name == 'random':
    opts = ml_collections.ConfigDict({'scale': 1.0})
  else:
    defaults = xai_jax.EXPLAINERS[name].default_config()
    opts = ml_collections.ConfigDict(
        {k: v for k, v in defaults.items() if k not in SETUP_FIELDS},
        type_safe=False)
  for k, v in values.items():
    opts[k] = v
  return opts


def get_config(arg: str = 'tabular') -> ml_collections.ConfigDict:
  """Returns the config of one variant (see the module docstring)."""
  if arg not in VARIANTS:
    raise ValueError(f'Unknown config variant {arg!r}; expected one of '
                     f'{list(VARIANTS)}.')
  c = ml_collections.ConfigDict()
  c.variant = arg
  c.seed = 0
  c.data = 'switch' if arg == 'tabular' else arg  # xai_jax.data set name
  c.data_dir = ''  # Fashion-MNIST IDX folder ('' = Debian's default)
  c.num_train = 100_000
  c.num_test = 2_000
  # ------------------------------------------------------------ black box
  c.model = 'mlp'
  # activation 'auto': L2X's choice, SELU for nonlinear_additive / switch,
  # ReLU for xor / orange_skin.
  c.model_kwargs = ml_collections.ConfigDict({'num_classes': 2,
                                              'hidden': (200, 200),
                                              'activation': 'auto'})
  c.optimizer = 'adam'
  c.learning_rate = 1e-3  # Adam step size
  c.batch_size = 256
  c.num_steps = 2000
  c.log_every = 200
  c.checkpoint_every = 500
  # ------------------------------------------------------------ explaining
  c.num_explain = 100      # test rows explained (the first ones)
  # Explained output: the target class's log-probability (a single logit of
  # a softmax classifier is only defined up to a shift shared by all classes).
  c.space = 'log_probs'
  c.patch = 4              # image players: p x p patches (28/4 -> 49)
  c.methods = TABULAR_METHODS
  # Each method's options: its default_config() with these values.
  c.method_kwargs = ml_collections.ConfigDict({
      'saliency': method_options('saliency', absolute=True),  # |dF/dx|
      'grad_x_input': method_options('grad_x_input'),
      'integrated_gradients': method_options(
          'integrated_gradients', steps=32,             # m path points
          baseline='zero'),                             # x'
      'smoothgrad': method_options(
          'smoothgrad', num_samples=32,                 # n noisy samples
          noise_level=0.15),                            # sigma/(max - min)
      'gradcam': method_options('gradcam'),
      'occlusion': method_options('occlusion', baseline='zero'),
      'rise': method_options(
          'rise', num_masks=1000,                       # N
          grid=7,                                       # s
          p1=0.5,                                       # P(keep a cell)
          space='probs'),                               # the class prob.
      'lime': method_options('lime', num_samples=1000),  # n perturbations
      'kernel_shap': method_options(
          'kernel_shap', num_samples=128,     # n coalitions (< 2^10 - 2)
          baseline='zero'),
      'permutation_shap': method_options(
          'permutation_shap', num_permutations=16,  # 16 x 9 = 144 rows
          baseline='zero'),
      'exact_shapley': method_options('exact_shapley',
                                      baseline='zero'),  # 2^10 coalitions
      'random': method_options('random'),
  })
  # Reference Shapley values where d is too large for enumeration (images):
  # permutation sampling with many antithetic permutations.
  c.shapley_reference = ml_collections.ConfigDict({'num_permutations': 200})
  # ------------------------------------------------------------ metrics
  c.metrics = ml_collections.ConfigDict({
      'baseline': 0.0,            # removed units (deletion, sensitivity-n)
      'sensitivity_n': 3,         # n, units removed per subset
      'num_subsets': 100,         # subsets per example (Ancona et al.)
      'infidelity_samples': 100,  # perturbations per example (Yeh et al.)
      'infidelity_noise': 0.3,    # sigma of the Gaussian perturbation
      'pointing_tolerance': 0.0,  # px; images only
  })
  c.num_figure_examples = 4  # images shown in figures/heatmaps.png

  if arg == 'images':
    c.model = 'cnn'
    c.model_kwargs = ml_collections.ConfigDict({'num_classes': 4})
    c.num_train, c.num_test = 10_000, 1_000
    c.batch_size, c.num_steps = 64, 500
    c.learning_rate = 2e-3
    c.checkpoint_every = 100
    c.log_every = 50
  if arg.startswith('fashion_mnist'):
    c.data = 'fashion_mnist'
    c.model = 'cnn'
    c.model_kwargs = ml_collections.ConfigDict({'num_classes': 10})
    c.num_train, c.num_test = 60_000, 1_000
    c.batch_size, c.num_steps = 64, 400
    c.learning_rate = 2e-3
    c.checkpoint_every = 100
    c.log_every = 50
  if arg == 'fashion_mnist_vit':
    c.model = 'vit'
    c.model_kwargs = ml_collections.ConfigDict(
        {'num_classes': 10, 'patch': 4, 'dim': 64, 'depth': 4, 'heads': 4,
         'mlp_dim': 128})
    c.learning_rate = 1e-3
  if arg != 'tabular':
    c.num_explain = 16
    c.methods = tuple(m for m in CNN_METHODS
                      if not (c.model == 'vit' and m == 'gradcam'))
    c.method_kwargs.lime.num_samples = 500
    c.method_kwargs.kernel_shap.num_samples = 512
    c.method_kwargs.permutation_shap.num_permutations = 10  # x 48 = 480 rows
    c.method_kwargs.rise.num_masks = 500
    c.shapley_reference.num_permutations = 100
    c.metrics.sensitivity_n = 10            # of 49 patches
    c.metrics.infidelity_noise = 0.1        # pixels in [0, 1]
  if arg == 'fashion_mnist_vit':
    c.num_explain = 8
  return c
