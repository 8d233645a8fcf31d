"""DPGMM: the variational DP-GMM engine against scikit-learn, the method's state and contract, and a fit
through the CLI on Digits."""

from __future__ import annotations

import importlib
import math
import re
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import BayesianGaussianMixture

from dcl.cluster.dpgmm import (DPGMMPosterior, elbo, expected_weights, fit_dpgmm, log_responsibilities, make_prior,
                               sufficient_stats, update_posterior)
from dcl.method import ConfigError
from dcl.methods.dpgmm import DPGMM

from conftest import gloo_group, run_cli, run_on_ranks

CONFIG = str(Path(__file__).parents[1] / "configs/dpgmm/digits.yaml")
FAST = ["--model.init_args.pretrain_epochs", "10", "--model.init_args.update_interval", "20",
        "--model.init_args.hidden_dims", "[64, 64, 128]", "--data.init_args.batch_size", "64",
        "--trainer.check_val_every_n_epoch", "100", "--trainer.callbacks", "[]"]


# -- the engine ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 2])
def test_matches_sklearn_dirichlet_process_mixture_on_blobs(seed):
    x, y = make_blobs(1500, centers=4, n_features=3, cluster_std=1.0, random_state=seed)
    sk = BayesianGaussianMixture(n_components=10, weight_concentration_prior_type="dirichlet_process",
                                 weight_concentration_prior=1.0, covariance_type="diag", max_iter=1000,
                                 random_state=0).fit(x)
    res = fit_dpgmm(torch.tensor(x, dtype=torch.float32), 10, alpha0=1.0, max_iter=1000)
    assert res.converged
    assert int((res.weights > 0.01).sum()) == int((sk.weights_ > 0.01).sum()) == 4
    assert adjusted_rand_score(sk.predict(x), res.labels.numpy()) >= 0.95
    assert adjusted_rand_score(y, res.labels.numpy()) >= 0.95
    torch.testing.assert_close(res.weights.sum(), torch.tensor(1.0, dtype=torch.float64))
    # the posterior mean covariances agree with sklearn's (same prior defaults) for the matched components
    big = res.weights > 0.01
    ours = res.posterior.variances[big]
    theirs = torch.tensor(sk.covariances_[sk.weights_ > 0.01])
    for row in ours:
        assert torch.isclose(row, theirs, rtol=0.05).all(1).any()


def test_elbo_never_decreases_and_statistics_split_over_shards():
    x, _ = make_blobs(600, centers=3, n_features=2, random_state=1)
    z = torch.tensor(x)
    values = [fit_dpgmm(z, 6, max_iter=it, tol=0).elbo for it in range(1, 12)]
    assert all(b >= a - 1e-6 for a, b in zip(values, values[1:])) and values[-1] > values[0] + 1
    prior = make_prior(z)
    res = fit_dpgmm(z, 6, prior, max_iter=50)
    log_r, _ = log_responsibilities(z, res.posterior)
    r = log_r.exp()
    whole = sufficient_stats(z, r)
    halves = [sufficient_stats(z[s], r[s]) for s in (slice(0, 250), slice(250, None))]
    for full, a, b in zip(whole, *halves):  # what DDP's all_reduce of the sums gives
        torch.testing.assert_close(full, a + b)
    post = update_posterior(*whole, prior)
    w = expected_weights(post)
    assert torch.all(w[:-1] >= 0) and abs(float(w.sum()) - 1) < 1e-9


def test_elbo_of_one_component_is_the_normal_gamma_log_evidence():
    """With one component the variational posterior is the exact conjugate one, so the bound is tight: it must
    equal the closed-form log marginal likelihood of the Normal-Gamma model, per dimension
    lgamma(a_n) - lgamma(a0) + a0 log b0 - a_n log b_n + 1/2 log(beta0 / beta_n) - n/2 log(2 pi)."""
    z = torch.tensor(make_blobs(80, centers=1, n_features=3, cluster_std=[[0.5, 2.0, 1.0]], random_state=3)[0])
    m0 = z.mean(0) + torch.tensor([1.0, -2.0, 0.5])  # not the mean
    prior = make_prior(z, beta0=0.7, a0=2.5, m0=m0)
    torch.testing.assert_close(prior.m0, m0)
    stats = sufficient_stats(z, torch.ones(len(z), 1, dtype=torch.float64))
    bound = elbo(*stats, 0.0, update_posterior(*stats, prior), prior)
    torch.testing.assert_close(bound, _log_evidence(z, prior), rtol=1e-12, atol=1e-9)


def _log_evidence(z: torch.Tensor, prior) -> torch.Tensor:
    """log p(z) of data from one Normal-Gamma component, in closed form."""
    n, zbar = len(z), z.mean(0)
    beta_n, a_n = prior.beta0 + n, prior.a0 + n / 2
    b_n = prior.b0 + 0.5 * ((z - zbar) ** 2).sum(0) + prior.beta0 * n * (zbar - prior.m0) ** 2 / (2 * beta_n)
    a0 = torch.tensor(prior.a0, dtype=torch.float64)
    return (torch.lgamma(torch.tensor(a_n, dtype=torch.float64)) - torch.lgamma(a0) + a0 * prior.b0.log()
            - a_n * b_n.log() + 0.5 * math.log(prior.beta0 / beta_n) - n / 2 * math.log(2 * math.pi)).sum()


