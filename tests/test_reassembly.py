"""Reassembly: placement (the adjoint of extraction) and PtychoPINN's shift-and-sum, windowed.

References:
- the **legacy full-canvas loop**, PtychoPINN's ``shift_and_sum`` as it was
  written (every crop zero-padded to the whole canvas, the whole canvas
  translated with ``ptycho.tf_helper.translate``, ``result += translated``):
  the ground truth.  Per-patch contributions must be bit-identical; on a CPU
  the sums too (same contributions, added in patch order);
- a float64 SciPy oracle (``map_coordinates(order=1, mode='grid-constant')``),
  fed the contract's float32 coordinates;
- the dot-product identity ``<extract(x), y> == <x, place(y)>`` for placement.
"""

from __future__ import annotations

import functools
import zlib

import numpy as np
import pytest

from ptycho.backends import Backend
from ptycho.testing import RELATIVE_ATOL, assert_close, require_backend, to_numpy
from tests.helpers import random_object, regime_positions

DTYPES = {"complex64": np.complex64, "complex128": np.complex128}


def _seed(*parts) -> int:
    return zlib.crc32("-".join(map(str, parts)).encode())


# ---------------------------------------------------------------------------
# The legacy full-canvas loop (ground truth) and the SciPy oracle.
# ---------------------------------------------------------------------------
OFFSET_REGIMES = ("random", "integer", "half", "clustered", "wide")


def reassembly_offsets(regime: str, count: int, seed: int) -> np.ndarray:
    """PtychoPINN ``global_offsets`` (P, 1, 1, 2), float64, (x, y)."""
    rng = np.random.default_rng(seed)
    if regime == "random":
        xy = rng.uniform(-6.0, 6.0, (count, 2))
    elif regime == "integer":
        xy = rng.integers(-5, 6, (count, 2)).astype(np.float64)
    elif regime == "half":
        xy = rng.integers(-10, 11, (count, 2)) * 0.5
    elif regime == "clustered":
        xy = 100.0 + rng.uniform(-0.3, 0.3, (count, 2))  # far from 0: the recentring matters
    elif regime == "wide":
        xy = rng.uniform(-15.0, 15.0, (count, 2))
    else:
        raise ValueError(regime)
    return xy.reshape(count, 1, 1, 2)


@functools.lru_cache(maxsize=None)
def reassembly_case(regime: str, count: int = 9, N: int = 16, dtype: str = "complex64"):
    seed = _seed(regime, count, N, dtype)
    rng = np.random.default_rng(seed)
    patches = (rng.standard_normal((count, N, N)) + 1j * rng.standard_normal((count, N, N))).astype(DTYPES[dtype])
    return patches[..., None], reassembly_offsets(regime, count, seed + 1)


