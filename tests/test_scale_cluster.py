"""Dask workers write one Zarr store: equality, no patch data at the client, resuming a killed cluster run.

Skipped when the ``scale`` extra is missing, unless it is demanded
(``PTYCHO_TEST_EXTRAS=scale``; CI demands it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from ptycho.testing import require_extra
from tests.helpers import local_cluster, scale_object, scale_positions, scale_raw, scale_reference

zarr = require_extra("scale", "zarr")
distributed = require_extra("scale", "distributed")

from ptycho.scale import extract_to_zarr, grouped_to_zarr, grouped_with_dask  # noqa: E402

N = 8


_object = scale_object


def _positions(P, seed=1):  # noqa: D103
    return scale_positions(P, seed, far=True)


_reference = scale_reference


@pytest.fixture(scope="module")
def client():
    """2 single-threaded worker processes, as ``--workers 2`` starts them."""
    with local_cluster() as c:
        yield c


class _ResultSizes(distributed.diagnostics.plugin.SchedulerPlugin):
    """Records the size of every task result the scheduler sees (what could reach the client)."""

    name = "ptycho-result-sizes"

    def __init__(self):
        self.sizes = {}

    def start(self, scheduler):
        self.scheduler = scheduler

    def transition(self, key, start, finish, *args, **kwargs):
        if finish == "memory":
            self.sizes[str(key)] = self.scheduler.tasks[key].nbytes


@pytest.mark.parametrize(
    "channels, chunk_size, compressor",
    [(1, 64, "default"), (4, 99, None), (4, 10_000, "default")],
    ids=["c1-chunk64-zstd", "c4-chunk99-rounded-raw", "c4-one-chunk"],
)
def test_workers_write_the_array_of_the_in_process_stream(tmp_path, client, channels, chunk_size, compressor):
    image, positions = _object(), _positions(400)
    done = []
    out = extract_to_zarr(image, positions, N, tmp_path / "c.zarr", channels=channels, chunk_size=chunk_size,
                          compressor=compressor, client=client, on_chunk=done.append)
    local = extract_to_zarr(image, positions, N, tmp_path / "l.zarr", channels=channels, chunk_size=chunk_size,
                            compressor=compressor)
    np.testing.assert_array_equal(out[...], _reference(image, positions, channels))
    np.testing.assert_array_equal(out[...], local[...])
    assert sorted(done) == list(range(len(done))) and len(done) == -(-400 // out.attrs["chunk_size"])
    stored = dict(zarr.open_array(tmp_path / "c.zarr", mode="r").attrs)
    assert stored["complete"] is True and stored["completed_chunks"] == [[0, len(done)]]
    for key in ("positions_sha256", "image_sha256", "chunk_size", "shape", "dtype"):
        assert stored[key] == local.attrs[key], key


def test_the_client_receives_chunk_ids_only(tmp_path, client):
    """Every task result the scheduler holds is a chunk id (bytes), never a block of patches."""
    plugin = _ResultSizes()
    client.register_plugin(plugin)
    image, positions = _object(shape=(64, 64)), _positions(2000)
    block_bytes = 200 * N * N * 8
    try:
        extract_to_zarr(image, positions, N, tmp_path / "c.zarr", chunk_size=200, client=client)
        sizes = client.run_on_scheduler(
            lambda dask_scheduler: dict(dask_scheduler.plugins["ptycho-result-sizes"].sizes)
        )
    finally:
        client.unregister_scheduler_plugin(plugin.name)
    chunk_results = {k: v for k, v in sizes.items() if "ptycho-zarr-chunk" in k}
    assert len(chunk_results) == 10
    # (chunk id, stored flag): ~100 bytes as Dask sizes it, against 100 kB for the block of patches
    assert max(chunk_results.values()) < 1000 < block_bytes


def test_a_store_in_memory_is_refused_on_a_cluster(client):
    with pytest.raises(ValueError, match="workers cannot write"):
        extract_to_zarr(_object(), _positions(40), N, zarr.storage.MemoryStore(), client=client)


def test_a_cluster_resumes_a_stream_and_a_stream_resumes_a_cluster(tmp_path, client):
    image, positions = _object(), _positions(400)

    def stop_at_two(chunk):
        if chunk == 2:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        extract_to_zarr(image, positions, N, tmp_path / "p.zarr", chunk_size=64, on_chunk=stop_at_two)
    computed = []
    out = extract_to_zarr(image, positions, N, tmp_path / "p.zarr", chunk_size=64, client=client,
                          on_chunk=computed.append)
    assert sorted(computed) == [3, 4, 5, 6]
    np.testing.assert_array_equal(out[...], _reference(image, positions, 1))
    # ... and a finished cluster run is not recomputed by a stream either
    again = []
    extract_to_zarr(image, positions, N, tmp_path / "p.zarr", chunk_size=64, on_chunk=again.append)
    assert again == []


class _FailOnMarker(distributed.WorkerPlugin):
    """On each worker: the engine raises for the chunk whose first x is ``marker``."""

    name = "ptycho-fail-on-marker"

    def __init__(self, marker):
        self.marker = marker

    def setup(self, worker):
        from ptycho.scale import _plan

        self.original = original = _plan.extract_block
        marker = self.marker

        def failing(image, positions, **kwargs):
            if positions.shape[0] and positions[0, 0] == marker:
                raise RuntimeError("engine failed on a worker")
            return original(image, positions, **kwargs)

        _plan.extract_block = failing

    def teardown(self, worker):
        from ptycho.scale import _plan

        _plan.extract_block = self.original


def test_a_failed_task_stops_the_run_and_the_rest_resumes(tmp_path, client):
    image, positions = _object(), _positions(640)
    positions[5 * 64, 0] = 12.375  # first position of chunk 5
    client.register_plugin(_FailOnMarker(12.375))
    try:
        with pytest.raises(RuntimeError, match="failed on a worker"):
            extract_to_zarr(image, positions, N, tmp_path / "p.zarr", chunk_size=64, client=client)
    finally:
        client.unregister_worker_plugin(_FailOnMarker.name)
    stored = zarr.open_array(tmp_path / "p.zarr", mode="r")
    recorded = {i for first, stop in stored.attrs["completed_chunks"] for i in range(first, stop)}
    assert 5 not in recorded and stored.attrs["complete"] is False
    computed = []
    out = extract_to_zarr(image, positions, N, tmp_path / "p.zarr", chunk_size=64, client=client,
                          on_chunk=computed.append)
    assert sorted(computed) == sorted(set(range(10)) - recorded) and 5 in computed
    np.testing.assert_array_equal(out[...], _reference(image, positions, 1))


# ---------------------------------------------------------------------------
# A killed cluster run (client and workers, SIGKILL), resumed
# ---------------------------------------------------------------------------

_KILLED_CLUSTER = textwrap.dedent(
    """
    import sys
    import numpy as np
    import distributed
    from ptycho.scale import extract_to_zarr


    class Slow(distributed.WorkerPlugin):
        name = "slow"

        def setup(self, worker):
            import time
            from ptycho.scale import _plan
            original = _plan.extract_block

            def slow(*args, **kwargs):
                time.sleep(0.3)
                return original(*args, **kwargs)

            _plan.extract_block = slow


    if __name__ == "__main__":
        image, positions = np.load(sys.argv[1]), np.load(sys.argv[2])
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                      dashboard_address=":0", silence_logs=50) as cluster, \\
                distributed.Client(cluster) as client:
            client.register_plugin(Slow())
            print("started", flush=True)
            extract_to_zarr(image, positions, {N}, sys.argv[3], channels=4, chunk_size=64,
                            compressor=None, client=client, on_chunk=lambda c: print(c, flush=True))
        print("finished", flush=True)
    """
)


def test_killed_cluster_run_resumes_to_the_uninterrupted_array(tmp_path, client):
    image, positions = _object(), _positions(1200)
    np.save(tmp_path / "image.npy", image)
    np.save(tmp_path / "positions.npy", positions)
    script = tmp_path / "cluster_writer.py"
    script.write_text(_KILLED_CLUSTER.format(N=N))
    store = tmp_path / "killed.zarr"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "image.npy"), str(tmp_path / "positions.npy"), str(store)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        lines = [proc.stdout.readline().strip() for _ in range(4)]  # "started", then 3 recorded chunks
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the client, the scheduler and both workers at once
        _, err = proc.communicate(timeout=60)
    assert lines[0] == "started" and all(line.isdigit() for line in lines[1:]), (lines, err)
    assert proc.returncode == -signal.SIGKILL

    n_chunks = 1200 // 64 + 1
    stored = zarr.open_array(store, mode="r")
    done_before = {i for first, stop in stored.attrs["completed_chunks"] for i in range(first, stop)}
    assert {int(line) for line in lines[1:]} <= done_before
    assert len(done_before) < n_chunks and stored.attrs["complete"] is False

    computed = []
    resumed = extract_to_zarr(image, positions, N, store, channels=4, chunk_size=64, compressor=None,
                              client=client, on_chunk=computed.append)
    assert sorted(computed) == sorted(set(range(n_chunks)) - done_before)  # the written ones are skipped
    uninterrupted = extract_to_zarr(image, positions, N, tmp_path / "whole.zarr", channels=4, chunk_size=64,
                                    compressor=None)
    np.testing.assert_array_equal(resumed[...], uninterrupted[...])
    np.testing.assert_array_equal(resumed[...], _reference(image, positions, 4))
    assert resumed.attrs["complete"] is True


# ---------------------------------------------------------------------------
# grouped_to_zarr on workers: the grouped dataset, Y written by the workers
# ---------------------------------------------------------------------------


_raw = scale_raw


GROUPING = dict(K=6, nsamples=20, gridsize=2, seed=11)


def test_grouped_to_zarr_on_a_client_equals_generate_grouped_data(tmp_path, client):
    raw = _raw()
    expected = raw.generate_grouped_data(N, backend="numpy", **GROUPING)
    grouped_to_zarr(raw, tmp_path / "g.zarr", N=N, batch_size=12, client=client, **GROUPING)
    group = zarr.open_group(tmp_path / "g.zarr", mode="r")
    assert group.attrs["complete"] is True and group["Y"].chunks[0] == 3
    for name, value in expected.items():
        np.testing.assert_array_equal(group[name][...], value, err_msg=name)


def test_grouped_to_zarr_on_a_scheduler_address(tmp_path, client):
    raw = _raw()
    grouped_to_zarr(raw, tmp_path / "g.zarr", N=N, batch_size=8, scheduler=client.scheduler.address, **GROUPING)
    expected = raw.generate_grouped_data(N, backend="numpy", **GROUPING)["Y"]
    np.testing.assert_array_equal(zarr.open_group(tmp_path / "g.zarr", mode="r")["Y"][...], expected)


def test_grouped_to_zarr_with_workers_overwrites_through_a_sibling(tmp_path):
    raw = _raw()
    grouped_to_zarr(raw, tmp_path / "g.zarr", N=N, batch_size=8, **GROUPING)
    grouped_to_zarr(raw, tmp_path / "g.zarr", N=N, batch_size=8, workers=1, overwrite=True,
                    **dict(GROUPING, seed=12))
    expected = raw.generate_grouped_data(N, backend="numpy", **dict(GROUPING, seed=12))["Y"]
    np.testing.assert_array_equal(zarr.open_group(tmp_path / "g.zarr", mode="r")["Y"][...], expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.zarr"]


@pytest.mark.parametrize(
    "kwargs", [dict(workers=2), dict(scheduler="tcp://127.0.0.1:1")], ids=["workers", "scheduler"]
)
def test_a_client_with_workers_or_scheduler_is_refused(tmp_path, client, kwargs):
    with pytest.raises(ValueError, match="one of workers, scheduler and client"):
        grouped_to_zarr(_raw(), tmp_path / "g.zarr", N=N, client=client, **dict(GROUPING, **kwargs))


def test_npz_and_zarr_paths_with_and_without_workers_hold_the_same_Y(tmp_path, client):
    """In memory, on Dask (what an .npz output holds), streamed to .zarr, and written by workers."""
    raw = _raw()
    plain = raw.generate_grouped_data(N, backend="numpy", **GROUPING)["Y"]
    dask_y = grouped_with_dask(raw, N=N, batch_size=8, scheduler=client.scheduler.address, **GROUPING)["Y"]
    grouped_to_zarr(raw, tmp_path / "s.zarr", N=N, batch_size=8, **GROUPING)
    grouped_to_zarr(raw, tmp_path / "w.zarr", N=N, batch_size=8, client=client, **GROUPING)
    for got in (dask_y, *(zarr.open_group(tmp_path / name, mode="r")["Y"][...] for name in ("s.zarr", "w.zarr"))):
        np.testing.assert_array_equal(got, plain)


def test_benchmark_dask_zarr_phase_runs_at_a_tiny_size(tmp_path, capsys):
    import json

    from ptycho.scale import bench

    argv = ["--patches", "96", "--chunk-size", "32", "--N", "8", "--object-side", "48", "--chunk-repeats", "2",
            "--phases", "chunk", "dask-zarr", "--cluster-workers", "1", "--work-dir", str(tmp_path)]
    assert bench.main(argv) == 0
    printed = capsys.readouterr().out
    results = json.loads(printed.strip().splitlines()[-1])
    (run,) = results["dask-zarr"]
    assert run["patches"] == 96 and run["workers"] == 1 and run["complete"] is True
    # what a rerun needs, and a chunk's engine, compression and write apart
    assert printed.startswith("command: python -m ptycho.scale.bench --patches 96") and "load average" in printed
    chunk = results["chunk"]
    assert chunk["patches"] == 64 and chunk["engine"]["name"] == run["engine"]["name"]
    assert min(chunk[f"{k}_us_per_patch"] for k in ("engine", "compress", "write")) > 0
    assert run["engine_ms_per_chunk"] > 0 and run["store_ms_per_chunk"] > 0
    assert run["logical_GB"] == pytest.approx(96 * 8 * 8 * 8 / 1e9)
    assert run["client_peak_rss_mb"] > 0 and run["workers_peak_rss_mb"] > 0
    assert list(tmp_path.iterdir()) == []  # the store is deleted after the measurement


class _WritesElsewhere(distributed.WorkerPlugin):
    """On each worker: the task reports its chunk stored but writes nothing (another filesystem)."""

    name = "ptycho-writes-elsewhere"

    def setup(self, worker):
        from ptycho.scale import zarr_store

        self.original = zarr_store._write_chunk
        zarr_store._write_chunk = lambda image, positions, array, chunk, **kw: (chunk, True)

    def teardown(self, worker):
        from ptycho.scale import zarr_store

        zarr_store._write_chunk = self.original


def test_workers_writing_to_another_filesystem_are_refused_before_recording(tmp_path, client):
    client.register_plugin(_WritesElsewhere())
    try:
        with pytest.raises(ValueError, match="another filesystem"):
            extract_to_zarr(_object(), _positions(400), N, tmp_path / "p.zarr", chunk_size=64, client=client)
    finally:
        client.unregister_worker_plugin(_WritesElsewhere.name)
    assert zarr.open_array(tmp_path / "p.zarr", mode="r").attrs["completed_chunks"] == []


def test_a_relative_path_is_made_absolute_for_the_workers(tmp_path, client, monkeypatch):
    monkeypatch.chdir(tmp_path)
    image, positions = _object(), _positions(200)
    out = extract_to_zarr(image, positions, N, "rel.zarr", chunk_size=64, client=client)
    assert str(out.store).endswith(str(tmp_path / "rel.zarr"))
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "rel.zarr", mode="r")[...],
                                  _reference(image, positions, 1))


# ---------------------------------------------------------------------------
# The engine of a cluster run: chosen once, the fastest installed, verified, reported
# ---------------------------------------------------------------------------


def _single_process(image, positions, channels, kernel, evaluation="compiled"):
    """The single-process NumPy engine with ``kernel`` in evaluation order ``evaluation``."""
    from ptycho.backends import _numpy, extract_patches_grouped

    with _numpy.kernel(kernel):
        return extract_patches_grouped(image, positions, N, channels=channels, backend="numpy",
                                       evaluation=evaluation)


def test_workers_run_the_numba_kernel_bit_for_bit_the_single_process_engine(tmp_path, client, caplog):
    """auto on a cluster whose workers have numba: the Numba kernel, one thread per task, recorded and
    logged; the store equals the single-process engine (both kernels) in the compiled order."""
    require_extra("fast")
    import logging

    image, positions = _object(), _positions(600)
    with caplog.at_level(logging.INFO, logger="ptycho.scale"):
        out = extract_to_zarr(image, positions, N, tmp_path / "c.zarr", channels=4, chunk_size=96, client=client)
    engine = dict(out.attrs)["engine"]
    assert engine == {"name": "numpy/numba", "backend": "numpy", "kernel": "numba", "threads_per_task": 1,
                      "verified_workers": 2}
    assert out.attrs["backend"] == "numpy"
    assert any("engine numpy/numba" in r.getMessage() and "verified bit for bit on 2 workers" in r.getMessage()
               for r in caplog.records)
    # each worker ran the kernel (imported there) on one thread per task
    ran = client.run(lambda: ("ptycho.backends._numba_kernel" in sys.modules, os.environ.get("NUMBA_NUM_THREADS")))
    assert set(ran.values()) == {(True, "1")}
    for kernel in ("numba", "array"):
        np.testing.assert_array_equal(out[...], _single_process(image, positions, 4, kernel))
    # the evaluation order is the single-process engine's: the plain order gives other bits here
    assert not np.array_equal(out[...], _single_process(image, positions, 4, "array", "plain"))


def test_the_engine_is_chosen_once_and_dask_arrays_run_it(client, caplog):
    require_extra("fast")
    import logging

    from ptycho.scale import Engine, choose_engine, dask_extract_patches

    engine = choose_engine("auto", client, N=N)
    assert isinstance(engine, Engine) and engine.name == "numpy/numba" and engine.workers == 2
    assert choose_engine(engine, client) is engine  # chosen once: a verified engine is not probed again
    here = choose_engine(Engine(backend="numpy", kernel="array"), client, N=N)  # one for this process: checked there
    assert here.name == "numpy/array" and here.workers == 2
    image, positions = _object(), _positions(200)
    with caplog.at_level(logging.INFO, logger="ptycho.scale"):
        lazy = dask_extract_patches(image, positions, N, chunk_size=64, client=client)
    assert any("engine numpy/numba" in r.getMessage() for r in caplog.records)
    np.testing.assert_array_equal(client.compute(lazy).result(), _single_process(image, positions, 1, "array")[..., 0])


class _Replace(distributed.WorkerPlugin):
    """On each worker: ptycho.scale._engine.<attribute> = make(original) (restored at teardown)."""

    def __init__(self, name, attribute, make):
        self.name, self.attribute, self.make = name, attribute, make

    def setup(self, worker):
        from ptycho.scale import _engine

        self.original = getattr(_engine, self.attribute)
        setattr(_engine, self.attribute, self.make(self.original))

    def teardown(self, worker):
        from ptycho.scale import _engine

        setattr(_engine, self.attribute, self.original)


def _without_numba(original):
    return lambda: dict(original(), numba=False)


def test_workers_without_numba_all_run_the_array_path_and_say_so(tmp_path, client, caplog, monkeypatch):
    import logging

    client.register_plugin(_Replace("ptycho-no-numba", "worker_facts", _without_numba))
    try:
        image, positions = _object(), _positions(200)
        with caplog.at_level(logging.WARNING, logger="ptycho.scale"):
            out = extract_to_zarr(image, positions, N, tmp_path / "a.zarr", chunk_size=64, client=client)
        assert out.attrs["engine"]["name"] == "numpy/array" and out.attrs["engine"]["verified_workers"] == 2
        assert any("numba is missing on worker(s)" in r.getMessage() for r in caplog.records)
        np.testing.assert_array_equal(out[...], _reference(image, positions, 1))
        monkeypatch.setenv("PTYCHO_NUMPY_KERNEL", "numba")  # asked for explicitly: refused, naming the workers
        with pytest.raises(ImportError, match="needs numba on tcp://"):
            extract_to_zarr(image, positions, N, tmp_path / "b.zarr", chunk_size=64, client=client)
    finally:
        client.unregister_worker_plugin("ptycho-no-numba")


def _wrong_probe(original):
    return lambda engine, image, positions, settings: "0" * 64


def test_a_worker_whose_engine_gives_other_bits_stops_the_run_before_any_chunk(tmp_path, client):
    client.register_plugin(_Replace("ptycho-wrong-probe", "_probe", _wrong_probe))
    try:
        with pytest.raises(ValueError, match="give other bits"):
            extract_to_zarr(_object(), _positions(200), N, tmp_path / "w.zarr", chunk_size=64, client=client)
    finally:
        client.unregister_worker_plugin("ptycho-wrong-probe")
    assert not (tmp_path / "w.zarr").exists()  # refused before the store is made


def _without_jax(original):
    return lambda: dict(original(), jax=False)


def test_an_engine_asked_for_that_a_worker_lacks_is_refused_naming_the_worker(client):
    """--backend jax on workers without JAX (a JAX cluster run itself is bit-exact like the NumPy one: the
    probe compares it; it is left out here for time, JAX's import and compilation on every worker)."""
    from ptycho.scale import choose_engine

    client.register_plugin(_Replace("ptycho-no-jax", "worker_facts", _without_jax))
    try:
        with pytest.raises(ImportError, match=r"backend 'jax' is not installed on tcp://.*ptycho\[jax\]"):
            choose_engine("jax", client, N=N)
    finally:
        client.unregister_worker_plugin("ptycho-no-jax")
