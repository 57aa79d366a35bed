"""Weight initializers, by name, with torch.nn.init's gain and fan conventions.

Every initializer has the signature ``init(shape, rng, **kwargs) -> float64 array`` for a
``(fan_in, fan_out)`` weight matrix, draws only from the injected ``rng``, and is deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

Array = np.ndarray

GAINS: dict[str, float] = {
    "identity": 1.0,
    "sigmoid": 1.0,
    "tanh": 5.0 / 3.0,
    "relu": math.sqrt(2.0),
    "leaky_relu": math.sqrt(2.0 / (1.0 + 0.01**2)),
    "selu": 0.75,
    "elu": 1.0,
    "gelu": 1.0,
    "softplus": 1.0,
}
"""torch.nn.init.calculate_gain values (torch uses 1 for activations it has no rule for)."""


def calculate_gain(activation: str) -> float:
    """The recommended gain for an activation, as torch.nn.init.calculate_gain."""
    if activation not in GAINS:
        raise ValueError(f"activation={activation!r} has no gain; allowed: {', '.join(sorted(GAINS))}")
    return GAINS[activation]


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) != 2 or min(shape) <= 0:
        raise ValueError(f"shape={shape!r} must be (fan_in, fan_out) with positive sizes")
    return shape[0], shape[1]


def _fan(shape: tuple[int, ...], mode: str) -> int:
    fan_in, fan_out = _fans(shape)
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode={mode!r} is unknown; allowed: fan_in, fan_out")
    return fan_in if mode == "fan_in" else fan_out


def normal(shape: tuple[int, int], rng: np.random.Generator, std: float = 0.01) -> Array:
    """W ~ N(0, std²)."""
    _fans(shape)
    return rng.normal(0.0, std, size=shape)


def uniform(shape: tuple[int, int], rng: np.random.Generator, a: float = 0.05) -> Array:
    """W ~ U[−a, a]."""
    _fans(shape)
    return rng.uniform(-a, a, size=shape)


def standard(shape: tuple[int, int], rng: np.random.Generator, gain: float = 1.0) -> Array:
    """Glorot & Bengio's (2010, eq. 1) "standard" heuristic W ~ U[−1/√n, 1/√n], n = fan_in."""
    fan_in, _ = _fans(shape)
    a = gain / math.sqrt(fan_in)
    return rng.uniform(-a, a, size=shape)


def glorot_uniform(shape: tuple[int, int], rng: np.random.Generator, gain: float = 1.0) -> Array:
    """Glorot & Bengio (2010, eq. 16): U[−a, a], a = gain·√(6/(fan_in+fan_out))."""
    fan_in, fan_out = _fans(shape)
    a = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-a, a, size=shape)


def glorot_normal(shape: tuple[int, int], rng: np.random.Generator, gain: float = 1.0) -> Array:
    """N(0, σ²), σ = gain·√(2/(fan_in+fan_out))."""
    fan_in, fan_out = _fans(shape)
    return rng.normal(0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), size=shape)


def he_uniform(
    shape: tuple[int, int], rng: np.random.Generator, gain: float = math.sqrt(2.0), mode: str = "fan_in"
) -> Array:
    """He et al. (2015, eq. 10) uniform: U[−a, a], a = gain·√(3/fan); gain √2 for ReLU."""
    a = gain * math.sqrt(3.0 / _fan(shape, mode))
    return rng.uniform(-a, a, size=shape)


def he_normal(
    shape: tuple[int, int], rng: np.random.Generator, gain: float = math.sqrt(2.0), mode: str = "fan_in"
) -> Array:
    """He et al. (2015, eq. 10): N(0, σ²), σ = gain/√fan; gain √2 for ReLU."""
    return rng.normal(0.0, gain / math.sqrt(_fan(shape, mode)), size=shape)


def lecun_uniform(shape: tuple[int, int], rng: np.random.Generator, gain: float = 1.0) -> Array:
    """LeCun et al. (1998): U[−a, a], a = gain·√(3/fan_in)."""
    fan_in, _ = _fans(shape)
    a = gain * math.sqrt(3.0 / fan_in)
    return rng.uniform(-a, a, size=shape)


