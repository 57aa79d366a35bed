"""The fix that usually works for a finding, in the language of the run and sized by its measurements.

A run's *language* comes from its runs-table row: ``framework == "torch"`` speaks PyTorch
(``nn.init.kaiming_normal_``, ``torch.nn.utils.clip_grad_norm_``…), ``"numpy"`` (a user's loop seen
by the Observer) plain terms, and anything else — gradlab's own runs, a missing column — gradlab's
config keys (``init='he_normal'``, ``clip_norm=1``). Changes of a number (the learning rate, the init
scale, the clip threshold) are sized by what was measured — e.g. lr × target/measured update ratio —
and said to be estimates. The same fixes as config changes that ``gradlab.fix`` can try are in
:mod:`gradlab.diagnosis.candidates`, worded from this module's term table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from gradlab.diagnosis.thresholds import Thresholds
from gradlab.nn.activations import BOUNDED

_TERMS: dict[str, dict[str, str]] = {
    "gradlab": {
        "he": "He init (init='he_normal')", "glorot": "Glorot init (init='glorot_uniform')",
        "bn": "batch norm (batch_norm=true)", "residual": "residual connections (residual=true)",
        "relu": "a ReLU-family activation (activation='relu')", "leaky": "activation='leaky_relu' or 'elu'",
        "decay": "weight decay (weight_decay=5e-4, a common start)",
        "f64": "train in float64 (dtype='float64')",
        "scale": "init scale (weight_scale)",
        "norm_layer": "batch/layer norm (batch_norm=true or layer_norm=true)",
        "unfreeze": "check that the learning rate is representable in the run's dtype",
        "no_grad": "nothing reaches it from the loss: every unit after it is dead or saturated",
    },
    "torch": {
        "he": "He init (nn.init.kaiming_normal_(layer.weight, nonlinearity='relu'))",
        "glorot": "Glorot init (nn.init.xavier_uniform_(layer.weight))",
        "bn": "batch norm (nn.BatchNorm1d/2d after each linear/conv layer)",
        "residual": "a residual connection (x + block(x)) around each block",
        "relu": "a ReLU-family activation (nn.ReLU)", "leaky": "nn.LeakyReLU or nn.ELU",
        "decay": "weight decay (weight_decay=5e-4 in the optimizer; AdamW with Adam)",
        "f64": "train in float64 (model.double())", "scale": "init std",
        "norm_layer": "nn.BatchNorm1d/2d or nn.LayerNorm before it",
        "unfreeze": "check the layer's requires_grad and that its parameters are in the optimizer's "
                    "param_groups",
        "no_grad": "check for .detach() or torch.no_grad() around it, and for dead units after it",
    },
    "plain": {
        "he": "He init (W ~ N(0, 2/fan_in))", "glorot": "Glorot init (W ~ U(±√(6/(fan_in + fan_out))))",
        "bn": "batch normalisation before each activation", "residual": "residual connections (x + f(x))",
        "relu": "a ReLU-family activation", "leaky": "leaky ReLU or ELU",
        "decay": "weight decay (an L2 penalty, ~5e-4)", "f64": "compute in float64",
        "scale": "init scale", "norm_layer": "batch or layer normalisation before it",
        "unfreeze": "check that your loop applies the layer's update",
        "no_grad": "check that the layer's output reaches the loss, and for dead units after it",
    },
}
_ESTIMATE = "an estimate"


def language(config: Mapping[str, Any] | None) -> str:
    """``"torch"``, ``"plain"`` (``framework == "numpy"`` or another) or ``"gradlab"`` (no framework)."""
    fw = (config or {}).get("framework")
    if not isinstance(fw, str) or fw in ("", "gradlab"):
        return "gradlab"
    return "torch" if fw == "torch" else "plain"


def _num(cfg: Mapping[str, Any], key: str) -> float | None:
    v = cfg.get(key)
    try:
        return None if v is None or pd.isna(v) else float(v)
    except (TypeError, ValueError):
        return None


def _round(x: float) -> str:
    """An estimate's digits: two between 0.1 and 10 (1.4, 0.71), else one (3e-05, 40)."""
    digits = 2 if 0.1 <= abs(x) < 10 else 1
    return f"{float(f'{x:.{digits}g}'):g}"


def _factor(factor: float) -> str:
    """``×1000`` or ``÷30`` (one significant digit)."""
    return f"×{_round(factor)}" if factor >= 1 else f"÷{_round(1 / factor)}"


def lr_change(cfg: Mapping[str, Any], factor: float, lang: str, sized: bool = True) -> str:
    """The learning rate scaled by ``factor``, in the run's terms: ``lr=1e-07 → ~0.0001``."""
    lr = _num(cfg, "lr")
    tail = f": {_ESTIMATE}" if sized else ""
    if not lr:
        return f" (~{_factor(factor)}{tail})"
    new = f"{lr:g} → ~{_round(lr * factor)}"
    what = {"gradlab": f"lr={new}", "torch": f"the optimizer's lr: {new}"}.get(lang, new)
    return f" ({what}, {_factor(factor)}{tail})"


