"""DCFAE (Chang 2022): loss functions alone, the residual nets, the shared adversarial optimization (each side
updates only its own parameters), a bf16 CLI fit on Digits, and exact resume."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from conftest import DCFAE_TINY as TINY, DCFAE_TINY_ARGS as TINY_ARGS, run_cli
from ddp_helpers import (AutocastDtypes, BatchLog, GradientNorms, assert_clipped_after_unscaling,
                         fp16_with_grad_scaler)
from dcl.adversarial import AdversarialOptimization, step_schedulers
from dcl.datamodules.digits import Digits
from dcl.method import ConfigError, weights_from_checkpoint
from dcl.methods.dcfae import (DCFAE, conditional_gaussian_affinities, discriminator_loss, feature_matching_loss,
                               gaussian_affinities, gaussian_kl, generator_adversarial_loss, pixel_reconstruction_loss,
                               similarity_cross_entropy, student_t_affinities)
from dcl.nets.residual import ResidualBlock, ResidualDecoder, ResidualDiscriminator, ResidualEncoder


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small conv nets run far faster on one thread than on an oversubscribed machine's two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---- the similarity cross-entropy -----------------------------------------------------------------------------
@pytest.mark.parametrize("dof", [1.0, 3.0])
def test_similarity_cross_entropy_is_minimal_when_embedding_reproduces_input_similarities(dof):
    torch.manual_seed(0)
    x = torch.randn(40, 6)
    p = student_t_affinities(x, dof)  # input similarities that an embedding y = x reproduces exactly
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    y = x.clone().requires_grad_(True)
    at_match = similarity_cross_entropy(p, student_t_affinities(y, dof))
    assert torch.allclose(at_match, entropy, atol=1e-5)  # H(P, P) = H(P)
    (grad,) = torch.autograd.grad(at_match, y)
    assert grad.abs().max() < 1e-5  # a stationary point
    for scale in (0.1, 0.5, 2.0):  # any other embedding is worse (Gibbs' inequality)
        worse = similarity_cross_entropy(p, student_t_affinities(x + scale * torch.randn_like(x), dof))
        assert worse > entropy + 1e-4
    assert similarity_cross_entropy(p, student_t_affinities(3.0 * x, dof)) > entropy + 1e-4


@pytest.mark.parametrize("dof", [0.5, 1.0, 3.0])
def test_student_t_affinities_are_the_kernel_of_nu_degrees_of_freedom(dof):
    """q_ij = (1 + ||y_i - y_j||^2 / nu)^(-(nu + 1) / 2) / sum_{k != l} (same), written out: the test above
    uses one kernel for both P and Q, so it cannot see a wrong exponent or distance scale."""
    g = torch.Generator().manual_seed(0)
    y = torch.randn(9, 3, generator=g)
    q = student_t_affinities(y, dof)
    d2 = ((y[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    w = (1 + d2 / dof) ** (-(dof + 1) / 2) * (1 - torch.eye(9))
    torch.testing.assert_close(q, w / w.sum(), rtol=1e-4, atol=1e-7)
    if dof != 1.0:
        assert not torch.allclose(q, student_t_affinities(y, 1.0), atol=1e-4)


def test_gaussian_affinities_meet_the_perplexity_and_are_a_joint_distribution():
    def perplexities(p_cond):  # exp(H(P_i)) of each row
        return (-(p_cond * p_cond.clamp_min(1e-30).log()).sum(dim=1)).exp()

    torch.manual_seed(0)
    x = torch.randn(100, 5)
    p_cond = conditional_gaussian_affinities(x, perplexity=20.0)
    assert torch.allclose(p_cond.sum(dim=1), torch.ones(100), atol=1e-5)
    assert (p_cond.diagonal() == 0).all()
    assert torch.allclose(perplexities(p_cond), torch.full((100,), 20.0), rtol=1e-3)
    # invariant to the scale of the latents; the perplexity is capped on small batches
    assert torch.allclose(conditional_gaussian_affinities(1000 * x, 20.0), p_cond, atol=1e-5)
    small = conditional_gaussian_affinities(x[:10], perplexity=30.0)
    assert torch.isfinite(small).all() and torch.allclose(small.sum(1), torch.ones(10), atol=1e-5)
    assert torch.allclose(perplexities(small), torch.full((10,), 3.0), rtol=1e-3)  # (B - 1) / 3 of 9 neighbours
    p = gaussian_affinities(x, 20.0)
    assert torch.allclose(p, p.T) and math.isclose(float(p.sum()), 1.0, rel_tol=1e-5)
    # the embedding that reproduces P best beats a random one
    q_random = student_t_affinities(torch.randn(100, 2))
    assert similarity_cross_entropy(p, p) < similarity_cross_entropy(p, q_random)


def test_vae_gan_loss_terms():
    mu, logvar = torch.randn(7, 4), torch.randn(7, 4)
    expected = torch.distributions.kl_divergence(torch.distributions.Normal(mu, (0.5 * logvar).exp()),
                                                 torch.distributions.Normal(0.0, 1.0)).sum(1).mean()
    assert torch.allclose(gaussian_kl(mu, logvar), expected, atol=1e-5)
    assert gaussian_kl(torch.zeros(3, 4), torch.zeros(3, 4)) == 0
    zero = torch.zeros(5)
    assert math.isclose(float(discriminator_loss(zero, [zero, zero])), 3 * math.log(2), rel_tol=1e-6)
    assert math.isclose(float(generator_adversarial_loss([zero, zero])), 2 * math.log(2), rel_tol=1e-6)
    big = torch.full((5,), 20.0)
    assert discriminator_loss(big, [-big]) < 1e-6 and generator_adversarial_loss([big]) < 1e-6
    f = torch.randn(5, 3, 2, 2)
    assert feature_matching_loss(f, f) == 0
    assert math.isclose(float(feature_matching_loss(f, f + 1)), 0.5 * 12, rel_tol=1e-6)
    # -log p(x | logits): Bernoulli, by hand, summed over the pixels of a sample, averaged over samples
    x, logits = torch.rand(4, 1, 3, 3), torch.randn(4, 1, 3, 3)
    p = torch.sigmoid(logits)
    nll = -(x * p.log() + (1 - x) * (1 - p).log()).sum((1, 2, 3)).mean()
    assert torch.allclose(pixel_reconstruction_loss(logits, x), nll, atol=1e-5)
    assert torch.allclose(pixel_reconstruction_loss(logits, x, "mse"), (p - x).pow(2).sum((1, 2, 3)).mean())
    assert pixel_reconstruction_loss(torch.logit(x.clamp(0.01, 0.99)), x.clamp(0.01, 0.99), "mse") < 1e-10
    with pytest.raises(ValueError, match="unknown pixel loss 'l1'"):
        pixel_reconstruction_loss(logits, x, "l1")


# ---- residual nets --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 16, 16), (1, 28, 28), (3, 13, 9)])
def test_residual_nets_shapes(shape):
    x = torch.rand(2, *shape)
    mu, logvar = ResidualEncoder(shape, 5, (4, 8, 16))(x)
    assert mu.shape == logvar.shape == (2, 5)
    assert ResidualDecoder(shape, 5, (4, 8, 16))(mu).shape == x.shape
    logits, features = ResidualDiscriminator(shape, (4, 8, 16))(x)
    assert logits.shape == (2,) and len(features) == 3 and features[1].shape[1] == 8


def test_residual_nets_are_basic_blocks_with_their_norm_and_mirrored_sizes():
    """What a shape test cannot see: each block is He et al.'s basic block, conv3x3 -> norm -> act -> conv3x3 ->
    norm, a norm after every conv of the stem and the blocks (their convs then without bias, which the norm's shift
    replaces); BatchNorm by default in the encoder and decoder, no norm and LeakyReLU in the discriminator; GroupNorm
    with the most groups up to 8 that divide the channels; nearest upsampling; and the decoder's stages go through
    the encoder's channels and sizes in reverse (a rectangular image: height and width kept apart), to logits."""
    from dcl.nets.residual import make_norm

    def norms(net):
        return [type(m).__name__ for m in net.modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm))]

    shape = (1, 13, 9)
    encoder, decoder = ResidualEncoder(shape, 5, (4, 8)), ResidualDecoder(shape, 5, (4, 8))
    assert norms(encoder) == ["BatchNorm2d"] * 5 and norms(decoder) == ["BatchNorm2d"] * 4  # stem + 2 x 2 blocks
    discriminator = ResidualDiscriminator(shape, (4, 8))
    assert norms(discriminator) == [] and isinstance(discriminator.stem[1], nn.LeakyReLU)
    for norm, kind in (("batch", nn.BatchNorm2d), ("group", nn.GroupNorm), ("none", nn.Identity)):
        block = ResidualBlock(4, 12, "down", norm=norm)
        assert isinstance(block.norm1, kind) and isinstance(block.norm2, kind), norm
        assert (block.conv1.bias is None) == (block.conv2.bias is None) == (norm != "none"), norm
    assert [make_norm("group", c).num_groups for c in (12, 64, 7, 20)] == [6, 8, 7, 5]
    assert ResidualBlock(8, 4, "up", out_size=(5, 7)).up.mode == "nearest"

    x = torch.rand(2, *shape)
    h, down = encoder.stem(x), []
    for stage in encoder.stages:
        h = stage(h)
        down.append(tuple(h.shape[1:]))
    assert isinstance(decoder.fc[1], nn.ReLU) and decoder.out.kernel_size == (3, 3)
    h, up = decoder.fc(torch.randn(2, 5)), []
    for stage in decoder.stages:
        up.append(tuple(h.shape[1:]))
        h = stage(h)
    assert down == [(4, 7, 5), (8, 4, 3)] and up == down[::-1] and tuple(h.shape[1:]) == (4, 13, 9)
    logits = decoder(torch.randn(2, 5))
    assert logits.shape == (2, *shape) and logits.min() < 0 < logits.max()  # logits, not pixels


