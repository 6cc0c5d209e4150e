"""Dispatch: which backend runs a call, and how arrays get there.

The ``Backend`` enum is the dispatch table (module, package, pip extra);
``BackendModule`` is what each backend module provides; ``get_backend``
imports one on demand, ``backend_of`` recognises an array's owner among the
frameworks already imported (never importing one: the einops rule), and
``compile_job`` is the one compile cache.  The helpers below them check and
place inputs where a computation will run.  The public names are re-exported
by :mod:`ptycho.backends`; :mod:`ptycho.backends.placement` imports them from
here, so the package and its modules form no import cycle.
"""

from __future__ import annotations

import enum
import functools
import importlib
import importlib.util
import os
import sys
import threading
from types import ModuleType
from typing import Any, Callable, ContextManager, Optional, Protocol, runtime_checkable

import numpy as np

from ptycho import _validate
from ptycho.errors import InputError, InputTypeError


class Backend(enum.Enum):
    """A backend of the engine; the value is its name in :func:`get_backend`.

    The dispatch table is this enum: each member knows the module that
    implements :class:`BackendModule`, the package it needs and the pip extra
    that installs it.  Adding a backend is one member here plus one module.
    """

    NUMPY = "numpy"
    JAX = "jax"
    TENSORFLOW = "tensorflow"

    @property
    def module_name(self) -> str:
        """The ``ptycho.backends`` module implementing :class:`BackendModule`."""
        return _MODULES[self][0]

    @property
    def modname(self) -> str:
        """The top-level package the backend needs (``numpy``, ``jax``, ``tensorflow``)."""
        return _MODULES[self][1]

    @property
    def extra(self) -> Optional[str]:
        """The pip extra that installs it (None: always installed)."""
        return _MODULES[self][2]

    def installed(self) -> bool:
        """Whether its package can be imported (nothing is imported)."""
        return _installed(self.modname)

    def pytest_param(self) -> Any:
        """``pytest.param(self, id=name)`` for parametrized test matrices."""
        import pytest

        return pytest.param(self, id=self.value)


#: Backend -> (backend module, top-level package it needs, pip extra)
_MODULES = {
    Backend.NUMPY: ("ptycho.backends._numpy", "numpy", None),
    Backend.JAX: ("ptycho.backends._jax", "jax", "jax"),
    Backend.TENSORFLOW: ("ptycho.backends._tensorflow", "tensorflow", "tf"),
}
_ALIASES = {"np": "numpy", "tf": "tensorflow", "jnp": "jax", "jax.numpy": "jax"}

#: Names of the backends this package knows, importable or not.
BACKENDS = tuple(b.value for b in Backend)


@runtime_checkable
class BackendModule(Protocol):
    """What a backend module (``ptycho.backends._numpy``, ``_jax``, ``_tensorflow``) provides."""

    #: The array namespace the window algorithm calls (array-API functions plus ``complex``).
    namespace: Any

    def compile(self, fn: Callable[..., Any], **static: Any) -> Callable[..., Any]:
        """``fn`` with ``static`` bound as compile-time constants, compiled if the backend compiles."""

    def precision(self, dtype: Any) -> ContextManager[Any]:
        """A context in which arrays of ``dtype`` keep their precision (JAX's x64 mode)."""

    def asarray(self, x: Any, dtype: Any = None, device: Any = None) -> Any:
        """``x`` as a native array, on ``device`` (default: the backend's default device)."""

    def device_of(self, x: Any) -> Any:
        """The device native ``x`` lives on (None: unknown, traced, or the only one)."""

    def on_device(self, device: Any) -> ContextManager[Any]:
        """A context in which computations run on ``device`` (a no-op for None)."""

    def to_numpy(self, x: Any) -> np.ndarray:
        """A host copy of a native array."""

    def is_native(self, x: Any) -> bool:
        """Whether ``x`` is this backend's array type."""

    def fma_guard(self, device: Any = None) -> Any:
        """A runtime 1.0 that keeps a compiler from contracting multiply-adds (None: not needed)."""

    def all_finite(self, x: Any) -> Optional[bool]:
        """Whether every value of native ``x`` is finite, computed where ``x`` lives.

        None when it cannot be known (a traced or symbolic array).
        """


_import_lock = threading.Lock()


def available_backends() -> list[str]:
    """Names of the known backends whose library is installed (nothing is imported)."""
    return [b.value for b in Backend if b.installed()]


