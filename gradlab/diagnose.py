"""Verdicts from records: which run (and layer) vanishes, explodes, diverges, saturates or dies, from
which step, measured how, against which threshold, and what usually fixes it.

:func:`diagnose` applies the pure rules of :mod:`gradlab.rules` (thresholds: :class:`Thresholds`,
each documented with its source) and returns a *findings* frame, one row per finding:

=========  ==================================================================================
run        the run id
kind       one of :data:`KINDS` (what ``--fail-on`` selects)
rule       the check that fired (``vanishing_ratio``, ``exploding_growth``, ``update_ratio_low``…)
layer      the layer concerned ("" for run-level findings)
layers     the layers affected, comma-separated in forward order
step       the first recorded step at which it held (Int64; <NA> for ``healthy``/``failed``)
value      the measured value (median over the first window in which it held; see gradlab.rules)
op         how value compares with threshold when the rule fires ("<", ">", "≥")
threshold  the threshold it was compared with
severity   "error" (diverged, failed, vanishing, exploding: training cannot work as set up),
           "warning" (saturation, dead_units, update_ratio: it works badly), "info" (healthy, no_data)
message    plain English with the evidence
fix        a concrete suggestion, using the run's config from ``runs`` when given
=========  ==================================================================================

Every run gets at least one row: ``healthy`` when rules were checked and none fired, ``no_data`` when
no rule could be checked (no usable metrics), ``failed`` when the runs table says so. Rules whose
metrics a run lacks are skipped for it (the ``healthy`` message lists the rules that were checked).

``diverged`` takes its step and layer from the runs table (``diverged_step``/``diverged_layer``)
when given; from the metrics alone, the step is the first with ``nonfinite > 0`` or a non-finite loss
or global gradient norm, and the layer the earliest in *forward* order whose output was non-finite
or overflowed (no finite ``act_std``), else the layer nearest the output with a non-finite gradient
(where the backward pass met it first) — the monitor's own rule.
"""

from __future__ import annotations

import dataclasses
import json
import math
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from gradlab.rules import prepare, rule_diverged, rule_growth, rule_layerwise, rule_ratio

KINDS = ("diverged", "failed", "exploding", "vanishing", "saturation", "dead_units", "update_ratio",
         "no_data", "healthy")
"""Every finding kind, most serious first (the order of :func:`run_verdicts`)."""

SEVERITY = {"diverged": "error", "failed": "error", "exploding": "error", "vanishing": "error",
            "saturation": "warning", "dead_units": "warning", "update_ratio": "warning",
            "no_data": "info", "healthy": "info"}
COLUMNS = ["run", "kind", "rule", "layer", "layers", "step", "value", "op", "threshold", "severity",
           "message", "fix"]
_CHECKED = ("diverged", "vanishing", "exploding", "saturation", "dead_units", "update_ratio")
_BOUNDED = ("sigmoid", "tanh")


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
) -> pd.DataFrame:
    """Findings for every run in ``metrics`` (and ``runs``): one row per finding, see module doc."""
    th = resolve_thresholds(thresholds)
    if runs is not None and "run" not in runs.columns:
        raise ValueError("runs table lacks the 'run' column")
    extra = [str(r) for r in runs["run"]] if runs is not None else []
    t = prepare(metrics, extra)
    code = {r: i for i, r in enumerate(t.runs)}
    checked = {k: np.zeros(len(t.runs), dtype=bool) for k in _CHECKED}
    raw = rule_diverged(t, runs, code, checked)
    raw += rule_ratio(t, th, checked) + rule_growth(t, th, checked) + rule_layerwise(t, th, checked)
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
    records = []
    for f in raw:
        name = f.get("layer_name", t.layer_names[f["l"]] if f["l"] >= 0 else "")
        run = t.runs[f["r"]]
        cfg = configs.get(run, {})
        records.append({
            "run": run, "kind": f["kind"], "rule": f["rule"], "layer": str(name),
            "layers": ", ".join(str(t.layer_names[x]) for x in f["layers"]),
            "step": f["step"], "value": f["value"], "op": f["op"], "threshold": f["threshold"],
            "severity": SEVERITY[f["kind"]], "message": _message(f, t, th, str(name)),
            "fix": suggest_fix(f["kind"], f["rule"], cfg, str(name)),
            "_order": (KINDS.index(f["kind"]), f["step"] if f["step"] is not None else -1,
                       int(t.layer_pos[f["l"]]) if f["l"] >= 0 else -1),
        })
    records.sort(key=lambda x: (x["run"], x["_order"]))
    return _frame(records)


