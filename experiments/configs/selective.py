r"""Selective explanations: FastSHAP, MC^n and their combination vs coverage.

Run (variant after the colon):

  python -m experiments.selective \
      --config=experiments/configs/selective.py:tabular_d10 --workdir=/tmp/sel_d10

  # mean +- sd over seeds of finished runs (the tables of docs/selective.md):
  for s in 0 1 2; do python -m experiments.selective \
      --config=experiments/configs/selective.py:tabular_d10 --config.seed=$s \
      --workdir=/tmp/sel_tabular_d10_s$s; done
  python -m experiments.selective \
      --summarize=/tmp/sel_tabular_d10_s0,/tmp/sel_tabular_d10_s1,/tmp/sel_tabular_d10_s2

The binary (Monteiro Paes, Wei, Calmon, NeurIPS 2024; references/selective.md)
draws N rows, splits them 50/25/25 into train / calibration / test (shuffled
by the seed), trains the black box on the train split, trains a FastSHAP
ensemble of k members on the train split in one `fastshap.fit` call (Amor =
the members' mean), computes the high-quality targets HQ (exact Shapley
values for d <= exact_max_players, else KernelSHAP with hq_samples
coalitions) on every split, the deep and learned uncertainties, MC^n
(KernelSHAP with per-input coalitions) for n in {d + 1, 2d, 4d} on the
calibration and test splits, and the selective explanations' MSE and
Spearman to HQ over the coverage grid (`selective.coverage_curve`; coverage
alpha = the fraction of inputs that KEEP Amor). Every explanation is for the
black box's predicted class, in probabilities, absent features at 'zero'
(the tabular data are standardised, so zero is the training mean; text:
PAD).

Variants and their expected result (seed 0, 2-core CPU; docs/selective.md has
the mean +- sd over seeds 0, 1, 2 and every other number; MSE to HQ on the
test split, primary budget n = 2d):
  tabular_d10     make_dense(4000, seed, d=10), MLP 10-128-128-2, exact
                  Shapley targets. FastSHAP Spearman 0.968, MSE Amor 1.51e-4,
                  MC^20 1.47e-3, selective (deep) 1.40e-4 at alpha 0.5 and
                  1.45e-4 at 0.8: below both at every alpha. 46 s.
  tabular_d100    make_dense(4000, seed, d=100), MLP 100-128-128-2, tanh
                  FastSHAP (below), KernelSHAP targets with 10,000
                  coalitions. FastSHAP Spearman 0.611, MSE Amor 2.06e-4,
                  MC^200 4.08e-4, selective (deep) 1.74e-4 at 0.5; at n = 4d
                  MC^400 alone (1.44e-4) beats Amor and selective (1.49e-4 at
                  0.5). 112 s.
  breast_cancer   scikit-learn's 569 rows (285/142/142), d = 30, MLP
                  30-128-128-2, KernelSHAP targets with 10,000 coalitions.
                  FastSHAP Spearman 0.919, MSE Amor 7.21e-4, MC^60 1.93e-2,
                  selective (deep) 6.71e-4 at 0.5 and 6.77e-4 at 0.8: below
                  both at every alpha. 41 s.
  synthetic_text  make_text(4000, seed, seq_len=20, vocab_size=50), every
                  row 20 tokens long (d = 20 players), text CNN; KernelSHAP
                  targets with 10,000 coalitions (4,096 on the train split).
                  FastSHAP Spearman 0.963, MSE Amor 2.71e-5, MC^40 1.59e-2;
                  lambda ~ 1, so selective = Amor to 3 digits. 179 s.

metrics.json keys (flat; <alpha> in 0.0, 0.1, ..., 1.0; <budget> in d_plus_1,
2d, 4d, the MC^n budgets n = d + 1, 2d, 4d; the primary budget is
config.mc_budget):
  d, num_train, num_cal, num_test        players and split sizes
  blackbox/test_accuracy, blackbox/train_seconds
  mse/amortized, spearman/amortized      Amor (the ensemble mean) on the test
      split: mean over rows of ||Amor - HQ||^2 / d, and mean Spearman over the
      d features (rows with a constant explanation left out)
  fastshap_spearman                      = spearman/amortized (FastSHAP alone
      against the targets; the issue's target is >= 0.8 at d = 10)
  fastshap_member_spearman               mean over the k members alone
  mse/mc_n_<budget>, spearman/mc_n_<budget>  MC^n alone on the test split
      (coalitions unpaired unless config.mc_paired)
  mse/mc_n_<budget>_paired (or _unpaired when config.mc_paired)  MC^n with
      the other pairing on the test split (config.compare_pairing)
  mse/<method>/<alpha>, spearman/<method>/<alpha>  the selective explanation
      at coverage alpha, primary budget; <method> in
        selective_deep       deep uncertainty (ensemble variance), 1 lambda
        selective_learned    learned uncertainty (network on train errors)
        selective_random     uniform random uncertainties (fixed key)
        selective_oracle     the true errors ||Amor - HQ||^2 / d on both the
                             test and calibration splits (not a method: the
                             best ranking any uncertainty could give)
        selective_deep_bins  deep uncertainty, lambda per uncertainty bin
                             (config.bins_deep quantile bins of the routed
                             calibration points)
      (config.num_bins bins for every method but selective_deep_bins)
  mse/<method>_<budget>/<alpha>, spearman/<method>_<budget>/<alpha>  the same
      at the other budgets
  lambda/<method>/<alpha>                mean lambda over the routed test rows
      (primary budget; absent where no row is routed)
  mse_area/<method>, mse_area/<method>_<budget>  area under the MSE-vs-
      coverage curve over [0, 1] (trapezoid on the grid; lower is better)
  claim/selective_below_both/<score>, .../<score>_<budget>  1.0 if at every
      alpha in 0.1 ... 0.9 the selective MSE (score = deep, learned,
      deep_bins, random, oracle) is strictly below min(mse/amortized,
      mse/mc_n_<budget>), else 0.0 (the paper's central claim)
  uncertainty_auroc/<score>, uncertainty_spearman/<score>  score = deep,
      learned: on the test split, how well s(x) ranks Amor's true per-input
      error (AUROC for the top-decile errors; Spearman across inputs)
  hq_samples                             coalitions of the KernelSHAP targets
      (0: exact Shapley values)
  hq_noise                               d > exact_max_players only: mean
      over test rows of ||HQ_1 - HQ_2||^2 / d / 2 for two HQ runs with
      different keys: an estimate of HQ's own MSE (compare mse/amortized)
  inferences/<budget>/<alpha>            black-box inferences per explanation
      at coverage alpha: 1 + r (n + 1), r the routed share of the test rows
      (deep uncertainty): 1 for f(x) (Amor's efficiency normalisation and
      the predicted class), n coalitions + v(1) of KernelSHAP per routed
      input; v(0) once per batch is not counted
  time/blackbox_s, time/fastshap_fit_s (k members, one run), time/hq_s (HQ
      on train + calibration + test), time/hq_noise_s (the second HQ run on
      test), time/mc_s (MC^n, every budget, calibration + test),
      time/learned_fit_s, time/run_s (the whole run)
  mc_failed/<budget>, mc_failed/<budget>_paired  1.0 where MC^n could not
      run (paired KernelSHAP needs n >= 2 (d - 1)); those keys are absent
"""

