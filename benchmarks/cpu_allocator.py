"""CPU time lost to page faults: glibc's default malloc against the `dcl` process's (``keep_freed_memory``), and
the ordered passes' batch size (the datamodules' ``eval_batch_size``: 4096 before 2026-12-01, now 4 x the
training batch).

glibc hands every freed block over its adaptive mmap threshold back to the kernel and trims the top of its heap;
the next step gets fresh pages, zero-filled by the kernel one page fault at a time (system time). Each measure
runs in a fresh subprocess (the allocator's settings are per process), the two allocators alternate for
``--rounds`` rounds, and the median is reported:

* ``dcfae_step``: one DCFAE phase-1 step (FAE: encoder, decoder, discriminator, both optimizers) on MNIST-shaped
  batches of 64 with the MNIST config's networks, ms per step (after 5 warm-up steps),
* ``dcfae_embed_B``: DCFAE's latent of 8192 MNIST-shaped samples in eval batches of B (the pass behind every
  k-means refresh and the final clustering), seconds per 10,000 samples,
* ``mlp_epoch``: one epoch of the d-500-500-2000-10 autoencoder on USPS-shaped data (9298 x 256, batch 256, Adam),
  seconds.

    python benchmarks/cpu_allocator.py --threads 2 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def measure(what: str, allocator: str) -> dict:
    """One measure in this process: its time and its CPU time split into user and system, and minor faults."""
    import resource
    import time

    import torch
    import torch.nn.functional as F

    if allocator == "dcl":
        from dcl.cli import keep_freed_memory
        assert keep_freed_memory(), "glibc's malloc could not be set (not glibc, or MALLOC_* set)"
    torch.manual_seed(0)

    if what.startswith("dcfae"):  # the MNIST config's networks
        from dcl.methods.dcfae import DCFAE
        model = DCFAE(n_clusters=10, input_shape=(1, 28, 28), channels=[32, 64, 128],
                      discriminator_channels=[32, 64, 128])
    if what == "dcfae_step":
        batches = [torch.rand(64, 1, 28, 28) for _ in range(4)]
        gen = torch.optim.Adam(model.fae.generator_parameters(), lr=1e-3, betas=(0.5, 0.999))
        dis = torch.optim.Adam(model.fae.discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))

        def step(i: int) -> None:
            x = batches[i % len(batches)]
            gen.zero_grad()
            model.generator_loss(x)[0].backward()
            gen.step()
            dis.zero_grad()
            model.discriminator_step_loss(x)[0].backward()
            dis.step()

        work, per, unit = step, 30, "ms per step"
    elif what.startswith("dcfae_embed_"):
        model.eval()
        x = torch.rand(8192, 1, 28, 28)
        bs = int(what.rsplit("_", 1)[1])

        @torch.no_grad()
        def step(i: int) -> None:
            for s in range(0, len(x), bs):
                model.latent(x[s:s + bs])

        work, per, unit = step, 1, "s per 10,000 samples"
    elif what == "mlp_epoch":
        from dcl.nets import MLPAutoencoder
        x = torch.rand(9298, 256)
        model = MLPAutoencoder((256,), 10)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step(i: int) -> None:
            perm = torch.randperm(len(x))
            for s in range(0, len(x), 256):
                xb = x[perm[s:s + 256]]
                loss = F.mse_loss(model(xb)[1], xb)
                opt.zero_grad()
                loss.backward()
                opt.step()

        work, per, unit = step, 3, "s per epoch"
    else:
        raise ValueError(what)

    for i in range(5 if what == "dcfae_step" else 1):  # warm-up: the allocator's pools, oneDNN's kernels
        work(i)
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for i in range(per):
        work(i)
    t1, r1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    scale = {"ms per step": 1000 / per, "s per 10,000 samples": 10_000 / 8192 / per, "s per epoch": 1 / per}[unit]
    return {"time": (t1 - t0) * scale, "user": (r1.ru_utime - r0.ru_utime) * scale,
            "system": (r1.ru_stime - r0.ru_stime) * scale, "minor_faults": (r1.ru_minflt - r0.ru_minflt) / per,
            "unit": unit}


MEASURES = ["dcfae_step", "dcfae_embed_4096", "dcfae_embed_256", "mlp_epoch"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--measures", nargs="+", default=MEASURES,
                        help=f"some of {' '.join(MEASURES)} (dcfae_embed_B: any eval batch size B); the reading "
                             "below the table needs all four")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--render-only", action="store_true", help="rewrite the .md from the .json, run nothing")
    parser.add_argument("--one", nargs=2, metavar=("MEASURE", "ALLOCATOR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(*args.one)))
        return

    unknown = [m for m in args.measures if m not in MEASURES and not re.fullmatch(r"dcfae_embed_[1-9]\d*", m)]
    if unknown:
        parser.error(f"unknown measures {' '.join(unknown)}; known: {' '.join(MEASURES)} (dcfae_embed_B: any B)")
    if args.render_only:
        record = json.loads((RESULTS / "cpu_allocator.json").read_text())
    else:
        record = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, glibc {platform.libc_ver()[1]}",
                  "threads": args.threads, "rounds": args.rounds, "runs": run(args)}
    text = render(record)  # before anything is written: a record that cannot be shown replaces none
    if not args.render_only:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "cpu_allocator.json").write_text(json.dumps(record, indent=2) + "\n")
    (RESULTS / "cpu_allocator.md").write_text(text)
    print(text)


def run(args) -> dict[str, dict[str, list[dict]]]:
    from dcl.cli import sets_the_allocator
    env = {k: v for k, v in os.environ.items() if not sets_the_allocator(k)}
    env.update(OMP_NUM_THREADS=str(args.threads), PYTHONPATH=str(ROOT / "benchmarks"))
    runs: dict[str, dict[str, list[dict]]] = {m: {"glibc": [], "dcl": []} for m in args.measures}
    for r in range(args.rounds):
        for m in args.measures:
            for allocator in ("glibc", "dcl"):
                out = subprocess.run([sys.executable, __file__, "--one", m, allocator], env=env, check=True,
                                     capture_output=True, text=True).stdout
                runs[m][allocator].append(json.loads(out.strip().splitlines()[-1]))
                print(r, m, allocator, runs[m][allocator][-1], flush=True)
    return runs


def render(record: dict) -> str:
    runs = record["runs"]

    def med(rs: list[dict], key: str) -> float:
        return statistics.median(x[key] for x in rs)

    rows = ["| measure | unit | glibc's defaults: time (user / system) | dcl's malloc settings: time (user / system) "
            "| time ratio | minor faults (glibc / dcl) |", "|---|---|---|---|---|---|"]
    for m, by in runs.items():
        g, d = by["glibc"], by["dcl"]
        rows.append(f"| {m} | {g[0]['unit']} | {med(g, 'time'):.2f} ({med(g, 'user'):.2f} / {med(g, 'system'):.2f}) "
                    f"| {med(d, 'time'):.2f} ({med(d, 'user'):.2f} / {med(d, 'system'):.2f}) "
                    f"| {med(d, 'time') / med(g, 'time'):.2f} | {med(g, 'minor_faults'):.0f} / "
                    f"{med(d, 'minor_faults'):.0f} |")
    threads, rounds = record["threads"], record["rounds"]
    reading = []
    if set(MEASURES) <= set(runs):  # (it reads every default measure)
        before, after = med(runs["dcfae_embed_4096"]["glibc"], "time"), med(runs["dcfae_embed_256"]["dcl"], "time")
        reading = [f"Reading: DCFAE's embedding pass (every k-means refresh and the final clustering of MNIST's 70,000 "
                   f"samples) went from {before:.2f} s per 10,000 samples (glibc's defaults, eval batches of 4096, "
                   f"the datamodules' default until 2026-12-01) to {after:.2f} s (the `dcl` process's settings, eval "
                   f"batches of 4 x 64 = 256, the default since): {before / after:.1f}x faster. In batches of 4096 "
                   "every activation (100 to 400 MiB) is larger than the mmap threshold dcl sets (32 MiB, the "
                   "largest every glibc accepts), so it is fresh memory under either setting, faulted in page by "
                   "page; in batches of 256 the settings keep it in the heap. A training step saves its system "
                   "time, with glibc's defaults 5-9% of its CPU time: "
                   f"{med(runs['dcfae_step']['dcl'], 'time') / med(runs['dcfae_step']['glibc'], 'time'):.2f}x "
                   "the wall time for a DCFAE phase-1 step, "
                   f"{med(runs['mlp_epoch']['dcl'], 'time') / med(runs['mlp_epoch']['glibc'], 'time'):.2f}x for "
                   "an epoch of the MLP autoencoder (the rounds vary by about 10% on this machine).", ""]
    text = ["# Page faults on the CPU: glibc's malloc defaults against the `dcl` process's settings",
            "", f"Machine: {record['machine']}; {threads} torch thread(s); median of {rounds} rounds, each "
            "measure in a fresh process, the two settings alternating. Times in the unit given, CPU time split "
            "into user and system (the kernel's page-fault work).", "", *rows, "", *reading,
            f"Command: `python benchmarks/cpu_allocator.py --threads {threads} --rounds {rounds}"
            + ("" if list(runs) == MEASURES else f" --measures {' '.join(runs)}") + "`", ""]
    return "\n".join(text)


if __name__ == "__main__":
    main()
