"""Safe file output and strict NPZ input.

Every file this package writes goes through :func:`atomic_write`: the content
is written completely to a temporary name in the target's directory, then
renamed onto the target, so a crash, a full disk or an exception never leaves
a half-written dataset behind (a reader sees the old file or the new one).

:func:`load_npz` reads NumPy ``.npz`` archives with ``allow_pickle=False``
(an archive is data, never code) and turns every way a file can be unusable
-- missing, not a zip, truncated, pickled object arrays, missing fields --
into one exception whose one-line message names the file and the problem.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Union

import numpy as np
from ptycho.errors import InputError, InputTypeError


__all__ = ["atomic_write", "save_npz", "load_npz"]

PathLike = Union[str, "os.PathLike[str]"]


def _temporary_sibling(path: Path, tag: str) -> Path:
    """A fresh hidden name next to ``path`` that keeps its suffix.

    Keeping the suffix matters to writers that append one when it is missing
    (``np.savez`` adds ``.npz``); the random token keeps concurrent writers of
    the same target apart.
    """
    return path.with_name(f".{path.stem}.{uuid.uuid4().hex[:12]}.{tag}{path.suffix}")


def _remove(path: Path) -> None:
    """Delete a file or a directory tree if it exists (best effort)."""
    with contextlib.suppress(FileNotFoundError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink()


def _fsync_file(path: Path) -> None:
    """Flush a regular file to disk so the rename publishes complete data."""
    if path.is_file():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _refuse_existing(path: Path) -> None:
    raise FileExistsError(
        f"{path}: output already exists; pass overwrite=True (--overwrite on the command line) "
        f"to replace it"
    )


def atomic_write(path: PathLike, write_fn: Callable[[Path], Any], *, overwrite: bool = False) -> Path:
    """Write ``path`` through a temporary sibling, then rename it into place.

    Parameters
    ----------
    path : str or os.PathLike
        The target: a file, or a directory (a zarr store, for instance).
    write_fn : callable
        ``write_fn(tmp_path)`` must create the complete file or directory at
        ``tmp_path`` (a :class:`pathlib.Path` in the target's directory, with
        the target's suffix).  Its return value is ignored.
    overwrite : bool, default False
        Replace an existing target.  Without it an existing target is an error.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is False (checked before and again
        after writing).
    Exception
        Whatever ``write_fn`` raises; the temporary output is removed first
        and ``path`` is left exactly as it was.

    Notes
    -----
    A file target is published with :func:`os.replace` (atomic on POSIX and
    Windows).  A directory cannot be renamed over a non-empty directory, so
    with ``overwrite`` the old directory is first moved aside, the new one
    renamed into place, and only then the old one deleted; if the second
    rename fails the old directory is moved back.
    """
    path = Path(os.fspath(path))
    if not callable(write_fn):
        raise InputTypeError(f"write_fn must be callable as write_fn(tmp_path), got {type(write_fn).__name__}")
    if path.exists() and not overwrite:
        _refuse_existing(path)
    parent = path.parent
    if not parent.is_dir():
        raise FileNotFoundError(f"{path}: the output directory {parent} does not exist")
    tmp = _temporary_sibling(path, "tmp")
    try:
        write_fn(tmp)
        if not tmp.exists():
            raise RuntimeError(f"{path}: write_fn did not create the temporary output {tmp}")
        _fsync_file(tmp)
        if path.exists() and not overwrite:  # appeared while we were writing
            _refuse_existing(path)
        if tmp.is_dir() or path.is_dir():
            _replace_tree(tmp, path)
        else:
            os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    return path


def _replace_tree(new: Path, target: Path) -> None:
    """Publish ``new`` at ``target`` when either one is a directory."""
    if not target.exists():
        os.replace(new, target)
        return
    backup = _temporary_sibling(target, "old")
    os.replace(target, backup)
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(backup, target)
        raise
    _remove(backup)


def save_npz(
    path: PathLike,
    arrays: Mapping[str, Any],
    *,
    overwrite: bool = False,
    compressed: bool = False,
) -> Path:
    """Write ``arrays`` to an ``.npz`` archive atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Target file, written exactly at this name (no ``.npz`` is appended).
    arrays : mapping of str to array_like
        Field name -> array.  Object arrays are refused: :func:`load_npz`
        could not read them back without pickle.
    overwrite : bool, default False
        Replace an existing file (otherwise :class:`FileExistsError`).
    compressed : bool, default False
        ``np.savez_compressed`` instead of ``np.savez``.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    path = Path(os.fspath(path))
    if not isinstance(arrays, Mapping):
        raise InputTypeError(f"arrays must be a mapping of field name to array, got {type(arrays).__name__}")
    prepared = {}
    for name, value in arrays.items():
        if not isinstance(name, str) or not name:
            raise InputTypeError(f"arrays: field names must be non-empty strings, got {name!r}")
        arr = np.asarray(value)
        if arr.dtype.hasobject:
            raise InputTypeError(
                f"arrays[{name!r}]: expected a numeric or string array, got dtype object "
                f"(it could only be read back with pickle)"
            )
        prepared[name] = arr
    saver = np.savez_compressed if compressed else np.savez

    def write(tmp: Path) -> None:
        # A file object: numpy then writes exactly this name, whatever its suffix.
        with open(tmp, "wb") as fh:
            saver(fh, **prepared)

    return atomic_write(path, write, overwrite=overwrite)


# Everything np.load / zipfile raise on a file that is not a readable archive.
_ARCHIVE_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError)


