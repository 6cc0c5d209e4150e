"""The ``ptycho-patches`` command line: end to end, in a temporary directory.

Most tests call :func:`ptycho.cli.main` in-process (fast, and compiled
engines are reused); two run real processes: the console script's ``--help``
and ``python -m ptycho demo --quick``.  Sizes are tiny (object 64 x 64,
N = 16, 30 positions).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import struct
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from ptycho.backends import Backend
from ptycho.testing import demanded_extras, require_backend, require_extra

#: Tests that draw pictures need matplotlib (the 'plot' extra): skipped without it,
#: unless PTYCHO_TEST_EXTRAS demands the extra -- then they run, and fail.
needs_matplotlib = pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None and "plot" not in demanded_extras(),
    reason="needs the 'plot' extra: matplotlib is not installed (pip install 'ptycho[plot]')",
)
COMMANDS = ["simulate", "extract", pytest.param("show", marks=needs_matplotlib)]

from ptycho import __version__, cli
from ptycho.cli import _common
from ptycho.dataset import RawData, load_grouped
from ptycho.errors import InputError, InputTypeError

OBJECT = ("64", "64")
N = 16
POSITIONS = 30
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run(*argv: str) -> int:
    return cli.main([str(a) for a in argv])


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the IHDR chunk; fails on anything but a PNG."""
    head = Path(path).read_bytes()[:24]
    assert head[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def leftovers(folder: Path) -> list[str]:
    """Temporary files an interrupted atomic write would leave (hidden names)."""
    return sorted(p.name for p in Path(folder).iterdir() if p.name.startswith("."))


def error_line(captured) -> str:
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, f"expected a one-line error, got:\n{captured.err}"
    assert lines[0].startswith("ptycho-patches: error: ")
    assert "Traceback" not in captured.err
    return lines[0]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A small simulated dataset made by ``ptycho-patches simulate``."""
    path = tmp_path_factory.mktemp("data") / "scan.npz"
    rc = run("simulate", "-o", path, "--object-size", *OBJECT, "--N", N, "--positions", POSITIONS, "--seed", 3)
    assert rc == 0
    return path


@pytest.fixture(scope="module")
def grouped(dataset, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("grouped") / "groups.npz"
    assert run("extract", dataset, "-o", path, "--gridsize", 2, "--K", 6, "--nsamples", 12,
               "--backend", "numpy") == 0
    return path


# ---------------------------------------------------------------------------
# simulate / extract / show
# ---------------------------------------------------------------------------


def test_simulate_writes_a_ptychopinn_dataset(dataset):
    raw = RawData.from_file(dataset)
    assert len(raw) == POSITIONS
    assert raw.diff3d.shape == (POSITIONS, N, N)
    assert raw.probeGuess.shape == (N, N)
    assert raw.objectGuess.shape == (64, 64)
    assert np.all(np.isfinite(raw.diff3d))


def test_simulate_options_reach_the_dataset(tmp_path):
    path = tmp_path / "raster.npz"
    assert run("simulate", "-o", path, "--object-size", 48, 80, "--N", 16, "--positions", 20,
               "--scan", "raster", "--photons", 1e5, "--seed", 1) == 0
    raw = RawData.from_file(path)
    assert raw.objectGuess.shape == (48, 80)
    assert len(raw) == 20


@pytest.mark.parametrize("gridsize", [1, 2], ids=lambda g: f"g{g}")
def test_extract_fields_and_shapes(dataset, tmp_path, gridsize, backend):
    out = tmp_path / "groups.npz"
    rc = run("extract", dataset, "-o", out, "--N", N, "--gridsize", gridsize, "--nsamples", 10,
             "--K", 6, "--seed", 0, "--backend", backend.value, "--batch-size", 16)
    assert rc == 0
    data = load_grouped(out)
    c, G = gridsize**2, 10  # --nsamples is the number of groups
    expected = {
        "Y": (G, N, N, c),
        "coords_nn": (G, 1, 2, c),
        "coords_offsets": (G, 1, 2, 1),
        "coords_relative": (G, 1, 2, c),
        "nn_indices": (G, c),
        "diffraction": (G, N, N, c),
    }
    assert {name: data[name].shape for name in expected} == expected
    assert data["Y"].dtype == np.complex64


def test_extract_Y_is_the_object_where_ptychopinn_cuts_it(dataset, grouped):
    """Y[g, :, :, k] is the patch centred on coords_offsets + coords_relative (float32), as in PtychoPINN."""
    from ptycho.backends import extract_patches

    data = load_grouped(grouped)
    obj = RawData.from_file(dataset).objectGuess
    positions = (data["coords_offsets"] + data["coords_relative"]).astype(np.float32)
    coords = np.moveaxis(positions[:, 0], 1, 2).reshape(-1, 2)
    expected = extract_patches(obj, coords, N, backend="numpy").reshape(-1, 4, N, N)
    np.testing.assert_array_equal(data["Y"], np.moveaxis(expected, 1, 3))


def test_extract_groups_are_neighbourhoods(dataset, grouped):
    """Each group's members lie among the K = 6 nearest other positions of some seed position."""
    coords = RawData.from_file(dataset).coords
    nn = load_grouped(grouped)["nn_indices"]  # (G, 4)
    distances = np.linalg.norm(coords[None, :, :] - coords[:, None, :], axis=2)  # (M, M)
    pools = np.argsort(distances, axis=1, kind="stable")[:, 1:7]  # each position's 6 nearest others
    in_pool = np.array([[set(group) <= set(pool) for pool in pools.tolist()] for group in nn.tolist()])  # (G, M)
    assert in_pool.any(axis=1).all()


def test_extract_defaults_N_to_the_probe_side(dataset, tmp_path, capsys):
    out = tmp_path / "g1.npz"
    assert run("extract", dataset, "-o", out, "--backend", "numpy") == 0
    data = load_grouped(out)
    assert data["Y"].shape == (POSITIONS, N, N, 1)
    printed = capsys.readouterr().out
    assert f"{POSITIONS} groups" in printed and str(out) in printed


def test_extract_default_backend_runs(dataset, tmp_path):
    """No --backend: TensorFlow if installed, else JAX, else NumPy."""
    out = tmp_path / "g.npz"
    assert run("extract", dataset, "-o", out, "--nsamples", 4, "--gridsize", 2) == 0
    assert load_grouped(out)["Y"].shape == (4, N, N, 4)


@needs_matplotlib
@pytest.mark.parametrize("kind", ["dataset", "grouped"])
def test_show_draws_a_png(dataset, grouped, tmp_path, kind, capsys):
    source = dataset if kind == "dataset" else grouped
    out = tmp_path / f"{kind}.png"
    assert run("show", source, "-o", out) == 0
    width, height = png_size(out)
    assert width >= 1000 and height >= 800
    assert out.stat().st_size > 50_000  # a real picture, not an empty canvas
    assert kind in capsys.readouterr().out


@needs_matplotlib
def test_show_grouped_without_Y(dataset, tmp_path):
    """A grouped file from a dataset without an object has no Y: diffraction is drawn."""
    from ptycho.dataset import save_grouped

    raw = RawData.from_file(dataset)
    fields = raw.grouped_fields(raw.group(gridsize=2, nsamples=5, seed=0))
    fields.pop("objectGuess")
    source = tmp_path / "noY.npz"
    save_grouped(source, fields)
    assert run("show", source, "-o", tmp_path / "noY.png") == 0
    assert png_size(tmp_path / "noY.png")[0] >= 1000


@needs_matplotlib
def test_simulate_extract_show_end_to_end(tmp_path):
    scan, groups, picture = tmp_path / "s.npz", tmp_path / "g.npz", tmp_path / "g.png"
    assert run("simulate", "-o", scan, "--object-size", 64, 72, "--N", N, "--positions", 24) == 0
    assert run("extract", scan, "-o", groups, "--gridsize", 2, "--nsamples", 8, "--backend", "numpy") == 0
    assert run("show", groups, "-o", picture) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.npz", "g.png", "s.npz"]
    png_size(picture)


# ---------------------------------------------------------------------------
# Safe outputs
# ---------------------------------------------------------------------------


def _command(name: str, dataset: Path, grouped: Path, out: Path) -> list:
    return {
        "simulate": ["simulate", "-o", out, "--object-size", *OBJECT, "--N", N, "--positions", 10],
        "extract": ["extract", dataset, "-o", out, "--backend", "numpy", "--nsamples", 4],
        "show": ["show", grouped, "-o", out],
    }[name]


@pytest.mark.parametrize("name", COMMANDS)
def test_refuses_to_overwrite(dataset, grouped, tmp_path, name, capsys):
    out = tmp_path / ("out.png" if name == "show" else "out.npz")
    out.write_bytes(b"precious")
    assert run(*_command(name, dataset, grouped, out)) == 2
    assert out.read_bytes() == b"precious"
    message = error_line(capsys.readouterr())
    assert "already exists" in message and "--overwrite" in message


@pytest.mark.parametrize("name", COMMANDS)
def test_overwrite_replaces(dataset, grouped, tmp_path, name):
    out = tmp_path / ("out.png" if name == "show" else "out.npz")
    out.write_bytes(b"old")
    assert run(*_command(name, dataset, grouped, out), "--overwrite") == 0
    assert out.read_bytes()[:8] != b"old"
    assert out.stat().st_size > 1000
    assert leftovers(tmp_path) == []


def _fail_engine(monkeypatch):
    def boom(self, *args, **kwargs):
        raise RuntimeError("engine failed midway")

    monkeypatch.setattr(RawData, "generate_grouped_data", boom)


def _fail_npz_write(monkeypatch):
    def partial(file, *args, **kwargs):
        file.write(b"PK\x03\x04 half an archive")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", partial)


def _fail_png_write(monkeypatch):
    from matplotlib.figure import Figure

    def partial(self, fname, *args, **kwargs):
        Path(fname).write_bytes(PNG_SIGNATURE + b"half a picture")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", partial)


@pytest.mark.parametrize("existing", [False, True], ids=["new", "with-overwrite"])
@pytest.mark.parametrize(
    "name, failure",
    [("extract", _fail_engine), ("extract", _fail_npz_write),
     pytest.param("show", _fail_png_write, marks=needs_matplotlib)],
    ids=["extract-engine", "extract-write", "show-write"],
)
def test_no_partial_file_after_a_failing_run(dataset, grouped, tmp_path, monkeypatch, capsys, name, failure,
                                             existing):
    out = tmp_path / ("out.png" if name == "show" else "out.npz")
    if existing:
        out.write_bytes(b"previous result")
    failure(monkeypatch)
    args = _command(name, dataset, grouped, out) + (["--overwrite"] if existing else [])
    assert run(*args) != 0
    error_line(capsys.readouterr())
    if existing:
        assert out.read_bytes() == b"previous result"  # replaced only by a complete new file
    else:
        assert not out.exists()
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


def _corrupt(path: Path, source: Path) -> None:
    path.write_bytes(b"this is not a zip archive at all")


def _truncated(path: Path, source: Path) -> None:
    data = source.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _missing_field(path: Path, source: Path) -> None:
    with np.load(source) as f:
        arrays = {k: f[k] for k in f.files if k != "diff3d"}
    np.savez(path, **arrays)


def _pickled(path: Path, source: Path) -> None:
    with np.load(source) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["xcoords"] = np.array([{"not": "data"}] * POSITIONS, dtype=object)
    np.savez(path, **arrays)


@pytest.mark.parametrize("command", ["extract", "show", "check"])
@pytest.mark.parametrize(
    "make, expected",
    [(None, "does not exist"), (_corrupt, "not a readable"), (_truncated, ""), (_missing_field, "diff3d"),
     (_pickled, "xcoords")],
    ids=["missing", "corrupt", "truncated", "missing-field", "pickled"],
)
def test_bad_input_is_a_one_line_error(dataset, tmp_path, capsys, command, make, expected):
    if command == "check":
        require_backend(Backend.TENSORFLOW)
        require_backend(Backend.JAX)
    source = tmp_path / "input.npz"
    if make is not None:
        make(source, dataset)
    args = {"extract": ["extract", source, "-o", tmp_path / "o.npz", "--backend", "numpy"],
            "show": ["show", source, "-o", tmp_path / "o.png"],
            "check": ["check", source]}[command]
    assert run(*args) == 2
    message = error_line(capsys.readouterr())
    assert "input.npz" in message
    assert expected in message
    assert not (tmp_path / "o.npz").exists() and not (tmp_path / "o.png").exists()


@pytest.mark.parametrize("value", ["0", "-3", "abc", "2.5"])
def test_bad_N_is_a_usage_error(dataset, tmp_path, capsys, value):
    assert run("extract", dataset, "-o", tmp_path / "o.npz", "--N", value) == 2
    err = capsys.readouterr().err
    assert "--N" in err and repr(value) in err
    assert not (tmp_path / "o.npz").exists()


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--gridsize", "2", "--K", "2"], "K=2 must be >= C=4"),
        (["--gridsize", "9"], "a group needs C = gridsize**2 = 81"),
    ],
    ids=["K-below-c", "c-above-M"],
)
def test_bad_grouping_is_an_input_error(dataset, tmp_path, capsys, args, expected):
    assert run("extract", dataset, "-o", tmp_path / "o.npz", "--backend", "numpy", *args) == 2
    assert expected in error_line(capsys.readouterr())


