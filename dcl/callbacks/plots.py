"""Plots of the final clustering, at the end of fit: the embedding in 2-D, the confusion matrix, cluster sizes.

Three PNG files are written to ``<run>/plots/`` (the run's folder as ``ModelCheckpoint`` resolves it:
``save_dir/name/version`` of the first logger, or ``default_root_dir`` without a logger), and logged as images
to every logger that has ``log_image`` (W&B's ``WandbLogger``):

- ``embedding.png``: a 2-D projection of the embedding of all samples (PCA, or t-SNE on a subsample), colored
  by cluster, and beside it by true label when labels are known;
- ``confusion.png`` (labels known): clusters x classes counts, clusters reordered by Hungarian matching so that
  the matched pairs lie on the diagonal, with ACC / NMI / ARI in the title;
- ``cluster_sizes.png``: samples per cluster, largest first, with the mean class size (labels known) or N / K.

Every rank embeds its shard (the embeddings are gathered), rank 0 draws and writes. Figures are drawn on
matplotlib's Agg canvas without pyplot (no display needed, the global backend untouched); matplotlib is
imported only when the plots are drawn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from dcl.cluster.scatter import sorted_eigh
from dcl.files import atomic_write, run_dir
from dcl.method import log_images_now
from dcl.metrics import coded_labels, label_codes

__all__ = ["ClusteringPlots", "project_2d"]


def project_2d(z: Tensor, method: str = "pca", seed: int = 0) -> Tensor:
    """(N, d) -> (N, 2). PCA from the eigenvectors of the d x d covariance (exact and deterministic, no RNG);
    ``tsne``: scikit-learn's t-SNE (use it on a subsample, it is O(N log N) and slow on large N)."""
    z = z.detach().double().cpu()
    if z.shape[1] == 1:
        return torch.cat([z, torch.zeros_like(z)], dim=1).float()
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(2.0, (len(z) - 1) / 3)))
        out = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(z.numpy())
        return torch.from_numpy(out).float()
    if method != "pca":
        raise ValueError(f"unknown projection {method!r}; choose 'pca' or 'tsne'")
    if z.shape[1] == 2:
        return z.float()
    zc = z - z.mean(dim=0)
    _, vecs = sorted_eigh(zc.T @ zc)  # ascending, signs fixed (the same plot every time): the last two span the top
    return (zc @ vecs[:, [-1, -2]].to(zc)).float()


