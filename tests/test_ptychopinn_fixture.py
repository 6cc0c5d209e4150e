"""Bit equality with PtychoPINN's own code, on every backend, in both evaluation orders.

``tests/data/ptychopinn_legacy_v1.npz`` (a copy of ``shared/fixtures``) holds
patches computed by PtychoPINN's ``translate_xla`` inside its legacy
``get_image_patches`` loop: ``*_jit`` with ``use_jit=True`` (its default,
compiled path: fused multiply-adds), ``*_eager`` with ``use_jit=False``.
The compiled arrays must equal our ``evaluation="compiled"``, the eager ones
``evaluation="plain"``: ``max |diff| == 0`` for every array.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np
import pytest

from ptycho.testing import assert_close, to_numpy

FIXTURE = Path(__file__).parent / "data" / "ptychopinn_legacy_v1.npz"
#: (fixture key, evaluation order of our engine that must reproduce it)
ORDERS = {"jit": "compiled", "eager": "plain"}


@functools.lru_cache(maxsize=None)
def fixture() -> dict:
    with np.load(FIXTURE) as data:
        return {key: data[key] for key in data.files}


def _flat(global_offsets: np.ndarray, local_offsets: np.ndarray) -> np.ndarray:
    """PtychoPINN's positions: global + local rounded to float32, flat order b*c + k."""
    total = np.add(global_offsets, local_offsets, dtype=np.float64).astype(np.float32)
    return total[:, 0].transpose(0, 2, 1).reshape(-1, 2)


def test_fixture_is_what_its_readme_says():
    d = fixture()
    assert d["single_jit"].shape == (48, 32, 32) and d["single_jit"].dtype == np.complex64
    assert d["grouped_jit"].shape == (6, 64, 64, 4)
    assert d["wide_object"].dtype == np.complex128 and d["wide_jit"].dtype == np.complex64
    # the two orders really differ on this data, so each test below can fail
    assert np.any(d["single_jit"] != d["single_eager"])
    assert np.any(d["grouped_jit"] != d["grouped_eager"])


@pytest.mark.parametrize("suffix", list(ORDERS))
def test_single_patches(backend, suffix):
    from ptycho.backends import extract_patches

    d = fixture()
    got = extract_patches(
        d["single_object"], d["single_positions"], int(d["single_N"]), backend=backend.value,
        evaluation=ORDERS[suffix],
    )
    assert_close(got, d[f"single_{suffix}"], backend=backend.value, dtype=np.complex64, exact=True)


@pytest.mark.parametrize("suffix", list(ORDERS))
def test_grouped_patches_engine(backend, suffix):
    from ptycho.backends import extract_patches_grouped

    d = fixture()
    flat = _flat(d["grouped_global"], d["grouped_local"])
    got = extract_patches_grouped(
        d["grouped_object"], flat, int(d["grouped_N"]), channels=int(d["grouped_gridsize"]) ** 2,
        backend=backend.value, evaluation=ORDERS[suffix],
    )
    assert_close(got, d[f"grouped_{suffix}"], backend=backend.value, dtype=np.complex64, exact=True)


def test_wide_object(backend):
    """complex128 object: float64 arithmetic, float32 offsets, then complex64 (PtychoPINN's canvas)."""
    from ptycho.backends import extract_patches

    d = fixture()
    got = extract_patches(d["wide_object"], d["wide_positions"], int(d["wide_N"]), backend=backend.value)
    assert_close(got, d["wide_jit"].astype(np.complex128), backend=backend.value, dtype=np.complex128, exact=False,
                 atol=1e-6)
    narrowed = to_numpy(got).astype(np.complex64)
    assert_close(narrowed, d["wide_jit"], dtype=np.complex64, exact=True)


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "legacy-loop"])
@pytest.mark.parametrize("suffix", list(ORDERS))
def test_get_image_patches(tf, batched, suffix):
    """PtychoPINN's entry point, both paths, chunked or not: its own bits."""
    from ptycho.config.config import ModelConfig
    from ptycho.raw_data import get_image_patches

    d = fixture()
    config = ModelConfig(N=int(d["grouped_N"]), gridsize=int(d["grouped_gridsize"]),
                         use_batched_patch_extraction=batched, patch_extraction_batch_size=12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        got = get_image_patches(d["grouped_object"], d["grouped_global"], d["grouped_local"], config=config,
                                evaluation=ORDERS[suffix])
    assert_close(got, d[f"grouped_{suffix}"], backend="tensorflow", dtype=np.complex64, exact=True)


def test_get_image_patches_default_is_ptychopinns_default(tf):
    """No keyword: the compiled order, float32 offsets, a complex64 result -- also for complex128."""
    from ptycho.raw_data import get_image_patches

    d = fixture()
    got = get_image_patches(d["grouped_object"], d["grouped_global"], d["grouped_local"],
                            N=int(d["grouped_N"]), gridsize=int(d["grouped_gridsize"]))
    assert_close(got, d["grouped_jit"], backend="tensorflow", dtype=np.complex64, exact=True)
    positions = d["wide_positions"]
    wide = get_image_patches(d["wide_object"], positions[:, None, :, None], np.zeros((len(positions), 1, 2, 1)),
                             N=int(d["wide_N"]), gridsize=1)
    assert_close(wide[..., 0], d["wide_jit"], backend="tensorflow", dtype=np.complex64, exact=True)


@pytest.mark.parametrize("use_jit, suffix", [(True, "jit"), (False, "eager")])
def test_translate_xla_loop_by_hand(tf, use_jit, suffix):
    """PtychoPINN's loop written out: pad, translate the whole image by -offset, keep [:N, :N]."""
    from ptycho.projective_warp_xla import translate_xla
    from ptycho.tf_helper import pad

    d = fixture()
    N = int(d["single_N"])
    padded = pad(d["single_object"][None, :, :, None], N // 2)
    picks = [0, 7, 19, 33, 47]
    translations = -d["single_positions"][picks]
    got = np.stack([translate_xla(padded, translations[i : i + 1], use_jit=use_jit)[0, :N, :N, 0]
                    for i in range(len(picks))])
    assert_close(got, d[f"single_{suffix}"][picks], dtype=np.complex64, exact=True)


def test_tf_helper_translate_default_is_compiled(tf):
    from ptycho.tf_helper import pad, translate

    d = fixture()
    N = int(d["single_N"])
    padded = pad(d["single_object"][None, :, :, None], N // 2)
    got = translate(padded, -d["single_positions"][:6], output_size=(N, N))
    assert_close(got[..., 0], d["single_jit"][:6], backend="tensorflow", exact=True)
