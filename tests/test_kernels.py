"""The NumPy backend's bounded-memory paths, bit for bit (issue 14).

- the chunked array-API path (``PTYCHO_NUMPY_KERNEL=array``): positions cut
  into chunks written into one preallocated output, equal to one unchunked
  call of the window algorithm;
- the Numba kernel (``ptycho[fast]``): equal to the array-API path, both
  evaluation orders, complex64 and complex128, gridsize 1-3, positions inside,
  on the border, outside, far away and on float32 rounding edges; and to
  PtychoPINN's fixture.

The kernel's tests skip (naming the ``fast`` extra) without numba, unless
``PTYCHO_TEST_EXTRAS`` demands ``fast``.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ptycho.backends import _numpy, extract_patches, extract_patches_grouped, translate
from ptycho.backends.window import translate_window, window_patches

ORDERS = ("compiled", "plain")
FIXTURE = Path(__file__).parent / "data" / "ptychopinn_legacy_v1.npz"


def _require_numba():
    """Skip without numba (naming the extra), fail when the ``fast`` extra is demanded."""
    import ptycho.testing as testing

    if "fast" in getattr(testing, "TEST_EXTRAS", {}):
        return testing.require_extra("fast", "numba")
    try:
        import numba
    except ImportError:
        demanded = os.environ.get("PTYCHO_TEST_EXTRAS", "").replace(" ", "").lower().split(",")
        if "fast" in demanded or "all" in demanded:
            pytest.fail("extra 'fast' is demanded by PTYCHO_TEST_EXTRAS but numba cannot be imported")
        pytest.skip("needs the 'fast' extra: numba is not installed (pip install 'ptycho[fast]')")
    return numba


@pytest.fixture
def numba_kernel():
    _require_numba()
    from ptycho.backends import _numba_kernel

    return _numba_kernel


def bits(x) -> np.ndarray:
    x = np.ascontiguousarray(np.asarray(x))
    return x.view(np.uint64 if x.dtype == np.complex128 else np.uint32)


def assert_bits(a, b) -> None:
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, a.dtype, b.shape, b.dtype)
    same = bits(a) == bits(b)
    assert same.all(), f"{(~same).sum()} of {same.size} values differ in their bits"


# ---------------------------------------------------------------------------
# Inputs: random objects, positions in every regime.
# ---------------------------------------------------------------------------

def _object(rng, shape, dtype) -> np.ndarray:
    obj = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    return obj.astype(dtype)


def _positions(rng, regime: str, count: int, shape, N: int, real) -> np.ndarray:
    h, w = shape
    if regime == "inside":
        pos = rng.uniform([N / 2, N / 2], [w - N / 2, h - N / 2], (count, 2))
    elif regime == "border":
        pos = rng.uniform([-N, -N], [w + N, h + N], (count, 2))
    elif regime == "outside":
        pos = rng.choice([-1, 1], (count, 2)) * rng.uniform(w + N, 4 * (w + N), (count, 2))
    elif regime == "far":
        pos = rng.choice([-1.0, 1.0], (count, 2)) * np.array([1e6, 3e8, 1e30, 2.0**40])[rng.integers(0, 4, (count, 2))]
    elif regime == "float32-edge":
        # x + 0.99999994 rounds up for some x and not others; halves, integers, one ulp off
        base = rng.integers(-3, max(h, w) + 3, (count, 2)).astype(real)
        frac = np.array([0.0, 0.5, 1 - 2.0**-24, 2.0**-24, 1 - 2.0**-23, 0.25 + 2.0**-20], dtype=real)
        pos = base + frac[rng.integers(0, len(frac), (count, 2))]
        pos = np.nextafter(pos.astype(real), (pos + rng.choice([-1, 1], (count, 2))).astype(real))
    else:
        raise ValueError(regime)
    return np.asarray(pos).astype(real)


REGIMES = ("inside", "border", "outside", "far", "float32-edge")
DTYPES = (np.complex64, np.complex128)


def _case(seed: int, dtype, regime: str, gridsize: int, N: int = 9, shape=(23, 31), groups: int = 7):
    rng = np.random.default_rng(seed)
    real = np.float64 if dtype == np.complex128 else np.float32
    c = gridsize**2
    obj = _object(rng, shape, dtype)
    pos = _positions(rng, regime, groups * c, shape, N, real)
    return obj, pos, c


# ---------------------------------------------------------------------------
# The chunked array-API path (no numba needed).
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("evaluation", ORDERS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["c64", "c128"])
@pytest.mark.parametrize("gridsize", [1, 2, 3])
def test_chunked_array_path_equals_one_call(monkeypatch, evaluation, dtype, gridsize):
    """Chunks of a few groups into one output == the window algorithm on the whole batch."""
    obj, pos, c = _case(1, dtype, "border", gridsize, groups=11)
    monkeypatch.setattr(_numpy, "CHUNK_PIXELS", 1)  # one group per chunk: many chunks
    with _numpy.kernel("array"):
        got = extract_patches_grouped(obj, pos, 9, channels=c, backend="numpy", evaluation=evaluation)
    whole = window_patches(obj, pos, 9, xp=_numpy.namespace, channels=c, evaluation=evaluation)
    assert isinstance(got, np.ndarray)
    assert_bits(got, whole)


@pytest.mark.parametrize("evaluation", ORDERS)
@pytest.mark.parametrize("sources", ["shared", "per-translation"])
def test_chunked_translate_equals_one_call(monkeypatch, evaluation, sources):
    rng = np.random.default_rng(2)
    P = 12
    images = _object(rng, (1 if sources == "shared" else P, 13, 17), np.complex64)
    t = rng.uniform(-20, 20, (P, 2)).astype(np.float32)
    origin = rng.integers(-5, 5, (P, 2))
    monkeypatch.setattr(_numpy, "CHUNK_PIXELS", 1)
    with _numpy.kernel("array"):
        got = translate(images, t, output_size=(6, 7), output_origin=origin, channels=2, evaluation=evaluation,
                        backend="numpy")
    whole = translate_window(images, t, output_size=(6, 7), output_origin=origin, channels=2, xp=_numpy.namespace,
                             evaluation=evaluation)
    assert_bits(got, whole)


def test_chunked_array_path_memory_is_bounded():
    """Peak memory of the array path: the output plus one chunk's temporaries, whatever the count."""
    import tracemalloc

    rng = np.random.default_rng(7)
    obj = _object(rng, (96, 96), np.complex64)
    pos = _positions(rng, "border", 1200, (96, 96), 32, np.float32)
    with _numpy.kernel("array"):
        tracemalloc.start()
        out = extract_patches(obj, pos, 32)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    # unchunked, the compiled order's ~40 float64 temporaries would take ~400 MB here
    assert peak - out.nbytes <= 48 * 2**20, (peak, out.nbytes)


