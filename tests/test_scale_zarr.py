"""Streaming patches to Zarr: equality with the in-memory engine, attributes, resuming.

Skipped when Zarr is missing, unless ``PTYCHO_TEST_SCALE`` is set (CI installs
the ``scale`` extra and sets it, so a missing Zarr fails there).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import ptycho
from ptycho.backends import extract_patches_grouped
from tests.helpers import require_scale_module, scale_object, scale_positions, scale_raw, scale_reference


zarr = require_scale_module("zarr")

from ptycho.scale import extract_to_zarr, grouped_to_zarr  # noqa: E402

N = 8


_object = scale_object


def _positions(P, seed=1):  # noqa: D103
    return scale_positions(P, seed, far=True)


_reference = scale_reference


@pytest.mark.parametrize("compressor", ["default", None], ids=["zstd", "raw"])
@pytest.mark.parametrize(
    "channels, chunk_size, rows_per_chunk",
    [(1, 64, 64), (1, 10_000, 400), (4, 64, 16), (4, 99, 24), (9, 4096, 44)],
    ids=["c1-chunk64", "c1-one-chunk", "c4-chunk64", "c4-chunk99-rounded", "c9-default-rounded"],
)
def test_stream_equals_in_memory_engine(tmp_path, channels, chunk_size, rows_per_chunk, compressor):
    P = 396 if channels == 9 else 400
    image, positions = _object(), _positions(P)
    out = extract_to_zarr(
        image, positions, N, tmp_path / "p.zarr", channels=channels, chunk_size=chunk_size,
        compressor=compressor,
    )
    channel_axis = channels > 1
    ref = _reference(image, positions, channels, channel_axis)
    assert isinstance(out, zarr.Array)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    assert out.chunks == (min(rows_per_chunk, ref.shape[0]),) + ref.shape[1:]
    assert (len(out.compressors) > 0) == (compressor is not None)
    np.testing.assert_array_equal(out[...], ref)
    reopened = zarr.open_array(tmp_path / "p.zarr", mode="r")
    np.testing.assert_array_equal(reopened[...], ref)


@pytest.mark.parametrize("dtype", [np.complex128, np.float64, np.float32], ids=["complex128", "float64", "float32"])
def test_output_dtype_follows_the_engine(tmp_path, dtype):
    image = _object(np.complex128).real.astype(dtype) if dtype in (np.float64, np.float32) else _object(dtype)
    positions = _positions(100)
    out = extract_to_zarr(image, positions, N, tmp_path / "p.zarr", chunk_size=32)
    ref = _reference(image, positions, 1, False)
    assert out.dtype == ref.dtype
    np.testing.assert_array_equal(out[...], ref)


def test_channel_axis_true_keeps_a_singleton_channel(tmp_path):
    image, positions = _object(), _positions(100)
    out = extract_to_zarr(image, positions, N, tmp_path / "p.zarr", chunk_size=32, channel_axis=True)
    assert out.shape == (100, N, N, 1)
    np.testing.assert_array_equal(out[...], _reference(image, positions, 1, True))


def test_jax_backend_equals_numpy_bit_for_bit(tmp_path):
    pytest.importorskip("jax")
    image, positions = _object(), _positions(300)
    out = extract_to_zarr(image, positions, N, tmp_path / "p.zarr", channels=4, chunk_size=128, backend="jax")
    assert out.attrs["backend"] == "jax"
    np.testing.assert_array_equal(out[...], _reference(image, positions, 4, True))


def test_attributes_describe_the_job(tmp_path):
    from ptycho.scale import _plan

    image, positions = _object(), _positions(400)
    out = extract_to_zarr(image, positions, N, tmp_path / "p.zarr", channels=4, chunk_size=100)
    attrs = dict(out.attrs)
    assert attrs["N"] == N and attrs["channels"] == 4 and attrs["gridsize"] == 2
    assert attrs["backend"] == "numpy"
    assert attrs["ptycho_version"] == ptycho.__version__
    assert attrs["chunk_size"] == 100
    assert attrs["positions_sha256"] == _plan.positions_hash(positions)
    assert attrs["image_sha256"] == _plan.image_hash(image, np.complex64)
    assert attrs["completed_chunks"] == [[0, 4]]  # chunk ids 0..3 as one [first, stop) range
    assert attrs["complete"] is True


def test_a_finished_store_is_not_recomputed(tmp_path):
    image, positions = _object(), _positions(400)
    extract_to_zarr(image, positions, N, tmp_path / "p.zarr", chunk_size=100)
    computed = []
    out = extract_to_zarr(image, positions, N, tmp_path / "p.zarr", chunk_size=100, on_chunk=computed.append)
    assert computed == []
    np.testing.assert_array_equal(out[...], _reference(image, positions, 1, False))


def test_resume_after_a_failure_computes_only_missing_chunks(tmp_path):
    image, positions = _object(), _positions(400)

    def fail_after_two(chunk):
        if chunk == 1:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        extract_to_zarr(image, positions, N, tmp_path / "p.zarr", chunk_size=64, on_chunk=fail_after_two)
    stored = zarr.open_array(tmp_path / "p.zarr", mode="r")
    assert stored.attrs["completed_chunks"] == [[0, 2]] and stored.attrs["complete"] is False
    computed = []
    out = extract_to_zarr(image, positions, N, tmp_path / "p.zarr", chunk_size=64, on_chunk=computed.append)
    assert computed == [2, 3, 4, 5, 6]
    np.testing.assert_array_equal(out[...], _reference(image, positions, 1, False))


_KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from ptycho.scale import extract_to_zarr

    image = np.load(sys.argv[1])
    positions = np.load(sys.argv[2])

    def slow(chunk):
        print(chunk, flush=True)
        time.sleep(0.25)

    extract_to_zarr(image, positions, {N}, sys.argv[3], channels=4, chunk_size=64,
                    compressor=None, on_chunk=slow)
    print("finished", flush=True)
    """
)


