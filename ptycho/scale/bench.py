"""Benchmark of the scale runners: Zarr streaming and Dask (not a test).

Run ``python -m ptycho.scale.bench --help``.  Each measurement runs in its own
child process so that its peak resident memory (``VmHWM`` from
``/proc/self/status``) is its own:

- ``chunk``: one chunk's parts, each timed on its own over a few chunks --
  the engine the workers run (the chosen engine, the Numba kernel on
  ``--engine-threads`` threads, default 1 as on a Dask worker), Zarr's
  default compression (Zstandard) of the block, and the raw write of the
  block into a Zarr array on ``--work-dir``; the reference for the workers'
  throughput (``engine + write``);
- ``memory``: the in-memory engine on a subset of the positions -- one call
  for the whole subset, and the same subset cut into the streaming chunks
  (engine only, results dropped);
- ``zarr-raw`` / ``zarr-default``: every position streamed to a Zarr array
  without compression / with Zarr's default compressor (Zstandard), then the
  store deleted;
- ``dask``: ``dask_extract_patches`` on a ``LocalCluster`` of 1 and of 2
  single-threaded worker processes (results persisted on the workers), and
  the scheduling overhead per chunk, measured with chunks so small that the
  engine time is negligible;
- ``dask-zarr``: ``extract_to_zarr(..., client=...)`` -- the workers of a
  ``LocalCluster`` (1 and 2 by default, ``--cluster-workers``) write every
  chunk straight into one Zarr store (raw, no compressor), a local directory
  or ``--output URL`` (``s3://bucket/run.zarr``); the client's peak memory
  (the process that holds the object, the positions and the scheduler), the
  workers' peak memory and the throughput, per worker against the ``chunk``
  phase, and the workers' own engine and store seconds per chunk.

The summary starts with what a rerun on a quiet machine needs (the command,
the UTC time, the load averages, the CPUs, the engine and the versions) and
ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

PHASES = ("chunk", "memory", "zarr-raw", "zarr-default", "dask", "dask-zarr")


def peak_rss_mb() -> float:
    """Peak resident memory of this process (VmHWM), in MiB; NaN where /proc is missing."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def rss_mb() -> float:
    """Resident memory of this process now (VmRSS), in MiB; NaN where /proc is missing."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def reset_peak_rss() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux: ``echo 5 > /proc/self/clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


def cpu_seconds() -> float:
    """User + system CPU time of this process so far (all its threads)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def make_object(side: int, seed: int = 0) -> np.ndarray:
    """A smooth complex object (side, side), complex64: amplitude and phase structure."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    amplitude = 0.6 + 0.4 * np.tanh(gaussian_filter(rng.standard_normal((side, side)), 6.0) * 8.0)
    phase = np.pi * np.tanh(gaussian_filter(rng.standard_normal((side, side)), 12.0) * 12.0)
    return (amplitude * np.exp(1j * phase)).astype(np.complex64)


def make_positions(count: int, side: int, seed: int = 1) -> np.ndarray:
    """``count`` uniformly random (x, y) positions inside the object, float64."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, side - 1.0, size=(count, 2))


