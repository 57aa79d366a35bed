"""Reports: the only writer of PNG and HTML. One self-contained ``index.html`` (images as data URIs).

``write_report`` lays out a summary of the sweep, a table of runs with verdicts, comparison charts,
findings with an evidence chart per kind, and one collapsible section per group of arms. Every
string taken from configs, run names or findings is HTML-escaped. matplotlib is imported only while
charts are drawn, so ``import gradlab.report`` stays light.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import re
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from gradlab.plots_common import (
    arm_labels,
    config_columns,
    format_value,
    natural_key,
    varying_axes,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 100
MAX_ARMS_PER_CHART = 12
"""More arms than this in one chart stop being readable: the report moves them to group sections."""
FEW_ARMS = 3
"""With at most this many arms, every arm gets its own section; above it, arms are grouped by an axis."""
KIND_ORDER = ("diverged", "failed", "exploding", "vanishing", "saturation", "dead_units", "update_ratio",
              "no_data", "healthy")
"""Finding kinds, most serious first (as ``gradlab.diagnose.KINDS``)."""
INFO_KINDS = ("healthy", "no_data")
"""Kinds that report a state, not a problem: shown as verdicts, not listed as findings."""
NONE = "—"


def esc(value: Any) -> str:
    """HTML-escaped text of any value (quotes too)."""
    return html.escape(value if isinstance(value, str) else format_value(value), quote=True)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-")[:40] or "x"


def _sci(x: float) -> str:
    if x is None or np.isnan(x):
        return NONE
    if not np.isfinite(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.3g}" if 1e-3 <= abs(x) < 1e4 or x == 0 else f"{x:.2e}"


def run_verdicts(findings: pd.DataFrame | None) -> pd.Series:
    """One short verdict per run from a findings frame: its finding kinds, most severe first."""
    if findings is None or len(findings) == 0:
        return pd.Series(dtype=object, name="verdict")
    rank = {k: i for i, k in enumerate(KIND_ORDER)}
    out = {}
    for run, g in findings.groupby(findings["run"].astype(str), sort=True):
        kinds = sorted(dict.fromkeys(g["kind"].astype(str)), key=lambda k: (rank.get(k, len(rank)), k))
        out[run] = ", ".join(kinds)
    return pd.Series(out, name="verdict", dtype=object).rename_axis("run")


class _Charts:
    """Saves each Figure as a PNG in ``out_dir`` and returns its <figure> HTML with a data URI."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir / "img"
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for old in self.out_dir.glob("[0-9][0-9]*-*.png"):  # a previous report's charts
            old.unlink()
        self.count = 0

    def add(self, fig: Figure, name: str, caption: str = "") -> str:
        self.count += 1
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
        data = buf.getvalue()
        fname = f"{self.count:02d}-{_slug(name)}.png"
        (self.out_dir / fname).write_bytes(data)
        uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
        return f'<figure><img src="{uri}" alt="{esc(name)}" loading="lazy">{cap}</figure>'


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], num: Sequence[int] = ()) -> str:
    """An HTML table: ``header`` plain text (escaped here), ``rows`` ready HTML cells, column 0 an id."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    cls = {i: ' class="num"' for i in num} | {0: ' class="id"'}
    body = "\n".join(
        "<tr>" + "".join(f"<td{cls.get(i, '')}>{c}</td>" for i, c in enumerate(r)) + "</tr>" for r in rows
    )
    return (
        f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n'
        "</tbody></table></div>"
    )


def _status(s: str) -> str:
    return f'<span class="status {_slug(s)}">{esc(s)}</span>'


def _choose_group_axis(runs: pd.DataFrame, axes: list[str]) -> str | None:
    """A text axis first (activation, init…), else the axis with the fewest values (≥ 2)."""
    if not axes:
        return None

    def key(c: str) -> tuple:
        return (
            pd.api.types.is_numeric_dtype(runs[c]) or pd.api.types.is_bool_dtype(runs[c]),
            runs[c].astype(str).nunique(),
            axes.index(c),
        )

    return min(axes, key=key)


class _Report:
    """Everything the sections share: frames, arm labels and colours, per-run numbers, the chart sink."""

    def __init__(
        self,
        runs: pd.DataFrame,
        metrics: pd.DataFrame,
        out_dir: Path,
        hists: pd.DataFrame | None,
        findings: pd.DataFrame | None,
        theory: pd.DataFrame | None,
        group_by: str | None,
    ) -> None:
        from gradlab import plots

        self.plots = plots
        self.runs = runs.assign(run=runs["run"].astype(str)).reset_index(drop=True)
        self.metrics, self.hists, self.findings, self.theory = metrics, hists, findings, theory
        self.charts = _Charts(out_dir)
        self.axes = varying_axes(self.runs)
        self.arm = arm_labels(self.runs)
        self.arms = sorted(self.arm.unique(), key=natural_key)
        self.colors = plots.arm_colors(self.arms)
        self.status = (
            self.runs.set_index("run")["status"].astype(str)
            if "status" in self.runs
            else pd.Series("ok", index=self.runs["run"])
        )
        self.ratio0 = plots.gradient_ratio(metrics, step=0)
        self.ratio_end = plots.gradient_ratio(metrics, step="last")
        self.verdicts = run_verdicts(findings)
        if group_by is None and len(self.arms) > FEW_ARMS:
            group_by = _choose_group_axis(self.runs, self.axes)
        self.group_by = group_by
        self.groups = self._groups()

    def _groups(self) -> list[tuple[str, list[str]]]:
        """(title, arms) per section: one per arm when few, else one per value of ``group_by``."""
        if not self.group_by:
            return [(a, [a]) for a in self.arms]
        col = self.runs[self.group_by]
        out = []
        for value in sorted(col.dropna().unique(), key=lambda v: natural_key(format_value(v))):
            ids = self.runs.loc[col == value, "run"]
            arms = sorted(self.arm[ids].unique(), key=natural_key)
            out.append((f"{self.group_by} = {format_value(value)}", arms))
        return out

    def runs_of(self, arms: Sequence[str]) -> list[str]:
        return [r for r in self.runs["run"] if self.arm[r] in set(arms)]

    def verdict_html(self, run: str) -> str:
        if run in self.verdicts.index:
            v = str(self.verdicts[run])
            cls = "verdict" if v not in INFO_KINDS else f"verdict {v}"
            return f'<span class="{cls}">{esc(v)}</span>'
        if self.findings is not None and self.status.get(run) != "failed":
            return '<span class="verdict none">no finding</span>'
        return f'<span class="verdict none">{NONE}</span>'

    # -- charts ------------------------------------------------------------------------------
    def flow(self, arms: Sequence[str], name: str, caption: str = "") -> str:
        p = self.plots
        ids = self.runs_of(arms[:MAX_ARMS_PER_CHART])
        s = p.gradient_flow_series(self.metrics, self.runs, run_ids=ids, predicted=self.theory)
        if s.empty:
            return ""
        note = f" Showing {MAX_ARMS_PER_CHART} of {len(arms)} arms." if len(arms) > MAX_ARMS_PER_CHART else ""
        caption = (
            caption
            or "Gradient norm of each dense layer at initialisation, early and late in training; "
            "log scale, one line per arm (band: min–max over seeds)."
        ) + note
        if self.theory is not None:
            caption += " Dashed: mean-field prediction, anchored at the output layer."
        return self.charts.add(p.plot_gradient_flow(s, colors=self.colors), name, caption)

    def curves(self, run_ids: Sequence[str], name: str) -> str:
        p = self.plots
        s = p.training_curves_series(self.metrics, self.runs, run_ids=run_ids)
        if s["curves"].empty:
            return ""
        return self.charts.add(
            p.plot_training_curves(s, colors=self.colors),
            name,
            "Training loss (log scale) and accuracy per run; × marks a divergence.",
        )

    def saturation(
        self, run_ids: Sequence[str], name: str, which: Sequence[str] = ("saturation", "dead_frac")
    ) -> str:
        p = self.plots
        s = p.saturation_series(self.metrics, self.runs, which=which, run_ids=run_ids)
        if s.empty:
            return ""
        return self.charts.add(
            p.plot_saturation(s),
            name,
            "Fraction of saturated outputs (bounded activations) or dead units (ReLU family) "
            "per layer over training; colour runs from the input layer to the output layer.",
        )

    def heatmap(self, run: str, name: str) -> str:
        p = self.plots
        panels = {"log10 ‖∂L/∂y‖ (dense layers)": p.heatmap_series(self.metrics, run)}
        for metric, title in (("saturation", "saturated fraction"), ("dead_frac", "dead-unit fraction")):
            h = p.heatmap_series(self.metrics, run, metric=metric)
            if not h.empty:
                panels[title] = h
                break
        if panels["log10 ‖∂L/∂y‖ (dense layers)"].empty:
            return ""
        fig = p.plot_heatmap(panels, title=f"{self.arm[run]}  (run {run})")
        return self.charts.add(fig, name, f"Layer × step view of run {run}: gradient norm and unit health.")

    def distributions(self, run: str, name: str) -> str:
        if self.hists is None or len(self.hists) == 0:
            return ""
        p = self.plots
        s = p.distribution_series(self.hists, run)
        if s.empty:
            return ""
        fig = p.plot_distributions(s, title=f"Distributions per layer: {self.arm[run]} (run {run})")
        return self.charts.add(
            fig,
            name,
            "Fraction of entries per log10 magnitude (Glorot & Bengio 2010, "
            "Fig. 6–7): activation outputs and the gradient ∂L/∂y reaching each dense layer.",
        )

    def representative(self, arms: Sequence[str]) -> str | None:
        """The run with the most extreme first/last gradient ratio among ``arms`` (first seed per arm)."""
        ids = [r for r in self.runs_of(arms) if self.status.get(r) != "failed"]
        ok = [r for r in ids if self.status.get(r) == "ok"]
        ids = ok or ids  # a diverged run's few steps make a poor layer × step view
        if not ids:
            return None
        r0 = self.ratio0.reindex(ids).abs().fillna(-1)
        return str(r0.idxmax())


def _summary(rep: _Report) -> str:
    counts = rep.status.value_counts()
    cards = [
        f'<div class="card"><b>{len(rep.runs)}</b>runs</div>',
        f'<div class="card"><b>{len(rep.arms)}</b>arms</div>',
    ]
    for s in ("ok", "diverged", "failed"):
        cards.append(f'<div class="card {s}"><b>{int(counts.get(s, 0))}</b>{s}</div>')
    axes = "".join(
        f"<dt>{esc(a)}</dt><dd>{esc(', '.join(format_value(v) for v in _values(rep.runs, a)))}</dd>"
        for a in rep.axes
    )
    fixed = [c for c in config_columns(rep.runs) if c not in rep.axes and c != "name"]
    fixed_txt = " · ".join(f"{c}={format_value(rep.runs[c].iloc[0])}" for c in fixed) if len(rep.runs) else ""
    parts = ['<section id="summary"><h2>Summary</h2>', f'<div class="cards">{"".join(cards)}</div>']
    parts.append(
        f'<h3>Axes that vary</h3><dl class="axes">{axes}</dl>'
        if axes
        else '<p class="note">No configuration axis varies across these runs.</p>'
    )
    if fixed_txt:
        parts.append(
            f"<details><summary>Fixed settings</summary><p><code>{esc(fixed_txt)}</code></p></details>"
        )
    return "\n".join(parts) + "</section>"


def _values(runs: pd.DataFrame, col: str) -> list:
    vals = runs[col].dropna().unique().tolist()
    try:
        return sorted(vals)
    except TypeError:
        return sorted(vals, key=lambda v: natural_key(format_value(v)))


def _runs_table(rep: _Report, group_anchor: dict[str, str]) -> str:
    header = [
        "run",
        *(["arm"] if "name" in rep.runs and rep.runs["name"].fillna("").astype(str).ne("").any() else []),
        *rep.axes,
        "status",
        "diverged at",
        "final loss",
        "grad ratio @init",
        "@end",
        "verdict",
    ]
    rows = []
    for _, r in rep.runs.iterrows():
        run = r["run"]
        link = f'<a href="#{group_anchor[run]}">{esc(run)}</a>' if run in group_anchor else esc(run)
        cells = [f'<span id="run-{_slug(run)}">{link}</span>']
        if "arm" in header:
            cells.append(esc(rep.arm[run]))
        cells += [esc(r[a]) for a in rep.axes]
        dstep = r.get("diverged_step", pd.NA)
        cells += [
            _status(rep.status.get(run, "")),
            NONE if pd.isna(dstep) else esc(int(dstep)),
            _sci(r.get("final_loss", np.nan)),
            _sci(10 ** rep.ratio0.get(run, np.nan)),
            _sci(10 ** rep.ratio_end.get(run, np.nan)),
            rep.verdict_html(run),
        ]
        rows.append(cells)
    n = len(header)
    table = _table(header, rows, num={n - 5, n - 4, n - 3, n - 2})
    failed = rep.runs[rep.status.reindex(rep.runs["run"]).to_numpy() == "failed"]
    errors = ""
    if len(failed) and "error" in failed:
        items = "".join(
            f"<h3>{esc(r['run'])}</h3><pre>{esc(_tail(r['error']))}</pre>" for _, r in failed.iterrows()
        )
        errors = f"<details><summary>Errors of the {len(failed)} failed run(s)</summary>{items}</details>"
    note = (
        '<p class="note">grad ratio: ‖∂L/∂y‖ reaching the first dense layer over the one at the output '
        "layer, at initialisation and at the last finite step; ≪ 1 vanishes, ≫ 1 explodes.</p>"
    )
    return f'<section id="runs"><h2>Runs</h2>{note}{table}{errors}</section>'


def _tail(text: Any, lines: int = 25) -> str:
    return "\n".join(str(text if isinstance(text, str) else "").splitlines()[-lines:])


def _comparisons(rep: _Report) -> str:
    p, parts = rep.plots, []
    if rep.axes:
        rows, cols = _matrix_axes(rep)
        runs = rep.runs.assign(arm=rep.runs["run"].map(rep.arm))
        m = p.sweep_matrix_series(runs, rep.metrics, rows=rows, cols=cols, step=0)
        others = [a for a in rep.axes if a not in (rows, cols)] if rows != "arm" else []
        cap = (
            "log10 of ‖∂L/∂y‖ at the first dense layer over the output layer at initialisation: "
            "blue vanishes, red explodes, white is balanced; hatched cells hold diverged or failed runs."
        )
        if others:
            cap += f" Cells take the median over {', '.join(others)}."
        parts.append(rep.charts.add(p.plot_sweep_matrix(m), "sweep matrix", cap))
    if len(rep.arms) <= MAX_ARMS_PER_CHART:
        parts.append(rep.flow(rep.arms, "gradient flow"))
        parts.append(rep.curves(list(rep.runs["run"]), "training curves"))
    else:
        parts.append(
            f'<p class="note">{len(rep.arms)} arms: per-arm charts are in the group sections below.</p>'
        )
    clip_cols = [c for c in ("clip_norm", "clip_value") if c in rep.runs]
    clipped = (
        rep.runs[(rep.runs[clip_cols].fillna(0).astype(float) > 0).any(axis=1)] if clip_cols else rep.runs[:0]
    )
    if len(clipped):
        arms = sorted(rep.arm[clipped["run"]].unique(), key=natural_key)[:MAX_ARMS_PER_CHART]
        ids = rep.runs_of(arms if len(rep.arms) > MAX_ARMS_PER_CHART else rep.arms)
        s = p.clipping_series(rep.metrics, rep.runs, run_ids=ids)
        parts.append(
            rep.charts.add(
                p.plot_clipping(s, colors=rep.colors),
                "clipping",
                "Global gradient norm before and after clipping, and how often clipping fired.",
            )
        )
    phase = _phase(rep)
    if phase:
        parts.append(phase)
    return '<section id="comparisons"><h2>Comparisons</h2>' + "\n".join(x for x in parts if x) + "</section>"


def _matrix_axes(rep: _Report) -> tuple[str, str | None]:
    """Rows and columns of the sweep matrix: the pair of axes that fills most of its grid.

    A sweep of variants rather than a grid (activation and init changed together) fills few cells
    of any pair; then the rows are the arms themselves, in one column.
    """
    if len(rep.axes) == 1:
        return rep.axes[0], None
    best, best_fill = None, 0.0
    for i, a in enumerate(rep.axes):
        for b in rep.axes[i + 1 :]:
            na, nb = rep.runs[a].astype(str).nunique(), rep.runs[b].astype(str).nunique()
            fill = len(rep.runs[[a, b]].astype(str).drop_duplicates()) / (na * nb)
            if fill > best_fill:
                best, best_fill = (a, b), fill
    if best is None or best_fill < 0.75:
        return "arm", None
    a, b = best
    return (b, a) if rep.runs[a].astype(str).nunique() < rep.runs[b].astype(str).nunique() else (a, b)


def _phase(rep: _Report) -> str:
    """The σ_w² × σ_b² phase diagram when theory is given and runs use the mean-field ``normal`` init."""
    need = {"init", "activation", "weight_scale", "bias_scale"}
    if rep.theory is None or not need <= set(rep.runs.columns):
        return ""
    mf = rep.runs[rep.runs["init"].astype(str) == "normal"]
    if mf.empty or mf["activation"].nunique() != 1:
        return ""
    try:
        from gradlab.theory import chi_1
    except ImportError:
        return ""
    act = str(mf["activation"].iloc[0])
    sw2_pts, sb2_pts = mf["weight_scale"].astype(float) ** 2, mf["bias_scale"].astype(float) ** 2
    sw2 = np.linspace(0.5 * min(1.0, sw2_pts.min()), max(4.0, 1.2 * sw2_pts.max()), 28)
    sb2 = np.linspace(0.0, max(0.25, 1.2 * sb2_pts.max()), 12)
    chi = np.array([[chi_1(a, b, act) for a in sw2] for b in sb2])
    pts = pd.DataFrame(
        {
            "sw2": sw2_pts.to_numpy(),
            "sb2": sb2_pts.to_numpy(),
            "label": [format_value(d) if "depth" in mf else "" for d in mf.get("depth", mf["run"])],
        }
    )
    fig = rep.plots.plot_phase_diagram(sw2, sb2, chi, None, pts.drop_duplicates(), activation=act)
    return rep.charts.add(
        fig,
        "phase diagram",
        "Mean-field order-to-chaos diagram: runs with init=normal placed "
        "at (σ_w², σ_b²), labelled by depth; the black line is χ₁ = 1.",
    )


def _findings(rep: _Report) -> str:
    f = rep.findings
    if f is None:
        return ""
    f = f.assign(run=f["run"].astype(str), kind=f["kind"].astype(str))
    info = f[f["kind"].isin(INFO_KINDS)]
    f = f[~f["kind"].isin(INFO_KINDS)]
    parts = ['<section id="findings"><h2>Findings</h2>']
    if len(info):
        counts = info.groupby("kind")["run"].nunique()
        text = ", ".join(f"{int(counts[k])} run{'s' if counts[k] != 1 else ''} {k.replace('_', ' ')}"
                         for k in INFO_KINDS if k in counts)
        parts.append(f'<p class="note">{esc(text)}.</p>')
    if f.empty:
        parts.append("<p>No problem found in any run.</p>")
    rank = {k: i for i, k in enumerate(KIND_ORDER)}
    for kind in sorted(f["kind"].unique(), key=lambda k: (rank.get(k, len(rank)), k)):
        g = f[f["kind"] == kind]
        rows = [_finding_row(rep, h, len(h)) for h in _per_run(g)]
        n = g["run"].nunique()
        parts.append(f'<h3 id="finding-{_slug(kind)}">{esc(kind)} '
                     f'<span class="note">({n} run{"s" if n != 1 else ""})</span></h3>')
        header = ["run", "arm", "layer", "since step", "value", "threshold", "message", "fix"]
        parts.append(_table(header, rows, num={3, 4, 5}))
        parts.append(_evidence(rep, kind, list(dict.fromkeys(g["run"]))))
    return "\n".join(parts) + "</section>"


def _per_run(g: pd.DataFrame) -> list[pd.DataFrame]:
    """A kind's findings split per (run, rule), earliest step first: one table row each."""
    cols = [c for c in ("run", "rule") if c in g]
    order = g.assign(_s=pd.to_numeric(g["step"], errors="coerce") if "step" in g else 0)
    order = order.sort_values("_s", kind="stable", na_position="last")
    return [h for _, h in order.groupby(cols, sort=False)]