def _clip(value: float | None, lang: str) -> str:
    v = _round(value) if value else "1"
    return {"gradlab": f"clip_norm={v}",
            "torch": f"torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm={v})"}.get(
        lang, f"clip the global gradient norm at {v}")


def _clip_advice(cfg: Mapping[str, Any], g0: float | None, lang: str) -> str:
    """Clip at about the gradient norm measured before the trouble (``g0``), or harder than now."""
    clip = _num(cfg, "clip_norm")
    ok = g0 is not None and math.isfinite(g0) and g0 > 0
    target = g0 if ok and not (clip and g0 >= clip) else (clip / 10 if clip else None)
    what = "clip harder" if clip else "clip gradients"
    if ok and target == g0:
        return f"{what} at about the ‖g‖ before the growth ({_clip(target, lang)}: {_ESTIMATE})"
    return f"{what} ({_clip(target, lang)})"


def _scale(cfg: Mapping[str, Any], gain: float, lang: str) -> str:
    """The init scale divided by the measured per-layer ``gain``."""
    ws, by = _num(cfg, "weight_scale"), _factor(1 / gain)
    why = f"the measured gain per layer is {gain:.2g}: {_ESTIMATE}"
    if lang == "gradlab" and ws:
        return f"the init scale (weight_scale={ws:g} → ~{_round(ws / gain)}, {by}; {why})"
    return f"the {_TERMS[lang]['scale']} {by} ({why})"


def _update_factor(ev: Mapping[str, Any], th: Thresholds, default: float,
                   low: bool = False) -> tuple[float, bool]:
    """(lr factor, sized?): target / measured typical update ratio when measured and on the right
    side of the target; else ``default``."""
    u = ev.get("update_ratio")
    if u is not None and u > 0 and math.isfinite(u):
        f = th.update_ratio_target / u
        if (f > 1) if low else (f < 1):
            return (f if low else min(f, default)), True
    return default, False


