"""Tests for experiments/l2x.py, its configs and experiments/quickstart.py.

Fast tests check configs, errors and helpers; slow tests run tiny end-to-end
experiments (`run()`) on tabular, image, text and tfds imdb data (a tiny
`imdb_reviews` builder generated here, no TensorFlow) and assert real
numbers.
"""

import json
import os

import jax
import numpy as np
import pytest

from experiments import l2x as l2x_exp
from experiments import quickstart
from experiments import sweep
from experiments.configs import l2x as l2x_configs
from xai_jax.data import synthetic

FMNIST_DIR = '/usr/share/datasets/fashion-mnist/'


def _tiny_tabular(variant='xor', **overrides):
  c = l2x_configs.get_config(variant)
  c.num_train, c.num_test = 20_000, 2_000
  c.batch_size = 200
  c.num_steps = 400
  c.evalx.num_steps = 200
  c.baselines = ('random', 'saliency', 'integrated_gradients', 'kernel_shap')
  c.baseline_num_explain.integrated_gradients = 500
  c.baseline_num_explain.kernel_shap = 100
  c.baseline_kwargs.integrated_gradients = {'steps': 16, 'baseline': 'zero'}
  for k, v in overrides.items():
    c[k] = v
  return c


def _tiny(variant, rows, steps, baselines):
  """A small run: `rows` = (num_train, num_test), `steps` = (black box, L2X,
  EVAL-X) steps."""
  c = l2x_configs.get_config(variant)
  c.num_train, c.num_test = rows
  c.blackbox_train.num_steps, c.num_steps, c.evalx.num_steps = steps
  c.baselines = baselines
  return c


# ----------------------------------------------------------------- configs
@pytest.mark.parametrize('variant', l2x_configs.VARIANTS)
def test_every_variant_builds_and_checks(variant):
  c = l2x_configs.get_config(variant)
  assert c.variant == variant
  assert c.k >= 1 and c.tau > 0 and c.sampler == 'concrete'
  assert set(c.baselines) <= set(l2x_exp.BASELINES)
  l2x_exp.check_config(c)
  if variant in l2x_configs.TABULAR:
    # The paper protocol: 10^6 training rows, 10^5 evaluation rows, 1 epoch
    # of batch 1000, the true P(Y|X) as the black box.
    assert (c.num_train, c.num_test) == (10**6, 10**5)
    assert (c.epochs, c.batch_size, c.blackbox) == (1, 1000, 'oracle')
    assert c.k == synthetic.TABULAR_K[variant]


@pytest.mark.parametrize('variant', l2x_configs.VARIANTS)
def test_the_config_holds_the_l2x_fields_once(variant):
  from xai_jax import l2x  # pylint: disable=g-import-not-at-top
  c = l2x_configs.get_config(variant)
  fields = l2x_exp.l2x_fields(c)
  modality = fields['modality']
  assert set(fields) == set(l2x.default_config(modality).keys())
  assert fields['k'] == c.k and fields['tau'] == c.tau
  # Every L2X field is accepted by l2x.fit's config merge.
  from xai_jax import protocol  # pylint: disable=g-import-not-at-top
  merged = protocol.merge_config(l2x.default_config(modality), fields)
  assert merged.batch_size == c.batch_size


def test_unknown_variant_lists_the_variants():
  with pytest.raises(ValueError, match='switch.*fashion_mnist_pair.*imdb'):
    l2x_configs.get_config('mnist')


def test_k_larger_than_the_groups_is_a_clear_error():
  c = l2x_configs.get_config('xor')
  c.k = 11
  with pytest.raises(ValueError, match=r'config.k=11 is larger than the '
                     r'number of groups d=10'):
    l2x_exp.check_config(c)
  c = l2x_configs.get_config('fashion_mnist')
  c.k = 50
  with pytest.raises(ValueError, match='d=49'):
    l2x_exp.check_config(c)


