"""Dispatch: names, errors, native types, import isolation, foreign array-API arrays."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from ptycho.backends import Backend
from tests.helpers import assert_close, random_object


def test_import_does_not_load_heavy_backends():
    code = (
        "import sys, ptycho, ptycho.backends, ptycho.params, ptycho.config.config, ptycho.backends.window\n"
        "ptycho.backends.available_backends()\n"
        "import numpy as np\n"
        "ptycho.backends.extract_patches(np.ones((8, 8), np.complex64), np.zeros((1, 2)), 4)\n"
        "heavy = [m for m in ('tensorflow', 'jax') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_available_backends_lists_installed():
    from ptycho.backends import BACKENDS, available_backends

    names = available_backends()
    assert "numpy" in names
    assert set(names) <= set(BACKENDS)


def test_unknown_backend_is_value_error_listing_available():
    from ptycho.backends import available_backends, get_backend

    with pytest.raises(ValueError, match="unknown backend 'torchx'") as info:
        get_backend("torchx")
    for name in available_backends():
        assert name in str(info.value)


def test_missing_backend_is_import_error_naming_extra(monkeypatch):
    import ptycho.backends as backends
    from ptycho.backends import _dispatch

    monkeypatch.setattr(_dispatch, "_installed", lambda package: package == "numpy")
    monkeypatch.delitem(sys.modules, "ptycho.backends._jax", raising=False)
    with pytest.raises(ImportError, match=r"ptycho\[jax\]"):
        backends.get_backend("jax")


@pytest.mark.parametrize("alias, name", [("np", "numpy"), ("TF", "tensorflow"), ("jax.numpy", "jax")])
def test_aliases(alias, name):
    from ptycho.backends import canonical_name

    assert canonical_name(alias) == name


def test_returns_native_type_and_infers_backend(backend):
    from ptycho.backends import backend_of, extract_patches, get_backend

    image = random_object((20, 24), np.complex64, 0)
    positions = np.array([[3.25, 4.5], [10.0, -2.75], [19.9, 23.1]])
    got = extract_patches(image, positions, 8, backend=backend.value)
    reference = extract_patches(image, positions, 8, backend="numpy")
    assert_close(got, reference, backend=backend.value, shape=(3, 8, 8), dtype=np.complex64, exact=True)
    # a native input selects its own backend when none is named
    native_image = get_backend(backend.value).asarray(image)
    assert backend_of(native_image) == backend.value
    again = extract_patches(native_image, positions, 8)
    assert_close(again, reference, backend=backend.value, exact=True)


@pytest.mark.parametrize("dtype, expected", [(np.float32, np.complex64), (np.float64, np.complex128)])
def test_real_input_is_complex_with_zero_imaginary_part(backend, dtype, expected):
    from ptycho.backends import extract_patches

    image = np.random.default_rng(1).standard_normal((16, 18)).astype(dtype)
    positions = np.array([[2.5, 3.25], [15.75, 0.5]])
    got = extract_patches(image, positions, 6, backend=backend.value)
    reference = extract_patches(image.astype(expected), positions, 6, backend=backend.value)
    assert_close(got, np.asarray(reference) if backend is not Backend.TENSORFLOW else reference.numpy(),
                 backend=backend.value, dtype=expected, exact=True)
    assert not np.any(np.imag(np.asarray(got))) if backend is not Backend.TENSORFLOW else not np.any(np.imag(got.numpy()))


def test_nearest_takes_one_pixel(backend):
    from ptycho.backends import extract_patches

    image = random_object((12, 14), np.complex64, 2)
    positions = np.array([[5.4, 6.6], [2.5, 3.5]])  # halves round to even: 2.5 -> 2, 3.5 -> 4
    got = extract_patches(image, positions, 4, backend=backend.value, interpolation="nearest")
    padded = np.pad(image, 2)
    expected = np.stack([padded[7:11, 5:9], padded[np.ix_([4, 4, 6, 6], [2, 4, 4, 6])]])
    assert_close(got, expected, backend=backend.value, exact=True)


def test_custom_padding(backend):
    from ptycho.backends import extract_patches

    image = random_object((10, 10), np.complex128, 3)
    got = extract_patches(image, np.array([[0.0, 0.0]]), 6, backend=backend.value, padding=0)
    assert_close(got, image[None, :6, :6], backend=backend.value, exact=True)


def test_jax_complex128_without_global_x64(jax):
    """complex128 keeps its precision although jax_enable_x64 is off globally."""
    from ptycho.backends import extract_patches

    assert not jax.config.jax_enable_x64
    image = random_object((10, 12), np.complex128, 4)
    got = extract_patches(image, np.array([[3.3, 4.4]]), 4, backend="jax")
    assert got.dtype == np.complex128
    assert_close(got, extract_patches(image, np.array([[3.3, 4.4]]), 4, backend="numpy"), exact=True)
