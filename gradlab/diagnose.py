"""Verdicts from records: which run (and layer) vanishes, explodes, diverges, saturates or dies, from
which step, measured how, against which threshold, and what usually fixes it.

:func:`diagnose` applies the pure rules of :mod:`gradlab.rules` (thresholds: :class:`Thresholds`,
each documented with its source) and returns a *findings* frame, one row per run and rule, worded
here (:func:`suggest_fix` and the messages). Its columns, and how it is shown (``format_findings``),
saved (``findings_to_json``/``findings_from_json``) and summed up per run (``run_verdicts``), are
in :mod:`gradlab.findings`; those names are re-exported here.

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

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from gradlab.activations import BOUNDED
from gradlab.findings import (
    COLUMNS,
    KINDS,
    SEVERITY,
    findings_frame,
    findings_from_json,
    findings_to_json,
    fmt_num,
    format_findings,
    run_verdicts,
)
from gradlab.records import layer_kind
from gradlab.rule_table import Table, prepare
from gradlab.rules import aggregate_layers, rule_diverged, rule_growth, rule_layerwise, rule_ratio

_CHECKED = ("diverged", "vanishing", "exploding", "saturation", "dead_units", "update_ratio")
_CAUSES = {"update_ratio_low": ("vanishing",), "update_ratio_high": ("diverged", "exploding")}
"""Rule → the kinds that, in the same run, explain it (first present wins)."""
_METRIC = {"vanishing_ratio": "grad_out_norm", "exploding_ratio": "grad_out_norm",
           "exploding_growth": "grad_norm_total", "saturation": "saturation", "dead_units": "dead_frac",
           "update_ratio_low": "update_ratio", "update_ratio_high": "update_ratio"}


@dataclass(frozen=True)
class Thresholds:
    """The named thresholds of every rule; override any of them per call of ``diagnose``."""

    vanishing_ratio: float = 1e-3
    """``vanishing`` when ‖∂L/∂y‖(first dense) / ‖∂L/∂y‖(output dense) is below this.
    AutoTrainer (Zhang et al., ICSE 2021) flags vanishing when ‖∂L/∂W‖ of the first layer over that
    of the last is below β₁ = 1e-3 (its default ``beta_1``; it also asks ‖∂L/∂W₁‖ < β₂ = 1e-4). We
    apply β₁ to the back-propagated signal ‖∂L/∂y‖ instead: ∂L/∂W = xᵀ·∂L/∂y mixes in the scale of
    each layer's input, whereas ∂L/∂y is the signal that actually decays, and a ratio needs no
    absolute scale (SageMaker Debugger's VanishingGradient uses an absolute 1e-7 on the mean |g|,
    which depends on width, batch size and loss scale, so we do not use it)."""
    exploding_ratio: float = 70.0
    """``exploding`` when the same first/output ratio is above this: AutoTrainer's β₃ = 70."""
    growth_factor: float = 1e3
    """``exploding`` also when the global gradient norm grows by this factor within ``window``
    recorded steps. Our choice (no cited default): three orders of magnitude in a few steps is a
    runaway, not the ordinary rise of a net leaving a plateau."""
    saturation: float = 0.5
    """``saturation`` when this fraction of a bounded layer's outputs sit at a bound (activations.py
    defines "at a bound"). SageMaker's SaturatedActivation fires when more than ``threshold_layer``
    percent of a layer's nodes are saturated; we use half, as its sibling DeadRelu's default (50%)."""
    dead_frac: float = 0.5
    """``dead_units`` when this fraction of a ReLU-family layer's units is inactive on every sample
    (``dead_frac_window`` when recorded, else ``dead_frac``). SageMaker's DeadRelu: ``threshold_layer``
    = 50% of a layer's units dead; AutoTrainer's γ = 0.7 is looser (fraction of zero gradients)."""
    update_ratio_low: float = 1e-5
    """``update_ratio`` (too small: learning stalls) when ‖ΔW‖/‖W‖ is below this. CS231n's heuristic:
    the ratio should be about 1e-3 (lower: learning rate probably too low); we flag two decades
    off. SageMaker's WeightUpdateRatio defaults (small 1e-8, large 10) are far looser."""
    update_ratio_high: float = 1e-1
    """``update_ratio`` (too large: unstable) when ‖ΔW‖/‖W‖ is above this (CS231n, two decades high)."""
    window: int = 10
    """Recorded steps in a window (the whole run when it recorded fewer)."""
    majority: float = 0.5
    """A rule holds over a window when more than this fraction of the window's steps hit."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"threshold {f.name}={v!r} must be a finite number")
        if not (isinstance(self.window, int) and self.window >= 1):
            raise ValueError(f"threshold window={self.window!r} must be an integer >= 1")
        if not 0 <= self.majority < 1:
            raise ValueError(f"threshold majority={self.majority!r} must be in [0, 1)")
        for name in ("vanishing_ratio", "exploding_ratio", "growth_factor", "update_ratio_low",
                     "update_ratio_high"):
            if getattr(self, name) <= 0:
                raise ValueError(f"threshold {name}={getattr(self, name)!r} must be > 0")
        if self.update_ratio_low >= self.update_ratio_high:
            raise ValueError("threshold update_ratio_low must be below update_ratio_high")


THRESHOLD_NAMES = tuple(f.name for f in dataclasses.fields(Thresholds))


def resolve_thresholds(thresholds: Thresholds | Mapping[str, Any] | None) -> Thresholds:
    """Defaults, a Thresholds, or defaults overridden by a mapping; unknown keys raise ValueError."""
    if thresholds is None:
        return Thresholds()
    if isinstance(thresholds, Thresholds):
        return thresholds
    if not isinstance(thresholds, Mapping):
        raise TypeError(f"thresholds must be a Thresholds or a mapping, got {type(thresholds).__name__}")
    for key in thresholds:
        if key not in THRESHOLD_NAMES:
            raise ValueError(f"unknown threshold {key!r}; allowed: {', '.join(THRESHOLD_NAMES)}")
    return dataclasses.replace(Thresholds(), **dict(thresholds))


def diagnose(
    metrics: pd.DataFrame,
    runs: pd.DataFrame | None = None,
    *,
    thresholds: Thresholds | Mapping[str, Any] | None = None,
    detail: bool = False,
) -> pd.DataFrame:
    """Findings for every run in ``metrics`` (and ``runs``): one row per run and rule, see module doc.

    Args:
        detail: one row per affected layer for the layer-wise rules instead of one per run and rule.
    """
    th = resolve_thresholds(thresholds)
    if runs is not None and "run" not in runs.columns:
        raise ValueError("runs table lacks the 'run' column")
    extra = [str(r) for r in runs["run"]] if runs is not None else []
    t = prepare(metrics, extra)
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
            "message": _message(f, t, th, str(name)),
            "fix": suggest_fix(f["kind"], f["rule"], cfg, str(name), cause=f["cause"]),
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


def _short(names: list[str], keep: int = 4) -> str:
    """``a, b, c`` or ``a, b, …, z`` for long lists."""
    return ", ".join(names) if len(names) <= keep else f"{names[0]}, {names[1]}, …, {names[-1]}"


def _span(f: dict) -> str:
    """The steps of the window a rule held over: ``steps 3–12`` or ``step 0``."""
    return f"steps {f['lo']}–{f['hi']}" if f["lo"] != f["hi"] else f"step {f['lo']}"


def _window(f: dict) -> str:
    return f"held at {f['hits']} of {f['span']} recorded steps ({_span(f)})"


_CAUSE_TEXT = {"vanishing": "a consequence of the vanishing gradient (see that finding)",
               "exploding": "a consequence of the exploding gradient (see that finding)",
               "diverged": "part of the divergence (see that finding)"}


def _diverged_message(f: dict, layer: str) -> str:
    """What went non-finite, where and when; a norm overflow (no NaN/Inf entry) is said so."""
    src = " (from the runs table)" if f["source"] == "runs" else ""
    step = (f"step {f['step']}" if f["step"] is not None else "an unrecorded step") + src
    count, origin = f["count"], f["origin"]
    if layer and count > 0:
        what = f"{int(count)} non-finite entries (NaN/Inf) first appeared at {step} in {layer}"
    elif layer and count == 0:
        part = {"forward": "output ", "backward": "gradient "}.get(origin, "")
        what = (f"training diverged at {step}: {layer}'s {part}norm overflowed (a norm overflow: every "
                f"entry finite, their sum of squares beyond the float range)")
    else:
        where = f" in {layer}" if layer else " in the loss or global gradient norm"
        what = f"non-finite values (NaN/Inf) first appeared at {step}{where}"
    net = [f"{k}={fmt_num(v)}" for k, v in (("‖g‖", f["g"]), ("loss", f["loss"])) if v is not None]
    return what + (f"; at that step {', '.join(net)}" if net else "") + "; training stopped"


def _layerwise_message(f: dict, t: Table, layer: str) -> str:
    """How many of the run's checked layers a layer-wise rule flags, which, the worst, from when."""
    per = f.get("per_layer", [f])
    names = [str(t.layer_names[x["l"]]) for x in per]
    pct = f["kind"] != "update_ratio"
    val, thr = (f"{v:.0%}" if pct else fmt_num(v) for v in (f["value"], f["threshold"]))
    op = {"<": "below", ">": "above", "≥": "at least"}[f["op"]]
    span = _span(f)
    if f["kind"] == "update_ratio":
        subject = f"update/weight ratio ‖ΔW‖/‖W‖ {op} {thr}"
        tail = " — " + ("learning stalls" if f["op"] == "<" else "updates are unstable") + " (healthy ≈ 1e-3)"
    elif f["kind"] == "saturation":
        subject = f"{op} {thr} of outputs at a bound of {t.layer_kind[f['l']]}"
        tail = "; the gradient through a saturated unit ≈ 0"
    else:
        how = ("over the recent-steps window (dead_frac_window)" if f.get("windowed_all", f["windowed"])
               else "over the recent-steps window where recorded, else on a whole batch"
               if f.get("windowed_any") else "on a whole batch")
        subject, tail = f"{op} {thr} of units dead (inactive {how})", ""
    where = f"{len(names)} of {f['n_checked']} {f['noun']}"
    if len(names) == 1:
        ev = f"in {layer} ({where}): {val}, median over {span} (held at {f['hits']} of {f['span']} steps)"
    else:
        ev = f"in {where} ({_short(names)}; worst {val} at {layer}, median over {span})"
    cause = f"; {_CAUSE_TEXT[f['cause']]}" if f.get("cause") else ""
    return f"{subject} {ev} from step {f['step']} on{tail}{cause}"


