"""DEC and IDEC: the losses alone, then both phases in one fit, the periodic target update and its stopping rule."""

from __future__ import annotations

import math
import warnings
from types import SimpleNamespace

import pytest
import torch

from conftest import REPO, ddp_mean_gradient, flat_grad, free_port, gloo_group, logged_rows, run_cli
from dcl.methods.dec import DEC, kl_clustering_loss, target_distribution
from dcl.methods.idec import IDEC
from dcl.method import ConfigError, student_t_assign

FAST = ["--model.init_args.hidden_dims", "[64, 64]", "--model.init_args.pretrain_epochs", "15",
        "--model.init_args.update_interval", "5", "--model.init_args.kmeans_n_init", "3",
        "--trainer.max_epochs", "20", "--trainer.check_val_every_n_epoch", "5"]


def test_student_t_assignment_is_a_distribution_and_peaks_at_the_nearest_center():
    z, mu = torch.randn(50, 4), torch.randn(6, 4)
    q = student_t_assign(z, mu)
    assert torch.allclose(q.sum(1), torch.ones(50))
    assert torch.equal(q.argmax(1), torch.cdist(z, mu).argmin(1))
    # eq. 1 of the paper, written out for one entry
    d2 = ((z[0] - mu) ** 2).sum(1)
    expected = (1 + d2) ** -1 / ((1 + d2) ** -1).sum()
    assert torch.allclose(q[0], expected)


@pytest.mark.parametrize("alpha", [0.5, 2.0, 5.0])
def test_student_t_assignment_is_eq1_for_any_degrees_of_freedom(alpha):
    """Eq. 1 with alpha != 1, written out: at alpha = 1 a kernel that dropped alpha from the exponent or the
    distance scale gives the same numbers, so the test above alone would not see it."""
    g = torch.Generator().manual_seed(1)
    z, mu = torch.randn(30, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g, dtype=torch.float64)
    q = student_t_assign(z, mu, alpha)
    for i in (0, 7, 29):
        kernel = (1 + ((z[i] - mu) ** 2).sum(1) / alpha) ** (-(alpha + 1) / 2)
        torch.testing.assert_close(q[i], kernel / kernel.sum())
    assert not torch.allclose(q, student_t_assign(z, mu, 1.0))  # alpha matters


def test_dec_assigns_with_its_own_degrees_of_freedom():
    """An audit: only the function was tested with alpha != 1, not the setting reaching DEC's assignment."""
    torch.manual_seed(0)
    z = torch.randn(20, 10)
    for cls in (DEC, IDEC):
        model = cls(4, (64,), hidden_dims=[16], alpha=3.0)
        model.cluster_centers.data.normal_()
        torch.testing.assert_close(model.assign(z), student_t_assign(z, model.cluster_centers, 3.0))
        assert not torch.allclose(model.assign(z), student_t_assign(z, model.cluster_centers, 1.0))


def test_target_distribution_sharpens_and_normalizes_by_frequency():
    q = torch.softmax(torch.randn(100, 5), dim=1)
    p = target_distribution(q)
    assert torch.allclose(p.sum(1), torch.ones(100))
    # with equally frequent clusters, p keeps each row's argmax and is more confident
    base = torch.softmax(torch.randn(5), 0)
    balanced = torch.stack([base.roll(i) for i in range(5)] * 4)
    sharp = target_distribution(balanced)
    assert torch.equal(sharp.argmax(1), balanced.argmax(1))
    assert (sharp.max(1).values > balanced.max(1).values).all()
    # a frequent cluster is down-weighted: the same row's target moves away from it
    crowded = torch.cat([torch.tensor([[0.9, 0.1]]).repeat(9, 1), torch.tensor([[0.5, 0.5]])])
    assert target_distribution(crowded)[-1, 1] > 0.5
    # eq. 3 by hand for one row
    f = q.sum(0)
    w = q[3] ** 2 / f
    assert torch.allclose(p[3], w / w.sum())


def test_kl_is_kl_p_q_summed_over_clusters_and_averaged_over_samples():
    """The value of eq. 2 (KL(P || Q), not KL(Q || P)), per sample summed over clusters, then the batch mean
    (Keras' kld, which DEC-keras and IDEC minimize): zero at P = Q, positivity and descent hold for either
    direction and either reduction, so they are checked here against the formula itself."""
    g = torch.Generator().manual_seed(2)
    q = torch.softmax(torch.randn(12, 5, generator=g, dtype=torch.float64), 1)
    p = target_distribution(q)
    by_hand = sum(sum(p[i, j] * math.log(p[i, j] / q[i, j]) for j in range(5)) for i in range(12)) / 12
    assert float(kl_clustering_loss(p, q)) == pytest.approx(float(by_hand), rel=1e-10)
    reverse = sum(sum(q[i, j] * math.log(q[i, j] / p[i, j]) for j in range(5)) for i in range(12)) / 12
    assert abs(float(by_hand) - float(reverse)) > 1e-3  # the two directions differ on this problem


def test_kl_is_zero_at_p_equals_q_and_positive_otherwise():
    q = torch.softmax(torch.randn(20, 4), dim=1)
    assert float(kl_clustering_loss(q, q)) == pytest.approx(0.0, abs=1e-6)
    p = target_distribution(q)
    assert float(kl_clustering_loss(p, q)) > 0
    # the gradient moves q toward p
    logits = torch.randn(20, 4, requires_grad=True)
    loss = kl_clustering_loss(p, torch.softmax(logits, 1))
    loss.backward()
    stepped = torch.softmax(logits - 0.5 * logits.grad, 1)
    assert float(kl_clustering_loss(p, stepped)) < float(loss)


@pytest.mark.parametrize("method", ["dec", "idec"])
def test_fit_on_digits_from_the_cli(tmp_path, method):
    scores = run_cli(["fit", "--config", str(REPO / f"configs/{method}/digits.yaml"), *FAST], tmp_path)
    assert scores["k"] == 10 and scores["acc"] > 0.5 and scores["nmi"] > 0.4


def _fit_recording_updates(cls, tmp_path, max_epochs: int, trainer_args: dict | None = None, **kwargs):
    """Fit a small ``cls`` on Digits (1 pretraining epoch of 8 steps, update_interval 3), recording each
    update_clusters call as (global step, first); returns the model, the trainer, the calls and the data."""
    from dcl.datamodules.digits import Digits
    import lightning.pytorch as pl

    calls = []

    class Recording(cls):
        def update_clusters(self, z, first):
            calls.append((self.trainer.global_step, first))
            super().update_clusters(z, first)

    dm = Digits(batch_size=256)
    model = Recording(10, dm.input_shape, hidden_dims=[32], pretrain_epochs=1, update_interval=3, kmeans_n_init=2,
                      **kwargs)
    trainer = pl.Trainer(**{"logger": False, **(trainer_args or {})}, max_epochs=max_epochs, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                         num_sanity_val_steps=0)
    trainer.fit(model, dm)
    return model, trainer, calls, dm