def test_elbo_of_a_hard_assignment_is_the_log_joint_of_data_and_assignment():
    """Given a hard assignment c the optimal q(v) and q(mu, tau) are the exact posteriors, so the bound is tight:
    log p(z, c) = log p(c) + sum_k log p(z_k), where the truncated stick-breaking prior gives
    p(c) = prod_{k<T} B(1 + N_k, alpha0 + sum_{l>k} N_l) / B(1, alpha0). This checks the sticks' KL, which the
    one-component bound has none of (a mutant without it passed every test)."""
    z = torch.tensor(make_blobs(90, centers=3, n_features=2, random_state=4)[0])
    labels = torch.arange(3).repeat_interleave(torch.tensor([40, 30, 20]))  # sorted by size, as fits keep them
    prior = make_prior(z, alpha0=0.4, beta0=0.5)
    stats = sufficient_stats(z, F.one_hot(labels, 3).double())
    bound = elbo(*stats, 0.0, update_posterior(*stats, prior), prior)

    def log_beta(a, b):
        return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)

    counts = [40, 30, 20]
    log_p_c = sum(log_beta(1 + counts[k], prior.alpha0 + sum(counts[k + 1:])) - log_beta(1, prior.alpha0)
                  for k in range(2))
    log_joint = log_p_c + sum(_log_evidence(z[labels == k], prior) for k in range(3))
    torch.testing.assert_close(bound, log_joint, rtol=1e-12, atol=1e-9)


def test_prior_variance_is_at_least_a_fraction_of_the_second_moment():
    """Constant embeddings: the variance is float64 rounding; the prior keeps 1e-8 of the second moment so that the
    components stay wide enough for the alpha-JS loss (an absolute 1e-12 at |z| = 1e4 made it 1e10 and training
    diverged)."""
    z = torch.full((100, 2), 1e4)
    assert (make_prior(z).b0 >= 0.5 * 1e-8 * 1e8).all()  # b0 = var * a0 / d = var / 2
    torch.manual_seed(0)
    z = torch.randn(100, 2)
    torch.testing.assert_close(make_prior(z).b0, z.double().var(0) / 2)  # ordinary data: unchanged


@pytest.mark.parametrize("value", [3.0, 1e4])
def test_identical_samples_end_in_one_cluster(value):
    """A data set whose samples are all equal crashed in the birth/merge Cholesky (3.0) or diverged (1e4)."""
    import numpy as np

    from dcl import DeepClusterer

    x = np.full((200, 8), value)
    est = DeepClusterer("DPGMM", 3, max_epochs=3, batch_size=64, random_state=0,
                        method_args=dict(hidden_dims=[16], latent_dim=2, pretrain_epochs=1, update_interval=2)).fit(x)
    assert est.n_clusters_ == 1 and (est.labels_ == 0).all()
    assert np.isfinite(est.transform(x)).all() and np.isfinite(est.cluster_centers_).all()
    assert torch.isfinite(est.model_.posterior.variances).all()


def test_one_iteration_is_an_e_and_an_m_step_from_the_init_sorted_by_size():
    """fit_dpgmm is coordinate ascent from the init's M-step, its components sorted by decreasing size (the sticks
    favour the first): one iteration is one E-step and one sorted M-step, and the responsibilities it returns are
    the E-step of the posterior it returns, in the dtype of z (an unsorted init and the responsibilities of the
    step before passed every test)."""
    x, _ = make_blobs(120, centers=3, n_features=2, random_state=5)
    z = torch.tensor(x, dtype=torch.float32)
    sizes = torch.tensor([10, 40, 70])  # the init's smallest component first
    resp = F.one_hot(torch.arange(3).repeat_interleave(sizes), 3).double()
    prior = make_prior(z, alpha0=0.5)
    res = fit_dpgmm(z, prior=prior, init=resp, max_iter=1)

    def sorted_m_step(r):
        n, s1, s2 = sufficient_stats(z, r)
        order = torch.argsort(n, descending=True, stable=True)
        return update_posterior(n[order], s1[order], s2[order], prior)

    post = sorted_m_step(log_responsibilities(z.double(), sorted_m_step(resp))[0].exp())
    for f in fields(post):
        torch.testing.assert_close(getattr(res.posterior, f.name), getattr(post, f.name), rtol=1e-12, atol=1e-12)
    assert res.resp.dtype == torch.float32 and res.n_iter == 1
    torch.testing.assert_close(res.resp, log_responsibilities(z.double(), post)[0].exp().float())
    assert torch.equal(res.labels, res.resp.argmax(1))


def test_the_e_step_in_row_chunks_and_of_no_rows():
    """The E-step runs in chunks of rows (bounded memory); a rank whose shard is empty gets (0, K) responsibilities."""
    g = torch.Generator().manual_seed(1)
    z = torch.randn(50, 3, generator=g, dtype=torch.float64)
    post = _posterior(g)
    whole = log_responsibilities(z, post)
    for a, b in zip(log_responsibilities(z, post, chunk_size=7), whole):
        torch.testing.assert_close(a, b)
    log_r, log_norm = log_responsibilities(z[:0], post)
    assert log_r.shape == (0, 3) and log_norm.shape == (0,)


