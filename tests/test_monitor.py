"""The monitor's statistics against hand computations, in gradlab's Network and in a user's loop."""

import importlib.util
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gradlab.experiment.config import Config, ConfigError
from gradlab.experiment.data import make_dataset
from gradlab.experiment.train import run, train_loop
from gradlab.monitor.gradient_monitor import GradientMonitor
from gradlab.monitor.observer import Observer
from gradlab.nn.activations import Activation
from gradlab.nn.layers import Dense
from gradlab.nn.losses import mse, softmax_cross_entropy
from gradlab.nn.network import Network, mlp
from gradlab.nn.optim import SGD
from gradlab.records import HIST_COLUMNS, METRIC_COLUMNS, METRICS


def _value(frame, step, layer, metric):
    sel = frame[(frame.step == step) & (frame.layer == layer) & (frame.metric == metric)]
    assert len(sel) == 1, (step, layer, metric, len(sel))
    return float(sel.value.iloc[0])


def _stream(x, y):
    while True:
        yield x, y


def _two_layer(W0, b0, W1, b1, act="tanh"):
    return Network([("dense_0", Dense(W0, b0)), (f"{act}_1", Activation(act)), ("dense_2", Dense(W1, b1))])


def test_norms_and_update_ratio_by_hand():
    rng = np.random.default_rng(0)
    W0, b0, W1, b1 = (
        rng.standard_normal((3, 4)),
        rng.standard_normal(4),
        rng.standard_normal((4, 2)),
        np.zeros(2),
    )
    x, t = rng.standard_normal((5, 3)), rng.standard_normal((5, 2))
    # by hand
    z = x @ W0 + b0
    h = np.tanh(z)
    out = h @ W1 + b1
    g_out = 2 * (out - t) / out.size
    g_h = g_out @ W1.T
    g_z = g_h * (1 - h**2)
    g_x = g_z @ W0.T
    dW0 = x.T @ g_z
    lr = 0.1
    net = _two_layer(W0.copy(), b0.copy(), W1.copy(), b1.copy())
    mon = GradientMonitor()
    with net.attach(mon):
        train_loop(net, _stream(x, t), mse, SGD(lr), steps=1, classification=False)
    f = mon.frame()
    assert _value(f, 0, "dense_2", "grad_out_norm") == pytest.approx(np.linalg.norm(g_out))
    assert _value(f, 0, "dense_2", "grad_in_norm") == pytest.approx(np.linalg.norm(g_h))
    assert _value(f, 0, "tanh_1", "grad_out_norm") == pytest.approx(np.linalg.norm(g_h))
    assert _value(f, 0, "tanh_1", "grad_in_norm") == pytest.approx(np.linalg.norm(g_z))
    assert _value(f, 0, "dense_0", "grad_in_norm") == pytest.approx(np.linalg.norm(g_x))
    assert _value(f, 0, "dense_0", "grad_norm") == pytest.approx(np.linalg.norm(dW0))
    assert _value(f, 0, "dense_0", "grad_b_norm") == pytest.approx(np.linalg.norm(g_z.sum(0)))
    assert _value(f, 0, "dense_0", "weight_norm") == pytest.approx(np.linalg.norm(W0))  # before the update
    assert _value(f, 0, "dense_0", "update_ratio") == pytest.approx(
        lr * np.linalg.norm(dW0) / np.linalg.norm(W0)
    )
    assert _value(f, 0, "tanh_1", "act_mean") == pytest.approx(h.mean())
    assert _value(f, 0, "tanh_1", "act_std") == pytest.approx(h.std())
    assert _value(f, 0, "dense_0", "act_std") == pytest.approx(z.std())
    assert _value(f, 0, "", "loss") == pytest.approx(np.mean((out - t) ** 2))
    # step 1 is measured after one update and has no update of its own
    assert _value(f, 1, "dense_0", "weight_norm") == pytest.approx(np.linalg.norm(W0 - lr * dW0))
    assert f[(f.step == 1) & (f.metric == "update_ratio")].empty


