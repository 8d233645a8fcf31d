"""Time ``dcl.cluster.kmeans`` against ``sklearn.cluster.KMeans`` (Lloyd) on 70,000 x 10 float32.

Two datasets: ``blobs`` (make_blobs, 10 centers) and ``gaussian`` (isotropic random normal data,
no cluster structure: many Lloyd iterations).  K=10, same ``n_init`` for both libraries.
For each case and library the best of ``--repeats`` wall-clock timings is kept (after one
warm-up call).  Writes JSON to ``benchmarks/results/kmeans_vs_sklearn_<device>.json``.

    python benchmarks/kmeans_vs_sklearn.py [--device cuda] [--n-init 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # allow running from a checkout without installing
    sys.path.insert(0, str(ROOT))

from dcl.cluster import kmeans  # noqa: E402


def _datasets(n: int, d: int, k: int, seed: int) -> dict[str, np.ndarray]:
    from sklearn.datasets import make_blobs

    blobs, _ = make_blobs(n_samples=n, n_features=d, centers=k, random_state=seed)
    gauss = np.random.default_rng(seed).standard_normal((n, d))
    return {"blobs": blobs.astype(np.float32), "gaussian": gauss.astype(np.float32)}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _best_time(fn, repeats: int, device: str):
    fn()  # warm-up
    best, out = float("inf"), None
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--n-samples", type=int, default=70_000)
    p.add_argument("--n-features", type=int, default=10)
    p.add_argument("--n-clusters", type=int, default=10)
    p.add_argument("--n-init", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/kmeans_vs_sklearn_<dev>.json)")
    args = p.parse_args()

    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    dev_tag = torch.device(args.device).type
    out_path = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"kmeans_vs_sklearn_{dev_tag}.json"
    results = {
        "config": {
            "n_samples": args.n_samples,
            "n_features": args.n_features,
            "n_clusters": args.n_clusters,
            "n_init": args.n_init,
            "repeats": args.repeats,
            "dtype": "float32",
            "device": args.device,
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
        },
        "cases": {},
    }
    if dev_tag == "cuda":
        results["config"]["gpu"] = torch.cuda.get_device_name()
    try:
        import sklearn

        results["config"]["sklearn"] = sklearn.__version__
    except Exception:  # pragma: no cover
        pass

    for name, X in _datasets(args.n_samples, args.n_features, args.n_clusters, args.seed).items():
        xt = torch.from_numpy(X).to(args.device)
        t_ours, ours = _best_time(
            lambda: kmeans(xt, args.n_clusters, n_init=args.n_init, seed=args.seed), args.repeats, args.device
        )
        t_sk, sk = _best_time(
            lambda: KMeans(args.n_clusters, n_init=args.n_init, random_state=args.seed, algorithm="lloyd").fit(X),
            args.repeats,
            "cpu",
        )
        case = {
            "ours_s": t_ours,
            "sklearn_s": t_sk,
            "time_ratio_ours_over_sklearn": t_ours / t_sk,
            "ours_inertia": ours.inertia,
            "sklearn_inertia": float(sk.inertia_),
            "inertia_ratio_ours_over_sklearn": ours.inertia / float(sk.inertia_),
            "ours_n_iter_best_run": ours.n_iter,
            "sklearn_n_iter_best_run": int(sk.n_iter_),
            "ari_vs_sklearn": float(adjusted_rand_score(sk.labels_, ours.labels.cpu().numpy())),
        }
        results["cases"][name] = case
        print(
            f"{name:9s} ours {t_ours * 1e3:8.1f} ms  sklearn {t_sk * 1e3:8.1f} ms  "
            f"time ratio {case['time_ratio_ours_over_sklearn']:.3f}  "
            f"inertia ratio {case['inertia_ratio_ours_over_sklearn']:.6f}  ARI {case['ari_vs_sklearn']:.4f}"
        )

    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
