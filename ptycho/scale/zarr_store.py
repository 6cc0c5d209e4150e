"""Stream patches into a Zarr v3 array, chunk by chunk, resumable after a kill.

The output array is cut along its first axis (patches, or groups in channel
layout) into chunks of whole groups; each chunk is one engine call and one
Zarr chunk.  Memory stays bounded by a couple of chunks whatever the number of
positions: the engine computes chunk i + 1 while a writer thread stores chunk i.

Resuming
--------
The array's attributes record the inputs (a sha256 of the positions and of
the object, N, channels, chunk size, ...) and ``completed_chunks``, the ids of
the chunks whose data are stored, as ``[first, stop)`` ranges (chunks finish
in order, so the record stays a single range and rewriting it stays cheap
however many chunks there are).  A chunk id is recorded only after its data
are written, and both writes are atomic on a local store (Zarr writes a
temporary file and renames it), so after a kill every recorded chunk is
complete; a restart with the same inputs computes only the others and ends
with the array an uninterrupted run writes.  Other inputs are refused (unless
``overwrite=True``): patches from two different jobs never mix.

On a Dask cluster
-----------------
With ``client=`` (a ``distributed.Client``) each chunk is one task that
computes its patches on a worker and writes them straight into the array
(its own Zarr chunk, so concurrent writers never touch the same object); the
task returns only its chunk id.  The client creates the array, records
``completed_chunks`` as the ids come back, and never holds patch data.  The
same record and identity check make a killed cluster run resumable, by a
cluster or by one process.

Where
-----
A local path, a ``file://`` URL, or any fsspec URL (``s3://bucket/run.zarr``,
``gs://...``) with ``storage_options`` for its filesystem; for S3 the endpoint
and credentials also come from the standard AWS environment variables
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_DEFAULT_REGION``), read by botocore on the client and on every worker.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Optional

import numpy as np

from ptycho.errors import InputError, InputTypeError
from ptycho import _validate
from ptycho.scale import _plan

__all__ = ["extract_to_zarr", "grouped_to_zarr", "chunk_timings"]

#: ``format`` attribute of the arrays and groups written here.
FORMAT = "ptycho-patches/1"

#: Attributes that define the data: a resumed run must match them all.
_IDENTITY = (
    "format", "N", "channels", "channel_axis", "chunk_size", "interpolation", "padding",
    "n_positions", "positions_sha256", "image_sha256", "dtype", "shape",
)


def _zarr() -> Any:
    return _plan.require("zarr")


# Wall seconds this process spent per chunk: in the engine and in storing the block
# (Zarr's encoding -- compression included -- and the write).  Read by the benchmark,
# on each worker through ``client.run(chunk_timings)``.
_TIMINGS = {"chunks": 0, "engine_s": 0.0, "store_s": 0.0}
_TIMINGS_LOCK = threading.Lock()


def _add_timing(key: str, seconds: float, chunks: int = 0) -> None:
    with _TIMINGS_LOCK:
        _TIMINGS[key] += seconds
        _TIMINGS["chunks"] += chunks


def chunk_timings(reset: bool = False) -> dict:
    """This process's chunk counters: ``chunks``, ``engine_s``, ``store_s`` (wall seconds, summed).

    ``engine_s`` is the engine's time for the chunks computed here,
    ``store_s`` the time of ``array[rows] = block`` (encoding, compression and
    the write).  ``reset=True`` zeroes them after reading.
    """
    with _TIMINGS_LOCK:
        out = dict(_TIMINGS)
        if reset:
            _TIMINGS.update(chunks=0, engine_s=0.0, store_s=0.0)
    return out


def _compressors(compressor: Any) -> Any:
    """Zarr's ``compressors`` argument for our ``compressor`` argument."""
    if compressor is None:
        return None
    if isinstance(compressor, str):
        if compressor == "default":
            return "auto"
        raise InputError(f"compressor must be 'default', None or a Zarr codec, got {compressor!r}")
    return compressor


