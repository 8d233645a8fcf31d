"""Closed-form divergences between diagonal Gaussians: KL and the alpha-skew geometric Jensen-Shannon.

The alpha-Jensen-Shannon clustering loss of Lim (arXiv 2412.08940, "Deep Clustering using Dirichlet Process
Gaussian Mixture and Alpha Jensen-Shannon Divergence Clustering Loss") is the skew *geometric* JS divergence
of Nielsen (Entropy 2019, "On the Jensen-Shannon symmetrization of distances relying on abstract means"), in the
skewed form of Deasy, Simidjievski and Lio (NeurIPS 2020, "Constraining variational inference with geometric
Jensen-Shannon divergence"). The arithmetic mixture (p + q) / 2 of the ordinary JS divergence has no closed form
for Gaussians; the normalized weighted *geometric* mean of two Gaussians is a Gaussian, so the divergence is
closed-form. For p = N(mu_1, diag s_1^2), q = N(mu_2, diag s_2^2) and a skew alpha in [0, 1]::

    G_alpha(p, q) ∝ p^alpha q^(1 - alpha)  =  N(mu_a, diag s_a^2),
        1 / s_a^2 = alpha / s_1^2 + (1 - alpha) / s_2^2,
        mu_a      = s_a^2 (alpha mu_1 / s_1^2 + (1 - alpha) mu_2 / s_2^2),

    aJS(p || q) = (1 - alpha) KL(p || G_alpha) + alpha KL(q || G_alpha)
                = 1/2 sum_j [ ((1 - alpha) s_1^2 + alpha s_2^2) / s_a^2
                              + (1 - alpha) (mu_1 - mu_a)^2 / s_a^2 + alpha (mu_2 - mu_a)^2 / s_a^2
                              + log s_a^2 - (1 - alpha) log s_1^2 - alpha log s_2^2 - 1 ].

The mean terms ``(1 - alpha)/2 (mu_1 - mu_a)^2 / s_a^2 + alpha/2 (mu_2 - mu_a)^2 / s_a^2`` are the form quoted
from the paper (through a public summary of it; the full text was not available). Their denominator, the
geometric mean's variance, identifies KL(p || G_alpha) + KL(q || G_alpha), not the dual
(1 - alpha) KL(G_alpha || p) + alpha KL(G_alpha || q) (whose mean terms divide by s_1^2 and s_2^2). Properties (all unit-tested): zero iff p = q; symmetric at alpha = 1/2 (in general
aJS_alpha(p || q) = aJS_{1-alpha}(q || p)); at the limits it is a KL divergence:
alpha = 0 gives G = q and aJS = KL(p || q), alpha = 1 gives G = p and aJS = KL(q || p).

``dual=True`` gives that dual instead, (1 - alpha) KL(G_alpha || p) + alpha KL(G_alpha || q), the form
this project's method notes first wrote (Deasy et al.'s JS*): also zero iff p = q; at alpha = 0 it is KL(q || p), the
reverse of the default's. DPGMM's ``js_form`` chooses between the two.

``skew=False`` gives Nielsen's unskewed weighting G_alpha ∝ p^(1 - alpha) q^alpha, which vanishes at both limits
(aJS / alpha -> KL(q || p) as alpha -> 0); it equals the skewed one at alpha = 1/2.
"""

from __future__ import annotations

from torch import Tensor


def kl_diag_gaussians(mu1: Tensor, var1: Tensor, mu2: Tensor, var2: Tensor) -> Tensor:
    """KL(N(mu1, diag var1) || N(mu2, diag var2)), summed over the last dimension (broadcasting)."""
    return 0.5 * (var1 / var2 + (mu1 - mu2).pow(2) / var2 - 1.0 + var2.log() - var1.log()).sum(dim=-1)


def geometric_mean_gaussian(mu1: Tensor, var1: Tensor, mu2: Tensor, var2: Tensor,
                            alpha: float) -> tuple[Tensor, Tensor]:
    """The normalized weighted geometric mean p^alpha q^(1-alpha) / Z of two diagonal Gaussians: (mu_a, var_a)."""
    precision = alpha / var1 + (1.0 - alpha) / var2
    var_a = 1.0 / precision
    mu_a = var_a * (alpha * mu1 / var1 + (1.0 - alpha) * mu2 / var2)
    return mu_a, var_a


def alpha_js_divergence(mu1: Tensor, var1: Tensor, mu2: Tensor, var2: Tensor, alpha: float = 0.5,
                        skew: bool = True, dual: bool = False) -> Tensor:
    """The alpha-skew geometric Jensen-Shannon divergence aJS(p || q) between diagonal Gaussians, in closed form.

    Args:
        mu1, var1: mean and variance of p (``(..., d)``; any broadcastable shapes).
        mu2, var2: mean and variance of q.
        alpha: skew in [0, 1] (1/2: the symmetric geometric JS divergence).
        skew: True (default): G_alpha ∝ p^alpha q^(1-alpha), so alpha = 0 gives KL(p || q) and alpha = 1 gives
            KL(q || p) (Deasy et al. 2020); False: Nielsen's G_alpha ∝ p^(1-alpha) q^alpha.
        dual: False (default): (1 - alpha) KL(p || G) + alpha KL(q || G), the paper's mean terms; True:
            (1 - alpha) KL(G || p) + alpha KL(G || q).

    Returns:
        the divergence summed over the last dimension, shape ``broadcast(...)``.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    w = alpha if skew else 1.0 - alpha  # the exponent of p in the geometric mean
    mu_a, var_a = geometric_mean_gaussian(mu1, var1, mu2, var2, w)
    if dual:
        return ((1.0 - alpha) * kl_diag_gaussians(mu_a, var_a, mu1, var1)
                + alpha * kl_diag_gaussians(mu_a, var_a, mu2, var2))
    return ((1.0 - alpha) * kl_diag_gaussians(mu1, var1, mu_a, var_a)
            + alpha * kl_diag_gaussians(mu2, var2, mu_a, var_a))


def alpha_js_clustering_loss(mu: Tensor, var: Tensor, resp: Tensor, means: Tensor, variances: Tensor,
                             alpha: float = 0.5, skew: bool = True, dual: bool = False) -> Tensor:
    """The alpha-JS clustering loss: each sample's posterior q(z|x) = N(mu, diag var) is pulled toward the
    components that are responsible for it::

        L = 1/B sum_n sum_k r_nk aJS( N(mu_n, var_n) || N(m_k, S_k) )

    Args:
        mu, var: (B, d) the encoder's posterior means and variances.
        resp: (B, K) responsibilities (rows sum to 1; treated as constants by the caller).
        means, variances: (K, d) the components' means and (diagonal) variances.
    """
    div = alpha_js_divergence(mu[:, None, :], var[:, None, :], means[None], variances[None], alpha, skew, dual)
    return (resp * div).sum(dim=1).mean()
