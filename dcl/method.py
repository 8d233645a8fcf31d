"""The contract every deep clustering method keeps, and the autoencoder-based base most methods share.

A method is a LightningModule with:

- ``embed(x) -> z`` and ``assign(z) -> (N, K)`` soft assignments (rows sum to 1);
- ``cluster_centers``: a buffer (or parameter) of shape (K, d), checkpointed and moved with the module; K may
  change during training (``n_clusters`` is derived from it, and checkpoints of any K load);
- ``update_clusters(z_all, first)``: what a periodic clustering callback hands the embeddings of all samples to;
- ``configure_callbacks()``: the callbacks the method cannot work without, so a config cannot forget them;
- validation / test: embed all samples in order, score ``val/acc``, ``val/nmi``, ``val/ari`` against labels;
- ``predict_step``: ``{"index", "cluster", "confidence", "probs", "z", "y"}`` per batch;
- ``configure_optimizers``: builds through ``dcl.optim.make_optimizer`` (the config's optimizer or the method's
  default, with PyTorch's fused kernel where it has one);
- ``train/loss`` at every training step, the one value on the progress bar: the loss the step minimizes. Under
  automatic optimization the base class logs what ``training_step`` returns (any subclass's, see
  :meth:`ClusteringMethod.__init_subclass__`); under manual optimization the method calls
  :meth:`ClusteringMethod.log_train_loss`. The terms of a loss are logged under their own names, off the bar.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import math
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from dcl import registry
from dcl.cluster import kmeans
from dcl.datamodule import ClusteringDataModule, epoch_batches
from dcl.distributed import (all_reduce_sum_, broadcast_, broadcast_norm_statistics_, end_spawned_process_group,
                             gather_ordered, is_distributed)
from dcl.files import not_a_file
from dcl.metrics import clustering_scores, embedding_silhouette
from dcl.nets import build_autoencoder
from dcl.nets.autoencoders import init_layers_
from dcl.optim import OptimizerFactory, check_optimizer, make_optimizer


_RESTORING = contextvars.ContextVar("dcl_restoring", default=False)


@contextmanager
def weights_from_checkpoint() -> Iterator[None]:
    """Methods built inside it are about to receive a trained checkpoint's weights: they do not load their
    ``pretrained`` weights, which the checkpoint holds (and whose file may have moved or gone since)."""
    token = _RESTORING.set(True)
    try:
        yield
    finally:
        _RESTORING.reset(token)


def optimizer_settings(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """An optimizer's class and the settings it was built with (its ``defaults``, which schedulers, momentum
    burn-ins and restored states leave alone)."""
    plain = (bool, int, float, str, tuple, type(None))
    return {"class": type(optimizer).__qualname__,
            **{k: v for k, v in optimizer.defaults.items() if isinstance(v, plain)}}


def one_cluster_warning(k_used: int, k: int, classes: int = 0) -> str | None:
    """The warning for a clustering that put every sample in one cluster of ``k`` (or found K = 1 on data of
    several ``classes``); None for any other."""
    if k_used != 1 or (k <= 1 and classes <= 1):
        return None
    of = f" of the {k}" if k > 1 else f", though the data has {classes} classes"
    return (f"every sample ended in one cluster{of}: the method has not separated the data (too few epochs for it, "
            "or a collapse); train longer or check its settings")


def loads_pretrained() -> bool:
    """Whether a method built now loads its ``pretrained`` weights (not when built to restore a checkpoint)."""
    return not _RESTORING.get()


class TrainingDiverged(ValueError):
    """The network's outputs became NaN or inf during training."""


class ConfigError(ValueError):
    """A bad setting or checkpoint, reported before any training starts."""


#: how a method refuses its n_clusters (the ``dcl`` command says where a value it did not give came from)
N_CLUSTERS_REFUSED = "n_clusters must be an integer >= 2, got "


#: the name every method logs the loss its training step minimizes under (:meth:`ClusteringMethod.log_train_loss`)
TRAIN_LOSS = "train/loss"


def logs_train_loss(training_step: Callable) -> Callable:
    """``training_step`` that logs the loss it returns as ``train/loss`` (automatic optimization; a Tensor, or the
    ``"loss"`` of a dict), unless the step logged ``train/loss`` itself. Only the outermost call logs: a subclass's
    ``training_step`` that calls its parent's logs its own result. Logged inside the step, as ``self.log`` there is:
    the callbacks' ``on_train_batch_end`` (a ModelCheckpoint every N steps) read this batch's value, and it is the
    returned loss itself (the ``outputs`` of ``on_train_batch_end`` hold it divided by ``accumulate_grad_batches``)."""
    if getattr(training_step, "logs_train_loss", False):
        return training_step

    @functools.wraps(training_step)
    def step(self: "ClusteringMethod", *args: Any, **kwargs: Any) -> Any:
        if self._in_training_step:  # a parent's training_step, called by the subclass's
            return training_step(self, *args, **kwargs)
        self._in_training_step, self._train_loss_logged = True, False
        try:
            out = training_step(self, *args, **kwargs)
        finally:
            self._in_training_step = False
        if self.automatic_optimization and not self._train_loss_logged:
            loss = out.get("loss") if isinstance(out, Mapping) else out
            if isinstance(loss, Tensor):
                self.log_train_loss(loss)
        return out

    step.logs_train_loss = True  # type: ignore[attr-defined]
    return step


def student_t_assign(z: Tensor, centers: Tensor, alpha: float = 1.0) -> Tensor:
    """Soft assignment by a Student's t kernel (DEC's q): q_ij ∝ (1 + ||z_i - mu_j||^2 / alpha)^(-(alpha+1)/2)."""
    d2 = torch.cdist(z, centers).pow(2)
    q = (1.0 + d2 / alpha).pow(-(alpha + 1.0) / 2.0)
    return q / q.sum(dim=1, keepdim=True)


