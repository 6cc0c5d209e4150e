"""The general projective warp (homography): one algorithm for every backend.

Written once against the Python array API, like :mod:`ptycho.backends.window`
(whose stencil conventions it shares); ``xp`` is ``array_api_compat.numpy``,
``jax.numpy`` or the TensorFlow adapter of :mod:`ptycho.backends._tensorflow`.
A warp that is not a translation moves every output pixel by a different
amount, so there is no window to slice: every output pixel is computed.

The contract (PtychoPINN's ``projective_warp_xla``, TensorFlow Addons'
convention: the matrix maps *output* pixels to *source* points).  For image b
with the 3x3 matrix ``M``, output pixel (y, x) -- x the column, y the row --
samples the source at

    u = m00*x + m01*y + m02,   v = m10*x + m11*y + m12,   w = m20*x + m21*y + m22,
    sx = u / w,   sy = v / w

computed in the image's real precision (float32 for float32/complex64 images,
float64 for float64/complex128).

- ``interpolation='bilinear'``: ``x0 = floor(sx)``, ``wx = sx - x0`` (likewise
  y), corners ``Ia = I[y0, x0]``, ``Ib = I[y0, x0+1]``, ``Ic = I[y0+1, x0]``,
  ``Id = I[y0+1, x0+1]``, weights ``wa = (1-wx)(1-wy)``, ``wb = wx(1-wy)``,
  ``wc = (1-wx)wy``, ``wd = wx*wy``; real and imaginary parts separately.
- ``interpolation='nearest'``: the pixel at ``(round(sy), round(sx))``, half to even.
- ``fill_mode='edge'``: every corner index is clipped into the image (the
  border pixels repeat outwards).
- ``fill_mode='zeros'`` / ``'constant'``: a bilinear corner outside the image
  reads 0 / ``fill_value``; a *nearest* sample reads it when the sample point
  itself lies outside ``[0, W-1] x [0, H-1]`` (PtychoPINN tests the point,
  not the rounded index: a point half a pixel outside reads the fill).

Two evaluation orders, as for the translation (:data:`ptycho.backends.window.EVALUATIONS`):

- ``'plain'`` -- PtychoPINN's eager ``projective_warp_xla``: ``u = (m00*x + m01*y) + m02``
  (likewise v, w) and ``wa*Ia + wb*Ib + wc*Ic + wd*Id``, every operation rounded.
- ``'compiled'`` -- PtychoPINN's ``projective_warp_xla_jit``, whose products XLA
  contracts into fused multiply-adds.  Measured to the bit against it (TF 2.21,
  XLA CPU, float32 and float64, general matrices): ``u = fma(m00, x, m01*y) + m02``
  (likewise v, w); the bilinear sum ``fma(wd, Id, fma(wc, Ic, fma(wa, Ia, wb*Ib)))``
  with zero fill -- the translation's compiled order -- and with edge fill of
  several channels, but ``fma(wd, Id, fma(wc, Ic, fma(wb, Ib, wa*Ia)))`` with
  edge fill of one channel (XLA fuses that program differently).  The fused
  multiply-adds are the exact emulation of :mod:`ptycho.backends.rounding`,
  never a compiler's choice; ``tests/data/ptychopinn_projective_v1.npz`` holds
  PtychoPINN's results these orders reproduce.  Complex images: each part in
  the real order (PtychoPINN's ``translate_xla`` warps the parts separately;
  its ``projective_warp_xla_jit`` of a complex image multiplies complex
  weights, which XLA contracts otherwise).

A pure translation ``[[1, 0, -tx], [0, 1, -ty], [0, 0, 1]]`` gives
``u = x - tx`` and ``w = 1`` exactly in both orders: with zero fill and
bilinear interpolation it is :func:`ptycho.backends.window.translate_window`,
bit for bit.

A sample point that is not a number (``u = w = 0``: the matrix sends the
pixel to the line at infinity) gives NaN, except in nearest interpolation
with a fill, which reads the fill (PtychoPINN's mask).
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from ptycho import _validate
from ptycho.backends._dispatch import (
    compile_job,
    get_backend,
    home,
    native_dtype,
    resolve,
    to_working,
)
from ptycho.backends.placement import divide
from ptycho.backends.rounding import fma
from ptycho.backends.window import (
    BORDER,
    EVALUATIONS,
    INTERPOLATIONS,
    _complex_from_parts,
    _index_dtype,
    _on,
    _real_dtype_of,
    weighted_sum,
)
from ptycho.errors import InputError, InputTypeError

__all__ = [
    "FILL_MODES",
    "params_to_matrices",
    "warp",
    "projective_job",
    "projective_warp",
]

#: ``'edge'``: clip to the border pixels; ``'zeros'``: zero outside; ``'constant'``: ``fill_value`` outside.
FILL_MODES = ("edge", "zeros", "constant")


def params_to_matrices(params: Any, *, xp: Any) -> Any:
    """TensorFlow Addons' 8-parameter transforms (B, 8) -> 3x3 matrices (B, 3, 3).

    ``[a0, a1, a2, b0, b1, b2, c0, c1]`` is ``[[a0, a1, a2], [b0, b1, b2], [c0, c1, 1]]``,
    in the parameters' dtype.
    """
    count = params.shape[0]
    ones = xp.astype(params[:, 7:8] * 0 + 1, params.dtype)  # 1 with the params' dtype and device
    return xp.reshape(xp.concat([params, ones], axis=1), (count, 3, 3))


def _sample_points(
    matrices: Any, height: int, width: int, *, evaluation: str, xp: Any, one: Any
) -> Tuple[Any, Any]:
    """``(sx, sy)``, each (Bm, H, W, 1): where each output pixel samples its source."""
    real = matrices.dtype
    count = matrices.shape[0]
    grid_x = xp.reshape(xp.astype(xp.arange(width, **_on(matrices, xp)), real), (1, 1, width, 1))
    grid_y = xp.reshape(xp.astype(xp.arange(height, **_on(matrices, xp)), real), (1, height, 1, 1))

    def row(r: int) -> Any:
        m_x, m_y, m_1 = (xp.reshape(matrices[:, r, k], (count, 1, 1, 1)) for k in range(3))
        if evaluation == "compiled":
            m_yy = m_y * grid_y if one is None else (m_y * grid_y) * one
            return fma(m_x, grid_x, m_yy, xp=xp, one=one) + m_1
        if one is None:
            return m_x * grid_x + m_y * grid_y + m_1
        # a compiler may not contract the products into the sums: the opaque 1 keeps them rounded
        return (m_x * grid_x) * one + (m_y * grid_y) * one + m_1

    u, v, w = row(0), row(1), row(2)
    return divide(u, w, xp=xp, one=one), divide(v, w, xp=xp, one=one)


def _not_nan_or_zero(coord: Any, *, xp: Any) -> Any:
    """``coord`` with NaN replaced by 0: a safe index (the value is made NaN elsewhere)."""
    return xp.where(xp.isnan(coord), xp.full_like(coord, 0), coord)


def _bordered(plane: Any, fill: float, *, xp: Any) -> Any:
    """(B, H, W, C) -> (B, H + 2*BORDER, W + 2*BORDER, C) with a border of ``fill``."""
    b, h, w, c = plane.shape
    side = xp.zeros((b, h, BORDER, c), dtype=plane.dtype, **_on(plane, xp)) + fill
    rows = xp.concat([side, plane, side], axis=2)
    top = xp.zeros((b, BORDER, w + 2 * BORDER, c), dtype=plane.dtype, **_on(plane, xp)) + fill
    return xp.concat([top, rows, top], axis=1)


def warp(
    images: Any,
    matrices: Any,
    *,
    xp: Any,
    interpolation: str = "bilinear",
    fill_mode: str = "edge",
    fill_value: Any = 0.0,
    evaluation: str = "compiled",
    fma_guard: Any = None,
) -> Any:
    """Warp each image by its 3x3 matrix (module docstring: the contract).

    Parameters
    ----------
    images : array (B, H, W, C)
        float32, float64, complex64 or complex128.
    matrices : array (Bm, 3, 3), real
        Output pixel -> source point; cast to the images' real dtype.
        ``Bm == B``, or either is 1 (broadcast: one matrix for every image, or
        one image under every matrix -- never tiled).
    xp : namespace
        Array namespace of the inputs (keyword-only, required).
    interpolation : {'bilinear', 'nearest'}
    fill_mode : {'edge', 'zeros', 'constant'}
    fill_value : float or complex
        The value outside the image for ``'constant'`` (a Python number).
    evaluation : {'compiled', 'plain'}
    fma_guard : scalar array equal to 1, optional
        For compiling backends; see :func:`ptycho.backends.window.weighted_sum`.

    Returns
    -------
    array (max(B, Bm), H, W, C) of the images' dtype.
    """
    if interpolation not in INTERPOLATIONS:
        raise InputError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    if fill_mode not in FILL_MODES:
        raise InputError(f"fill_mode must be one of {FILL_MODES}, got {fill_mode!r}")
    if evaluation not in EVALUATIONS:
        raise InputError(f"evaluation must be one of {EVALUATIONS}, got {evaluation!r}")
    n_img, height, width, depth = (int(v) for v in images.shape)
    n_mat = int(matrices.shape[0])
    count = max(n_img, n_mat)
    real = _real_dtype_of(images.dtype, xp=xp)
    is_complex = images.dtype != real
    one = None if fma_guard is None else xp.astype(fma_guard, real)
    fill = 0.0 if fill_mode == "zeros" else complex(fill_value)
    planes = [xp.real(images), xp.imag(images)] if is_complex else [images]
    fills = [fill.real, fill.imag] if is_complex else [fill.real]

    sx, sy = _sample_points(
        xp.astype(matrices, real), height, width, evaluation=evaluation, xp=xp, one=one
    )

    def flat_index(rows: Any, cols: Any, src_h: int, src_w: int) -> Any:
        """Integer-valued float pixels (.., H, W, 1) -> flat indices (count, H, W, C) into the
        sources (n_img, src_h, src_w, C), flattened."""
        dtype = _index_dtype(n_img * src_h * src_w * depth, xp=xp)
        index = xp.astype(rows, dtype) * src_w + xp.astype(cols, dtype)
        if n_img != 1:
            base = xp.arange(n_img, dtype=dtype, **_on(matrices, xp)) * (src_h * src_w)
            index = index + xp.reshape(base, (n_img, 1, 1, 1))
        if depth != 1:
            channel = xp.reshape(xp.arange(depth, dtype=dtype, **_on(matrices, xp)), (1, 1, 1, depth))
            index = index * depth + channel
        return index  # (count, ...): the matrices' batch, or the images' through ``base``

    def gather(flat_planes: list, index: Any) -> list:
        flat = xp.reshape(index, (-1,))
        shape = (count, height, width, depth)
        return [xp.reshape(xp.take(p, flat, axis=0), shape) for p in flat_planes]

    if interpolation == "nearest":
        rx = _not_nan_or_zero(xp.round(sx), xp=xp)
        ry = _not_nan_or_zero(xp.round(sy), xp=xp)
        cols = xp.clip(rx, 0, width - 1)
        rows = xp.clip(ry, 0, height - 1)
        index = flat_index(rows, cols, height, width)
        values = gather([xp.reshape(p, (-1,)) for p in planes], index)
        if fill_mode == "edge":
            lost = xp.isnan(sx) | xp.isnan(sy)
            values = [xp.where(lost, xp.full_like(sx, float("nan")), v) for v in values]
        else:
            inside = (sx >= 0) & (sx <= width - 1) & (sy >= 0) & (sy <= height - 1)
            values = [xp.where(inside, v, xp.full_like(v, f)) for v, f in zip(values, fills)]
    else:
        x0 = xp.floor(sx)
        y0 = xp.floor(sy)
        wx = sx - x0
        wy = sy - y0
        one_wx = 1 - wx
        one_wy = 1 - wy
        weights = (one_wx * one_wy, wx * one_wy, one_wx * wy, wx * wy)
        x0 = _not_nan_or_zero(x0, xp=xp)
        y0 = _not_nan_or_zero(y0, xp=xp)
        if fill_mode == "edge":
            col0, col1 = xp.clip(x0, 0, width - 1), xp.clip(x0 + 1, 0, width - 1)
            row0, row1 = xp.clip(y0, 0, height - 1), xp.clip(y0 + 1, 0, height - 1)
            sources = [xp.reshape(p, (-1,)) for p in planes]
            src_h, src_w = height, width
        else:
            # corners outside the image read the border (window.py's zero-border trick): the
            # first corner is clipped into [-BORDER, size], the second is always its neighbour
            col0 = xp.clip(x0, -BORDER, width) + BORDER
            row0 = xp.clip(y0, -BORDER, height) + BORDER
            col1, row1 = col0 + 1, row0 + 1
            sources = [xp.reshape(_bordered(p, f, xp=xp), (-1,)) for p, f in zip(planes, fills)]
            src_h, src_w = height + 2 * BORDER, width + 2 * BORDER
        corners = [
            gather(sources, flat_index(r, c, src_h, src_w))
            for r, c in ((row0, col0), (row0, col1), (row1, col0), (row1, col1))
        ]
        values = []
        for part in range(len(planes)):
            ia, ib, ic, id_ = (corner[part] for corner in corners)
            if fill_mode == "edge" and evaluation == "compiled" and depth == 1:
                # XLA's contraction of PtychoPINN's one-channel edge program starts with wb*Ib
                # (module docstring).
                w_ab, i_ab = (weights[1], weights[0]) + weights[2:], (ib, ia, ic, id_)
            else:
                w_ab, i_ab = weights, (ia, ib, ic, id_)
            values.append(weighted_sum(w_ab, i_ab, evaluation=evaluation, xp=xp, fma_guard=one))
    if is_complex:
        return _complex_from_parts(values[0], values[1], xp=xp)
    return values[0]


def projective_job(images: Any, matrices: Any, fma_guard: Any, *, xp: Any, **static: Any) -> Any:
    """:func:`warp` as a job of :func:`ptycho.backends.compile_job` (arrays positional)."""
    return warp(images, matrices, xp=xp, fma_guard=fma_guard, **static)


# ---------------------------------------------------------------------------
# The public entry
# ---------------------------------------------------------------------------


def fill_mode_of(value: Any) -> str:
    if not isinstance(value, str) or value not in FILL_MODES:
        raise InputError(f"fill_mode must be one of {FILL_MODES}, got {value!r}")
    return value


def fill_value_of(value: Any, complex_images: bool) -> complex:
    """A finite Python number; complex only for complex images."""
    import numbers

    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Number):
        raise InputTypeError(f"fill_value must be a number, got {_validate.describe(value)}")
    number = complex(value)
    if not (np.isfinite(number.real) and np.isfinite(number.imag)):
        raise InputError(f"fill_value must be finite, got {value!r}")
    if number.imag and not complex_images:
        raise InputTypeError(f"fill_value {value!r} is complex, but the images are real")
    return number


def _matrices_of(transforms: Any, mod: Any, real: np.dtype, device: Any, name: str) -> Any:
    """(B, 8) parameters or (B, 3, 3) matrices -> native (B, 3, 3) matrices of dtype ``real``."""
    expected = "a real array of shape (B, 8) (TensorFlow Addons parameters) or (B, 3, 3) (matrices)"
    if transforms is None:
        raise InputTypeError(f"{name} must be {expected}, got None")
    native = mod.is_native(transforms) and not isinstance(transforms, np.ndarray)
    if not native:
        transforms = _validate.to_numpy(transforms, name)
    dtype = native_dtype(transforms)
    if dtype.kind not in "iuf":
        raise InputTypeError(f"{name} must be {expected}, got dtype {dtype}")
    shape = tuple(transforms.shape)
    if not (len(shape) == 2 and shape[1] == 8) and not (len(shape) == 3 and shape[1:] == (3, 3)):
        raise InputError(f"{name} must be {expected}, got shape {shape}")
    if native:
        cast = mod.namespace.astype(transforms, getattr(mod.namespace, real.name))
        if mod.all_finite(cast) is False:
            _validate.finite(mod.to_numpy(transforms), name, dtype=real)
            _validate.finite(mod.to_numpy(cast), name)
    else:
        _validate.finite(transforms, name, dtype=real)
        cast = mod.asarray(transforms.astype(real), device=device)
    if len(shape) == 2:
        with mod.on_device(device):
            cast = params_to_matrices(cast, xp=mod.namespace)
    return cast


def projective_warp(
    images: Any,
    transforms: Any,
    *,
    interpolation: str = "bilinear",
    fill_mode: str = "edge",
    fill_value: Any = 0.0,
    evaluation: str = "compiled",
    backend: Optional[str] = None,
    jit: bool = True,
    names: Tuple[str, str] = ("images", "transforms"),
) -> Any:
    """Projective warp of NHWC images on any backend (module docstring: the contract).

    Parameters
    ----------
    images : array (B, H, W, C), real or complex
        float64 and complex128 compute in float64, every other numeric dtype
        in float32; the result has the images' dtype (integers truncated, as
        ``tf.cast``).
    transforms : array (Bm, 3, 3) or (Bm, 8)
        Matrices mapping output pixels to source points, or TensorFlow Addons'
        8 parameters ``[a0, a1, a2, b0, b1, b2, c0, c1]``; real, finite.
        ``Bm == B``, or ``Bm == 1`` (one transform for every image), or
        ``B == 1`` (one image under every transform; never tiled).
    interpolation : {'bilinear', 'nearest'}
    fill_mode : {'edge', 'zeros', 'constant'}
        Outside the image: the nearest border pixel, zero, or ``fill_value``.
    fill_value : number
        Used by ``'constant'``; complex only for complex images.
    evaluation : {'compiled', 'plain'}
        PtychoPINN's ``projective_warp_xla_jit`` bits or its eager ``projective_warp_xla`` bits.
    backend : {'numpy', 'jax', 'tensorflow'}, optional
        Default: the owner of ``images``' array type.
    jit : bool
        False: run the same operations without compiling.
    names : (str, str)
        The caller's names of the two arrays, for error messages.

    Returns
    -------
    array (max(B, Bm), H, W, C) of the images' dtype, the backend's native type,
    on the images' device.
    """
    images_name, transforms_name = names
    interpolation = _validate.interpolation(interpolation)
    evaluation = _validate.evaluation(evaluation)
    fill_mode = fill_mode_of(fill_mode)
    jit = _validate.flag(jit, "jit")
    if images is None:
        raise InputTypeError(f"{images_name} must be a 4-D array (B, H, W, C), got None")
    name = resolve(images, backend)
    if name is None:
        raise InputTypeError(
            f"{images_name}: projective_warp runs on NumPy, JAX or TensorFlow arrays, "
            f"got {type(images).__name__}"
        )
    mod = get_backend(name)
    native = mod.is_native(images) and not isinstance(images, np.ndarray)
    if not native:
        images = _validate.to_numpy(images, images_name)
    dtype = native_dtype(images)
    if dtype.kind not in "iufc":
        raise InputTypeError(f"{images_name} must have a real or complex numeric dtype, got dtype {dtype}")
    shape = tuple(images.shape)
    if len(shape) != 4:
        raise InputError(f"{images_name} must be 4-D (batch, height, width, channels), got shape {shape}")
    if any(v is None for v in shape):
        raise InputError(f"{images_name} needs a static shape (batch, height, width, channels), got {shape}")
    if shape[1] == 0 or shape[2] == 0:
        raise InputError(f"{images_name} must have non-empty height and width, got shape {shape}")
    complex_dtype, real_dtype = _validate.working_dtypes(dtype)
    is_complex = dtype.kind == "c"
    fill = fill_value_of(fill_value, is_complex)
    if fill_mode != "constant" and fill != 0:
        raise InputError(f"fill_value={fill_value!r} needs fill_mode='constant', got fill_mode={fill_mode!r}")
    device = home(mod, images, transforms)
    with mod.precision(complex_dtype):
        matrices = _matrices_of(transforms, mod, real_dtype, device, transforms_name)
        n_img, n_mat = shape[0], matrices.shape[0]
        if n_mat is None:
            raise InputError(f"{transforms_name} needs a static batch size, got shape {tuple(matrices.shape)}")
        if n_img != n_mat and 1 not in (n_img, n_mat):
            raise InputError(
                f"{images_name} batch ({n_img}) and {transforms_name} batch ({n_mat}) must be equal, "
                "or one of them 1 (broadcast)"
            )
        count = max(n_img, n_mat)
        work = complex_dtype if is_complex else real_dtype
        if count == 0 or n_img == 0 or n_mat == 0:
            empty = np.zeros((0,) + shape[1:], dtype=dtype)
            return mod.asarray(empty, device=device)
        img = to_working(mod, images, native, work, device)
        fill_static = 0.0 if fill_mode != "constant" else (fill if is_complex else fill.real)
        static = dict(interpolation=interpolation, fill_mode=fill_mode, fill_value=fill_static,
                      evaluation=evaluation)
        fn = compile_job(name, projective_job, jit=jit, **static)
        with mod.on_device(device if native else mod.device_of(img)):
            out = fn(img, matrices, mod.fma_guard(device))
            if dtype != work:
                out = mod.namespace.astype(out, dtype)
    return out
