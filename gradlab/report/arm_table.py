"""The runs section's table per arm: a sweep of hundreds of runs is read arm by arm first (its seeds
summarised in one row), with every run's row in the scrolling table below it."""

from __future__ import annotations

import numpy as np
import pandas as pd

from gradlab.report.context import NONE, ReportContext, esc, sci
from gradlab.report.tables import table

MANY_RUNS = 40
"""Above this many runs, when arms hold several runs (seeds), the runs section opens with the arms."""


def arm_table(rep: ReportContext, group_anchor: dict[str, str]) -> str:
    """One row per arm: its runs by status, medians over them of the final loss and the gradient ratios
    (and the prediction), and how many runs got each verdict; "" for a sweep small enough to read run by
    run."""
    if len(rep.runs) <= MANY_RUNS or len(rep.arms) == len(rep.runs):
        return ""
    ids = rep.runs["run"]
    arm = ids.map(rep.arm).to_numpy()
    loss = rep.runs["final_loss"] if "final_loss" in rep.runs else pd.Series(np.nan, index=rep.runs.index)
    ok = rep.status.reindex(ids).eq("ok").to_numpy()  # a diverged run's last loss is overflow, not a result
    loss = np.where(ok, loss.to_numpy(dtype=float), np.nan)
    columns = {"final loss": pd.Series(loss, index=ids.to_numpy()),
               "grad ratio @init": 10.0 ** rep.ratio0, "@end": 10.0 ** rep.ratio_end}
    if rep.theory is not None:
        columns["predicted @init"] = rep.predicted_ratio
    rows = []
    for a in rep.arms:
        mine = ids[arm == a]
        counts = rep.status.reindex(mine).value_counts()
        status = ", ".join(f"{int(counts[s])} {s}" for s in ("ok", "diverged", "failed") if s in counts)
        anchor = group_anchor.get(mine.iloc[0])
        cells = [f'<a href="#{anchor}">{esc(a)}</a>' if anchor else esc(a), esc(len(mine)), esc(status)]
        for values in columns.values():
            v = values.reindex(mine).to_numpy(dtype=float)
            v = v[np.isfinite(v)]
            cells.append(sci(float(np.median(v))) if len(v) else NONE)
        verdicts = rep.verdicts.reindex(mine).dropna().astype(str).value_counts()
        cells.append("; ".join(f"{esc(k)} ×{n}" for k, n in verdicts.items()) or NONE)
        rows.append(cells)
    header = ["arm", "runs", "status", *columns, "verdicts (× runs)"]
    note = (f'<p class="note">{len(rep.arms)} arms of {len(rep.runs)} runs, one row each: numbers are '
            "medians over the arm's runs (finite values; the final loss of its ok runs only), verdicts "
            "are counted over its runs, and each arm links to its section under Arms in detail. Every run "
            "is in the table after this one.</p>")
    return f"<h3>Per arm</h3>{note}" + table(header, rows, num=set(range(1, 3 + len(columns))) - {2})