def test_saturated_tanh_layer_in_a_network():
    W0 = np.array([[10.0, 0.1, -10.0]])  # x=±1 drives units 0 and 2 to the bounds
    net = _two_layer(W0, np.zeros(3), np.ones((3, 1)), np.zeros(1))
    x = np.array([[1.0], [-1.0], [0.05], [1.0]])
    mon = GradientMonitor()
    with net.attach(mon):
        train_loop(net, _stream(x, np.zeros((4, 1))), mse, SGD(0.01), steps=0, classification=False)
    h = np.tanh(x @ W0)
    assert _value(mon.frame(), 0, "tanh_1", "saturation") == pytest.approx(np.mean(np.abs(h) > 0.99))
    assert _value(mon.frame(), 0, "tanh_1", "saturation") == 6 / 12  # by hand: units 0, 2 at x=±1


def test_half_dead_relu_layer_and_window():
    # units 0 and 1 have bias −100: dead for any input in [−1, 1]; units 2 and 3 alive.
    W0 = np.ones((2, 4))
    b0 = np.array([-100.0, -100.0, 0.5, 0.5])
    net = _two_layer(W0, b0, np.ones((4, 1)), np.zeros(1), act="relu")
    rng = np.random.default_rng(0)
    mon = GradientMonitor(dead_window=3)
    x = rng.uniform(-0.2, 0.2, (8, 2))
    with net.attach(mon):
        train_loop(net, _stream(x, np.zeros((8, 1))), mse, SGD(1e-6), steps=4, classification=False)
    f = mon.frame()
    for step in range(5):
        assert _value(f, step, "relu_1", "dead_frac") == 0.5
        assert _value(f, step, "relu_1", "inactive_frac") == 0.5
        assert _value(f, step, "relu_1", "dead_frac_window") == 0.5


def test_dead_window_counts_only_units_dead_for_the_whole_window():
    obs = Observer(dead_window=2)
    on, off = np.array([[1.0, 0.0]]), np.array([[0.0, 0.0]])
    for step, y in enumerate([on, off, off, on]):
        obs.observe(step, "relu_0", output=y, activation="relu")
    f = obs.frame()
    # unit 1 is never active → dead in the window at once; unit 0 off at steps 1 and 2
    assert [_value(f, s, "relu_0", "dead_frac_window") for s in range(4)] == [0.5, 0.5, 1.0, 0.5]
    assert [_value(f, s, "relu_0", "dead_frac") for s in range(4)] == [0.5, 1.0, 1.0, 0.5]


def test_a_layer_with_one_nan_and_the_divergence_guard():
    net = mlp(3, 2, depth=2, width=4, activation="tanh", rng=0)
    x = np.ones((4, 3))
    x[1, 2] = np.nan
    mon = GradientMonitor()
    with net.attach(mon):
        res = train_loop(net, _stream(x, np.zeros(4, dtype=int)), softmax_cross_entropy, SGD(0.1), steps=5)
    assert res.status == "diverged" and res.diverged_step == 0 and res.steps_done == 0
    f = mon.frame()
    # one NaN input row poisons one row (4 units) of dense_0's output; its gradients are NaN too
    assert _value(f, 0, "dense_0", "nonfinite") >= 4
    assert _value(f, 0, "tanh_1", "nonfinite") >= 4
    assert mon.divergence == (0, "dense_0")
    assert f.step.max() == 0  # the run stopped cleanly at the step it diverged


def test_diverging_learning_rate_is_a_result():
    res = run(Config(activation="relu", init="he_normal", lr=50.0, steps=50, depth=5, width=32))
    assert res.status == "diverged"
    assert res.diverged_step is not None and 0 < res.diverged_step < 50
    assert res.diverged_layer is not None
    f = res.metrics
    assert f.step.max() == res.diverged_step
    # the step it diverged at shows why: a NaN/Inf entry, a non-finite loss, or an overflowing norm
    at = f[f.step == res.diverged_step]
    nonfinite = at[at.metric == "nonfinite"].value.sum()
    loss = _value(f, res.diverged_step, "", "loss")
    total = _value(f, res.diverged_step, "", "grad_norm_total")
    assert nonfinite > 0 or not np.isfinite(loss) or not np.isfinite(total)
    assert np.isfinite(_value(f, res.diverged_step - 1, "", "grad_norm_total"))


