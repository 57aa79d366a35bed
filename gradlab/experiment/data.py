"""Seeded datasets: synthetic spirals, blobs, teacher, gaussian, and the real 8x8 handwritten digits.

Every dataset is a pure function of its arguments: same arguments ⇒ bit-identical arrays. Randomness
comes only from ``np.random.SeedSequence(seed, spawn_key=(crc32(name),))``, so two datasets never share
a stream, and it is split into a *structure* stream (blob centres, teacher weights, spiral embedding)
and a *sample* stream: for a given seed the structure does not change with ``n_samples``. A different
seed is therefore a different task, so hold out test data with ``split``, not with another seed.
Synthetic class labels are balanced (class sizes differ by at most one) and rows are shuffled.
Values are computed in float64 and cast once to ``dtype``.

Meaning of ``noise`` (default 0.1), per dataset:
  spirals   std of isotropic Gaussian jitter in the spiral's plane, in units of the radial distance
            between neighbouring arms, 0.9 / n_classes (arms span radius 0.1..1), so difficulty does not
            grow with n_classes
  blobs     within-class std per coordinate (centres on the unit sphere: a regular polygon in 2-D,
            orthonormal if n_classes <= input_dim, else spread by farthest-point sampling)
  teacher   std of Gaussian noise added to the targets (clean targets have std ≈ 0.6)
  gaussian, digits   ignored
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

import numpy as np

__all__ = ["DATASETS", "Builder", "Dataset", "batches", "load_digits_raw", "make_dataset", "split"]

TASKS = ("classification", "regression")
SPIRAL_TURNS = 1.0  # turns each arm makes from radius 0.1 to 1
TEACHER_HIDDEN = 32  # width of the teacher's tanh hidden layer
TEACHER_GAIN = 2.0  # std of the teacher's pre-activations; 2 keeps tanh clearly nonlinear
DIGITS_SHAPE = (1797, 64)

Sampler = Callable[[int, int, int, float, np.random.Generator, np.random.Generator], tuple[np.ndarray, ...]]


@dataclass(frozen=True, eq=False)
class Dataset:
    """An immutable in-memory dataset: inputs ``x`` (n_samples, input_dim) and labels or targets ``y``."""

    name: str
    x: np.ndarray = field(repr=False)
    y: np.ndarray = field(repr=False)
    task: str
    n_classes: int  # classes, or output_dim for regression

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got task={self.task!r}")
        if self.x.ndim != 2 or len(self.y) != len(self.x):
            raise ValueError(f"x must be (n, d) and y must have n rows, got {self.x.shape}, {self.y.shape}")

    @property
    def input_dim(self) -> int:
        """Number of input features."""
        return int(self.x.shape[1])

    @property
    def output_dim(self) -> int:
        """Number of network outputs: classes (logits) or regression targets."""
        return int(self.n_classes)

    @property
    def n_samples(self) -> int:
        """Number of rows."""
        return int(self.x.shape[0])


@dataclass(frozen=True)
class Builder:
    """A registry entry: the sampler, its task, its default sizes and the sizes it accepts."""

    sample: Sampler
    task: str
    n_samples: int = 1024
    input_dim: int = 2
    n_classes: int = 3
    min_input_dim: int = 1
    fixed_input_dim: int | None = None
    fixed_n_classes: int | None = None
    max_samples: int | None = None

    @property
    def min_n_classes(self) -> int:
        """The fewest classes a classification task allows (2), or targets a regression one (1)."""
        return 2 if self.task == "classification" else 1


def _balanced_labels(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    # class c gets n // k samples, plus one for the first n % k classes; order shuffled
    return rng.permutation(np.arange(n, dtype=np.int64) % k)


def _spirals(n: int, d: int, k: int, noise: float, rs: np.random.Generator, rn: np.random.Generator):
    y = _balanced_labels(n, k, rn)
    t = rn.uniform(0.0, 1.0, n)
    r = 0.1 + 0.9 * t
    angle = 2 * np.pi * (y / k + SPIRAL_TURNS * t)
    gap = 0.9 / (k * SPIRAL_TURNS)  # radial distance between neighbouring arms
    x2 = np.stack([r * np.cos(angle), r * np.sin(angle)], axis=1) + noise * gap * rn.standard_normal((n, 2))
    if d == 2:
        return x2, y
    q, _ = np.linalg.qr(rs.standard_normal((d, d)))  # random rotation of the zero-padded plane
    return x2 @ q[:2], y


def _spread_centres(k: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """k unit vectors in R^d, well spread: a rotated regular polygon in 2-D, orthonormal if k <= d,
    else greedy farthest-point picks among random directions."""
    if d == 2:
        angle = rng.uniform(0, 2 * np.pi) + 2 * np.pi * np.arange(k) / k
        return np.stack([np.cos(angle), np.sin(angle)], axis=1)
    if k <= d:
        q, _ = np.linalg.qr(rng.standard_normal((d, k)))
        return q.T
    candidates = rng.standard_normal((64 * k, d))
    candidates /= np.linalg.norm(candidates, axis=1, keepdims=True)
    picked = [0]
    dist = np.linalg.norm(candidates - candidates[0], axis=1)
    for _ in range(k - 1):
        picked.append(int(np.argmax(dist)))
        dist = np.minimum(dist, np.linalg.norm(candidates - candidates[picked[-1]], axis=1))
    return candidates[picked]


def _blobs(n: int, d: int, k: int, noise: float, rs: np.random.Generator, rn: np.random.Generator):
    centres = _spread_centres(k, d, rs)
    y = _balanced_labels(n, k, rn)
    return centres[y] + noise * rn.standard_normal((n, d)), y


def _teacher(n: int, d: int, k: int, noise: float, rs: np.random.Generator, rn: np.random.Generator):
    # y = tanh(x W1 + b1) W2 + noise·ε, with W1 ~ N(0, g²/d), b1 ~ N(0, 0.1²), W2 ~ N(0, 1/h), x ~ N(0, I)
    w1 = TEACHER_GAIN * rs.standard_normal((d, TEACHER_HIDDEN)) / np.sqrt(d)
    b1 = 0.1 * rs.standard_normal(TEACHER_HIDDEN)
    w2 = rs.standard_normal((TEACHER_HIDDEN, k)) / np.sqrt(TEACHER_HIDDEN)
    x = rn.standard_normal((n, d))
    return x, np.tanh(x @ w1 + b1) @ w2 + noise * rn.standard_normal((n, k))


def _gaussian(n: int, d: int, k: int, noise: float, rs: np.random.Generator, rn: np.random.Generator):
    y = _balanced_labels(n, k, rn)
    return rn.standard_normal((n, d)), y


@lru_cache(maxsize=1)
def load_digits_raw() -> tuple[np.ndarray, np.ndarray]:
    """The shipped digits as read-only (uint8 pixels 0..16 of shape (1797, 64), uint8 labels 0..9)."""
    blob = (resources.files("gradlab.experiment") / "datasets" / "digits.npz").read_bytes()
    with np.load(io.BytesIO(blob), allow_pickle=False) as f:
        images, labels = f["images"], f["labels"]
    if images.shape != DIGITS_SHAPE or labels.shape != DIGITS_SHAPE[:1]:
        msg = f"gradlab/experiment/datasets/digits.npz is damaged: shapes {images.shape}, {labels.shape}"
        raise RuntimeError(msg)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def _digits(n: int, d: int, k: int, noise: float, rs: np.random.Generator, rn: np.random.Generator):
    images, labels = load_digits_raw()
    # the full set keeps file order; a smaller n is a seeded subset, still in file order
    rows = np.arange(len(labels)) if n == len(labels) else np.sort(rn.choice(len(labels), n, replace=False))
    return images[rows] / 16.0, labels[rows].astype(np.int64)  # pixels scaled to [0, 1]


DATASETS: dict[str, Builder] = {
    "spirals": Builder(_spirals, "classification", min_input_dim=2),
    "blobs": Builder(_blobs, "classification"),
    "teacher": Builder(_teacher, "regression", n_classes=1),
    "gaussian": Builder(_gaussian, "classification"),
    "digits": Builder(
        _digits,
        "classification",
        n_samples=DIGITS_SHAPE[0],
        input_dim=64,
        n_classes=10,
        fixed_input_dim=64,
        fixed_n_classes=10,
        max_samples=DIGITS_SHAPE[0],
    ),
}


def _check_int(name: str, value: object, low: int, allowed: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be {allowed}, got {name}={value!r}")
    return int(value)


def make_dataset(
    name: str,
    *,
    n_samples: int | None = None,
    input_dim: int | None = None,
    n_classes: int | None = None,
    noise: float = 0.1,
    seed: int = 0,
    dtype: str | np.dtype = "float64",
) -> Dataset:
    """Build dataset ``name``; sizes left as None take its defaults (1024 samples, 2-D, 3 classes).

    Args:
        name: one of ``DATASETS``.
        n_samples: rows; digits defaults to all 1797 and accepts at most that.
        input_dim: features; spirals needs >= 2 (embedded by a seeded rotation above 2); digits is 64.
        n_classes: classes (>= 2), or for ``teacher`` the number of regression targets (>= 1, default 1);
            digits is 10.
        noise: see the module docstring; must be >= 0.
        seed: non-negative integer seed.
        dtype: floating dtype of ``x`` (and of regression ``y``); labels are always int64.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset={name!r}; allowed: {', '.join(sorted(DATASETS))}")
    b = DATASETS[name]
    n = _check_int("n_samples", b.n_samples if n_samples is None else n_samples, 1, "a positive integer")
    d = _check_int(
        "input_dim",
        b.input_dim if input_dim is None else input_dim,
        b.min_input_dim,
        f"an integer >= {b.min_input_dim} for dataset={name!r}",
    )
    k = _check_int(
        "n_classes",
        b.n_classes if n_classes is None else n_classes,
        b.min_n_classes,
        f"an integer >= {b.min_n_classes} for {b.task} dataset={name!r}",
    )
    if b.fixed_input_dim is not None and d != b.fixed_input_dim:
        raise ValueError(f"input_dim must be {b.fixed_input_dim} for dataset={name!r}, got input_dim={d}")
    if b.fixed_n_classes is not None and k != b.fixed_n_classes:
        raise ValueError(f"n_classes must be {b.fixed_n_classes} for dataset={name!r}, got n_classes={k}")
    if b.max_samples is not None and n > b.max_samples:
        raise ValueError(f"n_samples must be <= {b.max_samples} for dataset={name!r}, got n_samples={n}")
    if isinstance(noise, bool) or not isinstance(noise, (int, float, np.floating)) or not 0 <= noise < np.inf:
        raise ValueError(f"noise must be a finite number >= 0, got noise={noise!r}")
    seed = _check_int("seed", seed, 0, "a non-negative integer")
    try:
        dt = np.dtype(dtype)
    except TypeError as err:
        raise ValueError(f"dtype must be a floating dtype such as 'float32', got dtype={dtype!r}") from err
    if not np.issubdtype(dt, np.floating):
        raise ValueError(f"dtype must be a floating dtype such as 'float32', got dtype={dtype!r}")

    rs, rn = _stream(seed, name).spawn(2)
    x, y = b.sample(n, d, k, float(noise), rs, rn)
    x = np.ascontiguousarray(x, dtype=dt)
    y = np.ascontiguousarray(y, dtype=dt if b.task == "regression" else np.int64)
    x.setflags(write=False)
    y.setflags(write=False)
    return Dataset(name=name, x=x, y=y, task=b.task, n_classes=k)