@pytest.mark.parametrize("log_every_n_steps", [50, 2])
def test_every_target_update_is_logged_once_at_its_step(tmp_path, log_every_n_steps):
    """Found by a user: train/label_change, DEC's stopping criterion, was logged with self.log from the update's
    hook (on_train_batch_start), so it reached the loggers only when a log_every_n_steps step fell between the
    update and the epoch's end (1 row in metrics.csv for 9 updates), and the rows written were the same update's
    value repeated at every logged step until the next update."""
    from lightning.pytorch.loggers import CSVLogger

    logger = CSVLogger(tmp_path, name="run")
    logging = {"logger": logger, "log_every_n_steps": log_every_n_steps}
    _, trainer, calls, _ = _fit_recording_updates(DEC, tmp_path, 6, tol=0.0, trainer_args=logging)
    rows = logged_rows(logger, "train/label_change")
    assert len(calls) >= 10
    assert [int(row["step"]) for row in rows] == [step for step, _ in calls]  # one row an update, at its step
    # and the latest is among the metrics a callback monitors (EarlyStopping, ModelCheckpoint), as self.log's were
    assert float(trainer.callback_metrics["train/label_change"]) == float(rows[-1]["train/label_change"])


def test_train_loss_is_the_loss_each_step_returns_under_gradient_accumulation(tmp_path):
    """Found by users: there was no common train/loss (DEC logged train/recon, then train/kl), so no one
    ModelCheckpoint / EarlyStopping could monitor the training loss of every method. Every step's returned loss is
    train/loss now, in both phases, logged in the step (a callback reads that batch's value); under
    accumulate_grad_batches the loss itself, not the share Lightning back-propagates (the loss divided by 2)."""
    import lightning.pytorch as pl
    from dcl.datamodules.digits import Digits

    returned, logged = [], []

    class Recording(DEC):
        def pretrain_step(self, batch):
            loss = super().pretrain_step(batch)
            returned.append(float(loss.detach()))
            return loss

        def cluster_step(self, batch):
            loss = super().cluster_step(batch)
            returned.append(float(loss.detach()))
            return loss

    class ReadsTheLoss(pl.Callback):
        def on_train_batch_end(self, trainer, *args):
            logged.append(float(trainer.callback_metrics["train/loss"]))

    dm = Digits(batch_size=256)
    model = Recording(10, dm.input_shape, hidden_dims=[32], pretrain_epochs=1, update_interval=3, kmeans_n_init=2,
                      tol=0.0)
    trainer = pl.Trainer(max_epochs=2, accumulate_grad_batches=2, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                         num_sanity_val_steps=0, limit_val_batches=0, callbacks=[ReadsTheLoss()])
    trainer.fit(model, dm)
    assert model.clustering_active and len(returned) == 16 and trainer.global_step == 8
    assert logged == returned


def test_the_progress_bar_shows_train_loss_and_nothing_of_a_finished_phase(tmp_path):
    """Found by users: DEC logged train/recon with prog_bar=True in its pretraining and only train/kl afterwards, and
    Lightning kept the last pretraining train/recon on the progress bar for the rest of the fit (every two-phase
    method did the same with its terms). The bar holds train/loss, the loss of the current step; the terms are
    logged under their names, off the bar."""
    model, trainer, _, _ = _fit_recording_updates(DEC, tmp_path, 2, tol=0.0)
    assert model.clustering_active
    assert "train/recon" not in trainer.progress_bar_metrics
    assert set(trainer.progress_bar_metrics) == {"train/loss"}
    assert trainer.progress_bar_metrics["train/loss"] == float(trainer.callback_metrics["train/kl"])  # DEC's loss
    assert {"train/recon", "train/kl"} <= set(trainer.callback_metrics)  # still logged, by their names


def test_a_fit_that_ends_within_the_pretraining_says_so(tmp_path):
    expected = r"max_epochs 1 ends within the 1 epochs of autoencoder pretraining: \w+'s clustering phase will not run"
    with pytest.warns(UserWarning, match=expected):
        model, *_ = _fit_recording_updates(DEC, tmp_path, max_epochs=1)
    assert not model.clustering_active
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*ends within the")
        model, *_ = _fit_recording_updates(DEC, tmp_path, max_epochs=2)
    assert model.clustering_active


def assert_k_means_of_its_code(model, dm) -> torch.Tensor:
    """Assert that ``model``'s centers are k-means of its code of every sample of ``dm`` (not zeros, and Lloyd's
    iterations from them move them no more); returns that code."""
    from dcl.cluster import kmeans

    with torch.no_grad():
        z = model.embed(dm.batch_transform(dm.x))
    centers = model.cluster_centers.detach()
    assert centers.any() and torch.allclose(kmeans(z, len(centers), init_centers=centers).centers, centers, atol=1e-4)
    return z


def test_the_checkpoint_at_the_end_of_pretraining_holds_ae_plus_k_means_centers(tmp_path):
    """The epoch that ends the pretraining refreshes the centers (k-means of its code), so that its checkpoint holds
    the AE + k-means clustering, as the pretraining's validations and a fit that ends there do: not the zeros of an
    untrained clustering, where no validation fell at that epoch."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint

    from dcl.datamodules.digits import Digits

    dm = Digits(batch_size=256)
    every = ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, every_n_epochs=1, save_on_train_epoch_end=True)
    pl.Trainer(max_epochs=2, check_val_every_n_epoch=10, logger=False, enable_progress_bar=False,
               enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0, callbacks=[every]).fit(
        DEC(10, dm.input_shape, hidden_dims=[32], pretrain_epochs=1, kmeans_n_init=2), dm)
    pretrained = DEC.load_from_checkpoint(next(tmp_path.glob("epoch=0-*.ckpt")))
    assert not pretrained.clustering_active
    z = assert_k_means_of_its_code(pretrained, dm)
    assert len(pretrained.predict_clusters(z).unique()) == 10


@pytest.mark.parametrize("early_stopping", [False, True])
def test_the_final_clusters_are_computed_once_when_the_fit_ends(tmp_path, monkeypatch, early_stopping):
    """AE + k-means's clusters are k-means of the final embedding: computed once, when the fit ends (not at every
    epoch's end), in time for the last epoch's checkpoint; and also when an EarlyStopping ends the fit, which decides
    after the epoch's hooks (then ``save_last`` is saved again with them)."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    import dcl.method
    from dcl.cluster import kmeans
    from dcl.datamodules.digits import Digits
    from dcl.methods.ae_kmeans import AEKMeans

    calls = []
    monkeypatch.setattr(dcl.method, "kmeans", lambda *args, **kwargs: calls.append(1) or kmeans(*args, **kwargs))
    dm = Digits(batch_size=256)
    every = ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, every_n_epochs=1, save_on_train_epoch_end=True,
                            save_last=True)
    # the training loss falls: mode max stops the fit after its second epoch
    falls = EarlyStopping("train/loss", mode="max", patience=0, check_on_train_epoch_end=True)
    stop = [falls] if early_stopping else []
    model = AEKMeans(10, dm.input_shape, hidden_dims=[32], kmeans_n_init=2)
    trainer = pl.Trainer(max_epochs=3, check_val_every_n_epoch=10, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0,
                         callbacks=[every, *stop])
    trainer.fit(model, dm)
    assert trainer.current_epoch == (2 if early_stopping else 3) and len(calls) == 1
    assert_k_means_of_its_code(model, dm)
    centers = model.cluster_centers.detach()
    files = ["last.ckpt"] + ([] if early_stopping else ["epoch=2-step=24.ckpt"])  # (EarlyStopping: after the save)
    for name in files:
        saved = torch.load(tmp_path / name, weights_only=False)["state_dict"]["cluster_centers"]
        assert torch.equal(saved, centers), name


