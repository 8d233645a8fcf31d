"""Cluster birth / merge / death: K must move in both directions (DeepDPM's 'K never moves' bug), from
all-reduced statistics, with its state in the callback's state_dict."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from dcl.callbacks.birth_merge import (BirthMerge, birth_merge, birth_merge_round, gaussian_loglik, hard_stats,
                                       mixture_labels, variance_floor)
from dcl.cluster import kmeans

from conftest import gloo_group, run_on_ranks

K_TRUE = 5


def _blobs(seed=0, n=2000):
    x, y = make_blobs(n, centers=K_TRUE, n_features=4, cluster_std=1.0, random_state=seed)
    return torch.tensor(x, dtype=torch.float32), y


def _floor(z):
    return 1e-3 * z.double().var(0)


@pytest.mark.parametrize("seed", [0, 1])
def test_k_grows_from_one(seed):
    z, y = _blobs(seed)
    res = birth_merge(z, torch.zeros(len(z), dtype=torch.long), 1, rounds=20)
    assert res.k == K_TRUE and res.births >= K_TRUE - 1
    assert res.k_history[0] == 2  # the first round splits the single component
    labels = mixture_labels(z, res.n, res.s1, res.s2, _floor(z))
    assert adjusted_rand_score(y, labels.numpy()) > 0.95


@pytest.mark.parametrize("seed", [0, 1])
def test_k_shrinks_from_three_times_too_many(seed):
    z, y = _blobs(seed)
    labels = kmeans(z, 3 * K_TRUE, n_init=1, seed=0).labels
    res = birth_merge(z, labels, 3 * K_TRUE, rounds=20)
    assert res.k == K_TRUE and res.merges >= 2 * K_TRUE
    labels = mixture_labels(z, res.n, res.s1, res.s2, _floor(z))
    assert adjusted_rand_score(y, labels.numpy()) > 0.95


@pytest.mark.parametrize("full", [False, True])
def test_statistics_and_labels_in_blocks_of_rows_are_those_of_all_rows(full):
    """The per-sample float64 work runs in blocks of rows (bounded memory for any N; unchunked, full statistics
    and the full-covariance labels took ~1 and 4 GB a million samples): blocks that do not divide N give the sums
    written out and the same labels."""
    z, _ = _blobs(0)
    labels = kmeans(z, K_TRUE, n_init=1, seed=0).labels
    n, s1, s2 = hard_stats(z, labels, K_TRUE, full=full, chunk_rows=97)
    zd = z.double()
    for j in range(K_TRUE):
        mine = zd[labels == j]
        assert n[j] == len(mine)
        torch.testing.assert_close(s1[j], mine.sum(0))
        torch.testing.assert_close(s2[j], mine.T @ mine if full else mine.pow(2).sum(0))
    one = mixture_labels(z, n, s1, s2, _floor(z), chunk_rows=len(z))
    assert torch.equal(mixture_labels(z, n, s1, s2, _floor(z), chunk_rows=97), one) and len(one) == len(z)
    assert adjusted_rand_score(labels.numpy(), one.numpy()) > 0.95


def test_a_single_gaussian_is_not_split_and_statistics_are_conserved():
    torch.manual_seed(0)
    z = torch.randn(3000, 3) * torch.tensor([1.0, 3.0, 0.5])
    res = birth_merge(z, torch.zeros(3000, dtype=torch.long), 1, rounds=5)
    assert res.k == 1 and res.births == 0
    z2, _ = _blobs(0)
    res = birth_merge_round(z2, kmeans(z2, 8, n_init=1, seed=0).labels, 8)
    n, s1, s2 = hard_stats(z2, torch.zeros(len(z2), dtype=torch.long), 1, full=True)
    torch.testing.assert_close(res.n.sum(), n.sum())  # moves never lose or duplicate data
    torch.testing.assert_close(res.s1.sum(0), s1[0])
    torch.testing.assert_close(res.s2.sum(0), s2[0])


@pytest.mark.parametrize("n", [2000, 40000])
def test_min_gain_is_a_per_point_bar_for_births_at_any_data_size(n):
    """Two Gaussians 4 std apart: splitting gains ~0.06 nats per point beyond the assignment cost. The BIC
    penalty (~log N in all) lets that through at every N; a min_gain of 0.2 nats per point stops it at every N."""
    torch.manual_seed(0)
    z = torch.randn(n, 3)
    z[:, 0] += torch.where(torch.rand(n) < 0.5, -2.0, 2.0)
    start = torch.zeros(n, dtype=torch.long)
    assert birth_merge(z, start, 1, rounds=3).k == 2
    assert birth_merge(z, start, 1, rounds=3, min_gain=0.2).k == 1
    # and the same bar merges the two back
    assert birth_merge(z, (z[:, 0] > 0).long(), 2, rounds=1, split=False, min_gain=0.2).k == 1


def test_a_birth_keeps_min_weight_of_the_data_in_each_child():
    """A far satellite of 8% of a component's data is split off when each child may hold 5% of the data, not when
    it must hold 10% (a mutant without the children's bar passed every test)."""
    g = torch.Generator().manual_seed(0)
    z = torch.cat([torch.randn(1840, 3, generator=g), torch.randn(160, 3, generator=g) + torch.tensor([12.0, 0, 0])])
    start = torch.zeros(len(z), dtype=torch.long)
    split = birth_merge_round(z, start, 1, min_weight=0.05, merge=False)
    assert split.births == 1 and sorted(split.n.tolist()) == [160.0, 1840.0]
    assert birth_merge_round(z, start, 1, min_weight=0.1, merge=False).births == 0


@pytest.mark.parametrize("max_components, k_after", [(1, 2), (2, 2), (3, 3), (4, 4), (50, 4)])
def test_births_stop_at_max_components(max_components, k_after):
    """Two components that each hold two far blobs: both split, unless K would pass max_components (or is above it
    already: a start with more components than the bound gets no births); the best gain goes first: the second
    component's blobs lie farther apart, so it is the one split under a bound of 3."""
    g = torch.Generator().manual_seed(0)
    corners = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [20.0, 10.0]])
    z = torch.cat([torch.randn(500, 2, generator=g) + c for c in corners])
    labels = torch.arange(4).repeat_interleave(500) // 2
    res = birth_merge_round(z, labels, 2, max_components=max_components, merge=False)
    assert res.k == k_after and res.births == k_after - 2
    if k_after == 3:  # the unsplit component comes first
        torch.testing.assert_close(res.s1[0] / res.n[0], z[:1000].double().mean(0))


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_a_birth_pays_the_bic_penalty_of_one_components_parameters(covariance):
    """A split is kept when its likelihood gain beats penalty * p/2 log N, with p = d mean + d(d+1)/2 (full) or d
    (diagonal) variance + 1 weight: just under the penalty at which the gain equals that cost the split is kept,
    just over it not (a mutant counting d^2 covariance parameters passed every test)."""
    g = torch.Generator().manual_seed(0)
    d, n = 3, 4000
    z = torch.randn(n, d, generator=g)
    z[:, 0] += torch.where(torch.rand(n, generator=g) < 0.5, -2.5, 2.5)
    start = torch.zeros(n, dtype=torch.long)
    free = birth_merge_round(z, start, 1, penalty=0.0, merge=False, covariance=covariance)
    assert free.births == 1
    stats = hard_stats(z, start, 1, full=covariance == "full")
    floor = variance_floor(*stats)
    parent = gaussian_loglik(*stats, floor)
    children = gaussian_loglik(free.n, free.s1, free.s2, floor)
    gain = float(children.sum() + (free.n * (free.n / n).log()).sum() - parent.sum())
    p = d + (d * (d + 1) // 2 if covariance == "full" else d) + 1
    at = gain / (0.5 * p * math.log(n))
    assert birth_merge_round(z, start, 1, penalty=0.99 * at, merge=False, covariance=covariance).births == 1
    assert birth_merge_round(z, start, 1, penalty=1.01 * at, merge=False, covariance=covariance).births == 0


def test_a_component_made_by_a_merge_is_not_split_in_the_same_round():
    """Each component moves at most once a round: two blobs cut crosswise into two components merge into one,
    which the next round splits into the blobs (without the rule the merged component was split in the round that
    made it, a mutant that passed every test)."""
    g = torch.Generator().manual_seed(0)
    z = torch.cat([torch.randn(1000, 2, generator=g) + torch.tensor([0.0, 6.0]),
                   torch.randn(1000, 2, generator=g) + torch.tensor([0.0, -6.0])])
    crosswise = (z[:, 0] > 0).long()
    one = birth_merge_round(z, crosswise, 2)
    assert (one.merges, one.births, one.k) == (1, 0, 1)
    two = birth_merge(z, crosswise, 2, rounds=3)
    assert (two.merges, two.births, two.k_history) == (1, 1, [1, 2, 2])
    assert sorted(two.n.tolist()) == [1000.0, 1000.0]


def test_death_sends_a_small_component_to_its_nearest_neighbour():
    z, _ = _blobs(0, n=1000)
    labels = kmeans(z, K_TRUE, n_init=1, seed=0).labels
    # a spurious component of 3 points: below min_weight 1% it dies, into the component of its points
    small = torch.nonzero(labels == 0).flatten()[:3]
    labels = labels.clone()
    labels[small] = K_TRUE
    res = birth_merge_round(z, labels, K_TRUE + 1, merge=False, split=False)
    assert res.deaths == 1 and res.k == K_TRUE
    assert int(res.n[0]) == int((labels == 0).sum()) + 3


def test_a_round_of_death_merge_and_birth_conserves_the_data():
    """Death, merge and birth in one round, each moving statistics and labels: a bimodal component (first, so that
    labels sent to component 0 by mistake land in the one that splits), one Gaussian cut in two halves (merged) and
    5 points beside it (below min_weight: they die into it). The counts, sums and sums of outer products of the
    result are those of all the data (a dead component's labels, or a merged one's, sent to component 0 passed
    every test: the split then counted them twice)."""
    g = torch.Generator().manual_seed(0)
    bimodal = torch.cat([torch.randn(400, 2, generator=g) + torch.tensor([-20.0, 0.0]),
                         torch.randn(400, 2, generator=g) + torch.tensor([-10.0, 0.0])])
    gaussian = torch.randn(600, 2, generator=g) + torch.tensor([15.0, 0.0])
    near = torch.randn(5, 2, generator=g) * 0.3 + torch.tensor([19.0, 0.0])
    z = torch.cat([bimodal, gaussian, near])
    labels = torch.cat([torch.zeros(800), 1 + (gaussian[:, 1] > 0).float(), torch.full((5,), 3.0)]).long()
    res = birth_merge_round(z, labels, 4)
    assert (res.deaths, res.merges, res.births, res.k) == (1, 1, 1, 3)
    zd = z.double()
    torch.testing.assert_close(res.n.sum(), torch.tensor(len(z), dtype=torch.float64))
    torch.testing.assert_close(res.s1.sum(0), zd.sum(0))
    torch.testing.assert_close(res.s2.sum(0), zd.T @ zd)
    assert sorted(res.n.tolist()) == [400.0, 400.0, 605.0]


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_a_split_starts_across_the_axis_of_largest_variance(covariance):
    """The 2-means of a birth starts at mean +- sqrt(lambda) v along the principal axis (full) or the axis of
    largest variance (diagonal): after one iteration two blobs along that axis are the children (started along
    another axis, the split cut both blobs in halves)."""
    g = torch.Generator().manual_seed(0)
    axis = torch.tensor([0.6, 0.8]) if covariance == "full" else torch.tensor([0.0, 1.0])
    across = torch.tensor([-0.8, 0.6]) if covariance == "full" else torch.tensor([1.0, 0.0])
    z = torch.cat([4 * side * axis + torch.randn(300, 1, generator=g) * across
                   + 0.5 * torch.randn(300, 1, generator=g) * axis for side in (-1, 1)])
    res = birth_merge_round(z, torch.zeros(600, dtype=torch.long), 1, merge=False, split_iters=1,
                            covariance=covariance)
    assert res.births == 1 and res.n.tolist() == [300.0, 300.0]
    means = res.s1 / res.n[:, None]
    means = means[(means @ axis.double()).argsort()]  # the blob at -4 axis first
    torch.testing.assert_close(means, torch.stack([z[:300].double().mean(0), z[300:].double().mean(0)]))


@pytest.mark.parametrize("full", [True, False])
def test_mixture_labels_are_the_most_probable_component_of_the_fitted_mixture(full):
    """argmax_k log pi_k + log N(z | mean_k, cov_k + floor) of the Gaussians fitted to the statistics, the weights
    and log-determinants included (three overlapping components of unequal sizes and spreads, where they decide
    many points), in blocks of rows, and no labels for no rows."""
    g = torch.Generator().manual_seed(0)
    z = torch.cat([torch.randn(600, 2, generator=g) @ torch.tensor([[2.0, 1.2], [0.0, 0.5]]),
                   torch.randn(150, 2, generator=g) * 0.4 + torch.tensor([1.5, 0.0]),
                   torch.randn(250, 2, generator=g) + torch.tensor([-1.0, 1.0])])
    stats = hard_stats(z, torch.arange(3).repeat_interleave(torch.tensor([600, 150, 250])), 3, full=full)
    floor = variance_floor(*stats)
    n, s1, s2 = stats
    mean = s1 / n[:, None]
    cov = (s2 / n[:, None, None] - mean[:, :, None] * mean[:, None, :] if full
           else torch.diag_embed(s2 / n[:, None] - mean.pow(2))) + torch.diag(floor)
    gauss = torch.distributions.MultivariateNormal(mean, cov)
    expected = ((n / n.sum()).log() + gauss.log_prob(z.double()[:, None, :])).argmax(1)
    assert torch.equal(mixture_labels(z, *stats, floor, chunk_rows=333), expected)
    assert not torch.equal(expected, gauss.log_prob(z.double()[:, None, :]).argmax(1))  # the weights decide some
    assert mixture_labels(z[:0], *stats, floor).shape == (0,)


def _ddp_scenarios():
    """(z, labels, k, rank 0's settings, rank 1's if others): births from one component (twice), merges and deaths
    from 15 with diagonal tests, and the same with rank 1 set to a penalty that would refuse every birth and merge
    every pair (1e3), or split every component and merge none (-1e3): every rank must take rank 0's decisions (a
    disagreement floating point could cause)."""
    z, _ = _blobs(3)
    one = torch.zeros(len(z), dtype=torch.long)
    many = kmeans(z, 3 * K_TRUE, n_init=1, seed=0).labels
    small = {"rounds": 20}
    by_x = z[z[:, 0].argsort()]  # shards of different blobs: a 2-means of a rank's own data alone splits otherwise
    return [(z, one, 1, small, small), (by_x, one, 1, {"rounds": 1}, None),
            (z, many, 3 * K_TRUE, {"rounds": 3, "covariance": "diag", "min_weight": 0.05}, None),
            (z, one, 1, small, {"rounds": 20, "penalty": 1e3}),
            (z, many, 3 * K_TRUE, {"rounds": 3}, {"rounds": 3, "penalty": -1e3})]


def _birth_merge_worker(rank: int, world: int, port: int, scenarios: list, split: int, out: dict) -> None:
    with gloo_group(rank, world, port):
        torch.set_num_threads(1)
        mine = slice(0, split) if rank == 0 else slice(split, None)
        results = []
        for z, labels, k, settings, other in scenarios:
            kwargs = settings if rank == 0 or other is None else other
            res = birth_merge(z[mine], labels[mine], k, **kwargs)  # distributed: the default in a process group
            results.append((res.n, res.s1, res.s2, res.births, res.merges, res.deaths, res.k_history))
        z, labels, k = scenarios[-1][:3]
        res = birth_merge_round(z[mine], labels[mine], k)  # one round, distributed by default too
        results.append((res.n, res.s1, res.s2, res.births, res.merges, res.deaths, res.k_history))
        out[rank] = results


def test_birth_merge_on_two_ranks_equals_one_process():
    """Each rank holds a shard (unequal ones); the statistics of the components, of the 2-means children at every
    iteration and of the result are summed over the ranks, so the moves are those of all samples in one process."""
    expected, scenarios = [], _ddp_scenarios()  # (made here: k-means in a worker would run over the ranks)
    for z, labels, k, settings, _ in scenarios:
        res = birth_merge(z, labels, k, distributed=False, **settings)
        expected.append((res.n, res.s1, res.s2, res.births, res.merges, res.deaths, res.k_history))
    z, labels, k = scenarios[-1][:3]
    res = birth_merge_round(z, labels, k, distributed=False)
    expected.append((res.n, res.s1, res.s2, res.births, res.merges, res.deaths, res.k_history))
    out = run_on_ranks(_birth_merge_worker, scenarios, 800)
    for rank in (0, 1):
        for got, want in zip(out[rank], expected, strict=True):
            assert got[3:] == want[3:]
            for a, b in zip(got[:3], want[:3]):
                torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-6)


