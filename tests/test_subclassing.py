"""Extending dcl without changing it: (1) a user's subclass of a built-in method, trained from the CLI by its
class path; (2) a complete plugin method and datamodule in another package, registered by entry points and
trained by name.

The plugin package's texts below are the README's examples, verbatim; the subclass module is the README's
``MyDEC`` with a call counter added, which proves that its loss is the one trained.
"""

from __future__ import annotations

import re
import sys
import textwrap

import pytest
import torch
from conftest import run_cli

from dcl import registry

# -- (1) a subclass in the user's own module ------------------------------------------------------------------
USER_MODULE = '''
"""My variant of DEC: the Jensen-Shannon divergence between P and Q instead of KL(P || Q)."""
from dcl.methods.dec import DEC, kl_clustering_loss


class MyDEC(DEC):
    """DEC with a symmetric clustering loss; ``mix`` weighs P against Q in the mixture M."""

    calls = 0  # (for the test: proves that this loss is the one trained)

    def __init__(self, *args, mix: float = 0.5, **kwargs):
        super().__init__(*args, **kwargs)  # every DEC argument stays a CLI/config argument
        self.mix = mix

    def clustering_loss(self, z, index):
        type(self).calls += 1
        p, q = self.targets[index], self.assign(z)
        m = self.mix * p + (1 - self.mix) * q
        return self.mix * kl_clustering_loss(p, m) + (1 - self.mix) * kl_clustering_loss(q, m)
'''

