"""Chart series on small hand-built frames (values, ordering), and smoke renders of every renderer."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import free_text, make_run, make_sweep

from gradlab import plots, records
from gradlab.records import METRIC_COLUMNS

# --------------------------------------------------------------------------- realistic test frames

@pytest.fixture(scope="module")
def sweep() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return make_sweep()


def png_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=40)
    return buf.getvalue()


def n_lines(fig) -> int:
    return sum(len(ax.get_lines()) for ax in fig.axes)


# --------------------------------------------------------------------------- helpers


def test_layer_table_orders_by_position_not_lexically():
    rows = [("r", 0, n, "act_std", 1.0) for n in ["dense_10", "dense_2", "dense_9", "tanh_1", "dense_0", "",
                                                  "residual_3"]]
    metrics = pd.DataFrame(rows, columns=METRIC_COLUMNS)
    t = plots.layer_table(metrics)  # gradlab's own names: kind and order read by records.infer_layers
    assert list(t["layer"]) == ["dense_0", "tanh_1", "dense_2", "residual_3", "dense_9", "dense_10"]
    assert list(t["kind"]) == ["dense", "activation", "dense", "residual", "dense", "dense"]
    assert t.loc[t["layer"] == "tanh_1", "activation"].item() == "tanh"
    # a layers table wins over the names: kind and position are data
    given = records.infer_layers(metrics).assign(position=lambda d: 5 - d["position"], kind="layer")
    assert list(plots.layer_table(metrics, given)["layer"]) == list(t["layer"])[::-1]
    assert set(plots.layer_table(metrics, given)["kind"]) == {"layer"}


def test_arm_labels_use_name_else_varying_config(sweep):
    runs, _, _ = sweep
    labels = plots.arm_labels(runs)
    assert list(labels.index) == list(runs["run"])
    # seed varies but is not an axis: both sigmoid depth-6 seeds share one arm
    assert labels["r-sig6"] == labels["r-sig6b"]
    assert labels["r-sig6"] == "depth=6 activation=sigmoid init=standard weight_scale=1 clip_norm=0"
    assert labels["r-tanh6"] == "depth=6 activation=tanh init=normal weight_scale=3 clip_norm=0"
    named = runs.assign(name=["", "deep sigmoid", "", "", "", "", ""])
    assert plots.arm_labels(named)["r-sig6"] == "deep sigmoid"
    assert plots.varying_axes(runs) == ["depth", "activation", "init", "weight_scale", "clip_norm"]
    # one name on two different configs: the difference is appended, the arms stay apart
    shared = runs.assign(name=["same"] * len(runs))
    lab = plots.arm_labels(shared)
    assert lab["r-sig6"] == lab["r-sig6b"] != lab["r-tanh6"]
    assert lab["r-tanh6"].startswith("same ") and "activation=tanh" in lab["r-tanh6"]


def test_arm_colors_fixed_in_natural_order():
    colors = plots.arm_colors(["depth=10", "depth=5", "depth=20", "depth=5"])
    assert list(colors) == ["depth=5", "depth=10", "depth=20"]
    from matplotlib import colormaps

    assert colors["depth=5"] == colormaps["tab10"](0) and colors["depth=20"] == colormaps["tab10"](2)
    assert len(set(plots.arm_colors([f"a{i}" for i in range(15)]).values())) == 15
    assert len(set(plots.arm_colors([f"a{i}" for i in range(40)]).values())) == 40


# --------------------------------------------------------------------------- series


def test_gradient_flow_series_orders_dense_layers_and_averages_seeds(sweep):
    runs, metrics, _ = sweep
    s = plots.gradient_flow_series(metrics, runs, steps=("init", 10, "late"))
    labels = plots.arm_labels(runs)
    g = s[(s["panel"] == 0) & (s["metric"] == "grad_out_norm") & (s["arm"] == labels["r-sig6"])]
    assert list(g["layer"]) == [f"dense_{2 * i}" for i in range(7)]  # dense_10, dense_12 last
    assert list(g["layer_index"]) == list(range(7))
    assert (g["n_runs"] == 2).all()
    ratios = g["value"].to_numpy()[1:] / g["value"].to_numpy()[:-1]
    np.testing.assert_allclose(ratios, 4.0, rtol=0.2)  # decays 0.25 per layer toward the input
    # a diverged run's "late" is its last step before divergence (11; it diverged at 12)
    assert set(s["panel_title"]) == {"step 0 (init)", "step 10", "steps 11–20 (late)"}
    assert (s["kind"] == "measured").all() and np.isfinite(s["value"]).all()
    late = s[(s["panel"] == 2) & (s["arm"] == labels["r-tanh6"]) & (s["metric"] == "grad_out_norm")]
    assert list(late["layer_index"]) == list(range(7))
    # without the runs table the divergence step is used, and its non-finite layers are dropped
    s = plots.gradient_flow_series(metrics, None, run_ids=["r-tanh6"])
    late = s[(s["panel"] == 2) & (s["metric"] == "grad_out_norm")]
    assert list(late["layer_index"]) == list(range(2, 7))


def test_gradient_flow_series_predicted_overlay_anchored_at_output(sweep):
    runs, metrics, _ = sweep
    pred = pd.DataFrame({"run": "r-sig4", "layer_index": range(5), "predicted": 0.25 ** np.arange(4, -1, -1)})
    s = plots.gradient_flow_series(metrics, runs, predicted=pred)
    p = s[s["kind"] == "predicted"]
    assert set(p["panel"]) == {0} and set(p["metric"]) == {"grad_out_norm"}
    m = s[(s["kind"] == "measured") & (s["panel"] == 0) & (s["metric"] == "grad_out_norm")
          & (s["arm"] == p["arm"].iloc[0])]
    assert p["value"].iloc[-1] == pytest.approx(m["value"].iloc[-1])
    assert p["value"].iloc[0] == pytest.approx(m["value"].iloc[-1] * 0.25**4)


def test_gradient_flow_series_numbers_dense_layers_per_run():
    plain = make_run("plain", depth=3, steps=0, hist_steps=())
    bn = make_run("bn", depth=3, steps=0, hist_steps=(), batch_norm=True)
    # a batch-norm net names its layers dense_0, batchnorm_1, relu_2, dense_3, …
    rename = {f"dense_{2 * i}": f"dense_{3 * i}" for i in range(4)}
    m = pd.concat([plain["metrics"], bn["metrics"].assign(layer=bn["metrics"]["layer"].replace(rename))])
    s = plots.gradient_flow_series(m, pd.DataFrame([plain["row"], bn["row"]]), which=("grad_out_norm",))
    for arm, g in s.groupby("arm"):
        assert g["layer_index"].tolist() == [0, 1, 2, 3], arm  # not 0…6 over the union of names


def test_gradient_flow_series_one_panel_for_runs_measured_at_init_only():
    part = make_run("init-only", steps=0, hist_steps=())
    s = plots.gradient_flow_series(part["metrics"], pd.DataFrame([part["row"]]))
    assert set(s["panel"]) == {0} and set(s["panel_title"]) == {"step 0 (init)"}  # not 3 identical panels


def test_heatmap_series_rows_in_forward_order(sweep):
    _, metrics, _ = sweep
    h = plots.heatmap_series(metrics, "r-sig6")
    assert list(h.index) == [f"dense_{2 * i}" for i in range(7)]
    assert list(h.columns) == list(range(21))
    assert h.loc["dense_12", 0] - h.loc["dense_10", 0] == pytest.approx(np.log10(4), abs=0.1)
    sat = plots.heatmap_series(metrics, "r-sig6", metric="saturation")
    assert sat.attrs["log"] is False and list(sat.index) == [f"sigmoid_{2 * i + 1}" for i in range(6)]
    assert sat.loc["sigmoid_11", 20] == pytest.approx(0.1 + 0.8 * 11 / 12)


def test_saturation_series(sweep):
    runs, metrics, _ = sweep
    s = plots.saturation_series(metrics, runs, run_ids=["r-relu6", "r-sig4"])
    assert list(dict.fromkeys(s["run"])) == ["r-sig4", "r-relu6"]  # arms in natural order: depth=4 first
    assert set(s.loc[s["run"] == "r-sig4", "metric"]) == {"saturation"}
    assert set(s.loc[s["run"] == "r-relu6", "metric"]) == {"dead_frac"}
    layers = list(dict.fromkeys(s.loc[s["run"] == "r-relu6", "layer"]))
    assert layers == [f"relu_{2 * i + 1}" for i in range(6)]  # relu_11 after relu_9


def test_distribution_series(sweep):
    _, _, hists = sweep
    d = plots.distribution_series(hists, "r-relu6")
    assert sorted(d["step"].unique()) == [0, 2, 20]
    act = d[(d["quantity"] == "act") & (d["step"] == 0)]
    assert set(act["layer"].str.split("_").str[0]) == {"relu"}
    assert act.groupby("layer")["fraction"].sum().round(6).eq(0.5).all()  # half the entries are zeros
    assert act["zero_frac"].round(6).eq(0.5).all()
    grad = d[d["quantity"] == "grad"]
    assert set(grad["layer"].str.split("_").str[0]) == {"dense"}
    np.testing.assert_allclose(grad.groupby(["step", "layer"])["fraction"].sum(), 1.0)
    row = act[(act["layer"] == "relu_1") & (act["bin"] == 1)].iloc[0]
    assert row["log10_mag"] == pytest.approx(0.5 * np.log10(2))
    assert list(dict.fromkeys(grad["layer"]))[:2] == ["dense_0", "dense_2"]
    assert len(set(plots.distribution_series(hists, "r-relu6", max_layers=3)["layer"])) == 6


def test_training_curves_series_marks_divergence(sweep):
    runs, metrics, _ = sweep
    s = plots.training_curves_series(metrics, runs)
    div = s["diverged"]
    assert list(div["run"]) == ["r-tanh6", "r-tanh6"] and list(div["step"]) == [12, 12]
    loss_mark = div[div["metric"] == "loss"].iloc[0]
    loss = metrics[(metrics["run"] == "r-tanh6") & (metrics["metric"] == "loss") & (metrics["step"] == 11)]
    assert loss_mark["value"] == pytest.approx(loss["value"].iloc[0])  # last finite loss
    assert set(s["curves"]["metric"]) == {"loss", "accuracy"}
    assert s["curves"].groupby(["run", "metric"])["step"].is_monotonic_increasing.all()


def test_gradient_ratio_and_sweep_matrix(sweep):
    runs, metrics, _ = sweep
    ratio = plots.gradient_ratio(metrics)
    assert ratio["r-sig6"] == pytest.approx(6 * np.log10(0.25), abs=0.1)
    assert ratio["r-relu4"] == pytest.approx(0.0, abs=0.1)
    assert ratio["r-tanh6"] == pytest.approx(6 * np.log10(2), abs=0.1)
    assert np.isfinite(plots.gradient_ratio(metrics, step="last")["r-tanh6"])
    m = plots.sweep_matrix_series(runs, metrics, rows="depth", cols="activation")
    assert list(m["row"].unique()) == [4, 6] and list(m["col"].unique()) == ["relu", "sigmoid", "tanh"]
    cell = m[(m["row"] == 6) & (m["col"] == "sigmoid")].iloc[0]
    assert cell["n"] == 2 and cell["value"] == pytest.approx(6 * np.log10(0.25), abs=0.1)
    tanh4 = m[(m["row"] == 4) & (m["col"] == "tanh")].iloc[0]
    assert tanh4["n_failed"] == 1 and np.isnan(tanh4["value"])
    assert m[(m["row"] == 6) & (m["col"] == "tanh")].iloc[0]["n_diverged"] == 1


def test_clipping_series(sweep):
    runs, metrics, _ = sweep
    s = plots.clipping_series(metrics, runs, run_ids=["r-relu6", "r-relu4"])
    fired = s["fired"].set_index("arm")["fraction"]
    labels = plots.arm_labels(runs)
    assert fired[labels["r-relu4"]] == 0.0
    assert 0 < fired[labels["r-relu6"]] < 1
    n = s["norms"][s["norms"]["run"] == "r-relu6"]
    assert (n["post"] <= n["pre"]).all() and (n["post"] <= 10.0).all()


# --------------------------------------------------------------------------- free-text layer names


def test_free_text_layer_names_with_a_layers_table_give_the_same_series(sweep):
    runs, metrics, hists = sweep
    fm, fh, layers, back = free_text(metrics, hists)
    assert not fm["layer"].str.contains(r"_\d").any()

    def same(got: pd.DataFrame, want: pd.DataFrame) -> None:
        got = got.assign(layer=got["layer"].map(back)) if "layer" in got else got
        pd.testing.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True), rtol=1e-12)

    want = plots.gradient_flow_series(metrics, runs, steps=("init", 10, "late"))
    same(plots.gradient_flow_series(fm, runs, steps=("init", 10, "late"), layers=layers), want)
    # without the table the free-text names say nothing: the rows' order (by name) is taken as forward
    guessed = plots.gradient_flow_series(fm, runs, steps=("init", 10, "late"))
    assert guessed["layer"].map(back).tolist() != want["layer"].tolist()
    for step in (0, "last"):  # runs in the order their rows come (here: sorted by layer name)
        pd.testing.assert_series_equal(plots.gradient_ratio(fm, step=step, layers=layers).sort_index(),
                                       plots.gradient_ratio(metrics, step=step).sort_index())
    for run in ("r-sig6", "r-relu6"):
        for metric in ("grad_out_norm", "saturation", "dead_frac"):
            h = plots.heatmap_series(fm, run, metric=metric, layers=layers)
            want_h = plots.heatmap_series(metrics, run, metric=metric)
            assert [back[n] for n in h.index] == list(want_h.index)
            np.testing.assert_array_equal(h.to_numpy(), want_h.to_numpy())
        same(plots.distribution_series(fh, run, layers=layers), plots.distribution_series(hists, run))
    same(plots.saturation_series(fm, runs, layers=layers), plots.saturation_series(metrics, runs))
    cells = plots.sweep_matrix_series(runs, fm, rows="depth", cols="activation", layers=layers)
    same(cells, plots.sweep_matrix_series(runs, metrics, rows="depth", cols="activation"))


NAME_PARSING = [
    r"_\\d", r"_\(\\d",  # regexes for a <kind>_<n> suffix
    r"startswith\(\s*[\"']dense", r"\.str\.startswith\(", r"\.str\.split\(", r"split\(\s*[\"']_[\"']",
    r"\b(layer_kind|layer_position|sort_layers|dense_index)\b", r"[\"']dense_",
]
"""Source patterns of reading a layer's kind or position from its name."""


