"""DCFAE phase 2 alone: how the batch-wise input similarities (perplexity, batch size, Gaussian or Student-t)
shape the dense embedding, on the FAEs a ``benchmarks/dcfae.py --tag <tag>`` run trained.

The perplexity sets how many neighbours each latent point spreads its similarity over; in a batch of B samples
of K balanced classes a point has about B / K same-class neighbours (6 at USPS's B = 64, K = 10), while the
default perplexity 30 (t-SNE's, for whole data sets or parametric t-SNE's batches of 5000) is capped at
(B - 1) / 3 = 21 there. Each run loads the FAE of ``benchmarks/work/dcfae/<data>_<tag>_fae_s<seed>/last.ckpt``
(``pretrained``: phase 1 skipped, the FAE frozen), trains the dense network for ``--epochs`` epochs and scores
k-means on its embedding. Results: ``benchmarks/results/dcfae_<data>_<tag>_similarity.{json,md}``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/dcfae_similarity.py --data usps --tag e30 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import time

import lightning.pytorch as pl
import numpy as np
import torch

from dcfae import RESULTS, WORK, datamodule, record, stem
from results_table import mean_std_text

#: name -> (loader batch size, similarity_batches, input similarity, perplexity)
SETTINGS = {
    "gaussian, perplexity 30 (capped at 21), batch 64: the configs before 2026-11-30": (64, 1, "gaussian", 30.0),
    "gaussian, perplexity 10, batch 64": (64, 1, "gaussian", 10.0),
    "gaussian, perplexity 5, batch 64": (64, 1, "gaussian", 5.0),
    "gaussian, perplexity 30, batch 256": (256, 1, "gaussian", 30.0),
    "student (nu = 1), batch 64": (64, 1, "student", 30.0),
    "gaussian, perplexity 30, batches of 64 joined by 4 (similarity_batches 4)": (64, 4, "gaussian", 30.0),
    "gaussian, perplexity 10, batches of 64 joined by 4 (similarity_batches 4)": (64, 4, "gaussian", 10.0),
}


#: Hand-written reading of the results, per record (checked against the .json when it was written).
NOTES: dict[str, list[str]] = {
    "usps_config": [
        "Reading (the FAEs of `dcfae_usps_config.md`: the config's 100 FAE epochs and networks; 50 epochs of phase "
        "2 as `configs/dcfae/usps.yaml` runs it; 3 seeds): 88.81 ± 4.51 / 83.31 ± 1.65 (82.45, 91.57, 92.42), "
        "against 74.92 ± 3.39 / 68.96 with phase 2 on batches of 64 on the same FAEs, and IDEC at its papers' "
        "budget 76.66 ± 0.60 / 78.61 ± 0.83 (`shared_pretraining_usps.md`): the issue's target (at least IDEC) is met on USPS.",
    ],
    "usps_e30_vae": [
        "Reading (the plain VAEs of the 30 + 30 record, the FAE-vs-VAE ablation, 30 epochs of phase 2, 3 seeds):",
        "- On batches of 256 the VAE latent gains 3 ACC / 7.3 NMI points (79.79 ± 0.99 / 81.12 against 76.75 ± "
        "2.64 / 73.82 on batches of 64), the FAE latent 12.2 / 8.8 (87.87 ± 6.07 / 84.04 against 75.70 / 75.26, "
        "`dcfae_usps_e30_similarity.md`): with phase 2 on batches of 256 the FAE latent is ahead of the VAE's by "
        "8.1 ACC and 2.9 NMI points, the paper's ablation claim, which batches of 64 hid (the two were on par).",
    ],
    "mnist_rerun": [
        "Reading (the FAEs of `dcfae_mnist.md`'s runs, 2 FAE epochs, 2 epochs of phase 2 as the earlier record, 3 "
        "seeds; the configs' 50 + 10 epochs need a GPU):",
        "- Phase 2 as `configs/dcfae/mnist.yaml` now runs it (4 batches of 64 joined, perplexity 30) gives 78.00 ± "
        "3.21 / 74.21 ± 1.08, against 68.36 ± 1.29 / 61.97 on batches of 64: 9.6 ACC and 12.2 NMI points more on "
        "the same FAEs, and above k-means on the FAE latent (68.42 ± 1.99 / 60.45) and IDEC at the same epochs "
        "(64.93 ± 4.87 / 59.05 ± 2.75, `dcfae_mnist.md`). So at this CPU budget DCFAE meets the issue's target on "
        "MNIST too (it did not with the earlier phase 2). IDEC from its papers' 200-epoch pretraining reaches "
        "82.17 / 83.44 (`shared_pretraining_mnist.md`): the comparison at the full budget still needs a GPU.",
        "- The earlier setting's row here (68.36) is not the dense row of `dcfae_mnist.md` (63.81) although both "
        "train phase 2 at that setting on the same FAEs: there phase 2 continues the FAE run's random stream "
        "(resumed from its checkpoint), here it starts a new one (the FAE loaded frozen). The 4.5-point gap is the "
        "spread of phase 2 over random streams, smaller than the 9.6 points the setting adds.",
    ],
    "coil20_rerun": [
        "Reading (the FAEs of `dcfae_coil20.md`'s runs, 50 epochs of phase 2, 3 seeds; 20 classes of 72 images):",
        "- A batch of 64 holds about 3 images per object, one of 256 about 13. Joining 4 batches lifts ACC / NMI "
        "from 70.51 ± 1.90 / 79.68 to 73.87 ± 2.61 / 84.39 at perplexity 30, and a perplexity below the 13 "
        "samples per cluster (10) to 79.54 ± 3.50 / 88.38 ± 1.19: 9 ACC and 8.7 NMI points above the earlier "
        "config, and above IDEC at the same epochs (66.67 ± 1.72 / 79.27 ± 1.09, `dcfae_coil20.md`) and DEKM at "
        "its official budget (65.49 ± 3.96 / 78.03 ± 1.42; its paper: 69.03 / 80.06).",
        "- Hence `configs/dcfae/coil20.yaml` since 2026-11-30: `similarity_batches: 4`, `perplexity: 10` (the rule "
        "of `dcfae_usps_e30_similarity.md`: the perplexity below a batch's samples per cluster, B / K).",
    ],
    "usps_e30": [
        "Reading (the FAEs of the 30 + 30 record, 30 epochs of phase 2, 3 seeds):",
        "- The input similarities decide phase 2. At batch 64 and perplexity 30 (capped at 21) a point spreads its "
        "similarity over about a third of the batch, while a batch holds about 6 samples per class: P links "
        "neighbouring clusters and the embedding keeps them together (75.70 ACC, as k-means on the FAE latent "
        "gives 72.73). A perplexity below the samples per cluster (5 at batch 64), or a batch large enough for "
        "perplexity 30 (256: about 26 per class), gives 87.25 ± 5.64 / 83.00 and 87.87 ± 6.07 / 84.04: 11-12 ACC "
        "and 8-9 NMI points more, and above IDEC at the same epochs (76.33 ± 0.93 / 78.30 ± 1.06, "
        "`dcfae_usps_e30.md`) and at its papers' budget (76.66 ± 0.60 / 78.61 ± 0.83).",
        "- Seed 1 ends at 79.3 under both, seeds 0 and 2 at 90.6-92.8: the spread over seeds (std about 6 ACC "
        "points) is far larger than the difference between the two settings, and it is not the FAE's k-means "
        "score (seed 1's latent gives the best of the three, 74.12).",
        "- Student-t input similarities (no perplexity; nu = 1) do not help: 74.08 ± 2.50.",
        "- Hence the configs since 2026-11-30: batches of 64 for the GAN, 4 of them joined for phase 2 "
        "(`similarity_batches: 4`, 256 samples), perplexity 30 (t-SNE's default; COIL-20, with 20 clusters: 10).",
    ],
}


def run(data: str, tag: str, variant: str, seed: int, batch_size: int, similarity_batches: int, similarity: str,
        perplexity: float, epochs: int) -> dict:
    from dcl.methods.dcfae import DCFAE

    ckpt = WORK / f"{record(data, tag)}_{variant}_s{seed}" / "last.ckpt"
    if not ckpt.is_file():
        raise SystemExit(f"no FAE checkpoint {ckpt}: run benchmarks/dcfae.py --data {data} --tag {tag} "
                         f"--seed {seed} first")
    pl.seed_everything(seed)
    dm = datamodule(data, batch_size)
    dm.setup("fit")
    budget = json.loads((RESULTS / f"{stem(data, tag)}.json").read_text())["budget"]  # the FAE's architecture
    model = DCFAE(dm.n_clusters, dm.input_shape, adversarial=variant == "fae", channels=budget["channels"],
                  discriminator_channels=budget["discriminator_channels"], pretrained=str(ckpt),
                  input_similarity=similarity, perplexity=perplexity, similarity_batches=similarity_batches)
    trainer = pl.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, check_val_every_n_epoch=10_000, num_sanity_val_steps=0)
    start = time.time()
    trainer.fit(model, dm)
    return {**model.final_scores(), "seconds": round(time.time() - start, 1)}


def render(result: dict) -> str:
    autoencoder = "FAEs" if result.get("variant", "fae") == "fae" else "plain VAEs (the ablation)"
    lines = [f"# DCFAE phase 2 on {result['data']}: input similarities of the dense network "
             f"({autoencoder} of `{stem(result['data'], result['tag'])}.md`, {result['epochs']} epochs, seeds "
             f"{', '.join(sorted(result['seeds']))}, CPU, 1 thread)", "",
             "k-means (10 restarts) on the dense embedding; mean ± std over the seeds (population std).", "",
             "| input similarities | ACC | NMI | ARI | ACC per seed | wall time (s) | seeds |",
             "|---|---|---|---|---|---|---|"]
    for name in SETTINGS:
        runs = [s[name] for _, s in sorted(result["seeds"].items()) if name in s]
        if runs:
            cells = [mean_std_text([r[m] for r in runs]) for m in ("acc", "nmi", "ari")]
            per_seed = ", ".join(f"{100 * r['acc']:.2f}" for r in runs)
            lines.append(f"| {name} | {' | '.join(cells)} | {per_seed} | "
                         f"{np.mean([r['seconds'] for r in runs]):.0f} | {len(runs)} |")
    lines += ["", f"Command: `OMP_NUM_THREADS=1 .venv/bin/python benchmarks/dcfae_similarity.py --data "
                  f"{result['data']} --tag {result['tag']} --epochs {result['epochs']} --seeds S"
                  f"{' --variant vae' if result.get('variant', 'fae') == 'vae' else ''}` (`--settings I` runs "
                  f"some of the rows)."]
    notes = NOTES.get(f"{record(result['data'], result['tag'])}{suffix(result.get('variant', 'fae'))}", [])
    return "\n".join(lines + ["", *notes]).rstrip() + "\n"


def suffix(variant: str) -> str:
    return "" if variant == "fae" else f"_{variant}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="usps", choices=["digits", "usps", "mnist", "coil20"])
    parser.add_argument("--tag", default="e30", help="the dcfae.py record whose FAEs are reused")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--settings", nargs="+", type=int, default=list(range(len(SETTINGS))),
                        help="indices into SETTINGS (default: all)")
    parser.add_argument("--variant", default="fae", choices=["fae", "vae"],
                        help="the record's FAEs, or its plain VAEs (adversarial off: the ablation)")
    parser.add_argument("--render-only", action="store_true", help="rewrite the .md from the .json, run nothing")
    args = parser.parse_args()
    torch.set_num_threads(1)
    path = RESULTS / f"{stem(args.data, args.tag)}_similarity{suffix(args.variant)}.json"
    result = json.loads(path.read_text()) if path.is_file() else {}
    if args.render_only:
        path.with_suffix(".md").write_text(render(result))
        return
    if result.get("epochs") != args.epochs:
        result = {"data": args.data, "tag": args.tag, "variant": args.variant, "epochs": args.epochs, "seeds": {}}
    for seed in args.seeds:
        for name in [list(SETTINGS)[i] for i in args.settings]:
            scores = run(args.data, args.tag, args.variant, seed, *SETTINGS[name], args.epochs)
            result["seeds"].setdefault(str(seed), {})[name] = scores
            print(seed, name, scores, flush=True)
            path.write_text(json.dumps(result, indent=2))
    text = render(result)
    path.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    os.environ.setdefault("WANDB_MODE", "offline")
    main()
