"""NumPy backend: eager evaluation through ``array_api_compat.numpy``."""

from __future__ import annotations

import types
from typing import Any, Callable

import array_api_compat.numpy as _compat_np
import numpy as np



def _complex(re: np.ndarray, im: np.ndarray) -> np.ndarray:
    """Exact ``re + i*im``: writes both parts into one new complex array."""
    out = np.empty(np.broadcast_shapes(re.shape, im.shape), dtype=np.result_type(re, im, np.complex64))
    out.real = re
    out.imag = im
    return out


#: The array namespace the algorithm runs on: array-api-compat's NumPy plus ``complex``.
namespace = types.SimpleNamespace(**{k: getattr(_compat_np, k) for k in dir(_compat_np) if not k.startswith("__")})
namespace.complex = _complex
namespace.places_new_arrays = True  # one device


def compile(fn: Callable[..., Any], **static: Any) -> Callable[..., Any]:  # noqa: A001
    """NumPy runs eagerly: the function with ``static`` bound, nothing compiled."""
    import functools

    return functools.partial(fn, **static)


def asarray(x: Any, dtype: Any = None, device: Any = None) -> np.ndarray:
    return np.asarray(x, dtype=dtype)


def device_of(x: Any) -> None:
    """NumPy has one device (the host)."""
    return None


def on_device(device: Any):
    import contextlib

    return contextlib.nullcontext()


def to_numpy(x: Any) -> np.ndarray:
    return np.asarray(x)


def is_native(x: Any) -> bool:
    return isinstance(x, np.ndarray)


def precision(dtype: Any):
    import contextlib

    return contextlib.nullcontext()


def fma_guard(device: Any = None) -> None:
    """NumPy never contracts a*b + c into an FMA: no guard needed."""
    return None


# -- placement (ptycho.backends.placement): scatter-add, applied in update order --
def _scatter_add(flat_target: np.ndarray, index: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``flat_target[index[k]] += values[k]`` for k = 0, 1, ... in order (updates ``flat_target`` in place).

    ``np.add.at`` applies the updates one by one, in the target's dtype: the
    same rounding as a sequential loop, the same bits every run.
    """
    np.add.at(flat_target, index, values)
    return flat_target


def _scatter_add_rows(flat_target: np.ndarray, index: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Rows of (R, K) updates, row 0 first: ``np.add.at`` already applies them in that order."""
    np.add.at(flat_target, np.reshape(index, (-1,)), np.reshape(values, (-1,)))
    return flat_target


namespace.scatter_add = _scatter_add
namespace.scatter_add_rows = _scatter_add_rows


def all_finite(x: Any) -> bool:
    """Whether every value of ``x`` is finite."""
    return bool(np.isfinite(x).all())
