"""Backend fixtures and markers shared by every test.

Backends
--------
``backend`` is parametrized over :class:`Backend` (ids ``numpy``, ``jax``,
``tensorflow``).  A backend whose library is missing is skipped -- unless the
environment variable ``PTYCHO_TEST_BACKENDS`` (comma-separated names, or
``all``) demands it: then a missing backend is an error, so CI cannot pass by
skipping.  ``@pytest.mark.skip_backend(Backend.JAX, reason=...)`` skips one
backend for one test.

Extras
------
A test that needs an optional extra other than a backend's -- ``plot``
(matplotlib), ``peers`` (OpenCV), ``scale`` (Zarr, Dask, s3fs), ``fast`` (Numba) -- calls
``require_extra("plot")`` (:mod:`ptycho.testing`): it skips, naming the
extra, unless ``PTYCHO_TEST_EXTRAS`` (comma-separated names, or ``all``)
demands it; then a missing extra is an error.  ``PTYCHO_TEST_SCALE=1`` is an
older alias for ``PTYCHO_TEST_EXTRAS=scale``.

GPU cells
---------
``@pytest.mark.gpu`` marks a test that needs a visible GPU; it runs where one
is visible (JAX CUDA, CuPy or PyTorch CUDA) and is skipped elsewhere.

Compilation caches
------------------
Tests run the CLI in-process, and the CLI turns on JAX's and TensorFlow's
persistent compilation caches (in ``~/.cache/ptycho``, through process-wide
settings): the test session turns them off unless ``PTYCHO_JAX_CACHE`` /
``PTYCHO_TF_CACHE`` is set; ``tests/test_compile_cache.py`` turns them on in
temporary directories.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import pytest

from ptycho.backends import Backend
from ptycho.testing import (
    demanded_backends,
    demanded_extras,
    extra_installed,
    require_backend,
    require_extra,
)

__all__ = ["Backend", "require_backend", "require_extra"]

# no persistent compilation caches in the user's home from in-process CLI runs
os.environ.setdefault("PTYCHO_JAX_CACHE", "0")
os.environ.setdefault("PTYCHO_TF_CACHE", "0")


def _installed(modname: str) -> bool:
    return importlib.util.find_spec(modname) is not None


def pytest_configure(config):
    try:
        demanded = demanded_backends()
        extras = demanded_extras()
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    missing = sorted(n for n in demanded if not Backend(n).installed())
    if missing:
        raise pytest.UsageError(
            f"PTYCHO_TEST_BACKENDS demands {missing}, which cannot be imported here; "
            "install them (pip install '.[all,test]') or drop them from the variable"
        )
    missing = sorted(n for n in extras if not extra_installed(n))
    if missing:
        raise pytest.UsageError(
            f"PTYCHO_TEST_EXTRAS demands the extras {missing}, which are not installed here; "
            f"install them (pip install '.[{','.join(missing)},test]') or drop them from the variable"
        )


@pytest.fixture(params=[b.pytest_param() for b in Backend])
def backend(request) -> Backend:
    """Each backend in turn; honours ``@pytest.mark.skip_backend(Backend.X, reason=...)``."""
    b: Backend = request.param
    for marker in request.node.iter_markers("skip_backend"):
        skipped = marker.args[0] if marker.args else marker.kwargs.get("backend")
        if skipped == b or skipped == b.value:
            pytest.skip(marker.kwargs.get("reason", f"not applicable to {b.value}"))
    require_backend(b)
    return b


@pytest.fixture
def tf():
    """TensorFlow, or a skip/fail as for the tensorflow backend."""
    require_backend(Backend.TENSORFLOW)
    import tensorflow

    return tensorflow


@pytest.fixture
def jax():
    """JAX, or a skip/fail as for the jax backend."""
    require_backend(Backend.JAX)
    import jax as jax_module

    return jax_module


@functools.lru_cache(maxsize=None)
def gpu_platforms() -> tuple[str, ...]:
    """Libraries that see a GPU here: any of 'jax', 'cupy', 'torch'."""
    found = []
    if _installed("jax"):
        try:
            import jax as jax_module

            if any(d.platform == "gpu" for d in jax_module.devices()):
                found.append("jax")
        except Exception:
            pass
    if _installed("cupy"):
        try:
            import cupy

            if cupy.cuda.runtime.getDeviceCount() > 0:
                found.append("cupy")
        except Exception:
            pass
    if _installed("torch"):
        try:
            import torch

            if torch.cuda.is_available():
                found.append("torch")
        except Exception:
            pass
    return tuple(found)


def pytest_runtest_setup(item):
    if item.get_closest_marker("gpu") is not None and not gpu_platforms():
        from ptycho.testing import demanded_device

        if demanded_device() == "gpu":
            pytest.fail("PTYCHO_TEST_DEVICE=gpu demands the GPU cells, but no GPU is visible "
                        "(JAX CUDA, CuPy or PyTorch CUDA)")
        pytest.skip("needs a visible GPU (JAX CUDA, CuPy or PyTorch CUDA); PTYCHO_TEST_DEVICE=gpu demands it")
