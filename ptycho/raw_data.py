"""PtychoPINN's ``ptycho.raw_data``: a facade of names, no code of its own.

Existing PtychoPINN code imports patch extraction and the dataset from here:

- ``get_image_patches``, ``_get_image_patches_iterative``,
  ``_get_image_patches_batched`` -- TensorFlow patch extraction
  (:mod:`ptycho.tf_patches`);
- ``RawData``, ``generate_grouped_data``, ``group_neighbours`` -- the dataset
  and neighbour grouping (:mod:`ptycho.dataset`).

Importing this module imports TensorFlow (as PtychoPINN's does).
"""

from __future__ import annotations

from ptycho.dataset import RawData, generate_grouped_data, group_neighbours
from ptycho.tf_patches import (
    _get_image_patches_batched,
    _get_image_patches_iterative,
    get_image_patches,
)

__all__ = [
    "get_image_patches",
    "_get_image_patches_iterative",
    "_get_image_patches_batched",
    "RawData",
    "generate_grouped_data",
    "group_neighbours",
]
