"""Report sections about outcomes and fixes: the "Which fix works" section of a fix sweep
(:func:`gradlab.fix`) and the outcome matrices beside the sweep matrix."""

from __future__ import annotations

import numpy as np
import pandas as pd

from gradlab import plots
from gradlab.diagnosis.ranking import BASELINE, HEADER, is_fix_sweep, rank_fixes, ranking_rows
from gradlab.report.context import NONE, ReportContext, esc
from gradlab.report.tables import table

MAX_FIXES_SHOWN = 6
"""Fixes drawn against the baseline in the "Which fix works" section (the best ranked)."""


def fix_section(rep: ReportContext) -> str:
    """Which fix works (a fix sweep only): the ranked fixes, the baseline against each fix (gradient
    flow, loss curves) and the verdicts before and after."""
    if not is_fix_sweep(rep.runs) or rep.findings is None:
        return ""
    ranked = rank_fixes(rep.runs, rep.net, rep.findings)  # it reads the final loss and accuracy
    names = rep.runs["name"].astype(str)
    arm_of = {str(n): rep.arm[r] for r, n in zip(rep.runs["run"], names, strict=True)}
    cells = [[esc(c) for c in r] for r in ranking_rows(ranked)]
    parts = ['<section id="which-fix"><h2>Which fix works</h2>',
             '<p class="note">Ranked by whether the baseline\'s findings are gone (share of seeds), then the '
             "final loss and accuracy (mean ± half the range over paired seeds), then the steps to reach the "
             "baseline's best loss.</p>", table(HEADER, cells, num=(5, 6, 7))]
    rows = []
    for name in ranked["fix"]:
        ids = rep.runs_of([arm_of[name]])
        rows.append([esc(name), "<br>".join(esc(str(rep.verdicts.get(r, NONE))) for r in ids)])
    parts.append("<h3>Verdicts before and after</h3>" + table(["arm", "verdict per seed"], rows))
    base = arm_of.get(BASELINE)
    for name in [n for n in ranked["fix"] if n != BASELINE][:MAX_FIXES_SHOWN]:
        pair = [base, arm_of[name]] if base else [arm_of[name]]
        parts.append(f"<h3>{esc(BASELINE)} against {esc(name)}</h3>")
        parts.append(rep.flow(pair, f"flow {name}"))
        parts.append(rep.curves(rep.runs_of(pair), f"curves {name}"))
    return "\n".join(p for p in parts if p) + "</section>"


_OUTCOME_STYLE = {"divergence_rate": ("{:.0%}", 0.5, 0.5, (0.0, 1.0)),
                  "final_loss": ("{:.3g}", None, 1e-3, (0.0, None)),
                  "final_accuracy": ("{:.2f}", None, 1e-3, (0.0, 1.0))}
"""Outcome → (cell format, colour centre (None: the median cell), least span either side, the values'
possible range, where the colour scale stops)."""


def outcome_matrices(rep: ReportContext, runs: pd.DataFrame, rows: str, cols: str | None) -> list[str]:
    """The outcome matrices beside the gradient-ratio one, on the same axes: divergence rate, final
    loss and final accuracy, each when the sweep has it (:func:`gradlab.plots.outcomes_to_show`)."""
    out = []
    for outcome in plots.outcomes_to_show(rep.runs, rep.net):  # both read network-level rows only
        m = plots.outcome_matrix_series(runs, rep.net, outcome, rows=rows, cols=cols)
        fmt, center, span, bounds = _OUTCOME_STYLE[outcome]
        v = m["value"].to_numpy(dtype=float)
        if center is None:
            center = float(np.nanmedian(v)) if np.isfinite(v).any() else 0.0
        title = outcome.replace("_", " ")
        # red is worse in every matrix; a rate runs from none (white) to all (dark red)
        cmap = {"final_accuracy": "RdBu", "divergence_rate": "Reds"}.get(outcome, "RdBu_r")
        fig = plots.plot_sweep_matrix(m, title=title, center=center, fmt=fmt, min_span=span, cmap=cmap,
                                      bounds=bounds)
        cap = (f"{m.attrs['label']}, per cell of the sweep matrix; "
               + ("white none, dark red all." if outcome == "divergence_rate"
                  else f"colours centred at {fmt.format(center)}, red the worse side."))
        out.append(rep.charts.add(fig, outcome.replace("_", " "), cap))
    return out
