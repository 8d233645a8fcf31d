"""MNIST and Fashion-MNIST (torchvision's on-disk layout ``<data_dir>/<name>/raw/``)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from dcl.datamodule import DataError, SplitFilesDataModule
from dcl.files import download_lock

_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
#: what torchvision's reader needs, whichever split it reads: it checks all four files first ("Dataset not found")
_NEEDED = (*_FILES["train"], *_FILES["test"])


class MNIST(SplitFilesDataModule):
    """MNIST handwritten digits: 28x28 grayscale, 10 classes; 60000 train + 10000 test, merged by default.

    Merged as deep clustering papers do. Stored as uint8, scaled to [0, ``scale``] (x / 255 * scale) per batch.

    Files are read from torchvision's layout ``<data_dir>/MNIST/raw/train-images-idx3-ubyte`` etc.

    ``batch_size``, ``n_clusters``, ``eval_batch_size``, ``seed`` and ``on_device`` are ``ClusteringDataModule``'s.

    Args:
        data_dir: the folder that holds ``MNIST/raw/`` (``FashionMNIST/raw/`` for Fashion-MNIST).
        download: download the files there with torchvision when they are missing (needs internet).
        split: ``"all"`` (train then test, 70000 samples), ``"train"`` (60000) or ``"test"`` (10000).
        flatten: serve 784-d vectors (True) or 1x28x28 images.
        scale: the largest pixel value served (1: [0, 1], as DEC-keras and DEKM; the DEC paper's code feeds
            0.02 x the 0-255 pixels, ``scale: 5.1``, and so did IDEC's: its ``datasets.py`` divides by 50).
    """

    num_classes = 10
    #: torchvision class name, also the folder name under ``data_dir``
    _name = "MNIST"
    _homepage = "http://yann.lecun.com/exdb/mnist/"

    def __init__(self, data_dir: str = "data", download: bool = False, split: str = "all", flatten: bool = True,
                 scale: float = 1.0, batch_size: int = 256, n_clusters: int | None = None,
                 eval_batch_size: int | None = None, seed: int | None = None, on_device: bool = False) -> None:
        super().__init__(data_dir, download, split, flatten, batch_size, n_clusters, eval_batch_size, seed, on_device)
        if not scale > 0:
            raise DataError(f"{type(self).__name__}: scale must be > 0 (the largest pixel value served), got {scale}")
        self.scale = scale

    def _root(self) -> Path:
        """``data_dir``, also accepting a path that points at ``<name>/`` or ``<name>/raw/`` itself."""
        d = Path(self.data_dir).expanduser()
        if d.name == "raw" and d.parent.name == self._name:
            return d.parent.parent
        if d.name == self._name and (d / "raw").is_dir():
            return d.parent
        return d

    def _check_files(self, root: Path) -> None:
        raw = root / self._name / "raw"
        missing = [f for f in _NEEDED if not (raw / f).is_file()]
        legacy = root / self._name / "processed"  # torchvision's old cached format, still read by torchvision
        if not missing or all((legacy / f).is_file() for f in ("training.pt", "test.pt")):
            return
        gz = [f + ".gz" for f in missing if (raw / (f + ".gz")).is_file()]
        hint = (f" ({', '.join(gz)} found: gunzip them there, or set download: true, which extracts them)"
                if gz else "")
        raise DataError(
            f"{type(self).__name__}: data not found in {raw.resolve()}: missing "
            f"{', '.join(str(raw / f) for f in missing)}{hint}. To get them: set data.init_args.download: true "
            f"(downloads with torchvision, needs internet), or copy the standard uncompressed files "
            f"({', '.join(_NEEDED)}, from {self._homepage}) into {raw.resolve()}, or point data_dir at the folder "
            f"that holds {self._name}/raw/")

    def load(self):
        from torchvision import datasets

        root = self._root()
        if not self.download:
            self._check_files(root)  # before torchvision, so that the user sees where we looked and what to do
        cls = getattr(datasets, self._name)
        xs, ys = [], []
        for s in self.splits():
            try:
                if self.download:  # (torchvision downloads what it does not find, inside the lock)
                    with download_lock(root / self._name):
                        ds = cls(root=str(root), train=s == "train", download=True)
                else:
                    ds = cls(root=str(root), train=s == "train")
            except (RuntimeError, OSError) as e:  # download failed (offline, mirror down, bad checksum)
                raise DataError(f"{type(self).__name__}: could not download/read the data into "
                                f"{(root / self._name / 'raw').resolve()}: {e}; copy the standard files "
                                f"{', '.join(_NEEDED)} there by hand") from e
            except (ValueError, AssertionError, IndexError) as e:  # torchvision's reader on a file that is not one
                # (an empty or interrupted copy: "invalid literal for int() with base 16", found by probing)
                files = ", ".join(str((root / self._name / "raw" / f).resolve()) for f in _FILES[s])
                raise DataError(f"{type(self).__name__}: {files} are not the {self._name} idx files torchvision "
                                f"reads ({type(e).__name__}: {str(e)[:80]}): an empty or interrupted copy? copy the "
                                f"standard uncompressed files ({self._homepage}) again") from e
            xs.append(ds.data)
            ys.append(ds.targets)
        x = torch.cat(xs).to(torch.uint8)  # (N, 28, 28)
        x = x.reshape(len(x), -1) if self.flatten else x.unsqueeze(1)
        return x, torch.cat(ys).long()

    def batch_transform(self, x: Tensor) -> Tensor:
        x = x.to(torch.float32).div_(255.0)
        return x if self.scale == 1 else x.mul_(self.scale)


class FashionMNIST(MNIST):
    """Fashion-MNIST: Zalando's 28x28 grayscale clothing images, 10 classes, 60000 + 10000 merged by default.

    The same format and arguments as :class:`MNIST` (files in ``<data_dir>/FashionMNIST/raw/``)."""

    _name = "FashionMNIST"
    _homepage = "https://github.com/zalandoresearch/fashion-mnist"
