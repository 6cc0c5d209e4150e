"""The PtychoPINN dataset (:class:`RawData`) and its grouped fields.

A ptychography scan is M diffraction frames, each recorded with the probe
centred on a scan position (x, y) of the object.  PtychoPINN trains on
*groups* of c = gridsize**2 neighbouring positions (formed by
:mod:`ptycho.grouping`).  This module

- loads, validates and saves the dataset (:class:`RawData`, PtychoPINN's NPZ
  layout, read with ``allow_pickle=False`` and written atomically);
- groups the scan exactly as PtychoPINN does (:meth:`RawData.group`, with
  :mod:`ptycho.grouping`), gathers every per-group field
  (:meth:`RawData.grouped_fields`) and cuts the ground-truth object patches
  ``Y`` where PtychoPINN cuts them (:meth:`RawData.generate_grouped_data`)
  with the batched engine;
- provides PtychoPINN's module functions :func:`get_relative_coords`,
  :func:`get_neighbor_indices` and :func:`normalize_data`;
- checks, saves and loads grouped dicts (:func:`check_grouped`,
  :func:`save_grouped`, :func:`load_grouped`).

Coordinates are object pixels in (x, y) order: x is the column, y the row.
Member k of group g is channel k of every grouped field.

Importing this module imports neither TensorFlow nor JAX: the TensorFlow path
loads :mod:`ptycho.tf_patches` only when it runs.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from ptycho.errors import InputError, InputTypeError
from ptycho import _validate, params
from ptycho._chunks import chunk_bounds, pad_rows
from ptycho._io import load_npz, save_npz
from ptycho.grouping import (
    channel_coords,
    group_neighbours,
    legacy_seed,
    neighbor_indices,
    oversampled_groups,
    relative_coords,
    sample_then_group,
)

__all__ = [
    "RawData",
    "group_neighbours",
    "generate_grouped_data",
    "ground_truth_positions",
    "get_relative_coords",
    "get_neighbor_indices",
    "normalize_data",
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
    "X_full",
    "sample_indices",
    "coords_start_nn",
    "coords_start_offsets",
    "coords_start_relative",
    "objectGuess",
    "probeGuess",
)

_FILE_REQUIRED = ("xcoords", "ycoords", "probeGuess")
_FILE_OPTIONAL = (
    "diff3d", "diffraction", "xcoords_start", "ycoords_start", "scan_index", "objectGuess", "_metadata",
)


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


def _scan_index(value: Any, M: int) -> Optional[np.ndarray]:
    if value is None:
        return None
    arr = _real_array(value, "scan_index", "a 1-D integer array (M,)")
    if arr.ndim != 1 or arr.shape[0] != M:
        raise InputError(f"scan_index must have shape ({M},), got {arr.shape}")
    if arr.dtype.kind == "f":
        _validate.finite(arr, "scan_index")
        if not np.array_equal(arr, np.round(arr)):
            raise InputTypeError(f"scan_index must hold integers, got non-integral values of dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _patches_per_position(value: Any, M: int) -> Optional[np.ndarray]:
    """PtychoPINN's optional precomputed ``Y``: one patch per position, (M, N, N) or (M, N, N, 1)."""
    if value is None:
        return None
    arr = _validate.to_numpy(value, "Y")
    if arr.dtype.kind not in "iufc":
        raise InputTypeError(f"Y must be an array of ground-truth patches (M, N, N) or (M, N, N, 1), got dtype {arr.dtype}")
    if arr.ndim not in (3, 4) or arr.shape[0] != M or (arr.ndim == 4 and arr.shape[3] != 1):
        raise InputError(f"Y must have shape ({M}, N, N) or ({M}, N, N, 1) (one patch per position), got {arr.shape}")
    return arr


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise InputTypeError(f"{name} must be True or False, got {_validate.describe(value)}")
    return bool(value)


