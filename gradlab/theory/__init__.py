"""Mean-field theory: what random networks at initialisation should do, and how measured runs compare.

``meanfield`` holds the length and correlation maps, fixed points, χ₁, depth scales, the order-to-chaos
line and the Glorot/He variance rules; ``batchnorm`` the batch-norm gradient explosion rate;
``quadrature`` the deterministic Gaussian integration both use; ``runs`` (pandas, loaded on first use)
puts predictions beside measured runs.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from gradlab.theory.batchnorm import BNGradientRates, bn_gradient_rate, bn_rates
from gradlab.theory.meanfield import (
    Q_HUGE,
    Q_TINY,
    c_star,
    chi_1,
    chi_c,
    compare_profile,
    correlation_map,
    critical_sigma_w2,
    depth_scales,
    gaussian_expectation,
    gradient_factors,
    layer_sigma_w2,
    length_map,
    phase_diagram,
    predicted_profile,
    q_star,
    q_trajectory,
    sigma_params,
    variance_factors,
)

_LAZY = {"expected_vs_measured": "gradlab.theory.runs", "phase_points": "gradlab.theory.runs"}


def __getattr__(name: str) -> Any:
    """Load the pandas-based comparison with measured runs on first use."""
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'gradlab.theory' has no attribute {name!r}")


__all__ = [
    "Q_HUGE",
    "Q_TINY",
    "BNGradientRates",
    "bn_gradient_rate",
    "bn_rates",
    "c_star",
    "chi_1",
    "chi_c",
    "compare_profile",
    "correlation_map",
    "critical_sigma_w2",
    "depth_scales",
    "expected_vs_measured",
    "gaussian_expectation",
    "gradient_factors",
    "layer_sigma_w2",
    "length_map",
    "phase_diagram",
    "phase_points",
    "predicted_profile",
    "q_star",
    "q_trajectory",
    "sigma_params",
    "variance_factors",
]
