"""Reports: the only writer of PNG and HTML. One self-contained ``index.html`` (images as data URIs).

``write_report`` lays out a summary of the sweep, a table of runs with verdicts, comparison charts,
findings with an evidence chart per kind, and one collapsible section per group of arms; the sections
themselves are in :mod:`gradlab.report.sections`, what they share (:class:`ReportContext`) in
:mod:`gradlab.report.context`; this module assembles the page. matplotlib is imported only while charts
are drawn, so ``import gradlab.report`` stays light.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

import pandas as pd

from gradlab.diagnosis import diagnose
from gradlab.diagnosis.table import READ
from gradlab.records import layers_for
from gradlab.report.context import ReportContext, check_group_by, esc, slug
from gradlab.report.sections import (
    comparisons_section,
    findings_section,
    groups_section,
    runs_section,
    summary_section,
)

REPORTED = (*READ, "accuracy", "act_mean")
"""The metrics a report reads: the diagnosis's, the accuracy curves, and the theory's input scale (a
sweep's frame without the rest is a sixth smaller)."""


def _template(name: str) -> str:
    return resources.files("gradlab.report").joinpath("templates", name).read_text(encoding="utf-8")


def write_report(
    runs: pd.DataFrame,
    metrics: pd.DataFrame,
    out_dir: str | Path,
    *,
    hists: pd.DataFrame | None = None,
    findings: pd.DataFrame | None = None,
    theory: pd.DataFrame | None = None,
    title: str = "gradlab report",
    group_by: str | None = None,
    now: Callable[[], _dt.datetime] | None = None,
    layers: pd.DataFrame | None = None,
) -> Path:
    """Write the charts as PNGs and a self-contained ``index.html`` into ``out_dir``; returns its path.

    Args:
        runs, metrics, hists: the frames of docs/data.md (``hists`` adds per-layer distributions).
        findings: diagnose's findings (``run, kind, layer, step, value, op, threshold, message, fix``).
        theory: predicted gradient profiles ``run, layer_index, predicted`` (optionally ``reason``, "" where
            the theory applies), drawn dashed on the gradient-flow charts and summarised in the runs
            table. None computes them with :func:`gradlab.theory.runs.expected_vs_measured`; pass an empty
            frame to leave theory out.
        group_by: the axis that groups arms into sections (default: chosen when there are many arms).
        now: clock for the timestamp (tests pass a fixed one).
        layers: the layers table (kind and forward position of each recorded layer, docs/data.md) that
            every chart and the theory read; None, or a table that misses a run, infers it from the
            metrics (:func:`gradlab.records.layers_for`).
    """
    import matplotlib

    from gradlab.version import __version__

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    layers = layers_for(metrics, layers)
    if theory is None:
        from gradlab.theory.runs import expected_vs_measured

        theory = expected_vs_measured(runs, metrics, layers=layers)
    rep = ReportContext(runs, metrics, out, hists, findings, theory, group_by, layers)
    anchors = [f"group-{i + 1}-{slug(t)}" for i, (t, _) in enumerate(rep.groups)]
    group_anchor = {r: a for (_, arms), a in zip(rep.groups, anchors, strict=True) for r in rep.runs_of(arms)}
    sections = [
        summary_section(rep),
        runs_section(rep, group_anchor),
        comparisons_section(rep),
        findings_section(rep),
        groups_section(rep, anchors),
    ]
    toc = [
        '<li><a href="#summary">Summary</a></li>',
        '<li><a href="#runs">Runs</a></li>',
        '<li><a href="#comparisons">Comparisons</a></li>',
    ]
    if 'id="which-fix"' in sections[2]:  # a fix sweep's ranking comes first among the comparisons
        toc.insert(2, '<li><a href="#which-fix">Which fix works</a></li>')
    if findings is not None:
        toc.append('<li><a href="#findings">Findings</a></li>')
    toc.append(
        '<li><a href="#groups">Arms in detail</a><ul>'
        + "".join(
            f'<li><a href="#{a}">{esc(t)}</a></li>' for (t, _), a in zip(rep.groups, anchors, strict=True)
        )
        + "</ul></li>"
    )
    stamp = (now or (lambda: _dt.datetime.now(_dt.UTC)))().replace(microsecond=0).isoformat()
    meta = (
        f"{len(rep.runs)} runs · {len(rep.arms)} arms · "
        f'generated <time datetime="{esc(stamp)}">{esc(stamp)}</time>'
    )
    footer = (
        f"gradlab {esc(__version__)} · matplotlib {esc(matplotlib.__version__)} · "
        f"{rep.charts.count} charts"
    )
    page = Template(_template("report.html")).substitute(
        title=esc(title),
        css=_template("report.css"),
        meta=meta,
        toc="<ul>" + "".join(toc) + "</ul>",
        body="\n".join(sections),
        footer=footer,
    )
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


def load_and_report(runs_dir: str | Path, out_dir: str | Path, **kwargs: Any) -> Path:
    """Load a results folder (:func:`gradlab.load_results`, its layers table, histograms if stored),
    diagnose it, report it."""
    from gradlab.experiment import store

    runs, metrics = store.read_results(runs_dir, REPORTED)  # run, layer, metric as categoricals
    check_group_by(runs, kwargs.get("group_by"))  # before the slow part
    if kwargs.get("layers") is None:
        kwargs["layers"] = store.load_layers(runs_dir)
    if "hists" not in kwargs:
        kwargs["hists"] = store.load_hists(runs_dir)
    if "findings" not in kwargs:
        kwargs["findings"] = diagnose(metrics, runs, layers=kwargs["layers"])
    kwargs.setdefault("title", f"gradlab report: {Path(runs_dir).name}")
    return write_report(runs, metrics, out_dir, **kwargs)
