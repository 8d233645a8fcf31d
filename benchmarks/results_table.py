"""Run a method x data set grid with N seeds through the ``dcl`` CLI and tabulate it beside the papers' figures.

Each run is ``python -m dcl.cli fit --config configs/<method>/<dataset>.yaml --seed_everything <seed>`` in its own
subprocess (cwd: the repository root, so the configs' ``data_dir: ../shared/data`` resolves), with its own
``--trainer.default_root_dir`` under ``--work`` and any budget overrides. The CLI writes ``final_scores.json``
at the end of fit (``dcl.cli.DCLCLI.after_fit``); this script reads it, times the run (wall clock) and takes its
peak resident memory from ``os.wait4`` (the child's own ``ru_maxrss``, i.e. ``getrusage(RUSAGE_CHILDREN)``
restricted to that child; CPU RAM of the process tree, not GPU memory).

Writes, under ``--out`` (default ``benchmarks/results``):

- ``<name>.json``: every run (scores, status, wall time, peak memory, the exact command) and the summary;
- ``<name>.csv``: one row per method x data set: ACC / NMI / ARI mean and std (in %), K, wall time, peak memory,
  the paper's figures;
- ``table.md`` (or ``<name>.md`` with ``--name``): the README table, ours beside the paper's.

Examples::

    # the proof that it works: two methods on Digits, one seed, a tiny budget (about a minute on 1 CPU core)
    python benchmarks/results_table.py --methods ae_kmeans dec --datasets digits --seeds 1 \\
        --set trainer.max_epochs=20 --set dec:model.init_args.pretrain_epochs=10 \\
        --set dec:model.init_args.update_interval=10

    # the full grid (every config that exists), 3 seeds, the configs' own budgets, on a GPU machine
    python benchmarks/results_table.py --seeds 3 --threads 8 --nice 0 --timeout 7200

``--set KEY=VALUE`` adds ``--KEY VALUE`` to every run; ``--set METHOD:KEY=VALUE`` or
``--set METHOD/DATASET:KEY=VALUE`` only to those runs. A grid cell without a config is recorded as
``missing_config`` (and shown as "no config"), never silently dropped. ``--merge`` keeps the runs of an existing
``<name>.json`` that this invocation does not redo, so a grid can be filled in piece by piece;
``--render-only`` rebuilds the CSV and the table from the JSON file without running anything.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from dcl.results import mean_std, mean_std_cell  # (dcl results: the same statistics of run folders)

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("acc", "nmi", "ari")

#: The papers' figures, in % (ACC, NMI; ARI where reported), by (config method name, config data set name).
#: Only numbers that were read from the paper or the official code's README (see /work/shared/METHODS.md).
PAPER: dict[tuple[str, str], dict] = {
    ("dec", "mnist"): {"acc": 84.30, "source": "Xie et al. 2016 (DEC), ICML"},
    ("idec", "mnist"): {"acc": 88.06, "nmi": 86.72, "source": "Guo et al. 2017 (IDEC), IJCAI"},
    ("idec", "usps"): {"acc": 76.05, "nmi": 78.46, "source": "Guo et al. 2017 (IDEC), IJCAI"},
    ("dekm", "mnist"): {"acc": 95.75, "nmi": 91.06, "source": "DEKM official README, mean of 3 runs"},
    ("dekm", "usps"): {"acc": 79.75, "nmi": 82.23, "source": "DEKM official README, mean of 3 runs"},
    ("dekm", "coil20"): {"acc": 69.03, "nmi": 80.06, "source": "DEKM official README, mean of 3 runs"},
}

#: Display names, in table order; config names not listed here are shown as they are, after these.
METHOD_NAMES = {"ae_kmeans": "AE + k-means", "dec": "DEC", "idec": "IDEC", "dekm": "DEKM", "cm": "CM",
                "aecm": "AE-CM", "dpgmm": "DP-GMM (alpha-JS)", "dcfae": "DCFAE"}
DATASET_NAMES = {"digits": "Digits", "mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "usps": "USPS",
                 "coil20": "COIL-20", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "stl10": "STL-10"}


# -- the grid ----------------------------------------------------------------------------------------------------
def discover(configs: Path) -> tuple[list[str], list[str]]:
    """Every method folder and every data set name that has at least one config."""
    methods = sorted(p.name for p in configs.iterdir() if p.is_dir() and any(p.glob("*.yaml")))
    datasets = sorted({f.stem for m in methods for f in (configs / m).glob("*.yaml")})
    return _ordered(methods, METHOD_NAMES), _ordered(datasets, DATASET_NAMES)


def _ordered(names, known: dict) -> list[str]:
    order = list(known)
    return sorted(names, key=lambda n: (order.index(n) if n in order else len(order), n))


def parse_sets(items: list[str]) -> list[tuple[str | None, str | None, str, str]]:
    """``[METHOD[/DATASET]:]KEY=VALUE`` -> (method, dataset, key, value)."""
    out = []
    for item in items:
        scope, _, assignment = item.rpartition(":") if ":" in item.split("=", 1)[0] else ("", "", item)
        key, eq, value = assignment.partition("=")
        if not eq or not key:
            raise SystemExit(f"results_table: --set {item!r} is not [METHOD[/DATASET]:]KEY=VALUE")
        method, _, dataset = scope.partition("/")
        out.append((method or None, dataset or None, key.lstrip("-"), value))
    return out


def overrides_for(sets, method: str, dataset: str) -> list[str]:
    args = []
    for m, d, key, value in sets:
        if (m is None or m == method) and (d is None or d == dataset):
            args += [f"--{key}", value]
    return args


# -- one run -----------------------------------------------------------------------------------------------------
def run_one(method: str, dataset: str, seed: int, args, sets) -> dict:
    config = args.configs / method / f"{dataset}.yaml"
    record = {"method": method, "dataset": dataset, "seed": seed, "config": _rel(config)}
    if not config.is_file():
        return {**record, "status": "missing_config"}
    run_dir = (args.work / method / dataset / f"seed{seed}").resolve()
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    cmd = ["--config", str(config.relative_to(ROOT)), "--seed_everything", str(seed),  # (the shuffle's seed too)
           "--trainer.enable_progress_bar", "false"]
    if args.keep_logger:  # the config's logger (W&B), writing into the run's folder
        cmd += ["--trainer.logger.init_args.save_dir", str(run_dir)]
    else:
        cmd += ["--trainer.logger", "false"]
    record["overrides"] = overrides_for(sets, method, dataset)
    record.update(dcl_fit([*cmd, *record["overrides"]], run_dir, threads=args.threads, nice=args.nice,
                          timeout=args.timeout))
    if not args.keep_checkpoints:
        for ckpt in run_dir.rglob("*.ckpt"):
            ckpt.unlink()
    return record


def dcl_fit(fit_args: list[str], run_dir: Path, threads: int | None = None, nice: int = 0,
            timeout: float | None = None) -> dict:
    """``python -m dcl.cli fit <fit_args>`` in its own process (cwd: the repository root), writing under
    ``run_dir`` and its output to ``run_dir/output.log``. Returns the command, wall time, return code, peak
    memory, ``status`` (ok / failed / timeout) and, when ok, the final scores (ACC / NMI / ARI, K)."""
    cmd = [sys.executable, "-m", "dcl.cli", "fit", *fit_args, "--trainer.default_root_dir", str(run_dir)]
    env = dict(os.environ, WANDB_MODE=os.environ.get("WANDB_MODE", "offline"), PYTHONUNBUFFERED="1")
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    log = run_dir / "output.log"

    def preexec():  # own process group (so a timeout kills the whole tree) and lower priority
        os.setsid()
        if nice:
            os.nice(nice)

    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, preexec_fn=preexec)
        status, rusage, timed_out = _wait(proc, timeout)
    wall = time.perf_counter() - start
    rc = os.waitstatus_to_exitcode(status) if status is not None else None
    record = {"command": " ".join(cmd), "log": _rel(log), "wall_s": round(wall, 2), "returncode": rc,
              "peak_rss_mb": round(rusage.ru_maxrss / 1024, 1) if rusage else None}
    scores_files = sorted(run_dir.rglob("final_scores.json"), key=lambda p: p.stat().st_mtime)
    if timed_out:
        record["status"] = "timeout"
    elif rc != 0 or not scores_files:
        record["status"] = "failed"
        record["error"] = _tail(log)
    else:
        scores = json.loads(scores_files[-1].read_text())
        record["status"] = "ok"
        record.update({k: scores[k] for k in (*METRICS, "k", "k_used") if k in scores})
    return record


def fit_config(config: str, run_dir: Path, seed: int, extra: list[str], threads: int | None = None) -> dict:
    """:func:`dcl_fit` of one config (a path relative to the repository) with one seed, without a logger, a
    progress bar or validation passes, reading the local data folder (``DCL_DATA``, default ``../shared/data``)
    for every data set but Digits (it ships with scikit-learn). Exits with the command's error when it fails.
    The seed seeds the training shuffle too (the data's ``seed`` follows ``seed_everything``; until 2026-12-03 it
    stayed 0, and the runs recorded until then shuffled every seed in seed 0's order)."""
    data_dir = [] if "digits" in config else ["--data.init_args.data_dir",
                                              os.environ.get("DCL_DATA", str(ROOT.parent / "shared" / "data"))]
    record = dcl_fit(["--config", str(ROOT / config), *data_dir, "--seed_everything", str(seed),
                      "--trainer.check_val_every_n_epoch", "100000", "--trainer.logger", "false",
                      "--trainer.enable_progress_bar", "false", *extra], run_dir, threads=threads)
    if record["status"] != "ok":
        raise SystemExit(f"{record['command']} {record['status']}:\n{record.get('error', '')}")
    return record


def _wait(proc: subprocess.Popen, timeout: float | None):
    """Wait for ``proc`` with ``os.wait4`` (its own resource usage); kill its process group on timeout."""
    deadline = None if timeout is None else time.monotonic() + timeout
    timed_out = False
    while True:
        pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: tell Popen
            return status, rusage, timed_out
        if deadline is not None and time.monotonic() > deadline and not timed_out:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)
        time.sleep(0.2)


