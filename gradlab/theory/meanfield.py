"""Mean-field predictions for random MLPs at initialisation: fixed points, χ₁, depth scales, the
order-to-chaos line and phase diagram, Glorot/He variance rules and the per-layer gradient profile to overlay
on measurements (:func:`gradlab.theory.runs.expected_vs_measured` does it for recorded runs).

Conventions. Dense layer l computes ``h_l = φ(h_{l−1}) W_l + b_l`` (``h_0 = x W_0 + b_0``) with
``W ~ (0, σ_w²/fan_in)`` and ``b ~ N(0, σ_b²)``; ``q_l`` is the variance of one unit of ``h_l`` and
``z ~ N(0, 1)``. Gaussian expectations use the deterministic rules of :mod:`gradlab.theory.quadrature`.

References (equations quoted where used):
  Poole, Lahiri, Raghu, Sohl-Dickstein & Ganguli (2016), "Exponential expressivity in deep neural
    networks through transient chaos", NeurIPS — length map, correlation map, χ₁ (§2–3).
  Schoenholz, Gilmer, Ganguli & Sohl-Dickstein (2017), "Deep Information Propagation", ICLR —
    depth scales ξ_q, ξ_c (§3), gradient backpropagation (§5).
  Glorot & Bengio (2010), "Understanding the difficulty of training deep feedforward neural networks",
    AISTATS — eqs. 10–16.
  He, Zhang, Ren & Sun (2015), "Delving Deep into Rectifiers", ICCV — eqs. 7–10 (forward), 13–14 (backward).
  Yang et al. (2019), "A Mean Field Theory of Batch Normalization", ICLR — see
    :mod:`gradlab.theory.batchnorm`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from gradlab.nn.activations import ActivationFn, get_activation
from gradlab.nn.init import weight_std
from gradlab.theory.batchnorm import bn_rates
from gradlab.theory.quadrature import gauss_rule, polar_gauss_rule

if TYPE_CHECKING:
    import pandas as pd

Array = np.ndarray
Act = str | ActivationFn

Q_TINY = 1e-200
"""Stand-in for q → 0⁺ in limits such as χ₁ at q* = 0 (φ′ of ReLU at exactly 0 would be 0, not ½)."""
Q_HUGE = 1e12
"""Above this q the length map counts as divergent (q* = inf); χ₁ is then its large-q limit."""


def _act(activation: Act) -> ActivationFn:
    return get_activation(activation)


def gaussian_expectation(f: Callable[[Array], Array], q: float | Array = 1.0) -> float | Array:
    """E[f(√q·z)], z ~ N(0, 1); vectorised over an array of ``q``."""
    z, w = gauss_rule()
    qa = np.asarray(q, dtype=float)
    out = f(np.sqrt(qa)[..., None] * z) @ w
    return float(out) if out.ndim == 0 else out


def length_map(q: float | Array, sigma_w2: float, sigma_b2: float, activation: Act) -> float | Array:
    """The length map q ↦ σ_w² E[φ(√q z)²] + σ_b² (Poole et al. 2016 §2; Schoenholz et al. 2017 §2)."""
    fn = _act(activation).fn
    return sigma_w2 * gaussian_expectation(lambda x: fn(x) ** 2, q) + sigma_b2


def q_star(sigma_w2: float, sigma_b2: float, activation: Act, q0: float = 1.0) -> float:
    """The fixed point of the length map that iteration from ``q0`` reaches (0, finite, or inf).

    Found by bracketing the zero of r(q) = map(q)/q − 1 on a log grid and bisecting in log q, which stays
    exact near criticality where plain iteration needs ~1/|χ₁ − 1| steps. A neutral map (ReLU with
    σ_w² = 2, σ_b² = 0; identity with σ_w² = 1) fixes every q and returns ``q0``.
    """

    def r(q: Array) -> Array:
        return np.asarray(length_map(q, sigma_w2, sigma_b2, activation)) / q - 1.0

    q0 = max(float(q0), Q_TINY)
    r0 = float(r(np.array(q0)))
    if abs(r0) < 1e-12:
        return q0
    up = r0 > 0  # a monotone map moves q towards the nearest fixed point in this direction
    grid = np.geomspace(q0, Q_HUGE if up else Q_TINY, 64)
    rg = r(grid)
    hits = np.flatnonzero(rg <= 0) if up else np.flatnonzero(rg >= 0)
    if hits.size == 0:
        return math.inf if up else 0.0
    lo, hi = math.log(grid[hits[0] - 1]), math.log(grid[hits[0]])
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if (float(r(np.array(math.exp(mid)))) > 0) == up:
            lo = mid
        else:
            hi = mid
        if abs(hi - lo) < 1e-15:
            break
    return math.exp(0.5 * (lo + hi))


def q_trajectory(
    q_in: float | Array, depth: int, sigma_w2: float | Sequence[float], sigma_b2: float, activation: Act
) -> Array:
    """q_l of the hidden pre-activations h_0 … h_{depth−1}: q_0 = σ_w0²·q_in + σ_b², then the length map.

    ``q_in = ‖x‖²/d`` of the input (1 for standard Gaussian inputs), a float or an array of them (the
    result then has shape ``(depth, *q_in.shape)``); ``sigma_w2`` per Dense layer or one for all.
    """
    sw = _per_layer(sigma_w2, depth)
    fn = _act(activation).fn
    q = np.empty((depth, *np.shape(q_in)))
    for layer in range(depth):
        if layer == 0:
            q[0] = sw[0] * np.asarray(q_in, dtype=float) + sigma_b2
        else:
            q[layer] = sw[layer] * gaussian_expectation(lambda x: fn(x) ** 2, q[layer - 1]) + sigma_b2
    return q


def chi_1(sigma_w2: float, sigma_b2: float, activation: Act, q: float | None = None) -> float:
    """χ₁ = σ_w² E[φ′(√q z)²] at q* unless ``q`` is given: the c-map slope at c = 1 (Poole et al. 2016 §3)."""
    q = q_star(sigma_w2, sigma_b2, activation) if q is None else q
    d = _act(activation).deriv
    return sigma_w2 * gaussian_expectation(lambda x: d(x) ** 2, min(max(q, Q_TINY), Q_HUGE))


def correlation_map(c: float, q: float, sigma_w2: float, sigma_b2: float, activation: Act) -> float:
    """c ↦ (σ_w² E[φ(u₁)φ(u₂)] + σ_b²)/q, u₁ = √q z₁, u₂ = √q(c z₁ + √(1−c²) z₂) (Poole et al. §3)."""
    fn = _act(activation).fn
    z1, z2, w = polar_gauss_rule(c)
    s, rq = math.sqrt(max(0.0, 1.0 - c * c)), math.sqrt(q)
    return float(sigma_w2 * np.sum(w * fn(rq * z1) * fn(rq * (c * z1 + s * z2))) + sigma_b2) / q


def chi_c(c: float, q: float, sigma_w2: float, activation: Act) -> float:
    """Slope of the correlation map at c: σ_w² E[φ′(u₁)φ′(u₂)] (Schoenholz et al. §3; χ₁ at c = 1)."""
    d = _act(activation).deriv
    q = min(max(q, Q_TINY), Q_HUGE)
    if c >= 1.0:
        return sigma_w2 * gaussian_expectation(lambda x: d(x) ** 2, q)
    z1, z2, w = polar_gauss_rule(c)
    s, rq = math.sqrt(1.0 - c * c), math.sqrt(q)
    return float(sigma_w2 * np.sum(w * d(rq * z1) * d(rq * (c * z1 + s * z2))))


def c_star(sigma_w2: float, sigma_b2: float, activation: Act) -> float:
    """The stable fixed point of the correlation map: 1 in the ordered phase (χ₁ ≤ 1), else in [0, 1).

    In the chaotic phase c = 1 is unstable; the map's Hermite (Mehler) coefficients are ≥ 0, so it is
    convex on [0, 1] with c-map(0) ≥ 0 and the other fixed point is the unique root of c-map(c) − c there.
    """
    q = q_star(sigma_w2, sigma_b2, activation)
    q = min(max(q, Q_TINY), Q_HUGE)
    if chi_1(sigma_w2, sigma_b2, activation, q) <= 1.0:
        return 1.0

    def f(c: float) -> float:
        return correlation_map(c, q, sigma_w2, sigma_b2, activation) - c

    if f(0.0) <= 1e-14:
        return 0.0
    hi = next((1.0 - 2.0**-k for k in range(1, 50) if f(1.0 - 2.0**-k) < 0), None)
    if hi is None:
        return 1.0  # numerically critical
    lo = 0.0
    while hi - lo > 1e-13:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if f(mid) > 0 else (lo, mid)
    return 0.5 * (lo + hi)


def _depth(slope: float) -> float:
    return math.inf if slope >= 1.0 else (0.0 if slope <= 0.0 else -1.0 / math.log(slope))


def depth_scales(sigma_w2: float, sigma_b2: float, activation: Act) -> tuple[float, float]:
    """(ξ_q, ξ_c) of Schoenholz et al. (2017) §3: ξ_q⁻¹ = −ln[χ₁ + σ_w² ∫Dz φ″φ], ξ_c⁻¹ = −ln χ_c(c*).

    The ξ_q slope equals d(length map)/dq = σ_w² E[z φ(√q* z) φ′(√q* z)]/√q* (Gaussian integration by
    parts), which needs no φ″. ξ_c = inf on the critical line; ξ_q = nan when q* diverges.
    """
    act = _act(activation)
    q = q_star(sigma_w2, sigma_b2, act)
    if q == math.inf:
        xi_q = math.nan
    else:
        rq = math.sqrt(max(q, Q_TINY))
        z, w = gauss_rule()
        xi_q = _depth(sigma_w2 * float(w @ (z * act.fn(rq * z) * act.deriv(rq * z))) / rq)
    c = c_star(sigma_w2, sigma_b2, act)
    return xi_q, _depth(chi_c(c, q, sigma_w2, act))


def critical_sigma_w2(sigma_b2: float, activation: Act, tol: float = 1e-12) -> float:
    """The order-to-chaos boundary: σ_w² with χ₁(σ_w², σ_b²) = 1 at q*, by bisection (tanh, σ_b² = 0: 1)."""

    def g(sw2: float) -> float:
        return chi_1(sw2, sigma_b2, activation) - 1.0

    lo, hi = 1e-3, 2.0
    if g(lo) >= 0:
        raise ValueError(f"χ₁ ≥ 1 already at σ_w² = {lo}: no order-to-chaos transition for σ_b² = {sigma_b2}")
    while g(hi) < 0:
        lo, hi = hi, 2 * hi
        if hi > 1e4:
            raise ValueError(f"χ₁ < 1 up to σ_w² = 1e4: no order-to-chaos transition for σ_b² = {sigma_b2}")
    while hi - lo > tol * hi:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if g(mid) < 0 else (lo, mid)
    return 0.5 * (lo + hi)


def phase_diagram(
    activation: Act,
    sw2_range: tuple[float, float] = (0.25, 4.0),
    sb2_range: tuple[float, float] = (0.0, 0.5),
    n: int | tuple[int, int] = 32,
    log_sw2: bool = False,
) -> tuple[Array, Array, Array, Array]:
    """The σ_w² × σ_b² order-to-chaos diagram: ``(sw2_grid, sb2_grid, chi1, critical_sw2)``.

    ``chi1[i, j]`` is χ₁ at (σ_b² = ``sb2_grid[i]``, σ_w² = ``sw2_grid[j]``) and ``critical_sw2[i]`` the
    σ_w² where χ₁ = 1 at ``sb2_grid[i]`` (nan where there is no transition) — Poole et al. (2016)
    Fig. 2, Schoenholz et al. (2017) Fig. 1. ``n`` points per axis, or ``(n_sw2, n_sb2)``;
    ``log_sw2`` spaces σ_w² geometrically. Cost: ~1 ms per grid point and ~30 ms per σ_b² row.
    """
    n_w, n_b = (n, n) if isinstance(n, int) else n
    lo, hi = float(sw2_range[0]), float(sw2_range[1])
    sw2 = np.geomspace(lo, hi, n_w) if log_sw2 else np.linspace(lo, hi, n_w)
    sb2 = np.linspace(float(sb2_range[0]), float(sb2_range[1]), n_b)
    act = _act(activation)
    chi = np.array([[chi_1(a, b, act) for a in sw2] for b in sb2])
    crit = np.full(n_b, math.nan)
    for i, b in enumerate(sb2):
        with contextlib.suppress(ValueError):  # no transition at this σ_b²: stays nan
            crit[i] = critical_sigma_w2(b, act, tol=1e-9)
    return sw2, sb2, chi, crit


def gradient_factors(q: float | Array, sigma_w2: float | Array, activation: Act) -> float | Array:
    """σ_w² E[φ′(√q z)²] = ‖∂L/∂h_l‖²/‖∂L/∂h_{l+1}‖² for h_l of variance q, σ_w² of layer l+1 (squared norms).

    Schoenholz et al. (2017) §5: per unit, q̃_l = q̃_{l+1}·(N_{l+1}/N_l)·σ_w² E[φ′²]; summing over the N_l
    units gives the width-free ratio of total squared norms.
    """
    d = _act(activation).deriv
    q = np.maximum(np.asarray(q, dtype=float), Q_TINY)
    out = np.asarray(sigma_w2) * gaussian_expectation(lambda x: d(x) ** 2, q)
    return float(out) if np.ndim(out) == 0 else out


def variance_factors(
    init: str, fan_in: int, fan_out: int, activation: Act = "relu", gain: float = 1.0, q: float = 1.0
) -> tuple[float, float]:
    """(forward, backward) per-unit variance factors of one layer under Glorot & Bengio / He et al.

    forward  = fan_in·Var(W)·E[φ(√q z)²]/q : Var[h_{l+1}]/Var[h_l] at Var[h_l] = q (He eqs. 7–9);
    backward = fan_out·Var(W)·E[φ′(√q z)²] : Var[∂L/∂h_l]/Var[∂L/∂h_{l+1}] per unit (He eq. 13).
    Setting them to 1 gives He eq. 10 (½·n_l·Var(W) = 1, ReLU) and eq. 14 (½·n̂_l·Var(W) = 1); for tanh in
    Glorot's linear regime (q → 0) they are n_in·Var(W) and n_out·Var(W) (Glorot eqs. 10–11), whose
    compromise Var(W) = 2/(n_in + n_out) is eq. 12 / the normalised init eq. 16. Positively homogeneous φ
    (ReLU, leaky ReLU, identity) make both independent of q. For whole-vector norms multiply the
    backward factor by fan_in/fan_out.
    """
    act = _act(activation)
    var_w = weight_std(init, fan_in, fan_out, gain) ** 2
    q = max(q, Q_TINY)
    forward = fan_in * var_w * gaussian_expectation(lambda x: act.fn(x) ** 2, q) / q
    backward = fan_out * var_w * gaussian_expectation(lambda x: act.deriv(x) ** 2, q)
    return float(forward), float(backward)


def sigma_params(
    init: str, weight_scale: float = 1.0, bias_scale: float = 0.0, width: int = 256,
    fan_in: int | None = None, fan_out: int | None = None,
) -> tuple[float, float]:
    """(σ_w², σ_b²) of one gradlab Dense layer (hidden: fan_in = fan_out = width), as ``mlp`` builds it.

    ``mlp`` scales every init by ``weight_scale`` (for ``init="normal"`` it is σ_w itself) and uses no
    activation-dependent gain, so the activation does not enter. σ_w² = fan_in·weight_std² (init.py).
    """
    fan_in = width if fan_in is None else fan_in
    fan_out = width if fan_out is None else fan_out
    try:
        return fan_in * weight_std(init, fan_in, fan_out, weight_scale) ** 2, float(bias_scale) ** 2
    except OverflowError:
        raise ValueError(
            f"weight_scale={float(weight_scale):g} or bias_scale={float(bias_scale):g} is too large for "
            "the mean-field theory: σ_w² or σ_b² overflows float64"
        ) from None


def layer_sigma_w2(
    init: str, weight_scale: float, in_dim: int, width: int, depth: int, out_dim: int
) -> Array:
    """σ_w² of every Dense layer of ``mlp(in_dim, out_dim, depth, width, …)``, input to output (depth + 1)."""
    fans = [(in_dim if i == 0 else width, width) for i in range(depth)]
    fans.append((width if depth else in_dim, out_dim))
    return np.array([sigma_params(init, weight_scale, 0.0, fan_in=a, fan_out=b)[0] for a, b in fans])


def _per_layer(sigma_w2: float | Sequence[float], n: int) -> Array:
    sw = np.asarray(sigma_w2, dtype=float)
    if sw.ndim == 0:
        return np.full(n, float(sw))
    if sw.shape[0] < n:
        raise ValueError(f"sigma_w2 has {sw.shape[0]} entries; need one per Dense layer ({n})")
    return sw


def predicted_profile(
    activation: Act,
    depth: int,
    sigma_w2: float | Sequence[float],
    sigma_b2: float = 0.0,
    q_in: float | Sequence[float] = 1.0,
    batch_norm: bool = False,
    batch_size: float | None = None,
    squared: bool = False,
) -> Array:
    """Predicted ‖∂L/∂h_l‖/‖∂L/∂h_L‖ for the depth + 1 Dense outputs h_0 … h_L of an ``mlp`` at init.

    h_L is the network output, so the last entry is 1. Without batch norm the squared ratio is the
    product of :func:`gradient_factors` along the actual q trajectory (not only at q*); a sequence
    ``q_in`` (one ‖x‖²/d per sample) averages the per-sample squared profiles, as the Frobenius norm
    over a batch sums them. With ``batch_norm`` (Dense → BN → φ) it uses :func:`bn_rates` for
    ``batch_size`` and assumes centred inputs uncorrelated across the batch and an upstream gradient
    uncorrelated across the batch; σ_b² then drops out. ``squared=True`` returns squared-norm ratios.
    """
    sw = _per_layer(sigma_w2, depth + 1)
    qs = np.atleast_1d(np.asarray(q_in, dtype=float))
    if batch_norm:
        if batch_size is None:
            raise ValueError("batch_norm=True needs batch_size")
        bn = bn_rates(activation, batch_size)
        a = np.concatenate([[sw[0] * qs.mean()], sw[1:depth] * bn.act_var])  # centred pre-BN variance
        rate = np.full(depth, bn.rate)
        if depth:
            rate[-1] = bn.top
        fac = sw[1:] * rate * bn.act_var / a
        sq = np.append(np.cumprod(fac[::-1])[::-1], 1.0)
    elif depth:
        q = q_trajectory(qs, depth, sw, sigma_b2, activation)  # (depth, samples)
        fac = gradient_factors(q, sw[1 : depth + 1, None], activation)
        per_sample = np.vstack([np.cumprod(fac[::-1], axis=0)[::-1], np.ones((1, qs.size))])
        sq = per_sample.mean(axis=1)
    else:
        sq = np.ones(1)
    return sq if squared else np.sqrt(sq)


def compare_profile(
    measured: Sequence[float] | Mapping[str, float] | pd.DataFrame, predicted: Sequence[float], *,
    layers: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Tidy frame ``layer_index, predicted, measured``, both as ‖∂L/∂h_l‖/‖∂L/∂h_L‖ (output layer = 1).

    ``measured``: the step-0 ``grad_out_norm`` of the weighted layers — a sequence in forward order; a
    mapping name → value of weighted layers in the caller's order (forward order and weighted kinds come
    from ``layers``, one run's layers table, when given; names that are all gradlab's own are ordered by
    :func:`gradlab.records.infer_layers`); or a metrics frame of one run (``run, step, layer, metric,
    value``) with its ``layers`` table (None: :func:`gradlab.records.layers_for` infers it).
    ``predicted``: from :func:`predicted_profile` (not squared).
    """
    import pandas as pd

    from gradlab.records import WEIGHTED_KINDS, infer_layers, layers_for

    if isinstance(measured, pd.DataFrame):
        rows = measured[(measured["step"] == 0) & (measured["metric"] == "grad_out_norm")]
        if rows["run"].nunique() > 1:
            raise ValueError("measured holds several runs; pass one run's rows")
        table = layers_for(measured, layers)
        measured = dict(zip(rows["layer"].astype(str), rows["value"].astype(float), strict=True))
    elif isinstance(measured, Mapping):
        measured = {str(k): v for k, v in measured.items()}
        if layers is None:  # the mapping's names are weighted layers unless their names say otherwise
            table = infer_layers(pd.DataFrame({"run": "", "layer": list(measured), "metric": "grad_norm"}))
        else:
            table = layers[layers["layer"].astype(str).isin(measured)]
            if table["run"].nunique() > 1:
                raise ValueError("layers holds these names for several runs; pass one run's layers table")
    if isinstance(measured, Mapping):
        keep = table["kind"].astype(str).isin(WEIGHTED_KINDS) & table["layer"].astype(str).isin(measured)
        names = table[keep].sort_values("position", kind="stable")["layer"].astype(str)
        measured = [measured[n] for n in names]
    m, p = np.asarray(measured, dtype=float), np.asarray(predicted, dtype=float)
    if m.shape != p.shape:
        raise ValueError(f"{m.size} measured weighted layers but {p.size} predicted")
    return pd.DataFrame({"layer_index": np.arange(m.size), "predicted": p / p[-1], "measured": m / m[-1]})


__all__ = [
    "Q_HUGE", "Q_TINY", "c_star", "chi_1", "chi_c",
    "compare_profile", "correlation_map", "critical_sigma_w2", "depth_scales",
    "gaussian_expectation", "gradient_factors", "layer_sigma_w2", "length_map", "phase_diagram",
    "predicted_profile", "q_star", "q_trajectory", "sigma_params", "variance_factors",
]
