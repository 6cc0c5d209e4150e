"""Property tests (hypothesis) of the patch extraction contract, on every backend.

Properties:

- agreement with the independent SciPy oracle (``map_coordinates(order=1,
  mode='grid-constant')`` in float64, fed the contract's sample coordinates);
- integer positions give exact slices of the zero-padded object;
- linearity in the object;
- shifting the object and the positions together by whole pixels leaves the
  patches unchanged, bit for bit;
- a zero object gives zero patches;
- neighbour grouping is deterministic for a fixed seed.

Shapes are drawn from small fixed sets so that the compiling backends (XLA
under TensorFlow and JAX) compile a handful of programs, not one per example.
"""

from __future__ import annotations

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

from tests.helpers import assert_close, scipy_patches, to_numpy  # noqa: E402

# The ``backend`` fixture only names a backend; it holds no state that one
# example could leak into the next, so reusing it across examples is safe.
PROPERTY = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

SHAPE = (7, 9)  # (H, W) of every object: one compiled program per (N, dtype, P)
PATCH_SIZES = (3, 4)  # odd and even N
P = 5  # positions per example
DTYPES = {"complex64": (np.complex64, np.float32), "complex128": (np.complex128, np.float64)}


def _objects(dtype, shape=SHAPE, bound: float = 100.0):
    """Complex objects of ``shape`` with parts in [-bound, bound], exactly representable.

    Subnormal values are left out: XLA on CPU (JAX, TensorFlow) flushes them
    to zero while NumPy keeps them -- a documented difference of the
    compiling backends (docs/BAD_INPUTS.md), below any meaningful object value.
    """
    real_dtype = np.float32 if dtype == np.complex64 else np.float64
    width = 32 if real_dtype == np.float32 else 64
    parts = hnp.arrays(
        real_dtype, (2,) + shape,
        elements=st.floats(
            -bound, bound, allow_nan=False, allow_infinity=False, allow_subnormal=False, width=width
        ),
    )
    return parts.map(lambda a: (a[0] + 1j * a[1]).astype(dtype))


def _positions(N: int, shape=SHAPE, count: int = P):
    """(count, 2) float64 positions (x, y) from well outside to well inside the object."""
    H, W = shape
    margin = N + 2.0
    xs = st.floats(-margin, W - 1 + margin, allow_nan=False, allow_infinity=False)
    ys = st.floats(-margin, H - 1 + margin, allow_nan=False, allow_infinity=False)
    point = st.tuples(xs, ys)
    return st.lists(point, min_size=count, max_size=count).map(lambda pts: np.array(pts, dtype=np.float64))


def _extract(image, positions, N, backend):
    from ptycho.backends import extract_patches

    return extract_patches(image, positions, N, backend=backend.value)


# ---------------------------------------------------------------------------
# Agreement with the SciPy oracle.
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("N", PATCH_SIZES)
@PROPERTY
@given(data=st.data())
def test_agrees_with_scipy_oracle(backend, dtype: str, N: int, data) -> None:
    complex_dtype, real_dtype = DTYPES[dtype]
    image = data.draw(_objects(complex_dtype), label="image")
    positions = data.draw(_positions(N), label="positions")
    got = _extract(image, positions, N, backend)
    ref = scipy_patches(image, positions, N, real_dtype=real_dtype)
    assert_close(got, ref, backend=backend.value, shape=(P, N, N), dtype=complex_dtype)


# ---------------------------------------------------------------------------
# Integer positions: exact slices of the zero-padded object.
# ---------------------------------------------------------------------------
def _padded_slices(image: np.ndarray, positions: np.ndarray, N: int) -> np.ndarray:
    """patch[y, x] = padded[oy + y, ox + x], padded = object zero-padded by N // 2."""
    H, W = image.shape
    pad = N // 2
    extra = N + 4  # room for windows that start outside the padded object
    canvas = np.zeros((H + 2 * (pad + extra), W + 2 * (pad + extra)), dtype=image.dtype)
    canvas[pad + extra : pad + extra + H, pad + extra : pad + extra + W] = image
    out = np.empty((positions.shape[0], N, N), dtype=image.dtype)
    for i, (ox, oy) in enumerate(positions.astype(np.int64)):
        r, c = oy + extra, ox + extra
        out[i] = canvas[r : r + N, c : c + N]
    return out


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("N", PATCH_SIZES)
@PROPERTY
@given(data=st.data())
def test_integer_positions_give_exact_slices(backend, dtype: str, N: int, data) -> None:
    complex_dtype, _ = DTYPES[dtype]
    H, W = SHAPE
    image = data.draw(_objects(complex_dtype), label="image")
    xs = st.integers(-N - 2, W - 1 + N + 2)
    ys = st.integers(-N - 2, H - 1 + N + 2)
    points = data.draw(st.lists(st.tuples(xs, ys), min_size=P, max_size=P), label="positions")
    positions = np.array(points, dtype=np.float64)
    got = _extract(image, positions, N, backend)
    assert_close(got, _padded_slices(image, positions, N), backend=backend.value, dtype=complex_dtype, exact=True)