def _message(f: dict, t: Table, th: Thresholds, layer: str) -> str:
    """Plain English with the evidence of one raw finding."""
    kind, rule = f["kind"], f["rule"]
    names = [str(t.layer_names[x]) for x in f["layers"]]
    if rule in ("vanishing_ratio", "exploding_ratio"):
        first, last = t.layer_names[f["first"]], t.layer_names[f["last"]]
        verb = "shrinks to" if kind == "vanishing" else "grows to"
        rel = "below" if kind == "vanishing" else "above"
        return (f"back-propagated ‖∂L/∂y‖ {verb} {fmt_num(f['value'])}× from {last} (output) to {first} "
                f"(threshold {fmt_num(f['threshold'])}) from step {f['step']} on; {_window(f)}; {rel} the "
                f"threshold relative to {last} at {len(names)} of {f['n_dense']} dense layers"
                + (f" ({_short(names)})" if names else ""))
    if rule == "exploding_growth":
        steps = f"{f['k']} recorded step" + ("s" if f["k"] != 1 else "")
        return (f"global gradient norm grew {fmt_num(f['value'])}× in {steps}, from "
                f"{fmt_num(f['g0'])} at step {f['s0']} to {fmt_num(f['g1'])} at step {f['s1']} (threshold "
                f"{fmt_num(f['threshold'])}× within {th.window} steps)")
    if kind == "diverged":
        return _diverged_message(f, layer)
    if kind in ("saturation", "dead_units", "update_ratio"):
        return _layerwise_message(f, t, layer)
    if kind == "failed":
        err = str(f.get("error") or "").strip().splitlines()
        return "run failed" + (f": {err[-1]}" if err else "") + " (no metrics to diagnose)"
    if kind == "no_data":
        return "no rule could be checked: the run has none of the metrics the rules need"
    return f"no rule fired over {f['n_steps']} recorded steps (checked: {', '.join(f['checked'])})"


