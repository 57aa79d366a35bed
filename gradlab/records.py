"""The metrics schema and the columnar recorder that buffers it in numpy arrays (contract: docs/data.md).

A run's metrics are a tidy frame with columns ``run, step, layer, metric, value``: one row per
(step, layer, metric). Network-level rows have ``layer == ""``. Log-magnitude histograms live in a
second tidy frame, ``run, step, layer, quantity, bin, count`` (see :data:`HIST_BINS`).

Step ``t`` is measured on the parameters after ``t`` updates: step 0 is the network at
initialisation, and a run of ``steps = N`` records steps 0..N (the update of step t is applied after
it is measured; the last step has no update).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

METRICS: dict[str, str] = {
    # layer level
    "grad_norm": "‖∂L/∂W‖_F of the layer's weight (Dense: W; BatchNorm/LayerNorm: γ)",
    "grad_b_norm": "‖∂L/∂b‖ of the layer's bias (Dense: b; BatchNorm/LayerNorm: β)",
    "weight_norm": "‖W‖_F (Dense: W; BatchNorm/LayerNorm: γ)",
    "update_ratio": "‖ΔW‖/‖W‖ of the update the optimizer applied (after clipping, momentum, decay)",
    "grad_in_norm": "‖∂L/∂x‖_F over the batch, x the layer's input (the signal it sends backward)",
    "grad_out_norm": "‖∂L/∂y‖_F over the batch, y the layer's output (the signal it receives)",
    "act_mean": "mean of the layer's output y over batch and units",
    "act_std": "standard deviation of y over batch and units",
    "saturation": "fraction of (sample, unit) outputs at a bound (tanh/sigmoid/elu rule in activations.py)",
    "inactive_frac": "fraction of (sample, unit) outputs in the inactive region (ReLU family)",
    "dead_frac": "fraction of units inactive for every sample of the batch (ReLU family)",
    "dead_frac_window": "fraction of units inactive for every sample of the last `window` recorded steps",
    "nonfinite": "count of NaN/±Inf entries in y, ∂L/∂x and the parameter gradients of the layer",
    # network level (layer == "")
    "loss": "training loss of the step's batch",
    "accuracy": "training accuracy of the step's batch (classification only)",
    "grad_norm_total": "global ‖∂L/∂θ‖ over all parameters before clipping",
    "grad_norm_clipped": "global gradient norm after clipping (equals grad_norm_total when it did not fire)",
    "clipped": "1 when gradient clipping fired this step, else 0",
    "lr": "learning rate used this step",
}
"""The fixed metric vocabulary: name → meaning. Every recorded metric is one of these."""

NETWORK_METRICS = ("loss", "accuracy", "grad_norm_total", "grad_norm_clipped", "clipped", "lr")

HIST_LOG2_MIN, HIST_LOG2_MAX = -60, 20
HIST_BINS = np.arange(HIST_LOG2_MIN, HIST_LOG2_MAX + 1)
"""Histogram bin ``e`` counts entries with 2^(e−1) ≤ |v| < 2^e (numpy.frexp's exponent), clipped to
[HIST_LOG2_MIN, HIST_LOG2_MAX]; exact zeros go to the bin ``ZERO_BIN`` and non-finite values are not
counted (``nonfinite`` counts them)."""
ZERO_BIN = HIST_LOG2_MIN - 1

_POS = re.compile(r"^(.*?)_(\d+)$")


def layer_position(name: str) -> int:
    """The forward position encoded in a layer name's integer suffix (``dense_10`` → 10; else -1)."""
    m = _POS.match(str(name))
    return int(m.group(2)) if m else -1


def layer_kind(name: str) -> str:
    """The kind encoded in a layer name (``tanh_3`` → ``tanh``)."""
    m = _POS.match(str(name))
    return m.group(1) if m else str(name)


def sort_layers(names: Iterable[str]) -> list[str]:
    """Unique layer names in forward order: by integer position, not lexically (dense_9 < dense_10)."""
    return sorted({str(n) for n in names if str(n) != ""}, key=lambda n: (layer_position(n), n))


METRIC_COLUMNS = ["run", "step", "layer", "metric", "value"]
HIST_COLUMNS = ["run", "step", "layer", "quantity", "bin", "count"]


class Recorder:
    """Buffers one value per (step, column) in a growing 2-D float64 array; builds frames at the end.

    ``columns`` is the fixed list of (layer, metric) pairs a monitor will fill; a column it leaves
    unset for a step stays NaN and is dropped from the frame.
    """

    def __init__(self, columns: Sequence[tuple[str, str]], run: str = "", capacity: int = 64) -> None:
        unknown = sorted({m for _, m in columns if m not in METRICS})
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; allowed: {', '.join(METRICS)}")
        self.run = run
        self.columns = list(columns)
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
