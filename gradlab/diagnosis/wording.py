"""How findings are put into words: the message of each rule and the fix that usually works."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from gradlab.diagnosis.findings import fmt_num
from gradlab.diagnosis.table import Table
from gradlab.diagnosis.thresholds import Thresholds
from gradlab.nn.activations import BOUNDED


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


def finding_message(f: dict, t: Table, th: Thresholds, layer: str) -> str:
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
    """A concrete fix for a finding, tailored by the run's config (activation, init, batch_norm…);
    ``layer`` is the affected layer's kind, or its activation's name (``tanh``)."""
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
        a = layer or act or "the activation"
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
