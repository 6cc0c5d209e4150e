"""Argument checks shared by the public entry points.

Every check raises :class:`~ptycho.errors.InputTypeError` (a ``TypeError``: wrong
kind of thing) or :class:`~ptycho.errors.InputError` (a ``ValueError``: right kind,
wrong value) with a message naming the argument, what was
expected and what was received, before any array reaches TensorFlow or XLA.

Decisions (documented in ``docs/BAD_INPUTS.md``):

- objects may be real or complex, integer or floating; real input is treated
  as complex with zero imaginary part.  Boolean, string and object arrays are
  refused: a mask is not an object, and silently reading True as 1 hides a
  mistake.
- positions and offsets must be real (integer or floating), finite, and
  representable in the working precision (float32 for a complex64 object):
  a finite float64 position such as 1e39 would become infinite in float32 and
  turn a patch into NaN instead of zeros.
- non-finite *object* values are accepted: they are data, and they propagate
  to exactly the patches whose bilinear stencil touches them.
"""

from __future__ import annotations

import numbers
from typing import Any, Optional, Tuple

import numpy as np

from ptycho.errors import InputError, InputTypeError

INTERPOLATIONS = ("bilinear", "nearest")
#: Evaluation orders of the bilinear sum: PtychoPINN's compiled (XLA, fused
#: multiply-adds) and plain (eager) paths.
EVALUATIONS = ("compiled", "plain")


def describe(x: Any) -> str:
    """Short, deterministic description of a received value for error messages."""
    if x is None:
        return "None"
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", None)
    if shape is not None and dtype is not None:
        try:
            return f"{type(x).__name__} of shape {tuple(shape)} and dtype {dtype}"
        except TypeError:  # symbolic shapes with unknown dimensions
            return f"{type(x).__name__} of shape {shape} and dtype {dtype}"
    text = repr(x)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(x).__name__} {text}"


def _is_integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def positive_int(value: Any, name: str) -> int:
    """``value`` as a Python int > 0.

    Booleans and floats (even integral ones such as 64.0) are refused: a
    float patch size is almost always a computed value that went wrong.
    """
    if not _is_integer(value):
        raise InputTypeError(f"{name} must be a positive integer, got {describe(value)}")
    if int(value) <= 0:
        raise InputError(f"{name} must be a positive integer, got {int(value)}")
    return int(value)


def non_negative_int(value: Any, name: str) -> int:
    """``value`` as a Python int >= 0 (booleans and floats refused)."""
    if not _is_integer(value):
        raise InputTypeError(f"{name} must be a non-negative integer, got {describe(value)}")
    if int(value) < 0:
        raise InputError(f"{name} must be a non-negative integer, got {int(value)}")
    return int(value)


def optional_positive_int(value: Any, name: str) -> Optional[int]:
    """None, or a positive integer (see :func:`positive_int`)."""
    if value is None:
        return None
    if not _is_integer(value):
        raise InputTypeError(f"{name} must be None or a positive integer, got {describe(value)}")
    if int(value) <= 0:
        raise InputError(f"{name} must be None or a positive integer, got {int(value)}")
    return int(value)


