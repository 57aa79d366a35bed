"""Charts: DataFrame → matplotlib Figure (object API on the Agg canvas, no pyplot state, no disk I/O).

Each chart is a pure ``<chart>_series`` function, unit-tested on small frames, and a ``plot_<chart>``
renderer that draws its output. The code lives in ``plots.common`` (the layers table, arm labels and
colours), ``plots.layers`` (per-layer charts), ``plots.dists`` (per-layer distributions) and
``plots.runs`` (per-run and sweep charts); matplotlib is imported only when a renderer (or
:func:`arm_colors`) runs. A layer's kind and forward position come from the layers table
(:data:`gradlab.records.LAYERS_DTYPES`; the ``layers`` argument, inferred when None), never from its name.
"""

from __future__ import annotations

from gradlab.plots.common import (
    arm_colors,
    arm_labels,
    config_columns,
    layer_table,
    natural_key,
    varying_axes,
)
from gradlab.plots.dists import distribution_series, plot_distributions
from gradlab.plots.layers import (
    gradient_flow_series,
    heatmap_series,
    plot_gradient_flow,
    plot_heatmap,
    plot_saturation,
    saturation_series,
)
from gradlab.plots.outcomes import OUTCOMES, outcome_matrix_series, outcomes_to_show
from gradlab.plots.runs import (
    clipping_series,
    gradient_ratio,
    plot_clipping,
    plot_phase_diagram,
    plot_sweep_matrix,
    plot_training_curves,
    sweep_matrix_series,
    training_curves_series,
)

__all__ = [
    "OUTCOMES",
    "arm_colors",
    "arm_labels",
    "clipping_series",
    "config_columns",
    "distribution_series",
    "gradient_flow_series",
    "gradient_ratio",
    "heatmap_series",
    "layer_table",
    "natural_key",
    "outcome_matrix_series",
    "outcomes_to_show",
    "plot_clipping",
    "plot_distributions",
    "plot_gradient_flow",
    "plot_heatmap",
    "plot_phase_diagram",
    "plot_saturation",
    "plot_sweep_matrix",
    "plot_training_curves",
    "saturation_series",
    "sweep_matrix_series",
    "training_curves_series",
    "varying_axes",
]
