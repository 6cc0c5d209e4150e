"""Zarr outputs on object storage: ``s3://`` against a local S3 server (moto) on 127.0.0.1.

The server is started here, on a loopback address with a free port, and
every S3 call (this process and the Dask workers) goes to it through the
standard AWS environment variables: nothing leaves the machine.

Skipped when s3fs (``scale`` extra) or moto's server (``test`` extra) is
missing, unless the ``scale`` extra is demanded (``PTYCHO_TEST_EXTRAS=scale``;
CI demands it and installs both).
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from ptycho.testing import demanded_extras, require_extra
from tests.helpers import local_cluster, scale_object, scale_positions, scale_raw, scale_reference

zarr = require_extra("scale", "zarr")
distributed = require_extra("scale", "distributed")
s3fs = require_extra("scale", "s3fs")
try:
    from moto.server import ThreadedMotoServer
except ImportError as exc:  # the server is a test dependency, not part of the scale extra
    if "scale" in demanded_extras():
        pytest.fail(f"the scale extra is demanded but moto's server cannot be imported: {exc}", pytrace=False)
    pytest.skip("needs moto's S3 server: pip install 'ptycho[test]' (moto[server])", allow_module_level=True)

from ptycho.scale import extract_to_zarr, grouped_to_zarr  # noqa: E402

N = 8
BUCKET = "ptycho-test"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on 127.0.0.1 and the AWS variables that point every client at it."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    assert host == "127.0.0.1"
    endpoint = f"http://{host}:{port}"
    nowhere = str(tmp_path_factory.mktemp("aws") / "none")
    with pytest.MonkeyPatch.context() as mp:
        for name, value in {
            "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": nowhere, "AWS_SHARED_CREDENTIALS_FILE": nowhere,
            "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1",
        }.items():
            mp.setenv(name, value)
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
            mp.delenv(name, raising=False)
        fs = s3fs.S3FileSystem(skip_instance_cache=True)
        fs.mkdir(BUCKET)
        try:
            yield endpoint
        finally:
            server.stop()


@pytest.fixture(scope="module")
def client(s3):
    """2 worker processes started with the AWS variables set (workers inherit them, as on a cluster)."""
    with local_cluster() as c:
        yield c


_object = scale_object


_positions = scale_positions


_reference = scale_reference


def _keys(prefix):
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    return sorted(fs.find(f"{BUCKET}/{prefix}"))


@pytest.mark.parametrize("on_cluster", [False, True], ids=["in-process", "workers"])
def test_patches_stream_to_s3(s3, request, on_cluster):
    url = f"s3://{BUCKET}/patches-{on_cluster}.zarr"
    client = request.getfixturevalue("client") if on_cluster else None
    image, positions = _object(), _positions(400)
    out = extract_to_zarr(image, positions, N, url, channels=4, chunk_size=64, client=client, overwrite=True)
    ref = _reference(image, positions, 4)
    np.testing.assert_array_equal(out[...], ref)
    np.testing.assert_array_equal(zarr.open_array(url, mode="r")[...], ref)
    keys = _keys(f"patches-{on_cluster}.zarr")
    assert f"{BUCKET}/patches-{on_cluster}.zarr/zarr.json" in keys
    assert sum("/c/" in key for key in keys) == 7  # one object per chunk of 16 groups
    assert zarr.open_array(url, mode="r").attrs["completed_chunks"] == [[0, 7]]


def test_explicit_storage_options_without_the_endpoint_variable(s3, monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    options = {"endpoint_url": s3, "key": "testing", "secret": "testing"}
    image, positions = _object(), _positions(100)
    url = f"s3://{BUCKET}/explicit.zarr"
    out = extract_to_zarr(image, positions, N, url, chunk_size=32, storage_options=options, overwrite=True)
    np.testing.assert_array_equal(out[...], _reference(image, positions, 1))
    np.testing.assert_array_equal(zarr.open_array(url, mode="r", storage_options=options)[...],
                                  _reference(image, positions, 1))


def test_an_s3_store_resumes_and_refuses_other_inputs(s3, client):
    image, positions = _object(), _positions(400)
    url = f"s3://{BUCKET}/resume.zarr"

    def crash(chunk):
        if chunk == 2:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        extract_to_zarr(image, positions, N, url, chunk_size=64, on_chunk=crash, overwrite=True)
    computed = []
    out = extract_to_zarr(image, positions, N, url, chunk_size=64, client=client, on_chunk=computed.append)
    assert sorted(computed) == [3, 4, 5, 6]
    np.testing.assert_array_equal(out[...], _reference(image, positions, 1))
    with pytest.raises(ValueError, match="overwrite=True"):
        extract_to_zarr(image, positions + 0.5, N, url, chunk_size=64)


_raw = scale_raw


GROUPING = dict(K=6, nsamples=20, gridsize=2, seed=11)


def test_grouped_outputs_on_disk_and_on_s3_with_and_without_workers_hold_the_same_Y(s3, client, tmp_path):
    """Acceptance: local .zarr and s3://, each with and without workers, equal generate_grouped_data."""
    raw = _raw()
    expected = raw.generate_grouped_data(N, backend="numpy", **GROUPING)
    outputs = {
        "local": (str(tmp_path / "g.zarr"), None),
        "local-workers": (str(tmp_path / "gw.zarr"), client),
        "s3": (f"s3://{BUCKET}/g.zarr", None),
        "s3-workers": (f"s3://{BUCKET}/gw.zarr", client),
    }
    for name, (where, on) in outputs.items():
        grouped_to_zarr(raw, where, N=N, batch_size=12, client=on, overwrite=True, **GROUPING)
        group = zarr.open_group(where, mode="r")
        assert group.attrs["complete"] is True, name
        for field, value in expected.items():
            np.testing.assert_array_equal(group[field][...], value, err_msg=f"{name}: {field}")


