"""The benchmark workload and what one mode's worker knows about it (:class:`Job`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import numpy as np

from ptycho.errors import InputError

__all__ = ["make_workload", "Job", "to_flat"]


def make_workload(object_size: int, count: int, gridsize: int, N: int, seed: int = 0) -> Dict[str, np.ndarray]:
    """The benchmark's object and scan positions (deterministic for a seed).

    Returns
    -------
    dict with
        ``object`` (S, S) complex64, a smooth random amplitude and phase;
        ``positions`` (count, 2) float32, (x, y) object pixels, flat order
        ``b*c + k``;
        ``global_offsets`` (B, 1, 2, 1) float32 integer group centres and
        ``local_offsets`` (B, 1, 2, c) float32, whose float64 sum is exactly
        ``positions`` (so every mode samples the same coordinates).
    """
    c = gridsize**2
    if count % c:
        raise InputError(f"count must be a multiple of gridsize**2 = {c}, got {count}")
    # Separate streams: the first k patches of a workload do not depend on its
    # count, so subset modes and the reference see the same positions.
    rng_object, rng_centres, rng_spread = (np.random.default_rng([seed, i]) for i in range(3))
    yy, xx = np.mgrid[0:object_size, 0:object_size] / max(object_size, 1)
    amplitude = 0.6 + 0.4 * np.cos(7.0 * xx + 3.0 * yy + rng_object.uniform(0, 2 * np.pi))
    phase = np.sin(5.0 * yy - 2.0 * xx) + 0.3 * rng_object.standard_normal((object_size, object_size))
    obj = (amplitude * np.exp(1j * phase)).astype(np.complex64)

    groups = count // c
    centres = np.round(rng_centres.uniform(0, object_size, (groups, 1, 2))).astype(np.float32)
    spread = rng_spread.uniform(-N / 4, N / 4, (groups, c, 2)).astype(np.float32)
    positions = (centres + spread).astype(np.float32)  # (B, c, 2)
    # position - centre is exact in float32 (Sterbenz), so global + local == position.
    local = np.transpose(positions - centres, (0, 2, 1))[:, None]  # (B, 1, 2, c)
    global_offsets = np.transpose(centres, (0, 2, 1))[:, None]  # (B, 1, 2, 1)
    return {
        "object": obj,
        "positions": positions.reshape(-1, 2),
        "global_offsets": global_offsets,
        "local_offsets": local.astype(np.float32),
    }


def to_flat(patches: Any, c: int) -> np.ndarray:
    """(B, N, N, c) channel layout -> (B*c, N, N), flat index b*c + k."""
    patches = np.asarray(patches)
    b, n, m, _ = patches.shape
    return np.transpose(patches, (0, 3, 1, 2)).reshape(b * c, n, m)


class Job:
    """One mode's view of the workload, in its worker process.

    Attributes: ``N``, ``gridsize``, ``c`` (patches per group), ``count``
    (patches this mode computes), ``groups``, ``repeats``; the workload's
    ``obj`` (S, S) complex64, ``pos`` (count, 2) (x, y), ``g_off`` (B, 1, 2, 1)
    and ``l_off`` (B, 1, 2, c); ``out_shape`` (groups, N, N, c) and
    ``output_bytes``; ``reference_path``, where the legacy mode saves the
    reference patches (flat order) that :meth:`check_flat` compares to.
    """

    def __init__(self, spec: Dict[str, Any], count: int, *, reference: bool = True) -> None:
        self.spec = spec
        self.N, self.gridsize, self.repeats = spec["N"], spec["gridsize"], spec["repeats"]
        self.c = self.gridsize**2
        self.count = count
        self.groups = count // self.c
        work = make_workload(spec["object_size"], count, self.gridsize, self.N, spec["seed"])
        self.obj, self.pos = work["object"], work["positions"]
        self.g_off, self.l_off = work["global_offsets"], work["local_offsets"]
        self.out_shape = (self.groups, self.N, self.N, self.c)
        self.output_bytes = int(np.prod(self.out_shape)) * 8
        self.reference_path = Path(spec["workdir"]) / "legacy_reference.npy"
        exists = reference and self.reference_path.exists()
        self.reference = np.load(self.reference_path) if exists else None

    def check_flat(self, flat: Any) -> float:
        """max |diff| of (k, N, N) patches in flat order to the legacy reference (NaN without one)."""
        from ptycho.testing import max_abs_diff

        if self.reference is None:
            return float("nan")
        k = min(len(self.reference), len(flat))
        return max_abs_diff(np.asarray(flat)[:k], self.reference[:k]) if k else float("nan")

    def check_channels(self, result: Any) -> float:
        """:meth:`check_flat` of a (B, N, N, c) result."""
        return self.check_flat(to_flat(result, self.c))

    def save_reference(self, result: Any) -> float:
        """Save a (B, N, N, c) result as the reference (the legacy mode's check)."""
        np.save(self.reference_path, to_flat(result, self.c))
        return 0.0
