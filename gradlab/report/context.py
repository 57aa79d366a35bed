"""What the report's sections share: the frames (the layers table among them: every chart reads layer
kinds and forward order from it), arm labels and colours, per-run numbers, the chart sink
(:class:`ReportContext`), the limits on what one chart shows, and the HTML text helpers."""

from __future__ import annotations

import base64
import html
import io
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from gradlab import plots
from gradlab.diagnosis import run_verdicts
from gradlab.plots.common import (
    arm_labels,
    config_columns,
    format_value,
    is_in,
    natural_key,
    varying_axes,
)
from gradlab.records import layers_for

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MAX_ARMS_PER_CHART = 12
"""More arms than this in one chart stop being readable: the report moves them to group sections."""
INFO_KINDS = ("healthy", "no_data")
"""Kinds that report a state, not a problem: shown as verdicts, not listed as findings."""
NONE = "—"


def esc(value: Any) -> str:
    """HTML-escaped text of any value (quotes too)."""
    return html.escape(value if isinstance(value, str) else format_value(value), quote=True)


def slug(text: str) -> str:
    """Lower-case ASCII words joined by hyphens, at most 40 characters: for anchors and file names."""
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-")[:40] or "x"


def sci(x: float) -> str:
    """A number for a table cell: 3 significant digits, scientific when tiny or huge, — for NaN."""
    if x is None or np.isnan(x):
        return NONE
    if not np.isfinite(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.3g}" if 1e-3 <= abs(x) < 1e4 or x == 0 else f"{x:.2e}"


DPI = 100
FEW_ARMS = 3
"""With at most this many arms, every arm gets its own section; above it, arms are grouped by an axis."""


CHARTS_RECORD = ".gradlab-charts.json"
"""In ``img/``: the charts the last report wrote there, the only files a new report deletes."""


