import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest

import gradlab.experiment.data as data
from gradlab.experiment.data import DATASETS, Dataset, batches, make_dataset, split

CLASSIFICATION = ["spirals", "blobs", "gaussian"]
SYNTHETIC = [*CLASSIFICATION, "teacher"]

# Computed once from scikit-learn 1.9.1's sklearn/datasets/data/digits.csv.gz (np.loadtxt of the CSV)
# and cross-checked against sklearn.datasets.load_digits(); not by the code under test.
DIGITS_PIXEL_SUM = 561718
DIGITS_LABEL_SUM = 8070
DIGITS_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
DIGITS_FIRST_ROW_SUM = 294
DIGITS_SHA256 = "8f26b2bd9d135c256808f68f14fdabddde6d9c7f869ae419704b051f0f14b3b3"
DIGITS_FILE = Path(data.__file__).parent / "datasets" / "digits.npz"


def _small(name, **kw):
    kw.setdefault("n_samples", 1797 if name == "digits" else 300)
    return make_dataset(name, **kw)


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_same_seed_identical_different_seed_differs(name):
    a, b = _small(name, seed=3), _small(name, seed=3)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)
    if name != "digits":  # the full digits set is seed-free by design
        assert not np.array_equal(a.x, _small(name, seed=4).x)
    if name == "digits":
        c, d = _small(name, n_samples=500, seed=3), _small(name, n_samples=500, seed=4)
        assert not np.array_equal(c.x, d.x)


def test_datasets_do_not_share_streams():
    g = make_dataset("gaussian", n_samples=50, input_dim=3)
    t = make_dataset("teacher", n_samples=50, input_dim=3)
    assert not np.array_equal(g.x, t.x)


def test_structure_does_not_depend_on_n_samples():
    # same seed ⇒ same teacher: a clean small set lies on the same function as a clean big one
    small = make_dataset("teacher", n_samples=10, input_dim=4, noise=0.0)
    big = make_dataset("teacher", n_samples=500, input_dim=4, noise=0.0)
    np.testing.assert_array_equal(small.x, big.x[:10])
    np.testing.assert_allclose(small.y, big.y[:10], rtol=1e-12)  # BLAS may round per batch size


@pytest.mark.parametrize("name", SYNTHETIC)
@pytest.mark.parametrize("dtype", ["float32", np.float64])
def test_shapes_and_dtypes(name, dtype):
    ds = make_dataset(name, n_samples=101, input_dim=5, n_classes=4, dtype=dtype)
    assert isinstance(ds, Dataset)
    assert ds.x.shape == (101, 5) and ds.x.dtype == np.dtype(dtype)
    assert (ds.n_samples, ds.input_dim, ds.output_dim, ds.n_classes) == (101, 5, 4, 4)
    assert np.isfinite(ds.x).all()
    if name == "teacher":
        assert ds.task == "regression" and ds.y.shape == (101, 4) and ds.y.dtype == np.dtype(dtype)
    else:
        assert ds.task == "classification" and ds.y.shape == (101,) and ds.y.dtype == np.int64
    assert not ds.x.flags.writeable and not ds.y.flags.writeable
    assert "array" not in repr(ds)


def test_float32_is_cast_of_float64():
    a = make_dataset("spirals", n_samples=64, input_dim=3, dtype="float32")
    b = make_dataset("spirals", n_samples=64, input_dim=3)
    np.testing.assert_array_equal(a.x, b.x.astype(np.float32))


def test_defaults():
    ds = make_dataset("blobs")
    assert (ds.n_samples, ds.input_dim, ds.n_classes, ds.x.dtype) == (1024, 2, 3, np.float64)
    assert make_dataset("teacher", n_samples=8).y.shape == (8, 1)
    dg = make_dataset("digits")
    assert (dg.n_samples, dg.input_dim, dg.n_classes) == (1797, 64, 10)


@pytest.mark.parametrize("name", CLASSIFICATION)
@pytest.mark.parametrize(("n", "k"), [(300, 3), (301, 7), (10, 10)])
def test_labels_in_range_and_balanced(name, n, k):
    ds = make_dataset(name, n_samples=n, input_dim=2, n_classes=k)
    counts = np.bincount(ds.y, minlength=k)
    assert ds.y.min() >= 0 and ds.y.max() < k and len(counts) == k
    assert counts.max() - counts.min() <= 1
    assert not np.all(np.diff(ds.y) >= 0)  # rows are shuffled, not sorted by class


