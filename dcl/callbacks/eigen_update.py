"""The eigen update: the periodic k-means update plus DEKM's rotation by the within-class scatter eigenvectors.

Built on :class:`~dcl.callbacks.cluster_update.ClusterUpdate` (same schedule: at the first clustering step,
then every ``every_n_steps`` optimizer steps). Each update

1. embeds all samples in order (gathered, identical on every DDP rank);
2. runs k-means on them: the first time with ``n_init`` restarts, later either (official code) a fresh
   k-means++ run with ``n_init_factor x`` the previous run's iterations as restarts, or (``warm_start``) one
   Lloyd run started from the previous centers;
3. renames the new clusters to the old ids by Hungarian matching and counts the changed assignments;
4. builds the within-class scatter S_w (a float64 sum over samples), eigendecomposes it with
   ``torch.linalg.eigh`` (ascending: the last column of V has the largest within-class scatter);
5. hands ``(z, labels, centers, V, eigenvalues)`` to ``pl_module.set_eigen_state``, which freezes its targets;
6. stops training (the method's ``stop_fit``) when at most ``tol`` of the assignments changed.

Under DDP the random decisions (k-means) are rank 0's: centers, labels and V are broadcast, so the targets and
the stopping decision are identical on every rank. When training ends for another reason (``maxiter``, the
last epoch, ``max_steps``) while the network moved since the last update, one final update runs after the
last training batch (before validation and checkpointing), so the method's centers are always k-means centers
of the final embedding. A fit resumed from that checkpoint continues from the state before it (the method's
``keep_training_state`` and this callback's ``before_final``), as one longer run would.

The method must provide ``embed_all``, ``run_kmeans``, ``cluster_centers``, ``cluster_labels`` (the labels of
the previous update, empty before the first) and ``set_eigen_state``.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info

from dcl.callbacks.cluster_update import ClusterUpdate
from dcl.cluster.scatter import match_to_previous, sorted_eigh, within_class_scatter
from dcl.distributed import broadcast_
from dcl.method import log_metrics_now, stop_takes_effect


class EigenUpdate(ClusterUpdate):
    """Args:
        every_n_steps: optimizer steps between updates (DEKM's ``update_interval``: 40 conv, 10 dense).
        tol: stop when at most this fraction of the assignments changed at an update (0.005 = 0.5%).
        n_init: k-means restarts at the first update (100).
        n_init_factor: later updates restart k-means ``max(1, int(n_init_factor * n_iter))`` times, ``n_iter``
            being the previous k-means run's iteration count (the official code's ``2 * n_iter_``).
        warm_start: later updates run one k-means started from the previous centers instead.
    """

    def __init__(self, every_n_steps: int, tol: float = 0.005, n_init: int = 100, n_init_factor: float = 2.0,
                 warm_start: bool = False) -> None:
        super().__init__(every_n_steps=every_n_steps)
        if not 0 <= tol < 1:
            raise ValueError(f"tol must be in [0, 1), got {tol}")
        if n_init < 1 or n_init_factor <= 0:
            raise ValueError("n_init must be >= 1 and n_init_factor > 0")
        self.tol = tol
        self.n_init = n_init
        self.n_init_factor = n_init_factor
        self.warm_start = warm_start
        self.next_n_init = n_init   # restarts of the next k-means (checkpointed)
        self.last_changed = -1      # samples whose cluster changed at the last update
        self.stopped = False        # the rule fired: the state of that update is final
        self.before_final: dict[str, Any] | None = None  # the schedule's state before a final update (checkpointed)

    @property
    def state_key(self) -> str:
        return f"EigenUpdate{{every_n_steps={self.every_n_steps}}}"

    @torch.no_grad()
    def _update(self, trainer, pl_module, final: bool = False) -> None:
        first = self.updates == 0
        z = pl_module.embed_all()
        n, k = z.shape[0], pl_module.n_clusters
        warm = self.warm_start and not first
        km = pl_module.run_kmeans(z, init=pl_module.cluster_centers if warm else None,
                                  n_init=1 if warm else self.next_n_init)
        if not warm:
            self.next_n_init = max(1, int(self.n_init_factor * km.n_iter))
        new_labels = broadcast_(km.labels.to(z.device).contiguous())  # rank 0's clustering everywhere
        old = None if first else pl_module.cluster_labels
        labels, centers, n_changed = match_to_previous(new_labels, km.centers.to(z.device), old, k)
        evals, rotation = sorted_eigh(within_class_scatter(z, labels, centers))
        rotation, evals = broadcast_(rotation.contiguous()), broadcast_(evals.contiguous())
        pl_module.set_eigen_state(z, labels, centers, rotation, evals)
        self.updates += 1
        self.last_step = trainer.global_step
        self.last_changed = n_changed
        frac = n_changed / n
        # to the loggers at once (also a final update once the fit has ended, where Lightning refuses self.log)
        log_metrics_now(trainer, {"train/label_change": frac, "train/kmeans_inertia": float(km.inertia)})
        if not first and not final and n_changed <= self.tol * n:
            rank_zero_info(f"{type(pl_module).__name__}: {n_changed} of {n} assignments ({frac:.3%}) changed at "
                            f"update {self.updates} (<= tol {self.tol:.2%}); stopping")
            pl_module.stop_fit()
            self.stopped = True

    def on_train_batch_start(self, trainer, pl_module, batch: Any, batch_idx: int) -> None:
        self.before_final = None  # training goes on: the update was not the final one after all
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)

    def on_train_batch_end(self, trainer, pl_module, outputs: Any, batch: Any, batch_idx: int) -> None:
        last_batch = batch_idx + 1 >= trainer.num_training_batches
        ending = (stop_takes_effect(trainer) or 0 < trainer.max_steps <= trainer.global_step
                  or (last_batch and trainer.current_epoch + 1 >= (trainer.max_epochs or float("inf"))))
        if ending:  # before the epoch's validation and checkpoint
            self.finish_fit(trainer, pl_module)

    def finish_fit(self, trainer, pl_module) -> bool:
        """The final update, when the network moved since the last one: the clustering of the final embedding.
        Also called by the method when the fit has ended (a stop decided after the last batch: EarlyStopping).
        Returns whether it ran."""
        if (not pl_module.clustering_active or self.updates == 0 or self.stopped
                or trainer.global_step == self.last_step):
            return False
        pl_module.keep_training_state()
        self.before_final = self._schedule_state()
        self._update(trainer, pl_module, final=True)
        return True

    def _schedule_state(self) -> dict[str, Any]:
        return {**super().state_dict(), "next_n_init": self.next_n_init, "last_changed": self.last_changed,
                "stopped": self.stopped}

    def state_dict(self) -> dict[str, Any]:
        return {**self._schedule_state(), "before_final": self.before_final}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # (loaded by a fit only) a fit that continues one which ended goes on from before its final update
        state_dict = state_dict.get("before_final") or state_dict
        self.before_final = None
        super().load_state_dict(state_dict)
        self.next_n_init = state_dict.get("next_n_init", self.n_init)
        self.last_changed = state_dict.get("last_changed", -1)
        self.stopped = state_dict.get("stopped", False)
