"""The ``dcl`` command: LightningCLI in subclass mode over every registered method and datamodule.

    dcl fit --config configs/ae_kmeans/digits.yaml
    dcl fit --model DEC --data USPS --data.data_dir ../shared/data
    dcl predict --config CONFIG --ckpt_path RUN.ckpt --predictions.output clusters.csv
    dcl list
    dcl results outputs                  # the finished runs under outputs/: mean ± sample std over their seeds
"""

from __future__ import annotations

import ctypes
import difflib
import importlib
import inspect
import json
import logging
import os
import re
import sys
import warnings
from contextlib import contextmanager, nullcontext
from importlib.metadata import version
from pathlib import Path
from typing import Any, Union

import lightning.pytorch as pl
import torch
from jsonargparse import ArgumentError
from lightning.pytorch.callbacks import BasePredictionWriter, ModelCheckpoint
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.core.saving import save_hparams_to_yaml
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from packaging.version import Version

import dcl
from dcl import registry, results
from dcl.callbacks.prediction_writer import PredictionWriter
from dcl.datamodule import ClusteringDataModule, DataError, check_resume_position
from dcl.distributed import end_script_process_group
from dcl.files import atomic_write, not_a_file, run_dir, unwritable_folder
from dcl.method import (N_CLUSTERS_REFUSED, ClusteringMethod, ConfigError, TrainingDiverged, check_checkpoint_fits,
                        check_checkpoint_method, check_precision, check_scoring_batches, check_trainer_settings,
                        load_checkpoint_file, log_metrics_now, logging_step, one_cluster_warning, planned_batches,
                        weights_from_checkpoint)

# MisconfigurationException: Lightning's word for a Trainer setting that cannot work (an accelerator this machine
# lacks, enable_checkpointing false beside a ModelCheckpoint, ...)
USER_ERRORS = (ConfigError, DataError, registry.RegistryError, MisconfigurationException, TrainingDiverged,
               results.ResultsError)

# every setting saved, None ones too, to rebuild the run: jsonargparse 4.49 renamed skip_none (deprecated since, with
# a warning) to skip_unset
KEEP_NONE = {"skip_unset" if Version(version("jsonargparse")) >= Version("4.49") else "skip_none": False}


DESCRIPTION = ("dcl: deep clustering on PyTorch Lightning. Train (fit), score (validate, test) or apply (predict) "
               "a clustering method on a data set, e.g. dcl fit --config configs/dec/digits.yaml; dcl list names the "
               "registered methods and datamodules; dcl results DIR tabulates the finished runs under DIR (mean ± "
               "sample std over their seeds).")


