"""Fits of a benchmark that a kill does not lose: each fit lives in its own run folder, saves
``<run>/checkpoints/resume.ckpt`` every ``RESUME_EVERY`` epochs, and a re-run of the same command goes on from it;
a finished fit's ``<run>/result.json`` is reused, not redone. Used by ``shared_pretraining.py`` (``dcl fit``
processes), ``aecm.py`` and ``dcfae.py`` (fits in the script's process).

A run folder also keeps the settings it was started with (``settings.json``): a command with other settings (budget,
seed, hyperparameters) that would reuse the folder is refused, with the folder and the settings that differ, so a run
is never continued or reused at settings other than its own. A limit on a fit's wall time is not a setting: a fit
stopped by it (a result with ``stopped_by_time``) is reported but not kept as finished, and the next run goes on from
the checkpoint saved at the stop. Resuming is exact (``tests/test_reliability.py``): on a CPU the resumed fit ends as
the uninterrupted one (``tests/test_benchmark_resume.py``).
"""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Callable
from pathlib import Path

from dcl.files import atomic_write

#: every fit saves ``checkpoints/resume.ckpt`` every this many epochs (a config's ``last.ckpt`` is written only when a
#: fit ends), so a benchmark stopped mid-fit goes on from there
RESUME_EVERY = 10


def _checkpoint_settings() -> dict:
    # one file, overwritten (no resume-v1.ckpt beside a stale resume.ckpt when the run folder has moved)
    return {"filename": "resume", "every_n_epochs": RESUME_EVERY, "save_on_train_epoch_end": True,
            "enable_version_counter": False}


def resume_checkpoint_args() -> list[str]:
    """The ``dcl fit`` arguments that add the resume checkpoint to a config's callbacks (``<default_root_dir>/
    checkpoints/resume.ckpt``)."""
    args = ["--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint"]
    for key, value in _checkpoint_settings().items():
        args += [f"--trainer.callbacks.init_args.{key}", str(value).lower() if isinstance(value, bool) else str(value)]
    return args


def resume_checkpoint(run: Path):
    """The resume checkpoint of a fit in this process (``run/checkpoints/resume.ckpt``): the one ``dcl fit`` gets
    from :func:`resume_checkpoint_args`, which also saves at the epoch a fit ends (its budget's last, or a stop such
    as a wall-time limit), so that no epoch run is lost and a longer fit can start from there."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    class ResumeCheckpoint(ModelCheckpoint):
        def on_train_epoch_end(self, trainer, pl_module) -> None:
            super().on_train_epoch_end(trainer, pl_module)  # (checkpoints run after the other callbacks, the Timer)
            ends = trainer.should_stop or trainer.current_epoch + 1 >= (trainer.max_epochs or 0) > 0
            saved = (trainer.current_epoch + 1) % RESUME_EVERY == 0  # by ModelCheckpoint just now, at this step
            if ends and not saved and not trainer.sanity_checking:
                trainer.save_checkpoint(self.format_checkpoint_name({}))  # (Lightning's public save: no private state)

    return ResumeCheckpoint(dirpath=run / "checkpoints", **_checkpoint_settings())


def wall_time_limit(minutes: float):
    """Lightning's ``Timer`` (stops a fit at the end of the epoch in which ``minutes`` pass) counting this process's
    time only: a resumed fit gets the whole limit again (the time of a lent machine's session), not what its earlier
    processes left."""
    from lightning.pytorch.callbacks import Timer

    class ProcessTimer(Timer):
        def load_state_dict(self, state_dict: dict) -> None:  # (the checkpoint's time elapsed is not restored)
            pass

    return ProcessTimer(datetime.timedelta(minutes=minutes), interval="epoch")


def _write_json(path: Path, doc: dict) -> None:
    """Written whole or not at all (a kill while writing leaves the earlier file)."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(doc, indent=1)))


def _check_settings(run: Path, settings: dict) -> None:
    path = run / "settings.json"
    settings = json.loads(json.dumps(settings))  # as read back
    if not path.is_file():
        _write_json(path, settings)
        return
    recorded = json.loads(path.read_text())
    if recorded != settings:
        differ = sorted(k for k in recorded.keys() | settings.keys() if recorded.get(k) != settings.get(k))
        raise SystemExit(f"{run} holds a fit with other settings ("
                         + "; ".join(f"{k}: {recorded.get(k)!r} there, {settings.get(k)!r} now" for k in differ)
                         + "): not resumed or reused. Delete that folder to run it again with these settings, or give "
                         "this run another --tag.")


def cached_fit(run: Path, settings: dict, fit: Callable[[Path | None], dict]) -> dict:
    """The result of one fit in ``run``: ``run/result.json`` when it finished before; else ``fit(checkpoint)``, with
    ``run/checkpoints/resume.ckpt`` when an earlier process saved one (else None), whose result is kept there. The
    result's ``wall_s`` sums its processes, an interrupted one counted up to its last checkpoint (the work that was
    kept), and ``resumed`` says how many times it went on from a checkpoint. ``settings``: what the fit is (JSON);
    a run folder started with other settings is refused (SystemExit)."""
    run.mkdir(parents=True, exist_ok=True)
    done = run / "result.json"
    if done.is_file() and not (run / "settings.json").is_file():  # (a run finished before settings were recorded)
        return json.loads(done.read_text())
    _check_settings(run, settings)
    if done.is_file():
        return json.loads(done.read_text())
    resume, segments = run / "checkpoints" / "resume.ckpt", run / "segments.json"
    state = json.loads(segments.read_text()) if segments.is_file() else {"kept_s": 0.0, "resumed": 0}
    if "start" in state and resume.is_file():  # the last process was interrupted: keep its time up to its checkpoint
        state["kept_s"] += max(0.0, resume.stat().st_mtime - state["start"])
    if resume.is_file():
        state["resumed"] += 1
    state["start"] = time.time()
    _write_json(segments, state)
    result = fit(resume if resume.is_file() else None)
    result = {**result, "wall_s": round(state["kept_s"] + result["wall_s"], 2),
              **({"resumed": state["resumed"]} if state["resumed"] else {})}
    if not result.get("stopped_by_time"):
        _write_json(done, result)
    return result
