"""What to do about each finding, as data: :data:`RECIPES` is the one source of both the ``fix`` text
``gradlab diagnose`` prints (rendered by :func:`gradlab.diagnosis.fixes.suggest_fix`) and the
candidate fixes ``gradlab fix`` and ``gradlab.torch.try_fixes`` run
(:func:`gradlab.diagnosis.candidates.candidate_fixes`).

A recipe reads a finding's :class:`Case` (the run's config and language, what was measured) and
returns its :class:`Advice`: an optional lead (why), the alternatives (:class:`Step`) in the order
they are worth trying — each with its words in the run's language and its config changes (none:
advice that no config change can try, such as "check the data and labels") — and an optional closing
note. :func:`applicable` leaves out, for both uses alike, a step whose changes leave the config as it
is (batch norm is not proposed to a run that has it) or repeat an earlier step's. Numbers are sized by
the measurements and said to be estimates (:mod:`gradlab.diagnosis.terms`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from gradlab.diagnosis.terms import (
    ESTIMATE,
    TERMS,
    clip_text,
    config_number,
    factor_text,
    language,
    lr_change,
    measured,
    round_estimate,
    scale_text,
    update_factor,
)
from gradlab.diagnosis.thresholds import Thresholds
from gradlab.nn.activations import BOUNDED

Changes = dict[str, Any]
HE_ACTS = ("relu", "leaky_relu", "elu", "gelu")
"""Activations He init suits (the ReLU family); every other one gets Glorot init."""
_ALIVE = ("leaky_relu", "elu", "selu", "gelu")  # a gradient below 0 too: their units do not die
_NORMS = {"batch_norm", "layer_norm"}
_ON_PURPOSE = "if it is frozen on purpose, ignore this"


@dataclass(frozen=True)
class Step:
    """One alternative: its words in the run's language, its config changes (empty: advice that no
    config change can try), its short name (its arm in a fix sweep) and whether a measurement sized it."""

    words: str
    changes: Changes = field(default_factory=dict)
    name: str = ""
    sized: bool = False


@dataclass(frozen=True)
class Advice:
    """A finding's fix, said as ``lead: step, step, or step; note``."""

    steps: tuple[Step, ...] = ()
    lead: str = ""
    note: str = ""


@dataclass(frozen=True)
class Case:
    """What a recipe reads: the run's config (a runs-table row), the finding's rule, its measurements
    (``update_ratio``, ``gain``, ``g0``, ``g``, ``clip``, ``rate``), the thresholds, and the affected
    layer's kind or activation."""

    config: Mapping[str, Any]
    evidence: Mapping[str, Any] = field(default_factory=dict)
    thresholds: Thresholds = field(default_factory=Thresholds)
    rule: str = ""
    layer: str = ""

    @property
    def lang(self) -> str:
        """The run's language (:func:`gradlab.diagnosis.terms.language`)."""
        return language(self.config)

    @property
    def terms(self) -> Mapping[str, str]:
        """The run's language's words for inits, layers, activations and checks."""
        return TERMS[self.lang]

    def num(self, key: str) -> float | None:
        """A number of the config, None when missing or NA."""
        return config_number(self.config, key)

    def text(self, key: str) -> str:
        """A name of the config (``activation``, ``init``, ``dtype``), "" when missing or NA."""
        v = self.config.get(key)
        return v if isinstance(v, str) else ""

    def on(self, key: str) -> bool:
        """Whether a switch of the config (``batch_norm``…) is on; missing or NA is off."""
        v = self.config.get(key)
        try:
            return not pd.isna(v) and bool(v)
        except (TypeError, ValueError):
            return False


Recipe = Callable[[Case], Advice]


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except (TypeError, ValueError):  # pd.NA, arrays
        return False


def applicable(advice: Advice, config: Mapping[str, Any]) -> list[tuple[Step, Changes]]:
    """The advice's steps worth saying and trying, each with what it changes in ``config``: a step
    whose changes leave the config as it is (or only switch a normalisation off), or repeat an
    earlier step's, is left out; advice (no changes) always stays."""
    out, seen = [], set()
    for s in advice.steps:
        eff = {k: v for k, v in s.changes.items() if not _same(config.get(k), v)}
        if s.changes:
            key = tuple(sorted(eff.items()))
            if not eff or (set(eff) <= _NORMS and not any(eff.values())) or key in seen:
                continue
            seen.add(key)
        out.append((s, eff))
    return out


# -- the steps recipes share ----------------------------------------------------------------------


