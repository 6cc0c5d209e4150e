"""The NumPy backend's compiled kernel (optional: the ``fast`` extra, Numba).

One per-pixel loop for the bilinear windowed translation of
:func:`ptycho.backends.window.translate_window`, in both evaluation orders,
writing straight into the preallocated output.  It is not a second definition
of the math:

- the sample coordinates, their floors and the clipped corner indices -- the
  float32 rounding edges of the contract -- are computed by the window
  module's own functions (``_sample_coordinates``, ``_border_index``) on the
  small per-row and per-column tables ``(G, h, c)`` and ``(G, w, c)``, on
  NumPy arrays, and only their per-pixel combination runs here;
- per pixel the kernel evaluates the expressions of ``window.stencil`` and
  ``window.weighted_sum`` in the same order and precision: the weights
  ``wa = (1-wx)(1-wy)`` ... as real-dtype products, the corners at
  ``corner_a + {0, 1, row_stride, row_stride + 1}`` of the zero-bordered
  source, and either ``wa*Ia + wb*Ib + wc*Ic + wd*Id`` left to right
  (``plain``) or ``fma(wd, Id, fma(wc, Ic, fma(wa, Ia, wb*Ib)))``
  (``compiled``), each ``fma`` rounded once in the real precision.

The fused multiply-add is LLVM's ``llvm.fma`` (:func:`fma`, a Numba
intrinsic), not :mod:`ptycho.backends.rounding`'s emulation: ``llvm.fma`` is
defined as the correctly rounded ``a*b + c`` on every target (the hardware
instruction, or the C library's ``fma`` where there is none), so it gives the
emulation's bits at the cost of the plain order, and keeps no emulation for a
machine without the instruction.  Otherwise LLVM contracts nothing here
(Numba emits no ``contract`` flags without ``fastmath``), and subnormals are
kept, as in NumPy.  The kernel is tested bit for bit against the array-API
path and PtychoPINN's fixture (``tests/test_kernels.py``), its ``fma`` against
exact rationals (``tests/test_rounding.py``).

Importing this module imports Numba: the NumPy backend imports it only when
``numba`` is installed (``ptycho.backends._numpy.selected_kernel``), so
``import ptycho`` never does.  The kernel is compiled once per real dtype on
first use and cached on disk by Numba (``cache=True``: ``__pycache__`` next to
this file, or Numba's user cache directory when that is read-only).  It releases
the GIL; a call runs on a few threads, each on its own range of patches.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ptycho.backends._dispatch import kernel_threads

__all__ = ["fma", "translate_into", "scalar_fma", "threads"]

_jit = numba.njit(cache=True, nogil=True, error_model="numpy")
_inline = _jit  # LLVM inlines these small functions


@intrinsic
def fma(typingctx, a, b, c):  # noqa: ANN001, ANN201 - a Numba intrinsic: callable from jitted code only
    """``a*b + c`` rounded once (to nearest, ties to even): LLVM's ``llvm.fma``, for float32 and float64.

    ``llvm.fma`` is always fused -- LLVM's reference defines it as the libm
    ``fma`` (IEEE 754 fusedMultiplyAdd) without errno, and the kernel uses no
    fast-math flags -- so it is the correctly rounded fma on every target: the hardware
    instruction where the target has one (FMA3 ``vfmadd`` on x86-64 since
    Haswell / Piledriver, ``fmadd`` on AArch64 and POWER, part of their base
    ISA), a call to the C library's ``fma`` (correctly rounded in software)
    where it has none.  Unlike ``a*b + c`` with ``contract`` flags, it is
    never left unfused.  The three operands must share one real type.
    """
    if not (isinstance(a, types.Float) and a == b == c):
        return None
    sig = a(a, a, a)

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        # What llvmlite's ``IRBuilder.fma`` emits, declared here so that every llvmlite Numba
        # accepts takes this one path.
        ty = args[0].type
        name = "llvm.fma.f32" if a.bitwidth == 32 else "llvm.fma.f64"
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ty, [ty, ty, ty]), name)
        return builder.call(fn, args)

    return sig, codegen


@_inline
def _row_compiled(wa, wb, wc, wd, ia, ib, ic, id_, v):  # noqa: ANN001, ANN202 - weighted_sum "compiled"
    for x in range(v.shape[0]):
        v[x] = fma(wd[x], id_[x], fma(wc[x], ic[x], fma(wa[x], ia[x], wb[x] * ib[x])))


@_inline
def _row_plain(wa, wb, wc, wd, ia, ib, ic, id_, v):  # noqa: ANN001, ANN202 - weighted_sum "plain"
    for x in range(v.shape[0]):
        v[x] = wa[x] * ia[x] + wb[x] * ib[x] + wc[x] * ic[x] + wd[x] * id_[x]


@_jit
def _bilinear(re, im, base, row0, one_wy, wy, col0, one_wx, wx, row_stride, compiled, start, stop, out):  # noqa: ANN001, ANN202
    """Translations ``start <= g*c + k < stop`` into ``out`` (G, h, w, c, 2).

    Per output row, the weights, the corners and the sums are each one loop over
    x on contiguous buffers, so LLVM vectorises the sums (packed ``vfmadd`` for
    the compiled order on x86-64: one pixel's chain of three dependent fmas
    would otherwise leave the core waiting on latency).
    """
    groups, c, h = row0.shape
    w = col0.shape[2]
    wa = np.empty(w, dtype=one_wx.dtype)
    wb = np.empty_like(wa)
    wc = np.empty_like(wa)
    wd = np.empty_like(wa)
    corners = np.empty((8, w), dtype=one_wx.dtype)
    vr = np.empty_like(wa)
    vi = np.empty_like(wa)
    # No views of the shared arrays in this loop (a view takes a reference: an atomic on a
    # cache line that every thread shares, which serialises the threads); only the
    # thread's own buffers are sliced.
    for gk in range(start, stop):
        g = gk // c
        k = gk - g * c
        offset = base[gk]
        col_first = col0[g, k, 0]
        # Columns one apart (the usual case away from the zero fill and float32 edges):
        # each corner row is a contiguous run of the source, copied, not gathered.
        contiguous = True
        for x in range(w):
            if col0[g, k, x] != col_first + x:
                contiguous = False
        for y in range(h):
            row = offset + row0[g, k, y] * row_stride
            oy, ty = one_wy[g, k, y], wy[g, k, y]
            for x in range(w):
                ox = one_wx[g, k, x]
                tx = wx[g, k, x]
                wa[x] = ox * oy
                wb[x] = tx * oy
                wc[x] = ox * ty
                wd[x] = tx * ty
            if contiguous:
                a = row + col_first
                cc = a + row_stride
                for x in range(w):
                    corners[0, x] = re[a + x]
                    corners[1, x] = re[a + 1 + x]
                    corners[2, x] = re[cc + x]
                    corners[3, x] = re[cc + 1 + x]
                    corners[4, x] = im[a + x]
                    corners[5, x] = im[a + 1 + x]
                    corners[6, x] = im[cc + x]
                    corners[7, x] = im[cc + 1 + x]
            else:
                for x in range(w):
                    a = row + col0[g, k, x]
                    cc = a + row_stride
                    corners[0, x] = re[a]
                    corners[1, x] = re[a + 1]
                    corners[2, x] = re[cc]
                    corners[3, x] = re[cc + 1]
                    corners[4, x] = im[a]
                    corners[5, x] = im[a + 1]
                    corners[6, x] = im[cc]
                    corners[7, x] = im[cc + 1]
            if compiled:
                _row_compiled(wa, wb, wc, wd, corners[0], corners[1], corners[2], corners[3], vr)
                _row_compiled(wa, wb, wc, wd, corners[4], corners[5], corners[6], corners[7], vi)
            else:
                _row_plain(wa, wb, wc, wd, corners[0], corners[1], corners[2], corners[3], vr)
                _row_plain(wa, wb, wc, wd, corners[4], corners[5], corners[6], corners[7], vi)
            for x in range(w):
                out[g, y, x, k, 0] = vr[x]
                out[g, y, x, k, 1] = vi[x]


@_jit
def _apply_fma(a, b, c, out):  # noqa: ANN001, ANN202
    for i in range(a.shape[0]):
        out[i] = fma(a[i], b[i], c[i])


def scalar_fma(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """The kernel's scalar fused multiply-add, elementwise over 1-D arrays of one real dtype (for tests)."""
    out = np.empty_like(a)
    _apply_fma(a, b, c, out)
    return out