def test_rounds_reassign_the_data_to_the_fitted_gaussians_and_stop_when_nothing_moves():
    """birth_merge is rounds of birth_merge_round, the data re-assigned between them to the mixture of the
    round's Gaussians (full ones, on correlated data where diagonal ones assign otherwise), until a round moves
    nothing; its counts are the rounds' sums (a first round's death was lost when only the last round's counted)."""
    x, _ = make_blobs(1500, centers=4, n_features=2, random_state=1)
    z = torch.tensor(x @ [[0.6, -0.6], [-0.4, 0.8]], dtype=torch.float32)
    labels = kmeans(z, 8, n_init=1, seed=0).labels
    labels[:4] = 8  # a component of 4 samples: it dies in the first round
    manual = [birth_merge_round(z, labels, 9, distributed=False)]
    while len(manual) < 8 and manual[-1].births + manual[-1].merges + manual[-1].deaths:
        last = manual[-1]
        start = mixture_labels(z, last.n, last.s1, last.s2, variance_floor(last.n, last.s1, last.s2))
        manual.append(birth_merge_round(z, start, last.k, distributed=False))
    assert 2 <= len(manual) < 8 and manual[0].deaths == 1
    total = birth_merge(z, labels, 9, rounds=8)
    assert total.k_history == [m.k for m in manual]
    for name in ("births", "merges", "deaths"):
        assert getattr(total, name) == sum(getattr(m, name) for m in manual)
    for got, want in zip((total.n, total.s1, total.s2), (manual[-1].n, manual[-1].s1, manual[-1].s2)):
        torch.testing.assert_close(got, want)
    none = birth_merge(z, labels, 9, rounds=0, covariance="diag")  # no round: the statistics of the labels
    assert none.k == 9 and none.s2.shape == (9, 2) and none.k_history == []


