"""Write per-sample cluster assignments of ``dcl predict`` to a CSV (and optionally the embeddings), each whole or
not at all (``dcl.files.atomic_write``)."""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from dcl.distributed import gather_ordered
from dcl.files import atomic_write, names_stdout, unwritable_output


class PredictionWriter(Callback):
    """Collects each predict batch's outputs and writes them, in sample order, at the end of the predict epoch.

    A plain callback rather than Lightning's ``BasePredictionWriter``: that one needs the batch indices of a
    ``DataLoader``'s sampler and warns on every ``dcl predict`` that it cannot infer them from dcl's in-memory
    loader; each batch here carries its samples' ``index`` instead.

    Args:
        output: CSV path for one row per sample: index, cluster, confidence, and label when known (the
            class name when the datamodule has ``class_names``, else the class id; empty when unknown), and what
            names the sample when the datamodule has ``sample_ids`` (``ImageFolder``: its file; ``Arrays``: its
            ``id_column``).
        embeddings: optional path for the embeddings (N x d), in sample order: ``.npy`` (binary) or ``.csv`` /
            ``.txt`` (text, comma-separated, one row per sample).
    """

    EMBEDDING_FORMATS = (".npy", ".csv", ".txt")
    #: suffixes of other formats, binary or text, which the CSV of ``output`` would only bear the name of
    OTHER_FORMATS = (".npy", ".npz", ".pt", ".pth", ".pkl", ".pickle", ".parquet", ".h5", ".hdf5", ".xlsx", ".xls",
                     ".json", ".jsonl", ".tsv", ".xml", ".html")

    def __init__(self, output: str | None = None, embeddings: str | None = None) -> None:
        super().__init__()
        # "~" as the shell would (a config file, or --predictions.output=~/x.csv, leaves it): the checks below and
        # the command's against its inputs then see the file that is written
        output, embeddings = (str(Path(p).expanduser()) if p else p for p in (output, embeddings))
        for setting, path in (("output", output), ("embeddings", embeddings)):
            if path and Path(path).is_dir():
                raise ValueError(f"predictions.{setting} {path!r} is a folder; name a file in it, e.g. "
                                 f"{Path(path) / ('clusters.csv' if setting == 'output' else 'z.npy')}")
            why = unwritable_output(path) if path else None  # (/dev/stdout: /dev itself is not writable)
            if why:
                raise ValueError(f"predictions.{setting} {path!r} cannot be written: {why}")
        if output and embeddings and Path(output).resolve() == Path(embeddings).resolve():
            raise ValueError(f"predictions.output and predictions.embeddings name the same file {output!r}; name two "
                             "files (e.g. clusters.csv and z.npy)")
        if output and Path(output).suffix.lower() in self.OTHER_FORMATS:
            raise ValueError(f"predictions.output {output!r} is written as CSV text (a row per sample: index, cluster, "
                             "confidence, ...); name a .csv file, and the embeddings' .npy as predictions.embeddings")
        if embeddings and Path(embeddings).suffix.lower() not in self.EMBEDDING_FORMATS:
            raise ValueError(f"predictions.embeddings {embeddings!r}: name a .npy (binary) or a .csv / .txt (text) "
                             "file; the suffix picks the format")
        self.output = output
        self.writes_stdout = any(p and names_stdout(p) for p in (output, embeddings))
        self.embeddings = embeddings
        self._batches: list[dict[str, torch.Tensor]] = []  # batches of a loader of unknown length
        self._columns_filled: tuple[dict[str, torch.Tensor], int] | None = None  # one buffer per column, rows filled

    def _status(self):
        """Where the command's lines about its outputs go: stderr when an output is stdout, where they would end the
        data."""
        return sys.stderr if self.writes_stdout else sys.stdout

    def on_predict_epoch_start(self, trainer, pl_module) -> None:
        self._batches, self._columns_filled = [], None

    def _columns(self) -> tuple[str, ...]:
        """The outputs of ``predict_step`` that the files take: not the soft assignments ``probs`` (N x K), nor the
        embeddings without ``embeddings``."""
        return (("index", "cluster", "confidence", "y") if self.output else ("index",)) + \
            (("z",) if self.embeddings else ())

    def on_predict_batch_end(self, trainer, pl_module, outputs: dict[str, torch.Tensor], batch: Any,
                             batch_idx: int, dataloader_idx: int = 0) -> None:
        # only the columns written, on the CPU: the whole outputs of every batch (the N x K probs; on a GPU, in its
        # memory) were held until the epoch's end, 0.8 GB for 1,000,000 samples and 200 clusters
        if not (self.output or self.embeddings):
            return
        part = {key: outputs[key].detach() for key in self._columns()}
        rows = getattr(trainer.predict_dataloaders, "num_rows", None)  # a datamodule's loader: this rank's samples
        if rows is None:
            self._batches.append({key: value.cpu() for key, value in part.items()})
            return
        # written into one buffer per column, as embed_all does: a list of small per-batch tensors pinned the
        # freed memory of every batch's soft assignments in the heap (peaks of 2.1-2.3 GB instead of 1.4 GB)
        if self._columns_filled is None:
            self._columns_filled = ({key: torch.empty((rows, *value.shape[1:]), dtype=value.dtype)
                                     for key, value in part.items()}, 0)
        columns, filled = self._columns_filled
        n = len(part["index"])
        for key, value in part.items():
            columns[key][filled:filled + n] = value
        self._columns_filled = columns, filled + n

    def on_predict_epoch_end(self, trainer, pl_module) -> None:
        preds, self._batches = self._batches, []
        filled, self._columns_filled = self._columns_filled, None
        if not (self.output or self.embeddings):
            return
        n = trainer.datamodule.num_samples if trainer.datamodule is not None else None
        if filled is not None:
            cols = {key: value[:filled[1]] for key, value in filled[0].items()}
        else:
            cols = {key: torch.cat([p[key] for p in preds]) for key in self._columns()}
        del preds, filled
        if n is not None:
            cols = {key: gather_ordered(v.to(pl_module.device), n).cpu() for key, v in cols.items()}
        if not trainer.is_global_zero:
            return
        if self.output:
            has_labels = bool((cols["y"] >= 0).any())
            names = getattr(trainer.datamodule, "class_names", None)
            ids = getattr(trainer.datamodule, "sample_ids", None)
            id_name, ids = ids if ids is not None and len(ids[1]) == len(cols["index"]) else (None, None)
            if id_name in ("", "index", "cluster", "confidence", "label"):  # never two columns of one name
                id_name = "sample_id"

            def label(y: int):
                return "" if y < 0 else names[y] if names else y

            def write_csv(tmp: str) -> None:
                with open(tmp, "w", newline="") as f:
                    out = csv.writer(f, lineterminator="\n")
                    out.writerow(["index", "cluster", "confidence"] + (["label"] if has_labels else [])
                                 + ([id_name] if ids else []))
                    rows = zip(cols["index"].tolist(), cols["cluster"].tolist(), cols["confidence"].tolist(),
                               cols["y"].tolist())
                    for i, c, p, y in rows:
                        out.writerow([i, c, f"{p:.6f}"] + ([label(y)] if has_labels else [])
                                     + ([ids[i]] if ids else []))

            atomic_write(self.output, write_csv)
            print(f"dcl: wrote {len(cols['index'])} assignments to {self.output}", file=self._status())
        if self.embeddings:
            z = cols["z"].float().numpy()

            def write_embeddings(tmp: str) -> None:
                with open(tmp, "wb") as f:
                    if Path(self.embeddings).suffix.lower() == ".npy":
                        np.save(f, z)
                    else:
                        np.savetxt(f, z, delimiter=",", fmt="%.9g")  # (9 digits: a float32 read back exactly)

            atomic_write(self.embeddings, write_embeddings)
            print(f"dcl: wrote embeddings {tuple(cols['z'].shape)} to {self.embeddings}", file=self._status())
