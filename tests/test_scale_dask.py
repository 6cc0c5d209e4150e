"""The engine over Dask: graphs, local schedulers and a 2-process LocalCluster.

Skipped when Dask is missing, unless ``PTYCHO_TEST_SCALE`` is set (CI installs
the ``scale`` extra and sets it, so a missing Dask fails there).
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from tests.helpers import local_cluster, require_scale_module, scale_object, scale_positions, scale_raw, scale_reference


dask = require_scale_module("dask")
da = require_scale_module("dask.array")
distributed = require_scale_module("distributed")

from ptycho.scale import dask_extract_patches, grouped_with_dask  # noqa: E402
from ptycho.scale.dask_engine import compute_into  # noqa: E402

N = 8


_object = scale_object


_positions = scale_positions


_reference = scale_reference


@pytest.fixture(scope="module")
def client():
    """One small LocalCluster for the module: 2 single-threaded worker processes."""
    with local_cluster() as c:
        yield c


@pytest.mark.parametrize("scheduler", ["sync", "threads"])
@pytest.mark.parametrize(
    "channels, chunk_size, dtype",
    [(1, 64, np.complex64), (4, 99, np.complex64), (4, 64, np.complex128), (1, 10_000, np.complex64)],
    ids=["c1-complex64", "c4-rounded-chunks", "c4-complex128", "c1-one-chunk"],
)
def test_local_schedulers_equal_in_memory_engine(scheduler, channels, chunk_size, dtype):
    image, positions = _object(dtype), _positions(400)
    arr = dask_extract_patches(image, positions, N, channels=channels, chunk_size=chunk_size)
    ref = _reference(image, positions, channels)
    assert isinstance(arr, da.Array)
    assert arr.shape == ref.shape and arr.dtype == ref.dtype
    assert len(arr.chunks[0]) == -(-400 // min(400, chunk_size - chunk_size % channels))
    assert all(len(c) == 1 for c in arr.chunks[1:])  # cut along the patch axis only
    out = arr.compute(scheduler=scheduler)
    assert type(out) is np.ndarray
    np.testing.assert_array_equal(out, ref)


def test_object_and_positions_are_one_graph_key_each():
    image, positions = _object(shape=(128, 128)), _positions(4000)
    arr = dask_extract_patches(image, positions, N, chunk_size=200)  # 20 tasks
    graph = dict(arr.__dask_graph__())
    assert len(graph) == 20 + 2
    size = len(pickle.dumps(graph))
    # The object (128 KiB) and the positions (62.5 KiB) once, not once per task.
    assert image.nbytes + positions.nbytes < size < 1.5 * (image.nbytes + positions.nbytes)
    holders = [key for key, task in graph.items() if positions.nbytes <= len(pickle.dumps(task))]
    assert len(holders) == 2


def test_compute_into_fills_the_result_in_place():
    image, positions = _object(), _positions(400)
    arr = dask_extract_patches(image, positions, N, channels=4, chunk_size=64)
    np.testing.assert_array_equal(compute_into(arr, progress=True), _reference(image, positions, 4))


@pytest.mark.parametrize(
    "channels, chunk_size", [(1, 50), (4, 64)], ids=["c1", "c4"]
)
def test_local_cluster_equals_in_memory_engine(client, channels, chunk_size):
    image, positions = _object(), _positions(400)
    arr = dask_extract_patches(image, positions, N, channels=channels, chunk_size=chunk_size, client=client)
    out = client.compute(arr).result()
    np.testing.assert_array_equal(out, _reference(image, positions, channels))
    np.testing.assert_array_equal(compute_into(arr, client), _reference(image, positions, channels))


def test_object_is_scattered_to_every_worker_once(client):
    image, positions = _object(seed=5), _positions(400)
    before = set(client.who_has())
    arr = dask_extract_patches(image, positions, N, chunk_size=50, client=client)
    # (the engine's probe tasks, "ptycho-engine-...", are released asynchronously: not data of the run)
    scattered = {key: workers for key, workers in client.who_has().items()
                 if key not in before and not str(key).startswith("ptycho-engine-")}
    # Two new keys, the object and the positions, on both workers before any task runs.
    assert len(scattered) == 2
    assert all(len(workers) == 2 for workers in scattered.values())
    # The graph refers to the object by key only: it is smaller than the object.
    image_big = _object(shape=(128, 128), seed=6)
    big = dask_extract_patches(image_big, positions, N, chunk_size=50, client=client)
    assert len(pickle.dumps(dict(big.__dask_graph__()))) < image_big.nbytes
    np.testing.assert_array_equal(client.compute(arr).result(), _reference(image, positions, 1))


_raw = scale_raw


@pytest.mark.parametrize(
    "gridsize, batch_size, workers",
    [(1, 9, None), (2, None, None), (2, 10, 1)],
    ids=["g1-batch9-threads", "g2-default-threads", "g2-batch10-localcluster1"],
)
def test_grouped_with_dask_equals_generate_grouped_data(gridsize, batch_size, workers):
    raw = _raw()
    kwargs = dict(K=6, nsamples=20, gridsize=gridsize, seed=11)
    expected = raw.generate_grouped_data(N, backend="numpy", **kwargs)
    got = grouped_with_dask(raw, N=N, batch_size=batch_size, workers=workers, progress=True, **kwargs)
    assert set(got) == set(expected)
    for name, value in expected.items():
        assert got[name].dtype == value.dtype, name
        np.testing.assert_array_equal(got[name], value, err_msg=name)


def test_grouped_with_dask_on_a_scheduler_address(client):
    raw = _raw()
    kwargs = dict(K=6, nsamples=20, gridsize=2, seed=11)
    got = grouped_with_dask(raw, N=N, batch_size=3, scheduler=client.scheduler.address, **kwargs)
    np.testing.assert_array_equal(got["Y"], raw.generate_grouped_data(N, backend="numpy", **kwargs)["Y"])


def test_workers_and_scheduler_together_are_refused():
    with pytest.raises(ValueError, match="workers and scheduler"):
        grouped_with_dask(_raw(), N=N, gridsize=1, workers=2, scheduler="tcp://127.0.0.1:1")
