"""Translate-then-slice: the one implementation of the bilinear window math.

Written once against the Python array API standard.  ``xp`` is the array
namespace: ``array_api_compat.numpy``, ``jax.numpy``, the TensorFlow adapter in
:mod:`ptycho.backends._tensorflow`, or any array-API namespace (CuPy, PyTorch
through ``array_api_compat``).  The only function used beyond the standard is
the optional ``xp.complex(re, im)`` (a backend may supply a fast, exact one;
otherwise :func:`_complex_from_parts` builds the complex result with standard
operations).  The architecture and the contract are in
``docs/DEVELOPER_GUIDE.md``.

The contract: output pixel (y, x) of a translation by t = (tx, ty) is the
zero-fill bilinear sample of the source at ``sx = x - tx``, ``sy = y - ty`` in
the image's real precision, with ``x0 = floor(sx)``, ``wx = sx - x0``
(likewise y), corners ``Ia = I[y0, x0]``, ``Ib = I[y0, x1]``,
``Ic = I[y1, x0]``, ``Id = I[y1, x1]`` (each zero when its own index is
outside the image), weights ``wa = (1-wx)(1-wy)``, ``wb = wx(1-wy)``,
``wc = (1-wx)wy``, ``wd = wx*wy``, real and imaginary parts separately, summed
in one of two evaluation orders (:data:`EVALUATIONS`):

- ``"compiled"`` -- PtychoPINN's default XLA path, whose multiply-adds are
  contracted: ``fma(wd, Id, fma(wc, Ic, fma(wa, Ia, wb*Ib)))``, each fused
  multiply-add rounded once (emulated exactly by :mod:`ptycho.backends.rounding`);
- ``"plain"`` -- PtychoPINN's eager path: ``wa*Ia + wb*Ib + wc*Ic + wd*Id``,
  every product and sum rounded, left to right.

:func:`translate_window` evaluates exactly these expressions for one window
of output pixels only.  A full-image translation is the window (h, w) = (H, W);
a PtychoPINN patch is the window (N, N) of a translation of the padded object.
Because both evaluate the same expressions in the same order and precision, a
patch cut by the window equals, bit for bit, the corner of the full-image
translation.

Zero fill is implemented by clipping the first corner index ``x0`` into
[-2, size] and gathering from a copy of the source with a two-pixel zero
border: both corners ``x0`` and ``x0 + 1`` of a clipped index are zeros of the
border, exactly as the true corners are outside the image, and an unclipped
index is the true corner.  So the second corner is always the first plus one
(one clip per axis, and the four gather indices of a pixel differ by
constants).  The border is the only copy of the source ever made (it is
(H + 4) x (W + 4), never tiled).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

from ptycho.backends.rounding import fma
from ptycho.errors import InputError

__all__ = [
    "BORDER",
    "EVALUATIONS",
    "INTERPOLATIONS",
    "stencil",
    "bilinear_terms",
    "native_sum",
    "weighted_sum",
    "zero_border",
    "translate_window",
    "window_patches",
]

INTERPOLATIONS = ("bilinear", "nearest")
#: The two evaluation orders of the bilinear sum (see the module docstring).
EVALUATIONS = ("compiled", "plain")
#: Internal spelling of the compiled order, for XLA only: PtychoPINN's sum written
#: for the compiler to contract (:func:`native_sum`).  Never trusted unverified:
#: :mod:`ptycho.backends.native` checks every program compiled with it.
NATIVE = "native"
_ALL_EVALUATIONS = EVALUATIONS + (NATIVE,)

#: Width of the zero border around the source (see the module docstring).
BORDER = 2
#: Largest flat gather index that int32 holds.
_INT32_MAX = 2**31 - 1


def _real_dtype_of(dtype: Any, *, xp: Any) -> Any:
    """float32 for complex64/float32 (and narrower), float64 for complex128/float64."""
    if dtype == xp.complex128 or dtype == xp.float64:
        return xp.float64
    return xp.float32


def _complex_dtype_of(real_dtype: Any, *, xp: Any) -> Any:
    return xp.complex128 if real_dtype == xp.float64 else xp.complex64


def _complex_from_parts(re: Any, im: Any, *, xp: Any) -> Any:
    """``re + i*im`` with the backend's exact constructor, else standard ops.

    The standard fallback ``re + (im * 1j)`` is exact for finite values (up to
    the sign of zero); backends provide ``xp.complex`` to avoid the extra passes.
    """
    make = getattr(xp, "complex", None)
    if make is not None:
        return make(re, im)
    cdtype = _complex_dtype_of(re.dtype, xp=xp)
    return xp.astype(re, cdtype) + xp.astype(im, cdtype) * xp.asarray(1j, dtype=cdtype, **_on(re, xp))


def _on(x: Any, xp: Any) -> dict:
    """``device=`` keyword for a new array that goes with ``x``.

    Our backend namespaces create arrays where the computation runs (XLA places
    them with the program; NumPy has one device); a generic array-API namespace
    (PyTorch, CuPy) needs the input's device named.
    """
    if getattr(xp, "places_new_arrays", False):
        return {}
    import array_api_compat

    return {"device": array_api_compat.device(x)}


def zero_border(images: Any, *, xp: Any) -> Any:
    """(S, H, W) -> (S, H + 2*BORDER, W + 2*BORDER) with a zero border, on ``images``' device."""
    s, h, w = images.shape
    zero_cols = xp.zeros((s, h, BORDER), dtype=images.dtype, **_on(images, xp))
    rows = xp.concat([zero_cols, images, zero_cols], axis=2)
    zero_rows = xp.zeros((s, BORDER, w + 2 * BORDER), dtype=images.dtype, **_on(images, xp))
    return xp.concat([zero_rows, rows, zero_rows], axis=1)