def test_kernel_switch_is_checked():
    from ptycho.errors import InputError

    with pytest.raises(InputError, match="kernel"):
        _numpy.kernel("fortran")
    with _numpy.kernel("array"):
        assert _numpy.selected_kernel() == "array"


def test_environment_forces_array_path(monkeypatch):
    monkeypatch.setenv(_numpy.KERNEL_ENV, "array")
    assert _numpy.selected_kernel() == "array"
    monkeypatch.setenv(_numpy.KERNEL_ENV, "bogus")
    with pytest.raises(ValueError, match=_numpy.KERNEL_ENV):
        _numpy.selected_kernel()


def test_without_numba_auto_is_the_array_path(monkeypatch):
    monkeypatch.setattr(_numpy, "numba_available", lambda: False)
    monkeypatch.delenv(_numpy.KERNEL_ENV, raising=False)
    assert _numpy.selected_kernel() == "array"
    with _numpy.kernel("numba"), pytest.raises(ImportError, match=r"ptycho\[fast\]"):
        _numpy.selected_kernel()


def test_import_ptycho_imports_no_numba():
    code = ("import sys, ptycho, ptycho.backends, numpy as np; from ptycho.backends import extract_patches; "
            "extract_patches(np.ones((8, 8), np.complex64), np.zeros((2, 2), np.float32), 4); "
            "print('numba' in sys.modules)")
    env = dict(os.environ, PTYCHO_NUMPY_KERNEL="array")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------
