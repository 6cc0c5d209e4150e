"""TensorFlow helpers with PtychoPINN's names: layouts, translation, patches and reassembly.

This module is PtychoPINN's ``ptycho.tf_helper`` for the patch, translation
and reassembly family; it defines the translation entry points and the
object reassembly (``shift_and_sum``, ``reassemble_position``) and re-exports

- :mod:`ptycho.tf_layouts`: layouts (flat/channel/grid), padding and
  cropping, regular-grid patches, the centre mask, complex helpers;
- :mod:`ptycho.tf_model_ops`: the model-side operations that are a
  translation followed by a crop or a sum, windowed on the engine
  (``extract_patches_position``, ``_reassemble_patches_position_real``,
  ``_reassemble_position_batched``, ``reassemble_patches``, ...) and the
  ``Translation`` Keras layer.

Layouts (PtychoPINN conventions):
- channel format: (B, N, N, c), c = gridsize**2 patches per group;
- flat format: (B*c, N, N, 1), flat index ``b*c + k`` for group b, channel k.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence

import tensorflow as tf

from ptycho.errors import InputError, InputTypeError
from ptycho import _validate, params
from ptycho.backends._tensorflow import check_images, check_translations, to_tensor, translate_4d
from ptycho import tf_layouts as _layouts
from ptycho import tf_model_ops as _model_ops
from ptycho.tf_layouts import *  # noqa: F401,F403  (PtychoPINN's names)
from ptycho.tf_layouts import _channel_to_flat, _channel_to_patches, _flat_to_channel, _flat_to_channel_2, _fromgrid, _grid_to_channel, _togrid  # noqa: F401
from ptycho.tf_model_ops import *  # noqa: F401,F403  (PtychoPINN's names)
from ptycho.tf_model_ops import _reassemble_patches_position_real, _reassemble_position_batched  # noqa: F401

__all__ = ["should_use_xla", "translate", "translate_core"] + list(_layouts.__all__) + list(_model_ops.__all__)


def should_use_xla() -> bool:
    """Whether ``translate_core`` takes the XLA path (PtychoPINN's switch).

    False when the environment variable ``USE_XLA_TRANSLATE`` is ``0``,
    ``false`` or ``no``; else ``params['use_xla_translate']`` when it is set
    (not None); else True.
    """
    if os.environ.get("USE_XLA_TRANSLATE", "").strip().lower() in ("0", "false", "no"):
        return False
    value = params.get("use_xla_translate", None)
    return True if value is None else bool(value)


def translate(
    imgs: Any,
    offsets: Any,
    interpolation: str = "bilinear",
    output_size: Optional[Sequence[int]] = None,
    use_jit: bool = True,
    channels: int = 1,
    evaluation: Optional[str] = None,
    **kwargs: Any,
) -> tf.Tensor:
    """Translate (B, H, W, C) images by (P, 2) offsets (tx, ty), zero fill.

    Output (y, x) samples the input at (x - tx, y - ty).  With ``output_size``
    only that top-left window is computed (translate-then-slice); a batch-1
    image is shared by all P offsets without tiling.  Differentiable with
    respect to ``imgs`` and ``offsets``.  See
    :func:`ptycho.projective_warp_xla.translate_xla` for the parameters;
    PtychoPINN's ``use_xla_translate`` keyword is accepted (XLA is always used
    unless ``use_jit=False``).  PtychoPINN's default: the compiled evaluation
    order (``use_jit=True``); ``use_jit=False`` or ``evaluation='plain'``
    gives its eager path's bits.
    """
    kwargs.pop("use_xla_translate", None)
    if kwargs:
        raise InputTypeError(f"translate() got unexpected keyword arguments {sorted(kwargs)}")
    # translate_xla's engine, with this function's argument names in its messages
    return translate_4d(
        imgs, offsets, interpolation, use_jit, output_size, channels,
        names=("imgs", "offsets"), evaluation=evaluation,
    )


def translate_core(
    images: Any, translations: Any, interpolation: str = "bilinear", use_xla_workaround: bool = False
) -> tf.Tensor:
    """Full-frame translation of (B, H, W, C) images by (P, 2) translations (tx, ty), zero fill.

    As PtychoPINN: the XLA path (our engine, compiled evaluation order, the
    bits of PtychoPINN's ``translate_xla``) when ``use_xla_workaround`` or
    :func:`should_use_xla` says so, else TensorFlow's native
    ImageProjectiveTransformV3 (the same zero-fill semantics, another
    evaluation order: equal to rounding).  Batches: B == P; B == 1 (the
    image shared by every translation); or P dividing B -- the XLA path
    reuses the translations cyclically (image i takes translation i % P, as
    ``translate_xla``), the native path gives each translation B // P
    consecutive images (as PtychoPINN's fallback).
    """
    interpolation = _validate.interpolation(interpolation)
    use_xla_workaround = _validate.flag(use_xla_workaround, "use_xla_workaround")
    images = check_images(images, "images")
    real_dtype = tf.float64 if images.dtype in (tf.float64, tf.complex128) else tf.float32
    t = to_tensor(translations, "translations", "a real tensor of shape (batch, 2) holding (tx, ty)")
    batch, count = images.shape[0], t.shape[0] if t.shape.rank else None
    repeat = 1
    if batch is not None and count is not None and batch not in (1, count) and count and batch % count == 0:
        repeat = batch // count
        check = None  # P divides B: checked here, broadcast below
    else:
        check = batch
    use_xla = use_xla_workaround or should_use_xla()
    # ImageProjectiveTransformV3 takes float32 transforms, whatever the image precision
    t = check_translations(t, real_dtype if use_xla else tf.float32, check, 1, name="translations")
    if repeat > 1:
        cyclic = tf.range(batch) % count
        t = tf.gather(t, cyclic) if use_xla else tf.repeat(t, repeat, axis=0)
    if use_xla:
        return translate_4d(images, t, interpolation, True, None, 1, names=("images", "translations"))
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
    out = warp(images)
    return tf.cast(out, images.dtype) if images.dtype.is_floating and out.dtype != images.dtype else out


# ---------------------------------------------------------------------------
# Reassembly: PtychoPINN's shift_and_sum / reassemble_position, windowed
# (the engine is ptycho.backends.placement; see docs/DEVELOPER_GUIDE.md).
# ---------------------------------------------------------------------------


def _reassembly_inputs(obj_tensor: Any, global_offsets: Any, chunk_size: Any) -> tuple:
    """(patches (P, N, N) complex64, recentred offsets (P, 2) float32), as PtychoPINN forms them."""
    _validate.positive_int(chunk_size, "chunk_size")
    if not tf.executing_eagerly():
        raise InputError(
            "shift_and_sum and reassemble_position run eagerly (under tf.GradientTape, not inside "
            "tf.function): the canvas side M + 2*pad depends on the values of global_offsets"
        )
    obj = to_tensor(obj_tensor, "obj_tensor", "a 4-D complex tensor (P, N, N, 1)")
    if obj.shape.rank != 4 or obj.shape[-1] != 1:
        raise InputError(f"obj_tensor must be 4-D (P, N, N, 1), got shape {tuple(obj.shape)}")
    if obj.shape[1] != obj.shape[2]:
        raise InputError(f"obj_tensor must hold square patches (P, N, N, 1), got shape {tuple(obj.shape)}")
    if obj.shape[0] == 0:
        raise InputError(
            f"obj_tensor must hold at least one patch (the offsets' mean is undefined), got shape {tuple(obj.shape)}"
        )
    if not (obj.dtype.is_complex or obj.dtype.is_floating or obj.dtype.is_integer):
        raise InputTypeError(f"obj_tensor must have a real or complex numeric dtype, got {obj.dtype.name}")
    count = obj.shape[0]
    offsets = to_tensor(global_offsets, "global_offsets", "a real tensor (P, 1, 1, 2) holding (x, y)")
    if offsets.dtype.is_complex or not (offsets.dtype.is_floating or offsets.dtype.is_integer):
        raise InputTypeError(f"global_offsets must be real (x, y) pixels, got dtype {offsets.dtype.name}")
    shape = tuple(offsets.shape)
    if not shape or offsets.shape.num_elements() != 2 * (shape[0] or 0) or (count is not None and shape[0] != count):
        raise InputError(
            f"global_offsets must hold one (x, y) per patch, shape (P, 1, 1, 2) or (P, 1, 2, 1) with "
            f"P = {count} (obj_tensor has shape {tuple(obj.shape)}), got shape {shape}"
        )
    if tf.executing_eagerly() and count:
        _validate.finite(offsets.numpy(), "global_offsets", dtype=None)
    # PtychoPINN: centre = reduce_mean(cast(global_offsets, float32), axis=0); adjusted = cast - centre
    cast = tf.cast(offsets, tf.float32)
    adjusted = cast - tf.reduce_mean(cast, axis=0) if count else cast
    patches = tf.cast(obj, tf.complex64)[..., 0]
    return patches, tf.reshape(adjusted, (-1, 2))


def _shift_and_sum_planes(obj_tensor: Any, global_offsets: Any, M: Any, chunk_size: Any, ones: bool, evaluation: str):
    from ptycho.backends import placement

    patches, adjusted = _reassembly_inputs(obj_tensor, global_offsets, chunk_size)
    _, planes = placement.shift_and_sum_planes(
        patches, adjusted, M, backend="tensorflow", evaluation=evaluation, recentre=False, ones=ones,
        names=("obj_tensor", "global_offsets"),
    )
    return planes


def shift_and_sum(
    obj_tensor: Any, global_offsets: Any, M: int = 10, chunk_size: int = 32, *, evaluation: str = "compiled"
) -> tf.Tensor:
    """PtychoPINN's ``shift_and_sum``: the patches' central M x M, translated to their offsets and summed.

    ``obj_tensor`` (P, N, N, 1) complex, ``global_offsets`` (P, 1, 1, 2) or
    (P, 1, 2, 1) holding (x, y).  As PtychoPINN: crop ``[N//2 - M//2 : N//2 + M//2]``
    (M even, at most N), recentre the float32 offsets by their float32 mean,
    pad = ceil(max |offset|) made even, canvas S = M + 2*pad, translate each
    zero-padded crop by its offset (compiled order; ``evaluation='plain'``
    for the eager one) and sum.  Windowed: each patch costs (M+1)^2 canvas
    pixels, not S^2; on a CPU the result equals PtychoPINN's sequential
    full-canvas loop bit for bit.  ``chunk_size`` is PtychoPINN's memory knob
    for its full-canvas translation; it is checked and otherwise unused (the
    windows bound memory themselves).  Differentiable under
    ``tf.GradientTape`` with respect to ``obj_tensor`` and ``global_offsets``.

    Returns
    -------
    tf.Tensor (S, S, 1) complex64
    """
    re, im = _shift_and_sum_planes(obj_tensor, global_offsets, M, chunk_size, False, evaluation)
    return tf.complex(re, im)[..., None]


def reassemble_position(
    obj_tensor: Any, global_offsets: Any, M: int = 10, chunk_size: int = 32, *, evaluation: str = "compiled"
) -> tf.Tensor:
    """PtychoPINN's ``reassemble_position``: ``shift_and_sum(obj) / (1e-9 + shift_and_sum(ones))``.

    Both sums come from one windowed pass; the division is PtychoPINN's
    complex64 one.  Returns a tf.Tensor (S, S, 1) complex64.
    """
    re, im, ones = _shift_and_sum_planes(obj_tensor, global_offsets, M, chunk_size, True, evaluation)
    return (tf.complex(re, im) / (1e-9 + tf.complex(ones, tf.zeros_like(ones))))[..., None]


__all__ += ["shift_and_sum", "reassemble_position"]  # noqa: PLE0604