def _index_dtype(flat_size: int, *, xp: Any) -> Any:
    """int32 when every flat index of the bordered sources fits, else int64 (never a wrap)."""
    if flat_size <= _INT32_MAX:
        return xp.int32
    available = getattr(xp, "int64_available", None)
    if available is not None and not available():
        raise InputError(
            f"the zero-bordered sources hold {flat_size} elements, more than int32 indexes, and "
            "this backend has no 64-bit integers here (JAX: enable jax_enable_x64, or pass fewer "
            "sources per call)"
        )
    return xp.int64


def _border_index(coord: Any, shift: int, size: int, *, xp: Any, dtype: Any) -> Any:
    """Integer-valued float ``coord`` (source pixel) -> index into the zero-bordered axis.

    ``coord - shift`` is the pixel in the unpadded source; it is clipped to
    [-2, size], so that the pixel and its successor are either both the true
    ones or both zeros of the border.  The clip happens in floating point,
    before the cast, so huge coordinates cannot overflow the integer type.
    """
    local = xp.clip(coord - shift, -BORDER, size) if shift else xp.clip(coord, -BORDER, size)
    return xp.astype(local, dtype) + BORDER


def _sample_coordinates(
    translations: Any,
    *,
    output_size: Tuple[int, int],
    output_origin: Optional[Any],
    channels: int,
    xp: Any,
) -> Tuple[Any, Any]:
    """``(sx, sy)``: the contract's sample coordinates, (G, 1, w, c) and (G, h, 1, c).

    Output pixel X of translation p samples ``X - tx``; with ``output_origin``
    the window of translation p starts at output pixel ``output_origin[p]``
    (row, col), and X is formed as an integer-valued float before the
    subtraction, so a window of a full-image translation rounds exactly like
    the full image.
    """
    real_dtype = translations.dtype
    groups = translations.shape[0] // channels
    out_h, out_w = output_size
    tx = xp.reshape(translations[:, 0], (groups, 1, 1, channels))
    ty = xp.reshape(translations[:, 1], (groups, 1, 1, channels))
    grid_x = xp.reshape(xp.astype(xp.arange(out_w, **_on(translations, xp)), real_dtype), (1, 1, out_w, 1))
    grid_y = xp.reshape(xp.astype(xp.arange(out_h, **_on(translations, xp)), real_dtype), (1, out_h, 1, 1))
    if output_origin is not None:
        origin = xp.astype(output_origin, real_dtype)
        grid_y = grid_y + xp.reshape(origin[:, 0], (groups, 1, 1, channels))
        grid_x = grid_x + xp.reshape(origin[:, 1], (groups, 1, 1, channels))
    return grid_x - tx, grid_y - ty


def _flat_index(
    rows: Any,
    cols: Any,
    translations: Any,
    *,
    source_shape: Tuple[int, int],
    source_origin: Tuple[int, int],
    channels: int,
    n_sources: int,
    xp: Any,
) -> Tuple[Any, int]:
    """``(index, row_stride)``: integer-valued source pixels (G, h, 1, c) and (G, 1, w, c) -> flat
    indices (G, h, w, c) into the zero-bordered sources, flattened (source p's plane for
    translation p when ``n_sources`` > 1)."""
    src_h, src_w = (int(v) for v in source_shape)
    row_origin, col_origin = (int(v) for v in source_origin)
    row_stride = src_w + 2 * BORDER
    plane = (src_h + 2 * BORDER) * row_stride
    index_dtype = _index_dtype(plane * max(1, int(n_sources)), xp=xp)
    col = _border_index(cols, col_origin, src_w, xp=xp, dtype=index_dtype)  # (G, 1, w, c)
    row = _border_index(rows, row_origin, src_h, xp=xp, dtype=index_dtype)  # (G, h, 1, c)
    index = row * row_stride + col  # (G, h, w, c)
    if n_sources != 1:
        groups = translations.shape[0] // channels
        base = xp.arange(translations.shape[0], dtype=index_dtype, **_on(translations, xp)) * plane
        index = index + xp.reshape(base, (groups, 1, 1, channels))
    return index, row_stride


