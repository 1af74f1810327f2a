r"""NormLIME's global and class-specific maps, judged by keep-and-retrain.

Run (variant after the colon):

  python -m experiments.normlime \
      --config=experiments/configs/normlime.py:switch --workdir=/tmp/normlime_switch

  # another synthetic tabular set (xor, orange_skin, nonlinear_additive):
  python -m experiments.normlime --config=experiments/configs/normlime.py:switch \
      --config.data=orange_skin --workdir=/tmp/normlime_orange

The binary trains the black box (or resumes it from `<workdir>/blackbox/`),
explains `num_explain` training rows with LIME (`normlime.local_explanations`,
the options `config.normlime`: `normlime.default_config()` with the values
below), aggregates them into NormLIME's global and class-specific maps,
SP-LIME's importance, and the mean |KernelSHAP| and mean |gradient| maps
(`normlime.aggregate(..., variant='avg')` of the same rows), then retrains
the black box's architecture from scratch on data that keeps (KAR) or loses
(ROAR) the top t% features of each map, t in `retrain.fractions`, and scores
it on the test split masked the same way (`xai_jax.retrain.retrain_curve`:
all retrainings of one call in one vmapped jit).

Methods (the names in metrics.json):
  normlime        NormLIME's global map (one ranking for every row)
  normlime_class  NormLIME's class-specific map of each row's predicted class
  sp_lime         SP-LIME's I_j = sqrt(sum_i |W_ij|) (top-10 per explanation)
  kernel_shap     mean |KernelSHAP| per feature over the explained rows
  gradient        mean |gradient| per feature (text: of the embeddings)
  random          random orderings (`retrain.num_random`, averaged)
Text maps are over vocabulary ids; a row's ranking is the map of its tokens.

Variants and one expected result each (2-core CPU; docs/normlime.md has
every table with its command):
  switch          MLP 10->200->200->2 (SELU) on the L2X switch set; also the
                  other synthetic sets through --config.data. LIME samples
                  around each row (normlime.sample_around_instance).
  breast_cancer   MLP 30->200->200->2 on scikit-learn's breast cancer set.
  fashion_mnist   MLP 784->200->200->10 on Fashion-MNIST, 7x7 grid of 4x4
                  patches (the MLP keeps 10,000 LIME explanations within
                  the speed target; docs/normlime.md).
  synthetic_text  text CNN on synthetic planted-token text, maps over the
                  200-word vocabulary (positive weights only, the authors'
                  text variant).

metrics.json keys (flat):
  blackbox/test_accuracy, blackbox/train_seconds, num_explain,
  lime_seconds (LIME over num_explain rows), retrain_seconds, run_seconds
  kar_auc/<method>, roar_auc/<method>  area under the test accuracy curve
      over t, divided by the t range (accuracy units; KAR: higher is
      better; ROAR: lower is better)
  kar/<method>/<t>, roar/<method>/<t>  test accuracy after retraining with
      t = 0.1 ... 0.9 of the features kept (KAR) or removed (ROAR)
  evalx_auc/<method>, evalx/<method>/<t>  the same keep curve scored by one
      EVAL-X evaluator (trained on random masks, masked features 0; token
      ids: PAD) instead of retraining: immune to a map that encodes the
      label in its masks (the class-specific maps do under KAR/ROAR)
  evalx_seconds
  synthetic tabular sets with per-row ground truth:
  class_topk_recall/<method>  mean over the ground-truth groups (switch: the
      two regimes; other sets: one group) of |top-k of the group's map ∩ the
      group's true features| / |true features|, k = the set's k. The maps
      are conditioned on the group for normlime_class and kernel_shap (the
      same local explanations aggregated per group), global for the others.
  label_topk_recall/normlime_class  the same with the maps conditioned on
      the predicted label (NormLIME's classes) against the features true
      for most rows of that label.
"""

import ml_collections

from xai_jax import normlime

VARIANTS = ('switch', 'breast_cancer', 'fashion_mnist', 'synthetic_text')
METHODS = ('normlime', 'normlime_class', 'sp_lime', 'kernel_shap',
           'gradient', 'random')


