"""Per-layer charts: gradient flow, layer × step heatmaps, saturated and dead fractions.

Each chart is a pure ``<chart>_series`` function (frames in, frame out; unit-tested) and a
``plot_<chart>`` renderer that draws the series on a new :class:`matplotlib.figure.Figure`.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from gradlab.plots.common import (
    colors_for,
    empty_note,
    in_forward_order,
    integer_x,
    layer_table,
    legend_below,
    log_y,
    metric_rows,
    natural_key,
    natural_rank,
    new_figure,
    plain,
    run_arms,
    select_runs,
    suptitle,
    weighted_index,
    with_positions,
)
from gradlab.records import WEIGHTED_KINDS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

STEP_LABELS = ("init", "early", "late")
METRIC_AXIS = {
    "grad_out_norm": "‖∂L/∂y‖ at layer output",
    "grad_in_norm": "‖∂L/∂x‖ at layer input",
    "grad_norm": "‖∂L/∂W‖",
    "saturation": "saturated fraction",
    "dead_frac": "dead-unit fraction",
    "dead_frac_window": "dead-unit fraction (window)",
    "inactive_frac": "inactive fraction",
}
PREDICTED_LABEL = "mean-field prediction (dashed)"


def _resolve_step(steps: np.ndarray, want: int | str, early: int) -> int:
    """A run's recorded step for ``want``: "init" = first, "late" = last, int = the last step ≤ it."""
    if want == "init":
        return int(steps.min())
    if want == "late":
        return int(steps.max())
    target = early if want == "early" else int(want)
    below = steps[steps <= target]
    return int(below.max()) if len(below) else int(steps.min())


def _panel_title(label: int | str, resolved: Sequence[int]) -> str:
    lo, hi = min(resolved), max(resolved)
    text = f"step {lo}" if lo == hi else f"steps {lo}–{hi}"
    return f"{text} ({label})" if isinstance(label, str) else text