def stencil(
    translations: Any,
    *,
    output_size: Tuple[int, int],
    source_shape: Tuple[int, int],
    xp: Any,
    source_origin: Tuple[int, int] = (0, 0),
    output_origin: Optional[Any] = None,
    channels: int = 1,
    n_sources: int = 1,
) -> Tuple[Any, Tuple[Any, Any, Any, Any], int]:
    """The zero-fill bilinear stencil of a windowed translation.

    Parameters
    ----------
    translations : array (P, 2), real
        (tx, ty) in pixels, in the working real dtype (float32 or float64).
    output_size : (h, w)
        The output window of each translation.
    source_shape : (H, W)
        Shape of each (unbordered) source.
    source_origin : (int, int)
        (row, col) of the source's pixel [0, 0] in the contract's frame.
    output_origin : integer array (P, 2), optional
        (row, col) of each translation's window in the output frame (default 0).
    channels : int
        c; the stencil is laid out (P // c, h, w, c).
    n_sources : int
        1 (one source shared by every translation) or P (source p for translation p).

    Returns
    -------
    corner_a : integer array (G, h, w, c)
        Flat index of corner a into the sources with a :data:`BORDER` zero
        border, flattened (``zero_border(sources)`` reshaped to 1-D).  Corners
        b, c, d are ``corner_a + 1``, ``+ row_stride``, ``+ row_stride + 1``;
        a corner outside the source always indexes the zero border.
    weights : (wa, wb, wc, wd), real arrays broadcastable to (G, h, w, c)
    row_stride : int
        W + 2 * BORDER.
    """
    sx, sy = _sample_coordinates(
        translations, output_size=output_size, output_origin=output_origin, channels=channels, xp=xp,
    )
    x0 = xp.floor(sx)
    y0 = xp.floor(sy)
    wx = sx - x0
    wy = sy - y0
    corner_a, row_stride = _flat_index(
        y0, x0, translations, source_shape=source_shape, source_origin=source_origin, channels=channels,
        n_sources=n_sources, xp=xp,
    )
    one_wx = 1 - wx
    one_wy = 1 - wy
    weights = (one_wx * one_wy, wx * one_wy, one_wx * wy, wx * wy)
    return corner_a, weights, row_stride


def native_sum(weights: Sequence[Any], corners: Sequence[Any], *, xp: Any) -> Any:
    """PtychoPINN's sum ``wa*Ia + wb*Ib + wc*Ic + wd*Id``, unguarded, for XLA to contract.

    XLA (its LLVM back end) contracts a multiply feeding an addition into a
    fused multiply-add -- which is how PtychoPINN's default path gets its
    bits -- but the first addition has a product on each side, and which one
    it fuses is the compiler's choice: measured, ``fma(wa, Ia, wb*Ib)``
    (PtychoPINN's bits) in some programs and ``fma(wb, Ib, wa*Ia)`` in others
    (the extraction job under JAX and TF-XLA, a third of all pixels off by
    an ulp), however the source orders the two terms.  So ``wb*Ib`` reaches
    that addition through an exact identity that is not a multiply,
    ``where(isnan(Ib), Ib, wb*Ib)`` (NaN either way), and only ``wa*Ia`` is
    left to fuse: ``fma(wd, Id, fma(wc, Ic, fma(wa, Ia, wb*Ib)))``, the
    compiled order, if the compiler contracts at all.  Whether it did is
    checked on every program compiled with this (:mod:`ptycho.backends.native`).
    """
    wa, wb, wc, wd = weights
    ia, ib, ic, id_ = corners
    return wa * ia + xp.where(xp.isnan(ib), ib, wb * ib) + wc * ic + wd * id_


