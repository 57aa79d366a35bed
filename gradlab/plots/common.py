"""Shared pieces of the charts: arm colours and figure creation (arm labels: :mod:`gradlab.arms`).

Pure pandas except :func:`new_figure`, which imports matplotlib when called (``import gradlab`` must
not import it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from gradlab.arms import (  # noqa: F401 (re-exported: the charts' vocabulary)
    FALLBACK_LABEL_COLUMNS,
    NOT_AN_AXIS,
    RUN_OUTPUT_COLUMNS,
    arm_labels,
    axis_values,
    config_columns,
    format_value,
    natural_key,
    natural_rank,
    varying_axes,
)
from gradlab.records import WEIGHTED_KINDS, layers_for

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FIG_WIDTH = 9.0
"""Figure width in inches; at the report's 100 dpi a chart is 900 px wide."""

def arm_colors(labels: Iterable[str]) -> dict[str, tuple[float, float, float, float]]:
    """A fixed colour per arm: tab10 (≤10 arms) or tab20 (≤20, light shades deepened) in natural sorted
    order, else turbo."""
    from matplotlib import colormaps

    arms = sorted({str(a) for a in labels}, key=natural_key)
    n = len(arms)
    if n <= 10:
        cmap = colormaps["tab10"]
        return {a: cmap(i) for i, a in enumerate(arms)}
    if n <= 20:
        # tab20 pairs a dark and a light shade of each hue; the light ones alone are too faint to read
        # on white (a chart of one group's arms may show only them), so they move a third of the way
        # towards their dark partner
        cmap = colormaps["tab20"]
        pair = [cmap(i - i % 2) for i in range(n)]
        return {a: tuple(float(c + (d - c) / 3 * (i % 2)) for c, d in zip(cmap(i), pair[i], strict=True))
                for i, a in enumerate(arms)}
    cmap = colormaps["turbo"]
    return {a: cmap(0.05 + 0.9 * i / (n - 1)) for i, a in enumerate(arms)}


def run_arms(runs: pd.DataFrame | None, run_ids: Iterable[str]) -> pd.Series:
    """Arm label of each run id (the id itself when the runs table is missing or lacks the run)."""
    ids = [str(r) for r in run_ids]
    if runs is None or len(runs) == 0:
        return pd.Series(ids, index=ids, dtype=object)
    labels = arm_labels(runs)
    return pd.Series([labels.get(r, r) for r in ids], index=ids, dtype=object)


def is_in(column: pd.Series, values: Iterable[Any]) -> np.ndarray:
    """Where ``column``'s text is one of ``values``: by code on categorical and string columns (a sweep's
    frame has tens of millions of rows; spelling each out as text first took seconds), else as text."""
    values = [str(v) for v in values]
    dtype = column.dtype
    if isinstance(dtype, pd.StringDtype) or (isinstance(dtype, pd.CategoricalDtype)
                                             and pd.api.types.is_string_dtype(dtype.categories)):
        return column.isin(values).to_numpy(dtype=bool)
    return column.astype(str).isin(values).to_numpy(dtype=bool)


def as_text(column: pd.Series) -> pd.Series:
    """``column.astype(str)``, without spelling a categorical out row by row (its categories are)."""
    if isinstance(column.dtype, pd.CategoricalDtype) and not column.isna().any():
        return pd.Series(column.cat.categories.astype(str).take(column.cat.codes.to_numpy()),
                         index=column.index, name=column.name)
    return column.astype(str)


def select_runs(frame: pd.DataFrame, runs: Sequence[str] | None) -> pd.DataFrame:
    """Rows of ``frame`` whose ``run`` is in ``runs`` (all rows when None)."""
    if runs is None:
        return frame
    return frame[is_in(frame["run"], runs)]


def metric_rows(metrics: pd.DataFrame, metric: str | Sequence[str]) -> pd.DataFrame:
    """Rows of the metrics frame for one or several metric names, with plain str/float columns."""
    names = [metric] if isinstance(metric, str) else list(metric)
    df = metrics[is_in(metrics["metric"], names)]
    return df.assign(
        run=as_text(df["run"]), layer=as_text(df["layer"]), metric=as_text(df["metric"]),
        step=df["step"].astype(np.int64), value=df["value"].astype(float),
    )


def layer_table(metrics: pd.DataFrame, layers: pd.DataFrame | None = None) -> pd.DataFrame:
    """The runs' layers table (:func:`gradlab.records.layers_for`): str/int columns, forward order."""
    cols = ["run", "layer", "kind", "position", "activation"]
    if metrics is None or not len(metrics):
        return pd.DataFrame({c: pd.Series(dtype=np.int64 if c == "position" else object) for c in cols})
    t = layers_for(metrics, layers)
    t = pd.DataFrame({"run": t["run"].astype(str).to_numpy(dtype=object),
                      "layer": t["layer"].astype(str).to_numpy(dtype=object),
                      "kind": t["kind"].astype(str).to_numpy(dtype=object),
                      "position": t["position"].to_numpy(dtype=np.int64),
                      "activation": t["activation"].fillna("").astype(str).to_numpy(dtype=object)})
    return t.sort_values(["run", "position", "layer"], kind="stable").reset_index(drop=True)


