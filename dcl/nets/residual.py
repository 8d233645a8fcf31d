"""Residual conv building blocks: a Gaussian (VAE) encoder, a decoder and a discriminator that exposes its
intermediate features (for VAE-GAN feature-matching reconstruction).

All three work on small square or rectangular images (8x8 digits, 16x16 USPS, 28x28 MNIST / COIL-20): each stage
halves the spatial size with a stride-2 3x3 conv (``ceil(s / 2)``: 28 -> 14 -> 7 -> 4, 16 -> 8 -> 4 -> 2,
8 -> 4 -> 2 -> 1), and the decoder upsamples (nearest) back to the exact sizes the encoder went through, so odd
sizes need no output padding.

A residual block (He et al. 2016, "basic" block): ``act(norm(conv3x3(act(norm(conv3x3(x))))) + skip(x))`` where
the first conv carries the stride (or follows the upsampling) and ``skip`` is the identity, or a 1x1 conv when
the shape changes. ``residual=False`` drops the skip: the same stack of plain convs (for ablations).
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from dcl.nets.autoencoders import image_shape, make_activation

NORMS = ("batch", "group", "none")


def make_norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":  # at most 8 groups: the most that divide the channels (12 channels: 6 groups of 2)
        return nn.GroupNorm(max(g for g in range(1, 9) if channels % g == 0), channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; choose one of {NORMS}")


def halved_sizes(size: tuple[int, int], n: int) -> list[tuple[int, int]]:
    """Spatial sizes after 0..n stride-2 stages: [size, ceil(size/2), ...]."""
    sizes = [size]
    for _ in range(n):
        h, w = sizes[-1]
        sizes.append(((h + 1) // 2, (w + 1) // 2))
    return sizes


class ResidualBlock(nn.Module):
    """Basic residual block; ``resample``: ``down`` (stride 2), ``up`` (nearest upsampling to ``out_size``)
    or None. ``residual=False``: no skip connection (two plain convs)."""

    def __init__(self, c_in: int, c_out: int, resample: str | None = None,
                 out_size: tuple[int, int] | None = None, norm: str = "batch", activation: str = "relu",
                 residual: bool = True) -> None:
        super().__init__()
        if resample not in (None, "down", "up"):
            raise ValueError(f"resample must be None, 'down' or 'up', got {resample!r}")
        if resample == "up" and out_size is None:
            raise ValueError("an upsampling block needs out_size")
        stride = 2 if resample == "down" else 1
        self.up = nn.Upsample(size=out_size, mode="nearest") if resample == "up" else nn.Identity()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=norm == "none")
        self.norm1 = make_norm(norm, c_out)
        self.act1 = make_activation(activation)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=norm == "none")
        self.norm2 = make_norm(norm, c_out)
        self.act2 = make_activation(activation)
        self.skip = (None if not residual else
                     nn.Conv2d(c_in, c_out, 1, stride, 0) if stride != 1 or c_in != c_out else nn.Identity())

    def forward(self, x: Tensor) -> Tensor:
        x = self.up(x)
        h = self.act1(self.norm1(self.conv1(x)))
        h = self.norm2(self.conv2(h))
        return self.act2(h if self.skip is None else h + self.skip(x))


def down_stages(channels: Sequence[int], blocks_per_stage: int, norm: str, activation: str,
                residual: bool = True) -> list[nn.Module]:
    """One stage per entry of ``channels``: a downsampling residual block, then ``blocks_per_stage - 1`` more."""
    stages, prev = [], channels[0]
    for c in channels:
        blocks = [ResidualBlock(prev, c, "down", norm=norm, activation=activation, residual=residual)]
        blocks += [ResidualBlock(c, c, norm=norm, activation=activation, residual=residual)
                   for _ in range(blocks_per_stage - 1)]
        stages.append(nn.Sequential(*blocks))
        prev = c
    return stages


class ResidualEncoder(nn.Module):
    """x -> (mu, logvar) of a diagonal Gaussian posterior q(z|x).

    Stem conv3x3 -> one downsampling stage per entry of ``channels`` (``blocks_per_stage`` residual blocks, the
    first with stride 2) -> flatten -> linear to ``2 * latent_dim``.
    """

    def __init__(self, input_shape: Sequence[int], latent_dim: int = 10, channels: Sequence[int] = (32, 64, 128),
                 blocks_per_stage: int = 1, norm: str = "batch", activation: str = "relu",
                 residual: bool = True) -> None:
        super().__init__()
        c_in, h, w = image_shape(input_shape, "ResidualEncoder")
        channels = tuple(int(c) for c in channels)
        if not channels or blocks_per_stage < 1:
            raise ValueError("ResidualEncoder needs at least one stage and blocks_per_stage >= 1")
        self.input_shape = (c_in, h, w)
        self.latent_dim = latent_dim
        self.sizes = halved_sizes((h, w), len(channels))
        self.stem = nn.Sequential(nn.Conv2d(c_in, channels[0], 3, 1, 1, bias=norm == "none"),
                                  make_norm(norm, channels[0]), make_activation(activation))
        self.stages = nn.Sequential(*down_stages(channels, blocks_per_stage, norm, activation, residual))
        sh, sw = self.sizes[-1]
        self.head = nn.Linear(channels[-1] * sh * sw, 2 * latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.stages(self.stem(x)).flatten(1)
        mu, logvar = self.head(h).chunk(2, dim=1)
        return mu, logvar


class ResidualDecoder(nn.Module):
    """z -> logits of x (apply ``sigmoid`` for [0, 1] pixels): linear -> (C, h, w) -> upsampling residual stages
    mirroring :class:`ResidualEncoder` -> conv3x3 to the input channels."""

    def __init__(self, input_shape: Sequence[int], latent_dim: int = 10, channels: Sequence[int] = (32, 64, 128),
                 blocks_per_stage: int = 1, norm: str = "batch", activation: str = "relu",
                 residual: bool = True) -> None:
        super().__init__()
        c_in, h, w = image_shape(input_shape, "ResidualDecoder")
        channels = tuple(int(c) for c in channels)
        self.input_shape = (c_in, h, w)
        sizes = halved_sizes((h, w), len(channels))
        rev = channels[::-1]
        sh, sw = sizes[-1]
        self.fc = nn.Sequential(nn.Linear(latent_dim, rev[0] * sh * sw), make_activation(activation),
                                nn.Unflatten(1, (rev[0], sh, sw)))
        stages, prev = [], rev[0]
        out_channels = list(rev[1:]) + [channels[0]]
        for i, c in enumerate(out_channels):
            size = sizes[len(channels) - 1 - i]
            blocks = [ResidualBlock(prev, c, "up", out_size=size, norm=norm, activation=activation, residual=residual)]
            blocks += [ResidualBlock(c, c, norm=norm, activation=activation, residual=residual)
                       for _ in range(blocks_per_stage - 1)]
            stages.append(nn.Sequential(*blocks))
            prev = c
        self.stages = nn.Sequential(*stages)
        self.out = nn.Conv2d(prev, c_in, 3, 1, 1)

    def forward(self, z: Tensor) -> Tensor:
        return self.out(self.stages(self.fc(z)))


class ResidualDiscriminator(nn.Module):
    """x -> (logit of "real", [features after each stage]).

    The features of stage ``l`` are the Dis_l(x) of VAE-GAN's learned similarity (Larsen et al. 2016): the
    reconstruction can be measured as ||Dis_l(x) - Dis_l(x~)||^2 instead of (or beside) the pixel error.
    Default: LeakyReLU(0.2) and no normalization (batch statistics mixing real and fake batches are avoided).
    """

    def __init__(self, input_shape: Sequence[int], channels: Sequence[int] = (32, 64, 128),
                 blocks_per_stage: int = 1, norm: str = "none", activation: str = "leaky_relu",
                 residual: bool = True) -> None:
        super().__init__()
        c_in, h, w = image_shape(input_shape, "ResidualDiscriminator")
        channels = tuple(int(c) for c in channels)
        if not channels:
            raise ValueError("ResidualDiscriminator needs at least one stage")
        self.input_shape = (c_in, h, w)
        sizes = halved_sizes((h, w), len(channels))
        self.stem = nn.Sequential(nn.Conv2d(c_in, channels[0], 3, 1, 1), make_activation(activation))
        self.stages = nn.ModuleList(down_stages(channels, blocks_per_stage, norm, activation, residual))
        sh, sw = sizes[-1]
        self.head = nn.Linear(channels[-1] * sh * sw, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        h = self.stem(x)
        features = []
        for stage in self.stages:
            h = stage(h)
            features.append(h)
        return self.head(h.flatten(1)).squeeze(1), features
