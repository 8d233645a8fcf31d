"""The user's own images: one subfolder per class, or one flat folder of unlabeled images."""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from dcl.datamodule import ClusteringDataModule, DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


#: Pillow modes of at most 8 bits per channel, which Pillow converts to L or RGB as they are (alpha dropped)
EIGHT_BIT_MODES = ("1", "L", "P", "LA", "PA", "La", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "HSV")
#: what to do with an image of another mode (e.g. 32-bit float TIFFs, Pillow mode F)
CONVERT_HINT = ("convert it to an 8- or 16-bit image (its values scaled to 0..255 or 0..65535), or save the pixel "
                "values of all images as one N x C x H x W array and read it with the Arrays datamodule")


def _to_8_bits(img: Image.Image, path: Path, source: str) -> Image.Image:
    """A 16-bit grayscale image (Pillow's ``I;16*`` modes, or ``I`` holding values above 255) scaled to 8 bits:
    Pillow's own conversion clips such pixels at 255 instead of scaling them. Any other mode than these and the
    8-bit ones is refused: Pillow's conversion of 32-bit floats (mode F) clips them at 0..255, so values in 0..1
    read almost black."""
    if img.mode in EIGHT_BIT_MODES:
        return img
    if not (img.mode.startswith("I;16") or img.mode == "I"):
        what = " (32-bit floating-point pixels)" if img.mode == "F" else ""
        raise DataError(f"{source}: cannot read image {path} faithfully: its Pillow mode is {img.mode}{what}, and "
                        f"{source} reads 8- and 16-bit images; {CONVERT_HINT}")
    pixels = np.asarray(img).astype(np.int64)
    lo, hi = int(pixels.min()), int(pixels.max())
    if lo < 0 or hi > 65535:
        raise DataError(f"{source}: cannot read image {path} faithfully: its pixels (Pillow mode {img.mode}) hold "
                        f"values in [{lo}, {hi}], outside the 16-bit range 0..65535; {CONVERT_HINT}")
    if img.mode == "I" and hi <= 255:
        return Image.fromarray(pixels.astype(np.uint8), "L")
    return Image.fromarray(((pixels * 255 + 32767) // 65535).astype(np.uint8), "L")


def _read_one(path: Path, size: int | None, mode: str, source: str) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img = _to_8_bits(img, path, source).convert(mode)
            if size is not None and img.size != (size, size):
                # Pillow's bilinear resize widens its support when shrinking, i.e. it antialiases
                img = img.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(img, dtype=np.uint8)
    except DataError:  # a ValueError: not to be read as an unreadable file below
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{source}: cannot read image {path}: {e}; remove or replace the file") from e


def load_images(paths: Sequence[Path], size: int | None, grayscale: bool, source: str,
                threads: int | None = None) -> Tensor:
    """Decode ``paths`` into one uint8 tensor ``(N, C, size, size)`` (C = 1 if ``grayscale`` else 3).

    Every image is converted to L or RGB and resized to ``size`` x ``size`` (bilinear, antialiased); with
    ``size=None`` the images are kept as they are and must all have the same size. Decoding runs in a few
    threads (Pillow releases the GIL while decoding). An unreadable file raises a DataError naming it, prefixed by
    ``source``, the datamodule that reads the images.
    """
    mode = "L" if grayscale else "RGB"
    if not paths:
        raise DataError(f"{source}: no images to load")
    first = _read_one(paths[0], size, mode, source)
    h, w = first.shape[:2]
    out = np.empty((len(paths), h, w) if grayscale else (len(paths), h, w, 3), dtype=np.uint8)
    out[0] = first

    def work(i: int) -> None:
        arr = _read_one(paths[i], size, mode, source)
        if arr.shape != first.shape:
            raise DataError(f"{source}: image {paths[i]} has size {arr.shape[1]}x{arr.shape[0]} but {paths[0]} has "
                            f"{w}x{h}; set image_size to resize all images to one size")
        out[i] = arr

    threads = threads or min(8, os.cpu_count() or 1)
    if threads > 1 and len(paths) > 64:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(work, range(1, len(paths))))  # list() re-raises the first error
    else:
        for i in range(1, len(paths)):
            work(i)
    x = torch.from_numpy(out)
    return x.unsqueeze(1) if grayscale else x.permute(0, 3, 1, 2).contiguous()


class ImageFolder(ClusteringDataModule):
    """The user's own images from ``root``, all decoded into memory once (uint8), scaled to [0, 1] per batch.
    8- and 16-bit images are read (16-bit grayscale scaled to 8 bits); other modes, such as 32-bit float TIFFs,
    are refused with an error naming the file.

    Layouts: ``root/<class name>/<image>`` (one subfolder per class, searched recursively; labels are the
    indices of the sorted class names, kept in ``class_names``) or ``root/<image>`` (a flat folder:
    unlabeled, so set ``n_clusters``). Hidden files and folders (names starting with ".") are skipped.
    The file of each sample, in order, is in ``files``; ``dcl predict`` writes it in a ``file`` column.

    ``batch_size``, ``n_clusters``, ``eval_batch_size``, ``seed`` and ``on_device`` are ``ClusteringDataModule``'s.

    Args:
        root: the folder of images.
        image_size: every image is resized to ``image_size`` x ``image_size`` (bilinear, antialiased);
            None keeps the original size (all images must then have the same size).
        grayscale: load as one channel (L) instead of RGB.
        flatten: serve vectors of ``C*image_size*image_size`` values instead of ``C x H x W`` images.
        extensions: file name endings (case-insensitive) that count as images.
    """

    def __init__(self, root: str, image_size: int | None = 32, grayscale: bool = False, flatten: bool = False,
                 extensions: list[str] | tuple[str, ...] = IMAGE_EXTENSIONS, batch_size: int = 256,
                 n_clusters: int | None = None, eval_batch_size: int | None = None, seed: int | None = None,
                 on_device: bool = False) -> None:
        super().__init__(batch_size, n_clusters, eval_batch_size, seed, on_device)
        if image_size is not None and image_size < 1:
            raise DataError(f"ImageFolder: image_size must be >= 1 or None, got {image_size}")
        self.root = root
        self.image_size = image_size
        self.grayscale = grayscale
        self.flatten = flatten
        self.extensions = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
        self.files: list[Path] = []

    def _is_image(self, p: Path) -> bool:
        return p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(self.extensions)

    def _images_under(self, folder: Path) -> list[Path]:
        """The images in ``folder`` and its subfolders, following links to folders, but not back to a folder
        read already or one holding ``folder`` (a link loop read every image again at each turn)."""
        found, top = [], folder.resolve()
        seen = {top}
        for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
            keep = []
            for d in sorted(d for d in dirnames if not d.startswith(".")):
                real = (Path(dirpath) / d).resolve()
                if real in seen or top.is_relative_to(real):
                    warnings.warn(f"ImageFolder: skipped {Path(dirpath) / d}: a link back to {real}, read already")
                    continue
                seen.add(real)
                keep.append(d)
            dirnames[:] = keep
            found += [Path(dirpath) / f for f in sorted(filenames) if self._is_image(Path(dirpath) / f)]
        return found

    def _scan(self) -> tuple[list[Path], list[int] | None, list[str] | None]:
        root = Path(self.root).expanduser()
        if not root.is_dir():
            raise DataError(f"ImageFolder: {root.resolve()} is not a folder; set root to a folder of images "
                            "(one subfolder per class, or a flat folder)")
        entries = sorted(root.iterdir(), key=lambda p: p.name)
        subdirs = [p for p in entries if p.is_dir() and not p.name.startswith(".")]
        top_images = [p for p in entries if self._is_image(p)]
        if subdirs:  # one subfolder per class
            files, labels, names = [], [], []
            for d in subdirs:
                imgs = self._images_under(d)
                if not imgs:
                    raise DataError(f"ImageFolder: class folder {d.resolve()} holds no images (extensions "
                                    f"{', '.join(self.extensions)}); add images or remove the folder")
                labels += [len(names)] * len(imgs)
                names.append(d.name)
                files += imgs
            if top_images:
                warnings.warn(f"ImageFolder: {root.resolve()} has class subfolders; the {len(top_images)} "
                              "images directly in it are ignored", stacklevel=3)
            return files, labels, names
        if not top_images:
            raise DataError(f"ImageFolder: no images (extensions {', '.join(self.extensions)}) in "
                            f"{root.resolve()}")
        return top_images, None, None

    def load(self):
        files, labels, names = self._scan()
        x = load_images(files, self.image_size, self.grayscale, "ImageFolder")
        self.files, self._class_names = files, names
        self._sample_ids = ("file", [str(f) for f in files])
        if names is not None:
            self.num_classes = len(names)
        if self.flatten:
            x = x.reshape(len(x), -1)
        return x, (None if labels is None else torch.tensor(labels, dtype=torch.long))

    def batch_transform(self, x: Tensor) -> Tensor:
        return x.to(torch.float32).div_(255.0)
