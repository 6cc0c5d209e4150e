"""RawData: validation, NPZ round trip, PtychoPINN file compatibility."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from ptycho.dataset import RawData

M, H, W, N = 6, 8, 8, 8


def _fields(**overrides):
    rng = np.random.default_rng(3)
    fields = {
        "xcoords": rng.uniform(10, 20, M),
        "ycoords": rng.uniform(10, 20, M),
        "xcoords_start": rng.uniform(10, 20, M),
        "ycoords_start": rng.uniform(10, 20, M),
        "diff3d": rng.random((M, H, W)).astype(np.float32),
        "probeGuess": (rng.random((N, N)) + 1j * rng.random((N, N))).astype(np.complex64),
        "scan_index": np.arange(M),
        "objectGuess": (rng.random((30, 40)) + 1j).astype(np.complex64),
    }
    fields.update(overrides)
    return fields


def _raw(**overrides):
    return RawData(**_fields(**overrides))


def test_valid_dataset_fields_and_dtypes():
    raw = _raw()
    assert len(raw) == M
    for name in ("xcoords", "ycoords", "xcoords_start", "ycoords_start"):
        assert getattr(raw, name).dtype == np.float64 and getattr(raw, name).shape == (M,)
    assert raw.diff3d.shape == (M, H, W) and raw.diff3d.dtype == np.float32
    assert raw.probeGuess.dtype == np.complex64
    assert raw.scan_index.dtype == np.int64
    assert raw.coords.shape == (M, 2)
    np.testing.assert_array_equal(raw.coords[:, 0], raw.xcoords)
    np.testing.assert_array_equal(raw.coords[:, 1], raw.ycoords)


def test_repr_names_sizes():
    text = repr(_raw())
    assert text.startswith("RawData(M=6") and "diff3d=(6, 8, 8) float32" in text and "objectGuess=(30, 40)" in text


BAD = [
    ("xcoords", np.arange(M + 1.0), ValueError, "ycoords must have the shape of xcoords (7,), got (6,)"),
    ("ycoords", np.arange(M + 1.0), ValueError, "ycoords must have the shape of xcoords"),
    ("xcoords", np.zeros((M, 1)), ValueError, "xcoords must be 1-D"),
    ("ycoords", np.r_[np.nan, np.ones(M - 1)], ValueError, "ycoords must be finite"),
    ("xcoords_start", np.r_[np.inf, np.ones(M - 1)], ValueError, "xcoords_start must be finite"),
    ("xcoords", np.ones(M, dtype=complex), TypeError, "xcoords must be"),
    ("xcoords", np.array(["a"] * M), TypeError, "xcoords must be"),
    ("ycoords", None, TypeError, "ycoords must be"),
    ("diff3d", np.zeros((M, H)), ValueError, "diff3d must be 3-D"),
    ("diff3d", np.zeros((M + 1, H, W)), ValueError, "diff3d must hold one frame per scan position"),
    ("diff3d", np.zeros((M, H, W), dtype=np.complex64), TypeError, "diff3d must be"),
    ("diff3d", np.full((M, H, W), np.nan), ValueError, "diff3d must be finite"),
    ("probeGuess", np.ones((N, N + 1), np.complex64), ValueError, "probeGuess must be square"),
    ("probeGuess", np.ones((N,), np.complex64), ValueError, "probeGuess must be a 2-D square"),
    ("probeGuess", None, TypeError, "probeGuess must be"),
    ("objectGuess", np.ones((3, 4, 5), np.complex64), ValueError, "objectGuess must be a 2-D"),
    ("objectGuess", np.ones((0, 5), np.complex64), ValueError, "objectGuess must not be empty"),
    ("scan_index", np.arange(M + 1), ValueError, "scan_index must have shape"),
    ("scan_index", np.arange(M) + 0.5, TypeError, "scan_index must hold integers"),
]


@pytest.mark.parametrize(
    "field, value, error, words", BAD,
    ids=["x-length", "y-length", "x-2d", "y-nan", "xstart-inf", "x-complex", "x-str", "y-none",
         "diff-2d", "diff-count", "diff-complex", "diff-nan", "probe-rect", "probe-1d", "probe-none",
         "object-3d", "object-empty", "scan-index-length", "scan-index-float"],
)
def test_validation_names_field_expected_and_received(field, value, error, words):
    with pytest.raises(error) as info:
        _raw(**{field: value})
    message = str(info.value)
    assert words in message
    assert "got" in message  # what was received


def test_empty_scan_is_refused():
    with pytest.raises(ValueError, match="at least one scan position"):
        RawData.from_coords_without_pc(np.zeros(0), np.zeros(0), np.zeros((0, 4, 4)), np.ones((4, 4)), np.zeros(0, int))


@pytest.mark.parametrize(
    "field, value, dtype",
    [
        ("probeGuess", np.ones((N, N), np.float32), np.complex64),
        ("probeGuess", np.ones((N, N), np.float64), np.complex128),
        ("objectGuess", np.ones((5, 7), np.float32), np.complex64),
        ("diff3d", np.ones((M, H, W), np.uint16), np.float32),
        ("diff3d", np.ones((M, H, W), np.int64), np.float64),
        ("scan_index", np.arange(M, dtype=np.float64), np.int64),
    ],
    ids=["probe-f32", "probe-f64", "object-f32", "diff-u16", "diff-i64", "scan-index-float-integral"],
)
def test_conversions_keep_values(field, value, dtype):
    raw = _raw(**{field: value})
    got = getattr(raw, field)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, value)


def test_from_coords_without_pc_copies_coordinates_to_start():
    f = _fields()
    raw = RawData.from_coords_without_pc(f["xcoords"], f["ycoords"], f["diff3d"], f["probeGuess"], f["scan_index"])
    np.testing.assert_array_equal(raw.xcoords_start, f["xcoords"])
    np.testing.assert_array_equal(raw.ycoords_start, f["ycoords"])
    assert raw.objectGuess is None


@pytest.mark.parametrize("with_object", [True, False], ids=["object", "no-object"])
def test_npz_round_trip(tmp_path, with_object):
    raw = _raw(objectGuess=_fields()["objectGuess"] if with_object else None)
    path = tmp_path / "scan.npz"
    raw.to_file(path)
    back = RawData.from_file(path)
    for name, value in raw.as_dict().items():
        got = getattr(back, name)
        assert got.dtype == value.dtype, name
        np.testing.assert_array_equal(got, value, err_msg=name)
    assert (back.objectGuess is None) == (not with_object)


def test_to_file_refuses_overwrite(tmp_path):
    path = tmp_path / "scan.npz"
    _raw().to_file(path)
    with pytest.raises(FileExistsError, match="overwrite"):
        _raw().to_file(path)
    _raw(scan_index=np.arange(M) + 10).to_file(path, overwrite=True)
    np.testing.assert_array_equal(RawData.from_file(path).scan_index, np.arange(M) + 10)


def test_from_file_minimal_ptychopinn_file_gets_defaults(tmp_path):
    f = _fields()
    path = tmp_path / "minimal.npz"
    np.savez(path, xcoords=f["xcoords"], ycoords=f["ycoords"], diff3d=f["diff3d"], probeGuess=f["probeGuess"])
    raw = RawData.from_file(path)
    np.testing.assert_array_equal(raw.xcoords_start, f["xcoords"])
    np.testing.assert_array_equal(raw.ycoords_start, f["ycoords"])
    np.testing.assert_array_equal(raw.scan_index, np.zeros(M))  # PtychoPINN's default
    assert raw.objectGuess is None and raw.metadata is None


def test_from_file_accepts_newer_diffraction_name(tmp_path):
    f = _fields()
    path = tmp_path / "new.npz"
    np.savez(path, xcoords=f["xcoords"], ycoords=f["ycoords"], diffraction=f["diff3d"], probeGuess=f["probeGuess"])
    np.testing.assert_array_equal(RawData.from_file(path).diff3d, f["diff3d"])


@pytest.mark.parametrize(
    "drop, words",
    [("diff3d", "missing required field diff3d"), ("probeGuess", "missing required field(s) probeGuess"),
     ("xcoords", "missing required field(s) xcoords")],
    ids=["diff3d", "probe", "xcoords"],
)
def test_from_file_missing_field_names_file(tmp_path, drop, words):
    f = {k: v for k, v in _fields().items() if k != drop}
    path = tmp_path / "partial.npz"
    np.savez(path, **f)
    with pytest.raises(ValueError) as info:
        RawData.from_file(path)
    assert str(path) in str(info.value) and words in str(info.value)


def test_from_file_invalid_field_names_file_and_field(tmp_path):
    f = _fields(ycoords=np.arange(M + 2.0))
    path = tmp_path / "bad.npz"
    np.savez(path, **f)
    with pytest.raises(ValueError) as info:
        RawData.from_file(path)
    assert str(info.value).startswith(f"{path}: ycoords must have the shape of xcoords")


def test_from_file_ignores_unrelated_pickled_metadata(tmp_path):
    f = _fields()
    path = tmp_path / "with_meta.npz"
    np.savez(path, **f, meta=np.array([{"beamline": "x"}], dtype=object))
    with pytest.warns(UserWarning, match="meta"):
        raw = RawData.from_file(path)
    assert len(raw) == M


def test_importing_dataset_tools_does_not_import_tensorflow_or_jax():
    code = "import sys, ptycho.dataset, ptycho.simulate, ptycho._io; print('tensorflow' in sys.modules, 'jax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
