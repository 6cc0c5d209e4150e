"""NumPy backend: eager evaluation through ``array_api_compat.numpy``."""

from __future__ import annotations

import contextvars
import types
from typing import Any, Callable, Optional

import array_api_compat.numpy as _compat_np
import numpy as np

from ptycho.backends._dispatch import job_name



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
    """NumPy runs eagerly: the function with ``static`` bound, nothing compiled.

    The two windowed jobs of :mod:`ptycho.backends` (``extract_job``,
    ``translate_job``) run in bounded memory instead: the positions are cut
    into cache-sized chunks, each chunk runs the window algorithm (or, for the
    bilinear stencil with Numba installed, the compiled kernel of
    :mod:`ptycho.backends._numba_kernel`), and every chunk is written into one
    preallocated output (see :class:`_Chunked`).
    """
    import functools

    bound = functools.partial(fn, **static)
    layout = _CHUNKED_JOBS.get(job_name(fn))
    if layout is None:
        return bound
    return _Chunked(bound, layout, static)


# ---------------------------------------------------------------------------
# Bounded memory: chunks of positions into one preallocated output.
# ---------------------------------------------------------------------------

#: Output pixels per chunk of the array path: its ~40 float64 temporaries of
#: one chunk (about 10 MB) stay in the L2/L3 caches.  Measured on the reference
#: workload: 8 patches of 64 x 64 per chunk run 2.5-4x faster than the whole
#: batch at once (fewer cache misses), and peak memory is the output plus
#: one chunk's temporaries.
CHUNK_PIXELS = 1 << 15

#: ``PTYCHO_NUMPY_KERNEL``: ``auto`` (default: the Numba kernel when numba is
#: importable), ``array`` (always the array-API algorithm), ``numba`` (the
#: kernel; an error without numba).
KERNEL_ENV = "PTYCHO_NUMPY_KERNEL"
KERNELS = ("auto", "array", "numba")

_kernel_choice: contextvars.ContextVar = contextvars.ContextVar("ptycho_numpy_kernel", default=None)


def kernel(name: str) -> Any:
    """Context manager: run the NumPy backend's windowed jobs with kernel ``name`` (see :data:`KERNELS`).

    Overrides ``PTYCHO_NUMPY_KERNEL`` in this context (thread and task local)::

        with ptycho.backends._numpy.kernel("array"):
            extract_patches(obj, positions, 64)   # the array-API algorithm, chunked
    """
    import contextlib

    name = _check_kernel(name, "kernel")

    @contextlib.contextmanager
    def scope() -> Any:
        token = _kernel_choice.set(name)
        try:
            yield name
        finally:
            _kernel_choice.reset(token)

    return scope()


def _check_kernel(name: Any, source: str) -> str:
    from ptycho.errors import InputError

    key = str(name).strip().lower()
    if key not in KERNELS:
        raise InputError(f"{source} must be one of {', '.join(KERNELS)}, got {name!r}")
    return key


def selected_kernel() -> str:
    """``"numba"`` or ``"array"``: the kernel the windowed jobs use now (context, then environment)."""
    import os

    choice = _kernel_choice.get()
    if choice is None:
        choice = _check_kernel(os.environ.get(KERNEL_ENV, "auto") or "auto", KERNEL_ENV)
    if choice == "array":
        return "array"
    if numba_available():
        return "numba"
    if choice == "numba":
        raise ImportError(
            f"{KERNEL_ENV}=numba (or kernel('numba')) needs the numba package: pip install 'ptycho[fast]'"
        )
    return "array"


def numba_available() -> bool:
    """Whether numba is installed (the ``fast`` extra); nothing is imported."""
    import importlib.util

    try:
        return importlib.util.find_spec("numba") is not None
    except (ImportError, ValueError):
        return False


class _Layout:
    """Where a job's per-position arguments are: (positional index, rows per position) pairs."""

    def __init__(self, per_position: tuple, sources: Optional[int], kind: str) -> None:
        self.per_position = per_position  # indices of (P, ...) arguments
        self.sources = sources  # index of an (S, ...) argument with S == 1 or P
        self.kind = kind  # "extract" | "translate"


#: The windowed jobs of ptycho.backends that run chunked -> their argument layout.
_CHUNKED_JOBS = {
    "extract_job": _Layout(per_position=(1,), sources=None, kind="extract"),
    "translate_job": _Layout(per_position=(1, 3), sources=0, kind="translate"),
}