@pytest.mark.parametrize("stop", ["max_steps", "should_stop"])
def test_a_fit_stopped_inside_an_epoch_ends_with_k_means_on_the_final_code(tmp_path, stop):
    """Found by an audit: a fit ended by max_steps or a stop request (a time limit) inside an epoch of the
    pretraining kept the centers of before (zeros: every sample in one cluster, in the final scores and the
    checkpoint), since only the last of max_epochs refreshed them."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint

    from dcl.datamodules.digits import Digits
    from dcl.methods.ae_kmeans import AEKMeans

    class StopAfterThreeSteps(pl.Callback):
        def on_train_batch_end(self, trainer, *args):
            trainer.should_stop = trainer.global_step >= 3

    dm = Digits(batch_size=256)
    for model in (AEKMeans(10, dm.input_shape, hidden_dims=[32], kmeans_n_init=2),
                  DEC(10, dm.input_shape, hidden_dims=[32], pretrain_epochs=5, kmeans_n_init=2)):
        stopping = dict(max_steps=3) if stop == "max_steps" else dict(callbacks=[StopAfterThreeSteps()])
        trainer = pl.Trainer(max_epochs=20, check_val_every_n_epoch=10, logger=False, enable_progress_bar=False,
                             enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0,
                             callbacks=[ModelCheckpoint(dirpath=tmp_path / stop, save_last=True),
                                        *stopping.pop("callbacks", [])], **stopping)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.fit(model, dm)
        assert trainer.global_step == 3 and not model.clustering_active
        assert len(model.predict_clusters(model.embed_all()).unique()) == 10
        saved = torch.load(tmp_path / stop / "last.ckpt", weights_only=False)["state_dict"]["cluster_centers"]
        assert torch.equal(saved, model.cluster_centers)
        (tmp_path / stop / "last.ckpt").unlink()


def test_the_model_checkpoint_members_dcl_uses_exist():
    """The test above needs last.ckpt saved again at the fit's end, which dcl.method does through ModelCheckpoint's
    private members (Lightning has no public API for it): a Lightning release that renames one, or changes what it
    takes, fails here by name, not in some fit's end; and they are used in dcl/method.py only (benchmarks/ too:
    its resume checkpoint saves through Lightning's public trainer.save_checkpoint)."""
    import inspect

    from lightning.pytorch.callbacks import ModelCheckpoint

    from dcl.method import MODEL_CHECKPOINT_PRIVATES

    # a member's parameters (after self), or the type of an attribute set in __init__
    expected = {"_last_global_step_saved": int, "_monitor_candidates": ["trainer"],
                "_save_last_checkpoint": ["trainer", "monitor_candidates"]}
    assert set(MODEL_CHECKPOINT_PRIVATES) == set(expected)
    callback = ModelCheckpoint()
    for name, wanted in expected.items():
        assert hasattr(callback, name), f"Lightning's ModelCheckpoint has no {name}: update dcl.method's uses of it"
        member = getattr(callback, name)
        found = type(member) if isinstance(wanted, type) else list(inspect.signature(member).parameters)
        assert found == wanted, f"Lightning's ModelCheckpoint.{name} changed: {found}, dcl.method expects {wanted}"
    users = {str(path.relative_to(REPO)) for folder in ("dcl", "methods", "datamodules", "benchmarks")
             for path in (REPO / folder).rglob("*.py")
             if any(f".{name}" in path.read_text() for name in (*MODEL_CHECKPOINT_PRIVATES, "_save_topk_checkpoint"))}
    assert users == {"dcl/method.py"}, users


def test_an_autoencoder_that_has_not_learned_the_data_is_named_when_pretraining_ends(tmp_path):
    """DEKM's official init keeps its autoencoder on the plateau of outputting the data's mean for its first ~25
    epochs on Digits, and clustering that code ended near chance (ACC 0.17) without a word. At the end of
    pretraining the reconstruction's R^2 is logged and, under 5%, a warning names the problem."""
    from functools import partial

    import lightning.pytorch as pl
    from dcl.datamodules.digits import Digits
    from dcl.methods.ae_kmeans import AEKMeans
    from dcl.methods.dekm import DEKM

    def fit(model, epochs):
        trainer = pl.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0,
                             limit_val_batches=0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.fit(model, dm)
        said = [str(w.message) for w in caught if "than their mean" in str(w.message)]
        return float(trainer.callback_metrics["train/recon_explained"]), said

    dm = Digits(batch_size=256)
    pl.seed_everything(0)
    # at the switch to clustering: DEKM's official init on a narrower network, still on the plateau
    model = DEKM(10, dm.input_shape, autoencoder="mlp", hidden_dims=[64, 64, 128], pretrain_epochs=10,
                 kmeans_n_init=2)
    explained, said = fit(model, 11)
    assert 0 <= explained < 0.05 and model.clustering_active  # 1.8% on 3 seeds
    assert len(said) == 1 and said[0].startswith(
        "after 10 epochs of training, DEKM's autoencoder reconstructs the data hardly better than their mean does "
        f"(it explains {explained:.1%} of their variance)")
    assert "raise pretrain_epochs" in said[0]
    # at the end of a fit without a clustering phase: one still worse than the mean, after 8 steps
    model = AEKMeans(10, dm.input_shape, hidden_dims=[64], kmeans_n_init=2)
    explained, said = fit(model, 1)
    assert explained < 0 and len(said) == 1 and said[0].startswith("after 1 epoch of training, AEKMeans's")
    assert f"worse than their mean does (its squared error is {1 - explained:.2f} x their variance)" in said[0]
    assert "raise max_epochs or the learning rate" in said[0]  # AEKMeans has no pretrain_epochs (a user's pass)

    # one that learned: no warning; the value is 1 - SSE / SST
    fast = partial(torch.optim.Adam, lr=1e-2)
    model = AEKMeans(10, dm.input_shape, hidden_dims=[64], kmeans_n_init=2, optimizer=fast)
    explained, said = fit(model, 5)
    assert explained > 0.3 and not said
    x = dm.batch_transform(dm.x).double()
    with torch.no_grad():
        x_hat = model.eval().autoencoder(x.float())[1].double()
    expected = float(1 - (x_hat - x).square().sum() / (x - x.mean(0)).square().sum())  # 1 - SSE / SST, in one go
    assert model.reconstruction_explained() == pytest.approx(expected, abs=1e-6)  # batch by batch
    assert explained == pytest.approx(expected, abs=1e-5)


