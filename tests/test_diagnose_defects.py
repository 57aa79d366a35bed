"""Regression tests of diagnosis defects: issue 12's four (a converged run called a stall, fixes blind
to the gap, only dense layers counted, values after divergence taken as findings), issue 13's 7 (steps
of any magnitude or sign) and 10 (``--json`` without NaN/Infinity), and the fixes' language."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from helpers import layers_table, one, series, tidy

import gradlab
from gradlab.cli import main
from gradlab.diagnosis import diagnose, findings_from_json, findings_to_json, run_verdicts, suggest_fix

# -- 1. a converged run is not a stall ---------------------------------------------------------------


def test_tiny_updates_after_the_loss_converged_are_not_a_stall():
    stall = [1e-3] * 10 + [1e-6] * 20  # the updates become tiny once the loss fell to 1 % of its start
    converged = series("conv", "", "loss", [1.0] * 10 + [0.01] * 20)
    converged += series("conv", "d0", "update_ratio", stall)
    flat = series("flat", "", "loss", [1.0] * 30) + series("flat", "d0", "update_ratio", stall)
    no_loss = series("noloss", "d0", "update_ratio", stall)  # without a loss, it cannot tell: a stall
    f = diagnose(tidy(converged + flat + no_loss))
    assert run_verdicts(f).to_dict() == {"conv": "healthy", "flat": "update_ratio", "noloss": "update_ratio"}
    # the stall is judged only on steps before convergence: still reported when it came first
    early = series("early", "", "loss", [1.0] * 20 + [0.01] * 10)
    early += series("early", "d0", "update_ratio", [1e-6] * 30)
    assert one(diagnose(tidy(early)), "update_ratio", "early")["step"] == 0


# -- 2. fixes sized by the measured gap, said to be estimates -----------------------------------------


def test_a_stall_fix_is_sized_by_the_gap_to_a_healthy_update_ratio():
    rows = series("r", "d0", "update_ratio", [1e-8] * 5) + series("r", "d2", "update_ratio", [1e-8] * 5)
    f = diagnose(tidy(rows), pd.DataFrame({"run": ["r"], "lr": [1e-7]}))
    fix = one(f, "update_ratio")["fix"]
    assert "lr=1e-07 → ~1e-02, ×100000: an estimate" in fix.replace("~0.01", "~1e-02")
    assert "×100000" in suggest_fix("update_ratio", "update_ratio_low", {"lr": 1e-7},
                                    evidence={"update_ratio": 1e-8})


def test_an_init_fix_is_sized_by_the_measured_gain_per_layer():
    # five dense layers whose ‖∂L/∂y‖ grows ×3 per layer towards the input (81× > 70), at initialisation
    rows = [("r", s, f"dense_{2 * i}", "grad_out_norm", 3.0 ** (4 - i)) for s in range(3) for i in range(5)]
    f = diagnose(tidy(rows), pd.DataFrame({"run": ["r"], "weight_scale": [3.0], "init": ["normal"]}))
    fix = one(f, "exploding")["fix"]
    assert "weight_scale=3 → ~1, ÷3" in fix and "gain per layer is 3" in fix and "estimate" in fix


def test_a_profile_that_exploded_during_training_does_not_size_the_init():
    rows = [("r", s, f"dense_{2 * i}", "grad_out_norm", (3.0 if s >= 1 else 1.0) ** (4 - i))
            for s in range(4) for i in range(5)]
    f = diagnose(tidy(rows), pd.DataFrame({"run": ["r"], "weight_scale": [3.0], "lr": [1.0]}))
    e = one(f, "exploding")
    assert e["step"] == 1 and "÷3" not in e["fix"] and "lower the learning rate" in e["fix"]


# -- 3. every weighted kind counts -------------------------------------------------------------------


def test_vanishing_through_conv_embedding_and_other_weighted_layers():
    names = ["features.0", "features.1", "emb", "blocks.2.fc1", "head"]  # free text, no dense_*
    kinds = ["conv", "activation", "embedding", "weighted", "conv"]
    grads = {"features.0": 1e-9, "features.1": 1e-9, "emb": 1e-7, "blocks.2.fc1": 1e-2, "head": 1.0}
    rows = [("r", s, n, "grad_out_norm", grads[n]) for s in range(3) for n in names]
    f = diagnose(tidy(rows), layers=layers_table("r", list(zip(names, kinds, strict=True))))
    v = one(f, "vanishing")
    assert v["layers"] == "features.0, emb" and "from head (output) to features.0" in v["message"]
    assert "2 of 4 layers" in v["message"]  # the activation is not a weighted layer
    conv = [("c", s, n, "grad_out_norm", g) for s in range(3) for n, g in (("a", 1e-6), ("b", 1.0))]
    fc = diagnose(tidy(conv), layers=layers_table("c", [("a", "conv"), ("b", "conv")]))
    assert "1 of 2 conv layers" in one(fc, "vanishing", "c")["message"]


# -- 4. nothing recorded after divergence becomes a finding --------------------------------------------


def test_values_after_divergence_are_not_findings():
    rows = series("r", "", "loss", [1.0, 0.9, 0.8, math.nan] + [math.nan] * 20)
    rows += series("r", "relu_1", "dead_frac", [0.0] * 3 + [1.0] * 21)  # NaN outputs count as "dead"
    rows += series("r", "tanh_3", "saturation", [0.0] * 3 + [1.0] * 21)
    rows += series("r", "dense_0", "update_ratio", [1e-3] * 3 + [0.0] * 21)
    rows += series("r", "dense_0", "grad_norm", [0.1] * 3 + [0.0] * 21)
    f = diagnose(tidy(rows))
    assert f["kind"].tolist() == ["diverged"] and one(f, "diverged")["step"] == 3
    runs = pd.DataFrame({"run": ["r"], "status": ["diverged"], "diverged_step": pd.array([3], "Int64"),
                         "diverged_layer": ["relu_1"]})
    assert diagnose(tidy(rows), runs)["kind"].tolist() == ["diverged"]


# -- issue 13, 7: steps of any magnitude or sign -------------------------------------------------------


def _pathological_frame() -> pd.DataFrame:
    rows = []
    for s in range(30):
        rows += [("r", s, "dense_0", "grad_out_norm", 1e-6), ("r", s, "dense_2", "grad_out_norm", 1.0)]
    rows += series("r", "", "loss", [1.0] * 30)
    rows += series("r", "relu_1", "dead_frac_window", [0.0] * 5 + [0.9] * 25)
    rows += series("r", "", "clipped", [1.0] * 30) + series("r", "dense_0", "update_ratio", [1e-8] * 29)
    rows += series("r", "dense_0", "weight_norm", [1.0] + [20.0] * 29)
    rows += series("d", "", "loss", [1.0, 2.0, math.inf]) + series("d", "dense_0", "nonfinite", [0, 0, 7])
    return tidy(rows)


@pytest.mark.parametrize("offset", [-1000, 2**62, -(2**62), 2**63 - 100])
def test_findings_do_not_depend_on_where_the_steps_start(offset):
    frame = _pathological_frame()
    base = diagnose(frame)
    shifted = diagnose(frame.assign(step=frame["step"] + offset))
    cols = ["run", "kind", "rule", "layer", "layers", "metric", "op", "threshold", "severity", "cause"]
    pd.testing.assert_frame_equal(shifted[cols], base[cols])
    np.testing.assert_allclose(shifted["value"], base["value"])
    moved = base["step"].astype("Float64") + offset
    assert (shifted["step"].dropna().astype(object) == (base["step"].dropna().astype(object) + offset)).all()
    assert shifted["step"].isna().tolist() == moved.isna().tolist()


def test_a_real_run_with_steps_near_two_to_the_62():
    res = gradlab.run(gradlab.Config(depth=12, width=16, n_samples=128, batch_size=32, steps=20,
                                     activation="sigmoid", init="standard"), run_id="far")
    far = res.metrics.assign(step=res.metrics["step"] + 2**62)
    f = diagnose(far, layers=res.layers)
    assert run_verdicts(f)["far"] == "vanishing" and one(f, "vanishing", "far")["step"] == 2**62


# -- issue 13, 10: JSON never holds NaN or Infinity ----------------------------------------------------


def _strict(text: str) -> list[dict]:
    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_findings_json_has_no_nan_or_infinity_and_round_trips():
    rows = series("r", "", "grad_norm_total", [1.0, math.inf]) + series("n", "", "loss", [1.0, -math.inf])
    f = diagnose(tidy(rows))
    records = _strict(findings_to_json(f))
    assert {r["run"]: r["value"] for r in records} == {"n": "-inf", "r": "inf"}
    assert all(r["threshold"] is None for r in records)  # NaN: null
    pd.testing.assert_frame_equal(findings_from_json(findings_to_json(f)), f)


def test_the_cli_prints_strict_json_when_a_norm_overflowed(tmp_path, capsys):
    import dataclasses

    from gradlab.experiment.runner import run_sweep
    from gradlab.experiment.train import run

    def overflowing(config: gradlab.Config, run_id: str):
        """A real run whose last global gradient norm overflowed to +inf."""
        res = run(config, run_id)
        m = res.metrics.copy()
        last = (m["metric"] == "grad_norm_total") & (m["step"] == m["step"].max())
        m.loc[last, "value"] = math.inf
        return dataclasses.replace(res, metrics=m)

    config = gradlab.Config(depth=2, width=8, steps=4, n_samples=64, batch_size=16)
    run_sweep([config], tmp_path / "runs", jobs=0, run_fn=overflowing)
    assert main(["diagnose", str(tmp_path / "runs"), "--json"]) == 0
    records = _strict(capsys.readouterr().out)
    d = next(r for r in records if r["kind"] == "diverged")
    assert (d["value"], d["metric"], d["threshold"]) == ("inf", "grad_norm_total", None)


# -- the fixes speak the run's language ---------------------------------------------------------------


@pytest.mark.parametrize(("framework", "says", "never"), [
    (None, ["init='he_normal'", "batch_norm=true", "lr=0.5 → ~"], ["nn.", "torch"]),
    ("gradlab", ["init='he_normal'"], ["nn."]),
    ("torch", ["nn.init.kaiming_normal_", "nn.BatchNorm1d/2d", "the optimizer's lr: 0.5 → ~"],
     ["init='", "=true"]),
    ("numpy", ["He init (W ~ N(0, 2/fan_in))", "batch normalisation"], ["init='", "nn.", "=true"]),
])
def test_fixes_speak_the_runs_language(framework, says, never):
    cfg = {"lr": 0.5} | ({"framework": framework} if framework else {})
    text = " ".join([suggest_fix("dead_units", "dead_units", cfg),
                     suggest_fix("vanishing", "vanishing_ratio", cfg)])
    for s in says:
        assert s in text, (s, text)
    for s in never:
        assert s not in text, (s, text)


def test_torch_runs_get_torchs_clip_call():
    fix = suggest_fix("clipping", "clip_most_steps", {"framework": "torch", "lr": 0.1},
                      evidence={"g": 3.0, "clip": 0.5})
    assert "torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=6)" in fix
    assert "the optimizer's lr: 0.1 → ~0.02, ÷6" in fix  # lr × clip / ‖g‖


def test_a_missing_framework_column_or_value_is_gradlab():
    rows = series("a", "d0", "update_ratio", [1e-8] * 3) + series("b", "d0", "update_ratio", [1e-8] * 3)
    runs = pd.DataFrame({"run": ["a", "b"], "framework": ["torch", None], "lr": [0.01, 0.01]})
    f = diagnose(tidy(rows), runs)
    assert "the optimizer's lr" in one(f, "update_ratio", "a")["fix"]
    assert "lr=0.01 → ~" in one(f, "update_ratio", "b")["fix"]


# -- the report shows when each finding began --------------------------------------------------------


def test_the_reports_findings_show_the_step_each_began(tmp_path):
    from gradlab.report.page import write_report

    rows = series("r", "relu_1", "dead_frac_window", [0.0] * 12 + [0.9] * 20)
    rows += series("r", "", "loss", [1.0 - 0.01 * s for s in range(32)])
    runs = pd.DataFrame({"run": ["r"], "name": ["arm"], "status": ["ok"]})
    findings = diagnose(tidy(rows), runs)
    assert one(findings, "dying_units")["step"] == 3  # confirmed at 12, dead_window 10
    html = write_report(runs, tidy(rows), tmp_path, findings=findings).read_text(encoding="utf-8")
    section = html[html.index('<section id="findings">'):]
    start = section.index("<tr><td")
    row = section[start:section.index("</tr>", start)]
    assert "<th>since step</th>" in section and '<td class="num">3</td>' in row
    assert 'alt="evidence dying_units"' in section  # the dead-units chart is its evidence