def lecun_normal(shape: tuple[int, int], rng: np.random.Generator, gain: float = 1.0) -> Array:
    """LeCun et al. (1998): N(0, σ²), σ = gain/√fan_in (the SELU init)."""
    fan_in, _ = _fans(shape)
    return rng.normal(0.0, gain / math.sqrt(fan_in), size=shape)


def orthogonal(shape: tuple[int, int], rng: np.random.Generator, gain: float = 1.0) -> Array:
    """Saxe et al. (2014): a (semi-)orthogonal matrix times gain, as torch.nn.init.orthogonal_."""
    rows, cols = _fans(shape)
    a = rng.normal(0.0, 1.0, size=(max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q *= np.sign(np.diag(r))  # makes the distribution uniform (Haar)
    if rows < cols:
        q = q.T
    return gain * q


def zeros(shape: tuple[int, int], rng: np.random.Generator | None = None) -> Array:
    """All zeros (a classic mistake: every unit stays identical)."""
    _fans(shape)
    return np.zeros(shape)


@dataclass(frozen=True)
class Init:
    """A registered initializer: its ``draw`` and ``std(fan_in, fan_out)``, a weight's std at the defaults."""

    draw: Callable[..., Array]
    std: Callable[[int, int], float]

    def __call__(self, shape: tuple[int, int], rng: np.random.Generator, **kwargs: Any) -> Array:
        """Draw a weight matrix, as the wrapped initializer does."""
        return self.draw(shape, rng, **kwargs)


def _glorot_std(fan_in: int, fan_out: int) -> float:
    return math.sqrt(2.0 / (fan_in + fan_out))


def _he_std(fan_in: int, fan_out: int) -> float:
    return math.sqrt(2.0 / fan_in)


def _lecun_std(fan_in: int, fan_out: int) -> float:
    return 1.0 / math.sqrt(fan_in)


_SQRT3 = math.sqrt(3.0)  # U[−a, a] has std a/√3

INITS: dict[str, Init] = {
    "normal": Init(normal, lambda fan_in, fan_out: 0.01),
    "uniform": Init(uniform, lambda fan_in, fan_out: 0.05 / _SQRT3),
    "standard": Init(standard, lambda fan_in, fan_out: 1.0 / (_SQRT3 * math.sqrt(fan_in))),
    "glorot_uniform": Init(glorot_uniform, _glorot_std),
    "glorot_normal": Init(glorot_normal, _glorot_std),
    "xavier_uniform": Init(glorot_uniform, _glorot_std),
    "xavier_normal": Init(glorot_normal, _glorot_std),
    "he_uniform": Init(he_uniform, _he_std),
    "he_normal": Init(he_normal, _he_std),
    "kaiming_uniform": Init(he_uniform, _he_std),
    "kaiming_normal": Init(he_normal, _he_std),
    "lecun_uniform": Init(lecun_uniform, _lecun_std),
    "lecun_normal": Init(lecun_normal, _lecun_std),
    "orthogonal": Init(orthogonal, lambda fan_in, fan_out: 1.0 / math.sqrt(max(fan_in, fan_out))),
    "zeros": Init(zeros, lambda fan_in, fan_out: 0.0),
}
"""Every initializer by name; an entry is called like its ``draw`` and knows the std it draws with."""


def get_init(name: str) -> Init:
    """Resolve an initializer by name; unknown names list the allowed ones."""
    if not isinstance(name, str) or name not in INITS:
        raise ValueError(f"init={name!r} is unknown; allowed: {', '.join(sorted(INITS))}")
    return INITS[name]


def init_weights(name: str, shape: tuple[int, int], rng: np.random.Generator, **kwargs: float) -> Array:
    """Draw a ``(fan_in, fan_out)`` weight matrix with the named initializer."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return get_init(name).draw(tuple(shape), rng, **kwargs)


def weight_std(name: str, fan_in: int, fan_out: int, gain: float = 1.0) -> float:
    """The standard deviation of one weight as ``mlp`` draws it under a named init, times ``gain``.

    Used by :mod:`gradlab.theory.meanfield`: σ_w² = fan_in · Var(W).
    """
    # mlp draws "normal" as N(0, σ_w²/fan_in) (the mean-field σ_w convention), not at normal()'s default std.
    std = 1.0 / math.sqrt(fan_in) if name == "normal" else get_init(name).std(fan_in, fan_out)
    return gain * std
