"""Our torch k-means against scikit-learn's KMeans, chunking, warm starts, empty clusters, and DDP."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from dcl.cluster import assign_nearest, kmeans, match_labels, pairwise_sq_dists
from dcl.metrics import ClusterAccuracy, cluster_accuracy
from conftest import gloo_group, run_on_ranks


def blobs(n=3000, d=10, k=8, seed=0, std=1.0):
    x, y = make_blobs(n_samples=n, n_features=d, centers=k, cluster_std=std, random_state=seed)
    return torch.tensor(x, dtype=torch.float32), y


def _km_module():
    import importlib

    return importlib.import_module("dcl.cluster.kmeans")


@pytest.fixture(params=["cpu_path", "gpu_path"])
def lloyd_path(request, monkeypatch):
    """Both Lloyd paths on this CPU: the GPU one (one-``torch.min`` E-step, one-hot GEMM M-step without the
    ``nonzero`` sync, large default chunks) is what a GPU runs, so its results are checked here too."""
    if request.param == "gpu_path":
        monkeypatch.setattr(_km_module(), "_accelerated", lambda x: True)
    return request.param


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_sklearn_on_blobs(seed, lloyd_path):
    x, y = blobs(seed=seed)
    ours = kmeans(x, 8, n_init=5, seed=seed)
    ref = KMeans(8, n_init=5, random_state=seed).fit(x.numpy())
    assert ours.inertia <= ref.inertia_ * 1.01
    assert adjusted_rand_score(ref.labels_, ours.labels.numpy()) >= 0.99
    # the reported inertia is the real one
    assert ours.inertia == pytest.approx(float(((x - ours.centers[ours.labels]) ** 2).sum()), rel=1e-4)


def test_inertia_close_to_sklearn_without_structure():
    x = torch.randn(4000, 5, generator=torch.Generator().manual_seed(0))
    ours = kmeans(x, 10, n_init=4, seed=0)
    ref = KMeans(10, n_init=4, random_state=0).fit(x.numpy())
    assert ours.inertia <= ref.inertia_ * 1.01


def test_chunking_does_not_change_the_result(lloyd_path):
    x, _ = blobs(n=2000)
    a = kmeans(x, 8, n_init=2, seed=3, chunk_size=65536)
    b = kmeans(x, 8, n_init=2, seed=3, chunk_size=97)
    assert torch.equal(a.labels, b.labels)
    assert torch.allclose(a.centers, b.centers, atol=1e-4)
    d_full = torch.cdist(x.double(), a.centers.double()).pow(2)
    assert torch.allclose(pairwise_sq_dists(x, a.centers, chunk_size=101).double(), d_full, atol=1e-3)
    lab, _ = assign_nearest(x, a.centers, chunk_size=50)
    assert torch.equal(lab, d_full.argmin(1))


def test_seeding_allocates_no_float64_copy_of_the_candidate_distances():
    """k-means++ summed each candidate's distances to all rows as ``dc.sum(2, dtype=torch.float64)``, which on the
    CPU first casts the whole (restarts x trials x N) float32 block to float64: the largest allocation of a k-means,
    twice the block (1,000,000 x 10 rows, 8 restarts: 256 MB, and 1.5x the time of k-means on one thread). It sums
    in column blocks now (the same seeds: the restarts' results are unchanged). Measured by the profiler's allocation
    sizes, which depend on the shapes only."""
    from torch.profiler import ProfilerActivity, profile

    n, k, runs = 200_000, 10, 10
    x = torch.randn(n, 2, generator=torch.Generator().manual_seed(0))
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = kmeans(x, k, n_init=runs, seed=0, max_iter=3)
    largest = max(e.self_cpu_memory_usage for e in prof.events())
    candidates = runs * (2 + int(np.log(k))) * n * 4  # the float32 distances of every restart's candidates
    assert largest <= candidates, f"{largest / 2**20:.1f} MB at once; the candidates' distances: {candidates / 2**20:.1f}"
    assert result.centers.shape == (k, 2)


def test_seeding_and_lloyd_hold_no_restarts_x_trials_x_rows_block_and_int32_labels():
    """k-means++ held the (restarts x trials x N) float32 distances of its candidates, two of them at once while the
    next was computed, and the float64 cumulative sum of the (restarts x N) potentials; the Lloyd loop two int64
    (restarts x N) label arrays: peak 378 MB of live allocations at 1,000,000 x 10, 8 restarts (scikit-learn: +93 MB
    RSS). Now the candidates' distances and the cumulative sum are taken over column blocks of 2^20 elements and the
    labels are int32 (returned as int64): 119 MB there. Measured by the profiler's allocations (sizes depend on the
    shapes only): the largest one, and the peak of the sum of those alive. The result is the same as before (the
    other tests: the same as scikit-learn's, one restart at a time and under DDP)."""
    from torch.profiler import ProfilerActivity, profile

    n, k, runs = 200_000, 10, 10
    x = torch.randn(n, 2, generator=torch.Generator().manual_seed(0))
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = kmeans(x, k, n_init=runs, seed=0, max_iter=3)
    events = sorted(prof.events(), key=lambda e: e.time_range.start)
    live, peak = 0, 0
    for e in events:  # allocations are counted in their op's self memory, frees as negative [memory] events
        live += e.self_cpu_memory_usage
        peak = max(peak, live)
    potentials = runs * n * 4  # one float32 (restarts x N) array: the running D(x)^2 of every restart
    largest = max(e.self_cpu_memory_usage for e in events)
    assert largest <= 1.1 * potentials, f"largest allocation {largest / potentials:.2f} x (restarts x N) float32"  # 4.0
    assert peak <= 5 * potentials, f"peak {peak / potentials:.2f} x (restarts x N) float32"  # 11.3 before, 4.3 now
    assert result.labels.dtype == torch.long and result.labels.shape == (n,)


def test_same_seed_same_result_and_global_rng_reproducible():
    x, _ = blobs(n=1000)
    assert torch.equal(kmeans(x, 8, seed=5).centers, kmeans(x, 8, seed=5).centers)
    torch.manual_seed(1)
    a = kmeans(x, 8, n_init=1)
    torch.manual_seed(1)
    b = kmeans(x, 8, n_init=1)
    assert torch.equal(a.labels, b.labels)


def test_warm_start_from_good_centers_converges_immediately():
    x, _ = blobs(n=1000)
    first = kmeans(x, 8, seed=0)
    warm = kmeans(x, 8, init_centers=first.centers)
    assert warm.n_iter <= 2
    assert torch.equal(warm.labels, first.labels)


def test_empty_clusters_are_repaired(lloyd_path):
    # 10 clusters asked of data with 3 well separated points clouds, warm-started with 7 centers far away:
    # those start empty and must be moved onto data points, so that every cluster ends non-empty.
    x, _ = blobs(n=600, d=2, k=3, std=0.5)
    init = torch.cat([x[:3], torch.full((7, 2), 1e4)])
    res = kmeans(x, 10, init_centers=init)
    assert torch.bincount(res.labels, minlength=10).min() >= 1
    assert torch.isfinite(res.centers).all()


@pytest.mark.parametrize("budget_runs", [1, 2])
def test_batched_restarts_equal_one_at_a_time(monkeypatch, budget_runs):
    # restarts are advanced together in one batch by default; forcing batches of 1 (or 2, leaving a
    # partial last batch) must give the same seeds, the same winner and the same result
    x = torch.randn(3000, 6, generator=torch.Generator().manual_seed(2))
    together = kmeans(x, 7, n_init=5, seed=4)
    monkeypatch.setattr(_km_module(), "_BATCH_BYTES", budget_runs * 16 * x.shape[0])
    apart = kmeans(x, 7, n_init=5, seed=4)
    assert torch.equal(apart.labels, together.labels)
    assert torch.allclose(apart.centers, together.centers, atol=1e-5)
    assert apart.inertia == pytest.approx(together.inertia, rel=1e-7)
    assert apart.n_iter == together.n_iter


@pytest.mark.parametrize("tol", [1e-2, 3e-3, 1e-3, 1e-4, 0.0])
def test_same_iterations_and_labels_as_sklearn_from_the_same_init(tol, lloyd_path):
    # float64 data without structure (many Lloyd iterations): from the same initial centers the
    # stopping rule (squared center shift <= tol * mean variance, or unchanged labels; with tol=0 only
    # the latter) and the incremental M-step must reproduce sklearn's run exactly; the data lie off the
    # origin, where a variance taken about 0 instead of the mean would stop earlier
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 5, generator=gen, dtype=torch.float64) + 3
    init = x[torch.randperm(4000, generator=gen)[:8]].clone()
    ours = kmeans(x, 8, init_centers=init, tol=tol)
    ref = KMeans(8, init=init.numpy(), n_init=1, tol=tol, algorithm="lloyd").fit(x.numpy())
    assert ours.n_iter == ref.n_iter_ > 10
    assert np.array_equal(ours.labels.numpy(), ref.labels_)
    assert ours.inertia == pytest.approx(ref.inertia_, rel=1e-10)
    assert np.allclose(ours.centers.numpy(), ref.cluster_centers_, atol=1e-10)


