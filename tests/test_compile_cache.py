"""Persistent compilation caches for command-line runs (:mod:`ptycho.backends.compile_cache`).

The unit tests check the flags and the conventions in-process.  One test
runs ``ptycho-patches extract`` twice in real processes (TensorFlow reads
``TF_XLA_FLAGS`` once per process): the first run fills the cache, the
second loads it (no new entry, the same bits).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ptycho.backends import compile_cache
from ptycho.testing import require_backend

FLAG = "--tf_xla_persistent_cache_directory"


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No cache settings of the user's; TF_XLA_FLAGS restored after the test."""
    for name in ("PTYCHO_TF_CACHE", "PTYCHO_TF_CACHE_DIR", "PTYCHO_JAX_CACHE", "PTYCHO_JAX_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TF_XLA_FLAGS", "")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return monkeypatch


def test_default_directories_follow_xdg(clean_env, tmp_path):
    assert compile_cache.cache_dir("tensorflow") == str(tmp_path / "xdg" / "ptycho" / "tensorflow")
    assert compile_cache.cache_dir("jax") == str(tmp_path / "xdg" / "ptycho" / "jax")
    clean_env.setenv("PTYCHO_TF_CACHE_DIR", str(tmp_path / "tf"))
    assert compile_cache.cache_dir("tensorflow") == str(tmp_path / "tf")
    assert compile_cache.cache_dir("tensorflow", tmp_path / "given") == str(tmp_path / "given")


def test_jax_uses_the_shared_convention(clean_env, tmp_path):
    require_backend("jax")
    from ptycho.backends import _jax

    clean_env.setenv("PTYCHO_JAX_CACHE_DIR", str(tmp_path / "j"))
    assert _jax.default_cache_dir() == compile_cache.cache_dir("jax") == str(tmp_path / "j")


def test_enable_tensorflow_cache_sets_the_flags(clean_env, tmp_path):
    clean_env.setenv("TF_XLA_FLAGS", "--tf_xla_auto_jit=0")
    directory = compile_cache.enable_tensorflow_cache(tmp_path / "c")
    assert directory == str(tmp_path / "c") and Path(directory).is_dir()
    flags = os.environ["TF_XLA_FLAGS"].split()
    assert flags[0] == "--tf_xla_auto_jit=0"  # the user's flags are kept
    assert f"{FLAG}={directory}" in flags
    assert "--tf_xla_persistent_cache_device_types=CPU" in flags
    prefix = [f for f in flags if f.startswith("--tf_xla_persistent_cache_prefix=")]
    assert prefix == [f"--tf_xla_persistent_cache_prefix={compile_cache.tensorflow_cache_prefix()}"]
    assert compile_cache.tensorflow_cache_prefix().startswith("ptycho_tf")


@pytest.mark.parametrize("value", ["0", "off", "False", "no"])
def test_tensorflow_cache_opt_out(clean_env, tmp_path, value):
    clean_env.setenv("PTYCHO_TF_CACHE", value)
    assert compile_cache.enable_tensorflow_cache(tmp_path / "c") is None
    assert os.environ["TF_XLA_FLAGS"] == ""
    assert not (tmp_path / "c").exists()


def test_the_users_own_tensorflow_cache_wins(clean_env, tmp_path):
    mine = f"{FLAG}={tmp_path / 'mine'}"
    clean_env.setenv("TF_XLA_FLAGS", mine)
    assert compile_cache.enable_tensorflow_cache(tmp_path / "c") is None
    assert os.environ["TF_XLA_FLAGS"] == mine


def test_a_directory_with_whitespace_leaves_the_cache_off(clean_env, tmp_path):
    with pytest.warns(RuntimeWarning, match="whitespace"):
        assert compile_cache.enable_tensorflow_cache(tmp_path / "a b") is None
    assert os.environ["TF_XLA_FLAGS"] == ""


def test_a_directory_that_cannot_be_made_leaves_the_cache_off(clean_env, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.warns(RuntimeWarning, match="cannot create"):
        assert compile_cache.enable_tensorflow_cache(blocker / "c") is None
    assert os.environ["TF_XLA_FLAGS"] == ""


def test_prepare_backend_turns_the_tensorflow_cache_on(clean_env, tmp_path):
    """The CLI's start-up sets TF_XLA_FLAGS (before importing TensorFlow: see the next test); the opt-out holds."""
    require_backend("tensorflow")
    from ptycho.cli import _common

    clean_env.setenv("PTYCHO_TF_CACHE_DIR", str(tmp_path / "c"))
    _common.prepare_backend("tensorflow", False)
    assert f"{FLAG}={tmp_path / 'c'}" in os.environ["TF_XLA_FLAGS"].split()
    clean_env.setenv("TF_XLA_FLAGS", "")
    clean_env.setenv("PTYCHO_TF_CACHE", "0")
    _common.prepare_backend("tensorflow", False)
    assert os.environ["TF_XLA_FLAGS"] == ""


def test_a_second_cli_run_loads_the_tensorflow_cache(tmp_path):
    """Two ``extract`` processes: the first fills the cache, the second loads it (no new entry, the same bits)."""
    require_backend("tensorflow")
    cache = tmp_path / "cache"
    env = dict(os.environ, PTYCHO_TF_CACHE_DIR=str(cache), TF_XLA_FLAGS="")
    env.pop("PTYCHO_TF_CACHE", None)
    scan = tmp_path / "scan.npz"
    rng = np.random.default_rng(0)
    obj = (rng.uniform(0.5, 1, (40, 40)) * np.exp(1j * rng.uniform(-1, 1, (40, 40)))).astype(np.complex64)
    np.savez(scan, xcoords=rng.uniform(8, 32, 12), ycoords=rng.uniform(8, 32, 12),
             diff3d=np.zeros((12, 8, 8), np.float32), probeGuess=np.ones((8, 8), np.complex64), objectGuess=obj)

    def extract(name):
        out = tmp_path / name
        result = subprocess.run([sys.executable, "-m", "ptycho", "extract", str(scan), "-o", str(out),
                                 "--backend", "tensorflow", "--quiet"],
                                capture_output=True, text=True, timeout=120, env=env)
        assert result.returncode == 0, result.stderr
        with np.load(out) as data:
            return data["Y"]

    first = extract("first.npz")
    entries = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    assert entries, "the first run wrote no cache entry"
    assert all(name.startswith(compile_cache.tensorflow_cache_prefix()) for name in entries)
    second = extract("second.npz")
    # the same programs: loaded from the entries, none compiled anew or rewritten
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == entries
    np.testing.assert_array_equal(second, first)
