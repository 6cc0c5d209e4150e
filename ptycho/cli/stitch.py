"""``ptycho-patches stitch``: put grouped patches ``Y`` back at their coordinates.

The normalised stitch of :func:`ptycho.backends.place_patches`: each patch is
placed with the adjoint of the extraction that cut it (the same positions and
bilinear weights), overlaps are averaged, ``object = place(Y) / (place(1) + eps)``;
``coverage = place(1)`` says how many patches (in bilinear weight) cover
each pixel.  Where the grouped file holds the ``objectGuess`` the patches
were cut from, the command reports how far the stitch is from it on the
covered pixels (sub-pixel positions blur it a little: extraction interpolates).

Order of checks: the options and the outputs, the input, then the optional
``plot`` extra for ``--png``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ptycho.cli._common import (EXIT_OK, CLIError, Timer, add_backend_option, default_backend, need_extra,
                                need_input, need_parent, new_parser, non_negative_float, positive_int,
                                prepare_backend, refuse_existing, say, size_text)

NAME = "stitch"
HELP = "stitch grouped patches (Y) back into an object"
EPILOG = """\
examples:
  ptycho-patches stitch groups.npz -o object.npz                  # canvas: objectGuess's shape
  ptycho-patches stitch groups.npz -o object.npz --png object.png # original, stitched, difference, coverage
  ptycho-patches stitch groups.npz -o object.npz --shape 256 256 --backend jax

The output NPZ holds object (H, W) complex, the normalised stitch, and
coverage (H, W) float32, the summed bilinear weights (place of ones).
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = new_parser(subparsers, NAME, HELP, EPILOG)
    p.add_argument("input", metavar="IN", help="grouped .npz (from 'ptycho-patches extract') holding Y")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output .npz: object and coverage")
    p.add_argument("--png", default=None, metavar="PNG",
                   help="also draw original, stitched, difference and coverage into PNG (needs ptycho[plot])")
    p.add_argument("--shape", nargs=2, type=positive_int, default=None, metavar=("H", "W"),
                   help="canvas (default: the objectGuess's shape, else the extent of the patches)")
    p.add_argument("--eps", type=non_negative_float, default=1e-9,
                   help="regulariser of the normalised stitch object = place(Y) / (place(1) + eps) (default: 1e-9)")
    add_backend_option(p)
    p.add_argument("--dpi", type=positive_int, default=100, help="PNG resolution in dots per inch (default: 100)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT (and PNG) if they exist")
    return p


def flat_patches(grouped: dict) -> tuple[np.ndarray, np.ndarray]:
    """(patches (G*c, N, N), positions (G*c, 2) (x, y)): member k of group g is row g*c + k.

    The positions are those ``Y`` was cut at (``coords_offsets + coords_relative``,
    :func:`ptycho.dataset.ground_truth_positions`): with PtychoPINN's sign of
    ``coords_relative`` a member of a group of several is cut at its reflection
    through the group centre, not at ``coords_nn``.  A dict without those two
    keys (built by hand from patches cut at their own positions) is placed at
    ``coords_nn``.
    """
    from ptycho.dataset import ground_truth_positions

    Y = np.asarray(grouped["Y"])
    G, N, _, c = Y.shape
    if "coords_offsets" in grouped and "coords_relative" in grouped:
        coords = np.asarray(ground_truth_positions(grouped), dtype=np.float64)  # (G, 1, 2, c)
    elif "coords_nn" in grouped:
        coords = np.asarray(grouped["coords_nn"], dtype=np.float64)
    else:
        from ptycho.errors import InputError

        raise InputError("a grouped dict to stitch needs coords_offsets and coords_relative "
                         "(where Y was cut), or coords_nn")
    patches = np.transpose(Y, (0, 3, 1, 2)).reshape(G * c, N, N)
    positions = np.transpose(coords[:, 0], (0, 2, 1)).reshape(G * c, 2)
    return patches, positions


def canvas_shape(shape: Optional[Any], obj: Optional[np.ndarray], positions: np.ndarray, N: int) -> tuple[int, int]:
    """--shape, else the object's shape, else the smallest canvas holding every patch centre + N/2."""
    if shape is not None:
        return int(shape[0]), int(shape[1])
    if obj is not None:
        return int(obj.shape[0]), int(obj.shape[1])
    if not positions.size:
        return N, N
    far = np.max(positions, axis=0) + N / 2
    return max(1, int(math.ceil(far[1])) + 1), max(1, int(math.ceil(far[0])) + 1)


def stitch(grouped: dict, shape: Optional[Any] = None, *, backend: str = "numpy", eps: float = 1e-9,
           device: Any = None) -> dict:
    """``{'object', 'coverage'}`` of a grouped dict (NumPy arrays), and the object it was cut from if any.

    ``device``: where the placement runs (a ``jax.Device``, a TensorFlow device name; default: the
    backend's default device).  The patches go there and the canvases come back by explicit
    transfers (``jax.device_put`` / ``jax.device_get``: allowed under ``jax.transfer_guard``).
    """
    from ptycho.backends import place_patches

    patches, positions = flat_patches(grouped)
    obj = grouped.get("objectGuess")
    N = patches.shape[1]
    H, W = canvas_shape(shape, obj, positions, N)
    stitched, coverage = place_patches(_to_device(patches, backend, device), positions, (H, W), backend=backend,
                                       normalize=True, eps=eps, return_coverage=True)
    return {"object": _to_host(stitched, backend), "coverage": _to_host(coverage, backend).astype(np.float32)}


