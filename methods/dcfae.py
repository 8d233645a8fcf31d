"""DCFAE: Deep clustering with fusion autoencoder (Shuai Chang, arXiv 2201.04727, 2022).

What the paper fixes (abstract and summary; no official code exists): a *fusion autoencoder* (FAE) that merges a
VAE with a GAN to learn more discriminative latents; encoder, decoder and discriminator built from residual conv
blocks; a separate deep dense network maps the FAE latent space to an embedding by minimizing the cross-entropy
between two distributions of pairwise similarities of the latent points (which pulls clusters apart and
collapses each); k-means on that embedding gives the clusters. The discriminator and generator scores converge
to an equilibrium; the studied parameters are the balance weights, the Student-t degrees of freedom and the
latent dimension. The paper's full text (equations, architectures, epochs, result tables) could not be
retrieved here; everything below that goes beyond the above is our choice, stated with its reason.

Phase 1, the FAE (``fae_epochs`` epochs), written as VAE-GAN (Larsen et al. 2016), the standard VAE + GAN
fusion. With q(z|x) = N(mu(x), diag sigma^2(x)), z ~ q(z|x), x~ = Dec(z), z_p ~ N(0, I), x_p = Dec(z_p), and
D(.) the discriminator's probability of "real", Dis_l(.) its features after stage ``feature_layer``::

    L_prior = KL(q(z|x) || N(0, I))                                   (per sample, summed over latent dims)
    L_pixel = -log p(x | x~)   Bernoulli (BCE, pixels in [0, 1]) or Gaussian (squared error), summed over pixels
    L_feat  = 1/2 ||Dis_l(x) - Dis_l(x~)||^2                          (learned similarity, summed over features)
    L_D     = -log D(x) - log(1 - D(x~)) - log(1 - D(x_p))            (the discriminator's GAN loss)
    L_adv   = -log D(x~) - log D(x_p)                                 (non-saturating generator loss)

    encoder:        kl_weight * L_prior + pixel_weight * L_pixel + feature_weight * L_feat
    decoder:        pixel_weight * L_pixel + feature_weight * L_feat + adversarial_weight * L_adv
    discriminator:  L_D

all averaged over the batch. As in VAE-GAN the encoder is not trained on the GAN loss (``L_adv`` is computed
from Dec(z.detach()) and Dec(z_p), so its gradient reaches the decoder only); it sees the discriminator
through the feature-matching reconstruction, which is how the GAN shapes the latent space. Encoder and decoder
are one optimizer (the generator side), the discriminator another, alternated by the shared
:class:`dcl.adversarial.AdversarialOptimization` (``discriminator_steps`` then ``generator_steps`` per batch).
``adversarial: false`` gives the plain VAE (KL + pixel reconstruction, no discriminator): the paper's FAE-vs-VAE
ablation. Logged: ``train/d_score`` = mean D(x) and ``train/g_score`` = mean D of the generated images
(reconstructions and prior samples), so the game's convergence (both near the equilibrium) can be watched;
``train/loss`` (every step, on the progress bar) is the encoder + decoder loss (``train/g_total``'s, which is
logged per epoch with the other terms), the discriminator's is ``train/d_loss``; in phase 2 ``train/loss`` is
``train/similarity_ce`` of each step.

Phase 2, the embedding network (the rest of ``max_epochs``): the FAE is frozen (eval mode) and the latent of
a sample is the posterior mean mu(x). A dense network ``f: latent_dim -> dense_dims -> embedding_dim``
(d-500-500-2000-out, parametric t-SNE's architecture, van der Maaten 2009) is trained on batches of B
samples (``similarity_batches`` consecutive loader batches joined; under DDP: the global batch, gathered from all
ranks) to minimize the cross-entropy between the batch's input similarities P (of the latents) and its
embedding similarities Q::

    H(P, Q) = - sum_{i != j} p_ij log q_ij
    q_ij = (1 + ||f(mu_i) - f(mu_j)||^2 / nu)^(-(nu + 1) / 2) / sum_{k != l} (same)        (Student-t, dof nu)
    p_ij = (p_j|i + p_i|j) / 2B,  p_j|i = exp(-beta_i ||mu_i - mu_j||^2) / sum_{k != i} (same)
           with beta_i set by bisection so that the perplexity exp(H(P_i)) equals ``perplexity``  (input_similarity
           "gaussian", t-SNE's), or p_ij the Student-t kernel of the latents with the same nu ("student").

H(P, Q) = KL(P || Q) + H(P) and P does not depend on f, so this is parametric t-SNE's objective; it is
minimal exactly when Q = P. Only B x B matrices are formed (no N x N). The perplexity is capped at
(B - 1) / 3 for small batches (a perplexity above the number of neighbours cannot be met). Batches of fewer
than 3 samples are skipped, and so is an epoch's last group of fewer than ``similarity_batches`` loader batches.

Clusters: k-means (``kmeans_n_init`` restarts) on the final embedding f(mu(x)), refreshed at every validation
and at the end of training; ``assign`` is DEC's Student-t kernel around those centers. During phase 1 the same
is done on mu(x), so ``val/acc`` tracks FAE + k-means (the "without the dense network" ablation;
``use_dense: false`` stops after phase 1).

Choices where the paper is silent (and why):
- VAE-GAN's split of the losses between encoder and decoder (the best-known VAE + GAN fusion); BCE pixel
  likelihood (images in [0, 1]); feature matching at the middle discriminator stage (Larsen et al. use an
  intermediate layer). Unlike Larsen et al.'s code (``model/aegan.py``): every term weighs 1 (theirs weighs the
  decoder's reconstruction against its GAN loss 0.01 : 0.99), a pixel term beside the feature one (they have none
  with feature matching), no skipping of an update by an equilibrium margin, and the discriminator's loss sums
  its real, reconstructed and prior-sample terms as the paper's L_GAN (1 : 2 real against generated; their code
  weighs real against generated 0.5 : 0.5).
- Residual blocks: He et al.'s basic block; BatchNorm in encoder/decoder, no normalization and LeakyReLU(0.2)
  in the discriminator (so real and generated images can share one discriminator pass exactly); channels
  (32, 64, 128), one block per stage.
- Optimizers: Adam(1e-3, betas (0.5, 0.999)) for encoder + decoder (the VAE's usual rate; at DCGAN's 2e-4
  the posterior collapsed on Digits within our budgets: KL ~ 0.2 nats and k-means ACC ~ 0.35, against ~ 2-4 nats
  and ~ 0.66 at 1e-3, batch 64; ad hoc runs while building it, not recorded in benchmarks/), Adam(2e-4,
  betas (0.5, 0.999)) for the discriminator (DCGAN's), Adam(1e-3) for the dense network; no scheduler; batch 64.
  Student-t dof nu = 1 (t-SNE's; a hyperparameter as in the paper), perplexity 30 (t-SNE's default), embedding
  dimension 10, latent dimension 10.
- Phase 2's batch: the configs join 4 loader batches (``similarity_batches: 4``, 256 samples). A point's input
  similarities spread over about ``perplexity`` neighbours, so the perplexity must stay below the samples per
  cluster in a batch (about B / K): on batches of 64 (6 per class on USPS) perplexity 30 links neighbouring
  clusters and the embedding keeps them merged. On USPS (the same 30-epoch FAEs, 30 epochs of phase 2, 3 seeds,
  ``benchmarks/results/dcfae_usps_e30_similarity.md``): ACC 75.70 at batch 64, 87.87 at batch 256, 87.25 at
  perplexity 5 on batch 64. COIL-20 (20 objects: 13 per object in 256) uses perplexity 10: 79.54 ACC against
  73.87 at 30 and 70.51 on batches of 64 (``dcfae_coil20_rerun_similarity.md``). Parametric t-SNE (van der
  Maaten 2009) used batches of 5000; the GAN keeps 64.
- The dense network reads mu(x) (deterministic), not a sample z.

Under DDP, DDP's detection of unused parameters is switched on at setup (each side's backward reaches only its
parameters; see :meth:`dcl.adversarial.AdversarialOptimization.prepare_strategy`). 16-mixed (GradScaler, GPU
only) is wired through Lightning but was not run here (CPU-only machine); bf16-mixed is tested. The dense
network runs in float32 under mixed precision (pairwise similarities need the precision).
``trainer.global_step`` counts optimizer steps (discriminator_steps + generator_steps per batch in phase 1); the
loggers' step axis counts batches (Lightning's rows and dcl's own, :func:`dcl.method.logging_step`).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dcl.adversarial import (AdversarialOptimization, OptimizerFactory, SchedulerFactory, build_optimizer,
                             default_gan_optimizer, optimizer_step, step_schedulers)
from dcl.datamodule import ClusteringDataModule
from dcl.method import (ClusteringMethod, ConfigError, load_checkpoint_file, loads_pretrained,
                        planned_batches, pretrained_file, saved_input_shape, warn_if_fit_ends_within)
from dcl.nets.autoencoders import image_shape, mlp
from dcl.nets.residual import ResidualDecoder, ResidualDiscriminator, ResidualEncoder
from dcl.optim import check_optimizer

INPUT_SIMILARITIES = ("gaussian", "student")
PIXEL_LOSSES = ("bce", "mse")


# ---- losses: pure functions ---------------------------------------------------------------------------------
def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, diag exp(logvar)) || N(0, I)), summed over dimensions, averaged over the batch."""
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()


