"""A watched PyTorch run as a gradlab results folder, which ``gradlab.load_results``, ``gradlab diagnose``
and ``gradlab report`` read like a sweep's. Several runs saved into one folder make one comparison."""

from __future__ import annotations

import math
import platform
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from gradlab.atomic import frame_to_parquet
from gradlab.experiment import store

_HYPER = ("lr", "momentum", "weight_decay", "dampening", "nesterov", "betas", "eps", "alpha", "amsgrad")


def _jsonable(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        v = v.item() if v.numel() == 1 else v.tolist()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, (tuple, list)):
        return [_jsonable(x) for x in v]
    return v if isinstance(v, (int, float, str, bool)) or v is None else repr(v)


def optimizer_info(optimizer: torch.optim.Optimizer | None) -> dict[str, Any]:
    """The optimizer's class and the hyper-parameters of its first param group (JSON-able)."""
    if optimizer is None:
        return {}
    group = optimizer.param_groups[0]
    return {"class": type(optimizer).__name__, **{k: _jsonable(group[k]) for k in _HYPER if k in group}}


def manifest(
    *,
    run: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    status: str,
    steps_done: int,
    divergence: tuple[int, str] | None,
    final_loss: float,
    wall_time_s: float,
    batch_size: int | None,
    notes: list[str],
) -> dict[str, Any]:
    """A watched run's manifest: framework, model, optimizer, batch size, status, divergence, timing."""
    opt = optimizer_info(optimizer)
    first = next(model.parameters(), None)
    config = {
        "optimizer": opt.get("class", "").lower() or None,
        "lr": opt.get("lr"),
        "momentum": opt.get("momentum", opt["betas"][0] if "betas" in opt else None),
        "weight_decay": opt.get("weight_decay"),
        "batch_size": batch_size,
        "dtype": str(first.dtype).removeprefix("torch.") if first is not None else None,
    }
    return {
        "format": store.FORMAT,
        "run": run,
        "key": run,
        "name": run,
        "framework": "torch",
        "model": type(model).__name__,
        "n_params": sum(p.numel() for p in model.parameters()),
        "config": {k: v for k, v in config.items() if v is not None},
        "optimizer": opt,
        "status": status,
        "steps_done": steps_done,
        "diverged_step": divergence[0] if divergence else None,
        "diverged_layer": divergence[1] if divergence else None,
        "final_loss": store.float_to_json(final_loss),
        "wall_time_s": wall_time_s,
        "error": None,
        "host": platform.node(),
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "layers_without_unit_statistics": notes,
    }


def save(out: str | Path, manifest: dict[str, Any], metrics: pd.DataFrame, layers: pd.DataFrame,
         hists: pd.DataFrame) -> Path:
    """Write one run into the results folder ``out`` (created if needed) and rebuild its runs table;
    return the run's own folder. A run of the same name in that folder is replaced."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise store.StoreError(f"{out} is a file; give a folder for the results")
    (out / store.RUNS_DIR).mkdir(parents=True, exist_ok=True)
    d = store.write_run(out, manifest, frame_to_parquet(metrics), frame_to_parquet(hists),
                        frame_to_parquet(layers))
    store.write_runs_table(out)
    return d
