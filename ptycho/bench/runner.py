"""The benchmark's command line: options, one subprocess per mode, then the tables, JSON and chart."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ptycho.bench import report
from ptycho.bench.registry import MODES, mode, run_mode

__all__ = ["main", "build_parser"]

PROG = "ptycho-patches bench"
_RESULT_TAG = "PTYCHO_BENCH_RESULT "
_WORKER_TIMEOUT_S = 900
#: glibc (>= 2.35) tunable: malloc asks for transparent huge pages (madvise), as
#: NumPy already does for its own large arrays.
_HUGEPAGES_TUNABLE = "glibc.malloc.hugetlb=1"


def _backend_modes() -> Dict[str, List[str]]:
    """--backends names -> the modes that exercise them, in table order."""
    by: Dict[str, List[str]] = {}
    for m in MODES.values():
        if m.backend is not None:
            by.setdefault(m.backend, []).append(m.name)
    return by


def _importable(package: Optional[str]) -> bool:
    if package is None:
        return True
    import importlib.util

    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def _run_worker(name: str, spec: Dict[str, Any]) -> Dict[str, Any]:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if spec.get("hugepages"):
        tunables = env.get("GLIBC_TUNABLES")
        env["GLIBC_TUNABLES"] = f"{tunables}:{_HUGEPAGES_TUNABLE}" if tunables else _HUGEPAGES_TUNABLE
    cmd = [sys.executable, "-m", "ptycho.bench", "--worker", name, "--spec", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=_WORKER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"mode": name, "error": f"timed out after {_WORKER_TIMEOUT_S} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(_RESULT_TAG):
            return json.loads(line[len(_RESULT_TAG):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    return {"mode": name, "error": f"worker exited with status {proc.returncode}: " + " | ".join(tail)}


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
    parser.add_argument("--gpu", action="store_true",
                        help="add the GPU modes (JAX, CuPy and PyTorch on a visible GPU, the GPU memory floor and "
                             "torch grid_sample on the GPU); a library that sees no GPU gives a 'skipped' row")
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
    parser.add_argument("--reassembly", action="store_true",
                        help="add the reassembly table (issue 12): PtychoPINN's shift_and_sum, windowed vs its "
                             "full-canvas loop vs the memory floor")
    parser.add_argument("--reassembly-M", default=None,
                        help="comma list of crop sizes M for --reassembly (default: 10 and N)")
    parser.add_argument("--reassembly-legacy-count", type=int, default=None,
                        help="patches the legacy reassembly loop computes, scaled per patch (default 48; --quick 8)")
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
    modes = [m for m in MODES if MODES[m].default or (args.gpu and MODES[m].device == "gpu")]
    if args.modes:
        wanted = [m.strip() for m in args.modes.split(",") if m.strip()]
        unknown = sorted(set(wanted) - set(MODES))
        if unknown:
            parser.error(f"--modes: unknown mode(s) {', '.join(unknown)}; known: {', '.join(MODES)}")
        modes = [m for m in MODES if m in wanted or MODES[m].always or (args.gpu and MODES[m].device == "gpu")]
    if args.backends:
        backend_modes = _backend_modes()
        names = {b.strip().lower() for b in args.backends.split(",") if b.strip()}
        unknown = sorted(names - set(backend_modes))
        if unknown:
            parser.error(f"--backends: unknown backend(s) {', '.join(unknown)}; known: {', '.join(backend_modes)}")
        # Without tensorflow the legacy loop cannot run: speed-ups and diffs are then "-".
        dropped = {m for b, ms in backend_modes.items() if b not in names for m in ms}
        modes = [m for m in modes if m not in dropped]
    return modes


def _fallback_reference(modes: Sequence[str], spec: Dict[str, Any]) -> Optional[str]:
    """Without TensorFlow (no legacy loop), write the reference with the NumPy backend; a note, or None.

    The NumPy backend's compiled order is held bit-exact against PtychoPINN's
    legacy loop by the fixture tests, so ``max|diff|`` keeps its meaning.
    """
    if not any(m for m in modes if not MODES[m].always):
        return None
    if "legacy" not in modes:
        why = "the legacy loop is not selected (--backends)"
    elif not _importable(MODES["legacy"].package):
        why = f"{MODES['legacy'].package} (the legacy loop) is not installed"
    else:
        return None
    record = _run_worker("reference_numpy", spec)
    if "error" in record:
        return f"no reference: {why}, and the NumPy reference failed: {record['error']}"
    return f"max|diff| is against the NumPy backend's compiled order: {why}"


def _chunk_counts(args: argparse.Namespace, parser: argparse.ArgumentParser) -> List[int]:
    if not args.chunk_study:
        return []
    text = args.chunk_counts or ("64,256,1024" if args.quick else "1000,10000,100000,200000")
    try:
        counts = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        parser.error(f"--chunk-counts must be a comma list of integers, got {text!r}")
    _positive(parser, "--chunk-batch", args.chunk_batch)
    return counts


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the benchmark; returns the exit status (0 ok, 1 a mode failed, 2 usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.worker:
        try:
            mode(args.worker)
        except ValueError:
            parser.error(f"--worker: unknown mode {args.worker!r}")
        record = run_mode(args.worker, json.loads(args.spec))
        print(_RESULT_TAG + json.dumps(record), flush=True)
        return 0

    modes = _selected_modes(args, parser)
    chunk_counts = _chunk_counts(args, parser)
    with tempfile.TemporaryDirectory(prefix="ptycho-bench-") as workdir:
        spec = _spec(args, parser, workdir)
        progress = _progress(len(modes) + len(chunk_counts))
        records: Dict[str, Dict[str, Any]] = {}
        reference_note = _fallback_reference(modes, spec)
        # The reference (legacy) first: it writes what every other mode compares to.
        for name in sorted(modes, key=lambda m: not MODES[m].reference):
            package = MODES[name].package
            if not _importable(package):
                records[name] = {"mode": name, "skipped": f"{package} is not installed"}
            else:
                progress.set_description(name)
                records[name] = _run_worker(name, spec)
            progress.update(1)
        records = {m: records[m] for m in MODES if m in records}
        chunk_records = []
        for count in chunk_counts:
            progress.set_description(f"chunk {count}")
            c = spec["gridsize"] ** 2
            chunk_records.append(_run_worker("chunk", dict(spec, chunk_count=max(c, count // c * c),
                                                           chunk_batch=args.chunk_batch)))
            progress.update(1)
        reassembly_rows = _reassembly(args, parser, spec)
        progress.close()

    rows = report.rows(records, spec["count"])
    result = {
        "command": "ptycho-patches bench " + " ".join(sys.argv[1:] if argv is None else argv),
        "workload": {k: spec[k] for k in ("N", "object_size", "count", "gridsize", "repeats", "seed",
                                          "legacy_count", "subset_count", "hugepages")},
        "machine": report.machine(),
        "rows": rows,
        "records": records,
        "targets": report.targets(rows),
    }
    print(report.format_table(rows, spec["count"]))
    if reference_note:
        result["reference"] = reference_note
        print(f"  ({reference_note})")
    print()
    reference = (spec["N"], spec["object_size"], spec["count"], spec["gridsize"]) == (64, 392, 20000, 2)
    if not reference:
        print("  (targets are set for the reference workload: 392x392, 20,000 patches, N=64, gridsize 2;"
              " on this workload they are indicative only)")
    for t in result["targets"]:
        mark = "n/a" if t["met"] is None else ("met" if t["met"] else "NOT met")
        print(f"  {t['target']:<52} {report.fmt(t['value'], '.3g'):>8}  {mark}")
    result["orders"] = report.order_rows(records, spec["count"])
    if result["orders"]:
        print()
        print("The two evaluation orders: compiled (c, PtychoPINN's default XLA path) and plain (p, its eager path);"
              " peak: warm calls, over the output")
        print(report.format_order_table(result["orders"], spec["count"]))
    if chunk_counts:
        result["chunk_study"] = report.chunk_rows(chunk_records)
        print()
        print(report.format_chunk_table(result["chunk_study"]))
    if args.reassembly:
        from ptycho.bench import reassembly

        result["reassembly"] = reassembly_rows
        print()
        print(reassembly.format_table(reassembly_rows, spec["count"]))
    json_path = Path(args.json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report.finite(result), indent=2, default=report.json_default))
    print(f"\nJSON: {json_path}")
    if not args.no_plot:
        plot_path = Path(args.plot_path) if args.plot_path else json_path.with_suffix(".png")
        report.plot(result, plot_path)
        print(f"chart: {plot_path}")
    failed = [m for m, r in records.items() if "error" in r]
    failed += [str(r.get("count")) for r in chunk_records if "error" in r]
    failed += [f"{r['mode']} (M={r['M']})" for r in reassembly_rows if "note" in r and not r.get("skipped")]
    if failed:
        print(f"failed modes: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _reassembly(args: argparse.Namespace, parser: argparse.ArgumentParser, spec: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The reassembly section's rows (none without --reassembly)."""
    if not args.reassembly:
        return []
    from ptycho.bench import reassembly

    text = args.reassembly_M or f"10,{spec['N']}"
    try:
        Ms = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        parser.error(f"--reassembly-M must be a comma list of even integers, got {text!r}")
    for M in Ms:
        if M < 2 or M % 2 or M > spec["N"]:
            parser.error(f"--reassembly-M: each M must be even, 2 <= M <= N = {spec['N']}, got {M}")
    legacy = args.reassembly_legacy_count or (8 if args.quick else 48)
    return reassembly.run_section(spec, Ms, _positive(parser, "--reassembly-legacy-count", legacy), _run_worker,
                                  _importable)


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
