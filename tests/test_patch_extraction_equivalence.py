"""The equivalence matrix.

backend {tensorflow, jax, numpy} x N {32, 64, 128} x gridsize {1, 2, 3}
x dtype {complex64, complex128} x position regime x object {square, nonsquare}
x evaluation order {compiled, plain}.

References: the legacy per-patch TF loop (ground truth; itself equal to
PtychoPINN's own code, ``tests/test_ptychopinn_fixture.py``) and,
independently, SciPy ``map_coordinates``.  Every backend must equal the loop
bit for bit in the same evaluation order; the SciPy oracle uses the tolerance
table of :mod:`ptycho.testing`.  The engine runs in full precision here
(``full_precision=True``: complex128 objects stay complex128); PtychoPINN's
complex64 defaults are checked against its fixture.
"""

from __future__ import annotations

import functools
import warnings
import zlib

import numpy as np
import pytest

from ptycho.backends import Backend
from ptycho.testing import require_backend
from tests.helpers import assert_close, random_object, regime_positions, scipy_patches

PATCH_SIZES = (32, 64, 128)
GRIDSIZES = (1, 2, 3)
DTYPES = {"complex64": np.complex64, "complex128": np.complex128}
OBJECTS = {"square": (40, 40), "nonsquare": (36, 52)}
REGIMES = ("interior", "border", "outside", "integer", "half", "f32edge", "negative")
GROUPS = 2  # groups per cell: B * c patches, enough to mix channels


def offsets_for(positions: np.ndarray, c: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split flat positions (B*c, 2) into PtychoPINN global (B,1,2,1) + local (B,1,2,c)."""
    rng = np.random.default_rng(seed)
    B = positions.shape[0] // c
    channel = positions.reshape(B, c, 2).transpose(0, 2, 1)[:, None]  # (B, 1, 2, c)
    centre = np.round(channel.mean(axis=3, keepdims=True) + rng.uniform(-1, 1, (B, 1, 2, 1)), 3)
    return centre, channel - centre


CELLS = [
    pytest.param(N, g, dname, regime, oname, id=f"{dname}-N{N}-g{g}-{regime}-{oname}")
    for N in PATCH_SIZES
    for g in GRIDSIZES
    for dname in DTYPES
    for regime in REGIMES
    for oname in OBJECTS
]


@functools.lru_cache(maxsize=None)
def case(N: int, g: int, dname: str, regime: str, oname: str):
    """Inputs of one cell: object, PtychoPINN offsets, and flat positions as the engine sees them."""
    seed = zlib.crc32(f"{N}-{g}-{dname}-{regime}-{oname}".encode())
    c = g * g
    image = random_object(OBJECTS[oname], DTYPES[dname], seed)
    positions = regime_positions(regime, GROUPS * c, OBJECTS[oname], N, seed + 1)
    global_offsets, local_offsets = offsets_for(positions, c, seed + 2)
    # the positions exactly as get_image_patches forms them: global + local in float64
    summed = np.add(global_offsets, local_offsets, dtype=np.float64)
    flat = summed[:, 0].transpose(0, 2, 1).reshape(-1, 2)
    return image, global_offsets, local_offsets, flat


EVALUATIONS = ("compiled", "plain")


@functools.lru_cache(maxsize=None)
def legacy_reference(N: int, g: int, dname: str, regime: str, oname: str, evaluation: str) -> np.ndarray:
    """The legacy loop's (B, N, N, c) patches (TF), in full precision."""
    require_backend(Backend.TENSORFLOW)
    from ptycho.config.config import ModelConfig
    from ptycho.raw_data import get_image_patches

    image, glob, loc, _ = case(N, g, dname, regime, oname)
    config = ModelConfig(N=N, gridsize=g, use_batched_patch_extraction=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return get_image_patches(
            image, glob, loc, config=config, evaluation=evaluation, full_precision=True
        ).numpy()


@pytest.mark.parametrize("evaluation", EVALUATIONS)
@pytest.mark.parametrize("N, g, dname, regime, oname", CELLS)
def test_matches_legacy_loop(backend, N, g, dname, regime, oname, evaluation):
    """Every backend == the legacy loop, bit for bit, in either evaluation order."""
    image, glob, loc, flat = case(N, g, dname, regime, oname)
    reference = legacy_reference(N, g, dname, regime, oname, evaluation)
    c = g * g
    expected_shape = (GROUPS, N, N, c)
    if backend is Backend.TENSORFLOW:
        from ptycho.config.config import ModelConfig
        from ptycho.raw_data import get_image_patches

        config = ModelConfig(N=N, gridsize=g, use_batched_patch_extraction=True)
        got = get_image_patches(image, glob, loc, config=config, evaluation=evaluation, full_precision=True)
    else:
        from ptycho.backends import extract_patches_grouped

        got = extract_patches_grouped(image, flat, N, channels=c, backend=backend.value, evaluation=evaluation)
    assert_close(got, reference, backend=backend.value, shape=expected_shape, dtype=DTYPES[dname], exact=True)
    if regime == "outside":
        assert not np.any(reference), "a window outside the padded object must be zero"


@pytest.mark.parametrize("N, g, dname, regime, oname", CELLS)
def test_matches_scipy_oracle(backend, N, g, dname, regime, oname):
    """Every backend agrees with SciPy map_coordinates fed the contract's coordinates."""
    from ptycho.backends import extract_patches

    image, _, _, flat = case(N, g, dname, regime, oname)
    real_dtype = np.float64 if dname == "complex128" else np.float32
    oracle = scipy_patches(image, flat, N, real_dtype=real_dtype)
    got = extract_patches(image, flat, N, backend=backend.value)
    assert_close(got, oracle, backend=backend.value, shape=(flat.shape[0], N, N), dtype=DTYPES[dname])


@pytest.mark.parametrize("evaluation", EVALUATIONS)
@pytest.mark.parametrize("dname", list(DTYPES))
@pytest.mark.parametrize("regime", REGIMES)
def test_backends_bit_identical(backend, dname, regime, evaluation):
    """Without TensorFlow too: every backend gives NumPy's bits, in either order."""
    from ptycho.backends import extract_patches

    image, _, _, flat = case(32, 2, dname, regime, "nonsquare")
    numpy_result = extract_patches(image, flat, 32, backend="numpy", evaluation=evaluation)
    got = extract_patches(image, flat, 32, backend=backend.value, evaluation=evaluation)
    assert_close(got, numpy_result, backend=backend.value, dtype=DTYPES[dname], exact=True)


@pytest.mark.parametrize("dname", list(DTYPES))
@pytest.mark.parametrize("regime", REGIMES)
def test_orders_differ_by_rounding_only(dname, regime):
    """compiled vs plain: the same sum, rounded differently -- within the tolerance table."""
    from ptycho.backends import extract_patches

    image, _, _, flat = case(64, 2, dname, regime, "square")
    compiled = extract_patches(image, flat, 64, backend="numpy", evaluation="compiled")
    plain = extract_patches(image, flat, 64, backend="numpy", evaluation="plain")
    assert_close(compiled, plain, backend="numpy", dtype=DTYPES[dname])