def test_a_component_of_identical_points_keeps_the_priors_rate_exactly():
    """Its scatter S2 - S1 xbar is 0, which float64 rounding makes slightly negative (-4e-14 for 100 points at
    0.3): clamped, b = b0 exactly; unclamped, a prior rate below the rounding (here 1e-20) went negative."""
    z = torch.full((100, 2), 0.3, dtype=torch.float64)
    n, s1, s2 = sufficient_stats(z, torch.ones(100, 1, dtype=torch.float64))
    assert bool(((s2 - s1 * s1 / n[:, None]) < 0).all())  # the rounding the clamp is for
    prior = make_prior(z, cov_prior=1e-20, m0=s1[0] / n[0])  # at their mean: no shrinkage term either
    assert torch.equal(update_posterior(n, s1, s2, prior).b, prior.b0[None])


def test_fit_passes_its_settings_to_the_prior_and_the_kmeans_init(monkeypatch):
    """alpha0 builds the default prior (gamma2 of the last component is alpha0: nothing lies beyond it); the k-means
    init takes kmeans_n_init, the seed and the distributed mode; n_components 0 is refused."""
    kmeans_module = importlib.import_module("dcl.cluster.kmeans")  # (dcl.cluster's kmeans is the function)
    calls, real = [], kmeans_module.kmeans
    monkeypatch.setattr(kmeans_module, "kmeans", lambda *a, **kw: calls.append(kw) or real(*a, **kw))
    x, _ = make_blobs(200, centers=3, n_features=2, random_state=0)
    res = fit_dpgmm(torch.tensor(x), 4, alpha0=0.3, seed=7, kmeans_n_init=3, distributed=False, max_iter=5)
    assert float(res.posterior.gamma2[-1]) == pytest.approx(0.3)
    assert calls == [{"n_init": 3, "seed": 7, "distributed": False}]
    with pytest.raises(ValueError, match="fit_dpgmm: n_components >= 1 is needed for kmeans init"):
        fit_dpgmm(torch.tensor(x), 0)


def test_fit_from_one_component_and_posterior_warm_start():
    x, _ = make_blobs(400, centers=2, n_features=2, random_state=0)
    z = torch.tensor(x, dtype=torch.float32)
    one = fit_dpgmm(z, 1, max_iter=50)
    assert one.posterior.n_components == 1 and torch.all(one.labels == 0)
    res = fit_dpgmm(z, 5, max_iter=200)
    warm = fit_dpgmm(z, prior=make_prior(z), init=res.posterior, max_iter=5)
    assert adjusted_rand_score(res.labels.numpy(), warm.labels.numpy()) > 0.99


def _fit_dpgmm_worker(rank: int, world: int, port: int, z: torch.Tensor, split: int, out: dict) -> None:
    with gloo_group(rank, world, port):
        torch.set_num_threads(1)
        shard = z[:split] if rank == 0 else z[split:]
        res = fit_dpgmm(shard, 6, max_iter=40, tol=0)  # all 40 iterations; distributed: the default in a group
        # inputs that differ by rank stand for the drift floating point could cause: every rank ends with rank 0's
        drifted = fit_dpgmm(shard, 4, prior=make_prior(shard, alpha0=1.0 + rank), max_iter=5).posterior
        torch.manual_seed(rank)
        method = DPGMM(input_shape=(4,), latent_dim=2, hidden_dims=(8,), k_init=3)
        method._fit(z.float() + rank, first=True)
        state = {name: value for name, value in method.state_dict().items() if not name.startswith(("auto", "logv"))}
        out[rank] = (res.posterior, res.labels, res.elbo, res.n_iter, drifted, state)


def test_fit_dpgmm_on_two_ranks_equals_one_process():
    """The engine's DDP mode: each rank holds a shard (here unequal ones), the statistics, the entropy and the prior's
    moments are summed over the ranks, and the fit is the one of all samples in one process. The engine's posterior
    and the method's mixture and prior are rank 0's on every rank, even where the ranks computed others."""
    x, _ = make_blobs(600, centers=3, n_features=2, cluster_std=1.5, random_state=3)
    z = torch.tensor(x)
    single = fit_dpgmm(z, 6, max_iter=40, tol=0)
    out = run_on_ranks(_fit_dpgmm_worker, z, 250)
    for rank in (0, 1):
        post, _, value, iterations, _, _ = out[rank]
        for f in fields(post):
            torch.testing.assert_close(getattr(post, f.name), getattr(single.posterior, f.name), rtol=1e-9, atol=1e-9)
        assert value == pytest.approx(single.elbo, rel=1e-12) and iterations == single.n_iter == 40
    assert torch.equal(torch.cat([out[0][1], out[1][1]]), single.labels)
    for a, b in zip(fields(out[0][4]), fields(out[1][4])):
        assert torch.equal(getattr(out[0][4], a.name), getattr(out[1][4], b.name))
    assert out[0][5].keys() == out[1][5].keys() >= {"dp_means", "prior_m0", "prior_b0", "cluster_centers"}
    assert all(torch.equal(out[0][5][name], out[1][5][name]) for name in out[0][5])


