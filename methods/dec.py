"""DEC: Unsupervised Deep Embedding for Clustering Analysis (Xie, Girshick, Farhadi, ICML 2016).

Soft assignment of each embedded point z_i to each center mu_j by a Student's t kernel (eq. 1)::

    q_ij = (1 + ||z_i - mu_j||^2 / alpha)^(-(alpha+1)/2) / sum_j' (...)

an auxiliary target that sharpens q and normalizes by cluster frequency f_j = sum_i q_ij (eq. 3)::

    p_ij = (q_ij^2 / f_j) / sum_j' (q_ij'^2 / f_j')

and the clustering loss KL(P || Q) = sum_i sum_j p_ij log(p_ij / q_ij) (eq. 2), minimized over the encoder
and the centers (here averaged over the batch's samples, as Keras' ``kld`` loss of DEC-keras). The targets are computed on all samples every ``update_interval`` steps and frozen in
between; training stops when fewer than ``tol`` of the assignments changed between two updates, or after
``maxiter`` clustering steps. The clustering phase has the schedule and defaults of DEC-keras (the
Keras reimplementation by IDEC's authors, and IDEC's own code): a d-500-500-2000-10 autoencoder, k-means with 20 restarts to initialize the centers,
SGD(lr 0.01, momentum 0.9), ``update_interval`` 140 on MNIST and 30 on USPS, ``tol`` 0.1%, ``maxiter`` 20000,
batch 256. (The DEC authors' Caffe code, piiswrong/dec, updates the targets every 20 iterations, starts a new
SGD solver, with fresh momentum, at each update, has no ``maxiter``, and trains the biases at twice the lr,
``blobs_lr: 2``: not reproduced here, as DEC-keras has no such multiplier.)

The pretraining is not the papers': the configs pretrain end to end, for 200 epochs (Digits: 50) with Adam 1e-3,
batch 256 (DEKM's official schedule, with Glorot instead of its uniform initialization; one pretraining shared by
DEC, IDEC and AE + k-means; MNIST: DEC-keras', below). The DEC paper pretrained
layer-wise with dropout, then fine-tuned (piiswrong/dec), and IDEC's README starts from those weights: the ``SAE``
method (``configs/sae/mnist.yaml``), whose checkpoint is a ``pretrained`` here; DEC-keras
pretrains end to end, MNIST for 300 epochs with SGD(lr 1, momentum 0.9) from Keras'
``VarianceScaling(1/3, 'fan_in', 'uniform')`` initialization (``weight_init: fan_in_uniform``,
``pretrain_epochs: 300``, ``pretrain_optimizer: {class_path: torch.optim.SGD, init_args: {lr: 1.0, momentum:
0.9}}``; the DEC and IDEC MNIST configs' pretraining, measured better on the mean over 3 seeds), USPS for 50
epochs with Adam. MNIST pixels are scaled to [0, 1] (/255, as DEC-keras; the original DEC
code multiplies by 0.02: the MNIST datamodule's ``scale: 5.1``). Batches are reshuffled every epoch (the reference
code walks them in a fixed order).

``target: batch`` is the variant many PyTorch reimplementations use (e.g. ClustPy's DEC/IDEC): P from each
batch's own Q at every step (cluster frequencies f_j summed over the global batch under DDP), with no pass over
the whole data after the k-means initialization. It saves the full-data embedding every ``update_interval``
steps (on USPS with update_interval 30, about as many encoder passes as the clustering steps' forward passes),
but P then moves with Q instead of being a frozen self-training target, and there is no whole-data snapshot to
apply ``tol`` to: the run length is ``maxiter`` or ``max_epochs``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from dcl.callbacks.cluster_update import ClusterUpdate
from dcl.distributed import all_reduce_sum_
from dcl.method import AutoencoderMethod, ConfigError, OptimizerFactory, log_metrics_now, student_t_assign


def target_distribution(q: Tensor, frequency: Tensor | None = None) -> Tensor:
    """DEC's eq. 3: p_ij ∝ q_ij^2 / f_j with f_j = sum_i q_ij (or the given ``frequency``), rows normalized."""
    weight = q.pow(2) / (q.sum(dim=0) if frequency is None else frequency)
    return weight / weight.sum(dim=1, keepdim=True)


def kl_clustering_loss(p: Tensor, q: Tensor, eps: float = 1e-10) -> Tensor:
    """DEC's eq. 2, KL(P || Q) summed over clusters and averaged over the batch."""
    return (p * (p.clamp_min(eps).log() - q.clamp_min(eps).log())).sum(dim=1).mean()


