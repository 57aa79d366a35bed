"""How findings are put into words: the message of each rule, with its evidence (the fixes are in
:mod:`gradlab.diagnosis.recipes`, said by :mod:`gradlab.diagnosis.fixes`)."""

from __future__ import annotations

from gradlab.diagnosis.findings import fmt_num
from gradlab.diagnosis.table import Table
from gradlab.diagnosis.thresholds import Thresholds


def _short(names: list[str], keep: int = 4) -> str:
    """``a, b, c`` or ``a, b, …, z`` for long lists."""
    return ", ".join(names) if len(names) <= keep else f"{names[0]}, {names[1]}, …, {names[-1]}"


def _span(f: dict) -> str:
    """The steps of the window a rule held over: ``steps 3–12`` or ``step 0``."""
    return f"steps {f['lo']}–{f['hi']}" if f["lo"] != f["hi"] else f"step {f['lo']}"


def _window(f: dict) -> str:
    return f"held at {f['hits']} of {f['span']} recorded steps ({_span(f)})"


def _cause_text(kind: str) -> str:
    """How a consequence names the finding it follows from."""
    if kind == "diverged":
        return "part of the divergence (see that finding)"
    what = {"vanishing": "the vanishing gradient", "exploding": "the exploding gradient",
            "update_ratio": "the updates' size", "dying_units": "units dying",
            "dead_units": "dead units", "frozen": "frozen layers", "saturation": "saturated units",
            "poor_init": "the poor initialisation", "weight_growth": "the growing weights"}.get(kind, kind)
    return f"a consequence of {what} (see that finding)"


def _diverged_message(f: dict, layer: str) -> str:
    """What went non-finite, where and when; a norm overflow (no NaN/Inf entry) is said so."""
    src = " (from the runs table)" if f["source"] == "runs" else ""
    step = (f"step {f['step']}" if f["step"] is not None else "an unrecorded step") + src
    count, origin = f["count"], f["origin"]
    if layer and count > 0:
        n = f"{count:.0f}" if count < 1e15 else fmt_num(count)  # a count; inf in a hand-made frame
        what = f"{n} non-finite entries (NaN/Inf) first appeared at {step} in {layer}"
    elif layer and count == 0:
        part = {"forward": "output ", "backward": "gradient "}.get(origin, "")
        what = (f"training diverged at {step}: {layer}'s {part}norm overflowed (a norm overflow: every "
                f"entry finite, their sum of squares beyond the float range)")
    else:
        where = f" in {layer}" if layer else " in the loss or global gradient norm"
        what = f"non-finite values (NaN/Inf) first appeared at {step}{where}"
    net = [f"{k}={fmt_num(v)}" for k, v in (("‖g‖", f["g"]), ("loss", f["loss"])) if v is not None]
    return what + (f"; at that step {', '.join(net)}" if net else "") + "; training stopped"


def _layerwise_subject(f: dict, t: Table, op: str, thr: str) -> tuple[str, str]:
    """What a layer-wise rule measured, and what it means."""
    kind, rule = f["kind"], f["rule"]
    if kind == "update_ratio":
        tail = ("learning stalls while the loss still has room to fall" if f["op"] == "<"
                else "updates are unstable")
        return f"update/weight ratio ‖ΔW‖/‖W‖ {op} {thr}", f" — {tail} (healthy ≈ 1e-3)"
    if kind == "saturation":
        return (f"{op} {thr} of outputs at a bound of {t.layer_kind[f['l']]}",
                "; the gradient through a saturated unit ≈ 0")
    if kind == "dead_units":
        how = ("over the recent-steps window (dead_frac_window)" if f.get("windowed_all", f["windowed"])
               else "over the recent-steps window where recorded, else on a whole batch"
               if f.get("windowed_any") else "on a whole batch")
        return f"{op} {thr} of units dead (inactive {how})", ""
    if kind == "dying_units":
        seen = (f" (dead_frac_window confirmed it at step {f['confirmed']})"
                if f.get("windowed") and f["confirmed"] != f["step"] else "")
        return (f"{op} {thr} of the units alive at initialisation died during training ({f['dead0']:.0%} of "
                f"units dead at first, {f['dead']:.0%} later)", f"{seen}; a dead unit passes no gradient "
                "and does not recover")
    if rule == "frozen_grad":
        return "gradient ‖∂L/∂W‖ exactly 0", "; no gradient reaches the layer, it cannot learn"
    if rule == "frozen_update":
        grad = f" while ‖∂L/∂W‖ ≈ {fmt_num(f['grad'])}" if f.get("grad") == f.get("grad") else ""
        return f"update ‖ΔW‖ exactly 0{grad}", "; the optimizer does not change the layer"
    still = "still rising at the run's end" if f.get("rising") else "not rising over the run's last window"
    return f"‖W‖ grew {op} {thr} its initial value (now {fmt_num(f['last'])}×, {still})", ""