def weighted_sum(
    weights: Sequence[Any],
    corners: Sequence[Any],
    *,
    evaluation: str,
    xp: Any,
    fma_guard: Any = None,
) -> Any:
    """The bilinear sum of four real corner planes in one of the :data:`EVALUATIONS`.

    ``weights`` (wa, wb, wc, wd) and ``corners`` (Ia, Ib, Ic, Id) share one
    real dtype.  ``fma_guard`` is a runtime 1.0 for compiling backends: XLA's
    code generators may contract ``a*b + c`` into a fused multiply-add, and
    whether they do depends on how a program is fused.  Multiplying an
    inexact product by this opaque 1 (exact) makes any contraction
    ``fma(p, 1, acc)`` round exactly like ``p + acc``: the result never
    depends on the compiler's choice.
    """
    wa, wb, wc, wd = weights
    ia, ib, ic, id_ = corners
    one = None if fma_guard is None else xp.astype(fma_guard, wa.dtype)
    if evaluation == "compiled":
        first = wb * ib if one is None else (wb * ib) * one
        return fma(wd, id_, fma(wc, ic, fma(wa, ia, first, xp=xp, one=one), xp=xp, one=one), xp=xp, one=one)
    if evaluation == "plain":
        if one is None:
            return wa * ia + wb * ib + wc * ic + wd * id_
        return (wa * ia) * one + (wb * ib) * one + (wc * ic) * one + (wd * id_) * one
    if evaluation == NATIVE:
        return native_sum(weights, corners, xp=xp)
    raise InputError(f"evaluation must be one of {EVALUATIONS}, got {evaluation!r}")


def translate_window(
    images: Any,
    translations: Any,
    *,
    output_size: Tuple[int, int],
    xp: Any,
    interpolation: str = "bilinear",
    source_origin: Tuple[int, int] = (0, 0),
    output_origin: Optional[Any] = None,
    channels: int = 1,
    evaluation: str = "compiled",
    fma_guard: Any = None,
) -> Any:
    """Translate ``images`` by each translation, evaluating only an output window.

    Parameters
    ----------
    images : array, shape (S, H, W), complex (or real, treated as complex)
        Sources.  ``S == 1``: one source shared by every translation (it is
        never tiled).  ``S == P``: source p goes with translation p.
    translations : array, shape (P, 2)
        (tx, ty) in pixels, x = column, y = row; cast to the images' real dtype.
    output_size : (int, int)
        Window (h, w): output pixels 0 <= y < h, 0 <= x < w.
    xp : namespace
        Array namespace of the inputs (keyword-only, required).
    interpolation : {'bilinear', 'nearest'}
        'nearest' rounds ``sx, sy`` half to even and takes one pixel.
    source_origin : (int, int)
        (row, column) of ``images[:, 0, 0]`` in the coordinate frame of the
        contract; the source is zero outside.  Extracting from an unpadded
        object with ``source_origin = (N//2, N//2)`` equals extracting from
        the object zero-padded by N//2, without materialising the padding.
    output_origin : integer array (P, 2), optional
        (row, column) where the window of translation p starts in the output
        frame (default: 0 for every translation).  A window at ``output_origin``
        is bit-identical to those pixels of the full-frame translation.
    channels : int
        c; P must be a multiple of c.  The result is laid out
        (P // c, h, w, c), translation ``b*c + k`` in ``[b, :, :, k]``, so
        channel-format callers get their final layout with no transpose.
    evaluation : {'compiled', 'plain'}
        Evaluation order of the bilinear sum (module docstring).
    fma_guard : scalar array equal to 1, optional
        For compiling backends; see :func:`weighted_sum`.

    Returns
    -------
    array, shape (P // c, h, w, c), complex64 (float32 sources) or complex128
    """
    if interpolation not in INTERPOLATIONS:
        raise InputError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    if evaluation not in _ALL_EVALUATIONS:
        raise InputError(f"evaluation must be one of {EVALUATIONS}, got {evaluation!r}")
    output_size = tuple(int(v) for v in output_size)
    if interpolation == "nearest":
        gather, t, (src_h, src_w), n_src = _gatherer(images, translations, output_size, channels, xp=xp)
        sx, sy = _sample_coordinates(
            t, output_size=output_size, output_origin=output_origin, channels=channels, xp=xp,
        )
        index, _ = _flat_index(
            xp.round(sy), xp.round(sx), t, source_shape=(src_h, src_w), source_origin=source_origin,
            channels=channels, n_sources=n_src, xp=xp,
        )
        return _complex_from_parts(*gather(index), xp=xp)

    weights, corners_re, corners_im = bilinear_terms(
        images, translations, output_size=output_size, xp=xp, source_origin=source_origin,
        output_origin=output_origin, channels=channels,
    )
    out_re = weighted_sum(weights, corners_re, evaluation=evaluation, xp=xp, fma_guard=fma_guard)
    out_im = weighted_sum(weights, corners_im, evaluation=evaluation, xp=xp, fma_guard=fma_guard)
    return _complex_from_parts(out_re, out_im, xp=xp)


