"""The named thresholds of every diagnosis rule, each with its source; overridable per call."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


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
