import itertools

import numpy as np
import pytest

import gradlab
from gradlab.nn.activations import Activation
from gradlab.nn.hooks import Monitor
from gradlab.nn.layers import Dense, LayerNorm, Residual
from gradlab.nn.losses import accuracy, mse, softmax_cross_entropy
from gradlab.nn.network import Network, mlp
from gradlab.nn.optim import SGD, Adam
from gradlab.testing import check_grads


def _flat(net):
    return np.concatenate([p.ravel() for p in net.params().values()])


def _set_flat(net, v):
    i = 0
    for p in net.params().values():
        p[...] = v[i : i + p.size].reshape(p.shape)
        i += p.size


@pytest.mark.parametrize(
    "kw",
    [
        {"activation": "tanh", "init": "glorot_uniform"},
        {"activation": "relu", "batch_norm": True},
        {"activation": "elu", "layer_norm": True, "residual": True},
        {"activation": "sigmoid", "residual": True, "batch_norm": True, "bias_scale": 0.3},
        {"activation": "gelu", "dropout": 0.2},
    ],
)
def test_whole_network_gradients(kw):
    """The network's backward, end to end through the loss, against finite differences."""
    rng = np.random.default_rng(0)
    net = mlp(3, 4, depth=3, width=5, rng=1, **kw)
    x, y = rng.standard_normal((6, 3)), rng.integers(0, 4, 6)
    dropout_rngs = [la.rng for _, la in net.named_layers() if hasattr(la, "rng")]
    states = [r.bit_generator.state for r in dropout_rngs]

    def same_masks():
        for r, s in zip(dropout_rngs, states, strict=True):
            r.bit_generator.state = s

    def loss_at(v):
        _set_flat(net, v)
        same_masks()
        return softmax_cross_entropy(net.forward(x), y)[0]

    v0 = _flat(net)
    same_masks()
    _, g = softmax_cross_entropy(net.forward(x), y)
    gx = net.backward(g)
    assert gx.shape == x.shape
    analytic = np.concatenate([gr.ravel() for gr in net.grads().values()])
    assert check_grads(loss_at, v0, analytic, directions=10) < 1e-6
    _set_flat(net, v0)


def test_mlp_structure_and_names():
    net = mlp(2, 3, depth=3, width=8, activation="tanh", batch_norm=True, residual=True, dropout=0.1)
    names = [n for n, _ in net.named_layers()]
    assert names[:4] == ["dense_0", "batchnorm_1", "tanh_2", "dropout_3"]
    assert names[4] == "residual_4" and names[5] == "dense_5"
    assert names[-1].startswith("dense_")
    assert net.params()["dense_0.W"].shape == (2, 8)
    assert net.params()[f"{names[-1]}.W"].shape == (8, 3)
    assert set(net.params()) == set(net.grads())


def test_normal_init_follows_sigma_w_convention():
    net = mlp(400, 2, depth=1, width=300, init="normal", weight_scale=1.5, bias_scale=0.2, rng=0)
    W, b = net.params()["dense_0.W"], net.params()["dense_0.b"]
    assert W.std() == pytest.approx(1.5 / np.sqrt(400), rel=0.02)
    assert b.std() == pytest.approx(0.2, rel=0.15)
    he = mlp(400, 2, depth=1, width=300, init="he_normal", weight_scale=2.0, rng=0)
    assert he.params()["dense_0.W"].std() == pytest.approx(2.0 * np.sqrt(2 / 400), rel=0.02)


def _train(net, x, y, steps, opt, batch=None):
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(steps):
        idx = rng.choice(len(x), batch, replace=False) if batch else slice(None)
        loss, g = softmax_cross_entropy(net.forward(x[idx]), y[idx])
        net.backward(g)
        opt.step(net.params(), net.grads())
        losses.append(loss)
    return losses


def test_determinism_bit_identical():
    def run():
        net = mlp(4, 3, depth=3, width=16, activation="tanh", dropout=0.1, batch_norm=True, rng=42)
        x = np.random.default_rng(1).standard_normal((32, 4))
        y = np.random.default_rng(2).integers(0, 3, 32)
        losses = _train(net, x, y, 5, SGD(0.1, momentum=0.9))
        return losses, _flat(net), np.concatenate([g.ravel() for g in net.grads().values()])

    a, b = run(), run()
    assert a[0] == b[0]
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[2], b[2])
    other = mlp(4, 3, depth=3, width=16, activation="tanh", rng=43)
    assert not np.array_equal(_flat(other), a[1])


def test_float32_end_to_end():
    net = mlp(4, 3, depth=2, width=8, dtype="float32", batch_norm=True, rng=0)
    x = np.random.default_rng(1).standard_normal((16, 4)).astype(np.float32)
    out = net.forward(x)
    assert out.dtype == np.float32
    _, g = softmax_cross_entropy(out, np.zeros(16, dtype=int))
    assert net.backward(g).dtype == np.float32
    assert all(v.dtype == np.float32 for v in net.grads().values())


