"""Training-step benchmark: ``python -m ptycho.bench --training`` (or ``python -m ptycho.bench.training``).

One row per windowed ``ptycho.tf_helper`` operation of PtychoPINN's training
step, against PtychoPINN's dense formulation of the same operation at a
training-sized batch (default 16 groups x gridsize 2 = 64 patches, N = 64,
padded size 128):

- ``extract_patches_position``: dense = the padded object repeated per
  patch, the whole frame translated by each offset, the centre N x N kept;
- ``_reassemble_patches_position_real``: dense = each patch zero-padded to
  the padded size, the whole frame translated by minus its recentred
  offset, the channels summed;
- ``_reassemble_position_batched``: the same, every patch summed into one
  canvas (PtychoPINN's regime for 64 patches or more);
- ``reassemble_patches``: the model's reassembly layer (real and imaginary
  parts over the centre-mask normaliser), dense: PtychoPINN's four calls.

The dense formulation translates whole frames with this package's engine in
the same (compiled) evaluation order, so the results agree bit for bit where
PtychoPINN's sums are sequential and ``max|diff|`` measures the rest; the
ratio is the windowing alone.  Each operation runs inside ``tf.function``
(as in a training step), warm: forward, and forward + backward (the
gradient of a real loss with respect to the patches or the object).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

__all__ = ["main", "run", "format_table"]


def _inputs(groups: int, gridsize: int, N: int, padded: int, seed: int = 0) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    c = gridsize**2
    jitter = (padded - N) / 4
    return {
        "object": (rng.standard_normal((groups, padded, padded, 1)) + 1j * rng.standard_normal((groups, padded, padded, 1))).astype(np.complex64),
        "patches": (rng.standard_normal((groups, N, N, c)) + 1j * rng.standard_normal((groups, N, N, c))).astype(np.complex64),
        "offsets": rng.uniform(-jitter, jitter, (groups, 1, 2, c)).astype(np.float32),
    }


def _dense_ops(N: int, gridsize: int, padded: int) -> Dict[str, Callable]:
    """PtychoPINN's dense formulations, written with whole-frame translations."""
    import tensorflow as tf

    from ptycho import tf_helper as th

    c = gridsize**2

    def translated(images: Any, t: Any) -> Any:
        return th.translate(images, t)  # the whole frame, compiled order

    def recentred(offsets: Any) -> Any:
        flat = tf.cast(th.flatten_offsets(offsets), tf.float32)
        return flat - tf.reduce_mean(flat, axis=0, keepdims=True)

    def extract(obj: Any, offsets: Any) -> Any:
        flat = th._channel_to_flat(tf.repeat(obj, c, axis=3))
        full = translated(flat, th.flatten_offsets(offsets))
        clip = (padded - N) // 2
        return full[:, clip : padded - clip, clip : padded - clip, :]

    def frames(patches: Any, offsets: Any) -> Any:
        big = th.pad_patches(th._channel_to_flat(patches), padded, N=N)
        return translated(big, -recentred(offsets))

    def per_group(patches: Any, offsets: Any) -> Any:
        return tf.reduce_sum(th._flat_to_channel(frames(patches, offsets), gridsize=gridsize), axis=3, keepdims=True)

    def one_canvas(patches: Any, offsets: Any) -> Any:
        return tf.reduce_sum(frames(patches, offsets), axis=0, keepdims=True)

    def model_layer(patches: Any, offsets: Any) -> Any:
        def fn(part: Any) -> Any:
            return one_canvas(part, offsets) if patches.shape[0] * c >= 64 else per_group(part, offsets)

        def norm(part: Any) -> Any:
            return fn(th.mk_centermask(part, N, c)) + 0.001

        re, im = tf.math.real(patches), tf.math.imag(patches)
        return tf.complex(fn(re) / norm(re), fn(im) / norm(im))

    return {"extract": extract, "per_group": per_group, "one_canvas": one_canvas, "model_layer": model_layer}


def _windowed_ops(N: int, gridsize: int, padded: int) -> Dict[str, Callable]:
    from ptycho import tf_helper as th

    def model_layer(patches: Any, offsets: Any) -> Any:
        fn = th.mk_reassemble_position_batched_real(offsets, batch_size=64, padded_size=padded, N=N, gridsize=gridsize)
        return th.reassemble_patches(patches, fn_reassemble_real=fn, N=N, gridsize=gridsize)

    return {
        "extract": lambda obj, off: th.extract_patches_position(obj, off, 0.0, N=N, gridsize=gridsize),
        "per_group": lambda p, off: th._reassemble_patches_position_real(p, off, padded_size=padded),
        # one chunk of every patch: PtychoPINN's one-canvas regime (64 or more patches), whatever the size
        "one_canvas": lambda p, off: th._reassemble_position_batched(
            p, off, padded, batch_size=int(p.shape[0]) * int(p.shape[3]), N=N, gridsize=gridsize
        ),
        "model_layer": model_layer,
    }