def _fields(names: Iterable[str], argument: str) -> tuple[str, ...]:
    if isinstance(names, str):
        return (names,)
    out = tuple(names)
    for name in out:
        if not isinstance(name, str):
            raise InputTypeError(f"{argument} must hold field names (str), got {name!r}")
    return out


def load_npz(path: PathLike, *, required: Iterable[str] = (), optional: Iterable[str] = ()) -> dict[str, np.ndarray]:
    """Read every array of an ``.npz`` archive into memory and close the file.

    Parameters
    ----------
    path : str or os.PathLike
        The archive.
    required : iterable of str
        Fields that must be present.
    optional : iterable of str
        Fields the caller uses when present.

    Returns
    -------
    dict of str to numpy.ndarray
        Every readable field of the archive.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        ``path`` is a directory, not a zip archive, truncated or corrupt; a
        required field is missing; or a field that must be read holds a
        pickled object array.  The message is one line naming the file.

    Warns
    -----
    UserWarning
        When ``required`` or ``optional`` name the fields the caller wants,
        a pickled object array in any *other* field cannot be read without
        pickle and is skipped with a warning (PtychoPINN files sometimes
        carry pickled metadata next to the data).  With neither given, every
        field is wanted and such an array is an error.
    """
    path = Path(os.fspath(path))
    required = _fields(required, "required")
    optional = _fields(optional, "optional")
    wanted = set(required) | set(optional)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected an .npz archive")
    out: dict[str, np.ndarray] = {}
    with open(path, "rb") as handle:
        magic = handle.read(6)
    if not magic.startswith(b"PK") and not magic.startswith(b"\x93NUMPY"):
        # np.load would try pickle on anything else and blame "pickled data"
        raise InputError(f"{path}: not a readable .npz archive (not a zip file)")
    try:
        loaded = np.load(path, allow_pickle=False)
    except _ARCHIVE_ERRORS as exc:
        raise InputError(f"{path}: not a readable .npz archive ({_reason(exc)})") from exc
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise InputError(
            f"{path}: expected an .npz archive of named arrays, got a single .npy array "
            f"of shape {getattr(loaded, 'shape', None)}"
        )
    with loaded:
        for name in loaded.files:
            try:
                out[name] = loaded[name]
            except ValueError as exc:
                if "pickle" not in str(exc).lower() and "object" not in str(exc).lower():
                    raise InputError(f"{path}: field {name!r} is corrupt ({_reason(exc)})") from exc
                if wanted and name not in wanted:
                    warnings.warn(
                        f"{path}: skipped field {name!r}, a pickled object array (not loaded "
                        f"with allow_pickle=False)",
                        UserWarning,
                        stacklevel=2,
                    )
                    continue
                raise InputError(
                    f"{path}: field {name!r} is a pickled object array; only numeric arrays "
                    f"can be loaded (allow_pickle=False)"
                ) from exc
            except _ARCHIVE_ERRORS as exc:
                raise InputError(f"{path}: field {name!r} is truncated or corrupt ({_reason(exc)})") from exc
    missing = [name for name in required if name not in out]
    if missing:
        raise InputError(
            f"{path}: missing required field(s) {', '.join(missing)}; "
            f"present: {', '.join(sorted(out)) or 'none'}"
        )
    return out


def _reason(exc: BaseException) -> str:
    """The exception as a short single line."""
    text = " ".join(str(exc).split())
    kind = type(exc).__name__
    return f"{kind}: {text}"[:200] if text else kind
