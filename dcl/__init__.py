"""dcl: deep clustering on PyTorch Lightning."""

__version__ = "0.1.0"

__all__ = ["DeepClusterer"]


def __getattr__(name: str):
    # Lazy: ``import dcl`` stays light (no lightning import) until the estimator is used.
    if name == "DeepClusterer":
        from dcl.estimator import DeepClusterer

        return DeepClusterer
    raise AttributeError(f"module 'dcl' has no attribute {name!r}")
