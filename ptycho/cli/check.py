"""``ptycho-patches check``: TF/XLA vs JAX vs NumPy vs the legacy loop, on your data.

The tolerances are :mod:`ptycho.testing`'s, the same table as the test suite:
in one evaluation order every backend must equal the legacy loop exactly
(``EXACT``); between the two orders (``--evaluation both``)
``tolerance(reference, dtype)`` allows ``RELATIVE_ATOL[dtype] * max(1, max|ref|)``.
The default order is ``compiled``: the legacy loop then equals PtychoPINN's
default (XLA) path; ``plain`` equals its eager path.

Order of checks: the input dataset (exists, loads, has an object) and the
grouping options first, then the optional ``tf`` and ``jax`` extras.
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ptycho.cli._common import (EXIT_FAILED, EXIT_OK, CLIError, Timer, add_grouping_options, load_raw, need_object,
                                new_parser, positive_int, prepare_backend, progress_enabled, resolve_N, say)

NAME = "check"
HELP = "cross-validate TF, JAX, NumPy and the legacy loop on your data"
#: Groups ``check`` compares by default: enough to cover a scan, small enough
#: that the four results of any dataset fit in memory.
CHECK_GROUPS = 512
EPILOG = """\
examples:
  ptycho-patches check scan.npz
  ptycho-patches check scan.npz --N 64 --gridsize 2 --nsamples 200 --sample 32 --seed 1

  ptycho-patches check scan.npz --evaluation both

