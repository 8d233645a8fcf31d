"""COIL-20 (processed): 20 objects x 72 poses, 128x128 grayscale PNGs."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import torch
from torch import Tensor

from dcl.datamodule import ClusteringDataModule, DataError
from dcl.datamodules.image_folder import load_images

_FILE = re.compile(r"^obj(\d+)__(\d+)\.png$", re.IGNORECASE)
FOLDER = "coil-20-proc"
HOW_TO_GET = ("download coil-20-proc.zip from https://www.cs.columbia.edu/CAVE/software/softlib/coil-20.php "
              f"and unzip it so that <data_dir>/{FOLDER}/obj1__0.png ... obj20__71.png exist")


class COIL20(ClusteringDataModule):
    """COIL-20 processed images: 20 objects x 72 poses, 1440 grayscale samples (the 128x128 release).

    Files ``obj{k}__{i}.png`` (k = 1..20 objects, i = 0..71 poses), label ``k - 1``, ordered by (k, i). Pixels
    scaled to [0, 1] per batch. No automatic download.

    ``batch_size``, ``n_clusters``, ``eval_batch_size``, ``seed`` and ``on_device`` are ``ClusteringDataModule``'s.

    Args:
        data_dir: the folder that contains ``coil-20-proc/`` (or the ``coil-20-proc`` folder itself).
        image_size: side of the served images; 128 is the original, DEKM and others use 28 (bilinear,
            antialiased resize).
        flatten: serve ``image_size**2`` vectors instead of ``1 x image_size x image_size`` images.
    """

    num_classes = 20

    def __init__(self, data_dir: str = "data", image_size: int = 128, flatten: bool = False,
                 batch_size: int = 256, n_clusters: int | None = None, eval_batch_size: int | None = None,
                 seed: int | None = None, on_device: bool = False) -> None:
        super().__init__(batch_size, n_clusters, eval_batch_size, seed, on_device)
        if image_size < 1:
            raise DataError(f"COIL20: image_size must be >= 1, got {image_size}")
        self.data_dir = data_dir
        self.image_size = image_size
        self.flatten = flatten

    def _files(self) -> list[tuple[int, int, Path]]:
        base = Path(self.data_dir).expanduser()
        candidates = [base / FOLDER, base]
        for folder in candidates:
            if folder.is_dir():
                found = [(int(m[1]), int(m[2]), p) for p in folder.iterdir() if (m := _FILE.match(p.name))]
                if found:
                    return sorted(found, key=lambda t: (t[0], t[1]))
        looked = " or ".join(str(c.resolve()) for c in candidates)
        raise DataError(f"COIL20: no images obj{{k}}__{{i}}.png (e.g. {FOLDER}/obj1__0.png) in {looked}; "
                        f"{HOW_TO_GET}")

    def load(self):
        files = self._files()
        objects = sorted({k for k, _, _ in files})
        if len(files) != 1440 or objects != list(range(1, 21)):
            warnings.warn(f"COIL20: found {len(files)} images of {len(objects)} objects in "
                          f"{files[0][2].parent.resolve()}; the full data set has 1440 images of 20 objects",
                          stacklevel=2)
        if objects[0] < 1 or objects[-1] > 20:
            raise DataError(f"COIL20: object numbers must be 1..20, found {objects[0]}..{objects[-1]} in "
                            f"{files[0][2].parent.resolve()}")
        x = load_images([p for _, _, p in files], self.image_size, grayscale=True, source="COIL20")
        y = torch.tensor([k - 1 for k, _, _ in files], dtype=torch.long)
        if self.flatten:
            x = x.reshape(len(x), -1)
        return x, y

    def batch_transform(self, x: Tensor) -> Tensor:
        return x.to(torch.float32).div_(255.0)