def test_no_chart_theory_or_report_module_parses_a_layer_name():
    root = Path(plots.__file__).resolve().parent.parent
    files = [p for d in ("plots", "theory", "report") for p in sorted((root / d).rglob("*.py"))]
    assert len(files) >= 10
    caught = ['_POS = re.compile(r"^(.*?)_(\\d+)$")', 'm0[m0["layer"].str.startswith("dense_")]',
              "int(name.rsplit('_', 1)[1])", "names = sort_layers(norms)", 'kind = re.sub(r"_\\d+$", "", n)']
    assert all(any(re.search(pat, line) for pat in NAME_PARSING) for line in caught)  # the check looks
    bad = [f"{p.relative_to(root)}:{i}: {line.strip()}" for p in files
           for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
           if any(re.search(pat, line) for pat in NAME_PARSING)]
    assert not bad, "names are free text; read kind and position from the layers table:\n" + "\n".join(bad)


# --------------------------------------------------------------------------- renderers


def test_render_gradient_flow(sweep):
    runs, metrics, _ = sweep
    pred = pd.DataFrame({"run": "r-sig4", "layer_index": range(5), "predicted": 0.25 ** np.arange(4, -1, -1)})
    s = plots.gradient_flow_series(metrics, runs, predicted=pred, steps=("init", "late"),
                                   run_ids=["r-sig4", "r-relu4", "r-tanh6"])
    fig = plots.plot_gradient_flow(s)
    n_arms = s["arm"].nunique()
    assert n_arms == 3 and len(fig.axes) == 4  # rows: two metrics; columns: two steps
    # measured: one line per arm per panel (the diverged arm is in all 4), plus one predicted line
    assert n_lines(fig) == n_arms * 4 + 1
    dashed = [ln for ax in fig.axes for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    assert len(dashed) == 1 and dashed[0].get_zorder() > 2  # drawn over the measured points
    assert fig.axes[0].get_yscale() == "log"
    assert png_bytes(fig)[:4] == b"\x89PNG"


def test_render_heatmap(sweep):
    _, metrics, _ = sweep
    fig = plots.plot_heatmap({"grad": plots.heatmap_series(metrics, "r-sig6"),
                              "sat": plots.heatmap_series(metrics, "r-sig6", metric="saturation")})
    assert len(fig.axes) == 4  # two panels and their colour bars
    assert png_bytes(fig)[:4] == b"\x89PNG"


def test_render_saturation(sweep):
    runs, metrics, _ = sweep
    fig = plots.plot_saturation(plots.saturation_series(metrics, runs, run_ids=["r-sig6", "r-relu6"]))
    assert n_lines(fig) == 12  # six layers in each of two panels
    assert png_bytes(fig)[:4] == b"\x89PNG"


def test_render_distributions(sweep):
    _, _, hists = sweep
    fig = plots.plot_distributions(plots.distribution_series(hists, "r-sig4", steps=[0, 20]))
    assert len(fig.axes) == 4 and n_lines(fig) == 2 * (4 + 5)  # per step: 4 activations, 5 dense layers
    assert png_bytes(fig)[:4] == b"\x89PNG"


def test_render_training_curves(sweep):
    runs, metrics, _ = sweep
    fig = plots.plot_training_curves(plots.training_curves_series(metrics, runs))
    assert len(fig.axes) == 2 and fig.axes[0].get_yscale() == "log"
    assert n_lines(fig) == 2 * 6 + 2  # one per run per panel, plus the two × marks
    assert png_bytes(fig)[:4] == b"\x89PNG"


def test_render_values_near_the_end_of_the_float_range():
    # An exploding run's loss reached 2e274 without turning non-finite: log ticks past 1e308 overflowed.
    steps = np.arange(5)
    rows = [("huge", s, "", "loss", 10.0 ** (70 * s - 6)) for s in steps]
    rows += [("huge", s, "", "grad_norm_total", 10.0 ** (75 * s)) for s in steps]
    rows += [("huge", s, "", "grad_norm_clipped", 10.0 ** (75 * s)) for s in steps]
    metrics = pd.DataFrame(rows, columns=["run", "step", "layer", "metric", "value"])
    for fig in (
        plots.plot_training_curves(plots.training_curves_series(metrics)),
        plots.plot_clipping(plots.clipping_series(metrics)),
    ):
        assert png_bytes(fig)[:4] == b"\x89PNG"
        assert all(ax.get_ylim()[1] <= 1e200 for ax in fig.axes if ax.get_yscale() == "log")


def test_render_sweep_matrix(sweep):
    runs, metrics, _ = sweep
    fig = plots.plot_sweep_matrix(plots.sweep_matrix_series(runs, metrics, rows="depth", cols="activation"))
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert "failed" in texts and any("diverged" in t for t in texts) and len(texts) == 6
    assert len(ax.patches) == 2  # hatched cells
    assert png_bytes(fig)[:4] == b"\x89PNG"


def test_render_clipping(sweep):
    runs, metrics, _ = sweep
    fig = plots.plot_clipping(plots.clipping_series(metrics, runs))
    assert len(fig.axes) == 2 and n_lines(fig) == 2 * 6
    assert png_bytes(fig)[:4] == b"\x89PNG"


def test_render_phase_diagram():
    sw2, sb2 = np.linspace(0.5, 4, 8), np.linspace(0, 0.5, 5)
    chi1 = sw2[None, :] / (1 + sb2[:, None])  # a toy χ₁ with critical line σ_w² = 1 + σ_b²
    pts = pd.DataFrame({"sw2": [1.0, 3.0], "sb2": [0.0, 0.2], "label": ["a", "b"]})
    fig = plots.plot_phase_diagram(sw2, sb2, chi1, lambda b: 1 + b, pts)
    ax = fig.axes[0]
    assert len(ax.collections) == 2  # the grid and the points
    np.testing.assert_allclose(ax.get_lines()[0].get_xdata(), 1 + sb2)
    assert png_bytes(plots.plot_phase_diagram(sw2, sb2, chi1))[:4] == b"\x89PNG"
    # many runs side by side: σ_w² on a log axis, labels upright so neighbours do not overlap
    many = pd.DataFrame({"sw2": np.geomspace(0.5, 4, 8), "sb2": 0.0, "label": list("abcdefgh")})
    ax = plots.plot_phase_diagram(np.geomspace(0.5, 4, 8), sb2, chi1, None, many, log_x=True).axes[0]
    assert ax.get_xscale() == "log" and {t.get_rotation() for t in ax.texts} == {90.0}


def test_renderers_handle_empty_frames():
    empty = pd.DataFrame(columns=METRIC_COLUMNS)
    figs = [plots.plot_gradient_flow(plots.gradient_flow_series(empty)),
            plots.plot_training_curves(plots.training_curves_series(empty)),
            plots.plot_saturation(plots.saturation_series(empty))]
    for fig in figs:
        assert fig is not None
        notes = [t.get_text() for ax in fig.axes if ax.get_visible() for t in ax.texts]
        assert len(notes) == 1 and "no " in notes[0]  # an empty chart says so instead of blank axes
        assert png_bytes(fig)[:4] == b"\x89PNG"


def test_import_gradlab_and_plots_do_not_import_pyplot():
    code = ("import sys, gradlab, gradlab.plots, gradlab.report.page; "
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported'; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


# --------------------------------------------------------------------------- names are text

WEIRD = ["$x^$", "_hidden", "a $b$ c", "cost \\$5", "$\\frac{"]
"""Run and layer names matplotlib would read as (invalid) mathtext, or hide from a legend ("_…")."""


def shown_texts(fig) -> str:
    """Every text the drawn figure shows, each asserted to be drawn as written (never as mathtext)."""
    from matplotlib.text import Text

    fig.canvas.draw()  # raises on a name that is invalid mathtext
    out = []
    for t in fig.findobj(Text):
        if t.get_visible() and t.get_text():
            if re.fullmatch(r"\$\\mathdefault\{[^$]*\}\$", t.get_text()):
                continue  # matplotlib's own log-axis tick labels
            shown, math = t._preprocess_math(t.get_text())
            assert math is False, t.get_text()
            out.append(shown)
    return "\n".join(out)


def test_every_chart_shows_names_as_written_never_as_mathtext(sweep):
    runs, metrics, hists = sweep
    ids = list(runs["run"].astype(str))
    names = {r: WEIRD[i % len(WEIRD)] + f" {i}" for i, r in enumerate(ids)}
    runs = runs.assign(name=runs["run"].astype(str).map(names).astype("string"))
    metrics, hists, layers, _ = free_text(metrics, hists)
    weird_layer = {n: f"${n}^$" for n in layers["layer"].astype(str).unique()}

    def rename(frame):
        layer = frame["layer"].astype(str).map(lambda n: weird_layer.get(n, n))
        return frame.assign(layer=layer.astype("string"))

    metrics, hists, layers = rename(metrics), rename(hists), rename(layers)
    pred = pd.DataFrame({"run": "r-sig4", "layer_index": range(5), "predicted": 0.25 ** np.arange(4, -1, -1)})
    one = "r-sig6"
    recorded = [names[r] for r in ids if r != "r-fail"]
    points = pd.DataFrame({"sw2": [1.0], "sb2": [0.1], "label": [WEIRD[0]]})
    figs = {
        "flow": plots.plot_gradient_flow(plots.gradient_flow_series(metrics, runs, predicted=pred,
                                                                    layers=layers)),
        "heatmap": plots.plot_heatmap({names[one]: plots.heatmap_series(metrics, one, layers=layers)},
                                      title=f"{names[one]} (run {one})"),
        "saturation": plots.plot_saturation(plots.saturation_series(metrics, runs, run_ids=[one, "r-relu6"],
                                                                    layers=layers)),
        "distributions": plots.plot_distributions(plots.distribution_series(hists, one, layers=layers),
                                                  title=names[one]),
        "curves": plots.plot_training_curves(plots.training_curves_series(metrics, runs)),
        "matrix": plots.plot_sweep_matrix(plots.sweep_matrix_series(runs.assign(arm=runs["name"]), metrics,
                                                                    rows="arm", layers=layers)),
        "clipping": plots.plot_clipping(plots.clipping_series(metrics, runs)),
        "phase": plots.plot_phase_diagram(np.linspace(0.5, 4, 4), np.linspace(0, 0.5, 3), np.ones((3, 4)),
                                          None, points, title=WEIRD[2]),
    }
    for what, fig in figs.items():
        text = shown_texts(fig)
        assert png_bytes(fig)[:4] == b"\x89PNG"
        expected = {"flow": recorded, "heatmap": [names[one], weird_layer["net.fc.z"]],
                    "saturation": [names[one]], "distributions": [names[one], weird_layer["net.act.y"]],
                    "curves": recorded, "matrix": list(names.values()),
                    "clipping": [names["r-relu6"]], "phase": WEIRD[:1] + WEIRD[2:3]}[what]
        for name in expected:
            assert name in text, (what, name)


def test_series_read_a_coded_frame_as_they_read_its_text(sweep):
    runs, metrics, _ = sweep
    coded = metrics.astype({"run": "category", "layer": "category", "metric": "category"})
    layers = records.infer_layers(metrics)
    for table in (None, layers):
        pd.testing.assert_frame_equal(plots.layer_table(coded, table), plots.layer_table(metrics, table))
    for step in (0, "last"):
        pd.testing.assert_series_equal(plots.gradient_ratio(coded, step=step, layers=layers),
                                       plots.gradient_ratio(metrics, step=step, layers=layers))
    ids = ["r-sig6", "r-sig6b", "r-tanh6"]
    for series in (lambda m: plots.gradient_flow_series(m, runs, run_ids=ids, layers=layers),
                   lambda m: plots.saturation_series(m, runs, run_ids=ids, layers=layers),
                   lambda m: plots.heatmap_series(m, "r-sig6", layers=layers),
                   lambda m: plots.training_curves_series(m, runs, run_ids=ids)["curves"],
                   lambda m: plots.clipping_series(m, runs)["norms"],
                   lambda m: plots.outcome_matrix_series(runs, m, "final_loss", rows="activation")):
        pd.testing.assert_frame_equal(series(coded), series(metrics))
    assert plots.outcomes_to_show(runs, coded) == plots.outcomes_to_show(runs, metrics)


def test_text_helpers_match_astype_str():
    from gradlab.plots.common import as_text, is_in

    text = pd.Series(["b", "", "a", "b"], dtype="string")
    for col in (text, text.astype("category"), text.astype(object)):
        assert as_text(col).tolist() == ["b", "", "a", "b"] and str(as_text(col).dtype) == "str"
        assert is_in(col, ["b", ""]).tolist() == [True, True, False, True]
    with_na = pd.Series(["b", None], dtype="category")
    assert as_text(with_na).tolist() == with_na.astype(str).tolist()
