"""The statistic table: each definition against a hand-computed case, the Observer's NumPy fast path
against the definitions, and the layers table the Observer and the monitor record."""

import math

import numpy as np
import pandas as pd
import pytest

import gradlab
from gradlab.monitor import observer as observer_module
from gradlab.monitor.observer import Observer
from gradlab.nn.activations import get_activation
from gradlab.records import LAYER_COLUMNS, LAYER_KINDS, METRICS, infer_layers, layers_for
from gradlab.statistics import BY_NAME, STAT_GROUPS, STATISTICS, reference, stat_metrics, unit_all


def test_every_statistic_is_in_the_vocabulary_and_in_one_group():
    assert [s.name for s in STATISTICS] == [m for m in METRICS if m in BY_NAME]
    grouped = [m for g in STAT_GROUPS.values() for m in g]
    assert sorted(grouped) == sorted(BY_NAME) and len(grouped) == len(set(grouped))
    assert stat_metrics(["weights"]) == frozenset(STAT_GROUPS["gradients"] + STAT_GROUPS["weights"])
    with pytest.raises(ValueError, match="allowed: gradients, weights, activations, units"):
        stat_metrics(["gradient"])


def test_definitions_on_a_hand_computed_case():
    y = np.array([[3.0, -1.0], [0.0, -2.0]])  # relu-like output: unit 1 never positive
    a = {"output": y, "grad_in": np.array([[3.0, 4.0]]), "grad_out": np.array([[1.0, 2.0, 2.0]]),
         "weight": np.array([[1.0, 1.0], [1.0, 1.0]]), "update": np.array([[0.1, 0.1], [0.1, 0.1]]),
         "weight_grad": np.array([[0.0, 2.0]]), "bias_grad": np.array([np.nan, 1.0])}
    relu = get_activation("relu")
    assert reference("grad_in_norm", a) == 5.0
    assert reference("grad_out_norm", a) == 3.0
    assert reference("weight_norm", a) == 2.0
    assert reference("update_ratio", a) == pytest.approx(0.1)
    assert reference("grad_norm", a) == 2.0
    assert math.isnan(reference("grad_b_norm", a))
    assert reference("act_mean", a) == 0.0
    assert reference("act_std", a) == pytest.approx(math.sqrt((9 + 1 + 0 + 4) / 4))
    assert reference("nonfinite", a) == 1
    assert reference("inactive_frac", a, relu) == 0.75  # 3 of 4 entries ≤ 0
    assert reference("dead_frac", a, relu) == 0.5  # unit 1 is off for both samples
    assert reference("saturation", a, relu) is None  # relu has no saturation rule
    assert reference("saturation", {"output": np.array([[0.999, 0.5]])}, get_activation("tanh")) == 0.5
    assert reference("grad_norm", {"output": y}) is None  # its array is missing
    with pytest.raises(ValueError, match="history"):
        reference("dead_frac_window", a, relu)


def test_a_conv_unit_is_a_channel():
    mask = np.ones((2, 3, 4, 4), dtype=bool)
    mask[1, 0, 2, 2] = False  # channel 0 fires once, somewhere
    assert unit_all(np, mask).tolist() == [False, True, True]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("act", ["relu", "tanh", "sigmoid", "elu", "gelu", "leaky_relu"])
def test_the_observers_fast_path_equals_the_definitions(dtype, act):
    rng = np.random.default_rng(3)
    fn = get_activation(act)
    x = (rng.standard_normal((64, 32)) * 2).astype(dtype)
    x[:, 5] = -np.abs(x[:, 5])  # a dead unit for the rectifiers
    y = fn(x).astype(dtype)
    gy = rng.standard_normal((64, 32)).astype(dtype)
    W, dW, db = (rng.standard_normal(s).astype(dtype) for s in ((32, 32), (32, 32), (32,)))
    obs = Observer(run="r")
    obs.observe(0, "fc", weight=W, weight_grad=dW, bias_grad=db, grad_in=gy, grad_out=gy[:, :16], output=y)
    obs.observe(0, "act", output=y, activation=act, preactivation=x, grad_out=gy, grad_in=gy)
    got = obs.frame().set_index(["layer", "metric"])["value"]
    arrays = {"fc": {"weight": W, "weight_grad": dW, "bias_grad": db, "grad_in": gy, "grad_out": gy[:, :16],
                     "output": y},
              "act": {"output": y, "input": x, "grad_out": gy, "grad_in": gy}}
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    checked = 0
    for (layer, metric), value in got.items():
        stat = BY_NAME.get(metric)
        if stat is None or stat.define is None:
            continue
        want = reference(metric, arrays[layer], fn if layer == "act" else None)
        assert value == pytest.approx(want, rel=rtol, abs=1e-12), (layer, metric)
        checked += 1
    assert checked >= 13