def _tail(path: Path, lines: int = 6) -> str:
    text = path.read_text(errors="replace").strip().splitlines()
    return "\n".join(text[-lines:])


def _rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


# -- summary and rendering -----------------------------------------------------------------------------------------
def mean_std_text(values: list[float], fmt: str = "{:.4f}") -> str:
    """``mean ± std`` with the population std (the per-benchmark reports over seeds); the mean alone for one value."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return fmt.format(mean)
    return (fmt + " ± " + fmt).format(mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values)))


def summarize(runs: list[dict], methods: list[str], datasets: list[str]) -> list[dict]:
    rows = []
    for method in methods:
        for dataset in datasets:
            cell = [r for r in runs if r["method"] == method and r["dataset"] == dataset]
            if not cell:
                continue
            ok = [r for r in cell if r["status"] == "ok"]
            row = {"method": method, "dataset": dataset, "runs": len(cell), "ok": len(ok),
                   "status": "ok" if ok else cell[0]["status"]}
            for m in METRICS:
                mean, std = mean_std([100 * r[m] for r in ok if m in r])
                row[f"{m}_mean"], row[f"{m}_std"] = _round(mean), _round(std)
            row["k_mean"] = _round(mean_std([r["k"] for r in ok if "k" in r])[0])
            row["wall_s_mean"] = _round(mean_std([r["wall_s"] for r in ok])[0], 1)
            row["peak_rss_mb_max"] = max((r["peak_rss_mb"] for r in ok if r.get("peak_rss_mb")), default=None)
            paper = PAPER.get((method, dataset), {})
            for m in METRICS:
                row[f"paper_{m}"] = paper.get(m)
            row["paper_source"] = paper.get("source")
            rows.append(row)
    return rows


def _round(x, digits: int = 2):
    return None if x is None else round(x, digits)


def render_markdown(rows: list[dict], methods: list[str], datasets: list[str], meta: dict) -> str:
    by = {(r["method"], r["dataset"]): r for r in rows}
    datasets = [d for d in datasets if any((m, d) in by for m in methods)]
    methods = [m for m in methods if any((m, d) in by for d in datasets)]
    head = ["Method"] + [DATASET_NAMES.get(d, d) for d in datasets]
    lines = ["ACC / NMI in % (mean ± sample std over seeds); the paper's figure in parentheses where it reports one.",
             "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in methods:
        cells = [METHOD_NAMES.get(m, m)]
        for d in datasets:
            r = by.get((m, d))
            ref = PAPER.get((m, d), {})
            paper = ""
            if "acc" in ref or "nmi" in ref:
                pa = f"{ref['acc']:.2f}" if "acc" in ref else "—"
                pn = f"{ref['nmi']:.2f}" if "nmi" in ref else "—"
                paper = f" ({pa} / {pn})"
            if r is None:
                cells.append("not run" + paper if paper else "")
                continue
            if r["status"] == "missing_config":
                cells.append("no config" + paper)
                continue
            if not r["ok"]:
                cells.append(r["status"] + paper)
                continue
            acc, nmi = (mean_std_cell(r[f"{m}_mean"], r[f"{m}_std"], "{:.1f}") for m in ("acc", "nmi"))
            text = f"{acc} / {nmi}" + paper
            if r["ok"] < r["runs"]:
                text += f" [{r['ok']}/{r['runs']} runs ok]"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Wall time per run (s) and peak CPU memory of the run's process (MB):", "",
              "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in methods:
        cells = [METHOD_NAMES.get(m, m)]
        for d in datasets:
            r = by.get((m, d))
            ok = r is not None and r["ok"]
            cells.append(f"{r['wall_s_mean']:.0f} s, {r['peak_rss_mb_max']:.0f} MB" if ok else "")
        lines.append("| " + " | ".join(cells) + " |")
    sources = sorted({PAPER[m, d]["source"] for m in methods for d in datasets if (m, d) in PAPER})
    cell_budgets = {}  # (method, dataset) -> the overrides its runs used
    for r in meta["runs"]:
        if r["status"] == "ok" and r["method"] in methods and r["dataset"] in datasets:
            cell_budgets.setdefault((r["method"], r["dataset"]), set()).add(_short(r.get("overrides", [])))
    if cell_budgets and set().union(*cell_budgets.values()) != {"the config's"}:
        lines += ["", "Budget of each cell (overrides of the config; `max_epochs` includes the first phase):", "",
                  "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for m in methods:
            lines.append("| " + " | ".join([METHOD_NAMES.get(m, m)] + ["; ".join(sorted(cell_budgets.get((m, d), [])))
                                                                      for d in datasets]) + " |")
    lines += ["", f"Seeds: {_seeds_text(meta['runs'], methods, datasets)}. Machine: {meta['machine']}; "
              f"{meta['threads']} thread(s) per run"
              + (f", load average {meta['load_average_at_start']} at start" if "load_average_at_start" in meta else "")
              + f"; {meta['date']}.",
              "Paper figures: " + ("; ".join(sources) if sources else "none for these cells") + "."]
    return "\n".join(lines) + "\n"


def _seeds_text(runs: list[dict], methods: list[str], datasets: list[str]) -> str:
    """The seeds of the table's ok runs, and the cells that lack some of them: a ``--merge`` or ``--render-only``
    table holds the runs of earlier invocations too, whose seeds the last invocation's ``meta`` does not name."""
    cells = {}
    for r in runs:
        if r["status"] == "ok" and r["method"] in methods and r["dataset"] in datasets:
            cells.setdefault((r["method"], r["dataset"]), set()).add(r["seed"])
    every = sorted(set().union(*cells.values())) if cells else []
    fewer = [f"{METHOD_NAMES.get(m, m)} {DATASET_NAMES.get(d, d)} {sorted(seeds)}"
             for (m, d), seeds in cells.items() if len(seeds) < len(every)]
    return f"{every}" + (f" (only {'; '.join(fewer)})" if fewer else "")