def test_the_variance_floor_is_a_thousandth_of_the_variance_plus_1e_8_of_the_second_moment():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(500, 3, generator=g, dtype=torch.float64) * torch.tensor([1.0, 5.0, 0.1]) + 3
    labels = torch.arange(500) % 4
    for full in (True, False):
        floor = variance_floor(*hard_stats(z, labels, 4, full=full))
        torch.testing.assert_close(floor, 1e-3 * z.var(0, unbiased=False) + 1e-8 * z.pow(2).mean(0))


def test_loglik_of_statistics_is_the_fitted_gaussian_likelihood():
    torch.manual_seed(0)
    z = torch.randn(500, 2, dtype=torch.float64) * 2 + 1
    n, s1, s2 = hard_stats(z, torch.zeros(500, dtype=torch.long), 1)
    var = z.var(0, unbiased=False)
    direct = torch.distributions.Normal(z.mean(0), var.sqrt()).log_prob(z).sum()
    torch.testing.assert_close(gaussian_loglik(n, s1, s2, torch.zeros(2, dtype=torch.float64))[0], direct)


@pytest.mark.parametrize("covariance", ["full", "diag"])
@pytest.mark.parametrize("value", [(1.3012, -0.2099), (3.0, 3.0), (13010.52, -2099.81), (0.0, 0.0)])
def test_identical_embeddings_end_in_one_component(value, covariance):
    """Every sample embedded at one point (a data set of identical samples): S2/n - mean^2 is float64 rounding,
    slightly negative, and a floor of 1e-3 of that "variance" left covariances that were not positive-definite
    (a crash in Cholesky); the floor follows the second moment, so the data end in one finite component."""
    z = torch.tensor([value], dtype=torch.float32).expand(200, 2)
    res = birth_merge(z, torch.zeros(200, dtype=torch.long), 1, rounds=3, covariance=covariance)
    assert res.k == 1
    labels = kmeans(z + 1e-7 * torch.randn(200, 2), 3, n_init=1, seed=0).labels  # from 3 components
    res = birth_merge(z, labels, 3, rounds=3, covariance=covariance)
    assert res.k == 1 and int(res.n[0]) == 200


