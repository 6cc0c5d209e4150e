"""Correctly rounded fused multiply-add from standard operations.

PtychoPINN's default (compiled) path runs its bilinear sum under XLA, which
contracts ``a*b + c`` into fused multiply-adds: ``fma(a, b, c)`` is the exact
``a*b + c`` rounded once.  To reproduce those bits on every backend -- NumPy,
which never contracts, and XLA, which contracts or not depending on how it
fuses a program -- :func:`fma` computes the once-rounded result with array-API
operations only, and with no product whose rounding a compiler could skip.

float32 (``a``, ``b``, ``c`` float32)
    ``q = a*b`` in float64 is exact (24 + 24 <= 53 bits).  ``s = q + c`` in
    float64 and its error ``e`` (TwoSum) give the exact sum ``s + e``.
    Rounding ``s`` to float32 is the correct rounding of ``s + e`` except in
    one case: ``s`` is exactly halfway between two float32 numbers and
    ``e != 0`` (a double-rounding tie; float32 midpoints are float64 numbers,
    so ``s + e`` lies on the same side of every other midpoint as ``s``).
    With ``r = float32(s)`` and ``t = s - r`` (exact), ``s`` is a midpoint
    exactly when ``t != 0`` and ``r + 2t`` is a float32 number (the other
    neighbour); then the sign of ``e`` picks the neighbour.  The one
    overflow midpoint (``FLT_MAX`` + half an ulp) is handled the same way.
    Every product here is exact, so a compiler's contraction changes nothing.
    The round trips ``float64(float32(x))`` are not identities, but a compiler
    allowed excess precision may treat them as such (XLA's GPU pipeline does
    by default): with ``one``, a runtime 1.0 multiplies the float32 value in
    between, which keeps both roundings.

float64 (``a``, ``b``, ``c`` float64)
    Boldo and Melquiond's emulation (IEEE TC 57(4), 2008): ``a*b = uh + ul``
    exactly (Veltkamp split, Dekker product), ``c + uh = th + tl`` exactly
    (TwoSum), ``v = RO(tl + ul)`` rounded to odd, result ``RN(th + v)``.
    Rounding to odd is emulated: TwoSum gives ``s`` and its error; when the
    error is non-zero and ``s`` has an even last bit, ``s`` moves one ulp
    towards the error.  Inexact products are multiplied by ``one`` (a runtime
    1.0 the compiler cannot see through) before they are added, so a
    contraction ``fma(p, one, x)`` rounds exactly like ``p + x``.

NumPy float32 arrays take a cheaper road to the same bits (NumPy neither
contracts nor keeps excess precision): ``float32(float64(a*b + c))`` can only
be wrong where the float64 sum is exactly a float32 midpoint, which its bits
show; those few elements get the full treatment above.

Both are checked against exact rational arithmetic (``fractions.Fraction``) in
``tests/test_rounding.py``, ties, signed zeros, subnormals and values near
overflow included.  Subnormal float32 results assume the runtime does not
flush denormals to zero (NumPy does not).
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

__all__ = ["fma", "two_sum", "two_product"]

#: float32: the largest finite value, and the midpoint between it and 2**128
#: (the overflow threshold of round-to-nearest), both exact in float64.
_FLT_MAX = float.fromhex("0x1.fffffep+127")
_FLT_OVERFLOW = float.fromhex("0x1.ffffffp+127")
#: Veltkamp's splitter for float64: 2**27 + 1.
_SPLITTER = 134217729.0


def two_sum(a: Any, b: Any) -> Tuple[Any, Any]:
    """``(s, e)`` with ``s = fl(a + b)`` and ``s + e == a + b`` exactly (Knuth's TwoSum).

    Six additions, no branch, no ordering of ``|a|`` and ``|b|`` needed.
    """
    s = a + b
    bb = s - a
    e = (a - (s - bb)) + (b - bb)
    return s, e


def _guarded(product: Any, one: Optional[Any]) -> Any:
    """``product * one``: keeps a compiler from contracting ``product`` into a later add."""
    return product if one is None else product * one


#: Above this magnitude ``a * _SPLITTER`` would overflow: such a factor is scaled first.
_SPLIT_LIMIT = 2.0**995
_SPLIT_SCALE = 2.0**28
#: Above this magnitude a product's split halves could overflow: one factor is scaled by 2**-40 first.
_PRODUCT_LIMIT = 2.0**1000
_PRODUCT_SCALE = 2.0**-40


def _split(a: Any, one: Optional[Any]) -> Tuple[Any, Any]:
    """Veltkamp: ``a = hi + lo`` with 26-bit halves, so their products are exact."""
    p = _guarded(a * _SPLITTER, one)
    hi = p - (p - a)
    return hi, a - hi


def two_product(a: Any, b: Any, *, xp: Any, one: Optional[Any] = None) -> Tuple[Any, Any]:
    """``(p, e)`` with ``p = fl(a*b)`` and ``p + e == a*b`` exactly (float64; Dekker).

    Exact when ``a*b`` neither overflows nor underflows.  A product above
    2**1000 is formed from the larger factor scaled by 2**-40 and its error
    scaled back, so the split halves cannot overflow.  A huge factor
    (> 2**995, where Veltkamp's split would overflow) is scaled down by 2**28
    and the other one up by as much -- exact, and the same product.  ``one``
    is the compiler guard (see the module docstring).
    """
    p = _guarded(a * b, one)
    # A product near overflow: its split halves' product a_hi*b_hi can round
    # past DBL_MAX (1 * DBL_MAX: b_hi rounds up to 2**1024).  The larger factor
    # is scaled down by 2**-40 first and the error scaled back up: both exact
    # (powers of two, and at this size nothing comes near underflow).
    big = xp.abs(p) > _PRODUCT_LIMIT
    a_larger = xp.abs(a) >= xp.abs(b)
    a = xp.where(big & a_larger, a * _PRODUCT_SCALE, a)
    b = xp.where(big & ~a_larger, b * _PRODUCT_SCALE, b)
    q = xp.where(big, p * _PRODUCT_SCALE, p)  # fl(a*b) of the scaled factors
    huge_a = xp.abs(a) > _SPLIT_LIMIT
    huge_b = xp.abs(b) > _SPLIT_LIMIT
    a = xp.where(huge_a, a / _SPLIT_SCALE, xp.where(huge_b, a * _SPLIT_SCALE, a))
    b = xp.where(huge_a, b * _SPLIT_SCALE, xp.where(huge_b, b / _SPLIT_SCALE, b))
    a_hi, a_lo = _split(a, one)
    b_hi, b_lo = _split(b, one)
    e = (((a_hi * b_hi) - q) + a_hi * b_lo + a_lo * b_hi) + a_lo * b_lo
    return p, xp.where(big, e / _PRODUCT_SCALE, e)


def _round_to_odd_sum(a: Any, b: Any, *, xp: Any) -> Any:
    """``a + b`` rounded to odd: the truncation, with the last bit set if inexact."""
    s, e = two_sum(a, b)
    magnitude = xp.abs(s)
    ulp = xp.nextafter(magnitude, xp.full_like(magnitude, float("inf"))) - magnitude
    steps = magnitude / ulp  # an integer: the significand of s (ulp is a power of two)
    even = xp.floor(steps * 0.5) * 2 == steps
    inf = xp.full_like(s, float("inf"))
    towards = xp.where(e > 0, inf, -inf)
    return xp.where((e != 0) & even, xp.nextafter(s, towards), s)


def _fma32(a: Any, b: Any, c: Any, *, xp: Any, one: Optional[Any]) -> Any:
    wide = xp.float64
    q = xp.astype(a, wide) * xp.astype(b, wide)  # exact
    s, e = two_sum(q, xp.astype(c, wide))  # s + e == a*b + c exactly
    r = xp.astype(s, xp.float32)
    # The round trips float64 -> float32 -> float64 below are guarded: with
    # excess precision allowed (XLA's default on GPUs) a compiler may fold such
    # a chain into the identity, which would make every t zero.
    t = s - xp.astype(_guarded(r, one), wide)  # exact; |t| <= half an ulp of r
    z = s + t  # r + 2t: the other float32 neighbour when s is a midpoint
    rz = xp.astype(z, xp.float32)
    midpoint = (t != 0) & (xp.astype(_guarded(rz, one), wide) == z) & xp.isfinite(t)
    round_away = midpoint & (e != 0) & ((e > 0) == (t > 0))
    out = xp.where(round_away, rz, r)
    # s exactly at the overflow midpoint: RN(s) is inf, but an error towards zero gives FLT_MAX
    at_limit = (xp.abs(s) == _FLT_OVERFLOW) & (e != 0) & ((e > 0) != (s > 0))
    limit = xp.where(s > 0, xp.full_like(r, _FLT_MAX), xp.full_like(r, -_FLT_MAX))
    return xp.where(at_limit, limit, out)


#: float64 bit patterns: the 29 bits below a float32 significand, and their value at a float32 midpoint.
_BELOW_FLOAT32 = 0x1FFFFFFF
_AT_MIDPOINT = 0x10000000
_FLT_MIN = float.fromhex("0x1p-126")


def _fma32_numpy(a: Any, b: Any, c: Any) -> Any:
    """:func:`_fma32` for NumPy arrays, paying for the tie check only where it can matter.

    ``s = float64(a*b + c)`` rounded once (the product is exact); rounding
    ``s`` to float32 is already correct unless ``s`` is exactly a float32
    midpoint (the argument of the module docstring), which the float64 bits
    show directly: the 29 bits below the float32 significand are ``1000...0``
    (the overflow midpoint has that pattern too).  Below ``FLT_MIN`` the
    float32 significand is shorter, so those values are checked as well.  The
    few such elements -- none in most arrays -- go through :func:`_fma32`.
    NumPy never contracts or keeps excess precision, so no guard is needed.
    """
    import numpy as np

    with np.errstate(over="ignore", invalid="ignore"):
        s = a.astype(np.float64) * b.astype(np.float64)
        s = s + c if s.shape != np.broadcast_shapes(s.shape, c.shape) else np.add(s, c, out=s)
        r = s.astype(np.float32)
        tail = s.view(np.uint64) & np.uint64(_BELOW_FLOAT32)
        suspect = (tail == np.uint64(_AT_MIDPOINT)) | (np.abs(s) < _FLT_MIN)
        if suspect.any():
            where = np.nonzero(suspect)
            ab, bb, cb = np.broadcast_arrays(a, b, c)
            r[where] = _fma32(ab[where], bb[where], cb[where], xp=np, one=None)
    return r


def _fma64(a: Any, b: Any, c: Any, *, xp: Any, one: Optional[Any]) -> Any:
    uh, ul = two_product(a, b, xp=xp, one=one)
    th, tl = two_sum(c, uh)
    v = _round_to_odd_sum(tl, ul, xp=xp)
    # th overflowed (or an input is infinite or NaN): the error terms are NaN; th is the answer.
    # v == 0: th is exact, and th + 0 would turn a -0 result into +0.
    return xp.where(xp.isfinite(th) & (v != 0), th + v, th)


def _is_numpy(*arrays: Any) -> bool:
    import numpy as np

    return all(type(x) is np.ndarray for x in arrays)


def fma(a: Any, b: Any, c: Any, *, xp: Any, one: Optional[Any] = None) -> Any:
    """``a*b + c`` rounded once to the dtype of ``a`` (float32 or float64), elementwise.

    Parameters
    ----------
    a, b, c : arrays of one real dtype, float32 or float64 (broadcastable)
    xp : namespace
        Array namespace of the inputs.
    one : scalar array equal to 1, optional
        For compiling backends: a runtime 1.0 (of the dtype of ``a``) that
        guards inexact products of the float64 algorithm against contraction,
        and the float32 algorithm's float64 -> float32 -> float64 round trips
        against being folded away (XLA's excess precision, on by default on
        GPUs).

    Returns
    -------
    array: the correctly rounded (to nearest, ties to even) ``a*b + c``,
    with IEEE semantics for infinities and NaN.  float64: exact when
    ``2**-969 <= |a*b| <= DBL_MAX`` (Dekker's product is exact there; always
    so for bilinear weights and finite, normal pixels) or ``a*b == 0``; a sum
    beyond the overflow threshold gives the infinity of its sign.
    """
    if a.dtype == xp.float32:
        if one is None and _is_numpy(a, b, c):
            return _fma32_numpy(a, b, c)
        return _fma32(a, b, c, xp=xp, one=one)
    if a.dtype == xp.float64:
        return _fma64(a, b, c, xp=xp, one=one)
    raise TypeError(f"fma: expected float32 or float64 arrays, got {a.dtype}")
