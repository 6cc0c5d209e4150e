"""Legacy global configuration, as PtychoPINN's ``ptycho.params``.

A module-level dictionary ``cfg`` holding PtychoPINN's keys and defaults, read
with :func:`get` and written with :func:`set`.  New code should pass a
:class:`ptycho.config.config.TrainingConfig` or
:class:`~ptycho.config.config.ModelConfig`; a config object passed to a
function always wins over the values here.

What PtychoPINN code relies on, and what this module gives it:

- ``cfg`` is one dictionary object for the life of the process: callers
  clear and refill it in place (``cfg.clear(); cfg.update(saved)``), and
  :func:`get` fills back any default key that went missing that way.
- :func:`get` raises ``KeyError`` for a key that is neither set nor a
  default, unless a default is given; ``get('bigN')`` is derived
  (:func:`get_bigN`) and stored.
- :func:`seal` marks the end of configuration: a later :func:`set` of a key
  outside :data:`SEAL_WHITELIST` still writes, but logs a warning on the
  ``ptycho.params`` logger naming the key and the caller ("post-seal"), so
  out-of-order writes surface without breaking a run.  :func:`unseal` lifts
  it.
- :func:`set` validates the whole configuration (:func:`validate`) before it
  writes: an unknown ``data_source`` is refused and leaves ``cfg`` unchanged.

Importing this module imports neither TensorFlow nor JAX.
"""

from __future__ import annotations

import inspect
import logging
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np

from ptycho.errors import InputError

__all__ = [
    "cfg",
    "DEFAULT_CFG",
    "SEAL_WHITELIST",
    "get",
    "set",
    "params",
    "validate",
    "seal",
    "unseal",
    "is_sealed",
    "ensure_defaults",
    "get_bigN",
    "get_padding_size",
    "get_padded_size",
    "print_params",
    "reset",
]

logger = logging.getLogger(__name__)

#: PtychoPINN's defaults (values as in its ``params.DEFAULT_CFG``), plus this
#: package's two patch-extraction keys.  Read-only: :func:`reset` copies it.
DEFAULT_CFG: Mapping[str, Any] = MappingProxyType(
    {
        # geometry
        "N": 128,
        "offset": 4,
        "gridsize": 2,
        "outer_offset_train": None,
        "outer_offset_test": None,
        "big_gridsize": 10,
        "max_position_jitter": 10,
        "sim_jitter_scale": 0.0,
        "size": 392,
        # training
        "batch_size": 16,
        "nepochs": 60,
        "n_filters_scale": 2,
        "output_prefix": "outputs",
        "mae_weight": 0.0,
        "nll_weight": 1.0,
        "tv_weight": 0.0,
        "realspace_mae_weight": 0.0,
        "realspace_weight": 0.0,
        "nphotons": 1e9,
        "nimgs_train": 9,
        "nimgs_test": 3,
        "npseed": 42,
        # model and data
        "data_source": "generic",
        "probe.trainable": False,
        "intensity_scale.trainable": False,
        "positions.provided": False,
        "object.big": True,
        "probe.big": False,
        "probe_scale": 10.0,
        "default_probe_scale": 0.7,
        "set_phi": False,
        "probe.mask": True,
        "pad_object": True,
        "model_type": "pinn",
        "label": "",
        "amp_activation": "sigmoid",
        "h5_path": "wts.h5",
        "debug": True,
        "gaussian_smoothing_sigma": 0.0,
        "use_xla_translate": True,
        # this package: patch extraction (ptycho.raw_data.get_image_patches)
        "use_batched_patch_extraction": True,
        "patch_extraction_batch_size": None,
    }
)

#: Keys written after configuration as computed results (no post-seal warning).
SEAL_WHITELIST = frozenset({"intensity_scale", "probe", "timestamp"})

#: The values ``data_source`` may take (PtychoPINN's list).
DATA_SOURCES = ("lines", "grf", "experimental", "points", "testimg", "diagonals", "xpp", "V", "generic")

#: The global configuration dictionary (PtychoPINN's ``params.cfg``).
cfg: dict[str, Any] = dict(DEFAULT_CFG)

_MISSING = object()
_sealed = False


