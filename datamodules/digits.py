"""scikit-learn's handwritten digits: the embedded default data set (no download)."""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits

from dcl.datamodule import ClusteringDataModule


class Digits(ClusteringDataModule):
    """scikit-learn's 8x8 digits (1797 samples, 10 classes), shipped with scikit-learn; pixels scaled to [0, 1].

    ``batch_size``, ``n_clusters``, ``eval_batch_size``, ``seed`` and ``on_device`` are ``ClusteringDataModule``'s.

    Args:
        flatten: serve 64-d vectors (True) or 1x8x8 images.
    """

    num_classes = 10

    def __init__(self, flatten: bool = True, batch_size: int = 256, n_clusters: int | None = None,
                 eval_batch_size: int | None = None, seed: int | None = None, on_device: bool = False) -> None:
        super().__init__(batch_size, n_clusters, eval_batch_size, seed, on_device)
        self.flatten = flatten

    def load(self):
        data = load_digits()
        x = torch.tensor(data.data, dtype=torch.float32) / 16.0
        if not self.flatten:
            x = x.reshape(-1, 1, 8, 8)
        return x, torch.tensor(data.target)
