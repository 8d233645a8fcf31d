"""Network building blocks shared by the methods."""

from dcl.nets.autoencoders import ConvAutoencoder, MLPAutoencoder, build_autoencoder, make_activation, mlp

__all__ = ["ConvAutoencoder", "MLPAutoencoder", "build_autoencoder", "make_activation", "mlp"]