def gradient_flow_series(
    metrics: pd.DataFrame,
    runs: pd.DataFrame | None = None,
    *,
    steps: Sequence[int | str] = STEP_LABELS,
    which: Sequence[str] = ("grad_out_norm", "grad_norm"),
    run_ids: Sequence[str] | None = None,
    predicted: pd.DataFrame | None = None,
    anchor: bool = True,
    layers: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Per-arm gradient norm of each weighted layer (in forward order) at chosen steps, for the flow chart.

    ``steps`` items are ints or "init" / "early" (≈10% of the longest run) / "late" (each run's last
    step; a step that resolves exactly as an earlier one adds no panel). Arms with several runs (seeds)
    get the geometric mean and the min–max band. Returns columns
    ``panel, panel_title, metric, kind, arm, layer_index, layer, value, lo, hi, n_runs`` with
    ``kind`` "measured", or "predicted" for the ``predicted`` frame (``run, layer_index, predicted``),
    placed in the first panel and, with ``anchor``, scaled to meet the measured output-layer value.
    ``layer_index`` numbers each run's weighted layers (:data:`gradlab.records.WEIGHTED_KINDS`) 0, 1, …
    in forward order, from ``layers`` (the layers table; None: :func:`gradlab.records.layers_for`).
    """
    df = select_runs(metric_rows(metrics, which), run_ids)
    cols = ["panel", "panel_title", "metric", "kind", "arm", "layer_index", "layer", "value", "lo", "hi",
            "n_runs"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    # numbered per run: the second weighted layer is layer 1 whatever sits between it and the first
    index = weighted_index(layer_table(select_runs(metrics, run_ids), layers))
    df = df.merge(index, on=["run", "layer"])
    arms = run_arms(runs, df["run"].unique())
    df = _before_divergence(df, runs)
    early = max(1, round(0.1 * int(df["step"].max())))
    steps_by_run = {r: np.unique(g["step"].to_numpy()) for r, g in df.groupby("run")}
    code, ids = pd.factorize(df["run"])  # per run by code: a map over text per row takes seconds
    step, arm_of = df["step"].to_numpy(), np.array([arms[r] for r in ids], dtype=object)
    parts, seen = [], []
    for want in steps:
        chosen = {r: _resolve_step(s, want, early) for r, s in steps_by_run.items()}
        if chosen in seen:  # e.g. runs of steps = 0: init, early and late are the same step
            continue
        seen.append(chosen)
        p = len(seen) - 1
        at = step == np.array([chosen[r] for r in ids], dtype=np.int64)[code]
        sel = df[at]
        ok = (np.isfinite(sel["value"]) & (sel["value"] > 0)).to_numpy()
        sel = sel[ok]
        title = _panel_title(want, sorted(set(chosen.values())))
        parts.append(sel.assign(panel=p, panel_title=title, arm=arm_of[code[at][ok]]))
    sel = pd.concat(parts, ignore_index=True)
    sel["log"] = np.log10(sel["value"])
    agg = sel.groupby(["panel", "panel_title", "metric", "arm", "layer_index", "layer"], as_index=False).agg(
        value=("log", "mean"), lo=("value", "min"), hi=("value", "max"), n_runs=("run", "nunique"))
    agg["value"] = 10.0 ** agg["value"]
    agg["kind"] = "measured"
    if predicted is not None and len(predicted):
        agg = pd.concat([agg, _predicted_rows(predicted, agg, arms, anchor)], ignore_index=True)
    order = {m: i for i, m in enumerate(which)}
    agg = agg.assign(_m=agg["metric"].map(order), _a=natural_rank(agg["arm"]))
    agg = agg.sort_values(["panel", "_m", "kind", "_a", "layer_index"], kind="stable")
    agg = agg.astype({"value": float, "lo": float, "hi": float, "layer_index": np.int64, "n_runs": np.int64})
    return agg[cols].reset_index(drop=True)


def _before_divergence(df: pd.DataFrame, runs: pd.DataFrame | None) -> pd.DataFrame:
    """Drop each diverged run's steps from its divergence on (norms there are overflow, not signal)."""
    if runs is None or "diverged_step" not in runs or df.empty:
        return df
    dstep = runs.assign(run=runs["run"].astype(str)).set_index("run")["diverged_step"]
    cut = df["run"].map(dstep.dropna().astype(np.int64)).fillna(np.iinfo(np.int64).max)
    keep = (df["step"] < cut) | (cut <= df.groupby("run")["step"].transform("min"))
    return df[keep]


def _predicted_rows(predicted: pd.DataFrame, measured: pd.DataFrame, arms: pd.Series,
                    anchor: bool) -> pd.DataFrame:
    pred = predicted.assign(run=predicted["run"].astype(str))
    pred = pred[pred["run"].isin(arms.index)].assign(arm=lambda d: d["run"].map(arms))
    pred = pred[np.isfinite(pred["predicted"]) & (pred["predicted"] > 0)]
    base = measured[(measured["panel"] == 0) & (measured["metric"] == "grad_out_norm")]
    rows = []
    for arm, g in pred.groupby("arm"):
        prof = np.exp(np.log(g["predicted"].astype(float)).groupby(g["layer_index"].astype(int)).mean())
        meas = base[base["arm"] == arm].set_index("layer_index")["value"]
        if anchor:
            common = prof.index.intersection(meas.index)
            if len(common) == 0:
                continue
            top = common.max()
            prof = prof * (meas[top] / prof[top])
        layers = dict(zip(meas.index, base[base["arm"] == arm]["layer"], strict=False))
        rows.append(pd.DataFrame({
            "panel": 0, "panel_title": base["panel_title"].iloc[0] if len(base) else "",
            "metric": "grad_out_norm", "kind": "predicted", "arm": arm,
            "layer_index": prof.index.astype(int), "layer": [layers.get(i, "") for i in prof.index],
            "value": prof.to_numpy(), "lo": prof.to_numpy(), "hi": prof.to_numpy(),
            "n_runs": g["run"].nunique(),
        }))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=measured.columns)


