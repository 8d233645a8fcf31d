"""Epoch time of a dcl fit against a plain PyTorch loop doing the same training.

Same model (d-500-500-2000-10 MLP autoencoder), same data (USPS in memory, 9298 x 256), batch 256, Adam 1e-3,
MSE, same number of epochs; dcl runs ``AEKMeans`` through a Lightning Trainer with logging on and no validation,
the loop shuffles with ``torch.randperm`` and slices. The loop runs twice: with Adam's fused kernel, as dcl builds it
(``dcl.optim.make_optimizer``), so that the ratio is the framework's overhead alone, and with PyTorch's default
Adam, as a plain loop is usually written. They alternate for ``--rounds`` rounds; reports the median epoch time of
each (first epoch of a round excluded) and the ratios.

    python benchmarks/overhead_vs_plain_torch.py --epochs 6 --rounds 3 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback

from dcl.datamodules.usps import USPS
from dcl.methods.ae_kmeans import AEKMeans
from dcl.nets import MLPAutoencoder

ROOT = Path(__file__).resolve().parents[1]
DATA = os.environ.get("DCL_DATA", str(ROOT.parent / "shared" / "data"))


class EpochTimer(Callback):
    def __init__(self):
        self.times = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        self.times.append(time.perf_counter() - self.t0)


def plain(x: torch.Tensor, epochs: int, batch: int, fused: bool | None) -> list[float]:
    torch.manual_seed(0)
    model = MLPAutoencoder(x.shape[1:], 10)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused)
    times = []
    for epoch in range(epochs):
        t0 = time.perf_counter()
        perm = torch.randperm(len(x))
        for i in range(0, len(x), batch):
            xb = x[perm[i:i + batch]]
            _, x_hat = model(xb)
            loss = F.mse_loss(x_hat, xb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - t0)
    return times


def ours(dm: USPS, epochs: int) -> list[float]:
    pl.seed_everything(0)
    model = AEKMeans(10, dm.input_shape)
    timer = EpochTimer()
    trainer = pl.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                         callbacks=[timer], accelerator="cpu")
    trainer.fit(model, dm)
    return timer.times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=6,
                   help="epochs of each fit, at least 2 (the first of each fit warms up and is not timed)")
    p.add_argument("--rounds", type=int, default=3, help="plain / dcl pairs, interleaved (machine noise)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: the least noisy on a shared machine)")
    args = p.parse_args()
    if args.epochs < 2 or args.rounds < 1:
        p.error("give --epochs 2 or more (the first epoch of each fit is a warm-up, left out of the medians) and "
                "--rounds 1 or more")
    torch.set_num_threads(args.threads)
    dm = USPS(data_dir=DATA, batch_size=256)
    x = dm.batch_transform(dm.x)
    result = {"plain": {"epoch_times_s": []}, "plain_default_adam": {"epoch_times_s": []}, "dcl": {"epoch_times_s": []}}
    for _ in range(args.rounds):  # interleaved, so that all see the same machine; first epoch of each warms up
        result["plain"]["epoch_times_s"] += plain(x, args.epochs, 256, fused=True)[1:]
        result["plain_default_adam"]["epoch_times_s"] += plain(x, args.epochs, 256, fused=None)[1:]
        result["dcl"]["epoch_times_s"] += ours(dm, args.epochs)[1:]
    for name in result:
        result[name]["median_s"] = statistics.median(result[name]["epoch_times_s"])
        print(name, result[name]["median_s"], flush=True)
    result["ratio_dcl_over_plain"] = result["dcl"]["median_s"] / result["plain"]["median_s"]
    result["ratio_dcl_over_plain_default_adam"] = result["dcl"]["median_s"] / result["plain_default_adam"]["median_s"]
    result["setup"] = (f"USPS 9298x256, MLP 256-500-500-2000-10 AE, batch 256, Adam (plain: fused, as dcl builds it; "
                       f"plain_default_adam: PyTorch's default implementation), {args.rounds} interleaved "
                       f"rounds of {args.epochs} epochs each (medians of the epochs after the first), "
                       f"{torch.get_num_threads()} torch thread(s)")
    out = ROOT / "benchmarks" / "results" / "overhead_vs_plain_torch.json"
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, dict)}, indent=2))


if __name__ == "__main__":
    main()
