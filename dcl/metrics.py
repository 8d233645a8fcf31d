"""Clustering metrics: unsupervised accuracy on a *rectangular* confusion matrix, NMI and ARI.

torchmetrics' own ClusterAccuracy keeps a square K x K matrix and cannot score a clustering whose number of
clusters differs from the number of classes (DP methods), so accuracy is ours. NMI is torchmetrics'. ARI is
ours too: torchmetrics' (1.9) multiplies pair counts of order N^2 in int64, which wraps from about 80,000 samples
(ARI -29 for a 0.73 clustering of 100,000), so it is computed from the contingency table in Python integers, as
scikit-learn does.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.functional.clustering import normalized_mutual_info_score


def confusion(preds: Tensor, target: Tensor) -> Tensor:
    """(K_pred x K_true) count matrix; labels are re-indexed to 0..K-1 by their sorted unique values."""
    _, p = torch.unique(preds, return_inverse=True)
    _, t = torch.unique(target, return_inverse=True)
    kp, kt = int(p.max()) + 1, int(t.max()) + 1
    return torch.bincount(p * kt + t, minlength=kp * kt).reshape(kp, kt)


def adjusted_rand_index(contingency: Tensor) -> float:
    """ARI from a contingency table (clusters x classes, or the transpose: ARI is symmetric), exactly as
    scikit-learn's ``adjusted_rand_score``: from the pair confusion matrix, in Python integers (no overflow at
    any N)."""
    c = contingency.cpu().long()
    n = int(c.sum())
    same_both = int((c * c).sum())  # sum of n_ij^2: ordered pairs together in both labelings, and i == j
    same_rows, same_cols = int((c.sum(1) ** 2).sum()), int((c.sum(0) ** 2).sum())
    tp = same_both - n
    fp, fn = same_cols - same_both, same_rows - same_both
    tn = n * n - fp - fn - same_both
    if fp == 0 and fn == 0:  # identical partitions (one cluster and one class included): 1, as scikit-learn
        return 1.0
    return 2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn))


def label_codes(labels) -> Tensor:
    """A 1-D int64 tensor of labels from an array-like: integers as they are; names (strings, or the objects of a
    pandas column) numbered 0.. in their sorted order; missing entries (None, NaN, "", "NA", pandas' NA) -1,
    unlabeled."""
    return coded_labels(labels)[0]


def coded_labels(labels) -> tuple[Tensor, list[str] | None]:
    """:func:`label_codes`, and the names its codes number (``names[code]``), or None when the labels are not
    names. Labels given as text or objects are read as a data file's (``dcl.datamodule.class_ids``: "NA", "n/a",
    "nan" and a negative number among names are unknown too), so that scores match the fit's own."""
    if torch.is_tensor(labels):
        return labels, None
    a = np.asarray(labels)
    if a.dtype.kind in "biuf":
        return torch.as_tensor(a), None
    from dcl.datamodule import class_ids  # (imports Lightning: only for labels given as text)

    codes, names = class_ids(a.reshape(-1), "labels")
    return torch.from_numpy(codes).reshape(a.shape), names


def _labelings(preds, target) -> tuple[Tensor, Tensor]:
    """Two 1-D int64 tensors from array-likes (tensors, numpy arrays, lists; labels may be names,
    :func:`label_codes`), the samples whose target is < 0 or missing (unlabeled) left out."""
    preds, target = label_codes(preds), label_codes(target)
    if preds.shape != target.shape or preds.ndim != 1:
        raise ValueError(f"preds and target must be 1-D of equal length, got shapes {tuple(preds.shape)} and "
                         f"{tuple(target.shape)}")
    known = target >= 0
    return preds[known].long(), target[known].long()


