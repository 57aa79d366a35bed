"""``gradlab`` command line: parses arguments and calls one library function per subcommand."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy as np

from gradlab.losses import softmax_cross_entropy
from gradlab.network import mlp


def _demo(args: argparse.Namespace) -> int:
    rng = np.random.default_rng(args.seed)
    x = rng.standard_normal((args.batch, 16))
    y = rng.integers(0, 4, args.batch)
    for activation, init in (("sigmoid", "standard"), ("relu", "he_normal")):
        net = mlp(16, 4, depth=args.depth, width=64, activation=activation, init=init, rng=args.seed)
        _, g = softmax_cross_entropy(net.forward(x), y)
        net.backward(g)
        print(f"{activation} / {init}, depth {args.depth}: ‖∂L/∂W‖ per dense layer at initialisation")
        for name, grad in net.grads().items():
            if name.endswith(".W"):
                print(f"  {name:<12} {np.linalg.norm(grad):.3e}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="gradlab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="print per-layer gradient norms of a deep sigmoid and ReLU net")
    demo.add_argument("--depth", type=int, default=20)
    demo.add_argument("--batch", type=int, default=128)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as exc:
        print(f"gradlab: error: {exc}", file=sys.stderr)
        return 2
