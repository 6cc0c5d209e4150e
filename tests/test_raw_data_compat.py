"""``ptycho.raw_data`` as a drop-in for PtychoPINN's: same groups, same fields, same errors.

``tests/data/ptychopinn_grouping_v1.npz`` was written by PtychoPINN's own
``RawData.generate_grouped_data`` (hoidn/PtychoPINN at 712c23f, run with its
checkout first on ``PYTHONPATH``) on the 56-position scan it stores
(``xcoords``, ``ycoords``, ``diff3d``, ``objectGuess``; positions 9 and 10
coincide).  For each case of ``CASES`` it holds ``<case>/nn_indices`` and
``<case>/rng_after`` (``np.random.random(2)`` drawn right after the call, the
global generator having been seeded with 99 before it), and for the cases
of ``WITH_Y`` also ``<case>/Y`` and ``<case>/X_full`` (N = 8).  Equality is
exact: values, dtypes and the state PtychoPINN leaves ``np.random`` in.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ptycho.dataset import RawData, get_neighbor_indices, get_relative_coords, normalize_data

FIXTURE = Path(__file__).parent / "data" / "ptychopinn_grouping_v1.npz"
N = 8

#: case: (gridsize, K, nsamples, seed, sequential_sampling, enable_oversampling, neighbor_pool_size)
CASES = {
    "g1-random": (1, 4, 10, 1, False, False, None),
    "g1-all": (1, 4, 500, 2, False, False, None),
    "g2-K4": (2, 4, 10, 1, False, False, None),
    "g2-K7": (2, 7, 20, 5, False, False, None),
    "g2-sequential": (2, 6, 15, None, True, False, None),
    "g2-every-seed": (2, 12, 56, 7, False, False, None),
    "g2-oversampled": (2, 7, 150, 3, False, True, 7),
    "g2-oversampled-sequential": (2, 5, 168, 2, True, True, 6),
    "g3-K9": (3, 9, 12, 4, False, False, None),
    "g3-oversampled": (3, 10, 100, 8, False, True, 10),
    "g2-unseeded": (2, 6, 12, None, False, False, None),
}
WITH_Y = ("g1-random", "g2-K4", "g3-K9")
PTYCHOPINN_KEYS = {
    "diffraction", "Y", "coords_offsets", "coords_relative", "coords_start_offsets", "coords_start_relative",
    "coords_nn", "coords_start_nn", "nn_indices", "objectGuess", "X_full",
}


@pytest.fixture(scope="module")
def golden() -> dict:
    with np.load(FIXTURE) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def scan(golden) -> RawData:
    x, y = golden["xcoords"], golden["ycoords"]
    return RawData(x, y, x, y, golden["diff3d"], np.ones((N, N), np.complex64), np.arange(len(x)),
                   golden["objectGuess"])


@pytest.fixture(autouse=True)
def _keep_global_rng():
    """PtychoPINN's grouping reseeds np.random: leave it as other tests found it."""
    state = np.random.get_state()
    yield
    np.random.set_state(state)


def _kwargs(case: str) -> dict:
    gridsize, K, nsamples, seed, sequential, oversampling, pool = CASES[case]
    return dict(gridsize=gridsize, K=K, nsamples=nsamples, seed=seed, sequential_sampling=sequential,
                enable_oversampling=oversampling, neighbor_pool_size=pool)


# ---------------------------------------------------------------------------
# PtychoPINN's own results
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(CASES))
def test_groups_and_global_rng_equal_ptychopinn(golden, scan, case):
    np.random.seed(99)
    nn = scan.group(**_kwargs(case))
    after = np.random.random(2)
    expected = golden[f"{case}/nn_indices"]
    assert nn.dtype == expected.dtype and nn.shape == expected.shape
    np.testing.assert_array_equal(nn, expected)
    np.testing.assert_array_equal(after, golden[f"{case}/rng_after"])


@pytest.mark.parametrize("case", WITH_Y)
def test_Y_and_X_full_equal_ptychopinn_bit_for_bit(golden, scan, backend, case):
    np.random.seed(99)
    out = scan.generate_grouped_data(N, backend=backend.value, **_kwargs(case))
    np.testing.assert_array_equal(out["nn_indices"], golden[f"{case}/nn_indices"])
    for key in ("Y", "X_full"):
        assert out[key].dtype == golden[f"{case}/{key}"].dtype, key
        assert np.max(np.abs(out[key] - golden[f"{case}/{key}"])) == 0, key


