"""xai_jax: learned, amortized and information-theoretic explainers in JAX/Flax.

  import xai_jax as xj

Every method follows one protocol (`xai_jax.protocol`): `default_config()`,
`fit(key, model, x, config=None, **overrides)`, `explain(explainer, x, *,
key=None, target=None) -> Explanation`, and is registered by name in
`EXPLAINERS`:

  method = xj.EXPLAINERS['l2x']
  explainer = method.fit(0, box, x_train, k=4)
  out = method.explain(explainer, x_test)   # out.scores, out.mask

Modules, one home per concern: `protocol` (the explainer protocol), `blackbox`
(adapters, chunked evaluation), `relax` (relaxed top-k), `masking` (feature
groups, baselines, masked inputs), `train` (the optax loop), `nets` (explainer
networks), `realx` (REAL-X predictor, EVAL-X evaluator), `attribution`
(gradients, IG, SmoothGrad, Grad-CAM, occlusion, RISE, LIME, Shapley values;
`attribution.coalitions`), `metrics` (pure metric functions), `retrain` (keep-
and-retrain, remove-and-retrain), `viz` (figures), `timing` (block timer),
`data`, `models`, and the methods (`l2x`, `normlime`, `fastshap`,
`selective`, `iba`, `input_iba`, `ltx`).
"""

from xai_jax import attribution
from xai_jax import blackbox
from xai_jax import data
from xai_jax import fastshap
from xai_jax import iba
from xai_jax import input_iba
from xai_jax import l2x
from xai_jax import ltx
from xai_jax import masking
from xai_jax import metrics
from xai_jax import models
from xai_jax import nets
from xai_jax import normlime
from xai_jax import protocol
from xai_jax import realx
from xai_jax import relax
from xai_jax import retrain
from xai_jax import selective
from xai_jax import timing
from xai_jax import train
from xai_jax import viz
from xai_jax.blackbox import BlackBox
from xai_jax.blackbox import from_jax
from xai_jax.blackbox import from_linen
from xai_jax.blackbox import from_nnx
from xai_jax.blackbox import from_numpy
from xai_jax.masking import apply_mask
from xai_jax.masking import patch_groups
from xai_jax.relax import concrete_topk
from xai_jax.relax import hard_topk
from xai_jax.relax import perturbed_topk
from xai_jax.protocol import Explanation
from xai_jax.relax import straight_through_topk
from xai_jax.relax import subset_topk

# name -> method (a module or a small object with default_config/fit/explain).
EXPLAINERS = {
    'fastshap': fastshap,
    'iba': iba,
    'input_iba': input_iba,
    'l2x': l2x,
    'ltx': ltx,
    'normlime': normlime,
    'selective': selective,
    **protocol.ATTRIBUTION_EXPLAINERS,
}

__version__ = '0.1.0'
