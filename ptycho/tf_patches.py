"""PtychoPINN's patch extraction on TensorFlow: ``get_image_patches`` and its two paths.

:func:`get_image_patches` cuts the ground-truth object patches of every group
at its scan positions.  Two paths compute the same thing:

- :func:`_get_image_patches_batched` (default): translate-then-slice on
  TensorFlow/XLA, all patches of a chunk in one call, the object never tiled;
- :func:`_get_image_patches_iterative` (legacy, deprecated): PtychoPINN's loop,
  one full-image translation of the padded object per patch, keeping the
  top-left N x N corner.  It stays as the ground truth of the tests.

Both reproduce PtychoPINN's defaults: the compiled evaluation order of its
XLA path (fused multiply-adds), offsets ``global + local`` rounded to float32,
and a complex64 result whatever the object's precision (``full_precision=True``
keeps complex128 objects and float64 offsets in float64).  They agree bit for
bit with each other and with PtychoPINN's own code (``tests/data``).

PtychoPINN code imports these names from :mod:`ptycho.raw_data`, the facade.
"""

from __future__ import annotations

import uuid
import warnings
from typing import Any, Optional

import numpy as np
import tensorflow as tf

from ptycho.errors import InputError, InputTypeError
from ptycho import _validate, params
from ptycho._chunks import chunk_bounds, pad_rows
from ptycho.backends import _tensorflow as _tf
from ptycho.config.config import resolve_model_config
from ptycho.tf_helper import _channel_to_flat, pad, translate

__all__ = [
    "get_image_patches",
    "_get_image_patches_iterative",
    "_get_image_patches_batched",
]


# ---------------------------------------------------------------------------
# Patch extraction
# ---------------------------------------------------------------------------


def _resolve_setting(explicit: Any, model: Any, field: str, default: Any = None) -> Any:
    """Explicit argument, else the config object, else ``ptycho.params``."""
    if explicit is not None:
        return explicit
    if model is not None and getattr(model, field, None) is not None:
        return getattr(model, field)
    return params.get(field, default)


def _squeezed_2d(shape: tuple) -> tuple:
    """(H, W) of an object of ``shape`` (H, W), (H, W, 1), (1, H, W) or (1, H, W, 1)."""
    if len(shape) == 4 and shape[0] == 1 and shape[3] == 1:
        return shape[1:3]
    if len(shape) == 3 and shape[2] == 1:
        return shape[:2]
    if len(shape) == 3 and shape[0] == 1:
        return shape[1:]
    if len(shape) == 2:
        return shape
    raise InputError(f"gt_image must be 2-D (H, W) (or with singleton batch/channel axes), got shape {shape}")


def _object_2d(gt_image: Any) -> Any:
    """Accept (H, W), (H, W, 1), (1, H, W) or (1, H, W, 1); return (H, W).

    A tf.Tensor stays where it lives (checked by shape and dtype, reshaped on
    its device); anything else becomes a checked NumPy array.
    """
    if gt_image is None:
        raise InputTypeError("gt_image must be a 2-D array (H, W), got None")
    if isinstance(gt_image, tf.Tensor) and tf.executing_eagerly():
        dtype = np.dtype(gt_image.dtype.as_numpy_dtype)
        shape = _squeezed_2d(tuple(gt_image.shape))
        _validate.image_2d_layout(shape, dtype, "gt_image")
        with tf.device(gt_image.device):
            return tf.reshape(gt_image, shape)
    arr = _validate.to_numpy(gt_image, "gt_image")
    _validate.numeric_dtype(arr, "gt_image")
    return _validate.image_2d(arr.reshape(_squeezed_2d(arr.shape)), "gt_image")


