"""What "the same" and "close enough" mean: one definition for tests, ``check`` and ``bench``.

In the manner of array-api-extra's ``_lib/_testing.py``, the comparison
helpers are library code, so the test suite, ``ptycho-patches check`` and
the benchmark share one tolerance table and one assert helper.

Tolerances (the one table; ``scale = max(1, max |reference|)``):

==================================================  ==========================
pair                                                 allowed ``max |diff|``
==================================================  ==========================
same evaluation order, any backend (TF batched vs    0 (bit for bit)
legacy loop, JAX vs NumPy vs TF, PtychoPINN fixture)
complex64 across orders or libraries                 ``1e-6 * scale``
complex128 across orders or libraries                ``1e-12 * scale``
float64 SciPy oracle, fed the contract's coordinates same as the row of the dtype
==================================================  ==========================

The oracle must be fed the sample coordinates the contract defines (``x + ox``
summed in the object's real precision, then widened); fed float64 sums it
differs by ~1e-4 from float32 coordinate rounding alone.

This module imports neither pytest nor a backend at import time.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np

from ptycho.backends._dispatch import BACKENDS, Backend, to_host

__all__ = [
    "RELATIVE_ATOL",
    "EXACT",
    "tolerance",
    "max_abs_diff",
    "native_type",
    "to_numpy",
    "assert_close",
    "scipy_patches",
    "demanded_backends",
    "demanded_device",
    "require_backend",
]

#: Relative absolute tolerance per result dtype (multiplied by max(1, max|ref|)).
RELATIVE_ATOL = {np.dtype(np.complex64): 1e-6, np.dtype(np.complex128): 1e-12}

#: The tolerance of pairs that evaluate the same expressions in the same order.
EXACT = 0.0


def tolerance(reference: Any, dtype: Any) -> float:
    """Absolute tolerance for comparing results of ``dtype`` against ``reference``."""
    reference = np.asarray(reference)
    scale = max(1.0, float(np.max(np.abs(reference))) if reference.size else 1.0)
    return RELATIVE_ATOL[np.dtype(dtype)] * scale


def to_numpy(x: Any) -> np.ndarray:
    """A host NumPy copy of any backend's array (tf.Tensor, jax.Array, CuPy, PyTorch)."""
    return to_host(x)


def max_abs_diff(actual: Any, reference: Any) -> float:
    """``max |actual - reference|`` in complex128 (0.0 for empty arrays).

    NaNs at the same places compare equal; a NaN on one side only is an infinite difference.
    """
    a = to_numpy(actual).astype(np.complex128)
    b = to_numpy(reference).astype(np.complex128)
    if a.shape != b.shape:
        raise ValueError(f"cannot compare results of shapes {a.shape} and {b.shape}")
    if a.size == 0:
        return 0.0
    both_nan = (np.isnan(a.real) & np.isnan(b.real)) | (np.isnan(a.imag) & np.isnan(b.imag))
    with np.errstate(invalid="ignore"):
        diff = np.abs(a - b)
    diff = np.where(both_nan, 0.0, diff)
    diff = np.where(np.isnan(diff), np.inf, diff)
    return float(np.max(diff))


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
    raise ValueError(f"unknown backend {backend_name!r}")


def assert_close(
    actual: Any,
    reference: Any,
    *,
    backend: Optional[str] = None,
    shape: Optional[tuple] = None,
    dtype: Any = None,
    exact: bool = False,
    atol: Optional[float] = None,
) -> float:
    """Check type, shape and dtype, then values; return max |actual - reference|.

    ``backend`` asserts the result is that backend's native array type.
    ``exact=True`` demands max |diff| == 0 (NaNs must sit at the same places);
    otherwise the tolerance is ``atol`` or the table's entry for the result's dtype.
    """
    if backend is not None:
        expected_type = native_type(backend)
        assert isinstance(actual, expected_type), (
            f"{backend} returned {type(actual).__name__}, expected {expected_type.__name__}"
        )
    got = to_numpy(actual)
    ref = to_numpy(reference)
    expected_shape = ref.shape if shape is None else tuple(shape)
    assert got.shape == expected_shape, f"shape {got.shape} != {expected_shape}"
    if dtype is not None:
        assert got.dtype == np.dtype(dtype), f"dtype {got.dtype} != {np.dtype(dtype)}"
    if got.size == 0:
        return 0.0
    diff = max_abs_diff(got, ref)
    if exact:
        assert diff == EXACT, f"not bit-exact: max |diff| = {diff:.3e}"
    else:
        tol = tolerance(ref, got.dtype) if atol is None else atol
        assert diff <= tol, f"max |diff| = {diff:.3e} > atol {tol:.3e}"
    return diff


