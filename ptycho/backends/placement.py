"""Placement: patches back into an object canvas, windowed -- the other direction of extraction.

Two operators, written once against the array API (``xp`` keyword-only, as in
:mod:`ptycho.backends.window`), on the stencil of the extraction:

- :func:`place_patches` is the exact adjoint of
  :func:`ptycho.backends.extract_patches`.  Extraction reads, for patch pixel
  (y, x), the four corners ``corner_a + {0, 1, row_stride, row_stride + 1}``
  of the zero-bordered object with weights (wa, wb, wc, wd); placement adds
  ``w_k * patch[y, x]`` into the same four corners of a zero-bordered canvas
  (real and imaginary planes separately) and crops the border.  Corners that
  extraction reads as zeros of the border receive contributions that the crop
  discards, so ``<extract(x), y> == <x, place(y)>`` holds to rounding.  An
  optional per-pixel weight (e.g. ``|probe|**2``) multiplies each patch; the
  normalised stitch divides ``place(w * patch)`` by ``place(w) + eps``.
- :func:`shift_and_sum` / :func:`reassemble_position` are PtychoPINN's
  ``tf_helper`` functions (crop the central M x M, recentre the offsets by their
  float32 mean, translate each zero-padded crop over a canvas of side
  ``S = M + 2*pad``, sum; divide by the same sum over ones + 1e-9), windowed:
  a crop translated by (tx, ty) is non-zero only on the (M+1) x (M+1) canvas
  pixels starting at (floor(ty) + pad, floor(tx) + pad), so only that window
  is computed (:func:`ptycho.backends.window.translate_window` with
  ``output_origin``: bit-identical to those pixels of the whole translated
  canvas) and scatter-added.  O(P (M+1)^2) instead of O(P S^2).

Summation order and determinism
-------------------------------
Every scatter lists its updates patch by patch (patch-major), and the canvas
is carried from one chunk of patches to the next.  On a CPU the scatter-add
of every backend (``np.add.at``, XLA's scatter under ``jax.jit`` and
``tf.function(jit_compile=True)``) applies the updates one by one in that
order, so each canvas pixel receives its contributions in patch order -- the
order of PtychoPINN's sequential loop, ``result += translate(...)`` -- and
the windowed ``shift_and_sum`` equals the legacy full-canvas loop bit for bit,
the same bits every run.  On a GPU, XLA's scatter-add uses atomics, whose
order varies run to run; there (``ordered=None`` resolves it from where the
arrays live, or pass ``ordered=True``) each scatter is split into rows whose
kept indices are distinct -- one patch (shift-and-sum) or one patch corner
(placement) -- added one row after the other (``lax.fori_loop`` /
``tf.while_loop``), which leaves the atomics nothing to reorder: the same
order, the same bits, on every device.

Chunks bound the transient memory: at most :data:`CHUNK_UPDATES` canvas
updates (index and value planes) exist at once, besides the canvas and the
patches.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Optional, Sequence, Tuple

import numpy as np

from ptycho import _validate
from ptycho._chunks import chunk_bounds, pad_rows
from ptycho.backends._dispatch import backend_of, canonical_name, compile_job, generic_namespace, get_backend, to_host
from ptycho.backends.window import BORDER, EVALUATIONS, _complex_from_parts, _on, stencil, translate_window
from ptycho.errors import InputError, InputTypeError

__all__ = [
    "DEFAULT_EPS",
    "CHUNK_UPDATES",
    "place_patches",
    "shift_and_sum",
    "shift_and_sum_planes",
    "reassemble_position",
    "recentre_offsets",
    "canvas_pad",
    "place_chunk",
    "shift_windows",
    "accumulate_windows",
    "scatter_add",
    "divide",
    "spread_chunk",
    "window_index",
    "place_updates_job",
    "shift_updates_job",
    "scatter_job",
]

#: PtychoPINN's regulariser in ``reassemble_position``; the default ``eps`` of the normalised stitch.
DEFAULT_EPS = 1e-9
#: Canvas updates (pixels x corners) per compiled step: bounds one chunk's index and value
#: planes (about 12 bytes per update in complex64, ~200 MB).
CHUNK_UPDATES = 1 << 24


# ---------------------------------------------------------------------------
# The primitive the array API lacks: scatter-add.
# ---------------------------------------------------------------------------


def scatter_add(flat_target: Any, index: Any, values: Any, *, xp: Any, ordered: bool = False) -> Any:
    """``flat_target[index[r, k]] += values[r, k]``, row-major order; returns the new target.

    ``index`` and ``values`` are (R, K).  ``ordered=False``: one scatter of all
    updates (``xp.scatter_add``; on a CPU applied in order).  ``ordered=True``:
    row after row (``xp.scatter_add_rows``), deterministic on every device when
    the kept indices of a row are distinct.  NumPy may update ``flat_target`` in
    place: pass a buffer the caller owns.
    """
    if ordered:
        rows = getattr(xp, "scatter_add_rows", None)
        if rows is not None:
            return rows(flat_target, index, values)
        for r in range(int(index.shape[0])):  # a library without a loop primitive
            flat_target = _generic_scatter_add(flat_target, index[r], values[r])
        return flat_target
    flat_index = xp.reshape(index, (-1,))
    flat_values = xp.reshape(values, (-1,))
    fn = getattr(xp, "scatter_add", None)
    if fn is not None:
        return fn(flat_target, flat_index, flat_values)
    return _generic_scatter_add(flat_target, flat_index, flat_values)


def _generic_scatter_add(flat_target: Any, index: Any, values: Any) -> Any:
    """Scatter-add for array-API libraries without a backend module (PyTorch, CuPy, NumPy)."""
    import array_api_compat

    if array_api_compat.is_torch_array(flat_target):
        out = flat_target.clone()
        return out.index_add_(0, index.long(), values)
    if array_api_compat.is_cupy_array(flat_target):
        import cupyx

        out = flat_target.copy()
        cupyx.scatter_add(out, index, values)
        return out
    if array_api_compat.is_numpy_array(flat_target):
        np.add.at(flat_target, index, values)
        return flat_target
    raise InputTypeError(f"placement: no scatter-add for arrays of type {type(flat_target).__name__}")


# ---------------------------------------------------------------------------
# The kernels (one chunk of patches).
# ---------------------------------------------------------------------------


def spread_chunk(
    planes: Sequence[Any],
    positions: Any,
    *,
    shape: Tuple[int, int],
    xp: Any,
) -> Tuple[Any, Tuple[Any, ...]]:
    """The updates of :func:`place_chunk`: ``(index, values)``, each (4P, N*N), row ``4p + k`` corner k of patch p.

    Each plane pixel contributes ``w_k * value`` to corner k (a, b, c, d) of
    the stencil of the extraction at ``positions``; the flat indices point
    into the zero-bordered canvas ((H + 2*BORDER) * (W + 2*BORDER),).
    """
    count, n = int(planes[0].shape[0]), int(planes[0].shape[1])
    real = planes[0].dtype
    corner_a, weights, stride = stencil(
        -xp.astype(positions, real), output_size=(n, n), source_shape=tuple(shape), xp=xp,
        source_origin=(n // 2, n // 2),
    )  # corner_a and each weight (P, N, N, 1)
    offsets = (0, 1, stride, stride + 1)
    index = xp.reshape(xp.stack([corner_a + k if k else corner_a for k in offsets], axis=1), (4 * count, n * n))
    values = []
    for plane in planes:
        value = xp.reshape(plane, (count, n, n, 1))
        values.append(xp.reshape(xp.stack([w * value for w in weights], axis=1), (4 * count, n * n)))
    return index, tuple(values)


def place_chunk(
    canvases: Sequence[Any],
    planes: Sequence[Any],
    positions: Any,
    *,
    shape: Tuple[int, int],
    xp: Any,
    ordered: bool = False,
) -> Tuple[Any, ...]:
    """Add the adjoint of extraction of each real plane into its flat, zero-bordered canvas.

    Parameters
    ----------
    canvases : flat real arrays, each ((H + 2*BORDER) * (W + 2*BORDER),)
    planes : real arrays (P, N, N), one per canvas (e.g. the real and
        imaginary parts of the patches)
    positions : array (P, 2), (x, y) object pixels, in the canvases' real dtype
    shape : (H, W) of the object

    Returns
    -------
    tuple of the updated flat canvases.  Each plane pixel contributes
    ``w_k * value`` to its four corners, patch by patch, corner a, b, c, d.
    """
    index, values = spread_chunk(planes, positions, shape=shape, xp=xp)
    return tuple(scatter_add(c, index, v, xp=xp, ordered=ordered) for c, v in zip(canvases, values))


def shift_windows(
    crops: Any,
    offsets: Any,
    *,
    pad: int,
    xp: Any,
    evaluation: str = "compiled",
    fma_guard: Any = None,
) -> Tuple[Any, Any]:
    """Each crop zero-padded by ``pad`` and translated by its offset: the window where it is non-zero.

    Parameters
    ----------
    crops : complex array (P, M, M)
    offsets : real array (P, 2), (tx, ty) pixels, |t| <= pad
    pad : int
        The crops' zero padding; the canvas side is S = M + 2*pad.

    Returns
    -------
    windows : complex array (P, M+1, M+1)
        Canvas pixels ``origin[p] + [0, M]^2`` of ``translate(pad(crop_p), t_p)``
        (PtychoPINN's forward translation, in ``evaluation`` order), bit for bit.
    origin : int32 array (P, 2)
        (row, col) = (floor(ty) + pad, floor(tx) + pad) of each window.
    """
    count, m = int(crops.shape[0]), int(crops.shape[1])
    t = offsets
    origin = xp.astype(xp.stack([xp.floor(t[:, 1]), xp.floor(t[:, 0])], axis=1), xp.int32) + pad
    # A backend may supply its own translate_window (NumPy: the Numba kernel, bit for bit the same).
    translate = getattr(xp, "translate_window", translate_window)
    windows = translate(
        crops, t, output_size=(m + 1, m + 1), xp=xp, source_origin=(pad, pad),
        output_origin=origin, evaluation=evaluation, fma_guard=fma_guard,
    )
    return xp.reshape(windows, (count, m + 1, m + 1)), origin


def window_index(origin: Any, shape: Tuple[int, int], *, size: int, xp: Any) -> Any:
    """Flat canvas index (P, h*w) of windows (h, w) at ``origin`` (P, 2) in an S x S canvas.

    Window pixels outside the canvas go to the extra element S*S (dropped).
    """
    count = int(origin.shape[0])
    h, w = shape
    rows = xp.reshape(origin[:, 0], (count, 1, 1)) + xp.reshape(xp.arange(h, dtype=origin.dtype, **_on(origin, xp)), (1, h, 1))
    cols = xp.reshape(origin[:, 1], (count, 1, 1)) + xp.reshape(xp.arange(w, dtype=origin.dtype, **_on(origin, xp)), (1, 1, w))
    inside = (rows >= 0) & (rows < size) & (cols >= 0) & (cols < size)
    flat = rows * size + cols  # (P, h, w)
    return xp.reshape(xp.where(inside, flat, xp.full_like(flat, size * size)), (count, h * w))


def accumulate_windows(
    canvases: Sequence[Any],
    planes: Sequence[Any],
    origin: Any,
    *,
    size: int,
    xp: Any,
    ordered: bool = False,
) -> Tuple[Any, ...]:
    """Add real window planes (P, h, w) at ``origin`` (P, 2) into flat canvases of S*S + 1."""
    count, h, w = (int(v) for v in planes[0].shape)
    index = window_index(origin, (h, w), size=size, xp=xp)
    return tuple(
        scatter_add(canvas, index, xp.reshape(plane, (count, h * w)), xp=xp, ordered=ordered)
        for canvas, plane in zip(canvases, planes)
    )


# ---------------------------------------------------------------------------
# Jobs: module-level, compiled per backend by ptycho.backends.compile_job.
# ---------------------------------------------------------------------------


# Each chunk runs as two programs: its updates (index and values), then the
# scatter.  In one program XLA fuses the update arithmetic into the scatter's
# scalar loop (once per canvas): 2-4x slower than the two programs, measured.


def place_updates_job(
    patches: Any, positions: Any, valid: Any, weights: Any, *, shape: Tuple[int, int], mode: str, xp: Any,
) -> Tuple[Any, ...]:
    """Updates of one chunk of :func:`place_patches`: ``(index, *values)``.  ``mode``: 'plain' (re,
    im), 'weighted' (w*re, w*im) or 'normalized' (w*re, w*im, w); ``weights`` (P or 1, N, N);
    ``valid`` (P,) is 1 for a patch, 0 for a row that pads the last chunk (it adds no weight)."""
    re, im = xp.real(patches), xp.imag(patches)
    if mode == "plain":
        planes = (re, im)
    else:
        w = xp.astype(weights, re.dtype)
        planes = (re * w, im * w)
        if mode == "normalized":
            # w * 1 is w: a patch's weights keep their bits; a padding row's are 0.
            planes += (w * xp.reshape(xp.astype(valid, re.dtype), (-1, 1, 1)),)
    index, values = spread_chunk(planes, positions, shape=shape, xp=xp)
    return (index,) + values


def shift_updates_job(
    crops: Any, offsets: Any, valid: Any, fma_guard: Any, *, pad: int, evaluation: str, ones: bool, xp: Any,
) -> Tuple[Any, ...]:
    """Updates of one chunk of :func:`shift_and_sum`: ``(index, re, im[, ones])``, each (P, (M+1)^2).

    ``valid`` (P,) is 1 for a patch, 0 for a row that pads the last chunk: its ones' crop is 0.
    """
    count, m = int(crops.shape[0]), int(crops.shape[1])
    windows, origin = shift_windows(crops, offsets, pad=pad, xp=xp, evaluation=evaluation, fma_guard=fma_guard)
    planes = [xp.real(windows), xp.imag(windows)]
    if ones:
        real = xp.real(crops)
        unit_crops = xp.full_like(real, 1) * xp.reshape(xp.astype(valid, real.dtype), (-1, 1, 1))
        unit, _ = shift_windows(unit_crops, offsets, pad=pad, xp=xp, evaluation=evaluation, fma_guard=fma_guard)
        planes.append(xp.real(unit))
    index = window_index(origin, (m + 1, m + 1), size=m + 2 * pad, xp=xp)
    return (index,) + tuple(xp.reshape(plane, (count, (m + 1) ** 2)) for plane in planes)


def scatter_job(canvases: Tuple[Any, ...], index: Any, *values: Any, ordered: bool, xp: Any) -> Tuple[Any, ...]:
    """Add each of ``values`` (R, K) at ``index`` (R, K) into its flat canvas (see :func:`scatter_add`)."""
    return tuple(scatter_add(c, index, v, xp=xp, ordered=ordered) for c, v in zip(canvases, values))


# ---------------------------------------------------------------------------
# Arguments: backend, arrays, checks.
# ---------------------------------------------------------------------------


class _Run:
    """Where a call runs: backend name (None: a generic array-API library), module, namespace."""

    def __init__(self, array: Any, backend: Optional[str]) -> None:
        self.name = canonical_name(backend) if backend is not None else backend_of(array)
        self.mod = get_backend(self.name) if self.name is not None else None
        self.xp = self.mod.namespace if self.mod is not None else generic_namespace(array)
        #: where the call runs: the device of the patches (None: the backend's default device)
        self.device = None
        if self.mod is not None and self.is_native(array) and not isinstance(array, np.ndarray) \
                and not _is_abstract(array):
            self.device = self.mod.device_of(array)

    def precision(self, dtype: Any) -> Any:
        import contextlib

        return self.mod.precision(dtype) if self.mod is not None else contextlib.nullcontext()

    def is_native(self, x: Any) -> bool:
        if self.mod is not None:
            return self.mod.is_native(x)
        return hasattr(x, "shape") and hasattr(x, "dtype") and not isinstance(x, (np.ndarray, list, tuple))

    def working(self, x: Any, dtype: Any) -> Any:
        """``x`` as a native array of ``dtype`` (no copy when it already is one)."""
        dtype = np.dtype(dtype)
        if self.is_native(x):
            if _dtype_of(x) == dtype:
                return x
            return self.xp.astype(x, getattr(self.xp, dtype.name))
        return self.put(np.asarray(x).astype(dtype, copy=False))

    def put(self, host: np.ndarray) -> Any:
        """Host data onto the call's device: an explicit transfer (``jax.device_put``, allowed by
        ``jax.transfer_guard``), or a ``tf.constant`` under ``tf.device``."""
        return self.mod.asarray(host, device=self.device)

    def to_numpy(self, x: Any) -> np.ndarray:
        """Host values of ``x``; a JAX array is fetched explicitly (``jax.device_get``)."""
        if self.name == "jax":
            import jax

            return np.asarray(jax.device_get(x))
        return self.mod.to_numpy(x) if self.mod is not None else to_host(x)

    def on_device(self) -> Any:
        """TensorFlow: ``tf.device`` of the patches, so that eager steps run where they live."""
        import contextlib

        if self.name == "tensorflow" and self.device:
            return self.mod.on_device(self.device)
        return contextlib.nullcontext()

    def small(self, job: Any, **static: Any) -> Any:
        """A step between the chunks (canvases, crops, the final division): compiled on JAX,
        whose eager steps would send Python scalars from the host; eager elsewhere."""
        if self.name == "jax":
            return compile_job(self.name, job, **static)
        return functools.partial(job, xp=self.xp, **static)

    def compile(self, job: Any, **static: Any) -> Any:

        if self.name is None:
            return functools.partial(job, xp=self.xp, **static)
        return compile_job(self.name, job, **static)

    def fma_guard(self) -> Any:
        if self.mod is None:
            return None
        return self.mod.fma_guard(self.device) if self.device is not None else self.mod.fma_guard()

    def ordered(self, value: Optional[bool], x: Any) -> bool:
        """``ordered`` resolved: None -> True where the scatter-add uses atomics (a GPU)."""
        if value is not None:
            return _validate.flag(value, "ordered")
        if self.name == "numpy":
            return False
        if self.name == "jax":
            import jax

            if not _is_abstract(x):
                return any(d.platform != "cpu" for d in x.devices())
            return jax.default_backend() != "cpu"
        if self.name == "tensorflow":
            import tensorflow as tf

            return bool(tf.config.list_logical_devices("GPU"))
        return "cpu" not in str(getattr(x, "device", "cpu")).lower()


def _dtype_of(x: Any) -> np.dtype:
    dtype = getattr(x.dtype, "as_numpy_dtype", x.dtype)
    try:
        return np.dtype(dtype)
    except TypeError:  # torch.complex64 and friends
        return np.dtype(str(dtype).rsplit(".", 1)[-1])


def _is_abstract(x: Any) -> bool:
    """A traced value (under ``jax.grad``/``jax.jit``, or a symbolic tf.Tensor): no host values."""
    import sys

    jax = sys.modules.get("jax")
    if jax is not None and isinstance(x, jax.core.Tracer):
        return True
    tf = sys.modules.get("tensorflow")
    if tf is not None and isinstance(x, tf.Tensor) and not hasattr(x, "numpy"):
        return True
    return False


def _array(x: Any, name: str, run: _Run) -> Tuple[Tuple[int, ...], np.dtype, Any]:
    """(shape, dtype, array) of a numeric array; native arrays stay where they are (no host copy)."""
    if x is None:
        raise InputTypeError(f"{name} must be an array, got None")
    if run.is_native(x):
        dtype = _dtype_of(x)
        _validate.numeric_dtype(np.empty(0, dtype=dtype), name)
        return tuple(int(v) for v in x.shape), dtype, x
    arr = _validate.to_numpy(x, name)
    _validate.numeric_dtype(arr, name)
    return arr.shape, arr.dtype, arr


def _rows(x: Any, name: str, patches_name: str, count: int, run: _Run, real_dtype: Any) -> Any:
    """Positions/offsets (P, 2): real, finite within ``real_dtype``, one per patch.

    Values are checked on the host when they have host values (not when traced).
    """
    if x is None:
        raise InputTypeError(f"{name} must be an array of shape (P, 2) holding (x, y), got None")
    values = None
    if _is_abstract(x):
        shape = tuple(x.shape)
    else:
        values = run.to_numpy(x) if run.is_native(x) else _validate.to_numpy(x, name)
        if values.dtype.kind == "c":
            raise InputTypeError(f"{name} must be real (x, y) pixel coordinates, got dtype {values.dtype}")
        _validate.numeric_dtype(values, name, real=True)
        shape = values.shape
    if len(shape) != 2 or shape[1] != 2:
        raise InputError(f"{name} must have shape (P, 2) holding (x, y), got shape {tuple(shape)}")
    if shape[0] != count:
        raise InputError(
            f"{name} holds {shape[0]} (x, y) rows but {patches_name} holds {count} patches: one per patch"
        )
    if values is not None:
        _validate.finite(values, name, dtype=real_dtype)
    return x


def _eps(value: Any, name: str = "eps") -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputTypeError(f"{name} must be a non-negative finite number, got {_validate.describe(value)}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise InputError(f"{name} must be a non-negative finite number, got {value}")
    return value


def _evaluation(value: Any) -> str:
    check = getattr(_validate, "evaluation", None)
    if check is not None:
        return check(value)
    if value not in EVALUATIONS:
        raise InputError(f"evaluation must be one of {EVALUATIONS}, got {_validate.describe(value)}")
    return value


def _chunk_rows(updates_per_row: int) -> int:
    return max(1, CHUNK_UPDATES // max(1, updates_per_row))


def _zero_rows(rows: Any, count: int, *, xp: Any) -> Any:
    """``rows`` padded to ``count`` rows with zeros (a zero patch adds +0: the canvas is unchanged)."""
    short = count - int(rows.shape[0])
    if short <= 0:
        return rows
    zeros = xp.zeros((short,) + tuple(int(v) for v in rows.shape[1:]), dtype=rows.dtype, **_on(rows, xp))
    return xp.concat([rows, zeros], axis=0)


# -- the steps between the chunks, as jobs (compiled on JAX: no scalar leaves the host) --


def fill_job(one: Any, *, shapes: Tuple[Tuple[int, ...], ...], value: float, dtype: str, xp: Any) -> Tuple[Any, ...]:
    """Real arrays of ``shapes`` filled with ``value``, made from ``one`` (a runtime 1.0 on the call's
    device: under ``jax.jit`` an output follows the inputs it depends on)."""
    real = getattr(xp, dtype)
    unit = xp.astype(one, real)
    return tuple(xp.full(shape, value, dtype=real) * unit for shape in shapes)


def chunk_job(start: Any, *arrays: Any, total: int, step: int, pad_with: Tuple[str, ...], dtype: str,
              xp: Any) -> Tuple[Any, ...]:
    """Rows ``start + [0, step)`` of each array, and ``valid`` (step,) in ``dtype``: 1 for a row, 0 past ``total``.

    ``start`` is a 0-d integer array on the call's device (one program for every chunk).  Rows past
    the end are zeros ('zeros') or copies of the last row ('copies'); they add +0 to the canvas.
    """
    idx = xp.arange(step, dtype=start.dtype) + start
    inside = idx < total
    safe = xp.where(inside, idx, xp.zeros_like(idx) + (total - 1))
    out = []
    for a, how in zip(arrays, pad_with):
        rows = xp.take(a, safe, axis=0)
        if how == "zeros":
            mask = xp.reshape(inside, (step,) + (1,) * (len(a.shape) - 1))
            rows = xp.where(mask, rows, xp.zeros_like(rows))
        out.append(rows)
    return tuple(out) + (xp.astype(inside, getattr(xp, dtype)),)


def crop_job(patches: Any, *, lo: int, size: int, xp: Any) -> Any:
    """The central ``size`` x ``size`` of each patch (PtychoPINN's crop)."""
    return patches[:, lo:lo + size, lo:lo + size]


def place_finish_job(*canvases: Any, shape: Tuple[int, int], eps: float, coverage: bool, xp: Any) -> Any:
    """The flat zero-bordered canvases of :func:`place_patches` -> the (H, W) result.

    Two canvases (re, im): the complex canvas; three (with ``one``, the runtime 1.0, last):
    ``(re, im, w)`` divided by ``w + eps`` (:func:`divide`), with ``w`` too when ``coverage``.
    """
    H, W = shape
    one = canvases[-1] if len(canvases) == 4 else None
    planes = [
        xp.reshape(c, (H + 2 * BORDER, W + 2 * BORDER))[BORDER:BORDER + H, BORDER:BORDER + W]
        for c in canvases[:3]
    ]
    if len(planes) == 3:
        norm = planes[2] + eps
        stitched = _complex_from_parts(divide(planes[0], norm, xp=xp, one=one),
                                       divide(planes[1], norm, xp=xp, one=one), xp=xp)
        return (stitched, planes[2]) if coverage else stitched
    return _complex_from_parts(planes[0], planes[1], xp=xp)


def shift_finish_job(*canvases: Any, size: int, eps: Optional[float], combine: bool, xp: Any) -> Tuple[Any, ...]:
    """The flat canvases (S*S + 1) of :func:`shift_and_sum_planes` -> (S, S) planes; with ``eps``
    (three canvases and the runtime 1.0 last) ``re`` and ``im`` divided by ``ones + eps``; with
    ``combine``, ``(re + i im,)``."""
    one = canvases[-1] if eps is not None else None
    count = 3 if eps is not None else len(canvases)
    planes = tuple(xp.reshape(c[:size * size], (size, size)) for c in canvases[:count])
    if eps is not None:
        norm = planes[2] + eps
        planes = (divide(planes[0], norm, xp=xp, one=one), divide(planes[1], norm, xp=xp, one=one), planes[2])
    return (_complex_from_parts(planes[0], planes[1], xp=xp),) if combine else planes


# -- the ordered path in steps of windows that do not meet (the wavefront schedule) --


def wavefront_levels(boxes: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    """The wavefront level of each patch: 1 + the highest level of the earlier patches its box meets.

    ``boxes`` (P, 4) int, half-open ``(r0, r1, c0, c1)`` inside ``shape``, each containing every kept
    canvas pixel its patch updates.  Two patches of one level never meet; two patches that meet are
    in increasing levels in patch order -- so adding level after level gives every canvas pixel its
    contributions in patch order.  A level canvas holds, per pixel, the highest level that covers it.
    """
    top = np.zeros(shape, np.int32)
    levels = np.empty(len(boxes), np.int32)
    for i, (r0, r1, c0, c1) in enumerate(boxes.tolist()):
        window = top[r0:r1, c0:c1]
        level = int(window.max()) + 1 if window.size else 1
        window[...] = level
        levels[i] = level
    return levels


def _bucket(n: int) -> int:
    """``n`` rounded up to 8 steps per octave: few distinct shapes, so few compiled programs."""
    if n <= 16:
        return max(n, 1)
    unit = 1 << (n.bit_length() - 4)
    return -(-n // unit) * unit


def step_table(levels: np.ndarray, rows_per_patch: int, *, dummy: int) -> Tuple[np.ndarray, int]:
    """``(table, steps)``: the rows of each step of the ordered path, and how many steps run.

    Patches of one level (in patch order) are cut into steps of at most W patches (a power of two near
    P / levels); a step adds row ``rows_per_patch * p + k`` of its patches, k = 0, 1, ... one step each
    (placement: corner a, b, c, d).  ``table`` (T, W) int32, padded with row ``dummy`` (index: a
    discarded pixel, value 0) and to a bucketed T.
    """
    count = len(levels)
    order = np.argsort(levels, kind="stable")
    sizes = np.bincount(levels)[1:]
    sizes = sizes[sizes > 0]
    width = 1 << max(0, int(math.ceil(math.log2(max(1.0, count / max(1, len(sizes)))))))
    groups = []
    begin = 0
    for size in sizes.tolist():
        for lo in range(begin, begin + size, width):
            groups.append(order[lo:min(lo + width, begin + size)])
        begin += size
    steps = len(groups) * rows_per_patch
    table = np.full((_bucket(steps), width), dummy, np.int32)
    for g, members in enumerate(groups):
        for k in range(rows_per_patch):
            table[g * rows_per_patch + k, :len(members)] = rows_per_patch * members + k
    return table, steps


def steps_job(canvases: Tuple[Any, ...], table: Any, steps: Any, index: Any, *values: Any, dump: int,
              library: str, xp: Any) -> Tuple[Any, ...]:
    """Add ``values`` (R, K) at ``index`` (R, K) into the flat canvases, step after step.

    Step s adds rows ``table[s]`` (row R: a dummy row, index ``dump``, value 0) in one scatter; the
    rows of a step never meet at a kept pixel, so a GPU's atomics have nothing to reorder.
    ``steps`` (0-d) is how many rows of ``table`` run.
    """
    width = int(index.shape[1])
    index = xp.concat([index, xp.zeros((1, width), dtype=index.dtype, **_on(index, xp)) + dump], axis=0)
    values = tuple(xp.concat([v, xp.zeros((1, width), dtype=v.dtype, **_on(v, xp))], axis=0) for v in values)
    if library == "jax":
        import jax

        def add_step(s: Any, accs: Tuple[Any, ...]) -> Tuple[Any, ...]:
            rows = table[s]
            flat = xp.reshape(index[rows], (-1,))
            return tuple(acc.at[flat].add(xp.reshape(v[rows], (-1,)), mode="promise_in_bounds")
                         for acc, v in zip(accs, values))

        return tuple(jax.lax.fori_loop(0, steps, add_step, tuple(canvases)))
    if library == "tensorflow":
        import tensorflow as tf

        def body(s: Any, *accs: Any):
            rows = table[s]
            flat = tf.reshape(tf.gather(index, rows), (-1, 1))
            return (s + 1,) + tuple(tf.tensor_scatter_nd_add(acc, flat, tf.reshape(tf.gather(v, rows), (-1,)))
                                    for acc, v in zip(accs, values))

        out = tf.while_loop(lambda s, *accs: s < steps, body, (tf.constant(0, steps.dtype),) + tuple(canvases))
        return tuple(out[1:])
    accs = list(canvases)
    for s in range(int(steps)):
        rows = table[s]
        flat = xp.reshape(xp.take(index, rows, axis=0), (-1,))
        accs = [scatter_add(acc, flat, xp.reshape(xp.take(v, rows, axis=0), (-1,)), xp=xp)
                for acc, v in zip(accs, values)]
    return tuple(accs)


class _Schedule:
    """The ordered path's steps, from host boxes of each patch's kept pixels (see :func:`wavefront_levels`).

    The last few schedules are kept (keyed by the boxes' bytes): a scan's positions are usually
    placed again and again (every epoch), and the host loop is most of the ordered path's host time.
    """

    _recent: "dict" = {}

    def __new__(cls, boxes: np.ndarray, shape: Tuple[int, int], rows_per_patch: int, dump: int) -> "_Schedule":
        key = (np.ascontiguousarray(boxes, dtype=np.int64).tobytes(), tuple(shape), rows_per_patch, dump)
        found = cls._recent.pop(key, None)
        if found is None:
            found = super().__new__(cls)
            found.levels = wavefront_levels(boxes, shape)
            found.rows_per_patch = rows_per_patch
            found.dump = dump
            found.tables = {}
        cls._recent[key] = found  # most recent last
        while len(cls._recent) > 4:
            cls._recent.pop(next(iter(cls._recent)))
        return found

    def table(self, start: int, stop: int, rows: int) -> Tuple[np.ndarray, int]:
        key = (start, stop, rows)
        if key not in self.tables:
            self.tables[key] = step_table(self.levels[start:stop], self.rows_per_patch, dummy=rows)
        return self.tables[key]


def _run_chunks(
    run: _Run, job: Any, canvases: Tuple[Any, ...], chunked: Sequence[Any], pad_with: Sequence[str],
    shared: Sequence[Any], *, step: int, ordered: bool, dtype: str, schedule: Optional[_Schedule] = None,
    **static: Any,
) -> Tuple[Any, ...]:
    """Carry ``canvases`` through the chunks of ``step`` rows of ``chunked``, in order.

    Per chunk: ``index, *values = job(*chunk[:2], valid, *chunk[2:], *shared)`` (``valid``: 1 for a
    row, 0 for a padding row), then :func:`scatter_job` -- or, ordered with a ``schedule``,
    :func:`steps_job` -- adds them: the canvas receives its updates in patch order.  Compiling
    backends pad the last chunk to ``step`` rows (one program for the run): rows padded by
    ``pad_with`` ('zeros' or 'copies') add nothing.  On JAX the chunks are cut by a compiled
    :func:`chunk_job` whose start is placed on the device explicitly.
    """
    xp = run.xp
    updates = run.compile(job, **static)
    total = int(chunked[0].shape[0])
    real = getattr(xp, dtype)
    library = run.name if run.name in ("jax", "tensorflow") else "generic"
    if ordered and schedule is not None and run.name in ("jax", "tensorflow"):
        steps_program = run.compile(steps_job, dump=schedule.dump, library=library)
    else:
        schedule = None
        scatter = run.compile(scatter_job, ordered=ordered)
    pad_last = run.name in ("jax", "tensorflow") and total > step
    if run.name == "jax" and total > step:
        cut = run.compile(chunk_job, total=total, step=step, pad_with=tuple(pad_with), dtype=dtype)
    for start, stop in chunk_bounds(total, step):
        if run.name == "jax":
            if total > step:
                *chunk, valid = cut(run.put(np.asarray(start, np.int32)), *chunked)
            else:
                chunk = list(chunked)
                (valid,) = run.small(fill_job, shapes=((total,),), value=1.0, dtype=dtype)(run.fma_guard())
        else:
            chunk = [a[start:stop] for a in chunked]
            valid = xp.zeros((stop - start,), dtype=real, **_on(chunk[0], xp)) + 1
            if pad_last and stop - start < step:
                chunk = [
                    _zero_rows(a, step, xp=xp) if how == "zeros" else pad_rows(a, step, xp=xp)
                    for a, how in zip(chunk, pad_with)
                ]
                valid = _zero_rows(valid, step, xp=xp)
        index, *values = updates(*chunk[:2], valid, *chunk[2:], *shared)
        if schedule is not None:
            table, steps = schedule.table(start, stop, int(index.shape[0]))
            canvases = tuple(steps_program(tuple(canvases), run.put(table), run.put(np.asarray(steps, np.int32)),
                                           index, *values))
        else:
            canvases = tuple(scatter(tuple(canvases), index, *values))
    return canvases


# ---------------------------------------------------------------------------
# Public operators.
# ---------------------------------------------------------------------------


def divide(a: Any, b: Any, *, xp: Any, one: Any = None) -> Any:
    """``a / b``, correctly rounded on every device.

    XLA divides float32 on NVIDIA GPUs with ``div.full.f32`` (up to 2 ulp off;
    openxla/xla#37181), so float32 operands are divided in float64 (``div.rn``
    there too) and rounded to float32 -- the correctly rounded quotient:
    rounding twice is innocuous for a division when the wide type has at least
    2 * 24 + 2 bits.  ``one``, a runtime 1.0 (``fma_guard``), multiplies the
    wide quotient so that no compiler can shrink the division back to float32.
    float64 operands are divided as they are.
    """
    if a.dtype != xp.float32:
        return a / b
    wide = xp.float64
    quotient = xp.astype(a, wide) / xp.astype(b, wide)
    if one is not None:
        quotient = quotient * xp.astype(one, wide)
    return xp.astype(quotient, xp.float32)


def place_patches(
    patches: Any,
    positions: Any,
    shape: Any,
    *,
    backend: Optional[str] = None,
    weights: Any = None,
    normalize: bool = False,
    eps: float = DEFAULT_EPS,
    ordered: Optional[bool] = None,
    return_coverage: bool = False,
) -> Any:
    """Place patches back into an object canvas: the exact adjoint of :func:`extract_patches`.

    ``place_patches(y, positions, (H, W))`` is the linear map with
    ``<extract_patches(x, positions, N), y> == <x, place_patches(y, positions, (H, W))>``
    for every object x (complex inner product), to rounding: the same
    positions convention, the same stencil and bilinear weights, scattered.

    Parameters
    ----------
    patches : array (P, N, N), complex (or real)
    positions : array (P, 2)
        (x, y) object pixels of each patch's centre, as for ``extract_patches``.
    shape : (H, W)
        The object canvas.
    backend : {'numpy', 'jax', 'tensorflow'}, optional
        Default: the owner of ``patches``' array type; arrays of other
        array-API libraries (PyTorch, CuPy) run eagerly on their device.
    weights : real array (P, N, N) or (N, N), optional
        Per-pixel weights (e.g. ``|probe|**2``): each patch is multiplied by
        them before it is placed.
    normalize : bool
        Return the normalised stitch ``place(w * patch) / (place(w) + eps)``
        (``w`` = 1 without weights): overlaps are averaged (what Ptychodus and
        pty-chi call stitching); ``place(w)`` is the coverage.
    eps : float
        Regulariser of the normalised stitch (default 1e-9, PtychoPINN's).
    ordered : bool, optional
        Accumulate patch by patch on every device (module docstring); default:
        only where the scatter-add would use atomics (a GPU).
    return_coverage : bool
        With ``normalize=True``: also return the coverage ``place(w)`` (H, W),
        real, the canvas the stitch was divided by (before ``eps``) -- the
        bits of a separate ``place_patches`` of ``w``, without a second pass.

    Returns
    -------
    array (H, W), complex64 (complex128 for complex128/float64 patches), of
    the backend's native type; with ``return_coverage``, the pair
    ``(stitched, coverage)``.  Deterministic: the same bits run to run.
    Differentiable (JAX, TensorFlow) with respect to the patches, the
    positions (through the bilinear weights) and the weights.
    """
    H, W = _validate.size_pair(shape, "shape")
    normalize = _validate.flag(normalize, "normalize")
    if _validate.flag(return_coverage, "return_coverage") and not normalize:
        raise InputError("return_coverage needs normalize=True: the coverage is the normalised stitch's divisor")
    eps = _eps(eps)
    if patches is None:
        raise InputTypeError("patches must be an array (P, N, N), got None")
    run = _Run(patches, backend)
    xp = run.xp
    pshape, pdtype, patches = _array(patches, "patches", run)
    if len(pshape) != 3 or pshape[1] != pshape[2]:
        raise InputError(f"patches must be 3-D (P, N, N) with square patches, got shape {pshape}")
    count, n = pshape[0], pshape[1]
    if n == 0:
        raise InputError(f"patches must have a non-empty patch size N, got shape {pshape}")
    cdtype, rdtype = _validate.working_dtypes(pdtype)
    positions = _rows(positions, "positions", "patches", count, run, rdtype)
    mode = "normalized" if normalize else "plain"
    if weights is not None:
        wshape, wdtype, weights = _array(weights, "weights", run)
        if wdtype.kind == "c":
            raise InputTypeError(f"weights must be real (e.g. |probe|**2), got dtype {wdtype}")
        if wshape not in ((count, n, n), (n, n)):
            raise InputError(
                f"weights must have shape (P, N, N) = {(count, n, n)} or (N, N) = {(n, n)}, got shape {wshape}"
            )
        mode = "normalized" if normalize else "weighted"
    padded = (H + 2 * BORDER) * (W + 2 * BORDER)
    with run.precision(cdtype), run.on_device():
        p = run.working(patches, cdtype)
        real = getattr(xp, np.dtype(rdtype).name)
        dtype = np.dtype(rdtype).name
        guard = run.fma_guard()
        fill = run.small(fill_job, shapes=((padded,),) * (3 if mode == "normalized" else 2), value=0.0, dtype=dtype)
        canvases = fill(guard) if run.name == "jax" else tuple(
            xp.zeros((padded,), dtype=real, **_on(p, xp)) for _ in range(3 if mode == "normalized" else 2)
        )
        if count:
            pos = run.working(positions, rdtype)
            if weights is None:
                (w,) = run.small(fill_job, shapes=((1, n, n),), value=1.0 if mode == "normalized" else 0.0,
                                 dtype=dtype)(guard) if run.name == "jax" else (
                    xp.zeros((1, n, n), dtype=real, **_on(p, xp)) + (1 if mode == "normalized" else 0),)
            else:
                w = xp.reshape(run.working(weights, rdtype), (-1, n, n))
            per_patch = int(w.shape[0]) == count and count > 1
            ordered = run.ordered(ordered, p)
            schedule = None
            if ordered and run.name in ("jax", "tensorflow") and not _is_abstract(pos):
                schedule = _Schedule(_place_boxes(run.to_numpy(pos), n, (H, W)),
                                     (H + 2 * BORDER, W + 2 * BORDER), rows_per_patch=4, dump=0)
            canvases = _run_chunks(
                run, place_updates_job, canvases,
                [p, pos, w] if per_patch else [p, pos], ["zeros", "copies", "zeros"],
                [] if per_patch else [w],
                step=_chunk_rows(4 * n * n), ordered=ordered, dtype=dtype, schedule=schedule, shape=(H, W), mode=mode,
            )
        finish = run.small(place_finish_job, shape=(H, W), eps=eps, coverage=bool(return_coverage))
        return finish(*canvases, guard) if mode == "normalized" else finish(*canvases)


def _place_boxes(positions: np.ndarray, n: int, shape: Tuple[int, int]) -> np.ndarray:
    """Host boxes (P, 4), half-open (r0, r1, c0, c1) in the zero-bordered canvas, each containing every
    pixel the four corners of its patch update (:func:`spread_chunk`): the sample coordinates
    ``X + p`` (X in [0, N)) floored, less the origin N // 2, with 2 pixels of slack for rounding,
    clipped to [-BORDER, size] as the stencil clips them (a monotone map: the box still contains
    them), then the corners' +1."""
    H, W = shape
    low = np.floor(positions.astype(np.float64)) - n // 2 - 1 - 2
    high = np.floor(positions.astype(np.float64)) - n // 2 + n + 2
    boxes = []
    for axis, size in ((1, H), (0, W)):
        lo = np.clip(low[:, axis], -BORDER, size) + BORDER
        hi = np.clip(high[:, axis], -BORDER, size) + BORDER + 2  # corner +1, half-open +1
        boxes += [lo, hi]
    return np.stack(boxes, axis=1).astype(np.int64)


def _crop_size(M: Any, n: int) -> int:
    M = _validate.positive_int(M, "M")
    if M % 2:
        raise InputError(
            f"M must be even: PtychoPINN crops rows N//2 - M//2 : N//2 + M//2, M - 1 of them for odd M; got M={M}"
        )
    if M > n:
        raise InputError(f"M must not exceed the patch size N = {n}, got M={M}")
    return M


def recentre_offsets(offsets: Any, *, xp: Any) -> Any:
    """PtychoPINN's recentring: ``offsets - mean(offsets, axis=0)``, in the offsets' dtype.

    The mean in the backend's reduction order; :func:`_recentred` gives
    PtychoPINN's order (rows added one after the other) on every backend.
    """
    return offsets - xp.mean(offsets, axis=0)


def sequential_mean(offsets: np.ndarray) -> np.ndarray:
    """The mean of the rows of a host (P, 2) array, the rows added in order, then divided by P.

    The order of PtychoPINN's ``tf.reduce_mean(..., axis=0)`` on a CPU (and of
    NumPy's along a non-contiguous axis).  XLA's reductions (JAX, TF under
    ``jit_compile``) and GPU libraries add in another order once there are
    more than 32 rows, which moves the mean by an ulp and every canvas pixel
    with it.
    """
    offsets = np.asarray(offsets)
    total = np.add.accumulate(offsets, axis=0)[-1]  # strictly left to right, in the offsets' dtype
    return total / offsets.dtype.type(offsets.shape[0])


def _recentred(run: "_Run", offsets: Any) -> Tuple[Any, Optional[np.ndarray]]:
    """PtychoPINN's recentring, its mean's rows added in order on every backend: ``(recentred, host)``.

    ``host``: the recentred offsets' host values (None when traced).  TensorFlow:
    ``tf.reduce_mean``, PtychoPINN's own op (differentiable under a tape).  A
    traced array (under ``jax.grad``/``jax.jit``): the namespace's
    ``sequential_mean`` (JAX: a ``lax.scan`` over the rows), else its mean.
    Otherwise the offsets are fetched to the host explicitly (``jax.device_get``;
    they are needed there for the canvas size and the ordered path's steps), are
    recentred there by :func:`sequential_mean` and go back to their device by an
    explicit transfer (``jax.device_put``: ``jax.transfer_guard`` allows it).
    """
    if run.name == "tensorflow":
        recentred = recentre_offsets(offsets, xp=run.xp)
        return recentred, (None if _is_abstract(recentred) else run.to_numpy(recentred))
    if _is_abstract(offsets):
        in_order = getattr(run.xp, "sequential_mean", None)
        return (offsets - in_order(offsets) if in_order is not None else recentre_offsets(offsets, xp=run.xp)), None
    host = np.asarray(run.to_numpy(offsets))
    recentred = host - sequential_mean(host)
    if run.mod is None:  # a library without a backend module (PyTorch, CuPy)
        import array_api_compat

        return run.xp.asarray(recentred, device=array_api_compat.device(offsets)), recentred
    return run.mod.asarray(recentred, device=run.mod.device_of(offsets)), recentred


def canvas_pad(adjusted: np.ndarray) -> int:
    """PtychoPINN's dynamic pad: ``ceil(max |offset|)``, made even (so that the crop stays centred)."""
    adjusted = np.asarray(adjusted)
    if not adjusted.size:
        return 0
    pad = int(np.ceil(np.max(np.abs(adjusted))))
    return pad + pad % 2


def shift_and_sum_planes(
    patches: Any,
    offsets: Any,
    M: int = 10,
    *,
    backend: Optional[str] = None,
    evaluation: str = "compiled",
    recentre: bool = True,
    pad: Optional[int] = None,
    ordered: Optional[bool] = None,
    ones: bool = False,
    eps: Optional[float] = None,
    names: Tuple[str, str] = ("patches", "offsets"),
    combine: bool = False,
) -> Tuple[Any, Tuple[Any, ...]]:
    """The real canvases of :func:`shift_and_sum`: ``(xp, (re, im[, ones]))``, each (S, S).

    For wrappers that combine them themselves (``ptycho.tf_helper`` divides as PtychoPINN does).
    With ``ones=True`` and ``eps``: ``(re / (ones + eps), im / (ones + eps), ones)``, divided
    exactly on every device (:func:`divide`).  ``combine``: ``(xp, (re + i im,))``, formed where
    the patches live.
    """
    patches_name, offsets_name = names
    evaluation = _evaluation(evaluation)
    recentre = _validate.flag(recentre, "recentre")
    if patches is None:
        raise InputTypeError(f"{patches_name} must be an array (P, N, N), got None")
    run = _Run(patches, backend)
    xp = run.xp
    pshape, pdtype, patches = _array(patches, patches_name, run)
    if len(pshape) != 3 or pshape[1] != pshape[2]:
        raise InputError(f"{patches_name} must be (P, N, N) with square patches, got shape {pshape}")
    if pshape[0] == 0:
        raise InputError(
            f"{patches_name} must hold at least one patch (the offsets' mean is undefined), got shape {pshape}"
        )
    n = pshape[1]
    M = _crop_size(M, n)
    cdtype, rdtype = _validate.working_dtypes(pdtype)
    offsets = _rows(offsets, offsets_name, patches_name, pshape[0], run, rdtype)
    with run.precision(cdtype), run.on_device():
        p = run.working(patches, cdtype)
        t = run.working(offsets, rdtype)
        host = None  # the offsets' host values, recentred: the canvas size and the ordered path's steps
        if recentre:
            t, host = _recentred(run, t)
        elif not _is_abstract(t):
            host = run.to_numpy(t)
        if pad is None:
            if host is None:
                raise InputError(
                    f"pad must be given when {offsets_name} are traced (e.g. under jax.grad): the canvas "
                    "size cannot depend on traced values"
                )
            pad = canvas_pad(host)
        else:
            pad = _validate.non_negative_int(pad, "pad")
        lo = n // 2 - M // 2
        crops = run.small(crop_job, lo=lo, size=M)(p)
        size = M + 2 * pad
        real = getattr(xp, np.dtype(rdtype).name)
        dtype = np.dtype(rdtype).name
        guard = run.fma_guard()
        shapes = ((size * size + 1,),) * (3 if ones else 2)
        canvases = run.small(fill_job, shapes=shapes, value=0.0, dtype=dtype)(guard) if run.name == "jax" else \
            tuple(xp.zeros((size * size + 1,), dtype=real, **_on(p, xp)) for _ in range(3 if ones else 2))
        ordered = run.ordered(ordered, p)
        schedule = None
        if ordered and run.name in ("jax", "tensorflow") and host is not None:
            schedule = _Schedule(_shift_boxes(host, M, pad), (size, size), rows_per_patch=1, dump=size * size)
        canvases = _run_chunks(
            run, shift_updates_job, canvases, [crops, t], ["zeros", "copies"], [guard],
            step=_chunk_rows((M + 1) ** 2), ordered=ordered, dtype=dtype, schedule=schedule,
            pad=pad, evaluation=evaluation, ones=bool(ones),
        )
        divided = ones and eps is not None
        finish = run.small(shift_finish_job, size=size, eps=float(eps) if divided else None, combine=bool(combine))
        return xp, tuple(finish(*canvases, guard) if divided else finish(*canvases))


def _shift_boxes(offsets: np.ndarray, M: int, pad: int) -> np.ndarray:
    """Host boxes (P, 4), half-open (r0, r1, c0, c1) in the S x S canvas, of each window
    (:func:`shift_windows`: (M+1)^2 pixels from (floor(ty) + pad, floor(tx) + pad)); pixels outside
    the canvas go to the discarded element, where the order does not matter."""
    size = M + 2 * pad
    row = np.floor(offsets[:, 1].astype(np.float64)).astype(np.int64) + pad
    col = np.floor(offsets[:, 0].astype(np.float64)).astype(np.int64) + pad
    return np.stack([np.clip(row, 0, size), np.clip(row + M + 1, 0, size),
                     np.clip(col, 0, size), np.clip(col + M + 1, 0, size)], axis=1)


def shift_and_sum(patches: Any, offsets: Any, M: int = 10, **kwargs: Any) -> Any:
    """PtychoPINN's ``shift_and_sum``, windowed: each patch's central M x M, translated, summed.

    Parameters
    ----------
    patches : array (P, N, N), complex
    offsets : array (P, 2), (x, y) pixels (PtychoPINN's ``global_offsets``)
    M : int
        Even, at most N: the crop ``[N//2 - M//2 : N//2 + M//2]`` of each patch.
    backend : {'numpy', 'jax', 'tensorflow'}, optional
    evaluation : {'compiled', 'plain'}
        The bilinear sum's order: PtychoPINN's XLA path (default) or its eager path.
    recentre : bool
        Subtract the offsets' mean (in their real dtype) first, as PtychoPINN does (default).
    pad : int, optional
        The crops' zero padding, canvas side S = M + 2*pad; default
        PtychoPINN's ``ceil(max |offset|)`` made even.  Needed when the offsets
        have no host values (differentiating with respect to them under ``jax.grad``).
    ordered : bool, optional
        See the module docstring (default: only on a GPU).

    Returns
    -------
    array (S, S), complex64 (complex128 for complex128 patches), native type.
    On a CPU the canvas equals PtychoPINN's sequential full-canvas loop bit for
    bit: the same per-patch contributions, added in patch order.
    """
    _, (canvas,) = shift_and_sum_planes(patches, offsets, M, combine=True, **kwargs)
    return canvas


def reassemble_position(patches: Any, offsets: Any, M: int = 10, *, eps: float = DEFAULT_EPS, **kwargs: Any) -> Any:
    """PtychoPINN's ``reassemble_position``: :func:`shift_and_sum` / (the same sum over ones + eps).

    One pass (the ones share the windows); the division is real, the sum over
    ones being real.  Arguments as :func:`shift_and_sum`; returns (S, S) complex.
    """
    _, (canvas,) = shift_and_sum_planes(patches, offsets, M, ones=True, eps=_eps(eps), combine=True, **kwargs)
    return canvas