class DCLCLI(LightningCLI):
    """LightningCLI with n_clusters and input_shape flowing from the datamodule into the method."""

    #: the ``ckpt_path`` file's contents, read by ``_parse_ckpt_path``, until ``instantiate_classes`` checks them
    _checkpoint: dict | None = None

    def add_default_arguments_to_parser(self, parser) -> None:
        """``--seed_everything`` as LightningCLI's, with a help that says what ``true`` does (Lightning's says "a
        random seed", which it has not drawn since 2.2: an externally launched process would draw its own)."""
        parser.add_argument(
            "--seed_everything", type=Union[bool, int], default=self.seed_everything_default,
            help="Seed of the random number generators (the weights, the training shuffle, the k-means and the "
                 "method's other draws), set before the classes are built and saved in the run's config.yaml and "
                 "loggers. true: seed 0, or the environment's PL_GLOBAL_SEED (Lightning draws no random seed); "
                 "false: none. data.init_args.seed, when set, seeds the training shuffle instead.")

    def add_arguments_to_parser(self, parser) -> None:
        # None from unlabeled data without data.n_clusters: a method that finds K itself (DP-GMM) needs none
        parser.link_arguments("data.n_clusters_if_known", "model.init_args.n_clusters", apply_on="instantiate")
        parser.link_arguments("data.input_shape", "model.init_args.input_shape", apply_on="instantiate")
        parser.add_lightning_class_args(PredictionWriter, "predictions")

    def _parse_ckpt_path(self) -> None:
        """Refuse a missing, truncated or foreign checkpoint before Lightning reads its hyperparameters (which
        would silently swap the configured method for the checkpoint's)."""
        subcommand = self.config.get("subcommand")
        if subcommand:
            _name_settings_kept_across_a_method_swap(self.config[subcommand])
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        model_args = self.config[subcommand].model.get("init_args") if subcommand else None
        for name in ClusteringMethod.data_settings:  # the link from the data would replace it without a word
            if model_args is not None and model_args.get(name) not in (None, (), []):  # (or a class's empty default)
                hint = ("set data.init_args.n_clusters instead" if name == "n_clusters" else "remove it")
                raise ConfigError(f"model.init_args.{name} is filled in from the data; {hint}")
        if subcommand != "fit" and ckpt_path in ("last", "best"):  # Lightning would warn and go on untrained
            raise ConfigError(f"ckpt_path {ckpt_path} means the {ckpt_path} checkpoint of the run in progress, and a "
                              f"new dcl {subcommand} has none; give the checkpoint file, e.g. <run folder>/"
                              "checkpoints/last.ckpt")
        if ckpt_path and ckpt_path not in ("last", "best", "hpc", "registry"):
            problem = not_a_file(ckpt_path)
            if problem:
                raise ConfigError(f"checkpoint {ckpt_path} {problem}")
            checkpoint = load_checkpoint_file(ckpt_path)
            check_checkpoint_method(checkpoint, _import(self.config[subcommand].model.class_path))
            self._checkpoint = checkpoint  # (for instantiate_classes' checks against the model and data)
            data_args = self.config[subcommand].data.get("init_args")
            trained_k = checkpoint.get("hyper_parameters", {}).get("n_clusters")
            given_k = data_args.get("n_clusters") if data_args is not None else None
            if trained_k and given_k is not None and given_k != trained_k:
                print(f"dcl: warning: the checkpoint's {trained_k} clusters are used, not data n_clusters {given_k} "
                      "(another number of clusters needs a new fit)", file=sys.stderr)
            if subcommand != "fit" and trained_k and data_args is not None and "n_clusters" in data_args \
                    and given_k is None:  # the trained model's clusters, whatever the data's labels
                data_args.n_clusters = int(trained_k)
        elif subcommand and subcommand != "fit":
            print(f"dcl: warning: {subcommand} without --ckpt_path uses an untrained model", file=sys.stderr)
        configured_model = self.config[subcommand].model.clone() if subcommand else None
        configured = _plain(configured_model.get("init_args")) if subcommand else {}
        super()._parse_ckpt_path()  # the checkpoint's hyperparameters replace the configured model's
        if subcommand and ckpt_path:
            model = self.config[subcommand].model
            if model.class_path != configured_model.class_path:
                # Lightning also swapped the class for the checkpoint's: keep the one asked for (a subclass of the
                # checkpoint's method, which check_checkpoint_method allows), with the checkpoint's settings
                trained_args = model.get("init_args")
                model.class_path, model.init_args = configured_model.class_path, configured_model.init_args
                for key in _plain(trained_args) or {}:
                    if key in model.init_args:
                        model.init_args[key] = getattr(trained_args, key)
            trained = _plain(self.config[subcommand].model.get("init_args"))
            replaced = [f"{k} {trained[k]!r} (configured {v!r})" for k, v in (configured or {}).items()
                        if k not in ClusteringMethod.data_settings and k in (trained or {}) and trained[k] != v]
            if replaced:
                print(f"dcl: warning: the checkpoint's model settings are used: {'; '.join(replaced)}",
                      file=sys.stderr)

    def _set_seed(self) -> None:
        seed = self._get(self.config, "seed_everything")
        if not isinstance(seed, bool) and isinstance(seed, int) and not 0 <= seed < 2**32:
            raise ConfigError(f"seed_everything {seed} is out of range: a seed is an integer from 0 to {2**32 - 1} "
                              "(or true: Lightning's, or false: none)")  # numpy's bounds, a traceback before
        super()._set_seed()

    def instantiate_classes(self) -> None:
        """A ValueError from a constructor (a method, datamodule, callback or network refusing a setting) is
        bad input: one line naming it, before anything is trained or written."""
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        try:  # a checkpoint file to restore holds all the weights: no pretrained file is needed
            with weights_from_checkpoint() if ckpt_path and Path(ckpt_path).is_file() else nullcontext():
                super().instantiate_classes()
        except Exception as err:
            cause = _constructor_error(err)
            user = _user_error(err)
            data = self.config[subcommand].data
            if isinstance(user, ConfigError) and str(user) == f"{N_CLUSTERS_REFUSED}None":
                raise ConfigError("the data has no labels, so the number of clusters cannot be inferred from it: set "
                                  "data.n_clusters to the number of clusters to find") from err
            if isinstance(user, ConfigError) and str(user).startswith(N_CLUSTERS_REFUSED) \
                    and (data.get("init_args") or {}).get("n_clusters") is None:
                # the method refused the data's number of classes (its labels, or ImageFolder's class folders
                # name one), a setting the command did not give
                folders = (" (ImageFolder takes each subfolder of root for a class: put unlabeled images directly in "
                           "root)" if data.class_path.endswith(".ImageFolder") else "")
                raise ConfigError(f"{user}, the number of classes of the data (data.n_clusters is not set): set "
                                  f"data.n_clusters to the number of clusters to find{folders}") from err
            twin = _first_in_chain(err, lambda e: "Found more than one stateful callback" in str(e))
            if twin is not None:  # Lightning's RuntimeError from the Trainer's constructor, with a traceback
                kind = re.search(r"of type `(\w+)`", str(twin))
                kind = kind.group(1) if kind else "callback"
                raise ConfigError(f"trainer.callbacks holds two {kind}s with the same settings, whose states a "
                                  f"checkpoint cannot tell apart (a config may have one already): set that one's "
                                  f"init_args instead of adding another, or give the second other settings (a "
                                  f"ModelCheckpoint: its own monitor or every_n_epochs)") from err
            trainer = _first_in_chain(err, lambda e: _raised_through(e, "accelerator_connector.py"))
            if user is None and trainer is not None:  # the Trainer's devices / accelerator: Lightning raises a
                # TypeError or ModuleNotFoundError there (devices -1 on a CPU, accelerator tpu), not its own type
                raise ConfigError(f"trainer: {str(trainer).splitlines()[0]}") from err
            if user is not None or cause is None:
                raise
            raise ConfigError(str(cause)) from err
        check_precision(self.trainer.precision)
        if subcommand == "fit":  # training's settings: validate, test and predict neither step nor average
            check_trainer_settings(self.model, self.trainer)
        writer = next((c for c in self.trainer.callbacks if isinstance(c, PredictionWriter)), None)
        if subcommand != "predict" and writer is not None and (writer.output or writer.embeddings):
            print(f"dcl: warning: --predictions.* are written by dcl predict only; dcl {subcommand} writes none "
                  "(predict with the run's checkpoint: dcl predict --config ... --ckpt_path ...)", file=sys.stderr)
        folders = [("trainer.default_root_dir", self.trainer.default_root_dir)] + [
            (f"the {type(logger).__name__}'s save_dir", logger.save_dir) for logger in self.trainer.loggers
            if getattr(logger, "save_dir", None)] + [  # (ModelCheckpoint's, ClusteringPlots')
            (f"the {type(callback).__name__}'s dirpath", callback.dirpath) for callback in self.trainer.callbacks
            if isinstance(getattr(callback, "dirpath", None), (str, Path))]
        # (predict writes only its outputs, checked by PredictionWriter: no logger, checkpoint or plot)
        for setting, folder in folders if subcommand != "predict" else ():
            why = unwritable_folder(folder)
            if why:
                raise ConfigError(f"{setting} {str(folder)!r} cannot hold the run's files: {why}")
        checkpoint, self._checkpoint = self._checkpoint, None
        if checkpoint is not None and isinstance(self.model, ClusteringMethod):
            # what Lightning's restore of the checkpoint refuses (another shape of samples, standardized ones), here:
            # by then Lightning has started the loggers, which write their files
            state = checkpoint.get(type(self.datamodule).__qualname__)
            if state is not None and isinstance(self.datamodule, ClusteringDataModule):
                self.datamodule.load_state_dict(state)  # first: a CSV's columns named otherwise are refused by name
            check_checkpoint_fits(checkpoint, self.model)
            fit_loop = checkpoint.get("loops", {}).get("fit_loop", {})
            done = fit_loop.get("epoch_progress", {}).get("current", {}).get("completed", 0)
            limit = self.trainer.max_epochs
            if subcommand == "fit" and limit not in (None, -1) and done > limit:  # Lightning's refusal, after loggers
                raise ConfigError(f"this checkpoint goes on from epoch {done} (counted from 0), past "
                                  f"trainer.max_epochs {limit}: to train on, set max_epochs above {done}; to score "
                                  "it, dcl validate or dcl test with this --ckpt_path")
            if subcommand == "fit" and isinstance(self.datamodule, ClusteringDataModule):  # the training loader's
                loaders = fit_loop.get("state_dict", {}).get("combined_loader") or []  # position in its epoch
                for loader in loaders:
                    if isinstance(loader, dict) and "batches" in loader:
                        check_resume_position(loader, self.trainer.world_size, self.datamodule.batch_size,
                                              len(self.datamodule.x))

    def before_fit(self) -> None:
        if self.trainer.max_epochs == 0 or self.trainer.max_steps == 0:
            setting = "max_epochs" if self.trainer.max_epochs == 0 else "max_steps"
            raise ConfigError(f"trainer.{setting} 0 trains nothing; set it to the length of the fit (-1: no limit)")
        run_config = next((c for c in self.trainer.callbacks if isinstance(c, RunConfig)), None)  # (a trial run: none)
        if run_config is not None and not self.trainer.loggers:
            # without a logger the run folder is default_root_dir, the current folder unless set: the run's
            # config.yaml would replace a config file of the user's there with the resolved dump
            saved = (Path(self.trainer.default_root_dir) / run_config.config_filename).resolve()
            if saved in _config_files(self.config[self.subcommand]):
                raise ConfigError(f"the run's {saved.name} would overwrite {saved}, a config file of this command: "
                                  "without a logger the run's files go to trainer.default_root_dir (the current "
                                  "folder unless set); give the run a folder of its own with "
                                  "--trainer.default_root_dir, or a logger")
            root = self.trainer.default_root_dir
            held = earlier_run_files(Path(root), self.config[self.subcommand].get("ckpt_path"))
            if held:
                raise ConfigError(f"trainer.default_root_dir {root} holds another run ({', '.join(held)}): without a "
                                  "logger a run's files go there, and this fit's would mix with that run's (its "
                                  "scores beside this fit's config.yaml, its last.ckpt beside this fit's "
                                  "last-v1.ckpt); give this fit a folder of its own with --trainer.default_root_dir, "
                                  "or continue that run with --ckpt_path set to one of its checkpoints")
        if isinstance(self.datamodule, ClusteringDataModule):
            # (their setup checks them again: by then Lightning has started the loggers, which write their files)
            self.datamodule.check_n_clusters(fitting=True)
            if isinstance(self.model, ClusteringMethod):
                self.model.check_data(self.datamodule, "fit")
                self.model.check_fit(self.trainer, self.datamodule)
            check_scoring_batches(self.trainer, self.datamodule, "val")
        from_ = type(self.model).n_clusters_from
        given = getattr(self.datamodule, "n_clusters_given", None)
        if from_ and given is not None:
            print(f"dcl: warning: {type(self.model).__name__} finds the number of clusters itself, so "
                  f"data n_clusters {given} is not used; its {' and '.join(from_)} set where K starts and "
                  "its maximum", file=sys.stderr)
        for logger in self.trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                # no hparams summary until FinalScores writes the run's, with its final scores as the metrics:
                # TensorBoard's HParams view reads a run's first summary only, which was Lightning's of the method's
                # hyperparameters alone with hp_metric -1 (logged when a TensorBoardLogger's log_hyperparams is given
                # no metrics); hparams.yaml still gets every hyperparameter logged
                logger._default_hp_metric = False
        self.trainer.callbacks.append(FinalScores())
        if self.trainer.fast_dev_run:  # a trial run writes nothing: Lightning's ModelCheckpoint still saved last.ckpt
            self.trainer.callbacks = [c for c in self.trainer.callbacks if not isinstance(c, ModelCheckpoint)]

    def _drop_checkpointing(self) -> None:
        """validate, test and predict save no checkpoint: a ModelCheckpoint (a fit's config's, or Lightning's default)
        only restored its state from the checkpoint given, with a warning that its folder had changed."""
        self.trainer.callbacks = [c for c in self.trainer.callbacks if not isinstance(c, ModelCheckpoint)]
        # Lightning then asks for the dropped ModelCheckpoints back on every command given --ckpt_path (a user's pass:
        # noise the user cannot act on); a warning that names other callbacks still shows (within command_output's
        # catch_warnings, so only for this command)
        checkpoint = r'"ModelCheckpoint\{[^\]]*\}"'
        warnings.filterwarnings("ignore", r"(?s)Be aware that when using `ckpt_path`.*Please add the following "
                                          rf"callbacks: \[{checkpoint}(, {checkpoint})*\]")

    def before_validate(self) -> None:
        self._drop_checkpointing()
        if isinstance(self.datamodule, ClusteringDataModule):
            check_scoring_batches(self.trainer, self.datamodule, "val")

    def before_test(self) -> None:
        self._drop_checkpointing()
        if isinstance(self.datamodule, ClusteringDataModule):
            check_scoring_batches(self.trainer, self.datamodule, "test")

    def before_predict(self) -> None:
        self._drop_checkpointing()
        self.trainer.loggers = []  # predict logs nothing: a logger only left an empty run (a W&B one, a version_N)
        if self.config_init[self.subcommand].get("return_predictions") is None:
            # the command writes the predictions through PredictionWriter and drops what trainer.predict returns:
            # Lightning's default (True in one process) kept every batch's outputs, the N x K probs included
            self.config_init[self.subcommand]["return_predictions"] = False
        writer = next(c for c in self.trainer.callbacks if isinstance(c, PredictionWriter))
        bar = self.trainer.progress_bar_callback
        if writer.writes_stdout and bar is not None:  # an output is stdout: the bar's lines (written
            bar.disable()  # there by Lightning's TQDM bar) would come before the data
        others = [c for c in self.trainer.callbacks if isinstance(c, BasePredictionWriter) and c is not writer]
        if not (writer.output or writer.embeddings or others):
            # refused, not warned of after the whole pass over the data (a user's pass)
            raise ConfigError("predict writes nothing without --predictions.output (a CSV of the clusters, e.g. "
                              "clusters.csv) or --predictions.embeddings (e.g. z.npy): set one or both")
        if self.trainer.fast_dev_run:  # a trial of one batch, which writes no file (as fit's)
            print("dcl: fast_dev_run: a trial of one batch; the predictions are not written", file=sys.stderr)
            writer.output = writer.embeddings = None
        elif isinstance(self.datamodule, ClusteringDataModule):
            if (planned_batches(self.trainer, self.datamodule, "predict")
                    < planned_batches(self.trainer, self.datamodule, "predict", limited=False)):
                raise ConfigError(f"trainer.limit_predict_batches {self.trainer.limit_predict_batches} would predict "
                                  "part of the samples, and the predictions' files hold one row per sample: remove it "
                                  "(a trial: --trainer.fast_dev_run true)")
        config = self.config[self.subcommand]
        data_args = _plain(config.data.get("init_args")) or {}
        inputs = {"the checkpoint": config.get("ckpt_path")} | {
            f"the data's {k}": v for k, v in data_args.items() if isinstance(v, str)}
        inputs = {Path(v).expanduser().resolve(): what for what, v in inputs.items()
                  if v and Path(v).expanduser().is_file()}
        inputs |= {path: "a config file" for path in _config_files(config)}
        for setting, path in (("output", writer.output), ("embeddings", writer.embeddings)):
            if path and Path(path).resolve() in inputs:  # the predictions would replace it
                raise ConfigError(f"predictions.{setting} {path!r} would overwrite {inputs[Path(path).resolve()]}, "
                                  "an input of this command; name a new file")


