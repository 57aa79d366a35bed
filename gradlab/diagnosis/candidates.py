"""Candidate fixes as data: each finding's recipe (:data:`gradlab.diagnosis.recipes.RECIPES`) names
the config changes that usually remove it, with the same words ``gradlab diagnose`` prints for it.

A :class:`Fix` is one recipe step that changes the config: its ``changes`` for gradlab's Config, its
``text`` (the step's words in the run's language, sized by the measurements where a number changes)
and, for PyTorch/NumPy runs, the ``code`` to change. Steps that only advise (no config change) stay
in the diagnose text and are not candidates.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gradlab.diagnosis.recipes import RECIPES, Case, advice, applicable
from gradlab.diagnosis.terms import language
from gradlab.diagnosis.thresholds import Thresholds

Changes = dict[str, Any]


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
        "no_clip": "remove the torch.nn.utils.clip_grad_norm_(...) call",
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
        "no_clip": "remove the gradient clipping from your loop",
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
        elif k == "clip_norm" and not v:  # clip_norm=0: clipping off
            lines.append(t["no_clip"])
        elif k in ("batch_norm", "layer_norm", "residual", "dtype"):
            lines.append(t[k])
        elif k in t:
            lines.append(t[k].format(v=f"{v:g}" if isinstance(v, float) else v))
    return "\n".join(lines)


def candidate_fixes(kinds: list[tuple[str, str]], config: Mapping[str, Any],
                    evidence: Mapping[str, Mapping[str, Any]] | None = None,
                    thresholds: Thresholds | None = None) -> list[Fix]:
    """The candidate fixes of a run's findings ``[(kind, rule), …]``, most serious first, without
    duplicates and without changes that leave the config as it is.

    Args:
        evidence: kind → the measured values that size its fixes (``update_ratio``, ``gain``, ``g0``…).
    """
    th, ev, lang = thresholds or Thresholds(), evidence or {}, language(config)
    out: dict[tuple, Fix] = {}
    for kind, rule in kinds:
        for step, changes in applicable(advice(kind, Case(config, ev.get(kind, {}), th, rule)), config):
            if not changes:  # advice: nothing to run
                continue
            key = tuple(sorted(changes.items()))
            if key in out:
                old = out[key]
                out[key] = Fix(old.name, old.changes, old.text, old.code, old.sized, (*old.kinds, kind))
                continue
            out[key] = Fix(step.name, changes, step.words, _code(changes, lang), step.sized, (kind,))
    return list(out.values())


__all__ = ["RECIPES", "Fix", "candidate_fixes"]
