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
  same labels on CPU. ``None`` draws a fresh seed for each fit from numpy's global RNG (one draw, as scikit-learn's
  estimators); the caller's global RNG states are otherwise restored after ``fit``, ``predict`` and ``transform``
  (CUDA's when CUDA was initialized before).
- The trainer runs without logger, checkpoints (unless ``trainer_args`` holds a ``ModelCheckpoint``), validation
  loop or model summary; pass anything else the ``Trainer`` accepts (``precision``, ``callbacks``, ``logger``,
  ...) in ``trainer_args``.
- A refit that is refused or fails (a bad setting, training that diverges) leaves the previous fit as it was.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import warnings
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from dcl.datamodule import EVAL_BATCH_FACTOR, ClusteringDataModule, class_ids
from dcl.method import check_trainer_settings, one_cluster_warning

__all__ = ["DeepClusterer", "InMemory"]


class InMemory(ClusteringDataModule):
    """A datamodule over arrays already in memory (numpy or torch): what :class:`DeepClusterer` trains on,
    and the shortest way to hand your own tensors to a ``Trainer`` from Python.

    ``batch_size``, ``n_clusters``, ``eval_batch_size``, ``seed`` and ``on_device`` are ``ClusteringDataModule``'s.

    Args:
        x: samples, (N, d) features or (N, C, H, W) images; cast to float32.
        y: optional labels (N,): class ids (-1 where unknown) or class names; used for the scores only.
    """

    def __init__(self, x, y=None, batch_size: int = 256, n_clusters: int | None = None,
                 eval_batch_size: int | None = None, seed: int | None = None, on_device: bool = False) -> None:
        super().__init__(batch_size, n_clusters, eval_batch_size, seed, on_device)
        self._source = (x, y)

    def load(self):
        x, y = self._source
        x = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x).float()
        if y is not None:  # names or ids -> 0..C-1 (a float that is not whole is refused, not truncated)
            y, self._class_names = class_ids(np.asarray(y.cpu() if torch.is_tensor(y) else y).reshape(-1),
                                             "InMemory: the labels y")
            y = torch.from_numpy(y)
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


