"""The patch-extraction benchmark: ``ptycho-patches bench`` / ``python -m ptycho.bench``.

Reference workload (issue 4): a 392 x 392 complex64 object, 5,000 groups of
gridsize 2 (20,000 patches), N = 64, group centres spread uniformly over the
object and members within N/4 of their centre (so some patches reach into the
zero fill).  Every mode runs in its own fresh Python process, so that compile
times and memory peaks are honest:

========== =================================================================
legacy     PtychoPINN's loop ``_get_image_patches_iterative`` (one full-image
           translation per patch), timed on a subset and scaled per patch
tf         ``_get_image_patches_batched`` (TF/XLA translate-then-slice):
           cold = first call in a fresh process (XLA compile included),
           warm = median of the repeats
jax        ``extract_patches_grouped(..., backend='jax')`` (``jax.jit``)
numpy      ``extract_patches_grouped(..., backend='numpy')`` (eager)
dispatch   ``get_image_patches`` end to end (validation, padding, layout)
scipy      ``scipy.ndimage.map_coordinates(order=1, mode='grid-constant')``
           on the real and imaginary planes
opencv     ``cv2.remap`` (INTER_LINEAR, BORDER_CONSTANT) on the (re, im)
           float32 planes; OpenCV rounds the sample coordinates to 1/32
           pixel (fixed-point weights), its ``max |diff|`` shows that
torch      ``torch.nn.functional.grid_sample`` (bilinear, zeros padding,
           align_corners=True) when PyTorch is importable
floor      the memory floor: allocate the output array and write every element
xla_floor  XLA's own floor: a TF/XLA kernel that writes the same complex
           output from the position arithmetic alone (no gathers)
========== =================================================================

Per mode: seconds for the whole workload (subset modes scaled per patch),
patches/s, speed-up over the legacy loop, ratio to the floor, peak resident
memory over the pre-call baseline as a multiple of the output array, and
``max |diff|`` to the legacy loop on the patches the loop computed.  Peaks
come from Linux's ``VmHWM``, reset before each call through
``/proc/self/clear_refs`` (elsewhere: ``ru_maxrss``, not resettable, so only
a lower bound).

``--chunk-study`` adds the chunked extraction table
(``patch_extraction_batch_size``): time per patch and peak memory for
10^3, 10^4 and 10^5 patches and a 200,000-patch run into the preallocated
output.

``--hugepages`` runs every mode with ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``.
NumPy asks the kernel for transparent huge pages for its large arrays (so the
memory floor faults in 2 MB pages); TensorFlow's and XLA's buffers come from
plain ``malloc`` and fault in 4 KB pages unless this tunable is set.  The
default run leaves the environment alone.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
from ptycho.errors import InputError, InputTypeError


__all__ = ["main", "make_workload", "MODES"]

PROG = "ptycho-patches bench"

#: Mode name -> (table label, backend library it needs or None, default count key).
#: The count key says which option sets the number of patches the mode computes.
MODES: Dict[str, tuple] = {
    "floor": ("memory floor (alloc + write)", None, "count"),
    "legacy": ("legacy loop (TF)", "tensorflow", "legacy_count"),
    "tf": ("TF batched (XLA)", "tensorflow", "count"),
    "jax": ("JAX jit", "jax", "count"),
    "numpy": ("NumPy (eager)", None, "subset_count"),
    "dispatch": ("get_image_patches (end to end)", "tensorflow", "count"),
    "scipy": ("SciPy map_coordinates", "scipy", "subset_count"),
    "opencv": ("OpenCV remap", "cv2", "count"),
    "torch": ("torch grid_sample", "torch", "count"),
    "xla_floor": ("XLA floor (write, no gather)", "tensorflow", "count"),
}
#: Modes whose first call compiles: they get a cold and a warm row.
_COMPILED = ("tf", "jax", "dispatch")
#: Backend names (--backends) -> the modes that exercise them.
_BACKEND_MODES = {"tensorflow": ("legacy", "tf", "dispatch", "xla_floor"), "jax": ("jax",), "numpy": ("numpy",)}
_RESULT_TAG = "PTYCHO_BENCH_RESULT "
_WORKER_TIMEOUT_S = 900


# ---------------------------------------------------------------------------
# Workload
# ---------------------------------------------------------------------------


def make_workload(object_size: int, count: int, gridsize: int, N: int, seed: int = 0) -> Dict[str, np.ndarray]:
    """The benchmark's object and scan positions (deterministic for a seed).

    Returns
    -------
    dict with
        ``object`` (S, S) complex64, a smooth random amplitude and phase;
        ``positions`` (count, 2) float32, (x, y) object pixels, flat order
        ``b*c + k``;
        ``global_offsets`` (B, 1, 2, 1) float32 integer group centres and
        ``local_offsets`` (B, 1, 2, c) float32, whose float64 sum is exactly
        ``positions`` (so every mode samples the same coordinates).
    """
    c = gridsize**2
    if count % c:
        raise InputError(f"count must be a multiple of gridsize**2 = {c}, got {count}")
    # Separate streams: the first k patches of a workload do not depend on its
    # count, so subset modes and the reference see the same positions.
    rng_object, rng_centres, rng_spread = (np.random.default_rng([seed, i]) for i in range(3))
    yy, xx = np.mgrid[0:object_size, 0:object_size] / max(object_size, 1)
    amplitude = 0.6 + 0.4 * np.cos(7.0 * xx + 3.0 * yy + rng_object.uniform(0, 2 * np.pi))
    phase = np.sin(5.0 * yy - 2.0 * xx) + 0.3 * rng_object.standard_normal((object_size, object_size))
    obj = (amplitude * np.exp(1j * phase)).astype(np.complex64)

    groups = count // c
    centres = np.round(rng_centres.uniform(0, object_size, (groups, 1, 2))).astype(np.float32)
    spread = rng_spread.uniform(-N / 4, N / 4, (groups, c, 2)).astype(np.float32)
    positions = (centres + spread).astype(np.float32)  # (B, c, 2)
    # position - centre is exact in float32 (Sterbenz), so global + local == position.
    local = np.transpose(positions - centres, (0, 2, 1))[:, None]  # (B, 1, 2, c)
    global_offsets = np.transpose(centres, (0, 2, 1))[:, None]  # (B, 1, 2, 1)
    return {
        "object": obj,
        "positions": positions.reshape(-1, 2),
        "global_offsets": global_offsets,
        "local_offsets": local.astype(np.float32),
    }


# ---------------------------------------------------------------------------
# Measurement inside a worker process
# ---------------------------------------------------------------------------


def _status_bytes(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class _PeakMeter:
    """Peak resident memory of one call over the resident memory just before it."""

    def __init__(self) -> None:
        self.method = "VmHWM" if self._reset() else "ru_maxrss"

    @staticmethod
    def _reset() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as refs:
                refs.write("5")  # Linux: reset VmHWM to the current VmRSS
            return _status_bytes("VmHWM") is not None
        except OSError:
            return False

    @staticmethod
    def _rss() -> int:
        rss = _status_bytes("VmRSS")
        if rss is not None:
            return rss
        import resource

        scale = 1 if sys.platform == "darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale

    def start(self) -> None:
        import gc

        gc.collect()
        if self.method == "VmHWM":
            self._reset()
        self.baseline = self._rss()

    def stop(self) -> int:
        peak = _status_bytes("VmHWM") if self.method == "VmHWM" else self._rss()
        return max(0, int(peak) - self.baseline)


def _cpu_seconds() -> float:
    """CPU time of this process, all threads (user + system)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _time_calls(call: Callable[[], Any], repeats: int, cold: bool, check: Callable[[Any], float]) -> Dict[str, Any]:
    """Time ``call``: the first call (cold) and the median of ``repeats`` more (warm).

    With ``cold=False`` the first call counts as one of the repeats.
    ``check(result)`` gives max |diff| to the reference (outside the timing);
    each result is dropped before the next call, so no baseline holds an
    output.  Wall and CPU seconds are both kept: on a shared machine CPU time
    is the steadier of the two.
    """
    meter = _PeakMeter()
    record: Dict[str, Any] = {"peak_method": meter.method}
    meter.start()
    cpu, start = _cpu_seconds(), time.perf_counter()
    result = call()
    record["cold_seconds"] = time.perf_counter() - start
    record["cold_cpu_seconds"] = _cpu_seconds() - cpu
    record["cold_peak_bytes"] = meter.stop()
    record["max_abs_diff"] = check(result)
    del result
    if cold:
        times: List[float] = []
        cpus: List[float] = []
        peaks: List[int] = []
    else:
        times, cpus, peaks = [record["cold_seconds"]], [record["cold_cpu_seconds"]], [record["cold_peak_bytes"]]
    for _ in range(max(0, repeats - len(times))):
        meter.start()
        cpu, start = _cpu_seconds(), time.perf_counter()
        result = call()
        times.append(time.perf_counter() - start)
        cpus.append(_cpu_seconds() - cpu)
        peaks.append(meter.stop())
        del result
    if times:
        record["warm_seconds"] = statistics.median(times)
        record["warm_cpu_seconds"] = statistics.median(cpus)
        record["warm_peak_bytes"] = max(peaks)
        record["warm_times"] = times
    return record