def _lr(c: Case, factor: float, sized: bool, verb: str) -> Step:
    """The learning rate × ``factor`` (words only when the config has no learning rate)."""
    lr = c.num("lr")
    changes = {"lr": float(round_estimate(lr * factor))} if lr else {}
    return Step(f"{verb} the learning rate{lr_change(c.config, factor, c.lang, sized)}", changes,
                f"lr {factor_text(factor)}", sized)


def _init_step(c: Case, key: str, init: str, name: str, act: str = "", for_: str = "") -> Step:
    """He (``key="he"``) or Glorot init at its own scale, with ``act`` as the activation if given."""
    T, now = c.terms, c.text("activation")
    changes = {**({"activation": act} if act else {}), "init": init, "weight_scale": 1.0}
    if act and act != now:
        what = (f"replace {now} with {T[act]} and {T[key]}" if now else f"use {T[act]} with {T[key]}")
    elif c.text("init") == init:
        what = f"use {T[key]} at its own scale (weight_scale=1)"
    else:
        what = f"use {T[key]}" + (f" for {for_}" if for_ else "")
    return Step(what, changes, name)


def _matched_init(c: Case) -> list[Step]:
    """He init for a ReLU-family activation, Glorot for another; both, each for its kind, when the
    activation is unknown (a PyTorch model, a user's loop)."""
    act = c.text("activation")
    he = _init_step(c, "he", "he_normal", "he init", for_=act or "ReLU-family activations")
    glorot = _init_step(c, "glorot", "glorot_uniform", "glorot", for_=act or "tanh")
    return [he, glorot] if not act else [he] if act in HE_ACTS else [glorot]


def _gain_scale(c: Case) -> Step | None:
    """The init scale ÷ the per-layer gain measured at initialisation (None: not measured)."""
    gain = c.evidence.get("gain")
    if not measured(gain) or gain == 1:
        return None
    ws = c.num("weight_scale") or 1.0  # outside gradlab: a factor on the weights as they are
    return Step(("lower " if gain > 1 else "raise ") + scale_text(c.config, gain, c.lang),
                {"weight_scale": float(round_estimate(ws / gain))}, f"init scale {factor_text(1 / gain)}",
                True)


def _bn(c: Case) -> Step:
    return Step(f"add {c.terms['bn']}", {"batch_norm": True, "layer_norm": False}, "batch norm")


def _residual(c: Case) -> Step:
    return Step(f"add {c.terms['residual']}", {"residual": True}, "residual")


def _clip(c: Case) -> Step:
    """Clip at about the gradient norm measured before the trouble (``g0``), or harder than now."""
    clip, g0 = c.num("clip_norm"), c.evidence.get("g0")
    at_g0 = measured(g0) and not (clip and g0 >= clip)
    target = g0 if at_g0 else (clip / 10 if clip else None)
    what = "clip harder" if clip else "clip gradients"
    words = (f"{what} at about the ‖g‖ before the growth ({clip_text(target, c.lang)}: {ESTIMATE})" if at_g0
             else f"{what} ({clip_text(target, c.lang)})")
    v = float(round_estimate(target)) if target else 1.0
    return Step(words, {"clip_norm": v}, f"clip_norm={v:g}", at_g0)


def _clip_if_none(c: Case) -> list[Step]:
    if c.num("clip_norm"):
        return []
    return [Step(f"clip gradients ({clip_text(None, c.lang)})", {"clip_norm": 1.0}, "clip_norm=1")]


def _adam(c: Case) -> Step:
    return Step(f"switch to {c.terms['adam']}", {"optimizer": "adam", "lr": 1e-3, "momentum": 0.0}, "adam")


def _f64(c: Case) -> list[Step]:
    return [Step(c.terms["f64"], {"dtype": "float64"}, "float64")] if c.text("dtype") == "float32" else []


# -- the recipes ----------------------------------------------------------------------------------


def _vanishing(c: Case) -> Advice:
    act, init, gain, ws = c.text("activation"), c.text("init"), c.evidence.get("gain"), c.num("weight_scale")
    scale = _gain_scale(c) if measured(gain) and gain < 1 else None
    small = scale is not None and ws is not None and ws < 1  # a scale below the init's own
    first = (_init_step(c, "he", "he_normal", "he init", for_=act) if act in HE_ACTS
             else _init_step(c, "he", "he_normal", "relu+he", act="relu"))
    scale_is_off = small or (act not in BOUNDED and init.startswith("he"))
    if scale is not None and act and act != "sigmoid" and scale_is_off:
        first, scale = scale, first  # raise the scale first
    steps = [first, *([scale] if scale else [])]
    if not (c.on("batch_norm") or c.on("layer_norm")):
        steps.append(_bn(c))
    steps.append(_residual(c))
    if act not in HE_ACTS:  # Glorot & Bengio's remedy for saturating units; a ReLU net keeps ReLU
        tanh = "" if act == "tanh" else "tanh"
        steps.append(_init_step(c, "glorot", "glorot_uniform", "tanh+glorot" if tanh else "glorot", act=tanh,
                                for_="tanh"))
    return Advice(tuple(steps))


