"""CIFAR-10 and CIFAR-100 (the "python version" pickled batches that torchvision downloads)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from dcl.datamodule import DataError, SplitFilesDataModule, require_archive_files


class CIFAR10(SplitFilesDataModule):
    """CIFAR-10: 32x32 RGB, 10 classes; 50000 train + 10000 test, merged by default (as clustering papers do).
    Stored as uint8 ``3 x 32 x 32``, scaled to [0, 1] per batch.

    The files are torchvision's layout ``<data_dir>/cifar-10-batches-py/{data_batch_1..5,test_batch}``; they are
    read directly (torchvision is used to download them), so that no checksum pass runs on every load.
    The class names are in ``class_names``.

    ``batch_size``, ``n_clusters``, ``eval_batch_size``, ``seed`` and ``on_device`` are ``ClusteringDataModule``'s.

    Args:
        data_dir: the folder that holds ``cifar-10-batches-py/`` (or that folder itself).
        download: download and extract the archive there with torchvision when files are missing (internet).
        split: ``"all"`` (train then test), ``"train"`` or ``"test"``.
        flatten: serve 3072-d vectors instead of 3x32x32 images.
    """

    num_classes: int | None = 10
    _folder = "cifar-10-batches-py"
    _train_files = [f"data_batch_{i}" for i in range(1, 6)]
    _test_files = ["test_batch"]
    _meta = ("batches.meta", "label_names")
    _tv_name = "CIFAR10"

    def __init__(self, data_dir: str = "data", download: bool = False, split: str = "all", flatten: bool = False,
                 batch_size: int = 256, n_clusters: int | None = None, eval_batch_size: int | None = None,
                 seed: int | None = None, on_device: bool = False) -> None:
        super().__init__(data_dir, download, split, flatten, batch_size, n_clusters, eval_batch_size, seed, on_device)

    def _label_key(self) -> str:
        return "labels"

    def _files(self) -> list[str]:
        return [f for s in self.splits() for f in (self._train_files if s == "train" else self._test_files)]

    def _resolve(self) -> Path:
        return require_archive_files(type(self).__name__, self.data_dir, self._folder, self._files(),
                                     download=self.download, torchvision_name=self._tv_name,
                                     source="the python version, https://www.cs.toronto.edu/~kriz/cifar.html")

    def _read(self, path: Path) -> dict:
        try:
            with open(path, "rb") as f:
                return pickle.load(f, encoding="latin1")
        except Exception as e:  # truncated or not a pickle
            raise DataError(f"{type(self).__name__}: cannot read {path.resolve()} ({type(e).__name__}: {e}); "
                            "replace it with the file from the original archive") from e

    def load(self):
        folder = self._resolve()
        key = self._label_key()
        xs, ys = [], []
        for name in self._files():
            entry = self._read(folder / name)
            if "data" not in entry or key not in entry:
                raise DataError(f"{type(self).__name__}: {(folder / name).resolve()} has no 'data' or {key!r} "
                                f"entry (keys {sorted(entry)}); it is not a CIFAR python batch")
            data = np.asarray(entry["data"], dtype=np.uint8)
            labels = np.asarray(entry[key], dtype=np.int64)
            if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
                raise DataError(f"{type(self).__name__}: {(folder / name).resolve()} holds data of shape "
                                f"{data.shape} with {len(labels)} labels; expected (N, 3072) and N labels")
            xs.append(data)
            ys.append(labels)
        meta_file, meta_key = self._meta
        if (folder / meta_file).is_file():
            meta = self._read(folder / meta_file)
            self._class_names = list(meta.get(meta_key, [])) or None
        x = torch.from_numpy(np.concatenate(xs))  # rows are R(1024) G(1024) B(1024): already CHW
        x = x if self.flatten else x.reshape(len(x), 3, 32, 32)
        return x, torch.from_numpy(np.concatenate(ys))

    def batch_transform(self, x: Tensor) -> Tensor:
        return x.to(torch.float32).div_(255.0)


class CIFAR100(CIFAR10):
    """CIFAR-100: 32x32 RGB, 50000 + 10000 images, with 100 fine classes or 20 coarse superclasses.

    Clustering papers use the 20 superclasses (``label_type: coarse``, the default), which torchvision does
    not expose: they are read from the ``coarse_labels`` entry of the pickled ``train``/``test`` files in
    ``<data_dir>/cifar-100-python/``. Other arguments as :class:`CIFAR10`.

    Args:
        label_type: ``"coarse"`` (20 superclasses) or ``"fine"`` (100 classes).
    """

    _folder = "cifar-100-python"
    _train_files = ["train"]
    _test_files = ["test"]
    _tv_name = "CIFAR100"

    def __init__(self, data_dir: str = "data", download: bool = False, split: str = "all", flatten: bool = False,
                 label_type: str = "coarse", batch_size: int = 256, n_clusters: int | None = None,
                 eval_batch_size: int | None = None, seed: int | None = None, on_device: bool = False) -> None:
        super().__init__(data_dir, download, split, flatten, batch_size, n_clusters, eval_batch_size, seed,
                         on_device)
        if label_type not in ("coarse", "fine"):
            raise DataError(f"CIFAR100: label_type must be 'coarse' or 'fine', got {label_type!r}")
        self.label_type = label_type
        self.num_classes = 20 if label_type == "coarse" else 100
        self._meta = ("meta", f"{label_type}_label_names")

    def _label_key(self) -> str:
        return f"{self.label_type}_labels"

    @staticmethod
    def fine_to_coarse(data_dir: str | Path) -> np.ndarray:
        """The standard map of the 100 fine classes to the 20 superclasses, built from the ``train`` file
        (``m[fine] = coarse``)."""
        dm = CIFAR100(data_dir, split="train")
        entry = dm._read(dm._resolve() / "train")
        m = np.full(100, -1, dtype=np.int64)
        m[np.asarray(entry["fine_labels"])] = np.asarray(entry["coarse_labels"])
        return m
