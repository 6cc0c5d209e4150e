"""Dataclass configuration, compatible with PtychoPINN's ``ptycho.config.config``.

Only the fields that patch extraction reads are defined here; a
``TrainingConfig`` carries a ``ModelConfig`` in ``model``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, MutableMapping, Optional
from ptycho.errors import InputTypeError


__all__ = ["ModelConfig", "TrainingConfig", "update_legacy_dict", "resolve_model_config"]


@dataclass(frozen=True)
class ModelConfig:
    """Model/patch geometry.

    Attributes
    ----------
    N : int
        Patch side in pixels.
    gridsize : int
        Patches per group along each axis; a group has ``gridsize**2`` channels.
    use_batched_patch_extraction : bool
        True (default): the batched translate-then-slice engine.  False: the
        legacy per-patch loop (deprecated; warns).
    patch_extraction_batch_size : int or None
        Patches per engine call (chunking bounds working memory); None = all.
    """

    N: int = 64
    gridsize: int = 1
    use_batched_patch_extraction: bool = True
    patch_extraction_batch_size: Optional[int] = None


@dataclass(frozen=True)
class TrainingConfig:
    """Training configuration; only ``model`` matters for patch extraction."""

    model: ModelConfig = field(default_factory=ModelConfig)
    nepochs: int = 50
    batch_size: int = 16


def update_legacy_dict(cfg: MutableMapping[str, Any], config: Any) -> None:
    """Copy the fields of a ``ModelConfig`` or ``TrainingConfig`` into ``cfg``."""
    model = config.model if isinstance(config, TrainingConfig) else config
    if not isinstance(model, ModelConfig):
        raise InputTypeError(
            f"update_legacy_dict: config must be a ModelConfig or TrainingConfig, "
            f"got {type(config).__name__}"
        )
    cfg.update(dataclasses.asdict(model))
    if isinstance(config, TrainingConfig):
        cfg["nepochs"] = config.nepochs
        cfg["batch_size"] = config.batch_size


def resolve_model_config(config: Any) -> Optional[ModelConfig]:
    """Return the ``ModelConfig`` inside ``config`` (or None when ``config`` is None)."""
    if config is None:
        return None
    if isinstance(config, TrainingConfig):
        return config.model
    if isinstance(config, ModelConfig):
        return config
    model = getattr(config, "model", None)
    if model is not None and hasattr(model, "N"):
        return model
    if hasattr(config, "N") and hasattr(config, "gridsize"):
        return config
    raise InputTypeError(
        f"config must be a ModelConfig or TrainingConfig, got {type(config).__name__}"
    )
