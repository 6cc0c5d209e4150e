"""Dataclass configuration, compatible with PtychoPINN's ``ptycho.config.config``.

Three dataclasses with PtychoPINN's field names and defaults --
:class:`ModelConfig` (geometry and architecture switches), :class:`TrainingConfig`
and :class:`InferenceConfig` -- plus this package's two patch-extraction
fields on ``ModelConfig`` (``use_batched_patch_extraction``,
``patch_extraction_batch_size``).  Only the geometry and the grouping fields
are read by this package; the others are carried so that PtychoPINN code that
builds, validates and bridges configurations runs unchanged.

The bridge to the legacy dictionary is one-way: :func:`update_legacy_dict`
writes a config's fields into ``ptycho.params.cfg`` under the legacy names
(:data:`KEY_MAPPINGS`, e.g. ``object_big`` -> ``object.big``), skipping
``None`` values so that they do not erase what is set.

Validation is explicit, as in PtychoPINN (:func:`validate_model_config`,
:func:`validate_training_config`, :func:`validate_inference_config`); bad
values raise :class:`~ptycho.errors.InputError` (a ``ValueError``).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Literal, MutableMapping, Optional

from ptycho.errors import InputError, InputTypeError

__all__ = [
    "ModelConfig",
    "TrainingConfig",
    "InferenceConfig",
    "KEY_MAPPINGS",
    "update_legacy_dict",
    "dataclass_to_legacy_dict",
    "validate_model_config",
    "validate_training_config",
    "validate_inference_config",
    "load_yaml_config",
    "resolve_model_config",
]

#: Dataclass field name -> legacy ``params.cfg`` key, where they differ.
KEY_MAPPINGS: Dict[str, str] = {
    "object_big": "object.big",
    "probe_big": "probe.big",
    "probe_mask": "probe.mask",
    "probe_trainable": "probe.trainable",
    "intensity_scale_trainable": "intensity_scale.trainable",
    "positions_provided": "positions.provided",
    "output_dir": "output_prefix",
    "train_data_file": "train_data_file_path",
    "test_data_file": "test_data_file_path",
}

_ARCHITECTURES = ("cnn", "ffno", "fno", "fno_vanilla", "neuralop_uno")


@dataclass(frozen=True)
class ModelConfig:
    """Model and patch geometry.

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

    The remaining fields are PtychoPINN's model switches, carried unchanged
    (this package does not build the model).
    """

    N: int = 64
    gridsize: int = 1
    n_filters_scale: int = 2
    model_type: Literal["pinn", "supervised"] = "pinn"
    architecture: Literal["cnn", "ffno", "fno", "fno_vanilla", "neuralop_uno"] = "cnn"
    fno_modes: int = 12
    fno_width: int = 32
    fno_blocks: int = 4
    fno_cnn_blocks: int = 2
    learned_input_channels: int = 1
    max_hidden_channels: Optional[int] = None
    resnet_width: Optional[int] = None
    fno_input_transform: Literal["none", "sqrt", "log1p", "instancenorm"] = "none"
    generator_output_mode: Literal["real_imag", "amp_phase_logits", "amp_phase"] = "real_imag"
    amp_activation: Literal["sigmoid", "swish", "softplus", "relu"] = "sigmoid"
    object_big: bool = True
    probe_big: bool = True
    probe_mask: bool = False
    probe_mask_sigma: float = 1.0
    probe_mask_diameter: Optional[float] = None
    pad_object: bool = True
    probe_scale: float = 4.0
    gaussian_smoothing_sigma: float = 0.0
    use_batched_patch_extraction: bool = True
    patch_extraction_batch_size: Optional[int] = None


def _n_groups_from_n_images(config: Any) -> None:
    """PtychoPINN's migration: a deprecated ``n_images`` fills an unset ``n_groups``."""
    if config.n_images is not None and config.n_groups is None:
        warnings.warn(
            "n_images is deprecated; use n_groups (the number of groups, whatever the gridsize)",
            DeprecationWarning,
            stacklevel=3,
        )
        object.__setattr__(config, "n_groups", config.n_images)