def is_url(store: Any) -> bool:
    """True for an fsspec URL such as ``s3://bucket/run.zarr`` (``file://`` included)."""
    return isinstance(store, str) and "://" in store


def _local_path(url: str) -> str:
    """``file:///a/b`` -> ``/a/b`` (Zarr's local store, which creates directories)."""
    return url[len("file://"):]


def resolve_store(store: Any, storage_options: Optional[dict] = None) -> Any:
    """A Zarr store for ``store``: a path stays a path; a URL becomes an ``FsspecStore``.

    ``storage_options`` go to the URL's fsspec filesystem (``s3fs.S3FileSystem``
    for ``s3://``: ``endpoint_url``, ``key``, ``secret``, ``anon``,
    ``client_kwargs``, ...); without them s3fs takes the endpoint and the
    credentials from the standard AWS environment variables.
    """
    if storage_options is not None and not isinstance(storage_options, dict):
        raise InputTypeError(
            f"storage_options must be a dict of fsspec filesystem options, got {type(storage_options).__name__}"
        )
    if isinstance(store, os.PathLike):
        store = os.fspath(store)
    if not is_url(store):
        if storage_options:
            raise InputError(
                f"storage_options: given {sorted(storage_options)}, but the store {store!r} is not a URL "
                f"(storage options configure the filesystem of an fsspec URL such as s3://bucket/run.zarr)"
            )
        # Absolute, so that Dask workers started elsewhere (another directory,
        # another node of a shared filesystem) write to the same place.
        if isinstance(store, str):
            return os.path.abspath(store)
        zarr = _zarr()
        if isinstance(store, zarr.storage.LocalStore) and not store.root.is_absolute():
            return zarr.storage.LocalStore(store.root.absolute(), read_only=store.read_only)
        return store
    if store.startswith("file://"):
        return _local_path(store)
    zarr = _zarr()
    try:
        return zarr.storage.FsspecStore.from_url(store, storage_options=dict(storage_options or {}),
                                                  read_only=False)
    except ImportError as exc:
        raise ImportError(
            f"the output {store!r} needs the fsspec filesystem of its protocol, which is not installed "
            f"({exc}); for s3:// install it with: {_plan.SCALE_EXTRA}"
        ) from exc


def _describe_store(store: Any, path: Optional[str]) -> str:
    where = os.fspath(store) if isinstance(store, (str, os.PathLike)) else repr(store)
    return f"{where}/{path}" if path else where


def _open_existing(store: Any, path: Optional[str]) -> Any:
    """The array at ``store``/``path``, None when nothing is there.

    Raises ValueError when a Zarr node that is not an array is there.
    """
    zarr = _zarr()
    try:
        node = zarr.open(store=store, path=path or "", mode="r+")
    except (FileNotFoundError, KeyError, zarr.errors.NodeNotFoundError):
        return None
    if not isinstance(node, zarr.Array):
        raise InputError(
            f"store: expected a Zarr array (or nothing) at {_describe_store(store, path)}, "
            f"found a {type(node).__name__}; pass overwrite=True to replace it"
        )
    return node


def _chunk_ranges(ids: set) -> list:
    """Chunk ids {0, 1, 2, 5} -> ranges [[0, 3], [5, 6]] (JSON-friendly, compact)."""
    ranges: list = []
    for i in sorted(ids):
        if ranges and ranges[-1][1] == i:
            ranges[-1][1] = i + 1
        else:
            ranges.append([i, i + 1])
    return ranges


def _chunk_ids(ranges: Any) -> set:
    """Inverse of :func:`_chunk_ranges`."""
    return {i for first, stop in ranges for i in range(int(first), int(stop))}


