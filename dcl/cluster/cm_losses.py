"""The loss terms of the clustering module (CM) and of AE-CM (Boubekki et al., Machine Learning 2021,
arXiv 2012.03740), as pure functions named after the paper's terms.

Notation: ``x`` (N, d) the inputs of the CM (raw vectors for the CM, the code z = f(x) for AE-CM), ``gamma``
(N, K) the soft assignments (rows on the simplex), ``centers`` = U (K, d) the centroids, one per row.

The CM reconstructs x by the convex mix of centroids x~ = gamma U. Its loss (sums over the batch, as in the
authors' code) is E1 + E2 + E3 + E4 with::

    E1 = sum_n ||x_n - gamma_n U||^2                                    (reconstruction)
    E2 = sum_k (sum_n gamma_nk (1 - gamma_nk)) ||u_k||^2                 (sparsity + regularization)
    E3 = - sum_{k != l} (sum_n gamma_nk gamma_nl) u_k . u_l              (sparsity + merging)
    E4 = sum_k (1 - alpha_k) log(pi_k + 1e-10),  pi = mean_n gamma_n     (Dirichlet prior on the weights)

The paper's central identity: E1 + E2 + E3 = sum_n sum_k gamma_nk ||x_n - u_k||^2 (:func:`expected_distortion`),
the expected distortion of an isotropic GMM (k-means with soft assignments); so minimizing the CM loss is
fitting an isotropic GMM with a Dirichlet prior on its mixing weights.

AE-CM replaces E2 and E3 by their value for orthonormal centroids (E2 -> sum gamma (1 - gamma), E3 -> 0) and
adds the penalty lambda * sum_kl |(U U^T - I)_kl| that keeps U near orthonormal, plus beta * sum ||x - g(f(x))||^2.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

__all__ = ["cm_reconstruction", "cm_sparsity", "cm_merging", "cm_dirichlet_prior", "orthogonality_penalty",
           "ae_reconstruction", "expected_distortion", "cm_loss_terms", "aecm_loss_terms"]


def cm_reconstruction(x: Tensor, gamma: Tensor, centers: Tensor) -> Tensor:
    """E1 = sum_n ||x_n - gamma_n U||^2."""
    return (x - gamma @ centers).pow(2).sum()


def cm_sparsity(gamma: Tensor, centers: Tensor | None = None) -> Tensor:
    """E2 = sum_k (sum_n gamma_nk (1 - gamma_nk)) ||u_k||^2; with ``centers=None`` the orthonormal-U form
    of AE-CM, sum_nk gamma_nk (1 - gamma_nk). Zero exactly when every gamma_n is one-hot."""
    per_cluster = (gamma * (1.0 - gamma)).sum(dim=0)
    if centers is None:
        return per_cluster.sum()
    return (per_cluster * centers.pow(2).sum(dim=1)).sum()


def cm_merging(gamma: Tensor, centers: Tensor) -> Tensor:
    """E3 = - sum_{k != l} (sum_n gamma_nk gamma_nl) u_k . u_l (the off-diagonal of (gamma^T gamma) * (U U^T))."""
    gu = (gamma.T @ gamma) * (centers @ centers.T)
    off = ~torch.eye(gu.shape[0], dtype=torch.bool, device=gu.device)
    return -gu[off].sum()


def _alpha_vector(alpha: float | Sequence[float] | Tensor, k: int, like: Tensor) -> Tensor:
    a = torch.as_tensor(alpha, dtype=like.dtype, device=like.device)
    return a.expand(k) if a.ndim == 0 else a


def cm_dirichlet_prior(gamma: Tensor, alpha: float | Sequence[float] | Tensor, eps: float = 1e-10,
                       pi: Tensor | None = None) -> Tensor:
    """E4 = sum_k (1 - alpha_k) log(pi_k + eps), pi the batch mean of gamma: the negative log-density of a
    Dirichlet(alpha) prior on the mixing weights (up to a constant). With alpha > 1 it pushes pi toward uniform
    (no empty cluster). A non-uniform ``alpha`` is matched to the clusters by rank (smallest alpha to the
    smallest weight, as in the authors' code), since the cluster order is arbitrary. ``pi``: the mixing
    weights when they are not this batch's mean (under DDP, the mean over every rank's batch)."""
    log_pi = torch.log((gamma.mean(dim=0) if pi is None else pi) + eps)
    a = _alpha_vector(alpha, gamma.shape[1], gamma)
    if a.numel() > 1 and not bool((a == a[0]).all()):
        log_pi, a = torch.sort(log_pi).values, torch.sort(a).values
    return ((1.0 - a) * log_pi).sum()


def orthogonality_penalty(centers: Tensor, power: int = 1) -> Tensor:
    """sum_kl |(U U^T - I)_kl|^power: 0 iff the centroids are orthonormal (power 1 in the authors' TF code,
    2 in their PyTorch example)."""
    eye = torch.eye(centers.shape[0], dtype=centers.dtype, device=centers.device)
    return (centers @ centers.T - eye).abs().pow(power).sum()


def ae_reconstruction(x: Tensor, x_hat: Tensor) -> Tensor:
    """sum_n ||x_n - g(f(x_n))||^2, the autoencoder's reconstruction error summed over the batch."""
    return (x - x_hat).pow(2).sum()


def expected_distortion(x: Tensor, gamma: Tensor, centers: Tensor) -> Tensor:
    """sum_n sum_k gamma_nk ||x_n - u_k||^2, which E1 + E2 + E3 equals (the paper's equivalence with a GMM)."""
    d2 = (x.unsqueeze(1) - centers.unsqueeze(0)).pow(2).sum(dim=-1)
    return (gamma * d2).sum()


def cm_loss_terms(x: Tensor, gamma: Tensor, centers: Tensor,
                  alpha: float | Sequence[float] | Tensor, pi: Tensor | None = None) -> dict[str, Tensor]:
    """The CM's four terms by name (the loss is their sum)."""
    return {"e1": cm_reconstruction(x, gamma, centers), "e2": cm_sparsity(gamma, centers),
            "e3": cm_merging(gamma, centers), "e4": cm_dirichlet_prior(gamma, alpha, pi=pi)}


def aecm_loss_terms(x: Tensor, x_hat: Tensor, z: Tensor, gamma: Tensor, centers: Tensor,
                    alpha: float | Sequence[float] | Tensor, beta: float, lbd: float,
                    orth_power: int = 1, pi: Tensor | None = None) -> dict[str, Tensor]:
    """AE-CM's weighted terms by name (the loss is their sum)::

        E1(z) + E2(orthonormal form) + lbd * ||U U^T - I||_1 + E4 + beta * sum ||x - x_hat||^2
    """
    return {"e1": cm_reconstruction(z, gamma, centers), "e2": cm_sparsity(gamma),
            "orth": lbd * orthogonality_penalty(centers, orth_power), "e4": cm_dirichlet_prior(gamma, alpha, pi=pi),
            "ae": beta * ae_reconstruction(x.flatten(1), x_hat.flatten(1))}
