"""Typed configuration (PtychoPINN's ``ptycho.config``)."""

from ptycho.config.config import (
    InferenceConfig,
    ModelConfig,
    TrainingConfig,
    update_legacy_dict,
    validate_inference_config,
    validate_model_config,
    validate_training_config,
)

__all__ = [
    "InferenceConfig",
    "ModelConfig",
    "TrainingConfig",
    "update_legacy_dict",
    "validate_inference_config",
    "validate_model_config",
    "validate_training_config",
]
