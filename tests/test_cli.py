"""The ``dcl`` command end to end: fit, predict, list, logging, and one clear error for each bad input."""

from __future__ import annotations

import csv
import io
import ctypes
import functools
import json
import logging
import os
import re
import subprocess
import sys
import time
import warnings
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import DCFAE_TINY_ARGS, QUIET, REPO, require_data, run_cli
import dcl
from dcl import registry
from dcl.cli import keep_freed_memory, main, sets_the_allocator
from dcl.datamodule import DataError
from dcl.files import unwritable_folder

SMALL_AE = ["--model.init_args.hidden_dims", "[64, 64]"]
AE_DIGITS = ["--config", str(REPO / "configs/ae_kmeans/digits.yaml"), "--trainer.max_epochs", "3",
             "--trainer.check_val_every_n_epoch", "1", *SMALL_AE]


def fit_ae(tmp_path: Path, *extra: str) -> dict:
    return run_cli(["fit", *AE_DIGITS, *extra], tmp_path)


def test_fit_prints_and_writes_final_scores(tmp_path, capsys, recwarn):
    scores = fit_ae(tmp_path)
    out = capsys.readouterr().out
    # the command line reaches LightningCLI once: no "args and command line arguments" warning on every run
    assert not [w for w in recwarn if "args parameter" in str(w.message)]
    # dcl saves the run's config with jsonargparse's current argument (Lightning's own call still warns)
    assert not [w for w in recwarn if "skip_none" in str(w.message) and "dcl" in Path(w.filename).parts]
    assert "dcl: final clustering of 1797 samples" in out and "ACC=" in out and "NMI=" in out
    assert scores["k"] == 10 and 0.3 < scores["acc"] <= 1 and 0 < scores["nmi"] <= 1
    assert f"SILHOUETTE={scores['silhouette']:.4f}" in out and 0 < scores["silhouette"] <= 1


def test_fit_prints_its_run_folder(tmp_path, capsys):
    """Found by probing as a user: runs of a sweep land in folders named by a W&B run id or a version_N, and the
    command did not say which was its own."""
    run_cli(["fit", *AE_DIGITS, "--trainer.logger", "lightning.pytorch.loggers.CSVLogger",
             "--trainer.logger.save_dir", str(tmp_path)], tmp_path, quiet=False)
    scores = next(tmp_path.rglob("final_scores.json"))
    assert scores.parent.name == "version_0"
    assert f"dcl: final scores written to {scores} (the run folder" in capsys.readouterr().out


def test_a_fit_embeds_its_samples_once_at_its_end_before_lightnings_teardown(tmp_path, monkeypatch):
    """The final scores and the plots (``on_fit_end``) each embedded every sample again, after Lightning's teardown
    had moved the module to the CPU: two more passes over the data at the end of every fit (1,000,000 x 50 samples,
    the papers' network: 17 s each on 2 CPU threads), and a GPU fit's on the CPU (under DDP with CPU tensors in the
    gather). The fit embeds them once, in the method's ``on_train_end``, for both."""
    from lightning.pytorch.strategies import Strategy

    from dcl.method import ClusteringMethod

    events = []
    embed_all, teardown = ClusteringMethod.embed_all, Strategy.teardown

    def spy_embed_all(self, *args, **kwargs):
        events.append("embed_all")
        return embed_all(self, *args, **kwargs)

    def spy_teardown(self):
        events.append("teardown")
        return teardown(self)

    monkeypatch.setattr(ClusteringMethod, "embed_all", spy_embed_all)
    monkeypatch.setattr(Strategy, "teardown", spy_teardown)
    scores = fit_ae(tmp_path)  # 3 epochs, each validated (an embedding, k-means), the plots on
    assert "embed_all" not in events[events.index("teardown"):]
    assert events.count("embed_all") == 3 + 1
    assert sorted(p.name for p in tmp_path.rglob("plots/*.png")) == ["cluster_sizes.png", "confusion.png",
                                                                     "embedding.png"]
    assert scores["k"] == 10 and scores["acc"] > 0.3 and 0 < scores["silhouette"] <= 1


def test_a_fit_that_ends_in_one_cluster_says_so(tmp_path, capsys):
    """Samples without structure (all equal) end in one cluster: the scores alone (K_USED=1) went unremarked."""
    np.save(tmp_path / "same.npy", np.ones((40, 3), dtype=np.float32))
    scores = run_cli(["fit", "--model", "AEKMeans", "--data", "Arrays", "--data.path", str(tmp_path / "same.npy"),
                      "--data.n_clusters", "2", "--trainer.max_epochs", "1", *SMALL_AE], tmp_path)
    assert scores["k_used"] == 1
    assert "every sample ended in one cluster of the 2" in capsys.readouterr().err
    (tmp_path / "ok").mkdir()
    fit_ae(tmp_path / "ok")  # digits, 10 clusters found: no such line
    assert "ended in one cluster" not in capsys.readouterr().err
    # a method that finds K, here limited to one component, on labeled data of 3 classes (once unremarked: K = 1)
    np.save(tmp_path / "labels.npy", np.arange(40) % 3)
    (tmp_path / "dp").mkdir()
    scores = run_cli(["fit", "--model", "DPGMM", "--model.init_args.max_components", "1",
                      "--model.init_args.hidden_dims", "[8]", "--model.init_args.pretrain_epochs", "1",
                      "--data", "Arrays", "--data.path", str(tmp_path / "same.npy"),
                      "--data.labels_path", str(tmp_path / "labels.npy"), "--trainer.max_epochs", "2"], tmp_path / "dp")
    assert scores["k"] == scores["k_used"] == 1
    err = capsys.readouterr().err
    assert "every sample ended in one cluster, though the data has 3 classes" in err
    assert "finds the number of clusters itself" not in err
    # of one class and unlabeled samples (label -1, not a class): one cluster is right, and not remarked on
    np.save(tmp_path / "one_class.npy", np.where(np.arange(40) < 20, 0, -1))
    (tmp_path / "dp_one").mkdir()
    run_cli(["fit", "--model", "DPGMM", "--model.init_args.max_components", "1", "--model.init_args.hidden_dims",
             "[8]", "--model.init_args.pretrain_epochs", "1", "--data", "Arrays", "--data.path",
             str(tmp_path / "same.npy"), "--data.labels_path", str(tmp_path / "one_class.npy"), "--trainer.max_epochs",
             "2"], tmp_path / "dp_one")
    assert "ended in one cluster" not in capsys.readouterr().err
    # a K given to a method that finds K itself is said to be unused (it was silently ignored)
    (tmp_path / "dp_k").mkdir()
    run_cli(["fit", "--model", "DPGMM", "--model.init_args.hidden_dims", "[8]", "--model.init_args.pretrain_epochs",
             "1", "--data", "Arrays", "--data.path", str(tmp_path / "same.npy"), "--data.n_clusters", "3",
             "--trainer.max_epochs", "1"], tmp_path / "dp_k")
    assert ("DPGMM finds the number of clusters itself, so data n_clusters 3 is not used; its k_init and "
            "max_components set where K starts and its maximum") in capsys.readouterr().err


