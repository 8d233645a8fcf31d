"""Shared test fixtures: where the real benchmark data lies, and a helper to run the CLI in-process."""

from __future__ import annotations

import contextlib
import json
import os
import socket
from functools import partial
from pathlib import Path

import pytest
import torch
from lightning.pytorch.loggers.logger import Logger

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DCL_TEST_DATA", REPO.parent / "shared" / "data"))


def require_data(*parts: str) -> Path:
    """The path under the shared data folder, or skip with the reason when it is not on this machine."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not found at {path} (set DCL_TEST_DATA to the folder that holds it)")
    return path


def free_port() -> int:
    """A TCP port free right now, for a DDP rendezvous. Each 2-process test takes a fresh one: Lightning
    otherwise keeps the MASTER_PORT it chose for the first ddp_spawn fit in os.environ, and a later group can
    find it still held (TIME_WAIT) by the previous one."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def gloo_group(rank: int, world: int, port: int):
    """The process group of one worker of a test's ``mp.spawn``: gloo on this machine, at ``port``
    (:func:`free_port`). The ranks meet at a barrier when the body has run, before either tears its group down (a
    rank once hung in the teardown)."""
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        yield
        dist.barrier()
    finally:
        dist.destroy_process_group()


def run_on_ranks(worker, *args, world: int = 2) -> dict:
    """Spawn ``worker(rank, world, port, *args, out)`` on ``world`` processes (each joins its group with
    :func:`gloo_group`) and return ``out``, the dict the ranks wrote their results into."""
    import torch.multiprocessing as mp

    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(worker, args=(world, free_port(), *args, out), nprocs=world, join=True)
        return dict(out)


def _mean_gradient_worker(rank: int, world: int, port: int, gradient, n: int, out: str) -> None:
    import warnings

    import torch.distributed as dist

    warnings.filterwarnings("ignore", message="You are trying to `self.log")  # a method's step without a Trainer
    with gloo_group(rank, world, port):
        g = gradient(torch.arange(rank, n, world))  # the rank's shard, as the loader deals it
        dist.all_reduce(g)  # what DDP does: the average of the ranks' gradients
        if rank == 0:
            torch.save(g / world, out)


def ddp_mean_gradient(gradient, n: int, folder: Path, world: int = 2) -> torch.Tensor:
    """What DDP makes of ``gradient(index)``, a flat gradient of the samples ``index`` of a global batch of ``n``
    (a module-level function: the workers unpickle it): the average over ``world`` gloo processes of each one's
    shard's gradient. Exact global-batch losses make it ``gradient(torch.arange(n))``."""
    import torch.multiprocessing as mp

    out = str(folder / "ddp_gradient.pt")
    mp.spawn(_mean_gradient_worker, args=(world, free_port(), gradient, n, out), nprocs=world, join=True)
    return torch.load(out)


def flat_grad(module: torch.nn.Module) -> torch.Tensor:
    """All parameters' gradients in one vector; a parameter the step did not use counts as zeros (what DDP's
    zero-gradient touch gives it), so 1-process and 2-process gradients compare entry by entry."""
    return torch.cat([(torch.zeros_like(p) if p.grad is None else p.grad).flatten() for p in module.parameters()])


class ImageLogger(Logger):
    """A logger with W&B's ``log_image`` signature that records the images it was given and their steps, by key;
    its run folder is ``save_dir/proj/run1``."""

    def __init__(self, save_dir):
        super().__init__()
        self._save_dir = str(save_dir)
        self.images: dict[str, list] = {}
        self.image_steps: dict[str, int | None] = {}

    name = property(lambda self: "proj")
    version = property(lambda self: "run1")
    save_dir = property(lambda self: self._save_dir)

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_metrics(self, metrics, step=None):
        pass

    def log_image(self, key, images, step=None, **kwargs):
        self.images[key] = list(images)
        self.image_steps[key] = step


def logged_rows(logger, key: str) -> list[dict[str, str]]:
    """The rows of a CSVLogger's metrics.csv that hold ``key`` (a fit's, once it has ended)."""
    import csv

    with open(Path(logger.log_dir) / "metrics.csv") as f:
        return [row for row in csv.DictReader(f) if row.get(key)]


QUIET = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
         "--trainer.enable_model_summary", "false"]