import ml_collections

from xai_jax import fastshap
from xai_jax import selective

VARIANTS = ('tabular_d10', 'tabular_d100', 'breast_cancer', 'synthetic_text')
BUDGETS = ('d_plus_1', '2d', '4d')


def get_config(arg: str = 'tabular_d10') -> ml_collections.ConfigDict:
  """Returns the config of one variant (see the module docstring)."""
  if arg not in VARIANTS:
    raise ValueError(f'Unknown config variant {arg!r}; expected one of '
                     f'{list(VARIANTS)}.')
  modality = 'text' if arg == 'synthetic_text' else 'tabular'
  base = selective.default_config(modality)
  c = ml_collections.ConfigDict()
  c.variant = arg
  c.seed = 0
  # ------------------------------------------------------------ data
  c.data = {'tabular_d10': 'dense', 'tabular_d100': 'dense',
            'breast_cancer': 'breast_cancer', 'synthetic_text': 'text'}[arg]
  c.num_rows = 4000          # N (the paper's); breast_cancer: all 569
  c.d = 100 if arg == 'tabular_d100' else 10  # dense: features (else unused)
  c.splits = (0.5, 0.25, 0.25)  # train / calibration / test (the paper's)
  # ------------------------------------------------------------ black box
  c.blackbox = ml_collections.ConfigDict()
  c.blackbox.model = 'mlp'
  c.blackbox.model_kwargs = ml_collections.ConfigDict(
      {'num_classes': 2, 'hidden': (128, 128), 'activation': 'relu'})
  c.blackbox.optimizer = 'adam'
  c.blackbox.learning_rate = 1e-3
  c.blackbox.batch_size = 128
  c.blackbox.num_steps = 1500
  c.blackbox.log_every = 500
  c.blackbox.checkpoint_every = 100_000  # trained in seconds: no checkpoint
  # ------------------------------------------------------------ Amor
  c.ensemble_size = base.ensemble_size  # k FastSHAP members (deep unc.)
  c.baseline = base.baseline            # absent players: 'zero' (text: PAD)
  c.space = base.space                  # explained output: 'probs'
  c.fastshap = fastshap.default_config(modality)
  c.fastshap.num_steps = 2000
  c.fastshap.log_every = 500
  # ------------------------------------------------------------ HQ, MC^n
  c.exact_max_players = base.exact_max_players  # exact Shapley if d <= it
  c.hq_samples = 10_000      # KernelSHAP coalitions of HQ when d is larger
  c.hq_train_samples = 10_000  # ... on the train split (learned unc. only)
  c.mc_budgets = BUDGETS     # n = d + 1, 2d, 4d
  c.mc_budget = '2d'         # the primary budget (curves, claim, figure)
  c.mc_paired = base.mc_paired  # MC^n's coalitions in pairs (z, 1 - z)
  c.compare_pairing = True   # also MC^n with the other pairing (test MSE)
  # ------------------------------------------------------------ selection
  c.coverages = tuple(round(0.1 * i, 1) for i in range(11))  # alpha grid
  c.num_bins = base.num_bins   # lambda bins of every method
  c.bins_deep = 4              # lambda bins of selective_deep_bins
  c.clip_lambda = base.clip_lambda  # lambda in [0, 1]
  c.auroc_top_fraction = 0.1   # AUROC positives: the top-decile errors
  # fit_learned_uncertainty's options (its defaults: a 128-128 MLP for
  # 2,000 steps overfit the 2,000 training errors, d = 10, seed 0: Spearman
  # to the test errors 0.09; this net 0.12)
  c.learned = ml_collections.ConfigDict({
      'hidden': (64,), 'num_steps': 500, 'batch_size': 128,
      'learning_rate': 1e-3})

  if arg == 'tabular_d100':
    c.blackbox.num_steps = 500
    # FastSHAP's default net (ReLU 128x3, Adam 3e-3) learns almost nothing
    # at d = 100 (Spearman 0.09 to HQ, seed 0; trained by regression to
    # KernelSHAP targets its last ReLU layer dies too); tanh 256x2 reaches
    # 0.47 at 2,000 steps and 0.58 at 4,000 (seed 0, one member). 16
    # coalitions a row and step instead of 32 halve the game's cost at the
    # same accuracy (k = 5: 0.61 in 107 s vs 0.61 in 150 s at 4,000 x 32).
    c.fastshap.activation = 'tanh'
    c.fastshap.hidden = (256, 256)
    c.fastshap.num_steps = 6000
    c.fastshap.num_samples = 16
  if arg == 'breast_cancer':
    c.num_rows = 569
    c.blackbox.num_steps = 500
    c.blackbox.batch_size = 64
    c.learned.batch_size = 64
  if arg == 'synthetic_text':
    c.seq_len = 20           # every row 20 tokens: d = 20 players
    c.vocab_size = 50
    c.num_planted = 3
    c.blackbox.model = 'text_cnn'
    c.blackbox.model_kwargs = ml_collections.ConfigDict(
        {'num_classes': 2, 'vocab_size': 50, 'embed_dim': 32,
         'filters': 64, 'hidden': 64})
    c.blackbox.num_steps = 800
    c.fastshap.vocab_size = 50
    c.hq_train_samples = 4096  # the text CNN is slower: fewer on train
  return c
