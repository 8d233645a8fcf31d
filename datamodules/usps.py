"""USPS handwritten digits (the libsvm ``usps.bz2`` / ``usps.t.bz2`` files that torchvision downloads)."""

from __future__ import annotations

import bz2
import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

import torch
from torch import Tensor

from dcl.datamodule import DataError, SplitFilesDataModule
from dcl.files import download_lock

_FILES = {"train": "usps.bz2", "test": "usps.t.bz2"}
_URL = "https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/multiclass.html#usps"


class USPS(SplitFilesDataModule):
    """USPS: 16x16 grayscale digits, 10 classes; 7291 train + 2007 test = 9298 samples merged by default.
    torchvision maps the pixels from [-1, 1] to uint8 0..255; they are served scaled to [0, 1] per batch.

    Files: ``<data_dir>/usps/usps.bz2`` and ``<data_dir>/usps/usps.t.bz2`` (also accepted directly in
    ``data_dir``, torchvision's own layout). A download goes to ``<data_dir>/usps/``.

    ``batch_size``, ``n_clusters``, ``eval_batch_size``, ``seed`` and ``on_device`` are ``ClusteringDataModule``'s.

    Args:
        data_dir: the folder that holds ``usps/`` (or the files themselves).
        download: download the missing files with torchvision (needs internet).
        split: ``"all"`` (train then test), ``"train"`` or ``"test"``.
        flatten: serve 256-d vectors (True) or 1x16x16 images.
    """

    num_classes = 10

    def _folder(self, files: list[str]) -> Path:
        base = Path(self.data_dir).expanduser()
        candidates = [base / "usps", base]
        for folder in candidates:
            if all((folder / f).is_file() for f in files):
                return folder
        if self.download:
            return candidates[0]
        raise DataError(
            f"USPS: data not found: looked for {', '.join(str((c / f).resolve()) for c in candidates for f in files)}. "
            f"To get them: set data.init_args.download: true (downloads with torchvision into "
            f"{candidates[0].resolve()}, needs internet), or copy {' and '.join(files)} (from {_URL}) into "
            f"{candidates[0].resolve()}")

    def load(self):
        splits = self.splits()
        folder = self._folder([_FILES[s] for s in splits])
        with ThreadPoolExecutor(len(splits)) as pool:  # bz2 decompression releases the GIL
            parts = list(pool.map(lambda s: self._read(folder, s), splits))
        x = torch.cat([torch.from_numpy(p[0]) for p in parts])  # (N, 16, 16) uint8
        y = torch.cat([torch.from_numpy(p[1]) for p in parts])
        x = x.reshape(len(x), -1) if self.flatten else x.unsqueeze(1)
        return x, y

    def _read(self, folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
        """One split as torchvision decodes it (uint8 ``(v + 1) / 2 * 255`` of the [-1, 1] values, labels
        ``k - 1``), parsed with numpy (several times faster than torchvision's per-token Python parsing)."""
        path = folder / _FILES[split]
        if self.download and not path.is_file():
            from torchvision.datasets import USPS as TorchUSPS
            from torchvision.datasets.utils import download_url
            url, filename, md5 = TorchUSPS.split_list[split]
            try:
                with download_lock(folder):  # another process may have fetched it meanwhile
                    if not path.is_file():
                        download_url(url, str(folder), filename, md5=md5)
            except (RuntimeError, OSError, EOFError, ValueError) as e:
                raise DataError(f"USPS: could not download {path.resolve()}: {e}; copy the standard file from "
                                f"{_URL} there by hand") from e
        try:
            with bz2.open(path) as f:
                raw = f.read()
            # lines "label 1:v1 2:v2 ... 256:v256": with ':' as a separator, columns are label, (index, value)*256
            table = np.loadtxt(io.BytesIO(raw.replace(b":", b" ")), dtype=np.float32, ndmin=2)
        except (OSError, EOFError, ValueError) as e:
            raise DataError(f"USPS: cannot read {path.resolve()} ({e}); replace it with the standard file from "
                            f"{_URL}") from e
        if table.shape[1] != 513 or not (table[:, 1::2] == np.arange(1, 257, dtype=np.float32)).all():
            raise DataError(f"USPS: {path.resolve()} is not the standard dense USPS file (every line a label and "
                            f"256 values 1:v ... 256:v); replace it with the file from {_URL}")
        images = ((table[:, 2::2] + 1) / 2 * 255).astype(np.uint8).reshape(-1, 16, 16)
        return images, table[:, 0].astype(np.int64) - 1

    def batch_transform(self, x: Tensor) -> Tensor:
        return x.to(torch.float32).div_(255.0)
