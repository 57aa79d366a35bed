"""Running sweeps: determinism, worker BLAS threads, failure isolation, divergence, worker deaths,
resume after the sweep process is killed, and the Dask path against a real local cluster.

The ``_…_run`` helpers below are run functions the workers import by name (``test_runner._fail_seed_1``),
so they must stay at module level.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from helpers import DIVERGES, TINY
from threadpoolctl import threadpool_info

from gradlab.experiment import store
from gradlab.experiment.config import Config
from gradlab.experiment.runner import Progress, RunnerError, run_sweep
from gradlab.experiment.train import run

TESTS = Path(__file__).parent
def tiny(n: int, **kw) -> list[Config]:
    return [Config(**{**TINY, **kw}, seed=s) for s in range(n)]


def _fail_seed_1(config: Config, run_id: str):
    if config.seed == 1:
        raise RuntimeError("injected failure")
    return run(config, run_id)


def _die_seed_1_once_seed_2_always(config: Config, run_id: str):
    marker = Path(os.environ["GRADLAB_TEST_MARKERS"]) / run_id
    if config.seed == 2 or (config.seed == 1 and not marker.exists()):
        marker.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)  # the worker process dies mid-run
    return run(config, run_id)


def _block_from_seed_3(config: Config, run_id: str):
    if config.seed >= 3:
        time.sleep(600)  # the test kills the sweep while this run is in progress
    return run(config, run_id)


def files(d: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime_ns) of every file below d."""
    return {
        str(p.relative_to(d)): (p.stat().st_ino, p.stat().st_mtime_ns) for p in d.rglob("*") if p.is_file()
    }


def manifest(out: Path, config: Config) -> dict:
    return json.loads((out / "runs" / config.key() / "manifest.json").read_text())


def test_a_run_is_deterministic_in_process_and_in_a_worker_with_one_blas_thread(tmp_path):
    config = Config(**TINY, batch_norm=True, dropout=0.1)
    a, b = run(config), run(config)
    pd.testing.assert_frame_equal(a.metrics, b.metrics)
    pd.testing.assert_frame_equal(a.hists, b.hists)
    threads_before = threadpool_info()
    env_before = {
        k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
    }
    run_sweep([config], tmp_path / "inline", jobs=0)
    run_sweep([config], tmp_path / "worker", jobs=1)
    assert {k: os.environ.get(k) for k in env_before} == env_before  # the parent's env is left alone
    _, m_inline = store.load_results(tmp_path / "inline")
    _, m_worker = store.load_results(tmp_path / "worker")
    pd.testing.assert_frame_equal(m_inline, m_worker)
    pd.testing.assert_frame_equal(m_worker, a.metrics.astype(m_worker.dtypes.to_dict()))
    for where in ("worker", "inline"):  # spawn env in a worker, threadpoolctl in this process
        blas = manifest(tmp_path / where, config)["blas"]
        assert blas and all(b["num_threads"] == 1 for b in blas), (where, blas)
    assert threadpool_info() == threads_before  # restored after the in-process run


def test_a_raising_run_is_recorded_failed_and_the_others_finish_then_rerun_retries_it(tmp_path):
    configs = tiny(4)
    events: list[Progress] = []
    s = run_sweep(configs, tmp_path, jobs=2, run_fn=_fail_seed_1, progress=events.append)
    assert (s.total, s.ok, s.failed, s.failed_runs) == (4, 3, 1, [configs[1].key()])
    m = manifest(tmp_path, configs[1])
    assert m["status"] == "failed"
    assert "Traceback" in m["error"] and "RuntimeError: injected failure" in m["error"]
    assert sorted(os.listdir(tmp_path / "runs" / configs[1].key())) == ["manifest.json"]
    runs, metrics = store.load_results(tmp_path)
    assert runs.set_index("run").loc[configs[1].key(), "status"] == "failed"
    assert "injected failure" in runs.set_index("run").loc[configs[1].key(), "error"]
    assert set(metrics["run"]) == {configs[i].key() for i in (0, 2, 3)}
    assert [e.done for e in events] == [0, 1, 2, 3, 4] and events[-1].failed == 1 and events[-1].eta_s == 0

    before = {c.key(): files(tmp_path / "runs" / c.key()) for c in configs if c.seed != 1}
    again = run_sweep(configs, tmp_path, jobs=0)  # the real run function: the failed run is retried
    assert (again.skipped, again.ok, again.failed) == (3, 4, 0)
    assert {k: files(tmp_path / "runs" / k) for k in before} == before


def test_a_diverging_run_is_finished_with_status_diverged(tmp_path):
    config = Config(**DIVERGES)
    s = run_sweep([config], tmp_path, jobs=0)
    assert (s.diverged, s.failed) == (1, 0)
    runs, metrics = store.load_results(tmp_path)
    row = runs.iloc[0]
    assert row["status"] == "diverged" and row["diverged_step"] == 1
    assert isinstance(row["diverged_layer"], str) and row["diverged_layer"]
    assert metrics["step"].max() == 1
    assert metrics.query("metric == 'nonfinite' and step == 1")["value"].sum() > 0
    assert run_sweep([config], tmp_path, jobs=0).skipped == 1  # diverged is finished: not redone


