"""SAE, the DEC paper's stacked denoising autoencoder: the loss, what each greedy stage trains and on what, a new
solver per stage, then DEC started from its checkpoint through the CLI."""

from __future__ import annotations

import contextlib
import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from conftest import REPO, run_cli
from dcl.estimator import InMemory
from dcl.method import ConfigError
from dcl.methods.sae import SAE, euclidean_loss

# the stage tests call the training step without a Trainer, which Lightning's self.log warns about
pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")


def test_euclidean_loss_is_half_the_squared_error_averaged_over_every_element_as_in_the_authors_caffe():
    """The authors' fork divides by the blob's count (6 x 2 x 3 here), not by the batch size as upstream Caffe."""
    x, x_hat = torch.randn(6, 2, 3), torch.randn(6, 2, 3)
    by_hand = sum(((x_hat[n] - x[n]) ** 2).sum() for n in range(6)) / (2 * 6 * 2 * 3)
    assert float(euclidean_loss(x_hat, x)) == pytest.approx(float(by_hand), rel=1e-6)
    assert float(euclidean_loss(x, x)) == 0.0


def digits(n: int = 512) -> InMemory:
    x, y = load_digits(return_X_y=True)
    return InMemory(torch.tensor(x[:n], dtype=torch.float32) / 16.0, y[:n], batch_size=128)


def model(**kwargs) -> SAE:
    kwargs = {"hidden_dims": [32, 48], "latent_dim": 5, "kmeans_n_init": 2, **kwargs}
    return SAE(n_clusters=10, input_shape=[64], **kwargs)


def test_each_greedy_stage_reconstructs_the_frozen_output_below_it():
    """Without dropout (eval), stage i's loss is the pair's reconstruction of the clean output of the pairs below:
    ReLU everywhere except the code and the reconstruction of the data."""
    torch.manual_seed(0)
    m = model().eval()
    x = digits(64).x
    enc, dec = m.encoders, m.decoders
    h1 = F.relu(enc[0](x))
    h2 = F.relu(enc[1](h1))
    expected = [euclidean_loss(dec[0](F.relu(enc[0](x))), x),  # the data: linear reconstruction
                euclidean_loss(F.relu(dec[1](F.relu(enc[1](h1)))), h1),
                euclidean_loss(F.relu(dec[2](enc[2](h2))), h2)]  # the code: linear
    logged = {}
    m.log = lambda name, value, **kwargs: logged.update({name: value})
    m.log_dict = lambda metrics, **kwargs: logged.update(metrics)
    for stage, want in enumerate(expected):
        m.stage.fill_(stage)
        assert torch.allclose(m.pretrain_step({"x": x}), want), stage
        assert logged == {"train/layer_recon": pytest.approx(2 * float(want.detach())), "train/stage": stage}  # the MSE
    m.stage.fill_(3)  # fine-tuning: the whole autoencoder
    assert torch.allclose(m.pretrain_step({"x": x}), euclidean_loss(m.autoencoder(x)[1], x))
    # without dropout even in training mode (pretrain.py); Glorot weights, under which the output depends on the
    # input (with N(0, 0.01^2) ones it is ~0 whatever comes in)
    m = model(layer_epochs=0, weight_init="glorot").train()
    m.log = lambda name, value, **kwargs: logged.update({name: value})
    logged.clear()
    want = euclidean_loss(m.autoencoder(x)[1], x)
    assert torch.equal(m.pretrain_step({"x": x}), want)
    assert logged == {"train/recon": pytest.approx(2 * float(want.detach()))}


