"""The patch-extraction benchmark: ``ptycho-patches bench`` / ``python -m ptycho.bench``.

Reference workload (issue 4): a 392 x 392 complex64 object, 5,000 groups of
gridsize 2 (20,000 patches), N = 64, group centres spread uniformly over the
object and members within N/4 of their centre (so some patches reach into the
zero fill).  Every mode runs in its own fresh Python process, so that compile
times and memory peaks are honest:

========== =================================================================
legacy     PtychoPINN's loop ``_get_image_patches_iterative`` (one full-image
           translation per patch), timed on a subset and scaled per patch
tf         ``_get_image_patches_batched`` (TF/XLA translate-then-slice):
           cold = first call in a fresh process (XLA compile included),
           warm = median of the repeats
jax        ``extract_patches_grouped(..., backend='jax')`` (``jax.jit``)
numpy      ``extract_patches_grouped(..., backend='numpy')`` (eager)
dispatch   ``get_image_patches`` end to end (validation, padding, layout)
scipy      ``scipy.ndimage.map_coordinates(order=1, mode='grid-constant')``
           on the real and imaginary planes
opencv     ``cv2.remap`` (INTER_LINEAR, BORDER_CONSTANT) on the (re, im)
           float32 planes; OpenCV rounds the sample coordinates to 1/32
           pixel (fixed-point weights), its ``max |diff|`` shows that
torch      ``torch.nn.functional.grid_sample`` (bilinear, zeros padding,
           align_corners=True) when PyTorch is importable
floor      the memory floor: allocate the output array and write every element
xla_floor  XLA's own floor: a TF/XLA kernel that writes the same complex
           output from the position arithmetic alone (no gathers)
========== =================================================================

Per mode: seconds for the whole workload (subset modes scaled per patch),
patches/s, speed-up over the legacy loop, ratio to the floor, peak resident
memory over the pre-call baseline as a multiple of the output array, and
``max |diff|`` to the legacy loop on the patches the loop computed.  Peaks
come from Linux's ``VmHWM``, reset before each call through
``/proc/self/clear_refs`` (elsewhere: ``ru_maxrss``, not resettable, so only
a lower bound).

``--chunk-study`` adds the chunked extraction table
(``patch_extraction_batch_size``): time per patch and peak memory for
10^3, 10^4 and 10^5 patches and a 200,000-patch run into the preallocated
output.

``--hugepages`` runs every mode with ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``.
NumPy asks the kernel for transparent huge pages for its large arrays (so the
memory floor faults in 2 MB pages); TensorFlow's and XLA's buffers come from
plain ``malloc`` and fault in 4 KB pages unless this tunable is set.  The
default run leaves the environment alone.

Layout: :mod:`~ptycho.bench.registry` (the modes by name, :func:`register`),
:mod:`~ptycho.bench.engines` (this package's engines and the floors),
:mod:`~ptycho.bench.peers` (SciPy, OpenCV, PyTorch),
:mod:`~ptycho.bench.workload` (:func:`make_workload` and a worker's
:class:`~ptycho.bench.workload.Job`), :mod:`~ptycho.bench.measure` (time and
peak memory of calls), :mod:`~ptycho.bench.report` (table, targets, chart,
JSON) and :mod:`~ptycho.bench.runner` (options, one subprocess per mode).
A new mode is one function decorated with :func:`register` in a module
imported below.
"""

from __future__ import annotations

# The modules that register modes, imported for their registrations.
from ptycho.bench import engines, peers  # noqa: F401
from ptycho.bench.registry import MODES, Mode, register
from ptycho.bench.runner import build_parser, main
from ptycho.bench.workload import make_workload

__all__ = ["main", "build_parser", "make_workload", "MODES", "Mode", "register"]
