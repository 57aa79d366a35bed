"""The results folder: its layout, writing runs into it, and loading it back as the frames of docs/data.md.

Layout of a results folder ``DIR``::

    DIR/sweep.json                      the sweep: its TOML text (if any) and every run's id, name, config
    DIR/runs.parquet                    the runs table, rebuilt from the manifests at the end of a sweep
    DIR/runs/<run_id>/metrics.parquet   tidy metrics frame of one run (run, step, layer, metric, value)
    DIR/runs/<run_id>/hists.parquet     tidy histogram frame (run, step, layer, quantity, bin, count)
    DIR/runs/<run_id>/layers.parquet    layers table (run, layer, kind, position, activation, shape)
    DIR/runs/<run_id>/manifest.json     config, status, divergence, timing, versions; written LAST

Every file is written atomically (temporary file in the same folder, fsync, ``os.replace``), so a reader
never sees a partial file. A run is finished when its manifest is well-formed, has status ``ok`` or
``diverged``, and its Parquet files match the sizes and SHA-256 digests it records: "finished" means
"every reader loads it", and a rerun redoes any other run. ``<run_id>`` is ``Config.key()``. A failed run
has a manifest with status ``failed`` and its traceback, and no Parquet files.

A folder belongs to one sweep: ``sweep.json`` and every manifest carry the sweep's identity
(:func:`gradlab.experiment.manifests.sweep_identity`); a sweep refuses a folder holding another one's
runs, and the loaders refuse a folder that mixes two.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import platform
import socket
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gradlab.atomic import write_bytes, write_frame, write_json
from gradlab.experiment.manifests import (
    FORMAT,
    StoreError,
    check_manifest,
    check_sweep_file,
    digest,
    identity_of,
    read_json,
    sweep_of,
)
from gradlab.experiment.memory import returning_pool
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
FINISHED = ("ok", "diverged")
FRAME_FILES = {METRICS_FILE: METRICS_DTYPES, HISTS_FILE: HISTS_DTYPES, LAYERS_FILE: LAYERS_DTYPES}
"""A finished run's Parquet files and the columns each holds."""
CODED = ("run", "layer", "metric")  # read dictionary-encoded (a few bytes a row)
REDO = "rerun the sweep into its folder to redo that run"

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
NULLABLE = {"int64": "Int64", "bool": "boolean"}
"""Config columns are nullable in the runs table: a run recorded outside gradlab (a PyTorch model, an
Observer) has only some of them (optimizer, lr, batch_size, …)."""
RUNS_COLUMNS: dict[str, str] = {
    "run": "string",
    "name": "string",
    "framework": "string",
    "model": "string",
    "n_params": "Int64",
    **{k: NULLABLE.get(v, v) for k, v in CONFIG_COLUMNS.items()},
    "status": "string",
    "diverged_step": "Int64",
    "diverged_layer": "string",
    "final_loss": "float64",
    "wall_time_s": "float64",
    "error": "string",
}

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
        "format": FORMAT, "run": run_id, "key": config.key(), "name": config.name, "config": config.to_dict(),
        "seed": config.seed, "status": "failed", "steps_done": None, "diverged_step": None,
        "diverged_layer": None, "final_loss": None, "wall_time_s": None, "cpu_time_s": None, "started": None,
        "finished": None, "error": None, "host": socket.gethostname(), "versions": _versions(),
        "blas": [],  # the BLAS libraries and threads the run had (runner fills it in)
        "sweep": None,  # {"id", "name"} of the sweep it belongs to (the runner fills it in)
    }


# -- layout --------------------------------------------------------------------------------------
def run_dir(out: str | Path, run_id: str) -> Path:
    """The folder of one run."""
    return Path(out) / RUNS_DIR / run_id


def read_manifest(out: str | Path, run_id: str) -> dict[str, Any] | None:
    """The manifest of a run if it is there and well-formed, else None (never started, killed before
    finishing, or damaged: in each case the run is redone)."""
    path = run_dir(out, run_id) / MANIFEST
    try:
        return check_manifest(read_json(path, REDO), path, REDO, CONFIG_COLUMNS, run_id)
    except (OSError, ValueError):
        return None


def is_finished(out: str | Path, run_id: str, sweep_id: str | None = None) -> bool:
    """True if every reader loads the run: a well-formed manifest for this exact id (and sweep, when
    given) with status ok or diverged, and each Parquet file it records, intact."""
    m = read_manifest(out, run_id)
    if m is None or m.get("key") != run_id or m["status"] not in FINISHED:
        return False
    if sweep_id is not None and sweep_of(m) not in (None, sweep_id):
        return False
    try:
        for name in FRAME_FILES:
            _frame_bytes(run_dir(out, run_id) / name, m)
    except (OSError, StoreError):
        return False
    return True