def test_greedy_stages_use_dropout_on_hidden_layers_only():
    torch.manual_seed(0)
    x = digits(64).x
    for dropout, stochastic in ((0.2, True), (0.0, False)):
        m = model(dropout=dropout).train()
        for stage in range(3):
            m.stage.fill_(stage)
            assert (not torch.equal(m.pretrain_step({"x": x}), m.pretrain_step({"x": x}))) == stochastic
    m = model(dropout=0.5).train()
    m.stage.fill_(3)  # fine-tuning without dropout
    assert torch.equal(m.pretrain_step({"x": x}), m.pretrain_step({"x": x}))
    # inverted dropout, as Caffe's and Keras' (the papers' codes): a kept unit is scaled by 1 / (1 - p), so the
    # expected activation is unchanged; eval mode leaves it alone
    ones = torch.ones(200, 500)
    dropped = m.dropout(ones, 0.2)
    assert set(dropped.unique().tolist()) == {0.0, 1.25} and abs(float((dropped == 0).float().mean()) - 0.2) < 0.01
    assert torch.equal(m.eval().dropout(ones, 0.2), ones)


def test_dropout_sits_on_each_pairs_input_and_hidden_output_not_on_the_data_the_code_or_the_frozen_pairs():
    """piiswrong/dec's pretrain.py: a pair's input is dropped out unless it is the data, its encoded output unless it
    is the code, and the frozen pairs below run without dropout (an audit found the tests above passing with dropout
    moved onto the data, onto the code or into the frozen pairs)."""
    torch.manual_seed(0)
    m = model().train()
    x = digits(64).x
    seen, dropout = [], m.dropout
    m.dropout = lambda t, p: seen.append(t.detach().clone()) or dropout(t, p)
    clean = [x, F.relu(m.encoders[0](x))]
    clean.append(F.relu(m.encoders[1](clean[1])))
    # what each stage drops out: (the pair's input, ...) and its hidden output, by shape (hidden_dims [32, 48])
    expected = [[(64, 32)], [(64, 32), (64, 48)], [(64, 48)]]
    for stage in range(3):
        seen.clear()
        m.stage.fill_(stage)
        m.pretrain_step({"x": x})
        assert [tuple(t.shape) for t in seen] == expected[stage], stage
        if stage:  # the input dropped out is the clean output of the frozen pairs
            assert torch.allclose(seen[0], clean[stage]), stage


def test_the_defaults_are_the_papers_budget_and_schedule():
    """50000 iterations a pair on MNIST at batch 256 (183 epochs), dropout 0.2, lr / 10 every 20000 steps, biases at
    twice the lr, momentum over 1000 steps; without greedy epochs the fit is fine-tuning from its start."""
    m = model()
    assert (m.layer_epochs, m.dropout_rate, m.lr_step, m.lr_gamma, m.bias_lr_mult, m.momentum_burnin) == (
        183, 0.2, 20000, 0.1, 2.0, 1000)
    assert int(m.stage) == 0 and m.unfinished_autoencoder() is not None
    m = model(layer_epochs=0)
    assert m.fine_tuning and m.unfinished_autoencoder() is None


def test_the_default_weights_are_the_papers_small_normal():
    """N(0, 0.01^2) weights and zero biases (piiswrong/dec), not the other autoencoders' Glorot default."""
    torch.manual_seed(0)
    m = SAE(n_clusters=10, input_shape=[64])  # 64-500-500-2000-10
    for layer in [*m.encoders, *m.decoders]:
        assert 0.0095 < float(layer.weight.std()) < 0.0105 and abs(float(layer.weight.mean())) < 1e-3, layer
        assert torch.count_nonzero(layer.bias) == 0


