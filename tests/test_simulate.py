"""The synthetic experiment (ptycho.simulate)."""

from __future__ import annotations

import numpy as np
import pytest

from ptycho.dataset import RawData
from ptycho.simulate import make_object, make_probe, scan_positions, simulate_dataset

SMALL = dict(object_shape=(48, 64), N=16, n_positions=20)


@pytest.fixture(scope="module")
def clean():
    return simulate_dataset(**SMALL, seed=0)


# ---------------------------------------------------------------------------
# object and probe
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(32, 32), (24, 40), (40, 24)], ids=["square", "wide", "tall"])
def test_object_shape_dtype_and_ranges(shape):
    obj = make_object(shape, seed=1)
    assert obj.shape == shape and obj.dtype == np.complex64
    amplitude, phase = np.abs(obj), np.angle(obj)
    assert amplitude.min() >= 0.5 - 1e-6 and amplitude.max() <= 1.0 + 1e-6
    assert np.ptp(amplitude) > 0.2  # real structure, not a flat object
    assert np.ptp(phase) > 1.0 and np.abs(phase).max() <= np.pi


def test_object_is_deterministic_by_seed():
    np.testing.assert_array_equal(make_object((32, 40), seed=7), make_object((32, 40), seed=7))
    assert not np.array_equal(make_object((32, 40), seed=7), make_object((32, 40), seed=8))


@pytest.mark.parametrize("shape", [(0, 5), (5,), "ab", (4.0, 5)], ids=["zero", "one-axis", "str", "float"])
def test_object_shape_errors(shape):
    with pytest.raises((TypeError, ValueError), match="shape"):
        make_object(shape)


