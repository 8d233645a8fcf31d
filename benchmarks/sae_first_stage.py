"""The first greedy stage of ``SAE`` on MNIST x 0.02 (the DEC paper's input), seed 0, batch 256: the first encoder
layer's weight std and the stage's loss after k steps. Prints only; the figures are in
``benchmarks/results/sae_mnist.md``.

    python benchmarks/sae_first_stage.py                    # the loss and burn-in of the code it runs (1000)
    python benchmarks/sae_first_stage.py --burnin 0         # no momentum burn-in
    python benchmarks/sae_first_stage.py --burnin -1        # code from before SAE had momentum_burnin (aad7f30~1)
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import lightning.pytorch as pl

from dcl.datamodules.mnist import MNIST
from dcl.methods.sae import SAE

ROOT = Path(__file__).resolve().parents[1]
REPORTED = (1, 5, 10, 20, 50, 100, 200, 400, 800, 1000, 1200, 1600, 2000, 3000)


class Watch(pl.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step in REPORTED:
            print(f"step {trainer.global_step}: loss {outputs['loss'].item():.4g}, first layer's weight std "
                  f"{pl_module.encoders[0].weight.std().item():.4g}, momentum "
                  f"{trainer.optimizers[0].param_groups[0]['momentum']:.3f}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--burnin", type=int, default=1000, help="momentum_burnin; -1: leave the setting out")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--data-dir", default=os.environ.get("DCL_DATA", str(ROOT.parent / "shared" / "data")),
                   help="MNIST's folder (default: $DCL_DATA, else ../shared/data beside the repository)")
    args = p.parse_args()
    pl.seed_everything(0)
    data = MNIST(data_dir=args.data_dir, scale=5.1, batch_size=256)
    model = SAE(n_clusters=10, input_shape=(784,), **({} if args.burnin < 0 else {"momentum_burnin": args.burnin}))
    trainer = pl.Trainer(max_steps=args.steps, logger=False, enable_progress_bar=False, enable_checkpointing=False,
                         enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                         accelerator="cpu", callbacks=[Watch()])
    trainer.fit(model, data)


if __name__ == "__main__":
    main()
