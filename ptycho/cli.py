"""``ptycho-patches``: the command-line interface.

From a ptychography dataset to grouped training patches::

    ptycho-patches demo                          # try it on built-in data
    ptycho-patches simulate -o scan.npz          # a synthetic PtychoPINN-format dataset
    ptycho-patches extract scan.npz -o groups.npz --gridsize 2 --nsamples 500
    ptycho-patches show groups.npz -o groups.png # look at what was made
    ptycho-patches check scan.npz                # TF vs JAX vs NumPy vs legacy loop
    ptycho-patches bench --quick                 # the benchmark (ptycho.bench)

Conventions shared by every command: outputs are written atomically (a
temporary file in the same folder, renamed when complete) and an existing
file is never replaced unless ``--overwrite`` is given; errors are one line,
``ptycho-patches: error: ...``, without a traceback unless ``--debug``; exit
status 0 on success, 1 when ``check`` finds a difference beyond its
tolerance (or on an internal error), 2 on a usage or input error.

Importing this module is cheap: TensorFlow, JAX and matplotlib are imported
by the command that needs them.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ptycho import __version__

__all__ = ["main", "build_parser", "CLIError"]

PROG = "ptycho-patches"

#: Exit statuses.
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

#: Backends ``--backend`` accepts, in the order the default prefers them
#: (TensorFlow/XLA is the production path).
BACKEND_CHOICES = ("tensorflow", "jax", "numpy")

#: Tolerance table of ``check`` (the same table as the equivalence tests).
#: The TF batched path evaluates the legacy loop's expressions in the same
#: order on the same backend, so they must agree exactly; across backends the
#: compilers may round differently, bounded by a few float ulps of the largest
#: patch value.
TOLERANCE_TF_VS_LEGACY = 0.0
TOLERANCE_RELATIVE = {"complex64": 1e-6, "complex128": 1e-12}

#: Groups ``check`` compares by default: enough to cover a scan, small enough
#: that the four results of any dataset fit in memory.
CHECK_GROUPS = 512


class CLIError(Exception):
    """An error reported to the user as one line, with an exit status."""

    def __init__(self, message: str, status: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.status = status


# ---------------------------------------------------------------------------
# Argument types
# ---------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative finite number, got {text!r}")
    return value


# ---------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------

_MAIN_EPILOG = """\
examples:
  ptycho-patches demo --output-dir ptycho-demo
  ptycho-patches simulate -o scan.npz --object-size 256 256 --N 64 --positions 400
  ptycho-patches extract scan.npz -o groups.npz --gridsize 2 --K 7 --nsamples 500
  ptycho-patches show scan.npz -o scan.png
  ptycho-patches show groups.npz -o groups.png
  ptycho-patches check scan.npz --gridsize 2 --sample 64
  ptycho-patches bench --quick

Run 'ptycho-patches COMMAND --help' for the options of one command.
Exit status: 0 success, 1 check failed (or internal error), 2 usage or input error.
"""

_EPILOGS = {
    "simulate": """\
examples:
  ptycho-patches simulate -o scan.npz
  ptycho-patches simulate -o scan.npz --object-size 192 320 --N 64 --positions 600 \\
      --scan raster --photons 1e6 --seed 3

The file has PtychoPINN's fields: xcoords, ycoords, xcoords_start, ycoords_start,
diff3d (M, N, N) diffraction amplitudes, probeGuess (N, N), objectGuess, scan_index.
""",
    "extract": """\
examples:
  ptycho-patches extract scan.npz -o groups.npz                      # gridsize 1
  ptycho-patches extract scan.npz -o groups.npz --gridsize 2 --K 7 --nsamples 500 --seed 1
  ptycho-patches extract scan.npz -o groups.npz --backend jax --batch-size 4096
  ptycho-patches extract scan.npz -o groups.zarr --gridsize 2       # Zarr, needs ptycho[scale]
  ptycho-patches extract scan.npz -o groups.npz --workers 2         # Dask, needs ptycho[scale]

The output NPZ holds Y (G, N, N, c) object patches, coords_nn (G, 1, 2, c),
coords_offsets (G, 1, 2, 1), coords_relative (G, 1, 2, c), nn_indices (G, c) and
diffraction (G, H, W, c); c = gridsize**2, member k of group g is channel k.
""",
    "show": """\