def _finding_row(rep: _Report, h: pd.DataFrame, n: int) -> list[str]:
    """One row for a run's findings of one rule: the earliest, and how many more layers it concerns."""
    r = h.iloc[0]
    value = _sci(r.get("value", np.nan)) if _is_num(r.get("value")) else esc(r.get("value", ""))
    thr = r.get("threshold")
    thr = f"{esc(r.get('op', ''))} {_sci(thr)}" if _is_num(thr) and np.isfinite(thr) else NONE
    layer = r.get("layer", "")
    if not isinstance(layer, str) or not layer:
        layer = r.get("layers", "")
    step = r.get("step", r.get("since_step", pd.NA))
    if isinstance(layer, str) and len(layer) > 40:
        names = layer.split(", ")
        layer = f"{names[0]} … {names[-1]} ({len(names)} layers)"
    if n > 1:
        layer = f"{layer or NONE} (+{n - 1} more layer{'s' if n > 2 else ''})"
    return [
        f'<a href="#run-{_slug(r["run"])}">{esc(r["run"])}</a>',
        esc(rep.arm.get(r["run"], "")),
        esc(layer if isinstance(layer, str) and layer else NONE),
        NONE if step is None or pd.isna(step) else esc(int(step)),
        value,
        thr,
        esc(r.get("message", "")),
        esc(r.get("fix", "")),
    ]


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def _evidence(rep: _Report, kind: str, run_ids: list[str]) -> str:
    """The chart that shows a finding kind best, for (at most a dozen arms of) the runs it flags."""
    arms = sorted(rep.arm[run_ids].unique(), key=natural_key)[:MAX_ARMS_PER_CHART]
    one_per_arm = [next(r for r in run_ids if rep.arm[r] == a) for a in arms]
    name = f"evidence {kind}"
    if kind in ("vanishing", "exploding"):
        if set(arms) == set(rep.arms):
            return (
                '<p class="note">Evidence: the gradient-flow chart under '
                '<a href="#comparisons">Comparisons</a>.</p>'
            )
        return rep.flow(arms, name)
    if kind == "saturation":
        return rep.saturation(one_per_arm, name, which=("saturation",))
    if kind == "dead_units":
        return rep.saturation(one_per_arm, name, which=("dead_frac_window", "dead_frac"))
    if kind == "update_ratio":
        p = rep.plots
        one_per_arm.sort(key=lambda r: rep.status.get(r) != "ok")
        h = p.heatmap_series(rep.metrics, one_per_arm[0], metric="update_ratio", kinds=("dense",), log=True)
        if h.empty:
            return ""
        fig = p.plot_heatmap({"log10 ‖ΔW‖/‖W‖": h}, title=f"{rep.arm[one_per_arm[0]]} (run {one_per_arm[0]})")
        return rep.charts.add(fig, name, "Update-to-weight ratio per dense layer over training.")
    if kind in ("failed", *INFO_KINDS):
        return ""
    return rep.curves([r for r in run_ids if rep.arm[r] in arms], name)