def test_unlabeled_data_needs_n_clusters_only_for_methods_that_do_not_find_it(tmp_path, capsys, dcl_error):
    """Found by an audit against METHODS.md ("needs no prior K"): on unlabeled data the command refused DPGMM unless
    data.n_clusters was set, and then said that value was not used; a method that needs K must still be told."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(30, 3)), rng.normal(loc=8.0, size=(30, 3))]).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    data = ["--data", "Arrays", "--data.path", str(tmp_path / "x.npy")]
    (tmp_path / "dp").mkdir()
    scores = run_cli(["fit", "--model", "DPGMM", "--model.init_args.hidden_dims", "[8]",
                      "--model.init_args.pretrain_epochs", "1", *data, "--trainer.max_epochs", "2",
                      "--trainer.enable_checkpointing", "true"], tmp_path / "dp")
    assert scores["k"] >= 1 and "acc" not in scores
    assert "is not used" not in capsys.readouterr().err
    run_cli(["predict", "--config", str(tmp_path / "dp" / "config.yaml"), "--ckpt_path",
             str(next((tmp_path / "dp").rglob("*.ckpt"))), "--predictions.output", "p.csv"], tmp_path / "dp")
    clusters = {r["cluster"] for r in csv.DictReader((tmp_path / "dp" / "p.csv").open())}
    assert 1 <= len(clusters) <= scores["k"]
    (tmp_path / "dec").mkdir()
    msg = dcl_error(["fit", "--model", "DEC", *SMALL_AE, *data, "--trainer.max_epochs", "1"], tmp_path / "dec")
    assert "the data has no labels" in msg and "set data.n_clusters" in msg


def test_a_checkpoint_of_one_cluster_is_validated_and_predicts(tmp_path):
    """Found by probing as a user: a DPGMM fitted to data whose labels hold one class ended with n_clusters 1, and
    dcl validate / predict with its run's config and checkpoint were refused (the checkpoint's K became the data's
    n_clusters, which had to be at least 2)."""
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32))
    np.save(tmp_path / "y.npy", np.zeros(40, dtype=np.int64))
    (tmp_path / "run").mkdir()
    scores = run_cli(["fit", "--model", "DPGMM", "--model.init_args.hidden_dims", "[8]",
                      "--model.init_args.pretrain_epochs", "1", "--data", "Arrays", "--data.path",
                      str(tmp_path / "x.npy"), "--data.labels_path", str(tmp_path / "y.npy"), "--trainer.max_epochs",
                      "2", "--trainer.enable_checkpointing", "true"], tmp_path / "run")
    assert scores["k"] == 1
    run = ["--config", str(tmp_path / "run" / "config.yaml"), "--ckpt_path",
           str(next((tmp_path / "run").rglob("*.ckpt")))]
    run_cli(["validate", *run], tmp_path)
    out = tmp_path / "p.csv"
    run_cli(["predict", *run, "--predictions.output", str(out)], tmp_path)
    assert {r["cluster"] for r in csv.DictReader(out.open())} == {"0"}


def test_unlabeled_data_get_a_score_without_labels(tmp_path, capsys):
    """Without labels the final scores were K and K_USED only: the silhouette of the clustering in the method's
    embedding (scikit-learn's on the embeddings and clusters that dcl predict writes) is what a user can compare."""
    from sklearn.datasets import make_blobs
    from sklearn.metrics import silhouette_score

    x, _ = make_blobs(600, 5, centers=4, random_state=0)
    np.save(tmp_path / "x.npy", x.astype(np.float32))
    args = ["--model", "AEKMeans", "--model.init_args.hidden_dims", "[16]", "--data", "Arrays", "--data.path",
            str(tmp_path / "x.npy"), "--data.n_clusters", "4"]
    scores = run_cli(["fit", *args, "--trainer.max_epochs", "3", "--trainer.enable_checkpointing", "true"], tmp_path)
    assert set(scores) == {"k", "k_used", "silhouette"}
    assert f"K=4 K_USED={scores['k_used']} SILHOUETTE={scores['silhouette']:.4f}" in capsys.readouterr().out
    out, z = tmp_path / "p.csv", tmp_path / "z.npy"
    run_cli(["predict", *args, "--ckpt_path", str(next(tmp_path.rglob("*.ckpt"))), "--predictions.output",
             str(out), "--predictions.embeddings", str(z)], tmp_path)
    clusters = [int(r["cluster"]) for r in csv.DictReader(out.open())]
    assert scores["silhouette"] == pytest.approx(silhouette_score(np.load(z), clusters), abs=1e-4)
    # validate / test of an unlabeled run log it too (a labeled one logs ACC, NMI, ARI)
    capsys.readouterr()
    run_cli(["test", *args, "--ckpt_path", str(next(tmp_path.rglob("*.ckpt")))], tmp_path)
    assert "test/silhouette" in capsys.readouterr().out


def test_short_names_are_case_insensitive(tmp_path):
    torch.set_float32_matmul_precision("highest")  # torch's default
    scores = run_cli(["fit", "--model", "aekmeans", "--data", "DIGITS", "--trainer.max_epochs", "1", *SMALL_AE],
                     tmp_path)
    assert scores["k"] == 10
    # and the command lets float32 matmuls use a GPU's TensorFloat-32 cores, as Lightning advises
    assert torch.get_float32_matmul_precision() == "high"


def test_predict_writes_csv_and_embeddings(tmp_path, recwarn, capsys, monkeypatch, dcl_error):
    fit_ae(tmp_path, "--trainer.enable_checkpointing", "true")
    ckpt = next(tmp_path.rglob("last.ckpt"))
    out, emb = tmp_path / "pred" / "clusters.csv", tmp_path / "z.npy"
    recwarn.clear()
    capsys.readouterr()
    run_cli(["predict", *AE_DIGITS, "--ckpt_path", str(ckpt), "--predictions.output", str(out),
             "--predictions.embeddings", str(emb), "--model.init_args.latent_dim", "5"], tmp_path)
    # the checkpoint's settings build the model; one the user set otherwise is named, not silently replaced
    # (only those set otherwise: found by mutation, a list of every setting had passed)
    assert re.findall("model settings are used: (.*)", capsys.readouterr().err) == ["latent_dim 10 (configured 5)"]
    # the writer orders rows by each sample's index: no Lightning warning about batch indices it cannot infer
    assert not [w for w in recwarn if "batch indices" in str(w.message)]
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 1797 and list(rows[0]) == ["index", "cluster", "confidence", "label"]
    assert [int(r["index"]) for r in rows] == list(range(1797))
    assert {int(r["cluster"]) for r in rows} <= set(range(10)) and all(0 < float(r["confidence"]) <= 1 for r in rows)
    assert np.load(emb).shape == (1797, 10)
    assert not list(out.parent.glob(".*tmp"))  # no temporary file left behind
    # readable by others as any file the user writes (the temporary file's 0600 was kept by the rename)
    umask = os.umask(0o022)
    os.umask(umask)
    assert {oct(p.stat().st_mode & 0o777) for p in (out, emb)} == {oct(0o666 & ~umask)}
    # the suffix picks the format: text for .csv / .txt, the same numbers
    run_cli(["predict", *AE_DIGITS, "--ckpt_path", str(ckpt), "--predictions.embeddings", str(tmp_path / "z.csv")],
            tmp_path)
    # as text, the same float32 values (an audit found %.7g 5e-7 off)
    assert np.array_equal(np.loadtxt(tmp_path / "z.csv", delimiter=",", dtype=np.float32), np.load(emb))
    # predict logs nothing: a logger left an empty run behind (a lightning_logs/version_N, an offline W&B run)
    (tmp_path / "logged").mkdir()
    run_cli(["predict", *AE_DIGITS, "--ckpt_path", str(ckpt), "--predictions.output", "p.csv", "--trainer.logger",
             "true", "--trainer.enable_progress_bar", "false"], tmp_path / "logged", quiet=False)
    assert sorted(p.name for p in (tmp_path / "logged").iterdir()) == ["p.csv"]
    # (found by an audit) predictions given to another command are not written: said, not silently dropped
    (tmp_path / "val").mkdir()
    run_cli(["validate", *AE_DIGITS, "--ckpt_path", str(ckpt), "--predictions.output", "v.csv"], tmp_path / "val")
    assert "--predictions.* are written by dcl predict only; dcl validate writes none" in capsys.readouterr().err
    assert not (tmp_path / "val" / "v.csv").exists()
    # a trial writes no file, as fit's; a limit on the batches would write part of the samples
    # over a whole earlier file: refused; "~" is the home folder, as the shell's, for the checks too
    whole = out.read_bytes()
    run_cli(["predict", *AE_DIGITS, "--ckpt_path", str(ckpt), "--predictions.output", str(out),
             "--trainer.fast_dev_run", "true"], tmp_path)
    assert "a trial of one batch; the predictions are not written" in capsys.readouterr().err
    msg = dcl_error(["predict", *AE_DIGITS, "--ckpt_path", str(ckpt), "--predictions.output", str(out),
                     "--trainer.limit_predict_batches", "0.5"], tmp_path)
    assert "trainer.limit_predict_batches 0.5 would predict part of the samples" in msg
    assert out.read_bytes() == whole
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    run_cli(["predict", *AE_DIGITS, "--ckpt_path", str(ckpt), "--predictions.output", "~/tilde.csv"], tmp_path)
    assert (tmp_path / "home" / "tilde.csv").read_bytes() == whole and not (tmp_path / "~").exists()
    (tmp_path / "home" / "adir").mkdir()
    msg = dcl_error(["predict", *AE_DIGITS, "--ckpt_path", str(ckpt), "--predictions.output", "~/adir"], tmp_path)
    assert "predictions.output" in msg and "is a folder" in msg


def test_predict_on_new_data_writes_class_names_and_standardizes_as_in_training(tmp_path, dcl_error):
    from sklearn.datasets import load_iris

    iris = load_iris()
    species = iris.target_names[iris.target]
    rows = [",".join(map(str, r)) + f",{n}" for r, n in zip(iris.data.tolist(), species)]
    (tmp_path / "iris.csv").write_text("sepal_l,sepal_w,petal_l,petal_w,species\n" + "\n".join(rows) + "\n")
    (tmp_path / "setosa.csv").write_text("\n".join(r for r, n in zip(rows, species) if n == "setosa") + "\n")
    model = ["--model", "AEKMeans", "--model.init_args.hidden_dims", "[16]", "--model.init_args.latent_dim", "2"]
    data = ["--data", "Arrays", "--data.label_column", "-1", "--data.standardize", "true"]
    scores = run_cli(["fit", *model, *data, "--data.path", str(tmp_path / "iris.csv"), "--trainer.max_epochs", "2",
                      "--trainer.enable_checkpointing", "true"], tmp_path)
    assert scores["k"] == 3 and "acc" in scores  # the names are the labels the scores are computed against
    ckpt = str(next(tmp_path.rglob("*.ckpt")))

    def predict(name: str, *extra: str) -> tuple[list[dict], np.ndarray]:
        out, z = tmp_path / f"{name}.out.csv", tmp_path / f"{name}.z.npy"
        run_cli(["predict", *model, *data, "--data.path", str(tmp_path / f"{name}.csv"), "--ckpt_path", ckpt,
                 "--predictions.output", str(out), "--predictions.embeddings", str(z), *extra], tmp_path)
        return list(csv.DictReader(out.open())), np.load(z)

    rows_all, z_all = predict("iris")
    assert [r["label"] for r in rows_all] == species.tolist()
    # a CSV's features matched by name (found by an audit: another order gave 107 of 150 other clusters, silently)
    order = [3, 2, 1, 0]
    (tmp_path / "reordered.csv").write_text("petal_w,petal_l,sepal_w,sepal_l,species\n" + "\n".join(
        ",".join([*(str(r[i]) for i in order), n]) for r, n in zip(iris.data.tolist(), species)) + "\n")
    assert [r["cluster"] for r in predict("reordered")[0]] == [r["cluster"] for r in rows_all]
    (tmp_path / "extra.csv").write_text("sepal_l,sepal_w,petal_l,petal_w,extra,species\n" + "\n".join(
        ",".join([*map(str, r), "0", n]) for r, n in zip(iris.data.tolist(), species)) + "\n")
    (tmp_path / "err_extra").mkdir()
    msg = dcl_error(["predict", *model, *data, "--data.path", str(tmp_path / "extra.csv"), "--ckpt_path", ckpt,
                     "--predictions.output", str(tmp_path / "err_extra" / "p.csv")], tmp_path / "err_extra")
    assert "unexpected 'extra'" in msg and "ignore_columns" in msg
    # new data, one class only: standardized with the training data's statistics (its own would differ),
    # so each sample gets the embedding and cluster it got among all the data
    rows_new, z_new = predict("setosa", "--data.n_clusters", "3")
    np.testing.assert_allclose(z_new, z_all[:50], rtol=1e-5, atol=1e-6)
    assert [r["cluster"] for r in rows_new] == [r["cluster"] for r in rows_all[:50]]
    # one new sample, unlabeled: the trained model's clusters, without naming their number (was: "n_clusters
    # must be between 2 and the number of samples (1)")
    (tmp_path / "one.csv").write_text(rows[0].rsplit(",", 1)[0] + "\n")
    out = tmp_path / "one.out.csv"
    run_cli(["predict", *model, "--data", "Arrays", "--data.standardize", "true", "--data.path",
             str(tmp_path / "one.csv"), "--ckpt_path", ckpt, "--predictions.output", str(out)], tmp_path)
    assert [r["cluster"] for r in csv.DictReader(out.open())] == [rows_all[0]["cluster"]]
    (tmp_path / "err").mkdir()
    msg = dcl_error(["predict", *model, "--data", "Arrays", "--data.path", str(tmp_path / "iris.csv"),
                     "--data.label_column", "-1", "--ckpt_path", ckpt], tmp_path / "err")
    assert "trained on standardized samples; set standardize: true" in msg
    # data of another shape (a column fewer): one line naming both shapes (was: a size-mismatch traceback)
    (tmp_path / "three.csv").write_text("\n".join(r.split(",", 1)[1] for r in rows) + "\n")
    (tmp_path / "err3").mkdir()
    msg = dcl_error(["predict", *model, *data, "--data.path", str(tmp_path / "three.csv"), "--ckpt_path", ckpt,
                     "--predictions.output", str(tmp_path / "err3" / "p.csv")], tmp_path / "err3")
    assert "trained on samples of shape (4,), but this data has shape (3,)" in msg
    assert not (tmp_path / "err3" / "p.csv").exists()
    # outputs that would replace an input (the data, the checkpoint) or each other: refused, the files intact (the
    # data file was overwritten by its own predictions, and the assignments lost under the embeddings)
    before = {p: p.read_bytes() for p in (tmp_path / "iris.csv", Path(ckpt))}
    for outputs, error in (
            (["--predictions.output", str(tmp_path / "iris.csv")], "would overwrite the data's path, an input"),
            (["--predictions.output", ckpt], "would overwrite the checkpoint, an input"),
            (["--predictions.output", "same.csv", "--predictions.embeddings", "same.csv"], "name the same file")):
        msg = dcl_error(["predict", *model, *data, "--data.path", str(tmp_path / "iris.csv"), "--ckpt_path", ckpt,
                         *outputs], tmp_path / "err3")
        assert error in msg, msg
    # every config file of the command is an input (only the last given was, when several were)
    (tmp_path / "a.yaml").write_text("seed_everything: 0\n")
    (tmp_path / "b.yaml").write_text("seed_everything: 1\n")
    before[tmp_path / "a.yaml"] = (tmp_path / "a.yaml").read_bytes()
    msg = dcl_error(["predict", "--config", str(tmp_path / "a.yaml"), "--config", str(tmp_path / "b.yaml"), *model,
                     *data, "--data.path", str(tmp_path / "iris.csv"), "--ckpt_path", ckpt,
                     "--predictions.output", str(tmp_path / "a.yaml")], tmp_path / "err3")
    assert "would overwrite a config file, an input" in msg, msg
    assert all(p.read_bytes() == b for p, b in before.items())


def test_images_without_a_channel_axis_for_a_conv_network_say_how_to_add_it(tmp_path, dcl_error):
    np.save(tmp_path / "img.npy", np.zeros((20, 16, 16), dtype=np.uint8))
    msg = dcl_error(["fit", "--model", "AEKMeans", "--model.init_args.autoencoder", "conv", "--data", "Arrays",
                     "--data.path", str(tmp_path / "img.npy"), "--data.n_clusters", "2"], tmp_path)
    assert "ConvAutoencoder needs image inputs" in msg and "(16, 16)" in msg and "x[:, None]" in msg


def test_images_a_conv_network_cannot_take_say_to_resize_them(tmp_path, dcl_error):
    """Found by a practitioner's pass: DEKM refused a conv autoencoder on 8x8 images (Digits as N x 1 x 8 x 8) with
    "needs ... at least 12 x 12 ...: serve images as channels x height x width", advice for images they already
    were, and a limit the network does not have (it takes 5x5 and up, as AEKMeans' conv did)."""
    from dcl.methods.dekm import DEKM

    assert DEKM(n_clusters=3, input_shape=(1, 8, 8), autoencoder="conv").autoencoder_kind == "conv"
    assert DEKM(n_clusters=3, input_shape=(1, 8, 8)).autoencoder_kind == "mlp"  # auto: conv from 12 x 12
    assert DEKM(n_clusters=3, input_shape=(1, 12, 16)).autoencoder_kind == "mlp"  # auto: conv for square ones
    for shape, said in [((20, 1, 8, 6), "ConvAutoencoder needs square images, got 8x6; resize them (image_size"),
                        ((20, 1, 4, 4), "images of 4x4 are too small for ConvAutoencoder, whose three strided convs "
                                        "need at least 5x5; resize them")]:
        np.save(tmp_path / "img.npy", np.zeros(shape, dtype=np.uint8))
        msg = dcl_error(["fit", "--model", "DEKM", "--model.init_args.autoencoder", "conv", "--data", "Arrays",
                         "--data.path", str(tmp_path / "img.npy"), "--data.n_clusters", "2"], tmp_path)
        assert said in msg and "or use autoencoder: mlp" in msg, msg


@pytest.mark.parametrize("native", [False, True])
def test_mixed_precision_the_cpu_would_emulate_is_warned_about(tmp_path, monkeypatch, recwarn, native):
    import dcl.method

    monkeypatch.setattr(dcl.method, "cpu_has_native_bf16", lambda: native)
    fit_ae(tmp_path, "--trainer.max_epochs", "1", "--trainer.precision", "bf16-mixed")
    warned = [w for w in recwarn if "has no native torch.bfloat16 arithmetic" in str(w.message)]
    assert len(warned) == (0 if native else 1)


def test_float16_autocast_on_a_cpu_is_warned_about_even_where_float16_is_native(monkeypatch, recwarn):
    """float16 autocast was no faster than float32 for the MLP and many times slower for DCFAE's convolutions on a
    CPU with AVX512-FP16 and AMX (``cpu_mixed_precision_avx512.md``), so the native check alone let it pass
    silently. Lightning's ``precision="16-mixed"`` on a CPU is bfloat16 (no warning where that is native); a
    float16 ``MixedPrecision`` plugin given explicitly warns."""
    import lightning.pytorch as pl
    from lightning.pytorch.plugins import MixedPrecision

    import dcl.method

    monkeypatch.setattr(dcl.method, "cpu_has_native_bf16", lambda: True)
    switched = pl.Trainer(accelerator="cpu", precision="16-mixed", logger=False)
    assert switched.precision == "bf16-mixed"
    explicit = pl.Trainer(accelerator="cpu", plugins=[MixedPrecision("16-mixed", "cpu")], logger=False)
    recwarn.clear()  # (Lightning's own, on switching 16-mixed to bf16-mixed)
    dcl.method.warn_if_cpu_mixed_precision_is_slow(switched)
    assert not recwarn.list
    dcl.method.warn_if_cpu_mixed_precision_is_slow(explicit)
    warned = [str(w.message) for w in recwarn]
    assert len(warned) == 1 and "float16 mixed precision (a 16-mixed plugin)" in warned[0], warned
    assert "use precision bf16-mixed" in warned[0]


def test_predict_writes_the_methods_own_clustering_rule():
    """``dcl predict`` wrote argmax of ``assign`` (the soft assignments), which is not every method's rule: DEKM
    assigns to the nearest center by its own computation, and near-ties made its predictions differ from its
    final scores. The written cluster is ``predict_clusters``; the confidence is that cluster's probability."""
    import torch

    from dcl.methods.ae_kmeans import AEKMeans

    torch.manual_seed(0)
    model = AEKMeans(n_clusters=3, input_shape=[8], hidden_dims=[16], latent_dim=2)
    batch = {"x": torch.randn(20, 8), "index": torch.arange(20), "y": torch.zeros(20, dtype=torch.long)}
    model.set_cluster_centers(model.embed(batch["x"][[0, 7, 14]]))  # (centers among the samples: all 3 used)
    model.predict_clusters = lambda z: (model.assign(z).argmax(1) + 1) % 3  # a rule other than argmax
    out = model.predict_step(batch, 0)
    probs = model.assign(model.embed(batch["x"]))
    assert torch.equal(out["cluster"], (probs.argmax(1) + 1) % 3) and len(out["cluster"].unique()) == 3
    torch.testing.assert_close(out["confidence"], probs[torch.arange(20), out["cluster"]])


def test_predict_step_assigns_each_batch_once():
    """With the default rule (argmax of ``assign``) ``predict_step`` computed the soft assignments twice, once for
    ``probs`` and once inside ``predict_clusters``: with 200 clusters a quarter of ``dcl predict``'s time on
    1,000,000 samples. The cluster is that argmax of the one ``probs``."""
    import torch

    from dcl.methods.ae_kmeans import AEKMeans

    torch.manual_seed(0)
    model = AEKMeans(n_clusters=3, input_shape=[8], hidden_dims=[16], latent_dim=2)
    model.set_cluster_centers(torch.randn(3, 2))
    assign, calls = model.assign, []
    model.assign = lambda z: calls.append(len(z)) or assign(z)
    batch = {"x": torch.randn(20, 8), "index": torch.arange(20), "y": torch.zeros(20, dtype=torch.long)}
    out = model.predict_step(batch, 0)
    assert calls == [20]
    probs = assign(model.embed(batch["x"]))
    assert torch.equal(out["cluster"], probs.argmax(1))
    torch.testing.assert_close(out["probs"], probs)


def test_predict_holds_only_the_columns_it_writes(tmp_path, monkeypatch):
    """``dcl predict`` held every batch's whole outputs until the end of the pass, twice: in the PredictionWriter
    (the N x K ``probs`` too, which it never writes; on a GPU, in the GPU's memory) and in what Lightning's
    ``trainer.predict`` returns, which the command drops (1,000,000 samples, 200 clusters: 1.35 GB more peak
    memory). The writer keeps the columns it writes, on the CPU, and the command asks for no return value."""
    import lightning.pytorch as pl
    import torch

    from dcl.callbacks.prediction_writer import PredictionWriter

    outputs = {"index": torch.arange(4), "cluster": torch.zeros(4, dtype=torch.long), "confidence": torch.ones(4),
               "probs": torch.full((4, 3), 1 / 3), "z": torch.zeros(4, 2), "y": torch.zeros(4, dtype=torch.long)}
    csv_path, z_path = str(tmp_path / "c.csv"), str(tmp_path / "z.npy")
    plain = SimpleNamespace(predict_dataloaders=[])  # a loader of unknown length: its batches are kept
    sized = SimpleNamespace(predict_dataloaders=SimpleNamespace(num_rows=8))  # a datamodule's: one buffer a column
    for output, embeddings, kept in ((csv_path, None, {"index", "cluster", "confidence", "y"}),
                                     (None, z_path, {"index", "z"}),
                                     (csv_path, z_path, {"index", "cluster", "confidence", "y", "z"})):
        writer = PredictionWriter(output, embeddings)
        writer.on_predict_epoch_start(plain, None)
        writer.on_predict_batch_end(plain, None, outputs, None, 0)
        assert set(writer._batches[0]) == kept
        writer.on_predict_epoch_start(sized, None)
        for _ in range(2):
            writer.on_predict_batch_end(sized, None, outputs, None, 0)
        columns, filled = writer._columns_filled
        assert set(columns) == kept and filled == 8
        for key in kept:
            assert torch.equal(columns[key], torch.cat([outputs[key]] * 2))
    asked = []
    predict = pl.Trainer.predict

    @functools.wraps(predict)  # its signature: the CLI's arguments of predict
    def spy(self, *args, **kwargs):
        asked.append(kwargs.get("return_predictions"))
        return predict(self, *args, **kwargs)

    monkeypatch.setattr(pl.Trainer, "predict", spy)
    run_cli(["predict", *AE_DIGITS, "--predictions.output", csv_path, "--predictions.embeddings", z_path], tmp_path)
    assert asked == [False]
    assert len(list(csv.DictReader(open(csv_path)))) == 1797 and np.load(z_path).shape == (1797, 10)


def test_validate_and_test_score_the_trained_clusters(tmp_path):
    """``dcl validate`` / ``test`` of a trained AE + k-means (or DCFAE) ran a new k-means before scoring, so they
    scored neither the fit's final clusters nor those ``dcl predict`` writes. They score the model's own clusters;
    an untrained model (centers never set) still gets k-means on its code."""
    import lightning.pytorch as pl
    import torch

    from dcl.datamodules.digits import Digits
    from dcl.methods.ae_kmeans import AEKMeans
    from dcl.metrics import clustering_scores

    dm = Digits(batch_size=256)
    model = AEKMeans(10, dm.input_shape, hidden_dims=[16], kmeans_n_init=2)
    trainer = pl.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(model, dm)
    centers = model.cluster_centers.clone()
    expected = clustering_scores(model.predict_clusters(model.embed_all()), dm.y)
    for run, prefix in ((trainer.validate, "val"), (trainer.test, "test")):
        (scores,) = run(model, dm, verbose=False)
        assert torch.equal(model.cluster_centers, centers)
        assert scores[f"{prefix}/acc"] == pytest.approx(expected["acc"], abs=1e-6)
    untrained = AEKMeans(10, dm.input_shape, hidden_dims=[16], kmeans_n_init=2)
    (scores,) = trainer.validate(untrained, dm, verbose=False)
    assert untrained.cluster_centers.any() and scores["val/acc"] > 0.2


def test_predict_names_each_image_file_and_refuses_a_folder_as_output(tmp_path, dcl_error):
    src = require_data("coil-20-proc")
    for k in (1, 2):
        (tmp_path / "img" / f"obj{k}").mkdir(parents=True)
        for i in range(4):
            (tmp_path / "img" / f"obj{k}" / f"{i}.png").symlink_to(src / f"obj{k}__{i}.png")
    args = ["--model", "AEKMeans", "--model.init_args.hidden_dims", "[16]", "--data", "ImageFolder",
            "--data.root", str(tmp_path / "img"), "--data.image_size", "8", "--data.grayscale", "true",
            "--data.flatten", "true", "--data.batch_size", "4"]
    run_cli(["fit", *args, "--trainer.max_epochs", "1", "--trainer.enable_checkpointing", "true"], tmp_path)
    ckpt = str(next(tmp_path.rglob("*.ckpt")))
    run_cli(["predict", *args, "--ckpt_path", ckpt, "--predictions.output", str(tmp_path / "p.csv")], tmp_path)
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert [(r["label"], Path(r["file"]).relative_to(tmp_path / "img").as_posix()) for r in rows] == [
        (f"obj{k}", f"obj{k}/{i}.png") for k in (1, 2) for i in range(4)]
    (tmp_path / "err" / "out").mkdir(parents=True)
    msg = dcl_error(["predict", *args, "--ckpt_path", ckpt, "--predictions.output", str(tmp_path / "err" / "out")],
                    tmp_path / "err")
    assert "predictions.output" in msg and "is a folder; name a file in it" in msg


@pytest.mark.parametrize("name", ["clusters.npy", "clusters.npz", "clusters.pt", "clusters.json"])
def test_predictions_output_of_another_format_is_refused(tmp_path, dcl_error, name):
    """Found by probing as a user: ``--predictions.output clusters.npy`` (the embeddings' setting mistaken for the
    clusters') wrote the CSV text into a .npy file, which np.load then refuses; the embeddings' suffix is checked.
    And a .json (a later probe) got CSV text too."""
    msg = dcl_error(["predict", *AE_DIGITS, "--predictions.output", str(tmp_path / name)], tmp_path)
    assert f"predictions.output {str(tmp_path / name)!r} is written as CSV text" in msg, msg
    assert "name a .csv file" in msg and "predictions.embeddings" in msg


def test_predict_writes_the_id_column_of_a_csv(tmp_path):
    """A table with a text id and a date beside the features: the id is written next to each cluster."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-3, 1, (20, 4)), rng.normal(3, 1, (20, 4))])
    ids = [f"s{i:02d}" for i in range(40)]
    lines = ["name,date,a,b,c,d,kind"] + [f"{n},2026-01-{i % 28 + 1:02d},{','.join(map(str, r))},{'ab'[i // 20]}"
                                           for i, (n, r) in enumerate(zip(ids, x.tolist()))]
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    args = ["--model", "AEKMeans", "--model.init_args.hidden_dims", "[8]", "--model.init_args.latent_dim", "2",
            "--data", "Arrays", "--data.path", str(tmp_path / "t.csv"), "--data.label_column", "kind",
            "--data.id_column", "name", "--data.ignore_columns", "[date]", "--data.batch_size", "8"]
    run_cli(["fit", *args, "--trainer.max_epochs", "1", "--trainer.enable_checkpointing", "true"], tmp_path)
    ckpt = str(next(tmp_path.rglob("*.ckpt")))
    run_cli(["predict", *args, "--ckpt_path", ckpt, "--predictions.output", str(tmp_path / "p.csv")], tmp_path)
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert list(rows[0]) == ["index", "cluster", "confidence", "label", "name"]
    assert [r["name"] for r in rows] == ids and [r["label"] for r in rows] == ["a"] * 20 + ["b"] * 20
    assert all(len(r["confidence"].split(".")[1]) == 6 for r in rows)  # 6 decimals
    # new samples, some unlabeled, whose id column is called "cluster": the label column stays, empty where unknown,
    # and the ids get a column name of their own
    kinds = ["a" if i % 3 else "" for i in range(40)]
    lines = ["cluster,date,a,b,c,d,kind"] + [f"{n},2026-02-01,{','.join(map(str, r))},{k}"
                                              for n, r, k in zip(ids, x.tolist(), kinds)]
    (tmp_path / "new.csv").write_text("\n".join(lines) + "\n")
    args[args.index("--data.path") + 1] = str(tmp_path / "new.csv")
    args[args.index("--data.id_column") + 1] = "cluster"
    run_cli(["predict", *args, "--ckpt_path", ckpt, "--predictions.output", str(tmp_path / "new_p.csv")], tmp_path)
    rows = list(csv.DictReader((tmp_path / "new_p.csv").open()))
    assert list(rows[0]) == ["index", "cluster", "confidence", "label", "sample_id"]
    assert [r["sample_id"] for r in rows] == ids and [r["label"] for r in rows] == kinds


def test_predict_refuses_an_embeddings_file_of_unknown_format(tmp_path, dcl_error):
    msg = dcl_error(["predict", *AE_DIGITS, "--predictions.embeddings", str(tmp_path / "z.parquet")], tmp_path)
    assert "z.parquet" in msg and ".npy" in msg and ".csv" in msg
    assert not (tmp_path / "z.parquet").exists()


def test_a_misspelt_command_names_the_commands_and_version_prints(tmp_path, capsys, dcl_error):
    msg = dcl_error(["lst"], tmp_path)  # was: "choose from 'fit', 'validate', 'test', 'predict' (see dcl lst --help)"
    assert msg == ("dcl: error: unknown command 'lst' (did you mean 'list'?); the commands: fit, validate, test, "
                   "predict, list, results")
    assert "(did you mean 'results'?)" in dcl_error(["result", str(tmp_path)], tmp_path)
    main(["--version"])
    assert capsys.readouterr().out.strip() == f"dcl {dcl.__version__}"


def test_list_names_every_plugin(capsys):
    main(["list"])
    lines = capsys.readouterr().out.splitlines()
    sections = {"methods:": "method", "datamodules:": "datamodule"}
    assert [line for line in lines if line in sections] == list(sections)
    listed = {kind: [] for kind in sections.values()}
    for line in lines:
        if line in sections:
            kind = sections[line]
        else:
            listed[kind].append(line.split()[0])
    for kind, names in listed.items():  # each plugin once, with its description
        assert names == sorted(registry.available(kind)), kind
    assert all(len(line.split()) > 3 for line in lines if line not in sections)
    with pytest.raises(SystemExit):  # the help says what dcl is and that `dcl list` exists
        main(["--help"])
    assert "dcl list names the registered methods" in " ".join(capsys.readouterr().out.split())


def wandb_payload(path: Path) -> bytes:
    """The records of a .wandb file joined, without the LevelDB-log framing (32 KiB blocks, 7-byte chunk headers)
    that can split a key across blocks."""
    raw, out, i = path.read_bytes(), bytearray(), 7  # 7-byte file header
    while i + 7 <= len(raw):
        left = 32768 - i % 32768
        if left < 7:  # block trailer
            i += left
            continue
        length = int.from_bytes(raw[i + 4:i + 6], "little")
        out += raw[i + 7:i + 7 + length]
        i += 7 + length
    return bytes(out)


def test_wandb_offline_run_holds_metrics(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_cli(["fit", *AE_DIGITS, "--trainer.logger", "lightning.pytorch.loggers.WandbLogger",
             "--trainer.logger.save_dir", str(tmp_path), "--trainer.logger.project", "dcl-test"], tmp_path,
            quiet=False)
    import wandb

    wandb.finish()  # the CLI process would finish the run at exit
    runs = list(tmp_path.rglob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1, "no offline W&B run was written"
    deadline = time.monotonic() + 60
    while True:  # wandb's service process may still be writing the offline file after finish() returns
        data = wandb_payload(runs[0])  # the run's protobuf records hold the logged keys as strings
        if b"final/acc" in data or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for key in (b"val/acc", b"val/nmi", b"train/k", b"final/acc"):
        assert key in data, key
    # the final scores lie in the run's folder, beside its checkpoints (not in save_dir, which all runs share)
    run_id = runs[0].parent.name.rsplit("-", 1)[-1]
    assert [p.relative_to(tmp_path) for p in tmp_path.rglob("final_scores.json")] == [
        Path("dcl-test", run_id, "final_scores.json")]
    assert (tmp_path / "dcl-test" / run_id / "checkpoints").is_dir()
    # and so does the run's configuration, which rebuilds it (it was written to save_dir, shared and overwritten)
    assert [p.relative_to(tmp_path) for p in tmp_path.rglob("config.yaml")] == [Path("dcl-test", run_id, "config.yaml")]


@pytest.mark.parametrize("credentials, mode", [
    ({}, "offline"),  # no account on this machine: runs are kept for `wandb sync`, no login prompt
    ({"netrc": "machine api.wandb.ai\n  login user\n  password 0123\n"}, None),  # `wandb login` wrote it
    ({"netrc": "machine github.com\n  login user\n  password 0123\n"}, "offline"),  # another site's
    ({"WANDB_API_KEY": "0123"}, None),
    ({"WANDB_MODE": "online"}, "online"),  # the user's choice stays
])
def test_wandb_runs_offline_unless_an_account_is_configured(credentials, mode, tmp_path, monkeypatch):
    from dcl.cli import _set_wandb_mode

    for name in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(name, raising=False)
        if name in credentials:
            monkeypatch.setenv(name, credentials[name])
    netrc = tmp_path / ".netrc"
    if "netrc" in credentials:
        netrc.write_text(credentials["netrc"])
    monkeypatch.setenv("NETRC", str(netrc))
    _set_wandb_mode()
    assert os.environ.get("WANDB_MODE") == mode


def test_csv_logger(tmp_path):
    run_cli(["fit", *AE_DIGITS, "--trainer.logger", "lightning.pytorch.loggers.CSVLogger",
             "--trainer.logger.save_dir", str(tmp_path)], tmp_path, quiet=False)
    metrics = next(tmp_path.rglob("metrics.csv")).read_text()
    assert "val/acc" in metrics and "train/k" in metrics


def test_tensorboards_hparams_view_gets_the_final_scores(tmp_path):
    """Found by a user: with a TensorBoardLogger, TensorBoard's HParams table had no score columns, only a bogus
    ``hp_metric`` of -1, and the method's hyperparameters alone: it reads a run's first hparams summary, which was
    Lightning's, written at the fit's start without metrics. The run's summary is now written once, at its end,
    with the whole configuration as its hparams and the final scores as its metrics."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    run_cli(["fit", *AE_DIGITS, "--trainer.logger", "lightning.pytorch.loggers.TensorBoardLogger",
             "--trainer.logger.save_dir", str(tmp_path), "--seed_everything", "4"], tmp_path, quiet=False)
    scores = json.loads(next(tmp_path.rglob("final_scores.json")).read_text())
    (events_file,) = tmp_path.rglob("events.out.tfevents.*")
    events = EventAccumulator(str(events_file))
    events.Reload()
    # the accumulator keeps each tag's first summary metadata, as TensorBoard's HParams view reads it
    summary = {tag: HParamsPluginData.FromString(content)
               for tag, content in events.PluginTagToContent("hparams").items()}
    metrics = [info.name.tag for info in summary["_hparams_/experiment"].experiment.metric_infos]
    assert metrics == [f"final/{name}" for name in scores] and {"final/acc", "final/nmi", "final/ari"} <= {*metrics}
    hparams = summary["_hparams_/session_start_info"].session_start_info.hparams
    assert hparams["seed_everything"].number_value == 4 and hparams["trainer/max_epochs"].number_value == 3
    assert hparams["latent_dim"].number_value == 10  # the method's own hyperparameters too
    for name, value in scores.items():  # the values the view shows: each metric's scalar, written once
        assert [event.value for event in events.Scalars(f"final/{name}")] == pytest.approx([value])
    assert "hp_metric" not in events.Tags()["scalars"]