def _num(cfg: Mapping[str, Any], key: str) -> float | None:
    v = cfg.get(key)
    try:
        return None if v is None or pd.isna(v) else float(v)
    except (TypeError, ValueError):
        return None


def _lr(cfg: Mapping[str, Any], factor: float) -> str:
    lr = _num(cfg, "lr")
    return f" (lr={lr:g} → {lr * factor:g})" if lr else ""


def suggest_fix(kind: str, rule: str = "", config: Mapping[str, Any] | None = None, layer: str = "",
                *, cause: str = "") -> str:
    """A concrete fix for a finding, tailored by the run's config (activation, init, batch_norm…)."""
    c = config or {}
    if cause == "vanishing":
        return (f"fix the vanishing gradient first (see its finding); if updates stay this small, raise the "
                f"learning rate{_lr(c, 10)}")
    act, init = c.get("activation"), str(c.get("init") or "")
    has_norm = bool(c.get("batch_norm")) or bool(c.get("layer_norm"))
    if kind == "vanishing":
        if act in BOUNDED:
            parts = [f"replace {act} with a ReLU-family activation and He init (init='he_normal')"]
        elif isinstance(act, str) and not init.startswith("he"):
            parts = [f"use He init (init='he_normal') for {act}"]
        elif act is None:
            parts = ["use ReLU-family activations with He init"]
        else:
            parts = ["raise the init scale (weight_scale) towards He's √2"]
        if not has_norm:
            parts.append("add batch norm (batch_norm=true)")
        if not c.get("residual"):
            parts.append("add residual connections (residual=true)")
        return ", or ".join(parts)
    if kind == "exploding":
        ws, clip = _num(c, "weight_scale"), _num(c, "clip_norm")
        scale = f"weight_scale={ws:g} → 1" if ws and ws > 1 else "He/Glorot"
        cl = f"clip harder (clip_norm={clip:g} → {clip / 10:g})" if clip else "clip gradients (clip_norm=1)"
        if c.get("batch_norm") and rule == "exploding_ratio":  # Yang et al. 2019: BN explodes at init
            res = "" if c.get("residual") else "add residual connections (residual=true), "
            return (f"batch norm amplifies back-propagated gradients in deep nets at initialisation: "
                    f"{res}use fewer layers, or {cl} and warm up the learning rate")
        return f"lower the init scale ({scale}), {cl}, or lower the learning rate{_lr(c, 0.1)}"
    if kind == "diverged":
        tail = "; or train in float64" if c.get("dtype") == "float32" else ""
        clip = "" if _num(c, "clip_norm") else ", clip gradients (clip_norm=1)"
        return f"lower the learning rate{_lr(c, 0.1)}{clip}, or check the init scale{tail}"
    if kind == "saturation":
        a = layer_kind(layer) if layer else (act or "the activation")
        norm = "" if has_norm else ", add batch/layer norm before it"
        return (f"keep {a}'s inputs near 0: Glorot init (init='glorot_uniform') or a smaller weight_scale"
                f"{norm}, or switch to a ReLU-family activation")
    if kind == "dead_units":
        leaky = "" if act in ("leaky_relu", "elu", "selu", "gelu") else "use leaky_relu or elu, "
        return f"{leaky}lower the learning rate{_lr(c, 0.1)}, use He init, or add batch norm"
    if kind == "update_ratio":
        if rule == "update_ratio_low":
            return f"raise the learning rate{_lr(c, 10)}, or first fix vanishing gradients upstream"
        return f"lower the learning rate{_lr(c, 0.1)} or clip gradients (clip_norm)"
    if kind == "failed":
        return "read the run's error (runs table 'error' column), fix the config or code, re-run"
    if kind == "no_data":
        return "record the layers' metrics (record_layers, record_every) and diagnose again"
    return ""


__all__ = ["COLUMNS", "KINDS", "SEVERITY", "Thresholds", "diagnose", "findings_from_json",
           "findings_to_json", "format_findings", "run_verdicts", "suggest_fix"]
