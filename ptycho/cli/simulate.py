"""``ptycho-patches simulate``: a synthetic dataset in PtychoPINN's NPZ format.

Needs no optional package.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ptycho.cli._common import (EXIT_OK, Timer, need_parent, new_parser, non_negative_float, non_negative_int,
                                positive_float, positive_int, refuse_existing, say, size_text)

NAME = "simulate"
HELP = "simulate a synthetic ptychography dataset (PtychoPINN NPZ format)"
EPILOG = """\
examples:
  ptycho-patches simulate -o scan.npz
  ptycho-patches simulate -o scan.npz --object-size 192 320 --N 64 --positions 600 \\
      --scan raster --photons 1e6 --seed 3

The file has PtychoPINN's fields: xcoords, ycoords, xcoords_start, ycoords_start,
diff3d (M, N, N) diffraction amplitudes, probeGuess (N, N), objectGuess, scan_index.
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = new_parser(subparsers, NAME, HELP, EPILOG)
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="output dataset (.npz)")
    p.add_argument("--object-size", nargs=2, type=positive_int, default=(256, 256),
                   metavar=("H", "W"), help="object height and width in pixels (default: 256 256)")
    p.add_argument("--N", type=positive_int, default=64, help="probe and diffraction side in pixels (default: 64)")
    p.add_argument("--positions", type=positive_int, default=None, metavar="M",
                   help="number of scan positions (default: ptycho.simulate's, fills the object)")
    p.add_argument("--scan", choices=("spiral", "raster"), default="spiral", help="scan pattern (default: spiral)")
    p.add_argument("--step", type=positive_float, default=None,
                   help="scan step in pixels (default: ptycho.simulate's)")
    p.add_argument("--jitter", type=non_negative_float, default=None,
                   help="random position jitter in pixels (default: ptycho.simulate's)")
    p.add_argument("--photons", type=positive_float, default=None,
                   help="photons per diffraction pattern; adds Poisson noise (default: noise-free)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default: 0)")
    p.add_argument("--overwrite", action="store_true", help="replace FILE if it exists")
    return p


def _simulate(args: argparse.Namespace) -> Any:
    from ptycho.simulate import simulate_dataset

    options: dict[str, Any] = {
        "object_shape": tuple(args.object_size),
        "N": args.N,
        "scan": args.scan,
        "photons": args.photons,
        "seed": args.seed,
    }
    # Only what the user gave: ptycho.simulate owns the defaults.
    for option, value in (("n_positions", args.positions), ("step", args.step), ("jitter", args.jitter)):
        if value is not None:
            options[option] = value
    return simulate_dataset(**options)


def run(args: argparse.Namespace) -> int:
    out = Path(args.output)
    need_parent(out)
    refuse_existing([out], args.overwrite)
    with Timer() as t:
        raw = _simulate(args)
    raw.to_file(out, overwrite=args.overwrite)
    obj = raw.objectGuess
    noise = f"Poisson noise at {args.photons:g} photons" if args.photons else "noise-free"
    say(f"simulate: object {obj.shape[0]}x{obj.shape[1]}, {len(raw)} {args.scan} positions, "
        f"diffraction {tuple(raw.diff3d.shape[1:])} ({noise}) in {t.seconds:.2f} s")
    say(f"wrote {out} ({size_text(out)})")
    return EXIT_OK