class _Mixture:
    """The smallest module that keeps the mixture protocol: a hard diagonal Gaussian mixture of statistics."""

    clustering_active = True
    max_components = 50

    def __init__(self, z, k):
        self.z = z
        self.stats = hard_stats(z, kmeans(z, k, n_init=1, seed=0).labels if k > 1 else
                                torch.zeros(len(z), dtype=torch.long), k)

    @property
    def n_clusters(self):
        return len(self.stats[0])

    def embed_all(self, gather=True):
        return self.z

    def assign(self, z):
        labels = mixture_labels(z, *self.stats, _floor(z))
        return torch.nn.functional.one_hot(labels, self.n_clusters).float()

    def set_mixture_stats(self, n, s1, s2):
        self.stats = (n, s1, s2)


@pytest.mark.parametrize("k_init", [1, 3 * K_TRUE])
def test_callback_moves_k_to_the_truth_and_keeps_its_state(k_init):
    z, _ = _blobs(2)
    module = _Mixture(z, k_init)
    cb = BirthMerge(penalty=1.0, first_rounds=1, rounds=1)
    for epoch in range(12):
        cb.step(SimpleNamespace(current_epoch=epoch, global_step=epoch * 10), module, rounds=1)
    assert module.n_clusters == K_TRUE
    ks = [h[2] for h in cb.history]
    assert (ks[0] > k_init) if k_init == 1 else (ks[0] < k_init)
    state = cb.state_dict()
    fresh = BirthMerge()
    fresh.load_state_dict(state)
    assert fresh.history == cb.history and fresh.calls == 12
    assert (fresh.births, fresh.merges, fresh.deaths) == (cb.births, cb.merges, cb.deaths)


