"""TensorFlow helpers with PtychoPINN's names: padding, channel/flat layout, translation.

Layouts (PtychoPINN conventions):
- channel format: (B, N, N, c), c = gridsize**2 patches per group;
- flat format: (B*c, N, N, 1), flat index ``b*c + k`` for group b, channel k.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import tensorflow as tf

from ptycho.errors import InputError, InputTypeError
from ptycho import _validate, params
from ptycho.projective_warp_xla import _check_images, _check_translations, _to_tensor
from ptycho.projective_warp_xla import _translate as _translate_xla_named

__all__ = ["pad", "_channel_to_flat", "_flat_to_channel", "translate", "translate_core"]


def pad(imgs: Any, size: int) -> tf.Tensor:
    """Zero-pad (B, H, W, C) images by ``size`` pixels on every side of H and W."""
    size = _validate.non_negative_int(size, "size")
    imgs = _to_tensor(imgs, "imgs", "a 4-D tensor (B, H, W, C)")
    if imgs.shape.rank != 4:
        raise InputError(f"imgs must be 4-D (B, H, W, C), got shape {tuple(imgs.shape)}")
    return tf.pad(imgs, [[0, 0], [size, size], [size, size], [0, 0]])


def _channel_to_flat(img: Any) -> tf.Tensor:
    """(B, H, W, c) -> (B*c, H, W, 1); channel k of group b becomes row ``b*c + k``."""
    img = _to_tensor(img, "img", "a 4-D tensor (B, H, W, c)")
    if img.shape.rank != 4:
        raise InputError(f"img must be 4-D (B, H, W, c), got shape {tuple(img.shape)}")
    _, h, w, c = img.shape
    return tf.reshape(tf.transpose(img, [0, 3, 1, 2]), (-1, h, w, 1))


def _flat_to_channel(img: Any, N: Optional[int] = None, gridsize: Optional[int] = None) -> tf.Tensor:
    """(B*c, H, W, 1) -> (B, H, W, c), c = gridsize**2 (default ``params['gridsize']``)."""
    img = _to_tensor(img, "img", "a 4-D tensor (B*c, H, W, 1)")
    if img.shape.rank != 4 or img.shape[-1] != 1:
        raise InputError(f"img must be (B*c, H, W, 1), got shape {tuple(img.shape)}")
    g = params.get("gridsize") if gridsize is None else gridsize
    c = _validate.positive_int(g, "gridsize") ** 2
    _, h, w, _ = img.shape
    if img.shape[0] is not None and img.shape[0] % c:
        raise InputError(f"img batch ({img.shape[0]}) is not a multiple of gridsize**2 = {c}")
    return tf.transpose(tf.reshape(img, (-1, c, h, w)), [0, 2, 3, 1])


def translate(
    imgs: Any,
    offsets: Any,
    interpolation: str = "bilinear",
    output_size: Optional[Sequence[int]] = None,
    use_jit: bool = True,
    channels: int = 1,
    **kwargs: Any,
) -> tf.Tensor:
    """Translate (B, H, W, C) images by (P, 2) offsets (tx, ty), zero fill.

    Output (y, x) samples the input at (x - tx, y - ty).  With ``output_size``
    only that top-left window is computed (translate-then-slice); a batch-1
    image is shared by all P offsets without tiling.  Differentiable with
    respect to ``imgs`` and ``offsets``.  See
    :func:`ptycho.projective_warp_xla.translate_xla` for the parameters;
    PtychoPINN's ``use_xla_translate`` keyword is accepted (XLA is always used
    unless ``use_jit=False``).
    """
    kwargs.pop("use_xla_translate", None)
    if kwargs:
        raise InputTypeError(f"translate() got unexpected keyword arguments {sorted(kwargs)}")
    # translate_xla's engine, with this function's argument names in its messages
    return _translate_xla_named(
        imgs, offsets, interpolation, use_jit, output_size, channels, names=("imgs", "offsets"),
    )


def translate_core(images: Any, translations: Any, interpolation: str = "bilinear") -> tf.Tensor:
    """Full-image translation through TensorFlow's native ImageProjectiveTransformV3.

    PtychoPINN's non-XLA path, kept as an independent implementation: same
    zero-fill semantics, a different evaluation order, so it agrees with
    :func:`translate` to float rounding, not bit for bit.
    """
    interpolation = _validate.interpolation(interpolation)
    images = _check_images(images, "images")
    real_dtype = tf.float64 if images.dtype in (tf.float64, tf.complex128) else tf.float32
    # ImageProjectiveTransformV3 takes float32 transforms, whatever the image precision
    t = _check_translations(translations, tf.float32, images.shape[0], 1, name="translations")
    n = tf.shape(t)[0]
    one, zero = tf.ones([n], tf.float32), tf.zeros([n], tf.float32)
    # maps output (x, y) to input (x - tx, y - ty)
    transforms = tf.stack([one, zero, -t[:, 0], zero, one, -t[:, 1], zero, zero], axis=1)
    if images.shape[0] == 1:
        images = tf.repeat(images, n, axis=0)
    out_shape = tf.shape(images)[1:3]

    def warp(x: tf.Tensor) -> tf.Tensor:
        return tf.raw_ops.ImageProjectiveTransformV3(
            images=tf.cast(x, real_dtype), transforms=transforms, output_shape=out_shape,
            fill_value=0.0, interpolation=interpolation.upper(), fill_mode="CONSTANT",
        )

    if images.dtype.is_complex:
        return tf.complex(warp(tf.math.real(images)), warp(tf.math.imag(images)))
    return warp(images)