def test_grouped_overwrite_on_s3_replaces_the_group(s3):
    raw = _raw()
    url = f"s3://{BUCKET}/replaced.zarr"
    grouped_to_zarr(raw, url, N=N, batch_size=8, **GROUPING)
    with pytest.raises(ValueError, match="overwrite=True"):
        grouped_to_zarr(raw, url, N=N, batch_size=8, **dict(GROUPING, seed=12))
    grouped_to_zarr(raw, url, N=N, batch_size=8, overwrite=True, **dict(GROUPING, seed=12))
    expected = raw.generate_grouped_data(N, backend="numpy", **dict(GROUPING, seed=12))["Y"]
    np.testing.assert_array_equal(zarr.open_group(url, mode="r")["Y"][...], expected)


def test_storage_options_need_a_url(tmp_path):
    with pytest.raises(ValueError, match="not a URL"):
        extract_to_zarr(_object(), _positions(40), N, tmp_path / "p.zarr", storage_options={"anon": True})
    with pytest.raises(TypeError, match="storage_options"):
        extract_to_zarr(_object(), _positions(40), N, f"s3://{BUCKET}/x.zarr", storage_options="anon=true")


@pytest.mark.parametrize("workers", [(), ("--workers", "2")], ids=["in-process", "workers2"])
def test_cli_writes_s3_outputs_equal_to_the_npz(s3, tmp_path, capsys, workers):
    """``ptycho-patches extract scan.npz -o s3://bucket/run.zarr [--workers 2]`` == the .npz output."""
    from ptycho import cli
    from ptycho.dataset import load_grouped

    def run(*argv):
        return cli.main([str(a) for a in argv])

    grouping = ("--gridsize", 2, "--K", 6, "--nsamples", 30, "--seed", 2, "--backend", "numpy", "--batch-size", 16)
    scan, npz = tmp_path / "scan.npz", tmp_path / "g.npz"
    assert run("simulate", "-o", scan, "--object-size", 64, 64, "--N", 16, "--positions", 50, "--seed", 1) == 0
    assert run("extract", scan, "-o", npz, *grouping) == 0
    url = f"s3://{BUCKET}/cli-{len(workers)}.zarr"
    assert run("extract", scan, "-o", url, *grouping, *workers) == 0
    assert f"wrote {url}" in capsys.readouterr().out
    np.testing.assert_array_equal(zarr.open_group(url, mode="r")["Y"][...], load_grouped(npz)["Y"])
    # the output exists now: refused without --overwrite / --resume, then resumed (a no-op)
    assert run("extract", scan, "-o", url, *grouping, *workers) == 2
    assert "already exists" in capsys.readouterr().err
    assert run("extract", scan, "-o", url, *grouping, *workers, "--resume") == 0
    # --storage-option reaches s3fs (here: the endpoint, given explicitly)
    assert run("extract", scan, "-o", url, *grouping, "--overwrite", "--storage-option", f"endpoint_url={s3}") == 0
    np.testing.assert_array_equal(zarr.open_group(url, mode="r")["Y"][...], load_grouped(npz)["Y"])


def test_stitch_reads_an_s3_store_on_the_workers(s3, client, tmp_path):
    from ptycho.scale import stitch_zarr

    raw = _raw()
    url = f"s3://{BUCKET}/stitch.zarr"
    grouped_to_zarr(raw, url, N=N, batch_size=12, overwrite=True, **GROUPING)
    grouped_to_zarr(raw, tmp_path / "stitch.zarr", N=N, batch_size=12, **GROUPING)
    remote = stitch_zarr(url, client=client, split_every=3)
    local = stitch_zarr(tmp_path / "stitch.zarr", split_every=3)
    np.testing.assert_array_equal(remote["object"], local["object"])
    np.testing.assert_array_equal(remote["coverage"], local["coverage"])