def flag(value: Any, name: str) -> bool:
    """A boolean switch: ``bool``, ``np.bool_`` or the integers 0 and 1.

    Strings are refused because ``bool("False")`` is True.
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if _is_integer(value) and int(value) in (0, 1):
        return bool(value)
    raise InputTypeError(f"{name} must be True or False, got {describe(value)}")


def patch_size(N: Any) -> int:
    """The patch side ``N``: a positive integer."""
    return positive_int(N, "N")


def interpolation(value: Any) -> str:
    """One of :data:`INTERPOLATIONS`."""
    if not isinstance(value, str) or value not in INTERPOLATIONS:
        raise InputError(
            f"interpolation must be one of {INTERPOLATIONS}, got {describe(value)}"
        )
    return value


def evaluation(value: Any) -> str:
    """One of :data:`EVALUATIONS`."""
    if not isinstance(value, str) or value not in EVALUATIONS:
        raise InputError(f"evaluation must be one of {EVALUATIONS}, got {describe(value)}")
    return value


def int_pair(value: Any, name: str) -> Tuple[int, int]:
    """A pair of integers (any sign), e.g. an origin (row, col)."""
    try:
        items = list(value)
    except TypeError:
        raise InputTypeError(f"{name} must be a pair of integers, got {describe(value)}") from None
    if len(items) != 2 or not all(_is_integer(v) for v in items):
        raise InputError(f"{name} must be a pair of integers, got {describe(value)}")
    return int(items[0]), int(items[1])


def integer_rows(value: Any, name: str, count: int) -> np.ndarray:
    """An integer array (count, 2), e.g. per-translation window origins (row, col)."""
    arr = to_numpy(value, name)
    if arr.dtype.kind not in "iu":
        raise InputTypeError(f"{name} must be an integer array of shape ({count}, 2), got dtype {arr.dtype}")
    if arr.shape != (count, 2):
        raise InputError(f"{name} must have shape ({count}, 2) (row, col), got shape {arr.shape}")
    if arr.size and int(np.max(np.abs(arr.astype(np.int64)))) >= 2**24:
        raise InputError(f"{name} must lie within +-2**24 (exact in float32), got {arr.max()}")
    return arr.astype(np.int32 if arr.size == 0 or int(np.max(np.abs(arr))) < 2**31 else np.int64)


def size_pair(value: Any, name: str) -> Tuple[int, int]:
    """A window size (h, w) of two positive integers."""
    if isinstance(value, (str, bytes)):
        raise InputTypeError(f"{name} must be a pair (height, width) of positive integers, got {describe(value)}")
    try:
        items = list(value)
    except TypeError:
        raise InputTypeError(
            f"{name} must be a pair (height, width) of positive integers, got {describe(value)}"
        ) from None
    if len(items) != 2:
        raise InputError(
            f"{name} must be a pair (height, width) of positive integers, got {len(items)} values {tuple(items)!r}"
        )
    return positive_int(items[0], f"{name}[0]"), positive_int(items[1], f"{name}[1]")


def to_numpy(x: Any, name: str) -> np.ndarray:
    """Any array-like (NumPy, JAX, TF, nested list) as a NumPy array.

    NumPy input is returned as is (no copy).  ``None`` and ragged sequences
    are refused with a message naming ``name``.
    """
    if isinstance(x, np.ndarray):
        return x
    if x is None:
        raise InputTypeError(f"{name} must be an array, got None")
    if hasattr(x, "numpy") and callable(x.numpy):  # tf.Tensor, tf.Variable
        try:
            return np.asarray(x.numpy())
        except Exception:  # pragma: no cover - symbolic tensors fall through
            pass
    try:
        return np.asarray(x)
    except Exception as exc:  # ragged nesting, symbolic tensors, exotic objects
        raise InputTypeError(
            f"{name} must be an array (a rectangular, numeric nesting of sequences), "
            f"got {describe(x)}"
        ) from exc


def numeric_dtype(arr: np.ndarray, name: str, *, real: bool = False) -> None:
    """Refuse booleans, strings, objects (and complex numbers when ``real``)."""
    kind = arr.dtype.kind
    if real:
        if kind not in "iuf":
            raise InputTypeError(
                f"{name} must have a real numeric dtype (integer or floating), got dtype {arr.dtype}"
            )
    elif kind not in "iufc":
        raise InputTypeError(
            f"{name} must have a real or complex numeric dtype, got dtype {arr.dtype}"
        )


def image_2d(image: Any, name: str = "image") -> np.ndarray:
    """A 2-D, non-empty, numeric object (H, W), as a NumPy array."""
    if image is None:
        raise InputTypeError(f"{name} must be a 2-D array (H, W), got None")
    arr = to_numpy(image, name)
    image_2d_layout(arr.shape, arr.dtype, name)
    return arr


def image_2d_layout(shape: Any, dtype: Any, name: str = "image") -> None:
    """The checks of :func:`image_2d` on shape and dtype alone.

    For arrays that stay where they are (a JAX array on a GPU, a tf.Tensor):
    nothing is copied to the host.
    """
    numeric_dtype(np.empty(0, dtype=dtype), name)
    shape = tuple(shape)
    if len(shape) != 2:
        raise InputError(f"{name} must be 2-D (H, W), got shape {shape}")
    if shape[0] == 0 or shape[1] == 0:
        raise InputError(f"{name} must not be empty, got shape {shape}")


def finite(arr: np.ndarray, name: str, *, dtype: Any = None) -> None:
    """Refuse NaN/inf; with ``dtype`` (a float dtype) also values that overflow it.

    The second check is about the working precision: positions are computed
    in the object's real precision, and a float64 value beyond the float32
    range would become infinite there.
    """
    if not arr.size:
        return
    if arr.dtype.kind in "fc":
        bad_mask = ~np.isfinite(arr)
        if bad_mask.any():
            bad = np.argwhere(bad_mask)[0]
            raise InputError(
                f"{name} must be finite; got {arr[tuple(bad)]} at index {tuple(int(i) for i in bad)}"
            )
    if dtype is None:
        return
    limit = float(np.finfo(dtype).max)
    magnitude = np.abs(arr.astype(np.float64, copy=False))
    over = magnitude > limit
    if over.any():
        bad = np.argwhere(over)[0]
        raise InputError(
            f"{name} must lie within the {np.dtype(dtype).name} range (|value| <= {limit:.7g}) "
            f"of the computation; got {arr[tuple(bad)]} at index {tuple(int(i) for i in bad)}"
        )


def working_dtypes(dtype: Any) -> Tuple[np.dtype, np.dtype]:
    """(complex, real) working dtypes of an object of ``dtype``: the one complex-dtype rule.

    float64 and complex128 objects compute in (complex128, float64); every other
    numeric dtype (integers, float16, float32, complex64) in (complex64, float32).
    ``dtype`` may be a NumPy dtype or anything with ``as_numpy_dtype`` (tf.DType).
    """
    dtype = np.dtype(getattr(dtype, "as_numpy_dtype", dtype))
    if dtype in (np.dtype(np.float64), np.dtype(np.complex128)):
        return np.dtype(np.complex128), np.dtype(np.float64)
    return np.dtype(np.complex64), np.dtype(np.float32)


def working_real_dtype(dtype: Any) -> type:
    """float64 for float64/complex128 objects, float32 for everything else."""
    return working_dtypes(dtype)[1].type


#: What each kind of coordinate pair is called in messages.
_PAIRS = {"(x, y)": "(x, y) pixel coordinates", "(tx, ty)": "(tx, ty) pixels"}


def pairs_layout(shape: Any, dtype: Any, name: str, *, holding: str = "(x, y)", channels: int = 1) -> None:
    """The checks of (P, 2) coordinate pairs on shape and dtype alone (``dtype`` None: shape only).

    Real numeric dtype, shape (P, 2), P a multiple of ``channels``.  For
    arrays checked where they live (a JAX array, a tf.Tensor, a PyTorch
    tensor) as much as for host arrays.
    """
    if dtype is not None:
        dtype = np.dtype(dtype)
        if dtype.kind == "c":
            raise InputTypeError(f"{name} must be real {_PAIRS[holding]}, got dtype {dtype}")
        numeric_dtype(np.empty(0, dtype=dtype), name, real=True)
    shape = tuple(shape)
    if len(shape) != 2 or shape[1] != 2:
        raise InputError(f"{name} must have shape (P, 2) holding {holding}, got shape {shape}")
    if shape[0] is not None and shape[0] % channels:
        raise InputError(
            f"{name}: the number of positions must be a multiple of the channel count "
            f"c = {channels}, got {shape[0]} positions"
        )


def translations_2d(translations: Any, name: str = "translations", *, dtype: Any = None) -> np.ndarray:
    """Translations (P, 2) holding (tx, ty): real and finite in the working real ``dtype``."""
    if translations is None:
        raise InputTypeError(f"{name} must be an array of shape (P, 2) holding (tx, ty), got None")
    arr = to_numpy(translations, name)
    pairs_layout(arr.shape, arr.dtype, name, holding="(tx, ty)")
    finite(arr, name, dtype=dtype)
    return arr


def positions_2d(
    positions: Any,
    name: str = "positions",
    *,
    channels: int = 1,
    xp: Optional[Any] = None,
    dtype: Any = None,
) -> np.ndarray:
    """Positions (P, 2) in (x, y): real, finite, P a multiple of ``channels``.

    ``dtype`` is the working real dtype (float32 or float64): values must be
    representable in it.
    """
    if positions is None:
        raise InputTypeError(f"{name} must be an array of shape (P, 2) holding (x, y), got None")
    if xp is not None and not isinstance(positions, np.ndarray):
        # A foreign array-API array (CuPy, PyTorch) stays where it lives: its shape
        # and count are checked here, its values by the caller on its device
        # (ptycho.backends: one reduction, one flag to the host).
        pairs_layout(positions.shape, None, name, channels=channels)
        return positions
    arr = to_numpy(positions, name)
    pairs_layout(arr.shape, arr.dtype, name, channels=channels)
    finite(arr, name, dtype=dtype)
    return arr
