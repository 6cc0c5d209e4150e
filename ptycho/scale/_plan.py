"""What the scale runners share: argument checks, the chunk plan, one chunk's work.

Pure NumPy (no Zarr, Dask or JAX here), so every runner -- the Zarr writer,
the Dask graph, the JAX sharding -- cuts the positions the same way and calls
the engine the same way.
"""

from __future__ import annotations

import hashlib
import importlib
import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from ptycho.errors import InputError, InputTypeError
from ptycho import _validate

#: Hint printed when an optional dependency of this package is missing.
SCALE_EXTRA = "pip install 'ptycho[scale]'"


def require(module: str, hint: str = SCALE_EXTRA) -> Any:
    """Import ``module`` or raise ImportError naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"this function needs the {module.split('.')[0]!r} package, which is not installed; "
            f"install it with: {hint}"
        ) from exc


def complex_dtype_for(image: np.ndarray) -> np.dtype:
    """The engine's output dtype for ``image`` (:func:`ptycho._validate.working_dtypes`)."""
    return _validate.working_dtypes(image.dtype)[0]


@dataclass(frozen=True)
class Plan:
    """A validated job: the object, the positions and how they are cut into chunks.

    Attributes
    ----------
    image : np.ndarray (H, W)
        The object, as given (not converted).
    positions : np.ndarray (P, 2)
        (x, y) object pixels.
    N, channels : int
        Patch side and channel count c (P is a multiple of c).
    chunk_patches : int
        Patches per chunk: a positive multiple of c (whole groups), at most P
        (when P > 0).
    channel_axis : bool
        Output (P // c, N, N, c) when True, (P, N, N) when False (c == 1 only).
    interpolation : str
    padding : int
    dtype : np.dtype
        complex64 or complex128.
    """

    image: np.ndarray
    positions: np.ndarray
    N: int
    channels: int
    chunk_patches: int
    channel_axis: bool
    interpolation: str
    padding: int
    dtype: np.dtype

    @property
    def n_positions(self) -> int:
        return int(self.positions.shape[0])

    @property
    def n_groups(self) -> int:
        return self.n_positions // self.channels

    @property
    def chunk_groups(self) -> int:
        """Rows of the output per chunk (groups, or patches when c == 1)."""
        return self.chunk_patches // self.channels

    @property
    def n_chunks(self) -> int:
        return math.ceil(self.n_positions / self.chunk_patches) if self.n_positions else 0

    @property
    def shape(self) -> tuple:
        if self.channel_axis:
            return (self.n_groups, self.N, self.N, self.channels)
        return (self.n_positions, self.N, self.N)

    @property
    def chunks(self) -> tuple:
        """Chunk shape of the output array: whole patches, cut along the first axis."""
        return (max(1, self.chunk_groups),) + self.shape[1:]

    def bounds(self, chunk: int) -> tuple[int, int]:
        """Positions ``[start, stop)`` of chunk number ``chunk``."""
        start = chunk * self.chunk_patches
        return start, min(start + self.chunk_patches, self.n_positions)

    def rows(self, chunk: int) -> slice:
        """The output rows (first axis) that chunk ``chunk`` fills."""
        start, stop = self.bounds(chunk)
        return slice(start // self.channels, stop // self.channels)


def make_plan(
    image: Any,
    positions: Any,
    N: Any,
    *,
    channels: Any = 1,
    chunk_size: Any = 4096,
    channel_axis: Optional[bool] = None,
    interpolation: str = "bilinear",
    padding: Optional[int] = None,
) -> Plan:
    """Check the arguments of a scale runner and cut the work into chunks.

    ``chunk_size`` is rounded down to whole groups (a multiple of
    ``channels``, at least one group), so no group straddles two chunks, and
    capped at P.
    """
    N = _validate.patch_size(N)
    channels = _validate.positive_int(channels, "channels")
    chunk_size = _validate.positive_int(chunk_size, "chunk_size")
    interpolation = _validate.interpolation(interpolation)
    padding = N // 2 if padding is None else _validate.non_negative_int(padding, "padding")
    image_np = _validate.image_2d(image, "image")
    positions_np = _validate.positions_2d(positions, "positions", channels=channels)
    if channel_axis is None:
        channel_axis = channels > 1
    elif not isinstance(channel_axis, (bool, np.bool_)):
        raise InputTypeError(f"channel_axis must be True, False or None, got {channel_axis!r}")
    if not channel_axis and channels > 1:
        raise InputError(
            f"channel_axis=False needs channels == 1 (output (P, N, N)); got channels={channels}"
        )
    chunk_patches = max(channels, chunk_size - chunk_size % channels)
    if positions_np.shape[0]:
        # No chunk larger than the whole job (it would only enlarge the last, padded call).
        chunk_patches = min(chunk_patches, positions_np.shape[0])
    return Plan(
        image=image_np,
        positions=positions_np,
        N=N,
        channels=channels,
        chunk_patches=chunk_patches,
        channel_axis=bool(channel_axis),
        interpolation=interpolation,
        padding=padding,
        dtype=complex_dtype_for(image_np),
    )


def extract_block(
    image: Any,
    positions: np.ndarray,
    *,
    N: int,
    channels: int,
    channel_axis: bool,
    backend: str,
    interpolation: str,
    padding: int,
    pad_to: Optional[int] = None,
) -> np.ndarray:
    """One engine call: the patches of ``positions`` as a NumPy array.

    ``pad_to``: for the compiling backends (JAX, TensorFlow), a short last
    chunk is padded to this many positions (copies of the first one) and the
    extra patches dropped, so every chunk runs the one compiled program.

    Returns (len(positions) // c, N, N, c) when ``channel_axis`` is True,
    else (len(positions), N, N).
    """
    from ptycho.backends import canonical_name, extract_patches_grouped, get_backend

    from ptycho._chunks import pad_rows

    backend = canonical_name(backend)
    n_rows = positions.shape[0] // channels
    if pad_to is not None and backend != "numpy":
        positions = pad_rows(positions, pad_to)
    out = extract_patches_grouped(
        image, positions, N, channels=channels, backend=backend,
        interpolation=interpolation, padding=padding,
    )
    block = np.asarray(get_backend(backend).to_numpy(out))[:n_rows]
    if not channel_axis:
        block = block.reshape(block.shape[:-1])
    return block


def sha256_of(array: np.ndarray) -> str:
    """Hex sha256 of an array's dtype, shape and values (C order)."""
    data = np.ascontiguousarray(array)
    digest = hashlib.sha256()
    digest.update(f"{data.dtype.str}|{data.shape}|".encode())
    digest.update(data.reshape(-1).view(np.uint8).data if data.size else b"")
    return digest.hexdigest()


def positions_hash(positions: np.ndarray) -> str:
    """Hash of the positions' values, independent of the input float width."""
    return sha256_of(np.asarray(positions, dtype="<f8"))


def image_hash(image: np.ndarray, dtype: np.dtype) -> str:
    """Hash of the object as the engine sees it (converted to ``dtype``)."""
    return sha256_of(np.asarray(image).astype(np.dtype(dtype).newbyteorder("<"), copy=False))


def gridsize_of(channels: int) -> Optional[int]:
    """gridsize for c = gridsize**2, or None when c is not a square."""
    root = math.isqrt(channels)
    return root if root * root == channels else None


# ---------------------------------------------------------------------------
# Grouped datasets (RawData)
# ---------------------------------------------------------------------------


def group_fields(raw: Any, *, gridsize: Any, K: Any, nsamples: Any, seed: Any, N: Any = None) -> dict:
    """``raw.group(...)`` then ``raw.grouped_fields(..., N=N)``: every field but Y (``X_full`` with N)."""
    gridsize = _validate.positive_int(gridsize, "gridsize")
    nn_indices = raw.group(gridsize=gridsize, K=K, nsamples=nsamples, seed=seed)
    return {name: value for name, value in raw.grouped_fields(nn_indices, N=N).items() if value is not None}


def object_of(raw: Any) -> np.ndarray:
    """The ground-truth object of a RawData, required to cut Y."""
    obj = getattr(raw, "objectGuess", None)
    if obj is None:
        raise InputError(
            "raw.objectGuess: expected the (H, W) complex object to cut the patches Y from, "
            "got None (this dataset has no object)"
        )
    return _validate.image_2d(obj, "raw.objectGuess")


def grouped_positions(fields: dict, channels: int) -> np.ndarray:
    """Flat (G * c, 2) float32 positions of Y: ``coords_offsets + coords_relative``.

    Where :meth:`ptycho.dataset.RawData.generate_grouped_data` cuts Y
    (:func:`ptycho.dataset.ground_truth_positions`, PtychoPINN's positions);
    position ``b*c + k`` is member k of group b (row-major over (group,
    channel)), so Y here equals Y there bit for bit.
    """
    from ptycho.dataset import check_grouped, ground_truth_positions

    check_grouped(fields, "fields", channels=channels)
    coords = ground_truth_positions(fields)
    # (G, 1, 2, c) -> (G, c, 2) -> (G * c, 2)
    return np.ascontiguousarray(np.moveaxis(coords[:, 0], 1, 2)).reshape(-1, 2)


def patches_per_chunk(batch_size: Any, channels: int, default_patches: int = 4096) -> int:
    """Patches per chunk of a grouped run: ``batch_size`` (default 4096) in whole groups.

    Same meaning as ``batch_size`` of ``RawData.generate_grouped_data``:
    patches per engine call, rounded down to whole groups, at least one group.
    """
    patches = default_patches if batch_size is None else _validate.positive_int(batch_size, "batch_size")
    return max(channels, patches - patches % channels)
