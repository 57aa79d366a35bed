"""Which modules of a PyTorch model gradlab watches, under which kind, with which unit rules.

Layers keep torch's qualified module names (``features.3``, ``blocks.2.fc1``). Their kind is data:
Linear → ``dense``; Conv*/ConvTranspose* → ``conv``; BatchNorm* → ``batchnorm``; LayerNorm →
``layernorm``; GroupNorm and InstanceNorm (group norm with one channel per group) → ``groupnorm``;
Embedding* → ``embedding``; Dropout* → ``dropout``; the activation modules → ``activation``; any other
module with parameters of its own → ``weighted``. Containers, pooling and reshaping modules are not
watched. Activations get the same saturation and inactivity rules as gradlab's own
(:mod:`gradlab.nn.activations`); activations without one (SiLU, Mish, Hardswish, …) get the flow
statistics only, and are listed at attach time, as are activations gradlab cannot see because the
model calls them as functions (``F.relu``, ``torch.tanh``).
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gradlab.nn.activations import GELU_INACTIVE_X, SATURATION_LEVEL, SELU_ALPHA, SELU_SCALE

Rule = Callable[[Any, Any], Any]


@dataclass(frozen=True)
class Threshold:
    """``source < value`` (``<=`` when ``inclusive``); ``source`` is the output ``"y"`` or input ``"x"``."""

    source: str
    value: float
    inclusive: bool

    def mask(self, y: Any, x: Any = None) -> Any:
        """Where the rule holds (None when it needs the input and there is none)."""
        t = y if self.source == "y" else x
        if t is None:
            return None
        return t <= self.value if self.inclusive else t < self.value

    __call__ = mask  # a rule, as gradlab's activations and the statistic table call it


@dataclass(frozen=True)
class UnitRules:
    """An activation's unit rules as thresholds, so a unit's "inactive at every sample" is one max-reduce.

    ``inactive``: the inactive region, ``v < t`` or ``v <= t``. ``low``/``high``: saturation below
    ``low`` or above ``high`` (``high`` tests ``y > t``, or ``y >= t`` when inclusive).
    """

    name: str
    inactive: Threshold | None = None
    low: Threshold | None = None
    high: Threshold | None = None

    @property
    def saturated(self) -> Rule | None:
        """The saturation mask as a rule ``(y, x) -> mask``, as gradlab's activations give it."""
        if self.low is None and self.high is None:
            return None
        lo, hi = self.low, self.high

        def rule(y: Any, x: Any = None) -> Any:
            below = lo.mask(y) if lo is not None else None
            above = (y >= hi.value if hi.inclusive else y > hi.value) if hi is not None else None
            return above if below is None else below if above is None else below | above
        return rule


@dataclass(frozen=True)
class Layer:
    """One watched module: its qualified name, kind, unit rules (activations) and own parameters."""

    name: str
    module: nn.Module
    kind: str
    rules: UnitRules | None
    weight: nn.Parameter | None
    bias: nn.Parameter | None
    n_params: int
    fan_in: int | None
    fan_out: int | None


def _y(value: float, inclusive: bool = False) -> Threshold:
    return Threshold("y", value, inclusive)


_L = SATURATION_LEVEL
_GRADLAB_RULES = {  # the rules of gradlab/nn/activations.py, as thresholds
    "relu": UnitRules("relu", inactive=_y(0.0, True)),
    "leaky_relu": UnitRules("leaky_relu", inactive=_y(0.0)),
    "sigmoid": UnitRules("sigmoid", low=_y(1.0 - _L), high=_y(_L)),
    "tanh": UnitRules("tanh", low=_y(-_L), high=_y(_L)),
    "selu": UnitRules("selu", inactive=_y(0.0, True), low=_y(_L * -SELU_ALPHA * SELU_SCALE)),
    "gelu": UnitRules("gelu", inactive=Threshold("x", GELU_INACTIVE_X, False)),
}


