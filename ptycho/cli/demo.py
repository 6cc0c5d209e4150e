"""``ptycho-patches demo``: simulate, extract and draw a demonstration dataset.

Order of checks: ``--output-dir`` and the files it would replace first, then
the optional ``plot`` extra (matplotlib draws the overview), before any work.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ptycho.cli._common import (EXIT_OK, CLIError, Timer, add_backend_option, default_backend, grouped_summary,
                                need_extra, new_parser, prepare_backend, progress_enabled, refuse_existing, say,
                                size_text)

NAME = "demo"
HELP = "simulate, extract and draw a demonstration dataset"
EPILOG = """\
examples:
  ptycho-patches demo
  ptycho-patches demo --output-dir /tmp/demo --quick
  ptycho-patches demo --output-dir ptycho-demo --overwrite

Writes DIR/dataset.npz, DIR/grouped.npz, DIR/overview.png and DIR/stitched.png
(the object, the object stitched back from the grouped patches, their
difference and the coverage: extraction and its adjoint, round trip).
"""

#: Embedded demo settings.  The full demo has PtychoPINN's usual N = 64 and a
#: non-square object; its grouped NPZ is about 40 MB.  --quick is a toy size.
_DEMO = {
    False: dict(object_shape=(256, 320), N=64, n_positions=400, nsamples=200, K=7),
    True: dict(object_shape=(96, 128), N=32, n_positions=80, nsamples=40, K=6),
}
_GRIDSIZE = 2


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = new_parser(subparsers, NAME, HELP, EPILOG)
    p.add_argument("--output-dir", default="ptycho-demo", metavar="DIR",
                   help="where to write dataset.npz, grouped.npz, overview.png, stitched.png (default: ./ptycho-demo)")
    p.add_argument("--quick", action="store_true", help="a smaller dataset (about a second)")
    add_backend_option(p)
    p.add_argument("--overwrite", action="store_true", help="replace the files in DIR if they exist")
    return p


def run(args: argparse.Namespace) -> int:
    from ptycho import plotting
    from ptycho._io import atomic_write
    from ptycho.cli.stitch import figure as stitch_figure
    from ptycho.cli.stitch import stitch
    from ptycho.dataset import save_grouped
    from ptycho.simulate import simulate_dataset

    settings = _DEMO[bool(args.quick)]
    folder = Path(args.output_dir)
    files = {name: folder / name for name in ("dataset.npz", "grouped.npz", "overview.png", "stitched.png")}
    if folder.exists() and not folder.is_dir():
        raise CLIError(f"--output-dir {str(folder)!r} exists and is not a directory")
    refuse_existing(list(files.values()), args.overwrite)
    need_extra("plot", NAME)
    backend = args.backend or default_backend()
    progress = progress_enabled(args)
    timings = {}

    # Everything is computed before anything is written, so a failing demo
    # leaves no files (and no folder) behind.
    with Timer() as t:
        raw = simulate_dataset(object_shape=settings["object_shape"], N=settings["N"], scan="spiral",
                               n_positions=settings["n_positions"], seed=0)
    timings["simulate"] = t.seconds
    timings["import"] = prepare_backend(backend, args.debug)  # paid once per process
    with Timer() as t:
        grouped = raw.generate_grouped_data(settings["N"], K=settings["K"], nsamples=settings["nsamples"],
                                            gridsize=_GRIDSIZE, seed=0, backend=backend, progress=progress)
    timings["extract"] = t.seconds
    with Timer() as t:
        # the other direction: the patches placed back (normalised stitch) next to the object
        stitched = stitch(grouped, raw.objectGuess.shape, backend=backend)
    timings["stitch"] = t.seconds
    with Timer() as t:
        png = plotting.render_png(plotting.plot_overview(raw, grouped))
        stitched_png = plotting.render_png(stitch_figure(stitched, raw.objectGuess, "demo"))
    timings["picture"] = t.seconds
    with Timer() as t:
        folder.mkdir(parents=True, exist_ok=True)
        raw.to_file(files["dataset.npz"], overwrite=args.overwrite)
        save_grouped(files["grouped.npz"], grouped, overwrite=args.overwrite)
        atomic_write(files["overview.png"], lambda tmp: tmp.write_bytes(png), overwrite=args.overwrite)
        atomic_write(files["stitched.png"], lambda tmp: tmp.write_bytes(stitched_png), overwrite=args.overwrite)
    timings["save"] = t.seconds

    G, c, N, P = grouped_summary(grouped)
    H, W = raw.objectGuess.shape
    say(f"demo: simulated object {H}x{W}, {len(raw)} spiral positions, N={N}   "
        f"{timings['simulate']:.2f} s")
    say(f"      imported {backend}   {timings['import']:.2f} s")
    say(f"      extracted {G} groups x {c} = {P} patches (gridsize {_GRIDSIZE}, backend {backend}, "
        f"compilation included)   {timings['extract']:.2f} s")
    say(f"      stitched the patches back into the object   {timings['stitch']:.2f} s")
    say(f"      saved the NPZ files {timings['save']:.2f} s, drew the pictures {timings['picture']:.2f} s")
    for path in files.values():
        say(f"wrote {path} ({size_text(path)})")
    say(f"next: ptycho-patches show {files['grouped.npz']} -o groups.png")
    return EXIT_OK
