"""Every statistic against a case computed by hand."""

import math

import numpy as np
import pytest

from gradlab.monitor.stats import (
    count_nonfinite,
    log2_hist,
    log2_hist_rows,
    moments,
    ratio,
    relu_stats,
    rule_stats,
    sq_norm,
)
from gradlab.nn.activations import get_activation
from gradlab.records import HIST_BINS, ZERO_BIN


def test_sq_norm_and_moments_by_hand():
    a = np.array([[1.0, -2.0], [3.0, 0.0]])
    assert sq_norm(a) == 14.0
    mean, std, ss = moments(a)
    assert mean == 0.5 and ss == 14.0
    assert std == pytest.approx(math.sqrt(14 / 4 - 0.25))
    assert std == pytest.approx(a.std())


def test_nonfinite_counts():
    a = np.array([[1.0, np.nan], [np.inf, -np.inf]])
    assert count_nonfinite(a, sq_norm(a)) == 3
    b = np.array([1e200, 1e200])  # Σ a² overflows, yet every entry is finite
    assert count_nonfinite(b, sq_norm(b)) == 0
    assert count_nonfinite(np.ones(3), 3.0) == 0


def test_saturated_tanh_layer():
    # 2 samples × 3 units; |y| > 0.99 at 3 of 6 entries; unit 0 saturated for both samples.
    y = np.array([[0.999, 0.5, -0.995], [-0.9999, 0.2, 0.1]])
    frac, every = rule_stats(y, None, get_activation("tanh").saturated)
    assert frac == 3 / 6
    np.testing.assert_array_equal(every, [True, False, False])


def test_half_dead_relu_layer():
    # 4 units: units 0 and 2 never fire; unit 1 fires once; unit 3 always.
    y = np.array([[0.0, 0.0, 0.0, 1.0], [0.0, 2.0, 0.0, 3.0], [0.0, 0.0, 0.0, 0.5]])
    frac, dead = relu_stats(y)
    assert frac == 8 / 12
    np.testing.assert_array_equal(dead, [True, False, True, False])
    # the generic rule agrees with the fast path
    g = rule_stats(y, None, get_activation("relu").inactive)
    assert g[0] == frac and np.array_equal(g[1], dead)


def test_rule_that_needs_the_input():
    gelu = get_activation("gelu")
    assert rule_stats(np.zeros((2, 2)), None, gelu.inactive) is None
    frac, dead = rule_stats(np.zeros((2, 2)), np.array([[-4.0, 1.0], [-5.0, -4.0]]), gelu.inactive)
    assert frac == 3 / 4 and list(dead) == [True, False]


def test_log2_hist_by_hand():
    a = np.array([0.0, 0.75, 1.0, 3.0, -3.5, np.nan, 1e-300])
    counts = log2_hist(a)
    bins = np.concatenate([[ZERO_BIN], HIST_BINS])
    got = {int(b): int(c) for b, c in zip(bins, counts, strict=True) if c}
    # 0.75 ∈ [2^-1, 2^0) → bin 0; 1.0 ∈ [2^0, 2^1) → bin 1; 3, 3.5 ∈ [2^1, 2^2) → bin 2;
    # 1e-300 is clipped into the lowest bin; NaN is not counted.
    assert got == {ZERO_BIN: 1, 0: 1, 1: 1, 2: 2, int(HIST_BINS[0]): 1}


def test_ratio():
    assert ratio(1.0, 4.0) == 0.25
    assert math.isnan(ratio(1.0, 0.0)) and math.isnan(ratio(1.0, math.inf))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log2_hist_from_exponent_bits_is_frexps(dtype):
    rng = np.random.default_rng(0)
    info = np.finfo(dtype)
    for scale in (1.0, 1e-30, 1e30, float(info.tiny)):
        a = (rng.standard_normal((16, 33)) * scale).astype(dtype)
        a[0, :8] = [0.0, -0.0, np.nan, np.inf, -np.inf, info.tiny / 4, 2.0**-61, 2.0**21]
        flat = a.reshape(-1)[np.isfinite(a.reshape(-1))]
        _, e = np.frexp(flat)
        e = np.clip(e, HIST_BINS[0], HIST_BINS[-1]) - (HIST_BINS[0] - 1)
        e[flat == 0] = 0
        want = np.bincount(e, minlength=len(HIST_BINS) + 1)
        assert np.array_equal(log2_hist(a), want)
        assert log2_hist(a[:, ::2]).sum() == np.isfinite(a[:, ::2]).sum()  # a strided view


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_histograms_equal_one_histogram_per_row(dtype):
    rng = np.random.default_rng(3)
    a = (rng.standard_normal((5, 300)) * 10.0 ** rng.integers(-30, 30, (5, 300))).astype(dtype)
    a[0, :7] = 0.0
    a[1, 3] = np.nan
    a[2, 4] = -np.inf
    a[3, 5] = np.finfo(dtype).tiny / 4  # subnormal
    a[4, :] = 0.0
    rows = log2_hist_rows(a)
    assert rows.dtype == np.int64
    for row, counts in zip(a, rows, strict=True):
        np.testing.assert_array_equal(counts, log2_hist(row))
    np.testing.assert_array_equal(log2_hist_rows(a[:, ::2]), [log2_hist(r) for r in a[:, ::2]])  # strided