def unit_rules(module: nn.Module) -> UnitRules | None:
    """The unit rules of an activation module, or None when it is not one gradlab knows."""
    if isinstance(module, nn.ReLU6):
        return UnitRules("relu6", inactive=_y(0.0, True), high=_y(6.0, True))
    if isinstance(module, nn.Hardtanh):  # the gradient is exactly 0 at and beyond either bound
        lo, hi = float(module.min_val), float(module.max_val)
        return UnitRules("hardtanh", low=_y(lo, True), high=_y(hi, True))
    if isinstance(module, (nn.ELU, nn.CELU)):
        name = "elu" if isinstance(module, nn.ELU) else "celu"
        return UnitRules(name, inactive=_y(0.0, True), low=_y(_L * -float(module.alpha)))
    if isinstance(module, nn.Softplus):
        return UnitRules("softplus", inactive=_y(math.log1p(1.0 - _L) / float(module.beta)))
    for types, name in ((nn.ReLU, "relu"), (nn.LeakyReLU, "leaky_relu"), (nn.SELU, "selu"),
                        (nn.GELU, "gelu"), (nn.Sigmoid, "sigmoid"), (nn.Tanh, "tanh")):
        if isinstance(module, types):
            return _GRADLAB_RULES[name]
    return None


FLOW_ONLY = (nn.SiLU, nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Softsign, nn.Tanhshrink, nn.LogSigmoid,
             nn.PReLU, nn.RReLU, nn.GLU, nn.Threshold, nn.Softshrink, nn.Hardshrink)
"""Activation modules watched for their flow statistics only (no saturation or inactivity rule)."""

_KINDS: tuple[tuple[tuple[type, ...], str], ...] = (
    ((nn.Linear, nn.Bilinear), "dense"),
    ((nn.modules.conv._ConvNd,), "conv"),
    ((nn.modules.batchnorm._BatchNorm,), "batchnorm"),
    ((nn.LayerNorm, nn.RMSNorm) if hasattr(nn, "RMSNorm") else (nn.LayerNorm,), "layernorm"),
    ((nn.GroupNorm, nn.modules.instancenorm._InstanceNorm), "groupnorm"),
    ((nn.Embedding, nn.EmbeddingBag), "embedding"),
    ((nn.modules.dropout._DropoutNd,), "dropout"),
)


def kind_of(module: nn.Module) -> tuple[str, UnitRules | None] | None:
    """(kind, unit rules) of a module gradlab watches; None for containers and parameter-free others."""
    for types, kind in _KINDS:
        if isinstance(module, types):
            return kind, None
    rules = unit_rules(module)
    if rules is not None:
        return "activation", rules
    if isinstance(module, FLOW_ONLY):
        return "activation", UnitRules(type(module).__name__.lower())
    if any(True for _ in module.parameters(recurse=False)):
        return "weighted", None
    return None


def _fans(module: nn.Module, weight: torch.Tensor | None) -> tuple[int | None, int | None]:
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if isinstance(module, nn.modules.conv._ConvNd):
        return module.in_channels, module.out_channels
    if isinstance(module, nn.Embedding):
        return module.num_embeddings, module.embedding_dim
    if weight is not None and weight.ndim == 1:
        return weight.numel(), weight.numel()
    return None, None


def discover(model: nn.Module, layers: str | Sequence[str] | None = None) -> list[Layer]:
    """The watched modules of ``model`` in definition order, restricted to names matching ``layers``."""
    if layers is not None:
        patterns = [layers] if isinstance(layers, str) else list(layers)
        if not patterns or not all(isinstance(p, str) for p in patterns):
            raise TypeError(f"layers={layers!r} must be a glob pattern or a list of them")
    out = []
    for qualified, module in model.named_modules():
        name = qualified or "model"
        if layers is not None and not any(fnmatch.fnmatchcase(name, p) for p in patterns):
            continue
        found = kind_of(module)
        if found is None:
            continue
        kind, rules = found
        own = dict(module.named_parameters(recurse=False))
        weight = own.get("weight")
        if weight is None:
            weight = next((p for n, p in own.items() if n != "bias"), None)
        fan_in, fan_out = _fans(module, weight)
        out.append(Layer(name, module, kind, rules, weight, own.get("bias"),
                         sum(p.numel() for p in own.values()), fan_in, fan_out))
    if layers is not None and not out:
        names = [q or "model" for q, m in model.named_modules() if kind_of(m) is not None]
        raise ValueError(f"layers={layers!r} matches no watchable module; they are: {', '.join(names)}")
    return out


def uncovered(found: list[Layer]) -> list[str]:
    """Human-readable notes on what gets no unit statistics: activations without a rule."""
    return [f"{lay.name} ({type(lay.module).__name__}): flow statistics only, no saturation/dead-unit rule"
            for lay in found if lay.kind == "activation" and lay.rules is not None
            and lay.rules.low is None and lay.rules.high is None and lay.rules.inactive is None]