def _trainer(epoch: int, step: int) -> SimpleNamespace:
    """What the callback reads of a Trainer: the epoch and step, and where its counts are logged."""
    return SimpleNamespace(current_epoch=epoch, global_step=step, callback_metrics={}, is_global_zero=True, loggers=[])


def test_the_callback_hands_its_settings_to_every_step_and_sums_its_counts(monkeypatch):
    """Every setting reaches the moves (the method's max_components over the callback's); the counts add up over
    the steps, and the history records K after each."""
    import dcl.callbacks.birth_merge as module_of_moves

    calls = []

    def moves(z, labels, k, rounds=1, **settings):
        calls.append((rounds, settings))
        n, s1, s2 = hard_stats(z, labels % (k + 1), k + 1)  # one component more
        return module_of_moves.BirthMergeResult(n, s1, s2, births=1, merges=2, deaths=3)

    monkeypatch.setattr(module_of_moves, "birth_merge", moves)
    z, _ = _blobs(0, n=300)
    module = _Mixture(z, 2)
    module.max_components = 7
    cb = BirthMerge(min_weight=0.03, penalty=2.5, min_gain=0.1, split=False, merge=False, split_iters=4,
                    covariance="diag")
    cb.step(_trainer(0, 0), module, rounds=3)
    cb.step(_trainer(1, 9), module, rounds=2)
    settings = {"min_weight": 0.03, "max_components": 7, "penalty": 2.5, "min_gain": 0.1, "split": False,
                "merge": False, "split_iters": 4, "covariance": "diag", "distributed": False}
    assert calls == [(3, settings), (2, settings)]
    assert (cb.births, cb.merges, cb.deaths, cb.calls) == (2, 4, 6, 2)
    assert cb.history == [[0, 0, 3], [1, 9, 4]]
    for split, merge in ((True, False), (False, True)):
        calls.clear()
        BirthMerge(split=split, merge=merge).step(_trainer(0, 0), module, rounds=1)
        assert (calls[0][1]["split"], calls[0][1]["merge"]) == (split, merge)


