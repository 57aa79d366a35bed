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
    """``vanishing`` when ‖∂L/∂y‖(first weighted layer) / ‖∂L/∂y‖(output layer) is below this (every
    weighted kind counts: dense, conv, embedding, weighted — from the layers table).
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
    update_ratio_target: float = 1e-3
    """The healthy ‖ΔW‖/‖W‖ that sized fixes aim for (CS231n: "somewhere around 1e-3"). Updates scale
    about linearly with the learning rate (SGD, momentum and Adam alike), so a fix multiplies lr by
    target / measured — an estimate, and worded as one."""
    converged_loss: float = 0.05
    """A run has *converged* while its loss (median over a window) is below this fraction of its loss
    at the start (median over the first window): then tiny updates are expected, not a stall, and a
    flat loss is not a plateau. Our choice: 95 % of the way to zero loss; the issue's converged
    He/ReLU run reaches 0.06 %, the healthy runs that are still learning stay above 10 %."""
    loss_drop: float = 0.01
    """``loss_plateau`` when, by the run's end, the loss (median over a window) has fallen by less than
    this fraction of its loss at the start, and has stayed so since (the finding's step). SageMaker's
    LossNotDecreasing asks a fall of ``diff_percent`` = 0.1 % every ``num_steps`` = 10 steps; on
    noisy minibatch losses we compare window medians over the whole run instead: 0.1 % per 10 steps
    compounds to about 1 % over the 100 steps of a short run."""
    spike_rise: float = 0.25
    """``oscillating_loss``: a step's loss is a *spike* when it exceeds the median of the ``window``
    recorded steps before it by more than this fraction of the loss at the start. Our choice: the
    minibatch noise of the healthy corpus runs stays below 0.2 of the starting loss; a learning rate
    too high makes the loss "often increase significantly" (Goodfellow et al., *Deep Learning*
    §8.3.1: "violent oscillations"), by 0.5–2× the starting loss in the corpus."""
    spike_frac: float = 0.25
    """``oscillating_loss`` when more than this fraction of some window's steps are spikes (3 of 10).
    Our choice: healthy corpus runs have at most one spike in any window of 10 steps."""
    init_spread: float = 10.0
    """``poor_init`` when, at step 0, the largest over the smallest variance of the hidden weighted
    layers' outputs (``act_std``²; the first layer, which reads the data, and the output layer are
    left out) is above this: SageMaker's PoorWeightInitialization ``threshold`` = 10.0 (max/min
    variance across layers). Glorot & Bengio (2010) and He et al. (2015) choose the init scale to
    keep that variance constant from layer to layer."""
    frozen_update: float = 0.0
    """``frozen`` when ‖ΔW‖/‖W‖ is at most this (exactly 0 by default) while the layer's gradient is
    not: the optimizer does not update the layer (frozen on purpose, left out of the optimizer, or a
    learning rate that underflows). SageMaker's UnchangedTensor tests ``np.allclose`` (rtol 1e-5)
    over 3 steps; relative changes that small are ``update_ratio``'s stall, so ``frozen`` is kept
    for exact zeros."""
    frozen_grad: float = 0.0
    """``frozen`` when a layer's ‖∂L/∂W‖ is at most this (exactly 0 by default): no gradient reaches
    it (SageMaker's AllZero: 100 % of the values zero)."""
    clip_frac: float = 0.5
    """``clipping`` when gradient clipping fired on more than this fraction of the run's steps.
    Pascanu et al. (2013) clip to stop rare explosions, with a threshold near the average norm;
    clipping on most steps turns SGD into normalised SGD whose step is lr × clip_norm: the clip
    threshold is doing the learning rate's work."""
    dying_frac: float = 0.5
    """``dying_units`` when at least this fraction of a ReLU-family layer's units that were alive at
    its first recorded step (initialisation) are dead: SageMaker's DeadRelu ``threshold_layer`` (50 %),
    counted over the units that were alive at the start."""
    weight_growth: float = 10.0
    """``weight_growth`` when a weighted layer's ‖W‖ reaches this multiple of its value at the start.
    Our choice: an order of magnitude; He and Glorot set ‖W‖ so that each layer keeps the signal's
    scale, so a tenfold ‖W‖ multiplies the layer's gain by ten (unless a norm layer follows, where
    the growth only shrinks the effective learning rate: van Laarhoven 2017)."""
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
                     "update_ratio_high", "update_ratio_target", "spike_rise"):
            if getattr(self, name) <= 0:
                raise ValueError(f"threshold {name}={getattr(self, name)!r} must be > 0")
        if self.update_ratio_low >= self.update_ratio_high:
            raise ValueError("threshold update_ratio_low must be below update_ratio_high")
        for name in ("converged_loss", "loss_drop", "spike_frac", "clip_frac"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"threshold {name}={getattr(self, name)!r} must be in [0, 1)")
        if not 0 < self.dying_frac <= 1:
            raise ValueError(f"threshold dying_frac={self.dying_frac!r} must be in (0, 1]")
        for name in ("init_spread", "weight_growth"):
            if getattr(self, name) <= 1:
                raise ValueError(f"threshold {name}={getattr(self, name)!r} must be > 1")
        for name in ("frozen_update", "frozen_grad"):
            if getattr(self, name) < 0:
                raise ValueError(f"threshold {name}={getattr(self, name)!r} must be >= 0")


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