examples:
  ptycho-patches show scan.npz -o scan.png       # a dataset: object, scan, patches, diffraction
  ptycho-patches show groups.npz -o groups.png   # grouped patches: samples, one group's members
""",
    "demo": """\
examples:
  ptycho-patches demo
  ptycho-patches demo --output-dir /tmp/demo --quick
  ptycho-patches demo --output-dir ptycho-demo --overwrite

Writes DIR/dataset.npz, DIR/grouped.npz and DIR/overview.png.
""",
    "check": """\
examples:
  ptycho-patches check scan.npz
  ptycho-patches check scan.npz --N 64 --gridsize 2 --nsamples 200 --sample 32 --seed 1

Cuts the same patches with the production TF/XLA path, the JAX mirror and NumPy
(all groups) and with the legacy per-patch loop (a sample of positions), and
prints max |diff| for every pair.  Tolerances: TF batched vs legacy loop must be
exactly equal; across backends complex64 allows 1e-6 * max(1, max|ref|) and
complex128 1e-12 * max(1, max|ref|).  Exit status 1 if any pair exceeds it.
""",
}


def _common_options() -> argparse.ArgumentParser:
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


def build_parser() -> argparse.ArgumentParser:
    """The ``ptycho-patches`` argument parser (subcommands included)."""
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Exact sub-pixel patch extraction for ptychography: from a "
        "PtychoPINN-format dataset to grouped training patches.",
        epilog=_MAIN_EPILOG,
        formatter_class=fmt,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    common = _common_options()
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=help_text, epilog=_EPILOGS.get(name),
                              formatter_class=fmt, parents=[common])

    p = add("simulate", "simulate a synthetic ptychography dataset (PtychoPINN NPZ format)")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="output dataset (.npz)")
    p.add_argument("--object-size", nargs=2, type=_positive_int, default=(256, 256),
                   metavar=("H", "W"), help="object height and width in pixels (default: 256 256)")
    p.add_argument("--N", type=_positive_int, default=64, help="probe and diffraction side in pixels (default: 64)")
    p.add_argument("--positions", type=_positive_int, default=None, metavar="M",
                   help="number of scan positions (default: ptycho.simulate's, fills the object)")
    p.add_argument("--scan", choices=("spiral", "raster"), default="spiral", help="scan pattern (default: spiral)")
    p.add_argument("--step", type=_positive_float, default=None,
                   help="scan step in pixels (default: ptycho.simulate's)")
    p.add_argument("--jitter", type=_non_negative_float, default=None,
                   help="random position jitter in pixels (default: ptycho.simulate's)")
    p.add_argument("--photons", type=_positive_float, default=None,
                   help="photons per diffraction pattern; adds Poisson noise (default: noise-free)")
    p.add_argument("--seed", type=_non_negative_int, default=0, help="random seed (default: 0)")
    p.add_argument("--overwrite", action="store_true", help="replace FILE if it exists")
    p.set_defaults(handler=_cmd_simulate)

    p = add("extract", "cut grouped ground-truth patches (Y) from a dataset")
    p.add_argument("input", metavar="IN", help="dataset (.npz, PtychoPINN format with objectGuess)")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="grouped output: .npz, or .zarr (needs ptycho[scale])")
    _grouping_options(p, "one group per scan position")
    p.add_argument("--backend", choices=BACKEND_CHOICES, default=None,
                   help="engine backend (default: tensorflow if installed, else jax, else numpy)")
    p.add_argument("--batch-size", type=_positive_int, default=None, metavar="P",
                   help="patches per engine call, bounds working memory (default: all at once)")
    p.add_argument("--workers", type=_positive_int, default=None,
                   help="run on a local Dask cluster with this many workers (needs ptycho[scale])")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="run on an existing Dask scheduler, e.g. tcp://host:8786 (needs ptycho[scale])")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--resume", action="store_true",
                   help="a .zarr OUT left by an interrupted run with the same settings: keep its "
                   "complete chunks and compute the rest")
    p.set_defaults(handler=_cmd_extract)

    p = add("show", "draw a dataset or a grouped NPZ into a PNG")
    p.add_argument("input", metavar="FILE", help="dataset .npz or grouped .npz")
    p.add_argument("-o", "--output", required=True, metavar="PNG", help="output picture (.png)")
    p.add_argument("--seed", type=_non_negative_int, default=0,
                   help="seed of the choice of sample patches (default: 0)")
    p.add_argument("--dpi", type=_positive_int, default=100, help="resolution in dots per inch (default: 100)")
    p.add_argument("--overwrite", action="store_true", help="replace PNG if it exists")
    p.set_defaults(handler=_cmd_show)

    p = add("demo", "simulate, extract and draw a demonstration dataset")
    p.add_argument("--output-dir", default="ptycho-demo", metavar="DIR",
                   help="where to write dataset.npz, grouped.npz, overview.png (default: ./ptycho-demo)")
    p.add_argument("--quick", action="store_true", help="a smaller dataset (about a second)")
    p.add_argument("--backend", choices=BACKEND_CHOICES, default=None,
                   help="engine backend (default: tensorflow if installed, else jax, else numpy)")
    p.add_argument("--overwrite", action="store_true", help="replace the files in DIR if they exist")
    p.set_defaults(handler=_cmd_demo)

    p = add("check", "cross-validate TF, JAX, NumPy and the legacy loop on your data")
    p.add_argument("input", metavar="IN", help="dataset (.npz, PtychoPINN format with objectGuess)")
    _grouping_options(p, f"{CHECK_GROUPS} or one per position if fewer")
    p.add_argument("--sample", type=_positive_int, default=64, metavar="S",
                   help="positions cut by the (slow) legacy loop, rounded up to whole groups (default: 64)")
    p.set_defaults(handler=_cmd_check)

    # ``bench`` forwards everything after its name to ptycho.bench.main (see main()).
    sub.add_parser("bench", help="run the benchmark (arguments go to ptycho.bench; see 'bench --help')",
                   add_help=False)
    return parser


def _grouping_options(p: argparse.ArgumentParser, nsamples_default: str) -> None:
    p.add_argument("--N", type=_positive_int, default=None,
                   help="patch side in pixels (default: the probe's side)")
    p.add_argument("--gridsize", type=_positive_int, default=1,
                   help="groups of c = gridsize**2 neighbouring positions (default: 1)")
    p.add_argument("--nsamples", type=_positive_int, default=None,
                   help=f"number of groups G, seeds drawn at random (default: {nsamples_default})")
    p.add_argument("--K", type=_positive_int, default=None,
                   help="members are drawn from each seed's K nearest positions, itself included "
                   "(default: c, the most compact groups; ignored for gridsize 1)")
    p.add_argument("--seed", type=_non_negative_int, default=0,
                   help="seed of the grouping: same seed, same groups (default: 0)")


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def _progress_enabled(args: argparse.Namespace) -> bool:
    """Progress bars go to stderr, only when it is a terminal and not --quiet."""
    if getattr(args, "quiet", False):
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _default_backend() -> str:
    from ptycho.backends import available_backends

    available = available_backends()
    for name in BACKEND_CHOICES:
        if name in available:
            return name
    return "numpy"


def _refuse_existing(paths: Sequence[Path], overwrite: bool) -> None:
    """Fail before any work when an output exists and --overwrite is not given."""
    if overwrite:
        return
    for path in paths:
        if os.path.lexists(path):
            raise CLIError(f"output {str(path)!r} already exists; use --overwrite to replace it")


def _need_input(path: Path) -> None:
    if not path.exists():
        raise CLIError(f"input {str(path)!r} does not exist")
    if path.is_dir():
        raise CLIError(f"input {str(path)!r} is a directory, expected an .npz file")


def _need_parent(path: Path) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise CLIError(f"output folder {str(parent)!r} of {str(path)!r} does not exist")


def _size_text(path: Path) -> str:
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


def _say(text: str = "") -> None:
    print(text, flush=True)


class _Timer:
    """Wall time of a block, in seconds (``perf_counter``)."""

    def __enter__(self) -> "_Timer":
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self.start


def _prepare_backend(name: str, debug: bool) -> float:
    """Import backend ``name`` (and the TF production path); return the seconds it took.

    Importing TensorFlow prints CUDA probing and XLA banners straight to file
    descriptor 2, before Python's logging is set up, so ``TF_CPP_MIN_LOG_LEVEL``
    cannot silence all of it.  Without ``--debug`` that output is captured
    during the import and shown only if the import fails.
    """
    import tempfile

    from ptycho.backends import get_backend

    with _Timer() as t:
        if name != "tensorflow" or debug or "tensorflow" in sys.modules:
            get_backend(name)
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


def _load_raw(path: Path) -> Any:
    from ptycho.dataset import RawData

    _need_input(path)
    return RawData.from_file(path)


def _resolve_N(N: Optional[int], raw: Any) -> int:
    """``--N`` or, by default, the probe's side (PtychoPINN's N is the probe size)."""
    if N is not None:
        return N
    probe = np.asarray(raw.probeGuess)
    return int(probe.shape[0])


def _need_object(raw: Any, path: Path, command: str) -> np.ndarray:
    obj = getattr(raw, "objectGuess", None)
    if obj is None:
        raise CLIError(
            f"{command}: {str(path)!r} has no objectGuess; cutting ground-truth patches needs the object"
        )
    return np.asarray(obj)


def _grouped_summary(grouped: dict) -> tuple[int, int, int, int]:
    """(groups G, channels c, patch side N, patches G*c) of a grouped dict."""
    Y = grouped["Y"]
    G, N, _, c = (int(s) for s in Y.shape)
    return G, c, N, G * c


def _fields_text(grouped: dict) -> str:
    order = ("Y", "coords_nn", "coords_offsets", "coords_relative", "nn_indices", "diffraction")
    parts = []
    for key in order:
        if key in grouped:
            arr = np.asarray(grouped[key]) if not hasattr(grouped[key], "shape") else grouped[key]
            parts.append(f"{key} {tuple(int(s) for s in arr.shape)} {arr.dtype}")
    return ", ".join(parts)


# ---------------------------------------------------------------------------
# simulate
# ---------------------------------------------------------------------------


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


def _cmd_simulate(args: argparse.Namespace) -> int:
    out = Path(args.output)
    _need_parent(out)
    _refuse_existing([out], args.overwrite)
    with _Timer() as t:
        raw = _simulate(args)
    raw.to_file(out, overwrite=args.overwrite)
    obj = raw.objectGuess
    noise = f"Poisson noise at {args.photons:g} photons" if args.photons else "noise-free"
    _say(f"simulate: object {obj.shape[0]}x{obj.shape[1]}, {len(raw)} {args.scan} positions, "
         f"diffraction {tuple(raw.diff3d.shape[1:])} ({noise}) in {t.seconds:.2f} s")
    _say(f"wrote {out} ({_size_text(out)})")
    return EXIT_OK


# ---------------------------------------------------------------------------
# extract
# ---------------------------------------------------------------------------


def _scale_module() -> Any:
    try:
        import ptycho.scale as scale
    except ImportError as exc:
        raise CLIError(
            f'Zarr output and Dask runs need the optional packages: pip install "ptycho[scale]" ({exc})'
        ) from exc
    return scale


def _call_scale(fn: Callable[..., Any], *a: Any, **kw: Any) -> Any:
    """Call a ptycho.scale function; a missing zarr/dask surfaces as the install hint."""
    try:
        return fn(*a, **kw)
    except ModuleNotFoundError as exc:
        root = (exc.name or "").split(".")[0]
        if root in ("zarr", "dask", "distributed", "numcodecs"):
            raise CLIError(
                f'Zarr output and Dask runs need the optional packages: pip install "ptycho[scale]" ({exc})'
            ) from exc
        raise


def _cmd_extract(args: argparse.Namespace) -> int:
    src, out = Path(args.input), Path(args.output)
    to_zarr = out.suffix.lower() == ".zarr"
    on_dask = args.workers is not None or args.scheduler is not None
    if to_zarr and on_dask:
        raise CLIError("--workers/--scheduler write an .npz output; for a .zarr output drop them "
                       "(Zarr streaming runs chunk by chunk in this process)")
    if args.workers is not None and args.scheduler is not None:
        raise CLIError("give either --workers (a local Dask cluster) or --scheduler (an existing one), not both")
    if not to_zarr and out.suffix.lower() != ".npz":
        raise CLIError(f"output {str(out)!r}: expected a name ending in .npz or .zarr")
    if args.resume and (not to_zarr or args.overwrite):
        raise CLIError("--resume continues an interrupted .zarr output; it needs a .zarr OUT and no --overwrite")
    _need_parent(out)
    if not args.resume:
        _refuse_existing([out], args.overwrite)
    raw = _load_raw(src)
    _need_object(raw, src, "extract")
    N = _resolve_N(args.N, raw)
    backend = args.backend or _default_backend()
    progress = _progress_enabled(args)
    # On Dask the workers import the backend; here only local runs pay for it.
    import_seconds = 0.0 if on_dask else _prepare_backend(backend, args.debug)
    options = dict(N=N, gridsize=args.gridsize, K=args.K, nsamples=args.nsamples, seed=args.seed,
                   backend=backend, batch_size=args.batch_size)

    if to_zarr:
        existed = out.exists()
        scale = _scale_module()
        with _Timer() as t:
            # Without overwrite, grouped_to_zarr resumes a store of the same
            # settings (and refuses one of other settings).
            _call_scale(scale.grouped_to_zarr, raw, out, overwrite=args.overwrite, progress=progress, **options)
        resumed = " (resumed)" if args.resume and existed else ""
        _say(f"extract: {len(raw)} positions -> Zarr, N={N}, gridsize={args.gridsize}, backend {backend}, "
             f"in {t.seconds:.2f} s{resumed}")
        _say(f"wrote {out} ({_size_text(out)})")
        return EXIT_OK

    with _Timer() as t:
        if on_dask:
            scale = _scale_module()
            grouped = _call_scale(scale.grouped_with_dask, raw, workers=args.workers, scheduler=args.scheduler,
                                  progress=progress, **options)
        else:
            grouped = raw.generate_grouped_data(progress=progress, **options)
    from ptycho.dataset import save_grouped

    with _Timer() as tw:
        save_grouped(out, grouped, overwrite=args.overwrite)
    G, c, N, P = _grouped_summary(grouped)
    rate = f", {P / t.seconds:,.0f} patches/s" if t.seconds > 0 else ""
    where = " on Dask" if on_dask else f" (import {import_seconds:.2f} s)"
    _say(f"extract: {G} groups x {c} = {P} patches of {N}x{N} ({grouped['Y'].dtype}) from {len(raw)} "
         f"positions, backend {backend}{where}")
    _say(f"         grouping and patches {t.seconds:.2f} s{rate} (compilation included)")
    _say(f"fields: {_fields_text(grouped)}")
    _say(f"wrote {out} ({_size_text(out)}) in {tw.seconds:.2f} s")
    return EXIT_OK


# ---------------------------------------------------------------------------
# show
# ---------------------------------------------------------------------------


def _need_matplotlib(command: str) -> None:
    """Stop before any work when the pictures cannot be drawn."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise CLIError(f'{command} draws with matplotlib, which is not installed: pip install "ptycho[plot]"')