#: Threads of one call: ``NUMBA_NUM_THREADS`` if set, else the CPUs this process may use.
threads = kernel_threads


_pool: Optional[ThreadPoolExecutor] = None
_pool_size = 0
_pool_pid = 0
_pool_lock = threading.Lock()


def _run_into(args: tuple, count: int, out: np.ndarray) -> None:
    """The kernel over translations [0, count) into ``out``, in contiguous ranges, one per thread."""
    global _pool, _pool_size, _pool_pid
    n = min(threads(), max(1, count // 4))
    if n == 1:
        _bilinear(*args, 0, count, out)
        return
    with _pool_lock:
        # a new pool when more threads are wanted, or in a forked child (the parent's threads are not there)
        if _pool is None or _pool_size < n or _pool_pid != os.getpid():
            _pool, _pool_size = ThreadPoolExecutor(max_workers=n, thread_name_prefix="ptycho-numba"), n
            _pool_pid = os.getpid()
        pool = _pool
    bounds = [count * i // n for i in range(n + 1)]
    futures = [pool.submit(_bilinear, *args, bounds[i], bounds[i + 1], out) for i in range(n)]
    for future in futures:
        future.result()


def translate_into(
    images: np.ndarray,
    translations: np.ndarray,
    *,
    output_size: tuple,
    source_origin: tuple = (0, 0),
    output_origin: Optional[np.ndarray] = None,
    channels: int = 1,
    evaluation: str = "compiled",
    out: Optional[np.ndarray] = None,
) -> np.ndarray:
    """:func:`ptycho.backends.window.translate_window` (bilinear) by the kernel, into ``out``.

    Same arguments and result, bit for bit: ``images`` (S, H, W) complex
    (S = 1 or P), ``translations`` (P, 2) in the real dtype; the result
    (P // c, h, w, c) is written into ``out`` when given (a C-contiguous array
    of that shape and the complex dtype), else into a new array.
    """
    import array_api_compat.numpy as xp

    from ptycho.backends.window import BORDER, _border_index, _index_dtype, _sample_coordinates, zero_border

    n_src, src_h, src_w = images.shape
    out_h, out_w = (int(v) for v in output_size)
    real = np.dtype(np.float64) if images.dtype in (np.complex128, np.float64) else np.dtype(np.float32)
    cdtype = np.dtype(np.complex128) if real == np.float64 else np.dtype(np.complex64)
    count = translations.shape[0]
    groups = count // channels
    shape = (groups, out_h, out_w, channels)
    if out is not None and (out.shape != shape or out.dtype != cdtype or not out.flags.c_contiguous):
        raise ValueError(f"out must be a C-contiguous {cdtype} array of shape {shape}")
    if count == 0:
        return np.empty(shape, cdtype) if out is None else out
    if images.dtype != cdtype:
        images = images.astype(cdtype)
    flat_re = np.ascontiguousarray(zero_border(np.ascontiguousarray(images.real), xp=xp).reshape(-1))
    flat_im = np.ascontiguousarray(zero_border(np.ascontiguousarray(images.imag), xp=xp).reshape(-1))
    t = np.asarray(translations).astype(real, copy=False)
    origin = None if output_origin is None else np.asarray(output_origin)
    # The window module's coordinates: sx (G, 1, w, c), sy (G, h, 1, c), then stencil's steps.
    sx, sy = _sample_coordinates(t, output_size=(out_h, out_w), output_origin=origin, channels=channels, xp=xp)
    row_stride = src_w + 2 * BORDER
    plane = (src_h + 2 * BORDER) * row_stride
    index_dtype = _index_dtype(plane * max(1, n_src), xp=xp)
    x0 = np.floor(sx)
    y0 = np.floor(sy)
    wx = sx - x0
    wy = sy - y0
    col0 = _border_index(x0, source_origin[1], src_w, xp=xp, dtype=index_dtype)
    row0 = _border_index(y0, source_origin[0], src_h, xp=xp, dtype=index_dtype)
    one_wx = 1 - wx
    one_wy = 1 - wy

    def rows(a: np.ndarray, dtype: Any) -> np.ndarray:  # (G, h, 1, c) -> (G, c, h)
        return np.ascontiguousarray(np.transpose(a.reshape(groups, out_h, channels), (0, 2, 1)), dtype=dtype)

    def cols(a: np.ndarray, dtype: Any) -> np.ndarray:  # (G, 1, w, c) -> (G, c, w)
        return np.ascontiguousarray(np.transpose(a.reshape(groups, out_w, channels), (0, 2, 1)), dtype=dtype)

    if n_src == 1:
        base = np.zeros(count, np.int64)
    else:
        base = np.arange(count, dtype=np.int64) * plane
    tables = (
        rows(row0, np.int64), rows(one_wy, real), rows(wy, real),
        cols(col0, np.int64), cols(one_wx, real), cols(wx, real),
    )
    del sx, sy, x0, y0, wx, wy, col0, row0, one_wx, one_wy
    if out is None:  # allocated after the tables' temporaries are gone: peak = output + tables
        out = np.empty(shape, cdtype)
    args = (flat_re, flat_im, base, *tables, np.int64(row_stride), evaluation == "compiled")
    view = out.view(real).reshape(shape + (2,))
    _run_into(args, count, view)
    return out
