"""``ptycho-patches extract`` at scale: .npz and .zarr outputs, with and without Dask workers.

Skipped when the ``scale`` extra is missing, unless it is demanded
(``PTYCHO_TEST_EXTRAS=scale``; CI demands it).  The s3:// outputs of the
command are tested in ``tests/test_scale_s3.py`` (they need the local S3
server started there).
"""

from __future__ import annotations

import numpy as np
import pytest

from ptycho import cli
from ptycho.dataset import load_grouped
from ptycho.testing import require_extra

zarr = require_extra("scale", "zarr")
distributed = require_extra("scale", "distributed")

N = 16
GROUPING = ("--gridsize", "2", "--K", "6", "--nsamples", "40", "--seed", "3", "--backend", "numpy",
            "--batch-size", "24")


def run(*argv) -> int:
    return cli.main([str(a) for a in argv])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("scan") / "scan.npz"
    assert run("simulate", "-o", path, "--object-size", 64, 64, "--N", N, "--positions", 60, "--seed", 1) == 0
    return path


@pytest.fixture(scope="module")
def expected_Y(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("npz") / "plain.npz"
    assert run("extract", dataset, "-o", out, *GROUPING) == 0
    return load_grouped(out)["Y"]


@pytest.fixture(scope="module")
def scheduler():
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=50,
    ) as cluster:
        yield cluster.scheduler_address


@pytest.mark.parametrize(
    "name, dask",
    [
        ("g.npz", ("--workers", "2")),
        ("g.zarr", ()),
        ("g.zarr", ("--workers", "2")),
        ("g.zarr", ("--workers", "1")),
        ("g.zarr", "scheduler"),
        ("g.npz", "scheduler"),
    ],
    ids=["npz-workers2", "zarr", "zarr-workers2", "zarr-workers1", "zarr-scheduler", "npz-scheduler"],
)
def test_every_output_holds_the_same_Y(dataset, expected_Y, tmp_path, request, capsys, name, dask):
    if dask == "scheduler":
        dask = ("--scheduler", request.getfixturevalue("scheduler"))
    out = tmp_path / name
    assert run("extract", dataset, "-o", out, *GROUPING, *dask) == 0
    if dask:  # the engine the workers ran, checked on each of them
        assert "engine numpy/" in capsys.readouterr().out.replace("\n", " ")
    got = zarr.open_group(out, mode="r")["Y"][...] if name.endswith(".zarr") else load_grouped(out)["Y"]
    assert got.dtype == expected_Y.dtype
    np.testing.assert_array_equal(got, expected_Y)


def test_workers_resume_a_zarr_output_and_refuse_it_without_resume(dataset, expected_Y, tmp_path, capsys):
    out = tmp_path / "g.zarr"
    assert run("extract", dataset, "-o", out, *GROUPING) == 0
    group = zarr.open_group(out, mode="r+")
    group["Y"].attrs.update({"completed_chunks": [[0, 1]], "complete": False})  # as a kill leaves it
    group["Y"][6:] = 0  # chunks of 24 patches = 6 groups: chunk 0 is rows 0-5
    group.attrs.update({"complete": False})
    assert run("extract", dataset, "-o", out, *GROUPING, "--workers", 2) == 2
    assert "already exists" in capsys.readouterr().err
    assert run("extract", dataset, "-o", out, *GROUPING, "--workers", 2, "--resume") == 0
    assert "(resumed)" in capsys.readouterr().out
    np.testing.assert_array_equal(zarr.open_group(out, mode="r")["Y"][...], expected_Y)


@pytest.mark.parametrize(
    "output, extra, words",
    [
        ("g.zarr", ("--storage-option", "anon=true"), "is a path"),
        ("s3://bucket/g.npz", (), "expected a name ending in .zarr"),
        ("s3://bucket/g.zarr", ("--storage-option", "anon"), "KEY=VALUE"),
        ("g.zarr", ("--workers", 2, "--scheduler", "tcp://127.0.0.1:1"), "not both"),
    ],
    ids=["option-on-a-path", "url-npz", "option-without-value", "workers-and-scheduler"],
)
def test_bad_scale_options_are_usage_errors(dataset, tmp_path, capsys, output, extra, words):
    out = output if "://" in output else tmp_path / output
    assert run("extract", dataset, "-o", out, *GROUPING, *extra) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def test_storage_options_parse_json_values():
    from ptycho.cli.extract import _storage_options

    assert _storage_options(["anon=true", "endpoint_url=http://127.0.0.1:9000", "client_kwargs={\"a\": 1}",
                             "default_block_size=1048576"]) == {
        "anon": True, "endpoint_url": "http://127.0.0.1:9000", "client_kwargs": {"a": 1},
        "default_block_size": 1048576,
    }


def test_workers_run_and_report_the_fastest_engine_installed(dataset, expected_Y, tmp_path, capsys):
    """Without --backend, --workers runs the Numba kernel (ptycho[fast]) and says so; same Y."""
    require_extra("fast")
    grouping = GROUPING[:GROUPING.index("--backend")] + GROUPING[GROUPING.index("--backend") + 2:]
    out = tmp_path / "g.zarr"
    assert run("extract", dataset, "-o", out, *grouping, "--workers", 2) == 0
    said = capsys.readouterr().out
    assert "engine numpy/numba (NumPy backend, Numba kernel, 1 thread per task; verified bit for bit on 2 workers)" \
        in said
    group = zarr.open_group(out, mode="r")
    np.testing.assert_array_equal(group["Y"][...], expected_Y)
    assert group.attrs["engine"]["name"] == "numpy/numba"
