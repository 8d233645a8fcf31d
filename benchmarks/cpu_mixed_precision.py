"""Mixed precision on this CPU: a training step in float32 against bfloat16 autocast (Lightning's ``bf16-mixed``,
and its ``16-mixed`` too, which Lightning switches to bfloat16 on a CPU) and float16 autocast (what only a
``MixedPrecision("16-mixed", "cpu")`` plugin given explicitly runs), and whether PyTorch finds native low-precision
arithmetic here (``torch.ops.mkldnn._is_mkldnn_bf16_supported`` / ``_fp16_``: AVX512-BF16, AVX512-FP16 or AMX).

* ``mlp``: DEC/IDEC's d-500-500-2000-10 autoencoder, a reconstruction step on USPS-shaped batches of 256,
* ``dcfae``: DCFAE's phase-1 generator step (residual conv encoder, decoder, discriminator features) with the
  Digits config's networks on 8x8 images, batches of 64,
* ``dcfae_mnist``: the same with the MNIST config's networks (channels 32-64-128) on 28x28 images.

Median over ``--steps`` steps after 3 warm-up steps (fewer past ``--budget`` seconds a measurement), precisions
alternating for ``--rounds`` rounds.

    python benchmarks/cpu_mixed_precision.py --threads 2

Writes benchmarks/results/cpu_mixed_precision_<capability>.{json,md}, one record per kind of CPU (PyTorch's
``torch.backends.cpu.get_cpu_capability()``: ``avx2``, ``avx512``, ...): the answer differs by CPU, so a run on
one kind keeps the others' records.
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
#: DCFAE's cases: the config whose networks the step uses, and its images' shape
DCFAE_CASES = {"dcfae": ("digits", (1, 8, 8)), "dcfae_mnist": ("mnist", (1, 28, 28))}
PRECISIONS = {"32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def make(name: str):
    """(module, parameters, loss of a batch, batches)."""
    torch.manual_seed(0)
    if name == "mlp":
        from dcl.nets import MLPAutoencoder
        model = MLPAutoencoder((256,), 10)
        batches = [torch.rand(256, 256) for _ in range(4)]
        return model, list(model.parameters()), lambda x: F.mse_loss(model(x)[1], x), batches
    if name in DCFAE_CASES:
        import yaml

        from dcl.methods.dcfae import DCFAE
        data, shape = DCFAE_CASES[name]
        args = yaml.safe_load((ROOT / f"configs/dcfae/{data}.yaml").read_text())["model"]["init_args"]
        model = DCFAE(n_clusters=10, input_shape=shape,
                      **{k: v for k, v in args.items() if not isinstance(v, dict)})  # not the optimizers
        batches = [torch.rand(64, *shape) for _ in range(4)]
        return model, list(model.fae.generator_parameters()), lambda x: model.generator_loss(x)[0], batches
    raise ValueError(name)


def cpu_features() -> list[str]:
    """The low-precision arithmetic this CPU announces (Linux's /proc/cpuinfo flags; none read elsewhere)."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return []
    return sorted(set(flags.split(":", 1)[1].split()) & {"avx512_bf16", "avx512_fp16", "amx_bf16", "amx_fp16"})


def step_ms(name: str, dtype, steps: int, budget_s: float) -> tuple[float, int]:
    """(median ms of the timed steps, how many were timed): ``steps`` after 3 warm-up ones, or fewer once
    ``budget_s`` has passed (one warm-up and one timed step at least), so that a precision a hundred times slower
    still ends in minutes."""
    model, params, loss_of, batches = make(name)
    opt = torch.optim.Adam(params, lr=1e-3)
    times, start, i = [], time.perf_counter(), 0
    while len(times) < steps and not (times and time.perf_counter() - start > budget_s):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=dtype) if dtype is not None else nullcontext():
            loss = loss_of(batches[i % len(batches)])
        opt.zero_grad()
        loss.float().backward()
        opt.step()
        if i >= 3 or (i >= 1 and time.perf_counter() - start > budget_s):
            times.append(time.perf_counter() - t0)
        i += 1
    return 1e3 * statistics.median(times), len(times)


def write(results: dict) -> None:
    """``cpu_mixed_precision_<capability>.{json,md}``, this kind of CPU's record."""
    stem = f"cpu_mixed_precision_{results['cpu_capability'].lower()}"
    (RESULTS / f"{stem}.json").write_text(json.dumps(results, indent=2))
    flags = ", ".join(results["cpu_features"]) or "no" if "cpu_features" in results else "unrecorded"
    lines = [f"# Mixed precision on this CPU ({results['cpu_capability']}, native bf16: {results['native_bf16']}, "
             f"native fp16: {results['native_fp16']}, {flags} low-precision flags; torch {results['torch']}, "
             f"{results['threads']} threads)", "",
             "| case | 32-true ms/step | bf16-mixed ms/step | float16 autocast ms/step |", "|---|---|---|---|"]
    for name, r in results["cases"].items():
        timed = results.get("timed_steps", {}).get(name, {})

        def cell(prec: str) -> str:  # the time, its ratio to 32-true's, and how few steps when the budget cut it
            n = timed.get(prec)
            few = f", {n} step{'s' * (n != 1)}" if n is not None and n < results["rounds"] * results["steps"] else ""
            return f"{r[prec]:.1f}" + ("" if prec == "32-true" else f" ({r[prec] / r['32-true']:.1f}x{few})")
        lines.append(f"| {name} | {cell('32-true')} | {cell('bf16-mixed')} | {cell('16-mixed')} |")
    lines += ["", "Autocast on the CPU as Lightning runs it: `bf16-mixed` (and `16-mixed`, which Lightning turns into "
              "`bf16-mixed` on a CPU) in bfloat16; float16 only with a `MixedPrecision(\"16-mixed\", \"cpu\")` "
              "plugin. In brackets: the step's time over 32-true's. dcl warns at the start of a CPU fit in bfloat16 "
              "without native bfloat16 arithmetic (PyTorch converts and emulates) and in float16 on any CPU "
              "(`dcl.method.warn_if_cpu_mixed_precision_is_slow`). `python benchmarks/cpu_mixed_precision.py`"]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--budget", type=float, default=60.0, help="seconds a measurement may take before it stops early")
    p.add_argument("--cases", nargs="+", default=["mlp", *DCFAE_CASES])
    p.add_argument("--render-only", action="store_true", help="rewrite every record's .md from its .json, run nothing")
    args = p.parse_args()
    if args.render_only:
        for path in sorted(RESULTS.glob("cpu_mixed_precision_*.json")):
            write(json.loads(path.read_text()))
        return
    torch.set_num_threads(args.threads)
    results = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cores": os.cpu_count(),
               "cpu_capability": torch.backends.cpu.get_cpu_capability(),
               "native_bf16": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
               "native_fp16": bool(torch.ops.mkldnn._is_mkldnn_fp16_supported()), "cpu_features": cpu_features(),
               "rounds": args.rounds, "steps": args.steps, "cases": {}, "timed_steps": {}}
    for name in args.cases:
        rows = {prec: [] for prec in PRECISIONS}
        timed = {prec: 0 for prec in PRECISIONS}
        for _ in range(args.rounds):
            for prec, dtype in PRECISIONS.items():
                ms, n = step_ms(name, dtype, args.steps, args.budget)
                rows[prec].append(ms)
                timed[prec] += n
        results["cases"][name] = {prec: statistics.median(v) for prec, v in rows.items()}
        results["timed_steps"][name] = timed
        print(name, results["cases"][name], timed, flush=True)
    write(results)


if __name__ == "__main__":
    main()
