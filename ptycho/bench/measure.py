"""Timing and peak memory of calls inside a benchmark worker process."""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional

__all__ = ["PeakMeter", "time_calls", "time_command", "NO_CHECK"]


def _status_bytes(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class PeakMeter:
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


def NO_CHECK(result: Any) -> float:  # noqa: N802 - a constant-like check
    """The check of modes with nothing to compare (floors): NaN."""
    return float("nan")


def time_calls(call: Callable[[], Any], repeats: int, cold: bool, check: Callable[[Any], float]) -> Dict[str, Any]:
    """Time ``call``: the first call (cold) and the median of ``repeats`` more (warm).

    With ``cold=False`` the first call counts as one of the repeats.
    ``check(result)`` gives max |diff| to the reference (outside the timing);
    each result is dropped before the next call, so no baseline holds an
    output.  Wall and CPU seconds are both kept: on a shared machine CPU time
    is the steadier of the two.
    """
    meter = PeakMeter()
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


def time_command(cmd: List[str], repeats: int, *, env: Optional[Dict[str, str]] = None,
                 what: str = "command") -> Dict[str, Any]:
    """Run ``cmd`` ``repeats`` times, each in a fresh process: a command line end to end.

    Returns the :func:`time_calls` fields: cold = the first run, warm = the
    median of all runs (wall and CPU seconds of the child, user + system);
    peak = the largest child's resident memory (``ru_maxrss``, the whole
    process).  A failing run raises ``RuntimeError`` naming ``what``.
    """
    import resource
    import subprocess

    times: List[float] = []
    cpus: List[float] = []
    for _ in range(max(1, repeats)):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        times.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
        if proc.returncode:
            raise RuntimeError(f"{what} failed: {proc.stderr.strip()[-500:]}")
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: KiB on Linux
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * scale
    return {"cold_seconds": times[0], "cold_cpu_seconds": cpus[0], "warm_seconds": float(statistics.median(times)),
            "warm_cpu_seconds": float(statistics.median(cpus)), "warm_times": times, "cold_peak_bytes": peak,
            "warm_peak_bytes": peak, "peak_method": "ru_maxrss (whole process)"}
