"""The benchmark (ptycho.bench): workload construction and a --quick smoke run.

No test here asserts a time: the smoke runs check that every mode produced a
row with all the fields the JSON promises, and that the exact modes are exact.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ptycho import bench
from ptycho.backends import Backend
from ptycho.testing import require_backend, require_extra

#: Fields every measured row of the JSON carries.
ROW_FIELDS = (
    "mode", "label", "count_timed", "seconds", "cpu_seconds", "per_patch_us", "patches_per_s",
    "speedup_vs_legacy", "ratio_to_floor", "peak_bytes", "peak_over_output", "max_abs_diff",
)
#: A workload small enough for seconds per mode.
TINY = ["--quick", "--N", "8", "--object-size", "24", "--count", "16", "--legacy-count", "8",
        "--subset-count", "8", "--repeats", "1"]


@pytest.mark.parametrize("gridsize", [1, 2, 3], ids=lambda g: f"g{g}")
def test_workload_offsets_sum_exactly_to_positions(gridsize):
    c = gridsize**2
    work = bench.make_workload(object_size=40, count=6 * c, gridsize=gridsize, N=16)
    total = np.add(work["global_offsets"], work["local_offsets"], dtype=np.float64).astype(np.float32)
    flat = np.transpose(total, (0, 3, 1, 2)).reshape(-1, 2)  # (B*c, 2), row b*c + k
    assert work["local_offsets"].shape == (6, 1, 2, c)
    assert np.array_equal(flat, work["positions"])


def test_workload_prefix_does_not_depend_on_count():
    small = bench.make_workload(object_size=40, count=8, gridsize=2, N=16)
    large = bench.make_workload(object_size=40, count=32, gridsize=2, N=16)
    assert np.array_equal(small["object"], large["object"])
    assert np.array_equal(small["positions"], large["positions"][:8])


def test_workload_rejects_count_not_multiple_of_channels():
    with pytest.raises(ValueError, match="multiple of gridsize"):
        bench.make_workload(object_size=40, count=10, gridsize=2, N=16)


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["--count", "10", "--gridsize", "2"], id="count-not-multiple"),
        pytest.param(["--modes", "fft"], id="unknown-mode"),
        pytest.param(["--backends", "mxnet"], id="unknown-backend"),
        pytest.param(["--N", "0"], id="zero-N"),
    ],
)
def test_usage_errors_exit_2(args, capsys):
    with pytest.raises(SystemExit) as info:
        bench.main(args)
    assert info.value.code == 2
    assert "error" in capsys.readouterr().err


def _run(tmp_path, extra):
    json_path = tmp_path / "bench.json"
    status = bench.main(TINY + ["--json", str(json_path)] + extra)
    return status, json.loads(json_path.read_text())


def test_quick_numpy_only_writes_every_field_and_a_chart(tmp_path):
    # --hugepages only sets a glibc tunable in the workers; older glibcs ignore it.
    require_extra("plot")
    status, result = _run(tmp_path, ["--backends", "numpy", "--modes", "numpy,scipy", "--hugepages",
                                     "--plot", str(tmp_path / "chart.png")])
    assert status == 0
    assert {r["mode"] for r in result["rows"]} == {"floor", "numpy", "scipy"}
    assert result["workload"]["hugepages"] is True
    for row in result["rows"]:
        assert set(ROW_FIELDS) <= set(row), row["mode"]
    assert result["workload"]["count"] == 16
    assert (tmp_path / "chart.png").stat().st_size > 0


def test_the_order_table_compares_compiled_and_plain(tmp_path, capsys):
    """Both orders of an engine in one run: a row with warm and cold of each, their ratios, peaks and diffs."""
    status, result = _run(tmp_path, ["--backends", "numpy", "--modes", "numpy,numpy_plain", "--no-plot"])
    assert status == 0
    (row,) = result["orders"]
    assert row["engine"] == "NumPy array-API (chunked)"
    for key in ("compiled_warm", "plain_warm", "compiled_cold", "plain_cold"):
        assert math.isfinite(row[key]) and row[key] > 0, key
    assert row["warm_ratio"] == pytest.approx(row["compiled_warm"] / row["plain_warm"])
    assert row["cold_ratio"] == pytest.approx(row["compiled_cold"] / row["plain_cold"])
    assert row["compiled_max_abs_diff"] == 0  # the compiled order is the reference's
    assert 0 <= row["plain_max_abs_diff"] < 1e-5  # the plain order differs by a rounding at most
    assert row["compiled_peak_over_output"] > 0.5
    out = capsys.readouterr().out
    assert "The two evaluation orders" in out and "NumPy array-API (chunked)" in out.split("evaluation orders")[1]


def test_an_engine_with_one_order_has_no_order_row():
    from ptycho.bench import report

    rec = {"count": 10, "output_bytes": 100, "cold_seconds": 1.0, "warm_seconds": 0.5, "cold_peak_bytes": 120,
           "warm_peak_bytes": 110, "max_abs_diff": 0.0}
    assert report.order_rows({"tf": rec}, 20) == []
    (row,) = report.order_rows({"tf": rec, "tf_plain": dict(rec, warm_seconds=0.25, count=5)}, 20)
    assert row["compiled_warm"] == 1.0 and row["plain_warm"] == 1.0 and row["warm_ratio"] == 1.0
    assert row["compiled_peak_over_output"] == pytest.approx(1.1)  # the warm calls' peak


def test_quick_tensorflow_modes_are_exact_and_complete(tmp_path):
    require_backend(Backend.TENSORFLOW)
    status, result = _run(tmp_path, ["--modes", "tf,dispatch", "--no-plot", "--chunk-study",
                                     "--chunk-counts", "20", "--chunk-batch", "8"])
    assert status == 0
    rows = {r["mode"]: r for r in result["rows"]}
    assert set(rows) == {"floor", "legacy", "tf-cold", "tf-warm", "dispatch-cold", "dispatch-warm"}
    for name, row in rows.items():
        assert set(ROW_FIELDS) <= set(row), name
    # The production path is bit-exact against the legacy loop.
    for name in ("tf-cold", "tf-warm", "dispatch-cold", "dispatch-warm"):
        assert rows[name]["max_abs_diff"] == 0, name
    assert rows["legacy"]["speedup_vs_legacy"] == pytest.approx(1.0)
    assert all(math.isfinite(rows[n]["seconds"]) and rows[n]["seconds"] > 0 for n in rows)
    targets = {t["target"] for t in result["targets"]}
    assert "TF batched bit-exact vs legacy (max|diff| == 0)" in targets
    chunks = result["chunk_study"]
    # 20 patches in chunks of 8: two full chunks and a padded last one.
    assert [r["count"] for r in chunks] == [20]
    assert chunks[0]["max_abs_diff"] == 0


def test_modes_are_registered_with_what_they_need():
    """Every mode is one registration: its label, package, backend and count in one place."""
    names = list(bench.MODES)
    core = ["floor", "legacy", "tf", "tf_plain", "jax", "jax_plain", "numpy", "numpy_plain", "dispatch", "scipy",
            "opencv", "torch", "xla_floor"]
    assert [n for n in names if n in core] == core  # in table order, others (issue 14's rows) between them
    assert names == sorted(names, key=lambda n: bench.MODES[n].order)
    assert bench.MODES["legacy"].reference and bench.MODES["legacy"].always and bench.MODES["floor"].always
    assert {"tf", "tf_plain", "jax", "jax_plain", "dispatch"} <= {n for n, m in bench.MODES.items() if m.compiled}
    assert not {"numpy", "numpy_plain", "legacy", "floor"} & {n for n, m in bench.MODES.items() if m.compiled}
    assert bench.MODES["opencv"].package == "cv2" and bench.MODES["scipy"].count == "subset_count"
    assert "chunk" not in bench.MODES  # the chunk study's mode is not selectable with --modes


def test_a_registered_mode_takes_its_place_in_the_table(monkeypatch):
    from ptycho.bench import registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    saved = dict(registry.MODES)
    try:
        registry.register("mine", "my engine", package="jax", backend="jax", order=35)(lambda job: {})
        names = list(registry.MODES)
        place = names.index("mine")
        assert all(registry.MODES[n].order <= 35 for n in names[:place])
        assert all(registry.MODES[n].order > 35 for n in names[place + 1:])
        assert registry.MODES["mine"].label == "my engine"
        with pytest.raises(ValueError, match="registered twice"):
            registry.register("mine", "again")(lambda job: {})
    finally:
        registry.MODES.clear()
        registry.MODES.update(saved)


def test_gpu_modes_run_only_when_asked():
    from ptycho.bench.gpu import GPU_MODES
    from ptycho.bench.runner import _selected_modes, build_parser

    parser = build_parser()
    gpu = {n for n, m in bench.MODES.items() if m.device == "gpu"}
    assert gpu == set(GPU_MODES)
    assert not gpu & set(_selected_modes(parser.parse_args([]), parser))
    assert gpu <= set(_selected_modes(parser.parse_args(["--gpu"]), parser))
    chosen = _selected_modes(parser.parse_args(["--modes", "numpy,jax_gpu"]), parser)
    assert "jax_gpu" in chosen and "cupy" not in chosen


def test_gpu_rows_are_exact_or_skipped(tmp_path):
    """Where no library sees a GPU the rows say skipped (not a failure); where one does, they are exact."""
    status, result = _run(tmp_path, ["--backends", "numpy,jax", "--modes", "numpy", "--gpu", "--no-plot"])
    assert status == 0
    rows = {r["mode"]: r for r in result["rows"]}
    for name in ("gpu_floor", "jax_gpu", "jax_gpu_plain", "cupy", "torch_cuda", "torch_gpu_peer"):
        measured = [r for m, r in rows.items() if m == name or m.startswith(name + "-")]
        assert measured, name
        for row in measured:
            if "seconds" not in row:
                assert row["skipped"], row
            elif name in ("jax_gpu", "cupy", "torch_cuda"):
                assert row["max_abs_diff"] == 0, row  # compiled order, bit for bit
                assert row["device"] == "gpu" and math.isfinite(row["ratio_to_floor"]) == ("gpu_floor" in rows)


def test_device_timing_syncs_and_measures_every_call():
    """time_device_calls with a stand-in device: each call synced, cold apart from warm, peaks kept."""
    from ptycho.bench.gpu import _Device, time_device_calls

    class Host(_Device):
        name = "host"
        synced = 0

        def sync(self, result):
            self.synced += 1
            return result

        def host(self, result):
            return result

        def peak(self):
            return 16

        def describe(self):
            return "host"

    device = Host()
    record = time_device_calls(device, lambda: np.ones(3), repeats=3, cold=True, check=lambda r: float(r.sum()))
    assert device.synced == 4  # one cold call and three warm ones
    assert record["max_abs_diff"] == 3.0 and len(record["warm_times"]) == 3
    assert record["cold_peak_bytes"] == record["warm_peak_bytes"] == 16 and record["gpu"] == "host"
    record = time_device_calls(Host(), lambda: np.ones(3), repeats=3, cold=False, check=lambda r: 0.0)
    assert len(record["warm_times"]) == 3  # the first call counts as a repeat


def test_without_tensorflow_the_reference_is_the_numpy_backend(tmp_path, monkeypatch):
    """No legacy loop: max|diff| is taken against the NumPy backend's compiled order, and says so."""
    from ptycho.bench import runner

    real = runner._importable
    monkeypatch.setattr(runner, "_importable", lambda package: package != "tensorflow" and real(package))
    status, result = _run(tmp_path, ["--modes", "numpy,numpy_plain", "--no-plot"])
    assert status == 0
    rows = {r["mode"]: r for r in result["rows"]}
    assert "tensorflow" in rows["legacy"]["note"] and "not installed" in result["reference"]
    assert "NumPy backend" in result["reference"]
    assert rows["numpy"]["max_abs_diff"] == 0  # the same order as the reference
    assert math.isfinite(rows["numpy_plain"]["max_abs_diff"])  # compared, not NaN