class DEC(AutoencoderMethod):
    """Deep Embedded Clustering: KL divergence to a sharpened target distribution (Xie et al. 2016).

    The autoencoder, pretraining and optimizer arguments are ``AutoencoderMethod``'s.

    Args:
        alpha: degrees of freedom of the Student's t kernel (1 in the paper).
        update_interval: clustering steps between target updates (140 for MNIST, 30 for USPS).
        tol: stop when fewer than this fraction of assignments changed between two updates (0.001).
        maxiter: at most this many clustering steps (20000).
        target: ``full`` (the paper: P of all samples every ``update_interval`` steps, frozen in between) or
            ``batch`` (P from each batch's Q; needs ``tol: 0``; see the module docstring).
    """

    def __init__(self, n_clusters: int, input_shape: Sequence[int], latent_dim: int = 10,
                 autoencoder: str = "mlp", hidden_dims: Sequence[int] = (500, 500, 2000), activation: str = "relu",
                 alpha: float = 1.0, update_interval: int = 140, tol: float = 0.001, maxiter: int = 20000,
                 pretrain_epochs: int = 200, pretrained: str | None = None,
                 pretrain_optimizer: OptimizerFactory | None = None, optimizer: OptimizerFactory | None = None,
                 kmeans_n_init: int = 20, target: str = "full", weight_init: str = "glorot") -> None:
        super().__init__(n_clusters, input_shape, latent_dim, autoencoder, hidden_dims, activation,
                         pretrain_epochs, pretrained, pretrain_optimizer, optimizer, kmeans_n_init,
                         trainable_centers=True, weight_init=weight_init)
        if update_interval < 1 or maxiter < 1 or not 0 <= tol < 1 or alpha <= 0:
            raise ConfigError(f"DEC needs update_interval >= 1, maxiter >= 1, 0 <= tol < 1 and alpha > 0, got "
                              f"{update_interval}, {maxiter}, {tol} and {alpha}")
        if target not in ("full", "batch"):
            raise ConfigError(f"DEC: target must be 'full' (the paper's whole-data P every update_interval steps) "
                              f"or 'batch' (P from each batch's Q), got {target!r}")
        if target == "batch" and tol > 0:
            raise ConfigError(f"DEC: target 'batch' has no whole-data snapshot to apply tol {tol} to; set tol: 0 "
                              "(the run then stops at maxiter or max_epochs) or use target: full")
        self.save_hyperparameters(ignore=["pretrain_optimizer", "optimizer"])
        self.alpha = alpha
        self.update_interval = update_interval
        self.tol = tol
        self.maxiter = maxiter
        self.target = target
        # frozen targets P of all samples and the assignments of the last update (checkpointed)
        self.register_buffer("targets", torch.empty(0, n_clusters))
        self.register_buffer("last_labels", torch.empty(0, dtype=torch.long))
        self.register_buffer("cluster_steps", torch.tensor(0))

    resizable_buffers = ("cluster_centers", "targets", "last_labels")

    def configure_callbacks(self):
        # 'batch' embeds the whole data once, for the k-means initialization
        return [ClusterUpdate(every_n_steps=self.update_interval if self.target == "full" else None)]

    def default_optimizer(self, params, phase: str) -> torch.optim.Optimizer:
        if phase == "cluster":  # the reference code's clustering optimizer
            return torch.optim.SGD(params, lr=0.01, momentum=0.9)
        return super().default_optimizer(params, phase)

    def assign(self, z: Tensor) -> Tensor:
        return student_t_assign(z, self.cluster_centers, self.alpha)

    @torch.no_grad()
    def update_clusters(self, z: Tensor, first: bool) -> None:
        if first:  # initialize the centers by k-means on the embedding
            km = self.run_kmeans(z)
            self.set_cluster_centers(km.centers)
            self.last_labels = km.labels
        q = self.assign(z)
        if self.target == "full":  # 'batch' derives P from each batch's Q and keeps no whole-data targets
            self.targets = target_distribution(q)
        labels = q.argmax(dim=1)
        changed = float((labels != self.last_labels).float().mean())
        self.last_labels = labels
        log_metrics_now(self.trainer, {"train/label_change": changed})
        if not first and changed < self.tol:
            rank_zero_info(f"{type(self).__name__}: {changed:.4%} of assignments changed (< tol {self.tol:.2%}); "
                           "stopping")
            self.stop_fit()

    def clustering_loss(self, z: Tensor, index: Tensor) -> Tensor:
        q = self.assign(z)
        if self.target == "full":
            return kl_clustering_loss(self.targets[index], q)
        with torch.no_grad():
            p = target_distribution(q, all_reduce_sum_(q.sum(dim=0)))
        return kl_clustering_loss(p, q)

    def cluster_step(self, batch: dict[str, Tensor]) -> Tensor:
        z = self.embed(batch["x"])
        loss = self.clustering_loss(z, batch["index"])
        self.log("train/kl", loss)
        return loss
