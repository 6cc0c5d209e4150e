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
from typing import Any, Callable, ContextManager, Optional, Protocol, Tuple, runtime_checkable

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
    "compile_job",
    "extract_job",
    "translate_job",
    "extract_patches",
    "extract_patches_grouped",
    "translate",
    "translate_validated",
    "place_patches",
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


# ---------------------------------------------------------------------------
# Jobs (public: the scale-out runners compile them with their own shardings):
# module-level functions of arrays, compiled once per backend and static
# arguments by compile_job.  Every entry point below runs one of them.
# ---------------------------------------------------------------------------


def extract_job(image: Any, positions: Any, fma_guard: Any, *, xp: Any, **static: Any) -> Any:
    from ptycho.backends.window import window_patches

    return window_patches(image, positions, xp=xp, fma_guard=fma_guard, **static)


def translate_job(
    images: Any, translations: Any, fma_guard: Any, output_origin: Any = None, *, xp: Any, **static: Any
) -> Any:
    from ptycho.backends.window import translate_window

    return translate_window(
        images, translations, xp=xp, output_origin=output_origin, fma_guard=fma_guard, **static
    )


@functools.lru_cache(maxsize=None)
def _compile_cached(backend_name: str, job: Callable[..., Any], static: tuple) -> Callable[..., Any]:
    backend = get_backend(backend_name)
    return backend.compile(job, xp=backend.namespace, **dict(static))


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
    return _compile_cached(name, job, tuple(sorted(static.items())))


def _generic_namespace(*arrays: Any) -> Any:
    """array-API namespace for arrays of a library we have no module for (CuPy, PyTorch)."""
    import array_api_compat

    try:
        return array_api_compat.array_namespace(*arrays)
    except TypeError as exc:
        raise InputTypeError(
            f"image: expected a NumPy, JAX, TensorFlow or array-API array, got {type(arrays[0]).__name__}"
        ) from exc


def _foreign_dtype(array: Any) -> np.dtype:
    """The NumPy dtype of an array-API array of another library (torch.complex64 -> complex64)."""
    dtype = array.dtype
    try:
        return np.dtype(dtype)
    except TypeError:
        return np.dtype(str(dtype).rsplit(".", 1)[-1])


def _resolve(array: Any, backend: Optional[str]) -> Optional[str]:
    """The backend name to run on: ``backend``, else the owner of ``array``'s type (None: generic)."""
    return canonical_name(backend) if backend is not None else backend_of(array)


def _native_dtype(array: Any) -> np.dtype:
    return np.dtype(getattr(array.dtype, "as_numpy_dtype", array.dtype))


