"""Run a sweep: in local worker processes or on a Dask cluster; resumable; one failing run fails alone.

Local workers are ``spawn``-ed processes whose environment has ``OPENBLAS_NUM_THREADS=1`` (and the OMP,
MKL, vecLib, numexpr equivalents) from the moment they exec, so BLAS starts single-threaded: N workers
use N cores instead of fighting over them. (Setting it in an initializer, or with threadpoolctl before
numpy is imported, is too late or does nothing.) Dask workers started by a nanny (``dask worker``,
``LocalCluster``) get the same variables from dask's ``distributed.nanny.pre-spawn-environ``. Each
manifest records the BLAS threads its worker actually had.

Each worker runs one config at a time and sends back its manifest and Parquet bytes; only this process
writes the results folder (see :mod:`gradlab.experiment.store`), so a Dask cluster needs no shared filesystem.
A worker process that dies (killed, out of memory) is replaced and its run is retried once; a second
death records the run as failed. Rerunning a sweep into the same folder skips finished runs (ok or
diverged, their files intact) and redoes the others: failed, interrupted or damaged.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing as mp
import os
import signal
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gradlab.experiment import folder, store
from gradlab.experiment.config import Config
from gradlab.experiment.single import RunFn, execute, failed_payload, single_blas_thread
from gradlab.experiment.sweep import Sweep

if TYPE_CHECKING:
    import pandas as pd


BLAS_ENV = {
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
}
MAX_WORKER_DEATHS = 2  # a run whose worker process dies this many times is recorded as failed
_ENV_LOCK = threading.Lock()


class RunnerError(ValueError):
    """The sweep cannot start: bad arguments or an unreachable scheduler (one-line message)."""


@dataclass(frozen=True)
class Progress:
    """A progress event, sent once at the start and after each run finishes."""

    done: int  # finished runs of the sweep, including those skipped as already finished
    total: int
    failed: int
    skipped: int
    elapsed_s: float
    eta_s: float | None  # None until a run has finished in this call
    run: str = ""  # the run that just finished ("" for the start event)
    name: str = ""
    status: str = ""
    wall_time_s: float = math.nan
    workers: int = 0  # local worker processes started: at most one per run left and per core (0: none)


@dataclass
class SweepSummary:
    """What a call to :func:`run_sweep` did, and the sweep's runs table afterwards."""

    out: Path
    total: int
    skipped: int  # already finished when the call started
    ok: int
    diverged: int
    failed: int
    failed_runs: list[str]
    duplicates: int  # configs given twice (same run id), run once
    wall_time_s: float
    runs: pd.DataFrame = field(repr=False)


# -- one run (executed in the worker) -----------------------------------------------------------------
def _death(exitcode: int | None) -> str:
    how = (
        f"killed by signal {-exitcode}" if exitcode is not None and exitcode < 0 else f"exit code {exitcode}"
    )
    return f"worker process died while running this config ({how}); it died {MAX_WORKER_DEATHS} times"


