"""Benchmark of DPGMM (deep model selection, Lim 2024): the K it finds from K_init = 1 and K_init = 30.

    # training runs (results merge by data set, seed, K_init and settings; reruns replace their own row)
    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/dpgmm.py train --data usps --seeds 0 1 2 --epochs 10
    # model selection on fixed pretrained embeddings (no training): the K each birth/merge setting finds
    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/dpgmm.py select --data digits usps coil20 mnist

Stages:
1. pretrain the d-500-500-2000-10 autoencoder once per data set and seed (AEKMeans, Adam 1e-3, batch 256),
   cached under benchmarks/work/dpgmm/ (git-ignored) and shared by the runs, as DEC/IDEC/DEKM share theirs;
2. ``train``: ``dcl fit --config configs/dpgmm/<data>.yaml`` from that autoencoder with each K_init (CLI, CSV
   logger); writes benchmarks/results/dpgmm_<data>.json / .md (K found, ACC/NMI/ARI on the rectangular matching,
   wall time, budget; mean and std over seeds) and, for USPS, benchmarks/results/dpgmm_k_over_training.png;
   the baseline with the true K is k-means (10 restarts) on the same autoencoder's code. One budget per file: the
   data set's default pretraining and clustering epochs (PRETRAIN_EPOCHS, CLUSTER_EPOCHS) keep the plain name,
   other pretraining epochs add ``_p<N>`` to it and other clustering epochs ``_e<N>`` (the plot's name likewise);
3. ``select``: ``DPGMM.select_on`` (DP-GMM from K_init, 10 birth/merge rounds, refit) on the fixed embeddings of
   the data set's PRETRAIN_EPOCHS autoencoder for each (bic_penalty, min_gain); writes
   benchmarks/results/dpgmm_selection.json / .md (it takes no --pretrain-epochs, --epochs or --set).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from pathlib import Path

import torch
import yaml

from results_table import mean_std_text  # benchmarks/ is on sys.path when a script here runs

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "work" / "dpgmm"
RESULTS = ROOT / "benchmarks" / "results"
DATA_DIR = os.environ.get("DCL_DATA", str(ROOT.parent / "shared" / "data"))
K_TRUE = {"digits": 10, "usps": 10, "coil20": 20, "mnist": 10}
PRETRAIN_EPOCHS = {"digits": 50, "usps": 50, "coil20": 200, "mnist": 20}  # CPU budget (paper-style: 200)
CLUSTER_EPOCHS = {"digits": 30, "usps": 10, "coil20": 50, "mnist": 5}  # train's default: the recorded budgets


def datamodule(data: str):
    if data == "digits":
        from dcl.datamodules.digits import Digits
        return Digits(batch_size=256)
    if data == "usps":
        from dcl.datamodules.usps import USPS
        return USPS(data_dir=DATA_DIR, batch_size=256)
    if data == "coil20":
        from dcl.datamodules.coil20 import COIL20
        return COIL20(data_dir=DATA_DIR, image_size=28, flatten=True, batch_size=256)
    from dcl.datamodules.mnist import MNIST
    return MNIST(data_dir=DATA_DIR, batch_size=256)


def pretrain(data: str, epochs: int, seed: int) -> tuple[Path, float | None]:
    """The autoencoder checkpoint (cached) and its pretraining wall time (None when not recorded)."""
    import lightning.pytorch as pl

    from dcl.methods.ae_kmeans import AEKMeans

    ckpt = WORK / f"ae_{data}_e{epochs}_s{seed}.ckpt"
    if not ckpt.is_file():
        t0 = time.time()
        pl.seed_everything(seed)
        dm = datamodule(data)
        dm.setup()
        model = AEKMeans(n_clusters=K_TRUE[data], input_shape=dm.input_shape)
        trainer = pl.Trainer(max_epochs=epochs, logger=False, enable_progress_bar=False, enable_checkpointing=False,
                             check_val_every_n_epoch=epochs, default_root_dir=str(WORK))
        trainer.fit(model, dm)
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(ckpt)
        ckpt.with_suffix(".wall").write_text(f"{time.time() - t0:.1f}")
    wall = ckpt.with_suffix(".wall")
    return ckpt, float(wall.read_text()) if wall.is_file() else None


def embedding(data: str, ckpt: Path):
    from dcl.methods.dpgmm import DPGMM

    dm = datamodule(data)
    dm.setup()
    model = DPGMM(input_shape=dm.input_shape, pretrained=str(ckpt))
    with torch.no_grad():
        z = model.embed(dm.batch_transform(dm.x))
    return model, z, dm.y


def ae_kmeans(data: str, ckpt: Path, seed: int) -> dict:
    """The baseline with the true K on the same autoencoder: k-means (10 restarts) on its code."""
    from dcl.cluster import kmeans
    from dcl.metrics import clustering_scores

    _, z, y = embedding(data, ckpt)
    labels = kmeans(z, K_TRUE[data], n_init=10, seed=seed).labels
    return {"k": K_TRUE[data], **clustering_scores(labels, y)}


def run(data: str, ckpt: Path, k_init: int, epochs: int, seed: int, settings: dict, extra: list[str]) -> dict:
    from dcl.cli import main

    tag = "".join(f"_{k}{_value_text(v)}" for k, v in sorted(settings.items()))
    name = f"{data}_k{k_init}_s{seed}_e{epochs}{tag}"
    out = WORK / name
    t0 = time.time()
    main(["fit", "--config", str(ROOT / "configs" / "dpgmm" / f"{data}.yaml"), "--seed_everything", str(seed),
          *(["--data.init_args.data_dir", DATA_DIR] if data != "digits" else []),
          "--model.init_args.pretrained", str(ckpt), "--model.init_args.k_init", str(k_init),
          *(a for k, v in settings.items() for a in (f"--model.init_args.{k}", str(v))),
          "--trainer.max_epochs", str(epochs), "--trainer.check_val_every_n_epoch", str(max(1, epochs // 3)),
          "--trainer.callbacks", "[]", "--trainer.enable_checkpointing", "false",
          "--trainer.enable_progress_bar", "false", "--trainer.logger", "lightning.pytorch.loggers.CSVLogger",
          "--trainer.logger.save_dir", str(out), "--trainer.logger.name", name, *extra])
    wall = time.time() - t0
    logdir = sorted((out / name).glob("version_*"))[-1]
    scores = json.loads((logdir / "final_scores.json").read_text())
    k_per_epoch: dict[int, float] = {}
    with open(logdir / "metrics.csv") as f:
        for row in csv.DictReader(f):
            if row.get("train/k"):
                k_per_epoch[int(row["epoch"])] = float(row["train/k"])
    return {"k_init": k_init, "settings": settings, "seed": seed, "epochs": epochs, "wall_s": round(wall, 1),
            **scores, "k_per_epoch": [k_per_epoch[e] for e in sorted(k_per_epoch)]}


def _number_or_text(v: str):
    """A --set value: ints stay ints, other numbers are floats, anything else stays text (decoder_input mean)."""
    if v.lstrip("-").isdigit():
        return int(v)
    try:
        return float(v)
    except ValueError:
        return v


def _value_text(v) -> str:
    return f"{v:g}" if isinstance(v, (int, float)) else str(v)


def _settings_text(settings: dict) -> str:
    return ", ".join(f"{k} {_value_text(v)}" for k, v in sorted(settings.items())) or "config"


def render_train(res: dict) -> list[str]:
    data, k_true = res["dataset"], res["k_true"]
    lines = [f"# DPGMM on {data} (K_true = {k_true})", "", res["budget"], "",
             "Per run (K found = live components at the end; ACC on the rectangular matching when K != K_true):", "",
             "| K_init | settings | seed | K found | ACC | NMI | ARI | wall (s) |", "|---|---|---|---|---|---|---|---|"]
    runs = sorted(res["runs"], key=lambda r: (_settings_text(r["settings"]), r["k_init"], r["seed"]))
    for r in runs:
        lines.append(f"| {r['k_init']} | {_settings_text(r['settings'])} | {r['seed']} | {r['k']} | {r['acc']:.4f} | "
                     f"{r['nmi']:.4f} | {r['ari']:.4f} | {r['wall_s']} |")
    lines += ["", "Mean ± std over seeds:", "",
              "| method | K_init | settings | seeds | K found | ACC | NMI | ARI |", "|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((_settings_text(r["settings"]), r["k_init"]), []).append(r)
    for (settings, k_init), rs in groups.items():
        lines.append(f"| DPGMM | {k_init} | {settings} | {len(rs)} | {mean_std_text([r['k'] for r in rs], '{:.1f}')} "
                     f"({', '.join(str(r['k']) for r in rs)}) | "
                     + " | ".join(mean_std_text([r[m] for r in rs]) for m in ("acc", "nmi", "ari")) + " |")
    base = list(res["ae_kmeans_true_k"].values())
    if base:
        lines.append(f"| AE + k-means (true K, same autoencoders) | - | - | {len(base)} | {k_true} | "
                     + " | ".join(mean_std_text([b[m] for b in base]) for m in ("acc", "nmi", "ari")) + " |")
    lines += ["", "K per epoch (after each epoch's birth/merge step):", "",
              *(f"- K_init {r['k_init']}, {_settings_text(r['settings'])}, seed {r['seed']}: "
                f"{[int(k) for k in r['k_per_epoch']]}" for r in runs), ""]
    lines += [line for note in res["notes"] for line in (note, "")]  # one paragraph each
    return lines


def plot(runs: list[dict], settings: dict, data: str, k_true: int, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for r in runs:
        if r["seed"] == 0 and r["settings"] == settings:
            ax.plot(range(len(r["k_per_epoch"]) + 1), [r["k_init"], *r["k_per_epoch"]], marker="o", ms=3,
                    label=f"K_init = {r['k_init']} (final K = {r['k']})")
    ax.axhline(k_true, color="gray", ls="--", lw=1, label=f"true K = {k_true}")
    ax.set_xlabel("epoch of the clustering phase (0: K_init)")
    ax.set_ylabel("K (live components)")
    ax.set_title(f"DPGMM on {data}: K over training (seed 0)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _recorded(path: Path, args) -> dict:
    """The results file at ``path`` ({} when there is none). Exits when it holds another budget (clustering and
    pretraining epochs): its rows are kept, not replaced by this one's."""
    doc = json.loads(path.read_text()) if path.is_file() else {}
    budget = (doc.get("epochs"), doc.get("pretrain_epochs"))
    if doc and budget != (args.epochs, args.pretrain_epochs):
        raise SystemExit(f"dpgmm.py: {path.name} holds runs of {budget[0]} clustering epochs after {budget[1]} "
                         f"pretraining epochs, not {args.epochs} after {args.pretrain_epochs}; move it aside to "
                         "start it over")
    return doc


