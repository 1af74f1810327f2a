"""Per-instance attribution methods with one call shape (Captum / PAIR style).

The shared calling convention::

  method(model, x, *, target=None, baseline=..., key=..., groups=None,
         space='raw', chunk_size=None, **options) -> attributions

* `model`: a `BlackBox` (`xai_jax.from_linen`, `from_nnx`, `from_jax`,
  `from_numpy`) or a plain JAX callable `[batch, *input_shape] -> [batch, c]`.
* `x: [batch, *input_shape]`.
* `target`: None (the predicted class at x), an int, or an int array `[batch]`.
* `baseline`: the value of absent features: a kind ('zero', 'mean' with
  `data=[m, *input_shape]`, 'blur', 'noise', 'reference'), a scalar, or an
  array `[*input_shape]` / `[batch, *input_shape]`. `background=[m,
  *input_shape]` (occlusion and the Shapley methods) averages over data rows
  instead (interventional values).
* `key`: a `jax.random.key` or an int seed; required by the random methods
  (smoothgrad, rise, lime, permutation_shap, kernel_shap when it samples).
  Same key, same output.
* `groups`: optional `masking.FeatureGroups` (patches, superpixels, tokens):
  the players of the perturbation methods; attributions are then
  `[batch, num_groups]`, else `[batch, *input_shape]`.
* `space`: the explained output: 'raw' (the box's own output), 'probs' or
  'log_probs'.
* `chunk_size`: bound on the model rows of one call (memory): an int,
  1024 by default for the gradient methods, occlusion and rise; None
  (automatic) by default for lime and the Shapley methods.

Each method takes those of the arguments above that apply to it (saliency,
grad_x_input and gradcam: `target` and `space`). An unknown keyword is a
`ValueError` in every method, naming ours for another library's name
(`n_steps` -> `steps`, `baselines` -> `baseline`, `nsamples` ->
`num_samples`, `feature_mask` -> `groups`); `integrated_gradients`,
`occlusion` and `rise` pass `**options` on to the baseline (`reference`,
`blur_sigma`, `noise_std`).

Methods (all in `METHODS`; `get_method(name)` looks one up):

Gradients (differentiable float inputs):

* `saliency`: the gradient of the target score, |dF_c/dx|. Simonyan, Vedaldi
  & Zisserman 2014. Options: `absolute` (default True).
* `grad_x_input`: gradient times input, x * dF_c/dx. Shrikumar et al. 2016;
  Ancona et al. 2018. Options: none beyond `target`, `space`.
* `integrated_gradients`: gradients averaged along the straight path from
  the baseline to x, times (x - baseline); complete (sum = F(x) -
  F(baseline)). Sundararajan, Taly & Yan 2017. Options: `baseline`
  ('zero'), `steps` (50), `rule` (one of `IG_RULES`), `chunk_size`; check
  the quadrature with `ig_completeness_error`.
* `smoothgrad`: gradients averaged over Gaussian-noised copies of x.
  Smilkov et al. 2017. Options: `key`, `num_samples` (50), `noise_level`
  (0.15 of max(x) - min(x)), `square` (SmoothGrad-Squared), `absolute`.
* `gradcam`: channel-weighted activations of a convolutional layer,
  upsampled to the image. Selvaraju et al. 2017. Needs a box split at a conv
  layer (`from_linen(..., split_at=...)`). Options: `keep_channels`.

Perturbation (any black box, `from_numpy` ones included):

* `occlusion`: the drop of the score when each feature or group is replaced
  by the baseline. Zeiler & Fergus 2014. Options: `baseline`, `background`,
  `groups` (e.g. `masking.patch_groups`), `chunk_size`.
* `rise`: the score averaged over random masks, weighted by each mask.
  Petsiuk, Das & Saenko 2018. Options: `key`, `num_masks` (4000), `grid`
  (7), `p1` (0.5), `baseline`, `groups`.
* `lime`: a weighted ridge regression fitted to the model around x.
  Ribeiro, Singh & Guestrin 2016. Options: `key`, `num_samples` (5000),
  `mode` ('tabular', needs `data=` or `feature_mean`/`feature_std`; or
  'groups'), `groups`, `kernel_width`, `alpha`, `num_features`,
  `return_info`.

Shapley values (the players are features or `groups`):

* `exact_shapley`: every one of the 2^d coalitions. Shapley 1953. Options:
  `baseline`, `background`, `groups`, `max_players` (20).
* `kernel_shap`: the Shapley-kernel weighted regression, solved in closed
  form with the efficiency constraint. Lundberg & Lee 2017; Covert & Lee
  2021. Options: `key`, `num_samples` (2 d + 2048), `paired`,
  `enumerate_sizes`, `stratify`, `background`, `background_samples`.
* `permutation_shap`: marginal contributions averaged over random feature
  orders. Strumbelj & Kononenko 2014. Options: `key`,
  `num_permutations` (100), `antithetic`, `background`,
  `background_samples`.

Helpers: `IG_RULES` (quadrature rules of integrated_gradients),
`ig_completeness_error`, `shapley_kernel` and `sample_shapley_coalitions`
(the Shapley-kernel distribution and sampler), the `coalitions` module.

Several devices: the methods are jit-compiled vmaps over the batch, so an
`x` placed on a `NamedSharding` over a `Mesh('data')` is explained on every
device (docs/devices.md).
"""

from xai_jax.attribution import coalitions
from xai_jax.attribution.coalitions import sample_shapley_coalitions
from xai_jax.attribution.coalitions import shapley_kernel
from xai_jax.attribution.gradients import grad_x_input
from xai_jax.attribution.gradients import gradcam
from xai_jax.attribution.gradients import IG_RULES
from xai_jax.attribution.gradients import ig_completeness_error
from xai_jax.attribution.gradients import integrated_gradients
from xai_jax.attribution.gradients import saliency
from xai_jax.attribution.gradients import smoothgrad
from xai_jax.attribution.lime import lime
from xai_jax.attribution.perturbation import occlusion
from xai_jax.attribution.perturbation import rise
from xai_jax.attribution.shap import exact_shapley
from xai_jax.attribution.shap import kernel_shap
from xai_jax.attribution.shap import permutation_shap

METHODS = {
    'saliency': saliency,
    'grad_x_input': grad_x_input,
    'integrated_gradients': integrated_gradients,
    'smoothgrad': smoothgrad,
    'gradcam': gradcam,
    'occlusion': occlusion,
    'rise': rise,
    'lime': lime,
    'exact_shapley': exact_shapley,
    'kernel_shap': kernel_shap,
    'permutation_shap': permutation_shap,
}

__all__ = [
    *METHODS,
    'METHODS',
    'get_method',
    'IG_RULES',
    'ig_completeness_error',
    'sample_shapley_coalitions',
    'shapley_kernel',
    'coalitions',
]


def get_method(name: str):
  """The attribution function registered under `name` (see `METHODS`)."""
  if name not in METHODS:
    raise ValueError(f'Unknown attribution method {name!r}; expected one of '
                     f'{sorted(METHODS)}.')
  return METHODS[name]
