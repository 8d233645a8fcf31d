"""DEKM: the scatter / eigen / target ops, the eigen update callback, and fits through the CLI."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from dcl.callbacks.eigen_update import EigenUpdate
from dcl.cluster.scatter import dekm_loss, dekm_targets, match_to_previous, sorted_eigh, within_class_scatter
from dcl.method import ConfigError
from dcl.methods.dekm import DEKM
from tests.conftest import ddp_mean_gradient, flat_grad, run_cli

# a small dense DEKM that fits Digits in a few seconds
FAST = ["--model.init_args.hidden_dims", "[64, 64, 128]", "--model.init_args.pretrain_epochs", "4",
        "--model.init_args.kmeans_n_init", "10", "--model.init_args.weight_init", "glorot",
        "--model.init_args.tol", "0.02", "--data.init_args.batch_size", "64",
        "--trainer.check_val_every_n_epoch", "100", "--trainer.callbacks", "null"]


def blobs(n_per=60, d=4, k=3, seed=0, spread=None):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(k, d, generator=g, dtype=torch.float64) * 10
    spread = torch.ones(d, dtype=torch.float64) if spread is None else spread
    z = torch.cat([c + torch.randn(n_per, d, generator=g, dtype=torch.float64) * spread for c in centers])
    labels = torch.arange(k).repeat_interleave(n_per)
    means = torch.stack([z[labels == j].mean(0) for j in range(k)])
    return z, labels, means


# -- pure ops ---------------------------------------------------------------------------------------------
def test_scatter_is_the_sum_of_outer_products_in_any_chunks():
    z, labels, means = blobs()
    s = within_class_scatter(z, labels, means)
    brute = sum(torch.outer(z[i] - means[labels[i]], z[i] - means[labels[i]]) for i in range(len(z)))
    torch.testing.assert_close(s, brute)
    torch.testing.assert_close(within_class_scatter(z, labels, means, chunk_size=7), s)


def test_rotation_is_orthonormal_and_diagonalizes_the_scatter():
    z, labels, means = blobs(d=6, spread=torch.tensor([1.0, 3, 0.5, 2, 1.5, 0.2], dtype=torch.float64))
    s = within_class_scatter(z, labels, means)
    evals, v = sorted_eigh(s)
    torch.testing.assert_close(v.T @ v, torch.eye(6, dtype=torch.float64))
    torch.testing.assert_close(v @ torch.diag(evals) @ v.T, s)
    assert bool((evals[1:] >= evals[:-1]).all())
    # deterministic signs: the same matrix, or the same matrix computed in another order, gives the same V
    torch.testing.assert_close(sorted_eigh(s.flip(0).flip(1))[1].flip(0), v)
    pivots = v.abs().argmax(dim=0)  # (the sign rule: each column's largest-magnitude entry is positive)
    assert bool((v[pivots, torch.arange(6)] > 0).all())
    # a scatter summed in floating point may not be exactly symmetric: its symmetric part is decomposed, whichever
    # triangle holds the error (torch's eigh reads the lower one alone)
    skew = torch.triu(torch.full((6, 6), 1e-3, dtype=torch.float64), diagonal=1)
    for noisy in (s + skew - skew.T, s - skew + skew.T):
        evals_noisy, v_noisy = sorted_eigh(noisy)
        torch.testing.assert_close(evals_noisy, evals)
        torch.testing.assert_close(v_noisy, v)


def test_last_column_has_the_largest_within_class_scatter():
    """Clusters stretched along a known direction u: V[:, -1] is u, and the within-class variance of the
    rotated coordinates grows with the column index."""
    d = 5
    u = torch.tensor([1.0, 2.0, -1.0, 0.5, 1.0], dtype=torch.float64)
    u = u / u.norm()
    z, labels, _ = blobs(n_per=200, d=d, k=4, seed=1)
    g = torch.Generator().manual_seed(3)
    z = z + torch.randn(len(z), 1, generator=g, dtype=torch.float64) * 8 * u  # big spread along u
    means = torch.stack([z[labels == j].mean(0) for j in range(4)])
    evals, v = sorted_eigh(within_class_scatter(z, labels, means))
    assert abs(float(v[:, -1] @ u)) > 0.99
    rotated = (z - means[labels]) @ v
    per_coord = rotated.pow(2).sum(0)
    torch.testing.assert_close(per_coord, evals)  # within-class scatter of each rotated coordinate
    assert int(per_coord.argmax()) == d - 1
    assert bool((per_coord[1:] >= per_coord[:-1]).all())


def test_the_loss_is_computed_in_float32_under_mixed_precision():
    """In bfloat16 the rotation's rounding pulled the coordinates the loss holds fixed (found by an audit): the loss
    runs in float32 under autocast too (found by mutation: computing it under autocast had passed)."""
    g = torch.Generator().manual_seed(0)
    z, targets = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    v = torch.linalg.qr(torch.randn(5, 5, generator=g))[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = dekm_loss(z, v, targets)
    assert mixed.dtype == torch.float32 and mixed == dekm_loss(z, v, targets)


def test_targets_and_loss_move_only_the_last_coordinate():
    z, labels, means = blobs(d=4)
    z, means = z.float(), means.float()
    _, v = sorted_eigh(within_class_scatter(z, labels, means))
    v = v.float()
    y = dekm_targets(z, labels, means, v)
    rot = z @ v
    torch.testing.assert_close(y[:, :-1], rot[:, :-1])
    torch.testing.assert_close(y[:, -1], (means @ v)[labels, -1])
    # at the embedding the targets were built from, the loss is the last coordinate's error only (/ d)
    h = z.clone().requires_grad_(True)
    loss = dekm_loss(h, v, y)
    expected = ((rot[:, -1] - (means @ v)[labels, -1]) ** 2).sum() / z.shape[1]
    torch.testing.assert_close(loss, expected)
    loss.backward()
    # its gradient lies along V[:, -1]: the other rotated coordinates feel no pull
    g_rot = h.grad @ v
    assert float(g_rot[:, :-1].abs().max()) < 1e-5 * float(g_rot[:, -1].abs().max())
    # a gradient step moves every sample's last coordinate toward its centroid's
    moved = (z - 0.1 * h.grad) @ v
    target_last = (means @ v)[labels, -1]
    assert bool(((moved[:, -1] - target_last).abs() <= (rot[:, -1] - target_last).abs() + 1e-6).all())


def test_loss_is_the_batch_sum_of_per_sample_mse():
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(7, 3, generator=g), torch.randn(7, 3, generator=g)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g))
    expected = sum(float(((z[i] @ q - y[i]) ** 2).mean()) for i in range(7))
    assert math.isclose(float(dekm_loss(z, q, y)), expected, rel_tol=1e-5)


def test_matching_renames_new_clusters_and_counts_changes():
    old = torch.tensor([0, 0, 1, 1, 2, 2, 2])
    perm = torch.tensor([2, 0, 1])               # new id i is old id perm[i]
    new = torch.argsort(perm)[old]               # the same clustering under other ids
    new_centers = torch.arange(3.0).unsqueeze(1).repeat(1, 2)
    labels, centers, changed = match_to_previous(new, new_centers, old, 3)
    assert changed == 0 and torch.equal(labels, old)
    for i in range(3):  # each center follows its cluster
        torch.testing.assert_close(centers[perm[i]], new_centers[i])
    new2 = new.clone()
    new2[0] = new[2]  # one sample moves
    assert match_to_previous(new2, new_centers, old, 3)[2] == 1
    assert match_to_previous(new, new_centers, None, 3)[2] == 7  # first update: all changed
    assert match_to_previous(new, new_centers, torch.full((7,), -1), 3)[2] == 7  # (labels not set yet: -1)


# -- the eigen update callback ----------------------------------------------------------------------------
def _module_with_fixed_embedding(z: torch.Tensor, k: int) -> DEKM:
    model = DEKM(n_clusters=k, input_shape=(6,), latent_dim=z.shape[1], hidden_dims=(8,), kmeans_n_init=3)
    model.embed_all = lambda gather=True: z  # noqa: E731
    return model


def _trainer(model: DEKM) -> SimpleNamespace:
    """What the eigen update reads of a Trainer: a step, the stop flag (which the method's stop_fit sets), and where
    its values are logged; attached to ``model``."""
    model._trainer = SimpleNamespace(global_step=0, should_stop=False, callback_metrics={}, is_global_zero=True,
                                     loggers=[])
    return model._trainer


def test_eigen_update_sets_state_and_the_stopping_rule_fires():
    z, labels, _ = blobs(n_per=100, d=3, k=3)
    z = z.float()
    model = _module_with_fixed_embedding(z, 3)
    cb = EigenUpdate(every_n_steps=5, tol=0.005, n_init=3)
    trainer = _trainer(model)
    runs, run_kmeans = [], model.run_kmeans
    model.run_kmeans = lambda z, **kwargs: runs.append((kwargs["n_init"], run_kmeans(z, **kwargs))) or runs[-1][1]
    cb._update(trainer, model)  # first update: everything "changed", never stops
    assert not trainer.should_stop and cb.last_changed == len(z)
    assert model.targets.shape == (300, 3) and model.cluster_labels.shape == (300,)
    torch.testing.assert_close(model.rotation.T @ model.rotation, torch.eye(3))
    assert bool((model.eigenvalues[1:] >= model.eigenvalues[:-1]).all())
    # V and its eigenvalues are those of the scatter around the update's centers (found by mutation: eigenvalues
    # left at their initial zeros had passed)
    evals, v = sorted_eigh(within_class_scatter(z, model.cluster_labels, model.cluster_centers))
    assert bool((evals > 0).all())
    torch.testing.assert_close(model.eigenvalues, evals.float())
    torch.testing.assert_close(model.rotation, v.float())
    assert runs[0][0] == 3 and cb.next_n_init == 2 * runs[0][1].n_iter  # 2 x the iterations of the last k-means
    first_labels = model.cluster_labels.clone()
    # the same embedding again: no assignment changes -> stop
    trainer.global_step = 5
    cb._update(trainer, model)
    assert cb.last_changed == 0 and trainer.should_stop
    assert torch.equal(model.cluster_labels, first_labels)  # ids kept stable by the matching
    assert runs[1][0] == 2 * runs[0][1].n_iter and cb.next_n_init == 2 * runs[1][1].n_iter
    trainer.global_step = 6  # the stop's batch trained on: its update is the final one, no other follows
    model.clustering_started.fill_(True)
    model.keep_training_state = lambda: None
    assert not cb.finish_fit(trainer, model) and cb.updates == 2
    fresh = EigenUpdate(every_n_steps=5, tol=0.005, n_init=3)
    fresh.load_state_dict(cb.state_dict())  # a resumed fit knows the rule fired, and the next restarts
    assert (fresh.stopped, fresh.last_changed, fresh.next_n_init, fresh.updates) == (True, 0, cb.next_n_init, 2)


def test_the_fit_trains_the_loss_of_its_eigen_update_on_the_module_embedding():
    """What cluster_step trains after an EigenUpdate, recomputed from the paper's definitions on the module's own
    embedding: V's last column is the direction of largest within-class scatter of that embedding, each target
    is V^T z with its last coordinate the sample's k-means center's, and the loss is sum_i mean_j (V^T z_i - y_i)_j^2
    (found by an audit: a DEKM whose targets were V^T z, a loss of 0, passed every other test); an optimizer step
    on it lowers the within-class scatter along that direction."""
    torch.manual_seed(0)
    x = torch.cat([torch.randn(40, 6) + 3 * torch.randn(1, 6) for _ in range(3)])
    model = DEKM(n_clusters=3, input_shape=(6,), latent_dim=4, hidden_dims=(16,), kmeans_n_init=3)
    model.clustering_started.fill_(True)
    with torch.no_grad():
        z = model.embed(x)
    model.embed_all = lambda gather=True: z  # noqa: E731
    EigenUpdate(every_n_steps=5, n_init=3)._update(_trainer(model), model)
    model._trainer, model.log = None, lambda *args, **kwargs: None
    labels, centers, v = model.cluster_labels, model.cluster_centers, model.rotation
    scatter = sum((z[labels == c] - centers[c]).T @ (z[labels == c] - centers[c]) for c in range(3))
    top = torch.linalg.eigh(scatter.double()).eigenvalues[-1]
    torch.testing.assert_close(v[:, -1] @ scatter @ v[:, -1], top.float(), rtol=1e-4, atol=1e-4)
    targets = z @ v
    targets[:, -1] = (centers @ v)[labels, -1]
    index = torch.arange(0, 120, 3)
    loss = model.cluster_step({"x": x[index], "index": index})
    expected = ((z[index] @ v - targets[index]) ** 2).mean(dim=1).sum()
    assert float(expected) > 1e-5 and torch.allclose(loss, expected, rtol=1e-5)
    optimizer = torch.optim.SGD(model.autoencoder.encoder.parameters(), lr=1e-3)
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        moved = model.embed(x) @ v[:, -1]
    before = z @ v[:, -1]
    spread = lambda p: sum(((p[labels == c] - p[labels == c].mean()) ** 2).sum() for c in range(3))  # noqa: E731
    assert spread(moved) < spread(before)


def test_the_loss_is_float32_under_mixed_precision():
    """Found by an audit: under bf16 autocast the rotation's rounding pulled the coordinates the loss holds fixed,
    about 1% of the pull on the last one, and the loss itself was off by 0.4%."""
    z, labels, centers = blobs(n_per=60, d=6, k=3)
    z = z.float().requires_grad_()
    rotation = sorted_eigh(within_class_scatter(z.detach(), labels, centers.float()))[1].float()
    targets = dekm_targets(z.detach(), labels, centers.float(), rotation)
    exact = dekm_loss(z, rotation, targets)
    (grad,) = torch.autograd.grad(exact, z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = dekm_loss(z, rotation, targets)
    (grad_mixed,) = torch.autograd.grad(mixed, z)
    assert mixed.dtype == torch.float32 and torch.equal(mixed, exact) and torch.equal(grad_mixed, grad)


def test_warm_start_runs_one_k_means_from_the_previous_centers():
    """kmeans_warm_start (untested before, an audit): the first update restarts k-means++ n_init times, each
    later one runs once from the last update's centers; the DEKM setting reaches the callback."""
    z, _, _ = blobs(n_per=100, d=3, k=3)
    model = _module_with_fixed_embedding(z.float(), 3)
    calls = []
    run = model.run_kmeans

    def spy(x, init=None, n_init=None):
        calls.append((None if init is None else init.clone(), n_init))
        return run(x, init=init, n_init=n_init)

    model.run_kmeans = spy
    cb = EigenUpdate(every_n_steps=5, tol=0.005, n_init=3, warm_start=True)
    trainer = _trainer(model)
    cb._update(trainer, model)
    centers = model.cluster_centers.clone()
    trainer.global_step = 5
    cb._update(trainer, model)
    assert calls[0][0] is None and calls[0][1] == 3
    assert calls[1][1] == 1 and calls[1][0] is not None and torch.equal(calls[1][0], centers)
    assert cb.last_changed == 0 and trainer.should_stop  # from the converged centers nothing moves
    callback = DEKM(3, (8,), hidden_dims=(8,), kmeans_warm_start=True, kmeans_n_init=7,
                    kmeans_n_init_factor=3.5).configure_callbacks()[0]
    assert isinstance(callback, EigenUpdate) and callback.warm_start
    assert (callback.n_init, callback.n_init_factor) == (7, 3.5)


def test_the_final_update_never_fires_the_stopping_rule_and_is_forgotten_when_training_goes_on():
    """The update a fit's end runs (the clustering of the final embedding) changes no assignment here, yet must not
    count as the rule's stop: a fit continued to a larger budget would train no further (a mutant that let it passed
    every test). Should a training batch start after it (the fit went on after all), the schedule saved before it
    is dropped, so that a checkpoint taken later resumes from the later state."""
    z, _, _ = blobs(n_per=100, d=3, k=3)
    model = _module_with_fixed_embedding(z.float(), 3)
    model.keep_training_state = lambda: None  # (what the method keeps for a continued fit is not this test's)
    model.clustering_started.fill_(True)
    cb = EigenUpdate(every_n_steps=5, tol=0.5, n_init=3)
    trainer = _trainer(model)
    cb._update(trainer, model)
    trainer.global_step = 3  # the network moved since
    assert cb.finish_fit(trainer, model) and cb.last_changed == 0
    assert not cb.stopped and not trainer.should_stop and not model.stopping_rule_met()
    assert cb.state_dict()["before_final"]["last_step"] == 0
    cb.on_train_batch_start(trainer, model, None, 0)
    assert cb.state_dict()["before_final"] is None


@pytest.mark.parametrize("ending, final", [("max_steps", True), ("stop", True), ("deferred stop", False),
                                           ("last epoch", True), ("mid-fit", False)])
def test_the_batch_that_ends_the_fit_runs_the_final_update(ending, final):
    """After the last batch of a fit (max_steps reached, a stop Lightning honours, the last epoch's last batch) the
    final update clusters the final embedding; a stop that min_epochs defers, or any other batch, runs none (two
    mutants that ignored max_steps and stops passed every test)."""
    z, _, _ = blobs(n_per=100, d=3, k=3)
    model = _module_with_fixed_embedding(z.float(), 3)
    kept = []
    model.keep_training_state = lambda: kept.append(cb.updates)  # the method's state before the final update
    model.clustering_started.fill_(True)
    cb = EigenUpdate(every_n_steps=5, n_init=3)
    trainer = _trainer(model)
    cb._update(trainer, model)
    trainer.global_step = 3  # the network moved since
    trainer.max_steps = 3 if ending == "max_steps" else -1
    trainer.should_stop = "stop" in ending
    trainer.fit_loop = SimpleNamespace(_can_stop_early=ending != "deferred stop")
    trainer.current_epoch, trainer.max_epochs = 0, 1 if ending == "last epoch" else 5
    trainer.num_training_batches = 10
    cb.on_train_batch_end(trainer, model, None, None, 9)  # the last batch of its epoch
    assert cb.updates == 1 + final and (cb.before_final is not None) == final and kept == [1] * final
    fresh = EigenUpdate(every_n_steps=5, n_init=3)
    fresh.load_state_dict(cb.state_dict())  # a fit continued from here goes on from before the final update
    assert (fresh.updates, fresh.last_step, fresh.before_final) == (1, 0, None)


@pytest.mark.parametrize("tol, stops", [(0.005, False), (0.03, True)])
def test_stopping_rule_does_not_fire_above_tol(tol, stops):
    """The official code stops when n_change_assignment <= 0.5% of the samples: above tol it trains on, at tol
    exactly it stops."""
    z, _, _ = blobs(n_per=100, d=3, k=3)
    z = z.float()
    model = _module_with_fixed_embedding(z, 3)
    cb = EigenUpdate(every_n_steps=5, tol=tol, n_init=3)
    trainer = _trainer(model)
    cb._update(trainer, model)
    # move 3% of the samples of cluster A onto cluster B's center: 9 of 300 change (> 0.5%)
    lab = model.cluster_labels
    a = int(lab[0])
    b = int(lab[(lab != a).nonzero()[0, 0]])
    idx = (lab == a).nonzero().flatten()[:9]
    z2 = z.clone()
    z2[idx] = model.cluster_centers[b]
    model.embed_all = lambda gather=True: z2  # noqa: E731
    trainer.global_step = 5
    cb._update(trainer, model)
    assert cb.last_changed == 9 and trainer.should_stop == stops  # 9 = 0.03 x 300


def test_bad_configuration_raises_config_error():
    with pytest.raises(ConfigError, match="flatten: false"):
        DEKM(n_clusters=3, input_shape=(64,), autoencoder="conv")
    for bad in ({"tol": 1.5}, {"tol": 1.0}, {"maxiter": 0}, {"update_interval": 0}):
        with pytest.raises(ConfigError, match="DEKM needs update_interval >= 1, maxiter >= 1 and 0 <= tol < 1"):
            DEKM(n_clusters=3, input_shape=(64,), **bad)
    with pytest.raises(ConfigError, match="weight_init"):
        DEKM(n_clusters=3, input_shape=(64,), weight_init="he")
    for tol in (1.0, -0.1):
        with pytest.raises(ValueError, match=rf"tol must be in \[0, 1\), got {tol}"):
            EigenUpdate(every_n_steps=5, tol=tol)
    for restarts in ({"n_init": 0}, {"n_init_factor": 0.0}):
        with pytest.raises(ValueError, match="n_init must be >= 1 and n_init_factor > 0"):
            EigenUpdate(every_n_steps=5, **restarts)
    z, labels = torch.randn(6, 3), torch.tensor([0, 0, 1, 1, 2, 2])
    with pytest.raises(ValueError, match=r"z \(N, d\) and centers \(K, d\) must agree, got \(6, 3\) and \(3, 2\)"):
        within_class_scatter(z, labels, torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"labels must have shape \(6,\), got \(5,\)"):
        within_class_scatter(z, labels[:5], torch.zeros(3, 3))
    with pytest.raises(ValueError, match=r"s must be a square matrix, got shape \(3, 2\)"):
        sorted_eigh(torch.zeros(3, 2))
    with pytest.raises(ConfigError, match="autoencoder must be 'conv', 'mlp' or 'auto', got 'resnet'"):
        DEKM(n_clusters=3, input_shape=(64,), autoencoder="resnet")
    for bad in ({"kmeans_n_init": 0}, {"kmeans_n_init_factor": 0.0}):
        with pytest.raises(ConfigError, match="kmeans_n_init must be >= 1 and kmeans_n_init_factor > 0"):
            DEKM(n_clusters=3, input_shape=(64,), **bad)


def test_defaults_follow_the_official_code():
    conv = DEKM(n_clusters=10, input_shape=(1, 28, 28))
    dense = DEKM(n_clusters=10, input_shape=(784,))
    assert conv.autoencoder_kind == "conv" and conv.update_interval == 40
    assert dense.autoencoder_kind == "mlp" and dense.update_interval == 10
    # auto: the conv network for square images of 12 x 12 and up, the dense one for any other shape
    for shape, kind in (((1, 12, 12), "conv"), ((1, 11, 11), "mlp"), ((1, 12, 16), "mlp"), ((3, 32, 32), "conv")):
        assert DEKM(n_clusters=3, input_shape=shape, hidden_dims=(8,)).autoencoder_kind == kind, shape
    assert conv.maxiter == 14000 and conv.tol == 0.005 and conv.kmeans_n_init == 100
    w = conv.autoencoder.encoder[0].weight.detach()
    assert float(w.abs().max()) <= 0.05  # Keras 'uniform' on the encoder convs
    # and Keras' glorot on the conv network's other layers: its dense code layer and the decoder's last transposed
    # conv (bounds 0.072 and 0.085); the dense network has 'uniform' on every layer, the decoder's too
    bound = lambda m: float(m.weight.detach().abs().max())  # noqa: E731
    assert bound(conv.autoencoder.encoder[7]) > 0.05 and bound(conv.autoencoder.decoder[7]) > 0.05
    assert all(bound(m) <= 0.05 for m in dense.autoencoder.modules() if isinstance(m, torch.nn.Linear))
    # the clustering optimizer holds the encoder only (the decoder is dropped)
    conv.clustering_started.fill_(True)
    opt = conv.configure_optimizers()
    held = {id(p) for group in opt.param_groups for p in group["params"]}
    assert held == {id(p) for p in conv.autoencoder.encoder.parameters()}
    assert type(opt) is torch.optim.Adam and opt.defaults["lr"] == 1e-3 and opt.defaults["eps"] == 1e-7  # Keras'
    # the stopping rule's tolerance is the method's
    assert DEKM(n_clusters=3, input_shape=(64,), tol=0.1).configure_callbacks()[0].tol == 0.1


# -- DDP: the 2-process gradient is the 1-process gradient of the global batch --------------------------------
def _dekm_for_gradients() -> DEKM:
    """A DEKM in its clustering phase with a fixed rotation and frozen targets for 16 samples."""
    torch.manual_seed(0)
    model = DEKM(n_clusters=3, input_shape=(6,), latent_dim=4, hidden_dims=(8,), kmeans_n_init=1)
    model.clustering_started.fill_(True)
    g = torch.Generator().manual_seed(2)
    model.rotation.copy_(torch.linalg.qr(torch.randn(4, 4, generator=g))[0])
    model.targets = torch.randn(16, 4, generator=g)
    return model


def _dekm_gradient(index: torch.Tensor) -> torch.Tensor:
    model = _dekm_for_gradients()
    x = torch.rand(16, 6, generator=torch.Generator().manual_seed(1))[index]
    model.cluster_step({"x": x, "y": torch.full((len(x),), -1), "index": index}).backward()
    return flat_grad(model)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")
def test_two_process_gradient_equals_the_global_batch_gradient(tmp_path):
    """The loss is summed over the batch as in the paper, and scaled by the world size under DDP, so that the ranks'
    averaged gradient is that of the global batch (found by mutation: the unscaled loss passed the DDP fit test,
    whose Adam hardly sees a gradient's scale)."""
    single = _dekm_gradient(torch.arange(16))
    assert single.abs().max() > 0
    torch.testing.assert_close(ddp_mean_gradient(_dekm_gradient, 16, tmp_path), single)


# -- end to end -------------------------------------------------------------------------------------------
def _ckpts(folder: Path) -> dict[int, Path]:
    """Checkpoints ``epoch=E-step=S.ckpt`` of a run by epoch."""
    return {int(p.name.split("-")[0].split("=")[1]): p for p in folder.rglob("epoch=*.ckpt")}


def test_cli_fit_on_digits_stops_by_the_rule_and_resumes_exactly(tmp_path: Path):
    """A tiny fit through the CLI: sane scores, training ended by the assignment-change rule right at an eigen
    update; then a run resumed from a mid-run checkpoint ends in exactly the same state (V, targets, centers),
    and V / targets survive the checkpoint round trip into a fresh module."""
    args = ["fit", "--config", str(Path(__file__).parents[1] / "configs/dekm/digits.yaml"), *FAST,
            "--trainer.max_epochs", "40", "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
            "--trainer.callbacks.save_top_k=-1", "--trainer.callbacks.save_on_train_epoch_end=true"]
    (tmp_path / "a").mkdir()
    scores = run_cli(args, tmp_path / "a")
    assert scores["k"] == 10 and scores["k_used"] >= 8
    assert 0.4 < scores["acc"] <= 1 and 0.35 < scores["nmi"] <= 1  # AE + k-means alone: ~0.5-0.6 here
    runs_a = _ckpts(tmp_path / "a")
    last_epoch = max(runs_a)
    end_a = torch.load(runs_a[last_epoch], weights_only=False)
    steps = int(end_a["state_dict"]["cluster_steps"])
    # stopped by the rule: at an update (a multiple of update_interval), long before max_epochs
    assert steps > 0 and steps % 10 == 0 and last_epoch < 39
    eigen = next(v for k, v in end_a["callbacks"].items() if k.startswith("EigenUpdate"))
    assert 0 <= eigen["last_changed"] <= 0.02 * 1797 and eigen["updates"] == steps // 10 + 1 and eigen["stopped"]
    sa = end_a["state_dict"]
    v = sa["rotation"]
    torch.testing.assert_close(v.T @ v, torch.eye(10), atol=1e-5, rtol=0)
    assert sa["targets"].shape == (1797, 10) and sa["cluster_labels"].shape == (1797,)

    mid_epoch = 4  # pretraining is epochs 0-3: the end of the first clustering epoch
    assert mid_epoch < last_epoch
    mid = runs_a[mid_epoch]
    (tmp_path / "b").mkdir()
    run_cli([*args, "--ckpt_path", str(mid)], tmp_path / "b")
    runs_b = _ckpts(tmp_path / "b")
    assert min(runs_b) == mid_epoch + 1 and max(runs_b) == last_epoch  # it resumed: no epoch before the checkpoint
    sb = torch.load(runs_b[last_epoch], weights_only=False)["state_dict"]
    assert int(sb["cluster_steps"]) == steps
    for name in ("rotation", "eigenvalues", "targets", "cluster_centers", "cluster_labels"):
        torch.testing.assert_close(sa[name], sb[name], msg=name)

    model = DEKM.load_from_checkpoint(mid, weights_only=False)
    state = torch.load(mid, weights_only=False)["state_dict"]
    for name in ("rotation", "targets", "cluster_centers", "cluster_labels"):
        torch.testing.assert_close(getattr(model, name), state[name])


def test_a_fit_stopped_by_early_stopping_ends_with_the_final_update_in_its_last_checkpoint(tmp_path: Path):
    """Found by probing with Trainer flags: EarlyStopping decides after the last batch's hook, where the final
    eigen update was decided, so such a fit ended with the clusters of the update before, unlike the same steps
    ended by max_epochs; and last.ckpt, saved at a validation before the stop, lagged the fit's end."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from dcl.datamodules.digits import Digits

    def fit(max_epochs: int, *callbacks, folder: str = "") -> tuple[pl.Trainer, DEKM]:
        pl.seed_everything(0)
        model = DEKM(10, (64,), autoencoder="mlp", hidden_dims=[32], pretrain_epochs=1, update_interval=5,
                     tol=0.0, kmeans_n_init=2)
        trainer = pl.Trainer(max_epochs=max_epochs, callbacks=list(callbacks), logger=False,
                             enable_checkpointing=bool(folder), enable_progress_bar=False, enable_model_summary=False,
                             num_sanity_val_steps=0, default_root_dir=tmp_path / (folder or "none"))
        trainer.fit(model, Digits(batch_size=256))
        return trainer, model

    # val/acc never improves by 1: the fit stops after patience + 1 validated epochs, 2 steps after an update
    stopper = EarlyStopping(monitor="val/acc", patience=1, min_delta=1.0, mode="max")
    last = ModelCheckpoint(save_last=True, every_n_epochs=10)  # (saves at the validation before the stop)
    stopped_trainer, stopped = fit(10, stopper, last, folder="stopped")
    epochs = stopped_trainer.current_epoch
    assert epochs < 10 and stopped_trainer.global_step % 5 != 0
    _, ended = fit(epochs)  # the same steps, ended by max_epochs
    expected = ended.state_dict()
    for name, value in stopped.state_dict().items():
        assert torch.equal(value, expected[name]), name
    saved = torch.load(tmp_path / "stopped" / "checkpoints" / "last.ckpt", weights_only=False)
    assert saved["global_step"] == stopped_trainer.global_step
    for name in ("cluster_centers", "rotation", "targets"):
        assert torch.equal(saved["state_dict"][name], expected[name]), name


def test_maxiter_counts_optimizer_steps_under_gradient_accumulation(tmp_path: Path):
    """Found by a user: under accumulate_grad_batches 2, maxiter counted batches while update_interval counted
    optimizer steps, so a fit stopped after half its iterations (and inside an accumulation)."""
    import lightning.pytorch as pl

    from dcl.datamodules.digits import Digits

    calls = []

    class Recording(DEKM):
        def set_eigen_state(self, *args):
            calls.append(self.trainer.global_step)
            super().set_eigen_state(*args)

    model = Recording(10, (64,), autoencoder="mlp", hidden_dims=[32], pretrain_epochs=1, update_interval=2,
                      maxiter=3, tol=0.0, kmeans_n_init=2)
    trainer = pl.Trainer(max_epochs=5, accumulate_grad_batches=2, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                         num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(model, Digits(batch_size=256))  # 8 batches an epoch: 4 optimizer steps
    assert trainer.global_step == 4 + 3 and int(model.cluster_steps) == 3 and calls[:2] == [4, 6]


def test_a_stop_deferred_by_min_epochs_changes_nothing_until_the_fit_ends(tmp_path: Path):
    """Found by probing: an EarlyStopping stop while the Trainer's min_epochs still held (Lightning leaves
    should_stop set and trains on) made the eigen update run after every step until the fit ended: 13 updates
    instead of 4, another result. Now the fit is the one that max_epochs ends at the same step."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import EarlyStopping

    from dcl.datamodules.digits import Digits

    def fit(**trainer_args) -> tuple[pl.Trainer, DEKM]:
        pl.seed_everything(0)
        model = DEKM(10, (64,), autoencoder="mlp", hidden_dims=[32], pretrain_epochs=1, update_interval=5,
                     tol=0.0, kmeans_n_init=2)
        trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, num_sanity_val_steps=0, **trainer_args)
        trainer.fit(model, Digits(batch_size=256))
        return trainer, model

    # val/acc never improves by 1: a stop is requested at the second validation, in the clustering phase's first
    # epoch, and min_epochs defers it to the end of epoch 4
    stopper = EarlyStopping(monitor="val/acc", patience=0, min_delta=1.0, mode="max")
    deferred_trainer, deferred = fit(max_epochs=10, min_epochs=4, callbacks=[stopper])
    assert deferred_trainer.current_epoch == 4  # min_epochs held the requested stop back
    ended_trainer, ended = fit(max_epochs=4)
    assert deferred_trainer.global_step == ended_trainer.global_step
    updates = [next(c for c in t.callbacks if isinstance(c, EigenUpdate)).updates
               for t in (deferred_trainer, ended_trainer)]
    assert updates[0] == updates[1]
    expected = ended.state_dict()
    for name, value in deferred.state_dict().items():
        assert torch.equal(value, expected[name]), name


