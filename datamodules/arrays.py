"""The user's own feature vectors (or images) from a .npy, .npz, .csv or .pt file."""

from __future__ import annotations

import csv
import math
import re
import warnings
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn

from dcl.datamodule import MISSING, ClusteringDataModule, DataError, class_ids, is_number

SUFFIXES = (".npy", ".npz", ".csv", ".pt", ".pth")
#: text files are UTF-8, with or without the byte-order mark that spreadsheet programs write first
ENCODING = "utf-8-sig"
#: separators of other "CSV" dialects (European spreadsheets write ";"), named in errors (as are spaces between
#: numbers, numpy's savetxt default: _other_separator)
OTHER_SEPARATORS = (";", "\t", "|")
#: checkpoints saved before constant features were standardized with scale 1 hold this floor as their std
OLD_STD_FLOOR = 1e-8


class Arrays(ClusteringDataModule):
    """Your own data: one array of samples (N x d features, or N x C x H x W images), optional labels.

    Formats, by file suffix:

    - ``.npy``: the samples; labels from ``labels_path`` (another .npy/.csv) when given.
    - ``.npz`` / ``.pt``: a dict-like file; samples under ``x_key``, labels under ``y_key`` (when present); a
      ``.pt`` may also hold the samples' tensor alone or a tuple ``(x, y)``.
    - ``.csv``: numeric features (a header row is detected, or as ``header`` says, and skipped, as is an unnamed
      first column under it, pandas' row index); the column ``label_column`` (a name or an index) holds the labels,
      ``id_column`` the samples' names, ``ignore_columns`` anything else that is not a feature; every other column
      is a feature. UTF-8, with or without a byte-order mark.

    Samples of dtype uint8 (8-bit images) are served scaled to [0, 1], as torchvision's loaders do; any other
    dtype as float32 values. Images are N x C x H x W (add the channel axis of grayscale N x H x W, ``x[:, None]``,
    for the methods with convolutional networks; channels-last N x H x W x C, 1, 3 or 4 channels, is refused).

    Labels are class ids (any integers; negative, empty or ``NA``: unknown) or class names (e.g. ``setosa``), numbered
    0..C-1 in sorted order; the names, or ids other than 0..C-1, are kept in ``class_names``, which ``dcl predict``
    writes back.

    ``batch_size``, ``n_clusters``, ``eval_batch_size``, ``seed`` and ``on_device`` are ``ClusteringDataModule``'s.

    Args:
        path: the data file.
        x_key: key of the samples in .npz / .pt files.
        y_key: key of the labels in .npz / .pt files.
        label_column: the labels' column of a .csv file (name or index), None when it has none.
        id_column: a .csv column that names each sample (an id, a name: any text), neither a feature nor a label;
            ``dcl predict`` writes it beside each sample's cluster.
        ignore_columns: .csv columns (names or indices) that are neither features nor labels, e.g. dates or notes.
        header: whether a .csv file's first row names its columns; None: detected (a first row with a name above a
            number, or pandas' column numbers 0, 1, ...). Set it for a header of numbers only (e.g. years).
        labels_path: a separate file of labels, one per sample: .npy, or .csv / .txt with one per line.
        standardize: subtract the mean and divide by the standard deviation of each feature (1 for a constant
            feature, as scikit-learn's StandardScaler), as computed on this file when training starts; they are saved
            in checkpoints, so that ``dcl predict`` on new data with a trained model's checkpoint applies the
            training data's statistics.

    Checkpoints also hold the names of a .csv file's feature columns (from its header): data given later with a
    checkpoint (``dcl predict``, ``validate``, ``test``) whose header names them in another order is served in the
    training order, and data whose features are named otherwise is refused. Data without names (a .npy file, a
    .csv without a header) is taken by position.
    """

    def __init__(self, path: str, x_key: str = "x", y_key: str = "y", label_column: str | int | None = None,
                 id_column: str | int | None = None, ignore_columns: list[str | int] | tuple[str | int, ...] = (),
                 header: bool | None = None, labels_path: str | None = None, standardize: bool = False,
                 batch_size: int = 256, n_clusters: int | None = None, eval_batch_size: int | None = None,
                 seed: int | None = None, on_device: bool = False) -> None:
        super().__init__(batch_size, n_clusters, eval_batch_size, seed, on_device)
        self.path = path
        self.x_key, self.y_key = x_key, y_key
        self.label_column = label_column
        self.id_column = id_column
        self.ignore_columns = list(ignore_columns)
        self.header = header
        self.labels_path = labels_path
        self.standardize = standardize
        self._mean: torch.Tensor | None = None  # the standardization's statistics (float32, one per feature)
        self._std: torch.Tensor | None = None
        #: the names of a .csv file's feature columns, in the order served (None: the file does not name them)
        self._feature_names: list[str] | None = None

    def _file(self, path: str) -> Path:
        p = Path(path).expanduser()
        if p.is_dir():
            raise DataError(f"Arrays: {p.resolve()} is a folder; set path to a {'/'.join(SUFFIXES)} file in it (a "
                            "folder of images is read by the ImageFolder datamodule)")
        if not p.is_file():
            raise DataError(f"Arrays: {p.resolve()} does not exist; set path to a {'/'.join(SUFFIXES)} file")
        if p.suffix.lower() not in SUFFIXES + (".txt",):
            raise DataError(f"Arrays: cannot read {p.name}: the suffix must be one of {', '.join(SUFFIXES)} (or "
                            ".txt, read as .csv)")
        return p

    def _read_csv(self, p: Path) -> tuple[np.ndarray, np.ndarray | None]:
        with open(p, newline="", encoding=ENCODING) as f:
            rows = csv.reader(f)
            first = [c.strip() for c in next(rows, [])]
            second = [c.strip() for c in next(rows, [])]
        if not any(first):
            raise DataError(f"Arrays: {p.resolve()} is empty{'' if not second else ' in its first row'}; write the "
                            "samples one per row, comma-separated, after an optional header row")
        other = (_other_separator(first[0]) or _other_separator(second[0] if second else "")) if len(first) == 1 \
            else None
        if other:  # one column whose cells hold another separator: settings naming columns would not find them
            raise DataError(f"Arrays: {p.resolve()} has a single column{_separator_hint(other)}")
        # a header names columns that hold numbers below it (a column of class names is text in every row), is the
        # column numbers pandas writes for a DataFrame made from an array (0, 1, ..., after an empty index name), or
        # holds a column name the settings give
        names = [c for c in (self.label_column, self.id_column, *self.ignore_columns)
                 if isinstance(c, str) and not c.lstrip("-").isdigit()]
        detected = (any(a and not is_number(a) and (i >= len(second) or is_number(second[i]))
                        for i, a in enumerate(first))
                    or _pandas_column_numbers(first) or any(c in first for c in names))
        header = first if (detected if self.header is None else self.header) else None
        _refuse_missing_columns([("label_column", self.label_column), ("id_column", self.id_column),
                                 *(("ignore_columns", c) for c in self.ignore_columns)], p, header)
        col = None if self.label_column is None else _csv_column(self.label_column, "label_column", p, first, header)
        id_col = None if self.id_column is None else _csv_column(self.id_column, "id_column", p, first, header)
        ignored = {_csv_column(c, "ignore_columns", p, first, header) for c in self.ignore_columns}
        if col is not None and col == id_col:
            raise DataError(f"Arrays: label_column and id_column name the same column of {p.name}; the labels are "
                            "class ids or names, the ids name each sample")
        # an unnamed first column under a header is a row index (pandas' to_csv writes one by default, and reading it
        # back names it "Unnamed: 0"): skipped
        index_column = (header is not None and re.fullmatch(r"(Unnamed: 0)?", header[0]) is not None
                        and 0 not in (col, id_col) and 0 not in ignored)
        if index_column:
            rank_zero_warn(f"Arrays: {p.name}: its first column has no name, as the row index pandas' to_csv writes "
                           "by default; it is skipped (not a feature)")
            ignored.add(0)
        features = [i for i in range(len(first)) if i not in (col, id_col) and i not in ignored]
        if not features:
            raise DataError(f"Arrays: {p.name} has no feature columns: all {len(first)} are labels, ids, ignored or "
                            "a row index")
        self._feature_names = [header[i] for i in features] if header else None
        skip = 1 if header else 0
        every_column = features == list(range(len(first)))
        try:
            # every column read (usecols None): numpy then checks that each row has them all, and not more
            x = _loadtxt(p, skip, dtype=np.float64, usecols=None if every_column else features)
        except ValueError as e:
            raise DataError(_not_numeric(p, header, features, e, len(first))) from e
        if len(x) == 0:
            raise DataError(f"Arrays: {p.resolve()} has a header row ({', '.join(first)}) but no samples below it; "
                            "write the samples one per row")
        # numpy reads the columns asked for and ignores more: a longer row's cells past them were dropped, silently
        ragged = None if every_column else _row_of_other_width(p, len(first))
        if ragged:
            raise DataError(ragged)
        text_columns = [c for c in (id_col, col) if c is not None]  # the ids and the labels, read as text at once
        if not text_columns:
            return x, None
        text = _loadtxt(p, skip, dtype=str, usecols=text_columns)
        if id_col is not None:
            self._sample_ids = (header[id_col] if header else "id", [v.strip() for v in text[:, 0].tolist()])
        return x, None if col is None else text[:, -1]

    def _read_dict(self, p: Path, data) -> tuple[np.ndarray, np.ndarray | None]:
        keys = list(data.keys())
        if self.x_key not in keys:
            raise DataError(f"Arrays: no key {self.x_key!r} in {p.name} (keys: {keys}); set x_key")
        y = data[self.y_key] if self.y_key in keys else None
        return _array(data[self.x_key], p, self.x_key), None if y is None else _array(y, p, self.y_key)

    def _read_torch(self, p: Path) -> tuple[np.ndarray, np.ndarray | None]:
        """A tensor, a dict of them (``x_key``, ``y_key``; other entries ignored) or a tuple ``(x[, y])``."""
        try:
            data = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as err:  # pickled objects other than tensors and plain containers, or not a torch file
            found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
            detail = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip().splitlines()
            why = (f"it holds Python objects that are not tensors ({found.group(1)})" if found else
                   f"it is not a PyTorch file ({type(err).__name__}{': ' + detail[0][:160] if detail else ''})")
            raise DataError(f"Arrays: cannot read {p.name} with torch.load(weights_only=True): {why}; save "
                            "tensors, e.g. torch.save({'x': torch.as_tensor(x), 'y': torch.as_tensor(y)}, path), or "
                            "numpy arrays with np.savez(path, x=x, y=y)") from None
        if isinstance(data, torch.Tensor):
            return _array(data, p, "the file"), None
        if isinstance(data, (tuple, list)) and 1 <= len(data) <= 2:
            data = dict(zip((self.x_key, self.y_key), data))
        if not isinstance(data, dict):
            raise DataError(f"Arrays: {p.name} holds a {type(data).__name__}; save a tensor of samples, a dict of "
                            f"them ({self.x_key!r}, and {self.y_key!r} for labels) or a tuple (x, y)")
        return self._read_dict(p, data)

    def load(self):
        p = self._file(self.path)
        suffix = p.suffix.lower()
        if (self.id_column is not None or self.ignore_columns) and suffix != ".csv":
            raise DataError(f"Arrays: id_column and ignore_columns select columns of a .csv file; {p.name} is a "
                            f"{suffix} file: remove them")
        if suffix == ".npy":
            x, y = _npy_samples(p), None
        elif suffix == ".npz":
            with _np_load(p) as data:
                x, y = self._read_dict(p, data)
        elif suffix in (".pt", ".pth"):
            x, y = self._read_torch(p)
        else:
            x, y = _as_text(self._read_csv, p)
        if self.labels_path:
            lp = self._file(self.labels_path)
            if lp.suffix.lower() in (".npz", ".pt", ".pth"):  # read as text, a .npz was "not UTF-8" (probing)
                raise DataError(f"Arrays: labels_path {lp.name} is a {lp.suffix} file; labels_path reads a .npy or a "
                                f"text file (one label per line). For labels inside a {lp.suffix}, give that file as "
                                "path, the labels under y_key beside the samples under x_key")
            y = _np_load(lp) if lp.suffix.lower() == ".npy" else _as_text(_read_labels_text, lp, len(x))
        if x.dtype.names:  # a structured array (np.genfromtxt(names=True)): one field per column
            raise DataError(f"Arrays: samples in {p.name} are a structured array of {len(x.dtype.names)} named "
                            "fields; save them as one 2-D array, e.g. with numpy.lib.recfunctions."
                            "structured_to_unstructured")
        if x.dtype == np.bool_:  # binary features: 0 and 1
            x = x.astype(np.float32)
        if np.iscomplexobj(x):
            raise DataError(f"Arrays: samples in {p.name} are complex; cluster their real and imaginary parts as "
                            "features, e.g. np.concatenate([x.real, x.imag], axis=1)")
        if not np.issubdtype(x.dtype, np.number):
            raise DataError(f"Arrays: samples in {p.name} are not numeric (dtype {x.dtype})")
        if x.ndim == 1:
            x = x[:, None]
        _check_float32_range(x, p)
        if x.dtype == np.uint8:  # 8-bit images: kept as bytes, served in [0, 1]
            x = torch.from_numpy(np.ascontiguousarray(x))
        else:
            x = torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32)
        if y is not None:
            y, self._class_names = class_ids(np.asarray(y).reshape(-1), f"Arrays: labels of {p.name}")
            y = torch.from_numpy(y)
        return x, y

    def _statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation of each feature: this file's, computed at first use, unless a checkpoint
        restored the training data's (Lightning restores a datamodule's state after its setup)."""
        if self._mean is None:
            self._mean, self._std = _feature_statistics(self.x.cpu())
        return self._mean, self._std

    def batch_transform(self, x: torch.Tensor) -> torch.Tensor:
        x = _as_float(x)
        if self.standardize:
            mean, std = self._statistics()
            x = (x - mean.to(x.device)) / std.to(x.device)
        return x

    def check_scaling(self, state: dict, trained: str, applied: str = "") -> None:
        """Refuse to serve samples scaled otherwise than those ``trained`` was trained on, whose datamodule state
        is ``state``: standardized, or as they are (a state saved without statistics; before 2026-12-03 such a
        state was empty, and is not checked). Then match the feature columns to the state's names
        (:meth:`_match_features`)."""
        standardized = state.get("mean") is not None or "constant_scale" in state
        if standardized and not self.standardize:
            raise DataError(f"Arrays: {trained} was trained on standardized samples; set standardize: true{applied}")
        if self.standardize and not standardized and "shuffle_seed" in state:
            raise DataError(f"Arrays: {trained} was trained on samples as they are, not standardized; set "
                            "standardize: false")
        if state.get("feature_names") is not None:  # (not in checkpoints before 2026-12-05, nor of unnamed data)
            self._match_features(list(state["feature_names"]), trained)

    def _match_features(self, trained_names: list[str], trained: str) -> None:
        """Serve the feature columns in the order of ``trained_names``, the columns ``trained`` was trained on:
        the same names in another order are reordered (with a warning), other names refused; data without names is
        taken by position (with a warning: nothing checks it). Once matched, this data has those names, so that a
        second restore of the same state (the ``dcl`` command's, then Lightning's after setup) says nothing."""
        self._ensure_loaded()  # (which reads the names)
        here, name = self._feature_names, Path(self.path).name
        if here == trained_names:
            return
        if here is None:
            if tuple(self.x.shape[1:]) == (len(trained_names),):  # (another shape: refused as such, by the method)
                csv_file = Path(self.path).suffix.lower() in (".csv", ".txt")
                rank_zero_warn(f"Arrays: {name} does not name its features{' (no header row)' if csv_file else ''}; "
                               f"{trained} was trained on features named {_names(trained_names)}: its "
                               f"{len(trained_names)} columns are taken as those, in that order")
                self._feature_names = list(trained_names)
            return
        position = {n: i for i, n in enumerate(here)}
        missing = [n for n in dict.fromkeys(trained_names) if n not in position]
        trained_set = set(trained_names)
        unexpected = [n for n in position if n not in trained_set]
        twice = [n for n, count in (Counter(here) | Counter(trained_names)).items() if count > 1]
        if missing or unexpected or twice:
            found = ", ".join(([f"missing {_names(missing)}"] if missing else [])
                              + ([f"unexpected {_names(unexpected)}"] if unexpected else []))
            todo = ("rename the columns to their training names, and list columns that are not features in "
                    "ignore_columns" if missing and unexpected else "add the missing columns" if missing
                    else "list columns that are not features in ignore_columns (or set label_column / id_column)")
            if not found:  # the same names, one of them on several columns: which is which is unknown
                found = f"{_names(twice)} names several columns, which cannot be matched by name"
                todo = "write the feature columns in the training order"
            raise DataError(f"Arrays: the feature columns of {name} are not those {trained} was trained on: {found}; "
                            f"it takes the features {_names(trained_names)} (matched by name, in any order): {todo}")
        order = [position[n] for n in trained_names]
        rank_zero_warn(f"Arrays: {name} has the feature columns {trained} was trained on in another order; they are "
                       f"served in the training order ({_names(trained_names)})")
        self._x = self._x.index_select(1, torch.tensor(order, device=self._x.device))
        if self._mean is not None:  # this file's statistics, computed in its order (a checkpoint's replace them)
            self._mean, self._std = self._mean[order], self._std[order]
        self._feature_names = list(trained_names)

    def state_dict(self) -> dict:
        statistics = {"mean": self._mean, "std": self._std, "constant_scale": 1.0} if self.standardize else {}
        names = {"feature_names": list(self._feature_names)} if self._feature_names is not None else {}
        return {**super().state_dict(), **statistics, **names}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.check_scaling(state, "the checkpoint's model", " (the training data's statistics, saved in the "
                           "checkpoint, are applied)")
        if state.get("mean") is None:
            return
        if state["mean"].shape != self.x.shape[1:]:
            raise DataError(f"Arrays: {self.path}: the checkpoint's model was trained on samples of shape "
                            f"{tuple(state['mean'].shape)}, but this data has shape {tuple(self.x.shape[1:])}; use "
                            "data of the training shape (the same features)")
        self._mean, self._std = state["mean"], state["std"]
        if "constant_scale" not in state:  # saved before: the std of a constant feature was clamped at 1e-8
            self._std = self._std.masked_fill(self._std <= OLD_STD_FLOOR, 1.0)


def _names(names: list[str], limit: int = 8) -> str:
    """Column names for an error or warning, the first ``limit`` of many (e.g. the 784 pixels of an image)."""
    shown = ", ".join(map(repr, names[:limit]))
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _is_index(spec: str | int, header: list[str] | None) -> bool:
    """A column setting that is a position (a number not among the header's names), not a name."""
    return isinstance(spec, int) or (spec.lstrip("-").isdigit() and not (header and spec in header))


#: how to do without a named column that new data lacks (e.g. data to predict, without labels or names)
WITHOUT_COLUMN = {"label_column": "label_column: null for data without labels",
                  "id_column": "id_column: null for samples without names (the predictions then have no id column)",
                  "ignore_columns": "leave it out of ignore_columns"}


def _refuse_missing_columns(specs: list[tuple[str, str | int | None]], p: Path, header: list[str] | None) -> None:
    """One error naming every column the settings name that ``p`` lacks, and how to do without each: new data to
    predict often lacks both the labels and the ids of the training file, which were refused one at a time."""
    missing = [(setting, spec) for setting, spec in specs
               if spec is not None and not _is_index(spec, header) and (header is None or spec not in header)]
    if not missing:
        return
    named = " nor ".join(f"{spec!r} ({setting})" for setting, spec in missing)
    hints = ", ".join(dict.fromkeys(WITHOUT_COLUMN[setting] for setting, _ in missing))
    raise DataError(f"Arrays: no column {named} in {p.name}; its columns are {header or 'unnamed'}; set {hints}")


def _csv_column(spec: str | int, setting: str, p: Path, first: list[str], header: list[str] | None) -> int:
    """A CSV column given by name (one that :func:`_refuse_missing_columns` found) or index (negative: from the
    end), or one error naming what there is."""
    if _is_index(spec, header):
        spec = int(spec)
        if not -len(first) <= spec < len(first):
            raise DataError(f"Arrays: {setting} {spec} is out of range: {p.name} has {len(first)} columns")
        return spec % len(first)
    return header.index(spec)


def _np_load(p: Path):
    """``np.load`` without pickles (a file could run code), with one error naming the file when it holds objects."""
    try:
        return np.load(p, allow_pickle=False)
    except ValueError as err:
        raise DataError(f"Arrays: cannot read {p.name}: {err}; save numbers or fixed-width text, e.g. "
                        "np.save(path, np.asarray(values, dtype=np.float32)) or np.asarray(names, dtype=str)") from None
    except (EOFError, OSError, zipfile.BadZipFile) as err:  # an empty file, a cut copy, not numpy's format
        raise DataError(f"Arrays: cannot read {p.name} ({p.stat().st_size} bytes): it is empty, truncated or not a "
                        f"{p.suffix} file ({type(err).__name__}: {err}); write it again with "
                        f"{'np.savez' if p.suffix.lower() == '.npz' else 'np.save'}") from None


#: bytes of a .npy file read and converted to float32 at a time (:func:`_npy_samples`)
CONVERT_BLOCK_BYTES = 1 << 23


def _npy_samples(p: Path) -> np.ndarray:
    """The samples of a .npy file. Numbers of another dtype than float32 and uint8 (float64, integers), served as
    float32, are read and converted in blocks of rows of ``CONVERT_BLOCK_BYTES`` into one float32 array: loaded whole,
    then converted, both were held at once (float64: 1.5x the file). Anything else (and a file numpy cannot map, so
    that its error is :func:`_np_load`'s) is loaded as it is."""
    try:
        mapped = np.load(p, mmap_mode="r", allow_pickle=False)  # the header only: no page of the data is read
    except Exception:  # (numpy's error, with the file named: _np_load's)
        return _np_load(p)
    dtype = mapped.dtype
    if (dtype.names or dtype.kind not in "fiu" or dtype in (np.float32, np.uint8) or mapped.ndim == 0
            or mapped.size == 0):
        del mapped
        return _np_load(p)
    out = np.empty(mapped.shape, dtype=np.float32)
    per_row = math.prod(mapped.shape[1:])
    rows = max(1, CONVERT_BLOCK_BYTES // max(1, per_row * dtype.itemsize))
    if not mapped.flags.c_contiguous:  # Fortran order (rare): converted from the mapping, whose pages the kernel frees
        for start in range(0, len(out), rows):
            out[start:start + rows] = mapped[start:start + rows]
        return out
    offset = mapped.offset
    del mapped
    with open(p, "rb") as f:
        f.seek(offset)
        for start in range(0, len(out), rows):
            block = np.fromfile(f, dtype=dtype, count=min(rows, len(out) - start) * per_row)
            _check_float32_range(block, p)
            out[start:start + rows] = block.reshape((-1, *out.shape[1:]))
            del block  # (before the next one is read)
    return out


def _check_float32_range(values: np.ndarray, p: Path) -> None:
    """Finite float64 values beyond float32's range became inf in the networks' float32, and were then reported as
    "samples contain NaN or inf", after numpy's overflow warning (found by probing)."""
    if values.dtype.kind != "f" or values.dtype.itemsize <= 4 or values.size == 0:
        return
    limit = float(np.finfo(np.float32).max)
    flat = values.reshape(-1)
    largest = 0.0
    for start in range(0, len(flat), CONVERT_BLOCK_BYTES // 8):  # boolean masks of a block: no copy of the data
        part = flat[start:start + CONVERT_BLOCK_BYTES // 8]
        beyond = part[((part > limit) | (part < -limit)) & np.isfinite(part)]
        largest = max(largest, float(np.abs(beyond).max(initial=0.0)))
    if largest:
        raise DataError(f"Arrays: {p.name} holds values up to {largest:.3g}, beyond float32's range (3.4e38) in which "
                        "the networks compute; rescale the data first (e.g. divide it by a power of ten)")


def _array(value, p: Path, what: str) -> np.ndarray:
    """``value`` (a tensor, array or list) as a numpy array, or one error naming the file and the entry."""
    if isinstance(value, torch.Tensor) and value.dtype == torch.bfloat16:  # numpy has no bfloat16 (found by probing)
        value = value.float()
    try:
        return value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    except (TypeError, ValueError, RuntimeError) as err:
        raise DataError(f"Arrays: {what} in {p.name} is not an array ({err})") from None


def _as_text(read, p: Path, *args):
    """``read(p, *args)`` of a text file, or one error naming the file when it is not UTF-8."""
    try:
        return read(p, *args)
    except UnicodeDecodeError as err:
        raise DataError(f"Arrays: {p.name} is not UTF-8 text (byte {err.object[err.start:err.start + 1]!r} at "
                        f"position {err.start}); save it as UTF-8 (a spreadsheet's 'CSV UTF-8', pandas' to_csv) or "
                        "convert it, e.g. iconv -f latin1 -t utf-8") from None


def _read_labels_text(p: Path, n: int) -> np.ndarray:
    """A text file of labels: one per line (an empty line for an unknown one), after an optional header line
    (a name above numeric labels)."""
    lines = p.read_text(encoding=ENCODING).splitlines()
    if len(lines) == n + 1 and not is_number(lines[0].strip()) and all(is_number(v) for v in lines[1:] if v.strip()):
        lines = lines[1:]
    several = next((i for i, v in enumerate(lines) if "," in v), None)
    if several is not None:
        raise DataError(f"Arrays: {p.name} has several comma-separated columns (line {several + 1}: "
                        f"{lines[several][:60]!r}); a labels file holds one label per line (pandas: "
                        "series.to_csv(path, index=False, header=False)), or put the labels in the data's CSV and "
                        "set label_column")
    return np.array(lines, dtype=str)


def _feature_statistics(x: torch.Tensor, chunk: int = 65536) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation (float32) of each feature of the samples ``x``, accumulated in float64 in two
    passes over chunks of rows (no float64 copy of the data). A feature that is constant up to the rounding of that
    computation gets a standard deviation of 1, as scikit-learn's StandardScaler decides it (``_is_constant_feature``:
    a variance at most n eps var + (n eps mean)^2, so relative to the mean's magnitude): a floor such as 1e-8 would
    multiply new data whose constant differs by 1 / 1e-8."""
    n = len(x)
    mean = sum(_as_float(part).double().sum(0) for part in x.split(chunk)) / n
    squares = sum((_as_float(part).double() - mean).pow(2).sum(0) for part in x.split(chunk))
    var = squares / n
    eps = torch.finfo(torch.float64).eps
    constant = var <= n * eps * var + (n * eps * mean).pow(2)  # a single sample too
    std = (squares / max(n - 1, 1)).sqrt().masked_fill(constant, 1.0)
    return mean.float(), std.float()


def _as_float(x: torch.Tensor) -> torch.Tensor:
    """Samples as float32: 8-bit images scaled to [0, 1], anything else as stored (already float32)."""
    return x.to(torch.float32).div_(255.0) if x.dtype == torch.uint8 else x


def _not_numeric(p: Path, header: list[str] | None, features: list[int], err: ValueError, width: int) -> str:
    """The error for a CSV whose features do not parse: the first row of another length than the first row's
    ``width``, or the first cell that is not a number, and what to do."""
    with open(p, newline="", encoding=ENCODING) as f:
        for row_no, row in enumerate(csv.reader(f), start=1):
            if row and len(row) != width:
                return _other_width(p, row_no, len(row), width)
            if header and row_no == 1:
                continue
            for i in features:
                cell = row[i].strip() if i < len(row) else ""
                if not is_number(cell):
                    name = f"column {i} ({header[i]!r})" if header and i < len(header) else f"column {i}"
                    other = _other_separator(cell, spaces=len(row) == 1)
                    hint = (_separator_hint(other) if other
                            else f"; set label_column: {header[i] if header else i} if it holds the labels, "
                            f"id_column: {header[i] if header else i} if it names the samples, or list it in "
                            "ignore_columns"
                            if cell and cell.lower() not in MISSING
                            else "; the lines end with a comma: remove it, or set ignore_columns: [-1]"
                            if i == width - 1 and not (header[i] if header else "") and row_no <= 2
                            else "; fill in or drop the missing values")
                    shown = cell if len(cell) <= 40 else cell[:37] + "..."
                    return (f"Arrays: {p.resolve()}: {name} is not a number in row {row_no} ({shown!r}): the "
                            f"features must be numeric{hint}")
    return f"Arrays: {p.resolve()} is not a numeric CSV table ({err})"


def _loadtxt(p: Path, skiprows: int, dtype, usecols: list[int] | None) -> np.ndarray:
    """The rows of a CSV (after ``skiprows``) as a 2-D array, without numpy's warnings about empty lines (a blank
    last line of a spreadsheet's CSV: "Input line 4 contained no data and will not be counted towards
    `max_rows=50000`", a limit of numpy's own reading of text in chunks) and a file without rows (its caller's
    error)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"(Input line \d+|loadtxt: input) contained no data")
        return np.loadtxt(p, delimiter=",", skiprows=skiprows, usecols=usecols, ndmin=2, dtype=dtype, quotechar='"',
                          encoding=ENCODING)


#: bytes of a CSV read at a time when counting its rows' fields (:func:`_row_of_other_width`)
WIDTH_BLOCK_BYTES = 1 << 24


def _row_of_other_width(p: Path, width: int) -> str | None:
    """The error for the first row of a CSV whose number of fields is not the first row's ``width`` (None when they
    all have it; empty lines are skipped, as numpy skips them). A file without quotes and with only LF or CRLF line
    ends, the usual numeric CSV, is counted in blocks by numpy: a row's fields are its commas + 1 (Python's csv
    reader took 0.84 of 1.89 s of reading a 200,000 x 51 CSV); any other, by the csv reader."""
    line_no = 0
    with open(p, "rb") as f:
        carry = b""
        while True:
            block = f.read(WIDTH_BLOCK_BYTES)
            data = carry + block
            if not block:  # the last line, without a line end
                data += b"\n" if data else b""
            cut = data.rfind(b"\n") + 1
            chunk, carry = data[:cut], data[cut:]
            if b'"' in chunk or (b"\r" in chunk and chunk.count(b"\r") != chunk.count(b"\r\n")):
                return _row_of_other_width_by_csv(p, width)
            if chunk:
                lines = np.frombuffer(chunk, dtype=np.uint8)
                ends = np.flatnonzero(lines == ord("\n"))
                fields = np.diff(np.searchsorted(np.flatnonzero(lines == ord(",")), ends), prepend=0) + 1
                starts = np.concatenate(([0], ends[:-1] + 1))
                length = ends - starts - (lines[np.maximum(ends - 1, 0)] == ord("\r"))  # (without the line end)
                bad = np.flatnonzero((fields != width) & (length > 0))
                if len(bad):
                    return _other_width(p, line_no + int(bad[0]) + 1, int(fields[bad[0]]), width)
                line_no += len(ends)
            if not block:
                return None


def _row_of_other_width_by_csv(p: Path, width: int) -> str | None:
    with open(p, newline="", encoding=ENCODING) as f:
        for row_no, row in enumerate(csv.reader(f), start=1):
            if row and len(row) != width:
                return _other_width(p, row_no, len(row), width)
    return None


def _other_width(p: Path, row_no: int, fields: int, width: int) -> str:
    return (f"Arrays: {p.resolve()}: row {row_no} has {fields} fields, row 1 has {width}; every row needs the same "
            "columns")


def _pandas_column_numbers(row: list[str]) -> bool:
    """Whether a first row is the header pandas writes for a DataFrame made from an array: its column numbers 0,
    1, ..., after an empty cell when the row index was written too."""
    names = row[1:] if row and row[0] == "" else row
    return len(names) > 1 and names == [str(i) for i in range(len(names))]


def _other_separator(cell: str, spaces: bool = True) -> str | None:
    """The separator of another dialect that one cell holds: ``;`` (European spreadsheets), tab, ``|``, or (with
    ``spaces``: the cell is a whole row) spaces between numbers, numpy's ``savetxt`` default."""
    other = next((d for d in OTHER_SEPARATORS if d in cell), None)
    numbers = spaces and len(cell.split()) > 1 and all(is_number(t) for t in cell.split())
    return other or (" " if numbers else None)


def _separator_hint(separator: str) -> str:
    how = "np.savetxt(path, x, delimiter=',')" if separator == " " else "pandas' read_csv(sep=...).to_csv"
    return (f"; the file looks separated by {separator!r}: Arrays reads comma-separated values, so convert it (e.g. "
            f"{how})")