def test_ties_go_to_the_lowest_center_index(lloyd_path):
    # duplicated centers make exact ties for every point: the lower index must win, as argmin does
    x = torch.randn(500, 3, generator=torch.Generator().manual_seed(1))
    c = torch.randn(4, 3, generator=torch.Generator().manual_seed(2))
    centers = torch.cat([c[:2], c[:1], c[2:], c[1:2]])  # rows 2 and 5 duplicate rows 0 and 1
    lab, dist = assign_nearest(x, centers, chunk_size=64)
    ref = torch.cdist(x.double(), centers.double()).argmin(1)
    assert torch.equal(lab, ref)
    assert not bool(((lab == 2) | (lab == 5)).any())
    assert torch.allclose(dist.double(), torch.cdist(x.double(), centers.double()).pow(2).min(1).values, atol=1e-4)


def test_empty_cluster_repair_matches_sklearn(lloyd_path):
    # one initial center far from the data gets no point in the first iteration; both repair it by
    # moving it onto the point farthest from its center, then continue identically
    x, _ = blobs(n=800, d=3, k=4, seed=5)
    x = x.double()
    init = torch.cat([x[[0, 200, 400, 600]], torch.full((1, 3), 1e3, dtype=torch.float64)])
    ours = kmeans(x, 5, init_centers=init)
    ref = KMeans(5, init=init.numpy(), n_init=1, algorithm="lloyd").fit(x.numpy())
    assert np.array_equal(ours.labels.numpy(), ref.labels_)
    assert ours.n_iter == ref.n_iter_
    assert np.allclose(ours.centers.numpy(), ref.cluster_centers_, atol=1e-9)


