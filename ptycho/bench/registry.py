"""The benchmark's modes: one function each, registered by name.

A mode is a function ``run(job) -> dict`` that builds its engine from the
:class:`~ptycho.bench.workload.Job` (object, positions, checks against the
legacy reference), times it with :func:`~ptycho.bench.measure.time_calls` and
returns the measurements.  Adding a mode is one decorated function::

    @register("mine", "my engine", package="jax", backend="jax", order=35)
    def _mine(job: Job) -> Dict[str, Any]:
        return time_calls(lambda: my_engine(job.obj, job.pos, job.N), job.repeats, cold=True,
                          check=job.check_flat)

Every mode runs in its own fresh process (``python -m ptycho.bench --worker
NAME``), so a mode's module must be imported by ``ptycho/bench/__init__.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

from ptycho.errors import InputError

__all__ = ["Mode", "register", "MODES", "mode", "run_mode"]


@dataclass(frozen=True)
class Mode:
    """One benchmark mode.

    Attributes
    ----------
    name, label:
        ``--modes`` name and table label.
    run:
        ``run(job) -> dict`` of measurements (see ``time_calls``).
    package:
        The importable package it needs (``None``: NumPy only); a missing one
        gives a "skipped" row.
    backend:
        The ``--backends`` name it exercises (tensorflow, jax, numpy) or None.
    count:
        The spec key of the number of patches it computes: ``count`` (the
        whole workload), ``legacy_count`` or ``subset_count`` (slow modes,
        scaled per patch).
    compiled:
        Its first call compiles: the table gets a cold and a warm row.
    always:
        Runs even when ``--modes`` does not name it (the legacy reference and
        the floor every ratio needs).
    reference:
        Writes the legacy reference every other mode compares to; runs first.
    order:
        Position in the table (ascending).
    listed:
        Selectable with ``--modes`` (the chunk study's mode is not).
    device:
        ``"cpu"`` or ``"gpu"``: where it computes; its ratio is to that
        device's floor (``floor`` or ``gpu_floor``).
    default:
        Runs when ``--modes`` is not given (the GPU modes need ``--gpu``).
    """

    name: str
    label: str
    run: Callable[[Any], Dict[str, Any]]
    package: Optional[str] = None
    backend: Optional[str] = None
    count: str = "count"
    compiled: bool = False
    always: bool = False
    reference: bool = False
    order: int = 100
    listed: bool = True
    device: str = "cpu"
    default: bool = True


_REGISTRY: Dict[str, Mode] = {}

#: The selectable modes by name, in table order (filled as mode modules are imported).
MODES: Dict[str, Mode] = {}


def register(name: str, label: str, **options: Any) -> Callable[[Callable[[Any], Dict[str, Any]]], Callable]:
    """Decorator: register ``run(job)`` as mode ``name`` (options: the fields of :class:`Mode`)."""

    def add(run: Callable[[Any], Dict[str, Any]]) -> Callable[[Any], Dict[str, Any]]:
        if name in _REGISTRY:
            raise InputError(f"benchmark mode {name!r} is registered twice")
        _REGISTRY[name] = Mode(name, label, run, **options)
        listed = sorted((m for m in _REGISTRY.values() if m.listed), key=lambda m: m.order)
        MODES.clear()
        MODES.update((m.name, m) for m in listed)
        return run

    return add


def mode(name: str) -> Mode:
    """The registered mode ``name`` (listed or not)."""
    if name not in _REGISTRY:
        raise InputError(f"unknown mode {name!r}")
    return _REGISTRY[name]


def run_mode(name: str, spec: Dict[str, Any]) -> Dict[str, Any]:
    """Run one mode in this (fresh) process and return its record."""
    from ptycho.bench.workload import Job

    chosen = mode(name)
    job = Job(spec, spec[chosen.count], reference=not chosen.reference)
    record: Dict[str, Any] = {"mode": name, "count": job.count, "output_bytes": job.output_bytes}
    record.update(chosen.run(job))
    return record
