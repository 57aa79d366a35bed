"""The HTML sections of a report: summary, runs table, comparisons, findings, arms in detail.

Each ``*_section`` function takes the :class:`gradlab.report.context.ReportContext` (frames, arm labels and
colours, the chart sink) and returns one ``<section>`` of HTML. Every string taken from configs, run
names or findings goes through :func:`esc`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from gradlab import plots
from gradlab.diagnosis import KINDS
from gradlab.plots.common import axis_values, config_columns, format_value, natural_key
from gradlab.records import WEIGHTED_KINDS
from gradlab.report.arm_table import arm_table
from gradlab.report.context import INFO_KINDS, MAX_ARMS_PER_CHART, NONE, ReportContext, esc, sci, slug
from gradlab.report.fixes import fix_section, outcome_matrices
from gradlab.report.tables import table

PHASE_GRID = (40, 16)
"""(σ_w², σ_b²) points of the phase diagram's χ₁ grid: ~1 s of quadrature."""


def status_badge(s: str) -> str:
    """A run status (ok, diverged, failed) as a coloured badge."""
    return f'<span class="status {slug(s)}">{esc(s)}</span>'


def summary_section(rep: ReportContext) -> str:
    """Counts of runs, arms and statuses, the axes that vary and the settings that do not."""
    counts = rep.status.value_counts()
    cards = [
        f'<div class="card"><b>{len(rep.runs)}</b>runs</div>',
        f'<div class="card"><b>{len(rep.arms)}</b>arms</div>',
    ]
    for s in ("ok", "diverged", "failed"):
        cards.append(f'<div class="card {s}"><b>{int(counts.get(s, 0))}</b>{s}</div>')
    axes = "".join(
        f"<dt>{esc(a)}</dt><dd>{esc(', '.join(format_value(v) for v in axis_values(rep.runs, a)))}</dd>"
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


def runs_section(rep: ReportContext, group_anchor: dict[str, str]) -> str:
    """One row per run: config axes, status, gradient ratios, prediction, verdict; errors of failed runs."""
    header = [
        "run",
        *(["arm"] if "name" in rep.runs and rep.runs["name"].fillna("").astype(str).ne("").any() else []),
        *rep.axes,
        "status",
        "diverged at",
        "final loss",
        "grad ratio @init",
        "@end",
        *(["predicted @init"] if rep.theory is not None else []),
        "verdict",
    ]
    rows = []
    for _, r in rep.runs.iterrows():
        run = r["run"]
        link = f'<a href="#{group_anchor[run]}">{esc(run)}</a>' if run in group_anchor else esc(run)
        cells = [f'<span id="run-{slug(run)}">{link}</span>']
        if "arm" in header:
            cells.append(esc(rep.arm[run]))
        cells += [esc(r[a]) for a in rep.axes]
        dstep = r.get("diverged_step", pd.NA)
        cells += [
            status_badge(rep.status.get(run, "")),
            NONE if pd.isna(dstep) else esc(int(dstep)),
            sci(r.get("final_loss", np.nan)),
            sci(10 ** rep.ratio0.get(run, np.nan)),
            sci(10 ** rep.ratio_end.get(run, np.nan)),
        ]
        if rep.theory is not None:
            why, pred = rep.theory_skipped.get(run), rep.predicted_ratio.get(run)
            if not why and pred is not None and not np.isfinite(pred):
                why = "no prediction for the first dense layer (see gradlab.theory.runs)"
            cells.append(f'<span title="{esc(why)}">{NONE}</span>' if why else sci(pred))
        cells.append(rep.verdict_html(run))
        rows.append(cells)
    n = len(header)
    tbl = table(header, rows, num=set(range(n - 5 - (rep.theory is not None), n - 1)))
    failed = rep.runs[rep.status.reindex(rep.runs["run"]).to_numpy() == "failed"]
    errors = ""
    if len(failed) and "error" in failed:
        items = "".join(
            f"<h3>{esc(r['run'])}</h3><pre>{esc(_tail(r['error']))}</pre>" for _, r in failed.iterrows()
        )
        errors = f"<details><summary>Errors of the {len(failed)} failed run(s)</summary>{items}</details>"
    note = (
        '<p class="note">grad ratio: ‖∂L/∂y‖ reaching the first dense layer over the one at the output '
        "layer, at initialisation and at the last finite step; ≪ 1 vanishes, ≫ 1 explodes."
        + (
            " predicted: its mean-field value at initialisation (gradlab.theory.expected_vs_measured); "
            f"{NONE} where the theory does not apply (hover for why)."
            if rep.theory is not None
            else ""
        )
        + "</p>"
    )
    per_arm = arm_table(rep, group_anchor)  # a large sweep: its arms first, every run below
    tbl = f"{per_arm}<h3>Every run</h3>{tbl}" if per_arm else tbl
    return f'<section id="runs"><h2>Runs</h2>{note}{tbl}{errors}</section>'


def _tail(text: Any, lines: int = 25) -> str:
    return "\n".join(str(text if isinstance(text, str) else "").splitlines()[-lines:])


def comparisons_section(rep: ReportContext) -> str:
    """Charts across arms: sweep matrix, gradient flow, training curves, clipping, phase diagram (after
    the "Which fix works" section of a fix sweep)."""
    parts = []
    if rep.axes:
        rows, cols = _matrix_axes(rep)
        runs = rep.runs.assign(arm=rep.runs["run"].map(rep.arm))
        m = plots.sweep_matrix_series(runs, rep.metrics, rows=rows, cols=cols, summary=rep.ratio_at_init)
        others = [a for a in rep.axes if a not in (rows, cols)] if rows != "arm" else []
        cap = (
            "log10 of ‖∂L/∂y‖ at the first dense layer over the output layer at initialisation: "
            "blue vanishes, red explodes, white is balanced; hatched cells hold diverged or failed runs."
        )
        if others:
            cap += f" Cells take the median over {', '.join(others)}."
        parts.append(rep.charts.add(plots.plot_sweep_matrix(m), "sweep matrix", cap))
        parts.extend(outcome_matrices(rep, runs, rows, cols))
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
        s = plots.clipping_series(rep.net, rep.runs, run_ids=ids)
        parts.append(
            rep.charts.add(
                plots.plot_clipping(s, colors=rep.colors),
                "clipping",
                "Global gradient norm before and after clipping, and how often clipping fired.",
            )
        )
    parts.append(_theory_note(rep))
    parts.append(_phase(rep))
    body = '<section id="comparisons"><h2>Comparisons</h2>' + "\n".join(x for x in parts if x) + "</section>"
    return fix_section(rep) + body


def _matrix_axes(rep: ReportContext) -> tuple[str, str | None]:
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


def _theory_note(rep: ReportContext) -> str:
    """How many runs got a mean-field prediction, and why the others did not."""
    if rep.theory is None:
        return ""
    n_pred, n = len(rep.predicted_ratio), len(rep.runs)
    why = rep.theory_skipped.value_counts()
    skipped = "; ".join(f"{esc(r)} ({k} run{'s' if k != 1 else ''})" for r, k in why.items())
    return (
        f'<p class="note">Mean-field prediction for {n_pred} of {n} runs'
        + (f". Not predicted: {skipped}" if skipped else "")
        + ".</p>"
    )


def _phase(rep: ReportContext) -> str:
    """The σ_w² × σ_b² phase diagram with the runs on it (see :func:`phase_chart_points`)."""
    pts = phase_chart_points(rep)
    if pts is None:
        return ""
    from gradlab.theory.meanfield import phase_diagram

    act = str(pts["activation"].iloc[0])
    lo, hi = min(0.5, pts["sw2"].min() / 1.5), max(4.0, pts["sw2"].max() * 1.3)
    log_x = hi / lo > 12
    sw2, sb2, chi, crit = phase_diagram(act, (lo, hi), (0.0, max(0.25, 1.2 * pts["sb2"].max())), n=PHASE_GRID,
                                        log_sw2=log_x)
    fig = plots.plot_phase_diagram(sw2, sb2, chi, crit, pts, activation=act, log_x=log_x)
    what = "depth" if "depth" in pts else "the measured ‖∂L/∂y‖ ratio at init"
    return rep.charts.add(
        fig,
        "phase diagram",
        "Mean-field order-to-chaos diagram (Poole et al. 2016; Schoenholz et al. 2017): colour is ln χ₁ "
        "(blue: gradients shrink layer by layer, red: they grow); the black line is χ₁ = 1. Points: the "
        f"runs at their (σ_w², σ_b²), labelled by {what}.",
    )


def phase_chart_points(rep: ReportContext) -> pd.DataFrame | None:
    """Runs to place on a phase diagram (``sw2, sb2, label, activation``), or None when there is none to draw.

    Drawn when the plain Dense → φ runs (:func:`gradlab.theory.runs.phase_points`) share one activation
    and either sit at two or more (σ_w², σ_b²) points or all use ``init="normal"`` (the mean-field
    parametrisation, where one point still says how far the network is from the edge). Labels: depth when
    it varies (then the frame has a ``depth`` column), else the measured first-over-output gradient ratio
    at init (geometric mean over seeds).
    """
    from gradlab.theory.runs import phase_points

    pts = phase_points(rep.runs)
    if pts.empty or pts["activation"].nunique() != 1:
        return None
    init = rep.runs.set_index("run").loc[pts["run"], "init"].astype(str)
    if len(pts[["sw2", "sb2"]].drop_duplicates()) < 2 and not (init == "normal").all():
        return None
    if pts["depth"].nunique() > 1:
        pts = pts.assign(label=[f"d={d}" for d in pts["depth"]])
        return pts.drop_duplicates(["sw2", "sb2", "label"])
    pts = pts.assign(log_ratio=pts["run"].map(rep.ratio0).astype(float))
    pts = pts.groupby(["sw2", "sb2", "activation"], as_index=False)["log_ratio"].mean()
    return pts.assign(label=[f"{10**v:.2g}" if np.isfinite(v) else "" for v in pts["log_ratio"]])


def findings_section(rep: ReportContext) -> str:
    """One table per finding kind (most serious first), each with the chart that shows it best."""
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
    rank = {k: i for i, k in enumerate(KINDS)}
    for kind in sorted(f["kind"].unique(), key=lambda k: (rank.get(k, len(rank)), k)):
        g = f[f["kind"] == kind]
        rows = [_finding_row(rep, h, len(h)) for h in _per_run(g)]
        n = g["run"].nunique()
        parts.append(f'<h3 id="finding-{slug(kind)}">{esc(kind)} '
                     f'<span class="note">({n} run{"s" if n != 1 else ""})</span></h3>')
        header = ["run", "arm", "layer", "since step", "value", "threshold", "message", "fix"]
        parts.append(table(header, rows, num={3, 4, 5}))
        parts.append(_evidence(rep, kind, list(dict.fromkeys(g["run"]))))
    return "\n".join(parts) + "</section>"


def _per_run(g: pd.DataFrame) -> list[pd.DataFrame]:
    """A kind's findings split per (run, rule), earliest step first: one table row each."""
    cols = [c for c in ("run", "rule") if c in g]
    order = g.assign(_s=pd.to_numeric(g["step"], errors="coerce") if "step" in g else 0)
    order = order.sort_values("_s", kind="stable", na_position="last")
    return [h for _, h in order.groupby(cols, sort=False)]


def _finding_row(rep: ReportContext, h: pd.DataFrame, n: int) -> list[str]:
    """One row for a run's findings of one rule: the earliest, and how many more layers it concerns."""
    r = h.iloc[0]
    value = sci(r.get("value", np.nan)) if _is_num(r.get("value")) else esc(r.get("value", ""))
    thr = r.get("threshold")
    thr = f"{esc(r.get('op', ''))} {sci(thr)}" if _is_num(thr) and np.isfinite(thr) else NONE
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
        f'<a href="#run-{slug(r["run"])}">{esc(r["run"])}</a>',
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


def _evidence(rep: ReportContext, kind: str, run_ids: list[str]) -> str:
    """The chart that shows a finding kind best, for (at most a dozen arms of) the runs it flags."""
    arms = sorted(rep.arm[run_ids].unique(), key=natural_key)[:MAX_ARMS_PER_CHART]
    one_per_arm = rep.first_run_per_arm(arms, run_ids)
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
    if kind in ("dead_units", "dying_units"):
        return rep.saturation(one_per_arm, name, which=("dead_frac_window", "dead_frac"))
    if kind == "update_ratio":
        run = min(one_per_arm, key=lambda r: rep.status.get(r) != "ok")  # the first ok run, if any
        h = plots.heatmap_series(rep.metrics_of([run]), run, metric="update_ratio", kinds=WEIGHTED_KINDS,
                                 log=True, layers=rep.layers)
        if h.empty:
            return ""
        fig = plots.plot_heatmap({"log10 ‖ΔW‖/‖W‖": h}, title=f"{rep.arm[run]} (run {run})")
        return rep.charts.add(fig, name, "Update-to-weight ratio per dense layer over training.")
    if kind in ("failed", *INFO_KINDS):
        return ""
    return rep.curves([r for r in run_ids if rep.arm[r] in arms], name)


def groups_section(rep: ReportContext, anchors: list[str]) -> str:
    """A collapsible section per group of arms: saturation, a typical run's heatmap and distributions."""
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
        firsts = rep.first_run_per_arm(arms, [r for r in ids if rep.status.get(r) != "failed"])
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