def test_residual_false_is_the_same_stack_without_skips():
    """The paper's residual vs plain ablation: ``residual: false`` keeps every conv, drops every skip, so a block
    computes act(norm(conv2(act(norm(conv1(x)))))) and nothing else."""
    torch.manual_seed(0)
    plain = DCFAE(10, (1, 8, 8), residual=False, **TINY)
    skips = DCFAE(10, (1, 8, 8), **TINY)
    blocks = [m for m in plain.modules() if isinstance(m, ResidualBlock)]
    assert blocks and all(b.skip is None for b in blocks)
    assert all(b.skip is not None for b in skips.modules() if isinstance(b, ResidualBlock))
    assert plain.hparams.residual is False
    convs = lambda m: [n for n, _ in m.named_parameters() if ".skip." not in n]  # noqa: E731
    assert convs(plain) == convs(skips)  # the same layers but the 1x1 skip convs
    block = blocks[1].eval()
    x = torch.randn(3, block.conv1.in_channels, 4, 4)
    expected = block.act2(block.norm2(block.conv2(block.act1(block.norm1(block.conv1(block.up(x)))))))
    torch.testing.assert_close(block(x), expected)
    mu, _ = plain.fae.encoder(torch.rand(2, 1, 8, 8))
    assert plain.fae.decoder(mu).shape == (2, 1, 8, 8)


def test_bad_configuration_is_a_config_error():
    with pytest.raises(ConfigError, match="DCFAE needs image inputs.*flatten: false"):
        DCFAE(10, (64,))
    with pytest.raises(ConfigError, match="feature_layer"):
        DCFAE(10, (1, 8, 8), discriminator_channels=(4, 8), feature_layer=2)
    with pytest.raises(ConfigError, match="generator_steps"):
        DCFAE(10, (1, 8, 8), generator_steps=0)
    with pytest.raises(ConfigError, match="input_similarity"):
        DCFAE(10, (1, 8, 8), input_similarity="cosine")
    with pytest.raises(ConfigError, match="embedding_dim must be an integer >= 1, got 0"):
        DCFAE(10, (1, 8, 8), embedding_dim=0)
    with pytest.raises(ConfigError, match=r"embedding size \(latent_dim\) must be an integer >= 1, got 0"):
        DCFAE(10, (1, 8, 8), latent_dim=0)
    for weight in ("kl_weight", "pixel_weight", "feature_weight", "adversarial_weight"):
        with pytest.raises(ConfigError, match=r"the balance weights \(kl_weight, .*\) must be >= 0"):
            DCFAE(10, (1, 8, 8), **{weight: -0.1})
    for weights in ({"pixel_weight": 0.0, "feature_weight": 0.0}, {"pixel_weight": 0.0, "adversarial": False}):
        with pytest.raises(ConfigError, match="DCFAE needs a reconstruction term: set pixel_weight > 0"):
            DCFAE(10, (1, 8, 8), **weights)
    with pytest.raises(ConfigError, match="pixel_loss must be one of .*, got 'l1'"):
        DCFAE(10, (1, 8, 8), pixel_loss="l1")
    with pytest.raises(ConfigError, match="dof must be > 0 and perplexity > 1, got dof=0.0, perplexity=30"):
        DCFAE(10, (1, 8, 8), dof=0.0)
    with pytest.raises(ConfigError, match="dof must be > 0 and perplexity > 1, got dof=1.0, perplexity=1.0"):
        DCFAE(10, (1, 8, 8), perplexity=1.0)
    with pytest.raises(ConfigError, match="fae_epochs must be >= 0, got -1"):
        DCFAE(10, (1, 8, 8), fae_epochs=-1)
    with pytest.raises(ConfigError, match=r"gradient_clip_val must be >= 0 \(or null for no clipping\), got -1.0"):
        DCFAE(10, (1, 8, 8), gradient_clip_val=-1.0)
    with pytest.raises(ConfigError, match=r"gradient_clip_algorithm must be one of \('norm', 'value'\), got 'max'"):
        DCFAE(10, (1, 8, 8), gradient_clip_algorithm="max")
    # the residual networks' own refusals (ValueError, as the CLI reports them)
    for settings, message in [({"norm": "layer"}, r"unknown norm 'layer'; choose one of \('batch', 'group', 'none'\)"),
                              ({"channels": ()}, "ResidualEncoder needs at least one stage and blocks_per_stage >= 1"),
                              ({"blocks_per_stage": 0}, "ResidualEncoder needs at least one stage")]:
        with pytest.raises(ValueError, match=message):
            DCFAE(10, (1, 8, 8), **settings)
    with pytest.raises(ValueError, match="ResidualDiscriminator needs at least one stage"):
        ResidualDiscriminator((1, 8, 8), channels=())
    with pytest.raises(ValueError, match="resample must be None, 'down' or 'up', got 'pool'"):
        ResidualBlock(4, 4, resample="pool")
    with pytest.raises(ValueError, match="an upsampling block needs out_size"):
        ResidualBlock(4, 4, resample="up")


