"""PtychoPINN's ``ptycho.projective_warp_xla``: thin TensorFlow wrappers over the engine.

- :func:`translate_xla` -- full-image translation (PtychoPINN's per-patch warp)
  and windowed translation (``output_size``: only the top-left window of each
  translated image, the translate-then-slice production path) are the same
  function of :mod:`ptycho.backends.window`, compiled by XLA through
  ``tf.function(jit_compile=True)`` (:func:`ptycho.backends.translate_validated`).
- :func:`projective_warp_xla`, :func:`projective_warp_xla_jit` -- the general
  projective warp of :mod:`ptycho.backends.projective` (every output pixel
  computed), eager and compiled.
- :func:`tfa_params_to_3x3` -- TensorFlow Addons' 8 parameters to 3x3 matrices.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import tensorflow as tf

from ptycho.backends import _tensorflow as _tf
from ptycho.backends import projective as _projective
from ptycho.errors import InputError, InputTypeError

__all__ = ["translate_xla", "projective_warp_xla", "projective_warp_xla_jit", "tfa_params_to_3x3"]


def tfa_params_to_3x3(params: Any) -> tf.Tensor:
    """TensorFlow Addons' projective transforms (B, 8) -> 3x3 matrices (B, 3, 3).

    ``[a0, a1, a2, b0, b1, b2, c0, c1]`` becomes ``[[a0, a1, a2], [b0, b1, b2], [c0, c1, 1]]``:
    output pixel (x, y) samples the source at ``((a0 x + a1 y + a2) / k, (b0 x + b1 y + b2) / k)``,
    ``k = c0 x + c1 y + 1``.  The result keeps the parameters' (floating) dtype.
    """
    expected = "a real tensor of shape (B, 8) (TensorFlow Addons transforms)"
    t = _tf.to_tensor(params, "params", expected)
    if not t.dtype.is_floating:
        if not t.dtype.is_integer or t.dtype == tf.bool:
            raise InputTypeError(f"params must be {expected}, got dtype {t.dtype.name}")
        t = tf.cast(t, tf.float32)
    if t.shape.rank != 2 or t.shape[1] != 8:
        raise InputError(f"params must be {expected}, got shape {tuple(t.shape)}")
    with _tf.on_device(_tf.device_of(t)):
        return _projective.params_to_matrices(t, xp=_tf.namespace)


def _warp(images: Any, transforms: Any, jit: bool, interpolation: str, fill_mode: str, fill_value: Any,
          evaluation: Optional[str]) -> tf.Tensor:
    from ptycho.backends.projective import projective_warp

    if evaluation is None:
        evaluation = "compiled" if jit else "plain"
    bfloat16 = getattr(images, "dtype", None) == tf.bfloat16
    if bfloat16:  # no NumPy dtype of its own: computed in float32, as PtychoPINN does
        images = tf.cast(images, tf.float32)
    out = projective_warp(images, transforms, interpolation=interpolation, fill_mode=fill_mode,
                          fill_value=fill_value, evaluation=evaluation, backend="tensorflow", jit=jit)
    return tf.cast(out, tf.bfloat16) if bfloat16 else out


def projective_warp_xla(
    images: Any,
    transforms: Any,
    *,
    interpolation: str = "bilinear",
    fill_mode: str = "edge",
    fill_value: Any = 0.0,
    evaluation: Optional[str] = None,
) -> tf.Tensor:
    """Projective warp (homography) of NHWC images, run eagerly (or in the caller's graph).

    Output pixel (x, y) of image b samples the source at ``(u / w, v / w)``,
    ``(u, v, w) = M[b] @ (x, y, 1)`` (TensorFlow Addons' convention); see
    :mod:`ptycho.backends.projective` for the exact arithmetic.

    Parameters
    ----------
    images : tensor (B, H, W, C)
        float32, float64, complex64, complex128 (float64 and complex128 in
        float64, the rest in float32); integers, float16 and bfloat16 are
        computed in float32 and cast back.
    transforms : tensor (Bm, 3, 3) or (Bm, 8)
        Matrices, or TensorFlow Addons' 8 parameters (:func:`tfa_params_to_3x3`).
        ``Bm == B`` or ``Bm == 1`` (one transform for every image); ``B == 1``
        warps the one image by every transform (never tiled).
    interpolation : {'bilinear', 'nearest'}
    fill_mode : {'edge', 'zeros', 'constant'}
        Outside the image: the nearest border pixel, zero, or ``fill_value``.
    fill_value : number
        For ``fill_mode='constant'``.
    evaluation : {'compiled', 'plain'}, optional
        Default ``'plain'``: the bits of PtychoPINN's eager ``projective_warp_xla``.

    Returns
    -------
    tf.Tensor (max(B, Bm), H, W, C) of the images' dtype.
    """
    return _warp(images, transforms, False, interpolation, fill_mode, fill_value, evaluation)


def projective_warp_xla_jit(
    images: Any,
    transforms: Any,
    interpolation: str = "bilinear",
    fill_mode: str = "edge",
    fill_value: Any = 0.0,
    evaluation: Optional[str] = None,
) -> tf.Tensor:
    """:func:`projective_warp_xla` compiled by XLA (``tf.function(jit_compile=True)``).

    ``evaluation`` defaults to ``'compiled'``: the bits of PtychoPINN's
    ``projective_warp_xla_jit`` (its fused multiply-adds, emulated exactly).
    One program per (shape, dtype, interpolation, fill_mode, fill_value).
    """
    return _warp(images, transforms, True, interpolation, fill_mode, fill_value, evaluation)


def _static_shape(x: Any) -> Optional[tuple]:
    """The shape of a tensor or array-like (None entries: unknown sizes); None if it has none."""
    try:
        return tuple(x.shape) if hasattr(x, "shape") else tuple(np.shape(x))
    except (TypeError, ValueError):  # unknown rank, ragged nesting: the checks say so later
        return None


def _broadcast_translations(images: Any, translations: Any) -> Any:
    """PtychoPINN's broadcast of fewer translations than images: image i gets translation i % n.

    With gridsize > 1 PtychoPINN flattens images (b, N, N, c) to (b*c, N, N, 1)
    and may pass the b translations unflattened; its ``translate_xla`` gathers
    translation ``i % b`` for image i (not ``i // c``).  Applied when both batch
    sizes are known and the image batch is a multiple of the translation count
    (> 1 and different); anything else is left to the checks of ``translate_4d``.
    """
    shape_i, shape_t = _static_shape(images), _static_shape(translations)
    if shape_i is None or shape_t is None or len(shape_i) != 4 or len(shape_t) != 2 or shape_t[1] != 2:
        return translations
    batch, count = shape_i[0], shape_t[0]
    if batch is None or count is None or batch in (1, count) or count == 0:
        return translations
    if count > batch or batch % count:
        raise InputError(
            f"images batch ({batch}) must be 1 (one image under every translation), equal the number "
            f"of translations ({count}), or be a multiple of it (PtychoPINN's broadcast: translation "
            f"k moves images k, k + {count}, k + {2 * count}, ...)"
        )
    t = _tf.to_tensor(translations, "translations", "a real tensor of shape (batch, 2) holding (tx, ty)")
    with _tf.on_device(_tf.device_of(t)):
        return tf.gather(t, tf.range(batch) % count)


def translate_xla(
    images: Any,
    translations: Any,
    interpolation: str = "bilinear",
    use_jit: bool = True,
    output_size: Optional[Sequence[int]] = None,
    channels: int = 1,
    evaluation: Optional[str] = None,
) -> tf.Tensor:
    """Translate images with zero fill; optionally keep only a top-left window.

    Parameters
    ----------
    images : tensor (B, H, W, C), complex or real
        B == 1: one source shared by every translation (never tiled);
        B == P: image i with translation i; B a multiple of P (PtychoPINN's
        broadcast for gridsize > 1): image i with translation ``i % P``.
    translations : tensor (P, 2)
        (tx, ty) in pixels: output (y, x) samples the source at (x - tx, y - ty).
    interpolation : {'bilinear', 'nearest'}
    use_jit : bool
        Compile with XLA (``tf.function(jit_compile=True)``); False runs the
        same ops eagerly (or inside the caller's graph).  As in PtychoPINN,
        it also chooses the evaluation order of the bilinear sum: True gives
        the bits of PtychoPINN's compiled path (fused multiply-adds), False
        those of its eager path.
    output_size : (h, w), optional
        Compute only output pixels 0 <= y < h, 0 <= x < w (default: (H, W)).
    channels : int
        With C == 1: lay the result out as (P // channels, h, w, channels),
        translation ``b*channels + k`` in channel k (PtychoPINN channel format).
    evaluation : {'compiled', 'plain'}, optional
        Overrides the order ``use_jit`` implies (see
        :data:`ptycho.backends.window.EVALUATIONS`).

    Returns
    -------
    tf.Tensor (P, h, w, C) -- or (P // channels, h, w, channels) -- of the
    input's dtype (real input gives a real result).
    """
    translations = _broadcast_translations(images, translations)
    return _tf.translate_4d(
        images, translations, interpolation, use_jit, output_size, channels, evaluation=evaluation
    )


