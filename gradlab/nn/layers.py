"""Layers: forward/backward plus ``params``/``grads`` dicts with the same keys, and a ``training`` flag.

Shapes are row-major: a batch ``x`` has shape ``(batch, features)`` and ``Dense`` computes ``x @ W + b``.
Layers hold no optimizer and do no I/O; the only randomness (Dropout) comes from an injected
``np.random.Generator``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Array = np.ndarray


class Layer:
    """The layer contract: ``forward(x) -> y``, ``backward(grad_out) -> grad_in``, params/grads dicts."""

    kind = "layer"

    def __init__(self) -> None:
        self.params: dict[str, Array] = {}
        self.grads: dict[str, Array] = {}
        self.training = True

    def forward(self, x: Array) -> Array:
        raise NotImplementedError

    def backward(self, grad_out: Array) -> Array:
        raise NotImplementedError

    def train(self, mode: bool = True) -> Layer:
        """Switch between training (True) and evaluation (False) behaviour."""
        self.training = mode
        return self

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}={v.shape}" for k, v in self.params.items())
        return f"{type(self).__name__}({shapes})"


def _check_2d(x: Array, features: int, who: str) -> None:
    if x.ndim != 2 or x.shape[1] != features:
        raise ValueError(f"{who}: input shape {x.shape} does not match (batch, {features})")


class Dense(Layer):
    """Affine map ``y = x @ W + b`` with ``W`` of shape ``(fan_in, fan_out)``."""

    kind = "dense"

    def __init__(self, W: Array, b: Array | None = None) -> None:
        super().__init__()
        if W.ndim != 2:
            raise ValueError(f"Dense: W must be 2-D (fan_in, fan_out), got shape {W.shape}")
        if b is None:
            b = np.zeros(W.shape[1], dtype=W.dtype)
        if b.shape != (W.shape[1],):
            raise ValueError(f"Dense: b has shape {b.shape}, expected ({W.shape[1]},)")
        self.params = {"W": W, "b": b.astype(W.dtype, copy=False)}
        self.grads = {"W": np.zeros_like(W), "b": np.zeros_like(self.params["b"])}
        self._x: Array | None = None
        self._ones: Array | None = None

    @property
    def fan_in(self) -> int:
        return self.params["W"].shape[0]

    @property
    def fan_out(self) -> int:
        return self.params["W"].shape[1]

    def forward(self, x: Array, out: Array | None = None) -> Array:
        """``x @ W + b``, written into ``out`` when given (a network's stacked workspace)."""
        _check_2d(x, self.fan_in, "Dense")
        self._x = x
        y = np.matmul(x, self.params["W"], out=out)
        y += self.params["b"]
        return y

    def backward(self, grad_out: Array, out: Array | None = None) -> Array:
        """Fill ∂L/∂W and ∂L/∂b; return ∂L/∂x (written into ``out`` when given)."""
        np.matmul(self._x.T, grad_out, out=self.grads["W"])  # dW = xᵀ g
        n = grad_out.shape[0]
        if self._ones is None or self._ones.shape[0] != n or self._ones.dtype != grad_out.dtype:
            self._ones = np.ones(n, grad_out.dtype)
        np.matmul(self._ones, grad_out, out=self.grads["b"])  # db = 1ᵀ g (a BLAS gemv: 3× np.sum here)
        return np.matmul(grad_out, self.params["W"].T, out=out)  # dx = g Wᵀ


class BatchNorm(Layer):
    """Batch normalisation over the batch axis; running averages (torch's momentum) for eval."""

    kind = "batchnorm"

    def __init__(self, features: int, eps: float = 1e-5, momentum: float = 0.1, dtype=np.float64) -> None:
        super().__init__()
        if features <= 0:
            raise ValueError(f"BatchNorm: features={features} must be positive")
        self.eps, self.momentum = eps, momentum
        self.params = {"gamma": np.ones(features, dtype), "beta": np.zeros(features, dtype)}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.running_mean = np.zeros(features, dtype)
        self.running_var = np.ones(features, dtype)
        self._xhat: Array | None = None
        self._inv_std: Array | None = None

    def forward(self, x: Array) -> Array:
        _check_2d(x, self.params["gamma"].shape[0], "BatchNorm")
        if self.training:
            n = x.shape[0]
            if n < 2:
                raise ValueError(f"BatchNorm: training needs batch size >= 2, got {n}")
            mean = x.mean(axis=0)
            var = x.var(axis=0)
            m = self.momentum
            self.running_mean *= 1 - m
            self.running_mean += m * mean
            self.running_var *= 1 - m
            self.running_var += m * var * (n / (n - 1))  # unbiased, as torch
        else:
            mean, var = self.running_mean, self.running_var
        self._inv_std = 1.0 / np.sqrt(var + self.eps)
        self._xhat = (x - mean) * self._inv_std
        return self._xhat * self.params["gamma"] + self.params["beta"]

    def backward(self, grad_out: Array) -> Array:
        xhat, g = self._xhat, grad_out
        np.sum(g * xhat, axis=0, out=self.grads["gamma"])  # dγ = Σ g ⊙ x̂
        np.sum(g, axis=0, out=self.grads["beta"])  # dβ = Σ g
        scale = self.params["gamma"] * self._inv_std
        if not self.training:
            return g * scale  # statistics are constants in eval
        n = g.shape[0]
        # dx = γ/σ · (g − mean(g) − x̂ · mean(g ⊙ x̂))
        return scale * (g - self.grads["beta"] / n - xhat * (self.grads["gamma"] / n))


class LayerNorm(Layer):
    """Layer normalisation over the feature axis, with learnable γ and β."""

    kind = "layernorm"

    def __init__(self, features: int, eps: float = 1e-5, dtype=np.float64) -> None:
        super().__init__()
        if features <= 0:
            raise ValueError(f"LayerNorm: features={features} must be positive")
        self.eps = eps
        self.params = {"gamma": np.ones(features, dtype), "beta": np.zeros(features, dtype)}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        self._xhat: Array | None = None
        self._inv_std: Array | None = None

    def forward(self, x: Array) -> Array:
        _check_2d(x, self.params["gamma"].shape[0], "LayerNorm")
        mean = x.mean(axis=1, keepdims=True)
        var = x.var(axis=1, keepdims=True)
        self._inv_std = 1.0 / np.sqrt(var + self.eps)
        self._xhat = (x - mean) * self._inv_std
        return self._xhat * self.params["gamma"] + self.params["beta"]

    def backward(self, grad_out: Array) -> Array:
        xhat, g = self._xhat, grad_out
        np.sum(g * xhat, axis=0, out=self.grads["gamma"])  # dγ = Σ_batch g ⊙ x̂
        np.sum(g, axis=0, out=self.grads["beta"])  # dβ = Σ_batch g
        gh = g * self.params["gamma"]
        # dx = (1/σ) · (ĝ − mean_f(ĝ) − x̂ · mean_f(ĝ ⊙ x̂)),  ĝ = g ⊙ γ
        return self._inv_std * (
            gh - gh.mean(axis=1, keepdims=True) - xhat * (gh * xhat).mean(axis=1, keepdims=True)
        )


class Dropout(Layer):
    """Inverted dropout: zero each unit with probability ``p`` and scale by 1/(1−p); identity in eval."""

    kind = "dropout"

    def __init__(self, p: float, rng: np.random.Generator) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p={p!r} must be in [0, 1)")
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"Dropout: rng must be a numpy.random.Generator, got {type(rng).__name__}")
        self.p, self.rng = p, rng
        self._mask: Array | None = None

    def forward(self, x: Array) -> Array:
        if not self.training or self.p == 0.0:
            self._mask = None
            return x.copy()
        keep = self.rng.random(x.shape) >= self.p
        self._mask = keep.astype(x.dtype) / x.dtype.type(1.0 - self.p)
        return x * self._mask

    def backward(self, grad_out: Array) -> Array:
        if self._mask is None:
            return grad_out.copy()  # dx = g
        return grad_out * self._mask  # dx = g ⊙ mask / (1 − p)


