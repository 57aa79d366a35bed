"""Candidate fixes as data: each finding kind names the config changes that usually remove it.

One table (:data:`RECIPES`) is the single source of a fix's config change and of its words: a
:class:`Fix` carries both (``changes`` for gradlab's Config, ``text`` rendered in the run's language
through :mod:`gradlab.diagnosis.fixes`' term table, and ``code`` for PyTorch/NumPy runs). Fixes that
change a number are sized by what was measured (``evidence``: ``update_ratio``, ``gain``, ``g0``,
``g``, ``rate``), as :func:`gradlab.diagnosis.fixes.suggest_fix` sizes its advice.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gradlab.diagnosis.fixes import _TERMS, _factor, _num, _round, _update_factor, language
from gradlab.diagnosis.thresholds import Thresholds

Changes = dict[str, Any]
Cfg = Mapping[str, Any]


@dataclass(frozen=True)
class Fix:
    """One candidate fix: a short name, its config changes, its words and (outside gradlab) its code."""

    name: str
    changes: Changes
    text: str
    code: str = ""
    sized: bool = False
    kinds: tuple[str, ...] = field(default_factory=tuple)


_CODE: dict[str, dict[str, str]] = {
    "torch": {
        "activation": "swap the activation modules: nn.{act}() in place of the current ones",
        "init": "for m in model.modules():\n"
                "    if isinstance(m, (nn.Linear, nn.Conv2d)):\n"
                "        nn.init.{fn}(m.weight{arg}); nn.init.zeros_(m.bias)",
        "batch_norm": "nn.BatchNorm1d(width) after each nn.Linear (nn.BatchNorm2d after each conv)",
        "layer_norm": "nn.LayerNorm(width) after each nn.Linear",
        "residual": "def forward(self, x):\n    return x + self.block(x)  # around each block",
        "clip_norm": "loss.backward()\ntorch.nn.utils.clip_grad_norm_(model.parameters(), max_norm={v})\n"
                     "optimizer.step()",
        "lr": "for g in optimizer.param_groups:\n    g['lr'] = {v}",
        "optimizer": "optimizer = torch.optim.Adam(model.parameters(), lr={lr})",
        "weight_decay": "optimizer = torch.optim.AdamW(model.parameters(), lr=..., weight_decay={v})",
        "weight_scale": "with torch.no_grad():\n    for m in model.modules():\n"
                        "        if isinstance(m, nn.Linear): m.weight.mul_({v})",
        "dtype": "model.double(); x = x.double()",
    },
    "plain": {
        "activation": "replace your activation with {act}: y = {formula}",
        "init": "W = rng.normal(0, np.sqrt({var}), size=(fan_in, fan_out))",
        "batch_norm": "normalise each layer's pre-activations over the batch: z = (z - z.mean(0)) / z.std(0)",
        "layer_norm": "normalise each layer's pre-activations over units: "
                      "z = (z - z.mean(1, keepdims=True)) / z.std(1, keepdims=True)",
        "residual": "h = h + f(h)  # around each block",
        "clip_norm": "g = np.sqrt(sum((d**2).sum() for d in grads))\n"
                     "if g > {v}: grads = [d * ({v} / g) for d in grads]",
        "lr": "lr = {v}",
        "optimizer": "use Adam (lr={lr}): m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g**2; W -= lr*m̂/(√v̂+eps)",
        "weight_decay": "W -= lr * (dW + {v} * W)",
        "weight_scale": "W *= {v}  # at initialisation",
        "dtype": "compute in float64: x = x.astype(np.float64) and every W",
    },
}
_ACT = {"relu": ("ReLU", "np.maximum(z, 0)"), "leaky_relu": ("LeakyReLU", "np.where(z > 0, z, 0.01 * z)"),
        "elu": ("ELU", "np.where(z > 0, z, np.expm1(z))"), "tanh": ("Tanh", "np.tanh(z)")}
_INIT = {"he_normal": ("kaiming_normal_", ", nonlinearity='relu'", "2 / fan_in"),
         "glorot_uniform": ("xavier_uniform_", "", "2 / (fan_in + fan_out)")}


def _code(changes: Changes, lang: str) -> str:
    """The code to change in a PyTorch model or a NumPy loop for these config changes."""
    if lang == "gradlab":
        return ""
    t, lines = _CODE[lang], []
    for k, v in changes.items():
        if v is False or (k == "weight_scale" and v == 1.0):  # a switch off, or the init's own scale
            continue
        if k == "activation":
            torch_name, formula = _ACT.get(v, (v, v))
            lines.append(t[k].format(act=torch_name, formula=formula))
        elif k == "init":
            fn, arg, var = _INIT.get(v, ("xavier_uniform_", "", "2 / (fan_in + fan_out)"))
            lines.append(t[k].format(fn=fn, arg=arg, var=var))
        elif k == "optimizer":
            lines.append(t[k].format(lr=changes.get("lr", 1e-3)))
        elif k == "lr" and "optimizer" in changes:
            continue
        elif k in ("batch_norm", "layer_norm", "residual", "dtype"):
            lines.append(t[k])
        elif k in t:
            lines.append(t[k].format(v=f"{v:g}" if isinstance(v, float) else v))
    return "\n".join(lines)


def _lr(cfg: Mapping[str, Any], factor: float) -> Changes:
    lr = _num(cfg, "lr")
    return {"lr": float(_round(lr * factor))} if lr else {}


Recipe = Callable[[Mapping[str, Any], Mapping[str, Any], Thresholds, Mapping[str, str]], list[tuple]]
"""(config, evidence, thresholds, terms) → [(name, changes, words, sized)]."""


def _vanishing(c: Cfg, ev: Cfg, th: Thresholds, T: Cfg) -> list[tuple]:
    out = [("relu+he", {"activation": "relu", "init": "he_normal", "weight_scale": 1.0},
            f"{T['relu']} with {T['he']}", False),
           ("batch norm", {"batch_norm": True, "layer_norm": False}, T["bn"], False),
           ("residual", {"residual": True}, T["residual"], False)]
    if c.get("activation") == "tanh":
        glorot = {"init": "glorot_uniform", "weight_scale": 1.0}
        out.append(("glorot", glorot, f"{T['glorot']} for tanh", False))
    else:
        out.append(("tanh+glorot", {"activation": "tanh", "init": "glorot_uniform", "weight_scale": 1.0},
                    f"tanh with {T['glorot']}", False))
    gain, ws = ev.get("gain"), _num(c, "weight_scale")
    if gain and math.isfinite(gain) and 0 < gain < 1 and ws:
        out.append((f"init scale {_factor(1 / gain)}", {"weight_scale": float(_round(ws / gain))},
                    f"the {T['scale']} {_factor(1 / gain)} (measured gain per layer {gain:.2g})", True))
    return out


def _exploding(c: Cfg, ev: Cfg, th: Thresholds, T: Cfg) -> list[tuple]:
    out = []
    gain, ws = ev.get("gain"), _num(c, "weight_scale") or 1.0
    if gain and math.isfinite(gain) and gain > 1:
        out.append((f"init scale {_factor(1 / gain)}", {"weight_scale": float(_round(ws / gain))},
                    f"the {T['scale']} {_factor(1 / gain)} (measured gain per layer {gain:.2g})", True))
    elif ws > 1:
        out.append(("init scale 1", {"weight_scale": 1.0}, f"the {T['scale']} back to 1, the init's own",
                    False))
    g0 = ev.get("g0")
    clip = float(_round(g0)) if g0 and math.isfinite(g0) and g0 > 0 else 1.0
    out.append((f"clip_norm={clip:g}", {"clip_norm": clip}, f"clip the gradient norm at {clip:g}", bool(g0)))
    out.append(("batch norm+clip", {"batch_norm": True, "layer_norm": False, "clip_norm": clip},
                f"{T['bn']} with clipping at {clip:g}", bool(g0)))
    return out


def _diverged(c: Cfg, ev: Cfg, th: Thresholds, T: Cfg) -> list[tuple]:
    f, sized = _update_factor(ev, th, 0.1, low=False)
    out = [(f"lr {_factor(f)}", _lr(c, f), f"the learning rate {_factor(f)}", sized)]
    if not _num(c, "clip_norm"):
        out.append(("clip_norm=1", {"clip_norm": 1.0}, "clip the gradient norm at 1", False))
    if c.get("dtype") == "float32":
        out.append(("float64", {"dtype": "float64"}, T["f64"], False))
    return out


def _dead(c: Cfg, ev: Cfg, th: Thresholds, T: Cfg) -> list[tuple]:
    f, sized = _update_factor(ev, th, 0.1, low=False)
    return [("leaky_relu", {"activation": "leaky_relu"}, T["leaky"], False),
            ("elu", {"activation": "elu"}, "activation ELU", False),
            (f"lr {_factor(f)}", _lr(c, f), f"the learning rate {_factor(f)}", sized)]


def _saturation(c: Cfg, ev: Cfg, th: Thresholds, T: Cfg) -> list[tuple]:
    return [("glorot", {"init": "glorot_uniform", "weight_scale": 1.0}, T["glorot"], False),
            ("batch norm", {"batch_norm": True, "layer_norm": False}, T["bn"], False),
            ("layer norm", {"layer_norm": True, "batch_norm": False}, T["norm_layer"], False)]


def _stalled(c: Cfg, ev: Cfg, th: Thresholds, T: Cfg) -> list[tuple]:
    f, sized = _update_factor(ev, th, 10.0, low=True)
    return [(f"lr {_factor(f)}", _lr(c, f), f"the learning rate {_factor(f)}", sized),
            ("adam", {"optimizer": "adam", "lr": 1e-3, "momentum": 0.0}, "Adam at lr=1e-3", False)]


def _too_big(c: Cfg, ev: Cfg, th: Thresholds, T: Cfg) -> list[tuple]:
    f, sized = _update_factor(ev, th, 1 / 3, low=False)
    out = [(f"lr {_factor(f)}", _lr(c, f), f"the learning rate {_factor(f)}", sized)]
    if not _num(c, "clip_norm"):
        out.append(("clip_norm=1", {"clip_norm": 1.0}, "clip the gradient norm at 1", False))
    return out


def _clipping(c: Cfg, ev: Cfg, th: Thresholds, T: Cfg) -> list[tuple]:
    g, clip = ev.get("g"), _num(c, "clip_norm")
    if not (g and clip and math.isfinite(g) and g > 0):
        return [("no clipping", {"clip_norm": 0.0}, "clipping off", False)]
    return [(f"clip {_round(2 * g)}, lr {_factor(clip / g)}", {"clip_norm": float(_round(2 * g)),
             **_lr(c, clip / g)}, "raise the clip threshold above ‖g‖ and lower the learning rate", True)]


def _growth(c: Cfg, ev: Cfg, th: Thresholds, T: Cfg) -> list[tuple]:
    rate, lr = ev.get("rate"), _num(c, "lr")
    lam = float(_round(rate / lr)) if rate and lr and math.isfinite(rate) and rate > 0 else 5e-4
    return [(f"weight_decay={lam:g}", {"weight_decay": lam}, f"weight decay {lam:g}", lam != 5e-4),
            ("lr ÷3", _lr(c, 1 / 3), "the learning rate ÷3", False)]


def _poor_init(c: Cfg, ev: Cfg, th: Thresholds, T: Cfg) -> list[tuple]:
    relu = str(c.get("activation") or "").endswith("relu")
    init = ("he init", {"init": "he_normal", "weight_scale": 1.0}, T["he"], False) if relu else (
        "glorot", {"init": "glorot_uniform", "weight_scale": 1.0}, T["glorot"], False)
    return [init, ("batch norm", {"batch_norm": True, "layer_norm": False}, T["bn"], False)]


def _frozen(c: Cfg, ev: Cfg, th: Thresholds, T: Cfg) -> list[tuple]:
    return [("float64", {"dtype": "float64"}, T["f64"], False)] if c.get("dtype") == "float32" else []


RECIPES: dict[str, Recipe] = {
    "vanishing": _vanishing, "exploding": _exploding, "diverged": _diverged, "dead_units": _dead,
    "dying_units": _dead, "saturation": _saturation, "loss_plateau": _stalled,
    "update_ratio_low": _stalled, "update_ratio_high": _too_big, "oscillating_loss": _too_big,
    "clipping": _clipping, "weight_growth": _growth, "poor_init": _poor_init, "frozen": _frozen,
}
"""Finding kind (or rule, where a kind has two directions) → its candidate fixes."""


def candidate_fixes(kinds: list[tuple[str, str]], config: Mapping[str, Any],
                    evidence: Mapping[str, Mapping[str, Any]] | None = None,
                    thresholds: Thresholds | None = None) -> list[Fix]:
    """The candidate fixes of a run's findings ``[(kind, rule), …]``, most serious first, without
    duplicates and without changes that leave the config as it is.

    Args:
        evidence: kind → the measured values that size its fixes (``update_ratio``, ``gain``, ``g0``…).
    """
    th, ev, lang = thresholds or Thresholds(), evidence or {}, language(config)
    T = _TERMS[lang]
    out: dict[tuple, Fix] = {}
    for kind, rule in kinds:
        recipe = RECIPES.get(rule) or RECIPES.get(kind)
        if recipe is None:
            continue
        for name, changes, text, sized in recipe(config, ev.get(kind, {}), th, T):
            changes = {k: v for k, v in changes.items() if config.get(k) != v}
            if not changes or (lang == "gradlab" and set(changes) <= {"layer_norm", "batch_norm"}
                               and not changes.get("batch_norm") and not changes.get("layer_norm")):
                continue
            key = tuple(sorted(changes.items()))
            if key in out:
                old = out[key]
                out[key] = Fix(old.name, old.changes, old.text, old.code, old.sized, (*old.kinds, kind))
                continue
            words = text + (" (an estimate from the measurements)" if sized else "")
            out[key] = Fix(name, changes, words, _code(changes, lang), sized, (kind,))
    return list(out.values())


__all__ = ["RECIPES", "Fix", "candidate_fixes"]
