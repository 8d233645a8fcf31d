"""Mixed precision on this CPU: a training step in float32 against bf16 and float16 autocast (what Lightning's
``bf16-mixed`` and ``16-mixed`` do on a CPU), and whether PyTorch finds native low-precision arithmetic here
(``torch.ops.mkldnn._is_mkldnn_bf16_supported`` / ``_fp16_``: AVX512-BF16, AVX512-FP16 or AMX).

* ``mlp``: DEC/IDEC's d-500-500-2000-10 autoencoder, a reconstruction step on USPS-shaped batches of 256,
* ``dcfae``: DCFAE's phase-1 generator step (residual conv encoder, decoder, discriminator features) with the
  Digits config's networks on 8x8 images, batches of 64.

Median over ``--steps`` steps after 3 warm-up steps, precisions alternating for ``--rounds`` rounds.

    python benchmarks/cpu_mixed_precision.py --threads 2

Writes benchmarks/results/cpu_mixed_precision.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PRECISIONS = {"32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def make(name: str):
    """(module, parameters, loss of a batch, batches)."""
    torch.manual_seed(0)
    if name == "mlp":
        from dcl.nets import MLPAutoencoder
        model = MLPAutoencoder((256,), 10)
        batches = [torch.rand(256, 256) for _ in range(4)]
        return model, list(model.parameters()), lambda x: F.mse_loss(model(x)[1], x), batches
    if name == "dcfae":
        import yaml

        from dcl.methods.dcfae import DCFAE
        args = yaml.safe_load((ROOT / "configs/dcfae/digits.yaml").read_text())["model"]["init_args"]
        model = DCFAE(n_clusters=10, input_shape=(1, 8, 8),
                      **{k: v for k, v in args.items() if not isinstance(v, dict)})  # not the optimizers
        batches = [torch.rand(64, 1, 8, 8) for _ in range(4)]
        return model, list(model.fae.generator_parameters()), lambda x: model.generator_loss(x)[0], batches
    raise ValueError(name)


def step_ms(name: str, dtype, steps: int) -> float:
    model, params, loss_of, batches = make(name)
    opt = torch.optim.Adam(params, lr=1e-3)
    times = []
    for i in range(steps + 3):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=dtype) if dtype is not None else nullcontext():
            loss = loss_of(batches[i % len(batches)])
        opt.zero_grad()
        loss.float().backward()
        opt.step()
        if i >= 3:
            times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--cases", nargs="+", default=["mlp", "dcfae"])
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    results = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cores": os.cpu_count(),
               "cpu_capability": torch.backends.cpu.get_cpu_capability(),
               "native_bf16": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
               "native_fp16": bool(torch.ops.mkldnn._is_mkldnn_fp16_supported()), "cases": {}}
    for name in args.cases:
        rows = {prec: [] for prec in PRECISIONS}
        for _ in range(args.rounds):
            for prec, dtype in PRECISIONS.items():
                rows[prec].append(step_ms(name, dtype, args.steps))
        results["cases"][name] = {prec: statistics.median(v) for prec, v in rows.items()}
        print(name, results["cases"][name], flush=True)
    (RESULTS / "cpu_mixed_precision.json").write_text(json.dumps(results, indent=2))
    lines = [f"# Mixed precision on this CPU ({results['cpu_capability']}, native bf16: {results['native_bf16']}, "
             f"native fp16: {results['native_fp16']}; torch {results['torch']}, {results['threads']} threads)", "",
             "| case | 32-true ms/step | bf16-mixed ms/step | 16-mixed ms/step |", "|---|---|---|---|"]
    for name, r in results["cases"].items():
        lines.append(f"| {name} | {r['32-true']:.1f} | {r['bf16-mixed']:.1f} ({r['bf16-mixed'] / r['32-true']:.1f}x) | "
                     f"{r['16-mixed']:.1f} ({r['16-mixed'] / r['32-true']:.1f}x) |")
    lines += ["", "Autocast on the CPU as Lightning's `bf16-mixed` / `16-mixed` run it. Without native bfloat16 / "
              "float16 arithmetic PyTorch converts and emulates; dcl then warns at the start of a CPU fit in mixed "
              "precision (`dcl.method.warn_if_precision_is_emulated`). `python benchmarks/cpu_mixed_precision.py`"]
    (RESULTS / "cpu_mixed_precision.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