def budget_suffix(data: str, pretrain_epochs: int, epochs: int) -> str:
    """The results' file name suffix: none at the data set's default budget, else ``_p<N>`` for another pretraining
    and ``_e<N>`` for another clustering phase (one budget per file)."""
    return ("" if pretrain_epochs == PRETRAIN_EPOCHS[data] else f"_p{pretrain_epochs}") + \
        ("" if epochs == CLUSTER_EPOCHS[data] else f"_e{epochs}")


def train(args) -> None:
    data = args.data[0]
    suffix = budget_suffix(data, args.pretrain_epochs, args.epochs)
    path = RESULTS / f"dpgmm_{data}{suffix}.json"
    res = _recorded(path, args)  # (checked before any fit)
    import inspect

    from dcl.methods.dpgmm import DPGMM

    config = yaml.safe_load((ROOT / "configs" / "dpgmm" / f"{data}.yaml").read_text())["model"]["init_args"]
    defaults = inspect.signature(DPGMM).parameters
    # the model selection knobs, recorded explicitly (a config's values may change later)
    settings = {k: float(config.get(k, defaults[k].default)) for k in ("bic_penalty", "min_gain", "gamma")}
    settings["decoder_input"] = config.get("decoder_input", defaults["decoder_input"].default)
    settings.update(args.set or [])
    notes = res.get("notes") or ["The paper (arXiv 2412.08940) evaluates on MIT67 / CIFAR100 features; it has no "
                                 f"figure for {data}."]  # and any added by hand since
    runs = res.get("runs", [])
    baseline = res.get("ae_kmeans_true_k", {})
    walls = res.get("pretrain_wall_s", {})
    for seed in args.seeds:
        ckpt, walls[str(seed)] = pretrain(data, args.pretrain_epochs, seed)
        if str(seed) not in baseline:
            baseline[str(seed)] = ae_kmeans(data, ckpt, seed)
        for k_init in args.k_inits:
            new = run(data, ckpt, k_init, args.epochs, seed, settings, args.extra)
            # rows another process wrote meanwhile (runs of other settings or seeds side by side) are kept
            on_disk = _recorded(path, args)
            if on_disk:
                runs = on_disk["runs"]
                baseline = {**on_disk.get("ae_kmeans_true_k", {}), **baseline}
                walls = {**on_disk.get("pretrain_wall_s", {}), **walls}
            runs = [r for r in runs if (r["seed"], r["k_init"], r["settings"]) != (seed, k_init, settings)] + [new]
            res = {"dataset": data, "k_true": K_TRUE[data], "epochs": args.epochs,
                   "pretrain_epochs": args.pretrain_epochs, "pretrain_wall_s": walls,
                   "budget": (f"CPU, 1 thread; autoencoder pretrained {args.pretrain_epochs} epochs per seed (paper-"
                              f"style schedule: 200), shared by that seed's runs; clustering phase {args.epochs} "
                              f"epochs per run; configs/dpgmm/{data}.yaml otherwise (settings: overrides)"),
                   "runs": runs, "ae_kmeans_true_k": baseline, "notes": notes}
            RESULTS.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(res, indent=2))  # after every run: a long benchmark can be resumed
            path.with_suffix(".md").write_text("\n".join(render_train(res)))
    if data == "usps":
        plot(res["runs"], settings, "USPS", K_TRUE[data], RESULTS / f"dpgmm_k_over_training{suffix}.png")
    print("\n".join(render_train(res)))


