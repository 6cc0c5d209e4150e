"""The general projective warp (``ptycho.backends.projective``) and PtychoPINN's names for it.

Checked on every backend: bit equality with PtychoPINN's own ``projective_warp_xla``
(eager) and ``projective_warp_xla_jit`` (compiled) on recorded results; the
float64 SciPy oracle within the tolerance table; a pure translation equal to our
translate bit for bit; the fill modes, dtypes, batch broadcasting, the 8-parameter
form; and ``translate_xla``'s broadcast of b translations over b*c images.

``tests/data/ptychopinn_projective_v1.npz``: results of PtychoPINN's
``ptycho/projective_warp_xla.py`` (hoidn/PtychoPINN 712c23f) with TensorFlow 2.21
on an x86-64 CPU with FMA.  Cases ``f32c1``, ``f32c2``, ``f64c1`` (dtype, channels;
(2, 12, 14, C) images, (2, 3, 3) matrices) and ``f32params`` ((2, 8) parameters);
keys ``<case>_images``, ``<case>_transforms`` and ``<case>_<interpolation>_<fill>_<run>``
with run ``eager`` (``projective_warp_xla``) or ``jit`` (``projective_warp_xla_jit``).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest

from ptycho.backends import Backend
from tests.helpers import assert_close, random_object, to_numpy

FIXTURE = Path(__file__).parent / "data" / "ptychopinn_projective_v1.npz"
#: (fixture run, our evaluation order that must reproduce it)
ORDERS = {"eager": "plain", "jit": "compiled"}
CASES = ("f32c1", "f32c2", "f64c1", "f32params")


@functools.lru_cache(maxsize=None)
def fixture() -> dict:
    with np.load(FIXTURE) as data:
        return {key: data[key] for key in data.files}


def _warp(backend: Backend, images, transforms, jit=None, **kwargs):
    """TensorFlow eagerly by default (the semantics do not depend on compiling, and XLA compiles each
    case in ~1 s): tests of the compiled programs say ``jit=True``.  JAX always compiles (eager JAX
    compiles every operation of the algorithm instead: slower still)."""
    from ptycho.backends import projective_warp

    if jit is None:
        jit = backend == Backend.JAX
    return projective_warp(images, transforms, backend=backend.value, jit=jit, **kwargs)


def _translation(t: np.ndarray, dtype=np.float32) -> np.ndarray:
    """(P, 2) translations (tx, ty) -> matrices sampling the source at (x - tx, y - ty)."""
    m = np.tile(np.eye(3), (len(t), 1, 1))
    m[:, 0, 2] = -t[:, 0]
    m[:, 1, 2] = -t[:, 1]
    return m.astype(dtype)


def _homographies(count: int, seed: int, dtype=np.float32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    m = np.tile(np.eye(3), (count, 1, 1)) + rng.normal(0, 0.1, (count, 3, 3))
    m[:, :2, 2] = rng.uniform(-4, 4, (count, 2))
    m[:, 2, :2] *= 0.03
    m[:, 2, 2] = 1.0
    return m.astype(dtype)


def _sample_points(m: np.ndarray, height: int, width: int) -> tuple:
    """The contract's sample points in the plain order, in the matrices' dtype (test code, not ours)."""
    y, x = np.meshgrid(np.arange(height, dtype=m.dtype), np.arange(width, dtype=m.dtype), indexing="ij")
    rows = [m[:, r, 0, None, None] * x + m[:, r, 1, None, None] * y + m[:, r, 2, None, None] for r in range(3)]
    return rows[0] / rows[2], rows[1] / rows[2]


# -- PtychoPINN's own results, bit for bit -------------------------------------------------------


@pytest.mark.parametrize("run", list(ORDERS))
@pytest.mark.parametrize("fill_mode", ["edge", "zeros"])
def test_ptychopinn_projective_warp_bits(backend, run, fill_mode):
    """NumPy: every case.  JAX and TensorFlow: the bilinear cases whose arithmetic differs, each
    as one compiled program (where a compiler's contraction of ours would show; ~1 s each)."""
    d = fixture()
    compiled = backend != Backend.NUMPY
    cases = CASES if not compiled else ("f32c1", "f32c2", "f64c1") if run == "jit" else ("f32c1",)
    for case in cases:
        for interpolation in ("bilinear", "nearest") if not compiled else ("bilinear",):
            expected = d[f"{case}_{interpolation}_{fill_mode}_{run}"]
            got = _warp(backend, d[f"{case}_images"], d[f"{case}_transforms"], jit=compiled,
                        interpolation=interpolation, fill_mode=fill_mode, evaluation=ORDERS[run])
            assert np.array_equal(to_numpy(got), expected), (case, interpolation)


def test_tf_names_reproduce_ptychopinn(tf):
    from ptycho.projective_warp_xla import projective_warp_xla, projective_warp_xla_jit

    d = fixture()
    for fn, run in ((projective_warp_xla, "eager"), (projective_warp_xla_jit, "jit")):
        got = fn(tf.constant(d["f32c1_images"]), tf.constant(d["f32c1_transforms"]), interpolation="bilinear",
                 fill_mode="edge")
        assert_close(got, d[f"f32c1_bilinear_edge_{run}"], backend="tensorflow", dtype=np.float32, exact=True)


# -- the float64 SciPy oracle ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
@pytest.mark.parametrize("fill_mode, interpolation", [("zeros", "bilinear"), ("edge", "bilinear"), ("edge", "nearest")])
def test_matches_scipy_oracle(backend, dtype, fill_mode, interpolation):
    ndimage = pytest.importorskip("scipy.ndimage")
    real = np.float64 if dtype == np.complex128 else np.float32
    images = random_object((2, 13, 11), dtype, seed=4)[..., None]
    m = _homographies(2, seed=5, dtype=real)
    sx, sy = _sample_points(m, 13, 11)
    mode = "grid-constant" if fill_mode == "zeros" else "nearest"
    order = 1 if interpolation == "bilinear" else 0
    expected = np.stack([
        ndimage.map_coordinates(images[b, :, :, 0].real.astype(np.float64), [sy[b], sx[b]], order=order, mode=mode)
        + 1j * ndimage.map_coordinates(images[b, :, :, 0].imag.astype(np.float64), [sy[b], sx[b]], order=order,
                                       mode=mode)
        for b in range(2)
    ])[..., None]
    got = _warp(backend, images, m, interpolation=interpolation, fill_mode=fill_mode, evaluation="plain")
    assert_close(got, expected, backend=backend.value, shape=images.shape, dtype=dtype)


# -- a pure translation is our translate ----------------------------------------------------------


@pytest.mark.parametrize("evaluation", ["compiled", "plain"])
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_pure_translation_is_translate_bit_for_bit(backend, evaluation, dtype):
    from ptycho.backends import translate

    real = np.float64 if dtype == np.complex128 else np.float32
    images = random_object((3, 12, 10), dtype, seed=7)
    t = np.array([[1.25, -2.5], [0.0, 0.0], [-3.7, 4.1]], dtype=real)
    warped = _warp(backend, images[..., None], _translation(t, real), fill_mode="zeros", evaluation=evaluation,
                   jit=True)
    reference = translate(images, t, backend=backend.value, evaluation=evaluation)
    assert_close(warped, reference, backend=backend.value, shape=(3, 12, 10, 1), dtype=dtype, exact=True)


# -- fill modes, dtypes, broadcasting, orders ---------------------------------------------------------


def test_fill_modes_outside_the_image(backend):
    image = np.arange(1, 21, dtype=np.float32).reshape(1, 4, 5, 1)
    far = _translation(np.array([[100.0, 0.0]]))  # every sample point far left of the image
    for interpolation in ("bilinear", "nearest"):
        zeros = _warp(backend, image, far, interpolation=interpolation, fill_mode="zeros")
        assert_close(zeros, np.zeros_like(image), backend=backend.value, exact=True)
        constant = _warp(backend, image, far, interpolation=interpolation, fill_mode="constant", fill_value=-2.5)
        assert_close(constant, np.full_like(image, -2.5), backend=backend.value, exact=True)
        edge = _warp(backend, image, far, interpolation=interpolation, fill_mode="edge")
        assert_close(edge, np.repeat(image[:, :, :1], 5, axis=2), backend=backend.value, exact=True)


def test_nearest_zeros_tests_the_point_not_the_rounded_index(backend):
    image = np.ones((1, 3, 4, 1), np.float32)
    got = to_numpy(_warp(backend, image, _translation(np.array([[0.25, 0.0]])), interpolation="nearest",
                         fill_mode="zeros"))
    # column 0 samples x = -0.25: it rounds to pixel 0, but the point is outside the image
    assert np.array_equal(got[0, :, :, 0], np.array([[0, 1, 1, 1]] * 3, np.float32))


def test_constant_fill_of_complex_images(backend):
    image = random_object((1, 4, 4), np.complex64, seed=2)[..., None]
    got = _warp(backend, image, _translation(np.array([[-50.0, 0.0]])), fill_mode="constant", fill_value=1 - 2j)
    assert_close(got, np.full_like(image, 1 - 2j), backend=backend.value, dtype=np.complex64, exact=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64, np.complex128, np.int32, np.float16])
