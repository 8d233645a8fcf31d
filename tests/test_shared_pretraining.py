"""benchmarks/shared_pretraining.py's ``--merge`` keeps every recorded seed, and refuses before any fit a merge that
would drop some or mix runs of an edited config; the DEC paper's recipe gives IDEC its paper's gamma on its pixels,
and at fewer epochs shrinks the SAE's greedy stages with them; ``--maxiter`` goes only to the methods that take it
(no training: its ``fit`` is replaced by one that returns fixed scores)."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))  # (the scripts import their neighbours)
import shared_pretraining  # noqa: E402


def setting(extra, key):  # the value a dcl fit takes: the last one given
    return [extra[i + 1] for i, a in enumerate(extra) if a == key][-1:]


@pytest.fixture
def bench(tmp_path, monkeypatch):
    """``shared_pretraining.main`` with its results under ``tmp_path`` and its fits recorded in a list."""
    shutil.copytree(REPO / "configs", tmp_path / "configs")  # (a test edits one)
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    monkeypatch.setattr(shared_pretraining, "ROOT", tmp_path)
    fits = []

    def fake_fit(config, run, seed, extra):
        run.mkdir(parents=True, exist_ok=True)
        (run / "last.ckpt").touch()
        fits.append((config, seed, extra))
        return {"acc": 80.0 + seed, "nmi": 70.0, "ari": 60.0, "wall_s": 1.0, "command": ""}

    monkeypatch.setattr(shared_pretraining, "fit", fake_fit)

    def main(*argv):
        monkeypatch.setattr(sys, "argv", ["shared_pretraining.py", "mnist", "--recipe", "dec-keras", *argv])
        shared_pretraining.main()
        tag = f"_{argv[argv.index('--tag') + 1]}" if "--tag" in argv else ""
        return json.loads((tmp_path / f"benchmarks/results/shared_pretraining_mnist_dec_keras{tag}.json").read_text())

    return main, fits


def test_merge_keeps_the_recorded_seeds_and_refuses_one_that_would_drop_some(bench):
    main, fits = bench
    assert main("--seeds", "0", "1")["seeds"] == [0, 1]  # DEC and IDEC, the default methods
    record = main("--seeds", "2", "--merge")
    assert record["seeds"] == [0, 1, 2] and [r["acc"] for r in record["runs"]["idec"]] == [80, 81, 82]
    # a variant beside IDEC for seed 0 only: merged, seeds 1 and 2 (no variant) and DEC would vanish from the record
    fits.clear()
    with pytest.raises(SystemExit, match="same --methods as the record, or write a record of its own with --tag"):
        main("--seeds", "0", "--methods", "idec", "idec:gamma=0.00384", "--merge")
    assert fits == []  # refused before any fit
    record = main("--seeds", "0", "--methods", "idec", "idec:gamma=0.00384", "--tag", "gamma")
    assert record["seeds"] == [0] and list(record["runs"]) == ["ae_kmeans", "idec", "idec:gamma=0.00384"]
    assert main("--seeds", "1", "--merge")["seeds"] == [0, 1, 2]  # the record is still whole


def test_merge_refuses_runs_of_an_edited_config(bench, tmp_path):
    main, fits = bench
    main("--seeds", "0", "--methods", "idec")
    config = tmp_path / "configs" / "idec" / "mnist.yaml"
    config.write_text(config.read_text().replace("    gamma: 0.00384\n", "    gamma: 0.5\n"))
    fits.clear()
    with pytest.raises(SystemExit, match=r"records idec at other settings .*'gamma': 0.00384.* there.*'gamma': 0.5"):
        main("--seeds", "1", "--methods", "idec", "--merge")
    assert fits == []
    record = json.loads((tmp_path / "benchmarks/results/shared_pretraining_mnist_dec_keras.json").read_text())
    del record["settings"]  # as a record made before the settings were kept
    (tmp_path / "benchmarks/results/shared_pretraining_mnist_dec_keras.json").write_text(json.dumps(record))
    with pytest.raises(SystemExit, match="without the settings of their configs"):
        main("--seeds", "1", "--methods", "idec", "--merge")
    assert fits == []


def test_the_dec_paper_recipe_runs_idec_at_its_papers_gamma_on_its_pixels(bench, tmp_path, monkeypatch):
    _, fits = bench
    monkeypatch.setattr(sys, "argv", ["shared_pretraining.py", "mnist", "--recipe", "dec-paper", "--seeds", "0",
                                      "--methods", "dec", "idec", "idec:gamma=0.00384"])
    shared_pretraining.main()

    (sae, _, sae_args), (_, _, dec), (_, _, idec), (_, _, variant) = fits
    assert sae == "configs/sae/mnist.yaml"
    # every fit on pixels x 0.02, as the authors' code; IDEC at gamma 0.1 there (the config's 0.00384 is that balance
    # on [0, 1] pixels), a variant at its own
    assert all(setting(a, "--data.init_args.scale") == ["5.1"] for a in (sae_args, dec, idec, variant))
    assert setting(dec, "--model.init_args.gamma") == [] and setting(idec, "--model.init_args.gamma") == ["0.1"]
    assert setting(variant, "--model.init_args.gamma") == ["0.00384"]
    record = json.loads((tmp_path / "benchmarks/results/shared_pretraining_mnist_dec_paper.json").read_text())
    assert record["settings"]["idec"]["args"] == ["--model.init_args.gamma", "0.1"]


def test_the_dec_paper_recipe_scales_the_greedy_stages_to_fewer_epochs(bench, monkeypatch):
    _, fits = bench

    def main(epochs):
        monkeypatch.setattr(sys, "argv", ["shared_pretraining.py", "digits", "--recipe", "dec-paper", "--seeds", "0",
                                          "--methods", "dec", "--pretrain-epochs", epochs])
        shared_pretraining.main()

    main("35")  # configs/sae/digits.yaml: 4 x 50 greedy epochs of 350; here 4 x 5 of 35, the rest fine-tuning
    (sae, _, sae_args), _ = fits
    assert sae == "configs/sae/digits.yaml" and setting(sae_args, "--model.init_args.layer_epochs") == ["5"]
    assert setting(sae_args, "--trainer.max_epochs") == ["35"]
    fits.clear()
    main("5")  # at least 1 epoch a layer pair, and one to fine-tune
    assert setting(fits[0][2], "--model.init_args.layer_epochs") == ["1"]
    fits.clear()
    with pytest.raises(SystemExit, match="too few for the dec-paper recipe.*at least 5 epochs"):
        main("4")  # it would end within the greedy stages: a start that DEC refuses, after the pretraining
    assert fits == []
    main("350")  # the config's own budget: its own layer_epochs
    assert setting(fits[0][2], "--model.init_args.layer_epochs") == []


def test_maxiter_goes_only_to_the_methods_that_take_it(bench, monkeypatch):
    _, fits = bench

    def main(*methods):
        monkeypatch.setattr(sys, "argv", ["shared_pretraining.py", "digits", "--seeds", "0", "--pretrain-epochs", "3",
                                          "--maxiter", "20", "--methods", *methods])
        shared_pretraining.main()

    main("dec", "aecm")
    _, (_, _, dec), (aecm, _, aecm_args) = fits
    assert setting(dec, "--model.init_args.maxiter") == ["20"]
    assert aecm == "configs/aecm/digits.yaml" and setting(aecm_args, "--model.init_args.maxiter") == []
    fits.clear()  # refused before any fit: a --maxiter that no method takes, a variant's unknown setting
    with pytest.raises(SystemExit):
        main("aecm")
    with pytest.raises(SystemExit):
        main("dec", "aecm:maxiter=20")
    assert fits == []
