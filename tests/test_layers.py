"""Conformance suite: one registry of layer cases; every case passes gradlab.testing.check_layer."""

import numpy as np
import pytest

from gradlab.nn.activations import ACTIVATIONS, Activation
from gradlab.nn.layers import BatchNorm, Dense, Dropout, LayerNorm, Residual
from gradlab.testing import GradientCheckError, check_layer


def _rng(seed=0):
    return np.random.default_rng(seed)


# name -> (factory, input shape). Adding a layer adds one line here.
LAYER_CASES = {
    "dense": (lambda r: Dense(r.standard_normal((4, 3)), r.standard_normal(3)), (5, 4)),
    "dense_wide": (lambda r: Dense(r.standard_normal((7, 11)) / 3, r.standard_normal(11)), (3, 7)),
    "batchnorm": (lambda r: BatchNorm(4), (6, 4)),
    "batchnorm_b2": (lambda r: BatchNorm(3), (2, 3)),
    "batchnorm_affine": (lambda r: _randomised(BatchNorm(5), r), (8, 5)),
    "layernorm": (lambda r: _randomised(LayerNorm(6), r), (4, 6)),
    "layernorm_2": (lambda r: LayerNorm(2), (3, 2)),
    "dropout": (lambda r: Dropout(0.3, np.random.default_rng(5)), (6, 5)),
    "dropout_0": (lambda r: Dropout(0.0, np.random.default_rng(5)), (2, 3)),
    "residual": (
        lambda r: Residual([Dense(r.standard_normal((4, 4)) / 2, r.standard_normal(4)), Activation("tanh")]),
        (5, 4),
    ),
    "residual_bn": (
        lambda r: Residual([Dense(r.standard_normal((3, 3))), BatchNorm(3), Activation("elu")]),
        (4, 3),
    ),
    **{f"act_{a}": (lambda r, a=a: Activation(a), (6, 5)) for a in ACTIVATIONS},
}


def _randomised(layer, r):
    for p in layer.params.values():
        p[...] = r.standard_normal(p.shape)
    return layer


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_layer_conformance(case):
    factory, shape = LAYER_CASES[case]
    r = _rng()
    layer = factory(r)
    x = r.standard_normal(shape) * 1.5
    report = check_layer(layer, x, rng=_rng(1))
    assert report, "check_layer checked nothing"
    assert max(report.values()) < 1e-6
    # Every parameter was checked in both modes.
    for k in layer.params:
        assert f"train:{k}" in report and f"eval:{k}" in report


@pytest.mark.parametrize("case", ["dense", "batchnorm", "layernorm", "residual"])
def test_layer_conformance_other_shapes(case):
    factory, shape = LAYER_CASES[case]
    r = _rng(7)
    layer = factory(r)
    x = r.standard_normal((shape[0] + 3, shape[1]))
    assert max(check_layer(layer, x, rng=_rng(2)).values()) < 1e-6


class _WrongSigmoid(Activation):
    def backward(self, grad_out):
        return grad_out * self._y * (1.0 - self._y) * 1.001


class _MutatingDense(Dense):
    def backward(self, grad_out):
        g = super().backward(grad_out)
        grad_out *= 1.0
        grad_out[0, 0] += 1.0
        return g


def test_check_layer_catches_a_wrong_derivative():
    with pytest.raises(GradientCheckError, match="input"):
        check_layer(_WrongSigmoid("sigmoid"), _rng().standard_normal((4, 3)))


def test_check_layer_catches_mutated_upstream_gradient():
    r = _rng()
    with pytest.raises(GradientCheckError, match="mutated"):
        check_layer(_MutatingDense(r.standard_normal((3, 2))), r.standard_normal((4, 3)))


def test_dense_forward_is_affine():
    W = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    b = np.array([0.5, -1.0])
    y = Dense(W, b).forward(np.array([[1.0, 0.0, -1.0]]))
    np.testing.assert_array_equal(y, [[1 - 5 + 0.5, 2 - 6 - 1.0]])


def test_batchnorm_normalises_in_training_and_uses_running_stats_in_eval():
    r = _rng()
    bn = BatchNorm(3, momentum=0.5)
    x = r.standard_normal((64, 3)) * 4 + 2
    y = bn.forward(x)
    np.testing.assert_allclose(y.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=0), 1, rtol=1e-5)
    # running = 0.5·init + 0.5·batch (unbiased variance, as torch)
    np.testing.assert_allclose(bn.running_mean, 0.5 * x.mean(axis=0))
    np.testing.assert_allclose(bn.running_var, 0.5 + 0.5 * x.var(axis=0, ddof=1))
    bn.train(False)
    z = bn.forward(x[:1])
    np.testing.assert_allclose(z, (x[:1] - bn.running_mean) / np.sqrt(bn.running_var + bn.eps))


def test_batchnorm_needs_two_samples_in_training():
    with pytest.raises(ValueError, match="batch size >= 2"):
        BatchNorm(3).forward(np.ones((1, 3)))


def test_layernorm_normalises_each_sample():
    x = _rng().standard_normal((4, 10)) * 3 + 1
    y = LayerNorm(10).forward(x)
    np.testing.assert_allclose(y.mean(axis=1), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=1), 1, rtol=1e-4)


def test_dropout_is_inverted_and_identity_in_eval():
    d = Dropout(0.25, np.random.default_rng(0))
    x = np.ones((2000, 50))
    y = d.forward(x)
    kept = y != 0
    assert abs(kept.mean() - 0.75) < 0.01
    np.testing.assert_allclose(y[kept], 1 / 0.75)
    d.train(False)
    np.testing.assert_array_equal(d.forward(x), x)


def test_residual_adds_its_input():
    W = np.eye(3) * 2
    block = Residual([Dense(W)])
    x = np.array([[1.0, 2.0, 3.0]])
    np.testing.assert_array_equal(block.forward(x), 3 * x)
    assert set(block.params) == {"dense_0.W", "dense_0.b"}


def test_residual_merge_is_its_whole_arithmetic():
    r = _rng(3)
    block = LAYER_CASES["residual"][0](r)
    x, g = r.standard_normal((5, 4)), r.standard_normal((5, 4))
    h = x
    for _, layer in block.body:
        h = layer.forward(h)
    np.testing.assert_array_equal(block.merge(x, h), x + h)
    np.testing.assert_array_equal(block.forward(x), block.merge(x, h))
    g_body = g
    for _, layer in reversed(block.body):
        g_body = layer.backward(g_body)
    np.testing.assert_array_equal(block.merge_grad(g, g_body), g + g_body)
    np.testing.assert_array_equal(block.backward(g), block.merge_grad(g, g_body))


def test_residual_rejects_a_body_that_changes_the_shape():
    block = Residual([Dense(np.ones((3, 2)))])
    with pytest.raises(ValueError, match=r"maps \(1, 3\) to \(1, 2\)"):
        block.forward(np.ones((1, 3)))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Dense(np.ones(3)), "2-D"),
        (lambda: Dense(np.ones((3, 2)), np.ones(3)), "expected"),
        (lambda: Dropout(1.0, np.random.default_rng()), "p=1.0"),
        (lambda: Dropout(0.5, 3), "Generator"),
        (lambda: BatchNorm(0), "features=0"),
        (lambda: Residual([]), "at least one"),
    ],
)
def test_bad_layer_arguments(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_dense_rejects_wrong_input_width():
    with pytest.raises(ValueError, match=r"\(batch, 3\)"):
        Dense(np.ones((3, 2))).forward(np.ones((4, 5)))