def test_wrong_output_suffix(dataset, tmp_path, capsys):
    assert run("extract", dataset, "-o", tmp_path / "o.h5") == 2
    assert ".npz or .zarr" in error_line(capsys.readouterr())


def test_missing_output_folder(dataset, tmp_path, capsys):
    assert run("extract", dataset, "-o", tmp_path / "nope" / "o.npz") == 2
    assert "does not exist" in error_line(capsys.readouterr())


def test_debug_shows_the_traceback(tmp_path, capsys):
    assert run("--debug", "show", tmp_path / "missing.npz", "-o", tmp_path / "o.png") == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "ptycho-patches: error:" in err


def test_no_command_is_a_usage_error(capsys):
    assert cli.main([]) == 2
    assert "COMMAND" in capsys.readouterr().err


def test_version(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"ptycho-patches {__version__}"


@pytest.mark.parametrize("command", ["simulate", "extract", "show", "demo", "check"])
def test_help_has_examples(command, capsys):
    assert cli.main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"ptycho-patches {command}" in out


@pytest.mark.parametrize("quiet, tty, expected", [(False, True, True), (True, True, False), (False, False, False)],
                         ids=["terminal", "quiet", "not-a-terminal"])
def test_progress_only_on_a_terminal(monkeypatch, quiet, tty, expected):
    monkeypatch.setattr(sys, "stderr", types.SimpleNamespace(isatty=lambda: tty))
    assert _common.progress_enabled(types.SimpleNamespace(quiet=quiet)) is expected


# ---------------------------------------------------------------------------
# check
# ---------------------------------------------------------------------------


@pytest.fixture
def both_engines():
    require_backend(Backend.TENSORFLOW)
    require_backend(Backend.JAX)


@pytest.mark.parametrize("gridsize", [1, 2], ids=lambda g: f"g{g}")
def test_check_passes_on_good_data(dataset, both_engines, capsys, gridsize):
    assert run("check", dataset, "--gridsize", gridsize, "--nsamples", 6, "--sample", 8) == 0
    out = capsys.readouterr().out
    assert "TF batched vs legacy loop" in out and "JAX vs TF batched" in out
    assert "FAIL" not in out and "check passed" in out


def test_check_fails_beyond_tolerance(dataset, both_engines, monkeypatch, capsys):
    """A JAX result off by 1e-3 must be reported and give exit status 1."""
    import ptycho.backends as backends

    real = backends.extract_patches_grouped

    def off(*args, **kwargs):
        out = np.asarray(real(*args, **kwargs))
        return out + np.complex64(1e-3) if kwargs.get("backend") == "jax" else out

    monkeypatch.setattr(backends, "extract_patches_grouped", off)
    assert run("check", dataset, "--nsamples", 4, "--sample", 4) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "check FAILED: 3 of 6" in out


def test_check_reports_both_orders(dataset, both_engines, capsys):
    """--evaluation both: every pair exact within each order, compiled vs plain within the table."""
    assert run("check", dataset, "--nsamples", 4, "--sample", 4, "--evaluation", "both") == 0
    out = capsys.readouterr().out
    assert "TF batched vs legacy loop (compiled)" in out and "TF batched vs legacy loop (plain)" in out
    assert "TF batched compiled vs plain" in out and "check passed: all 13 pairs" in out


def test_check_default_order_is_compiled(dataset, both_engines, monkeypatch, capsys):
    import ptycho.backends as backends

    seen = []
    real = backends.extract_patches_grouped

    def spy(*args, **kwargs):
        seen.append(kwargs.get("evaluation"))
        return real(*args, **kwargs)

    monkeypatch.setattr(backends, "extract_patches_grouped", spy)
    assert run("check", dataset, "--nsamples", 4, "--sample", 4) == 0
    assert seen and set(seen) == {"compiled"}


def test_check_names_a_missing_backend(dataset, monkeypatch, capsys):
    import ptycho.backends as backends

    monkeypatch.setattr(backends, "available_backends", lambda: ["numpy"])
    assert run("check", dataset) == 2
    message = error_line(capsys.readouterr())
    assert "tensorflow and jax" in message and "pip install" in message


def test_check_needs_the_object(dataset, tmp_path, both_engines, capsys):
    raw = RawData.from_file(dataset)
    raw.objectGuess = None
    source = tmp_path / "measured.npz"
    raw.to_file(source)
    assert run("check", source) == 2
    assert "objectGuess" in error_line(capsys.readouterr())


# ---------------------------------------------------------------------------
# demo and bench
# ---------------------------------------------------------------------------


@needs_matplotlib
def test_demo_quick_writes_the_files(tmp_path, capsys):
    folder = tmp_path / "demo"
    assert run("demo", "--quick", "--output-dir", folder, "--backend", "numpy") == 0
    assert sorted(p.name for p in folder.iterdir()) == ["dataset.npz", "grouped.npz", "overview.png", "stitched.png"]
    assert png_size(folder / "stitched.png")[0] > 400  # original, stitched, difference, coverage
    width, height = png_size(folder / "overview.png")
    assert width >= 1200 and height >= 1200
    assert (folder / "overview.png").stat().st_size > 100_000
    grouped = load_grouped(folder / "grouped.npz")
    assert grouped["Y"].shape[3] == 4  # gridsize 2
    out = capsys.readouterr().out
    assert "demo:" in out and str(folder / "overview.png") in out
    # A second run keeps the first one's files (unless --overwrite) and stops before any work.
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert run("demo", "--quick", "--output-dir", folder, "--backend", "numpy") == 2
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before


@needs_matplotlib
def test_failing_demo_writes_nothing(tmp_path, monkeypatch, capsys):
    from ptycho import plotting

    def boom(*args, **kwargs):
        raise RuntimeError("drawing failed")

    monkeypatch.setattr(plotting, "plot_overview", boom)
    folder = tmp_path / "demo"
    assert run("demo", "--quick", "--output-dir", folder, "--backend", "numpy") == 1
    assert "drawing failed" in error_line(capsys.readouterr())
    assert not folder.exists()


def _fake_bench(monkeypatch, behaviour):
    fake = types.ModuleType("ptycho.bench")
    fake.main = behaviour
    monkeypatch.setitem(sys.modules, "ptycho.bench", fake)
    import ptycho

    monkeypatch.setattr(ptycho, "bench", fake, raising=False)


def test_bench_forwards_its_arguments(monkeypatch):
    seen = []
    _fake_bench(monkeypatch, lambda argv=None: seen.append(argv) or 7)
    assert cli.main(["--quiet", "bench", "--quick", "--N", "8", "--help"]) == 7
    assert seen == [["--quick", "--N", "8", "--help"]]


@pytest.mark.parametrize("code, expected", [(0, 0), (None, 0), (2, 2)], ids=["help", "none", "usage"])
def test_bench_exit_becomes_the_status(monkeypatch, code, expected):
    def exits(argv=None):
        raise SystemExit(code)

    _fake_bench(monkeypatch, exits)
    assert cli.main(["bench", "--bogus"]) == expected


def test_pictures_need_matplotlib(dataset, tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    assert run("show", dataset, "-o", tmp_path / "o.png") == 2
    assert 'pip install "ptycho[plot]"' in error_line(capsys.readouterr())
    assert not (tmp_path / "o.png").exists()


def _hide_packages(monkeypatch, *names):
    """Make find_spec report ``names`` as not installed (the CLI's check of extras)."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in names else real(name, *a))


@pytest.mark.parametrize("make, expected", [(None, "does not exist"), (_corrupt, "not a readable"),
                                            (_missing_field, "diff3d"), (_pickled, "xcoords")],
                         ids=["missing", "corrupt", "missing-field", "pickled"])
def test_show_reports_a_bad_input_before_a_missing_extra(dataset, tmp_path, monkeypatch, capsys, make, expected):
    """Without matplotlib, a bad FILE is still an input error naming the file (issue 16)."""
    source = tmp_path / "input.npz"
    if make is not None:
        make(source, dataset)
    _hide_packages(monkeypatch, "matplotlib")
    assert run("show", source, "-o", tmp_path / "o.png") == 2
    message = error_line(capsys.readouterr())
    assert "input.npz" in message and expected in message and "pip install" not in message


def test_demo_reports_an_existing_output_before_a_missing_extra(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "demo"
    folder.mkdir()
    (folder / "overview.png").write_bytes(b"precious")
    _hide_packages(monkeypatch, "matplotlib")
    assert run("demo", "--quick", "--output-dir", folder) == 2
    message = error_line(capsys.readouterr())
    assert "already exists" in message and "pip install" not in message
    assert run("demo", "--quick", "--output-dir", folder, "--overwrite") == 2
    assert 'pip install "ptycho[plot]"' in error_line(capsys.readouterr())


def test_check_reports_a_bad_input_before_missing_backends(tmp_path, monkeypatch, capsys):
    import ptycho.backends as backends

    monkeypatch.setattr(backends, "available_backends", lambda: ["numpy"])
    assert run("check", tmp_path / "input.npz") == 2
    message = error_line(capsys.readouterr())
    assert "input.npz" in message and "does not exist" in message and "pip install" not in message


def test_extract_reports_a_bad_input_before_a_missing_scale_extra(dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ptycho.scale", None)
    import ptycho

    monkeypatch.delattr(ptycho, "scale", raising=False)
    source = tmp_path / "input.npz"
    _corrupt(source, dataset)
    assert run("extract", source, "-o", tmp_path / "g.zarr", "--backend", "numpy") == 2
    message = error_line(capsys.readouterr())
    assert "input.npz" in message and "pip install" not in message


# ---------------------------------------------------------------------------
# Exit statuses: input errors 2, bugs 1 (issue 10)
# ---------------------------------------------------------------------------


def _raising(monkeypatch, exc):
    from ptycho.cli import simulate

    def fail(args):
        raise exc

    monkeypatch.setattr(simulate, "run", fail)


@pytest.mark.parametrize("exc", [RuntimeError("engine broke"), TypeError("unsupported operand"),
                                 ValueError("a bug, not an input"), KeyError("field")],
                         ids=["RuntimeError", "TypeError", "ValueError", "KeyError"])
def test_a_bug_is_a_one_line_internal_error(monkeypatch, tmp_path, capsys, exc):
    _raising(monkeypatch, exc)
    assert run("simulate", "-o", tmp_path / "s.npz") == 1
    message = error_line(capsys.readouterr())
    assert f"internal error: {type(exc).__name__}: " in message
    assert message.endswith("(run with --debug for the traceback)")


def test_a_bug_with_debug_shows_the_traceback(monkeypatch, tmp_path, capsys):
    _raising(monkeypatch, TypeError("unsupported operand"))
    assert run("--debug", "simulate", "-o", tmp_path / "s.npz") == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "TypeError: unsupported operand" in err
    assert err.strip().splitlines()[-1] == "ptycho-patches: error: internal error: TypeError: unsupported operand"


@pytest.mark.parametrize("exc", [InputError("--N: bad value"), InputTypeError("positions: expected an array"),
                                 cli.CLIError("input 'x.npz' does not exist"),
                                 FileExistsError("output 'x.npz' exists")],
                         ids=["InputError", "InputTypeError", "CLIError", "FileExistsError"])
def test_an_input_error_exits_2(monkeypatch, tmp_path, capsys, exc):
    _raising(monkeypatch, exc)
    assert run("simulate", "-o", tmp_path / "s.npz") == 2
    message = error_line(capsys.readouterr())
    assert "internal error" not in message and "--debug" not in message


# ---------------------------------------------------------------------------
# Optional scale paths (zarr, dask) and their absence
# ---------------------------------------------------------------------------


def test_extract_to_zarr(dataset, grouped, tmp_path):
    zarr = require_extra("scale", "zarr")
    out = tmp_path / "groups.zarr"
    assert run("extract", dataset, "-o", out, "--gridsize", 2, "--K", 6, "--nsamples", 12,
               "--backend", "numpy") == 0
    store = zarr.open_group(str(out), mode="r")
    reference = load_grouped(grouped)
    np.testing.assert_array_equal(store["Y"][...], reference["Y"])
    np.testing.assert_array_equal(store["nn_indices"][...], reference["nn_indices"])
    # An existing store is kept unless --resume or --overwrite.
    assert run("extract", dataset, "-o", out, "--gridsize", 2, "--backend", "numpy") == 2


def test_extract_on_dask(dataset, grouped, tmp_path):
    require_extra("scale", "dask")
    require_extra("scale", "distributed")
    out = tmp_path / "dask.npz"
    assert run("extract", dataset, "-o", out, "--gridsize", 2, "--K", 6, "--nsamples", 12,
               "--backend", "numpy", "--workers", 1) == 0
    np.testing.assert_array_equal(load_grouped(out)["Y"], load_grouped(grouped)["Y"])


def test_scale_paths_without_the_extra(dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ptycho.scale", None)  # import ptycho.scale -> ImportError
    import ptycho

    monkeypatch.delattr(ptycho, "scale", raising=False)
    assert run("extract", dataset, "-o", tmp_path / "g.zarr", "--backend", "numpy") == 2
    assert 'pip install "ptycho[scale]"' in error_line(capsys.readouterr())
    assert not (tmp_path / "g.zarr").exists()


# ---------------------------------------------------------------------------
# Real processes
# ---------------------------------------------------------------------------


def _console_script() -> str:
    beside = Path(sys.executable).with_name("ptycho-patches")
    found = str(beside) if beside.exists() else shutil.which("ptycho-patches")
    if found is None:
        pytest.skip("the ptycho-patches console script is not installed (pip install -e .)")
    return found


def test_importing_the_cli_imports_no_engine_or_plotting_library():
    code = ("import sys, ptycho.cli; "
            "print(sorted(m for m in ('tensorflow', 'jax', 'matplotlib') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_console_script_help():
    result = subprocess.run([_console_script(), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "examples:" in result.stdout and "demo" in result.stdout


@needs_matplotlib
def test_python_m_ptycho_demo_quick(tmp_path):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    result = subprocess.run([sys.executable, "-m", "ptycho", "demo", "--quick", "--output-dir", tmp_path / "d",
                             "--backend", "numpy"],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout
    png_size(tmp_path / "d" / "overview.png")
    assert RawData.from_file(tmp_path / "d" / "dataset.npz").objectGuess.shape == (96, 128)
