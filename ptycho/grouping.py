"""Neighbour grouping of a ptychography scan: which scan positions form one sample.

PtychoPINN trains on *groups*: c = gridsize**2 scan positions that lie close
together, stacked as the c channels of one sample.  Two groupings live here:

- PtychoPINN's own, which :class:`ptycho.dataset.RawData` uses:
  :func:`sample_then_group` (its ``_generate_groups_efficiently``) and
  :func:`oversampled_groups` (its ``_generate_groups_with_oversampling``,
  K-choose-c combinations for more groups than positions).  They draw from
  NumPy's *global legacy* generator (``np.random``) with the same calls in the
  same order as PtychoPINN, seeding it when given a seed, so a seed gives
  PtychoPINN's groups exactly (and leaves ``np.random`` where PtychoPINN
  leaves it);
- :func:`group_neighbours`, this package's seed-first grouping with a private
  ``np.random.default_rng``.

:func:`channel_coords` and :func:`relative_coords` give the members'
coordinates in PtychoPINN's channel layout.  This module knows nothing of datasets or files.

Coordinates are object pixels in (x, y) order: x is the column, y the row.
Member k of group g is channel k.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Optional

import numpy as np

from ptycho import _validate
from ptycho.errors import InputError, InputTypeError

__all__ = [
    "sample_then_group",
    "oversampled_groups",
    "neighbor_indices",
    "group_neighbours",
    "channel_coords",
    "relative_coords",
    "legacy_seed",
]

#: PtychoPINN's sign of the coordinates relative to the group centre.
LOCAL_OFFSET_SIGN = -1


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


# ---------------------------------------------------------------------------
# PtychoPINN's grouping (global legacy RNG, PtychoPINN's draws)
# ---------------------------------------------------------------------------


def legacy_seed(seed: Any) -> Optional[int]:
    """``seed`` checked for ``np.random.seed``: None or an integer in [0, 2**32 - 1]."""
    if seed is None:
        return None
    if not _validate._is_integer(seed):
        raise InputTypeError(f"seed must be None or a non-negative integer below 2**32, got {_validate.describe(seed)}")
    if not 0 <= int(seed) < 2**32:
        raise InputError(f"seed must be None or a non-negative integer below 2**32, got {int(seed)}")
    return int(seed)


def _seed_indices(value: Any, M: int) -> Optional[np.ndarray]:
    if value is None:
        return None
    arr = _validate.to_numpy(value, "seed_indices")
    if arr.dtype.kind not in "iu":
        raise InputTypeError(f"seed_indices must be a 1-D integer array of scan indices, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise InputError(f"seed_indices must be 1-D, got shape {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() >= M):
        bad = arr[(arr < 0) | (arr >= M)][0]
        raise InputError(f"seed_indices must index the {M} scan positions (0..{M - 1}), got {bad}")
    return arr


def _group_arguments(coords: Any, nsamples: Any, K: Any, C: Any, seed: Any, seed_indices: Any):
    coords = _coords_2d(coords)
    M = coords.shape[0]
    nsamples = _validate.positive_int(nsamples, "nsamples")
    K = _validate.positive_int(K, "K")
    C = _validate.positive_int(C, "C")
    return coords, M, nsamples, K, C, legacy_seed(seed), _seed_indices(seed_indices, M)


def _check_group_size(M: int, K: int, C: int) -> None:
    if M < C:
        raise InputError(f"the scan has only {M} positions but a group needs C = gridsize**2 = {C} of them")
    if K < C:
        raise InputError(
            f"K={K} must be >= C={C}: the C members of a group are drawn from the K nearest "
            "neighbours of its seed position"
        )


def _neighbour_rows(coords: np.ndarray, seeds: np.ndarray, K: int) -> np.ndarray:
    """(len(seeds), min(K + 1, M)) nearest scan indices of each seed, nearest first (itself, as a rule)."""
    from scipy.spatial import cKDTree

    k = min(K + 1, coords.shape[0])
    _, rows = cKDTree(coords).query(coords[seeds], k=k)
    return np.asarray(rows).reshape(len(seeds), k)


def sample_then_group(
    coords: Any,
    *,
    nsamples: int,
    K: int,
    C: int,
    seed: Optional[int] = None,
    seed_indices: Any = None,
) -> np.ndarray:
    """PtychoPINN's sample-then-group: ``RawData._generate_groups_efficiently``.

    Seeds are drawn first, then each group's C members are drawn without
    replacement from its seed's K nearest *other* positions.

    Parameters
    ----------
    coords : array (M, 2)
        Scan positions, (x, y) in object pixels.
    nsamples : int
        Groups wanted; at most M are formed (all positions, in scan order,
        when nsamples >= M).  Ignored when ``seed_indices`` is given.
    K : int
        Neighbour pool of each seed, the seed itself excluded (K >= C).
    C : int
        Members per group (gridsize**2).  C = 1: the seeds themselves.
    seed : int, optional
        Seeds ``np.random`` (the global legacy generator) first; None draws
        from it as it stands.
    seed_indices : int array (S,), optional
        Seed positions chosen by the caller (sequential sampling); then the
        member draws use ``np.random.seed(0)``, as in PtychoPINN.

    Returns
    -------
    numpy.ndarray (G, C)
        Scan indices; int32 when C > 1, int64 when C = 1 (PtychoPINN's dtypes).
        Members are in the order drawn, not by distance.

    Raises
    ------
    InputError
        M < C or K < C (both ``ValueError``).
    """
    coords, M, nsamples, K, C, seed, seed_indices = _group_arguments(coords, nsamples, K, C, seed, seed_indices)
    if seed is not None and seed_indices is None:
        np.random.seed(seed)
    _check_group_size(M, K, C)
    if seed_indices is not None:
        seeds = seed_indices[: min(len(seed_indices), M)]
        np.random.seed(0)  # PtychoPINN fixes the member draws of a sequential sample
    elif nsamples < M:
        seeds = np.random.choice(np.arange(M), size=nsamples, replace=False)
    else:
        seeds = np.arange(M)  # every position, no draw
    if C == 1:
        return seeds.reshape(-1, 1)

    rows = _neighbour_rows(coords, seeds, K)
    groups = np.zeros((len(seeds), C), dtype=np.int32)
    for i, row in enumerate(rows):
        # Drop the nearest (the seed itself) when the tree returned K + 1.
        pool = row[1 : K + 1] if len(row) > K else row[:K]
        if len(pool) < C:
            pool = np.concatenate([[seeds[i]], pool])
        groups[i] = np.random.choice(pool, size=C, replace=len(pool) < C)
    return groups


def oversampled_groups(
    coords: Any,
    *,
    nsamples: int,
    K: int,
    C: int,
    seed: Optional[int] = None,
    seed_indices: Any = None,
) -> np.ndarray:
    """PtychoPINN's K-choose-C oversampling: ``RawData._generate_groups_with_oversampling``.

    More groups than positions: each seed's K nearest other positions give
    up to comb(K, C) distinct groups.  About twice the seeds needed are drawn;
    their combinations (lexicographic, seed after seed) fill a pool of at
    most 2 * nsamples groups, from which nsamples are drawn (without
    replacement when the pool is large enough).

    Parameters are those of :func:`sample_then_group`; ``seed_indices`` is
    used (its first seeds) only when it holds enough seeds.

    Returns
    -------
    numpy.ndarray (nsamples, C), int64

    Raises
    ------
    InputError
        M < C, K < C, or no seed has C neighbours (``ValueError``).
    """
    coords, M, nsamples, K, C, seed, seed_indices = _group_arguments(coords, nsamples, K, C, seed, seed_indices)
    if seed is not None:
        np.random.seed(seed)
    _check_group_size(M, K, C)
    combos_per_seed = 1 if C == 1 else math.comb(K, C)
    seeds_needed = max(1, -(-nsamples // combos_per_seed))
    n_seeds = min(2 * seeds_needed, M)  # twice the seeds needed, for variety
    if seed_indices is not None and len(seed_indices) >= seeds_needed:
        seeds = seed_indices[:n_seeds]
    elif n_seeds < M:
        seeds = np.random.choice(np.arange(M), size=n_seeds, replace=False)
    else:
        seeds = np.arange(M)
    if C == 1:
        return np.random.choice(seeds, size=nsamples, replace=nsamples > len(seeds)).reshape(-1, 1)

    cap = 2 * nsamples
    pool: list = []
    for s, row in zip(seeds, _neighbour_rows(coords, seeds, K)):
        others = row[1 : K + 1] if len(row) > K else (row[1:] if len(row) > 1 else row)
        members = np.concatenate([[s], others]) if len(others) < C else others[:K]
        if len(members) >= C:
            pool.extend(itertools.islice(itertools.combinations(members.tolist(), C), cap - len(pool)))
        if len(pool) >= cap:
            break
    if not pool:
        raise InputError(f"no seed position has C={C} neighbours to form a group (K={K}, M={M})")
    chosen = np.random.choice(len(pool), size=nsamples, replace=nsamples > len(pool))
    return np.asarray(pool, dtype=np.int64)[chosen]


def neighbor_indices(xcoords: Any, ycoords: Any, K: int = 3) -> np.ndarray:
    """(M, K + 1) indices of each position's K + 1 nearest positions (itself first, as a rule)."""
    x = _coordinates_1d(xcoords, "xcoords")
    y = _coordinates_1d(ycoords, "ycoords")
    if x.shape != y.shape:
        raise InputError(f"ycoords must have the shape of xcoords {x.shape}, got {y.shape}")
    K = _validate.positive_int(K, "K")
    coords = _coords_2d(np.column_stack([x, y]))
    if K + 1 > coords.shape[0]:
        raise InputError(f"K + 1 = {K + 1} neighbours asked of only {coords.shape[0]} scan positions")
    return _neighbour_rows(coords, np.arange(coords.shape[0]), K)


def _coordinates_1d(value: Any, name: str) -> np.ndarray:
    if value is None:
        raise InputTypeError(f"{name} must be a 1-D array of scan coordinates, got None")
    arr = _validate.to_numpy(value, name)
    if arr.dtype.kind not in "iuf":
        raise InputTypeError(f"{name} must be a 1-D real array of scan coordinates, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise InputError(f"{name} must be 1-D (M,), got shape {arr.shape}")
    return arr


def relative_coords(coords_nn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PtychoPINN's ``get_relative_coords``: (centres (G, 1, 2, 1), ``-(coords_nn - centres)`` (G, 1, 2, c)).

    The members relative to their group's centre (the mean of the members),
    with PtychoPINN's sign -1: ``centre + relative`` is the member reflected
    through the centre, where PtychoPINN cuts ``Y``.
    """
    offsets = np.mean(coords_nn, axis=3)[..., None]
    return offsets, LOCAL_OFFSET_SIGN * (coords_nn - offsets)