def test_bernoulli_pixel_loss_refuses_pixels_outside_0_1(tmp_path):
    """BCE with targets outside [0, 1] has no minimum: on 8-bit images given as 0..255 (the estimator casts them to
    float32 as they are) train/recon fell to -6417, then -10977. Refused before training, whatever serves them."""
    import numpy as np

    from dcl import DeepClusterer
    from dcl.datamodules.arrays import Arrays

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(40, 1, 8, 8), dtype=np.uint8)
    args = dict(TINY, fae_epochs=1)
    fit = dict(max_epochs=1, batch_size=20, random_state=0)
    with pytest.raises(ConfigError, match=r"pixel_loss bce .* InMemory serves values in \[0, 255\].*scale the "
                                          r"pixels to \[0, 1\].*pixel_loss: mse"):
        DeepClusterer("DCFAE", 2, method_args=args, **fit).fit(images)
    np.save(tmp_path / "img.npy", images)  # Arrays serves uint8 in [0, 1], but not once standardized
    model = DCFAE(2, (1, 8, 8), **TINY)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    with pytest.raises(ConfigError, match=r"Arrays serves values in \[-\d\.\d+, \d\.\d+\]"):
        trainer.fit(model, datamodule=Arrays(str(tmp_path / "img.npy"), n_clusters=2, standardize=True))
    assert trainer.global_step == 0
    # pixels in [0, 1], or the squared error: trained
    DeepClusterer("DCFAE", 2, method_args=args, **fit).fit(images / 255.0)
    DeepClusterer("DCFAE", 2, method_args=dict(args, pixel_loss="mse"), **fit).fit(images)


# ---- the shared adversarial optimization ---------------------------------------------------------------------
class _ToyGAN(pl.LightningModule):
    """A 1-D GAN that is not DCFAE: the adversarial helper is reusable by any LightningModule."""

    def __init__(self, generator_steps=1, discriminator_steps=1, clip=None, discriminator_first=True,
                 clip_algorithm="norm"):
        super().__init__()
        self.automatic_optimization = False
        self.g = nn.Linear(2, 1)
        self.d = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1))
        self.adv = AdversarialOptimization(
            lambda p: torch.optim.SGD(p, lr=0.05), lambda p: torch.optim.SGD(p, lr=0.05),
            discriminator_scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, 1, gamma=0.5),
            generator_steps=generator_steps, discriminator_steps=discriminator_steps, gradient_clip_val=clip,
            gradient_clip_algorithm=clip_algorithm, discriminator_first=discriminator_first)
        self.calls = {"g": 0, "d": 0}
        self.order = ""  # the sides' steps, in order

    def configure_optimizers(self):
        return self.adv.configure(self.g.parameters(), self.d.parameters())

    def g_loss(self, x):
        self.calls["g"] += 1
        self.order += "g"
        assert all(p.grad is None for p in self.parameters())  # nothing left over from the other side
        fake = self.g(torch.randn(len(x), 2))
        return nn.functional.softplus(-self.d(fake)).mean()

    def d_loss(self, x):
        self.calls["d"] += 1
        self.order += "d"
        assert all(p.grad is None for p in self.parameters())
        fake = self.g(torch.randn(len(x), 2))  # not detached on purpose: the toggle must keep G out of it
        return nn.functional.softplus(-self.d(x)).mean() + nn.functional.softplus(self.d(fake)).mean()

    def training_step(self, batch, batch_idx):
        x = batch[0]
        g_opt, d_opt = self.optimizers()
        before = {n: p.detach().clone() for n, p in self.named_parameters()}
        d_params = {f"d.{n}" for n, _ in self.d.named_parameters()}
        # discriminator side alone: G unchanged
        self.logs = self.adv.step(self, lambda: self.g_loss(x), lambda: self.d_loss(x), g_opt, d_opt)
        after = dict(self.named_parameters())
        for n, p in after.items():
            if n not in d_params:
                assert not torch.equal(before[n], p)  # the generator moved in its own step...
        self.log("d_lr", d_opt.param_groups[0]["lr"])

    def on_train_epoch_end(self):
        step_schedulers(self)


