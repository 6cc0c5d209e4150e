"""``ptycho-patches``: the command-line interface.

From a ptychography dataset to grouped training patches::

    ptycho-patches demo                          # try it on built-in data
    ptycho-patches simulate -o scan.npz          # a synthetic PtychoPINN-format dataset
    ptycho-patches extract scan.npz -o groups.npz --gridsize 2 --nsamples 500
    ptycho-patches show groups.npz -o groups.png # look at what was made
    ptycho-patches stitch groups.npz -o object.npz  # put Y back: the adjoint of extraction
    ptycho-patches check scan.npz                # TF vs JAX vs NumPy vs legacy loop
    ptycho-patches bench --quick                 # the benchmark (ptycho.bench)

One module per command (``simulate``, ``extract``, ``show``, ``stitch``, ``demo``,
``check``, ``bench``), each with ``add_parser(subparsers)`` and
``run(args) -> int``; what they share is in ``_common``.  This module
assembles the parser and maps exceptions to exit statuses:

- :class:`ptycho.errors.InputError` (raised by every check of the package),
  :class:`CLIError` (the commands' own checks) and the file errors a user
  causes (no such file, file exists, permission denied) are usage or input
  errors: one line ``ptycho-patches: error: ...``, exit status 2;
- anything else is a bug: one line ``ptycho-patches: error: internal error:
  TypeName: message (run with --debug for the traceback)``, exit status 1;
- ``--debug`` prints the traceback as well; ``check`` exits 1 when a pair
  differs beyond its tolerance.

Outputs are written atomically and never replaced without ``--overwrite``.
Importing this package is cheap: TensorFlow, JAX and matplotlib are imported
by the command that needs them.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import Optional, Sequence

from ptycho import __version__
from ptycho.cli import bench, check, demo, extract, show, simulate, stitch
from ptycho.cli._common import EXIT_FAILED, EXIT_USAGE, PROG, CLIError
from ptycho.errors import InputError

__all__ = ["main", "build_parser", "CLIError"]

#: The commands, in the order ``--help`` lists them.
COMMANDS = (simulate, extract, show, stitch, demo, check, bench)

#: File errors a user causes (a path that does not exist, exists, or cannot be
#: read or written): input errors, like :class:`ptycho.errors.InputError`.
_USER_FILE_ERRORS = (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError)

_MAIN_EPILOG = """\
examples:
  ptycho-patches demo --output-dir ptycho-demo
  ptycho-patches simulate -o scan.npz --object-size 256 256 --N 64 --positions 400
  ptycho-patches extract scan.npz -o groups.npz --gridsize 2 --K 7 --nsamples 500
  ptycho-patches show scan.npz -o scan.png
  ptycho-patches show groups.npz -o groups.png
  ptycho-patches stitch groups.npz -o object.npz --png object.png
  ptycho-patches check scan.npz --gridsize 2 --sample 64
  ptycho-patches bench --quick

Run 'ptycho-patches COMMAND --help' for the options of one command.
Exit status: 0 success, 1 check failed (or internal error), 2 usage or input error.
"""


def build_parser() -> argparse.ArgumentParser:
    """The ``ptycho-patches`` argument parser (subcommands included)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Exact sub-pixel patch extraction for ptychography: from a "
        "PtychoPINN-format dataset to grouped training patches.",
        epilog=_MAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.add_parser(sub).set_defaults(handler=command.run)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``ptycho-patches`` with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    bench_split = bench.split_argv(argv)
    try:
        args = parser.parse_args(bench_split[0] + [bench.NAME] if bench_split is not None else argv)
    except SystemExit as exc:  # --help, --version, usage errors (argparse printed them)
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USAGE
    args.bench_argv = bench_split[1] if bench_split is not None else []

    debug = bool(getattr(args, "debug", False))
    if not debug:
        # TensorFlow's C++ start-up chatter (CUDA probing, XLA banners) is not
        # for the user; failures still arrive as Python exceptions.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - every failure becomes one line (or a traceback with --debug)
        status, message = classify(exc)
        if debug:
            traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
        elif status == EXIT_FAILED and not isinstance(exc, CLIError):
            message += " (run with --debug for the traceback)"
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return status


def classify(exc: Exception) -> tuple[int, str]:
    """(exit status, one-line message) for an exception raised by a command.

    Bad input (options, files, missing optional packages) exits 2; anything
    else is an internal failure, exit 1, named by its type.
    """
    if isinstance(exc, CLIError):
        return exc.status, _one_line(exc)
    if isinstance(exc, (InputError,) + _USER_FILE_ERRORS):
        return EXIT_USAGE, _one_line(exc)
    return EXIT_FAILED, f"internal error: {type(exc).__name__}: {_one_line(exc)}"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, _USER_FILE_ERRORS) and exc.filename and str(exc.filename) not in text:
        text = f"{text}: {exc.filename}"
    return text if len(text) <= 600 else text[:597] + "..."


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