def test_k_equal_to_the_groups_selects_everything_and_is_an_error():
  c = l2x_configs.get_config('xor')
  c.k = 10
  with pytest.raises(ValueError, match=r'config.k=10 selects all d=10 groups'
                     r".*choose k < 10"):
    l2x_exp.check_config(c)
  c = l2x_configs.get_config('fashion_mnist')
  c.patch = 14                       # a 2x2 grid: d = 4 = k
  with pytest.raises(ValueError, match='config.k=4 selects all d=4 groups'):
    l2x_exp.check_config(c)


@pytest.mark.parametrize('variant', l2x_configs.VARIANTS)
def test_every_variant_checkpoints_and_keeps_its_patch(variant):
  # Before: the tabular configs had checkpoint=False (nothing to resume).
  c = l2x_configs.get_config(variant)
  assert c.checkpoint is True
  fields = l2x_exp.l2x_fields(c)
  assert 'checkpoint_every' in fields and fields['checkpoint_every'] is None
  c.checkpoint_every = 50            # typed: settable from the command line
  assert l2x_exp.l2x_fields(c)['checkpoint_every'] == 50
  if fields['modality'] == 'image':  # the documented 4x4 patches, explicit
    assert c.patch == 4


def test_tabular_fit_checkpoints_into_the_workdir_and_resumes(tmp_path):
  from xai_jax import train  # pylint: disable=g-import-not-at-top
  from experiments import selection  # pylint: disable=g-import-not-at-top
  c = l2x_configs.get_config('xor')
  c.num_train, c.num_test = 2_000, 200
  c.batch_size, c.num_steps, c.log_every = 100, 8, 2
  c.steps_per_call = 1
  c.evalx.num_steps = 0
  setup = selection.prepare(c, str(tmp_path))
  model, info = l2x_exp.fit_l2x(setup, c, str(tmp_path))
  wd = os.path.join(str(tmp_path), 'l2x')
  assert train.latest_checkpoint_step(wd) == 8
  assert info['train_steps'] == 8
  # A rerun resumes from the finished checkpoint: the same model, no steps.
  again, info2 = l2x_exp.fit_l2x(setup, c, str(tmp_path))
  for a, b in zip(jax.tree.leaves(model.params),
                  jax.tree.leaves(again.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert np.isnan(info2['train_steps'])
  # Another L2X setting in the same workdir would resume this run: refused.
  c.tau = 0.5
  with pytest.raises(ValueError, match=r"holds L2X checkpoints of another "
                     r"config \(fields \['tau'\] differ\)"):
    l2x_exp.fit_l2x(setup, c, str(tmp_path))
  c.tau, c.log_every = 0.1, 4        # scoring/logging fields may change
  l2x_exp.fit_l2x(setup, c, str(tmp_path))


def test_patch_that_does_not_divide_the_image_is_a_clear_error():
  c = l2x_configs.get_config('fashion_mnist_pair')
  c.patch = 5
  with pytest.raises(ValueError, match='patch=5 does not divide the image '
                     'size 28x28'):
    l2x_exp.check_config(c)


@pytest.mark.parametrize('variant, field, value, match', [
    ('fashion_mnist', 'blackbox', 'oracle', "config.blackbox='oracle'.*'cnn'"),
    ('switch', 'sampler', 'hard', 'config.sampler'),
    ('switch', 'baselines', ('random', 'lime'), "Unknown baseline 'lime'"),
    ('switch', 'approximator', 'oracle', "config.approximator='oracle'"),
    ('synthetic_text', 'approximator', 'blackbox', 'needs float inputs'),
])
def test_bad_config_fields_are_named(variant, field, value, match):
  c = l2x_configs.get_config(variant)
  c[field] = value
  with pytest.raises(ValueError, match=match):
    l2x_exp.check_config(c)


def test_blackbox_without_a_distribution_is_a_clear_error():
  from xai_jax import blackbox as bb  # pylint: disable=g-import-not-at-top
  from xai_jax import l2x  # pylint: disable=g-import-not-at-top
  reg = bb.from_jax(lambda x: x[:, :1], input_shape=(10,),
                    output='regression')
  x = np.zeros((20, 10), np.float32)
  with pytest.raises(ValueError, match='distribution'):
    l2x.fit(0, reg, x, k=2, num_steps=1, batch_size=10)


def test_quickstart_config_is_small_switch_with_an_mlp():
  c = quickstart.quickstart_config()
  assert c.data == 'switch' and c.blackbox == 'mlp' and c.k == 5
  assert c.num_train <= 200_000
  l2x_exp.check_config(c)


# ------------------------------------------------------------------ helpers
def test_parse_setting_and_overrides():
  assert sweep.parse_setting('subset') == ('subset', {'sampler': 'subset'})
  label, fields = sweep.parse_setting(
      'st_t1:sampler=straight_through,tau=1.0,realx=True')
  assert label == 'st_t1'
  assert fields == {'sampler': 'straight_through', 'tau': 1.0, 'realx': True}
  c = l2x_configs.get_config('switch')
  c.num_train = 1000
  c.evalx.num_steps = 5
  assert sweep.config_overrides(c) == {'num_train': 1000,
                                         'evalx.num_steps': 5}


def test_sweep_markdown_from_results():
  results = {}
  for s in (0, 1):
    for lab, mr in (('concrete', 2.9), ('subset', 2.6)):
      results[('nonlinear_additive', lab, s)] = {
          'median_rank': mr + 0.1 * s, 'tpr': 0.8, 'posthoc_accuracy': 0.9,
          'random/median_rank': 5.5, 'random/posthoc_accuracy': 0.5,
          'train_seconds': 4.0}
  md = sweep.sweep_markdown(results, ['nonlinear_additive'],
                              ['concrete', 'subset'], [0, 1],
                              l2x_configs.get_config('nonlinear_additive'),
                              [8.0, 9.0], 60.0)
  assert '| nonlinear_additive | 2.5 | 2.95 ± 0.07 | 2.65 ± 0.07 | 5.50 ' \
      '± 0.00 |' in md
  assert 'Load average during the sweep: 8.0-9.0' in md


# --------------------------------------------------------------- end to end
def _check_outputs(workdir, metrics, figure):
  with open(os.path.join(workdir, 'metrics.json')) as f:
    saved = json.load(f)
  assert saved == pytest.approx(metrics, nan_ok=True)
  for key in ('posthoc_accuracy', 'evalx_accuracy', 'train_seconds',
              'train_compile_seconds', 'explain_per_second',
              'approximator_accuracy', 'random/posthoc_accuracy',
              'random/evalx_accuracy'):
    assert key in saved and np.isfinite(saved[key]), key
  assert 0.0 <= saved['train_compile_seconds'] <= saved['train_seconds']
  assert os.path.isfile(os.path.join(workdir, 'figures', figure))
  assert os.path.isfile(os.path.join(workdir, 'config.json'))


@pytest.mark.slow
def test_run_xor_oracle_reaches_the_optimum(tmp_path):
  c = _tiny_tabular('xor')
  m = l2x_exp.run(c, str(tmp_path))
  _check_outputs(str(tmp_path), m, 'selection_frequency.png')
  assert m['median_rank'] < 2.0            # optimum 1.5
  assert m['tpr'] > 0.8 and m['fdr'] < 0.2
  assert m['random/median_rank'] > 4.5     # ~5.5
  for b in ('saliency', 'integrated_gradients', 'kernel_shap'):
    assert m[f'{b}/median_rank'] < 1.6, b  # the oracle's gradients are exact
    assert m[f'{b}/num_explain'] <= 2000
  assert m['posthoc_accuracy'] > 0.95 > m['random/posthoc_accuracy']
  assert m['blackbox/test_accuracy'] == 1.0
  # L2X on the same rows as the subsampled baselines (IG: 500, KS: 100).
  assert 'l2x@saliency/num_explain' not in m          # all rows already
  assert m['l2x@integrated_gradients/num_explain'] == 500
  assert m['l2x@kernel_shap/num_explain'] == 100
  for b in ('integrated_gradients', 'kernel_shap'):
    assert m[f'l2x@{b}/posthoc_accuracy'] > 0.95
    assert m[f'l2x@{b}/median_rank'] < 2.0


@pytest.mark.slow
def test_run_switch_with_an_mlp_blackbox(tmp_path):
  c = _tiny_tabular('switch', blackbox='mlp',
                    baselines=('random', 'saliency'))
  c.blackbox_train.num_steps = 400
  m = l2x_exp.run(c, str(tmp_path))
  _check_outputs(str(tmp_path), m, 'selection_frequency.png')
  assert m['blackbox/test_accuracy'] > 0.85
  assert m['median_rank'] < m['random/median_rank'] - 1.0
  assert 0.0 <= m['switch_selects_x10'] <= 1.0
  assert os.path.isdir(os.path.join(str(tmp_path), 'blackbox', 'checkpoints'))


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(FMNIST_DIR),
                    reason='Fashion-MNIST IDX files not installed')
def test_run_fashion_mnist_pair(tmp_path):
  # ~600 / ~100 rows of the pair
  c = _tiny('fashion_mnist_pair', (3000, 500), (80, 60, 40),
            ('random', 'saliency'))
  c.checkpoint = False
  assert c.approximator == 'blackbox'  # q = the frozen CNN on x_S
  m = l2x_exp.run(c, str(tmp_path))
  _check_outputs(str(tmp_path), m, 'patches.png')
  assert m['blackbox/test_accuracy'] > 0.85
  assert 0.0 <= m['posthoc_accuracy'] <= 1.0
  # L2X's own approximator is the black box on x_S: its accuracy is the
  # post-hoc accuracy, by construction.
  assert m['approximator_accuracy'] == pytest.approx(m['posthoc_accuracy'])
  assert m['num_explain'] == pytest.approx(m['random/num_explain'])
  assert 'median_rank' not in m and 'tpr' not in m  # no ground truth


@pytest.mark.slow
def test_run_synthetic_images_has_patch_ground_truth(tmp_path):
  c = _tiny('synthetic_images', (600, 200), (40, 40, 20),
            ('random', 'integrated_gradients'))
  c.baseline_kwargs.integrated_gradients = {'steps': 8, 'baseline': 'zero'}
  m = l2x_exp.run(c, str(tmp_path))
  _check_outputs(str(tmp_path), m, 'patches.png')
  # Random 4 of 49 patches hit the 4 pattern patches ~8% of the time.
  assert 0.0 < m['random/tpr'] < 0.25
  assert 0.0 <= m['tpr'] <= 1.0 and 0.0 <= m['fdr'] <= 1.0


@pytest.mark.slow
def test_run_synthetic_text_finds_planted_tokens(tmp_path):
  c = _tiny('synthetic_text', (4000, 400), (300, 400, 100),
            ('random', 'saliency', 'integrated_gradients'))
  m = l2x_exp.run(c, str(tmp_path))
  _check_outputs(str(tmp_path), m, 'tokens.png')
  assert m['blackbox/test_accuracy'] > 0.95
  assert m['tpr'] > 0.6                     # 3 planted tokens of ~37
  assert m['random/tpr'] < 0.2
  assert m['saliency/tpr'] > m['random/tpr']


# tfds: a tiny `imdb_reviews` (config plain_text, version 1.0.0) written with
# a builder defined here; the loader then reads it through tfds' own
# registered imdb_reviews builder, exactly as real prepared data.
tfds = None
try:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
except ImportError:
  pass

if tfds is not None:

  class TinyImdbReviews(tfds.core.GeneratorBasedBuilder,
                        skip_registration=True):
    """40 train / 20 test short reviews; the label is in 'great/awful'."""
    name = 'imdb_reviews'
    VERSION = tfds.core.Version('1.0.0')
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(
        name='plain_text', version=tfds.core.Version('1.0.0'))]

    def _info(self):
      return tfds.core.DatasetInfo(
          builder=self,
          features=tfds.features.FeaturesDict({
              'text': tfds.features.Text(),
              'label': tfds.features.ClassLabel(names=['neg', 'pos'])}),
          supervised_keys=('text', 'label'))

    def _split_generators(self, dl_manager):
      del dl_manager
      return {'train': self._generate_examples(0, 200),
              'test': self._generate_examples(1, 40)}

    def _generate_examples(self, seed, n):
      rng = np.random.default_rng(seed)
      fillers = ['the', 'movie', 'plot', 'a', 'and', 'is', 'actor', 'was']
      for i in range(n):
        label = i % 2
        cue = ['awful', 'boring'] if label == 0 else ['great', 'superb']
        words = list(rng.choice(fillers, 10)) + [cue[rng.integers(2)]] * 2
        rng.shuffle(words)
        yield i, {'text': ' '.join(words), 'label': label}


