"""Test callbacks and checks shared by the test files; the callbacks of the DDP tests must be importable in spawned
worker processes, hence a module of their own."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins import MixedPrecision
from pytest import approx

from dcl.methods.ae_kmeans import AEKMeans


def clustering_state(pl_module) -> torch.Tensor:
    """Every float buffer of the method (centers, rotations, targets, mixture state, K...) flattened into one vector."""
    parts = [b.detach().float().flatten().cpu() for _, b in sorted(pl_module.named_buffers())]
    parts.append(pl_module.cluster_centers.detach().float().flatten().cpu())
    parts.append(torch.tensor([float(pl_module.n_clusters)]))
    return torch.cat(parts)


class AssertSameStateOnRanks(Callback):
    """After every training step, the clustering state must be identical on every rank. Each rank writes how many
    steps it checked to ``<report_dir>/checks_rank<R>`` when training ends (the workers of ``ddp_spawn`` are
    other processes), so that a test can see that the check ran."""

    def __init__(self, report_dir: str) -> None:
        self.report_dir = report_dir
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

    def on_train_end(self, trainer, pl_module) -> None:
        Path(self.report_dir, f"checks_rank{trainer.global_rank}").write_text(str(self.checks))


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


def fp16_with_grad_scaler(init_scale: float = 2.0**16) -> MixedPrecision:
    """16-mixed as a GPU gets it: float16 autocast and a GradScaler (PyTorch's first scale unless given). Asked for
    by name on a CPU, Lightning runs "16-mixed" as bf16-mixed, without a scaler, so tests of the scaler give the
    plugin."""
    return MixedPrecision("16-mixed", "cpu", torch.amp.GradScaler("cpu", init_scale=init_scale))


class AutocastDtypes(Callback):
    """The dtypes of what the method's linear and conv layers output in training steps: bfloat16 among them
    shows that a ``bf16-mixed`` fit ran under autocast. Class-level, for fits run in-process through the CLI."""

    seen: set[torch.dtype] = set()

    def on_train_start(self, trainer, pl_module) -> None:
        type(self).seen = set()
        self.handles = [module.register_forward_hook(self._record) for module in pl_module.modules()
                        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ConvTranspose2d))]

    def on_train_end(self, trainer, pl_module) -> None:  # the module may be fitted again without this callback
        for handle in self.handles:
            handle.remove()

    @classmethod
    def _record(cls, module, inputs, output) -> None:
        if module.training and torch.is_grad_enabled():
            cls.seen.add(output.dtype)


class GradientNorms(Callback):
    """For each optimizer step that ran: the total gradient norm before clipping (unscaled: under a GradScaler
    Lightning unscales, then calls ``on_before_optimizer_step``) and the norm the step used (a post-step hook),
    as pairs in ``steps``; and whether a GradScaler was at work. Class-level, for fits run in-process through
    the CLI."""

    steps: list[tuple[float, float]] = []
    scaler: bool = False

    def on_train_start(self, trainer, pl_module) -> None:
        cls = type(self)
        cls.steps, cls.hooked, cls.pending = [], set(), None
        cls.scaler = getattr(trainer.precision_plugin, "scaler", None) is not None

    @staticmethod
    def _norm(optimizer) -> float:
        grads = [p.grad.detach().float() for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        cls = type(self)
        cls.pending = self._norm(optimizer)
        raw = getattr(optimizer, "optimizer", optimizer)
        if id(raw) not in cls.hooked:  # each phase's optimizer, once
            cls.hooked.add(id(raw))
            raw.register_step_post_hook(lambda opt, args, kwargs: cls.steps.append((cls.pending, cls._norm(opt))))


def assert_clipped_after_unscaling(steps: list[tuple[float, float]], clip: float, min_steps: int) -> None:
    """Each step's gradient norm is the unscaled one, clipped to ``clip``: equal to ``clip`` where it was above
    (clipping the still-scaled gradients would leave them a loss scale, 2^16 at first, smaller) and unchanged below."""
    assert len(steps) >= min_steps and max(before for before, _ in steps) > 2 * clip
    for before, after in steps:
        assert after == approx(min(before, clip), rel=1e-3), (before, after)


class AEKMeansWithBatchNorm(AEKMeans):
    """A plugin-style method whose encoder ends in BatchNorm (trained by automatic optimization)."""

    def make_autoencoder(self, kind, latent_dim, hidden_dims, activation):
        autoencoder = super().make_autoencoder(kind, latent_dim, hidden_dims, activation)
        autoencoder.encoder.append(torch.nn.BatchNorm1d(latent_dim))
        return autoencoder