def test_prior_settings_and_init_refusals():
    z = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    prior = make_prior(z, cov_prior=2.0, a0=4.0)  # scikit-learn's covariance_prior, and degrees of freedom
    torch.testing.assert_close(prior.b0, torch.full((4,), 2.0, dtype=torch.float64))  # b0 = cov a0 / d
    assert prior.a0 == 4.0
    for settings, message in [({"alpha0": 0.0}, "alpha0 and beta0 must be > 0, got 0.0, 1.0"),
                              ({"beta0": -1.0}, "alpha0 and beta0 must be > 0, got 1.0, -1.0"),
                              ({"a0": 0.0}, "a0 must be > 0, got 0.0")]:
        with pytest.raises(ValueError, match=message):
            make_prior(z, **settings)
    with pytest.raises(ValueError, match="fit_dpgmm: n_components >= 1 is needed for kmeans init"):
        fit_dpgmm(z)
    with pytest.raises(ValueError, match="unknown init 'random'; use 'kmeans', responsibilities or a posterior"):
        fit_dpgmm(z, 3, init="random")

# -- the method ------------------------------------------------------------------------------------------------
def test_config_errors_and_k_init_one():
    with pytest.raises(ConfigError, match="k_init"):
        DPGMM(input_shape=(64,), k_init=0)
    with pytest.raises(ConfigError, match="k_init"):
        DPGMM(input_shape=(64,), k_init=60, max_components=50)
    with pytest.raises(ConfigError, match="gamma"):
        DPGMM(input_shape=(64,), gamma=-1.0)
    with pytest.raises(ConfigError, match="birth_merge_every_n_steps"):
        DPGMM(input_shape=(64,), birth_merge_every_n_steps=0)
    with pytest.raises(ConfigError, match="decoder_input"):
        DPGMM(input_shape=(64,), decoder_input="noise")
    with pytest.raises(ConfigError, match="js_form must be 'paper' or 'dual'"):
        DPGMM(input_shape=(64,), js_form="nielsen")
    with pytest.raises(ConfigError, match=r"DPGMM needs input_shape \(the CLI links it from the datamodule\)"):
        DPGMM()
    for bad in (0, 2.5):
        with pytest.raises(ConfigError, match=f"max_components must be an integer >= 1, got {bad}"):
            DPGMM(input_shape=(64,), max_components=bad)
    for bad in ({"min_weight": 0.5}, {"min_weight": -0.1}, {"bic_penalty": -1.0}, {"min_gain": -1.0}):
        with pytest.raises(ConfigError, match="DPGMM needs 0 <= min_weight < 0.5, bic_penalty >= 0 and min_gain >= 0"):
            DPGMM(input_shape=(64,), **bad)
    m = DPGMM(n_clusters=10, input_shape=(64,), k_init=1, hidden_dims=(32, 32))
    assert m.n_clusters == 1 and m.hparams.n_clusters == 10  # the hint is kept, not used
    assert not any(k.startswith("_head") for k in m.state_dict())  # AE keys as in every other method


RANGES = "DPGMM needs alpha0 > 0, gamma >= 0 and 0 <= js_alpha <= 1, got {} and {}"
STEPS = ("DPGMM needs update_interval, vb_iters, first_vb_iters, birth_merge_every and birth_merge_every_n_steps (when "
         "given) >= 1, got {}")


@pytest.mark.parametrize("settings, message", [
    ({"alpha0": 0.0}, RANGES.format("0.0, 0.01", "0.5")), ({"js_alpha": 1.5}, RANGES.format("1.0, 0.01", "1.5")),
    ({"js_alpha": -0.5}, RANGES.format("1.0, 0.01", "-0.5")),
    ({"update_interval": 0}, STEPS.format("0, 20, 200, 1 and None")),
    ({"vb_iters": 0}, STEPS.format("100, 0, 200, 1 and None")),
    ({"first_vb_iters": 0}, STEPS.format("100, 20, 0, 1 and None")),
    ({"birth_merge_every": 0}, STEPS.format("100, 20, 200, 0 and None"))])