def test_the_epoch_schedule_counts_from_the_epoch_clustering_starts_in(monkeypatch):
    """The first step runs at the first clustering batch (first_rounds, at least 1), then every every_n_epochs-th
    epoch end counted from that epoch; the start is kept in the state."""
    import dcl.callbacks.birth_merge as module_of_moves

    rounds, real = [], module_of_moves.birth_merge
    monkeypatch.setattr(module_of_moves, "birth_merge", lambda *a, **kw: rounds.append(kw["rounds"]) or real(*a, **kw))
    z, _ = _blobs(0, n=300)
    module = _Mixture(z, 2)
    for first_rounds, first in ((0, 1), (1, 1), (3, 3)):
        cb, rounds[:] = BirthMerge(every_n_epochs=2, first_rounds=first_rounds, rounds=2), []
        for epoch in range(3, 9):  # clustering starts in epoch 3, at step 30
            for batch in range(2):
                cb.on_train_batch_start(_trainer(epoch, 10 * epoch + batch), module, None, batch)
            cb.on_train_epoch_end(_trainer(epoch, 10 * epoch + 2), module)
        assert [h[0] for h in cb.history] == [3, 4, 6, 8] and rounds == [first, 2, 2, 2]
    fresh = BirthMerge(every_n_epochs=2)
    fresh.load_state_dict(cb.state_dict())
    assert (fresh.start_epoch, fresh.start_step, fresh.calls) == (3, 30, 4)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match=r"min_weight must be in \[0, 0.5\), got 0.6"):
        BirthMerge(min_weight=0.6)
    with pytest.raises(ValueError, match="every_n_epochs or every_n_steps >= 1"):
        BirthMerge(every_n_epochs=0)
    with pytest.raises(ValueError, match="min_gain >= 0"):
        BirthMerge(min_gain=-0.1)
    with pytest.raises(ValueError, match="not both"):
        BirthMerge(every_n_epochs=1, every_n_steps=5)
    with pytest.raises(ValueError, match="every_n_epochs or every_n_steps >= 1"):
        BirthMerge(every_n_steps=0)
    with pytest.raises(ValueError, match="BirthMerge: covariance must be 'full' or 'diag', got 'spherical'"):
        BirthMerge(covariance="spherical")
    with pytest.raises(ValueError, match="covariance must be 'full' or 'diag', got 'spherical'"):
        birth_merge_round(torch.randn(10, 2), torch.zeros(10, dtype=torch.long), 1, covariance="spherical")
    with pytest.raises(ValueError, match=r"min_weight must be in \[0, 0.5\), got 0.5"):
        BirthMerge(min_weight=0.5)
    for bad in ({"rounds": 0}, {"first_rounds": -1}):
        with pytest.raises(ValueError, match="BirthMerge needs every_n_epochs or every_n_steps >= 1, rounds >= 1 and "
                                             "first_rounds >= 0"):
            BirthMerge(**bad)
    for bad in ({"max_components": 0}, {"penalty": -1.0}):
        with pytest.raises(ValueError, match="BirthMerge needs max_components >= 1, penalty >= 0 and min_gain >= 0"):
            BirthMerge(**bad)


