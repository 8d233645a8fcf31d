"""Clustering metrics against scikit-learn / scipy / brute force, including K_pred != K_true."""

import itertools

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from dcl.metrics import ClusterAccuracy, cluster_accuracy, clustering_scores, embedding_silhouette, label_codes


def brute_force_accuracy(pred: np.ndarray, true: np.ndarray) -> float:
    """Best injective mapping of clusters to classes by enumeration (small K only)."""
    ps, ts = np.unique(pred), np.unique(true)
    best = 0
    if len(ps) <= len(ts):
        for perm in itertools.permutations(ts, len(ps)):
            best = max(best, sum(((pred == p) & (true == t)).sum() for p, t in zip(ps, perm)))
    else:
        for perm in itertools.permutations(ps, len(ts)):
            best = max(best, sum(((pred == p) & (true == t)).sum() for p, t in zip(perm, ts)))
    return best / len(pred)


@pytest.mark.parametrize("k_pred,k_true", [(4, 4), (6, 4), (3, 5), (2, 2)])
@pytest.mark.parametrize("seed", range(3))
def test_accuracy_matches_brute_force_on_rectangular_matrices(k_pred, k_true, seed):
    rng = np.random.default_rng(seed)
    true = rng.integers(0, k_true, 200)
    pred = np.where(rng.random(200) < 0.6, (true * 7 + 3) % k_pred, rng.integers(0, k_pred, 200))
    got = float(cluster_accuracy(torch.from_numpy(pred), torch.from_numpy(true)))
    assert got == pytest.approx(brute_force_accuracy(pred, true))


def test_accuracy_is_permutation_invariant_and_perfect():
    true = torch.arange(10).repeat(30)
    pred = (true * 3 + 1) % 10  # a relabeling
    assert float(cluster_accuracy(pred, true)) == 1.0
    # too many clusters: splitting each class in two can only match half the samples of each class
    split = true * 2 + (torch.arange(300) // 10) % 2  # each class in two halves
    assert float(cluster_accuracy(split, true)) == pytest.approx(0.5)


@pytest.mark.parametrize("seed", range(3))
def test_nmi_ari_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    true = rng.integers(0, 5, 300)
    pred = np.where(rng.random(300) < 0.5, true, rng.integers(0, 8, 300))
    s = clustering_scores(torch.from_numpy(pred), torch.from_numpy(true))
    assert s["nmi"] == pytest.approx(normalized_mutual_info_score(true, pred), abs=1e-6)
    assert s["ari"] == pytest.approx(adjusted_rand_score(true, pred), abs=1e-6)


@pytest.mark.parametrize("n, classes", [(100_000, 10), (80_000, 2), (700_000, 4)])
def test_ari_of_many_samples_is_sklearns(n, classes):
    # torchmetrics' ARI (1.9) wraps around in int64 from about 80,000 samples: -29 here for 100,000
    rng = np.random.default_rng(0)
    true = rng.integers(0, classes, n)
    pred = np.where(rng.random(n) < 0.85, true, rng.integers(0, classes, n))
    s = clustering_scores(torch.from_numpy(pred), torch.from_numpy(true))
    assert s["ari"] == pytest.approx(adjusted_rand_score(true, pred), abs=1e-9)
    assert s["nmi"] == pytest.approx(normalized_mutual_info_score(true, pred), abs=1e-6)


def test_unknown_labels_are_left_out():
    true = torch.tensor([0, 0, 1, 1, -1, -1])
    pred = torch.tensor([1, 1, 0, 0, 0, 1])
    assert clustering_scores(pred, true)["acc"] == 1.0


def test_accumulating_metric_equals_functional():
    m = ClusterAccuracy()
    true = torch.randint(0, 4, (100,))
    pred = torch.randint(0, 6, (100,))
    for chunk in range(0, 100, 30):
        m.update(pred[chunk:chunk + 30], true[chunk:chunk + 30])
    assert float(m.compute()) == pytest.approx(float(cluster_accuracy(pred, true)))


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="equal length"):
        cluster_accuracy(torch.zeros(3, dtype=torch.long), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="empty"):
        cluster_accuracy(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))


