"""The results folder: its layout, writing runs into it, and loading it back as the frames of docs/data.md.

Layout of a results folder ``DIR``::

    DIR/sweep.json                      the sweep: its TOML text (if any) and every run's id, name, config
    DIR/runs.parquet                    the runs table, rebuilt from the manifests at the end of a sweep
    DIR/runs/<run_id>/metrics.parquet   tidy metrics frame of one run (run, step, layer, metric, value)
    DIR/runs/<run_id>/hists.parquet     tidy histogram frame (run, step, layer, quantity, bin, count)
    DIR/runs/<run_id>/layers.parquet    layers table (run, layer, kind, position, activation, shape)
    DIR/runs/<run_id>/manifest.json     config, status, divergence, timing, versions; written LAST

Every file is written atomically (temporary file in the same folder, fsync, ``os.replace``), so a reader
never sees a partial file and a run is finished exactly when its manifest exists with status ``ok`` or
``diverged``. ``<run_id>`` is ``Config.key()``. A failed run has a manifest with status ``failed`` and its
traceback, and no Parquet files.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import socket
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gradlab.atomic import write_bytes, write_frame, write_json
from gradlab.records import HISTS_DTYPES, LAYERS_DTYPES, METRICS_DTYPES, infer_layers

if TYPE_CHECKING:
    import pandas as pd

    from gradlab.experiment.config import Config

MANIFEST = "manifest.json"
METRICS_FILE = "metrics.parquet"
HISTS_FILE = "hists.parquet"
LAYERS_FILE = "layers.parquet"
SWEEP_FILE = "sweep.json"
RUNS_FILE = "runs.parquet"
RUNS_DIR = "runs"
FORMAT = 1
FINISHED = ("ok", "diverged")

# The runs table of docs/data.md: these columns, in this order, with these dtypes.
CONFIG_COLUMNS: dict[str, str] = {
    "depth": "int64",
    "width": "int64",
    "activation": "string",
    "init": "string",
    "weight_scale": "float64",
    "bias_scale": "float64",
    "batch_norm": "bool",
    "layer_norm": "bool",
    "residual": "bool",
    "dropout": "float64",
    "clip_norm": "float64",
    "clip_value": "float64",
    "optimizer": "string",
    "lr": "float64",
    "momentum": "float64",
    "weight_decay": "float64",
    "dataset": "string",
    "n_samples": "int64",
    "input_dim": "int64",
    "n_classes": "int64",
    "batch_size": "int64",
    "steps": "int64",
    "dtype": "string",
    "seed": "int64",
}
RUNS_COLUMNS: dict[str, str] = {
    "run": "string",
    "name": "string",
    **CONFIG_COLUMNS,
    "status": "string",
    "diverged_step": "Int64",
    "diverged_layer": "string",
    "final_loss": "float64",
    "wall_time_s": "float64",
    "error": "string",
}
class StoreError(ValueError):
    """A results folder is missing, damaged, or holds a different sweep."""


def float_to_json(x: float | None) -> float | str | None:
    """A float for strict JSON: non-finite values become the strings "nan", "inf", "-inf"."""
    if x is None:
        return None
    return x if math.isfinite(x) else str(float(x))


def float_from_json(x: float | str | None) -> float:
    """Inverse of :func:`float_to_json` (None → NaN)."""
    return math.nan if x is None else float(x)


# -- manifests -----------------------------------------------------------------------------------
@cache
def _versions() -> dict[str, str]:
    import numpy
    import pandas
    import pyarrow

    from gradlab.version import __version__

    return {
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "pandas": pandas.__version__,
        "pyarrow": pyarrow.__version__,
        "gradlab": __version__,
    }


def new_manifest(config: Config, run_id: str) -> dict[str, Any]:
    """A run's manifest with every key, filled as for a run that has not succeeded (yet)."""
    return {
        "format": FORMAT,
        "run": run_id,
        "key": config.key(),
        "name": config.name,
        "config": config.to_dict(),
        "seed": config.seed,
        "status": "failed",
        "steps_done": None,
        "diverged_step": None,
        "diverged_layer": None,
        "final_loss": None,
        "wall_time_s": None,
        "cpu_time_s": None,
        "started": None,
        "finished": None,
        "error": None,
        "host": socket.gethostname(),
        "versions": _versions(),
        "blas": [],  # the BLAS libraries and threads the run had (runner fills it in)
    }