# The Numba kernel, bit for bit against the array-API path.
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("evaluation", ORDERS)
@pytest.mark.parametrize("regime", REGIMES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["c64", "c128"])
@pytest.mark.parametrize("gridsize", [1, 2, 3])
def test_kernel_equals_array_path(numba_kernel, evaluation, regime, dtype, gridsize):
    obj, pos, c = _case(hash((regime, gridsize)) % 2**32, dtype, regime, gridsize)
    with _numpy.kernel("array"):
        want = extract_patches_grouped(obj, pos, 9, channels=c, backend="numpy", evaluation=evaluation)
    with _numpy.kernel("numba"):
        got = extract_patches_grouped(obj, pos, 9, channels=c, backend="numpy", evaluation=evaluation)
    assert_bits(got, want)


@pytest.mark.parametrize("evaluation", ORDERS)
@pytest.mark.parametrize("N", [1, 2, 8, 64])
def test_kernel_patch_sizes_and_padding(numba_kernel, evaluation, N):
    rng = np.random.default_rng(N)
    obj = _object(rng, (70, 50), np.complex64)
    pos = _positions(rng, "border", 40, (70, 50), N, np.float32)
    with _numpy.kernel("array"):
        want = [extract_patches(obj, pos, N, evaluation=evaluation),
                extract_patches(obj, pos, N, padding=3, evaluation=evaluation)]
    with _numpy.kernel("numba"):
        got = [extract_patches(obj, pos, N, evaluation=evaluation),
               extract_patches(obj, pos, N, padding=3, evaluation=evaluation)]
    for g, w in zip(got, want):
        assert_bits(g, w)


@pytest.mark.parametrize("evaluation", ORDERS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["c64", "c128"])
@pytest.mark.parametrize("sources", ["shared", "per-translation"])
def test_kernel_translate_equals_array_path(numba_kernel, evaluation, dtype, sources):
    """translate: windows with output origins, one source or one per translation, full frames."""
    rng = np.random.default_rng(3)
    P = 8
    real = np.float64 if dtype == np.complex128 else np.float32
    images = _object(rng, (1 if sources == "shared" else P, 15, 12), dtype)
    t = np.concatenate([rng.uniform(-20, 20, (P - 2, 2)), [[0.5, -1e7], [1 - 2.0**-24, 3.0]]]).astype(real)
    origin = rng.integers(-6, 6, (P, 2))
    for kwargs in (dict(output_size=(5, 9), output_origin=origin), dict(), dict(source_origin=(2, -3))):
        with _numpy.kernel("array"):
            want = translate(images, t, channels=2, evaluation=evaluation, backend="numpy", **kwargs)
        with _numpy.kernel("numba"):
            got = translate(images, t, channels=2, evaluation=evaluation, backend="numpy", **kwargs)
        assert_bits(got, want)


def test_kernel_special_values(numba_kernel):
    """Signed zeros, infinities, NaN and subnormal pixels: the array path's bits, NaNs included."""
    rng = np.random.default_rng(4)
    obj = _object(rng, (12, 12), np.complex64)
    obj.real[2, 3], obj.imag[5, 5] = np.inf, -np.inf
    obj.real[7, 1] = np.nan
    obj.real[8, 8], obj.imag[8, 9] = np.float32(1e-41), np.float32(-3e-39)
    obj.real[9, 2], obj.imag[1, 1] = -0.0, np.float32(3.0e38)
    obj.real[1, 2] = np.float32(3.3e38)
    pos = _positions(rng, "border", 30, (12, 12), 6, np.float32)
    for evaluation in ORDERS:
        with np.errstate(all="ignore"):
            with _numpy.kernel("array"):
                want = extract_patches(obj, pos, 6, evaluation=evaluation)
            with _numpy.kernel("numba"):
                got = extract_patches(obj, pos, 6, evaluation=evaluation)
        assert_bits(got, want)