def test_adversarial_helper_alternates_and_is_reusable():
    data = torch.utils.data.TensorDataset(torch.randn(64, 1) + 3)
    model = _ToyGAN(generator_steps=2, discriminator_steps=3, clip=0.1)
    trainer = pl.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_train_batches=2, callbacks=[GradientNorms()])
    trainer.fit(model, torch.utils.data.DataLoader(data, batch_size=16))
    assert model.calls == {"g": 2 * 2 * 2, "d": 3 * 2 * 2} and model.order == "dddgg" * 4
    used = [after for _, after in GradientNorms.steps]  # each side's gradients, clipped to the norm 0.1
    assert len(used) == 20 and max(used) <= 0.1 * (1 + 1e-4) and sum(u > 0.1 * (1 - 1e-4) for u in used) >= 5
    assert trainer.global_step == (2 + 3) * 2 * 2  # global_step counts optimizer steps
    assert trainer.lr_scheduler_configs[0].scheduler.get_last_lr()[0] == pytest.approx(0.05 * 0.25)
    assert all(p.requires_grad for p in model.parameters())  # toggles undone
    assert not any(o._optimizer_step_pre_hooks for o in trainer.optimizers)  # each step's clipping hook removed
    assert model.logs.keys() == {"d_loss", "g_loss"} and not any(v.requires_grad for v in model.logs.values())
    model = _ToyGAN(generator_steps=2, discriminator_steps=1, discriminator_first=False)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_train_batches=2)
    trainer.fit(model, torch.utils.data.DataLoader(data, batch_size=16))
    assert model.order == "ggd" * 2


@pytest.mark.parametrize("algorithm", ["norm", "value"])
def test_each_side_clips_its_gradients_by_the_chosen_algorithm(algorithm):
    data = torch.utils.data.TensorDataset(torch.randn(16, 1) + 3)
    model = _ToyGAN(clip=1e-3, clip_algorithm=algorithm)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_train_batches=1)
    trainer.fit(model, torch.utils.data.DataLoader(data, batch_size=16))
    # one SGD step of lr 0.05 a side: the step is the clipped gradient x 0.05 (to 1% in float32: the step is small
    # beside the weights)
    for side in ("g.", "d."):
        step = torch.cat([(p.detach() - before[n]).flatten() / 0.05 for n, p in model.named_parameters()
                          if n.startswith(side)])
        if algorithm == "value":  # each element at most 1e-3; several clipped, so the norm exceeds it
            assert step.abs().max() <= 1.01e-3 and step.norm() > 1.5e-3
        else:
            assert step.norm() <= 1.01e-3


def test_adversarial_settings_are_checked_when_built():
    """Each refusal when the helper is built, not at the first step; and DCGAN's Adam is the default of both sides."""
    for settings, message in [({"generator_steps": 1.5}, "integers >= 1, got 1.5 and 1"),
                              ({"discriminator_steps": 0}, "integers >= 1, got 1 and 0"),
                              ({"gradient_clip_val": -1.0}, "gradient_clip_val must be >= 0"),
                              ({"gradient_clip_algorithm": "max"}, "gradient_clip_algorithm must be one of"),
                              ({"discriminator_optimizer": lambda p: torch.optim.Adam(p, lr=-1.0)},
                               "discriminator_optimizer refuses its settings")]:
        with pytest.raises((ConfigError, ValueError), match=message):
            AdversarialOptimization(**settings)
    sides = AdversarialOptimization().configure(nn.Linear(2, 2).parameters(), nn.Linear(2, 1).parameters())
    for optimizer in [side["optimizer"] for side in sides]:
        assert isinstance(optimizer, torch.optim.Adam)
        assert (optimizer.defaults["lr"], optimizer.defaults["betas"]) == (2e-4, (0.5, 0.999))


def test_each_parameter_belongs_to_one_side():
    shared, own = nn.Linear(2, 2), nn.Linear(2, 1)
    adversarial = AdversarialOptimization()
    with pytest.raises(ConfigError, match="on both the generator and the discriminator side"):
        adversarial.configure(shared.parameters(), [*shared.parameters(), *own.parameters()])
    with pytest.raises(ConfigError, match="parameters on both"):
        adversarial.configure(own.parameters(), [])


def test_generator_loss_is_the_weighted_vae_gan_sum_and_its_gan_term_reaches_only_the_decoder():
    """The encoder + decoder loss is kl_weight L_prior + pixel_weight L_pixel + feature_weight L_feat +
    adversarial_weight L_adv, and, as in VAE-GAN, L_adv trains the decoder only: with the same weights and noise, a
    model without the GAN term has the same encoder gradient and another decoder gradient. (The alternation test
    above checks which optimizer steps, not what the generator's loss is made of: dropping L_adv, or letting it
    reach the encoder, passed it.)"""
    weights = dict(kl_weight=0.7, pixel_weight=1.3, feature_weight=0.4)
    torch.manual_seed(0)
    gan = DCFAE(10, (1, 8, 8), fae_epochs=5, use_dense=False, adversarial_weight=0.9, **weights, **TINY)
    vae_feat = DCFAE(10, (1, 8, 8), fae_epochs=5, use_dense=False, adversarial_weight=0.0, **weights, **TINY)
    vae_feat.load_state_dict(gan.state_dict())
    x = torch.rand(16, 1, 8, 8)
    torch.manual_seed(1)
    loss, logs = gan.generator_loss(x)
    torch.manual_seed(1)
    loss_without_gan, logs_without = vae_feat.generator_loss(x)
    expected = (0.7 * logs["train/kl"] + 1.3 * logs["train/recon"] + 0.4 * logs["train/feature_recon"]
                + 0.9 * logs["train/g_adv"])
    torch.testing.assert_close(loss.detach(), expected)
    assert float(logs["train/g_adv"]) > 0.1
    torch.testing.assert_close(loss_without_gan.detach(), expected - 0.9 * logs["train/g_adv"])

    def grads(model, loss, prefix):
        params = [p for n, p in model.named_parameters() if n.startswith(prefix)]
        return torch.cat([g.flatten() for g in torch.autograd.grad(loss, params, retain_graph=True)])

    torch.testing.assert_close(grads(gan, loss, "fae.encoder"), grads(vae_feat, loss_without_gan, "fae.encoder"))
    assert not torch.allclose(grads(gan, loss, "fae.decoder"), grads(vae_feat, loss_without_gan, "fae.decoder"))


def _batch_with_fixed_noise(model: DCFAE) -> tuple[Tensor, Tensor, Tensor]:
    """A batch of 6 images and the noise ``model`` will draw for it, in order: eps for its code z, then z_p."""
    x = torch.rand(6, 1, 8, 8)
    eps, z_p = torch.randn(6, 4), torch.randn(6, 4)
    draws = iter([eps, z_p])
    model.noise_like = lambda t: next(draws)
    return x, eps, z_p


