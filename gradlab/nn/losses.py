"""Losses: each returns ``(value, grad)`` with ``grad`` = ∂value/∂prediction, averaged over the batch."""

from __future__ import annotations

import numpy as np

Array = np.ndarray


def _check_pred(pred: Array) -> None:
    if not isinstance(pred, np.ndarray) or pred.ndim != 2 or pred.shape[0] == 0:
        shape = getattr(pred, "shape", None)
        raise ValueError(f"prediction must be a non-empty (batch, outputs) array, got shape {shape}")


def _check_labels(labels: Array, n: int, c: int) -> None:
    if labels.shape[0] != n:
        raise ValueError(f"labels has {labels.shape[0]} entries, predictions have batch {n}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"integer labels expected, got dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= c):
        raise ValueError(f"labels must lie in [0, {c - 1}], got range [{labels.min()}, {labels.max()}]")


def log_softmax(logits: Array) -> Array:
    """Row-wise log-softmax, stable by the log-sum-exp shift."""
    z = logits - logits.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def softmax_cross_entropy(logits: Array, labels: Array) -> tuple[float, Array]:
    """Mean cross-entropy of softmax(logits) against integer labels or one-hot rows."""
    _check_pred(logits)
    n = logits.shape[0]
    logp = log_softmax(logits)
    labels = np.asarray(labels)
    if labels.ndim == 1:
        _check_labels(labels, n, logits.shape[1])
        rows = np.arange(n)
        value = float(-logp[rows, labels].sum() / n)
        grad = np.exp(logp)
        grad[rows, labels] -= 1.0
    else:
        if labels.shape != logits.shape:
            raise ValueError(f"one-hot labels have shape {labels.shape}, predictions {logits.shape}")
        target = labels.astype(logits.dtype, copy=False)
        value = float(-(target * logp).sum() / n)
        grad = np.exp(logp) - target
    grad /= logits.dtype.type(n)  # ∂/∂z = (softmax(z) − y)/N
    return value, grad


def mse(pred: Array, target: Array) -> tuple[float, Array]:
    """Mean squared error over every element."""
    _check_pred(pred)
    target = np.asarray(target, dtype=pred.dtype)
    if target.shape != pred.shape:
        raise ValueError(f"target has shape {target.shape}, prediction {pred.shape}")
    diff = pred - target
    return float(np.mean(diff * diff)), diff * pred.dtype.type(2.0 / diff.size)  # ∂/∂p = 2(p − t)/size


def binary_cross_entropy_with_logits(logits: Array, target: Array) -> tuple[float, Array]:
    """Mean binary cross-entropy of sigmoid(logits) against targets in [0, 1], over every element."""
    _check_pred(logits)
    target = np.asarray(target, dtype=logits.dtype)
    if target.shape != logits.shape:
        raise ValueError(f"target has shape {target.shape}, logits {logits.shape}")
    if target.size and (target.min() < 0 or target.max() > 1):
        raise ValueError("binary targets must lie in [0, 1]")
    # ℓ = max(z, 0) − z·t + log(1 + e^{−|z|})
    loss = np.maximum(logits, 0) - logits * target + np.log1p(np.exp(-np.abs(logits)))
    e = np.exp(-np.abs(logits))
    sig = np.where(logits >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return float(loss.mean()), ((sig - target) / logits.size).astype(logits.dtype)  # ∂/∂z = (σ(z) − t)/size


def accuracy(pred: Array, target: Array) -> float:
    """Fraction of rows whose argmax matches the integer label (or the one-hot row's argmax)."""
    target = np.asarray(target)
    labels = target.argmax(axis=1) if target.ndim == 2 else target
    return float(np.mean(pred.argmax(axis=1) == labels))