def select(args) -> None:
    """Static model selection on the pretrained embeddings: which settings find which K, per data set. Rows
    merge into benchmarks/results/dpgmm_selection.json (a rerun of a setting replaces its row)."""
    from dcl.metrics import clustering_scores

    path = RESULTS / "dpgmm_selection.json"
    rows = json.loads(path.read_text())["rows"] if path.is_file() else []
    key = ("data", "seed", "k_init", "bic_penalty", "min_gain")
    for data in args.data:
        for seed in args.seeds:
            ckpt, _ = pretrain(data, PRETRAIN_EPOCHS[data], seed)
            model, z, y = embedding(data, ckpt)
            for k_init in args.k_inits:
                for penalty in args.penalties:
                    for gain in args.min_gains:
                        torch.manual_seed(seed)
                        model._kmeans_calls = 0  # the k-means seeds (a call counter): the same for every setting
                        model.k_init, model.bic_penalty, model.min_gain = k_init, penalty, gain
                        t0 = time.time()
                        model.select_on(z)
                        labels = model.assign(z).argmax(1)
                        new = {"data": data, "seed": seed, "k_init": k_init, "bic_penalty": penalty,
                               "min_gain": gain, "k": int(model.n_clusters), "k_true": K_TRUE[data],
                               "pretrain_epochs": PRETRAIN_EPOCHS[data], "seconds": round(time.time() - t0, 2),
                               **clustering_scores(labels, y)}
                        rows = [r for r in rows if [r[k] for k in key] != [new[k] for k in key]] + [new]
                        print(new, flush=True)
    path.write_text(json.dumps({"rows": rows}, indent=2))
    datasets = [d for d in K_TRUE if any(r["data"] == d for r in rows)]
    settings = sorted({(r["bic_penalty"], r["min_gain"]) for r in rows})
    lines = ["# DPGMM model selection on fixed pretrained embeddings (no training)", "",
             "`DPGMM.select_on`: DP-GMM from K_init (k-means, or one component), 10 birth/merge rounds, DP-GMM "
             "refit, on the code of the autoencoder pretrained for the stated epochs (AEKMeans, Adam 1e-3, batch "
             "256). Each cell: K found from K_init 1 / K_init 30, one pair per seed.", "",
             "Pretraining epochs: " + ", ".join(f"{d} {PRETRAIN_EPOCHS[d]}" for d in datasets), "",
             "| bic_penalty | min_gain | " + " | ".join(f"{d} (K_true {K_TRUE[d]})" for d in datasets) + " |",
             "|---|---|" + "---|" * len(datasets)]
    for penalty, gain in settings:
        cells = []
        for data in datasets:
            sel = [r for r in rows if (r["data"], r["bic_penalty"], r["min_gain"]) == (data, penalty, gain)]
            seeds = sorted({r["seed"] for r in sel})
            cells.append(", ".join("/".join(str(r["k"]) for r in sorted(sel, key=lambda r: r["k_init"])
                                            if r["seed"] == s) for s in seeds) or "-")
        lines.append(f"| {penalty:g} | {gain:g} | " + " | ".join(cells) + " |")
    lines += ["", "How to read it: the K found falls as the penalty rises, and the penalty that finds about K_true "
              "grows with N (the gain of splitting a non-Gaussian cluster grows like its size, the BIC penalty like "
              "log N); from K_init 30 the greedy merges stop above the K that the births reach from K_init 1. "
              "The configs' bic_penalty values come from this table (and, for USPS, from training runs: "
              "dpgmm_usps.md)."]
    (RESULTS / "dpgmm_selection.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=("train", "select"))
    p.add_argument("--data", nargs="+", default=["usps"], choices=sorted(K_TRUE))
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--k-inits", type=int, nargs="+", default=[1, 30])
    p.add_argument("--pretrain-epochs", type=int, default=None,
                   help="train: autoencoder pretraining epochs (default: per data set, PRETRAIN_EPOCHS)")
    p.add_argument("--epochs", type=int, default=None,
                   help="train: epochs of the clustering phase (default: per data set, CLUSTER_EPOCHS)")
    p.add_argument("--set", nargs=2, action="append", metavar=("NAME", "VALUE"), type=str,
                   help="train: a DPGMM init arg to override, e.g. --set min_gain 0.2 (recorded with the run)")
    p.add_argument("--penalties", type=float, nargs="+", default=[1.0, 2.0, 3.0])
    p.add_argument("--min-gains", type=float, nargs="+", default=[0.0])
    p.add_argument("extra", nargs="*", help="train: more dcl fit arguments")
    args = p.parse_args()
    if args.set:
        args.set = [(k, _number_or_text(v)) for k, v in args.set]
    torch.set_num_threads(1)
    if args.mode == "train":
        if len(args.data) != 1:
            p.error("train takes one --data")
        args.pretrain_epochs = args.pretrain_epochs or PRETRAIN_EPOCHS[args.data[0]]
        args.epochs = args.epochs or CLUSTER_EPOCHS[args.data[0]]
        train(args)
    else:
        # select's table is of each data set's PRETRAIN_EPOCHS autoencoder, and it trains nothing
        given = [flag for flag, v in (("--pretrain-epochs", args.pretrain_epochs), ("--epochs", args.epochs),
                                      ("--set", args.set)) if v is not None]
        if given:
            p.error(f"select takes no {', '.join(given)}: it runs on the autoencoders of PRETRAIN_EPOCHS "
                    f"({', '.join(f'{d} {e}' for d, e in PRETRAIN_EPOCHS.items())}) and trains nothing")
        select(args)


if __name__ == "__main__":
    main()
