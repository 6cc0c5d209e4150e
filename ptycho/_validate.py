"""Argument checks shared by the public entry points.

Every check raises ``TypeError`` (wrong kind of thing) or ``ValueError``
(right kind, wrong value) with a message naming the argument, what was
expected and what was received, before any array reaches TensorFlow or XLA.
"""

from __future__ import annotations

import numbers
from typing import Any, Optional

import numpy as np

INTERPOLATIONS = ("bilinear", "nearest")


def _describe(x: Any) -> str:
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", None)
    if shape is not None:
        return f"{type(x).__name__} of shape {tuple(shape)} and dtype {dtype}"
    return f"{type(x).__name__} {x!r}"[:120]


def positive_int(value: Any, name: str) -> int:
    """``value`` as a Python int > 0 (integral floats such as 64.0 are refused)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive integer, got {_describe(value)}")
    if int(value) <= 0:
        raise ValueError(f"{name} must be a positive integer, got {int(value)}")
    return int(value)


def non_negative_int(value: Any, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a non-negative integer, got {_describe(value)}")
    if int(value) < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {int(value)}")
    return int(value)


def patch_size(N: Any) -> int:
    return positive_int(N, "N")


def interpolation(value: Any) -> str:
    if value not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {value!r}")
    return value


def to_numpy(x: Any, name: str) -> np.ndarray:
    """Any array-like (NumPy, JAX, TF, list) as a NumPy array, without copying NumPy input."""
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "numpy") and callable(x.numpy):  # tf.Tensor, tf.Variable
        try:
            return np.asarray(x.numpy())
        except Exception:  # pragma: no cover - symbolic tensors
            pass
    try:
        return np.asarray(x)
    except Exception as exc:
        raise TypeError(f"{name} must be an array, got {_describe(x)}") from exc


def numeric_dtype(arr: np.ndarray, name: str) -> None:
    kind = arr.dtype.kind
    if kind not in "iufc":
        raise TypeError(
            f"{name} must have a real or complex numeric dtype, got dtype {arr.dtype}"
        )


def image_2d(image: Any, name: str = "image") -> np.ndarray:
    """A 2-D, non-empty, numeric object (H, W)."""
    if image is None:
        raise TypeError(f"{name} must be a 2-D array (H, W), got None")
    arr = to_numpy(image, name)
    numeric_dtype(arr, name)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (H, W), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} must not be empty, got shape {arr.shape}")
    return arr


def finite(arr: np.ndarray, name: str) -> None:
    if arr.size and not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(
            f"{name} must be finite; got {arr[tuple(bad)]} at index {tuple(int(i) for i in bad)}"
        )


def positions_2d(positions: Any, name: str = "positions", *, channels: int = 1, xp: Optional[Any] = None) -> np.ndarray:
    """Positions (P, 2) in (x, y), finite, real; P a multiple of ``channels``."""
    if positions is None:
        raise TypeError(f"{name} must be an array of shape (P, 2) holding (x, y), got None")
    if xp is not None and not isinstance(positions, np.ndarray):
        # foreign array-API array (CuPy, torch): check shape only, values on the host
        shape = tuple(positions.shape)
        if len(shape) != 2 or shape[1] != 2:
            raise ValueError(f"{name} must have shape (P, 2) holding (x, y), got shape {shape}")
        return positions
    arr = to_numpy(positions, name)
    numeric_dtype(arr, name)
    if arr.dtype.kind == "c":
        raise TypeError(f"{name} must be real (x, y) pixel coordinates, got dtype {arr.dtype}")
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name} must have shape (P, 2) holding (x, y), got shape {arr.shape}")
    if arr.shape[0] % channels:
        raise ValueError(
            f"{name}: the number of positions ({arr.shape[0]}) must be a multiple of the "
            f"channel count c = {channels}"
        )
    finite(arr, name)
    return arr
