"""Small DDP helpers: every rank must hold the same clustering state."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def end_spawned_process_group(trainer) -> None:
    """End the process group of a worker that Lightning started for this one run (``ddp_spawn``, ``ddp_fork``):
    once every rank has reached the end of the run, a barrier, then ``destroy_process_group``.

    Left to Lightning's exit hook, a rank that finished first could abort at interpreter exit inside gloo's
    teardown (``terminate called without an active exception``, SIGABRT), and the launcher then failed the
    completed fit: 6 of 21 two-process fits on a loaded 2-core machine, 0 of 16 with this call. Processes that
    outlive the run (``ddp``, where every rank runs the whole script and may call ``test`` next) keep theirs, until
    the script ends them: :func:`end_script_process_group`.
    """
    from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher

    _end_process_group(trainer, _MultiProcessingLauncher)


def end_script_process_group(trainer) -> None:
    """The same, for a script whose every rank Lightning started by running it again (``ddp``), called by the
    script when it is done with the group: the ``dcl`` command, at its end (a probe saw a rank that exited first abort
    another's gloo teardown there too, about 1 in 30 two-process runs; 0 of 40 in a later check)."""
    from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

    _end_process_group(trainer, _SubprocessScriptLauncher)


def _end_process_group(trainer, launcher: type) -> None:
    if not (dist.is_available() and dist.is_initialized()):
        return
    if isinstance(getattr(trainer.strategy, "launcher", None), launcher):
        dist.barrier()
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_world() -> tuple[int, int]:
    if is_distributed():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_ordered(local: Tensor, n_total: int) -> Tensor:
    """Reassemble contiguous per-rank shards (see ``dcl.datamodule.ordered_shard``) into all ``n_total`` rows,
    in order, on every rank."""
    rank, world = rank_world()
    if world == 1:
        return local
    bounds = [n_total * r // world for r in range(world + 1)]
    width = max(bounds[r + 1] - bounds[r] for r in range(world))
    padded = local.new_zeros((width, *local.shape[1:]))
    padded[: len(local)] = local
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([parts[r][: bounds[r + 1] - bounds[r]] for r in range(world)])


def broadcast_(tensor: Tensor, src: int = 0) -> Tensor:
    """In-place broadcast from ``src`` (a decision made on rank 0 reaches every rank)."""
    if is_distributed():
        dist.broadcast(tensor, src)
    return tensor


def broadcast_norm_statistics_(module: torch.nn.Module) -> None:
    """Rank 0's running statistics of every normalization layer (BatchNorm, InstanceNorm with
    ``track_running_stats``) on every rank, one broadcast per dtype.

    Each rank's statistics follow its own samples; DDP's forward broadcasts rank 0's only at the start of the
    next forward through its wrapper, so after a step (the last one, or one of manual optimization's passes that
    call submodules directly) the ranks would embed with different statistics and the checkpoint (rank 0's) would
    not be the model that the final scores came from."""
    if not is_distributed():
        return
    buffers = [b for m in module.modules()
               if isinstance(m, torch.nn.modules.batchnorm._NormBase) and m.track_running_stats
               for b in m.buffers(recurse=False)]
    for dtype in sorted({b.dtype for b in buffers}, key=str):
        group = [b for b in buffers if b.dtype == dtype]
        flat = torch.cat([b.detach().reshape(-1) for b in group])
        dist.broadcast(flat, 0)
        offset = 0
        for b in group:
            b.detach().copy_(flat[offset: offset + b.numel()].view_as(b))
            offset += b.numel()


def all_reduce_sum_(tensor: Tensor) -> Tensor:
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def world_size() -> int:
    return rank_world()[1]


def sum_over_global_batch(local_sum: Tensor) -> Tensor:
    """A loss summed over this rank's batch, times the world size: DDP averages the ranks' gradients, and the
    average is then the gradient of the sum over the global batch, as one process computes it."""
    return local_sum * world_size()


def global_mean(local: Tensor) -> Tensor:
    """Mean over dim 0 of the rows of every rank; the gradient flows through this rank's rows only (DDP then
    averages the ranks' gradients). Equals ``local.mean(0)`` in a single process."""
    if not is_distributed():
        return local.mean(dim=0)
    stats = torch.cat([local.detach().sum(dim=0).flatten(), local.new_tensor([len(local)])])
    dist.all_reduce(stats)
    others = stats[:-1].view(local.shape[1:]) - local.detach().sum(dim=0)
    return (local.sum(dim=0) + others) / stats[-1]
