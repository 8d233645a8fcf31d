"""The clustering module (CM) and AE-CM: "Joint optimization of an autoencoder for clustering and embedding"
(Boubekki, Kampffmeyer, Brefeld, Jenssen; Machine Learning 110, 2021; arXiv 2012.03740).
Official code: GitHub ``Ahcene-B/clustering-Module`` (TensorFlow ``Module/module_CM.py``,
``Module/module_AECM.py``, tuned values in ``Tuned_Param.py``; a PyTorch example in ``Example/lib_CM.py``).

**CM.** A one-hidden-layer autoencoder whose hidden layer is a softmax: gamma = softmax(x W_e + b_e) (N x K
responsibilities), x~ = gamma W_d + b_d = gamma U with U = W_d + b_d (each row of gamma sums to 1, so the
bias folds into the centroids and x~ is a convex mix of centroids). Its loss E1 + E2 + E3 + E4 (see
:mod:`dcl.cluster.cm_losses`) satisfies E1 + E2 + E3 = sum_n sum_k gamma_nk ||x_n - u_k||^2: the CM fits an
isotropic GMM (soft k-means) with a Dirichlet(alpha) prior on the mixing weights, by gradient descent.
Prediction: argmax_k gamma_nk. ``cluster_centers`` holds U (K x d) and is refreshed after every step.

**AE-CM.** The CM on the code z = f(x) of a deep autoencoder (d-500-500-2000-c, LeakyReLU(0.2), linear code
and output), everything trained jointly on::

    L = sum ||z - gamma U||^2 + sum gamma (1 - gamma) + lbd * sum_kl |(U U^T - I)_kl| + E4 + beta * sum ||x - g(z)||^2

(E2 and E3 at their orthonormal-U values, plus a penalty that keeps U orthonormal: without it the embedding
and the centroids can shrink together and the CM loss collapses.)

Schedule (official code): Adam(lr 1e-3, eps 1e-3), constant learning rate (decayed on USPS, see below); CM 150
epochs, AE-CM 1000 epochs; then ONE more epoch in which the weights are averaged over its iterations and the
average is kept (:class:`dcl.callbacks.weight_averaging.FinalEpochAveraging`; so ``max_epochs`` = 151 / 1001).
Random initialization by default (``init: rand``). ``init: pre``: pretrain the autoencoder (``pretrain_epochs``, 100;
SGD lr 0.01 momentum 0.9 on the per-sample MSE summed over the batch, as the authors' AE.py), k-means (20
restarts) on z, W_e = pinv(U), b_e = 0, W_d = U, b_d = 0, then ``cm_epochs`` (100) epochs training the CM alone
(its full E1..E4 loss on the frozen code) with a fresh Adam, then the joint training with another fresh Adam. For the CM alone, ``init: pre`` is
the authors' k-means++ seeding followed by one Lloyd iteration (``kmeans_max_iter: 1``), then W_e = pinv(U).

Choices where the paper/code is silent or buggy (and why):

* Sums over the batch, not means, as the official code: with Adam's eps = 1e-3 the scale of the loss matters,
  and the tuned alpha/beta were found for sums.
* The official code's known bugs are not copied: ``nn.Softmax()`` without a dim in the PyTorch example
  (deprecated implicit choice; here softmax over clusters, dim=1 explicitly); the "decay" optimizers whose lr schedule never triggers (the name is
  split on ``|`` and then searched for "decay" as a list element): ``lr_decay_epochs`` applies the decay where
  the authors' script asks for it (of our configs, USPS only: 1e-3 -> 1e-4 over 150 epochs), since at the
  constant lr the code actually ran, one USPS seed of two diverged after 565 of the 1000 epochs (in epochs
  566-570 the AE term per step went from 2.5 to 2.3e6 and E1 from 0.8 to 2.6e4,
  ``benchmarks/results/aecm_usps_e620.md``) and with the decay none of three did; the AE
  pretraining that leaves the first encoder kernel out of its update (``trainable_variables[1:]``).
* PyTorch's Adam, although the authors' Keras Adam adds eps to the uncorrected sqrt(v): with their large eps
  (1e-3) the two differ in the first epochs (Keras' eps is worth 31.6 eps of PyTorch's at the first step, 2.3
  after one USPS epoch), when the clusters form. Keras' update is one config line away
  (``optimizer: {class_path: dcl.optim.KerasAdam, init_args: {lr: 0.001, eps: 0.001}}``); on USPS it scored lower:
  after 150 epochs, same seeds, 59.83 ± 3.40 ACC against 66.96 ± 0.82 with PyTorch's, lower for each of the 3
  seeds (``benchmarks/results/aecm_usps_keras_decay150_e150.md``).
* Initialization as the official Keras layers: Glorot-uniform kernels and truncated-normal biases with std
  sqrt(1/n)/0.88 (Keras' ``glorot_normal`` on a vector of size n), for the CM and the autoencoder.
* A non-uniform ``alpha`` is matched to clusters by rank (sorted log-weights against sorted alpha), as the
  official CM does; the official AE-CM is not consistent there (its joint phase sorts the log-weights, not alpha;
  its CM-alone phase alpha, not the log-weights). A scalar alpha (all tuned values) needs no sorting.
* The orthogonality penalty uses |.| (``orth_power: 1``, official TF); the PyTorch example squares it
  (``orth_power: 2``), and also divides E1-E3 by n x d (not E4 or the penalty) and has no biases, so
  ``orth_power: 2`` alone does not make this the example's loss.
* Under DDP the loss is global-batch exact (:func:`ddp_global_batch_loss`; E4 on the all-reduced mixing weights):
  the 2-process gradient equals the 1-process one to float64 rounding. Without a Dirichlet prior (alpha = 1),
  clusters collapse in the joint phase and which ones survive is decided by rounding, so two float32 fits
  (1 vs 2 processes, or one perturbed by 1e-7) can end far apart; with alpha > 1 (every tuned value) they agree.
* With ``init: pre``, the AE pretraining uses the datamodule's batch size (the authors used 256 there and the
  tuned batch size after); its loss is summed over the batch as theirs, so at the same lr its gradient is
  batch / 256 times theirs (USPS' tuned batch: 0.18x); one ``fit`` runs all phases: pretraining, CM alone, joint,
  averaging.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dcl.callbacks.weight_averaging import FinalEpochAveraging
from dcl.cluster.cm_losses import aecm_loss_terms, cm_loss_terms
from dcl.distributed import broadcast_, global_mean, sum_over_global_batch
from dcl.method import AutoencoderMethod, ClusteringMethod, ConfigError, student_t_assign, warn_if_fit_ends_within
from dcl.optim import OptimizerFactory, check_optimizer, make_optimizer

__all__ = ["ClusteringModule", "CM", "AECM"]

INITS = ("rand", "pre")


def _keras_bias_init_(bias: Tensor) -> Tensor:
    """Keras ``glorot_normal`` on a bias vector of size n: truncated normal (2 std), std sqrt(1/n) / 0.8796."""
    std = math.sqrt(1.0 / bias.numel()) / 0.87962566103423978
    return nn.init.trunc_normal_(bias, std=std, a=-2 * std, b=2 * std)


def ddp_global_batch_loss(terms: dict[str, Tensor]) -> Tensor:
    """The loss whose DDP gradient (the ranks' average) is the single-process gradient of the global batch.

    The paper's terms are sums over the batch (E1, E2, E3, the AE reconstruction) or functions of the batch's
    mixing weights (E4, computed from every rank's gamma): those are scaled by :func:`sum_over_global_batch`. The
    orthogonality penalty does not depend on the batch: every rank computes all of it.
    """
    return sum(v if name == "orth" else sum_over_global_batch(v) for name, v in terms.items())


class ClusteringModule(nn.Module):
    """The CM's parameters: gamma = softmax(x W_e + b_e) and U = W_d + b_d (K x d, one centroid per row).

    Args:
        dim: size of the inputs (the code for AE-CM).
        n_clusters: K.
        center_bias: keep the decoder bias b_d (U = W_d + b_d, official TF code); False: U = W_d (PyTorch example).
    """

    def __init__(self, dim: int, n_clusters: int, center_bias: bool = True) -> None:
        super().__init__()
        self.assign_layer = nn.Linear(dim, n_clusters)
        self.center_weight = nn.Parameter(torch.empty(n_clusters, dim))
        self.center_bias = nn.Parameter(torch.zeros(dim)) if center_bias else None
        nn.init.xavier_uniform_(self.assign_layer.weight)
        _keras_bias_init_(self.assign_layer.bias.data)
        nn.init.xavier_uniform_(self.center_weight)
        if self.center_bias is not None:
            _keras_bias_init_(self.center_bias.data)

    def centers(self) -> Tensor:
        """U (K x d)."""
        return self.center_weight if self.center_bias is None else self.center_weight + self.center_bias

    def forward(self, x: Tensor) -> Tensor:
        """gamma (N x K), rows on the simplex."""
        return F.softmax(self.assign_layer(x), dim=1)

    @torch.no_grad()
    def init_from_centers(self, centers: Tensor) -> None:
        """The "pre" initialization: W_e = pinv(U), b_e = 0, W_d = U, b_d = 0."""
        u = centers.detach().to(self.center_weight)
        self.assign_layer.weight.copy_(torch.linalg.pinv(u.double()).T.to(u))  # x W_e with W_e = pinv(U) (d x K)
        self.assign_layer.bias.zero_()
        self.center_weight.copy_(u)
        if self.center_bias is not None:
            self.center_bias.zero_()


def _check_alpha(alpha, n_clusters: int) -> float | list[float]:
    values = [float(a) for a in alpha] if isinstance(alpha, (list, tuple)) else [float(alpha)]
    if any(a <= 0 for a in values):
        raise ConfigError(f"alpha (the Dirichlet concentration) must be > 0, got {alpha!r}")
    if len(values) > 1 and len(values) != n_clusters:
        raise ConfigError(f"alpha has {len(values)} values but there are {n_clusters} clusters; give one value "
                          "or one per cluster")
    return values if len(values) > 1 else values[0]


def _adam_cm(params) -> torch.optim.Optimizer:
    """The authors' optimizer: Adam, lr 1e-3, betas (0.9, 0.999), eps 1e-3 (sic: large eps), constant lr."""
    return torch.optim.Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-3)


class _WithClusteringModule:
    """What CM and AE-CM share around their ClusteringModule ``cm``: the ``cluster_centers`` buffer that follows U,
    the "pre" initialization from centroids, and the weight-averaged final epoch."""

    cm: ClusteringModule
    cluster_centers: Tensor
    average_last_epoch: bool

    @torch.no_grad()
    def sync_centers(self) -> None:
        """Copy U into the ``cluster_centers`` buffer (done after every optimizer step)."""
        self.cluster_centers.copy_(self.cm.centers().detach())

    def init_cm(self, centers: Tensor) -> None:
        """Initialize the CM from centroids (the "pre" init); rank 0's value wins under DDP."""
        centers = broadcast_(centers.detach().to(self.cluster_centers).contiguous())
        if centers.shape != self.cluster_centers.shape:
            raise ConfigError(f"the CM has {tuple(self.cluster_centers.shape)} centroids; got {tuple(centers.shape)}")
        self.cm.init_from_centers(centers)
        self.sync_centers()

    def on_weights_averaged(self) -> None:
        self.sync_centers()

    def configure_callbacks(self):
        return [FinalEpochAveraging(epochs=1)] if self.average_last_epoch else []


class CM(_WithClusteringModule, ClusteringMethod):
    """The clustering module (Boubekki et al. 2021, section 3) on raw vectors or given features.

    An isotropic GMM with a Dirichlet prior on the mixing weights, fitted as a one-hidden-layer autoencoder.

    Args:
        n_clusters: K (from the datamodule).
        input_shape: shape of one sample (flattened; from the datamodule).
        alpha: Dirichlet concentration of the prior on the mixing weights (one value, or one per cluster);
            1 switches the prior off. Tuned: MNIST 177, USPS 40, Fashion-MNIST 80.
        init: ``rand`` (paper default) or ``pre`` (k-means++ seeding + ``kmeans_max_iter`` Lloyd steps, then
            W_e = pinv(U), W_d = U).
        center_bias: U = W_d + b_d (True, official TF) or U = W_d.
        optimizer: optimizer factory (None: Adam lr 1e-3, eps 1e-3).
        average_last_epoch: average the weights over the last epoch (the paper's final averaging epoch).
        kmeans_n_init: k-means restarts of ``init: pre`` (official: 1).
        kmeans_max_iter: Lloyd steps of the k-means of ``init: pre`` (official: 1).
    """

    def __init__(self, n_clusters: int, input_shape: Sequence[int], alpha: float | list[float] = 1.0,
                 init: str = "rand", center_bias: bool = True, optimizer: OptimizerFactory | None = None,
                 average_last_epoch: bool = True, kmeans_n_init: int = 1, kmeans_max_iter: int = 1) -> None:
        dim = math.prod(int(s) for s in input_shape)
        super().__init__(n_clusters, input_shape, dim, kmeans_n_init)
        if init not in INITS:
            raise ConfigError(f"init must be one of {INITS}, got {init!r}")
        if kmeans_max_iter < 1:
            raise ConfigError(f"kmeans_max_iter must be >= 1, got {kmeans_max_iter}")
        self.save_hyperparameters(ignore=["optimizer"])
        self.alpha = _check_alpha(alpha, n_clusters)
        self.init = init
        check_optimizer(optimizer, "optimizer")
        self.optimizer = optimizer
        self.average_last_epoch = average_last_epoch
        self.kmeans_max_iter = kmeans_max_iter
        self.cm = ClusteringModule(dim, n_clusters, center_bias)
        self.register_buffer("initialized", torch.tensor(init == "rand"))
        self.sync_centers()

    # -- the contract -----------------------------------------------------------------------------------
    def embed(self, x: Tensor) -> Tensor:
        return x.flatten(1)

    def assign(self, z: Tensor) -> Tensor:
        return self.cm(z)

    def set_cluster_centers(self, centers: Tensor) -> None:
        self.init_cm(centers)

    # -- training ---------------------------------------------------------------------------------------
    def configure_optimizers(self):
        return make_optimizer(self.optimizer, self.parameters(), _adam_cm)

    def on_train_epoch_start(self) -> None:
        if not bool(self.initialized):
            km = self.run_kmeans(self.embed_all(), max_iter=self.kmeans_max_iter)
            self.set_cluster_centers(km.centers)
            self.initialized.fill_(True)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        x = self.embed(batch["x"])
        gamma = self.cm(x)
        terms = cm_loss_terms(x, gamma, self.cm.centers(), self.alpha, pi=global_mean(gamma))
        self.log_dict({f"train/{k}": v for k, v in terms.items()})
        return ddp_global_batch_loss(terms)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self.sync_centers()


class AECM(_WithClusteringModule, AutoencoderMethod):
    """AE-CM: the clustering module on the code of a deep autoencoder, trained jointly (Boubekki et al. 2021).

    Args:
        n_clusters: K (from the datamodule).
        input_shape: shape of one sample (from the datamodule).
        latent_dim: size of the code (tuned: MNIST 10, Fashion-MNIST 10, USPS 30).
        hidden_dims: hidden sizes of the ``mlp`` encoder (the paper's d-500-500-2000-c).
        activation: hidden activation (``leaky_relu``: LeakyReLU 0.2, the paper's).
        autoencoder: ``mlp`` (the paper's) or ``conv``.
        alpha: Dirichlet concentration (tuned: MNIST 230, Fashion-MNIST 13, USPS 3).
        beta: weight of the autoencoder's reconstruction (tuned: MNIST 5, Fashion-MNIST 47, USPS 0.04).
        lbd: weight of the orthogonality penalty on U (1).
        orth_power: 1 (|.|, official TF) or 2 (squared, official PyTorch example).
        init: ``rand`` (paper default: everything from random weights) or ``pre``.
        pretrain_epochs: autoencoder pretraining epochs of ``init: pre`` (100; ignored for ``rand``).
        cm_epochs: epochs training the CM alone on the frozen pretrained code (``init: pre``; 100).
        pretrained: a dcl autoencoder checkpoint to start from (skips the pretraining).
        center_bias: U = W_d + b_d (official) or U = W_d.
        pretrain_optimizer: optimizer of the pretraining (None: SGD lr 0.01, momentum 0.9, as the authors' AE.py).
        optimizer: optimizer of the CM-alone and joint phases (None: Adam lr 1e-3, eps 1e-3).
        kmeans_n_init: restarts of the k-means of ``init: pre`` (20).
        average_last_epoch: average the weights over the last epoch (the paper's final averaging epoch).
        lr_decay_epochs: 0 (default): constant learning rate in the joint phase, as the official code runs.
            > 0: the decay the official script asks for on USPS (``adam_decay|3`` with 150 epochs' steps) but
            never applies (a bug): polynomial decay, power 0.4, from the optimizer's lr to a tenth of it
            (1e-3 -> 1e-4 for the default Adam) over this many epochs' steps, then constant.
    """

    def __init__(self, n_clusters: int, input_shape: Sequence[int], latent_dim: int = 10,
                 autoencoder: str = "mlp", hidden_dims: Sequence[int] = (500, 500, 2000),
                 activation: str = "leaky_relu", alpha: float | list[float] = 1.0, beta: float = 1.0,
                 lbd: float = 1.0, orth_power: int = 1, init: str = "rand", pretrain_epochs: int = 100,
                 cm_epochs: int = 100, pretrained: str | None = None, center_bias: bool = True,
                 pretrain_optimizer: OptimizerFactory | None = None, optimizer: OptimizerFactory | None = None,
                 kmeans_n_init: int = 20, average_last_epoch: bool = True, lr_decay_epochs: int = 0) -> None:
        if init not in INITS:
            raise ConfigError(f"init must be one of {INITS}, got {init!r}")
        if beta < 0 or lbd < 0:
            raise ConfigError(f"beta and lbd must be >= 0, got beta={beta}, lbd={lbd}")
        if orth_power not in (1, 2):
            raise ConfigError(f"orth_power must be 1 or 2, got {orth_power}")
        if cm_epochs < 0:
            raise ConfigError(f"cm_epochs must be >= 0, got {cm_epochs}")
        if lr_decay_epochs < 0:
            raise ConfigError(f"lr_decay_epochs must be >= 0 (0: constant learning rate), got {lr_decay_epochs}")
        super().__init__(n_clusters, input_shape, latent_dim, autoencoder, hidden_dims, activation,
                         pretrain_epochs if init == "pre" else 0, pretrained, pretrain_optimizer, optimizer,
                         kmeans_n_init)
        self.save_hyperparameters(ignore=["pretrain_optimizer", "optimizer"])
        self.alpha = _check_alpha(alpha, n_clusters)
        self.beta = beta
        self.lbd = lbd
        self.orth_power = orth_power
        self.init = init
        self.cm_epochs = cm_epochs if init == "pre" else 0
        self.average_last_epoch = average_last_epoch
        self.lr_decay_epochs = lr_decay_epochs
        if not pretrained:  # the official Keras bias init (the shared autoencoder zeroes its biases)
            for m in self.autoencoder.modules():
                if isinstance(m, nn.Linear) and m.bias is not None:
                    _keras_bias_init_(m.bias.data)
        self.cm = ClusteringModule(latent_dim, n_clusters, center_bias)
        self.register_buffer("joint_started", torch.tensor(False))

    # -- the contract -----------------------------------------------------------------------------------
    def assign(self, z: Tensor) -> Tensor:
        if not self.clustering_active:  # AE pretraining: k-means centers on the current code
            return student_t_assign(z, self.cluster_centers)
        return self.cm(z)

    def set_cluster_centers(self, centers: Tensor) -> None:
        """During pretraining: k-means centers for scoring AE + k-means. Afterwards: initialize the CM from them."""
        if self.clustering_active:
            self.init_cm(centers)
        else:
            super().set_cluster_centers(centers)

    # -- phases -----------------------------------------------------------------------------------------
    @property
    def cm_only(self) -> bool:
        """Whether this is the "pre" phase that trains the CM alone on the frozen code."""
        return self.clustering_active and not bool(self.joint_started)

    def pretrain_step(self, batch: dict[str, Tensor]) -> Tensor:
        """The authors' AE.py loss: each sample's MSE (mean over features), SUMMED over the batch.

        Their ``tape.gradient`` of the vector of per-sample losses differentiates its sum; with their SGD lr of
        1e-2 the batch mean (the shared pretraining's) would take steps a batch size smaller.
        """
        x = batch["x"]
        _, x_hat = self.autoencoder(x)
        loss = (x_hat - x).square().flatten(1).mean(1).sum()
        self.log("train/recon", loss)
        return ddp_global_batch_loss({"recon": loss})

    def default_optimizer(self, params, phase: str) -> torch.optim.Optimizer:
        if phase == "pretrain":  # the authors' AE.py (MNIST/USPS; FMNIST without momentum: its config): SGD lr 1e-2,
            # momentum 0.9, constant
            return torch.optim.SGD(params, lr=0.01, momentum=0.9)
        return _adam_cm(params)

    def configure_optimizers(self):
        optimizer = super().configure_optimizers()
        joint = self.clustering_active and (bool(self.joint_started) or self.cm_epochs == 0)
        if not (joint and self.lr_decay_epochs):
            return optimizer
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self._lr_decay_factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _lr_decay_factor(self, step: int) -> float:
        """Keras' ``PolynomialDecay(lr, steps, end_learning_rate=lr / 10, power=0.4)`` as a factor of lr."""
        if not step:  # the call at construction, before the trainer has counted the batches of an epoch
            return 1.0
        # the horizon in optimizer steps, the scheduler's (an epoch's last batch steps under accumulate_grad_batches)
        batches = int(self.trainer.num_training_batches)
        steps = self.lr_decay_epochs * max(1, math.ceil(batches / self.trainer.accumulate_grad_batches))
        return 0.9 * (1 - min(step, steps) / steps) ** 0.4 + 0.1

    def start_clustering(self) -> None:
        super().start_clustering()
        if self.init == "pre":
            km = self.run_kmeans(self.embed_all())
            self.set_cluster_centers(km.centers)
        self.sync_centers()

    def on_fit_start(self) -> None:
        super().on_fit_start()  # warns of a fit that ends within the pretraining
        max_epochs = self.trainer.max_epochs
        if self.cm_epochs > 0 and not bool(self.joint_started) and not (
                max_epochs is not None and 0 <= max_epochs <= self.pretrain_epochs and not self.clustering_active):
            warn_if_fit_ends_within(
                self, self.pretrain_epochs + self.cm_epochs,
                f"epochs of pretraining and CM alone ({self.pretrain_epochs} + {self.cm_epochs})", "cm_epochs",
                "AE-CM's joint phase (the autoencoder and the CM trained together) will not run and the result is "
                "the CM on the pretrained code")

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        if (self.clustering_active and not bool(self.joint_started)
                and self.current_epoch >= self.pretrain_epochs + self.cm_epochs):
            self.joint_started.fill_(True)  # a fresh Adam for the joint phase, as the authors' fit()
            if self.cm_epochs > 0 and self._trainer is not None:
                self.trainer.strategy.setup_optimizers(self.trainer)

    def cluster_step(self, batch: dict[str, Tensor]) -> Tensor:
        x = batch["x"]
        if self.cm_only:
            with torch.no_grad():
                z = self.embed(x)
            gamma = self.cm(z)
            terms = cm_loss_terms(z, gamma, self.cm.centers(), self.alpha, pi=global_mean(gamma))
        else:
            z, x_hat = self.autoencoder(x)
            gamma = self.cm(z)
            terms = aecm_loss_terms(x, x_hat, z, gamma, self.cm.centers(), self.alpha, self.beta, self.lbd,
                                    self.orth_power, pi=global_mean(gamma))
        self.log_dict({f"train/{k}": v for k, v in terms.items()})
        return ddp_global_batch_loss(terms)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.clustering_active:
            self.sync_centers()
