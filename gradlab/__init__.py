"""gradlab: find where gradients vanish or explode in deep networks, why, and which fix works."""

from gradlab.activations import ACTIVATIONS, Activation, get_activation
from gradlab.hooks import Monitor, StepInfo
from gradlab.init import INITS, calculate_gain, init_weights
from gradlab.layers import BatchNorm, Dense, Dropout, Layer, LayerNorm, Residual
from gradlab.losses import binary_cross_entropy_with_logits, mse, softmax_cross_entropy
from gradlab.network import Network, mlp
from gradlab.optim import SGD, Adam, AdamW, clip_grad_norm, clip_grad_value, make_optimizer

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "INITS",
    "SGD",
    "Activation",
    "Adam",
    "AdamW",
    "BatchNorm",
    "Dense",
    "Dropout",
    "Layer",
    "LayerNorm",
    "Monitor",
    "Network",
    "Residual",
    "StepInfo",
    "__version__",
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