class _Charts:
    """Saves each Figure as a PNG in ``out_dir`` and returns its <figure> HTML with a data URI."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir / "img"
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.record = self.out_dir / CHARTS_RECORD
        for name in _recorded(self.record):  # the previous report's charts, and nothing else
            (self.out_dir / name).unlink(missing_ok=True)
        self.written: list[str] = []
        self.record.write_text("[]\n", encoding="utf-8")
        self.count = 0

    def add(self, fig: Figure, name: str, caption: str = "") -> str:
        """Save ``fig`` as the next numbered PNG and return its <figure> HTML."""
        self.count += 1
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
        data = buf.getvalue()
        fname = f"{self.count:02d}-{slug(name)}.png"
        (self.out_dir / fname).write_bytes(data)
        self.written.append(fname)
        self.record.write_text(json.dumps(self.written) + "\n", encoding="utf-8")
        uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
        return f'<figure><img src="{uri}" alt="{esc(name)}" loading="lazy">{cap}</figure>'


def _recorded(record: Path) -> list[str]:
    """The chart file names a report recorded (plain ``NN-*.png`` names only); [] if none or unreadable."""
    try:
        names = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    ok = re.compile(r"[0-9]{2,}-[a-z0-9-]+\.png")
    return [n for n in names if isinstance(n, str) and ok.fullmatch(n)] if isinstance(names, list) else []


def check_group_by(runs: pd.DataFrame, group_by: str | None) -> None:
    """Raise a one-line ValueError unless ``group_by`` is None or a config column of the runs table."""
    if group_by is None:
        return
    allowed = [c for c in config_columns(runs) if c != "name"]
    if group_by not in allowed:
        import difflib

        near = difflib.get_close_matches(str(group_by), allowed, n=1)
        axes = varying_axes(runs)
        vary = f" (these vary: {', '.join(axes)})" if axes else ""
        hint = f"; did you mean {near[0]!r}?" if near else ";"
        raise ValueError(f"--group-by {group_by!r} is not a config column of these runs{hint} "
                         f"allowed: {', '.join(allowed)}{vary}")


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


class ReportContext:
    """Everything the sections share: frames, arm labels and colours, per-run numbers, the chart sink.

    ``layers`` is the layers table of the runs (kind and forward position per layer); None, or a table
    that misses a run, infers it from the metrics (:func:`gradlab.records.layers_for`).
    """

    def __init__(
        self,
        runs: pd.DataFrame,
        metrics: pd.DataFrame,
        out_dir: Path,
        hists: pd.DataFrame | None,
        findings: pd.DataFrame | None,
        theory: pd.DataFrame | None,
        group_by: str | None,
        layers: pd.DataFrame | None = None,
    ) -> None:
        self.runs = runs.assign(run=runs["run"].astype(str)).reset_index(drop=True)
        self.metrics, self.hists, self.findings = metrics, hists, findings
        self.layers = layers_for(metrics, layers)
        self.theory = theory if theory is not None and len(theory) else None
        self.predicted_ratio, self.theory_skipped = _theory_summary(self.theory)
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
        # each run's rows, found once: a chart reads a few runs' rows, never scans the whole sweep's
        self._rows = _rows_by_run(metrics)
        step = metrics["step"].to_numpy()
        self.recorded_steps = pd.Series({r: len(np.unique(step[i])) for r, i in self._rows.items()},
                                        dtype="int64")
        self.net = metrics[is_in(metrics["layer"], [""])]
        """The network-level rows (loss, accuracy, global norms, clipping): a small part of a sweep's."""
        flow = metrics[is_in(metrics["metric"], ["grad_out_norm"])]
        self.ratio0 = plots.gradient_ratio(flow, step=0, layers=self.layers)
        self.ratio_end = plots.gradient_ratio(flow, step="last", layers=self.layers)
        del flow
        self.verdicts = run_verdicts(findings) if findings is not None else pd.Series(dtype="string")
        check_group_by(self.runs, group_by)
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
        """The run ids of ``arms``, in runs-table order."""
        return [r for r in self.runs["run"] if self.arm[r] in set(arms)]

    def first_run_per_arm(self, arms: Sequence[str], run_ids: Sequence[str]) -> list[str]:
        """The first of ``run_ids`` in each of ``arms`` (in ``arms`` order; arms without one are left out)."""
        first: dict[str, str] = {}
        for r in run_ids:
            first.setdefault(self.arm[r], r)
        return [first[a] for a in arms if a in first]

    def verdict_html(self, run: str) -> str:
        """The verdict badge of one run for the runs table."""
        if run in self.verdicts.index:
            v = str(self.verdicts[run])
            cls = "verdict" if v not in INFO_KINDS else f"verdict {v}"
            return f'<span class="{cls}">{esc(v)}</span>'
        if self.findings is not None and self.status.get(run) != "failed":
            return '<span class="verdict none">no finding</span>'
        return f'<span class="verdict none">{NONE}</span>'

    def metrics_of(self, run_ids: Sequence[str]) -> pd.DataFrame:
        """The metrics rows of ``run_ids``, in frame order."""
        parts = [self._rows[r] for r in dict.fromkeys(run_ids) if r in self._rows]
        parts = [np.arange(p.start, p.stop) if isinstance(p, slice) else p for p in parts]
        return self.metrics.iloc[np.sort(np.concatenate(parts)) if parts else []]

    def ratio_at_init(self, _metrics: pd.DataFrame) -> pd.Series:
        """The sweep matrix's summary: :attr:`ratio0`, computed once."""
        return self.ratio0

    ratio_at_init.label = "log10 ‖∂L/∂y‖ first / last dense layer (step 0)"  # type: ignore[attr-defined]

    # -- charts ------------------------------------------------------------------------------
    def flow(self, arms: Sequence[str], name: str, caption: str = "") -> str:
        """The gradient-flow chart of (at most a dozen of) ``arms``, with the theory overlay."""
        ids = self.runs_of(arms[:MAX_ARMS_PER_CHART])
        s = plots.gradient_flow_series(self.metrics_of(ids), self.runs, run_ids=ids, predicted=self.theory,
                                       layers=self.layers)
        if s.empty:
            return ""
        note = f" Showing {MAX_ARMS_PER_CHART} of {len(arms)} arms." if len(arms) > MAX_ARMS_PER_CHART else ""
        several = s["panel"].nunique() > 1
        when = "at initialisation, early and late in training" if several else "at initialisation"
        caption = (
            caption
            or f"Gradient norm of each dense layer {when}; log scale, one line per arm "
            "(band: min–max over seeds)."
        ) + note
        if (s["kind"] == "predicted").any():
            caption += (" Dashed: the mean-field prediction at initialisation (gradlab.theory), in the arm's "
                        "colour, anchored at the output layer.")
        return self.charts.add(plots.plot_gradient_flow(s, colors=self.colors), name, caption)

    def trained(self, run_ids: Sequence[str]) -> bool:
        """Whether any of the runs recorded more than one step (else charts over training stay empty)."""
        return bool((self.recorded_steps.reindex(list(run_ids)).fillna(0) > 1).any())

    def curves(self, run_ids: Sequence[str], name: str) -> str:
        """Loss and accuracy curves of the runs."""
        if not self.trained(run_ids):
            return ""
        s = plots.training_curves_series(self.net, self.runs, run_ids=run_ids)
        if s["curves"].empty:
            return ""
        return self.charts.add(
            plots.plot_training_curves(s, colors=self.colors),
            name,
            "Training loss (log scale) and accuracy per run; × marks a divergence.",
        )

    def saturation(
        self, run_ids: Sequence[str], name: str, which: Sequence[str] = ("saturation", "dead_frac")
    ) -> str:
        """Saturated / dead fractions per layer over training."""
        if not self.trained(run_ids):
            return ""
        s = plots.saturation_series(self.metrics_of(run_ids), self.runs, which=which, run_ids=run_ids,
                                    layers=self.layers)
        if s.empty:
            return ""
        return self.charts.add(
            plots.plot_saturation(s),
            name,
            "Fraction of saturated outputs (bounded activations) or dead units (ReLU family) "
            "per layer over training; colour runs from the input layer to the output layer.",
        )

    def heatmap(self, run: str, name: str) -> str:
        """Layer × step heatmaps of one run (gradient norm and unit health)."""
        if not self.trained([run]):
            return ""
        mine = self.metrics_of([run])
        panels = {"log10 ‖∂L/∂y‖ (dense layers)": plots.heatmap_series(mine, run, layers=self.layers)}
        for metric, title in (("saturation", "saturated fraction"), ("dead_frac", "dead-unit fraction")):
            h = plots.heatmap_series(mine, run, metric=metric, layers=self.layers)
            if not h.empty:
                panels[title] = h
                break
        if panels["log10 ‖∂L/∂y‖ (dense layers)"].empty:
            return ""
        fig = plots.plot_heatmap(panels, title=f"{self.arm[run]}  (run {run})")
        return self.charts.add(fig, name, f"Layer × step view of run {run}: gradient norm and unit health.")

    def distributions(self, run: str, name: str) -> str:
        """Per-layer magnitude distributions of one run's activations and gradients."""
        if self.hists is None or len(self.hists) == 0:
            return ""
        s = plots.distribution_series(self.hists, run, layers=self.layers)
        if s.empty:
            return ""
        fig = plots.plot_distributions(s, title=f"Distributions per layer: {self.arm[run]} (run {run})")
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