# -- local worker processes -----------------------------------------------------------------------
@contextlib.contextmanager
def child_env(extra: dict[str, str]) -> Iterator[None]:
    """Set environment variables while child processes are started in the block (they inherit them at
    exec, e.g. ``BLAS_ENV``); this process's environment is restored after."""
    with _ENV_LOCK:
        old = {k: os.environ.get(k) for k in extra}
        os.environ.update(extra)
        try:
            yield
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def _worker_main(conn: Any, run_fn: RunFn | None) -> None:
    """A worker's loop: receive (config, run_id), send back the payload; None or EOF ends it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        payload = execute(task[0], task[1], run_fn)
        try:
            conn.send(payload)
        except OSError:  # the parent is gone (killed): nobody to report to
            return


class _Worker:
    def __init__(self, ctx: Any, run_fn: RunFn | None) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, run_fn), daemon=True, name="gradlab-worker")
        with child_env(BLAS_ENV):
            self.proc.start()
        child.close()
        self.task: tuple[Config, str] | None = None

    def stop(self, kill: bool) -> None:
        if not kill:
            with contextlib.suppress(OSError):
                self.conn.send(None)
            self.proc.join(timeout=10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.conn.close()


def _run_local(
    todo: list[tuple[Config, str]], jobs: int, run_fn: RunFn | None, record: Callable[[dict], None]
) -> None:
    ctx = mp.get_context("spawn")
    queue = deque(todo)
    deaths: Counter[str] = Counter()
    workers = [_Worker(ctx, run_fn) for _ in range(min(jobs, len(todo)))]
    clean = False
    try:
        while queue or any(w.task for w in workers):
            for i, w in enumerate(workers):
                if w.task is None and queue:
                    if not w.proc.is_alive():
                        w.stop(kill=True)
                        workers[i] = w = _Worker(ctx, run_fn)
                    w.task = queue.popleft()
                    with contextlib.suppress(OSError):  # a dead worker shows up in wait() below
                        w.conn.send(w.task)
            busy = [w for w in workers if w.task is not None]
            ready = set(wait([w.conn for w in busy] + [w.proc.sentinel for w in busy]))
            for w in workers:
                if w.task is None or not ready & {w.conn, w.proc.sentinel}:
                    continue
                payload, eof = None, False
                try:
                    payload = w.conn.recv() if w.conn.poll() else None
                except (EOFError, OSError):
                    eof = True  # its end of the pipe closed: the process is exiting
                config, run_id = w.task
                if payload is not None:
                    w.task = None
                    record(payload)
                    continue
                if not eof and w.proc.is_alive():
                    continue
                w.task = None
                deaths[run_id] += 1
                w.proc.join(timeout=5)
                if deaths[run_id] >= MAX_WORKER_DEATHS:
                    record(failed_payload(store.new_manifest(config, run_id), _death(w.proc.exitcode)))
                else:
                    queue.appendleft((config, run_id))
                w.stop(kill=True)  # replaced above, once there is a run for it
        clean = True
    finally:
        for w in workers:
            w.stop(kill=not clean)


# -- in this process, and Dask ------------------------------------------------------------------------
def _run_inline(todo: list[tuple[Config, str]], run_fn: RunFn | None, record: Callable[[dict], None]) -> None:
    with single_blas_thread():
        for config, run_id in todo:
            record(execute(config, run_id, run_fn))


def _run_dask(
    todo: list[tuple[Config, str]], scheduler: Any, run_fn: RunFn | None, record: Callable[[dict], None]
) -> None:
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise RunnerError("--scheduler needs dask: pip install 'gradlab[dask]'") from None
    own = isinstance(scheduler, str)
    if own:
        try:
            client = Client(scheduler, timeout="10s", set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise RunnerError(f"cannot connect to the Dask scheduler at {scheduler!r}: {exc}") from None
    else:
        client = scheduler
    try:
        futures = {}
        for config, run_id in todo:
            key = f"gradlab-run-{run_id}-{os.urandom(4).hex()}"
            futures[client.submit(execute, config, run_id, run_fn, key=key)] = (config, run_id)
        for fut in as_completed(futures, loop=client.loop):
            config, run_id = futures[fut]
            try:
                payload = fut.result()
            except Exception as exc:  # e.g. KilledWorker: the task's worker died repeatedly
                error = f"Dask could not run it: {type(exc).__name__}: {exc}"
                payload = failed_payload(store.new_manifest(config, run_id), error)
            fut.release()
            record(payload)
    finally:
        if own:
            client.close()


# -- the sweep ----------------------------------------------------------------------------------------
def default_jobs() -> int:
    """The number of cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def run_sweep(
    sweep: Sweep | Sequence[Config],
    out: str | Path,
    jobs: int | None = None,
    scheduler: Any = None,
    progress: Callable[[Progress], None] | None = None,
    *,
    run_fn: RunFn | None = None,
) -> SweepSummary:
    """Run every config of a sweep into the results folder ``out``, skipping runs already finished there.

    Args:
        sweep: a :class:`~gradlab.experiment.sweep.Sweep` or a list of Configs. A config given twice (same
            ``Config.key()``, the run id) is run once.
        jobs: local worker processes (default: the cores available); 0 runs in this process. No more
            are started than there are runs to do or cores available: more would only contend.
        scheduler: a Dask scheduler address (or a ``distributed.Client``) to run on instead.
        progress: called with a :class:`Progress` at the start and after each run (default: silent).
        run_fn: what runs one config (default ``gradlab.experiment.train.run``); a module-level function.
    """
    t0 = time.perf_counter()
    configs = sweep.configs() if isinstance(sweep, Sweep) else list(sweep)
    if not all(isinstance(c, Config) for c in configs):
        raise RunnerError("run_sweep needs a Sweep or a list of Config")
    if scheduler is not None and jobs is not None:
        raise RunnerError("give jobs or scheduler, not both")
    if jobs is None:
        jobs = default_jobs()
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 0:
        raise RunnerError(f"jobs={jobs!r} must be an integer >= 0 (0 = run in this process)")
    unique: dict[str, Config] = {}
    for c in configs:
        unique.setdefault(c.key(), c)  # a config given twice runs once, at its first place
    duplicates = len(configs) - len(unique)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    with folder.locked(out):
        folder.clean_temp_files(out)
        about = sweep.describe() if isinstance(sweep, Sweep) else {}
        sweep_id = folder.write_sweep_file(out, list(unique.values()), about)
        todo = [(c, k) for k, c in unique.items() if not store.is_finished(out, k, sweep_id)]
        total, skipped = len(unique), len(unique) - len(todo)
        workers = 0 if scheduler is not None or jobs == 0 else min(jobs, len(todo), default_jobs())
        counts: Counter[str] = Counter()

        def record(payload: dict[str, Any]) -> None:
            m = {**payload["manifest"], "sweep": {"id": sweep_id, "name": about.get("name", "")}}
            store.write_run(out, m, payload["metrics"], payload["hists"], payload.get("layers"))
            counts[m["status"]] += 1
            if progress is not None:
                ran = sum(counts.values())
                elapsed = time.perf_counter() - t0
                wall = store.float_from_json(m["wall_time_s"])
                eta = elapsed / ran * (total - skipped - ran)
                event = (m["run"], m["name"], m["status"], wall)
                progress(Progress(skipped + ran, total, counts["failed"], skipped, elapsed, eta, *event,
                                  workers=workers))

        if progress is not None:
            progress(Progress(skipped, total, 0, skipped, 0.0, None, workers=workers))
        try:
            if not todo:
                pass
            elif scheduler is not None:
                _run_dask(todo, scheduler, run_fn, record)
            elif jobs == 0:
                _run_inline(todo, run_fn, record)
            else:
                _run_local(todo, workers, run_fn, record)
        finally:
            runs = store.write_runs_table(out)
    status = runs["status"]
    return SweepSummary(
        out=out,
        total=total,
        skipped=skipped,
        ok=int((status == "ok").sum()),
        diverged=int((status == "diverged").sum()),
        failed=int((status == "failed").sum()),
        failed_runs=list(runs.loc[status == "failed", "run"]),
        duplicates=duplicates,
        wall_time_s=time.perf_counter() - t0,
        runs=runs,
    )


def run_one(
    config: Config, out: str | Path | None = None
) -> tuple[dict[str, Any], pd.DataFrame | None, pd.DataFrame | None]:
    """Run one config (into the results folder ``out``, resumably, when given; else in memory) and
    return its manifest, metrics frame and layers table (None for a failed run)."""
    import io

    import pandas as pd

    if out is not None:
        run_sweep([config], out, jobs=0)
        manifest = store.read_manifest(out, config.key()) or {"status": "failed", "error": "no manifest"}
        if manifest.get("status") == "failed":
            return manifest, None, None
        run_path = store.run_dir(out, config.key())
        return manifest, store.load_results(run_path)[1], store.load_layers(run_path)
    with single_blas_thread():
        payload = execute(config, config.key())
    if payload["metrics"] is None:
        return payload["manifest"], None, None
    frames = [pd.read_parquet(io.BytesIO(payload[k])) for k in ("metrics", "layers")]
    return payload["manifest"], frames[0], frames[1]
