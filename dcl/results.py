"""``dcl results DIR [DIR ...]``: the finished runs under some folders, one table row per group of runs that differ
only in their seed, with each score's mean and sample std; and the mean / std helpers that the benchmark scripts'
tables share (``benchmarks/results_table.py``).

A run folder is one that holds a fit's ``final_scores.json`` beside its ``config.yaml`` (both written by ``dcl fit``,
:class:`dcl.cli.FinalScores` and :class:`dcl.cli.RunConfig`). Two runs are in one group when their configs are equal
but for ``seed_everything`` and the settings that only say where or how a run records itself (:data:`NOT_SETTINGS`).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import io
import json
import math
import os
import sys
from pathlib import Path

SCORES_FILE = "final_scores.json"
CONFIG_FILE = "config.yaml"

#: Config keys (dotted, a callback by its class's name, another list's items by index; ``*`` any one key) that never
#: split a group: where and how a run records itself, not what it trains. The logger as a whole (which one, its
#: folder, run name, version or W&B id, project, tags); the run's folder; the checkpoint a fit resumed from (``dcl
#: fit`` saves it as null); what predict writes; the progress bar and model summary; the folders the callbacks write
#: to (checkpoints, plots).
NOT_SETTINGS = ("seed_everything", "ckpt_path", "weights_only", "predictions", "trainer.logger",
                "trainer.default_root_dir", "trainer.enable_progress_bar", "trainer.enable_model_summary",
                "trainer.callbacks.*.init_args.dirpath")

#: The key of the callbacks' list, keyed by class rather than by place (:func:`_callback_items`).
CALLBACKS = "trainer.callbacks"

#: The scores shown first, in this order; any others of final_scores.json follow in the order the files hold them.
FIRST_SCORES = ("acc", "nmi", "ari")


class ResultsError(ValueError):
    """Folders with no runs to tabulate, or a run's file that cannot be read: one line saying which and what to do."""


# -- mean and sample std ---------------------------------------------------------------------------------------------
def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """The mean and the sample std (n - 1) of ``values``; (None, None) for none, std None for one value."""
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def mean_std_cell(mean: float | None, std: float | None, fmt: str = "{:.4f}") -> str:
    """``mean ± std`` in ``fmt``; the mean alone without a std (one value), ``—`` without a mean."""
    if mean is None:
        return "—"
    return fmt.format(mean) if std is None else f"{fmt.format(mean)} ± {fmt.format(std)}"


# -- runs ------------------------------------------------------------------------------------------------------------
class Run:
    """One run folder: its seed, method, data set, the settings that define its group, and its scores."""

    def __init__(self, folder: Path, config: dict, scores: dict):
        self.folder, self.scores = folder, scores
        self.seed = config.get("seed_everything")
        self.method = _class_name(config.get("model"))
        self.dataset = _class_name(config.get("data"))
        self.settings = {key: value for key, value in _flatten(config).items() if not _not_a_setting(key)}

    @property
    def group_key(self) -> tuple:
        return tuple(sorted((key, _json(value)) for key, value in self.settings.items()))


def find_runs(folders: list[str | Path]) -> list[Run]:
    """Every run folder under ``folders`` (each itself one, or holding some at any depth), in path order."""
    files: dict[Path, None] = {}
    for folder in map(Path, folders):
        if not folder.exists():
            raise ResultsError(f"{folder} does not exist; give the folders that hold your runs' folders, e.g. "
                               "outputs (each run folder holds final_scores.json and config.yaml)")
        if folder.is_file():
            raise ResultsError(f"{folder} is a file; give the folders that hold your runs' folders")
        files |= {path.resolve(): None for path in _scores_files(folder)}
    runs, no_config = [], []
    for scores_file in files:
        config_file = scores_file.parent / CONFIG_FILE
        if not config_file.is_file():
            no_config.append(scores_file.parent)
            continue
        runs.append(Run(scores_file.parent, _read_config(config_file), _read_scores(scores_file)))
    if not runs:
        where = ", ".join(str(f) for f in folders)
        also = (f" ({len(no_config)} folder(s) hold {SCORES_FILE} without {CONFIG_FILE}, e.g. {no_config[0]})"
                if no_config else "")
        raise ResultsError(f"no run folders found under {where}{also}: a run folder holds the {SCORES_FILE} and "
                           f"{CONFIG_FILE} that dcl fit writes at its end; give the folder your fits wrote to "
                           "(their logger's save_dir, or trainer.default_root_dir without a logger)")
    for folder in no_config:  # a copied or hand-made file: its settings are unknown, so no group is right for it
        print(f"dcl: warning: {folder} holds {SCORES_FILE} but no {CONFIG_FILE}; it is left out (its settings are "
              "unknown)", file=sys.stderr)
    return runs


def _scores_files(folder: Path) -> list[Path]:
    """The final_scores.json files under ``folder``, in path order, through linked folders too (a folder of links to
    chosen runs; Path.rglob follows none before Python 3.13), each real folder walked once (a link may lead back up)."""
    found, walked = [], set()
    for root, folders, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in walked:
            folders.clear()  # walked already: a cycle, or a second link to it (its runs are found)
            continue
        walked.add(real)
        if SCORES_FILE in files:
            found.append(Path(root) / SCORES_FILE)
    return sorted(found)


