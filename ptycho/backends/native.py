"""XLA's own contraction of the compiled order -- used only once a check of the program has passed.

The compiled evaluation order (PtychoPINN's default bits) is
``fma(wd, Id, fma(wc, Ic, fma(wa, Ia, wb*Ib)))``.  PtychoPINN gets it by writing
``wa*Ia + wb*Ib + wc*Ic + wd*Id`` and letting XLA contract the multiply-adds.
That is a compiler's choice, made per program (it depends on how XLA fused
and vectorised it), not a guarantee.  So the engine runs PtychoPINN's
expression (``window.native_sum``) in a compiled program only after checking
that very program:

* **The same executable.**  Before a program's first result is used, the
  program is run on a *probe*: crafted inputs with exactly the production
  call's shapes, dtypes, device and placement, inside the same call (same
  JAX x64 mode, same TF device scope), so ``jax.jit`` / ``tf.function`` run
  the executable they compiled for the production inputs -- not a smaller
  stand-in that XLA might vectorise differently.
* **Every element compared.**  The probe repeats a period of ``Kg`` groups
  (``Kg`` divides the number of groups); the exact emulation of that period
  (the NumPy backend's algorithm, :mod:`ptycho.backends.rounding`) is
  compared bit for bit with *every* element of the probe's output.
* **A probe that can tell.**  The period's image and positions are random
  (full mantissas, fractional positions, a window straddling the zero-fill
  border in the middle of the period); before it is used, the host checks
  that each of :data:`ALTERNATIVES` -- every other way of contracting and
  associating the four-term sum -- differs from the fma chain on at least
  one element of each residue of the flat index modulo 16 (every vector
  lane; fewer residues in periods under 4096 elements), of the first 16 and the last 16 elements (a loop's prologue and
  remainder) and of the last 16 columns of the rows (per-row remainders).
  A probe that cannot (a one-pixel object, one full-frame translation)
  leaves the program *unverified*, and unverified programs are not trusted.
* **Once per program.**  The verdict is kept per (backend, job, static
  arguments, signature of the arguments); a mismatch switches that program
  to the emulated order for good, with a :class:`NativeOrderWarning`.  Traced
  calls (inside a caller's ``jax.jit`` or ``tf.function``, under
  ``jax.grad``) run the emulated order: a caller's program is not ours to
  check.

``PTYCHO_NATIVE_ORDER=0`` turns the native order off (always emulate).
The design and its argument are in ``docs/DEVELOPER_GUIDE.md``.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
import warnings
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

__all__ = [
    "ALTERNATIVES",
    "ENV",
    "NativeOrderWarning",
    "Verdict",
    "VerifiedJob",
    "enabled",
    "orders",
    "reset",
    "verdicts",
]

#: Set to 0/off/false/no to compute the compiled order by emulation everywhere.
ENV = "PTYCHO_NATIVE_ORDER"
#: The jobs whose arguments a probe can be crafted for (``ptycho.backends``).
JOBS = ("extract_job", "translate_job")
#: Elements of a residue class, a loop head or tail, that each alternative must be seen to differ on.
_LANES = 16
#: Most output elements in one period of a probe (host emulation of 20 orders costs ~1 us each).
_PERIOD_ELEMENTS = 1 << 14
_SEEDS = 8


class NativeOrderWarning(RuntimeWarning):
    """A compiled program's native contraction differed from the exact fma chain: it is emulated instead."""


def enabled() -> bool:
    return os.environ.get(ENV, "").strip().lower() not in ("0", "off", "false", "no")


# ---------------------------------------------------------------------------------------------
# The orders a compiler could produce from ``wa*Ia + wb*Ib + wc*Ic + wd*Id``
# ---------------------------------------------------------------------------------------------

#: The compiled order: XLA's contraction of PtychoPINN's expression, as measured on its code.
CHAIN = "fma(d, fma(c, fma(a, b*)))"


