"""Everything keras-optsuite takes from Keras beyond its public API, in one place.

A Keras upgrade is checked here:

* **Private modules.** Every ``keras.src`` import of the library is below;
  other modules import these names from here.
* **Overrides of private attributes.** :data:`PRIVATE_HOOKS` lists every
  private Keras method keras-optsuite overrides (in a subclass or on an
  instance) and who does; importing this module checks each still exists.
  The one replaced per optimizer instance, ``_all_reduce_sum_gradients``
  (``TFOptimizer``'s cross-replica gradient sum), is replaced here only:
  wrappers take the sum over (:func:`take_over_gradient_sum`), the
  gradient-norm probe listens to it (:func:`listen_to_gradient_sum`).
* **Patches of upstream code** (:class:`UpstreamPatch`): a replacement of a
  Keras function, applied only if Keras is in the version range the patch
  was written for, the backend is TensorFlow, and a probe of the upstream
  source still finds the code the patch was written against. Otherwise the
  upstream code runs unchanged and the patch records why it is off.
  :func:`diagnose` (``optsuite doctor``) lists every patch and hook with its
  state.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from typing import Any, Callable

import keras
from keras.src import tree
from keras.src.backend import AutocastScope  # not exported publicly in Keras 3.15
from keras.src.backend.common import stateless_scope
from keras.src.backend.tensorflow import trainer as tensorflow_trainer
from keras.src.backend.tensorflow.optimizer import TFOptimizer
from keras.src.losses import loss as loss_module
from keras.src.optimizers.optimizer import base_optimizer_keyword_args
from keras.src.saving import serialization_lib
from keras.src.trainers.data_adapters import data_adapter_utils
from keras.src.utils import io_utils

__all__ = [
    "APPLIED", "PRIVATE_HOOKS", "AutocastScope", "TFOptimizer", "UpstreamPatch", "apply_patch",
    "base_optimizer_keyword_args", "data_adapter_utils", "diagnose", "io_utils", "keras_version",
    "listen_to_gradient_sum", "loss_module", "restore_patch", "serialization_lib",
    "stateless_scope", "take_over_gradient_sum", "tensorflow_trainer", "tree",
]

APPLIED = "applied"

# -- private attributes ------------------------------------------------------------
_GRADIENT_SUM = "_all_reduce_sum_gradients"

#: ``(Keras class, private attribute, who overrides it)``: every private Keras
#: method keras-optsuite overrides. A Keras release that renames one must be
#: caught here, at import, not by a silently dead override.
PRIVATE_HOOKS: tuple[tuple[type, str, str], ...] = (
    (TFOptimizer, _GRADIENT_SUM,
     "replaced per instance: wrappers sum the gradients once, the gradient-norm probe listens"),
    (TFOptimizer, "_backend_update_step",
     "overridden by CrossVariableOptimizer, Sophia and LBFGS (one step over all variables)"),
    (TFOptimizer, "_apply_weight_decay", "overridden by OptsuiteOptimizer"),
    (keras.callbacks.ReduceLROnPlateau, "_reduce_optimizer_lr",
     "overridden by keras_optsuite.callbacks.ReduceLROnPlateau (sets the rate under a schedule)"),
    (keras.layers.BatchNormalization, "_renorm_correction_and_moments",
     "overridden by BatchRenormalization (replica-mean statistics)"),
    (keras.layers.BatchNormalization, "_update_renorm_statistics",
     "overridden by BatchRenormalization (replica-mean statistics)"),
)

for _owner, _attribute, _user in PRIVATE_HOOKS:
    if not hasattr(_owner, _attribute):  # pragma: no cover
        raise ImportError(
            f"keras_optsuite needs {_owner.__name__}.{_attribute} ({_user}), which "
            f"Keras {keras.__version__} no longer has; please report this."
        )


def _already_summed(grads_and_vars: Any) -> list:
    return list(grads_and_vars)


def take_over_gradient_sum(optimizer: keras.optimizers.Optimizer) -> None:
    """Make ``optimizer`` treat the gradients it receives as the cross-replica sum.

    An instance attribute shadows ``TFOptimizer``'s method: a wrapper that
    already summed the gradients hands them to ``optimizer`` unchanged.
    """
    setattr(optimizer, _GRADIENT_SUM, _already_summed)


def listen_to_gradient_sum(
    optimizer: keras.optimizers.Optimizer, listener: Callable[[list], None]
) -> None:
    """Call ``listener(pairs)`` with the summed ``(gradient, variable)`` pairs of every step.

    Chains onto whatever sums ``optimizer``'s gradients now (the bound
    method, or a wrapper's override), so install it after wrapping.
    """
    summed = getattr(optimizer, _GRADIENT_SUM)

    def listened(grads_and_vars: Any) -> list:
        pairs = list(summed(grads_and_vars))
        listener(pairs)
        return pairs

    setattr(optimizer, _GRADIENT_SUM, listened)


# -- patches of upstream code ----------------------------------------------------------
def keras_version() -> tuple[int, ...]:
    """The installed Keras version as ``(major, minor, patch)``."""
    return tuple(int(part) for part in re.findall(r"\d+", keras.__version__)[:3])


@dataclasses.dataclass(frozen=True)
class UpstreamPatch:
    """A replacement of ``owner().<attribute>`` that checks the upstream code first.

    Attributes:
        name: the patch's name in statuses (``"train_step"``).
        owner: returns the class or module holding the attribute.
        attribute: the replaced attribute.
        expected_source: fragments of the upstream source the patch was
            written against (whitespace ignored); if one is missing, Keras
            changed and the patch stays off.
        make: ``make(original) -> replacement``.
        fixes_upstream_bug: the fragments are a bug: their absence means the
            patch is *not needed* (a fixed Keras), not merely *not applied*.
        purpose: one line saying what the patch is for (``optsuite doctor``).
    """

    name: str
    owner: Callable[[], Any]
    attribute: str
    expected_source: tuple[str, ...]
    make: Callable[[Callable], Callable]
    fixes_upstream_bug: bool = False
    purpose: str = ""


# {patch name: (owner, attribute, original)} of the patches in place.
_originals: dict[str, tuple[Any, str, Any]] = {}
# {patch name: (APPLIED or why not, the patch)}, for diagnose().
_statuses: dict[str, tuple[str, UpstreamPatch]] = {}


def why_refused(patch: UpstreamPatch, versions: tuple[tuple[int, ...], tuple[int, ...]]) -> str | None:
    """None if ``patch`` may be applied to this Keras, else the reason it may not.

    ``versions`` is the ``[first, last)`` range of Keras versions the patch
    was written and checked for.
    """
    off = "not needed" if patch.fixes_upstream_bug else "not applied"
    low, high = versions
    if not low <= keras_version() < high:
        checked = "affected" if patch.fixes_upstream_bug else "checked"
        return f"{off}: Keras {keras.__version__} is outside the {checked} range"
    if keras.backend.backend() != "tensorflow":
        return f"{off}: backend is {keras.backend.backend()!r}, not 'tensorflow'"
    try:
        owner = patch.owner()
        if isinstance(owner, type) and patch.attribute not in owner.__dict__:
            return f"{off}: upstream code changed ({patch.attribute} moved)"
        source = inspect.getsource(getattr(owner, patch.attribute))
    except (ImportError, AttributeError, OSError, TypeError) as error:
        return f"not applied: upstream code not found ({error})"
    compact = re.sub(r"\s+", "", source)
    missing = [f for f in patch.expected_source if re.sub(r"\s+", "", f) not in compact]
    if not missing:
        return None
    if patch.fixes_upstream_bug:
        return f"{off}: upstream code changed (faulty code not found)"
    return f"{off}: upstream {patch.attribute} changed ({missing[0]!r} not found)"


def apply_patch(patch: UpstreamPatch, versions: tuple[tuple[int, ...], tuple[int, ...]]) -> str:
    """Put ``patch`` in place if :func:`why_refused` allows; idempotent.

    Returns ``"applied"`` or the reason it was not. The replacement keeps the
    upstream function as ``__wrapped__``.
    """
    if patch.name in _originals:
        return APPLIED
    reason = why_refused(patch, versions)
    if reason is not None:
        _statuses[patch.name] = (reason, patch)
        return reason
    owner = patch.owner()
    original = getattr(owner, patch.attribute)
    replacement = patch.make(original)
    replacement.__wrapped__ = original  # type: ignore[attr-defined]  # functions take attributes
    replacement.__doc__ = replacement.__doc__ or f"keras_optsuite patch {patch.name!r}: {patch.purpose}"
    setattr(owner, patch.attribute, replacement)
    _originals[patch.name] = (owner, patch.attribute, original)
    _statuses[patch.name] = (APPLIED, patch)
    return APPLIED


def restore_patch(patch: UpstreamPatch, reason: str) -> None:
    """Put the upstream code back; ``reason`` becomes the patch's status."""
    if patch.name in _originals:
        owner, attribute, original = _originals.pop(patch.name)
        setattr(owner, attribute, original)
    _statuses[patch.name] = (reason, patch)


