"""Neighbour grouping of a ptychography scan: which scan positions form one sample.

PtychoPINN trains on *groups*: c = gridsize**2 scan positions that lie close
together, stacked as the c channels of one sample.  :func:`group_neighbours`
forms them (a SciPy ``cKDTree``); :func:`channel_coords` and
:func:`centre_and_relative` give the members' coordinates in PtychoPINN's
channel layout.  The dataset (:class:`ptycho.dataset.RawData`) calls these;
this module knows nothing of datasets or files.

Coordinates are object pixels in (x, y) order: x is the column, y the row.
Member k of group g is channel k.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ptycho import _validate
from ptycho.errors import InputError, InputTypeError

__all__ = ["group_neighbours", "channel_coords", "centre_and_relative"]


def _optional_positive_int(value: Any, name: str) -> Optional[int]:
    return None if value is None else _validate.positive_int(value, name)


def _coords_2d(coords: Any) -> np.ndarray:
    what = "an array of scan positions (M, 2) holding (x, y)"
    if coords is None:
        raise InputTypeError(f"coords must be {what}, got None")
    arr = _validate.to_numpy(coords, "coords")
    if arr.dtype.kind not in "iuf":
        raise InputTypeError(f"coords must be {what} (real numeric dtype), got dtype {arr.dtype}")
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise InputError(f"coords must have shape (M, 2) holding (x, y), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise InputError("coords must hold at least one scan position, got shape (0, 2)")
    _validate.finite(arr, "coords")
    return arr.astype(np.float64, copy=False)


def _rng(seed: Any) -> np.random.Generator:
    """``np.random.default_rng(seed)`` with an error that names ``seed``."""
    if isinstance(seed, (bool, np.bool_)) or isinstance(seed, (str, bytes, float)):
        raise InputTypeError(
            f"seed must be None, a non-negative integer or a numpy Generator, got {seed!r}"
        )
    try:
        return np.random.default_rng(seed)
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"seed must be None, a non-negative integer or a numpy Generator, got {seed!r} ({exc})"
        ) from exc


def _sample(rng: np.random.Generator, M: int, nsamples: int) -> np.ndarray:
    """``nsamples`` indices into M, distinct when possible, in ascending order."""
    picked = rng.choice(M, size=nsamples, replace=nsamples > M)
    return np.sort(picked).astype(np.int64)


def group_neighbours(
    coords: Any,
    *,
    gridsize: int,
    K: Optional[int] = None,
    nsamples: Optional[int] = None,
    seed: Any = None,
) -> np.ndarray:
    """Form groups of c = gridsize**2 neighbouring scan positions.

    Parameters
    ----------
    coords : array (M, 2)
        Scan positions, (x, y) in object pixels.
    gridsize : int
        Groups have c = gridsize**2 members.
    K : int, optional
        gridsize > 1: each group's members are drawn from its seed position's
        K nearest positions, the seed included; requires c <= K <= M.
        Default c: a group is its seed and the seed's c - 1 nearest
        neighbours, the most compact group there is.  A larger K gives more
        varied groups from the same scan.  Ignored for gridsize 1.
    nsamples : int, optional
        The number of groups G.  Default: one group per scan position, in scan
        order (for gridsize 1 that is the scan itself).  Otherwise ``nsamples``
        seed positions are drawn without replacement (with replacement only
        when nsamples > M), in ascending scan order.
    seed : int, numpy.random.Generator or None
        Seeds ``np.random.default_rng``; the same seed gives the same groups.

    Returns
    -------
    numpy.ndarray (G, c), int64
        ``nn_indices[g, k]`` is the scan index of member k of group g.  Member
        0 is the seed position; the others follow in order of distance from it.
    """
    coords = _coords_2d(coords)
    M = coords.shape[0]
    gridsize = _validate.positive_int(gridsize, "gridsize")
    K = _optional_positive_int(K, "K")
    nsamples = _optional_positive_int(nsamples, "nsamples")
    c = gridsize**2
    rng = _rng(seed)

    seeds = np.arange(M, dtype=np.int64) if nsamples is None else _sample(rng, M, nsamples)
    if c == 1:
        return seeds[:, None]

    K = c if K is None else K
    if K < c:
        raise InputError(f"K must be at least c = gridsize**2 = {c} (members are drawn from K neighbours), got K={K}")
    if K > M:
        raise InputError(f"K must not exceed the number of scan positions M = {M}, got K={K}")

    from scipy.spatial import cKDTree

    tree = cKDTree(coords)
    _, neighbours = tree.query(coords[seeds], k=K)
    neighbours = np.asarray(neighbours, dtype=np.int64).reshape(len(seeds), K)

    # Duplicate positions tie at distance 0 and the tree may rank the seed after
    # its twins (or, with more than K twins, leave it out): put it first.
    is_seed = neighbours == seeds[:, None]
    absent = ~is_seed.any(axis=1)
    neighbours[absent, -1] = seeds[absent]
    is_seed[absent, -1] = True
    first = np.argsort(~is_seed, axis=1, kind="stable")
    neighbours = np.take_along_axis(neighbours, first, axis=1)
    others = neighbours[:, 1:]  # (G, K-1), by distance from the seed

    if K > c:
        # c-1 distinct draws out of K-1 per group, vectorised: the smallest of
        # K-1 random keys; sorted afterwards so members stay in distance order.
        pick = np.sort(np.argsort(rng.random(others.shape), axis=1)[:, : c - 1], axis=1)
        others = np.take_along_axis(others, pick, axis=1)
    return np.concatenate([neighbours[:, :1], others[:, : c - 1]], axis=1)


def channel_coords(x: np.ndarray, y: np.ndarray, nn_indices: np.ndarray) -> np.ndarray:
    """(G, 1, 2, c) coordinates of the members of ``nn_indices`` (G, c); axis 2 holds (x, y)."""
    return np.stack([x[nn_indices], y[nn_indices]], axis=1)[:, None, :, :]


def centre_and_relative(coords_nn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(group centres (G, 1, 2, 1), the members relative to them (G, 1, 2, c)) of ``coords_nn``."""
    offsets = np.mean(coords_nn, axis=3, keepdims=True)
    return offsets, coords_nn - offsets
