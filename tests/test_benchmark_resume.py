"""benchmarks/aecm.py, benchmarks/dcfae.py and benchmarks/dekm.py resume a killed fit (benchmarks/resumable.py): the
re-run of the same command goes on from the fit's last resume checkpoint, not from step 0, reuses what finished, ends
with the scores of an uninterrupted run, and refuses a run folder started with other settings. A kill is an exception
raised inside an epoch after a resume checkpoint (what the next process sees of a kill -9: the files written until
then). dcfae.py's record keeps the other seeds' runs when only the threads differ (each run records its own)."""

from __future__ import annotations

import argparse
import json
import sys

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))  # (the scripts import their neighbours)
import aecm  # noqa: E402
import dcfae  # noqa: E402
import dekm  # noqa: E402
import resumable  # noqa: E402


class Killed(Exception):
    pass


class Kill(pl.Callback):
    """Kills the fit inside epoch ``epoch`` (after its second batch)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == 1:
            raise Killed


class FirstStep(pl.Callback):
    """The step at which each fit of the process trained its first batch."""

    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_train_start(self, trainer, pl_module) -> None:
        self.steps.append(trainer.global_step)


def saved_step(run) -> int:
    return torch.load(run / "checkpoints" / "resume.ckpt", weights_only=False, map_location="cpu")["global_step"]


@pytest.fixture(autouse=True)
def _resume_every_2(monkeypatch):
    monkeypatch.setattr(resumable, "RESUME_EVERY", 2)


def test_aecm_resumes_a_killed_fit_to_the_scores_of_an_uninterrupted_one(tmp_path):
    # init pre: 1 pretraining epoch, 1 of the CM alone, 2 joint epochs (scored after each), the averaging epoch
    fit = dict(method="aecm", data="digits", epochs=2, seed=0, batch_size=256, curve_every=1,
               overrides={"init": "pre", "pretrain_epochs": 1, "cm_epochs": 1, "lr_decay_epochs": 0})
    full = aecm.run(**fit, work=tmp_path / "full")
    run = tmp_path / "cut"
    with pytest.raises(Killed):  # in the averaging epoch, after the checkpoint of epoch 4
        aecm.run(**fit, work=run, callbacks=(Kill(4),))
    assert not (run / "result.json").exists()
    step = saved_step(run)
    first = FirstStep()
    resumed = aecm.run(**fit, work=run, callbacks=(first,))
    assert first.steps == [step] and step == full["steps"] * 4 // 5  # after 4 of the 5 epochs: from the checkpoint
    assert resumed["resumed"] == 1 and "resumed" not in full
    same = ("argmax_gamma", "kmeans_on_embedding", "phases", "curve", "steps")  # (the scores before it: restored)
    assert {k: resumed[k] for k in same} == {k: full[k] for k in same}
    assert len(full["curve"]) == 2 and set(full["phases"]) == {"pretraining", "cm_alone"}
    assert aecm.run(**fit, work=run, callbacks=(Kill(0),)) == resumed  # finished: reused, not fitted again
    with pytest.raises(SystemExit, match="other settings.*epochs: 2 there, 3 now"):
        aecm.run(**{**fit, "epochs": 3}, work=run)


def test_dcfae_resumes_each_killed_phase_to_the_scores_of_an_uninterrupted_run(tmp_path, monkeypatch):
    monkeypatch.setattr(dcfae, "WORK", tmp_path)
    args = argparse.Namespace(data="digits", fae_epochs=3, dense_epochs=2, channels=[8, 16], batch_size=128,
                              generator_lr=1e-3, discriminator_lr=2e-4, perplexity=30.0, similarity_batches=1,
                              phase1_minutes=None, seed=0, tag="full")
    full, full_images = dcfae.run_variant(args, "fae")
    args.tag = "cut"
    run = tmp_path / "digits_cut_fae_s0"
    with pytest.raises(Killed):  # phase 1 (epochs 0-2), in its last epoch: goes on from the checkpoint of epoch 1
        dcfae.run_variant(args, "fae", callbacks=(Kill(2),))
    step1 = saved_step(run / "phase1")
    first = FirstStep()
    with pytest.raises(Killed):  # then phase 2 (epochs 3-4), in its last epoch: goes on from the one of epoch 3
        dcfae.run_variant(args, "fae", callbacks=(first, Kill(4)))
    assert (run / "phase1" / "result.json").exists() and not (run / "phase2" / "result.json").exists()
    step2 = saved_step(run / "phase2")
    assert first.steps == [step1, saved_step(run / "phase1")] and 0 < step1 < step2
    first = FirstStep()
    resumed, images = dcfae.run_variant(args, "fae", callbacks=(first,))
    assert first.steps == [step2]  # phase 1 reused, phase 2 from its checkpoint
    assert resumed.pop("phase1_resumed") == 1 and resumed.pop("phase2_resumed") == 1
    timing = ("phase1_seconds", "phase2_seconds")
    assert {k: v for k, v in resumed.items() if k not in timing} == {k: v for k, v in full.items() if k not in timing}
    assert all(np.array_equal(a, b) for a, b in zip(images, full_images))
    args.dense_epochs = 3
    with pytest.raises(SystemExit, match="other settings.*dense_epochs: 2 there, 3 now"):
        dcfae.run_variant(args, "fae")


def test_dcfae_keeps_the_seeds_recorded_with_other_threads(tmp_path, monkeypatch):
    monkeypatch.setattr(dcfae, "RESULTS", tmp_path)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # (this process's threads stay as they are)
    scores = {"acc": 0.5, "nmi": 0.4, "ari": 0.3}

    def fake_run(args, variant):  # no training: a run's record
        return {"latent + k-means (no dense net)": scores, "dense embedding + k-means": scores,
                "phase1_seconds": 1.0, "phase2_seconds": 1.0, "phase1_last_epoch_metrics": {}}, None

    monkeypatch.setattr(dcfae, "run_variant", fake_run)

    def main(*argv):
        monkeypatch.setattr(sys, "argv", ["dcfae.py", "--data", "digits", "--variants", "fae", "--fae-epochs", "1",
                                          *argv])
        dcfae.main()
        return json.loads((tmp_path / "dcfae_digits.json").read_text())

    main("--seed", "0")
    record = main("--seed", "1", "--threads", "2")
    assert {s: r["fae"]["threads"] for s, r in record["seeds"].items()} == {"0": 1, "1": 2}
    assert "CPU, 1 / 2 thread(s))" in (tmp_path / "dcfae_digits.md").read_text().splitlines()[0]
    assert list(main("--seed", "2", "--fae-epochs", "2")["seeds"]) == ["2"]  # another budget starts over


def test_dekm_resumes_a_killed_run_to_the_scores_of_an_uninterrupted_one(tmp_path, monkeypatch):
    # dcl fit in the script's process: 3 pretraining epochs, then the clustering phase, at most 24 iterations (3 epochs)
    budget = ("digits", 0, 3, 24)
    monkeypatch.setattr(dekm, "WORK", tmp_path / "full")
    full = dekm.run_one(*budget, [])
    monkeypatch.setattr(dekm, "WORK", tmp_path / "cut")
    run = tmp_path / "cut" / "digits-s0-p3-m24"
    kill = ["--trainer.callbacks+=test_benchmark_resume.Kill", "--trainer.callbacks.init_args.epoch", "4"]
    with pytest.raises(Exception) as killed:  # in the clustering phase's second epoch, after the checkpoint of epoch 3
        dekm.run_one(*budget, [], kill)
    assert type(killed.value).__name__ == "Killed"  # (the CLI imports this file as a module of its own: another class)
    assert not (run / "result.json").exists() and saved_step(run) > 0
    resumed = dekm.run_one(*budget, [])
    last_segment = max(run.rglob("metrics.csv"), key=lambda p: p.stat().st_mtime).read_text().splitlines()
    header = last_segment[0].split(",")
    assert min(int(line.split(",")[header.index("epoch")]) for line in last_segment[1:]) == 4  # from the checkpoint
    assert resumed.pop("resumed") == 1 and "resumed" not in full
    timing = ("wall_s",)
    assert {k: v for k, v in resumed.items() if k not in timing} == {k: v for k, v in full.items() if k not in timing}
    assert full["ae_kmeans_acc"] is not None and full["cluster_iterations"] > 0
    assert dekm.run_one(*budget, [], kill) == {**resumed, "resumed": 1}  # finished: reused, not fitted again
    with pytest.raises(SystemExit, match="other settings.*extra: \\[\\] there"):
        dekm.run_one(*budget, ["--model.init_args.tol", "0.01"])
