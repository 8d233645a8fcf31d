"""Variational Dirichlet-process Gaussian mixture (truncated stick-breaking), in torch, from sufficient statistics.

The model (Blei and Jordan 2006, "Variational inference for Dirichlet process mixtures"; the DP-GMM that Lim
fits in the latent space of an autoencoder, arXiv 2412.08940 and IJCNN 2021), truncated at T components::

    v_k ~ Beta(1, alpha0),  k < T;  v_T = 1            pi_k = v_k prod_{l<k} (1 - v_l)   (stick-breaking)
    tau_kj ~ Gamma(a0, b0_j),  mu_kj | tau_kj ~ N(m0_j, 1 / (beta0 tau_kj))              (per dimension j)
    c_n ~ Cat(pi),  z_n | c_n = k ~ N(mu_k, diag(1 / tau_k))

with the mean-field posterior q(v) q(mu, tau) q(c): q(v_k) = Beta(gamma1_k, gamma2_k), q(mu_kj, tau_kj) =
Normal-Gamma(m_kj, beta_k, a_k, b_kj), q(c_n) = Cat(r_n). Coordinate ascent:

    M-step (from N_k = sum_n r_nk, S1_k = sum_n r_nk z_n, S2_k = sum_n r_nk z_n^2 only):
        gamma1_k = 1 + N_k,  gamma2_k = alpha0 + sum_{l>k} N_l
        beta_k = beta0 + N_k,  m_k = (beta0 m0 + S1_k) / beta_k,  a_k = a0 + N_k / 2,
        b_kj = b0_j + 1/2 [ (S2_kj - N_k xbar_kj^2) + beta0 N_k / (beta0 + N_k) (xbar_kj - m0_j)^2 ],  xbar = S1/N
    E-step:
        log r_nk = E[log pi_k] + 1/2 sum_j [ psi(a_k) - log b_kj - log 2 pi - 1/beta_k - a_k / b_kj (z_nj - m_kj)^2 ]
        E[log pi_k] = E[log v_k] + sum_{l<k} E[log(1 - v_l)]

Because the M-step reads only (N, S1, S2), data-parallel training all_reduces these T x (2d + 1) sums and
nothing else; the E-step is local to each sample.

Choices (the papers are silent):

* **Diagonal Normal-Gamma prior** rather than Normal-Wishart: the encoder's posterior q(z|x) is a diagonal
  Gaussian and the alpha-JS loss has its closed form for diagonal Gaussians; the per-component cost is O(d)
  instead of O(d^3); the statistics are O(T d) instead of O(T d^2) to all_reduce; and with few samples per
  component in early training a full covariance is badly conditioned.
* **Prior defaults matched to scikit-learn's** ``BayesianGaussianMixture(covariance_type="diag")``:
  ``beta0 = 1`` (mean_precision_prior), ``m0`` = data mean, ``a0 = d / 2`` (degrees_of_freedom_prior = d) and
  ``b0 = var(data) / 2`` (covariance_prior = var), so E[tau] = a0 / b0 = d / var as sklearn's Wishart, and the
  posterior mean covariance b_k / a_k equals sklearn's ``covariances_``.
* **Proper truncation** v_T = 1 (Blei and Jordan), so the weights sum to one; sklearn leaves the last stick open.
* Initialization by k-means (torch, ``dcl.cluster.kmeans``), components sorted by decreasing size so that the
  stick-breaking prior's ordering bias favours the large ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
from torch import Tensor

from dcl.distributed import all_reduce_sum_, broadcast_, is_distributed

__all__ = ["DPGMMPrior", "DPGMMPosterior", "DPGMMResult", "make_prior", "sufficient_stats", "update_posterior",
           "expected_log_weights", "expected_weights", "expected_log_likelihood", "log_responsibilities",
           "responsibilities", "elbo", "fit_dpgmm"]

LOG_2PI = math.log(2.0 * math.pi)


@dataclass
class DPGMMPrior:
    """Hyperparameters: stick concentration ``alpha0``, mean precision ``beta0``, mean ``m0`` (d,), Gamma shape
    ``a0`` and rates ``b0`` (d,) of the per-dimension precisions."""

    alpha0: float
    beta0: float
    m0: Tensor
    a0: float
    b0: Tensor


@dataclass
class DPGMMPosterior:
    """Variational posterior of K components: sticks Beta(gamma1, gamma2) (K,), Normal-Gamma (m, beta, a, b)
    with ``means`` (K, d), ``beta`` (K,), ``a`` (K,), ``b`` (K, d). Float64."""

    gamma1: Tensor
    gamma2: Tensor
    beta: Tensor
    means: Tensor
    a: Tensor
    b: Tensor

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    @property
    def variances(self) -> Tensor:
        """The components' variances (diagonal) b / a = 1 / E[tau], scikit-learn's ``covariances_`` (the expected
        variance E[1 / tau] is b / (a - 1))."""
        return self.b / self.a[:, None]

    def to(self, *args, **kwargs) -> "DPGMMPosterior":
        return DPGMMPosterior(**{f.name: getattr(self, f.name).to(*args, **kwargs) for f in fields(self)})

    def select(self, index: Tensor) -> "DPGMMPosterior":
        return DPGMMPosterior(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


@dataclass
class DPGMMResult:
    """Result of :func:`fit_dpgmm`: the posterior, the responsibilities and labels of the local data, the
    expected weights, the final ELBO (over all ranks' data), iterations and convergence."""

    posterior: DPGMMPosterior
    resp: Tensor
    labels: Tensor
    weights: Tensor
    elbo: float
    n_iter: int
    converged: bool


# -- statistics and the M-step ----------------------------------------------------------------------------------
def sufficient_stats(z: Tensor, resp: Tensor, distributed: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """(N_k, S1_k, S2_k) = (sum_n r_nk, sum_n r_nk z_n, sum_n r_nk z_n^2) in float64, summed over ranks when
    ``distributed``."""
    z, resp = z.double(), resp.double()
    n, s1, s2 = resp.sum(0), resp.T @ z, resp.T @ z.pow(2)
    if distributed:
        packed = torch.cat([n[:, None], s1, s2], dim=1)
        all_reduce_sum_(packed)
        d = z.shape[1]
        n, s1, s2 = packed[:, 0], packed[:, 1:1 + d], packed[:, 1 + d:]
    return n, s1, s2


def make_prior(z: Tensor, alpha0: float = 1.0, beta0: float = 1.0, a0: float | None = None,
               cov_prior: Tensor | float | None = None, m0: Tensor | None = None,
               distributed: bool = False) -> DPGMMPrior:
    """The prior, with scikit-learn's data-dependent defaults (m0 = mean, a0 = d / 2, b0 = var / 2), from the
    (all-reduced) first and second moments of ``z``."""
    if alpha0 <= 0 or beta0 <= 0:
        raise ValueError(f"alpha0 and beta0 must be > 0, got {alpha0}, {beta0}")
    zz = z.double()
    mom = torch.cat([torch.tensor([float(len(zz))], dtype=torch.float64, device=z.device), zz.sum(0),
                     zz.pow(2).sum(0)])
    if distributed:
        all_reduce_sum_(mom)
    d = z.shape[1]
    count = mom[0].clamp_min(1.0)
    mean = mom[1:1 + d] / count
    second = mom[1 + d:] / count
    # at least 1e-8 of the second moment: below it, the variance of (near-)constant embeddings is float64
    # rounding, and components that narrow make the alpha-JS loss (~ s^2 / S_k) explode
    var = torch.maximum(second - mean.pow(2), 1e-8 * second).clamp_min(1e-12) * count / (count - 1).clamp_min(1.0)
    if cov_prior is None:
        cov = var
    else:
        cov = torch.as_tensor(cov_prior, dtype=torch.float64, device=z.device).expand(d).clone()
    a0 = d / 2.0 if a0 is None else float(a0)
    if a0 <= 0:
        raise ValueError(f"a0 must be > 0, got {a0}")
    # sklearn: E[precision] = dof / covariance_prior; here a0 / b0 with a0 = dof / 2 -> b0 = cov / 2 * (2 a0 / d)
    b0 = cov * a0 / d
    return DPGMMPrior(float(alpha0), float(beta0), mean if m0 is None else m0.double().to(z.device), a0, b0)


def update_posterior(n: Tensor, s1: Tensor, s2: Tensor, prior: DPGMMPrior) -> DPGMMPosterior:
    """The M-step: the optimal q(v), q(mu, tau) given the (all-reduced) statistics, in closed form."""
    n, s1, s2 = n.double(), s1.double(), s2.double()
    tail = n.flip(0).cumsum(0).flip(0) - n  # sum_{l > k} N_l
    gamma1 = 1.0 + n
    gamma2 = prior.alpha0 + tail
    beta = prior.beta0 + n
    means = (prior.beta0 * prior.m0 + s1) / beta[:, None]
    a = prior.a0 + 0.5 * n
    safe_n = n.clamp_min(1e-12)[:, None]
    xbar = s1 / safe_n
    scatter = (s2 - s1 * xbar).clamp_min(0.0)
    shrink = (prior.beta0 * n / (prior.beta0 + n))[:, None] * (xbar - prior.m0).pow(2)
    b = prior.b0 + 0.5 * (scatter + shrink)
    return DPGMMPosterior(gamma1, gamma2, beta, means, a, b)


# -- expectations and the E-step --------------------------------------------------------------------------------
def _stick_expectations(post: DPGMMPosterior) -> tuple[Tensor, Tensor]:
    total = torch.digamma(post.gamma1 + post.gamma2)
    e_log_v = torch.digamma(post.gamma1) - total
    e_log_1mv = torch.digamma(post.gamma2) - total
    e_log_v[-1] = 0.0  # truncation: v_T = 1
    return e_log_v, e_log_1mv


def expected_log_weights(post: DPGMMPosterior) -> Tensor:
    """E[log pi_k] = E[log v_k] + sum_{l<k} E[log(1 - v_l)]."""
    e_log_v, e_log_1mv = _stick_expectations(post)
    prefix = torch.cat([e_log_1mv.new_zeros(1), e_log_1mv[:-1].cumsum(0)])
    return e_log_v + prefix


def expected_weights(post: DPGMMPosterior) -> Tensor:
    """E[v_k] prod_{l<k} (1 - E[v_l]) with v_T = 1: the weights (they sum to one)."""
    ev = post.gamma1 / (post.gamma1 + post.gamma2)
    ev[-1] = 1.0
    prefix = torch.cat([ev.new_ones(1), (1.0 - ev[:-1]).cumprod(0)])
    return ev * prefix


def expected_log_likelihood(z: Tensor, post: DPGMMPosterior) -> Tensor:
    """E_q[log N(z_n | mu_k, diag 1/tau_k)] (N, K), in float64."""
    z = z.double()
    prec = post.a[:, None] / post.b  # E[tau_kj]
    e_log_tau = torch.digamma(post.a)[:, None] - post.b.log()
    quad = z.pow(2) @ prec.T - 2.0 * z @ (prec * post.means).T + (prec * post.means.pow(2)).sum(1)
    d = z.shape[1]
    const = 0.5 * (e_log_tau.sum(1) - d * LOG_2PI - d / post.beta)
    return const - 0.5 * quad


def log_responsibilities(z: Tensor, post: DPGMMPosterior, chunk_size: int = 65536) -> tuple[Tensor, Tensor]:
    """(log r (N, K), log normalizer (N,)) of the E-step, computed in row chunks (float64)."""
    e_log_pi = expected_log_weights(post)
    log_r, log_norm = [], []
    for part in z.split(chunk_size):  # (no rows: one empty chunk, so the results are (0, K) and (0,))
        rho = expected_log_likelihood(part, post) + e_log_pi
        norm = torch.logsumexp(rho, dim=1)
        log_r.append(rho - norm[:, None])
        log_norm.append(norm)
    return torch.cat(log_r), torch.cat(log_norm)


def responsibilities(z: Tensor, post: DPGMMPosterior) -> Tensor:
    """The E-step's r_nk (N, K), in the dtype of ``z``."""
    return log_responsibilities(z, post)[0].exp().to(z.dtype)


# -- the evidence lower bound -----------------------------------------------------------------------------------
def _kl_beta(a: Tensor, b: Tensor, a0: float, b0: float) -> Tensor:
    lbeta = lambda x, y: torch.lgamma(x) + torch.lgamma(y) - torch.lgamma(x + y)  # noqa: E731
    a0t, b0t = torch.full_like(a, a0), torch.full_like(b, b0)
    return (lbeta(a0t, b0t) - lbeta(a, b) + (a - a0) * torch.digamma(a) + (b - b0) * torch.digamma(b)
            + (a0 + b0 - a - b) * torch.digamma(a + b))


def _kl_normal_gamma(post: DPGMMPosterior, prior: DPGMMPrior) -> Tensor:
    a = post.a[:, None].expand_as(post.b)
    a0 = torch.full_like(a, prior.a0)
    kl_gamma = ((a - a0) * torch.digamma(a) - torch.lgamma(a) + torch.lgamma(a0)
                + a0 * (post.b.log() - prior.b0.log()) + a * (prior.b0 - post.b) / post.b)
    ratio = (prior.beta0 / post.beta)[:, None]
    kl_mean = 0.5 * (ratio - 1.0 - ratio.log() + prior.beta0 * (a / post.b) * (post.means - prior.m0).pow(2))
    return (kl_gamma + kl_mean).sum(1)


def elbo(n: Tensor, s1: Tensor, s2: Tensor, entropy: Tensor | float, post: DPGMMPosterior,
         prior: DPGMMPrior) -> Tensor:
    """The evidence lower bound from the (all-reduced) statistics of q(c) and its entropy -sum r log r:

    E[log p(z | c, mu, tau)] + E[log p(c | v)] + H[q(c)] - KL(q(v) || p(v)) - KL(q(mu, tau) || p(mu, tau)).
    """
    n, s1, s2 = n.double(), s1.double(), s2.double()
    prec = post.a[:, None] / post.b
    e_log_tau = torch.digamma(post.a)[:, None] - post.b.log()
    quad = s2 - 2.0 * post.means * s1 + n[:, None] * post.means.pow(2)
    loglik = 0.5 * (n[:, None] * (e_log_tau - LOG_2PI - 1.0 / post.beta[:, None]) - prec * quad).sum()
    log_c = (n * expected_log_weights(post)).sum()
    kl_v = _kl_beta(post.gamma1[:-1], post.gamma2[:-1], 1.0, prior.alpha0).sum()
    return loglik + log_c + entropy - kl_v - _kl_normal_gamma(post, prior).sum()


# -- fitting ---------------------------------------------------------------------------------------------------
def _entropy(log_r: Tensor) -> Tensor:
    return -(log_r.exp() * log_r).sum()


def fit_dpgmm(z: Tensor, n_components: int | None = None, prior: DPGMMPrior | None = None, *,
              alpha0: float = 1.0, init: str | Tensor | DPGMMPosterior = "kmeans", max_iter: int = 200,
              tol: float = 1e-3, seed: int | None = 0, distributed: bool | None = None,
              kmeans_n_init: int = 1) -> DPGMMResult:
    """Fit the truncated DP-GMM by coordinate ascent on the ELBO.

    Args:
        z: (N, d) data (this rank's shard when distributed).
        n_components: the truncation T (not needed when ``init`` is a posterior or responsibilities).
        prior: the prior (None: :func:`make_prior` with ``alpha0`` and scikit-learn's defaults).
        init: ``"kmeans"`` (hard k-means labels), an (N, T) responsibility tensor, or a posterior to warm-start
            from.
        max_iter, tol: stop when the ELBO changes by less than ``tol`` (scikit-learn's rule).
        seed: seed of the k-means init (identical on every rank).
        distributed: all_reduce the statistics over ranks (None: whenever torch.distributed is initialized).
        kmeans_n_init: restarts of the k-means init.

    The components are reordered by decreasing size before every M-step (Kurihara et al. 2007: the stick-breaking
    prior favours the first sticks, so that order raises the bound; it also makes small spurious components, which
    sit at the end, die faster).
    """
    if distributed is None:
        distributed = is_distributed()
    if prior is None:
        prior = make_prior(z, alpha0=alpha0, distributed=distributed)
    zd = z.double()
    if isinstance(init, DPGMMPosterior):
        post = init.to(device=z.device, dtype=torch.float64)
    else:
        if isinstance(init, Tensor):
            resp = init.double()
        elif init == "kmeans":
            if n_components is None or n_components < 1:
                raise ValueError("fit_dpgmm: n_components >= 1 is needed for kmeans init")
            if n_components == 1:
                labels = torch.zeros(len(z), dtype=torch.long, device=z.device)
            else:
                from dcl.cluster.kmeans import kmeans
                labels = kmeans(z.float(), n_components, n_init=kmeans_n_init, seed=seed,
                                distributed=distributed).labels
            resp = torch.nn.functional.one_hot(labels, n_components).double()
        else:
            raise ValueError(f"unknown init {init!r}; use 'kmeans', responsibilities or a posterior")
        n, s1, s2 = sufficient_stats(zd, resp, distributed)
        order = torch.argsort(n, descending=True, stable=True)
        post = update_posterior(n[order], s1[order], s2[order], prior)
    previous, value, converged, it = -math.inf, -math.inf, False, 0
    for it in range(1, max_iter + 1):
        log_r, _ = log_responsibilities(zd, post)
        resp = log_r.exp()
        n, s1, s2 = sufficient_stats(zd, resp, distributed)
        ent = _entropy(log_r)
        if distributed:
            ent = all_reduce_sum_(ent.reshape(1)).reshape(())
        order = torch.argsort(n, descending=True, stable=True)
        n, s1, s2 = n[order], s1[order], s2[order]
        post = update_posterior(n, s1, s2, prior)
        value = float(elbo(n, s1, s2, ent, post, prior))
        if abs(value - previous) < tol:
            converged = True
            break
        previous = value
    log_r, _ = log_responsibilities(zd, post)
    resp = log_r.exp().to(z.dtype)
    post = DPGMMPosterior(*(broadcast_(getattr(post, f.name).contiguous()) for f in fields(post)))
    return DPGMMResult(post, resp, resp.argmax(1), expected_weights(post), value, it, converged)
