"""Patch sets larger than memory and runs across processes, machines and devices.

Three ways to run the one engine (:func:`ptycho.backends.extract_patches_grouped`)
over many positions, each cutting the positions into chunks of whole groups:

- :func:`extract_to_zarr` / :func:`grouped_to_zarr` -- stream the patches to a
  Zarr v3 array chunk by chunk (bounded memory, resumable after a kill), on a
  path or any fsspec URL (``s3://bucket/run.zarr``); given a Dask cluster
  (``client=``, ``workers=``, ``scheduler=``) each worker writes its own
  chunks into the one store and the client holds no patch data;
- :func:`dask_extract_patches` / :func:`grouped_with_dask` -- a Dask array over
  chunks of positions, computed by any Dask scheduler (threads, a
  ``LocalCluster``, or an existing ``dask.distributed`` cluster);
- :func:`sharded_extract_patches` -- JAX, the positions sharded across all
  visible devices, the object replicated;
- :func:`stitch_zarr` -- the other direction: the normalised stitch of a
  grouped Zarr store, per-block canvases summed by a tree reduction on Dask.

Every runner's tasks run one engine, chosen once per run by
:func:`choose_engine` (the NumPy backend's Numba kernel when the ``fast``
extra is on every worker, JAX or TensorFlow when asked), checked bit for bit
on every worker, recorded (``engine`` attribute of the Zarr outputs) and
logged on the ``ptycho.scale`` logger.

Importing this package is cheap: Zarr, Dask and JAX are imported by the
function that needs them (install them with ``pip install 'ptycho[scale]'``;
JAX with ``ptycho[jax]``).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "extract_to_zarr",
    "grouped_to_zarr",
    "dask_extract_patches",
    "grouped_with_dask",
    "sharded_extract_patches",
    "stitch_zarr",
    "choose_engine",
    "Engine",
]

#: public name -> submodule that defines it (imported on first access)
_LAZY = {
    "extract_to_zarr": "ptycho.scale.zarr_store",
    "grouped_to_zarr": "ptycho.scale.zarr_store",
    "dask_extract_patches": "ptycho.scale.dask_engine",
    "grouped_with_dask": "ptycho.scale.dask_engine",
    "sharded_extract_patches": "ptycho.scale.sharding",
    "stitch_zarr": "ptycho.scale.stitching",
    "choose_engine": "ptycho.scale._engine",
    "Engine": "ptycho.scale._engine",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'ptycho.scale' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
