"""``ptycho-patches bench``: the benchmark, :func:`ptycho.bench.main`.

argparse cannot forward arbitrary options that follow a subcommand name, so
:func:`ptycho.cli.main` hands everything after ``bench`` to
``ptycho.bench.main`` untouched (``args.bench_argv``).  The benchmark checks
its own options first and skips, with a note in its table, every mode whose
optional package (tensorflow, jax, scipy, opencv, torch) is missing; its
chart needs the ``plot`` extra unless ``--no-plot``.
"""

from __future__ import annotations

import argparse
from typing import Any, Optional

from ptycho.cli._common import EXIT_USAGE, CLIError

NAME = "bench"
HELP = "run the benchmark (arguments go to ptycho.bench; see 'bench --help')"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    return subparsers.add_parser(NAME, help=HELP, add_help=False)


def split_argv(argv: list[str]) -> Optional[tuple[list[str], list[str]]]:
    """(top-level options, bench arguments) when the command is ``bench``, else None."""
    for i, token in enumerate(argv):
        if token == "--":
            return None
        if not token.startswith("-"):
            return (argv[:i], argv[i + 1 :]) if token == NAME else None
    return None


def run(args: argparse.Namespace) -> int:
    try:
        from ptycho import bench
    except ImportError as exc:
        raise CLIError(f"the benchmark module ptycho.bench could not be imported ({exc})") from exc
    try:
        return int(bench.main(args.bench_argv) or 0)
    except SystemExit as exc:  # its argparse: --help, usage errors
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USAGE
