"""Pure per-array statistics: norms, moments, saturation and dead units, non-finite counts, histograms."""

from __future__ import annotations

import math

import numpy as np

from gradlab.records import HIST_BINS, HIST_LOG2_MAX, HIST_LOG2_MIN

Array = np.ndarray


def sq_norm(a: Array) -> float:
    """Σ a² over every entry (the squared Frobenius norm), as a Python float."""
    flat = a.reshape(-1)
    return float(np.dot(flat, flat))


def norm(a: Array) -> float:
    """‖a‖_F; NaN when ``a`` holds NaN, inf when the sum of squares overflows."""
    return math.sqrt(sq_norm(a))


def moments(a: Array) -> tuple[float, float]:
    """(mean, standard deviation) over every entry, from one sum and one sum of squares."""
    n = a.size
    if n == 0:
        return math.nan, math.nan
    flat = a.reshape(-1)
    s = float(flat.sum(dtype=np.float64))
    ss = float(np.dot(flat, flat))
    mean = s / n
    return mean, math.sqrt(max(ss / n - mean * mean, 0.0))


def count_nonfinite(*arrays: Array | None) -> int:
    """How many NaN or ±Inf entries the arrays hold together."""
    total = 0
    for a in arrays:
        if a is None:
            continue
        # A finite sum proves every entry finite; count only when it is not.
        if math.isfinite(float(a.sum(dtype=np.float64))):
            continue
        total += int(a.size - np.count_nonzero(np.isfinite(a)))
    return total


def fraction(mask: Array) -> float:
    """Fraction of True entries."""
    return np.count_nonzero(mask) / mask.size if mask.size else math.nan


def dead_units(inactive: Array) -> Array:
    """Per unit (last axis): True where the unit is inactive for every sample of the batch."""
    return inactive.all(axis=0) if inactive.ndim > 1 else inactive


def ratio(num: float, den: float) -> float:
    """num / den, NaN when the denominator is zero or not finite."""
    return num / den if den and math.isfinite(den) else math.nan


def log2_hist(a: Array) -> Array:
    """Counts of |a| by binary order of magnitude: index 0 = exact zeros, then ``HIST_BINS``.

    Bin e holds entries with 2^(e−1) ≤ |v| < 2^e (``numpy.frexp``'s exponent); non-finite entries
    are left out.
    """
    flat = a.reshape(-1)
    finite = flat[np.isfinite(flat)] if not math.isfinite(float(flat.sum(dtype=np.float64))) else flat
    _, e = np.frexp(finite)
    zero = finite == 0
    e = np.clip(e, HIST_LOG2_MIN, HIST_LOG2_MAX) - HIST_LOG2_MIN + 1
    e[zero] = 0
    return np.bincount(e.astype(np.intp, copy=False), minlength=len(HIST_BINS) + 1)