def test_the_reconstruction_check_reads_a_fixed_subset_of_a_large_data_set(tmp_path, monkeypatch):
    """The check at the end of pretraining passed the whole autoencoder over every sample: 33.6 of 91 s of a fit of
    1,000,000 samples with the papers' network. Beyond ``recon_check_samples`` it reads that many, drawn with a fixed
    seed; under DDP each rank reads its shard of them and the sums are all-reduced, to the value of one process."""
    from functools import partial

    import lightning.pytorch as pl
    import dcl.datamodule
    import dcl.method
    from dcl.datamodules.digits import Digits
    from dcl.methods.ae_kmeans import AEKMeans

    dm = Digits(batch_size=256)  # 1797 samples
    pl.seed_everything(0)
    model = AEKMeans(10, dm.input_shape, hidden_dims=[64], kmeans_n_init=2,
                     optimizer=partial(torch.optim.Adam, lr=1e-2))
    model.recon_check_samples = 500
    trainer = pl.Trainer(max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path, limit_val_batches=0)
    trainer.fit(model, dm)
    rows = []
    model.autoencoder.register_forward_hook(lambda module, args, out: rows.append(len(args[0])))
    explained = model.reconstruction_explained()
    assert sum(rows) == 500  # (all 1797 before)
    assert float(trainer.callback_metrics["train/recon_explained"]) == pytest.approx(explained, rel=1e-6)  # the fit's
    x = dm.batch_transform(dm.x).double()
    with torch.no_grad():
        x_hat = model.eval().autoencoder(x.float())[1].double()
    everything = float(1 - (x_hat - x).square().sum() / (x - x.mean(0)).square().sum())
    assert explained == pytest.approx(everything, abs=0.03) and explained != everything
    assert model.reconstruction_explained(max_samples=len(x)) == pytest.approx(everything, abs=1e-6)

    # two ranks: the shards' sums, added, give one process's value
    shard_sums = []

    def all_reduce(stats):
        shard_sums.append(stats.clone())
        return sum(shard_sums)

    monkeypatch.setattr(dcl.method, "all_reduce_sum_", all_reduce)
    rows.clear()
    for rank in (0, 1):
        monkeypatch.setattr(dcl.datamodule, "rank_world", lambda: (rank, 2))
        value = model.reconstruction_explained()
    assert 0 < rows[0] < 500 and sum(rows) == 500 and [float(s[0]) for s in shard_sums] == [rows[0], 500 - rows[0]]
    assert value == pytest.approx(explained, rel=1e-9)


def test_a_checkpoint_keeps_its_number_of_trainable_centers_and_refuses_another_network(tmp_path):
    """Predicting on new data whose n_clusters differs loads the checkpoint's K trainable centers (it ended in a
    size-mismatch traceback); a module built with another network gets one ConfigError naming the setting."""
    import lightning.pytorch as pl
    from dcl.datamodules.digits import Digits
    from dcl.method import ConfigError

    def trainer(epochs=1):
        return pl.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                          enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0,
                          limit_val_batches=0)

    dm = Digits(batch_size=256)
    model = DEC(10, dm.input_shape, hidden_dims=[32], pretrain_epochs=1, kmeans_n_init=2)
    fit = trainer(2)
    fit.fit(model, dm)
    ckpt = tmp_path / "dec.ckpt"
    fit.save_checkpoint(ckpt)
    expected = torch.cat([p["cluster"] for p in trainer().predict(model, dm)])

    other_k = DEC(4, dm.input_shape, hidden_dims=[32])
    got = trainer().predict(other_k, Digits(batch_size=256, n_clusters=4), ckpt_path=ckpt)
    assert other_k.n_clusters == 10 and isinstance(other_k.cluster_centers, torch.nn.Parameter)
    assert torch.equal(torch.cat([p["cluster"] for p in got]), expected)
    assert other_k.cluster_centers.requires_grad
    # centers a subclass froze stay frozen at their new size
    frozen = DEC(4, dm.input_shape, hidden_dims=[32])
    frozen.cluster_centers.requires_grad_(False)
    frozen.load_state_dict(torch.load(ckpt, weights_only=False)["state_dict"])
    assert frozen.n_clusters == 10 and not frozen.cluster_centers.requires_grad

    with pytest.raises(ConfigError, match=r"\(autoencoder\.encoder\.\S+ is \(32, 64\) there but \(16, 64\) here\); "
                                          r"it was trained with hidden_dims: \[32\] \(here \[16\]\).*"
                                          r"\(DEC.load_from_checkpoint\(path\) uses them; dcl: --config"):
        trainer().predict(DEC(10, dm.input_shape, hidden_dims=[16]), dm, ckpt_path=ckpt)
    # a class of one's own with a layer more loads DEC's checkpoints (check_checkpoint_method) but not this one
    class WithHead(DEC):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.head = torch.nn.Linear(10, 2)

    with pytest.raises(ConfigError, match=r"does not fit this WithHead \(missing \['head.weight', 'head.bias'\]\)"):
        trainer().predict(WithHead(10, dm.input_shape, hidden_dims=[32]), dm, ckpt_path=ckpt)
    saved = torch.load(ckpt, weights_only=False)
    saved["state_dict"]["extra"] = torch.zeros(1)
    torch.save(saved, tmp_path / "extra.ckpt")
    with pytest.raises(ConfigError, match=r"does not fit this DEC \(unexpected \['extra'\]\)"):
        trainer().predict(DEC(10, dm.input_shape, hidden_dims=[32]), dm, ckpt_path=tmp_path / "extra.ckpt")
    lenient = DEC(10, dm.input_shape, hidden_dims=[32])
    lenient.strict_loading = False  # Lightning's switch: the keys that fit load
    assert torch.equal(torch.cat([p["cluster"] for p in trainer().predict(lenient, dm, ckpt_path=tmp_path /
                                                                          "extra.ckpt")]), expected)
    # while training, trainable centers (an optimizer holds them) keep their number: a new K is refused
    with pytest.raises(ConfigError, match="trainable cluster centers cannot change their number during training"):
        model.set_cluster_centers(torch.zeros(5, model.cluster_centers.shape[1]))
    model.set_cluster_centers(torch.ones_like(model.cluster_centers))  # the same K: replaced in place
    assert isinstance(model.cluster_centers, torch.nn.Parameter) and bool((model.cluster_centers == 1).all())


def test_target_update_schedule_and_stopping_rule(tmp_path):
    """The targets are refreshed every update_interval clustering steps; a large tol stops at the 2nd update."""
    model, _, calls, _ = _fit_recording_updates(DEC, tmp_path, 3, tol=0.0)
    steps = [s for s, _ in calls]
    assert calls[0] == (8, True)  # pretraining took 8 steps; the first update initializes k-means
    assert steps == list(range(8, 24, 3)) and not any(f for _, f in calls[1:])
    assert model.targets.shape == (1797, 10)

    for cls in (DEC, IDEC):
        model, trainer, calls, _ = _fit_recording_updates(cls, tmp_path, 5, tol=0.99)
        # stopped by the second update (after 3 clustering steps), whose batch is not trained: the run ends with
        # the state that met tol, as the reference code's loop, which breaks out before that batch
        assert len(calls) == 2 and int(model.cluster_steps) == 3


