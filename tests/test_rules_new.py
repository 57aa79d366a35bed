"""Issue 12's seven new rules at their thresholds' edges and on real runs, its four defects, and the
two of issue 13 that belong to diagnosis (steps of any magnitude or sign; JSON without NaN/Infinity)."""

from __future__ import annotations

import pandas as pd
import pytest
from corpus import CASES, diagnose_case
from helpers import layers_table, one, series, tidy

import gradlab
from gradlab.diagnosis import diagnose, run_verdicts


def kinds(f: pd.DataFrame, run: str = "r") -> set[str]:
    return set(f.loc[f["run"] == run, "kind"])


# -- loss not decreasing -------------------------------------------------------------------------------


def test_loss_plateau_at_its_threshold_edges():
    # the last window's median fell by 0.95 % / 1.05 % of the first window's: a fall of 1 % is needed
    rows = series("flat", "", "loss", [1.0] * 20 + [0.9905] * 10)
    rows += series("falls", "", "loss", [1.0] * 20 + [0.9895] * 10)
    f = diagnose(tidy(rows))
    p = one(f, "loss_plateau", "flat")
    assert p["step"] == 0 and p["value"] == pytest.approx(0.0095) and (p["op"], p["threshold"]) == ("<", 0.01)
    assert p["metric"] == "loss" and p["severity"] == "warning" and "flat since step 0" in p["message"]
    assert kinds(f, "falls") == {"healthy"}


def test_loss_plateau_needs_two_windows_and_dates_a_relapse():
    short = series("short", "", "loss", [1.0] * 19)  # first and last windows would overlap
    back = series("back", "", "loss", [1.0] * 10 + [0.5] * 10 + [1.0] * 15)
    f = diagnose(tidy(short + back))
    assert kinds(f, "short") == {"healthy"} and "loss_plateau" not in one(f, "healthy", "short")["message"]
    # the first window showing no progress ends at step 25 (6 of its 10 values back at 1.0): it began at 16
    assert one(f, "loss_plateau", "back")["step"] == 16


def test_loss_plateau_on_real_runs():
    noise = next(c for c in CASES if c.name == "loss_plateau_noise_labels")
    f, verdicts = diagnose_case(noise)
    assert verdicts == {"loss_plateau"} and "check the data and labels" in one(f, "loss_plateau",
                                                                               noise.name)["fix"]


# -- oscillating loss ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("spike", "at", "fires"), [
    (1.26, (12, 15, 18), True),  # 3 of the 10 steps 9–18 rise > 0.25 × the start above the median before
    (1.24, (12, 15, 18), False),  # rises just short of 0.25
    (1.26, (12, 18), False),  # 2 of 10 steps: not more than a quarter
])
def test_oscillating_loss_at_its_threshold_edges(spike, at, fires):
    loss = [spike if s in at else 1.0 for s in range(30)] + [0.5] * 10  # then it falls: no plateau
    f = diagnose(tidy(series("r", "", "loss", loss)))
    if not fires:
        assert kinds(f) == {"healthy"}
        return
    o = one(f, "oscillating_loss")
    assert (o["rule"], o["step"], o["value"], o["op"], o["threshold"]) == ("loss_spikes", 12, 0.3, ">", 0.25)


def test_oscillating_loss_on_a_real_run():
    res = gradlab.run(gradlab.Config(depth=4, width=32, n_samples=512, batch_size=64, steps=150,
                                     activation="relu", init="he_normal", lr=0.8), run_id="hot")
    o = one(diagnose(res.metrics, layers=res.layers), "oscillating_loss", "hot")
    assert o["value"] > 0.25 and "lower the learning rate" in o["fix"]


# -- poor initialisation -------------------------------------------------------------------------------


def _init_frame(stds: list[float]) -> tuple[pd.DataFrame, pd.DataFrame]:
    names = [f"w{i}" for i in range(len(stds))]
    rows = [("r", 0, n, "act_std", s) for n, s in zip(names, stds, strict=True)]
    return tidy(rows), layers_table("r", [(n, "dense") for n in names])


