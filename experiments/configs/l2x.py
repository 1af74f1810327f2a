r"""L2X (Chen et al., ICML 2018) experiments: one config per variant.

The config is `xai_jax.l2x.default_config(modality)` (every L2X
hyper-parameter: k, tau, sampler, batch_size, epochs, num_steps, l2, ...,
documented there) set to the variant's values, plus the experiment's own
fields (data, black box, EVAL-X, baselines, figures). Override any field on
the command line, e.g. `--config.sampler=subset --config.tau=0.5`.

Run (variant after the colon):

  python -m experiments.l2x --config=experiments/configs/l2x.py:switch \
      --workdir=/tmp/l2x_switch

  # the paper's baselines explain an MLP trained on the data, not P(Y|X):
  python -m experiments.l2x --config=experiments/configs/l2x.py:switch \
      --config.blackbox=mlp --workdir=/tmp/l2x_switch_mlp

  # every sampler, 3 seeds, the four synthetic sets -> a markdown table:
  python -m experiments.l2x --config=experiments/configs/l2x.py:xor \
      --workdir=/tmp/l2x_sweep --sweep_variants=xor,orange_skin,\
nonlinear_additive,switch --sweep_seeds=0,1,2 \
      --sweep_samplers=concrete,subset,straight_through,perturbed

Variants and one expected result each (2-core CPU; docs/l2x.md has the
tables and the commands that made them):
  xor, orange_skin, nonlinear_additive, switch
      L2X's synthetic sets (§4.1; 10 features, k = 2, 4, 4, 5), the paper
      protocol: 10^6 training rows (seed 2*seed), 1 epoch of batch 1000,
      10^5 evaluation rows (seed 2*seed + 1). `blackbox='oracle'` (default):
      the explained model is the true P(Y|X) (`data.synthetic.
      oracle_blackbox`); `blackbox='mlp'`: an MLP 10-200-200-2 trained on
      the data. Median rank of the ground-truth features, mean +- sd over
      seeds 0, 1, 2 (optimum 1.5 / 2.5 / 2.5 / 3.0): xor 1.50,
      orange_skin 2.50, nonlinear_additive 3.00 +- 0.12, switch
      3.38 +- 0.25.
  fashion_mnist
      Fashion-MNIST (10 classes), CNN black box, k = 4 patches of 4x4 of the
      7x7 grid (the paper's MNIST setting), q = the frozen CNN on x_S:
      post-hoc accuracy 0.692 (integrated gradients 0.621).
  fashion_mnist_pair
      Fashion-MNIST Sandal (5) vs Sneaker (7), the same setting: post-hoc
      accuracy 0.938 (KernelSHAP 0.945). Like the paper's MNIST 3 vs 8, two
      classes with the same silhouette that differ in local parts.
  synthetic_images
      Synthetic pattern images with ground-truth patches (28x28, 4 classes,
      the class pattern covers 2x2 patches, k = 4): TPR of the pattern's
      patches (random 4 of 49 patches: ~0.08).
  synthetic_text
      Synthetic text with 3 planted label tokens among fillers (L = 50,
      V = 200), text CNN black box, k = 3: TPR of the planted tokens 1.000.
  imdb
      tfds imdb_reviews from `--config.data_dir` (prepared beforehand as
      array_record; nothing is downloaded), L2X's IMDB-word setting: 5000
      words, L = 400, text CNN black box, k = 10, tau 0.5, RMSprop, batch
      40; post-hoc accuracy (the paper: 0.908).

metrics.json keys (flat; L2X's own without prefix, each baseline
`<baseline>/<metric>`):
  median_rank, median_rank_std   (ground truth, tabular: L2X's metric on
      the hard k-hot selection with random tie-breaking; baselines: on
      |attribution|, the full ranking)
  median_rank_scores              (L2X, tabular: the same on the full
      ranking by the selector's logits, as the baselines are scored)
  tpr, fdr                        (ground truth exists: tabular, synthetic
      images (patches), synthetic text (tokens); top-k selection)
  posthoc_accuracy                (black box on x_S, zeros / PAD elsewhere,
      agrees with the black box on x)
  evalx_accuracy                  (EVAL-X evaluator, trained on random
      Bernoulli(evalx.keep_prob) group masks with the data labels -- true
      P(Y|X) for tabular --, on x_S, against the test labels -- argmax
      P(Y|X) for tabular)
  l2x@<baseline>/<metric>         (L2X on exactly the rows a subsampled
      baseline explained: median_rank, tpr, fdr, posthoc_accuracy,
      evalx_accuracy, num_explain)
  approximator_accuracy           (L2X only: its own approximator on x_S
      agrees with the black box; can be inflated by encoding, REAL-X)
  train_seconds                   (L2X fit, wall clock, everything)
  train_compile_seconds           (of which jit tracing + lowering + XLA
      compilation, summed from jax.monitoring events)
  train_seconds_excl_compile      (the difference)
  train_cpu_seconds               (process CPU time of the fit)
  train_steps                     (optimizer steps of the fit)
  explain_seconds, explain_per_second   (second, compiled call on all
      explained rows; for L2X all num_test rows)
  explain_compile_seconds, explain_first_call_seconds
  num_explain                     (rows scored)
  switch_selects_x10              (switch only: fraction of rows whose
      selection holds the regime feature X10)
  blackbox/test_accuracy, blackbox/train_seconds, blackbox/train_accuracy,
  evalx/full_accuracy, evalx/train_seconds, load_average, run_seconds.
"""

