"""The benchmark's GPU modes (``ptycho-patches bench --gpu``): the same workload on a visible GPU.

=============== ==============================================================
gpu_floor       the GPU's memory floor: allocate the complex64 output on the
                device and write every element (CuPy, else PyTorch)
jax_gpu         ``extract_patches_grouped`` on JAX arrays placed on the GPU
                (``jax.jit``, compiled order); cold = first call in a fresh
                process, compilation included
jax_gpu_plain   the same, plain order
cupy            the array-API algorithm on CuPy arrays (eager, compiled order)
torch_cuda      the array-API algorithm on PyTorch CUDA tensors (eager)
torch_gpu_peer  the peer: ``torch.nn.functional.grid_sample`` on the GPU, the
                whole batch in chunks, output on the device
=============== ==============================================================

Inputs are put on the GPU before the timing, and the patches stay there (the
output is copied to the host only for the check, outside the timing).  Each
call ends with the library's synchronisation, so the time is the device's.
Peak memory is the device's: JAX's ``peak_bytes_in_use``, PyTorch's
``max_memory_allocated``, or what CuPy's pool grew to from empty, over the
bytes held before the call, as a multiple of the output.

The modes run only when asked for (``--gpu``, or by name in ``--modes``).  On a
machine where the library sees no GPU a mode's row says "skipped"; it is not a
failure.  Without TensorFlow there is no legacy loop: ``max|diff|`` is then
taken against the NumPy backend's compiled order, which the PtychoPINN
fixture tests hold bit-exact against the legacy loop.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from ptycho.bench.measure import NO_CHECK
from ptycho.bench.registry import register
from ptycho.bench.workload import Job

__all__ = ["GPU_MODES", "time_device_calls"]

#: The GPU modes, in table order (run with ``--gpu``).
GPU_MODES = ("gpu_floor", "jax_gpu", "jax_gpu_plain", "cupy", "torch_cuda", "torch_gpu_peer")


class _Skip(Exception):
    """The library sees no GPU: the mode's row says skipped."""


# ---------------------------------------------------------------------------
# One GPU library each: put an array on the device, wait for it, its memory.
# ---------------------------------------------------------------------------


class _Device:
    """What timing needs of one GPU library: placement, synchronisation, peak memory."""

    name = ""

    def put(self, array: np.ndarray) -> Any:
        raise NotImplementedError

    def sync(self, result: Any) -> Any:
        raise NotImplementedError

    def host(self, result: Any) -> np.ndarray:
        raise NotImplementedError

    def reset_peak(self) -> None:
        """Start a new peak window; :meth:`peak` is then measured from here."""

    def peak(self) -> int:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


class _Jax(_Device):
    name = "jax"

    def __init__(self) -> None:
        import jax

        gpus = [d for d in jax.devices() if d.platform == "gpu"]
        if not gpus:
            raise _Skip("JAX sees no GPU")
        self.jax, self.device = jax, gpus[0]
        self.baseline: Optional[int] = None

    def put(self, array: np.ndarray) -> Any:
        return self.jax.device_put(array, self.device)

    def sync(self, result: Any) -> Any:
        return result.block_until_ready()

    def host(self, result: Any) -> np.ndarray:
        return np.asarray(result)

    def _stats(self) -> Dict[str, int]:
        return self.device.memory_stats() or {}

    def reset_peak(self) -> None:
        # JAX's peak cannot be reset: the peak of the whole process over what was held before the first call
        if self.baseline is None:
            self.baseline = self._stats().get("bytes_in_use", 0)

    def peak(self) -> int:
        return max(0, self._stats().get("peak_bytes_in_use", 0) - (self.baseline or 0))

    def describe(self) -> str:
        return str(self.device.device_kind)


