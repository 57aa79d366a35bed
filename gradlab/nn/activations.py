"""Elementwise activations: value, derivative, and the rule for "saturated" or "inactive" units.

Each activation is an :class:`ActivationFn` (pure functions, used by layers and by
:mod:`gradlab.theory.meanfield`) and is wrapped as a layer by :class:`Activation`.

Saturation and inactivity rules (what the monitor counts per unit and per sample):

================  =========================================  ==========================================
activation        ``saturated`` (bounded: gradient ≈ 0)      ``inactive`` (rectifier: unit switched off)
================  =========================================  ==========================================
sigmoid           y < 0.01 or y > 0.99 (φ′ < 0.0099 = 4% of  —
                  its peak 0.25)
tanh              |y| > 0.99 (φ′ = 1 − y² < 0.0199)          —
relu              —                                          y ≤ 0 (φ′ = 0)
leaky_relu        —                                          y < 0 (only the leak α passes)
elu               y < 0.99·(−α) (x < ln 0.01, φ′ < 0.01)     y ≤ 0
selu              y < 0.99·(−λα) (x < ln 0.01)               y ≤ 0
gelu (tanh form)  —                                          x < −3 (|φ′| < 0.012; needs the input x)
softplus          —                                          y < ln(1.01) (x < ln(1/99), φ′ < 0.01)
identity          —                                          —
================  =========================================  ==========================================

A unit is *dead* when it is inactive for every sample of a batch (see :mod:`gradlab.monitor.stats`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gradlab.nn.layers import Layer

Array = np.ndarray

SATURATION_LEVEL = 0.99
"""Fraction of an asymptote beyond which a bounded unit counts as saturated."""

GELU_INACTIVE_X = -3.0
"""GELU counts as inactive below this input, where |φ′| < 0.012."""

SELU_ALPHA = 1.6732632423543772
SELU_SCALE = 1.0507009873554805
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _sigmoid(x: Array) -> Array:
    # exp(-|x|) never overflows: σ(x) = 1/(1+e^{-x}) for x ≥ 0, e^{x}/(1+e^{x}) otherwise.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype, copy=False)


def _gelu(x: Array) -> Array:
    # tanh approximation (Hendrycks & Gimpel 2016, as torch's approximate="tanh"): numpy has no erf.
    u = _SQRT_2_OVER_PI * (x + 0.044715 * x**3)
    return 0.5 * x * (1.0 + np.tanh(u))


def _gelu_d(x: Array) -> Array:
    # d/dx ½x(1+tanh u) = ½(1+tanh u) + ½x(1−tanh²u)·u′,  u′ = √(2/π)(1 + 3·0.044715x²)
    t = np.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x**3))
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * _SQRT_2_OVER_PI * (1.0 + 0.134145 * x * x)


def _softplus(x: Array) -> Array:
    return np.logaddexp(0.0, x).astype(x.dtype, copy=False)


def _relu_fast(x: Array, out: Array | None = None) -> Array:
    # faster than np.maximum(x, 0) (no NaN-propagation checks); NaN stays NaN
    return np.multiply(x, x > 0, out=out)


@dataclass(frozen=True)
class ActivationFn:
    """An elementwise activation φ with its derivative and monitoring rules.

    ``deriv_from_output`` optionally gives φ′ as a function of the output y = φ(x) (sklearn's
    DERIVATIVES), which the layer's backward prefers; ``fast_fn`` optionally replaces ``fn`` in the
    layer's forward and must equal it on every finite input.
    """

    name: str
    fn: Callable[[Array], Array]
    deriv: Callable[[Array], Array]
    saturated: Callable[[Array, Array | None], Array] | None = None
    inactive: Callable[[Array, Array | None], Array] | None = None
    alpha: float = 0.0
    deriv_from_output: Callable[[Array], Array | float] | None = None
    fast_fn: Callable[[Array], Array] | None = None

    def __call__(self, x: Array) -> Array:
        return self.fn(x)


def _make_leaky(alpha: float) -> ActivationFn:
    return ActivationFn(
        name="leaky_relu",
        fn=lambda x: np.where(x > 0, x, alpha * x),
        deriv=lambda x: np.where(x > 0, 1.0, alpha).astype(x.dtype, copy=False),
        inactive=lambda y, x=None: y < 0,
        alpha=alpha,
    )


def _make_elu(alpha: float, scale: float, name: str) -> ActivationFn:
    low = -alpha * scale
    return ActivationFn(
        name=name,
        fn=lambda x: scale * np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0))),
        deriv=lambda x: scale * np.where(x > 0, 1.0, alpha * np.exp(np.minimum(x, 0.0))),
        saturated=lambda y, x=None: y < SATURATION_LEVEL * low,
        inactive=lambda y, x=None: y <= 0,
        alpha=alpha,
    )


ACTIVATIONS: dict[str, ActivationFn] = {
    "sigmoid": ActivationFn(
        "sigmoid",
        _sigmoid,
        lambda x: (lambda s: s * (1.0 - s))(_sigmoid(x)),
        saturated=lambda y, x=None: (y < 1.0 - SATURATION_LEVEL) | (y > SATURATION_LEVEL),
        deriv_from_output=lambda y: y * (1.0 - y),  # σ′ = y(1 − y)
    ),
    "tanh": ActivationFn(
        "tanh",
        np.tanh,
        lambda x: 1.0 - np.tanh(x) ** 2,
        saturated=lambda y, x=None: (y > SATURATION_LEVEL) | (y < -SATURATION_LEVEL),  # operators: torch too
        deriv_from_output=lambda y: 1.0 - y * y,  # tanh′ = 1 − y²
    ),
    "relu": ActivationFn(
        "relu",
        lambda x: np.maximum(x, 0),
        lambda x: (x > 0).astype(x.dtype),
        inactive=lambda y, x=None: y <= 0,
        deriv_from_output=lambda y: y > 0,  # 1[y > 0] = 1[x > 0]
        fast_fn=_relu_fast,
    ),
    "leaky_relu": _make_leaky(0.01),
    "elu": _make_elu(1.0, 1.0, "elu"),
    "selu": _make_elu(SELU_ALPHA, SELU_SCALE, "selu"),
    "gelu": ActivationFn(
        "gelu",
        _gelu,
        _gelu_d,
        inactive=lambda y, x=None: None if x is None else x < GELU_INACTIVE_X,
    ),
    "softplus": ActivationFn(
        "softplus",
        _softplus,
        _sigmoid,
        inactive=lambda y, x=None: y < math.log1p(1.0 - SATURATION_LEVEL),
    ),
    "identity": ActivationFn(
        "identity",
        lambda x: x,
        lambda x: np.ones_like(x),
        deriv_from_output=lambda y: 1.0,  # φ′ = 1
    ),
}

BOUNDED = frozenset({"sigmoid", "tanh"})


def get_activation(name: str | ActivationFn) -> ActivationFn:
    """Resolve an activation by name; unknown names list the allowed ones."""
    if isinstance(name, ActivationFn):
        return name
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ValueError(f"activation={name!r} is unknown; allowed: {', '.join(sorted(ACTIVATIONS))}")
    return ACTIVATIONS[name]


class Activation(Layer):
    """A layer applying an elementwise activation; caches what its derivative needs."""

    kind = "activation"

    def __init__(self, activation: str | ActivationFn = "relu") -> None:
        super().__init__()
        self.fn = get_activation(activation)
        self.kind = self.fn.name
        self._forward_fn = self.fn.fast_fn or self.fn.fn
        self._takes_out = self._forward_fn is _relu_fast or isinstance(self._forward_fn, np.ufunc)
        self._x: Array | None = None
        self._y: Array | None = None

    def forward(self, x: Array, out: Array | None = None) -> Array:
        """φ(x), written into ``out`` when given (a network's stacked workspace)."""
        if out is not None and self._takes_out and x.dtype == out.dtype:
            y = self._forward_fn(x, out=out)  # the same arithmetic, written into the workspace
        else:
            y = self._forward_fn(x)
            if y.dtype != x.dtype:
                y = y.astype(x.dtype)
            if out is not None:
                np.copyto(out, y)
                y = out
        self._x, self._y = x, y
        return y

    def backward(self, grad_out: Array, out: Array | None = None) -> Array:
        """∂L/∂x = ∂L/∂y ⊙ φ′(x), written into ``out`` when given."""
        d = self.fn.deriv_from_output
        if d is not None:
            dy = d(self._y)  # φ′ read off y = φ(x)
            if out is not None:
                try:  # in place when the product has out's dtype anyway ("safe" refuses a downcast)
                    return np.multiply(grad_out, dy, out=out, casting="safe")
                except TypeError:
                    pass
            dx = grad_out * dy
        else:
            dx = (grad_out * self.fn.deriv(self._x)).astype(grad_out.dtype, copy=False)
        if out is None:
            return dx
        np.copyto(out, dx)
        return out