@pytest.mark.parametrize(("gain", "fires"), [(1.47, True), (1.46, False)])
def test_poor_init_at_its_threshold_edge(gain, fires):
    # hidden layers w1..w4 with std g^k: the variance spans g^6, 10.05 at g = 1.47 and 9.7 at 1.46
    frame, layers = _init_frame([1000.0] + [gain**k for k in range(4)] + [1e-3])  # w0, w5 left out
    f = diagnose(frame, layers=layers)
    if not fires:
        assert kinds(f) == {"healthy"}
        return
    p = one(f, "poor_init")
    assert (p["step"], p["rule"], p["op"], p["threshold"]) == (0, "init_spread", ">", 10)
    assert p["value"] == pytest.approx(gain**6) and p["layers"] == "w1, w4"
    assert "×1.5 per layer" in p["message"]


def test_poor_init_needs_a_trend_across_depth():
    frame, layers = _init_frame([1.0, 1.0, 4.0, 4.0, 1.0, 1.0])  # spread 16, but no trend: gain 1
    assert kinds(diagnose(frame, layers=layers)) == {"healthy"}


def test_poor_init_on_a_real_run():
    res = gradlab.run(gradlab.Config(depth=12, width=32, n_samples=256, batch_size=64, steps=0,
                                     activation="relu", init="normal", weight_scale=2.0), run_id="big")
    p = one(diagnose(res.metrics, layers=res.layers), "poor_init", "big")
    assert p["value"] > 100 and p["step"] == 0


# -- frozen layers -------------------------------------------------------------------------------------


def test_frozen_gradient_is_exactly_zero_and_nothing_less():
    rows = series("r", "d0", "grad_norm", [0.0] * 5) + series("r", "d1", "grad_norm", [1e-30] * 5)
    rows += series("r", "d0", "update_ratio", [0.0] * 5) + series("r", "d1", "update_ratio", [1e-3] * 5)
    f = diagnose(tidy(rows), layers=layers_table("r", [("d0", "dense"), ("d1", "dense")]))
    fr = one(f, "frozen")
    assert (fr["rule"], fr["layers"], fr["op"]) == ("frozen_grad", "d0", "≤")
    assert fr["value"] == fr["threshold"] == 0
    assert kinds(f) == {"frozen"}  # d0's zero update is the frozen finding's, not also a stall


def test_frozen_update_needs_a_gradient():
    rows = series("r", "d0", "grad_norm", [0.1] * 5) + series("r", "d0", "update_ratio", [0.0] * 5)
    rows += series("r", "d1", "grad_norm", [0.1] * 5) + series("r", "d1", "update_ratio", [1e-30] * 5)
    f = diagnose(tidy(rows), layers=layers_table("r", [("d0", "dense"), ("d1", "dense")]))
    fr = one(f, "frozen")
    assert (fr["rule"], fr["layer"]) == ("frozen_update", "d0") and "‖∂L/∂W‖ ≈ 0.1" in fr["message"]
    assert one(f, "update_ratio")["layers"] == "d1"  # tiny but not zero: a stall


def test_frozen_on_a_real_run():
    res = gradlab.run(gradlab.Config(depth=3, width=16, n_samples=128, batch_size=32, steps=20,
                                     dtype="float32", lr=1e-300), run_id="f32")
    runs = pd.DataFrame([{"run": "f32", **res.config.to_dict(), "status": res.status}])
    fr = one(diagnose(res.metrics, runs, layers=res.layers), "frozen", "f32")
    assert fr["rule"] == "frozen_update" and len(fr["layers"].split(", ")) == 4