def test_each_setting_at_its_first_bad_value_is_refused(settings, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        DPGMM(input_shape=(64,), **settings)


def test_an_encoder_that_does_not_end_with_a_linear_layer_is_refused():
    """The variance head sits beside the encoder's last linear layer, the mean head."""
    class EndsInBatchNorm(DPGMM):
        def make_autoencoder(self, kind, latent_dim, hidden_dims, activation):
            autoencoder = super().make_autoencoder(kind, latent_dim, hidden_dims, activation)
            autoencoder.encoder.append(torch.nn.BatchNorm1d(latent_dim))
            return autoencoder

    with pytest.raises(ConfigError, match=r"DPGMM needs an encoder that ends with a linear layer \(the 'mlp' or "
                                          r"'conv' autoencoder\)"):
        EndsInBatchNorm(input_shape=(64,), hidden_dims=(8,))


def test_model_selection_settings_reach_the_birth_merge_callback():
    """The MNIST config relies on bic_penalty 12 (an audit found no test of this wiring; Digits' 1.0 is the
    callback's default, so dropping it would change nothing there)."""
    from dcl.callbacks.birth_merge import BirthMerge

    m = DPGMM(input_shape=(64,), hidden_dims=(8,), bic_penalty=12.0, min_gain=0.3, min_weight=0.05,
              max_components=7, birth_merge_every=3)
    (birth_merge,) = [c for c in m.configure_callbacks() if isinstance(c, BirthMerge)]
    assert (birth_merge.penalty, birth_merge.min_gain, birth_merge.min_weight) == (12.0, 0.3, 0.05)
    assert (birth_merge.max_components, birth_merge.every_n_epochs, birth_merge.every_n_steps) == (7, 3, None)
    m = DPGMM(input_shape=(64,), hidden_dims=(8,), birth_merge_every_n_steps=40)
    (birth_merge,) = [c for c in m.configure_callbacks() if isinstance(c, BirthMerge)]
    assert (birth_merge.every_n_epochs, birth_merge.every_n_steps) == (None, 40)


def test_state_is_buffers_and_checkpoints_of_any_k_load(tmp_path):
    torch.manual_seed(0)
    m = DPGMM(input_shape=(64,), k_init=3, hidden_dims=(32, 32))
    x, _ = make_blobs(300, centers=3, n_features=10, random_state=0)
    z = torch.tensor(x, dtype=torch.float32)
    m._fit(z, first=True)
    assert m.n_clusters == 3 and m.cluster_centers.shape == (3, 10)
    probs = m.assign(z)
    torch.testing.assert_close(probs.sum(1), torch.ones(300))
    x5 = torch.rand(5, 64)
    m.train()  # even in training mode
    mu, logvar = m.encode(x5)
    torch.testing.assert_close(m.embed(x5), mu)  # the embedding is the posterior mean, never a sample
    assert not torch.allclose(logvar, torch.zeros_like(logvar))
    # K changes through the mixture protocol (birth/merge) ...
    n, s1, s2 = sufficient_stats(z, torch.nn.functional.one_hot(torch.arange(300) % 5, 5).double())
    m.set_mixture_stats(n, s1, s2)
    assert m.n_clusters == 5 and m.dp_means.shape == (5, 10)
    # ... and a fresh module (K = 1) loads a checkpoint with K = 5
    ckpt = {"state_dict": m.state_dict(), "dcl_method": "DPGMM"}
    fresh = DPGMM(input_shape=(64,), k_init=1, hidden_dims=(32, 32))
    fresh.on_load_checkpoint(ckpt)
    fresh.load_state_dict(ckpt["state_dict"])
    assert fresh.n_clusters == 5
    torch.testing.assert_close(fresh.assign(z), m.assign(z))


def test_the_prior_is_set_at_the_first_fit_from_the_embedding_with_scikit_learns_defaults():
    """m0 = mean, a0 = d / 2, b0 = var / 2 (make_prior's), the method's alpha0: E[tau] = d / var as in scikit-learn."""
    m = DPGMM(input_shape=(64,), k_init=3, hidden_dims=(8,), alpha0=0.7)
    z = torch.tensor(make_blobs(300, centers=3, n_features=10, random_state=0)[0], dtype=torch.float32)
    m._fit(z, first=True)
    expected, prior = make_prior(z, alpha0=0.7), m.prior
    assert (prior.alpha0, prior.beta0, prior.a0) == (expected.alpha0, expected.beta0, expected.a0) == (0.7, 1.0, 5.0)
    torch.testing.assert_close(prior.m0, expected.m0)
    torch.testing.assert_close(prior.b0, expected.b0)


def _record_fits(monkeypatch) -> list:
    """The method's fit_dpgmm calls, as they come: (their keyword arguments, their result)."""
    import dcl.methods.dpgmm as method_module

    fits, real = [], method_module.fit_dpgmm

    def fit(z, **kwargs):
        fits.append((kwargs, real(z, **kwargs)))
        return fits[-1][1]

    monkeypatch.setattr(method_module, "fit_dpgmm", fit)
    return fits


def test_the_first_fit_starts_from_k_means_and_refits_warm_start_from_the_posterior(monkeypatch):
    """The first fit: k_init k-means labels, first_vb_iters iterations; a refit: vb_iters from the current posterior.
    Both prune the components left with less than one sample (here the first fit's 20 starts for 3 blobs)."""
    calls = _record_fits(monkeypatch)
    m = DPGMM(input_shape=(64,), k_init=20, hidden_dims=(8,), vb_iters=4, first_vb_iters=300)
    z = torch.tensor(make_blobs(300, centers=3, n_features=10, random_state=0)[0], dtype=torch.float32)
    m._fit(z, first=True)
    (settings, result), = calls
    assert settings["max_iter"] == 300 and settings["init"].shape == (300, 20)  # k-means' one-hot labels
    assert torch.equal(settings["init"].sum(1), torch.ones(300, dtype=torch.float64))
    alive = (result.posterior.gamma1 - 1) >= 1
    assert 3 <= int(alive.sum()) < 20 and m.n_clusters == int(alive.sum())
    before = m.posterior
    m._fit(z, first=False)
    settings, result = calls[-1]
    assert settings["max_iter"] == 4 and isinstance(settings["init"], DPGMMPosterior)
    for f in fields(before):
        assert torch.equal(getattr(settings["init"], f.name), getattr(before, f.name))
    assert m.n_clusters == int(((result.posterior.gamma1 - 1) >= 1).sum())


def test_pretraining_scores_a_model_selection_on_the_code_and_clustering_keeps_its_mixture(monkeypatch):
    """Before clustering, each refresh selects the mixture on the code: a DP-GMM from k_init, 10 birth/merge rounds
    with the method's settings, then a VB refit from their result; once clustering runs, refreshes leave the trained
    mixture alone. Each refit logs its bound per sample and its K."""
    import dcl.methods.dpgmm as method_module

    moves, logged, fits, real_moves = [], {}, _record_fits(monkeypatch), method_module.birth_merge
    monkeypatch.setattr(method_module, "birth_merge", lambda *a, **kw: moves.append(kw) or real_moves(*a, **kw))
    monkeypatch.setattr(method_module, "log_metrics_now", lambda trainer, metrics: logged.update(metrics))
    m = DPGMM(input_shape=(64,), hidden_dims=(8,), min_weight=0.02, max_components=9, bic_penalty=1.5, min_gain=0.01)
    z = torch.tensor(make_blobs(600, centers=3, n_features=10, random_state=0)[0], dtype=torch.float32)
    m.refresh_clusters(z)
    assert moves == [{"rounds": 10, "min_weight": 0.02, "max_components": 9, "penalty": 1.5, "min_gain": 0.01,
                      "distributed": False}]
    assert [isinstance(kw["init"], DPGMMPosterior) for kw, _ in fits] == [False, True]
    assert fits[1][0]["init"].n_components == 3 == m.n_clusters
    m.clustering_started.fill_(True)
    before = m.posterior
    m.refresh_clusters(z[:300] * 2)
    assert len(fits) == 2 and all(torch.equal(getattr(m.posterior, f.name), getattr(before, f.name))
                                  for f in fields(before))
    m.trainer = SimpleNamespace()
    m.update_clusters(z, first=False)
    assert logged == {"train/vb_elbo": pytest.approx(fits[-1][1].elbo / 600), "train/k_vb": float(m.n_clusters)}


def test_cluster_step_trains_the_variance_head():
    torch.manual_seed(0)
    m = DPGMM(input_shape=(64,), k_init=2, hidden_dims=(32, 32))
    x = torch.rand(64, 64)
    with torch.no_grad():
        m._fit(m.embed(x), first=True)
    m.log_dict = lambda *a, **k: None
    loss = m.cluster_step({"x": x, "index": torch.arange(64), "y": torch.zeros(64, dtype=torch.long)})
    loss.backward()
    assert torch.isfinite(loss) and m.logvar_head.weight.grad.abs().sum() > 0
    m.zero_grad()
    torch.nn.init.normal_(m.logvar_head.weight)  # (as after a step: it starts at 0, where no gradient passes it)
    m.encode(x)[1].sum().backward()  # the variance head trains the body it shares with the mean head too
    assert m._body[1].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("js_form", ["paper", "dual"])
def test_cluster_step_is_the_mse_plus_gamma_times_the_responsibility_weighted_alpha_js(js_form):
    """The clustering phase's loss written out (module docstring): MSE(x, g(mu)) + gamma * 1/B sum_n sum_k r_nk
    aJS_alpha(N(mu_n, s_n^2) || N(m_k, S_k)), with r the DP-GMM's responsibilities at mu held constant (as DEC's
    targets) and (m_k, S_k = b_k / a_k) the mixture's components; its gradient is that of the written-out loss."""
    from dcl.cluster.divergences import alpha_js_divergence
    from dcl.cluster.dpgmm import responsibilities

    torch.manual_seed(0)
    m = DPGMM(input_shape=(64,), k_init=3, hidden_dims=(32, 32), gamma=0.3, js_alpha=0.3, decoder_input="mean",
              init_logvar=-1.0, js_form=js_form)
    x = torch.rand(48, 64)
    with torch.no_grad():
        m._fit(m.embed(x), first=True)
        m.logvar_head.weight.normal_(0, 0.1)  # per-sample variances
    logged = {}
    m.log_dict = lambda metrics, **k: logged.update(metrics)
    loss = m.cluster_step({"x": x, "index": torch.arange(48), "y": torch.zeros(48, dtype=torch.long)})
    got = torch.autograd.grad(loss, [m.logvar_head.weight, m._head.weight])

    mu, logvar = m.encode(x)
    var = logvar.exp()
    with torch.no_grad():
        r = responsibilities(mu.detach(), m.posterior).float()
    means, variances = m.posterior.means.float(), (m.posterior.b / m.posterior.a[:, None]).float()
    k = means.shape[0]
    assert k > 1 and r.max(1).values.min() < 0.999  # soft responsibilities: their weighting is tested
    ajs = torch.stack([alpha_js_divergence(mu, var, means[j], variances[j], 0.3, dual=js_form == "dual")
                       for j in range(k)], dim=1)
    recon, js = F.mse_loss(m.autoencoder.decoder(mu), x), (r * ajs).sum(1).mean()
    expected = recon + 0.3 * js
    torch.testing.assert_close(loss, expected)
    assert logged.keys() == {"train/recon", "train/ajs"}  # the two terms, unweighted
    torch.testing.assert_close(torch.stack([logged["train/recon"], logged["train/ajs"]]), torch.stack([recon, js]))
    want = torch.autograd.grad(expected, [m.logvar_head.weight, m._head.weight])
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("decoder_input", ["mean", "sample"])
def test_decoder_reconstructs_from_the_mean_or_a_sample(decoder_input):
    torch.manual_seed(0)
    m = DPGMM(input_shape=(64,), k_init=2, hidden_dims=(32, 32), init_logvar=0.0, decoder_input=decoder_input)
    x = torch.rand(64, 64)
    with torch.no_grad():
        m._fit(m.embed(x), first=True)
    seen = []
    m.autoencoder.decoder.register_forward_hook(lambda mod, inputs, out: seen.append(inputs[0].detach()))
    m.log_dict = lambda *a, **k: None
    batch = {"x": x, "index": torch.arange(64), "y": torch.zeros(64, dtype=torch.long)}
    first, second = m.cluster_step(batch), m.cluster_step(batch)
    mu = m.encode(x)[0].detach()
    if decoder_input == "mean":  # deterministic: the decoder sees mu, the loss does not depend on a draw
        torch.testing.assert_close(seen[0], mu)
        torch.testing.assert_close(first, second)
    else:  # mu + s * eps with s = 1 here
        assert (seen[0] - mu).std() > 0.5 and not torch.equal(seen[0], seen[1])


# -- end to end ------------------------------------------------------------------------------------------------
def test_a_fit_that_ends_within_the_pretraining_names_its_result(tmp_path: Path):
    """The warning said "the result is AE + k-means" for every method; DPGMM's is its model selection on the code."""
    import lightning.pytorch as pl

    from dcl.datamodules.digits import Digits

    dm = Digits(batch_size=256)
    model = DPGMM(input_shape=dm.input_shape, hidden_dims=[16], pretrain_epochs=2)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0)
    with pytest.warns(UserWarning, match="clustering phase will not run and the result is a DP-GMM with birth and "
                                         "merge fitted to the autoencoder's code"):
        trainer.fit(model, dm)


