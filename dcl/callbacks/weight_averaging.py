"""Final-epoch weight averaging: the last epoch(s) of training average the weights over their iterations.

AE-CM's authors train for E epochs, then run one more epoch in which, after every optimizer step, the weights
are accumulated; at the end of that epoch the model keeps the average (Polyak averaging over one epoch, which
smooths the noise of the last steps of a constant learning rate). Any method can use it.

Why not Lightning's ``StochasticWeightAveraging``: it changes the learning rate (SWA schedule), copies the
average in only at ``on_train_end`` (so the last validation and the last checkpoint see the un-averaged
weights) and averages once per epoch, not per step. This callback keeps the optimizer as it is, averages after
every optimizer step (once per step: under ``accumulate_grad_batches`` or a manual optimization that steps every
few batches, the batches without a step add nothing), and writes the average into the module at the last batch of
the last epoch, before that epoch's validation and checkpoint. Its running mean and count are in ``state_dict``, so
a resumed run averages exactly like an uninterrupted one; so are the epochs they average (a fit resumed with a
larger ``max_epochs`` starts its own window) and the weights the average replaced, so that a finished fit continued
to more epochs goes on from them (and averages its new last epoch) as one longer run would.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.callbacks import Callback

from dcl.method import ConfigError


class FinalEpochAveraging(Callback):
    """Average the parameters over the optimizer steps of the last ``epochs`` epochs of ``trainer.max_epochs``.

    The averaging epochs are part of ``max_epochs``: for the paper's "1000 epochs, then one averaging epoch",
    set ``max_epochs: 1001``. If training stops early (``should_stop``), nothing is averaged. After writing the
    average, the callback calls ``pl_module.on_weights_averaged()`` when the module defines it (for state
    derived from the parameters).

    Args:
        epochs: number of final epochs to average over (1 in AE-CM).
        buffers: also average floating-point buffers (e.g. batch-norm statistics); else they keep their last value.
    """

    def __init__(self, epochs: int = 1, buffers: bool = False) -> None:
        if epochs < 1:
            raise ConfigError(f"FinalEpochAveraging needs epochs >= 1, got {epochs}")
        self.epochs = epochs
        self.buffers = buffers
        self.count = 0
        self.mean: dict[str, torch.Tensor] = {}
        self.done = False
        self.replaced: dict[str, torch.Tensor] = {}  # the weights before the average was written (checkpointed)
        self.window: int | None = None  # the first epoch the running mean averages (checkpointed)
        self._steps_before_batch = 0

    @property
    def state_key(self) -> str:
        return f"FinalEpochAveraging{{epochs={self.epochs}}}"

    def check_trainer(self, trainer) -> None:
        """Refuse a Trainer this callback cannot train with (the dcl command asks before a fit writes anything)."""
        if trainer.max_epochs is None or trainer.max_epochs < 0:
            raise ConfigError("FinalEpochAveraging averages the last epochs of trainer.max_epochs; set "
                              "trainer.max_epochs (the averaging epoch included)")

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit":
            self.check_trainer(trainer)

    def _tensors(self, pl_module) -> dict[str, torch.Tensor]:
        out = {n: p for n, p in pl_module.named_parameters() if p.requires_grad}
        if self.buffers:
            out.update({n: b for n, b in pl_module.named_buffers() if b.is_floating_point()})
        return out

    def averaging(self, trainer) -> bool:
        """Whether the current epoch is one of the averaging epochs."""
        return trainer.max_epochs is not None and trainer.current_epoch >= trainer.max_epochs - self.epochs

    def on_train_batch_start(self, trainer, pl_module, batch: Any, batch_idx: int) -> None:
        self._steps_before_batch = trainer.global_step  # (optimizer steps, of every optimizer)

    @torch.no_grad()
    def on_train_batch_end(self, trainer, pl_module, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.done or not self.averaging(trainer):
            return
        window = trainer.max_epochs - self.epochs
        if self.window is not None and self.window != window:  # a resume with another max_epochs: another window
            self.count, self.mean = 0, {}
        self.window = window
        tensors = self._tensors(pl_module)
        if trainer.global_step > self._steps_before_batch:  # the weights of a new optimizer step
            self.count += 1
            for name, t in tensors.items():
                if name not in self.mean or self.count == 1:
                    self.mean[name] = t.detach().float().clone()
                    continue
                if self.mean[name].device != t.device:  # restored from a checkpoint on the CPU
                    self.mean[name] = self.mean[name].to(t.device)
                self.mean[name].add_(t.detach().float() - self.mean[name], alpha=1.0 / self.count)
        last_epoch = trainer.current_epoch + 1 >= trainer.max_epochs
        if last_epoch and batch_idx + 1 >= trainer.num_training_batches and self.count:
            self._apply(pl_module, tensors)

    @torch.no_grad()
    def on_train_start(self, trainer, pl_module) -> None:
        if self.replaced:  # continuing a finished fit: its averaging epoch was not the last one after all
            for name, t in self._tensors(pl_module).items():
                t.copy_(self.replaced[name].to(t.device))
            self.count, self.mean, self.done, self.replaced, self.window = 0, {}, False, {}, None

    @torch.no_grad()
    def _apply(self, pl_module, tensors: dict[str, torch.Tensor]) -> None:
        keep = getattr(pl_module, "keep_training_state", None)  # a dcl method's buffers (on_weights_averaged)
        if callable(keep):
            keep()
        self.replaced = {name: t.detach().cpu().clone() for name, t in tensors.items()}
        for name, t in tensors.items():
            t.copy_(self.mean[name].to(t.dtype))
        self.done = True
        hook = getattr(pl_module, "on_weights_averaged", None)
        if callable(hook):
            hook()

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count, "done": self.done, "mean": {k: v.cpu() for k, v in self.mean.items()},
                "replaced": self.replaced, "window": self.window}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.count = state_dict["count"]
        self.done = state_dict["done"]
        self.mean = dict(state_dict["mean"])
        self.replaced = dict(state_dict.get("replaced", {}))
        self.window = state_dict.get("window")
