"""Claiming a results folder for one sweep: the lock against a second writer, the leftovers of killed
writers, and ``sweep.json`` with the sweep's identity (the layout itself: :mod:`gradlab.experiment.store`).

A folder belongs to one sweep: a sweep refuses a folder whose ``sweep.json`` or any run's manifest shows
another one, so two sweeps never mix in one folder (and the loaders refuse a folder that mixes two).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gradlab.atomic import is_temp_of, write_json
from gradlab.experiment.manifests import (
    FORMAT,
    StoreError,
    check_manifest,
    check_sweep_file,
    read_json,
    sweep_identity,
    sweep_of,
)
from gradlab.experiment.store import CONFIG_COLUMNS, FRAME_FILES, MANIFEST, RUNS_DIR, RUNS_FILE, SWEEP_FILE

if TYPE_CHECKING:
    from gradlab.experiment.config import Config


def clean_temp_files(out: str | Path) -> int:
    """Remove the temp files a killed writer of this folder left behind (only those: never a user's own
    ``.*.tmp`` files); call only while holding the folder's lock."""
    n = 0
    root = Path(out)
    spots = [(root, (SWEEP_FILE, RUNS_FILE))]
    spots += [(d, (MANIFEST, *FRAME_FILES)) for d in root.glob(f"{RUNS_DIR}/*") if d.is_dir()]
    for folder, targets in spots:
        for p in folder.glob(".*"):
            if is_temp_of(p.name, targets):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                    n += 1
    return n


@contextlib.contextmanager
def locked(out: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on a results folder, so two sweeps never write into it at once."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    path = Path(out) / ".lock"
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            msg = f"{out} is in use by another running sweep; wait for it or use another folder"
            raise StoreError(msg) from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def write_sweep_file(out: str | Path, configs: list[Config], sweep: Mapping[str, Any] | None = None) -> str:
    """Claim the folder for these runs (and the sweep they come from: ``Sweep.describe()``, if any):
    write ``sweep.json`` with the sweep's identity and return it. Refuse if ``sweep.json`` or any run's
    manifest shows another sweep; a damaged ``sweep.json`` is rewritten once the runs show none."""
    out = Path(out)
    path = out / SWEEP_FILE
    sweep = sweep or {}
    ids = [c.key() for c in configs]
    name = sweep.get("name", "")
    sid = sweep_identity(ids, name)
    info = {
        "format": FORMAT,
        "id": sid,
        "name": name,
        "description": sweep.get("description", ""),
        "path": sweep.get("path"),
        "source": sweep.get("source"),
        "runs": [{"run": c.key(), "name": c.name, "config": c.to_dict()} for c in configs],
    }
    old = None
    with contextlib.suppress(FileNotFoundError, StoreError):
        old = check_sweep_file(read_json(path, ""), path, "")
    if old is not None:
        old_ids = [r["run"] for r in old["runs"]]
        if sorted(old_ids) != sorted(ids):
            n, called = len(set(old_ids) - set(ids)), old.get("name") or "unnamed"
            raise _another_sweep(out, f"{called}: {len(old_ids)} runs, {n} not in this one")
        if old.get("id", sid) != sid:
            raise _another_sweep(out, f"the same runs named {old.get('name') or '(unnamed)'!r}, not {name!r}")
    wanted = set(ids)
    for p in sorted(out.glob(f"{RUNS_DIR}/*/{MANIFEST}")):
        m = None
        with contextlib.suppress(OSError, StoreError):
            m = check_manifest(read_json(p, ""), p, "", CONFIG_COLUMNS)
        if p.parent.name not in wanted:
            raise _another_sweep(out, f"{p.parent} is not one of its runs")
        if m is not None and sweep_of(m) not in (None, sid):
            raise _another_sweep(out, f"{p} belongs to sweep {m['sweep'].get('name') or m['sweep']['id']!r}")
    if old != info:
        write_json(path, info)
    return sid


def _another_sweep(out: Path, what: str) -> StoreError:
    return StoreError(f"{out} holds a different sweep ({what}); use another --out folder, or delete {out}")