def test_a_dead_worker_is_replaced_its_run_retried_once_then_recorded_failed(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADLAB_TEST_MARKERS", str(tmp_path))
    configs = tiny(4)
    s = run_sweep(configs, tmp_path / "out", jobs=2, run_fn=_die_seed_1_once_seed_2_always)
    assert (s.ok, s.failed, s.failed_runs) == (3, 1, [configs[2].key()])
    runs, metrics = store.load_results(tmp_path / "out")
    assert sorted(runs["run"]) == sorted(c.key() for c in configs)
    err = manifest(tmp_path / "out", configs[2])["error"]
    assert "worker process died" in err and "signal 9" in err
    assert metrics.groupby("run")["step"].max().to_dict() == {configs[i].key(): 3 for i in (0, 1, 3)}


def test_resume_after_the_sweep_process_is_killed_mid_sweep(tmp_path):
    out = tmp_path / "out"
    configs = tiny(6)
    script = (
        f"import sys; sys.path.insert(0, {str(TESTS)!r})\n"
        "from test_runner import tiny, _block_from_seed_3\n"
        "from gradlab.experiment.runner import run_sweep\n"
        f"run_sweep(tiny(6), {str(out)!r}, jobs=1, run_fn=_block_from_seed_3)\n"
    )
    log = open(tmp_path / "log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=log, stderr=log, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        done = [out / "runs" / c.key() / "manifest.json" for c in configs[:3]]
        while not all(p.exists() for p in done):
            assert proc.poll() is None, (tmp_path / "log").read_text()
            assert time.monotonic() < deadline, "the sweep did not get through its first 3 runs"
            time.sleep(0.05)
        time.sleep(0.3)  # let the worker start the blocking run
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the parent and its worker processes
        proc.wait()
        log.close()
    assert not (out / "runs" / configs[3].key() / "manifest.json").exists()
    before = {c.key(): files(out / "runs" / c.key()) for c in configs[:3]}

    s = run_sweep(configs, out, jobs=0)
    assert (s.total, s.skipped, s.ok, s.failed) == (6, 3, 6, 0)
    assert {k: files(out / "runs" / k) for k in before} == before  # finished runs not rewritten
    runs, metrics = store.load_results(out)
    assert sorted(runs["run"]) == sorted(c.key() for c in configs) and runs["run"].is_unique
    per_run = metrics.groupby(["run", "step", "layer", "metric"]).size()
    assert (per_run == 1).all() and set(metrics["run"]) == set(runs["run"])
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_dask_local_cluster(tmp_path):
    distributed = pytest.importorskip("distributed")
    configs = tiny(3)
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        s = run_sweep(configs, tmp_path, scheduler=cluster.scheduler_address, run_fn=_fail_seed_1)
    assert (s.ok, s.failed, s.failed_runs) == (2, 1, [configs[1].key()])
    assert "injected failure" in manifest(tmp_path, configs[1])["error"]
    _, metrics = store.load_results(tmp_path)
    expected = run(configs[0]).metrics
    got = metrics[metrics["run"] == configs[0].key()].reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected.astype(got.dtypes.to_dict()))
    assert all(b["num_threads"] == 1 for b in manifest(tmp_path, configs[0])["blas"])  # nanny's env


def test_duplicate_configs_run_once(tmp_path):
    c = Config(**TINY)
    d = Config(**TINY, seed=1)
    s = run_sweep([c, d, c], tmp_path, jobs=0)
    assert (s.total, s.duplicates, s.ok) == (2, 1, 2)
    assert list(store.load_results(tmp_path)[0]["run"]) == [c.key(), d.key()]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"jobs": -1}, "jobs=-1 must be an integer >= 0"),
        ({"jobs": 1, "scheduler": "tcp://127.0.0.1:1"}, "not both"),
    ],
)
def test_bad_runner_arguments(tmp_path, kwargs, message):
    with pytest.raises(RunnerError, match=message):
        run_sweep([Config(**TINY)], tmp_path, **kwargs)


def test_no_more_workers_start_than_runs_to_do_or_cores(tmp_path, monkeypatch):
    from gradlab.experiment import runner

    started: list[int] = []

    def local(todo, jobs, run_fn, record):  # count the workers asked for, run inline
        started.append(jobs)
        runner._run_inline(todo, run_fn, record)

    monkeypatch.setattr(runner, "_run_local", local)
    events: list[Progress] = []
    run_sweep(tiny(2), tmp_path / "a", jobs=64, progress=events.append)
    assert started == [min(2, runner.default_jobs())] and events[0].workers == started[0]
    monkeypatch.setattr(runner, "default_jobs", lambda: 1)
    run_sweep(tiny(3), tmp_path / "b", jobs=8)
    assert started[-1] == 1
    events.clear()
    run_sweep(tiny(3), tmp_path / "b", jobs=8, progress=events.append)  # all finished: nothing to start
    assert len(started) == 2 and events[0].workers == 0


def test_every_manifest_carries_the_sweep_identity(tmp_path):
    from gradlab.experiment.manifests import sweep_identity
    from gradlab.experiment.sweep import parse_sweep

    sweep = parse_sweep('[sweep]\nname = "ids"\nseeds = [0, 1]\n[base]\ndepth = 2\nwidth = 8\nsteps = 1\n'
                        "n_samples = 64\nbatch_size = 16\n")
    run_sweep(sweep, tmp_path, jobs=0)
    sid = sweep_identity([c.key() for c in sweep.configs()], "ids")
    assert json.loads((tmp_path / "sweep.json").read_text())["id"] == sid
    for c in sweep.configs():
        m = manifest(tmp_path, c)
        assert m["sweep"] == {"id": sid, "name": "ids"} and m["format"] == 2
        assert set(m["files"]) == {"metrics.parquet", "hists.parquet", "layers.parquet"}