@pytest.mark.slow
@pytest.mark.skipif(tfds is None, reason='tensorflow_datasets not installed')
def test_run_imdb_on_a_tiny_tfds_builder(tmp_path):
  data_dir = str(tmp_path / 'tfds')
  TinyImdbReviews(data_dir=data_dir,
                  file_format='array_record').download_and_prepare()
  c = l2x_configs.get_config('imdb')
  c.data_dir = data_dir
  c.seq_len, c.vocab_size, c.k = 16, 30, 2
  c.blackbox_train.model_kwargs.filters = 16
  c.blackbox_train.model_kwargs.hidden = 16
  c.blackbox_train.num_steps = 100
  c.epochs = 2
  c.evalx.num_steps = 50
  c.baselines = ('random', 'saliency')
  m = l2x_exp.run(c, str(tmp_path / 'run'))
  _check_outputs(str(tmp_path / 'run'), m, 'tokens.png')
  assert m['num_explain'] == 40
  assert m['blackbox/test_accuracy'] > 0.9   # the cue words decide
  assert 'tpr' not in m                      # no ground truth
  with open(str(tmp_path / 'run' / 'config.json')) as f:
    assert json.load(f)['data_dir'] == data_dir


@pytest.mark.slow
def test_sweep_writes_a_table_and_resumes(tmp_path):
  c = _tiny_tabular('xor', baselines=('random', 'saliency'))
  c.num_steps = 100
  settings = [('concrete', {'sampler': 'concrete'}),
              ('subset_t0.5', {'sampler': 'subset', 'tau': 0.5})]
  md = sweep.sweep(c, str(tmp_path), ['xor'], [0, 1], settings)
  assert 'L2X concrete' in md and 'L2X subset_t0.5' in md
  assert os.path.isfile(tmp_path / 'table.md')
  for lab in ('concrete', 'subset_t0.5'):
    for s in (0, 1):
      m = json.load(open(tmp_path / 'xor' / lab / f'seed{s}' /
                         'metrics.json'))
      # Selection quality is tested in test_run_xor_oracle_reaches_the_optimum;
      # here every run of the grid wrote its own complete metrics.
      assert 1.0 <= m['median_rank'] <= 9.5
      assert 'saliency/median_rank' in m and 'random/median_rank' in m
  # The overrides of the base config (num_train, ...) reached every run.
  cfg = json.load(open(tmp_path / 'xor' / 'concrete' / 'seed1' /
                       'config.json'))
  assert cfg['num_train'] == 20_000 and cfg['seed'] == 1
  # Rerunning reads the metrics instead of training again.
  md2 = sweep.sweep(c, str(tmp_path), ['xor'], [0, 1], settings)
  assert md2.split('sweep wall time')[1].split('\n', 1)[1] == \
      md.split('sweep wall time')[1].split('\n', 1)[1]
