"""Bad input gets a clear error; valid edge cases stay valid.

The table :data:`BAD_INPUTS` lists every bad input tried at the public entry
points.  Each case must raise exactly the exception it names, with a one-line
message that names the argument and shows what was received (the case's
``needles``).  ``docs/BAD_INPUTS.md`` is generated from the same table, with
the exact message of each case; :func:`test_bad_inputs_doc_is_current` fails
when the committed file is stale.  Regenerate it with::

    python -m tests.test_validation            # writes docs/BAD_INPUTS.md
    python -m tests.test_validation --check    # exit 1 if it is stale
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import importlib.util
import io
import pathlib
import shutil
import sys
import tempfile
from typing import Any, Callable, Iterator

import numpy as np
import pytest

from ptycho.errors import InputError, InputTypeError
from tests.helpers import assert_close, random_object, scipy_patches

DOC_PATH = pathlib.Path(__file__).resolve().parents[1] / "docs" / "BAD_INPUTS.md"

# ---------------------------------------------------------------------------
# Inputs shared by the cases: small, deterministic.
# ---------------------------------------------------------------------------
OBJ = random_object((8, 8), np.complex64, seed=6)
POS = np.array([[3.5, 2.25], [1.0, 6.0]], dtype=np.float64)
POS4 = np.array([[3.5, 2.25], [1.0, 6.0], [0.0, 0.0], [7.0, 7.0]], dtype=np.float64)
B = 3  # groups for get_image_patches cases
GLOBAL = np.full((B, 1, 2, 1), 3.0, dtype=np.float64)
LOCAL4 = np.zeros((B, 1, 2, 4), dtype=np.float64)  # gridsize 2


def _with(array: np.ndarray, index: tuple, value: Any) -> np.ndarray:
    out = np.array(array, dtype=np.result_type(array, np.asarray(value)))
    out[index] = value
    return out


@contextlib.contextmanager
def _missing(package: str) -> Iterator[None]:
    """Pretend ``package`` is not installed: block its import, drop our backend module.

    ``sys.modules[name] = None`` is Python's own way to make ``import name``
    fail; the backend module that imported it is removed so that
    :func:`ptycho.backends.get_backend` has to look for the package again.
    """
    backend_module = {"jax": "ptycho.backends._jax", "tensorflow": "ptycho.backends._tensorflow"}[package]
    saved = {name: sys.modules.get(name) for name in (package, backend_module)}
    sys.modules[package] = None  # type: ignore[assignment]
    sys.modules.pop(backend_module, None)
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


# ---------------------------------------------------------------------------
# Entry points, imported on demand so that the table can be built without TF.
# ---------------------------------------------------------------------------
def _extract(image: Any = OBJ, positions: Any = POS, N: Any = 4, **kwargs: Any) -> Any:
    from ptycho.backends import extract_patches

    return extract_patches(image, positions, N, **kwargs)


def _extract_grouped(image: Any = OBJ, positions: Any = POS4, N: Any = 4, **kwargs: Any) -> Any:
    from ptycho.backends import extract_patches_grouped

    return extract_patches_grouped(image, positions, N, **kwargs)


def _extract_missing(backend: str) -> Any:
    with _missing(backend):
        return _extract(backend=backend)


def _get_backend(name: Any) -> Any:
    from ptycho.backends import get_backend

    return get_backend(name)


def _get_backend_missing(name: str) -> Any:
    with _missing(name):
        return _get_backend(name)


def _patches(
    gt_image: Any = OBJ, global_offsets: Any = GLOBAL, local_offsets: Any = LOCAL4, **kwargs: Any
) -> Any:
    from ptycho.raw_data import get_image_patches

    kwargs.setdefault("N", 4)
    if "config" not in kwargs:
        kwargs.setdefault("gridsize", 2)
    return get_image_patches(gt_image, global_offsets, local_offsets, **kwargs)


def _patches_config(**model: Any) -> Any:
    from ptycho.config.config import ModelConfig

    return _patches(config=ModelConfig(**{"N": 4, "gridsize": 2, **model}), N=None)


def _patches_params(key: str, value: Any) -> Any:
    """get_image_patches with a bad value in the legacy ``ptycho.params`` dict."""
    from ptycho import params

    saved = dict(params.cfg)
    params.set(key, value)
    try:
        return _patches(N=None, gridsize=None)
    finally:
        params.cfg.clear()
        params.cfg.update(saved)


def _with_params(values: dict, call: Callable[[], Any]) -> Any:
    """``call()`` with ``values`` written into ``ptycho.params.cfg``; the dict and its seal restored after."""
    from ptycho import params

    saved, sealed = dict(params.cfg), params.is_sealed()
    params.cfg.update(values)
    try:
        return call()
    finally:
        params.cfg.clear()
        params.cfg.update(saved)
        (params.seal if sealed else params.unseal)()


def _image4(dtype: Any = np.complex64) -> np.ndarray:
    source = OBJ if np.dtype(dtype).kind == "c" else OBJ.real
    return source.astype(dtype)[None, :, :, None]


def _translate_xla(images: Any = None, translations: Any = None, **kwargs: Any) -> Any:
    from ptycho.projective_warp_xla import translate_xla

    images = _image4() if images is None else images
    translations = np.array([[1.5, 2.0]]) if translations is None else translations
    return translate_xla(images, translations, **kwargs)


def _translate(images: Any = None, offsets: Any = None, **kwargs: Any) -> Any:
    from ptycho.tf_helper import translate

    images = _image4() if images is None else images
    offsets = np.array([[1.5, 2.0]]) if offsets is None else offsets
    return translate(images, offsets, **kwargs)


def _pad(imgs: Any = None, size: Any = 2) -> Any:
    from ptycho.tf_helper import pad

    return pad(_image4() if imgs is None else imgs, size)


def _translate_xla_none(which: str) -> Any:
    from ptycho.projective_warp_xla import translate_xla

    if which == "images":
        return translate_xla(None, np.array([[1.0, 2.0]]))
    return translate_xla(_image4(), None)


# ---------------------------------------------------------------------------
# Files and the command line: every case works in its own fresh folder under
# one temporary directory, shown as <tmp> in the generated document.
# ---------------------------------------------------------------------------
_WORK: list = []


def _workdir() -> pathlib.Path:
    if not _WORK:
        path = pathlib.Path(tempfile.mkdtemp(prefix="ptycho-bad-inputs-"))
        atexit.register(shutil.rmtree, path, True)
        _WORK.append(path)
    return _WORK[0]


def _case_dir(name: str) -> pathlib.Path:
    folder = _workdir() / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    return folder


M = 12  # scan positions of the small dataset


def _scan_fields(**changes: Any) -> dict:
    """The fields of a small valid PtychoPINN dataset; ``changes`` replace (None drops) fields."""
    rng = np.random.default_rng(12)
    fields = {
        "xcoords": rng.uniform(6.0, 26.0, M),
        "ycoords": rng.uniform(6.0, 26.0, M),
        "diff3d": rng.random((M, 8, 8)).astype(np.float32),
        "probeGuess": np.ones((8, 8), np.complex64),
        "scan_index": np.zeros(M, np.int64),
        "objectGuess": random_object((32, 32), np.complex64, seed=3),
    }
    for key, value in changes.items():
        if value is None:
            fields.pop(key, None)
        else:
            fields[key] = value
    return fields


def _raw(**changes: Any) -> Any:
    from ptycho.dataset import RawData

    fields = _scan_fields(**changes)
    return RawData.from_coords_without_pc(
        fields["xcoords"], fields["ycoords"], fields["diff3d"], fields["probeGuess"],
        fields["scan_index"], fields.get("objectGuess"),
    )


def _raw_with_none(field: str) -> Any:
    """``RawData(...)`` with one argument None."""
    from ptycho.dataset import RawData

    f = _scan_fields()
    args = {
        "xcoords": f["xcoords"], "ycoords": f["ycoords"], "xcoords_start": f["xcoords"],
        "ycoords_start": f["ycoords"], "diff3d": f["diff3d"], "probeGuess": f["probeGuess"],
        "scan_index": f["scan_index"], "objectGuess": f["objectGuess"],
    }
    args[field] = None
    return RawData(**args)


def _savez(path: pathlib.Path, **arrays: Any) -> pathlib.Path:
    with open(path, "wb") as fh:  # a file object: np.savez keeps the name as given
        np.savez(fh, **arrays)
    return path


def _scan_bytes() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **_scan_fields())
    return buffer.getvalue()


def _make_input(folder: pathlib.Path, kind: str) -> pathlib.Path:
    """An input file of the given kind of damage, in ``folder``."""
    path = folder / "scan.npz"
    if kind == "absent":
        return path
    if kind == "directory":
        path.mkdir()
    elif kind == "text":
        path.write_bytes(b"xcoords,ycoords\n1,2\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        data = _scan_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "corrupt":
        data = bytearray(_scan_bytes())
        middle = len(data) // 3
        data[middle : middle + 64] = bytes(64)  # zeros inside a member: its CRC fails
        path.write_bytes(bytes(data))
    elif kind == "npy":
        path = folder / "scan.npy"
        np.save(path, np.zeros(3))
    elif kind == "pickled":
        _savez(path, **_scan_fields(xcoords=np.array([{"x": 1.0}] * M, dtype=object)))
    elif kind == "valid":
        _savez(path, **_scan_fields())
    elif kind == "no-object":
        _savez(path, **_scan_fields(objectGuess=None))
    else:
        raise ValueError(kind)
    return path


def _from_file(kind: str, **changes: Any) -> Any:
    from ptycho.dataset import RawData

    folder = _case_dir(f"from-file-{kind}")
    if changes:
        path = _savez(folder / "scan.npz", **_scan_fields(**changes))
    else:
        path = _make_input(folder, kind)
    return RawData.from_file(path)


def _to_existing_file() -> Any:
    path = _make_input(_case_dir("to-file-existing"), "valid")
    return _raw().to_file(path)


def _load_grouped_bad(kind: str) -> Any:
    from ptycho.dataset import load_grouped, save_grouped

    folder = _case_dir(f"load-grouped-{kind}")
    if kind == "dataset":
        return load_grouped(_make_input(folder, "valid"))
    grouped = _raw().generate_grouped_data(4, nsamples=None, gridsize=2, backend="numpy", seed=0)
    grouped["Y"] = grouped["Y"][:-1]  # one group short
    path = folder / "grouped.npz"
    save_grouped(path, grouped)
    return load_grouped(path)


class CommandFailed(Exception):
    """A ``ptycho-patches`` run that exited non-zero: its status, last stderr line, side effects."""

    def __init__(self, status: int, message: str, stderr: str, changed: list) -> None:
        super().__init__(message)
        self.status = status
        self.stderr = stderr
        self.changed = changed


def _snapshot(folder: pathlib.Path) -> dict:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else b"<dir>") for p in sorted(folder.rglob("*"))}


def _cli(name: str, make: Callable[[pathlib.Path], list]) -> int:
    """Run ``ptycho-patches`` in-process with the argv ``make(folder)`` returns.

    A failing run raises :class:`CommandFailed`, recording whether any file in
    the folder appeared, vanished or changed (a partial or replaced output).
    """
    from ptycho.cli import main

    folder = _case_dir(f"cli-{name}")
    argv = [str(a) for a in make(folder)]
    before = _snapshot(folder)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(argv)
    after = _snapshot(folder)
    if status == 0:
        return status
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    lines = err.getvalue().strip().splitlines()
    raise CommandFailed(status, lines[-1] if lines else "", err.getvalue(), changed)


def _existing(folder: pathlib.Path, name: str) -> pathlib.Path:
    path = folder / name
    path.write_bytes(b"an earlier result that must survive")
    return path


# ---------------------------------------------------------------------------
# The table of bad inputs.
# ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class BadInput:
    """One bad input: the call, the exception it must raise, what the message must say.

    ``needles`` are substrings the message must contain: the argument's name
    first, then a piece of the received value (and of the expectation where
    the name alone does not say it).  ``needs`` lists the libraries the call
    imports (the case is skipped, or fails when demanded, without them).
    """

    id: str
    entry: str
    bad: str
    call: Callable[[], Any]
    exc: type
    needles: tuple
    needs: tuple = ()


def _cases() -> list[BadInput]:
    c: list[BadInput] = []

    def add(id_: str, entry: str, bad: str, call: Callable[[], Any], exc: type, *needles: str, needs: tuple = ()) -> None:
        c.append(BadInput(id_, entry, bad, call, exc, tuple(needles), needs))

    # -- extract_patches / extract_patches_grouped (NumPy unless said) -------
    ep = "extract_patches"
    add("ep-image-none", ep, "image=None", lambda: _extract(image=None), TypeError, "image", "2-D", "None")
    add("ep-image-1d", ep, "image of shape (8,)", lambda: _extract(image=OBJ[0]), ValueError, "image", "2-D", "(8,)")
    add("ep-image-3d", ep, "image of shape (2, 8, 8)", lambda: _extract(image=np.stack([OBJ, OBJ])), ValueError, "image", "(2, 8, 8)")
    add("ep-image-0d", ep, "image = np.complex64(1) (0-d)", lambda: _extract(image=np.complex64(1)), ValueError, "image", "shape ()")
    add("ep-image-empty", ep, "image of shape (0, 8)", lambda: _extract(image=np.zeros((0, 8), np.complex64)), ValueError, "image", "empty", "(0, 8)")
    add("ep-image-bool", ep, "boolean image (a mask)", lambda: _extract(image=OBJ.real > 0), TypeError, "image", "numeric", "bool")
    add("ep-image-str", ep, "image of strings, dtype <U1", lambda: _extract(image=np.full((8, 8), "a")), TypeError, "image", "<U1")
    add("ep-image-object", ep, "image of dtype object", lambda: _extract(image=OBJ.astype(object)), TypeError, "image", "object")
    add("ep-image-pystr", ep, "image='abc'", lambda: _extract(image="abc"), TypeError, "image", "str")
    add("ep-pos-none", ep, "positions=None", lambda: _extract(positions=None), TypeError, "positions", "(P, 2)", "None")
    add("ep-pos-3cols", ep, "positions of shape (2, 3)", lambda: _extract(positions=np.zeros((2, 3))), ValueError, "positions", "(P, 2)", "(2, 3)")
    add("ep-pos-1d", ep, "positions of shape (2,) (one point, no batch axis)", lambda: _extract(positions=np.array([1.0, 2.0])), ValueError, "positions", "(P, 2)", "(2,)")
    add("ep-pos-3d", ep, "positions of shape (2, 2, 1)", lambda: _extract(positions=POS[:, :, None]), ValueError, "positions", "(2, 2, 1)")
    add("ep-pos-transposed", ep, "positions of shape (2, 4) (transposed (P, 2))", lambda: _extract(positions=POS4.T), ValueError, "positions", "(2, 4)")
    add("ep-pos-complex", ep, "complex positions", lambda: _extract(positions=POS + 0j), TypeError, "positions", "real", "complex128")
    add("ep-pos-bool", ep, "boolean positions", lambda: _extract(positions=POS > 2), TypeError, "positions", "bool")
    add("ep-pos-str", ep, "positions of strings", lambda: _extract(positions=np.array([["1", "2"]])), TypeError, "positions", "<U1")
    add("ep-pos-ragged", ep, "positions=[[1, 2], [3]] (ragged)", lambda: _extract(positions=[[1, 2], [3]]), TypeError, "positions", "[[1, 2], [3]]")
    add("ep-pos-nan", ep, "a NaN position", lambda: _extract(positions=_with(POS, (1, 0), np.nan)), ValueError, "positions", "finite", "nan", "(1, 0)")
    add("ep-pos-inf", ep, "an infinite position", lambda: _extract(positions=_with(POS, (0, 1), -np.inf)), ValueError, "positions", "finite", "-inf", "(0, 1)")
    add("ep-pos-f32-overflow", ep, "position 1e39 (finite in float64, infinite in float32) with a complex64 image", lambda: _extract(positions=_with(POS, (0, 0), 1e39)), ValueError, "positions", "float32", "1e+39")
    add("ep-n-zero", ep, "N=0", lambda: _extract(N=0), ValueError, "N", "positive integer", "0")
    add("ep-n-negative", ep, "N=-3", lambda: _extract(N=-3), ValueError, "N", "-3")
    add("ep-n-float", ep, "N=4.0", lambda: _extract(N=4.0), TypeError, "N", "float 4.0")
    add("ep-n-bool", ep, "N=True", lambda: _extract(N=True), TypeError, "N", "bool True")
    add("ep-n-str", ep, "N='4'", lambda: _extract(N="4"), TypeError, "N", "str '4'")
    add("ep-n-none", ep, "N=None", lambda: _extract(N=None), TypeError, "N", "None")
    add("ep-n-array", ep, "N=np.array([4, 4])", lambda: _extract(N=np.array([4, 4])), TypeError, "N", "(2,)")
    add("ep-backend-unknown", ep, "backend='torch'", lambda: _extract(backend="torch"), ValueError, "backend must be one of", "numpy, jax, tensorflow", "'torch'")
    add("ep-backend-type", ep, "backend=3", lambda: _extract(backend=3), TypeError, "backend", "int")
    add("ep-backend-missing-jax", ep, "backend='jax' where JAX is not installed", lambda: _extract_missing("jax"), ImportError, "'jax'", "ptycho[jax]", needs=("jax",))
    add("ep-backend-missing-tf", ep, "backend='tensorflow' where TensorFlow is not installed", lambda: _extract_missing("tensorflow"), ImportError, "'tensorflow'", "ptycho[tf]", needs=("tensorflow",))
    add("ep-interpolation", ep, "interpolation='cubic'", lambda: _extract(interpolation="cubic"), ValueError, "interpolation", "bilinear", "'cubic'")
    add("ep-padding-negative", ep, "padding=-1", lambda: _extract(padding=-1), ValueError, "padding", "-1")
    add("ep-padding-float", ep, "padding=1.5", lambda: _extract(padding=1.5), TypeError, "padding", "float 1.5")
    for name, needs in (("jax", ("jax",)), ("tensorflow", ("tensorflow",))):
        add(f"ep-{name}-pos-nan", f"{ep}(backend='{name}')", "a NaN position", lambda n=name: _extract(positions=_with(POS, (1, 1), np.nan), backend=n), ValueError, "positions", "nan", needs=needs)
        add(f"ep-{name}-n-zero", f"{ep}(backend='{name}')", "N=0", lambda n=name: _extract(N=0, backend=n), ValueError, "N", "0", needs=needs)
        add(f"ep-{name}-image-bool", f"{ep}(backend='{name}')", "boolean image", lambda n=name: _extract(image=OBJ.real > 0, backend=n), TypeError, "image", "bool", needs=needs)
        add(f"ep-{name}-pos-3cols", f"{ep}(backend='{name}')", "positions of shape (2, 3)", lambda n=name: _extract(positions=np.zeros((2, 3)), backend=n), ValueError, "positions", "(2, 3)", needs=needs)
    eg = "extract_patches_grouped"
    add("eg-channels-zero", eg, "channels=0", lambda: _extract_grouped(channels=0), ValueError, "channels", "0")
    add("eg-channels-bool", eg, "channels=True", lambda: _extract_grouped(channels=True), TypeError, "channels", "bool")
    add("eg-channels-indivisible", eg, "4 positions with channels=3", lambda: _extract_grouped(channels=3), ValueError, "positions", "c = 3", "4 positions")

    gb = "get_backend"
    add("gb-unknown", gb, "name='cupy'", lambda: _get_backend("cupy"), ValueError, "backend must be one of", "available here", "'cupy'")
    add("gb-none", gb, "name=None", lambda: _get_backend(None), TypeError, "backend", "NoneType")
    add("gb-missing-jax", gb, "name='jax' where JAX is not installed", lambda: _get_backend_missing("jax"), ImportError, "'jax'", "pip install", needs=("jax",))

    # -- get_image_patches (TensorFlow) ------------------------------------------
    gp = "get_image_patches"
    tf = ("tensorflow",)
    add("gp-image-none", gp, "gt_image=None", lambda: _patches(gt_image=None), TypeError, "gt_image", "None", needs=tf)
    add("gp-image-3d", gp, "gt_image of shape (2, 8, 8)", lambda: _patches(gt_image=np.stack([OBJ, OBJ])), ValueError, "gt_image", "(2, 8, 8)", needs=tf)
    add("gp-image-4d-channels", gp, "gt_image of shape (1, 8, 8, 2)", lambda: _patches(gt_image=np.stack([OBJ, OBJ], -1)[None]), ValueError, "gt_image", "(1, 8, 8, 2)", needs=tf)
    add("gp-image-empty", gp, "gt_image of shape (0, 8)", lambda: _patches(gt_image=np.zeros((0, 8))), ValueError, "gt_image", "(0, 8)", needs=tf)
    add("gp-image-bool", gp, "boolean gt_image", lambda: _patches(gt_image=OBJ.real > 0), TypeError, "gt_image", "bool", needs=tf)
    add("gp-image-str", gp, "gt_image of strings", lambda: _patches(gt_image=np.full((8, 8), "x")), TypeError, "gt_image", "<U1", needs=tf)
    add("gp-global-none", gp, "global_offsets=None", lambda: _patches(global_offsets=None), TypeError, "global_offsets", "None", needs=tf)
    add("gp-global-2d", gp, "global_offsets of shape (3, 2)", lambda: _patches(global_offsets=GLOBAL[:, 0, :, 0]), ValueError, "global_offsets", "(B, 1, 2, c)", "(3, 2)", needs=tf)
    add("gp-global-axis2", gp, "global_offsets of shape (3, 1, 3, 1) (axis 2 must hold (x, y))", lambda: _patches(global_offsets=np.zeros((B, 1, 3, 1))), ValueError, "global_offsets", "axis 2", "(3, 1, 3, 1)", needs=tf)
    add("gp-global-axis1", gp, "global_offsets of shape (3, 2, 2, 1)", lambda: _patches(global_offsets=np.zeros((B, 2, 2, 1))), ValueError, "global_offsets", "(3, 2, 2, 1)", needs=tf)
    add("gp-global-xy-last", gp, "global_offsets of shape (3, 1, 1, 2) ((x, y) on the last axis)", lambda: _patches(global_offsets=np.zeros((B, 1, 1, 2))), ValueError, "global_offsets", "(3, 1, 1, 2)", needs=tf)
    add("gp-local-channels-low", gp, "local_offsets with 1 channel, gridsize=2", lambda: _patches(local_offsets=LOCAL4[..., :1]), ValueError, "local_offsets", "gridsize**2 = 4", "(3, 1, 2, 1)", needs=tf)
    add("gp-local-channels-high", gp, "local_offsets with 4 channels, gridsize=3", lambda: _patches(gridsize=3), ValueError, "local_offsets", "gridsize**2 = 9", "(3, 1, 2, 4)", needs=tf)
    add("gp-global-channels", gp, "global_offsets with 3 channels, gridsize=2", lambda: _patches(global_offsets=np.zeros((B, 1, 2, 3))), ValueError, "global_offsets", "1 or c", "(3, 1, 2, 3)", needs=tf)
    add("gp-batch-mismatch", gp, "global_offsets with B=2, local_offsets with B=3", lambda: _patches(global_offsets=GLOBAL[:2]), ValueError, "global_offsets", "local_offsets", "2 and 3", needs=tf)
    add("gp-global-nan", gp, "a NaN in global_offsets", lambda: _patches(global_offsets=_with(GLOBAL, (1, 0, 1, 0), np.nan)), ValueError, "global_offsets", "finite", "nan", "(1, 0, 1, 0)", needs=tf)
    add("gp-local-inf", gp, "an inf in local_offsets", lambda: _patches(local_offsets=_with(LOCAL4, (2, 0, 0, 3), np.inf)), ValueError, "local_offsets", "finite", "inf", "(2, 0, 0, 3)", needs=tf)
    add("gp-global-f32-overflow", gp, "global_offsets 1e39 with a complex64 object", lambda: _patches(global_offsets=_with(GLOBAL, (0, 0, 0, 0), 1e39)), ValueError, "global_offsets", "float32", "1e+39", needs=tf)
    add("gp-sum-overflow", gp, "global 1e308 + local 1e308 (sum overflows float64; full_precision=True)", lambda: _patches(gt_image=OBJ.astype(np.complex128), global_offsets=_with(GLOBAL, (0, 0, 0, 0), 1e308), local_offsets=_with(LOCAL4, (0, 0, 0, 0), 1e308), full_precision=True), ValueError, "global_offsets + local_offsets", "finite", "inf", needs=tf)
    add("gp-local-complex", gp, "complex local_offsets", lambda: _patches(local_offsets=LOCAL4 + 0j), TypeError, "local_offsets", "real", "complex128", needs=tf)
    add("gp-global-str", gp, "global_offsets of strings", lambda: _patches(global_offsets=np.full((B, 1, 2, 1), "1")), TypeError, "global_offsets", "<U1", needs=tf)
    add("gp-local-bool", gp, "boolean local_offsets", lambda: _patches(local_offsets=LOCAL4 > 0), TypeError, "local_offsets", "bool", needs=tf)
    add("gp-n-zero", gp, "N=0", lambda: _patches(N=0), ValueError, "N", "0", needs=tf)
    add("gp-n-float", gp, "N=2.5", lambda: _patches(N=2.5), TypeError, "N", "float 2.5", needs=tf)
    add("gp-n-bool", gp, "N=True", lambda: _patches(N=True), TypeError, "N", "bool True", needs=tf)
    add("gp-gridsize-zero", gp, "gridsize=0", lambda: _patches(gridsize=0), ValueError, "gridsize", "0", needs=tf)
    add("gp-gridsize-float", gp, "gridsize=2.0", lambda: _patches(gridsize=2.0), TypeError, "gridsize", "float 2.0", needs=tf)
    add("gp-gridsize-str", gp, "gridsize='2'", lambda: _patches(gridsize="2"), TypeError, "gridsize", "str '2'", needs=tf)
    add("gp-config-str", gp, "config='model.yaml'", lambda: _patches(config="model.yaml"), TypeError, "config", "str", needs=tf)
    add("gp-config-dict", gp, "config={'N': 4}", lambda: _patches(config={"N": 4}), TypeError, "config", "dict", needs=tf)
    add("gp-config-n", gp, "ModelConfig(N=0)", lambda: _patches_config(N=0), ValueError, "N", "0", needs=tf)
    add("gp-config-batch-zero", gp, "ModelConfig(patch_extraction_batch_size=0)", lambda: _patches_config(patch_extraction_batch_size=0), ValueError, "patch_extraction_batch_size", "0", needs=tf)
    add("gp-config-batch-float", gp, "ModelConfig(patch_extraction_batch_size=2.5)", lambda: _patches_config(patch_extraction_batch_size=2.5), TypeError, "patch_extraction_batch_size", "float 2.5", needs=tf)
    add("gp-config-batch-str", gp, "ModelConfig(patch_extraction_batch_size='big')", lambda: _patches_config(patch_extraction_batch_size="big"), TypeError, "patch_extraction_batch_size", "str 'big'", needs=tf)
    add("gp-config-batched-str", gp, "ModelConfig(use_batched_patch_extraction='no')", lambda: _patches_config(use_batched_patch_extraction="no"), TypeError, "use_batched_patch_extraction", "str 'no'", needs=tf)
    add("gp-params-n", gp, "params.cfg['N'] = -1 (legacy global config)", lambda: _patches_params("N", -1), ValueError, "N", "-1", needs=tf)
    add("gp-params-gridsize", gp, "params.cfg['gridsize'] = None", lambda: _patches_params("gridsize", None), TypeError, "gridsize", "None", needs=tf)

    # -- translate_xla / translate / pad (TensorFlow) ----------------------------
    tx = "translate_xla"
    add("tx-images-none", tx, "images=None", lambda: _translate_xla_none("images"), TypeError, "images", "None", needs=tf)
    add("tx-images-3d", tx, "images of shape (1, 8, 8)", lambda: _translate_xla(images=OBJ[None]), ValueError, "images", "4-D", "(1, 8, 8)", needs=tf)
    add("tx-images-object", tx, "images of dtype object", lambda: _translate_xla(images=_image4().astype(object)), TypeError, "images", "object", needs=tf)
    add("tx-images-bool", tx, "boolean images", lambda: _translate_xla(images=_image4(np.float32) > 0), TypeError, "images", "bool", needs=tf)
    add("tx-images-str", tx, "images of strings", lambda: _translate_xla(images=np.full((1, 2, 2, 1), "a")), TypeError, "images", "string", needs=tf)
    add("tx-images-empty", tx, "images of shape (1, 0, 4, 1)", lambda: _translate_xla(images=np.zeros((1, 0, 4, 1), np.complex64)), ValueError, "images", "(1, 0, 4, 1)", needs=tf)
    add("tx-trans-none", tx, "translations=None", lambda: _translate_xla_none("translations"), TypeError, "translations", "None", needs=tf)
    add("tx-trans-3cols", tx, "translations of shape (1, 3)", lambda: _translate_xla(translations=np.zeros((1, 3))), ValueError, "translations", "(batch, 2)", "(1, 3)", needs=tf)
    add("tx-trans-1d", tx, "translations of shape (2,)", lambda: _translate_xla(translations=np.array([1.0, 2.0])), ValueError, "translations", "(2,)", needs=tf)
    add("tx-trans-nan", tx, "a NaN translation", lambda: _translate_xla(translations=np.array([[np.nan, 2.0]])), ValueError, "translations", "finite", "nan", needs=tf)
    add("tx-trans-inf", tx, "an infinite translation", lambda: _translate_xla(translations=np.array([[1.0, np.inf]])), ValueError, "translations", "finite", "inf", needs=tf)
    add("tx-trans-f32-overflow", tx, "translation 1e39 with complex64 images", lambda: _translate_xla(translations=np.array([[1e39, 2.0]])), ValueError, "translations", "float32", "1e+39", needs=tf)
    add("tx-trans-complex", tx, "complex translations", lambda: _translate_xla(translations=np.array([[1 + 1j, 2.0]])), TypeError, "translations", "real", "complex128", needs=tf)
    add("tx-trans-bool", tx, "boolean translations", lambda: _translate_xla(translations=np.ones((1, 2), bool)), TypeError, "translations", "bool", needs=tf)
    add("tx-trans-str", tx, "translations of strings", lambda: _translate_xla(translations=[["a", "b"]]), TypeError, "translations", "string", needs=tf)
    add("tx-batch-mismatch", tx, "images batch 2 with 3 translations", lambda: _translate_xla(images=np.concatenate([_image4(), _image4()]), translations=np.zeros((3, 2))), ValueError, "images batch", "(2)", "(3)", needs=tf)
    add("tx-output-size-3", tx, "output_size=(2, 2, 2)", lambda: _translate_xla(output_size=(2, 2, 2)), ValueError, "output_size", "pair", "(2, 2, 2)", needs=tf)
    add("tx-output-size-int", tx, "output_size=4", lambda: _translate_xla(output_size=4), TypeError, "output_size", "pair", "int 4", needs=tf)
    add("tx-output-size-zero", tx, "output_size=(0, 4)", lambda: _translate_xla(output_size=(0, 4)), ValueError, "output_size[0]", "0", needs=tf)
    add("tx-output-size-float", tx, "output_size=(4, 4.5)", lambda: _translate_xla(output_size=(4, 4.5)), TypeError, "output_size[1]", "float 4.5", needs=tf)
    add("tx-interpolation", tx, "interpolation='bicubic'", lambda: _translate_xla(interpolation="bicubic"), ValueError, "interpolation", "'bicubic'", needs=tf)
    add("tx-channels-zero", tx, "channels=0", lambda: _translate_xla(channels=0), ValueError, "channels", "0", needs=tf)
    add("tx-channels-indivisible", tx, "3 translations with channels=2", lambda: _translate_xla(translations=np.zeros((3, 2)), channels=2), ValueError, "translations", "channels = 2", "3 translations", needs=tf)
    add("tx-channels-multichannel", tx, "channels=2 with 2-channel images", lambda: _translate_xla(images=np.concatenate([_image4(), _image4()], -1), translations=np.zeros((2, 2)), channels=2), ValueError, "channels", "2 channels", needs=tf)
    add("tx-use-jit-str", tx, "use_jit='no'", lambda: _translate_xla(use_jit="no"), TypeError, "use_jit", "str 'no'", needs=tf)
    add("tx-broadcast-indivisible", tx, "images batch 6 with 4 translations (not a multiple)", lambda: _translate_xla(images=np.concatenate([_image4()] * 6), translations=np.zeros((4, 2))), ValueError, "images batch", "(6)", "(4)", "multiple", needs=tf)

    def _warp(images: Any = None, transforms: Any = None, **kwargs: Any) -> Any:
        from ptycho.projective_warp_xla import projective_warp_xla

        images = _image4() if images is None else images
        transforms = np.eye(3)[None] if transforms is None else transforms
        return projective_warp_xla(images, transforms, **kwargs)

    def _warp_none(which: str) -> Any:
        from ptycho.projective_warp_xla import projective_warp_xla

        return projective_warp_xla(None, np.eye(3)[None]) if which == "images" else projective_warp_xla(_image4(), None)

    def _tfa(params: Any) -> Any:
        from ptycho.projective_warp_xla import tfa_params_to_3x3

        return tfa_params_to_3x3(params)

    def _backend_warp(images: Any = None, **kwargs: Any) -> Any:
        from ptycho.backends import projective_warp

        return projective_warp(_image4() if images is None else images, np.eye(3)[None], **kwargs)

    pw = "projective_warp_xla"
    add("pw-images-none", pw, "images=None", lambda: _warp_none("images"), TypeError, "images", "None", needs=tf)
    add("pw-images-3d", pw, "images of shape (1, 8, 8)", lambda: _warp(images=OBJ[None]), ValueError, "images", "4-D", "(1, 8, 8)", needs=tf)
    add("pw-images-bool", pw, "boolean images", lambda: _warp(images=_image4(np.float32) > 0), TypeError, "images", "bool", needs=tf)
    add("pw-transforms-none", pw, "transforms=None", lambda: _warp_none("transforms"), TypeError, "transforms", "None", needs=tf)
    add("pw-transforms-shape", pw, "transforms of shape (1, 3, 2)", lambda: _warp(transforms=np.zeros((1, 3, 2))), ValueError, "transforms", "(B, 8)", "(B, 3, 3)", "(1, 3, 2)", needs=tf)
    add("pw-transforms-complex", pw, "complex transforms", lambda: _warp(transforms=np.eye(3)[None] + 0j), TypeError, "transforms", "complex128", needs=tf)
    add("pw-transforms-nan", pw, "a NaN in the matrix", lambda: _warp(transforms=_with(np.eye(3)[None], (0, 0, 2), np.nan)), ValueError, "transforms", "finite", "nan", "(0, 0, 2)", needs=tf)
    add("pw-transforms-f32-overflow", pw, "matrix entry 1e39 with complex64 images", lambda: _warp(transforms=_with(np.eye(3)[None], (0, 0, 2), 1e39)), ValueError, "transforms", "float32", "1e+39", needs=tf)
    add("pw-batch-mismatch", pw, "images batch 2 with 3 transforms", lambda: _warp(images=np.concatenate([_image4(), _image4()]), transforms=np.tile(np.eye(3), (3, 1, 1))), ValueError, "images batch (2)", "transforms batch (3)", needs=tf)
    add("pw-interpolation", pw, "interpolation='bicubic'", lambda: _warp(interpolation="bicubic"), ValueError, "interpolation", "'bicubic'", needs=tf)
    add("pw-fill-mode", pw, "fill_mode='reflect'", lambda: _warp(fill_mode="reflect"), ValueError, "fill_mode", "'reflect'", "edge", needs=tf)
    add("pw-fill-value-str", pw, "fill_value='0'", lambda: _warp(fill_mode="constant", fill_value="0"), TypeError, "fill_value", "str '0'", needs=tf)
    add("pw-fill-value-nan", pw, "fill_value=nan", lambda: _warp(fill_mode="constant", fill_value=float("nan")), ValueError, "fill_value", "finite", "nan", needs=tf)
    add("pw-fill-value-complex", pw, "fill_value=1j with real images", lambda: _warp(images=_image4(np.float32), fill_mode="constant", fill_value=1j), TypeError, "fill_value", "1j", "real", needs=tf)
    add("pw-fill-value-unused", pw, "fill_value=2.0 with fill_mode='zeros'", lambda: _warp(fill_mode="zeros", fill_value=2.0), ValueError, "fill_value", "2.0", "constant", needs=tf)
    tfa = "tfa_params_to_3x3"
    add("tfa-none", tfa, "params=None", lambda: _tfa(None), TypeError, "params", "None", needs=tf)
    add("tfa-shape", tfa, "params of shape (2, 9)", lambda: _tfa(np.zeros((2, 9))), ValueError, "params", "(B, 8)", "(2, 9)", needs=tf)
    add("tfa-bool", tfa, "boolean params", lambda: _tfa(np.ones((1, 8), bool)), TypeError, "params", "bool", needs=tf)
    add("tfa-complex", tfa, "complex params", lambda: _tfa(np.ones((1, 8), complex)), TypeError, "params", "complex128", needs=tf)
    bw = "backends.projective_warp"
    add("bw-images-str", bw, "images='abc'", lambda: _backend_warp(images="abc"), TypeError, "images", "str", "NumPy, JAX or TensorFlow")
    add("bw-images-empty", bw, "images of shape (1, 0, 4, 1)", lambda: _backend_warp(images=np.zeros((1, 0, 4, 1))), ValueError, "images", "non-empty", "(1, 0, 4, 1)")
    add("bw-evaluation", bw, "evaluation='fast'", lambda: _backend_warp(evaluation="fast"), ValueError, "evaluation", "'fast'")
    add("bw-jit-str", bw, "jit='yes'", lambda: _backend_warp(jit="yes"), TypeError, "jit", "str 'yes'")
    add("bw-backend", bw, "backend='torchx'", lambda: _backend_warp(backend="torchx"), ValueError, "backend", "'torchx'")

    # -- the legacy-compatible batched path and the JAX translate ---------------
    gb = "_get_image_patches_batched"

    def _batched(mini_batch_size: Any) -> Any:
        from ptycho.raw_data import _get_image_patches_batched

        return _get_image_patches_batched(_image4(), np.zeros((4, 1, 2, 1)), 4, 1, 4, mini_batch_size=mini_batch_size)

    add("gb-mini-batch-str", gb, "mini_batch_size='a'", lambda: _batched("a"), TypeError, "mini_batch_size", "str 'a'", needs=tf)
    add("gb-mini-batch-zero", gb, "mini_batch_size=0", lambda: _batched(0), ValueError, "mini_batch_size", "0", needs=tf)
    jt = "backends.translate"

    def _jax_translate(images: Any = None, translations: Any = None, **kwargs: Any) -> Any:
        import jax.numpy as jnp

        from ptycho.backends import translate

        images = jnp.asarray(_image4()[..., 0]) if images is None else images
        translations = jnp.zeros((1, 2)) if translations is None else translations
        return translate(images, translations, backend="jax", **kwargs)

    add("jt-images-4d", jt, "images of shape (1, 8, 8, 1)", lambda: _jax_translate(images=_image4()), ValueError, "images", "3-D", "(1, 8, 8, 1)", needs=("jax",))
    add("jt-trans-3cols", jt, "translations of shape (1, 3)", lambda: _jax_translate(translations=np.zeros((1, 3))), ValueError, "translations", "(1, 3)", needs=("jax",))
    add("jt-interpolation", jt, "interpolation='cubic'", lambda: _jax_translate(interpolation="cubic"), ValueError, "interpolation", "'cubic'", needs=("jax",))
    add("jt-output-size", jt, "output_size=(4, 0)", lambda: _jax_translate(output_size=(4, 0)), ValueError, "output_size[1]", "0", needs=("jax",))
    th = "tf_helper.translate"
    add("th-unknown-kw", th, "translate(..., bilinear=True) (unknown keyword)", lambda: _translate(bilinear=True), TypeError, "translate()", "bilinear", needs=tf)
    add("th-images-2d", th, "imgs of shape (8, 8)", lambda: _translate(images=OBJ), ValueError, "imgs", "(8, 8)", needs=tf)
    add("th-offsets-nan", th, "a NaN offset", lambda: _translate(offsets=np.array([[0.5, np.nan]])), ValueError, "offsets", "nan", needs=tf)
    add("th-offsets-3cols", th, "offsets of shape (2, 3)", lambda: _translate(offsets=np.zeros((2, 3))), ValueError, "offsets", "(2, 3)", needs=tf)
    add("th-batch-mismatch", th, "imgs batch 2 with 3 offsets", lambda: _translate(images=np.concatenate([_image4(), _image4()]), offsets=np.zeros((3, 2))), ValueError, "imgs batch", "offsets", needs=tf)
    add("th-interpolation", th, "interpolation='linear'", lambda: _translate(interpolation="linear"), ValueError, "interpolation", "'linear'", needs=tf)
    tc = "tf_helper.translate_core"

    def _core(**kwargs: Any) -> Any:
        from ptycho.tf_helper import translate_core

        kwargs.setdefault("images", _image4())
        kwargs.setdefault("translations", np.array([[1.5, 2.0]]))
        return translate_core(kwargs.pop("images"), kwargs.pop("translations"), **kwargs)

    add("tc-images-3d", tc, "images of shape (1, 8, 8)", lambda: _core(images=OBJ[None]), ValueError, "images", "(1, 8, 8)", needs=tf)
    add("tc-trans-none", tc, "translations=None", lambda: _core(translations=None), TypeError, "translations", "None", needs=tf)
    add("tc-trans-3cols", tc, "translations of shape (1, 3)", lambda: _core(translations=np.zeros((1, 3))), ValueError, "translations", "(1, 3)", needs=tf)
    add("tc-trans-nan", tc, "a NaN translation", lambda: _core(translations=np.array([[np.nan, 0.0]])), ValueError, "translations", "nan", needs=tf)
    add("tc-batch-mismatch", tc, "images batch 2 with 3 translations", lambda: _core(images=np.concatenate([_image4(), _image4()]), translations=np.zeros((3, 2))), ValueError, "images batch", "(3)", needs=tf)
    add("tc-interpolation", tc, "interpolation='cubic'", lambda: _core(interpolation="cubic"), ValueError, "interpolation", "'cubic'", needs=tf)
    pd = "tf_helper.pad"
    add("pad-negative", pd, "size=-1", lambda: _pad(size=-1), ValueError, "size", "-1", needs=tf)
    add("pad-float", pd, "size=1.5", lambda: _pad(size=1.5), TypeError, "size", "float 1.5", needs=tf)
    add("pad-3d", pd, "imgs of shape (1, 8, 8)", lambda: _pad(imgs=OBJ[None]), ValueError, "imgs", "(1, 8, 8)", needs=tf)
    add("pad-object", pd, "imgs of dtype object", lambda: _pad(imgs=_image4().astype(object)), TypeError, "imgs", "object", needs=tf)

    def _layout(name: str, img: Any, **kwargs: Any) -> Any:
        from ptycho import tf_helper

        return getattr(tf_helper, name)(img, **kwargs)

    add("c2f-3d", "tf_helper._channel_to_flat", "img of shape (2, 8, 8)", lambda: _layout("_channel_to_flat", np.zeros((2, 8, 8))), ValueError, "img", "(2, 8, 8)", needs=tf)
    add("f2c-batch", "tf_helper._flat_to_channel", "img batch 6 with gridsize=2", lambda: _layout("_flat_to_channel", np.zeros((6, 4, 4, 1)), gridsize=2), ValueError, "img batch", "(6)", "gridsize**2 = 4", needs=tf)
    add("f2c-gridsize", "tf_helper._flat_to_channel", "gridsize=1.5", lambda: _layout("_flat_to_channel", np.zeros((4, 4, 4, 1)), gridsize=1.5), TypeError, "gridsize", "float 1.5", needs=tf)

    # -- files: RawData.from_file / to_file, load_grouped ---------------------
    ff = "RawData.from_file"
    add("file-absent", ff, "a path that does not exist", lambda: _from_file("absent"), FileNotFoundError, "scan.npz", "no such file")
    add("file-directory", ff, "a directory", lambda: _from_file("directory"), ValueError, "scan.npz", "directory")
    add("file-text", ff, "a text (CSV) file named .npz", lambda: _from_file("text"), ValueError, "scan.npz", "not a readable .npz")
    add("file-empty", ff, "an empty file", lambda: _from_file("empty"), ValueError, "scan.npz", "not a readable .npz")
    add("file-truncated", ff, "an archive cut in half", lambda: _from_file("truncated"), ValueError, "scan.npz", "not a readable .npz")
    add("file-corrupt", ff, "an archive with 64 zeroed bytes inside a field", lambda: _from_file("corrupt"), ValueError, "scan.npz", "corrupt")
    add("file-npy", ff, "a single-array .npy file", lambda: _from_file("npy"), ValueError, "scan.npy", ".npz archive of named arrays")
    add("file-pickled", ff, "xcoords stored as a pickled object array", lambda: _from_file("pickled"), ValueError, "scan.npz", "xcoords", "pickled object array")
    add("file-missing-probe", ff, "no probeGuess field", lambda: _from_file("missing-probe", probeGuess=None), ValueError, "scan.npz", "probeGuess", "present:")
    add("file-missing-diff3d", ff, "no diff3d (nor diffraction) field", lambda: _from_file("missing-diff3d", diff3d=None), ValueError, "scan.npz", "diff3d")
    add("file-short-ycoords", ff, f"ycoords of {M - 1} values for {M} xcoords", lambda: _from_file("short-ycoords", ycoords=np.zeros(M - 1)), ValueError, "scan.npz", "ycoords", f"({M - 1},)")
    add("file-frames", ff, f"diff3d with {M - 2} frames for {M} positions", lambda: _from_file("frames", diff3d=np.zeros((M - 2, 8, 8))), ValueError, "scan.npz", "diff3d", f"({M - 2}, 8, 8)")
    add("file-probe-nonsquare", ff, "probeGuess of shape (8, 6)", lambda: _from_file("probe-nonsquare", probeGuess=np.ones((8, 6), np.complex64)), ValueError, "scan.npz", "probeGuess", "(8, 6)")
    add("file-coords-nan", ff, "a NaN in xcoords", lambda: _from_file("coords-nan", xcoords=_with(_scan_fields()["xcoords"], (3,), np.nan)), ValueError, "scan.npz", "xcoords", "nan")
    add("file-coords-2d", ff, f"xcoords of shape ({M}, 1)", lambda: _from_file("coords-2d", xcoords=np.zeros((M, 1))), ValueError, "scan.npz", "xcoords", f"({M}, 1)")
    add("file-coords-str", ff, "xcoords of strings", lambda: _from_file("coords-str", xcoords=np.array(["1"] * M)), TypeError, "scan.npz", "xcoords", "<U1")
    add("file-diff3d-complex", ff, "complex diff3d", lambda: _from_file("diff3d-complex", diff3d=np.ones((M, 8, 8), np.complex64)), TypeError, "scan.npz", "diff3d", "complex64")
    add("file-object-bool", ff, "boolean objectGuess", lambda: _from_file("object-bool", objectGuess=np.ones((32, 32), bool)), TypeError, "scan.npz", "objectGuess", "bool")
    add("file-object-nan", ff, "a NaN in objectGuess", lambda: _from_file("object-nan", objectGuess=_with(_scan_fields()["objectGuess"], (0, 0), np.nan)), ValueError, "scan.npz", "objectGuess", "nan")
    add("to-file-existing", "RawData.to_file", "an existing path without overwrite=True", _to_existing_file, FileExistsError, "scan.npz", "already exists", "overwrite")
    lg = "load_grouped"
    add("grouped-dataset", lg, "a dataset file instead of a grouped file", lambda: _load_grouped_bad("dataset"), ValueError, "scan.npz", "missing required field", "coords_nn")
    add("grouped-y-short", lg, "Y with one group fewer than nn_indices", lambda: _load_grouped_bad("y-short"), ValueError, "grouped.npz", "Y", "(11, 4, 4, 4)")

    # -- RawData, grouping, generate_grouped_data ------------------------------
    rd = "RawData"
    add("raw-xcoords-none", rd, "xcoords=None", lambda: _raw_with_none("xcoords"), TypeError, "xcoords", "None")
    add("raw-diff3d-none", rd, "diff3d=None", lambda: _raw_with_none("diff3d"), TypeError, "diff3d", "None")
    add("raw-diff3d-2d", rd, "diff3d of shape (12, 64)", lambda: _raw(diff3d=np.zeros((M, 64))), ValueError, "diff3d", "(12, 64)")
    add("raw-probe-bool", rd, "boolean probeGuess", lambda: _raw(probeGuess=np.ones((8, 8), bool)), TypeError, "probeGuess", "bool")
    add("raw-scan-index-fraction", rd, "scan_index holding 0.5", lambda: _raw(scan_index=np.full(M, 0.5)), TypeError, "scan_index", "float64")
    add("raw-object-1d", rd, "objectGuess of shape (32,)", lambda: _raw(objectGuess=np.ones(32, np.complex64)), ValueError, "objectGuess", "(32,)")
    gn = "group_neighbours"

    def _group(**kwargs: Any) -> Any:
        from ptycho.dataset import group_neighbours

        kwargs.setdefault("coords", np.column_stack([_scan_fields()["xcoords"], _scan_fields()["ycoords"]]))
        kwargs.setdefault("gridsize", 2)
        return group_neighbours(kwargs.pop("coords"), **kwargs)

    add("group-coords-3cols", gn, "coords of shape (12, 3)", lambda: _group(coords=np.zeros((M, 3))), ValueError, "coords", "(12, 3)")
    add("group-coords-nan", gn, "a NaN in coords", lambda: _group(coords=_with(np.zeros((M, 2)), (2, 1), np.nan)), ValueError, "coords", "nan")
    add("group-gridsize-bool", gn, "gridsize=True", lambda: _group(gridsize=True), TypeError, "gridsize", "bool")
    add("group-k-zero", gn, "K=0", lambda: _group(K=0), ValueError, "K", "0")
    add("group-seed-str", gn, "seed='abc'", lambda: _group(nsamples=3, seed="abc"), TypeError, "seed", "'abc'")
    add("group-seed-float", gn, "seed=1.5", lambda: _group(nsamples=3, seed=1.5), TypeError, "seed", "1.5")
    add("group-seed-negative", gn, "seed=-1", lambda: _group(nsamples=3, seed=-1), ValueError, "seed", "-1")
    gg = "RawData.generate_grouped_data"

    def _grouped(**kwargs: Any) -> Any:
        changes = kwargs.pop("changes", {})
        kwargs.setdefault("N", 4)
        kwargs.setdefault("gridsize", 2)
        kwargs.setdefault("backend", "numpy")
        return _raw(**changes).generate_grouped_data(kwargs.pop("N"), **kwargs)

    add("gg-n-zero", gg, "N=0", lambda: _grouped(N=0), ValueError, "N", "0")
    add("gg-n-float", gg, "N=4.0", lambda: _grouped(N=4.0), TypeError, "N", "float 4.0")
    add("gg-gridsize-zero", gg, "gridsize=0", lambda: _grouped(gridsize=0), ValueError, "gridsize", "0")
    add("gg-k-below-c", gg, "K=2 with gridsize=2 (c = 4)", lambda: _grouped(K=2), ValueError, "K=2 must be >= C=4")
    add("gg-nsamples-zero", gg, "nsamples=0", lambda: _grouped(nsamples=0), ValueError, "nsamples", "0")
    add("gg-backend", gg, "backend='torch'", lambda: _grouped(backend="torch"), ValueError, "backend", "'torch'")
    add("gg-batch-size", gg, "batch_size=0", lambda: _grouped(batch_size=0), ValueError, "batch_size", "0")
    add("gg-not-rawdata", "generate_grouped_data", "raw={} (not a RawData)", lambda: __import__("ptycho.dataset", fromlist=["x"]).generate_grouped_data({}, 4), TypeError, "raw", "dict")
    add("gg-c-above-m", gg, f"gridsize=4 (c = 16) with {M} positions", lambda: _grouped(gridsize=4, K=16), ValueError, f"only {M} positions", "C = gridsize**2 = 16")
    add("gg-oversampling-off", gg, f"nsamples={M + 1} > M with gridsize=2, oversampling off", lambda: _grouped(nsamples=M + 1), ValueError, f"nsamples={M + 1}", "enable_oversampling=True", "OVERSAMPLING-001")
    add("gg-pool-below-c", gg, "oversampling with neighbor_pool_size=3 < c = 4", lambda: _grouped(nsamples=M + 1, enable_oversampling=True, neighbor_pool_size=3), ValueError, "neighbor_pool_size >= C = gridsize**2 = 4", "neighbor_pool_size=3")
    add("gg-pool-zero", gg, "neighbor_pool_size=0", lambda: _grouped(neighbor_pool_size=0), ValueError, "neighbor_pool_size", "0")
    add("gg-seed-negative", gg, "seed=-1", lambda: _grouped(seed=-1), ValueError, "seed", "-1")
    add("gg-seed-str", gg, "seed='abc'", lambda: _grouped(seed="abc"), TypeError, "seed", "'abc'")
    add("gg-seed-too-big", gg, "seed=2**32", lambda: _grouped(seed=2**32), ValueError, "seed", "below 2**32", str(2**32))
    add("gg-sequential-str", gg, "sequential_sampling='yes'", lambda: _grouped(sequential_sampling="yes"), TypeError, "sequential_sampling", "True or False", "'yes'")
    add("gg-oversampling-int", gg, "enable_oversampling=1", lambda: _grouped(enable_oversampling=1), TypeError, "enable_oversampling", "True or False", "1")
    add("gg-dataset-path-int", gg, "dataset_path=3", lambda: _grouped(dataset_path=3), TypeError, "dataset_path", "int")
    add("gg-groups-k-below-c", "RawData._generate_groups_efficiently", "K=3, C=4", lambda: _raw()._generate_groups_efficiently(5, 3, 4, seed=0), ValueError, "K=3 must be >= C=4")
    add("gg-oversample-c-above-m", "RawData._generate_groups_with_oversampling", f"C=16 with {M} positions", lambda: _raw()._generate_groups_with_oversampling(20, 20, 16, seed=0), ValueError, f"only {M} positions", "C = gridsize**2 = 16")
    def _raw_full(**extra: Any) -> Any:
        from ptycho.dataset import RawData

        f = _scan_fields()
        return RawData(f["xcoords"], f["ycoords"], f["xcoords"], f["ycoords"], f["diff3d"], f["probeGuess"],
                       f["scan_index"], f["objectGuess"], **extra)

    add("raw-y-length", rd, f"Y of shape ({M + 1}, 4, 4)", lambda: _raw_full(Y=np.ones((M + 1, 4, 4), np.complex64)), ValueError, "Y", f"({M}, N, N)", f"({M + 1}, 4, 4)")
    add("raw-y-str", rd, "Y of strings", lambda: _raw_full(Y=np.array(["a"] * M)), TypeError, "Y", "<U1")
    add("raw-metadata-list", rd, "metadata=[1]", lambda: _raw_full(metadata=[1]), TypeError, "metadata", "list")
    nd = "normalize_data"

    def _normalize(dset: Any = None, N: Any = 8) -> Any:
        from ptycho.dataset import normalize_data  # (ptycho.raw_data re-exports it, importing TensorFlow)

        return normalize_data({"diffraction": np.ones((3, 8, 8, 1), np.float32)} if dset is None else dset, N)

    add("nd-dset-list", nd, "dset=[] (not a dict)", lambda: _normalize([]), TypeError, "dset", "list")
    add("nd-no-diffraction", nd, "dset without 'diffraction'", lambda: _normalize({"X": 1}), ValueError, "diffraction", "present: X")
    add("nd-diffraction-2d", nd, "diffraction of shape (3, 8)", lambda: _normalize({"diffraction": np.ones((3, 8))}), ValueError, "diffraction", "(3, 8)")
    add("nd-diffraction-complex", nd, "complex diffraction", lambda: _normalize({"diffraction": np.ones((3, 8, 8), np.complex64)}), TypeError, "diffraction", "complex64")
    add("nd-diffraction-zero", nd, "diffraction all zero", lambda: _normalize({"diffraction": np.zeros((3, 8, 8))}), ValueError, "diffraction", "all zero")
    add("nd-diffraction-nan", nd, "a NaN in diffraction", lambda: _normalize({"diffraction": _with(np.ones((3, 8, 8)), (1, 2, 3), np.nan)}), ValueError, "diffraction", "nan")
    add("nd-n-zero", nd, "N=0", lambda: _normalize(N=0), ValueError, "N", "0")
    add("rc-shape", "get_relative_coords", "coords_nn of shape (5, 2)", lambda: __import__("ptycho.dataset", fromlist=["x"]).get_relative_coords(np.zeros((5, 2))), ValueError, "coords_nn", "(G, 1, 2, c)", "(5, 2)")
    add("rc-none", "get_relative_coords", "coords_nn=None", lambda: __import__("ptycho.dataset", fromlist=["x"]).get_relative_coords(None), TypeError, "coords_nn", "None")
    add("ni-k-above-m", "get_neighbor_indices", f"K={M} with {M} positions", lambda: __import__("ptycho.dataset", fromlist=["x"]).get_neighbor_indices(np.arange(M * 1.0), np.arange(M * 1.0), K=M), ValueError, f"K + 1 = {M + 1}", f"only {M} scan positions")
    add("ni-y-length", "get_neighbor_indices", f"ycoords of shape ({M - 1},)", lambda: __import__("ptycho.dataset", fromlist=["x"]).get_neighbor_indices(np.arange(M * 1.0), np.arange(M - 1.0)), ValueError, "ycoords", f"({M - 1},)")
    add("ni-x-none", "get_neighbor_indices", "xcoords=None", lambda: __import__("ptycho.dataset", fromlist=["x"]).get_neighbor_indices(None, np.arange(M * 1.0)), TypeError, "xcoords", "None")

    # -- the command line --------------------------------------------------------
    cl = "ptycho-patches"

    def extract(folder: pathlib.Path, kind: str = "valid", *extra: Any) -> list:
        return ["extract", _make_input(folder, kind), "-o", folder / "out.npz", "--backend", "numpy", *extra]

    damaged = {
        "absent": "IN does not exist", "directory": "IN is a directory", "text": "IN is a text file",
        "truncated": "IN is cut in half", "corrupt": "IN has a corrupt field",
        "pickled": "IN holds a pickled object array",
    }
    for kind, words in damaged.items():
        add(f"cli-extract-{kind}", f"{cl} extract", words, lambda k=kind: _cli(f"extract-{k}", lambda d: extract(d, k)), CommandFailed, "scan.npz")
    add("cli-extract-no-object", f"{cl} extract", "IN without objectGuess", lambda: _cli("extract-no-object", lambda d: extract(d, "no-object")), CommandFailed, "scan.npz", "objectGuess")
    add("cli-extract-exists", f"{cl} extract", "OUT exists, no --overwrite", lambda: _cli("extract-exists", lambda d: [*extract(d)[:3], _existing(d, "out.npz"), "--backend", "numpy"]), CommandFailed, "out.npz", "--overwrite")
    add("cli-extract-overwrite-bad-input", f"{cl} extract", "--overwrite with a truncated IN: OUT must survive", lambda: _cli("extract-overwrite-bad-input", lambda d: [*extract(d, "truncated")[:3], _existing(d, "out.npz"), "--backend", "numpy", "--overwrite"]), CommandFailed, "scan.npz", "not a readable")
    add("cli-extract-suffix", f"{cl} extract", "OUT named out.h5", lambda: _cli("extract-suffix", lambda d: [*extract(d)[:3], d / "out.h5"]), CommandFailed, "out.h5", ".npz or .zarr")
    add("cli-extract-no-folder", f"{cl} extract", "OUT in a folder that does not exist", lambda: _cli("extract-no-folder", lambda d: [*extract(d)[:3], d / "missing" / "out.npz"]), CommandFailed, "missing", "does not exist")
    add("cli-extract-n-zero", f"{cl} extract", "--N 0", lambda: _cli("extract-n-zero", lambda d: extract(d, "valid", "--N", "0")), CommandFailed, "--N", "positive integer", "'0'")
    add("cli-extract-n-float", f"{cl} extract", "--N 2.5", lambda: _cli("extract-n-float", lambda d: extract(d, "valid", "--N", "2.5")), CommandFailed, "--N", "'2.5'")
    add("cli-extract-k-below-c", f"{cl} extract", "--gridsize 2 --K 2", lambda: _cli("extract-k-below-c", lambda d: extract(d, "valid", "--gridsize", "2", "--K", "2")), CommandFailed, "K", "K=2")
    add("cli-extract-backend", f"{cl} extract", "--backend torch", lambda: _cli("extract-backend", lambda d: [*extract(d)[:4], "--backend", "torch"]), CommandFailed, "--backend", "'torch'")
    add("cli-show-absent", f"{cl} show", "FILE does not exist", lambda: _cli("show-absent", lambda d: ["show", d / "scan.npz", "-o", d / "out.png"]), CommandFailed, "scan.npz", "does not exist")
    add("cli-show-exists", f"{cl} show", "PNG exists, no --overwrite", lambda: _cli("show-exists", lambda d: ["show", _make_input(d, "valid"), "-o", _existing(d, "out.png")]), CommandFailed, "out.png", "--overwrite")
    add("cli-extract-nsamples-zero", f"{cl} extract", "--nsamples 0", lambda: _cli("extract-nsamples-zero", lambda d: extract(d, "valid", "--nsamples", "0")), CommandFailed, "--nsamples", "'0'")
    add("cli-extract-resume-npz", f"{cl} extract", "--resume with an .npz OUT", lambda: _cli("extract-resume-npz", lambda d: extract(d, "valid", "--resume")), CommandFailed, "--resume", ".zarr")
    add("cli-extract-workers-and-scheduler", f"{cl} extract", "--workers 2 --scheduler tcp://127.0.0.1:1", lambda: _cli("extract-workers-and-scheduler", lambda d: extract(d, "valid", "--workers", "2", "--scheduler", "tcp://127.0.0.1:1")), CommandFailed, "--workers", "--scheduler")
    add("cli-show-text", f"{cl} show", "FILE is a text file", lambda: _cli("show-text", lambda d: ["show", _make_input(d, "text"), "-o", d / "out.png"]), CommandFailed, "scan.npz", "not a readable .npz")
    add("cli-simulate-size-zero", f"{cl} simulate", "--object-size 0 32", lambda: _cli("simulate-size-zero", lambda d: ["simulate", "-o", d / "sim.npz", "--object-size", "0", "32"]), CommandFailed, "--object-size", "'0'")
    add("cli-demo-dir-is-file", f"{cl} demo", "--output-dir names an existing file", lambda: _cli("demo-dir-is-file", lambda d: ["demo", "--quick", "--output-dir", _existing(d, "demo")]), CommandFailed, "--output-dir", "not a directory")
    add("cli-simulate-exists", f"{cl} simulate", "FILE exists, no --overwrite", lambda: _cli("simulate-exists", lambda d: ["simulate", "-o", _existing(d, "sim.npz"), "--object-size", "32", "32", "--N", "8"]), CommandFailed, "sim.npz", "--overwrite")

    # -- tf_helper: the model-side patch family --
    def _th(name: str, *args: Any, **kwargs: Any) -> Any:
        from ptycho import tf_helper

        return getattr(tf_helper, name)(*args, **kwargs)

    IMG2 = np.ones((2, 8, 8, 1), np.complex64)  # two groups' padded objects
    OFF2 = np.zeros((2, 1, 2, 4), np.float32)  # gridsize 2
    PAT2 = np.ones((2, 4, 4, 4), np.float32)  # two groups of four 4 x 4 patches
    epp, rpr, rpb = "tf_helper.extract_patches_position", "tf_helper._reassemble_patches_position_real", "tf_helper._reassemble_position_batched"
    add("epp-imgs-3d", epp, "imgs of shape (2, 8, 8)", lambda: _th("extract_patches_position", IMG2[..., 0], OFF2, N=4, gridsize=2), ValueError, "imgs", "(2, 8, 8)", needs=tf)
    add("epp-imgs-2ch", epp, "imgs with 2 channels", lambda: _th("extract_patches_position", np.ones((2, 8, 8, 2)), OFF2, N=4, gridsize=2), ValueError, "imgs", "one channel", "(2, 8, 8, 2)", needs=tf)
    add("epp-imgs-small", epp, "imgs 8 x 8 with N=10", lambda: _th("extract_patches_position", IMG2, OFF2, N=10, gridsize=2), ValueError, "imgs", "N = 10", "(2, 8, 8, 1)", needs=tf)
    add("epp-offsets-channels", epp, "offsets_xy with 1 channel for gridsize 2", lambda: _th("extract_patches_position", IMG2, OFF2[..., :1], N=4, gridsize=2), ValueError, "offsets_xy", "(2, 1, 2, 1)", "4 channels", needs=tf)
    add("epp-offsets-nan", epp, "a NaN in offsets_xy", lambda: _th("extract_patches_position", IMG2, _with(OFF2, (1, 0, 0, 2), np.nan), N=4, gridsize=2), ValueError, "offsets_xy", "nan", needs=tf)
    add("epp-offsets-str", epp, "offsets_xy of strings", lambda: _th("extract_patches_position", IMG2, np.full((2, 1, 2, 4), "x"), N=4, gridsize=2), TypeError, "offsets_xy", "string", needs=tf)
    add("epp-batch", epp, "3 objects for 2 groups", lambda: _th("extract_patches_position", np.ones((3, 8, 8, 1)), OFF2, N=4, gridsize=2), ValueError, "imgs batch (3)", "(2)", needs=tf)
    add("epp-jitter-negative", epp, "jitter=-1", lambda: _th("extract_patches_position", IMG2, OFF2, -1.0, N=4, gridsize=2), ValueError, "jitter", "-1.0", needs=tf)
    add("epp-jitter-str", epp, "jitter='0.1'", lambda: _th("extract_patches_position", IMG2, OFF2, "0.1", N=4, gridsize=2), TypeError, "jitter", "'0.1'", needs=tf)
    add("rpr-imgs-3d", rpr, "imgs of shape (2, 4, 4)", lambda: _th("_reassemble_patches_position_real", PAT2[..., 0], OFF2, padded_size=8), ValueError, "imgs", "(2, 4, 4)", needs=tf)
    add("rpr-offsets-count", rpr, "offsets for 1 group with 2 groups of patches", lambda: _th("_reassemble_patches_position_real", PAT2, OFF2[:1], padded_size=160), ValueError, "offsets_xy", "8", "got 4", needs=tf)
    add("rpr-padded-small", rpr, "padded_size=2 with N = 4", lambda: _th("_reassemble_position_batched", PAT2, OFF2, 2, N=4, gridsize=2), ValueError, "padded_size", "N = 4", "2", needs=tf)
    add("rpr-agg-str", rpr, "agg='yes'", lambda: _th("_reassemble_patches_position_real", PAT2, OFF2, agg="yes", padded_size=8), TypeError, "agg", "'yes'", needs=tf)
    add("rpb-batch-float", rpb, "batch_size=1.5", lambda: _th("_reassemble_position_batched", PAT2, OFF2, 8, batch_size=1.5, N=4, gridsize=2), TypeError, "batch_size", "float 1.5", needs=tf)
    add("rpb-gridsize", rpb, "gridsize=3 with 8 patches", lambda: _th("_reassemble_position_batched", PAT2, OFF2, 8, N=4, gridsize=3), ValueError, "gridsize**2 = 9", "(2, 4, 4, 4)", needs=tf)
    add("rp-fn-not-callable", "tf_helper.reassemble_patches", "fn_reassemble_real=None", lambda: _th("reassemble_patches", PAT2, fn_reassemble_real=None), TypeError, "fn_reassemble_real", "None", needs=tf)
    add("translation-jitter", "tf_helper.Translation", "jitter_stddev=-0.5", lambda: _th("Translation", jitter_stddev=-0.5), ValueError, "jitter_stddev", "-0.5", needs=tf)
    add("translation-one-input", "tf_helper.Translation", "call() with a bare tensor, no offsets", lambda: _th("Translation").call(np.ones((1, 8, 8, 1), np.float32)), ValueError, "Translation", "[images, offsets]", needs=tf)
    add("tcore-flag", "tf_helper.translate_core", "use_xla_workaround='yes'", lambda: _th("translate_core", np.ones((1, 8, 8, 1)), np.zeros((1, 2)), use_xla_workaround="yes"), TypeError, "use_xla_workaround", "'yes'", needs=tf)
    add("trim-small", "tf_helper.trim_reconstruction", "x 4 x 4 with N=8", lambda: _th("trim_reconstruction", np.ones((1, 4, 4, 1)), N=8), ValueError, "x", "N = 8", "(1, 4, 4, 1)", needs=tf)
    add("trim-nonsquare", "tf_helper.trim_reconstruction", "x of shape (1, 8, 6, 1)", lambda: _th("trim_reconstruction", np.ones((1, 8, 6, 1)), N=4), ValueError, "x", "square", "(1, 8, 6, 1)", needs=tf)
    add("pad-patches-small", "tf_helper.pad_patches", "padded_size=4 with N=8", lambda: _th("pad_patches", np.ones((1, 8, 8, 1)), 4, N=8), ValueError, "padded_size", "N = 8", "4", needs=tf)
    add("xp-offset-zero", "tf_helper.extract_patches", "offset=0", lambda: _th("extract_patches", np.ones((1, 8, 8, 1)), 4, 0), ValueError, "offset", "0", needs=tf)
    add("outer-offset-none", "tf_helper.extract_outer", "outer_offset=None", lambda: _th("extract_outer", np.ones((1, 8, 8, 1)), bigN=4), TypeError, "outer_offset", "None", needs=tf)
    add("outer-fmt", "tf_helper.extract_outer", "fmt='rows'", lambda: _th("extract_outer", np.ones((1, 8, 8, 1)), fmt="rows", bigN=4, outer_offset=4), ValueError, "fmt", "'rows'", needs=tf)
    add("xpi-shape", "tf_helper.extract_patches_inverse", "y of shape (1, 2, 2, 9) with N=4", lambda: _th("extract_patches_inverse", np.ones((1, 2, 2, 9)), 4, True, gridsize=2, offset=2), ValueError, "y", "(B, 2, 2, 16)", "(1, 2, 2, 9)", needs=tf)
    add("mask-kind", "tf_helper.CenterMaskLayer", "kind='edge'", lambda: _th("CenterMaskLayer", 8, 4, kind="edge"), ValueError, "kind", "'edge'", needs=tf)
    add("togrid-size", "tf_helper._togrid", "img of shape (3, 4, 4, 1) with gridsize 2", lambda: _th("_togrid", np.ones((3, 4, 4, 1)), gridsize=2, N=4), ValueError, "img", "gridsize**2 = 4", "(3, 4, 4, 1)", needs=tf)
    add("grid2ch-shape", "tf_helper._grid_to_channel", "grid of shape (1, 4, 4, 1) (not 6-D)", lambda: _th("_grid_to_channel", np.ones((1, 4, 4, 1))), ValueError, "grid", "(1, 4, 4, 1)", needs=tf)

    # -- reassembly: tf_helper.shift_and_sum / reassemble_position, place_patches --
    def _reassemble(obj_tensor: Any = None, global_offsets: Any = None, op: str = "reassemble_position", **kwargs: Any) -> Any:
        from ptycho import tf_helper

        obj_tensor = np.ones((4, 16, 16, 1), np.complex64) if obj_tensor is None else obj_tensor
        global_offsets = np.array([[0, 0], [0, 5], [5, 0], [5, 5]], np.float64).reshape(4, 1, 2, 1) if global_offsets is None else global_offsets
        return getattr(tf_helper, op)(obj_tensor, global_offsets, **kwargs)

    def _place(patches: Any = None, positions: Any = POS, shape: Any = (8, 8), **kwargs: Any) -> Any:
        from ptycho.backends import place_patches

        patches = np.ones((2, 4, 4), np.complex64) if patches is None else patches
        return place_patches(patches, positions, shape, **kwargs)

    rp, ss, pp = "tf_helper.reassemble_position", "tf_helper.shift_and_sum", "place_patches"
    OFF4 = np.array([[0, 0], [0, 5], [5, 0], [5, 5]], np.float64).reshape(4, 1, 2, 1)
    add("rp-offsets-nan", rp, "a NaN in global_offsets", lambda: _reassemble(global_offsets=_with(OFF4, (2, 0, 1, 0), np.nan)), ValueError, "global_offsets", "finite", "nan", "(2, 0, 1, 0)", needs=tf)
    add("rp-offsets-inf", ss, "an inf in global_offsets", lambda: _reassemble(global_offsets=_with(OFF4, (0, 0, 0, 0), np.inf), op="shift_and_sum"), ValueError, "global_offsets", "finite", "inf", needs=tf)
    add("rp-offsets-count", rp, "3 offsets for 4 patches", lambda: _reassemble(global_offsets=OFF4[:3]), ValueError, "global_offsets", "P = 4", "(3, 1, 2, 1)", needs=tf)
    add("rp-offsets-3values", rp, "global_offsets of shape (4, 1, 3, 1)", lambda: _reassemble(global_offsets=np.zeros((4, 1, 3, 1))), ValueError, "global_offsets", "(4, 1, 3, 1)", needs=tf)
    add("rp-offsets-complex", rp, "complex global_offsets", lambda: _reassemble(global_offsets=OFF4 + 0j), TypeError, "global_offsets", "real", "complex128", needs=tf)
    add("rp-obj-3d", rp, "obj_tensor of shape (4, 16, 16) (no channel axis)", lambda: _reassemble(obj_tensor=np.ones((4, 16, 16), np.complex64)), ValueError, "obj_tensor", "(P, N, N, 1)", "(4, 16, 16)", needs=tf)
    add("rp-obj-nonsquare", rp, "obj_tensor of shape (4, 16, 12, 1)", lambda: _reassemble(obj_tensor=np.ones((4, 16, 12, 1), np.complex64)), ValueError, "obj_tensor", "square", "(4, 16, 12, 1)", needs=tf)
    add("rp-empty", rp, "no patches: obj_tensor (0, 16, 16, 1)", lambda: _reassemble(obj_tensor=np.ones((0, 16, 16, 1), np.complex64), global_offsets=np.zeros((0, 1, 2, 1))), ValueError, "obj_tensor", "at least one patch", "(0, 16, 16, 1)", needs=tf)
    add("rp-m-odd", rp, "M=7 (PtychoPINN crops N//2 - M//2 : N//2 + M//2)", lambda: _reassemble(M=7), ValueError, "M", "even", "M=7", needs=tf)
    add("rp-m-larger-than-n", rp, "M=20 with N = 16", lambda: _reassemble(M=20), ValueError, "M", "N = 16", "M=20", needs=tf)
    add("rp-m-zero", rp, "M=0", lambda: _reassemble(M=0), ValueError, "M", "positive integer", "0", needs=tf)
    add("rp-m-float", rp, "M=10.0", lambda: _reassemble(M=10.0), TypeError, "M", "float 10.0", needs=tf)
    add("rp-chunk-zero", rp, "chunk_size=0", lambda: _reassemble(chunk_size=0), ValueError, "chunk_size", "0", needs=tf)
    def _reassemble_in_graph() -> Any:
        import tensorflow as tf_

        return tf_.function(lambda: _reassemble(), autograph=False)()

    add("rp-in-tf-function", rp, "called inside tf.function (graph mode)", _reassemble_in_graph, ValueError, "eagerly", "tf.function", "global_offsets", needs=tf)
    add("rp-evaluation", ss, "evaluation='fast'", lambda: _reassemble(op="shift_and_sum", evaluation="fast"), ValueError, "evaluation", "'fast'", needs=tf)
    add("pp-pos-nan", pp, "a NaN position", lambda: _place(positions=_with(POS, (1, 0), np.nan)), ValueError, "positions", "finite", "nan", "(1, 0)")
    add("pp-pos-inf-jax", f"{pp}(backend='jax')", "an infinite position", lambda: _place(positions=_with(POS, (0, 1), np.inf), backend="jax"), ValueError, "positions", "finite", "inf", needs=("jax",))
    add("pp-pos-count", pp, "4 positions for 2 patches", lambda: _place(positions=POS4), ValueError, "positions", "4", "2 patches")
    add("pp-pos-shape", pp, "positions of shape (2, 3)", lambda: _place(positions=np.zeros((2, 3))), ValueError, "positions", "(P, 2)", "(2, 3)")
    add("pp-patches-2d", pp, "patches of shape (4, 4)", lambda: _place(patches=np.ones((4, 4), np.complex64)), ValueError, "patches", "(P, N, N)", "(4, 4)")
    add("pp-patches-nonsquare", pp, "patches of shape (2, 4, 5)", lambda: _place(patches=np.ones((2, 4, 5), np.complex64)), ValueError, "patches", "square", "(2, 4, 5)")
    add("pp-patches-bool", pp, "boolean patches", lambda: _place(patches=np.ones((2, 4, 4), bool)), TypeError, "patches", "bool")
    add("pp-weights-shape", pp, "weights of shape (3, 3) for 4 x 4 patches", lambda: _place(weights=np.ones((3, 3))), ValueError, "weights", "(4, 4)", "(3, 3)")
    add("pp-weights-complex", pp, "complex weights", lambda: _place(weights=np.ones((4, 4), np.complex64)), TypeError, "weights", "real", "complex64")
    add("pp-shape-zero", pp, "shape=(0, 8)", lambda: _place(shape=(0, 8)), ValueError, "shape[0]", "positive integer", "0")
    add("pp-eps-negative", pp, "eps=-1", lambda: _place(normalize=True, eps=-1.0), ValueError, "eps", "-1.0")
    add("pp-eps-nan", pp, "eps=nan", lambda: _place(normalize=True, eps=float("nan")), ValueError, "eps", "nan")
    add("pp-ordered-str", pp, "ordered='yes'", lambda: _place(ordered="yes"), TypeError, "ordered", "str 'yes'")

    # -- the stitch of a grouped dict ----------------------------------------
    def _flat(grouped: dict) -> Any:
        from ptycho.cli.stitch import flat_patches

        return flat_patches(grouped)

    add("stitch-no-positions", "cli.stitch.flat_patches", "a grouped dict with Y but no coordinates",
        lambda: _flat({"Y": np.ones((2, 4, 4, 1), np.complex64)}), ValueError, "coords_offsets", "coords_nn")

    # -- tf_helper layout helpers ---------------------------------------------
    add("fromgrid-size", "tf_helper._fromgrid", "img of shape (1, 2, 2, 3, 3, 1) with N = 4", lambda: _with_params({"N": 4}, lambda: _th("_fromgrid", np.ones((1, 2, 2, 3, 3, 1)))), ValueError, "img", "4 x 4", "(1, 2, 2, 3, 3, 1)", needs=tf)
    add("flatoff-shape", "tf_helper.flatten_offsets", "channels of shape (2, 2)", lambda: _th("flatten_offsets", np.zeros((2, 2))), ValueError, "channels", "(2, 2)", needs=tf)
    add("flatoff-bool", "tf_helper.flatten_offsets", "boolean offsets", lambda: _th("flatten_offsets", np.zeros((2, 1, 2, 4), bool)), TypeError, "channels", "bool", needs=tf)
    add("center-channels-3d", "tf_helper.center_channels", "channels of shape (1, 8, 8)", lambda: _th("center_channels", np.ones((1, 8, 8), np.complex64), np.zeros((1, 1, 2, 1))), ValueError, "channels", "(1, 8, 8)", needs=tf)

    # -- ptycho.params (legacy global configuration) ---------------------------
    def _params_set(key: str, value: Any) -> Any:
        return _with_params({}, lambda: __import__("ptycho.params", fromlist=["x"]).set(key, value))

    add("params-data-source", "params.set", "data_source='nowhere'", lambda: _params_set("data_source", "nowhere"), ValueError, "data_source", "'nowhere'")
    add("params-mae-weight", "params.set", "realspace_mae_weight=1 with realspace_weight=0", lambda: _params_set("realspace_mae_weight", 1.0), ValueError, "realspace_mae_weight", "realspace_weight")
    add("params-get-unknown", "params.get", "a key that is neither set nor a default", lambda: __import__("ptycho.params", fromlist=["x"]).get("no_such_key"), KeyError, "no_such_key")

    # -- ptycho.config.config validators ---------------------------------------
    def _config(kind: str, **fields: Any) -> Any:
        from ptycho.config import config as cfg_

        if kind == "model":
            return cfg_.validate_model_config(cfg_.ModelConfig(**fields))
        if kind == "training":
            return cfg_.validate_training_config(cfg_.TrainingConfig(**fields))
        fields.setdefault("model", cfg_.ModelConfig())
        fields.setdefault("test_data_file", pathlib.Path("test.npz"))
        return cfg_.validate_inference_config(cfg_.InferenceConfig(**fields))

    vm, vt, vi = "config.validate_model_config", "config.validate_training_config", "config.validate_inference_config"
    add("cfg-model-type", vm, "a dict instead of a ModelConfig", lambda: __import__("ptycho.config.config", fromlist=["x"]).validate_model_config({"N": 64}), TypeError, "config", "ModelConfig", "dict")
    add("cfg-model-n", vm, "ModelConfig(N=0)", lambda: _config("model", N=0), ValueError, "N", "0")
    add("cfg-model-arch", vm, "ModelConfig(architecture='vgg')", lambda: _config("model", architecture="vgg"), ValueError, "architecture", "'vgg'")
    add("cfg-model-probe-scale", vm, "ModelConfig(probe_scale=-1)", lambda: _config("model", probe_scale=-1.0), ValueError, "probe_scale", "-1")
    add("cfg-train-batch", vt, "TrainingConfig(batch_size=12)", lambda: _config("training", batch_size=12), ValueError, "batch_size", "power of 2", "12")
    add("cfg-train-epochs", vt, "TrainingConfig(nepochs=0)", lambda: _config("training", nepochs=0), ValueError, "nepochs", "0")
    add("cfg-train-mae", vt, "TrainingConfig(mae_weight=2)", lambda: _config("training", mae_weight=2.0), ValueError, "mae_weight", "[0, 1]", "2")
    add("cfg-train-photons", vt, "TrainingConfig(nphotons=-5)", lambda: _config("training", nphotons=-5.0), ValueError, "nphotons", "-5")
    add("cfg-infer-path", vi, "InferenceConfig(model_path=<missing>)", lambda: _config("inference", model_path=_case_dir("cfg-infer-path") / "no-model"), ValueError, "model_path", "does not exist")
    return c


BAD_INPUTS = _cases()


def _have(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def _require(needs: tuple) -> None:
    from ptycho.backends import Backend
    from ptycho.testing import require_backend

    for package in needs:
        require_backend(Backend(package))


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in BAD_INPUTS])
def test_bad_input_raises_clear_error(case: BadInput) -> None:
    _require(case.needs)
    with pytest.raises(Exception) as info:
        case.call()
    # validation raises the project's classes: InputTypeError is a TypeError, InputError a ValueError
    expected = {TypeError: InputTypeError, ValueError: InputError}.get(case.exc, case.exc)
    assert type(info.value) is expected, f"{case.id}: raised {type(info.value).__name__}: {info.value}"
    message = str(info.value)
    assert "\n" not in message, f"{case.id}: message is not one line: {message!r}"
    missing = [needle for needle in case.needles if needle not in message]
    assert not missing, f"{case.id}: message {message!r} lacks {missing}"
    if isinstance(info.value, CommandFailed):
        failed = info.value
        assert failed.status == 2, f"{case.id}: exit status {failed.status}, expected 2 (input error)"
        assert "Traceback" not in failed.stderr, f"{case.id}: traceback without --debug"
        assert message.startswith("ptycho-patches") and "error:" in message, message
        # no partial output, no temporary left behind, no existing file replaced
        assert failed.changed == [], f"{case.id}: files changed by a failed run: {failed.changed}"


def test_case_ids_are_unique() -> None:
    ids = [c.id for c in BAD_INPUTS]
    assert len(ids) == len(set(ids))


# ---------------------------------------------------------------------------
# The generated document.
# ---------------------------------------------------------------------------
_DOC_HEAD = """\
# Bad inputs and the messages they get

