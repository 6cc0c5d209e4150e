"""Ptychography data and patch extraction, with PtychoPINN's names.

Patch extraction
----------------
:func:`get_image_patches` cuts the ground-truth object patches of every group
at its scan positions.  Two paths compute the same thing:

- :func:`_get_image_patches_batched` (default): translate-then-slice on
  TensorFlow/XLA, all patches of a chunk in one call, the object never tiled;
- :func:`_get_image_patches_iterative` (legacy, deprecated): PtychoPINN's loop,
  one full-image translation of the padded object per patch, keeping the
  top-left N x N corner.  It stays as the ground truth of the tests.

On TensorFlow the two agree bit for bit (``max |diff| == 0``).
"""

from __future__ import annotations

import warnings
from typing import Any, Optional

import numpy as np
import tensorflow as tf

from ptycho.errors import InputError, InputTypeError
from ptycho import _validate, params
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


def _object_2d(gt_image: Any) -> np.ndarray:
    """Accept (H, W), (H, W, 1), (1, H, W) or (1, H, W, 1); return (H, W)."""
    if gt_image is None:
        raise InputTypeError("gt_image must be a 2-D array (H, W), got None")
    arr = _validate.to_numpy(gt_image, "gt_image")
    _validate.numeric_dtype(arr, "gt_image")
    squeezed = arr
    if squeezed.ndim == 4 and squeezed.shape[0] == 1 and squeezed.shape[3] == 1:
        squeezed = squeezed[0, :, :, 0]
    elif squeezed.ndim == 3 and squeezed.shape[2] == 1:
        squeezed = squeezed[:, :, 0]
    elif squeezed.ndim == 3 and squeezed.shape[0] == 1:
        squeezed = squeezed[0]
    if squeezed.ndim != 2:
        raise InputError(
            f"gt_image must be 2-D (H, W) (or with singleton batch/channel axes), got shape {arr.shape}"
        )
    return _validate.image_2d(squeezed, "gt_image")


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

    Returns
    -------
    tf.Tensor (B, N, N, c), complex64 (complex128 for complex128/float64 input).
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

    obj = _object_2d(gt_image)
    wide = obj.dtype in (np.float64, np.complex128)
    cdtype, rdtype = (np.complex128, np.float64) if wide else (np.complex64, np.float32)
    offsets = _offsets(global_offsets, local_offsets, c, real_dtype=rdtype)
    B = offsets.shape[0]

    gt_padded = pad(tf.convert_to_tensor(obj.astype(cdtype, copy=False)[None, :, :, None]), N // 2)
    offsets_f = _channel_to_flat(tf.convert_to_tensor(offsets.astype(rdtype)))  # (B*c, 1, 2, 1)
    if use_batched:
        return _get_image_patches_batched(gt_padded, offsets_f, N, B, c, mini_batch_size=batch_size)
    warnings.warn(
        "use_batched_patch_extraction=False selects the legacy per-patch loop, which is "
        "deprecated and orders of magnitude slower; the batched path gives identical results",
        DeprecationWarning,
        stacklevel=2,
    )
    return _get_image_patches_iterative(gt_padded, offsets_f, N, B, c)


def _flat_translations(offsets_f: Any, count: int) -> tf.Tensor:
    """(B*c, 1, 2, 1) offsets -> (B*c, 2) translations ``-(x, y)``."""
    offsets = tf.convert_to_tensor(offsets_f)
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


def _get_image_patches_iterative(gt_padded: Any, offsets_f: Any, N: int, B: int, c: int) -> tf.Tensor:
    """Legacy ground truth: one full-image translation per patch, keep [:N, :N].

    Parameters
    ----------
    gt_padded : (1, Hp, Wp, 1) complex -- the object zero-padded (any padding).
    offsets_f : (B*c, 1, 2, 1) -- (x, y) positions in padded-frame pixels
        minus the padding, i.e. PtychoPINN's flat offsets.
    N, B, c : patch side, groups, channels per group.

    Returns
    -------
    tf.Tensor (B, N, N, c)
    """
    gt_padded = _check_padded(gt_padded)
    N = _validate.patch_size(N)
    translations = _flat_translations(offsets_f, B * c)
    if B * c == 0:
        return tf.zeros((0, N, N, c), dtype=gt_padded.dtype)
    patches = []
    for i in range(B * c):
        shifted = translate(gt_padded, translations[i : i + 1])  # full padded image
        patches.append(shifted[0, :N, :N, 0])
    flat = tf.stack(patches)  # (B*c, N, N)
    return tf.transpose(tf.reshape(flat, (B, c, N, N)), [0, 2, 3, 1])


def _get_image_patches_batched(
    gt_padded: Any,
    offsets_f: Any,
    N: int,
    B: int,
    c: int,
    mini_batch_size: Optional[int] = None,
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
    translations = _flat_translations(offsets_f, B * c)
    if mini_batch_size is not None:
        mini_batch_size = _validate.positive_int(mini_batch_size, "mini_batch_size")
    if B == 0:
        return tf.zeros((0, N, N, c), dtype=gt_padded.dtype)
    if mini_batch_size is None or mini_batch_size >= B * c:
        return translate(gt_padded, translations, output_size=(N, N), channels=c)
    groups_per_chunk = max(1, mini_batch_size // c)
    # The output is allocated 64-byte aligned (TensorFlow's alignment), so that
    # _as_tensor can hand it to TF without a copy: peak = output + one chunk.
    dtype = np.dtype(gt_padded.dtype.as_numpy_dtype)
    nbytes = B * N * N * c * dtype.itemsize
    raw = np.empty(nbytes + _TF_ALIGNMENT, dtype=np.uint8)
    skip = -raw.ctypes.data % _TF_ALIGNMENT
    out = raw[skip : skip + nbytes].view(dtype).reshape(B, N, N, c)
    step = groups_per_chunk * c
    for start in range(0, B, groups_per_chunk):
        stop = min(start + groups_per_chunk, B)
        chunk = translations[start * c : stop * c]
        short = step - chunk.shape[0]
        if short:  # keep one compiled shape: pad the last chunk with zero translations
            chunk = tf.concat([chunk, tf.zeros((short, 2), chunk.dtype)], axis=0)
        result = translate(gt_padded, chunk, output_size=(N, N), channels=c)
        # np.from_dlpack views the XLA result in place; Tensor.numpy() would copy it.
        out[start:stop] = np.from_dlpack(result)[: stop - start]
        del result
    return _as_tensor(out)


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


# ---------------------------------------------------------------------------
# The dataset and neighbour grouping live in ptycho.dataset; PtychoPINN code
# imports them from here.  Resolved lazily (PEP 562) to avoid an import cycle.
# ---------------------------------------------------------------------------
_DATASET_NAMES = ("RawData", "generate_grouped_data", "group_neighbours")


def __getattr__(name: str) -> Any:
    if name in _DATASET_NAMES:
        from ptycho import dataset

        return getattr(dataset, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