def _to_device(patches: np.ndarray, backend: str, device: Any) -> Any:
    """The patches on ``device``, placed explicitly (host arrays stay for NumPy)."""
    from ptycho.backends import canonical_name, get_backend

    name = canonical_name(backend)
    if name == "jax":
        import jax

        with get_backend("jax").precision(patches.dtype):  # 64-bit mode: complex128 stays complex128
            return jax.device_put(patches, device)
    if name == "tensorflow":
        import contextlib

        import tensorflow as tf

        with tf.device(device) if device else contextlib.nullcontext():
            return tf.constant(patches)
    return patches


def _to_host(x: Any, backend: str) -> np.ndarray:
    from ptycho.backends import canonical_name
    from ptycho.testing import to_numpy

    if canonical_name(backend) == "jax":
        import jax

        return np.asarray(jax.device_get(x))
    return to_numpy(x)


def run(args: argparse.Namespace) -> int:
    from ptycho.dataset import load_grouped

    src, out = Path(args.input), Path(args.output)
    png = Path(args.png) if args.png else None
    if out.suffix != ".npz":
        raise CLIError(f"output {str(out)!r} must end in .npz")
    if png is not None and png.suffix != ".png":
        raise CLIError(f"--png {str(png)!r} must end in .png")
    for path in [out] + ([png] if png else []):
        need_parent(path)
    refuse_existing([out] + ([png] if png else []), args.overwrite)
    need_input(src)
    grouped = load_grouped(src)
    if grouped.get("Y") is None:
        raise CLIError(f"{str(src)!r} holds no Y (the grouped object patches): nothing to stitch; "
                       "make it with 'ptycho-patches extract' from a dataset with an objectGuess")
    if png is not None:
        need_extra("plot", NAME)
    backend = args.backend or default_backend()
    prepare_backend(backend, getattr(args, "debug", False))
    with Timer() as t:
        result = stitch(grouped, args.shape, backend=backend, eps=args.eps)
    from ptycho._io import save_npz

    save_npz(out, result, overwrite=args.overwrite)
    G, _, _, c = np.asarray(grouped["Y"]).shape
    patches = G * c
    H, W = result["object"].shape
    say(f"stitch: {patches} patches of {src} -> {out} ({H} x {W}, {size_text(out)}) on {backend} in {t.seconds:.2f} s")
    obj = grouped.get("objectGuess")
    if obj is not None and obj.shape == result["object"].shape:
        covered = result["coverage"] >= 1.0
        if covered.any():
            diff = np.abs(result["object"][covered] - obj[covered])
            scale = float(np.max(np.abs(obj[covered])))
            say(f"stitch: vs objectGuess on the {covered.mean():.0%} covered pixels: "
                f"max |diff| {diff.max():.3g} ({diff.max() / scale:.2%} of max |object|), "
                f"mean {diff.mean():.3g}")
    if png is not None:
        from ptycho import plotting

        fig = figure(result, obj if obj is not None and obj.shape == result["object"].shape else None, src.name)
        plotting.save_figure(fig, png, overwrite=args.overwrite, dpi=args.dpi)
        say(f"stitch: picture -> {png} ({size_text(png)})")
    return EXIT_OK


def figure(result: dict, obj: Optional[np.ndarray], source: str) -> Any:
    """Panels: the original object (if known), the stitched one, |difference|, the coverage."""
    from ptycho.plotting import _new_figure

    stitched = np.abs(result["object"])
    stitched[result["coverage"] <= 0] = np.nan  # no patch reaches it
    panels = [("stitched |object|", stitched, "viridis")]
    if obj is not None:
        diff = np.abs(result["object"] - obj)
        diff[result["coverage"] < 1.0] = np.nan  # uncovered: not stitched, not a difference
        panels = [("original |objectGuess|", np.abs(obj), "viridis")] + panels
        panels.append(("|stitched - original| (covered pixels)", diff, "magma"))
    panels.append(("coverage (sum of bilinear weights)", result["coverage"], "cividis"))
    H, W = result["object"].shape
    width = 4.2
    fig = _new_figure((width * len(panels), width * H / max(W, 1) + 1.0))
    axes = fig.subplots(1, len(panels))
    for ax, (title, image, cmap) in zip(np.atleast_1d(axes), panels):
        same = obj is not None and cmap == "viridis"  # original and stitched on one colour scale
        limits = dict(vmin=float(np.min(np.abs(obj))), vmax=float(np.max(np.abs(obj)))) if same else {}
        shown = ax.imshow(image, cmap=cmap, interpolation="nearest", **limits)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("x (pixels)")
        ax.set_ylabel("y (pixels)")
        fig.colorbar(shown, ax=ax, shrink=0.8)
    fig.suptitle(f"stitch of {source}: place(Y) / (place(1) + eps)", fontsize=10)
    return fig