#: (row key, tf_helper name, input key)
OPERATIONS = (
    ("extract", "extract_patches_position", "object"),
    ("per_group", "_reassemble_patches_position_real", "patches"),
    ("one_canvas", "_reassemble_position_batched (one canvas)", "patches"),
    ("model_layer", "reassemble_patches (model layer)", "patches"),
)


def _median_time(call: Callable[[], Any], repeats: int) -> float:
    call()  # warm: traced and compiled
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = call()
        for x in out if isinstance(out, (tuple, list)) else (out,):
            x.numpy()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(groups: int = 16, gridsize: int = 2, N: int = 64, padded: int = 128, repeats: int = 10) -> List[Dict[str, Any]]:
    """The rows: per operation, seconds (forward, forward+backward) dense and windowed, ratios, max|diff|."""
    import tensorflow as tf

    from ptycho import params

    saved = dict(params.cfg)
    params.cfg.update({"N": N, "gridsize": gridsize})  # PtychoPINN's functions read these
    try:
        return _rows(groups, gridsize, N, padded, repeats)
    finally:
        params.cfg.clear()
        params.cfg.update(saved)


def _rows(groups: int, gridsize: int, N: int, padded: int, repeats: int) -> List[Dict[str, Any]]:
    import tensorflow as tf

    data = _inputs(groups, gridsize, N, padded)
    dense, windowed = _dense_ops(N, gridsize, padded), _windowed_ops(N, gridsize, padded)
    offsets = tf.constant(data["offsets"])
    rows = []
    for key, name, input_key in OPERATIONS:
        x = tf.Variable(data[input_key])
        row: Dict[str, Any] = {"operation": name, "patches": groups * gridsize**2}
        results = {}
        for label, ops in (("dense", dense), ("windowed", windowed)):
            op = ops[key]
            forward = tf.function(lambda: op(x, offsets), autograph=False)

            def grad(op: Callable = op) -> Any:
                with tf.GradientTape() as tape:
                    loss = tf.reduce_sum(tf.abs(op(x, offsets)) ** 2)
                return tape.gradient(loss, x)

            backward = tf.function(grad, autograph=False)
            results[label] = (forward().numpy(), backward().numpy())
            row[f"{label}_forward_s"] = _median_time(forward, repeats)
            row[f"{label}_backward_s"] = _median_time(backward, repeats)
        (fd, gd), (fw, gw) = results["dense"], results["windowed"]
        row["shape"] = list(fw.shape)
        row["max_diff"] = float(np.max(np.abs(fw - fd))) if fw.shape == fd.shape else float("nan")
        row["max_ref"] = float(np.max(np.abs(fd)))
        row["grad_max_diff"] = float(np.max(np.abs(gw - gd)))
        row["grad_max_ref"] = float(np.max(np.abs(gd)))
        row["forward_ratio"] = row["dense_forward_s"] / row["windowed_forward_s"]
        row["backward_ratio"] = row["dense_backward_s"] / row["windowed_backward_s"]
        rows.append(row)
    return rows


def format_table(rows: Sequence[Dict[str, Any]]) -> str:
    head = (f"{'operation':<44} {'dense fwd':>10} {'windowed':>10} {'ratio':>6}  {'dense f+b':>10} {'windowed':>10} "
            f"{'ratio':>6}  {'max|diff|':>9} {'grad max|diff|':>14}")
    from ptycho.bench.report import ruled

    return ruled(head, [
        f"{r['operation']:<44} {r['dense_forward_s'] * 1e3:>8.2f}ms {r['windowed_forward_s'] * 1e3:>8.2f}ms "
        f"{r['forward_ratio']:>5.1f}x  {r['dense_backward_s'] * 1e3:>8.2f}ms {r['windowed_backward_s'] * 1e3:>8.2f}ms "
        f"{r['backward_ratio']:>5.1f}x  {r['max_diff']:>9.2e} {r['grad_max_diff']:>7.2e} (of {r['grad_max_ref']:.1e})"
        for r in rows
    ])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ptycho.bench --training", description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=16, help="groups per batch (default 16)")
    parser.add_argument("--gridsize", type=int, default=2, help="patches per group = gridsize**2 (default 2)")
    parser.add_argument("--N", type=int, default=64, help="patch side (default 64)")
    parser.add_argument("--padded-size", type=int, default=128, help="padded object side (default 128)")
    parser.add_argument("--repeats", type=int, default=10, help="timed warm calls per row; the median is shown (default 10)")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for flag, value in (("--groups", args.groups), ("--gridsize", args.gridsize), ("--N", args.N),
                        ("--padded-size", args.padded_size), ("--repeats", args.repeats)):
        if value < 1:
            parser.error(f"{flag} must be a positive integer, got {value}")
    if args.padded_size < args.N:
        parser.error(f"--padded-size must be at least --N = {args.N}, got {args.padded_size}")
    rows = run(args.groups, args.gridsize, args.N, args.padded_size, args.repeats)
    print(f"training step ops: {args.groups} groups x {args.gridsize ** 2} patches, N = {args.N}, "
          f"padded size {args.padded_size}; median of {args.repeats} warm calls inside tf.function")
    print(format_table(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