def _frame(records: list[dict]) -> pd.DataFrame:
    """The findings frame with its fixed columns and dtypes."""
    df = pd.DataFrame({c: [rec.get(c) for rec in records] for c in COLUMNS})
    for c in ("run", "kind", "rule", "layer", "layers", "op", "severity", "message", "fix"):
        df[c] = df[c].astype("string")
    df["step"] = pd.array([None if s is None or pd.isna(s) else int(s) for s in df["step"]], dtype="Int64")
    df["value"] = pd.to_numeric(df["value"], errors="coerce").astype("float64")
    df["threshold"] = pd.to_numeric(df["threshold"], errors="coerce").astype("float64")
    return df


def _configs(runs: pd.DataFrame | None) -> dict[str, dict[str, Any]]:
    """Run id → its row of the runs table as a dict (config fields, status…)."""
    if runs is None:
        return {}
    return {str(row["run"]): row for row in runs.to_dict("records")}


def _steps_per_run(t: Any) -> np.ndarray:
    """How many distinct steps each run recorded (from its network-level rows when it has them)."""
    n = np.zeros(len(t.runs), dtype=np.int64)
    for name in ("loss", "grad_norm_total", "grad_out_norm", "nonfinite"):
        rows = t.get(name)
        if rows is not None and len(rows.r):
            keys = np.unique(rows.r * (np.int64(1) << 32) + rows.step)
            n = np.maximum(n, np.bincount(keys >> 32, minlength=len(t.runs)))
    return n


def _g(x: float) -> str:
    """A number in two significant digits (scientific when small or large)."""
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2g}"


def _short(names: list[str], keep: int = 4) -> str:
    """``a, b, c`` or ``a, b, …, z`` for long lists."""
    return ", ".join(names) if len(names) <= keep else f"{names[0]}, {names[1]}, …, {names[-1]}"


def _window(f: dict) -> str:
    span = f"steps {f['lo']}–{f['hi']}" if f["lo"] != f["hi"] else f"step {f['lo']}"
    return f"held at {f['hits']} of {f['span']} recorded steps ({span})"


def _message(f: dict, t: Any, th: Thresholds, layer: str) -> str:
    """Plain English with the evidence of one raw finding."""
    kind, rule = f["kind"], f["rule"]
    names = [str(t.layer_names[x]) for x in f["layers"]]
    if rule in ("vanishing_ratio", "exploding_ratio"):
        first, last = t.layer_names[f["first"]], t.layer_names[f["last"]]
        verb = "shrinks to" if kind == "vanishing" else "grows to"
        rel = "below" if kind == "vanishing" else "above"
        return (f"back-propagated ‖∂L/∂y‖ {verb} {_g(f['value'])}× from {last} (output) to {first} "
                f"(threshold {_g(f['threshold'])}) from step {f['step']} on; {_window(f)}; {rel} the "
                f"threshold relative to {last} at {len(names)} of {f['n_dense']} dense layers"
                + (f" ({_short(names)})" if names else ""))
    if rule == "exploding_growth":
        steps = f"{f['k']} recorded step" + ("s" if f["k"] != 1 else "")
        return (f"global gradient norm grew {_g(f['value'])}× in {steps}, from "
                f"{_g(f['g0'])} at step {f['s0']} to {_g(f['g1'])} at step {f['s1']} (threshold "
                f"{_g(f['threshold'])}× within {th.window} steps)")
    if kind == "diverged":
        where = f" in {layer}" if layer else " in the loss or global gradient norm"
        count = "" if math.isnan(f["value"]) else (f" ({int(f['value'])} non-finite entries)" if f["value"]
                                                   else " (its norm overflowed)")
        src = " (from the runs table)" if f["source"] == "runs" else ""
        step = f"step {f['step']}" if f["step"] is not None else "an unrecorded step"
        return f"non-finite values (NaN/Inf) first appeared at {step}{where}{count}{src}; training stopped"
    if kind == "saturation":
        act = t.layer_kind[f["l"]]
        return (f"{f['value']:.0%} of {layer}'s outputs sit at a bound of {act} (median; threshold "
                f"{f['threshold']:.0%}) from step {f['step']} on; {_window(f)}; its gradient ≈ 0 there")
    if kind == "dead_units":
        how = "over its recent-steps window (dead_frac_window)" if f["windowed"] else "on a whole batch"
        return (f"{f['value']:.0%} of {layer}'s units are dead (inactive {how}; median; threshold "
                f"{f['threshold']:.0%}) from step {f['step']} on; {_window(f)}")
    if kind == "update_ratio":
        what = "learning stalls" if rule == "update_ratio_low" else "updates are unstable"
        rel = "below" if rule == "update_ratio_low" else "above"
        return (f"{layer}: update/weight ratio ‖ΔW‖/‖W‖ is {_g(f['value'])} (median), {rel} "
                f"{_g(f['threshold'])} — {what} (healthy ≈ 1e-3) — from step {f['step']} on; {_window(f)}")
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