class _Chunked:
    """A windowed job run chunk by chunk into one preallocated output.

    The job's result is (G, h, w, c) with group g made from positions
    ``g*c .. g*c + c - 1``; a chunk of groups needs only those positions (and
    their sources, when each position has its own).  So the result of the whole
    call is the concatenation of the chunks' results, bit for bit: each output
    pixel is computed by the same expressions from the same inputs.  Peak
    memory is the output plus one chunk's temporaries.
    """

    def __init__(self, bound: Callable[..., Any], layout: _Layout, static: dict) -> None:
        self.bound = bound
        self.layout = layout
        self.static = static

    def _geometry(self, args: tuple) -> tuple:
        """(count, channels, (h, w)) of a call."""
        static = self.static
        channels = int(static.get("channels", 1))
        count = int(args[1].shape[0])
        if self.layout.kind == "extract":
            n = int(static["patch_size"])
            return count, channels, (n, n)
        return count, channels, tuple(int(v) for v in static["output_size"])

    def __call__(self, *args: Any) -> Any:
        args = list(args)
        while len(args) < 4 and self.layout.kind == "translate":
            args.append(None)
        if self.layout.kind == "extract" and len(args) < 3:
            args.append(None)
        count, channels, (h, w) = self._geometry(tuple(args))
        groups = count // channels
        image = args[0]
        if self.static.get("interpolation", "bilinear") == "bilinear" and selected_kernel() == "numba":
            return self._numba(args)
        per_group = max(1, CHUNK_PIXELS // max(1, h * w * channels))
        if groups <= per_group:
            return self.bound(*args)
        out = None
        for start in range(0, groups, per_group):
            stop = min(start + per_group, groups)
            chunk = list(args)
            for i in self.layout.per_position:
                if chunk[i] is not None:
                    chunk[i] = chunk[i][start * channels: stop * channels]
            src = self.layout.sources
            if src is not None and image.shape[0] != 1:
                chunk[src] = image[start * channels: stop * channels]
            part = self.bound(*chunk)
            if out is None:
                out = np.empty((groups,) + tuple(part.shape[1:]), dtype=part.dtype)
            out[start:stop] = part
            del part
        return out

    def _numba(self, args: list) -> np.ndarray:
        from ptycho.backends import _numba_kernel

        static = self.static
        if self.layout.kind == "extract":
            image, positions = args[0], args[1]
            pad = int(static["patch_size"]) // 2 if static.get("padding") is None else int(static["padding"])
            n = int(static["patch_size"])
            return _numba_kernel.translate_into(
                np.reshape(image, (1,) + tuple(image.shape)), -positions, output_size=(n, n),
                source_origin=(pad, pad), channels=int(static.get("channels", 1)),
                evaluation=static.get("evaluation", "compiled"),
            )
        images, translations, origin = args[0], args[1], args[3]
        return _numba_kernel.translate_into(
            images, translations, output_size=tuple(static["output_size"]),
            source_origin=tuple(static.get("source_origin", (0, 0))), output_origin=origin,
            channels=int(static.get("channels", 1)), evaluation=static.get("evaluation", "compiled"),
        )


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


def _translate_window(images: Any, translations: Any, **options: Any) -> np.ndarray:
    """:func:`ptycho.backends.window.translate_window` for placement's windows (``shift_and_sum``).

    Bilinear with the Numba kernel selected (:func:`selected_kernel`): the kernel,
    bit for bit the array-API result (per-translation sources and output origins
    included, ``tests/test_kernels.py``); otherwise the array-API algorithm.
    Measured on 2,000 windows of 65 x 65 (M = 64): 0.14 s against 3.8 s.
    """
    from ptycho.backends.window import translate_window

    if options.get("interpolation", "bilinear") != "bilinear" or selected_kernel() != "numba":
        return translate_window(images, translations, **options)
    from ptycho.backends import _numba_kernel

    return _numba_kernel.translate_into(
        images, translations, output_size=tuple(options["output_size"]),
        source_origin=tuple(options.get("source_origin", (0, 0))), output_origin=options.get("output_origin"),
        channels=int(options.get("channels", 1)), evaluation=options.get("evaluation", "compiled"),
    )


namespace.translate_window = _translate_window


def all_finite(x: Any) -> bool:
    """Whether every value of ``x`` is finite."""
    return bool(np.isfinite(x).all())
