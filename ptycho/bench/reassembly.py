"""The benchmark's reassembly section (``ptycho-patches bench --reassembly``), issue 12.

PtychoPINN's ``shift_and_sum`` on the reference workload's 20,000 scan
positions (N = 64; M = 10 and M = N): each crop is translated into the
canvas and summed.

================== ===========================================================
reassembly_legacy  PtychoPINN's loop: every crop zero-padded to the whole canvas,
                   the whole canvas translated (``tf_helper.translate``, XLA),
                   ``result += translated``; timed on a subset, scaled per patch
reassembly_tf      ``ptycho.tf_helper.shift_and_sum`` (windowed, TF/XLA)
reassembly_jax     ``placement.shift_and_sum(..., backend='jax')`` (windowed, jit)
reassembly_jax_ordered  the same with ``ordered=True``: the deterministic path (the default on a
                   GPU), in wavefront steps of windows that never meet (issue 22)
reassembly_numba   ``placement.shift_and_sum(..., backend='numpy')``, the windows by
                   the Numba kernel (the NumPy default with ``ptycho[fast]``)
reassembly_numpy   the same with the array-API algorithm (``kernel('array')``; the
                   default without numba); timed on the subset, scaled per patch
reassembly_floor   the memory floor: read every crop pixel once, write the canvas once
================== ===========================================================

Once per run (no M), the command line end to end, like the extraction's
``cli_*`` / ``save_floor`` rows (:mod:`ptycho.bench.fast`):

===================== ========================================================
cli_stitch_numpy      ``ptycho-patches stitch`` in a fresh process (import, read
cli_stitch_tensorflow the grouped file, place and normalise, the coverage, the
cli_stitch_jax        comparison with objectGuess, write the .npz) of the
                      workload's patches, made once by ``ptycho-patches extract``
stitch_floor          the floor of that job: read ``Y`` from the grouped file,
                      write the canvases as the command does
===================== ========================================================

Each mode runs in its own process, like the extraction modes.  The windowed
modes also run on the legacy subset, whose canvas they must equal (max |diff|);
the stitch rows compare with the NumPy stitch's output.
The modes are not listed in the extraction table (``listed=False``):
:func:`run_section` runs them and :func:`format_table` prints their own table,
with each row's time over TF's (the windowed TF row; the TF command line) and
over the floor.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from ptycho.bench.measure import NO_CHECK, time_calls, time_command
from ptycho.bench.registry import register
from ptycho.bench.workload import Job

__all__ = ["MODE_NAMES", "STITCH_MODE_NAMES", "legacy_shift_and_sum", "run_section", "format_table"]

MODE_NAMES = ("reassembly_legacy", "reassembly_floor", "reassembly_tf", "reassembly_jax", "reassembly_jax_ordered",
              "reassembly_numba", "reassembly_numpy")
#: Modes per M, in table order; the legacy one writes the reference the others compare to.
STITCH_MODE_NAMES = ("stitch_floor", "cli_stitch_numpy", "cli_stitch_tensorflow", "cli_stitch_jax")
#: The command line end to end, once per run; the NumPy stitch writes the output the others compare to.


def _inputs(job: Job, count: int):
    """(patches (count, N, N, 1) complex64, global_offsets (count, 1, 1, 2) float64): deterministic."""
    N, block = job.N, 256
    # Blocks of 256 patches from their own streams: the first ``count`` patches do not depend on the count.
    parts = []
    for b in range(-(-count // block)):
        rng = np.random.default_rng([job.spec["seed"], 12, b])
        size = min(block, count - b * block)
        parts.append(rng.standard_normal((size, N, N, 2), dtype=np.float32).view(np.complex64))
    patches = np.concatenate(parts)
    return patches, job.pos[:count].astype(np.float64).reshape(count, 1, 1, 2)


def legacy_shift_and_sum(obj_tensor: Any, global_offsets: Any, M: int) -> Any:
    """PtychoPINN's ``shift_and_sum`` loop (the ground truth): (S, S, 1) complex64 ``tf.Tensor``."""
    import tensorflow as tf

    from ptycho import tf_helper as hh

    N = obj_tensor.shape[1]
    obj_tensor = obj_tensor[:, N // 2 - M // 2:N // 2 + M // 2, N // 2 - M // 2:N // 2 + M // 2, :]
    center_of_mass = tf.reduce_mean(tf.cast(global_offsets, tf.float32), axis=0)
    adjusted_offsets = tf.cast(global_offsets, tf.float32) - center_of_mass
    dynamic_pad = int(tf.cast(tf.math.ceil(tf.reduce_max(tf.abs(adjusted_offsets))), tf.int32))
    dynamic_pad += dynamic_pad % 2
    result = tf.zeros_like(hh.pad(obj_tensor[0:1], dynamic_pad))
    for i in range(len(adjusted_offsets)):
        padded_obj_tensor = hh.pad(obj_tensor[i:i + 1], dynamic_pad)
        offset_2d = tf.reshape(adjusted_offsets[i], (1, 2))
        result += hh.translate(padded_obj_tensor, offset_2d, interpolation="bilinear")[0]
    return result[0]


def _reference_path(job: Job):
    return job.reference_path.with_name(f"reassembly_M{job.spec['reassembly_M']}.npy")


def _check(job: Job, subset_result: Any) -> float:
    from ptycho.testing import max_abs_diff

    path = _reference_path(job)
    if not path.exists():
        return float("nan")
    return max_abs_diff(np.asarray(subset_result).reshape(-1), np.load(path).reshape(-1))


@register("reassembly_legacy", "legacy full-canvas loop (TF)", package="tensorflow", backend="tensorflow",
          count="reassembly_legacy_count", listed=False, order=2000)
def _legacy(job: Job) -> Dict[str, Any]:
    import tensorflow as tf

    M = job.spec["reassembly_M"]
    patches, offsets = (tf.constant(a) for a in _inputs(job, job.count))
    # Compile the whole-canvas translation first (same canvas shape): the loop is timed per patch, steady state.
    from ptycho import tf_helper
    from ptycho.backends.placement import canvas_pad

    centred = tf.cast(offsets, tf.float32) - tf.reduce_mean(tf.cast(offsets, tf.float32), axis=0)
    size = M + 2 * canvas_pad(centred.numpy())
    tf_helper.translate(tf.zeros((1, size, size, 1), tf.complex64), tf.zeros((1, 2), tf.float32))

    def save(result: Any) -> float:
        np.save(_reference_path(job), result.numpy())
        return 0.0

    return time_calls(lambda: legacy_shift_and_sum(patches, offsets, M), 1, cold=False, check=save)


@register("reassembly_floor", "memory floor (read crops + write canvas)", listed=False, order=2001)
def _floor(job: Job) -> Dict[str, Any]:
    from ptycho.backends.placement import canvas_pad

    M, N = job.spec["reassembly_M"], job.N
    patches, offsets = _inputs(job, job.count)
    flat = offsets.reshape(-1, 2).astype(np.float32)
    size = M + 2 * canvas_pad(flat - flat.mean(axis=0))
    lo = N // 2 - M // 2

    def call() -> np.ndarray:
        total = patches[:, lo:lo + M, lo:lo + M, 0].sum()  # every crop pixel read once
        canvas = np.empty((size, size), np.complex64)
        canvas.fill(total)  # the canvas written once
        return canvas

    return time_calls(call, job.repeats, cold=False, check=NO_CHECK)


@register("reassembly_tf", "windowed, tf_helper.shift_and_sum (XLA)", package="tensorflow",
          backend="tensorflow", count="count", compiled=True, listed=False, order=2002)
def _tf(job: Job) -> Dict[str, Any]:
    import tensorflow as tf

    from ptycho import tf_helper

    M = job.spec["reassembly_M"]
    patches, offsets = (tf.constant(a) for a in _inputs(job, job.count))
    k = job.spec["reassembly_legacy_count"]
    record = time_calls(lambda: tf_helper.shift_and_sum(patches, offsets, M=M).numpy(), job.repeats, cold=True,
                        check=NO_CHECK)
    record["max_abs_diff"] = _check(job, tf_helper.shift_and_sum(patches[:k], offsets[:k], M=M).numpy())
    return record


@register("reassembly_jax", "windowed, placement.shift_and_sum (JAX jit)", package="jax", backend="jax",
          count="count", compiled=True, listed=False, order=2003)
def _jax(job: Job) -> Dict[str, Any]:
    return _jax_mode(job, ordered=None)


@register("reassembly_jax_ordered", "windowed, JAX jit, ordered (wavefront steps)", package="jax",
          backend="jax", count="count", compiled=True, listed=False, order=2006)
def _jax_ordered(job: Job) -> Dict[str, Any]:
    return _jax_mode(job, ordered=True)


def _jax_mode(job: Job, ordered: Any) -> Dict[str, Any]:
    import jax.numpy as jnp

    from ptycho.backends import get_backend
    from ptycho.backends.placement import shift_and_sum

    M = job.spec["reassembly_M"]
    patches, offsets = _inputs(job, job.count)
    with get_backend("jax").precision(np.complex64):
        p, o = jnp.asarray(patches[..., 0]), jnp.asarray(offsets.reshape(-1, 2).astype(np.float32))
        k = job.spec["reassembly_legacy_count"]
        record = time_calls(lambda: shift_and_sum(p, o, M, backend="jax", ordered=ordered).block_until_ready(),
                            job.repeats, cold=True, check=NO_CHECK)
        # recentred in PtychoPINN's order (placement._recentred): the subset compares exactly
        subset = shift_and_sum(p[:k], o[:k], M, backend="jax", ordered=ordered)
        record["max_abs_diff"] = _check(job, np.asarray(subset))
    return record


def _numpy(job: Job, kernel: str, cold: bool) -> Dict[str, Any]:
    from ptycho.backends import _numpy
    from ptycho.backends.placement import shift_and_sum

    M = job.spec["reassembly_M"]
    patches, offsets = _inputs(job, job.count)
    p, o = patches[..., 0], offsets.reshape(-1, 2).astype(np.float32)
    k = min(job.spec["reassembly_legacy_count"], job.count)
    with _numpy.kernel(kernel):
        record = time_calls(lambda: shift_and_sum(p, o, M, backend="numpy"), job.repeats, cold=cold, check=NO_CHECK)
        record["max_abs_diff"] = _check(job, shift_and_sum(p[:k], o[:k], M, backend="numpy"))
    return record


@register("reassembly_numba", "windowed, NumPy + Numba kernel", package="numba", backend="numpy",
          count="count", compiled=True, listed=False, order=2004)
def _numba(job: Job) -> Dict[str, Any]:
    return _numpy(job, "numba", cold=True)


@register("reassembly_numpy", "windowed, NumPy array-API", backend="numpy", count="subset_count",
          listed=False, order=2005)
def _numpy_array(job: Job) -> Dict[str, Any]:
    return _numpy(job, "array", cold=False)


# ---------------------------------------------------------------------------
# The stitch command end to end, and the floor of its job.
# ---------------------------------------------------------------------------


def _stitch_input(job: Job) -> Path:
    """The workload's patches as a grouped file (``ptycho-patches extract``, NumPy backend), made once."""
    from ptycho.bench.fast import _dataset, cli_env, extract_command

    path = Path(job.spec["workdir"]) / f"stitch-groups-{job.count}.npz"
    if not path.exists():
        tmp = path.with_name(f"tmp-{path.name}")
        proc = subprocess.run(extract_command(job, _dataset(job), tmp, "numpy"), capture_output=True, text=True,
                              env=cli_env())
        if proc.returncode:
            raise RuntimeError(f"ptycho-patches extract (the stitch's input) failed: {proc.stderr.strip()[-500:]}")
        tmp.replace(path)
    return path


def _stitch_reference(job: Job) -> Path:
    return Path(job.spec["workdir"]) / f"stitch-reference-{job.count}.npz"


def _stitch_diff(out: Path, reference: Path) -> float:
    """max |diff| of the object and the coverage against the reference output (NaN without one)."""
    if not reference.exists():
        return float("nan")
    with np.load(out) as got, np.load(reference) as ref:
        return max(float(np.max(np.abs(got[k].astype(np.complex128) - ref[k]), initial=0.0))
                   for k in ("object", "coverage"))


def _cli_stitch(job: Job, backend: str) -> Dict[str, Any]:
    from ptycho.bench.fast import cli_env

    src = _stitch_input(job)
    out = Path(job.spec["workdir"]) / f"stitch-{backend}.npz"
    cmd = [sys.executable, "-m", "ptycho", "stitch", str(src), "-o", str(out), "--backend", backend,
           "--overwrite", "--quiet"]
    record = time_command(cmd, min(job.repeats, 3), env=cli_env(), what="ptycho-patches stitch")
    reference = _stitch_reference(job)
    if backend == "numpy":
        out.replace(reference)  # the others compare with it
        record["max_abs_diff"] = float("nan")
    else:
        record["max_abs_diff"] = _stitch_diff(out, reference)
        out.unlink()
    return record


@register("cli_stitch_numpy", "CLI stitch end to end (numpy)", backend="numpy", listed=False, order=2010)
def _cli_stitch_numpy(job: Job) -> Dict[str, Any]:
    return _cli_stitch(job, "numpy")


@register("cli_stitch_tensorflow", "CLI stitch end to end (tensorflow)", package="tensorflow",
          backend="tensorflow", listed=False, order=2011)
def _cli_stitch_tf(job: Job) -> Dict[str, Any]:
    return _cli_stitch(job, "tensorflow")


@register("cli_stitch_jax", "CLI stitch end to end (jax)", package="jax", backend="jax", listed=False, order=2012)
def _cli_stitch_jax(job: Job) -> Dict[str, Any]:
    return _cli_stitch(job, "jax")


@register("stitch_floor", "floor of the CLI stitch: read Y, write the canvases", listed=False, order=2009)
def _stitch_floor(job: Job) -> Dict[str, Any]:
    from ptycho._io import save_npz

    src = _stitch_input(job)
    out = Path(job.spec["workdir"]) / "stitch-floor.npz"
    size = job.spec["object_size"]  # the canvas: the objectGuess's shape

    def call() -> None:
        with np.load(src) as data:
            y = data["Y"]  # the patches read once
        canvas = np.empty((size, size), np.complex64)
        canvas.fill(y.flat[0])
        save_npz(out, {"object": canvas, "coverage": canvas.real.astype(np.float32)}, overwrite=True)

    record = time_calls(call, job.repeats, cold=False, check=NO_CHECK)
    out.unlink()
    return record


def run_section(spec: Dict[str, Any], Ms: Sequence[int], legacy_count: int,
                run_worker: Callable[[str, Dict[str, Any]], Dict[str, Any]],
                importable: Callable[[Any], bool]) -> List[Dict[str, Any]]:
    """Run the reassembly modes for each M (one process each); return the table rows."""
    from ptycho.bench.registry import mode

    rows: List[Dict[str, Any]] = []
    for M in Ms:
        c = spec["gridsize"] ** 2  # a Job's workload is whole groups
        legacy = max(c, min(legacy_count, spec["count"]) // c * c)
        sub = dict(spec, reassembly_M=int(M), reassembly_legacy_count=legacy)
        records = {}
        for name in MODE_NAMES:
            package = mode(name).package
            records[name] = (run_worker(name, sub) if importable(package)
                             else {"mode": name, "skipped": f"{package} is not installed"})
        rows.extend(_rows(records, int(M), spec))
    records = {}
    for name in STITCH_MODE_NAMES:
        package = mode(name).package
        records[name] = (run_worker(name, spec) if importable(package)
                         else {"mode": name, "skipped": f"{package} is not installed"})
    rows.extend(_rows(records, None, spec, floor="stitch_floor", tf="cli_stitch_tensorflow"))
    return rows


def _rows(records: Dict[str, Dict[str, Any]], M: Optional[int], spec: Dict[str, Any], *,
          floor: str = "reassembly_floor", tf: str = "reassembly_tf-warm") -> List[Dict[str, Any]]:
    """Table rows of one M (or of the stitch command, M None): seconds per the whole workload, and each
    row's wall and CPU time over the ``floor`` mode's, the ``tf`` row's and the legacy loop's."""
    from ptycho.bench.registry import mode

    full = spec["count"]
    patch_bytes = full * spec["N"] ** 2 * 8
    out: List[Dict[str, Any]] = []
    for name, rec in records.items():
        label = mode(name).label
        if "error" in rec or "skipped" in rec:
            out.append({"M": M, "mode": name, "label": label, "note": rec.get("error") or rec.get("skipped"),
                        "skipped": "error" not in rec})
            continue
        variants = [("cold", "cold_seconds", "cold_peak_bytes"), ("warm", "warm_seconds", "warm_peak_bytes")]
        if not mode(name).compiled:
            variants = [("", "warm_seconds" if "warm_seconds" in rec else "cold_seconds",
                         "warm_peak_bytes" if "warm_peak_bytes" in rec else "cold_peak_bytes")]
        for tag, key, peak in variants:
            if key not in rec:
                continue
            seconds = rec[key] / rec["count"] * full
            out.append({"M": M, "mode": f"{name}-{tag}" if tag else name, "label": label + (f" {tag}" if tag else ""),
                        "count_timed": rec["count"], "seconds": seconds,
                        "cpu_seconds": rec[key.replace("_seconds", "_cpu_seconds")] / rec["count"] * full,
                        "peak_bytes": rec[peak], "peak_over_patches": rec[peak] / patch_bytes,
                        "max_abs_diff": rec.get("max_abs_diff", float("nan"))})
    found = {key: next((r for r in out if r["mode"] == key and "seconds" in r), None)
             for key in ("reassembly_legacy", floor, tf)}
    legacy, floor_row, tf_row = found["reassembly_legacy"], found[floor], found[tf]
    nan = float("nan")
    for row in out:
        if "seconds" in row:
            row["speedup_vs_legacy"] = legacy["seconds"] / row["seconds"] if legacy else nan
            row["ratio_to_floor"] = row["seconds"] / floor_row["seconds"] if floor_row else nan
            row["cpu_ratio_to_floor"] = (row["cpu_seconds"] / floor_row["cpu_seconds"]
                                         if floor_row and floor_row["cpu_seconds"] > 0 else nan)
            row["ratio_to_tf"] = row["seconds"] / tf_row["seconds"] if tf_row else nan
            row["cpu_ratio_to_tf"] = (row["cpu_seconds"] / tf_row["cpu_seconds"]
                                      if tf_row and tf_row["cpu_seconds"] > 0 else nan)
    return out


def format_table(rows: Sequence[Dict[str, Any]], count: int) -> str:
    """The reassembly table (plain text, also used verbatim in docs/PERFORMANCE.md).

    ``/ TF`` and ``/ floor`` divide wall (and CPU) seconds by those of TF's
    windowed warm row and of the floor, of the same M; the stitch rows (M
    ``-``) by the TF command line's and the stitch floor's.
    """
    from ptycho.bench.report import fmt, ruled

    head = (f"{'M':>3} {'mode':<52} {'timed':>6} {'s/' + str(count):>9} {'cpu s':>8} {'vs legacy':>10} "
            f"{'/ TF':>7} {'cpu/TF':>7} {'/ floor':>8} {'cpu/fl':>7} {'peak MB':>8} {'max|diff|':>9}")
    lines = []
    for r in rows:
        m = "-" if r["M"] is None else r["M"]
        if "seconds" not in r:
            lines.append(f"{m:>3} {r['label']:<52} {'skipped' if r.get('skipped') else 'failed'}: {r['note']}")
            continue
        ratios = " ".join(_times(r[key], spec, width) for key, spec, width in (
            ("speedup_vs_legacy", ".0f", 10), ("ratio_to_tf", ".2f", 7), ("cpu_ratio_to_tf", ".2f", 7),
            ("ratio_to_floor", ".1f", 8), ("cpu_ratio_to_floor", ".1f", 7)))
        lines.append(
            f"{m:>3} {r['label']:<52} {r['count_timed']:>6} {r['seconds']:>9.3f} {r['cpu_seconds']:>8.2f} "
            f"{ratios} {r['peak_bytes'] / 1e6:>8.1f} {fmt(r['max_abs_diff'], '>9.1e')}"
        )
    return ruled(head, lines)


def _times(value: float, spec: str, width: int) -> str:
    """A ratio as ``12.3x`` right-aligned in ``width`` (``-`` when undefined)."""
    from ptycho.bench.report import fmt

    text = fmt(value, spec)
    return f"{text + 'x' if text != '-' else text:>{width}}"