def test_a_resumed_fit_saves_its_config_without_the_checkpoint_it_resumed_from(tmp_path, capsys):
    """Found by probing as a user: a fit resumed with --ckpt_path A wrote ckpt_path: A into its config.yaml, and
    dcl predict --config <that config.yaml> then silently loaded A, not the run's own checkpoint."""
    import yaml

    (tmp_path / "first").mkdir(), (tmp_path / "resumed").mkdir()
    fit_ae(tmp_path / "first", "--trainer.enable_checkpointing", "true")
    first = next((tmp_path / "first").rglob("last.ckpt"))
    fit_ae(tmp_path / "resumed", "--trainer.max_epochs", "4", "--ckpt_path", str(first))
    config = tmp_path / "resumed" / "config.yaml"
    assert yaml.safe_load(config.read_text())["ckpt_path"] is None
    capsys.readouterr()
    run_cli(["predict", "--config", str(config), "--predictions.output", str(tmp_path / "p.csv")], tmp_path)
    assert "predict without --ckpt_path uses an untrained model" in capsys.readouterr().err
    # resumed from its end, a fit trains nothing: its config.yaml is still saved beside its final scores
    (tmp_path / "ended").mkdir()
    fit_ae(tmp_path / "ended", "--ckpt_path", str(first))
    assert (tmp_path / "ended" / "final_scores.json").is_file() and (tmp_path / "ended" / "config.yaml").is_file()


