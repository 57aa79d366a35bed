"""The stacked workspace: which layers it stacks, that it leaves the arithmetic alone, and that the
monitor's batched statistics equal its per-layer ones."""

import itertools

import numpy as np
import pandas as pd
import pytest

from gradlab.experiment.config import Config
from gradlab.experiment.train import run, train_loop
from gradlab.monitor.gradient_monitor import GradientMonitor
from gradlab.nn import workspace
from gradlab.nn.hooks import Monitor
from gradlab.nn.losses import softmax_cross_entropy
from gradlab.nn.network import mlp
from gradlab.nn.optim import SGD, Adam
from gradlab.nn.workspace import plan


def _batch(n=32, d=6, classes=3, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(dtype), rng.integers(0, classes, n)


class _PerLayer(GradientMonitor):
    stacked = False  # the same monitor, every layer through its per-layer hooks


def _train(monitor, steps=12, dtype="float64", opt=None, **net_kw):
    net = mlp(6, 3, dtype=dtype, **net_kw)
    x, y = _batch(dtype=np.dtype(dtype))
    with net.attach(monitor):
        res = train_loop(net, itertools.repeat((x, y)), softmax_cross_entropy, opt or SGD(0.05), steps)
    return net, res


def _frames(steps=12, dtype="float64", mon_kw=None, opt=None, **net_kw):
    out = []
    for cls in (GradientMonitor, _PerLayer):
        m = cls(run="r", hist_every=4, **(mon_kw or {}))
        _, res = _train(m, steps, dtype, opt() if opt else None, **net_kw)
        out.append((m, res))
    return out


NETS = {
    "relu": dict(depth=4, width=8, activation="relu"),
    "tanh": dict(depth=4, width=8, activation="tanh", init="glorot_uniform"),
    "sigmoid": dict(depth=3, width=8, activation="sigmoid", init="standard"),
    "gelu needs x": dict(depth=3, width=8, activation="gelu"),
    "elu": dict(depth=3, width=8, activation="elu"),
    "batch norm": dict(depth=3, width=8, activation="relu", batch_norm=True),
    "dropout": dict(depth=3, width=8, activation="relu", dropout=0.2),
    "residual": dict(depth=4, width=8, activation="tanh", residual=True),
    "layer norm": dict(depth=3, width=8, activation="tanh", layer_norm=True),
}


@pytest.mark.parametrize("grads_stacked", [True, False], ids=["grads stacked", "large: grads per layer"])
@pytest.mark.parametrize("name", list(NETS))
def test_stacked_statistics_equal_per_layer_statistics(name, grads_stacked, monkeypatch):
    if not grads_stacked:  # as for layers too large to stack their gradients
        monkeypatch.setattr(workspace, "GRAD_STACK_MAX", 0)
    (fast, _), (slow, _) = _frames(**NETS[name])
    a, b = fast.frame(), slow.frame()
    keys = ["run", "step", "layer", "metric"]
    pd.testing.assert_frame_equal(a[keys], b[keys])
    np.testing.assert_allclose(a["value"], b["value"], rtol=1e-12, atol=1e-300, equal_nan=True)
    pd.testing.assert_frame_equal(fast.hist_frame(), slow.hist_frame())  # bins are exact
    pd.testing.assert_frame_equal(fast.layers_frame(), slow.layers_frame())


def test_stacked_statistics_in_float32_within_float32_rounding():
    (fast, _), (slow, _) = _frames(dtype="float32", opt=lambda: Adam(1e-3), **NETS["relu"])
    a, b = fast.frame(), slow.frame()
    # a mean near 0 is a difference of large sums: its rounding is absolute, not relative
    np.testing.assert_allclose(a["value"], b["value"], rtol=2e-5, atol=1e-6, equal_nan=True)


def test_a_layer_filter_and_a_statistic_subset_hold_on_the_stacked_path():
    kw = dict(layers=["relu_*", "dense_4"], stats=["activations", "gradients"])
    (fast, _), (slow, _) = _frames(mon_kw=kw, **NETS["relu"])
    a, b = fast.frame(), slow.frame()
    assert set(a["layer"]) == {"", "relu_1", "relu_3", "relu_5", "relu_7", "dense_4"}
    assert len(a) == len(b)
    np.testing.assert_allclose(a["value"], b["value"], rtol=1e-12, equal_nan=True)


def test_divergence_step_and_layer_agree_between_paths(monkeypatch):
    config = Config(activation="relu", init="he_normal", lr=50.0, steps=50, depth=5, width=32,
                    dtype="float32")
    fast = run(config)
    monkeypatch.setattr(GradientMonitor, "stacked", False)
    slow = run(config)
    assert fast.status == slow.status == "diverged"
    assert (fast.diverged_step, fast.diverged_layer) == (slow.diverged_step, slow.diverged_layer)
    a, b = fast.metrics, slow.metrics
    np.testing.assert_allclose(a["value"], b["value"], rtol=2e-5, atol=1e-6, equal_nan=True)


def test_a_nan_in_a_stacked_layer_is_counted_and_named():
    x, y = _batch()
    x[3, 1] = np.nan
    frames = []
    for cls in (GradientMonitor, _PerLayer):
        net, m = mlp(6, 3, depth=3, width=8, activation="tanh"), cls()
        with net.attach(m):
            res = train_loop(net, itertools.repeat((x, y)), softmax_cross_entropy, SGD(0.1), 5)
        assert res.status == "diverged" and m.divergence == (0, "dense_0")
        frames.append(m.frame())
    a, b = frames
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-12)
    tanh = a[(a.layer == "tanh_3") & (a.metric == "nonfinite")].value.iloc[0]
    assert tanh == 8 + 8  # the NaN sample's row: 8 units in the output, 8 in ∂L/∂x


