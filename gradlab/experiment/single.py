"""One run in this process: its manifest and its frames as Parquet bytes, whatever happens.

:func:`execute` is what a sweep's workers (local processes or Dask) call for each config; it never
raises, so one failing run fails alone.
"""

from __future__ import annotations

import contextlib
import time
import traceback
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from gradlab.atomic import frame_to_parquet
from gradlab.experiment import store
from gradlab.experiment.config import Config

if TYPE_CHECKING:
    from gradlab.experiment.train import RunResult

RunFn = Callable[[Config, str], "RunResult"]
"""What runs one config: ``gradlab.experiment.train.run`` unless a test or benchmark swaps it."""

def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _blas() -> list[dict[str, Any]]:
    from threadpoolctl import threadpool_info

    return [
        {"api": i.get("internal_api"), "num_threads": i.get("num_threads")}
        for i in threadpool_info()
        if i.get("user_api") == "blas"
    ]


def _default_run(config: Config, run_id: str) -> RunResult:
    from gradlab.experiment.train import run

    return run(config, run_id)


def execute(config: Config, run_id: str, run_fn: RunFn | None = None) -> dict[str, Any]:
    """Run one config; return ``{"manifest", "metrics", "hists", "layers"}`` (Parquet bytes). A run that
    raises comes back with status "failed", its traceback and no frames: this never raises an Exception."""
    t0 = time.perf_counter()
    manifest = store.new_manifest(config, run_id)
    manifest["blas"] = _blas()
    manifest["started"] = _now()
    try:
        cpu0 = time.process_time()
        res = (run_fn or _default_run)(config, run_id)
        cpu = time.process_time() - cpu0
        metrics, hists = frame_to_parquet(res.metrics), frame_to_parquet(res.hists)
        layers = frame_to_parquet(res.layers)
    except Exception:
        manifest["wall_time_s"] = time.perf_counter() - t0
        return failed_payload(manifest, traceback.format_exc())
    manifest.update(
        status=res.status,
        steps_done=res.steps_done,
        diverged_step=res.diverged_step,
        diverged_layer=res.diverged_layer,
        final_loss=store.float_to_json(res.final_loss),
        wall_time_s=res.wall_time_s,
        cpu_time_s=cpu,  # well below wall_time_s: the worker waited for a core
        finished=_now(),
    )
    return {"manifest": manifest, "metrics": metrics, "hists": hists, "layers": layers}


def failed_payload(manifest: dict[str, Any], error: str) -> dict[str, Any]:
    """The payload of a failed run: the run raised, its worker died, or Dask gave up on it."""
    manifest.update(error=error, finished=_now())
    return {"manifest": manifest, "metrics": None, "hists": None, "layers": None}


@contextlib.contextmanager
def single_blas_thread() -> Iterator[None]:
    """Limit BLAS to one thread in this process for the block (it is restored after).

    The matrices of a run are small: extra BLAS threads only contend (5-10x slower on a busy 2-vCPU
    machine). threadpoolctl can do this here because numpy is already loaded.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield
