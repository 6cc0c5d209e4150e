"""Calls from several threads at once return the same results as serial calls.

The threaded run comes first, on shapes and patch sizes this test uses only
here, so the threads also race through the first trace and compilation of
their programs (the per-backend compile caches, ``jax.enable_x64`` scoping
for complex128, TensorFlow's function tracing).  The serial run afterwards is
the reference; results must agree bit for bit.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import numpy as np
import pytest

from tests.helpers import assert_close, native_type, random_object, to_numpy

THREADS = 4


def _run_threaded(tasks: list[Callable[[], Any]]) -> list[Any]:
    """Run every task on a pool of THREADS threads, all released at once."""
    barrier = threading.Barrier(min(THREADS, len(tasks)))

    def start(task: Callable[[], Any], wait: bool) -> Any:
        if wait:
            barrier.wait(timeout=60)
        return task()

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        futures = [pool.submit(start, task, i < THREADS) for i, task in enumerate(tasks)]
        return [future.result(timeout=300) for future in futures]


def _extract_tasks(backend_name: str) -> list[Callable[[], Any]]:
    from ptycho.backends import extract_patches, extract_patches_grouped

    tasks = []
    for i in range(8):
        dtype = (np.complex64, np.complex128)[i % 2]
        image = random_object((13, 17), dtype, seed=100 + i)
        rng = np.random.default_rng(i)
        N = (11, 13)[(i // 2) % 2]
        # 5 distinct programs for 8 tasks: some threads race on the same compile
        positions = rng.uniform(-3.0, 18.0, (8, 2))
        if i % 4 == 3:
            tasks.append(lambda im=image, p=positions, n=N: extract_patches_grouped(
                im, p, n, channels=4, backend=backend_name))
        else:
            tasks.append(lambda im=image, p=positions, n=N: extract_patches(im, p, n, backend=backend_name))
    return tasks


def test_extract_patches_threads_match_serial(backend) -> None:
    tasks = _extract_tasks(backend.value)
    threaded = _run_threaded(tasks)
    serial = [task() for task in tasks]
    assert len(threaded) == len(serial) == 8
    for got, ref in zip(threaded, serial):
        assert isinstance(got, native_type(backend.value))
        assert_close(got, to_numpy(ref), dtype=to_numpy(ref).dtype, exact=True)


@pytest.mark.parametrize("chunk", [None, 6], ids=["whole", "chunked"])
def test_get_image_patches_threads_match_serial(tf, chunk) -> None:
    from ptycho.config.config import ModelConfig
    from ptycho.raw_data import get_image_patches

    def task_for(i: int) -> Callable[[], Any]:
        gridsize = 1 + i % 2
        c = gridsize**2
        B = 5 + i
        rng = np.random.default_rng(50 + i)
        obj = random_object((21, 19), (np.complex64, np.complex128)[(i // 2) % 2], seed=i)
        global_offsets = rng.uniform(0.0, 18.0, (B, 1, 2, 1))
        local_offsets = rng.uniform(-2.0, 2.0, (B, 1, 2, c))
        config = ModelConfig(N=9, gridsize=gridsize, patch_extraction_batch_size=chunk)

        def task() -> Any:
            return get_image_patches(obj, global_offsets, local_offsets, config=config)

        return task

    tasks = [task_for(i) for i in range(8)]
    threaded = _run_threaded(tasks)
    serial = [task() for task in tasks]
    for got, ref in zip(threaded, serial):
        assert isinstance(got, tf.Tensor)
        assert_close(got, ref.numpy(), dtype=ref.numpy().dtype, exact=True)
