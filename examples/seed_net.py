"""The source text's hand-written ``Net``, corrected, monitored with gradlab's framework-neutral API.

The original (see the project's seed text) trains a 2→4→3 network (ReLU, then sigmoid, MSE) on one
input towards [0.3, 0.7, 0.9]. Its backward pass was wrong in four ways, fixed here:

1. the output delta used (t − y) with a *subtracted* update, i.e. it climbed the loss; the gradient
   of MSE = mean((y − t)²) is 2(y − t)/n;
2. it multiplied by the activation derivative twice (once into ``grad_cost``, again into
   ``delta_biases``) and never updated the last layer;
3. ``np.dot(grad_cost, W.T)`` used the wrong layer's weights and orientation: with y = W x + b
   (W of shape (out, in)), ∂L/∂x = Wᵀ δ, using the *next* layer's W;
4. ∂L/∂W is the outer product δ ⊗ x with the layer's *input* x, not its own output.

Run: ``python examples/seed_net.py`` — prints the loss and each layer's gradient norm.
"""

from __future__ import annotations

import numpy as np

from gradlab.monitor.observer import Observer


class Net:
    """A plain NumPy MLP on one sample at a time: y = φ(W x + b) per layer, W of shape (out, in)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.layers: list[dict] = []

    def add_layer(self, num_input: int, num_output: int, activation: str) -> None:
        """Append a layer with He-scaled normal weights (the source's init) and zero biases."""
        W = self.rng.standard_normal((num_output, num_input)) * np.sqrt(2 / num_input)
        self.layers.append({"weights": W, "biases": np.zeros(num_output), "activation": activation})

    def forward(self, inputs: np.ndarray) -> np.ndarray:
        """Run every layer, caching each layer's input and output."""
        out = np.asarray(inputs, dtype=float)
        for layer in self.layers:
            layer["inputs"] = out
            z = layer["z"] = layer["weights"] @ out + layer["biases"]
            out = np.maximum(z, 0) if layer["activation"] == "relu" else 1 / (1 + np.exp(-z))
            layer["outputs"] = out
        return out

    @staticmethod
    def derivative(activation: str, output: np.ndarray) -> np.ndarray:
        """φ′ written in terms of the layer's output."""
        return (output > 0).astype(float) if activation == "relu" else output * (1 - output)

    def backward(self, targets: np.ndarray) -> None:
        """Fill each layer's grad_W, grad_b, delta (∂L/∂z), grad_out (∂L/∂y) and grad_in (∂L/∂x)."""
        y = self.layers[-1]["outputs"]
        grad_y = 2 * (y - targets) / y.size  # ∂MSE/∂y
        for layer in reversed(self.layers):
            delta = grad_y * self.derivative(layer["activation"], layer["outputs"])  # ∂L/∂z
            layer["grad_out"], layer["delta"] = grad_y, delta
            layer["grad_W"] = np.outer(delta, layer["inputs"])  # ∂L/∂W = δ xᵀ
            layer["grad_b"] = delta
            grad_y = layer["weights"].T @ delta  # ∂L/∂x, the next (earlier) layer's ∂L/∂y
            layer["grad_in"] = grad_y

    def step(self, learning_rate: float) -> list[np.ndarray]:
        """Plain gradient descent; returns the weight updates applied."""
        updates = []
        for layer in self.layers:
            dW = -learning_rate * layer["grad_W"]
            layer["weights"] += dW
            layer["biases"] -= learning_rate * layer["grad_b"]
            updates.append(dW)
        return updates


def build() -> Net:
    """The source text's network: 2 → 4 (ReLU) → 3 (sigmoid), seeded."""
    net = Net(np.random.default_rng(0))
    net.add_layer(2, 4, "relu")
    net.add_layer(4, 3, "sigmoid")
    return net


def train(net: Net, observer: Observer | None, steps: int = 3000, lr: float = 1.0) -> float:
    """Train on the source's single example; observe each layer each step; return the final MSE."""
    x, t = np.array([0.5, 0.6]), np.array([0.3, 0.7, 0.9])
    for step in range(steps + 1):
        y = net.forward(x)
        loss = float(np.mean((y - t) ** 2))
        net.backward(t)
        updates = net.step(lr) if step < steps else [None] * len(net.layers)
        if observer is not None:
            for i, (layer, upd) in enumerate(zip(net.layers, updates, strict=True)):
                # gradlab's layout: W is (fan_in, fan_out) and arrays are (batch, features), so
                # transpose W and add a batch axis of one; the norms are the same either way.
                observer.observe(
                    step,
                    f"dense_{2 * i}",
                    output=layer["z"][None],
                    weight=(layer["weights"] - (0 if upd is None else upd)).T,
                    weight_grad=layer["grad_W"].T,
                    bias_grad=layer["grad_b"],
                    update=None if upd is None else upd.T,
                    grad_in=layer["grad_in"][None],
                    grad_out=layer["delta"][None],
                )
                observer.observe(
                    step,
                    f"{layer['activation']}_{2 * i + 1}",
                    output=layer["outputs"][None],
                    grad_in=layer["delta"][None],
                    grad_out=layer["grad_out"][None],
                    activation=layer["activation"],
                )
            observer.observe_network(step, loss=loss, lr=lr)
    return loss


if __name__ == "__main__":
    obs = Observer(run="seed-net")
    final = train(build(), obs)
    frame = obs.frame()
    norms = frame[frame.metric == "grad_norm"].pivot(index="step", columns="layer", values="value")
    print(norms.iloc[[0, 1, 10, 100, -1]].to_string())
    print(f"final MSE {final:.2e}")
