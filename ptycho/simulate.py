"""A synthetic ptychography experiment, for demos, tests and benchmarks.

:func:`simulate_dataset` builds a complete :class:`~ptycho.dataset.RawData`:

1. an object with amplitude and phase structure (:func:`make_object`);
2. a probe: a lens with a circular aperture, slightly defocused, so that
   the probe is a disc with Fresnel fringes and a curved phase and its far
   field a bright disc (:func:`make_probe`);
3. a jittered raster or Fermat-spiral scan that keeps every N x N window
   inside the object (:func:`scan_positions`);
4. the object patches at the scan positions, cut by the batched engine
   (:func:`ptycho.backends.extract_patches`), and far-field diffraction
   amplitudes ``|fftshift(fft2(probe * patch))|``, optionally with Poisson
   (shot) noise at a chosen photon count.

Everything is reproducible from one ``seed``.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from ptycho.errors import InputError, InputTypeError
from ptycho import _validate

__all__ = ["make_object", "make_probe", "scan_positions", "simulate_dataset"]

_GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))


def _shape_2d(shape: Any, name: str) -> tuple[int, int]:
    try:
        H, W = shape
    except (TypeError, ValueError):
        raise InputTypeError(f"{name} must be a pair (H, W) of positive integers, got {shape!r}") from None
    return _validate.positive_int(H, f"{name}[0]"), _validate.positive_int(W, f"{name}[1]")


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise rescaled to [0, 1]."""
    from scipy import ndimage

    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    span = np.ptp(field)
    return (field - field.min()) / span if span > 0 else np.zeros(shape)


def _features(rng: np.random.Generator, shape: tuple[int, int], count: int) -> np.ndarray:
    """Discs and rectangles of random size and weight in [0, 1], slightly blurred."""
    from scipy import ndimage

    H, W = shape
    yy, xx = np.mgrid[0:H, 0:W]
    canvas = np.zeros(shape)
    scale = min(H, W)
    for _ in range(count):
        cy, cx = rng.uniform(0, H), rng.uniform(0, W)
        size = rng.uniform(0.03, 0.12) * scale
        weight = rng.uniform(0.4, 1.0)
        if rng.random() < 0.6:
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= size**2
        else:
            aspect = rng.uniform(0.3, 1.0)
            mask = (np.abs(yy - cy) <= size * aspect) & (np.abs(xx - cx) <= size)
        canvas = np.maximum(canvas, weight * mask)
    return ndimage.gaussian_filter(canvas, 1.0)


def make_object(shape: tuple[int, int] = (256, 256), *, seed: Any = None) -> np.ndarray:
    """A complex test object with amplitude and phase structure.

    Parameters
    ----------
    shape : (H, W)
        Object size in pixels.
    seed : int, numpy.random.SeedSequence, numpy.random.Generator or None
        Reproducibility: the same seed gives the same object.

    Returns
    -------
    numpy.ndarray (H, W), complex64
        Amplitude in [0.5, 1]: smooth texture with sharp-edged features
        (discs, rectangles) that absorb.  Phase in [0, 3] radians: a different
        smooth texture plus the same features as phase steps, so amplitude
        and phase are correlated but not proportional, as in real samples.
    """
    H, W = _shape_2d(shape, "shape")
    rng = np.random.default_rng(seed)
    scale = min(H, W)
    texture = _smooth_field(rng, (H, W), max(1.0, scale / 24))
    fine = _smooth_field(rng, (H, W), max(0.5, scale / 96))
    features = _features(rng, (H, W), count=max(4, (H * W) // 2048))
    absorption = np.clip(0.45 * texture + 0.15 * fine + 0.5 * features, 0.0, 1.0)
    amplitude = 1.0 - 0.5 * absorption
    phase_texture = _smooth_field(rng, (H, W), max(1.0, scale / 16))
    phase = 3.0 * np.clip(0.55 * phase_texture + 0.45 * features, 0.0, 1.0)
    return (amplitude * np.exp(1j * phase)).astype(np.complex64)


def make_probe(N: int, *, radius: Optional[float] = None) -> np.ndarray:
    """A focused, defocused probe: a circular lens aperture with a defocus phase.

    The probe is the inverse Fourier transform of a soft-edged disc (the lens
    pupil, radius N / 4 in frequency pixels) times a quadratic defocus phase,
    as for a zone plate or a lens focusing slightly before or after the
    sample.  Its far field is therefore a bright disc of diameter N / 2, as in
    most measured ptychography data, and the probe itself is a disc with
    Fresnel fringes and a curved phase.

    Parameters
    ----------
    N : int
        Probe side in pixels (the patch size).
    radius : float, optional
        Approximate radius of the illuminated disc in pixels (set by the
        amount of defocus, geometric optics); default N / 4, so the probe and
        its fringes fit inside the N x N window.

    Returns
    -------
    numpy.ndarray (N, N), complex64
        Centred on pixel (N // 2, N // 2), peak amplitude 1.
    """
    N = _validate.patch_size(N)
    radius = N / 4 if radius is None else float(radius)
    if not math.isfinite(radius) or not 0 < radius <= N / 2:
        raise InputError(f"radius must be a number of pixels in (0, N/2] = (0, {N / 2}], got {radius}")
    pupil_radius = N / 4  # frequency pixels
    k = np.fft.fftshift(np.fft.fftfreq(N)) * N
    k_abs = np.hypot(k[None, :], k[:, None])
    # A one-pixel soft edge: a hard pupil would ring across the whole window.
    pupil = np.clip(pupil_radius + 0.5 - k_abs, 0.0, 1.0)
    # Defocus exp(i pi lambda z f^2), f = k / N cycles per pixel.  A ray at
    # frequency f lands lambda*z*f pixels off axis, so the edge of the pupil
    # reaches `radius` for lambda*z = radius * N / pupil_radius.
    lambda_z = radius * N / pupil_radius
    defocus = np.exp(1j * np.pi * lambda_z * (k_abs / N) ** 2)
    probe = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(pupil * defocus)))
    probe = probe / np.abs(probe).max()
    return probe.astype(np.complex64)


