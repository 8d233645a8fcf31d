"""Where the time of a dcl fit goes: the fit of the ClustPy comparison (``dec_idec_usps.py``, ``dcl-estimator``)
under cProfile, split into the model's own work and what the training loop adds around it.

    OMP_NUM_THREADS=1 python benchmarks/profile_fit.py --method DEC

Same call as ``dec_idec_usps.ours_estimator``: ``DeepClusterer`` handed the USPS array, the config's model
arguments, ``target: batch`` and ClustPy's clustering optimizer, 10 pretraining + 10 clustering epochs. Writes
benchmarks/results/profile_fit_<method>.{json,md}. cProfile adds its own cost to every Python call, so the
Python-side shares are upper bounds; the totals are for comparing the parts, not for timing the fit.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DATA = os.environ.get("DCL_DATA", str(ROOT.parent / "shared" / "data"))

#: (label, path suffix of the function's file, function name): the cumulative time of each, as measured.
PARTS = [
    ("autograd backward (the model's)", "~", "run_backward"),  # "~": a built-in (C) function
    ("training_step: forward and loss (the model's)", "dcl/method.py", "training_step"),
    # torch.optim.adam.adam: the dispatcher to whichever implementation runs (dcl builds Adam with fused=True since
    # 2026-12-01: make_optimizer; the per-parameter loop, _single_tensor_adam, is then never called)
    ("optimizer step: Adam's update (the model's)", "torch/optim/adam.py", "adam"),
    ("of Adam's update: its fused kernel (torch._fused_adam_)", "~", "_fused_adam_"),
    ("PyTorch optimizer's per-step accelerator check (any training loop)", "torch/optim/optimizer.py",
     "_accelerator_graph_capture_health_check"),
    ("LightningModule.log (Lightning)", "lightning/pytorch/core/module.py", "log"),
    ("callback hooks (Lightning)", "lightning/pytorch/trainer/call.py", "_call_callback_hooks"),
    ("embedding all samples (k-means init, final labels)", "dcl/method.py", "embed_all"),
]


def cumulative(stats: pstats.Stats, suffix: str, name: str) -> tuple[float, int]:
    """Cumulative seconds and calls of the functions called ``name`` in a file ending with ``suffix`` (``~``: the
    built-ins whose name contains ``name``)."""
    seconds, calls = 0.0, 0
    for (path, _, func), (_, ncalls, _, cum, _) in stats.stats.items():
        if (path.endswith(suffix) and func == name) if suffix != "~" else (path == "~" and name in func):
            seconds, calls = seconds + cum, calls + ncalls
    return seconds, calls


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", default="DEC", choices=("DEC", "IDEC"))
    p.add_argument("--pretrain-epochs", type=int, default=10)
    p.add_argument("--cluster-epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)

    from dcl.datamodules.usps import USPS
    from dcl.estimator import DeepClusterer

    dm = USPS(data_dir=DATA, batch_size=256)
    dm.prepare_data()
    dm.setup("fit")
    x = dm.x.reshape(len(dm.x), -1).numpy().astype(np.float32)
    cfg = yaml.safe_load((ROOT / f"configs/{args.method.lower()}/usps.yaml").read_text())["model"]["init_args"]
    margs = {k: v for k, v in cfg.items() if k not in ("optimizer", "pretrain_optimizer")}
    margs.update(pretrain_epochs=args.pretrain_epochs, tol=0.0, target="batch",
                 optimizer=partial(torch.optim.Adam, lr=1e-4))  # ClustPy's clustering optimizer
    profile = cProfile.Profile()
    t0, c0 = time.perf_counter(), time.process_time()
    profile.enable()
    DeepClusterer(args.method, 10, method_args=margs, max_epochs=args.pretrain_epochs + args.cluster_epochs,
                  batch_size=256, random_state=args.seed, accelerator="cpu").fit(x)
    profile.disable()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    stats = pstats.Stats(profile)
    total = sum(v[2] for v in stats.stats.values())  # all own time: the profiled fit
    parts = [{"part": label, "seconds": round(s, 3), "calls": n, "share": round(s / total, 4)}
             for label, suffix, name in PARTS for s, n in [cumulative(stats, suffix, name)]]
    doc = {"method": args.method, "budget": f"{args.pretrain_epochs} + {args.cluster_epochs} epochs, batch 256",
           "torch": torch.__version__, "threads": 1, "profiled_wall_s": round(wall, 2),
           "profiled_cpu_s": round(cpu, 2), "profiled_total_s": round(total, 2), "parts": parts}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"profile_fit_{args.method.lower()}.json").write_text(json.dumps(doc, indent=2))
    lines = [f"# Where a dcl {args.method} fit spends its time (USPS, {doc['budget']}, 1 thread, under cProfile)", "",
             f"Profiled fit: {wall:.1f} s wall, {cpu:.1f} s CPU. Cumulative time of each part (parts may nest: the "
             "accelerator check runs inside the optimizer step, the fused kernel inside Adam's update, the log calls "
             "inside training_step):", "",
             "| part | seconds | calls | share of the fit |", "|---|---|---|---|"]
    lines += [f"| {q['part']} | {q['seconds']:.2f} | {q['calls']} | {100 * q['share']:.1f} % |" for q in parts]
    lightning = sum(q["share"] for q in parts if q["part"].endswith("(Lightning)"))
    lines += ["", f"Lightning's own calls around the model (log, callback hooks): {100 * lightning:.1f} % of the fit.",
              "", f"Command: `OMP_NUM_THREADS=1 python benchmarks/profile_fit.py {' '.join(sys.argv[1:])}`", ""]
    (RESULTS / f"profile_fit_{args.method.lower()}.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
