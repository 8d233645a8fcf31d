"""Every method's digits config, fitted end to end on one GPU in mixed precision: the check that the GPU and
``precision`` paths of each method (losses, k-means / eigen updates, DP birth and merge, GAN steps, metrics) run,
and what they score there. Each fit is a ``dcl fit`` subprocess (``results_table.dcl_fit``) with
``--trainer.accelerator gpu --trainer.devices 1 --trainer.precision <P>``; a failure is recorded with its error
and the next config runs.

    python benchmarks/gpu_check.py [--precision bf16-mixed] [--set aecm/digits:trainer.max_epochs=101]

Writes ``benchmarks/results/gpu_check_<precision>.{json,md}``. No test depends on it: CI has no GPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

import torch

from results_table import dcl_fit, overrides_for, parse_sets  # benchmarks/ is on sys.path when a script here runs

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--precision", default="bf16-mixed", help="Lightning's trainer.precision")
    p.add_argument("--accelerator", default="gpu")
    p.add_argument("--configs", nargs="+", default=None, help="default: configs/*/digits.yaml")
    p.add_argument("--set", action="append", default=[], metavar="[METHOD[/DATASET]:]KEY=VALUE",
                   help="a config override, for every config or one (as results_table.py's --set)")
    p.add_argument("--timeout", type=float, default=600, help="seconds per fit")
    args = p.parse_args()
    configs = args.configs or sorted(str(c.relative_to(ROOT)) for c in (ROOT / "configs").glob("*/digits.yaml"))
    device = torch.cuda.get_device_name() if args.accelerator == "gpu" and torch.cuda.is_available() else "cpu"
    name = f"gpu_check_{args.precision}" if args.accelerator == "gpu" else f"gpu_check_{args.accelerator}"
    sets, rows = parse_sets(args.set), []
    for config in configs:
        extra = overrides_for(sets, Path(config).parent.name, Path(config).stem)
        with tempfile.TemporaryDirectory() as tmp:
            record = dcl_fit(["--config", str(ROOT / config), "--trainer.accelerator", args.accelerator,
                              "--trainer.devices", "1", "--trainer.precision", args.precision,
                              "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
                              "--trainer.check_val_every_n_epoch", "100000", *extra], Path(tmp),
                             threads=2, timeout=args.timeout)
        row = {"config": config, "overrides": extra, **{k: record.get(k) for k in
                                                        ("status", "acc", "nmi", "ari", "k", "wall_s")}}
        if record["status"] != "ok":
            row["error"] = record.get("error", "")[-2000:]
        rows.append(row)
        print(json.dumps(row), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    doc = {"precision": args.precision, "accelerator": args.accelerator, "device": device,
           "torch": torch.__version__, "machine": platform.machine(), "rows": rows}
    (RESULTS / f"{name}.json").write_text(json.dumps(doc, indent=2))
    lines = [f"# Every digits config on {device} ({args.accelerator}), precision {args.precision}", "",
             f"torch {torch.__version__}. Each config's full budget unless overridden; scores in %.", "",
             "| config | status | ACC | NMI | ARI | K | wall (s) | overrides |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        scores = [f"{100 * r[k]:.2f}" if isinstance(r.get(k), float) else "-" for k in ("acc", "nmi", "ari")]
        lines.append(f"| {r['config']} | {r['status']} | {' | '.join(scores)} | {r.get('k') or '-'} | "
                     f"{r.get('wall_s') or 0:.0f} | {' '.join(r['overrides']) or '-'} |")
    for r in rows:
        if r["status"] != "ok":
            lines += ["", f"{r['config']}: {r['status']}", "", "```", r.get("error", "").strip()[-1500:], "```"]
    lines += ["", f"Command: `python benchmarks/gpu_check.py {' '.join(sys.argv[1:])}`"]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