def scipy_patches(image: Any, positions: Any, N: int, *, real_dtype: Any) -> np.ndarray:
    """Independent oracle: zero-fill bilinear patches with SciPy, in float64.

    Pads the object by N // 2, then samples it at the contract's coordinates
    ``x + ox`` (summed in ``real_dtype``, the object's precision, then widened)
    with ``map_coordinates(order=1, mode='grid-constant', cval=0)``.
    None of the package's own window code is used.

    Returns
    -------
    np.ndarray (P, N, N) complex128
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


# ---------------------------------------------------------------------------
# Demanded backends (PTYCHO_TEST_BACKENDS), for test suites.
# ---------------------------------------------------------------------------


def demanded_backends() -> set[str]:
    """Backend names that ``PTYCHO_TEST_BACKENDS`` demands (comma list, or ``all``)."""

    raw = os.environ.get("PTYCHO_TEST_BACKENDS", "").strip()
    if not raw:
        return set()
    if raw.lower() == "all":
        return set(BACKENDS)
    names = {name.strip().lower() for name in raw.split(",") if name.strip()}
    unknown = names - set(BACKENDS)
    if unknown:
        raise ValueError(
            f"PTYCHO_TEST_BACKENDS names unknown backends {sorted(unknown)}; known: {list(BACKENDS)}"
        )
    return names


def require_backend(backend: Any) -> None:
    """In a test: skip if ``backend``'s library is missing, or fail when it is demanded.

    ``backend`` is a :class:`ptycho.backends.Backend` or its name.
    """
    import pytest


    backend = Backend(backend) if not isinstance(backend, Backend) else backend
    if backend.installed():
        return
    if backend.value in demanded_backends():
        pytest.fail(f"backend {backend.value} is demanded by PTYCHO_TEST_BACKENDS but missing")
    pytest.skip(f"backend {backend.value} is not installed (pip install 'ptycho[{backend.extra}]')")


# ---------------------------------------------------------------------------
# Demanded extras (PTYCHO_TEST_EXTRAS), for test suites.
# ---------------------------------------------------------------------------

#: The optional extras other than the backends' (``tf``, ``jax``: see
#: ``PTYCHO_TEST_BACKENDS``), and the modules each one installs.  Names as in
#: ``pyproject.toml``'s ``[project.optional-dependencies]``.
TEST_EXTRAS: dict[str, tuple[str, ...]] = {
    "plot": ("matplotlib",),
    "peers": ("cv2",),
    "scale": ("zarr", "dask", "distributed", "s3fs"),
    "fast": ("numba",),
}

_FALSE = {"", "0", "false", "no", "off"}


def demanded_extras() -> set[str]:
    """Extra names that ``PTYCHO_TEST_EXTRAS`` demands (comma list, or ``all``).

    ``PTYCHO_TEST_SCALE=1`` (the older switch) is an alias that adds ``scale``.
    """
    raw = os.environ.get("PTYCHO_TEST_EXTRAS", "").strip()
    if raw.lower() == "all":
        names = set(TEST_EXTRAS)
    else:
        names = {name.strip().lower() for name in raw.split(",") if name.strip()}
    unknown = names - set(TEST_EXTRAS)
    if unknown:
        hint = ""
        if unknown & {"tf", "jax", "tensorflow", "numpy"}:
            hint = " (backends are demanded by PTYCHO_TEST_BACKENDS)"
        raise ValueError(
            f"PTYCHO_TEST_EXTRAS names unknown extras {sorted(unknown)}; known: {list(TEST_EXTRAS)}{hint}"
        )
    if os.environ.get("PTYCHO_TEST_SCALE", "").strip().lower() not in _FALSE:
        names.add("scale")
    return names


def extra_installed(name: str) -> bool:
    """Whether every module of the extra ``name`` can be found (nothing is imported)."""
    import importlib.util

    return all(importlib.util.find_spec(module) is not None for module in TEST_EXTRAS[name])


def require_extra(name: str, module: Optional[str] = None) -> Any:
    """In a test or at module level: skip if the extra ``name`` is missing, or fail when it is demanded.

    Imports ``module`` (default: every module of the extra) and returns it
    (``None`` when ``module`` is not given).  The skip reason names the extra
    and its pip command; a demanded extra (``PTYCHO_TEST_EXTRAS``) that
    cannot be imported fails the test, or the module's collection.
    """
    __tracebackhide__ = True  # report the skip at the caller's line
    import importlib

    import pytest

    if name not in TEST_EXTRAS:
        raise ValueError(f"unknown extra {name!r}; known: {list(TEST_EXTRAS)}")
    imported = None
    for modname in (module,) if module else TEST_EXTRAS[name]:
        try:
            imported = importlib.import_module(modname)
        except ImportError as exc:
            if name in demanded_extras():
                pytest.fail(
                    f"extra {name!r} is demanded by PTYCHO_TEST_EXTRAS but {modname} cannot be imported: {exc}"
                )
            pytest.skip(
                f"needs the '{name}' extra: {modname} is not installed (pip install 'ptycho[{name}]')",
                allow_module_level=True,
            )
    return imported if module else None


__all__ += ["TEST_EXTRAS", "demanded_extras", "extra_installed", "require_extra"]


def demanded_device(environ: Optional[dict] = None) -> str:
    """``PTYCHO_TEST_DEVICE`` (``cpu``, the default, or ``gpu``): where the device cells must run.

    ``gpu`` demands the cells marked ``gpu`` (SciPy's ``SCIPY_DEVICE``): without
    a visible GPU they fail instead of skipping.
    """
    value = (os.environ if environ is None else environ).get("PTYCHO_TEST_DEVICE", "cpu").strip().lower() or "cpu"
    if value not in ("cpu", "gpu"):
        raise ValueError(f"PTYCHO_TEST_DEVICE must be 'cpu' or 'gpu', got {value!r}")
    return value