def test_a_resume_refused_while_restoring_its_checkpoint_writes_nothing(tmp_path, dcl_error):
    """Found by probing as a user: a resume of a checkpoint taken inside an epoch, with another batch size, is
    refused when Lightning restores the loader's state, after setup, where the run's config.yaml used to be saved:
    the refused run left a config.yaml behind (dcl_error checks that no file is written)."""
    (tmp_path / "first").mkdir(), (tmp_path / "resumed").mkdir()
    fit_ae(tmp_path / "first", "--trainer.max_epochs", "1", "--trainer.callbacks+=ModelCheckpoint",
           "--trainer.callbacks.dirpath", str(tmp_path / "inside"), "--trainer.callbacks.every_n_train_steps", "3",
           "--trainer.callbacks.save_top_k", "-1")
    inside = tmp_path / "inside" / "epoch=0-step=3.ckpt"
    error = dcl_error(["fit", *AE_DIGITS, "--data.init_args.batch_size", "128", "--ckpt_path", str(inside)],
                      tmp_path / "resumed")
    assert "taken inside an epoch" in error
    # with a logger too (Lightning's TensorBoardLogger): the refusal came after Lightning had started it, which had
    # written lightning_logs/version_0/events.out.tfevents.* and hparams.yaml (found by probing as a user)
    error = dcl_error(["fit", *AE_DIGITS, "--data.init_args.batch_size", "128", "--ckpt_path", str(inside),
                       "--trainer.logger", "true", "--trainer.enable_progress_bar", "false"], tmp_path / "resumed",
                      quiet=False)
    assert "taken inside an epoch (after 3 batches) of a fit in 1 process(es) with batch size 256" in error


def test_a_resume_past_max_epochs_is_refused_before_the_loggers_start(tmp_path, dcl_error):
    """Found by a researcher's probe: resuming a checkpoint with a smaller max_epochs started the loggers (a W&B
    offline run), then ended with Lightning's "You restored a checkpoint with current_epoch=19, but you have set
    Trainer(max_epochs=10)", which says no remedy."""
    (tmp_path / "first").mkdir(), (tmp_path / "resumed").mkdir()
    first = fit_ae(tmp_path / "first")  # 3 epochs, the config's ModelCheckpoint keeps last.ckpt
    last = next((tmp_path / "first").rglob("last.ckpt"))
    error = dcl_error(["fit", *AE_DIGITS, "--trainer.max_epochs", "1", "--ckpt_path", str(last),
                       "--trainer.logger", "true", "--trainer.enable_progress_bar", "false"], tmp_path / "resumed",
                      quiet=False)
    assert "this checkpoint goes on from epoch 2 (counted from 0), past trainer.max_epochs 1: to train on, set " \
        "max_epochs above 2" in error
    # max_epochs 2, the epoch it goes on from: Lightning trains nothing more, and that is not refused (found by
    # mutation: refusing it had passed); the final clustering is the checkpoint's
    (tmp_path / "again").mkdir()
    again = run_cli(["fit", *AE_DIGITS, "--trainer.max_epochs", "2", "--ckpt_path", str(last)], tmp_path / "again")
    assert again == pytest.approx(first)


def test_a_resume_names_the_optimizer_settings_its_checkpoint_replaces(tmp_path):
    """Found by a researcher's probe: a resume with another learning rate trained at the checkpoint's (Lightning
    restores the optimizer's param groups), without a word, while the run's config.yaml recorded the new one."""
    (tmp_path / "first").mkdir(), (tmp_path / "resumed").mkdir()
    fit_ae(tmp_path / "first", "--model.init_args.optimizer.init_args.lr", "0.002")
    last = next((tmp_path / "first").rglob("last.ckpt"))
    with pytest.warns(UserWarning, match=r"the checkpoint's optimizer settings are used, restored with its state: "
                                         r"lr 0\.002 \(configured 0\.5\)"):
        fit_ae(tmp_path / "resumed", "--trainer.max_epochs", "4", "--ckpt_path", str(last),
               "--model.init_args.optimizer.init_args.lr", "0.5")
    # a module loaded from the checkpoint and fitted anew (no resume: fresh optimizers) is not warned about
    import lightning.pytorch as pl

    from dcl.datamodules.digits import Digits
    from dcl.methods.ae_kmeans import AEKMeans

    model = AEKMeans.load_from_checkpoint(last, optimizer=partial(torch.optim.Adam, lr=0.5))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False, limit_val_batches=0).fit(model, Digits())
    assert not [w for w in caught if "optimizer settings" in str(w.message)]


@pytest.mark.parametrize("logger", ["CSVLogger", "TensorBoardLogger"])
def test_the_logger_gets_the_whole_resolved_config(tmp_path, logger):
    """Found by probing as a user: a logger got the method's constructor settings only (not its optimizers, the
    data, the seed or the Trainer), so runs could not be filtered by data set or learning rate. TensorBoard's
    hparams.yaml still held those only: its logger writes the file once, when Lightning logs the method's
    hyperparameters, before the configuration is logged."""
    from lightning.pytorch.core.saving import load_hparams_from_yaml

    if logger == "TensorBoardLogger":
        pytest.importorskip("tensorboard")
    run_cli(["fit", *AE_DIGITS, "--trainer.logger", f"lightning.pytorch.loggers.{logger}",
             "--trainer.logger.save_dir", str(tmp_path), "--model.init_args.optimizer.init_args.lr", "0.003",
             "--data.init_args.batch_size", "128"], tmp_path, quiet=False)
    hparams = load_hparams_from_yaml(next(tmp_path.rglob("hparams.yaml")))
    assert hparams["seed_everything"] == 0 and hparams["trainer"]["max_epochs"] == 3
    assert hparams["data"]["class_path"].endswith(".Digits") and hparams["data"]["init_args"]["batch_size"] == 128
    assert hparams["model"]["init_args"]["optimizer"]["init_args"]["lr"] == 0.003
    assert hparams["hidden_dims"] == [64, 64]  # the method's own hyperparameters are still there


def test_a_resumed_fits_loggers_name_the_checkpoint_it_resumed_from(tmp_path):
    """Found by probing as a user: a fit resumed with --ckpt_path is a new W&B run in a new run folder, and
    nothing the loggers got (nor its config.yaml, which leaves ckpt_path out) named the checkpoint, or the run, it
    continued."""
    from lightning.pytorch.core.saving import load_hparams_from_yaml

    csv = ["--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", str(tmp_path)]
    run_cli(["fit", *AE_DIGITS, *csv], tmp_path, quiet=False)
    first = next(tmp_path.rglob("version_0/hparams.yaml")).parent
    assert load_hparams_from_yaml(first / "hparams.yaml")["ckpt_path"] is None
    last = first / "checkpoints" / "last.ckpt"
    run_cli(["fit", *AE_DIGITS, *csv, "--trainer.max_epochs", "4", "--ckpt_path", str(last)], tmp_path, quiet=False)
    hparams = load_hparams_from_yaml(first.parent / "version_1" / "hparams.yaml")
    assert hparams["ckpt_path"] == str(last) and hparams["trainer"]["max_epochs"] == 4


@pytest.mark.parametrize("command", ["validate", "test"])
def test_validate_and_test_log_the_checkpoint_and_config_they_score(tmp_path, command):
    """Found by probing as a user: dcl validate / test of a config with a W&B logger made a W&B run of the fit's
    name that held the method's hyperparameters only: nothing said which checkpoint, data or seed it scored."""
    from lightning.pytorch.core.saving import load_hparams_from_yaml

    (tmp_path / "fit").mkdir(), (tmp_path / "scored").mkdir()
    fit_ae(tmp_path / "fit", "--trainer.enable_checkpointing", "true")
    last = next((tmp_path / "fit").rglob("last.ckpt"))
    run_cli([command, *AE_DIGITS, "--ckpt_path", str(last), "--trainer.logger", "lightning.pytorch.loggers.CSVLogger",
             "--trainer.logger.save_dir", str(tmp_path / "scored")], tmp_path / "scored", quiet=False)
    hparams = load_hparams_from_yaml(next((tmp_path / "scored").rglob("hparams.yaml")))
    assert hparams["ckpt_path"] == str(last) and hparams["seed_everything"] == 0
    assert hparams["data"]["class_path"].endswith(".Digits")
    assert not list((tmp_path / "scored").rglob("config.yaml"))  # still no run folder of its own


def test_seed_everythings_help_says_what_true_does(capsys):
    """Found by probing as a user: --help said "Set to True to use a random seed" (Lightning's text), but Lightning
    has taken true as seed 0 since 2.2, so a sweep of such runs repeated one run; nor did it say that the training
    shuffle has a seed of its own."""
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "random seed." not in text
    assert "true: seed 0, or the environment's PL_GLOBAL_SEED" in text and "data.init_args.seed" in text


@pytest.fixture
def dcl_error(capsys):
    """Run ``dcl`` in-process; it must exit with code 2 and one 'dcl: error:' line, before writing anything."""

    def run(args: list[str], tmp_path: Path, quiet: bool = True) -> str:
        capsys.readouterr()
        before = set(tmp_path.rglob("*"))
        with pytest.raises(SystemExit) as exit_info:
            run_cli(args, tmp_path, quiet)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("dcl: error:")]
        assert len(lines) == 1, err[-2000:]
        written = sorted(str(p.relative_to(tmp_path)) for p in set(tmp_path.rglob("*")) - before if p.is_file())
        assert not written, f"written before the error: {written}"
        return lines[0]

    return run


def test_console_script_error_is_one_line_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "dcl.cli", "fit", "--model", "NoSuchMethod", "--data", "Digits"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        line for line in proc.stderr.strip().splitlines() if line.startswith("dcl: error: unknown method")]


