"""The engine's public entries: extraction, translation and placement on any backend.

One algorithm (:mod:`ptycho.backends.window`) runs on several array libraries.
Each backend is a small module with the same names (the ``BackendModule``
protocol: ``namespace``, ``compile``, ``precision``, ``fma_guard``,
``all_finite``, ``asarray``, ``device_of``, ``on_device``, ``to_numpy``,
``is_native``); the ``Backend`` enum in :mod:`ptycho.backends._dispatch` is the
whole dispatch table.  The entries here validate once, place the inputs where
the computation runs and call a job compiled by :func:`compile_job`.

Importing this package imports neither TensorFlow nor JAX: a backend module
is imported by :func:`get_backend` only, and :func:`backend_of` only looks at
frameworks that are already in ``sys.modules`` (the einops rule).
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from ptycho import _validate
from ptycho.backends._dispatch import (  # noqa: F401  (the public dispatch names, re-exported)
    BACKENDS,
    Backend,
    BackendModule,
    available_backends,
    backend_of,
    canonical_name,
    clear_compile_cache,
    compile_job,
    foreign_dtype,
    generic_namespace,
    get_backend,
    home,
    native_dtype,
    real_rows,
    resolve,
    to_working,
)
from ptycho.errors import InputError, InputTypeError

#: Output pixels per eager chunk of a library without a backend module (PyTorch,
#: CuPy): the algorithm's temporaries are ~17x its output (measured on an H100),
#: so a chunk of 4M pixels (32 MB of complex64) needs ~0.6 GB besides the output.
GENERIC_CHUNK_PIXELS = 1 << 22

__all__ = [
    "Backend",
    "BackendModule",
    "BACKENDS",
    "canonical_name",
    "available_backends",
    "get_backend",
    "backend_of",
    "compile_job",
    "clear_compile_cache",
    "extract_job",
    "translate_job",
    "extract_patches",
    "extract_patches_grouped",
    "translate",
    "translate_validated",
    "place_patches",
    "projective_warp",
]


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
    name = resolve(image, backend)
    static = dict(patch_size=N, interpolation=interpolation, channels=channels, padding=padding,
                  evaluation=evaluation)
    if name is None:
        # An array-API array of a library without a backend module: run eagerly on it.
        import array_api_compat

        from ptycho.backends.window import window_patches

        xp = generic_namespace(image)
        # checked by shape and dtype where it lives (no copy; PyTorch "meta" tensors have no values)
        _validate.image_2d_layout(tuple(image.shape), foreign_dtype(image), "image")
        positions = _validate.positions_2d(positions, "positions", channels=channels, xp=xp)
        real = xp.float64 if image.dtype in (xp.float64, xp.complex128) else xp.float32
        device = array_api_compat.device(image)
        positions = xp.astype(xp.asarray(positions, device=device), real)
        # one flag to the host, not the positions (PyTorch's "meta" device has no values to check)
        if str(device) != "meta" and not bool(xp.all(xp.isfinite(positions))):
            _validate.finite(np.asarray(array_api_compat.to_device(positions, "cpu")), "positions")
        return _generic_chunked(image, positions, xp=xp, **static)

    mod = get_backend(name)
    native_image = mod.is_native(image)
    if native_image:
        # check shape and dtype where the array lives: no copy to the host
        image_dtype = native_dtype(image)
        _validate.image_2d_layout(image.shape, image_dtype, "image")
    else:
        image = _validate.image_2d(image, "image")
        image_dtype = image.dtype
    complex_dtype, real_dtype = _validate.working_dtypes(image_dtype)
    device = home(mod, image, positions)
    with mod.precision(complex_dtype):
        pos = real_rows(positions, "positions", mod, real_dtype, channels=channels, device=device)
        img = to_working(mod, image, native_image, complex_dtype, device)
        with mod.on_device(device):
            return compile_job(name, extract_job, **static)(img, pos, mod.fma_guard(device))


def _generic_chunked(image: Any, positions: Any, *, xp: Any, **static: Any) -> Any:
    """``window_patches`` eagerly, in chunks of groups written into one output on the image's device.

    Group g of the output depends on positions ``g*c .. g*c + c - 1`` only, by
    the same expressions, so the chunks' results are the whole result bit for
    bit; memory is the output plus one chunk's temporaries
    (:data:`GENERIC_CHUNK_PIXELS`) instead of ~17x the output.
    """
    import array_api_compat

    from ptycho._chunks import chunk_bounds
    from ptycho.backends.window import window_patches

    n, channels = static["patch_size"], static["channels"]
    groups = int(positions.shape[0]) // channels
    per = max(1, GENERIC_CHUNK_PIXELS // (n * n * channels))
    if groups <= per:
        return window_patches(image, positions, xp=xp, **static)
    out = None
    for start, stop in chunk_bounds(groups, per):
        part = window_patches(image, positions[start * channels:stop * channels], xp=xp, **static)
        if out is None:
            out = xp.empty((groups,) + tuple(part.shape[1:]), dtype=part.dtype,
                           device=array_api_compat.device(part))
        out[start:stop, ...] = part
    return out


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
    name = resolve(image, backend)
    if name is None:
        return generic_namespace(out).reshape(out, tuple(out.shape)[:-1])
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
    name = resolve(images, backend)
    if name is None:
        raise InputTypeError(
            f"{images_name}: translate runs on NumPy, JAX or TensorFlow arrays, got {type(images).__name__}"
        )
    mod = get_backend(name)
    native = mod.is_native(images)
    if not native:
        images = _validate.to_numpy(images, images_name)
        _validate.numeric_dtype(images, images_name)
    elif native_dtype(images).kind not in "iufc":
        raise InputTypeError(f"{images_name} must have a real or complex numeric dtype, got {images.dtype}")
    shape = tuple(images.shape)
    if len(shape) != 3:
        raise InputError(f"{images_name} must be 3-D (S, H, W), got shape {shape}")
    if shape[1] == 0 or shape[2] == 0:
        raise InputError(f"{images_name} must have non-empty height and width, got shape {shape}")
    complex_dtype, real_dtype = _validate.working_dtypes(native_dtype(images))
    device = home(mod, images, translations)
    with mod.precision(complex_dtype):
        t = real_rows(translations, translations_name, mod, real_dtype, holding="(tx, ty)", device=device)
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
        img = to_working(mod, images, native, complex_dtype, device)
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
from ptycho.backends.placement import place_patches  # noqa: E402  (after the entries it mirrors)
# The general projective warp (every output pixel computed; no window to slice), likewise.
from ptycho.backends.projective import projective_warp  # noqa: E402