def _groups(rep: _Report, anchors: list[str]) -> str:
    parts = ['<section id="groups"><h2>Arms in detail</h2>']
    if rep.group_by:
        parts.append(f'<p class="note">{len(rep.arms)} arms grouped by <b>{esc(rep.group_by)}</b>.</p>')
    open_attr = " open" if len(rep.groups) <= 4 else ""
    for (title, arms), anchor in zip(rep.groups, anchors, strict=True):
        ids = rep.runs_of(arms)
        counts = rep.status.reindex(ids).value_counts()
        count = ", ".join(f"{int(counts[s])} {s}" for s in ("ok", "diverged", "failed") if s in counts)
        body = []
        if len(rep.arms) > MAX_ARMS_PER_CHART:  # otherwise the comparisons already show every arm
            body.append(rep.flow(arms, f"{title} flow"))
            body.append(rep.curves(rep.runs_of(arms[:MAX_ARMS_PER_CHART]), f"{title} curves"))
        firsts = [
            next(r for r in ids if rep.arm[r] == a and rep.status.get(r) != "failed")
            for a in arms
            if any(rep.arm[r] == a and rep.status.get(r) != "failed" for r in ids)
        ]
        body.append(rep.saturation(firsts[:6], f"{title} saturation"))
        rep_run = rep.representative(arms)
        if rep_run is not None:
            body.append(rep.heatmap(rep_run, f"{title} heatmap"))
            body.append(rep.distributions(rep_run, f"{title} distributions"))
        body = [b for b in body if b] or ['<p class="note">No metrics were recorded for these runs.</p>']
        parts.append(
            f'<details class="group" id="{anchor}"{open_attr}><summary>{esc(title)} '
            f'<span class="count">({len(arms)} arm{"s" if len(arms) != 1 else ""}, {len(ids)} runs: '
            f"{esc(count)})</span></summary>\n" + "\n".join(body) + "</details>"
        )
    return "\n".join(parts) + "</section>"


