"""Time ``dcl.cluster.kmeans`` against ``sklearn.cluster.KMeans`` (Lloyd) on 70,000 x 10 float32.

Two datasets: ``blobs`` (make_blobs, 10 centers) and ``gaussian`` (isotropic random normal data,
no cluster structure: many Lloyd iterations).  K=10, same ``n_init`` for both libraries, sklearn's
stopping rule for both (``tol=1e-4`` relative to the mean variance, on the squared center shift).

Timing: after one warm-up call of each, ``--repeats`` rounds that each time ours and then
sklearn's back to back (so that both see the same background load); the best time of each is kept.
For every thread count in ``--threads`` both libraries are limited to it (torch.set_num_threads
and threadpoolctl for sklearn's OpenMP/BLAS).  The load average before and after each case is
recorded: on a shared machine a loaded core makes multi-threaded timings noisy for both.

Besides the time and inertia ratios the JSON has the total number of Lloyd iterations over all
restarts for both libraries (the restarts start from different k-means++ seeds, so on data without
structure the totals differ by chance) and the time per Lloyd iteration (total time / total
iterations, seeding included).  Writes ``benchmarks/results/kmeans_vs_sklearn_<device>.json``.

    OMP_NUM_THREADS=2 python benchmarks/kmeans_vs_sklearn.py [--threads 1 2] [--device cuda] [--n-init 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import importlib
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

_km = importlib.import_module("dcl.cluster.kmeans")


def _datasets(n: int, d: int, k: int, seed: int) -> dict[str, np.ndarray]:
    from sklearn.datasets import make_blobs

    blobs, _ = make_blobs(n_samples=n, n_features=d, centers=k, random_state=seed)
    gauss = np.random.default_rng(seed).standard_normal((n, d))
    return {"blobs": blobs.astype(np.float32), "gaussian": gauss.astype(np.float32)}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class _IterCounter:
    """Counts the Lloyd iterations of every restart of both libraries (instrumentation only)."""

    def __init__(self) -> None:
        import sklearn.cluster._kmeans as skm

        self.skm, self.ours, self.sk = skm, [], []
        orig_sk, orig_ours = skm._kmeans_single_lloyd, _km._lloyd_batch

        def sk_single(*a, **kw):
            out = orig_sk(*a, **kw)
            self.sk.append(int(out[3]))
            return out

        def ours_batch(*a):
            on_done = a[-1]

            def wrapped(run, c, lab, n_iter):
                self.ours.append(int(n_iter))
                on_done(run, c, lab, n_iter)

            return orig_ours(*a[:-1], wrapped)

        skm._kmeans_single_lloyd, _km._lloyd_batch = sk_single, ours_batch

    def reset(self) -> None:
        self.ours.clear()
        self.sk.clear()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--n-samples", type=int, default=70_000)
    p.add_argument("--n-features", type=int, default=10)
    p.add_argument("--n-clusters", type=int, default=10)
    p.add_argument("--n-init", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, nargs="+", default=None,
                   help="thread counts to time (default: torch's current setting, e.g. from OMP_NUM_THREADS)")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/kmeans_vs_sklearn_<dev>.json)")
    args = p.parse_args()

    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score
    from threadpoolctl import threadpool_limits

    dev_tag = torch.device(args.device).type
    out_path = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"kmeans_vs_sklearn_{dev_tag}.json"
    threads = args.threads or [torch.get_num_threads()]
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
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "timing": "best of `repeats` rounds, ours then sklearn back to back in each round, after a warm-up",
        },
        "runs": [],
    }
    if dev_tag == "cuda":
        results["config"]["gpu"] = torch.cuda.get_device_name()
    try:
        import sklearn

        results["config"]["sklearn"] = sklearn.__version__
    except Exception:  # pragma: no cover
        pass

    counter = _IterCounter()
    data = _datasets(args.n_samples, args.n_features, args.n_clusters, args.seed)
    for nt in threads:
        torch.set_num_threads(nt)
        run = {"threads": nt, "cases": {}}
        with threadpool_limits(limits=nt):
            for name, X in data.items():
                xt = torch.from_numpy(X).to(args.device)

                def ours_fn():
                    return kmeans(xt, args.n_clusters, n_init=args.n_init, seed=args.seed)

                def sk_fn():
                    return KMeans(args.n_clusters, n_init=args.n_init, random_state=args.seed, algorithm="lloyd").fit(X)

                load_before = os.getloadavg()
                ours, sk = ours_fn(), sk_fn()  # warm-up
                t_ours = t_sk = float("inf")
                for _ in range(args.repeats):
                    counter.reset()
                    _sync(args.device)
                    t0 = time.perf_counter()
                    ours = ours_fn()
                    _sync(args.device)
                    t_ours = min(t_ours, time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    sk = sk_fn()
                    t_sk = min(t_sk, time.perf_counter() - t0)
                it_ours, it_sk = sum(counter.ours), sum(counter.sk)
                case = {
                    "ours_s": t_ours,
                    "sklearn_s": t_sk,
                    "time_ratio_ours_over_sklearn": t_ours / t_sk,
                    "ours_inertia": ours.inertia,
                    "sklearn_inertia": float(sk.inertia_),
                    "inertia_ratio_ours_over_sklearn": ours.inertia / float(sk.inertia_),
                    "ours_n_iter_best_run": ours.n_iter,
                    "sklearn_n_iter_best_run": int(sk.n_iter_),
                    "ours_lloyd_iters_all_runs": it_ours,
                    "sklearn_lloyd_iters_all_runs": it_sk,
                    "ours_ms_per_iter": t_ours / max(it_ours, 1) * 1e3,
                    "sklearn_ms_per_iter": t_sk / max(it_sk, 1) * 1e3,
                    "ari_vs_sklearn": float(adjusted_rand_score(sk.labels_, ours.labels.cpu().numpy())),
                    "loadavg_1m_before_after": [load_before[0], os.getloadavg()[0]],
                }
                run["cases"][name] = case
                print(
                    f"threads {nt} {name:9s} ours {t_ours * 1e3:8.1f} ms  sklearn {t_sk * 1e3:8.1f} ms  "
                    f"time ratio {case['time_ratio_ours_over_sklearn']:.3f}  "
                    f"inertia ratio {case['inertia_ratio_ours_over_sklearn']:.6f}  ARI {case['ari_vs_sklearn']:.4f}  "
                    f"iters {it_ours}/{it_sk}  load {case['loadavg_1m_before_after']}",
                    flush=True,
                )
        results["runs"].append(run)

    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