def _identity(plan: _plan.Plan) -> dict:
    return {
        "format": FORMAT,
        "N": plan.N,
        "channels": plan.channels,
        "channel_axis": plan.channel_axis,
        "chunk_size": plan.chunk_patches,
        "interpolation": plan.interpolation,
        "padding": plan.padding,
        "n_positions": plan.n_positions,
        "positions_sha256": _plan.positions_hash(plan.positions),
        "image_sha256": _plan.image_hash(plan.image, plan.dtype),
        "dtype": plan.dtype.name,
        "shape": list(plan.shape),
    }


def _check_resumable(array: Any, identity: dict, where: str) -> None:
    attrs = dict(array.attrs)
    differ = [
        f"{key}: stored {attrs.get(key)!r}, now {identity[key]!r}"
        for key in _IDENTITY
        if attrs.get(key) != identity[key]
    ]
    if differ:
        raise InputError(
            f"store: the array at {where} was written from other inputs, so it cannot be resumed "
            f"({'; '.join(differ)}); pass overwrite=True to replace it"
        )


def extract_to_zarr(
    image: Any,
    positions: Any,
    N: int,
    store: Any,
    *,
    channels: int = 1,
    chunk_size: int = 4096,
    backend: Any = "auto",
    compressor: Any = "default",
    overwrite: bool = False,
    progress: bool = False,
    channel_axis: Optional[bool] = None,
    interpolation: str = "bilinear",
    padding: Optional[int] = None,
    path: Optional[str] = None,
    on_chunk: Optional[Callable[[int], None]] = None,
    storage_options: Optional[dict] = None,
    client: Any = None,
) -> Any:
    """Cut the patches at ``positions`` into a Zarr v3 array, one chunk at a time.

    Parameters
    ----------
    image : array (H, W)
        The object, complex64/complex128 (real input is treated as complex).
    positions : array (P, 2)
        (x, y) in object pixels; position ``b*c + k`` is channel k of group b.
    N : int
        Patch side in pixels.
    store : str, os.PathLike, zarr store or zarr.Group
        Where the array goes: a directory path (a local Zarr store), an fsspec
        URL (``s3://bucket/run.zarr``, ``gs://...``, ``file://...``), a Zarr
        store, or a group (with ``path``).
    channels : int
        c; P must be a multiple of c.
    chunk_size : int
        Positions per chunk (one engine call, one Zarr chunk), rounded down to
        whole groups (a multiple of c, at least c).  Memory use is a few
        chunks: about 60 kB per position at N = 32 on NumPy.
    backend : {'auto', 'numpy', 'jax', 'tensorflow'} or Engine
        Engine, chosen once for the run (:func:`ptycho.scale.choose_engine`)
        and recorded in the ``engine`` attribute: ``'auto'`` is the NumPy
        backend with the Numba kernel when it is installed (here, or on every
        worker of ``client``; checked there bit for bit on a probe), else its
        array path; JAX or TensorFlow (XLA) when asked.  All give the same
        values bit for bit.
    compressor : 'default', None or a Zarr codec
        'default' is Zarr's default compressor (Zstandard); None stores raw bytes.
    overwrite : bool
        Replace whatever is at ``store``/``path``.  Without it, an array there
        written from the same inputs is resumed, and anything else is refused.
    progress : bool
        tqdm progress bar on stderr.
    channel_axis : bool, optional
        Output (P // c, N, N, c) when True, (P, N, N) when False (c == 1);
        default: True exactly when c > 1.
    interpolation : {'bilinear', 'nearest'}
    padding : int, optional
        Zero padding of the reference definition; default N // 2.
    path : str, optional
        Path of the array inside ``store`` (required when ``store`` is a group).
    on_chunk : callable, optional
        Called with the chunk id after that chunk's data and its record are
        stored (from the writer thread; with a client, in the calling thread).
    storage_options : dict, optional
        Options of the URL's fsspec filesystem (for ``s3://``: s3fs's
        ``endpoint_url``, ``key``, ``secret``, ``anon``, ``client_kwargs``...);
        endpoint and credentials otherwise come from the standard AWS
        environment variables.  Only with a URL ``store``.
    client : distributed.Client, optional
        Compute and write the chunks on this Dask cluster: one task per
        missing chunk, run on a worker, which writes the chunk into the store
        itself and returns only its id (the store must be reachable from the
        workers under the same name: a shared filesystem or an object store).
        The object and the positions are sent once to every worker.  Without
        a client the chunks are computed here, one after the other.

    Returns
    -------
    zarr.Array
        (P, N, N) or (P // c, N, N, c), complex64 (complex128 for a
        complex128/float64 object), chunked along the first axis, with
        attributes ``N``, ``channels``, ``gridsize``, ``backend``, ``engine``
        (the engine of the last run: ``name``, ``backend``, ``kernel``,
        ``threads_per_task``, ``verified_workers``), ``ptycho_version``, ``positions_sha256``, ``image_sha256``,
        ``chunk_size``, ``completed_chunks`` (ranges ``[first, stop)`` of
        chunk ids) and ``complete``.

    Raises
    ------
    ValueError
        An array from other inputs (or another kind of node) is at
        ``store``/``path`` and ``overwrite`` is False; or a bad argument.
    """
    import ptycho
    from ptycho.scale._engine import choose_engine

    zarr = _zarr()
    plan = _plan.make_plan(
        image, positions, N, channels=channels, chunk_size=chunk_size,
        channel_axis=channel_axis, interpolation=interpolation, padding=padding,
    )
    compressors = _compressors(compressor)
    if not isinstance(overwrite, (bool, np.bool_)):
        raise InputTypeError(f"overwrite must be True or False, got {overwrite!r}")
    if isinstance(store, zarr.Group):
        if not path:
            raise InputError("path: expected the name of the array inside the zarr.Group given as store, got None")
        if storage_options:
            raise InputError("storage_options: the zarr.Group given as store has its store already; drop them")
        store, path = store.store, f"{store.path}/{path}".strip("/")
    if isinstance(store, os.PathLike):
        store = os.fspath(store)
    where = _describe_store(store, path)
    store = resolve_store(store, storage_options)
    if client is not None:
        _check_shared_store(store, where)
    identity = _identity(plan)
    engine = choose_engine(backend, client, N=plan.N, channels=plan.channels,
                           interpolation=plan.interpolation, padding=plan.padding, dtype=plan.dtype)

    array = None if overwrite else _open_existing(store, path)
    if array is not None:
        _check_resumable(array, identity, where)
        array.attrs.update({"backend": engine.backend, "engine": engine.as_dict()})
    else:
        attributes = dict(
            identity,
            gridsize=_plan.gridsize_of(plan.channels),
            backend=engine.backend,
            engine=engine.as_dict(),
            ptycho_version=ptycho.__version__,
            completed_chunks=[],
            complete=False,
        )
        array = zarr.create_array(
            store=store, name=path, shape=plan.shape, chunks=plan.chunks, dtype=plan.dtype,
            compressors=compressors, fill_value=0, attributes=attributes,
            overwrite=bool(overwrite),
        )

    done = _chunk_ids(array.attrs.get("completed_chunks", []))
    todo = [i for i in range(plan.n_chunks) if i not in done]
    if todo and client is not None:
        _write_on_cluster(array, plan, todo, done, engine=engine, client=client,
                          progress=progress, on_chunk=on_chunk)
    elif todo:
        _stream(array, plan, todo, done, engine=engine, progress=progress, on_chunk=on_chunk)
    if not array.attrs.get("complete", False):
        array.attrs.update({"complete": True})
    return array


