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


def compile(fn: Callable[..., Any], **static: Any) -> Callable[..., Any]:  # noqa: A001
    """NumPy runs eagerly: the function with ``static`` bound, nothing compiled."""
    import functools

    return functools.partial(fn, **static)


def asarray(x: Any, dtype: Any = None) -> np.ndarray:
    return np.asarray(x, dtype=dtype)


def to_numpy(x: Any) -> np.ndarray:
    return np.asarray(x)


def is_native(x: Any) -> bool:
    return isinstance(x, np.ndarray)


def precision(dtype: Any):
    import contextlib

    return contextlib.nullcontext()


def fma_guard() -> None:
    """NumPy never contracts a*b + c into an FMA: no guard needed."""
    return None
