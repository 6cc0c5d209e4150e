"""JAX backend: the algorithm under ``jax.jit`` (the cross-check oracle).

complex128 inputs run inside ``jax.enable_x64(True)``, so users need not turn
64-bit mode on globally.
"""

from __future__ import annotations

import contextlib
import types
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

name = "jax"
extra = "jax"

#: jax.numpy is an array-API namespace; we add only the exact ``complex``.
namespace = types.SimpleNamespace(**{k: getattr(jnp, k) for k in dir(jnp) if not k.startswith("__")})
namespace.complex = jax.lax.complex


def compile(fn: Callable[..., Any], **static: Any) -> Callable[..., Any]:  # noqa: A001
    """``jax.jit`` with ``static`` bound as compile-time constants."""
    import functools

    return jax.jit(functools.partial(fn, **static))


def precision(dtype: Any) -> contextlib.AbstractContextManager:
    """Context in which arrays of ``dtype`` keep their precision."""
    if np.dtype(dtype) in (np.dtype(np.float64), np.dtype(np.complex128)):
        return jax.enable_x64(True)
    return contextlib.nullcontext()


def asarray(x: Any, dtype: Any = None) -> Any:
    return jnp.asarray(x, dtype=dtype)


def to_numpy(x: Any) -> np.ndarray:
    return np.asarray(x)


def is_native(x: Any) -> bool:
    return isinstance(x, jax.Array)


def fma_guard() -> Any:
    """A runtime 1.0 (see ``fma_guard`` in :func:`ptycho.backends.window.translate_window`)."""
    return jnp.ones((), dtype=jnp.float32)
