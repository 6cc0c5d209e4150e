"""The patch-extraction benchmark: ``ptycho-patches bench`` / ``python -m ptycho.bench``.

Reference workload (issue 4): a 392 x 392 complex64 object, 5,000 groups of
gridsize 2 (20,000 patches), N = 64, group centres spread uniformly over the
object and members within N/4 of their centre (so some patches reach into the
zero fill).  Every mode runs in its own fresh Python process, so that compile
times and memory peaks are honest:
this package's engines (legacy loop, TF batched, JAX, NumPy, ``get_image_patches``
end to end) and the memory floors are described in :mod:`ptycho.bench.engines`,
the third-party peers (SciPy, OpenCV, PyTorch) in :mod:`ptycho.bench.peers`.

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
:mod:`~ptycho.bench.peers` (SciPy, OpenCV, PyTorch), :mod:`~ptycho.bench.gpu`
(the same workload on a visible GPU: JAX, CuPy, PyTorch, ``--gpu``),
:mod:`~ptycho.bench.workload` (:func:`make_workload` and a worker's
:class:`~ptycho.bench.workload.Job`), :mod:`~ptycho.bench.measure` (time and
peak memory of calls), :mod:`~ptycho.bench.report` (table, targets, chart,
JSON) and :mod:`~ptycho.bench.runner` (options, one subprocess per mode).
A new mode is one function decorated with :func:`register` in a module
imported below.
"""

from __future__ import annotations

# The modules that register modes, imported for their registrations.
from ptycho.bench import engines, gpu, peers, reassembly  # noqa: F401
from ptycho.bench.registry import MODES, Mode, register
from ptycho.bench.runner import build_parser, main
from ptycho.bench.workload import make_workload

__all__ = ["main", "build_parser", "make_workload", "MODES", "Mode", "register"]
