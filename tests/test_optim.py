"""Each optimizer against a two-step trajectory computed by hand on L(p) = Σp² (∇ = 2p)."""

import math

import numpy as np
import pytest

from gradlab.nn.optim import SGD, Adam, AdamW, clip_grad_norm, clip_grad_value, global_norm, make_optimizer


def _run(opt, steps=2, p0=(1.0, -2.0), name="d.W"):
    params = {name: np.array(p0)}
    history = []
    for _ in range(steps):
        grads = {name: 2 * params[name]}
        before = params[name].copy()
        upd = opt.step(params, grads)
        np.testing.assert_allclose(upd[name], params[name] - before, rtol=1e-12)
        history.append(params[name].copy())
    return history


def test_sgd():
    p1, p2 = _run(SGD(lr=0.1))
    np.testing.assert_allclose(p1, [0.8, -1.6])
    np.testing.assert_allclose(p2, [0.64, -1.28])


def test_momentum():
    # v1 = g1 = (2, -4); p1 = p0 - 0.1 v1. g2 = 2 p1; v2 = 0.9 v1 + g2; p2 = p1 - 0.1 v2.
    p1, p2 = _run(SGD(lr=0.1, momentum=0.9))
    np.testing.assert_allclose(p1, [0.8, -1.6])
    np.testing.assert_allclose(p2, [0.8 - 0.1 * (1.8 + 1.6), -1.6 + 0.1 * (3.6 + 3.2)])


def test_nesterov():
    # step: v = μv + g; p -= lr (g + μ v)
    p1, p2 = _run(SGD(lr=0.1, momentum=0.9, nesterov=True))
    np.testing.assert_allclose(p1, [1 - 0.1 * 3.8, -2 + 0.1 * 7.6])
    g2 = np.array([1.24, -2.48])
    v2 = 0.9 * np.array([2.0, -4.0]) + g2
    np.testing.assert_allclose(p2, [0.62, -1.24] - 0.1 * (g2 + 0.9 * v2))


def test_adam():
    p1, p2 = _run(Adam(lr=0.1))
    # step 1: m̂ = g, v̂ = g², so the step is lr·sign(g) up to eps.
    np.testing.assert_allclose(p1, [1 - 0.1 * 2 / (2 + 1e-8), -2 + 0.1 * 4 / (4 + 1e-8)], rtol=1e-12)
    g1, g2 = np.array([2.0, -4.0]), 2 * p1
    m = 0.9 * 0.1 * g1 + 0.1 * g2
    v = 0.999 * 0.001 * g1**2 + 0.001 * g2**2
    step = (m / (1 - 0.9**2)) / (np.sqrt(v / (1 - 0.999**2)) + 1e-8)
    np.testing.assert_allclose(p2, p1 - 0.1 * step, rtol=1e-12)
    np.testing.assert_allclose(p2, [0.8004124, -1.8001669], atol=1e-6)  # the numbers, by calculator


def test_weight_decay_coupled_and_decoupled():
    (p1,) = _run(SGD(lr=0.1, weight_decay=0.5), steps=1)
    np.testing.assert_allclose(p1, [0.75, -1.5])  # p − 0.1·(2p + 0.5p)
    (p1,) = _run(AdamW(lr=0.1, weight_decay=0.5), steps=1)
    np.testing.assert_allclose(p1, [1 - 0.1 - 0.05, -2 + 0.1 + 0.1], rtol=1e-7)
    (p1,) = _run(Adam(lr=0.1, weight_decay=0.5), steps=1)  # coupled: decay folded into g, sign unchanged
    np.testing.assert_allclose(p1, [0.9, -1.9], rtol=1e-7)
    (b1,) = _run(SGD(lr=0.1, weight_decay=0.5), steps=1, name="d.b")  # biases are not decayed
    np.testing.assert_allclose(b1, [0.8, -1.6])


def test_float32_stays_float32():
    params = {"d.W": np.ones(3, np.float32)}
    for opt in (SGD(0.1, momentum=0.9), Adam(0.1), AdamW(0.1)):
        upd = opt.step(params, {"d.W": np.ones(3, np.float32)})
        assert params["d.W"].dtype == np.float32 and upd["d.W"].dtype == np.float32


def test_clip_grad_norm():
    grads = {"a": np.array([3.0, 0.0]), "b": np.array([[4.0]])}
    norm, fired = clip_grad_norm(grads, 1.0)
    assert norm == 5.0 and fired
    assert global_norm(grads) == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(grads["a"], [0.6, 0.0], rtol=1e-5)
    norm, fired = clip_grad_norm(grads, 10.0)
    assert not fired and norm == pytest.approx(1.0, rel=1e-5)
    nan = {"a": np.array([np.nan, 1.0])}
    norm, fired = clip_grad_norm(nan, 1.0)
    assert math.isnan(norm) and not fired


def test_clip_grad_value():
    grads = {"a": np.array([3.0, -0.5, -7.0])}
    norm, fired = clip_grad_value(grads, 1.0)
    assert fired and norm == pytest.approx(math.sqrt(9 + 0.25 + 49))
    np.testing.assert_array_equal(grads["a"], [1.0, -0.5, -1.0])
    assert clip_grad_value({"a": np.array([0.5])}, 1.0)[1] is False


def test_registry():
    assert isinstance(make_optimizer("adamw", lr=0.1), AdamW)
    opt = make_optimizer("nesterov", lr=0.1)
    assert opt.nesterov and opt.momentum == 0.9


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: SGD(lr=0), "lr=0"),
        (lambda: SGD(lr=-1.0), "lr=-1.0"),
        (lambda: SGD(lr=float("nan")), "lr=nan"),
        (lambda: SGD(lr=0.1, momentum=1.0), "momentum=1.0"),
        (lambda: SGD(lr=0.1, nesterov=True), "nesterov"),
        (lambda: Adam(betas=(0.9, 1.0)), r"betas\[1\]"),
        (lambda: SGD(lr=0.1, weight_decay=-1), "weight_decay=-1"),
        (lambda: make_optimizer("rmsprop"), "optimizer='rmsprop' is unknown; allowed: adam"),
        (lambda: clip_grad_norm({}, 0.0), "clip_norm=0.0"),
        (lambda: SGD(0.1).step({"a": np.ones(1)}, {"b": np.ones(1)}), "keys differ"),
    ],
)
def test_bad_optimizer_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("width", [8, 256])  # 8: a batched dot per update stack; 256: each in cache
@pytest.mark.parametrize("make", [lambda: SGD(0.1, momentum=0.9), lambda: Adam(1e-3)])
def test_measured_update_norms_equal_the_updates_applied(width, make):
    from gradlab.nn.network import mlp

    net = mlp(width, 3, depth=3, width=width, dtype="float32")
    params, grads = net.params(), net.grads()
    rng = np.random.default_rng(0)
    opt = make()
    opt.measure_updates = True
    for _ in range(2):
        for g in grads.values():
            g[...] = rng.standard_normal(g.shape)
        updates = opt.step(params, grads)
        assert opt.update_sq_norms.keys() == updates.keys()
        for name, delta in updates.items():
            assert opt.update_sq_norms[name] == pytest.approx(float(np.vdot(delta, delta)), rel=1e-5)
