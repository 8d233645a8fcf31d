"""STL-10 (the binary files of ``stl10_binary/`` that torchvision downloads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dcl.datamodule import ClusteringDataModule, DataError, require_archive_files

_SAMPLE_BYTES = 3 * 96 * 96
_CHUNK = 2048  # images converted at a time (bounds the extra memory of the transpose / resize)


class STL10(ClusteringDataModule):
    """STL-10: 96x96 RGB, 10 classes; the labeled train (5000) and test (8000) splits merged, 13000 samples.

    Optionally followed by the 100000 unlabeled images (label -1). Stored as uint8 ``3 x S x S``, scaled to [0, 1]
    per batch.

    Files: ``<data_dir>/stl10_binary/{train_X,train_y,test_X,test_y,unlabeled_X}.bin`` (torchvision's layout),
    read directly with numpy (no checksum pass over the 2.6 GB on every load); torchvision downloads them.

    ``batch_size``, ``n_clusters``, ``eval_batch_size``, ``seed`` and ``on_device`` are ``ClusteringDataModule``'s.

    Args:
        data_dir: the folder that holds ``stl10_binary/`` (or that folder itself).
        download: download and extract the 2.6 GB archive there with torchvision when files are missing.
        include_unlabeled: append the 100000 unlabeled images (about 2.8 GB of memory at 96x96).
        image_size: resize to ``image_size`` x ``image_size`` once at load time (bilinear, antialiased);
            None keeps 96.
        flatten: serve vectors instead of ``3 x S x S`` images.
    """

    num_classes = 10
    _folder = "stl10_binary"

    def __init__(self, data_dir: str = "data", download: bool = False, include_unlabeled: bool = False,
                 image_size: int | None = None, flatten: bool = False, batch_size: int = 256,
                 n_clusters: int | None = None, eval_batch_size: int | None = None, seed: int | None = None,
                 on_device: bool = False) -> None:
        super().__init__(batch_size, n_clusters, eval_batch_size, seed, on_device)
        if image_size is not None and image_size < 1:
            raise DataError(f"STL10: image_size must be >= 1 or None, got {image_size}")
        self.data_dir = data_dir
        self.download = download
        self.include_unlabeled = include_unlabeled
        self.image_size = image_size
        self.flatten = flatten

    def _needed(self) -> list[str]:
        files = ["train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin"]
        return files + ["unlabeled_X.bin"] if self.include_unlabeled else files

    def _resolve(self) -> Path:
        return require_archive_files("STL10", self.data_dir, self._folder, self._needed(), download=self.download,
                                     torchvision_name="STL10", source="2.6 GB, https://cs.stanford.edu/~acoates/stl10/")

    def _count(self, path: Path) -> int:
        nbytes = path.stat().st_size
        if nbytes == 0 or nbytes % _SAMPLE_BYTES:
            raise DataError(f"STL10: {path.resolve()} has {nbytes} bytes, not a positive multiple of "
                            f"{_SAMPLE_BYTES} (one 3x96x96 image); the file is truncated or not an STL-10 file")
        return nbytes // _SAMPLE_BYTES

    def _images_into(self, path: Path, out: Tensor) -> None:
        """Decode ``path`` into ``out`` chunk by chunk (no second full-size copy)."""
        raw = np.memmap(path, dtype=np.uint8, mode="r").reshape(-1, 3, 96, 96)
        s = out.shape[-1]
        for i in range(0, len(raw), _CHUNK):
            # the files are column-major per channel: transposing H and W gives upright images
            chunk = torch.from_numpy(np.ascontiguousarray(raw[i:i + _CHUNK].transpose(0, 1, 3, 2)))
            if s != 96:
                chunk = F.interpolate(chunk.float(), size=(s, s), mode="bilinear", align_corners=False,
                                      antialias=True).round_().clamp_(0, 255).to(torch.uint8)
            out[i:i + len(chunk)] = chunk
        del raw

    def _labels(self, path: Path, n: int) -> Tensor:
        y = np.fromfile(path, dtype=np.uint8).astype(np.int64) - 1  # stored 1..10
        if len(y) != n:
            raise DataError(f"STL10: {path.resolve()} has {len(y)} labels for {n} images in "
                            f"{path.with_name(path.name.replace('_y', '_X')).resolve()}")
        if len(y) and (y.min() < 0 or y.max() > 9):
            raise DataError(f"STL10: {path.resolve()} has labels outside 1..10")
        return torch.from_numpy(y)

    def load(self):
        folder = self._resolve()
        parts = ["train", "test"] + (["unlabeled"] if self.include_unlabeled else [])
        counts = [self._count(folder / f"{p}_X.bin") for p in parts]
        s = self.image_size or 96
        x = torch.empty((sum(counts), 3, s, s), dtype=torch.uint8)
        ys, start = [], 0
        for part, n in zip(parts, counts):
            self._images_into(folder / f"{part}_X.bin", x[start:start + n])
            ys.append(torch.full((n,), -1, dtype=torch.long) if part == "unlabeled"
                      else self._labels(folder / f"{part}_y.bin", n))
            start += n
        names = folder / "class_names.txt"
        if names.is_file():
            self._class_names = names.read_text().splitlines()
        if self.flatten:
            x = x.reshape(len(x), -1)
        return x, torch.cat(ys)

    def batch_transform(self, x: Tensor) -> Tensor:
        return x.to(torch.float32).div_(255.0)