def _offsets(global_offsets: Any, local_offsets: Any, c: int, real_dtype: Any = None) -> np.ndarray:
    """Validate the channel-format offsets and return their sum (B, 1, 2, c) in float64.

    ``real_dtype`` (float32 or float64) is the working precision: the offsets
    and their sum must be representable in it.
    """
    arrays = []
    for name, value in (("global_offsets", global_offsets), ("local_offsets", local_offsets)):
        if value is None:
            raise InputTypeError(f"{name} must be an array of shape (B, 1, 2, c) holding (x, y), got None")
        arrays.append(_validate.to_numpy(value, name))
    g, loc = arrays
    for name, arr in (("global_offsets", g), ("local_offsets", loc)):
        if arr.dtype.kind == "c":
            raise InputTypeError(f"{name} must be real (x, y) pixel coordinates, got dtype {arr.dtype}")
        _validate.numeric_dtype(arr, name, real=True)
        if arr.ndim != 4 or arr.shape[1] != 1 or arr.shape[2] != 2:
            raise InputError(
                f"{name} must have shape (B, 1, 2, c) with axis 2 holding (x, y), got shape {arr.shape}"
            )
        _validate.finite(arr, name, dtype=real_dtype)
    if g.shape[0] != loc.shape[0]:
        raise InputError(
            f"global_offsets and local_offsets must have the same batch size B, got "
            f"{g.shape[0]} and {loc.shape[0]}"
        )
    if loc.shape[3] != c:
        raise InputError(
            f"local_offsets must have c = gridsize**2 = {c} channels (shape (B, 1, 2, {c})), "
            f"got shape {loc.shape}"
        )
    if g.shape[3] not in (1, c):
        raise InputError(
            f"global_offsets must have 1 or c = gridsize**2 = {c} channels, got shape {g.shape}"
        )
    with np.errstate(over="ignore"):
        total = np.add(g, loc, dtype=np.float64)
    _validate.finite(total, "global_offsets + local_offsets", dtype=real_dtype)
    return total