def plot_gradient_flow(series: pd.DataFrame, *, colors: Mapping[str, Any] | None = None,
                       title: str = "Gradient flow through the dense layers") -> Figure:
    """Draw :func:`gradient_flow_series`: rows = metric, columns = step, one line per arm, log y."""
    from matplotlib.colors import to_rgba
    from matplotlib.lines import Line2D

    metrics = list(dict.fromkeys(series["metric"])) or ["grad_out_norm"]
    panels = series[["panel", "panel_title"]].drop_duplicates().sort_values("panel")
    ncols = max(1, len(panels))
    arms = sorted(series["arm"].unique(), key=natural_key)
    colors = colors_for(arms, colors)
    fig, axes = new_figure(len(metrics), ncols, height=2.6 * len(metrics) + 1.0 + 0.18 * len(arms) / 3,
                           sharex=True, sharey="row")
    if panels.empty:
        empty_note(axes[0, 0])
    handles: dict[str, Any] = {}
    for i, metric in enumerate(metrics):
        for j, (p, ptitle) in enumerate(panels.itertuples(index=False)):
            ax = axes[i, j]
            sub = series[(series["panel"] == p) & (series["metric"] == metric)]
            for arm in arms:
                g = sub[(sub["arm"] == arm) & (sub["kind"] == "measured")]
                pred = sub[(sub["arm"] == arm) & (sub["kind"] == "predicted")]
                if len(g):
                    # beside a prediction the measurement is drawn as points, so the dashed theory line
                    # stays visible where the two agree
                    c = to_rgba(colors[arm])
                    lw, line_c = (0.8, (*c[:3], 0.45)) if len(pred) else (1.6, c)
                    ax.plot(g["layer_index"], g["value"], "-o", lw=lw, color=line_c, ms=3.5, mfc=c, mec=c)
                    handles.setdefault(arm, Line2D([], [], marker="o", ms=3, lw=1.6, color=c))
                    if (g["n_runs"] > 1).any():
                        ax.fill_between(g["layer_index"], g["lo"], g["hi"], color=c, alpha=0.15, lw=0)
                if len(pred):
                    ax.plot(pred["layer_index"], pred["value"], "--", lw=1.7, color=colors[arm], zorder=3)
                    handles.setdefault(PREDICTED_LABEL, Line2D([], [], ls="--", lw=1.7, color="0.3"))
            log_y(ax)
            ax.grid(True, which="major", alpha=0.3)
            if i == 0:
                ax.set_title(plain(ptitle), fontsize=10)
            if j == 0:
                ax.set_ylabel(METRIC_AXIS.get(metric, metric))
            if i == len(metrics) - 1:
                ax.set_xlabel("dense layer index (0 = input)")
            integer_x(ax)
            if sub.empty:
                empty_note(ax)
    if PREDICTED_LABEL in handles:  # last in the legend, after the arms
        handles[PREDICTED_LABEL] = handles.pop(PREDICTED_LABEL)
    suptitle(fig, title)
    legend_below(fig, list(handles.values()), list(handles))
    return fig


def heatmap_series(metrics: pd.DataFrame, run: str, *, metric: str = "grad_out_norm",
                   kinds: Sequence[str] | None = None, log: bool | None = None,
                   layers: pd.DataFrame | None = None) -> pd.DataFrame:
    """Layer × step matrix of one run's ``metric`` (rows in forward order, log10 for norms).

    ``kinds`` restricts the layers by the ``kind`` column of the layers table ``layers`` (None:
    inferred); default: the weighted kinds for gradient/weight norms, every layer that has the metric
    otherwise. ``attrs`` carries ``metric``, ``log`` and ``run``.
    """
    mine = select_runs(metrics, [str(run)])
    table = layer_table(mine, layers)
    df = metric_rows(mine, metric)
    if log is None:
        log = metric.endswith("norm")
    if kinds is None and metric.endswith("norm"):
        kinds = WEIGHTED_KINDS
    if kinds is not None:
        df = df[df["layer"].isin(set(table.loc[table["kind"].isin(list(kinds)), "layer"]))]
    vals = df["value"].to_numpy()
    if log:
        with np.errstate(divide="ignore", invalid="ignore"):
            vals = np.where(np.isfinite(vals) & (vals > 0), np.log10(np.where(vals > 0, vals, 1.0)), np.nan)
    df = df.assign(value=vals)
    mat = df.pivot_table(index="layer", columns="step", values="value", aggfunc="mean", dropna=False)
    rows = with_positions(pd.DataFrame({"run": str(run), "layer": [str(n) for n in mat.index]}), table)
    mat = mat.reindex(index=in_forward_order(rows), columns=sorted(mat.columns))
    mat.attrs.update(metric=metric, log=bool(log), run=str(run))
    return mat