def _npz_kind(path: Path) -> str:
    """'grouped' or 'dataset', from the field names of the archive."""
    import zipfile

    _need_input(path)
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


def _cmd_show(args: argparse.Namespace) -> int:
    from ptycho import plotting

    src, out = Path(args.input), Path(args.output)
    _need_parent(out)
    _refuse_existing([out], args.overwrite)
    _need_matplotlib("show")
    kind = _npz_kind(src)
    with _Timer() as t:
        if kind == "dataset":
            fig = plotting.plot_dataset(_load_raw(src), seed=args.seed, source=src.name)
        else:
            from ptycho.dataset import load_grouped

            fig = plotting.plot_grouped(load_grouped(src), seed=args.seed, source=src.name)
        plotting.save_figure(fig, out, overwrite=args.overwrite, dpi=args.dpi)
    _say(f"show: {kind} {src} -> {out} ({_size_text(out)}) in {t.seconds:.2f} s")
    return EXIT_OK


# ---------------------------------------------------------------------------
# demo
# ---------------------------------------------------------------------------

#: Embedded demo settings.  The full demo has PtychoPINN's usual N = 64 and a
#: non-square object; its grouped NPZ is about 40 MB.  --quick is a toy size.
_DEMO = {
    False: dict(object_shape=(256, 320), N=64, n_positions=400, nsamples=200, K=7),
    True: dict(object_shape=(96, 128), N=32, n_positions=80, nsamples=40, K=6),
}