Generated by `python -m tests.test_validation` from the table `BAD_INPUTS` in
`tests/test_validation.py`; `test_bad_inputs_doc_is_current` fails when this
file is stale.  Do not edit by hand.

Every public entry point checks its arguments before any array reaches
TensorFlow or XLA.  A wrong kind of thing is an `InputTypeError` (a `TypeError`),
a right kind with a wrong value an `InputError` (a `ValueError`), both from
`ptycho.errors`; a known backend whose library is missing is an
`ImportError` naming the extra to install.  Each message is one line that
names the argument, the expectation and what was received.

Decisions:

- Objects may be real or complex, integer or floating.  Real input is treated
  as complex with zero imaginary part (bit for bit the same patches).
  Integer and float16/float32 objects compute in complex64, float64 objects in
  complex128.
- Boolean objects are refused: a mask is not an object, and reading True as 1
  would hide the mistake.  String and object arrays are refused.
- Positions and offsets must be real (integer or floating; not boolean, not
  complex), finite, and representable in the working precision: a float64
  position of 1e39 is finite but becomes infinite in float32 and would turn
  the patch into NaN instead of zeros.
- `N`, `gridsize`, `channels`, `padding` and `patch_extraction_batch_size` are
  integers: `True`, `4.0` and `'4'` are refused, NumPy integers are accepted.
