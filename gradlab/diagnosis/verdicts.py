"""Verdicts from records: which run (and layer) vanishes, explodes, diverges, saturates, dies, stalls,
plateaus, oscillates, is frozen, clipped or overgrown, from which step, measured how, against which
threshold, and what usually fixes it.

:func:`diagnose` applies the pure rules of :mod:`gradlab.diagnosis.rules` (the gradient profile,
divergence, the layer-wise rules), :mod:`gradlab.diagnosis.loss_rules` (loss not decreasing or
oscillating, clipping, convergence) and :mod:`gradlab.diagnosis.layer_rules` (poor initialisation,
frozen layers, dying units, weight growth) — thresholds: :class:`Thresholds`, each documented with
its source — and returns a *findings* frame, one row per run and rule, worded by
:mod:`gradlab.diagnosis.wording` and :func:`suggest_fix` (sized by the measurements, in the run's
language). Its columns, and how it is shown (``format_findings``), saved
(``findings_to_json``/``findings_from_json``) and summed up per run (``run_verdicts``), are in
:mod:`gradlab.diagnosis.findings`.

Nothing recorded at or after a run's divergence step feeds any rule but ``diverged``: what a network
computes from NaN weights is not a measurement. Tiny updates once the loss has converged are not a
stall (``converged_loss``). No rule depends on the steps' magnitude or sign: they are ordered labels
(only ``poor_init`` reads step 0, which the data contract makes the network at initialisation).

The layer-wise rules (``saturation``, ``dead_units``, ``update_ratio_low``/``_high``, ``frozen``,
``dying_units``, ``weight_growth``) are judged per
layer, then merged into one finding per run and rule: ``layer`` and ``value`` are the worst layer's
(lowest value for ``<`` rules, highest otherwise; ties: the first in forward order), so ``value op
threshold`` holds for a real layer; ``layers`` lists every affected layer; ``step`` is the earliest
step any of them held; the message says how many of the run's checked layers and which.
``diagnose(..., detail=True)`` returns the per-layer findings instead (one row per affected layer),
e.g. for evidence charts.

Every run gets at least one row: ``healthy`` when rules were checked and none fired, ``no_data`` when
no rule could be checked (no usable metrics), ``failed`` when the runs table says so. Rules whose
metrics a run lacks are skipped for it (the ``healthy`` message lists the rules that were checked).
A finding that follows from another one in the same run (``cause``, from :data:`CAUSES`: tiny
updates in a ``vanishing`` run, huge ones in a ``diverged`` or ``exploding`` run, a plateau in a run
whose units died…) is kept with severity "info". Of two per-layer findings on one layer the more
specific is kept: a frozen layer is not also a stall, units that died in training not also dead.

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
from gradlab.diagnosis.fixes import suggest_fix
from gradlab.diagnosis.layer_rules import rule_dying, rule_frozen, rule_poor_init, rule_weight_growth
from gradlab.diagnosis.loss_rules import (
    converged_at,
    loss_curve,
    rule_clipping,
    rule_oscillation,
    rule_plateau,
)
from gradlab.diagnosis.rules import aggregate_layers, rule_diverged, rule_growth, rule_layerwise, rule_ratio
from gradlab.diagnosis.table import Table, prepare
from gradlab.diagnosis.thresholds import Thresholds, resolve_thresholds
from gradlab.diagnosis.wording import finding_message

_CHECKED = ("diverged", "vanishing", "exploding", "poor_init", "loss_plateau", "oscillating_loss",
            "saturation", "dead_units", "dying_units", "frozen", "update_ratio", "clipping", "weight_growth")
CAUSES: dict[str, tuple[str, ...]] = {
    "update_ratio_low": ("vanishing",),
    "update_ratio_high": ("diverged", "exploding"),
    "vanishing_ratio": ("dying_units",),
    "dead_units": ("dying_units",),
    "frozen_grad": ("dying_units", "dead_units", "vanishing"),
    "frozen_update": ("vanishing",),  # an update below the weights' float resolution is lost
    "loss_plateau": ("diverged", "vanishing", "exploding", "dying_units", "dead_units", "frozen",
                     "saturation", "update_ratio_low", "poor_init"),
    "loss_spikes": ("diverged", "exploding"),
    "clip_most_steps": ("exploding", "diverged"),
    "weight_growth": ("diverged", "exploding"),
}
"""Rule → the kinds (or rules) that, in the same run, explain it: the first present one that is not
itself explained by another finding wins (else the first present)."""
_AFTER = {("vanishing_ratio", "dying_units")}
"""(rule, cause) pairs where the cause must have begun no later than the finding: gradients vanish
*because* units died only once they have."""
_METRIC = {"vanishing_ratio": "grad_out_norm", "exploding_ratio": "grad_out_norm",
           "exploding_growth": "grad_norm_total", "saturation": "saturation", "dead_units": "dead_frac",
           "update_ratio_low": "update_ratio", "update_ratio_high": "update_ratio", "init_spread": "act_std",
           "loss_plateau": "loss", "loss_spikes": "loss", "clip_most_steps": "clipped",
           "frozen_grad": "grad_norm", "frozen_update": "update_ratio", "dying_units": "dead_frac",
           "weight_growth": "weight_norm"}


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
    t.truncate({f["r"]: f["step"] for f in raw if f["step"] is not None})
    curve = loss_curve(t, th)
    upd = t.get("update_ratio")
    exempt = {"update_ratio_low": converged_at(curve, upd.r, upd.step)} if upd is not None else {}
    layerwise = _most_specific(rule_layerwise(t, th, checked, exempt) + rule_frozen(t, th, checked)
                               + rule_dying(t, th, checked, _dead_window(runs, code))
                               + rule_weight_growth(t, th, checked))
    raw += rule_ratio(t, th, checked) + rule_growth(t, th, checked) + rule_poor_init(t, th, checked)
    raw += rule_plateau(t, th, checked, curve) + rule_oscillation(t, th, checked, curve)
    raw += rule_clipping(t, th, checked)
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
    _mark_causes(raw)
    records = []
    for f in raw:
        name = f.get("layer_name", t.layer_names[f["l"]] if f["l"] >= 0 else "")
        run = t.runs[f["r"]]
        cfg = configs.get(run, {})
        metric = f.get("metric", _METRIC.get(f["rule"], ""))
        records.append({
            "run": run, "kind": f["kind"], "rule": f["rule"], "layer": str(name),
            "layers": ", ".join(str(t.layer_names[x]) for x in f["layers"]),
            "step": f["step"], "value": f["value"], "op": f["op"], "threshold": f["threshold"],
            "metric": "dead_frac_window" if f.get("windowed") else metric,
            "severity": "info" if f["cause"] else SEVERITY[f["kind"]], "cause": f["cause"],
            "message": finding_message(f, t, th, str(name)),
            "fix": suggest_fix(f["kind"], f["rule"], cfg, str(t.layer_kind[f["l"]]) if f["l"] >= 0 else "",
                               cause=f["cause"], evidence=_evidence(f, t), thresholds=th),
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
            pairs = pd.DataFrame({"r": rows.r, "step": rows.step}).drop_duplicates()
            n = np.maximum(n, np.bincount(pairs["r"].to_numpy(), minlength=len(t.runs)))
    return n


def _dead_window(runs: pd.DataFrame | None, code: Mapping[str, int]) -> dict[int, int]:
    """Run code → its ``dead_window`` (recorded steps) from the runs table, where it has one."""
    if runs is None or "dead_window" not in runs.columns:
        return {}
    out = {}
    for run, w in zip(runs["run"].astype(str), runs["dead_window"], strict=True):
        if run in code and not pd.isna(w) and int(w) >= 1:
            out[code[run]] = int(w)
    return out


def _most_specific(found: list[dict]) -> list[dict]:
    """Per-layer findings without those a more specific one of the same layer explains: a frozen
    layer's zero update is not also a stall, and units that died during training are not also
    reported as dead units."""
    frozen = {(f["r"], f["l"]) for f in found if f["kind"] == "frozen"}
    dying = {(f["r"], f["l"]) for f in found if f["kind"] == "dying_units"}
    return [f for f in found if not (f["rule"] == "update_ratio_low" and (f["r"], f["l"]) in frozen)
            and not (f["kind"] == "dead_units" and (f["r"], f["l"]) in dying)]


def _mark_causes(raw: list[dict]) -> None:
    """Set each finding's ``cause`` from :data:`CAUSES` (and :data:`_AFTER`'s order in time)."""
    first: dict[tuple[int, str], float] = {}
    for f in raw:
        step = f["step"] if f["step"] is not None else math.inf
        for key in ((f["r"], f["kind"]), (f["r"], f["rule"])):
            first[key] = min(first.get(key, math.inf), step)
    for f in raw:
        f["cause"] = ""
    kind_of = {f["rule"]: f["kind"] for f in raw}
    for _ in range(len(CAUSES)):  # to a fixed point: the cause table has no cycles
        roots = {k for f in raw if not f["cause"] for k in ((f["r"], f["kind"]), (f["r"], f["rule"]))}
        changed = False
        for f in raw:
            step = f["step"] if f["step"] is not None else math.inf
            cands = [k for k in CAUSES.get(f["rule"], ()) if (f["r"], k) in first and k != f["kind"]
                     and ((f["rule"], k) not in _AFTER or first[(f["r"], k)] <= step)]
            cause = next((k for k in cands if (f["r"], k) in roots), cands[0] if cands else "")
            cause = kind_of.get(cause, cause)  # a rule names its kind
            changed |= cause != f["cause"]
            f["cause"] = cause
        if not changed:
            break


def _evidence(f: dict, t: Table) -> dict[str, float]:
    """The measured values a fix is sized by: the run's typical update ratio (median over its layers:
    in the finding's window for update_ratio findings, over the run for loss_plateau, else at its
    first update), the per-layer gain at initialisation, the gradient norm before a growth, the clip
    threshold, the weights' growth rate."""
    r = f["r"]
    ev: dict[str, float] = {}
    upd = t.get("update_ratio")
    if upd is not None:
        upd = upd.of_run(r)
        m = np.isfinite(upd.v)
        if f["kind"] == "update_ratio" and "lo" in f:
            m &= (upd.step >= f["lo"]) & (upd.step <= f["hi"])
        elif m.any() and f["kind"] != "loss_plateau":  # the first update, made on the initial
            m &= upd.step == upd.step[m].min()  # weights: later ones follow the trouble
        if m.any():
            ev["update_ratio"] = float(np.median(upd.v[m]))
    if (f["rule"] in ("vanishing_ratio", "exploding_ratio") and f["at_init"] and f["n_weighted"] > 1
            and f["value"] > 0):  # a profile measured at initialisation sizes the init scale
        ev["gain"] = f["value"] ** (1 / (f["n_weighted"] - 1))
    elif f["rule"] == "init_spread":
        ev["gain"] = f["gain"]
    if f["rule"] == "exploding_growth":
        ev["g0"] = f["g0"]
    for k in ("g", "clip", "rate"):
        if k in f:
            ev[k] = f[k]
    return ev


__all__ = ["diagnose"]