def test_generator_loss_terms_written_out_by_hand():
    """An audit: the test above builds its expected sum from the logs generator_loss returns, so which images each
    term compares was never checked (e.g. feature matching against the prior samples instead of the reconstructions
    would pass). Here every term is computed from the networks, with separate passes (group norm: no batch
    coupling) and fixed noise: L_prior KL(N(mu, s^2) || N(0, I)), L_pixel Bernoulli -log p(x | Dec(z)), L_feat
    between Dis_l(x) and Dis_l(x~), L_adv -log D of Dec(z) and Dec(z_p)."""
    torch.manual_seed(0)
    model = DCFAE(10, (1, 8, 8), fae_epochs=5, use_dense=False, norm="group", kl_weight=0.7, pixel_weight=1.3,
                  feature_weight=0.4, adversarial_weight=0.9, **TINY)
    x, eps, z_p = _batch_with_fixed_noise(model)
    loss, logs = model.generator_loss(x)
    enc, dec, dis = model.fae.encoder, model.fae.decoder, model.fae.discriminator
    mu, logvar = enc(x)
    z = mu + eps * (0.5 * logvar).exp()
    recon = torch.sigmoid(dec(z))
    kl = (0.5 * (mu ** 2 + logvar.exp() - 1 - logvar).sum(1)).mean()
    pixel = -(x * recon.log() + (1 - x) * (1 - recon).log()).flatten(1).sum(1).mean()
    feat = 0.5 * (dis(x)[1][0] - dis(recon)[1][0]).pow(2).flatten(1).sum(1).mean()
    # L_adv on Dec(z) with z detached (VAE-GAN: the GAN term does not reach the encoder) and on Dec(z_p)
    adv = sum(-F.logsigmoid(dis(torch.sigmoid(dec(fake)))[0]).mean() for fake in (z.detach(), z_p))
    for name, value in [("kl", kl), ("recon", pixel), ("feature_recon", feat), ("g_adv", adv)]:
        torch.testing.assert_close(logs[f"train/{name}"], value.detach(), rtol=1e-4, atol=1e-5, msg=name)
    expected = 0.7 * kl + 1.3 * pixel + 0.4 * feat + 0.9 * adv
    torch.testing.assert_close(loss.detach(), expected.detach(), rtol=1e-4, atol=1e-5)
    # and the gradients: the same values with another path (e.g. L_feat on the detached-code reconstructions, which
    # equal x~ but do not reach the encoder) train something else
    params = [*enc.parameters(), *dec.parameters()]
    for got, want in zip(torch.autograd.grad(loss, params), torch.autograd.grad(expected, params)):
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-5)


def test_discriminator_loss_written_out_by_hand():
    """L_D = -log D(x) - log(1 - D(x~)) - log(1 - D(x_p)), x~ = Dec(z) of the code sampled from q(z|x), x_p = Dec(z_p),
    from separate passes (group norm) and fixed noise; and the logged scores, mean D(x) and mean D of the two
    generated sets."""
    torch.manual_seed(0)
    model = DCFAE(10, (1, 8, 8), fae_epochs=5, use_dense=False, norm="group", **TINY)
    x, eps, z_p = _batch_with_fixed_noise(model)
    loss, logs = model.discriminator_step_loss(x)
    enc, dec, dis = model.fae.encoder, model.fae.decoder, model.fae.discriminator
    with torch.no_grad():
        mu, logvar = enc(x)
        recon, prior = torch.sigmoid(dec(mu + eps * (0.5 * logvar).exp())), torch.sigmoid(dec(z_p))
    real, fake_recon, fake_prior = (dis(t)[0] for t in (x, recon, prior))
    expected = -F.logsigmoid(real).mean() - F.logsigmoid(-fake_recon).mean() - F.logsigmoid(-fake_prior).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(logs["train/d_score"], torch.sigmoid(real).mean().detach())
    fake_scores = torch.sigmoid(torch.cat([fake_recon, fake_prior])).mean()
    torch.testing.assert_close(logs["train/g_score"], fake_scores.detach())


def test_the_latent_clustered_is_the_posterior_mean():
    model = DCFAE(10, (1, 8, 8), fae_epochs=5, use_dense=False, **TINY).train()
    x = torch.rand(6, 1, 8, 8)
    torch.testing.assert_close(model.latent(x), model.fae.encoder(x)[0], rtol=0, atol=0)  # no sample drawn


def test_embedding_loss_is_the_cross_entropy_of_the_latents_similarities_and_the_dense_outputs_student_t():
    """An audit: DCFAE's phase-2 loss was never written out. H(P, Q) = -sum_{i != j} p_ij log q_ij, P the
    perplexity-calibrated joint similarities of the FAE latents, Q the Student-t (nu = dof) similarities of the
    dense network's outputs."""
    torch.manual_seed(0)
    model = DCFAE(10, (1, 8, 8), fae_epochs=0, dof=3.0, **TINY)
    mu = torch.randn(12, 4)
    loss = model.embedding_loss(mu)
    with torch.no_grad():
        p = gaussian_affinities(mu, TINY["perplexity"])
        y = model.dense_embedding(mu)
        kernel = (1 + ((y[:, None] - y[None]) ** 2).sum(-1) / 3.0) ** -2.0
        kernel.fill_diagonal_(0)
        q = kernel / kernel.sum()
        off = ~torch.eye(12, dtype=torch.bool)
        expected = -(p[off] * q[off].log()).sum()
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-6)


def test_each_optimizer_setting_reaches_its_side_and_blocks_per_stage_deepens_every_network():
    """An audit: generator_optimizer and blocks_per_stage were never set in a test."""
    from functools import partial

    model = DCFAE(10, (1, 8, 8), generator_optimizer=partial(torch.optim.SGD, lr=0.011),
                  discriminator_optimizer=partial(torch.optim.RMSprop, lr=0.022),
                  embedding_optimizer=partial(torch.optim.Adagrad, lr=0.033), **TINY)
    generator, discriminator = (entry["optimizer"] for entry in model.configure_optimizers())
    assert (type(generator), generator.param_groups[0]["lr"]) == (torch.optim.SGD, 0.011)
    assert (type(discriminator), discriminator.param_groups[0]["lr"]) == (torch.optim.RMSprop, 0.022)
    assert {id(p) for g in generator.param_groups for p in g["params"]} == {
        id(p) for p in [*model.fae.encoder.parameters(), *model.fae.decoder.parameters()]}
    model.embedding_started.fill_(True)
    dense = model.configure_optimizers()["optimizer"]
    assert (type(dense), dense.param_groups[0]["lr"]) == (torch.optim.Adagrad, 0.033)
    assert {id(p) for g in dense.param_groups for p in g["params"]} == {id(p) for p in model.dense.parameters()}

    def blocks(net):
        return sum(isinstance(m, ResidualBlock) for m in net.modules())

    one, two = DCFAE(10, (1, 8, 8), **TINY).fae, DCFAE(10, (1, 8, 8), blocks_per_stage=2, **TINY).fae
    for name in ("encoder", "decoder", "discriminator"):
        assert blocks(getattr(two, name)) == 2 * blocks(getattr(one, name)) > 0, name


