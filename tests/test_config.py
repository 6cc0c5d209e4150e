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

    assert params.get("N") == 64
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