class _Cupy(_Device):
    name = "cupy"

    def __init__(self) -> None:
        try:
            import cupy

            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:  # ImportError, or CUDA's own error without a driver
            raise _Skip(f"CuPy sees no GPU ({type(exc).__name__})") from None
        if not count:
            raise _Skip("CuPy sees no GPU")
        self.cupy, self.pool = cupy, cupy.get_default_memory_pool()

    def put(self, array: np.ndarray) -> Any:
        return self.cupy.asarray(array)

    def sync(self, result: Any) -> Any:
        self.cupy.cuda.get_current_stream().synchronize()
        return result

    def host(self, result: Any) -> np.ndarray:
        return self.cupy.asnumpy(result)

    def reset_peak(self) -> None:
        # the pool keeps what it grows to: emptied first, its size afterwards is the call's peak
        self.pool.free_all_blocks()
        self.baseline = self.pool.used_bytes()

    def peak(self) -> int:
        return max(0, self.pool.total_bytes() - self.baseline)

    def describe(self) -> str:
        props = self.cupy.cuda.runtime.getDeviceProperties(self.cupy.cuda.Device().id)
        name = props["name"]
        return name.decode() if isinstance(name, bytes) else str(name)


class _Torch(_Device):
    name = "torch"

    def __init__(self) -> None:
        import torch

        if not torch.cuda.is_available():
            raise _Skip("PyTorch sees no CUDA GPU")
        self.torch = torch

    def put(self, array: np.ndarray) -> Any:
        return self.torch.from_numpy(np.ascontiguousarray(array)).to("cuda")

    def sync(self, result: Any) -> Any:
        self.torch.cuda.synchronize()
        return result

    def host(self, result: Any) -> np.ndarray:
        return result.cpu().numpy()

    def reset_peak(self) -> None:
        self.torch.cuda.synchronize()
        self.torch.cuda.reset_peak_memory_stats()
        self.baseline = self.torch.cuda.memory_allocated()

    def peak(self) -> int:
        return max(0, self.torch.cuda.max_memory_allocated() - self.baseline)

    def describe(self) -> str:
        return self.torch.cuda.get_device_name()


def _any_device() -> _Device:
    """CuPy's device, else PyTorch's (the floor's library)."""
    reasons = []
    for kind in (_Cupy, _Torch):
        try:
            return kind()
        except (_Skip, ImportError) as exc:
            reasons.append(str(exc))
    raise _Skip("; ".join(reasons))


def time_device_calls(device: _Device, call: Callable[[], Any], repeats: int, cold: bool,
                      check: Callable[[Any], float]) -> Dict[str, Any]:
    """Like :func:`~ptycho.bench.measure.time_calls`, with the device's clock and memory.

    Each call is followed by ``device.sync`` inside the timing; the first call
    is the cold one (with ``cold=False`` it also counts as a repeat);
    ``check`` runs on the first result, outside the timing.
    """
    record: Dict[str, Any] = {"peak_method": f"{device.name} device memory", "gpu": device.describe()}
    times: List[float] = []
    peaks: List[int] = []
    for i in range(1 + max(0, repeats - (0 if cold else 1))):
        device.reset_peak()
        start = time.perf_counter()
        result = device.sync(call())
        seconds = time.perf_counter() - start
        peak = device.peak()
        if i == 0:
            record.update(cold_seconds=seconds, cold_peak_bytes=peak, max_abs_diff=check(result))
            if cold:
                del result
                continue
        times.append(seconds)
        peaks.append(peak)
        del result
    record.update(warm_seconds=float(np.median(times)), warm_peak_bytes=max(peaks), warm_times=times)
    return record


def _run(job: Job, device_kind: Callable[[], _Device], build: Callable[[_Device, Job], Callable[[], Any]],
         *, cold: bool, check: Optional[Callable[[Job, _Device, Any], float]] = None) -> Dict[str, Any]:
    try:
        device = device_kind()
    except (_Skip, ImportError) as exc:
        return {"skipped": str(exc)}
    call = build(device, job)

    def checked(result: Any) -> float:
        if check is not None:
            return check(job, device, result)
        return job.check_channels(device.host(result))

    return time_device_calls(device, call, job.repeats, cold, checked)


def _grouped(device: _Device, job: Job, evaluation: str = "compiled") -> Callable[[], Any]:
    """``extract_patches_grouped`` on the workload's arrays, placed on the device first."""
    from ptycho.backends import extract_patches_grouped

    obj, pos = device.put(job.obj), device.put(job.pos)
    return lambda: extract_patches_grouped(obj, pos, job.N, channels=job.c, evaluation=evaluation)


