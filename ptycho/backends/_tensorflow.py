"""TensorFlow backend: an adapter namespace over TF ops, run under XLA.

TensorFlow is not covered by ``array_api_compat``, so this module supplies a
plain namespace with just the functions :mod:`ptycho.backends.window` calls,
each mapped to a TF op and returning raw ``tf.Tensor`` objects.  Under
``tf.function(jit_compile=True)`` the whole window computation becomes one XLA
cluster.
"""

from __future__ import annotations

import contextlib
import types
from typing import Any, Callable, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from ptycho import _validate
from ptycho.backends import translate_validated
from ptycho.errors import InputError, InputTypeError



def _take(x: tf.Tensor, indices: tf.Tensor, axis: int = 0) -> tf.Tensor:
    return tf.gather(x, indices, axis=axis)


def _clip(x: tf.Tensor, min: Any = None, max: Any = None) -> tf.Tensor:  # noqa: A002
    lo = x.dtype.min if min is None else min
    hi = x.dtype.max if max is None else max
    return tf.clip_by_value(x, tf.cast(lo, x.dtype), tf.cast(hi, x.dtype))


def _arange(start: int, stop: int | None = None, step: int = 1, *, dtype: Any = None) -> tf.Tensor:
    if stop is None:
        start, stop = 0, start
    return tf.range(start, stop, step, dtype=dtype or tf.int32)


def _zeros(shape: Any, *, dtype: Any = None) -> tf.Tensor:
    return tf.zeros(shape, dtype=dtype or tf.float32)


def _full_like(x: tf.Tensor, fill_value: Any) -> tf.Tensor:
    return tf.fill(tf.shape(x), tf.constant(fill_value, dtype=x.dtype))


def _asarray(x: Any, *, dtype: Any = None) -> tf.Tensor:
    return tf.convert_to_tensor(x, dtype=dtype)


def _concat(arrays: Any, *, axis: int = 0) -> tf.Tensor:
    return tf.concat(list(arrays), axis=axis)


def _stack(arrays: Any, *, axis: int = 0) -> tf.Tensor:
    return tf.stack(list(arrays), axis=axis)


def _round(x: tf.Tensor) -> tf.Tensor:
    return tf.round(x)  # half to even, as the array API


#: The adapter namespace: the array-API functions the algorithm uses.
namespace = types.SimpleNamespace(
    places_new_arrays=True,  # XLA places new arrays with the program: no device= needed
    float32=tf.float32,
    float64=tf.float64,
    complex64=tf.complex64,
    complex128=tf.complex128,
    int32=tf.int32,
    int64=tf.int64,
    asarray=_asarray,
    astype=lambda x, dtype: tf.cast(x, dtype),
    arange=_arange,
    zeros=_zeros,
    full_like=_full_like,
    reshape=lambda x, shape: tf.reshape(x, shape),
    concat=_concat,
    stack=_stack,
    take=_take,
    where=tf.where,
    clip=_clip,
    floor=tf.floor,
    abs=tf.abs,
    isfinite=tf.math.is_finite,
    isnan=tf.math.is_nan,
    # rounding corrections carry no gradient (NextAfter has none in TensorFlow)
    nextafter=lambda a, b: tf.math.nextafter(tf.stop_gradient(a), tf.stop_gradient(b)),
    round=_round,
    real=tf.math.real,
    imag=tf.math.imag,
    complex=tf.complex,
)


def compile(fn: Callable[..., Any], **static: Any) -> Callable[..., Any]:  # noqa: A001
    """``tf.function(jit_compile=True)`` with ``static`` bound as constants."""

    def bound(*arrays: tf.Tensor) -> tf.Tensor:
        return fn(*arrays, **static)

    # autograph=False: the jobs use no tensor-dependent Python control flow, and
    # AutoGraph's source-to-source conversion of every function they call cost
    # ~1.4 s of each process's first trace (the traced graph is the same).
    return tf.function(bound, jit_compile=True, autograph=False)


def precision(dtype: Any) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()


def asarray(x: Any, dtype: Any = None, device: Any = None) -> tf.Tensor:
    with on_device(device):
        return tf.convert_to_tensor(x, dtype=dtype)


