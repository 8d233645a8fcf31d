"""Callbacks for the reliability tests that must be importable in spawned DDP worker processes."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback

from dcl.methods.ae_kmeans import AEKMeans


def clustering_state(pl_module) -> torch.Tensor:
    """Every float buffer of the method (centers, rotations, targets, mixture state, K...) flattened into one vector."""
    parts = [b.detach().float().flatten().cpu() for _, b in sorted(pl_module.named_buffers())]
    parts.append(pl_module.cluster_centers.detach().float().flatten().cpu())
    parts.append(torch.tensor([float(pl_module.n_clusters)]))
    return torch.cat(parts)


class AssertSameStateOnRanks(Callback):
    """After every training step, the clustering state must be identical on every rank."""

    def __init__(self) -> None:
        self.checks = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not (dist.is_available() and dist.is_initialized()):
            return
        state = clustering_state(pl_module)
        size = torch.tensor([state.numel()])
        sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
        dist.all_gather(sizes, size)
        assert len({int(s) for s in sizes}) == 1, f"clustering state sizes differ between ranks: {sizes}"
        gathered = [torch.zeros_like(state) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, state)
        for r, other in enumerate(gathered[1:], 1):
            assert torch.equal(gathered[0], other), (
                f"clustering state differs between rank 0 and rank {r} at step {trainer.global_step}")
        self.checks += 1


class BatchLog(Callback):
    """The (epoch, batch index) of every training batch a fit runs: a resumed fit must run exactly the batches
    after its checkpoint, not the whole run again."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, int]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batches.append((trainer.current_epoch, batch_idx))


class ReseedAtFitStart(Callback):
    """Seed the global RNG when fit starts. ``ddp_spawn`` workers start from a fresh seed while the parent has
    drawn the initial weights; reseeding both runs here gives them one RNG stream (as ``ddp`` processes, which
    each run the whole script, have)."""

    def on_fit_start(self, trainer, pl_module) -> None:
        torch.manual_seed(1234)


class RecordsGroupAfterTeardown(AEKMeans):
    """AEKMeans whose every rank writes, after the method's teardown, whether its process group is still
    initialized (a file ``rank<R>`` in the folder named by ``DCL_TEST_GROUP_DIR``)."""

    def teardown(self, stage: str) -> None:
        rank = dist.get_rank() if dist.is_initialized() else -1
        super().teardown(stage)
        Path(os.environ["DCL_TEST_GROUP_DIR"], f"rank{rank}").write_text(str(dist.is_initialized()))