def _figure(width: float, height: float):
    """A figure on matplotlib's Agg canvas, without pyplot: no display, no global backend switch, nothing
    left open (a notebook's own backend is untouched)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _colors(k: int):
    import matplotlib

    name = "tab10" if k <= 10 else "tab20" if k <= 20 else "turbo"
    cmap = matplotlib.colormaps[name]
    return [cmap(i % cmap.N) if k <= 20 else cmap(i / max(k - 1, 1)) for i in range(k)]


def _color_map(labels: Tensor) -> dict[int, object]:
    """A color per label by the rank of its value (labels 100..109 get ten distinct colors); negative labels
    (unlabeled, noise) are grey."""
    ids = torch.unique(labels).tolist()
    known = [k for k in ids if k >= 0]
    return {**{k: "lightgrey" for k in ids if k < 0}, **dict(zip(known, _colors(max(len(known), 1))))}


def _namer(class_names: list[str] | None, labels: Tensor):
    """``class_names[k]`` names label k; labels beyond the names (1..C for C names) take them by rank."""
    if not class_names:
        return str
    ids = torch.unique(labels[labels >= 0]).tolist()
    if ids and ids[-1] >= len(class_names):
        if len(ids) != len(class_names):
            raise ValueError(f"{len(class_names)} class_names for labels {ids[0]}..{ids[-1]} ({len(ids)} values): "
                             "give a name per label value (class_names[k] names label k) or per distinct label")
        return dict(zip(ids, class_names)).__getitem__
    return class_names.__getitem__


def plots_folder(trainer) -> Path | None:
    """Where a run's figures go: its ``ClusteringPlots``' folder, else ``<run>/plots`` when the run has a logger
    (a run folder); None for a run that writes no files of its own (no logger and no ClusteringPlots, e.g. the
    estimator's fits). Call on rank 0."""
    for callback in trainer.callbacks:
        if isinstance(callback, ClusteringPlots):
            return Path(callback.dirpath) if callback.dirpath else run_dir(trainer) / "plots"
    return run_dir(trainer) / "plots" if trainer.loggers else None


class ClusteringPlots(Callback):
    """Draw the final clustering at the end of fit (see the module docstring for the figures).

    Args:
        projection: ``pca`` (all samples) or ``tsne`` (on at most ``tsne_points`` samples).
        max_points: at most this many points are drawn (a seeded random subsample).
        tsne_points: subsample size for t-SNE.
        dirpath: folder for the PNGs (default: ``<run>/plots``).
        log_images: also log the images to loggers that have ``log_image`` (W&B).
        dpi: resolution of the PNGs.
        seed: seed of the subsample and of t-SNE.
    """

    FILES = ("embedding.png", "confusion.png", "cluster_sizes.png")
    #: the method embeds all samples once when its fit ends, on its device, for this and the final scores
    reads_final_embedding = True

    def __init__(self, projection: str = "pca", max_points: int = 10000, tsne_points: int = 3000,
                 dirpath: str | None = None, log_images: bool = True, dpi: int = 110, seed: int = 0) -> None:
        if projection not in ("pca", "tsne"):
            raise ValueError(f"projection must be 'pca' or 'tsne', got {projection!r}")
        if max_points < 10 or tsne_points < 10:
            raise ValueError("max_points and tsne_points must be >= 10")
        self.projection = projection
        self.max_points = max_points
        self.tsne_points = tsne_points
        self.dirpath = dirpath
        self.log_images = log_images
        self.dpi = dpi
        self.seed = seed
        self.paths: dict[str, Path] = {}  # what the last fit wrote, by figure name

    def on_fit_end(self, trainer, pl_module) -> None:
        if trainer.fast_dev_run:  # a trial run writes nothing (Lightning's rule for its loggers and checkpoints)
            return
        z = pl_module.final_embedding()  # (else embed_all: a collective under DDP, every rank takes part)
        folder = Path(self.dirpath) if self.dirpath else (run_dir(trainer) / "plots" if trainer.is_global_zero
                                                          else None)
        folder = trainer.strategy.broadcast(folder)
        if not trainer.is_global_zero:
            return
        with torch.no_grad():
            pred = pl_module.predict_clusters(z).cpu()
        dm = trainer.datamodule
        y = dm.y.cpu() if dm is not None and hasattr(dm, "y") else torch.full_like(pred, -1)
        title = f"{type(pl_module).__name__}, K={pl_module.n_clusters}, N={len(z)}"
        self.paths = self.draw(z.cpu(), pred, y, folder, title, class_names=getattr(dm, "class_names", None))
        if self.log_images:
            log_images_now(trainer, {f"plots/{name}": path for name, path in self.paths.items()})

    # -- drawing (no trainer needed: usable on saved embeddings) -----------------------------------------
    def draw(self, z, pred, y, folder: str | Path, title: str = "",
             class_names: list[str] | None = None) -> dict[str, Path]:
        """Write the figures for embeddings ``z`` (N, d), clusters ``pred`` (N,), labels ``y`` (N,, < 0: unknown;
        tensors, numpy arrays or lists) into ``folder``, the classes named by ``class_names`` (``class_names[k]``
        names label k, or, with labels beyond them, the distinct labels in order) when given; returns their paths
        by name."""
        import matplotlib.style

        z = z if torch.is_tensor(z) else torch.as_tensor(np.asarray(z))
        pred, (y, names_of_y) = label_codes(pred), coded_labels(y)
        class_names = class_names or names_of_y  # labels given as names name their classes
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        pred, y = pred.long(), y.long()
        known = y >= 0
        name = _namer(class_names, y)
        paths = {"embedding": folder / "embedding.png", "cluster_sizes": folder / "cluster_sizes.png"}
        with matplotlib.style.context("default"):
            self._embedding(z, pred, y, known, title, paths["embedding"], name)
            if known.any():
                paths["confusion"] = folder / "confusion.png"
                self._confusion(pred[known], y[known], title, paths["confusion"], name)
            self._sizes(pred, y, known, title, paths["cluster_sizes"])
        return paths

    def _subsample(self, n: int, limit: int) -> Tensor:
        if n <= limit:
            return torch.arange(n)
        g = torch.Generator().manual_seed(self.seed)
        return torch.randperm(n, generator=g)[:limit].sort().values

    def _save(self, fig, path) -> None:
        """Whole or not at all: a run stopped while drawing keeps the plot of the last completed draw."""
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=self.dpi, format=Path(path).suffix.lstrip(".") or "png"))

    def _embedding(self, z, pred, y, known, title, path, class_name=str):
        limit = self.tsne_points if self.projection == "tsne" else self.max_points
        idx = self._subsample(len(z), limit)
        xy = project_2d(z[idx], self.projection, self.seed).numpy()
        panels = [("cluster", pred, str, "noise")] + ([("true label", y, class_name, "unknown")] if known.any() else [])
        fig = _figure(5.2 * len(panels), 4.8)
        axes = fig.subplots(1, len(panels), squeeze=False)
        size = float(max(2.0, min(20.0, 6000.0 / len(idx))))
        for ax, (what, labels, name, negative) in zip(axes[0], panels):
            colors = _color_map(labels)  # of all samples, not the subsample: the same colors as the sizes' bars
            labels = labels[idx]
            if (labels < 0).any():
                m = (labels < 0).numpy()
                ax.scatter(xy[m, 0], xy[m, 1], s=size, c="lightgrey", linewidths=0, label=negative)
            ids = [k for k in colors if k >= 0 and (labels == k).any()]
            for k in ids:
                m = (labels == k).numpy()
                ax.scatter(xy[m, 0], xy[m, 1], s=size, color=colors[k], linewidths=0, alpha=0.8, label=name(k))
            if len(ids) <= 20:
                ax.legend(title=what, fontsize=7, title_fontsize=8, markerscale=max(1.0, 12 / size) ** 0.5,
                          loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
            ax.set_title(f"colored by {what}", fontsize=10)
            axis = "PC" if self.projection == "pca" and z.shape[1] > 2 else ("t-SNE " if self.projection == "tsne"
                                                                               else "z")
            ax.set_xlabel(f"{axis}1")
            ax.set_ylabel(f"{axis}2")
            ax.set_xticks([])
            ax.set_yticks([])
        shown = f"{len(idx)} of {len(z)} samples" if len(idx) < len(z) else f"{len(z)} samples"
        fig.suptitle(f"{title} — embedding ({self.projection.upper()}, {shown})", fontsize=11)
        fig.tight_layout()
        self._save(fig, path)
        return fig

    def _confusion(self, pred, y, title, path, class_name=str):
        from scipy.optimize import linear_sum_assignment

        from dcl.metrics import clustering_scores, confusion

        clusters, classes = torch.unique(pred), torch.unique(y)
        c = confusion(pred, y).numpy()
        rows, cols = linear_sum_assignment(c, maximize=True)
        order = [r for _, r in sorted(zip(cols, rows))] + [r for r in range(len(clusters)) if r not in rows]
        c = c[order]
        scores = clustering_scores(pred, y)
        kp, kt = c.shape
        fig = _figure(min(2 + 0.45 * kt, 16), min(1.6 + 0.4 * kp, 16))
        ax = fig.subplots()
        im = ax.imshow(c, cmap="Blues", aspect="auto")
        fig.colorbar(im, ax=ax, fraction=0.04)
        if kp * kt <= 900:
            vmax = c.max() if c.max() > 0 else 1
            for i in range(kp):
                for j in range(kt):
                    if c[i, j]:
                        ax.text(j, i, str(c[i, j]), ha="center", va="center", fontsize=7,
                                color="white" if c[i, j] > 0.6 * vmax else "black")
        ticks = lambda n: range(n) if n <= 40 else range(0, n, max(1, n // 20))  # noqa: E731
        names = [class_name(int(classes[j])) for j in ticks(kt)]
        ax.set_xticks(list(ticks(kt)), names, fontsize=7, rotation=90 if max(map(len, names)) > 3 else 0)
        ax.set_yticks(list(ticks(kp)), [str(int(clusters[order[i]])) for i in ticks(kp)], fontsize=7)
        ax.set_xlabel("true label")
        ax.set_ylabel("cluster (matched order)")
        ax.set_title(f"{title}\nACC={scores['acc']:.3f}  NMI={scores['nmi']:.3f}  ARI={scores['ari']:.3f}",
                     fontsize=10)
        fig.tight_layout()
        self._save(fig, path)
        return fig

    def _sizes(self, pred, y, known, title, path) -> None:
        ids, counts = torch.unique(pred, return_counts=True)
        order = torch.argsort(counts, descending=True, stable=True)
        ids, counts = ids[order], counts[order]
        fig = _figure(min(3 + 0.3 * len(ids), 16), 3.6)
        ax = fig.subplots()
        colors = _color_map(pred)
        ax.bar(range(len(ids)), counts.numpy(), color=[colors[int(k)] for k in ids])
        if known.any():
            ref, what = known.sum().item() / len(torch.unique(y[known])), "mean class size"
        else:
            ref, what = len(pred) / len(ids), "N / K"
        ax.axhline(ref, color="black", linestyle="--", linewidth=1, label=f"{what} ({ref:.0f})")
        step = 1 if len(ids) <= 40 else max(1, len(ids) // 20)
        ax.set_xticks(list(range(0, len(ids), step)), [str(int(k)) for k in ids[::step]], fontsize=7)
        ax.set_xlabel("cluster (largest first)")
        ax.set_ylabel("samples")
        ax.set_title(f"{title} — cluster sizes", fontsize=10)
        ax.legend(fontsize=8, frameon=False)
        fig.tight_layout()
        self._save(fig, path)