def test_each_side_updates_only_its_own_parameters(monkeypatch):
    """D step: encoder/decoder unchanged; G step (back-propagating through D): discriminator unchanged."""
    model = DCFAE(10, (1, 8, 8), fae_epochs=5, use_dense=False, **TINY)
    gen = {n for n, _ in model.named_parameters() if n.startswith(("fae.encoder", "fae.decoder"))}
    disc = {n for n, _ in model.named_parameters() if n.startswith("fae.discriminator")}
    snapshots = []
    original_g, original_d = DCFAE.generator_loss, DCFAE.discriminator_step_loss

    def snap(kind):
        params = dict(model.named_parameters())
        assert all(p.grad is None for p in params.values()), "a gradient leaked from the other side's step"
        snapshots.append((kind, {n: p.detach().clone() for n, p in params.items()}))

    monkeypatch.setattr(DCFAE, "generator_loss", lambda self, x: (snap("g"), original_g(self, x))[1])
    monkeypatch.setattr(DCFAE, "discriminator_step_loss", lambda self, x: (snap("d"), original_d(self, x))[1])
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, Digits(flatten=False, batch_size=64))
    snap("end")
    assert [k for k, _ in snapshots] == ["d", "g", "d", "g", "end"]
    for (kind, before), (_, after) in zip(snapshots, snapshots[1:]):
        moved = {n for n in before if not torch.equal(before[n], after[n])}
        if kind == "d":  # the discriminator step
            assert moved == disc
        else:  # the generator step
            assert moved == gen


# ---- end to end -----------------------------------------------------------------------------------------------
def test_cli_fit_on_digits_bf16(tmp_path):
    scores = run_cli(["fit", "--model", "DCFAE", "--data", "Digits", "--data.flatten", "false",
                      "--data.batch_size", "64", "--seed_everything", "0", *TINY_ARGS,
                      "--model.fae_epochs", "2", "--trainer.max_epochs", "3", "--trainer.precision", "bf16-mixed",
                      "--trainer.logger", "lightning.pytorch.loggers.CSVLogger",
                      "--trainer.logger.save_dir", str(tmp_path), "--trainer.enable_progress_bar", "false",
                      "--trainer.enable_checkpointing", "false", "--trainer.check_val_every_n_epoch", "2",
                      "--trainer.limit_train_batches", "3", "--trainer.callbacks+=ddp_helpers.AutocastDtypes"],
                     tmp_path, quiet=False)
    assert torch.bfloat16 in AutocastDtypes.seen, "the fit did not run under bf16 autocast"
    # 9 steps of FAE and embedding network: far from converged, but clusters of the data, not chance (~0.11)
    assert scores["k"] == 10 and scores["k_used"] >= 8 and 0.2 < scores["acc"] <= 1 and 0.1 < scores["nmi"] <= 1
    import csv
    rows = list(csv.DictReader(next(tmp_path.rglob("metrics.csv")).open()))
    logged = {k: float(v) for row in rows for k, v in row.items() if v not in ("", None) and k != "step"}
    for name in ("train/kl", "train/recon", "train/feature_recon", "train/g_adv", "train/d_loss",
                 "train/d_score", "train/g_score", "train/similarity_ce", "val/acc"):
        assert name in logged and math.isfinite(logged[name]), name
    assert 0 < logged["train/d_score"] < 1 and 0 < logged["train/g_score"] < 1


@pytest.mark.parametrize("variant", ["adversarial", "input_similarity"])
def test_the_ablation_settings_fit_end_to_end(variant, tmp_path):
    """The settings of the paper's ablations that only benchmarks ran (an audit): adversarial false (the plain VAE:
    no discriminator, no GAN terms) and input_similarity student (phase 2's P from a Student-t kernel)."""
    import csv
    import json

    value = "false" if variant == "adversarial" else "student"
    run_cli(["fit", "--model", "DCFAE", "--data", "Digits", "--data.flatten", "false", "--data.batch_size", "64",
             "--seed_everything", "0", *TINY_ARGS, f"--model.{variant}", value, "--model.fae_epochs", "2",
             "--trainer.max_epochs", "4", "--trainer.limit_train_batches", "4",
             "--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", str(tmp_path),
             "--trainer.enable_progress_bar", "false", "--trainer.check_val_every_n_epoch", "100",
             "--trainer.callbacks+=ModelCheckpoint", "--trainer.callbacks.init_args.save_on_train_epoch_end", "true"],
            tmp_path, quiet=False)
    scores = json.loads(next(tmp_path.rglob("final_scores.json")).read_text())
    assert scores["k"] == 10 and 0.15 < scores["acc"] <= 1  # 8 + 8 steps: clusters of the data, not chance
    logged = {k for row in csv.DictReader(next(tmp_path.rglob("metrics.csv")).open()) for k, v in row.items() if v}
    assert {"train/kl", "train/recon", "train/similarity_ce"} <= logged
    model = DCFAE.load_from_checkpoint(next(tmp_path.rglob("*.ckpt")))
    if variant == "adversarial":
        assert model.fae.discriminator is None
        assert not any(k.startswith("fae.discriminator") for k in model.state_dict())
        assert not {"train/d_loss", "train/g_adv"} & logged
    else:
        z = torch.randn(6, 4)
        torch.testing.assert_close(model.input_affinities(z), student_t_affinities(z, model.dof))
        assert "train/d_loss" in logged


def test_sixteen_bit_with_a_grad_scaler_clips_each_side_after_unscaling(tmp_path):
    """Each side's step under 16-mixed's GradScaler: its gradients are clipped once unscaled. Clipping them before
    the optimizer's step (Lightning's manual-optimization recipe) clips the still-scaled gradients, and the step
    then moves the weights by a loss scale (2^16 at first) less than asked."""
    pl.seed_everything(0)
    model = DCFAE(10, (1, 8, 8), fae_epochs=1, gradient_clip_val=0.05, **TINY)
    trainer = pl.Trainer(max_epochs=2, limit_train_batches=6, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         check_val_every_n_epoch=100, default_root_dir=tmp_path,
                         plugins=[fp16_with_grad_scaler()],
                         callbacks=[GradientNorms(), AutocastDtypes()])
    trainer.fit(model, Digits(flatten=False, batch_size=32))
    assert GradientNorms.scaler and torch.float16 in AutocastDtypes.seen
    assert bool(model.embedding_started)  # both phases ran: the FAE's two sides, then the embedding network
    assert_clipped_after_unscaling(GradientNorms.steps, 0.05, min_steps=12)