def test_scalar_fma_is_exact_and_equals_rounding_fma(numba_kernel):
    """The kernel's fma (llvm.fma) == exact rationals on random, tie-constructed and extreme operands,
    and == the emulation (rounding.fma) wherever the emulation is exact."""
    from ptycho.backends.rounding import fma
    from tests.test_rounding import exact_fma_ieee

    rng = np.random.default_rng(5)
    for real, kind in ((np.float32, "fma32"), (np.float64, "fma64")):
        n = 20000
        a = rng.uniform(0, 1, n).astype(real)
        b = (rng.standard_normal(n) * 10.0 ** rng.integers(-30, 30, n)).astype(real)
        c = (rng.standard_normal(n) * 10.0 ** rng.integers(-30, 30, n)).astype(real)
        # ties: c plus a product that is half an ulp of c (the double-rounding trap)
        k = n // 4
        c[:k] = (rng.integers(1, 2**20, k) * 2.0).astype(real)
        a[:k] = real(0.5)
        b[:k] = np.spacing(c[:k]) * real(1 + 2.0**-20)
        a[k:k + 8] = real(1.0)
        b[k:k + 8] = np.finfo(real).max
        c[k:k + 8] = np.finfo(real).max * np.array([1, -1, 0.5, 1e-8, -1e-8, 0, -0.0, 1], dtype=real)
        # huge operands with a zero or small partner (the split of a huge value must not overflow)
        a[k + 8:k + 16] = np.array([0, 1e-300, 3e-10, -0.0, 1, 2.0**-30, 0.5, 1e-5], dtype=real) if real == np.float64 \
            else np.array([0, 1e-30, 3e-10, -0.0, 1, 2.0**-30, 0.5, 1e-5], dtype=real)
        b[k + 8:k + 16] = np.finfo(real).max * np.array([0.75, 1, -0.5, 1, 1e-8, 1, -1, 0.9], dtype=real)
        c[k + 8:k + 16] = np.array([0, 1, -1, 0, 1e30, -1e20, 0, 5], dtype=real)
        with np.errstate(all="ignore"):
            out = numba_kernel.scalar_fma(a, b, c)
            emulated = np.asarray(fma(a, b, c, xp=_numpy.namespace))
        exact = np.array([exact_fma_ieee(x, y, z, real) for x, y, z in zip(a, b, c)])
        uint = np.uint32 if real == np.float32 else np.uint64
        np.testing.assert_array_equal(out.view(uint), exact.view(uint), err_msg=kind)
        # The float64 emulation is exact for |a*b| <= DBL_MAX -- short of a product within 2**-26 of
        # DBL_MAX, where Veltkamp's halves of the scaled factor round up and their product
        # overflows: rounding.fma(1, DBL_MAX, -DBL_MAX) is inf.  llvm.fma has no such edge.
        with np.errstate(all="ignore"):
            inside = np.abs(a.astype(np.float64) * b) <= np.finfo(np.float64).max * (1 - 2.0**-26)
        np.testing.assert_array_equal(out.view(uint)[inside], emulated.view(uint)[inside], err_msg=kind)


def _host_has_fma() -> bool:
    import platform

    import llvmlite.binding as llvm

    machine = platform.machine().lower()
    if machine in ("aarch64", "arm64"):
        return True  # fmadd / fmla: base ISA
    return machine in ("x86_64", "amd64") and "+fma" in llvm.get_host_cpu_features().flatten().split(",")


