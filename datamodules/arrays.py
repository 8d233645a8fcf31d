"""The user's own feature vectors (or images) from a .npy, .npz, .csv or .pt file."""

from __future__ import annotations

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
    - ``.csv``: numeric table (a header row is detected and skipped); the column ``label_column`` (a name or an
      index) holds the labels, every other column is a feature.

    Args:
        path: the data file.
        x_key, y_key: keys of samples and labels in .npz / .pt files.
        label_column: the labels' column of a .csv file (name or index), None when it has none.
        labels_path: a separate file of labels (.npy, .csv or .txt, one per sample).
        standardize: subtract the mean and divide by the standard deviation of each feature.
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

    def _file(self, path: str) -> Path:
        p = Path(path).expanduser()
        if not p.is_file():
            raise DataError(f"Arrays: {p.resolve()} does not exist; set path to a {'/'.join(SUFFIXES)} file")
        if p.suffix.lower() not in SUFFIXES + (".txt",):
            raise DataError(f"Arrays: cannot read {p.name}: the suffix must be one of {', '.join(SUFFIXES)}")
        return p

    def _read_csv(self, p: Path) -> tuple[np.ndarray, np.ndarray | None]:
        with open(p) as f:
            first = f.readline().strip().split(",")
        try:
            [float(v) for v in first]
            header = None
        except ValueError:
            header = [c.strip() for c in first]
        try:
            table = np.loadtxt(p, delimiter=",", skiprows=1 if header else 0, ndmin=2, dtype=np.float64)
        except ValueError as e:
            raise DataError(f"Arrays: {p.resolve()} is not a numeric CSV table ({e})") from e
        if self.label_column is None:
            return table, None
        col = self.label_column
        if isinstance(col, str) and not col.lstrip("-").isdigit():
            if header is None or col not in header:
                raise DataError(f"Arrays: no column {col!r} in {p.name}; its columns are {header or 'unnamed'}")
            col = header.index(col)
        col = int(col) % table.shape[1]
        return np.delete(table, col, axis=1), table[:, col]

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
            y = np.load(lp) if lp.suffix.lower() == ".npy" else np.loadtxt(lp, delimiter=",", ndmin=1)
        if not np.issubdtype(x.dtype, np.number):
            raise DataError(f"Arrays: samples in {p.name} are not numeric (dtype {x.dtype})")
        if x.ndim == 1:
            x = x[:, None]
        x = torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32)
        if self.standardize and len(x) > 1:
            x = (x - x.mean(0)) / x.std(0).clamp_min(1e-8)
        if y is not None:
            y = np.asarray(y).reshape(-1)
            if np.issubdtype(y.dtype, np.floating) and not np.all(np.isnan(y) | (y == np.round(y))):
                raise DataError(f"Arrays: labels of {p.name} are not integers; clustering labels must be class ids")
            # map arbitrary class ids to 0..C-1 (unknown = negative or NaN stays -1)
            known = ~np.isnan(y.astype(np.float64)) & (y.astype(np.float64) >= 0)
            out = np.full(len(y), -1, dtype=np.int64)
            if known.any():
                _, out[known] = np.unique(y[known].astype(np.int64), return_inverse=True)
            y = torch.from_numpy(out)
        return x, y
