"""The emulated fused multiply-add against exact rational arithmetic.

:func:`ptycho.backends.rounding.fma` must return ``a*b + c`` rounded once
(to nearest, ties to even) in float32 and float64.  The reference rounds the
exact ``fractions.Fraction`` value by comparing it with its float neighbours,
so it shares nothing with the emulation.  Hypothesis draws arbitrary floats
(subnormals, signed zeros, infinities and NaN included) and constructed hard
cases: exact sums within a hair of a rounding tie, and sums near overflow.
NumPy runs every drawn case; JAX and TensorFlow (compiled, where a compiler
may contract multiply-adds) run a fixed batch of hard cases and must give the
same bits.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ptycho.backends.rounding import fma, two_product, two_sum

DTYPES = {"float32": (np.float32, np.uint32), "float64": (np.float64, np.uint64)}


def exact_fma(a, b, c, dtype) -> np.ndarray:
    """``a*b + c`` rounded once to ``dtype``, computed with exact rationals."""
    a, b, c = (dtype(v) for v in (a, b, c))
    if not all(math.isfinite(float(v)) for v in (a, b, c)):
        with np.errstate(all="ignore"):  # IEEE rules for inf and NaN: no rounding involved
            return np.array(np.float64(a) * np.float64(b) + np.float64(c), dtype=np.float64).astype(dtype)
    product = Fraction(float(a)) * Fraction(float(b))
    value = product + Fraction(float(c))
    if value == 0:
        # exact zero: -0 only when both addends are zeros of negative sign
        negative = (math.copysign(1, float(a)) * math.copysign(1, float(b)) < 0 and product == 0
                    and math.copysign(1, float(c)) < 0)
        return np.array(-0.0 if negative else 0.0, dtype=dtype)
    return np.array(_round_fraction(value, dtype), dtype=dtype)


def _round_fraction(value: Fraction, dtype):
    info = np.finfo(dtype)
    big = Fraction(float(info.max))
    half_ulp_max = Fraction(2) ** (info.maxexp - info.nmant - 2)  # half an ulp of the largest float
    if abs(value) > big + half_ulp_max or (abs(value) == big + half_ulp_max):
        # beyond the overflow midpoint (ties to even: 2**maxexp is even) -> infinity
        return dtype(math.inf if value > 0 else -math.inf)
    guess = dtype(float(value)) if abs(value) <= big else (info.max if value > 0 else -info.max)
    with np.errstate(over="ignore"):
        candidates = {guess, np.nextafter(guess, dtype(np.inf)), np.nextafter(guess, dtype(-np.inf))}
    candidates = [v for v in candidates if math.isfinite(float(v))]
    best = min(abs(Fraction(float(v)) - value) for v in candidates)
    nearest = [v for v in candidates if abs(Fraction(float(v)) - value) == best]
    if len(nearest) == 1:
        return nearest[0]
    uint = DTYPES[np.dtype(dtype).name][1]
    return next(v for v in nearest if int(np.array(v, dtype=dtype).view(uint)) % 2 == 0)


def same_bits(got: np.ndarray, expected: np.ndarray) -> bool:
    if np.isnan(expected):
        return bool(np.isnan(got))
    uint = DTYPES[got.dtype.name][1]
    return got.view(uint) == expected.view(uint)


def floats(dtype) -> st.SearchStrategy:
    width = 32 if dtype is np.float32 else 64
    return st.floats(width=width, allow_nan=True, allow_infinity=True, allow_subnormal=True)


@st.composite
def near_ties(draw, dtype) -> tuple:
    """c plus a product within a hair of half an ulp of c: the double-rounding traps."""
    info = np.finfo(dtype)
    c = dtype(draw(st.floats(width=np.finfo(dtype).bits, min_value=float(info.tiny) * 2**30,
                             max_value=float(info.max) / 4, allow_subnormal=False)))
    c = c if draw(st.booleans()) else -c
    half = (np.nextafter(abs(c), dtype(np.inf)) - abs(c)) / dtype(2)  # a power of two
    step = dtype(2.0 ** -(info.nmant)) * dtype(draw(st.integers(1, 64)))
    sign = dtype(draw(st.sampled_from([1.0, -1.0])))
    a = dtype(half * (dtype(1) + step)) * sign
    b = dtype(1) - step if draw(st.booleans()) else dtype(1) + step
    return a, b, c


@st.composite
def near_overflow(draw, dtype) -> tuple:
    info = np.finfo(dtype)
    c = np.nextafter(info.max, dtype(0)) if draw(st.booleans()) else info.max
    a = dtype(2.0 ** (info.maxexp - info.nmant - 2)) * dtype(draw(st.sampled_from([0.5, 1.0, 1.5, 2.0])))
    b = dtype(draw(st.sampled_from([1.0, -1.0, 1.0 + 2.0**-20, 1.0 - 2.0**-20])))
    return (a, b, c) if draw(st.booleans()) else (-a, b, -c)


def triples(dtype) -> st.SearchStrategy:
    any_floats = st.tuples(floats(dtype), floats(dtype), floats(dtype))
    return st.one_of(any_floats, near_ties(dtype), near_overflow(dtype))


_MAX64 = float(np.finfo(np.float64).max)


def _run_numpy(a, b, c, dtype) -> np.ndarray:
    import array_api_compat.numpy as xp

    with np.errstate(all="ignore"):
        return np.asarray(fma(*(np.array([v], dtype=dtype) for v in (a, b, c)), xp=xp))[0]


@pytest.mark.parametrize("dname", list(DTYPES))
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fma_is_correctly_rounded(dname, data):
    dtype = DTYPES[dname][0]
    a, b, c = data.draw(triples(dtype))
    if dtype is np.float64 and all(math.isfinite(v) for v in (a, b, c)) and Fraction(a) * Fraction(b) != 0:
        # documented domain of the float64 emulation: the product a*b neither
        # overflows nor underflows (Dekker's product is exact there)
        product = abs(Fraction(a) * Fraction(b))
        assume(Fraction(2) ** -969 <= product <= Fraction(float(np.finfo(np.float64).max)))
    got = _run_numpy(a, b, c, dtype)
    expected = exact_fma(a, b, c, dtype)
    assert same_bits(got, expected), f"fma({a!r}, {b!r}, {c!r}) = {got!r}, exact {expected!r}"


@pytest.mark.parametrize("dname", list(DTYPES))
@pytest.mark.parametrize("a, b, c", [(0.0, -0.0, -0.0), (-0.0, 0.0, -0.0), (0.0, 0.0, -0.0), (-0.0, -0.0, -0.0),
                                     (1.0, -1.0, 1.0), (0.0, -5.0, 0.0),
                                     (0.0, 1.7976931214684583e308, 0.0), (1e-10, 1.7e308, 1.0)])
def test_signed_zeros_and_huge_factors(dname, a, b, c):
    dtype = DTYPES[dname][0]
    assert same_bits(_run_numpy(a, b, c, dtype), exact_fma(a, b, c, dtype))


def test_numpy_float32_fast_path_matches_the_full_emulation():
    """NumPy's float32 road (tie check only at float64 midpoints) gives the full emulation's bits:
    random triples, crafted double-rounding ties of both signs, subnormal results, the overflow midpoint."""
    import array_api_compat.numpy as xp

    from ptycho.backends import rounding

    rng = np.random.default_rng(11)
    a = rng.uniform(0, 1, 200_000).astype(np.float32)
    b = (rng.standard_normal(200_000) * 10.0 ** rng.integers(-40, 38, 200_000)).astype(np.float32)
    c = (rng.standard_normal(200_000) * 10.0 ** rng.integers(-40, 38, 200_000)).astype(np.float32)
    # ties: a*b = 1 + 2**-24 + 2**-48 (a midpoint plus a little), c = -2**-48 * k: s lands on the midpoint
    k = 2000
    a[:k] = np.float32(1 + 2.0**-12)
    b[:k] = np.float32(1 + 2.0**-12)  # a*b = 1 + 2**-11 + 2**-24: a float32 midpoint exactly
    c[:k] = (rng.choice([-1.0, 1.0], k) * 2.0 ** rng.integers(-80, -50, k)).astype(np.float32)
    a[k:k + 4], b[k:k + 4] = np.float32(2.0**-75), np.float32(2.0**-75) * np.float32([0.5, 1.5, 2.5, 3])
    c[k:k + 4] = 0
    fmax = np.finfo(np.float32).max
    a[k + 4:k + 6], b[k + 4:k + 6], c[k + 4:k + 6] = 1, fmax, np.float32(2.0**103) * np.float32([1, -1])
    with np.errstate(all="ignore"):
        fast = rounding._fma32_numpy(a, b, c)
        full = np.asarray(rounding._fma32(a, b, c, xp=xp, one=None))
        naive = (a.astype(np.float64) * b + c).astype(np.float32)
    assert fast.dtype == np.float32 and np.array_equal(fast.view(np.uint32), full.view(np.uint32))
    assert not np.array_equal(naive.view(np.uint32), full.view(np.uint32))  # the ties do need the correction
    # broadcasting: the addend wider than the product, and the product wider than the addend
    pa, pb, pc = a[:300].reshape(3, 1, 100), b[:100].reshape(1, 1, 100), c[:600].reshape(3, 2, 100)
    for args in ((pa, pb, pc), (pc, pb, pa[:, :, :1])):
        with np.errstate(all="ignore"):
            got, want = rounding._fma32_numpy(*args), np.asarray(rounding._fma32(*args, xp=xp, one=None))
        assert got.shape == want.shape == np.broadcast_shapes(*(x.shape for x in args))
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
    for i in list(range(0, k, 97)) + list(range(k, k + 6)):
        assert same_bits(fast[i], exact_fma(float(a[i]), float(b[i]), float(c[i]), np.float32)), i


@pytest.mark.parametrize("a, b, c", [(1.0, _MAX64, -_MAX64), (_MAX64, 1.0, -_MAX64), (-_MAX64, 1.0, _MAX64),
                                     (0.5, _MAX64, -_MAX64 / 2), (_MAX64 / 4, 2.0, 1e300), (1.0, _MAX64, 0.0),
                                     (2.0**600, 2.0**423 * 1.3, -_MAX64), (1.0 - 2.0**-53, _MAX64, -2.0**970)])
def test_float64_products_near_overflow(a, b, c):
    """Products within an ulp of DBL_MAX: the split halves of 1 * DBL_MAX round up to 2**1024 unless scaled."""
    assert same_bits(_run_numpy(a, b, c, np.float64), exact_fma(a, b, c, np.float64))


@pytest.mark.parametrize("dname", list(DTYPES))
def test_naive_double_rounding_is_caught(dname):
    """A case where rounding float64(a*b + c) again is wrong: the tie fix must act."""
    dtype = DTYPES[dname][0]
    info = np.finfo(dtype)
    c = dtype(1) + dtype(2.0 ** -info.nmant)  # odd last bit
    eps = dtype(2.0 ** -info.nmant)
    a, b = dtype(2.0 ** -(info.nmant + 1)) * (dtype(1) + eps), dtype(1) - eps  # a*b = half ulp * (1 - eps**2)
    expected = exact_fma(a, b, c, dtype)
    assert same_bits(_run_numpy(a, b, c, dtype), expected)
    if dtype is np.float32:
        naive = np.float32(np.float64(a) * np.float64(b) + np.float64(c))
        assert not same_bits(naive, expected), "the case must defeat naive double rounding"


def test_error_free_transformations_are_exact():
    import array_api_compat.numpy as xp

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(200) * 1e3, rng.standard_normal(200) * 1e-3
    a[:5] = [1.34e300, -1.7e305, 3.0e299, 1e308, -2.5e303]  # split after scaling (a * 2**27 would overflow)
    b[:5] = [1e-10, 2.0e-300, -3.3e-290, 1.5e-300, 4.0e-299]
    s, e = two_sum(a, b)
    p, f = two_product(a, b, xp=xp)
    for i in range(200):
        assert Fraction(s[i]) + Fraction(e[i]) == Fraction(a[i]) + Fraction(b[i])
        assert Fraction(p[i]) + Fraction(f[i]) == Fraction(a[i]) * Fraction(b[i])


def _hard_batch(dtype, count: int = 400) -> tuple:
    """A fixed batch of drawn hard cases (ties and overflow), finite and not subnormal."""
    rng = np.random.default_rng(1)
    info = np.finfo(dtype)
    rows = []
    for i in range(count):
        c = dtype(rng.uniform(1, 2) * 2.0 ** rng.integers(-20, 20)) * dtype(rng.choice([1, -1]))
        half = (np.nextafter(abs(c), dtype(np.inf)) - abs(c)) / dtype(2)
        step = dtype(2.0 ** -info.nmant) * dtype(rng.integers(1, 64))
        a = dtype(half * (dtype(1) + step)) * dtype(rng.choice([1, -1]))
        b = dtype(1) - step if i % 2 else dtype(1) + step
        rows.append((a, b, c))
    rows += [(dtype(rng.standard_normal()), dtype(rng.uniform()), dtype(rng.standard_normal())) for _ in range(count)]
    a, b, c = (np.array(col, dtype=dtype) for col in zip(*rows))
    return a, b, c


@pytest.mark.parametrize("dname", list(DTYPES))
def test_compiled_backends_give_the_same_bits(backend, dname):
    """Under XLA (JAX jit, TF jit_compile), where multiply-adds may be contracted."""
    from ptycho.backends import compile_job, get_backend

    dtype = DTYPES[dname][0]
    a, b, c = _hard_batch(dtype)
    expected = np.array([exact_fma(x, y, z, dtype) for x, y, z in zip(a, b, c)])
    mod = get_backend(backend.value)
    with mod.precision(np.complex128):
        run = compile_job(backend.value, _fma_job)
        got = mod.to_numpy(run(mod.asarray(a), mod.asarray(b), mod.asarray(c), mod.fma_guard()))
    uint = DTYPES[dname][1]
    assert np.array_equal(got.view(uint), expected.view(uint))


def _fma_job(a, b, c, guard, *, xp):
    one = None if guard is None else xp.astype(guard, a.dtype)
    return fma(a, b, c, xp=xp, one=one)


def _divide_job(a, b, guard, *, xp):
    from ptycho.backends.placement import divide

    return divide(a, b, xp=xp, one=None if guard is None else xp.astype(guard, a.dtype))


@pytest.mark.parametrize("dname", list(DTYPES))
def test_compiled_division_is_correctly_rounded(backend, dname):
    """placement.divide under the backend's compiler gives IEEE's quotient (XLA's GPU float32
    division alone is up to 2 ulp off: a / a was 0.99999994 for a = 3163.3286)."""
    from ptycho.backends import compile_job, get_backend

    dtype, uint = DTYPES[dname]
    rng = np.random.default_rng(2)
    a = (rng.uniform(1, 2, 4000) * 2.0 ** rng.integers(-30, 30, 4000)).astype(dtype)
    b = (rng.uniform(1, 2, 4000) * 2.0 ** rng.integers(-30, 30, 4000)).astype(dtype)
    a[:3], b[:3] = [3163.328613, 4.6875, 1.0], [3163.328613, 0.9375, 3.0]
    expected = a / b  # NumPy: IEEE division, correctly rounded
    assert expected[0] == 1 and expected[1] == 5
    mod = get_backend(backend.value)
    with mod.precision(np.complex128):
        run = compile_job(backend.value, _divide_job)
        got = mod.to_numpy(run(mod.asarray(a), mod.asarray(b), mod.fma_guard()))
    assert np.array_equal(got.view(uint), expected.view(uint))


# ---------------------------------------------------------------------------
# The Numba kernel's fma: LLVM's llvm.fma (ptycho.backends._numba_kernel.fma),
# exact everywhere -- no domain: products that overflow or underflow included.
# ---------------------------------------------------------------------------

def exact_fma_ieee(a, b, c, dtype) -> np.ndarray:
    """IEEE 754's fusedMultiplyAdd: :func:`exact_fma`, and for finite ``a*b`` with an infinite ``c``, ``c``.

    (:func:`exact_fma` evaluates non-finite cases in float64, where a float64
    ``a*b`` may overflow to infinity first: ``fma(1e308, 10, -inf)`` is
    ``-inf``, not NaN.)
    """
    a, b, c = (dtype(v) for v in (a, b, c))
    if math.isfinite(float(a)) and math.isfinite(float(b)) and math.isinf(float(c)):
        return np.array(c, dtype=dtype)
    return exact_fma(a, b, c, dtype)


def _kernel_fma():
    from ptycho.testing import require_extra

    require_extra("fast", "numba")
    from ptycho.backends._numba_kernel import scalar_fma

    return scalar_fma


def _run_kernel(a, b, c, dtype) -> np.ndarray:
    with np.errstate(all="ignore"):
        return _kernel_fma()(*(np.array([v], dtype=dtype) for v in (a, b, c)))[0]


@st.composite
def extreme_products(draw, dtype) -> tuple:
    """Products that underflow (below the float64 emulation's 2**-969) or overflow, with any addend."""
    info = np.finfo(dtype)
    tiny = draw(st.booleans())
    lo, hi = (info.minexp - info.nmant - 4, info.minexp + 8) if tiny else (info.maxexp - 8, info.maxexp + 4)
    exponent = draw(st.integers(lo, hi))
    a = dtype(draw(st.floats(1, 2, width=info.bits)) * 2.0 ** (exponent // 2)) * dtype(draw(st.sampled_from([1, -1])))
    b = dtype(draw(st.floats(1, 2, width=info.bits)) * 2.0 ** (exponent - exponent // 2))
    addend = draw(st.sampled_from(["any", "zero", "cancel"]))
    if addend == "any":
        return a, b, dtype(draw(floats(dtype)))
    if addend == "zero":
        return a, b, dtype(draw(st.sampled_from([0.0, -0.0])))
    with np.errstate(all="ignore"):  # minus most of the product, rounded (an overflowing one: +-inf)
        return a, b, dtype(-draw(st.sampled_from([1.0, 1.0 + 2.0**-30, 0.5])) * float(a) * float(b))


@pytest.mark.parametrize("dname", list(DTYPES))
@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_kernel_fma_is_correctly_rounded(dname, data):
    """llvm.fma, as the Numba kernel calls it: arbitrary floats, near ties, overflow, underflowing products."""
    dtype = DTYPES[dname][0]
    a, b, c = data.draw(st.one_of(triples(dtype), extreme_products(dtype)))
    got = _run_kernel(a, b, c, dtype)
    expected = exact_fma_ieee(a, b, c, dtype)
    assert same_bits(got, expected), f"fma({a!r}, {b!r}, {c!r}) = {got!r}, exact {expected!r}"


_INF, _NAN, _DBL_MAX = math.inf, math.nan, float(np.finfo(np.float64).max)


@pytest.mark.parametrize("dname", list(DTYPES))
@pytest.mark.parametrize("a, b, c", [
    # signed zeros: -0 only for (-0) + (-0)
    (0.0, -0.0, -0.0), (-0.0, 0.0, -0.0), (0.0, 0.0, -0.0), (-0.0, -0.0, -0.0), (0.0, -5.0, 0.0),
    (1.0, -1.0, 1.0), (-1.0, 1.0, 1.0), (3.0, 1.0 / 3.0, -1.0),
    # subnormals: results, addends, products below the smallest subnormal
    (2.0**-1074, 0.5, 0.0), (2.0**-1074, 1.5, 0.0), (2.0**-1074, 2.5, -0.0), (2.0**-149, 0.5, 0.0),
    (2.0**-149, 1.5, -2.0**-149), (2.0**-126, 0.75, 2.0**-149), (1e-300, 1e-300, 5e-324), (1e-30, -1e-30, 1e-45),
    # infinities and NaN
    (_INF, 0.0, 1.0), (_INF, 1.0, -_INF), (_INF, -2.0, 5.0), (1.0, 2.0, _INF), (0.0, 0.0, -_INF),
    (_NAN, 1.0, 1.0), (1.0, 1.0, _NAN), (0.0, _INF, _NAN),
    # overflow: of the product alone (not of the result), of the sum, at the threshold
    (1e308, 10.0, -_INF), (1e308, 10.0, -1e308), (3e38, 10.0, -3e38),
    (1.0, _DBL_MAX, -_DBL_MAX), (1.0, _DBL_MAX, 0.0), (1.0, _DBL_MAX, -0.0), (2.0, _DBL_MAX, -_DBL_MAX),
    (1.0, 3.4028234663852886e38, 1.0141204801825835e31), (1.0, 3.4028234663852886e38, 1.0141203e31),
])
def test_kernel_fma_special_cases(dname, a, b, c):
    dtype = DTYPES[dname][0]
    with np.errstate(all="ignore"):
        a, b, c = (dtype(v) for v in (a, b, c))
    assert same_bits(_run_kernel(a, b, c, dtype), exact_fma_ieee(a, b, c, dtype)), (a, b, c)


@pytest.mark.parametrize("dname", list(DTYPES))
def test_kernel_fma_catches_double_rounding(dname):
    """The case of :func:`test_naive_double_rounding_is_caught`, and the batch of ties of the XLA test."""
    dtype = DTYPES[dname][0]
    info = np.finfo(dtype)
    eps = dtype(2.0 ** -info.nmant)
    a, b, c = dtype(2.0 ** -(info.nmant + 1)) * (dtype(1) + eps), dtype(1) - eps, dtype(1) + eps
    assert same_bits(_run_kernel(a, b, c, dtype), exact_fma(a, b, c, dtype))
    a, b, c = _hard_batch(dtype)
    got = _kernel_fma()(a, b, c)
    expected = np.array([exact_fma(x, y, z, dtype) for x, y, z in zip(a, b, c)])
    uint = DTYPES[dname][1]
    assert np.array_equal(got.view(uint), expected.view(uint))


@pytest.mark.parametrize("dname", list(DTYPES))
def test_kernel_fma_random_samples(dname):
    """3,000 random samples over the whole exponent range (both signs), one call, against exact rationals."""
    dtype, uint = DTYPES[dname]
    info = np.finfo(dtype)
    rng = np.random.default_rng(21)
    n = 3000

    def draw(lo, hi):
        return (rng.uniform(1, 2, n) * rng.choice([-1, 1], n) * 2.0 ** rng.integers(lo, hi, n)).astype(dtype)

    half = (info.maxexp + 2) // 2
    a, b = draw(-half - 12, half + 1), draw(-half - 12, half + 1)
    with np.errstate(all="ignore"):
        near = (a.astype(np.float64) * b.astype(np.float64)).astype(dtype)  # an addend that cancels most of it
    c = np.where(rng.uniform(size=n) < 0.3, -near * dtype(1 + 2.0**-10), draw(info.minexp - info.nmant, info.maxexp))
    c = np.where(np.isfinite(c), c, dtype(1)).astype(dtype)
    with np.errstate(all="ignore"):
        got = _kernel_fma()(a, b, c)
    expected = np.array([exact_fma_ieee(x, y, z, dtype) for x, y, z in zip(a, b, c)])
    same = got.view(uint) == expected.view(uint)
    assert same.all(), [(a[i], b[i], c[i], got[i], expected[i]) for i in np.nonzero(~same)[0][:5]]


_NO_FMA_SCRIPT = """
import re, sys, numpy as np
sys.path.insert(0, {root!r})
from ptycho.backends import _numba_kernel
from tests.test_rounding import DTYPES, exact_fma_ieee, _hard_batch
bad = 0
for name, (dtype, uint) in DTYPES.items():
    rng = np.random.default_rng(3)
    a, b, c = _hard_batch(dtype, 300)
    a = np.concatenate([a, (rng.standard_normal(600) * 2.0 ** rng.integers(-60, 60, 600)).astype(dtype)])
    b = np.concatenate([b, (rng.standard_normal(600) * 2.0 ** rng.integers(-60, 60, 600)).astype(dtype)])
    c = np.concatenate([c, (rng.standard_normal(600) * 2.0 ** rng.integers(-120, 120, 600)).astype(dtype)])
    got = _numba_kernel.scalar_fma(a, b, c)
    want = np.array([exact_fma_ieee(x, y, z, dtype) for x, y, z in zip(a, b, c)])
    bad += int((got.view(uint) != want.view(uint)).sum())
asm = "".join(_numba_kernel._apply_fma.inspect_asm().values())
print(bad, "vfmadd" in asm, sorted(set(re.findall(r"\\$(fmaf?)\\b", asm))))
"""


def test_kernel_fma_without_the_instruction(tmp_path):
    """Compiled for a CPU without FMA (x86-64 baseline), llvm.fma becomes a call to the C library's
    ``fma``/``fmaf``: no instruction, still exact -- the kernel needs no emulation there either."""
    import platform
    import subprocess
    import sys
    from pathlib import Path

    _kernel_fma()
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("an FMA-less target to compile for is x86-64's baseline")
    root = str(Path(__file__).resolve().parents[1])
    env = dict(__import__("os").environ, NUMBA_CPU_NAME="x86-64", NUMBA_CPU_FEATURES="",
               NUMBA_CACHE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", _NO_FMA_SCRIPT.format(root=root)], capture_output=True, text=True,
                         env=env, timeout=300, cwd=root)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split()[0:2] == ["0", "False"], out.stdout
    assert "fma" in out.stdout and "fmaf" in out.stdout, out.stdout


# -- the orders a compiler could make of the bilinear sum (ptycho.backends.native) ------------


def _exact_sum_in(name: str, w, i, dtype) -> float:
    """``name`` of :func:`ptycho.backends.native.orders` evaluated with exact rationals, each
    operation rounded once (``_round_fraction``): the reference each order must equal."""
    rnd = lambda v: _round_fraction(v, dtype)  # noqa: E731
    m = [Fraction(float(rnd(Fraction(float(w[k])) * Fraction(float(i[k]))))) for k in range(4)]
    f = lambda k, acc: Fraction(float(rnd(Fraction(float(w[k])) * Fraction(float(i[k])) + acc)))  # noqa: E731
    a = lambda x, y: Fraction(float(rnd(x + y)))  # noqa: E731
    table = {
        "fma(d, fma(c, fma(a, b*)))": lambda: f(3, f(2, f(0, m[1]))),
        "((a*+b*)+c*)+d*": lambda: a(a(a(m[0], m[1]), m[2]), m[3]),
        "fma(d, fma(c, fma(b, a*)))": lambda: f(3, f(2, f(1, m[0]))),
        "[a*+b*]+[fma(c, d*)]": lambda: a(a(m[0], m[1]), f(2, m[3])),
        "fma(a, fma(b, fma(c, d*)))": lambda: f(0, f(1, f(2, m[3]))),
    }
    return float(table[name]())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["fma(d, fma(c, fma(a, b*)))", "((a*+b*)+c*)+d*", "fma(d, fma(c, fma(b, a*)))",
                                  "[a*+b*]+[fma(c, d*)]", "fma(a, fma(b, fma(c, d*)))"])
def test_native_orders_are_exactly_rounded(name, dtype):
    """Each order of ``native.orders`` rounds every operation once, as its formula says."""
    from ptycho.backends import native

    rng = np.random.default_rng(11)
    wx, wy = rng.uniform(0, 1, (2, 300)).astype(dtype)
    w = [(1 - wx) * (1 - wy), wx * (1 - wy), (1 - wx) * wy, wx * wy]
    i = [rng.uniform(-1, 1, 300).astype(dtype) for _ in range(4)]
    got = native.orders(tuple(w), tuple(i), xp=np)[name]
    want = [_exact_sum_in(name, [x[j] for x in w], [x[j] for x in i], dtype) for j in range(300)]
    assert np.array_equal(got, np.array(want, dtype=dtype))


def test_native_orders_name_the_two_evaluation_orders():
    """The chain is the compiled order and the left-to-right sum the plain order of the window."""
    import array_api_compat.numpy as xp

    from ptycho.backends import native
    from ptycho.backends.window import weighted_sum

    rng = np.random.default_rng(12)
    wx, wy = rng.uniform(0, 1, (2, 5000)).astype(np.float32)
    w = ((1 - wx) * (1 - wy), wx * (1 - wy), (1 - wx) * wy, wx * wy)
    i = tuple(rng.uniform(-1, 1, 5000).astype(np.float32) for _ in range(4))
    orders = native.orders(w, i, xp=xp)
    assert len(orders) == len(native.ALTERNATIVES) + 1 == 22
    assert np.array_equal(orders[native.CHAIN], weighted_sum(w, i, evaluation="compiled", xp=xp))
    assert np.array_equal(orders["((a*+b*)+c*)+d*"], weighted_sum(w, i, evaluation="plain", xp=xp))
    # every alternative is a different function of the same terms (each differs somewhere here)
    assert all(np.any(orders[k] != orders[native.CHAIN]) for k in native.ALTERNATIVES)
