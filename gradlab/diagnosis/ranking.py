"""Which fix works: rank the arms of a fix sweep (a ``baseline`` arm and one arm per fix, paired seeds).

Pure: runs table, metrics and findings in, a ranked frame out. The order is, in turn: the share of
seeds on which the baseline's findings are gone and no new
diverged/exploding/vanishing one came (``cleared``), the mean final loss (a diverged run's
is +inf), the mean final accuracy, and the mean number of steps to reach the baseline's best loss
(same seed). Two neighbours in the ranking are *indistinguishable* when they clear as often and
their paired final losses (seed by seed) do not differ in one direction by more than the noise:
the mean paired difference is below twice its standard error, or below 2 % of the larger loss.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from gradlab.diagnosis.findings import fmt_num

SEVERE = frozenset({"diverged", "failed", "exploding", "vanishing"})
"""New findings that undo a fix: a run that now diverges or whose gradients now vanish is not cleared."""
BASELINE = "baseline"
FIX_PREFIX = "fix: "
COLUMNS = ["rank", "fix", "cleared", "remaining", "new", "final_loss", "loss_spread", "final_accuracy",
           "acc_spread", "steps_to_baseline_best", "seeds", "same_as"]


def is_fix_sweep(runs: pd.DataFrame) -> bool:
    """A fix sweep: an arm named ``baseline`` and at least one arm named ``fix: …``."""
    if "name" not in runs.columns:
        return False
    names = runs["name"].astype(str)
    return bool(names.eq(BASELINE).any() and names.str.startswith(FIX_PREFIX).any())


def _targets(findings: pd.DataFrame) -> pd.DataFrame:
    """Findings that are problems in their own right (no cause, not info)."""
    f = findings[findings["kind"].astype(str).ne("healthy")]
    if "cause" in f:
        f = f[f["cause"].fillna("").astype(str).eq("")]
    return f[~f["kind"].isin(["no_data", "healthy"])]


def _last(metrics: pd.DataFrame, metric: str) -> pd.Series:
    """Run → the metric's value at its last recorded step (network level)."""
    m = metrics[(metrics["metric"] == metric) & (metrics["layer"].astype(str) == "")]
    last = m.sort_values("step", kind="stable").drop_duplicates("run", keep="last")  # NaN stays NaN
    return pd.Series(last["value"].to_numpy(), index=last["run"].astype(str).to_numpy())