def _dir_bytes(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            total += os.path.getsize(os.path.join(root, name))
    return total


def _in_process_backend(backend: str) -> str:
    """The backend name for ``ptycho.backends`` calls: ``auto`` is the NumPy backend (its fastest kernel)."""
    return "numpy" if backend == "auto" else backend


def machine() -> dict:
    """What a rerun elsewhere needs to compare: time, load, CPUs, versions."""
    import platform

    import numpy

    import ptycho

    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    versions = {"python": platform.python_version(), "numpy": numpy.__version__, "ptycho": ptycho.__version__}
    for name in ("numba", "dask", "distributed", "zarr", "jax", "tensorflow"):
        module = sys.modules.get(name)
        if module is None:
            import importlib.util

            if importlib.util.find_spec(name) is None:
                continue
            if name in ("jax", "tensorflow"):  # not imported for a version string
                versions[name] = "installed"
                continue
            module = __import__(name)
        versions[name] = getattr(module, "__version__", "?")
    return {
        "utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "load": list(os.getloadavg()),
        "cpus": os.cpu_count(),
        "cpus_usable": affinity,
        "cpu_model": _cpu_model(),
        "versions": versions,
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


# ---------------------------------------------------------------------------
# Phases (each runs in a child process)
# ---------------------------------------------------------------------------


def phase_chunk(args: argparse.Namespace) -> dict:
    """One chunk's engine, compression and write, each timed on its own (wall and CPU)."""
    if args.engine_threads:
        # before Numba is imported: the kernel's threads per call, as a worker runs it
        os.environ["NUMBA_NUM_THREADS"] = str(args.engine_threads)
    import numcodecs
    import zarr

    from ptycho.scale import _plan
    from ptycho.scale._engine import choose_engine

    engine = choose_engine(args.backend, N=args.N)
    image = make_object(args.object_side)
    repeats = max(1, args.chunk_repeats)
    positions = make_positions(args.chunk_size * (repeats + 1), args.object_side)
    settings = dict(N=args.N, channels=1, channel_axis=False, backend=engine.backend,
                    interpolation="bilinear", padding=args.N // 2, pad_to=args.chunk_size)

    def block_of(i: int) -> np.ndarray:
        with engine.running():
            return _plan.extract_block(image, positions[i * args.chunk_size:(i + 1) * args.chunk_size],
                                       **settings)

    block_of(repeats)  # warm-up: Numba's cache, XLA's compilation
    codec = numcodecs.Zstd(level=0)  # Zarr's default compressor ('auto': Zstandard, level 0)
    store = os.path.join(args.work_dir, f"bench-chunk-{os.getpid()}.zarr")
    raw = zarr.create_array(store=store, shape=(args.chunk_size * repeats, args.N, args.N),
                            chunks=(args.chunk_size, args.N, args.N), dtype=np.complex64,
                            compressors=None, fill_value=0, overwrite=True)
    times = {key: [0.0, 0.0] for key in ("engine", "compress", "write")}
    compressed = 0

    def timed(key: str, fn: Any) -> Any:
        start, cpu = time.perf_counter(), cpu_seconds()
        value = fn()
        times[key][0] += time.perf_counter() - start
        times[key][1] += cpu_seconds() - cpu
        return value

    try:
        for i in range(repeats):
            block = timed("engine", lambda: block_of(i))
            compressed += len(timed("compress", lambda: codec.encode(block)))
            timed("write", lambda: raw.__setitem__(slice(i * args.chunk_size, (i + 1) * args.chunk_size), block))
    finally:
        shutil.rmtree(store, ignore_errors=True)
    patches = args.chunk_size * repeats
    out = {"patches": patches, "chunks": repeats, "engine": engine.as_dict(),
           "engine_threads": args.engine_threads or None,
           "compression_ratio": compressed / (patches * args.N * args.N * 8)}
    for key, (wall, cpu) in times.items():
        out[f"{key}_us_per_patch"] = wall / patches * 1e6
        out[f"{key}_cpu_us_per_patch"] = cpu / patches * 1e6
    out["engine_plus_write_us_per_patch"] = out["engine_us_per_patch"] + out["write_us_per_patch"]
    return out


def phase_memory(args: argparse.Namespace) -> dict:
    from ptycho.backends import extract_patches

    backend = _in_process_backend(args.backend)
    image = make_object(args.object_side)
    positions = make_positions(args.in_memory, args.object_side)
    extract_patches(image, positions[: args.chunk_size], args.N, backend=backend)  # warm-up
    start, cpu = time.perf_counter(), cpu_seconds()
    for first in range(0, len(positions), args.chunk_size):
        extract_patches(image, positions[first:first + args.chunk_size], args.N, backend=backend)
    chunked, chunked_cpu = time.perf_counter() - start, cpu_seconds() - cpu
    start, cpu = time.perf_counter(), cpu_seconds()
    patches = np.asarray(extract_patches(image, positions, args.N, backend=backend))
    whole, whole_cpu = time.perf_counter() - start, cpu_seconds() - cpu
    assert patches.shape == (len(positions), args.N, args.N)
    return {
        "patches": len(positions),
        "one_call_s": whole,
        "one_call_us_per_patch": whole / len(positions) * 1e6,
        "chunked_s": chunked,
        "chunked_us_per_patch": chunked / len(positions) * 1e6,
        "one_call_cpu_us_per_patch": whole_cpu / len(positions) * 1e6,
        "chunked_cpu_us_per_patch": chunked_cpu / len(positions) * 1e6,
        "peak_rss_mb": peak_rss_mb(),
    }


def _phase_zarr(args: argparse.Namespace, compressor: Any) -> dict:
    from ptycho.scale import extract_to_zarr

    image = make_object(args.object_side)
    positions = make_positions(args.patches, args.object_side)
    store = os.path.join(args.work_dir, f"bench-{os.getpid()}.zarr")
    try:
        start, cpu = time.perf_counter(), cpu_seconds()
        array = extract_to_zarr(
            image, positions, args.N, store, chunk_size=args.chunk_size, backend=args.backend,
            compressor=compressor, overwrite=True, progress=args.progress,
        )
        elapsed, used = time.perf_counter() - start, cpu_seconds() - cpu
        stored = _dir_bytes(store)
        logical = int(np.prod(array.shape)) * array.dtype.itemsize
    finally:
        shutil.rmtree(store, ignore_errors=True)
    return {
        "patches": len(positions),
        "seconds": elapsed,
        "us_per_patch": elapsed / len(positions) * 1e6,
        "cpu_us_per_patch": used / len(positions) * 1e6,
        "MB_per_s": logical / elapsed / 1e6,
        "logical_GB": logical / 1e9,
        "stored_GB": stored / 1e9,
        "peak_rss_mb": peak_rss_mb(),
    }


def phase_zarr_raw(args: argparse.Namespace) -> dict:
    return _phase_zarr(args, None)


def phase_zarr_default(args: argparse.Namespace) -> dict:
    return _phase_zarr(args, "default")


def _warm_up(N: int, backend: str) -> None:
    from ptycho.backends import extract_patches

    extract_patches(make_object(64), make_positions(8, 64), N, backend=_in_process_backend(backend))


def phase_dask(args: argparse.Namespace) -> dict:
    import distributed

    from ptycho.scale import dask_extract_patches

    image = make_object(args.object_side)
    positions = make_positions(args.dask_patches, args.object_side)
    # Tiny chunks on a tiny object: each engine call then costs ~0.1 ms (an
    # engine call copies its object once, into a zero-bordered buffer).
    tiny_image = make_object(64)
    tiny_positions = make_positions(args.overhead_chunks * 4, 64)
    results: dict = {"patches": len(positions)}
    for workers in (1, 2):
        with distributed.LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
            silence_logs=50,
        ) as cluster, distributed.Client(cluster) as client:  # default client: wait() needs it
            # Warm-up on every worker: the first engine call imports the package.
            client.run(_warm_up, args.N, args.backend)

            array = dask_extract_patches(
                image, positions, args.N, chunk_size=args.chunk_size, backend=args.backend, client=client,
            )
            cpu_before = sum(client.run(cpu_seconds).values())
            start = time.perf_counter()
            persisted = client.persist(array)
            distributed.wait(persisted)
            elapsed = time.perf_counter() - start
            workers_cpu = sum(client.run(cpu_seconds).values()) - cpu_before
            del persisted

            # Scheduling overhead: 4-position chunks of 2 x 2 patches of a
            # 64 x 64 object cost the engine ~0.1 ms, so the wall time per
            # chunk is Dask's own cost.
            tiny = dask_extract_patches(tiny_image, tiny_positions, 2, chunk_size=4, client=client)
            start = time.perf_counter()
            tiny_persisted = client.persist(tiny)
            distributed.wait(tiny_persisted)
            tiny_elapsed = time.perf_counter() - start
            del tiny_persisted
        results[f"workers_{workers}"] = {
            "seconds": elapsed,
            "us_per_patch": elapsed / len(positions) * 1e6,
            "workers_cpu_s": workers_cpu,
            "cores_busy": workers_cpu / elapsed,
            "chunks": array.numblocks[0],
            "overhead_chunks": tiny.numblocks[0],
            "overhead_ms_per_chunk": tiny_elapsed / tiny.numblocks[0] * 1e3,
        }
    # The same tiny chunks in this process with the synchronous scheduler:
    # the engine's own cost per tiny chunk, to subtract.
    tiny = dask_extract_patches(tiny_image, tiny_positions, 2, chunk_size=4)
    start = time.perf_counter()
    tiny.compute(scheduler="sync")
    results["sync_ms_per_tiny_chunk"] = (time.perf_counter() - start) / tiny.numblocks[0] * 1e3
    results["speedup_2_vs_1"] = results["workers_1"]["seconds"] / results["workers_2"]["seconds"]
    return results


def _remove_store(store: str) -> int:
    """Delete a benchmark store (a directory or a URL); return the bytes it held."""
    if "://" not in store:
        stored = _dir_bytes(store)
        shutil.rmtree(store, ignore_errors=True)
        return stored
    import fsspec

    fs, path = fsspec.core.url_to_fs(store)
    stored = sum(fs.du(path, total=False).values()) if fs.exists(path) else 0
    if fs.exists(path):
        fs.rm(path, recursive=True)
    return stored


def phase_dask_zarr(args: argparse.Namespace) -> dict:
    import distributed

    from ptycho.scale import extract_to_zarr
    from ptycho.scale._engine import choose_engine
    from ptycho.scale.zarr_store import chunk_timings

    workers = args.one_cluster
    image = make_object(args.object_side)
    positions = make_positions(args.patches, args.object_side)
    store = args.output or os.path.join(args.work_dir, f"bench-dask-{os.getpid()}.zarr")
    if "://" in store:
        _remove_store(store)
    try:
        with distributed.LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
            silence_logs=50,
        ) as cluster, distributed.Client(cluster, set_as_default=False) as client:
            # The engine, chosen and checked on every worker (which loads the kernel there) before the clock.
            engine = choose_engine(args.backend, client, N=args.N)
            client.run(chunk_timings, True)
            setup_peak = peak_rss_mb()
            reset = reset_peak_rss()  # from here VmHWM is the run's own peak
            rss_before = rss_mb()
            cpu_before = sum(client.run(cpu_seconds).values())
            client_cpu = cpu_seconds()
            start = time.perf_counter()
            array = extract_to_zarr(
                image, positions, args.N, store, chunk_size=args.chunk_size, backend=engine,
                compressor=None, overwrite=True, client=client, progress=args.progress,
            )
            elapsed = time.perf_counter() - start
            client_cpu = cpu_seconds() - client_cpu
            workers_cpu = sum(client.run(cpu_seconds).values()) - cpu_before
            timings = list(client.run(chunk_timings).values())
            workers_peak = max(client.run(peak_rss_mb).values())
            logical = int(np.prod(array.shape)) * array.dtype.itemsize
            complete = bool(array.attrs["complete"])
    finally:
        stored = _remove_store(store)
    task_chunks = sum(t["chunks"] for t in timings) or 1
    return {
        "patches": len(positions),
        "workers": workers,
        "engine": engine.as_dict(),
        "engine_ms_per_chunk": sum(t["engine_s"] for t in timings) / task_chunks * 1e3,
        "store_ms_per_chunk": sum(t["store_s"] for t in timings) / task_chunks * 1e3,
        "per_worker_patches_per_s": len(positions) / elapsed / workers,
        "output": "url" if "://" in store else "local",
        "complete": complete,
        "seconds": elapsed,
        "patches_per_s": len(positions) / elapsed,
        "MB_per_s": logical / elapsed / 1e6,
        "logical_GB": logical / 1e9,
        "stored_GB": stored / 1e9,
        "client_peak_rss_mb": peak_rss_mb() if reset else float("nan"),
        "client_rss_before_mb": rss_before,
        "client_setup_peak_rss_mb": setup_peak,
        "client_cpu_s": client_cpu,
        "inputs_mb": (image.nbytes + positions.nbytes) / 2**20,
        "workers_peak_rss_mb": workers_peak,
        "workers_cpu_s": workers_cpu,
        "cores_busy": workers_cpu / elapsed,
    }


_RUNNERS = {
    "chunk": phase_chunk,
    "memory": phase_memory,
    "zarr-raw": phase_zarr_raw,
    "zarr-default": phase_zarr_default,
    "dask": phase_dask,
    "dask-zarr": phase_dask_zarr,
}


# ---------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ptycho.scale.bench",
        description="Benchmark Zarr streaming and Dask runs of the patch engine.",
        epilog=(
            "examples:\n"
            "  python -m ptycho.scale.bench                       # 10^6 patches, N=32\n"
            "  python -m ptycho.scale.bench --patches 250000 --phases memory zarr-raw\n"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--patches", type=int, default=1_000_000, help="positions streamed to Zarr (default 10^6)")
    parser.add_argument("--N", type=int, default=32, help="patch side (default 32)")
    parser.add_argument("--chunk-size", type=int, default=4096, help="positions per chunk (default 4096)")
    parser.add_argument("--object-side", type=int, default=2048, help="object is side x side (default 2048)")
    parser.add_argument("--in-memory", type=int, default=30_000,
                        help="positions of the in-memory baseline (one call; default 30000, ~1.5 GB)")
    parser.add_argument("--dask-patches", type=int, default=100_000, help="positions of the Dask runs")
    parser.add_argument("--overhead-chunks", type=int, default=500, help="tiny chunks for the overhead")
    parser.add_argument("--backend", default="auto",
                        help="engine: auto (default: the fastest exact engine installed, NumPy with the Numba "
                             "kernel of ptycho[fast]), numpy, jax or tensorflow")
    parser.add_argument("--chunk-repeats", type=int, default=5, help="chunk: chunks timed (default 5)")
    parser.add_argument("--engine-threads", type=int, default=1,
                        help="chunk: Numba kernel threads per call (default 1, as on a Dask worker; "
                             "0: the kernel's default)")
    parser.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES))
    parser.add_argument("--work-dir", default=None,
                        help="where the Zarr stores go (default: a temporary directory in the current one)")
    parser.add_argument("--progress", action="store_true", help="progress bars on stderr")
    parser.add_argument("--cluster-workers", type=int, nargs="+", default=[1, 2],
                        help="dask-zarr: worker processes of each LocalCluster (default 1 2)")
    parser.add_argument("--output", default=None, metavar="URL",
                        help="dask-zarr: write to this URL (s3://bucket/run.zarr; deleted afterwards) "
                             "instead of a directory in --work-dir")
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)  # child process mode
    parser.add_argument("--one-cluster", type=int, default=1, help=argparse.SUPPRESS)
    return parser


