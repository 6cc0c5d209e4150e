"""Legacy global configuration, as PtychoPINN's ``ptycho.params``.

A plain module-level dictionary ``cfg`` with :func:`get` and :func:`set`.  New
code should pass a :class:`ptycho.config.config.TrainingConfig` or
:class:`~ptycho.config.config.ModelConfig`; a config object passed to a
function always wins over the values here.
"""

from __future__ import annotations

from typing import Any

__all__ = ["cfg", "get", "set", "reset"]

_DEFAULTS: dict[str, Any] = {
    "N": 64,
    "gridsize": 1,
    "use_batched_patch_extraction": True,
    "patch_extraction_batch_size": None,
}

#: The global configuration dictionary (PtychoPINN's ``params.cfg``).
cfg: dict[str, Any] = dict(_DEFAULTS)

_MISSING = object()


def get(key: str, default: Any = _MISSING) -> Any:
    """Return ``cfg[key]``; ``default`` if given and the key is absent, else KeyError."""
    if key in cfg:
        return cfg[key]
    if default is _MISSING:
        raise KeyError(f"ptycho.params: no key {key!r}; known keys: {sorted(cfg)}")
    return default


def set(key: str, value: Any) -> None:  # noqa: A001 - PtychoPINN's name
    """Set ``cfg[key] = value``."""
    cfg[key] = value


def reset() -> None:
    """Restore the defaults (used by tests)."""
    cfg.clear()
    cfg.update(_DEFAULTS)
