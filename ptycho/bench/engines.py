"""The benchmark's modes for this package's engines and their floors.

========== =================================================================
legacy     PtychoPINN's loop ``_get_image_patches_iterative`` (one full-image
           translation per patch), timed on a subset and scaled per patch
tf         ``_get_image_patches_batched`` (TF/XLA translate-then-slice):
           cold = first call in a fresh process (XLA compile included),
           warm = median of the repeats
jax        ``extract_patches_grouped(..., backend='jax')`` (``jax.jit``)
numpy      ``extract_patches_grouped(..., backend='numpy')``, the array-API path
           (``PTYCHO_NUMPY_KERNEL=array``: chunks into one output); the Numba
           kernel's rows are in :mod:`ptycho.bench.fast`
dispatch   ``get_image_patches`` end to end (validation, padding, layout)
floor      the memory floor: allocate the output array and write every element
xla_floor  XLA's own floor: a TF/XLA kernel that writes the same complex
           output from the position arithmetic alone (no gathers)
chunk      (``--chunk-study`` only) chunked ``_get_image_patches_batched``
           into the preallocated output
========== =================================================================
"""

from __future__ import annotations

import time
import warnings
from typing import Any, Dict, Tuple

import numpy as np

from ptycho.bench.measure import NO_CHECK, time_calls
from ptycho.bench.registry import register
from ptycho.bench.workload import Job, to_flat

__all__: list = []


@register("floor", "memory floor (alloc + write)", always=True, order=0)
def _floor(job: Job) -> Dict[str, Any]:
    def call() -> np.ndarray:
        out = np.empty(job.out_shape, np.complex64)
        out.fill(1 + 1j)
        return out

    return time_calls(call, job.repeats, cold=False, check=NO_CHECK)


