"""Public gradient checking: float64 central differences along random directions, and a layer check.

``check_grads`` compares an analytic gradient with ``(f(x+εd) − f(x−εd)) / 2ε`` along random unit
directions d (HIPS/autograd's random-projection form) and, for small arrays, along every coordinate.
``check_layer`` is the conformance check every gradlab layer passes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

Array = np.ndarray


class GradientCheckError(AssertionError):
    """An analytic gradient disagrees with finite differences."""


def check_grads(
    fun: Callable[[Array], float],
    x: Array,
    grad: Array,
    *,
    eps: float = 1e-6,
    rtol: float = 1e-6,
    directions: int = 6,
    exhaustive_below: int = 64,
    rng: np.random.Generator | None = None,
    name: str = "x",
) -> float:
    """Check ``grad`` = ∂fun/∂x by central differences; return the worst relative error.

    ``fun`` is called with perturbed float64 copies of ``x``. Raises :class:`GradientCheckError`
    naming ``name`` when the worst relative error exceeds ``rtol``.
    """
    x = np.asarray(x, dtype=np.float64)
    grad = np.asarray(grad, dtype=np.float64)
    if grad.shape != x.shape:
        raise GradientCheckError(f"{name}: gradient shape {grad.shape} != value shape {x.shape}")
    rng = np.random.default_rng(0) if rng is None else rng
    dirs: list[Array] = []
    for _ in range(directions):
        d = rng.standard_normal(x.shape)
        dirs.append(d / max(np.linalg.norm(d), 1e-300))
    if x.size <= exhaustive_below:
        for i in range(x.size):
            d = np.zeros(x.size)
            d[i] = 1.0
            dirs.append(d.reshape(x.shape))
    # Below the gradient's own scale, directional derivatives are noise; and a central difference
    # carries a rounding error of about ε_machine·|f|/eps, which no analytic gradient can beat.
    floor = max(1e-12, 1e-9 * float(np.linalg.norm(grad)))
    worst = 0.0
    for d in dirs:
        f_plus, f_minus = fun(x + eps * d), fun(x - eps * d)
        numeric = (f_plus - f_minus) / (2 * eps)
        analytic = float(np.sum(grad * d))
        rounding = 10 * np.finfo(np.float64).eps * max(abs(f_plus), abs(f_minus)) / eps
        err = max(0.0, abs(numeric - analytic) - rounding) / max(abs(numeric), abs(analytic), floor)
        worst = max(worst, err)
        if err > rtol:
            raise GradientCheckError(
                f"{name}: directional derivative {analytic:.10g} (analytic) vs {numeric:.10g} "
                f"(finite differences), relative error {err:.2e} > {rtol:.0e}"
            )
    return worst


def _generators(obj: Any) -> Iterator[np.random.Generator]:
    for v in vars(obj).values():
        if isinstance(v, np.random.Generator):
            yield v
    for _, sub in getattr(obj, "body", ()):
        yield from _generators(sub)


class _FrozenRandomness:
    """Restores every generator a layer holds to its state at creation (same dropout mask each call)."""

    def __init__(self, layer: Any) -> None:
        self.gens = list(_generators(layer))
        self.states = [g.bit_generator.state for g in self.gens]

    def reset(self) -> None:
        for g, s in zip(self.gens, self.states, strict=True):
            g.bit_generator.state = s


def check_layer(
    layer: Any,
    x: Array,
    *,
    rtol: float = 1e-6,
    modes: tuple[bool, ...] = (True, False),
    rng: np.random.Generator | None = None,
) -> dict[str, float]:
    """Conformance check of a float64 layer on input ``x``; returns the worst error per checked array.

    Checks, in each training mode of ``modes``: gradients of input and every parameter by finite
    differences; ``grads`` has the keys and shapes of ``params``; neither the input nor the upstream
    gradient is mutated; in eval mode, forward is deterministic.
    """
    rng = np.random.default_rng(1) if rng is None else rng
    x = np.asarray(x, dtype=np.float64)
    if set(layer.params) != set(layer.grads):
        raise GradientCheckError(f"params keys {sorted(layer.params)} != grads keys {sorted(layer.grads)}")
    for k, p in layer.params.items():
        if layer.grads[k].shape != p.shape:
            raise GradientCheckError(f"grads[{k!r}] shape {layer.grads[k].shape} != params shape {p.shape}")
    frozen = _FrozenRandomness(layer)
    report: dict[str, float] = {}
    for training in modes:
        layer.train(training)
        tag = "train" if training else "eval"
        frozen.reset()
        y = layer.forward(x.copy())
        u = rng.standard_normal(y.shape)

        x_before, u_before = x.copy(), u.copy()
        frozen.reset()
        xin = x.copy()
        layer.forward(xin)
        grad_x = layer.backward(u)
        if not np.array_equal(xin, x_before):
            raise GradientCheckError(f"{tag}: forward/backward mutated its input")
        if not np.array_equal(u, u_before):
            raise GradientCheckError(f"{tag}: backward mutated the upstream gradient")
        grads = {k: g.copy() for k, g in layer.grads.items()}

        def loss_x(z: Array, u: Array = u) -> float:
            frozen.reset()
            return float(np.sum(layer.forward(z) * u))

        report[f"{tag}:x"] = check_grads(loss_x, x, grad_x, rtol=rtol, rng=rng, name=f"{tag}: input")
        for k, p in layer.params.items():
            original = p.copy()

            def loss_p(z: Array, p: Array = p, u: Array = u) -> float:
                p[...] = z
                frozen.reset()
                return float(np.sum(layer.forward(x.copy()) * u))

            try:
                report[f"{tag}:{k}"] = check_grads(
                    loss_p, original, grads[k], rtol=rtol, rng=rng, name=f"{tag}: param {k!r}"
                )
            finally:
                p[...] = original
        if not training:
            frozen.reset()
            y1 = layer.forward(x.copy())
            y2 = layer.forward(x.copy())
            if not np.array_equal(y1, y2):
                raise GradientCheckError("eval: forward is not deterministic")
    layer.train(True)
    return report


def check_loss(
    loss: Callable[[Array, Array], tuple[float, Array]], pred: Array, target: Array, rtol: float = 1e-6
) -> float:
    """Check a ``(value, grad)`` loss's gradient with respect to its prediction."""
    pred = np.asarray(pred, dtype=np.float64)
    _, grad = loss(pred.copy(), target)
    return check_grads(lambda z: loss(z, target)[0], pred, grad, rtol=rtol, name="prediction")
