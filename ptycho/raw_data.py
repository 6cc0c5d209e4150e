"""PtychoPINN's ``ptycho.raw_data``: a facade of names, no code of its own.

Existing PtychoPINN code imports patch extraction and the dataset from here:

- ``get_image_patches``, ``_get_image_patches_iterative``,
  ``_get_image_patches_batched`` -- TensorFlow patch extraction
  (:mod:`ptycho.tf_patches`);
- ``RawData`` (PtychoPINN's constructor, ``from_file``, ``from_files``,
  ``from_coords_without_pc``, ``to_file``, ``generate_grouped_data`` with its
  grouping, oversampling and seeds), ``get_relative_coords``,
  ``get_neighbor_indices``, ``normalize_data`` and the constants
  ``local_offset_sign``, ``key_coords_offsets``, ``key_coords_relative``
  (:mod:`ptycho.dataset`, :mod:`ptycho.grouping`);
- this package's own ``generate_grouped_data(raw, N, ...)`` and
  ``group_neighbours``.

Importing this module imports TensorFlow (as PtychoPINN's does).
"""

from __future__ import annotations

from ptycho.dataset import (
    RawData,
    generate_grouped_data,
    get_neighbor_indices,
    get_relative_coords,
    group_neighbours,
    normalize_data,
)
from ptycho.grouping import LOCAL_OFFSET_SIGN as local_offset_sign
from ptycho.tf_patches import (
    _get_image_patches_batched,
    _get_image_patches_iterative,
    get_image_patches,
)

#: The grouped fields PtychoPINN's loader reads as its nominal coordinates.
key_coords_offsets = "coords_start_offsets"
key_coords_relative = "coords_start_relative"

__all__ = [
    "get_image_patches",
    "_get_image_patches_iterative",
    "_get_image_patches_batched",
    "RawData",
    "get_relative_coords",
    "get_neighbor_indices",
    "normalize_data",
    "local_offset_sign",
    "key_coords_offsets",
    "key_coords_relative",
    "generate_grouped_data",
    "group_neighbours",
]