def test_when_every_component_is_below_min_weight_the_largest_survives():
    z = torch.randn(100, 2, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0] * 40 + [1] * 35 + [2] * 25)
    res = birth_merge_round(z, labels, 3, min_weight=0.45, split=False, merge=False)
    assert res.deaths == 2 and res.n.tolist() == [100.0]
    # "below": a component of exactly min_weight of the data lives
    res = birth_merge_round(z, (torch.arange(100) < 10).long(), 2, min_weight=0.1, split=False, merge=False)
    assert res.deaths == 0 and res.n.tolist() == [90.0, 10.0]
    assert BirthMerge().every_n_epochs == 1 and BirthMerge().state_key == "BirthMerge{every_n_epochs=1}"
    assert BirthMerge(every_n_steps=5).state_key == "BirthMerge{every_n_steps=5}"


def test_k_plot_goes_where_clustering_plots_go_and_nowhere_without_a_run_folder(tmp_path, monkeypatch):
    """Found by a user of the estimator: a DPGMM fit (no logger, no ClusteringPlots) left ./plots/k_over_training.png
    in the working folder. It now goes to ClusteringPlots' folder when there is one, else nowhere without a logger."""
    import lightning.pytorch as pl

    from dcl.callbacks import ClusteringPlots

    monkeypatch.chdir(tmp_path)
    cb = BirthMerge()
    cb.history = [[0, 0, 1], [0, 5, 4]]
    cb.on_fit_end(pl.Trainer(logger=False, default_root_dir=tmp_path / "root"), None)
    assert not list(tmp_path.rglob("*.png"))
    plots = ClusteringPlots(dirpath=str(tmp_path / "figs"))
    cb.on_fit_end(pl.Trainer(logger=False, callbacks=[plots], fast_dev_run=True), None)  # a trial run: no file
    with monkeypatch.context() as patch:  # nor on a rank other than 0
        patch.setattr(pl.Trainer, "is_global_zero", property(lambda trainer: False))
        cb.on_fit_end(pl.Trainer(logger=False, callbacks=[plots]), None)
    assert not list(tmp_path.rglob("*.png"))
    cb.on_fit_end(pl.Trainer(logger=False, callbacks=[plots]), None)
    assert [p.relative_to(tmp_path) for p in tmp_path.rglob("*.png")] == [Path("figs/k_over_training.png")]


