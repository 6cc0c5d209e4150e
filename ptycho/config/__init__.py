"""Typed configuration (PtychoPINN's ``ptycho.config``)."""

from ptycho.config.config import ModelConfig, TrainingConfig, update_legacy_dict

__all__ = ["ModelConfig", "TrainingConfig", "update_legacy_dict"]
