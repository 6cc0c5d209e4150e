"""Stitching at scale: a grouped Zarr store stitched block by block on Dask, against the in-memory stitch.

Skipped when the ``scale`` extra is missing, unless it is demanded
(``PTYCHO_TEST_EXTRAS=scale``; CI demands it).
"""

from __future__ import annotations

import numpy as np
import pytest

from ptycho.testing import assert_close, require_extra
from tests.helpers import local_cluster, scale_raw

zarr = require_extra("scale", "zarr")
distributed = require_extra("scale", "distributed")

from ptycho.backends import place_patches  # noqa: E402
from ptycho.scale import grouped_to_zarr  # noqa: E402
from ptycho.scale.stitching import stitch_zarr  # noqa: E402

N = 8
GROUPING = dict(K=6, nsamples=40, gridsize=2, seed=11)


def _raw(M=80, seed=3):
    return scale_raw(M, seed)


def _in_memory(group, shape, eps=1e-9):
    """One place_patches call over every patch (what ``ptycho-patches stitch`` computes)."""
    from ptycho.cli.stitch import flat_patches

    patches, positions = flat_patches({k: group[k][...] for k in ("Y", "coords_offsets", "coords_relative")})
    stitched = place_patches(patches, positions, shape, backend="numpy", normalize=True, eps=eps)
    coverage = place_patches(np.ones_like(patches), positions, shape, backend="numpy").real
    return np.asarray(stitched), np.asarray(coverage)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("stitch") / "g.zarr"
    grouped_to_zarr(_raw(), path, N=N, batch_size=12, **GROUPING)  # 3 groups per chunk: 14 blocks
    return path


@pytest.fixture(scope="module")
def client():
    with local_cluster() as c:
        yield c


@pytest.mark.parametrize("split_every", [2, 3, 8, 100], ids=["fan-in2", "fan-in3", "fan-in8", "one-sum"])
def test_tree_reduction_matches_the_in_memory_stitch(store, split_every):
    group = zarr.open_group(store, mode="r")
    shape = (40, 52)
    got = stitch_zarr(store, split_every=split_every)
    stitched, coverage = _in_memory(group, shape)
    assert got["object"].shape == shape and got["object"].dtype == np.complex64
    # float32 sums in another order: the complex64 row of the tolerance table, 1e-6 * max(1, max|ref|)
    assert_close(got["coverage"], coverage.astype(np.float32), dtype=np.float32,
                 atol=1e-6 * max(1.0, float(coverage.max())))
    assert (coverage > 0).mean() > 0.5
    # another summation order: within the complex64 tolerance (measured: 3e-7 with max |ref| 2.5)
    assert_close(got["object"], stitched, dtype=np.complex64)


def test_on_a_cluster_same_bits_as_threads(store, client):
    local = stitch_zarr(store, split_every=4)
    remote = stitch_zarr(store, split_every=4, client=client)
    np.testing.assert_array_equal(remote["object"], local["object"])  # a fixed tree: the same bits
    np.testing.assert_array_equal(remote["coverage"], local["coverage"])


def test_shape_and_input_checks(store, tmp_path):
    got = stitch_zarr(store, shape=(64, 64))
    assert got["object"].shape == (64, 64)
    zarr.open_group(tmp_path / "empty.zarr", mode="w")
    with pytest.raises(ValueError, match="Y and coords_nn"):
        stitch_zarr(tmp_path / "empty.zarr")
    with pytest.raises(ValueError, match="split_every"):
        stitch_zarr(store, split_every=1)
