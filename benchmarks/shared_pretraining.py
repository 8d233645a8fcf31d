"""DEC and IDEC from one shared autoencoder pretraining per seed, as the papers do, over several seeds.

For each seed: ``configs/ae_kmeans/<data>.yaml`` pretrains the d-500-500-2000-10 autoencoder (and reports
AE + k-means), then every method in ``--methods`` starts from that run's ``last.ckpt``
(``--model.init_args.pretrained``) with its own config (the authors' defaults) and stops by its own rule
(``tol``) or at ``maxiter`` clustering steps. Every run is a ``dcl fit`` subprocess; a run whose
``result.json`` already exists is not redone and one that was stopped goes on from its last ``resume.ckpt`` (saved
every 10 epochs), so the script can be stopped (or killed) and started again with the same command
(``resumable.py``); a run folder started with other settings (``--maxiter``, a method variant's, an edited config's)
is refused.

    python benchmarks/shared_pretraining.py usps --seeds 0 1 2                 # the papers' budget
    python benchmarks/shared_pretraining.py mnist --seeds 0 --pretrain-epochs 30 --maxiter 4000  # reduced (CPU)
    python benchmarks/shared_pretraining.py mnist --seeds 1 --merge   # add a seed to the recorded ones
    python benchmarks/shared_pretraining.py mnist --recipe dec-keras --seeds 0   # DEC-keras' MNIST pretraining
    python benchmarks/shared_pretraining.py mnist --recipe dec-paper --seeds 0   # the DEC paper's (SAE, 300k steps)
    python benchmarks/shared_pretraining.py mnist --scale 5.1 --seeds 0           # every fit on pixels x 0.02
    python benchmarks/shared_pretraining.py mnist --methods idec idec:gamma=0.0038  # two IDECs from one pretraining

A method given as ``name:key=value,...`` is that method with those ``--model.init_args`` settings: a variant that
starts from the same pretrained autoencoder as the others, with a run folder and a table row of its own.

``--merge`` keeps the seeds already recorded in the results file for the same budget (a seed run again
replaces its record), so seeds can run in separate processes, one after the other or side by side.

Writes benchmarks/results/shared_pretraining_<data>.{json,md} (``..._<data>_p<epochs>`` for a reduced budget,
``..._dec_keras`` for that recipe, ``..._x<scale>`` for a ``--scale``).

Pretraining recipes (``--recipe``): ``shared`` (the configs': Adam 1e-3, 200 epochs, batch 256, Glorot weights: DEKM's
official recipe), ``dec-keras`` (DEC-keras' MNIST recipe: SGD lr 1 momentum 0.9, 300 epochs, batch 256,
``weight_init: fan_in_uniform``) or ``dec-paper`` (the papers' own: the ``SAE`` method, greedy layer-wise with
dropout then fine-tuning, as piiswrong/dec, whose weights IDEC's README uses; ``configs/sae/<data>.yaml``, by default
for its max_epochs; on MNIST every fit of the seed reads the pixels x 0.02 as that code did, and IDEC takes its
paper's gamma 0.1 on them). A ``--pretrain-epochs N`` other than the config's max_epochs scales its ``layer_epochs``
in proportion (the config's layer_epochs x N / its max_epochs, rounded down, at least 1), so that every greedy stage
runs and fine-tuning gets the rest (a checkpoint saved within the greedy stages is refused as a start); an N too
small to hold one epoch per layer pair and one of fine-tuning is refused. Its ``lr_step`` and ``momentum_burnin``
(counted in steps) stay the config's.

``--maxiter`` goes to the methods that take it (DEC, IDEC: a ``maxiter`` setting); the others (AE-CM) run by their own
budget. A method variant's keys, and a ``--maxiter`` that no method of ``--methods`` takes, are checked before any fit.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np
import yaml

from dcl import registry
from resumable import cached_fit, resume_checkpoint_args  # benchmarks/ is on sys.path when a script here runs
from results_table import fit_config

ROOT = Path(__file__).resolve().parents[1]
#: each pretraining recipe: the method whose ``configs/<method>/<data>.yaml`` pretrains, its ``dcl fit`` settings beyond
#: that config, its default epochs, its description, settings of every fit of the seed per data set (the scale), and
#: settings of one method's fits per data set
RECIPES = {
    "shared": ("ae_kmeans", [], 200, "Adam 1e-3, batch 256", {}, {}),
    "dec-keras": ("ae_kmeans", ["--model.init_args.weight_init", "fan_in_uniform", "--model.init_args.optimizer",
                                "torch.optim.SGD", "--model.init_args.optimizer.lr", "1.0",
                                "--model.init_args.optimizer.momentum", "0.9"], 300,
                  "DEC-keras' MNIST recipe: SGD lr 1 momentum 0.9, fan-in uniform init, batch 256", {}, {}),
    "dec-paper": ("sae", [], None, "the DEC paper's: stacked denoising autoencoder trained greedily layer by layer, then "
                  "fine-tuned, SGD momentum 0.9, configs/sae/<data>.yaml (MNIST: lr 0.1, momentum burn-in 1000 "
                  "steps, 4 x 183 + 365 epochs, lr / 10 every 20000 steps, pixels x 0.02; Digits: lr 6.4, 4 x 50 + "
                  "150 epochs)",
                  {"mnist": ["--data.init_args.scale", "5.1"]},
                  # the IDEC paper's gamma on those pixels: the config's 0.00384 is that balance on [0, 1] pixels
                  # (0.1 / 5.1^2), and on pixels x 0.02 it would weigh the clustering loss 26x less than the paper.
                  # (Kept out of the description: that text is the records' budget, which --merge matches.)
                  {"mnist": {"idec": ["--model.init_args.gamma", "0.1"]}}),
}
#: ACC / NMI in % as printed in the papers (IDEC paper, Table 2; DEC paper, Table 2: ACC only).
PAPER = {("dec", "mnist"): (84.30, None), ("idec", "mnist"): (88.06, 86.72), ("idec", "usps"): (76.05, 78.46)}
NAMES = {"ae_kmeans": "AE + k-means", "dec": "DEC", "idec": "IDEC", "aecm": "AE-CM (init: pre)"}
#: how a method that does not stop by its own rule (DEC, IDEC: tol or maxiter) runs from the shared autoencoder:
#: AE-CM, the authors' "pre" start (k-means on the code, 100 epochs of the CM alone, then joint) with the code size
#: of the shared autoencoder (10; tuned: 30 on USPS) and its ReLU (AE-CM's: LeakyReLU 0.2), 150 joint epochs with its
#: config's lr decay, and the averaging epoch
METHOD_ARGS = {"aecm": ["--model.init_args.init", "pre", "--model.init_args.latent_dim", "10",
                        "--model.init_args.activation", "relu", "--model.init_args.cm_epochs", "100",
                        "--trainer.max_epochs", "251"]}


def fit(config: str, run: Path, seed: int, extra: list[str]) -> dict:
    """One ``dcl fit`` in its own process (``results_table.fit_config``); its scores in % and wall time. Kept in
    ``run`` by ``resumable.cached_fit``: a finished run is not redone, an interrupted one goes on from its
    ``resume.ckpt`` (saved every ``resumable.RESUME_EVERY`` epochs), one started with other settings is refused."""

    def run_fit(resume: Path | None) -> dict:
        record = fit_config(config, run, seed, [*extra, *(["--ckpt_path", str(resume)] if resume else []),
                                                *resume_checkpoint_args()])
        return {**{k: 100 * record[k] for k in ("acc", "nmi", "ari")}, "wall_s": record["wall_s"],
                "command": record["command"]}

    # what the fit is (its config's settings too: an edited config is another fit), its paths relative to the
    # repository, so that a copy of it elsewhere resumes too
    settings = {"config": config, "model": config_settings(config), "seed": seed,
                "args": [a.replace(f"{ROOT}/", "") for a in extra]}
    return cached_fit(run, settings, run_fit)


def method_variant(spec: str) -> tuple[str, list[str], str]:
    """``idec:gamma=0.0038,tol=0.0001`` -> the method (``idec``), its ``dcl fit`` settings and a folder name."""
    method, _, settings = spec.partition(":")
    extra = []
    for setting in filter(None, settings.split(",")):
        key, sep, value = setting.partition("=")
        if not sep or not key:
            raise SystemExit(f"shared_pretraining.py: {spec!r}: write a method variant as name:key=value,key=value")
        extra += [f"--model.init_args.{key}", value]
    return method, extra, spec.replace(":", "_").replace(",", "_").replace("=", "")


def method_name(spec: str, names: dict[str, str]) -> str:
    method, _, settings = spec.partition(":")
    return names.get(method, method) + (f" ({settings.replace(',', ', ')})" if settings else "")


def config_settings(config: str) -> dict:
    """What a config (a path relative to the repository) sets of its method: its ``model.init_args``. Kept with each
    fit and each record, so that an edited config (a default changed since, e.g. IDEC's MNIST gamma) is never mixed
    with runs of the old one."""
    return yaml.safe_load((ROOT / config).read_text())["model"].get("init_args", {})


def method_class(config: str) -> type:
    """The method class that a config (a path relative to the repository) trains: its ``model.class_path``."""
    path = yaml.safe_load((ROOT / config).read_text())["model"]["class_path"]
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name) if module else registry.get_method(name)


def sae_layer_epochs(config: dict, epochs: int) -> int | None:
    """An SAE config's ``layer_epochs`` scaled to a fit of ``epochs`` epochs: the config's x epochs / its
    max_epochs, rounded down (so the greedy stages end before the fit does), at least 1; None at the config's
    max_epochs (its own setting). Exits when ``epochs`` cannot hold one epoch per layer pair and one of fine-tuning."""
    max_epochs = config["trainer"]["max_epochs"]
    from dcl.methods.sae import SAE  # (its defaults, for a setting the config leaves out)

    init = {k: v.default for k, v in inspect.signature(SAE).parameters.items()} | config["model"].get("init_args", {})
    layer_epochs, pairs = init["layer_epochs"], len(init["hidden_dims"]) + 1
    if epochs == max_epochs or not layer_epochs:
        return None
    scaled = max(1, layer_epochs * epochs // max_epochs)
    if pairs * scaled >= epochs:
        raise SystemExit(f"shared_pretraining.py: --pretrain-epochs {epochs} is too few for the dec-paper recipe: its "
                         f"SAE trains {pairs} layer pairs greedily (at least 1 epoch each) and then fine-tunes, so "
                         f"give at least {pairs + 1} epochs")
    return scaled


def check_mergeable(doc: dict, budget: str, settings: dict[str, dict], name: str) -> None:
    """Refuses, before any fit, a ``--merge`` into a record (``doc``) of the same budget that holds other methods
    (a table row needs every seed, so the merge would drop the recorded seeds or methods that this run lacks) or the
    same methods at other settings (``settings``: per method, its config's and its variant's; a record made before
    2026-12-04 has none)."""
    if doc.get("budget") != budget:
        return
    if sorted(doc["runs"]) != sorted(settings):
        raise SystemExit(f"shared_pretraining.py: --merge: {name} records the methods {sorted(doc['runs'])} at this "
                         f"budget, this run {sorted(settings)}; merged, the seeds or methods that one side lacks would "
                         "be dropped. Give the same --methods as the record, or write a record of its own with --tag.")
    recorded = doc.get("settings", {})
    differ = [m for m in settings if recorded.get(m) != json.loads(json.dumps(settings[m]))]
    if differ:
        raise SystemExit(f"shared_pretraining.py: --merge: {name} records {', '.join(differ)} "
                         + ("at other settings (a config changed since): "
                            + "; ".join(f"{m}: {recorded.get(m)} there, {settings[m]} now" for m in differ)
                            if recorded else "without the settings of their configs (a record made before 2026-12-04)")
                         + ". Write a record of its own with --tag, or run every seed again without --merge.")


def merge_recorded(doc: dict, budget: str, seeds: list[int], runs: dict[str, list[dict]]
                   ) -> tuple[list[int], dict[str, list[dict]]]:
    """This invocation's ``seeds`` and ``runs`` (per method, aligned with the seeds) joined with the seeds that
    ``doc`` (a results file of the same methods, ``check_mergeable``) recorded at the same budget; a seed in both
    keeps this invocation's run."""
    if doc.get("budget") != budget:
        return seeds, runs
    by_seed = {s: {m: rs[i] for m, rs in doc["runs"].items()} for i, s in enumerate(doc["seeds"])}
    by_seed.update({s: {m: rs[i] for m, rs in runs.items()} for i, s in enumerate(seeds)})
    order = sorted(by_seed)
    return order, {m: [by_seed[s][m] for s in order] for m in runs}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", choices=["digits", "usps", "mnist"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=["dec", "idec"])
    p.add_argument("--recipe", choices=sorted(RECIPES), default="shared",
                   help="the autoencoder pretraining (see above)")
    p.add_argument("--pretrain-epochs", type=int, default=None,
                   help="default: the recipe's (200 shared, 300 dec-keras, the config's max_epochs dec-paper; "
                        "dec-paper scales its layer_epochs to N: the config's x N / its max_epochs, at least 1)")
    p.add_argument("--maxiter", type=int, default=None,
                   help="cap on clustering steps of the methods that take one (DEC, IDEC; default: the config's)")
    p.add_argument("--scale", type=float, default=None,
                   help="every fit reads pixels x scale / 255 (MNIST's data.init_args.scale; IDEC's and the DEC "
                        "paper's code: 5.1, where IDEC keeps the config's balance at idec:gamma=0.1)")
    p.add_argument("--merge", action="store_true", help="keep the other seeds recorded in the results file")
    p.add_argument("--tag", default="", help="write shared_pretraining_<data>..._<tag>.{json,md} (e.g. gpu), a record "
                   "kept beside the others")
    args = p.parse_args()
    recipe_method, recipe_args, recipe_epochs, recipe_text, data_args, method_args = RECIPES[args.recipe]
    method_args = method_args.get(args.data, {})
    seed_args = data_args.get(args.data, [])
    if args.scale is not None:
        seed_args = [*seed_args, "--data.init_args.scale", f"{args.scale:g}"]
    config = ROOT / "configs" / recipe_method / f"{args.data}.yaml"
    if not config.is_file():
        p.error(f"the {args.recipe} recipe has no configs/{recipe_method}/{args.data}.yaml")
    recipe_yaml = yaml.safe_load(config.read_text())
    recipe_epochs = recipe_epochs or recipe_yaml["trainer"]["max_epochs"]
    args.pretrain_epochs = args.pretrain_epochs or recipe_epochs
    if args.pretrain_epochs < 1:
        p.error("--pretrain-epochs must be at least 1")
    layer_epochs = sae_layer_epochs(recipe_yaml, args.pretrain_epochs) \
        if recipe_method == "sae" else None
    if layer_epochs:  # a reduced SAE budget: its greedy stages shrink with it, or it would end within them
        recipe_args = [*recipe_args, "--model.init_args.layer_epochs", str(layer_epochs)]
        recipe_text += f"; layer_epochs scaled to {layer_epochs}"
    full_budget = args.pretrain_epochs == recipe_epochs and not args.maxiter
    recipe_tag = "" if args.recipe == "shared" else "_" + args.recipe.replace("-", "_")
    tag = recipe_tag + (f"_x{args.scale:g}" if args.scale is not None else "") + (f"_{args.tag}" if args.tag else "")
    # the recipe's full budget keeps the plain name; a reduced one is named by its pretraining epochs
    suffix = "" if full_budget else f"_p{args.pretrain_epochs}"
    stem = ROOT / "benchmarks" / "results" / f"shared_pretraining_{args.data}{suffix}{tag}"
    out_json, out_md = (stem.with_name(f"{stem.name}.{ext}") for ext in ("json", "md"))  # (a name may hold "x5.1")
    budget = (f"pretraining {args.pretrain_epochs} epochs ({recipe_text}); clustering: the configs' "
              f"defaults (authors' code){'' if not args.maxiter else f', maxiter capped at {args.maxiter}'}"
              + ("" if args.scale is None else f"; pixels x {args.scale:g} / 255 in every fit"))
    recipe_config = str(config.relative_to(ROOT))
    settings = {"ae_kmeans": {"config": recipe_config, "model": config_settings(recipe_config), "args": recipe_args}}
    takes_maxiter = {}  # --maxiter goes to the methods that take it (AE-CM has none: dcl refuses it, after pretraining)
    for spec in args.methods:  # checked here, before any fit
        method, variant_args, _ = method_variant(spec)
        if not (ROOT / "configs" / method / f"{args.data}.yaml").is_file():
            p.error(f"--methods {spec}: there is no configs/{method}/{args.data}.yaml")
        known = registry.settings(cls := method_class(f"configs/{method}/{args.data}.yaml"))
        for key in (k.removeprefix("--model.init_args.") for k in variant_args[::2]):
            if key.split(".")[0] not in known:
                p.error(f"--methods {spec}: " + registry.unknown_setting(cls, key))
        takes_maxiter[spec] = "maxiter" in known
        settings[spec] = {"config": f"configs/{method}/{args.data}.yaml",
                          "args": [*method_args.get(method, []), *variant_args],
                          "model": config_settings(f"configs/{method}/{args.data}.yaml")}
    if args.maxiter and not any(takes_maxiter.values()):
        p.error(f"--maxiter: none of --methods {' '.join(args.methods)} takes a maxiter setting")
    recorded = json.loads(out_json.read_text()) if out_json.is_file() else {}
    if args.merge:
        check_mergeable(recorded, budget, settings, out_json.name)
    work = ROOT / "benchmarks" / "work" / "shared_pretraining" / f"{args.data}_p{args.pretrain_epochs}{tag}"
    runs: dict[str, list[dict]] = {m: [] for m in ["ae_kmeans", *args.methods]}
    for seed in args.seeds:
        ae_run = work / f"s{seed}" / "ae_kmeans"
        runs["ae_kmeans"].append(fit(str(config.relative_to(ROOT)), ae_run, seed,
                                     ["--trainer.max_epochs", str(args.pretrain_epochs), *recipe_args, *seed_args]))
        ckpt = next(ae_run.rglob("last.ckpt"))
        for spec in args.methods:
            method, variant_args, folder = method_variant(spec)
            extra = ["--model.init_args.pretrained", str(ckpt), "--trainer.max_epochs", "100000", *seed_args,
                     *METHOD_ARGS.get(method, []), *method_args.get(method, [])]
            if args.maxiter and takes_maxiter[spec]:
                extra += ["--model.init_args.maxiter", str(args.maxiter)]
            runs[spec].append(fit(f"configs/{method}/{args.data}.yaml", work / f"s{seed}" / folder, seed,
                                  [*extra, *variant_args]))
        print(f"seed {seed}:", {m: {k: round(r[-1][k], 2) for k in ("acc", "nmi", "ari", "wall_s")}
                                for m, r in runs.items()}, flush=True)

    seeds = list(args.seeds)
    # read again: seeds run side by side in other processes may have been recorded since
    recorded = json.loads(out_json.read_text()) if out_json.is_file() else {}
    if args.merge and recorded:
        check_mergeable(recorded, budget, settings, out_json.name)
        seeds, runs = merge_recorded(recorded, budget, seeds, runs)
    notes = recorded.get("notes", [])  # what was read from the results, written into the JSON by hand
    summary = {m: {k: {"mean": float(np.mean([r[k] for r in rs])), "std": float(np.std([r[k] for r in rs]))}
                   for k in ("acc", "nmi", "ari", "wall_s")} for m, rs in runs.items()}
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}"
    import torch  # the fits ran in subprocesses with Lightning's accelerator "auto": on the GPU when there is one

    if torch.cuda.is_available():
        machine += f", GPU: {torch.cuda.get_device_name()} (training there)"
    out_json.write_text(json.dumps({"data": args.data, "seeds": seeds, "budget": budget, "machine": machine,
                                    "settings": settings, "runs": runs, "summary": summary, "notes": notes}, indent=2))
    methods = " / ".join(method_name(m, NAMES) for m in args.methods)
    lines = [f"# {methods} on {args.data} from a shared pretraining, seeds {seeds}", "",
             f"Budget: {budget}. Machine: {machine}. Scores in %, mean ± std over the seeds.", "",
             "| method | ACC | NMI | ARI | wall per run (s) | paper ACC / NMI |", "|---|---|---|---|---|---|"]
    names = {**NAMES, "ae_kmeans": "SAE + k-means"} if recipe_method == "sae" else NAMES
    for m, s in summary.items():
        paper = PAPER.get((m, args.data))  # the paper's settings only: not for a variant
        ref = " / ".join("-" if v is None else f"{v:.2f}" for v in paper) if paper else "-"
        lines.append(f"| {method_name(m, names)} | " + " | ".join(f"{s[k]['mean']:.2f} ± {s[k]['std']:.2f}"
                                                          for k in ("acc", "nmi", "ari"))
                     + f" | {s['wall_s']['mean']:.0f} | {ref} |")
    lines += ["", "Per seed (ACC / NMI / ARI):", ""]
    for m, rs in runs.items():
        lines.append(f"- {method_name(m, names)}: " + "; ".join(f"seed {s}: {r['acc']:.2f} / {r['nmi']:.2f} / {r['ari']:.2f}"
                                                          for s, r in zip(seeds, rs)))
    lines += ["", f"Command: `python benchmarks/shared_pretraining.py {' '.join(sys.argv[1:])}`"]
    lines += [line for note in notes for line in ("", note)]
    out_md.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