def test_the_stopping_rule_compares_each_update_with_the_one_before(monkeypatch):
    """tol applies to the assignments that changed since the previous update, and stops below it, as DEC-keras's
    ``delta_label < tol`` (a mutant comparing every update with the k-means initialization passed every test, and
    one stopping at tol too)."""
    import dcl.methods.dec as dec_module

    logged, stops = [], []
    monkeypatch.setattr(dec_module, "log_metrics_now", lambda trainer, metrics: logged.append(metrics))
    model = DEC(3, (2,), hidden_dims=[4], latent_dim=2, tol=0.5)
    model._trainer = SimpleNamespace()
    monkeypatch.setattr(model, "stop_fit", lambda: stops.append(len(logged)))
    model.cluster_centers.data = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    model.last_labels = torch.zeros(10, dtype=torch.long)  # the initialization's
    z = torch.tensor([[0.0, 0.0]] * 5 + [[10.0, 0.0]] * 5)  # half of them moved to cluster 1: tol, not below
    model.update_clusters(z, first=False)
    model.update_clusters(z, first=False)  # none moved since
    assert [m["train/label_change"] for m in logged] == [0.5, 0.0] and stops == [2]


@pytest.mark.parametrize("cls", [DEC, IDEC])
def test_batch_target_embeds_the_data_once_and_targets_each_batch(tmp_path, cls):
    """target 'batch': one whole-data pass (the k-means init), then P from each batch's own Q."""
    model, trainer, calls, dm = _fit_recording_updates(cls, tmp_path, 3, tol=0.0, target="batch")
    assert calls == [(8, True)] and trainer.global_step == 24
    assert model.targets.numel() == 0  # no whole-data P is kept (nor checkpointed)

    z = model.embed(dm.batch_transform(dm.x[:64]))
    q = model.assign(z)
    model.targets = torch.full((1797, 10), 0.1)  # must not be used
    expected = kl_clustering_loss(target_distribution(q), q)
    torch.testing.assert_close(model.clustering_loss(z, torch.arange(64)), expected)


def test_idec_adds_reconstruction_and_keeps_the_decoder_training():
    from dcl.datamodules.digits import Digits

    dm = Digits()
    model = IDEC(10, dm.input_shape, hidden_dims=[32], gamma=0.37)  # not the default: the setting must reach it
    torch.manual_seed(0)
    model.cluster_centers.data.normal_()
    model.targets = torch.softmax(torch.randn(1797, 10), 1)
    batch = {"x": dm.x[:64], "y": dm.y[:64], "index": torch.arange(64)}
    model._trainer = None
    model.log_dict = lambda *a, **k: None
    loss = model.cluster_step(batch)
    # the paper's L = L_r + gamma L_c, computed here from its parts: MSE of the reconstruction, and
    # KL(P || Q) with the batch's rows of the stored targets P against Student-t Q
    z, x_hat = model.autoencoder(batch["x"])
    q = model.assign(z)
    p = model.targets[:64]
    kl = (p * (p / q).log()).sum() / 64
    expected = ((x_hat - batch["x"]) ** 2).mean() + 0.37 * kl
    torch.testing.assert_close(loss, expected)
    # and both terms train the encoder (a step with the code detached from the clustering loss passed the check above)
    first_layer = model.autoencoder.encoder[1][0].weight
    torch.testing.assert_close(torch.autograd.grad(loss, first_layer, retain_graph=True)[0],
                               torch.autograd.grad(expected, first_layer, retain_graph=True)[0])
    loss.backward()
    assert model.autoencoder.decoder[0][0].weight.grad.abs().sum() > 0  # reconstruction reaches the decoder
    assert model.cluster_centers.grad.abs().sum() > 0  # the clustering loss reaches the centers


def test_one_process_step_leaves_unused_parameters_without_gradient():
    """The zero-gradient touch of every parameter is for DDP only: in one process DEC's clustering step gives
    the decoder no gradient at all (a full-size zero gradient per parameter would cost time for nothing)."""
    from dcl.datamodules.digits import Digits

    dm = Digits()
    model = DEC(10, dm.input_shape, hidden_dims=[32])
    model.clustering_started.fill_(True)
    model.targets = torch.full((1797, 10), 0.1)
    model.log = lambda *a, **k: None
    model.training_step({"x": dm.batch_transform(dm.x[:64]), "y": dm.y[:64], "index": torch.arange(64)}, 0).backward()
    assert all(p.grad is None for p in model.autoencoder.decoder.parameters())
    assert all(p.grad is not None for p in model.autoencoder.encoder.parameters())


def _dec_batch_gradient(index: torch.Tensor) -> torch.Tensor:
    """The gradient of DEC's batch-target clustering loss on the samples ``index`` of a batch of 16 (float64), all
    parameters in one vector."""
    torch.manual_seed(0)
    model = DEC(3, (6,), latent_dim=2, hidden_dims=(8,), target="batch", tol=0.0).double()
    model.set_cluster_centers(torch.tensor([[0.0, 0.0], [1.0, 0.5], [-0.5, 1.0]], dtype=torch.float64))
    x = torch.rand(16, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)[index]
    model.clustering_loss(model.embed(x), torch.arange(len(x))).backward()
    return flat_grad(model)


def test_batch_target_under_ddp_is_the_global_batch_target(tmp_path):
    """With target 'batch' the cluster frequencies f_j are summed over all ranks' batches, so two processes
    give the gradient of one process on the global batch (float64)."""
    single = _dec_batch_gradient(torch.arange(16))
    assert single.abs().max() > 0
    torch.testing.assert_close(ddp_mean_gradient(_dec_batch_gradient, 16, tmp_path), single, rtol=1e-10, atol=1e-12)


def _rank_zero_centers_worker(rank: int, world: int, port: int, out: str) -> None:
    from dcl.methods.ae_kmeans import AEKMeans

    with gloo_group(rank, world, port):
        torch.manual_seed(0)
        dec, ae = DEC(3, (6,), hidden_dims=[4], latent_dim=2), AEKMeans(3, (6,), hidden_dims=[4], latent_dim=2)
        dec.set_cluster_centers(torch.full((3, 2), float(rank)))  # trainable centers: replaced in place
        ae.set_cluster_centers(torch.full((4, 2), float(rank)))  # a buffer: K changes
        # each rank clusters other points: rank 0's k-means is the one every rank gets
        z = torch.rand(40, 2, generator=torch.Generator().manual_seed(rank)) + 10 * rank
        found = dec.run_kmeans(z, n_clusters=2).centers
        torch.save({"dec": dec.cluster_centers.detach(), "ae": ae.cluster_centers, "kmeans": found}, f"{out}{rank}")


