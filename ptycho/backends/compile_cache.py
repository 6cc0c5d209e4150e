"""Persistent compilation caches of the XLA backends, for command-line runs.

A command is a fresh process: without a cache it compiles the engine's XLA
programs again on every run.  JAX and TensorFlow can both keep the compiled
executables on disk; this module holds what the two share -- where the cache
lives and how a user turns it off -- and TensorFlow's switch, which must be
set before TensorFlow compiles anything (so it cannot live in
:mod:`ptycho.backends._tensorflow`, which imports TensorFlow).  JAX's switch is
:func:`ptycho.backends._jax.enable_compilation_cache`.

Only the CLI turns a cache on: a library must not change a framework's global
flags behind its caller's back.  Imports neither TensorFlow nor JAX.

=========================== ===================================================
``PTYCHO_JAX_CACHE=0``      JAX: no persistent cache (also ``off``/``false``/``no``)
``PTYCHO_JAX_CACHE_DIR``    JAX: the cache directory
``PTYCHO_TF_CACHE=0``       TensorFlow: no persistent cache
``PTYCHO_TF_CACHE_DIR``     TensorFlow: the cache directory
=========================== ===================================================

The default directory is ``$XDG_CACHE_HOME/ptycho/<backend>``, i.e.
``~/.cache/ptycho/jax`` and ``~/.cache/ptycho/tensorflow``.
"""

from __future__ import annotations

import hashlib
import os
import platform
import warnings
from typing import Any, Optional

__all__ = ["cache_dir", "opted_out", "make_cache_dir", "enable_tensorflow_cache", "TF_FLAGS_ENV"]

_OFF = {"0", "off", "false", "no"}

#: TensorFlow reads its XLA flags from this environment variable, once per
#: process, when it first compiles a cluster.
TF_FLAGS_ENV = "TF_XLA_FLAGS"


def _env_prefix(backend: str) -> str:
    return {"jax": "PTYCHO_JAX_CACHE", "tensorflow": "PTYCHO_TF_CACHE"}[backend]


def opted_out(backend: str) -> bool:
    """Whether ``PTYCHO_JAX_CACHE`` / ``PTYCHO_TF_CACHE`` turns the cache off (0, off, false, no)."""
    return os.environ.get(_env_prefix(backend), "").strip().lower() in _OFF


def cache_dir(backend: str, path: Any = None) -> str:
    """The cache directory of ``backend`` ('jax' or 'tensorflow'), absolute.

    ``path`` if given, else ``$PTYCHO_JAX_CACHE_DIR`` / ``$PTYCHO_TF_CACHE_DIR``,
    else ``$XDG_CACHE_HOME/ptycho/<backend>`` (``~/.cache/ptycho/<backend>``).
    """
    if path is not None:
        return os.path.abspath(os.path.expanduser(os.fspath(path)))
    explicit = os.environ.get(_env_prefix(backend) + "_DIR", "").strip()
    if explicit:
        return os.path.abspath(os.path.expanduser(explicit))
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ptycho", backend)


def make_cache_dir(directory: str, what: str) -> Optional[str]:
    """Create ``directory``; a failure leaves the cache off (a warning, never an error)."""
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        warnings.warn(f"{what} compilation cache disabled: cannot create {directory!r} ({exc})", RuntimeWarning,
                      stacklevel=3)
        return None
    return directory


# ---------------------------------------------------------------------------
# TensorFlow: XLA's persistent cache, switched on by TF_XLA_FLAGS
# ---------------------------------------------------------------------------


def _tensorflow_version() -> str:
    """The installed TensorFlow's version, read from its package metadata (no import)."""
    from importlib import metadata

    for dist in ("tensorflow", "tensorflow-cpu", "tf-nightly", "tensorflow-macos", "tensorflow-intel"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


def _machine_fingerprint() -> str:
    """A short hash of this CPU's instruction-set features.

    XLA:CPU executables are machine code for the CPU that compiled them;
    TensorFlow loads a cached one on another CPU with only a log message, so
    a cache directory shared between machines (a network home) must keep
    their entries apart.
    """
    features = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.startswith(("flags", "Features")):
                    features = line.split(":", 1)[-1].strip()
                    break
    except OSError:
        pass
    text = f"{platform.machine()}|{platform.processor()}|{features}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def tensorflow_cache_prefix() -> str:
    """File-name prefix of the cache entries: TensorFlow's version and the CPU's fingerprint.

    TensorFlow names an entry ``<prefix>__<signature hash>__<program hash>__XLA_CPU_JIT.pb``:
    neither the compiler's version nor the machine is in it, so the prefix adds
    both; an upgrade or another CPU compiles afresh instead of loading a stale
    executable (TensorFlow 2.21 loads an executable built for other CPU features
    with only an error line in its log).
    """
    version = "".join(ch if ch.isalnum() or ch == "." else "_" for ch in _tensorflow_version())
    return f"ptycho_tf{version}_{_machine_fingerprint()}"


def enable_tensorflow_cache(path: Any = None) -> Optional[str]:
    """Turn on TensorFlow's persistent XLA cache on CPUs; returns its directory (None when off).

    Adds ``--tf_xla_persistent_cache_directory`` to ``TF_XLA_FLAGS``, limited
    to the CPU device (``--tf_xla_persistent_cache_device_types=CPU``: the one
    measured here; GPU programs compile as before), with a file prefix naming
    the TensorFlow version and the CPU (:func:`tensorflow_cache_prefix`).
    TensorFlow parses those flags once per process, when it first compiles a
    cluster, so call this before the first ``tf.function(jit_compile=True)``
    runs (the CLI calls it before importing TensorFlow); set later, it is
    ignored.  The cached program is the same XLA executable: results are
    unchanged.  The first run on a machine compiles and writes it (about
    170 kB per program and input shape), later runs load it.

    Left off, returning None, when ``PTYCHO_TF_CACHE=0``, when ``TF_XLA_FLAGS``
    already names a persistent cache directory (the user's own wins), or when
    the directory cannot be created or holds whitespace (the flags are split
    on whitespace; a warning).  ``path`` (or ``PTYCHO_TF_CACHE_DIR``) chooses
    the directory.
    """
    if opted_out("tensorflow"):
        return None
    flags = os.environ.get(TF_FLAGS_ENV, "")
    if "--tf_xla_persistent_cache_directory" in flags:
        return None
    directory = cache_dir("tensorflow", path)
    if any(ch.isspace() for ch in directory):
        warnings.warn(f"TensorFlow compilation cache disabled: {TF_FLAGS_ENV} cannot hold the path {directory!r} "
                      "(it has whitespace); set PTYCHO_TF_CACHE_DIR", RuntimeWarning, stacklevel=2)
        return None
    if make_cache_dir(directory, "TensorFlow") is None:
        return None
    ours = (f"--tf_xla_persistent_cache_directory={directory} "
            "--tf_xla_persistent_cache_device_types=CPU "
            f"--tf_xla_persistent_cache_prefix={tensorflow_cache_prefix()}")
    os.environ[TF_FLAGS_ENV] = f"{flags} {ours}".strip()
    return directory
