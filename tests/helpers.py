"""Test-only helpers: random objects, layouts, optional scale packages.

The tolerance table, ``assert_close`` and the SciPy oracle live in :mod:`ptycho.testing`."""

from __future__ import annotations

from typing import Any

import numpy as np

# The tolerance table, the assert helper and the SciPy oracle are library code
# (ptycho.testing), shared with `ptycho-patches check` and the benchmark.
from ptycho.testing import (  # noqa: F401  (re-exported for the tests)
    RELATIVE_ATOL,
    assert_close,
    native_type,
    scipy_patches,
    to_numpy,
    tolerance,
)


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

    Skips the calling test module when it is missing, naming the ``scale``
    extra -- unless ``PTYCHO_TEST_EXTRAS`` demands ``scale`` (or ``all``; the
    older ``PTYCHO_TEST_SCALE=1`` is an alias), where a missing package fails.
    """
    __tracebackhide__ = True  # report the skip at the test module's line
    from ptycho.testing import require_extra

    return require_extra("scale", module)