def test_result_keeps_the_images_dtype(backend, dtype):
    images = (np.arange(2 * 5 * 6 * 2).reshape(2, 5, 6, 2) % 7).astype(dtype)
    identity = _warp(backend, images, np.eye(3, dtype=np.float32)[None], fill_mode="zeros")
    assert_close(identity, images, backend=backend.value, dtype=dtype, exact=True)


def test_integer_images_are_truncated_like_tf_cast(backend):
    images = np.array([[0, 10], [20, 30]], np.int32).reshape(1, 2, 2, 1)
    # x - 0.25 and y: 0.75 * 10 + 0.25 * 0 = 7.5 at (0, 1): truncated to 7
    got = to_numpy(_warp(backend, images, _translation(np.array([[0.25, 0.0]])), fill_mode="edge"))
    assert got.dtype == np.int32 and got[0, 0, 1, 0] == 7


def test_broadcast_one_transform_and_one_image(backend):
    images = random_object((3, 9, 8), np.complex64, seed=3)[..., None]
    m = _homographies(3, seed=6)
    one_matrix = _warp(backend, images, m[:1])
    assert_close(one_matrix, _warp(backend, images, np.repeat(m[:1], 3, axis=0)), backend=backend.value, exact=True)
    one_image = _warp(backend, images[:1], m)
    assert_close(one_image, _warp(backend, np.repeat(images[:1], 3, axis=0), m), backend=backend.value, exact=True)


