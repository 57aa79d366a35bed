"""The HTML report: golden file (volatile fields scrubbed), escaping, self-containment, grouping, and
theory beside measurement on real runs.

Regenerate the golden file after an intended change with
``GRADLAB_UPDATE_GOLDEN=1 pytest tests/test_report.py`` and review its diff.

Speed: the tests about the page's text build every chart but skip drawing its pixels (``no_pixels``:
``Figure.savefig`` writes a stub PNG) — the golden file scrubs image bytes anyway, and drawing was 90%
of their time. Every renderer is drawn in tests/test_plots.py, and the real-run reports at the end of
this file draw theirs for real.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import free_text, make_findings, make_run, make_sweep, real_runs
from matplotlib.figure import Figure

import gradlab
from gradlab import plots, records
from gradlab.experiment import store
from gradlab.report import context
from gradlab.report import page as report
from gradlab.report import sections as report_sections
from gradlab.report.sections import phase_chart_points

GOLDEN = Path(__file__).parent / "golden" / "report.html"
FIXED_NOW = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def scrub(text: str) -> str:
    """Blank what changes between machines and versions: image bytes, timestamps, version numbers."""
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "data:image/png;base64,SCRUBBED", text)
    text = re.sub(r'<time datetime="[^"]*">[^<]*</time>', "<time>SCRUBBED</time>", text)
    return re.sub(r"\b(gradlab|matplotlib) [0-9][0-9A-Za-z.+\-]*", r"\1 VERSION", text)


def runs_table(html: str) -> dict[str, dict[str, str]]:
    """The runs table as {column: {run: cell text}}."""
    section = html[html.index('<section id="runs">'):]
    section = section[: section.index("</table>")]
    header = re.findall(r"<th>(.*?)</th>", section)
    rows = [re.findall(r"<td[^>]*>(.*?)</td>", r) for r in re.findall(r"<tr>(.*?)</tr>", section)[1:]]
    rows = [[re.sub(r"<[^>]+>", "", c) for c in r] for r in rows]
    return {h: {r[0]: r[i] for r in rows} for i, h in enumerate(header)}


def _stub_savefig(fig: Figure, buf, **_) -> None:
    buf.write(PNG_MAGIC)


@contextlib.contextmanager
def no_pixels() -> Iterator[None]:
    """Charts are built but not drawn: ``Figure.savefig`` writes only the PNG signature."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Figure, "savefig", _stub_savefig)
        yield


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, str]:
    runs, metrics, hists = make_sweep()
    pred = pd.DataFrame({"run": "r-sig4", "layer_index": range(5), "predicted": 0.25 ** np.arange(4, -1, -1)})
    out = tmp_path_factory.mktemp("report")
    with no_pixels():
        path = report.write_report(runs, metrics, out, hists=hists, findings=make_findings(), theory=pred,
                                   title="Depth × activation", now=lambda: FIXED_NOW)
    return path, path.read_text(encoding="utf-8")


