"""The benchmark's output: table rows, the terminal tables, the targets, the chart, the JSON."""

from __future__ import annotations

import math
import os
import platform
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from ptycho.bench.registry import MODES
from ptycho.errors import InputTypeError

__all__ = ["rows", "format_table", "order_rows", "format_order_table", "targets", "chunk_rows",
           "format_chunk_table", "plot", "machine", "finite", "json_default", "ruled"]


def rows(records: Dict[str, Dict[str, Any]], full_count: int) -> List[Dict[str, Any]]:
    """Table rows: per-patch times scaled to the full workload, ratios filled in."""
    out: List[Dict[str, Any]] = []
    for name, rec in records.items():
        mode = MODES[name]
        if "error" in rec or "skipped" in rec:
            out.append({"mode": name, "label": mode.label, "note": rec.get("error") or rec.get("skipped"),
                        "skipped": "error" not in rec})
            continue
        variants = [("cold", "cold_seconds", "cold_peak_bytes"), ("warm", "warm_seconds", "warm_peak_bytes")]
        if not mode.compiled:
            variants = [("", "warm_seconds" if "warm_seconds" in rec else "cold_seconds",
                         "warm_peak_bytes" if "warm_peak_bytes" in rec else "cold_peak_bytes")]
        for tag, key, peak_key in variants:
            if key not in rec:
                continue
            per_patch = rec[key] / rec["count"]
            cpu_key = key.replace("_seconds", "_cpu_seconds")
            out.append({
                "mode": name if not tag else f"{name}-{tag}",
                "device": mode.device,
                "label": mode.label + (f" {tag}" if tag else ""),
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
    legacy = next((r for r in out if r["mode"] == "legacy" and "seconds" in r), None)
    # each row's floor is its device's: the host's memory floor, or the GPU's
    floors = {device: next((r for r in out if r["mode"] == name and "seconds" in r), None)
              for device, name in (("cpu", "floor"), ("gpu", "gpu_floor"))}
    for row in out:
        if "seconds" not in row:
            continue
        floor = floors[row["device"]]
        row["speedup_vs_legacy"] = legacy["seconds"] / row["seconds"] if legacy else float("nan")
        row["ratio_to_floor"] = row["seconds"] / floor["seconds"] if floor else float("nan")
    return out


def fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def format_table(rows: Sequence[Dict[str, Any]], full_count: int) -> str:
    """The terminal table (plain text, also used verbatim in docs/PERFORMANCE.md)."""
    head = (f"{'mode':<36} {'timed':>6} {'s/' + str(full_count):>9} {'cpu s':>7} {'patches/s':>10} "
            f"{'vs legacy':>9} {'/ floor':>7} {'peak/out':>8} {'max|diff|':>9}")
    return _table(head, rows, lambda r: f"{r['label']:<36} {'skipped: ' + str(r['note'])}", lambda r: (
        f"{r['label']:<36} {r['count_timed']:>6} {r['seconds']:>9.3f} {fmt(r['cpu_seconds'], '>7.2f')} "
        f"{r['patches_per_s']:>10.0f} "
        f"{fmt(r['speedup_vs_legacy'], '>8.1f')}x {fmt(r['ratio_to_floor'], '>6.2f')}x "
        f"{fmt(r['peak_over_output'], '>7.2f')}x {fmt(r['max_abs_diff'], '>9.1e')}"
    ))


def _table(head: str, rows: Sequence[Dict[str, Any]], unmeasured: Callable[[Dict[str, Any]], str],
           measured: Callable[[Dict[str, Any]], str]) -> str:
    """``head``, a rule, and one line per row (``measured`` when it has seconds, else ``unmeasured``)."""
    return ruled(head, [measured(r) if "seconds" in r else unmeasured(r) for r in rows])


def ruled(head: str, lines: Sequence[str]) -> str:
    """A plain-text table: ``head``, a rule as wide as it, then ``lines``."""
    return "\n".join([head, "-" * len(head), *lines])


#: (engine, compiled-order mode, plain-order mode): the pairs the order table compares.
ORDER_PAIRS = (
    ("TF-XLA", "tf", "tf_plain"),
    ("JAX jit", "jax", "jax_plain"),
    ("NumPy + Numba kernel", "numba", "numba_plain"),
    ("NumPy array-API (chunked)", "numpy", "numpy_plain"),
)


def order_rows(records: Dict[str, Dict[str, Any]], full_count: int) -> List[Dict[str, Any]]:
    """Compiled order against plain order, per engine whose two modes both ran in this run.

    Seconds are scaled to ``full_count`` patches; "cold" is the first call of
    the worker process (compilation included), "warm" the median of the
    repeats (for the NumPy array path the first call is one of them); peak is
    the warm calls' peak over the output's size (the cold peaks are in the
    main table); max|diff| is each order's distance to the compiled-order
    reference.
    """
    out: List[Dict[str, Any]] = []
    for engine, compiled, plain in ORDER_PAIRS:
        pair = [records.get(compiled, {}), records.get(plain, {})]
        if not all("warm_seconds" in rec and "cold_seconds" in rec for rec in pair):
            continue
        row: Dict[str, Any] = {"engine": engine, "timed": pair[0]["count"]}
        for tag, rec in zip(("compiled", "plain"), pair):
            scale = full_count / rec["count"]
            row[f"{tag}_warm"] = rec["warm_seconds"] * scale
            row[f"{tag}_cold"] = rec["cold_seconds"] * scale
            peak = rec.get("warm_peak_bytes")
            row[f"{tag}_peak_over_output"] = peak / rec["output_bytes"] if peak is not None else float("nan")
            row[f"{tag}_max_abs_diff"] = rec.get("max_abs_diff", float("nan"))
        row["warm_ratio"] = row["compiled_warm"] / row["plain_warm"]
        row["cold_ratio"] = row["compiled_cold"] / row["plain_cold"]
        out.append(row)
    return out


def format_order_table(rows: Sequence[Dict[str, Any]], full_count: int) -> str:
    """The compiled / plain table of :func:`order_rows` (seconds per ``full_count`` patches)."""
    head = (f"{'engine (s/' + str(full_count) + ')':<28} {'warm c':>7} {'warm p':>7} {'c/p':>6} "
            f"{'cold c':>7} {'cold p':>7} {'c/p':>6} {'peak c':>7} {'peak p':>7} {'diff c':>8} {'diff p':>8}")
    return ruled(head, [
        f"{r['engine']:<28} {r['compiled_warm']:>7.3f} {r['plain_warm']:>7.3f} {r['warm_ratio']:>5.2f}x "
        f"{r['compiled_cold']:>7.3f} {r['plain_cold']:>7.3f} {r['cold_ratio']:>5.2f}x "
        f"{fmt(r['compiled_peak_over_output'], '>6.2f')}x {fmt(r['plain_peak_over_output'], '>6.2f')}x "
        f"{fmt(r['compiled_max_abs_diff'], '>8.1e')} {fmt(r['plain_max_abs_diff'], '>8.1e')}"
        for r in rows
    ])


def targets(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Issue 4's targets, evaluated on this run."""
    by = {r["mode"]: r for r in rows if "seconds" in r}
    checks: List[Dict[str, Any]] = []

    def add(name: str, value: Optional[float], ok: Optional[bool]) -> None:
        checks.append({"target": name, "value": value, "met": ok})

    def get(mode: str, key: str) -> Optional[float]:
        """The value, or None where the row or the value is missing (no legacy loop: NaN ratios)."""
        value = by[mode][key] if mode in by else None
        return None if value is None or (isinstance(value, float) and math.isnan(value)) else value

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


def chunk_rows(records: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    out = []
    for rec in records:
        if "error" in rec:
            out.append({"count": rec.get("count"), "note": rec["error"]})
            continue
        out.append({
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
    return out


def format_chunk_table(rows: Sequence[Dict[str, Any]]) -> str:
    head = (f"{'patches':>8} {'chunk':>6} {'seconds':>8} {'us/patch':>9} {'floor us':>9} {'/ floor':>7} "
            f"{'output GB':>9} {'peak GB':>8} {'peak/out':>8}")
    return _table(head, rows, lambda r: f"{r['count']:>8} failed: {r['note']}", lambda r: (
        f"{r['count']:>8} {r['chunk_batch']:>6} {r['seconds']:>8.2f} {r['per_patch_us']:>9.1f} "
        f"{r['floor_per_patch_us']:>9.1f} {r['ratio_to_floor']:>6.2f}x "
        f"{r['output_bytes'] / 1e9:>9.3f} {r['peak_bytes'] / 1e9:>8.3f} {r['peak_over_output']:>7.2f}x"
    ))


def plot(result: Dict[str, Any], path: Path) -> None:
    """Bar chart: patches/s (log scale, with the legacy and floor lines) and peak / output."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in result["rows"] if "seconds" in r]
    labels = [r["label"] for r in shown]
    fig, (ax_speed, ax_mem) = plt.subplots(1, 2, figsize=(13, 0.45 * len(shown) + 1.8), sharey=True,
                                           gridspec_kw={"width_ratios": [3, 1.4]})
    y = np.arange(len(shown))
    colours = ["#1f77b4" if r["mode"].startswith(("tf", "jax", "numpy", "dispatch")) else
               "#7f7f7f" if r["mode"] in ("legacy", "floor", "xla_floor") else "#ff7f0e" for r in shown]
    ax_speed.barh(y, [r["patches_per_s"] for r in shown], color=colours)
    ax_speed.set_xscale("log")
    for yi, r in zip(y, shown):
        ax_speed.text(r["patches_per_s"] * 1.08, yi, f"{fmt(r['speedup_vs_legacy'], '.0f')}x", va="center",
                      fontsize=8)
    ax_speed.set_yticks(y, labels)
    ax_speed.invert_yaxis()
    ax_speed.set_xlabel("patches per second (log); label: speed-up over the legacy loop")
    ax_mem.barh(y, [r["peak_over_output"] for r in shown], color=colours)
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


def machine() -> Dict[str, Any]:
    """CPU, platform and library versions of this run."""
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


def finite(value: Any) -> Any:
    """NaN and infinities become null: the JSON file stays standard JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise InputTypeError(f"not JSON serialisable: {type(value).__name__}")