@pytest.mark.parametrize("dtype", DTYPES, ids=["c64", "c128"])
def test_kernel_compiled_order_is_the_hardware_fma(numba_kernel, dtype):
    """On a CPU with FMA the compiled order is fused multiply-add instructions (no libm call, no
    emulation): the machine code of the compiled kernel, recompiled here (cached code cannot be
    inspected), holds vfmadd / fmadd."""
    import platform

    if not _host_has_fma():
        pytest.skip("the host CPU has no FMA instruction (llvm.fma is a call to the C library's fma there)")
    kernel = numba_kernel._bilinear.py_func
    fresh = numba_kernel.numba.njit(nogil=True, error_model="numpy")(kernel)  # uncached: inspectable
    real = np.float64 if dtype == np.complex128 else np.float32
    args = (np.zeros(4, real), np.zeros(4, real), np.zeros(1, np.int64), np.zeros((1, 1, 1), np.int64),
            np.ones((1, 1, 1), real), np.zeros((1, 1, 1), real), np.zeros((1, 1, 1), np.int64),
            np.ones((1, 1, 1), real), np.zeros((1, 1, 1), real), np.int64(2), True, 0, 1,
            np.zeros((1, 1, 1, 1, 2), real))
    fresh(*args)
    asm = "".join(fresh.inspect_asm().values())
    if platform.machine().lower() in ("x86_64", "amd64"):
        assert "vfmadd" in asm and "$fma" not in asm
    else:
        assert "fmadd" in asm or "fmla" in asm


@functools.lru_cache(maxsize=None)
def _fixture() -> dict:
    with np.load(FIXTURE) as data:
        return {key: data[key] for key in data.files}


@pytest.mark.parametrize("kernel", ["array", "numba"])
@pytest.mark.parametrize("suffix, evaluation", [("jit", "compiled"), ("eager", "plain")])
def test_ptychopinn_fixture(kernel, suffix, evaluation):
    """PtychoPINN's own patches (tests/data/ptychopinn_legacy_v1.npz), bit for bit, through each NumPy path."""
    if kernel == "numba":
        _require_numba()
    d = _fixture()
    with _numpy.kernel(kernel):
        single = extract_patches(d["single_object"], d["single_positions"], int(d["single_N"]),
                                 evaluation=evaluation)
        total = np.add(d["grouped_global"], d["grouped_local"], dtype=np.float64).astype(np.float32)
        flat = total[:, 0].transpose(0, 2, 1).reshape(-1, 2)
        c = int(d["grouped_gridsize"]) ** 2
        grouped = extract_patches_grouped(d["grouped_object"], flat, int(d["grouped_N"]), channels=c,
                                          evaluation=evaluation)
        wide = extract_patches(d["wide_object"], d["wide_positions"], int(d["wide_N"]))
    assert_bits(single, d[f"single_{suffix}"])
    assert_bits(grouped, d[f"grouped_{suffix}"])
    assert_bits(wide.astype(np.complex64), d["wide_jit"])


def test_kernel_is_the_default_with_numba(numba_kernel, monkeypatch):
    monkeypatch.delenv(_numpy.KERNEL_ENV, raising=False)
    assert _numpy.selected_kernel() == "numba"


def test_kernel_output_memory_is_bounded(numba_kernel):
    """The kernel writes into one output: peak is the output plus per-row and per-column tables
    (2 (h + w) / (h w) of it: 12.5% at N = 32, 6% at N = 64)."""
    import tracemalloc

    rng = np.random.default_rng(6)
    obj = _object(rng, (128, 128), np.complex64)
    pos = _positions(rng, "inside", 400, (128, 128), 32, np.float32)
    with _numpy.kernel("numba"):
        extract_patches(obj, pos, 32)  # compiled, cached
        tracemalloc.start()
        out = extract_patches(obj, pos, 32)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak <= 1.2 * out.nbytes, (peak, out.nbytes)


# ---------------------------------------------------------------------------
# JAX: lax.map over fixed chunks inside the program, bit for bit.
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("evaluation", ORDERS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["c64", "c128"])
@pytest.mark.parametrize("gridsize", [1, 2, 3])
@pytest.mark.parametrize("regime", ["border", "float32-edge", "far"])
def test_jax_chunked_equals_numpy(monkeypatch, evaluation, dtype, gridsize, regime):
    from ptycho.testing import require_backend

    require_backend("jax")
    from ptycho.backends import _jax, compile_job
    from ptycho.backends._dispatch import _compile_cached

    obj, pos, c = _case(9, dtype, regime, gridsize, groups=12)
    monkeypatch.setattr(_jax, "CHUNK_PIXELS", 4 * 9 * 9 * c)  # chunks of 4 groups: 3 chunks
    _compile_cached.cache_clear()
    try:
        got = extract_patches_grouped(obj, pos, 9, channels=c, backend="jax", evaluation=evaluation)
    finally:
        _compile_cached.cache_clear()
    with _numpy.kernel("array"):
        want = extract_patches_grouped(obj, pos, 9, channels=c, backend="numpy", evaluation=evaluation)
    assert_bits(np.asarray(got), want)


