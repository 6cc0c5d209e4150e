"""``translate_xla``: the TensorFlow/XLA translation engine.

Full-image translation (PtychoPINN's per-patch warp) and windowed translation
(``output_size``: only the top-left window of each translated image, the
translate-then-slice production path) are the same function of
:mod:`ptycho.backends.window`, compiled by XLA through
``tf.function(jit_compile=True)``.
"""

from __future__ import annotations

import functools
from typing import Any, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from ptycho.errors import InputError, InputTypeError
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


def _to_tensor(value: Any, name: str, expected: str) -> tf.Tensor:
    """``tf.convert_to_tensor`` with an error that names the argument."""
    if value is None:
        raise InputTypeError(f"{name} must be {expected}, got None")
    try:
        return tf.convert_to_tensor(value)
    except (TypeError, ValueError) as exc:
        raise InputTypeError(f"{name} must be {expected}, got {_validate.describe(value)}") from exc


def _check_images(images: Any, name: str = "images") -> tf.Tensor:
    images = _to_tensor(images, name, "a 4-D numeric tensor (batch, height, width, channels)")
    if images.shape.rank != 4:
        raise InputError(
            f"{name} must be 4-D (batch, height, width, channels), got shape {tuple(images.shape)}"
        )
    if not (images.dtype.is_floating or images.dtype.is_complex or images.dtype.is_integer):
        raise InputTypeError(f"{name} must have a real or complex numeric dtype, got {images.dtype.name}")
    if images.shape[1] == 0 or images.shape[2] == 0:
        raise InputError(f"{name} must have non-empty height and width, got shape {tuple(images.shape)}")
    return images


def _check_translations(
    translations: Any,
    real_dtype: tf.DType,
    batch: Optional[int],
    channels: int,
    name: str = "translations",
    images_name: str = "images",
) -> tf.Tensor:
    t = _to_tensor(translations, name, "a real tensor of shape (batch, 2) holding (tx, ty)")
    if t.dtype.is_complex or not (t.dtype.is_floating or t.dtype.is_integer):
        raise InputTypeError(f"{name} must be real (tx, ty) pixels, got dtype {t.dtype.name}")
    if t.shape.rank != 2 or t.shape[1] != 2:
        raise InputError(f"{name} must have shape (batch, 2) holding (tx, ty), got shape {tuple(t.shape)}")
    if tf.executing_eagerly():
        # checked before the cast, so the message shows the value the caller passed
        _validate.finite(t.numpy(), name, dtype=real_dtype.as_numpy_dtype)
    t = tf.cast(t, real_dtype)
    n = t.shape[0]
    # inside a traced graph either size may be unknown (None): check only known sizes
    if batch is not None and n is not None and batch not in (1, n):
        raise InputError(
            f"{images_name} batch ({batch}) must be 1 (shared by all translations) or equal the "
            f"number of {name} ({n})"
        )
    if n is not None and n % channels:
        raise InputError(
            f"{name}: the number of translations must be a multiple of channels = {channels}, "
            f"got {n} translations"
        )
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
    return _translate(images, translations, interpolation, use_jit, output_size, channels)


def _translate(
    images: Any,
    translations: Any,
    interpolation: str,
    use_jit: bool,
    output_size: Optional[Sequence[int]],
    channels: int,
    names: Tuple[str, str] = ("images", "translations"),
) -> tf.Tensor:
    """:func:`translate_xla`; ``names`` are the caller's names of the two arrays for messages."""
    interpolation = _validate.interpolation(interpolation)
    channels = _validate.positive_int(channels, "channels")
    use_jit = _validate.flag(use_jit, "use_jit")
    images = _check_images(images, names[0])
    batch, height, width, depth = images.shape
    if output_size is None:
        output_size = (height, width)
    out_h, out_w = _validate.size_pair(output_size, "output_size")
    real_input = not images.dtype.is_complex
    if images.dtype in (tf.float64, tf.complex128):
        cdtype, rdtype = tf.complex128, tf.float64
    else:
        cdtype, rdtype = tf.complex64, tf.float32
    t = _check_translations(translations, rdtype, batch, channels, name=names[1], images_name=names[0])
    if depth != 1 and channels != 1:
        raise InputError(f"channels={channels} needs single-channel {names[0]}, got {depth} channels")
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