def _real_rows(
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
    shape = tuple(value.shape)
    dtype = _native_dtype(value)
    if dtype.kind == "c":
        raise InputTypeError(f"{name} must be real {holding} pixel coordinates, got dtype {dtype}")
    if dtype.kind not in "iuf":
        raise InputTypeError(f"{name} must be real {holding} pixel coordinates, got dtype {dtype}")
    if len(shape) != 2 or shape[1] != 2:
        raise InputError(f"{name} must have shape (P, 2) holding {holding}, got shape {shape}")
    if shape[0] is not None and shape[0] % channels:
        raise InputError(
            f"{name}: the number of positions must be a multiple of the channel count "
            f"c = {channels}, got {shape[0]} positions"
        )
    cast = value if dtype == real_dtype else mod.namespace.astype(value, getattr(mod.namespace, real_dtype.name))
    if mod.all_finite(cast) is False:
        # the error path only: name the first bad value, as the host check does
        _validate.finite(mod.to_numpy(value), name, dtype=real_dtype)
        _validate.finite(mod.to_numpy(cast), name)
    return cast


def _to_working(mod: Any, array: Any, native: bool, dtype: np.dtype, device: Any = None) -> Any:
    """``array`` as a native array of ``dtype``: a native array is cast where it lives,
    host data goes to ``device`` (default: the backend's default device)."""
    if native:
        if _native_dtype(array) == dtype:
            return array
        with mod.on_device(mod.device_of(array)):
            return mod.namespace.astype(array, getattr(mod.namespace, dtype.name))
    return mod.asarray(np.asarray(array).astype(dtype, copy=False), device=device)


def _home(mod: Any, *arrays: Any) -> Any:
    """Where a computation runs: the device of the first native array among ``arrays``
    (the image first); None -- the backend's default device -- for host input."""
    for array in arrays:
        if mod.is_native(array) and not isinstance(array, np.ndarray):
            device = mod.device_of(array)
            if device is not None:
                return device
    return None


def extract_patches_grouped(
    image: Any,
    positions: Any,
    N: int,
    *,
    channels: int = 1,
    backend: Optional[str] = None,
    interpolation: str = "bilinear",
    padding: Optional[int] = None,
    evaluation: str = "compiled",
) -> Any:
    """Patches in channel layout (P // c, N, N, c); see :func:`extract_patches`.

    Position ``b*c + k`` lands in ``[b, :, :, k]`` (PtychoPINN's
    ``_flat_to_channel`` order), computed directly in that layout.
    """
    N = _validate.patch_size(N)
    channels = _validate.positive_int(channels, "channels")
    interpolation = _validate.interpolation(interpolation)
    evaluation = _validate.evaluation(evaluation)
    padding = N // 2 if padding is None else _validate.non_negative_int(padding, "padding")
    if image is None:
        _validate.image_2d(image, "image")  # raises: a clear message before dispatch
    name = _resolve(image, backend)
    static = dict(patch_size=N, interpolation=interpolation, channels=channels, padding=padding,
                  evaluation=evaluation)
    if name is None:
        # An array-API array of a library without a backend module: run eagerly on it.
        import array_api_compat

        from ptycho.backends.window import window_patches

        xp = _generic_namespace(image)
        # checked by shape and dtype where it lives (no copy; PyTorch "meta" tensors have no values)
        _validate.image_2d_layout(tuple(image.shape), _foreign_dtype(image), "image")
        positions = _validate.positions_2d(positions, "positions", channels=channels, xp=xp)
        real = xp.float64 if image.dtype in (xp.float64, xp.complex128) else xp.float32
        device = array_api_compat.device(image)
        positions = xp.astype(xp.asarray(positions, device=device), real)
        # one flag to the host, not the positions (PyTorch's "meta" device has no values to check)
        if str(device) != "meta" and not bool(xp.all(xp.isfinite(positions))):
            _validate.finite(np.asarray(array_api_compat.to_device(positions, "cpu")), "positions")
        return window_patches(image, positions, xp=xp, **static)

    mod = get_backend(name)
    native_image = mod.is_native(image)
    if native_image:
        # check shape and dtype where the array lives: no copy to the host
        image_dtype = _native_dtype(image)
        _validate.image_2d_layout(image.shape, image_dtype, "image")
    else:
        image = _validate.image_2d(image, "image")
        image_dtype = image.dtype
    complex_dtype, real_dtype = _validate.working_dtypes(image_dtype)
    device = _home(mod, image, positions)
    with mod.precision(complex_dtype):
        pos = _real_rows(positions, "positions", mod, real_dtype, channels=channels, device=device)
        img = _to_working(mod, image, native_image, complex_dtype, device)
        with mod.on_device(device):
            return compile_job(name, extract_job, **static)(img, pos, mod.fma_guard(device))


def extract_patches(
    image: Any,
    positions: Any,
    N: int,
    backend: Optional[str] = None,
    *,
    interpolation: str = "bilinear",
    padding: Optional[int] = None,
    evaluation: str = "compiled",
) -> Any:
    """Cut N x N patches centred on ``positions`` out of ``image``.

    Patch i equals PtychoPINN's legacy definition, bit for bit on every
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
    evaluation : {'compiled', 'plain'}
        Evaluation order of the bilinear sum: ``'compiled'`` (default) gives
        the bits of PtychoPINN's default XLA path (``translate_xla(use_jit=True)``),
        ``'plain'`` those of its eager path (``use_jit=False``).

    Returns
    -------
    array (P, N, N), complex64 or complex128 (full precision of the object),
    of the backend's native type (``np.ndarray``, ``jax.Array``, ``tf.Tensor``).
    """
    out = extract_patches_grouped(
        image, positions, N, channels=1, backend=backend,
        interpolation=interpolation, padding=padding, evaluation=evaluation,
    )
    name = _resolve(image, backend)
    if name is None:
        return _generic_namespace(out).reshape(out, tuple(out.shape)[:-1])
    mod = get_backend(name)
    with mod.on_device(mod.device_of(out)):  # the reshape runs (and the result stays) with ``out``
        return mod.namespace.reshape(out, tuple(out.shape)[:-1])


def translate(
    images: Any,
    translations: Any,
    *,
    output_size: Optional[Any] = None,
    output_origin: Optional[Any] = None,
    source_origin: Any = (0, 0),
    interpolation: str = "bilinear",
    channels: int = 1,
    evaluation: str = "compiled",
    backend: Optional[str] = None,
    jit: bool = True,
    names: Tuple[str, str] = ("images", "translations"),
) -> Any:
    """Translate images with zero-fill bilinear interpolation: the one translate entry.

    Output pixel (y, x) of translation p samples source ``images[p or 0]`` at
    ``(x - tx, y - ty)``.  Validates once, then runs the window algorithm
    compiled by the backend (``jax.jit``, ``tf.function(jit_compile=True)``,
    NumPy eagerly).  ``ptycho.projective_warp_xla.translate_xla`` and
    ``ptycho.tf_helper.translate`` are thin wrappers over it.  Differentiable
    under ``jax.grad`` and ``tf.GradientTape`` with respect to the images and
    the translations.

    Parameters
    ----------
    images : array (S, H, W), complex or real (real is treated as complex)
        S == 1: one source shared by every translation (never tiled);
        otherwise S == P.
    translations : array (P, 2)
        (tx, ty) in pixels; computed in the images' real precision.
    output_size : (h, w), optional
        Compute only that window of each output (default (H, W)).
    output_origin : integer array (P, 2), optional
        (row, col) of each translation's window in the output frame (default 0).
    source_origin : (int, int)
        (row, col) of the source's pixel [0, 0] in the output frame.
    interpolation : {'bilinear', 'nearest'}
    channels : int
        Result laid out (P // channels, h, w, channels).
    evaluation : {'compiled', 'plain'}
        Evaluation order of the bilinear sum (PtychoPINN's XLA path or its eager path).
    backend : str, optional
        Default: the owner of ``images``' array type.
    jit : bool
        False: run the same operations without compiling (TensorFlow: eagerly
        or inside the caller's graph).
    names : (str, str)
        The caller's names of the two arrays, for error messages.

    Returns
    -------
    array (P // channels, h, w, channels), complex64 or complex128, native type.
    """
    images_name, translations_name = names
    interpolation = _validate.interpolation(interpolation)
    evaluation = _validate.evaluation(evaluation)
    channels = _validate.positive_int(channels, "channels")
    jit = _validate.flag(jit, "jit")
    if images is None:
        raise InputTypeError(f"{images_name} must be a 3-D array (S, H, W), got None")
    name = _resolve(images, backend)
    if name is None:
        raise InputTypeError(
            f"{images_name}: translate runs on NumPy, JAX or TensorFlow arrays, got {type(images).__name__}"
        )
    mod = get_backend(name)
    native = mod.is_native(images)
    if not native:
        images = _validate.to_numpy(images, images_name)
        _validate.numeric_dtype(images, images_name)
    elif _native_dtype(images).kind not in "iufc":
        raise InputTypeError(f"{images_name} must have a real or complex numeric dtype, got {images.dtype}")
    shape = tuple(images.shape)
    if len(shape) != 3:
        raise InputError(f"{images_name} must be 3-D (S, H, W), got shape {shape}")
    if shape[1] == 0 or shape[2] == 0:
        raise InputError(f"{images_name} must have non-empty height and width, got shape {shape}")
    complex_dtype, real_dtype = _validate.working_dtypes(_native_dtype(images))
    device = _home(mod, images, translations)
    with mod.precision(complex_dtype):
        t = _real_rows(translations, translations_name, mod, real_dtype, holding="(tx, ty)", device=device)
    count = t.shape[0]
    if shape[0] not in (1, count):
        raise InputError(
            f"{images_name}: the source count ({shape[0]}) must be 1 or equal the number of "
            f"{translations_name} ({count})"
        )
    if count % channels:
        raise InputError(
            f"{translations_name}: the number of translations must be a multiple of channels = "
            f"{channels}, got {count} translations"
        )
    size = shape[1:] if output_size is None else _validate.size_pair(output_size, "output_size")
    source_origin = _validate.int_pair(source_origin, "source_origin")
    origin = None if output_origin is None else _validate.integer_rows(output_origin, "output_origin", count)
    static = dict(output_size=tuple(int(v) for v in size), interpolation=interpolation, channels=channels,
                  source_origin=source_origin, evaluation=evaluation)
    with mod.precision(complex_dtype):
        if count == 0:
            return mod.asarray(np.zeros((0,) + static["output_size"] + (channels,), dtype=complex_dtype),
                               device=device)
        img = _to_working(mod, images, native, complex_dtype, device)
        org = None if origin is None else mod.asarray(origin, device=device)
        return translate_validated(name, img, t, org, jit=jit, **static)


def translate_validated(
    backend_name: str, images: Any, translations: Any, output_origin: Any = None, *, jit: bool = True, **static: Any
) -> Any:
    """:func:`translate` on arguments already checked: native arrays of the working dtypes.

    For wrappers that validate in their own terms (``translate_xla`` checks
    4-D TensorFlow images, symbolic tensors included) and must not pay twice.
    ``static``: ``output_size``, ``interpolation``, ``channels``,
    ``source_origin``, ``evaluation`` as in :func:`translate`.
    """
    mod = get_backend(backend_name)
    fn = compile_job(backend_name, translate_job, jit=jit, **static)
    device = mod.device_of(images)
    with mod.on_device(device):
        return fn(images, translations, mod.fma_guard(device), output_origin)


# Placement (the adjoint of extract_patches) lives in its own module; importing it imports no backend.
from ptycho.backends.placement import place_patches  # noqa: E402