def device_of(x: Any) -> Any:
    """The device name of an eager tensor (None: symbolic, or not placed)."""
    return getattr(x, "device", None) or None if tf.executing_eagerly() else None


def on_device(device: Any) -> contextlib.AbstractContextManager:
    """``tf.device(device)``: ops (and compiled functions) run there; no-op for None."""
    return tf.device(device) if device else contextlib.nullcontext()


def to_numpy(x: Any) -> np.ndarray:
    return x.numpy() if hasattr(x, "numpy") else np.asarray(x)


def is_native(x: Any) -> bool:
    return isinstance(x, (tf.Tensor, tf.Variable))


def all_finite(x: Any) -> Any:
    """Whether every value is finite, reduced on ``x``'s device; None for a symbolic tensor."""
    if not tf.executing_eagerly() or not hasattr(x, "numpy"):
        return None
    with tf.device(x.device):
        return bool(tf.reduce_all(tf.math.is_finite(x)).numpy())


# -- the native compiled order (ptycho.backends.native): probing a compiled program -------------
def concrete(x: Any) -> bool:
    """Whether ``x`` holds values (an eager tensor, not a symbolic one of a caller's graph)."""
    return tf.executing_eagerly() and hasattr(x, "numpy")


def signature(x: Any) -> tuple:
    """What ``tf.function(jit_compile=True)`` compiles a program for: shape, dtype, device."""
    return (tuple(x.shape), x.dtype.name, x.device)


def numpy_dtype(x: Any) -> np.dtype:
    return np.dtype(x.dtype.as_numpy_dtype)


def host_view(x: Any) -> np.ndarray:
    """Read-only host view of an eager tensor: no copy on a CPU (``.numpy()`` copies, which
    at the first call of a program held a second output-sized array at the peak)."""
    view = getattr(x, "_numpy", None)
    return view() if view is not None else x.numpy()


def like(x: Any, host: np.ndarray) -> tf.Tensor:
    """``host`` as an eager tensor on ``x``'s device (the same program signature)."""
    with tf.device(x.device):
        return tf.identity(tf.convert_to_tensor(host, dtype=x.dtype))


def fma_guard(device: Any = None) -> tf.Tensor:
    """A runtime 1.0 (see :func:`ptycho.backends.window.weighted_sum`), on ``device``."""
    with on_device(device):
        return tf.ones((), dtype=tf.float32)


# -- placement (ptycho.backends.placement): scatter-add ------------------------------
def _scatter_add(flat_target: tf.Tensor, index: tf.Tensor, values: tf.Tensor) -> tf.Tensor:
    """``tf.tensor_scatter_nd_add``: on a CPU the updates are applied in order; on a GPU with
    atomics, whose order varies run to run (see ``_scatter_add_rows``)."""
    return tf.tensor_scatter_nd_add(flat_target, tf.reshape(index, (-1, 1)), values)


def _scatter_add_rows(flat_target: tf.Tensor, index: tf.Tensor, values: tf.Tensor) -> tf.Tensor:
    """(R, K) updates one row at a time, row 0 first (``tf.while_loop``); deterministic on
    every device when a row's kept indices are distinct."""
    rows = tf.shape(index)[0]

    def add_row(row: tf.Tensor, acc: tf.Tensor):
        return row + 1, tf.tensor_scatter_nd_add(acc, tf.reshape(index[row], (-1, 1)), values[row])

    _, out = tf.while_loop(lambda row, acc: row < rows, add_row, (tf.constant(0), flat_target))
    return out


namespace.scatter_add = _scatter_add
namespace.scatter_add_rows = _scatter_add_rows
if not hasattr(namespace, "mean"):
    # PtychoPINN recentres its offsets with tf.reduce_mean: the same op, the same bits
    namespace.mean = lambda x, axis=None: tf.reduce_mean(x, axis=axis)
# the projective warp (ptycho.backends.projective): NaN sample points
if not hasattr(namespace, "isnan"):
    namespace.isnan = tf.math.is_nan


# ---------------------------------------------------------------------------
# PtychoPINN's 4-D translation on TensorFlow (translate_xla, tf_helper.translate)
# ---------------------------------------------------------------------------


