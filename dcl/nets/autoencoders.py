"""The papers' autoencoders: the dense d-500-500-2000-k of DEC/IDEC/DEKM/AE-CM and the conv one of DEKM.

Every autoencoder has ``encoder`` and ``decoder`` submodules and returns ``(z, x_hat)``; the state-dict
keys are the same for every method that uses it, so one pretraining serves DEC, IDEC, DEKM and AE+k-means.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(0.2), "elu": nn.ELU, "gelu": nn.GELU,
               "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


def make_activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


@torch.no_grad()
def init_layers_(module: nn.Module, init_weight: Callable[[Tensor], object],
                 kinds: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)) -> nn.Module:
    """Every layer of ``kinds`` in ``module``: weights by ``init_weight`` (in place), biases zero."""
    for m in module.modules():
        if isinstance(m, kinds):
            init_weight(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


def glorot_init_(module: nn.Module) -> nn.Module:
    """Glorot-uniform weights and zero biases, the Keras default that the official codes trained with."""
    return init_layers_(module, nn.init.xavier_uniform_)


def mlp(dims: Sequence[int], activation: str = "relu", last_activation: str | None = None) -> nn.Sequential:
    """Dense layers ``dims[0] -> ... -> dims[-1]`` with ``activation`` between them."""
    if any(int(d) < 1 for d in dims):  # a zero-width layer trains without error into a constant code
        raise ValueError(f"every layer needs at least one unit, got the sizes {list(dims)} (input, hidden, output)")
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(make_activation(activation))
    if last_activation is not None:
        layers.append(make_activation(last_activation))
    return nn.Sequential(*layers)


class MLPAutoencoder(nn.Module):
    """Dense autoencoder ``d-500-500-2000-k`` (hidden sizes configurable), linear code and linear output.

    Args:
        input_shape: shape of one sample; it is flattened, and the output is reshaped back to it.
        latent_dim: size of the code z.
        hidden_dims: encoder hidden layer sizes; the decoder mirrors them.
        activation: hidden activation (``relu`` in DEC/IDEC/DEKM, ``leaky_relu`` (0.2) in AE-CM).
        output_activation: optional activation of the reconstruction (e.g. ``sigmoid`` for [0, 1] pixels).
    """

    def __init__(self, input_shape: Sequence[int], latent_dim: int = 10,
                 hidden_dims: Sequence[int] = (500, 500, 2000), activation: str = "relu",
                 output_activation: str | None = None) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.latent_dim = latent_dim
        d = math.prod(self.input_shape)
        if any(int(h) < 1 for h in hidden_dims):
            raise ValueError(f"hidden_dims must be layer sizes >= 1, got {list(hidden_dims)}")
        self.encoder = nn.Sequential(nn.Flatten(), mlp([d, *hidden_dims, latent_dim], activation))
        self.decoder = nn.Sequential(mlp([latent_dim, *reversed(hidden_dims), d], activation, output_activation),
                                     nn.Unflatten(1, self.input_shape))
        glorot_init_(self)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z = self.encoder(x)
        return z, self.decoder(z)


#: how to serve images as C x H x W, said by every network that needs them
IMAGES_HOW = ("serve images as channels x height x width: flatten: false in an image datamodule (Digits, MNIST, "
              "USPS, COIL20, ImageFolder, ...), or an Arrays file of N x C x H x W (grayscale N x H x W: add the "
              "channel axis, x[:, None])")

#: what to do with images ConvAutoencoder cannot take (not square, too small)
RESIZE_HOW = "resize them (image_size: of ImageFolder and COIL20) or use autoencoder: mlp"


def image_shape(input_shape: Sequence[int], who: str, error: type[ValueError] = ValueError) -> tuple[int, int, int]:
    """``(C, H, W)`` of image inputs, or one ``error`` naming ``who`` needs them and how to serve them."""
    if len(input_shape) != 3:
        raise error(f"{who} needs image inputs (channels, height, width), got shape {tuple(input_shape)}; "
                    + IMAGES_HOW)
    return tuple(int(s) for s in input_shape)  # type: ignore[return-value]


class ConvAutoencoder(nn.Module):
    """DEKM's (and DCEC's) conv autoencoder: Conv(32,5,s2)-Conv(64,5,s2)-Conv(128,3,s2)-Dense(k), mirrored.

    Strided convs halve the size ('same' padding); the third conv is 'valid' when the size after two halvings
    is odd (28 -> 14 -> 7 -> 3, as in the official code) and 'same' otherwise (16 -> 8 -> 4 -> 2 for USPS).
    'same' pads symmetrically (2 and 2 for the 5x5 convs), where TensorFlow puts the odd pixel of its padding at the
    end (1 and 2): the same sizes, with the kernels' grid one pixel off TensorFlow's.
    """

    def __init__(self, input_shape: Sequence[int], latent_dim: int = 10,
                 channels: Sequence[int] = (32, 64, 128), activation: str = "relu",
                 output_activation: str | None = None) -> None:
        super().__init__()
        c_in, h, w = image_shape(input_shape, "ConvAutoencoder")
        if h != w:
            raise ValueError(f"ConvAutoencoder needs square images, got {h}x{w}; {RESIZE_HOW}")
        self.input_shape = tuple(input_shape)
        self.latent_dim = latent_dim
        c1, c2, c3 = channels
        s2 = math.ceil(math.ceil(h / 2) / 2)
        valid = s2 % 2 == 1
        s3 = (s2 - 3) // 2 + 1 if valid else math.ceil(s2 / 2)
        if s3 < 1:
            raise ValueError(f"images of {h}x{w} are too small for ConvAutoencoder, whose three strided convs need "
                             f"at least 5x5; {RESIZE_HOW}")
        act = lambda: make_activation(activation)  # noqa: E731
        self.encoder = nn.Sequential(
            nn.Conv2d(c_in, c1, 5, 2, padding=2), act(),
            nn.Conv2d(c1, c2, 5, 2, padding=2), act(),
            nn.Conv2d(c2, c3, 3, 2, padding=0 if valid else 1), act(),
            nn.Flatten(), nn.Linear(c3 * s3 * s3, latent_dim),
        )
        # Transposed convs undo the halvings exactly; output_padding fixes the odd sizes.
        h1 = math.ceil(h / 2)
        decoder: list[nn.Module] = [
            nn.Linear(latent_dim, c3 * s3 * s3), act(), nn.Unflatten(1, (c3, s3, s3)),
            nn.ConvTranspose2d(c3, c2, 3, 2, padding=0 if valid else 1,
                               output_padding=s2 - ((s3 - 1) * 2 - (0 if valid else 2) + 3)), act(),
            nn.ConvTranspose2d(c2, c1, 5, 2, padding=2, output_padding=h1 - ((s2 - 1) * 2 - 4 + 5)), act(),
            nn.ConvTranspose2d(c1, c_in, 5, 2, padding=2, output_padding=h - ((h1 - 1) * 2 - 4 + 5)),
        ]
        if output_activation is not None:
            decoder.append(make_activation(output_activation))
        self.decoder = nn.Sequential(*decoder)
        glorot_init_(self)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z = self.encoder(x)
        return z, self.decoder(z)


def build_autoencoder(kind: str, input_shape: Sequence[int], latent_dim: int, **kwargs) -> nn.Module:
    """``kind``: ``mlp`` or ``conv``."""
    if kind == "mlp":
        return MLPAutoencoder(input_shape, latent_dim, **kwargs)
    if kind == "conv":
        return ConvAutoencoder(input_shape, latent_dim, **kwargs)
    raise ValueError(f"unknown autoencoder {kind!r}; choose 'mlp' or 'conv'")

