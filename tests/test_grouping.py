"""Neighbour grouping (ptycho.grouping) and the grouped fields (ptycho.dataset).

RawData groups as PtychoPINN does (sample-then-group, np.random); the
PtychoPINN-specific cases (oversampling, sequential sampling, its exact draws)
are in tests/test_raw_data_compat.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from ptycho import params
from ptycho.backends import extract_patches
from ptycho.dataset import RawData, generate_grouped_data, ground_truth_positions, load_grouped, save_grouped
from ptycho.grouping import group_neighbours

# A small non-square object (H != W) scanned on a jittered grid.
H, W, N = 40, 56, 16


def _scan(seed: int = 0) -> RawData:
    rng = np.random.default_rng(seed)
    gx, gy = np.meshgrid(np.arange(8.0, 49.0, 6.0), np.arange(8.0, 33.0, 6.0))
    x = gx.ravel() + rng.uniform(-1.5, 1.5, gx.size)
    y = gy.ravel() + rng.uniform(-1.5, 1.5, gy.size)
    # Some positions near and beyond the edge: the zero fill must agree too.
    x[0], y[0] = 1.25, 0.5
    x[-1], y[-1] = W - 0.75, H + 2.0
    M = x.size
    diff3d = rng.random((M, 12, 12)).astype(np.float32)
    obj = (rng.uniform(0.5, 1.0, (H, W)) * np.exp(1j * rng.uniform(-3, 3, (H, W)))).astype(np.complex64)
    probe = np.ones((N, N), np.complex64)
    return RawData.from_coords_without_pc(x, y, diff3d, probe, np.arange(M), obj)


RAW = _scan()
M = len(RAW)


def _distances(coords, seeds):
    return np.hypot(*(coords[None, :, :] - coords[seeds][:, None, :]).transpose(2, 0, 1))


# ---------------------------------------------------------------------------
# group_neighbours
# ---------------------------------------------------------------------------


def test_gridsize_1_default_is_the_scan_itself():
    np.testing.assert_array_equal(RAW.group(gridsize=1), np.arange(M)[:, None])


def test_gridsize_1_nsamples_is_a_sample_without_replacement():
    nn = RAW.group(gridsize=1, nsamples=10, seed=4)
    assert nn.shape == (10, 1) and nn.dtype == np.int64
    assert len(np.unique(nn)) == 10
    np.random.seed(4)  # PtychoPINN's draw: the seeds in the order drawn
    np.testing.assert_array_equal(nn[:, 0], np.random.choice(np.arange(M), size=10, replace=False))


def test_more_samples_than_positions_gridsize_1_gives_every_position_once():
    np.testing.assert_array_equal(RAW.group(gridsize=1, nsamples=3 * M, seed=0), np.arange(M)[:, None])


def test_more_samples_than_positions_gridsize_2_needs_oversampling():
    with pytest.raises(ValueError, match="enable_oversampling=True"):
        RAW.group(gridsize=2, nsamples=3 * M, seed=0)
    nn = RAW.group(gridsize=2, nsamples=3 * M, seed=0, enable_oversampling=True, neighbor_pool_size=6)
    assert nn.shape == (3 * M, 4) and all(len(set(row)) == 4 for row in nn.tolist())


def _seeds(seed: int, nsamples: int) -> np.ndarray:
    np.random.seed(seed)
    return np.random.choice(np.arange(M), size=nsamples, replace=False)


@pytest.mark.parametrize(
    "gridsize, K", [(2, 4), (2, 7), (3, 9), (3, 14)], ids=["g2-K4", "g2-K7", "g3-K9", "g3-K14"]
)
def test_groups_are_drawn_from_the_seeds_K_nearest_others(gridsize, K):
    coords = RAW.coords
    nn = RAW.group(gridsize=gridsize, K=K, nsamples=25, seed=1)
    c = gridsize**2
    assert nn.shape == (25, c)
    seeds = _seeds(1, 25)
    dist = _distances(coords, seeds)  # (G, M)
    kth = np.sort(dist, axis=1)[:, K : K + 1]  # the K-th nearest other position (the seed is the 1st)
    member_dist = np.take_along_axis(dist, nn, axis=1)
    assert np.all(member_dist <= kth + 1e-12)
    assert np.all(member_dist > 0)  # the seed itself is not a member
    assert all(len(set(row)) == c for row in nn.tolist())  # distinct members


@pytest.mark.parametrize("gridsize", [2, 3], ids=["g2", "g3"])
def test_default_K_is_c_the_nearest_other_positions(gridsize):
    c = gridsize**2
    nn = RAW.group(gridsize=gridsize)
    assert nn.shape == (M, c)
    nearest = np.argsort(_distances(RAW.coords, np.arange(M)), axis=1, kind="stable")[:, 1 : c + 1]
    np.testing.assert_array_equal(np.sort(nn, axis=1), np.sort(nearest, axis=1))


@pytest.mark.parametrize(
    "gridsize, K, nsamples", [(1, None, 12), (2, 8, 12), (2, 8, None)], ids=["g1-sample", "g2-K8", "g2-all"]
)
def test_same_seed_same_groups_other_seed_other_groups(gridsize, K, nsamples):
    a = RAW.group(gridsize=gridsize, K=K, nsamples=nsamples, seed=11)
    b = RAW.group(gridsize=gridsize, K=K, nsamples=nsamples, seed=11)
    c = RAW.group(gridsize=gridsize, K=K, nsamples=nsamples, seed=12)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_duplicate_positions_keep_the_seed_first_and_members_distinct():
    coords = np.repeat(np.array([[10.0, 10.0], [20.0, 10.0], [10.0, 20.0]]), 5, axis=0)
    nn = group_neighbours(coords, gridsize=2, K=4)
    np.testing.assert_array_equal(nn[:, 0], np.arange(len(coords)))
    assert all(len(set(row)) == 4 for row in nn.tolist())


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        (dict(gridsize=2, K=3), ValueError, "K=3 must be >= C=4"),
        (dict(gridsize=2, nsamples=0), ValueError, "nsamples must be a positive integer"),
        (dict(gridsize=2, nsamples=2.5), TypeError, "nsamples must be a positive integer"),
        (dict(gridsize=0), ValueError, "gridsize must be a positive integer"),
        (dict(gridsize=2, K=True), TypeError, "K must be a positive integer"),
        (dict(gridsize=7), ValueError, f"the scan has only {M} positions but a group needs C = gridsize**2 = 49"),
        (dict(gridsize=1, seed=-1), ValueError, "seed must be None or a non-negative integer"),
        (dict(gridsize=1, seed=1.5), TypeError, "seed must be None or a non-negative integer"),
    ],
    ids=["K<c", "nsamples-0", "nsamples-float", "gridsize-0", "K-bool", "c>M", "seed-negative", "seed-float"],
)
def test_grouping_argument_errors(kwargs, error, words):
    with pytest.raises(error, match=words.replace("*", r"\*").replace("(", r"\(").replace(")", r"\)")):
        RAW.group(**kwargs)


def test_K_beyond_the_scan_takes_every_other_position():
    nn = RAW.group(gridsize=2, K=M + 5, nsamples=4, seed=0)
    assert nn.shape == (4, 4) and all(len(set(row)) == 4 for row in nn.tolist())


@pytest.mark.parametrize(
    "coords, words",
    [(np.zeros((5, 3)), "shape \\(M, 2\\)"), (np.zeros((0, 2)), "at least one"),
     (np.array([[0.0, np.nan]]), "coords must be finite")],
    ids=["3-columns", "empty", "nan"],
)
def test_group_neighbours_coordinate_errors(coords, words):
    with pytest.raises(ValueError, match=words):
        group_neighbours(coords, gridsize=1)


# ---------------------------------------------------------------------------
# grouped fields and Y
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("gridsize", [1, 2, 3], ids=["g1", "g2", "g3"])
def test_grouped_field_shapes_and_dtypes(gridsize):
    c = gridsize**2
    out = RAW.generate_grouped_data(N, gridsize=gridsize, nsamples=5, K=c + 2 if c > 1 else None, seed=0,
                                    backend="numpy")
    G = 5
    expected = {
        "Y": ((G, N, N, c), np.complex64),
        "coords_nn": ((G, 1, 2, c), np.float64),
        "coords_offsets": ((G, 1, 2, 1), np.float64),
        "coords_relative": ((G, 1, 2, c), np.float64),
        "coords_start_nn": ((G, 1, 2, c), np.float64),
        "coords_start_offsets": ((G, 1, 2, 1), np.float64),
        "coords_start_relative": ((G, 1, 2, c), np.float64),
        "nn_indices": ((G, c), np.int64 if c == 1 else np.int32),  # PtychoPINN's dtypes
        "diffraction": ((G, 12, 12, c), np.float32),
        "X_full": ((G, 12, 12, c), np.float32),
    }
    got = {key: (out[key].shape, out[key].dtype) for key in expected}
    assert got == {key: (shape, np.dtype(dtype)) for key, (shape, dtype) in expected.items()}
    assert isinstance(out["Y"], np.ndarray)


def test_centre_and_relative_coordinates():
    out = RAW.grouped_fields(RAW.group(gridsize=2, K=6, nsamples=8, seed=2))
    np.testing.assert_allclose(out["coords_offsets"][..., 0], out["coords_nn"].mean(axis=3), rtol=0, atol=1e-12)
    # PtychoPINN's sign: relative = -(member - centre)
    np.testing.assert_array_equal(out["coords_relative"], -(out["coords_nn"] - out["coords_offsets"]))
    np.testing.assert_allclose(out["coords_relative"].sum(axis=3), 0, atol=1e-12)


@pytest.fixture(scope="module")
def grouped_numpy():
    return RAW.generate_grouped_data(N, gridsize=2, K=6, nsamples=7, seed=5, backend="numpy")


@pytest.mark.parametrize("k", range(4), ids=[f"member{k}" for k in range(4)])
def test_member_k_is_channel_k_everywhere(grouped_numpy, k):
    out = grouped_numpy
    members = out["nn_indices"][:, k]
    np.testing.assert_array_equal(out["coords_nn"][:, 0, 0, k], RAW.xcoords[members])
    np.testing.assert_array_equal(out["coords_nn"][:, 0, 1, k], RAW.ycoords[members])
    np.testing.assert_array_equal(out["diffraction"][..., k], RAW.diff3d[members])
    # Y is cut where PtychoPINN cuts it: centre + relative = the member reflected through the centre
    centre = out["coords_offsets"][:, 0, :, 0]
    positions = (2 * centre - np.column_stack([RAW.xcoords[members], RAW.ycoords[members]])).astype(np.float32)
    np.testing.assert_array_equal(out["Y"][..., k], extract_patches(RAW.objectGuess, positions, N, backend="numpy"))


def test_Y_on_every_backend_equals_numpy_bit_for_bit(backend, grouped_numpy):
    out = RAW.generate_grouped_data(N, gridsize=2, K=6, nsamples=7, seed=5, backend=backend.value)
    np.testing.assert_array_equal(out["nn_indices"], grouped_numpy["nn_indices"])
    assert out["Y"].dtype == grouped_numpy["Y"].dtype
    assert np.max(np.abs(out["Y"] - grouped_numpy["Y"])) == 0


def test_Y_equals_legacy_loop_bit_for_bit(tf, grouped_numpy):
    from ptycho.raw_data import _get_image_patches_iterative
    from ptycho.tf_helper import _channel_to_flat, pad

    G, c = grouped_numpy["nn_indices"].shape
    gt_padded = pad(tf.constant(RAW.objectGuess[None, :, :, None]), N // 2)
    offsets = grouped_numpy["coords_offsets"] + grouped_numpy["coords_relative"]  # as PtychoPINN sums them
    offsets_f = _channel_to_flat(tf.constant(offsets.astype(np.float32)))
    legacy = _get_image_patches_iterative(gt_padded, offsets_f, N, G, c).numpy()
    assert np.abs(legacy).max() > 0
    assert np.max(np.abs(grouped_numpy["Y"] - legacy)) == 0


@pytest.mark.parametrize("batch_size", [1, 4, 9, 1000], ids=["b1", "b4", "b9", "b1000"])
def test_batch_size_does_not_change_Y(grouped_numpy, batch_size):
    out = RAW.generate_grouped_data(N, gridsize=2, K=6, nsamples=7, seed=5, backend="numpy", batch_size=batch_size)
    np.testing.assert_array_equal(out["Y"], grouped_numpy["Y"])


def test_progress_bar_goes_to_stderr(capsys):
    RAW.generate_grouped_data(N, gridsize=1, nsamples=3, seed=0, backend="numpy", progress=True)
    captured = capsys.readouterr()
    assert "group" in captured.err and captured.out == ""


def test_complex128_object_gives_complex64_Y_like_ptychopinn():
    raw = _scan()
    raw.objectGuess = raw.objectGuess.astype(np.complex128)
    out = raw.generate_grouped_data(N, gridsize=1, nsamples=3, seed=0, backend="numpy")
    assert out["Y"].dtype == np.complex64  # PtychoPINN's canvas, computed in float64 then rounded
    positions = ground_truth_positions(out)[:, 0, :, 0]
    expected = extract_patches(raw.objectGuess, positions, N, backend="numpy").astype(np.complex64)
    np.testing.assert_array_equal(out["Y"][..., 0], expected)


def test_gridsize_defaults_to_params(monkeypatch):
    monkeypatch.setitem(params.cfg, "gridsize", 2)
    out = RAW.generate_grouped_data(N, nsamples=3, seed=0, backend="numpy")
    assert out["Y"].shape == (3, N, N, 4)


def test_without_objectGuess_Y_is_None():
    raw = _scan()
    raw.objectGuess = None
    out = raw.generate_grouped_data(N, gridsize=1, nsamples=4, backend="numpy")
    assert out["Y"] is None and out["objectGuess"] is None and out["X_full"].shape == (4, 12, 12, 1)


def test_module_level_function_matches_method(grouped_numpy):
    out = generate_grouped_data(RAW, N, gridsize=2, K=6, nsamples=7, seed=5, backend="numpy")
    np.testing.assert_array_equal(out["Y"], grouped_numpy["Y"])
    with pytest.raises(TypeError, match="raw must be a RawData"):
        generate_grouped_data({"xcoords": 1}, N)


def test_raw_data_module_reexports_dataset_names(tf):
    import ptycho.raw_data as raw_data

    assert raw_data.RawData is RawData
    assert raw_data.generate_grouped_data is generate_grouped_data
    assert raw_data.group_neighbours is group_neighbours


@pytest.mark.parametrize(
    "nn, error, words",
    [
        (np.array([[0, M]]), ValueError, "nn_indices must index the"),
        (np.array([[0, -1]]), ValueError, "nn_indices must index the"),
        (np.array([[0.0, 1.0]]), TypeError, "integer array"),
        (np.array([0, 1]), ValueError, r"shape \(G, c\)"),
        (np.array([[0, 1, 2]]), ValueError, "gridsize\\*\\*2 columns"),
    ],
    ids=["too-big", "negative", "float", "1-d", "c-not-square"],
)
def test_grouped_fields_checks_indices(nn, error, words):
    with pytest.raises(error, match=words):
        RAW.grouped_fields(nn)


# ---------------------------------------------------------------------------
# grouped NPZ files
# ---------------------------------------------------------------------------


def test_grouped_npz_round_trip(tmp_path, grouped_numpy):
    path = tmp_path / "grouped.npz"
    save_grouped(path, grouped_numpy)
    back = load_grouped(path)
    assert sorted(back) == sorted(grouped_numpy)
    for key, value in grouped_numpy.items():
        assert back[key].dtype == value.dtype, key
        np.testing.assert_array_equal(back[key], value, err_msg=key)
    with pytest.raises(FileExistsError):
        save_grouped(path, grouped_numpy)


def test_save_grouped_needs_the_core_fields(tmp_path, grouped_numpy):
    partial = {k: v for k, v in grouped_numpy.items() if k != "nn_indices"}
    with pytest.raises(ValueError, match="missing field\\(s\\) nn_indices"):
        save_grouped(tmp_path / "g.npz", partial)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "field, words",
    [("coords_offsets", "coords_offsets must have shape (7, 1, 2, 1)"),
     ("Y", "Y must have shape (7, H, W, 4)"), ("diffraction", "diffraction must have shape (7, H, W, 4)")],
    ids=["offsets", "Y", "diffraction"],
)
def test_load_grouped_checks_shapes_agree(tmp_path, grouped_numpy, field, words):
    bad = dict(grouped_numpy)
    bad[field] = bad[field][:3]
    path = tmp_path / "bad.npz"
    save_grouped(path, bad)
    with pytest.raises(ValueError) as info:
        load_grouped(path)
    assert str(path) in str(info.value) and words in str(info.value)