def _stream(
    array: Any,
    plan: _plan.Plan,
    todo: list,
    done: set,
    *,
    engine: Any,
    progress: bool,
    on_chunk: Optional[Callable[[int], None]],
) -> None:
    """Compute the chunks ``todo`` in order; a writer thread stores each one.

    At most one chunk waits for the writer while the next is computed, so
    memory holds two chunks plus the engine's working set.  The chunk id joins
    ``completed_chunks`` only after its data are stored.
    """
    from tqdm import tqdm

    def store_chunk(chunk: int, block: np.ndarray) -> None:
        begin = time.perf_counter()
        array[plan.rows(chunk)] = block
        _add_timing("store_s", time.perf_counter() - begin)
        done.add(chunk)
        array.attrs.update({"completed_chunks": _chunk_ranges(done)})
        if on_chunk is not None:
            on_chunk(chunk)

    completed_positions = sum(
        plan.bounds(i)[1] - plan.bounds(i)[0] for i in done if i < plan.n_chunks
    )
    pending: Optional[Future] = None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ptycho-zarr-writer") as writer, tqdm(
        total=plan.n_positions, initial=completed_positions, unit="patch", unit_scale=True,
        desc="patches -> zarr", file=sys.stderr, disable=not progress, leave=False,
    ) as bar:
        try:
            for chunk in todo:
                start, stop = plan.bounds(chunk)
                begin = time.perf_counter()
                with engine.running():
                    block = _plan.extract_block(
                        plan.image, plan.positions[start:stop], N=plan.N, channels=plan.channels,
                        channel_axis=plan.channel_axis, backend=engine.backend,
                        interpolation=plan.interpolation, padding=plan.padding,
                        pad_to=plan.chunk_patches,
                    )
                _add_timing("engine_s", time.perf_counter() - begin, chunks=1)
                if pending is not None:
                    pending.result()  # re-raises a failed write here
                    bar.update(previous)
                pending = writer.submit(store_chunk, chunk, block)
                previous = stop - start
            if pending is not None:
                pending.result()
                bar.update(previous)
        finally:
            if pending is not None and not pending.done():
                pending.cancel()


