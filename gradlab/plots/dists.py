"""Per-layer distribution chart: the fraction of entries per log10-magnitude bin, from histograms.

A pure :func:`distribution_series` and its renderer :func:`plot_distributions` (see plots.layers).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from gradlab.plots.common import (
    in_forward_order,
    layer_table,
    new_figure,
    plain,
    select_runs,
    suptitle,
    with_positions,
)
from gradlab.records import WEIGHTED_KINDS

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _pick_layers(layers: list[str], most: int) -> list[str]:
    """At most ``most`` of ``layers``, evenly spaced and keeping the first and the last."""
    if len(layers) <= most:
        return layers
    idx = np.unique(np.round(np.linspace(0, len(layers) - 1, most)).astype(int))
    return [layers[i] for i in idx]


def distribution_series(hists: pd.DataFrame, run: str, *, steps: Sequence[int] | None = None,
                        quantities: Sequence[str] = ("act", "grad"), max_layers: int = 8,
                        layers: pd.DataFrame | None = None) -> pd.DataFrame:
    """Fraction of entries per log10-magnitude bin, per layer, from one run's histogram frame.

    Activations use the outputs of the layers of kind "activation" and gradients the weighted layers'
    ∂L/∂y (Glorot & Bengio 2010, Fig. 6/7), kinds and forward positions from the layers table
    ``layers`` (None: inferred from the histograms' layer names, see :func:`gradlab.records.infer_layers`;
    a quantity with no layer of its kinds shows every layer). ``steps`` defaults to the first, middle
    and last recorded ones. Columns: ``quantity, step, layer, position, bin, log10_mag, fraction,
    zero_frac``.
    """
    from gradlab.records import ZERO_BIN

    df = select_runs(hists, [str(run)])
    df = df.assign(run=df["run"].astype(str), layer=df["layer"].astype(str),
                   quantity=df["quantity"].astype(str), step=df["step"].astype(np.int64),
                   bin=df["bin"].astype(np.int64), count=df["count"].astype(float))
    cols = ["quantity", "step", "layer", "position", "bin", "log10_mag", "fraction", "zero_frac"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    if steps is None:
        have = np.unique(df["step"])
        steps = sorted({int(have[0]), int(have[len(have) // 2]), int(have[-1])})
    table = layer_table(df[["run", "layer"]].drop_duplicates().assign(metric=""), layers)
    kind = dict(zip(table["layer"], table["kind"], strict=True))
    df = with_positions(df[df["step"].isin(list(steps))], table)
    parts = []
    for q in quantities:
        dq = df[df["quantity"] == q]
        names = in_forward_order(dq)
        want = [n for n in names
                if (kind.get(n) in WEIGHTED_KINDS if q == "grad" else kind.get(n) == "activation")]
        dq = dq[dq["layer"].isin(_pick_layers(want or names, max_layers))]
        total = dq.groupby(["step", "layer"])["count"].transform("sum")
        zeros = dq["count"].where(dq["bin"] == ZERO_BIN, 0.0)
        zeros = zeros.groupby([dq["step"], dq["layer"]]).transform("sum")
        dq = dq.assign(fraction=dq["count"] / total, zero_frac=zeros / total)
        parts.append(dq[dq["bin"] != ZERO_BIN])
    out = pd.concat(parts, ignore_index=True)
    # bin e holds 2^(e−1) ≤ |v| < 2^e; its geometric centre is 2^(e−½).
    out = out.assign(log10_mag=(out["bin"] - 0.5) * np.log10(2.0))
    qorder = {q: i for i, q in enumerate(quantities)}
    out = out.assign(_q=out["quantity"].map(qorder)).sort_values(["_q", "step", "position", "layer", "bin"])
    return out[cols].reset_index(drop=True)


def plot_distributions(series: pd.DataFrame, *, title: str = "Per-layer distributions") -> Figure:
    """Draw :func:`distribution_series`: rows = quantity, columns = step, one curve per layer."""
    from matplotlib import colormaps

    quantities = list(dict.fromkeys(series["quantity"])) or ["act"]
    steps = sorted(series["step"].unique()) or [0]
    fig, axes = new_figure(len(quantities), len(steps), height=2.8 * len(quantities) + 0.6, sharex="row",
                           sharey="row")
    cmap = colormaps["viridis"]
    names = {"act": "activations y", "grad": "back-propagated ∂L/∂y"}
    for i, q in enumerate(quantities):
        layers = in_forward_order(series[series["quantity"] == q])
        for j, step in enumerate(steps):
            ax = axes[i, j]
            g = series[(series["quantity"] == q) & (series["step"] == step)]
            lines, labels = [], []
            for k, layer in enumerate(layers):
                lg = g[g["layer"] == layer]
                if lg.empty:
                    continue
                z = float(lg["zero_frac"].iloc[0])
                labels.append(plain(layer + (f" ({z:.0%} zeros)" if z >= 0.01 else "")))
                lines += ax.plot(lg["log10_mag"], lg["fraction"], lw=1.3,
                                 color=cmap(k / max(1, len(layers) - 1)))
            ax.grid(True, alpha=0.3)
            if i == 0:
                ax.set_title(f"step {step}", fontsize=10)
            if j == 0:
                ax.set_ylabel(f"{names.get(q, q)}\nfraction of entries", fontsize=9)
            ax.set_xlabel("log10 |value|")
            if j == len(steps) - 1 and layers:
                # explicit labels: a name starting with "_" would otherwise be left out
                ax.legend(lines, labels, fontsize=6.5, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                          frameon=False)
    suptitle(fig, title)
    return fig