# -- clipping ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fired", "n", "fires"), [(6, 10, True), (5, 10, False), (10, 30, False)])
def test_clipping_on_most_steps_at_its_edge(fired, n, fires):
    # most of the run's steps, not of a window: clipping the first steps' large gradients is its job
    rows = series("r", "", "clipped", [1.0] * fired + [0.0] * (n - fired))
    rows += series("r", "", "grad_norm_total", [2.0] * n) + series("r", "", "grad_norm_clipped", [0.5] * n)
    f = diagnose(tidy(rows), pd.DataFrame({"run": ["r"], "lr": [0.1], "clip_norm": [0.5]}))
    if not fires:
        assert kinds(f) == {"healthy"}
        return
    c = one(f, "clipping")
    assert (c["value"], c["op"], c["threshold"], c["metric"]) == (0.6, ">", 0.5, "clipped")
    assert "median ‖g‖ 2 against a clip threshold of 0.5" in c["message"]
    assert "clip_norm=4" in c["fix"] and "lr=0.1 → ~0.03, ÷4" in c["fix"]  # 2 × ‖g‖; lr × clip / ‖g‖


def test_clipping_on_a_real_run():
    res = gradlab.run(gradlab.Config(depth=3, width=16, n_samples=128, batch_size=32, steps=20,
                                     clip_norm=1e-3), run_id="clip")
    assert one(diagnose(res.metrics, layers=res.layers), "clipping", "clip")["value"] == 1.0


# -- units dying ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("later", "fires"), [(0.625, True), (0.62, False)])
def test_dying_units_at_its_threshold_edge(later, fires):
    # a quarter dead at first; (0.625 − 0.25) / 0.75 = half of the alive units died, 0.62 a bit less
    rows = series("r", "relu_1", "dead_frac", [0.25] * 3 + [later] * 10)
    f = diagnose(tidy(rows))
    if not fires:
        assert "dying_units" not in kinds(f)
        return
    d = one(f, "dying_units")
    assert (d["step"], d["value"], d["op"], d["threshold"]) == (3, pytest.approx(0.5), "≥", 0.5)
    # 62.5 % of relu_1 is dead too: its dying finding says more (that they were alive, and when)
    assert kinds(f) == {"dying_units"} and run_verdicts(f)["r"] == "dying_units"


def test_dying_units_are_dated_by_the_window_metric_minus_its_lag():
    rows = series("r", "relu_1", "dead_frac_window", [0.0] * 8 + [0.9] * 10)
    f = diagnose(tidy(rows))
    d = one(f, "dying_units")  # confirmed at step 8; with dead_window 10 the units died by step 1
    assert d["step"] == 1 and "confirmed it at step 8" in d["message"]
    runs = pd.DataFrame({"run": ["r"], "dead_window": [3]})
    assert one(diagnose(tidy(rows), runs), "dying_units")["step"] == 6


def test_dying_units_on_a_real_run():
    res = gradlab.run(gradlab.Config(depth=6, width=32, n_samples=512, batch_size=64, steps=150,
                                     activation="relu", init="he_normal", optimizer="adam", lr=0.05),
                      run_id="adam")
    d = one(diagnose(res.metrics, layers=res.layers), "dying_units", "adam")
    assert d["value"] >= 0.5 and 0 < d["step"] < 150


# -- weight growth -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("grown", "fires"), [(10.0, True), (9.99, False)])
def test_weight_growth_at_its_threshold_edge(grown, fires):
    rows = series("r", "d0", "weight_norm", [1.0] + [grown] * 10)
    rows += series("r", "bn", "weight_norm", [1.0] + [100.0] * 10)  # a norm layer's γ is not a weight
    layers = layers_table("r", [("d0", "dense"), ("bn", "batchnorm")])
    f = diagnose(tidy(rows), layers=layers)
    if not fires:
        assert kinds(f) == {"healthy"}
        return
    w = one(f, "weight_growth")
    assert (w["layers"], w["value"], w["op"], w["threshold"]) == ("d0", 10, "≥", 10)


def test_weight_growth_on_a_real_run():
    """Adam takes steps of ~lr per weight whatever the gradient's size: at lr 0.3 on saturating tanh
    layers the weights grow ~linearly (and the run has other troubles, which this test leaves alone)."""
    res = gradlab.run(gradlab.Config(depth=4, width=32, n_samples=512, batch_size=64, steps=200,
                                     activation="tanh", optimizer="adam", lr=0.3), run_id="adam")
    assert one(diagnose(res.metrics, layers=res.layers), "weight_growth", "adam")["value"] >= 10
