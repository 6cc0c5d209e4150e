"""Foreign array-API arrays (PyTorch, CuPy) run through the same algorithm; GPU cells."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import assert_close, random_object

POSITIONS = np.array([[3.25, 4.5], [10.0, -2.75], [19.9, 23.1], [0.99999994, 7.5]])


def _reference(image):
    from ptycho.backends import extract_patches

    return extract_patches(image, POSITIONS, 8, backend="numpy")


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_torch_cpu(dtype):
    torch = pytest.importorskip("torch")
    from ptycho.backends import extract_patches

    image = random_object((20, 24), dtype, 5)
    got = extract_patches(torch.from_numpy(image), torch.from_numpy(POSITIONS), 8)
    assert isinstance(got, torch.Tensor)
    assert_close(got.numpy(), _reference(image), exact=True)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_jax_gpu(dtype):
    jax = pytest.importorskip("jax")
    from ptycho.backends import extract_patches

    gpus = [d for d in jax.devices() if d.platform == "gpu"]
    if not gpus:
        pytest.skip("JAX sees no GPU")
    image = random_object((20, 24), dtype, 6)
    with jax.default_device(gpus[0]):
        got = extract_patches(image, POSITIONS, 8, backend="jax")
    assert got.devices() == {gpus[0]}
    assert_close(np.asarray(got), _reference(image), exact=True)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_cupy_gpu(dtype):
    cupy = pytest.importorskip("cupy")
    from ptycho.backends import extract_patches

    image = random_object((20, 24), dtype, 7)
    got = extract_patches(cupy.asarray(image), cupy.asarray(POSITIONS), 8)
    assert isinstance(got, cupy.ndarray)
    assert_close(cupy.asnumpy(got), _reference(image))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_torch_gpu(dtype):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch sees no GPU")
    from ptycho.backends import extract_patches

    image = random_object((20, 24), dtype, 8)
    got = extract_patches(torch.from_numpy(image).cuda(), torch.from_numpy(POSITIONS).cuda(), 8)
    assert got.is_cuda
    assert_close(got.cpu().numpy(), _reference(image))


@pytest.mark.parametrize("channels", [1, 4])
def test_foreign_arrays_run_in_chunks_bit_for_bit(monkeypatch, channels):
    """Eager chunks of groups (an uneven last one) written into one output: the one-call bits."""
    torch = pytest.importorskip("torch")
    import ptycho.backends as backends
    from ptycho.backends import extract_patches_grouped

    rng = np.random.default_rng(9)
    image = random_object((30, 34), np.complex64, 10)
    positions = rng.uniform(-4, 38, (11 * channels, 2)).astype(np.float32)
    whole = extract_patches_grouped(torch.from_numpy(image), torch.from_numpy(positions), 8, channels=channels)
    monkeypatch.setattr(backends, "GENERIC_CHUNK_PIXELS", 3 * 8 * 8 * channels)  # 3 groups a chunk: 4 chunks
    chunked = extract_patches_grouped(torch.from_numpy(image), torch.from_numpy(positions), 8, channels=channels)
    assert isinstance(chunked, torch.Tensor) and chunked.shape == whole.shape == (11, 8, 8, channels)
    assert_close(chunked.numpy(), whole.numpy(), exact=True)
    assert_close(chunked.numpy(), extract_patches_grouped(image, positions, 8, channels=channels, backend="numpy"),
                 exact=True)
