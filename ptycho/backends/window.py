"""Translate-then-slice: the one implementation of the patch window math.

Written once against the Python array API standard.  ``xp`` is the array
namespace: ``array_api_compat.numpy``, ``jax.numpy``, the TensorFlow adapter in
:mod:`ptycho.backends._tensorflow`, or any array-API namespace (CuPy, PyTorch
through ``array_api_compat``).  The only function used beyond the standard is
the optional ``xp.complex(re, im)`` (a backend may supply a fast, exact one;
otherwise :func:`_complex_from_parts` builds the complex result with standard
operations).

The contract (``DESIGN.md``): output pixel (y, x) of a translation by
t = (tx, ty) is the zero-fill bilinear sample of the source at
``sx = x - tx``, ``sy = y - ty`` in the image's real precision, with
``x0 = floor(sx)``, ``wx = sx - x0`` (likewise y), corners
``Ia = I[y0, x0]``, ``Ib = I[y0, x1]``, ``Ic = I[y1, x0]``, ``Id = I[y1, x1]``
(each zero when its own index is outside the image) and
``out = wa*Ia + wb*Ib + wc*Ic + wd*Id`` summed in that order, real and
imaginary parts separately.

:func:`translate_window` evaluates exactly these expressions for the pixels
0 <= y < h, 0 <= x < w only.  A full-image translation is the window
(h, w) = (H, W); a PtychoPINN patch is the window (N, N) of a translation of
the padded object.  Because both evaluate the same expressions in the same
order and precision, a patch cut by the window equals, bit for bit, the corner
of the full-image translation.

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

from typing import Any, Tuple
from ptycho.errors import InputError


__all__ = ["translate_window", "window_patches"]

_INTERPOLATIONS = ("bilinear", "nearest")


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
    return xp.astype(re, cdtype) + xp.astype(im, cdtype) * xp.asarray(1j, dtype=cdtype)


#: Width of the zero border around the source (see the module docstring).
_BORDER = 2


def _zero_border(images: Any, *, xp: Any) -> Any:
    """(S, H, W) -> (S, H + 4, W + 4) with a two-pixel zero border."""
    s, h, w = images.shape
    zero_cols = xp.zeros((s, h, _BORDER), dtype=images.dtype)
    rows = xp.concat([zero_cols, images, zero_cols], axis=2)
    zero_rows = xp.zeros((s, _BORDER, w + 2 * _BORDER), dtype=images.dtype)
    return xp.concat([zero_rows, rows, zero_rows], axis=1)


def _border_index(coord: Any, shift: int, size: int, *, xp: Any) -> Any:
    """Integer-valued float ``coord`` (source pixel) -> index into the zero-bordered axis.

    ``coord - shift`` is the pixel in the unpadded source; it is clipped to
    [-2, size], so that the pixel and its successor are either both the true
    ones or both zeros of the border.  The clip happens in floating point,
    before the cast, so huge coordinates cannot overflow the integer type.
    """
    local = xp.clip(coord - shift, -_BORDER, size) if shift else xp.clip(coord, -_BORDER, size)
    return xp.astype(local, xp.int32) + _BORDER


def translate_window(
    images: Any,
    translations: Any,
    *,
    output_size: Tuple[int, int],
    xp: Any,
    interpolation: str = "bilinear",
    source_origin: Tuple[int, int] = (0, 0),
    channels: int = 1,
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
    channels : int
        c; P must be a multiple of c.  The result is laid out
        (P // c, h, w, c), translation ``b*c + k`` in ``[b, :, :, k]``, so
        channel-format callers get their final layout with no transpose.
    fma_guard : scalar array equal to 1, optional
        For compiling backends (XLA).  XLA's CPU and GPU code generators are
        allowed to contract ``a*b + c`` into a fused multiply-add, and whether
        they do depends on how a program is fused -- so the full-image
        translation and the window could round differently.  Each weighted
        corner is multiplied by this runtime 1 (opaque to the compiler):
        ``(w*I)*1`` is exact, and any contraction the compiler then makes,
        ``fma(w*I, 1, acc)``, rounds exactly like the plain sum.  The result is
        the uncontracted evaluation of the contract on every backend.

    Returns
    -------
    array, shape (P // c, h, w, c), complex64 (float32 sources) or complex128
    """
    if interpolation not in _INTERPOLATIONS:
        raise InputError(
            f"interpolation must be one of {_INTERPOLATIONS}, got {interpolation!r}"
        )
    n_src, src_h, src_w = images.shape
    n_out = translations.shape[0]
    out_h, out_w = (int(v) for v in output_size)
    groups = n_out // channels
    row_origin, col_origin = (int(v) for v in source_origin)

    real_dtype = _real_dtype_of(images.dtype, xp=xp)
    complex_dtype = _complex_dtype_of(real_dtype, xp=xp)
    if images.dtype != complex_dtype:
        images = xp.astype(images, complex_dtype)
    # Real and imaginary planes are gathered separately: a real gather feeds one
    # product each, so a compiler fuses it into the output loop; a complex gather
    # feeding both xp.real and xp.imag is materialised by XLA (TensorFlow's CPU
    # backend), one output-sized complex array per corner.
    flat_re = xp.reshape(_zero_border(xp.real(images), xp=xp), (-1,))
    flat_im = xp.reshape(_zero_border(xp.imag(images), xp=xp), (-1,))
    row_stride = src_w + 2 * _BORDER

    t = xp.astype(translations, real_dtype)
    tx = xp.reshape(t[:, 0], (groups, 1, 1, channels))
    ty = xp.reshape(t[:, 1], (groups, 1, 1, channels))
    grid_x = xp.reshape(xp.astype(xp.arange(out_w), real_dtype), (1, 1, out_w, 1))
    grid_y = xp.reshape(xp.astype(xp.arange(out_h), real_dtype), (1, out_h, 1, 1))
    # The sample coordinates of the contract, in the image's real precision.
    sx = grid_x - tx  # (G, 1, w, c)
    sy = grid_y - ty  # (G, h, 1, c)

    if n_src == 1:
        base = 0
    else:
        plane = (src_h + 2 * _BORDER) * row_stride
        base = xp.reshape(xp.arange(n_out, dtype=xp.int32) * plane, (groups, 1, 1, channels))

    def gather(first: Any, offset: int = 0) -> Tuple[Any, Any]:
        """(real, imag) of the flat bordered source at ``first + offset``, each (G, h, w, c)."""
        index = xp.reshape(first + offset if offset else first, (-1,))
        shape = (groups, out_h, out_w, channels)
        return (
            xp.reshape(xp.take(flat_re, index, axis=0), shape),
            xp.reshape(xp.take(flat_im, index, axis=0), shape),
        )

    if interpolation == "nearest":
        cols = _border_index(xp.round(sx), col_origin, src_w, xp=xp)
        rows = _border_index(xp.round(sy), row_origin, src_h, xp=xp)
        return _complex_from_parts(*gather(rows * row_stride + cols + base), xp=xp)

    x0 = xp.floor(sx)
    y0 = xp.floor(sy)
    wx = sx - x0
    wy = sy - y0
    col0 = _border_index(x0, col_origin, src_w, xp=xp)  # (G, 1, w, c)
    row0 = _border_index(y0, row_origin, src_h, xp=xp)  # (G, h, 1, c)
    # Flat index of corner a; b, c and d are +1, +row_stride, +row_stride+1.
    corner_a = row0 * row_stride + col0 + base  # (G, h, w, c)

    one_wx = 1 - wx
    one_wy = 1 - wy
    wa = one_wx * one_wy
    wb = wx * one_wy
    wc = one_wx * wy
    wd = wx * wy

    if fma_guard is None:
        def term(weight: Any, part: Any) -> Any:
            return weight * part
    else:
        one = xp.astype(fma_guard, real_dtype)

        def term(weight: Any, part: Any) -> Any:
            return (weight * part) * one

    ia_re, ia_im = gather(corner_a)
    ib_re, ib_im = gather(corner_a, 1)
    ic_re, ic_im = gather(corner_a, row_stride)
    id_re, id_im = gather(corner_a, row_stride + 1)
    out_re = term(wa, ia_re) + term(wb, ib_re) + term(wc, ic_re) + term(wd, id_re)
    out_im = term(wa, ia_im) + term(wb, ib_im) + term(wc, ic_im) + term(wd, id_im)
    return _complex_from_parts(out_re, out_im, xp=xp)


def window_patches(
    image: Any,
    positions: Any,
    patch_size: int,
    *,
    xp: Any,
    interpolation: str = "bilinear",
    channels: int = 1,
    padding: int | None = None,
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
        fma_guard=fma_guard,
    )