def run_cli(args: list[str], tmp_path: Path, quiet: bool = True) -> dict:
    """Run ``dcl`` in-process in ``tmp_path``; returns the final scores it wrote (or {})."""
    from dcl.cli import main

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        main([*args, *(QUIET if quiet else []), "--trainer.default_root_dir", str(tmp_path)])
    finally:
        os.chdir(cwd)
    found = sorted(tmp_path.rglob("final_scores.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(found[-1].read_text()) if found else {}


#: a small DCFAE: its settings, and the same as command-line arguments
DCFAE_TINY = dict(latent_dim=4, embedding_dim=3, channels=(4, 8), discriminator_channels=(4, 8), dense_dims=(16,),
                  feature_layer=0, perplexity=10.0, kmeans_n_init=2)
DCFAE_TINY_ARGS = [arg for key, value in DCFAE_TINY.items()
                   for arg in (f"--model.{key}", str(list(value)) if isinstance(value, tuple) else str(value))]

# The budget at which each registered method fits the reliability tests' Digits data in seconds: model
# init_args, and epochs. Every method must have an entry (tests/test_reliability.py checks), so that every
# method added later is covered. "image": the method needs (C, H, W) inputs. "resume_epoch": the epoch
# after which a fit is interrupted, in the clustering phase and after at least one periodic update. "phase_end":
# an epoch whose end switches the method's phase (or its last, for a method of one phase): a fit is also resumed
# from a checkpoint saved at that epoch's last batch.
FAST = {
    "AEKMeans": {"model": {"hidden_dims": [64, 64]}, "epochs": 4, "resume_epoch": 2, "phase_end": 1},
    "DEC": {"model": {"hidden_dims": [64, 64], "pretrain_epochs": 3, "update_interval": 5, "kmeans_n_init": 3},
            "epochs": 7, "resume_epoch": 4, "phase_end": 2},
    "IDEC": {"model": {"hidden_dims": [64, 64], "pretrain_epochs": 3, "update_interval": 5, "kmeans_n_init": 3},
             "epochs": 7, "resume_epoch": 4, "phase_end": 2},
    "CM": {"model": {"optimizer": partial(torch.optim.Adam, lr=0.01, eps=1e-3)}, "epochs": 8, "resume_epoch": 4,
           "phase_end": 3},
    # AECM: alpha 10 as configs/aecm/digits.yaml. With alpha = 1 (no Dirichlet prior) clusters collapse in the
    # joint phase and which ones survive hangs on rounding (issue 8): see tests/test_aecm.py.
    # The pretraining with the default (the authors') SGD on the summed MSE: with Adam there, the float32 DDP and
    # single-process fits part in the first joint epoch (the 2 fits' parameters equal to 6e-7 until then).
    "AECM": {"model": {"hidden_dims": [64, 64, 128], "init": "pre", "pretrain_epochs": 3, "cm_epochs": 1,
                       "alpha": 10.0}, "epochs": 6, "resume_epoch": 4, "phase_end": 3},
    "DCFAE": {"model": {"latent_dim": 4, "embedding_dim": 3, "channels": [4, 8], "discriminator_channels": [4, 8],
                        "dense_dims": [16], "feature_layer": 0, "perplexity": 10.0, "kmeans_n_init": 3,
                        "fae_epochs": 2, "norm": "group"}, "epochs": 4, "resume_epoch": 2, "phase_end": 1,
              "image": True},
    "DEKM": {"model": {"hidden_dims": [64, 64], "pretrain_epochs": 6, "update_interval": 5, "kmeans_n_init": 3,
                       "weight_init": "glorot", "tol": 0.0}, "epochs": 9, "resume_epoch": 7, "phase_end": 5},
    "DPGMM": {"model": {"hidden_dims": [64, 64, 128], "pretrain_epochs": 5, "update_interval": 7}, "epochs": 8,
              "resume_epoch": 6, "phase_end": 4},
    # SAE: three greedy stages of 2 epochs, then fine-tuning; interrupted in the middle of the third stage
    "SAE": {"model": {"hidden_dims": [64, 64], "layer_epochs": 2, "lr_step": 20, "kmeans_n_init": 3}, "epochs": 8,
            "resume_epoch": 4, "phase_end": 3},
    # variants: a registered method ("method") with other settings, run through the same checks
    "DEC (target batch)": {"method": "DEC", "model": {"hidden_dims": [64, 64], "pretrain_epochs": 3,
                                                    "kmeans_n_init": 3, "target": "batch", "tol": 0.0},
                           "epochs": 7, "resume_epoch": 4, "phase_end": 2},
}
FAST["DCFAE (similarity batches)"] = {**FAST["DCFAE"], "method": "DCFAE",
                                      "model": {**FAST["DCFAE"]["model"], "similarity_batches": 2}}
