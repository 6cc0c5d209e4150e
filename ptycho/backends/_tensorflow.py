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
from typing import Any, Callable

import numpy as np
import tensorflow as tf



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


def _asarray(x: Any, *, dtype: Any = None) -> tf.Tensor:
    return tf.convert_to_tensor(x, dtype=dtype)


def _concat(arrays: Any, *, axis: int = 0) -> tf.Tensor:
    return tf.concat(list(arrays), axis=axis)


def _stack(arrays: Any, *, axis: int = 0) -> tf.Tensor:
    return tf.stack(list(arrays), axis=axis)


def _round(x: tf.Tensor) -> tf.Tensor:
    return tf.round(x)  # half to even, as the array API


#: The adapter namespace: the ~20 array-API functions the algorithm uses.
namespace = types.SimpleNamespace(
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
    reshape=lambda x, shape: tf.reshape(x, shape),
    concat=_concat,
    stack=_stack,
    take=_take,
    where=tf.where,
    clip=_clip,
    floor=tf.floor,
    round=_round,
    real=tf.math.real,
    imag=tf.math.imag,
    complex=tf.complex,
)


def compile(fn: Callable[..., Any], **static: Any) -> Callable[..., Any]:  # noqa: A001
    """``tf.function(jit_compile=True)`` with ``static`` bound as constants."""

    def bound(*arrays: tf.Tensor) -> tf.Tensor:
        return fn(*arrays, **static)

    return tf.function(bound, jit_compile=True)


def precision(dtype: Any) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()


def asarray(x: Any, dtype: Any = None) -> tf.Tensor:
    return tf.convert_to_tensor(x, dtype=dtype)


def to_numpy(x: Any) -> np.ndarray:
    return x.numpy() if hasattr(x, "numpy") else np.asarray(x)


def is_native(x: Any) -> bool:
    return isinstance(x, (tf.Tensor, tf.Variable))


def fma_guard() -> tf.Tensor:
    """A runtime 1.0 (see ``fma_guard`` in :func:`ptycho.backends.window.translate_window`)."""
    return tf.ones((), dtype=tf.float32)
