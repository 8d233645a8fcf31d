"""Tensor operations and host synchronizations per Lloyd iteration of ``dcl.cluster.kmeans``, for both of its
Lloyd paths, counted with ``torch.profiler`` on the CPU (no GPU needed).

On a GPU small Lloyd iterations are bound by kernel launches and synchronizations, not arithmetic; this counts
what each path launches: the CPU path (chunked E-step with the two-``amin`` argmin, incremental M-step that
finds the changed rows with ``nonzero``) and the GPU path (one ``torch.min`` E-step, one-hot GEMM M-step, one
chunk), the latter forced on the CPU. 70,000 x 10 Gaussian float32, K = 10, the 10 restarts batched; the
difference between runs of 30 and 10 iterations (``tol=0``) divided by 20. View-only operations (no kernel)
are not counted; the per-run host bookkeeping is plain Python. Writes
``benchmarks/results/kmeans_ops_per_iteration.json``.

    python benchmarks/kmeans_ops.py
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # allow running from a checkout without installing
    sys.path.insert(0, str(ROOT))

KM = importlib.import_module("dcl.cluster.kmeans")
NO_KERNEL = {  # aten ops that only make views, allocate, or wrap another counted op
    "as_strided", "as_strided_", "view", "_unsafe_view", "_reshape_alias", "reshape", "select", "slice", "narrow",
    "unsqueeze", "unsqueeze_", "squeeze", "squeeze_", "alias", "t", "transpose", "permute", "expand", "flatten",
    "unbind", "split", "chunk", "detach", "detach_", "lift_fresh", "resolve_conj", "resolve_neg", "result_type",
    "empty", "empty_strided", "empty_like", "resize_", "to", "_to_copy", "contiguous", "matmul", "zeros", "ones",
    "full", "zeros_like", "clone", "item", "_local_scalar_dense", "is_nonzero", "where", "index",
}
SYNCS = ("nonzero", "_local_scalar_dense")  # a device -> host copy (also .tolist()/.cpu(): counted apart)


def count(accelerated: bool, iters: int, x: torch.Tensor) -> dict:
    KM._accelerated = lambda t: accelerated
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        KM.kmeans(x, 10, n_init=10, seed=0, max_iter=iters, tol=0.0)
    ops = {e.key[6:]: e.count for e in prof.key_averages() if e.key.startswith("aten::")}
    return {"ops": sum(c for k, c in ops.items() if k not in NO_KERNEL),
            "nonzero": ops.get("nonzero", 0)}


def main() -> None:
    torch.set_num_threads(1)
    x = torch.randn(70000, 10, generator=torch.Generator().manual_seed(0))
    out = {}
    for name, accelerated in (("cpu_path", False), ("gpu_path", True)):
        a, b = count(accelerated, 10, x), count(accelerated, 30, x)
        out[name] = {"ops_per_iteration": round((b["ops"] - a["ops"]) / 20, 1),
                     "nonzero_per_iteration": round((b["nonzero"] - a["nonzero"]) / 20, 1)}
    doc = {"data": "70,000 x 10 Gaussian float32, K = 10, n_init = 10 (one batch), tol = 0",
           "counted": "aten ops that launch work (views excluded), per batched Lloyd iteration; every iteration "
                      "also has one device -> host copy of the runs' counts, changes and shifts",
           "torch": torch.__version__, **out}
    path = ROOT / "benchmarks" / "results" / "kmeans_ops_per_iteration.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    import argparse

    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    main()
