"""gradlab fix on real small runs: each classic pathology's top-ranked fix removes its finding; the fix
sweep is resumable; fixes are data (config changes and words from one table); bad input is one line."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pandas as pd
import pytest

import gradlab
from gradlab.cli import main
from gradlab.diagnosis.candidates import candidate_fixes
from gradlab.diagnosis.ranking import indistinguishable, is_fix_sweep
from gradlab.experiment import store
from gradlab.repair import FixError, fix, format_outcomes

SMALL = {"dataset": "digits", "n_samples": 512, "width": 32, "steps": 60, "batch_size": 64, "lr": 0.05,
         "momentum": 0.9}
SICK = {
    "deep sigmoid": {"depth": 10, "activation": "sigmoid", "init": "standard"},
    "relu large init": {"depth": 6, "activation": "relu", "init": "he_normal", "weight_scale": 4.0},
    "diverging lr": {"depth": 4, "activation": "identity", "init": "glorot_uniform", "lr": 3.0},
    "stalled lr": {"depth": 4, "activation": "tanh", "init": "glorot_uniform", "lr": 1e-7, "momentum": 0.0},
    "dead relu": {"depth": 4, "activation": "relu", "init": "he_normal", "lr": 1.0, "momentum": 0.0},
}
EXPECTED = {"deep sigmoid": "vanishing", "relu large init": "exploding", "diverging lr": "diverged",
            "stalled lr": "update_ratio", "dead relu": "dying_units"}


def _sick_folder(root: Path) -> Path:
    configs = [gradlab.Config(name=n, **{**SMALL, **v}) for n, v in SICK.items()]
    gradlab.run_sweep(configs, root / "src", jobs=0)
    return root / "src"


@pytest.fixture(scope="module")
def fixed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    root = tmp_path_factory.mktemp("fix")
    src = _sick_folder(root)
    return root, fix(src, out=root / "fix", jobs=0)


@pytest.mark.parametrize("name", list(SICK))
def test_top_ranked_fix_removes_the_finding(fixed: tuple[Path, list], name: str) -> None:
    _, outcomes = fixed
    o = next(o for o in outcomes if o.label == name)
    assert EXPECTED[name] in o.kinds
    top = o.ranked.iloc[0]
    assert top["fix"].startswith("fix: ") and top["cleared"] == 1.0 and top["remaining"] == ""
    base = o.ranked[o.ranked["fix"] == "baseline"].iloc[0]
    assert base["rank"] == len(o.ranked) and base["cleared"] == 0.0 and EXPECTED[name] in base["remaining"]
    assert top["seeds"] == 2
    if name != "dead relu":  # there the lr ÷100 that keeps units alive also learns slower in 60 steps
        assert top["final_loss"] < base["final_loss"]


def test_fix_sweep_is_paired_and_written(fixed: tuple[Path, list]) -> None:
    _, outcomes = fixed
    o = next(o for o in outcomes if o.label == "deep sigmoid")
    doc = tomllib.loads((o.folder / "fix.toml").read_text(encoding="utf-8"))
    names = [v["name"] for v in doc["variant"]]
    assert names[0] == "baseline" and "fix: relu+he" in names and "fix: batch norm" in names
    assert doc["sweep"]["seeds"] == [0, 1] and doc["base"]["activation"] == "sigmoid"
    runs, _ = store.load_results(o.folder)
    assert is_fix_sweep(runs) and len(runs) == 2 * len(names)
    assert set(runs.groupby("name")["seed"].apply(frozenset)) == {frozenset({0, 1})}
    text = format_outcomes(outcomes)
    assert "deep sigmoid" in text and "fix: relu+he" in text and "cleared" in text


def test_rerun_redoes_only_what_is_missing(fixed: tuple[Path, list]) -> None:
    root, outcomes = fixed
    o = next(o for o in outcomes if o.label == "stalled lr")
    victim = str(store.load_results(o.folder)[0]["run"].iloc[-1])
    (o.folder / "runs" / victim / "manifest.json").unlink()  # as if killed before it finished
    ran: list[str] = []
    again = fix(root / "src", runs=[o.runs[0]], out=root / "fix", jobs=0,
                progress=lambda p: ran.append(p.run) if p.run else None)
    assert ran == [victim]
    pd.testing.assert_frame_equal(again[0].ranked, o.ranked)


def test_cli_fix_prints_the_ranked_table(fixed: tuple[Path, list], capsys: pytest.CaptureFixture) -> None:
    root, outcomes = fixed
    o = next(o for o in outcomes if o.label == "dead relu")
    args = ["fix", str(root / "src"), "--runs", o.runs[0], "--out", str(root / "fix"), "--jobs", "0"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "dead relu" in out and "fix: lr ÷" in out and "deep sigmoid" not in out


def test_bad_runs_is_one_line(fixed: tuple[Path, list], capsys: pytest.CaptureFixture) -> None:
    root, _ = fixed
    with pytest.raises(FixError, match="runs: 'nope' is not a run of this folder; allowed: "):
        fix(root / "src", runs="nope", out=root / "fix")
    assert main(["fix", str(root / "src"), "--runs", "nope"]) == 2
    assert "'nope' is not a run" in capsys.readouterr().err


def test_fixes_are_data_sized_and_in_the_runs_language() -> None:
    cfg = {"activation": "tanh", "init": "glorot_uniform", "lr": 1e-7, "framework": ""}
    fixes = {f.name: f for f in candidate_fixes([("update_ratio", "update_ratio_low")], cfg,
                                                {"update_ratio": {"update_ratio": 1e-8}})}
    assert fixes["lr ×100000"].changes == {"lr": 0.01} and fixes["lr ×100000"].sized
    assert fixes["adam"].changes["optimizer"] == "adam"
    torch = candidate_fixes([("vanishing", "vanishing_ratio")],
                            {"activation": "sigmoid", "framework": "torch"})
    he = next(f for f in torch if f.name == "relu+he")
    assert "kaiming_normal_" in he.code and "nn.ReLU" in he.code and "kaiming_normal_" in he.text
    plain = candidate_fixes([("exploding", "exploding_growth")], {"framework": "numpy"},
                            {"exploding": {"g0": 3.0}})
    assert any("if g > 3" in f.code for f in plain)
    assert candidate_fixes([("vanishing", "vanishing_ratio")], {"batch_norm": True, "residual": True,
                                                                 "activation": "relu", "init": "he_normal"}) \
        and all("batch_norm" not in f.changes for f in candidate_fixes(
            [("vanishing", "vanishing_ratio")], {"batch_norm": True}))


def test_indistinguishable_pairs_by_seed() -> None:
    assert indistinguishable({0: 1.0, 1: 1.01}, {0: 1.005, 1: 1.0})
    assert not indistinguishable({0: 1.0, 1: 1.1}, {0: 2.0, 1: 2.2})
    assert indistinguishable({0: float("inf")}, {0: float("inf")})


def test_report_has_a_which_fix_works_section(fixed: tuple[Path, list], tmp_path: Path) -> None:
    from gradlab.report.page import load_and_report

    _, outcomes = fixed
    o = next(o for o in outcomes if o.label == "stalled lr")
    html = load_and_report(o.folder, tmp_path / "rep", theory=pd.DataFrame()).read_text(encoding="utf-8")
    section = html[html.index('id="which-fix"'):html.index('id="comparisons"')]
    assert "Which fix works" in section and "Verdicts before and after" in section
    assert section.index("fix: adam") < section.index("fix: lr ×100000")  # ranked order
    assert "baseline against fix: adam" in section and section.count("<img") == 4
    assert '<a href="#which-fix">Which fix works</a>' in html[:html.index('id="which-fix"')]  # contents
    assert not is_fix_sweep(store.load_results(fixed[0] / "src")[0])  # other reports: no such section


def test_a_torch_run_gets_its_fixes_as_code(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    torch = pytest.importorskip("torch")
    import gradlab.torch

    torch.manual_seed(0)
    layers: list = []
    for _ in range(12):
        layers += [torch.nn.Linear(16, 16), torch.nn.Sigmoid()]
    model = torch.nn.Sequential(*layers, torch.nn.Linear(16, 3))
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.uniform_(m.weight, -0.25, 0.25)  # the "standard" init: U(±1/√16)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(64, 16), torch.randint(0, 3, (64,))
    w = gradlab.torch.watch(model, opt, run="sig")
    for _ in range(10):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        w.step(loss)
    w.save(tmp_path / "runs")
    assert main(["fix", str(tmp_path / "runs"), "--out", str(tmp_path / "fix")]) == 0
    out = capsys.readouterr().out
    assert "vanishing" in out and "candidate fixes in torch's terms" in out
    assert "nn.init.kaiming_normal_(m.weight, nonlinearity='relu')" in out and "nn.BatchNorm1d" in out
    assert "mul_(1)" not in out and "nn.LayerNorm" not in out  # no code for what stays as it is
    assert not (tmp_path / "fix").exists()  # nothing of the user's code can be rerun here
