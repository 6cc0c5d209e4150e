"""The benchmark's modes of issue 14: the embedded default at XLA speed, cold starts, the CLI end to end.

=============== ==============================================================
numba           the NumPy backend's Numba kernel (``ptycho[fast]``), compiled
                order; cold = first call in a fresh process (Numba's on-disk
                cache loaded, or the kernel compiled on a machine's first run)
numba_plain     the same, plain order
numpy_whole     the array-API algorithm on NumPy over the whole batch at once
                (before chunking), compiled order
jax_chunked     ``jax.jit`` of ``lax.map`` over ~8 MB chunks of output
                (``PTYCHO_JAX_CHUNK_PIXELS``, off by default: see ``_jax.compile``)
jax_cache       JAX jit with the persistent compilation cache already filled
                by an earlier process (what a second CLI run pays)
tf_cache        TF-XLA (the ``tf`` row's call) with XLA's persistent cache
                already filled by an earlier process (``TF_XLA_FLAGS``)
cli_tensorflow  ``ptycho-patches extract`` end to end in a fresh process
cli_jax         (import, read, group, compile, extract, write the .npz),
cli_numpy       the workload's object and positions as a gridsize-1 dataset
save_floor      the floor of that job: ``np.save`` of an output of that size
=============== ==============================================================

The NumPy array-API path (chunked) is the ``numpy`` / ``numpy_plain`` modes of
:mod:`ptycho.bench.engines`.  Compare within one run: each mode has its own
process, so the ratios are fair on a loaded machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import numpy as np

from ptycho.bench.measure import NO_CHECK, time_calls, time_command
from ptycho.bench.registry import register
from ptycho.bench.workload import Job, to_flat

__all__: list = []


def _grouped(job: Job, backend: str, evaluation: str = "compiled") -> Any:
    from ptycho.backends import extract_patches_grouped

    out = extract_patches_grouped(job.obj, job.pos, job.N, channels=job.c, backend=backend, evaluation=evaluation)
    return out.block_until_ready() if backend == "jax" else out


def _numba(job: Job, evaluation: str) -> Dict[str, Any]:
    from ptycho.backends import _numpy

    def call() -> Any:
        with _numpy.kernel("numba"):
            return _grouped(job, "numpy", evaluation)

    return time_calls(call, job.repeats, cold=True, check=job.check_channels)


@register("numba", "NumPy + Numba kernel", package="numba", backend="numpy", compiled=True, order=44)
def _numba_compiled(job: Job) -> Dict[str, Any]:
    return _numba(job, "compiled")


@register("numba_plain", "NumPy + Numba kernel, plain order", package="numba", backend="numpy", compiled=True,
          order=45)
def _numba_plain(job: Job) -> Dict[str, Any]:
    return _numba(job, "plain")


@register("numpy_whole", "NumPy array-API, whole batch (unchunked)", backend="numpy", count="subset_count",
          order=42)
def _numpy_whole(job: Job) -> Dict[str, Any]:
    """The window algorithm on NumPy over the whole batch at once (before chunking): its temporaries."""
    from ptycho.backends import get_backend
    from ptycho.backends.window import window_patches

    xp = get_backend("numpy").namespace
    return time_calls(lambda: window_patches(job.obj, job.pos, job.N, xp=xp, channels=job.c), min(job.repeats, 2),
                      cold=False, check=job.check_channels)


@register("jax_chunked", "JAX jit, lax.map over chunks (opt-in)", package="jax", backend="jax", compiled=True,
          order=32)
def _jax_chunked(job: Job) -> Dict[str, Any]:
    """``PTYCHO_JAX_CHUNK_PIXELS=1048576``: the windowed job as ``lax.map`` over ~8 MB chunks of output."""
    from ptycho.backends import _jax

    _jax.CHUNK_PIXELS = 1 << 20
    record = time_calls(lambda: _grouped(job, "jax"), job.repeats, cold=True, check=job.check_channels)
    record["chunk_groups"] = _jax.chunk_groups(job.groups, max(1, _jax.CHUNK_PIXELS // (job.N * job.N * job.c)))
    return record


def _fill_cache(job: Job, mode: str, env: Dict[str, str]) -> None:
    """Run ``mode`` once in an earlier process that compiles and fills the cache."""
    spec = dict(job.spec, fill_cache=True, repeats=1)
    subprocess.run([sys.executable, "-m", "ptycho.bench", "--worker", mode, "--spec", json.dumps(spec)],
                   check=True, capture_output=True, env=dict(os.environ, **env))


@register("jax_cache", "JAX jit, persistent cache filled", package="jax", backend="jax", compiled=True, order=33)
def _jax_cache(job: Job) -> Dict[str, Any]:
    from ptycho.backends import _jax

    directory = Path(job.spec["workdir"]) / "jax-cache"
    if not job.spec.get("fill_cache"):
        # An earlier process compiles and fills the cache; this one starts cold from it.
        _fill_cache(job, "jax_cache", {"PTYCHO_JAX_CACHE": "1"})
    os.environ["PTYCHO_JAX_CACHE"] = "1"
    _jax.enable_compilation_cache(directory)
    if job.spec.get("fill_cache"):
        _grouped(job, "jax")
        return {}
    record = time_calls(lambda: _grouped(job, "jax"), job.repeats, cold=True, check=job.check_channels)
    record["cache_entries"] = len(list(directory.iterdir()))
    return record


@register("tf_cache", "TF batched (XLA), persistent cache filled", package="tensorflow", backend="tensorflow",
          compiled=True, order=22)
def _tf_cache(job: Job) -> Dict[str, Any]:
    """The ``tf`` row's call, XLA's persistent cache filled by an earlier process (a second CLI run)."""
    from ptycho.backends import compile_cache

    directory = Path(job.spec["workdir"]) / "tf-cache"
    if not job.spec.get("fill_cache"):
        _fill_cache(job, "tf_cache", {"PTYCHO_TF_CACHE": "1"})
    # before TensorFlow's first compilation in this process: it reads TF_XLA_FLAGS then
    os.environ["PTYCHO_TF_CACHE"] = "1"
    if compile_cache.enable_tensorflow_cache(directory) is None:
        raise RuntimeError(f"the TensorFlow cache is off (TF_XLA_FLAGS={os.environ.get('TF_XLA_FLAGS')!r})")
    import tensorflow as tf

    from ptycho import raw_data
    from ptycho.tf_helper import _channel_to_flat, pad

    # the tf row's inputs (ptycho.bench.engines, which imports this module)
    gt_padded = pad(tf.constant(job.obj[None, :, :, None]), job.N // 2)
    offsets_f = _channel_to_flat(tf.constant((job.g_off + job.l_off).astype(np.float32)))

    def call() -> Any:
        return raw_data._get_image_patches_batched(gt_padded, offsets_f, job.N, job.groups, job.c)

    if job.spec.get("fill_cache"):
        call()
        return {}
    record = time_calls(call, job.repeats, cold=True, check=job.check_channels)
    record["cache_entries"] = len(list(directory.iterdir()))
    return record


# ---------------------------------------------------------------------------
# The CLI end to end, and the floor of its job.
# ---------------------------------------------------------------------------


def _dataset(job: Job) -> Path:
    """The workload as a PtychoPINN dataset (gridsize 1: one patch per position), written once."""
    path = Path(job.spec["workdir"]) / f"cli-scan-{job.count}.npz"
    if not path.exists():
        x, y = job.pos[:, 0].astype(np.float64), job.pos[:, 1].astype(np.float64)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, xcoords=x, ycoords=y, diff3d=np.zeros((len(x), 1, 1), np.float32),
                 probeGuess=np.ones((job.N, job.N), np.complex64), objectGuess=job.obj)
        os.replace(tmp, path)
    return path


def extract_command(job: Job, src: Path, out: Path, backend: str) -> list:
    """``ptycho-patches extract SRC -o OUT`` of the workload's patch size on ``backend`` (a fresh process)."""
    return [sys.executable, "-m", "ptycho", "extract", str(src), "-o", str(out), "--N", str(job.N),
            "--backend", backend, "--overwrite", "--quiet"]