def test_spirals_embedding_is_a_rotation():
    flat = make_dataset("spirals", n_samples=200)
    high = make_dataset("spirals", n_samples=200, input_dim=6)
    np.testing.assert_array_equal(flat.y, high.y)
    np.testing.assert_allclose(np.linalg.norm(high.x, axis=1), np.linalg.norm(flat.x, axis=1), rtol=1e-12)
    assert np.linalg.matrix_rank(high.x) == 2


def _nearest_centroid_accuracy(ds):
    centroids = np.stack([ds.x[ds.y == c].mean(0) for c in range(ds.n_classes)])
    pred = np.argmin(((ds.x[:, None, :] - centroids) ** 2).sum(-1), axis=1)
    return (pred == ds.y).mean()


def _one_nn_accuracy(ds, n_train):
    xt, yt, xv, yv = ds.x[:n_train], ds.y[:n_train], ds.x[n_train:], ds.y[n_train:]
    d2 = (xt**2).sum(1) - 2 * xv @ xt.T  # squared distance up to a per-row constant
    return (yt[np.argmin(d2, axis=1)] == yv).mean()


def test_learnability():
    assert _nearest_centroid_accuracy(make_dataset("blobs")) > 0.99
    assert _nearest_centroid_accuracy(make_dataset("blobs", input_dim=20, n_classes=10)) > 0.99
    assert _nearest_centroid_accuracy(make_dataset("blobs", n_classes=10)) > 0.99  # polygon in 2-D
    assert _nearest_centroid_accuracy(make_dataset("blobs", input_dim=3, n_classes=10)) > 0.95
    spirals = make_dataset("spirals", n_samples=800)
    assert _nearest_centroid_accuracy(spirals) < 0.6  # not linearly separable...
    assert _one_nn_accuracy(spirals, 600) > 0.95  # ...but nonlinearly learnable
    assert _one_nn_accuracy(make_dataset("digits"), 1300) > 0.95
    assert 0.2 < _one_nn_accuracy(make_dataset("gaussian", n_samples=800), 600) < 0.45  # chance ≈ 1/3


def test_teacher_noise_is_additive():
    clean = make_dataset("teacher", n_samples=2000, input_dim=3, noise=0.0)
    noisy = make_dataset("teacher", n_samples=2000, input_dim=3, noise=0.1)
    np.testing.assert_array_equal(clean.x, noisy.x)
    assert 0.3 < clean.y.std() < 1.0
    assert abs((noisy.y - clean.y).std() - 0.1) < 0.01


@pytest.mark.parametrize(("n", "bs"), [(100, 10), (103, 10), (7, 7), (7, 1)])
def test_batches_cover_each_sample_once_per_epoch(n, bs):
    ds = Dataset("ids", np.arange(n, dtype=np.float64)[:, None], np.arange(n), "classification", n)
    stream = batches(ds, bs, np.random.default_rng(0))
    per_epoch = n // bs
    epochs = []
    for _ in range(3):
        got = [next(stream) for _ in range(per_epoch)]
        assert all(xb.shape == (bs, 1) and yb.shape == (bs,) for xb, yb in got)
        ids = np.concatenate([yb for _, yb in got])
        np.testing.assert_array_equal(ids, np.concatenate([xb[:, 0] for xb, _ in got]))
        assert len(np.unique(ids)) == len(ids) == per_epoch * bs  # no repeats; n % bs dropped
        epochs.append(ids)
    if n % bs == 0:
        assert all(sorted(e.tolist()) == list(range(n)) for e in epochs)
    if per_epoch * bs > 1:
        assert not np.array_equal(epochs[0], epochs[1])  # reshuffled each epoch


def test_batches_deterministic_given_rng():
    ds = make_dataset("blobs", n_samples=50)
    a = batches(ds, 8, np.random.default_rng(5))
    b = batches(ds, 8, np.random.default_rng(5))
    for _ in range(20):
        (xa, ya), (xb, yb) = next(a), next(b)
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"name": "moons"}, "dataset='moons'"),
        ({"name": "blobs", "n_samples": 0}, "n_samples=0"),
        ({"name": "blobs", "n_samples": -5}, "n_samples=-5"),
        ({"name": "blobs", "n_samples": 2.5}, "n_samples=2.5"),
        ({"name": "blobs", "input_dim": 0}, "input_dim=0"),
        ({"name": "spirals", "input_dim": 1}, "input_dim=1"),
        ({"name": "digits", "input_dim": 2}, "input_dim=2"),
        ({"name": "digits", "n_classes": 3}, "n_classes=3"),
        ({"name": "digits", "n_samples": 1798}, "n_samples=1798"),
        ({"name": "blobs", "n_classes": 1}, "n_classes=1"),
        ({"name": "gaussian", "n_classes": 0}, "n_classes=0"),
        ({"name": "teacher", "n_classes": 0}, "n_classes=0"),
        ({"name": "blobs", "noise": -0.1}, "noise=-0.1"),
        ({"name": "blobs", "noise": float("nan")}, "noise=nan"),
        ({"name": "blobs", "seed": -1}, "seed=-1"),
        ({"name": "blobs", "dtype": "int32"}, "dtype='int32'"),
        ({"name": "blobs", "dtype": "nonsense"}, "dtype='nonsense'"),
    ],
)
def test_validation_errors_name_the_argument(kwargs, argument):
    kwargs = dict(kwargs)
    with pytest.raises(ValueError, match=r"must be|allowed") as err:
        make_dataset(kwargs.pop("name"), **kwargs)
    assert argument in str(err.value)
    if argument.startswith("dataset="):
        assert all(name in str(err.value) for name in DATASETS)