def _spread(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(x.max() - x.min()) if len(x) > 1 else math.nan


def rank_fixes(runs: pd.DataFrame, metrics: pd.DataFrame, findings: pd.DataFrame) -> pd.DataFrame:
    """The fixes of a fix sweep ranked (see module doc), the baseline last; columns :data:`COLUMNS`."""
    runs = runs.assign(run=runs["run"].astype(str), name=runs["name"].astype(str))
    problems = _targets(findings.assign(run=findings["run"].astype(str)))
    kinds: dict[str, set[str]] = {}
    for r, k in zip(problems["run"], problems["kind"].astype(str), strict=True):
        kinds.setdefault(r, set()).add(k)
    base = runs[runs["name"] == BASELINE]
    target = set().union(*[kinds.get(r, set()) for r in base["run"]]) if len(base) else set()
    loss, acc = _last(metrics, "loss"), _last(metrics, "accuracy")
    status = runs.set_index("run")["status"].astype(str) if "status" in runs else pd.Series(dtype=str)
    curves = metrics[(metrics["metric"] == "loss") & (metrics["layer"].astype(str) == "")]
    curves = {str(r): g.sort_values("step") for r, g in curves.groupby(curves["run"].astype(str))}
    best = {int(s): float(curves[r]["value"].min())
            for r, s in zip(base["run"], base["seed"], strict=True) if r in curves}
    rows, losses = [], {}
    for name, g in runs.groupby("name", sort=False):
        seeds = [int(s) for s in g["seed"]]
        ids = list(g["run"])
        fl = np.array([math.inf if status.get(r, "ok") != "ok" or not np.isfinite(loss.get(r, math.nan))
                       else float(loss[r]) for r in ids])
        fa = np.array([float(acc.get(r, math.nan)) if status.get(r, "ok") == "ok" else math.nan for r in ids])
        left = [kinds.get(r, set()) & target for r in ids]
        worse = [bool(kinds.get(r, set()) & (SEVERE - target)) for r in ids]
        new = set().union(*[kinds.get(r, set()) - target for r in ids])
        steps = []
        for r, s in zip(ids, seeds, strict=True):
            c = curves.get(r)
            hit = c[c["value"] <= best.get(s, -math.inf)] if c is not None else None
            steps.append(float(hit["step"].iloc[0]) if hit is not None and len(hit) else math.inf)
        losses[name] = dict(zip(seeds, fl, strict=True))
        cleared = [not x and not w for x, w in zip(left, worse, strict=True)]
        rows.append({
            "fix": name, "cleared": float(np.mean(cleared)),
            "remaining": ", ".join(sorted(set().union(*left))), "new": ", ".join(sorted(new)),
            "final_loss": float(np.mean(fl)), "loss_spread": _spread(fl),
            "final_accuracy": float(np.nanmean(fa)) if np.isfinite(fa).any() else math.nan,
            "acc_spread": _spread(fa), "steps_to_baseline_best": float(np.mean(steps)), "seeds": len(ids),
        })
    out = pd.DataFrame(rows, columns=COLUMNS[1:-1])
    if out.empty:
        return pd.DataFrame(columns=COLUMNS)
    out["_base"] = out["fix"].eq(BASELINE)
    out["_acc"] = -out["final_accuracy"].fillna(-math.inf)
    out = out.sort_values(["_base", "cleared", "final_loss", "_acc", "steps_to_baseline_best"],
                          ascending=[True, False, True, True, True], kind="stable").reset_index(drop=True)
    out.insert(0, "rank", range(1, len(out) + 1))
    same = [""] * len(out)
    for i in range(1, len(out)):
        a, b = out.iloc[i - 1], out.iloc[i]
        if not (a["_base"] or b["_base"]) and a["cleared"] == b["cleared"] and \
                indistinguishable(losses[a["fix"]], losses[b["fix"]]):
            same[i] = str(a["fix"])
    out["same_as"] = same
    return out.drop(columns=["_base", "_acc"])


def indistinguishable(a: dict[int, float], b: dict[int, float]) -> bool:
    """Paired final losses (seed → loss) that do not differ beyond the seeds' noise (see module doc)."""
    seeds = sorted(set(a) & set(b))
    x, y = np.array([a[s] for s in seeds]), np.array([b[s] for s in seeds])
    if not seeds or not (np.isfinite(x).all() and np.isfinite(y).all()):
        return bool(seeds) and bool((np.isinf(x) == np.isinf(y)).all() and np.isinf(x).all())
    d = x - y
    if abs(d.mean()) < 0.02 * max(np.abs(x).max(), np.abs(y).max()):
        return True
    if len(d) < 2:
        return False
    return bool(abs(d.mean()) < 2 * d.std(ddof=1) / math.sqrt(len(d)))


def _pm(mean: float, spread: float, fmt: str = "{:.3g}") -> str:
    if not math.isfinite(mean):
        return "diverged" if mean == math.inf else "—"
    return fmt.format(mean) + (f" ±{spread / 2:.2g}" if math.isfinite(spread) and spread > 0 else "")


def ranking_rows(ranked: pd.DataFrame) -> list[list[str]]:
    """The ranked table's cells as strings (header: :data:`HEADER`), for the terminal and the report."""
    out = []
    for r in ranked.to_dict("records"):
        steps = r["steps_to_baseline_best"]
        out.append([
            str(r["rank"]), str(r["fix"]), f"{r['cleared']:.0%}", r["remaining"] or "—", r["new"] or "—",
            _pm(r["final_loss"], r["loss_spread"]), _pm(r["final_accuracy"], r["acc_spread"]),
            fmt_num(steps) if math.isfinite(steps) else "never",
            f"≈ {r['same_as']}" if r["same_as"] else "",
        ])
    return out


HEADER = ["#", "fix", "cleared", "still there", "new", "final loss (±½ range)", "final accuracy",
          "steps to baseline's best", "indistinguishable from"]


def format_ranking(ranked: pd.DataFrame) -> str:
    """The ranked table, fixed width, for the terminal."""
    rows = ranking_rows(ranked)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(HEADER)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()
             for cells in [HEADER, ["-" * w for w in widths], *rows]]
    return "\n".join(lines)


__all__ = ["BASELINE", "COLUMNS", "FIX_PREFIX", "HEADER", "format_ranking", "indistinguishable",
           "is_fix_sweep", "rank_fixes", "ranking_rows"]