def test_k_plot_is_saved_with_the_runs_plots_and_logged_to_image_loggers(tmp_path):
    import lightning.pytorch as pl
    import matplotlib.image

    from conftest import ImageLogger

    cb = BirthMerge()
    cb.history = [[0, 0, 1], [0, 5, 4], [1, 10, 5]]
    logger = ImageLogger(tmp_path)
    cb.on_fit_end(pl.Trainer(logger=[logger], default_root_dir=tmp_path), None)
    path = tmp_path / "proj" / "run1" / "plots" / "k_over_training.png"  # beside ClusteringPlots' files
    assert logger.images == {"train/k_over_training": [str(path)]}
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image[..., :3].std() > 0.05


def test_every_n_steps_counts_optimizer_steps_under_gradient_accumulation():
    """Found by a user: with accumulate_grad_batches 2, two batches end at each global_step, and the step ran at
    both (global_step 4 twice, 8 twice), and once more right after the first step."""
    z, _ = _blobs(0, n=600)
    module = _Mixture(z, 3)
    cb = BirthMerge(every_n_steps=2, penalty=1.0)
    start = 10
    for batch in range(10):  # 2 batches an optimizer step
        cb.on_train_batch_start(_trainer(0, start + batch // 2), module, None, batch)
        cb.on_train_batch_end(_trainer(0, start + (batch + 1) // 2), module, None, None, batch)
    assert [h[1] for h in cb.history] == [10, 12, 14]
