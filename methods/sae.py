"""SAE: the DEC paper's stacked denoising autoencoder, pretrained greedily layer by layer, then fine-tuned end to
end; k-means on its code (Xie, Girshick, Farhadi, ICML 2016, section 3.2 and 4.3; the authors' Caffe code,
piiswrong/dec ``dec/pretrain.py``, for what the paper leaves out).

The d-500-500-2000-10 autoencoder is trained one encoder/decoder layer pair at a time, each as a denoising
autoencoder of the previous pair's (frozen) output: pair i encodes ``h_i`` into ``h_{i+1}`` and decodes it back,

    h_{i+1} = g(W_i dropout(h_i) + b_i),   loss = ||h_i - g'(W'_i dropout(h_{i+1}) + b'_i)||^2 / 2

with ReLU for g and g' except where a linear layer is needed (the code ``h_L`` and the reconstruction of the data
``h_0``), dropout rate 0.2 (not on the data, nor on the code: ``pretrain.py``), ``layer_epochs`` epochs per pair.
The pairs are then stacked into the deep autoencoder, which is fine-tuned without dropout for the rest of the fit.
The loss is the EuclideanLoss of the authors' Caffe fork, half the squared error averaged over the batch's elements
(``euclidean_loss_layer.cpp`` divides by the blob's count, where upstream Caffe divides by the batch size: a loss
784x smaller on MNIST's pixels), for which the paper's SGD (lr 0.1, momentum 0.9, divided by 10 every 20000
iterations, no weight decay, batch 256) is set; biases learn at twice the rate (``blobs_lr: 2``), weights start N(0,
0.01^2), and every pair and the fine-tuning start a new solver (fresh momentum, the lr schedule from its start)
whose momentum rises from 0 to 0.9 over its first 1000 steps (``momentum_burnin``, an option of the authors' Caffe
fork, ``solver.cpp``: ``momentum x step / momentum_burnin``). Until 2026-12-04 dcl divided the loss by the batch
size, upstream Caffe's EuclideanLoss: at the paper's lr 0.1 the first pair on MNIST's pixels x 0.02 then went from
weights of std 0.01 to 460 in 5 steps (to NaN in 100 with the burn-in), every unit of its code dead, and a whole
1097-epoch run ended at chance (``benchmarks/results/sae_mnist.md``); since the fix the same run gives DEC 85.32 and
IDEC 88.60 ACC on MNIST, the papers' 84.30 and 88.06 (``shared_pretraining_mnist_dec_paper.md``). The paper's budget:
50000 iterations a pair, 100000 of fine-tuning; on MNIST's 70000 samples at batch 256 (274 steps an epoch) that
is ``layer_epochs: 183`` and 365 fine-tuning epochs (``configs/sae/mnist.yaml``), on one process without gradient
accumulation: ``layer_epochs`` counts epochs, ``lr_step`` and ``momentum_burnin`` optimizer steps, so W processes at
the same per-process batch, or ``accumulate_grad_batches``, give each stage fewer steps at a larger batch (on W
processes: ``batch_size`` 256 / W). piiswrong/dec feeds MNIST as 0.02 x its 0-255 pixels
(``data.init_args.scale: 5.1`` of the MNIST datamodule).

Not reproduced: the pretraining on MNIST's 60000 training images only (here the data set clustered, as every dcl
pretraining); Caffe's data layer walking the data in one fixed order in full batches of 256 (dcl reshuffles every
epoch and ends each with a smaller batch, 112 samples on MNIST).

Pass the checkpoint to DEC, IDEC or DEKM (``autoencoder: mlp``) as ``model.init_args.pretrained`` to start them from the
paper's pretraining (the autoencoder's weights are the same as every dcl MLP autoencoder's), on data scaled as it
was trained (MNIST: the same ``data.init_args.scale``; ``benchmarks/shared_pretraining.py --recipe dec-paper`` does).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from dcl.method import ConfigError, OptimizerFactory, warn_if_fit_ends_within
from dcl.methods.ae_kmeans import AEKMeans
from dcl.nets.autoencoders import make_activation
from dcl.optim import CaffeStepLR, make_optimizer


def euclidean_loss(x_hat: Tensor, x: Tensor) -> Tensor:
    """The EuclideanLoss of the DEC authors' Caffe fork: ``(x_hat - x)^2 / 2`` averaged over all the batch's
    elements (its ``euclidean_loss_layer.cpp`` divides by the count; upstream Caffe by the batch size)."""
    return 0.5 * (x_hat - x).square().mean()


class SAE(AEKMeans):
    """The DEC paper's stacked denoising autoencoder, trained layer by layer then fine-tuned, and k-means on its code.

    Greedy layer-wise pretraining with dropout, then end-to-end fine-tuning: the checkpoint DEC, IDEC and DEKM start
    from.

    Args:
        n_clusters: number of clusters (from the datamodule).
        input_shape: shape of one sample (from the datamodule).
        latent_dim: size of the code.
        hidden_dims: hidden sizes of the encoder (the decoder mirrors them); one greedy stage per layer pair.
        activation: hidden activation (ReLU in the paper).
        layer_epochs: epochs of greedy training of each layer pair; the fit's remaining epochs fine-tune the whole
            autoencoder. 0: no greedy stage (end-to-end training only).
        dropout: dropout rate of the greedy stages, on each pair's input (not the data) and hidden output (not the
            code); the paper's 0.2.
        lr_step: divide the learning rate by 10 (``lr_gamma``) every this many steps of a stage (the paper's 20000);
            0: constant.
        lr_gamma: the factor of each lr step.
        momentum_burnin: steps over which each stage's momentum rises linearly from 0 to the optimizer's (the
            authors' 1000); 0: the optimizer's momentum from the first step. Needs an optimizer with momentum.
        bias_lr_mult: the biases' learning rate relative to the weights' (Caffe's ``blobs_lr: 2`` in the authors'
            code).
        pretrained: start from the autoencoder of another run (then only fine-tuning: ``layer_epochs`` is ignored).
        optimizer: the optimizer of every stage (None: SGD, lr 0.1, momentum 0.9, the paper's).
        kmeans_n_init: k-means restarts.
        weight_init: ``small_normal`` (N(0, 0.01^2), the paper's), ``glorot`` or ``fan_in_uniform``.
    """

    def __init__(self, n_clusters: int, input_shape: Sequence[int], latent_dim: int = 10,
                 hidden_dims: Sequence[int] = (500, 500, 2000), activation: str = "relu", layer_epochs: int = 183,
                 dropout: float = 0.2, lr_step: int = 20000, lr_gamma: float = 0.1, bias_lr_mult: float = 2.0,
                 momentum_burnin: int = 1000, pretrained: str | None = None,
                 optimizer: OptimizerFactory | None = None, kmeans_n_init: int = 10,
                 weight_init: str = "small_normal") -> None:
        if layer_epochs < 0 or lr_step < 0 or momentum_burnin < 0:
            raise ConfigError(f"SAE needs layer_epochs >= 0, lr_step >= 0 and momentum_burnin >= 0, got "
                              f"{layer_epochs}, {lr_step} and {momentum_burnin}")
        if momentum_burnin and optimizer is not None:  # the schedule's own refusal, before any training
            try:
                CaffeStepLR(optimizer([torch.nn.Parameter(torch.zeros(1))]), momentum_burnin=momentum_burnin)
            except ValueError as err:
                raise ConfigError(f"SAE's momentum_burnin: {err}; use one, or set model.init_args.momentum_burnin 0"
                                  ) from None
        if not 0 <= dropout < 1 or lr_gamma <= 0 or bias_lr_mult <= 0:
            raise ConfigError(f"SAE needs 0 <= dropout < 1, lr_gamma > 0 and bias_lr_mult > 0, got {dropout}, "
                              f"{lr_gamma} and {bias_lr_mult}")
        super().__init__(n_clusters, input_shape, latent_dim, "mlp", hidden_dims, activation, pretrained, optimizer,
                         kmeans_n_init, weight_init)
        self.save_hyperparameters(ignore=["optimizer"])
        self.layer_epochs = 0 if pretrained else layer_epochs
        self.dropout_rate = dropout
        self.lr_step, self.lr_gamma, self.bias_lr_mult = lr_step, lr_gamma, bias_lr_mult
        self.momentum_burnin = momentum_burnin
        self.act = make_activation(activation)
        # the encoder's layers, and the decoder's in the same order (decoders[i] maps layer i's output back)
        self.encoders = [m for m in self.autoencoder.encoder.modules() if isinstance(m, nn.Linear)]
        self.decoders = [m for m in self.autoencoder.decoder.modules() if isinstance(m, nn.Linear)][::-1]
        # the layer pair in training, len(encoders) once fine-tuning (a buffer: a resumed fit builds its optimizer
        # for the right stage, before Lightning restores the optimizer's state)
        self.register_buffer("stage", torch.tensor(0 if self.layer_epochs else len(self.encoders)))

    @property
    def fine_tuning(self) -> bool:
        return int(self.stage) == len(self.encoders)

    def unfinished_autoencoder(self) -> str | None:
        if self.fine_tuning:
            return None
        pair, pairs = int(self.stage) + 1, len(self.encoders)
        untrained = "the pairs above it were never trained, and " if pair < pairs else ""
        return (f"it ended in its greedy layer-wise training, at layer pair {pair} of {pairs}: {untrained}the whole "
                "autoencoder was never fine-tuned")

    def on_fit_start(self) -> None:
        super().on_fit_start()
        warn_if_fit_ends_within(self, len(self.encoders) * self.layer_epochs, "epochs of greedy layer-wise training",
                                "layer_epochs", "the stacked autoencoder is never fine-tuned end to end")

    def on_train_epoch_start(self) -> None:
        stage = min(self.current_epoch // self.layer_epochs, len(self.encoders)) if self.layer_epochs else \
            len(self.encoders)
        if stage != int(self.stage):
            self.stage.fill_(stage)
            self.trainer.strategy.setup_optimizers(self.trainer)  # a new solver for the new stage

    def configure_optimizers(self):
        stage = int(self.stage)
        trained = list(self.autoencoder.parameters()) if self.fine_tuning else \
            [*self.encoders[stage].parameters(), *self.decoders[stage].parameters()]
        groups = [{"params": [p for p in trained if p.ndim > 1]}, {"params": [p for p in trained if p.ndim <= 1]}]
        optimizer = make_optimizer(self.optimizer, groups, lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9))
        optimizer.param_groups[1]["lr"] *= self.bias_lr_mult
        if not self.lr_step and not self.momentum_burnin:
            return optimizer
        scheduler = CaffeStepLR(optimizer, self.lr_step, self.lr_gamma, self.momentum_burnin)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def pretrain_step(self, batch: dict[str, Tensor]) -> Tensor:
        x = batch["x"]
        if self.fine_tuning:
            _, x_hat = self.autoencoder(x)
            loss = euclidean_loss(x_hat, x)
            self.log("train/recon", 2 * loss.detach())  # the mean squared error
            return loss
        i, last = int(self.stage), len(self.encoders) - 1
        with torch.no_grad():  # the pairs below, trained and frozen
            h = x.flatten(1)
            for layer in self.encoders[:i]:
                h = self.act(layer(h))
        code = self.encoders[i](self.dropout(h, self.dropout_rate) if i else h)
        if i < last:
            code = self.dropout(self.act(code), self.dropout_rate)
        h_hat = self.decoders[i](code)
        if i:
            h_hat = self.act(h_hat)
        loss = euclidean_loss(h_hat, h)
        self.log_dict({"train/layer_recon": 2 * loss.detach(), "train/stage": float(i)})  # (the mean squared error)
        return loss