def test_under_ddp_every_rank_takes_rank_zeros_centers(tmp_path):
    """``set_cluster_centers`` and ``run_kmeans`` broadcast rank 0's result, so that every rank clusters with one
    state even where the ranks computed different ones."""
    import torch.multiprocessing as mp

    out = str(tmp_path / "centers")
    mp.spawn(_rank_zero_centers_worker, args=(2, free_port(), out), nprocs=2, join=True)
    zero, one = torch.load(f"{out}0"), torch.load(f"{out}1")
    assert not zero["dec"].any() and not zero["ae"].any() and zero["ae"].shape == (4, 2)
    assert zero["kmeans"].max() < 1.5  # rank 0's points lie in [0, 1)
    for key in ("dec", "ae", "kmeans"):
        assert torch.equal(zero[key], one[key]), key


def test_training_k_means_draws_by_its_call_count_and_a_refresh_by_the_step(monkeypatch):
    """``run_kmeans`` seeds training's k-means (DEC's initialization, DEKM's updates) from the global seed and a call
    counter, which checkpoints hold: a resumed fit draws as the uninterrupted one. A refresh that only reads the
    embedding (a validation, the final clusters: ``refresh_clusters_by_step``) seeds from the step and leaves the
    counter alone, so how often validation runs changes no later draw."""
    import dcl.method
    from dcl.methods.ae_kmeans import AEKMeans

    seeds, n_inits, real = [], [], dcl.method.kmeans

    def spy(z, k, **kwargs):
        seeds.append(kwargs["seed"])
        n_inits.append(kwargs["n_init"])
        return real(z, k, **kwargs)

    step = [0]
    monkeypatch.setattr(dcl.method, "kmeans", spy)
    monkeypatch.setattr(AEKMeans, "global_step", property(lambda self: step[0]))
    z = torch.rand(30, 2, generator=torch.Generator().manual_seed(0))
    model, again = (AEKMeans(3, (6,), hidden_dims=[4], latent_dim=2, kmeans_n_init=2) for _ in range(2))
    model.run_kmeans(z)
    model.run_kmeans(z, n_init=1)
    model.refresh_clusters_by_step(z)
    step[0] = 5
    model.refresh_clusters_by_step(z)
    model.run_kmeans(z)
    for _ in range(3):
        again.run_kmeans(z)
    again.refresh_clusters_by_step(z)  # at step 5
    training, by_step = seeds[:2] + seeds[4:5], seeds[2:4]
    assert training == seeds[5:8] and len(set(training)) == 3  # a new draw each call, the refreshes not counted
    assert by_step[0] != by_step[1] and by_step[1] == seeds[8]  # a draw per step, the same at one step
    assert n_inits == [2, 1, 2, 2, 2, 2, 2, 2, 2]


def test_the_default_optimizers_are_the_reference_codes():
    """Unconfigured, the autoencoder pretrains with Adam (lr 1e-3) and the clustering phase takes DEC-keras' SGD
    (lr 0.01, momentum 0.9) or IDEC's Adam (lr 1e-3) (found by mutation: other lrs, no momentum or SGD for the
    pretraining had passed)."""
    for model, (kind, settings) in ((DEC(10, (64,)), (torch.optim.SGD, {"lr": 0.01, "momentum": 0.9})),
                                    (IDEC(10, (64,)), (torch.optim.Adam, {"lr": 1e-3}))):
        pretrain = model.configure_optimizers()
        assert type(pretrain) is torch.optim.Adam and pretrain.defaults["lr"] == 1e-3
        model.clustering_started.fill_(True)
        cluster = model.configure_optimizers()
        assert type(cluster) is kind and {k: cluster.defaults[k] for k in settings} == settings, type(model).__name__


def test_bad_hyperparameters():
    from dcl.method import ConfigError

    for bad in ({"update_interval": 0}, {"maxiter": 0}, {"tol": 1.0}, {"alpha": 0.0}):  # each boundary
        with pytest.raises(ConfigError, match="DEC needs update_interval >= 1, maxiter >= 1, 0 <= tol < 1 and "
                                              "alpha > 0"):
            DEC(10, (64,), **bad)
    with pytest.raises(ConfigError, match="gamma"):
        IDEC(10, (64,), gamma=-1)
    with pytest.raises(ConfigError, match="target must be"):
        DEC(10, (64,), target="epoch")
    with pytest.raises(ConfigError, match="set tol: 0"):
        IDEC(10, (64,), target="batch")
    # the shared autoencoders' refusals (ValueError, as the CLI reports them)
    with pytest.raises(ValueError, match="unknown autoencoder 'resnet'; choose 'mlp' or 'conv'"):
        DEC(10, (64,), autoencoder="resnet")
    with pytest.raises(ValueError, match=r"hidden_dims must be layer sizes >= 1, got \[32, 0\]"):
        DEC(10, (64,), hidden_dims=[32, 0])
    from dcl.nets.autoencoders import mlp

    with pytest.raises(ValueError, match=r"every layer needs at least one unit, got the sizes \[64, 0, 10\]"):
        mlp([64, 0, 10])  # (for a network of your own)


def test_the_shared_autoencoders_defaults_activations_and_initialization():
    """The MLP autoencoder's default is the DEC paper's d-500-500-2000-10, the conv one DEKM's (5x5, 5x5, 3x3
    stride-2 convs of 32, 64, 128 channels halving odd sizes too, mirrored, back to the input size);
    each activation name builds its module (leaky_relu: slope 0.2); Glorot-uniform weights and zero biases reach
    every layer kind, the conv decoder's transposed convs too; the reconstruction's gradient reaches every weight of
    the encoder."""
    from torch import nn

    from dcl.nets.autoencoders import ConvAutoencoder, MLPAutoencoder, make_activation

    mlp = MLPAutoencoder((64,))
    linear = [(m.in_features, m.out_features) for m in mlp.modules() if isinstance(m, nn.Linear)]
    assert linear == [(64, 500), (500, 500), (500, 2000), (2000, 10), (10, 2000), (2000, 500), (500, 500), (500, 64)]
    assert sum(isinstance(m, nn.ReLU) for m in mlp.modules()) == 6  # the hidden layers'; a linear code and output
    conv = ConvAutoencoder((1, 28, 28))
    assert [m.out_channels for m in conv.encoder.modules() if isinstance(m, nn.Conv2d)] == [32, 64, 128]
    # DEKM's Conv(32, 5, s2)-Conv(64, 5, s2)-Conv(128, 3, s2)-Dense(k), a linear code, mirrored by the decoder
    assert [(m.kernel_size[0], m.stride[0]) for m in conv.encoder if isinstance(m, nn.Conv2d)] == [(5, 2), (5, 2),
                                                                                                   (3, 2)]
    assert [type(m).__name__ for m in conv.encoder] == ["Conv2d", "ReLU"] * 3 + ["Flatten", "Linear"]
    assert [type(m).__name__ for m in conv.decoder] == ["Linear", "ReLU", "Unflatten"] + [
        "ConvTranspose2d", "ReLU"] * 2 + ["ConvTranspose2d"]
    for side, sizes in ((28, [14, 7, 3]), (27, [14, 7, 3]), (26, [13, 7, 3]), (16, [8, 4, 2])):  # odd: a valid 3rd conv
        net, h = ConvAutoencoder((1, side, side)), torch.zeros(1, 1, side, side)
        down = [h := layer(h) for layer in net.encoder if not isinstance(layer, (nn.Flatten, nn.Linear))]
        assert [t.shape[-1] for t in down[::2]] == sizes and net(torch.zeros(2, 1, side, side))[1].shape[-1] == side
    for net, x in ((mlp, torch.rand(4, 64)), (conv, torch.rand(4, 1, 28, 28))):  # the reconstruction trains the encoder
        torch.nn.functional.mse_loss(net(x)[1], x).backward()
        assert all(p.grad is not None and p.grad.any() for p in net.encoder.parameters())
    names = ("relu", "leaky_relu", "elu", "gelu", "tanh", "sigmoid")
    assert [type(make_activation(n)) for n in names] == [nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.Tanh, nn.Sigmoid]
    assert make_activation("leaky_relu").negative_slope == 0.2
    layers = [m for m in conv.modules() if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d))]
    assert {type(m) for m in layers} == {nn.Linear, nn.Conv2d, nn.ConvTranspose2d}
    for layer in layers:
        fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(layer.weight)
        bound = (6 / (fan_in + fan_out)) ** 0.5
        assert 0.8 * bound < float(layer.weight.abs().max()) <= bound and not layer.bias.any(), layer


