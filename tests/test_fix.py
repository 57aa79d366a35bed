"""gradlab fix on real small runs: each classic pathology's top-ranked fix removes its finding; the fix
sweep is resumable; fixes are data (config changes and words from one table, the same that
``gradlab diagnose`` says); bad input is one line."""

from __future__ import annotations

import ast
import itertools
import tomllib
from pathlib import Path

import pandas as pd
import pytest

import gradlab
from gradlab.cli import main
from gradlab.diagnosis import diagnose, suggest_fix
from gradlab.diagnosis.candidates import candidate_fixes
from gradlab.diagnosis.ranking import indistinguishable, is_fix_sweep
from gradlab.diagnosis.recipes import RECIPES, Advice, Step
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


# -- one source: what gradlab fix tries is what gradlab diagnose says ------------------------------------

FINDINGS = [("vanishing", "vanishing_ratio"), ("exploding", "exploding_ratio"),
            ("exploding", "exploding_growth"), ("poor_init", "init_spread"), ("diverged", "diverged"),
            ("saturation", "saturation"), ("dead_units", "dead_units"), ("dying_units", "dying_units"),
            ("update_ratio", "update_ratio_low"), ("update_ratio", "update_ratio_high"),
            ("update_ratio", ""), ("loss_plateau", "loss_plateau"),
            ("oscillating_loss", "loss_spikes"), ("clipping", "clip_most_steps"),
            ("weight_growth", "weight_growth"), ("frozen", "frozen_grad"), ("frozen", "frozen_update"),
            ("failed", "failed"), ("no_data", "no_data")]
CONFIGS = [
    {"activation": "sigmoid", "init": "standard", "weight_scale": 1.0, "lr": 0.1, "dtype": "float64"},
    {"activation": "relu", "init": "he_normal", "weight_scale": 4.0, "lr": 3.0, "dtype": "float32",
     "batch_norm": True, "clip_norm": 5.0},
    {"activation": "tanh", "init": "glorot_uniform", "weight_scale": 0.5, "lr": 1e-7, "layer_norm": True,
     "residual": True, "dtype": "float32"},
    {"framework": "torch", "lr": 0.1},
    {"framework": "numpy", "lr": 0.05},
]
EVIDENCE = [{}, {"update_ratio": 1e-7, "gain": 0.5, "g0": 10.0, "g": 3.0, "clip": 0.5, "rate": 0.02},
            {"update_ratio": 0.3, "gain": 2.0, "g0": 2.0, "g": 8.0, "rate": 0.001}]


def test_every_fix_gradlab_fix_tries_is_in_the_diagnose_text_in_its_order() -> None:
    assert {rule if rule in RECIPES else kind for kind, rule in FINDINGS} == set(RECIPES)  # all reached
    for (kind, rule), cfg, ev in itertools.product(FINDINGS, CONFIGS, EVIDENCE):
        text = suggest_fix(kind, rule, cfg, evidence=ev)
        fixes = candidate_fixes([(kind, rule)], cfg, {kind: ev})
        assert text, (kind, rule, cfg, ev)  # every finding gets words, also with nothing to run
        at = 0
        for f in fixes:
            assert f.text in text[at:], (kind, rule, cfg, ev, f.text, text)
            at = text.index(f.text, at) + len(f.text)
            assert all(cfg.get(k) != v for k, v in f.changes.items()), f  # each change changes something
            assert f.sized == (f.text.count("estimate") > 0), f  # sized fixes say they are estimates


def _vanishing_run() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Five dense layers whose ‖∂L/∂y‖ shrinks ÷10 per layer towards the input, and its config."""
    rows = [("r", s, f"dense_{2 * i}", "grad_out_norm", 0.1 ** (4 - i)) for s in range(3) for i in range(5)]
    metrics = pd.DataFrame(rows, columns=["run", "step", "layer", "metric", "value"]).astype(
        {"run": "string", "step": "int64", "layer": "string", "metric": "string", "value": "float64"})
    return metrics, pd.DataFrame({"run": ["r"], "activation": ["sigmoid"], "init": ["standard"], "lr": [0.1]})


def test_a_step_added_to_a_recipe_is_said_by_diagnose_and_tried_by_fix(monkeypatch: pytest.MonkeyPatch,
                                                                        ) -> None:
    metrics, runs = _vanishing_run()
    cfg = runs.iloc[0].to_dict()
    before = diagnose(metrics, runs).set_index("kind").loc["vanishing"]
    old = RECIPES["vanishing"]

    def shallower(case):  # the old recipe plus one step
        a = old(case)
        half = Step("use half the layers (depth=5)", {"depth": 5}, "shallower")
        return Advice((*a.steps, half), a.lead, a.note)

    monkeypatch.setitem(RECIPES, "vanishing", shallower)
    after = diagnose(metrics, runs).set_index("kind").loc["vanishing"]
    assert "use half the layers (depth=5)" not in before["fix"]
    assert after["fix"].startswith(before["fix"].rsplit(", or ", 1)[0])
    assert after["fix"].endswith(", or use half the layers (depth=5)")
    fixes = candidate_fixes([("vanishing", str(after["rule"]))], cfg)
    assert fixes[-1].name == "shallower" and fixes[-1].changes == {"depth": 5}
    monkeypatch.setitem(RECIPES, "vanishing", lambda case: Advice())  # a recipe that has nothing
    assert diagnose(metrics, runs).set_index("kind").loc["vanishing", "fix"] == ""
    assert candidate_fixes([("vanishing", "vanishing_ratio")], cfg) == []


def test_a_run_that_clips_already_is_told_to_clip_harder_in_both() -> None:
    cfg, ev = {"clip_norm": 5.0, "lr": 0.1, "activation": "relu", "init": "he_normal"}, {"g0": 20.0}
    text = suggest_fix("exploding", "exploding_growth", cfg, evidence=ev)
    clip = next(f for f in candidate_fixes([("exploding", "exploding_growth")], cfg, {"exploding": ev})
                if set(f.changes) == {"clip_norm"})
    assert clip.changes["clip_norm"] < cfg["clip_norm"] and "clip harder" in clip.text and clip.text in text


def test_batch_norm_exploding_at_init_is_explained_and_leaves_the_init_alone() -> None:
    cfg, ev = {"batch_norm": True, "residual": False, "weight_scale": 1.0, "lr": 0.1}, {"gain": 2.0}
    text = suggest_fix("exploding", "exploding_ratio", cfg, evidence=ev)
    assert text.startswith("batch norm amplifies back-propagated gradients in deep nets at initialisation: ")
    fixes = candidate_fixes([("exploding", "exploding_ratio")], cfg, {"exploding": ev})
    assert [f.name for f in fixes] == ["residual", "clip_norm=1"]
    assert "use fewer layers" in text and "warm up the learning rate" in text  # advice: nothing to run
    bare = suggest_fix("exploding", "exploding_ratio", {**cfg, "batch_norm": False}, evidence=ev)
    assert "gain per layer is 2" in bare and "residual" not in bare  # without batch norm: the init scale


def test_diagnosis_modules_import_no_private_names_from_each_other() -> None:
    folder = Path(gradlab.diagnosis.__file__).parent
    for path in folder.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        private = [a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                   and (n.module or "").startswith("gradlab") for a in n.names if a.name.startswith("_")]
        assert not private, (path.name, private)


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