def test_eight_parameters_equal_matrices(backend):
    m = _homographies(2, seed=8)
    images = random_object((2, 7, 9), np.complex64, seed=8)[..., None]
    params = m.reshape(2, 9)[:, :8]
    assert_close(_warp(backend, images, params), _warp(backend, images, m), backend=backend.value, exact=True)


@pytest.mark.parametrize("evaluation", ["compiled", "plain"])
def test_eager_equals_xla_program(tf, evaluation):
    """The order is ours, not XLA's: the compiled program gives the eager bits (for JAX, whose
    eager mode is slow, the fixture test checks the compiled programs against PtychoPINN's bits)."""
    images = random_object((2, 10, 11), np.complex64, seed=9)[..., None]
    m = _homographies(2, seed=9)
    eager = _warp(Backend.TENSORFLOW, images, m, fill_mode="edge", evaluation=evaluation, jit=False)
    compiled = _warp(Backend.TENSORFLOW, images, m, fill_mode="edge", evaluation=evaluation, jit=True)
    assert_close(compiled, eager, backend="tensorflow", exact=True)


def test_point_at_infinity(backend):
    image = np.ones((1, 3, 3, 1), np.float32)
    m = np.array([[[1, 0, 0], [0, 1, 0], [0, 0, 0]]], np.float32)  # w = 0: (0, 0) -> 0/0, the rest -> inf
    zeros = to_numpy(_warp(backend, image, m, interpolation="nearest", fill_mode="zeros"))
    assert np.array_equal(zeros, np.zeros_like(image))
    edge = to_numpy(_warp(backend, image, m, interpolation="nearest", fill_mode="edge"))[0, :, :, 0]
    # row 0 samples y = 0/0, column 0 x = 0/0: not a number; elsewhere +inf, clipped to the edge
    assert np.isnan(edge[0]).all() and np.isnan(edge[:, 0]).all() and np.all(edge[1:, 1:] == 1)
    assert np.isnan(to_numpy(_warp(backend, image, m, fill_mode="zeros"))).all()


# -- PtychoPINN's TensorFlow names ----------------------------------------------------------------


def test_tfa_params_to_3x3(tf):
    from ptycho.projective_warp_xla import tfa_params_to_3x3

    params = tf.constant([[1.0, 0.5, 5.0, -0.5, 1.0, 2.0, 0.01, 0.02]], tf.float64)
    got = tfa_params_to_3x3(params)
    expected = np.array([[[1.0, 0.5, 5.0], [-0.5, 1.0, 2.0], [0.01, 0.02, 1.0]]])
    assert_close(got, expected, backend="tensorflow", dtype=np.float64, exact=True)


@pytest.mark.parametrize("evaluation", ["compiled", "plain"])
def test_inside_a_callers_graph(tf, evaluation):
    """In a caller's ``tf.function`` (not compiled by XLA) the compiled order keeps its bits; the
    plain order's sums are Grappler's to rewrite there (as they are in PtychoPINN's own graphs):
    within the tolerance table."""
    from ptycho.projective_warp_xla import projective_warp_xla

    images = tf.constant(random_object((2, 6, 7), np.complex64, seed=1)[..., None])
    m = tf.constant(_homographies(2, seed=2))
    traced = tf.function(lambda a, b: projective_warp_xla(a, b, fill_mode="zeros", evaluation=evaluation),
                         autograph=False)
    eager = projective_warp_xla(images, m, fill_mode="zeros", evaluation=evaluation)
    assert_close(traced(images, m), eager, backend="tensorflow", exact=evaluation == "compiled")


@pytest.mark.parametrize("use_jit", [False, True])
def test_translate_xla_broadcasts_like_ptychopinn(tf, use_jit):
    """b translations for b*c images: image i gets translation i % b (PtychoPINN's translate_xla)."""
    from ptycho.projective_warp_xla import translate_xla

    images = random_object((6, 9, 8), np.complex64, seed=11)[..., None]
    t = np.array([[1.5, -0.25], [-2.0, 3.75]], np.float32)
    got = translate_xla(images, t, use_jit=use_jit)
    expected = translate_xla(images, t[np.arange(6) % 2], use_jit=use_jit)
    assert_close(got, expected, backend="tensorflow", shape=(6, 9, 8, 1), exact=True)
    one = translate_xla(images, t[:1], use_jit=use_jit)
    assert_close(one, translate_xla(images, np.repeat(t[:1], 6, axis=0), use_jit=use_jit), exact=True)