class ClusteringMethod(pl.LightningModule):
    """Base of every method. Subclasses implement :meth:`embed` and a ``training_step`` (those of
    :class:`AutoencoderMethod` implement ``cluster_step``, and ``pretrain_step`` when not the autoencoder's).

    Args:
        n_clusters: number of clusters K (linked from the datamodule by the CLI); not used by the methods that
            find K themselves (``n_clusters_from``).
        input_shape: shape of one sample (linked from the datamodule by the CLI).
        embedding_dim: size of the embedding z and of each cluster center.
        kmeans_n_init: k-means restarts wherever this method runs k-means.
        trainable_centers: the centers are a parameter the optimizer trains (DEC's cluster layer), not a buffer.
    """

    #: buffers (or trainable centers) whose shape follows K or the number of samples: a checkpoint's shapes are
    #: taken on load
    resizable_buffers: tuple[str, ...] = ("cluster_centers",)
    #: constructor arguments the data fills in (the CLI links them from the datamodule, the estimator from X)
    data_settings: tuple[str, ...] = ("n_clusters", "input_shape")
    #: the settings a method that finds K itself starts from and bounds K by, in place of n_clusters (DPGMM:
    #: k_init, max_components); empty for the methods that cluster into n_clusters
    n_clusters_from: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Every subclass's ``training_step`` (its own, or one it inherits from a mixin) logs the loss it returns as
        ``train/loss`` (:func:`logs_train_loss`): a method, a user's subclass or a plugin gets it without writing
        anything, whichever hooks it overrides."""
        super().__init_subclass__(**kwargs)
        if cls.training_step is not pl.LightningModule.training_step:
            cls.training_step = logs_train_loss(cls.training_step)

    def __init__(self, n_clusters: int, input_shape: Sequence[int], embedding_dim: int,
                 kmeans_n_init: int = 10, trainable_centers: bool = False) -> None:
        super().__init__()
        self._in_training_step = False  # see logs_train_loss
        self._train_loss_logged = False
        self._kept_off_the_bar: set[str] = set()  # see log
        if not isinstance(n_clusters, int) or n_clusters < 2:
            raise ConfigError(f"{N_CLUSTERS_REFUSED}{n_clusters!r}")
        if not isinstance(embedding_dim, int) or embedding_dim < 1:
            raise ConfigError(f"the embedding size (latent_dim) must be an integer >= 1, got {embedding_dim!r}")
        if not isinstance(kmeans_n_init, int) or kmeans_n_init < 1:  # else it fails at the first k-means, mid-fit
            raise ConfigError(f"kmeans_n_init must be an integer >= 1, got {kmeans_n_init!r}")
        self.input_shape = tuple(int(s) for s in input_shape)
        self.embedding_dim = embedding_dim
        self.kmeans_n_init = kmeans_n_init
        centers = torch.zeros(n_clusters, embedding_dim)
        if trainable_centers:
            self.cluster_centers = nn.Parameter(centers)
        else:
            self.register_buffer("cluster_centers", centers)
        self._val_parts: list[tuple[Tensor, Tensor]] = []
        self._kmeans_calls = 0
        self._kmeans_by_step = False  # see refresh_clusters_by_step
        self._refreshed_step = -1  # the step of the last refresh_clusters (the final clusters: once per step)
        self._training_state: dict[str, Any] | None = None  # see keep_training_state
        self._saved_optimizers: list[dict[str, Any]] | None = None  # a restored checkpoint's optimizer_settings
        self._from_datamodule = True  # this run's loaders are the datamodule's (see setup)
        self._final_embedding: Tensor | None = None  # see final_embedding
        self._checkpoint_progress = (0, 0)  # steps and epochs done in the checkpoint a fit resumes (on_fit_start)
        self._stopped = False  # see stop_fit
        self._checkpoint_clusters: tuple[int | None, int] = (None, 0)  # see clusters_older_than_weights
        self._pretrained_data: tuple[str, dict[str, dict]] = ("", {})  # see remember_pretrained_data

    # -- the contract -----------------------------------------------------------------------------------
    @property
    def n_clusters(self) -> int:
        return self.cluster_centers.shape[0]

    def log_train_loss(self, loss: Tensor | float) -> None:
        """Log ``loss`` as ``train/loss``, the one value on the progress bar (per step; under DDP each rank's value,
        rank 0's reaching the loggers, as every training-step value): the loss the step minimizes, the total
        objective. Automatic optimization logs the returned loss itself; a method with manual optimization calls this
        once a step with the objective of the model it clusters (e.g. the generator's loss of an adversarial phase,
        the embedding network's in its own phase; a discriminator's loss keeps a name of its own). A method's terms
        are logged under their own names, without ``prog_bar``: a finished phase's would stay on the bar."""
        self.log(TRAIN_LOSS, loss.detach() if isinstance(loss, Tensor) else float(loss), prog_bar=True)

    def log(self, name: str, value: Any, *args: Any, **kwargs: Any) -> None:
        """Lightning's, where a training step puts nothing but ``train/loss`` on the progress bar: a term of one phase
        stayed there, stale, for the rest of the fit; and since the base classes log their terms off the bar (e.g.
        ``train/recon`` of every pretraining), a subclass's ``prog_bar=True`` on the same name would make Lightning
        refuse the fit ("logged twice with different arguments"). Such a request is logged off the bar, with a
        warning, once per name."""
        if name == TRAIN_LOSS:  # a training_step that logs train/loss itself: not logged again by logs_train_loss
            self._train_loss_logged = True
        elif self._in_training_step and (args[0] if args else kwargs.get("prog_bar", False)):
            args, kwargs = args[1:], {**kwargs, "prog_bar": False}
            if name not in self._kept_off_the_bar:
                self._kept_off_the_bar.add(name)
                rank_zero_warn(f"{type(self).__name__} logs {name} with prog_bar=True in its training step: it is "
                               f"logged off the progress bar, which shows {TRAIN_LOSS}, the loss the step returns (a "
                               "term of one phase would stay on the bar after it); log it without prog_bar")
        super().log(name, value, *args, **kwargs)

    @property
    def clustering_active(self) -> bool:
        """Whether the clustering state is in use (False during a pretraining phase)."""
        return True

    def embed(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def assign(self, z: Tensor) -> Tensor:
        """Soft assignments (N, K); by default DEC's Student's t kernel around the centers."""
        return student_t_assign(z, self.cluster_centers)

    def predict_clusters(self, z: Tensor) -> Tensor:
        return self.assign(z).argmax(dim=1)

    def update_clusters(self, z: Tensor, first: bool) -> None:
        """Called by periodic clustering callbacks with the embeddings of all samples, in order (identical on
        every DDP rank). ``first`` is True at the first call of the clustering phase."""

    def refresh_clusters(self, z: Tensor) -> None:
        """Called before scoring and when a fit ends (see :meth:`refreshes_final_clusters`) with the embeddings of
        all samples; methods whose centers are not trained (e.g. k-means on a pretrained embedding) refresh them
        here."""

    def refreshes_final_clusters(self) -> bool:
        """Whether the clusters a fit ends with come from :meth:`refresh_clusters` on the final embedding (then
        refreshed when the fit ends, so that the checkpoint, predict and the final scores hold them however often
        validation ran), rather than being trained. By default: whether this class defines ``refresh_clusters``."""
        return type(self).refresh_clusters is not ClusteringMethod.refresh_clusters

    def set_cluster_centers(self, centers: Tensor) -> None:
        """Replace the centers (K may change); rank 0's value wins under DDP."""
        centers = broadcast_(centers.detach().to(self.cluster_centers).contiguous())
        if centers.shape == self.cluster_centers.shape:
            self.cluster_centers.data.copy_(centers)
        elif isinstance(self.cluster_centers, nn.Parameter):
            raise ConfigError("trainable cluster centers cannot change their number during training")
        else:
            self.cluster_centers = centers.clone()

    def run_kmeans(self, z: Tensor, n_clusters: int | None = None, init: Tensor | None = None,
                   n_init: int | None = None, max_iter: int = 300):
        """k-means on the gathered embeddings, seeded from the global seed and a call counter so that every
        rank computes the same result (and resumed runs the same as uninterrupted ones); within
        ``refresh_clusters_by_step``, from the global seed and the step."""
        if self._kmeans_by_step:
            seed = (torch.initial_seed() + 15485863 + 104729 * self.global_step) % (2**31)
        else:
            self._kmeans_calls += 1
            seed = (torch.initial_seed() + 7919 * self._kmeans_calls) % (2**31)
        result = kmeans(z.float(), n_clusters or self.n_clusters, n_init=n_init or self.kmeans_n_init,
                        max_iter=max_iter, init_centers=init, seed=seed, distributed=False)
        result.centers = broadcast_(result.centers.contiguous())
        return result

    def refresh_clusters_by_step(self, z: Tensor) -> None:
        """``refresh_clusters(z)``, which only reads the current embedding (the clusters a validation scores, AE +
        k-means, the final clusters), with its k-means seeded by the step: the call counter of the k-means that
        training goes on from is left alone, so that how often validation runs changes no result."""
        self._kmeans_by_step = True
        try:
            self.refresh_clusters(z)
        finally:
            self._kmeans_by_step = False
        self._refreshed_step = self.global_step if self._trainer is not None else -1
        self._checkpoint_clusters = (None, 0)  # the clusters are of the current weights now

    def refresh_final_clusters(self) -> bool:
        """The clusters of the final embedding, unless they were refreshed at this step already (a validation):
        the state training would go on from is kept first (:meth:`keep_training_state`). Returns whether it ran."""
        if self._refreshed_step == self.global_step:
            return False
        self.keep_training_state()
        self.refresh_clusters_by_step(self.embed_all())
        return True

    def keep_training_state(self) -> None:
        """Call before a clustering made only because training ends at this step (the result's final clusters,
        which one longer run would not compute here). The state training goes on from (every buffer: centers,
        targets, rotation, ...; the k-means call count) is kept and saved with the checkpoint; a fit resumed from
        it restores that state, so it continues exactly as one longer run, while predict, validate and test use the
        final clusters."""
        if self._training_state is None or self._training_state["step"] != self.global_step:
            self._training_state = {"step": self.global_step, "kmeans_calls": self._kmeans_calls,
                                    "buffers": {k: b.detach().clone() for k, b in self.named_buffers()}}

    def stop_fit(self) -> None:
        """End the fit for good at this step: the method's stopping rule was met (DEC's and DEKM's ``tol``). The
        epoch ends before its next batch (:meth:`on_train_batch_start`). Lightning does not checkpoint
        ``trainer.should_stop``; the method does, so that a fit resumed from a checkpoint saved after the stop, with
        any budget, trains no further, like the fit that stopped."""
        self.trainer.should_stop = True
        self._stopped = True

    def stopping_rule_met(self) -> bool:
        """Whether the method's stopping rule ended the training that a resumed fit restores (:meth:`stop_fit`)."""
        return self._stopped

    def on_fit_start(self) -> None:
        resumed = bool(self.trainer.ckpt_path)
        self._stopped = self._stopped and resumed  # (a module loaded from a checkpoint, then fitted anew)
        stopped = resumed and self.stopping_rule_met()
        if stopped:  # what the stopped fit left set (read by Lightning's fit loop)
            self.trainer.should_stop = True
        # a fit with nothing left to train (resumed from its end or its stop) skips the training loop, on_train_end
        # included: its final embedding is taken here, on the fit's device, before Lightning's teardown
        # (final_embedding)
        self._final_embedding = None
        if resumed and trains_nothing(self.trainer, *self._checkpoint_progress, stopped=stopped) and \
                self._reads_final_embedding():
            self._final_embedding = self.embed_all().cpu()

    def _reads_final_embedding(self) -> bool:
        return any(getattr(callback, "reads_final_embedding", False) for callback in self.trainer.callbacks)

    def on_train_start(self) -> None:
        self._final_embedding = None
        if self.trainer.ckpt_path:
            checkpoint_of_this_step_exists(self.trainer)
        saved, self._saved_optimizers = self._saved_optimizers, None  # (a module loaded, then fitted anew: no resume)
        if self.trainer.ckpt_path and saved is not None and len(saved) == len(self.trainer.optimizers):
            # Lightning restored each optimizer's state, its param groups' settings with it: a setting configured
            # otherwise for this run does not apply (and the run's config.yaml says it does)
            changed = [f"{key} {old[key]!r} (configured {new[key]!r})" for old, new in
                       zip(saved, map(optimizer_settings, self.trainer.optimizers)) for key in new
                       if key in old and old[key] != new[key]]
            if changed:
                rank_zero_warn(f"the checkpoint's optimizer settings are used, restored with its state: "
                               f"{'; '.join(changed)}; the configured ones apply to a new fit only")
        state, self._training_state = self._training_state, None
        if state is not None and state["step"] == self.global_step:  # a fit resumed from where another ended
            self._kmeans_calls = state["kmeans_calls"]
            for name, value in state["buffers"].items():
                owner, _, attr = name.rpartition(".")
                module = self.get_submodule(owner)
                setattr(module, attr, value.to(getattr(module, attr).device))  # its shape may differ (K, targets)
        self._run_epoch_hooks_the_resume_skips()

    def _run_epoch_hooks_the_resume_skips(self) -> None:
        """Lightning (2.6) resumes a checkpoint saved at the end of an epoch's last batch (``ModelCheckpoint``'s
        ``every_n_train_steps``, SLURM's) by counting that epoch done without its ``on_train_epoch_end`` hooks, and
        starts the next one without its ``on_train_epoch_start`` hooks: the phase switches, schedules and updates
        they hold were lost (DEC pretrained an epoch more, SAE trained a layer pair an epoch longer, DCFAE's
        schedulers missed a step; found by an audit). They run here, in Lightning's order, as in the uninterrupted
        fit. Not the monitoring callbacks' epoch end (checkpoints, early stopping): they decide from the epoch's
        logged metrics, which no checkpoint holds."""
        loop = self.trainer.fit_loop
        if not (loop.restarted_mid_epoch and loop.epoch_loop.restarted_on_train_batch_end
                and loop.epoch_loop.batch_progress.is_last_batch):
            return
        from lightning.pytorch.trainer import call  # Lightning's hook dispatch (profiling, self.log's hook name)

        trainer = self.trainer
        loop.epoch_progress.current.completed -= 1  # the ended epoch's hooks see its number, as they did
        try:
            call._call_callback_hooks(trainer, "on_train_epoch_end", monitoring_callbacks=False)
            call._call_lightning_module_hook(trainer, "on_train_epoch_end")
        finally:
            loop.epoch_progress.current.completed += 1
        if not trains_nothing(trainer, self.global_step, self.current_epoch, stopped=trainer.should_stop):
            call._call_callback_hooks(trainer, "on_train_epoch_start")
            call._call_lightning_module_hook(trainer, "on_train_epoch_start")

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> int | None:
        """End the epoch before this batch when the update just before it met a stopping rule (DEC's and DEKM's
        ``tol``): training ends with that update's state, as the reference codes break out of their loops, and no
        step runs without a loss, which Lightning refuses under DDP. (-1: Lightning's skip of the epoch's rest; not
        before the Trainer's min_epochs / min_steps, which Lightning trains on through a stop.)"""
        return -1 if stop_takes_effect(self.trainer) else None

    def on_before_optimizer_step(self, optimizer) -> None:
        """Under DDP, rank 0's normalization statistics on every rank after each step's forward passes (automatic
        or manual optimization alike), so that every rank embeds with one model."""
        broadcast_norm_statistics_(self)

    def noise_like(self, t: Tensor) -> Tensor:
        """N(0, I) noise for this rank's training samples (VAE sampling), the same that a single-process fit
        would draw: under DDP it is drawn for the whole global batch (every rank's RNG is seeded alike) and
        sliced in the training loader's interleaved order (rank r holds global positions r, r + W, ...)."""
        return self._draw_for_global_batch(t, torch.randn)

    def dropout(self, t: Tensor, p: float) -> Tensor:
        """Dropout (rate ``p``, in training only) with the masks a single-process fit would draw, as
        :meth:`noise_like` draws its noise: a DDP fit then trains as one process does."""
        if not self.training or p == 0:
            return t
        keep = self._draw_for_global_batch(t, torch.rand) >= p
        return t * keep / (1 - p)

    def _draw_for_global_batch(self, t: Tensor, draw) -> Tensor:
        world = self.trainer.world_size if self._trainer is not None else 1
        if world == 1:
            return draw(t.shape, device=t.device).to(t.dtype)
        full = draw((t.shape[0] * world, *t.shape[1:]), device=t.device)
        return full[self.trainer.global_rank::world].to(t.dtype)

    def configure_model(self) -> None:
        """Lightning's hook at the start of every run, before any step: a precision the methods cannot run in
        ends it here (the ``dcl`` command checks it before anything is written). ``load_from_checkpoint`` calls it
        too, with no Trainer."""
        if self._trainer is not None:
            check_precision(self.trainer.precision)
            warn_if_cpu_mixed_precision_is_slow(self.trainer)

    def setup(self, stage: str) -> None:
        """Refuse, before any step, data a method cannot train from (a plain DataLoader, other samples' shape)."""
        data = self.trainer.datamodule
        if stage == "fit" and not isinstance(data, ClusteringDataModule):
            raise ConfigError(
                f"{type(self).__name__} trains from a ClusteringDataModule, which also serves every sample in order "
                "to its k-means and periodic updates, got "
                f"{'dataloaders' if data is None else type(data).__name__}; pass your tensors as "
                "trainer.fit(model, datamodule=dcl.estimator.InMemory(x, y)), or a datamodule of `dcl list`")
        self._from_datamodule = self._uses_the_datamodule()
        if self._from_datamodule:
            self.check_data(data, stage)
        elif is_distributed():  # each process holds its sampler's shard of them, padded with repeated samples
            raise ConfigError(f"{type(self).__name__} was given dataloaders, not a datamodule, under DDP: each process "
                              "sees a padded shard of them, so its scores and predictions would cover part of the "
                              "samples, some twice; pass a datamodule such as dcl.estimator.InMemory(x, y), which "
                              "serves every sample once, or use one device")

    def check_data(self, data: ClusteringDataModule, stage: str) -> None:
        """Refuse data this method cannot run on (``stage``: Lightning's, e.g. "fit"), before any step. Called by
        :meth:`setup`, and by the ``dcl`` command before it starts the trainer, whose loggers write their files
        before any setup: a subclass's checks of the data belong here (calling ``super()``), not in ``setup``."""
        if tuple(data.input_shape) != self.input_shape:
            raise ConfigError(f"{type(self).__name__} was built for samples of shape {self.input_shape}, but "
                              f"{type(data).__name__}'s are {tuple(data.input_shape)}; build it with "
                              f"input_shape={list(data.input_shape)}")
        path, states = self._pretrained_data
        state = states.get(type(data).__qualname__)
        if stage == "fit" and state is not None:
            data.check_scaling(state, f"the pretrained autoencoder {path}")

    def check_fit(self, trainer: pl.Trainer, data: ClusteringDataModule) -> None:
        """Refuse a fit that these Trainer settings and data cannot do (e.g. too few batches per epoch for a step:
        :func:`planned_batches`). The ``dcl`` command calls it before it starts the trainer, whose loggers
        write their files at its start; a method that cannot train so checks again where Lightning knows (its
        ``on_train_start``: ``trainer.num_training_batches``)."""

    def remember_pretrained_data(self, ckpt: dict[str, Any], path: str | Path) -> None:
        """Keep the datamodule states saved in ``ckpt``, a checkpoint whose weights a method's ``pretrained``
        loaded: :meth:`check_data` then refuses data scaled otherwise (Arrays' ``standardize``), on which those
        weights would be fed samples unlike the ones they learned from."""
        # (a dcl datamodule's state holds its shuffle's seed, or Arrays' statistics in checkpoints before that)
        self._pretrained_data = (str(path), {k: v for k, v in ckpt.items()
                                             if isinstance(v, dict) and {"shuffle_seed", "mean"} & set(v)})

    def _uses_the_datamodule(self) -> bool:
        """Whether this run's loaders are a ClusteringDataModule's: Lightning keeps ``trainer.datamodule`` from an
        earlier run when validate / test / predict are given dataloaders (then scored as given, not all samples)."""
        data = self.trainer.datamodule
        source = getattr(self.trainer._data_connector, "_datahook_selector", None)
        return isinstance(data, ClusteringDataModule) and (source is None or source.datamodule is data)

    # -- embedding all samples --------------------------------------------------------------------------
    def eval_batches(self, loader) -> Iterator[Tensor]:
        """The samples of each batch of ``loader`` on this module's device, in eval mode and the trainer's
        precision while they are used (the training mode is restored at the end)."""
        was_training = self.training
        self.eval()
        try:
            with self.trainer.precision_plugin.forward_context():
                for batch in loader:
                    yield batch["x"].to(self.device, non_blocking=True)
        finally:
            self.train(was_training)

    @torch.no_grad()
    def embed_all(self, gather: bool = True) -> Tensor:
        """Embeddings of all samples of the datamodule, in order (``gather``) or this rank's shard."""
        dm = self.trainer.datamodule
        loader = dm.all_dataloader()
        z, start = None, 0
        for x in self.eval_batches(loader):
            out = self.embed(x).float()
            if z is None:  # one output buffer: a list of small outputs would pin the freed activations of
                z = out.new_empty((loader.num_rows, *out.shape[1:]))  # every batch in the heap (glibc)
            z[start:start + len(out)] = out
            start += len(out)
        if not gather:
            return z
        z = gather_ordered(z, dm.num_samples)
        if not torch.isfinite(z).all():  # (the same on every rank) else k-means fails next, blaming the data
            raise TrainingDiverged(
                f"training diverged: the embeddings of {int((~torch.isfinite(z)).any(1).sum())} of {len(z)} samples "
                f"are not finite (NaN or inf) at step {self.global_step}; standardize the data or lower the "
                "learning rate")
        return z

    def final_embedding(self) -> Tensor:
        """The embeddings of all samples in order (as :meth:`embed_all`), for what reads them when a fit has ended
        (``on_fit_end``: the final scores, the plots): those a fit computed once at its end, on its device and in its
        precision, when a callback of the fit declares ``reads_final_embedding``. By ``on_fit_end`` Lightning's
        teardown has moved the module to the CPU: each reader embedded every sample again there (a GPU fit's on the
        CPU, and under DDP with CPU tensors in the gather). Otherwise :meth:`embed_all` now."""
        z = self._final_embedding
        return z.to(self.device) if z is not None else self.embed_all()

    def final_scores(self) -> dict[str, float | int]:
        """Scores of the current clustering state (nothing refreshed) on all samples of the datamodule."""
        dm = self.trainer.datamodule
        z = self.final_embedding()
        pred = self.predict_clusters(z)
        scores: dict[str, float | int] = {"k": self.n_clusters, "k_used": int(pred.unique().numel())}
        y = dm.y.to(pred.device)
        if (y >= 0).any():
            scores.update(clustering_scores(pred, y))
        silhouette = embedding_silhouette(z, pred)
        if silhouette is not None:
            scores["silhouette"] = silhouette
        return scores

    # -- validation, test and prediction ----------------------------------------------------------------
    def _collect(self, batch: dict[str, Tensor]) -> None:
        if not self._from_datamodule:  # else scored from embed_all()
            if not (isinstance(batch, dict) and "x" in batch and "y" in batch):
                raise ConfigError(f"{type(self).__name__} scores batches of dicts {{'x': samples, 'y': labels}}, got "
                                  f"{type(batch).__name__}; pass a datamodule such as dcl.estimator.InMemory(x, y)")
            self._val_parts.append((self.embed(batch["x"]).float(), batch["y"]))

    def _score(self, prefix: str) -> None:
        if self.trainer.sanity_checking:  # the validation code ran on a few batches; scoring an untrained
            self._val_parts.clear()       # model on every sample (embedding + k-means) would only cost time
            return
        if not self._from_datamodule:  # a plain dataloader given to validate/test (one process: setup)
            if not self._val_parts:
                return
            z, y = (torch.cat(t) for t in zip(*self._val_parts))
            self._val_parts.clear()
        else:  # all samples of the datamodule, in order, on every rank
            z, y = self.embed_all(), self.trainer.datamodule.y.to(self.device)
        # validate / test of a trained model score its own clusters (those predict uses), not a new k-means run
        if self.trainer.state.fn == "fit" or not self.cluster_centers.any() or self.clusters_older_than_weights():
            self.refresh_clusters_by_step(z)
        pred = self.predict_clusters(z)
        metrics = {f"{prefix}/k": float(self.n_clusters), f"{prefix}/k_used": float(pred.unique().numel())}
        if (y >= 0).any():
            metrics.update({f"{prefix}/{k}": v for k, v in clustering_scores(pred, y).items()})
        else:  # no labels: the score without them (not on labeled data: it costs up to ~1 s a validation)
            silhouette = embedding_silhouette(z, pred)
            if silhouette is not None:
                metrics[f"{prefix}/silhouette"] = silhouette
        self.log_dict(metrics, sync_dist=True)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._collect(batch)

    def on_validation_epoch_end(self) -> None:
        self._score("val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._collect(batch)

    def on_test_epoch_end(self) -> None:
        self._score("test")

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        z = self.embed(batch["x"]).float()
        # the clusters in full precision, as the scores assign them (embed_all's embeddings, outside autocast): under
        # bf16-mixed, predict gave some samples other clusters than validate and the fit's final scores
        with torch.autocast(self.device.type, enabled=False):
            probs = self.assign(z)
            # the rule the scores use (DEKM: nearest center), not argmax of probs; the default rule is that argmax,
            # taken from probs rather than from a second assign (with 200 clusters a quarter of predict's time)
            default_rule = getattr(self.predict_clusters, "__func__", None) is ClusteringMethod.predict_clusters
            cluster = probs.argmax(dim=1) if default_rule else self.predict_clusters(z)
        confidence = probs.gather(1, cluster[:, None]).squeeze(1)
        return {"index": batch["index"], "cluster": cluster, "confidence": confidence, "probs": probs, "z": z,
                "y": batch["y"]}

    def on_train_epoch_end(self) -> None:
        # (also at a stop inside the epoch: max_steps, a time limit; before the epoch's checkpoint is saved)
        if fit_ends_after_this_epoch(self.trainer) and self.refreshes_final_clusters():
            self.refresh_final_clusters()
        self.log("train/k", float(self.n_clusters), sync_dist=True)

    def on_train_end(self) -> None:
        """After every callback's ``on_train_end``: a stop that the epoch's hooks could not see (EarlyStopping
        decides after them) still ends with the final clusters (a callback's ``finish_fit``, e.g. DEKM's final
        eigen update; :meth:`refresh_final_clusters`), and a ``save_last`` checkpoint holds the fit's end."""
        changed = [bool(callback.finish_fit(self.trainer, self))
                   for callback in self.trainer.callbacks if hasattr(callback, "finish_fit")]
        changed.append(self.refreshes_final_clusters() and self.refresh_final_clusters())
        save_last_checkpoints(self.trainer, changed=any(changed))
        # the fit's final embedding, once, before Lightning's teardown moves the module to the CPU (final_embedding)
        if self._reads_final_embedding():
            self._final_embedding = self.embed_all().cpu()

    def clusters_older_than_weights(self) -> bool:
        """Whether the loaded checkpoint's clusters were computed on an earlier embedding than its weights give: one
        saved between validations (``every_n_train_steps``, SLURM's) of a method whose clusters are k-means of its
        embedding (:meth:`refreshes_final_clusters`) holds the last validation's. Validate, test and predict take
        k-means of the checkpoint's embedding instead, as a validation at its step would have."""
        clusters_step, weights_step = self._checkpoint_clusters
        return clusters_step is not None and clusters_step != weights_step and self.refreshes_final_clusters()

    def on_predict_start(self) -> None:
        # an untrained model (no checkpoint): k-means on its code, as validate and test score it
        if (not self.cluster_centers.any() or self.clusters_older_than_weights()) and self._from_datamodule:
            if self.cluster_centers.any():
                rank_zero_warn(f"the checkpoint's clusters are of step {self._checkpoint_clusters[0]}'s embedding, its "
                               f"weights of step {self._checkpoint_clusters[1]} (it was saved between validations): "
                               "predict takes k-means of this data's embedding; a checkpoint saved at a validation "
                               "or at the fit's end holds its clusters")
            self.refresh_clusters_by_step(self.embed_all())

    def teardown(self, stage: str) -> None:
        # the last hook of a run on every rank (after the callbacks' teardown): a spawned worker ends its group
        self._final_embedding = None  # read in on_fit_end, before this
        if self._trainer is not None:
            end_spawned_process_group(self.trainer)

    # -- checkpoints ------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["dcl_method"] = type(self).__qualname__
        checkpoint["dcl_kmeans_calls"] = self._kmeans_calls
        checkpoint["dcl_stopped"] = self._stopped
        checkpoint["dcl_clusters_step"] = self._refreshed_step  # the step whose embedding the clusters are k-means of
        if self._training_state is not None and self._training_state["step"] == self.global_step:
            checkpoint["dcl_training_state"] = self._training_state
        # random draws after the checkpoint (VAE sampling, dropout) continue as in an uninterrupted run
        checkpoint["dcl_rng"] = {"torch": torch.get_rng_state(),
                                 "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None}
        if self._trainer is not None:  # what the optimizers were built with, for a resume's comparison
            checkpoint["dcl_optimizers"] = [optimizer_settings(o) for o in self.trainer.optimizers]

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, *args: Any, **kwargs: Any):  # type: ignore[override]
        """Lightning's, building the method without loading its ``pretrained`` weights (the checkpoint holds them),
        after dcl's checks of the file (a foreign or truncated file, another method's: one clear error). A class of
        your own loads the checkpoints of the method it subclasses, those of the dcl command too (which records the
        class it trained, and Lightning would build that one)."""
        if isinstance(checkpoint_path, (str, Path)):
            checkpoint = load_checkpoint_file(checkpoint_path)
            check_checkpoint_method(checkpoint, cls)
            saved = checkpoint.get("hyper_parameters", {})
            if "_class_path" in saved:
                kwargs.setdefault("_class_path", f"{cls.__module__}.{cls.__qualname__}")
            if kwargs.get("n_clusters") not in (None, saved.get("n_clusters")) and saved.get("n_clusters"):
                rank_zero_warn(f"the checkpoint's {saved['n_clusters']} clusters are used, not n_clusters "
                               f"{kwargs['n_clusters']} (another number of clusters needs a new fit)")
        with weights_from_checkpoint():
            return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_checkpoint_method(checkpoint, type(self))
        check_checkpoint_fits(checkpoint, self)
        self._kmeans_calls = checkpoint.get("dcl_kmeans_calls", 0)
        self._stopped = checkpoint.get("dcl_stopped", False)
        self._checkpoint_clusters = (checkpoint.get("dcl_clusters_step"), checkpoint.get("global_step", 0))
        self._training_state = checkpoint.get("dcl_training_state")
        # what the fit loop restores only after on_fit_start, which reads it (steps and epochs done)
        fit_loop = checkpoint.get("loops", {}).get("fit_loop", {})
        self._checkpoint_progress = (checkpoint.get("global_step", 0),
                                     fit_loop.get("epoch_progress", {}).get("current", {}).get("processed", 0))
        self._saved_optimizers = checkpoint.get("dcl_optimizers")
        rng = checkpoint.get("dcl_rng")
        if rng is not None and self._trainer is not None and self.trainer.state.fn == "fit":
            torch.set_rng_state(rng["torch"])
            if rng["cuda"] is not None and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(rng["cuda"])

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        # K (or the number of samples) may differ from this module's: take the saved shapes first. Both
        # checkpoint restores and ddp_spawn's hand-back of the trained weights come through here.
        for name in self.resizable_buffers:
            path, _, attr = name.rpartition(".")
            owner = self.get_submodule(path) if path else self
            saved = state_dict.get(name)
            if saved is None:
                continue
            if attr in owner._buffers and saved.shape != owner._buffers[attr].shape:
                owner.register_buffer(attr, torch.empty_like(saved, device=self.device))
            elif attr in owner._parameters and saved.shape != owner._parameters[attr].shape:
                # trainable centers (DEC, IDEC): before any optimizer holds them (Lightning restores the weights
                # before configure_optimizers), e.g. a prediction on new data whose n_clusters differs
                old = owner._parameters[attr]
                owner.register_parameter(attr, nn.Parameter(torch.empty_like(saved, device=self.device),
                                                            requires_grad=old.requires_grad))
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


def check_precision(precision: str) -> None:
    """Refuse a Trainer precision the methods cannot train in, with what to use instead: "*-true" other than 32 keeps
    the weights in that dtype, while the clustering state (centers, k-means, soft assignments) is float32."""
    if precision.endswith("-true") and precision != "32-true":
        raise ConfigError(f"precision {precision!r} is not supported: the clustering state (centers, k-means, "
                          "assignments) is float32 and is not cast to the weights' dtype; use 32-true, bf16-mixed "
                          "or 16-mixed (mixed precision: float32 weights, low-precision compute)")


def planned_batches(trainer: pl.Trainer, data: ClusteringDataModule, stage: str = "train",
                    limited: bool = True) -> int:
    """The batches of an epoch of ``stage`` (``train``, ``val``, ``test`` or ``predict``) on each of ``trainer``'s
    processes, before it starts: the datamodule's loader of that stage over ``trainer.world_size`` shards
    (:func:`epoch_batches`: the training loader's padded to equal ones; ordered ones at most as large), cut by
    ``limit_<stage>_batches`` (where Lightning puts ``fast_dev_run``'s) as Lightning cuts it, unless not ``limited``."""
    batch_size = data.batch_size if stage == "train" else data.predict_dataloader().batch_size
    batches = epoch_batches(data.num_samples, trainer.world_size, batch_size)
    if not limited:
        return batches
    limit = getattr(trainer, f"limit_{stage}_batches")
    return min(batches, limit) if isinstance(limit, int) else int(batches * limit)


def check_scoring_batches(trainer: pl.Trainer, data: ClusteringDataModule, stage: str) -> None:
    """Refuse a share of the validation (``stage`` ``val``) or test batches that leaves none, which Lightning refuses
    only once the loop runs, after the loggers wrote their files (found by probing: ``limit_val_batches 0.1`` of 2
    batches). A clustering is scored on all its samples whatever the share, so 1.0 loses nothing."""
    limit = getattr(trainer, f"limit_{stage}_batches")
    if isinstance(limit, float) and limit > 0 and planned_batches(trainer, data, stage) == 0:
        what, batches = "validation" if stage == "val" else "test", planned_batches(trainer, data, stage, False)
        raise ConfigError(f"trainer.limit_{stage}_batches {limit} of the {batches} {what} batch(es) of a process "
                          f"leaves none; dcl scores the clustering of all samples whatever the share: set it to "
                          f"1.0 (or 0: no {what})")


def check_trainer_settings(model: pl.LightningModule, trainer: pl.Trainer) -> None:
    """Before a fit: refuse the Trainer settings Lightning cannot apply to a method that steps its optimizers itself
    (manual optimization: DCFAE's alternating sides), saying what to set instead: Lightning's own message tells the
    user to switch to automatic optimization, which a configured method cannot do. Also asks every callback with a
    ``check_trainer(trainer)`` (the Trainer's and the method's own) to refuse what it cannot train with. Validate,
    test and predict train nothing: not for them."""
    # Lightning takes these and fails once the loop runs (ZeroDivisionError), or trains nothing and reports the
    # untrained model as the fit's result (limit_train_batches 0), or ignores them (a negative clip): found by probing
    for setting in ("check_val_every_n_epoch", "accumulate_grad_batches"):
        value = getattr(trainer, setting)
        if value is not None and value < 1:
            raise ConfigError(f"trainer.{setting} {value} must be >= 1")
    if trainer.limit_train_batches == 0:
        raise ConfigError("trainer.limit_train_batches 0 trains nothing; set it to the batches (an int) or the share "
                          "of them (a float in (0, 1]) each epoch trains on, or leave it out")
    if trainer.gradient_clip_val is not None and trainer.gradient_clip_val < 0:
        raise ConfigError(f"trainer.gradient_clip_val {trainer.gradient_clip_val} must be > 0 (or null: no clipping)")
    for callback in trainer.callbacks:  # a monitor naming no metric failed only when first looked for, after the
        # first epoch or validation, the run's files written (found by probing: monitor val_acc)
        monitor = getattr(callback, "monitor", None)
        if isinstance(monitor, str) and "/" not in monitor and monitor not in ("epoch", "step"):
            raise ConfigError(f"the {type(callback).__name__}'s monitor {monitor!r} is not a metric dcl logs: they are "
                              "named <stage>/<name>, e.g. val/acc, val/nmi, val/silhouette (each validation) or "
                              "train/loss")
    own = model.configure_callbacks() or []
    for callback in [*trainer.callbacks, *(own if isinstance(own, (list, tuple)) else [own])]:
        if callable(getattr(callback, "check_trainer", None)):
            callback.check_trainer(trainer)
    if model.automatic_optimization:
        return
    name = type(model).__name__
    if trainer.gradient_clip_val:
        own = ("set the method's own gradient_clip_val instead (model.init_args.gradient_clip_val: it clips each of "
               "its optimizer steps)"
               if "gradient_clip_val" in inspect.signature(type(model)).parameters else "remove it")
        raise ConfigError(f"{name} steps its optimizers itself (manual optimization), so the Trainer's "
                          f"gradient_clip_val {trainer.gradient_clip_val} cannot apply; {own}")
    if trainer.accumulate_grad_batches != 1:
        raise ConfigError(f"{name} steps its optimizers itself (manual optimization), so the Trainer's "
                          f"accumulate_grad_batches {trainer.accumulate_grad_batches} cannot apply; remove it "
                          "(a larger data.batch_size is the way to larger steps)")


def cpu_has_native_bf16() -> bool:
    """Whether PyTorch's CPU kernels find native bfloat16 arithmetic here (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # an unknown build: assume it has, and do not warn
        return True


def warn_if_cpu_mixed_precision_is_slow(trainer: pl.Trainer) -> None:
    """Warn when a fit on CPUs runs in a mixed precision that is slower there than float32, not faster
    (``benchmarks/results/cpu_mixed_precision_<cpu>.md``):

    * bfloat16 on a CPU without its arithmetic (AVX512-BF16 or AMX): PyTorch converts and emulates (an AVX2 CPU:
      the MLP autoencoder's step 6x, DCFAE's 24x slower);
    * float16 on any CPU. ``precision="16-mixed"`` on a CPU is bfloat16 (Lightning switches it), so this is a
      ``MixedPrecision("16-mixed", "cpu")`` plugin given explicitly; its float16 autocast was no faster for the MLP
      and DCFAE's step far slower even on a CPU with AVX512-FP16 and AMX.
    """
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(str(trainer.precision))
    if dtype is None or not isinstance(trainer.accelerator, CPUAccelerator):
        return
    cpu = torch.backends.cpu.get_cpu_capability()
    if dtype == torch.float16:
        rank_zero_warn(f"float16 mixed precision (a {trainer.precision} plugin) on this CPU ({cpu}) is no faster than "
                       "32-true, and with convolutions many times slower (DCFAE's MNIST networks: over 100x on "
                       "an AVX512-FP16 CPU); use precision bf16-mixed, which Lightning runs for 16-mixed on CPUs, or "
                       "32-true.")
    elif not cpu_has_native_bf16():
        rank_zero_warn(f"precision {trainer.precision} on this CPU ({cpu}) has no native {dtype} arithmetic: "
                       "PyTorch emulates it, and training runs several times slower than with 32-true (6-24x on an "
                       "AVX2 CPU), not faster. bfloat16 pays on GPUs and on CPUs with AVX512-BF16 or AMX.")


def touch_all_parameters(module: nn.Module, loss: Tensor) -> Tensor:
    """Under DDP, ``loss`` plus zero times one entry of every trainable parameter; in one process, ``loss``.

    Each phase uses part of the network (no centers while pretraining, no decoder in DEC's clustering phase),
    and DDP refuses a step in which a parameter gets no gradient. This makes every parameter part of the graph
    with a zero gradient, so ``strategy=ddp`` works without ``find_unused_parameters`` and the gradients of the
    used parameters are unchanged. (A phase's fresh optimizer has no momentum, so zero gradients move nothing.)
    Not in one process: there the backward would write a zero gradient of every parameter's full size at
    every step (measured: about 5% of a DEC step on USPS), for nothing.
    """
    if not is_distributed():
        return loss
    touched = [p.reshape(-1)[:1] for p in module.parameters() if p.requires_grad]
    return loss + 0.0 * torch.cat(touched).sum() if touched else loss


def check_checkpoint_method(checkpoint: dict[str, Any], method_cls: type) -> None:
    """Refuse a checkpoint written by another method, naming both. A registered method (``dcl list``) loads only its
    own checkpoints (IDEC's training state is not DEC's, though IDEC subclasses DEC); a class of your own that is
    not registered also loads those of the registered method it subclasses (e.g. ``MyDEC`` a DEC checkpoint)."""
    saved = checkpoint.get("dcl_method")
    if saved is None:
        raise ConfigError(f"this checkpoint was not written by a dcl method; {method_cls.__name__} cannot load it")
    registered = method_cls in registry.available("method").values()
    ok = {method_cls.__qualname__} if registered else {c.__qualname__ for c in method_cls.__mro__}
    if saved not in ok:
        raise ConfigError(f"this checkpoint was written by method {saved}, not {method_cls.__name__}; load it "
                          f"with {saved} (dcl: --model {saved}), or use a checkpoint of {method_cls.__name__}; to "
                          f"start from its autoencoder only, pass it as {method_cls.__name__}'s pretrained (dcl: "
                          "--model.init_args.pretrained)")


def saved_input_shape(checkpoint: dict[str, Any]) -> tuple[int, ...] | None:
    """The shape of the samples a checkpoint's method was trained on (its ``input_shape``), if it names one."""
    shape = checkpoint.get("hyper_parameters", {}).get("input_shape")
    return tuple(int(d) for d in shape) if shape else None


def check_checkpoint_fits(checkpoint: dict[str, Any], module: ClusteringMethod) -> None:
    """Refuse a checkpoint whose tensors do not fit ``module`` (trained on other data, or with another network),
    naming the settings that differ, where Lightning's load would end in a size-mismatch traceback. The clustering
    state (``resizable_buffers``: K, the number of samples) may differ: it is taken from the checkpoint."""
    state, own = checkpoint.get("state_dict", {}), module.state_dict()
    resizable = set(module.resizable_buffers)
    wrong = [k for k, v in state.items() if k in own and k not in resizable and v.shape != own[k].shape]
    strict = getattr(module, "strict_loading", True)
    missing = [k for k in own if k not in state] if strict else []
    unexpected = [k for k in state if k not in own] if strict else []
    name = type(module).__name__
    trained_on = saved_input_shape(checkpoint)
    if trained_on is not None and trained_on != module.input_shape:  # (also where every weight fits: convolutions)
        raise ConfigError(f"this checkpoint of {name} was trained on samples of shape {trained_on}, but this data "
                          f"has shape {module.input_shape}; use data of the training shape (the same features, image "
                          "size and channels)")
    if not (wrong or missing or unexpected):
        return
    plain = lambda v: list(v) if isinstance(v, (list, tuple)) else v  # noqa: E731  (YAML lists vs tuples)
    saved, here = checkpoint.get("hyper_parameters", {}), dict(module.hparams)
    differ = [k for k in saved if k in here and not k.startswith("_")  # (_class_path: Lightning's, not a setting)
              and repr(plain(saved[k])) != repr(plain(here[k]))]
    detail = (f"{wrong[0]} is {tuple(state[wrong[0]].shape)} there but {tuple(own[wrong[0]].shape)} here" if wrong
              else f"missing {missing[:2]}" if missing else f"unexpected {unexpected[:2]}")
    k_here = module.n_clusters
    k_there = state["cluster_centers"].shape[0] if "cluster_centers" in state else k_here
    if wrong and k_there != k_here and (state[wrong[0]].shape[:1], own[wrong[0]].shape[:1]) == ((k_there,), (k_here,)):
        # sized by K, which the checkpoint sets: the class, not the settings, is at fault
        raise ConfigError(f"this checkpoint does not fit this {name} ({detail}): {wrong[0]} follows the number of "
                          f"clusters ({k_there} there, {k_here} here) but is not in {name}.resizable_buffers; add it "
                          f"there (resizable_buffers = {(*module.resizable_buffers, wrong[0])!r})")
    settings = ", ".join(f"{k}: {plain(saved[k])} (here {plain(here[k])})" for k in differ)
    raise ConfigError(f"this checkpoint does not fit this {name} ({detail})"
                      + (f"; it was trained with {settings}" if settings else "")
                      + "; build it with the settings it was trained with: its hyperparameters in the checkpoint "
                      f"({name}.load_from_checkpoint(path) uses them; dcl: --config <run folder>/config.yaml)")


def warn_if_fit_ends_within(module: pl.LightningModule, epochs: int, phase: str, setting: str,
                            consequence: str) -> None:
    """Warn at fit start when ``trainer.max_epochs`` or ``max_steps`` ends within a method's first phase of
    ``epochs`` epochs. Not in a ``fast_dev_run``, a trial of one batch whose limits are Lightning's, not the
    config's: "raise max_epochs" would be wrong advice there."""
    trainer = module.trainer
    if trainer.fast_dev_run:
        return
    max_epochs, max_steps = trainer.max_epochs, trainer.max_steps
    if max_epochs is not None and 0 <= max_epochs <= epochs:
        rank_zero_warn(f"max_epochs {max_epochs} ends within the {epochs} {phase}: {consequence}; raise max_epochs "
                       f"(it counts this phase) or lower {setting}")
        return
    if max_steps < 0:
        return
    # the fit loop counts the training batches after on_fit_start: count them now, as Lightning's
    # estimated_stepping_batches does (the loader is not built twice)
    trainer.fit_loop.setup_data()
    batches = trainer.num_training_batches
    if not math.isfinite(batches):  # an iterable dataset without a length
        return
    # optimizer steps an epoch; under manual optimization (no accumulation) a batch may take several, so this is a
    # lower bound there and the warning is never wrong
    steps = epochs * math.ceil(batches / trainer.accumulate_grad_batches)
    if max_steps <= steps:
        rank_zero_warn(f"max_steps {max_steps} ends within the {epochs} {phase} (at least {steps} optimizer steps): "
                       f"{consequence}; raise max_steps (it counts this phase) or lower {setting}")


#: ModelCheckpoint's private members that dcl uses, in the two functions below and nowhere else. Lightning (2.6 read)
#: has no public way to read or set the step it last saved at, nor to save its "last" checkpoint outside its own
#: hooks; saving it from public parts (format_checkpoint_name, CHECKPOINT_NAME_LAST, last_model_path,
#: trainer.save_checkpoint) would write _save_last_checkpoint again and miss some of it (the last-v1 version counter,
#: removing the previous file, the step saved, the loggers' after_save_checkpoint). tests/test_dec.py's
#: test_the_model_checkpoint_members_dcl_uses_exist fails naming any that a Lightning release renames.
MODEL_CHECKPOINT_PRIVATES = ("_last_global_step_saved", "_monitor_candidates", "_save_last_checkpoint")


def save_last_checkpoints(trainer: pl.Trainer, changed: bool) -> None:
    """Save each ``save_last`` checkpoint again at the end of a fit, unless it holds this state already. Lightning
    saves where validation runs (the configs validate every 10 or more epochs): a fit that ended elsewhere (DEC's
    ``tol``, a max_epochs that is not a multiple, max_steps) left ``last.ckpt`` epochs behind the final scores,
    which predict and validate of it then disagreed with."""
    if trainer.fast_dev_run:
        return
    for callback in trainer.checkpoint_callbacks:
        # (save_last "link" links to the last top-k file, which may be older: left as Lightning does it)
        if not (isinstance(callback, ModelCheckpoint) and callback.save_last is True):
            continue
        if changed or callback._last_global_step_saved != trainer.global_step:
            callback._save_last_checkpoint(trainer, callback._monitor_candidates(trainer))


def checkpoint_of_this_step_exists(trainer: pl.Trainer) -> None:
    """Tell each ModelCheckpoint of a resumed fit that the step it resumes at is saved already (the checkpoint it
    resumed from), which Lightning does not restore. Under ``accumulate_grad_batches`` the batches before the next
    optimizer step share that step, and a checkpoint saved every N steps was saved again at the first of them, inside
    the accumulation window: without the window's gradients, which no checkpoint holds, so a fit resumed from it was
    not the uninterrupted one."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint):
            callback._last_global_step_saved = max(callback._last_global_step_saved, trainer.global_step)


def stop_takes_effect(trainer: pl.Trainer) -> bool:
    """A stop was requested (EarlyStopping, a time limit, a method's convergence criterion) and Lightning will honour
    it: while the Trainer's ``min_epochs`` / ``min_steps`` are unmet it leaves ``should_stop`` set and trains on."""
    return trainer.should_stop and getattr(trainer.fit_loop, "_can_stop_early", True)


def trains_nothing(trainer: pl.Trainer, steps_done: int, epochs_done: int, stopped: bool = False) -> bool:
    """Whether a fit's training loop will not run, as Lightning's ``_FitLoop.done`` decides (it reads the restored
    loops, which ``on_fit_start`` comes before): its steps or epochs are all done (a fit resumed from its end), a
    stop is set (``stopped``) past the Trainer's ``min_epochs`` / ``min_steps``, or ``limit_train_batches`` is 0."""
    def reached(count: int, limit: int | None) -> bool:
        return limit is not None and limit != -1 and count >= limit

    min_epochs, min_steps = trainer.fit_loop.min_epochs, trainer.fit_loop.min_steps
    can_stop = (not min_epochs or epochs_done >= min_epochs) and (not min_steps or steps_done >= min_steps)
    return (trainer.limit_train_batches == 0 or reached(steps_done, trainer.max_steps)
            or reached(epochs_done, trainer.max_epochs) or (stopped and can_stop))


def fit_ends_after_this_epoch(trainer: pl.Trainer) -> bool:
    """Whether the fit stops at the end of the current training epoch: its last epoch, ``max_steps`` reached (also
    inside the epoch) or a stop requested (a time limit, a method's convergence criterion). Read in
    ``on_train_epoch_end``, which runs before the epoch's checkpoint is saved."""
    max_epochs = trainer.max_epochs
    return ((max_epochs is not None and 0 <= max_epochs <= trainer.current_epoch + 1) or stop_takes_effect(trainer)
            or 0 < trainer.max_steps <= trainer.global_step)


def logging_step(trainer: pl.Trainer) -> int:
    """The step on the loggers' axis now: the one Lightning's own ``self.log`` rows use (training batches that
    stepped), not ``global_step``, which counts optimizer steps (two a batch in DCFAE's adversarial phase). What dcl
    writes to the loggers itself (:func:`log_metrics_now`, images) uses it, so one run's rows share one axis."""
    return trainer.fit_loop.epoch_loop._batches_that_stepped


def log_metrics_now(trainer: pl.Trainer, metrics: dict[str, float], loggers: list | None = None) -> None:
    """Write ``metrics`` to every logger (or those of ``loggers``) once, now, at :func:`logging_step` (rank 0). For
    the values of a periodic update run in a callback's hook (``on_train_batch_start``): ``self.log`` there reached
    the loggers only when a ``log_every_n_steps`` step came before the epoch's end, and then at every logged step
    until the next update. They are also kept in ``trainer.callback_metrics``, as ``self.log`` kept them, for
    callbacks that monitor them."""
    values = {name: float(value) for name, value in metrics.items()}
    trainer.callback_metrics.update({name: torch.tensor(value) for name, value in values.items()})
    for logger in (trainer.loggers if loggers is None else loggers) if trainer.is_global_zero else ():
        logger.log_metrics({**values, "epoch": trainer.current_epoch}, step=logging_step(trainer))


def log_images_now(trainer: pl.Trainer, images: dict[str, Path]) -> None:
    """Log each image file (``{key: path}``) to every logger that takes images (W&B), at :func:`logging_step`.
    Call on rank 0, where the files are written."""
    for logger in trainer.loggers:
        if callable(getattr(logger, "log_image", None)):
            for key, path in images.items():
                logger.log_image(key=key, images=[str(path)], step=logging_step(trainer))


AUTOENCODER_INITS = ("glorot", "fan_in_uniform", "small_normal")


def small_normal_init_(module: nn.Module, std: float = 0.01) -> nn.Module:
    """Every linear / conv layer: weights N(0, std^2), biases zero (the Gaussian filler, std 0.01, of the DEC
    paper's stacked autoencoder in piiswrong/dec)."""
    return init_layers_(module, lambda w: nn.init.normal_(w, 0.0, std))


def fan_in_uniform_init_(module: nn.Module) -> nn.Module:
    """Every linear / conv layer: weights U(-sqrt(1 / fan_in), sqrt(1 / fan_in)), biases zero (Keras'
    ``VarianceScaling(scale=1/3, mode='fan_in', distribution='uniform')``, which DEC-keras pretrains MNIST with)."""
    def uniform(w: Tensor) -> None:
        bound = math.sqrt(1.0 / w[0].numel())  # fan_in as Keras counts it, for all three layer kinds
        nn.init.uniform_(w, -bound, bound)

    return init_layers_(module, uniform)


class AutoencoderMethod(ClusteringMethod):
    """Base of the methods that pretrain an autoencoder, then cluster its code: both phases in one ``dcl fit``.

    Phase 1 (``pretrain_epochs`` epochs, skipped when ``pretrained`` is given): the autoencoder is trained on
    the reconstruction MSE with ``pretrain_optimizer``; each validation runs k-means on the code, so that
    ``val/acc`` tracks AE + k-means. Phase 2: :meth:`cluster_step` with ``optimizer``; the phase switch is a
    checkpointed buffer, so a resumed run resumes in the right phase with the right optimizer.

    Args:
        latent_dim: size of the code z (the embedding).
        autoencoder: ``mlp`` (d-500-500-2000-latent) or ``conv`` (DEKM's conv autoencoder).
        hidden_dims: hidden sizes of the ``mlp`` encoder (the decoder mirrors them).
        activation: hidden activation.
        pretrain_epochs: epochs of autoencoder pretraining.
        pretrained: a checkpoint of any dcl autoencoder method (e.g. an ``AEKMeans`` run), or a ``.pt`` state
            dict of the autoencoder, to start from instead of pretraining.
        pretrain_optimizer: optimizer of phase 1 (None: Adam, lr 1e-3).
        optimizer: optimizer of phase 2 (None: the method's paper default, see :meth:`default_optimizer`).
        weight_init: ``glorot`` (Glorot-uniform weights, zero biases) or ``fan_in_uniform`` (U(+-sqrt(1 / fan_in))
            weights, zero biases: Keras' ``VarianceScaling(1/3, 'fan_in', 'uniform')``, DEC-keras' MNIST recipe)
            or ``small_normal`` (N(0, 0.01^2) weights, zero biases: the DEC paper's stacked autoencoder).
    """

    #: what a fit that ends within pretraining returns (named by the warning that says so)
    pretraining_result = "AE + k-means"

    def __init__(self, n_clusters: int, input_shape: Sequence[int], latent_dim: int = 10,
                 autoencoder: str = "mlp", hidden_dims: Sequence[int] = (500, 500, 2000), activation: str = "relu",
                 pretrain_epochs: int = 200, pretrained: str | None = None,
                 pretrain_optimizer: OptimizerFactory | None = None, optimizer: OptimizerFactory | None = None,
                 kmeans_n_init: int = 10, trainable_centers: bool = False, weight_init: str = "glorot") -> None:
        super().__init__(n_clusters, input_shape, latent_dim, kmeans_n_init, trainable_centers)
        if pretrain_epochs < 0:
            raise ConfigError(f"pretrain_epochs must be >= 0, got {pretrain_epochs}")
        if weight_init not in self.weight_inits:
            raise ConfigError(f"weight_init must be one of {self.weight_inits}, got {weight_init!r}")
        check_optimizer(optimizer, "optimizer")
        check_optimizer(pretrain_optimizer, "pretrain_optimizer")
        self.autoencoder = self.make_autoencoder(autoencoder, latent_dim, hidden_dims, activation)
        self.init_weights(weight_init)  # before the pretrained weights, which replace them
        self.pretrain_epochs = 0 if pretrained else pretrain_epochs
        self.pretrained = pretrained
        self.pretrain_optimizer = pretrain_optimizer
        self.optimizer = optimizer
        self.register_buffer("clustering_started", torch.tensor(False))
        self.activation = activation
        if pretrained and loads_pretrained():
            self.load_pretrained(pretrained)

    @property
    def clustering_active(self) -> bool:
        return bool(self.clustering_started)

    def make_autoencoder(self, kind: str, latent_dim: int, hidden_dims: Sequence[int], activation: str) -> nn.Module:
        """The network (``encoder``/``decoder`` submodules, ``forward -> (z, x_hat)``); override it to swap the
        backbone: ``pretrained`` weights are then loaded into yours."""
        kwargs = {"hidden_dims": tuple(hidden_dims)} if kind == "mlp" else {}
        return build_autoencoder(kind, self.input_shape, latent_dim, activation=activation, **kwargs)

    #: the ``weight_init`` values this class takes (a subclass adds its own in :meth:`init_weights`)
    weight_inits: tuple[str, ...] = AUTOENCODER_INITS

    def init_weights(self, weight_init: str) -> None:
        """Initialize the autoencoder built by :meth:`make_autoencoder` (``glorot``: as built)."""
        if weight_init == "fan_in_uniform":
            fan_in_uniform_init_(self.autoencoder)
        elif weight_init == "small_normal":
            small_normal_init_(self.autoencoder)

    def embed(self, x: Tensor) -> Tensor:
        return self.autoencoder.encoder(x)

    # -- phases -----------------------------------------------------------------------------------------
    def default_optimizer(self, params, phase: str) -> torch.optim.Optimizer:
        """The optimizer of ``phase`` ("pretrain" or "cluster") when none is configured: Adam, lr 1e-3."""
        return torch.optim.Adam(params, lr=1e-3)

    def configure_optimizers(self):
        phase = "cluster" if self.clustering_active else "pretrain"
        make = self.optimizer if phase == "cluster" else self.pretrain_optimizer
        return make_optimizer(make, self.parameters(), lambda params: self.default_optimizer(params, phase))

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if not self.clustering_active:
            warn_if_fit_ends_within(self, self.pretrain_epochs, "epochs of autoencoder pretraining", "pretrain_epochs",
                                    f"{type(self).__name__}'s clustering phase will not run and the result is "
                                    f"{self.pretraining_result}")

    def on_train_epoch_start(self) -> None:
        if not self.clustering_active and self.current_epoch >= self.pretrain_epochs:
            self.start_clustering()

    def start_clustering(self) -> None:
        """Switch to phase 2: mark it (checkpointed) and build phase 2's optimizer."""
        self.clustering_started.fill_(True)
        if self._trainer is not None:
            self.trainer.strategy.setup_optimizers(self.trainer)

    #: the clustering phase ends after this many optimizer steps (DEC's, DEKM's ``maxiter``; None: no limit), counted
    #: in the subclass's checkpointed buffer ``cluster_steps``
    maxiter: int | None = None

    def on_before_optimizer_step(self, optimizer) -> None:
        super().on_before_optimizer_step(optimizer)
        # optimizer steps (the papers' iterations), as update_interval counts them: under accumulate_grad_batches one
        # step takes several batches
        if self.maxiter is not None and self.clustering_active:
            self.cluster_steps += 1
            if self.stopping_rule_met():
                self.trainer.should_stop = True

    def stopping_rule_met(self) -> bool:
        # maxiter, from the checkpointed step count: a fit resumed with a larger maxiter trains on
        return super().stopping_rule_met() or (self.maxiter is not None and self.clustering_active
                                               and int(self.cluster_steps) >= self.maxiter)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor | None:
        loss = self.pretrain_step(batch) if not self.clustering_active else self.cluster_step(batch)
        return None if loss is None else touch_all_parameters(self, loss)

    def pretrain_step(self, batch: dict[str, Tensor]) -> Tensor:
        x = batch["x"]
        _, x_hat = self.autoencoder(x)
        loss = F.mse_loss(x_hat, x)
        self.log("train/recon", loss)
        return loss

    def cluster_step(self, batch: dict[str, Tensor]) -> Tensor:
        """Phase 2's training step: returns the loss (to end training, set ``trainer.should_stop``: the epoch
        ends before the next batch; a step without a loss fails under DDP)."""
        raise NotImplementedError

    def refresh_clusters(self, z: Tensor) -> None:
        if not self.clustering_active:  # phase 1: the centers are k-means on the current code
            self.set_cluster_centers(self.run_kmeans(z).centers)

    def refreshes_final_clusters(self) -> bool:
        return not self.clustering_active  # phase 2 trains its clusters

    def on_train_epoch_end(self) -> None:
        if not self.clustering_active:
            pretraining_ends = self.current_epoch + 1 == self.pretrain_epochs
            if pretraining_ends or fit_ends_after_this_epoch(self.trainer):
                self.check_reconstruction()
            if pretraining_ends and self._refreshed_step != self.global_step:
                self.refresh_clusters_by_step(self.embed_all())  # so the checkpoint ends with AE + k-means centers
        super().on_train_epoch_end()  # the final clusters, when the fit ends here

    #: the share of the data's variance below which a trained autoencoder has likely learned nothing yet (one
    #: stuck on outputting the data's mean explains ~0%; DEKM's on Digits 2% after 20 epochs, 36% after 30)
    min_explained_variance = 0.05

    def check_reconstruction(self) -> float:
        """At the end of pretraining: log ``train/recon_explained`` and warn when the autoencoder still sits on
        the plateau of outputting the data's mean, where its code holds no cluster structure (a deep MLP with
        small initial weights stays there for dozens of epochs) and clustering it gives chance-level results. The
        value is :meth:`reconstruction_explained`'s: on every sample, or on a fixed random 10,000 of a larger set."""
        explained = self.reconstruction_explained()
        self.log("train/recon_explained", explained, sync_dist=True)  # equal on every rank
        if explained < self.min_explained_variance:
            how = (f"hardly better than their mean does (it explains {explained:.1%} of their variance)"
                   if explained >= 0 else
                   f"worse than their mean does (its squared error is {1 - explained:.2f} x their variance)")
            epochs = self.current_epoch + 1
            # AEKMeans (and SAE) train the autoencoder for the whole fit: they have no pretrain_epochs to raise
            knob = ("pretrain_epochs (or max_epochs)" if "pretrain_epochs" in registry.settings(type(self))
                    else "max_epochs")
            rank_zero_warn(
                f"after {epochs} epoch{'s' if epochs > 1 else ''} of training, {type(self).__name__}'s autoencoder "
                f"reconstructs the data {how}: it has likely not learned them yet, and clustering its code then "
                f"gives chance-level results; raise {knob} or the learning rate, or start from a trained "
                "autoencoder (model.init_args.pretrained)")
        return explained

    #: the reconstruction check reads at most this many samples: a fixed random subset of a larger data set (a pass of
    #: the whole autoencoder over all samples took 33.6 of a 91 s fit of 1,000,000 samples with the papers' network)
    recon_check_samples = 10000

    @torch.no_grad()
    def reconstruction_explained(self, max_samples: int | None = None) -> float:
        """``1 - SSE / SST`` of the autoencoder's reconstruction: 0 when it outputs the data's mean, 1 when it
        reconstructs the data exactly. Computed on every sample when the data set has at most ``max_samples``
        (default :attr:`recon_check_samples`, 10,000), else on ``max_samples`` of them drawn with a fixed seed (the
        same whatever the number of processes: each rank reads its shard of them, the sums are all-reduced); its
        standard error there is far below the 5% that the warning reads."""
        dm = self.trainer.datamodule
        limit = self.recon_check_samples if max_samples is None else max_samples
        batches = dm.sample_dataloader(limit) if isinstance(dm, ClusteringDataModule) else dm.all_dataloader()
        # n, the sum of squared errors, the sum of x^2, then the per-feature sums of x (float64)
        stats = torch.zeros(3 + math.prod(self.input_shape), dtype=torch.float64, device=self.device)
        for x in self.eval_batches(batches):
            x_hat = self.autoencoder(x)[1].flatten(1).double()
            x = x.flatten(1).double()
            stats[0] += len(x)
            stats[1] += (x_hat - x).square().sum()
            stats[2] += x.square().sum()
            stats[3:] += x.sum(0)
        stats = all_reduce_sum_(stats)
        n, sse, sum_sq, sums = stats[0], stats[1], stats[2], stats[3:]
        sst = sum_sq - sums.square().sum() / n
        return float(1 - sse / sst) if sst > 0 else 1.0

    def unfinished_autoencoder(self) -> str | None:
        """Why this fit's autoencoder is not yet one to start another method from (None: it is), recorded in its
        checkpoints for :meth:`load_pretrained` to refuse them. An autoencoder part way through an end-to-end
        pretraining is one (a shorter pretraining); SAE's during its greedy layer-wise stages is not (its upper
        layers are untrained)."""
        return None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["dcl_unfinished_autoencoder"] = self.unfinished_autoencoder()

    # -- starting from a pretrained autoencoder ---------------------------------------------------------
    def load_pretrained(self, path: str) -> None:
        """Load the autoencoder weights of another run; one clear error for every way this can go wrong."""
        file = pretrained_file(path, "train one first, e.g. dcl fit --config configs/ae_kmeans/<data>.yaml")
        ckpt = load_checkpoint_file(file)
        state = ckpt.get("state_dict", ckpt)
        ae_state = {k[len("autoencoder."):]: v for k, v in state.items() if k.startswith("autoencoder.")}
        if not ae_state and all(isinstance(v, Tensor) for v in state.values()):
            ae_state = dict(state)  # a bare autoencoder state dict
        saved_shape = saved_input_shape(ckpt)
        if saved_shape is not None and saved_shape != self.input_shape:
            raise ConfigError(f"pretrained checkpoint {file} was trained on inputs of shape {saved_shape}, but "
                              f"this data has shape {self.input_shape}; pretrain on this data set")
        saved_activation = ckpt.get("hyper_parameters", {}).get("activation")
        if saved_activation and saved_activation != self.activation:  # the same weights' shapes, another function
            raise ConfigError(f"pretrained checkpoint {file} was trained with activation {saved_activation}, this "
                              f"{type(self).__name__} uses {self.activation}; set model.init_args.activation "
                              f"{saved_activation}")
        own = self.autoencoder.state_dict()
        missing = sorted(set(own) - set(ae_state))
        mismatched = [k for k in own if k in ae_state and ae_state[k].shape != own[k].shape]
        if missing or mismatched:
            detail = (f"missing {missing[:3]}" if missing else
                      f"{mismatched[0]} is {tuple(ae_state[mismatched[0]].shape)} there but "
                      f"{tuple(own[mismatched[0]].shape)} here")
            raise ConfigError(f"pretrained checkpoint {file} holds a different autoencoder ({detail}); use the "
                              "same autoencoder, latent_dim and hidden_dims as the run that produced it")
        unfinished = ckpt.get("dcl_unfinished_autoencoder")  # recorded by the method that saved it
        if unfinished:
            raise ConfigError(f"pretrained checkpoint {file} ({ckpt.get('dcl_method', 'dcl')}) holds an unfinished "
                              f"autoencoder: {unfinished}; pass the checkpoint of the finished fit, or continue that "
                              "fit (dcl fit with its --ckpt_path)")
        self.autoencoder.load_state_dict({k: ae_state[k] for k in own})
        self.remember_pretrained_data(ckpt, path)


def pretrained_file(path: str, how_to_make: str) -> Path:
    """A method's ``pretrained`` checkpoint file, or one error: missing (and ``how_to_make`` one), or a folder (and
    the checkpoints in it)."""
    file = Path(path).expanduser()
    problem = not_a_file(file)
    if problem:
        raise ConfigError(f"pretrained checkpoint {file} {problem}"
                          + (f"; {how_to_make}" if problem == "does not exist" else ""))
    return file


def load_checkpoint_file(path: str | Path) -> dict[str, Any]:
    """``torch.load`` with one clear error for a truncated or foreign file."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises several types for corrupt archives
        raise ConfigError(f"cannot read checkpoint {path}: it is truncated or not a PyTorch checkpoint "
                          f"({type(err).__name__}: {str(err).splitlines()[0][:120]})") from None

