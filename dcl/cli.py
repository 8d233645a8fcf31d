"""The ``dcl`` command: LightningCLI in subclass mode over every registered method and datamodule.

    dcl fit --config configs/ae_kmeans/digits.yaml
    dcl fit --model DEC --data USPS --data.data_dir ../shared/data
    dcl predict --config CONFIG --ckpt_path RUN.ckpt --predictions.output clusters.csv
    dcl list
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from lightning.pytorch.cli import LightningCLI

from dcl import registry
from dcl.callbacks.prediction_writer import PredictionWriter
from dcl.datamodule import ClusteringDataModule, DataError
from dcl.method import ClusteringMethod, ConfigError, check_checkpoint_method, load_checkpoint_file

USER_ERRORS = (ConfigError, DataError, registry.RegistryError)


class DCLCLI(LightningCLI):
    """LightningCLI with n_clusters and input_shape flowing from the datamodule into the method."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.n_clusters", "model.init_args.n_clusters", apply_on="instantiate")
        parser.link_arguments("data.input_shape", "model.init_args.input_shape", apply_on="instantiate")
        parser.add_lightning_class_args(PredictionWriter, "predictions")

    def _check_ckpt(self) -> None:
        ckpt_path = self.config[self.subcommand].get("ckpt_path")
        if ckpt_path and ckpt_path not in ("last", "best", "hpc", "registry"):
            if not Path(ckpt_path).is_file():
                raise ConfigError(f"checkpoint {ckpt_path} does not exist")
            check_checkpoint_method(load_checkpoint_file(ckpt_path), type(self.model))
        elif self.subcommand != "fit":
            print(f"dcl: warning: {self.subcommand} without --ckpt_path uses an untrained model", file=sys.stderr)

    def before_fit(self) -> None:
        self._check_ckpt()

    def before_validate(self) -> None:
        self._check_ckpt()

    def before_test(self) -> None:
        self._check_ckpt()

    def before_predict(self) -> None:
        self._check_ckpt()

    def after_fit(self) -> None:
        scores = self.model.final_scores()
        if self.trainer.is_global_zero:
            text = " ".join(f"{k.upper()}={v:.4f}" if isinstance(v, float) else f"{k.upper()}={v}"
                            for k, v in scores.items())
            print(f"dcl: final clustering of {self.datamodule.num_samples} samples: {text}")
            if self.trainer.log_dir:
                out = Path(self.trainer.log_dir) / "final_scores.json"
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps(scores, indent=2))
        for logger in self.trainer.loggers:
            logger.log_metrics({f"final/{k}": float(v) for k, v in scores.items()}, step=self.trainer.global_step)


def _set_wandb_mode() -> None:
    """W&B runs offline when no credentials are configured (sync later with ``wandb sync``)."""
    if os.environ.get("WANDB_MODE") or os.environ.get("WANDB_API_KEY"):
        return
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    if netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore"):
        return
    os.environ["WANDB_MODE"] = "offline"


def _resolve_short_names(argv: list[str]) -> list[str]:
    """``--model dec`` / ``--data=usps``: registry names, case-insensitive, to import paths."""
    out = list(argv)
    for i, arg in enumerate(out):
        for flag, kind in (("--model", "method"), ("--data", "datamodule")):
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


def list_plugins() -> None:
    for kind, title in (("method", "methods"), ("datamodule", "datamodules")):
        print(f"{title}:")
        for name, cls in registry.available(kind).items():
            print(f"  {name:<16} {registry.describe(cls)}")
        for name, why in registry.load_errors(kind).items():
            print(f"  {name:<16} [failed to import] {why}")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["list"]:
            list_plugins()
            return
        # Import every plugin first, so that LightningCLI resolves short class names (--model DEC).
        registry.available("method"), registry.available("datamodule")
        argv = _resolve_short_names(argv)
        _set_wandb_mode()
        torch.set_float32_matmul_precision("high")
        DCLCLI(ClusteringMethod, ClusteringDataModule, subclass_mode_model=True, subclass_mode_data=True,
               auto_configure_optimizers=False, save_config_kwargs={"overwrite": True}, args=argv)
    except USER_ERRORS as err:
        print(f"dcl: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