@contextlib.contextmanager
def _keep_global_rng():
    """Restore the caller's python, numpy and torch RNGs (and Lightning's seed variables) afterwards: a
    scikit-learn estimator should not reseed its caller."""
    state = random.getstate(), np.random.get_state()
    env = {name: os.environ.get(name) for name in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS")}
    cuda = range(torch.cuda.device_count()) if torch.cuda.is_initialized() else []
    try:
        with torch.random.fork_rng(devices=cuda):
            yield
    finally:
        random.setstate(state[0])
        np.random.set_state(state[1])
        for name, value in env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _finite(model) -> bool:
    return all(torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point())


DIVERGED = ("training diverged: the embeddings (or the network's weights) are not finite (NaN or inf); scale or "
            "standardize the data (e.g. StandardScaler) or lower the learning rate (the optimizer and "
            "pretrain_optimizer in method_args)")


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
        n_clusters: number of clusters, an integer >= 2; not used by the methods that find K themselves (DPGMM:
            its ``k_init`` and ``max_components`` in ``method_args`` set where K starts and its maximum; any value,
            1 or None included); ``n_clusters_`` holds the K found.
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
        verbose: let Lightning and the method print their info lines (DEC's stop line).
        trainer_args: other ``lightning.Trainer`` arguments (``precision``, ``callbacks``, ``logger``, ...); a
            ``ModelCheckpoint`` among the callbacks turns ``enable_checkpointing`` on unless it is set here.

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
        fitted = getattr(self, "input_shape_", ())
        if not reset and len(fitted) > 1 and tuple(np.shape(X)[1:]) != fitted:  # images: before scikit-learn's
            self._wrong_shape(np.shape(X)[1:])  # check, which counts their channels as the features
        X = validate_data(self, X, reset=reset, dtype=[np.float32, np.float64], allow_nd=True,
                          ensure_min_samples=2 if reset else 1)
        largest = max(float(X.max(initial=0.0)), -float(X.min(initial=0.0)))  # without an |X| copy of the data
        if largest > np.finfo(np.float32).max:  # finite in float64, inf once cast to the networks' float32
            raise ValueError(f"X holds values up to {largest:.3g}, beyond float32's range (3.4e38) in which the "
                             "networks compute; scale the data (e.g. StandardScaler) first")
        if reset:
            self.input_shape_ = tuple(X.shape[1:])
        elif tuple(X.shape[1:]) != self.input_shape_:
            self._wrong_shape(X.shape[1:])
        return X

    def _wrong_shape(self, shape) -> None:
        raise ValueError(f"X has samples of shape {tuple(shape)}, but {type(self).__name__} was fitted on samples of "
                         f"shape {self.input_shape_}")

    def _seed(self) -> int:
        if _is_int(self.random_state):
            return int(self.random_state)
        return int(check_random_state(self.random_state).randint(0, 2**31 - 1))

    # -- fit ---------------------------------------------------------------------------------------------
    def fit(self, X, y=None):
        """Train the method on ``X`` (``y`` is ignored: clustering is unsupervised)."""
        before = dict(vars(self))
        # drawn before the caller's RNG is put back: with random_state None each fit draws another seed from numpy's
        # global RNG, as scikit-learn's estimators do (drawn inside, every fit drew the same one: found by an audit)
        seed = self._seed()
        try:
            with _keep_global_rng():
                return self._fit(X, seed)
        except BaseException:
            # validate_data has already replaced n_features_in_: put the previous fit back whole
            vars(self).clear()
            vars(self).update(before)
            raise

    def _check_params(self, cls: type) -> None:
        """Before any work: else a wrong type fails deep inside Lightning (batch_size=1.5: a TypeError)."""
        if not cls.n_clusters_from and not (_is_int(self.n_clusters) and self.n_clusters >= 2):
            raise ValueError(f"n_clusters must be an integer >= 2, got {self.n_clusters!r}")
        if not (_is_int(self.batch_size) and self.batch_size >= 1):
            raise ValueError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        if self.max_epochs is not None and not _is_int(self.max_epochs):
            raise ValueError(f"max_epochs must be an integer or None, got {self.max_epochs!r}")
        if self.max_epochs == 0:
            raise ValueError("max_epochs=0 trains nothing: every sample would land in one cluster; pass "
                             "max_epochs >= 1 (None: Lightning's default of 1000)")
        for setting in ("max_epochs", "max_steps"):  # the same limits given to the Trainer itself
            if (self.trainer_args or {}).get(setting) == 0:
                raise ValueError(f"trainer_args {setting}=0 trains nothing: every sample would land in one cluster; "
                                 f"set it >= 1, or leave it out")
        self._check_method_args(cls)

    def _trainer_kwargs(self) -> dict[str, Any]:
        from lightning.pytorch.callbacks import ModelCheckpoint

        args = dict(self.trainer_args or {})
        callbacks = args.get("callbacks") or []
        callbacks = callbacks if isinstance(callbacks, (list, tuple)) else [callbacks]
        kwargs: dict[str, Any] = dict(
            max_epochs=self.max_epochs, accelerator=self.accelerator, devices=self.devices, logger=False,
            # Lightning refuses a ModelCheckpoint callback with checkpointing off
            enable_checkpointing=any(isinstance(cb, ModelCheckpoint) for cb in callbacks),
            enable_model_summary=False, enable_progress_bar=self.enable_progress_bar, limit_val_batches=0,
            num_sanity_val_steps=0)
        kwargs.update(args)
        return kwargs

    def _fit(self, X, seed: int):
        import lightning.pytorch as pl

        X = self._validate(X, reset=True)  # first: scikit-learn's checks expect its errors about X before others
        cls = _method_class(self.method)
        self._check_params(cls)
        if cls.n_clusters_from:  # the method finds K itself: n_clusters is at most a hint
            n_clusters = int(self.n_clusters) if _is_int(self.n_clusters) else None
        else:
            n_clusters = int(self.n_clusters)
            if len(X) < n_clusters:
                raise ValueError(f"n_samples={len(X)} should be >= n_clusters={n_clusters}")
        with _quiet_lightning(not self.verbose):
            pl.seed_everything(seed, verbose=False)
            # float32 samples are served as they are: a copy (torch.tensor) held the data set twice for the whole fit
            # (1,000,000 x 50: 200 MB more). A read-only array (np.load(..., mmap_mode="r")) is copied: torch
            # cannot share it without warning that writes to the tensor would be undefined
            share = X.dtype == np.float32 and X.flags.writeable
            x = torch.from_numpy(X) if share else torch.tensor(X, dtype=torch.float32)
            data = InMemory(x, batch_size=self.batch_size,
                            n_clusters=None if cls.n_clusters_from else n_clusters, seed=seed)
            data.setup("fit")
            model = cls(n_clusters=n_clusters, input_shape=data.input_shape, **dict(self.method_args or {}))
            trainer = pl.Trainer(**self._trainer_kwargs())
            if trainer.world_size > 1:  # Lightning would start the other processes by running the user's script again
                raise ValueError(f"DeepClusterer trains in this one process, but the trainer asks for "
                                 f"{trainer.world_size} (devices / num_nodes); pass devices=1, and for several GPUs "
                                 "run the dcl command: dcl fit --config ... --trainer.devices N")
            check_trainer_settings(model, trainer)
            try:
                trainer.fit(model, datamodule=data)
            except Exception as error:
                if not _finite(model):  # a NaN met mid-fit (k-means, eigh, ...) fails with that step's error
                    raise ValueError(DIVERGED) from error
                raise
        model.trainer = None  # drop the trainer (and the data it holds) so the estimator pickles
        model.cpu().eval()
        centers = model.cluster_centers.detach().cpu().numpy().copy()
        # the fit's batch size serves predict / transform: a later set_params whose refit is refused leaves this fit
        # usable (the results do not depend on it: an eval-mode network embeds each sample alone)
        self._eval_batch_size = EVAL_BATCH_FACTOR * self.batch_size  # as the datamodules' ordered passes
        z, labels = self._infer(model, X, self._eval_batch_size)
        if not (np.isfinite(z).all() and np.isfinite(centers).all()):
            raise ValueError(DIVERGED)
        self.model_ = model
        self.n_clusters_ = int(model.n_clusters)
        self.cluster_centers_ = centers
        self._n_features_out = z.shape[1]  # the embedding's own width: DCFAE's dense net maps latent_dim to another
        self.labels_ = labels
        warning = one_cluster_warning(len(np.unique(labels)), self.n_clusters_)  # as dcl fit says it
        if warning:
            warnings.warn(warning, stacklevel=3)
        return self

    def _check_method_args(self, cls: type) -> None:
        """The method's own settings only: the estimator sets n_clusters and the input shape (from X) itself."""
        from dcl.registry import settings, unknown_setting

        args = dict(self.method_args or {})
        if "n_clusters" in args:
            raise ValueError(f"method_args sets n_clusters={args['n_clusters']!r}: pass it as "
                             f"DeepClusterer(n_clusters=...) instead")
        if "input_shape" in args:
            raise ValueError("method_args sets input_shape: it is taken from X; leave it out")
        known = settings(cls)  # a subclass's **kwargs followed into its parent's settings
        unknown = [name for name in args if name not in known]
        if unknown:
            raise ValueError(f"method_args: {unknown_setting(cls, unknown[0], hidden=cls.data_settings)}")

    # -- inference ---------------------------------------------------------------------------------------
    def _device(self) -> torch.device:
        """Where labels_, predict and transform embed: the fit's accelerator (trainer_args' overrides the argument)."""
        accelerator = (self.trainer_args or {}).get("accelerator", self.accelerator)
        if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")

    @torch.no_grad()
    def _infer(self, model, X: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """The embedding (float32) and cluster (int64) of each sample of ``X``."""
        device = self._device()
        model.to(device)
        zs, labels = [], []
        try:
            with _keep_global_rng():
                for start in range(0, len(X), batch_size):
                    x = torch.tensor(X[start:start + batch_size], dtype=torch.float32, device=device)
                    z = model.embed(x).float()
                    zs.append(z.cpu())
                    labels.append(model.predict_clusters(z).cpu())
        finally:
            model.cpu()
        return torch.cat(zs).numpy(), torch.cat(labels).numpy().astype(np.int64)

    def predict(self, X) -> np.ndarray:
        """Cluster of each sample of ``X`` under the trained network and clusters."""
        check_is_fitted(self)
        return self._infer(self.model_, self._validate(X, reset=False), self._eval_batch_size)[1]

    def transform(self, X) -> np.ndarray:
        """The embedding z of each sample of ``X`` (n_samples, embedding_dim), float32."""
        check_is_fitted(self)
        return self._infer(self.model_, self._validate(X, reset=False), self._eval_batch_size)[0]