def test_teacher_accepts_one_output():
    assert make_dataset("teacher", n_samples=4, n_classes=1).output_dim == 1


@pytest.mark.parametrize(
    ("bs", "argument"), [(0, "batch_size=0"), (-1, "batch_size=-1"), (11, "batch_size=11")]
)
def test_batches_validation(bs, argument):
    ds = make_dataset("blobs", n_samples=10)
    with pytest.raises(ValueError, match="batch_size must be") as err:
        batches(ds, bs, np.random.default_rng(0))  # raises eagerly, before the first next()
    assert argument in str(err.value)


def test_digits_checksums_from_raw_file():
    with np.load(DIGITS_FILE, allow_pickle=False) as f:
        images, labels = f["images"], f["labels"]
    assert images.shape == (1797, 64) and images.dtype == np.uint8
    assert images.min() == 0 and images.max() == 16
    assert int(images.sum(dtype=np.int64)) == DIGITS_PIXEL_SUM
    assert int(images[0].sum(dtype=np.int64)) == DIGITS_FIRST_ROW_SUM
    assert hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest() == DIGITS_SHA256
    assert int(labels.sum(dtype=np.int64)) == DIGITS_LABEL_SUM
    assert np.bincount(labels).tolist() == DIGITS_COUNTS
    assert (DIGITS_FILE.parent / "LICENSE-digits.txt").is_file()


def test_digits_dataset_matches_raw_scaled_to_unit_interval():
    ds = make_dataset("digits", n_samples=1797)
    assert ds.x.min() == 0.0 and ds.x.max() == 1.0
    assert round((ds.x * 16).sum()) == DIGITS_PIXEL_SUM
    assert int(ds.y.sum()) == DIGITS_LABEL_SUM and ds.y.dtype == np.int64
    assert np.bincount(ds.y).tolist() == DIGITS_COUNTS
    sub = make_dataset("digits", n_samples=100, seed=1, dtype="float32")
    assert sub.x.shape == (100, 64) and sub.x.dtype == np.float32
    rows = {r.tobytes() for r in ds.x.astype(np.float32)}
    assert all(r.tobytes() in rows for r in sub.x)  # a subset of the real images


def test_digits_loads_without_sklearn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # any `import sklearn` would now fail
    data.load_digits_raw.cache_clear()  # force a fresh read of the shipped file
    ds = make_dataset("digits", n_samples=1797)
    assert round((ds.x * 16).sum()) == DIGITS_PIXEL_SUM


def test_split_partitions_rows_deterministically():
    ds = Dataset("ids", np.arange(50.0)[:, None], np.arange(50), "classification", 50)
    train, test = split(ds, 0.2, seed=1)
    assert (train.n_samples, test.n_samples) == (40, 10)
    ids = np.concatenate([train.y, test.y])
    assert sorted(ids.tolist()) == list(range(50))
    assert np.all(np.diff(train.y) > 0) and np.all(np.diff(test.y) > 0)
    np.testing.assert_array_equal(train.x[:, 0], train.y)
    np.testing.assert_array_equal(split(ds, 0.2, seed=1)[1].y, test.y)
    assert not np.array_equal(split(ds, 0.2, seed=2)[1].y, test.y)
    assert not test.x.flags.writeable and test.n_classes == 50


@pytest.mark.parametrize(
    ("fraction", "argument"),
    [
        (0.0, "test_fraction=0.0"),
        (1.0, "test_fraction=1.0"),
        (0.001, "test_fraction=0.001"),
        ("a", "test_fraction='a'"),
    ],
)
def test_split_validation(fraction, argument):
    ds = make_dataset("blobs", n_samples=20)
    with pytest.raises(ValueError, match="test_fraction must be") as err:
        split(ds, fraction)
    assert argument in str(err.value)