def test_final_scores_and_plots_are_logged_on_the_step_axis_of_the_other_rows(tmp_path):
    """Found by a user: DCFAE steps two optimizers a batch in phase 1 and one per similarity_batches batches in
    phase 2, so trainer.global_step, at which FinalScores and ClusteringPlots logged, is not the step of
    Lightning's own rows (batches that stepped): the final/* row came at step 79, before the last validation's at
    115. Here: 4 epochs of 3 batches, validated after each (steps 2, 5, 8, 11); global_step ends at 1 x 6 + 3 x 1."""
    from lightning.pytorch.loggers import CSVLogger

    from conftest import ImageLogger, logged_rows
    from dcl.callbacks import ClusteringPlots
    from dcl.cli import FinalScores

    pl.seed_everything(0)
    model = DCFAE(10, (1, 8, 8), fae_epochs=1, similarity_batches=3, **TINY)
    csv, images = CSVLogger(tmp_path, name="run"), ImageLogger(tmp_path)
    trainer = pl.Trainer(max_epochs=4, limit_train_batches=3, num_sanity_val_steps=0, logger=[csv, images],
                         callbacks=[FinalScores(), ClusteringPlots(max_points=100)], enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, Digits(flatten=False, batch_size=32))
    assert trainer.global_step == 9
    assert [int(row["step"]) for row in logged_rows(csv, "val/acc")] == [2, 5, 8, 11]
    assert [int(row["step"]) for row in logged_rows(csv, "final/acc")] == [12]  # after the last validation
    assert set(images.images) == {"plots/embedding", "plots/confusion", "plots/cluster_sizes"}
    assert set(images.image_steps.values()) == {12}


def test_learning_rate_monitor_names_each_sides_scheduler(tmp_path):
    """Found by a user: build_optimizer named no scheduler, so LearningRateMonitor logged the generator's and then the
    dense network's learning rate both as lr-Adam (one series), and the discriminator's as lr-Adam-1. Here: phase 1
    in epoch 0, phase 2 from epoch 1 (the monitor reads the learning rates as an epoch starts, before phase 2's
    optimizer is built: its first reading is at epoch 2); each scheduler halves its learning rate every epoch."""
    from functools import partial

    from lightning.pytorch.callbacks import LearningRateMonitor
    from lightning.pytorch.loggers import CSVLogger

    from conftest import logged_rows

    halve = partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5)
    pl.seed_everything(0)
    model = DCFAE(10, (1, 8, 8), fae_epochs=1, generator_scheduler=halve, discriminator_scheduler=halve,
                  embedding_scheduler=halve, **TINY)
    logger = CSVLogger(tmp_path, name="run")
    trainer = pl.Trainer(max_epochs=3, limit_train_batches=2, num_sanity_val_steps=0, check_val_every_n_epoch=100,
                         logger=logger, callbacks=[LearningRateMonitor()], enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, Digits(flatten=False, batch_size=32))
    columns = set(logged_rows(logger, "step")[0])
    assert {c for c in columns if c.startswith("lr-")} == {"lr-generator", "lr-discriminator", "lr-embedding"}
    series = {name: [float(row[name]) for row in logged_rows(logger, name)]
              for name in ("lr-generator", "lr-discriminator", "lr-embedding")}
    assert series == {"lr-generator": [1e-3, 5e-4], "lr-discriminator": [2e-4, 1e-4], "lr-embedding": [5e-4]}


def _fit(tmp_path, max_epochs, ckpt_path=None, callbacks=()):
    pl.seed_everything(0)
    model = DCFAE(10, (1, 8, 8), fae_epochs=1, **TINY)
    trainer = pl.Trainer(max_epochs=max_epochs, limit_train_batches=2, num_sanity_val_steps=0,
                         check_val_every_n_epoch=100, logger=False, enable_progress_bar=False,
                         enable_model_summary=False,
                         callbacks=[pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True), *callbacks])
    trainer.fit(model, Digits(flatten=False, batch_size=32), ckpt_path=ckpt_path)
    return model, trainer


def test_resume_in_the_embedding_phase_is_exact(tmp_path):
    full, _ = _fit(tmp_path / "full", 3)
    _fit(tmp_path / "part", 2)
    batches = BatchLog()
    resumed, trainer = _fit(tmp_path / "part", 3, ckpt_path=str(tmp_path / "part" / "last.ckpt"), callbacks=[batches])
    assert batches.batches == [(2, 0), (2, 1)]  # it resumed: only the last epoch's batches ran
    assert bool(resumed.embedding_started) and len(trainer.optimizers) == 1
    assert not any(p.requires_grad for p in resumed.fae.parameters())  # FAE stays frozen after resume
    # the networks (FAE with its BatchNorm statistics, dense network) continue exactly; the final k-means
    # centers are left out (the interrupted run's own final k-means advanced the k-means seed counter)
    state = resumed.state_dict()
    for n, a in full.state_dict().items():
        if n != "cluster_centers":
            assert torch.allclose(a, state[n], atol=1e-6), n
    # the trained FAE is reusable by another run (phase 1 skipped); a different architecture is refused
    ckpt = str(tmp_path / "part" / "last.ckpt")
    reused = DCFAE(10, (1, 8, 8), pretrained=ckpt, **TINY)
    assert reused.fae_epochs == 0
    for a, b in zip(reused.fae.state_dict().values(), resumed.fae.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ConfigError, match="different FAE"):
        DCFAE(10, (1, 8, 8), pretrained=ckpt, **{**TINY, "channels": (4, 16)})
    # images of another size whose convolutions end in maps of the same size (every weight fits): refused too
    # (found by probing with one's own data: an FAE trained on 8x8 images went on to train on 8x6 ones)
    with pytest.raises(ConfigError, match=r"trained on images of shape \(1, 8, 8\), but this data has shape \(1, 8, 6\)"):
        DCFAE(10, (1, 8, 6), pretrained=ckpt, **TINY)
    # restoring a trained DCFAE needs its pretrained file no more (the checkpoint holds the weights)
    with pytest.raises(ConfigError, match="does not exist; train a DCFAE first"):
        DCFAE(10, (1, 8, 8), pretrained=str(tmp_path / "gone.ckpt"), **TINY)
    with weights_from_checkpoint():
        assert DCFAE(10, (1, 8, 8), pretrained=str(tmp_path / "gone.ckpt"), **TINY).fae_epochs == 0


