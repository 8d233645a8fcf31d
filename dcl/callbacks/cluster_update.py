"""The periodic clustering update: embed all samples with the current network, hand them to the method.

When the clustering phase starts (first training batch in which ``pl_module.clustering_active``), and then
every ``every_n_steps`` optimizer steps (or every ``every_n_epochs`` epochs), the callback embeds every sample
of the datamodule in order (sharded over DDP ranks, then gathered, so every rank sees the same embeddings)
and calls ``pl_module.update_clusters(z, first)``. DEC refreshes its target distribution there, DEKM runs
k-means and its eigen update, a DP mixture refits its components.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import Callback


class ClusterUpdate(Callback):
    """Args:
        every_n_steps: optimizer steps between updates (the papers' ``update_interval``).
        every_n_epochs: epochs between updates (used when ``every_n_steps`` is None).
        Neither: one update, when the clustering phase starts (e.g. to initialize centers by k-means).
    """

    def __init__(self, every_n_steps: int | None = None, every_n_epochs: int | None = None) -> None:
        if every_n_steps is not None and every_n_epochs is not None:
            raise ValueError("give at most one of every_n_steps and every_n_epochs")
        if any(n is not None and n < 1 for n in (every_n_steps, every_n_epochs)):
            raise ValueError("the update interval must be >= 1")
        self.every_n_steps = every_n_steps
        self.every_n_epochs = every_n_epochs
        self.updates = 0          # updates done so far (checkpointed)
        self.start_step = 0       # global step at which the clustering phase began
        self.start_epoch = 0
        self.last_step = -1

    @property
    def state_key(self) -> str:
        return f"ClusterUpdate{{every_n_steps={self.every_n_steps}, every_n_epochs={self.every_n_epochs}}}"

    def _update(self, trainer, pl_module) -> None:
        z = pl_module.embed_all()
        pl_module.update_clusters(z, first=self.updates == 0)
        self.updates += 1
        self.last_step = trainer.global_step

    def on_train_batch_start(self, trainer, pl_module, batch: Any, batch_idx: int) -> None:
        if not pl_module.clustering_active:
            return
        step = trainer.global_step
        if self.updates == 0:
            self.start_step, self.start_epoch = step, trainer.current_epoch
            self._update(trainer, pl_module)
        elif (self.every_n_steps and step != self.last_step
              and (step - self.start_step) % self.every_n_steps == 0):
            self._update(trainer, pl_module)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        epoch = trainer.current_epoch
        if (self.every_n_epochs and self.updates > 0 and pl_module.clustering_active
                and (epoch - self.start_epoch) % self.every_n_epochs == 0 and trainer.global_step != self.last_step):
            self._update(trainer, pl_module)

    def state_dict(self) -> dict[str, int]:
        return {"updates": self.updates, "start_step": self.start_step, "start_epoch": self.start_epoch,
                "last_step": self.last_step}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.updates = state_dict["updates"]
        self.start_step = state_dict["start_step"]
        self.start_epoch = state_dict["start_epoch"]
        self.last_step = state_dict["last_step"]
