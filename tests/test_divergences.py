"""The alpha-JS (skew geometric Jensen-Shannon) divergence between diagonal Gaussians, against its theory and a
Monte Carlo estimate."""

from __future__ import annotations

import math

import pytest
import torch

from dcl.cluster.divergences import (alpha_js_clustering_loss, alpha_js_divergence, geometric_mean_gaussian,
                                     kl_diag_gaussians)


def _pair(d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    mu1, mu2 = torch.randn(d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)
    v1 = torch.rand(d, generator=g, dtype=torch.float64) + 0.3
    v2 = torch.rand(d, generator=g, dtype=torch.float64) * 2 + 0.2
    return mu1, v1, mu2, v2


@pytest.mark.parametrize("alpha", [0.0, 0.2, 0.5, 0.9, 1.0])
def test_zero_for_identical_and_positive_otherwise(alpha):
    mu1, v1, mu2, v2 = _pair()
    assert float(alpha_js_divergence(mu1, v1, mu1, v1, alpha)) == pytest.approx(0.0, abs=1e-12)
    if 0 < alpha < 1:
        assert float(alpha_js_divergence(mu1, v1, mu2, v2, alpha)) > 1e-3
        assert float(alpha_js_divergence(mu1, v1, mu1 + 0.1, v1, alpha)) > 0  # a mean shift alone
        assert float(alpha_js_divergence(mu1, v1, mu1, v1 * 2, alpha)) > 0  # a variance change alone


def test_symmetric_at_one_half_and_skew_duality():
    mu1, v1, mu2, v2 = _pair(seed=1)
    a = alpha_js_divergence(mu1, v1, mu2, v2, 0.5)
    torch.testing.assert_close(a, alpha_js_divergence(mu2, v2, mu1, v1, 0.5))
    assert not torch.isclose(alpha_js_divergence(mu1, v1, mu2, v2, 0.3), alpha_js_divergence(mu2, v2, mu1, v1, 0.3))
    torch.testing.assert_close(alpha_js_divergence(mu1, v1, mu2, v2, 0.3), alpha_js_divergence(mu2, v2, mu1, v1, 0.7))
    # the unskewed (Nielsen) weighting is the same divergence at 1/2
    torch.testing.assert_close(a, alpha_js_divergence(mu1, v1, mu2, v2, 0.5, skew=False))


def test_limits_are_the_kl_divergences():
    mu1, v1, mu2, v2 = _pair(seed=2)
    kl_pq, kl_qp = kl_diag_gaussians(mu1, v1, mu2, v2), kl_diag_gaussians(mu2, v2, mu1, v1)
    torch.testing.assert_close(alpha_js_divergence(mu1, v1, mu2, v2, 0.0), kl_pq)
    torch.testing.assert_close(alpha_js_divergence(mu1, v1, mu2, v2, 1.0), kl_qp)
    # continuity at the limits, and Nielsen's form: aJS / alpha -> KL(q || p) as alpha -> 0
    torch.testing.assert_close(alpha_js_divergence(mu1, v1, mu2, v2, 1e-6), kl_pq, rtol=1e-4, atol=1e-6)
    small = alpha_js_divergence(mu1, v1, mu2, v2, 1e-5, skew=False) / 1e-5
    torch.testing.assert_close(small, kl_qp, rtol=1e-3, atol=1e-6)
    assert float(alpha_js_divergence(mu1, v1, mu2, v2, 0.0, skew=False)) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError):
        alpha_js_divergence(mu1, v1, mu2, v2, 1.5)


def _log_normal(x, mu, var):
    return -0.5 * (((x - mu) ** 2) / var + var.log() + math.log(2 * math.pi)).sum(-1)


@pytest.mark.parametrize("alpha", [0.25, 0.5, 0.8])
def test_matches_a_monte_carlo_estimate(alpha):
    """(1 - a) E_p[log p - log G] + a E_q[log q - log G], G = p^a q^(1-a) / Z, with Z estimated by importance
    sampling too (Z = E_p[(q/p)^(1-a)]): nothing of the closed form is used."""
    torch.manual_seed(0)
    mu1, v1 = torch.tensor([0.0, 1.0], dtype=torch.float64), torch.tensor([1.0, 0.5], dtype=torch.float64)
    mu2, v2 = torch.tensor([1.0, -0.5], dtype=torch.float64), torch.tensor([2.0, 0.8], dtype=torch.float64)
    n = 400_000
    xp = mu1 + v1.sqrt() * torch.randn(n, 2, dtype=torch.float64)
    xq = mu2 + v2.sqrt() * torch.randn(n, 2, dtype=torch.float64)
    lp = lambda x: _log_normal(x, mu1, v1)  # noqa: E731
    lq = lambda x: _log_normal(x, mu2, v2)  # noqa: E731
    log_z = torch.logsumexp((1 - alpha) * (lq(xp) - lp(xp)), 0) - math.log(n)
    lg = lambda x: alpha * lp(x) + (1 - alpha) * lq(x) - log_z  # noqa: E731
    mc = (1 - alpha) * (lp(xp) - lg(xp)).mean() + alpha * (lq(xq) - lg(xq)).mean()
    closed = alpha_js_divergence(mu1, v1, mu2, v2, alpha)
    assert float(closed) == pytest.approx(float(mc), rel=0.03, abs=2e-3)
    # the geometric mean's closed form is the normalized p^a q^(1-a)
    mu_a, var_a = geometric_mean_gaussian(mu1, v1, mu2, v2, alpha)
    x = torch.randn(5, 2, dtype=torch.float64)
    torch.testing.assert_close(_log_normal(x, mu_a, var_a), lg(x), rtol=0, atol=5e-3)