def test_scoring_does_not_warn_about_sparse_invariants():
    import subprocess
    import sys

    code = ("import torch; from dcl.metrics import clustering_scores; "
            "clustering_scores(torch.tensor([0, 0, 1, 1, 2]), torch.tensor([1, 1, 0, 0, 0]))")
    done = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-500:]


def test_silhouette_in_the_embedding_is_scikit_learns_and_undefined_cases_are_none():
    from sklearn.datasets import make_blobs
    from sklearn.metrics import silhouette_score

    x, y = make_blobs(3000, 5, centers=4, random_state=0)
    z, labels = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y)
    assert embedding_silhouette(z, labels) == pytest.approx(silhouette_score(x, y), abs=1e-5)
    # a subsample beyond max_samples: scikit-learn's own sampling, repeatable, close to the full score
    sampled = embedding_silhouette(z, labels, max_samples=1000)
    assert sampled == embedding_silhouette(z, labels, max_samples=1000)
    assert sampled == pytest.approx(silhouette_score(x, y, sample_size=1000, random_state=0), abs=1e-5)
    assert sampled == pytest.approx(silhouette_score(x, y), abs=0.05) and sampled > 0.5  # well separated
    shuffled = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]
    assert abs(embedding_silhouette(z, shuffled)) < 0.05  # a random labeling scores about 0
    assert embedding_silhouette(z, torch.zeros(3000, dtype=torch.long)) is None  # one cluster
    assert embedding_silhouette(z[:3], torch.arange(3)) is None  # as many clusters as samples
    # a subsample that drew one cluster only (19 samples of one, 1 of another: seed 1 draws 5 of the 19)
    few = torch.zeros(20, dtype=torch.long)
    few[19] = 1
    assert embedding_silhouette(torch.arange(20.0)[:, None], few, max_samples=5, seed=1) is None


def test_silhouette_of_a_large_embedding_takes_bounded_memory():
    """The silhouette of 10,000 samples (the most it scores) took scikit-learn's default working memory, 1 GB: their
    whole float64 distance matrix (800 MB) at once, 0.5 GB more peak memory at the end of every fit on large data.
    It computes it in blocks of at most 64 MB, to the same score. (numpy's allocations, traced by tracemalloc.)"""
    import tracemalloc

    import sklearn
    from sklearn.metrics import silhouette_score

    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 5, (12_000,), generator=g)
    z = torch.randn(12_000, 2, generator=g) + 3 * labels[:, None].float()
    tracemalloc.start()
    try:
        score = embedding_silhouette(z, labels)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 200 * 2**20, f"{peak / 2**20:.0f} MB"
    assert sklearn.get_config()["working_memory"] == 1024  # the caller's setting is left as it was
    expected = silhouette_score(z.numpy(), labels.numpy(), sample_size=10_000, random_state=0)
    assert score == pytest.approx(expected, rel=1e-6)


def test_unlabeled_targets_are_left_out_by_every_scorer():
    true = torch.tensor([0, 0, 1, 1, -1, -1, -1])
    pred = torch.tensor([1, 1, 0, 0, 0, 1, 2])  # the unlabeled samples would otherwise form a third "class"
    assert float(cluster_accuracy(pred, true)) == 1.0
    m = ClusterAccuracy()
    m.update(pred, true)
    assert float(m.compute()) == 1.0
    assert clustering_scores(pred, true) == {"acc": 1.0, "nmi": pytest.approx(1.0), "ari": pytest.approx(1.0)}
    with pytest.raises(ValueError, match="no labeled sample"):
        cluster_accuracy(pred, torch.full_like(true, -1))


