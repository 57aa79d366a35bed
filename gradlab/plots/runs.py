"""Run-level charts: training curves, the sweep matrix, clipping, and the mean-field phase diagram.

Each chart is a pure ``<chart>_series`` function and a ``plot_<chart>`` renderer (see plots.layers).
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from gradlab.plots.common import (
    axis_values,
    colors_for,
    empty_note,
    format_value,
    integer_x,
    layer_table,
    legend_below,
    log_y,
    metric_rows,
    natural_key,
    natural_rank,
    new_figure,
    plain,
    robust_log_limits,
    run_arms,
    select_runs,
    suptitle,
    weighted_index,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def gradient_ratio(metrics: pd.DataFrame, *, step: int | str = 0, metric: str = "grad_out_norm",
                   log: bool = True, layers: pd.DataFrame | None = None) -> pd.Series:
    """Per run: first / last weighted layer's ``metric`` (log10 by default) at ``step``.

    ``step`` is an int (the last recorded step ≤ it) or "last" (the last step where both are finite).
    < 0 in log10 means the signal shrinks toward the input (vanishing), > 0 that it grows (exploding).
    First and last are in forward order among the weighted layers that have ``metric``, from the layers
    table ``layers`` (None: :func:`gradlab.records.layers_for` infers it).
    """
    df = metric_rows(metrics, metric)
    present = df[["run", "layer"]].drop_duplicates()
    weighted = present.merge(weighted_index(layer_table(metrics, layers)), on=["run", "layer"])
    by_run = {r: g.sort_values("layer_index")["layer"].tolist() for r, g in weighted.groupby("run")}
    ends: dict[str, tuple[str, str] | None] = {}  # run → its first and last weighted layer
    for run in dict.fromkeys(present["run"]):
        names = by_run.get(run, [])
        ends[run] = (names[0], names[-1]) if len(names) >= 2 else None
    both = [(r, e) for r, e in ends.items() if e]
    roles = pd.DataFrame([(r, e[0], "first") for r, e in both] + [(r, e[1], "last") for r, e in both],
                         columns=["run", "layer", "role"])
    wide = df.merge(roles, on=["run", "layer"]).pivot_table(index=["run", "step"], columns="role",
                                                            values="value")
    wide = wide.reindex(columns=["first", "last"])
    ratio = (wide["first"] / wide["last"]).replace([np.inf, -np.inf], np.nan)
    if step == "last":
        ratio = ratio.dropna()
    else:
        ratio = ratio[ratio.index.get_level_values("step") <= int(step)]
    val = ratio.groupby(level="run", sort=False).nth(-1).droplevel("step").reindex(list(ends))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log10(val.where(val > 0)) if log else val
    return pd.Series(out.to_numpy(dtype=float), index=pd.Index(list(ends), name="run"), name="grad_ratio")


def training_curves_series(metrics: pd.DataFrame, runs: pd.DataFrame | None = None, *,
                           which: Sequence[str] = ("loss", "accuracy"), run_ids: Sequence[str] | None = None,
                           smooth: int = 1) -> dict[str, pd.DataFrame]:
    """Loss/accuracy per run over steps and the divergence marks.

    Returns ``{"curves": run, arm, metric, step, value; "diverged": run, arm, metric, step, value}``
    where a diverged run is marked at its ``diverged_step`` at its last finite value (NaN if none).
    ``smooth`` > 1 applies a centred rolling median of that many steps.
    """
    df = select_runs(metric_rows(metrics, which), run_ids)
    df = df[df["layer"] == ""]
    arms = run_arms(runs, df["run"].unique())
    df = df.assign(arm=df["run"].map(arms)).sort_values(["run", "metric", "step"])
    if smooth > 1:
        df["value"] = df.groupby(["run", "metric"])["value"].transform(
            lambda v: v.rolling(smooth, center=True, min_periods=1).median())
    order = {m: i for i, m in enumerate(which)}
    df = df.assign(_m=df["metric"].map(order), _a=natural_rank(df["arm"]))
    curves = df.sort_values(["_m", "_a", "run", "step"])[["run", "arm", "metric", "step", "value"]]
    marks = []
    if runs is not None and "status" in runs:
        div = select_runs(runs.assign(run=runs["run"].astype(str)), run_ids)
        div = div[div["status"].astype(str) == "diverged"]
        for _, r in div.iterrows():
            run = r["run"]
            dstep = r.get("diverged_step", pd.NA)
            for m in which:
                g = curves[(curves["run"] == run) & (curves["metric"] == m)]
                if pd.isna(dstep):
                    dstep = int(g["step"].max()) if len(g) else 0
                fin = g[np.isfinite(g["value"]) & (g["step"] <= int(dstep))]
                val = float(fin["value"].iloc[-1]) if len(fin) else np.nan
                marks.append({"run": run, "arm": arms.get(run, run), "metric": m, "step": int(dstep),
                              "value": val})
    diverged = pd.DataFrame(marks, columns=["run", "arm", "metric", "step", "value"])
    return {"curves": curves.reset_index(drop=True), "diverged": diverged}


def plot_training_curves(series: Mapping[str, pd.DataFrame], *, colors: Mapping[str, Any] | None = None,
                         title: str = "Training loss and accuracy") -> Figure:
    """Draw :func:`training_curves_series`: loss (log y) and accuracy panels, × at divergence."""
    from matplotlib.lines import Line2D
    from matplotlib.transforms import blended_transform_factory

    curves, diverged = series["curves"], series["diverged"]
    which = list(dict.fromkeys(curves["metric"])) or ["loss"]
    arms = sorted(curves["arm"].unique(), key=natural_key)
    colors = colors_for(arms, colors)
    nruns = curves.groupby("arm")["run"].nunique()
    fig, axes = new_figure(1, len(which), height=3.4 + 0.18 * len(arms) / 3)
    handles: dict[str, Any] = {}
    for ax, m in zip(axes[0], which, strict=True):
        sub = curves[curves["metric"] == m]
        for (arm, _run), g in sub.groupby(["arm", "run"], sort=False):
            alpha = 0.9 if nruns.get(arm, 1) == 1 else 0.55
            (line,) = ax.plot(g["step"], g["value"], lw=1.2, alpha=alpha, color=colors[arm])
            handles.setdefault(arm, line)
        marks = diverged[diverged["metric"] == m] if len(diverged) else diverged
        top = blended_transform_factory(ax.transData, ax.transAxes)
        lims = None
        if m == "loss" and (sub["value"] > 0).any():
            log_y(ax)
            # The healthy runs set the scale; a diverged run's overflow would flatten them to a line.
            calm = sub[~sub["run"].isin(set(marks["run"]))]
            lims = robust_log_limits((calm if len(calm) else sub)["value"].to_numpy())
            if lims:
                ax.set_ylim(*lims)
            lo, hi = ax.get_ylim()
            if hi / lo < 100:  # under two decades the major ticks alone leave the axis unlabelled
                from matplotlib.ticker import LogFormatter, LogLocator

                ax.yaxis.set_minor_locator(LogLocator(base=10, subs=(2.0, 3.0, 5.0)))
                ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False))
        for r in marks.itertuples(index=False):
            if np.isfinite(r.value) and (lims is None or r.value <= lims[1]):
                ax.plot([r.step], [r.value], "x", ms=9, mew=2.2, color=colors.get(r.arm, "k"))
            else:
                ax.plot([r.step], [0.97], "x", ms=9, mew=2.2, color=colors.get(r.arm, "k"), transform=top)
        if len(marks):
            handles["diverged (×)"] = Line2D([], [], ls="", marker="x", ms=8, mew=2, color="0.2")
        if m == "accuracy":
            ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("step")
        integer_x(ax)
        ax.set_ylabel(m)
        ax.grid(True, alpha=0.3)
        if sub.empty:
            empty_note(ax)
    suptitle(fig, title)
    legend_below(fig, list(handles.values()), list(handles))
    return fig


def sweep_matrix_series(runs: pd.DataFrame, metrics: pd.DataFrame, *, rows: str, cols: str | None = None,
                        step: int | str = 0, summary: Callable[[pd.DataFrame], pd.Series] | None = None,
                        layers: pd.DataFrame | None = None) -> pd.DataFrame:
    """One cell per (rows value, cols value): median over its runs of a per-run summary.

    ``summary(metrics) -> Series`` indexed by run; default :func:`gradient_ratio` at ``step`` (log10 of
    first/last weighted layer's ``grad_out_norm``, layers from ``layers``). Columns: ``row, col, value,
    n, n_ok, n_diverged, n_failed`` in sorted axis order (numbers numerically); ``attrs["label"]`` names
    the value.
    """
    runs = runs.assign(run=runs["run"].astype(str))
    if summary is None:
        per_run = gradient_ratio(metrics, step=step, layers=layers)
        label = f"log10 ‖∂L/∂y‖ first / last dense layer (step {step})"
    else:
        per_run = summary(metrics)
        label = getattr(summary, "label", getattr(summary, "__name__", "summary"))
    status = runs["status"].astype(str) if "status" in runs else pd.Series("ok", index=runs.index)
    rvals = axis_values(runs, rows)
    cvals = axis_values(runs, cols) if cols else [""]
    out = []
    for rv in rvals:
        for cv in cvals:
            mask = runs[rows] == rv
            if cols:
                mask &= runs[cols] == cv
            ids = runs.loc[mask, "run"]
            st = status[mask]
            v = per_run.reindex(ids).to_numpy(dtype=float)
            v = v[np.isfinite(v)]
            out.append({"row": rv, "col": cv, "value": float(np.median(v)) if len(v) else np.nan,
                        "n": int(mask.sum()), "n_ok": int((st == "ok").sum()),
                        "n_diverged": int((st == "diverged").sum()), "n_failed": int((st == "failed").sum())})
    frame = pd.DataFrame(out, columns=["row", "col", "value", "n", "n_ok", "n_diverged", "n_failed"])
    frame.attrs.update(rows=rows, cols=cols or "", label=label)
    return frame


def plot_sweep_matrix(series: pd.DataFrame, *, title: str | None = None, center: float = 0.0,
                      fmt: str = "{:+.1f}", min_span: float = 1.0, cmap: str = "RdBu_r",
                      bounds: tuple[float | None, float | None] = (None, None)) -> Figure:
    """Draw :func:`sweep_matrix_series`: annotated cells (``fmt``), diverging colours (``cmap``) centred at
    ``center`` (at least ``min_span`` either side, the scale cut at the values' possible ``bounds``, e.g.
    a loss's 0), hatched diverged/failed cells."""
    from matplotlib import colormaps
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.patches import Rectangle

    rvals = list(dict.fromkeys(series["row"]))
    cvals = list(dict.fromkeys(series["col"]))
    mat = np.full((len(rvals), len(cvals)), np.nan)
    for r in series.itertuples(index=False):
        mat[rvals.index(r.row), cvals.index(r.col)] = r.value
    finite = mat[np.isfinite(mat)]
    span = max(min_span, float(np.abs(finite - center).max())) if len(finite) else min_span
    colors = colormaps[cmap].with_extremes(bad="0.88")
    rlabels = ["\n".join(textwrap.wrap(format_value(r), 44)) for r in rvals]
    longest = max((len(line) for lab in rlabels for line in lab.splitlines()), default=4)
    width = min(9.0, 2.9 + 1.15 * len(cvals) + 0.075 * longest)
    fig, axes = new_figure(1, 1, width=width, height=min(9.0, 1.8 + 0.55 * len(rvals) * max(
        1, max(lab.count("\n") + 1 for lab in rlabels) * 0.7)))
    ax = axes[0, 0]
    lo, hi = center - span, center + span
    if bounds[0] is not None and bounds[0] < center:
        lo = max(lo, bounds[0])
    if bounds[1] is not None and bounds[1] > center:
        hi = min(hi, bounds[1])
    norm = TwoSlopeNorm(center, lo, hi)
    im = ax.imshow(np.ma.masked_invalid(mat), cmap=colors, norm=norm, aspect="auto")
    for r in series.itertuples(index=False):
        i, j = rvals.index(r.row), cvals.index(r.col)
        bad = r.n_diverged + r.n_failed
        text = fmt.format(r.value) if np.isfinite(r.value) else ""
        lines = [] if not text else [text if fmt != "{:+.1f}" or abs(r.value) >= 0.05 else "0.0"]
        if r.n_failed:
            lines.append("failed" if r.n_failed == r.n else f"{r.n_failed}/{r.n} failed")
        if r.n_diverged:
            lines.append("diverged" if r.n_diverged == r.n else f"{r.n_diverged}/{r.n} diverged")
        if r.n == 0:
            lines = ["—"]
        if bad:
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///", ec="0.35", lw=0))
        dark = np.isfinite(r.value) and _luminance(colors(norm(r.value))) < 0.5  # white text on dark cells
        ax.text(j, i, "\n".join(lines), ha="center", va="center", fontsize=8,
                color="white" if dark else "black", fontweight="bold" if bad else "normal")
    ax.set_xticks(range(len(cvals)), [plain(format_value(c)) for c in cvals])
    if cvals == [""]:
        ax.set_xticks([])
    ax.set_yticks(range(len(rvals)), [plain(r) for r in rlabels], fontsize=9 if longest < 30 else 8)
    ax.set_xlabel(plain(series.attrs.get("cols", "")))
    ax.set_ylabel(plain(series.attrs.get("rows", "")))
    label = series.attrs.get("label", "value")
    fig.colorbar(im, ax=ax, label=plain("\n".join(textwrap.wrap(label, 34))))
    ax.set_title(plain("\n".join(textwrap.wrap(title or "Sweep: " + label, int(width * 12)))), fontsize=10)
    return fig


def _luminance(rgba: tuple[float, ...]) -> float:
    """Relative luminance of an RGB(A) colour (ITU-R BT.709 weights)."""
    return 0.2126 * rgba[0] + 0.7152 * rgba[1] + 0.0722 * rgba[2]


def clipping_series(metrics: pd.DataFrame, runs: pd.DataFrame | None = None, *,
                    run_ids: Sequence[str] | None = None) -> dict[str, pd.DataFrame]:
    """Pre/post-clip global gradient norm per step and how often clipping fired.

    Returns ``{"norms": run, arm, step, pre, post, diverged; "fired": arm, fraction, n_runs}``.
    """
    df = select_runs(metric_rows(metrics, ("grad_norm_total", "grad_norm_clipped", "clipped")), run_ids)
    df = df[df["layer"] == ""]
    arms = run_arms(runs, df["run"].unique())
    wide = df.pivot_table(index=["run", "step"], columns="metric", values="value").reset_index()
    for c in ("grad_norm_total", "grad_norm_clipped", "clipped"):
        if c not in wide:
            wide[c] = np.nan
    wide = wide.assign(arm=wide["run"].map(arms))
    diverged: set[str] = set()
    if runs is not None and "status" in runs:
        diverged = set(runs.loc[runs["status"].astype(str) == "diverged", "run"].astype(str))
    wide["diverged"] = wide["run"].isin(diverged)
    norms = wide.rename(columns={"grad_norm_total": "pre", "grad_norm_clipped": "post"})
    norms = norms.assign(_a=natural_rank(norms["arm"])).sort_values(["_a", "run", "step"])
    norms = norms[["run", "arm", "step", "pre", "post", "diverged"]].reset_index(drop=True)
    per_run = wide.groupby(["arm", "run"])["clipped"].mean().reset_index()
    fired = per_run.groupby("arm", as_index=False).agg(fraction=("clipped", "mean"),
                                                        n_runs=("run", "nunique"))
    fired = fired.assign(_a=natural_rank(fired["arm"])).sort_values("_a")[["arm", "fraction", "n_runs"]]
    return {"norms": norms, "fired": fired.reset_index(drop=True)}


def plot_clipping(series: Mapping[str, pd.DataFrame], *, colors: Mapping[str, Any] | None = None,
                  title: str = "Gradient clipping") -> Figure:
    """Draw :func:`clipping_series`: pre (solid) and post (dashed) norm over steps; fraction fired per arm."""
    from matplotlib.lines import Line2D

    norms, fired = series["norms"], series["fired"]
    arms = sorted(set(norms["arm"]) | set(fired["arm"]), key=natural_key)
    colors = colors_for(arms, colors)
    fig, axes = new_figure(1, 2, height=3.4 + 0.18 * len(arms) / 3, gridspec_kw={"width_ratios": [2.2, 1]})
    ax, bx = axes[0]
    for (arm, _run), g in norms.groupby(["arm", "run"], sort=False):
        ax.plot(g["step"], g["pre"], lw=1.2, color=colors[arm])
        ax.plot(g["step"], g["post"], "--", lw=1.2, color=colors[arm])
    log_y(ax)
    calm = norms[~norms["diverged"]] if "diverged" in norms else norms
    lims = robust_log_limits(calm[["pre", "post"]].to_numpy().ravel()) if len(calm) else None
    if lims:
        ax.set_ylim(*lims)
    ax.set_xlabel("step")
    integer_x(ax)
    ax.set_ylabel("global ‖∂L/∂θ‖")
    ax.grid(True, alpha=0.3)
    ax.set_title("norm before (solid) and after (dashed) clipping", fontsize=9)
    if norms.empty:
        empty_note(ax)
    y = np.arange(len(fired))
    bx.barh(y, fired["fraction"], color=[colors[a] for a in fired["arm"]])
    for yi, frac in zip(y, fired["fraction"], strict=True):
        bx.text(min(frac, 0.8) + 0.02, yi, f"{frac:.0%}", va="center", fontsize=7)
    bx.set_yticks(y, [plain("\n".join(textwrap.wrap(a, 22)[:2])) for a in fired["arm"]], fontsize=7)
    bx.invert_yaxis()
    bx.set_xlim(0, 1)
    bx.set_xlabel("fraction of steps clipped")
    bx.grid(True, axis="x", alpha=0.3)
    handles = [Line2D([], [], color=colors[a]) for a in arms]
    handles += [Line2D([], [], color="0.3"), Line2D([], [], color="0.3", ls="--")]
    labels = [*arms, "before clipping", "after clipping"]
    legend_below(fig, handles, labels)
    suptitle(fig, title)
    return fig


def plot_phase_diagram(sw2_grid: np.ndarray, sb2_grid: np.ndarray, chi1: np.ndarray,
                       critical_sw2_of_sb2: np.ndarray | Callable[[np.ndarray], np.ndarray] | None = None,
                       points: pd.DataFrame | None = None, *, title: str = "Mean-field phase diagram",
                       activation: str | None = None, log_x: bool = False) -> Figure:
    """σ_w² × σ_b² grid coloured by ln χ₁ (blue: ordered/vanishing, red: chaotic/exploding).

    ``chi1[i, j]`` is χ₁ at (``sb2_grid[i]``, ``sw2_grid[j]``); the critical line χ₁ = 1 is drawn from
    ``critical_sw2_of_sb2`` (values at ``sb2_grid`` or a function of σ_b²) or, if None, as the
    contour ln χ₁ = 0. ``points`` (columns ``sw2, sb2, label``) places runs on the diagram; ``log_x``
    puts σ_w² on a log axis (for a geometric grid).
    """
    from matplotlib import colormaps
    from matplotlib.colors import TwoSlopeNorm

    sw2, sb2 = np.asarray(sw2_grid, float), np.asarray(sb2_grid, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        logc = np.log(np.asarray(chi1, float))
    logc = np.where(np.isfinite(logc), logc, np.nan)
    span = float(np.nanmax(np.abs(logc))) if np.isfinite(logc).any() else 1.0
    fig, axes = new_figure(1, 1, width=7.5, height=5.2)
    ax = axes[0, 0]
    mesh = ax.pcolormesh(sw2, sb2, np.ma.masked_invalid(logc), cmap=colormaps["RdBu_r"], shading="auto",
                         norm=TwoSlopeNorm(0.0, -max(span, 1e-3), max(span, 1e-3)))
    fig.colorbar(mesh, ax=ax, label="ln χ₁  (< 0 gradients vanish, > 0 explode)")
    if critical_sw2_of_sb2 is None:
        if np.isfinite(logc).any() and np.nanmin(logc) < 0 < np.nanmax(logc):
            ax.contour(sw2, sb2, logc, levels=[0.0], colors="k", linewidths=1.8)
    else:
        crit = critical_sw2_of_sb2(sb2) if callable(critical_sw2_of_sb2) else np.asarray(critical_sw2_of_sb2)
        ax.plot(crit, sb2, "k-", lw=1.8)
    ax.plot([], [], "k-", lw=1.8, label="critical line χ₁ = 1")
    if points is not None and len(points):
        ax.scatter(points["sw2"], points["sb2"], s=36, c="gold", edgecolors="k", zorder=3, label="runs",
                   clip_on=False)
        upright = len(points) > 6  # many labels side by side: vertical, so neighbours do not overlap
        for r in points.itertuples(index=False):
            ax.annotate(plain(getattr(r, "label", "")), (r.sw2, r.sb2), xytext=(0, 6) if upright else (4, 4),
                        textcoords="offset points", fontsize=7, rotation=90 if upright else 0,
                        ha="center" if upright else "left", va="bottom",
                        bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.6})
    if log_x:
        from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=2))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlim(sw2.min(), sw2.max())
    ax.set_ylim(sb2.min(), sb2.max())
    ax.set_xlabel("σ_w²  (weight variance × fan-in)")
    ax.set_ylabel("σ_b²  (bias variance)")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(plain(title + (f" ({activation})" if activation else "")), fontsize=10)
    return fig
