"""The user's own feature vectors (or images) from a .npy, .npz, .csv or .pt file."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from dcl.datamodule import ClusteringDataModule, DataError

SUFFIXES = (".npy", ".npz", ".csv", ".pt", ".pth")


class Arrays(ClusteringDataModule):
    """Your own data: one array of samples (N x d features, or N x C x H x W images), optional labels.

    Formats, by file suffix:

    - ``.npy``: the samples; labels from ``labels_path`` (another .npy/.csv) when given.
    - ``.npz`` / ``.pt``: a dict-like file; samples under ``x_key``, labels under ``y_key`` (when present).
    - ``.csv``: numeric features (a header row is detected and skipped); the column ``label_column`` (a name or an
      index) holds the labels, every other column is a feature.

    Samples of dtype uint8 (8-bit images) are served scaled to [0, 1], as torchvision's loaders do; any other
    dtype as float32 values. Images are N x C x H x W (add the channel axis of grayscale N x H x W, ``x[:, None]``,
    for the methods with convolutional networks).

    Labels are class ids (any integers; negative or empty: unknown) or class names (e.g. ``setosa``), numbered
    0..C-1 in sorted order; the names, or ids other than 0..C-1, are kept in ``class_names``, which ``dcl predict``
    writes back.

    Args:
        path: the data file.
        x_key, y_key: keys of samples and labels in .npz / .pt files.
        label_column: the labels' column of a .csv file (name or index), None when it has none.
        labels_path: a separate file of labels, one per sample: .npy, or .csv / .txt with one per line.
        standardize: subtract the mean and divide by the standard deviation of each feature, as computed on
            this file when training starts; they are saved in checkpoints, so that ``dcl predict`` on new data
            with a trained model's checkpoint applies the training data's statistics.
        batch_size, n_clusters, eval_batch_size, seed, on_device: see ``ClusteringDataModule``.
    """

    def __init__(self, path: str, x_key: str = "x", y_key: str = "y", label_column: str | int | None = None,
                 labels_path: str | None = None, standardize: bool = False, batch_size: int = 256,
                 n_clusters: int | None = None, eval_batch_size: int | None = None, seed: int = 0,
                 on_device: bool = False) -> None:
        super().__init__(batch_size, n_clusters, eval_batch_size, seed, on_device)
        self.path = path
        self.x_key, self.y_key = x_key, y_key
        self.label_column = label_column
        self.labels_path = labels_path
        self.standardize = standardize
        self._mean: torch.Tensor | None = None  # the standardization's statistics (float32, one per feature)
        self._std: torch.Tensor | None = None

    def _file(self, path: str) -> Path:
        p = Path(path).expanduser()
        if not p.is_file():
            raise DataError(f"Arrays: {p.resolve()} does not exist; set path to a {'/'.join(SUFFIXES)} file")
        if p.suffix.lower() not in SUFFIXES + (".txt",):
            raise DataError(f"Arrays: cannot read {p.name}: the suffix must be one of {', '.join(SUFFIXES)}")
        return p

    def _read_csv(self, p: Path) -> tuple[np.ndarray, np.ndarray | None]:
        with open(p, newline="") as f:
            rows = csv.reader(f)
            first = [c.strip() for c in next(rows, [])]
            second = [c.strip() for c in next(rows, [])]
        # a header names columns that hold numbers below it (a column of class names is text in every row)
        header = first if any(a and not _is_number(a) and (i >= len(second) or _is_number(second[i]))
                              for i, a in enumerate(first)) else None
        col = self.label_column
        if isinstance(col, str) and col.lstrip("-").isdigit():
            col = int(col)
        if isinstance(col, int):
            if not -len(first) <= col < len(first):
                raise DataError(f"Arrays: label_column {col} is out of range: {p.name} has {len(first)} columns")
            col %= len(first)
        if isinstance(col, str):
            if header is None or col not in header:
                raise DataError(f"Arrays: no column {col!r} in {p.name}; its columns are {header or 'unnamed'}")
            col = header.index(col)
        features = [i for i in range(len(first)) if i != col]
        try:
            x = np.loadtxt(p, delimiter=",", skiprows=1 if header else 0, usecols=features, ndmin=2,
                           dtype=np.float64, quotechar='"')
        except ValueError as e:
            raise DataError(_not_numeric(p, header, features, e)) from e
        if col is None:
            return x, None
        y = np.loadtxt(p, delimiter=",", skiprows=1 if header else 0, usecols=[col], ndmin=1, dtype=str,
                       quotechar='"')
        return x, y

    def _read_dict(self, p: Path, data) -> tuple[np.ndarray, np.ndarray | None]:
        keys = list(data.keys())
        if self.x_key not in keys:
            raise DataError(f"Arrays: no key {self.x_key!r} in {p.name} (keys: {keys}); set x_key")
        y = data[self.y_key] if self.y_key in keys else None
        return np.asarray(data[self.x_key]), None if y is None else np.asarray(y)

    def load(self):
        p = self._file(self.path)
        suffix = p.suffix.lower()
        if suffix == ".npy":
            x, y = np.load(p, allow_pickle=False), None
        elif suffix == ".npz":
            with np.load(p, allow_pickle=False) as data:
                x, y = self._read_dict(p, data)
        elif suffix in (".pt", ".pth"):
            data = torch.load(p, map_location="cpu", weights_only=True)
            if isinstance(data, torch.Tensor):
                x, y = data.numpy(), None
            else:
                x, y = self._read_dict(p, {k: torch.as_tensor(v).numpy() for k, v in data.items()})
        else:
            x, y = self._read_csv(p)
        if self.labels_path:
            lp = self._file(self.labels_path)
            # a text file: one label per line, an empty line for an unknown one
            y = np.load(lp) if lp.suffix.lower() == ".npy" else np.array(lp.read_text().splitlines(), dtype=str)
        if not np.issubdtype(x.dtype, np.number):
            raise DataError(f"Arrays: samples in {p.name} are not numeric (dtype {x.dtype})")
        if x.ndim == 1:
            x = x[:, None]
        if x.dtype == np.uint8:  # 8-bit images: kept as bytes, served in [0, 1]
            x = torch.from_numpy(np.ascontiguousarray(x))
        else:
            x = torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32)
        if y is not None:
            y, self._class_names = _class_ids(np.asarray(y).reshape(-1), p.name)
            y = torch.from_numpy(y)
        return x, y

    def _statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation of each feature: this file's, computed at first use, unless a checkpoint
        restored the training data's (Lightning restores a datamodule's state after its setup)."""
        if self._mean is None:
            x = _as_float(self.x.cpu())
            std, self._mean = torch.std_mean(x, dim=0)
            self._std = std.nan_to_num(1.0).clamp_min(1e-8)  # nan: a single sample
        return self._mean, self._std

    def batch_transform(self, x: torch.Tensor) -> torch.Tensor:
        x = _as_float(x)
        if self.standardize:
            mean, std = self._statistics()
            x = (x - mean.to(x.device)) / std.to(x.device)
        return x

    def state_dict(self) -> dict:
        return {"mean": self._mean, "std": self._std} if self.standardize else {}

    def load_state_dict(self, state: dict) -> None:
        if state.get("mean") is None:
            return
        if not self.standardize:
            raise DataError("Arrays: the checkpoint's model was trained on standardized samples; set standardize: "
                            "true (the training data's statistics, saved in the checkpoint, are applied)")
        if state["mean"].shape != self.x.shape[1:]:
            raise DataError(f"Arrays: the checkpoint standardizes samples of shape {tuple(state['mean'].shape)}, "
                            f"{self.path} has samples of shape {tuple(self.x.shape[1:])}")
        self._mean, self._std = state["mean"], state["std"]