def suggest_fix(kind: str, rule: str = "", config: Mapping[str, Any] | None = None, layer: str = "",
                *, cause: str = "", evidence: Mapping[str, Any] | None = None,
                thresholds: Thresholds | None = None) -> str:
    """A concrete fix for a finding, in the run's language (see :func:`language`), sized by
    ``evidence`` (measured values: ``update_ratio``, ``gain``, ``g``, ``clip``…) where it has them.

    ``layer`` is the affected layer's kind, or its activation's name (``tanh``)."""
    c, ev, th = config or {}, evidence or {}, thresholds or Thresholds()
    lang = language(c)
    T = _TERMS[lang]
    if cause == "vanishing":  # the tiny updates follow the tiny gradients: no lr sized by them
        return (f"fix the vanishing gradient first (see its finding); if updates stay this small, raise the "
                f"learning rate{lr_change(c, 10.0, lang, False)}")
    if cause:
        return f"follows from the {cause.replace('_', ' ')} finding: fix that first"
    act, init = c.get("activation"), str(c.get("init") or "")
    has_norm = bool(c.get("batch_norm")) or bool(c.get("layer_norm"))
    gain = ev.get("gain")
    sized_gain = gain is not None and math.isfinite(gain) and gain > 0
    ws = _num(c, "weight_scale")
    if kind == "vanishing":
        small = sized_gain and gain < 1 and ws is not None and ws < 1  # a scale below the init's own
        if act == "sigmoid" or (act in BOUNDED and not small):
            parts = [f"replace {act} with {T['relu']} and {T['he']}"]
        elif isinstance(act, str) and small:
            parts = [f"raise {_scale(c, gain, lang)}"]
        elif isinstance(act, str) and not init.startswith("he"):
            parts = [f"use {T['he']} for {act}"]
        elif isinstance(act, str) and sized_gain and gain < 1:
            parts = [f"raise {_scale(c, gain, lang)}"]
        else:
            parts = [f"use {T['relu']} with {T['he']}"]
        if not has_norm:
            parts.append(f"add {T['bn']}")
        if not c.get("residual"):
            parts.append(f"add {T['residual']}")
        return ", or ".join(parts)
    if kind in ("exploding", "poor_init"):
        cl = _clip_advice(c, ev.get("g0"), lang)
        if c.get("batch_norm") and rule == "exploding_ratio":  # Yang et al. 2019: BN explodes at init
            res = "" if c.get("residual") else f"add {T['residual']}, "
            return (f"batch norm amplifies back-propagated gradients in deep nets at initialisation: "
                    f"{res}use fewer layers, or {cl} and warm up the learning rate")
        known = init.startswith(("he", "glorot", "lecun", "orthogonal"))
        parts = []
        if sized_gain and gain != 1:  # measured at initialisation: the init scale to change
            parts.append(("lower " if gain > 1 else "raise ") + _scale(c, gain, lang))
        elif lang == "gradlab" and ws and ws > 1:
            parts.append(f"lower the init scale (weight_scale={ws:g} → 1, the init's own)")
        elif not known:
            parts.append(f"use {T['he']} for ReLU-family / {T['glorot']} for tanh")
        if kind == "poor_init":
            alt = f"{T['he']} for ReLU-family / {T['glorot']} for tanh"
            return ", or ".join(parts if parts and parts[-1].endswith(alt) else [*parts, alt])
        f, sized = _update_factor(ev, th, 0.1)
        return ", ".join([*parts, cl]) + f", or lower the learning rate{lr_change(c, f, lang, sized)}"
    if kind == "diverged":
        tail = f"; or {T['f64']}" if c.get("dtype") == "float32" else ""
        clip = "" if _num(c, "clip_norm") else f", clip gradients ({_clip(None, lang)})"
        f, sized = _update_factor(ev, th, 0.1)
        return f"lower the learning rate{lr_change(c, f, lang, sized)}{clip}, or check the init scale{tail}"
    if kind == "saturation":
        a = layer or act or "the activation"
        norm = "" if has_norm else f", add {T['norm_layer']}"
        return (f"keep {a}'s inputs near 0: {T['glorot']} or a smaller {T['scale']}{norm}, or switch to "
                f"{T['relu']}")
    if kind in ("dead_units", "dying_units"):
        leaky = "" if act in ("leaky_relu", "elu", "selu", "gelu") else f"use {T['leaky']}, "
        f, sized = _update_factor(ev, th, 0.1)
        lower = f"lower the learning rate{lr_change(c, f, lang, sized)}"
        return f"{leaky}{lower}, use {T['he']}, or add {T['bn']}"
    if kind == "update_ratio":
        if rule == "update_ratio_low":
            f, sized = _update_factor(ev, th, 10.0, low=True)
            raise_lr = f"raise the learning rate{lr_change(c, f, lang, sized)}"
            return f"{raise_lr}, or first fix vanishing gradients upstream"
        f, sized = _update_factor(ev, th, 0.1)
        lower = f"lower the learning rate{lr_change(c, f, lang, sized)}"
        return f"{lower} or clip gradients ({_clip(None, lang)})"
    if kind == "loss_plateau":
        f, sized = _update_factor(ev, th, 10.0, low=True)
        if sized and f > 10:  # updates clearly too small (a decade below the healthy size)
            return f"raise the learning rate{lr_change(c, f, lang, sized)}"
        return ("the updates are of a healthy size but the loss does not fall: check the data and labels "
                "and the loss function, then the learning rate schedule")
    if kind == "oscillating_loss":
        f, sized = _update_factor(ev, th, 1 / 3)
        return f"lower the learning rate{lr_change(c, f, lang, sized)}, or warm it up"
    if kind == "clipping":
        g, clip = ev.get("g"), ev.get("clip")
        if g and clip and math.isfinite(g) and math.isfinite(clip) and g > 0:
            lower = f"lower the learning rate{lr_change(c, clip / g, lang)}"
            return (f"raise the clip threshold above the typical ‖g‖ = {g:.2g} ({_clip(2 * g, lang)}, a "
                    f"guard for rare spikes) and {lower} to keep the step size that clipping gave")
        return "raise the clip threshold above the typical gradient norm and lower the learning rate instead"
    if kind == "frozen":
        if rule == "frozen_grad":
            return f"no gradient reaches the layer: {T['no_grad']}; if it is frozen on purpose, ignore this"
        lr = _num(c, "lr")
        if lang == "gradlab" and lr and c.get("dtype") == "float32" and lr < 1.2e-38:
            return f"lr={lr:g} rounds to 0 in float32: use a representable learning rate, or dtype='float64'"
        return f"the optimizer does not update it: {T['unfreeze']}; if it is frozen on purpose, ignore this"
    if kind == "weight_growth":
        rate, lr = ev.get("rate"), _num(c, "lr")
        if rate and lr and math.isfinite(rate) and rate > 0:
            # W ← W − lr·λ·W removes lr·λ of ‖W‖ per step: λ = rate / lr balances the measured growth
            lam = _round(rate / lr)
            decay = {"gradlab": f"weight_decay={lam}", "torch": f"weight_decay={lam} in the optimizer"}.get(
                lang, f"an L2 penalty λ = {lam}")
            return (f"add weight decay ({decay}: it takes back the {rate:.1%} per step that ‖W‖ grew by; "
                    f"{_ESTIMATE}), or look for what pushes ‖W‖ up (a decay with the wrong sign, a learning "
                    f"rate too high)")
        return f"add {T['decay']}, or lower the learning rate"
    if kind == "failed":
        return "read the run's error (runs table 'error' column), fix the config or code, re-run"
    if kind == "no_data":
        return "record the layers' metrics (record_layers, record_every) and diagnose again"
    return ""
