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
from gradlab.experiment import folder, store
from gradlab.experiment.config import Config
from gradlab.experiment.runner import run_sweep
from gradlab.records import LAYERS_DTYPES, infer_layers

RUNS_DOC_COLUMNS = [  # docs/data.md, "Runs table", in order
    "run", "name", "framework", "model", "n_params", "depth", "width", "activation", "init",
    "weight_scale", "bias_scale", "batch_norm", "layer_norm", "residual", "dropout", "clip_norm",
    "clip_value", "optimizer", "lr", "momentum", "weight_decay", "dataset", "n_samples", "input_dim",
    "n_classes", "batch_size", "steps", "dtype", "seed", "status", "diverged_step", "diverged_layer",
    "final_loss", "wall_time_s", "error",
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


def toy(status: str = "ok", **changes) -> dict:
    """A well-formed manifest of a tiny config, with its run id renamed "abc"."""
    return {**store.new_manifest(Config(**TINY), "abc"), "key": "abc", "status": status, **changes}


def test_manifest_is_written_last(tmp_path, monkeypatch):
    order = []
    real = atomic.atomic_write
    monkeypatch.setattr(atomic, "atomic_write", lambda p, write: (order.append(Path(p).name), real(p, write)))
    store.write_run(tmp_path, toy(), b"m", b"h", b"l")
    assert order == ["metrics.parquet", "hists.parquet", "layers.parquet", "manifest.json"]
    assert store.is_finished(tmp_path, "abc")


def test_a_failed_run_removes_stale_frames(tmp_path):
    store.write_run(tmp_path, toy(), b"m", b"h", b"l")
    store.write_run(tmp_path, toy("failed"), None, None)
    assert visible(tmp_path / "runs" / "abc") == ["manifest.json"]
    assert not store.is_finished(tmp_path, "abc")


def test_is_finished_needs_a_matching_key_and_a_final_status(tmp_path):
    assert not store.is_finished(tmp_path, "abc")
    d = store.run_dir(tmp_path, "abc")
    d.mkdir(parents=True)
    (d / "metrics.parquet").write_bytes(b"killed before the manifest")
    assert not store.is_finished(tmp_path, "abc")
    store.write_run(tmp_path, toy(key="other"), b"m", b"h", b"l")
    assert not store.is_finished(tmp_path, "abc")
    (d / "manifest.json").write_text("{ truncated")
    assert not store.is_finished(tmp_path, "abc")
    store.write_run(tmp_path, toy("diverged"), b"m", b"h", b"l")
    assert store.is_finished(tmp_path, "abc")


def test_finished_means_every_parquet_file_is_intact(tmp_path):
    store.write_run(tmp_path, toy(), b"metrics", b"hists", b"layers")
    d = store.run_dir(tmp_path, "abc")
    damages = [("metrics.parquet", b"metric"), ("hists.parquet", b"histz"), ("layers.parquet", None)]
    for name, damage in damages:
        original = (d / name).read_bytes()
        if damage is None:
            (d / name).unlink()
        else:
            (d / name).write_bytes(damage)  # truncated, or the same size with other bytes
        assert not store.is_finished(tmp_path, "abc"), name
        (d / name).write_bytes(original)
        assert store.is_finished(tmp_path, "abc")


@pytest.mark.parametrize("shape", ["{}", "[1, 2]", "null", '"text"', "config", "status", "seed", "format"])
def test_a_manifest_of_the_wrong_shape_is_not_finished_and_named_by_the_loader(tmp_path, shape):
    c = Config(**TINY)
    run_sweep([c], tmp_path, jobs=0)
    path = tmp_path / "runs" / c.key() / "manifest.json"
    m = json.loads(path.read_text())
    if shape == "config":
        del m["config"]["depth"]
    elif shape == "status":
        m["status"] = "fine"
    elif shape == "seed":
        m["config"]["seed"] = 2**64
    elif shape == "format":
        m["format"] = 99
    path.write_text(json.dumps(m) if shape in ("config", "status", "seed", "format") else shape)
    assert not store.is_finished(tmp_path, c.key())
    with pytest.raises(store.StoreError) as err:
        store.load_results(tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "rerun the sweep" in msg, msg
    s = run_sweep([c], tmp_path, jobs=0)
    assert (s.skipped, s.ok) == (0, 1)
    assert len(store.load_results(tmp_path)[0]) == 1


def test_clean_temp_files_removes_only_the_writers_own(tmp_path):
    d = store.run_dir(tmp_path, "abc")
    d.mkdir(parents=True)
    (d / ".metrics.parquet.0123abcd.gradlab.tmp").write_bytes(b"")
    (tmp_path / ".runs.parquet.89abcdef.gradlab.tmp").write_bytes(b"")
    (d / "metrics.parquet").write_bytes(b"")
    users = [tmp_path / ".notes.tmp", tmp_path / ".runs.parquet.x2.tmp", d / ".mine.0123abcd.gradlab.tmp"]
    for p in users:
        p.write_bytes(b"a user's file")
    assert folder.clean_temp_files(tmp_path) == 2
    assert sorted(os.listdir(d)) == [".mine.0123abcd.gradlab.tmp", "metrics.parquet"]
    assert all(p.exists() for p in users)


def test_results_files_get_the_modes_the_umask_gives(tmp_path):
    old = os.umask(0o022)
    try:
        run_sweep([Config(**TINY)], tmp_path / "a", jobs=0)
        os.umask(0o077)
        run_sweep([Config(**TINY)], tmp_path / "b", jobs=0)
    finally:
        os.umask(old)
    for where, mode in (("a", 0o644), ("b", 0o600)):
        files = [p for p in (tmp_path / where).rglob("*") if p.is_file() and p.name != ".lock"]
        assert len(files) == 6
        assert {oct(p.stat().st_mode & 0o777) for p in files} == {oct(mode)}, where


def test_the_folder_lock_refuses_a_second_writer(tmp_path):
    with (
        folder.locked(tmp_path),
        pytest.raises(store.StoreError, match="in use by another"),
        folder.locked(tmp_path),
    ):
        pass
    with folder.locked(tmp_path):  # released
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
    assert dt["depth"] == dt["seed"] == "Int64"  # nullable: runs from outside gradlab have no depth
    assert str(dt["batch_norm"]) == "boolean"
    assert list(runs["framework"]) == ["gradlab"] * 3
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


def test_read_results_is_load_results_with_coded_names_and_only_the_metrics_asked_for(results):
    out, _, _ = results
    runs, metrics = store.load_results(out)
    runs2, coded = store.read_results(out)
    assert runs2.equals(runs)
    assert [str(t) for t in coded.dtypes] == ["category", "int64", "category", "category", "float64"]
    assert coded.astype(metrics.dtypes.to_dict()).equals(metrics)
    _, some = store.read_results(out, ("loss", "grad_norm"))
    want = metrics[metrics["metric"].isin(["loss", "grad_norm"])].reset_index(drop=True)
    assert some.astype(metrics.dtypes.to_dict()).equals(want)


def test_load_layers_reads_every_table_and_infers_the_ones_a_run_lacks(results, tmp_path):
    import shutil

    out, configs, _ = results
    layers = store.load_layers(out)
    assert [str(t) for t in layers.dtypes] == [str(t) for t in LAYERS_DTYPES.values()]
    each = [pd.read_parquet(out / "runs" / c.key() / "layers.parquet") for c in configs]
    pd.testing.assert_frame_equal(layers, pd.concat(each, ignore_index=True).astype(LAYERS_DTYPES))
    old = tmp_path / "old"  # the middle run written before runs had a layers table
    shutil.copytree(out, old)
    d = old / "runs" / configs[1].key()
    (d / "layers.parquet").unlink()
    m = json.loads((d / "manifest.json").read_text())
    del m["files"]["layers.parquet"]
    (d / "manifest.json").write_text(json.dumps(m))
    mixed = store.load_layers(old)
    _, metrics = store.load_results(old)
    each[1] = infer_layers(metrics[metrics["run"] == configs[1].key()])
    pd.testing.assert_frame_equal(mixed, pd.concat(each, ignore_index=True).astype(LAYERS_DTYPES))


def test_the_loaders_leave_arrow_s_memory_pool_as_they_found_it(results, monkeypatch):
    import pyarrow as pa

    out, _, _ = results
    before = pa.default_memory_pool().backend_name
    for load in (store.load_results, store.read_results, store.load_layers, store.load_hists):
        load(out)
        assert pa.default_memory_pool().backend_name == before
    monkeypatch.setattr(store, "_table", lambda *a, **k: (_ for _ in ()).throw(store.StoreError("damaged")))
    with pytest.raises(store.StoreError, match="damaged"):
        store.load_results(out)
    assert pa.default_memory_pool().backend_name == before


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


# -- one folder, one sweep --------------------------------------------------------------------------
def test_two_sweeps_never_mix_even_without_sweep_json(tmp_path):
    a = [Config(**TINY, seed=s) for s in range(2)]
    b = [Config(**TINY, seed=s) for s in range(2, 6)]
    run_sweep(a, tmp_path, jobs=0)
    (tmp_path / "sweep.json").unlink()  # what the old "damaged" message advised
    with pytest.raises(store.StoreError, match="holds a different sweep") as err:
        run_sweep(b, tmp_path, jobs=0)
    assert "\n" not in str(err.value) and "use another --out folder" in str(err.value)
    assert len(store.load_results(tmp_path)[0]) == 2  # still sweep a's folder, readable
    s = run_sweep(a, tmp_path, jobs=0)  # the same sweep may come back and rewrite its sweep.json
    assert (s.total, s.skipped) == (2, 2) and (tmp_path / "sweep.json").exists()


def test_a_renamed_sweep_of_the_same_runs_is_another_sweep(tmp_path):
    from gradlab.experiment.sweep import parse_sweep

    text = "[base]\ndepth = 2\nwidth = 8\nsteps = 1\nn_samples = 64\nbatch_size = 16\n"
    run_sweep(parse_sweep('[sweep]\nname = "a"\n' + text), tmp_path, jobs=0)
    with pytest.raises(store.StoreError, match=r"holds a different sweep .the same runs named 'a'"):
        run_sweep(parse_sweep('[sweep]\nname = "b"\n' + text), tmp_path, jobs=0)


def test_the_loaders_refuse_a_folder_that_mixes_two_sweeps(tmp_path):
    import shutil

    a, b = [Config(**TINY, seed=0)], [Config(**TINY, seed=1)]
    run_sweep(a, tmp_path / "a", jobs=0)
    run_sweep(b, tmp_path / "b", jobs=0)
    shutil.copytree(tmp_path / "b" / "runs" / b[0].key(), tmp_path / "a" / "runs" / b[0].key())
    with pytest.raises(store.StoreError, match="is a run of another sweep than") as err:
        store.load_results(tmp_path / "a")
    assert b[0].key() in str(err.value) and "\n" not in str(err.value)
    (tmp_path / "a" / "sweep.json").unlink()
    with pytest.raises(store.StoreError, match="mixes the runs of 2 sweeps"):
        store.load_layers(tmp_path / "a")
    with pytest.raises(store.StoreError, match="holds a different sweep"):
        run_sweep(a, tmp_path / "a", jobs=0)  # and a rerun does not adopt the stray run


def test_a_run_folder_moved_under_another_id_is_named(tmp_path):
    c = Config(**TINY)
    run_sweep([c], tmp_path, jobs=0)
    (tmp_path / "runs" / c.key()).rename(tmp_path / "runs" / "0123456789ab")
    with pytest.raises(store.StoreError, match=r"describes run .* not '0123456789ab' whose folder"):
        store.load_results(tmp_path)


@pytest.mark.parametrize("damage", ["garbage", "[1, 2]", '{"runs": 3}', '{"runs": [{"name": "x"}]}'])
def test_a_damaged_sweep_json_is_named_and_rewritten_by_the_rerun(tmp_path, damage):
    c = Config(**TINY)
    run_sweep([c], tmp_path, jobs=0)
    (tmp_path / "sweep.json").write_text(damage)
    with pytest.raises(store.StoreError, match=r"sweep\.json is (damaged|not a valid sweep file)") as err:
        store.load_results(tmp_path)
    assert "rerun the sweep into this folder" in str(err.value)
    s = run_sweep([c], tmp_path, jobs=0)
    assert s.skipped == 1 and len(store.load_results(tmp_path)[0]) == 1


def test_a_truncated_or_deleted_parquet_file_is_named_and_the_run_redone(tmp_path):
    c = Config(**TINY)
    run_sweep([c], tmp_path, jobs=0)
    _, want = store.load_results(tmp_path)
    d = tmp_path / "runs" / c.key()
    for name, load in (("metrics.parquet", store.load_results), ("hists.parquet", store.load_hists),
                       ("layers.parquet", store.load_layers)):
        data = (d / name).read_bytes()
        for damage in (data[: len(data) // 2], None):
            if damage is None:
                (d / name).unlink()
            else:
                (d / name).write_bytes(damage)
            with pytest.raises(store.StoreError, match=rf"{name} is (damaged|missing).*rerun the sweep"):
                load(tmp_path)
            assert run_sweep([c], tmp_path, jobs=0).ok == 1  # redone, not "already finished"
            pd.testing.assert_frame_equal(store.load_results(tmp_path)[1], want)