def _short(overrides: list[str]) -> str:
    """``--model.init_args.pretrain_epochs 5 --trainer.max_epochs 10`` -> ``pretrain_epochs 5, max_epochs 10``;
    settings that only silence or speed up evaluation are left out."""
    pairs = [(k.rsplit(".", 1)[-1], v) for k, v in zip(overrides[::2], overrides[1::2])
             if k != "--trainer.check_val_every_n_epoch"]
    return ", ".join(f"{k} {v}" for k, v in pairs) or "the config's"


CSV_FIELDS = ["method", "dataset", "runs", "ok", "status", "acc_mean", "acc_std", "nmi_mean", "nmi_std", "ari_mean",
              "ari_std", "k_mean", "wall_s_mean", "peak_rss_mb_max", "paper_acc", "paper_nmi", "paper_ari",
              "paper_source"]


def write_outputs(out: Path, name: str, runs: list[dict], methods, datasets, meta: dict) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    rows = summarize(runs, methods, datasets)
    paths = {"json": out / f"{name}.json", "csv": out / f"{name}.csv",
             "md": out / ("table.md" if name == "grid" else f"{name}.md")}
    paths["json"].write_text(json.dumps({"meta": meta, "summary": rows, "runs": runs}, indent=2) + "\n")
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    paths["md"].write_text(render_markdown(rows, methods, datasets, {**meta, "runs": runs}))
    return paths