def _init_fix(c: Case, poor_init: bool) -> list[Step]:
    """The init scale sized by the measured gain, else back to the init's own, else (or for a poor
    initialisation, also) the init that suits the activation."""
    ws = c.num("weight_scale")
    scale = _gain_scale(c)
    if scale is not None:
        out = [scale]
    elif ws and ws > 1:
        words = (f"lower the init scale (weight_scale={ws:g} → 1, the init's own)" if c.lang == "gradlab"
                 else f"lower the {c.terms['scale']} to the init's own")
        out = [Step(words, {"weight_scale": 1.0}, "init scale 1")]
    else:
        known = c.text("init").startswith(("he", "glorot", "lecun", "orthogonal"))
        out = [] if known else _matched_init(c)
    return out + _matched_init(c) if poor_init else out


def _exploding(c: Case) -> Advice:
    clip = _clip(c)
    if c.on("batch_norm") and c.rule == "exploding_ratio":  # Yang et al. 2019: BN explodes at init
        return Advice((_residual(c), Step("use fewer layers"), clip, Step("warm up the learning rate")),
                      lead="batch norm amplifies back-propagated gradients in deep nets at initialisation")
    f, sized = update_factor(c.evidence, c.thresholds, 0.1)
    v = clip.changes["clip_norm"]
    sized_clip = f": {ESTIMATE}" if clip.sized else ""
    bn_clip = Step(f"add {c.terms['bn']} and clip ({clip_text(v, c.lang)}{sized_clip})",
                   {"batch_norm": True, "layer_norm": False, "clip_norm": v}, "batch norm+clip", clip.sized)
    return Advice((*_init_fix(c, False), clip, bn_clip, _lr(c, f, sized, "lower")))


def _poor_init(c: Case) -> Advice:
    return Advice((*_init_fix(c, True), _bn(c)))


def _diverged(c: Case) -> Advice:
    f, sized = update_factor(c.evidence, c.thresholds, 0.1)
    return Advice((_lr(c, f, sized, "lower"), *_clip_if_none(c), Step("check the init scale"), *_f64(c)))


def _saturation(c: Case) -> Advice:
    T, act = c.terms, c.text("activation")
    steps = [_init_step(c, "glorot", "glorot_uniform", "glorot"), Step(f"use a smaller {T['scale']}")]
    if not (c.on("batch_norm") or c.on("layer_norm")):
        steps += [_bn(c), Step(f"add {T['ln']}", {"layer_norm": True, "batch_norm": False}, "layer norm")]
    if act not in HE_ACTS:
        steps.append(_init_step(c, "he", "he_normal", "relu+he", act="relu"))
    return Advice(tuple(steps), lead=f"keep {c.layer or act or 'the activation'}'s inputs near 0")


def _dead(c: Case) -> Advice:
    T = c.terms
    f, sized = update_factor(c.evidence, c.thresholds, 0.1)
    swap = [] if c.text("activation") in _ALIVE else [
        Step(f"use {T['leaky']}", {"activation": "leaky_relu"}, "leaky_relu"),
        Step(f"use {T['elu']}", {"activation": "elu"}, "elu")]
    return Advice((*swap, _lr(c, f, sized, "lower"), _init_step(c, "he", "he_normal", "he init"), _bn(c)))


def _too_small(c: Case) -> Advice:
    f, sized = update_factor(c.evidence, c.thresholds, 10.0, low=True)
    return Advice((_lr(c, f, sized, "raise"), _adam(c), Step("first fix vanishing gradients upstream")))


def _too_big(c: Case) -> Advice:
    f, sized = update_factor(c.evidence, c.thresholds, 0.1)
    return Advice((_lr(c, f, sized, "lower"), *_clip_if_none(c)))


def _oscillating(c: Case) -> Advice:
    f, sized = update_factor(c.evidence, c.thresholds, 1 / 3)
    return Advice((_lr(c, f, sized, "lower"), *_clip_if_none(c), Step("warm the learning rate up")))


def _plateau(c: Case) -> Advice:
    f, sized = update_factor(c.evidence, c.thresholds, 10.0, low=True)
    if sized and f > 10:  # updates clearly too small (a decade below the healthy size)
        return Advice((_lr(c, f, sized, "raise"), _adam(c)))
    check = Step("check the data and labels and the loss function, then the learning rate schedule")
    if measured(c.evidence.get("update_ratio")):
        return Advice((check, _adam(c)), lead="the updates are of a healthy size but the loss does not fall")
    return Advice((check, _lr(c, 10.0, False, "raise"), _adam(c)), lead="the loss does not fall")