def plot_heatmap(series: pd.DataFrame | Mapping[str, pd.DataFrame], *, title: str | None = None) -> Figure:
    """Draw one or several :func:`heatmap_series` side by side (x = step, y = layer, input at bottom)."""
    panels = dict(series) if isinstance(series, Mapping) else {"": series}
    fig, axes = new_figure(1, len(panels), height=3.8)
    for ax, (name, mat) in zip(axes[0], panels.items(), strict=True):
        metric, log = mat.attrs.get("metric", ""), mat.attrs.get("log", False)
        if mat.empty or mat.shape[1] == 0:
            empty_note(ax, f"no {metric}")
            continue
        steps = np.asarray(mat.columns, dtype=float)
        edges = np.concatenate([[steps[0] - 0.5], (steps[1:] + steps[:-1]) / 2, [steps[-1] + 0.5]]) \
            if len(steps) > 1 else np.array([steps[0] - 0.5, steps[0] + 0.5])
        y = np.arange(len(mat.index) + 1) - 0.5
        data = np.ma.masked_invalid(mat.to_numpy(dtype=float))
        if log:
            lo, hi = (float(data.min()), float(data.max())) if data.count() else (0.0, 1.0)
            if hi - lo < 1.0:  # at least one decade: noise on a flat profile must not look like structure
                lo, hi = (lo + hi) / 2 - 0.5, (lo + hi) / 2 + 0.5
            mesh = ax.pcolormesh(edges, y, data, cmap="viridis", vmin=lo, vmax=hi, shading="flat")
            label = f"log10 {METRIC_AXIS.get(metric, metric)}"
        else:
            mesh = ax.pcolormesh(edges, y, data, cmap="magma", vmin=0.0, vmax=1.0, shading="flat")
            label = METRIC_AXIS.get(metric, metric)
        fig.colorbar(mesh, ax=ax, label=label, shrink=0.9)
        every = max(1, int(np.ceil(len(mat.index) / 14)))
        ticks = np.arange(0, len(mat.index), every)
        ax.set_yticks(ticks, [plain(mat.index[t]) for t in ticks], fontsize=7)
        ax.set_xlabel("step")
        integer_x(ax)
        ax.set_title(plain(name or METRIC_AXIS.get(metric, metric)), fontsize=10)
    if title:
        suptitle(fig, title)
    return fig


def saturation_series(metrics: pd.DataFrame, runs: pd.DataFrame | None = None, *,
                      which: Sequence[str] = ("saturation", "dead_frac"),
                      run_ids: Sequence[str] | None = None,
                      layers: pd.DataFrame | None = None) -> pd.DataFrame:
    """Saturated / dead fractions per layer over steps: ``run, arm, metric, layer, position, step, value``
    (``position``: forward order, from the layers table ``layers``; None: inferred)."""
    df = select_runs(metric_rows(metrics, which), run_ids)
    arms = run_arms(runs, df["run"].unique())
    table = layer_table(select_runs(metrics, run_ids), layers)
    df = with_positions(df.assign(arm=df["run"].map(arms)), table)
    order = {m: i for i, m in enumerate(which)}
    df = df.assign(_m=df["metric"].map(order), _a=natural_rank(df["arm"]))
    df = df.sort_values(["_a", "run", "_m", "position", "step"], kind="stable")
    return df[["run", "arm", "metric", "layer", "position", "step", "value"]].reset_index(drop=True)


def plot_saturation(series: pd.DataFrame, *, max_panels: int = 6,
                    title: str = "Saturated and dead units over training") -> Figure:
    """Draw :func:`saturation_series`: a panel per (run, metric), a line per layer coloured input → output."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    keys = list(dict.fromkeys(zip(series["run"], series["metric"], strict=True)))[:max_panels]
    n = max(1, len(keys))
    ncols = min(3, n)
    nrows = int(np.ceil(n / ncols))
    fig, axes = new_figure(nrows, ncols, height=2.7 * nrows + 0.6, sharey=True)
    cmap = colormaps["viridis"]
    for k, ax in enumerate(axes.flat):
        if k >= len(keys):
            ax.set_visible(bool(not keys and k == 0))
            if not keys:
                empty_note(ax, "no saturation or dead-unit metrics")
            continue
        run, metric = keys[k]
        g = series[(series["run"] == run) & (series["metric"] == metric)]
        layers = in_forward_order(g)
        for i, layer in enumerate(layers):
            lg = g[g["layer"] == layer]
            ax.plot(lg["step"], lg["value"], lw=1.2, color=cmap(i / max(1, len(layers) - 1)))
        ax.set_ylim(-0.02, 1.02)
        ax.grid(True, alpha=0.3)
        arm = str(g["arm"].iloc[0])
        head = "\n".join(textwrap.wrap(arm, 38)[:2])
        ax.set_title(plain(f"{head}\n{METRIC_AXIS.get(metric, metric)}"), fontsize=8)
        if k % ncols == 0:
            ax.set_ylabel("fraction")
        ax.set_xlabel("step")
        integer_x(ax)
    cb = fig.colorbar(ScalarMappable(Normalize(0, 1), cmap), ax=axes[:, -1].tolist(), shrink=0.8,
                      ticks=[0, 1])
    cb.ax.set_yticklabels(["input", "output"])
    cb.set_label("layer position")
    suptitle(fig, title)
    return fig
