"""``ptycho-patches show``: draw a dataset or a grouped NPZ into a PNG.

Order of checks, the same in every command that needs an optional extra:

1. the options and the output (its folder exists; it does not exist unless
   ``--overwrite``);
2. the input: it exists, is a readable NPZ archive, is a dataset or a grouped
   file, and its fields load -- a bad input is an input error (exit status 2)
   whose message names the file;
3. only then the optional extra: without matplotlib, a good input gives
   ``show: pictures need the optional package matplotlib, which is not
   installed: pip install "ptycho[plot]"`` (exit status 2 as well).

So a bad input is reported as such whether or not the extra is installed.
"""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path
from typing import Any

from ptycho.cli._common import (EXIT_OK, CLIError, Timer, load_raw, need_extra, need_input, need_parent,
                                new_parser, non_negative_int, positive_int, refuse_existing, say, size_text)

NAME = "show"
HELP = "draw a dataset or a grouped NPZ into a PNG"
EPILOG = """\
examples:
  ptycho-patches show scan.npz -o scan.png       # a dataset: object, scan, patches, diffraction
  ptycho-patches show groups.npz -o groups.png   # grouped patches: samples, one group's members
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = new_parser(subparsers, NAME, HELP, EPILOG)
    p.add_argument("input", metavar="FILE", help="dataset .npz or grouped .npz")
    p.add_argument("-o", "--output", required=True, metavar="PNG", help="output picture (.png)")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="seed of the choice of sample patches (default: 0)")
    p.add_argument("--dpi", type=positive_int, default=100, help="resolution in dots per inch (default: 100)")
    p.add_argument("--overwrite", action="store_true", help="replace PNG if it exists")
    return p


def npz_kind(path: Path) -> str:
    """'grouped' or 'dataset', from the field names of the archive."""
    need_input(path)
    try:
        with zipfile.ZipFile(path) as archive:
            names = {Path(n).stem for n in archive.namelist()}
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise CLIError(f"{str(path)!r} is not a readable .npz archive ({exc})") from exc
    if {"coords_nn", "nn_indices"} <= names:
        return "grouped"
    if "diff3d" in names:
        return "dataset"
    raise CLIError(
        f"{str(path)!r}: expected a dataset (fields diff3d, xcoords, ...) or a grouped NPZ "
        f"(fields Y, coords_nn, ...), found fields {sorted(names)}"
    )


def _load(path: Path, kind: str) -> Any:
    if kind == "dataset":
        return load_raw(path)
    from ptycho.dataset import check_grouped, load_grouped

    grouped = load_grouped(path)
    check_grouped(grouped, str(path), drawable=True)
    return grouped


def run(args: argparse.Namespace) -> int:
    src, out = Path(args.input), Path(args.output)
    need_parent(out)
    refuse_existing([out], args.overwrite)
    kind = npz_kind(src)
    data = _load(src, kind)
    need_extra("plot", NAME)
    from ptycho import plotting

    with Timer() as t:
        draw = plotting.plot_dataset if kind == "dataset" else plotting.plot_grouped
        fig = draw(data, seed=args.seed, source=src.name)
        plotting.save_figure(fig, out, overwrite=args.overwrite, dpi=args.dpi)
    say(f"show: {kind} {src} -> {out} ({size_text(out)}) in {t.seconds:.2f} s")
    return EXIT_OK