def _clipping(c: Case) -> Advice:
    g, clip = c.evidence.get("g"), c.evidence.get("clip")
    clip = clip if measured(clip) else c.num("clip_norm")
    if not (measured(g) and measured(clip)):
        return Advice((Step("raise the clip threshold above the typical gradient norm (or switch clipping "
                            "off) and lower the learning rate instead", {"clip_norm": 0.0}, "no clipping"),))
    lower = _lr(c, clip / g, True, "lower")
    words = (f"raise the clip threshold above the typical ‖g‖ = {g:.2g} ({clip_text(2 * g, c.lang)}, a guard "
             f"for rare spikes) and {lower.words} to keep the step size that clipping gave")
    return Advice((Step(words, {"clip_norm": float(round_estimate(2 * g)), **lower.changes},
                        f"clip {round_estimate(2 * g)}, lr {factor_text(clip / g)}", True),))


def _growth(c: Case) -> Advice:
    rate, lr = c.evidence.get("rate"), c.num("lr")
    lower = _lr(c, 1 / 3, False, "lower")
    if not (measured(rate) and lr):
        return Advice((Step(f"add {c.terms['decay']}", {"weight_decay": 5e-4}, "weight_decay=0.0005"), lower))
    # W ← W − lr·λ·W removes lr·λ of ‖W‖ per step: λ = rate / lr balances the measured growth
    lam = round_estimate(rate / lr)
    decay = {"gradlab": f"weight_decay={lam}", "torch": f"weight_decay={lam} in the optimizer"}.get(
        c.lang, f"an L2 penalty λ = {lam}")
    return Advice((Step(f"add weight decay ({decay}: it takes back the {rate:.1%} per step that ‖W‖ grew by; "
                        f"{ESTIMATE})", {"weight_decay": float(lam)}, f"weight_decay={float(lam):g}", True),
                   lower, Step("look for what pushes ‖W‖ up (a decay with the wrong sign, a learning rate "
                               "too high)")))


def _frozen(c: Case) -> Advice:
    if c.rule == "frozen_grad":
        return Advice((Step(c.terms["no_grad"]),), lead="no gradient reaches the layer", note=_ON_PURPOSE)
    lr = c.num("lr")
    if c.lang == "gradlab" and lr and c.text("dtype") == "float32" and lr < 1.2e-38:
        return Advice((Step("use a representable learning rate"), *_f64(c)),
                      lead=f"lr={lr:g} rounds to 0 in float32")
    return Advice((Step(c.terms["unfreeze"]), *_f64(c)), lead="the optimizer does not update it",
                  note=_ON_PURPOSE)


def _failed(c: Case) -> Advice:
    return Advice((Step("read the run's error (runs table 'error' column), fix the config or code, re-run"),))


def _no_data(c: Case) -> Advice:
    return Advice((Step("record the layers' metrics (record_layers, record_every) and diagnose again"),))


RECIPES: dict[str, Recipe] = {
    "vanishing": _vanishing, "exploding": _exploding, "poor_init": _poor_init, "diverged": _diverged,
    "saturation": _saturation, "dead_units": _dead, "dying_units": _dead, "update_ratio_low": _too_small,
    "update_ratio_high": _too_big, "update_ratio": _too_big, "loss_plateau": _plateau,
    "oscillating_loss": _oscillating, "clipping": _clipping, "weight_growth": _growth, "frozen": _frozen,
    "failed": _failed, "no_data": _no_data,
}
"""Finding rule (where a kind has two directions), else kind → its recipe."""


def advice(kind: str, case: Case, cause: str = "") -> Advice:
    """The fix of a finding of ``kind`` (its rule in ``case.rule``); one that follows from another
    finding (``cause``) is fixed by fixing that."""
    if cause == "vanishing":  # the tiny updates follow the tiny gradients: no lr sized by them
        return Advice(lead="fix the vanishing gradient first (see its finding)",
                      note=f"if updates stay this small, raise the learning rate"
                           f"{lr_change(case.config, 10.0, case.lang, False)}")
    if cause:
        return Advice(lead=f"follows from the {cause.replace('_', ' ')} finding: fix that first")
    recipe = RECIPES.get(case.rule) or RECIPES.get(kind)
    return recipe(case) if recipe else Advice()


__all__ = ["HE_ACTS", "RECIPES", "Advice", "Case", "Recipe", "Step", "advice", "applicable"]
