"""``dcl results DIR``: real fits' run folders tabulated, one row per group of runs that differ only in their seed."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import statistics
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from dcl.cli import main

LATENT_DIMS, SEEDS = (5, 8), (1, 2)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Four 2-epoch fits of AE + k-means on Digits: latent_dim 5 and 8, seeds 1 and 2, each recorded otherwise (a
    CSV logger of its own name, or none and a folder of its own), which must not split a group."""
    base = tmp_path_factory.mktemp("results")
    cwd = os.getcwd()
    os.chdir(base)
    try:
        for latent in LATENT_DIMS:
            for seed in SEEDS:
                where = (["--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir",
                          str(base / "csv"), "--trainer.logger.name", f"latent{latent}-seed{seed}"] if seed == 1 else
                         ["--trainer.logger", "false", "--trainer.default_root_dir", str(base / "plain" / str(latent))])
                main(["fit", "--config", str(REPO / "configs/ae_kmeans/digits.yaml"), "--trainer.max_epochs", "2",
                      "--model.init_args.hidden_dims", "[64, 64]", "--model.init_args.latent_dim", str(latent),
                      "--model.init_args.kmeans_n_init", "2", "--trainer.check_val_every_n_epoch", "100",
                      "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
                      "--seed_everything", str(seed), *where])
    finally:
        os.chdir(cwd)
    assert len(list(base.rglob("final_scores.json"))) == 4
    return base


def expected(base: Path) -> dict[int, dict[str, list]]:
    """latent_dim -> score -> the values of its runs' final_scores.json, read back from the files."""
    out: dict[int, dict[str, list]] = {}
    for path in base.rglob("final_scores.json"):
        config = yaml.safe_load((path.parent / "config.yaml").read_text())
        for name, value in json.loads(path.read_text()).items():
            out.setdefault(config["model"]["init_args"]["latent_dim"], {}).setdefault(name, []).append(value)
    return out


def results(args: list[str], capsys) -> str:
    capsys.readouterr()
    main(["results", *args])
    return capsys.readouterr().out


