"""JAX backend: the algorithm under ``jax.jit`` (the cross-check oracle).

Calls run inside ``jax.enable_x64(True)`` (complex128 objects and the exact
fused multiply-add of the compiled order need float64), so users need not turn
64-bit mode on globally.
"""

from __future__ import annotations

import contextlib
import functools
import types
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from ptycho.backends._dispatch import job_name



#: jax.numpy is an array-API namespace; we add the exact ``complex`` and a ``take``
#: that clamps instead of masking.
namespace = types.SimpleNamespace(**{k: getattr(jnp, k) for k in dir(jnp) if not k.startswith("__")})
namespace.complex = jax.lax.complex
# jnp.take's default mode ("fill") masks every gathered element with a bounds
# test; the window algorithm clips its indices into the bordered source
# before it gathers, so they are always in bounds and the mask is pure cost.
# "clip" is the plain XLA gather (the one TensorFlow emits): ~15% less CPU time.
namespace.take = functools.partial(jnp.take, mode="clip")
# rounding corrections carry no gradient (lax.nextafter has no derivative rule)
namespace.nextafter = lambda a, b: jnp.nextafter(jax.lax.stop_gradient(a), jax.lax.stop_gradient(b))
# Inside jax.jit new arrays are placed with the program (on the inputs' device).
namespace.places_new_arrays = True
# int64 exists only in 64-bit mode; the window asks before it needs wide indices.
namespace.int64_available = lambda: bool(jax.config.jax_enable_x64)


def compile(fn: Callable[..., Any], **static: Any) -> Callable[..., Any]:  # noqa: A001
    """``jax.jit`` with ``static`` bound as compile-time constants.

    The windowed jobs of :mod:`ptycho.backends` (``extract_job``,
    ``translate_job``) can be chunked inside the program: ``lax.map`` over
    fixed-size chunks of groups (see :func:`_chunked`), when
    :data:`CHUNK_PIXELS` is positive (``PTYCHO_JAX_CHUNK_PIXELS``).  Off by
    default, by measurement (issue 14, docs/PERFORMANCE.md): XLA already
    fuses the whole batch into loops that keep no intermediates (peak
    1.07x the output), and it spreads one large fusion over the CPU's
    threads, but not the fusions inside a ``lax.map`` loop -- chunked, the
    reference workload ran on one of two cores (2.0 s instead of 1.0 s).
    """
    bound = functools.partial(fn, **static)
    kind = _CHUNKED_JOBS.get(job_name(fn))
    if kind is None:
        return jax.jit(bound)
    return jax.jit(_chunked(bound, kind, static))


def _chunk_pixels_default() -> int:
    import os

    text = os.environ.get("PTYCHO_JAX_CHUNK_PIXELS", "").strip()
    return int(text) if text.isdigit() else 0


#: Output pixels per ``lax.map`` chunk of a windowed job (0: no chunking, the default;
#: ``PTYCHO_JAX_CHUNK_PIXELS``, e.g. 1048576 = 8 MB of complex64 output a chunk).
CHUNK_PIXELS = _chunk_pixels_default()

#: The windowed jobs of ptycho.backends -> their kind.
_CHUNKED_JOBS = {"extract_job": "extract", "translate_job": "translate"}