def _layerwise_message(f: dict, t: Table, layer: str) -> str:
    """How many of the run's checked layers a layer-wise rule flags, which, the worst, from when."""
    per = f.get("per_layer", [f])
    names = [str(t.layer_names[x["l"]]) for x in per]
    kind = f["kind"]
    if kind in ("saturation", "dead_units", "dying_units"):
        val, thr = (f"{v:.0%}" for v in (f["value"], f["threshold"]))
    elif kind == "weight_growth":
        val, thr = (f"{fmt_num(v)}×" for v in (f["value"], f["threshold"]))
    else:
        val, thr = (fmt_num(v) for v in (f["value"], f["threshold"]))
    op = {"<": "below", ">": "above", "≥": "at least", "≤": "at most"}[f["op"]]
    subject, tail = _layerwise_subject(f, t, op, thr)
    span = _span(f)
    where = f"{len(names)} of {f['n_checked']} {f['noun']}"
    if len(names) == 1:
        ev = f"in {layer} ({where}): {val}, median over {span} (held at {f['hits']} of {f['span']} steps)"
    else:
        ev = f"in {where} ({_short(names)}; worst {val} at {layer}, median over {span})"
    cause = f"; {_cause_text(f['cause'])}" if f.get("cause") else ""
    return f"{subject} {ev} from step {f['step']} on{tail}{cause}"


def _run_message(f: dict, t: Table) -> str:
    """The messages of the run-level rules on the loss curve, clipping and the initialisation."""
    rule = f["rule"]
    if rule == "loss_plateau":
        fell = f"fell by {f['value']:.1%}" if f["value"] >= 0 else f"rose by {-f['value']:.1%}"
        return (f"loss not decreasing: from {fmt_num(f['start_loss'])} at the start (median of the first "
                f"window) it {fell} to {fmt_num(f['end_loss'])} by step {f['hi']} (threshold: a fall of "
                f"{f['threshold']:.0%}), flat since step {f['step']}")
    if rule == "loss_spikes":
        return (f"oscillating loss: it jumped above the median of the steps before it by more than "
                f"{fmt_num(f['rise_threshold'])}× its starting value ({fmt_num(f['start_loss'])}) at "
                f"{f['hits']} of {f['span']} recorded steps ({_span(f)}; largest jump "
                f"{fmt_num(f['rise'])}×; threshold: more than {f['threshold']:.0%} of a window's steps) "
                f"from step {f['step']} on: the learning rate is likely too high, short of divergence")
    if rule == "clip_most_steps":
        g = (f" (median ‖g‖ {fmt_num(f['g'])} against a clip threshold of {fmt_num(f['clip'])})"
             if f["g"] == f["g"] else "")
        return (f"gradient clipping fired at {f['hits']} of {f['span']} recorded steps ({_span(f)}){g} "
                f"from step {f['step']} on: the clip threshold is doing the learning rate's work")
    low, high = t.layer_names[f["low"]], t.layer_names[f["high"]]
    gain = f"; the activations' scale changes ×{f['gain']:.2g} per layer" if f["gain"] == f["gain"] else ""
    return (f"poor initialisation: at step 0 the variance of the hidden weighted layers' outputs spans "
            f"{fmt_num(f['value'])}× (threshold {fmt_num(f['threshold'])}×), from "
            f"{fmt_num(f['std_low'] ** 2)} at {low} to {fmt_num(f['std_high'] ** 2)} at {high} over "
            f"{f['n_hidden']} layers{gain}; a "
            f"well-scaled init keeps it about constant (Glorot & Bengio 2010, He et al. 2015)")


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
                f"threshold relative to {last} at {len(names)} of {f['n_weighted']} {f['noun']}"
                + (f" ({_short(names)})" if names else ""))
    if rule == "exploding_growth":
        steps = f"{f['k']} recorded step" + ("s" if f["k"] != 1 else "")
        return (f"global gradient norm grew {fmt_num(f['value'])}× in {steps}, from "
                f"{fmt_num(f['g0'])} at step {f['s0']} to {fmt_num(f['g1'])} at step {f['s1']} (threshold "
                f"{fmt_num(f['threshold'])}× within {th.window} steps)")
    if kind == "diverged":
        return _diverged_message(f, layer)
    if kind in ("saturation", "dead_units", "update_ratio", "dying_units", "frozen", "weight_growth"):
        return _layerwise_message(f, t, layer)
    if kind in ("loss_plateau", "oscillating_loss", "clipping", "poor_init"):
        return _run_message(f, t) + (f"; {_cause_text(f['cause'])}" if f.get("cause") else "")
    if kind == "failed":
        err = str(f.get("error") or "").strip().splitlines()
        return "run failed" + (f": {err[-1]}" if err else "") + " (no metrics to diagnose)"
    if kind == "no_data":
        return "no rule could be checked: the run has none of the metrics the rules need"
    return f"no rule fired over {f['n_steps']} recorded steps (checked: {', '.join(f['checked'])})"