@register("gpu_floor", "GPU memory floor (alloc + write)", device="gpu", default=False, order=100)
def _gpu_floor(job: Job) -> Dict[str, Any]:
    def build(device: _Device, job: Job) -> Callable[[], Any]:
        if device.name == "cupy":
            cupy = device.cupy

            def fill() -> Any:
                out = cupy.empty(job.out_shape, cupy.complex64)
                out.fill(1 + 1j)
                return out
        else:
            torch = device.torch

            def fill() -> Any:
                return torch.full(job.out_shape, 1 + 1j, dtype=torch.complex64, device="cuda")

        return fill

    return _run(job, _any_device, build, cold=False, check=lambda *_: NO_CHECK(None))


@register("jax_gpu", "JAX jit on the GPU", package="jax", backend="jax", device="gpu", default=False,
          compiled=True, order=101)
def _jax_gpu(job: Job) -> Dict[str, Any]:
    return _run(job, _Jax, _grouped, cold=True)


@register("jax_gpu_plain", "JAX jit on the GPU, plain order", package="jax", backend="jax", device="gpu",
          default=False, compiled=True, order=102)
def _jax_gpu_plain(job: Job) -> Dict[str, Any]:
    return _run(job, _Jax, lambda device, job: _grouped(device, job, "plain"), cold=True)


@register("cupy", "array-API on CuPy (GPU, eager)", package="cupy", device="gpu", default=False, compiled=True,
          order=103)
def _cupy(job: Job) -> Dict[str, Any]:
    return _run(job, _Cupy, _grouped, cold=True)


@register("torch_cuda", "array-API on PyTorch CUDA (eager)", package="torch", device="gpu", default=False,
          compiled=True, order=104)
def _torch_cuda(job: Job) -> Dict[str, Any]:
    return _run(job, _Torch, _grouped, cold=True)


#: Patches per grid_sample call of the GPU peer (its grid is chunk x N x N x 2 float32).
_PEER_CHUNK = 4096


@register("torch_gpu_peer", "torch grid_sample on the GPU (peer)", package="torch", device="gpu", default=False,
          order=105)
def _torch_gpu_peer(job: Job) -> Dict[str, Any]:
    def build(device: _Device, job: Job) -> Callable[[], Any]:
        torch, N = device.torch, job.N
        padded = np.pad(job.obj, N // 2)
        height, width = padded.shape
        source = device.put(np.stack([padded.real, padded.imag]).astype(np.float32)[None])
        pos = device.put(job.pos)
        grid = torch.arange(N, dtype=torch.float32, device="cuda")

        def call() -> Any:
            out = torch.empty((job.count, N, N), dtype=torch.complex64, device="cuda")
            with torch.no_grad():
                for start in range(0, job.count, _PEER_CHUNK):
                    p = pos[start:start + _PEER_CHUNK]
                    k = p.shape[0]
                    xs = (grid[None, None, :] + p[:, 0, None, None]).expand(k, N, N)
                    ys = (grid[None, :, None] + p[:, 1, None, None]).expand(k, N, N)
                    # align_corners=True: -1 and 1 are the centres of the corner pixels
                    norm = torch.stack([xs * (2.0 / (width - 1)) - 1, ys * (2.0 / (height - 1)) - 1], -1)
                    res = torch.nn.functional.grid_sample(source, norm.reshape(1, k * N, N, 2), mode="bilinear",
                                                          padding_mode="zeros", align_corners=True)
                    out[start:start + k] = torch.complex(res[0, 0], res[0, 1]).reshape(k, N, N)
            return out

        return call

    return _run(job, _Torch, build, cold=False,
                check=lambda job, device, result: job.check_flat(device.host(result)))


@register("reference_numpy", "reference: NumPy backend, compiled order", count="legacy_count", listed=False,
          order=1001)
def _reference_numpy(job: Job) -> Dict[str, Any]:
    """The reference without TensorFlow: the NumPy backend's compiled order on the legacy subset."""
    from ptycho.backends import extract_patches_grouped

    start = time.perf_counter()
    out = extract_patches_grouped(job.obj, job.pos, job.N, channels=job.c, backend="numpy")
    seconds = time.perf_counter() - start
    job.save_reference(out)
    return {"cold_seconds": seconds}