class FinalScores(pl.Callback):
    """At the end of ``dcl fit``: the final clustering of all samples printed, written to ``final_scores.json`` in
    the run folder and logged. In the training processes, on every rank (embedding all samples is a collective
    under DDP), so also under ddp_spawn, whose workers the command's own process never joins."""

    #: the method embeds all samples once when its fit ends, on its device (ClusteringMethod.final_embedding)
    reads_final_embedding = True

    def on_fit_end(self, trainer: pl.Trainer, pl_module: ClusteringMethod) -> None:
        scores = pl_module.final_scores()
        if trainer.is_global_zero:
            text = " ".join(f"{k.upper()}={v:.4f}" if isinstance(v, float) else f"{k.upper()}={v}"
                            for k, v in scores.items())
            print(f"dcl: final clustering of {trainer.datamodule.num_samples} samples: {text}")
            y = trainer.datamodule.y
            classes = len(torch.unique(y[y >= 0]))
            warning = one_cluster_warning(scores.get("k_used", 0), scores.get("k", 1), classes)  # (DP-GMM: K maybe 1)
            if warning:
                print(f"dcl: warning: {warning}", file=sys.stderr)
            # beside the run's checkpoints and plots (a W&B run's trainer.log_dir is the folder all runs share)
            if not trainer.fast_dev_run:  # a trial run writes nothing
                payload = json.dumps(scores, indent=2)
                path = run_dir(trainer) / "final_scores.json"
                atomic_write(path, lambda tmp: Path(tmp).write_text(payload))
                # which folder is this command's: a W&B run id or a logger's version_N names it
                print(f"dcl: final scores written to {path} (the run folder, beside its config.yaml)")
        # at the step of Lightning's own rows (global_step counts DCFAE's two optimizer steps a batch)
        metrics = {f"final/{k}": v for k, v in scores.items()}
        tensorboards = [logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]
        log_metrics_now(trainer, metrics, [logger for logger in trainer.loggers if logger not in tensorboards])
        for logger in tensorboards if trainer.is_global_zero else ():
            # the run's hparams with the final scores as its metrics: TensorBoard's HParams view shows a run's first
            # hparams summary only (DCLCLI.before_fit kept Lightning's, with a bogus hp_metric of -1, from being
            # written at the fit's start); this logs the scores as the final/* scalars too, which it then reads
            step = logging_step(trainer)
            logger.log_hyperparams(logger.hparams, metrics=metrics, step=step)
            logger.log_metrics({"epoch": trainer.current_epoch}, step=step)  # (as log_metrics_now's rows)


