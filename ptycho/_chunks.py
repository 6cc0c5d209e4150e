"""Fixed-shape chunking: one compiled program for every chunk of a long run.

Compiling backends (XLA under TensorFlow, ``jax.jit``) compile once per input
shape.  A run split into chunks of ``step`` rows therefore pads its last,
short chunk to ``step`` rows and drops the extra results, so the whole run
uses one program.  This is the one place that rule is written.
"""

from __future__ import annotations

from typing import Any, Iterator, Tuple

__all__ = ["chunk_bounds", "pad_rows"]


def chunk_bounds(total: int, step: int) -> Iterator[Tuple[int, int]]:
    """``(start, stop)`` of consecutive chunks of ``step`` rows covering ``range(total)``."""
    if step <= 0:
        raise ValueError(f"step must be positive, got {step}")
    for start in range(0, total, step):
        yield start, min(start + step, total)


def pad_rows(rows: Any, count: int, *, xp: Any = None) -> Any:
    """``rows`` (n, ...) padded to ``count`` rows with copies of its first row.

    The padding rows are valid inputs (a copy of a real row, or zeros when
    ``rows`` is empty) whose results the caller drops.  ``xp`` is the array
    namespace of ``rows`` (default: NumPy).  Returns ``rows`` itself when it
    already has ``count`` rows or more.
    """
    if xp is None:
        import numpy as xp  # noqa: N813 - the NumPy namespace
    n = int(rows.shape[0])
    short = int(count) - n
    if short <= 0:
        return rows
    if n:
        fill = xp.concat([rows[:1]] * short, axis=0) if hasattr(xp, "concat") else xp.concatenate([rows[:1]] * short)
    else:
        fill = xp.zeros((short,) + tuple(rows.shape[1:]), dtype=rows.dtype)
    join = getattr(xp, "concat", None) or xp.concatenate
    return join([rows, fill], axis=0)
