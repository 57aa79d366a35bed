"""What a results folder's JSON files must hold, checked on every read: a run's ``manifest.json``, the
folder's ``sweep.json``, the sweep's identity, and the digests that tie a manifest to its Parquet files.

A file that is not JSON, or JSON of the wrong shape, raises a one-line :class:`StoreError` that names
the file and the remedy; :func:`gradlab.experiment.store.is_finished` treats such a run as unfinished,
so the next rerun of the sweep redoes it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

FORMAT = 2
"""Manifest and sweep.json format: 2 adds the sweep's identity and each Parquet file's digest."""
FORMATS = (1, 2)
STATUSES = ("ok", "diverged", "failed")
INT64 = (-(2**63), 2**63 - 1)

class StoreError(ValueError):
    """A results folder is missing, damaged, or holds a different sweep (one-line message)."""


def sweep_identity(run_ids: Iterable[str], name: str) -> str:
    """A sweep's 12-hex identity: its name and the sorted ids of its runs."""
    blob = json.dumps({"name": name, "runs": sorted(run_ids)}, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def digest(data: bytes) -> dict[str, Any]:
    """What a manifest records of one of its run's files: size and SHA-256."""
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def read_json(path: Path, remedy: str) -> Any:
    """The JSON in ``path``; a StoreError naming it (with ``remedy``) if it cannot be read or parsed."""
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else f"not JSON: {exc}"
        raise StoreError(f"{path} is damaged ({why}); {remedy}") from None


# -- shapes --------------------------------------------------------------------------------------
def _text(v: Any) -> bool:
    if not isinstance(v, str):
        return False
    try:
        v.encode("utf-8")  # a lone surrogate ("\ud800" in JSON) cannot go into Parquet
    except UnicodeEncodeError:
        return False
    return True


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and INT64[0] <= v <= INT64[1]


def _number(v: Any) -> bool:
    """A JSON number, or one of the strings ``store.float_to_json`` writes for non-finite floats."""
    if isinstance(v, str):
        return v in ("nan", "inf", "-inf")
    return isinstance(v, (int, float)) and not isinstance(v, bool) and (
        isinstance(v, float) or INT64[0] <= v <= INT64[1]
    )


_IS = {"int64": _int, "float64": _number, "bool": lambda v: isinstance(v, bool),
       "boolean": lambda v: isinstance(v, bool), "string": _text}
_WHAT = {"int64": "an integer within int64", "float64": "a number", "bool": "true or false",
         "boolean": "true or false", "string": "a string"}


def _problem(m: Any, folder: str | None, columns: dict[str, str]) -> str:
    """What is wrong with a manifest's shape ("" when nothing)."""
    if not isinstance(m, dict):
        return f"it holds a JSON {type(m).__name__}, not an object"
    fmt = m.get("format", 1)
    if fmt not in FORMATS:
        if _int(fmt) and fmt > FORMAT:
            return f"format {fmt} is newer than this gradlab reads ({FORMAT}); upgrade gradlab"
        return f"format={fmt!r} is not one of {FORMATS}"
    if not _text(m.get("run")) or not m["run"]:
        return "its 'run' is missing or not a string"
    if folder is not None and m["run"] != folder:
        return f"it describes run {m['run']!r}, not {folder!r} whose folder it is in"
    if m.get("status") not in STATUSES:
        return f"status={m.get('status')!r} is not one of {', '.join(STATUSES)}"
    complete = m.get("framework", "gradlab") == "gradlab"  # a run from elsewhere may leave fields out
    config = m.get("config", None if complete else {})
    if config is None and not complete:
        config = {}
    if not isinstance(config, dict):
        return "its 'config' is missing or not an object"
    for k, dtype in columns.items():
        if k not in config or config[k] is None:
            if complete:
                return f"its config has no {k!r}"
            continue
        if not _IS[dtype.lower()](config[k]):
            return f"config {k}={config[k]!r} is not {_WHAT[dtype.lower()]}"
    optional = {"name": _text, "key": _text, "diverged_layer": _text, "error": _text, "framework": _text,
                "model": _text, "n_params": lambda v: _int(v) and v >= 0,
                "diverged_step": lambda v: _int(v) and v >= 0, "final_loss": _number, "wall_time_s": _number}
    for k, ok in optional.items():
        if m.get(k) is not None and not ok(m[k]):
            return f"{k}={m[k]!r} has the wrong type"
    if config.get("name") is not None and not _text(config["name"]):
        return f"config name={config['name']!r} is not a string"
    sweep = m.get("sweep")
    if sweep is not None and not (isinstance(sweep, dict) and _text(sweep.get("id")) and
                                  _text(sweep.get("name", ""))):
        return "its 'sweep' is not an object with a string 'id'"
    files = m.get("files")
    if files is not None and not (isinstance(files, dict) and all(
            isinstance(f, dict) and _int(f.get("bytes")) and _text(f.get("sha256")) for f in files.values())):
        return "its 'files' is not an object of {'bytes', 'sha256'} digests"
    return ""


def check_manifest(m: Any, path: Path, remedy: str, columns: dict[str, str],
                   folder: str | None = None) -> dict[str, Any]:
    """``m`` if it has a run manifest's shape (every key a reader uses, with its type; ``columns`` are the
    config's, name → dtype), else a StoreError naming ``path``; ``folder``, when given, is the run id its
    folder says it holds."""
    problem = _problem(m, folder, columns)
    if problem:
        raise StoreError(f"{path} is not a valid run manifest: {problem}; {remedy}")
    return m


def sweep_problem(d: Any) -> str:
    """What is wrong with the shape of a ``sweep.json`` ("" when nothing)."""
    if not isinstance(d, dict):
        return f"it holds a JSON {type(d).__name__}, not an object"
    if d.get("format", 1) not in FORMATS:
        return f"format={d.get('format')!r} is not one of {FORMATS}"
    runs = d.get("runs")
    if not isinstance(runs, list) or not all(isinstance(r, dict) and _text(r.get("run")) for r in runs):
        return "its 'runs' is not a list of objects with a string 'run'"
    ids = [r["run"] for r in runs]
    if len(set(ids)) != len(ids):
        return "its 'runs' lists a run twice"
    for k in ("id", "name"):
        if d.get(k) is not None and not _text(d[k]):
            return f"its {k!r} is not a string"
    return ""


def check_sweep_file(d: Any, path: Path, remedy: str) -> dict[str, Any]:
    """``d`` if it has the shape of a ``sweep.json``, else a StoreError naming ``path``."""
    problem = sweep_problem(d)
    if problem:
        raise StoreError(f"{path} is not a valid sweep file: {problem}; {remedy}")
    return d


def identity_of(d: dict[str, Any]) -> str:
    """The identity of the sweep a (checked) ``sweep.json`` describes (computed for format 1)."""
    return d.get("id") or sweep_identity((r["run"] for r in d["runs"]), d.get("name") or "")


def sweep_of(m: dict[str, Any]) -> str | None:
    """The identity of the sweep a (checked) manifest says its run belongs to; None for format 1."""
    sweep = m.get("sweep")
    return sweep["id"] if sweep else None