- Non-finite values *in the object* passed to the patch functions are
  accepted on purpose: they are data, and they reach exactly the patches whose
  bilinear stencil touches them.  A dataset (`RawData`, an NPZ file) is
  checked as a whole and refuses a non-finite `objectGuess`.
- Subnormal object values (below 1.2e-38 in float32) are flushed to zero by
  XLA on CPU, so the JAX and TensorFlow backends return 0 where NumPy keeps
  the subnormal; no meaningful object is that small.

Files and the command line:

- NPZ files are read with `allow_pickle=False`.  Every unusable file
  (missing, a directory, not a zip, empty, truncated, a corrupt field, a
  pickled object array in a field that is needed, a missing field, a field of
  the wrong kind or shape) is a one-line error that starts with the path.  A
  pickled object array in a field that is *not* needed is skipped with a
  warning.
- `ptycho-patches` prints `ptycho-patches: error: ...` on one line with no
  traceback (`--debug` shows it) and exits 2 for bad input.  The tests check
  that a failed run leaves the folder exactly as it was: no partial output, no
  temporary file, and an existing output untouched, even with `--overwrite`.
  In the table, `<tmp>` stands for the temporary folder of the run.

Valid edge cases, tested in `tests/test_validation.py`: an empty batch gives
a `(0, N, N, c)` result on every backend; positions far outside give patches
that are exactly zero; `N` larger than the object and odd `N` work.
"""


def _row(case: BadInput) -> str:
    try:
        case.call()
    except CommandFailed as exc:
        kind, message = f"exit {exc.status}", str(exc)
    except Exception as exc:  # noqa: BLE001 - the table records whatever is raised
        kind, message = type(exc).__name__, str(exc)
    else:
        kind, message = "(no error)", ""
    if _WORK:
        message = message.replace(str(_WORK[0]), "<tmp>")
    cell = message.replace("|", "\\|").replace("\n", " ")
    bad = case.bad.replace("|", "\\|")
    return f"| `{case.id}` | `{case.entry}` | {bad} | `{kind}` | {cell} |"


def render_table() -> str:
    """The whole of docs/BAD_INPUTS.md, built by running every case."""
    rows = [_row(case) for case in BAD_INPUTS]
    lines = [
        _DOC_HEAD,
        f"{len(BAD_INPUTS)} bad inputs tried.",
        "",
        "| case | entry point | bad input | exception | message |",
        "| --- | --- | --- | --- | --- |",
        *rows,
        "",
    ]
    return "\n".join(lines)


def _all_needs() -> tuple:
    return tuple(sorted({p for case in BAD_INPUTS for p in case.needs}))


def test_bad_inputs_doc_is_current() -> None:
    _require(_all_needs())
    expected = render_table()
    actual = DOC_PATH.read_text(encoding="utf-8") if DOC_PATH.exists() else ""
    assert actual == expected, (
        "docs/BAD_INPUTS.md is stale; regenerate it with `python -m tests.test_validation`"
    )


# ---------------------------------------------------------------------------
# Valid edge cases stay valid.
# ---------------------------------------------------------------------------
def _np(x: Any) -> np.ndarray:
    return x.numpy() if hasattr(x, "numpy") else np.asarray(x)


@pytest.mark.parametrize("channels", [1, 4])
def test_empty_batch_extract_patches(backend, channels: int) -> None:
    from ptycho.backends import extract_patches, extract_patches_grouped
    from tests.helpers import native_type

    empty = np.zeros((0, 2), dtype=np.float32)
    if channels == 1:
        out = extract_patches(OBJ, empty, 5, backend=backend.value)
        expected_shape = (0, 5, 5)
    else:
        out = extract_patches_grouped(OBJ, empty, 5, channels=channels, backend=backend.value)
        expected_shape = (0, 5, 5, channels)
    assert isinstance(out, native_type(backend.value))
    assert tuple(out.shape) == expected_shape
    assert _np(out).dtype == np.complex64


@pytest.mark.parametrize("gridsize", [1, 2])
@pytest.mark.parametrize("path", ["batched", "chunked", "legacy"])
def test_empty_batch_get_image_patches(tf, gridsize: int, path: str) -> None:
    import warnings

    from ptycho.config.config import ModelConfig
    from ptycho.raw_data import get_image_patches

    c = gridsize**2
    config = ModelConfig(
        N=6, gridsize=gridsize,
        use_batched_patch_extraction=path != "legacy",
        patch_extraction_batch_size=4 if path == "chunked" else None,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        out = get_image_patches(OBJ, np.zeros((0, 1, 2, 1)), np.zeros((0, 1, 2, c)), config=config)
    assert isinstance(out, tf.Tensor)
    assert tuple(out.shape) == (0, 6, 6, c)
    assert out.dtype == tf.complex64


def test_empty_batch_translate_xla(tf) -> None:
    from ptycho.projective_warp_xla import translate_xla

    out = translate_xla(_image4(), np.zeros((0, 2), np.float32), output_size=(3, 4))
    assert tuple(out.shape) == (0, 3, 4, 1)


FAR = {
    "far-1e6": (np.complex64, [[1e6, 3.0], [-1e6, -1e6]]),
    "far-1e30": (np.complex64, [[1e30, -1e30], [3.0, -2e30]]),
    "f32-max": (np.complex64, [[3.4e38, 0.0], [0.0, -3.4e38]]),
    "c128-1e300": (np.complex128, [[1e300, 0.0], [-1e300, 5.0]]),
    "just-outside": (np.complex64, [[-3.0, 4.0], [8.0 + 2.0, 4.0]]),
}


@pytest.mark.parametrize("case", list(FAR))
def test_far_positions_give_exact_zero_patches(backend, case: str) -> None:
    from ptycho.backends import extract_patches

    dtype, positions = FAR[case]
    # N = 4: a patch centred at x covers x - 2 .. x + 1 (+1 for bilinear), so
    # -3.0 and 10.0 on an 8-pixel object are just outside.
    out = _np(extract_patches(OBJ.astype(dtype), np.array(positions), 4, backend=backend.value))
    assert out.dtype == np.dtype(dtype)
    assert np.all(np.isfinite(out))
    assert np.count_nonzero(out) == 0


REAL_DTYPES = {"float32": (np.float32, np.complex64), "float64": (np.float64, np.complex128),
               "int16": (np.int16, np.complex64), "float16": (np.float16, np.complex64)}


@pytest.mark.parametrize("dtype", list(REAL_DTYPES))
def test_real_object_equals_complex_with_zero_imaginary(backend, dtype: str) -> None:
    from ptycho.backends import extract_patches

    real_dtype, complex_dtype = REAL_DTYPES[dtype]
    real = (np.arange(99).reshape(9, 11) % 13 - 6).astype(real_dtype) * real_dtype(1.5 if real_dtype != np.int16 else 1)
    positions = np.array([[0.25, 0.5], [5.75, 3.125], [10.5, 8.5], [-1.5, 2.0]])
    got = extract_patches(real, positions, 5, backend=backend.value)
    ref = extract_patches(real.astype(complex_dtype), positions, 5, backend=backend.value)
    assert_close(got, _np(ref), backend=backend.value, dtype=complex_dtype, exact=True)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_real_object_get_image_patches(tf, dtype: str) -> None:
    from ptycho.raw_data import get_image_patches

    real_dtype, complex_dtype = REAL_DTYPES[dtype]
    real = OBJ.real.astype(real_dtype)
    offsets = np.array([[0.5, 1.25], [6.0, 2.5]]).reshape(2, 1, 2, 1)
    got = get_image_patches(real, offsets, np.zeros((2, 1, 2, 1)), N=4, gridsize=1, full_precision=True)
    ref = get_image_patches(
        real.astype(complex_dtype), offsets, np.zeros((2, 1, 2, 1)), N=4, gridsize=1, full_precision=True
    )
    assert_close(got, ref.numpy(), dtype=complex_dtype, exact=True)


SIZES = {"N-larger-than-object": (5, 7, 16), "odd-N": (12, 10, 7), "N1": (6, 6, 1), "N2": (6, 6, 2)}


@pytest.mark.parametrize("case", list(SIZES))
def test_patch_sizes_match_scipy_oracle(backend, case: str) -> None:
    from ptycho.backends import extract_patches

    H, W, N = SIZES[case]
    image = random_object((H, W), np.complex64, seed=H * 100 + N)
    positions = np.array([[0.0, 0.0], [W / 2 + 0.3, H / 2 - 0.7], [W - 0.5, H + 1.25], [-2.5, 1.0]])
    got = extract_patches(image, positions, N, backend=backend.value)
    ref = scipy_patches(image, positions, N, real_dtype=np.float32)
    assert_close(got, ref, backend=backend.value, shape=(4, N, N), dtype=np.complex64)


@pytest.mark.parametrize("kind", ["numpy-int", "list", "int-positions"])
def test_accepted_argument_kinds(kind: str) -> None:
    from ptycho.backends import extract_patches

    ref = extract_patches(OBJ, np.array([[3.0, 2.0], [1.0, 6.0]]), 4)
    if kind == "numpy-int":
        got = extract_patches(OBJ, np.array([[3.0, 2.0], [1.0, 6.0]]), np.int64(4))
    elif kind == "list":
        got = extract_patches(OBJ, [[3, 2], [1, 6]], 4)
    else:
        got = extract_patches(OBJ, np.array([[3, 2], [1, 6]], dtype=np.int32), 4)
    assert_close(got, ref, backend="numpy", exact=True)


def test_nonfinite_object_values_reach_only_touching_patches(backend) -> None:
    from ptycho.backends import extract_patches

    image = OBJ.copy()
    image[2, 2] = np.nan
    # N = 4 covers rows/cols oy-2 .. oy+2 (bilinear); (2, 2) is inside the
    # first window and far from the second.
    positions = np.array([[2.5, 2.5], [6.0, 6.0]])
    out = _np(extract_patches(image, positions, 4, backend=backend.value))
    assert not np.all(np.isfinite(out[0]))
    assert np.all(np.isfinite(out[1]))


# ---------------------------------------------------------------------------
# Regenerate the document: python -m tests.test_validation [--check]
# ---------------------------------------------------------------------------
def main(argv: list | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Write (or check) docs/BAD_INPUTS.md.")
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale, write nothing")
    args = parser.parse_args(argv)
    missing = [p for p in _all_needs() if not _have(p)]
    if missing:
        print(f"cannot render the table without {missing}: every case must run", file=sys.stderr)
        return 2
    text = render_table()
    current = DOC_PATH.read_text(encoding="utf-8") if DOC_PATH.exists() else ""
    if args.check:
        if current != text:
            print(f"{DOC_PATH} is stale; run python -m tests.test_validation", file=sys.stderr)
            return 1
        return 0
    DOC_PATH.parent.mkdir(parents=True, exist_ok=True)
    DOC_PATH.write_text(text, encoding="utf-8")
    print(f"wrote {DOC_PATH} ({len(BAD_INPUTS)} bad inputs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