def _cmd_demo(args: argparse.Namespace) -> int:
    from ptycho import plotting
    from ptycho.dataset import save_grouped
    from ptycho.simulate import simulate_dataset

    settings = _DEMO[bool(args.quick)]
    folder = Path(args.output_dir)
    files = {name: folder / name for name in ("dataset.npz", "grouped.npz", "overview.png")}
    if folder.exists() and not folder.is_dir():
        raise CLIError(f"--output-dir {str(folder)!r} exists and is not a directory")
    _refuse_existing(list(files.values()), args.overwrite)
    _need_matplotlib("demo")
    backend = args.backend or _default_backend()
    progress = _progress_enabled(args)
    gridsize = 2
    timings = {}

    # Everything is computed before anything is written, so a failing demo
    # leaves no files (and no folder) behind.
    with _Timer() as t:
        raw = simulate_dataset(object_shape=settings["object_shape"], N=settings["N"], scan="spiral",
                               n_positions=settings["n_positions"], seed=0)
    timings["simulate"] = t.seconds
    timings["import"] = _prepare_backend(backend, args.debug)  # paid once per process
    with _Timer() as t:
        grouped = raw.generate_grouped_data(settings["N"], K=settings["K"], nsamples=settings["nsamples"],
                                            gridsize=gridsize, seed=0, backend=backend, progress=progress)
    timings["extract"] = t.seconds
    with _Timer() as t:
        png = plotting.render_png(plotting.plot_overview(raw, grouped))
    timings["picture"] = t.seconds
    with _Timer() as t:
        from ptycho._io import atomic_write

        folder.mkdir(parents=True, exist_ok=True)
        raw.to_file(files["dataset.npz"], overwrite=args.overwrite)
        save_grouped(files["grouped.npz"], grouped, overwrite=args.overwrite)
        atomic_write(files["overview.png"], lambda tmp: tmp.write_bytes(png), overwrite=args.overwrite)
    timings["save"] = t.seconds

    G, c, N, P = _grouped_summary(grouped)
    H, W = raw.objectGuess.shape
    _say(f"demo: simulated object {H}x{W}, {len(raw)} spiral positions, N={N}   "
         f"{timings['simulate']:.2f} s")
    _say(f"      imported {backend}   {timings['import']:.2f} s")
    _say(f"      extracted {G} groups x {c} = {P} patches (gridsize {gridsize}, backend {backend}, "
         f"compilation included)   {timings['extract']:.2f} s")
    _say(f"      saved the NPZ files {timings['save']:.2f} s, drew the overview {timings['picture']:.2f} s")
    for path in files.values():
        _say(f"wrote {path} ({_size_text(path)})")
    _say(f"next: ptycho-patches show {files['grouped.npz']} -o groups.png")
    return EXIT_OK


