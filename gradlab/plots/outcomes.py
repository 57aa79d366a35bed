"""Outcome matrices: divergence rate, final loss and final accuracy per cell of the sweep matrix
(drawn by :func:`gradlab.plots.runs.plot_sweep_matrix`), and which of them a sweep is worth."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from gradlab.plots.common import is_in
from gradlab.plots.runs import sweep_matrix_series

OUTCOMES = ("divergence_rate", "final_loss", "final_accuracy")
"""The outcome matrices beside the gradient-ratio one (:func:`outcome_matrix_series`)."""


def _final(metric: str) -> Callable[[pd.DataFrame], pd.Series]:
    def last(metrics: pd.DataFrame) -> pd.Series:
        m = metrics[is_in(metrics["metric"], [metric]) & is_in(metrics["layer"], [""])]
        last = m.sort_values("step", kind="stable").drop_duplicates("run", keep="last")  # NaN stays NaN
        return pd.Series(last["value"].to_numpy(), index=last["run"].astype(str).to_numpy())

    last.label = metric.replace("_", " ") + " at the last step (median over runs)"  # type: ignore[attr-defined]
    return last


def outcome_matrix_series(runs: pd.DataFrame, metrics: pd.DataFrame, outcome: str, *, rows: str,
                          cols: str | None = None) -> pd.DataFrame:
    """:func:`sweep_matrix_series` of an outcome: ``divergence_rate`` (share of diverged runs per cell),
    ``final_loss`` or ``final_accuracy`` (median over the cell's runs of the last recorded value)."""
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome={outcome!r} is unknown; allowed: {', '.join(OUTCOMES)}")
    if outcome == "divergence_rate":
        none = lambda m: pd.Series(dtype=float)  # noqa: E731 — the rate comes from the status counts
        frame = sweep_matrix_series(runs, metrics, rows=rows, cols=cols, summary=none)
        frame["value"] = np.where(frame["n"] > 0, frame["n_diverged"] / frame["n"].clip(lower=1), np.nan)
        frame.attrs["label"] = "share of runs that diverged"
        return frame
    last = _final(outcome.removeprefix("final_"))
    return sweep_matrix_series(runs, metrics, rows=rows, cols=cols, summary=last)


def outcomes_to_show(runs: pd.DataFrame, metrics: pd.DataFrame) -> list[str]:
    """The outcomes worth a matrix: divergence rate when some runs diverged, final loss when runs
    trained, final accuracy when recorded."""
    net = metrics[is_in(metrics["layer"], [""])]
    names = set(net["metric"].unique())
    trained = "loss" in names and net["step"].max() > 0 if len(net) else False
    status = runs["status"].astype(str) if "status" in runs else pd.Series("ok", index=runs.index)
    out = ["divergence_rate"] if status.eq("diverged").any() else []
    out += ["final_loss"] if trained else []
    out += ["final_accuracy"] if trained and "accuracy" in names else []
    return out