def test_a_pretrained_start_refuses_an_sae_checkpoint_of_unfinished_greedy_training(tmp_path):
    """Found by an audit: DEC, IDEC, DEKM (or SAE itself) started from an SAE checkpoint saved during its greedy
    stages, whose upper layer pairs were never trained, without a word. SAE records in its checkpoints that its
    autoencoder is unfinished, and one error names the stage; a finished fit's checkpoint is taken (the fine-tuning
    stage)."""
    from dcl.methods.dec import DEC

    def sae_checkpoint(epochs: int):
        pl.seed_everything(0)
        m = model(layer_epochs=1)
        trainer = pl.Trainer(max_epochs=epochs, logger=False, enable_progress_bar=False, enable_model_summary=False,
                             enable_checkpointing=False, num_sanity_val_steps=0, limit_val_batches=0,
                             accelerator="cpu", default_root_dir=tmp_path)
        ends_within = pytest.warns(UserWarning, match=f"max_epochs {epochs} ends within the 3 epochs of greedy")
        with ends_within if epochs <= 3 else contextlib.nullcontext():  # (1 epoch a pair, 3 pairs)
            trainer.fit(m, digits(256))
        path = tmp_path / f"sae{epochs}.ckpt"
        trainer.save_checkpoint(path)
        return str(path)

    unfinished, finished = sae_checkpoint(2), sae_checkpoint(4)
    with pytest.raises(ConfigError, match=r"\(SAE\) holds an unfinished autoencoder: it ended in its greedy "
                       "layer-wise training, at layer pair 2 of 3: the pairs above it were never trained, and the "
                       "whole autoencoder was never fine-tuned"):
        DEC(n_clusters=10, input_shape=[64], hidden_dims=[32, 48], latent_dim=5, pretrained=unfinished)
    with pytest.raises(ConfigError, match="at layer pair 3 of 3: the whole autoencoder was never fine-tuned"):
        DEC(n_clusters=10, input_shape=[64], hidden_dims=[32, 48], latent_dim=5, pretrained=sae_checkpoint(3))
    dec = DEC(n_clusters=10, input_shape=[64], hidden_dims=[32, 48], latent_dim=5, pretrained=finished)
    assert model(pretrained=finished, layer_epochs=5).fine_tuning  # from a pretrained autoencoder: fine-tuning only
    assert torch.equal(dec.autoencoder.encoder[1][0].weight, torch.load(finished, weights_only=False)["state_dict"][
        "autoencoder.encoder.1.0.weight"])


class Snapshots(pl.Callback):
    """The parameters and the optimizer's groups at the end of every epoch."""

    def __init__(self):
        self.params, self.groups = [], []

    def on_train_epoch_end(self, trainer, pl_module):
        self.params.append({k: v.detach().clone() for k, v in pl_module.named_parameters()})
        self.groups.append([(len(g["params"]), g["lr"]) for g in trainer.optimizers[0].param_groups])