# ---------------------------------------------------------------------------
# Linearity in the object.
# ---------------------------------------------------------------------------
_SCALARS = st.complex_numbers(max_magnitude=4.0, allow_nan=False, allow_infinity=False)


@pytest.mark.parametrize("N", PATCH_SIZES)
@PROPERTY
@given(data=st.data())
def test_linear_in_the_object(backend, N: int, data) -> None:
    first = data.draw(_objects(np.complex64), label="first")
    second = data.draw(_objects(np.complex64), label="second")
    a = data.draw(_SCALARS, label="a")
    b = data.draw(_SCALARS, label="b")
    positions = data.draw(_positions(N), label="positions")
    combined = (a * first.astype(np.complex128) + b * second.astype(np.complex128)).astype(np.complex64)

    got = to_numpy(_extract(combined, positions, N, backend))
    ref = a * to_numpy(_extract(first, positions, N, backend)).astype(np.complex128) + b * to_numpy(
        _extract(second, positions, N, backend)
    ).astype(np.complex128)
    # Bilinear weights sum to one: every value is bounded by this scale, and
    # the float32 rounding of the combination and of the sums is relative to it.
    scale = abs(a) * np.abs(first).max() + abs(b) * np.abs(second).max()
    assert_close(got, ref, dtype=np.complex64, atol=1e-6 * max(1.0, scale))


# ---------------------------------------------------------------------------
# Shift invariance: object and positions moved together by whole pixels.
# ---------------------------------------------------------------------------
MAX_SHIFT = 6


@pytest.mark.parametrize("N", PATCH_SIZES)
@PROPERTY
@given(data=st.data())
def test_integer_shift_of_object_and_positions_leaves_patches_unchanged(backend, N: int, data) -> None:
    H, W = SHAPE
    image = data.draw(_objects(np.complex64), label="image")
    dx = data.draw(st.integers(0, MAX_SHIFT), label="dx")
    dy = data.draw(st.integers(0, MAX_SHIFT), label="dy")
    # Positions on a 1/64 pixel grid: ox + dx and x + ox + dx are then exact in
    # float32, so both calls see the same bilinear weights and the identity is
    # exact, not just within rounding.
    steps = st.tuples(st.integers(-64 * (N + 2), 64 * (W + N)), st.integers(-64 * (N + 2), 64 * (H + N)))
    points = data.draw(st.lists(steps, min_size=P, max_size=P), label="positions")
    positions = np.array(points, dtype=np.float64) / 64.0

    # A fixed canvas size keeps one compiled shape for every shift.
    canvas = np.zeros((H + MAX_SHIFT, W + MAX_SHIFT), dtype=np.complex64)
    canvas[dy : dy + H, dx : dx + W] = image
    moved = _extract(canvas, positions + np.array([dx, dy], dtype=np.float64), N, backend)
    still = _extract(image, positions, N, backend)
    assert_close(moved, to_numpy(still), backend=backend.value, dtype=np.complex64, exact=True)


# ---------------------------------------------------------------------------
# Zero object -> zero patches.
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("N", PATCH_SIZES)
@PROPERTY
@given(data=st.data())
def test_zero_object_gives_zero_patches(backend, N: int, data) -> None:
    positions = data.draw(_positions(N), label="positions")
    got = to_numpy(_extract(np.zeros(SHAPE, np.complex64), positions, N, backend))
    assert got.shape == (P, N, N)
    assert np.count_nonzero(got) == 0


# ---------------------------------------------------------------------------
# Grouping is deterministic for a fixed seed.
# ---------------------------------------------------------------------------
@PROPERTY
@given(
    coords=hnp.arrays(
        np.float64, st.tuples(st.integers(9, 40), st.just(2)),
        elements=st.floats(-50, 50, allow_nan=False, allow_infinity=False),
    ),
    gridsize=st.sampled_from([1, 2, 3]),
    extra_k=st.integers(0, 3),
    nsamples=st.one_of(st.none(), st.integers(1, 60)),
    seed=st.integers(0, 2**32 - 1),
)
def test_grouping_is_deterministic_for_a_fixed_seed(coords, gridsize, extra_k, nsamples, seed) -> None:
    dataset = pytest.importorskip("ptycho.dataset")
    c = gridsize**2
    K = min(c + extra_k, coords.shape[0])
    first = dataset.group_neighbours(coords, gridsize=gridsize, K=K, nsamples=nsamples, seed=seed)
    # The global NumPy RNG must play no part: disturb it (and restore it after).
    state = np.random.get_state()
    try:
        np.random.seed(seed % 1000 + 1)
        np.random.random(7)
        second = dataset.group_neighbours(coords.copy(), gridsize=gridsize, K=K, nsamples=nsamples, seed=seed)
    finally:
        np.random.set_state(state)
    assert first.dtype == second.dtype
    np.testing.assert_array_equal(first, second)
    G = coords.shape[0] if nsamples is None else nsamples
    assert first.shape == (G, c)
    assert first.min() >= 0 and first.max() < coords.shape[0]
