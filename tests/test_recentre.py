"""PtychoPINN's recentring (``offsets - tf.reduce_mean(offsets, axis=0)``) in its order, on every backend.

On a CPU ``tf.reduce_mean`` adds the rows one after the other; XLA's
reductions (JAX, TF under ``jit_compile``) and GPU libraries reorder them once
there are more than 32 rows, which moves the mean by an ulp and every pixel of
the stitched canvas with it.
"""

from __future__ import annotations

import numpy as np
import pytest

from ptycho.backends import Backend
from ptycho.backends.placement import sequential_mean
from ptycho.testing import require_backend

COUNTS = [1, 2, 33, 1000]


def _offsets(count: int, dtype) -> np.ndarray:
    rng = np.random.default_rng(count)
    return rng.uniform(-150, 150, (count, 2)).astype(dtype)


@pytest.mark.parametrize("count", COUNTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sequential_mean_adds_rows_in_order(count, dtype):
    x = _offsets(count, dtype)
    total = x[0].copy()
    for row in x[1:]:
        total = (total + row).astype(dtype)
    expected = (total / dtype(count)).astype(dtype)
    assert sequential_mean(x).dtype == dtype
    assert np.array_equal(sequential_mean(x), expected)
    assert np.array_equal(sequential_mean(np.asfortranarray(x)), expected)  # the layout does not matter


@pytest.mark.parametrize("count", COUNTS)
def test_sequential_mean_is_tf_reduce_mean_on_a_cpu(count):
    require_backend(Backend.TENSORFLOW)
    import tensorflow as tf

    x = _offsets(count, np.float32)
    with tf.device("/CPU:0"):
        reference = tf.reduce_mean(tf.constant(x.reshape(count, 1, 1, 2)), axis=0).numpy().reshape(2)
    assert np.array_equal(sequential_mean(x), reference)


@pytest.mark.parametrize("count", [2, 33, 1000])
def test_jax_traced_mean_is_in_order(count):
    """Under jax.jit the offsets are traced: the lax.scan mean gives the host's bits."""
    require_backend(Backend.JAX)
    import jax

    from ptycho.backends import get_backend

    mod = get_backend("jax")
    for dtype, complex_dtype in ((np.float32, np.complex64), (np.float64, np.complex128)):
        x = _offsets(count, dtype)
        with mod.precision(complex_dtype):  # as the backend's calls run
            got = jax.jit(mod.namespace.sequential_mean)(x)
        assert got.dtype == dtype
        assert np.array_equal(np.asarray(got), sequential_mean(x))


@pytest.mark.parametrize("op", ["shift_and_sum", "reassemble_position"])
def test_many_patches_stitch_to_the_same_bits_on_every_backend(backend, op):
    """100 patches (past XLA's 32-row reduction): every backend gives the NumPy backend's canvas."""
    from ptycho.backends import placement
    from ptycho.testing import assert_close, to_numpy

    rng = np.random.default_rng(5)
    patches = (rng.standard_normal((100, 12, 12)) + 1j * rng.standard_normal((100, 12, 12))).astype(np.complex64)
    offsets = rng.uniform(-20, 35, (100, 2)).astype(np.float32)
    reference = to_numpy(getattr(placement, op)(patches, offsets, 8, backend="numpy"))
    assert_close(getattr(placement, op)(patches, offsets, 8, backend=backend.value), reference, exact=True)