def test_divergence_off_the_record_schedule_is_still_measured():
    res = run(
        Config(activation="relu", init="he_normal", lr=50.0, steps=50, depth=5, width=32, record_every=7)
    )
    assert res.status == "diverged" and res.diverged_step % 7 != 0  # not a scheduled step
    assert res.diverged_layer is not None
    assert res.metrics.step.max() == res.diverged_step


def test_steps_zero_measures_the_untrained_network():
    res = run(Config(steps=0, dataset="gaussian", depth=3, width=16, n_samples=256))
    f = res.metrics
    assert set(f.step) == {0}
    assert {"grad_out_norm", "grad_norm", "saturation", "loss", "act_std"} <= set(f.metric)
    assert "update_ratio" not in set(f.metric)


def test_frame_schema_and_vocabulary():
    res = run(Config(steps=3, depth=2, width=8, activation="relu", init="he_normal", hist_every=1))
    f = res.metrics
    assert list(f.columns) == METRIC_COLUMNS
    assert set(f.metric) <= set(METRICS)
    assert f.step.dtype == np.int64 and f.value.dtype == np.float64
    assert set(f[f.layer == ""].metric) == {
        "loss",
        "accuracy",
        "grad_norm_total",
        "grad_norm_clipped",
        "clipped",
        "lr",
    }
    h = res.hists
    assert list(h.columns) == HIST_COLUMNS
    # each histogram counts every entry of the (batch, units) array
    per = h[(h.step == 0) & (h.layer == "relu_1") & (h.quantity == "act")]["count"].sum()
    assert per == 128 * 8


def test_layer_filter_and_schedule():
    net = mlp(3, 2, depth=3, width=4, rng=0)
    mon = GradientMonitor(layers=["dense_*"], every=3)
    x, y = np.ones((4, 3)), np.zeros(4, dtype=int)
    with net.attach(mon):
        train_loop(net, _stream(x, y), softmax_cross_entropy, SGD(0.1), steps=7)
    f = mon.frame()
    assert sorted(set(f.step)) == [0, 3, 6]
    assert set(f.layer) == {"", "dense_0", "dense_2", "dense_4", "dense_6"}


def test_run_is_deterministic():
    cfg = Config(
        steps=5, depth=3, width=16, dropout=0.2, batch_norm=True, activation="relu", init="he_normal"
    )
    a, b = run(cfg), run(cfg)
    pd.testing.assert_frame_equal(a.metrics, b.metrics)
    pd.testing.assert_frame_equal(a.hists, b.hists)


def test_same_seed_arms_see_the_same_batches():
    from gradlab.experiment.train import batch_stream

    ds = make_dataset("spirals", n_samples=256, seed=3)
    s1 = batch_stream(ds, Config(seed=3, batch_size=32, n_samples=256, activation="relu"))
    s2 = batch_stream(ds, Config(seed=3, batch_size=32, n_samples=256, depth=40))
    for _ in range(10):
        a, b = next(s1), next(s2)
        np.testing.assert_array_equal(a[0], b[0])