# ---------------------------------------------------------------------------
# The grouped dict
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("gridsize", [1, 2], ids=["g1", "g2"])
def test_keys_shapes_and_dtypes(scan, gridsize):
    c, G = gridsize**2, 6
    out = scan.generate_grouped_data(N, K=5, nsamples=G, seed=0, gridsize=gridsize, backend="numpy")
    assert PTYCHOPINN_KEYS <= set(out) and "sample_indices" not in out
    expected = {
        "diffraction": ((G, N, N, c), np.float32),
        "X_full": ((G, N, N, c), np.float32),
        "Y": ((G, N, N, c), np.complex64),
        "coords_offsets": ((G, 1, 2, 1), np.float64),
        "coords_relative": ((G, 1, 2, c), np.float64),
        "coords_start_offsets": ((G, 1, 2, 1), np.float64),
        "coords_start_relative": ((G, 1, 2, c), np.float64),
        "coords_nn": ((G, 1, 2, c), np.float64),
        "coords_start_nn": ((G, 1, 2, c), np.float64),
        "nn_indices": ((G, c), np.int64 if c == 1 else np.int32),
    }
    assert {k: (out[k].shape, out[k].dtype) for k in expected} == {
        k: (shape, np.dtype(dtype)) for k, (shape, dtype) in expected.items()}
    assert out["objectGuess"] is scan.objectGuess


def test_defaults_are_ptychopinn_K4_one_group(scan):
    out = scan.generate_grouped_data(N, gridsize=2, seed=1, backend="numpy")
    assert out["nn_indices"].shape == (1, 4)


def test_gridsize_falls_back_to_params(scan, monkeypatch):
    from ptycho import params

    monkeypatch.setitem(params.cfg, "gridsize", 1)
    assert scan.generate_grouped_data(N, nsamples=3, seed=0, backend="numpy")["Y"].shape == (3, N, N, 1)


def test_precomputed_Y_is_gathered_not_cut(golden):
    x, y = golden["xcoords"], golden["ycoords"]
    M = len(x)
    per_position = (np.arange(M)[:, None, None, None] + np.zeros((M, N, N, 1))).astype(np.complex64)
    raw = RawData(x, y, x, y, golden["diff3d"], np.ones((N, N), np.complex64), None, golden["objectGuess"],
                  Y=per_position)
    out = raw.generate_grouped_data(N, K=6, nsamples=5, seed=3, gridsize=2, backend="numpy")
    np.testing.assert_array_equal(out["Y"][:, 0, 0, :], out["nn_indices"].astype(np.complex64))


def test_without_object_Y_is_None_and_sample_indices_are_copied(golden):
    x, y = golden["xcoords"], golden["ycoords"]
    raw = RawData.from_coords_without_pc(x, y, golden["diff3d"], np.ones((N, N), np.complex64), None)
    raw.sample_indices = np.arange(4)
    out = raw.generate_grouped_data(N, nsamples=4, seed=0, gridsize=1, backend="numpy")
    assert out["Y"] is None and out["objectGuess"] is None
    np.testing.assert_array_equal(out["sample_indices"], np.arange(4))
    assert out["sample_indices"] is not raw.sample_indices


# ---------------------------------------------------------------------------
# Sampling: sequential, oversampling, seeds
# ---------------------------------------------------------------------------


def test_sequential_sampling_takes_the_first_positions_whatever_the_seed(scan):
    a = scan.group(gridsize=1, nsamples=7, seed=1, sequential_sampling=True)
    b = scan.group(gridsize=1, nsamples=7, seed=2, sequential_sampling=True)
    np.testing.assert_array_equal(a, np.arange(7)[:, None])
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("gridsize, pool", [(2, 5), (2, 8), (3, 10)], ids=["g2-pool5", "g2-pool8", "g3-pool10"])
def test_oversampling_gives_more_distinct_neighbour_groups_than_positions(scan, gridsize, pool):
    c, G = gridsize**2, 3 * len(scan)
    nn = scan.group(gridsize=gridsize, nsamples=G, seed=4, enable_oversampling=True, neighbor_pool_size=pool)
    assert nn.shape == (G, c)
    assert all(len(set(row)) == c for row in nn.tolist())
    # every group lies within some position's `pool` nearest others
    pools = [set(row[1:]) for row in get_neighbor_indices(scan.xcoords, scan.ycoords, K=pool).tolist()]
    assert all(any(set(row) <= p for p in pools) for row in nn.tolist())


@pytest.mark.parametrize("oversampling", [False, True], ids=["standard", "oversampled"])
def test_same_seed_same_groups_other_seed_other_groups(scan, oversampling):
    kwargs = dict(gridsize=2, K=7, nsamples=100 if oversampling else 20, enable_oversampling=oversampling)
    a, b, c = (scan.group(seed=s, **kwargs) for s in (5, 5, 6))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_enable_oversampling_alone_changes_nothing_below_M(scan):
    plain = scan.group(gridsize=2, K=6, nsamples=20, seed=9)
    flagged = scan.group(gridsize=2, K=6, nsamples=20, seed=9, enable_oversampling=True, neighbor_pool_size=8)
    np.testing.assert_array_equal(plain, flagged)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(nsamples=57), "OVERSAMPLING-001"),
        (dict(nsamples=57, enable_oversampling=True, neighbor_pool_size=3), "neighbor_pool_size >= C"),
        (dict(nsamples=5, K=3), "K=3 must be >= C=4"),
    ],
    ids=["oversampling-off", "pool-below-c", "K-below-c"],
)
def test_ptychopinn_refusals_are_value_errors(scan, kwargs, words):
    from ptycho.errors import InputError

    with pytest.raises(InputError, match=words) as info:
        scan.generate_grouped_data(N, gridsize=2, seed=0, backend="numpy", **kwargs)
    assert isinstance(info.value, ValueError)


