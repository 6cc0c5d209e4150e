"""JAX: the positions sharded across devices, the object replicated.

The program each device runs is the one the JAX backend compiles for a single
device -- :func:`ptycho.backends.extract_job` with the runtime ``fma_guard`` --
applied by ``jax.shard_map`` to that device's slice of the positions.  Patches
do not depend on each other, so there is no communication, and each patch is
computed by the same expressions as on one device: the result equals the
single-device result bit for bit.
"""

from __future__ import annotations

import functools
from typing import Any, Optional, Sequence

import numpy as np

from ptycho._chunks import pad_rows
from ptycho._validate import working_dtypes
from ptycho.errors import InputError
from ptycho.scale import _plan

__all__ = ["sharded_extract_patches"]

#: Name of the mesh axis the positions are split along.
AXIS = "patches"


@functools.lru_cache(maxsize=None)
def _sharded_program(devices: tuple, N: int, interpolation: str, channels: int, padding: int) -> Any:
    """(mesh, jit(shard_map(single-device engine))) over a 1-D mesh of ``devices``."""
    import jax
    from jax.sharding import Mesh, PartitionSpec

    from ptycho.backends import extract_job, get_backend

    mesh = Mesh(np.asarray(devices, dtype=object), (AXIS,))
    per_device = functools.partial(
        extract_job, patch_size=N, xp=get_backend("jax").namespace,
        interpolation=interpolation, channels=channels, padding=padding,
    )
    # jax.shard_map is public since JAX 0.6; older releases keep it in jax.experimental.
    shard_map = getattr(jax, "shard_map", None)
    if shard_map is None:
        from jax.experimental.shard_map import shard_map
    program = shard_map(
        per_device, mesh=mesh,
        in_specs=(PartitionSpec(), PartitionSpec(AXIS, None), PartitionSpec()),
        out_specs=PartitionSpec(AXIS),
    )
    return mesh, jax.jit(program)


def sharded_extract_patches(
    image: Any,
    positions: Any,
    N: int,
    *,
    channels: int = 1,
    devices: Optional[Sequence[Any]] = None,
    channel_axis: Optional[bool] = None,
    interpolation: str = "bilinear",
    padding: Optional[int] = None,
    trim: bool = True,
) -> Any:
    """Patches at ``positions``, computed on all devices at once (JAX).

    The groups are split evenly across ``devices`` along a mesh axis
    ``'patches'`` (P is padded to a whole number of groups per device with
    copies of the first position, and the extra patches are dropped); the
    object is replicated on every device.

    Parameters
    ----------
    image : array (H, W)
        The object, complex64/complex128 (real input is treated as complex).
    positions : array (P, 2)
        (x, y) in object pixels; position ``b*c + k`` is channel k of group b.
    N : int
        Patch side in pixels.
    channels : int
        c; P must be a multiple of c.
    devices : sequence of jax.Device, optional
        Default ``jax.devices()``: every visible device of the default
        platform (all GPUs, or the CPU devices that
        ``XLA_FLAGS=--xla_force_host_platform_device_count=n`` creates).
    channel_axis : bool, optional
        Output (P // c, N, N, c) when True, (P, N, N) when False (c == 1);
        default: True exactly when c > 1.
    interpolation : {'bilinear', 'nearest'}
    padding : int, optional
        Zero padding of the reference definition; default N // 2.
    trim : bool
        Drop the padding patches.  JAX shards an axis only evenly, so when the
        number of groups is not a multiple of the device count the trimmed
        array is replicated on every device; ``trim=False`` returns the
        padded array, still sharded, whose first P // c rows are the patches
        (use it, or a P that divides evenly, for outputs near device memory).

    Returns
    -------
    jax.Array
        (P, N, N) or (P // c, N, N, c), complex64 (complex128 for a
        complex128/float64 object), sharded along the first axis across the
        devices (see ``trim``); equal bit for bit to
        ``extract_patches_grouped(..., backend='jax')``.
    """
    jax = _plan.require("jax", hint="pip install 'ptycho[jax]'")
    from jax.sharding import NamedSharding, PartitionSpec

    from ptycho.backends import get_backend

    plan = _plan.make_plan(
        image, positions, N, channels=channels, chunk_size=max(1, channels),
        channel_axis=channel_axis, interpolation=interpolation, padding=padding,
    )
    devices = tuple(jax.devices() if devices is None else devices)
    if not devices:
        raise InputError("devices: expected at least one jax.Device, got an empty sequence")
    n_devices = len(devices)
    groups = plan.n_groups
    padded_groups = max(1, -(-groups // n_devices)) * n_devices
    flat = pad_rows(np.asarray(plan.positions), padded_groups * plan.channels)

    backend = get_backend("jax")
    real_dtype = working_dtypes(plan.dtype)[1]
    mesh, program = _sharded_program(devices, plan.N, plan.interpolation, plan.channels, plan.padding)
    with backend.precision(plan.dtype):
        replicated = NamedSharding(mesh, PartitionSpec())
        image_dev = jax.device_put(np.asarray(plan.image).astype(plan.dtype, copy=False), replicated)
        positions_dev = jax.device_put(
            flat.astype(real_dtype, copy=False), NamedSharding(mesh, PartitionSpec(AXIS, None))
        )
        guard = jax.device_put(backend.fma_guard(), replicated)
        out = program(image_dev, positions_dev, guard)
        if trim and padded_groups != groups:
            out = out[:groups]
        if not plan.channel_axis:
            out = out.reshape(out.shape[:-1])
    return out
