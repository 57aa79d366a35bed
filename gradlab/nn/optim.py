"""Optimizers (SGD, momentum, Nesterov, Adam, AdamW), weight decay, and gradient clipping.

``step(params, grads)`` updates ``params`` in place and returns the update it applied to each
parameter (what ``update_ratio`` is computed from). State is keyed by parameter name.
Weight decay applies to weight matrices only (names ending in ``.W``): decaying biases and
normalisation gains is a known mistake.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

from gradlab.nn.workspace import common_stack, row_sq_norms

Array = np.ndarray


def _positive(name: str, value: float, allow_zero: bool = False) -> float:
    ok = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}={value!r} must be a finite number {bound}")
    return float(value)


def _decays(name: str) -> bool:
    return name.endswith(".W") or name == "W"


HOT_SIZE = 1 << 15
"""Updates larger than this (entries) are measured one by one while in cache: batched, a wide net's
5 MB update stack would be read back from memory (measured: 0.4 ms a step on 20 layers of 256×256)."""


class Optimizer:
    """Base class: holds the learning rate, the weight decay and per-parameter state.

    The arrays returned by :meth:`step` are buffers reused at the next step: read them before it.
    With ``measure_updates`` set, each step also fills ``update_sq_norms`` (‖ΔW‖² per parameter).
    """

    def __init__(self, lr: float, weight_decay: float = 0.0, decoupled: bool = False) -> None:
        self.lr = _positive("lr", lr)
        self.weight_decay = _positive("weight_decay", weight_decay, allow_zero=True)
        self.decoupled = decoupled
        self.state: dict[str, dict[str, Array]] = {}
        self.t = 0
        self._buffers: dict[str, tuple[Array, Array]] = {}
        self.measure_updates = False
        self.update_sq_norms: dict[str, float] = {}
        self._layout: tuple[int, ...] = ()  # the parameter arrays the update buffers were laid out for
        self._stacks: list[tuple[Array, tuple[str, ...]]] = []  # update stacks and their parameters

    def _lay_out(self, params: Mapping[str, Array]) -> None:
        """Rows of one parameter stack (see :func:`gradlab.nn.workspace.stack_parameters`) get rows of
        one update stack, so ‖ΔW‖² of all of them is one batched call."""
        by_base: dict[int, list[str]] = {}
        for name, p in params.items():
            if p.base is not None:
                by_base.setdefault(id(p.base), []).append(name)
        self._stacks = []
        for names in by_base.values():
            small = params[names[0]].size <= HOT_SIZE
            if len(names) < 2 or not small or common_stack([params[n] for n in names]) is None:
                continue
            base = params[names[0]].base
            delta, tmp = np.empty_like(base), np.empty_like(base)
            for k, n in enumerate(names):
                self._buffers[n] = (delta[k], tmp[k])
            self._stacks.append((delta, tuple(names)))
        self._layout = tuple(map(id, params.values()))

    def _update(self, name: str, g: Array, out: Array) -> None:
        """Write the update ΔW for gradient ``g`` (before decoupled decay) into ``out``."""
        raise NotImplementedError

    def step(self, params: Mapping[str, Array], grads: Mapping[str, Array]) -> dict[str, Array]:
        """Update every parameter in place; return the applied update ΔW for each."""
        if params.keys() != grads.keys():
            raise ValueError(f"params and grads keys differ: {sorted(set(params) ^ set(grads))}")
        self.t += 1
        updates: dict[str, Array] = {}
        measure = self.measure_updates
        if measure and self._layout != tuple(map(id, params.values())):
            self._lay_out(params)
        in_stack = {n for _, names in self._stacks for n in names} if measure else ()
        for name, p in params.items():
            g = grads[name]
            bufs = self._buffers.get(name)
            if bufs is None or bufs[0].shape != p.shape or bufs[0].dtype != p.dtype:
                bufs = self._buffers[name] = (np.empty_like(p), np.empty_like(p))
            delta, tmp = bufs
            wd = self.weight_decay if _decays(name) else 0.0
            if wd and not self.decoupled:
                np.multiply(p, wd, out=tmp)
                tmp += g  # coupled L2: ∇(L + ½λ‖W‖²) = g + λW
                g = tmp
            self._update(name, g, delta)
            if wd and self.decoupled:
                np.multiply(p, self.lr * wd, out=tmp)
                delta -= tmp  # decoupled decay (Loshchilov & Hutter 2019): W ← W − lr·λ·W
            p += delta
            updates[name] = delta
            if measure and name not in in_stack:  # ‖ΔW‖² now, while delta is in cache (for update_ratio)
                self.update_sq_norms[name] = float(np.vdot(delta, delta))
        for delta, names in self._stacks if measure else ():
            sq = row_sq_norms(delta.reshape(len(names), -1)).tolist()
            self.update_sq_norms.update(zip(names, sq, strict=True))
        return updates


class SGD(Optimizer):
    """SGD with optional momentum (classical or Nesterov, torch's convention)."""

    def __init__(
        self,
        lr: float = 0.01,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        decoupled: bool = False,
    ) -> None:
        super().__init__(lr, weight_decay, decoupled)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum={momentum!r} must be in [0, 1)")
        if nesterov and momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0")
        self.momentum, self.nesterov = momentum, nesterov

    def _update(self, name: str, g: Array, out: Array) -> None:
        if self.momentum == 0:
            np.multiply(g, -self.lr, out=out)  # ΔW = −lr·g
            return
        st = self.state.setdefault(name, {})
        v = st.get("v")
        if v is None:
            v = st["v"] = g.copy()  # v₁ = g₁
        else:
            v *= self.momentum
            v += g  # v ← μv + g
        if self.nesterov:
            np.multiply(v, self.momentum, out=out)
            out += g
            out *= -self.lr  # ΔW = −lr·(g + μv)
        else:
            np.multiply(v, -self.lr, out=out)  # ΔW = −lr·v


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with bias correction; ``decoupled=True`` is AdamW."""

    def __init__(
        self,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled: bool = False,
    ) -> None:
        super().__init__(lr, weight_decay, decoupled)
        for i, b in enumerate(betas):
            if not 0.0 <= b < 1.0:
                raise ValueError(f"betas[{i}]={b!r} must be in [0, 1)")
        self.beta1, self.beta2 = betas
        self.eps = _positive("eps", eps)

    def _update(self, name: str, g: Array, out: Array) -> None:
        st = self.state.setdefault(name, {})
        if "m" not in st:
            st["m"], st["v"] = np.zeros_like(g), np.zeros_like(g)
        m, v = st["m"], st["v"]
        m *= self.beta1
        m += (1 - self.beta1) * g  # m ← β₁m + (1−β₁)g
        v *= self.beta2
        np.multiply(g, g, out=out)
        out *= 1 - self.beta2
        v += out  # v ← β₂v + (1−β₂)g²
        c1, c2 = 1 - self.beta1**self.t, 1 - self.beta2**self.t
        # m̂/(√v̂ + ε) with m̂ = m/c₁, v̂ = v/c₂
        np.sqrt(v, out=out)
        out *= 1 / math.sqrt(c2)
        out += self.eps
        np.divide(m, out, out=out)
        out *= -self.lr / c1  # ΔW = −lr·m̂/(√v̂ + ε)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019); default decay 0.01 as torch."""

    def __init__(
        self,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
    ) -> None:
        super().__init__(lr, betas, eps, weight_decay, decoupled=True)


OPTIMIZERS: dict[str, Callable[..., Optimizer]] = {
    "sgd": SGD,
    "momentum": lambda lr=0.01, momentum=0.9, **kw: SGD(lr, momentum=momentum, **kw),
    "nesterov": lambda lr=0.01, momentum=0.9, **kw: SGD(lr, momentum=momentum, nesterov=True, **kw),
    "adam": Adam,
    "adamw": AdamW,
}


def make_optimizer(name: str, **kwargs: float) -> Optimizer:
    """Build an optimizer by name; unknown names list the allowed ones."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer={name!r} is unknown; allowed: {', '.join(sorted(OPTIMIZERS))}")
    return OPTIMIZERS[name](**kwargs)


def global_norm(grads: Mapping[str, Array]) -> float:
    """‖g‖ over every gradient array together (the norm clip_grad_norm uses)."""
    total = 0.0
    for g in grads.values():
        flat = g.reshape(-1)
        total += float(np.dot(flat, flat))
    return math.sqrt(total)


def clip_grad_norm(grads: Mapping[str, Array], max_norm: float) -> tuple[float, bool]:
    """Scale all gradients in place so their global norm is at most ``max_norm``.

    Returns the pre-clip global norm and whether clipping fired. A non-finite norm is returned
    as is and the gradients are left alone (the divergence guard, not the clipper, handles it).
    """
    max_norm = _positive("clip_norm", max_norm)
    norm = global_norm(grads)
    if not math.isfinite(norm) or norm <= max_norm:
        return norm, False
    scale = max_norm / (norm + 1e-6)  # torch's clip_grad_norm_ epsilon
    for g in grads.values():
        g *= scale
    return norm, True


def clip_grad_value(grads: Mapping[str, Array], clip_value: float) -> tuple[float, bool]:
    """Clamp every gradient entry in place to [−clip_value, clip_value].

    Returns the pre-clip global norm and whether any entry was clamped.
    """
    clip_value = _positive("clip_value", clip_value)
    norm = global_norm(grads)
    fired = False
    for g in grads.values():
        if g.size and float(np.max(np.abs(g))) > clip_value:
            fired = True
            np.clip(g, -clip_value, clip_value, out=g)
    return norm, fired