def _frame_bytes(path: Path, manifest: dict[str, Any]) -> bytes:
    """A run's Parquet file, checked against the size and digest in its manifest (format 1 manifests
    record none: then the file's footer is read); raises OSError or StoreError."""
    data = path.read_bytes()
    recorded = (manifest.get("files") or {}).get(path.name)
    if recorded is not None:
        if digest(data) != {"bytes": recorded["bytes"], "sha256": recorded["sha256"]}:
            why = (f"{len(data)} bytes, where its manifest records {recorded['bytes']}"
                   if len(data) != recorded["bytes"] else "its SHA-256 is not the one its manifest records")
            raise StoreError(f"{path} is damaged ({why}); {REDO}")
        return data
    import pyarrow.parquet as pq

    try:
        names = set(pq.read_schema(io.BytesIO(data)).names)
    except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
        raise StoreError(f"{path} is damaged ({_first_line(exc)}); {REDO}") from None
    missing = [c for c in FRAME_FILES[path.name] if c not in names]
    if missing:
        raise StoreError(f"{path} is damaged (no column {missing[0]!r}); {REDO}")
    return data


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def write_run(
    out: str | Path,
    manifest: dict[str, Any],
    metrics: bytes | None,
    hists: bytes | None,
    layers: bytes | None = None,
) -> Path:
    """Write one run's files: Parquet first, the manifest last (it marks the run finished), recording
    each file's size and digest in it.

    A failed run (``metrics is None``) has stale Parquet files of an earlier attempt removed first.
    """
    d = run_dir(out, manifest["run"])
    d.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, data in ((METRICS_FILE, metrics), (HISTS_FILE, hists), (LAYERS_FILE, layers)):
        if data is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(d / name)
        else:
            write_bytes(d / name, data)
            files[name] = digest(data)
    write_json(d / MANIFEST, {**manifest, "format": FORMAT, "files": files})
    return d


# -- loading -------------------------------------------------------------------------------------
def _load_manifest(path: Path, folder: str | None) -> dict[str, Any]:
    m = check_manifest(read_json(path, REDO), path, REDO, CONFIG_COLUMNS, folder)
    m["_dir"] = path.parent
    return m


def _manifests(root: Path) -> list[dict[str, Any]]:
    """Every run manifest under a results folder (or the one of a single run's folder), sweep order;
    a StoreError when one is damaged or the folder mixes runs of two sweeps."""
    if (root / MANIFEST).exists():
        return [_load_manifest(root / MANIFEST, None)]
    if not (root / RUNS_DIR).is_dir() and not (root / SWEEP_FILE).exists():
        raise StoreError(f"{root} is not a gradlab results folder (no {SWEEP_FILE} or {RUNS_DIR}/)")
    found = [_load_manifest(p, p.parent.name) for p in sorted((root / RUNS_DIR).glob(f"*/{MANIFEST}"))]
    sweep = None
    if (root / SWEEP_FILE).exists():
        path = root / SWEEP_FILE
        redo = "rerun the sweep into this folder to rewrite it"
        sweep = check_sweep_file(read_json(path, redo), path, redo)
    if sweep is not None:
        sid, listed = identity_of(sweep), {r["run"] for r in sweep["runs"]}
        for m in found:
            if m["run"] not in listed or sweep_of(m) not in (None, sid):
                raise StoreError(
                    f"{m['_dir'] / MANIFEST} is a run of another sweep than {root / SWEEP_FILE}; move "
                    f"{m['_dir']} out of {root}, or rerun each sweep into a folder of its own"
                )
    else:
        sweeps = {sweep_of(m): (m["sweep"] or {}).get("name", "") for m in found if sweep_of(m)}
        if len(sweeps) > 1:
            names = ", ".join(repr(n or i) for i, n in sweeps.items())
            raise StoreError(
                f"{root} mixes the runs of {len(sweeps)} sweeps ({names}) and has no {SWEEP_FILE} to say "
                "which is its own; rerun one sweep into this folder (it refuses the other's runs) or move "
                "each sweep's runs/<id> folders into a folder of its own"
            )
    order = {r["run"]: i for i, r in enumerate(sweep["runs"] if sweep else [])}
    return sorted(found, key=lambda m: (order.get(m["run"], len(order)), m["run"]))


def runs_table(manifests: list[dict[str, Any]]) -> pd.DataFrame:
    """The runs table of docs/data.md from manifests: one row per run, fixed columns and dtypes."""
    import pandas as pd

    rows = []
    for m in manifests:
        c = m.get("config") or {}
        rows.append({
            "run": m["run"], "name": c.get("name", m.get("name", "")),
            "framework": m.get("framework", "gradlab"), "model": m.get("model", ""),
            "n_params": m.get("n_params"), **{k: c.get(k) for k in CONFIG_COLUMNS},
            "status": m["status"], "diverged_step": m.get("diverged_step"),
            "diverged_layer": m.get("diverged_layer"), "final_loss": float_from_json(m.get("final_loss")),
            "wall_time_s": float_from_json(m.get("wall_time_s")), "error": m.get("error"),
        })
    df = pd.DataFrame(rows, columns=list(RUNS_COLUMNS))
    return df.astype(RUNS_COLUMNS)


def write_runs_table(out: str | Path) -> pd.DataFrame:
    """Rebuild ``runs.parquet`` from the manifests in the folder and return it."""
    df = runs_table(_manifests(Path(out)))
    write_frame(Path(out) / RUNS_FILE, df)
    return df


