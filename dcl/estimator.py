"""A scikit-learn estimator over any dcl method: ``fit(X)``, ``predict(X)``, ``transform(X)``.

    >>> from dcl import DeepClusterer
    >>> est = DeepClusterer("dec", n_clusters=10, max_epochs=80, method_args={"pretrain_epochs": 50})
    >>> labels = est.fit_predict(X)          # X: (n_samples, n_features) or (n_samples, C, H, W)
    >>> z = est.transform(X)                 # the learned embedding
    >>> est.cluster_centers_                 # centers in the embedding space

The estimator runs the very LightningModule that ``dcl fit --model <method>`` runs, through a Lightning
``Trainer`` on an in-memory datamodule (:class:`InMemory`), so a result obtained here is reproduced by the CLI
with the same settings, and vice versa. It is transductive like every deep clustering method: ``fit`` learns
the network and the clusters of ``X``; ``predict`` embeds new samples with the trained network and assigns
them with the method's own rule (``assign(embed(x))``), so ``predict(X)`` on the training data equals
``labels_``.

Choices made here, and why:

- ``y`` is ignored by ``fit`` (the scikit-learn convention for clusterers); score against labels afterwards
  with :func:`dcl.metrics.clustering_scores` or the CLI's ``val/acc``.
- Samples are cast to float32 (the networks' dtype); ``transform`` returns float32.
- ``random_state`` seeds everything (``lightning.seed_everything``: the global torch, numpy and python RNGs,
  as the CLI's ``seed_everything`` does) and the training shuffle, so two fits with one integer seed give the
  same labels on CPU. ``None`` draws a fresh seed.
- The trainer runs without logger, checkpoints, validation loop or model summary; pass anything else the
  ``Trainer`` accepts (``precision``, ``callbacks``, ``logger``, ...) in ``trainer_args``.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import warnings
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from dcl.datamodule import EVAL_BATCH_FACTOR, ClusteringDataModule
from dcl.method import check_trainer_settings, one_cluster_warning

__all__ = ["DeepClusterer", "InMemory"]


class InMemory(ClusteringDataModule):
    """A datamodule over arrays already in memory (numpy or torch): what :class:`DeepClusterer` trains on,
    and the shortest way to hand your own tensors to a ``Trainer`` from Python.

    Args:
        x: samples, (N, d) features or (N, C, H, W) images; cast to float32.
        y: optional integer labels (N,), -1 where unknown; used for validation scores only.
        batch_size, n_clusters, eval_batch_size, seed, on_device: see ``ClusteringDataModule``.
    """

    def __init__(self, x, y=None, batch_size: int = 256, n_clusters: int | None = None,
                 eval_batch_size: int | None = None, seed: int = 0, on_device: bool = False) -> None:
        super().__init__(batch_size, n_clusters, eval_batch_size, seed, on_device)
        self._source = (x, y)

    def load(self):
        x, y = self._source
        x = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x).float()
        if y is not None:
            y = torch.as_tensor(np.asarray(y) if not torch.is_tensor(y) else y).long()
        return x, y


@contextlib.contextmanager
def _quiet_lightning(quiet: bool):
    """Silence Lightning's info lines ("GPU available", "max_epochs reached") and its warnings about itself
    unless ``verbose``."""
    if not quiet:
        yield
        return
    with warnings.catch_warnings():
        # Lightning's own noise, not the user's concern: a torch/lightning deprecation and the DataLoader hint
        warnings.filterwarnings("ignore", message=r".*treespec, LeafSpec.*")
        warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
        with _quiet_loggers():
            yield


@contextlib.contextmanager
def _quiet_loggers():
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric", "lightning")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _method_class(method) -> type:
    """A registered method name (case, "_" and "-" aside; see ``dcl list``) or a ClusteringMethod subclass."""
    from dcl import registry
    from dcl.method import ClusteringMethod

    if isinstance(method, str):
        return registry.get_method(method)
    if isinstance(method, type) and issubclass(method, ClusteringMethod):
        return method
    raise TypeError(f"method must be a registered method name (see `dcl list`) or a ClusteringMethod subclass, "
                    f"got {method!r}")


class DeepClusterer(ClusterMixin, TransformerMixin, ClassNamePrefixFeaturesOutMixin, BaseEstimator):
    """scikit-learn estimator running a dcl method (DEC, IDEC, DEKM, AE-CM, ...) through Lightning.

    Args:
        method: a registered method name, case, "_" and "-" aside (``dcl list``), or a ``ClusteringMethod``
            subclass (your own).
        n_clusters: number of clusters; not used by the methods that find K themselves (DPGMM: its ``k_init`` and
            ``max_components`` in ``method_args`` set where K starts and its maximum); ``n_clusters_`` holds the
            K found.
        method_args: the method's own arguments (``latent_dim``, ``pretrain_epochs``, ``update_interval``,
            ...), exactly the ``model.init_args`` of a config. Optimizers are callables
            ``params -> Optimizer``, e.g. ``functools.partial(torch.optim.Adam, lr=1e-3)``.
        max_epochs: training epochs in all (pretraining included); None: Lightning's default of 1000.
            Methods with a convergence criterion (DEC's ``tol``, ``maxiter``) stop earlier.
        batch_size: training batch size.
        random_state: an int for reproducible fits, None for a fresh seed, or a ``RandomState``.
        accelerator: Lightning accelerator ("auto", "cpu", "gpu", ...).
        devices: Lightning devices (one process: leave 1; multi-GPU runs belong to the ``dcl`` CLI).
        enable_progress_bar: show Lightning's progress bar.
        verbose: let Lightning print its info lines.
        trainer_args: other ``lightning.Trainer`` arguments (``precision``, ``callbacks``, ``logger``, ...).

    Attributes:
        labels_: cluster of each training sample (int64).
        cluster_centers_: (n_clusters_, embedding_dim) centers in the embedding space.
        n_clusters_: number of clusters after training.
        model_: the trained LightningModule (on the CPU).
        n_features_in_: number of features (channels for image input) seen by ``fit``.
    """

    def __init__(self, method="dec", n_clusters: int = 8, *, method_args: dict | None = None,
                 max_epochs: int | None = None, batch_size: int = 256, random_state=None,
                 accelerator: str = "auto", devices: int | str = 1, enable_progress_bar: bool = False,
                 verbose: bool = False, trainer_args: dict | None = None) -> None:
        self.method = method
        self.n_clusters = n_clusters
        self.method_args = method_args
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.random_state = random_state
        self.accelerator = accelerator
        self.devices = devices
        self.enable_progress_bar = enable_progress_bar
        self.verbose = verbose
        self.trainer_args = trainer_args

    # -- scikit-learn plumbing ---------------------------------------------------------------------------
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True  # images (N, C, H, W) are accepted too
        tags.transformer_tags.preserves_dtype = ["float32"]  # the networks compute in float32
        return tags

    def _validate(self, X, reset: bool) -> np.ndarray:
        X = validate_data(self, X, reset=reset, dtype=[np.float32, np.float64], allow_nd=True,
                          ensure_min_samples=2 if reset else 1)
        largest = max(float(X.max(initial=0.0)), -float(X.min(initial=0.0)))  # without an |X| copy of the data
        if largest > np.finfo(np.float32).max:  # finite in float64, inf once cast to the networks' float32
            raise ValueError(f"X holds values up to {largest:.3g}, beyond float32's range (3.4e38) in which the "
                             "networks compute; scale the data (e.g. StandardScaler) first")
        if reset:
            self.input_shape_ = tuple(X.shape[1:])
        elif tuple(X.shape[1:]) != self.input_shape_:
            raise ValueError(f"X has samples of shape {tuple(X.shape[1:])}, but {type(self).__name__} was fitted "
                             f"on samples of shape {self.input_shape_}")
        return X

    def _seed(self) -> int:
        if isinstance(self.random_state, (int, np.integer)) and not isinstance(self.random_state, bool):
            return int(self.random_state)
        return int(check_random_state(self.random_state).randint(0, 2**31 - 1))

    # -- fit ---------------------------------------------------------------------------------------------
    def fit(self, X, y=None):
        """Train the method on ``X`` (``y`` is ignored: clustering is unsupervised)."""
        import lightning.pytorch as pl

        X = self._validate(X, reset=True)
        n = len(X)
        if not isinstance(self.n_clusters, (int, np.integer)) or self.n_clusters < 2:
            raise ValueError(f"n_clusters must be an integer >= 2, got {self.n_clusters!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_epochs == 0:
            raise ValueError("max_epochs=0 trains nothing: every sample would land in one cluster; pass "
                             "max_epochs >= 1 (None: Lightning's default of 1000)")
        cls = _method_class(self.method)
        if n < self.n_clusters and not cls.n_clusters_from:
            raise ValueError(f"n_samples={n} should be >= n_clusters={self.n_clusters}")
        self._check_method_args(cls)
        seed = self._seed()
        with _quiet_lightning(not self.verbose):
            pl.seed_everything(seed, verbose=False)
            data = InMemory(torch.tensor(X, dtype=torch.float32), batch_size=self.batch_size,
                            n_clusters=None if cls.n_clusters_from else int(self.n_clusters), seed=seed)
            data.setup("fit")
            model = cls(n_clusters=int(self.n_clusters), input_shape=data.input_shape,
                        **dict(self.method_args or {}))
            trainer_kwargs: dict[str, Any] = dict(
                max_epochs=self.max_epochs, accelerator=self.accelerator, devices=self.devices,
                logger=False, enable_checkpointing=False, enable_model_summary=False,
                enable_progress_bar=self.enable_progress_bar, limit_val_batches=0, num_sanity_val_steps=0)
            trainer_kwargs.update(self.trainer_args or {})
            trainer = pl.Trainer(**trainer_kwargs)
            if trainer.world_size > 1:  # Lightning would start the other processes by running the user's script again
                raise ValueError(f"DeepClusterer trains in this one process, but the trainer asks for "
                                 f"{trainer.world_size} (devices / num_nodes); pass devices=1, and for several GPUs "
                                 "run the dcl command: dcl fit --config ... --trainer.devices N")
            check_trainer_settings(model, trainer)
            trainer.fit(model, datamodule=data)
        model.trainer = None  # drop the trainer (and the data it holds) so the estimator pickles
        self.model_ = model.cpu().eval()
        self.n_clusters_ = int(model.n_clusters)
        self.cluster_centers_ = model.cluster_centers.detach().cpu().numpy().copy()
        self._n_features_out = int(model.embedding_dim)
        self.labels_ = self._infer(X, want="labels")
        warning = one_cluster_warning(len(np.unique(self.labels_)), self.n_clusters_)  # as dcl fit says it
        if warning:
            warnings.warn(warning, stacklevel=2)
        return self

    def _check_method_args(self, cls: type) -> None:
        """The method's own settings only: the estimator sets n_clusters and the input shape (from X) itself."""
        from dcl.registry import unknown_setting

        args = dict(self.method_args or {})
        if "n_clusters" in args:
            raise ValueError(f"method_args sets n_clusters={args['n_clusters']!r}: pass it as "
                             f"DeepClusterer(n_clusters=...) instead")
        if "input_shape" in args:
            raise ValueError("method_args sets input_shape: it is taken from X; leave it out")
        params = inspect.signature(cls.__init__).parameters
        takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
        unknown = [] if takes_any else [name for name in args if name not in params]
        if unknown:
            raise ValueError(f"method_args: {unknown_setting(cls, unknown[0], hidden=cls.data_settings)}")

    # -- inference ---------------------------------------------------------------------------------------
    def _device(self) -> torch.device:
        if self.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")

    @torch.no_grad()
    def _infer(self, X: np.ndarray, want: str) -> np.ndarray:
        model, device = self.model_, self._device()
        batch_size = EVAL_BATCH_FACTOR * self.batch_size  # as the datamodules' ordered passes
        model.to(device)
        parts = []
        try:
            for start in range(0, len(X), batch_size):
                x = torch.tensor(X[start:start + batch_size], dtype=torch.float32, device=device)
                z = model.embed(x).float()
                parts.append(model.predict_clusters(z) if want == "labels" else z)
        finally:
            model.cpu()
        out = torch.cat(parts).cpu().numpy()
        return out.astype(np.int64) if want == "labels" else out.astype(np.float32, copy=False)

    def predict(self, X) -> np.ndarray:
        """Cluster of each sample of ``X`` under the trained network and clusters."""
        check_is_fitted(self)
        return self._infer(self._validate(X, reset=False), want="labels")

    def transform(self, X) -> np.ndarray:
        """The embedding z of each sample of ``X`` (n_samples, embedding_dim), float32."""
        check_is_fitted(self)
        return self._infer(self._validate(X, reset=False), want="embedding")