def _tf_inputs(job: Job) -> Tuple[Any, Any]:
    """(gt_padded (1, Hp, Wp, 1), offsets_f (B*c, 1, 2, 1)) as PtychoPINN's paths take them."""
    import tensorflow as tf

    from ptycho.tf_helper import _channel_to_flat, pad

    gt_padded = pad(tf.constant(job.obj[None, :, :, None]), job.N // 2)
    offsets_f = _channel_to_flat(tf.constant((job.g_off + job.l_off).astype(np.float32)))
    return gt_padded, offsets_f


def _raw_data() -> Any:
    from ptycho import raw_data

    return raw_data


@register("legacy", "legacy loop (TF)", package="tensorflow", backend="tensorflow", count="legacy_count",
          always=True, reference=True, order=10)
def _legacy(job: Job) -> Dict[str, Any]:
    raw_data = _raw_data()
    gt_padded, offsets_f = _tf_inputs(job)
    N, c = job.N, job.c
    # Compile the full-image translation on one group first: the loop is
    # timed in its steady state, per patch.
    raw_data._get_image_patches_iterative(gt_padded, offsets_f[:c], N, 1, c)
    return time_calls(lambda: raw_data._get_image_patches_iterative(gt_padded, offsets_f, N, job.groups, c).numpy(),
                      1, cold=False, check=job.save_reference)


@register("tf", "TF batched (XLA)", package="tensorflow", backend="tensorflow", compiled=True, order=20)
def _tf(job: Job) -> Dict[str, Any]:
    raw_data = _raw_data()
    gt_padded, offsets_f = _tf_inputs(job)
    return time_calls(lambda: raw_data._get_image_patches_batched(gt_padded, offsets_f, job.N, job.groups, job.c),
                      job.repeats, cold=True, check=job.check_channels)


def _engine(job: Job, backend: str, evaluation: str = "compiled") -> Any:
    from ptycho.backends import extract_patches_grouped

    if backend == "numpy":  # the array-API path; the Numba kernel has its own rows (ptycho.bench.fast)
        from ptycho.backends import _numpy

        with _numpy.kernel("array"):
            return extract_patches_grouped(job.obj, job.pos, job.N, channels=job.c, backend=backend,
                                           evaluation=evaluation)
    out = extract_patches_grouped(job.obj, job.pos, job.N, channels=job.c, backend=backend, evaluation=evaluation)
    return out.block_until_ready() if backend == "jax" else out


@register("jax", "JAX jit", package="jax", backend="jax", compiled=True, order=30)
def _jax(job: Job) -> Dict[str, Any]:
    return time_calls(lambda: _engine(job, "jax"), job.repeats, cold=True, check=job.check_channels)


@register("numpy", "NumPy array-API (chunked)", backend="numpy", count="subset_count", order=40)
def _numpy(job: Job) -> Dict[str, Any]:
    return time_calls(lambda: _engine(job, "numpy"), min(job.repeats, 2), cold=False, check=job.check_channels)


# The plain evaluation order (PtychoPINN's eager path); the rows above are the
# compiled order (its default XLA path).  Their max|diff| is against the
# compiled legacy reference: one rounding of the last fma, not zero.
@register("tf_plain", "TF batched (XLA), plain order", package="tensorflow", backend="tensorflow", compiled=True,
          order=21)
def _tf_plain(job: Job) -> Dict[str, Any]:
    raw_data = _raw_data()
    gt_padded, offsets_f = _tf_inputs(job)
    return time_calls(lambda: raw_data._get_image_patches_batched(gt_padded, offsets_f, job.N, job.groups, job.c,
                                                                  evaluation="plain"),
                      job.repeats, cold=True, check=job.check_channels)


@register("jax_plain", "JAX jit, plain order", package="jax", backend="jax", compiled=True, order=31)
def _jax_plain(job: Job) -> Dict[str, Any]:
    return time_calls(lambda: _engine(job, "jax", "plain"), job.repeats, cold=True, check=job.check_channels)


@register("numpy_plain", "NumPy array-API (chunked), plain", backend="numpy", count="subset_count", order=41)
def _numpy_plain(job: Job) -> Dict[str, Any]:
    return time_calls(lambda: _engine(job, "numpy", "plain"), min(job.repeats, 2), cold=False,
                      check=job.check_channels)


@register("dispatch", "get_image_patches (end to end)", package="tensorflow", backend="tensorflow",
          compiled=True, order=50)
def _dispatch(job: Job) -> Dict[str, Any]:
    from ptycho.config.config import ModelConfig

    raw_data = _raw_data()
    config = ModelConfig(N=job.N, gridsize=job.gridsize, use_batched_patch_extraction=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return time_calls(lambda: raw_data.get_image_patches(job.obj, job.g_off, job.l_off, config=config),
                          job.repeats, cold=True, check=job.check_channels)


@register("xla_floor", "XLA floor (write, no gather)", package="tensorflow", backend="tensorflow", order=90)
def _xla_floor(job: Job) -> Dict[str, Any]:
    import tensorflow as tf

    N, c, groups = job.N, job.c, job.groups

    @tf.function(jit_compile=True)
    def write(positions: tf.Tensor) -> tf.Tensor:
        tx = tf.reshape(positions[:, 0], (groups, 1, 1, c))
        ty = tf.reshape(positions[:, 1], (groups, 1, 1, c))
        grid = tf.range(N, dtype=tf.float32)
        gx, gy = tf.reshape(grid, (1, 1, N, 1)), tf.reshape(grid, (1, N, 1, 1))
        return tf.complex(gx + tx + gy, gy + ty)

    positions = tf.constant(job.pos)
    write(positions)  # compile outside the timing: this row is a floor, not a mode
    return time_calls(lambda: write(positions), job.repeats, cold=False, check=NO_CHECK)


@register("chunk", "chunked TF batched", package="tensorflow", count="chunk_count", listed=False, order=1000)
def _chunk(job: Job) -> Dict[str, Any]:
    raw_data = _raw_data()
    gt_padded, offsets_f = _tf_inputs(job)
    N, c, groups, batch = job.N, job.c, job.groups, job.spec["chunk_batch"]
    # The memory floor of this output size, in this process, just before:
    # first-touch page faults of a large fresh array grow with its size.
    start = time.perf_counter()
    floor = np.empty(job.out_shape, np.complex64)
    floor.fill(1 + 1j)
    floor_seconds = time.perf_counter() - start
    del floor
    warm_groups = max(1, min(groups, batch // c + 1))
    # Compile the chunk shape on a small call first; then time the big one.
    raw_data._get_image_patches_batched(gt_padded, offsets_f[: warm_groups * c], N, warm_groups, c,
                                        mini_batch_size=batch)
    record = {"floor_seconds": floor_seconds}
    record.update(time_calls(
        lambda: raw_data._get_image_patches_batched(gt_padded, offsets_f, N, groups, c, mini_batch_size=batch),
        1, cold=False, check=lambda r: job.check_flat(to_flat(np.asarray(r[: max(1, 256 // c)]), c)),
    ))
    record["chunk_batch"] = batch
    return record


# The modes of issue 14 (Numba kernel, chunked JAX, cold starts, the CLI end to end) live in their own module.
from ptycho.bench import fast  # noqa: E402,F401
