"""PtychoPINN's ``translate_xla``, a thin wrapper over the one translate entry.

Full-image translation (PtychoPINN's per-patch warp) and windowed translation
(``output_size``: only the top-left window of each translated image, the
translate-then-slice production path) are the same function of
:mod:`ptycho.backends.window`, compiled by XLA through
``tf.function(jit_compile=True)`` (:func:`ptycho.backends.translate_validated`).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import tensorflow as tf

from ptycho.backends import _tensorflow as _tf

__all__ = ["translate_xla"]


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
        otherwise B == number of translations.
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
    return _tf.translate_4d(
        images, translations, interpolation, use_jit, output_size, channels, evaluation=evaluation
    )


