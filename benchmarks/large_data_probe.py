"""The measures of ``benchmarks/results/large_data_cpu.md``'s second probe, one per call, in this process (run each in a
fresh one, with ``OMP_NUM_THREADS=1``; to compare with an older tree, put a copy of it laid out as the installed
package, ``dcl/``, ``dcl/methods/``, ``dcl/datamodules/``, first on ``PYTHONPATH``)::

    python benchmarks/large_data_probe.py data DIR            # x{N}.npy, y{N}.npy (float32 blobs), x64_1000000.npy
    python benchmarks/large_data_probe.py fit fit --config ae_paper.yaml ...   # dcl fit, timing two methods
    python benchmarks/large_data_probe.py kmeans blobs|gauss [N]                 # N: 1000000 by default
    python benchmarks/large_data_probe.py load X.npy [Y.npy]
    python benchmarks/large_data_probe.py labels

``fit`` times ``AutoencoderMethod.check_reconstruction`` and ``ClusteringMethod.embed_all`` (wall and CPU seconds)
around ``dcl.cli.main``; the others print the CPU time and the peak RSS over the measured call (``getrusage`` minus
the RSS just before it) and a digest of the result, to check that old and new agree.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import resource
import time


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def data(folder: str) -> None:
    """The first probe's Gaussian blobs: 10 centers in 50 dimensions, float32, labels 0..9."""
    import numpy as np

    for n in (100_000, 1_000_000):
        rng = np.random.default_rng(0)
        c = rng.normal(0, 5, (10, 50)).astype(np.float32)
        y = rng.integers(0, 10, n)
        x = (c[y] + rng.normal(0, 1, (n, 50))).astype(np.float32)
        np.save(f"{folder}/x{n}.npy", x)
        np.save(f"{folder}/y{n}.npy", y)
    np.save(f"{folder}/x64_1000000.npy", x.astype(np.float64))


def fit(argv: list[str]) -> None:
    import dcl.method as method
    from dcl.cli import main

    timings: dict[str, list] = {"check_reconstruction": [], "embed_all": []}

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                timings[name].append((round(time.perf_counter() - wall, 2), round(time.process_time() - cpu, 2)))
        return wrapper

    method.AutoencoderMethod.check_reconstruction = timed("check_reconstruction",
                                                          method.AutoencoderMethod.check_reconstruction)
    method.ClusteringMethod.embed_all = timed("embed_all", method.ClusteringMethod.embed_all)
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        main(argv)
    except SystemExit:
        pass
    print(method.__file__, "(wall s, CPU s):", json.dumps(timings), f"fit wall {time.perf_counter() - wall:.1f} s, "
          f"CPU {time.process_time() - cpu:.1f} s, peak RSS {peak_mb():.0f} MB")


def kmeans(kind: str, n: int = 1_000_000) -> None:
    import numpy as np
    import torch
    from sklearn.datasets import make_blobs

    km = importlib.import_module("dcl.cluster.kmeans")
    if kind == "blobs":
        x = make_blobs(n_samples=n, n_features=10, centers=10, random_state=0)[0].astype(np.float32)
    else:
        x = np.random.default_rng(0).standard_normal((n, 10)).astype(np.float32)
    x = torch.from_numpy(x)
    torch.set_num_threads(1)
    before = rss_mb()
    cpu = time.process_time()
    r = km.kmeans(x, 10, n_init=10, seed=0)
    cpu = time.process_time() - cpu
    digest = hashlib.md5(r.centers.numpy().tobytes() + r.labels.numpy().tobytes()).hexdigest()
    print(f"{km.__file__} {kind} {n}: CPU {cpu:.2f} s, peak RSS +{peak_mb() - before:.0f} MB; inertia "
          f"{r.inertia:.10g}, {r.n_iter} iterations, digest {digest}")


def load(path: str, labels: str | None = None) -> None:
    from dcl.datamodules.arrays import Arrays

    before = rss_mb()
    cpu = time.process_time()
    dm = Arrays(path, labels_path=labels, standardize=True)
    dm.setup("fit")
    dm._statistics()
    print(f"{path}: CPU {time.process_time() - cpu:.2f} s, peak RSS +{peak_mb() - before:.0f} MB over {before:.0f} MB; "
          f"{dm.x.dtype}, sum of the first 1000 rows {float(dm.x[:1000].double().sum()):.6f}")


def labels() -> None:
    import numpy as np

    from dcl.datamodule import class_ids

    rng = np.random.default_rng(0)
    n = 1_000_000
    names = np.array(["setosa", "versicolor", "virginica", "NA", ""])
    cases = {"class names (<U10)": names[rng.integers(0, 5, n)],
             "integers as text (-1..9)": rng.integers(-1, 10, n).astype(str),
             "floats as text (0.0..9.0)": (rng.integers(0, 10, n) * 1.0).astype(str),
             "names, object with None": np.array([None if v == "" else v for v in names[rng.integers(0, 5, n)].tolist()],
                                                 dtype=object),
             "integers (int64)": rng.integers(-1, 10, n)}
    for label, y in cases.items():
        cpu = time.process_time()
        ids, _ = class_ids(y, "labels")
        print(f"{label}: CPU {time.process_time() - cpu:.2f} s, digest {hashlib.md5(ids.tobytes()).hexdigest()}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="measure", required=True, metavar="MEASURE")
    sp = sub.add_parser("data", help="write the first probe's blobs into a folder (about 1 GB)")
    sp.add_argument("folder")
    sp = sub.add_parser("fit", help="a dcl command (its arguments, e.g. fit --config X.yaml ...), timing two methods",
                        prefix_chars="\0")  # (every argument is dcl's, --help too)
    sp.add_argument("dcl_args", nargs=argparse.REMAINDER, metavar="DCL_ARGUMENTS")
    sp = sub.add_parser("kmeans", help="k-means (10 restarts) of N points in 10 dimensions")
    sp.add_argument("kind", choices=("blobs", "gauss"), help="make_blobs' 10 centers, or one standard normal")
    sp.add_argument("n", type=int, nargs="?", default=1_000_000, help="the number of points (default 1000000)")
    sp = sub.add_parser("load", help="an Arrays datamodule (standardized) from a .npy file")
    sp.add_argument("x", metavar="X.npy")
    sp.add_argument("y", metavar="Y.npy", nargs="?", default=None, help="its labels")
    sub.add_parser("labels", help="class_ids of 1,000,000 labels of five kinds")
    args = p.parse_args(argv)
    if args.measure == "data":
        data(args.folder)
    elif args.measure == "fit":
        fit(args.dcl_args)
    elif args.measure == "kmeans":
        kmeans(args.kind, args.n)
    elif args.measure == "load":
        load(args.x, args.y)
    else:
        labels()


if __name__ == "__main__":
    main()