@functools.lru_cache(maxsize=None)
def legacy_shift_and_sum(regime: str, M: int, count: int = 9, N: int = 16, ones: bool = False):
    """PtychoPINN's loop: (canvas (S, S), per-patch canvases (P, S, S), adjusted offsets (P, 2), pad)."""
    require_backend(Backend.TENSORFLOW)
    import tensorflow as tf

    from ptycho import tf_helper as hh

    obj, global_offsets = reassembly_case(regime, count, N)
    obj = tf.convert_to_tensor(obj)
    if ones:
        obj = tf.ones_like(obj)
    obj = obj[:, N // 2 - M // 2:N // 2 + M // 2, N // 2 - M // 2:N // 2 + M // 2, :]
    center_of_mass = tf.reduce_mean(tf.cast(global_offsets, tf.float32), axis=0)
    adjusted = tf.cast(global_offsets, tf.float32) - center_of_mass
    pad = int(tf.cast(tf.math.ceil(tf.reduce_max(tf.abs(adjusted))), tf.int32))
    pad += pad % 2
    result = tf.zeros_like(hh.pad(obj[0:1], pad))
    contributions = []
    for i in range(len(adjusted)):
        padded = hh.pad(obj[i:i + 1], pad)
        offset_2d = tf.reshape(adjusted[i], (1, 2))
        translated = hh.translate(padded, offset_2d, interpolation="bilinear")
        contributions.append(translated[0, :, :, 0].numpy())
        result += translated[0]
    return result[0, :, :, 0].numpy(), np.stack(contributions), tf.reshape(adjusted, (-1, 2)).numpy(), pad


def legacy_reassemble_position(regime: str, M: int) -> np.ndarray:
    """PtychoPINN's ``reassemble_position`` on the legacy loop (TF's complex64 division)."""
    require_backend(Backend.TENSORFLOW)
    import tensorflow as tf

    num = legacy_shift_and_sum(regime, M)[0]
    den = legacy_shift_and_sum(regime, M, ones=True)[0]
    return (tf.constant(num) / (1e-9 + tf.constant(den))).numpy()


def scipy_shift_and_sum(crops: np.ndarray, adjusted: np.ndarray, pad: int) -> np.ndarray:
    """Float64 oracle: sum over p of bilinear(pad(crop_p), X - tx, Y - ty), coordinates in float32."""
    from scipy.ndimage import map_coordinates

    count, M, _ = crops.shape
    size = M + 2 * pad
    grid = np.arange(size, dtype=np.float32)
    out = np.zeros((size, size), dtype=np.complex128)
    for crop, (tx, ty) in zip(crops, adjusted.astype(np.float32)):
        padded = np.pad(crop.astype(np.complex128), pad)
        rows, cols = np.meshgrid((grid - ty).astype(np.float64), (grid - tx).astype(np.float64), indexing="ij")
        coords = np.stack([rows, cols])
        re = map_coordinates(padded.real, coords, order=1, mode="grid-constant", cval=0.0)
        im = map_coordinates(padded.imag, coords, order=1, mode="grid-constant", cval=0.0)
        out += re + 1j * im
    return out


def _crops(regime: str, M: int, N: int = 16) -> np.ndarray:
    obj, _ = reassembly_case(regime, 9, N)
    lo = N // 2 - M // 2
    return obj[:, lo:lo + M, lo:lo + M, 0]


def _windows_job(crops, offsets, guard, *, pad, evaluation, xp):
    from ptycho.backends.placement import shift_windows

    return shift_windows(crops, offsets, pad=pad, xp=xp, evaluation=evaluation, fma_guard=guard)


def engine_windows(backend: str, crops: np.ndarray, adjusted: np.ndarray, pad: int, evaluation: str = "compiled"):
    from ptycho.backends import compile_job, get_backend

    mod = get_backend(backend)
    fn = compile_job(backend, _windows_job, pad=pad, evaluation=evaluation)
    with mod.precision(np.complex64):  # JAX: the exact fma works in float64
        windows, origin = fn(mod.asarray(crops), mod.asarray(adjusted.astype(np.float32)), mod.fma_guard())
        return to_numpy(windows), to_numpy(origin)


def embed(windows: np.ndarray, origin: np.ndarray, size: int) -> np.ndarray:
    """Each window (P, h, w) at its origin in a (P, size, size) canvas; pixels outside dropped."""
    count, h, w = windows.shape
    out = np.zeros((count, size + h, size + w), dtype=windows.dtype)
    for p in range(count):
        r, c = origin[p]
        out[p, r:r + h, c:c + w] = windows[p]
    return out[:, :size, :size]


# ---------------------------------------------------------------------------
# shift_and_sum: windowed == legacy full-canvas loop.
# ---------------------------------------------------------------------------
SHIFT_CELLS = [pytest.param(regime, 10, id=f"{regime}-M10") for regime in OFFSET_REGIMES] + [
    pytest.param("random", 6, id="random-M6"),
    pytest.param("wide", 16, id="wide-M16"),  # M = N: the whole patch
]


@pytest.mark.parametrize("regime, M", SHIFT_CELLS)
def test_windows_bit_identical_to_legacy_contributions(backend, regime, M):
    """Each patch's window equals its whole translated canvas of the legacy loop, bit for bit (and
    the legacy canvas is zero outside the window)."""
    _, contributions, adjusted, pad = legacy_shift_and_sum(regime, M)
    windows, origin = engine_windows(backend.value, _crops(regime, M), adjusted, pad)
    assert windows.shape == (9, M + 1, M + 1)
    size = M + 2 * pad
    assert_close(embed(windows, origin, size), contributions, dtype=np.complex64, exact=True)


@pytest.mark.parametrize("regime, M", SHIFT_CELLS)
def test_sum_equals_legacy_loop(backend, regime, M):
    """Fed the legacy's recentred offsets, the windowed sum equals the sequential loop bit for bit
    (same contributions, added in patch order)."""
    from ptycho.backends.placement import shift_and_sum

    reference, _, adjusted, pad = legacy_shift_and_sum(regime, M)
    obj, _ = reassembly_case(regime)
    got = shift_and_sum(obj[..., 0], adjusted, M, backend=backend.value, recentre=False)
    assert_close(got, reference, backend=backend.value, shape=(M + 2 * pad,) * 2, dtype=np.complex64, exact=True)


@pytest.mark.parametrize("regime, M", [c for c in SHIFT_CELLS if c.values[0] != "clustered"])
def test_recentred_sum_close_to_legacy(backend, regime, M):
    """With its own recentring (the backend's float32 mean), within the complex64 tolerance."""
    from ptycho.backends.placement import shift_and_sum

    reference, _, _, pad = legacy_shift_and_sum(regime, M)
    obj, offsets = reassembly_case(regime)
    got = shift_and_sum(obj[..., 0], offsets.reshape(-1, 2), M, backend=backend.value)
    assert_close(got, reference, backend=backend.value, shape=(M + 2 * pad,) * 2, dtype=np.complex64)


@pytest.mark.parametrize("regime", OFFSET_REGIMES)
def test_recentring_within_one_ulp_of_tensorflow(backend, regime):
    """The float32 mean is the backend's own reduction: within one ulp of TensorFlow's
    ``reduce_mean`` (PtychoPINN's; ``ptycho.tf_helper`` uses it).  Offsets far from 0
    ("clustered", ~100 px) make the canvas sensitive to that ulp, so the engine's canvas
    is compared with the legacy one only through the same recentred offsets there."""
    from ptycho.backends import get_backend
    from ptycho.backends.placement import recentre_offsets

    _, offsets = reassembly_case(regime)
    flat = offsets.reshape(-1, 2).astype(np.float32)
    _, _, reference, _ = legacy_shift_and_sum(regime, 10)
    mod = get_backend(backend.value)
    with mod.precision(np.complex64):
        got = to_numpy(recentre_offsets(mod.asarray(flat), xp=mod.namespace))
    assert got.dtype == np.float32
    centre_ulp = np.spacing(np.abs(flat.mean(axis=0, dtype=np.float64)).astype(np.float32))
    assert np.all(np.abs(got - reference) <= centre_ulp + np.spacing(np.abs(reference)))


@pytest.mark.parametrize("regime, M", SHIFT_CELLS)
def test_scipy_oracle(backend, regime, M):
    from ptycho.backends.placement import shift_and_sum

    _, _, adjusted, pad = legacy_shift_and_sum(regime, M)
    oracle = scipy_shift_and_sum(_crops(regime, M), adjusted, pad)
    obj, _ = reassembly_case(regime)
    got = shift_and_sum(obj[..., 0], adjusted, M, backend=backend.value, recentre=False)
    assert_close(got, oracle, backend=backend.value, dtype=np.complex64)


@pytest.mark.parametrize("regime", ["random", "wide"])
def test_plain_order_matches_eager_legacy(backend, regime):
    """``evaluation='plain'`` windows equal PtychoPINN's eager translation (``use_jit=False``)."""
    require_backend(Backend.TENSORFLOW)  # the reference is PtychoPINN's TF path
    import tensorflow as tf

    from ptycho import tf_helper as hh

    M = 10
    _, _, adjusted, pad = legacy_shift_and_sum(regime, M)
    crops = _crops(regime, M)
    windows, origin = engine_windows(backend.value, crops, adjusted, pad, evaluation="plain")
    padded = tf.pad(tf.constant(crops), [[0, 0], [pad, pad], [pad, pad]])[..., None]
    eager = hh.translate(padded, tf.constant(adjusted), use_jit=False)[..., 0].numpy()
    assert_close(embed(windows, origin, M + 2 * pad), eager, dtype=np.complex64, exact=True)


@pytest.mark.parametrize("regime", ["random", "clustered", "wide"])
def test_tf_helper_equals_legacy(tf, regime):
    """PtychoPINN's names: shift_and_sum and reassemble_position equal the legacy loop bit for bit."""
    from ptycho.tf_helper import reassemble_position, shift_and_sum

    M = 10
    obj, offsets = reassembly_case(regime)
    reference, _, _, pad = legacy_shift_and_sum(regime, M)
    got = shift_and_sum(obj, offsets, M=M)
    assert_close(got, reference[..., None], backend="tensorflow", dtype=np.complex64, exact=True)
    got = reassemble_position(obj, offsets, M=M)
    assert_close(got, legacy_reassemble_position(regime, M)[..., None], backend="tensorflow",
                 shape=(M + 2 * pad, M + 2 * pad, 1), dtype=np.complex64, exact=True)


@pytest.mark.parametrize("regime", ["random", "wide"])
def test_reassemble_position_engine(backend, regime):
    """The engine's real division agrees with PtychoPINN's complex one to rounding."""
    from ptycho.backends.placement import reassemble_position

    M = 10
    obj, offsets = reassembly_case(regime)
    got = reassemble_position(obj[..., 0], offsets.reshape(-1, 2), M, backend=backend.value)
    reference = legacy_reassemble_position(regime, M)
    assert_close(got, reference, backend=backend.value, dtype=np.complex64)


@pytest.mark.parametrize("regime", ["random", "wide"])
def test_backends_bit_identical(backend, regime):
    from ptycho.backends.placement import shift_and_sum

    obj, offsets = reassembly_case(regime, 9, 16, "complex128")
    flat = offsets.reshape(-1, 2)
    flat = flat - flat.mean(axis=0)  # one recentring for all (each backend's mean may differ by an ulp)
    reference = shift_and_sum(obj[..., 0], flat, 8, backend="numpy", recentre=False)
    got = shift_and_sum(obj[..., 0], flat, 8, backend=backend.value, recentre=False)
    assert_close(got, reference, backend=backend.value, dtype=np.complex128, exact=True)


@pytest.mark.parametrize("evaluation", ["compiled", "plain"])
@pytest.mark.parametrize("dname", sorted(DTYPES))
@pytest.mark.parametrize("regime, M", [("random", 10), ("wide", 16), ("integer", 6)])
def test_numpy_windows_numba_equals_array(regime, M, dname, evaluation):
    """The NumPy backend's windows by the Numba kernel (its default with ``ptycho[fast]``) equal the
    array-API algorithm's bit for bit: shift_and_sum and reassemble_position (the ones' windows too)."""
    from ptycho.testing import require_extra

    require_extra("fast", "numba")
    from ptycho.backends import _numpy, placement

    obj, offsets = reassembly_case(regime, 9, 16, dname)
    flat = offsets.reshape(-1, 2)
    results = {}
    for name in ("array", "numba"):
        with _numpy.kernel(name):
            results[name] = [
                placement.shift_and_sum(obj[..., 0], flat, M, backend="numpy", evaluation=evaluation),
                placement.reassemble_position(obj[..., 0], flat, M, backend="numpy", evaluation=evaluation),
            ]
    for got, reference in zip(results["numba"], results["array"]):
        assert_close(got, reference, backend="numpy", dtype=DTYPES[dname], exact=True)


def _default_device_is_cpu(backend) -> bool:
    """Whether the backend computes on a CPU by default (where its one scatter applies updates in order)."""
    if backend.value == "jax":
        import jax

        return jax.default_backend() == "cpu"
    if backend.value == "tensorflow":
        import tensorflow as tf

        return not tf.config.list_logical_devices("GPU")
    return True


@pytest.mark.parametrize("op", ["shift_and_sum", "reassemble_position", "place_patches"])
def test_deterministic_and_ordered_path(backend, op):
    """The row-by-row path gives the NumPy backend's bits (CPU, in patch order) twice, on every device;
    on a CPU the one-scatter path gives them too (on a GPU its atomics may not)."""
    from ptycho.backends import placement

    obj, offsets = reassembly_case("wide", 40, 16)
    patches, flat = obj[..., 0], offsets.reshape(-1, 2)
    if op == "place_patches":
        run = functools.partial(placement.place_patches, patches, flat + 12.0, (30, 34))
    else:
        run = functools.partial(getattr(placement, op), patches, flat, 10)
    reference = to_numpy(run(backend="numpy", ordered=False))
    assert_close(run(backend=backend.value, ordered=True), reference, exact=True)
    assert_close(run(backend=backend.value, ordered=True), reference, exact=True)
    if _default_device_is_cpu(backend):
        assert_close(run(backend=backend.value, ordered=False), reference, exact=True)


CHUNKED_OPS = {
    # op -> (call, updates per patch)
    "shift_and_sum": (lambda pl, p, f, b: pl.shift_and_sum(p, f, 10, backend=b), 11 * 11),
    "reassemble_position": (lambda pl, p, f, b: pl.reassemble_position(p, f, 10, backend=b), 11 * 11),
    "place_patches": (lambda pl, p, f, b: pl.place_patches(p, f + 12.0, (30, 34), backend=b), 4 * 16 * 16),
    "place_normalized": (lambda pl, p, f, b: pl.place_patches(p, f + 12.0, (30, 34), backend=b, normalize=True),
                         4 * 16 * 16),
    "place_weighted_normalized": (
        lambda pl, p, f, b: pl.place_patches(p, f + 12.0, (30, 34), backend=b, normalize=True,
                                             weights=np.linspace(0.5, 1.5, 256).reshape(16, 16)),
        4 * 16 * 16),
}


@pytest.mark.parametrize("op", list(CHUNKED_OPS))
def test_chunks_carry_the_canvas(backend, op, monkeypatch):
    """Many chunks (a padded last one) give the one-chunk bits: chunks run in order, and the rows that
    pad the last chunk add nothing -- not even to the ones/weights canvas of the normalised ops."""
    from ptycho.backends import placement

    obj, offsets = reassembly_case("wide", 40, 16)
    patches, flat = obj[..., 0], offsets.reshape(-1, 2)
    call, per_patch = CHUNKED_OPS[op]
    whole = to_numpy(call(placement, patches, flat, backend.value))
    monkeypatch.setattr(placement, "CHUNK_UPDATES", 7 * per_patch)  # 7 patches per chunk: 6 chunks, 2 rows pad
    assert_close(call(placement, patches, flat, backend.value), whole, exact=True)


# ---------------------------------------------------------------------------
# PtychoPINN's own reassembly tests, unchanged in meaning, against ptycho.tf_helper.
# ---------------------------------------------------------------------------
class TestPtychoPINNReassemblePosition:
    N, M = 32, 16

    def test_perfect_overlap_averages_to_identity(self, tf):
        from ptycho.tf_helper import reassemble_position

        patch_value = 1.0 + 2.0j
        patch = tf.constant(patch_value, shape=(1, self.N, self.N, 1), dtype=tf.complex64)
        obj_tensor = tf.concat([patch, patch], axis=0)
        global_offsets = np.array([[0, 0], [0, 0]], dtype=np.float64).reshape((2, 1, 2, 1))
        result_np = reassemble_position(obj_tensor, global_offsets, M=self.M).numpy()
        non_zero_values = result_np[np.abs(result_np) > 1e-10]
        assert len(non_zero_values) > 0
        np.testing.assert_allclose(non_zero_values, patch_value, rtol=1e-6)
        assert np.all(np.isfinite(result_np))
        assert np.sum(np.abs(result_np)) > 0

    def test_identical_patches_single_vs_double(self, tf):
        from ptycho.tf_helper import reassemble_position

        patch_value = 1.0 + 2.0j
        single = tf.constant(patch_value, shape=(1, self.N, self.N, 1), dtype=tf.complex64)
        result_single = reassemble_position(single, np.zeros((1, 1, 2, 1)), M=self.M)
        double = tf.constant(patch_value, shape=(2, self.N, self.N, 1), dtype=tf.complex64)
        result_double = reassemble_position(double, np.zeros((2, 1, 2, 1)), M=self.M)
        np.testing.assert_allclose(result_single.numpy(), result_double.numpy(), rtol=1e-6)

    def test_basic_functionality(self, tf):
        from ptycho.tf_helper import reassemble_position

        obj_tensor = tf.ones((4, self.N, self.N, 1), dtype=tf.complex64)
        offsets = np.array([[0, 0], [0, 20], [20, 0], [20, 20]], dtype=np.float64)
        result = reassemble_position(obj_tensor, offsets.reshape((4, 1, 2, 1)), M=self.M)
        assert result.dtype == tf.complex64
        assert len(result.shape) == 3 and result.shape[2] == 1
        assert np.all(np.isfinite(result.numpy()))
        assert np.sum(np.abs(result.numpy())) > 0

    def test_different_patch_values_blend(self, tf):
        from ptycho.tf_helper import reassemble_position

        value1, value2 = 1.0 + 0.0j, 5.0 + 0.0j
        patch1 = tf.constant(value1, shape=(1, self.N, self.N, 1), dtype=tf.complex64)
        patch2 = tf.constant(value2, shape=(1, self.N, self.N, 1), dtype=tf.complex64)
        obj_tensor = tf.concat([patch1, patch2], axis=0)
        result_np = reassemble_position(obj_tensor, np.zeros((2, 1, 2, 1)), M=self.M).numpy()
        non_zero_values = result_np[np.abs(result_np) > 1e-10]
        assert len(non_zero_values) > 0
        np.testing.assert_allclose(non_zero_values, (value1 + value2) / 2.0, rtol=1e-6)
        assert np.all(np.isfinite(result_np))


# ---------------------------------------------------------------------------
# place_patches: the adjoint of extract_patches.
# ---------------------------------------------------------------------------
PLACE_REGIMES = ("inside", "border", "outside", "integer", "mixed")
PLACE_SHAPE = (20, 26)


def place_positions(regime: str, count: int, N: int, seed: int) -> np.ndarray:
    """(count, 2) positions on the canvas PLACE_SHAPE: the extraction matrix's regimes, or a mix of them."""
    if regime == "mixed":
        return np.concatenate([place_positions(r, count // 4 + 1, N, seed + i)
                               for i, r in enumerate(("inside", "border", "outside", "integer"))])[:count]
    return regime_positions("interior" if regime == "inside" else regime, count, PLACE_SHAPE, N, seed)


def dot_residual(backend: str, dname: str, regime: str, N: int) -> tuple:
    """(|<extract(x), y> - <x, place(y)>|, |extract(x)| |y|)."""
    from ptycho.backends import extract_patches, place_patches

    seed = _seed(backend, dname, regime, N)
    dtype = DTYPES[dname]
    x = random_object(PLACE_SHAPE, dtype, seed)
    positions = place_positions(regime, 12, N, seed + 1)
    y = random_object((12, N, N), dtype, seed + 2)
    ex = to_numpy(extract_patches(x, positions, N, backend=backend)).astype(np.complex128)
    pl = to_numpy(place_patches(y, positions, PLACE_SHAPE, backend=backend))
    assert pl.shape == PLACE_SHAPE and pl.dtype == dtype
    lhs = np.vdot(ex, y.astype(np.complex128))
    rhs = np.vdot(x.astype(np.complex128), pl.astype(np.complex128))
    return abs(lhs - rhs), np.linalg.norm(ex) * np.linalg.norm(y)


DOT_CELLS = [
    pytest.param(regime, dname, 8, id=f"{dname}-N8-{regime}") for regime in PLACE_REGIMES for dname in DTYPES
] + [pytest.param("mixed", "complex64", 9, id="complex64-N9-mixed")]  # odd N


@pytest.mark.parametrize("regime, dname, N", DOT_CELLS)
def test_dot_product_identity(backend, regime, dname, N):
    """<extract(x), y> == <x, place(y)> to rounding (relative to |extract(x)| |y|)."""
    residual, scale = dot_residual(backend.value, dname, regime, N)
    assert residual <= RELATIVE_ATOL[np.dtype(DTYPES[dname])] * max(scale, 1.0), (residual, scale)


def test_place_is_native_and_matches_numpy(backend):
    from ptycho.backends import place_patches

    positions = place_positions("mixed", 12, 8, 5)
    y = random_object((12, 8, 8), np.complex64, 6)
    reference = place_patches(y, positions, PLACE_SHAPE, backend="numpy")
    got = place_patches(y, positions, PLACE_SHAPE, backend=backend.value)
    assert_close(got, reference, backend=backend.value, shape=PLACE_SHAPE, dtype=np.complex64, exact=True)


def test_place_matches_dense_adjoint():
    """place == the conjugate transpose of extraction's matrix (built column by column)."""
    from ptycho.backends import extract_patches, place_patches

    shape, N = (7, 9), 4
    positions = np.array([[1.25, 2.5], [-1.75, 0.5], [8.5, 6.75], [4.0, 3.0]])
    columns = []
    for k in range(shape[0] * shape[1]):
        unit = np.zeros(shape[0] * shape[1], np.complex128)
        unit[k] = 1
        columns.append(extract_patches(unit.reshape(shape), positions, N, backend="numpy").reshape(-1))
    matrix = np.stack(columns, axis=1)  # (P*N*N, H*W)
    y = random_object((4, N, N), np.complex128, 3)
    dense = (matrix.conj().T @ y.reshape(-1)).reshape(shape)
    assert_close(place_patches(y, positions, shape), dense, dtype=np.complex128)


def test_weights_and_normalized_stitch(backend):
    """weights multiply the patches; the stitch is place(w*y) / (place(w) + eps)."""
    from ptycho.backends import place_patches

    positions = place_positions("mixed", 12, 8, 7)
    y = random_object((12, 8, 8), np.complex128, 8)
    w = np.abs(random_object((8, 8), np.complex128, 9)) ** 2
    weighted = to_numpy(place_patches(y, positions, PLACE_SHAPE, backend=backend.value, weights=w))
    assert_close(weighted, to_numpy(place_patches(y * w, positions, PLACE_SHAPE, backend="numpy")), dtype=np.complex128)
    per_patch = np.broadcast_to(w, (12, 8, 8))
    stitched = place_patches(y, positions, PLACE_SHAPE, backend=backend.value, weights=per_patch, normalize=True, eps=1e-6)
    coverage = to_numpy(place_patches(np.broadcast_to(w, (12, 8, 8)).astype(np.complex128), positions, PLACE_SHAPE))
    assert_close(stitched, weighted / (coverage.real + 1e-6), backend=backend.value, dtype=np.complex128)


@pytest.mark.parametrize("weighted", [False, True], ids=["ones", "weights"])
def test_return_coverage_is_the_separate_placement_of_w(backend, weighted):
    """return_coverage gives place(w) -- the bits of a second placement -- and the same stitch."""
    from ptycho.backends import place_patches
    from ptycho.errors import InputError

    positions = place_positions("mixed", 12, 8, 7)
    y = random_object((12, 8, 8), np.complex64, 8)
    w = (np.abs(random_object((8, 8), np.complex64, 9)) ** 2).astype(np.float32) if weighted else None
    kwargs = dict(backend=backend.value, weights=w, normalize=True)
    stitched, coverage = place_patches(y, positions, PLACE_SHAPE, return_coverage=True, **kwargs)
    assert_close(stitched, to_numpy(place_patches(y, positions, PLACE_SHAPE, **kwargs)), exact=True)
    ones = np.broadcast_to(np.ones((8, 8), np.complex64) if w is None else w.astype(np.complex64), (12, 8, 8))
    separate = to_numpy(place_patches(ones, positions, PLACE_SHAPE, backend=backend.value)).real
    got = to_numpy(coverage)
    assert got.dtype == np.float32 and got.shape == PLACE_SHAPE
    assert_close(got, separate, exact=True)
    with pytest.raises(InputError, match="return_coverage needs normalize=True"):
        place_patches(y, positions, PLACE_SHAPE, backend=backend.value, return_coverage=True)


def test_stitch_of_extracted_patches_restores_object(backend):
    """Integer positions: extraction copies pixels, so the normalised stitch gives the object back
    wherever a patch covers it."""
    from ptycho.backends import extract_patches, place_patches

    x = random_object(PLACE_SHAPE, np.complex64, 11)
    grid = np.stack(np.meshgrid(np.arange(0, 27, 5), np.arange(0, 21, 5)), axis=-1).reshape(-1, 2).astype(np.float64)
    patches = extract_patches(x, grid, 8, backend=backend.value)
    stitched = to_numpy(place_patches(patches, grid, PLACE_SHAPE, normalize=True))
    coverage = to_numpy(place_patches(np.ones((len(grid), 8, 8), np.complex64), grid, PLACE_SHAPE)).real
    covered = coverage > 0.5
    assert covered.mean() > 0.9
    assert_close(stitched[covered], x[covered], dtype=np.complex64)


def test_place_empty_and_real_input():
    from ptycho.backends import place_patches

    empty = place_patches(np.zeros((0, 4, 4), np.complex64), np.zeros((0, 2)), (5, 6))
    assert_close(empty, np.zeros((5, 6), np.complex64), dtype=np.complex64, exact=True)
    real = place_patches(np.ones((1, 4, 4)), np.array([[2.0, 2.0]]), (5, 6))
    assert real.dtype == np.complex128


# ---------------------------------------------------------------------------
# Gradients: TF and JAX agree with each other and with central finite differences.
# ---------------------------------------------------------------------------
GRAD_SHAPE = (12, 14)


@functools.lru_cache(maxsize=None)
def grad_case(op: str):
    rng = np.random.default_rng(_seed("grad", op))
    count, N = 5, 8
    re = rng.standard_normal((count, N, N))
    im = rng.standard_normal((count, N, N))
    if op == "place":
        positions = rng.uniform(0.1, 0.9, (count, 2)) + rng.integers(1, 11, (count, 2))
    else:
        positions = rng.uniform(0.1, 0.9, (count, 2)) + rng.integers(-4, 5, (count, 2))
    canvas = GRAD_SHAPE if op == "place" else (14, 14)  # shift: M = 6, pad = 4
    target = rng.standard_normal(canvas) + 1j * rng.standard_normal(canvas)
    return re, im, positions, target


def _loss(op: str, backend: str, xp, re, im, positions, target, evaluation="plain"):
    """A real loss of the reassembled canvas: Re<target, canvas> + |canvas|^2 / 4."""
    from ptycho.backends.placement import place_patches, shift_and_sum

    patches = xp.complex(re, im) if hasattr(xp, "complex") else re + 1j * im
    if op == "place":
        canvas = place_patches(patches, positions, GRAD_SHAPE, backend=backend)
    else:
        canvas = shift_and_sum(patches, positions, 6, backend=backend, pad=4, evaluation=evaluation)
    cre, cim = xp.real(canvas), xp.imag(canvas)
    tre, tim = xp.real(target), xp.imag(target)
    total = xp.sum if hasattr(xp, "sum") else __import__("tensorflow").reduce_sum
    return total(tre * cre + tim * cim) + total(cre * cre + cim * cim) / 4


def jax_grads(op: str):
    require_backend(Backend.JAX)
    import jax
    import jax.numpy as jnp

    from ptycho.backends import get_backend

    re, im, positions, target = grad_case(op)
    xp = get_backend("jax").namespace
    with jax.enable_x64(True):
        fn = functools.partial(_loss, op, "jax", xp)
        args = (jnp.asarray(re), jnp.asarray(im), jnp.asarray(positions), jnp.asarray(target))
        value, grads = jax.value_and_grad(fn, argnums=(0, 1, 2))(*args)
        return float(value), [np.asarray(g) for g in grads]


def tf_grads(op: str):
    require_backend(Backend.TENSORFLOW)
    import tensorflow as tf

    from ptycho.backends import get_backend

    re, im, positions, target = grad_case(op)
    xp = get_backend("tensorflow").namespace
    variables = [tf.Variable(re), tf.Variable(im), tf.Variable(positions)]
    with tf.GradientTape() as tape:
        value = _loss(op, "tensorflow", xp, *[tf.convert_to_tensor(v) for v in variables], tf.constant(target))
    grads = tape.gradient(value, variables)
    return float(value), [g.numpy() for g in grads]


def numpy_loss(op: str, re, im, positions) -> float:
    from ptycho.backends import get_backend

    target = grad_case(op)[3]
    return float(_loss(op, "numpy", get_backend("numpy").namespace, re, im, positions, target))


def finite_difference(op: str, which: int, index: tuple, h: float = 1e-6) -> float:
    args = [a.copy() for a in grad_case(op)[:3]]
    args[which][index] += h
    up = numpy_loss(op, *args)
    args[which][index] -= 2 * h
    down = numpy_loss(op, *args)
    return (up - down) / (2 * h)


@pytest.mark.parametrize("op", ["place", "shift"])
def test_gradients_tf_jax_and_finite_differences(op):
    """complex128: TF and JAX gradients (patches' real and imaginary parts, positions) agree to
    1e-10 relative, and with central finite differences to 1e-6."""
    value_jax, grads_jax = jax_grads(op)
    value_tf, grads_tf = tf_grads(op)
    assert abs(value_jax - value_tf) <= 1e-12 * abs(value_jax)
    for g_jax, g_tf in zip(grads_jax, grads_tf):
        scale = np.max(np.abs(g_jax))
        assert scale > 0
        assert np.max(np.abs(g_jax - g_tf)) <= 1e-10 * scale
    rng = np.random.default_rng(_seed("fd", op))
    for which, grad in enumerate(grads_jax):
        for _ in range(4):
            index = tuple(int(rng.integers(0, s)) for s in grad.shape)
            if which < 2:  # pick pixels that reach the canvas
                index = (index[0], 3 + index[1] % 2, 3 + index[2] % 2)
            fd = finite_difference(op, which, index)
            assert abs(fd - grad[index]) <= 1e-6 * max(1.0, np.max(np.abs(grad))), (which, index, fd, grad[index])


def test_gradients_compiled_order_complex64():
    """complex64, compiled order (PtychoPINN's): TF and JAX gradients agree to float32 rounding."""
    require_backend(Backend.JAX)
    require_backend(Backend.TENSORFLOW)
    import jax
    import jax.numpy as jnp
    import tensorflow as tf

    from ptycho.backends import get_backend

    re, im, positions, target = grad_case("shift")
    args32 = [re.astype(np.float32), im.astype(np.float32), positions.astype(np.float32)]
    t64 = target.astype(np.complex64)
    fn = functools.partial(_loss, "shift", "jax", get_backend("jax").namespace, evaluation="compiled")
    with get_backend("jax").precision(np.complex64):
        grads_jax = jax.grad(fn, argnums=(0, 1, 2))(*[jnp.asarray(a) for a in args32], jnp.asarray(t64))
    variables = [tf.Variable(a) for a in args32]
    with tf.GradientTape() as tape:
        value = _loss("shift", "tensorflow", get_backend("tensorflow").namespace,
                      *[tf.convert_to_tensor(v) for v in variables], tf.constant(t64), evaluation="compiled")
    grads_tf = tape.gradient(value, variables)
    for g_jax, g_tf in zip(grads_jax, grads_tf):
        g_jax, g_tf = np.asarray(g_jax), g_tf.numpy()
        assert np.max(np.abs(g_jax - g_tf)) <= 1e-5 * np.max(np.abs(g_jax))


def test_tf_helper_gradients(tf):
    """PtychoPINN's names under tf.GradientTape: gradients w.r.t. obj_tensor and global_offsets."""
    from ptycho.tf_helper import reassemble_position

    obj, offsets = reassembly_case("random")
    obj_var = tf.Variable(obj)
    off_var = tf.Variable(offsets.astype(np.float32))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.abs(reassemble_position(obj_var, off_var, M=10)) ** 2)
    g_obj, g_off = tape.gradient(loss, [obj_var, off_var])
    assert g_obj is not None and g_off is not None
    assert np.all(np.isfinite(g_obj.numpy())) and np.any(g_off.numpy() != 0)


# ---------------------------------------------------------------------------
# The command line (ptycho-patches stitch) and the benchmark's reassembly modes.
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def grouped_file(tmp_path_factory):
    from ptycho.cli import main

    folder = tmp_path_factory.mktemp("stitch")
    assert main(["simulate", "-o", str(folder / "scan.npz"), "--object-size", "48", "40", "--N", "16",
                 "--positions", "60", "--seed", "3"]) == 0
    assert main(["extract", str(folder / "scan.npz"), "-o", str(folder / "groups.npz"), "--gridsize", "2",
                 "--backend", "numpy"]) == 0
    return folder / "groups.npz"


def test_cli_stitch(grouped_file, tmp_path):
    """stitch puts Y back: the normalised stitch equals place_patches', coverage is place(1)."""
    from ptycho.backends import place_patches
    from ptycho.cli import main
    from ptycho.cli.stitch import flat_patches
    from ptycho.dataset import load_grouped

    out = tmp_path / "object.npz"
    assert main(["stitch", str(grouped_file), "-o", str(out), "--backend", "numpy"]) == 0
    result = np.load(out)
    grouped = load_grouped(grouped_file)
    patches, positions = flat_patches(grouped)
    shape = grouped["objectGuess"].shape
    assert result["object"].shape == shape and result["coverage"].dtype == np.float32
    expected = place_patches(patches, positions, shape, normalize=True)
    assert_close(result["object"], expected, dtype=np.complex64, exact=True)
    covered = result["coverage"] >= 1
    assert covered.mean() > 0.5
    # extraction interpolates: the stitch is the object, blurred by at most a pixel
    assert np.median(np.abs(result["object"][covered] - grouped["objectGuess"][covered])) < 0.05
    assert main(["stitch", str(grouped_file), "-o", str(out), "--backend", "numpy"]) == 2  # exists


def test_stitch_of_a_hand_built_dict_uses_coords_nn():
    """A dict with only Y and coords_nn (patches cut at their own positions) is placed at coords_nn;
    one with no positions at all is refused with an InputError."""
    from ptycho.backends import place_patches
    from ptycho.cli.stitch import flat_patches, stitch
    from ptycho.errors import InputError

    rng = np.random.default_rng(5)
    Y = (rng.standard_normal((3, 6, 6, 2)) + 1j * rng.standard_normal((3, 6, 6, 2))).astype(np.complex64)
    coords_nn = rng.uniform(4, 14, (3, 1, 2, 2))
    patches, positions = flat_patches({"Y": Y, "coords_nn": coords_nn})
    assert np.array_equal(patches[1], Y[0, :, :, 1]) and np.array_equal(positions[3], coords_nn[1, 0, :, 1])
    out = stitch({"Y": Y, "coords_nn": coords_nn}, (20, 20))
    assert np.array_equal(out["object"], place_patches(patches, positions, (20, 20), normalize=True))
    with pytest.raises(InputError, match="coords_nn"):
        flat_patches({"Y": Y})


def test_cli_stitch_png(grouped_file, tmp_path):
    pytest.importorskip("matplotlib")
    from ptycho.cli import main

    png = tmp_path / "object.png"
    assert main(["stitch", str(grouped_file), "-o", str(tmp_path / "o.npz"), "--png", str(png), "--shape", "50", "44",
                 "--backend", "numpy"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert np.load(tmp_path / "o.npz")["object"].shape == (50, 44)


def _bench_spec(tmp_path, **extra):
    spec = {"N": 16, "object_size": 40, "count": 16, "gridsize": 1, "repeats": 1, "seed": 0, "hugepages": False,
            "workdir": str(tmp_path), "reassembly_M": 10, "reassembly_legacy_count": 4, "subset_count": 8,
            "legacy_count": 8}
    spec.update(extra)
    return spec


def _installed(package) -> bool:
    import importlib.util

    return package is None or importlib.util.find_spec(package) is not None


def test_bench_reassembly_modes(tf, tmp_path):
    """The benchmark's reassembly modes run (in-process, tiny) and the windowed ones equal the loop."""
    from ptycho.bench import reassembly
    from ptycho.bench.registry import mode, run_mode

    spec = _bench_spec(tmp_path)
    records = {name: run_mode(name, spec) for name in reassembly.MODE_NAMES if _installed(mode(name).package)}
    assert {"reassembly_numpy", "reassembly_tf"} <= set(records)
    rows = reassembly._rows(records, 10, spec)
    windowed = [r for r in rows if r["mode"].startswith(("reassembly_tf", "reassembly_jax", "reassembly_num"))]
    assert windowed and all(r["max_abs_diff"] == 0 for r in windowed)
    tf_warm = next(r for r in rows if r["mode"] == "reassembly_tf-warm")
    assert tf_warm["ratio_to_tf"] == 1.0 and all(r["ratio_to_floor"] > 0 for r in windowed)
    table = reassembly.format_table(rows, 16)
    assert "legacy full-canvas loop" in table and "NumPy array-API" in table and "cpu/TF" in table


def test_bench_stitch_cli_modes(tmp_path):
    """The stitch command end to end (NumPy; JAX when installed, equal to NumPy's output) and its floor."""
    from ptycho.bench import reassembly
    from ptycho.bench.registry import run_mode

    spec = _bench_spec(tmp_path)
    names = ["stitch_floor", "cli_stitch_numpy"] + (["cli_stitch_jax"] if Backend.JAX.installed() else [])
    records = {name: run_mode(name, spec) for name in names}
    rows = reassembly._rows(records, None, spec, floor="stitch_floor", tf="cli_stitch_tensorflow")
    assert [r["mode"] for r in rows] == names
    assert all(r["seconds"] > 0 and r["ratio_to_floor"] > 0 for r in rows)
    assert all(r["max_abs_diff"] == 0 for r in rows if r["mode"] == "cli_stitch_jax")
    assert "CLI stitch end to end (numpy)" in reassembly.format_table(rows, 16)


# ---------------------------------------------------------------------------
# The ordered path in wavefront steps (issue 22).
# ---------------------------------------------------------------------------


def test_wavefront_levels_keep_patch_order_per_pixel():
    """Patches that meet are in increasing levels in patch order; patches of one level never meet;
    every step of the table holds the rows of one level only."""
    from ptycho.backends.placement import step_table, wavefront_levels

    rng = np.random.default_rng(7)
    corner = rng.integers(0, 40, (300, 2))
    boxes = np.stack([corner[:, 0], corner[:, 0] + 7, corner[:, 1], corner[:, 1] + 7], axis=1)
    levels = wavefront_levels(boxes, (47, 47))
    meet = ((boxes[:, None, 0] < boxes[None, :, 1]) & (boxes[None, :, 0] < boxes[:, None, 1])
            & (boxes[:, None, 2] < boxes[None, :, 3]) & (boxes[None, :, 2] < boxes[:, None, 3]))
    i, j = np.nonzero(np.triu(meet, 1))
    assert np.all(levels[i] < levels[j])
    table, steps = step_table(levels, 4, dummy=1200)
    assert steps <= table.shape[0] and np.all(table[steps:] == 1200)
    seen = np.sort(table[table != 1200])
    assert np.array_equal(seen, np.arange(1200))  # every row once
    for s in range(steps):
        rows = table[s][table[s] != 1200]
        assert len(set(rows % 4)) == 1 and len(set(levels[rows // 4])) == 1
    assert steps < 4 * 300 / 4  # far fewer steps than one per row


@pytest.mark.parametrize("op", ["shift_and_sum", "reassemble_position", "place_normalized"])
def test_ordered_steps_in_scan_order_are_exact(backend, op, monkeypatch):
    """The ordered path over a raster scan (every patch meets the previous one: long chains of levels),
    in several chunks: the NumPy backend's bits."""
    from ptycho.backends import placement

    if backend.value == "numpy":
        pytest.skip("NumPy's scatter is ordered: no steps")
    rng = np.random.default_rng(8)
    yy, xx = np.mgrid[0:6, 0:7] * 3.0
    flat = np.stack([xx.ravel(), yy.ravel()], axis=1) + rng.uniform(-1, 1, (42, 2))
    patches = (rng.standard_normal((42, 12, 12)) + 1j * rng.standard_normal((42, 12, 12))).astype(np.complex64)
    run = {
        "shift_and_sum": lambda b, **k: placement.shift_and_sum(patches, flat, 8, backend=b, **k),
        "reassemble_position": lambda b, **k: placement.reassemble_position(patches, flat, 8, backend=b, **k),
        "place_normalized": lambda b, **k: placement.place_patches(patches, flat + 8.0, (40, 44), backend=b,
                                                                   normalize=True, **k),
    }[op]
    reference = to_numpy(run("numpy"))
    assert_close(run(backend.value, ordered=True), reference, exact=True)
    monkeypatch.setattr(placement, "CHUNK_UPDATES", 4 * 12 * 12 * 10)  # chunks of 10 patches (or 47 windows)
    assert_close(run(backend.value, ordered=True), reference, exact=True)