def _valid_range(size: int, N: int, axis: str) -> tuple[float, float]:
    """Centres whose N x N window lies inside [0, size): [N//2, size - N + N//2]."""
    lo, hi = N // 2, size - N + N // 2
    if hi < lo:
        raise InputError(f"object_shape: the object is narrower than the patch along {axis} ({size} < N = {N})")
    return float(lo), float(hi)


def _raster(lo: np.ndarray, hi: np.ndarray, step: float) -> np.ndarray:
    xs = np.arange(lo[0], hi[0] + 1e-9, step)
    ys = np.arange(lo[1], hi[1] + 1e-9, step)
    gx, gy = np.meshgrid(xs, ys)  # row by row: y outer, x inner
    return np.column_stack([gx.ravel(), gy.ravel()])


def _spiral(lo: np.ndarray, hi: np.ndarray, step: float) -> np.ndarray:
    """Fermat spiral from the centre; mean spacing ~ step (one point per step**2)."""
    centre = (lo + hi) / 2
    half = (hi - lo) / 2
    scale = step / math.sqrt(math.pi)
    r_max = float(np.hypot(*half)) + step
    count = int((r_max / scale) ** 2) + 1
    k = np.arange(count)
    r = scale * np.sqrt(k)
    theta = k * _GOLDEN_ANGLE
    points = centre + np.column_stack([r * np.cos(theta), r * np.sin(theta)])
    inside = np.all((points >= lo - 1e-9) & (points <= hi + 1e-9), axis=1)
    return points[inside]


def scan_positions(
    object_shape: tuple[int, int],
    N: int,
    *,
    kind: str = "raster",
    step: Optional[float] = None,
    jitter: Optional[float] = None,
    n: Optional[int] = None,
    seed: Any = None,
) -> np.ndarray:
    """Scan positions that keep every N x N window inside the object.

    Parameters
    ----------
    object_shape : (H, W)
        Object size in pixels.
    N : int
        Patch (probe) side in pixels.  Every centre (x, y) satisfies
        ``N // 2 <= x <= W - N + N // 2`` (likewise y), so the window
        ``[x - N//2, x - N//2 + N)`` lies inside the object.
    kind : {'raster', 'spiral'}
        'raster': rows of a square grid (y outer, x inner).  'spiral': a
        Fermat spiral from the object centre (no grid periodicity).
    step : float, optional
        Spacing between neighbouring positions in pixels.  Default N / 8 (75%
        overlap of the default probe) or, when ``n`` is given, the spacing
        that fits about ``n`` positions.
    jitter : float, optional
        Random displacement, uniform in [-jitter, jitter] pixels on each axis
        (clipped to the valid range).  Default step / 10 for a raster (it
        breaks the grid periodicity that otherwise causes reconstruction
        artefacts), 0 for a spiral.
    n : int, optional
        Number of positions: the first ``n`` (raster order, or from the
        spiral centre outwards).  Default: all that fit.
    seed : int, numpy.random.SeedSequence, numpy.random.Generator or None
        Seeds the jitter.

    Returns
    -------
    numpy.ndarray (M, 2), float64
        (x, y) in object pixels.
    """
    H, W = _shape_2d(object_shape, "object_shape")
    N = _validate.patch_size(N)
    if kind not in ("raster", "spiral"):
        raise InputError(f"kind must be 'raster' or 'spiral', got {kind!r}")
    n = None if n is None else _validate.positive_int(n, "n")
    x_range, y_range = _valid_range(W, N, "x (width)"), _valid_range(H, N, "y (height)")
    lo = np.array([x_range[0], y_range[0]])
    hi = np.array([x_range[1], y_range[1]])
    layout = _raster if kind == "raster" else _spiral

    if step is not None:
        step = float(step)
        if not math.isfinite(step) or step <= 0:
            raise InputError(f"step must be a positive number of pixels, got {step}")
        points = layout(lo, hi, step)
        if n is not None and len(points) < n:
            raise InputError(
                f"n: only {len(points)} {kind} positions with step {step} fit in an object of shape "
                f"{(H, W)} with N = {N}, asked for {n}; use a smaller step"
            )
    elif n is None:
        step = max(1.0, N / 8)
        points = layout(lo, hi, step)
    else:
        # Start from the spacing that tiles the valid area with n points, shrink until n fit.
        area = max((hi[0] - lo[0] + 1) * (hi[1] - lo[1] + 1), 1.0)
        step = math.sqrt(area / n)
        points = layout(lo, hi, step)
        while len(points) < n:
            step *= 0.95
            points = layout(lo, hi, step)
    if n is not None:
        points = points[:n]

    if jitter is None:
        jitter = step / 10 if kind == "raster" else 0.0
    jitter = float(jitter)
    if not math.isfinite(jitter) or jitter < 0:
        raise InputError(f"jitter must be a non-negative number of pixels, got {jitter}")
    if jitter > 0:
        rng = np.random.default_rng(seed)
        points = np.clip(points + rng.uniform(-jitter, jitter, size=points.shape), lo, hi)
    return np.ascontiguousarray(points, dtype=np.float64)