def pixel_reconstruction_loss(logits: Tensor, x: Tensor, kind: str = "bce") -> Tensor:
    """-log p(x | x~) summed over pixels, averaged over the batch: Bernoulli (``bce``) or ``mse``."""
    if kind == "bce":
        per = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    elif kind == "mse":
        per = (torch.sigmoid(logits) - x).pow(2)
    else:
        raise ValueError(f"unknown pixel loss {kind!r}")
    return per.flatten(1).sum(dim=1).mean()


def feature_matching_loss(real_features: Tensor, fake_features: Tensor) -> Tensor:
    """1/2 ||Dis_l(x) - Dis_l(x~)||^2 summed over features, averaged over the batch (VAE-GAN's L_llike^Dis_l)."""
    return 0.5 * (real_features - fake_features).pow(2).flatten(1).sum(dim=1).mean()


def discriminator_loss(real_logits: Tensor, fake_logits: Sequence[Tensor]) -> Tensor:
    """-log D(x) - sum_fakes log(1 - D(fake)), each averaged over the batch."""
    loss = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    for logits in fake_logits:
        loss = loss + F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits))
    return loss


def generator_adversarial_loss(fake_logits: Sequence[Tensor]) -> Tensor:
    """Non-saturating generator loss: - sum_fakes log D(fake), each averaged over the batch."""
    return sum(F.binary_cross_entropy_with_logits(lg, torch.ones_like(lg)) for lg in fake_logits)


