"""Within-class scatter, its sorted eigendecomposition, and the DEKM targets: pure tensor ops.

DEKM (Guo, Lin, Ye 2021) rotates the embedding by the eigenvectors V of the within-class scatter matrix

    S_w = sum_c sum_{i in c} (h_i - mu_c)(h_i - mu_c)^T

sorted by ascending eigenvalue, so the last coordinate of ``h V`` is the direction with the *largest*
within-class spread, i.e. the one carrying the least cluster-structure information; its target is the
assigned centroid's coordinate. Everything here is a function of tensors; the callback that calls it lives
in :mod:`dcl.callbacks.eigen_update`.

DDP: ``EigenUpdate`` hands this the gathered embeddings of all samples, so the eigendecomposition runs on identical
matrices on every rank.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dcl.cluster.matching import match_labels

__all__ = ["within_class_scatter", "sorted_eigh", "dekm_targets", "dekm_loss", "match_to_previous"]


def within_class_scatter(z: Tensor, labels: Tensor, centers: Tensor, chunk_size: int = 65536) -> Tensor:
    """``S_w = sum_i (z_i - mu_{l_i})(z_i - mu_{l_i})^T`` as a ``(d, d)`` float64 sum.

    Args:
        z: ``(N, d)`` embeddings.
        labels: ``(N,)`` cluster of each row, ids into ``centers``.
        centers: ``(K, d)`` the centers mu_c (k-means centers; the class means at a k-means fixed point).
        chunk_size: rows per chunk (memory O(chunk_size x d)).
    """
    if z.dim() != 2 or centers.dim() != 2 or z.shape[1] != centers.shape[1]:
        raise ValueError(f"z (N, d) and centers (K, d) must agree, got {tuple(z.shape)} and {tuple(centers.shape)}")
    if labels.shape != (z.shape[0],):
        raise ValueError(f"labels must have shape ({z.shape[0]},), got {tuple(labels.shape)}")
    d = z.shape[1]
    s = torch.zeros(d, d, dtype=torch.float64, device=z.device)
    c64 = centers.to(device=z.device, dtype=torch.float64)
    labels = labels.to(z.device)
    for start in range(0, z.shape[0], chunk_size):
        diff = z[start:start + chunk_size].to(torch.float64) - c64[labels[start:start + chunk_size]]
        s += diff.T @ diff
    return s


def sorted_eigh(s: Tensor) -> tuple[Tensor, Tensor]:
    """Eigenvalues in ascending order and the orthonormal eigenvectors as the columns of V (``s = V diag V^T``).

    ``torch.linalg.eigh`` in float64 (the official code's ``np.linalg.eig`` + argsort can return complex or
    non-orthogonal vectors for a symmetric matrix with close eigenvalues). Each column's sign is fixed so that
    its largest-magnitude entry is positive: the decomposition is then a deterministic function of ``s``.
    """
    if s.dim() != 2 or s.shape[0] != s.shape[1]:
        raise ValueError(f"s must be a square matrix, got shape {tuple(s.shape)}")
    s64 = s.to(torch.float64)
    evals, vecs = torch.linalg.eigh((s64 + s64.T) / 2)  # ascending
    pivot = vecs.abs().argmax(dim=0)
    # (the largest-magnitude entry of a unit vector is never 0: no sign of 0)
    signs = torch.sign(vecs[pivot, torch.arange(vecs.shape[1], device=vecs.device)])
    return evals, vecs * signs


def dekm_targets(h: Tensor, labels: Tensor, centers: Tensor, rotation: Tensor) -> Tensor:
    """DEKM's frozen targets: ``y_i = V^T h_i`` with its last coordinate replaced by ``(V^T mu_{l_i})_last``.

    Only the last (largest within-class scatter) coordinate is pulled toward the assigned centroid; all the
    others keep their current value, so the loss moves the embedding along V[:, -1] only.
    """
    v = rotation.to(h)
    y = h @ v
    y[:, -1] = (centers.to(h) @ v[:, -1])[labels.to(h.device)]
    return y


def dekm_loss(z: Tensor, rotation: Tensor, targets: Tensor) -> Tensor:
    """The DEKM loss of a batch: ``sum_i mean_j ((V^T f(x_i))_j - y_ij)^2``.

    As the official code: Keras' ``losses.mse`` (mean over the d coordinates) of the rotated embedding,
    summed over the batch by ``GradientTape.gradient`` of the per-sample vector. In float32 under mixed precision
    too: in bfloat16 the rotation's rounding pulled the coordinates the loss holds fixed (found by an audit).
    """
    with torch.autocast(z.device.type, enabled=False):
        return (z.float() @ rotation.float() - targets.float()).pow(2).mean(dim=1).sum()


def match_to_previous(new_labels: Tensor, new_centers: Tensor, old_labels: Tensor | None,
                      n_clusters: int) -> tuple[Tensor, Tensor, int]:
    """Rename a new clustering's ids to the previous one's by Hungarian matching of the two labelings.

    Returns ``(labels, centers, n_changed)``: the new labels and centers under the matched ids, and the number
    of samples whose cluster changed (the official code's ``n_change_assignment``: disagreements after the
    optimal matching). With no previous labels (``None`` or any negative entry) every sample counts as changed.
    """
    n = new_labels.shape[0]
    if old_labels is None or old_labels.numel() != n or bool((old_labels < 0).any()):
        return new_labels, new_centers, n
    perm = match_labels(new_labels, old_labels, n_clusters)  # perm[new id] = old id
    labels = perm[new_labels]
    centers = torch.empty_like(new_centers)
    centers[perm.to(new_centers.device)] = new_centers
    n_changed = int((labels != old_labels.to(labels.device)).sum())
    return labels, centers, n_changed
