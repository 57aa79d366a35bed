import math

import numpy as np
import pytest

from gradlab.nn.losses import accuracy, binary_cross_entropy_with_logits, mse, softmax_cross_entropy
from gradlab.testing import check_loss

R = np.random.default_rng(0)


def test_cross_entropy_by_hand():
    logits = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    value, grad = softmax_cross_entropy(logits, np.array([2, 0]))
    p0 = math.exp(3) / (math.exp(1) + math.exp(2) + math.exp(3))
    assert value == pytest.approx((-math.log(p0) + math.log(3)) / 2, rel=1e-12)
    np.testing.assert_allclose(grad[1], [(1 / 3 - 1) / 2, 1 / 6, 1 / 6])


def test_cross_entropy_is_stable_and_onehot_matches_labels():
    logits = np.array([[1000.0, 0.0], [-1000.0, 1000.0]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        v, g = softmax_cross_entropy(logits, np.array([0, 1]))
    assert v == 0.0 and np.all(np.isfinite(g))
    z = R.standard_normal((5, 4))
    lab = np.array([0, 3, 1, 1, 2])
    a = softmax_cross_entropy(z, lab)
    b = softmax_cross_entropy(z, np.eye(4)[lab])
    assert a[0] == pytest.approx(b[0]) and np.allclose(a[1], b[1])


def test_mse_and_bce_by_hand():
    v, g = mse(np.array([[1.0, 2.0]]), np.array([[0.0, 4.0]]))
    assert v == 2.5
    np.testing.assert_array_equal(g, [[1.0, -2.0]])
    v, _ = binary_cross_entropy_with_logits(np.array([[0.0, 2.0]]), np.array([[1.0, 0.0]]))
    assert v == pytest.approx((math.log(2) + math.log1p(math.exp(2))) / 2)


@pytest.mark.parametrize("shape", [(1, 2), (5, 4), (7, 10)])
def test_loss_gradients(shape):
    z = R.standard_normal(shape) * 2
    assert check_loss(softmax_cross_entropy, z, R.integers(0, shape[1], shape[0])) < 1e-6
    assert check_loss(mse, z, R.standard_normal(shape)) < 1e-6
    assert check_loss(binary_cross_entropy_with_logits, z, R.random(shape)) < 1e-6


def test_accuracy():
    assert accuracy(np.array([[0.1, 0.9], [0.8, 0.2]]), np.array([1, 1])) == 0.5


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 3])), r"\[0, 2\]"),
        (lambda: softmax_cross_entropy(np.zeros((2, 3)), np.array([0, -1])), r"\[0, 2\]"),
        (lambda: softmax_cross_entropy(np.zeros((2, 3)), np.array([0.0, 1.0])), "integer labels"),
        (lambda: softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 1, 2])), "3 entries"),
        (lambda: softmax_cross_entropy(np.zeros((2, 3)), np.eye(2)), "one-hot labels have shape"),
        (lambda: mse(np.zeros((2, 3)), np.zeros((3, 2))), "target has shape"),
        (lambda: mse(np.zeros(3), np.zeros(3)), "batch, outputs"),
        (lambda: binary_cross_entropy_with_logits(np.zeros((1, 2)), np.array([[0.0, 2.0]])), r"\[0, 1\]"),
    ],
)
def test_bad_loss_input(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