def _off_diagonal_mask(n: int, device) -> Tensor:
    return ~torch.eye(n, dtype=torch.bool, device=device)


def student_t_affinities(y: Tensor, dof: float = 1.0) -> Tensor:
    """Joint Student-t similarities of a batch: q_ij ∝ (1 + ||y_i - y_j||^2 / nu)^(-(nu+1)/2), i != j, sum 1."""
    y = y.float()
    d2 = torch.cdist(y, y).pow(2)
    w = (1.0 + d2 / dof).pow(-(dof + 1.0) / 2.0) * _off_diagonal_mask(len(y), y.device)
    return w / w.sum()


def conditional_gaussian_affinities(x: Tensor, perplexity: float = 30.0, iterations: int = 64) -> Tensor:
    """t-SNE's conditional input similarities p_j|i of a batch (rows sum to 1, zero diagonal): Gaussians with a
    per-point precision beta_i found by bisection (in log space, on distances scaled by their mean) so that each
    row's perplexity exp(H(P_i)) is ``perplexity``, capped at (B - 1) / 3 for small batches."""
    x = x.float()
    n = len(x)
    target = math.log(min(perplexity, max((n - 1) / 3.0, 1.0 + 1e-3)))
    off = _off_diagonal_mask(n, x.device)
    d2 = torch.cdist(x, x).pow(2)
    d2 = d2 / d2[off].mean().clamp_min(1e-12)  # scale-free bisection range
    lo = torch.full((n, 1), -20.0, device=x.device)
    hi = torch.full((n, 1), 20.0, device=x.device)
    neg_inf = torch.finfo(d2.dtype).min

    def row_logits(log_beta: Tensor) -> Tensor:
        return (-log_beta.exp() * d2).masked_fill(~off, neg_inf)

    for _ in range(iterations):
        mid = (lo + hi) / 2
        log_p = torch.log_softmax(row_logits(mid), dim=1)
        entropy = -(log_p.exp() * log_p.masked_fill(~off, 0.0)).sum(dim=1, keepdim=True)
        too_flat = entropy > target  # the entropy decreases as beta grows: raise beta
        lo = torch.where(too_flat, mid, lo)
        hi = torch.where(too_flat, hi, mid)
    return torch.softmax(row_logits((lo + hi) / 2), dim=1) * off


def gaussian_affinities(x: Tensor, perplexity: float = 30.0, iterations: int = 64) -> Tensor:
    """t-SNE's joint input similarities of a batch: p_ij = (p_j|i + p_i|j) / 2B (sums to 1)."""
    p_cond = conditional_gaussian_affinities(x, perplexity, iterations)
    return (p_cond + p_cond.T) / (2 * len(x))


def similarity_cross_entropy(p: Tensor, q: Tensor, eps: float = 1e-12) -> Tensor:
    """H(P, Q) = - sum_{i != j} p_ij log q_ij (= KL(P || Q) + H(P); minimal iff Q = P)."""
    off = _off_diagonal_mask(len(p), p.device)
    return -(p[off] * q[off].clamp_min(eps).log()).sum()


def default_generator_optimizer(params) -> torch.optim.Optimizer:
    """Adam(1e-3, betas (0.5, 0.999)) for encoder + decoder: the VAE's usual rate with DCGAN's beta1 (with 2e-4
    the VAE collapses its posterior within short budgets, KL ~ 0.2 nats on Digits after 160 steps)."""
    return torch.optim.Adam(params, lr=1e-3, betas=(0.5, 0.999))


