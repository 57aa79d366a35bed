"""Results folder: atomic writes, manifest-last, loading with the exact columns of docs/data.md."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pandas as pd
import pytest
from helpers import DIVERGES, TINY

from gradlab import atomic
from gradlab.experiment import store
from gradlab.experiment.config import Config
from gradlab.experiment.runner import run_sweep

RUNS_DOC_COLUMNS = [  # docs/data.md, "Runs table", in order
    "run", "name", "depth", "width", "activation", "init", "weight_scale", "bias_scale", "batch_norm",
    "layer_norm", "residual", "dropout", "clip_norm", "clip_value", "optimizer", "lr", "momentum",
    "weight_decay", "dataset", "n_samples", "input_dim", "n_classes", "batch_size", "steps", "dtype", "seed",
    "status", "diverged_step", "diverged_layer", "final_loss", "wall_time_s", "error",
]  # fmt: skip


def visible(d) -> list[str]:
    return sorted(p for p in os.listdir(d) if not p.startswith("."))


def test_atomic_write_leaves_nothing_when_the_writer_fails(tmp_path):
    target = tmp_path / "metrics.parquet"

    def half(f):
        f.write(b"PAR1 partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic.atomic_write(target, half)
    assert os.listdir(tmp_path) == []  # neither the target nor a temp file


def test_atomic_write_keeps_the_old_file_until_the_new_one_is_complete(tmp_path):
    target = tmp_path / "manifest.json"
    atomic.write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        atomic.atomic_write(target, lambda f: (f.write(b"{"), (_ for _ in ()).throw(RuntimeError("boom"))))
    assert json.loads(target.read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["manifest.json"]
    atomic.write_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}


def test_write_json_is_strict_and_floats_round_trip():
    with pytest.raises(ValueError):
        atomic.write_json("/nonexistent-never-written", {"x": math.nan})
    for x in (1.5, math.inf, -math.inf):
        assert store.float_from_json(json.loads(json.dumps(store.float_to_json(x)))) == x
    assert math.isnan(store.float_from_json(store.float_to_json(math.nan)))
    assert math.isnan(store.float_from_json(None))


def test_manifest_is_written_last(tmp_path, monkeypatch):
    order = []
    real = atomic.atomic_write
    monkeypatch.setattr(atomic, "atomic_write", lambda p, write: (order.append(Path(p).name), real(p, write)))
    manifest = {"run": "abc", "key": "abc", "status": "ok"}
    store.write_run(tmp_path, manifest, b"m", b"h")
    assert order == ["metrics.parquet", "hists.parquet", "manifest.json"]
    assert store.is_finished(tmp_path, "abc")


def test_a_failed_run_removes_stale_frames(tmp_path):
    store.write_run(tmp_path, {"run": "abc", "key": "abc", "status": "ok"}, b"m", b"h")
    store.write_run(tmp_path, {"run": "abc", "key": "abc", "status": "failed"}, None, None)
    assert visible(tmp_path / "runs" / "abc") == ["manifest.json"]
    assert not store.is_finished(tmp_path, "abc")


def test_is_finished_needs_a_matching_key_and_a_final_status(tmp_path):
    assert not store.is_finished(tmp_path, "abc")
    d = store.run_dir(tmp_path, "abc")
    d.mkdir(parents=True)
    (d / "metrics.parquet").write_bytes(b"killed before the manifest")
    assert not store.is_finished(tmp_path, "abc")
    (d / "manifest.json").write_text('{"run": "abc", "key": "other", "status": "ok"}')
    assert not store.is_finished(tmp_path, "abc")
    (d / "manifest.json").write_text("{ truncated")
    assert not store.is_finished(tmp_path, "abc")
    (d / "manifest.json").write_text('{"run": "abc", "key": "abc", "status": "diverged"}')
    assert store.is_finished(tmp_path, "abc")


def test_clean_temp_files(tmp_path):
    d = store.run_dir(tmp_path, "abc")
    d.mkdir(parents=True)
    (d / ".metrics.parquet.x1.tmp").write_bytes(b"")
    (tmp_path / ".runs.parquet.x2.tmp").write_bytes(b"")
    (d / "metrics.parquet").write_bytes(b"")
    assert store.clean_temp_files(tmp_path) == 2
    assert os.listdir(d) == ["metrics.parquet"]


def test_the_folder_lock_refuses_a_second_writer(tmp_path):
    with (
        store.locked(tmp_path),
        pytest.raises(store.StoreError, match="in use by another"),
        store.locked(tmp_path),
    ):
        pass
    with store.locked(tmp_path):  # released
        pass


def test_a_folder_holding_another_sweep_is_refused(tmp_path):
    run_sweep([Config(**TINY)], tmp_path, jobs=0)
    with pytest.raises(store.StoreError, match="holds a different sweep"):
        run_sweep([Config(**TINY, seed=1)], tmp_path, jobs=0)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    configs = [
        Config(**TINY, name="a"),
        Config(**DIVERGES, name="boom"),
        Config(**TINY, seed=1, name="b"),
    ]
    summary = run_sweep(configs, out, jobs=0)
    return out, configs, summary


def test_results_folder_layout(results):
    out, configs, _ = results
    assert visible(out) == ["runs", "runs.parquet", "sweep.json"]
    assert visible(out / "runs") == sorted(c.key() for c in configs)
    for c in configs:
        files = ["hists.parquet", "layers.parquet", "manifest.json", "metrics.parquet"]
        assert visible(out / "runs" / c.key()) == files
    m = json.loads((out / "runs" / configs[0].key() / "manifest.json").read_text())
    for k in ("config", "status", "seed", "diverged_step", "diverged_layer", "final_loss", "wall_time_s"):
        assert k in m
    assert m["started"] <= m["finished"]
    assert set(m["versions"]) == {"python", "numpy", "pandas", "pyarrow", "gradlab"}
    sweep = json.loads((out / "sweep.json").read_text())
    assert [r["run"] for r in sweep["runs"]] == [c.key() for c in configs]


def test_load_results_has_exactly_the_documented_columns_and_dtypes(results):
    out, configs, _ = results
    runs, metrics = store.load_results(out)
    assert list(runs.columns) == RUNS_DOC_COLUMNS
    assert list(runs["run"]) == [c.key() for c in configs]  # sweep order
    assert list(runs["name"]) == ["a", "boom", "b"]
    dt = runs.dtypes
    assert dt["diverged_step"] == "Int64"
    assert dt["run"] == dt["name"] == dt["status"] == dt["diverged_layer"] == dt["error"] == "string"
    assert dt["depth"] == dt["seed"] == "int64"
    assert str(dt["batch_norm"]) == "bool"
    assert dt["lr"] == dt["final_loss"] == dt["wall_time_s"] == "float64"
    assert list(runs["status"]) == ["ok", "diverged", "ok"]
    assert runs["diverged_step"].isna().tolist() == [True, False, True]
    assert runs["error"].isna().all()
    assert list(metrics.columns) == ["run", "step", "layer", "metric", "value"]
    assert [str(t) for t in metrics.dtypes] == ["string", "int64", "string", "string", "float64"]
    assert set(metrics["run"]) == set(runs["run"])
    assert runs.equals(pd.read_parquet(out / "runs.parquet").astype(runs.dtypes.to_dict()))
    hists = store.load_hists(out)
    assert list(hists.columns) == ["run", "step", "layer", "quantity", "bin", "count"]
    assert set(hists["quantity"]) <= {"act", "grad"}


def test_load_results_on_one_run_folder(results):
    out, configs, _ = results
    runs, metrics = store.load_results(out / "runs" / configs[2].key())
    assert list(runs.columns) == RUNS_DOC_COLUMNS
    assert list(runs["run"]) == [configs[2].key()] and set(metrics["run"]) == {configs[2].key()}


def test_load_results_on_something_else_is_a_clear_error(tmp_path):
    with pytest.raises(store.StoreError, match="not a gradlab results folder"):
        store.load_results(tmp_path)


def test_a_damaged_manifest_is_named_by_the_loader_and_redone_by_a_rerun(tmp_path):
    c = Config(**TINY)
    run_sweep([c], tmp_path, jobs=0)
    path = tmp_path / "runs" / c.key() / "manifest.json"
    path.write_text('{"run": ')
    with pytest.raises(store.StoreError, match=r"manifest\.json is damaged"):
        store.load_results(tmp_path)
    s = run_sweep([c], tmp_path, jobs=0)
    assert (s.skipped, s.ok) == (0, 1)
    assert len(store.load_results(tmp_path)[0]) == 1


def test_the_runs_table_holds_every_config_field_with_its_type():
    import dataclasses

    recording = {"name", "record_every", "hist_every", "record_layers", "record_stats", "dead_window"}
    fields = {f.name: f.type for f in dataclasses.fields(Config) if f.name not in recording}
    assert set(store.CONFIG_COLUMNS) == set(fields)
    dtype_of = {"int": "int64", "float": "float64", "str": "string", "bool": "bool"}
    assert {k: dtype_of[str(t)] for k, t in fields.items()} == store.CONFIG_COLUMNS