def simulate_dataset(
    *,
    object_shape: tuple[int, int] = (256, 256),
    N: int = 64,
    scan: str = "spiral",
    n_positions: Optional[int] = None,
    step: Optional[float] = None,
    jitter: Optional[float] = None,
    photons: Optional[float] = None,
    probe_radius: Optional[float] = None,
    seed: Any = 0,
    backend: str = "numpy",
):
    """Simulate a ptychography scan of a synthetic object.

    Parameters
    ----------
    object_shape : (H, W)
        Object size in pixels (need not be square).
    N : int
        Probe, patch and diffraction-frame side in pixels.
    scan : {'spiral', 'raster'}
        Scan pattern; see :func:`scan_positions`.
    n_positions, step, jitter
        Number of positions, spacing and jitter in pixels; see
        :func:`scan_positions` (``n_positions`` is its ``n``).
    photons : float, optional
        None: noise-free amplitudes.  A number: Poisson noise with that many
        photons per frame on average (intensities of all frames are scaled
        by one common factor, so frames keep their relative brightness).
    probe_radius : float, optional
        Radius of the probe in pixels; see :func:`make_probe`.
    seed : int, numpy.random.SeedSequence or None
        One seed for the object, the scan jitter and the noise.
    backend : {'numpy', 'jax', 'tensorflow'}
        Engine that cuts the object patches (all give the same values).

    Returns
    -------
    RawData
        ``diff3d`` (M, N, N) float32 amplitudes, centred (fftshifted), in the
        units of ``fft2(..., norm='ortho')`` of a probe with peak amplitude 1
        (noisy: ``sqrt(counts / scale)``, the same units); ``probeGuess``
        (N, N) and ``objectGuess`` (H, W) complex64; ``xcoords``/``ycoords``
        the scan positions with ``xcoords_start``/``ycoords_start`` equal to
        them; ``scan_index`` = ``arange(M)``.
    """
    from ptycho.backends import extract_patches, get_backend
    from ptycho.dataset import RawData

    H, W = _shape_2d(object_shape, "object_shape")
    N = _validate.patch_size(N)
    if photons is not None:
        photons = float(photons)
        if not math.isfinite(photons) or photons <= 0:
            raise InputError(f"photons must be a positive number of photons per frame or None, got {photons}")
    # Independent streams for the object, the scan and the noise: changing one
    # part of the experiment (e.g. the noise level) leaves the others intact.
    object_seed, scan_seed, noise_seed = np.random.SeedSequence(seed).spawn(3)

    obj = make_object((H, W), seed=object_seed)
    probe = make_probe(N, radius=probe_radius)
    positions = scan_positions((H, W), N, kind=scan, step=step, jitter=jitter, n=n_positions, seed=scan_seed)
    patches = np.asarray(get_backend(backend).to_numpy(extract_patches(obj, positions, N, backend=backend)))

    far_field = np.fft.fftshift(np.fft.fft2(probe[None] * patches, norm="ortho"), axes=(-2, -1))
    intensity = np.abs(far_field) ** 2
    if photons is not None:
        scale = photons / float(intensity.sum(axis=(1, 2)).mean())
        counts = np.random.default_rng(noise_seed).poisson(intensity * scale)
        intensity = counts / scale
    amplitudes = np.sqrt(intensity).astype(np.float32)

    M = positions.shape[0]
    return RawData.from_coords_without_pc(
        positions[:, 0], positions[:, 1], amplitudes, probe, np.arange(M, dtype=np.int64), obj,
    )