def test_a_run_prints_no_noise_and_dcl_warnings_as_one_line(tmp_path):
    """Found by probing as a user: every run printed Lightning's "💡 Tip:" lines, the deprecation of torch's
    LeafSpec that Lightning's code meets and, on Digits, Lightning's warning about log_every_n_steps; dcl's own
    warnings were followed by the line of code that raised them ("rank_zero_warn(")."""
    proc = subprocess.run([sys.executable, "-m", "dcl.cli", "fit", "--config",
                           str(REPO / "configs/ae_kmeans/digits.yaml"), "--trainer.max_epochs", "1", *SMALL_AE,
                           "--trainer.logger", "false", "--trainer.enable_progress_bar", "false"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    printed = proc.stdout + proc.stderr
    for noise in ("💡 Tip", "LeafSpec", "smaller than the logging interval", "rank_zero_warn("):
        assert noise not in printed, printed
    assert "dcl: warning: after 1 epoch of training, AEKMeans's autoencoder reconstructs the data" in proc.stderr
    # only the command's: a library's host keeps its warnings' format and Lightning's log as they were
    before = warnings.formatwarning
    (tmp_path / "library").mkdir()  # (a folder of its own: the command's run, without a logger, holds this one)
    run_cli(["fit", *AE_DIGITS, "--trainer.max_epochs", "1"], tmp_path / "library")
    assert warnings.formatwarning is before and not logging.getLogger("lightning.pytorch.utilities.rank_zero").filters


def test_scoring_and_predicting_a_checkpoint_print_no_checkpoint_folder_warning(tmp_path):
    """Found by probing as a user: ``dcl validate`` / ``dcl test`` / ``dcl predict --ckpt_path`` of a run printed
    Lightning's "The dirpath has changed from '.../version_0/checkpoints' to '<cwd>/checkpoints', therefore
    `best_model_score` ... won't be reloaded": those commands save no checkpoint, and the ModelCheckpoint a fit
    had (a config's, or Lightning's default one) only restored its state to say so."""
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(30, 3)).astype(np.float32))
    args = ["--model", "AEKMeans", "--model.init_args.hidden_dims", "[8]", "--data", "Arrays", "--data.path",
            str(tmp_path / "x.npy"), "--data.n_clusters", "2", "--trainer.enable_progress_bar", "false"]
    run_cli(["fit", *args, "--trainer.max_epochs", "1", "--trainer.enable_checkpointing", "true"], tmp_path)
    ckpt = str(next(tmp_path.rglob("*.ckpt")))
    for command in ("validate", "predict"):
        proc = subprocess.run([sys.executable, "-m", "dcl.cli", command, *args, "--ckpt_path", ckpt,
                               "--predictions.output", str(tmp_path / "p.csv")],
                              cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "dirpath has changed" not in proc.stdout + proc.stderr, proc.stderr[-2000:]
    assert (tmp_path / "p.csv").is_file()


# 20 blocks of 4 MiB (a training step's activations) allocated and freed after `import dcl.cli` or after the `dcl`
# command's main(): MiB that glibc served by mmap() (handed back to the kernel on free, faulted in anew on the next
# step) and MiB it keeps free in its heap for reuse once they are freed
_HEAP_AFTER_A_STEP = """
import ctypes, sys, torch
from dcl.cli import main
if sys.argv[1] == "main":
    main(["list"])


class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
blocks = [torch.empty(1 << 20).fill_(1.0) for _ in range(20)]
mapped = libc.mallinfo2().hblkhd
del blocks
print(mapped >> 20, libc.mallinfo2().fordblks >> 20)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or not hasattr(ctypes.CDLL(None), "mallinfo2"),
                    reason="glibc >= 2.33")
def test_the_dcl_process_keeps_freed_memory_for_the_next_step(tmp_path):
    env = {k: v for k, v in os.environ.items() if not sets_the_allocator(k)}

    def heap(how: str) -> list[int]:
        proc = subprocess.run([sys.executable, "-c", _HEAP_AFTER_A_STEP, how], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300, check=True)
        return [int(v) for v in proc.stdout.strip().splitlines()[-1].split()]

    (mapped, kept), (mapped_dcl, kept_dcl) = heap("import"), heap("main")
    assert mapped >= 80 and kept < 40  # glibc's defaults: mmap()ed, returned to the kernel when freed
    assert mapped_dcl < 40 and kept_dcl >= 80  # in the dcl process: from the heap, kept there for the next step


def test_keep_freed_memory_leaves_an_allocator_the_user_configured(monkeypatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    assert keep_freed_memory() is False
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    monkeypatch.setenv("LD_PRELOAD", "libjemalloc.so.2")
    assert keep_freed_memory() is False


@pytest.mark.parametrize("strategy", ["ddp", "ddp_spawn"])
def test_the_dcl_command_trains_and_predicts_on_two_ddp_processes(tmp_path, strategy):
    """ddp: Lightning starts the second rank by running the command line again; ddp_spawn: both ranks are workers
    the command's own process never joins (the final scores come from them)."""
    script = Path(sys.executable).with_name("dcl")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "dcl.cli"]
    ddp = ["--trainer.strategy", strategy, "--trainer.devices", "2", "--trainer.accelerator", "cpu"]
    fit = subprocess.run([*command, "fit", *AE_DIGITS, *ddp, "--trainer.logger", "false"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=600)
    assert fit.returncode == 0, fit.stderr[-3000:]
    assert "MEMBER: 2/2" in fit.stderr and "dcl: final clustering of 1797 samples" in fit.stdout
    assert json.loads((tmp_path / "final_scores.json").read_text())["k"] == 10
    ckpt = next(tmp_path.rglob("last.ckpt"))
    pred = subprocess.run([*command, "predict", *AE_DIGITS, *ddp, "--ckpt_path", str(ckpt),
                           "--predictions.output", "clusters.csv"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert pred.returncode == 0, pred.stderr[-3000:]
    with open(tmp_path / "clusters.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(int(r["index"]) for r in rows) == list(range(1797))  # each sample once, from both ranks
    # fewer samples than processes: one error line (was a traceback from each rank, gloo's on top under ddp_spawn)
    np.save(tmp_path / "one.npy", np.zeros((1, 64), dtype=np.float32))
    one = subprocess.run([*command, "predict", *AE_DIGITS, *ddp, "--ckpt_path", str(ckpt), "--data", "Arrays",
                          "--data.path", "one.npy", "--predictions.output", "one.csv"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=600)
    errors = [line for line in one.stderr.splitlines() if line.startswith("dcl: error:")]
    assert one.returncode == 2 and "Traceback" not in one.stderr, one.stderr[-3000:]
    assert errors == ["dcl: error: Arrays: 1 samples cannot be shared by 2 processes (each needs one); run on at "
                      "most 1 (trainer.devices x num_nodes)"], one.stderr[-3000:]


def test_the_dcl_command_ends_its_ddp_process_group(tmp_path):
    """Found by probing the command under ddp: about 1 in 30 two-process runs aborted after the fit, in gloo's
    teardown at interpreter exit (a rank that exited first; the spawned workers' twin, which dcl already ended
    itself). The command ends its group when it is done: a barrier, then destroy_process_group."""
    import torch.distributed as dist

    run_cli(["fit", *AE_DIGITS, "--trainer.max_epochs", "1", "--trainer.strategy", "ddp", "--trainer.devices", "1",
             "--trainer.accelerator", "cpu"], tmp_path)
    assert (tmp_path / "final_scores.json").is_file()
    assert not dist.is_initialized()


def test_unknown_method_lists_known_ones(tmp_path, dcl_error):
    msg = dcl_error(["fit", "--model", "NoSuchMethod", "--data", "Digits"], tmp_path)
    assert "unknown method 'NoSuchMethod'; known methods: " + ", ".join(sorted(registry.available("method"))) in msg


def test_unknown_datamodule(tmp_path, dcl_error):
    msg = dcl_error(["fit", "--model", "DEC", "--data", "Nope"], tmp_path)
    assert "unknown datamodule 'Nope'" in msg and "USPS" in msg


def test_unknown_config_key(tmp_path, dcl_error):
    msg = dcl_error(["fit", *AE_DIGITS, "--model.init_args.no_such_arg", "3"], tmp_path)
    assert "AEKMeans has no setting 'no_such_arg'; its settings: latent_dim," in msg
    msg = dcl_error(["fit", *AE_DIGITS, "--data.init_args.batchsize", "3"], tmp_path)
    assert "Digits has no setting 'batchsize' (did you mean 'batch_size'?)" in msg


def test_typos_in_a_config_file_are_named_as_on_the_command_line(tmp_path, dcl_error):
    """Found by probing as a user: a config file's misspelt class_path was reported as "model must be null, got
    {...the whole dict...}", a misspelt init_args as a missing setting of the base class, and a misspelt Trainer
    key without the name it meant."""
    config = (REPO / "configs/ae_kmeans/digits.yaml").read_text()
    for old, new, expected in (
            ("class_path: dcl.methods.ae_kmeans.AEKMeans", "class_path: AEKMean",
             "unknown method 'AEKMean' (did you mean 'AEKMeans'?)"),
            ("class_path: dcl.datamodules.digits.Digits", "class_path: Digts",
             "unknown datamodule 'Digts' (did you mean 'Digits'?)"),
            ("  init_args:", "  init_arg:", "'init_arg' is not a key of a class's settings (class_path and init_args): "
                                            "did you mean 'init_args'?"),
            ("max_epochs:", "max_epoch:", "does not accept option 'trainer.max_epoch' (did you mean "
                                          "trainer.max_epochs?)")):
        assert old in config
        (tmp_path / "typo.yaml").write_text(config.replace(old, new))
        assert expected in dcl_error(["fit", "--config", str(tmp_path / "typo.yaml")], tmp_path)
    dec = ["--config", str(REPO / "configs/dec/digits.yaml")]
    msg = dcl_error(["fit", *dec, "--model.init_args.optimizer.init_args.lrr", "0.1"], tmp_path)
    # (was: 'model.optimizer must be , got "Namespace(...)"')
    assert "model.optimizer: SGD has no setting 'lrr' (did you mean 'lr'?); its settings: lr, momentum," in msg
    # a misspelt init_args or class_path, or a key under one that is none, on the command line (each was: 'model must
    # be null, got "NestedArg(key='init_arg.latent_dim', val='5')"')
    for flag, expected in (("--model.init_arg.latent_dim", "model.init_arg.latent_dim: 'init_arg' is not a key of a "
                                                           "class's settings (class_path and init_args): did you mean "
                                                           "'init_args'?"),
                           ("--data.init_args.batch_size.x", "data.batch_size.x: data.batch_size has no setting 'x'"),
                           ("--model.init_args.optimizer.clas_path.x", "model.optimizer.clas_path.x: 'clas_path' is "
                                                                       "not a key of a class's settings"),
                           ("--model.foo.bar", "model.foo.bar: model has no setting 'foo' (see dcl fit --help)")):
        assert expected in dcl_error(["fit", *dec, flag, "5"], tmp_path)
    msg = dcl_error(["fit", *AE_DIGITS, "--trainer.max_epohcs", "1"], tmp_path)
    assert "unrecognized arguments: --trainer.max_epohcs 1 (did you mean trainer.max_epochs?)" in msg
    # an abbreviation is a typo too: argparse would take it for the one option it begins, silently
    for abbreviated, meant in (("--trainer.max_epoch", "trainer.max_epochs"), ("--seed_everythin", "seed_everything")):
        msg = dcl_error(["fit", *AE_DIGITS, abbreviated, "1"], tmp_path)
        assert f"unrecognized arguments: {abbreviated} 1 (did you mean {meant}?)" in msg


@pytest.mark.parametrize("data, expected", [
    (["--data", "Arrays"], "data.path is required by Arrays: set --data.path (see dcl fit --help)"),
    (["--data", "ImageFolder", "--data.image_size", "8"], "data.root is required by ImageFolder: set --data.root"),
])
def test_a_missing_required_setting_is_named(tmp_path, dcl_error, data, expected):
    """Found by probing as a user: ``dcl fit --model AEKMeans --data Arrays`` without ``--data.path`` printed
    'data must be null, got "Namespace(class_path=..., init_args=Namespace(path=None, ...))"'."""
    msg = dcl_error(["fit", "--model", "AEKMeans", *data], tmp_path)
    assert msg.startswith(f"dcl: error: {expected}"), msg


@pytest.mark.parametrize("args, expected", [
    (["--data.init_args.n_clusters", "abc"], "data.n_clusters must be an integer or null, got 'abc'"),
    (["--model.init_args.latent_dim", "x"], "model.latent_dim must be an integer, got 'x'"),
    (["--model.init_args.hidden_dims", "x"], "model.hidden_dims must be a list, e.g. [500, 500], got 'x'"),
    (["--model", "nomodule.MyDEC"], "cannot import nomodule.MyDEC: No module named 'nomodule' (is the folder of its "
                                    "module on PYTHONPATH"),
])
def test_a_value_of_the_wrong_type_is_one_sentence(tmp_path, dcl_error, args, expected):
    """jsonargparse lists every alternative of every nested Union ("Does not validate against any of the Union
    subtypes ... NestedArg(...)"), the import error of a class path buried in the middle."""
    msg = dcl_error(["fit", *AE_DIGITS, *args], tmp_path)
    assert msg.startswith(f"dcl: error: {expected}"), msg


def test_missing_data_dir(tmp_path, dcl_error):
    msg = dcl_error(["fit", "--model", "DEC", "--data", "USPS", "--data.data_dir", str(tmp_path / "none")], tmp_path)
    assert "usps.bz2" in msg and str(tmp_path / "none") in msg and "download" in msg


@pytest.mark.parametrize("k, expected", [("1", "n_clusters must be an integer >= 2, got 1"),  # the method's
                                         ("5000", "n_clusters must be between 2 and the number of samples (1797), "
                                                  "got 5000")])  # the data's
def test_bad_n_clusters(tmp_path, k, expected, dcl_error):
    msg = dcl_error(["fit", *AE_DIGITS, "--data.init_args.n_clusters", k], tmp_path)
    assert expected in msg


def test_more_clusters_than_samples_writes_no_log_file(tmp_path, dcl_error):
    """Found by probing as a user (README's ``dcl fit --model ... --data Arrays``, no config: Lightning's
    TensorBoardLogger): the data's check of n_clusters ran in its setup, after Lightning had started the loggers,
    and the refused fit left ``lightning_logs/version_0/events.out.tfevents.*`` behind."""
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32))
    msg = dcl_error(["fit", "--model", "AEKMeans", "--data", "Arrays", "--data.path", str(tmp_path / "x.npy"),
                     "--data.n_clusters", "30", "--trainer.logger", "true", "--trainer.enable_progress_bar", "false"],
                    tmp_path, quiet=False)
    assert "n_clusters must be between 2 and the number of samples (20), got 30" in msg


def test_a_convolutional_checkpoint_refuses_images_of_another_size(tmp_path, dcl_error):
    """Found by probing with one's own data: a convolutional network's weights fit images of other sizes too (16 x 16
    and 14 x 14 end in the same 2 x 2 map), so a checkpoint was refused only where a tensor did not fit: predict,
    validate and a resumed fit ran on 14 x 14 images with a 16 x 16 model without a word."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x16.npy", rng.random((40, 1, 16, 16), dtype=np.float32))
    np.save(tmp_path / "x14.npy", rng.random((40, 1, 14, 14), dtype=np.float32))
    model = ["--model", "AEKMeans", "--model.init_args.autoencoder", "conv", "--data", "Arrays", "--data.n_clusters",
             "2"]
    run_cli(["fit", *model, "--data.path", str(tmp_path / "x16.npy"), "--trainer.max_epochs", "1",
             "--trainer.enable_checkpointing", "true"], tmp_path)
    ckpt = str(next(tmp_path.rglob("*.ckpt")))
    for command in ("predict", "validate", "fit"):
        (tmp_path / command).mkdir()
        msg = dcl_error([command, *model, "--data.path", str(tmp_path / "x14.npy"), "--ckpt_path", ckpt,
                         "--trainer.max_epochs", "2"], tmp_path / command)
        assert "trained on samples of shape (1, 16, 16), but this data has shape (1, 14, 14)" in msg, command


@pytest.mark.parametrize("command", ["fit", "validate", "test"])
def test_a_checkpoint_that_does_not_fit_the_data_writes_no_log_file(tmp_path, dcl_error, command):
    """Found by probing as a user: a checkpoint trained on samples of another shape, or on standardized samples,
    was refused while Lightning restored it, after it had started the loggers: a resumed fit, validate and test left
    ``lightning_logs/version_N/events.out.tfevents.*`` (and the error told a fit to "predict on data of the training
    shape")."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x4.npy", rng.normal(size=(40, 4)).astype(np.float32))
    np.save(tmp_path / "x3.npy", rng.normal(size=(40, 3)).astype(np.float32))
    model = ["--model", "AEKMeans", "--model.init_args.hidden_dims", "[8]", "--data", "Arrays", "--data.n_clusters",
             "2"]
    run_cli(["fit", *model, "--data.path", str(tmp_path / "x4.npy"), "--data.standardize", "true",
             "--trainer.max_epochs", "1", "--trainer.enable_checkpointing", "true"], tmp_path)
    ckpt = str(next(tmp_path.rglob("*.ckpt")))
    logged = ["--ckpt_path", ckpt, "--trainer.logger", "true", "--trainer.enable_progress_bar", "false",
              "--trainer.max_epochs", "2"]
    (tmp_path / "err").mkdir()
    msg = dcl_error([command, *model, "--data.path", str(tmp_path / "x3.npy"), "--data.standardize", "true",
                     *logged], tmp_path / "err", quiet=False)
    assert "trained on samples of shape (4,), but this data has shape (3,); use data of the training shape" in msg
    msg = dcl_error([command, *model, "--data.path", str(tmp_path / "x4.npy"), *logged], tmp_path / "err",
                    quiet=False)
    assert "trained on standardized samples; set standardize: true" in msg


def test_a_pretrained_autoencoder_of_standardized_samples_needs_standardize(tmp_path, dcl_error):
    """Found by probing as a user: DEC started from an AEKMeans run on standardized samples (Arrays standardize:
    true), its own fit without standardize: the autoencoder was given the raw samples, silently (iris: ACC 0.65
    against 0.77); predict refuses that mismatch. So does an autoencoder of the samples as they are, given
    standardized ones."""
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(3, 2, size=(40, 3)).astype(np.float32))
    data = ["--data", "Arrays", "--data.path", str(tmp_path / "x.npy"), "--data.n_clusters", "2"]
    run_cli(["fit", "--model", "AEKMeans", "--model.init_args.hidden_dims", "[8]", *data, "--data.standardize",
             "true", "--trainer.max_epochs", "1", "--trainer.enable_checkpointing", "true"], tmp_path)
    ckpt = str(next(tmp_path.rglob("*.ckpt")))
    (tmp_path / "err").mkdir()
    dec = ["fit", "--model", "DEC", "--model.init_args.hidden_dims", "[8]", "--model.init_args.pretrained", ckpt,
           *data, "--trainer.max_epochs", "2", "--trainer.logger", "true", "--trainer.enable_progress_bar", "false"]
    msg = dcl_error(dec, tmp_path / "err", quiet=False)
    assert f"the pretrained autoencoder {ckpt} was trained on standardized samples; set standardize: true" in msg
    assert run_cli([*dec, "--data.standardize", "true"], tmp_path / "err")["k"] == 2
    # and the other way: an autoencoder of the samples as they are refuses standardized ones
    (tmp_path / "raw").mkdir()
    run_cli(["fit", "--model", "AEKMeans", "--model.init_args.hidden_dims", "[8]", *data, "--trainer.max_epochs", "1",
             "--trainer.enable_checkpointing", "true"], tmp_path / "raw")
    raw = str(next((tmp_path / "raw").rglob("*.ckpt")))
    (tmp_path / "err2").mkdir()
    from_raw = [raw if arg == ckpt else arg for arg in dec]  # the same DEC fit, from the raw samples' autoencoder
    msg = dcl_error([*from_raw, "--data.standardize", "true"], tmp_path / "err2", quiet=False)
    assert f"the pretrained autoencoder {raw} was trained on samples as they are, not standardized" in msg


def test_a_pretrained_dcfae_of_standardized_samples_needs_standardize(tmp_path, dcl_error):
    """Found by a practitioner's pass: DCFAE's own ``pretrained`` (a DCFAE run whose FAE it reuses) had no such
    check, and fed the FAE of standardized images raw ones, silently."""
    images = np.random.default_rng(0).normal(3, 2, size=(40, 1, 8, 8)).astype(np.float32)
    np.save(tmp_path / "img.npy", images)
    common = ["--model", "DCFAE", *DCFAE_TINY_ARGS, "--model.pixel_loss", "mse", "--data", "Arrays", "--data.path",
              str(tmp_path / "img.npy"), "--data.n_clusters", "2", "--data.batch_size", "10",
              "--trainer.enable_progress_bar", "false"]
    run_cli(["fit", *common, "--model.fae_epochs", "1", "--model.use_dense", "false", "--data.standardize", "true",
             "--trainer.max_epochs", "1", "--trainer.enable_checkpointing", "true"], tmp_path)
    ckpt = str(next(tmp_path.rglob("*.ckpt")))
    (tmp_path / "err").mkdir()
    reuse = ["fit", *common, "--model.pretrained", ckpt, "--model.similarity_batches", "1", "--trainer.max_epochs",
             "1", "--trainer.logger", "true"]
    msg = dcl_error(reuse, tmp_path / "err", quiet=False)
    assert f"the pretrained autoencoder {ckpt} was trained on standardized samples; set standardize: true" in msg
    assert run_cli([*reuse, "--data.standardize", "true"], tmp_path / "err")["k"] == 2


def test_one_class_in_the_data_says_where_n_clusters_1_came_from(tmp_path, dcl_error):
    """Found by probing as a user: unlabeled images in one subfolder (the layout torchvision's ImageFolder asks
    for) are one class, and the fit was refused with "n_clusters must be an integer >= 2, got 1", a setting the
    user never gave."""
    from PIL import Image

    (tmp_path / "img" / "unlabeled").mkdir(parents=True)
    for i in range(6):
        Image.fromarray(np.full((4, 4), 40 * i, dtype=np.uint8)).save(tmp_path / "img" / "unlabeled" / f"{i}.png")
    args = ["fit", "--model", "AEKMeans", "--data", "ImageFolder", "--data.root", str(tmp_path / "img"),
            "--data.image_size", "4", "--data.flatten", "true"]
    msg = dcl_error(args, tmp_path)
    assert msg.startswith("dcl: error: n_clusters must be an integer >= 2, got 1, the number of classes of the data "
                          "(data.n_clusters is not set): set data.n_clusters"), msg
    assert "ImageFolder takes each subfolder of root for a class" in msg
    msg = dcl_error([*args, "--data.n_clusters", "1"], tmp_path)  # given: the method's words alone
    assert msg == "dcl: error: n_clusters must be an integer >= 2, got 1", msg


@pytest.mark.parametrize("args, words", [
    (["--model.init_args.activation", "swish"], ["unknown activation 'swish'", "leaky_relu"]),
    (["--model.init_args.hidden_dims", "[64, 0]"], ["hidden_dims", "[64, 0]"]),  # once trained into a constant code
    (["--model.init_args.latent_dim", "0"], ["latent_dim", "got 0"]),
    (["--model.init_args.kmeans_n_init", "0"], ["kmeans_n_init", "got 0"]),  # once failed after the pretraining
    (["--trainer.callbacks+=dcl.callbacks.ClusteringPlots", "--trainer.callbacks.projection", "umap"],
     ["projection", "'umap'"]),
    (["--trainer.enable_checkpointing", "false"], ["enable_checkpointing=False", "ModelCheckpoint"]),  # Lightning's
    (["--trainer.precision", "bf16-true"], ["'bf16-true' is not supported", "bf16-mixed"]),  # once failed mid-fit
    (["--trainer.precision", "64-true"], ["'64-true' is not supported"]),
])
def test_a_setting_a_constructor_refuses_is_one_line_before_training(tmp_path, args, words, dcl_error):
    msg = dcl_error(["fit", *AE_DIGITS, *args], tmp_path)
    assert all(w in msg for w in words), msg
    assert "Traceback" not in msg and "Namespace" not in msg


@pytest.mark.parametrize("method, setting, words", [
    ("ae_kmeans", "optimizer.init_args.lr=-1", "optimizer refuses its settings: Invalid learning rate: -1.0"),
    ("dec", "pretrain_optimizer.init_args.lr=-1", "pretrain_optimizer refuses its settings: Invalid learning rate"),
    # the clustering phase's optimizer is built when that phase starts: this failed after the whole pretraining
    ("dec", "optimizer.init_args.lr=-0.1", "optimizer refuses its settings: Invalid learning rate: -0.1"),
    ("cm", "optimizer.init_args.eps=-1", "optimizer refuses its settings: Invalid epsilon value: -1.0"),
    ("dcfae", "discriminator_optimizer.init_args.betas=[1.5, 0.9]", "discriminator_optimizer refuses its settings"),
    ("dcfae", "embedding_optimizer.init_args.lr=-1", "embedding_optimizer refuses its settings"),
])
def test_an_optimizer_setting_torch_refuses_is_one_line_before_training(tmp_path, method, setting, words, dcl_error):
    msg = dcl_error(["fit", "--config", str(REPO / f"configs/{method}/digits.yaml"), f"--model.init_args.{setting}"],
                    tmp_path)
    assert words in msg, msg


@pytest.mark.parametrize("command", ["fit", "validate", "test"])
def test_a_share_of_the_scoring_batches_that_leaves_none_is_refused_before_the_loggers(tmp_path, dcl_error, command):
    """Found by reading the README against the code: limit_val_batches 0.1 of Digits' 2 validation batches was refused
    by Lightning at its sanity check, after the logger had written hparams.yaml. A share that leaves a batch scores
    all samples, as 1.0 does."""
    stage = "test" if command == "test" else "val"
    logged = ["--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", str(tmp_path)]
    msg = dcl_error([command, *AE_DIGITS, f"--trainer.limit_{stage}_batches", "0.1", *logged], tmp_path)
    assert f"trainer.limit_{stage}_batches 0.1 of the 2 " in msg and "set it to 1.0" in msg, msg
    if command == "fit":
        (tmp_path / "half").mkdir()
        scores = fit_ae(tmp_path / "half", "--trainer.limit_val_batches", "0.5", "--trainer.max_epochs", "1")
        assert scores["acc"] > 0


@pytest.mark.parametrize("setting, words", [
    ("gradient_clip_val=1.0", "gradient_clip_val 1.0 cannot apply; set the method's own gradient_clip_val instead"),
    ("accumulate_grad_batches=2", "accumulate_grad_batches 2 cannot apply; remove it"),
])
def test_trainer_settings_a_method_stepping_its_own_optimizers_cannot_use(tmp_path, setting, words, dcl_error):
    """DCFAE steps its two sides itself: Lightning refuses these with "switch to automatic optimization", which a
    user of a configured method cannot do; the error names what to set instead."""
    msg = dcl_error(["fit", "--config", str(REPO / "configs/dcfae/digits.yaml"), f"--trainer.{setting}"], tmp_path)
    assert "DCFAE steps its optimizers itself (manual optimization)" in msg and words in msg, msg


def test_outputs_through_a_file_are_refused_before_training(tmp_path, dcl_error):
    """Found by probing as a user: each ended in a traceback, the predictions' after the whole predict pass."""
    (tmp_path / "afile").write_text("")
    (tmp_path / "locked").mkdir(mode=0o500)
    assert unwritable_folder(tmp_path / "afile" / "x") == f"{tmp_path / 'afile'} is a file, not a folder"
    assert unwritable_folder(tmp_path / "new" / "deeper") is None  # made as needed
    if os.geteuid() != 0:  # root writes anywhere
        assert unwritable_folder(tmp_path / "locked" / "x") == f"the folder {tmp_path / 'locked'} is not writable"
    # trainer.default_root_dir is checked as the loggers' folders are (run_cli sets it to tmp_path)
    for setting, args in (
            ("the CSVLogger's save_dir 'afile/x'", ["--trainer.logger", "lightning.pytorch.loggers.CSVLogger",
                                                   "--trainer.logger.save_dir", "afile/x"]),
            ("predictions.output 'afile/p.csv'", ["--predictions.output", "afile/p.csv"]),
            # (found by an audit: the plots' folder failed in a traceback after the whole fit, the checkpoints' at
            # the first save)
            ("the ClusteringPlots's dirpath 'afile/plots'", ["--trainer.callbacks+=dcl.callbacks.ClusteringPlots",
                                                            "--trainer.callbacks.init_args.dirpath", "afile/plots"]),
            ("the ModelCheckpoint's dirpath '", ["--trainer.callbacks+=ModelCheckpoint",
                                                         "--trainer.callbacks.init_args.dirpath", "afile/ck",
                                                         "--trainer.callbacks.init_args.every_n_epochs", "2"])):
        command = "predict" if "predictions" in setting else "fit"
        msg = dcl_error([command, *AE_DIGITS, "--trainer.logger", "false", *args], tmp_path, quiet=False)
        assert setting in msg and f"{tmp_path / 'afile'} is a file, not a folder" in msg, msg
    # a second ModelCheckpoint beside the config's, at the same settings: Lightning's RuntimeError and traceback
    msg = dcl_error(["fit", *AE_DIGITS, "--trainer.callbacks+=ModelCheckpoint"], tmp_path)
    assert "trainer.callbacks holds two ModelCheckpoints with the same settings" in msg


def test_predict_writes_only_its_outputs_so_its_run_folder_need_not_take_files(tmp_path):
    """Found by an audit: dcl predict run from a folder that takes no files (cd /proc) was refused ("trainer.
    default_root_dir '/proc' cannot hold the run's files"), though it writes only its outputs (no logger, checkpoint
    or plot). Its outputs are still checked."""
    from dcl.cli import main

    run_cli(["fit", *AE_DIGITS, "--trainer.max_epochs", "1"], tmp_path)
    (tmp_path / "afile").write_text("")
    predict = ["predict", *AE_DIGITS, *QUIET, "--ckpt_path", str(next(tmp_path.rglob("last.ckpt"))),
               "--trainer.default_root_dir", str(tmp_path / "afile" / "run")]
    main([*predict, "--predictions.output", str(tmp_path / "p.csv")])
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 1798 and (tmp_path / "afile").is_file()
    with pytest.raises(SystemExit):
        main([*predict, "--predictions.output", str(tmp_path / "afile" / "p.csv")])


def test_predictions_to_stdout_are_the_csv_alone(tmp_path):
    """Found by trying the stdout output: the progress bar's lines came before the CSV and the command's "dcl: wrote"
    line after it, in the same stream. With an output on stdout the bar is off and those lines go to stderr."""
    run_cli(["fit", *AE_DIGITS, "--trainer.max_epochs", "1"], tmp_path)
    ckpt = str(next(tmp_path.rglob("last.ckpt")))
    proc = subprocess.run([sys.executable, "-m", "dcl.cli", "predict", *AE_DIGITS, "--trainer.logger", "false",
                           "--ckpt_path", ckpt, "--predictions.output", "/dev/stdout"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert proc.stdout.startswith("index,cluster,confidence,label\n") and len(rows) == 1797, proc.stdout[:300]
    assert [int(r["index"]) for r in rows] == list(range(1797))
    assert "dcl: wrote 1797 assignments to /dev/stdout" in proc.stderr


@pytest.mark.parametrize("x, args, expected", [
    (np.random.default_rng(0).normal(size=(40, 3)), ["--model", "DPGMM", "--model.init_args.k_init", "45",
                                                     "--model.init_args.hidden_dims", "[8]"],
     "k_init 45 is more than the 40 samples to cluster"),
    # 8-bit pixel values saved as floats: the Bernoulli pixel loss (DCFAE's default) falls without limit
    (np.random.default_rng(0).integers(0, 256, size=(40, 1, 16, 16)).astype(np.float32), ["--model", "DCFAE"],
     "DCFAE's pixel_loss bce is the Bernoulli likelihood of pixels in [0, 1], but Arrays serves values in [0, 255]"),
])
def test_a_method_refuses_its_data_before_training_and_before_the_loggers_start(tmp_path, dcl_error, x, args,
                                                                                  expected):
    """Found by probing as a user for DCFAE (DPGMM's was tested without a logger): the methods' checks of the data
    ran in their setup, after Lightning had started the loggers, and the refused fit left
    ``lightning_logs/version_0/events.out.tfevents.*`` behind (no config: Lightning's TensorBoardLogger)."""
    np.save(tmp_path / "x.npy", x)
    msg = dcl_error(["fit", *args, "--data", "Arrays", "--data.path", str(tmp_path / "x.npy"), "--data.n_clusters",
                     "3", "--trainer.logger", "true", "--trainer.enable_progress_bar", "false"], tmp_path, quiet=False)
    assert expected in msg, msg


def test_a_fit_of_zero_epochs_is_refused(tmp_path, dcl_error):
    msg = dcl_error(["fit", *AE_DIGITS, "--trainer.max_epochs", "0"], tmp_path)
    assert "trainer.max_epochs 0 trains nothing" in msg, msg


def test_predict_without_an_output_is_refused_before_the_pass(tmp_path, dcl_error):
    """It was a warning, and the whole pass over the data ran for nothing (a user's pass)."""
    msg = dcl_error(["predict", *AE_DIGITS, "--trainer.logger", "false"], tmp_path)
    assert "predict writes nothing without --predictions.output (a CSV of the clusters, e.g. clusters.csv) or " \
           "--predictions.embeddings (e.g. z.npy): set one or both" in msg


def test_nan_in_data(tmp_path, dcl_error):
    x = np.random.default_rng(0).normal(size=(40, 3))
    x[7, 0] = np.inf
    np.save(tmp_path / "x.npy", x)
    msg = dcl_error(["fit", "--model", "AEKMeans", "--data", "Arrays", "--data.path", str(tmp_path / "x.npy"),
                     "--data.n_clusters", "3"], tmp_path)
    assert "NaN or inf" in msg and "[7]" in msg


def test_bad_checkpoints(tmp_path, dcl_error):
    fit_ae(tmp_path, "--trainer.enable_checkpointing", "true")
    ckpt = next(tmp_path.rglob("last.ckpt"))
    # a checkpoint from another method
    (tmp_path / "other").mkdir()
    msg = dcl_error(["validate", "--config", str(REPO / "configs/dec/digits.yaml"), *SMALL_AE, "--ckpt_path",
                     str(ckpt)], tmp_path / "other")
    assert "written by method AEKMeans, not DEC" in msg
    # nor one of the method a registered method subclasses: SAE's training is not AEKMeans' (Lightning would have
    # swapped the method asked for for the checkpoint's, silently)
    msg = dcl_error(["fit", "--model", "SAE", "--data", "Digits", "--ckpt_path", str(ckpt)], tmp_path / "other")
    assert "written by method AEKMeans, not SAE" in msg
    # a truncated file
    bad = tmp_path / "truncated.ckpt"
    bad.write_bytes(ckpt.read_bytes()[:2000])
    (tmp_path / "trunc").mkdir()
    msg = dcl_error(["validate", *AE_DIGITS, "--ckpt_path", str(bad)], tmp_path / "trunc")
    assert "truncated or not a PyTorch checkpoint" in msg
    # a pretrained autoencoder of another input shape
    (tmp_path / "shape").mkdir()
    msg = dcl_error(["fit", "--config", str(REPO / "configs/dec/digits.yaml"), *SMALL_AE, "--data.init_args.flatten",
                     "false", "--model.init_args.autoencoder", "mlp", "--model.init_args.pretrained", str(ckpt)],
                    tmp_path / "shape")
    assert "shape" in msg and "(64,)" in msg
    # ... or of another activation: the same weights' shapes, another function of them (AE-CM's LeakyReLU on the
    # shared pretraining's ReLU autoencoder loaded without a word)
    msg = dcl_error(["fit", "--config", str(REPO / "configs/dec/digits.yaml"), *SMALL_AE,
                     "--model.init_args.activation", "leaky_relu", "--model.init_args.pretrained", str(ckpt)],
                    tmp_path / "shape")
    assert "was trained with activation relu, this DEC uses leaky_relu; set model.init_args.activation relu" in msg
    # a run folder given for its checkpoint (found by probing: "does not exist") names the checkpoints in it
    folder = ckpt.parent.parent
    msg = dcl_error(["validate", *AE_DIGITS, "--ckpt_path", str(folder)], tmp_path / "shape")
    assert f"checkpoint {folder} is a folder; give the checkpoint file (it holds {ckpt}" in msg
    msg = dcl_error(["fit", "--config", str(REPO / "configs/dec/digits.yaml"), *SMALL_AE,
                     "--model.init_args.pretrained", str(folder)], tmp_path / "shape")
    assert f"pretrained checkpoint {folder} is a folder; give the checkpoint file (it holds {ckpt}" in msg


def test_every_autoencoder_method_starts_from_the_pretrained_weights(tmp_path):
    """An audit: no test showed the weights of ``pretrained`` end up in the autoencoder (skipping the
    load_state_dict passed every test). Each method built from an AEKMeans checkpoint, and from a bare autoencoder
    state dict, holds exactly its weights."""
    fit_ae(tmp_path, "--trainer.enable_checkpointing", "true", "--trainer.max_epochs", "1")
    ckpt = next(tmp_path.rglob("last.ckpt"))
    saved = {k[len("autoencoder."):]: v for k, v in torch.load(ckpt, weights_only=False)["state_dict"].items()
             if k.startswith("autoencoder.")}
    bare = tmp_path / "ae.pt"
    torch.save(saved, bare)
    for name in ["DEC", "IDEC", "DEKM", "AECM", "DPGMM", "AEKMeans"]:
        for path in (ckpt, bare):
            model = registry.get_method(name)(n_clusters=10, input_shape=(64,), hidden_dims=[64, 64],
                                              activation="relu", pretrained=str(path))
            own = model.autoencoder.state_dict()
            assert own.keys() == saved.keys(), name
            assert model.pretrain_epochs == 0, name  # the pretrained autoencoder replaces the pretraining
            for key, value in saved.items():
                assert torch.equal(own[key], value), (name, path.name, key)


def test_a_pretrained_autoencoder_of_other_layers_is_refused_by_name(tmp_path):
    """Starting from an autoencoder of other hidden_dims or latent_dim (no test had reached this refusal): one error
    naming a layer that differs, or the layers the file lacks, and what to set."""
    from dcl.method import ConfigError

    bare = tmp_path / "ae.pt"
    torch.save(registry.get_method("AEKMeans")(n_clusters=10, input_shape=(64,), hidden_dims=[64, 64],
                                               latent_dim=10).autoencoder.state_dict(), bare)
    DEC = registry.get_method("DEC")
    with pytest.raises(ConfigError, match=r"pretrained checkpoint .*ae\.pt holds a different autoencoder "
                                          r"\(encoder\.[\d.]+\.weight is \(64, 64\) there but \(32, 64\) here\); "
                                          "use the same autoencoder, latent_dim and hidden_dims as the run that "
                                          "produced it"):
        DEC(n_clusters=10, input_shape=(64,), hidden_dims=[32, 64], latent_dim=10, pretrained=str(bare))
    with pytest.raises(ConfigError, match=r"holds a different autoencoder \(encoder\.[\d.]+\.weight is \(10, 64\) "
                                          r"there but \(5, 64\) here\)"):
        DEC(n_clusters=10, input_shape=(64,), hidden_dims=[64, 64], latent_dim=5, pretrained=str(bare))
    with pytest.raises(ConfigError, match=r"holds a different autoencoder \(missing \['"):
        DEC(n_clusters=10, input_shape=(64,), hidden_dims=[64, 64, 64], latent_dim=10, pretrained=str(bare))


def test_a_checkpoint_that_no_dcl_method_wrote_is_refused(tmp_path, dcl_error):
    """A Lightning checkpoint of another project given to dcl predict, or to a method's load_from_checkpoint."""
    foreign = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"layer.weight": torch.zeros(2, 2)}, "pytorch-lightning_version": "2.6.0",
                "hyper_parameters": {}}, foreign)
    msg = dcl_error(["predict", *AE_DIGITS, "--ckpt_path", str(foreign)], tmp_path)
    assert msg == "dcl: error: this checkpoint was not written by a dcl method; AEKMeans cannot load it"
    from dcl.method import ConfigError

    with pytest.raises(ConfigError, match="not written by a dcl method; DEC cannot load it"):
        registry.get_method("DEC").load_from_checkpoint(foreign)
    # and by a Trainer given it as ckpt_path (Lightning's restore, through the method's on_load_checkpoint)
    import lightning.pytorch as pl
    from dcl.datamodules.digits import Digits

    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    with pytest.raises(ConfigError, match="not written by a dcl method; DEC cannot load it"):
        trainer.predict(registry.get_method("DEC")(n_clusters=10, input_shape=(64,)), Digits(), ckpt_path=foreign)


@pytest.mark.parametrize("method", ["dec", "dekm"])
def test_a_run_from_a_pretrained_autoencoder_needs_that_file_no_more_once_trained(method, tmp_path, capsys,
                                                                                   dcl_error):
    """Found by probing as a researcher: a checkpoint of a run started from ``pretrained`` rebuilt its method by
    loading that autoencoder file again, so validate, predict, resuming and load_from_checkpoint failed once the
    file had moved (a relative path: from any other folder), though the checkpoint holds every weight. DEKM, which
    loads it in its own constructor, still did so after DEC was mended (an audit against the README)."""
    import shutil

    (tmp_path / "ae").mkdir()
    fit_ae(tmp_path / "ae", "--trainer.enable_checkpointing", "true")
    dec = ["--config", str(REPO / f"configs/{method}/digits.yaml"), *SMALL_AE]
    (tmp_path / "dec").mkdir()
    run_cli(["fit", *dec, "--model.init_args.pretrained", str(next((tmp_path / "ae").rglob("last.ckpt"))),
             "--trainer.max_epochs", "1", "--trainer.enable_checkpointing", "true"], tmp_path / "dec")
    ckpt = next((tmp_path / "dec").rglob("last.ckpt"))
    shutil.move(tmp_path / "ae", tmp_path / "ae_moved")
    capsys.readouterr()
    run_cli(["predict", *dec, "--ckpt_path", str(ckpt), "--predictions.output", "p.csv"], tmp_path / "dec")
    assert len((tmp_path / "dec" / "p.csv").read_text().splitlines()) == 1797 + 1
    run_cli(["validate", *dec, "--ckpt_path", str(ckpt)], tmp_path / "dec")
    assert "val/acc" in capsys.readouterr().out
    (tmp_path / "resumed").mkdir()
    scores = run_cli(["fit", *dec, "--ckpt_path", str(ckpt), "--trainer.max_epochs", "2"], tmp_path / "resumed")
    assert scores["acc"] > 0.3
    trained = registry.get_method(method).load_from_checkpoint(ckpt)
    assert trained.pretrained and bool(trained.clustering_started)
    # a new run from the moved file is still refused before training
    (tmp_path / "new").mkdir()
    msg = dcl_error(["fit", *dec, "--model.init_args.pretrained", str(trained.pretrained)], tmp_path / "new")
    assert "does not exist; train one first, e.g. dcl fit --config configs/ae_kmeans/<data>.yaml" in msg


def test_a_fast_dev_run_writes_nothing(tmp_path, capsys, dcl_error):
    """Found by probing with Trainer flags: --trainer.fast_dev_run (Lightning: "logging and checkpointing are
    suppressed") wrote final_scores.json, the plots and, through Lightning's ModelCheckpoint, last.ckpt, v1, v2, ...
    into the folder it ran in; DCFAE's refusal of the 1-batch epoch did not say why the epoch had 1 batch. A
    practitioner's pass found DCFAE's trial refused although it never reaches phase 2 (one batch of one epoch, in
    its 100 FAE epochs), and the methods' "max_epochs 1 ends within the ... epochs: raise max_epochs" warning in
    every two-phase method's trial, advice about a limit fast_dev_run sets, not the config."""
    for method, extra in [("ae_kmeans", SMALL_AE), ("dcfae", []), ("dec", []), ("sae", [])]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run_cli(["fit", "--config", str(REPO / f"configs/{method}/digits.yaml"), *extra,
                     "--trainer.fast_dev_run", "true"], tmp_path)
        assert "dcl: final clustering of 1797 samples" in capsys.readouterr().out, method
        assert not [p for p in tmp_path.rglob("*") if p.is_file()], method
        assert not [w for w in caught if "ends within" in str(w.message)], method
    # a trial that starts in phase 2 (no FAE epochs) is refused, and says why the epoch has one batch
    msg = dcl_error(["fit", "--config", str(REPO / "configs/dcfae/digits.yaml"), "--trainer.fast_dev_run", "true",
                     "--model.init_args.fae_epochs", "0"], tmp_path)
    assert "an epoch has 1: the dense network would never take a step; trainer.fast_dev_run cuts it to that" in msg


def test_a_fit_that_cannot_step_is_refused_before_its_logger_writes(tmp_path, dcl_error):
    """Found by an audit against the README ("before anything is trained or written"): DCFAE refused a phase 2 of
    more similarity_batches than an epoch has in its on_train_start, after the run's config.yaml and the logger's
    hparams.yaml were written. The dcl command now asks the method (check_fit) before it starts the trainer."""
    msg = dcl_error(["fit", "--config", str(REPO / "configs/dcfae/digits.yaml"), "--model.init_args.fae_epochs", "0",
                     "--model.init_args.similarity_batches", "1000", "--trainer.logger", "CSVLogger",
                     "--trainer.logger.save_dir", str(tmp_path / "logs")], tmp_path)
    assert "similarity_batches 1000 loader batches, but an epoch has 29" in msg  # 1797 samples, batches of 64


@pytest.mark.parametrize("settings", [{}, {"limit_train_batches": 5}, {"limit_train_batches": 0.5},
                                      {"fast_dev_run": 2}])
def test_planned_batches_are_lightnings(settings, tmp_path, monkeypatch):
    """What the dcl command's checks count before a fit is what Lightning counts in it, and per process of a DDP
    world what each rank's loader yields (1797 digits padded to 899 a rank of 2)."""
    import lightning.pytorch as pl

    import dcl.datamodule
    from dcl.datamodules.digits import Digits
    from dcl.method import planned_batches

    counted = {}

    class Count(pl.Callback):
        def on_train_start(self, trainer, module):
            counted["batches"] = trainer.num_training_batches

    data = Digits(batch_size=64)
    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[Count()], default_root_dir=tmp_path, **settings)
    trainer.fit(registry.get_method("ae_kmeans")(n_clusters=10, input_shape=[64], hidden_dims=[8]), datamodule=data)
    assert planned_batches(pl.Trainer(logger=False, **settings), data) == counted["batches"]
    two = pl.Trainer(devices=2, accelerator="cpu", strategy="ddp", logger=False)
    for rank in (0, 1):
        monkeypatch.setattr(dcl.datamodule, "rank_world", lambda: (rank, 2))
        assert planned_batches(two, data) == len(data.train_dataloader()) == 15


def test_a_callback_refusing_the_trainer_does_so_before_anything_is_written(tmp_path, dcl_error):
    """Found by probing: AE-CM's averaging callback refused a fit without max_epochs in its setup, after the run's
    config.yaml (and a W&B run) had been written. The callback is the method's own, not the config's; a TensorBoard
    logger writes its events file before any callback's setup."""
    msg = dcl_error(["fit", "--config", str(REPO / "configs/cm/digits.yaml"), "--trainer.max_epochs", "-1",
                     "--trainer.max_steps", "30", "--trainer.logger", "lightning.pytorch.loggers.TensorBoardLogger",
                     "--trainer.logger.save_dir", str(tmp_path / "out")], tmp_path, quiet=False)
    assert "FinalEpochAveraging averages the last epochs of trainer.max_epochs" in msg
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


@pytest.mark.parametrize("command", ["validate", "test", "predict"])
def test_a_callbacks_training_checks_are_for_fit_only(tmp_path, command):
    """Found by probing as a user: dcl validate / test / predict --model CM --ckpt_path ... were refused without
    --trainer.max_epochs, which only the fit's final-epoch averaging needs."""
    run_cli(["fit", "--model", "CM", "--data", "Digits", "--trainer.max_epochs", "1",
             "--trainer.enable_checkpointing", "true"], tmp_path)
    run_cli([command, "--model", "CM", "--data", "Digits", "--ckpt_path", str(next(tmp_path.rglob("*.ckpt"))),
             *(["--predictions.output", "p.csv"] if command == "predict" else [])], tmp_path)


def test_checkpoint_file_missing(tmp_path, dcl_error):
    msg = dcl_error(["validate", *AE_DIGITS, "--ckpt_path", str(tmp_path / "none.ckpt")], tmp_path)
    assert "does not exist" in msg
    # Lightning's "last" (offered by --help) found none in the new run's folder, warned and predicted with an untrained
    # model, under dcl's warning "predict without --ckpt_path"
    for command in ("predict", "validate"):
        msg = dcl_error([command, *AE_DIGITS, "--ckpt_path", "last", "--predictions.output", "p.csv"], tmp_path)
        assert f"ckpt_path last means the last checkpoint of the run in progress, and a new dcl {command}" in msg
    assert not (tmp_path / "p.csv").exists()


def test_the_number_of_clusters_is_the_datas_or_the_checkpoints(tmp_path, capsys, dcl_error):
    """Found by probing as a user: a model n_clusters (or input_shape) was accepted and replaced by the data's
    without a word, and a data n_clusters other than a checkpoint's K was ignored without one."""
    for setting, hint in (("n_clusters", "set data.init_args.n_clusters instead"), ("input_shape", "remove it")):
        msg = dcl_error(["fit", *AE_DIGITS, f"--model.init_args.{setting}", "3" if setting == "n_clusters" else "[64]"],
                        tmp_path)
        assert f"model.init_args.{setting} is filled in from the data; {hint}" in msg
    fit_ae(tmp_path, "--trainer.enable_checkpointing", "true")
    ckpt = str(next(tmp_path.rglob("last.ckpt")))
    capsys.readouterr()
    run_cli(["test", *AE_DIGITS, "--ckpt_path", ckpt, "--data.init_args.n_clusters", "5"], tmp_path)
    captured = capsys.readouterr()
    assert "the checkpoint's 10 clusters are used, not data n_clusters 5" in captured.err
    run_cli(["test", *AE_DIGITS, "--ckpt_path", ckpt, "--data.init_args.n_clusters", "10"], tmp_path)
    assert "clusters are used" not in capsys.readouterr().err


def test_a_kwargs_subclass_lists_its_parents_settings(tmp_path, monkeypatch, dcl_error):
    """The README's ``MyDEC(DEC).__init__(self, *args, mix=0.5, **kwargs)``: a misspelt inherited setting was
    answered "MyDEC has no setting 'update_intervall'; its settings: mix"."""
    (tmp_path / "mykwargsmod.py").write_text(
        "from dcl.methods.dec import DEC\n\n\nclass MyDEC(DEC):\n"
        "    def __init__(self, *args, mix: float = 0.5, **kwargs):\n"
        "        super().__init__(*args, **kwargs)\n        self.mix = mix\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        msg = dcl_error(["fit", "--model", "mykwargsmod.MyDEC", "--data", "Digits",
                         "--model.init_args.update_intervall", "5"], tmp_path)
    finally:
        sys.modules.pop("mykwargsmod", None)
    assert "MyDEC has no setting 'update_intervall' (did you mean 'update_interval'?); its settings: mix, " \
           "latent_dim," in msg, msg