@pytest.mark.parametrize("every_n_steps, moves", [(5, [8, 12, 17, 22, 27]), (None, [8, 16, 24, 32])])
def test_every_update_and_birth_merge_step_is_logged_once_at_its_step(tmp_path: Path, every_n_steps, moves):
    """Found by a user: train/vb_elbo and train/k_vb were logged with self.log from the update's hook
    (on_train_batch_start), so they reached the loggers only when a log_every_n_steps step fell between the update
    and the epoch's end (1 of ~7 updates in metrics.csv); so were births/merges/deaths of the step schedule (in
    on_train_batch_end), and those of the first birth/merge step not at all. Here: 1 pretraining epoch of 8
    batches, then VB updates every 3 steps and birth/merge steps every 5 steps (each logged with its batch's row,
    the step before the global step it records) or at each epoch's end. The K-over-training plot went to W&B
    only, with no step: it is saved under the run's plots/ too, and logged at the step of the run's last rows."""
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import CSVLogger

    from conftest import ImageLogger, logged_rows
    from dcl.callbacks.birth_merge import BirthMerge
    from dcl.datamodules.digits import Digits

    pl.seed_everything(0)
    dm = Digits(batch_size=256)
    model = DPGMM(input_shape=dm.input_shape, hidden_dims=[16], pretrain_epochs=1, update_interval=3,
                  birth_merge_every_n_steps=every_n_steps, kmeans_n_init=2)
    logger, images = CSVLogger(tmp_path, name="run"), ImageLogger(tmp_path)
    trainer = pl.Trainer(max_epochs=4, logger=[logger, images], log_every_n_steps=50, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         limit_val_batches=0)
    trainer.fit(model, dm)
    for key in ("train/vb_elbo", "train/k_vb"):
        assert [int(row["step"]) for row in logged_rows(logger, key)] == list(range(8, 32, 3)), key
    (birth_merge,) = [cb for cb in trainer.callbacks if isinstance(cb, BirthMerge)]
    assert birth_merge.calls == len(moves)
    for key in ("train/births", "train/merges", "train/deaths"):
        assert [int(row["step"]) for row in logged_rows(logger, key)] == moves, key
    plot = Path(logger.log_dir) / "plots" / "k_over_training.png"
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert images.images == {"train/k_over_training": [str(plot)]}
    assert images.image_steps == {"train/k_over_training": 32}  # the fit's 32 batches