def get_config(arg: str = 'switch') -> ml_collections.ConfigDict:
  """Returns the config of one variant (see the module docstring)."""
  if arg not in VARIANTS:
    raise ValueError(f'Unknown config variant {arg!r}; expected one of '
                     f'{list(VARIANTS)}.')
  c = ml_collections.ConfigDict()
  c.variant = arg
  c.seed = 0
  c.data = arg  # xai_jax.data set name
  c.data_dir = ''  # Fashion-MNIST IDX folder ('' = Debian's default)
  c.num_train = 20_000
  c.num_test = 2_000
  # ------------------------------------------------------------ black box
  c.blackbox = ml_collections.ConfigDict()
  c.blackbox.model = 'mlp'
  c.blackbox.model_kwargs = ml_collections.ConfigDict(
      {'num_classes': 2, 'hidden': (200, 200), 'activation': 'selu'})
  c.blackbox.optimizer = 'adam'
  c.blackbox.learning_rate = 1e-3  # Adam step size
  c.blackbox.batch_size = 256
  c.blackbox.num_steps = 2000
  c.blackbox.log_every = 500
  c.blackbox.checkpoint_every = 500
  # ------------------------------------------------------------ explaining
  c.num_explain = 2000  # training rows explained (the first ones)
  c.patch = 4           # images: p x p patches (28/4 -> a 7x7 grid)
  # LIME and the aggregation: normlime.default_config() with these values.
  c.normlime = normlime.default_config()
  c.normlime.num_samples = 1000  # n LIME perturbations per row
  c.normlime.variant = 'squared'  # w^2 / ||w||_1 (the authors' code)
  # Synthetic tabular sets: LIME samples around each row (lime's
  # sample_around_instance=True). lime's default draws every row's samples
  # from the data distribution, which on switch hides the regime (X10 = +-3
  # becomes one Gaussian) and every map collapses to one global fit
  # (docs/normlime.md has both settings).
  c.normlime.sample_around_instance = arg == 'switch'
  c.kernel_shap = ml_collections.ConfigDict({
      'num_samples': 256,  # n coalitions per row
      'baseline': 'zero',  # value of absent features (tabular: the data
      # are standardised, so zero is the training mean)
  })
  c.sp_lime_features = 10  # SP-LIME: features kept per explanation (lime)
  c.methods = METHODS
  # ------------------------------------------------------------ KAR / ROAR
  c.retrain = ml_collections.ConfigDict({
      'fractions': (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),  # t
      'num_train': 10_000,  # training rows of every retraining
      'num_steps': 1500,    # Adam steps per retraining
      'batch_size': 128,
      'learning_rate': 1e-3,
      'repeats': 1,         # retrainings per (map, t)
      'num_random': 5,      # random orderings averaged for 'random'
      'fill': 'mean',       # removed features: the training mean
      'modes': ('keep', 'remove'),  # KAR, ROAR
  })
  # ------------------------------------------------------------ EVAL-X
  # One evaluator trained on random masks (Jethani et al. 2021) scores the
  # top-t features of every map without retraining on them (0 steps: off).
  c.evalx = ml_collections.ConfigDict({
      'num_steps': 3000, 'batch_size': 256, 'learning_rate': 1e-3,
      'keep_prob': 0.5,   # p of the Bernoulli(p) group masks
  })
  c.num_figure_classes = 10  # per-class maps drawn in figures/

  if arg == 'breast_cancer':
    c.blackbox.model_kwargs.activation = 'relu'
    c.blackbox.num_steps = 1000
    c.num_explain = 427           # every training row
    c.evalx.num_steps = 1000
    c.evalx.batch_size = 64
    c.retrain.num_train = 427
    c.retrain.num_steps = 800
    c.retrain.batch_size = 64
    c.retrain.repeats = 3         # 142 test rows: average the noise
  if arg == 'fashion_mnist':
    c.num_train, c.num_test = 60_000, 2_000
    c.blackbox.model_kwargs = ml_collections.ConfigDict(
        {'num_classes': 10, 'hidden': (200, 200), 'activation': 'relu'})
    c.blackbox.num_steps = 3000
    c.num_explain = 5000
    c.kernel_shap.num_samples = 512
    c.retrain.num_train = 20_000
    c.retrain.num_steps = 1000
    c.retrain.fractions = (0.1, 0.3, 0.5, 0.7, 0.9)  # Hooker et al.'s t
  if arg == 'synthetic_text':
    c.data = 'text'
    c.seq_len = 50
    c.vocab_size = 200
    c.num_planted = 3
    c.blackbox.model = 'text_cnn'
    c.blackbox.model_kwargs = ml_collections.ConfigDict(
        {'num_classes': 2, 'vocab_size': 200, 'embed_dim': 50,
         'filters': 64, 'hidden': 64})
    c.blackbox.batch_size = 128
    c.blackbox.num_steps = 800
    c.normlime.vocab_size = 200
    c.normlime.positive_only = True  # the authors' text variant
    c.num_explain = 2000
    c.retrain.num_steps = 600
    c.retrain.fractions = (0.1, 0.3, 0.5, 0.7, 0.9)  # Hooker et al.'s t
  return c
