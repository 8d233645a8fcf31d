"""Clustering engine: k-means (Lloyd, k-means++ seeding, DDP-aware) and label matching."""

from dcl.cluster.kmeans import KMeansResult, assign_nearest, kmeans, pairwise_sq_dists
from dcl.cluster.matching import match_labels

__all__ = ["kmeans", "KMeansResult", "match_labels", "pairwise_sq_dists", "assign_nearest"]
