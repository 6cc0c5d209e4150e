"""Shared test helpers: the tolerance table, one assert helper, the SciPy oracle."""

from __future__ import annotations

from typing import Any

import numpy as np

# ---------------------------------------------------------------------------
# Tolerances: the one table every comparison uses.
#   ("tf-batched", "tf-legacy")  exact: the same expressions, same order, same
#                                precision, FMA contraction neutralised.
#   complex64 across backends    atol = 1e-6 * max(1, max|ref|): float32 rounding.
#   complex128 across backends   atol = 1e-12 * max(1, max|ref|).
#   SciPy oracle (float64, fed the contract's float32 coordinates):
#                                complex64 1e-6 * max(1, max|ref|),
#                                complex128 1e-12 * max(1, max|ref|).
# ---------------------------------------------------------------------------
RELATIVE_ATOL = {np.dtype(np.complex64): 1e-6, np.dtype(np.complex128): 1e-12}


def tolerance(reference: np.ndarray, dtype: Any) -> float:
    """Absolute tolerance for comparing results of ``dtype`` against ``reference``."""
    scale = max(1.0, float(np.max(np.abs(reference))) if reference.size else 1.0)
    return RELATIVE_ATOL[np.dtype(dtype)] * scale


def native_type(backend_name: str) -> type:
    """The array type a backend must return (catches a silent fallback to NumPy)."""
    if backend_name == "numpy":
        return np.ndarray
    if backend_name == "jax":
        import jax

        return jax.Array
    if backend_name == "tensorflow":
        import tensorflow as tf

        return tf.Tensor
    raise ValueError(backend_name)


def to_numpy(x: Any) -> np.ndarray:
    return x.numpy() if hasattr(x, "numpy") else np.asarray(x)


def assert_close(
    actual: Any,
    reference: np.ndarray,
    *,
    backend: str | None = None,
    shape: tuple | None = None,
    dtype: Any = None,
    exact: bool = False,
    atol: float | None = None,
) -> float:
    """Check type, shape and dtype, then values; return max |actual - reference|.

    ``exact=True`` demands max |diff| == 0 (NaNs must sit at the same places).
    """
    if backend is not None:
        expected_type = native_type(backend)
        assert isinstance(actual, expected_type), (
            f"{backend} returned {type(actual).__name__}, expected {expected_type.__name__}"
        )
    got = to_numpy(actual)
    ref = np.asarray(reference)
    expected_shape = ref.shape if shape is None else tuple(shape)
    assert got.shape == expected_shape, f"shape {got.shape} != {expected_shape}"
    if dtype is not None:
        assert got.dtype == np.dtype(dtype), f"dtype {got.dtype} != {np.dtype(dtype)}"
    if got.size == 0:
        return 0.0
    diff = float(np.max(np.abs(got.astype(np.complex128) - ref.astype(np.complex128))))
    if exact:
        assert diff == 0.0, f"not bit-exact: max |diff| = {diff:.3e}"
    else:
        tol = tolerance(ref, got.dtype) if atol is None else atol
        assert diff <= tol, f"max |diff| = {diff:.3e} > atol {tol:.3e}"
    return diff


def scipy_patches(image: np.ndarray, positions: np.ndarray, N: int, *, real_dtype: Any) -> np.ndarray:
    """Independent oracle: zero-fill bilinear patches with SciPy, in float64.

    Pads the object by N // 2, then samples it at the contract's coordinates
    ``x + ox`` (summed in ``real_dtype``, the object's precision, then widened)
    with ``map_coordinates(order=1, mode='grid-constant', cval=0)``.
    Returns (P, N, N) complex128.
    """
    from scipy.ndimage import map_coordinates

    pad = N // 2
    padded = np.pad(np.asarray(image, dtype=np.complex128), pad)
    pos = np.asarray(positions).astype(real_dtype)
    grid = np.arange(N, dtype=real_dtype)
    out = np.empty((pos.shape[0], N, N), dtype=np.complex128)
    for i, (ox, oy) in enumerate(pos):
        sx = (grid + ox).astype(np.float64)  # summed in the object's precision
        sy = (grid + oy).astype(np.float64)
        rows, cols = np.meshgrid(sy, sx, indexing="ij")
        coords = np.stack([rows, cols])
        re = map_coordinates(padded.real, coords, order=1, mode="grid-constant", cval=0.0)
        im = map_coordinates(padded.imag, coords, order=1, mode="grid-constant", cval=0.0)
        out[i] = re + 1j * im
    return out


def flat_to_channel(flat: np.ndarray, c: int) -> np.ndarray:
    """(B*c, N, N) -> (B, N, N, c), flat index b*c + k."""
    p, n1, n2 = flat.shape
    return flat.reshape(p // c, c, n1, n2).transpose(0, 2, 3, 1)


def random_object(shape: tuple, dtype: Any, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    real = rng.standard_normal(shape)
    imag = rng.standard_normal(shape)
    return (real + 1j * imag).astype(dtype)


def require_scale_module(module: str):
    """Import an optional ``scale`` dependency (zarr, dask, distributed).

    Skips the calling test module when it is missing -- unless
    ``PTYCHO_TEST_SCALE`` is set (CI installs the ``scale`` extra and sets it),
    where a missing package is an error.
    """
    import importlib
    import os

    import pytest

    if os.environ.get("PTYCHO_TEST_SCALE"):
        return importlib.import_module(module)
    return pytest.importorskip(module)