def to_tensor(value: Any, name: str, expected: str) -> tf.Tensor:
    """``tf.convert_to_tensor`` with an error that names the argument."""
    if value is None:
        raise InputTypeError(f"{name} must be {expected}, got None")
    try:
        return tf.convert_to_tensor(value)
    except (TypeError, ValueError) as exc:
        raise InputTypeError(f"{name} must be {expected}, got {_validate.describe(value)}") from exc


def check_images(images: Any, name: str = "images") -> tf.Tensor:
    images = to_tensor(images, name, "a 4-D numeric tensor (batch, height, width, channels)")
    if images.shape.rank != 4:
        raise InputError(
            f"{name} must be 4-D (batch, height, width, channels), got shape {tuple(images.shape)}"
        )
    if not (images.dtype.is_floating or images.dtype.is_complex or images.dtype.is_integer):
        raise InputTypeError(f"{name} must have a real or complex numeric dtype, got {images.dtype.name}")
    if images.shape[1] == 0 or images.shape[2] == 0:
        raise InputError(f"{name} must have non-empty height and width, got shape {tuple(images.shape)}")
    return images


def check_translations(
    translations: Any,
    real_dtype: tf.DType,
    batch: Optional[int],
    channels: int,
    name: str = "translations",
    images_name: str = "images",
) -> tf.Tensor:
    t = to_tensor(translations, name, "a real tensor of shape (batch, 2) holding (tx, ty)")
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


def translate_4d(
    images: Any,
    translations: Any,
    interpolation: str,
    use_jit: bool,
    output_size: Optional[Sequence[int]],
    channels: int,
    names: Tuple[str, str] = ("images", "translations"),
    evaluation: Optional[str] = None,
) -> tf.Tensor:
    """PtychoPINN's 4-D translation (``translate_xla``, ``tf_helper.translate``) on TensorFlow.

    Validates (B, H, W, C) images and (P, 2) translations in TensorFlow's
    terms (symbolic tensors inside a caller's graph included), then runs
    :func:`ptycho.backends.translate_validated` on each channel plane.
    ``names`` are the caller's names of the two arrays, for messages; see
    :func:`ptycho.projective_warp_xla.translate_xla` for the rest.
    """
    interpolation = _validate.interpolation(interpolation)
    channels = _validate.positive_int(channels, "channels")
    use_jit = _validate.flag(use_jit, "use_jit")
    images = check_images(images, names[0])
    batch, height, width, depth = images.shape
    if output_size is None:
        output_size = (height, width)
    out_h, out_w = _validate.size_pair(output_size, "output_size")
    real_input = not images.dtype.is_complex
    if images.dtype in (tf.float64, tf.complex128):
        cdtype, rdtype = tf.complex128, tf.float64
    else:
        cdtype, rdtype = tf.complex64, tf.float32
    t = check_translations(translations, rdtype, batch, channels, name=names[1], images_name=names[0])
    if depth != 1 and channels != 1:
        raise InputError(f"channels={channels} needs single-channel {names[0]}, got {depth} channels")
    n = t.shape[0]
    if n == 0:
        shape = (0, out_h, out_w, depth if channels == 1 else channels)
        return tf.zeros(shape, dtype=rdtype if real_input else cdtype)

    if evaluation is None:
        evaluation = "compiled" if use_jit else "plain"
    evaluation = _validate.evaluation(evaluation)
    static = dict(output_size=(out_h, out_w), interpolation=interpolation, channels=channels,
                  source_origin=(0, 0), evaluation=evaluation)
    with on_device(device_of(images)):  # the result lives where the images live
        planes = []
        for ch in range(depth):
            source = tf.cast(images[..., ch], cdtype)  # (B, H, W)
            # (P // channels, h, w, channels)
            planes.append(translate_validated("tensorflow", source, t, jit=bool(use_jit), **static))
        out = planes[0] if depth == 1 else tf.concat(planes, axis=-1)
        if real_input:
            out = tf.math.real(out)
            if out.dtype != images.dtype and images.dtype.is_floating:
                out = tf.cast(out, images.dtype)
    return out
