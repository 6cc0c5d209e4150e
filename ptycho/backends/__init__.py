"""Backend dispatch for the translate-then-slice engine.

One algorithm (:mod:`ptycho.backends.window`) runs on several array libraries.
Each backend is a small module with the same names -- ``namespace`` (the array
namespace the algorithm calls), ``compile`` (eager, ``jax.jit`` or
``tf.function(jit_compile=True)``), ``precision``, ``asarray``, ``to_numpy``,
``is_native`` -- so the table below is the whole dispatch.

Importing this package imports neither TensorFlow nor JAX: a backend module
is imported by :func:`get_backend` only, and :func:`backend_of` only looks at
frameworks that are already in ``sys.modules`` (the einops rule).
"""

from __future__ import annotations

import enum
import functools
import importlib
import importlib.util
import sys
import threading
from types import ModuleType
from typing import Any, Callable, ContextManager, Optional, Protocol, runtime_checkable

import numpy as np

from ptycho.errors import InputError, InputTypeError
from ptycho import _validate

__all__ = [
    "Backend",
    "BackendModule",
    "BACKENDS",
    "canonical_name",
    "available_backends",
    "get_backend",
    "backend_of",
    "extract_patches",
    "extract_patches_grouped",
]

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

    def asarray(self, x: Any, dtype: Any = None) -> Any:
        """``x`` as a native array, on the backend's default device."""

    def to_numpy(self, x: Any) -> np.ndarray:
        """A host copy of a native array."""

    def is_native(self, x: Any) -> bool:
        """Whether ``x`` is this backend's array type."""

    def fma_guard(self) -> Any:
        """A runtime 1.0 that keeps a compiler from contracting multiply-adds (None: not needed)."""


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


def _window_job(image: Any, positions: Any, fma_guard: Any, **static: Any) -> Any:
    from ptycho.backends.window import window_patches

    return window_patches(image, positions, fma_guard=fma_guard, **static)


@functools.lru_cache(maxsize=None)
def _compiled(backend_name: str, patch_size: int, interpolation: str, channels: int, padding: int):
    backend = get_backend(backend_name)
    return backend.compile(
        _window_job,
        patch_size=patch_size,
        xp=backend.namespace,
        interpolation=interpolation,
        channels=channels,
        padding=padding,
    )


def _generic_namespace(*arrays: Any) -> Any:
    """array-API namespace for arrays of a library we have no module for (CuPy, PyTorch)."""
    import array_api_compat

    try:
        return array_api_compat.array_namespace(*arrays)
    except TypeError as exc:
        raise InputTypeError(
            f"image: expected a NumPy, JAX, TensorFlow or array-API array, got {type(arrays[0]).__name__}"
        ) from exc


def extract_patches_grouped(
    image: Any,
    positions: Any,
    N: int,
    *,
    channels: int = 1,
    backend: Optional[str] = None,
    interpolation: str = "bilinear",
    padding: Optional[int] = None,
) -> Any:
    """Patches in channel layout (P // c, N, N, c); see :func:`extract_patches`.

    Position ``b*c + k`` lands in ``[b, :, :, k]`` (PtychoPINN's
    ``_flat_to_channel`` order), computed directly in that layout.
    """
    N = _validate.patch_size(N)
    channels = _validate.positive_int(channels, "channels")
    interpolation = _validate.interpolation(interpolation)
    padding = N // 2 if padding is None else _validate.non_negative_int(padding, "padding")
    if image is None:
        _validate.image_2d(image, "image")  # raises: a clear message before dispatch
    native = backend_of(image) if backend is None else None
    name = canonical_name(backend) if backend is not None else native
    if name is None:
        # An array-API array of a library without a backend module: run eagerly on it.
        from ptycho.backends.window import window_patches

        xp = _generic_namespace(image)
        _validate.image_2d(image, "image")
        positions = xp.asarray(positions)
        _validate.positions_2d(positions, "positions", channels=channels, xp=xp)
        real = xp.float64 if image.dtype in (xp.float64, xp.complex128) else xp.float32
        return window_patches(
            image, xp.astype(positions, real), N, xp=xp, interpolation=interpolation,
            channels=channels, padding=padding,
        )

    mod = get_backend(name)
    native_image = mod.is_native(image)
    if native_image:
        # check shape and dtype where the array lives: no copy to the host
        image_dtype = np.dtype(getattr(image.dtype, "as_numpy_dtype", image.dtype))
        _validate.image_2d_layout(image.shape, image_dtype, "image")
    else:
        image = _validate.image_2d(image, "image")
        image_dtype = image.dtype
    positions_np = _validate.positions_2d(
        positions, "positions", channels=channels, dtype=_validate.working_real_dtype(image_dtype)
    )
    complex_dtype = np.complex128 if image_dtype in (np.float64, np.complex128) else np.complex64
    real_dtype = np.float64 if complex_dtype == np.complex128 else np.float32
    with mod.precision(complex_dtype):
        if native_image and image_dtype == complex_dtype:
            img = image
        else:
            host = mod.to_numpy(image) if native_image else image
            img = mod.asarray(host.astype(complex_dtype, copy=False))
        pos = mod.asarray(positions_np.astype(real_dtype, copy=False))
        fn = _compiled(name, N, interpolation, channels, padding)
        return fn(img, pos, mod.fma_guard())


def extract_patches(
    image: Any,
    positions: Any,
    N: int,
    backend: Optional[str] = None,
    *,
    interpolation: str = "bilinear",
    padding: Optional[int] = None,
) -> Any:
    """Cut N x N patches centred on ``positions`` out of ``image``.

    Patch i equals PtychoPINN's legacy definition, bit for bit on a given
    backend: the object zero-padded by N // 2, translated by
    ``-positions[i]`` with zero-fill bilinear interpolation, top-left N x N
    corner kept; that is ``patch[y, x] = bilinear(padded, x + ox, y + oy)``.

    Parameters
    ----------
    image : array (H, W)
        The object, complex64/complex128 (real input is treated as complex).
    positions : array (P, 2)
        (x, y) in object pixels: x is the column, y the row.  Computed in the
        object's real precision (float32 for complex64).
    N : int
        Patch side in pixels.
    backend : {'numpy', 'jax', 'tensorflow'}, optional
        Default: the backend that owns ``image``'s array type (NumPy for
        ``np.ndarray``).  Arrays of other array-API libraries (CuPy, PyTorch)
        run eagerly through ``array_api_compat``.
    interpolation : {'bilinear', 'nearest'}
    padding : int, optional
        Zero padding of the reference definition; default N // 2.

    Returns
    -------
    array (P, N, N), complex64 or complex128, of the backend's native type
    (``np.ndarray``, ``jax.Array``, ``tf.Tensor``).
    """
    out = extract_patches_grouped(
        image, positions, N, channels=1, backend=backend,
        interpolation=interpolation, padding=padding,
    )
    name = canonical_name(backend) if backend is not None else backend_of(image)
    xp = get_backend(name).namespace if name is not None else _generic_namespace(out)
    return xp.reshape(out, tuple(out.shape)[:-1])