# ---- the networks -------------------------------------------------------------------------------------------
class FusionAutoencoder(nn.Module):
    """Residual VAE (encoder -> mu, logvar; decoder -> logits) plus, when ``adversarial``, a residual discriminator;
    ``residual=False``: the same networks without skip connections (the paper's residual vs plain ablation)."""

    def __init__(self, input_shape: Sequence[int], latent_dim: int, channels: Sequence[int],
                 discriminator_channels: Sequence[int], blocks_per_stage: int, norm: str,
                 adversarial: bool, residual: bool = True) -> None:
        super().__init__()
        self.encoder = ResidualEncoder(input_shape, latent_dim, channels, blocks_per_stage, norm, residual=residual)
        self.decoder = ResidualDecoder(input_shape, latent_dim, channels, blocks_per_stage, norm, residual=residual)
        self.discriminator = (ResidualDiscriminator(input_shape, discriminator_channels, blocks_per_stage,
                                                    residual=residual) if adversarial else None)

    def generator_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters()) + list(self.decoder.parameters())


class DCFAE(ClusteringMethod):
    """Deep clustering with fusion autoencoder (Chang 2022): a VAE-GAN, a dense embedding network, then k-means.

    The fusion autoencoder is a VAE-GAN on residual nets; the dense network is trained on batch-wise similarity
    cross-entropy (parametric t-SNE). See the module docstring.

    Args:
        n_clusters: K (from the datamodule).
        input_shape: shape of one sample (from the datamodule; images: ``flatten: false``).
        latent_dim: size of the FAE latent z (10).
        embedding_dim: output size of the dense network, the space k-means runs in (10).
        channels: encoder stage widths (the decoder mirrors them) ((32, 64, 128)).
        discriminator_channels: discriminator stage widths ((32, 64, 128)).
        blocks_per_stage: residual blocks per stage (1).
        norm: normalization of encoder/decoder blocks: ``batch`` (BatchNorm: batches of 2 samples or more),
            ``group`` (GroupNorm, in the most groups up to 8 that divide the channels) or ``none``.
        adversarial: the FAE (True) or a plain VAE (False, no discriminator).
        residual: skip connections in the encoder, decoder and discriminator blocks (True); False: plain conv
            stacks of the same widths and depths (the paper's ablation; measured on USPS at 30 + 30 epochs, 3
            seeds, the skips did not help: 76.26 / 74.18 ACC / NMI without, 75.27 / 73.29 with,
            ``benchmarks/results/dcfae_usps_e30.md``).
        kl_weight: balance weight of L_prior (1).
        pixel_weight: balance weight of L_pixel (1).
        feature_weight: balance weight of L_feat (1; ignored without ``adversarial``).
        adversarial_weight: balance weight of L_adv (1; ignored without ``adversarial``).
        pixel_loss: ``bce`` (Bernoulli: pixels in [0, 1], other data are refused before training) or ``mse``.
        feature_layer: discriminator stage whose features measure the reconstruction (1 = the middle of 3).
        fae_epochs: epochs of phase 1; phase 2 runs for the rest of ``trainer.max_epochs``.
        use_dense: train the dense embedding network (phase 2); False: k-means on mu(x) (ablation).
        dense_dims: hidden sizes of the dense network ((500, 500, 2000)).
        input_similarity: ``gaussian`` (perplexity-calibrated, t-SNE) or ``student`` (Student-t with ``dof``).
        perplexity: perplexity of the Gaussian input similarities (30).
        dof: degrees of freedom nu of the Student-t similarities (1).
        similarity_batches: loader batches joined into one batch of phase 2 (1): P and Q are computed over
            ``batch_size * similarity_batches`` samples per process, so the embedding sees larger batches than
            the GAN trains on (the perplexity must stay well below a batch's samples per cluster). The collected
            latents live in memory only: a fit resumed from a mid-epoch checkpoint starts a new group.
        pretrained: a DCFAE checkpoint whose FAE is reused (phase 1 is then skipped).
        generator_optimizer: optimizer of the GAN's generator side, encoder + decoder (None: Adam 1e-3, betas
            (0.5, 0.999)); also the VAE's optimizer when ``adversarial`` is off.
        discriminator_optimizer: optimizer of the discriminator (None: Adam 2e-4, betas (0.5, 0.999)).
        generator_scheduler: optional per-epoch LR scheduler of ``generator_optimizer`` (``LearningRateMonitor``
            logs its learning rate as ``lr-generator``).
        discriminator_scheduler: optional per-epoch LR scheduler of ``discriminator_optimizer`` (``lr-discriminator``).
        embedding_scheduler: optional per-epoch LR scheduler of ``embedding_optimizer`` (``lr-embedding``).
        embedding_optimizer: optimizer of the dense network (None: Adam 1e-3).
        generator_steps: generator updates per batch (1).
        discriminator_steps: discriminator updates per batch (1).
        gradient_clip_val: per-optimizer gradient clipping value (None: no clipping).
        gradient_clip_algorithm: how ``gradient_clip_val`` clips: ``norm`` (the default) or ``value``.
        kmeans_n_init: k-means restarts (10).
    """

    resizable_buffers = ("cluster_centers",)

    def __init__(self, n_clusters: int, input_shape: Sequence[int], latent_dim: int = 10, embedding_dim: int = 10,
                 channels: Sequence[int] = (32, 64, 128), discriminator_channels: Sequence[int] = (32, 64, 128),
                 blocks_per_stage: int = 1, norm: str = "batch", adversarial: bool = True,
                 kl_weight: float = 1.0, pixel_weight: float = 1.0, feature_weight: float = 1.0,
                 adversarial_weight: float = 1.0, pixel_loss: str = "bce", feature_layer: int = 1,
                 fae_epochs: int = 100, use_dense: bool = True, dense_dims: Sequence[int] = (500, 500, 2000),
                 input_similarity: str = "gaussian", perplexity: float = 30.0, dof: float = 1.0,
                 similarity_batches: int = 1, pretrained: str | None = None,
                 generator_optimizer: OptimizerFactory | None = None,
                 discriminator_optimizer: OptimizerFactory | None = None,
                 embedding_optimizer: OptimizerFactory | None = None,
                 generator_scheduler: SchedulerFactory | None = None,
                 discriminator_scheduler: SchedulerFactory | None = None,
                 embedding_scheduler: SchedulerFactory | None = None,
                 generator_steps: int = 1, discriminator_steps: int = 1,
                 gradient_clip_val: float | None = None, gradient_clip_algorithm: str = "norm",
                 kmeans_n_init: int = 10, residual: bool = True) -> None:
        # the base's embedding is phase 1's, the latent; phase 2's k-means resizes the centers to embedding_dim
        super().__init__(n_clusters, input_shape, latent_dim, kmeans_n_init)
        image_shape(self.input_shape, "DCFAE", ConfigError)
        if not isinstance(embedding_dim, int) or embedding_dim < 1:
            raise ConfigError(f"embedding_dim must be an integer >= 1, got {embedding_dim!r}")
        if min(kl_weight, pixel_weight, feature_weight, adversarial_weight) < 0:
            raise ConfigError("the balance weights (kl_weight, pixel_weight, feature_weight, adversarial_weight) "
                              "must be >= 0")
        if pixel_weight == 0 and (feature_weight == 0 or not adversarial):
            raise ConfigError("DCFAE needs a reconstruction term: set pixel_weight > 0 (or feature_weight > 0 with "
                              "adversarial: true)")
        if pixel_loss not in PIXEL_LOSSES:
            raise ConfigError(f"pixel_loss must be one of {PIXEL_LOSSES}, got {pixel_loss!r}")
        if input_similarity not in INPUT_SIMILARITIES:
            raise ConfigError(f"input_similarity must be one of {INPUT_SIMILARITIES}, got {input_similarity!r}")
        if dof <= 0 or perplexity <= 1:
            raise ConfigError(f"dof must be > 0 and perplexity > 1, got dof={dof}, perplexity={perplexity}")
        if fae_epochs < 0:
            raise ConfigError(f"fae_epochs must be >= 0, got {fae_epochs}")
        if similarity_batches < 1:
            raise ConfigError(f"similarity_batches must be >= 1 (loader batches per similarity batch in phase 2), "
                              f"got {similarity_batches}")
        if not -len(discriminator_channels) <= feature_layer < len(discriminator_channels):
            raise ConfigError(f"feature_layer {feature_layer} does not exist: the discriminator has "
                              f"{len(discriminator_channels)} stages (discriminator_channels)")
        self.save_hyperparameters(ignore=["generator_optimizer", "discriminator_optimizer", "embedding_optimizer",
                                          "generator_scheduler", "discriminator_scheduler", "embedding_scheduler"])
        self.automatic_optimization = False
        self.latent_dim = latent_dim
        self.adversarial_enabled = adversarial
        self.kl_weight, self.pixel_weight = kl_weight, pixel_weight
        self.feature_weight = feature_weight if adversarial else 0.0
        self.adversarial_weight = adversarial_weight if adversarial else 0.0
        self.pixel_loss = pixel_loss
        self.feature_layer = feature_layer
        self.use_dense = use_dense
        self.input_similarity = input_similarity
        self.perplexity = perplexity
        self.dof = dof
        self.similarity_batches = similarity_batches
        self._pending_latents: list[Tensor] = []  # phase 2: latents of the loader batches not yet trained on
        self.fae = FusionAutoencoder(self.input_shape, latent_dim, channels, discriminator_channels,
                                     blocks_per_stage, norm, adversarial, residual)
        self.dense = mlp([latent_dim, *dense_dims, embedding_dim], "relu") if use_dense else None
        check_optimizer(embedding_optimizer, "embedding_optimizer")
        self.embedding_optimizer = embedding_optimizer
        self.embedding_scheduler = embedding_scheduler
        self.adversarial = AdversarialOptimization(generator_optimizer, discriminator_optimizer, generator_scheduler,
                                                   discriminator_scheduler, generator_steps, discriminator_steps,
                                                   gradient_clip_val, gradient_clip_algorithm)
        self.fae_epochs = 0 if pretrained else fae_epochs
        #: phase switch (checkpointed): False = phase 1 (FAE), True = phase 2 (dense embedding network)
        self.register_buffer("embedding_started", torch.tensor(False))
        if pretrained and loads_pretrained():
            self.load_pretrained(pretrained)

    # -- the contract --------------------------------------------------------------------------------------
    @property
    def in_embedding_phase(self) -> bool:
        return bool(self.embedding_started)

    def latent(self, x: Tensor) -> Tensor:
        """The FAE latent used for clustering: the posterior mean mu(x)."""
        return self.fae.encoder(x)[0]

    def embed(self, x: Tensor) -> Tensor:
        mu = self.latent(x)
        return self.dense_embedding(mu) if self.in_embedding_phase else mu

    def dense_embedding(self, mu: Tensor) -> Tensor:
        """f(mu) in float32 even under mixed precision: the pairwise similarities of the embedding need more than
        bf16's 8-bit mantissa, and the dense network is cheap."""
        with torch.autocast(device_type=mu.device.type, enabled=False):
            return self.dense(mu.float())

    def refresh_clusters(self, z: Tensor) -> None:
        """Clusters are k-means on the current embedding (mu(x) in phase 1, f(mu(x)) in phase 2)."""
        self.set_cluster_centers(self.run_kmeans(z).centers)

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.in_embedding_phase:
            self.fae.eval()  # frozen in phase 2: BatchNorm uses its running statistics
        return self

    # -- phases and optimizers -----------------------------------------------------------------------------
    def configure_optimizers(self):
        if self.in_embedding_phase:
            return build_optimizer(self.embedding_optimizer, self.dense.parameters(),
                                   lambda p: torch.optim.Adam(p, lr=1e-3), self.embedding_scheduler, "lr-embedding")
        if self.adversarial_enabled:
            return self.adversarial.configure(self.fae.generator_parameters(), self.fae.discriminator.parameters(),
                                              default_generator_optimizer, default_gan_optimizer)
        return build_optimizer(self.adversarial.generator_optimizer, self.fae.generator_parameters(),
                               default_generator_optimizer, self.adversarial.generator_scheduler, "lr-generator")

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit":
            self.adversarial.prepare_strategy(self)

    def check_data(self, data, stage: str) -> None:
        super().check_data(data, stage)
        if stage == "fit" and self.pixel_loss == "bce" and self.pixel_weight > 0 and self.fae_epochs > 0:
            self._check_bernoulli_pixels(data)

    def _check_bernoulli_pixels(self, data) -> None:
        """Refuse, before any step, pixels outside [0, 1] for the Bernoulli pixel loss: its cross-entropy with a
        target above 1 or below 0 has no minimum, and the loss falls without limit (measured: train/recon -6417,
        then -10977, on 8-bit images given as 0..255)."""
        lo, hi = data.served_range()
        if lo < 0.0 or hi > 1.0:
            raise ConfigError(
                f"DCFAE's pixel_loss bce is the Bernoulli likelihood of pixels in [0, 1], but {type(data).__name__} "
                f"serves values in [{lo:.4g}, {hi:.4g}], for which the loss falls without limit; scale the pixels to "
                "[0, 1] (8-bit images: divide by 255; Arrays serves a uint8 array so, without standardize) or set "
                "pixel_loss: mse (model.init_args in a config, method_args of DeepClusterer)")

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if self.use_dense and not self.in_embedding_phase:
            warn_if_fit_ends_within(self, self.fae_epochs, "FAE epochs", "fae_epochs", "the dense embedding network "
                                    "(phase 2) will not train and the clusters are k-means on the FAE latent")

    def check_fit(self, trainer: pl.Trainer, data: ClusteringDataModule) -> None:
        self._check_phase_2_steps(trainer, planned_batches(trainer, data))
        self._check_batch_statistics(trainer, data)

    def on_train_start(self) -> None:
        self._check_phase_2_steps(self.trainer, self.trainer.num_training_batches)  # Lightning's count, per rank
        if isinstance(self.trainer.datamodule, ClusteringDataModule):
            self._check_batch_statistics(self.trainer, self.trainer.datamodule)
        super().on_train_start()

    def _check_batch_statistics(self, trainer: pl.Trainer, data: ClusteringDataModule) -> None:
        """Refuse, before any step, a phase 1 whose every batch holds one sample under BatchNorm: such a batch is
        skipped (training_step), so the FAE would never train and the clusters would come from its random weights
        (found by probing: batch_size 1 ended as a fit, silently)."""
        if self.hparams.norm != "batch" or self.in_embedding_phase or self.fae_epochs == 0:
            return
        per_batch = min(data.batch_size, math.ceil(data.num_samples / trainer.world_size))
        if per_batch < 2:
            raise ConfigError(f"DCFAE's FAE normalizes with BatchNorm (norm: batch), whose statistics need two samples "
                              f"a batch, but each batch of a process holds {per_batch} ({data.num_samples} samples, "
                              f"batch_size {data.batch_size}, {trainer.world_size} process(es)): phase 1 would skip "
                              "every batch and never train; set data.init_args.batch_size 2 or more, or "
                              "model.init_args.norm group")

    def _check_phase_2_steps(self, trainer: pl.Trainer, batches: int | float) -> None:
        """Refuse, before any step, a phase 2 that would never step: it trains on groups of ``similarity_batches``
        loader batches (``batches`` an epoch), and an epoch's incomplete group is dropped. A fit that ends within
        phase 1 (e.g. a ``fast_dev_run``, one batch of one epoch) never gets there and is not refused."""
        max_epochs = trainer.max_epochs
        reaches_phase_2 = (self.in_embedding_phase or max_epochs is None or max_epochs < 0
                           or max_epochs > self.fae_epochs)
        if self.use_dense and reaches_phase_2 and math.isfinite(batches) and batches < self.similarity_batches:
            cut = ("trainer.fast_dev_run cuts it to that; " if trainer.fast_dev_run else
                   f"trainer.limit_train_batches {trainer.limit_train_batches} cuts it to that; "
                   if trainer.limit_train_batches != 1.0 else "")
            raise ConfigError(f"DCFAE's phase 2 trains on groups of similarity_batches {self.similarity_batches} "
                              f"loader batches, but an epoch has {batches}: the dense network would never take a "
                              f"step; {cut}set model.init_args.similarity_batches to at most {batches}, or a "
                              "smaller data batch_size")

    def on_train_epoch_start(self) -> None:
        self._pending_latents = []  # an epoch's last, incomplete group of batches is dropped (drop_last)
        if self.use_dense and not self.in_embedding_phase and self.current_epoch >= self.fae_epochs:
            self.start_embedding()

    def start_embedding(self) -> None:
        """Switch to phase 2: freeze the FAE, mark the phase (checkpointed), build the dense network's optimizer."""
        self.embedding_started.fill_(True)
        self.fae.requires_grad_(False)
        self.train(self.training)
        if self._trainer is not None:
            self.trainer.strategy.setup_optimizers(self.trainer)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        if checkpoint.get("state_dict", {}).get("embedding_started", torch.tensor(False)).item():
            self.fae.requires_grad_(False)

    # -- phase 1: the fusion autoencoder -------------------------------------------------------------------
    def _discriminate(self, x: Tensor) -> tuple[Tensor, Tensor]:
        logits, features = self.fae.discriminator(x)
        return logits, features[self.feature_layer]

    def generator_loss(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Encoder + decoder loss (module docstring): the encoder gets L_prior + L_pixel + L_feat, the decoder
        L_pixel + L_feat + L_adv (L_adv from Dec(z.detach()) and Dec(z_p))."""
        mu, logvar = self.fae.encoder(x)
        z = mu + self.noise_like(mu) * torch.exp(0.5 * logvar)  # reparameterization
        logits = self.fae.decoder(z)
        kl = gaussian_kl(mu.float(), logvar.float())
        pixel = pixel_reconstruction_loss(logits.float(), x.float(), self.pixel_loss)
        loss = self.kl_weight * kl + self.pixel_weight * pixel
        logs = {"train/kl": kl.detach(), "train/recon": pixel.detach()}
        if self.adversarial_enabled:
            # one decoder pass for the GAN loss on reconstructions from z.detach() (it does not reach the
            # encoder) and prior samples, then one discriminator pass over [x, x~, x~ (detached z), x_p]
            b = len(x)
            fakes = torch.sigmoid(self.fae.decoder(torch.cat([z.detach(), self.noise_like(z)])))
            d_logits, d_features = self._discriminate(torch.cat([x, torch.sigmoid(logits), fakes.to(x.dtype)]))
            feat = feature_matching_loss(d_features[:b].float(), d_features[b:2 * b].float())
            adv = generator_adversarial_loss(list(d_logits[2 * b:].float().split(b)))
            loss = loss + self.feature_weight * feat + self.adversarial_weight * adv
            logs.update({"train/feature_recon": feat.detach(), "train/g_adv": adv.detach()})
        logs["train/g_total"] = loss.detach()
        return loss, logs

    def discriminator_step_loss(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """L_D on real x, reconstructions x~ and prior samples x_p (generated without gradient)."""
        b = len(x)
        with torch.no_grad():
            mu, logvar = self.fae.encoder(x)
            z = mu + self.noise_like(mu) * torch.exp(0.5 * logvar)
            generated = torch.sigmoid(self.fae.decoder(torch.cat([z, self.noise_like(z)])))
        logits = self._discriminate(torch.cat([x, generated.to(x.dtype)]))[0].float()
        real, fakes = logits[:b], list(logits[b:].split(b))
        loss = discriminator_loss(real, fakes)
        fake_scores = torch.sigmoid(torch.cat(fakes)).detach()
        return loss, {"train/d_score": torch.sigmoid(real).mean().detach(), "train/g_score": fake_scores.mean()}

    def fae_step(self, x: Tensor) -> dict[str, Tensor]:
        if self.adversarial_enabled:
            g_opt, d_opt = self.optimizers()
            logs = self.adversarial.step(self, lambda: self.generator_loss(x), lambda: self.discriminator_step_loss(x),
                                         g_opt, d_opt)
            logs["train/d_loss"] = logs.pop("d_loss")
            self.log_train_loss(logs.pop("g_loss"))  # the FAE's (the model clustered), not the discriminator's
            return logs
        loss, logs = optimizer_step(self, self.optimizers(), lambda: self.generator_loss(x),
                                    self.adversarial.gradient_clip_val, self.adversarial.gradient_clip_algorithm)
        self.log_train_loss(loss)
        return logs

    # -- phase 2: the dense embedding network --------------------------------------------------------------
    def input_affinities(self, latents: Tensor) -> Tensor:
        if self.input_similarity == "gaussian":
            return gaussian_affinities(latents, self.perplexity)
        return student_t_affinities(latents, self.dof)

    def _gather_batch(self, t: Tensor, sync_grads: bool = False) -> Tensor:
        """Under DDP the batch is the global batch (every rank's part, gradients flowing back to each part), so the
        similarities, and the fit, do not depend on the number of processes; identity on one process."""
        if self._trainer is None or self.trainer.world_size == 1:
            return t
        return self.all_gather(t, sync_grads=sync_grads).flatten(0, 1)

    def embedding_loss(self, mu: Tensor) -> Tensor:
        """H(P, Q) of one batch of FAE latents: P from the latents, Q Student-t of the dense network's output."""
        with torch.no_grad():
            p = self.input_affinities(self._gather_batch(mu))
        y = self._gather_batch(self.dense_embedding(mu), sync_grads=True)
        # every rank computes the same global loss; all_gather's backward sums the ranks' gradients and DDP
        # averages them, which gives the single-process gradient of the global batch
        return similarity_cross_entropy(p, student_t_affinities(y, self.dof))

    def embedding_step(self, x: Tensor) -> dict[str, Tensor] | None:
        """Collects the batch's latents; every ``similarity_batches`` batches, one step on all of them."""
        if self.fae.training:  # Lightning restores saved module modes (e.g. after a resume's sanity check)
            self.fae.eval()
        with torch.no_grad():
            self._pending_latents.append(self.latent(x).float())
        if len(self._pending_latents) < self.similarity_batches:
            return None
        mu, self._pending_latents = torch.cat(self._pending_latents), []
        if len(mu) < 3:  # no pairwise structure in a batch this small
            return None
        loss, _ = optimizer_step(self, self.optimizers(), lambda: self.embedding_loss(mu),
                                 self.adversarial.gradient_clip_val, self.adversarial.gradient_clip_algorithm)
        self.log_train_loss(loss)
        return {"train/similarity_ce": loss}

    # -- Lightning -----------------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        x = batch["x"]
        if self.in_embedding_phase:  # the FAE frozen, in eval mode: its BatchNorm statistics stay as they are
            logs = self.embedding_step(x)
        elif len(x) == 1 and self.hparams.norm == "batch":
            # an epoch's last batch of one sample (N = 1 mod batch_size): BatchNorm's batch statistics of one sample
            # are degenerate and, once the image is down to 1 x 1, an error (found by probing). Every rank's shard
            # has the same batches, so under DDP every rank skips it
            logs = None
        else:
            logs = self.fae_step(x)  # under DDP the base class keeps rank 0's BatchNorm statistics on every rank
        if logs:
            self.log_dict(logs, on_step=False, on_epoch=True, prog_bar=False, batch_size=len(x))

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()  # when the fit ends here, the final clusters: k-means on the final embedding
        step_schedulers(self)

    # -- reusing a trained FAE -----------------------------------------------------------------------------
    def load_pretrained(self, path: str) -> None:
        """Load the FAE (``fae.*``) of a DCFAE checkpoint."""
        file = pretrained_file(path, "train a DCFAE first")
        ckpt = load_checkpoint_file(file)
        state = ckpt.get("state_dict", {})
        saved_shape = saved_input_shape(ckpt)
        if saved_shape is not None and saved_shape != self.input_shape:  # (convolutions fit other sizes too)
            raise ConfigError(f"pretrained checkpoint {file} was trained on images of shape {saved_shape}, but this "
                              f"data has shape {self.input_shape}; train its FAE on this data set")
        fae_state = {k[len("fae."):]: v for k, v in state.items() if k.startswith("fae.")}
        own = self.fae.state_dict()
        bad = [k for k in own if k not in fae_state or fae_state[k].shape != own[k].shape]
        if bad:
            raise ConfigError(f"pretrained checkpoint {file} holds a different FAE (first mismatch: {bad[0]}); "
                              "use the same latent_dim, channels, adversarial and input shape as that run")
        self.fae.load_state_dict({k: fae_state[k] for k in own})
        self.remember_pretrained_data(ckpt, path)
