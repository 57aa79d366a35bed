"""The HTML report: golden file (volatile fields scrubbed), escaping, self-containment, grouping.

Regenerate the golden file after an intended change with
``GRADLAB_UPDATE_GOLDEN=1 pytest tests/test_report.py`` and review its diff.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_plots import make_findings, make_run, make_sweep

import gradlab
from gradlab import report

GOLDEN = Path(__file__).parent / "golden" / "report.html"
FIXED_NOW = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def scrub(text: str) -> str:
    """Blank what changes between machines and versions: image bytes, timestamps, version numbers."""
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "data:image/png;base64,SCRUBBED", text)
    text = re.sub(r'<time datetime="[^"]*">[^<]*</time>', "<time>SCRUBBED</time>", text)
    return re.sub(r"\b(gradlab|matplotlib) [0-9][0-9A-Za-z.+\-]*", r"\1 VERSION", text)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, str]:
    runs, metrics, hists = make_sweep()
    pred = pd.DataFrame({"run": "r-sig4", "layer_index": range(5), "predicted": 0.25 ** np.arange(4, -1, -1)})
    out = tmp_path_factory.mktemp("report")
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
    assert len(pngs) == len(srcs)
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)


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
    path = report.write_report(runs, part["metrics"], tmp_path, findings=findings, title=evil,
                               now=lambda: FIXED_NOW)
    html = path.read_text(encoding="utf-8")
    assert "<script" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "x&lt;1&gt;" in html and "y&amp;2" in html


def test_verdicts_come_from_diagnose_most_severe_first():
    rep = report.ReportContext(*make_sweep()[:2], Path("."), None, make_findings(), None, None)
    assert rep.verdicts.to_dict() == {"r-sig6": "vanishing, saturation", "r-tanh6": "diverged"}
    assert report.ReportContext(*make_sweep()[:2], Path("."), None, None, None, None).verdicts.empty


def test_large_sweep_is_grouped_by_one_axis():
    rows = [{"run": f"r{d}-{a}-{s}", "name": "", "depth": d, "activation": a, "init": "he_normal",
             "weight_scale": s, "seed": 0, "status": "ok"}
            for d in (2, 4, 8, 16, 32) for a in ("relu", "tanh") for s in (0.5, 1.0, 2.0)]
    runs = pd.DataFrame(rows)
    empty = pd.DataFrame(columns=["run", "step", "layer", "metric", "value"])
    rep = report.ReportContext(runs, empty, Path("."), None, None, None, None)
    assert rep.group_by == "activation"  # text axis first, then the fewest values
    assert [t for t, _ in rep.groups] == ["activation = relu", "activation = tanh"]
    assert all(len(arms) == 15 for _, arms in rep.groups)


def test_load_and_report_uses_the_store_loader(tmp_path, monkeypatch):
    part = make_run("only", depth=2, steps=3, hist_steps=(0, 3))
    runs = pd.DataFrame([part["row"]])
    seen = []
    load = lambda d: seen.append(d) or (runs, part["metrics"])  # noqa: E731
    monkeypatch.setattr(gradlab, "load_results", load, raising=False)
    try:
        from gradlab import store
    except ImportError:  # the store is not written yet: load_and_report then reports without histograms
        pass
    else:
        monkeypatch.setattr(store, "load_hists", lambda d: seen.append(d) or part["hists"])
    path = report.load_and_report(tmp_path / "results", tmp_path / "out")
    html = path.read_text(encoding="utf-8")
    assert path == tmp_path / "out" / "index.html" and "gradlab report: results" in html
    assert seen[0] == tmp_path / "results"
    assert 'id="findings"' in html  # diagnosed on the way