def test_mlp_learns_blobs():
    """Depth 3, width 64, on four Gaussian blobs: > 95 % training accuracy in a few seconds."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((4, 10)) * 3
    y = rng.integers(0, 4, 512)
    x = centres[y] + rng.standard_normal((512, 10))
    net = mlp(10, 4, depth=3, width=64, activation="relu", init="he_normal", rng=0)
    losses = _train(net, x, y, 300, Adam(1e-2), batch=64)
    assert losses[-1] < losses[0]
    assert accuracy(net.forward(x), y) > 0.95


class Recorder(Monitor):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.events = []

    def on_forward(self, name, layer, x, y):
        self.events.append(("f", name, x.shape, y.shape, y.flags.writeable))

    def on_backward(self, name, layer, grad_in, grad_out):
        self.events.append(("b", name))

    def on_step(self, step, info):
        self.events.append(("s", step))


def test_hooks_see_each_layer_once_in_order_and_readonly():
    net = mlp(3, 2, depth=2, width=4, activation="tanh", residual=True, rng=0)
    rec = Recorder()
    with net.attach(rec):
        out = net.forward(np.ones((5, 3)))
        net.backward(np.ones_like(out))
    fwd = [e[1] for e in rec.events if e[0] == "f"]
    bwd = [e[1] for e in rec.events if e[0] == "b"]
    # A residual block finishes after its body.
    assert fwd == ["dense_0", "tanh_1", "dense_3", "tanh_4", "residual_2", "dense_5"]
    assert bwd == ["dense_5", "tanh_4", "dense_3", "residual_2", "tanh_1", "dense_0"]
    assert not any(e[4] for e in rec.events if e[0] == "f")
    # Detached: no more events.
    n = len(rec.events)
    net.forward(np.ones((5, 3)))
    assert len(rec.events) == n and net.monitors == ()


@pytest.mark.parametrize("hooked", [False, True])
def test_residual_in_a_network_matches_the_block_alone(hooked):
    rng = np.random.default_rng(0)
    block = Residual(
        [
            ("dense_a", Dense(rng.standard_normal((4, 4)) / 2, rng.standard_normal(4))),
            ("layernorm_b", LayerNorm(4)),
            ("tanh_c", Activation("tanh")),
        ]
    )
    net = Network([("res", block)])
    x, g = rng.standard_normal((6, 4)), rng.standard_normal((6, 4))
    rec = Recorder()
    with net.attach(*([rec] if hooked else [])):
        y_net, gx_net = net.forward(x), net.backward(g)
    grads_net = {k: v.copy() for k, v in block.grads.items()}
    y, gx = block.forward(x), block.backward(g)
    np.testing.assert_array_equal(y_net, y)
    np.testing.assert_array_equal(gx_net, gx)
    for k, v in block.grads.items():
        np.testing.assert_array_equal(grads_net[k], v)
    if hooked:  # every body layer once, then the block (whose grad_in needs the body's)
        assert [e[1] for e in rec.events if e[0] == "f"] == ["dense_a", "layernorm_b", "tanh_c", "res"]
        assert [e[1] for e in rec.events if e[0] == "b"] == ["tanh_c", "layernorm_b", "dense_a", "res"]


def test_network_reports_a_residual_body_that_changes_the_shape():
    net = Network([("res", Residual([Dense(np.ones((3, 2)))]))])
    with pytest.raises(ValueError, match="shapes must match"):
        net.forward(np.ones((1, 3)))


def test_hook_layer_filter_and_schedule():
    net = mlp(3, 2, depth=3, width=4, rng=0)
    rec = Recorder(layers="dense_*", every=2)
    with net.attach(rec):
        for step in range(4):
            net.begin_step(step)
            net.forward(np.ones((2, 3)))
            net.end_step(step, gradlab.StepInfo())
    assert [e[1] for e in rec.events if e[0] == "s"] == [0, 2]
    assert {e[1] for e in rec.events if e[0] == "f"} == {"dense_0", "dense_2", "dense_4", "dense_6"}


def test_hook_that_raises_does_not_leave_network_hooked():
    class Boom(Monitor):
        def on_forward(self, *a):
            raise RuntimeError("boom")

    net = mlp(3, 2, depth=1, width=4, rng=0)
    with pytest.raises(RuntimeError, match="boom"), net.attach(Boom()):
        net.forward(np.ones((2, 3)))
    assert net.monitors == ()
    net.forward(np.ones((2, 3)))


def test_failed_attach_undoes_its_on_attach_calls_and_keeps_the_monitors():
    calls = []

    class Tracked(Recorder):
        def __init__(self, tag, fail=False):
            super().__init__()
            self.tag, self.fail = tag, fail

        def on_attach(self, names, layers):
            calls.append(("attach", self.tag))
            if self.fail:
                raise RuntimeError("no")

        def on_detach(self):
            calls.append(("detach", self.tag))

    net = mlp(3, 2, depth=1, width=4, rng=0)
    kept = Tracked("kept")
    with net.attach(kept):
        with pytest.raises(RuntimeError, match="no"):
            net.attach(Tracked("ok"), Tracked("bad", fail=True))
        assert net.monitors == (kept,)
        assert calls == [("attach", "kept"), ("attach", "ok"), ("attach", "bad"), ("detach", "ok")]
        net.forward(np.ones((2, 3)))
        assert [e[1] for e in kept.events if e[0] == "f"] == ["dense_0", "relu_1", "dense_2"]
    assert net.monitors == () and calls[-1] == ("detach", "kept")


def test_attach_rejects_non_monitors():
    with pytest.raises(TypeError, match="missing on_forward"):
        mlp(3, 2, depth=1, width=4).attach(object())


def test_seed_example_trains_to_targets():
    """The source text's 2→4→3 net (ReLU, then sigmoid, MSE) on one input reaches its targets."""
    rng = np.random.default_rng(0)
    net = Network(
        [
            ("dense_0", Dense(rng.standard_normal((2, 4)) * np.sqrt(2 / 2))),
            ("relu_1", Activation("relu")),
            ("dense_2", Dense(rng.standard_normal((4, 3)) * np.sqrt(2 / 4))),
            ("sigmoid_3", Activation("sigmoid")),
        ]
    )
    x, t = np.array([[0.5, 0.6]]), np.array([[0.3, 0.7, 0.9]])
    opt = SGD(lr=1.0)
    for _ in range(3000):
        _, g = mse(net.forward(x), t)
        net.backward(g)
        opt.step(net.params(), net.grads())
    assert mse(net.forward(x), t)[0] < 1e-4
    np.testing.assert_allclose(net.forward(x), t, atol=0.02)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"depth": -1}, "depth=-1"),
        ({"width": 0}, "width=0"),
        ({"width": 2.5}, "width=2.5"),
        ({"activation": "swish"}, "activation='swish'"),
        ({"init": "xavier"}, "init='xavier'"),
        ({"dtype": "float16"}, "dtype='float16'"),
        ({"dropout": 1.0}, "dropout=1.0"),
        ({"weight_scale": -1.0}, "weight_scale=-1.0"),
        ({"batch_norm": True, "layer_norm": True}, "at most one"),
        ({"rng": "seed"}, "Generator"),
    ],
)
def test_bad_mlp_arguments(kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        mlp(2, 2, **kw)


def test_wrong_input_shape_is_an_error():
    with pytest.raises(ValueError, match=r"\(batch, 3\)"):
        mlp(3, 2, depth=2).forward(np.ones((4, 2)))


def test_duplicate_names_rejected():
    d = Dense(np.ones((2, 2)))
    with pytest.raises(ValueError, match="repeated: a"):
        Network([("a", d), ("a", Activation("relu"))])


def test_attaching_a_monitor_twice_is_refused_and_its_metrics_kept():
    net = mlp(3, 2, depth=2, width=4, rng=0)
    mon = gradlab.GradientMonitor()
    with pytest.raises(ValueError, match="already attached to this network; attach a monitor once"):
        net.attach(mon, mon)
    assert net.monitors == ()
    x, y = np.ones((4, 3)), np.zeros(4, dtype=int)
    with net.attach(mon):
        with pytest.raises(ValueError, match="already attached"):
            net.attach(mon)  # nested
        assert net.monitors == (mon,)
        gradlab.train_loop(net, iter([(x, y)] * 3), softmax_cross_entropy, SGD(0.1), steps=1)
    layers = set(mon.frame()["layer"].astype(str)) - {""}
    assert layers == {n for n, _ in net.named_layers()}  # every per-layer metric is there
    with net.attach(mon):  # detached, it may be attached again
        pass


def test_hooks_see_one_view_per_array_so_a_gradient_is_measured_once():
    from gradlab.nn.hooks import Monitor

    class Seen(Monitor):
        def __init__(self):
            super().__init__()
            self.fwd, self.bwd = {}, {}

        def on_forward(self, name, layer, x, y):
            self.fwd[name] = (x, y)

        def on_backward(self, name, layer, grad_in, grad_out):
            self.bwd[name] = (grad_in, grad_out)

    net = mlp(4, 2, depth=2, width=3)
    m = Seen()
    with net.attach(m):
        out = net.forward(np.ones((5, 4)))
        net.backward(np.ones_like(out))
    names = [n for n, _ in net.named_layers()]
    for prev, nxt in itertools.pairwise(names):
        assert m.fwd[prev][1] is m.fwd[nxt][0]  # y of one layer is the same view as x of the next
        assert m.bwd[nxt][0] is m.bwd[prev][1]  # ∂L/∂x of one is the view of ∂L/∂y of the one before