def weighted_index(table: pd.DataFrame) -> pd.DataFrame:
    """Each run's weighted layers in forward order → ``layer_index`` 0, 1, 2, … (the last is the output)."""
    w = table[table["kind"].isin(WEIGHTED_KINDS)]
    w = w.assign(layer_index=w.groupby("run", sort=False).cumcount().astype(np.int64))
    return w[["run", "layer", "layer_index"]].reset_index(drop=True)


def with_positions(frame: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (columns ``run, layer``, str) with each layer's forward ``position`` (-1 when unknown)."""
    pos = table.set_index(["run", "layer"])["position"]
    keys = pd.MultiIndex.from_arrays([frame["run"], frame["layer"]])
    return frame.assign(position=pos.reindex(keys).fillna(-1).to_numpy(dtype=np.int64))


def in_forward_order(frame: pd.DataFrame) -> list[str]:
    """The unique layer names of a series frame (columns ``layer, position``), by position then name."""
    order = frame[["layer", "position"]].drop_duplicates().sort_values(["position", "layer"], kind="stable")
    return list(dict.fromkeys(order["layer"]))


def new_figure(nrows: int = 1, ncols: int = 1, *, height: float = 3.6, width: float = FIG_WIDTH,
               **subplot_kw: Any) -> tuple[Figure, np.ndarray]:
    """A Figure on the Agg canvas (no pyplot state) and its axes as a 2-D array."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, **subplot_kw)
    return fig, axes


def colors_for(arms: Iterable[str], colors: Mapping[str, Any] | None) -> dict[str, Any]:
    """``colors`` completed with a colour for every arm it lacks."""
    arms = list(arms)
    base = dict(arm_colors(arms))
    if colors:
        base.update({a: colors[a] for a in arms if a in colors})
    return base


def plain(text: Any) -> str:
    """``text`` for a chart, shown as written: a name is text, never mathtext (``$x^$`` would not parse).

    Escape after wrapping: a line break inside ``\\$`` would unbalance the dollars.
    """
    return str(text).replace("$", r"\$")


def empty_note(ax: Any, text: str = "no data") -> None:
    """Write a grey note in the middle of an empty panel."""
    ax.text(0.5, 0.5, plain(text), transform=ax.transAxes, ha="center", va="center", color="0.5")
    ax.set_xticks([])
    ax.set_yticks([])


def legend_below(fig: Figure, handles: Sequence[Any], labels: Sequence[str], fontsize: float = 8) -> None:
    """A figure legend under the axes, with as many columns as the longest label lets fit (labels are
    shown as written, a leading "_" included)."""
    if not handles:
        return
    labels = [plain(a) for a in labels]
    px_per_char = 0.75 * fontsize  # DejaVu Sans at 100 dpi, measured on "weight_scale=0.9 bias_scale=0.3"
    width_px = fig.get_figwidth() * 100 - 20
    ncol = max(1, min(len(labels), int(width_px // (px_per_char * max(map(len, labels)) + 50))))
    fig.legend(list(handles), list(labels), loc="outside lower center", ncol=ncol, fontsize=fontsize,
               frameon=False)


def log_y(ax: Any) -> None:
    """Log y axis with major decades only (minor ticks cost seconds per figure and add nothing here)."""
    from matplotlib.ticker import LogLocator, NullLocator

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, numticks=8))
    ax.yaxis.set_minor_locator(NullLocator())
    lo, hi = ax.get_ylim()
    if lo < 1e-200 or hi > 1e200:  # see robust_log_limits
        ax.set_ylim(max(lo, 1e-200), min(hi, 1e200))


def suptitle(fig: Figure, text: str) -> None:
    """A figure title wrapped to the figure's width (long arm labels otherwise run off both sides)."""
    import textwrap

    chars = int(fig.get_figwidth() * 100 / 8.5)  # ~8.5 px per character at the default 12 pt
    fig.suptitle(plain("\n".join(textwrap.wrap(text, chars))) if text else text)


def integer_x(ax: Any) -> None:
    """Integer ticks on the x axis (steps and layer indices are counts)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def robust_log_limits(values: np.ndarray) -> tuple[float, float] | None:
    """Log-axis limits with a margin around the finite positive ``values`` (None if there are none).

    Kept within [1e-200, 1e200]: matplotlib places log ticks up to a stride past the limits, and near the
    ends of the float range those overflow (an exploding run's loss of 2e274 crashed a report).
    """
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    if not len(v):
        return None
    return max(float(v.min()) / 1.5, 1e-200), min(float(v.max()) * 1.5, 1e200)
