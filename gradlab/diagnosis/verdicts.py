"""Verdicts from records: which run (and layer) vanishes, explodes, diverges, saturates or dies, from
which step, measured how, against which threshold, and what usually fixes it.

:func:`diagnose` applies the pure rules of :mod:`gradlab.diagnosis.rules` (thresholds: :class:`Thresholds`,
each documented with its source) and returns a *findings* frame, one row per run and rule, worded
here (:func:`suggest_fix` and the messages). Its columns, and how it is shown (``format_findings``),
saved (``findings_to_json``/``findings_from_json``) and summed up per run (``run_verdicts``), are
in :mod:`gradlab.diagnosis.findings`.

The layer-wise rules (``saturation``, ``dead_units``, ``update_ratio_low``/``_high``) are judged per
layer, then merged into one finding per run and rule: ``layer`` and ``value`` are the worst layer's
(lowest value for ``<`` rules, highest otherwise; ties: the first in forward order), so ``value op
threshold`` holds for a real layer; ``layers`` lists every affected layer; ``step`` is the earliest
step any of them held; the message says how many of the run's checked layers and which.
``diagnose(..., detail=True)`` returns the per-layer findings instead (one row per affected layer),
e.g. for evidence charts.

Every run gets at least one row: ``healthy`` when rules were checked and none fired, ``no_data`` when
no rule could be checked (no usable metrics), ``failed`` when the runs table says so. Rules whose
metrics a run lacks are skipped for it (the ``healthy`` message lists the rules that were checked).
A finding that follows from another one in the same run (``cause``: tiny updates in a ``vanishing``
run, huge ones in a ``diverged`` or ``exploding`` run) is kept with severity "info".

``diverged`` takes its step and layer from the runs table (``diverged_step``/``diverged_layer``)
when given; from the metrics alone, the step is the first with ``nonfinite > 0`` or a non-finite loss
or global gradient norm, and the layer the earliest in *forward* order whose output was non-finite
or overflowed (no finite ``act_std``), else the layer nearest the output with a non-finite gradient
(where the backward pass met it first) — the monitor's own rule. Its ``value`` is what went
non-finite at that step: the global gradient norm (``metric`` "grad_norm_total", op "is", threshold
NaN; e.g. ``inf`` when a norm overflowed with no NaN/Inf entry, which the message calls a norm
overflow), else the loss, else the layer's NaN/Inf count (op ">", threshold 0).
:func:`format_findings` shows it as ``‖g‖=inf``, ``loss=nan`` or ``non-finite=80``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from gradlab.diagnosis.findings import KINDS, SEVERITY, findings_frame
from gradlab.diagnosis.rules import aggregate_layers, rule_diverged, rule_growth, rule_layerwise, rule_ratio
from gradlab.diagnosis.table import Table, prepare
from gradlab.diagnosis.thresholds import Thresholds, resolve_thresholds
from gradlab.diagnosis.wording import finding_message, suggest_fix

_CHECKED = ("diverged", "vanishing", "exploding", "saturation", "dead_units", "update_ratio")
_CAUSES = {"update_ratio_low": ("vanishing",), "update_ratio_high": ("diverged", "exploding")}
"""Rule → the kinds that, in the same run, explain it (first present wins)."""
_METRIC = {"vanishing_ratio": "grad_out_norm", "exploding_ratio": "grad_out_norm",
           "exploding_growth": "grad_norm_total", "saturation": "saturation", "dead_units": "dead_frac",
           "update_ratio_low": "update_ratio", "update_ratio_high": "update_ratio"}


def diagnose(
    metrics: pd.DataFrame,
    runs: pd.DataFrame | None = None,
    *,
    layers: pd.DataFrame | None = None,
    thresholds: Thresholds | Mapping[str, Any] | None = None,
    detail: bool = False,
) -> pd.DataFrame:
    """Findings for every run in ``metrics`` (and ``runs``): one row per run and rule, see module doc.

    Args:
        layers: the layers table (kind and forward position of each run's layers); None infers it
            from the metrics (:func:`gradlab.records.layers_for`).
        detail: one row per affected layer for the layer-wise rules instead of one per run and rule.
    """
    th = resolve_thresholds(thresholds)
    if runs is not None and "run" not in runs.columns:
        raise ValueError("runs table lacks the 'run' column")
    extra = [str(r) for r in runs["run"]] if runs is not None else []
    t = prepare(metrics, extra, layers)
    code = {r: i for i, r in enumerate(t.runs)}
    checked = {k: np.zeros(len(t.runs), dtype=bool) for k in _CHECKED}
    raw = rule_diverged(t, runs, code, checked)
    layerwise = rule_layerwise(t, th, checked)
    raw += rule_ratio(t, th, checked) + rule_growth(t, th, checked)
    raw += layerwise if detail else aggregate_layers(layerwise, t.layer_pos)
    configs = _configs(runs)
    if runs is not None and "status" in runs.columns:
        failed = runs["status"].astype("string").eq("failed").fillna(False).to_numpy(dtype=bool)
        for _, row in runs[failed].iterrows():
            raw.append({"r": code[str(row["run"])], "kind": "failed", "rule": "failed", "l": -1,
                        "layers": [], "step": None, "value": math.nan, "op": "", "threshold": math.nan,
                        "error": row.get("error", "")})
    has = np.zeros(len(t.runs), dtype=bool)
    has[[f["r"] for f in raw]] = True
    n_steps = _steps_per_run(t)
    for r in np.flatnonzero(~has):
        done = [k for k in _CHECKED if checked[k][r]]
        raw.append({"r": int(r), "kind": "healthy" if done else "no_data", "rule": "healthy" if done
                    else "no_data", "l": -1, "layers": [], "step": None, "value": math.nan, "op": "",
                    "threshold": math.nan, "checked": done, "n_steps": int(n_steps[r])})
    kinds_of: dict[int, set[str]] = {}
    for f in raw:
        kinds_of.setdefault(f["r"], set()).add(f["kind"])
    records = []
    for f in raw:
        name = f.get("layer_name", t.layer_names[f["l"]] if f["l"] >= 0 else "")
        run = t.runs[f["r"]]
        cfg = configs.get(run, {})
        f["cause"] = next((k for k in _CAUSES.get(f["rule"], ()) if k in kinds_of[f["r"]]), "")
        metric = f.get("metric", _METRIC.get(f["rule"], ""))
        records.append({
            "run": run, "kind": f["kind"], "rule": f["rule"], "layer": str(name),
            "layers": ", ".join(str(t.layer_names[x]) for x in f["layers"]),
            "step": f["step"], "value": f["value"], "op": f["op"], "threshold": f["threshold"],
            "metric": "dead_frac_window" if f.get("windowed") else metric,
            "severity": "info" if f["cause"] else SEVERITY[f["kind"]], "cause": f["cause"],
            "message": finding_message(f, t, th, str(name)),
            "fix": suggest_fix(f["kind"], f["rule"], cfg, str(t.layer_kind[f["l"]]) if f["l"] >= 0 else "",
                               cause=f["cause"]),
            "_order": (KINDS.index(f["kind"]), f["step"] if f["step"] is not None else -1,
                       int(t.layer_pos[f["l"]]) if f["l"] >= 0 else -1),
        })
    records.sort(key=lambda x: (x["run"], x["_order"]))
    return findings_frame(records)


def _configs(runs: pd.DataFrame | None) -> dict[str, dict[str, Any]]:
    """Run id → its row of the runs table as a dict (config fields, status…)."""
    if runs is None:
        return {}
    return {str(row["run"]): row for row in runs.to_dict("records")}


def _steps_per_run(t: Table) -> np.ndarray:
    """How many distinct steps each run recorded (from its network-level rows when it has them)."""
    n = np.zeros(len(t.runs), dtype=np.int64)
    for name in ("loss", "grad_norm_total", "grad_out_norm", "nonfinite"):
        rows = t.get(name)
        if rows is not None and len(rows.r):
            keys = np.unique(rows.r * (np.int64(1) << 32) + rows.step)
            n = np.maximum(n, np.bincount(keys >> 32, minlength=len(t.runs)))
    return n


__all__ = ["diagnose"]