def _installed(package: str) -> bool:
    if sys.modules.get(package) is not None:
        return True
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def canonical_name(name: str) -> str:
    """The backend's canonical name for ``name`` or an alias (``'tf'``, ``'np'``, ``'jnp'``)."""
    if not isinstance(name, str):
        raise InputTypeError(f"backend must be a string such as 'numpy', got {type(name).__name__}")
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in BACKENDS:
        raise InputError(
            f"backend must be one of the known backends {', '.join(BACKENDS)} "
            f"(available here: {', '.join(available_backends()) or 'none'}), got unknown backend {name!r}"
        )
    return key


def get_backend(name: str) -> ModuleType:
    """The backend module for ``name`` ('numpy', 'jax' or 'tensorflow').

    Raises
    ------
    ValueError
        ``name`` is not a known backend (the message lists the available ones).
    ImportError
        The backend is known but its library is not installed (the message
        names the extra to install).
    """
    key = canonical_name(name)
    member = Backend(key)
    package, extra = member.modname, member.extra
    if not member.installed():
        hint = f"pip install 'ptycho[{extra}]'" if extra else f"pip install {package}"
        raise ImportError(
            f"backend {key!r} needs the {package!r} package, which is not installed; "
            f"install it with: {hint}"
        )
    # Always through import_module, never a bare sys.modules lookup: while one
    # thread imports the backend, sys.modules already holds the module, only
    # partly initialised; import_module waits for the import to finish.
    with _import_lock:
        return importlib.import_module(member.module_name)


def backend_of(x: Any) -> Optional[str]:
    """The backend name for array ``x``, or None for a type no backend owns.

    Only frameworks already imported are checked, so this never imports one.
    """
    if isinstance(x, np.ndarray):
        return "numpy"
    for member in (Backend.TENSORFLOW, Backend.JAX):
        if sys.modules.get(member.modname) is not None and get_backend(member.value).is_native(x):
            return member.value
    return None


@functools.lru_cache(maxsize=None)
def _compile_cached(backend_name: str, job: Callable[..., Any], static: tuple) -> Callable[..., Any]:
    backend = get_backend(backend_name)
    return backend.compile(job, xp=backend.namespace, **dict(static))


def job_name(fn: Any) -> Optional[str]:
    """The name of an engine job of ``ptycho.backends`` (any of its modules), e.g. ``'extract_job'``; None
    for any other function.  The NumPy and JAX backends chunk the windowed jobs they recognise by it."""
    module = getattr(fn, "__module__", None) or ""
    if module == "ptycho.backends" or module.startswith("ptycho.backends."):
        return getattr(fn, "__qualname__", None)
    return None


def compile_job(backend_name: str, job: Callable[..., Any], *, jit: bool = True, **static: Any) -> Callable[..., Any]:
    """``job`` compiled by a backend, with ``static`` bound as compile-time constants.

    ``job(*arrays, xp=..., **static)`` is a module-level function written
    against the array API.  Compiled functions are cached per
    (backend, job, static), so each shape-independent program is built once:
    ``jax.jit`` / ``tf.function(jit_compile=True)`` then cache per input shape.
    ``jit=False`` binds the arguments without compiling (TensorFlow: runs
    eagerly, or inside the caller's graph).
    """
    name = canonical_name(backend_name)
    if not jit:
        return functools.partial(job, xp=get_backend(name).namespace, **static)
    key = tuple(sorted(static.items()))
    if _native_candidate(name, job, static):
        return _verified_cached(name, job, key)
    return _compile_cached(name, job, key)


#: Backends whose compiler contracts PtychoPINN's expression into the compiled order (XLA).
_NATIVE_BACKENDS = ("jax", "tensorflow")


def _native_candidate(name: str, job: Callable[..., Any], static: dict) -> bool:
    """Whether the compiled order of ``job`` can run as XLA's own contraction, verified
    (:mod:`ptycho.backends.native`): the bilinear extraction and translation jobs on XLA."""
    from ptycho.backends import native

    return (name in _NATIVE_BACKENDS and static.get("evaluation") == "compiled"
            and static.get("interpolation", "bilinear") == "bilinear" and job_name(job) in native.JOBS)


@functools.lru_cache(maxsize=None)
def _verified_cached(backend_name: str, job: Callable[..., Any], static: tuple) -> Callable[..., Any]:
    """``job`` in the compiled order: XLA's contraction where a check passed, else the emulation."""
    from ptycho.backends import native

    options = dict(static)
    native_static = tuple(sorted({**options, "evaluation": "native"}.items()))
    return native.VerifiedJob(
        backend_name, get_backend(backend_name), job, options,
        native=_compile_cached(backend_name, job, native_static),
        emulated=lambda: _compile_cached(backend_name, job, static),
    )