# ---------------------------------------------------------------------------
# The dataset
# ---------------------------------------------------------------------------


class RawData:
    """A ptychography scan in PtychoPINN's layout (``ptycho.raw_data.RawData``).

    Parameters
    ----------
    xcoords, ycoords : array (M,)
        Scan positions in object pixels (x: column, y: row); stored float64.
    xcoords_start, ycoords_start : array (M,)
        The nominal (commanded) positions; equal to the above when there is
        no position correction.
    diff3d : array (M, H, W), real
        Diffraction amplitudes (square roots of intensities), one frame per
        position.  Float dtypes are kept; integer counts are widened to float.
    probeGuess : array (N, N), complex
        The probe.  Real input becomes complex of the same precision.
    scan_index : array (M,), int, or None
        Scan number of each frame.
    objectGuess : array (Ho, Wo), complex, optional
        The object (ground truth for simulations); ``Y`` is cut from it.
    Y : array (M, N, N) or (M, N, N, 1), optional
        Precomputed ground-truth patches, one per position; when given,
        :meth:`generate_grouped_data` gathers ``Y`` from it instead of
        cutting ``objectGuess``.
    norm_Y_I : optional
        The intensity normalisation of a simulation, kept as given.
    metadata : dict, optional
        The NPZ file's ``_metadata`` record (PtychoPINN's), kept as given.

    Attributes ``sample_indices`` and ``subsample_seed`` start as None (set
    by PtychoPINN's subsampling code); a ``sample_indices`` that is set is
    copied into the grouped dict.

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
        Y: Any = None,
        norm_Y_I: Any = None,
        metadata: Optional[dict] = None,
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
        self.Y = _patches_per_position(Y, M)
        self.norm_Y_I = norm_Y_I
        if metadata is not None and not isinstance(metadata, Mapping):
            raise InputTypeError(f"metadata must be a dict or None, got {type(metadata).__name__}")
        self.metadata = metadata
        self.sample_indices: Optional[np.ndarray] = None
        self.subsample_seed: Optional[int] = None

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
    def from_file(
        cls,
        train_data_file_path: PathLike,
        validate_config: bool = False,
        current_config: Any = None,
    ) -> "RawData":
        """Load a PtychoPINN NPZ file (``allow_pickle=False``).

        Required fields: ``xcoords``, ``ycoords``, ``diff3d`` (or
        ``diffraction``, the newer PtychoPINN name), ``probeGuess``.
        ``xcoords_start``/``ycoords_start`` default to the coordinates and
        ``scan_index`` to zeros (PtychoPINN's defaults); ``objectGuess`` is
        optional; a ``_metadata`` JSON record becomes :attr:`metadata`.
        ``validate_config`` and ``current_config`` are accepted for
        PtychoPINN's signature and not used.

        Raises
        ------
        FileNotFoundError
            No such file.
        TypeError, ValueError
            Unreadable archive, missing field or invalid field; the message
            starts with the path.
        """
        path = train_data_file_path
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
            scan_index = np.zeros(np.shape(xcoords)[0] if np.ndim(xcoords) else 0, dtype=np.int64)
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
                metadata=_metadata_record(data.get("_metadata"), where),
            )
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{where}: {exc}") from exc

    @classmethod
    def from_files(cls, train_data_file_path: PathLike, test_data_file_path: PathLike) -> tuple["RawData", "RawData"]:
        """(training dataset, test dataset), each read by :meth:`from_file`."""
        return cls.from_file(train_data_file_path), cls.from_file(test_data_file_path)

    def to_file(self, file_path: PathLike, *, overwrite: bool = False) -> None:
        """Save as a PtychoPINN NPZ file, atomically.

        Fields that are None (``objectGuess``, ``scan_index``) are left out.
        Unlike PtychoPINN's ``np.savez``, an existing file is kept
        (``FileExistsError``) unless ``overwrite=True``: no dataset is lost
        to a repeated run.
        """
        save_npz(file_path, self.as_dict(), overwrite=_flag(overwrite, "overwrite"))

    def as_dict(self) -> dict[str, np.ndarray]:
        """The fields as a dict of arrays (``objectGuess``, ``scan_index`` only when present)."""
        out = {
            "xcoords": self.xcoords,
            "ycoords": self.ycoords,
            "xcoords_start": self.xcoords_start,
            "ycoords_start": self.ycoords_start,
            "diff3d": self.diff3d,
            "probeGuess": self.probeGuess,
        }
        if self.scan_index is not None:
            out["scan_index"] = self.scan_index
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

    def __str__(self) -> str:
        names = ("xcoords", "ycoords", "xcoords_start", "ycoords_start", "diff3d", "probeGuess", "scan_index",
                 "objectGuess")
        shapes = (getattr(self, name) for name in names)
        return "\n".join(["RawData:"] + [f"  {name}: {'None' if value is None else value.shape}"
                                          for name, value in zip(names, shapes)])

    # -- grouping -----------------------------------------------------------

    def group(
        self,
        *,
        gridsize: int,
        K: Optional[int] = None,
        nsamples: Optional[int] = None,
        seed: Optional[int] = None,
        sequential_sampling: bool = False,
        enable_oversampling: bool = False,
        neighbor_pool_size: Optional[int] = None,
    ) -> np.ndarray:
        """Neighbour groups (G, c) of scan indices, exactly as PtychoPINN forms them.

        c = gridsize**2.  ``nsamples`` groups (default None: one per
        position) are formed by :func:`ptycho.grouping.sample_then_group`
        from the first ``nsamples`` positions (``sequential_sampling``) or
        from seeds drawn at random, each group's members drawn from its
        seed's K nearest other positions (default K = c).  More groups than
        positions (c > 1) need ``enable_oversampling=True`` and
        ``neighbor_pool_size`` (default K) >= c; they are drawn by
        :func:`ptycho.grouping.oversampled_groups`.  Randomness comes from
        ``np.random`` (seeded with ``seed`` when given), as in PtychoPINN.

        Raises
        ------
        InputError
            More groups than positions without oversampling enabled, a pool
            smaller than c, K < c, or fewer than c positions (``ValueError``);
            a wrong kind of argument (``TypeError`` as well).
        """
        gridsize = _validate.positive_int(gridsize, "gridsize")
        C = gridsize**2
        M = len(self)
        K = C if K is None else _validate.positive_int(K, "K")
        nsamples = M if nsamples is None else _validate.positive_int(nsamples, "nsamples")
        seed = legacy_seed(seed)
        sequential_sampling = _flag(sequential_sampling, "sequential_sampling")
        enable_oversampling = _flag(enable_oversampling, "enable_oversampling")
        pool = K if neighbor_pool_size is None else _validate.positive_int(neighbor_pool_size, "neighbor_pool_size")

        oversample = nsamples > M and C > 1
        if oversample and not enable_oversampling:
            raise InputError(
                f"nsamples={nsamples} groups asked of only {M} scan positions (gridsize={gridsize}, C={C}): "
                "more groups than positions need K-choose-C oversampling, which is off; pass "
                f"enable_oversampling=True and neighbor_pool_size >= {C} (PtychoPINN's OVERSAMPLING-001)"
            )
        if oversample and pool < C:
            raise InputError(
                f"K-choose-C oversampling needs neighbor_pool_size >= C = gridsize**2 = {C}, "
                f"got neighbor_pool_size={pool} (PtychoPINN's OVERSAMPLING-001)"
            )
        seed_indices = np.arange(min(nsamples, M)) if sequential_sampling else None
        if oversample:
            return self._generate_groups_with_oversampling(nsamples, pool, C, seed=seed, seed_indices=seed_indices)
        return self._generate_groups_efficiently(nsamples, K, C, seed=seed, seed_indices=seed_indices)

    def _generate_groups_efficiently(
        self, nsamples: int, K: int, C: int, seed: Optional[int] = None, seed_indices: Any = None
    ) -> np.ndarray:
        """PtychoPINN's name for :func:`ptycho.grouping.sample_then_group` on this scan."""
        return sample_then_group(self.coords, nsamples=nsamples, K=K, C=C, seed=seed, seed_indices=seed_indices)

    def _generate_groups_with_oversampling(
        self, nsamples: int, K: int, C: int, seed: Optional[int] = None, seed_indices: Any = None
    ) -> np.ndarray:
        """PtychoPINN's name for :func:`ptycho.grouping.oversampled_groups` on this scan."""
        return oversampled_groups(self.coords, nsamples=nsamples, K=K, C=C, seed=seed, seed_indices=seed_indices)

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
        return arr

    def _gather_frames(self, nn: np.ndarray) -> np.ndarray:
        """(G, H, W, c) member frames; one channel at a time keeps the peak memory low."""
        G, c = nn.shape
        out = np.empty((G,) + self.diff3d.shape[1:] + (c,), dtype=self.diff3d.dtype)
        for k in range(c):
            out[..., k] = self.diff3d[nn[:, k]]
        return out

    def grouped_fields(self, nn_indices: Any, *, N: Optional[int] = None) -> dict[str, Any]:
        """Every per-group field except ``Y``.

        Parameters
        ----------
        nn_indices : int array (G, c)
            Scan indices of the members (from :meth:`group`).
        N : int, optional
            Patch side; when given, ``X_full`` is included.

        Returns
        -------
        dict
            ``diffraction`` (G, H, W, c) the members' ``diff3d`` frames,
            values and dtype unchanged; ``coords_offsets`` (G, 1, 2, 1) group
            centre (mean of the members); ``coords_relative`` (G, 1, 2, c) =
            ``-(coords_nn - coords_offsets)`` (PtychoPINN's sign); the same
            from the start coordinates (``coords_start_offsets``,
            ``coords_start_relative``); ``coords_nn`` and ``coords_start_nn``
            (G, 1, 2, c) the members' (x, y); ``nn_indices`` (G, c), integer
            dtype kept; ``objectGuess`` (None without one); ``probeGuess``;
            ``X_full`` (G, H, W, c) float32 = :func:`normalize_data` when N
            is given.  Member k of group g is channel k (last axis) of each.
        """
        nn = self._check_nn_indices(nn_indices)
        N = None if N is None else _validate.patch_size(N)
        coords_nn = channel_coords(self.xcoords, self.ycoords, nn)
        offsets, relative = relative_coords(coords_nn)
        start_nn = channel_coords(self.xcoords_start, self.ycoords_start, nn)
        start_offsets, start_relative = relative_coords(start_nn)
        out = {
            "diffraction": self._gather_frames(nn),
            "coords_offsets": offsets,
            "coords_relative": relative,
            "coords_start_offsets": start_offsets,
            "coords_start_relative": start_relative,
            "coords_nn": coords_nn,
            "coords_start_nn": start_nn,
            "nn_indices": nn,
            "objectGuess": self.objectGuess,
            "probeGuess": self.probeGuess,
        }
        if N is not None:
            # A scan without recorded diffraction (all zero: e.g. an object-only
            # dataset for patch extraction) has nothing to normalise; its X_full
            # is zero rather than PtychoPINN's 0 * inf = NaN.
            diffraction = out["diffraction"]
            out["X_full"] = (
                normalize_data(out, N) if np.any(diffraction) else np.zeros(diffraction.shape, np.float32)
            )
        return out

    def generate_grouped_data(
        self,
        N: int,
        K: int = 4,
        nsamples: Optional[int] = 1,
        dataset_path: Optional[PathLike] = None,
        seed: Optional[int] = None,
        sequential_sampling: bool = False,
        gridsize: Optional[int] = None,
        enable_oversampling: bool = False,
        neighbor_pool_size: Optional[int] = None,
        *,
        backend: str = "tensorflow",
        batch_size: Optional[int] = None,
        progress: bool = False,
    ) -> dict[str, Any]:
        """Group the scan as PtychoPINN does and gather every grouped field, ``Y`` included.

        Parameters
        ----------
        N : int
            Patch side in pixels.
        K, nsamples, seed, sequential_sampling, enable_oversampling, neighbor_pool_size
            PtychoPINN's grouping; see :meth:`group` (``K=None`` means c,
            ``nsamples=None`` one group per position).  The same seed gives
            PtychoPINN's groups.
        dataset_path : str, optional
            Accepted for PtychoPINN's signature; not used (no cache).
        gridsize : int, optional
            Default ``ptycho.params.get('gridsize')``.
        backend : {'tensorflow', 'numpy', 'jax', ...}
            Engine for ``Y``.  'tensorflow' is PtychoPINN's production path,
            :func:`ptycho.tf_patches.get_image_patches`; the others call
            :func:`ptycho.backends.extract_patches_grouped`.  All give the
            same values bit for bit.
        batch_size : int, optional
            Patches per engine call (rounded down to whole groups, at least
            one group); bounds working memory.  Default: all in one call.
        progress : bool
            Show a tqdm progress bar on stderr.

        Returns
        -------
        dict
            :meth:`grouped_fields` with ``X_full``, plus ``Y`` (G, N, N, c)
            complex64 NumPy array: from the dataset's precomputed ``Y`` when
            it has one, else cut from ``objectGuess`` at
            ``coords_offsets + coords_relative`` rounded to float32 (where
            PtychoPINN's ``get_image_patches`` cuts it, bit for bit), else
            None; and ``sample_indices`` when the dataset has them.

        Raises
        ------
        InputError
            Bad arguments, or a grouping PtychoPINN refuses (see :meth:`group`).
        """
        if dataset_path is not None and not isinstance(dataset_path, (str, bytes, os.PathLike)):
            raise InputTypeError(f"dataset_path must be a path or None, got {type(dataset_path).__name__}")
        N = _validate.patch_size(N)
        gridsize = _validate.positive_int(params.get("gridsize", 1) if gridsize is None else gridsize, "gridsize")
        nn = self.group(gridsize=gridsize, K=K, nsamples=nsamples, seed=seed, sequential_sampling=sequential_sampling,
                        enable_oversampling=enable_oversampling, neighbor_pool_size=neighbor_pool_size)
        return self._generate_dataset_from_groups(nn, N, K, gridsize, backend=backend, batch_size=batch_size,
                                                  progress=progress)

    def _generate_dataset_from_groups(
        self,
        selected_groups: Any,
        N: int,
        K: Any = None,
        gridsize: Optional[int] = None,
        *,
        backend: str = "tensorflow",
        batch_size: Optional[int] = None,
        progress: bool = False,
    ) -> dict[str, Any]:
        """The grouped dict of :meth:`generate_grouped_data` for given groups (G, c); K is not used."""
        N = _validate.patch_size(N)
        batch_size = None if batch_size is None else _validate.positive_int(batch_size, "batch_size")
        progress = _flag(progress, "progress")
        from ptycho.backends import canonical_name

        backend = canonical_name(backend)
        out = self.grouped_fields(selected_groups, N=N)
        c = out["nn_indices"].shape[1]
        if gridsize is not None and _validate.positive_int(gridsize, "gridsize") ** 2 != c:
            raise InputError(f"selected_groups must have gridsize**2 = {gridsize**2} columns, got {c}")
        if self.Y is not None:
            out["Y"] = _gather_patches(self.Y, out["nn_indices"])
        elif self.objectGuess is not None:
            positions = ground_truth_positions(out)
            out["Y"] = _object_patches(self.objectGuess, positions, N, backend=backend, batch_size=batch_size,
                                       progress=progress)
        else:
            out["Y"] = None  # nothing to cut from: PtychoPINN's PINN training needs no Y
        if self.sample_indices is not None:
            out["sample_indices"] = np.array(self.sample_indices, copy=True)
        return out


def _metadata_record(value: Any, where: str) -> Optional[dict]:
    """PtychoPINN's ``_metadata`` field (a JSON string) as a dict; None when absent or unreadable."""
    if value is None:
        return None
    import json

    try:
        record = json.loads(str(np.asarray(value).item()))
    except (ValueError, TypeError):
        import warnings

        warnings.warn(f"{where}: field _metadata is not a JSON record; ignored", UserWarning, stacklevel=3)
        return None
    return record if isinstance(record, dict) else None


def _gather_patches(Y: np.ndarray, nn: np.ndarray) -> np.ndarray:
    """(G, N, N, c) from per-position patches (M, N, N) or (M, N, N, 1)."""
    members = Y[nn]  # (G, c, N, N) or (G, c, N, N, 1)
    if members.ndim == 5:
        members = members[..., 0]
    return np.ascontiguousarray(np.moveaxis(members, 1, 3))


def ground_truth_positions(fields: Mapping[str, Any]) -> np.ndarray:
    """(G, 1, 2, c) float32 positions where ``Y`` is cut: ``coords_offsets + coords_relative``.

    The sum in float64, rounded once to float32, as PtychoPINN's
    ``get_image_patches(objectGuess, coords_offsets, coords_relative)`` forms
    it.  With PtychoPINN's sign (``coords_relative = -(coords_nn -
    coords_offsets)``) that is each member reflected through its group's
    centre; for gridsize 1 it is the position itself.
    """
    total = np.add(np.asarray(fields["coords_offsets"]), np.asarray(fields["coords_relative"]), dtype=np.float64)
    return total.astype(np.float32)


def _object_patches(
    obj: np.ndarray,
    positions: np.ndarray,
    N: int,
    *,
    backend: str,
    batch_size: Optional[int],
    progress: bool,
) -> np.ndarray:
    """``Y`` (G, N, N, c) complex64: the object patches at ``positions`` (G, 1, 2, c), chunked by groups."""
    G, c = positions.shape[0], positions.shape[3]
    groups_per_call = G if batch_size is None else max(1, batch_size // c)
    Y = np.empty((G, N, N, c), dtype=np.complex64)
    if G == 0:
        return Y
    cut = _patch_cutter(obj, N, math.isqrt(c), backend)
    from tqdm import tqdm

    with tqdm(total=G, unit="group", desc=f"patches ({backend})", file=sys.stderr,
              disable=not progress, leave=False) as bar:
        for start, stop in chunk_bounds(G, groups_per_call):
            chunk = positions[start:stop]
            if backend != "numpy":
                # Compiled engines (XLA, jax.jit) compile once per shape.
                chunk = pad_rows(chunk, groups_per_call)
            Y[start:stop] = cut(chunk)[: stop - start]
            bar.update(stop - start)
    return Y


def _patch_cutter(obj: np.ndarray, N: int, gridsize: int, backend: str):
    """A function (g, 1, 2, c) float32 positions -> (g, N, N, c) NumPy patches."""
    if backend == "tensorflow":
        from ptycho.config.config import ModelConfig
        from ptycho.tf_patches import get_image_patches

        config = ModelConfig(N=N, gridsize=gridsize, use_batched_patch_extraction=True)

        def cut(positions: np.ndarray) -> np.ndarray:
            # Global offsets = the float32 positions, local offsets = 0: the
            # sum is exact, so Y equals PtychoPINN's get_image_patches there.
            patches = get_image_patches(obj, positions, np.zeros_like(positions), N=N, gridsize=gridsize,
                                        config=config)
            return patches.numpy()

        return cut

    from ptycho.backends import extract_patches_grouped, get_backend

    to_numpy = get_backend(backend).to_numpy

    def cut(positions: np.ndarray) -> np.ndarray:
        c = positions.shape[3]
        flat = np.moveaxis(positions[:, 0], 1, 2).reshape(-1, 2)  # row b*c + k = group b, member k
        return np.asarray(to_numpy(extract_patches_grouped(obj, flat, N, channels=c, backend=backend)))

    return cut


def generate_grouped_data(raw: RawData, N: int, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Module-level form of :meth:`RawData.generate_grouped_data`."""
    if not isinstance(raw, RawData):
        raise InputTypeError(f"raw must be a RawData, got {type(raw).__name__}")
    return raw.generate_grouped_data(N, *args, **kwargs)


# ---------------------------------------------------------------------------
# PtychoPINN's module functions
# ---------------------------------------------------------------------------


def get_relative_coords(coords_nn: Any) -> tuple[np.ndarray, np.ndarray]:
    """PtychoPINN's ``get_relative_coords``: (centres (G, 1, 2, 1), ``-(coords_nn - centres)``).

    ``coords_nn`` (G, 1, 2, c) holds the members' (x, y); see
    :func:`ptycho.grouping.relative_coords`.
    """
    arr = _real_array(coords_nn, "coords_nn", "a (G, 1, 2, c) array of the members' (x, y)")
    if arr.ndim != 4 or arr.shape[1:3] != (1, 2):
        raise InputError(f"coords_nn must have shape (G, 1, 2, c) holding (x, y), got {arr.shape}")
    return relative_coords(arr)


def get_neighbor_indices(xcoords: Any, ycoords: Any, K: int = 3) -> np.ndarray:
    """PtychoPINN's ``get_neighbor_indices``: (M, K + 1) nearest positions of each (itself first)."""
    return neighbor_indices(xcoords, ycoords, K)


def normalize_data(dset: Mapping[str, Any], N: int) -> np.ndarray:
    """PtychoPINN's ``normalize_data``: ``X_full``, the diffraction scaled to a fixed mean energy.

    ``scale * diffraction`` in float32, with ``scale = sqrt((N/2)**2 / E)``
    rounded to float32, where E is the mean over frames and channels of a
    frame's sum of squared amplitudes, computed in float64 (uint16 counts do
    not overflow).

    Parameters
    ----------
    dset : dict
        Holds ``diffraction`` (G, H, W, ...) real amplitudes.
    N : int
        Patch side in pixels.

    Returns
    -------
    numpy.ndarray, float32, the shape of ``diffraction``

    Raises
    ------
    InputError
        No ``diffraction``, fewer than 3 dimensions, non-finite or all-zero
        values; ``InputTypeError`` for a non-dict or a complex array.
    """
    if not isinstance(dset, Mapping):
        raise InputTypeError(f"dset must be a dict holding 'diffraction', got {type(dset).__name__}")
    if dset.get("diffraction") is None:
        raise InputError(f"dset must hold 'diffraction' (G, H, W, c) amplitudes; present: {', '.join(sorted(dset))}")
    N = _validate.patch_size(N)
    diffraction = _real_array(dset["diffraction"], "diffraction", "an array of real diffraction amplitudes")
    if diffraction.ndim < 3:
        raise InputError(f"diffraction must be (G, H, W) or (G, H, W, c), got shape {diffraction.shape}")
    _validate.finite(diffraction, "diffraction")
    energy = np.mean(np.sum(np.square(diffraction.astype(np.float64)), axis=(1, 2)))
    if not energy > 0:
        raise InputError("diffraction is all zero: there is no energy to normalise")
    scale = np.float32(np.sqrt((N / 2) ** 2 / energy))
    return scale * diffraction.astype(np.float32, copy=False)


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