def test_an_optimizer_setting_without_the_optimizers_class_says_to_give_the_class_first(tmp_path, dcl_error):
    """Was "model.optimizer: Optimizer has no setting 'lr'; its settings: defaults": with no class given,
    jsonargparse tries the abstract base its type names."""
    msg = dcl_error(["fit", "--model", "DEC", "--data", "Digits", "--model.init_args.optimizer.lr", "0.1"], tmp_path)
    assert ("model.optimizer: the class of optimizer must be given before its settings, e.g. "
            "--model.init_args.optimizer torch.optim.Adam --model.init_args.optimizer.lr 0.1 (in a config: "
            "optimizer: {class_path: torch.optim.Adam, init_args: {lr: 0.1}})") in msg, msg
    msg = dcl_error(["fit", "--model", "DCFAE", "--data", "Digits", "--model.init_args.generator_scheduler.gamma",
                     "0.5"], tmp_path)
    assert "--model.init_args.generator_scheduler torch.optim.lr_scheduler.ExponentialLR " \
           "--model.init_args.generator_scheduler.gamma 0.5" in msg, msg


def test_a_class_whose_package_is_missing_is_one_line_naming_it(tmp_path, monkeypatch, dcl_error):
    """``--trainer.logger lightning.pytorch.loggers.TensorBoardLogger`` without tensorboard ended in a 92-line
    traceback ("Does not validate against any of the Union subtypes"), the missing package buried inside."""
    (tmp_path / "needsmissing.py").write_text(  # a missing import in the constructor, as TensorBoardLogger's
        "from lightning.pytorch.loggers import CSVLogger\n\n\nclass Logger(CSVLogger):\n"
        "    def __init__(self, save_dir: str = '.'):\n        import no_such_package_xyz  # noqa\n")
    (tmp_path / "importsmissing.py").write_text(  # a missing import in the class's module
        "import no_such_package_xyz  # noqa\nfrom lightning.pytorch.loggers import CSVLogger as Logger  # noqa\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        for module in ("needsmissing", "importsmissing"):
            msg = dcl_error(["fit", *AE_DIGITS, "--trainer.logger", f"{module}.Logger",
                             "--trainer.logger.save_dir", str(tmp_path / "logs")], tmp_path, quiet=False)
            assert msg.startswith(f"dcl: error: {module}.Logger needs a package that is not installed: No module "
                                  "named 'no_such_package_xyz' (pip install no_such_package_xyz)"), msg
    finally:
        sys.modules.pop("needsmissing", None), sys.modules.pop("importsmissing", None)
    import importlib.util
    if not (importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX")):
        msg = dcl_error(["fit", *AE_DIGITS, "--trainer.logger", "lightning.pytorch.loggers.TensorBoardLogger",
                         "--trainer.logger.save_dir", str(tmp_path / "tb")], tmp_path, quiet=False)
        assert "TensorBoardLogger needs a package that is not installed" in msg and "pip install" in msg, msg


def test_a_k_sized_buffer_missing_from_resizable_buffers_is_named_as_the_fault():
    """A method's buffer of K entries left out of ``resizable_buffers`` was reported with the advice to run with the
    saved config.yaml, which cannot help, and Lightning's ``_class_path`` listed as a setting it was trained with."""
    import torch

    from dcl.method import ConfigError, check_checkpoint_fits

    class Counting(registry.get_method("AEKMeans")):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.register_buffer("counts", torch.zeros(self.n_clusters))

    def build(k, latent_dim=2):
        module = Counting(n_clusters=k, input_shape=[4], hidden_dims=[8], latent_dim=latent_dim)
        module.hparams["_class_path"] = f"run{k}.Counting"
        return module

    trained = build(3)
    checkpoint = {"state_dict": trained.state_dict(), "hyper_parameters": dict(trained.hparams)}
    with pytest.raises(ConfigError) as info:
        check_checkpoint_fits(checkpoint, build(4))
    msg = str(info.value)
    assert "(counts is (3,) there but (4,) here): counts follows the number of clusters (3 there, 4 here) but is " \
           "not in Counting.resizable_buffers; add it there" in msg, msg
    assert "config.yaml" not in msg and "_class_path" not in msg
    with pytest.raises(ConfigError) as info:  # another network: the settings that differ, never an internal key
        check_checkpoint_fits(checkpoint, build(3, latent_dim=5))
    assert "it was trained with latent_dim: 2 (here 5)" in str(info.value) and "_class_path" not in str(info.value)


def test_model_help_describes_the_methods_arguments(capsys):
    """``dcl fit --model.help DEC`` showed no description: a line without a colon in DEC's ``Args:`` made
    docstring_parser drop the section (every method and datamodule: tests/test_registry.py)."""
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--model.help", "IDEC"])
    out = " ".join(capsys.readouterr().out.split())
    assert exit_info.value.code == 0
    assert "--model.gamma GAMMA weight of the clustering loss" in out  # IDEC's own
    assert "--model.alpha ALPHA degrees of freedom of the Student's t kernel" in out  # DEC's
    assert "--model.latent_dim LATENT_DIM size of the code z" in out  # AutoencoderMethod's


@pytest.mark.parametrize("flag, name, expected", [("--model.help", "idec", "--model.gamma GAMMA"),
                                                   ("--model.help=ae_kmeans", None, "--model.kmeans_n_init"),
                                                   ("--data.help", "arrays", "--data.path PATH")])
def test_help_of_a_class_takes_its_short_name(capsys, flag, name, expected):
    """Found by probing as a user: ``dcl fit --model dec`` trains DEC (case, "_" and "-" aside), but ``dcl fit
    --model.help dec`` answered "model.help: Expected a dot import path string: dec"."""
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", flag, *([name] if name else [])])
    assert exit_info.value.code == 0
    assert expected in capsys.readouterr().out


def test_a_run_without_a_logger_refuses_to_overwrite_its_own_config_file(tmp_path, dcl_error):
    """Found by probing as a user: dcl fit --config config.yaml --trainer.logger false, run in the config's folder
    (the run folder without a logger), replaced the user's config.yaml with the resolved dump."""
    mine = "# my settings\n" + (REPO / "configs/ae_kmeans/digits.yaml").read_text()
    (tmp_path / "config.yaml").write_text(mine)
    msg = dcl_error(["fit", "--config", "config.yaml", "--trainer.max_epochs", "1", *SMALL_AE], tmp_path)
    assert f"the run's config.yaml would overwrite {tmp_path / 'config.yaml'}, a config file of this command" in msg
    assert "--trainer.default_root_dir" in msg
    assert (tmp_path / "config.yaml").read_text() == mine and not (tmp_path / "final_scores.json").exists()
    (tmp_path / "run").mkdir()  # in a folder of its own, the run keeps its config beside its other files
    run_cli(["fit", "--config", str(tmp_path / "config.yaml"), "--trainer.max_epochs", "1", *SMALL_AE],
            tmp_path / "run")
    assert (tmp_path / "run" / "config.yaml").is_file() and (tmp_path / "config.yaml").read_text() == mine


def test_a_run_without_a_logger_refuses_a_folder_that_holds_another_run(tmp_path, dcl_error):
    """Found by an audit: two fits without a logger into one default_root_dir mixed their files: the first's
    final_scores.json beside the second's config.yaml until (or, if it failed, after) the second ended, and the first's
    last.ckpt under the name the docs give the run's model (the second's became last-v1.ckpt). A fit refuses such a
    folder; one that continues the run from its checkpoint goes on there."""
    args = ["fit", *AE_DIGITS, "--trainer.max_epochs", "1", "--trainer.logger", "false"]
    first = run_cli(args, tmp_path)
    saved = (tmp_path / "final_scores.json").read_text()
    msg = dcl_error(args, tmp_path)
    assert f"trainer.default_root_dir {tmp_path} holds another run (final_scores.json, checkpoints/" in msg
    assert "--trainer.default_root_dir" in msg and "--ckpt_path" in msg
    assert (tmp_path / "final_scores.json").read_text() == saved
    last = tmp_path / "checkpoints" / "last.ckpt"
    continued = run_cli([*args, "--trainer.max_epochs", "2", "--ckpt_path", str(last)], tmp_path)
    assert continued != first and not (tmp_path / "checkpoints" / "last-v1.ckpt").exists()


def test_settings_a_later_config_or_class_would_replace_are_refused(tmp_path, dcl_error):
    """Found by probing as a user: ``--trainer.max_epochs 1 --config c.yaml`` trained the config's 50 epochs at its
    batch size without a word (arguments apply in order), and ``--model.latent_dim 5 --model DEC`` said the model
    had no setting latent_dim (read against the base class before DEC was chosen)."""
    msg = dcl_error(["fit", "--trainer.max_epochs", "1", *AE_DIGITS], tmp_path)
    assert "--trainer.max_epochs comes before --config, and the config's values replace settings given before it: " \
           "put --config first" in msg
    msg = dcl_error(["fit", "--model.latent_dim", "5", "--model", "DEC", "--data", "Digits"], tmp_path)
    assert "--model.latent_dim comes before --model, which chooses the class it is a setting of: put --model " \
           "first" in msg
    msg = dcl_error(["fit", "--data.batch_size=64", "--model", "DEC", "--data=Digits"], tmp_path)
    assert "--data.batch_size comes before --data, which chooses" in msg
    # in order they work; --print_config may stand anywhere
    with pytest.raises(SystemExit) as printed:  # jsonargparse's print action ends the command with 0
        run_cli(["fit", "--print_config", *AE_DIGITS], tmp_path)
    assert printed.value.code == 0
    run_cli(["fit", "--model", "AEKMeans", "--model.latent_dim", "5", "--data", "Digits", "--trainer.fast_dev_run",
             "true"], tmp_path)
    # once a class is chosen (here by the config), jsonargparse carries its settings over to a later class
    run_cli(["fit", *AE_DIGITS, "--model", "DEC", "--model.init_args.pretrain_epochs", "1", "--trainer.fast_dev_run",
             "true"], tmp_path)


def test_a_monitor_that_names_no_dcl_metric_is_refused_before_training(tmp_path, dcl_error):
    """Found by probing: EarlyStopping(monitor="val_acc") failed with Lightning's traceback after the first
    validation (10 epochs in), and a ModelCheckpoint's after epoch 1, the run's files written."""
    for callback in ("EarlyStopping", "ModelCheckpoint"):
        msg = dcl_error(["fit", *AE_DIGITS, f"--trainer.callbacks+={callback}", "--trainer.callbacks.monitor",
                         "val_acc"], tmp_path)
        assert f"the {callback}'s monitor 'val_acc' is not a metric dcl logs: they are named <stage>/<name>" in msg
    # Lightning's own counters are metrics a checkpoint may monitor (the latest one kept)
    run_cli(["fit", *AE_DIGITS, "--trainer.callbacks+=ModelCheckpoint", "--trainer.callbacks.monitor", "step",
             "--trainer.callbacks.mode", "max", "--trainer.fast_dev_run", "true"], tmp_path)


def test_config_file_mistakes_are_named_with_the_file_and_the_fix(tmp_path, dcl_error):
    """Found by probing: a setting beside class_path said "model must be null, got {...}" (a callback's: "Callback
    has no setting 'class_path'; its settings: "), and a YAML error named "<unicode string>", not the file."""
    text = (REPO / "configs/ae_kmeans/digits.yaml").read_text()
    beside = tmp_path / "beside.yaml"
    beside.write_text(text.replace("  class_path: dcl.methods.ae_kmeans.AEKMeans\n",
                                   "  class_path: dcl.methods.ae_kmeans.AEKMeans\n  latent_dim: 5\n"))
    msg = dcl_error(["fit", "--config", str(beside)], tmp_path)
    assert f"{beside}: model.latent_dim sits beside model.class_path; settings of a class go under init_args: " \
           "model.init_args.latent_dim" in msg
    callback = tmp_path / "callback.yaml"
    callback.write_text("trainer:\n  callbacks:\n    - class_path: lightning.pytorch.callbacks.ModelCheckpoint\n"
                        "      save_last: true\n")
    msg = dcl_error(["fit", "--config", str(callback), "--model", "AEKMeans", "--data", "Digits"], tmp_path)
    assert "trainer.callbacks[0].save_last sits beside trainer.callbacks[0].class_path" in msg
    broken = tmp_path / "broken.yaml"
    broken.write_text("trainer:\n  max_epochs: 2\n   foo: [1\n")
    msg = dcl_error(["fit", f"--config={broken}"], tmp_path)
    assert f"{broken} is not valid YAML at line 3, column 7: mapping values are not allowed here" in msg
    # jsonargparse's dict_kwargs (a class's **kwargs) beside class_path is where it belongs
    kwargs = tmp_path / "kwargs.yaml"
    kwargs.write_text("trainer:\n  logger:\n    class_path: lightning.pytorch.loggers.TensorBoardLogger\n"
                      "    init_args:\n      save_dir: logs\n    dict_kwargs:\n      max_queue: 5\n")
    run_cli(["fit", *AE_DIGITS[:2], "--config", str(kwargs), *AE_DIGITS[2:], "--trainer.fast_dev_run", "true"],
            tmp_path, quiet=False)


@pytest.mark.parametrize("args, says", [
    (["--trainer.check_val_every_n_epoch", "0"], "trainer.check_val_every_n_epoch 0 must be >= 1"),
    (["--trainer.accumulate_grad_batches", "0"], "trainer.accumulate_grad_batches 0 must be >= 1"),
    (["--trainer.limit_train_batches", "0"], "trainer.limit_train_batches 0 trains nothing"),
    (["--trainer.gradient_clip_val", "-1"], "trainer.gradient_clip_val -1.0 must be > 0"),
    (["--trainer.devices", "-1"], "trainer: `devices` selected with `CPUAccelerator` should be an int > 0"),
    (["--seed_everything", "-1"], "seed_everything -1 is out of range: a seed is an integer from 0 to 4294967295"),
    (["--seed_everything", "4294967296"], "seed_everything 4294967296 is out of range"),
    (["--trainer.max_steps", "0"], "trainer.max_steps 0 trains nothing"),
    (["--trainer.precision", "bf16-true"], "precision 'bf16-true' is not supported"),  # the method's check: too late
])
def test_trainer_settings_lightning_fails_on_late_or_with_a_traceback_are_refused_first(args, says, tmp_path,
                                                                                          dcl_error):
    """Found by probing: the first two failed with a ZeroDivisionError once the loop ran (files written),
    limit_train_batches 0 reported the untrained model's scores, a negative clip was ignored, and devices -1 and
    a negative seed ended in tracebacks. With a logger: refused before it writes."""
    logged = ["--trainer.logger", "true", "--trainer.enable_progress_bar", "false"]
    assert says in dcl_error(["fit", *AE_DIGITS, *logged, *args], tmp_path, quiet=False)


def test_scoring_a_checkpoint_does_not_ask_for_the_checkpoint_callback_dcl_drops(tmp_path):
    """A user's pass: every validate / test / predict given --ckpt_path printed Lightning's "Be aware that when using
    ckpt_path, callbacks used to create the checkpoint need to be provided ... ModelCheckpoint{...}", though the config
    has it: dcl drops it there (those commands save no checkpoint)."""
    fit_ae(tmp_path, "--trainer.enable_checkpointing", "true", "--trainer.max_epochs", "1")
    ckpt = next(tmp_path.rglob("last.ckpt"))
    for command in ("validate", "test"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run_cli([command, *AE_DIGITS, "--trainer.enable_checkpointing", "true", "--ckpt_path", str(ckpt)],
                    tmp_path)
        assert not [w for w in caught if "Be aware that when using `ckpt_path`" in str(w.message)], command


FLOAT64_DATA = '''
import numpy as np

from dcl.datamodule import ClusteringDataModule


class Float64Blobs(ClusteringDataModule):
    """Blobs as sklearn's make_blobs gives them: float64."""

    def load(self):
        rng = np.random.default_rng(0)
        y = np.arange(60) % 3
        return np.eye(3, 4)[y] * 3 + rng.normal(size=(60, 4)) * 0.1, y
'''


def test_samples_a_datamodule_serves_in_float64_are_refused_before_training(tmp_path, monkeypatch, dcl_error):
    """Found by a plugin author's probe: a datamodule whose load() returned numpy's float64 (make_blobs, np.load)
    was accepted, and the first training step failed with "mat1 and mat2 must have the same dtype", a traceback,
    after the logger had written its run folder."""
    (tmp_path / "float64_data.py").write_text(FLOAT64_DATA)
    monkeypatch.syspath_prepend(str(tmp_path))
    msg = dcl_error(["fit", "--model", "AEKMeans", "--data", "float64_data.Float64Blobs", "--trainer.max_epochs", "1",
                     "--trainer.logger", "true", "--trainer.enable_progress_bar", "false"], tmp_path, quiet=False)
    assert "Float64Blobs: serves samples as torch.float64 (load() returns torch.float64)" in msg
    assert "return float32 samples from load()" in msg
    from float64_data import Float64Blobs

    dm = Float64Blobs(n_clusters=3)
    for _ in range(2):  # refused at every access (in Python), not served once the first refusal was caught
        with pytest.raises(DataError, match="serves samples as torch.float64"):
            dm.x


def test_a_method_swapped_after_a_config_names_the_settings_it_keeps(tmp_path, capsys):
    """Found by a researcher's probe: --model CM after DEC's config trained CM with DEC's SGD, kmeans_n_init and
    alpha (DEC's Student's t degrees of freedom, CM's Dirichlet prior) without a word (jsonargparse keeps the settings
    the new class also takes, as the README says)."""
    dec = ["--config", str(REPO / "configs/dec/digits.yaml"), "--trainer.fast_dev_run", "true", "--trainer.logger",
           "false"]
    run_cli(["fit", *dec, "--model", "CM"], tmp_path)
    err = capsys.readouterr().err
    assert ("dcl: warning: model CM replaces digits.yaml's DEC and keeps its settings that CM also takes: alpha 1.0, "
            "optimizer SGD, kmeans_n_init 20; set them for it, or start from its own config") in err, err
    run_cli(["fit", *dec, "--model.init_args.alpha", "2.0"], tmp_path)
    assert "replaces" not in capsys.readouterr().err  # the config's own method
