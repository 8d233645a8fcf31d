"""DEKM: Deep Embedded K-Means Clustering (Guo, Lin, Ye, ICDMW 2021, arXiv 2109.15149).

Formulation. An autoencoder is pretrained on the reconstruction MSE; its decoder is then dropped and only the
encoder f is trained. Every ``update_interval`` iterations, on the embedding H = f(X) of all samples:
k-means gives centers mu_c and assignments; the within-class scatter
``S_w = sum_c sum_{i in c} (h_i - mu_c)(h_i - mu_c)^T`` is eigendecomposed, ``S_w = V diag(lambda) V^T``, with
the eigenvalues ascending, so that the last coordinate of the rotated embedding ``V^T h`` is the direction
with the largest within-class scatter (the least cluster-structure information). Between two updates the
loss is

    L = sum_{i in batch} (1/d) || V^T f(x_i) - y_i ||^2,   y_i = V^T h_i  except  y_i,last = (V^T mu_{c_i})_last

with h_i and V frozen at the last update: the loss pulls only the last rotated coordinate of each sample
toward its centroid's, greedily adding cluster structure along it. Training stops when at most 0.5% of the
assignments changed between two updates, or after ``maxiter`` iterations. Prediction: the k-means labels of
the final embedding (nearest k-means center; the orthonormal V preserves distances, so predicting in the
rotated space gives the same labels).

Defaults are the official code's (GitHub ``spdj2271/DEKM``, ``DEKM.py`` for images, ``DEKM_dense.py`` for vectors):
conv autoencoder Conv(32,5,s2)-Conv(64,5,s2)-Conv(128,3,s2)-Dense(10), mirrored, for images and a d-500-500-2000-10
dense one for vectors; pretraining 200 epochs, batch 256, Adam (Keras defaults: lr 1e-3, eps 1e-7, here added where
PyTorch adds it, to the bias-corrected sqrt(v): Keras adds it to the uncorrected one, worth 3.2e-6 of PyTorch's eps
at the first step and falling to 1e-7; ``dcl.optim.KerasAdam`` is Keras' update); clustering with Adam (same), batch
256, ``update_interval`` 40 (conv) / 10 (dense), at most 14000 iterations, stop at <= 0.5% changed assignments;
k-means with 100 restarts first, then ``2 x`` the previous run's iteration count as restarts; Keras' ``'uniform'``
initializer U(-0.05, 0.05) on the layers where the official code sets it (the encoder's convs; every dense layer of
the dense AE).

Choices where the paper or the code is silent, or where we deviate on purpose:

* ``torch.linalg.eigh`` (float64) instead of ``np.linalg.eig``: the same decomposition for a symmetric
  matrix, but always real, orthonormal and ascending; each eigenvector's sign is fixed (largest entry > 0).
* New k-means clusters are renamed to the previous ids by Hungarian matching (the official code only uses
  the matching to count the changed assignments, then keeps k-means' arbitrary ids). The count is the same;
  stable ids make the logged clusters comparable over time. ``kmeans_warm_start: true`` replaces the
  restarts of the later updates by one k-means run started from the previous centers (cheaper on big data).
* Batches of the clustering phase are reshuffled every epoch (the official code walks the once-shuffled data
  in a fixed order, last batch partial).
* If training ends while the network moved since the last update (``maxiter``, max_epochs), a final update
  runs so the centers are k-means centers of the final embedding (the official code reports the labels of
  its last update; its stopping rule always ends right after one, and so does ours: the step of the batch
  on which the rule fires is skipped).
* The decoder is left out of the clustering optimizer and out of the loss (never updated again), not
  deleted, so checkpoints of both phases share one state-dict layout (under DDP it gets the zero gradients of
  ``AutoencoderMethod``'s ``touch_all_parameters``, so plain ``strategy: ddp`` works). The loss is scaled by
  the world size, so the gradient is the sum over the global batch as in the paper (DDP averages the ranks'
  gradients).
* The COIL-20 images are resized by the datamodule (antialiased bilinear); the official code uses
  ``tf.image.resize`` (bilinear, no antialiasing).
* ``assign`` (the soft ``probs`` of ``dcl predict``) is DEC's Student's t kernel around the k-means centers:
  DEKM is a hard clustering; its argmax is the nearest center, i.e. the prediction.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from dcl.callbacks.eigen_update import EigenUpdate
from dcl.cluster.kmeans import assign_nearest
from dcl.cluster.scatter import dekm_loss, dekm_targets
from dcl.distributed import sum_over_global_batch
from dcl.method import AutoencoderMethod, ConfigError
from dcl.nets.autoencoders import image_shape, init_layers_
from dcl.optim import OptimizerFactory, make_optimizer


class DEKM(AutoencoderMethod):
    """Deep Embedded K-Means (Guo, Lin, Ye 2021): k-means loss on the code rotated by the scatter's eigenvectors.

    The loss pulls each sample's last rotated coordinate (the direction of the largest within-class scatter) toward
    its k-means centroid's, greedily adding cluster structure along it (the module docstring has the formulation).

    The other autoencoder and pretraining arguments are ``AutoencoderMethod``'s.

    Args:
        latent_dim: embedding size (10).
        autoencoder: ``conv`` (images, served as C x H x W with ``flatten: false``), ``mlp`` (vectors) or
            ``auto`` (conv for square C x H x W inputs of at least 12 x 12, else mlp; ``conv`` takes 5 x 5 and up).
        hidden_dims: the dense autoencoder's hidden sizes (500, 500, 2000).
        update_interval: iterations between eigen updates; None: 40 for conv, 10 for mlp (official).
        tol: stop when at most this fraction of the assignments changed at an update (0.005).
        maxiter: at most this many clustering iterations (14000).
        kmeans_n_init: k-means restarts at the first update and for the pretraining-phase monitoring (100).
        kmeans_n_init_factor: later updates restart k-means ``factor x`` the previous run's iterations (2).
        kmeans_warm_start: later updates run one k-means from the previous centers instead (False).
        weight_init: ``keras_uniform`` (the official code's initializers) or ``glorot`` (dcl's default).
        pretrain_optimizer: optimizer of the pretraining (None: Adam, lr 1e-3, eps 1e-7, Keras' defaults).
        optimizer: optimizer of the clustering phase, on the encoder (None: Adam, lr 1e-3, eps 1e-7).
    """

    resizable_buffers = ("cluster_centers", "targets", "cluster_labels")

    def __init__(self, n_clusters: int, input_shape: Sequence[int], latent_dim: int = 10,
                 autoencoder: str = "auto", hidden_dims: Sequence[int] = (500, 500, 2000), activation: str = "relu",
                 update_interval: int | None = None, tol: float = 0.005, maxiter: int = 14000,
                 kmeans_n_init: int = 100, kmeans_n_init_factor: float = 2.0, kmeans_warm_start: bool = False,
                 weight_init: str = "keras_uniform", pretrain_epochs: int = 200, pretrained: str | None = None,
                 pretrain_optimizer: OptimizerFactory | None = None,
                 optimizer: OptimizerFactory | None = None) -> None:
        shape = tuple(int(s) for s in input_shape)
        if autoencoder == "auto":
            autoencoder = "conv" if len(shape) == 3 and shape[1] == shape[2] >= 12 else "mlp"
        if autoencoder not in ("conv", "mlp"):
            raise ConfigError(f"autoencoder must be 'conv', 'mlp' or 'auto', got {autoencoder!r}")
        if autoencoder == "conv":  # (its size and squareness: ConvAutoencoder's own refusal)
            image_shape(shape, "DEKM's conv autoencoder", ConfigError)
        if update_interval is None:
            update_interval = 40 if autoencoder == "conv" else 10
        if update_interval < 1 or maxiter < 1 or not 0 <= tol < 1:
            raise ConfigError(f"DEKM needs update_interval >= 1, maxiter >= 1 and 0 <= tol < 1, got "
                              f"{update_interval}, {maxiter}, {tol}")
        if kmeans_n_init < 1 or kmeans_n_init_factor <= 0:
            raise ConfigError(f"kmeans_n_init must be >= 1 and kmeans_n_init_factor > 0, got {kmeans_n_init}, "
                              f"{kmeans_n_init_factor}")
        self.autoencoder_kind = autoencoder  # (read by init_weights, which the base class calls)
        super().__init__(n_clusters, shape, latent_dim, autoencoder, hidden_dims, activation, pretrain_epochs,
                         pretrained, pretrain_optimizer, optimizer, kmeans_n_init, weight_init=weight_init)
        self.save_hyperparameters(ignore=["pretrain_optimizer", "optimizer"])
        self.update_interval = update_interval
        self.tol = tol
        self.maxiter = maxiter
        self.kmeans_n_init_factor = kmeans_n_init_factor
        self.kmeans_warm_start = kmeans_warm_start
        d = latent_dim
        # the state of the last eigen update (checkpointed): V, its eigenvalues, frozen targets, labels
        self.register_buffer("rotation", torch.eye(d))
        self.register_buffer("eigenvalues", torch.zeros(d))
        self.register_buffer("targets", torch.empty(0, d))
        self.register_buffer("cluster_labels", torch.empty(0, dtype=torch.long))
        self.register_buffer("cluster_steps", torch.tensor(0))

    weight_inits = ("keras_uniform", "glorot")

    def init_weights(self, weight_init: str) -> None:
        """``keras_uniform``: Keras' ``'uniform'`` initializer, U(-0.05, 0.05) and zero biases, where the official
        code sets it: every Dense of DEKM_dense.py; the encoder's convs of the conv network (Keras' glorot, dcl's
        default, elsewhere)."""
        if weight_init != "keras_uniform":
            return super().init_weights(weight_init)
        uniform = lambda w: nn.init.uniform_(w, -0.05, 0.05)  # noqa: E731
        if self.autoencoder_kind == "conv":
            init_layers_(self.autoencoder.encoder, uniform, kinds=(nn.Conv2d,))
        else:
            init_layers_(self.autoencoder, uniform, kinds=(nn.Linear,))

    def configure_callbacks(self):
        return [EigenUpdate(every_n_steps=self.update_interval, tol=self.tol, n_init=self.kmeans_n_init,
                            n_init_factor=self.kmeans_n_init_factor, warm_start=self.kmeans_warm_start)]

    # -- optimizers: the decoder is dropped after pretraining ------------------------------------------
    def default_optimizer(self, params, phase: str) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=1e-3, eps=1e-7)  # tf.keras.optimizers.Adam() defaults

    def configure_optimizers(self):
        if not self.clustering_active:
            return super().configure_optimizers()
        return make_optimizer(self.optimizer, self.autoencoder.encoder.parameters(),
                              lambda params: self.default_optimizer(params, "cluster"))

    # -- the clustering state ---------------------------------------------------------------------------
    @torch.no_grad()
    def set_eigen_state(self, z: Tensor, labels: Tensor, centers: Tensor, rotation: Tensor,
                        eigenvalues: Tensor) -> None:
        """Called by :class:`EigenUpdate` with the embedding of all samples and the new clustering, V and
        eigenvalues (identical on every rank): freezes the targets until the next update."""
        self.set_cluster_centers(centers)
        self.cluster_labels = labels.to(self.device, torch.long).clone()
        self.rotation.copy_(rotation.to(self.rotation))
        self.eigenvalues.copy_(eigenvalues.to(self.eigenvalues))
        self.targets = dekm_targets(z.float().to(self.device), self.cluster_labels, self.cluster_centers,
                                    self.rotation)

    def predict_clusters(self, z: Tensor) -> Tensor:
        return assign_nearest(z.float(), self.cluster_centers.float())[0]

    # -- training ---------------------------------------------------------------------------------------
    def cluster_step(self, batch: dict[str, Tensor]) -> Tensor:
        z = self.embed(batch["x"])
        loss = dekm_loss(z, self.rotation, self.targets[batch["index"]])
        self.log("train/dekm", loss)
        return sum_over_global_batch(loss)