def _flat(patches: np.ndarray, c: int) -> np.ndarray:
    """(B, N, N, c) channel layout -> (B*c, N, N), flat index b*c + k."""
    b, n, m, _ = patches.shape
    return np.transpose(patches, (0, 3, 1, 2)).reshape(b * c, n, m)


def _worker(mode: str, spec: Dict[str, Any]) -> Dict[str, Any]:
    """Run one mode in this (fresh) process and return its measurements."""
    N, c, repeats = spec["N"], spec["gridsize"] ** 2, spec["repeats"]
    count = spec[MODES[mode][2]] if mode != "chunk" else spec["chunk_count"]
    work = make_workload(spec["object_size"], count, spec["gridsize"], N, spec["seed"])
    obj, pos = work["object"], work["positions"]
    g_off, l_off = work["global_offsets"], work["local_offsets"]
    groups = count // c
    ref_path = Path(spec["workdir"]) / "legacy_reference.npy"
    reference = np.load(ref_path) if ref_path.exists() and mode != "legacy" else None

    def check_flat(flat: np.ndarray) -> float:
        if reference is None:
            return float("nan")
        k = min(len(reference), len(flat))
        return float(np.max(np.abs(flat[:k] - reference[:k]))) if k else float("nan")

    def check_channels(result: Any) -> float:
        return check_flat(_flat(np.asarray(result), c))

    out_shape = (groups, N, N, c)
    record: Dict[str, Any] = {"mode": mode, "count": count, "output_bytes": int(np.prod(out_shape)) * 8}

    if mode == "floor":
        def call() -> np.ndarray:
            out = np.empty(out_shape, np.complex64)
            out.fill(1 + 1j)
            return out

        record.update(_time_calls(call, repeats, cold=False, check=lambda r: float("nan")))
    elif mode == "xla_floor":
        import tensorflow as tf

        @tf.function(jit_compile=True)
        def write(positions: tf.Tensor) -> tf.Tensor:
            tx = tf.reshape(positions[:, 0], (groups, 1, 1, c))
            ty = tf.reshape(positions[:, 1], (groups, 1, 1, c))
            grid = tf.range(N, dtype=tf.float32)
            gx, gy = tf.reshape(grid, (1, 1, N, 1)), tf.reshape(grid, (1, N, 1, 1))
            return tf.complex(gx + tx + gy, gy + ty)

        positions = tf.constant(pos)
        write(positions)  # compile outside the timing: this row is a floor, not a mode
        record.update(_time_calls(lambda: write(positions), repeats, cold=False, check=lambda r: float("nan")))
    elif mode in ("legacy", "tf", "dispatch", "chunk"):
        import warnings

        import tensorflow as tf

        from ptycho import raw_data
        from ptycho.tf_helper import _channel_to_flat, pad

        gt_padded = pad(tf.constant(obj[None, :, :, None]), N // 2)
        offsets_f = _channel_to_flat(tf.constant((g_off + l_off).astype(np.float32)))
        if mode == "legacy":
            # Compile the full-image translation on one group first: the loop is
            # timed in its steady state, per patch.
            raw_data._get_image_patches_iterative(gt_padded, offsets_f[:c], N, 1, c)

            def save_reference(result: np.ndarray) -> float:
                np.save(ref_path, _flat(result, c))
                return 0.0

            record.update(_time_calls(
                lambda: raw_data._get_image_patches_iterative(gt_padded, offsets_f, N, groups, c).numpy(),
                1, cold=False, check=save_reference,
            ))
        elif mode == "tf":
            record.update(_time_calls(
                lambda: raw_data._get_image_patches_batched(gt_padded, offsets_f, N, groups, c),
                repeats, cold=True, check=check_channels,
            ))
        elif mode == "dispatch":
            from ptycho.config.config import ModelConfig

            config = ModelConfig(N=N, gridsize=spec["gridsize"], use_batched_patch_extraction=True)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                record.update(_time_calls(
                    lambda: raw_data.get_image_patches(obj, g_off, l_off, config=config),
                    repeats, cold=True, check=check_channels,
                ))
        else:  # chunk: chunked extraction into the preallocated output
            batch = spec["chunk_batch"]
            # The memory floor of this output size, in this process, just before:
            # first-touch page faults of a large fresh array grow with its size.
            start = time.perf_counter()
            floor = np.empty(out_shape, np.complex64)
            floor.fill(1 + 1j)
            record["floor_seconds"] = time.perf_counter() - start
            del floor
            warm_groups = max(1, min(groups, batch // c + 1))
            # Compile the chunk shape on a small call first; then time the big one.
            raw_data._get_image_patches_batched(
                gt_padded, offsets_f[: warm_groups * c], N, warm_groups, c, mini_batch_size=batch
            )
            record.update(_time_calls(
                lambda: raw_data._get_image_patches_batched(
                    gt_padded, offsets_f, N, groups, c, mini_batch_size=batch
                ),
                1, cold=False, check=lambda r: check_flat(_flat(np.asarray(r[: max(1, 256 // c)]), c)),
            ))
            record["chunk_batch"] = batch
    elif mode in ("jax", "numpy"):
        from ptycho.backends import extract_patches_grouped

        def call() -> Any:
            out = extract_patches_grouped(obj, pos, N, channels=c, backend=mode)
            return out.block_until_ready() if mode == "jax" else out

        record.update(_time_calls(call, repeats if mode == "jax" else min(repeats, 2),
                                  cold=(mode == "jax"), check=check_channels))
    elif mode == "scipy":
        from scipy import ndimage

        padded = np.pad(obj, N // 2)
        planes = (np.ascontiguousarray(padded.real), np.ascontiguousarray(padded.imag))
        grid = np.arange(N, dtype=np.float32)

        def call() -> np.ndarray:
            out = np.empty((count, N, N), np.complex64)
            step = 256
            for start in range(0, count, step):
                p = pos[start : start + step]
                # Sample coordinates summed in float32 as the contract says, then widened.
                rows = (grid[None, :, None] + p[:, 1, None, None]).astype(np.float64)
                cols = (grid[None, None, :] + p[:, 0, None, None]).astype(np.float64)
                coords = np.stack(np.broadcast_arrays(rows, cols))
                out[start : start + step].real = ndimage.map_coordinates(planes[0], coords, order=1, mode="grid-constant", cval=0.0)
                out[start : start + step].imag = ndimage.map_coordinates(planes[1], coords, order=1, mode="grid-constant", cval=0.0)
            return out

        record.update(_time_calls(call, min(repeats, 2), cold=False, check=check_flat))
    elif mode == "opencv":
        import cv2

        # (re, im) as a 2-channel float32 image: one remap call serves both parts.
        pairs = np.ascontiguousarray(np.pad(obj, N // 2)).view(np.float32).reshape(obj.shape[0] + 2 * (N // 2), -1, 2)
        grid = np.arange(N, dtype=np.float32)
        step = max(1, 32000 // N)  # cv2.remap wants map sides below 32767

        def call() -> np.ndarray:
            out = np.empty((count, N, N), np.complex64)
            for start in range(0, count, step):
                p = pos[start : start + step]
                k = len(p)
                map_x = np.ascontiguousarray(np.broadcast_to(grid[None, None, :] + p[:, 0, None, None], (k, N, N)).reshape(k * N, N))
                map_y = np.ascontiguousarray(np.broadcast_to(grid[None, :, None] + p[:, 1, None, None], (k, N, N)).reshape(k * N, N))
                dst = cv2.remap(pairs, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
                out[start : start + k] = dst.reshape(k, N, N, 2).view(np.complex64)[..., 0]
            return out

        record.update(_time_calls(call, repeats, cold=False, check=check_flat))
    elif mode == "torch":
        import torch

        padded = np.pad(obj, N // 2)
        height, width = padded.shape
        source = torch.from_numpy(np.stack([padded.real, padded.imag]).astype(np.float32))[None]
        grid = np.arange(N, dtype=np.float32)
        step = max(1, 32000 // N)

        def call() -> np.ndarray:
            out = np.empty((count, N, N), np.complex64)
            with torch.no_grad():
                for start in range(0, count, step):
                    p = pos[start : start + step]
                    k = len(p)
                    xs = np.broadcast_to(grid[None, None, :] + p[:, 0, None, None], (k, N, N))
                    ys = np.broadcast_to(grid[None, :, None] + p[:, 1, None, None], (k, N, N))
                    # align_corners=True: -1 and 1 are the centres of the corner pixels.
                    norm = np.stack([xs * (2.0 / (width - 1)) - 1, ys * (2.0 / (height - 1)) - 1], -1)
                    g = torch.from_numpy(norm.astype(np.float32).reshape(1, k * N, N, 2))
                    res = torch.nn.functional.grid_sample(source, g, mode="bilinear", padding_mode="zeros", align_corners=True)
                    planes = res[0].numpy().reshape(2, k, N, N)
                    out[start : start + k].real = planes[0]
                    out[start : start + k].imag = planes[1]
            return out

        record.update(_time_calls(call, repeats, cold=False, check=check_flat))
    else:
        raise InputError(f"unknown mode {mode!r}")
    return record


# ---------------------------------------------------------------------------
# The parent: one subprocess per mode, then the table, JSON and chart
# ---------------------------------------------------------------------------


def _importable(package: Optional[str]) -> bool:
    if package is None:
        return True
    import importlib.util

    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


#: glibc (>= 2.35) tunable: malloc asks for transparent huge pages (madvise), as
#: NumPy already does for its own large arrays.
_HUGEPAGES_TUNABLE = "glibc.malloc.hugetlb=1"


def _run_worker(mode: str, spec: Dict[str, Any]) -> Dict[str, Any]:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if spec.get("hugepages"):
        tunables = env.get("GLIBC_TUNABLES")
        env["GLIBC_TUNABLES"] = f"{tunables}:{_HUGEPAGES_TUNABLE}" if tunables else _HUGEPAGES_TUNABLE
    cmd = [sys.executable, "-m", "ptycho.bench", "--worker", mode, "--spec", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=_WORKER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"mode": mode, "error": f"timed out after {_WORKER_TIMEOUT_S} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(_RESULT_TAG):
            return json.loads(line[len(_RESULT_TAG):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    return {"mode": mode, "error": f"worker exited with status {proc.returncode}: " + " | ".join(tail)}


def _rows(records: Dict[str, Dict[str, Any]], full_count: int) -> List[Dict[str, Any]]:
    """Table rows: per-patch times scaled to the full workload, ratios filled in."""
    rows: List[Dict[str, Any]] = []
    for mode, rec in records.items():
        label = MODES[mode][0]
        if "error" in rec or "skipped" in rec:
            rows.append({"mode": mode, "label": label, "note": rec.get("error") or rec.get("skipped")})
            continue
        variants = [("cold", "cold_seconds", "cold_peak_bytes"), ("warm", "warm_seconds", "warm_peak_bytes")]
        if mode not in _COMPILED:
            variants = [("", "warm_seconds" if "warm_seconds" in rec else "cold_seconds",
                         "warm_peak_bytes" if "warm_peak_bytes" in rec else "cold_peak_bytes")]
        for tag, key, peak_key in variants:
            if key not in rec:
                continue
            per_patch = rec[key] / rec["count"]
            cpu_key = key.replace("_seconds", "_cpu_seconds")
            rows.append({
                "mode": mode if not tag else f"{mode}-{tag}",
                "label": label + (f" {tag}" if tag else ""),
                "count_timed": rec["count"],
                "seconds": per_patch * full_count,
                "cpu_seconds": rec[cpu_key] / rec["count"] * full_count if cpu_key in rec else None,
                "per_patch_us": per_patch * 1e6,
                "patches_per_s": 1.0 / per_patch if per_patch > 0 else float("inf"),
                "peak_bytes": rec[peak_key],
                "peak_over_output": rec[peak_key] / rec["output_bytes"],
                "max_abs_diff": rec.get("max_abs_diff", float("nan")),
                "peak_method": rec.get("peak_method"),
            })
    legacy = next((r for r in rows if r["mode"] == "legacy" and "seconds" in r), None)
    floor = next((r for r in rows if r["mode"] == "floor" and "seconds" in r), None)
    for row in rows:
        if "seconds" not in row:
            continue
        row["speedup_vs_legacy"] = legacy["seconds"] / row["seconds"] if legacy else float("nan")
        row["ratio_to_floor"] = row["seconds"] / floor["seconds"] if floor else float("nan")
    return rows


def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def format_table(rows: Sequence[Dict[str, Any]], full_count: int) -> str:
    """The terminal table (plain text, also used verbatim in docs/PERFORMANCE.md)."""
    head = (f"{'mode':<36} {'timed':>6} {'s/' + str(full_count):>9} {'cpu s':>7} {'patches/s':>10} "
            f"{'vs legacy':>9} {'/ floor':>7} {'peak/out':>8} {'max|diff|':>9}")
    lines = [head, "-" * len(head)]
    for r in rows:
        if "seconds" not in r:
            lines.append(f"{r['label']:<36} {'skipped: ' + str(r['note'])}")
            continue
        lines.append(
            f"{r['label']:<36} {r['count_timed']:>6} {r['seconds']:>9.3f} {_fmt(r['cpu_seconds'], '>7.2f')} "
            f"{r['patches_per_s']:>10.0f} "
            f"{_fmt(r['speedup_vs_legacy'], '>8.1f')}x {_fmt(r['ratio_to_floor'], '>6.2f')}x "
            f"{_fmt(r['peak_over_output'], '>7.2f')}x {_fmt(r['max_abs_diff'], '>9.1e')}"
        )
    return "\n".join(lines)


def _targets(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Issue 4's targets, evaluated on this run."""
    by = {r["mode"]: r for r in rows if "seconds" in r}
    checks: List[Dict[str, Any]] = []

    def add(name: str, value: Optional[float], ok: Optional[bool]) -> None:
        checks.append({"target": name, "value": value, "met": ok})

    def get(mode: str, key: str) -> Optional[float]:
        return by[mode][key] if mode in by else None

    tf_w, tf_c = get("tf-warm", "speedup_vs_legacy"), get("tf-cold", "speedup_vs_legacy")
    add("TF batched warm >= 100x legacy", tf_w, None if tf_w is None else tf_w >= 100)
    add("TF batched cold >= 20x legacy", tf_c, None if tf_c is None else tf_c >= 20)
    floor_ratio = get("tf-warm", "ratio_to_floor")
    add("TF batched warm <= 4x floor", floor_ratio, None if floor_ratio is None else floor_ratio <= 4)
    peak = get("tf-warm", "peak_over_output")
    add("TF batched peak <= 1.5x output", peak, None if peak is None else peak <= 1.5)
    jax_w = get("jax-warm", "speedup_vs_legacy")
    add("JAX warm >= 50x legacy", jax_w, None if jax_w is None else jax_w >= 50)
    for peer in ("scipy", "opencv"):
        if "jax-warm" in by and peer in by:
            ratio = by[peer]["seconds"] / by["jax-warm"]["seconds"]
            add(f"JAX faster than {peer} (their time / JAX time)", ratio, ratio > 1)
    diff = get("tf-warm", "max_abs_diff")
    add("TF batched bit-exact vs legacy (max|diff| == 0)", diff, None if diff is None else diff == 0)
    return checks


def _chunk_rows(records: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    rows = []
    for rec in records:
        if "error" in rec:
            rows.append({"count": rec.get("count"), "note": rec["error"]})
            continue
        rows.append({
            "count": rec["count"],
            "chunk_batch": rec["chunk_batch"],
            "seconds": rec["cold_seconds"],
            "per_patch_us": rec["cold_seconds"] / rec["count"] * 1e6,
            "floor_per_patch_us": rec["floor_seconds"] / rec["count"] * 1e6,
            "ratio_to_floor": rec["cold_seconds"] / rec["floor_seconds"],
            "output_bytes": rec["output_bytes"],
            "peak_bytes": rec["cold_peak_bytes"],
            "peak_over_output": rec["cold_peak_bytes"] / rec["output_bytes"],
            "max_abs_diff": rec.get("max_abs_diff"),
        })
    return rows


def format_chunk_table(rows: Sequence[Dict[str, Any]]) -> str:
    head = (f"{'patches':>8} {'chunk':>6} {'seconds':>8} {'us/patch':>9} {'floor us':>9} {'/ floor':>7} "
            f"{'output GB':>9} {'peak GB':>8} {'peak/out':>8}")
    lines = [head, "-" * len(head)]
    for r in rows:
        if "seconds" not in r:
            lines.append(f"{r['count']:>8} failed: {r['note']}")
            continue
        lines.append(
            f"{r['count']:>8} {r['chunk_batch']:>6} {r['seconds']:>8.2f} {r['per_patch_us']:>9.1f} "
            f"{r['floor_per_patch_us']:>9.1f} {r['ratio_to_floor']:>6.2f}x "
            f"{r['output_bytes'] / 1e9:>9.3f} {r['peak_bytes'] / 1e9:>8.3f} {r['peak_over_output']:>7.2f}x"
        )
    return "\n".join(lines)


def plot(result: Dict[str, Any], path: Path) -> None:
    """Bar chart: patches/s (log scale, with the legacy and floor lines) and peak / output."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if "seconds" in r]
    labels = [r["label"] for r in rows]
    fig, (ax_speed, ax_mem) = plt.subplots(1, 2, figsize=(13, 0.45 * len(rows) + 1.8), sharey=True,
                                           gridspec_kw={"width_ratios": [3, 1.4]})
    y = np.arange(len(rows))
    colours = ["#1f77b4" if r["mode"].startswith(("tf", "jax", "numpy", "dispatch")) else
               "#7f7f7f" if r["mode"] in ("legacy", "floor", "xla_floor") else "#ff7f0e" for r in rows]
    ax_speed.barh(y, [r["patches_per_s"] for r in rows], color=colours)
    ax_speed.set_xscale("log")
    for yi, r in zip(y, rows):
        ax_speed.text(r["patches_per_s"] * 1.08, yi, f"{_fmt(r['speedup_vs_legacy'], '.0f')}x", va="center", fontsize=8)
    ax_speed.set_yticks(y, labels)
    ax_speed.invert_yaxis()
    ax_speed.set_xlabel("patches per second (log); label: speed-up over the legacy loop")
    ax_mem.barh(y, [r["peak_over_output"] for r in rows], color=colours)
    ax_mem.axvline(1.5, color="k", lw=0.8, ls="--")
    ax_mem.set_xlabel("peak memory / output size (dashed: 1.5x)")
    w = result["workload"]
    fig.suptitle(f"{w['count']} patches, N={w['N']}, {w['object_size']}x{w['object_size']} complex64, "
                 f"gridsize {w['gridsize']}; {result['machine']['cpus']} CPUs"
                 + ("; malloc with huge pages" if w.get("hugepages") else ""))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _machine() -> Dict[str, Any]:
    info: Dict[str, Any] = {"cpus": os.cpu_count(), "platform": platform.platform(),
                            "python": platform.python_version(), "numpy": np.__version__}
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            info["cpu"] = next((ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")), None)
    except OSError:
        pass
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as thp:
            info["transparent_hugepage"] = thp.read().strip()
    except OSError:
        pass
    from importlib import metadata

    for dist in ("tensorflow", "jax", "scipy", "opencv-python-headless", "torch"):
        try:
            info[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return info


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Benchmark patch extraction against PtychoPINN's legacy loop and peer libraries; "
                    "each mode runs in a fresh process.",
    )
    parser.add_argument("--quick", action="store_true", help="tiny workload (a smoke test of seconds)")
    parser.add_argument("--N", type=int, default=None, help="patch side (default 64; --quick 16)")
    parser.add_argument("--object-size", type=int, default=None, help="object side (default 392; --quick 48)")
    parser.add_argument("--count", type=int, default=None, help="patches (default 20000; --quick 64)")
    parser.add_argument("--gridsize", type=int, default=2, help="group grid; patches per group = gridsize**2 (default 2)")
    parser.add_argument("--legacy-count", type=int, default=None,
                        help="patches the legacy loop computes; its time is scaled per patch (default 200; --quick 8)")
    parser.add_argument("--subset-count", type=int, default=None,
                        help="patches for the slow eager modes numpy and scipy, scaled per patch "
                             "(default 2000; --quick 64)")
    parser.add_argument("--backends", default=None,
                        help="comma list of tensorflow,jax,numpy (default: those installed)")
    parser.add_argument("--modes", default=None,
                        help=f"comma list of modes (default all): {','.join(MODES)}; legacy and floor always "
                             "run (legacy needs tensorflow)")
    parser.add_argument("--repeats", type=int, default=None, help="warm repeats, median reported (default 5; --quick 2)")
    parser.add_argument("--seed", type=int, default=0, help="workload seed (default 0)")
    parser.add_argument("--hugepages", action="store_true",
                        help=f"run every mode with GLIBC_TUNABLES={_HUGEPAGES_TUNABLE}: malloc'd memory (TF's "
                             "and XLA's buffers) gets transparent huge pages, as NumPy's large arrays "
                             "already do (glibc >= 2.35, THP in 'madvise' or 'always' mode)")
    parser.add_argument("--json", dest="json_path", default="bench-results/bench.json", help="JSON output path (default bench-results/bench.json)")
    parser.add_argument("--plot", dest="plot_path", default=None,
                        help="PNG chart path (default: next to the JSON, bench.png)")
    parser.add_argument("--no-plot", action="store_true", help="skip the chart")
    parser.add_argument("--chunk-study", action="store_true",
                        help="add the chunked-extraction table (10^3, 10^4, 10^5 and 200,000 patches)")
    parser.add_argument("--chunk-counts", default=None,
                        help="comma list of patch counts for --chunk-study (default 1000,10000,100000,200000)")
    parser.add_argument("--chunk-batch", type=int, default=512,
                        help="patch_extraction_batch_size of the chunk study (default 512: 16 MB "
                             "chunks at N=64, small enough for the allocator to reuse)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--spec", default=None, help=argparse.SUPPRESS)
    return parser


def _positive(parser: argparse.ArgumentParser, name: str, value: int) -> int:
    if value is None or value < 1:
        parser.error(f"{name} must be a positive integer, got {value}")
    return value


def _spec(args: argparse.Namespace, parser: argparse.ArgumentParser, workdir: str) -> Dict[str, Any]:
    quick = args.quick
    c = _positive(parser, "--gridsize", args.gridsize) ** 2
    def pick(value: Optional[int], quick_default: int, default: int) -> int:
        return value if value is not None else (quick_default if quick else default)

    spec = {
        "N": pick(args.N, 16, 64),
        "object_size": pick(args.object_size, 48, 392),
        "count": pick(args.count, 64, 20000),
        "gridsize": args.gridsize,
        "repeats": pick(args.repeats, 2, 5),
        "seed": args.seed,
        "hugepages": bool(args.hugepages),
        "workdir": workdir,
    }
    for key in ("N", "object_size", "count", "repeats"):
        _positive(parser, "--" + key.replace("_", "-"), spec[key])
    if spec["count"] % c:
        parser.error(f"--count must be a multiple of gridsize**2 = {c}, got {spec['count']}")
    legacy = pick(args.legacy_count, 8, 200)
    subset = pick(args.subset_count, 64, 2000)
    # Subsets are whole groups and never exceed the workload.
    spec["legacy_count"] = max(c, min(spec["count"], _positive(parser, "--legacy-count", legacy)) // c * c)
    spec["subset_count"] = max(c, min(spec["count"], _positive(parser, "--subset-count", subset)) // c * c)
    return spec


def _selected_modes(args: argparse.Namespace, parser: argparse.ArgumentParser) -> List[str]:
    modes = list(MODES)
    if args.modes:
        wanted = [m.strip() for m in args.modes.split(",") if m.strip()]
        unknown = sorted(set(wanted) - set(MODES))
        if unknown:
            parser.error(f"--modes: unknown mode(s) {', '.join(unknown)}; known: {', '.join(MODES)}")
        modes = [m for m in MODES if m in wanted or m in ("legacy", "floor")]
    if args.backends:
        names = {b.strip().lower() for b in args.backends.split(",") if b.strip()}
        unknown = sorted(names - set(_BACKEND_MODES))
        if unknown:
            parser.error(f"--backends: unknown backend(s) {', '.join(unknown)}; known: {', '.join(_BACKEND_MODES)}")
        # Without tensorflow the legacy loop cannot run: speed-ups and diffs are then "-".
        dropped = {m for b, ms in _BACKEND_MODES.items() if b not in names for m in ms}
        modes = [m for m in modes if m not in dropped]
    return modes


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the benchmark; returns the exit status (0 ok, 1 a mode failed, 2 usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.worker:
        if args.worker not in MODES and args.worker != "chunk":
            parser.error(f"--worker: unknown mode {args.worker!r}")
        record = _worker(args.worker, json.loads(args.spec))
        print(_RESULT_TAG + json.dumps(record), flush=True)
        return 0

    modes = _selected_modes(args, parser)
    chunk_counts: List[int] = []
    if args.chunk_study:
        text = args.chunk_counts or ("64,256,1024" if args.quick else "1000,10000,100000,200000")
        try:
            chunk_counts = [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            parser.error(f"--chunk-counts must be a comma list of integers, got {text!r}")
        _positive(parser, "--chunk-batch", args.chunk_batch)

    with tempfile.TemporaryDirectory(prefix="ptycho-bench-") as workdir:
        spec = _spec(args, parser, workdir)
        progress = _progress(len(modes) + len(chunk_counts))
        records: Dict[str, Dict[str, Any]] = {}
        # legacy first: it writes the reference every other mode compares to.
        for mode in sorted(modes, key=lambda m: m != "legacy"):
            package = MODES[mode][1]
            if not _importable(package):
                records[mode] = {"mode": mode, "skipped": f"{package} is not installed"}
            else:
                progress.set_description(mode)
                records[mode] = _run_worker(mode, spec)
            progress.update(1)
        records = {m: records[m] for m in MODES if m in records}
        chunk_records = []
        for count in chunk_counts:
            progress.set_description(f"chunk {count}")
            c = spec["gridsize"] ** 2
            chunk_records.append(_run_worker("chunk", dict(spec, chunk_count=max(c, count // c * c),
                                                           chunk_batch=args.chunk_batch)))
            progress.update(1)
        progress.close()

    rows = _rows(records, spec["count"])
    result = {
        "command": "ptycho-patches bench " + " ".join(sys.argv[1:] if argv is None else argv),
        "workload": {k: spec[k] for k in ("N", "object_size", "count", "gridsize", "repeats", "seed",
                                          "legacy_count", "subset_count", "hugepages")},
        "machine": _machine(),
        "rows": rows,
        "records": records,
        "targets": _targets(rows),
    }
    print(format_table(rows, spec["count"]))
    print()
    reference = (spec["N"], spec["object_size"], spec["count"], spec["gridsize"]) == (64, 392, 20000, 2)
    if not reference:
        print("  (targets are set for the reference workload: 392x392, 20,000 patches, N=64, gridsize 2;"
              " on this workload they are indicative only)")
    for t in result["targets"]:
        mark = "n/a" if t["met"] is None else ("met" if t["met"] else "NOT met")
        print(f"  {t['target']:<52} {_fmt(t['value'], '.3g'):>8}  {mark}")
    if chunk_counts:
        result["chunk_study"] = _chunk_rows(chunk_records)
        print()
        print(format_chunk_table(result["chunk_study"]))
    json_path = Path(args.json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(_finite(result), indent=2, default=_json_default))
    print(f"\nJSON: {json_path}")
    if not args.no_plot:
        plot_path = Path(args.plot_path) if args.plot_path else json_path.with_suffix(".png")
        plot(result, plot_path)
        print(f"chart: {plot_path}")
    failed = [m for m, r in records.items() if "error" in r]
    failed += [str(r.get("count")) for r in chunk_records if "error" in r]
    if failed:
        print(f"failed modes: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _finite(value: Any) -> Any:
    """NaN and infinities become null: the JSON file stays standard JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise InputTypeError(f"not JSON serialisable: {type(value).__name__}")


class _NoProgress:
    def set_description(self, text: str) -> None:
        pass

    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int) -> Any:
    """A tqdm bar on a terminal; silent when output is redirected (logs, CI)."""
    if not sys.stderr.isatty():
        return _NoProgress()
    from tqdm import tqdm

    return tqdm(total=total, unit="mode", leave=False)


if __name__ == "__main__":
    sys.exit(main())