@pytest.mark.parametrize("pred,true", [([0] * 20, [0] * 20), ([3], [5]), ([0, 1] * 10, [0] * 20),
                                       ([0] * 20, [0, 1] * 10)])
def test_degenerate_partitions_score_as_sklearn(pred, true):
    s = clustering_scores(torch.tensor(pred), torch.tensor(true))
    assert s["nmi"] == pytest.approx(normalized_mutual_info_score(true, pred), abs=1e-6)
    assert s["ari"] == pytest.approx(adjusted_rand_score(true, pred), abs=1e-6)


def test_array_likes_are_accepted_and_unequal_lengths_refused():
    pred, true = np.array([1, 1, 0, 0, 2]), np.array([0, 0, 1, 1, 1])
    expected = clustering_scores(torch.from_numpy(pred), torch.from_numpy(true))
    assert clustering_scores(pred, true) == expected  # numpy, e.g. DeepClusterer's labels_
    assert clustering_scores(pred.tolist(), true.tolist()) == expected
    assert clustering_scores(pred.astype(np.int32), torch.from_numpy(true)) == expected
    assert float(cluster_accuracy(pred, true.tolist())) == expected["acc"]
    with pytest.raises(ValueError, match="equal length.*\\(5,\\) and \\(4,\\)"):
        clustering_scores(pred, true[:4])


def test_labels_given_as_names_score_as_their_integer_codes():
    """Found by an audit: the README scores est.labels_ against y "arrays or lists", and labels may be class names
    (Arrays, InMemory), but names (or an object column with missing entries) ended in a TypeError."""
    rng = np.random.default_rng(0)
    true = rng.integers(0, 4, size=200)
    pred = np.where(rng.random(200) < 0.8, true, rng.integers(0, 4, size=200))
    names = np.array(["cat", "dog", "eel", "fox"])[true]
    want = clustering_scores(pred, true)
    assert clustering_scores(pred, names) == want == clustering_scores(pred, names.tolist())
    assert clustering_scores(np.array(["c1", "c2", "c3", "c4"])[pred], true) == want  # clusters named too
    assert want["nmi"] == pytest.approx(normalized_mutual_info_score(true, pred), abs=1e-6)
    # missing entries are unlabeled: left out, as a negative label is
    partly = names.astype(object)
    partly[:50] = None
    partly[50:60] = float("nan")
    partly[60:70] = ""
    known = clustering_scores(pred[70:], true[70:])
    assert clustering_scores(pred, partly) == known == clustering_scores(pred, np.r_[np.full(70, -1), true[70:]])


class _PandasNA:
    """pandas' NA as an object column holds it (pandas is not a dependency): comparisons give NA, truth is
    ambiguous, and its text is "<NA>"."""

    def __eq__(self, other):
        return _PandasNA()

    __ne__ = __eq__

    def __bool__(self):
        raise TypeError("boolean value of NA is ambiguous")

    def __str__(self):
        return "<NA>"


def test_labels_given_as_text_are_read_as_the_fits_own():
    """Found by an audit: the fit read "NA", "n/a", "nan" and a negative number among names as unknown
    (dcl.datamodule.class_ids), clustering_scores as classes of their own, so the two scored the same labels apart."""
    from dcl.datamodule import class_ids

    rng = np.random.default_rng(1)
    true = rng.integers(0, 3, size=120)
    pred = np.where(rng.random(120) < 0.7, true, rng.integers(0, 3, size=120))
    text = np.array(["cat", "dog", "eel"], dtype=object)[true]
    text[:10], text[10:20], text[20:30], text[30:40], text[40:50] = "NA", "n/a", "-1", None, _PandasNA()
    ids, names = class_ids(text, "labels")
    assert names == ["cat", "dog", "eel"] and (ids[:50] == -1).all()
    assert clustering_scores(pred, text) == clustering_scores(pred[50:], true[50:])
    assert label_codes(text).tolist() == ids.tolist()