def test_each_stage_trains_only_its_pair_with_a_new_solver_then_fine_tuning_trains_all(tmp_path):
    pl.seed_everything(0)
    m, snaps = model(layer_epochs=2, lr_step=3, momentum_burnin=0), Snapshots()
    before = {k: v.detach().clone() for k, v in m.named_parameters()}
    trainer = pl.Trainer(max_epochs=8, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path, num_sanity_val_steps=0, check_val_every_n_epoch=100,
                         accelerator="cpu", callbacks=[snaps])
    trainer.fit(m, digits())  # 4 steps an epoch: stage 0 epochs 0-1, 1: 2-3, 2: 4-5, fine-tuning 6-7
    pairs = [{f"autoencoder.encoder.1.{2 * i}.weight", f"autoencoder.encoder.1.{2 * i}.bias",
              f"autoencoder.decoder.0.{4 - 2 * i}.weight", f"autoencoder.decoder.0.{4 - 2 * i}.bias"}
             for i in range(3)]
    previous = before
    for epoch, snap in enumerate(snaps.params):
        changed = {k for k in snap if not torch.equal(snap[k], previous[k])}
        assert changed == (pairs[epoch // 2] if epoch < 6 else set(snap)), epoch
        previous = snap
    # weights and biases apart, the biases at twice the lr; each stage's schedule from its start: 8 steps a
    # stage, lr / 10 after every 3
    assert snaps.groups[1] == [(2, pytest.approx(0.1 * 0.1 ** 2)), (2, pytest.approx(0.2 * 0.1 ** 2))]
    assert snaps.groups[2][0] == (2, pytest.approx(0.1 * 0.1))  # stage 1 after 4 of its steps: one division
    assert snaps.groups[6] == [(6, pytest.approx(0.1 * 0.1)), (6, pytest.approx(0.2 * 0.1))]
    assert int(m.stage) == 3


def test_the_learning_rate_steps_by_lr_gamma_every_lr_step_steps_and_biases_learn_faster():
    """An audit: lr_gamma was never set to another value in a test (the paper's 0.1 every 20000 steps)."""
    m = model(lr_step=3, lr_gamma=0.5, bias_lr_mult=2.0)
    config = m.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert config["lr_scheduler"]["interval"] == "step"
    lrs = []
    for _ in range(7):
        lrs.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    assert lrs == [[0.1, 0.2]] * 3 + [[0.05, 0.1]] * 3 + [[0.025, 0.05]]
    burn_in_alone = model(lr_step=0, momentum_burnin=6).configure_optimizers()  # a schedule of momentum only
    assert burn_in_alone["lr_scheduler"]["scheduler"].momentum_burnin == 6
    assert isinstance(model(lr_step=0, momentum_burnin=0).configure_optimizers(), torch.optim.SGD)


def test_bad_settings_are_refused():
    for bad in ({"layer_epochs": -1}, {"dropout": 1.0}, {"lr_step": -5}, {"bias_lr_mult": 0}, {"lr_gamma": 0},
                {"momentum_burnin": -1}):
        with pytest.raises(ConfigError, match=f"{next(iter(bad))} "):  # the message names the setting
            model(**bad)
    with pytest.raises(ConfigError, match="momentum_burnin 0"):  # a burn-in of an optimizer without momentum
        model(optimizer=lambda p: torch.optim.Adam(p, lr=1e-3))
    model(optimizer=lambda p: torch.optim.Adam(p, lr=1e-3), momentum_burnin=0)


class Momenta(pl.Callback):
    def __init__(self):
        self.momenta = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.momenta.append(trainer.optimizers[0].param_groups[0]["momentum"])


def test_each_stage_s_momentum_rises_from_zero_over_the_burn_in_as_the_authors_caffe_solver():
    """piiswrong/dec's solver.cpp: momentum x step / momentum_burnin over a solver's first steps, every stage a new
    solver; the lr schedule (lr_step) runs beside it."""
    pl.seed_everything(0)
    m, momenta = model(layer_epochs=2, momentum_burnin=6, lr_step=4), Momenta()
    trainer = pl.Trainer(max_epochs=8, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, num_sanity_val_steps=0, check_val_every_n_epoch=100,
                         accelerator="cpu", callbacks=[momenta])
    trainer.fit(m, digits())  # 4 steps an epoch: 8 steps a stage, 4 stages
    rise = [pytest.approx(0.9 * k / 6) for k in range(6)] + [pytest.approx(0.9)] * 2
    assert momenta.momenta == rise * 4


def test_dec_starts_from_the_stacked_autoencoder_through_the_cli(tmp_path):
    (tmp_path / "sae").mkdir(), (tmp_path / "dec").mkdir()
    sae = run_cli(["fit", "--config", str(REPO / "configs" / "sae" / "digits.yaml"),
                   "--model.init_args.hidden_dims", "[64, 64]", "--model.init_args.layer_epochs", "10",
                   "--trainer.max_epochs", "60"], tmp_path / "sae")
    assert sae["acc"] > 0.3, sae
    ckpt = next((tmp_path / "sae").rglob("last.ckpt"))
    dec = run_cli(["fit", "--config", str(REPO / "configs" / "dec" / "digits.yaml"),
                   "--model.init_args.hidden_dims", "[64, 64]", "--model.init_args.pretrained", str(ckpt),
                   "--model.init_args.update_interval", "5", "--trainer.max_epochs", "5"], tmp_path / "dec")
    assert dec["acc"] > 0.3, dec
