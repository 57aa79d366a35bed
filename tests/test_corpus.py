"""The labelled corpus (tests/corpus.py): every run gets exactly its verdict set, healthy runs get no
warning, and the findings carry the evidence their construction implies (step, layer, sized fix)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from corpus import CASES, Case, confusion, diagnose_case, markdown, score

BY_NAME = {c.name: c for c in CASES}


@pytest.fixture(scope="module")
def results() -> dict[str, tuple[pd.DataFrame, frozenset[str]]]:
    """Every corpus run made and diagnosed once for the module."""
    return {c.name: diagnose_case(c) for c in CASES}


def finding(results, run: str, kind: str) -> pd.Series:
    f = results[run][0]
    rows = f[(f["kind"] == kind) & (f["cause"] == "")]
    assert len(rows) == 1, rows
    return rows.iloc[0]


def test_the_corpus_covers_what_the_issue_asks():
    assert len(CASES) >= 20 and len(BY_NAME) == len(CASES)
    healthy = [c for c in CASES if c.truth == {"healthy"}]
    assert len(healthy) >= 8
    labelled = set().union(*(c.truth for c in CASES))
    assert labelled >= {"vanishing", "exploding", "diverged", "update_ratio", "dying_units", "frozen",
                        "clipping", "weight_growth", "oscillating_loss", "loss_plateau", "poor_init"}
    assert all(c.why for c in CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_run_gets_exactly_its_verdicts(results, case: Case):
    findings, got = results[case.name]
    assert got == case.truth, findings[["kind", "rule", "step", "value", "cause", "message"]].to_string()


def test_healthy_runs_get_no_warning_at_all(results):
    for case in CASES:
        if case.truth == {"healthy"}:
            f = results[case.name][0]
            assert f["kind"].tolist() == ["healthy"] and (f["severity"] == "info").all(), case.name


def test_the_score_of_the_corpus(results):
    truth = {c.name: c.truth for c in CASES}
    table = score(truth, {name: got for name, (_, got) in results.items()})
    assert (table["FP"] == 0).all() and (table["FN"] == 0).all()
    n_healthy = sum(t == {"healthy"} for t in truth.values())
    assert table.set_index("verdict").loc["healthy", "labelled"] == n_healthy


def test_score_counts_a_confusion():
    truth = {"a": frozenset({"vanishing"}), "b": frozenset({"healthy"}), "c": frozenset({"vanishing"})}
    got = {"a": frozenset({"vanishing", "poor_init"}), "b": frozenset({"vanishing"}),
           "c": frozenset({"healthy"})}
    t = score(truth, got).set_index("verdict")
    assert t.loc["vanishing", ["labelled", "flagged", "TP", "FP", "FN"]].tolist() == [2, 2, 1, 1, 1]
    assert t.loc["vanishing", "precision"] == 0.5 and t.loc["vanishing", "recall"] == 0.5
    assert t.loc["poor_init", "precision"] == 0 and math.isnan(t.loc["poor_init", "recall"])
    text = markdown(t.reset_index())
    assert text.splitlines()[0].startswith("| verdict | labelled") and "| — |" in text
    c = confusion(truth, got).set_index("labelled \\ flagged")
    # a: right, plus a poor_init it is not labelled with; b: healthy flagged vanishing; c: missed
    assert c.loc["vanishing", ["vanishing", "poor_init", "missed"]].tolist() == [1, 1, 1]
    assert c.loc["healthy", ["healthy", "vanishing"]].tolist() == [0, 1]


# -- what each construction implies about the evidence --------------------------------------------


def test_units_killed_at_step_40_are_reported_dying_from_step_40(results):
    d = finding(results, "dying_relu_numpy", "dying_units")
    assert d["step"] == 40 and d["layer"] == "act1" and d["value"] == 1.0
    f = results["dying_relu_numpy"][0]
    frozen = f[f["kind"] == "frozen"].iloc[0]  # no gradient reaches the layers before the dead ones
    assert frozen["cause"] == "dying_units" and frozen["step"] == 40


def test_a_layer_frozen_on_purpose_is_named_and_spoken_of_in_plain_terms(results):
    fr = finding(results, "frozen_layer_numpy", "frozen")
    assert (fr["rule"], fr["layer"], fr["layers"], fr["step"]) == ("frozen_update", "fc0", "fc0", 0)
    assert "your loop" in fr["fix"] and "init=" not in fr["fix"]  # framework "numpy": no gradlab keys


def test_lr_underflowing_float32_is_named_in_the_fix(results):
    fr = finding(results, "frozen_lr_underflow", "frozen")
    assert fr["value"] == 0 and "rounds to 0 in float32" in fr["fix"]


def test_clipping_on_every_step_sizes_the_fix_by_the_measured_norm(results):
    c = finding(results, "clipping_every_step", "clipping")
    assert c["value"] == 1.0 and c["step"] == 0
    assert "clip_norm=" in c["fix"] and "lr=0.1 → ~" in c["fix"] and "estimate" in c["fix"]


def test_a_stall_is_sized_by_the_gap_to_a_healthy_update(results):
    f, _ = results["stalled_tiny_lr"]
    u = finding(results, "stalled_tiny_lr", "update_ratio")
    assert u["value"] < 1e-8
    # the fix raises lr by target / measured median ratio: about ×1e5, not the old fixed ×10
    factor = float(u["fix"].split("lr=1e-07 → ~")[1].split(",")[0]) / 1e-7
    assert 1e4 < factor < 1e6 and "an estimate" in u["fix"]
    assert f.loc[f["kind"] == "loss_plateau", "cause"].tolist() == ["update_ratio"]


def test_a_converged_run_is_not_a_stall(results):
    """Issue 12's first defect: He/ReLU on separable blobs drives the loss near 0, and its update ratios
    then fall below 1e-5 — expected after convergence, not a finding."""
    f, got = results["healthy_relu_converged"]
    assert got == {"healthy"} and "update_ratio" not in set(f["kind"])


def test_initialisation_fixes_are_sized_by_the_measured_gain(results):
    p = finding(results, "exploding_large_init", "poor_init")
    scale = float(p["fix"].split("weight_scale=2 → ~")[1].split(",")[0])
    assert 1.3 < scale < 1.6  # He's √2 ≈ 1.41 for ReLU
    v = finding(results, "vanishing_tanh_small_init", "vanishing")
    assert "weight_scale=0.5 → ~" in v["fix"] and "raise" in v["fix"]


def test_weight_growth_reports_its_rate_and_the_decay_that_balances_it(results):
    w = finding(results, "weight_growth_numpy", "weight_growth")
    assert w["layer"] == "fc0" and w["value"] >= 10
    assert "1.8% per step" in w["fix"] and "λ = 0.36" in w["fix"]  # 0.018 / lr 0.05


def test_the_quick_sweeps_healthy_arm_is_not_a_poor_init(results):
    """tanh with Glorot init at depth 20 is critical: its activations' variance decays slowly (not
    geometrically) with depth; SageMaker's spread test alone would flag it."""
    assert results["healthy_deep_tanh_digits"][1] == {"healthy"}