import ml_collections

from xai_jax import l2x

TABULAR = ('xor', 'orange_skin', 'nonlinear_additive', 'switch')
VARIANTS = TABULAR + ('fashion_mnist', 'fashion_mnist_pair',
                      'synthetic_images', 'synthetic_text', 'imdb')
BASELINES = ('random', 'saliency', 'integrated_gradients', 'kernel_shap')
SAMPLERS = ('concrete', 'subset', 'straight_through', 'perturbed')
# L2X fields that are None by default: typed, so that the command line can
# set them (`--config.num_steps=500`).
_OPTIONAL_INTS = ('num_steps', 'realx_num_steps', 'chunk_size',
                  'checkpoint_every')


def _modality(variant: str) -> str:
  if variant in TABULAR:
    return 'tabular'
  if variant in ('synthetic_text', 'imdb'):
    return 'text'
  return 'image'


def get_config(arg: str = 'switch') -> ml_collections.ConfigDict:
  """Returns the config of one variant (see the module docstring).

  Args:
    arg: the variant name.

  Raises:
    ValueError: unknown variant (the message lists the variants).
  """
  if arg not in VARIANTS:
    raise ValueError(f'Unknown config variant {arg!r}; expected one of '
                     f'{list(VARIANTS)}.')
  modality = _modality(arg)
  c = l2x.default_config(modality)
  for name in _OPTIONAL_INTS:
    c[name] = ml_collections.FieldReference(c[name], field_type=int)
  c.variant = arg
  c.seed = 0        # every random choice: data, black box, L2X, baselines
  # ------------------------------------------------------------------ data
  c.data = arg      # xai_jax.data set: L2X set, fashion_mnist, images, text
  c.data_dir = ''   # Fashion-MNIST IDX folder or tfds data_dir ('' = default)
  c.classes = ()    # fashion_mnist_pair: the two class ids
  c.num_train = 1_000_000   # n: L2X protocol, 10^6 training rows
  c.num_test = 100_000      # 10^5 evaluation rows (all explained by L2X)
  # ------------------------------------------------------------- black box
  # 'oracle' (tabular only: the true P(Y|X)), 'mlp', 'cnn' or 'text_cnn'.
  c.blackbox = 'oracle'
  c.blackbox_train = ml_collections.ConfigDict({
      'model_kwargs': {'num_classes': 2, 'hidden': (200, 200),
                       'activation': 'relu'},
      'optimizer': 'adam',
      'learning_rate': 1e-3,  # eta
      'batch_size': 256,
      'num_steps': 3000,
      'log_every': 500,
      'checkpoint_every': 1000,
  })
  # ------------------------------------------------------------------- L2X
  # (the fields of l2x.default_config, set for the variant)
  c.k = {'xor': 2, 'orange_skin': 4, 'nonlinear_additive': 4,
         'switch': 5}.get(arg, 4)   # k: selected groups
  c.activation = 'selu' if arg in ('nonlinear_additive', 'switch') else 'relu'
  c.log_every = 200
  # How the approximator g_alpha sees unselected features: 'zero' (L2X
  # Eq. 6) or 'impute' (tabular: the same features of another row of the
  # batch, so the selection pattern cannot encode the label:
  # nets.MarginalImputingApproximator).
  c.approximator_masking = 'zero'
  c.selector_kwargs = ml_collections.ConfigDict()      # nets.make_selector
  c.approximator_kwargs = ml_collections.ConfigDict()  # nets.make_approximator
  # L2X checkpoints in workdir/l2x every `checkpoint_every` steps (None:
  # l2x.default_checkpoint_every, ~4 per run): a rerun resumes and ends
  # with the same model (a rerun with other L2X fields is refused:
  # experiments.l2x.check_resume). False: no checkpoints (not resumable).
  c.checkpoint = True
  # ------------------------------------------------------------- baselines
  # Top-k of their attributions at the same k. Rows explained per baseline
  # (-1 = all num_test rows; costly ones run on the first rows).
  c.baselines = BASELINES
  c.baseline_num_explain = ml_collections.ConfigDict({
      'random': -1, 'saliency': -1, 'integrated_gradients': 20_000,
      'kernel_shap': 2_000})
  # Options of xai_jax.EXPLAINERS[name] (see its default_config()).
  c.baseline_kwargs = ml_collections.ConfigDict({
      'saliency': {},
      'integrated_gradients': {'steps': 50,          # m path points
                               'baseline': 'zero'},  # x'
      'kernel_shap': {'num_samples': 1022,   # coalitions (2^10 - 2: exact)
                      'baseline': 'zero'},
  })
  # Rank by |attribution| (L2X's convention, tabular) or by the signed
  # attribution (positive evidence for the explained class; images, text).
  c.rank_signed = False
  # ---------------------------------------------------------------- EVAL-X
  c.evalx = ml_collections.ConfigDict({
      'model': 'mlp',          # evaluator q(y | x_S): 'mlp', 'cnn', 'text_cnn'
      'model_kwargs': {'hidden': (200, 200)},
      'num_steps': 3000,
      'batch_size': 256,
      'learning_rate': 1e-3,   # eta
      'keep_prob': 0.5,        # p of s_g ~ Bernoulli(p) (EVAL-X: 0.5)
  })
  c.num_figure_rows = 8

  if arg in TABULAR:
    c.blackbox_train.model_kwargs.activation = c.activation
    return c

  # ------------------------------------------------------- images and text
  c.l2 = 0.0
  c.rank_signed = True
  if modality == 'image':
    c.blackbox = 'cnn'
    c.patch = 4             # p x p patches (28 / 4 -> 7 x 7 groups)
    c.tau = 0.5             # tau (image: our choice, the MNIST code is gone)
    c.batch_size = 100
    c.epochs = 1
    c.log_every = 100
    c.baseline_num_explain = ml_collections.ConfigDict({
        'random': -1, 'saliency': -1, 'integrated_gradients': 1000,
        'kernel_shap': 200})
    c.baseline_kwargs.kernel_shap = {'num_samples': 256, 'baseline': 'zero'}
    c.baseline_kwargs.integrated_gradients = {'steps': 32, 'baseline': 'zero'}
    c.evalx = ml_collections.ConfigDict({
        'model': 'cnn', 'model_kwargs': {}, 'num_steps': 1500,
        'batch_size': 128, 'learning_rate': 1e-3, 'keep_prob': 0.5})
  if arg in ('fashion_mnist', 'fashion_mnist_pair'):
    c.data = 'fashion_mnist'
    # q = the frozen CNN on x_S: a co-trained approximator reads the class
    # from where the patches are (post-hoc accuracy 0.823 on the pair, 0.271
    # on 10 classes); `--config.approximator=learned` is the paper's setup.
    c.approximator = 'blackbox'
    c.num_train, c.num_test = 60_000, 10_000
    c.blackbox_train = ml_collections.ConfigDict({
        'model_kwargs': {'num_classes': 10}, 'optimizer': 'adam',
        'learning_rate': 1e-3, 'batch_size': 128,
        'num_steps': 1400,           # 3 epochs of 60k
        'log_every': 200, 'checkpoint_every': 700})
  if arg == 'fashion_mnist':
    c.epochs = 3                     # 1800 steps of 100
    c.learning_rate = 3e-3
    c.tau = 1.0
  if arg == 'fashion_mnist_pair':
    c.classes = (5, 7)               # Sandal vs Sneaker
    c.blackbox_train.model_kwargs.num_classes = 2
    c.blackbox_train.num_steps = 600
    c.epochs = 3                     # 12k rows: 360 steps of 100
  if arg == 'synthetic_images':
    c.data = 'images'
    c.num_train, c.num_test = 20_000, 2_000
    c.blackbox_train = ml_collections.ConfigDict({
        'model_kwargs': {'num_classes': 4}, 'optimizer': 'adam',
        'learning_rate': 1e-3, 'batch_size': 128, 'num_steps': 1500,
        'log_every': 250, 'checkpoint_every': 750})
    c.epochs = 2
  if modality == 'text':
    c.blackbox = 'text_cnn'
    c.tau = 0.5             # tau (IMDB-word: 0.5)
    c.optimizer = 'rmsprop'  # IMDB-word: RMSprop
    c.batch_size = 40       # IMDB-word: 40
    c.log_every = 250
    c.evalx = ml_collections.ConfigDict({
        'model': 'text_cnn', 'model_kwargs': {}, 'num_steps': 1500,
        'batch_size': 128, 'learning_rate': 1e-3, 'keep_prob': 0.5})
  if arg == 'synthetic_text':
    c.data = 'text'
    c.k = 3                 # k = the 3 planted tokens
    c.num_planted = 3       # planted label tokens per row
    c.seq_len = 50          # L
    c.vocab_size = 200      # V
    c.num_train, c.num_test = 20_000, 2_000
    c.epochs = 1            # 500 steps of 40
    c.blackbox_train = ml_collections.ConfigDict({
        'model_kwargs': {'num_classes': 2, 'vocab_size': 200,
                         'embed_dim': 50, 'filters': 64, 'hidden': 64},
        'optimizer': 'adam', 'learning_rate': 1e-3, 'batch_size': 128,
        'num_steps': 800, 'log_every': 200, 'checkpoint_every': 400})
    c.baseline_num_explain = ml_collections.ConfigDict({
        'random': -1, 'saliency': -1, 'integrated_gradients': -1,
        'kernel_shap': 500})
    c.baseline_kwargs.integrated_gradients = {'steps': 32}
    c.baseline_kwargs.kernel_shap = {'num_samples': 512}
  if arg == 'imdb':
    c.k = 10                # IMDB-word: k = 10 words
    c.seq_len = 400         # L (padded length)
    c.vocab_size = 5000     # V
    c.num_train, c.num_test = 25_000, 25_000
    c.epochs = 5            # IMDB-word: 5 epochs
    c.blackbox_train = ml_collections.ConfigDict({
        'model_kwargs': {'num_classes': 2, 'vocab_size': 5000,
                         'embed_dim': 50, 'filters': 250, 'hidden': 250},
        'optimizer': 'adam', 'learning_rate': 1e-3, 'batch_size': 40,
        'num_steps': 3125, 'log_every': 250, 'checkpoint_every': 1000})
    c.baseline_num_explain = ml_collections.ConfigDict({
        'random': -1, 'saliency': -1, 'integrated_gradients': 2000,
        'kernel_shap': 200})
    c.baseline_kwargs.integrated_gradients = {'steps': 32}
    c.baseline_kwargs.kernel_shap = {'num_samples': 1024}
    c.tfds_name = 'imdb_reviews'  # tfds name (tests use a tiny builder)
  return c
