"""Every shipped config parses against the method's and datamodule's signatures (a typo in a key or a value of the
wrong type fails here, not in a user's run), and sits in the folder of the method it configures."""

from __future__ import annotations

import math

import pytest
import yaml

from conftest import REPO
from dcl import registry
from dcl.cli import main

CONFIGS = sorted((REPO / "configs").glob("*/*.yaml"))


def test_every_method_has_configs():
    folders = {p.parent.name.replace("_", "") for p in CONFIGS}
    missing = {m for m in registry.available("method") if m.lower() not in folders}
    assert not missing, f"no configs/<method>/ folder for {sorted(missing)}"
    assert {"digits"} <= {p.stem for p in CONFIGS if p.parent.name == "dekm"}


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_config_parses(config, capsys):
    with pytest.raises(SystemExit) as done:  # --print_config validates every key and type, then exits
        main(["fit", "--config", str(config), "--print_config"])
    assert done.value.code in (0, None), capsys.readouterr().err
    printed = yaml.safe_load(capsys.readouterr().out)
    method = printed["model"]["class_path"].rsplit(".", 1)[-1].lower()
    assert config.parent.name.replace("_", "") == method, f"{config} configures {method}"
    data = printed["data"]["class_path"].rsplit(".", 1)[-1].lower()
    assert config.stem.replace("_", "") == data, f"{config} loads {data}"
    callbacks = [c["class_path"] for c in printed["trainer"]["callbacks"]]
    assert "dcl.callbacks.ClusteringPlots" in callbacks, f"{config}: the README says every config plots its result"


SAMPLES = {"digits": 1797, "usps": 9298, "mnist": 70000, "fashion_mnist": 70000, "coil20": 1440}


@pytest.mark.parametrize("config", [c for c in CONFIGS if "maxiter" in c.read_text()],
                         ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_max_epochs_leaves_room_for_maxiter(config):
    """A config that names a maxiter of clustering steps must let max_epochs reach it after the pretraining:
    DEC's and IDEC's COIL-20 configs once ended after 3246 of their 20000 steps."""
    c = yaml.safe_load(config.read_text())
    model, data = c["model"]["init_args"], c["data"]["init_args"]
    steps_per_epoch = math.ceil(SAMPLES[config.stem] / data.get("batch_size", 256))  # the last batch is kept
    needed = model.get("pretrain_epochs", 0) + math.ceil(model["maxiter"] / steps_per_epoch)
    assert c["trainer"]["max_epochs"] >= needed, f"{config}: max_epochs {c['trainer']['max_epochs']} < {needed}"


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_configs_log_within_an_epoch(config):
    """Lightning's log_every_n_steps of 50 exceeds an epoch of Digits (8 batches of 256), of USPS at batch 256 (37)
    and of COIL-20 (6 to 32): every such run warned, and its step losses were logged every 1.4 to 8 epochs."""
    c = yaml.safe_load(config.read_text())
    batches = math.ceil(SAMPLES[config.stem] / c["data"]["init_args"].get("batch_size", 256))
    assert c["trainer"].get("log_every_n_steps", 50) <= batches
