"""The PtychoPINN dataset (:class:`RawData`) and its grouped fields.

A ptychography scan is M diffraction frames, each recorded with the probe
centred on a scan position (x, y) of the object.  PtychoPINN trains on
*groups* of c = gridsize**2 neighbouring positions (formed by
:mod:`ptycho.grouping`).  This module

- loads, validates and saves the dataset (:class:`RawData`, PtychoPINN's NPZ
  layout, read with ``allow_pickle=False`` and written atomically);
- gathers every per-group field (:meth:`RawData.grouped_fields`) and cuts the
  ground-truth object patches ``Y`` at the members' positions
  (:meth:`RawData.generate_grouped_data`) with the batched engine;
- checks, saves and loads grouped dicts (:func:`check_grouped`,
  :func:`save_grouped`, :func:`load_grouped`).

Coordinates are object pixels in (x, y) order: x is the column, y the row.
Member k of group g is channel k of every grouped field.

Importing this module imports neither TensorFlow nor JAX: the TensorFlow path
loads :mod:`ptycho.tf_patches` only when it runs.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from ptycho.errors import InputError, InputTypeError
from ptycho import _validate, params
from ptycho._chunks import chunk_bounds, pad_rows
from ptycho._io import load_npz, save_npz
from ptycho.grouping import centre_and_relative, channel_coords, group_neighbours

__all__ = [
    "RawData",
    "group_neighbours",
    "generate_grouped_data",
    "check_grouped",
    "save_grouped",
    "load_grouped",
    "GROUPED_REQUIRED",
]

PathLike = Union[str, "os.PathLike[str]"]

#: Fields every grouped NPZ holds (``Y`` as well when the object is known).
GROUPED_REQUIRED = ("coords_nn", "coords_offsets", "coords_relative", "nn_indices", "diffraction")
_GROUPED_OPTIONAL = (
    "Y",
    "coords_start_nn",
    "coords_start_offsets",
    "coords_start_relative",
    "objectGuess",
    "probeGuess",
)

_FILE_REQUIRED = ("xcoords", "ycoords", "probeGuess")
_FILE_OPTIONAL = ("diff3d", "diffraction", "xcoords_start", "ycoords_start", "scan_index", "objectGuess")


# ---------------------------------------------------------------------------
# Field validation
# ---------------------------------------------------------------------------


def _real_array(value: Any, name: str, what: str) -> np.ndarray:
    if value is None:
        raise InputTypeError(f"{name} must be {what}, got None")
    arr = _validate.to_numpy(value, name)
    if arr.dtype.kind not in "iuf":
        raise InputTypeError(f"{name} must be {what} (real numeric dtype), got dtype {arr.dtype}")
    return arr


def _coordinates(value: Any, name: str) -> np.ndarray:
    arr = _real_array(value, name, "a 1-D array of scan coordinates in pixels")
    if arr.ndim != 1:
        raise InputError(f"{name} must be 1-D (M,), got shape {arr.shape}")
    _validate.finite(arr, name)
    return arr.astype(np.float64, copy=False)


def _complex_image(value: Any, name: str, *, square: bool) -> np.ndarray:
    """A 2-D complex array; real input becomes complex of the same precision."""
    what = "a 2-D square complex array (N, N)" if square else "a 2-D complex array (H, W)"
    if value is None:
        raise InputTypeError(f"{name} must be {what}, got None")
    arr = _validate.to_numpy(value, name)
    if arr.dtype.kind not in "iufc":
        raise InputTypeError(f"{name} must be {what}, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise InputError(f"{name} must be {what}, got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"{name} must not be empty, got shape {arr.shape}")
    if square and arr.shape[0] != arr.shape[1]:
        raise InputError(f"{name} must be square (N, N), got shape {arr.shape}")
    if arr.dtype.kind != "c":
        arr = arr.astype(np.complex64 if arr.dtype == np.float32 else np.complex128)
    _validate.finite(arr, name)
    return arr


def _diffraction_stack(value: Any, M: int) -> np.ndarray:
    arr = _real_array(value, "diff3d", "a 3-D array of diffraction amplitudes (M, H, W)")
    if arr.ndim != 3:
        raise InputError(f"diff3d must be 3-D (M, H, W), got shape {arr.shape}")
    if arr.shape[0] != M:
        raise InputError(
            f"diff3d must hold one frame per scan position: expected shape ({M}, H, W), got {arr.shape}"
        )
    if arr.dtype.kind in "iu":  # counts: widen to a float type that holds them exactly
        arr = arr.astype(np.float32 if arr.dtype.itemsize <= 2 else np.float64)
    _validate.finite(arr, "diff3d")
    return arr


def _scan_index(value: Any, M: int) -> np.ndarray:
    arr = _real_array(value, "scan_index", "a 1-D integer array (M,)")
    if arr.ndim != 1 or arr.shape[0] != M:
        raise InputError(f"scan_index must have shape ({M},), got {arr.shape}")
    if arr.dtype.kind == "f":
        _validate.finite(arr, "scan_index")
        if not np.array_equal(arr, np.round(arr)):
            raise InputTypeError(f"scan_index must hold integers, got non-integral values of dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


# ---------------------------------------------------------------------------
# The dataset
# ---------------------------------------------------------------------------


class RawData:
    """A ptychography scan in PtychoPINN's layout.

    Parameters
    ----------
    xcoords, ycoords : array (M,)
        Scan positions in object pixels (x: column, y: row); float64.
    xcoords_start, ycoords_start : array (M,)
        The nominal (commanded) positions; equal to the above when there is
        no position correction.
    diff3d : array (M, H, W), real
        Diffraction amplitudes (square roots of intensities), one frame per
        position.  Float dtypes are kept; integer counts are widened to float.
    probeGuess : array (N, N), complex
        The probe.  Real input becomes complex of the same precision.
    scan_index : array (M,), int
        Scan number of each frame.
    objectGuess : array (Ho, Wo), complex, optional
        The object (ground truth for simulations); needed for ``Y``.

    Raises
    ------
    TypeError, ValueError
        A field is missing, of the wrong kind, shape or length, or holds
        non-finite values; the message names the field, what was expected
        and what was received.
    """

    def __init__(
        self,
        xcoords: Any,
        ycoords: Any,
        xcoords_start: Any,
        ycoords_start: Any,
        diff3d: Any,
        probeGuess: Any,
        scan_index: Any,
        objectGuess: Any = None,
    ) -> None:
        self.xcoords = _coordinates(xcoords, "xcoords")
        M = self.xcoords.shape[0]
        if M == 0:
            raise InputError("xcoords must hold at least one scan position, got shape (0,)")
        for name, value in (("ycoords", ycoords), ("xcoords_start", xcoords_start), ("ycoords_start", ycoords_start)):
            arr = _coordinates(value, name)
            if arr.shape != (M,):
                raise InputError(f"{name} must have the shape of xcoords ({M},), got {arr.shape}")
            setattr(self, name, arr)
        self.diff3d = _diffraction_stack(diff3d, M)
        self.probeGuess = _complex_image(probeGuess, "probeGuess", square=True)
        self.scan_index = _scan_index(scan_index, M)
        self.objectGuess = None if objectGuess is None else _complex_image(objectGuess, "objectGuess", square=False)

    # -- construction -------------------------------------------------------

    @classmethod
    def from_coords_without_pc(
        cls,
        xcoords: Any,
        ycoords: Any,
        diff3d: Any,
        probeGuess: Any,
        scan_index: Any,
        objectGuess: Any = None,
    ) -> "RawData":
        """A dataset without position correction: start coordinates = coordinates."""
        return cls(xcoords, ycoords, xcoords, ycoords, diff3d, probeGuess, scan_index, objectGuess)

    @classmethod
    def from_file(cls, path: PathLike) -> "RawData":
        """Load a PtychoPINN NPZ file (``allow_pickle=False``).

        Required fields: ``xcoords``, ``ycoords``, ``diff3d`` (or
        ``diffraction``, the newer PtychoPINN name), ``probeGuess``.
        ``xcoords_start``/``ycoords_start`` default to the coordinates,
        ``scan_index`` to ``arange(M)``; ``objectGuess`` is optional.

        Raises
        ------
        FileNotFoundError
            No such file.
        TypeError, ValueError
            Unreadable archive, missing field or invalid field; the message
            starts with the path.
        """
        data = load_npz(path, required=_FILE_REQUIRED, optional=_FILE_OPTIONAL)
        where = os.fspath(path)
        diff3d = data.get("diff3d", data.get("diffraction"))
        if diff3d is None:
            raise InputError(
                f"{where}: missing required field diff3d (diffraction amplitudes, M x H x W); "
                f"present: {', '.join(sorted(data))}"
            )
        xcoords, ycoords = data["xcoords"], data["ycoords"]
        scan_index = data.get("scan_index")
        if scan_index is None:
            scan_index = np.arange(np.shape(xcoords)[0] if np.ndim(xcoords) else 0)
        try:
            return cls(
                xcoords,
                ycoords,
                data.get("xcoords_start", xcoords),
                data.get("ycoords_start", ycoords),
                diff3d,
                data["probeGuess"],
                scan_index,
                data.get("objectGuess"),
            )
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{where}: {exc}") from exc

    def to_file(self, path: PathLike, *, overwrite: bool = False) -> None:
        """Save as a PtychoPINN NPZ file, atomically (no ``objectGuess`` field when it is None)."""
        save_npz(path, self.as_dict(), overwrite=overwrite)

    def as_dict(self) -> dict[str, np.ndarray]:
        """The fields as a dict of arrays (``objectGuess`` only when present)."""
        out = {
            "xcoords": self.xcoords,
            "ycoords": self.ycoords,
            "xcoords_start": self.xcoords_start,
            "ycoords_start": self.ycoords_start,
            "diff3d": self.diff3d,
            "probeGuess": self.probeGuess,
            "scan_index": self.scan_index,
        }
        if self.objectGuess is not None:
            out["objectGuess"] = self.objectGuess
        return out

    # -- description --------------------------------------------------------

    def __len__(self) -> int:
        return int(self.xcoords.shape[0])

    @property
    def coords(self) -> np.ndarray:
        """Scan positions (M, 2) holding (x, y)."""
        return np.column_stack([self.xcoords, self.ycoords])

    def __repr__(self) -> str:
        obj = "None" if self.objectGuess is None else f"{self.objectGuess.shape} {self.objectGuess.dtype}"
        return (
            f"RawData(M={len(self)}, diff3d={self.diff3d.shape} {self.diff3d.dtype}, "
            f"probeGuess={self.probeGuess.shape} {self.probeGuess.dtype}, objectGuess={obj}, "
            f"x=[{self.xcoords.min():.6g}, {self.xcoords.max():.6g}], "
            f"y=[{self.ycoords.min():.6g}, {self.ycoords.max():.6g}])"
        )

    # -- grouping -----------------------------------------------------------

    def group(
        self,
        *,
        gridsize: int,
        K: Optional[int] = None,
        nsamples: Optional[int] = None,
        seed: Any = None,
    ) -> np.ndarray:
        """Neighbour groups (G, c) of scan indices; see :func:`ptycho.grouping.group_neighbours`."""
        return group_neighbours(self.coords, gridsize=gridsize, K=K, nsamples=nsamples, seed=seed)

    def _check_nn_indices(self, nn_indices: Any) -> np.ndarray:
        arr = _validate.to_numpy(nn_indices, "nn_indices")
        if arr.dtype.kind not in "iu":
            raise InputTypeError(f"nn_indices must be an integer array (G, c), got dtype {arr.dtype}")
        if arr.ndim != 2 or arr.shape[1] == 0:
            raise InputError(f"nn_indices must have shape (G, c) with c >= 1, got shape {arr.shape}")
        if arr.size and (arr.min() < 0 or arr.max() >= len(self)):
            bad = arr[(arr < 0) | (arr >= len(self))][0]
            raise InputError(f"nn_indices must index the {len(self)} scan positions (0..{len(self) - 1}), got {bad}")
        c = arr.shape[1]
        if round(c**0.5) ** 2 != c:
            raise InputError(f"nn_indices must have c = gridsize**2 columns, got {c}")
        return arr.astype(np.int64, copy=False)

    def _gather_frames(self, nn: np.ndarray) -> np.ndarray:
        """(G, H, W, c) member frames; one channel at a time keeps the peak memory low."""
        G, c = nn.shape
        out = np.empty((G,) + self.diff3d.shape[1:] + (c,), dtype=self.diff3d.dtype)
        for k in range(c):
            out[..., k] = self.diff3d[nn[:, k]]
        return out

    def grouped_fields(self, nn_indices: Any) -> dict[str, np.ndarray]:
        """Every per-group field except ``Y``.

        Parameters
        ----------
        nn_indices : int array (G, c)
            Scan indices of the members (from :meth:`group`).

        Returns
        -------
        dict
            ``coords_nn`` (G, 1, 2, c) members' (x, y); ``coords_offsets``
            (G, 1, 2, 1) group centre (mean of the members);
            ``coords_relative`` (G, 1, 2, c) = coords_nn - coords_offsets;
            the same three from the start coordinates (``coords_start_nn``,
            ``coords_start_offsets``, ``coords_start_relative``);
            ``nn_indices`` (G, c) int64; ``diffraction`` (G, H, W, c) the
            members' ``diff3d`` frames, values and dtype unchanged;
            ``probeGuess``; ``objectGuess`` when the dataset has one.  Member k of group g is
            channel k (last axis) of each.
        """
        nn = self._check_nn_indices(nn_indices)
        coords_nn = channel_coords(self.xcoords, self.ycoords, nn)
        offsets, relative = centre_and_relative(coords_nn)
        start_nn = channel_coords(self.xcoords_start, self.ycoords_start, nn)
        start_offsets, start_relative = centre_and_relative(start_nn)
        out = {
            "coords_nn": coords_nn,
            "coords_offsets": offsets,
            "coords_relative": relative,
            "coords_start_nn": start_nn,
            "coords_start_offsets": start_offsets,
            "coords_start_relative": start_relative,
            "nn_indices": nn,
            "diffraction": self._gather_frames(nn),
            "probeGuess": self.probeGuess,
        }
        if self.objectGuess is not None:
            out["objectGuess"] = self.objectGuess
        return out

    def generate_grouped_data(
        self,
        N: int,
        K: Optional[int] = None,
        nsamples: Optional[int] = None,
        gridsize: Optional[int] = None,
        seed: Any = None,
        *,
        backend: str = "tensorflow",
        batch_size: Optional[int] = None,
        progress: bool = False,
    ) -> dict[str, np.ndarray]:
        """Group the scan and cut the ground-truth object patches of every group.

        Parameters
        ----------
        N : int
            Patch side in pixels.
        K, nsamples, seed
            See :func:`ptycho.grouping.group_neighbours`.
        gridsize : int, optional
            Default ``ptycho.params.get('gridsize')``.
        backend : {'tensorflow', 'numpy', 'jax'}
            Engine for ``Y``.  'tensorflow' is PtychoPINN's production path,
            :func:`ptycho.tf_patches.get_image_patches`; the others call
            :func:`ptycho.backends.extract_patches_grouped`.  All three give
            the same values bit for bit.
        batch_size : int, optional
            Patches per engine call (rounded down to whole groups, at least
            one group); bounds working memory.  Default: all in one call.
        progress : bool
            Show a tqdm progress bar on stderr.

        Returns
        -------
        dict
            :meth:`grouped_fields` plus ``Y`` (G, N, N, c) as a NumPy array:
            channel k of group g is the object patch centred on
            ``coords_nn[g, 0, :, k]`` (complex64, complex128 for a complex128
            object).

        Raises
        ------
        ValueError
            The dataset has no ``objectGuess`` (``Y`` is cut from it).
        """
        if self.objectGuess is None:
            raise InputError(
                "objectGuess is None: Y (the ground-truth object patches) is cut from objectGuess; "
                "use grouped_fields(group(...)) for a dataset without an object"
            )
        N = _validate.patch_size(N)
        gridsize = _validate.positive_int(params.get("gridsize") if gridsize is None else gridsize, "gridsize")
        batch_size = None if batch_size is None else _validate.positive_int(batch_size, "batch_size")
        from ptycho.backends import canonical_name

        backend = canonical_name(backend)
        nn = self.group(gridsize=gridsize, K=K, nsamples=nsamples, seed=seed)
        out = self.grouped_fields(nn)
        out["Y"] = _object_patches(
            self.objectGuess, out["coords_nn"], N, gridsize,
            backend=backend, batch_size=batch_size, progress=progress,
        )
        return out


def _object_patches(
    obj: np.ndarray,
    coords_nn: np.ndarray,
    N: int,
    gridsize: int,
    *,
    backend: str,
    batch_size: Optional[int],
    progress: bool,
) -> np.ndarray:
    """``Y`` (G, N, N, c): the object patches at ``coords_nn``, chunked by groups."""
    G, c = coords_nn.shape[0], coords_nn.shape[3]
    groups_per_call = G if batch_size is None else max(1, batch_size // c)
    dtype = _validate.working_dtypes(obj.dtype)[0]
    Y = np.empty((G, N, N, c), dtype=dtype)
    if G == 0:
        return Y
    cut = _patch_cutter(obj, N, gridsize, backend)
    from tqdm import tqdm

    with tqdm(total=G, unit="group", desc=f"patches ({backend})", file=sys.stderr,
              disable=not progress, leave=False) as bar:
        for start, stop in chunk_bounds(G, groups_per_call):
            chunk = coords_nn[start:stop]
            if backend != "numpy":
                # Compiled engines (XLA, jax.jit) compile once per shape.
                chunk = pad_rows(chunk, groups_per_call)
            Y[start:stop] = cut(chunk)[: stop - start]
            bar.update(stop - start)
    return Y


def _patch_cutter(obj: np.ndarray, N: int, gridsize: int, backend: str):
    """A function (g, 1, 2, c) coordinates -> (g, N, N, c) NumPy patches."""
    if backend == "tensorflow":
        from ptycho.config.config import ModelConfig
        from ptycho.tf_patches import get_image_patches

        config = ModelConfig(N=N, gridsize=gridsize, use_batched_patch_extraction=True)

        def cut(coords: np.ndarray) -> np.ndarray:
            # Global offsets = the positions, local offsets = 0: the sum is
            # exactly coords_nn, so Y equals the legacy loop's patches there.
            patches = get_image_patches(obj, coords, np.zeros_like(coords), N=N, gridsize=gridsize, config=config)
            return patches.numpy()

        return cut

    from ptycho.backends import extract_patches_grouped, get_backend

    to_numpy = get_backend(backend).to_numpy

    def cut(coords: np.ndarray) -> np.ndarray:
        c = coords.shape[3]
        flat = np.moveaxis(coords[:, 0], 1, 2).reshape(-1, 2)  # row b*c + k = group b, member k
        return np.asarray(to_numpy(extract_patches_grouped(obj, flat, N, channels=c, backend=backend)))

    return cut


def generate_grouped_data(raw: RawData, N: int, *args: Any, **kwargs: Any) -> dict[str, np.ndarray]:
    """Module-level form of :meth:`RawData.generate_grouped_data`."""
    if not isinstance(raw, RawData):
        raise InputTypeError(f"raw must be a RawData, got {type(raw).__name__}")
    return raw.generate_grouped_data(N, *args, **kwargs)


# ---------------------------------------------------------------------------
# Grouped NPZ files
# ---------------------------------------------------------------------------


def save_grouped(path: PathLike, grouped: dict, *, overwrite: bool = False) -> None:
    """Save a grouped dict (from :meth:`RawData.generate_grouped_data`) as NPZ, atomically.

    Entries that are None are left out.
    """
    if not isinstance(grouped, dict):
        raise InputTypeError(f"grouped must be a dict of arrays, got {type(grouped).__name__}")
    missing = [name for name in GROUPED_REQUIRED if grouped.get(name) is None]
    if missing:
        raise InputError(f"grouped is missing field(s) {', '.join(missing)}; present: {', '.join(sorted(grouped))}")
    save_npz(path, {k: v for k, v in grouped.items() if v is not None}, overwrite=overwrite)


def _shape(value: Any) -> tuple:
    """The shape of an array of any library, without copying it."""
    shape = getattr(value, "shape", None)
    return tuple(int(n) for n in (np.shape(value) if shape is None else shape))


def check_grouped(
    grouped: Any,
    name: str = "grouped",
    *,
    channels: Optional[int] = None,
    required: Sequence[str] = ("coords_nn",),
    drawable: bool = False,
) -> tuple[int, int]:
    """Check that the fields of a grouped dict agree on G groups of c members; return (G, c).

    G and c come from ``nn_indices`` (G, c) when present, else from
    ``coords_nn`` (G, 1, 2, c).  Every field present must then have its shape:
    ``coords_nn``, ``coords_relative`` and their ``coords_start_*`` twins
    (G, 1, 2, c), ``coords_offsets`` and ``coords_start_offsets`` (G, 1, 2, 1),
    ``diffraction`` and ``Y`` (G, H, W, c).

    Parameters
    ----------
    grouped : dict
        Fields as :meth:`RawData.generate_grouped_data` or :func:`load_grouped`
        return them (NumPy or any array with a ``shape``; nothing is copied).
    name : str
        What the messages call it (``grouped``, a file name, ...).
    channels : int, optional
        The c the caller expects.
    required : sequence of str
        Fields that must be present.
    drawable : bool
        Also require G > 0 and ``Y`` or ``diffraction`` (something to draw).

    Raises
    ------
    InputTypeError
        ``grouped`` is not a dict.
    InputError
        A required field is missing or a shape disagrees; the message starts
        with ``name`` and names the field, the expected and the actual shape.
    """
    if not isinstance(grouped, Mapping):
        raise InputTypeError(f"{name} must be a dict of arrays, got {type(grouped).__name__}")
    missing = [field for field in required if grouped.get(field) is None]
    if missing:
        raise InputError(f"{name}: missing field(s) {', '.join(missing)}; present: {', '.join(sorted(grouped))}; "
                         "expected the output of generate_grouped_data")
    if grouped.get("nn_indices") is not None:
        shape = _shape(grouped["nn_indices"])
        if len(shape) != 2:
            raise InputError(f"{name}: nn_indices must have shape (G, c), got {shape}")
        G, c = shape
    else:
        shape = _shape(grouped["coords_nn"]) if grouped.get("coords_nn") is not None else ()
        if len(shape) != 4 or shape[1:3] != (1, 2):
            raise InputError(f"{name}: coords_nn must have shape (G, 1, 2, c) holding (x, y), got {shape}")
        G, c = shape[0], shape[3]
    c = c if channels is None else channels
    expected = {
        "coords_nn": (G, 1, 2, c),
        "coords_offsets": (G, 1, 2, 1),
        "coords_relative": (G, 1, 2, c),
        "coords_start_nn": (G, 1, 2, c),
        "coords_start_offsets": (G, 1, 2, 1),
        "coords_start_relative": (G, 1, 2, c),
    }
    for field, want in expected.items():
        if grouped.get(field) is not None and _shape(grouped[field]) != want:
            raise InputError(f"{name}: {field} must have shape {want}, got {_shape(grouped[field])}")
    for field in ("diffraction", "Y"):
        if grouped.get(field) is not None:
            shape = _shape(grouped[field])
            if len(shape) != 4 or shape[0] != G or shape[3] != c:
                raise InputError(f"{name}: {field} must have shape ({G}, H, W, {c}), got {shape}")
    if drawable and G == 0:
        raise InputError(f"{name}: holds no groups (G = 0); there is nothing to draw")
    if drawable and grouped.get("Y") is None and grouped.get("diffraction") is None:
        raise InputError(f"{name}: holds neither 'Y' nor 'diffraction'; there is nothing to draw")
    return G, c


def load_grouped(path: PathLike) -> dict[str, np.ndarray]:
    """Load a grouped NPZ written by :func:`save_grouped`, checking shapes agree (:func:`check_grouped`).

    Raises
    ------
    FileNotFoundError, ValueError
        Missing or unreadable file, missing field, or fields whose group
        count G or channel count c disagree (message names the file).
    """
    data = load_npz(path, required=GROUPED_REQUIRED, optional=_GROUPED_OPTIONAL)
    check_grouped(data, os.fspath(path), required=GROUPED_REQUIRED)
    return data