def test_golden_report(built):
    _, html = built
    got = scrub(html)
    if os.environ.get("GRADLAB_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(got, encoding="utf-8")
    assert GOLDEN.exists(), "no golden file: run GRADLAB_UPDATE_GOLDEN=1 pytest tests/test_report.py"
    want = GOLDEN.read_text(encoding="utf-8")
    assert got == want, "report.html changed; if intended, regenerate it (see the module docstring)"


def test_report_is_self_contained(built):
    path, html = built
    assert "<script" not in html and "<link" not in html and "http://" not in html and "https://" not in html
    srcs = re.findall(r'<img src="([^"]{0,30})', html)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    pngs = sorted((path.parent / "img").glob("*.png"))
    assert len(pngs) == len(srcs)  # the files beside it; real PNG bytes: test_report_on_real_runs


def test_report_sections_and_values(built):
    _, html = built
    for anchor in ("summary", "runs", "comparisons", "findings", "groups"):
        assert f'id="{anchor}"' in html and f'href="#{anchor}"' in html
    assert html.count('<details class="group"') == 3  # grouped by activation: relu, sigmoid, tanh
    assert "activation = sigmoid" in html
    assert '<span class="verdict">vanishing, saturation</span>' in html
    assert '<span class="status diverged">diverged</span>' in html
    assert "MemoryError" in html  # the failed run's traceback


def test_strings_from_configs_and_findings_are_escaped(tmp_path):
    evil = "<script>alert(1)</script>"
    part = make_run("x<1>", depth=2, steps=3, hist_steps=())
    runs = pd.DataFrame([{**part["row"], "name": evil, "error": evil}])
    other = runs.assign(run="y&2", name="", activation="tanh", status="failed")
    runs = pd.concat([runs, other], ignore_index=True)
    findings = pd.DataFrame([{"run": "x<1>", "kind": "vanishing", "layer": "dense_0", "step": 0,
                              "value": 1e-4, "op": "<", "threshold": 1e-3, "message": evil, "fix": evil}])
    with no_pixels():
        path = report.write_report(runs, part["metrics"], tmp_path, findings=findings, title=evil,
                                   now=lambda: FIXED_NOW)
    html = path.read_text(encoding="utf-8")
    assert "<script" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "x&lt;1&gt;" in html and "y&amp;2" in html


def test_verdicts_come_from_diagnose_most_severe_first(tmp_path):
    rep = context.ReportContext(*make_sweep()[:2], tmp_path, None, make_findings(), None, None)
    assert rep.verdicts.to_dict() == {"r-sig6": "vanishing, saturation", "r-tanh6": "diverged"}
    assert context.ReportContext(*make_sweep()[:2], tmp_path, None, None, None, None).verdicts.empty


def test_large_sweep_is_grouped_by_one_axis(tmp_path):
    rows = [{"run": f"r{d}-{a}-{s}", "name": "", "depth": d, "activation": a, "init": "he_normal",
             "weight_scale": s, "seed": 0, "status": "ok"}
            for d in (2, 4, 8, 16, 32) for a in ("relu", "tanh") for s in (0.5, 1.0, 2.0)]
    runs = pd.DataFrame(rows)
    empty = pd.DataFrame(columns=["run", "step", "layer", "metric", "value"])
    rep = context.ReportContext(runs, empty, tmp_path, None, None, None, None)
    assert rep.group_by == "activation"  # text axis first, then the fewest values
    assert [t for t, _ in rep.groups] == ["activation = relu", "activation = tanh"]
    assert all(len(arms) == 15 for _, arms in rep.groups)


def test_a_large_sweep_opens_its_runs_section_with_one_row_per_arm(tmp_path):
    parts = [make_run(f"{a}-{s}", depth=2, steps=2, activation=a, seed=s, factor=f, hist_steps=(0,))
             for a, f in (("relu", 1.0), ("sigmoid", 0.25)) for s in range(21)]
    runs = pd.DataFrame([p["row"] for p in parts])
    runs.loc[runs["run"] == "relu-0", "status"] = "diverged"
    metrics = pd.concat([p["metrics"] for p in parts], ignore_index=True)
    findings = make_findings()  # r-sig6 vanishes and saturates, r-tanh6 diverges
    findings["run"] = findings["run"].replace({"r-sig6": "sigmoid-3", "r-tanh6": "relu-0"})
    rep = context.ReportContext(runs, metrics, tmp_path, None, findings, None, None)
    html = report_sections.runs_section(rep, {"relu-0": "group-1-relu"})
    arms = html[html.index("<h3>Per arm</h3>"):html.index("<h3>Every run</h3>")]
    header = re.findall(r"<th>(.*?)</th>", arms)
    rows = [[re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", r)]
            for r in re.findall(r"<tr>(.*?)</tr>", arms)[1:]]
    assert header == ["arm", "runs", "status", "final loss", "grad ratio @init", "@end", "verdicts (× runs)"]
    assert [r[1:3] for r in rows] == [["21", "20 ok, 1 diverged"], ["21", "21 ok"]]
    assert [r[-1] for r in rows] == ["diverged ×1", "vanishing, saturation ×1"]
    assert 'href="#group-1-relu"' in arms  # an arm links to its section
    ratio = dict(zip([r[0] for r in rows], [float(r[4]) for r in rows], strict=True))
    assert ratio[rep.arm["sigmoid-0"]] == pytest.approx(0.25**2, rel=0.1)  # the median over its seeds
    assert 'id="run-relu-0"' in html[html.index("<h3>Every run</h3>"):]  # every run still has its row
    small = context.ReportContext(*make_sweep()[:2], tmp_path, None, None, None, None)
    assert "Per arm" not in report_sections.runs_section(small, {})


def test_load_and_report_uses_the_store_loader(tmp_path, monkeypatch):
    part = make_run("only", depth=2, steps=3, hist_steps=(0, 3))
    runs = pd.DataFrame([part["row"]])
    layers = records.infer_layers(part["metrics"])
    seen, tables = [], []
    load = lambda d, metrics=None: seen.append(d) or (runs, part["metrics"])  # noqa: E731
    monkeypatch.setattr(store, "read_results", load)  # load_results with run, layer, metric coded
    monkeypatch.setattr(store, "load_layers", lambda d: seen.append(d) or layers)
    monkeypatch.setattr(store, "load_hists", lambda d: seen.append(d) or part["hists"])
    real = report.diagnose
    monkeypatch.setattr(report, "diagnose", lambda m, r, **k: tables.append(k["layers"]) or real(m, r, **k))
    monkeypatch.setattr(Figure, "savefig", _stub_savefig)
    path = report.load_and_report(tmp_path / "results", tmp_path / "out")
    html = path.read_text(encoding="utf-8")
    assert path == tmp_path / "out" / "index.html" and "gradlab report: results" in html
    assert seen == [tmp_path / "results"] * 3  # the results, their layers table and their histograms
    assert len(tables) == 1 and tables[0] is layers  # the diagnosis reads the same table
    assert 'id="findings"' in html  # diagnosed on the way


def test_report_of_free_text_layer_names_with_their_layers_table_matches_the_golden_page(tmp_path):
    runs, metrics, hists = make_sweep()
    fm, fh, layers, back = free_text(metrics, hists)
    pred = pd.DataFrame({"run": "r-sig4", "layer_index": range(5), "predicted": 0.25 ** np.arange(4, -1, -1)})
    with no_pixels():
        rep = context.ReportContext(runs, fm, tmp_path, fh, make_findings(), pred, None, layers)
        want = context.ReportContext(runs, metrics, tmp_path, hists, make_findings(), pred, None)
        assert rep.ratio0.sort_index().equals(want.ratio0.sort_index())
        path = report.write_report(runs, fm, tmp_path, hists=fh, findings=make_findings(), theory=pred,
                                   title="Depth × activation", now=lambda: FIXED_NOW, layers=layers)
    # every chart is built from the table (the series: tests/test_plots.py); the page's text is the same
    assert scrub(path.read_text(encoding="utf-8")) == GOLDEN.read_text(encoding="utf-8")
    assert set(rep.layers["layer"].astype(str)) <= set(back)


# -- theory beside measurement, on real runs at initialisation (drawn for real) ------------------


@pytest.fixture(scope="module")
def real_report(tmp_path_factory) -> tuple[Path, str]:
    runs, metrics = real_runs()
    path = report.write_report(runs, metrics, tmp_path_factory.mktemp("real"), now=lambda: FIXED_NOW)
    return path, path.read_text(encoding="utf-8")


def test_report_on_real_runs_overlays_the_prediction(real_report):
    path, html = real_report
    # computed automatically (no theory passed): the flow chart's caption and the runs table say so
    assert "Dashed: the mean-field prediction at initialisation" in html
    assert "<th>predicted @init</th>" in html
    table = runs_table(html)
    measured, predicted = table["grad ratio @init"], table["predicted @init"]
    for run in ("tanh-ordered", "relu-glorot", "bn-relu"):
        assert float(measured[run]) == pytest.approx(float(predicted[run]), rel=0.15)
    assert predicted["residual"] == predicted["failed"] == "—"
    assert 'title="residual connections: no mean-field profile here">—' in html
    assert "Mean-field prediction for 3 of 6 runs. Not predicted:" in html
    assert "the run failed (1 run)" in html
    # steps = 0: one panel, and no charts over training (they would be empty)
    assert "at initialisation; log scale" in html and "training curves" not in html
    pngs = sorted((path.parent / "img").glob("*.png"))
    assert pngs and all(p.read_bytes()[:8] == PNG_MAGIC and p.stat().st_size > 5000 for p in pngs)
    assert "phase diagram" not in html  # several activations: no single diagram


def test_gradient_flow_series_of_the_report_carries_the_prediction(tmp_path):
    runs, metrics = real_runs()
    rep = context.ReportContext(runs, metrics, tmp_path, None, None,
                               gradlab.theory.runs.expected_vs_measured(runs, metrics), None)
    s = plots.gradient_flow_series(metrics, rep.runs, predicted=rep.theory)
    pred = s[s["kind"] == "predicted"]
    assert set(pred["arm"]) == {rep.arm[r] for r in ("tanh-ordered", "relu-glorot", "bn-relu")}
    assert s["panel"].nunique() == 1  # init, early and late are all step 0
    assert rep.predicted_ratio["bn-relu"] > 3 and rep.theory_skipped["dropout"].startswith("dropout")


def test_phase_diagram_for_a_single_activation(tmp_path, monkeypatch):
    runs, metrics = real_runs()
    many = context.ReportContext(runs, metrics, tmp_path, None, None, None, None)
    assert phase_chart_points(many) is None  # tanh and relu
    one = runs[runs["run"] == "tanh-ordered"]
    rep = context.ReportContext(one, metrics, tmp_path, None, None, None, None)
    pts = phase_chart_points(rep)  # one point, but init = "normal": drawn
    assert pts[["sw2", "sb2"]].to_numpy().tolist() == [[pytest.approx(0.64), pytest.approx(0.01)]]
    assert float(pts["label"].iloc[0]) == pytest.approx(10 ** rep.ratio0["tanh-ordered"], rel=0.05)
    monkeypatch.setattr(report_sections, "PHASE_GRID", (8, 4))  # the drawing is under test, not the grid
    html = report.write_report(one, metrics[metrics["run"] == "tanh-ordered"], tmp_path).read_text()
    assert 'alt="phase diagram"' in html and "labelled by the measured" in html


def test_predicted_ratio_is_nan_when_the_first_layer_has_no_prediction():
    theory = pd.DataFrame({"run": ["a", "a", "a", "b", "c"],
                           "layer_index": pd.array([0, 1, 2, None, 0], "Int64"),
                           "predicted": [np.nan, 4.0, 2.0, np.nan, 1.0],
                           "reason": ["", "", "", "dropout", ""]})
    ratio, skipped = context._theory_summary(theory)
    assert np.isnan(ratio["a"]) and ratio["c"] == 1.0 and "b" not in ratio
    assert skipped.to_dict() == {"b": "dropout"}


# -- what a user can get wrong, or name strangely -------------------------------------------------


def test_runs_named_like_mathtext_are_drawn_as_written(tmp_path):
    weird = ["$x^$", "_hidden", "a $b$ c"]
    parts = [make_run(f"r{i}", depth=2, steps=3, hist_steps=(0, 3), activation=a)
             for i, a in enumerate(("relu", "tanh", "sigmoid"))]
    runs = pd.DataFrame([{**p["row"], "name": n} for p, n in zip(parts, weird, strict=True)])
    metrics = pd.concat([p["metrics"] for p in parts], ignore_index=True)
    hists = pd.concat([p["hists"] for p in parts], ignore_index=True)
    path = report.write_report(runs, metrics, tmp_path, hists=hists, now=lambda: FIXED_NOW)  # drawn for real
    html = path.read_text(encoding="utf-8")
    assert all(esc in html for esc in ("$x^$", "_hidden", "a $b$ c"))
    assert len(list((tmp_path / "img").glob("*.png"))) >= 5


def test_group_by_an_unknown_column_names_the_allowed_ones(tmp_path):
    runs, metrics, _ = make_sweep()
    with pytest.raises(ValueError) as err:
        report.write_report(runs, metrics, tmp_path, group_by="activaton")
    msg = str(err.value)
    assert "\n" not in msg and "'activaton'" in msg and "did you mean 'activation'" in msg
    assert "allowed: " in msg and "depth" in msg and "seed" in msg


def test_a_new_report_deletes_only_the_charts_the_last_report_wrote(tmp_path):
    runs, metrics, hists = make_sweep()
    img = tmp_path / "img"
    img.mkdir()
    mine = [img / "01-my-own-chart.png", img / "99-notes.png", img / "logo.png"]
    for p in mine:
        p.write_bytes(b"a user's file")
    with no_pixels():
        report.write_report(runs, metrics, tmp_path, hists=hists)
        first = set(json.loads((img / context.CHARTS_RECORD).read_text()))
        report.write_report(runs[runs["activation"] == "relu"], metrics, tmp_path)
    second = set(json.loads((img / context.CHARTS_RECORD).read_text()))
    assert len(second) < len(first)
    assert {p.name for p in img.glob("*.png")} == second | {"logo.png", "99-notes.png"} | (
        {"01-my-own-chart.png"} - second)
    assert all(p.read_bytes() == b"a user's file" for p in mine if p.name not in second)


def test_a_run_beyond_the_theory_s_range_still_gets_its_report(tmp_path):
    runs, metrics, hists = make_sweep()
    runs = runs.assign(weight_scale=np.where(runs["run"] == "r-tanh6", 1e160, runs["weight_scale"]))
    with no_pixels():
        html = report.write_report(runs, metrics, tmp_path, hists=hists).read_text(encoding="utf-8")
    assert "too large for the mean-field theory" in html