def _read_scores(path: Path) -> dict:
    return _read(path, json.loads, (json.JSONDecodeError,), "a final_scores.json of dcl fit (an object of scores)",
                 lambda scores: isinstance(scores, dict) and all(
                     isinstance(v, (int, float)) and not isinstance(v, bool) for v in scores.values()))


def _read_config(path: Path) -> dict:
    import yaml

    return _read(path, yaml.safe_load, (yaml.YAMLError,), "the config.yaml of dcl fit (a mapping of settings)",
                 lambda config: isinstance(config, dict))


def _read(path: Path, parse, parse_errors: tuple, what: str, valid) -> dict:
    """``parse`` of the file's text, or one :class:`ResultsError` naming the file: unreadable, or not ``what``."""
    todo = "rerun that fit, or move its folder out of the ones given"
    try:
        value = parse(path.read_text())
    except (OSError, UnicodeDecodeError, *parse_errors) as err:
        raise ResultsError(f"cannot read {path}: {_one_line(err)}; {todo}") from None
    if not valid(value):
        raise ResultsError(f"cannot read {path}: it is not {what}; {todo}")
    return value


def _one_line(err: Exception) -> str:
    """An error's text on one line (a YAML parser's spans several, with the place it stopped)."""
    return " ".join(str(err).split())


def _class_name(entry) -> str:
    path = entry.get("class_path") if isinstance(entry, dict) else None
    return str(path).rpartition(".")[2] if path else "—"


def _flatten(value, prefix: str = "") -> dict:
    """Nested settings as ``{"a.b.c": value}``; the callbacks by class (:func:`_callback_items`), another list of
    mappings by index, other lists as values. A class's path is the value of its own key (``model.init_args.optimizer:
    torch.optim.SGD``), the key a run that sets none holds null in: one column, not two of one name."""
    if prefix == CALLBACKS and isinstance(value, dict):
        value = [value]  # jsonargparse saves a single callback bare: keyed as in a list, its dirpath ignored alike
    if isinstance(value, dict):
        items = value.items()
        if prefix and "class_path" in value:
            return {prefix: value["class_path"]} | _flatten({k: v for k, v in value.items() if k != "class_path"},
                                                             prefix)
    elif isinstance(value, list) and any(isinstance(v, dict) for v in value):
        items = _callback_items(value) if prefix == CALLBACKS else enumerate(value)
    else:
        return {prefix: value}
    out = {}
    for key, item in items:
        out |= _flatten(item, f"{prefix}.{key}" if prefix else str(key))
    return out


def _callback_items(callbacks: list) -> list[tuple[str, object]]:
    """The callbacks keyed by their class's name, not their place in the list, so that two configs listing the same
    callbacks in another order are one group. Callbacks of one name are told apart by their settings (sorted by them,
    the first keyed ``Name``, the next ``Name#2``...), not by their order or their folders (:data:`NOT_SETTINGS`);
    the class path itself stays a setting inside (two classes of one name differ in it)."""
    by_name: dict[str, list] = {}
    for callback in callbacks:
        by_name.setdefault(_class_name(callback), []).append(callback)
    items = []
    for name, same in by_name.items():
        prefix = f"{CALLBACKS}.{name}"
        same.sort(key=lambda callback: _json(
            {k: v for k, v in _flatten(callback, prefix).items() if not _not_a_setting(k)}))
        items += [(name if i == 0 else f"{name}#{i + 1}", callback) for i, callback in enumerate(same)]
    return items


def _not_a_setting(key: str) -> bool:
    parts = key.split(".")
    for pattern in NOT_SETTINGS:
        wanted = pattern.split(".")
        if len(parts) >= len(wanted) and all(w in ("*", p) for w, p in zip(wanted, parts)):
            return True
    return False


def _unseeded(seed) -> bool:
    """``seed_everything`` false (or null in a hand-written config): each such run is a draw of its own, no rerun."""
    return seed is None or seed is False


# -- the table -------------------------------------------------------------------------------------------------------
def summarize(runs: list[Run]) -> tuple[list[str], list[str], list[dict]]:
    """The setting columns, the score names and one row per group of runs that differ only in their seed.

    The setting columns are the settings that differ between groups of one method and data set (a row of another
    method shows its own value, or ``—`` where it has no such setting). Each row holds the method, the data set,
    its settings, its runs' seeds and, per score, the mean, the sample std and the number of runs that have it."""
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault((run.method, run.dataset, run.group_key), []).append(run)
    names_by_block: dict[tuple, set[str]] = {}
    for method, dataset, key in groups:
        names_by_block.setdefault((method, dataset), set()).update(name for name, _ in key)
    columns = {name for (method, dataset), names in names_by_block.items() for name in names
               if len({_json(members[0].settings.get(name, "—"))
                       for (m, d, _), members in groups.items() if (m, d) == (method, dataset)}) > 1}
    columns = sorted(columns, key=_column_order)
    scores = list(dict.fromkeys([*(s for s in FIRST_SCORES if any(s in r.scores for r in runs)),
                                 *(s for r in runs for s in r.scores)]))
    rows = []
    for (method, dataset, _), members in groups.items():
        settings = members[0].settings
        row = {"method": method, "dataset": dataset,
               "settings": {c: settings.get(c, "—") for c in columns},
               "runs": len(members), "seeds": sorted((r.seed for r in members), key=_sort_value),
               "scores": {}}
        for name in scores:
            values = [r.scores[name] for r in members if name in r.scores]
            row["scores"][name] = (*mean_std(values), len(values),
                                   all(isinstance(v, int) for v in values))
        rows.append(row)
    rows.sort(key=lambda r: (r["method"], r["dataset"], *(_sort_value(r["settings"][c]) for c in columns)))
    return columns, scores, rows