def test_killed_run_resumes_to_the_uninterrupted_array(tmp_path):
    image, positions = _object(), _positions(1200)
    np.save(tmp_path / "image.npy", image)
    np.save(tmp_path / "positions.npy", positions)
    script = tmp_path / "writer.py"
    script.write_text(_KILLED_WRITER.format(N=N))
    store = tmp_path / "killed.zarr"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "image.npy"), str(tmp_path / "positions.npy"), str(store)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        seen = [proc.stdout.readline().strip() for _ in range(3)]
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    assert seen == ["0", "1", "2"], proc.stderr
    assert proc.returncode == -signal.SIGKILL

    stored = zarr.open_array(store, mode="r")
    done_before = {i for first, stop in stored.attrs["completed_chunks"] for i in range(first, stop)}
    n_chunks = 1200 // 64 + 1
    assert {0, 1, 2} <= done_before and len(done_before) < n_chunks
    assert stored.attrs["complete"] is False

    computed = []
    resumed = extract_to_zarr(
        image, positions, N, store, channels=4, chunk_size=64, compressor=None, on_chunk=computed.append,
    )
    assert sorted(computed) == sorted(set(range(n_chunks)) - done_before)
    uninterrupted = extract_to_zarr(
        image, positions, N, tmp_path / "whole.zarr", channels=4, chunk_size=64, compressor=None,
    )
    np.testing.assert_array_equal(resumed[...], uninterrupted[...])
    np.testing.assert_array_equal(resumed[...], _reference(image, positions, 4, True))
    assert resumed.attrs["complete"] is True


@pytest.mark.parametrize("change", ["positions", "image", "N", "chunk_size", "channels"])
def test_other_inputs_are_refused_unless_overwrite(tmp_path, change):
    image, positions = _object(), _positions(400)
    extract_to_zarr(image, positions, N, tmp_path / "p.zarr", chunk_size=100, channels=1)
    call = dict(image=image, positions=positions, N=N, chunk_size=100, channels=1)
    call[change] = {
        "positions": positions + 0.5, "image": image * 2, "N": N + 2, "chunk_size": 50, "channels": 4,
    }[change]
    img, pos, n = call.pop("image"), call.pop("positions"), call.pop("N")
    with pytest.raises(ValueError, match="overwrite=True"):
        extract_to_zarr(img, pos, n, tmp_path / "p.zarr", **call)
    out = extract_to_zarr(img, pos, n, tmp_path / "p.zarr", overwrite=True, **call)
    ref = extract_patches_grouped(img, pos, n, channels=call["channels"], backend="numpy")
    np.testing.assert_array_equal(out[...], ref if call["channels"] > 1 else ref[..., 0])


def test_a_group_at_the_store_is_refused(tmp_path):
    zarr.open_group(tmp_path / "g.zarr", mode="w")
    with pytest.raises(ValueError, match="expected a Zarr array"):
        extract_to_zarr(_object(), _positions(40), N, tmp_path / "g.zarr")