def test_a_phase_1_of_one_sample_batches_under_batchnorm_is_refused(tmp_path, capsys):
    """Found by probing with one's own data: with batch_size 1 every batch of phase 1 is skipped (BatchNorm's
    statistics of one sample), so the FAE never trained and the fit ended on its random weights without a word."""
    def fit(batch_size: int, **model_args):
        model = DCFAE(10, (1, 8, 8), fae_epochs=1, **{**TINY, **model_args})
        trainer = pl.Trainer(max_epochs=1, limit_train_batches=2, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
        before = [p.detach().clone() for p in model.fae.parameters()]
        trainer.fit(model, Digits(flatten=False, batch_size=batch_size))
        return sum(not torch.equal(a, b) for a, b in zip(before, model.fae.parameters()))

    with pytest.raises(ConfigError, match=r"BatchNorm .* each batch of a process holds 1 \(.*batch_size 2 or more"):
        fit(1)
    assert fit(1, norm="group") > 0 and fit(2) > 0  # (what the error offers trains)
    # GroupNorm on channels that 8 does not divide (was: PyTorch's "num_channels (12) must be divisible by
    # num_groups (8)", naming no setting): the most groups up to 8 that divide them
    assert fit(2, norm="group", channels=(12, 20)) > 0
    (tmp_path / "cli").mkdir()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:  # the command: one line, before anything is written
        run_cli(["fit", "--model", "DCFAE", "--data", "Digits", "--data.flatten", "false", "--data.batch_size", "1"],
                tmp_path / "cli")
    assert exit_info.value.code == 2 and "dcl: error: DCFAE's FAE normalizes with BatchNorm" in capsys.readouterr().err
    assert not any((tmp_path / "cli").iterdir())


def _phase2(ckpt: str, batch_size: int, similarity_batches: int, **trainer_kwargs) -> tuple[DCFAE, pl.Trainer]:
    """Phase 2 alone (the FAE of ``ckpt`` reused) on Digits."""
    pl.seed_everything(1)
    model = DCFAE(10, (1, 8, 8), pretrained=ckpt, similarity_batches=similarity_batches, **TINY)
    trainer = pl.Trainer(num_sanity_val_steps=0, check_val_every_n_epoch=100, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         **trainer_kwargs)
    trainer.fit(model, Digits(flatten=False, batch_size=batch_size))
    return model, trainer


def test_similarity_batches_join_loader_batches_into_one_batch_of_phase_2(tmp_path, monkeypatch):
    with pytest.warns(UserWarning, match=r"ends within the 1 FAE epochs: the dense embedding network \(phase 2\)"):
        _fit(tmp_path / "fae", 1)  # phase 1 only: a trained FAE to start phase 2 from
    ckpt = str(tmp_path / "fae" / "last.ckpt")
    sizes = []
    original = DCFAE.input_affinities
    monkeypatch.setattr(DCFAE, "input_affinities", lambda self, mu: sizes.append(len(mu)) or original(self, mu))
    # two joined batches of 32 are one batch of 64: the same samples in the same order, the same steps
    joined, _ = _phase2(ckpt, 32, 2, max_steps=5)
    assert sizes == [64] * 5
    sizes.clear()
    single, _ = _phase2(ckpt, 64, 1, max_steps=5)
    assert sizes == [64] * 5
    for (name, a), b in zip(joined.dense.named_parameters(), single.dense.parameters()):
        assert torch.allclose(a, b, atol=1e-5), name
    # Digits: 1797 samples = 56 batches of 32 + one of 5; groups of 4 batches give 14 steps per epoch, and the
    # epoch's last, incomplete group is dropped, not carried into the next epoch
    sizes.clear()
    _, trainer = _phase2(ckpt, 32, 4, max_epochs=2)
    assert sizes == [128] * 28 and trainer.global_step == 28
    # a batch of 2 samples, here an epoch's last loader batch (1797 = 5 x 359 + 2), has no pairwise structure to
    # learn (P = Q = 1/2 whatever the embedding): skipped, where Adam would still have moved the weights by momentum
    sizes.clear()
    _, trainer = _phase2(ckpt, 359, 1, max_epochs=1)
    assert sizes == [359] * 5 and trainer.global_step == 5
    with pytest.raises(ConfigError, match="similarity_batches"):
        DCFAE(10, (1, 8, 8), similarity_batches=0)
    # an epoch of fewer batches than a group never stepped (the run ended as k-means on an untrained network):
    # refused before the first step
    sizes.clear()
    with pytest.raises(ConfigError, match="groups of similarity_batches 4 loader batches, but an epoch has 2"):
        _phase2(ckpt, 1024, 4, max_epochs=2)
    assert sizes == []


def test_ddp_ranks_keep_one_batchnorm_state(tmp_path, monkeypatch):
    """Found by probing under DDP: each rank's BatchNorm running statistics followed its own samples (26 of the
    FAE's tensors differed after the first epoch), so the final scores (embedded by both ranks) disagreed with the
    checkpoint (rank 0's) and a resumed fit was not the uninterrupted one. Every buffer is compared across the
    ranks after every step, through both phases."""
    from conftest import free_port
    from ddp_helpers import AssertSameStateOnRanks

    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    model = DCFAE(10, (1, 8, 8), fae_epochs=1, norm="batch", **TINY)
    trainer = pl.Trainer(max_epochs=2, limit_train_batches=3, accelerator="cpu", devices=2, strategy="ddp_spawn",
                         num_sanity_val_steps=0, limit_val_batches=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[AssertSameStateOnRanks(str(tmp_path))])
    trainer.fit(model, Digits(flatten=False, batch_size=32))
    checked = {f.name: int(f.read_text()) for f in tmp_path.glob("checks_rank*")}
    assert checked == {"checks_rank0": 6, "checks_rank1": 6}, checked


def test_an_epochs_last_batch_of_one_sample_is_skipped_by_batch_norm_training():
    """Found by probing: 65 images at batch size 64 (N = 1 mod the batch size) failed after the first epoch in
    BatchNorm ("Expected more than 1 value per channel when training"), the image being down to 1 x 1 there."""
    from dcl.estimator import InMemory

    x = torch.rand(41, 1, 8, 8)
    model = DCFAE(2, (1, 8, 8), **{**TINY, "channels": (4, 8, 16)}, fae_epochs=2)
    steps = []

    class Steps(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            steps.append((len(batch["x"]), trainer.global_step))

    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[Steps()])
    trainer.fit(model, datamodule=InMemory(x, batch_size=20, n_clusters=2))
    # two batches of 20 stepped the generator and the discriminator (2 optimizer steps each); the one of 1 did not
    assert steps == [(20, 2), (20, 4), (1, 4)]