@pytest.mark.parametrize("kind, shape", [("mlp", (64,)), ("conv", (1, 16, 16))])
def test_an_autoencoder_of_bounded_reconstructions_ends_with_its_output_activation(kind, shape):
    """``output_activation`` of the shared autoencoders (for a network of your own: no built-in method sets it)."""
    from dcl.nets.autoencoders import build_autoencoder

    plain = build_autoencoder(kind, shape, 5)
    bounded = build_autoencoder(kind, shape, 5, output_activation="sigmoid")
    bounded.load_state_dict(plain.state_dict())  # the same weights: a sigmoid more at the end
    x = torch.randn(4, *shape)
    torch.testing.assert_close(bounded(x)[1], torch.sigmoid(plain(x)[1]))


def test_cluster_update_intervals():
    """No interval: one update at the start (DEC's target 'batch'); an interval must be >= 1 (0 is not 'once')."""
    from dcl.callbacks.cluster_update import ClusterUpdate

    once = ClusterUpdate()
    assert once.every_n_steps is None and once.every_n_epochs is None
    for kwargs in ({"every_n_steps": 0}, {"every_n_epochs": 0}, {"every_n_steps": -3}):
        with pytest.raises(ValueError, match=">= 1"):
            ClusterUpdate(**kwargs)
    with pytest.raises(ValueError, match="at most one"):
        ClusterUpdate(every_n_steps=5, every_n_epochs=1)