def test_cli_fit_on_digits_finds_k_from_one_and_checkpoints_k(tmp_path: Path):
    ckpt = ["--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint", "--trainer.callbacks.save_last=true",
            "--trainer.callbacks.dirpath", str(tmp_path / "ckpt")]
    scores = run_cli(["fit", "--config", CONFIG, *FAST, "--trainer.max_epochs", "14", *ckpt], tmp_path)
    assert 6 <= scores["k"] <= 14 and scores["k_used"] >= 6  # from K_init = 1 (measured: 8 with seeds 0 and 1)
    assert 0.45 < scores["acc"] <= 1 and 0.45 < scores["nmi"] <= 1
    # K, the DP-GMM posterior and the birth/merge history are in the checkpoint, and a module built with
    # K_init = 1 loads it with its K
    state = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    assert state["state_dict"]["dp_means"].shape[0] == state["state_dict"]["cluster_centers"].shape[0] == scores["k"]
    (bm,) = [v for k, v in state["callbacks"].items() if k.startswith("BirthMerge")]
    assert bm["calls"] >= 4 and bm["history"][-1][2] == scores["k"] and bm["births"] >= scores["k"] - 1
    model = DPGMM.load_from_checkpoint(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    assert model.n_clusters == scores["k"] and model.k_init == 1


def test_cli_fit_with_birth_merge_every_n_steps(tmp_path: Path):
    """The step schedule through Lightning's hooks: one move when clustering starts, then one every 7 steps (an
    epoch of Digits at batch 64 is 29 steps), none at the epochs' ends."""
    ckpt = ["--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint", "--trainer.callbacks.save_last=true",
            "--trainer.callbacks.dirpath", str(tmp_path / "ckpt")]
    scores = run_cli(["fit", "--config", CONFIG, *FAST, "--trainer.max_epochs", "11",
                      "--model.init_args.birth_merge_every_n_steps", "7", *ckpt], tmp_path)
    state = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    (bm,) = [v for k, v in state["callbacks"].items() if k == "BirthMerge{every_n_steps=7}"]
    steps = [h[1] for h in bm["history"]]
    assert steps[0] == bm["start_step"] == 10 * 29  # the first clustering step (10 pretraining epochs)
    assert steps[1:] == list(range(steps[0] + 7, 11 * 29 + 1, 7))
    assert bm["history"][-1][2] == scores["k"] and 5 <= scores["k"] <= 15


# -- found by an audit's mutants, which passed every test above ------------------------------------------------------
def _posterior(g: torch.Generator) -> DPGMMPosterior:
    """A hand-made posterior with small beta_k and a_k, where the E-step's -d/beta and E[log tau] terms matter."""
    f64 = dict(dtype=torch.float64)
    return DPGMMPosterior(gamma1=torch.tensor([3.0, 2.0, 1.5], **f64), gamma2=torch.tensor([2.5, 1.5, 1.0], **f64),
                          beta=torch.tensor([0.3, 1.0, 0.2], **f64), means=torch.randn(3, 3, generator=g, **f64),
                          a=torch.tensor([0.6, 2.0, 0.8], **f64), b=torch.rand(3, 3, generator=g, **f64) + 0.3)


def test_the_e_step_is_the_elbos_per_point_term_and_maximizes_it():
    """The bound is linear in the statistics (N, S1, S2): rho_nk = elbo(z_n alone in k) - elbo(no data) gives
    log r = log_softmax(rho), and no other responsibilities give a larger bound (a mutant dropping the -d/beta
    term, or taking log E[tau] for E[log tau], passed every test)."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(10, 3, generator=g, dtype=torch.float64)
    prior, post = make_prior(z), _posterior(g)
    eye = torch.eye(3, dtype=torch.float64)
    base = elbo(*sufficient_stats(z[:1], torch.zeros(1, 3, dtype=torch.float64)), 0.0, post, prior)
    rho = torch.stack([torch.stack([elbo(*sufficient_stats(z[n:n + 1], eye[k:k + 1]), 0.0, post, prior) - base
                                    for k in range(3)]) for n in range(len(z))])
    log_r, _ = log_responsibilities(z, post)
    torch.testing.assert_close(log_r, torch.log_softmax(rho, 1))

    def bound(log_r):
        r = log_r.exp()
        return float(elbo(*sufficient_stats(z, r), -(r * log_r).sum(), post, prior))

    best = bound(log_r)
    for _ in range(20):
        other = torch.log_softmax(log_r + 0.5 * torch.randn(log_r.shape, generator=g, dtype=torch.float64), 1)
        assert bound(other) <= best + 1e-9


def test_the_sticks_take_alpha0_where_the_stick_breaking_prior_puts_it():
    """Beta(1, alpha0) sticks: gamma1 = 1 + N_k, gamma2 = alpha0 + sum_{l > k} N_l (every test above used
    alpha0 = 1, where a mutant with gamma1 = alpha0 + N_k passed); the method's prior carries its alpha0."""
    z = torch.randn(30, 2, dtype=torch.float64)
    prior = make_prior(z, alpha0=0.3)
    n = torch.tensor([12.0, 10.0, 8.0], dtype=torch.float64)
    post = update_posterior(n, torch.zeros(3, 2, dtype=torch.float64), torch.ones(3, 2, dtype=torch.float64), prior)
    torch.testing.assert_close(post.gamma1, 1.0 + n)
    torch.testing.assert_close(post.gamma2, 0.3 + torch.tensor([18.0, 8.0, 0.0], dtype=torch.float64))
    assert DPGMM(input_shape=(4,), hidden_dims=(8,), alpha0=0.1).prior.alpha0 == 0.1


def test_components_of_less_than_a_sample_are_pruned_and_the_sticks_recomputed():
    """VB pruning (N_k < 1 gone, the sticks of the rest recomputed from their counts) and mixture statistics kept
    sorted by size: three mutants (no pruning, no restick, no sort) passed every test."""
    m = DPGMM(input_shape=(4,), hidden_dims=(8,), latent_dim=2, alpha0=0.5)
    prior = make_prior(torch.randn(40, 2, dtype=torch.float64), alpha0=0.5)
    m.prior_m0, m.prior_b0 = prior.m0.clone(), prior.b0.clone()
    s1, s2 = torch.zeros(3, 2, dtype=torch.float64), torch.ones(3, 2, dtype=torch.float64)
    m.set_mixture_stats(torch.tensor([5.0, 30.0, 0.5], dtype=torch.float64), s1, s2)  # sorted, not pruned
    assert m.dp_gamma1.tolist() == [31.0, 6.0, 1.5] and m.cluster_centers.shape == (3, 2)
    m._set_posterior(m.posterior)  # pruned: the 0.5-sample component goes
    assert m.dp_gamma1.tolist() == [31.0, 6.0] and m.cluster_centers.shape == (2, 2)
    torch.testing.assert_close(m.dp_gamma2, torch.tensor([0.5 + 5.0, 0.5], dtype=torch.float64))
    s1 = torch.arange(6, dtype=torch.float64).view(3, 2)
    m.set_mixture_stats(torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64), s1, s2[:3])
    m._set_posterior(m.posterior)  # none holds a sample: the largest stays
    assert m.dp_gamma1.tolist() == [1.5]
    torch.testing.assert_close(m.cluster_centers, (prior.m0 + s1[1]).float()[None] / 1.5)