def get_image_patches(
    gt_image: Any,
    global_offsets: Any,
    local_offsets: Any,
    N: Optional[int] = None,
    gridsize: Optional[int] = None,
    config: Any = None,
    *,
    evaluation: str = "compiled",
    full_precision: bool = False,
) -> tf.Tensor:
    """Ground-truth object patches for every group, PtychoPINN's channel format.

    Parameters
    ----------
    gt_image : array (H, W), complex64 or complex128
        The object.  Real input is treated as complex (zero imaginary part).
    global_offsets : array (B, 1, 2, 1) or (B, 1, 2, c)
        Group positions; axis 2 holds (x, y) in object pixels.
    local_offsets : array (B, 1, 2, c)
        Member offsets relative to the group position, c = gridsize**2.
    N, gridsize : int, optional
        Patch side and group grid; default ``config.model``, then ``ptycho.params``.
    config : ModelConfig or TrainingConfig, optional
        Wins over ``ptycho.params`` for N, gridsize,
        ``use_batched_patch_extraction`` and ``patch_extraction_batch_size``.
    evaluation : {'compiled', 'plain'}
        'compiled' (default): the bits of PtychoPINN's default path (its
        ``translate_xla`` under XLA, fused multiply-adds); 'plain': the bits
        of its eager path (``use_jit=False``).
    full_precision : bool
        False (default, as PtychoPINN): ``global + local`` is rounded to
        float32 and the result is complex64, whatever the object's precision
        (a complex128 object is still interpolated in float64).  True: float64
        offsets and a complex128 result for complex128/float64 objects.

    Returns
    -------
    tf.Tensor (B, N, N, c), complex64 (complex128 with ``full_precision`` for
    complex128/float64 input).
    Channel k of group b is the patch centred on
    ``global[b, 0, :, k or 0] + local[b, 0, :, k]``.
    """
    model = resolve_model_config(config)
    N = _validate.patch_size(_resolve_setting(N, model, "N"))
    gridsize = _validate.positive_int(_resolve_setting(gridsize, model, "gridsize"), "gridsize")
    use_batched = _validate.flag(
        _resolve_setting(None, model, "use_batched_patch_extraction", True), "use_batched_patch_extraction"
    )
    batch_size = _validate.optional_positive_int(
        _resolve_setting(None, model, "patch_extraction_batch_size", None), "patch_extraction_batch_size"
    )
    c = gridsize**2

    evaluation = _validate.evaluation(evaluation)
    full_precision = _validate.flag(full_precision, "full_precision")

    obj = _object_2d(gt_image)
    cdtype, rdtype = _validate.working_dtypes(obj.dtype)
    device = obj.device if isinstance(obj, tf.Tensor) else None  # None: TF's default device
    offset_dtype = rdtype if full_precision else np.dtype(np.float32)
    offsets = _offsets(global_offsets, local_offsets, c, real_dtype=offset_dtype)
    B = offsets.shape[0]

    with _tf.on_device(device):  # on the object's device: no round trip through the host
        gt_padded = pad(tf.reshape(tf.cast(obj, cdtype), (1,) + tuple(obj.shape) + (1,)), N // 2)
        # PtychoPINN rounds global + local to float32 (its offsets are float32)
        offsets_f = _channel_to_flat(tf.convert_to_tensor(offsets.astype(offset_dtype)))  # (B*c, 1, 2, 1)
    paths = dict(evaluation=evaluation, full_precision=full_precision)
    if use_batched:
        return _get_image_patches_batched(gt_padded, offsets_f, N, B, c, mini_batch_size=batch_size, **paths)
    warnings.warn(
        "use_batched_patch_extraction=False selects the legacy per-patch loop, which is "
        "deprecated and orders of magnitude slower; the batched path gives identical results",
        DeprecationWarning,
        stacklevel=2,
    )
    return _get_image_patches_iterative(gt_padded, offsets_f, N, B, c, **paths)


def _flat_translations(offsets_f: Any, count: int, full_precision: bool = True) -> tf.Tensor:
    """(B*c, 1, 2, 1) offsets -> (B*c, 2) translations ``-(x, y)`` (float32 unless ``full_precision``)."""
    offsets = tf.convert_to_tensor(offsets_f)
    if not full_precision and offsets.dtype != tf.float32:
        offsets = tf.cast(offsets, tf.float32)
    if offsets.shape.rank != 4 or offsets.shape[1:] != (1, 2, 1):
        raise InputError(f"offsets_f must have shape (B*c, 1, 2, 1), got shape {tuple(offsets.shape)}")
    if offsets.shape[0] != count:
        raise InputError(f"offsets_f must hold B*c = {count} offsets, got {offsets.shape[0]}")
    return -tf.reshape(offsets, (count, 2))


def _check_padded(gt_padded: Any) -> tf.Tensor:
    gt_padded = tf.convert_to_tensor(gt_padded)
    if gt_padded.shape.rank != 4 or gt_padded.shape[0] != 1 or gt_padded.shape[3] != 1:
        raise InputError(f"gt_padded must have shape (1, Hp, Wp, 1), got shape {tuple(gt_padded.shape)}")
    return gt_padded


def _as_legacy_dtype(patches: tf.Tensor, full_precision: bool) -> tf.Tensor:
    """PtychoPINN's canvas is complex64: cast unless ``full_precision``."""
    if full_precision or patches.dtype == tf.complex64:
        return patches
    return tf.cast(patches, tf.complex64)


def _get_image_patches_iterative(
    gt_padded: Any,
    offsets_f: Any,
    N: int,
    B: int,
    c: int,
    *,
    evaluation: str = "compiled",
    full_precision: bool = False,
) -> tf.Tensor:
    """Legacy ground truth: one full-image translation per patch, keep [:N, :N].

    Parameters
    ----------
    gt_padded : (1, Hp, Wp, 1) complex -- the object zero-padded (any padding).
    offsets_f : (B*c, 1, 2, 1) -- (x, y) positions in padded-frame pixels
        minus the padding, i.e. PtychoPINN's flat offsets.
    N, B, c : patch side, groups, channels per group.
    evaluation, full_precision : see :func:`get_image_patches`.

    Returns
    -------
    tf.Tensor (B, N, N, c), complex64 (or the padded object's dtype with ``full_precision``)
    """
    gt_padded = _check_padded(gt_padded)
    N = _validate.patch_size(N)
    evaluation = _validate.evaluation(evaluation)
    translations = _flat_translations(offsets_f, B * c, full_precision)
    if B * c == 0:
        return _as_legacy_dtype(tf.zeros((0, N, N, c), dtype=gt_padded.dtype), full_precision)
    with _tf.on_device(_tf.device_of(gt_padded)):
        patches = []
        for i in range(B * c):
            # the full padded image, as PtychoPINN's loop
            shifted = translate(gt_padded, translations[i : i + 1], evaluation=evaluation)
            patches.append(shifted[0, :N, :N, 0])
        flat = tf.stack(patches)  # (B*c, N, N)
        out = tf.transpose(tf.reshape(flat, (B, c, N, N)), [0, 2, 3, 1])
        return _as_legacy_dtype(out, full_precision)


def _get_image_patches_batched(
    gt_padded: Any,
    offsets_f: Any,
    N: int,
    B: int,
    c: int,
    mini_batch_size: Optional[int] = None,
    *,
    evaluation: str = "compiled",
    full_precision: bool = False,
) -> tf.Tensor:
    """Batched translate-then-slice on TF/XLA; same arguments and result as the loop.

    ``mini_batch_size`` (patches per engine call, rounded down to whole
    groups) bounds the working memory: chunks are computed one at a time, in
    the final (B, N, N, c) layout, into one preallocated output.  Every chunk
    has the same shape (the last is padded), so XLA compiles once.
    """
    gt_padded = _check_padded(gt_padded)
    N = _validate.patch_size(N)
    B = _validate.non_negative_int(B, "B")
    c = _validate.positive_int(c, "c")
    evaluation = _validate.evaluation(evaluation)
    translations = _flat_translations(offsets_f, B * c, full_precision)
    if mini_batch_size is not None:
        mini_batch_size = _validate.positive_int(mini_batch_size, "mini_batch_size")
    if B == 0:
        return _as_legacy_dtype(tf.zeros((0, N, N, c), dtype=gt_padded.dtype), full_precision)

    def patches(chunk: tf.Tensor) -> tf.Tensor:
        out = translate(gt_padded, chunk, output_size=(N, N), channels=c, evaluation=evaluation)
        return _as_legacy_dtype(out, full_precision)

    if mini_batch_size is None or mini_batch_size >= B * c:
        with _tf.on_device(_tf.device_of(gt_padded)):
            return patches(translations)
    groups_per_chunk = max(1, mini_batch_size // c)
    step = groups_per_chunk * c
    device = _tf.device_of(gt_padded)
    dtype = tf.complex64 if not full_precision else gt_padded.dtype

    def chunks():
        """(start, stop, patches of groups start:stop), computed one at a time on ``device``."""
        for start, stop in chunk_bounds(B, groups_per_chunk):
            # one compiled shape: the last chunk is padded, its extra patches dropped
            chunk = pad_rows(translations[start * c : stop * c], step, xp=_tf.namespace)
            with _tf.on_device(device):
                yield start, stop, patches(chunk)[: stop - start]

    if _assembles_on_host(device):
        # On a CPU the device's memory is the host's: chunks are written in place
        # into one 64-byte aligned buffer that TensorFlow then adopts without a
        # copy (DLPack).  Peak = output + one chunk.
        nbytes = B * N * N * c * dtype.size
        raw = np.empty(nbytes + _TF_ALIGNMENT, dtype=np.uint8)
        skip = -raw.ctypes.data % _TF_ALIGNMENT
        out = raw[skip : skip + nbytes].view(dtype.as_numpy_dtype).reshape(B, N, N, c)
        for start, stop, result in chunks():
            out[start:stop] = np.from_dlpack(result)  # a view of the XLA result: no extra copy
            del result
        with _tf.on_device(device):  # labelled with the object's (logical) CPU; no copy
            return tf.identity(_as_tensor(out))
    # On an accelerator: one buffer on the device (a resource variable), written
    # chunk by chunk in place; nothing goes through the host.  Reading it at the
    # end copies it once (TensorFlow reads sliced-assigned variables by copy).
    with _tf.on_device(device):
        handle = tf.raw_ops.VarHandleOp(dtype=dtype, shape=(B, N, N, c), shared_name=f"ptycho_patches_{uuid.uuid4().hex}")
        tf.raw_ops.AssignVariableOp(resource=handle, value=tf.raw_ops.Empty(shape=(B, N, N, c), dtype=dtype))
        for start, stop, result in chunks():
            tf.raw_ops.ResourceStridedSliceAssign(ref=handle, begin=[start, 0, 0, 0], end=[stop, N, N, c],
                                                  strides=[1, 1, 1, 1], value=result)
        out = tf.raw_ops.ReadVariableOp(resource=handle, dtype=dtype)
        tf.raw_ops.DestroyResourceOp(resource=handle)
    return out


def _assembles_on_host(device: Optional[str]) -> bool:
    """Whether chunks of ``device`` are assembled in host memory: a CPU's memory is the host's."""
    return device is None or "CPU" in device.upper()


#: Byte alignment TensorFlow requires of tensor buffers (Eigen's EIGEN_MAX_ALIGN_BYTES).
_TF_ALIGNMENT = 64


def _as_tensor(array: np.ndarray) -> tf.Tensor:
    """Wrap a NumPy array as a tf.Tensor, without a copy when it is 64-byte aligned.

    TensorFlow kernels assume aligned buffers (a misaligned DLPack import
    aborts the process in the first strided slice), so anything else is copied.
    """
    if array.ctypes.data % _TF_ALIGNMENT or not array.flags.c_contiguous:
        return tf.convert_to_tensor(array)
    try:
        return tf.experimental.dlpack.from_dlpack(array.__dlpack__())
    except Exception:  # pragma: no cover - a TF without DLPack import
        return tf.convert_to_tensor(array)