def _template(name: str) -> str:
    return resources.files("gradlab").joinpath("templates", name).read_text(encoding="utf-8")


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
) -> Path:
    """Write the charts as PNGs and a self-contained ``index.html`` into ``out_dir``; returns its path.

    Args:
        runs, metrics, hists: the frames of docs/data.md (``hists`` adds per-layer distributions).
        findings: diagnose's findings (``run, kind, layer, step, value, op, threshold, message, fix``).
        theory: predicted gradient profiles ``run, layer_index, predicted``, drawn dashed on gradient flow.
        group_by: the axis that groups arms into sections (default: chosen when there are many arms).
        now: clock for the timestamp (tests pass a fixed one).
    """
    import matplotlib

    import gradlab

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rep = _Report(runs, metrics, out, hists, findings, theory, group_by)
    anchors = [f"group-{i + 1}-{_slug(t)}" for i, (t, _) in enumerate(rep.groups)]
    group_anchor = {r: a for (_, arms), a in zip(rep.groups, anchors, strict=True) for r in rep.runs_of(arms)}
    sections = [
        _summary(rep),
        _runs_table(rep, group_anchor),
        _comparisons(rep),
        _findings(rep),
        _groups(rep, anchors),
    ]
    toc = [
        '<li><a href="#summary">Summary</a></li>',
        '<li><a href="#runs">Runs</a></li>',
        '<li><a href="#comparisons">Comparisons</a></li>',
    ]
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
        f"gradlab {esc(gradlab.__version__)} · matplotlib {esc(matplotlib.__version__)} · "
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
    """Load a results folder (:func:`gradlab.load_results`, histograms if stored), diagnose it, report it."""
    import gradlab

    loader = getattr(gradlab, "load_results", None)
    if loader is None:
        from gradlab.store import load_results as loader  # not exported yet
    runs, metrics = loader(runs_dir)
    if "hists" not in kwargs:
        try:
            from gradlab.store import load_hists
        except ImportError:
            load_hists = None
        kwargs["hists"] = load_hists(runs_dir) if load_hists is not None else None
    if "findings" not in kwargs:
        try:
            from gradlab.diagnose import diagnose
        except ImportError:
            diagnose = None
        kwargs["findings"] = diagnose(metrics, runs) if diagnose is not None else None
    kwargs.setdefault("title", f"gradlab report: {Path(runs_dir).name}")
    return write_report(runs, metrics, out_dir, **kwargs)
