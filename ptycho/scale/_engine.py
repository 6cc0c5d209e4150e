"""Which engine the scale runners' tasks run: chosen once, verified on the workers, reported.

The runners (:func:`~ptycho.scale.extract_to_zarr`, :func:`~ptycho.scale.dask_extract_patches`,
the grouped variants and ``ptycho-patches extract --workers``) call
:func:`choose_engine` once per run, on the client:

- ``backend="auto"`` (the default) is the fastest exact engine installed: the
  NumPy backend with its compiled Numba kernel (the ``fast`` extra) when every
  worker has Numba, else the NumPy array path; ``"jax"`` or ``"tensorflow"``
  run XLA when asked; ``"numpy"`` honours ``PTYCHO_NUMPY_KERNEL``
  (``auto``/``array``/``numba``) of the client like ``"auto"`` does.
- On a cluster the client first asks every worker what it has installed (no
  import), picks one engine for all of them, then runs it on a small probe
  on every worker and compares the bits with the same probe computed here by
  the NumPy array path (the reference algorithm): a worker whose engine gives
  other bits -- another version of the package, a kernel that does not
  evaluate the same order -- stops the run before any chunk is computed.
  The probe also loads the kernel (Numba's cache, XLA's compilation) on every
  worker before the first chunk.
- Each task then runs exactly that engine (:meth:`Engine.running`), so no
  worker decides on its own.

Threads: a Dask worker runs one task per worker thread and the cluster gives
its parallelism by worker processes (Dask's nanny sets ``OMP_NUM_THREADS=1``
for the same reason), so on a worker process the Numba kernel runs
single-threaded (``NUMBA_NUM_THREADS``, when the worker's environment sets
it, wins).  In one process (no cluster) the kernel uses its default threads.

Pure NumPy here; Dask is touched only through the ``client`` given.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import sys
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import numpy as np

from ptycho.backends._dispatch import kernel_threads
from ptycho.errors import InputError, InputTypeError
from ptycho.scale import _plan

__all__ = ["Engine", "choose_engine", "AUTO"]

#: ``backend`` of the runners: the fastest exact engine installed.
AUTO = "auto"

#: The logger every runner reports its engine on (level INFO).
logger = logging.getLogger("ptycho.scale")

_FAST_EXTRA = "pip install 'ptycho[fast]'"

#: Seconds a worker has to answer the engine check (the probe includes a
#: first compilation there: Numba's without its cache, XLA's for JAX/TensorFlow).
PROBE_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Engine:
    """The engine of one run, as every task runs it.

    Attributes
    ----------
    backend : str
        ``'numpy'``, ``'jax'`` or ``'tensorflow'``.
    kernel : str or None
        For the NumPy backend: ``'numba'`` (the compiled kernel) or
        ``'array'`` (the array-API algorithm); None for the XLA backends.
    threads : int or None
        Threads of the Numba kernel per task (per call in this process: its
        default, ``NUMBA_NUM_THREADS`` or the CPUs it may use); None for the
        other engines.
    workers : int
        Workers on which the engine was verified bit for bit (0: runs in this
        process, nothing to verify).
    """

    backend: str
    kernel: Optional[str] = None
    threads: Optional[int] = None
    workers: int = 0
    #: the client's process: threads are set only in worker processes of their own
    origin_pid: int = field(default_factory=os.getpid, compare=False, repr=False)

    @property
    def name(self) -> str:
        """Short name: ``numpy/numba``, ``numpy/array``, ``jax``, ``tensorflow``."""
        return f"{self.backend}/{self.kernel}" if self.kernel else self.backend

    def describe(self) -> str:
        """One line for logs and the command line."""
        if self.backend == "numpy":
            what = "NumPy backend, Numba kernel" if self.kernel == "numba" else "NumPy backend, array path"
        else:
            what = f"{'JAX' if self.backend == 'jax' else 'TensorFlow'} backend, XLA"
        if self.kernel == "numba" and self.threads:
            per = "task" if self.workers else "call"
            what += f", {self.threads} thread{'s' if self.threads != 1 else ''} per {per}"
        if self.workers:
            what += f"; verified bit for bit on {self.workers} worker{'s' if self.workers != 1 else ''}"
        return f"{self.name} ({what})"

    def as_dict(self) -> dict:
        """JSON-friendly record (the ``engine`` attribute of the Zarr outputs)."""
        return {"name": self.name, "backend": self.backend, "kernel": self.kernel,
                "threads_per_task": self.threads, "verified_workers": self.workers}

    @contextlib.contextmanager
    def running(self) -> Iterator["Engine"]:
        """Context of a task: the NumPy backend runs exactly ``kernel``, on ``threads`` threads.

        The kernel choice is a context variable of the NumPy backend (thread
        and task local); the threads are the kernel's ``NUMBA_NUM_THREADS``,
        set in a worker process of its own when its environment does not set
        it already (never in the client's process).
        """
        if self.backend != "numpy":
            yield self
            return
        from ptycho.backends import _numpy

        if self.kernel == "numba" and self.threads and self.workers and os.getpid() != self.origin_pid:
            os.environ.setdefault("NUMBA_NUM_THREADS", str(self.threads))
        with _numpy.kernel(self.kernel or "auto"):
            yield self


def _kernel_preference() -> str:
    """The client's NumPy kernel choice: ``kernel()`` context, else ``PTYCHO_NUMPY_KERNEL``, else auto."""
    from ptycho.backends import _numpy

    choice = _numpy._kernel_choice.get()
    if choice is None:
        choice = _numpy._check_kernel(os.environ.get(_numpy.KERNEL_ENV, "auto") or "auto", _numpy.KERNEL_ENV)
    return choice


def _installed(package: str) -> bool:
    if sys.modules.get(package) is not None:
        return True
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def worker_facts() -> dict:
    """What this process has (nothing imported): run on each worker by :func:`choose_engine`."""
    return {
        "pid": os.getpid(),
        "numba": _installed("numba"),
        "jax": _installed("jax"),
        "tensorflow": _installed("tensorflow"),
        "numba_threads_env": os.environ.get("NUMBA_NUM_THREADS", "").strip() or None,
    }


def _probe_inputs(N: int, channels: int, dtype: np.dtype) -> tuple:
    """A small object and positions that exercise the contract: fractional, outside, edges."""
    rng = np.random.default_rng(20261205)
    side = 12
    image = (rng.standard_normal((side, side)) + 1j * rng.standard_normal((side, side))).astype(dtype)
    reach = N / 2 + 1.0
    count = 4 * channels
    positions = rng.uniform(-reach, side - 1 + reach, size=(count, 2))
    positions[0] = (0.0, 0.0)
    positions[1] = (side - 1.0, 0.5)
    return image, positions


def _probe(engine: Engine, image: np.ndarray, positions: np.ndarray, settings: dict) -> str:
    """The engine's patches of the probe, as a sha256 (on a worker, or here for the reference)."""
    with engine.running():
        block = _plan.extract_block(image, positions, backend=engine.backend, **settings)
    return _plan.sha256_of(block)


def _on_each_worker(client: Any, fn: Any, *args: Any) -> dict:
    """``fn(*args)`` once on every worker, as a task in its thread pool; {address: result}."""
    # (scheduler_info lists only the first few workers unless asked for all)
    info = client.scheduler_info(n_workers=-1) if _takes_n_workers(client) else client.scheduler_info()
    addresses = sorted(info["workers"])
    if not addresses:
        raise InputError("client: the Dask cluster has no workers; start some before the run")
    run = uuid.uuid4().hex[:12]
    futures = {
        address: client.submit(fn, *args, workers=[address], allow_other_workers=False, pure=False,
                               key=f"ptycho-engine-{getattr(fn, '__name__', 'fn')}-{run}-{i}")
        for i, address in enumerate(addresses)
    }
    results: dict = {}
    errors: list = []
    for address, future in futures.items():
        try:
            # a worker that leaves meanwhile would leave its task waiting for ever: bounded
            results[address] = future.result(timeout=PROBE_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - reported with the worker's address below
            errors.append((address, exc))
        future.release()
    if errors:
        client.cancel([f for f in futures.values() if not f.done()])
        address, exc = errors[0]
        message = f"worker {address}: {type(exc).__name__}: {exc}"
        try:
            error = type(exc)(message)
        except Exception:  # noqa: BLE001 - an exception type with other arguments
            error = RuntimeError(message)
        raise error from exc
    return results


def _takes_n_workers(client: Any) -> bool:
    import inspect

    try:
        return "n_workers" in inspect.signature(client.scheduler_info).parameters
    except (TypeError, ValueError):
        return False


def choose_engine(
    backend: Any = AUTO,
    client: Any = None,
    *,
    N: int = 8,
    channels: int = 1,
    interpolation: str = "bilinear",
    padding: Optional[int] = None,
    dtype: Any = np.complex64,
) -> Engine:
    """The engine of a run, chosen once (and on a cluster verified on every worker).

    Parameters
    ----------
    backend : {'auto', 'numpy', 'jax', 'tensorflow'} or Engine
        ``'auto'``: the NumPy backend with the Numba kernel when it is
        installed (on every worker), else the array path.  ``'numpy'`` the
        same, honouring ``PTYCHO_NUMPY_KERNEL`` / ``ptycho.backends._numpy.kernel``
        (``'auto'`` does too).  ``'jax'``, ``'tensorflow'``: XLA.  An Engine
        is returned as it is when it was verified on a cluster or no client
        is given; one chosen for this process is checked on the client's
        workers (same backend and kernel).
    client : distributed.Client, optional
        The cluster that will run the tasks: the engine is the one every
        current worker has, and is checked there bit for bit on a probe
        against the NumPy array path computed here.
    N, channels, interpolation, padding, dtype
        The run's settings, used for the probe.

    Returns
    -------
    Engine
        Also logged (INFO) on the ``ptycho.scale`` logger.

    Raises
    ------
    ImportError
        The requested engine is missing here or on a worker (the message
        names the worker and the extra to install).
    ValueError
        A worker's engine gives other bits than the reference; no workers.
    """
    from ptycho.backends import canonical_name

    preference = None
    if isinstance(backend, Engine):
        if client is None or backend.workers:
            return backend
        # chosen for this process: check the same engine on the workers
        backend, preference = backend.backend, backend.kernel
    if not isinstance(backend, str):
        raise InputTypeError(f"backend must be a string such as 'auto' or 'numpy', got {type(backend).__name__}")
    requested = AUTO if backend.strip().lower() == AUTO else canonical_name(backend)
    facts = {"this process": worker_facts()} if client is None else _on_each_worker(client, worker_facts)
    engine_backend = "numpy" if requested == AUTO else requested
    kernel: Optional[str] = None
    threads: Optional[int] = None
    if engine_backend == "numpy":
        preference = preference or _kernel_preference()
        missing = sorted(where for where, fact in facts.items() if not fact["numba"])
        if preference == "array":
            kernel = "array"
        elif not missing:
            kernel = "numba"
        elif preference == "numba":
            raise ImportError(
                f"PTYCHO_NUMPY_KERNEL=numba (or kernel('numba')) needs numba on {', '.join(missing)}: "
                f"{_FAST_EXTRA}"
            )
        else:
            kernel = "array"
            if client is not None:
                logger.warning(
                    "ptycho.scale: numba is missing on worker(s) %s, so every worker runs the NumPy array path "
                    "(about 15x the CPU per patch); install it there: %s", ", ".join(missing), _FAST_EXTRA,
                )
        if kernel == "numba" and client is not None:
            in_client = any(fact["pid"] == os.getpid() for fact in facts.values())
            envs = {fact["numba_threads_env"] for fact in facts.values()}
            if not in_client:
                env = next(iter(envs)) if len(envs) == 1 else None
                threads = int(env) if env and env.isdigit() and int(env) > 0 else 1
        elif kernel == "numba":
            threads = kernel_threads()
    else:
        missing = sorted(where for where, fact in facts.items() if not fact[engine_backend])
        if missing:
            raise ImportError(
                f"backend {engine_backend!r} is not installed on {', '.join(missing)}: "
                f"pip install 'ptycho[{'jax' if engine_backend == 'jax' else 'tf'}]'"
            )
    engine = Engine(backend=engine_backend, kernel=kernel, threads=threads)
    if client is not None:
        padding = N // 2 if padding is None else int(padding)
        settings = dict(N=int(N), channels=int(channels), channel_axis=True, interpolation=interpolation,
                        padding=padding)
        image, positions = _probe_inputs(int(N), int(channels), np.dtype(dtype))
        reference = _probe(Engine(backend="numpy", kernel="array"), image, positions, settings)
        digests = _on_each_worker(client, _probe, engine, image, positions, settings)
        wrong = sorted(address for address, digest in digests.items() if digest != reference)
        if wrong:
            raise InputError(
                f"engine {engine.name}: worker(s) {', '.join(wrong)} give other bits than this process's "
                f"NumPy array path on a probe of {len(positions)} patches; check that every worker runs the "
                f"same version of ptycho (ptycho.__version__) as this process"
            )
        engine = Engine(backend=engine_backend, kernel=kernel, threads=threads, workers=len(digests))
    logger.info("ptycho.scale: engine %s", engine.describe())
    return engine
