import math

import numpy as np
import pytest

from gradlab.nn.init import GAINS, INITS, calculate_gain, get_init, init_weights, weight_std
from gradlab.nn.network import mlp

SHAPE = (300, 200)


def _draw(name, **kw):
    return init_weights(name, SHAPE, np.random.default_rng(0), **kw)


@pytest.mark.parametrize(
    ("name", "kw", "std"),
    [
        ("normal", {"std": 0.05}, 0.05),
        ("uniform", {"a": 0.3}, 0.3 / math.sqrt(3)),
        ("standard", {}, 1 / math.sqrt(3 * 300)),
        ("glorot_uniform", {}, math.sqrt(2 / 500)),
        ("glorot_normal", {}, math.sqrt(2 / 500)),
        ("he_uniform", {}, math.sqrt(2 / 300)),
        ("he_normal", {}, math.sqrt(2 / 300)),
        ("he_normal", {"mode": "fan_out"}, math.sqrt(2 / 200)),
        ("lecun_uniform", {}, math.sqrt(1 / 300)),
        ("lecun_normal", {}, math.sqrt(1 / 300)),
        ("orthogonal", {"gain": 2.0}, 2 / math.sqrt(300)),
        ("glorot_uniform", {"gain": 5 / 3}, 5 / 3 * math.sqrt(2 / 500)),
    ],
)
def test_empirical_std_matches_formula(name, kw, std):
    W = _draw(name, **kw)
    assert W.shape == SHAPE
    assert abs(W.mean()) < 4 * std / math.sqrt(W.size)
    assert W.std() == pytest.approx(std, rel=0.02)


@pytest.mark.parametrize(
    "name", ["standard", "glorot_uniform", "he_normal", "lecun_normal", "orthogonal", "uniform"]
)
def test_weight_std_agrees_with_draws(name):
    assert _draw(name).std() == pytest.approx(weight_std(name, *SHAPE), rel=0.02)


@pytest.mark.parametrize("name", sorted(INITS))
def test_every_registered_std_matches_a_large_draw(name):
    assert _draw(name).std() == pytest.approx(INITS[name].std(*SHAPE), rel=0.02)


@pytest.mark.parametrize("name", sorted(INITS))
def test_an_entry_draws_like_init_weights(name):
    np.testing.assert_array_equal(INITS[name]((5, 4), np.random.default_rng(3)), _draw_small(name))
    assert get_init(name) is INITS[name]


def _draw_small(name):
    return init_weights(name, (5, 4), np.random.default_rng(3))


@pytest.mark.parametrize("name", sorted(set(INITS) - {"normal"}))
def test_weight_std_is_the_registered_std_times_gain(name):
    assert weight_std(name, 30, 20, 1.7) == 1.7 * INITS[name].std(30, 20)


@pytest.mark.parametrize("name", ["normal", "he_normal", "orthogonal", "uniform"])
def test_weight_std_is_the_std_mlp_draws_with(name):
    net = mlp(400, 2, depth=1, width=300, init=name, weight_scale=1.5, rng=0)
    assert net.params()["dense_0.W"].std() == pytest.approx(weight_std(name, 400, 300, 1.5), rel=0.02)


def test_weight_std_rejects_unknown_inits():
    with pytest.raises(ValueError, match="init='glorot' is unknown"):
        weight_std("glorot", 3, 3)


def test_uniform_bounds():
    W = _draw("glorot_uniform")
    a = math.sqrt(6 / 500)
    assert W.max() <= a and W.min() >= -a and W.max() > 0.99 * a


@pytest.mark.parametrize("shape", [(8, 5), (5, 8), (6, 6)])
def test_orthogonal_is_orthogonal(shape):
    W = init_weights("orthogonal", shape, np.random.default_rng(1))
    small = min(shape)
    gram = W.T @ W if shape[0] >= shape[1] else W @ W.T
    np.testing.assert_allclose(gram, np.eye(small), atol=1e-12)


def test_deterministic_and_seed_sensitive():
    for name in INITS:
        a = init_weights(name, (5, 4), np.random.default_rng(3))
        b = init_weights(name, (5, 4), np.random.default_rng(3))
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(_draw("he_normal"), init_weights("he_normal", SHAPE, np.random.default_rng(1)))


def test_gains_follow_torch():
    assert calculate_gain("relu") == math.sqrt(2)
    assert calculate_gain("tanh") == 5 / 3
    assert GAINS["selu"] == 0.75


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: init_weights("glorot", (3, 3), np.random.default_rng()), "init='glorot' is unknown"),
        (lambda: init_weights("he_normal", (0, 3), np.random.default_rng()), "positive"),
        (lambda: init_weights("he_normal", (3, 3), np.random.default_rng(), mode="fan"), "mode='fan'"),
        (lambda: init_weights("he_normal", (3, 3), 0), "Generator"),
    ],
)
def test_bad_init_arguments(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