def _load_example():
    path = Path(__file__).resolve().parent.parent / "examples" / "seed_net.py"
    spec = importlib.util.spec_from_file_location("seed_net", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_users_own_loop_records_what_gradlab_records():
    """The source text's Net, corrected and observed with Observer, matches gradlab's own Network."""
    ex = _load_example()
    hand = ex.build()
    # gradlab's Network with the same initial weights (transposed to (fan_in, fan_out))
    net = Network(
        [
            ("dense_0", Dense(hand.layers[0]["weights"].T.copy(), hand.layers[0]["biases"].copy())),
            ("relu_1", Activation("relu")),
            ("dense_2", Dense(hand.layers[1]["weights"].T.copy(), hand.layers[1]["biases"].copy())),
            ("sigmoid_3", Activation("sigmoid")),
        ]
    )
    obs = Observer(run="r")
    final = ex.train(hand, obs, steps=200)
    mon = GradientMonitor(run="r")
    x, t = np.array([[0.5, 0.6]]), np.array([[0.3, 0.7, 0.9]])
    with net.attach(mon):
        train_loop(net, _stream(x, t), mse, SGD(1.0), steps=200, classification=False)
    mine, theirs = obs.frame(), mon.frame()
    compare = [
        "grad_norm",
        "grad_b_norm",
        "weight_norm",
        "update_ratio",
        "grad_in_norm",
        "grad_out_norm",
        "act_mean",
        "act_std",
        "dead_frac",
        "inactive_frac",
        "saturation",
        "loss",
    ]
    keys = ["step", "layer", "metric"]
    a = mine[mine.metric.isin(compare)].set_index(keys).value.sort_index()
    b = theirs[theirs.metric.isin(compare)].set_index(keys).value.sort_index()
    assert len(a) > 200 * 10
    assert a.index.equals(b.index)
    np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=1e-9, atol=1e-15)
    assert final < 1e-4


def test_seed_example_trains_to_its_targets():
    ex = _load_example()
    assert ex.train(ex.build(), None) < 1e-4


def test_observer_rejects_going_back_in_time_and_bad_window():
    obs = Observer()
    obs.observe(3, "relu_0", output=np.ones((2, 2)), activation="relu")
    with pytest.raises(ValueError, match="step=2 comes after step 3"):
        obs.observe(2, "relu_0", output=np.ones((2, 2)), activation="relu")
    with pytest.raises(ValueError, match="dead_window=0"):
        Observer(dead_window=0)


def test_monitor_hands_out_read_only_arrays():
    class Meddler(GradientMonitor):
        def on_forward(self, name, layer, x, y):
            y[...] = 0

    net = mlp(3, 2, depth=1, width=4, rng=0)
    with pytest.raises(ValueError, match="read-only"), net.attach(Meddler()):
        net.forward(np.ones((2, 3)))
    assert net.monitors == ()
    assert math.isfinite(float(net.forward(np.ones((2, 3))).sum()))


def test_statistic_groups_choose_what_is_computed():
    net = mlp(3, 2, depth=2, width=4, activation="tanh", rng=0)
    x, y = np.ones((4, 3)), np.zeros(4, dtype=int)
    mon = GradientMonitor(stats=["weights"])
    with net.attach(mon):
        train_loop(net, _stream(x, y), softmax_cross_entropy, SGD(0.1), steps=2)
    got = set(mon.frame().metric)
    assert {"grad_norm", "grad_in_norm", "grad_out_norm", "nonfinite", "weight_norm", "update_ratio"} <= got
    assert not got & {"act_mean", "act_std", "saturation"}
    full = GradientMonitor()
    with net.attach(full):
        train_loop(net, _stream(x, y), softmax_cross_entropy, SGD(0.1), steps=0)
    assert {"act_mean", "saturation"} <= set(full.frame().metric)
    with pytest.raises(ValueError, match=r"unknown group.*allowed: gradients, weights, activations, units"):
        GradientMonitor(stats=["norms"])


def test_config_chooses_the_statistic_groups():
    res = run(Config(steps=1, depth=2, width=8, record_stats=["gradients"]))
    assert "grad_out_norm" in set(res.metrics.metric)
    assert not set(res.metrics.metric) & {"act_mean", "weight_norm", "saturation"}
    with pytest.raises(ConfigError, match="'norms' is not a statistic group; allowed: gradients, weights"):
        Config(record_stats=["norms"])


