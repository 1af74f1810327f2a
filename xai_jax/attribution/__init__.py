"""Per-instance attribution methods with one call shape (Captum / PAIR style).

  method(model, x, *, target=None, baseline=..., key=..., **options) -> attributions

`x: [batch, *input_shape]`; `target`: None (the predicted class), an int, or an
int array `[batch]`; attributions `[batch, *input_shape]`, or `[batch,
num_groups]` when the players are feature groups (`groups=`).
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


def get_method(name: str):
  """The attribution function registered under `name` (see `METHODS`)."""
  if name not in METHODS:
    raise ValueError(f'Unknown attribution method {name!r}; expected one of '
                     f'{sorted(METHODS)}.')
  return METHODS[name]
