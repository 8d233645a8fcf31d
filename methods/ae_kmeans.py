"""AE + k-means: train an autoencoder on reconstruction, then run k-means on its code.

The usual baseline of deep clustering papers, and the shared pretraining of DEC, IDEC and DEKM: pass the
checkpoint of an ``AEKMeans`` run to their ``pretrained`` argument to start from the same autoencoder.
"""

from __future__ import annotations

from typing import Sequence

from dcl.method import AutoencoderMethod, OptimizerFactory


class AEKMeans(AutoencoderMethod):
    """Autoencoder trained for the whole fit on reconstruction, then k-means on its code gives the clusters.

    k-means (``kmeans_n_init`` restarts) runs on the code at each validation and at the end of training.

    Args:
        n_clusters: number of clusters (from the datamodule).
        input_shape: shape of one sample (from the datamodule).
        latent_dim: size of the code.
        autoencoder: ``mlp`` or ``conv``.
        hidden_dims: hidden sizes of the ``mlp`` encoder.
        activation: hidden activation.
        pretrained: start from the autoencoder of another run.
        optimizer: the autoencoder's optimizer (None: Adam, lr 1e-3).
        kmeans_n_init: k-means restarts.
    """

    def __init__(self, n_clusters: int, input_shape: Sequence[int], latent_dim: int = 10,
                 autoencoder: str = "mlp", hidden_dims: Sequence[int] = (500, 500, 2000), activation: str = "relu",
                 pretrained: str | None = None, optimizer: OptimizerFactory | None = None,
                 kmeans_n_init: int = 10, weight_init: str = "glorot") -> None:
        super().__init__(n_clusters, input_shape, latent_dim, autoencoder, hidden_dims, activation,
                         pretrain_epochs=0, pretrained=pretrained, pretrain_optimizer=optimizer,
                         optimizer=optimizer, kmeans_n_init=kmeans_n_init, weight_init=weight_init)
        self.save_hyperparameters(ignore=["optimizer"])

    @property
    def clustering_active(self) -> bool:
        return False  # the autoencoder phase never ends: k-means runs on the current code

    def on_train_epoch_start(self) -> None:
        pass