def test_an_entry_without_a_fast_path_is_computed_from_its_definition(monkeypatch):
    rng = np.random.default_rng(0)
    y = rng.standard_normal((16, 8))
    fast = Observer()
    fast.observe(0, "h", output=y, activation="tanh")
    monkeypatch.setattr(observer_module, "FAST_PATH", frozenset({"nonfinite"}))
    slow = Observer()
    slow.observe(0, "h", output=y, activation="tanh")
    a, b = (o.frame().set_index("metric")["value"] for o in (fast, slow))
    assert set(a.index) == set(b.index)
    for metric in ("act_mean", "act_std", "saturation"):
        assert b[metric] == pytest.approx(a[metric], rel=1e-12)


def test_the_observer_records_a_layers_table_in_forward_order():
    rng = np.random.default_rng(1)
    x, W = rng.standard_normal((8, 5)), rng.standard_normal((5, 3))
    obs = Observer(run="mine")
    for step in range(2):
        obs.observe(step, "fc.in", output=x @ W, weight=W, weight_grad=W, bias_grad=np.zeros(3), grad_in=x)
        obs.observe(step, "act.a", output=np.tanh(x @ W), activation="tanh")
        obs.observe(step, "fc.out", output=x[:, :2], weight=W[:, :2], grad_out=x[:, :2])
    t = obs.layers_frame()
    assert list(t.columns) == LAYER_COLUMNS
    assert t["layer"].tolist() == ["fc.in", "act.a", "fc.out"]
    assert t["position"].tolist() == [0, 1, 2]
    assert t["kind"].tolist() == ["dense", "activation", "dense"]
    assert t["activation"].tolist() == ["", "tanh", ""]
    assert t.loc[0, ["fan_in", "fan_out", "n_params"]].tolist() == [5, 3, 18]
    assert t.loc[1, "fan_out"] == 3 and pd.isna(t.loc[1, "n_params"])


def test_a_gradlab_run_records_kind_position_and_shape():
    res = gradlab.run(gradlab.Config(depth=2, width=8, batch_norm=True, steps=2, activation="relu"))
    t = res.layers.set_index("layer")
    assert t["kind"].tolist() == ["dense", "batchnorm", "activation", "dense", "batchnorm", "activation",
                                  "dense"]
    assert t["position"].tolist() == list(range(7))
    assert t.loc["dense_0", "n_params"] == t.loc["dense_0", "fan_in"] * 8 + 8
    assert t.loc["batchnorm_1", "n_params"] == 16 and t.loc["relu_2", "activation"] == "relu"
    assert set(t["kind"]) <= set(LAYER_KINDS)


def test_inferred_layers_read_gradlab_names_and_fall_back_to_order_of_appearance():
    gradlab_names = pd.DataFrame({"run": "a", "layer": ["dense_10", "tanh_9", "dense_2"], "step": 0,
                                  "metric": ["grad_norm", "saturation", "grad_norm"], "value": 1.0})
    t = infer_layers(gradlab_names)
    assert t["layer"].tolist() == ["dense_2", "tanh_9", "dense_10"]  # by number, not lexically
    assert t["kind"].tolist() == ["dense", "activation", "dense"]
    free = gradlab_names.assign(run="b", layer=["features.3", "act", "head"])
    t = infer_layers(free)
    assert t["layer"].tolist() == ["features.3", "act", "head"]
    assert t["kind"].tolist() == ["weighted", "activation", "weighted"]
    both = pd.concat([gradlab_names, free])
    mixed = layers_for(both, infer_layers(gradlab_names))
    assert sorted(set(mixed["run"])) == ["a", "b"]


def test_the_data_contract_documents_every_statistic_and_layers_column():
    from pathlib import Path

    doc = (Path(__file__).resolve().parent.parent / "docs" / "data.md").read_text(encoding="utf-8")
    missing = [s.name for s in STATISTICS if f"`{s.name}`" not in doc]
    missing += [c for c in LAYER_COLUMNS if f"`{c}`" not in doc]
    missing += [k for k in LAYER_KINDS if f"`{k}`" not in doc]
    assert not missing, f"docs/data.md does not mention {missing}"