Cuts the same patches with the production TF/XLA path, the JAX mirror and NumPy
(all groups) and with the legacy per-patch loop (a sample of positions), and
prints max |diff| for every pair.  --evaluation compiled (default) compares
against PtychoPINN's default compiled path (fused multiply-adds), plain against
its eager path, both reports both.  In one order every pair must be exactly
equal; compiled vs plain differ by rounding: complex64 allows
1e-6 * max(1, max|ref|), complex128 1e-12 * max(1, max|ref|).  Exit status 1 if
any pair exceeds its tolerance.
"""

#: (a, b, compared on the legacy sample only?): the legacy loop only saw the sample.
#: In one evaluation order every pair is exact.
PAIRS = (
    ("TF batched", "legacy loop", True),
    ("JAX", "legacy loop", True),
    ("NumPy", "legacy loop", True),
    ("JAX", "TF batched", False),
    ("NumPy", "TF batched", False),
    ("JAX", "NumPy", False),
)
ORDERS = ("compiled", "plain")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = new_parser(subparsers, NAME, HELP, EPILOG)
    p.add_argument("input", metavar="IN", help="dataset (.npz, PtychoPINN format with objectGuess)")
    add_grouping_options(p, f"{CHECK_GROUPS} or one per position if fewer")
    p.add_argument("--sample", type=positive_int, default=64, metavar="S",
                   help="positions cut by the (slow) legacy loop, rounded up to whole groups (default: 64)")
    p.add_argument("--evaluation", choices=ORDERS + ("both",), default="compiled",
                   help="evaluation order: compiled (PtychoPINN's default XLA path, the default), "
                        "plain (its eager path) or both")
    return p


def _need_backends() -> None:
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


def run(args: argparse.Namespace) -> int:
    from ptycho._validate import working_dtypes
    from ptycho.testing import EXACT, max_abs_diff, tolerance

    src = Path(args.input)
    raw = load_raw(src)
    obj = need_object(raw, src, NAME)
    N = resolve_N(args.N, raw)
    gridsize, c = args.gridsize, args.gridsize**2
    nsamples = args.nsamples if args.nsamples is not None else (
        CHECK_GROUPS if len(raw) > CHECK_GROUPS else None)
    nn_indices = raw.group(gridsize=gridsize, K=args.K, nsamples=nsamples, seed=args.seed)
    fields = raw.grouped_fields(nn_indices)
    global_offsets = np.asarray(fields["coords_offsets"])
    local_offsets = np.asarray(fields["coords_relative"])
    G = int(global_offsets.shape[0])
    if G == 0:
        raise CLIError(f"check: {str(src)!r} gave no groups to compare")
    _need_backends()  # the input is good: now the optional extras

    cdtype, rdtype = working_dtypes(obj.dtype)
    obj = obj.astype(cdtype, copy=False)
    # The positions exactly as get_image_patches forms them: global + local in
    # float64, rounded once to the object's real precision; flat order b*c + k.
    offsets = np.add(global_offsets, local_offsets, dtype=np.float64).astype(rdtype)  # (G, 1, 2, c)
    positions = np.ascontiguousarray(np.transpose(offsets[:, 0], (0, 2, 1)).reshape(G * c, 2))
    rng = np.random.default_rng(args.seed)
    n_legacy = min(G, max(1, math.ceil(args.sample / c)))
    legacy_groups = np.sort(rng.choice(G, size=n_legacy, replace=False))

    orders = ORDERS if args.evaluation == "both" else (args.evaluation,)
    results, seconds = {}, {}
    for order in orders:
        results[order], seconds[order] = _run_engines(
            args, obj, global_offsets, local_offsets, positions, offsets[legacy_groups], N, gridsize, order)
    H, W = obj.shape
    say(f"check: {src}  object {H}x{W} {cdtype.name}, N={N}, gridsize={gridsize}, "
        f"{G} groups ({G * c} patches); legacy loop on {n_legacy} groups ({n_legacy * c} patches)")
    # (label, left, right, tolerance): every pair of one order is exact
    rows = []
    for order in orders:
        say(f"times, {order} order (compilation included): "
            + ", ".join(f"{k} {v:.2f} s" for k, v in seconds[order].items()))
        got = results[order]
        for a, b, on_sample in PAIRS:
            left = got[a][legacy_groups] if on_sample and a != "legacy loop" else got[a]
            right = got[b][legacy_groups] if on_sample and b != "legacy loop" else got[b]
            rows.append((f"{a} vs {b}" + (f" ({order})" if len(orders) > 1 else ""), left, right, EXACT))
    if len(orders) > 1:  # the two orders round differently: the tolerance table
        compiled, plain = results["compiled"]["TF batched"], results["plain"]["TF batched"]
        rows.append(("TF batched compiled vs plain", compiled, plain, tolerance(plain, cdtype)))
    label_width = max(28, max(len(label) for label, *_ in rows))
    header = f"{'pair (' + '/'.join(orders) + ')':<{label_width}} {'patches':>8} {'max |diff|':>12} {'tolerance':>12}  result"
    say(header)
    say("-" * len(header))
    failed = 0
    for label, left, right, tol in rows:
        diff = max_abs_diff(left, right)
        ok = diff <= tol
        failed += not ok
        tol_text = "0 (exact)" if tol == EXACT else f"{tol:.1e}"
        say(f"{label:<{label_width}} {left.shape[0] * c:>8} {diff:>12.3g} {tol_text:>12}  {'ok' if ok else 'FAIL'}")
    if failed:
        say(f"check FAILED: {failed} of {len(rows)} pairs beyond tolerance")
        return EXIT_FAILED
    say(f"check passed: all {len(rows)} pairs within tolerance")
    return EXIT_OK


def _run_engines(args: argparse.Namespace, obj: np.ndarray, global_offsets: np.ndarray, local_offsets: np.ndarray,
                 positions: np.ndarray, legacy_offsets: np.ndarray, N: int,
                 gridsize: int, order: str) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """The four results of one evaluation order (the legacy loop on its sample only) and their seconds.

    Everything runs in the object's precision (``full_precision=True`` for the
    PtychoPINN-named paths), so the four compare bit for bit.
    """
    c = gridsize**2
    results: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    # Imports apart, so the times below are the engines'.
    seconds["imports"] = prepare_backend("tensorflow", args.debug) + prepare_backend("jax", args.debug)
    from ptycho.backends import extract_patches_grouped
    from ptycho.config.config import ModelConfig
    from ptycho.raw_data import get_image_patches

    with Timer() as t:
        config = ModelConfig(N=N, gridsize=gridsize, use_batched_patch_extraction=True)
        results["TF batched"] = np.asarray(get_image_patches(obj, global_offsets, local_offsets, N=N,
                                                             gridsize=gridsize, config=config, evaluation=order,
                                                             full_precision=True))
    seconds["TF batched"] = t.seconds
    for label, name in (("JAX", "jax"), ("NumPy", "numpy")):
        with Timer() as t:
            results[label] = np.asarray(extract_patches_grouped(obj, positions, N, channels=c, backend=name,
                                                                evaluation=order))
        seconds[label] = t.seconds
    with Timer() as t, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        results["legacy loop"] = _legacy_patches(obj, legacy_offsets, N, c, progress_enabled(args), order)
    seconds["legacy loop"] = t.seconds
    return results, seconds


def _legacy_patches(obj: np.ndarray, offsets: np.ndarray, N: int, c: int, progress: bool,
                    order: str = "compiled") -> np.ndarray:
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
        parts.append(np.asarray(_get_image_patches_iterative(gt_padded, flat, N, part.shape[0], c,
                                                             evaluation=order, full_precision=True)))
    return np.concatenate(parts, axis=0)
