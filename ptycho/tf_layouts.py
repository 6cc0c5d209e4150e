"""PtychoPINN's tensor layouts and small dense helpers, on TensorFlow.

Everything here is a reshape, transpose, pad, crop or an integer-stride
patch cut: no interpolation (that lives in :mod:`ptycho.tf_model_ops` on the
engine).  PtychoPINN code reaches these names through :mod:`ptycho.tf_helper`.

Layouts (PtychoPINN's conventions, c = gridsize**2 patches per group):

- channel: (B, N, N, c), patch k of group b in channel k;
- flat: (B*c, N, N, 1), patch k of group b in row ``b*c + k``;
- grid: (B, g, g, N, N, 1), patch k at grid cell (k // g, k % g).

Offsets in channel format are (B, 1, 2, c) with axis 2 holding (x, y).
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Tuple

import tensorflow as tf

from ptycho import _validate, params
from ptycho.backends._tensorflow import to_tensor
from ptycho.errors import InputError, InputTypeError

__all__ = [
    "pad",
    "_channel_to_flat",
    "_flat_to_channel",
    "_flat_to_channel_2",
    "_channel_to_patches",
    "_togrid",
    "_fromgrid",
    "_grid_to_channel",
    "togrid",
    "grid_to_channel",
    "channel_to_flat",
    "flatten_offsets",
    "pad_patches",
    "pad_reconstruction",
    "trim_reconstruction",
    "extract_patches",
    "extract_outer",
    "extract_inner_grid",
    "extract_patches_inverse",
    "reassemble_patches_real",
    "CenterMaskLayer",
    "mk_centermask",
    "combine_complex",
    "is_complex_tensor",
    "complexify_helper",
    "separate_real_imag",
    "combine_real_imag",
    "separate_amp_phase",
    "complexify_function",
    "complexify_amp_phase",
    "complexify_sum_amp_phase",
    "complexify_sum_real_imag",
]


# ---------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------


def tensor_4d(value: Any, name: str, layout: str) -> tf.Tensor:
    """``value`` as a numeric 4-D tf.Tensor, or InputError/InputTypeError naming ``name``."""
    t = to_tensor(value, name, f"a 4-D tensor {layout}")
    if t.shape.rank != 4:
        raise InputError(f"{name} must be 4-D {layout}, got shape {tuple(t.shape)}")
    if not (t.dtype.is_floating or t.dtype.is_complex or t.dtype.is_integer):
        raise InputTypeError(f"{name} must have a real or complex numeric dtype, got {t.dtype.name}")
    return t


def setting(value: Any, key: str, name: Optional[str] = None) -> int:
    """A positive integer argument, else ``ptycho.params[key]``."""
    value = params.get(key) if value is None else value
    return _validate.positive_int(value, name or key)


def _static(dim: Any) -> Optional[int]:
    return None if dim is None else int(dim)


# ---------------------------------------------------------------------------
# Flat / channel / grid layouts
# ---------------------------------------------------------------------------


def pad(imgs: Any, size: int) -> tf.Tensor:
    """Zero-pad (B, H, W, C) images by ``size`` pixels on every side of H and W."""
    size = _validate.non_negative_int(size, "size")
    imgs = to_tensor(imgs, "imgs", "a 4-D tensor (B, H, W, C)")
    if imgs.shape.rank != 4:
        raise InputError(f"imgs must be 4-D (B, H, W, C), got shape {tuple(imgs.shape)}")
    return tf.pad(imgs, [[0, 0], [size, size], [size, size], [0, 0]])


def _channel_to_flat(img: Any) -> tf.Tensor:
    """(B, H, W, c) -> (B*c, H, W, 1); channel k of group b becomes row ``b*c + k``."""
    img = to_tensor(img, "img", "a 4-D tensor (B, H, W, c)")
    if img.shape.rank != 4:
        raise InputError(f"img must be 4-D (B, H, W, c), got shape {tuple(img.shape)}")
    _, h, w, c = img.shape
    return tf.reshape(tf.transpose(img, [0, 3, 1, 2]), (-1, h, w, 1))


def _flat_to_channel(img: Any, N: Optional[int] = None, gridsize: Optional[int] = None) -> tf.Tensor:
    """(B*c, H, W, 1) -> (B, H, W, c), c = gridsize**2 (default ``params['gridsize']``)."""
    img = to_tensor(img, "img", "a 4-D tensor (B*c, H, W, 1)")
    if img.shape.rank != 4 or img.shape[-1] != 1:
        raise InputError(f"img must be (B*c, H, W, 1), got shape {tuple(img.shape)}")
    g = params.get("gridsize") if gridsize is None else gridsize
    c = _validate.positive_int(g, "gridsize") ** 2
    _, h, w, _ = img.shape
    if img.shape[0] is not None and img.shape[0] % c:
        raise InputError(f"img batch ({img.shape[0]}) is not a multiple of gridsize**2 = {c}")
    return tf.transpose(tf.reshape(img, (-1, c, h, w)), [0, 2, 3, 1])


def _flat_to_channel_2(img: Any) -> tf.Tensor:
    """:func:`_flat_to_channel` for non-square images (H, W from the tensor, gridsize from params)."""
    return _flat_to_channel(img)


def _channel_to_patches(channel: Any) -> tf.Tensor:
    """(B, N, N, c) -> (B, g, g, N*N): each patch flattened, on its grid cell (N from the tensor)."""
    channel = tensor_4d(channel, "channel", "(B, N, N, gridsize**2)")
    g = setting(None, "gridsize")
    _, h, w, c = channel.shape
    if c is not None and c != g * g:
        raise InputError(f"channel must have gridsize**2 = {g * g} channels, got shape {tuple(channel.shape)}")
    return tf.reshape(tf.transpose(channel, [0, 3, 1, 2]), (-1, g, g, h * w))


def _togrid(img: Any, gridsize: Optional[int] = None, N: Optional[int] = None) -> tf.Tensor:
    """Flat (B*g*g, N, N, 1) -> grid (B, g, g, N, N, 1); g and N default to ``params``."""
    g = setting(gridsize, "gridsize")
    n = setting(N, "N")
    img = to_tensor(img, "img", "a tensor (B*gridsize**2, N, N, 1)")
    size = img.shape.num_elements()
    if size is not None and size % (g * g * n * n):
        raise InputError(
            f"img must hold whole groups of gridsize**2 = {g * g} patches of N x N = {n} x {n}, "
            f"got shape {tuple(img.shape)}"
        )
    return tf.reshape(img, (-1, g, g, n, n, 1))


def _fromgrid(img: Any) -> tf.Tensor:
    """Grid (B, g, g, N, N, 1) -> flat (B*g*g, N, N, 1), N from ``params``."""
    n = setting(None, "N")
    img = to_tensor(img, "img", "a grid tensor (B, gridsize, gridsize, N, N, 1)")
    size = img.shape.num_elements()
    if size is not None and size % (n * n):
        raise InputError(f"img must hold N x N = {n} x {n} patches, got shape {tuple(img.shape)}")
    return tf.reshape(img, (-1, n, n, 1))


def _grid_to_channel(grid: Any) -> tf.Tensor:
    """Grid (B, g, g, N, N, 1) -> channel (B, N, N, g*g), g from ``params``."""
    g = setting(None, "gridsize")
    grid = to_tensor(grid, "grid", "a grid tensor (B, gridsize, gridsize, N, N, 1)")
    if grid.shape.rank != 6 or grid.shape[1] != g or grid.shape[2] != g:
        raise InputError(f"grid must be (B, {g}, {g}, N, N, 1) (gridsize = {g}), got shape {tuple(grid.shape)}")
    img = tf.transpose(grid, [0, 3, 4, 1, 2, 5])
    return tf.reshape(img, (-1, img.shape[1], img.shape[2], g * g))


def togrid(*imgs: Any) -> list:
    """:func:`_togrid` of each argument."""
    return [_togrid(img) for img in imgs]


def grid_to_channel(*grids: Any) -> list:
    """:func:`_grid_to_channel` of each argument."""
    return [_grid_to_channel(g) for g in grids]


def channel_to_flat(*imgs: Any) -> list:
    """:func:`_channel_to_flat` of each argument."""
    return [_channel_to_flat(img) for img in imgs]


def real_offsets(offsets_xy: Any, name: str = "offsets_xy") -> tf.Tensor:
    """Channel-format offsets (B, 1, 2, c) as a real tensor (PtychoPINN drops an imaginary part)."""
    t = to_tensor(offsets_xy, name, "a real tensor (B, 1, 2, c) holding (x, y)")
    if not (t.dtype.is_floating or t.dtype.is_integer or t.dtype.is_complex):
        raise InputTypeError(f"{name} must be real (x, y) pixels, got dtype {t.dtype.name}")
    if t.dtype.is_complex:
        t = tf.math.real(t)
    if t.shape.rank != 4 or t.shape[1] != 1 or t.shape[2] != 2:
        raise InputError(f"{name} must have shape (B, 1, 2, c) with axis 2 holding (x, y), got shape {tuple(t.shape)}")
    if tf.executing_eagerly():
        _validate.finite(t.numpy(), name, dtype=None)
    return t


def flatten_offsets(channels: Any) -> tf.Tensor:
    """Channel-format offsets (B, 1, 2, c) -> (B*c, 2), row ``b*c + k`` = (x, y) of patch k of group b."""
    t = real_offsets(channels, "channels")
    return _channel_to_flat(t)[:, 0, :, 0]


# ---------------------------------------------------------------------------
# Padding and cropping
# ---------------------------------------------------------------------------


def padding_of(padded_size: Any, N: Any) -> Tuple[int, int]:
    """``(padded_size, (padded_size - N) // 2)``, defaults from ``params``, checked."""
    size = _validate.positive_int(params.get_padded_size() if padded_size is None else padded_size, "padded_size")
    n = setting(N, "N")
    if size < n:
        raise InputError(f"padded_size must be at least N = {n}, got padded_size={size}")
    return size, (size - n) // 2


def pad_patches(imgs: Any, padded_size: Optional[int] = None, N: Optional[int] = None) -> tf.Tensor:
    """Zero-pad (B, H, W, C) by ``(padded_size - N) // 2`` on every side (defaults: ``params``)."""
    _, amount = padding_of(padded_size, N)
    return pad(imgs, amount)


def pad_reconstruction(channels: Any) -> tf.Tensor:
    """Channel-format (B, N, N, c) -> flat, each patch zero-padded to ``params.get_padded_size()``."""
    return pad_patches(_channel_to_flat(channels), params.get_padded_size())


def trim_reconstruction(x: Any, N: Optional[int] = None) -> tf.Tensor:
    """Crop (B, M, M, C) symmetrically by ``(M - N) // 2`` on every side (N default ``params``).

    As PtychoPINN, the kept side is ``M - 2 * ((M - N) // 2)`` (N + 1 when
    M - N is odd).  Where M is unknown (a traced graph) it is taken to be
    ``params.get_padded_size()``.  M == N keeps everything (PtychoPINN's
    slice ``[0:-0]`` would keep nothing).
    """
    n = setting(N, "N")
    x = tensor_4d(x, "x", "(B, M, M, C)")
    m, w = _static(x.shape[1]), _static(x.shape[2])
    if m is not None and w is not None and m != w:
        raise InputError(f"x must be square (B, M, M, C), got shape {tuple(x.shape)}")
    if m is None:
        m = params.get_padded_size()
    if m < n:
        raise InputError(f"x must be at least N = {n} pixels wide, got shape {tuple(x.shape)}")
    clip = (m - n) // 2
    return x[:, clip : m - clip, clip : m - clip, :]


# ---------------------------------------------------------------------------
# Integer-stride patches on a regular grid (tf.image.extract_patches and its adjoint)
# ---------------------------------------------------------------------------


def extract_patches(x: Any, N: int, offset: int) -> tf.Tensor:
    """All N x N patches of (B, H, W, C) at stride ``offset``: (B, rows, cols, N*N*C) (VALID)."""
    x = tensor_4d(x, "x", "(B, H, W, C)")
    N = _validate.positive_int(N, "N")
    offset = _validate.positive_int(offset, "offset")
    if x.shape[1] is not None and (x.shape[1] < N or x.shape[2] < N):
        raise InputError(f"x must be at least N = {N} pixels on each side, got shape {tuple(x.shape)}")
    return tf.image.extract_patches(x, [1, N, N, 1], [1, offset, offset, 1], [1, 1, 1, 1], padding="VALID")


def _format(grid: tf.Tensor, fmt: str) -> tf.Tensor:
    if fmt == "flat":
        return _fromgrid(grid)
    if fmt == "grid":
        return grid
    if fmt == "channel":
        return _grid_to_channel(grid)
    raise InputError(f"fmt must be one of ('flat', 'grid', 'channel'), got {fmt!r}")


def extract_outer(img: Any, fmt: str = "grid", bigN: Optional[int] = None, outer_offset: Optional[int] = None) -> tf.Tensor:
    """The bigN x bigN solution regions of (B, H, W, 1) at stride ``outer_offset // 2``: (-1, bigN, bigN, 1).

    ``bigN`` defaults to ``params.get('bigN')``; ``outer_offset`` is required.
    """
    if fmt not in ("flat", "grid", "channel"):
        raise InputError(f"fmt must be one of ('flat', 'grid', 'channel'), got {fmt!r}")
    big = setting(bigN, "bigN", "bigN")
    if outer_offset is None:
        raise InputTypeError("outer_offset must be a positive integer (twice the stride of the regions), got None")
    stride = _validate.positive_int(outer_offset, "outer_offset") // 2
    if stride < 1:
        raise InputError(f"outer_offset must be at least 2 (the stride is outer_offset // 2), got outer_offset={outer_offset}")
    img = tensor_4d(img, "img", "(B, H, W, 1)")
    if img.shape[-1] != 1:
        raise InputError(f"img must have one channel (B, H, W, 1), got shape {tuple(img.shape)}")
    grid = tf.reshape(extract_patches(img, big, stride), (-1, big, big, 1))
    return _format(grid, fmt)


def extract_inner_grid(grid: Any) -> tf.Tensor:
    """The g x g patches N x N at stride ``offset`` of each region (params N, offset): (B, g', g', N*N)."""
    return extract_patches(grid, setting(None, "N"), setting(None, "offset"))


def extract_patches_inverse(y: Any, N: int, average: bool, gridsize: Optional[int] = None, offset: Optional[int] = None) -> tf.Tensor:
    """The adjoint of :func:`extract_patches` on a (B, T, T, 1) region, T = N + (g - 1) * offset.

    ``y`` (B, g, g, N*N) patches are added back at their grid places
    (overlap-add); ``average=True`` divides by the number of patches covering
    each pixel.  Returns (B, T, T, 1) in ``y``'s dtype.
    """
    g = setting(gridsize, "gridsize")
    off = setting(offset, "offset")
    N = _validate.positive_int(N, "N")
    average = _validate.flag(average, "average")
    y = to_tensor(y, "y", "a tensor (B, gridsize, gridsize, N*N)")
    if y.shape.rank != 4 or y.shape[1:] != (g, g, N * N):
        raise InputError(f"y must have shape (B, {g}, {g}, {N * N}) (gridsize = {g}, N = {N}), got shape {tuple(y.shape)}")
    target = N + (g - 1) * off
    canvas = tf.zeros((tf.shape(y)[0], target, target, 1), dtype=y.dtype)
    with tf.GradientTape(persistent=average) as tape:
        tape.watch(canvas)
        patches = extract_patches(canvas, N, off)
    summed = tape.gradient(patches, canvas, output_gradients=y)
    if not average:
        return summed
    count = tape.gradient(patches, canvas)
    return summed / count


def reassemble_patches_real(channels: Any, average: bool = True, **kwargs: Any) -> tf.Tensor:
    """Channel-format patches (B, N, N, g*g) on the regular grid -> their region (B, T, T, 1)."""
    return extract_patches_inverse(_channel_to_patches(channels), setting(None, "N"), average, **kwargs)


# ---------------------------------------------------------------------------
# Centre mask
# ---------------------------------------------------------------------------


@tf.keras.utils.register_keras_serializable(package="ptycho")
class CenterMaskLayer(tf.keras.layers.Layer):
    """Ones on the central N//2 x N//2 of an N x N patch, zero around (``kind='border'``: the complement).

    Output (B, N//2 + 2*(N//4), same, c) in the input's dtype, B taken from the input.
    """

    def __init__(self, N: int, c: int, kind: str = "center", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.N = _validate.positive_int(N, "N")
        self.c = _validate.positive_int(c, "c")
        if kind not in ("center", "border"):
            raise InputError(f"kind must be 'center' or 'border', got {kind!r}")
        self.kind = kind

    def call(self, inputs: Any) -> tf.Tensor:
        inputs = tf.convert_to_tensor(inputs)
        q = self.N // 4
        ones = tf.ones((tf.shape(inputs)[0], self.N // 2, self.N // 2, self.c), dtype=inputs.dtype)
        mask = tf.pad(ones, [[0, 0], [q, q], [q, q], [0, 0]])
        return mask if self.kind == "center" else 1 - mask

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"N": self.N, "c": self.c, "kind": self.kind})
        return config


def mk_centermask(inputs: Any, N: int, c: int, kind: str = "center") -> tf.Tensor:
    """:class:`CenterMaskLayer` applied to ``inputs`` (only its batch size and dtype are used)."""
    return CenterMaskLayer(N, c, kind)(inputs)


# ---------------------------------------------------------------------------
# Complex helpers
# ---------------------------------------------------------------------------


def combine_complex(amp: Any, phi: Any) -> tf.Tensor:
    """``amp * exp(i * phi)`` in complex64."""
    amp = to_tensor(amp, "amp", "a real tensor")
    phi = to_tensor(phi, "phi", "a real tensor")
    return tf.cast(amp, tf.complex64) * tf.exp(1j * tf.cast(phi, tf.complex64))


def is_complex_tensor(tensor: Any) -> bool:
    """Whether ``tensor`` has dtype complex64 or complex128."""
    return getattr(tensor, "dtype", None) in (tf.complex64, tf.complex128)


def separate_real_imag(channels: Any) -> Tuple[tf.Tensor, tf.Tensor]:
    return tf.math.real(channels), tf.math.imag(channels)


def combine_real_imag(real: Any, imag: Any) -> tf.Tensor:
    return tf.cast(tf.complex(real, imag), tf.complex64)


def separate_amp_phase(channels: Any) -> Tuple[tf.Tensor, tf.Tensor]:
    return tf.math.abs(channels), tf.math.angle(channels)


def complexify_helper(separate: Callable, combine: Callable) -> Callable:
    """A decorator factory: a complex first argument is split by ``separate``, the function applied
    to each part (the other arguments unchanged), and the two results joined by ``combine``;
    a real first argument goes straight through."""

    def complexify(fn: Callable) -> Callable:
        def split_apply_join(*args: Any, **kwargs: Any) -> Any:
            if args and is_complex_tensor(args[0]):
                first, second = separate(args[0])
                return combine(fn(first, *args[1:], **kwargs), fn(second, *args[1:], **kwargs))
            return fn(*args, **kwargs)

        split_apply_join.__name__ = getattr(fn, "__name__", "complexified")
        split_apply_join.__doc__ = getattr(fn, "__doc__", None)
        split_apply_join.__wrapped__ = fn
        return split_apply_join

    return complexify


complexify_function = complexify_helper(separate_real_imag, combine_real_imag)
complexify_amp_phase = complexify_helper(separate_amp_phase, combine_complex)
complexify_sum_amp_phase = complexify_helper(separate_amp_phase, lambda a, b: a + b)
complexify_sum_real_imag = complexify_helper(separate_real_imag, lambda a, b: a + b)
