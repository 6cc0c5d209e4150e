"""Atomic output and strict NPZ input (ptycho._io)."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ptycho._io import atomic_write, load_npz, save_npz


def _write_text(text):
    def write(tmp):
        tmp.write_text(text)

    return write


def _failing_writer(tmp):
    tmp.write_text("half a fi")  # a partial file, then the failure
    raise RuntimeError("disk full")


def _write_tree(content):
    def write(tmp):
        tmp.mkdir()
        (tmp / "data").write_text(content)

    return write


def _failing_tree_writer(tmp):
    tmp.mkdir()
    (tmp / "data").write_text("partial")
    raise RuntimeError("disk full")


# ---------------------------------------------------------------------------
# atomic_write
# ---------------------------------------------------------------------------


def test_atomic_write_creates_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.txt"
    assert atomic_write(target, _write_text("hello")) == target
    assert target.read_text() == "hello"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_atomic_write_refuses_existing_file_without_overwrite(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(FileExistsError, match="--overwrite") as info:
        atomic_write(target, _write_text("new"))
    assert str(target) in str(info.value)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_atomic_write_overwrite_replaces_file(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    atomic_write(target, _write_text("new"), overwrite=True)
    assert target.read_text() == "new"


@pytest.mark.parametrize("existing", [None, "old"], ids=["fresh", "existing"])
def test_atomic_write_failure_leaves_target_unchanged(tmp_path, existing):
    target = tmp_path / "out.txt"
    if existing is not None:
        target.write_text(existing)
    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, _failing_writer, overwrite=True)
    if existing is None:
        assert not target.exists()
        assert list(tmp_path.iterdir()) == []
    else:
        assert target.read_text() == existing
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_atomic_write_writer_that_writes_nothing_is_an_error(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError, match="did not create"):
        atomic_write(target, lambda tmp: None)
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_temporary_keeps_suffix_and_directory(tmp_path):
    seen = []

    def write(tmp):
        seen.append(tmp)
        tmp.write_bytes(b"x")

    atomic_write(tmp_path / "grouped.npz", write)
    assert seen[0].parent == tmp_path and seen[0].suffix == ".npz" and seen[0].name != "grouped.npz"


def test_atomic_write_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        atomic_write(tmp_path / "nope" / "out.txt", _write_text("x"))


def test_atomic_write_directory_target(tmp_path):
    target = tmp_path / "store.zarr"
    atomic_write(target, _write_tree("v1"))
    assert (target / "data").read_text() == "v1"
    with pytest.raises(FileExistsError, match="--overwrite"):
        atomic_write(target, _write_tree("v2"))
    atomic_write(target, _write_tree("v2"), overwrite=True)
    assert (target / "data").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.zarr"]


def test_atomic_write_directory_failure_keeps_old_tree(tmp_path):
    target = tmp_path / "store.zarr"
    atomic_write(target, _write_tree("v1"))
    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, _failing_tree_writer, overwrite=True)
    assert (target / "data").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.zarr"]


# ---------------------------------------------------------------------------
# save_npz / load_npz
# ---------------------------------------------------------------------------


ARRAYS = {
    "a": np.arange(6, dtype=np.int64).reshape(2, 3),
    "z": (np.arange(4) + 1j * np.arange(4)).astype(np.complex64),
    "f": np.linspace(0, 1, 5),
}


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "compressed"])
@pytest.mark.parametrize("name", ["data.npz", "data"], ids=["npz-suffix", "no-suffix"])
def test_npz_round_trip_exact_name(tmp_path, compressed, name):
    target = tmp_path / name
    save_npz(target, ARRAYS, compressed=compressed)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    loaded = load_npz(target, required=("a",))
    assert sorted(loaded) == sorted(ARRAYS)
    for key, value in ARRAYS.items():
        assert loaded[key].dtype == value.dtype
        np.testing.assert_array_equal(loaded[key], value)


def test_save_npz_refuses_overwrite(tmp_path):
    target = tmp_path / "data.npz"
    save_npz(target, ARRAYS)
    with pytest.raises(FileExistsError, match="overwrite"):
        save_npz(target, {"b": np.zeros(2)})
    np.testing.assert_array_equal(load_npz(target)["a"], ARRAYS["a"])
    save_npz(target, {"b": np.zeros(2)}, overwrite=True)
    assert sorted(load_npz(target)) == ["b"]


def test_save_npz_refuses_object_arrays(tmp_path):
    with pytest.raises(TypeError, match="object"):
        save_npz(tmp_path / "x.npz", {"meta": np.array([{"a": 1}], dtype=object)})
    assert list(tmp_path.iterdir()) == []


def _missing(path):
    return path


def _text_file(path):
    path.write_text("this is not an archive\n")
    return path


def _empty_file(path):
    path.write_bytes(b"")
    return path


def _truncated(path):
    save_npz(path, {"big": np.arange(10000, dtype=np.float64)})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _corrupted_payload(path):
    save_npz(path, {"big": np.arange(10000, dtype=np.float64)})
    data = bytearray(path.read_bytes())
    for i in range(2000, 2100):  # inside the stored array: the CRC no longer matches
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def _object_array(path):
    np.savez(path, meta=np.array([{"a": 1}], dtype=object))
    return path


def _missing_field(path):
    save_npz(path, {"other": np.zeros(3)})
    return path


def _directory(path):
    path.mkdir()
    return path


def _npy_file(path):
    with open(path, "wb") as fh:
        np.save(fh, np.zeros(3))
    return path


@pytest.mark.parametrize(
    "make, required, error, words",
    [
        (_missing, (), FileNotFoundError, "no such file"),
        (_text_file, (), ValueError, "not a readable .npz"),
        (_empty_file, (), ValueError, "not a readable .npz"),
        (_truncated, ("big",), ValueError, "not a readable .npz"),
        (_corrupted_payload, ("big",), ValueError, "corrupt"),
        (_object_array, ("meta",), ValueError, "pickled object array"),
        (_missing_field, ("wanted",), ValueError, "missing required field(s) wanted"),
        (_directory, (), ValueError, "directory"),
        (_npy_file, (), ValueError, "single .npy array"),
    ],
    ids=["missing", "text", "empty", "truncated", "corrupt-crc", "object-array", "missing-field",
         "directory", "npy"],
)
def test_load_npz_errors_name_the_file(tmp_path, make, required, error, words):
    path = make(tmp_path / "broken.npz")
    with pytest.raises(error) as info:
        load_npz(path, required=required)
    message = str(info.value)
    assert str(path) in message
    assert words in message
    assert "\n" not in message


def test_load_npz_skips_unrequested_pickled_field_with_warning(tmp_path):
    path = tmp_path / "ptychopinn.npz"
    np.savez(path, xcoords=np.arange(3.0), meta=np.array([{"a": 1}], dtype=object))
    with pytest.warns(UserWarning, match="skipped field 'meta'"):
        loaded = load_npz(path, required=("xcoords",))
    assert sorted(loaded) == ["xcoords"]


def test_load_npz_without_field_lists_refuses_any_pickled_field(tmp_path):
    path = tmp_path / "ptychopinn.npz"
    np.savez(path, xcoords=np.arange(3.0), meta=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="'meta' is a pickled object array"):
        load_npz(path)


def _open_descriptors_on(path):
    fd_dir = Path("/proc/self/fd")
    if not fd_dir.is_dir():
        pytest.skip("needs /proc/self/fd (Linux) to see open files")
    found = 0
    for fd in fd_dir.iterdir():
        try:
            found += os.readlink(fd) == str(path)
        except OSError:
            pass
    return found


def test_load_npz_reads_eagerly_and_closes_the_file(tmp_path):
    path = tmp_path / "data.npz"
    save_npz(path, ARRAYS)
    loaded = load_npz(path)
    assert _open_descriptors_on(path) == 0
    assert all(type(v) is np.ndarray for v in loaded.values())


def test_saved_archive_is_a_plain_zip(tmp_path):
    path = tmp_path / "data.npz"
    save_npz(path, ARRAYS)
    with zipfile.ZipFile(path) as archive:
        assert sorted(archive.namelist()) == ["a.npy", "f.npy", "z.npy"]
