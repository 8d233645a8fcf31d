"""PyTorch's optimizer implementations on the CPU: its default (a Python loop of elementwise kernels per
parameter) against the fused kernel that dcl builds (``dcl.optim.make_optimizer``).

For each case a model trains on real data for ``--warmup`` steps (so that the gradients, and their exact zeros from
dead ReLU units, are those of a real fit), then ``--steps`` more; reported: the median time of the optimizer's
``step()`` alone and of a whole training step (forward, backward, update), per implementation, alternating for
``--rounds`` rounds from the same initial weights.

* ``mlp_adam``: DEC/IDEC's d-500-500-2000-10 autoencoder on USPS (batch 256), Adam lr 1e-3 (their pretraining,
  IDEC's clustering phase),
* ``mlp_sgd``: the same network, SGD lr 0.01 momentum 0.9 (DEC's clustering phase, AE-CM's pretraining),
* ``dcfae_adam``: DCFAE's generator (the MNIST config's residual encoder and decoder) on MNIST (batch 64), Adam
  lr 1e-3 betas (0.5, 0.999), the reconstruction loss.

    python benchmarks/fused_optimizers.py --threads 1 --rounds 3

Writes benchmarks/results/fused_optimizers.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
DATA = os.environ.get("DCL_DATA", str(ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "benchmarks" / "results"
IMPLEMENTATIONS = {"default": None, "fused": True}  # the optimizer's ``fused`` argument


class Case(NamedTuple):
    model: torch.nn.Module
    make: Callable  # (params, fused) -> optimizer
    params_of: Callable  # model -> the parameters it trains
    loss_of: Callable  # (model, batch) -> loss
    batches: list[torch.Tensor]


def case(name: str) -> Case:
    torch.manual_seed(0)
    if name.startswith("mlp"):
        from dcl.datamodules.usps import USPS
        from dcl.nets import MLPAutoencoder

        dm = USPS(data_dir=DATA)
        x = dm.batch_transform(dm.x)[torch.randperm(len(dm.x))]
        if name == "mlp_adam":
            def make(params, fused):
                return torch.optim.Adam(params, lr=1e-3, fused=fused)
        else:
            def make(params, fused):
                return torch.optim.SGD(params, lr=0.01, momentum=0.9, fused=fused)
        return Case(MLPAutoencoder((256,), 10), make, lambda model: model.parameters(),
                    lambda model, xb: F.mse_loss(model(xb)[1], xb),
                    [x[i:i + 256] for i in range(0, len(x) - 255, 256)])
    if name == "dcfae_adam":
        from dcl.datamodules.mnist import MNIST
        from dcl.methods.dcfae import DCFAE

        dm = MNIST(data_dir=DATA, flatten=False)
        x = dm.batch_transform(dm.x[:64 * 40])

        def make(params, fused):
            return torch.optim.Adam(params, lr=1e-3, betas=(0.5, 0.999), fused=fused)
        model = DCFAE(n_clusters=10, input_shape=(1, 28, 28), channels=[32, 64, 128],
                      discriminator_channels=[32, 64, 128])
        return Case(model, make, lambda model: model.fae.generator_parameters(),
                    lambda model, xb: model.generator_loss(xb)[0], [x[i:i + 64] for i in range(0, len(x), 64)])
    raise ValueError(name)


def run(start: Case, fused: bool | None, warmup: int, steps: int) -> dict:
    model = copy.deepcopy(start.model)  # each run from the same initial weights
    opt = start.make(list(start.params_of(model)), fused)
    batches = start.batches
    update, whole = [], []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        opt.zero_grad()
        start.loss_of(model, batches[i % len(batches)]).backward()
        t1 = time.perf_counter()
        opt.step()
        t2 = time.perf_counter()
        if i >= warmup:
            update.append(t2 - t1)
            whole.append(t2 - t0)
    return {"update_ms": 1e3 * statistics.median(update), "step_ms": 1e3 * statistics.median(whole)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", default=["mlp_adam", "mlp_sgd", "dcfae_adam"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=40)
    p.add_argument("--steps", type=int, default=40)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    results = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor() or
               platform.machine(), "cores": os.cpu_count(), "rounds": args.rounds, "warmup": args.warmup,
               "steps": args.steps, "cases": {}}
    for name in args.cases:
        start = case(name)
        rows = {impl: [] for impl in IMPLEMENTATIONS}
        for _ in range(args.rounds):
            for impl, fused in IMPLEMENTATIONS.items():
                rows[impl].append(run(start, fused, args.warmup, args.steps))
        summary = {impl: {k: statistics.median(r[k] for r in rs) for k in ("update_ms", "step_ms")}
                   for impl, rs in rows.items()}
        results["cases"][name] = {"per_round": rows, **summary}
        print(name, summary, flush=True)
    (RESULTS / "fused_optimizers.json").write_text(json.dumps(results, indent=2))
    render(results)


def render(results: dict) -> None:
    lines = [f"# Optimizer update on the CPU: PyTorch's default against the fused kernel (torch {results['torch']}, "
             f"{results['threads']} thread(s), {results['cores']} cores)", "",
             f"Median over {results['steps']} steps after {results['warmup']} warm-up steps of real training, median "
             f"of {results['rounds']} alternating rounds. `python benchmarks/fused_optimizers.py`", "",
             "| case | update ms, default | update ms, fused | update speed-up | training step ms, default | "
             "training step ms, fused | step speed-up |", "|---|---|---|---|---|---|---|"]
    for name, r in results["cases"].items():
        d, f = r["default"], r["fused"]
        lines.append(f"| {name} | {d['update_ms']:.2f} | {f['update_ms']:.2f} | {d['update_ms'] / f['update_ms']:.2f}x "
                     f"| {d['step_ms']:.1f} | {f['step_ms']:.1f} | {d['step_ms'] / f['step_ms']:.2f}x |")
    lines += ["", "Default: `fused` and `foreach` unset, which on CPU tensors is PyTorch's single-tensor loop (several "
              "elementwise kernels per parameter; the square root of Adam's second moment is several times slower "
              "on exact zeros, the entries of dead ReLU units). dcl builds Adam, AdamW and SGD with `fused=True` "
              "unless a config sets `fused` or `foreach` (`dcl.optim.with_fused_kernel`)."]
    (RESULTS / "fused_optimizers.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