def test_save_writes_parquet_that_pandas_reads_back(tmp_path):
    net = mlp(3, 2, depth=2, width=4, activation="relu", rng=0)
    mon = GradientMonitor(run="r", hist_every=1)
    with net.attach(mon):
        train_loop(
            net, _stream(np.ones((4, 3)), np.zeros(4, dtype=int)), softmax_cross_entropy, SGD(0.1), steps=2
        )
    path = mon.save(tmp_path / "metrics.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(path), mon.frame())
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "metrics.hists.parquet"), mon.hist_frame())


@pytest.mark.parametrize(("dtype", "value"), [(np.float16, 100.0), (np.float16, 60000.0), (np.int8, 100),
                                              (np.int16, -30000), (np.uint8, 200), (np.bool_, True),
                                              (np.float32, 1e30), (np.longdouble, 3.0)])
def test_observer_measures_every_real_dtype_in_float64(dtype, value):
    a = np.full((8, 8), value, dtype=dtype)
    exact = float(np.sqrt(np.sum(np.asarray(a, dtype=np.float64) ** 2)))
    obs = Observer(run="r")
    obs.observe(0, "fc", output=a, weight=a, weight_grad=a, bias_grad=a[0], grad_out=a, grad_in=a)
    got = obs.frame().set_index("metric")["value"]
    for metric in ("grad_norm", "weight_norm", "grad_in_norm", "grad_out_norm"):
        assert got[metric] == pytest.approx(exact, rel=1e-12), metric
    assert got["act_mean"] == pytest.approx(float(value)) and got["act_std"] == pytest.approx(0.0, abs=1e-6)
    assert got["nonfinite"] == 0 and obs.divergence is None  # no false "diverged"


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"output": np.ones((2, 2), dtype=complex)}, TypeError, "output of layer 'fc' has dtype complex128"),
    ({"grad_out": np.array([["a", "b"]])}, TypeError, "grad_out of layer 'fc' has dtype <U1"),
    ({"weight": np.array([object()])}, TypeError, "weight of layer 'fc' has dtype object"),
    ({"output": np.ones((0, 4))}, ValueError, r"output of layer 'fc' is empty \(shape \(0, 4\)\)"),
    ({"step": -1}, ValueError, "step=-1 must be an integer from 0"),
    ({"step": 2**63}, ValueError, "step=9223372036854775808 must be an integer"),
    ({"step": 1.5}, ValueError, "step=1.5 must be an integer"),
    ({"step": True}, ValueError, "step=True must be an integer"),
    ({"layer": ""}, ValueError, "layer='' must be a non-empty string"),
    ({"layer": 3}, ValueError, "layer=3 must be a non-empty string"),
    ({"layer": "\ud800"}, ValueError, "must be a non-empty string"),
    ({"kind": "conv2d"}, ValueError, "kind='conv2d' of layer 'fc' is not a layer kind; allowed: dense"),
])
def test_observer_refuses_what_it_cannot_measure_with_one_clear_line(kwargs, error, match):
    obs = Observer(run="r")
    args = {"step": 0, "layer": "fc", "output": np.ones((2, 2))} | kwargs
    with pytest.raises(error, match=match) as err:
        obs.observe(args.pop("step"), args.pop("layer"), **args)
    assert "\n" not in str(err.value)
    assert obs.frame().empty and obs.layers_frame().empty  # nothing half-recorded


def test_observer_rejects_negative_steps_in_observe_network_too():
    obs = Observer()
    with pytest.raises(ValueError, match="step=-3 must be an integer from 0"):
        obs.observe_network(-3, loss=1.0)
    with pytest.raises(TypeError, match="loss='high' must be a real number"):
        obs.observe_network(0, loss="high")
    with pytest.raises(ValueError, match="run=5 must be a string"):
        Observer(run=5)
    obs.observe_network(2**63 - 1, loss=1.0)  # the largest step int64 holds
    assert obs.frame()["step"].tolist() == [2**63 - 1]