def test_the_workspace_changes_no_bit_of_the_training():
    def final(monitor):
        net, _ = _train(monitor, steps=8, dtype="float32", depth=4, width=8, activation="tanh")
        return {k: v.copy() for k, v in net.params().items()}

    class Plain(Monitor):  # a non-stacked monitor: no workspace, fresh arrays
        pass

    stacked, plain = final(GradientMonitor()), final(Plain())
    for k in plain:
        np.testing.assert_array_equal(stacked[k], plain[k])


def test_plan_stacks_hidden_dense_and_activation_layers_but_never_the_output():
    net = mlp(6, 3, depth=3, width=8, activation="relu")
    ws = plan(net.layers, (32, 6), np.float64)
    groups = {g.names: g.kind for g in ws.groups}  # dense_0 is 6×8: its weights do not stack with 8×8
    assert groups == {("dense_0",): "dense", ("relu_1", "relu_3", "relu_5"): "relu",
                      ("dense_2", "dense_4"): "dense"}
    assert "dense_6" not in ws.slot
    assert ws.slot["relu_3"][0].y.shape == (3, 32, 8) and ws.slot["relu_3"][1] == 1
    assert ws.pred["relu_1"] == "dense_0" and ws.pred["dense_0"] is None
    assert ws.grad_slot == ws.slot  # small layers: their gradients are stacked too


def test_plan_skips_what_cannot_write_in_place():
    bn = plan(mlp(6, 3, depth=2, width=8, batch_norm=True).layers, (32, 6), np.float64)
    assert {g.kind for g in bn.groups} == {"relu"}  # a Dense feeding BatchNorm: its ∂L/∂y is not in place
    residual = plan(mlp(6, 3, depth=3, width=8, residual=True).layers, (32, 6), np.float64)
    assert residual.slot.keys() == {"dense_0"}  # the blocks' bodies run per layer
    mixed = mlp(6, 3, depth=2, width=8)
    assert plan(mixed.layers, (32, 6), np.float32) is None  # float64 weights on float32 input: no stacking
    assert plan(mlp(6, 3, depth=0).layers, (32, 6), np.float64) is None