def test_fewer_distinct_points_than_clusters_stops_when_labels_stop_changing(lloyd_path):
    # the empty cluster is repaired every iteration and takes no point (it lands on a duplicate of another
    # center's point): scikit-learn stops at unchanged labels; rounding kept the shift above tol until max_iter
    x = torch.tensor([0.0, 1.0, 2.0]).repeat_interleave(torch.tensor([13, 15, 22])).unsqueeze(1).double()
    ours = kmeans(x, 4, n_init=1, seed=0)
    ref = KMeans(4, n_init=1, random_state=0).fit(x.numpy())
    assert ours.n_iter == ref.n_iter_ == 2
    assert ours.inertia == pytest.approx(ref.inertia_, abs=1e-12)
    assert sorted(torch.bincount(ours.labels, minlength=4).tolist()) == [0, 13, 15, 22]
    # the labels are those of the returned centers, though the repair moved one in the last iteration
    assert torch.equal(ours.labels, assign_nearest(x, ours.centers)[0])


def test_gpu_path_gives_the_cpu_paths_result(monkeypatch):
    x = torch.randn(5000, 10, generator=torch.Generator().manual_seed(3))
    cpu = kmeans(x, 10, n_init=6, seed=1)
    monkeypatch.setattr(_km_module(), "_accelerated", lambda x: True)
    gpu = kmeans(x, 10, n_init=6, seed=1)
    assert gpu.n_iter == cpu.n_iter > 10
    assert torch.equal(gpu.labels, cpu.labels)
    assert torch.allclose(gpu.centers, cpu.centers, atol=1e-6)
    assert gpu.inertia == pytest.approx(cpu.inertia, rel=1e-9)