# -- main ----------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict[str, Path]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", help="config folders under configs/ (default: all)")
    parser.add_argument("--datasets", nargs="+", help="config names, e.g. digits usps (default: all)")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds: 0, 1, ..., N-1 (default 3)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="[METHOD[/DATASET]:]KEY=VALUE",
                        help="a CLI override for the runs, e.g. trainer.max_epochs=20 (repeatable)")
    parser.add_argument("--configs", type=Path, default=ROOT / "configs")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--name", default="grid", help="output file stem (default grid -> grid.json, table.md)")
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "work" / "grid",
                        help="run folders (logs, final_scores.json)")
    parser.add_argument("--threads", type=int, default=1, help="OMP/MKL threads per run (default 1)")
    parser.add_argument("--nice", type=int, default=10, help="niceness of the runs (default 10)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per run before it is killed")
    parser.add_argument("--keep-logger", action="store_true", help="keep the configs' logger (W&B, offline)")
    parser.add_argument("--keep-checkpoints", action="store_true")
    parser.add_argument("--merge", action="store_true", help="keep other runs of an existing <name>.json")
    parser.add_argument("--render-only", action="store_true",
                        help="run nothing: rebuild <name>.csv and the table from <name>.json (e.g. after "
                             "editing PAPER)")
    args = parser.parse_args(argv)
    args.configs = args.configs.resolve()
    if args.render_only:
        saved = json.loads((args.out / f"{args.name}.json").read_text())
        runs = saved["runs"]
        methods = _ordered(sorted({r["method"] for r in runs}), METHOD_NAMES)
        datasets = _ordered(sorted({r["dataset"] for r in runs}), DATASET_NAMES)
        paths = write_outputs(args.out, args.name, runs, methods, datasets, saved["meta"])
        print("wrote " + ", ".join(_rel(p) for p in paths.values()))
        return paths
    sets = parse_sets(args.set)

    all_methods, all_datasets = discover(args.configs)
    methods = args.methods or all_methods
    datasets = args.datasets or all_datasets
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    load_at_start = round(os.getloadavg()[0], 1)  # wall times are only comparable on an otherwise idle machine
    runs = []
    for method in methods:
        for dataset in datasets:
            for seed in seeds:
                r = run_one(method, dataset, seed, args, sets)
                runs.append(r)
                scores = " ".join(f"{m.upper()}={100 * r[m]:.2f}" for m in METRICS if m in r)
                extra = f" {r['wall_s']:.1f}s {r['peak_rss_mb']:.0f}MB" if r.get("wall_s") is not None else ""
                print(f"{method:>10} {dataset:<14} seed {seed}: {r['status']} {scores}{extra}", flush=True)
                if r["status"] == "failed":
                    print("    " + r["error"].replace("\n", "\n    "), flush=True)
                if r["status"] == "missing_config":
                    break  # one record for the cell, not one per seed
    meta = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": " ".join([Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)]),
            "seeds": seeds, "set": args.set, "threads": args.threads, "load_average_at_start": load_at_start,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {_device()}",
            "python": platform.python_version(), "torch": _version("torch"), "lightning": _version("lightning")}
    out_json = args.out / f"{args.name}.json"
    if args.merge and out_json.is_file():
        done = {(r["method"], r["dataset"], r["seed"]) for r in runs}
        old = json.loads(out_json.read_text())
        runs = [r for r in old["runs"] if (r["method"], r["dataset"], r["seed"]) not in done] + runs
        methods = _ordered(sorted({r["method"] for r in runs}), METHOD_NAMES)
        datasets = _ordered(sorted({r["dataset"] for r in runs}), DATASET_NAMES)
    paths = write_outputs(args.out, args.name, runs, methods, datasets, meta)
    print("wrote " + ", ".join(_rel(p) for p in paths.values()))
    return paths


def _version(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return None


def _device() -> str:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    except Exception:
        return "unknown device"


if __name__ == "__main__":
    main()