@pytest.mark.parametrize("stop_after_epoch, steps", [(None, [8, 13, 18, 23, 28, 31]), (2, [8, 13, 18, 23, 24])])
def test_every_eigen_update_is_logged_once_at_its_step(tmp_path: Path, stop_after_epoch, steps):
    """Found by a user: train/label_change and train/kmeans_inertia were logged with self.log from the update's
    hook, so they reached the loggers only when a log_every_n_steps step fell between the update and the epoch's
    end (4 of ~20 updates in metrics.csv), and the final update of a fit stopped after the epoch's hooks
    (EarlyStopping; here a callback's stop) was not logged at all. Updates: every 5 steps from step 8 (1
    pretraining epoch of 8 batches), then the final one (after the last batch, or when the stopped fit ends)."""
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import CSVLogger

    from conftest import logged_rows
    from dcl.datamodules.digits import Digits

    class StopAfter(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            trainer.should_stop = trainer.current_epoch == stop_after_epoch

    pl.seed_everything(0)
    model = DEKM(10, (64,), autoencoder="mlp", hidden_dims=[32], pretrain_epochs=1, update_interval=5, tol=0.0,
                 kmeans_n_init=2)
    logger = CSVLogger(tmp_path, name="run")
    trainer = pl.Trainer(max_epochs=4, logger=logger, log_every_n_steps=50, callbacks=[StopAfter()],
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(model, Digits(batch_size=256))
    (update,) = [cb for cb in trainer.callbacks if isinstance(cb, EigenUpdate)]
    assert update.updates == len(steps)
    for key in ("train/label_change", "train/kmeans_inertia"):
        assert [int(row["step"]) for row in logged_rows(logger, key)] == steps, key