def _updates_of(callback, epochs: int, batches: int, starts_at: int, accumulate: int = 1,
                first_epoch: int = 0) -> list[tuple]:
    """The (epoch, global step, first) of each update ``callback`` makes in a fit of ``epochs`` x ``batches``, whose
    clustering phase starts at global step ``starts_at``, ``accumulate`` batches an optimizer step; from
    ``first_epoch`` on (a resumed fit)."""
    calls = []
    trainer = SimpleNamespace(global_step=first_epoch * batches // accumulate, current_epoch=0)
    module = SimpleNamespace(clustering_active=False, embed_all=lambda: None,
                             update_clusters=lambda z, first: calls.append((trainer.current_epoch,
                                                                           trainer.global_step, first)))
    for epoch in range(first_epoch, epochs):
        trainer.current_epoch = epoch
        callback.on_train_epoch_start(trainer, module)
        for batch in range(batches):
            module.clustering_active = trainer.global_step >= starts_at
            callback.on_train_batch_start(trainer, module, None, batch)
            if (batch + 1) % accumulate == 0:
                trainer.global_step += 1
    return calls


def test_cluster_update_schedules_count_from_the_start_of_the_clustering_phase():
    """every_n_steps counts optimizer steps (once a step under gradient accumulation) and every_n_epochs epochs,
    both from the step and epoch the clustering phase began in; the schedule goes on from a saved state (the epoch
    schedule, which no built-in method uses, had no test)."""
    from dcl.callbacks.cluster_update import ClusterUpdate

    by_steps = _updates_of(ClusterUpdate(every_n_steps=4), epochs=3, batches=10, starts_at=6, accumulate=2)
    assert by_steps == [(1, 6, True), (2, 10, False), (2, 14, False)]  # 5 steps an epoch
    by_epochs = _updates_of(ClusterUpdate(every_n_epochs=2), epochs=8, batches=10, starts_at=35)
    assert by_epochs == [(3, 35, True), (5, 50, False), (7, 70, False)]
    saved = ClusterUpdate(every_n_epochs=2)
    _updates_of(saved, epochs=4, batches=10, starts_at=35)
    resumed = ClusterUpdate(every_n_epochs=2)
    resumed.load_state_dict(saved.state_dict())
    assert _updates_of(resumed, epochs=8, batches=10, starts_at=35, first_epoch=4) == by_epochs[1:]
    # a fit resumed inside epoch 5, whose update ran at its start: the epoch starts again at that step, no update
    again = ClusterUpdate(every_n_epochs=2)
    again.load_state_dict({"updates": 2, "start_step": 35, "start_epoch": 3, "last_step": 50})
    calls = []
    again.on_train_epoch_start(SimpleNamespace(global_step=50, current_epoch=5),
                               SimpleNamespace(clustering_active=True, embed_all=lambda: None,
                                               update_clusters=lambda z, first: calls.append(first)))
    assert calls == [] and again.updates == 2


def test_fan_in_uniform_init_is_dec_keras_mnist_initializer():
    """``weight_init: fan_in_uniform``: Keras' VarianceScaling(1/3, 'fan_in', 'uniform'), the initializer DEC-keras
    pretrains MNIST with: every weight in +-sqrt(1 / fan_in) (filling that range), every bias zero. And
    ``small_normal``'s N(0, 0.01^2) weights and zero biases."""
    from dcl.methods.ae_kmeans import AEKMeans

    torch.manual_seed(0)
    for cls in (AEKMeans, DEC, IDEC):
        model = cls(10, (784,), weight_init="fan_in_uniform")
        layers = [m for m in model.autoencoder.modules() if isinstance(m, torch.nn.Linear)]
        assert len(layers) == 8 and model.hparams.weight_init == "fan_in_uniform"
        for layer in layers:
            bound = layer.in_features ** -0.5
            assert 0.99 * bound < layer.weight.abs().max() <= bound and not layer.bias.any()
            assert abs(float(layer.weight.std()) - bound / 3 ** 0.5) < 0.05 * bound  # uniform: std = bound / sqrt(3)
    conv = AEKMeans(10, (1, 28, 28), autoencoder="conv", weight_init="fan_in_uniform")
    kinds = (torch.nn.Conv2d, torch.nn.ConvTranspose2d)
    for layer in [m for m in conv.autoencoder.modules() if isinstance(m, kinds)]:
        # Keras' fan_in: kernel area x input channels (Conv2D), x output channels (Conv2DTranspose)
        channels = layer.in_channels if isinstance(layer, torch.nn.Conv2d) else layer.out_channels
        bound = (channels * layer.kernel_size[0] * layer.kernel_size[1]) ** -0.5
        assert 0.9 * bound < layer.weight.abs().max() <= bound and not layer.bias.any()
    small = DEC(10, (784,), weight_init="small_normal")  # the DEC paper's stacked autoencoder: N(0, 0.01^2)
    for layer in [m for m in small.autoencoder.modules() if isinstance(m, torch.nn.Linear)]:
        assert 0.009 < float(layer.weight.std()) < 0.011 and not layer.bias.any()
    glorot = DEC(10, (784,)).autoencoder.encoder[1][0].weight  # the default: Glorot, bound sqrt(6 / (784 + 500))
    assert 0.99 * (6 / 1284) ** 0.5 < glorot.abs().max() <= (6 / 1284) ** 0.5
    with pytest.raises(ConfigError, match="weight_init must be one of"):
        DEC(10, (784,), weight_init="he")


@pytest.mark.parametrize("method", ["DEC", "AEKMeans"])
def test_how_often_validation_runs_changes_no_result(method):
    """Found by probing as a researcher: the k-means that scores a validation advanced the seed counter of the
    k-means that training goes on from (DEC's initialization; AE + k-means' final clusters), so
    check_val_every_n_epoch changed the trained result. Found by probing with Trainer flags: a validation inside
    the last epoch (val_check_interval) left AE + k-means with that step's clusters, not the final ones."""
    import lightning.pytorch as pl

    from dcl.datamodules.digits import Digits
    from dcl.methods.ae_kmeans import AEKMeans

    def fit(every: int, within_epoch: int | None = None) -> dict[str, torch.Tensor]:
        pl.seed_everything(0)
        dm = Digits(batch_size=256)
        model = (DEC(10, (64,), hidden_dims=[32], pretrain_epochs=3, update_interval=3, kmeans_n_init=2)
                 if method == "DEC" else AEKMeans(10, (64,), hidden_dims=[32], kmeans_n_init=2))
        trainer = pl.Trainer(max_epochs=5, check_val_every_n_epoch=every, val_check_interval=within_epoch,
                             num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False)
        trainer.fit(model, dm)
        return {k: v.clone() for k, v in model.state_dict().items()}

    every_epoch = fit(1)
    for other in (fit(100), fit(1, within_epoch=3)):  # 8 batches an epoch: validations 2 steps before its end
        for name, value in every_epoch.items():
            assert torch.equal(value, other[name]), name


@pytest.mark.parametrize("method", ["DEC", "DEKM"])
def test_the_tol_stopping_rule_ends_a_ddp_fit(method, tmp_path, monkeypatch):
    """Found by probing under DDP: a fit whose update met tol (how the configs end) failed on every rank with
    Lightning's "Skipping the training_step by returning None in distributed training is not supported"."""
    import lightning.pytorch as pl

    from dcl.datamodules.digits import Digits
    from dcl.methods.dekm import DEKM

    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    small = dict(hidden_dims=[32], pretrain_epochs=1, update_interval=2, tol=0.5, kmeans_n_init=2)
    model = DEC(10, (64,), **small) if method == "DEC" else DEKM(10, (64,), autoencoder="mlp", **small)
    trainer = pl.Trainer(max_epochs=4, accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, limit_val_batches=0, default_root_dir=tmp_path)
    trainer.fit(model, Digits(batch_size=64))
    # 15 global batches of 2 x 64 per epoch: the clustering phase's 45 steps cut short by tol, not by a crash
    assert 0 < int(model.cluster_steps) < 45


def test_a_stop_before_min_epochs_still_trains_them():
    """The end-of-epoch-on-stop hook (for tol) leaves Lightning's rule alone: a stop requested before the Trainer's
    min_epochs (an EarlyStopping, say) trains on to them, it does not skip their batches."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import Callback

    from dcl.datamodules.digits import Digits
    from dcl.methods.ae_kmeans import AEKMeans

    class StopEveryEpoch(Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            trainer.should_stop = True

    model = AEKMeans(10, (64,), hidden_dims=[16], kmeans_n_init=1)
    trainer = pl.Trainer(max_epochs=5, min_epochs=3, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         limit_val_batches=0, callbacks=[StopEveryEpoch()])
    trainer.fit(model, Digits(batch_size=256))
    assert trainer.global_step == 3 * 8  # 3 epochs of 8 batches, each trained


@pytest.mark.parametrize("cls", [DEC, IDEC])
def test_maxiter_counts_optimizer_steps_under_gradient_accumulation(tmp_path, cls):
    """Found by a user: under accumulate_grad_batches 2, maxiter counted batches while update_interval counted
    optimizer steps, so a fit stopped after half its iterations (and inside an accumulation)."""
    import lightning.pytorch as pl

    from dcl.datamodules.digits import Digits

    calls = []

    class Recording(cls):
        def update_clusters(self, z, first):
            calls.append(self.trainer.global_step)
            super().update_clusters(z, first)

    dm = Digits(batch_size=256)  # 8 batches an epoch: 4 optimizer steps
    model = Recording(10, dm.input_shape, hidden_dims=[32], pretrain_epochs=1, update_interval=2, maxiter=3, tol=0,
                      kmeans_n_init=2)
    trainer = pl.Trainer(max_epochs=5, accumulate_grad_batches=2, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                         num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(model, dm)
    assert trainer.global_step == 4 + 3 and int(model.cluster_steps) == 3 and calls == [4, 6]


@pytest.mark.parametrize("max_steps, accumulate, warns", [(16, 1, True), (8, 2, True), (9, 2, False)])
def test_a_max_steps_that_ends_within_the_pretraining_says_so(tmp_path, max_steps, accumulate, warns):
    """Found by a user: --trainer.max_steps ending inside the pretraining gave no warning (only max_epochs did).
    2 pretraining epochs of 8 batches: 16 optimizer steps, 8 under accumulate_grad_batches 2."""
    import lightning.pytorch as pl

    from dcl.datamodules.digits import Digits

    dm = Digits(batch_size=256)
    model = DEC(10, dm.input_shape, hidden_dims=[32], pretrain_epochs=2, kmeans_n_init=2)
    trainer = pl.Trainer(max_steps=max_steps, accumulate_grad_batches=accumulate, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path, num_sanity_val_steps=0, limit_val_batches=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, dm)
    said = [str(w.message) for w in caught if "ends within the" in str(w.message)]
    expected = (f"max_steps {max_steps} ends within the 2 epochs of autoencoder pretraining "
                f"(at least {16 // accumulate} optimizer steps): DEC's clustering phase will not run")
    assert [s[:len(expected)] for s in said] == ([expected] if warns else [])
    assert model.clustering_active != warns