def test_mlp_parameters_share_one_stack_until_a_user_replaces_one():
    x, y = _batch()
    for replace in (False, True):
        net, m = mlp(6, 3, depth=4, width=8), GradientMonitor()
        layer = dict(net.named_layers())["dense_4"]
        if replace:
            layer.params["W"] = layer.params["W"] * 2.0
        w0 = np.linalg.norm(layer.params["W"])
        with net.attach(m):
            train_loop(net, itertools.repeat((x, y)), softmax_cross_entropy, SGD(0.05), 2)
        ws = next(w for w in net._plans.values() if w is not None)
        group = ws.slot["dense_2"][0]
        assert group.names == ("dense_2", "dense_4", "dense_6")  # dense_0 is 6×8, the others 8×8
        assert (group.stacked("W") is None) == replace
        assert group.stacked("W", grads=True) is not None
        f = m.frame()
        at0 = f[(f.step == 0) & (f.layer == "dense_4") & (f.metric == "weight_norm")].value.iloc[0]
        assert at0 == pytest.approx(w0, rel=1e-12)


def test_another_monitor_attached_turns_stacking_off_so_its_arrays_stay_its_own():
    class Keeper(Monitor):
        def __init__(self):
            super().__init__()
            self.kept = []

        def on_forward(self, name, layer, x, y):
            if name == "relu_1":
                self.kept.append((y, y.copy()))

    net = mlp(6, 3, depth=3, width=8)
    keeper, gm = Keeper(), GradientMonitor()
    x, y = _batch()
    with net.attach(gm, keeper):
        train_loop(net, itertools.repeat((x, y)), softmax_cross_entropy, SGD(0.05), 3)
    assert len(keeper.kept) == 4
    for seen, copy in keeper.kept:
        np.testing.assert_array_equal(seen, copy)  # not overwritten by a later step
    assert not any(w is not None for w in net._plans.values()) or not net._stacked


def test_dead_relu_units_are_found_on_the_stacked_path_as_per_layer():
    frames = []
    for cls in (GradientMonitor, _PerLayer):
        net, m = mlp(6, 3, depth=3, width=8, activation="relu"), cls()
        dict(net.named_layers())["dense_2"].params["b"][:3] = -100.0  # relu_3's units 0–2 never fire
        x, y = _batch()
        with net.attach(m):
            train_loop(net, itertools.repeat((x, y)), softmax_cross_entropy, SGD(0.01), 12)
        frames.append(m.frame())
    a, b = frames
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-12)
    dead = a[(a.layer == "relu_3") & (a.metric == "dead_frac")].value
    window = a[(a.layer == "relu_3") & (a.metric == "dead_frac_window")].value
    assert (dead >= 3 / 8).all() and window.iloc[-1] >= 3 / 8


def test_batches_of_two_sizes_keep_one_dead_unit_history():
    frames = []
    for cls in (GradientMonitor, _PerLayer):
        net, m = mlp(6, 3, depth=3, width=8, activation="relu"), cls(dead_window=3)
        dict(net.named_layers())["dense_2"].params["b"][:2] = -100.0
        x, y = _batch()
        sizes = itertools.cycle([32, 32, 16, 32, 16, 16, 32])  # two plans, switched back and forth
        stream = ((x[:n], y[:n]) for n in sizes)
        with net.attach(m):
            train_loop(net, stream, softmax_cross_entropy, SGD(0.05), 14)
        frames.append(m.frame())
    a, b = frames
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-12)
    window = a[(a.layer == "relu_3") & (a.metric == "dead_frac_window")].value
    assert (window.iloc[3:] >= 2 / 8).all()


def test_large_layers_keep_their_gradients_out_of_the_stacks(monkeypatch):
    monkeypatch.setattr(workspace, "GRAD_STACK_MAX", 32 * 8 - 1)  # just below one layer's 32×8 gradient
    ws = plan(mlp(6, 3, depth=3, width=8).layers, (32, 6), np.float64)
    assert ws.slot and not ws.grad_slot and not ws.g_out and all(g.g is None for g in ws.groups)
