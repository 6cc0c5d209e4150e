"""The benchmark's third-party peers: the same zero-fill bilinear patches by other libraries.

========== =================================================================
scipy      ``scipy.ndimage.map_coordinates(order=1, mode='grid-constant')``
           on the real and imaginary planes
opencv     ``cv2.remap`` (INTER_LINEAR, BORDER_CONSTANT) on the (re, im)
           float32 planes; OpenCV rounds the sample coordinates to 1/32
           pixel (fixed-point weights), its ``max |diff|`` shows that
torch      ``torch.nn.functional.grid_sample`` (bilinear, zeros padding,
           align_corners=True) when PyTorch is importable
========== =================================================================

Each computes (count, N, N) complex64 patches in flat order from the
workload's positions, in slices of positions that bound its working memory.
"""

from __future__ import annotations

from typing import Any, Dict

import numpy as np

from ptycho.bench.measure import time_calls
from ptycho.bench.registry import register
from ptycho.bench.workload import Job

__all__: list = []

#: cv2.remap and grid_sample want map sides below 32767: positions per slice.
_MAP_ROWS = 32000


@register("scipy", "SciPy map_coordinates", package="scipy", count="subset_count", order=60)
def _scipy(job: Job) -> Dict[str, Any]:
    from scipy import ndimage

    N, pos, count = job.N, job.pos, job.count
    padded = np.pad(job.obj, N // 2)
    planes = (np.ascontiguousarray(padded.real), np.ascontiguousarray(padded.imag))
    grid = np.arange(N, dtype=np.float32)

    def call() -> np.ndarray:
        out = np.empty((count, N, N), np.complex64)
        step = 256
        for start in range(0, count, step):
            p = pos[start : start + step]
            # Sample coordinates summed in float32 as the contract says, then widened.
            rows = (grid[None, :, None] + p[:, 1, None, None]).astype(np.float64)
            cols = (grid[None, None, :] + p[:, 0, None, None]).astype(np.float64)
            coords = np.stack(np.broadcast_arrays(rows, cols))
            out[start : start + step].real = ndimage.map_coordinates(planes[0], coords, order=1,
                                                                     mode="grid-constant", cval=0.0)
            out[start : start + step].imag = ndimage.map_coordinates(planes[1], coords, order=1,
                                                                     mode="grid-constant", cval=0.0)
        return out

    return time_calls(call, min(job.repeats, 2), cold=False, check=job.check_flat)


@register("opencv", "OpenCV remap", package="cv2", order=70)
def _opencv(job: Job) -> Dict[str, Any]:
    import cv2

    N, pos, count, obj = job.N, job.pos, job.count, job.obj
    # (re, im) as a 2-channel float32 image: one remap call serves both parts.
    pairs = np.ascontiguousarray(np.pad(obj, N // 2)).view(np.float32).reshape(obj.shape[0] + 2 * (N // 2), -1, 2)
    grid = np.arange(N, dtype=np.float32)
    step = max(1, _MAP_ROWS // N)

    def call() -> np.ndarray:
        out = np.empty((count, N, N), np.complex64)
        for start in range(0, count, step):
            p = pos[start : start + step]
            k = len(p)
            map_x = np.ascontiguousarray(np.broadcast_to(grid[None, None, :] + p[:, 0, None, None],
                                                         (k, N, N)).reshape(k * N, N))
            map_y = np.ascontiguousarray(np.broadcast_to(grid[None, :, None] + p[:, 1, None, None],
                                                         (k, N, N)).reshape(k * N, N))
            dst = cv2.remap(pairs, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            out[start : start + k] = dst.reshape(k, N, N, 2).view(np.complex64)[..., 0]
        return out

    return time_calls(call, job.repeats, cold=False, check=job.check_flat)


@register("torch", "torch grid_sample", package="torch", order=80)
def _torch(job: Job) -> Dict[str, Any]:
    import torch

    N, pos, count = job.N, job.pos, job.count
    padded = np.pad(job.obj, N // 2)
    height, width = padded.shape
    source = torch.from_numpy(np.stack([padded.real, padded.imag]).astype(np.float32))[None]
    grid = np.arange(N, dtype=np.float32)
    step = max(1, _MAP_ROWS // N)

    def call() -> np.ndarray:
        out = np.empty((count, N, N), np.complex64)
        with torch.no_grad():
            for start in range(0, count, step):
                p = pos[start : start + step]
                k = len(p)
                xs = np.broadcast_to(grid[None, None, :] + p[:, 0, None, None], (k, N, N))
                ys = np.broadcast_to(grid[None, :, None] + p[:, 1, None, None], (k, N, N))
                # align_corners=True: -1 and 1 are the centres of the corner pixels.
                norm = np.stack([xs * (2.0 / (width - 1)) - 1, ys * (2.0 / (height - 1)) - 1], -1)
                g = torch.from_numpy(norm.astype(np.float32).reshape(1, k * N, N, 2))
                res = torch.nn.functional.grid_sample(source, g, mode="bilinear", padding_mode="zeros",
                                                      align_corners=True)
                planes = res[0].numpy().reshape(2, k, N, N)
                out[start : start + k].real = planes[0]
                out[start : start + k].imag = planes[1]
        return out

    return time_calls(call, job.repeats, cold=False, check=job.check_flat)