def seal() -> None:
    """End configuration: later writes of keys outside :data:`SEAL_WHITELIST` log a warning."""
    global _sealed
    _sealed = True


def unseal() -> None:
    """Lift :func:`seal` (an entry point calls it first, so reruns in one process start clean)."""
    global _sealed
    _sealed = False


def is_sealed() -> bool:
    """Whether :func:`seal` is in force."""
    return _sealed


def ensure_defaults() -> None:
    """Put back every default key missing from ``cfg`` (values already set are kept)."""
    for key, value in DEFAULT_CFG.items():
        cfg.setdefault(key, value)


def get_bigN() -> int:
    """The side of a group's solution region: ``N + (gridsize - 1) * offset``."""
    ensure_defaults()
    return cfg["N"] + (cfg["gridsize"] - 1) * cfg["offset"]


def get_padding_size() -> int:
    """Padding around a group: ``(gridsize - 1) * offset + max_position_jitter``."""
    ensure_defaults()
    return (cfg["gridsize"] - 1) * cfg["offset"] + cfg["max_position_jitter"]


def get_padded_size() -> int:
    """The padded object side the model works on: ``bigN + max_position_jitter``."""
    return get_bigN() + cfg["max_position_jitter"]


def params() -> dict[str, Any]:
    """A copy of ``cfg`` (defaults filled in) with the derived ``bigN``."""
    ensure_defaults()
    out = dict(cfg)
    out["bigN"] = get_bigN()
    return out


def _check(values: Mapping[str, Any]) -> None:
    source = values["data_source"]
    if source not in DATA_SOURCES:
        raise InputError(f"ptycho.params: data_source must be one of {list(DATA_SOURCES)}, got {source!r}")
    if values["realspace_mae_weight"] > 0 and not values["realspace_weight"] > 0:
        raise InputError(
            "ptycho.params: realspace_mae_weight > 0 needs realspace_weight > 0, "
            f"got realspace_mae_weight={values['realspace_mae_weight']!r}, "
            f"realspace_weight={values['realspace_weight']!r}"
        )


def validate() -> bool:
    """Check the combination of values in ``cfg``; True, or :class:`~ptycho.errors.InputError`."""
    ensure_defaults()
    _check(cfg)
    return True


def set(key: str, value: Any) -> None:  # noqa: A001 - PtychoPINN's name
    """Set ``cfg[key] = value`` after checking the result (:func:`validate`).

    After :func:`seal`, a key outside :data:`SEAL_WHITELIST` is still written
    but logs a "post-seal" warning naming the key and the caller.
    """
    ensure_defaults()
    _check({**cfg, key: value})
    if _sealed and key not in SEAL_WHITELIST:
        caller = inspect.currentframe().f_back
        where = f"{caller.f_code.co_filename}:{caller.f_lineno}" if caller is not None else "<unknown>"
        logger.warning("post-seal params.cfg write: %s (from %s)", key, where)
    logger.debug("ptycho.params: %s = %r", key, value)
    cfg[key] = value


def get(key: str, default: Any = _MISSING) -> Any:
    """Return ``cfg[key]`` (``bigN`` is derived); ``default`` if given, else KeyError."""
    ensure_defaults()
    if key == "bigN":
        cfg["bigN"] = get_bigN()
    if key in cfg:
        return cfg[key]
    if default is _MISSING:
        raise KeyError(f"ptycho.params: no key {key!r}; known keys: {sorted(cfg)}")
    return default


def print_params() -> None:
    """Print every parameter; arrays as their shape and statistics."""
    print("Current Parameters:")
    print("-" * 20)
    for key, value in sorted(params().items()):
        if hasattr(value, "shape") and hasattr(value, "dtype"):
            arr = np.asarray(value)
            print(f"{key}:")
            print(f"  shape: {arr.shape}")
            if arr.size:
                print(f"  mean: {np.mean(arr):.3f}")
                print(f"  std: {np.std(arr):.3f}")
                print(f"  min: {np.min(arr):.3f}")
                print(f"  max: {np.max(arr):.3f}")
        else:
            print(f"{key}: {value}")


def reset() -> None:
    """Restore the defaults and lift the seal (used by tests)."""
    unseal()
    cfg.clear()
    cfg.update(DEFAULT_CFG)