def _stream(seed: int, purpose: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(zlib.crc32(purpose.encode()),)))


def split(ds: Dataset, test_fraction: float = 0.2, seed: int = 0) -> tuple[Dataset, Dataset]:
    """Seeded random (train, test) split of the rows; rows keep their relative order in each part.

    Hold data out with this, not with a second ``make_dataset`` seed: a new seed is a new task
    (other blob centres, another teacher, another embedding), and a digits subset may overlap.
    """
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float, np.floating)):
        raise ValueError(f"test_fraction must be a number in (0, 1), got test_fraction={test_fraction!r}")
    n_test = round(ds.n_samples * test_fraction)
    if not 0 < test_fraction < 1 or not 0 < n_test < ds.n_samples:
        raise ValueError(
            f"test_fraction must be in (0, 1) and leave both parts non-empty for n_samples={ds.n_samples}, "
            f"got test_fraction={test_fraction!r}"
        )
    seed = _check_int("seed", seed, 0, "a non-negative integer")
    perm = _stream(seed, "split").permutation(ds.n_samples)
    parts = []
    for rows in (np.sort(perm[n_test:]), np.sort(perm[:n_test])):
        x, y = ds.x[rows], ds.y[rows]
        x.setflags(write=False)
        y.setflags(write=False)
        parts.append(Dataset(name=ds.name, x=x, y=y, task=ds.task, n_classes=ds.n_classes))
    return parts[0], parts[1]


Batch = tuple[np.ndarray, np.ndarray]


def batches(ds: Dataset, batch_size: int, rng: np.random.Generator) -> Iterator[Batch]:
    """Endless (x, y) minibatches: each epoch is a fresh ``rng`` permutation cut into full batches.

    The last ``n_samples % batch_size`` rows of each epoch's permutation are dropped, so every batch has
    exactly ``batch_size`` rows and each sample appears at most once per epoch. Batches are copies.
    """
    bs = _check_int("batch_size", batch_size, 1, "a positive integer")
    if bs > ds.n_samples:
        raise ValueError(f"batch_size must be <= n_samples={ds.n_samples}, got batch_size={bs}")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got rng={rng!r}")
    return _batch_stream(ds, bs, rng)


def _batch_stream(ds: Dataset, bs: int, rng: np.random.Generator) -> Iterator[Batch]:
    n_full = ds.n_samples // bs
    while True:
        perm = rng.permutation(ds.n_samples)
        for i in range(n_full):
            idx = perm[i * bs : (i + 1) * bs]
            yield ds.x[idx], ds.y[idx]