class RunConfig(SaveConfigCallback):
    """The run's resolved configuration saved as ``config.yaml`` in the run folder, beside its ``checkpoints/``,
    ``plots/`` and ``final_scores.json`` (LightningCLI's own choice, ``trainer.log_dir``, is the folder all runs of
    a W&B logger share, each run overwriting the last's): ``dcl predict --config <run folder>/config.yaml`` then
    rebuilds exactly that run. Saved by ``fit`` only: validate, test and predict runs train nothing to keep beside
    it (each left a folder holding only its config). Saved when training starts, not at setup as Lightning's: a fit
    refused while it restores its checkpoint (a resume with another batch size) leaves no file; a fit with nothing
    left to train (resumed from its end) saves it beside its final scores."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """(Lightning's saves here; see on_train_start.)"""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save(trainer, pl_module)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save(trainer, pl_module)

    _config_logged = False

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log_scoring_config(trainer, pl_module)

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log_scoring_config(trainer, pl_module)

    def _log_scoring_config(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """``dcl validate`` and ``dcl test`` save no config.yaml (they train nothing to keep beside it), but their
        loggers get the configuration and the checkpoint scored, as a fit's do: their W&B run bears the fit's name,
        and held the method's hyperparameters only, not which checkpoint, data or seed it scored."""
        if trainer.state.fn in ("validate", "test") and not trainer.fast_dev_run and not self._config_logged:
            self.save_config(trainer, pl_module, trainer.state.fn.value)
            self._config_logged = True

    def _save(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.already_saved or trainer.fast_dev_run:
            return
        if trainer.is_global_zero:  # a W&B logger's run id, which names the folder, exists on rank 0 only
            path = run_dir(trainer) / self.config_filename
            # the run's settings: the checkpoint a fit resumed from is not the run's own, which a dcl predict of
            # this config would otherwise silently load
            config = self.config.clone()
            config.ckpt_path = None
            atomic_write(path, lambda tmp: self.parser.save(config, tmp, **KEEP_NONE, overwrite=True,
                                                            multifile=self.multifile))
            self.save_config(trainer, pl_module, "fit")
            self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)

    def save_config(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Every logger of the run gets the whole resolved configuration as hyperparameters, to filter runs by a
        data set or a learning rate: the method's own hyperparameters leave out its optimizers, the data, the
        seed and the Trainer. And the checkpoint a resumed fit started from (``ckpt_path``, null for a fresh
        one), which the run's config.yaml leaves out: a resumed fit is a run of its own (a new W&B run and run
        folder), and this names the run it continues; for validate and test, the checkpoint they score."""
        config = json.loads(self.parser.dump(self.config, format="json", **KEEP_NONE))
        for logger in trainer.loggers:
            logger.log_hyperparams({key: config.get(key)
                                    for key in ("seed_everything", "trainer", "model", "data", "ckpt_path")})
            if isinstance(logger, TensorBoardLogger) and trainer.is_global_zero:
                # its save() writes hparams.yaml once, when the file is missing: at Lightning's logging of the
                # method's hyperparameters, before this
                path = Path(logger.log_dir) / logger.NAME_HPARAMS_FILE
                atomic_write(path, lambda tmp: save_hparams_to_yaml(tmp, logger.hparams))


def _name_settings_kept_across_a_method_swap(config) -> None:
    """A ``--model`` after a config of another method keeps the config's settings that the new class also takes
    (jsonargparse's rule): say which, since a name may mean another thing there (DEC's alpha, the Student's t
    degrees of freedom, is CM's Dirichlet prior)."""
    import yaml

    model = config.get("model")
    args = _plain(model.get("init_args")) if getattr(model, "class_path", None) else None
    if not args:
        return
    chosen = model.class_path.rpartition(".")[2]
    for path in config.get("config") or []:
        try:
            configured = (yaml.safe_load(Path(str(path)).read_text()) or {}).get("model")
        except (OSError, yaml.YAMLError, AttributeError):
            continue
        if not isinstance(configured, dict) or not isinstance(configured.get("init_args"), dict):
            continue
        first = str(configured.get("class_path", "")).rpartition(".")[2]
        if not first or first == chosen:
            continue
        kept = [f"{k} {_short(v)}" for k, v in configured["init_args"].items() if k in args and _same(args[k], v)]
        if kept:
            print(f"dcl: warning: model {chosen} replaces {Path(str(path)).name}'s {first} and keeps its settings "
                  f"that {chosen} also takes: {', '.join(kept)}; set them for it, or start from its own config",
                  file=sys.stderr)


def _same(parsed, written) -> bool:
    """A parsed setting is the one written in a config (a class: its path, and the arguments written for it)."""
    if isinstance(written, dict) and isinstance(parsed, dict) and "class_path" in written:
        given = parsed.get("init_args") or {}
        return (str(parsed.get("class_path", "")).rpartition(".")[2] == str(written["class_path"]).rpartition(".")[2]
                and all(_same(given.get(k), v) for k, v in (written.get("init_args") or {}).items()))
    return parsed == written or (isinstance(parsed, (list, tuple)) and list(parsed) == written)


def _short(value) -> str:
    if isinstance(value, dict) and "class_path" in value:
        return str(value["class_path"]).rpartition(".")[2]
    return json.dumps(value) if not isinstance(value, str) else value


def earlier_run_files(folder: Path, ckpt_path) -> list[str]:
    """What of another fit's run ``folder`` holds (its ``final_scores.json``, checkpoints), unless this fit continues
    it from one of its checkpoints (found by an audit: two fits into one folder left one's scores beside the
    other's config.yaml, and the first's last.ckpt under the name the docs give the run's model)."""
    folder = folder.expanduser().resolve()
    if ckpt_path and folder in Path(str(ckpt_path)).expanduser().resolve().parents:
        return []
    held = ["final_scores.json"] if (folder / "final_scores.json").is_file() else []
    checkpoints = sorted((folder / "checkpoints").glob("*.ckpt")) if (folder / "checkpoints").is_dir() else []
    return held + ([f"checkpoints/{checkpoints[0].name}" + (f" and {len(checkpoints) - 1} more" if
                                                             len(checkpoints) > 1 else "")] if checkpoints else [])


def _config_files(config) -> set[Path]:
    """The config files a command was given (--config), resolved."""
    return {Path(str(c)).resolve() for c in config.get("config") or []}


def _plain(value):
    """A parsed config value as plain dicts and lists (jsonargparse Namespaces compared by content)."""
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def _set_wandb_mode() -> None:
    """W&B runs offline when no credentials are configured (sync later with ``wandb sync``)."""
    if os.environ.get("WANDB_MODE") or os.environ.get("WANDB_API_KEY"):
        return
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    if netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore"):
        return
    os.environ["WANDB_MODE"] = "offline"


def _resolve_short_names(argv: list[str]) -> list[str]:
    """``--model dec`` / ``--data=usps`` / ``--model.help dec``: registry names (case, "_" and "-" aside) to import
    paths."""
    out = list(argv)
    for i, arg in enumerate(out):
        for flag, kind in (("--model", "method"), ("--data", "datamodule"), ("--model.help", "method"),
                           ("--data.help", "datamodule")):
            if arg == flag and i + 1 < len(out):
                j, value = i + 1, out[i + 1]
            elif arg.startswith(flag + "="):
                j, value = i, arg.split("=", 1)[1]
            else:
                continue
            if value.startswith("{") or "." in value or value.endswith((".yaml", ".yml", ".json")):
                continue  # an import path, a JSON value or a config file
            cls = registry.get(kind, value)
            path = f"{cls.__module__}.{cls.__qualname__}"
            out[j] = path if j != i else f"{flag}={path}"
    return out


def _check_config_file(path: str) -> Any:
    """One line for two mistakes in a config file that jsonargparse names obscurely (found by probing): a YAML
    error ("in <unicode string>", no file named), and a setting beside ``class_path`` instead of under ``init_args``
    ("model must be null", "Callback has no setting 'class_path'"). Returns the file's parsed YAML (None when there is
    no such file)."""
    import yaml

    file = Path(path).expanduser()
    if not file.is_file():
        return None  # jsonargparse's own error names a missing file
    try:
        config = yaml.safe_load(file.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{path} is not valid YAML{where}: {getattr(err, 'problem', None) or err}") from None

    def walk(node, key: str) -> None:
        if isinstance(node, dict):
            if "class_path" in node:
                beside = [k for k in node if k not in ("class_path", "init_args", "dict_kwargs")]
                typo = _entry_key_typo(str(beside[0]), ("init_args",)) if beside else None
                if typo:
                    raise ConfigError(f"{path}: {key}.{beside[0]}: {typo}")
                if beside:
                    raise ConfigError(f"{path}: {key}.{beside[0]} sits beside {key}.class_path; settings of a class "
                                      f"go under init_args: {key}.init_args.{beside[0]}")
            for k, v in node.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{key}[{i}]")

    walk(config, "")
    return config


def _check_arguments(argv: list[str]) -> None:
    """Refuse settings that a later ``--config`` or class choice would silently replace or misread (and check each
    config file: :func:`_check_config_file`): arguments apply in order, so ``--trainer.max_epochs 1 --config
    c.yaml`` trained the config's epochs, and ``--model.latent_dim 5 --model DEC`` was read against the base class
    ("no setting 'latent_dim'"). Found by probing as a user. (Once a class is chosen, jsonargparse carries the
    settings a later class also takes over to it: those stand.)"""
    seen: list[tuple[str, bool]] = []  # each option, and whether its group's class was chosen before it
    chosen: set[str] = set()
    for i, arg in enumerate(argv[1:], 1):
        if not arg.startswith("--"):
            continue
        name = arg.split("=", 1)[0]
        if name == "--config":
            if seen:
                raise ConfigError(f"{seen[0][0]} comes before --config, and the config's values replace settings "
                                  "given before it: put --config first, then the settings that change it")
            config = _check_config_file(arg.split("=", 1)[1] if "=" in arg else argv[i + 1] if i + 1 < len(argv)
                                        else "")
            chosen |= {g for g in ("model", "data") if isinstance(config, dict) and config.get(g)}
            continue  # (config files layer in order: a second --config is meant to change the first)
        if name in ("--model", "--data"):
            early = [option for option, had_class in seen if option.startswith(f"{name}.") and not had_class]
            if early:
                raise ConfigError(f"{early[0]} comes before {name}, which chooses the class it is a setting of: put "
                                  f"{name} first, then its settings")
            chosen.add(name[2:])
        if name not in ("--print_config", "--help", "-h") and not name.endswith(".help"):
            seen.append((name, name[2:].split(".")[0] in chosen))


def _first_in_chain(err: BaseException | None, wanted) -> BaseException | None:
    """The first error of ``err``'s chain (itself, then its causes / contexts) for which ``wanted`` holds."""
    seen = set()
    while err is not None and id(err) not in seen:
        if wanted(err):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def _user_error(err: BaseException | None) -> BaseException | None:
    """The bad-input error behind ``err``: jsonargparse wraps errors raised while instantiating classes."""
    return _first_in_chain(err, lambda e: isinstance(e, USER_ERRORS))


def _user_error_in_worker(err: BaseException) -> str | None:
    """The bad-input error a ``ddp_spawn`` worker raised: it reaches this process as the text of its traceback,
    whose last line is ``module.ErrorClass: message``."""
    if type(err).__name__ != "ProcessRaisedException":
        return None
    last = str(err).strip().splitlines()[-1]
    names = "|".join(cls.__name__ for cls in USER_ERRORS)
    match = re.match(rf"(?:[\w.]+\.)?(?:{names}): (.*)", last)
    return match.group(1) if match else None


def _missing_package(err: BaseException) -> str | None:
    """A class given by class_path (a logger's, e.g. TensorBoard's) that needs a package not installed, as one line
    with the way to install it; jsonargparse buries that error in a Union-subtypes dump."""
    missing = _first_in_chain(err, lambda e: isinstance(e, ModuleNotFoundError))
    named = _first_in_chain(err, lambda e: "Problem with given class_path" in str(e))
    if missing is None or named is None:  # (not a class the user named: a genuine bug keeps its traceback)
        return None
    path = re.search(r"class_path '([\w.]+)'", str(named)).group(1)
    text = str(missing).strip()
    installs = list(dict.fromkeys(re.findall(r"`(pip install [^`]+)`", text)))
    if not installs and missing.name:
        installs = [f"pip install {missing.name.split('.')[0]}"]
    how = f" ({' or '.join(installs)})" if installs else ""
    return f"{path} needs a package that is not installed: {text.splitlines()[0]}{how}"


def _constructor_error(err: BaseException | None) -> BaseException | None:
    """The first ValueError in the chain of ``err`` raised outside jsonargparse, which re-raises a constructor's
    error as a ValueError of its own (a Union-subtypes dump) with the original as the cause."""
    return _first_in_chain(err, lambda e: isinstance(e, ValueError) and not _raised_in(e, "jsonargparse"))


def _raised_through(err: BaseException, filename: str) -> bool:
    """Whether any frame of ``err``'s traceback is in a file named ``filename``."""
    tb = err.__traceback__
    while tb is not None:
        if Path(tb.tb_frame.f_code.co_filename).name == filename:
            return True
        tb = tb.tb_next
    return False


def _raised_in(err: BaseException, package: str) -> bool:
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and f"{os.sep}{package}{os.sep}" in tb.tb_frame.f_code.co_filename


_UNKNOWN_OPTION = re.compile(r"class_path '([\w.]+)':\s*Option '([\w.]+)' is not accepted")


def _unknown_option(detail: str) -> str | None:
    """jsonargparse's report of a setting a class does not take, as one sentence naming the class's settings."""
    match = _UNKNOWN_OPTION.search(detail)
    nested = re.search(r"Option '(\w+)' is not accepted\. Got value: Namespace\(class_path='([\w.]+)'", detail)
    if match is None and nested:  # a setting of a class given as another's argument (an optimizer's)
        keys = ".".join(re.findall(r'Parser key "([\w.]+)"', detail))
        option, path = nested.groups()
        try:  # (params: what the method passes)
            cls = _import(path)
            base = re.search(rf"Callable\[\[.*?\], ([\w.]+)\] expects .*?class_path='{re.escape(path)}'", detail)
            if base and _import(base.group(1)) is cls:  # no class given: jsonargparse filled in the abstract base
                flag, setting = "--" + keys.replace(".", ".init_args.", 1), keys.rpartition(".")[2]
                value = re.search(rf"\b{option}='([^']*)'", detail)
                value = value.group(1) if value else "..."
                example = ("torch.optim.Adam" if issubclass(cls, torch.optim.Optimizer) else
                           "torch.optim.lr_scheduler.ExponentialLR"
                           if issubclass(cls, torch.optim.lr_scheduler.LRScheduler) else f"<a {cls.__name__} class>")
                return (f"{keys}: the class of {setting} must be given before its settings, e.g. {flag} {example} "
                        f"{flag}.{option} {value} (in a config: {setting}: {{class_path: {example}, init_args: "
                        f"{{{option}: {value}}}}})")
            return f"{keys}: {registry.unknown_setting(cls, option, hidden=('params',))}"
        except (ImportError, AttributeError, TypeError, ValueError):
            return None
    if match is None:
        return None
    path, option = match.groups()
    typo = _entry_key_typo(option.split(".")[0]) if "." in option else None
    if typo:
        return typo
    try:
        cls = _import(path)
        return registry.unknown_setting(cls, option, hidden=getattr(cls, "data_settings", ()))
    except (ImportError, AttributeError, TypeError, ValueError):
        return None


def _misplaced_key(detail: str) -> str | None:
    """A flag whose key under a class's entry is neither one of its settings nor class_path or init_args
    (``--model.init_arg.latent_dim``): jsonargparse reports a NestedArg that no type of the entry takes, which read as
    'model must be null, got "NestedArg(key='init_arg.latent_dim', val='5')"' (found by probing)."""
    match = re.search(r"NestedArg\(key='([\w.]+)', val=", detail)
    if match is None:
        return None
    parent, key = ".".join(re.findall(r'Parser key "([\w.]+)"', detail[:match.start()])), match.group(1)
    if parent.rpartition(".")[2] == key:  # the setting itself, given a value of the wrong type: _wrong_value's
        return None
    head = key.partition(".")[0]
    typo = _entry_key_typo(head)
    return f"{parent}.{key}: {typo}" if typo else f"{parent}.{key}: {parent} has no setting {head!r}"


def _entry_key_typo(key: str, keys: tuple[str, ...] = ("init_args", "class_path")) -> str | None:
    """The sentence for a misspelt key of a class's entry (``init_arg``), in a config file or a flag; None for
    another key."""
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.8)
    if not close or close[0] == key:
        return None
    return f"{key!r} is not a key of a class's settings (class_path and init_args): did you mean {close[0]!r}?"


def _missing_setting(detail: str) -> str | None:
    """jsonargparse's report of a class given without a setting it requires (``--data Arrays`` without its path),
    which it words as the other alternative of a Union refusing the class: 'data must be null, got Namespace(...)'."""
    match = re.search(r'Parser key "(model|data)".*?Problem with given class_path \'([\w.]+)\': the following '
                      r"arguments are required: (\w+(?:, \w+)*)", detail)
    if match is None:
        return None
    key, path, names = match.groups()
    settings = [f"{key}.{n.strip()}" for n in names.split(",")]
    return f"{', '.join(settings)} is required by {path.rpartition('.')[2]}: set {' '.join('--' + s for s in settings)}"


def _import(path: str):
    """The class a dotted path names."""
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _wrong_value(detail: str) -> str | None:
    """jsonargparse's report of a value of the wrong type (every alternative of every nested Union listed), as one
    sentence: the setting, the types it takes and the value given; or a class_path that does not import."""
    bare = re.search(r"Parser key \"(model|data)\".*?'class_path': '(\w+)'", detail)
    if bare:  # a registry name that is none (a typo in a config file's class_path)
        try:
            registry.get("method" if bare.group(1) == "model" else "datamodule", bare.group(2))
        except LookupError as err:
            return str(err.args[0])
    missing = re.search(r"Problem with given class_path '([\w.]+)': "
                        r"(No module named '[\w.]+'|.*?has no attribute .*?'\w+')", detail)
    if missing:
        absent = re.search(r"No module named '([\w.]+)'", missing.group(2))
        if absent and not f"{missing.group(1)}.".startswith(f"{absent.group(1)}."):  # its module imports a package
            return (f"{missing.group(1)} needs a package that is not installed: {missing.group(2)} "
                    f"(pip install {absent.group(1).split('.')[0]})")
        hint = ("is the folder of its module on PYTHONPATH, or the current folder?" if "No module" in missing.group(2)
                else "check the class's name; dcl list names the registered ones")
        return f"cannot import {missing.group(1)}: {missing.group(2)} ({hint})"
    keys = re.findall(r'Parser key "([\w.]+)"', detail)
    value = re.search(r"(?:Given|Got) value: (.*?)(?: Expected a | Given value type|$)", detail)
    if not keys or value is None or "Expected a <class" not in detail:
        return None
    innermost = detail[detail.rfind(f'Parser key "{keys[-1]}"'):]
    innermost = re.split(r"(?:Given|Got) value", innermost)[0]  # the outer Unions' alternatives follow the value
    names = {"NoneType": "null", "str": "text", "int": "an integer", "float": "a number", "bool": "true or false",
             "collections.abc.Sequence": "a list, e.g. [500, 500]", "list": "a list, e.g. [500, 500]"}
    types = dict.fromkeys(names.get(t, t) for t in re.findall(r"Expected a <class '([\w.]+)'>", innermost))
    return f"{'.'.join(keys)} must be {' or '.join(types)}, got {value.group(1).strip()!r}"


_UNRECOGNIZED = re.compile(r"does not accept option '([\w.]+)'|unrecognized arguments: --([\w.]+)")


def _unrecognized(detail: str) -> str | None:
    """An option no parser takes (a config file's key or a command-line flag), with the closest one that exists."""
    match = _UNRECOGNIZED.search(detail)
    if match is None:
        return None
    option = match.group(1) or match.group(2)
    group, _, name = option.rpartition(".")
    known = {"trainer": list(inspect.signature(pl.Trainer.__init__).parameters)[1:],
             "predictions": list(inspect.signature(PredictionWriter.__init__).parameters)[1:],
             "": ["config", "seed_everything", "trainer", "model", "data", "predictions", "ckpt_path"]}.get(group)
    close = difflib.get_close_matches(name, known or [], n=1)
    return f"{detail} (did you mean {'.'.join(filter(None, (group, close[0])))}?)" if close else None


def list_plugins() -> None:
    for kind, title in (("method", "methods"), ("datamodule", "datamodules")):
        print(f"{title}:")
        for name, cls in registry.available(kind).items():
            print(f"  {name:<16} {registry.describe(cls)}")
        for name, why in registry.load_errors(kind).items():
            print(f"  {name:<16} [failed to import] {why}")


def sets_the_allocator(env_var: str) -> bool:
    """Whether this environment variable chooses the process's allocator or its settings (then left alone)."""
    return env_var in ("LD_PRELOAD", "GLIBC_TUNABLES") or env_var.startswith("MALLOC_")


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse instead of handing it back to the kernel; True if set.

    By default glibc returns every block over its adaptive mmap threshold to the kernel when it is freed and trims
    the top of the heap, so each CPU training step faults its activations in again page by page (with these
    settings a DCFAE step on MNIST takes 0.90x the time on 2 threads, an MLP autoencoder's epoch 0.84x:
    ``benchmarks/results/cpu_allocator.md``). Done for the ``dcl`` process only (a library does not change its
    host's allocator), with glibc only, and not when the user chose the allocator (``LD_PRELOAD``) or its settings
    (``MALLOC_*_``, ``GLIBC_TUNABLES``). The process then holds on to its peak heap, as PyTorch's CUDA caching
    allocator does on a GPU."""
    if not sys.platform.startswith("linux") or any(map(sets_the_allocator, os.environ)):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 -- glibc only: another libc's mallopt takes other options
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
    # 32 MiB: the largest mmap threshold every glibc accepts on 64 bits; larger blocks are rare and stay mmap()ed
    return bool(libc.mallopt(m_mmap_threshold, 32 << 20)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))


class _NoLightningTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


@contextmanager
def command_output():
    """The ``dcl`` command's output, for the command only (a library leaves its host's warnings and logs alone).
    Dropped, what every run printed that says nothing about it: Lightning's advertisements of its cloud services
    ("💡 Tip: ... litlogger / litmodels") and torch's deprecation of LeafSpec, which Lightning's own code meets.
    dcl's own warnings, each a sentence for the user, print as ``dcl: warning:`` lines like the command's others
    (Python's format followed each with the line of code that raised it: ``rank_zero_warn(``)."""
    ours = [Path(p).resolve() for name in ("dcl", "dcl.methods", "dcl.datamodules")
            for p in importlib.import_module(name).__path__]
    lightning_format = warnings.formatwarning

    def format_warning(message, category, filename, lineno, line=None) -> str:
        if issubclass(category, UserWarning) and any(Path(filename).resolve().is_relative_to(folder)
                                                     for folder in ours):
            return f"dcl: warning: {message}\n"
        return lightning_format(message, category, filename, lineno, line)

    tips, no_tips = logging.getLogger("lightning.pytorch.utilities.rank_zero"), _NoLightningTips()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning,
                                r"lightning\.pytorch\.utilities\._pytree")
        warnings.formatwarning = format_warning
        tips.addFilter(no_tips)
        try:
            yield
        finally:
            warnings.formatwarning = lightning_format
            tips.removeFilter(no_tips)


COMMANDS = ("fit", "validate", "test", "predict", "list", "results")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    keep_freed_memory()
    try:
        if argv[:1] == ["list"]:
            list_plugins()
            return
        if argv[:1] == ["results"]:
            results.main(argv[1:])
            return
        if argv[:1] == ["--version"]:
            print(f"dcl {dcl.__version__}")
            return
        if argv and not argv[0].startswith("-") and argv[0] not in COMMANDS:
            close = difflib.get_close_matches(argv[0], COMMANDS, n=1)
            raise ConfigError(f"unknown command {argv[0]!r}{f' (did you mean {close[0]!r}?)' if close else ''}; "
                              f"the commands: {', '.join(COMMANDS)}")
        # Import every plugin first, so that LightningCLI resolves short class names (--model DEC).
        registry.available("method"), registry.available("datamodule")
        argv = _resolve_short_names(argv)
        _check_arguments(argv)
        _set_wandb_mode()
        torch.set_float32_matmul_precision("high")
        # parse errors raise instead of printing the whole usage, so that they end as one line below
        # and an abbreviated option is refused: --model.init_args.pretrain would otherwise set whichever setting it
        # begins, silently, where a typo gets a did-you-mean
        no_exit = {"exit_on_error": False, "allow_abbrev": False}
        # the (rewritten) arguments reach LightningCLI as the process's own: Lightning's DDP launcher starts the
        # other ranks with sys.argv, and LightningCLI warns on every run when given both sys.argv and args
        saved_argv, sys.argv = sys.argv, [sys.argv[0], *argv]
        try:
            with command_output():
                cli = DCLCLI(ClusteringMethod, ClusteringDataModule, subclass_mode_model=True,
                             subclass_mode_data=True, auto_configure_optimizers=False, save_config_callback=RunConfig,
                             save_config_kwargs={"overwrite": True},
                             parser_kwargs={**no_exit, "description": DESCRIPTION,
                                            **{cmd: no_exit for cmd in ("fit", "validate", "test", "predict")}})
            end_script_process_group(cli.trainer)  # the command's ranks are done with their group (ddp)
        finally:
            sys.argv = saved_argv
    except ArgumentError as err:
        detail = " ".join(line.strip(" -") for line in str(err).splitlines() if line.strip())
        detail = _unknown_option(detail) or _misplaced_key(detail) or _missing_setting(detail) or _wrong_value(detail) \
            or _unrecognized(detail) or detail
        command = argv[0] if argv and not argv[0].startswith("-") else ""
        print(f"dcl: error: {detail} (see dcl {command} --help)".replace("  ", " "), file=sys.stderr)
        raise SystemExit(2) from None
    except Exception as err:
        cause = _user_error(err) or _user_error_in_worker(err) or _missing_package(err)
        if cause is None:
            raise
        if rank_zero_only.rank == 0:  # under DDP every rank meets the bad input; one line says it
            print(f"dcl: error: {cause}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