TINY_DEC = ["--model.init_args.hidden_dims", "[32]", "--model.init_args.pretrain_epochs", "1",
            "--model.init_args.update_interval", "5", "--model.init_args.kmeans_n_init", "2",
            "--data", "Digits", "--trainer.max_epochs", "3"]


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    (src / "mymod.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(src))
    yield src
    sys.modules.pop("mymod", None)


def test_user_subclass_trains_from_the_cli_by_class_path(user_module, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    scores = run_cli(["fit", "--model", "mymod.MyDEC", "--model.init_args.mix", "0.3", *TINY_DEC], run)
    import mymod

    assert mymod.MyDEC.calls > 0  # the user's loss was trained, not DEC's
    assert scores["k"] == 10 and 0.2 < scores["acc"] <= 1.0, scores
    ckpt = next(run.rglob("*.ckpt"))
    model = mymod.MyDEC.load_from_checkpoint(ckpt)
    assert model.mix == 0.3 and model.hparams.pretrain_epochs == 1  # the new argument and DEC's are saved
    # a DEC run resumed as the subclass stays the subclass (Lightning's hparams load swapped it back to DEC)
    dec = tmp_path / "dec"
    dec.mkdir()
    run_cli(["fit", "--model", "DEC", *TINY_DEC], dec)
    before = mymod.MyDEC.calls
    (run / "resumed").mkdir()
    run_cli(["fit", "--model", "mymod.MyDEC", *TINY_DEC, "--trainer.max_epochs", "4", "--ckpt_path",
             str(next(dec.rglob("*.ckpt")))], run / "resumed")
    assert mymod.MyDEC.calls > before
    assert torch.load(next((run / "resumed").rglob("*.ckpt")), weights_only=False)["dcl_method"] == "MyDEC"
    # and in Python (found by probing as a plugin author: Lightning refused to build DEC "as a MyDEC")
    from dcl.method import ConfigError
    from dcl.methods.dec import DEC
    from dcl.methods.idec import IDEC

    as_mine = mymod.MyDEC.load_from_checkpoint(next(dec.rglob("*.ckpt")))
    assert type(as_mine) is mymod.MyDEC and as_mine.mix == 0.5 and as_mine.hparams.pretrain_epochs == 1
    with pytest.raises(ConfigError, match="written by method MyDEC, not DEC"):
        DEC.load_from_checkpoint(ckpt)
    # (said to a Python user too, not only as a dcl option: was "use --model DEC")
    with pytest.raises(ConfigError, match=r"written by method DEC, not IDEC; load it with DEC \(dcl: --model DEC\)"):
        IDEC.load_from_checkpoint(next(dec.rglob("*.ckpt")))
    with pytest.warns(UserWarning, match="the checkpoint's 10 clusters are used, not n_clusters 5"):
        assert DEC.load_from_checkpoint(next(dec.rglob("*.ckpt")), n_clusters=5).n_clusters == 10
    (tmp_path / "foreign.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="truncated or not a PyTorch checkpoint"):
        DEC.load_from_checkpoint(tmp_path / "foreign.ckpt")


def test_user_subclass_from_a_config_file(user_module, tmp_path):
    config = tmp_path / "mydec.yaml"
    config.write_text(textwrap.dedent("""
        seed_everything: 0
        model:
          class_path: mymod.MyDEC
          init_args:
            mix: 0.7
            hidden_dims: [32]
            pretrain_epochs: 1
            update_interval: 5
            kmeans_n_init: 2
        data:
          class_path: dcl.datamodules.digits.Digits
        trainer:
          max_epochs: 2
          enable_checkpointing: false
    """))
    import importlib

    mymod = importlib.import_module("mymod")
    before = mymod.MyDEC.calls
    scores = run_cli(["fit", "--config", str(config)], tmp_path)
    assert mymod.MyDEC.calls > before and scores["k"] == 10


# -- (2) a plugin method in another package, found through its entry point -------------------------------------
PLUGIN_PACKAGE = '''
"""myplugin: a dcl method and a data set in their own package (entry-point groups "dcl.methods" and
"dcl.datamodules")."""
import torch
import torch.nn.functional as F

from dcl.callbacks.cluster_update import ClusterUpdate
from dcl.datamodule import ClusteringDataModule
from dcl.method import AutoencoderMethod


class Blobs(ClusteringDataModule):
    """Gaussian blobs around the corners of a simplex (a data set of one's own, installed as a plugin).

    ``batch_size``, ``n_clusters``, ``eval_batch_size``, ``seed`` and ``on_device`` are ``ClusteringDataModule``'s.

    Args:
        n_samples: samples in all.
        n_features: dimension of the samples.
        num_blobs: number of blobs (the classes).
        noise: standard deviation of each blob.
    """

    def __init__(self, n_samples: int = 600, n_features: int = 8, num_blobs: int = 3, noise: float = 0.1,
                 batch_size: int = 64, n_clusters: int | None = None, eval_batch_size: int | None = None,
                 seed: int | None = None, on_device: bool = False):
        super().__init__(batch_size, n_clusters, eval_batch_size, seed, on_device)
        self.n_samples, self.n_features, self.noise = n_samples, n_features, noise
        self.num_classes = num_blobs

    def load(self):  # all samples and their labels; the base class does batching, sharding and checks
        g = torch.Generator().manual_seed(0)
        y = torch.arange(self.n_samples) % self.num_classes
        centers = torch.eye(self.num_classes, self.n_features) * 3
        return centers[y] + self.noise * torch.randn(self.n_samples, self.n_features, generator=g), y


class MyPlugin(AutoencoderMethod):
    """AE + k-means loss: reconstruction plus the squared distance of each code to its nearest center.

    The autoencoder, pretraining and optimizer arguments are ``AutoencoderMethod``'s, passed on by ``**kwargs``
    (``--model.help`` lists them, with the descriptions of its docstring).

    Args:
        weight: weight of the k-means term against the reconstruction.
        update_interval: steps between two k-means refits of the centers on all codes.
        pretrain_epochs: epochs of autoencoder pretraining before the clustering phase.
    """

    def __init__(self, n_clusters: int, input_shape: list[int], weight: float = 0.1, update_interval: int = 20,
                 pretrain_epochs: int = 50, **kwargs):
        super().__init__(n_clusters, input_shape, pretrain_epochs=pretrain_epochs, **kwargs)
        self.save_hyperparameters()
        self.weight = weight
        self.update_interval = update_interval

    def configure_callbacks(self):  # the callbacks this method cannot work without
        return [ClusterUpdate(every_n_steps=self.update_interval)]

    def update_clusters(self, z, first):  # all codes, in order, identical on every rank
        init = None if first else self.cluster_centers
        self.set_cluster_centers(self.run_kmeans(z, init=init).centers)

    def cluster_step(self, batch):
        z, x_hat = self.autoencoder(batch["x"])
        recon = F.mse_loss(x_hat, batch["x"])
        kmeans = (z.unsqueeze(1) - self.cluster_centers).pow(2).sum(-1).min(dim=1).values.mean()
        self.log_dict({"train/recon": recon, "train/kmeans": kmeans})  # the terms; train/loss: what it returns
        return recon + self.weight * kmeans
'''

# What ``pip install`` of a package whose pyproject.toml has
#   [project.entry-points."dcl.methods"]
#   MyPlugin = "myplugin:MyPlugin"
#   [project.entry-points."dcl.datamodules"]
#   Blobs = "myplugin:Blobs"
# leaves in site-packages besides the code:
DIST_INFO = {"METADATA": "Metadata-Version: 2.1\nName: myplugin\nVersion: 0.1.0\n",
             "entry_points.txt": "[dcl.methods]\nMyPlugin = myplugin:MyPlugin\n\n"
                                 "[dcl.datamodules]\nBlobs = myplugin:Blobs\n"}


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "myplugin").mkdir(parents=True)
    (site / "myplugin" / "__init__.py").write_text(PLUGIN_PACKAGE)
    (site / "myplugin-0.1.0.dist-info").mkdir()
    for name, text in DIST_INFO.items():
        (site / "myplugin-0.1.0.dist-info" / name).write_text(text)
    monkeypatch.syspath_prepend(str(site))
    registry.refresh()
    yield site
    sys.modules.pop("myplugin", None)
    monkeypatch.undo()
    registry.refresh()


def test_plugin_method_and_datamodule_are_registered_and_listed(plugin, capsys):
    from dcl.cli import main

    assert registry.get_method("myplugin").__module__ == registry.get_datamodule("blobs").__module__ == "myplugin"
    main(["list"])
    out = capsys.readouterr().out
    assert "MyPlugin" in out and "Blobs" in out


def test_plugin_method_trains_by_name(plugin, tmp_path):
    scores = run_cli(["fit", "--model", "MyPlugin", "--data", "Digits", "--model.init_args.hidden_dims", "[32]",
                      "--model.init_args.pretrain_epochs", "1", "--model.init_args.update_interval", "5",
                      "--model.init_args.kmeans_n_init", "2", "--trainer.max_epochs", "3",
                      # the base class's settings through **kwargs (a probe: the template had no optimizer setting)
                      "--model.init_args.optimizer", "torch.optim.SGD", "--model.init_args.optimizer.lr", "0.01"],
                     tmp_path)
    assert scores["k"] == 10 and 0.2 < scores["acc"] <= 1.0, scores
    ckpt = torch.load(next(tmp_path.rglob("*.ckpt")), weights_only=False)
    assert ckpt["dcl_method"] == "MyPlugin" and ckpt["state_dict"]["cluster_centers"].shape == (10, 10)
    group = ckpt["optimizer_states"][0]["param_groups"][0]  # the clustering phase's optimizer: the one configured
    assert group["lr"] == 0.01 and "momentum" in group and "betas" not in group


def test_plugin_datamodule_serves_a_method_by_name(plugin, tmp_path):
    scores = run_cli(["fit", "--model", "AEKMeans", "--data", "Blobs", "--data.init_args.num_blobs", "4",
                      "--model.init_args.hidden_dims", "[16]", "--model.init_args.latent_dim", "3",
                      "--trainer.max_epochs", "5"], tmp_path)
    assert scores["k"] == 4 and scores["acc"] > 0.95, scores  # n_clusters linked from the plugin's num_classes


def test_plugin_works_in_the_estimator(plugin):
    from dcl import DeepClusterer

    from sklearn.datasets import make_blobs
    from sklearn.metrics import adjusted_rand_score

    X, y = make_blobs(n_samples=40, centers=2, n_features=5, cluster_std=0.5, random_state=0)
    est = DeepClusterer("myplugin", n_clusters=2, max_epochs=3, random_state=0, batch_size=8,
                        method_args=dict(hidden_dims=[16], latent_dim=2, pretrain_epochs=1, update_interval=2,
                                         kmeans_n_init=2)).fit(X)
    assert type(est.model_).__name__ == "MyPlugin" and est.cluster_centers_.shape == (2, 2)
    assert adjusted_rand_score(y, est.labels_) > 0.8


# -- (3) a method written on ClusteringMethod whose clusters come only from refresh_clusters --------------------
REFRESH_MODULE = '''
import torch
import torch.nn.functional as F
from torch import nn

from dcl.method import ClusteringMethod


class CodeKMeans(ClusteringMethod):
    """An autoencoder trained on its reconstruction; its clusters: k-means on the code (``refresh_clusters``)."""

    def __init__(self, n_clusters: int, input_shape: list[int], latent_dim: int = 5):
        super().__init__(n_clusters, input_shape, latent_dim, kmeans_n_init=2)
        self.encoder = nn.Sequential(nn.Linear(input_shape[0], 32), nn.ReLU(), nn.Linear(32, latent_dim))
        self.decoder = nn.Sequential(nn.Linear(latent_dim, 32), nn.ReLU(), nn.Linear(32, input_shape[0]))

    def embed(self, x):
        return self.encoder(x)

    def training_step(self, batch, batch_idx):
        return F.mse_loss(self.decoder(self.encoder(batch["x"])), batch["x"])

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)

    def refresh_clusters(self, z):
        self.set_cluster_centers(self.run_kmeans(z).centers)
'''


@pytest.mark.parametrize("validation", [["--trainer.limit_val_batches", "0"],
                                        ["--trainer.check_val_every_n_epoch", "2"],
                                        ["--trainer.val_check_interval", "3"]])  # 2 steps before the end
def test_a_method_whose_clusters_come_from_refresh_clusters_ends_with_those_of_its_final_embedding(
        tmp_path, monkeypatch, capsys, validation):
    """Found by probing as a plugin author: such a method got its clusters only where a validation refreshed them;
    without one (or with one epochs before the end) its final scores said one cluster (or stale ones), predict
    wrote cluster 0 for every sample, and validate of the same checkpoint scored a new k-means. Found by probing
    with Trainer flags: a validation inside the last epoch left AE + k-means with that step's clusters, and
    last.ckpt lagged the final scores by the epochs since the last validation."""
    import csv

    from dcl.metrics import cluster_accuracy

    (tmp_path / "refreshmod.py").write_text(REFRESH_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    model = ["--model", "refreshmod.CodeKMeans", "--data", "Digits", "--seed_everything", "0"]
    (tmp_path / "every_epoch").mkdir()  # the reference: a validation at the last step refreshed the clusters
    expected = run_cli(["fit", *model, "--trainer.max_epochs", "3"], tmp_path / "every_epoch")
    # (a fit that does not end at a validation: last.ckpt is saved at its end all the same)
    scores = run_cli(["fit", *model, "--trainer.max_epochs", "3", "--trainer.callbacks+=ModelCheckpoint",
                      "--trainer.callbacks.save_last", "true", *validation], tmp_path)
    assert scores == expected and scores["k_used"] == 10 and scores["acc"] > 0.3, scores
    ckpt = str(tmp_path / "checkpoints" / "last.ckpt")
    run_cli(["predict", *model, "--ckpt_path", ckpt, "--predictions.output", "p.csv"], tmp_path)
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    predicted = cluster_accuracy(torch.tensor([int(r["cluster"]) for r in rows]),
                                 torch.tensor([int(r["label"]) for r in rows]))
    capsys.readouterr()
    run_cli(["validate", *model, "--ckpt_path", ckpt], tmp_path)
    validated = float(re.search(r"val/acc\W+([0-9.]+)", capsys.readouterr().out).group(1))
    assert predicted == pytest.approx(scores["acc"]) and validated == pytest.approx(scores["acc"], abs=1e-4)
    sys.modules.pop("refreshmod", None)


def test_a_training_step_of_ones_own_gets_train_loss_logged(tmp_path):
    """Found by users: no method logged one common train/loss; now the base class logs what any training_step returns
    (automatic optimization), so that a plugin gets it without writing anything: a step of its own on
    ClusteringMethod (also with an on_train_batch_end of its own that does not call super()), a subclass's step that
    calls its parent's (its own result is logged, once), and one that logs train/loss itself (its value is kept,
    not logged twice: Lightning refuses a name logged twice in a step with other arguments). Only train/loss is on
    the progress bar: a step's prog_bar=True on another name, as the README's plugin logged its parent's
    train/recon, is logged off the bar with a warning, once (Lightning refused the fit, the parent logging it off the
    bar); outside a training step prog_bar=True stands."""
    import contextlib

    import lightning.pytorch as pl
    import torch.nn.functional as F
    from torch import nn

    from dcl.datamodules.digits import Digits
    from dcl.method import ClusteringMethod
    from dcl.methods.ae_kmeans import AEKMeans

    class OwnStep(ClusteringMethod):
        def __init__(self):
            super().__init__(10, (64,), 5, kmeans_n_init=1)
            self.encoder, self.decoder = nn.Linear(64, 5), nn.Linear(5, 64)

        def embed(self, x):
            return self.encoder(x)

        def training_step(self, batch, batch_idx):
            self.returned = F.mse_loss(self.decoder(self.encoder(batch["x"])), batch["x"])
            return self.returned

        def on_train_batch_end(self, outputs, batch, batch_idx):  # its own, without super()
            pass

        def on_train_epoch_end(self):  # outside a training step, prog_bar=True is honoured
            super().on_train_epoch_end()
            self.log("train/mark", 1.0, prog_bar=True)

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    class Doubled(AEKMeans):
        def training_step(self, batch, batch_idx):
            self.returned = 2 * super().training_step(batch, batch_idx)
            self.log("train/recon", self.returned / 2, prog_bar=True)  # the parent's term, which it logs off the bar
            return {"loss": self.returned, "other": 1}

    class LogsItself(OwnStep):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            self.returned = loss + 1
            self.log("train/loss", self.returned)
            return loss

    class ReadsTheLoss(pl.Callback):
        def on_train_batch_end(self, trainer, module, *args):
            self.pairs.append((float(trainer.callback_metrics["train/loss"]), float(module.returned.detach())))

    for model in (OwnStep(), Doubled(10, (64,), hidden_dims=[16], kmeans_n_init=1), LogsItself()):
        reads = ReadsTheLoss()
        reads.pairs = []
        trainer = pl.Trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=0, logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                             default_root_dir=tmp_path, num_sanity_val_steps=0, callbacks=[reads])
        with (pytest.warns(UserWarning, match="Doubled logs train/recon with prog_bar=True in its training step: it "
                                             "is logged off the progress bar, which shows train/loss")
              if isinstance(model, Doubled) else contextlib.nullcontext()) as warned:
            trainer.fit(model, Digits(batch_size=64))
        if warned is not None:  # once per name, not at each of the 3 steps
            assert sum("Doubled logs train/recon" in str(w.message) for w in warned) == 1
        assert len(reads.pairs) == 3 and all(logged == returned for logged, returned in reads.pairs), reads.pairs
        on_bar = {"train/loss"} if not isinstance(model, LogsItself) else set()  # (logged its own way: not on the bar)
        on_bar |= {"train/mark"} if isinstance(model, OwnStep) else set()
        assert set(trainer.progress_bar_metrics) == on_bar, trainer.progress_bar_metrics


def test_a_method_with_batchnorm_keeps_one_state_on_every_ddp_rank(tmp_path, monkeypatch):
    """Found by reading the adversarial helper's docstring, which left it to each method: each rank's BatchNorm
    statistics followed its own samples after every step, so the ranks embedded with different models (the final
    scores) and the checkpoint was rank 0's alone. The base class now broadcasts them at every optimizer step; every
    buffer is compared across the ranks after every step."""
    import lightning.pytorch as pl
    from conftest import free_port
    from ddp_helpers import AEKMeansWithBatchNorm, AssertSameStateOnRanks

    from dcl.datamodules.digits import Digits

    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    model = AEKMeansWithBatchNorm(10, (64,), hidden_dims=[16], kmeans_n_init=1)
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules())
    trainer = pl.Trainer(max_epochs=2, limit_train_batches=3, accelerator="cpu", devices=2, strategy="ddp_spawn",
                         num_sanity_val_steps=0, limit_val_batches=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[AssertSameStateOnRanks(str(tmp_path))])
    trainer.fit(model, Digits(batch_size=32))
    checked = {f.name: int(f.read_text()) for f in tmp_path.glob("checks_rank*")}
    assert checked == {"checks_rank0": 6, "checks_rank1": 6}, checked


def test_embedding_all_samples_leaves_the_module_in_the_mode_it_found():
    """``embed_all`` embeds in eval mode and restores the mode it was called in: a predict of an untrained model,
    which first takes k-means of every sample's embedding (``on_predict_start``), still predicts in eval mode, a
    BatchNorm with its running statistics, not each batch's."""
    import lightning.pytorch as pl
    from ddp_helpers import AEKMeansWithBatchNorm

    from dcl.datamodules.digits import Digits

    torch.manual_seed(0)
    dm = Digits(batch_size=100)
    model = AEKMeansWithBatchNorm(10, (64,), hidden_dims=[16], kmeans_n_init=1)
    before = model.autoencoder.encoder[-1].running_mean.clone()  # (untrained: zeros)
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    z = torch.cat([out["z"] for out in trainer.predict(model, dm)])
    assert torch.equal(model.autoencoder.encoder[-1].running_mean, before)  # no batch updated them
    with torch.no_grad():
        assert torch.allclose(z, model.eval().embed(dm.batch_transform(dm.x)), atol=1e-6)


def test_validate_scores_the_clusters_the_model_holds_and_counts_those_used():
    """``dcl validate`` of a model with clusters scores them as they are (no k-means run anew): ``val/k`` is K and
    ``val/k_used`` the clusters that some sample falls in, here 9 of 10 with one center far from every sample."""
    import lightning.pytorch as pl

    from dcl.datamodules.digits import Digits
    from dcl.methods.ae_kmeans import AEKMeans

    torch.manual_seed(0)
    dm = Digits(batch_size=500)
    model = AEKMeans(10, (64,), hidden_dims=[16], kmeans_n_init=1)
    with torch.no_grad():
        centers = model.embed(dm.batch_transform(dm.x[:10]))
    centers[9] = 1e3
    model.set_cluster_centers(centers)
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    scores = trainer.validate(model, dm, verbose=False)[0]
    assert scores["val/k"] == 10 and scores["val/k_used"] == 9 and torch.equal(model.cluster_centers, centers)
    assert {"val/acc", "val/nmi", "val/ari"} <= set(scores)


def test_the_plugin_classes_here_are_the_readmes():
    """The module docstring's claim, checked: a README example edited alone (its Blobs took ``seed: int = 0`` while
    every data set defaults to the run's seed) would no longer be the code these tests train."""
    from conftest import REPO

    readme = (REPO / "README.md").read_text()
    blocks = ["class " + block.strip() for block in PLUGIN_PACKAGE.split("\n\n\nclass ")[1:]]
    assert sorted(b.split("(")[0] for b in blocks) == ["class Blobs", "class MyPlugin"]
    for block in blocks:
        assert block in readme, block.splitlines()[0]