def cli_env() -> Dict[str, str]:
    """The environment of the CLI runs: TensorFlow's start-up log silenced."""
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")


def _cli(job: Job, backend: str) -> Dict[str, Any]:
    src = _dataset(job)
    out = Path(job.spec["workdir"]) / f"cli-{backend}.npz"
    record = time_command(extract_command(job, src, out, backend), min(job.repeats, 3), env=cli_env(),
                          what="ptycho-patches extract")
    with np.load(out) as data:
        y = data["Y"]
        record["max_abs_diff"] = job.check_flat(to_flat(y, 1))
    out.unlink()
    return record


@register("cli_tensorflow", "CLI extract end to end (tensorflow)", package="tensorflow", backend="tensorflow",
          order=60)
def _cli_tf(job: Job) -> Dict[str, Any]:
    return _cli(job, "tensorflow")


@register("cli_jax", "CLI extract end to end (jax)", package="jax", backend="jax", order=61)
def _cli_jax(job: Job) -> Dict[str, Any]:
    return _cli(job, "jax")


@register("cli_numpy", "CLI extract end to end (numpy)", backend="numpy", order=62)
def _cli_numpy(job: Job) -> Dict[str, Any]:
    return _cli(job, "numpy")


@register("save_floor", "floor of the CLI job: np.save of Y", order=63)
def _save_floor(job: Job) -> Dict[str, Any]:
    path = Path(job.spec["workdir"]) / "floor.npy"
    # Y of the CLI's gridsize-1 output: (P, N, N, 1), the same bytes as the workload's output
    y = np.empty((job.count, job.N, job.N, 1), np.complex64)
    y.fill(1 + 1j)

    def call() -> None:
        np.save(path, y)

    record = time_calls(call, job.repeats, cold=False, check=NO_CHECK)
    path.unlink()
    return record
