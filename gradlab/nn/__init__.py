"""The NumPy network: layers, activations, initialisers, losses, optimizers, the Network and its hook
contract. Knows nothing of frames, runs or files."""

from __future__ import annotations

from gradlab.nn.activations import ACTIVATIONS, Activation, ActivationFn, get_activation
from gradlab.nn.hooks import Handle, Monitor, Schedule, StepInfo
from gradlab.nn.init import INITS, calculate_gain, init_weights
from gradlab.nn.layers import BatchNorm, Dense, Dropout, Layer, LayerNorm, Residual
from gradlab.nn.losses import binary_cross_entropy_with_logits, mse, softmax_cross_entropy
from gradlab.nn.network import Network, mlp
from gradlab.nn.optim import SGD, Adam, AdamW, clip_grad_norm, clip_grad_value, make_optimizer

__all__ = [
    "ACTIVATIONS",
    "INITS",
    "SGD",
    "Activation",
    "ActivationFn",
    "Adam",
    "AdamW",
    "BatchNorm",
    "Dense",
    "Dropout",
    "Handle",
    "Layer",
    "LayerNorm",
    "Monitor",
    "Network",
    "Residual",
    "Schedule",
    "StepInfo",
    "binary_cross_entropy_with_logits",
    "calculate_gain",
    "clip_grad_norm",
    "clip_grad_value",
    "get_activation",
    "init_weights",
    "make_optimizer",
    "mlp",
    "mse",
    "softmax_cross_entropy",
]