def generic_namespace(*arrays: Any) -> Any:
    """array-API namespace for arrays of a library we have no module for (CuPy, PyTorch)."""
    import array_api_compat

    try:
        return array_api_compat.array_namespace(*arrays)
    except TypeError as exc:
        raise InputTypeError(
            f"image: expected a NumPy, JAX, TensorFlow or array-API array, got {type(arrays[0]).__name__}"
        ) from exc


def foreign_dtype(array: Any) -> np.dtype:
    """The NumPy dtype of an array-API array of another library (torch.complex64 -> complex64)."""
    dtype = array.dtype
    try:
        return np.dtype(dtype)
    except TypeError:
        return np.dtype(str(dtype).rsplit(".", 1)[-1])


def resolve(array: Any, backend: Optional[str]) -> Optional[str]:
    """The backend name to run on: ``backend``, else the owner of ``array``'s type (None: generic)."""
    return canonical_name(backend) if backend is not None else backend_of(array)


def native_dtype(array: Any) -> np.dtype:
    return np.dtype(getattr(array.dtype, "as_numpy_dtype", array.dtype))


def real_rows(
    value: Any, name: str, mod: Any, real_dtype: np.dtype, *, channels: int = 1, holding: str = "(x, y)",
    device: Any = None,
) -> Any:
    """(P, 2) real coordinates as a native array of ``real_dtype``, checked where they live.

    A native array is checked for shape and dtype without leaving its device,
    cast there, and its values for finiteness (in ``real_dtype``: 1e39 is not
    a float32) by a reduction on the device; only a failing check copies it
    to the host, to name the bad value.  Other input is checked on the host.
    """
    if not mod.is_native(value) or isinstance(value, np.ndarray):
        if holding == "(x, y)":
            arr = _validate.positions_2d(value, name, channels=channels, dtype=real_dtype)
        else:
            arr = _validate.translations_2d(value, name, dtype=real_dtype)
        return mod.asarray(arr.astype(real_dtype, copy=False), device=device)
    dtype = native_dtype(value)
    _validate.pairs_layout(value.shape, dtype, name, holding=holding, channels=channels)
    cast = value if dtype == real_dtype else mod.namespace.astype(value, getattr(mod.namespace, real_dtype.name))
    if mod.all_finite(cast) is False:
        # the error path only: name the first bad value, as the host check does
        _validate.finite(mod.to_numpy(value), name, dtype=real_dtype)
        _validate.finite(mod.to_numpy(cast), name)
    return cast


def to_working(mod: Any, array: Any, native: bool, dtype: np.dtype, device: Any = None) -> Any:
    """``array`` as a native array of ``dtype``: a native array is cast where it lives,
    host data goes to ``device`` (default: the backend's default device)."""
    if native:
        if native_dtype(array) == dtype:
            return array
        with mod.on_device(mod.device_of(array)):
            return mod.namespace.astype(array, getattr(mod.namespace, dtype.name))
    return mod.asarray(np.asarray(array).astype(dtype, copy=False), device=device)


def home(mod: Any, *arrays: Any) -> Any:
    """Where a computation runs: the device of the first native array among ``arrays``
    (the image first); None -- the backend's default device -- for host input."""
    for array in arrays:
        if mod.is_native(array) and not isinstance(array, np.ndarray):
            device = mod.device_of(array)
            if device is not None:
                return device
    return None


def clear_compile_cache() -> None:
    """Forget every compiled job and every verdict of a native program (tests that change a
    module-level constant recompile)."""
    _compile_cached.cache_clear()
    _verified_cached.cache_clear()
    if "ptycho.backends.native" in sys.modules:
        sys.modules["ptycho.backends.native"].reset()


def to_host(x: Any) -> np.ndarray:
    """A host NumPy copy of any backend's array (tf.Tensor, jax.Array, CuPy, PyTorch)."""
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "numpy") and not hasattr(x, "get"):
        try:
            return np.asarray(x.numpy())
        except (TypeError, RuntimeError):  # a PyTorch tensor on a GPU
            return np.asarray(x.cpu().numpy())
    if hasattr(x, "get"):  # CuPy
        return np.asarray(x.get())
    return np.asarray(x)


def kernel_threads() -> int:
    """Threads of one Numba kernel call: ``NUMBA_NUM_THREADS`` if set, else the CPUs this process may use.

    Here, not in the kernel's module, so that a scale client can read it without importing Numba.
    """
    env = os.environ.get("NUMBA_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)
