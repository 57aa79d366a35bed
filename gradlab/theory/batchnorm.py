"""Batch-norm mean-field theory: the per-layer gradient explosion rate at initialisation.

Setting (Yang, Pennington, Rao, Sohl-Dickstein & Schoenholz 2019, "A Mean Field Theory of Batch
Normalization", ICLR, §2–3): hidden layers Dense → BatchNorm → φ on a batch of ``B`` samples, wide
layers, the gradient independence assumption. For one unit, let ``h ∈ R^B`` be its pre-activations over
the batch, ``G = I − 11ᵀ/B`` and ``x̂ = √B·Gh/‖Gh‖`` (BN without ε, γ = 1, β = 0).

Derivation (ours; it reproduces the paper's closed forms). At the batch-symmetric fixed point (BSB1,
Yang et al. §3.1) ``G Σ* G = a·G``, so ``u = Gh/‖Gh‖`` is uniform on the unit sphere of ``1⊥`` and
independent of ``‖Gh‖² ~ a·χ²_{B−1}``; ``E[1/χ²_{B−1}] = 1/(B−3)``. The BN Jacobian is
``J = √B/‖Gh‖·(G − uuᵀ)``. Back-propagating through the next Dense layer (σ_w²) and φ′ maps the batch
Gram matrix ``P = Σ_units δδᵀ`` of ∂L/∂h to ``T(P) = σ_w² E[Jᵀ D P D J]``, ``D = diag φ′(x̂)``. ``T``
commutes with batch permutations and ``J1 = 0``, so it maps any permutation-invariant P (such as I, an
upstream gradient uncorrelated across the batch) to a multiple of ``G``, and ``T(G) = λ_G·G`` with

    λ_G = B/(B−3) · E[tr((G−uuᵀ) D G D (G−uuᵀ))] / E[‖Gφ(x̂)‖²]      (σ_w² cancels: a = σ_w² E‖Gφ‖²/(B−1)).

**λ_G is the ratio of squared norms** ``‖∂L/∂h_l‖²/‖∂L/∂h_{l+1}‖²`` between consecutive BN layers (the
norm grows by √λ_G per layer); this is Yang et al.'s gradient explosion rate, the G-direction being the
one the backward dynamics converge to. Every trace reduces to moments of one coordinate pair
``(x̂_1, x̂_2)`` of the uniform direction — a 2-D integral with density ∝ (1 − s₁² − s₂²)^((B−5)/2) on the
unit disc — computed here by Gauss–Legendre quadrature, no Monte Carlo. Checks: φ = identity gives
exactly (B−2)/(B−3) (Yang et al., linear case); ReLU tends to π/(π−1) ≈ 1.467 as B → ∞; for any φ the
B → ∞ limit is E[φ′(z)²]/Var[φ(z)], z ~ N(0, 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gradlab.nn.activations import ActivationFn, get_activation
from gradlab.theory.quadrature import angle_rule, gauss_rule, graded_legendre

Array = np.ndarray

_SPHERE_TAIL = 50.0
"""The polar angle β is cut where cos^(B−4) β < e^(−50)."""


def _sphere_pair(batch_size: int) -> tuple[Array, Array, Array]:
    """Coordinates (x̂₁, x̂₂) of √B·u, u uniform on the unit sphere of 1⊥ ⊂ R^B, and quadrature weights."""
    m = batch_size - 4  # density in polar angle β: sin β · cos^m β, s = sin β (cos θ, sin θ)
    beta_max = math.pi / 2 if m <= 0 else min(math.pi / 2, math.sqrt(2 * _SPHERE_TAIL / m))
    beta, wb = graded_legendre(0.0, beta_max, (0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 0.8, 1.0))
    wb = wb * np.sin(beta) * np.cos(beta) ** m
    g = -1.0 / (batch_size - 1)  # correlation of x̂₁ and x̂₂: ⟨Ge₁, Ge₂⟩/‖Ge₁‖²
    theta, wt = angle_rule(g)
    r = math.sqrt(batch_size - 1) * np.sin(beta)[:, None]
    x1 = r * np.cos(theta)
    x2 = r * (g * np.cos(theta) + math.sqrt(1 - g * g) * np.sin(theta))
    w = wb[:, None] * wt
    return x1, x2, w / w.sum()


@dataclass(frozen=True)
class BNGradientRates:
    """Squared-norm gradient factors of a batch-normalised layer at the BSB1 fixed point.

    Attributes:
        rate: λ_G, ``‖∂L/∂h_l‖²/‖∂L/∂h_{l+1}‖²`` between consecutive Dense→BN→φ layers of equal σ_w².
        top: the same ratio for the last hidden layer when the gradient arriving from the output layer is
            uncorrelated across the batch (Gram matrix ∝ I rather than ∝ G).
        act_var: V = E‖Gφ(x̂)‖²/(B−1), so the next layer's centred pre-activation variance is a = σ_w²·V.
    """

    rate: float
    top: float
    act_var: float


def bn_rates(activation: str | ActivationFn, batch_size: float) -> BNGradientRates:
    """λ_G and companions for batch size ``B`` ≥ 4 (``math.inf`` for the large-batch limit)."""
    act = get_activation(activation)
    if batch_size == math.inf:
        z, w = gauss_rule()
        m2 = float(w @ act.deriv(z) ** 2)
        var = float(w @ act.fn(z) ** 2 - (w @ act.fn(z)) ** 2)
        return BNGradientRates(m2 / var, m2 / var, var)
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 4:
        raise ValueError(f"batch_size={batch_size!r} must be an integer >= 4 (λ_G is infinite for B <= 3)")
    b = int(batch_size)
    x1, x2, w = _sphere_pair(b)
    d1, d2, f1, f2 = act.deriv(x1), act.deriv(x2), act.fn(x1), act.fn(x2)
    m2, p = np.sum(w * d1 * d1), np.sum(w * d1 * d2)  # E[φ′₁²], E[φ′₁φ′₂]
    e3, r = np.sum(w * (d1 * x1) ** 2), np.sum(w * d1 * x1 * d2 * x2)  # E[φ′₁²x̂₁²], E[φ′₁x̂₁φ′₂x̂₂]
    var = float(np.sum(w * f1 * f1) - np.sum(w * f1 * f2))  # E‖Gφ‖²/(B−1)
    # E tr(P D G D P), P = G − uuᵀ, expanded with u_i = x̂_i/√B and G_ij = δ_ij − 1/B:
    num = (b - 2) * m2 + (m2 + (b - 1) * p) / b - e3 * (b - 1) / b + (b - 1) * r / b
    rate = b * num / ((b - 3) * (b - 1) * var)
    top = ((b - 1) * m2 - e3) / ((b - 3) * var)  # E tr(P D² P) = (B−1)E[φ′²] − E[φ′²x̂²]
    return BNGradientRates(float(rate), float(top), var)


def bn_gradient_rate(activation: str | ActivationFn, batch_size: float) -> float:
    """Yang et al. (2019)'s λ_G: per-layer growth of the *squared* gradient norm in a BN network."""
    return bn_rates(activation, batch_size).rate


__all__ = ["BNGradientRates", "bn_gradient_rate", "bn_rates"]