def chunk_groups(groups: int, target: int) -> int:
    """Groups per chunk: the largest divisor of ``groups`` not above ``target``.

    Every chunk then has one shape (one program, no padding, no copy of the
    output: the chunks' stacked results are the output, reshaped).  Returns
    ``groups`` (no chunking) when the best divisor is below ``target // 8``
    (a prime number of groups, say): many tiny chunks would cost more than
    they save.
    """
    if groups <= target:
        return groups
    best = 1
    for d in range(min(groups, target), 0, -1):
        if groups % d == 0:
            best = d
            break
    return best if best >= max(1, target // 8) else groups


def _chunked(bound: Callable[..., Any], kind: str, static: dict) -> Callable[..., Any]:
    """``bound`` over fixed-size chunks of groups with ``lax.map``, bit-identical to one call.

    Group g of the result is computed from positions ``g*c .. g*c + c - 1``
    only (and their sources when each translation has its own), by the same
    expressions: the chunks' results, stacked, are the whole result.
    """
    channels = int(static.get("channels", 1))
    if kind == "extract":
        h = w = int(static["patch_size"])
    else:
        h, w = (int(v) for v in static["output_size"])

    def run(*args: Any) -> Any:
        args = list(args)
        rows = args[1]
        groups = int(rows.shape[0]) // channels
        if CHUNK_PIXELS <= 0:
            return bound(*args)
        per = chunk_groups(groups, max(1, CHUNK_PIXELS // max(1, h * w * channels)))
        if per >= groups:
            return bound(*args)
        n = groups // per
        # per-position arguments, split into (n, per * c, ...) chunks
        split = {1: args[1]}
        if kind == "translate":
            if len(args) > 3 and args[3] is not None:
                split[3] = args[3]
            if args[0].shape[0] != 1:
                split[0] = args[0]
        keys = sorted(split)
        stacked = [jnp.reshape(split[i], (n, per * channels) + tuple(split[i].shape[1:])) for i in keys]

        def one(chunk: Any) -> Any:
            call = list(args)
            for i, value in zip(keys, chunk):
                call[i] = value
            return bound(*call)

        out = jax.lax.map(one, stacked)
        return jnp.reshape(out, (groups,) + tuple(out.shape[2:]))

    return run


def precision(dtype: Any) -> contextlib.AbstractContextManager:
    """Context in which the window algorithm keeps its precision: JAX's 64-bit mode.

    complex128 objects need it, and so does the compiled evaluation order of
    complex64 objects (its exact fused multiply-add works in float64).  Arrays
    keep their dtypes: complex64 stays complex64.
    """
    return jax.enable_x64(True)


def asarray(x: Any, dtype: Any = None, device: Any = None) -> Any:
    """``x`` as a jax.Array; on ``device`` when given (an explicit transfer, allowed by
    ``jax.transfer_guard``), else on the default device."""
    if device is None:
        return jnp.asarray(x, dtype=dtype)
    if not is_native(x):
        x = np.asarray(x, dtype=dtype)
    elif dtype is not None:
        x = x.astype(dtype)
    return jax.device_put(x, device)


def device_of(x: Any) -> Any:
    """The one device ``x`` lives on (None: traced, or sharded over several)."""
    if isinstance(x, jax.core.Tracer):
        return None
    devices = x.devices()
    return next(iter(devices)) if len(devices) == 1 else None


def on_device(device: Any) -> contextlib.AbstractContextManager:
    """jax.jit runs where its committed inputs live: nothing to enter."""
    return contextlib.nullcontext()


def to_numpy(x: Any) -> np.ndarray:
    return np.asarray(x)


def is_native(x: Any) -> bool:
    return isinstance(x, jax.Array)


# -- the native compiled order (ptycho.backends.native): probing a compiled program -------------
def concrete(x: Any) -> bool:
    """Whether ``x`` holds values (not a tracer of a caller's ``jax.jit`` or ``jax.grad``)."""
    return not isinstance(x, jax.core.Tracer)


def signature(x: Any) -> tuple:
    """What ``jax.jit`` compiles a program for: shape, dtype, weak type, sharding, commitment."""
    return (tuple(x.shape), str(x.dtype), bool(getattr(x, "weak_type", False)), x.sharding,
            bool(getattr(x, "committed", True)))


def numpy_dtype(x: Any) -> np.dtype:
    return np.dtype(x.dtype)


def host_view(x: Any) -> np.ndarray:
    """Host view of a jax.Array (no copy on a CPU; a transfer from an accelerator)."""
    return np.asarray(x)


def like(x: Any, host: np.ndarray) -> Any:
    """``host`` as a jax.Array that ``jax.jit`` treats as ``x``: same placement and commitment,
    so a call with it runs the executable compiled for ``x``."""
    if getattr(x, "committed", True):
        return jax.device_put(host, x.sharding)
    return jnp.asarray(host)


def fma_guard(device: Any = None) -> Any:
    """A runtime 1.0 (see :func:`ptycho.backends.window.weighted_sum`), on ``device``.

    Placed explicitly with the inputs: an uncommitted scalar on the default
    device would be moved implicitly, which ``jax.transfer_guard`` forbids.
    """
    if device is None:
        return jnp.ones((), dtype=jnp.float32)
    return jax.device_put(np.ones((), dtype=np.float32), device)


# -- placement (ptycho.backends.placement): scatter-add ------------------------------
def _scatter_add(flat_target: Any, index: Any, values: Any) -> Any:
    """``flat_target.at[index].add(values)``: on a CPU XLA applies the updates in order (one
    loop); on a GPU it uses atomics, whose order varies run to run (see ``_scatter_add_rows``)."""
    return flat_target.at[index].add(values, mode="promise_in_bounds")


def _scatter_add_rows(flat_target: Any, index: Any, values: Any) -> Any:
    """(R, K) updates one row at a time, row 0 first (``lax.fori_loop``).

    Deterministic on every device when a row's kept indices are distinct: no two
    updates of one scatter meet at a pixel, so atomics have nothing to reorder.
    """

    def add_row(row: Any, acc: Any) -> Any:
        return acc.at[index[row]].add(values[row], mode="promise_in_bounds")

    return jax.lax.fori_loop(0, index.shape[0], add_row, flat_target)


def _sequential_mean(x: Any) -> Any:
    """The mean of the rows of ``x``, added one after the other (``lax.scan``), then divided by their count.

    PtychoPINN's ``tf.reduce_mean(offsets, axis=0)`` on a CPU adds in this
    order; ``jnp.mean`` (XLA's reduction) does not once there are more than 32
    rows.  Used for traced offsets (``placement._recentred``); differentiable.
    """
    total, _ = jax.lax.scan(lambda acc, row: (acc + row, None), x[0], x[1:])
    # XLA turns a division by a broadcast scalar into a product with its
    # reciprocal (an ulp off); a full array behind a barrier is divided exactly,
    # float32 in float64 (XLA's GPU float32 division is not correctly rounded:
    # placement.divide).  Needs 64-bit mode, which the backend's calls run in.
    wide = jnp.float64 if total.dtype == jnp.float32 else total.dtype
    count = jax.lax.optimization_barrier(jnp.full(total.shape, x.shape[0], dtype=wide))
    return (total.astype(wide) / count).astype(total.dtype)


namespace.scatter_add = _scatter_add
namespace.scatter_add_rows = _scatter_add_rows
namespace.sequential_mean = _sequential_mean


def all_finite(x: Any) -> Any:
    """Whether every value is finite, reduced on ``x``'s device; None for a traced array.

    Only the one boolean is fetched (explicitly, so ``jax.transfer_guard`` allows it).
    """
    if isinstance(x, jax.core.Tracer):
        return None
    return bool(jax.device_get(jnp.all(jnp.isfinite(x))))


# -- cold start: JAX's persistent compilation cache (for command-line runs) ------------------

#: Set to 0/off/false/no to keep command-line runs from using the persistent cache.
CACHE_ENV = "PTYCHO_JAX_CACHE"
#: Directory of the cache (default: ``$XDG_CACHE_HOME/ptycho/jax``, i.e. ``~/.cache/ptycho/jax``).
CACHE_DIR_ENV = "PTYCHO_JAX_CACHE_DIR"


def default_cache_dir() -> str:
    """``$PTYCHO_JAX_CACHE_DIR``, else the user's cache directory: ``$XDG_CACHE_HOME/ptycho/jax``."""
    from ptycho.backends import compile_cache

    return compile_cache.cache_dir("jax")


def enable_compilation_cache(path: Any = None) -> Any:
    """Turn on JAX's persistent compilation cache; returns its directory (None when opted out).

    For command-line runs (a fresh process per run): the XLA programs of the
    engine are compiled once per machine and shape and then loaded from disk,
    so a run's cold start is a cache read instead of a compilation.  Every
    program is cached, however quick its compilation (the default threshold
    of one second would skip ours).  ``PTYCHO_JAX_CACHE=0`` opts out;
    ``path`` (or ``PTYCHO_JAX_CACHE_DIR``) chooses the directory.  A directory
    that cannot be created leaves the cache off (a warning, never an error).
    The cached program is the same XLA executable: results are unchanged.
    (:mod:`ptycho.backends.compile_cache` holds the conventions both XLA
    backends share.)
    """
    from ptycho.backends import compile_cache

    if compile_cache.opted_out("jax"):
        return None
    directory = compile_cache.make_cache_dir(compile_cache.cache_dir("jax", path), "JAX")
    if directory is None:
        return None
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return directory