def cluster_accuracy(preds, target) -> Tensor:
    """Best one-to-one matching of clusters to classes (Hungarian), as a fraction of the labeled samples.

    ``preds`` and ``target``: 1-D array-likes (tensors, numpy arrays, lists) of equal length; samples whose
    target is negative (unlabeled) are left out. With K_pred != K_true the matching is rectangular: the surplus
    clusters (or classes) stay unmatched and their samples count as errors, so finding too many or too few
    clusters is penalized.
    """
    return _matched_accuracy(_labeled_confusion(*_labelings(preds, target)))


def _labeled_confusion(preds: Tensor, target: Tensor) -> Tensor:
    """:func:`confusion` on the CPU of labelings from :func:`_labelings`, refused when they are empty."""
    if preds.numel() == 0:
        raise ValueError("cluster_accuracy of an empty labeling (or of no labeled sample) is undefined")
    return confusion(preds, target).cpu()


def _matched_accuracy(c: Tensor) -> Tensor:
    """:func:`cluster_accuracy` of a confusion matrix."""
    rows, cols = linear_sum_assignment(c.numpy(), maximize=True)
    return c[rows, cols].sum().double() / c.sum()


def clustering_scores(preds, target) -> dict[str, float]:
    """ACC, NMI and ARI of a labeling, as scikit-learn computes NMI and ARI. ``preds`` and ``target``: 1-D
    array-likes of equal length; samples whose target is negative (unlabeled) are left out."""
    preds, target = _labelings(preds, target)
    c = _labeled_confusion(preds, target)  # (once, for ACC and ARI)
    acc, ari = float(_matched_accuracy(c)), adjusted_rand_index(c)
    # torchmetrics builds a sparse contingency table; saying explicitly that its invariants are not checked (the
    # default) keeps torch from warning about it on every scoring
    with torch.sparse.check_sparse_tensor_invariants(enable=False):
        nmi = float(normalized_mutual_info_score(preds, target))
    if len(preds.unique()) == len(target.unique()) == 1:
        nmi = 1.0  # one cluster, one class: identical partitions (scikit-learn's rule; torchmetrics gives 0)
    return {"acc": acc, "nmi": nmi, "ari": ari}


def embedding_silhouette(z: Tensor, labels: Tensor, max_samples: int = 10000, seed: int = 0) -> float | None:
    """Mean silhouette of a clustering in the embedding it was made in: a score without labels, for comparing runs
    of one method on unlabeled data (each method shapes its own embedding, so not across methods). scikit-learn's,
    on at most ``max_samples`` samples drawn with a fixed seed (it costs O(N^2)); None when it is undefined (fewer
    than 2 clusters used, or as many clusters as samples)."""
    import sklearn
    from sklearn.metrics import silhouette_score

    labels = labels.cpu().numpy()
    if not 2 <= len(np.unique(labels)) <= len(labels) - 1:
        return None
    sample = max_samples if len(labels) > max_samples else None
    # the distances of the sample in blocks of at most 64 MB: at scikit-learn's default working memory (1 GB) the
    # 10,000 samples' whole float64 distance matrix (800 MB) was one block, 0.5 GB more peak memory for the score
    with sklearn.config_context(working_memory=min(sklearn.get_config()["working_memory"], 64)):
        try:
            return float(silhouette_score(z.float().cpu().numpy(), labels, sample_size=sample, random_state=seed))
        except ValueError:  # the sample drew a single cluster
            return None


class ClusterAccuracy(Metric):
    """torchmetrics-style accumulating form of :func:`cluster_accuracy` (predictions concatenated across
    batches and, under DDP, across processes); samples whose target is negative (unlabeled) are left out."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")

    def update(self, preds: Tensor, target: Tensor) -> None:
        self.preds.append(preds.flatten().long())
        self.target.append(target.flatten().long())

    def compute(self) -> Tensor:
        preds = torch.cat(self.preds) if isinstance(self.preds, list) else self.preds
        target = torch.cat(self.target) if isinstance(self.target, list) else self.target
        return cluster_accuracy(preds, target)
