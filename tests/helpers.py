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


def regime_positions(regime: str, count: int, shape: tuple, N: int, seed: int) -> np.ndarray:
    """(count, 2) positions (x, y) in object pixels for one regime."""
    rng = np.random.default_rng(seed)
    H, W = shape
    size = np.array([W, H], dtype=np.float64)
    if regime == "interior":
        return rng.uniform(0.0, 1.0, (count, 2)) * (size - 1)
    if regime == "border":
        # centres within one patch of an edge: the window touches or crosses it
        edge = rng.integers(0, 2, (count, 2)) * (size - 1)
        return edge + rng.uniform(-N / 2 - 1, N / 2 + 1, (count, 2))
    if regime == "outside":
        # the whole window outside the object (padded by N//2): zero patches
        side = np.where(rng.integers(0, 2, (count, 2)) == 1, size + N + 1.5, -N - 1.5)
        return side + rng.uniform(0.0, 3.0, (count, 2))
    if regime == "integer":
        return rng.integers(-N // 2, np.array([W, H]) + N // 2, (count, 2)).astype(np.float64)
    if regime == "half":
        return rng.integers(-2, np.array([W, H]) + 2, (count, 2)) + 0.5
    if regime == "f32edge":
        # just below an integer in float32 (k - 2**-24 * k) and the literal
        # k + 0.99999994: x + ox rounds up to the next integer for some x
        k = rng.integers(0, np.array([W, H]), (count, 2)).astype(np.float32)
        below = np.nextafter(k + np.float32(1), np.float32(0)).astype(np.float64)
        literal = k.astype(np.float64) + 0.99999994
        return np.where(rng.integers(0, 2, (count, 1)) == 1, below, literal)
    if regime == "negative":
        return -rng.uniform(0.0, N / 2 + 2, (count, 2))
    raise ValueError(regime)


# ---------------------------------------------------------------------------
# The scale-out tests' shared inputs and cluster (tests/test_scale_*.py).
# ---------------------------------------------------------------------------
SCALE_N = 8


def scale_object(dtype: Any = np.complex64, shape: tuple = (40, 52), seed: int = 0) -> np.ndarray:
    """The object of the scale tests (40 x 52 by default)."""
    return random_object(shape, dtype, seed)


def scale_positions(P: int, seed: int = 1, *, far: bool = False) -> np.ndarray:
    """(P, 2) positions over the scale object; ``far`` moves the last 40 far outside.

    Far positions give all-zero patches, so whole chunks can be "empty" (Zarr
    does not store them; reads must still match).
    """
    rng = np.random.default_rng(seed)
    pos = rng.uniform(-6.0, 58.0, size=(P, 2))
    if far:
        pos[-40:] += 500.0
    return pos


def scale_raw(M: int = 60, seed: int = 3) -> Any:
    """A small RawData (M scan positions, 6 x 6 frames) over the scale object, for grouped runs."""
    from ptycho.dataset import RawData

    rng = np.random.default_rng(seed)
    x = rng.uniform(4.0, 44.0, M)
    y = rng.uniform(4.0, 36.0, M)
    diff = rng.uniform(0.0, 2.0, (M, 6, 6)).astype(np.float32)
    probe = np.ones((SCALE_N, SCALE_N), np.complex64)
    return RawData.from_coords_without_pc(x, y, diff, probe, np.zeros(M, int), objectGuess=scale_object())


def scale_reference(image: np.ndarray, positions: np.ndarray, channels: int, channel_axis: Any = None) -> np.ndarray:
    """The in-memory NumPy patches the scale runners must reproduce."""
    from ptycho.backends import extract_patches_grouped

    ref = extract_patches_grouped(image, positions, SCALE_N, channels=channels, backend="numpy")
    keep_axis = channels > 1 if channel_axis is None else channel_axis
    return ref if keep_axis else ref[..., 0]


def local_cluster():
    """A context manager yielding a Dask client of 2 single-threaded worker processes
    (as ``--workers 2`` starts them)."""
    import contextlib

    import distributed

    @contextlib.contextmanager
    def running():
        with distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=50,
        ) as cluster, distributed.Client(cluster, set_as_default=False) as client:
            yield client

    return running()