@pytest.mark.parametrize("alpha", [0.25, 0.5, 0.8])
def test_the_dual_matches_a_monte_carlo_estimate(alpha):
    """dual=True: (1 - a) E_G[log G - log p] + a E_G[log G - log q], sampled from G (its closed form is checked
    against the normalized p^a q^(1-a) above), against the closed form's KLs."""
    torch.manual_seed(0)
    mu1, v1 = torch.tensor([0.0, 1.0], dtype=torch.float64), torch.tensor([1.0, 0.5], dtype=torch.float64)
    mu2, v2 = torch.tensor([1.0, -0.5], dtype=torch.float64), torch.tensor([2.0, 0.8], dtype=torch.float64)
    mu_a, var_a = geometric_mean_gaussian(mu1, v1, mu2, v2, alpha)
    xg = mu_a + var_a.sqrt() * torch.randn(400_000, 2, dtype=torch.float64)
    lg = _log_normal(xg, mu_a, var_a)
    mc = ((1 - alpha) * (lg - _log_normal(xg, mu1, v1)) + alpha * (lg - _log_normal(xg, mu2, v2))).mean()
    closed = alpha_js_divergence(mu1, v1, mu2, v2, alpha, dual=True)
    assert float(closed) == pytest.approx(float(mc), rel=0.02, abs=2e-3)
    assert abs(float(closed) - float(alpha_js_divergence(mu1, v1, mu2, v2, alpha))) > 1e-3  # another divergence


def test_the_dual_is_zero_only_at_p_equals_q_and_the_reverse_kl_at_the_limits():
    mu1, v1, mu2, v2 = _pair()
    assert float(alpha_js_divergence(mu1, v1, mu1, v1, 0.3, dual=True)) == pytest.approx(0.0, abs=1e-12)
    assert float(alpha_js_divergence(mu1, v1, mu2, v2, 0.3, dual=True)) > 1e-3
    # alpha = 0: G = q, so the dual is KL(q || p), the default form KL(p || q); alpha = 1: G = p, KL(p || q)
    kl_pq, kl_qp = kl_diag_gaussians(mu1, v1, mu2, v2), kl_diag_gaussians(mu2, v2, mu1, v1)
    torch.testing.assert_close(alpha_js_divergence(mu1, v1, mu2, v2, 0.0, dual=True), kl_qp)
    torch.testing.assert_close(alpha_js_divergence(mu1, v1, mu2, v2, 0.0), kl_pq)
    torch.testing.assert_close(alpha_js_divergence(mu1, v1, mu2, v2, 1.0, dual=True), kl_pq)


def test_clustering_loss_is_the_responsibility_weighted_divergence_and_has_gradients():
    torch.manual_seed(0)
    mu = torch.randn(4, 3, requires_grad=True)
    logvar = torch.zeros(4, 3, requires_grad=True)
    means, variances = torch.randn(2, 3), torch.rand(2, 3) + 0.5
    resp = torch.softmax(torch.randn(4, 2), 1)
    loss = alpha_js_clustering_loss(mu, logvar.exp(), resp, means, variances, 0.5)
    manual = sum(resp[n, k] * alpha_js_divergence(mu[n], logvar[n].exp(), means[k], variances[k], 0.5)
                 for n in range(4) for k in range(2)) / 4
    torch.testing.assert_close(loss, manual)
    loss.backward()
    assert mu.grad.abs().sum() > 0 and logvar.grad.abs().sum() > 0
    # pulling toward the component: the loss falls when mu moves onto the responsible mean
    hard = torch.tensor([[1.0, 0.0]])
    far = alpha_js_clustering_loss(means[:1] + 2, variances[:1], hard, means, variances)
    near = alpha_js_clustering_loss(means[:1] + 0.1, variances[:1], hard, means, variances)
    assert near < far
