"""The explainer protocol every method follows, learned or per-instance.

    import xai_jax as xj
    method = xj.EXPLAINERS['kernel_shap']          # or 'l2x', 'saliency', ...
    config = method.default_config()                # ml_collections ConfigDict
    explainer = method.fit(0, box, x_train, num_samples=512)
    out = method.explain(explainer, x_test, key=1)  # -> Explanation
    out.scores                                      # [batch, num_groups] or maps

Three functions make a method:

  * `default_config() -> ConfigDict`: every hyper-parameter, named with the
    paper's symbol in a comment; the single source of hyper-parameters (the
    experiment configs start from it).
  * `fit(key, model, x, config=None, **overrides) -> explainer`: a
    `flax.struct` pytree with everything `explain` needs. Learned methods
    train here; per-instance methods (gradients, LIME, KernelSHAP ...) fit
    trivially and hold their options. `overrides` name config fields and are
    merged into `config` by `merge_config`, the one place that does it: an
    unknown field is a `ValueError` listing the valid ones.
  * `explain(explainer, x, *, key=None, target=None) -> Explanation`, with
    `scores` `[batch, num_groups]` (or input-shaped maps for image methods)
    and, for selection methods, `mask` `[batch, num_groups]`. A method may
    add keyword-only options of its own after these.

`xai_jax.EXPLAINERS` maps a name to each method (a module, or an
`AttributionMethod` wrapping a one-call function of `xai_jax.attribution`).
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any, Callable, Mapping, Protocol

import flax
import jax
import ml_collections

from xai_jax import _checks
from xai_jax import attribution
from xai_jax import blackbox as bb

Array = jax.Array
ConfigLike = ml_collections.ConfigDict | Mapping[str, Any] | None


@flax.struct.dataclass
class Explanation:
  """What `explain` returns (a pytree).

  Attributes:
    scores: `[batch, num_groups]` importance of each feature group, or
      input-shaped maps `[batch, *input_shape]` (image methods without
      groups); higher = more important.
    mask: `[batch, num_groups]` 0/1 selection of selection methods (L2X:
      exactly k ones per row); None for attribution methods.
  """

  scores: Array
  mask: Array | None = None


class Method(Protocol):
  """The three functions of a method (a module or a small object)."""

  def default_config(self) -> ml_collections.ConfigDict:
    ...

  def fit(self, key: Any, model: Any, x: Any, config: ConfigLike = None,
          **overrides: Any) -> Any:
    ...

  def explain(self, explainer: Any, x: Any, *, key: Any = None,
              target: Any = None) -> Explanation:
    ...


def _fields(config: ConfigLike, what: str) -> dict[str, Any]:
  if config is None:
    return {}
  if isinstance(config, ml_collections.ConfigDict):
    return dict(config.items())
  if isinstance(config, Mapping):
    return dict(config)
  raise ValueError(f'{what} must be an ml_collections.ConfigDict or a dict, '
                   f'got {type(config).__name__}.')


def peek(name: str, config: ConfigLike, overrides: Mapping[str, Any],
         default: Any = None) -> Any:
  """A field's value before merging: `overrides`, else `config`, else `default`.

  For the few fields that choose the defaults themselves (L2X's `modality`).
  """
  if name in overrides:
    return overrides[name]
  fields = _fields(config, 'config')
  if name in fields:
    return fields[name]
  return default


def _did_you_mean(unknown: list[str], valid: list[str]) -> str:
  """' (did you mean 'sampler'?)' for the close matches of unknown names
  (`difflib.get_close_matches`), or '' when there are none."""
  hints = []
  for name in unknown:
    close = difflib.get_close_matches(str(name), valid, n=1)
    if close:
      hints.append(f'{close[0]!r}' if len(unknown) == 1
                   else f'{close[0]!r} for {name!r}')
  return f' (did you mean {", ".join(hints)}?)' if hints else ''


def merge_config(defaults: ml_collections.ConfigDict, config: ConfigLike = None,
                 overrides: Mapping[str, Any] | None = None, *,
                 method: str = 'method') -> ml_collections.ConfigDict:
  """`defaults` updated by `config`, then by `overrides`: the one merge.

  Args:
    defaults: the method's `default_config()` (not modified).
    config: a ConfigDict or dict of some of its fields (None: none).
    overrides: keyword overrides of `fit`, field name -> value.
    method: the method's name, for error messages.
  Returns:
    a new ConfigDict with every field of `defaults`.
  Raises:
    ValueError: a field of `config` or `overrides` that `defaults` lacks (the
      message suggests the closest valid name, e.g. "did you mean
      'sampler'?", and lists the valid fields).
  """
  merged = ml_collections.ConfigDict(defaults.to_dict(),
                                     type_safe=defaults.is_type_safe)
  valid = sorted(merged.keys())
  for what, fields in (('config', _fields(config, 'config')),
                       ('override', dict(overrides or {}))):
    unknown = sorted(set(fields) - set(valid))
    if unknown:
      raise ValueError(
          f'Unknown {method} {what} field(s) {unknown}'
          f'{_did_you_mean(unknown, valid)}; valid fields: {valid}.')
    for name, value in fields.items():
      if isinstance(value, ml_collections.ConfigDict):
        value = value.to_dict()
      try:
        merged[name] = value
      except TypeError as e:
        raise ValueError(f'{method} config field {name!r}: {e}') from None
  return merged


# ---------------------------------------------------------------------------
# The one-call attribution functions under the protocol.

# Arguments of an attribution function that are not options (`return_info`
# changes the return type, so `explain` leaves it at its default).
_CALL_ARGS = ('model', 'x', 'key', 'target', 'return_info')


@flax.struct.dataclass
class AttributionExplainer:
  """A per-instance method with its options (what `AttributionMethod.fit` returns).

  Attributes:
    model: the `BlackBox` explained.
    name: the method's name in `attribution.METHODS` (static).
    config: its options, a frozen ConfigDict (static).
  """

  model: bb.BlackBox
  name: str = flax.struct.field(pytree_node=False)
  config: ml_collections.FrozenConfigDict = flax.struct.field(
      pytree_node=False)


class AttributionMethod:
  """The protocol around one function of `xai_jax.attribution`.

  `default_config()` holds the function's keyword options and defaults,
  `fit` binds the model and options (no training), and `explain` calls
  `fn(model, x, key=key, target=target, **options)`.
  """

  def __init__(self, name: str, fn: Callable[..., Array]):
    self.name = name
    self.fn = fn
    params = inspect.signature(fn).parameters
    self._takes_key = 'key' in params
    self._defaults = {
        p.name: p.default for p in params.values()
        if p.kind == p.KEYWORD_ONLY and p.name not in _CALL_ARGS
        and p.default is not p.empty}
    self.__doc__ = (f'`xai_jax.attribution.{fn.__name__}` under the explainer '
                    f'protocol.\n\n' + (fn.__doc__ or ''))

  def __repr__(self) -> str:
    return f'AttributionMethod({self.name!r})'

  def default_config(self) -> ml_collections.ConfigDict:
    """The options of the function and their defaults (not type-safe: a
    baseline may be a string, a number or an array)."""
    return ml_collections.ConfigDict(dict(self._defaults), type_safe=False,
                                     convert_dict=False)

  def fit(self, key: Any, model: bb.BlackBox | Callable, x: Any,
          config: ConfigLike = None, **overrides: Any) -> AttributionExplainer:
    """Binds the model and the options; nothing is trained.

    Args:
      key: unused (a per-instance method has nothing random to fit); checked
        like every key (None, an int seed or a PRNG key).
      model: a `BlackBox` or a JAX callable `[batch, *input_shape] -> outputs`.
      x: `[n, *input_shape]` example inputs (their shape types a plain callable).
      config: options (a ConfigDict/dict of `default_config()` fields).
      **overrides: options by name.
    Returns:
      an `AttributionExplainer`.
    Raises:
      ValueError: unknown option (listing the valid ones), bad `x` or `key`.
    """
    _checks.as_key('key', key, default_seed=0)
    _checks.check_array('x', x, min_ndim=2)
    box = bb.as_blackbox(model, input_shape=tuple(x.shape[1:]))
    cfg = merge_config(self.default_config(), config, overrides,
                       method=self.name)
    return AttributionExplainer(model=box, name=self.name,
                                config=ml_collections.FrozenConfigDict(cfg))

  def explain(self, explainer: AttributionExplainer, x: Any, *,
              key: Any = None, target: Any = None) -> Explanation:
    """Explains `x` `[batch, *input_shape]` -> `Explanation(scores=...)`.

    `scores` is what the function returns: `[batch, num_groups]` with
    `groups`, else input-shaped. `key` (a PRNG key or int seed) is required
    by the random methods (SmoothGrad, RISE, LIME, sampled Shapley values).
    """
    if explainer.name != self.name:
      raise ValueError(f'explainer was fitted by {explainer.name!r}, not '
                       f'{self.name!r}.')
    options = dict(explainer.config.items())
    if self._takes_key:
      options['key'] = key
    scores = self.fn(explainer.model, x, target=target, **options)
    return Explanation(scores=scores)


ATTRIBUTION_EXPLAINERS: dict[str, AttributionMethod] = {
    name: AttributionMethod(name, fn)
    for name, fn in attribution.METHODS.items()}


def get(registry: Mapping[str, Any], name: str) -> Any:
  """`registry[name]`, or a `ValueError` listing the registered names."""
  _checks.check_choice('explainer', name, registry)
  return registry[name]


__all__ = [
    'ATTRIBUTION_EXPLAINERS', 'AttributionExplainer', 'AttributionMethod',
    'Explanation', 'Method', 'get', 'merge_config', 'peek',
]