@pytest.mark.parametrize("sources", ["shared", "per-translation"])
def test_jax_chunked_translate_equals_numpy(monkeypatch, sources):
    from ptycho.testing import require_backend

    require_backend("jax")
    from ptycho.backends import _jax
    from ptycho.backends._dispatch import _compile_cached

    rng = np.random.default_rng(10)
    P = 12
    images = _object(rng, (1 if sources == "shared" else P, 13, 17), np.complex64)
    t = rng.uniform(-20, 20, (P, 2)).astype(np.float32)
    origin = rng.integers(-5, 5, (P, 2))
    monkeypatch.setattr(_jax, "CHUNK_PIXELS", 2 * 6 * 7 * 2)  # 2 groups of 2 a chunk
    _compile_cached.cache_clear()
    try:
        for evaluation in ORDERS:
            got = translate(images, t, output_size=(6, 7), output_origin=origin, channels=2, evaluation=evaluation,
                            backend="jax")
            want = translate(images, t, output_size=(6, 7), output_origin=origin, channels=2,
                             evaluation=evaluation, backend="numpy")
            assert_bits(np.asarray(got), want)
    finally:
        _compile_cached.cache_clear()


def test_jax_chunk_groups():
    from ptycho.testing import require_backend

    require_backend("jax")
    from ptycho.backends._jax import chunk_groups

    assert chunk_groups(5000, 64) == 50
    assert chunk_groups(30, 64) == 30
    assert chunk_groups(4999, 64) == 4999  # prime: no chunking rather than 4999 chunks of one
    assert chunk_groups(128, 64) == 64


def test_windowed_jobs_are_the_chunked_ones():
    """The backends recognise the jobs they chunk (a renamed or moved job would silently run unchunked)."""
    from ptycho.backends import compile_job, extract_job, translate_job
    from ptycho.backends._dispatch import job_name

    assert job_name(extract_job) in _numpy._CHUNKED_JOBS
    assert job_name(translate_job) in _numpy._CHUNKED_JOBS
    assert isinstance(compile_job("numpy", extract_job, patch_size=4), _numpy._Chunked)
    try:
        from ptycho.backends import _jax
    except ImportError:
        return
    assert job_name(extract_job) in _jax._CHUNKED_JOBS
    assert job_name(translate_job) in _jax._CHUNKED_JOBS


_FORK_SCRIPT = """
import multiprocessing, numpy as np
from ptycho.backends import _numpy, extract_patches

def run(obj, pos):
    with _numpy.kernel("numba"):
        return extract_patches(obj, pos, 8)

if __name__ == "__main__":
    rng = np.random.default_rng(11)
    obj = (rng.standard_normal((40, 40)) + 1j * rng.standard_normal((40, 40))).astype(np.complex64)
    pos = rng.uniform(-8, 48, (64, 2)).astype(np.float32)
    want = run(obj, pos)  # the parent's thread pool exists now
    with multiprocessing.get_context("fork").Pool(1) as pool:
        got = pool.apply_async(run, (obj, pos)).get(timeout=120)
    print(bool(np.array_equal(got.view(np.uint32), want.view(np.uint32))))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_kernel_runs_in_a_forked_child(numba_kernel, tmp_path):
    """The kernel's thread pool is remade in a forked child (the parent's threads do not exist there).

    In a fresh process (no JAX or TensorFlow threads to fork).
    """
    script = tmp_path / "fork_kernel.py"
    script.write_text(_FORK_SCRIPT)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip().splitlines()[-1] == "True", out.stderr[-2000:]