def _rows_by_run(metrics: pd.DataFrame) -> dict[str, slice | np.ndarray]:
    """Each run's rows of the frame: a slice when they are contiguous (a loaded sweep's are), else their
    positions (an index per row of a 35-million-row frame is 280 MB)."""
    col = metrics["run"]
    codes = col.cat.codes.to_numpy() if isinstance(col.dtype, pd.CategoricalDtype) else pd.factorize(col)[0]
    if not len(codes):
        return {}
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    first = codes[starts]
    if len(np.unique(first)) == len(first) and (first >= 0).all():
        names = col.iloc[starts].astype(str).to_numpy()
        stops = np.r_[starts[1:], len(codes)]
        return {str(r): slice(int(a), int(b)) for r, a, b in zip(names, starts, stops, strict=True)}
    return {str(r): i for r, i in metrics.groupby("run", observed=True, sort=False).indices.items()}


def _theory_summary(theory: pd.DataFrame | None) -> tuple[pd.Series, pd.Series]:
    """Per run: the predicted first-over-output gradient ratio, and why there is none (``reason``)."""
    if theory is None:
        return pd.Series(dtype=float), pd.Series(dtype=object)
    t = theory.assign(run=theory["run"].astype(str))
    reason = t["reason"].fillna("").astype(str) if "reason" in t else pd.Series("", index=t.index)
    skipped = pd.Series(reason[reason != ""].to_numpy(), index=t.loc[reason != "", "run"].to_numpy())
    ok = t[(reason == "").to_numpy()].dropna(subset=["layer_index"]).sort_values("layer_index", kind="stable")
    first = ok.drop_duplicates("run", keep="first").set_index("run")["predicted"]  # nan stays nan
    last = ok.drop_duplicates("run", keep="last").set_index("run")["predicted"]
    return (first / last).astype(float), skipped[~skipped.index.duplicated()]
