"""Configuration precedence and the feature flag."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from tests.helpers import assert_close, random_object


@pytest.fixture(autouse=True)
def _clean_params():
    from ptycho import params

    params.reset()
    yield
    params.reset()


def _inputs(c=4, B=3):
    rng = np.random.default_rng(0)
    image = random_object((30, 34), np.complex64, 0)
    glob = rng.uniform(5, 25, (B, 1, 2, 1))
    loc = rng.uniform(-3, 3, (B, 1, 2, c))
    return image, glob, loc


def test_params_get_set():
    from ptycho import params

    assert params.get("N") == 128 and params.get("gridsize") == 2  # PtychoPINN's defaults
    params.set("N", 32)
    assert params.cfg["N"] == 32
    assert params.get("missing", 7) == 7
    with pytest.raises(KeyError, match="missing"):
        params.get("missing")


def test_update_legacy_dict():
    from ptycho import params
    from ptycho.config.config import ModelConfig, TrainingConfig, update_legacy_dict

    update_legacy_dict(params.cfg, TrainingConfig(model=ModelConfig(N=16, gridsize=3), nepochs=2))
    assert params.get("N") == 16 and params.get("gridsize") == 3 and params.get("nepochs") == 2


def test_n_and_gridsize_fall_back_to_params(tf):
    from ptycho import params
    from ptycho.raw_data import get_image_patches

    params.set("N", 8)
    params.set("gridsize", 2)
    image, glob, loc = _inputs()
    assert tuple(get_image_patches(image, glob, loc).shape) == (3, 8, 8, 4)


def test_config_wins_over_params(tf):
    from ptycho import params
    from ptycho.config.config import ModelConfig, TrainingConfig
    from ptycho.raw_data import get_image_patches

    params.set("N", 8)
    params.set("gridsize", 3)
    image, glob, loc = _inputs()
    got = get_image_patches(image, glob, loc, config=TrainingConfig(model=ModelConfig(N=12, gridsize=2)))
    assert tuple(got.shape) == (3, 12, 12, 4)


def test_explicit_arguments_win_over_config(tf):
    from ptycho.config.config import ModelConfig
    from ptycho.raw_data import get_image_patches

    image, glob, loc = _inputs(c=1)
    got = get_image_patches(image, glob, loc, N=6, gridsize=1, config=ModelConfig(N=12, gridsize=2))
    assert tuple(got.shape) == (3, 6, 6, 1)


def test_flag_selects_legacy_loop_with_deprecation_warning(tf):
    from ptycho.config.config import ModelConfig
    from ptycho.raw_data import get_image_patches

    image, glob, loc = _inputs()
    with pytest.warns(DeprecationWarning, match="legacy per-patch loop"):
        legacy = get_image_patches(image, glob, loc, config=ModelConfig(N=10, gridsize=2, use_batched_patch_extraction=False))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batched = get_image_patches(image, glob, loc, config=ModelConfig(N=10, gridsize=2))
    assert_close(batched, legacy.numpy(), backend="tensorflow", exact=True)


def test_flag_from_params(tf):
    from ptycho import params
    from ptycho.raw_data import get_image_patches

    params.set("use_batched_patch_extraction", False)
    image, glob, loc = _inputs()
    with pytest.warns(DeprecationWarning):
        get_image_patches(image, glob, loc, N=8, gridsize=2)


def test_default_is_batched():
    from ptycho.config.config import ModelConfig

    assert ModelConfig().use_batched_patch_extraction is True


@pytest.mark.parametrize("batch", [1, 3, 4, 5, 100])
def test_mini_batches_equal_one_call(tf, batch):
    """Chunking (patch_extraction_batch_size) never changes a bit."""
    from ptycho.config.config import ModelConfig
    from ptycho.raw_data import get_image_patches

    image, glob, loc = _inputs(B=5)
    whole = get_image_patches(image, glob, loc, config=ModelConfig(N=10, gridsize=2))
    chunked = get_image_patches(image, glob, loc, config=ModelConfig(N=10, gridsize=2, patch_extraction_batch_size=batch))
    assert_close(chunked, whole.numpy(), backend="tensorflow", shape=(5, 10, 10, 4), exact=True)


def test_global_offsets_per_channel(tf):
    """global_offsets may carry one position per channel (B, 1, 2, c)."""
    from ptycho.raw_data import get_image_patches

    image, glob, loc = _inputs()
    per_channel = np.repeat(glob, 4, axis=3)
    a = get_image_patches(image, glob, loc, N=8, gridsize=2)
    b = get_image_patches(image, per_channel, loc, N=8, gridsize=2)
    assert_close(b, a.numpy(), backend="tensorflow", exact=True)


# -- PtychoPINN's legacy dictionary: defaults, derived sizes, the seal ---------


def test_params_cfg_is_refilled_in_place():
    """Callers clear and refill ``cfg`` in place; defaults come back on the next read."""
    from ptycho import params

    cfg = params.cfg
    cfg.clear()
    cfg.update({"N": 32})
    assert params.get("N") == 32
    assert params.get("gridsize") == 2 and params.cfg is cfg
    assert params.get("offset") == 4


def test_params_derived_sizes():
    from ptycho import params

    params.set("N", 64)
    params.set("gridsize", 2)
    params.set("offset", 4)
    params.set("max_position_jitter", 10)
    assert params.get_bigN() == params.get("bigN") == 68
    assert params.get_padding_size() == 14
    assert params.get_padded_size() == 78
    assert params.params()["bigN"] == 68


def test_params_set_refuses_an_invalid_combination():
    from ptycho import params
    from ptycho.errors import InputError

    with pytest.raises(InputError, match="data_source"):
        params.set("data_source", "nonsense")
    assert params.get("data_source") == "generic"
    with pytest.raises(InputError, match="realspace_weight"):
        params.set("realspace_mae_weight", 0.5)
    params.set("realspace_weight", 1.0)
    params.set("realspace_mae_weight", 0.5)
    assert params.validate() is True


def _post_seal(records):
    return [r for r in records if "post-seal" in r.getMessage()]


def test_params_seal_warns_once_per_late_write(caplog):
    import logging

    from ptycho import params

    params.set("gridsize", 1)
    params.seal()
    assert params.is_sealed()
    with caplog.at_level(logging.WARNING, logger="ptycho.params"):
        params.set("gridsize", 2)
        params.set("intensity_scale", 3.0)  # a computed result: whitelisted
    late = _post_seal(caplog.records)
    assert len(late) == 1 and "gridsize" in late[0].getMessage() and "test_config.py" in late[0].getMessage()
    assert late[0].levelno == logging.WARNING
    assert params.get("gridsize") == 2  # warned, still written


def test_params_unsealed_and_reset_are_silent(caplog):
    import logging

    from ptycho import params

    params.seal()
    params.reset()
    assert not params.is_sealed()
    with caplog.at_level(logging.WARNING, logger="ptycho.params"):
        params.set("N", 32)
    assert not _post_seal(caplog.records)


def test_print_params(capsys):
    from ptycho import params

    params.set("probe", np.ones((2, 2), np.complex64))
    params.print_params()
    out = capsys.readouterr().out
    assert "N: 128" in out and "probe:\n  shape: (2, 2)" in out and "bigN: 132" in out


# -- PtychoPINN's dataclasses: the bridge and validation ----------------------


def test_legacy_names_and_none_skipped():
    from pathlib import Path

    from ptycho import params
    from ptycho.config.config import ModelConfig, TrainingConfig, dataclass_to_legacy_dict, update_legacy_dict

    config = TrainingConfig(
        model=ModelConfig(N=64, gridsize=2, object_big=False),
        train_data_file=Path("/data/train.npz"),
        n_subsample=None,
    )
    legacy = dataclass_to_legacy_dict(config)
    assert legacy["object.big"] is False and "object_big" not in legacy
    assert legacy["train_data_file_path"] == "/data/train.npz"
    assert legacy["output_prefix"] == "training_outputs" and "output_dir" not in legacy
    assert legacy["probe.trainable"] is False and legacy["intensity_scale.trainable"] is True
    params.set("n_subsample", 7)
    update_legacy_dict(params.cfg, config)
    assert params.get("n_subsample") == 7  # None does not erase a set value
    assert params.get("N") == 64 and params.get("gridsize") == 2 and params.get("n_groups") == 512


def test_n_images_fills_n_groups_with_a_warning():
    from ptycho.config.config import ModelConfig, TrainingConfig

    assert TrainingConfig().n_groups == 512
    with pytest.warns(DeprecationWarning, match="n_groups"):
        assert TrainingConfig(model=ModelConfig(), n_images=32).n_groups == 32
    assert TrainingConfig(n_groups=8, n_images=32).n_groups == 8


@pytest.mark.parametrize(
    "model, training, needle",
    [
        ({"gridsize": 0}, {}, "gridsize"),
        ({"N": 6.5}, {}, "N"),
        ({"architecture": "transformer"}, {}, "architecture"),
        ({"probe_scale": 0.0}, {}, "probe_scale"),
        ({"gaussian_smoothing_sigma": -1.0}, {}, "gaussian_smoothing_sigma"),
        ({}, {"batch_size": 12}, "power of 2"),
        ({}, {"nepochs": 0}, "nepochs"),
        ({}, {"mae_weight": 1.5}, "mae_weight"),
        ({}, {"nphotons": float("nan")}, "nphotons"),
    ],
    ids=lambda v: "-".join(f"{k}={v[k]}" for k in v) if isinstance(v, dict) else v,
)
def test_validate_training_config_names_the_bad_field(model, training, needle):
    from ptycho.config.config import ModelConfig, TrainingConfig, validate_training_config
    from ptycho.errors import InputError

    config = TrainingConfig(model=ModelConfig(**model), **training)
    with pytest.raises(InputError, match=needle):
        validate_training_config(config)


def test_validate_accepts_defaults_and_checks_model_path(tmp_path):
    from ptycho.config.config import (
        InferenceConfig,
        ModelConfig,
        TrainingConfig,
        validate_inference_config,
        validate_training_config,
    )
    from ptycho.errors import InputError

    validate_training_config(TrainingConfig())
    with pytest.raises(InputError, match="model_path"):
        validate_inference_config(InferenceConfig(ModelConfig(), tmp_path / "missing", tmp_path / "t.npz"))
    with pytest.raises(InputError, match="wts.h5.zip"):
        validate_inference_config(InferenceConfig(ModelConfig(), tmp_path, tmp_path / "t.npz"))
    (tmp_path / "wts.h5.zip").touch()
    validate_inference_config(InferenceConfig(ModelConfig(), tmp_path, tmp_path / "t.npz"))
    validate_inference_config(InferenceConfig(ModelConfig(), tmp_path / "wts.h5", tmp_path / "t.npz"))