# ---------------------------------------------------------------------------
# Module functions
# ---------------------------------------------------------------------------


def test_normalize_data_fixes_the_mean_energy_and_handles_counts():
    counts = np.random.default_rng(1).integers(0, 900, (5, 8, 8, 4)).astype(np.uint16)
    out = normalize_data({"diffraction": counts}, 16)
    assert out.dtype == np.float32 and out.shape == counts.shape
    np.testing.assert_array_equal(out, normalize_data({"diffraction": counts.astype(np.float64)}, 16))
    energy = np.mean(np.sum(out.astype(np.float64) ** 2, axis=(1, 2)))
    np.testing.assert_allclose(energy, (16 / 2) ** 2, rtol=1e-6)


def test_relative_coords_have_ptychopinn_sign():
    coords_nn = np.array([[[[0.0, 2.0, 4.0, 6.0], [1.0, 1.0, 3.0, 3.0]]]])
    offsets, relative = get_relative_coords(coords_nn)
    np.testing.assert_array_equal(offsets, [[[[3.0], [2.0]]]])
    np.testing.assert_array_equal(relative, -(coords_nn - offsets))


def test_neighbor_indices_lists_each_position_and_its_K_nearest(scan):
    nn = get_neighbor_indices(scan.xcoords, scan.ycoords, K=3)
    assert nn.shape == (len(scan), 4)
    distinct = np.ones(len(scan), bool)
    distinct[[9, 10]] = False  # two positions coincide: either may come first
    np.testing.assert_array_equal(nn[distinct, 0], np.arange(len(scan))[distinct])


# ---------------------------------------------------------------------------
# Files and the facade
# ---------------------------------------------------------------------------


def test_from_file_metadata_defaults_and_from_files(tmp_path, golden):
    x, y = golden["xcoords"], golden["ycoords"]
    path = tmp_path / "scan.npz"
    np.savez(path, xcoords=x, ycoords=y, diff3d=golden["diff3d"], probeGuess=np.ones((N, N), np.complex64),
             _metadata=json.dumps({"nphotons": 1e9}))
    raw = RawData.from_file(path)
    assert raw.metadata == {"nphotons": 1e9}
    np.testing.assert_array_equal(raw.scan_index, np.zeros(len(x)))
    np.testing.assert_array_equal(raw.xcoords_start, x)
    train, test = RawData.from_files(path, path)
    assert isinstance(train, RawData) and isinstance(test, RawData) and train is not test
    assert str(raw).startswith("RawData:\n  xcoords: (56,)")


def test_raw_data_facade_provides_ptychopinn_names(tf):
    import ptycho.raw_data as raw_data

    for name in ("RawData", "get_image_patches", "get_relative_coords", "get_neighbor_indices", "normalize_data",
                 "_get_image_patches_iterative", "_get_image_patches_batched"):
        assert callable(getattr(raw_data, name)), name
    assert raw_data.local_offset_sign == -1
    assert (raw_data.key_coords_offsets, raw_data.key_coords_relative) == (
        "coords_start_offsets", "coords_start_relative")
    assert raw_data.RawData is RawData and raw_data.normalize_data is normalize_data


def test_all_zero_diffraction_groups_with_zero_x_full():
    """An object-only scan (no recorded diffraction) still groups; X_full is zero, not NaN."""
    from ptycho.dataset import normalize_data
    from ptycho.errors import InputError

    rng = np.random.default_rng(5)
    M = 12
    x, y = rng.uniform(20, 40, M), rng.uniform(20, 40, M)
    obj = np.ones((64, 64), np.complex64)
    raw = RawData.from_coords_without_pc(x, y, np.zeros((M, 8, 8), np.float32), np.ones((8, 8), np.complex64),
                                         np.zeros(M, int), objectGuess=obj)
    out = raw.generate_grouped_data(8, K=4, nsamples=3, gridsize=2, seed=1, backend="numpy")
    assert out["X_full"].dtype == np.float32 and out["X_full"].shape == out["diffraction"].shape
    assert not np.any(out["X_full"])
    with pytest.raises(InputError, match="all zero"):
        normalize_data(out, 8)