@dataclass
class TrainingConfig:
    """Training configuration (PtychoPINN's fields and defaults).

    ``model`` defaults to ``ModelConfig()``; ``n_groups`` defaults to 512
    (a deprecated ``n_images`` fills it, with a ``DeprecationWarning``).
    The grouping fields (``n_groups``, ``neighbor_count``,
    ``enable_oversampling``, ``neighbor_pool_size``, ``sequential_sampling``,
    ``subsample_seed``) mean what ``RawData.generate_grouped_data`` takes.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    train_data_file: Optional[Path] = None
    test_data_file: Optional[Path] = None
    batch_size: int = 16
    nepochs: int = 50
    mae_weight: float = 0.0
    nll_weight: float = 1.0
    realspace_mae_weight: float = 0.0
    realspace_weight: float = 0.0
    nphotons: float = 1e9
    n_groups: Optional[int] = None
    n_images: Optional[int] = None
    n_subsample: Optional[int] = None
    subsample_seed: Optional[int] = None
    neighbor_count: int = 4
    enable_oversampling: bool = False
    neighbor_pool_size: Optional[int] = None
    positions_provided: bool = True
    probe_trainable: bool = False
    intensity_scale_trainable: bool = True
    output_dir: Path = Path("training_outputs")
    sequential_sampling: bool = False
    backend: Literal["tensorflow", "pytorch"] = "tensorflow"

    def __post_init__(self) -> None:
        _n_groups_from_n_images(self)
        if self.n_groups is None:
            self.n_groups = 512


@dataclass
class InferenceConfig:
    """Inference configuration (PtychoPINN's fields and defaults)."""

    model: ModelConfig
    model_path: Path
    test_data_file: Path
    n_groups: Optional[int] = None
    n_images: Optional[int] = None
    n_subsample: Optional[int] = None
    subsample_seed: Optional[int] = None
    neighbor_count: int = 4
    enable_oversampling: bool = False
    neighbor_pool_size: Optional[int] = None
    debug: bool = False
    output_dir: Path = Path("inference_outputs")
    backend: Literal["tensorflow", "pytorch"] = "tensorflow"

    def __post_init__(self) -> None:
        _n_groups_from_n_images(self)


def _number(config: Any, name: str) -> float:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, got {value!r}")
    return value


def validate_model_config(config: ModelConfig) -> None:
    """Check a :class:`ModelConfig`; :class:`~ptycho.errors.InputError` names the bad field."""
    if not isinstance(config, ModelConfig):
        raise InputTypeError(f"config must be a ModelConfig, got {type(config).__name__}")
    if config.architecture not in _ARCHITECTURES:
        raise InputError(f"architecture must be one of {list(_ARCHITECTURES)}, got {config.architecture!r}")
    for name in ("N", "gridsize", "n_filters_scale"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise InputError(f"{name} must be a positive integer, got {value!r}")
    if not _number(config, "probe_scale") > 0:
        raise InputError(f"probe_scale must be positive, got {config.probe_scale!r}")
    if _number(config, "gaussian_smoothing_sigma") < 0:
        raise InputError(f"gaussian_smoothing_sigma must be non-negative, got {config.gaussian_smoothing_sigma!r}")


def validate_training_config(config: TrainingConfig) -> None:
    """Check a :class:`TrainingConfig` and its model (PtychoPINN's rules)."""
    if not isinstance(config, TrainingConfig):
        raise InputTypeError(f"config must be a TrainingConfig, got {type(config).__name__}")
    validate_model_config(config.model)
    b = config.batch_size
    if isinstance(b, bool) or not isinstance(b, int) or b <= 0 or b & (b - 1):
        raise InputError(f"batch_size must be a positive power of 2, got {b!r}")
    if isinstance(config.nepochs, bool) or not isinstance(config.nepochs, int) or config.nepochs <= 0:
        raise InputError(f"nepochs must be a positive integer, got {config.nepochs!r}")
    for name in ("mae_weight", "nll_weight"):
        if not 0 <= _number(config, name) <= 1:
            raise InputError(f"{name} must be in [0, 1], got {getattr(config, name)!r}")
    if not _number(config, "nphotons") > 0:
        raise InputError(f"nphotons must be positive, got {config.nphotons!r}")


def validate_inference_config(config: InferenceConfig) -> None:
    """Check an :class:`InferenceConfig`: its model, and that ``model_path`` exists.

    ``model_path`` may be a directory holding ``wts.h5.zip``, or a file given
    with or without its ``.zip`` suffix.
    """
    if not isinstance(config, InferenceConfig):
        raise InputTypeError(f"config must be an InferenceConfig, got {type(config).__name__}")
    validate_model_config(config.model)
    path = Path(config.model_path)
    if path.is_dir():
        if not (path / "wts.h5.zip").exists():
            raise InputError(f"model_path {str(path)!r} is a directory without wts.h5.zip")
        return
    tried = [path, path.with_suffix(".zip")]
    if path.name == "wts.h5":
        tried.append(path.with_suffix(".h5.zip"))
    if not any(p.exists() for p in tried):
        raise InputError(f"model_path does not exist: tried {[str(p) for p in tried]}")


def load_yaml_config(path: Any) -> Dict[str, Any]:
    """Read a YAML file of configuration fields into a dict (needs PyYAML)."""
    try:
        import yaml
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("load_yaml_config needs PyYAML (pip install pyyaml)") from exc
    with open(path) as f:
        return yaml.safe_load(f)


def dataclass_to_legacy_dict(obj: Any) -> Dict[str, Any]:
    """A config's fields under their legacy names (a nested ``model`` flattened in).

    Paths become strings; ``None`` values are kept (:func:`update_legacy_dict`
    skips them).
    """
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        raise InputTypeError(
            f"config must be a dataclass instance (ModelConfig, TrainingConfig, InferenceConfig), "
            f"got {type(obj).__name__}"
        )
    values = dataclasses.asdict(obj)
    values.update(values.pop("model", None) or {})
    return {
        KEY_MAPPINGS.get(key, key): str(value) if isinstance(value, Path) else value
        for key, value in values.items()
    }


def update_legacy_dict(cfg: MutableMapping[str, Any], config: Any) -> None:
    """Write a config's fields into the legacy dictionary ``cfg`` (None values skipped)."""
    for key, value in dataclass_to_legacy_dict(config).items():
        if value is not None:
            cfg[key] = value


def resolve_model_config(config: Any) -> Optional[ModelConfig]:
    """Return the ``ModelConfig`` inside ``config`` (or None when ``config`` is None)."""
    if config is None:
        return None
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