# ---------------------------------------------------------------------------
# check
# ---------------------------------------------------------------------------


def _check_backends_present() -> None:
    from ptycho.backends import available_backends

    available = available_backends()
    missing = [name for name in ("tensorflow", "jax") if name not in available]
    if missing:
        extras = {"tensorflow": "tf", "jax": "jax"}
        hint = ",".join(extras[m] for m in missing)
        raise CLIError(
            f"check compares the TensorFlow production path with the JAX mirror; missing "
            f"{' and '.join(missing)}: pip install \"ptycho[{hint}]\""
        )


def _tolerance(dtype: np.dtype, reference: np.ndarray) -> float:
    scale = max(1.0, float(np.max(np.abs(reference))) if reference.size else 1.0)
    return TOLERANCE_RELATIVE[np.dtype(dtype).name] * scale


def _max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        raise CLIError(f"check: results of different shapes {a.shape} and {b.shape}", EXIT_FAILED)
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def _cmd_check(args: argparse.Namespace) -> int:
    src = Path(args.input)
    _check_backends_present()
    raw = _load_raw(src)
    obj = _need_object(raw, src, "check")
    N = _resolve_N(args.N, raw)
    gridsize, c = args.gridsize, args.gridsize**2
    progress = _progress_enabled(args)

    nsamples = args.nsamples if args.nsamples is not None else (
        CHECK_GROUPS if len(raw) > CHECK_GROUPS else None)
    nn_indices = raw.group(gridsize=gridsize, K=args.K, nsamples=nsamples, seed=args.seed)
    fields = raw.grouped_fields(nn_indices)
    global_offsets = np.asarray(fields["coords_offsets"])
    local_offsets = np.asarray(fields["coords_relative"])
    G = int(global_offsets.shape[0])
    if G == 0:
        raise CLIError(f"check: {str(src)!r} gave no groups to compare")
    wide = obj.dtype in (np.float64, np.complex128)
    cdtype, rdtype = (np.complex128, np.float64) if wide else (np.complex64, np.float32)
    obj = obj.astype(cdtype, copy=False)
    # The positions exactly as get_image_patches forms them: global + local in
    # float64, rounded once to the object's real precision; flat order b*c + k.
    offsets = np.add(global_offsets, local_offsets, dtype=np.float64).astype(rdtype)  # (G, 1, 2, c)
    positions = np.ascontiguousarray(np.transpose(offsets[:, 0], (0, 2, 1)).reshape(G * c, 2))

    rng = np.random.default_rng(args.seed)
    n_legacy = min(G, max(1, math.ceil(args.sample / c)))
    legacy_groups = np.sort(rng.choice(G, size=n_legacy, replace=False))

    results: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    import warnings

    # Imports apart, so the times below are the engines'.
    seconds["imports"] = _prepare_backend("tensorflow", args.debug) + _prepare_backend("jax", args.debug)
    from ptycho.backends import extract_patches_grouped
    from ptycho.config.config import ModelConfig
    from ptycho.raw_data import get_image_patches

    with _Timer() as t:
        config = ModelConfig(N=N, gridsize=gridsize, use_batched_patch_extraction=True)
        results["TF batched"] = np.asarray(get_image_patches(obj, global_offsets, local_offsets, N=N,
                                                             gridsize=gridsize, config=config))
    seconds["TF batched"] = t.seconds
    for label, name in (("JAX", "jax"), ("NumPy", "numpy")):
        with _Timer() as t:
            results[label] = np.asarray(extract_patches_grouped(obj, positions, N, channels=c, backend=name))
        seconds[label] = t.seconds
    with _Timer() as t, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        results["legacy loop"] = _legacy_patches(obj, offsets[legacy_groups], N, c, progress)
    seconds["legacy loop"] = t.seconds

    # (a, b, rows of a compared, exact?): the legacy loop only saw the sample.
    pairs = [
        ("TF batched", "legacy loop", legacy_groups, True),
        ("JAX", "legacy loop", legacy_groups, False),
        ("NumPy", "legacy loop", legacy_groups, False),
        ("JAX", "TF batched", None, False),
        ("NumPy", "TF batched", None, False),
        ("JAX", "NumPy", None, False),
    ]
    H, W = obj.shape
    _say(f"check: {src}  object {H}x{W} {np.dtype(cdtype).name}, N={N}, gridsize={gridsize}, "
         f"{G} groups ({G * c} patches); legacy loop on {n_legacy} groups ({n_legacy * c} patches)")
    _say("times (compilation included): " + ", ".join(f"{k} {v:.2f} s" for k, v in seconds.items()))
    header = f"{'pair':<28} {'patches':>8} {'max |diff|':>12} {'tolerance':>12}  result"
    _say(header)
    _say("-" * len(header))
    failed = 0
    for a, b, rows, exact in pairs:
        left = results[a] if rows is None or a == "legacy loop" else results[a][rows]
        right = results[b] if rows is None or b == "legacy loop" else results[b][rows]
        diff = _max_abs_diff(left, right)
        tol = TOLERANCE_TF_VS_LEGACY if exact else _tolerance(cdtype, right)
        ok = diff <= tol
        failed += not ok
        tol_text = "0 (exact)" if exact else f"{tol:.1e}"
        _say(f"{a + ' vs ' + b:<28} {left.shape[0] * c:>8} {diff:>12.3g} {tol_text:>12}  "
             f"{'ok' if ok else 'FAIL'}")
    if failed:
        _say(f"check FAILED: {failed} of {len(pairs)} pairs beyond tolerance")
        return EXIT_FAILED
    _say(f"check passed: all {len(pairs)} pairs within tolerance")
    return EXIT_OK