def _check_shared_store(store: Any, where: str) -> None:
    """Refuse a store that the workers of a cluster cannot reach (one in this process's memory)."""
    zarr = _zarr()
    if isinstance(store, zarr.storage.MemoryStore) or (
        isinstance(store, zarr.storage.FsspecStore) and getattr(store.fs, "protocol", None) in ("memory", ("memory",))
    ):
        raise InputError(
            f"store: {where} lives in this process's memory, where Dask workers cannot write; "
            f"give a path on a shared filesystem or an object-store URL (s3://bucket/run.zarr)"
        )


def _write_chunk(
    image: np.ndarray,
    positions: np.ndarray,
    array: Any,
    chunk: int,
    *,
    chunk_patches: int,
    N: int,
    channels: int,
    channel_axis: bool,
    engine: Any,
    interpolation: str,
    padding: int,
) -> tuple[int, bool]:
    """A cluster task: compute chunk ``chunk`` and write it into ``array``.

    Runs on a Dask worker.  ``image`` and ``positions`` are the whole arrays
    (sent once per worker); the task cuts its own positions and runs
    ``engine`` (:class:`ptycho.scale._engine.Engine`), the one chosen and
    verified for the run.  The chunk's rows are exactly one Zarr chunk, so no
    other task writes the same object.

    Returns ``(chunk, stored)``: ``stored`` is False when every patch of the
    chunk is zero (positions far outside the object), a chunk that Zarr does
    not store (it equals the fill value).
    """
    start = chunk * chunk_patches
    stop = min(start + chunk_patches, positions.shape[0])
    begin = time.perf_counter()
    with engine.running():
        block = _plan.extract_block(
            image, positions[start:stop], N=N, channels=channels, channel_axis=channel_axis,
            backend=engine.backend, interpolation=interpolation, padding=padding, pad_to=chunk_patches,
        )
    computed = time.perf_counter()
    array[start // channels:stop // channels] = block
    _add_timing("engine_s", computed - begin, chunks=1)
    _add_timing("store_s", time.perf_counter() - computed)
    return chunk, bool(np.any(block))


def _chunk_visible(array: Any, chunk: int) -> bool:
    """Whether Zarr chunk ``chunk`` (along the first axis) exists in ``array``'s store."""
    from zarr.core.sync import sync

    key = array.metadata.encode_chunk_key((chunk,) + (0,) * (array.ndim - 1))
    return bool(sync(array.store.exists(f"{array.path}/{key}" if array.path else key)))


def _write_on_cluster(
    array: Any,
    plan: _plan.Plan,
    todo: list,
    done: set,
    *,
    engine: Any,
    client: Any,
    progress: bool,
    on_chunk: Optional[Callable[[int], None]],
) -> None:
    """Run one :func:`_write_chunk` task per chunk in ``todo`` on ``client``'s cluster.

    The client receives ``(chunk id, stored)`` pairs only, never patches.
    Each batch of ids that comes back is
    checked (every chunk a worker stored must be visible here: workers that
    write to another filesystem than this process are refused, before their
    chunks are recorded) and added to ``completed_chunks`` (one small
    metadata write): a chunk is recorded only after its task has stored it,
    so a kill at any moment leaves a record that a resumed run can trust.  A
    failing task stops the run after the chunks finished so far are recorded.
    """
    from tqdm import tqdm

    distributed = _plan.require("distributed")
    # One copy of the object and of the positions per worker, sent now; fresh
    # keys (hash=False), as in dask_extract_patches.
    image_ref, positions_ref = (
        client.scatter(np.ascontiguousarray(a), broadcast=True, hash=False)
        for a in (plan.image, plan.positions)
    )
    run = uuid.uuid4().hex[:12]
    settings = dict(
        chunk_patches=plan.chunk_patches, N=plan.N, channels=plan.channels,
        channel_axis=plan.channel_axis, engine=engine, interpolation=plan.interpolation,
        padding=plan.padding,
    )
    futures = [
        client.submit(_write_chunk, image_ref, positions_ref, array, chunk, key=f"ptycho-zarr-chunk-{run}-{chunk}",
                      **settings)
        for chunk in todo
    ]
    completed_positions = sum(plan.bounds(i)[1] - plan.bounds(i)[0] for i in done if i < plan.n_chunks)
    bar = tqdm(total=plan.n_positions, initial=completed_positions, unit="patch", unit_scale=True,
               desc="patches -> zarr (dask)", file=sys.stderr, disable=not progress, leave=False)
    try:
        with bar:
            for batch in distributed.as_completed(futures, loop=client.loop).batches():
                finished, error = [], None
                for future in batch:
                    try:
                        chunk, stored = future.result()
                    except Exception as exc:  # a task failed: record the others, then raise
                        error = error or exc
                    else:
                        if stored and not _chunk_visible(array, chunk):
                            error = error or InputError(
                                f"store: a worker wrote chunk {chunk} of {array.store} but this process does "
                                f"not see it there: the workers write to another filesystem; give a path on a "
                                f"filesystem they share with this process, or an object-store URL "
                                f"(s3://bucket/run.zarr)"
                            )
                        else:
                            finished.append(chunk)
                    future.release()
                if finished:
                    done.update(finished)
                    array.attrs.update({"completed_chunks": _chunk_ranges(done)})
                for chunk in finished:
                    start, stop = plan.bounds(chunk)
                    bar.update(stop - start)
                    if on_chunk is not None:
                        on_chunk(chunk)
                if error is not None:
                    raise error
    finally:
        client.cancel([f for f in futures if not f.done()])
        for ref in (image_ref, positions_ref):
            ref.release()


def _write_small(group: Any, name: str, value: np.ndarray, rows: int) -> None:
    """Store ``value`` as ``group[name]``, chunked by ``rows`` along axis 0 (replacing any)."""
    if value.ndim and value.shape[0]:
        chunks = (max(1, min(rows, value.shape[0])),) + value.shape[1:]
    else:
        chunks = None
    array = group.create_array(name, shape=value.shape, chunks=chunks, dtype=value.dtype, overwrite=True)
    array[...] = value


def _engine_from_record(record: dict) -> Any:
    from ptycho.scale._engine import Engine

    return Engine(backend=record["backend"], kernel=record["kernel"], threads=record["threads_per_task"],
                  workers=record["verified_workers"])


def _fields_hash(fields: dict) -> str:
    """One sha256 over every field's name and :func:`_plan.sha256_of`."""
    import hashlib

    digest = hashlib.sha256()
    for name in sorted(fields):
        digest.update(f"{name}={_plan.sha256_of(np.asarray(fields[name]))};".encode())
    return digest.hexdigest()


def _json_value(value: Any) -> Any:
    """An int-like setting (K, nsamples, seed) as a JSON attribute: int, None or its repr."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    return repr(value)


def grouped_to_zarr(
    raw: Any,
    out_path: Any,
    *,
    N: int,
    gridsize: int,
    K: Optional[int] = None,
    nsamples: Optional[int] = None,
    seed: Any = None,
    backend: Any = "auto",
    batch_size: Optional[int] = None,
    overwrite: bool = False,
    progress: bool = False,
    workers: Optional[int] = None,
    scheduler: Optional[str] = None,
    client: Any = None,
    storage_options: Optional[dict] = None,
) -> Any:
    """Group a scan and write the grouped dataset to a Zarr v3 group, streaming ``Y``.

    The Zarr counterpart of :meth:`ptycho.dataset.RawData.generate_grouped_data`
    for outputs larger than memory: the same arrays under the same names,
    ``Y`` (G, N, N, c) computed and written ``batch_size`` patches at a time.

    Parameters
    ----------
    raw : ptycho.dataset.RawData
        The scan; ``raw.objectGuess`` is the object ``Y`` is cut from.
    out_path : str or os.PathLike
        Directory of the Zarr group (conventionally ``*.zarr``), or an fsspec
        URL (``s3://bucket/run.zarr``).
    N, gridsize, K, nsamples, seed
        As for ``generate_grouped_data``; same seed, same groups.
    backend : {'auto', 'numpy', 'jax', 'tensorflow'}
        Engine for ``Y``, chosen once (see :func:`extract_to_zarr`).
    batch_size : int, optional
        Patches per chunk of ``Y`` (one engine call each), rounded down to
        whole groups (at least one); default 4096, as for
        ``generate_grouped_data``.
    overwrite : bool
        Replace an existing group.  Without it, a group written by the same
        call is resumed (``Y``'s complete chunks are kept) and one from other
        inputs is refused.
    progress : bool
        tqdm progress bar on stderr.
    workers : int, optional
        Compute ``Y`` on a fresh ``LocalCluster`` of this many single-threaded
        worker processes (closed afterwards); each task writes its chunk of
        ``Y`` into the store itself.
    scheduler : str, optional
        The same on the running Dask scheduler at this address
        (``'tcp://10.0.0.5:8786'``); its workers need this package and must
        reach ``out_path`` (a shared filesystem or an object store).
    client : distributed.Client, optional
        The same on the cluster of an existing client (``Client(SLURMCluster(...))``).
        At most one of ``workers``, ``scheduler`` and ``client``; none: ``Y``
        is computed in this process.
    storage_options : dict, optional
        Options of the URL's fsspec filesystem (see :func:`extract_to_zarr`).

    Returns
    -------
    ptycho.scale.Engine
        The engine that computed ``Y`` (also the group's ``engine`` attribute).

    Notes
    -----
    The group holds every field of ``raw.grouped_fields`` (``coords_nn``,
    ``coords_offsets``, ``coords_relative``, ``nn_indices``, ``diffraction``,
    ...) and ``Y``; its attributes hold N, gridsize, K, nsamples, seed,
    backend, engine, the package version, ``fields_sha256`` (recorded once every field
    but ``Y`` is stored) and ``complete`` once ``Y`` is done.
    """
    import ptycho

    from ptycho.scale.dask_engine import _client_for

    zarr = _zarr()
    if not isinstance(out_path, (str, os.PathLike)):
        raise InputTypeError(
            f"out_path must be a path (str or os.PathLike) or a URL, got {type(out_path).__name__}"
        )
    out_path = os.fspath(out_path)
    if out_path.startswith("file://"):
        out_path = _local_path(out_path)
    if client is not None and (workers is not None or scheduler is not None):
        raise InputError(
            f"client: give one of workers, scheduler and client, got client={client!r} with "
            f"workers={workers!r}, scheduler={scheduler!r}"
        )
    store = resolve_store(out_path, storage_options)
    if overwrite and not is_url(out_path) and os.path.exists(out_path):
        # Never destroy the old output before the new one is complete: build
        # the new group in a temporary sibling, then swap it into place.
        # (An object store has no rename: an s3:// output is replaced in place.)
        from ptycho._io import atomic_write

        chosen: list = []

        def write_new(tmp_path: Any) -> None:
            chosen.append(grouped_to_zarr(
                raw, tmp_path, N=N, gridsize=gridsize, K=K, nsamples=nsamples, seed=seed,
                backend=backend, batch_size=batch_size, overwrite=False, progress=progress,
                workers=workers, scheduler=scheduler, client=client,
            ))

        atomic_write(out_path, write_new, overwrite=True)
        return chosen[0]
    N = _validate.patch_size(N)
    fields = _plan.group_fields(raw, gridsize=gridsize, K=K, nsamples=nsamples, seed=seed, N=N)
    obj = _plan.object_of(raw)
    c = int(gridsize) ** 2
    positions = _plan.grouped_positions(fields, c)
    chunk_patches = _plan.patches_per_chunk(batch_size, c)

    settings = {
        "format": FORMAT, "N": N, "gridsize": _validate.positive_int(gridsize, "gridsize"),
        "K": _json_value(K), "nsamples": _json_value(nsamples),
        "seed": _json_value(seed),
    }
    if overwrite:
        group = zarr.open_group(store, mode="w")
    else:
        try:
            group = zarr.open_group(store, mode="a")
        except Exception as exc:  # a Zarr array or a non-Zarr file sits there
            raise InputError(
                f"out_path: expected a Zarr group (or nothing) at {out_path}; pass overwrite=True "
                f"to replace it ({exc})"
            ) from exc
        stored = {key: group.attrs.get(key) for key in settings}
        if group.attrs.get("format") is not None and stored != settings:
            raise InputError(
                f"out_path: the group at {out_path} was written with other settings ({stored}, now "
                f"{settings}); pass overwrite=True to replace it"
            )
    group.attrs.update(dict(settings, ptycho_version=ptycho.__version__))

    # The small fields are all written, then their hash recorded: a run
    # killed among them rewrites them on resume; fields from another scan
    # (same settings, other data) are refused.
    fields_hash = _fields_hash(fields)
    stored_hash = group.attrs.get("fields_sha256")
    if stored_hash is not None and stored_hash != fields_hash:
        raise InputError(
            f"out_path: the group at {out_path} holds grouped fields of other data (another scan "
            f"with the same settings); pass overwrite=True to replace it"
        )
    if stored_hash is None:
        rows = chunk_patches // c
        for name, value in fields.items():
            _write_small(group, name, np.asarray(value), rows)
        group.attrs.update({"fields_sha256": fields_hash})
    with contextlib.ExitStack() as stack:
        if client is None:
            client = stack.enter_context(_client_for(workers, scheduler))
        Y = extract_to_zarr(
            obj, positions, N, group, path="Y", channels=c, chunk_size=chunk_patches,
            backend=backend, overwrite=bool(overwrite), progress=progress, channel_axis=True,
            client=client,
        )
    engine = Y.attrs["engine"]
    group.attrs.update({"complete": True, "backend": engine["backend"], "engine": engine})
    return _engine_from_record(engine)