def patch_status(name: str) -> str | None:
    """``"applied"``, the reason the patch named ``name`` is off, or None if never tried."""
    entry = _statuses.get(name)
    return None if entry is None else entry[0]


# -- TensorFlow's gradient registry ---------------------------------------------------
GRADIENT_REGISTRY_RELEASE = "custom_gradient_release"


def gradient_registry() -> dict | None:
    """TensorFlow's process-wide gradient registry (name -> entry), or None if this TensorFlow has none we know.

    ``keras_optsuite.tuning`` removes the ``tf.custom_gradient`` entries a
    finished trial registered (they keep its traced graph alive:
    tensorflow/tensorflow#97697); without the registry it cannot, and
    :func:`diagnose` says so.
    """
    try:
        from tensorflow.python.framework import ops
    except ImportError:  # pragma: no cover - another backend: nothing registered
        return None
    registry = getattr(getattr(ops, "_gradient_registry", None), "_registry", None)
    return registry if isinstance(registry, dict) else None


def _gradient_registry_status() -> str:
    if gradient_registry() is not None:
        return APPLIED
    return "off: tensorflow.python.framework.ops._gradient_registry._registry not found (memory grows per trial)"


def diagnose(*, print_report: bool = True) -> dict[str, str]:
    """Which Keras patches are active, and why the others are not.

    Lists every :class:`UpstreamPatch` keras-optsuite has tried (importing
    ``keras_optsuite`` tries them all) and the private Keras hooks it uses,
    with the installed Keras version. ``optsuite doctor`` prints the same.

    Returns:
        ``{patch name: "applied" or the reason it is off}``.

    Example:
    >>> import keras_optsuite
    >>> keras_optsuite.diagnose()["train_step"]
    'applied'
    """
    statuses = {name: status for name, (status, _) in sorted(_statuses.items())}
    statuses[GRADIENT_REGISTRY_RELEASE] = _gradient_registry_status()
    if print_report:
        print(f"Keras {keras.__version__}, backend {keras.backend.backend()!r}")
        print("Patches of upstream Keras code (each checks the version range and the upstream source):")
        width = max((len(name) for name in statuses), default=0)
        for name, (status, patch) in sorted(_statuses.items()):
            print(f"  {name:<{width}}  {status}")
            print(f"  {'':<{width}}  replaces {patch.attribute}: {patch.purpose}")
        print("Private Keras methods overridden (each checked present on import):")
        for owner, attribute, user in PRIVATE_HOOKS:
            print(f"  {owner.__name__}.{attribute}: {user}")
        print("Private TensorFlow state used:")
        print(f"  {GRADIENT_REGISTRY_RELEASE}: {statuses[GRADIENT_REGISTRY_RELEASE]}")
        print("    the tuners remove the tf.custom_gradient entries each trial registered "
              "(tensorflow/tensorflow#97697: they keep the trial's traced graph alive)")
    return statuses