# -- layout --------------------------------------------------------------------------------------
def run_dir(out: str | Path, run_id: str) -> Path:
    """The folder of one run."""
    return Path(out) / RUNS_DIR / run_id


def read_manifest(out: str | Path, run_id: str) -> dict[str, Any] | None:
    """The manifest of a run, or None if it has none (never started, or killed before finishing)."""
    try:
        return json.loads((run_dir(out, run_id) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing, or unreadable: unfinished, so the run is redone
        return None


def is_finished(out: str | Path, run_id: str) -> bool:
    """True if the run has a manifest for this exact id with status ok or diverged."""
    m = read_manifest(out, run_id)
    return m is not None and m.get("key") == run_id and m.get("status") in FINISHED


def write_run(
    out: str | Path,
    manifest: dict[str, Any],
    metrics: bytes | None,
    hists: bytes | None,
    layers: bytes | None = None,
) -> Path:
    """Write one run's files: Parquet first, the manifest last (it marks the run finished).

    A failed run (``metrics is None``) has stale Parquet files of an earlier attempt removed first.
    """
    d = run_dir(out, manifest["run"])
    d.mkdir(parents=True, exist_ok=True)
    for name, data in ((METRICS_FILE, metrics), (HISTS_FILE, hists), (LAYERS_FILE, layers)):
        if data is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(d / name)
        else:
            write_bytes(d / name, data)
    write_json(d / MANIFEST, manifest)
    return d


def clean_temp_files(out: str | Path) -> int:
    """Remove temp files a killed writer left behind (call only while holding the folder's lock)."""
    n = 0
    root = Path(out)
    for p in [*root.glob(".*.tmp"), *root.glob(f"{RUNS_DIR}/*/.*.tmp")]:
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


def write_sweep_file(out: str | Path, configs: list[Config], sweep: Mapping[str, Any] | None = None) -> None:
    """Write ``sweep.json`` for these runs (and the sweep they come from: ``Sweep.describe()``, if any);
    refuse if the folder already holds a sweep with other runs."""
    path = Path(out) / SWEEP_FILE
    sweep = sweep or {}
    info = {
        "format": FORMAT,
        "name": sweep.get("name", ""),
        "description": sweep.get("description", ""),
        "path": sweep.get("path"),
        "source": sweep.get("source"),
        "runs": [{"run": c.key(), "name": c.name, "config": c.to_dict()} for c in configs],
    }
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
            old_ids = [r["run"] for r in old["runs"]]
        except (OSError, ValueError, KeyError, TypeError):
            raise StoreError(f"{path} is damaged; delete it or use another folder") from None
        new_ids = [r["run"] for r in info["runs"]]
        if sorted(old_ids) != sorted(new_ids):
            raise StoreError(
                f"{out} holds a different sweep ({len(old_ids)} runs, {len(set(old_ids) - set(new_ids))} "
                "not in this one); use another --out folder or delete it"
            )
        if old == info:
            return
    write_json(path, info)


# -- loading -------------------------------------------------------------------------------------
def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise StoreError(
            f"{path} is damaged ({exc}); delete it and rerun the sweep to redo that run"
        ) from None


def _manifests(root: Path) -> list[dict[str, Any]]:
    """Every run manifest under a results folder (or the one of a single run's folder), sweep order."""
    if (root / MANIFEST).exists():
        m = _read_json(root / MANIFEST)
        m["_dir"] = root
        return [m]
    if not (root / RUNS_DIR).is_dir() and not (root / SWEEP_FILE).exists():
        raise StoreError(f"{root} is not a gradlab results folder (no {SWEEP_FILE} or {RUNS_DIR}/)")
    found = {}
    for p in sorted((root / RUNS_DIR).glob(f"*/{MANIFEST}")):
        m = _read_json(p)
        m["_dir"] = p.parent
        found[m["run"]] = m
    sweep = _read_json(root / SWEEP_FILE) if (root / SWEEP_FILE).exists() else {"runs": []}
    order = {r["run"]: i for i, r in enumerate(sweep["runs"])}
    return sorted(found.values(), key=lambda m: (order.get(m["run"], len(order)), m["run"]))


def runs_table(manifests: list[dict[str, Any]]) -> pd.DataFrame:
    """The runs table of docs/data.md from manifests: one row per run, fixed columns and dtypes."""
    import pandas as pd

    rows = []
    for m in manifests:
        c = m["config"]
        rows.append(
            {
                "run": m["run"],
                "name": c.get("name", ""),
                **{k: c[k] for k in CONFIG_COLUMNS},
                "status": m["status"],
                "diverged_step": m.get("diverged_step"),
                "diverged_layer": m.get("diverged_layer"),
                "final_loss": float_from_json(m.get("final_loss")),
                "wall_time_s": float_from_json(m.get("wall_time_s")),
                "error": m.get("error"),
            }
        )
    df = pd.DataFrame(rows, columns=list(RUNS_COLUMNS))
    return df.astype(RUNS_COLUMNS)


def write_runs_table(out: str | Path) -> pd.DataFrame:
    """Rebuild ``runs.parquet`` from the manifests in the folder and return it."""
    df = runs_table(_manifests(Path(out)))
    write_frame(Path(out) / RUNS_FILE, df)
    return df


def _read_frames(manifests: list[dict[str, Any]], file: str, dtypes: dict[str, str]) -> pd.DataFrame:
    import pandas as pd

    parts = []
    for m in manifests:
        if m["status"] not in FINISHED:
            continue
        path = m["_dir"] / file
        try:
            parts.append(pd.read_parquet(path, engine="pyarrow"))
        except FileNotFoundError:
            raise StoreError(f"{path} is missing although the run's manifest says it finished") from None
    if not parts:
        return pd.DataFrame({k: pd.Series(dtype=v) for k, v in dtypes.items()})
    df = pd.concat(parts, ignore_index=True)
    return df[list(dtypes)].astype(dtypes)


def load_results(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs table, tidy metrics frame) of a results folder, or of one run's folder (docs/data.md).

    Failed runs are rows of the runs table with no metrics. Runs still in progress (no manifest) are absent.
    """
    manifests = _manifests(Path(path))
    return runs_table(manifests), _read_frames(manifests, METRICS_FILE, METRICS_DTYPES)


def load_hists(path: str | Path) -> pd.DataFrame:
    """The tidy histogram frame of every finished run in a results folder (or one run's folder)."""
    return _read_frames(_manifests(Path(path)), HISTS_FILE, HISTS_DTYPES)


def load_layers(path: str | Path) -> pd.DataFrame:
    """The layers table of every finished run in a results folder (or one run's folder): kind, forward
    position, activation and shape per run and layer. A run saved without one gets it inferred from
    its metrics (:func:`gradlab.records.infer_layers`)."""
    import pandas as pd

    parts = []
    for m in _manifests(Path(path)):
        if m["status"] not in FINISHED:
            continue
        try:
            parts.append(pd.read_parquet(m["_dir"] / LAYERS_FILE, engine="pyarrow"))
        except FileNotFoundError:
            cols = ["run", "layer", "metric"]
            metrics = pd.read_parquet(m["_dir"] / METRICS_FILE, engine="pyarrow", columns=cols)
            parts.append(infer_layers(metrics))
    if not parts:
        return pd.DataFrame({k: pd.Series(dtype=v) for k, v in LAYERS_DTYPES.items()})
    return pd.concat(parts, ignore_index=True)[list(LAYERS_DTYPES)].astype(LAYERS_DTYPES)