def test_bad_arguments():
    x = torch.randn(10, 2)
    with pytest.raises(ValueError, match="larger than the number of samples"):
        kmeans(x, 11)
    with pytest.raises(ValueError, match="non-finite"):
        kmeans(torch.tensor([[0.0, float("nan")], [1.0, 1.0]]), 2)
    with pytest.raises(ValueError, match="init_centers must have shape"):
        kmeans(x, 2, init_centers=torch.zeros(3, 2))
    with pytest.raises(ValueError, match="init_centers contains non-finite values"):
        kmeans(x, 2, init_centers=torch.tensor([[0.0, 0.0], [float("inf"), 0.0]]))
    for setting, message in [({"n_clusters": 0}, "n_clusters must be >= 1, got 0"),
                             ({"n_clusters": "two"}, "n_clusters must be an int, got 'two'"),
                             ({"n_init": 0}, "n_init must be >= 1, got 0"),
                             ({"max_iter": 0}, "max_iter must be >= 1, got 0"),
                             ({"tol": -1e-4}, "tol must be >= 0, got -0.0001"),
                             ({"tol": float("nan")}, "tol must be >= 0, got nan"),
                             ({"chunk_size": 0}, "chunk_size must be >= 1, got 0")]:
        with pytest.raises(ValueError, match=message):
            kmeans(x, **{"n_clusters": 2, **setting})
    with pytest.raises(ValueError, match="x must be a torch.Tensor, got ndarray"):
        kmeans(x.numpy(), 2)
    with pytest.raises(ValueError, match=r"x must be a 2-D tensor \(N, d\); got shape \(10,\)"):
        kmeans(x[:, 0], 2)
    with pytest.raises(ValueError, match="x must have at least one feature"):
        kmeans(x[:, :0], 2)
    # a numpy integer K, and integer samples (computed in float32)
    grid = torch.tensor([[0, 0], [0, 1], [10, 10], [10, 11]])
    res = kmeans(grid, np.int64(2), seed=0)
    assert res.centers.dtype == torch.float32 and sorted(res.centers.tolist()) == [[0.0, 0.5], [10.0, 10.5]]
    for a, b, message in [(x[:, 0], x, r"x must be a 2-D tensor \(N, d\), got shape \(10,\)"),
                          (x, x[:, 0], r"centers must be a 2-D tensor \(K, d\), got shape \(10,\)"),
                          (x, x[:, :1], "feature dims differ: x has 2, centers have 1"),
                          (x, x[:0], "centers must contain at least one center")]:
        with pytest.raises(ValueError, match=message):
            assign_nearest(a, b)
    labels, dist = assign_nearest(grid, torch.tensor([[0, 0], [10, 10]]))  # integers: the default float dtype
    assert labels.tolist() == [0, 0, 1, 1] and dist.tolist() == [0.0, 1.0, 0.0, 1.0] and dist.dtype == torch.float32


def test_match_labels_recovers_a_permutation():
    old = torch.randint(0, 5, (500,))
    perm = torch.tensor([3, 0, 4, 1, 2])
    new = perm[old]  # the same partition, relabeled
    mapping = match_labels(new, old, n_clusters=5)
    assert torch.equal(mapping[new], old)


def test_match_labels_gives_new_clusters_fresh_ids_in_order():
    """The documented case with more new clusters than old (n_clusters None; an audit found it untested): the
    matched ones take their old ids, the rest K_old, K_old + 1, ... in increasing order of their new id."""
    old = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1, 1])
    new = torch.tensor([3, 3, 3, 0, 0, 0, 2, 2, 1])  # old cluster 1 split into new 0 (matched), 2 and 1
    mapping = match_labels(new, old)
    assert mapping.tolist() == [1, 2, 3, 0]
    assert sorted(mapping.tolist()) == list(range(4))  # injective


def test_match_labels_refuses_labels_it_cannot_match():
    ok = torch.tensor([0, 1, 1])
    with pytest.raises(ValueError, match="new contains negative labels"):
        match_labels(torch.tensor([0, -1, 1]), ok)
    with pytest.raises(ValueError, match="old must contain integer labels"):
        match_labels(ok, torch.tensor([0.0, 1.5, 1.0]))
    for new, old in ((torch.tensor([0, 2, 1]), ok), (ok, torch.tensor([0, 2, 1]))):
        with pytest.raises(ValueError, match="labels must be < n_clusters=2"):
            match_labels(new, old, n_clusters=2)
    with pytest.raises(ValueError, match="same length"):
        match_labels(ok, ok[:2])
    with pytest.raises(ValueError, match=r"new must be a 1-D label tensor, got shape \(1, 3\)"):
        match_labels(ok[None], ok)
    with pytest.raises(ValueError, match="n_clusters must be >= 0, got -1"):
        match_labels(ok, ok, n_clusters=-1)
    assert match_labels([1, 0, 0], [0, 1, 1]).tolist() == [1, 0]  # lists are labels too
    assert match_labels(torch.tensor([1.0, 0.0, 0.0]), ok).tolist() == [1, 0]  # whole floats are labels
    assert match_labels(ok[:0], ok[:0]).tolist() == []


