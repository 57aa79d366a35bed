"""The data contract (docs/data.md): the statistic table, the metric vocabulary, the frame columns and
dtypes, the layers table, and the columnar recorder that buffers metrics in numpy arrays.

A run's metrics are a tidy frame with columns ``run, step, layer, metric, value``: one row per
(step, layer, metric). Network-level rows have ``layer == ""``. Log-magnitude histograms live in a
second tidy frame, ``run, step, layer, quantity, bin, count`` (see :data:`HIST_BINS`). A third frame,
the *layers table*, describes each recorded layer as data (kind, forward position, activation, shape):
code reads a layer's kind there, never from its name, which is free text (``dense_3``, ``features.3``).

Step ``t`` is measured on the parameters after ``t`` updates: step 0 is the network at
initialisation, and a run of ``steps = N`` records steps 0..N (the update of step t is applied after
it is measured; the last step has no update).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import numpy as np

from gradlab.statistics import NETWORK_METRICS, STATISTICS

if TYPE_CHECKING:
    import pandas as pd

METRICS: dict[str, str] = {s.name: s.meaning for s in STATISTICS} | NETWORK_METRICS
"""The fixed metric vocabulary: name → meaning. Every recorded metric is one of these."""

HIST_LOG2_MIN, HIST_LOG2_MAX = -60, 20
HIST_BINS = np.arange(HIST_LOG2_MIN, HIST_LOG2_MAX + 1)
"""Histogram bin ``e`` counts entries with 2^(e−1) ≤ |v| < 2^e (numpy.frexp's exponent), clipped to
[HIST_LOG2_MIN, HIST_LOG2_MAX]; exact zeros go to the bin ``ZERO_BIN`` and non-finite values are not
counted (``nonfinite`` counts them)."""
ZERO_BIN = HIST_LOG2_MIN - 1

METRICS_DTYPES = {"run": "string", "step": "int64", "layer": "string", "metric": "string", "value": "float64"}
HISTS_DTYPES = {"run": "string", "step": "int64", "layer": "string", "quantity": "string", "bin": "int64",
                "count": "int64"}
LAYERS_DTYPES = {"run": "string", "layer": "string", "kind": "string", "position": "int64",
                 "activation": "string", "fan_in": "Int64", "fan_out": "Int64", "n_params": "Int64"}
"""The layers table: per run and recorded layer, its kind (:data:`LAYER_KINDS`), forward position
(0, 1, … in the order the forward pass meets it), activation name (activation layers, else ""), and
shape: fan-in and fan-out (units of input and output), parameter count (<NA> when unknown)."""
METRIC_COLUMNS = list(METRICS_DTYPES)
HIST_COLUMNS = list(HISTS_DTYPES)
LAYER_COLUMNS = list(LAYERS_DTYPES)

WEIGHTED_KINDS = ("dense", "conv", "embedding", "weighted")
"""Layers whose weights carry the signal from layer to layer: the gradient-flow profile is read at
their outputs (``weighted`` is any other module with parameters)."""
NORM_KINDS = ("batchnorm", "layernorm", "groupnorm")
LAYER_KINDS = (*WEIGHTED_KINDS, *NORM_KINDS, "activation", "dropout", "residual", "layer")
"""The kinds of the layers table; ``layer`` is anything else (no parameters, not an activation)."""


class Recorder:
    """Buffers one value per (step, column) in a growing 2-D float64 array; builds frames at the end.

    ``columns`` are the (layer, metric) pairs declared with :meth:`add_column`; a column left unset
    for a step stays NaN and is dropped from the frame.
    """

    def __init__(self, run: str = "", capacity: int = 64) -> None:
        self.run = run
        self.columns: list[tuple[str, str]] = []
        self.index = {c: i for i, c in enumerate(self.columns)}
        self._values = np.full((capacity, len(self.columns)), np.nan)
        self._steps = np.zeros(capacity, dtype=np.int64)
        self._n = 0
        self._hist_rows: list[tuple[int, str, str, np.ndarray]] = []

    def add_column(self, layer: str, metric: str) -> int:
        """Add a (layer, metric) column, NaN for the steps already recorded; return its index."""
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; allowed: {', '.join(METRICS)}")
        if (layer, metric) in self.index:
            return self.index[(layer, metric)]
        self.columns.append((layer, metric))
        self.index[(layer, metric)] = len(self.columns) - 1
        self._values = np.concatenate([self._values, np.full((len(self._values), 1), np.nan)], axis=1)
        return len(self.columns) - 1

    def new_row(self, step: int) -> np.ndarray:
        """Start the row of ``step`` and return it (a view to fill by column index)."""
        if self._n == len(self._steps):
            grow = max(64, len(self._steps))
            self._values = np.concatenate([self._values, np.full((grow, len(self.columns)), np.nan)])
            self._steps = np.concatenate([self._steps, np.zeros(grow, dtype=np.int64)])
        self._steps[self._n] = step
        row = self._values[self._n]
        self._n += 1
        return row

    def add_hist(self, step: int, layer: str, quantity: str, counts: np.ndarray) -> None:
        """Keep one log-magnitude histogram (counts over ``ZERO_BIN`` then ``HIST_BINS``)."""
        self._hist_rows.append((step, layer, quantity, counts))

    @property
    def n_steps(self) -> int:
        """How many rows (steps) were recorded."""
        return self._n

    def values(self) -> np.ndarray:
        """The recorded (steps × columns) array."""
        return self._values[: self._n]

    def steps(self) -> np.ndarray:
        """The recorded step numbers."""
        return self._steps[: self._n]

    def frame(self) -> pd.DataFrame:
        """The tidy metrics frame ``run, step, layer, metric, value`` (NaN cells dropped)."""
        import pandas as pd

        vals = self.values()
        n, k = vals.shape
        layers = np.array([c[0] for c in self.columns], dtype=object)
        metrics = np.array([c[1] for c in self.columns], dtype=object)
        flat = vals.reshape(-1)
        keep = ~np.isnan(flat)
        df = pd.DataFrame(
            {
                "run": pd.Series([self.run] * int(keep.sum()), dtype="string"),
                "step": np.repeat(self.steps(), k)[keep],
                "layer": pd.array(np.tile(layers, n)[keep], dtype="string"),
                "metric": pd.array(np.tile(metrics, n)[keep], dtype="string"),
                "value": flat[keep],
            }
        )
        return df

    def hist_frame(self) -> pd.DataFrame:
        """The tidy histogram frame ``run, step, layer, quantity, bin, count`` (zero counts dropped)."""
        import pandas as pd

        bins = np.concatenate([[ZERO_BIN], HIST_BINS])
        parts = []
        for step, layer, quantity, counts in self._hist_rows:
            nz = counts > 0
            parts.append((step, layer, quantity, bins[nz], counts[nz]))
        sizes = [len(p[3]) for p in parts]
        return pd.DataFrame(
            {
                "run": pd.Series([self.run] * sum(sizes), dtype="string"),
                "step": np.repeat([p[0] for p in parts], sizes).astype(np.int64),
                "layer": pd.array(np.repeat([p[1] for p in parts], sizes), dtype="string"),
                "quantity": pd.array(np.repeat([p[2] for p in parts], sizes), dtype="string"),
                "bin": np.concatenate([p[3] for p in parts]).astype(np.int64)
                if parts
                else np.zeros(0, np.int64),
                "count": np.concatenate([p[4] for p in parts]).astype(np.int64)
                if parts
                else np.zeros(0, np.int64),
            }
        )


_GRADLAB_NAME = re.compile(r"^([a-z][a-z_]*)_(\d+)$")
_UNIT_METRICS = frozenset({"saturation", "inactive_frac", "dead_frac", "dead_frac_window"})


def infer_layers(metrics: pd.DataFrame) -> pd.DataFrame:
    """A layers table for a metrics frame that came without one.

    Per run: when every layer name is gradlab's own ``<kind>_<position>`` (``dense_0``, ``tanh_1``),
    kind and position are read from it (a kind outside :data:`LAYER_KINDS` is an activation of that
    name); otherwise layers keep the order they first appear in (the recorder's forward order), and a
    layer is ``weighted`` when it has ``grad_norm``, ``activation`` when it has a unit statistic, else
    ``layer``. Shapes are unknown (<NA>). Frames recorded by gradlab carry their own layers table.
    """
    import pandas as pd

    df = metrics[metrics["layer"].astype(str) != ""]
    rows = []
    for run, g in df.groupby(df["run"].astype(str), sort=False):
        names = list(dict.fromkeys(g["layer"].astype(str)))
        has = g.groupby(g["layer"].astype(str))["metric"].agg(lambda m: frozenset(m.astype(str)))
        parsed = [_GRADLAB_NAME.match(n) for n in names]
        if all(parsed):
            order = sorted(range(len(names)), key=lambda i: (int(parsed[i].group(2)), names[i]))
            for pos, i in enumerate(order):
                token = parsed[i].group(1)
                kind, act = (token, "") if token in LAYER_KINDS else ("activation", token)
                rows.append((run, names[i], kind, pos, act))
            continue
        for pos, name in enumerate(names):
            m = has[name]
            kind = "weighted" if "grad_norm" in m else "activation" if m & _UNIT_METRICS else "layer"
            rows.append((run, name, kind, pos, ""))
    out = pd.DataFrame(rows, columns=["run", "layer", "kind", "position", "activation"])
    for col in ("fan_in", "fan_out", "n_params"):
        out[col] = pd.NA
    return out[LAYER_COLUMNS].astype(LAYERS_DTYPES)


def layers_for(metrics: pd.DataFrame, layers: pd.DataFrame | None) -> pd.DataFrame:
    """The layers table of the runs in ``metrics``: ``layers`` where it covers a run, else inferred."""
    if layers is None or not len(layers):
        return infer_layers(metrics)
    runs = {str(r) for r in metrics["run"].unique()}  # not the whole column as text: a sweep's is huge
    known = layers[layers["run"].astype(str).isin(runs)]
    missing = runs - set(known["run"].astype(str))
    if not missing:
        return known.reset_index(drop=True)
    import pandas as pd

    extra = infer_layers(metrics[metrics["run"].astype(str).isin(missing)])
    return pd.concat([known, extra], ignore_index=True)[LAYER_COLUMNS].astype(LAYERS_DTYPES)