def _table(m: dict[str, Any], file: str, columns: Any = None, metrics: Any = None, coded: bool = False):
    """One finished run's rows as an Arrow table (only ``metrics``' rows when given; run, layer, metric
    dictionary-encoded when ``coded``), checked against its manifest; a StoreError naming the file and
    the remedy when it is missing, damaged, or holds another run's rows."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    path = m["_dir"] / file
    try:
        t = pq.read_table(io.BytesIO(_frame_bytes(path, m)), columns=columns,
                          read_dictionary=[c for c in CODED if coded and c in FRAME_FILES[file]] or None)
    except FileNotFoundError:
        raise StoreError(f"{path} is missing although the run's manifest says it finished; {REDO}") from None
    except StoreError:
        raise
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise StoreError(f"{path} is damaged ({_first_line(exc)}); {REDO}") from None
    missing = [c for c in FRAME_FILES[file] if c not in t.column_names and (columns is None or c in columns)]
    if missing:
        raise StoreError(f"{path} is damaged (no column {missing[0]!r}); {REDO}")
    if t.num_rows and {str(r) for r in pc.unique(t["run"]).to_pylist()} != {m["run"]}:
        raise StoreError(f"{path} holds rows of another run than {m['run']}; {REDO}")
    if metrics is not None and t.num_rows:  # by dictionary code: 3× cheaper than a string filter
        metric = t["metric"].combine_chunks()
        metric = metric if pa.types.is_dictionary(metric.type) else metric.dictionary_encode()
        t = t.filter(pc.take(pc.is_in(metric.dictionary, value_set=pa.array(list(metrics))), metric.indices))
    return t


def _read_frames(manifests: list[dict[str, Any]], file: str, dtypes: dict[str, str], metrics: Any = None,
                 coded: bool = False) -> pd.DataFrame:
    """Every finished run's rows, joined in Arrow and converted once (a pandas concat of 1,000 frames
    held them twice; pandas' "string" wraps Arrow's strings uncopied); ``coded``: run, layer, metric as
    categoricals."""
    import pandas as pd
    import pyarrow as pa

    dtypes = {k: "category" if coded and k in CODED else v for k, v in dtypes.items()}
    with returning_pool():
        parts = [_table(m, file, list(dtypes), metrics, coded) for m in manifests if m["status"] in FINISHED]
        if not parts:
            return pd.DataFrame({k: pd.Series(dtype=v) for k, v in dtypes.items()})
        try:
            table, parts = pa.concat_tables(parts, promote_options="permissive"), []
            as_string = {pa.large_string(): pd.StringDtype("pyarrow"), pa.string(): pd.StringDtype("pyarrow")}
            return table.to_pandas(self_destruct=True, types_mapper=as_string.get).astype(dtypes)
        except (TypeError, ValueError, pa.ArrowException) as exc:
            where = manifests[0]["_dir"].parent if len(manifests) > 1 else manifests[0]["_dir"]
            raise StoreError(f"a {file} under {where} has a column of the wrong type ({_first_line(exc)}); "
                             f"{REDO}") from None


def load_results(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs table, tidy metrics frame) of a results folder, or of one run's folder (docs/data.md).

    Failed runs are rows of the runs table with no metrics. Runs still in progress (no manifest) are absent.
    """
    manifests = _manifests(Path(path))
    return runs_table(manifests), _read_frames(manifests, METRICS_FILE, METRICS_DTYPES)


def read_results(path: str | Path, metrics: Any = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`load_results` for gradlab's readers: only ``metrics``' rows (None: all), names coded."""
    manifests = _manifests(Path(path))
    return runs_table(manifests), _read_frames(manifests, METRICS_FILE, METRICS_DTYPES, metrics, True)


def load_hists(path: str | Path) -> pd.DataFrame:
    """The tidy histogram frame of every finished run in a results folder (or one run's folder)."""
    return _read_frames(_manifests(Path(path)), HISTS_FILE, HISTS_DTYPES)


def load_layers(path: str | Path) -> pd.DataFrame:
    """The layers table of every finished run in a results folder (or one run's folder): kind, forward
    position, activation and shape per run and layer. A run saved without one gets it inferred from
    its metrics (:func:`gradlab.records.infer_layers`)."""
    import pandas as pd

    done = [m for m in _manifests(Path(path)) if m["status"] in FINISHED]
    old = {id(m) for m in done if not (m["_dir"] / LAYERS_FILE).exists()
           and LAYERS_FILE not in (m.get("files") or {})}  # written before runs had a layers table
    if not old:
        return _read_frames(done, LAYERS_FILE, LAYERS_DTYPES)
    parts = [infer_layers(_table(m, METRICS_FILE, ["run", "layer", "metric"]).to_pandas()) if id(m) in old
             else _table(m, LAYERS_FILE).to_pandas() for m in done]
    return pd.concat(parts, ignore_index=True)[list(LAYERS_DTYPES)].astype(LAYERS_DTYPES)
