"""The shared mechanisms, usable by any method."""

from dcl.callbacks.plots import ClusteringPlots
from dcl.callbacks.prediction_writer import PredictionWriter

__all__ = ["ClusteringPlots", "PredictionWriter"]