def test_array_inside_a_group(tmp_path):
    group = zarr.open_group(tmp_path / "g.zarr", mode="w")
    image, positions = _object(), _positions(100)
    out = extract_to_zarr(image, positions, N, group, path="patches", chunk_size=32)
    np.testing.assert_array_equal(group["patches"][...], _reference(image, positions, 1, False))
    assert out.path == "patches"


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        (dict(compressor="lz4-please"), ValueError, "compressor"),
        (dict(chunk_size=0), ValueError, "chunk_size"),
        (dict(channels=3), ValueError, "multiple of the channel count"),
        (dict(channel_axis=False, channels=4), ValueError, "channel_axis"),
        (dict(backend="cupy-ish"), ValueError, "unknown backend"),
        (dict(overwrite="yes"), TypeError, "overwrite"),
    ],
    ids=["compressor", "chunk_size", "channels", "channel_axis", "backend", "overwrite"],
)
def test_bad_arguments_name_the_argument(tmp_path, kwargs, error, words):
    with pytest.raises(error, match=words):
        extract_to_zarr(_object(), _positions(40), N, tmp_path / "p.zarr", **kwargs)


def test_group_without_path_is_refused(tmp_path):
    group = zarr.open_group(tmp_path / "g.zarr", mode="w")
    with pytest.raises(ValueError, match="path"):
        extract_to_zarr(_object(), _positions(40), N, group)


# ---------------------------------------------------------------------------
# grouped_to_zarr: the grouped dataset, Y streamed
# ---------------------------------------------------------------------------


_raw = scale_raw


@pytest.mark.parametrize(
    "gridsize, batch_size, rows",
    [(1, None, None), (2, 14, 3), (2, 3, 1)],
    ids=["g1-default-batch", "g2-batch14-rounded", "g2-batch3-one-group"],
)
def test_grouped_to_zarr_equals_generate_grouped_data(tmp_path, gridsize, batch_size, rows):
    raw = _raw()
    kwargs = dict(K=6, nsamples=20, gridsize=gridsize, seed=11)
    expected = raw.generate_grouped_data(N, backend="numpy", **kwargs)
    grouped_to_zarr(raw, tmp_path / "g.zarr", N=N, batch_size=batch_size, **kwargs)
    group = zarr.open_group(tmp_path / "g.zarr", mode="r")
    assert set(expected) <= set(group.array_keys())
    assert group.attrs["complete"] is True and group.attrs["N"] == N and group.attrs["gridsize"] == gridsize
    # batch_size patches in whole groups; by default one chunk holds all G < 4096 groups
    assert group["Y"].chunks[0] == (expected["Y"].shape[0] if rows is None else rows)
    for name, value in expected.items():
        assert group[name].dtype == value.dtype, name
        np.testing.assert_array_equal(group[name][...], value, err_msg=name)


def test_grouped_to_zarr_resumes_and_refuses_other_settings(tmp_path):
    raw = _raw()
    kwargs = dict(K=6, nsamples=20, gridsize=2, seed=11)
    grouped_to_zarr(raw, tmp_path / "g.zarr", N=N, batch_size=5, **kwargs)
    grouped_to_zarr(raw, tmp_path / "g.zarr", N=N, batch_size=5, **kwargs)  # finished: a no-op
    with pytest.raises(ValueError, match="overwrite=True"):
        grouped_to_zarr(raw, tmp_path / "g.zarr", N=N, batch_size=5, **dict(kwargs, seed=12))
    grouped_to_zarr(raw, tmp_path / "g.zarr", N=N, batch_size=5, overwrite=True, **dict(kwargs, seed=12))
    expected = raw.generate_grouped_data(N, backend="numpy", **dict(kwargs, seed=12))
    np.testing.assert_array_equal(zarr.open_group(tmp_path / "g.zarr", mode="r")["Y"][...], expected["Y"])


def test_grouped_to_zarr_rewrites_fields_a_killed_run_left_half_written(tmp_path):
    raw = _raw()
    kwargs = dict(K=6, nsamples=20, gridsize=2, seed=11)
    grouped_to_zarr(raw, tmp_path / "g.zarr", N=N, batch_size=8, **kwargs)
    # What a kill among the small fields leaves: no fields record, a field half written.
    group = zarr.open_group(tmp_path / "g.zarr", mode="r+")
    group.attrs.update({"fields_sha256": None, "complete": False})
    group["diffraction"][:5] = 0
    grouped_to_zarr(raw, tmp_path / "g.zarr", N=N, batch_size=8, **kwargs)
    expected = raw.generate_grouped_data(N, backend="numpy", **kwargs)
    group = zarr.open_group(tmp_path / "g.zarr", mode="r")
    np.testing.assert_array_equal(group["diffraction"][...], expected["diffraction"])
    assert group.attrs["complete"] is True


