"""Stitching at scale: patches read from a Zarr store, per-block canvases summed by a tree reduction.

The normalised stitch of :func:`ptycho.backends.place_patches`,
``place(Y) / (place(1) + eps)``, is a sum over patches, so it splits over
blocks of patches: each task reads one block of ``Y`` (one Zarr chunk of
groups) and its coordinates from the store, places them on its own canvas --
the placed patches and the coverage ``place(1)`` -- and the canvases are
summed pairwise-by-``split_every`` in a fixed tree, then divided once.  Only
canvases (the object's size) travel; the patches are read where the task
runs.  The tree is fixed, so a run gives the same bits every time; it sums
in another order than one in-memory call, so the two agree to rounding.
"""

from __future__ import annotations

import math
import uuid
from typing import Any, Optional

import numpy as np

from ptycho import _validate
from ptycho.dataset import ground_truth_positions
from ptycho.errors import InputError
from ptycho.scale import _plan

__all__ = ["stitch_zarr"]


def _flat(Y: np.ndarray, coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Y (g, N, N, c), cut positions (g, 1, 2, c) -> patches (g*c, N, N), positions (g*c, 2); row g*c + k."""
    g, n, _, c = Y.shape
    patches = np.transpose(Y, (0, 3, 1, 2)).reshape(g * c, n, n)
    positions = np.transpose(np.asarray(coords, dtype=np.float64)[:, 0], (0, 2, 1)).reshape(g * c, 2)
    return patches, positions


def _place_block(Y: Any, offsets: Any, relative: Any, start: int, stop: int, shape: tuple, backend: str) -> tuple:
    """A task: groups ``[start, stop)`` read from the store -> (placed patches, coverage) canvases.

    Each patch goes back where ``Y`` was cut: ``coords_offsets + coords_relative``
    (:func:`ptycho.dataset.ground_truth_positions`).
    """
    from ptycho.backends import get_backend, place_patches

    cut = ground_truth_positions({"coords_offsets": offsets[start:stop], "coords_relative": relative[start:stop]})
    patches, positions = _flat(np.asarray(Y[start:stop]), cut)
    to_numpy = get_backend(backend).to_numpy
    placed = np.asarray(to_numpy(place_patches(patches, positions, shape, backend=backend)))
    coverage = np.asarray(to_numpy(place_patches(np.ones_like(patches), positions, shape, backend=backend))).real
    return placed, coverage


def _sum_parts(*parts: tuple) -> tuple:
    """Sum canvases in the order given (the tree fixes the order, so the bits)."""
    placed, coverage = parts[0][0].copy(), parts[0][1].copy()
    for other_placed, other_coverage in parts[1:]:
        placed += other_placed
        coverage += other_coverage
    return placed, coverage


def _normalise(part: tuple, eps: float) -> dict:
    placed, coverage = part
    return {"object": placed / (coverage + eps), "coverage": coverage.astype(np.float32)}


def _canvas_shape(group: Any, coords: Any, N: int) -> tuple[int, int]:
    """The object's shape when the group holds ``objectGuess``, else the smallest canvas holding every patch."""
    if "objectGuess" in group.array_keys():
        H, W = group["objectGuess"].shape[:2]
        return int(H), int(W)
    xy = np.asarray(coords[...], dtype=np.float64)[:, 0]  # (G, 2, c)
    if not xy.size:
        return N, N
    far = xy.max(axis=(0, 2)) + N / 2
    return max(1, int(math.ceil(far[1])) + 1), max(1, int(math.ceil(far[0])) + 1)


def stitch_zarr(
    store: Any,
    shape: Optional[Any] = None,
    *,
    client: Any = None,
    backend: str = "numpy",
    eps: float = 1e-9,
    split_every: int = 8,
    storage_options: Optional[dict] = None,
) -> dict:
    """The normalised stitch of a grouped Zarr store, block by block on Dask.

    Parameters
    ----------
    store : str, os.PathLike, URL or zarr.Group
        A group written by :func:`ptycho.scale.grouped_to_zarr` (or
        ``ptycho-patches extract -o OUT.zarr``): ``Y`` (G, N, N, c) and
        ``coords_nn`` (G, 1, 2, c), ``coords_offsets`` (G, 1, 2, 1) and
        ``coords_relative`` (G, 1, 2, c); each patch is placed where it was cut,
        ``coords_offsets + coords_relative``.
    shape : (H, W), optional
        The canvas; default: the group's ``objectGuess`` shape if it holds
        one, else the smallest canvas holding every patch.
    client : distributed.Client, optional
        Run the blocks and the reduction on this cluster (the workers read the
        store: it must be reachable from them); without one, Dask's threaded
        scheduler in this process.
    backend : {'numpy', 'jax', 'tensorflow'}
        Engine of each block's ``place_patches``.
    eps : float
        Regulariser: ``object = place(Y) / (place(1) + eps)``.
    split_every : int
        Canvases summed per reduction task (the fan-in of the tree).
    storage_options : dict, optional
        Options of a URL store's fsspec filesystem.

    Returns
    -------
    dict
        ``object`` (H, W) complex (complex64 for complex64 ``Y``) and
        ``coverage`` (H, W) float32, as ``ptycho-patches stitch`` writes them;
        equal to the in-memory stitch of the same patches to rounding
        (another summation order).
    """
    from ptycho.backends import canonical_name

    zarr = _plan.require("zarr")
    dask = _plan.require("dask")
    from ptycho.scale.zarr_store import resolve_store

    backend = canonical_name(backend)
    split_every = _validate.positive_int(split_every, "split_every")
    if split_every < 2:
        raise InputError(f"split_every must be at least 2 (canvases summed per task), got {split_every}")
    eps = float(eps)
    group = store if isinstance(store, zarr.Group) else zarr.open_group(
        resolve_store(store, storage_options), mode="r"
    )
    if not {"Y", "coords_nn", "coords_offsets", "coords_relative"} <= set(group.array_keys()):
        raise InputError(
            f"store: expected a grouped Zarr store with Y and coords_nn, coords_offsets, coords_relative "
            f"(ptycho-patches extract -o OUT.zarr), "
            f"found arrays {sorted(group.array_keys())}"
        )
    Y, coords = group["Y"], group["coords_nn"]
    if Y.ndim != 4 or coords.shape != (Y.shape[0], 1, 2, Y.shape[3]):
        raise InputError(f"store: Y {Y.shape} and coords_nn {coords.shape} do not match (G, N, N, c) / (G, 1, 2, c)")
    offsets, relative = group["coords_offsets"], group["coords_relative"]
    if offsets.shape != (Y.shape[0], 1, 2, 1) or relative.shape != coords.shape:
        raise InputError(
            f"store: coords_offsets {offsets.shape} and coords_relative {relative.shape} do not match "
            f"(G, 1, 2, 1) / (G, 1, 2, c) for Y {Y.shape}"
        )
    cut = ground_truth_positions({"coords_offsets": offsets[...], "coords_relative": relative[...]})
    H, W = _canvas_shape(group, cut, int(Y.shape[1])) if shape is None else _validate.size_pair(shape, "shape")

    run = uuid.uuid4().hex[:12]
    rows = max(1, int(Y.chunks[0]))
    parts = [
        dask.delayed(_place_block)(Y, offsets, relative, start, min(start + rows, Y.shape[0]), (H, W), backend,
                                   dask_key_name=f"ptycho-stitch-block-{run}-{i}")
        for i, start in enumerate(range(0, Y.shape[0], rows))
    ]
    if not parts:
        parts = [dask.delayed(_place_block)(Y, offsets, relative, 0, 0, (H, W), backend,
                                            dask_key_name=f"ptycho-stitch-block-{run}-0")]
    level = 0
    while len(parts) > 1:
        parts = [
            dask.delayed(_sum_parts)(*parts[i:i + split_every], dask_key_name=f"ptycho-stitch-sum-{run}-{level}-{i}")
            for i in range(0, len(parts), split_every)
        ]
        level += 1
    final = dask.delayed(_normalise)(parts[0], eps, dask_key_name=f"ptycho-stitch-{run}")
    if client is not None:
        return client.compute(final).result()
    return final.compute(scheduler="threads")