def _run_child(phase: str, argv: list, work_dir: str, extra: tuple = ()) -> dict:
    cmd = [sys.executable, "-m", "ptycho.scale.bench", *argv, "--phase", phase, "--work-dir", work_dir, *extra]
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"phase {phase} failed with exit status {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _report(args: argparse.Namespace, results: dict) -> None:
    before, after = results.get("machine_before", {}), results.get("machine_after", {})
    print(f"command: python -m ptycho.scale.bench {' '.join(results.get('argv', []))}")
    if before:
        load = lambda m: "/".join(f"{v:.2f}" for v in m["load"])  # noqa: E731
        print(f"machine: {before['cpus']} CPUs ({before['cpus_usable']} usable), {before['cpu_model']}; "
              f"{before['utc']} - {after.get('utc', '?')} UTC; load average 1/5/15 min {load(before)} at the start, "
              f"{load(after) if after else '?'} at the end")
        print("versions: " + ", ".join(f"{k} {v}" for k, v in before["versions"].items()))
    print(f"N={args.N}  chunk={args.chunk_size}  object={args.object_side}^2  backend={args.backend}  "
          f"cpus={os.cpu_count()}  load1={os.getloadavg()[0]:.2f}")
    chunk = results.get("chunk")
    if chunk:
        threads = f"{chunk['engine_threads']} thread(s)" if chunk["engine_threads"] else "default threads"
        print(f"chunk ({chunk['chunks']} x {args.chunk_size} patches), engine {chunk['engine']['name']} on {threads}: "
              f"engine {chunk['engine_us_per_patch']:.1f} us/patch (cpu {chunk['engine_cpu_us_per_patch']:.1f}), "
              f"compression (Zstandard, Zarr's default) {chunk['compress_us_per_patch']:.1f} us/patch "
              f"(cpu {chunk['compress_cpu_us_per_patch']:.1f}; {chunk['compression_ratio']:.2f} of the size), "
              f"raw write {chunk['write_us_per_patch']:.1f} us/patch (cpu {chunk['write_cpu_us_per_patch']:.1f}); "
              f"engine + write {chunk['engine_plus_write_us_per_patch']:.1f} us/patch = "
              f"{1e6 / chunk['engine_plus_write_us_per_patch']:,.0f} patches/s")
    memory = results.get("memory")
    if memory:
        print(f"in-memory engine, {memory['patches']} patches: one call {memory['one_call_us_per_patch']:.1f} us/patch "
              f"(cpu {memory['one_call_cpu_us_per_patch']:.1f}), chunked {memory['chunked_us_per_patch']:.1f} us/patch "
              f"(cpu {memory['chunked_cpu_us_per_patch']:.1f}), peak {memory['peak_rss_mb']:.0f} MiB")
    for phase in ("zarr-raw", "zarr-default"):
        z = results.get(phase)
        if not z:
            continue
        ratio = f", {z['us_per_patch'] / memory['chunked_us_per_patch']:.2f}x chunked in-memory" if memory else ""
        print(f"{phase}: {z['patches']} patches in {z['seconds']:.1f} s = {z['us_per_patch']:.1f} us/patch "
              f"(cpu {z['cpu_us_per_patch']:.1f}) "
              f"({z['MB_per_s']:.0f} MB/s{ratio}), {z['logical_GB']:.2f} GB -> {z['stored_GB']:.2f} GB on disk, "
              f"peak {z['peak_rss_mb']:.0f} MiB")
    d = results.get("dask")
    if d:
        for workers in (1, 2):
            w = d[f"workers_{workers}"]
            print(f"dask LocalCluster {workers} worker(s): {d['patches']} patches in {w['seconds']:.1f} s = "
                  f"{w['us_per_patch']:.1f} us/patch, workers' CPU {w['workers_cpu_s']:.1f} s "
                  f"({w['cores_busy']:.2f} cores busy); {w['overhead_ms_per_chunk']:.2f} ms per tiny chunk")
        print(f"dask 2 vs 1 workers: {d['speedup_2_vs_1']:.2f}x; engine alone per tiny chunk "
              f"{d['sync_ms_per_tiny_chunk']:.3f} ms")
    runs = results.get("dask-zarr", [])
    for z in runs:
        versus = ""
        if chunk:
            versus = (f", {1e6 / chunk['engine_plus_write_us_per_patch'] / z['per_worker_patches_per_s']:.2f}x the "
                      f"time per patch of the chunk phase's engine + write")
        print(f"dask-zarr {z['workers']} worker(s), engine {z['engine']['name']}: "
              f"{z['per_worker_patches_per_s']:,.0f} patches/s per worker{versus}; in the tasks "
              f"engine {z['engine_ms_per_chunk']:.1f} ms + store {z['store_ms_per_chunk']:.1f} ms per chunk")
        print(f"dask-zarr {z['workers']} worker(s) -> {z['output']} store: {z['patches']} patches in "
              f"{z['seconds']:.1f} s = {z['patches_per_s']:.0f} patches/s ({z['MB_per_s']:.0f} MB/s), "
              f"{z['logical_GB']:.2f} GB written; client peak during the run {z['client_peak_rss_mb']:.0f} MiB "
              f"({z['client_rss_before_mb']:.0f} MiB at its start, {z['client_setup_peak_rss_mb']:.0f} MiB "
              f"while making the inputs of {z['inputs_mb']:.0f} MiB, "
              f"client CPU {z['client_cpu_s']:.1f} s); workers' peak {z['workers_peak_rss_mb']:.0f} MiB, "
              f"{z['cores_busy']:.2f} cores busy")
    by_workers = {z["workers"]: z for z in runs}
    if 1 in by_workers and 2 in by_workers:
        print(f"dask-zarr 2 vs 1 workers: {by_workers[1]['seconds'] / by_workers[2]['seconds']:.2f}x "
              f"(cores busy {by_workers[1]['cores_busy']:.2f} / {by_workers[2]['cores_busy']:.2f})")
    print(json.dumps(results))


def main(argv: list | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.phase is not None:
        result = _RUNNERS[args.phase](args)
        print(json.dumps(result))
        return 0

    own_dir = args.work_dir is None
    work_dir = tempfile.mkdtemp(prefix="ptycho-bench-", dir=".") if own_dir else args.work_dir
    child_argv = [a for a in argv if a != "--work-dir" and a != args.work_dir]
    results: dict = {"argv": argv, "machine_before": machine()}
    try:
        for phase in args.phases:
            print(f"running {phase} ...", file=sys.stderr, flush=True)
            if phase == "dask-zarr":  # one child (one client, one peak) per cluster size
                results[phase] = [
                    _run_child(phase, child_argv, work_dir, ("--one-cluster", str(workers)))
                    for workers in args.cluster_workers
                ]
            else:
                results[phase] = _run_child(phase, child_argv, work_dir)
    finally:
        if own_dir:
            shutil.rmtree(work_dir, ignore_errors=True)
    results["machine_after"] = machine()
    _report(args, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
