"""PtychoPINN's model-side patch operations, windowed on the translate-then-slice engine.

PtychoPINN's training step moves patches between the object frame and the
patch frame with whole-image translations:

- :func:`extract_patches_position`: translate the padded object (M x M) by
  each offset, keep the central N x N;
- :func:`_reassemble_patches_position_real` / :func:`_reassemble_position_batched`:
  pad each N x N patch to the padded size, translate it by minus its
  (recentred) offset, sum.

Both are a translation followed by a crop or a sum, so only the pixels that
survive are computed: the N x N window of each patch (extraction), the
(N+1) x (N+1) window where a translated patch is non-zero (reassembly),
scatter-added in patch order.  The windows come from
:func:`ptycho.backends.window.translate_window` through
:func:`ptycho.backends.translate_validated`; the scatter is
:func:`ptycho.backends.placement.scatter_job`.  Each window equals those
pixels of PtychoPINN's full-frame translation bit for bit (the output pixel
is formed as an integer before the translation is subtracted), in the
compiled evaluation order -- PtychoPINN's ``Translation`` layer always runs
``translate_xla`` under XLA.  Everything is differentiable under
``tf.GradientTape`` and runs inside ``tf.function`` and Keras models; where
a traced graph leaves the number of patches unknown, the engine runs over
fixed-size chunks of patches (``tf.map_fn``), each compiled once.  Known
limit: a whole training step compiled by XLA (``model.compile(jit_compile=True)``)
with an unknown batch size cannot differentiate that ``tf.map_fn`` (XLA needs
its size at compile time); PtychoPINN's default (``use_xla_compile`` off) and
static batch shapes are fine.

PtychoPINN code reaches these names through :mod:`ptycho.tf_helper`.
"""

from __future__ import annotations

import numbers
import warnings
from typing import Any, Callable, Optional, Sequence, Tuple

import tensorflow as tf

from ptycho import _validate, params
from ptycho.backends import translate_job, translate_validated
from ptycho.backends._dispatch import compile_job
from ptycho.backends._tensorflow import check_images, device_of, fma_guard, on_device, translate_4d
from ptycho.backends.placement import scatter_job
from ptycho.errors import InputError, InputTypeError
from ptycho.tf_layouts import (
    _channel_to_flat,
    _flat_to_channel,
    _format,
    complexify_function,
    extract_inner_grid,
    extract_outer,
    flatten_offsets,
    mk_centermask,
    padding_of,
    real_offsets,
    reassemble_patches_real,
    setting,
    tensor_4d,
)

__all__ = [
    "Translation",
    "extract_patches_position",
    "center_channels",
    "_reassemble_patches_position_real",
    "_reassemble_position_batched",
    "mk_reassemble_position_real",
    "mk_reassemble_position_batched_real",
    "mk_norm",
    "reassemble_patches",
    "reassemble_whole_object",
    "extract_nested_patches",
    "mk_extract_inner_position",
    "extract_nested_patches_position",
]

#: Patches per engine call when a traced graph leaves their number unknown.
DYNAMIC_CHUNK = 16


# ---------------------------------------------------------------------------
# The engine, for static and traced (unknown) batch sizes
# ---------------------------------------------------------------------------


def _dtypes(dtype: tf.DType) -> Tuple[tf.DType, tf.DType]:
    """(complex, real) working dtypes of an image dtype: float64/complex128 -> 128-bit, else 64-bit."""
    if dtype in (tf.float64, tf.complex128):
        return tf.complex128, tf.float64
    return tf.complex64, tf.float32


def _count(x: tf.Tensor) -> Any:
    """Static leading size, else the runtime one."""
    return x.shape[0] if x.shape[0] is not None else tf.shape(x)[0]


def grouped_translate_job(
    images: Any, translations: Any, guard: Any, output_origin: Any = None, *, group: int, xp: Any, **static: Any
) -> Any:
    """:func:`ptycho.backends.translate_job` with image b serving translations ``b*group .. b*group + group - 1``.

    The repeat happens inside the compiled program, where XLA folds it into
    the gathers' indexing instead of copying each object ``group`` times.
    """
    return translate_job(tf.repeat(images, group, axis=0), translations, guard, output_origin, xp=xp, **static)


