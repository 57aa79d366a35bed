"""Outcome matrices beside the sweep matrix: divergence rate, final loss and final accuracy per cell,
shown only when the sweep has them."""

from __future__ import annotations

import pandas as pd
import pytest

from gradlab import plots


def _frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    runs = pd.DataFrame({"run": ["a", "b", "c", "d"], "clip_norm": [0.0, 0.0, 1.0, 1.0],
                         "status": ["diverged", "ok", "ok", "ok"]})
    rows = []
    for run, losses, acc in (("a", [2.0, float("nan")], [0.1, float("nan")]), ("b", [2.0, 1.0], [0.1, 0.5]),
                             ("c", [2.0, 0.5], [0.1, 0.8]), ("d", [2.0, 0.3], [0.1, 0.9])):
        for step, (lo, ac) in enumerate(zip(losses, acc, strict=True)):
            rows += [{"run": run, "step": step, "layer": "", "metric": "loss", "value": lo},
                     {"run": run, "step": step, "layer": "", "metric": "accuracy", "value": ac}]
    return runs, pd.DataFrame(rows)


def test_outcome_matrices_per_cell() -> None:
    runs, metrics = _frames()
    rate = plots.outcome_matrix_series(runs, metrics, "divergence_rate", rows="clip_norm")
    assert rate.set_index("row")["value"].to_dict() == {0.0: 0.5, 1.0: 0.0}
    loss = plots.outcome_matrix_series(runs, metrics, "final_loss", rows="clip_norm")
    assert loss.set_index("row")["value"].to_dict() == {0.0: 1.0, 1.0: pytest.approx(0.4)}
    acc = plots.outcome_matrix_series(runs, metrics, "final_accuracy", rows="clip_norm")
    assert acc.set_index("row")["value"].to_dict() == {0.0: 0.5, 1.0: pytest.approx(0.85)}
    plots.plot_sweep_matrix(acc, center=0.7, fmt="{:.2f}", min_span=1e-3)  # smoke


def test_outcomes_chosen_by_what_the_sweep_has() -> None:
    runs, metrics = _frames()
    assert plots.outcomes_to_show(runs, metrics) == ["divergence_rate", "final_loss", "final_accuracy"]
    calm = runs.assign(status="ok")
    no_acc = metrics[metrics["metric"] == "loss"]
    assert plots.outcomes_to_show(calm, no_acc) == ["final_loss"]
    assert plots.outcomes_to_show(calm, no_acc[no_acc["step"] == 0]) == []
    with pytest.raises(ValueError, match="outcome='speed' is unknown; allowed: divergence_rate"):
        plots.outcome_matrix_series(runs, metrics, "speed", rows="clip_norm")
