"""``ptycho-patches extract``: neighbour groups and their ground-truth patches ``Y``.

Order of checks: the options, the output (folder, existing file), then the
input dataset; only then the optional ``scale`` extra (zarr, dask, s3fs) that
a ``.zarr`` or URL output, ``--workers`` or ``--scheduler`` needs.

A ``.zarr`` output with ``--workers``/``--scheduler`` is written by the Dask
workers, each its own chunks of ``Y``: this process holds no patch data.  An
``.npz`` output is one file, assembled here from the workers' blocks.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ptycho.cli._common import (EXIT_OK, CLIError, Timer, add_backend_option, add_grouping_options,
                                default_backend, grouped_summary, load_raw, need_object, need_parent, new_parser,
                                positive_int, prepare_backend, progress_enabled, refuse_existing, resolve_N, say,
                                size_text)

NAME = "extract"
HELP = "cut grouped ground-truth patches (Y) from a dataset"
EPILOG = """\
examples:
  ptycho-patches extract scan.npz -o groups.npz                      # gridsize 1
  ptycho-patches extract scan.npz -o groups.npz --gridsize 2 --K 7 --nsamples 500 --seed 1
  ptycho-patches extract scan.npz -o groups.npz --backend jax --batch-size 4096
  ptycho-patches extract scan.npz -o groups.zarr --gridsize 2       # Zarr, needs ptycho[scale]
  ptycho-patches extract scan.npz -o groups.npz --workers 2         # Dask, needs ptycho[scale]
  ptycho-patches extract scan.npz -o run.zarr --workers 2           # the workers write the Zarr store
  ptycho-patches extract scan.npz -o s3://bucket/run.zarr --workers 8
  ptycho-patches extract scan.npz -o s3://bucket/run.zarr --scheduler tcp://10.0.0.5:8786

A .zarr output or a Dask run (--workers, --scheduler) without --backend runs
the fastest exact engine installed on the workers -- NumPy with the Numba
kernel of ptycho[fast], else the NumPy array path -- chosen once, checked bit
for bit on every worker, and printed; --backend jax or tensorflow runs XLA.

An s3:// output takes its endpoint and credentials from AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_DEFAULT_REGION (on every
worker too); --storage-option KEY=VALUE passes any other s3fs option.

The output NPZ holds Y (G, N, N, c) object patches, coords_nn (G, 1, 2, c),
coords_offsets (G, 1, 2, 1), coords_relative (G, 1, 2, c), nn_indices (G, c) and
diffraction (G, H, W, c); c = gridsize**2, member k of group g is channel k.
"""

_SCALE_HINT = 'Zarr output and Dask runs need the optional packages: pip install "ptycho[scale]"'


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = new_parser(subparsers, NAME, HELP, EPILOG)
    p.add_argument("input", metavar="IN", help="dataset (.npz, PtychoPINN format with objectGuess)")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="grouped output: .npz, or .zarr (a path, or a URL such as s3://bucket/run.zarr; "
                   "needs ptycho[scale])")
    add_grouping_options(p, "one group per scan position")
    add_backend_option(p)
    p.add_argument("--batch-size", type=positive_int, default=None, metavar="P",
                   help="patches per engine call, bounds working memory (default: all at once)")
    p.add_argument("--workers", type=positive_int, default=None,
                   help="run on a local Dask cluster with this many workers (needs ptycho[scale])")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="run on an existing Dask scheduler, e.g. tcp://host:8786 (needs ptycho[scale])")
    p.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE", dest="storage_options",
                   help="an option of the URL output's filesystem (s3fs: endpoint_url, anon, requester_pays, "
                   "client_kwargs, ...); VALUE is JSON when it parses as JSON, else text; repeatable")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--resume", action="store_true",
                   help="a .zarr OUT left by an interrupted run with the same settings: keep its "
                   "complete chunks and compute the rest")
    return p


def _scale_module() -> Any:
    try:
        import ptycho.scale as scale
    except ImportError as exc:
        raise CLIError(f"{_SCALE_HINT} ({exc})") from exc
    return scale


def _call_scale(fn: Callable[..., Any], *a: Any, **kw: Any) -> Any:
    """Call a ptycho.scale function; a missing zarr/dask surfaces as the install hint."""
    try:
        return fn(*a, **kw)
    except ModuleNotFoundError as exc:
        root = (exc.name or "").split(".")[0]
        if root in ("zarr", "dask", "distributed", "numcodecs", "fsspec", "s3fs"):
            raise CLIError(f"{_SCALE_HINT} ({exc})") from exc
        raise


def _is_url(text: str) -> bool:
    return "://" in text


def _storage_options(items: list) -> dict:
    """``["anon=true", "endpoint_url=http://..."]`` -> ``{"anon": True, "endpoint_url": "http://..."}``."""
    options: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CLIError(f"--storage-option {item!r}: expected KEY=VALUE")
        try:
            options[key.strip()] = json.loads(value)
        except ValueError:
            options[key.strip()] = value
    return options


def _check_options(args: argparse.Namespace, out_text: str, to_zarr: bool) -> None:
    if args.workers is not None and args.scheduler is not None:
        raise CLIError("give either --workers (a local Dask cluster) or --scheduler (an existing one), not both")
    if _is_url(out_text) and not to_zarr:
        raise CLIError(f"output {out_text!r}: a URL output is a Zarr store; expected a name ending in .zarr")
    if not to_zarr and Path(out_text).suffix.lower() != ".npz":
        raise CLIError(f"output {out_text!r}: expected a name ending in .npz or .zarr")
    if args.storage_options and not _is_url(out_text):
        raise CLIError(f"--storage-option configures a URL output (s3://bucket/run.zarr); {out_text!r} is a path")
    if args.resume and (not to_zarr or args.overwrite):
        raise CLIError("--resume continues an interrupted .zarr output; it needs a .zarr OUT and no --overwrite")


def _url_exists(url: str, options: dict) -> bool:
    """Whether a Zarr node (``zarr.json``) is at ``url``; the filesystem's package missing is the install hint."""
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(url, **options)
    except ImportError as exc:
        raise CLIError(f"output {url!r}: its filesystem is not installed ({exc}); {_SCALE_HINT}") from exc
    return bool(fs.exists(f"{path.rstrip('/')}/zarr.json"))


