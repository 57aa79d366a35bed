"""Atomic file writes: a reader never sees a partial file (temp file beside the target, fsync, rename).

Shared by the results folder (:mod:`gradlab.experiment.store`), the Observer's ``save`` and the report.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

# -- atomic writes -------------------------------------------------------------------------------
TEMP_SUFFIX = ".gradlab.tmp"
"""Every temp file of :func:`atomic_write` is ``.<target name>.<random>.gradlab.tmp``: only these are
ever cleaned up (:func:`is_temp_of`), never a user's own ``.*.tmp`` files."""


def _open_temp(path: Path) -> tuple[int, str]:
    """Create the temp file with mode 0666 less the umask (``mkstemp`` would make it 0600 for good)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
        try:
            return os.open(tmp, flags, 0o666), str(tmp)
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary file name beside {path}")


def is_temp_of(name: str, targets: Iterable[str]) -> bool:
    """Whether ``name`` is a temp file :func:`atomic_write` left behind while writing one of ``targets``."""
    tail = rf"\.[0-9a-f]{{8}}{re.escape(TEMP_SUFFIX)}"
    return any(re.fullmatch(rf"\.{re.escape(t)}{tail}", name) for t in targets)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Write ``path`` through ``write(fileobj)`` into a hidden temp file beside it, fsync, then rename.

    If ``write`` raises, the temp file is removed and an existing ``path`` is left untouched. The file
    gets the mode a plain ``open`` would give it (0666 less the umask).
    """
    path = Path(path)
    fd, tmp = _open_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(d: Path) -> None:
    # makes the rename itself durable; not possible on every platform
    with contextlib.suppress(OSError):
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_bytes(path: str | Path, data: bytes) -> None:
    """Atomically write ``data`` to ``path``."""
    atomic_write(path, lambda f: f.write(data))


def write_json(path: str | Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented, strict JSON (no NaN)."""
    import json

    text = json.dumps(obj, indent=1, allow_nan=False) + "\n"
    write_bytes(path, text.encode("utf-8"))


def frame_to_parquet(df: pd.DataFrame) -> bytes:
    """A frame as Parquet bytes (pyarrow), index dropped."""
    import io

    buf = io.BytesIO()
    df.to_parquet(buf, engine="pyarrow", index=False)
    return buf.getvalue()


def write_frame(path: str | Path, df: pd.DataFrame) -> None:
    """Atomically write a frame as a Parquet file."""
    write_bytes(path, frame_to_parquet(df))