# -- k-means++ seeding and the bookkeeping, piece by piece -----------------------------------------------------
def test_the_first_seed_is_a_uniformly_drawn_row():
    km = _km_module()
    x = torch.arange(10.0).unsqueeze(1)
    comm = km._Comm(False, x.device)
    drawn = torch.zeros(10, dtype=torch.long)
    for seed in range(300):
        first = km._kmeans_plusplus(x, (x * x).sum(1), 1, torch.Generator().manual_seed(seed), comm, [10])
        drawn[int(first[0, 0, 0])] += 1
    assert int(drawn.min()) >= 10, drawn.tolist()  # 30 expected of each row


def test_seeding_tries_2_plus_log_k_candidates_per_center_as_sklearn(monkeypatch):
    km = _km_module()
    tried = []
    real = km._candidate_block

    def spy(x, x_sq, c, c_sq, start, cols):
        tried.append(c.shape[0])
        return real(x, x_sq, c, c_sq, start, cols)

    monkeypatch.setattr(km, "_candidate_block", spy)
    x, _ = blobs(n=500)
    kmeans(x, 8, n_init=3, seed=0)
    assert set(tried) == {3 * (2 + int(np.log(8)))}  # 3 restarts seeded together, 4 candidates each


def test_seeding_draws_rows_by_their_potentials_cumulative_sum():
    # searchsorted(cumsum(w), target, right=True) clipped to the last row, both in the single-process blocks and in
    # the DDP lookup: a target on a cumulative sum goes past it, so a row of zero potential (a row on a chosen
    # center) is never drawn, not even by a draw of 0; a target beyond the total (rounding) takes the last row
    km = _km_module()
    w = torch.tensor([[0.0, 0.0, 2.0, 0.0, 1.0, 3.0, 0.0]])  # cumulative sums 0 0 2 2 3 6 6
    targets = torch.tensor([[0.0, 1.0, 2.0, 2.5, 3.0, 5.9, 6.0, 7.0]], dtype=torch.float64)
    expected = [2, 2, 4, 4, 5, 5, 6, 6]
    for cols in (1, 2, 3, 7, 100):
        assert km._search_cumsum(w, targets, cols).tolist() == [expected]
    rows = km._locate(targets[0], w.sum(1, dtype=torch.float64), torch.cumsum(w[0], 0, dtype=torch.float64), [7],
                      km._Comm(False, torch.device("cpu")))
    assert rows == expected


def test_float64_sums_over_column_blocks_equal_one_sum():
    km = _km_module()
    t = torch.rand(3, 4, 1000, generator=torch.Generator().manual_seed(0))
    for elems in (1, 100, 12 * 77, 10**6):
        assert torch.allclose(km._sum_last_float64(t, elems), t.sum(-1, dtype=torch.float64), rtol=1e-12, atol=0)


def test_inertia_is_summed_in_float64():
    # squared distances 2^20 (four) and 1/16 (two), exact in float32: their sum 4194304.125 is not (float32 rounds it
    # to 4194304); the mean is 0, so the data are used as they are
    x = torch.tensor([-5120.0, -3072.0, -0.25, 0.25, 3072.0, 5120.0]).unsqueeze(1)
    res = kmeans(x, 3, init_centers=torch.tensor([[-4096.0], [0.0], [4096.0]]))
    assert res.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert res.inertia == 4194304.125


def test_squared_distances_are_never_negative():
    # ||x||^2 - 2 x.c + ||c||^2 of a point with itself far from the origin: rounding makes it negative, unclamped
    x = torch.randn(2000, 8, generator=torch.Generator().manual_seed(0)) + 1000
    assert bool((pairwise_sq_dists(x, x[:50]) >= 0).all())
    assert bool((assign_nearest(x[:50], x[:50])[1] >= 0).all())


def test_equal_inertias_keep_the_earliest_restart_as_sklearn(lloyd_path):
    # four groups whose means are exact in floating point: every restart ends in the same partition with exactly the
    # same inertia, under its own cluster ids; the first restart's ids are kept (scikit-learn keeps a later restart
    # only at a strictly lower inertia)
    offsets = torch.tensor([[-1.0, 0.0], [1.0, 0.0], [0.0, -1.0], [0.0, 1.0]])
    means = torch.tensor([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0], [100.0, 100.0]])
    x = (means[:, None, :] + offsets[None]).reshape(-1, 2)
    first = kmeans(x, 4, n_init=1, seed=3)
    best = kmeans(x, 4, n_init=8, seed=3)
    assert best.inertia == first.inertia == 16.0
    assert torch.equal(best.labels, first.labels)