def orders(weights: Any, corners: Any, *, xp: Any, product: Optional[Callable[[Any, Any], Any]] = None,
           ) -> Dict[str, Any]:
    """Every contraction and association of the four-term sum, each rounded exactly.

    Left to right ``((m_a + m_b) + m_c) + m_d`` with each addition contracting
    none or one of its product operands (12 orders, the chain and PtychoPINN's
    eager "plain" order among them), the pairwise tree ``(m_a + m_b) + (m_c + m_d)``
    with each pair contracted or not (9), and the right-to-left chain.  Keys
    are readable formulas; :data:`CHAIN` is the compiled order.  ``product``
    (default ``x * y``) rounds the products ``m``: a compiled caller passes one
    that no compiler can contract (tests build the alternatives inside XLA so).
    """
    from ptycho.backends.rounding import fma

    wa, wb, wc, wd = weights
    ia, ib, ic, id_ = corners
    mul = product or (lambda x, y: x * y)
    ma, mb, mc, md = mul(wa, ia), mul(wb, ib), mul(wc, ic), mul(wd, id_)
    first = {"a*+b*": ma + mb, "fma(a, b*)": fma(wa, ia, mb, xp=xp), "fma(b, a*)": fma(wb, ib, ma, xp=xp)}
    out: Dict[str, Any] = {}
    for n1, s1 in first.items():
        for n2, s2 in ((f"({n1})+c*", s1 + mc), (f"fma(c, {n1})", fma(wc, ic, s1, xp=xp))):
            out[f"({n2})+d*"] = s2 + md
            out[f"fma(d, {n2})"] = fma(wd, id_, s2, xp=xp)
    second = {"c*+d*": mc + md, "fma(c, d*)": fma(wc, ic, md, xp=xp), "fma(d, c*)": fma(wd, id_, mc, xp=xp)}
    for n1, s1 in first.items():
        for n2, s2 in second.items():
            out[f"[{n1}]+[{n2}]"] = s1 + s2
    out["fma(a, fma(b, fma(c, d*)))"] = fma(wa, ia, fma(wb, ib, fma(wc, ic, md, xp=xp), xp=xp), xp=xp)
    out[CHAIN] = out.pop("fma(d, fma(c, fma(a, b*)))")
    return out


#: The names of every order :func:`orders` computes other than the chain.
ALTERNATIVES: Tuple[str, ...] = ()  # filled below, once


def _alternatives() -> Tuple[str, ...]:
    one = np.ones(1, dtype=np.float32)
    return tuple(k for k in orders((one,) * 4, (one,) * 4, xp=np) if k != CHAIN)


ALTERNATIVES = _alternatives()


# ---------------------------------------------------------------------------------------------
# Verdicts
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The check of one compiled program."""

    backend: str
    job: str
    static: tuple
    signature: tuple
    #: True: the native program matched the exact chain on every probe element; it is used.
    native: bool
    #: "verified", "mismatch" or "unverifiable: ..." (a probe that cannot tell the orders apart).
    reason: str
    probe_elements: int = 0
    mismatches: int = 0
    #: on a mismatch, the order (a key of :func:`orders`) the program computed on the probe
    computed: str = ""
    #: seconds spent: crafting the probe and its exact result on the host, running the
    #: program on it (its compilation included: the production call reuses it), comparing
    seconds: Tuple[float, float, float] = (0.0, 0.0, 0.0)


_verdicts: Dict[tuple, Verdict] = {}
_lock = threading.Lock()


def verdicts() -> List[Verdict]:
    """The verdicts of this process so far, in order."""
    with _lock:
        return list(_verdicts.values())


def reset() -> None:
    """Forget every verdict (tests)."""
    with _lock:
        _verdicts.clear()


# ---------------------------------------------------------------------------------------------
# The probe
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Layout:
    """A job's call in translate terms: sources (S, H, W), P translations, windows (h, w), c channels."""

    sources: int
    source_shape: Tuple[int, int]
    count: int
    output_size: Tuple[int, int]
    source_origin: Tuple[int, int]
    channels: int
    has_origin: bool
    complex_dtype: np.dtype
    real_dtype: np.dtype


