"""benchmarks/results_table.py: override scoping, the summary statistics and the rendered table (no runs)."""

from __future__ import annotations

import importlib.util
import json

import pytest
from conftest import REPO

spec = importlib.util.spec_from_file_location("results_table", REPO / "benchmarks" / "results_table.py")
rt = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rt)


def test_overrides_are_scoped_by_method_and_dataset():
    sets = rt.parse_sets(["trainer.max_epochs=20", "dec:model.init_args.pretrain_epochs=10",
                          "dekm/usps:model.init_args.update_interval=40", "--data.init_args.batch_size=128"])
    assert rt.overrides_for(sets, "ae_kmeans", "digits") == ["--trainer.max_epochs", "20",
                                                            "--data.init_args.batch_size", "128"]
    assert "--model.init_args.pretrain_epochs" in rt.overrides_for(sets, "dec", "usps")
    assert "--model.init_args.update_interval" in rt.overrides_for(sets, "dekm", "usps")
    assert "--model.init_args.update_interval" not in rt.overrides_for(sets, "dekm", "mnist")
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        rt.parse_sets(["trainer.max_epochs"])


def run(method, dataset, seed, acc, status="ok"):
    r = {"method": method, "dataset": dataset, "seed": seed, "status": status,
         "overrides": ["--model.init_args.pretrain_epochs", "5", "--trainer.check_val_every_n_epoch", "9"]}
    if status == "ok":
        r.update(acc=acc, nmi=acc - 0.1, ari=acc - 0.2, k=10, wall_s=10.0 + seed, peak_rss_mb=500.0 + seed)
    return r


def test_summary_and_table(tmp_path):
    runs = [run("dekm", "usps", 0, 0.80), run("dekm", "usps", 1, 0.70), run("dekm", "usps", 2, 0, "failed"),
            run("dec", "usps", 0, 0.5), {"method": "dec", "dataset": "mnist", "seed": 0, "status": "missing_config"}]
    meta = {"seeds": [0, 1, 2], "threads": 1, "machine": "test", "date": "today"}
    paths = rt.write_outputs(tmp_path, "grid", runs, ["dec", "dekm"], ["mnist", "usps"], meta)
    summary = {(r["method"], r["dataset"]): r for r in json.loads(paths["json"].read_text())["summary"]}
    cell = summary[("dekm", "usps")]
    assert (cell["runs"], cell["ok"]) == (3, 2)
    assert cell["acc_mean"] == pytest.approx(75.0) and cell["acc_std"] == pytest.approx(7.07, abs=0.01)
    assert cell["wall_s_mean"] == 10.5 and cell["peak_rss_mb_max"] == 501.0
    assert (cell["paper_acc"], cell["paper_nmi"]) == (79.75, 82.23)
    assert summary[("dec", "usps")]["acc_std"] is None  # one seed: no std
    table = paths["md"].read_text()
    assert paths["md"].name == "table.md"
    assert "| DEKM | not run (95.75 / 91.06) | 75.0 ± 7.1 / 65.0 ± 7.1 (79.75 / 82.23) [2/3 runs ok] |" in table
    assert "| DEC | no config (84.30 / —) | 50.0 / 40.0 |" in table
    assert "| DEKM |  | pretrain_epochs 5 |" in table  # each cell's budget, evaluation-only settings left out
    header = paths["csv"].read_text().splitlines()[0].split(",")
    assert header[:6] == ["method", "dataset", "runs", "ok", "status", "acc_mean"]


def test_a_merged_table_names_the_seeds_its_cells_hold(tmp_path):
    """Found by probing as a user: after ``--merge`` the table's footer named the last invocation's seeds
    (``--first-seed 2 --seeds 1``: "Seeds: [2]") beside cells averaged over seeds 0, 1 and 2; and its header said
    "std" for the sample std, which the README says it names."""
    runs = [run("dekm", "usps", 0, 0.80), run("dekm", "usps", 1, 0.70), run("dekm", "usps", 2, 0.75),
            run("dec", "usps", 0, 0.5), run("dec", "usps", 1, 0.6)]
    meta = {"seeds": [2], "threads": 1, "machine": "test", "date": "today"}  # the merging invocation's
    table = rt.write_outputs(tmp_path, "grid", runs, ["dec", "dekm"], ["usps"], meta)["md"].read_text()
    assert "Seeds: [0, 1, 2] (only DEC USPS [0, 1])." in table
    assert "mean ± sample std over seeds" in table
    table = rt.write_outputs(tmp_path, "grid", runs[:3], ["dekm"], ["usps"], meta)["md"].read_text()
    assert "Seeds: [0, 1, 2]. Machine" in table