def _as_float(x: torch.Tensor) -> torch.Tensor:
    """Samples as float32: 8-bit images scaled to [0, 1], anything else as stored (already float32)."""
    return x.to(torch.float32).div_(255.0) if x.dtype == torch.uint8 else x


def _not_numeric(p: Path, header: list[str] | None, features: list[int], err: ValueError) -> str:
    """The error for a CSV whose features do not parse: the first cell that is not a number, and what to do."""
    with open(p, newline="") as f:
        for row_no, row in enumerate(csv.reader(f), start=1):
            if header and row_no == 1:
                continue
            for i in features:
                cell = row[i].strip() if i < len(row) else ""
                if not _is_number(cell):
                    name = f"column {i} ({header[i]!r})" if header and i < len(header) else f"column {i}"
                    other = next((d for d in (";", "\t", "|") if d in cell), None)
                    hint = (f"; the file looks separated by {other!r}: Arrays reads comma-separated values, so "
                            "convert it (e.g. pandas' read_csv(sep=...).to_csv)" if other
                            else f"; if it holds the labels, set label_column: {header[i] if header else i}"
                            if cell else "; fill in or drop the missing values")
                    return (f"Arrays: {p.resolve()}: {name} is not a number in row {row_no} ({cell!r}): the "
                            f"features must be numeric{hint}")
    return f"Arrays: {p.resolve()} is not a numeric CSV table ({err})"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _class_ids(y: np.ndarray, name: str) -> tuple[np.ndarray, list[str] | None]:
    """Class ids 0..C-1 from labels given as numbers or as class names, and the classes' names (the sorted names,
    or the given ids when they are not 0..C-1); unknown labels (negative, NaN, empty) -> -1."""
    if y.dtype.kind in "USO":  # text: numbers written out, or class names
        text = np.char.strip(y.astype(str))
        known = text != ""
        if all(map(_is_number, text[known])):
            y = np.full(len(text), np.nan)
            y[known] = text[known].astype(np.float64)
        else:  # class names, e.g. "setosa": numbered in sorted order
            out = np.full(len(text), -1, dtype=np.int64)
            names, out[known] = np.unique(text[known], return_inverse=True)
            return out, names.tolist()
    y = y.astype(np.float64)
    if not np.all(np.isnan(y) | (y == np.round(y))):
        raise DataError(f"Arrays: labels of {name} are not integers; clustering labels must be class ids or names")
    known = ~np.isnan(y) & (y >= 0)
    out = np.full(len(y), -1, dtype=np.int64)
    ids, out[known] = np.unique(y[known].astype(np.int64), return_inverse=True)
    # ids other than 0..C-1 (e.g. 3, 7, 9) are renumbered: keep them as the classes' names
    return out, None if np.array_equal(ids, np.arange(len(ids))) else [str(i) for i in ids]