@pytest.mark.parametrize("N", [16, 33, 64], ids=["N16", "N33", "N64"])
def test_probe_is_normalised_centred_and_compact(N):
    probe = make_probe(N)
    assert probe.shape == (N, N) and probe.dtype == np.complex64
    assert np.abs(probe).max() == pytest.approx(1.0)
    weight = np.abs(probe) ** 2
    yy, xx = np.mgrid[0:N, 0:N]
    centre = (np.sum(weight * yy) / weight.sum(), np.sum(weight * xx) / weight.sum())
    assert centre == pytest.approx((N // 2, N // 2), abs=0.6)
    # Most of the energy within the window's inner half-width disc.
    inside = np.hypot(yy - N // 2, xx - N // 2) <= N / 2
    assert weight[inside].sum() > 0.95 * weight.sum()
    # A curved phase, not a flat beam.
    assert np.ptp(np.angle(probe[np.abs(probe) > 0.3])) > 1.0


def test_probe_radius_sets_its_size():
    def spread(p):
        w = np.abs(p) ** 2
        yy, xx = np.mgrid[0:64, 0:64] - 32
        return np.sqrt(np.sum(w * (xx**2 + yy**2)) / w.sum())

    assert spread(make_probe(64, radius=8)) < spread(make_probe(64, radius=16))


@pytest.mark.parametrize("radius", [0, -1, 40, float("nan")], ids=["zero", "negative", "too-big", "nan"])
def test_probe_radius_errors(radius):
    with pytest.raises(ValueError, match="radius"):
        make_probe(64, radius=radius)


# ---------------------------------------------------------------------------
# scan positions
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["raster", "spiral"])
@pytest.mark.parametrize("shape, N", [((64, 64), 16), ((48, 80), 16), ((80, 48), 15)], ids=["square", "wide", "tall-oddN"])
@pytest.mark.parametrize("jitter", [None, 0.0, 3.0], ids=["jitter-default", "no-jitter", "jitter-3"])
def test_every_window_stays_inside_the_object(kind, shape, N, jitter):
    H, W = shape
    pos = scan_positions(shape, N, kind=kind, jitter=jitter, seed=0)
    assert pos.ndim == 2 and pos.shape[1] == 2 and pos.dtype == np.float64 and len(pos) > 4
    x, y = pos[:, 0], pos[:, 1]
    # the window covers columns [x - N//2, x - N//2 + N): inside [0, W)
    assert np.all(x >= N // 2) and np.all(x <= W - N + N // 2)
    assert np.all(y >= N // 2) and np.all(y <= H - N + N // 2)


@pytest.mark.parametrize("kind", ["raster", "spiral"])
@pytest.mark.parametrize("n", [1, 17, 60], ids=["n1", "n17", "n60"])
def test_n_positions(kind, n):
    assert scan_positions((64, 96), 16, kind=kind, n=n, seed=0).shape == (n, 2)


def test_step_sets_the_spacing():
    pos = scan_positions((64, 64), 16, kind="raster", step=4.0, jitter=0.0)
    np.testing.assert_array_equal(np.unique(pos[:, 0]), np.arange(8.0, 57.0, 4.0))
    assert len(pos) == 13 * 13


def test_raster_jitter_is_seeded():
    a = scan_positions((64, 64), 16, kind="raster", seed=3)
    b = scan_positions((64, 64), 16, kind="raster", seed=3)
    c = scan_positions((64, 64), 16, kind="raster", seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(object_shape=(10, 64), N=16), "narrower than the patch along y"),
        (dict(object_shape=(64, 10), N=16), "narrower than the patch along x"),
        (dict(object_shape=(64, 64), N=16, kind="zigzag"), "kind must be 'raster' or 'spiral'"),
        (dict(object_shape=(64, 64), N=16, step=20.0, n=50), "only"),
        (dict(object_shape=(64, 64), N=16, step=0.0), "step must be a positive"),
        (dict(object_shape=(64, 64), N=16, jitter=-1.0), "jitter must be a non-negative"),
    ],
    ids=["short", "narrow", "kind", "too-many", "step-0", "jitter-negative"],
)
def test_scan_errors(kwargs, words):
    shape, N = kwargs.pop("object_shape"), kwargs.pop("N")
    with pytest.raises(ValueError, match=words):
        scan_positions(shape, N, **kwargs)


# ---------------------------------------------------------------------------
# simulate_dataset
# ---------------------------------------------------------------------------


def test_dataset_shapes_and_dtypes(clean):
    assert isinstance(clean, RawData)
    M = len(clean)
    assert M == 20
    assert clean.diff3d.shape == (M, 16, 16) and clean.diff3d.dtype == np.float32
    assert clean.probeGuess.shape == (16, 16) and clean.probeGuess.dtype == np.complex64
    assert clean.objectGuess.shape == (48, 64) and clean.objectGuess.dtype == np.complex64
    np.testing.assert_array_equal(clean.scan_index, np.arange(M))
    np.testing.assert_array_equal(clean.xcoords_start, clean.xcoords)
    assert np.all(clean.diff3d >= 0)


def test_diffraction_is_the_far_field_of_probe_times_patch(clean):
    """Recompute one frame independently: SciPy bilinear patch, then |FFT|."""
    from scipy import ndimage

    i = 7
    N = 16
    ox, oy = np.float32(clean.xcoords[i]), np.float32(clean.ycoords[i])
    obj = clean.objectGuess.astype(np.complex128)
    grid = np.arange(N, dtype=np.float32) - np.float32(N // 2)
    yy, xx = np.meshgrid(grid + oy, grid + ox, indexing="ij")
    sample = [yy.astype(np.float64), xx.astype(np.float64)]
    patch = (ndimage.map_coordinates(obj.real, sample, order=1, mode="grid-constant")
             + 1j * ndimage.map_coordinates(obj.imag, sample, order=1, mode="grid-constant"))
    expected = np.abs(np.fft.fftshift(np.fft.fft2(clean.probeGuess * patch, norm="ortho")))
    np.testing.assert_allclose(clean.diff3d[i], expected, rtol=0, atol=1e-5 * expected.max())
    # Parseval: the frame holds all of the exit wave's energy
    assert np.sum(clean.diff3d[i].astype(np.float64) ** 2) == pytest.approx(np.sum(np.abs(clean.probeGuess * patch) ** 2), rel=1e-5)


def test_dataset_is_deterministic_by_seed(clean):
    again = simulate_dataset(**SMALL, seed=0)
    other = simulate_dataset(**SMALL, seed=1)
    for name, value in clean.as_dict().items():
        np.testing.assert_array_equal(getattr(again, name), value, err_msg=name)
    assert not np.array_equal(other.objectGuess, clean.objectGuess)


@pytest.mark.parametrize("scan", ["raster", "spiral"])
def test_scan_kinds(scan):
    raw = simulate_dataset(**SMALL, scan=scan, seed=0)
    assert len(raw) == 20


def test_poisson_noise_changes_the_data_but_keeps_the_object_and_scan(clean):
    noisy = simulate_dataset(**SMALL, photons=1e4, seed=0)
    assert not np.array_equal(noisy.diff3d, clean.diff3d)
    np.testing.assert_array_equal(noisy.objectGuess, clean.objectGuess)
    np.testing.assert_array_equal(noisy.xcoords, clean.xcoords)
    assert noisy.diff3d.dtype == np.float32
    # amplitude**2 * scale are photon counts (integers), scale = photons per
    # frame / mean clean frame intensity; the total matches to shot-noise precision.
    clean_intensity = clean.diff3d.astype(np.float64) ** 2
    scale = 1e4 / clean_intensity.sum(axis=(1, 2)).mean()
    counts = noisy.diff3d.astype(np.float64) ** 2 * scale
    np.testing.assert_allclose(counts, np.round(counts), rtol=0, atol=1e-2)
    assert counts.sum(axis=(1, 2)).mean() == pytest.approx(1e4, rel=0.02)
    ratio = np.sum(noisy.diff3d.astype(np.float64) ** 2) / np.sum(clean.diff3d.astype(np.float64) ** 2)
    assert ratio == pytest.approx(1.0, abs=0.02)


def test_fewer_photons_more_noise(clean):
    def error(photons):
        noisy = simulate_dataset(**SMALL, photons=photons, seed=0)
        return np.linalg.norm(noisy.diff3d - clean.diff3d)

    assert error(1e2) > error(1e5)


def test_photons_must_be_positive():
    with pytest.raises(ValueError, match="photons must be a positive"):
        simulate_dataset(**SMALL, photons=0)


def test_every_backend_simulates_the_same_data(backend, clean):
    raw = simulate_dataset(**SMALL, seed=0, backend=backend.value)
    np.testing.assert_array_equal(raw.diff3d, clean.diff3d)