# Not converted by AutoGraph: no tensor-dependent Python control flow, and the engine's
# lazy imports would make it warn inside every caller's traced training step.
@tf.autograph.experimental.do_not_convert
def _windows(
    sources: tf.Tensor,
    translations: tf.Tensor,
    *,
    output_size: Tuple[int, int],
    group: int = 1,
    source_origin: Tuple[int, int] = (0, 0),
    output_origin: Optional[tf.Tensor] = None,
    evaluation: str = "compiled",
) -> tf.Tensor:
    """Window ``output_size`` of each translated source: (P, h, w) complex.

    ``sources`` (S, H, W) complex; translation i (of ``translations`` (P, 2),
    (tx, ty) in the sources' real dtype) moves source ``(i // group) % S``
    (S = 1: one shared source, never tiled).  ``output_origin`` (P, 2) int32
    places each window in the output frame (default: its corner at 0).
    """
    static = dict(
        output_size=tuple(int(v) for v in output_size), interpolation="bilinear", channels=1,
        source_origin=tuple(int(v) for v in source_origin), evaluation=evaluation,
    )
    count, n_src = translations.shape[0], sources.shape[0]
    h, w = static["output_size"]
    if count is not None and n_src is not None:
        if count == 0:
            return tf.zeros((0, h, w), dtype=sources.dtype)
        if n_src != 1 and n_src != count:
            if n_src * group == count:
                fn = compile_job("tensorflow", grouped_translate_job, group=group, **static)
                device = device_of(sources)
                with on_device(device):
                    return fn(sources, translations, fma_guard(device), output_origin)[..., 0]
            else:
                sources = tf.gather(sources, (tf.range(count) // group) % n_src)
        out = translate_validated("tensorflow", sources, translations, output_origin, jit=True, **static)
        return out[..., 0]
    # A traced graph with an unknown number of patches: the engine compiles for
    # static shapes, so it runs over chunks of DYNAMIC_CHUNK patches (the last
    # padded with zero translations and dropped).
    total = tf.shape(translations)[0]
    chunks = (total + DYNAMIC_CHUNK - 1) // DYNAMIC_CHUNK
    padded = chunks * DYNAMIC_CHUNK
    extra = [[0, padded - total], [0, 0]]
    t = tf.reshape(tf.pad(translations, extra), (-1, DYNAMIC_CHUNK, 2))
    origin = None if output_origin is None else tf.reshape(tf.pad(output_origin, extra), (-1, DYNAMIC_CHUNK, 2))
    shared = n_src == 1
    index = tf.reshape((tf.range(padded) // group) % tf.shape(sources)[0], (-1, DYNAMIC_CHUNK))

    @tf.autograph.experimental.do_not_convert
    def chunk(args: Tuple[tf.Tensor, ...]) -> tf.Tensor:
        t_k, idx_k = args[0], args[1]
        src = sources if shared else tf.gather(sources, idx_k)
        src = tf.ensure_shape(src, (1 if shared else DYNAMIC_CHUNK,) + tuple(sources.shape[1:]))
        t_k = tf.ensure_shape(t_k, (DYNAMIC_CHUNK, 2))
        o_k = None if origin is None else tf.ensure_shape(args[2], (DYNAMIC_CHUNK, 2))
        return translate_validated("tensorflow", src, t_k, o_k, jit=True, **static)[..., 0]

    elems = (t, index) if origin is None else (t, index, origin)
    out = tf.map_fn(chunk, elems, fn_output_signature=tf.TensorSpec((DYNAMIC_CHUNK, h, w), sources.dtype))
    return tf.reshape(out, (-1, h, w))[:total]


def _translations(offsets: tf.Tensor, jitter: Any = 0.0) -> tf.Tensor:
    """PtychoPINN's ``Translation`` coercion: real, float32 unless float64, plus Gaussian jitter."""
    if offsets.dtype.is_complex:
        offsets = tf.math.real(offsets)
    if offsets.dtype not in (tf.float32, tf.float64):
        offsets = tf.cast(offsets, tf.float32)
    if jitter > 0:
        offsets = offsets + tf.cast(tf.random.normal(tf.shape(offsets), stddev=jitter), offsets.dtype)
    return offsets


def _jitter(value: Any, name: str = "jitter") -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputTypeError(f"{name} must be a real number >= 0 (the jitter's standard deviation), got {_validate.describe(value)}")
    value = float(value)
    if not value >= 0 or value == float("inf"):
        raise InputError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


def _as_complex_planes(x: tf.Tensor) -> Tuple[tf.Tensor, bool]:
    """(S, H, W, 1) -> (S, H, W) in the complex working dtype, and whether ``x`` was real."""
    cdtype, _ = _dtypes(x.dtype)
    return tf.cast(x[..., 0], cdtype), not x.dtype.is_complex


def _back_to(x: tf.Tensor, like: tf.DType, real: bool) -> tf.Tensor:
    if not real:
        return x
    out = tf.math.real(x)
    return tf.cast(out, like) if like.is_floating and out.dtype != like else out


# ---------------------------------------------------------------------------
# The Translation layer
# ---------------------------------------------------------------------------


def _translate_frames(imgs: tf.Tensor, offsets: tf.Tensor) -> tf.Tensor:
    """Full-frame translation of (B, H, W, C) by (P, 2) (compiled order); B = 1 is shared by all P."""
    b, n = imgs.shape[0], offsets.shape[0]
    if b is not None and n is not None:
        if b not in (1, n) and b % n == 0:
            # PtychoPINN's translate_xla reuses the translations cyclically over a larger image batch
            offsets = tf.gather(offsets, tf.range(b) % n)
        return translate_4d(imgs, offsets, "bilinear", True, None, 1, names=("imgs", "offsets"))
    # traced, sizes unknown: one window per (image, translation) pair, the frame as the window
    _, h, w, depth = imgs.shape
    if h is None or w is None or depth is None:
        raise InputError(f"imgs must have static height, width and channels, got shape {tuple(imgs.shape)}")
    cdtype, rdtype = _dtypes(imgs.dtype)
    bb, nn = tf.shape(imgs)[0], tf.shape(offsets)[0]
    count = tf.where(tf.equal(bb, 1), nn, bb)
    t = tf.gather(tf.cast(offsets, rdtype), tf.range(count) % nn)
    planes = []
    for ch in range(depth):
        plane = _windows(tf.cast(imgs[..., ch], cdtype), t, output_size=(h, w))
        planes.append(plane[..., None])
    out = planes[0] if depth == 1 else tf.concat(planes, axis=-1)
    return _back_to(out, imgs.dtype, not imgs.dtype.is_complex)


@tf.keras.utils.register_keras_serializable(package="ptycho")
class Translation(tf.keras.layers.Layer):
    """Keras layer: ``[images (B, H, W, C), offsets (P, 2)]`` -> images translated by offsets (+ jitter).

    Output pixel (y, x) samples the input at (x - tx, y - ty), zero outside,
    PtychoPINN's compiled (XLA) evaluation order.  ``jitter_stddev > 0`` adds
    Gaussian noise of that standard deviation to the offsets on every call; a
    third input, a number, replaces ``jitter_stddev``.  As PtychoPINN's layer,
    ``use_xla`` is recorded but the XLA path is always taken.
    """

    def __init__(self, jitter_stddev: float = 0.0, use_xla: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.jitter_stddev = _jitter(jitter_stddev, "jitter_stddev")
        _validate.flag(use_xla, "use_xla")
        self.use_xla = True

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"jitter_stddev": self.jitter_stddev, "use_xla": self.use_xla})
        return config

    def call(self, inputs: Any) -> tf.Tensor:
        if not isinstance(inputs, (list, tuple)) or len(inputs) not in (2, 3):
            raise InputError(
                f"Translation expects a list [images, offsets] or [images, offsets, jitter], got {_validate.describe(inputs)}"
            )
        if len(inputs) == 3 and isinstance(inputs[2], numbers.Real):
            self.jitter_stddev = _jitter(inputs[2], "jitter (third input)")
        imgs = check_images(inputs[0], "imgs")
        offsets = tf.convert_to_tensor(inputs[1])
        if offsets.shape.rank != 2 or offsets.shape[1] != 2:
            raise InputError(f"offsets must have shape (P, 2) holding (tx, ty), got shape {tuple(offsets.shape)}")
        return _translate_frames(imgs, _translations(offsets, self.jitter_stddev))


# ---------------------------------------------------------------------------
# Extraction: object frame -> patches
# ---------------------------------------------------------------------------


def _channel_offsets(offsets_xy: Any, c: int, name: str = "offsets_xy") -> tf.Tensor:
    t = real_offsets(offsets_xy, name)
    if t.shape[3] is not None and t.shape[3] != c:
        raise InputError(f"{name} must have gridsize**2 = {c} channels (shape (B, 1, 2, {c})), got shape {tuple(t.shape)}")
    return t


def extract_patches_position(
    imgs: Any, offsets_xy: Any, jitter: float = 0.0, N: Optional[int] = None, gridsize: Optional[int] = None
) -> tf.Tensor:
    """Patches of each group's padded object at its offsets, windowed: flat (B*c, N', N', 1).

    ``imgs`` (B, M, M, 1) (one padded object per group; B = 1: one object
    shared by every group, never tiled), ``offsets_xy`` (B, 1, 2, c) holding
    (x, y), c = gridsize**2.  Patch ``b*c + k`` is PtychoPINN's
    ``translate(imgs[b], offset[b, k] + jitter)`` cropped by ``(M - N) // 2``
    on every side (N' = M - 2*((M - N) // 2)): only that window is computed,
    bit for bit those pixels of the full-frame translation (compiled order).
    No sign change: the translation is +offset.  ``jitter`` > 0 adds Gaussian
    noise to the offsets.  Real input gives a real result.
    """
    N = setting(N, "N")
    c = setting(gridsize, "gridsize") ** 2
    jitter = _jitter(jitter)
    imgs = tensor_4d(imgs, "imgs", "(B, M, M, 1)")
    if imgs.shape[3] != 1:
        raise InputError(f"imgs must have one channel (B, M, M, 1), got shape {tuple(imgs.shape)}")
    m = imgs.shape[1]
    if m is None or imgs.shape[2] != m:
        raise InputError(f"imgs must be square with a static side (B, M, M, 1), got shape {tuple(imgs.shape)}")
    if m < N:
        raise InputError(f"imgs must be at least N = {N} pixels wide, got shape {tuple(imgs.shape)}")
    offsets = _channel_offsets(offsets_xy, c)
    b_img, b_off = imgs.shape[0], offsets.shape[0]
    if b_img is not None and b_off is not None and b_img not in (1, b_off):
        raise InputError(
            f"imgs batch ({b_img}) must equal the number of groups in offsets_xy ({b_off}), or be 1 (shared)"
        )
    _, rdtype = _dtypes(imgs.dtype)
    t = tf.cast(_translations(flatten_offsets(offsets), jitter), rdtype)
    clip = (m - N) // 2
    side = m - 2 * clip
    sources, real = _as_complex_planes(imgs)
    origin = None
    if clip:
        origin = tf.fill(tf.stack([tf.shape(t)[0], 2]), tf.constant(clip, tf.int32))
    out = _windows(sources, t, output_size=(side, side), group=c, output_origin=origin)
    return _back_to(out[..., None], imgs.dtype, real)


def center_channels(channels: Any, offsets_xy: Any) -> tf.Tensor:
    """Undo the patch offsets: each channel-format patch translated by minus its offset (full frame)."""
    channels = tensor_4d(channels, "channels", "(B, N, N, c)")
    c = channels.shape[3]
    offsets = _channel_offsets(offsets_xy, c if c is not None else setting(None, "gridsize") ** 2)
    flat = _channel_to_flat(channels)
    moved = Translation(jitter_stddev=0.0)([flat, flatten_offsets(-offsets)])
    return _flat_to_channel(moved)


# ---------------------------------------------------------------------------
# Reassembly: patches -> object frame
# ---------------------------------------------------------------------------


def _recentred(offsets_xy: Any, c: int) -> tf.Tensor:
    """PtychoPINN's recentring: flat float32 offsets minus their ``tf.reduce_mean`` (P, 2)."""
    flat = tf.cast(flatten_offsets(_channel_offsets(offsets_xy, c)), tf.float32)
    return flat - tf.reduce_mean(flat, axis=0, keepdims=True)


@tf.autograph.experimental.do_not_convert
def _placed(
    imgs: Any,
    offsets_xy: Any,
    *,
    padded_size: Any,
    N: Any,
    slots: str,
    group: int,
    canvas: Optional[int] = None,
    batch: Optional[int] = None,
) -> tf.Tensor:
    """Patches padded by ``(padded_size - N) // 2``, translated by minus their recentred offsets, added up.

    ``imgs`` (B, n, n, c) channel format.  ``slots``: 'group' sums the patches
    of each group of ``group`` patches into its own canvas (B', S, S, 1);
    'patch' keeps every patch in its own channel (B', S, S, group); 'one' sums
    all into one canvas (1, C, C, 1), the S x S frame centred on it (crop or
    pad), in chunks of ``batch`` patches, each chunk summed and then added.
    Each patch is non-zero on an (n+1) x (n+1) window only: those windows are
    computed (bit for bit the full-frame pixels) and scatter-added in patch
    order.  Real input gives a real result.
    """
    imgs = tensor_4d(imgs, "imgs", "(B, N, N, c)")
    n, width, c = imgs.shape[1], imgs.shape[2], imgs.shape[3]
    if n is None or width != n or c is None:
        raise InputError(f"imgs must hold square patches with static sizes (B, N, N, c), got shape {tuple(imgs.shape)}")
    size, pad = padding_of(padded_size, N)
    offsets = _recentred(offsets_xy, c)
    b_img, b_off = imgs.shape[0], offsets.shape[0] // c if offsets.shape[0] is not None else None
    if b_img is not None and offsets.shape[0] is not None and b_img * c != offsets.shape[0]:
        raise InputError(
            f"offsets_xy must hold one (x, y) per patch: {b_img * c} for imgs of shape {tuple(imgs.shape)}, "
            f"got {offsets.shape[0]}"
        )
    del b_off
    frame = n + 2 * pad
    side = frame if canvas is None else int(canvas)
    shift = (side - frame) // 2 if side >= frame else -((frame - side) // 2)
    cdtype, rdtype = _dtypes(imgs.dtype)
    sources, real = _as_complex_planes(_channel_to_flat(imgs))
    t = tf.cast(-offsets, rdtype)  # the translation of each padded patch
    origin = tf.cast(tf.floor(tf.stack([t[:, 1], t[:, 0]], axis=1)), tf.int32) + pad  # its window's corner
    windows = _windows(sources, t, output_size=(n + 1, n + 1), source_origin=(pad, pad), output_origin=origin)

    count = _count(t)
    span = tf.range(n + 1, dtype=tf.int32)
    rows = origin[:, 0:1, None] + span[None, :, None]  # (P, n+1, 1) frame rows
    cols = origin[:, 1:2, None] + span[None, None, :]  # (P, 1, n+1)
    inside = (rows >= 0) & (rows < frame) & (cols >= 0) & (cols < frame)
    rows, cols = rows + shift, cols + shift
    inside &= (rows >= 0) & (rows < side) & (cols >= 0) & (cols < side)
    patch = tf.range(count, dtype=tf.int32)[:, None, None]
    if slots == "group":
        n_slots, depth, slot, channel = -(-count // group), 1, patch // group, 0
    elif slots == "patch":
        n_slots, depth, slot, channel = -(-count // group), group, patch // group, patch % group
    elif slots == "auto":
        # PtychoPINN's regime, chosen at run time without tf.cond (whose gradient breaks when
        # its branches' shapes differ): per group below `batch` patches, else one canvas
        per_group = count < batch
        n_slots = tf.where(per_group, -(-count // group), 1)
        depth, slot, channel = 1, tf.where(per_group, patch // group, tf.zeros_like(patch)), 0
    else:
        n_slots, depth, slot, channel = 1, 1, 0, 0
    total = n_slots * side * side * depth
    flat = ((slot * side + rows) * side + cols) * depth + channel
    index = tf.reshape(tf.where(inside, flat, total), (-1, (n + 1) * (n + 1)))
    planes = [tf.reshape(tf.math.real(windows), (-1, (n + 1) * (n + 1)))]
    if not real:
        planes.append(tf.reshape(tf.math.imag(windows), (-1, (n + 1) * (n + 1))))
    ordered = "GPU" in (device_of(imgs) or "").upper()
    scatter = compile_job("tensorflow", scatter_job, ordered=ordered)

    def summed(lo: Any, hi: Any) -> Tuple[tf.Tensor, ...]:
        zero = tf.zeros(tf.reshape(total + 1, (1,)), dtype=rdtype)
        return scatter(tuple(zero for _ in planes), index[lo:hi], *(p[lo:hi] for p in planes))

    if slots == "one" and batch is not None and isinstance(count, int) and count > batch:
        # PtychoPINN: each chunk of `batch` patches is summed, then added to the canvas
        parts = None
        for lo in range(0, count, batch):
            part = summed(lo, min(lo + batch, count))
            parts = part if parts is None else tuple(a + b for a, b in zip(parts, part))
    else:
        parts = summed(0, count)
    shape = tf.stack([n_slots, side, side, depth]) if not isinstance(n_slots, int) else (n_slots, side, side, depth)
    planes_out = [tf.reshape(p[:total], shape) for p in parts]
    if real:
        out = planes_out[0]
        return tf.cast(out, imgs.dtype) if imgs.dtype.is_floating and out.dtype != imgs.dtype else out
    return tf.complex(planes_out[0], planes_out[1])


def _reassemble_patches_position_real(
    imgs: Any, offsets_xy: Any, agg: bool = True, padded_size: Optional[int] = None, **kwargs: Any
) -> tf.Tensor:
    """Channel-format patches (B, N, N, c) placed at their recentred offsets, windowed.

    As PtychoPINN: offsets (B, 1, 2, c) flattened and recentred by their
    float32 mean, each patch zero-padded to ``padded_size`` (default
    ``params.get_padded_size()``; padding ``(padded_size - params N) // 2``)
    and translated by minus its offset.  ``agg=True``: each group's patches
    summed, (B, S, S, 1); ``agg=False``: (B, S, S, c), one patch per channel.
    S = N + 2 * padding.  Only the (N+1)^2 window of each patch is computed.
    """
    agg = _validate.flag(agg, "agg")
    imgs = tensor_4d(imgs, "imgs", "(B, N, N, c)")
    c = imgs.shape[3]
    if c is None:
        raise InputError(f"imgs must have a static number of channels (B, N, N, c), got shape {tuple(imgs.shape)}")
    return _placed(imgs, offsets_xy, padded_size=padded_size, N=None, slots="group" if agg else "patch", group=c)


def _reassemble_position_batched(
    imgs: Any,
    offsets_xy: Any,
    padded_size: int,
    batch_size: int = 64,
    agg: bool = True,
    average: bool = False,
    N: Optional[int] = None,
    gridsize: Optional[int] = None,
    **kwargs: Any,
) -> tf.Tensor:
    """PtychoPINN's memory-bounded reassembly, windowed (its two regimes kept).

    Fewer patches than ``batch_size`` (default 64; <= 0 means 64): each
    group of gridsize**2 patches summed into its own canvas, (B, S, S, 1).
    Otherwise: every patch summed into one canvas (1, padded_size,
    padded_size, 1), chunk by chunk of ``batch_size`` patches.  The padding
    is ``(padded_size - N) // 2`` (N default ``params``).  ``agg`` and
    ``average`` are accepted for PtychoPINN's callers and unused, as there.
    """
    batch = _validate.positive_int(64 if isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size <= 0 else batch_size, "batch_size")
    _validate.flag(agg, "agg")
    _validate.flag(average, "average")
    g = setting(gridsize, "gridsize")
    imgs = tensor_4d(imgs, "imgs", "(B, N, N, c)")
    count = None
    if imgs.shape[0] is not None and imgs.shape[3] is not None:
        count = imgs.shape[0] * imgs.shape[3]
        if count % (g * g):
            raise InputError(f"imgs must hold whole groups of gridsize**2 = {g * g} patches, got shape {tuple(imgs.shape)}")
    common = dict(padded_size=padded_size, N=N)

    def per_group() -> tf.Tensor:
        return _placed(imgs, offsets_xy, slots="group", group=g * g, **common)

    def one_canvas() -> tf.Tensor:
        size, _ = padding_of(padded_size, N)
        return _placed(imgs, offsets_xy, slots="one", group=1, canvas=size, batch=batch, **common)

    if count is not None:
        return per_group() if count < batch else one_canvas()
    size, pad = padding_of(padded_size, N)
    if imgs.shape[1] is not None and imgs.shape[1] + 2 * pad == size:
        # one program for both regimes (the frame is the canvas): differentiable in a traced step
        return _placed(imgs, offsets_xy, slots="auto", group=g * g, batch=batch, **common)
    patches = tf.shape(imgs)[0] * tf.shape(imgs)[3]
    return tf.cond(patches < batch, per_group, one_canvas)


def _windowed(fn: Callable) -> Callable:
    fn._ptycho_windowed = True  # reassemble_patches may give it real and imaginary parts at once
    return fn


def mk_reassemble_position_real(input_positions: Any, **outer_kwargs: Any) -> Callable[..., tf.Tensor]:
    """``fn(imgs, **ignored)`` = :func:`_reassemble_patches_position_real` at ``input_positions``."""

    def reassemble_patches_position_real(imgs: Any, **kwargs: Any) -> tf.Tensor:
        return _reassemble_patches_position_real(imgs, input_positions, **outer_kwargs)

    return _windowed(reassemble_patches_position_real)


def mk_reassemble_position_batched_real(input_positions: Any, batch_size: int = 64, **outer_kwargs: Any) -> Callable[..., tf.Tensor]:
    """``fn(imgs, **kwargs)`` = :func:`_reassemble_position_batched` at ``input_positions``.

    ``kwargs`` override ``outer_kwargs``; ``padded_size`` defaults to
    ``params.get_padded_size()``.  Complex ``imgs`` give complex64 (the real
    and imaginary parts placed with the same windows, as PtychoPINN's two
    separate calls).
    """

    def reassemble_patches_position_batched_real(imgs: Any, **kwargs: Any) -> tf.Tensor:
        merged = {**outer_kwargs, **kwargs}
        padded_size = merged.pop("padded_size", None)
        if padded_size is None:
            padded_size = params.get_padded_size()
        out = _reassemble_position_batched(imgs, input_positions, padded_size, batch_size, **merged)
        return tf.cast(out, tf.complex64) if out.dtype.is_complex else out

    return _windowed(reassemble_patches_position_batched_real)


def mk_norm(channels: Any, fn_reassemble_real: Callable, N: Optional[int] = None, gridsize: Optional[int] = None) -> tf.Tensor:
    """The overlap normaliser: ``fn_reassemble_real(centre mask, average=False) + 0.001``."""
    N = setting(N, "N")
    g = setting(gridsize, "gridsize")
    ones = mk_centermask(channels, N, g * g)
    return fn_reassemble_real(ones, average=False) + 0.001


def reassemble_patches(
    channels: Any,
    fn_reassemble_real: Callable = reassemble_patches_real,
    average: bool = False,
    batch_size: Optional[int] = None,
    N: Optional[int] = None,
    gridsize: Optional[int] = None,
    **kwargs: Any,
) -> tf.Tensor:
    """Patches -> object: ``fn(part) / mk_norm(part, fn)`` for the real and imaginary parts, complex64.

    With a function from :func:`mk_reassemble_position_real` or
    :func:`mk_reassemble_position_batched_real` both parts are placed in one
    windowed pass and the normaliser is computed once (the same bits as
    PtychoPINN's four calls).
    """
    if not callable(fn_reassemble_real):
        raise InputTypeError(f"fn_reassemble_real must be callable, got {_validate.describe(fn_reassemble_real)}")
    channels = tensor_4d(channels, "channels", "(B, N, N, c)")
    real = tf.math.real(channels)
    if getattr(fn_reassemble_real, "_ptycho_windowed", False):
        _, rdtype = _dtypes(real.dtype)
        cdtype = tf.complex128 if rdtype == tf.float64 else tf.complex64
        both = fn_reassemble_real(tf.cast(channels, cdtype), average=average, **kwargs)
        norm = mk_norm(real, fn_reassemble_real, N=N, gridsize=gridsize)
        return tf.complex(tf.math.real(both) / norm, tf.math.imag(both) / norm)
    imag = tf.math.imag(channels)
    assembled_real = fn_reassemble_real(real, average=average, **kwargs) / mk_norm(real, fn_reassemble_real, N=N, gridsize=gridsize)
    assembled_imag = fn_reassemble_real(imag, average=average, **kwargs) / mk_norm(imag, fn_reassemble_real, N=N, gridsize=gridsize)
    return tf.complex(assembled_real, assembled_imag)


def reassemble_whole_object(
    patches: Any, offsets: Any, size: int = 226, norm: bool = False, batch_size: Optional[int] = None
) -> tf.Tensor:
    """Deprecated (use ``reassemble_position``): :func:`reassemble_patches` summed over the batch, (S, S, 1)."""
    warnings.warn(
        "reassemble_whole_object() is deprecated; use reassemble_position() for position-aware reassembly",
        DeprecationWarning,
        stacklevel=2,
    )
    norm = _validate.flag(norm, "norm")
    if batch_size is not None:
        fn = mk_reassemble_position_batched_real(offsets, batch_size=batch_size, padded_size=size)
    else:
        fn = mk_reassemble_position_real(offsets, padded_size=size)
    img = tf.reduce_sum(reassemble_patches(patches, fn_reassemble_real=fn), axis=0)
    if norm:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return img / reassemble_whole_object(tf.ones_like(patches), offsets, size=size, norm=False, batch_size=batch_size)
    return img


# ---------------------------------------------------------------------------
# Nested patches (regular grid of regions, then patches inside each)
# ---------------------------------------------------------------------------


def extract_nested_patches(
    img: Any, fmt: str = "flat", extract_inner_fn: Callable = extract_inner_grid, **kwargs: Any
) -> tf.Tensor:
    """Patches N x N inside the bigN x bigN regions of ``img`` (B, H, W, 1) (see :func:`extract_outer`).

    ``fmt``: 'flat' (-1, N, N, 1), 'grid' (-1, g, g, N, N, 1) or 'channel'
    (-1, N, N, g*g).  ``kwargs`` go to :func:`extract_outer`.
    """
    if fmt not in ("flat", "grid", "channel"):
        raise InputError(f"fmt must be one of ('flat', 'grid', 'channel'), got {fmt!r}")
    N = setting(None, "N")
    g = setting(None, "gridsize")
    outer = extract_outer(img, fmt="grid", **kwargs)
    inner = extract_inner_fn(outer)
    grid = tf.reshape(inner, (-1, g, g, N, N, 1))
    return _format(grid, fmt)


def mk_extract_inner_position(offsets_xy: Any) -> Callable[[Any], Tuple[tf.Tensor]]:
    """``inner(grid)`` -> ``(extract_patches_position(grid, offsets_xy),)`` (a 1-tuple, as PtychoPINN)."""

    def inner(grid: Any) -> Tuple[tf.Tensor]:
        return (extract_patches_position(grid, offsets_xy),)

    return inner


def extract_nested_patches_position(img: Any, offsets_xy: Any, fmt: str = "flat", **kwargs: Any) -> tf.Tensor:
    """:func:`extract_nested_patches` with the inner patches cut at ``offsets_xy`` (windowed)."""
    return extract_nested_patches(img, fmt=fmt, extract_inner_fn=mk_extract_inner_position(offsets_xy), **kwargs)