class Residual(Layer):
    """Residual block ``y = x + f(x)`` where ``f`` is a sequence of named layers (``body``).

    :meth:`merge` and :meth:`merge_grad` are the block's only arithmetic. A ``Network`` runs the body
    itself (so its hooks see every body layer) and then calls the same two methods.
    """

    kind = "residual"

    def __init__(self, body: Sequence[tuple[str, Layer]] | Sequence[Layer]) -> None:
        super().__init__()
        entries = [e if isinstance(e, tuple) else (f"{e.kind}_{i}", e) for i, e in enumerate(body)]
        if not entries:
            raise ValueError("Residual: body must hold at least one layer")
        self.body: list[tuple[str, Layer]] = entries
        # Views onto the body's own arrays (layers update grads in place), keyed "name.param".
        self.params = {f"{n}.{k}": v for n, layer in entries for k, v in layer.params.items()}
        self.grads = {f"{n}.{k}": v for n, layer in entries for k, v in layer.grads.items()}

    def train(self, mode: bool = True) -> Layer:
        self.training = mode
        for _, layer in self.body:
            layer.train(mode)
        return self

    def merge(self, x: Array, h: Array) -> Array:
        """The block's output from its input ``x`` and its body's output ``h = f(x)``: ``y = x + h``."""
        if h.shape != x.shape:
            raise ValueError(f"Residual: body maps {x.shape} to {h.shape}; shapes must match")
        return x + h

    def merge_grad(self, grad_out: Array, grad_body: Array) -> Array:
        """∂L/∂x from ∂L/∂y = g and the body's backward of it, ``grad_body = J_fᵀ g``."""
        return grad_out + grad_body  # dx = g + J_fᵀ g

    def forward(self, x: Array) -> Array:
        h = x
        for _, layer in self.body:
            h = layer.forward(h)
        return self.merge(x, h)

    def backward(self, grad_out: Array) -> Array:
        g = grad_out
        for _, layer in reversed(self.body):
            g = layer.backward(g)
        return self.merge_grad(grad_out, g)
