"""JAX sharding across devices, on 2 forced CPU devices in a subprocess.

``XLA_FLAGS=--xla_force_host_platform_device_count=2`` must be set before JAX
initialises, hence the subprocess.  The subprocess prints one JSON line per
case; each case is checked by its own test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("jax")

N = 8

_CASES = {
    # name: (P, channels, dtype, channel_axis, trim)
    "c1-even": (1000, 1, "complex64", None, True),
    "c1-odd-padded": (1001, 1, "complex64", None, True),
    "c4-odd-groups": (996, 4, "complex64", None, True),
    "c4-untrimmed": (996, 4, "complex64", None, False),
    "c1-complex128": (200, 1, "complex128", None, True),
    "c1-channel-axis": (200, 1, "complex64", True, True),
}

_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import jax
    from ptycho.backends import extract_patches_grouped
    from ptycho.scale import sharded_extract_patches

    N, cases = json.loads(sys.argv[1])
    rng = np.random.default_rng(0)
    print(json.dumps({"case": "devices", "count": len(jax.devices())}), flush=True)
    for name, (P, c, dtype, channel_axis, trim) in cases.items():
        image = (rng.standard_normal((40, 52)) + 1j * rng.standard_normal((40, 52))).astype(dtype)
        positions = rng.uniform(-6.0, 58.0, size=(P, 2))
        out = sharded_extract_patches(image, positions, N, channels=c, channel_axis=channel_axis, trim=trim)
        ref = np.asarray(extract_patches_grouped(image, positions, N, channels=c, backend="jax"))
        if not (c > 1 if channel_axis is None else channel_axis):
            ref = ref[..., 0]
        got = np.asarray(out)
        G = P // c
        print(json.dumps({
            "case": name,
            "type": type(out).__module__ + "." + type(out).__name__,
            "shape": list(got.shape),
            "ref_shape": list(ref.shape),
            "dtype": str(got.dtype),
            "ref_dtype": str(ref.dtype),
            "devices": len(out.sharding.device_set),
            "sharded": not out.sharding.is_fully_replicated,
            "max_abs_diff": float(np.max(np.abs(got[:G] - ref))) if ref.size else 0.0,
            "equal": bool(np.array_equal(got[:G], ref)),
        }), flush=True)
    """
)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """Run every case once in a 2-CPU-device JAX process; results by case name."""
    script = tmp_path_factory.mktemp("sharding") / "run.py"
    script.write_text(_SCRIPT)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    done = subprocess.run(
        [sys.executable, str(script), json.dumps([N, _CASES])],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return {line["case"]: line for line in lines}


def test_two_devices_are_visible(report):
    assert report["devices"]["count"] == 2


@pytest.mark.parametrize("case", list(_CASES))
def test_sharded_equals_single_device_bit_for_bit(report, case):
    P, c, dtype, channel_axis, trim = _CASES[case]
    got = report[case]
    assert got["type"].startswith("jax") and got["type"].endswith("ArrayImpl")
    assert got["dtype"] == got["ref_dtype"] == dtype
    if trim:
        assert got["shape"] == got["ref_shape"]
    else:
        assert got["shape"][0] % 2 == 0 and got["shape"][0] >= got["ref_shape"][0]
    assert got["devices"] == 2
    assert got["equal"], f"max |diff| = {got['max_abs_diff']}"


@pytest.mark.parametrize("case", ["c1-even", "c4-untrimmed"])
def test_evenly_divided_output_stays_sharded(report, case):
    assert report[case]["sharded"] is True


def test_single_device_in_process_equals_engine():
    import jax

    from ptycho.backends import extract_patches
    from ptycho.scale import sharded_extract_patches

    rng = np.random.default_rng(1)
    image = (rng.standard_normal((30, 30)) + 1j * rng.standard_normal((30, 30))).astype(np.complex64)
    positions = rng.uniform(0, 30, size=(50, 2))
    out = sharded_extract_patches(image, positions, N, devices=jax.devices()[:1])
    assert isinstance(out, jax.Array) and out.shape == (50, N, N)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(extract_patches(image, positions, N, backend="jax")))


def test_empty_device_list_is_refused():
    from ptycho.scale import sharded_extract_patches

    with pytest.raises(ValueError, match="devices"):
        sharded_extract_patches(np.ones((8, 8), np.complex64), np.zeros((4, 2)), N, devices=[])
