"""Where a GPU k-means spends its time: ``dcl.cluster.kmeans`` on 70,000 x 10 Gaussian float32 rows (K = 10, 10
restarts, the case of ``kmeans_vs_sklearn.py`` where many small Lloyd iterations make kernel launches dominate),
timed in parts (k-means++ seeding, the batched Lloyd loop and its number of iterations; 3 repeats after a warm-up),
then one call under ``torch.profiler`` (CPU and CUDA), its operators by host time and by GPU time. Prints only.

    python benchmarks/kmeans_profile.py            # on a machine with a CUDA GPU
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # allow running from a checkout without installing
    sys.path.insert(0, str(ROOT))

KM = importlib.import_module("dcl.cluster.kmeans")
from kmeans_vs_sklearn import _datasets  # noqa: E402  (the same data as that comparison's)


def timed(fn, acc: dict, key: str):
    def wrapper(*args, **kwargs):
        torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        torch.cuda.synchronize()
        acc[key] += time.perf_counter() - t
        return out

    return wrapper


def main() -> None:
    if not torch.cuda.is_available():
        raise SystemExit("kmeans_profile.py: no CUDA GPU here; it profiles the GPU's Lloyd loop")
    x = torch.from_numpy(_datasets(70000, 10, 10, seed=0)["gaussian"]).cuda()
    KM.kmeans(x, 10, n_init=10, seed=0)  # warm-up
    parts = {"seeding": 0.0, "lloyd": 0.0}
    originals = KM._kmeans_plusplus, KM._lloyd_batch, KM._e_step_batch
    iters = [0]

    def counting_e_step(*args, **kwargs):
        iters[0] += 1
        return originals[2](*args, **kwargs)

    KM._kmeans_plusplus = timed(originals[0], parts, "seeding")
    KM._lloyd_batch = timed(originals[1], parts, "lloyd")
    KM._e_step_batch = counting_e_step
    try:
        for _ in range(3):
            parts.update(seeding=0.0, lloyd=0.0)
            iters[0] = 0
            torch.cuda.synchronize()
            t = time.perf_counter()
            KM.kmeans(x, 10, n_init=10, seed=0)
            torch.cuda.synchronize()
            total = time.perf_counter() - t
            print(f"total {1e3 * total:.1f} ms, seeding {1e3 * parts['seeding']:.1f} ms, Lloyd "
                  f"{1e3 * parts['lloyd']:.1f} ms over {iters[0]} batched iterations (and final E-steps): "
                  f"{1e3 * parts['lloyd'] / max(1, iters[0]):.3f} ms each", flush=True)
    finally:
        KM._kmeans_plusplus, KM._lloyd_batch, KM._e_step_batch = originals
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        KM.kmeans(x, 10, n_init=10, seed=0)
        torch.cuda.synchronize()
    table = prof.key_averages()
    print(table.table(sort_by="self_cpu_time_total", row_limit=30, max_name_column_width=40))
    print(table.table(sort_by="self_cuda_time_total", row_limit=15, max_name_column_width=40))


if __name__ == "__main__":
    import argparse

    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    main()