def _url_size_text(url: str, options: dict) -> str:
    try:
        import fsspec

        fs, path = fsspec.core.url_to_fs(url, **options)
        size = float(fs.du(path))
    except Exception:  # noqa: BLE001 - a size is only informative
        return "?"
    return f"{size / 1e6:.1f} MB" if size < 1e9 else f"{size / 1e9:.1f} GB"


def _fields_text(grouped: dict) -> str:
    order = ("Y", "coords_nn", "coords_offsets", "coords_relative", "nn_indices", "diffraction")
    parts = []
    for key in order:
        if key in grouped:
            arr = np.asarray(grouped[key]) if not hasattr(grouped[key], "shape") else grouped[key]
            parts.append(f"{key} {tuple(int(s) for s in arr.shape)} {arr.dtype}")
    return ", ".join(parts)


def run(args: argparse.Namespace) -> int:
    src, out_text = Path(args.input), args.output
    url = _is_url(out_text)
    out = None if url else Path(out_text)
    to_zarr = out_text.rstrip("/").lower().endswith(".zarr")
    on_dask = args.workers is not None or args.scheduler is not None
    _check_options(args, out_text, to_zarr)
    storage_options = _storage_options(args.storage_options)
    if out is not None:
        need_parent(out)
        if not args.resume:
            refuse_existing([out], args.overwrite)
    raw = load_raw(src)
    need_object(raw, src, NAME)
    N = resolve_N(args.N, raw)
    # The input is good: now the optional extra (before the seconds of a backend import).
    scale = _scale_module() if to_zarr or on_dask else None
    # Zarr and Dask runs: the fastest exact engine installed (on the workers), chosen once by ptycho.scale.
    backend = args.backend or ("auto" if scale is not None else default_backend())
    progress = progress_enabled(args)
    # On Dask the workers import the backend; here only local runs pay for it.
    import_seconds = 0.0 if on_dask or backend == "auto" else prepare_backend(backend, args.debug)
    options = dict(N=N, gridsize=args.gridsize, K=args.K, nsamples=args.nsamples, seed=args.seed,
                   backend=backend, batch_size=args.batch_size)

    if to_zarr:
        if url:
            existed = _url_exists(out_text, storage_options)
            if existed and not (args.resume or args.overwrite):
                raise CLIError(f"output {out_text!r} already exists; use --overwrite to replace it "
                               "(or --resume to continue it)")
        else:
            existed = out.exists()
        cluster = dict(workers=args.workers, scheduler=args.scheduler)
        if url:
            cluster["storage_options"] = storage_options
        with Timer() as t:
            # Without overwrite, grouped_to_zarr resumes a store of the same
            # settings (and refuses one of other settings).  On Dask the
            # workers write Y's chunks into the store themselves.
            engine = _call_scale(scale.grouped_to_zarr, raw, out_text if url else out, overwrite=args.overwrite,
                                 progress=progress, **cluster, **options)
        resumed = " (resumed)" if args.resume and existed else ""
        where = ""
        if args.workers is not None:
            where = f" on Dask ({args.workers} local worker{'s' if args.workers > 1 else ''})"
        elif args.scheduler is not None:
            where = f" on Dask ({args.scheduler})"
        say(f"extract: {len(raw)} positions -> Zarr, N={N}, gridsize={args.gridsize}, engine {engine.describe()}"
            f"{where}, in {t.seconds:.2f} s{resumed}")
        say(f"wrote {out_text} ({_url_size_text(out_text, storage_options) if url else size_text(out)})")
        return EXIT_OK

    chosen: list = []
    with Timer() as t:
        if on_dask:
            grouped = _call_scale(scale.grouped_with_dask, raw, workers=args.workers, scheduler=args.scheduler,
                                  progress=progress, on_engine=chosen.append, **options)
        else:
            grouped = raw.generate_grouped_data(progress=progress, **options)
    from ptycho.dataset import save_grouped

    with Timer() as tw:
        save_grouped(out, grouped, overwrite=args.overwrite)
    G, c, N, P = grouped_summary(grouped)
    rate = f", {P / t.seconds:,.0f} patches/s" if t.seconds > 0 else ""
    where = " on Dask" if on_dask else f" (import {import_seconds:.2f} s)"
    engine = f"engine {chosen[0].describe()}" if chosen else f"backend {backend}"
    say(f"extract: {G} groups x {c} = {P} patches of {N}x{N} ({grouped['Y'].dtype}) from {len(raw)} "
        f"positions, {engine}{where}")
    say(f"         grouping and patches {t.seconds:.2f} s{rate} (compilation included)")
    say(f"fields: {_fields_text(grouped)}")
    say(f"wrote {out} ({size_text(out)}) in {tw.seconds:.2f} s")
    return EXIT_OK
