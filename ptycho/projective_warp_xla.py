"""``translate_xla``: the TensorFlow/XLA translation engine.

Full-image translation (PtychoPINN's per-patch warp) and windowed translation
(``output_size``: only the top-left window of each translated image, the
translate-then-slice production path) are the same function of
:mod:`ptycho.backends.window`, compiled by XLA through
``tf.function(jit_compile=True)``.
"""

from __future__ import annotations

import functools
from typing import Any, Optional, Sequence

import numpy as np
import tensorflow as tf

from ptycho import _validate
from ptycho.backends import _tensorflow as _tf_backend
from ptycho.backends.window import translate_window

__all__ = ["translate_xla"]


@functools.lru_cache(maxsize=None)
def _compiled(interpolation: str, output_size: tuple, channels: int, jit: bool):
    def run(images: tf.Tensor, translations: tf.Tensor, fma_guard: tf.Tensor) -> tf.Tensor:
        return translate_window(
            images,
            translations,
            output_size=output_size,
            xp=_tf_backend.namespace,
            interpolation=interpolation,
            channels=channels,
            fma_guard=fma_guard,
        )

    return tf.function(run, jit_compile=True) if jit else run


def _check_images(images: Any) -> tf.Tensor:
    images = tf.convert_to_tensor(images)
    if images.shape.rank != 4:
        raise ValueError(
            f"images must be 4-D (batch, height, width, channels), got shape {tuple(images.shape)}"
        )
    if not (images.dtype.is_floating or images.dtype.is_complex or images.dtype.is_integer):
        raise TypeError(f"images must have a real or complex numeric dtype, got {images.dtype.name}")
    if images.shape[1] == 0 or images.shape[2] == 0:
        raise ValueError(f"images must have non-empty height and width, got shape {tuple(images.shape)}")
    return images


def _check_translations(translations: Any, real_dtype: tf.DType, batch: int, channels: int) -> tf.Tensor:
    t = tf.convert_to_tensor(translations)
    if t.dtype.is_complex or not (t.dtype.is_floating or t.dtype.is_integer):
        raise TypeError(f"translations must be real (tx, ty) pixels, got dtype {t.dtype.name}")
    t = tf.cast(t, real_dtype)
    if t.shape.rank != 2 or t.shape[1] != 2:
        raise ValueError(f"translations must have shape (batch, 2) holding (tx, ty), got shape {tuple(t.shape)}")
    n = t.shape[0]
    if batch not in (1, n):
        raise ValueError(
            f"images batch ({batch}) must be 1 (shared by all translations) or equal the "
            f"number of translations ({n})"
        )
    if n is not None and n % channels:
        raise ValueError(f"the number of translations ({n}) must be a multiple of channels ({channels})")
    if tf.executing_eagerly():
        _validate.finite(t.numpy(), "translations")
    return t


def translate_xla(
    images: Any,
    translations: Any,
    interpolation: str = "bilinear",
    use_jit: bool = True,
    output_size: Optional[Sequence[int]] = None,
    channels: int = 1,
) -> tf.Tensor:
    """Translate images with zero fill; optionally keep only a top-left window.

    Parameters
    ----------
    images : tensor (B, H, W, C), complex or real
        B == 1: one source shared by every translation (never tiled);
        otherwise B == number of translations.
    translations : tensor (P, 2)
        (tx, ty) in pixels: output (y, x) samples the source at (x - tx, y - ty).
    interpolation : {'bilinear', 'nearest'}
    use_jit : bool
        Compile with XLA (``tf.function(jit_compile=True)``); False runs the
        same ops eagerly (or inside the caller's graph).
    output_size : (h, w), optional
        Compute only output pixels 0 <= y < h, 0 <= x < w (default: (H, W)).
    channels : int
        With C == 1: lay the result out as (P // channels, h, w, channels),
        translation ``b*channels + k`` in channel k (PtychoPINN channel format).

    Returns
    -------
    tf.Tensor (P, h, w, C) -- or (P // channels, h, w, channels) -- of the
    input's dtype (real input gives a real result).
    """
    interpolation = _validate.interpolation(interpolation)
    channels = _validate.positive_int(channels, "channels")
    images = _check_images(images)
    batch, height, width, depth = images.shape
    if output_size is None:
        output_size = (height, width)
    out_h, out_w = (_validate.positive_int(v, "output_size") for v in output_size)
    real_input = not images.dtype.is_complex
    if images.dtype in (tf.float64, tf.complex128):
        cdtype, rdtype = tf.complex128, tf.float64
    else:
        cdtype, rdtype = tf.complex64, tf.float32
    t = _check_translations(translations, rdtype, batch, channels)
    if depth != 1 and channels != 1:
        raise ValueError(f"channels={channels} needs single-channel images, got {depth} channels")
    n = t.shape[0]
    if n == 0:
        shape = (0, out_h, out_w, depth if channels == 1 else channels)
        return tf.zeros(shape, dtype=rdtype if real_input else cdtype)

    fn = _compiled(interpolation, (out_h, out_w), channels, bool(use_jit))
    guard = _tf_backend.fma_guard() if use_jit else None
    planes = []
    for ch in range(depth):
        source = tf.cast(images[..., ch], cdtype)  # (B, H, W)
        planes.append(fn(source, t, guard))  # (P // channels, h, w, channels)
    out = planes[0] if depth == 1 else tf.concat(planes, axis=-1)
    if real_input:
        out = tf.math.real(out)
        if out.dtype != images.dtype and images.dtype.is_floating:
            out = tf.cast(out, images.dtype)
    return out
