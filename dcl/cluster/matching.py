"""Hungarian matching of two labelings (e.g. to keep cluster ids stable across re-clusterings)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["match_labels"]


def _as_labels(t: Tensor, name: str) -> Tensor:
    if not isinstance(t, Tensor):
        t = torch.as_tensor(t)
    if t.dim() != 1:
        raise ValueError(f"{name} must be a 1-D label tensor, got shape {tuple(t.shape)}")
    if t.is_floating_point() or t.is_complex():
        if t.numel() and not bool((t == t.round()).all()):
            raise ValueError(f"{name} must contain integer labels")
    t = t.long()
    if t.numel() and int(t.min()) < 0:
        raise ValueError(f"{name} contains negative labels")
    return t


def match_labels(new: Tensor, old: Tensor, n_clusters: int | None = None) -> Tensor:
    """Permutation mapping ``new`` cluster ids onto ``old`` ones with maximal agreement.

    Builds the confusion matrix ``C[i, j] = #{n : new[n] == i and old[n] == j}`` and solves the
    assignment problem (Hungarian, ``scipy.optimize.linear_sum_assignment(C, maximize=True)``).

    Args:
        new: ``(N,)`` integer labels of the new clustering.
        old: ``(N,)`` integer labels of the reference clustering (same samples).
        n_clusters: if given, both labelings are taken to have ``K = n_clusters`` clusters
            (ids ``0..K-1``; ids that do not occur are still matched).  If ``None``,
            ``K_new = new.max() + 1`` and ``K_old = old.max() + 1`` (may differ).

    Returns:
        long tensor ``perm`` of length ``K_new`` (on ``new``'s device) with
        ``perm[new_label] = matched old label``; ``perm[new]`` relabels ``new``.  When
        ``K_new > K_old``, the ``K_new - K_old`` unmatched new labels get the fresh ids
        ``K_old, K_old + 1, ...`` in increasing order of their new id.  ``perm`` is injective.
    """
    from scipy.optimize import linear_sum_assignment

    new = _as_labels(new, "new")
    old = _as_labels(old, "old").to(new.device)
    if new.shape[0] != old.shape[0]:
        raise ValueError(f"new and old must have the same length, got {new.shape[0]} and {old.shape[0]}")

    max_new = int(new.max()) + 1 if new.numel() else 0
    max_old = int(old.max()) + 1 if old.numel() else 0
    if n_clusters is not None:
        n_clusters = int(n_clusters)
        if n_clusters < 0:
            raise ValueError(f"n_clusters must be >= 0, got {n_clusters}")
        if max_new > n_clusters or max_old > n_clusters:
            raise ValueError(
                f"labels must be < n_clusters={n_clusters}, got max new={max_new - 1}, "
                f"max old={max_old - 1}"
            )
        k_new = k_old = n_clusters
    else:
        k_new, k_old = max_new, max_old

    perm = torch.empty(k_new, dtype=torch.long)
    if k_new == 0:  # (then k_old is 0 too: both labelings are empty, or n_clusters is 0)
        return perm.to(new.device)

    conf = torch.bincount(new * k_old + old, minlength=k_new * k_old).reshape(k_new, k_old)
    rows, cols = linear_sum_assignment(conf.cpu().numpy(), maximize=True)
    matched = torch.zeros(k_new, dtype=torch.bool)
    perm[torch.as_tensor(rows, dtype=torch.long)] = torch.as_tensor(cols, dtype=torch.long)
    matched[torch.as_tensor(rows, dtype=torch.long)] = True
    unmatched = torch.nonzero(~matched).flatten()
    perm[unmatched] = torch.arange(k_old, k_old + unmatched.numel(), dtype=torch.long)
    return perm.to(new.device)