def test_without_a_seed_the_seeding_follows_torchs_global_rng():
    x = torch.randn(400, 2, generator=torch.Generator().manual_seed(0))
    centers = []
    for global_seed in (0, 1, 0):
        torch.manual_seed(global_seed)
        centers.append(kmeans(x, 8, n_init=1).centers)
    assert torch.equal(centers[0], centers[2])
    assert not torch.equal(centers[0], centers[1])


# -- DDP: each rank holds a shard; the result equals the single-process one on the concatenated data ------------
def _ddp_worker(rank: int, world: int, port: int, x: torch.Tensor, y: torch.Tensor, split: int, gpu_path: bool,
                out: dict) -> None:
    with gloo_group(rank, world, port):
        torch.set_num_threads(1)
        if gpu_path:
            _km_module()._accelerated = lambda x: True
        bounds = [0, split, len(x)]  # unequal shards, or one empty
        shard = x[bounds[rank]:bounds[rank + 1]]
        res = kmeans(shard, 6, n_init=3, seed=11)
        pad = torch.full((max(split, len(x) - split),), -1, dtype=torch.long)
        pad[: len(res.labels)] = res.labels
        parts = [torch.empty_like(pad) for _ in range(world)]
        dist.all_gather(parts, pad)
        if rank == 0:
            out["labels"] = torch.cat([parts[r][: bounds[r + 1] - bounds[r]] for r in range(world)])
            out["centers"] = res.centers
            out["inertia"] = res.inertia
        out[f"centers{rank}"] = res.centers
        # a warm start: rank 0's centers are used (rank 1's differ), and the far one, empty, is repaired across ranks
        init = _warm_start(x) if rank == 0 else _warm_start(x) + 5.0
        out[f"warm_centers{rank}"] = kmeans(shard, 6, init_centers=init).centers
        accuracy = ClusterAccuracy()  # the torchmetrics-style metric: each rank's shard, the value of all samples
        accuracy.update(res.labels, y[bounds[rank]:bounds[rank + 1]])
        out[f"acc{rank}"] = float(accuracy.compute())


def _warm_start(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x[[0, 300, 600, 900, 1200]], torch.full((1, x.shape[1]), 1e3)])


@pytest.mark.parametrize("split, gpu_path", [(700, False), (1500, True)], ids=["cpu_path", "gpu_path_empty_rank_1"])
def test_ddp_kmeans_equals_single_process(split, gpu_path):
    x, y = blobs(n=1500, d=6, k=6, seed=4)
    y = torch.as_tensor(y)
    y[:300] = (y[:300] + 1) % 6  # errors in rank 0's shard only: each shard's accuracy differs from the whole's
    single = kmeans(x, 6, n_init=3, seed=11)
    out = run_on_ranks(_ddp_worker, x, y, split, gpu_path)
    assert torch.allclose(out["centers0"], out["centers1"])  # identical state on both ranks
    assert torch.allclose(out["centers"], single.centers, atol=1e-4)
    assert torch.equal(out["labels"], single.labels)
    assert out["inertia"] == pytest.approx(single.inertia, rel=1e-5)
    assert out["acc0"] == out["acc1"] == pytest.approx(float(cluster_accuracy(single.labels, y)))
    assert out["acc0"] < 0.9
    warm = kmeans(x, 6, init_centers=_warm_start(x))
    assert torch.allclose(out["warm_centers0"], warm.centers, atol=1e-4)
    assert torch.allclose(out["warm_centers1"], warm.centers, atol=1e-4)


@pytest.mark.parametrize("dtype, k", [(torch.bfloat16, 300), (torch.float16, 3000)])
def test_half_precision_rows_are_assigned_to_their_own_center_among_many(dtype, k):
    # each point lies exactly on its center: the CPU argmin trick's integers 0..2K-1 are not exact in these dtypes
    c = torch.eye(k, dtype=dtype)
    labels, dist = assign_nearest(c, c)
    assert torch.equal(labels, torch.arange(k))
    assert not dist.any()


def test_gpu_path_statistics_of_an_empty_shard_are_zero():
    # the M-step's buffer comes from torch.empty (on a GPU: the caching allocator's old contents); an empty shard
    # must still add zeros to the all_reduce
    km = _km_module()
    x = torch.empty(0, 2)
    labels = torch.empty(1, 0, dtype=torch.int32)
    out = torch.full((1 * 3 * 3 + 1,), 7.0, dtype=torch.float64)
    km._dense_stats_batch(x, km._with_ones(x), labels, labels.clone(), torch.arange(3, dtype=torch.int32).view(1, 3, 1),
                          out, 65536)
    assert out.tolist() == [0.0] * 10
