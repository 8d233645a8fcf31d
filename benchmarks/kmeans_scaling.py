"""Time and peak memory of embedding + k-means against N (100k, 300k, 1M points of dimension 10, K = 10).

Each N runs in a fresh subprocess so that its peak resident memory (ru_maxrss) is its own. The embedding pass
runs a d-500-500-2000-10 encoder over N x 32 synthetic inputs in chunks (the ordered loader's eval batches), then
k-means (1 restart, chunked distances) clusters the N x 10 codes. Memory should grow linearly with N (the data and
codes themselves), never with N x K x d.

    python benchmarks/kmeans_scaling.py --sizes 100000 300000 1000000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one(n: int) -> dict:
    import torch

    from dcl.cluster import kmeans
    from dcl.nets import MLPAutoencoder

    torch.manual_seed(0)
    centers = torch.randn(10, 32) * 4
    x = centers[torch.randint(0, 10, (n,))] + torch.randn(n, 32)
    encoder = MLPAutoencoder((32,), 10).encoder.eval()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    z = torch.empty(n, 10)
    with torch.no_grad():  # as ClusteringMethod.embed_all: eval batches written into one output buffer
        for i in range(0, n, 4096):
            z[i:i + 4096] = encoder(x[i:i + 4096])
    t_embed = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = kmeans(z, 10, n_init=1, seed=0, max_iter=100)
    t_kmeans = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"n": n, "embed_s": t_embed, "kmeans_s": t_kmeans, "kmeans_iters": res.n_iter,
            "peak_rss_mb": peak / 1024, "rss_before_mb": base / 1024,
            "data_mb": (x.numel() + z.numel()) * 4 / 2**20}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000, 1_000_000], help="the Ns to measure")
    p.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # one N, in the subprocess
    args = p.parse_args()
    if args.one:
        print(json.dumps(one(args.one)))
        return
    rows = []
    for n in args.sizes:
        out = subprocess.run([sys.executable, __file__, "--one", str(n)], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    path = ROOT / "benchmarks" / "results" / "kmeans_scaling.json"
    path.write_text(json.dumps(rows, indent=2))
    lines = ["| N | embed s | k-means s (iters) | peak RSS MB | inputs+codes MB |", "|---|---|---|---|---|"]
    lines += [f"| {r['n']:,} | {r['embed_s']:.1f} | {r['kmeans_s']:.1f} ({r['kmeans_iters']}) | "
              f"{r['peak_rss_mb']:.0f} | {r['data_mb']:.0f} |" for r in rows]
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