def _legacy_patches(obj: np.ndarray, offsets: np.ndarray, N: int, c: int, progress: bool) -> np.ndarray:
    """PtychoPINN's per-patch loop on (B, 1, 2, c) offsets, a few groups per call for progress."""
    import tensorflow as tf

    from ptycho.raw_data import _get_image_patches_iterative
    from ptycho.tf_helper import _channel_to_flat, pad

    gt_padded = pad(tf.convert_to_tensor(obj[None, :, :, None]), N // 2)
    B = offsets.shape[0]
    step = max(1, 16 // c)
    chunks = range(0, B, step)
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc="legacy loop", unit="chunk", file=sys.stderr, leave=False)
    parts = []
    for start in chunks:
        part = offsets[start : start + step]
        flat = _channel_to_flat(tf.convert_to_tensor(part))
        parts.append(np.asarray(_get_image_patches_iterative(gt_padded, flat, N, part.shape[0], c)))
    return np.concatenate(parts, axis=0)


# ---------------------------------------------------------------------------
# bench and main
# ---------------------------------------------------------------------------


def _run_bench(argv: list[str]) -> int:
    try:
        from ptycho import bench
    except ImportError as exc:
        raise CLIError(f"the benchmark module ptycho.bench could not be imported ({exc})") from exc
    try:
        return int(bench.main(argv) or 0)
    except SystemExit as exc:  # its argparse: --help, usage errors
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USAGE


def _split_bench(argv: list[str]) -> Optional[tuple[list[str], list[str]]]:
    """(top-level options, bench arguments) when the command is ``bench``, else None.

    argparse cannot forward arbitrary options that follow a subcommand name,
    so everything after ``bench`` goes to ``ptycho.bench.main`` untouched.
    """
    for i, token in enumerate(argv):
        if token == "--":
            return None
        if not token.startswith("-"):
            return (argv[:i], argv[i + 1 :]) if token == "bench" else None
    return None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, (FileNotFoundError, FileExistsError, PermissionError)) and exc.filename and \
            str(exc.filename) not in text:
        text = f"{text}: {exc.filename}"
    return text if len(text) <= 600 else text[:597] + "..."


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``ptycho-patches`` with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    bench_split = _split_bench(argv)
    try:
        if bench_split is not None:
            args = parser.parse_args(bench_split[0] + ["bench"])
        else:
            args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors (argparse printed them)
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USAGE

    debug = bool(getattr(args, "debug", False))
    if not debug:
        # TensorFlow's C++ start-up chatter (CUDA probing, XLA banners) is not
        # for the user; failures still arrive as Python exceptions.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        if bench_split is not None:
            return _run_bench(bench_split[1])
        return int(args.handler(args))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - every failure becomes one line (or a traceback with --debug)
        status, message = _classify(exc)
        if debug:
            traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
        elif status == EXIT_FAILED:
            message += " (run with --debug for the traceback)"
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return status


def _classify(exc: Exception) -> tuple[int, str]:
    """(exit status, one-line message) for an exception raised by a command.

    Bad input (arguments, files, missing packages) exits 2; anything else is
    an internal failure, exit 1, named by its type.
    """
    if isinstance(exc, CLIError):
        return exc.status, _one_line(exc)
    if isinstance(exc, (ValueError, TypeError, OSError, ImportError)):
        return EXIT_USAGE, _one_line(exc)
    return EXIT_FAILED, f"internal error, {type(exc).__name__}: {_one_line(exc)}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