def test_targets_without_a_legacy_row_are_not_applicable():
    """A ratio to a legacy loop that did not run is n/a, not "NOT met"."""
    from ptycho.bench import report

    row = {"mode": "jax-warm", "seconds": 1.0, "speedup_vs_legacy": float("nan"), "ratio_to_floor": 2.0}
    checks = {t["target"]: t for t in report.targets([row])}
    assert checks["JAX warm >= 50x legacy"]["met"] is None
    row["speedup_vs_legacy"] = 60.0
    assert {t["target"]: t for t in report.targets([row])}["JAX warm >= 50x legacy"]["met"] is True


def test_reassembly_without_tensorflow_skips_rather_than_fails(tmp_path, monkeypatch, capsys):
    """No TensorFlow: the legacy and TF reassembly rows say skipped and the run succeeds."""
    from ptycho.bench import runner

    real = runner._importable
    monkeypatch.setattr(runner, "_importable", lambda package: package != "tensorflow" and real(package))
    status, result = _run(tmp_path, ["--modes", "floor", "--reassembly", "--reassembly-M", "4",
                                     "--reassembly-legacy-count", "4", "--no-plot"])
    assert status == 0, capsys.readouterr().err
    rows = {(r["M"], r["mode"]): r for r in result["reassembly"]}
    assert rows[(4, "reassembly_legacy")]["skipped"] and rows[(4, "reassembly_tf")]["skipped"]
    assert "failed:" not in capsys.readouterr().out
