"""IDEC: Improved Deep Embedded Clustering with Local Structure Preservation (Guo et al., IJCAI 2017).

DEC's clustering loss plus the autoencoder's reconstruction loss, so that clustering does not distort the
embedding's local structure: L = L_r + gamma * L_c with L_r the reconstruction MSE and L_c = KL(P || Q)
(eq. 7 of the paper; gamma = 0.1). The decoder is kept during clustering. Defaults of the authors' code:
Adam (MNIST) or SGD(lr 0.1, momentum 0.99) (USPS) in the clustering phase, update_interval 140 (MNIST) or
30 (USPS), tol 0.1%, maxiter 20000, k-means with 20 restarts. The pretraining is DEC's (see ``dcl.methods.dec``:
IDEC's README starts from the DEC authors' layer-wise pretrained weights, the ``SAE`` method here).

The balance gamma sets depends on the data's scale: L_r grows with its square, L_c does not. IDEC's MNIST runs fed
the pixels / 50 (its ``datasets.py``, as the DEC paper's code), [0, 5.1], where the reconstruction weighs 26x more
than on [0, 1] pixels: the paper's gamma = 0.1 on [0, 1] weighs the clustering loss about 26x more than the paper
did. ``configs/idec/mnist.yaml`` serves [0, 1] (the DEC-keras pretraining it starts from is trained there); the
paper's path is ``SAE`` and IDEC at ``data.init_args.scale: 5.1``, and on [0, 1] pixels gamma = 0.1 / 5.1^2 = 0.00384
is the paper's balance. It matters: at a reduced budget (20 pretraining epochs, 3 seeds) MNIST's NMI went from 80.78
at gamma 0.1 on [0, 1] to 83.86 at 0.00384 and 84.40 on pixels x 0.02
(``benchmarks/results/shared_pretraining_mnist_p20_{scale1,x5.1}.md``); at the full budget (200 epochs, one seed) ACC /
NMI went from 87.74 / 86.25 at gamma 0.1 to 94.80 / 89.01 at 0.00384 (``shared_pretraining_mnist_gamma_p200.md``),
and from the MNIST config's DEC-keras pretraining (3 seeds) from 93.57 / 87.12 to 97.22 / 92.92
(``shared_pretraining_mnist_dec_keras_gamma.md``): the MNIST config uses 0.00384.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from dcl.method import ConfigError, OptimizerFactory
from dcl.methods.dec import DEC


class IDEC(DEC):
    """DEC plus the reconstruction loss that preserves local structure (Guo et al. 2017).

    The other arguments are ``DEC``'s.

    Args:
        gamma: weight of the clustering loss against the reconstruction loss (0.1).
    """

    def __init__(self, n_clusters: int, input_shape: Sequence[int], latent_dim: int = 10,
                 autoencoder: str = "mlp", hidden_dims: Sequence[int] = (500, 500, 2000), activation: str = "relu",
                 gamma: float = 0.1, alpha: float = 1.0, update_interval: int = 140, tol: float = 0.001,
                 maxiter: int = 20000, pretrain_epochs: int = 200, pretrained: str | None = None,
                 pretrain_optimizer: OptimizerFactory | None = None, optimizer: OptimizerFactory | None = None,
                 kmeans_n_init: int = 20, target: str = "full", weight_init: str = "glorot") -> None:
        super().__init__(n_clusters, input_shape, latent_dim, autoencoder, hidden_dims, activation, alpha,
                         update_interval, tol, maxiter, pretrain_epochs, pretrained, pretrain_optimizer,
                         optimizer, kmeans_n_init, target, weight_init)
        if gamma < 0:
            raise ConfigError(f"gamma must be >= 0, got {gamma}")
        self.save_hyperparameters(ignore=["pretrain_optimizer", "optimizer"])
        self.gamma = gamma

    def default_optimizer(self, params, phase: str) -> torch.optim.Optimizer:
        if phase == "cluster":  # the reference code's clustering optimizer for MNIST (USPS: SGD 0.1 / 0.99)
            return torch.optim.Adam(params, lr=1e-3)
        return super().default_optimizer(params, phase)

    def cluster_step(self, batch: dict[str, Tensor]) -> Tensor:
        x = batch["x"]
        z, x_hat = self.autoencoder(x)
        recon = F.mse_loss(x_hat, x)
        kl = self.clustering_loss(z, batch["index"])
        self.log_dict({"train/recon": recon, "train/kl": kl})
        return recon + self.gamma * kl