def test_grouped_to_zarr_refuses_another_scan_with_the_same_settings(tmp_path):
    kwargs = dict(K=6, nsamples=20, gridsize=2, seed=11)
    grouped_to_zarr(_raw(seed=3), tmp_path / "g.zarr", N=N, **kwargs)
    with pytest.raises(ValueError, match="other data"):
        grouped_to_zarr(_raw(seed=4), tmp_path / "g.zarr", N=N, **kwargs)


def test_grouped_to_zarr_needs_the_object(tmp_path):
    from ptycho.dataset import RawData

    raw = _raw()
    bare = RawData.from_coords_without_pc(raw.xcoords, raw.ycoords, raw.diff3d, raw.probeGuess, raw.scan_index)
    with pytest.raises(ValueError, match="objectGuess"):
        grouped_to_zarr(bare, tmp_path / "g.zarr", N=N, gridsize=1)


def test_importing_scale_imports_no_heavy_library():
    code = (
        "import sys, ptycho.scale; "
        "print(sorted(m for m in ('zarr', 'dask', 'distributed', 'jax', 'tensorflow') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "ids, ranges",
    [(set(), []), ({0}, [[0, 1]]), ({0, 1, 2, 5, 7, 8}, [[0, 3], [5, 6], [7, 9]])],
    ids=["none", "one", "gaps"],
)
def test_completed_chunk_record_round_trips(ids, ranges):
    from ptycho.scale.zarr_store import _chunk_ids, _chunk_ranges

    assert _chunk_ranges(ids) == ranges
    assert _chunk_ids(ranges) == ids


def test_benchmark_script_runs_at_a_tiny_size(tmp_path, capsys):
    from ptycho.scale import bench

    argv = ["--patches", "96", "--in-memory", "64", "--chunk-size", "32", "--N", "8",
            "--object-side", "48", "--phases", "memory", "zarr-raw", "--work-dir", str(tmp_path)]
    assert bench.main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["memory"]["patches"] == 64
    assert summary["zarr-raw"]["patches"] == 96
    assert summary["zarr-raw"]["logical_GB"] == pytest.approx(96 * 8 * 8 * 8 / 1e9)
    assert summary["zarr-raw"]["peak_rss_mb"] > 0
    assert list(tmp_path.iterdir()) == []  # the store is deleted after the measurement


def test_grouped_overwrite_keeps_old_output_until_new_one_is_complete(tmp_path, monkeypatch):
    """A failing overwrite leaves the previous store intact (issue 6)."""
    pytest.importorskip("zarr")
    import zarr

    from ptycho.scale import grouped_to_zarr
    from ptycho.scale import zarr_store
    from ptycho.simulate import simulate_dataset

    raw = simulate_dataset(object_shape=(48, 48), N=16, n_positions=12, seed=1)
    out = tmp_path / "g.zarr"
    grouped_to_zarr(raw, out, N=16, gridsize=1, backend="numpy")
    before = np.asarray(zarr.open_group(str(out), mode="r")["Y"][:])

    def boom(*args, **kwargs):
        raise RuntimeError("engine failed midway")

    monkeypatch.setattr(zarr_store, "extract_to_zarr", boom)
    with pytest.raises(RuntimeError, match="midway"):
        grouped_to_zarr(raw, out, N=16, gridsize=1, backend="numpy", overwrite=True)
    after = np.asarray(zarr.open_group(str(out), mode="r")["Y"][:])
    np.testing.assert_array_equal(after, before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.zarr"]


def test_auto_is_the_fastest_engine_installed_and_is_recorded(tmp_path, monkeypatch):
    """auto: the NumPy backend's Numba kernel with the fast extra, else the array path; PTYCHO_NUMPY_KERNEL
    of this process is honoured; the store records the engine, the patches are the same bits."""
    from ptycho.backends._numpy import numba_available
    from ptycho.scale import choose_engine

    image, positions = _object(), _positions(300)
    out = extract_to_zarr(image, positions, N, tmp_path / "a.zarr", chunk_size=128)
    fastest = "numpy/numba" if numba_available() else "numpy/array"
    assert out.attrs["engine"]["name"] == choose_engine().name == fastest
    assert out.attrs["engine"]["verified_workers"] == 0
    monkeypatch.setenv("PTYCHO_NUMPY_KERNEL", "array")
    slow = extract_to_zarr(image, positions, N, tmp_path / "b.zarr", chunk_size=128)
    assert slow.attrs["engine"]["name"] == "numpy/array"
    np.testing.assert_array_equal(out[...], slow[...])
    np.testing.assert_array_equal(out[...], _reference(image, positions, 1))