def suggest_fix(kind: str, rule: str = "", config: Mapping[str, Any] | None = None, layer: str = "") -> str:
    """A concrete fix for a finding, tailored by the run's config (activation, init, batch_norm…)."""
    c = config or {}
    act, init = c.get("activation"), str(c.get("init") or "")
    has_norm = bool(c.get("batch_norm")) or bool(c.get("layer_norm"))
    if kind == "vanishing":
        if act in _BOUNDED:
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
        a = layer.rsplit("_", 1)[0] if layer else (act or "the activation")
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


def run_verdicts(findings: pd.DataFrame) -> pd.Series:
    """Run → short verdict: its finding kinds, most serious first ("vanishing, dead_units", "healthy")."""
    if findings.empty:
        return pd.Series(dtype="string", name="verdict")
    rank = {k: i for i, k in enumerate(KINDS)}
    kinds = findings[["run", "kind"]].drop_duplicates()
    kinds = kinds.assign(_r=kinds["kind"].map(rank)).sort_values(["run", "_r"], kind="stable")
    out = kinds.groupby("run", sort=False)["kind"].agg(", ".join).astype("string")
    out.index = out.index.astype("string")
    out.index.name = "run"
    return out.rename("verdict")


def format_findings(findings: pd.DataFrame, width: int = 110) -> str:
    """A fixed-width table for the terminal: run, layer, kind, since step, value vs threshold, fix."""
    if findings.empty:
        return "no findings"
    head = ["run", "layer", "kind", "since", "value vs threshold", "fix"]
    rows = []
    for f in findings.itertuples(index=False):
        vs = "" if pd.isna(f.value) else f"{_g(f.value)} {f.op} {_g(f.threshold)}"
        since = "" if pd.isna(f.step) else str(f.step)
        rows.append([_clip(str(f.run), 20), _clip(str(f.layer) or "—", 16), str(f.kind), since, vs,
                     str(f.fix) or "—"])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head[:-1])]
    lead = sum(widths) + 2 * len(widths)
    fix_w = max(24, width - lead)

    def line(cells: list[str], fix: str) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + "  " + fix

    out = [line(head[:-1], head[-1]), line(["-" * w for w in widths], "-" * min(fix_w, 40))]
    for r in rows:
        wrapped = textwrap.wrap(r[-1], fix_w) or [""]
        out.append(line(r[:-1], wrapped[0]).rstrip())
        out.extend((" " * lead + w).rstrip() for w in wrapped[1:])
    return "\n".join(out)


def _clip(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def findings_to_json(findings: pd.DataFrame) -> str:
    """The findings as a JSON array of objects (NaN and <NA> as null); exact float round-trip."""
    def clean(v: Any) -> Any:
        if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
            return None
        return v.item() if isinstance(v, np.generic) else v

    records = [{k: clean(v) for k, v in rec.items()} for rec in findings.to_dict("records")]
    return json.dumps(records, ensure_ascii=False, indent=1)


def findings_from_json(text: str) -> pd.DataFrame:
    """The findings frame back from :func:`findings_to_json` (same columns and dtypes)."""
    return _frame(json.loads(text))


__all__ = ["COLUMNS", "KINDS", "SEVERITY", "Thresholds", "diagnose", "findings_from_json",
           "findings_to_json", "format_findings", "run_verdicts", "suggest_fix"]