def test_runs_of_two_seeds_and_two_settings_make_two_rows_with_their_means(runs, capsys):
    table = results([str(runs)], capsys)
    assert "mean ± sample std" in table
    lines = [line for line in table.splitlines() if line.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    # the method, the data, the one setting that tells the groups apart (the loggers and folders do not)
    assert head[:5] == ["method", "data", "model.latent_dim", "runs", "seeds"], head
    assert head[5:8] == ["ACC", "NMI", "ARI"] and {"K", "K_USED", "SILHOUETTE"} <= set(head)
    rows = [dict(zip(head, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]
    assert len(rows) == 2
    values = expected(runs)
    for row, latent in zip(rows, LATENT_DIMS):
        assert (row["method"], row["data"], row["model.latent_dim"]) == ("AEKMeans", "Digits", str(latent))
        assert (row["runs"], row["seeds"]) == ("2", "1, 2")
        for name in ("acc", "nmi", "ari", "silhouette"):
            v = values[latent][name]
            assert row[name.upper()] == f"{statistics.mean(v):.4f} ± {statistics.stdev(v):.4f}", name


def test_csv_output_parses_with_each_scores_mean_and_sample_std(runs, capsys):
    rows = list(csv.DictReader(io.StringIO(results([str(runs / "csv"), str(runs / "plain"), "--format", "csv"],
                                                   capsys))))
    assert len(rows) == 2
    values = expected(runs)
    for row, latent in zip(rows, LATENT_DIMS):
        assert (row["method"], row["dataset"], row["model.latent_dim"]) == ("AEKMeans", "Digits", str(latent))
        assert (row["runs"], row["seeds"]) == ("2", "1 2")
        for name, v in values[latent].items():
            assert float(row[f"{name}_mean"]) == pytest.approx(statistics.mean(v), rel=1e-12)
            assert float(row[f"{name}_sample_std"]) == pytest.approx(statistics.stdev(v), rel=1e-12, abs=1e-15)


def test_a_score_some_runs_lack_is_counted_in_both_formats(runs, tmp_path, capsys):
    """A score absent from some runs of a group (SILHOUETTE, undefined for one cluster) is the mean of those that
    have it, and says how many: the markdown did, the CSV hid it (an audit)."""
    shutil.copytree(runs / "plain" / "5", tmp_path / "runs" / "seed2")  # latent_dim 5's two runs
    shutil.copytree(runs / "csv" / "latent5-seed1", tmp_path / "runs" / "seed1")
    first = sorted((tmp_path / "runs").rglob("final_scores.json"))[0]
    scores = json.loads(first.read_text())
    scores.pop("silhouette")
    first.write_text(json.dumps(scores))
    assert "(1 of 2 runs)" in results([str(tmp_path / "runs")], capsys)
    row, = csv.DictReader(io.StringIO(results([str(tmp_path / "runs"), "--format", "csv"], capsys)))
    assert (row["silhouette_runs"], row["acc_runs"], row["silhouette_sample_std"]) == ("1", "2", "")
    # a score that none of a row's runs has (another row's): a dash, and no count of none
    shutil.copytree(runs / "plain" / "8", tmp_path / "runs" / "latent8")
    second = next(p for p in sorted((tmp_path / "runs").rglob("final_scores.json")) if p != first)
    scores = json.loads(second.read_text())
    scores.pop("silhouette")
    second.write_text(json.dumps(scores))
    rows = [line for line in results([str(tmp_path / "runs")], capsys).splitlines() if line.startswith("| AEKMeans")]
    last = [line.rstrip(" |").rpartition("| ")[2] for line in rows]  # latent_dim 5's, then 8's (one run)
    assert last[0].endswith(" (1 of 2 runs)") and last[1] == "—", rows


def test_a_single_run_folder_and_one_seed(runs, capsys):
    folder = next(runs.joinpath("plain", "5").rglob("final_scores.json")).parent
    table = results([str(folder)], capsys)
    scores = json.loads((folder / "final_scores.json").read_text())
    assert table.startswith("Scores of 1 run (final_scores.json)")
    assert "| AEKMeans | Digits | 1 | 2 | " in table  # no setting column: one group; no std: one run
    assert f"| {scores['acc']:.4f} | {scores['nmi']:.4f} |" in table


def error(args: list[str], capsys) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["results", *args])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.startswith("dcl: error:")]
    assert len(lines) == 1 and captured.err.strip() == lines[0] and not captured.out, captured
    return lines[0]


def test_errors_name_the_problem_and_what_to_do(runs, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    msg = error([str(tmp_path / "empty")], capsys)
    assert f"no run folders found under {tmp_path / 'empty'}" in msg and "dcl fit" in msg
    assert f"{tmp_path / 'missing'} does not exist" in error([str(tmp_path / "missing")], capsys)
    assert "required: DIR" in error([], capsys)
    # a final_scores.json without its config.yaml: not a run folder (its settings are unknown), and said so
    (tmp_path / "scores_only").mkdir()
    (tmp_path / "scores_only" / "final_scores.json").write_text('{"acc": 0.5}')
    msg = error([str(tmp_path / "scores_only")], capsys)
    assert "no run folders found" in msg and "without config.yaml" in msg
    # beside run folders, it is left out, and named
    mixed = tmp_path / "mixed"
    shutil.copytree(runs / "plain", mixed / "plain")
    shutil.copytree(tmp_path / "scores_only", mixed / "scores_only")
    capsys.readouterr()
    main(["results", str(mixed)])
    out, err = capsys.readouterr()
    assert out.startswith("Scores of 2 runs (final_scores.json)")
    assert err == (f"dcl: warning: {(mixed / 'scores_only').resolve()} holds final_scores.json but no config.yaml; it "
                   "is left out (its settings are unknown)\n")
    scores = tmp_path / "scores_only" / "final_scores.json"
    assert error([str(scores)], capsys) == (f"dcl: error: {scores} is a file; give the folders that hold your runs' "
                                            "folders")
    # a run's final_scores.json cut short, or not scores: its file named
    for text in ('{"acc": 0.5', '["acc"]', '{"acc": true}'):  # (a true is no score)
        copy = tmp_path / "copy"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(runs / "plain", copy)
        bad = next(copy.rglob("final_scores.json"))
        bad.write_text(text)
        msg = error([str(copy)], capsys)
        assert f"cannot read {bad}" in msg and "rerun that fit" in msg, msg
    (bad.parent / "config.yaml").write_text("model: [unclosed")
    bad.write_text('{"acc": 0.5}')
    assert f"cannot read {bad.parent / 'config.yaml'}" in error([str(copy)], capsys)
    (bad.parent / "config.yaml").write_text("- model\n- data\n")
    assert error([str(copy)], capsys).endswith(f"cannot read {bad.parent / 'config.yaml'}: it is not the config.yaml "
                                               "of dcl fit (a mapping of settings); rerun that fit, or move its folder "
                                               "out of the ones given")


def write_run(folder: Path, config: dict, scores: dict) -> None:
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    (folder / "final_scores.json").write_text(json.dumps(scores))


def config(seed: int, lr: float = 1e-3, method: str = "dcl.methods.dec.DEC", **trainer) -> dict:
    return {"seed_everything": seed, "ckpt_path": None,
            "trainer": {"max_epochs": 5, "default_root_dir": None, "logger": False, "enable_progress_bar": True,
                        "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                       "init_args": {"dirpath": None, "save_last": True}}], **trainer},
            "model": {"class_path": method, "init_args": {"hidden_dims": [64, 64], "optimizer": {
                "class_path": "torch.optim.Adam", "init_args": {"lr": lr}}}},
            "data": {"class_path": "dcl.datamodules.digits.Digits", "init_args": {"batch_size": 64}},
            "predictions": {"output": None}}


def test_only_the_seed_and_where_a_run_records_itself_leave_runs_in_one_group(tmp_path, capsys):
    """The logger (any of its settings: W&B's id, a version, a save_dir), the run folder, the checkpoint resumed
    from (and weights_only), what predict writes, the callbacks' folders, the progress bar and the model summary split
    no group; a learning rate does, and is named; a
    setting that differs only between another method's groups is that method's column, shown in every row."""
    write_run(tmp_path / "a", config(0), {"acc": 0.5, "k": 10})
    write_run(tmp_path / "b", config(1, default_root_dir=str(tmp_path / "b"), enable_progress_bar=False,
                                     enable_model_summary=False,
                                     logger={"class_path": "lightning.pytorch.loggers.WandbLogger",
                                             "init_args": {"save_dir": "outputs", "id": "x1", "name": "s1"}})
              | {"ckpt_path": "last.ckpt", "weights_only": True, "predictions": {"output": "b.csv"}},
              {"acc": 0.7, "k": 10})
    b = json.loads(json.dumps(config(2)))
    b["trainer"]["callbacks"][0]["init_args"]["dirpath"] = str(tmp_path / "ckpts")
    write_run(tmp_path / "c", b, {"acc": 0.6, "k": 11})
    write_run(tmp_path / "d", config(0, lr=0.01), {"acc": 0.2, "k": 10})
    write_run(tmp_path / "e", config(0, method="dcl.methods.idec.IDEC", max_epochs=7), {"acc": 0.9, "k": 10})
    write_run(tmp_path / "f", config(0, method="dcl.methods.idec.IDEC"), {"acc": 0.8, "k": 10})
    table = results([str(tmp_path)], capsys)
    assert "| method | data | model.optimizer.lr | trainer.max_epochs | runs | seeds | ACC | K |" in table, table
    assert "| DEC | Digits | 0.001 | 5 | 3 | 0, 1, 2 | 0.6000 ± 0.1000 | 10.3 ± 0.6 |" in table, table
    assert "| DEC | Digits | 0.01 | 5 | 1 | 0 | 0.2000 | 10.0 |" in table, table
    assert "| IDEC | Digits | 0.001 | 5 | 1 | 0 | 0.8000 | 10.0 |" in table, table
    assert "| IDEC | Digits | 0.001 | 7 | 1 | 0 | 0.9000 | 10.0 |" in table, table


def test_columns_go_model_data_trainer_and_rows_sort_by_their_values_as_numbers(tmp_path, capsys):
    for name, lr, batch_size, max_epochs in [("a", 0.01, 64, 5), ("b", 0.001, 64, 10), ("c", 0.001, 64, 9),
                                             ("d", 0.001, 128, 5)]:
        cfg = config(0, lr=lr, max_epochs=max_epochs)
        cfg["data"]["init_args"]["batch_size"] = batch_size
        write_run(tmp_path / name, cfg, {"acc": 0.5})
    table = results([str(tmp_path)], capsys).splitlines()
    assert table[2] == ("| method | data | model.optimizer.lr | data.batch_size | trainer.max_epochs | runs | seeds "
                        "| ACC |")
    assert [row.split(" | ")[2:5] for row in table[4:]] == [["0.001", "64", "9"], ["0.001", "64", "10"],
                                                             ["0.001", "128", "5"], ["0.01", "64", "5"]]


def test_callbacks_listed_in_another_order_leave_runs_in_one_group(tmp_path, capsys):
    """The callbacks are compared by class, not by place in the list: the same callbacks in another order (two of
    one class among them, with their folders swapped) are one group, and a setting of one of them that differs is
    named by its class."""
    def callbacks(monitor: str, order: list[int], dirs: tuple[str, str]) -> list[dict]:
        checkpoint = "lightning.pytorch.callbacks.ModelCheckpoint"
        items = [{"class_path": checkpoint, "init_args": {"dirpath": dirs[0], "save_last": True}},
                 {"class_path": checkpoint, "init_args": {"dirpath": dirs[1], "monitor": monitor}},
                 {"class_path": "dcl.callbacks.ClusteringPlots", "init_args": {"dirpath": None}}]
        return [items[i] for i in order]

    write_run(tmp_path / "a", config(0, callbacks=callbacks("val/acc", [0, 1, 2], ("x", "y"))), {"acc": 0.5})
    write_run(tmp_path / "b", config(1, callbacks=callbacks("val/acc", [2, 1, 0], ("y", "x"))), {"acc": 0.7})
    write_run(tmp_path / "c", config(0, callbacks=callbacks("val/nmi", [1, 2, 0], ("x", "y"))), {"acc": 0.2})
    table = results([str(tmp_path)], capsys)
    assert "| method | data | trainer.callbacks.ModelCheckpoint.monitor | runs | seeds | ACC |" in table, table
    assert "| DEC | Digits | val/acc | 2 | 0, 1 | 0.6000 ± 0.1414 |" in table, table
    assert "| DEC | Digits | val/nmi | 1 | 0 | 0.2000 |" in table, table
    # a setting of the checkpoint that sorts second is named as that class's second one
    d = callbacks("val/acc", [0, 1, 2], ("x", "y"))
    d[0]["init_args"]["save_top_k"] = 3
    write_run(tmp_path / "d", config(0, callbacks=d), {"acc": 0.9})
    table = results([str(tmp_path)], capsys)
    assert ("| method | data | trainer.callbacks.ModelCheckpoint#2.save_top_k | "
            "trainer.callbacks.ModelCheckpoint.monitor | runs | seeds | ACC |") in table, table
    assert "| DEC | Digits | 3 | val/acc | 1 | 0 | 0.9000 |" in table, table


def test_a_callback_setting_that_yaml_reads_as_a_date_is_compared_too(tmp_path, capsys):
    """YAML reads ``filename: 2026-12-03`` as a date, which JSON cannot write: the callbacks' sort key must still
    compare it (one group per value), not end the command with a TypeError."""
    for seed, (name, day) in enumerate([("a", "2026-12-03"), ("b", "2026-12-03"), ("c", "2026-12-04")]):
        cfg = config(seed % 2)
        cfg["trainer"]["callbacks"] *= 2  # two of one class: their order is decided by their settings
        folder = tmp_path / name
        write_run(folder, cfg, {"acc": 0.5})
        text = (folder / "config.yaml").read_text().replace("save_last: true",
                                                            f"save_last: true\n      filename: {day}", 1)
        (folder / "config.yaml").write_text(text)
    table = results([str(tmp_path)], capsys)
    assert "| 2026-12-03 | 2 | 0, 1 |" in table and "| 2026-12-04 | 1 | 0 |" in table, table


def test_a_class_setting_left_null_in_one_group_is_one_column(tmp_path, capsys):
    """Found by a researcher's probe: a run whose optimizer was null (the method's default) beside runs that name
    one gave two columns both called model.optimizer (the null setting, and the others' class_path)."""
    write_run(tmp_path / "a", config(0), {"acc": 0.5})
    default = config(0)
    default["model"]["init_args"]["optimizer"] = None
    write_run(tmp_path / "b", default, {"acc": 0.4})
    table = results([str(tmp_path)], capsys)
    header = next(line for line in table.splitlines() if line.startswith("| method"))
    assert header.count("| model.optimizer |") == 1 and "| model.optimizer.lr |" in header, table
    assert "| DEC | Digits | torch.optim.Adam | 0.001 | 1 | 0 | 0.5000 |" in table, table
    assert "| DEC | Digits | null | — | 1 | 0 | 0.4000 |" in table, table


def test_a_seed_run_twice_in_one_group_is_named(tmp_path, capsys):
    """Found by a researcher's probe: a rerun of a seed (or a resumed fit's run beside the one it resumed) counted
    as another seed in the mean and std, without a word (std 0 over "seeds 0, 0")."""
    from dcl.results import main

    write_run(tmp_path / "a", config(0), {"acc": 0.5})
    write_run(tmp_path / "b", config(0), {"acc": 0.5})
    write_run(tmp_path / "c", config(1), {"acc": 0.7})
    main([str(tmp_path)])
    out, err = capsys.readouterr()
    assert "| 3 | 0, 0, 1 |" in out
    assert "dcl: warning: DEC on Digits: seed 0 ran more than once in one group" in err
    main([str(tmp_path / "a"), str(tmp_path / "c")])
    assert "warning" not in capsys.readouterr().err
    write_run(tmp_path / "d", config(True), {"acc": 0.6})  # a seed drawn at random (true) is no rerun of seed 1
    main([str(tmp_path / "c"), str(tmp_path / "d")])
    out, err = capsys.readouterr()
    assert "| 2 | 1, true |" in out and not err


def test_a_setting_that_holds_a_pipe_keeps_the_markdown_row_whole(tmp_path, capsys):
    for seed, filename in enumerate(["{epoch}|{step}", "{epoch}|{step}", "last"]):
        cfg = config(seed % 2)
        cfg["trainer"]["callbacks"][0]["init_args"]["filename"] = filename
        write_run(tmp_path / str(seed), cfg, {"acc": 0.5})
    rows = results([str(tmp_path)], capsys).splitlines()[4:]
    assert rows == ["| DEC | Digits | last | 1 | 0 | 0.5000 |",
                    "| DEC | Digits | {epoch}\\|{step} | 2 | 0, 1 | 0.5000 ± 0.0000 |"]


def test_a_single_callback_saved_as_a_mapping_is_keyed_as_one_in_a_list(tmp_path, capsys):
    """Found by an audit: with one callback jsonargparse saves trainer.callbacks as a mapping, not a one-item list;
    its dirpath (one per run) then split two seeds of one experiment into two rows. The mapping must give the list's
    keys: its dirpath ignored, its settings named by class, and a run that lists the same callback in its group."""
    def single(seed: int, dirpath: str, save_last: bool = True) -> dict:
        cfg = config(seed)
        cfg["trainer"]["callbacks"] = {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                       "init_args": {"dirpath": dirpath, "save_last": save_last}}
        return cfg

    write_run(tmp_path / "a", single(0, str(tmp_path / "a" / "ckpts")), {"acc": 0.5})
    write_run(tmp_path / "b", single(1, str(tmp_path / "b" / "ckpts")), {"acc": 0.7})
    write_run(tmp_path / "c", config(2), {"acc": 0.6})  # the same callback, in a one-item list
    write_run(tmp_path / "d", single(0, str(tmp_path / "d" / "ckpts"), save_last=False), {"acc": 0.2})
    table = results([str(tmp_path)], capsys)
    assert "| method | data | trainer.callbacks.ModelCheckpoint.save_last | runs | seeds | ACC |" in table, table
    assert "| DEC | Digits | true | 3 | 0, 1, 2 | 0.6000 ± 0.1000 |" in table, table
    assert "| DEC | Digits | false | 1 | 0 | 0.2000 |" in table, table


def test_run_folders_behind_a_linked_folder_are_found_once(tmp_path, capsys):
    """Found by an audit: a folder of links to chosen runs gave "no run folders found" (Path.rglob follows no linked
    folder before Python 3.13). Links are followed, a link back up (a cycle) is walked once, and a run reached both
    through a link and directly counts once."""
    write_run(tmp_path / "all" / "a", config(0), {"acc": 0.5})
    write_run(tmp_path / "all" / "b", config(1), {"acc": 0.7})
    (tmp_path / "chosen").mkdir()
    (tmp_path / "chosen" / "a").symlink_to(tmp_path / "all" / "a", target_is_directory=True)
    (tmp_path / "chosen" / "up").symlink_to(tmp_path / "chosen", target_is_directory=True)  # a cycle
    (tmp_path / "all" / "a" / "back").symlink_to(tmp_path / "all", target_is_directory=True)  # another, to b
    assert "| DEC | Digits | 2 | 0, 1 | 0.6000 ± 0.1414 |" in results([str(tmp_path / "chosen")], capsys)
    capsys.readouterr()
    main(["results", str(tmp_path / "chosen"), str(tmp_path / "all")])
    out, err = capsys.readouterr()
    assert "| DEC | Digits | 2 | 0, 1 | 0.6000 ± 0.1414 |" in out and "warning" not in err, (out, err)


def test_unseeded_runs_of_one_group_are_draws_not_reruns(tmp_path, capsys):
    """Found by an audit: runs with seed_everything false (or null) that share their settings were named as "seed
    false ran more than once"; unseeded, each is a draw of its own, and counts in the mean and std. Only a seed run
    twice is named (a seed 0 is no repeat of a false, though 0 == False in Python)."""
    from dcl.results import main

    for name, seed, acc in [("a", False, 0.5), ("b", False, 0.7), ("c", None, 0.6), ("d", 0, 0.2)]:
        write_run(tmp_path / name, config(seed), {"acc": acc})
    main([str(tmp_path)])
    out, err = capsys.readouterr()
    assert "| DEC | Digits | 4 | 0, false, false, null | 0.5000 ± 0.2160 |" in out, out
    assert "warning" not in err, err
    write_run(tmp_path / "e", config(0), {"acc": 0.4})
    main([str(tmp_path)])
    out, err = capsys.readouterr()
    assert "| 5 | 0, 0, false, false, null |" in out, out
    assert "dcl: warning: DEC on Digits: seed 0 ran more than once in one group" in err, err


def test_the_docs_name_every_setting_that_splits_no_group():
    """Found by an audit: docs/usage.md's list of what splits no group left out weights_only and the model summary.
    Each ignored key is named there in backticks (a callback's folder by its own name, dirpath)."""
    from dcl.results import NOT_SETTINGS

    page = (REPO / "docs" / "usage.md").read_text()
    section = page.split("## Tabulating runs: `dcl results`", 1)[1].split("\n## ", 1)[0]
    names = {pattern.rpartition(".")[2] if "*" in pattern else pattern for pattern in NOT_SETTINGS}
    assert not [name for name in sorted(names) if f"`{name}`" not in section]
