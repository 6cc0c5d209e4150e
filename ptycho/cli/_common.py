"""What the ``ptycho-patches`` commands share: option types, checks of inputs,
outputs and optional packages, timing, backend start-up and printing.

Every check here raises :class:`CLIError` (exit status 2 by default): a bad
option, file or missing optional package is the user's to fix, not a bug.
Nothing here imports TensorFlow, JAX or matplotlib at module level.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

PROG = "ptycho-patches"

#: Exit statuses.
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

#: Backends ``--backend`` accepts, in the order the default prefers them
#: (TensorFlow/XLA is the production path).
BACKEND_CHOICES = ("tensorflow", "jax", "numpy")

#: Optional extras of ``pip install "ptycho[...]"`` that :func:`need_extra`
#: checks: extra -> (what it is for, the importable packages it provides).
#: (``extract`` reports a missing ``scale`` extra when importing ptycho.scale
#: fails, ``check`` a missing ``tf``/``jax`` from ``available_backends()``.)
EXTRAS = {
    "plot": ("pictures", ("matplotlib",)),
}


class CLIError(Exception):
    """An error reported to the user as one line, with an exit status (2: usage or input)."""

    def __init__(self, message: str, status: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.status = status


# ---------------------------------------------------------------------------
# Option types (argparse reports their ArgumentTypeError as a usage error, exit 2)
# ---------------------------------------------------------------------------


def _number(text: str, kind: type, what: str, ok: Any) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a {what}, got {text!r}") from None
    if not ok(value):
        finite = "" if kind is int else " finite"
        raise argparse.ArgumentTypeError(f"expected a {what.replace(' number', finite + ' number')}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    return _number(text, int, "positive integer", lambda v: v > 0)


def non_negative_int(text: str) -> int:
    return _number(text, int, "non-negative integer", lambda v: v >= 0)


def positive_float(text: str) -> float:
    return _number(text, float, "positive number", lambda v: math.isfinite(v) and v > 0)


def non_negative_float(text: str) -> float:
    return _number(text, float, "non-negative number", lambda v: math.isfinite(v) and v >= 0)


# ---------------------------------------------------------------------------
# Parser pieces
# ---------------------------------------------------------------------------


def common_options() -> argparse.ArgumentParser:
    """Options every subcommand accepts after its name as well as before it.

    ``default=SUPPRESS`` keeps a subcommand from resetting a value given
    before the subcommand name.
    """
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("common options")
    group.add_argument("--quiet", "-q", action="store_true", default=argparse.SUPPRESS,
                       help="no progress bars")
    group.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the Python traceback of an error")
    return common


def new_parser(subparsers: Any, name: str, help_text: str, epilog: Optional[str]) -> argparse.ArgumentParser:
    """The parser of one subcommand, with the common options and its examples."""
    return subparsers.add_parser(name, help=help_text, description=help_text, epilog=epilog,
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 parents=[common_options()])


def add_backend_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=BACKEND_CHOICES, default=None,
                   help="engine backend (default: tensorflow if installed, else jax, else numpy)")


def add_grouping_options(p: argparse.ArgumentParser, nsamples_default: str) -> None:
    p.add_argument("--N", type=positive_int, default=None,
                   help="patch side in pixels (default: the probe's side)")
    p.add_argument("--gridsize", type=positive_int, default=1,
                   help="groups of c = gridsize**2 neighbouring positions (default: 1)")
    p.add_argument("--nsamples", type=positive_int, default=None,
                   help=f"number of groups G, seeds drawn at random (default: {nsamples_default})")
    p.add_argument("--K", type=positive_int, default=None,
                   help="members are drawn from each seed's K nearest other positions, as in PtychoPINN "
                   "(default: c, the most compact groups; ignored for gridsize 1)")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="seed of the grouping: same seed, same groups (default: 0)")


# ---------------------------------------------------------------------------
# Inputs, outputs and optional packages
# ---------------------------------------------------------------------------


def refuse_existing(paths: Sequence[Path], overwrite: bool) -> None:
    """Fail before any work when an output exists and --overwrite is not given."""
    if overwrite:
        return
    for path in paths:
        if os.path.lexists(path):
            raise CLIError(f"output {str(path)!r} already exists; use --overwrite to replace it")


def need_input(path: Path) -> None:
    if not path.exists():
        raise CLIError(f"input {str(path)!r} does not exist")
    if path.is_dir():
        raise CLIError(f"input {str(path)!r} is a directory, expected an .npz file")


def need_parent(path: Path) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise CLIError(f"output folder {str(parent)!r} of {str(path)!r} does not exist")


def have(package: str) -> bool:
    """Whether ``package`` is importable, without importing it."""
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def need_extra(extra: str, command: str) -> None:
    """Stop with the install hint when a package of ``ptycho[extra]`` is missing.

    Commands call this after their inputs are checked: a bad input is
    reported first, then a missing extra (both exit status 2).
    """
    purpose, packages = EXTRAS[extra]
    missing = [name for name in packages if not have(name)]
    if missing:
        raise CLIError(f"{command}: {purpose} need the optional package {' and '.join(missing)}, "
                       f'which is not installed: pip install "ptycho[{extra}]"')


def load_raw(path: Path) -> Any:
    from ptycho.dataset import RawData

    need_input(path)
    return RawData.from_file(path)


def resolve_N(N: Optional[int], raw: Any) -> int:
    """``--N`` or, by default, the probe's side (PtychoPINN's N is the probe size)."""
    if N is not None:
        return N
    return int(np.asarray(raw.probeGuess).shape[0])


def need_object(raw: Any, path: Path, command: str) -> np.ndarray:
    obj = getattr(raw, "objectGuess", None)
    if obj is None:
        raise CLIError(
            f"{command}: {str(path)!r} has no objectGuess; cutting ground-truth patches needs the object"
        )
    return np.asarray(obj)


# ---------------------------------------------------------------------------
# Running and reporting
# ---------------------------------------------------------------------------


def progress_enabled(args: argparse.Namespace) -> bool:
    """Progress bars go to stderr, only when it is a terminal and not --quiet."""
    if getattr(args, "quiet", False):
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def default_backend() -> str:
    from ptycho.backends import available_backends

    available = available_backends()
    return next((name for name in BACKEND_CHOICES if name in available), "numpy")


class Timer:
    """Wall time of a block, in seconds (``perf_counter``)."""

    def __enter__(self) -> "Timer":
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self.start


def prepare_backend(name: str, debug: bool) -> float:
    """Import backend ``name`` (and the TF production path); return the seconds it took.

    Turns on the backend's persistent compilation cache
    (:mod:`ptycho.backends.compile_cache`): JAX's and TensorFlow's XLA
    programs are compiled on a machine's first run and loaded from disk after.

    Importing TensorFlow prints CUDA probing and XLA banners straight to file
    descriptor 2, before Python's logging is set up, so ``TF_CPP_MIN_LOG_LEVEL``
    cannot silence all of it.  Without ``--debug`` that output is captured
    during the import and shown only if the import fails.
    """
    import tempfile

    from ptycho.backends import get_backend

    with Timer() as t:
        if name == "tensorflow":
            # a command is a fresh process: load the compiled programs from
            # XLA's persistent cache (PTYCHO_TF_CACHE=0 opts out).  TF_XLA_FLAGS
            # is read at TensorFlow's first compilation, so set it before that.
            from ptycho.backends import compile_cache

            compile_cache.enable_tensorflow_cache()
        if name != "tensorflow" or debug or "tensorflow" in sys.modules:
            module = get_backend(name)
            if name == "jax":
                # a command is a fresh process: load the compiled programs from
                # JAX's persistent cache (PTYCHO_JAX_CACHE=0 opts out)
                module.enable_compilation_cache()
        else:
            with tempfile.TemporaryFile() as sink:
                sys.stderr.flush()
                saved = os.dup(2)
                try:
                    os.dup2(sink.fileno(), 2)
                    try:
                        get_backend(name)
                    finally:
                        os.dup2(saved, 2)
                except BaseException:
                    sink.seek(0)
                    sys.stderr.write(sink.read().decode(errors="replace"))
                    raise
                finally:
                    os.close(saved)
        if name == "tensorflow":
            import ptycho.raw_data  # noqa: F401 - the production path's module
    return t.seconds


def say(text: str = "") -> None:
    print(text, flush=True)


def size_text(path: Path) -> str:
    try:
        size = float(path.stat().st_size) if path.is_file() else float(
            sum(f.stat().st_size for f in path.rglob("*") if f.is_file()))
    except OSError:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return "?"


def grouped_summary(grouped: dict) -> tuple[int, int, int, int]:
    """(groups G, channels c, patch side N, patches G*c) of a grouped dict."""
    G, N, _, c = (int(s) for s in grouped["Y"].shape)
    return G, c, N, G * c
