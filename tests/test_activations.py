import math

import numpy as np
import pytest

from gradlab.nn.activations import (
    ACTIVATIONS,
    SELU_ALPHA,
    SELU_SCALE,
    Activation,
    ActivationFn,
    get_activation,
)
from gradlab.testing import check_grads, check_layer

X = np.array([-5.0, -3.5, -1.0, -0.2, 0.3, 1.0, 2.5, 6.0])

# Independent scalar reference implementations (math module, not numpy).
REFERENCE = {
    "sigmoid": lambda v: 1 / (1 + math.exp(-v)),
    "tanh": math.tanh,
    "relu": lambda v: max(v, 0.0),
    "leaky_relu": lambda v: v if v > 0 else 0.01 * v,
    "elu": lambda v: v if v > 0 else math.exp(v) - 1,
    "selu": lambda v: SELU_SCALE * (v if v > 0 else SELU_ALPHA * (math.exp(v) - 1)),
    "gelu": lambda v: 0.5 * v * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3))),
    "softplus": lambda v: math.log1p(math.exp(v)),
    "identity": lambda v: v,
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_values_match_scalar_reference(name):
    act = get_activation(name)
    np.testing.assert_allclose(act.fn(X), [REFERENCE[name](v) for v in X], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_derivative_matches_central_difference(name):
    act = get_activation(name)
    h = 1e-6
    numeric = [(REFERENCE[name](v + h) - REFERENCE[name](v - h)) / (2 * h) for v in X]
    np.testing.assert_allclose(act.deriv(X), numeric, rtol=1e-6, atol=1e-9)


FROM_OUTPUT = sorted(n for n, a in ACTIVATIONS.items() if a.deriv_from_output is not None)


def test_the_classic_four_read_their_derivative_off_the_output():
    assert FROM_OUTPUT == ["identity", "relu", "sigmoid", "tanh"]


@pytest.mark.parametrize("name", FROM_OUTPUT)
def test_output_derivative_agrees_with_deriv(name):
    act = get_activation(name)
    x = X.reshape(2, 4)
    from_y = np.broadcast_to(act.deriv_from_output(act.fn(x)), x.shape)
    np.testing.assert_allclose(from_y, act.deriv(x), rtol=1e-12, atol=1e-15)
    u = np.random.default_rng(0).standard_normal(x.shape)
    assert check_grads(lambda z: float(np.sum(act.fn(z) * u)), x, u * from_y, name=name) < 1e-6


@pytest.mark.parametrize("name", [n for n, a in ACTIVATIONS.items() if a.fast_fn is not None])
def test_fast_forward_equals_fn_on_finite_inputs(name):
    act = get_activation(name)
    x = np.concatenate([X, [0.0, -0.0, 1e-300, -1e-300, 1e300, -1e300, np.nan]])
    np.testing.assert_array_equal(act.fast_fn(x), act.fn(x))
    np.testing.assert_array_equal(Activation(name).forward(x), act.fn(x))


def test_layer_backward_follows_the_entry_not_its_name():
    # A custom entry named "relu" but computing tanh: no name test may pick relu's rules.
    impostor = ActivationFn("relu", np.tanh, lambda x: 1.0 - np.tanh(x) ** 2)
    layer = Activation(impostor)
    np.testing.assert_array_equal(layer.forward(X.reshape(2, 4)), np.tanh(X.reshape(2, 4)))
    assert max(check_layer(layer, X.reshape(2, 4)).values()) < 1e-6


def test_sigmoid_is_stable_for_large_inputs():
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y = get_activation("sigmoid").fn(np.array([-1000.0, 1000.0]))
    np.testing.assert_array_equal(y, [0.0, 1.0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_layer_keeps_dtype(name, dtype):
    layer = Activation(name)
    x = X.reshape(2, 4).astype(dtype)
    assert layer.forward(x).dtype == dtype
    assert layer.backward(np.ones_like(x)).dtype == dtype


def test_saturation_rules_by_hand():
    tanh = get_activation("tanh")
    y = np.array([-0.995, -0.5, 0.0, 0.98, 0.999])
    np.testing.assert_array_equal(tanh.saturated(y), [True, False, False, False, True])
    sig = get_activation("sigmoid")
    np.testing.assert_array_equal(sig.saturated(np.array([0.005, 0.5, 0.991])), [True, False, True])
    relu = get_activation("relu")
    np.testing.assert_array_equal(relu.inactive(np.array([0.0, 1e-9, 2.0])), [True, False, False])
    gelu = get_activation("gelu")
    assert gelu.inactive(np.array([0.0]), None) is None  # needs the input
    np.testing.assert_array_equal(gelu.inactive(np.zeros(2), np.array([-4.0, -1.0])), [True, False])
    elu = get_activation("elu")
    np.testing.assert_array_equal(elu.saturated(np.array([-0.995, -0.5])), [True, False])


def test_unknown_activation_lists_allowed():
    with pytest.raises(ValueError, match=r"activation='swish' is unknown; allowed: .*tanh"):
        get_activation("swish")
