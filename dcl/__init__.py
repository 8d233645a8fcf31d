"""dcl: deep clustering on PyTorch Lightning."""

__version__ = "0.1.0"