def _gatherer(images: Any, translations: Any, output_size: Tuple[int, int], channels: int, *, xp: Any) -> Tuple:
    """``(gather, t, (H, W), S)``: ``gather(index)`` -> (real, imag) planes of the zero-bordered
    sources at a flat ``index`` (G, h, w, c); ``t`` the translations in the sources' real dtype."""
    n_src, src_h, src_w = images.shape
    out_h, out_w = (int(v) for v in output_size)
    groups = translations.shape[0] // channels
    real_dtype = _real_dtype_of(images.dtype, xp=xp)
    complex_dtype = _complex_dtype_of(real_dtype, xp=xp)
    if images.dtype != complex_dtype:
        images = xp.astype(images, complex_dtype)
    # Real and imaginary planes are gathered separately: a real gather feeds one
    # product each, so a compiler fuses it into the output loop; a complex gather
    # feeding both xp.real and xp.imag is materialised by XLA (TensorFlow's CPU
    # backend), one output-sized complex array per corner.
    flat_re = xp.reshape(zero_border(xp.real(images), xp=xp), (-1,))
    flat_im = xp.reshape(zero_border(xp.imag(images), xp=xp), (-1,))
    shape = (groups, out_h, out_w, channels)

    def gather(index: Any) -> Tuple[Any, Any]:
        flat_index = xp.reshape(index, (-1,))
        return (
            xp.reshape(xp.take(flat_re, flat_index, axis=0), shape),
            xp.reshape(xp.take(flat_im, flat_index, axis=0), shape),
        )

    return gather, xp.astype(translations, real_dtype), (src_h, src_w), n_src


def bilinear_terms(
    images: Any,
    translations: Any,
    *,
    output_size: Tuple[int, int],
    xp: Any,
    source_origin: Tuple[int, int] = (0, 0),
    output_origin: Optional[Any] = None,
    channels: int = 1,
) -> Tuple[Tuple[Any, Any, Any, Any], Tuple[Any, Any, Any, Any], Tuple[Any, Any, Any, Any]]:
    """The terms of the bilinear sum of :func:`translate_window` (same arguments):
    ``(weights, corners_re, corners_im)``, each four real arrays broadcastable to
    (G, h, w, c) -- (wa, wb, wc, wd) and (Ia, Ib, Ic, Id) of the real and the
    imaginary planes.  :func:`weighted_sum` of them, in either order, is the result.
    """
    out_h, out_w = (int(v) for v in output_size)
    gather, t, (src_h, src_w), n_src = _gatherer(images, translations, (out_h, out_w), channels, xp=xp)
    corner_a, weights, row_stride = stencil(
        t, output_size=(out_h, out_w), source_shape=(src_h, src_w), xp=xp,
        source_origin=source_origin, output_origin=output_origin, channels=channels, n_sources=n_src,
    )
    ia, ib, ic, id_ = (
        gather(corner_a + offset if offset else corner_a)
        for offset in (0, 1, row_stride, row_stride + 1)
    )
    return weights, (ia[0], ib[0], ic[0], id_[0]), (ia[1], ib[1], ic[1], id_[1])


def window_patches(
    image: Any,
    positions: Any,
    patch_size: int,
    *,
    xp: Any,
    interpolation: str = "bilinear",
    channels: int = 1,
    padding: int | None = None,
    evaluation: str = "compiled",
    fma_guard: Any = None,
) -> Any:
    """PtychoPINN patches from an unpadded object, without padding it.

    Patch i is ``translate(pad(image, padding), -positions[i])[:N, :N]``, i.e.
    ``patch[y, x] = bilinear(padded, x + ox, y + oy)``: a window centred on
    (ox, oy) in object pixels when ``padding = N // 2`` (the default).

    Parameters
    ----------
    image : array (H, W), complex or real
    positions : array (P, 2), (x, y) object pixels
    patch_size : int
        N.
    channels : int
        Output layout (P // c, N, N, c); see :func:`translate_window`.
    padding : int, optional
        Zero padding of the reference definition (default N // 2).
    evaluation : {'compiled', 'plain'}

    Returns
    -------
    array (P // c, N, N, c), complex
    """
    pad = patch_size // 2 if padding is None else int(padding)
    source = xp.reshape(image, (1,) + tuple(image.shape))
    return translate_window(
        source,
        -positions,
        output_size=(patch_size, patch_size),
        xp=xp,
        interpolation=interpolation,
        source_origin=(pad, pad),
        channels=channels,
        evaluation=evaluation,
        fma_guard=fma_guard,
    )