def _layout(kind: str, static: dict, args: tuple, dtype_of: Callable[[Any], np.dtype]) -> _Layout:
    channels = int(static.get("channels", 1))
    if kind == "extract_job":
        image, positions = args[0], args[1]
        n = int(static["patch_size"])
        pad = int(static["padding"]) if static.get("padding") is not None else n // 2
        sources, shape = 1, tuple(int(v) for v in image.shape)
        count, size, origin, has_origin = int(positions.shape[0]), (n, n), (pad, pad), False
        image_dtype = dtype_of(image)
    else:
        images, translations = args[0], args[1]
        sources, shape = int(images.shape[0]), tuple(int(v) for v in images.shape[1:])
        count = int(translations.shape[0])
        size = tuple(int(v) for v in static["output_size"])
        origin = tuple(int(v) for v in static.get("source_origin", (0, 0)))
        has_origin = len(args) > 3 and args[3] is not None
        image_dtype = dtype_of(images)
    real = np.dtype(np.float64) if image_dtype in (np.float64, np.complex128) else np.dtype(np.float32)
    cplx = np.dtype(np.complex128) if real == np.float64 else np.dtype(np.complex64)
    return _Layout(sources, shape, count, size, origin, channels, has_origin, cplx, real)


def _period_groups(groups: int, group_elements: int, channels: int) -> int:
    """The largest divisor of ``groups`` that is at most 8 and keeps a period within
    :data:`_PERIOD_ELEMENTS` -- but two translations at least where there are (a window
    as large as its source overhangs it at one end: one translation cannot make both
    the first and the last elements of the output interior)."""
    limit = max(1, min(8, _PERIOD_ELEMENTS // max(1, group_elements)))
    if channels == 1:
        limit = max(limit, 2)
    return max(d for d in range(1, min(groups, limit) + 1) if groups % d == 0)


def _lanes(elements: int) -> int:
    """Residues of the flat index each alternative must differ on: 16 (the widest float32
    vector, AVX-512) once a period holds 4096 elements, fewer in smaller ones (a power of two)."""
    lanes = 1
    while lanes < _LANES and lanes * 2 * 256 <= elements:
        lanes *= 2
    return lanes


def _starts(rng: np.random.Generator, window: int, size: int, origin: int, count: int, *,
            head: bool, straddle: Optional[int]) -> np.ndarray:
    """Per translation, the first source pixel (fractional) its window samples along one axis.

    Inside the source when the window fits (``window + 2 <= size``); otherwise
    the window overhangs the source by a fraction of a pixel at one end: at its
    end for the first translation (``head``: the output's first rows and
    columns are then interior), at its start for the others (its last rows and
    columns interior).  ``straddle``: that translation's window lies half
    outside the source (the zero fill).
    """
    frac = rng.uniform(0.05, 0.95, count)
    if window + 2 <= size:
        start = rng.integers(0, size - window - 1, count, endpoint=True) + frac
    else:
        start = -frac
        if head:
            start[0] = frac[0]
    if straddle is not None:
        start[straddle] = -(window // 2) + frac[straddle]
    return start


def _craft(layout: _Layout, seed: int) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray], int]:
    """``(sources, translations, output_origin, Kg)`` of one period of ``Kg`` groups (host arrays)."""
    rng = np.random.default_rng(seed)
    c = layout.channels
    h, w = layout.output_size
    kg = _period_groups(layout.count // c, h * w * c, c)
    k = kg * c
    n_src = 1 if layout.sources == 1 else k
    src_h, src_w = layout.source_shape
    re = rng.uniform(-1.0, 1.0, (n_src, src_h, src_w))
    im = rng.uniform(-1.0, 1.0, (n_src, src_h, src_w))
    sources = (re + 1j * im).astype(layout.complex_dtype)
    origin = rng.integers(0, 4, (k, 2)) if layout.has_origin else None
    straddle = k // 2 if k >= 3 else None
    head = k >= 2
    cols = _starts(rng, w, src_w, layout.source_origin[1], k, head=head, straddle=straddle)
    rows = _starts(rng, h, src_h, layout.source_origin[0], k, head=head, straddle=None)
    x_min = origin[:, 1] if origin is not None else 0
    y_min = origin[:, 0] if origin is not None else 0
    # output pixel X samples X - tx; source pixel = X - tx - source_origin: its first is `cols`
    tx = x_min - layout.source_origin[1] - cols
    ty = y_min - layout.source_origin[0] - rows
    translations = np.stack([tx, ty], axis=1).astype(layout.real_dtype)
    return sources, translations, origin, kg


def _host_orders(layout: _Layout, sources: np.ndarray, translations: np.ndarray,
                 origin: Optional[np.ndarray]) -> Tuple[Dict[str, np.ndarray], ...]:
    """Every order of :func:`orders` on the period, real and imaginary planes, each (Kg, h, w, c)."""
    import array_api_compat.numpy as xp

    from ptycho.backends.window import bilinear_terms

    weights, corners_re, corners_im = bilinear_terms(
        sources, translations, output_size=layout.output_size, xp=xp, source_origin=layout.source_origin,
        output_origin=origin, channels=layout.channels,
    )
    shape = corners_re[0].shape
    weights = tuple(np.broadcast_to(wt, shape) for wt in weights)
    return orders(weights, corners_re, xp=xp), orders(weights, corners_im, xp=xp)


def _tells_apart(planes: Tuple[Dict[str, np.ndarray], ...], row_width: int) -> Optional[str]:
    """None when every alternative differs from the chain in every region the check needs; else which not."""
    for name in ALTERNATIVES:
        differs = np.zeros(planes[0][CHAIN].size, dtype=bool)
        for plane in planes:
            differs |= (plane[name] != plane[CHAIN]).reshape(-1)
        n = differs.size
        ends = min(_LANES, n)
        lanes = _lanes(n)
        index = np.flatnonzero(differs)
        columns = (np.arange(n) % row_width) >= max(0, row_width - _LANES)
        if not (differs[:ends].any() and differs[-ends:].any() and (differs & columns).any()
                and np.unique(index % lanes).size == lanes):
            return name
    return None


@dataclasses.dataclass
class _Probe:
    sources: np.ndarray
    translations: np.ndarray
    origin: Optional[np.ndarray]
    period_groups: int
    expected: np.ndarray  # (Kg, h, w, c), the exact chain
    planes: Tuple[Dict[str, np.ndarray], ...] = ()  # every order of the period, real and imaginary


def _which_order(out: np.ndarray, probe: _Probe) -> str:
    """The order of :func:`orders` that the probe's first period matches bit for bit, for messages."""
    period = out[: probe.period_groups]
    for name in (CHAIN,) + ALTERNATIVES:
        if all(np.array_equal(part(period).view(plane[name].dtype.str.replace("f", "u")),
                              plane[name].view(plane[name].dtype.str.replace("f", "u")))
               for part, plane in zip((np.real, np.imag), probe.planes)):
            return name
    return "none of the 22 orders"


def _probe(layout: _Layout) -> Tuple[Optional[_Probe], str]:
    """A probe for ``layout`` that tells every alternative apart, or (None, why not)."""
    failed = ""
    for seed in range(_SEEDS):
        sources, translations, origin, kg = _craft(layout, seed)
        planes = _host_orders(layout, sources, translations, origin)
        failed = _tells_apart(planes, layout.output_size[1] * layout.channels)
        if failed is None:
            expected = (planes[0][CHAIN].astype(layout.complex_dtype) + 1j * planes[1][CHAIN]).astype(
                layout.complex_dtype)
            return _Probe(sources, translations, origin, kg, expected, planes), "verified"
    return None, f"unverifiable: no probe of this shape tells {failed} from the chain"


def _tiled(period: np.ndarray, total: int) -> np.ndarray:
    """``period`` (K, ...) repeated to ``total`` rows (K divides ``total``)."""
    return np.broadcast_to(period, (total // period.shape[0],) + period.shape).reshape((total,) + period.shape[1:])


def _count_mismatches(out: np.ndarray, expected: np.ndarray) -> int:
    """Elements of ``out`` (G, h, w, c) whose bits differ from ``expected`` (Kg, h, w, c) repeated."""
    word = np.uint64  # complex64: one word an element; complex128: two
    got = np.ascontiguousarray(out).view(word).reshape(out.shape[0] // expected.shape[0], -1)
    want = np.ascontiguousarray(expected).view(word).reshape(-1)
    step = max(1, (1 << 22) // max(1, want.size))
    bad = 0
    for start in range(0, got.shape[0], step):
        bad += int(np.count_nonzero(got[start:start + step] != want))
    if out.dtype == np.complex128:
        bad = (bad + 1) // 2  # two words an element (an upper bound on elements is enough)
    return bad


# ---------------------------------------------------------------------------------------------
# The verified job
# ---------------------------------------------------------------------------------------------


class VerifiedJob:
    """The compiled order of ``job`` on an XLA backend: native where verified, emulated otherwise.

    ``native`` and ``emulated`` are the job compiled with ``evaluation='native'``
    and ``'compiled'``; calls are the job's (``extract_job`` or ``translate_job``).
    """

    def __init__(self, backend_name: str, module: Any, job: Callable[..., Any], static: dict,
                 native: Callable[..., Any], emulated: Callable[[], Callable[..., Any]]):
        self.backend_name = backend_name
        self.module = module
        self.kind = job.__qualname__
        self.static = tuple(sorted(static.items()))
        self._static = dict(static)
        self.native = native
        self._emulated = emulated
        self._lock = threading.Lock()

    @property
    def emulated(self) -> Callable[..., Any]:
        return self._emulated()

    def __call__(self, *args: Any) -> Any:
        mod = self.module
        arrays = [a for a in args if a is not None]
        if not enabled() or not all(mod.concrete(a) for a in arrays):
            return self.emulated(*args)
        signature = tuple(None if a is None else mod.signature(a) for a in args)
        key = (self.backend_name, self.kind, self.static, signature)
        verdict = _verdicts.get(key)
        if verdict is None:
            with self._lock:
                verdict = _verdicts.get(key)
                if verdict is None:
                    verdict = self._verify(mod, args, signature)
                    with _lock:
                        _verdicts[key] = verdict
        return (self.native if verdict.native else self.emulated)(*args)

    def _verify(self, mod: Any, args: tuple, signature: tuple) -> Verdict:
        t0 = time.perf_counter()
        layout = _layout(self.kind, self._static, args, mod.numpy_dtype)
        probe, reason = _probe(layout) if layout.count else (None, "unverifiable: no translations")
        common = dict(backend=self.backend_name, job=self.kind, static=self.static, signature=signature)
        if probe is None:
            return Verdict(native=False, reason=reason, seconds=(time.perf_counter() - t0, 0.0, 0.0), **common)
        probe_args = self._probe_args(mod, args, layout, probe)
        t1 = time.perf_counter()
        out = mod.host_view(self.native(*probe_args))
        del probe_args
        t2 = time.perf_counter()
        bad = _count_mismatches(out, probe.expected)
        computed = _which_order(out, probe) if bad else CHAIN
        del out
        t3 = time.perf_counter()
        total = layout.count * int(np.prod(layout.output_size))
        common.update(probe_elements=total, seconds=(t1 - t0, t2 - t1, t3 - t2))
        if bad == 0:
            return Verdict(native=True, reason="verified", **common)
        warnings.warn(
            f"{self.backend_name}: XLA's contraction of {self.kind} ({dict(self.static)}, arguments "
            f"{signature}) differs from the exact fused multiply-add chain on {bad} of {total} probe "
            f"elements (it computes {computed}); this program computes the compiled order by emulation "
            "instead (same bits, slower)",
            NativeOrderWarning, stacklevel=4,
        )
        return Verdict(native=False, reason="mismatch", mismatches=bad, computed=computed, **common)

    def _probe_args(self, mod: Any, args: tuple, layout: _Layout, probe: _Probe) -> tuple:
        total = layout.count
        translations = _tiled(probe.translations, total)
        if self.kind == "extract_job":
            image = probe.sources[0].astype(mod.numpy_dtype(args[0]), copy=False)
            return (mod.like(args[0], image), mod.like(args[1], (-translations).astype(layout.real_dtype)),
                    *args[2:])
        sources = probe.sources if layout.sources == 1 else _tiled(probe.sources, total)
        call = [mod.like(args[0], sources.astype(mod.numpy_dtype(args[0]), copy=False)),
                mod.like(args[1], translations.astype(mod.numpy_dtype(args[1]), copy=False)), args[2]]
        if len(args) > 3:
            origin = None if probe.origin is None else _tiled(probe.origin, total).astype(
                mod.numpy_dtype(args[3]), copy=False)
            call.append(None if origin is None else mod.like(args[3], origin))
        return tuple(call)