def _column_order(key: str) -> tuple:
    return ({"model": 0, "data": 1, "trainer": 2}.get(key.split(".")[0], 3), key)


def _sort_value(value) -> tuple:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value, "")
    return (1, 0, _json(value))


def column_name(key: str) -> str:
    """``model.init_args.optimizer.init_args.lr`` -> ``model.optimizer.lr``."""
    return ".".join(p for p in key.split(".") if p != "init_args")


def value_text(value) -> str:
    return str(value) if isinstance(value, (str, datetime.date)) else _json(value)


def _json(value) -> str:
    """A setting as comparable text. YAML reads some values as what JSON cannot write (``2026-12-03``: a date):
    those are compared, and shown, as their text."""
    return json.dumps(value, sort_keys=True, default=str)


def render_markdown(columns: list[str], scores: list[str], rows: list[dict]) -> str:
    head = ["method", "data", *map(column_name, columns), "runs", "seeds", *(s.upper() for s in scores)]
    n = sum(r["runs"] for r in rows)
    lines = [f"Scores of {n} run{'' if n == 1 else 's'} (final_scores.json): each row the runs that differ "
             "only in their seed, each score the mean ± sample std over them (one run: its value).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["method"], row["dataset"], *(value_text(row["settings"][c]) for c in columns), str(row["runs"]),
                 ", ".join(map(value_text, row["seeds"]))]
        for name in scores:
            mean, std, n, integer = row["scores"][name]
            text = mean_std_cell(mean, std, "{:.1f}" if integer else "{:.4f}")
            cells.append(text + (f" ({n} of {row['runs']} runs)" if 0 < n < row["runs"] else ""))
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def render_csv(columns: list[str], scores: list[str], rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["method", "dataset", *map(column_name, columns), "runs", "seeds",
                     *(f"{s}_{stat}" for s in scores for stat in ("mean", "sample_std", "runs"))])
    for row in rows:
        cells = [row["method"], row["dataset"], *(value_text(row["settings"][c]) for c in columns), row["runs"],
                 " ".join(map(value_text, row["seeds"]))]
        for name in scores:
            mean, std, n, _ = row["scores"][name]  # n: the runs that recorded it (SILHOUETTE may be undefined)
            cells += ["" if mean is None else repr(mean), "" if std is None else repr(std), n]
        writer.writerow(cells)
    return out.getvalue()


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one dcl: error: line, as the other commands' (not argparse's usage dump)
        raise ResultsError(f"{message} (see dcl results --help)")


def main(argv: list[str]) -> None:
    """``dcl results DIR [DIR ...] [--format markdown|csv]``: print the table of the runs under the folders."""
    parser = _Parser(prog="dcl results", description=(
        "Tabulate finished fits: every run folder (final_scores.json beside config.yaml) under the folders given, "
        "one row per group of runs that differ only in their seed_everything (their logger, run folder and "
        "checkpoint paths aside), with the settings that tell the groups apart, the seeds, and each score's mean "
        "± sample std."))
    parser.add_argument("folders", nargs="+", metavar="DIR", help="folders holding run folders, at any depth")
    parser.add_argument("--format", choices=("markdown", "csv"), default="markdown",
                        help="a markdown table (default) or CSV, with each score's mean and sample std as columns")
    args = parser.parse_args(argv)
    columns, scores, rows = summarize(find_runs(args.folders))
    render = render_csv if args.format == "csv" else render_markdown
    print(render(columns, scores, rows), end="")
    for row in rows:  # a rerun of a seed, or a resumed fit's run beside the one it resumed, is no new seed
        seeds = [s for s in row["seeds"] if not _unseeded(s)]
        keys = [_json(s) for s in seeds]  # compared as text: 1 == True in Python, yet a true is no seed 1
        repeated = list(dict.fromkeys(value_text(s) for s, key in zip(seeds, keys) if keys.count(key) > 1))
        if repeated:
            print(f"dcl: warning: {row['method']} on {row['dataset']}: seed {', '.join(repeated)} ran more than once "
                  f"in one group, and each run counts in its mean and std (a rerun, or a resumed fit beside the run "
                  f"it resumed); move the extra runs out of the folders given", file=sys.stderr)
