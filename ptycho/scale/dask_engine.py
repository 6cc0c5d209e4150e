"""The engine as a Dask array over chunks of positions.

One task per chunk of positions (whole groups); each task is one engine call.
The object and the positions enter the graph once each: scattered to every
worker (``client.scatter(..., broadcast=True)``) when a ``dask.distributed``
client is given, otherwise as single graph keys every task depends on --
never embedded in each task; each task cuts its own chunk of positions.  Any Dask scheduler runs the graph: the synchronous or
threaded one, a ``LocalCluster``, or an existing cluster (Slurm through
dask-jobqueue, Kubernetes, a scheduler address).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Any, Callable, Iterator, Optional

import numpy as np

from ptycho.errors import InputError, InputTypeError
from ptycho import _validate
from ptycho.scale import _plan

__all__ = ["dask_extract_patches", "grouped_with_dask"]


def _patch_block(
    image: np.ndarray,
    positions: np.ndarray,
    *,
    chunk_patches: int,
    N: int,
    channels: int,
    channel_axis: bool,
    engine: Any,
    interpolation: str,
    padding: int,
    block_id: Any = None,
) -> np.ndarray:
    """The task body: chunk ``block_id[0]`` of the positions -> its patches, a NumPy block.

    Every task receives the whole positions array (shipped once per worker,
    like the object) and cuts its own chunk, so the graph holds no array data.
    It runs ``engine`` (an :class:`ptycho.scale._engine.Engine`), chosen once
    for the whole run.
    """
    start = block_id[0] * chunk_patches
    stop = min(start + chunk_patches, positions.shape[0])
    with engine.running():
        return _plan.extract_block(
            image, positions[start:stop], N=N, channels=channels, channel_axis=channel_axis,
            backend=engine.backend, interpolation=interpolation, padding=padding, pad_to=chunk_patches,
        )


def dask_extract_patches(
    image: Any,
    positions: Any,
    N: int,
    *,
    channels: int = 1,
    chunk_size: int = 4096,
    backend: Any = "auto",
    client: Any = None,
    channel_axis: Optional[bool] = None,
    interpolation: str = "bilinear",
    padding: Optional[int] = None,
) -> Any:
    """A lazy Dask array of the patches at ``positions``, one task per chunk.

    Parameters
    ----------
    image : array (H, W)
        The object, complex64/complex128 (real input is treated as complex).
    positions : array (P, 2)
        (x, y) in object pixels; position ``b*c + k`` is channel k of group b.
    N : int
        Patch side in pixels.
    channels : int
        c; P must be a multiple of c.
    chunk_size : int
        Positions per task, rounded down to whole groups (a multiple of c).
    backend : {'auto', 'numpy', 'jax', 'tensorflow'} or Engine
        Engine run by each task, chosen once now
        (:func:`ptycho.scale.choose_engine`; logged on the ``ptycho.scale``
        logger): ``'auto'`` is the NumPy backend with the Numba kernel when
        every worker has it (the ``fast`` extra), else its array path; JAX or
        TensorFlow (XLA) when asked.  Every value gives the same bits.
    client : distributed.Client, optional
        With a client, the object and the positions are scattered to all its
        workers now, once, and the engine is checked on every worker (a
        probe, bit for bit); compute the array on that client.  Without one,
        each is a single key of the graph, for any scheduler (the engine runs
        in this process).
    channel_axis : bool, optional
        Output (P // c, N, N, c) when True, (P, N, N) when False (c == 1);
        default: True exactly when c > 1.
    interpolation : {'bilinear', 'nearest'}
    padding : int, optional
        Zero padding of the reference definition; default N // 2.

    Returns
    -------
    dask.array.Array
        (P, N, N) or (P // c, N, N, c), complex64 (complex128 for a
        complex128/float64 object), chunked along the first axis only; its
        blocks equal the in-memory engine's patches bit for bit.
    """
    from ptycho.scale._engine import choose_engine

    dask = _plan.require("dask")
    da = _plan.require("dask.array")
    plan = _plan.make_plan(
        image, positions, N, channels=channels, chunk_size=chunk_size,
        channel_axis=channel_axis, interpolation=interpolation, padding=padding,
    )
    engine = choose_engine(backend, client, N=plan.N, channels=plan.channels,
                           interpolation=plan.interpolation, padding=plan.padding, dtype=plan.dtype)
    image_np = np.ascontiguousarray(plan.image)
    positions_np = np.ascontiguousarray(plan.positions)
    if client is not None:
        # One copy of each per worker, sent now; the tasks hold only the keys.
        # Fresh keys per call (hash=False): reusing the key of an equal array
        # scattered earlier races with its release and can lose the data.
        image_ref, positions_ref = (
            client.scatter(a, broadcast=True, hash=False) for a in (image_np, positions_np)
        )
    else:
        image_ref, positions_ref = (
            dask.delayed(a, pure=True, name=f"ptycho-{what}-{dask.base.tokenize(a)}")
            for what, a in (("object", image_np), ("positions", positions_np))
        )

    n_chunks = max(1, plan.n_chunks)
    rows = tuple((stop - start) // plan.channels for start, stop in map(plan.bounds, range(n_chunks)))
    tail = tuple((size,) for size in plan.shape[1:])
    token = dask.base.tokenize(
        image_ref.key, positions_ref.key, plan.chunk_patches, plan.N, plan.channels,
        plan.channel_axis, engine.name, engine.threads, plan.interpolation, plan.padding,
    )
    return da.map_blocks(
        _patch_block, image_ref, positions_ref,
        chunk_patches=plan.chunk_patches, N=plan.N, channels=plan.channels,
        channel_axis=plan.channel_axis, engine=engine, interpolation=plan.interpolation,
        padding=plan.padding, chunks=(rows,) + tail, dtype=plan.dtype,
        meta=np.empty((0,) * len(plan.shape), dtype=plan.dtype),
        name=f"ptycho-patches-{token}",
    )


@contextlib.contextmanager
def _client_for(workers: Any, scheduler: Any) -> Iterator[Any]:
    """A distributed client: a fresh LocalCluster, an existing scheduler, or None."""
    if workers is not None and scheduler is not None:
        raise InputError(
            f"workers and scheduler: give one of them (a LocalCluster of `workers` processes, or "
            f"the address of a running scheduler), got workers={workers!r} and scheduler={scheduler!r}"
        )
    if workers is None and scheduler is None:
        yield None
        return
    distributed = _plan.require("distributed")
    if scheduler is not None:
        if not isinstance(scheduler, str) or not scheduler:
            raise InputTypeError(f"scheduler must be an address such as 'tcp://host:8786', got {scheduler!r}")
        with distributed.Client(scheduler, set_as_default=False) as client:
            yield client
        return
    workers = _validate.positive_int(workers, "workers")
    with distributed.LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True,
        dashboard_address=":0", silence_logs=logging.ERROR,
    ) as cluster, distributed.Client(cluster, set_as_default=False) as client:
        yield client


def compute_into(array: Any, client: Any = None, *, progress: bool = False) -> np.ndarray:
    """Compute a Dask array chunked along axis 0 into one preallocated NumPy array.

    Each block is copied into place as it arrives (no concatenation, so
    memory is the result plus a few blocks), on ``client`` when given, else on
    Dask's threaded scheduler.
    """
    from tqdm import tqdm

    out = np.empty(array.shape, dtype=array.dtype)
    starts = np.concatenate([[0], np.cumsum(array.chunks[0])]).astype(int)
    bar = tqdm(total=array.numblocks[0], unit="chunk", desc="patches (dask)", file=sys.stderr,
               disable=not progress, leave=False)
    with bar:
        if client is None:
            import dask.array as da
            from dask.callbacks import Callback

            def posttask(key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
                if isinstance(key, tuple) and key and str(key[0]).startswith("store-"):
                    bar.update(1)

            with Callback(posttask=posttask):
                da.store(array, out, lock=False, scheduler="threads")
            return out
        distributed = _plan.require("distributed")
        persisted = client.persist(array)
        futures = distributed.futures_of(persisted)
        for future in distributed.as_completed(futures, loop=client.loop):
            index = future.key[1]
            out[starts[index]:starts[index + 1]] = future.result()
            future.release()
            bar.update(1)
    return out


def grouped_with_dask(
    raw: Any,
    *,
    N: int,
    gridsize: int,
    K: Optional[int] = None,
    nsamples: Optional[int] = None,
    seed: Any = None,
    backend: Any = "auto",
    batch_size: Optional[int] = None,
    workers: Optional[int] = None,
    scheduler: Optional[str] = None,
    progress: bool = False,
    on_engine: Optional[Callable[[Any], None]] = None,
) -> dict:
    """``generate_grouped_data`` with ``Y`` computed by Dask over chunks of groups.

    Parameters
    ----------
    raw : ptycho.dataset.RawData
        The scan; ``raw.objectGuess`` is the object ``Y`` is cut from.
    N, gridsize, K, nsamples, seed
        As for ``generate_grouped_data``; same seed, same groups.
    backend : {'auto', 'numpy', 'jax', 'tensorflow'}
        Engine each task runs, chosen once (see :func:`dask_extract_patches`).
    batch_size : int, optional
        Patches per task, rounded down to whole groups (at least one);
        default 4096, as for ``generate_grouped_data``.
    workers : int, optional
        Run on a fresh ``LocalCluster`` of this many single-threaded worker
        processes (closed afterwards).
    scheduler : str, optional
        Run on the running Dask scheduler at this address (for example
        ``'tcp://10.0.0.5:8786'``); its workers need this package installed.
        Neither given: Dask's threaded scheduler in this process.
    progress : bool
        tqdm progress bar (chunks) on stderr.
    on_engine : callable, optional
        Called once with the :class:`ptycho.scale.Engine` chosen for the run
        (what ``ptycho-patches extract`` prints).

    Returns
    -------
    dict
        The fields of ``raw.grouped_fields`` plus ``Y`` (G, N, N, c), the same
        dict as ``raw.generate_grouped_data``, values equal bit for bit.
    """
    from ptycho.scale._engine import choose_engine

    N = _validate.patch_size(N)
    fields = _plan.group_fields(raw, gridsize=gridsize, K=K, nsamples=nsamples, seed=seed, N=N)
    obj = _plan.object_of(raw)
    c = int(gridsize) ** 2
    positions = _plan.grouped_positions(fields, c)
    chunk_patches = _plan.patches_per_chunk(batch_size, c)
    with _client_for(workers, scheduler) as client:
        engine = choose_engine(backend, client, N=N, channels=c, dtype=_plan.complex_dtype_for(obj))
        if on_engine is not None:
            on_engine(engine)
        array = dask_extract_patches(
            obj, positions, N, channels=c, chunk_size=chunk_patches, backend=engine,
            client=client, channel_axis=True,
        )
        fields["Y"] = compute_into(array, client, progress=progress)
    return fields
