"""The datamodule contract: every sample in memory, served by index slicing.

Deep clustering is transductive: the data that is clustered is the data trained on. A datamodule therefore
offers a shuffled training loader and an ordered loader over *all* samples (validation metrics, clustering
callbacks, prediction). Subclasses implement only :meth:`ClusteringDataModule.load`.

Batches are dicts ``{"x": inputs, "y": labels (-1 when unknown), "index": sample indices}``.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Callable, Iterator

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor

from dcl.distributed import rank_world
from dcl.files import download_lock


class DataError(ValueError):
    """Bad input data: raised before any training starts, with what is wrong and what to do."""


class _EpochSampler:
    """Holds the epoch so that Lightning's ``set_epoch`` reaches our shuffling (exact resume)."""

    def __init__(self) -> None:
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


def epoch_batches(n_samples: int, world: int, batch_size: int) -> int:
    """Batches a training epoch of ``n_samples`` gives each of ``world`` processes: the shuffled shards padded to
    equal ones, as :class:`InMemoryLoader` does (its ordered passes' shards are at most as large)."""
    return math.ceil(math.ceil(n_samples / world) / batch_size)


def check_resume_position(state: dict[str, int], world: int, batch_size: int, n_samples: int) -> None:
    """Refuse to resume the training loader's ``state`` (an :class:`InMemoryLoader`'s, in a checkpoint) of
    ``n_samples`` in ``world`` processes with ``batch_size``: the batches a rank has taken locate the epoch's next
    sample only for the world size and batch size that took them; with others the resumed epoch would train some
    samples twice and skip others. A checkpoint taken after an epoch's last batch resumes with any. (Checked by the
    ``dcl`` command before it starts the trainer too.)"""
    saved = (state.get("world", world), state.get("batch_size", batch_size))
    if 0 < state["batches"] < epoch_batches(n_samples, *saved) and saved != (world, batch_size):
        raise DataError(
            f"this checkpoint was taken inside an epoch (after {state['batches']} batches) of a fit in "
            f"{saved[0]} process(es) with batch size {saved[1]}; resuming it in {world} with batch size "
            f"{batch_size} would train part of that epoch twice and skip another: resume it with the same "
            f"devices and batch size, or from a checkpoint taken at an epoch's end")


class InMemoryLoader:
    """Batches as index slices of in-memory tensors (no per-sample ``__getitem__``, no worker processes).

    Under DDP each rank takes its own shard: for shuffling, a seeded permutation of all samples that every
    rank draws identically (padded by wrap-around so that ranks have equal step counts, as
    ``DistributedSampler`` does); for ordered passes, contiguous shards without padding, so that each
    sample is seen exactly once and gathered results can be put back in order.

    Resumable (``state_dict`` / ``load_state_dict``, which Lightning saves in checkpoints): a fit resumed from a
    checkpoint taken inside an epoch goes on with that epoch's next batch, as the uninterrupted fit does.

    ``rows`` (sorted sample indices) restricts an ordered pass to those samples, sharded over the ranks as all of
    them would be, without copying them.
    """

    def __init__(self, x: Tensor, y: Tensor, batch_size: int, shuffle: bool, seed: int = 0,
                 transform: Callable[[Tensor], Tensor] | None = None, rows: Tensor | None = None) -> None:
        if rows is not None and shuffle:
            raise ValueError("InMemoryLoader: rows restrict an ordered pass (shuffle=False)")
        self.x, self.y, self.rows = x, y, rows
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.transform = transform
        self.sampler = _EpochSampler()
        self.batch_sampler = None  # Lightning inspects these two attributes of its loaders
        # batches of the current pass handed out (Lightning fetches a sized loader's batches as it trains them,
        # none ahead), and those the next pass skips (a restored state)
        self._yielded = self._resume_at = 0
        self._resume_epoch = -1

    def _indices(self) -> Tensor:
        n = len(self.x)
        rank, world = rank_world()
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.sampler.epoch)
            perm = torch.randperm(n, generator=g)
            per_rank = math.ceil(n / world)
            if per_rank * world > n:  # pad by wrap-around so every rank runs the same number of steps
                perm = torch.cat([perm, perm[: per_rank * world - n]])
            return perm[rank::world]
        if self.rows is not None:
            return self.rows[ordered_shard(len(self.rows), rank, world)]
        return ordered_shard(n, rank, world)

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        idx = self._indices()
        contiguous = not self.shuffle and self.rows is None
        # (a restored pass only: Lightning goes on with the next epoch from a fit that max_steps cut inside one)
        first = self._resume_at if self.sampler.epoch == self._resume_epoch else 0
        self._yielded, self._resume_at = first, 0
        for start in range(first * self.batch_size, len(idx), self.batch_size):
            b = idx[start:start + self.batch_size]
            if contiguous:  # views, no copy
                lo, hi = int(b[0]), int(b[-1]) + 1
                x, y = self.x[lo:hi], self.y[lo:hi]
            else:
                x, y = self.x[b], self.y[b]
            if self.transform is not None:
                x = self.transform(x)
            self._yielded += 1
            yield {"x": x, "y": y, "index": b.to(self.x.device)}

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "batches": self._yielded, "world": rank_world()[1],
                "batch_size": self.batch_size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        check_resume_position(state, rank_world()[1], self.batch_size, len(self.x))
        self.sampler.epoch = self._resume_epoch = state["epoch"]
        self._resume_at = state["batches"]

    @property
    def num_rows(self) -> int:
        """Samples this loader yields (on this rank) per pass."""
        return len(self._indices())

    def __len__(self) -> int:
        return math.ceil(len(self._indices()) / self.batch_size)


MISSING = ("na", "n/a", "nan")  # how unknown values are written in text files


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _missing_object(value) -> bool:
    """None, NaN or pandas' NA (whose truth value is ambiguous), as an object array holds them."""
    if value is None:
        return True
    try:
        return bool(value != value)
    except (TypeError, ValueError):
        return True


def _factorize(values: np.ndarray) -> tuple[list, np.ndarray]:
    """The distinct values (in order of first appearance) and, for each value, its index among them: a hash table
    over the values as Python objects, ~0.25 s per million labels (np.unique sorts the fixed-width strings: ~1 s)."""
    items = values.tolist()
    index = {v: i for i, v in enumerate(dict.fromkeys(items))}
    return list(index), np.fromiter(map(index.__getitem__, items), dtype=np.int64, count=len(items))


def class_ids(y: np.ndarray, what: str) -> tuple[np.ndarray, list[str] | None]:
    """Class ids 0..C-1 from labels given as numbers or as class names, and the classes' names (the sorted names,
    or the given ids when they are not 0..C-1); unknown labels (negative numbers, NaN, empty, NA) -> -1, among
    class names too. Integer ids are compared exactly, also beyond float precision (2^53) and int64 (uint64).
    Labels given as text are parsed once per distinct label (a million labels of a few classes: 0.3 s)."""
    if y.dtype.kind in "USO":  # text: numbers written out, or class names
        distinct, inverse = _factorize(y if y.dtype.kind == "U" else y.astype(str))
        text = np.char.strip(np.array(distinct, dtype=str))  # each distinct label, stripped
        known = (~np.isin(np.char.lower(text), ("", *MISSING)))[inverse]
        if y.dtype.kind == "O" and {"None", "<NA>"} & set(distinct):  # Python's None and pandas' NA (an object
            known &= np.array([not _missing_object(v) for v in y], dtype=bool)  # column's) are not classes "None"...
        number = np.array([is_number(t) for t in text.tolist()], dtype=bool)

        def occurring() -> np.ndarray:  # which distinct labels some known label is
            seen = np.zeros(len(text), dtype=bool)
            seen[inverse[known]] = True
            return seen

        seen = occurring()
        code = np.full(len(text), -1, dtype=np.int64)  # each distinct label's class id
        if not number[seen].all():  # class names, e.g. "setosa": numbered in sorted order
            known &= ~(number & np.char.startswith(text, "-"))[inverse]  # e.g. a -1 written for an unknown label
            seen = occurring()
            names, code[seen] = np.unique(text[seen], return_inverse=True)
            return np.where(known, code[inverse], -1), names.tolist()
        if all(re.fullmatch(r"[+-]?\d+", t) for t in text[seen].tolist()):  # integers: Python's, exact at any size
            value = [int(t) if s else -1 for t, s in zip(text.tolist(), seen.tolist())]
            ids = sorted({v for v in value if v >= 0})
            position = {v: c for c, v in enumerate(ids)}
            code[:] = [position.get(v, -1) for v in value]
            # ids other than 0..C-1 (e.g. 3, 7, 9) are renumbered: keep them as the classes' names
            return (np.where(known, code[inverse], -1),
                    None if ids == list(range(len(ids))) else [str(i) for i in ids])
        values = np.full(len(text), np.nan)
        values[seen] = text[seen].astype(np.float64)
        y = np.where(known, values[inverse], np.nan)
    if y.dtype.kind == "f":
        if not np.all(np.isnan(y) | (np.isfinite(y) & (y == np.round(y)))):
            raise DataError(f"{what} are not integers; clustering labels must be class ids or names")
        known = ~np.isnan(y) & (y >= 0)
    else:  # signed, unsigned (uint64: ids up to 2^64 - 1), bool or Python integers
        known = y >= 0
    out = np.full(len(y), -1, dtype=np.int64)
    ids, out[known] = np.unique(y[known], return_inverse=True)
    # ids other than 0..C-1 (e.g. 3, 7, 9) are renumbered: keep them as the classes' names
    return out, None if np.array_equal(ids, np.arange(len(ids))) else [str(int(i)) for i in ids]


def ordered_shard(n: int, rank: int, world: int) -> Tensor:
    """Contiguous, unpadded shard ``rank`` of ``range(n)`` split over ``world`` ranks."""
    bounds = [n * r // world for r in range(world + 1)]
    return torch.arange(bounds[rank], bounds[rank + 1])


#: batch size of the ordered passes by default, in training batches: they keep no activations for a backward pass
EVAL_BATCH_FACTOR = 4


class ClusteringDataModule(pl.LightningDataModule):
    """Base class of all datamodules. Subclasses implement :meth:`load`.

    Args:
        batch_size: samples per training batch (per process under DDP).
        n_clusters: number of clusters to find; default the number of classes of the data set.
        eval_batch_size: batch size of the ordered passes (validation, prediction, clustering updates); None:
            4 x ``batch_size``. Those passes keep no activations for a backward pass, so 4x the training batch
            stays near training's memory; far larger batches are slower on a CPU, where every activation over
            glibc's mmap threshold (32 MiB in the ``dcl`` process) is fresh memory faulted in page by page
            (``benchmarks/results/cpu_allocator.md``).
        seed: seed of the training shuffle (the epoch is added to it); None: the run's seed, ``seed_everything``
            (Lightning's ``PL_GLOBAL_SEED``, 0 without one), so that a seed sweep varies the batch order too.
        on_device: keep the whole data set on the training device (GPU) so that batches are device views.
    """

    #: number of classes of the data set when known without loading it (overridden by subclasses)
    num_classes: int | None = None
    #: set by :meth:`load` when the data names its classes 0..C-1 (read it as ``class_names``)
    _class_names: list[str] | None = None
    #: set by :meth:`load` when the data names each sample: (column name, one name per sample), read as ``sample_ids``
    _sample_ids: tuple[str, list[str]] | None = None

    def __init__(self, batch_size: int = 256, n_clusters: int | None = None, eval_batch_size: int | None = None,
                 seed: int | None = None, on_device: bool = False) -> None:
        super().__init__()
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}")
        if eval_batch_size is not None and eval_batch_size < 1:
            raise DataError(f"eval_batch_size must be >= 1 (or null: 4 x batch_size), got {eval_batch_size}")
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.seed = seed
        self.on_device = on_device
        self._n_clusters_override = n_clusters
        self._x: Tensor | None = None
        self._y: Tensor | None = None

    # -- what subclasses provide ------------------------------------------------------------------------
    def load(self) -> tuple[Tensor, Tensor | None]:
        """Return ``(x, y)``: all samples as one tensor (float, or uint8 with :meth:`batch_transform`) and
        integer labels (or None when the data has none)."""
        raise NotImplementedError

    def batch_transform(self, x: Tensor) -> Tensor:
        """Applied to each batch after slicing (e.g. uint8 -> float scaling). Identity by default."""
        return x

    def check_scaling(self, state: dict, trained: str, applied: str = "") -> None:
        """Refuse to serve samples scaled otherwise than those a network (``trained``, e.g. "the pretrained
        autoencoder x.ckpt") was trained on, from the state this datamodule's class saved in that run's checkpoint;
        ``applied``: what the error adds after its remedy. Nothing to refuse by default (Arrays: ``standardize``)."""

    def served_range(self, chunk: int = 4096) -> tuple[float, float]:
        """The smallest and largest value of all samples as they are served (after :meth:`batch_transform`: 8-bit
        images scaled, standardization), e.g. to check pixels a likelihood needs in [0, 1]; the same on every rank."""
        lo, hi = math.inf, -math.inf
        for part in self.x.split(chunk):
            x = self.batch_transform(part)
            lo, hi = min(lo, float(x.min())), max(hi, float(x.max()))
        return lo, hi

    # -- derived ---------------------------------------------------------------------------------------
    def _ensure_loaded(self) -> None:
        if self._x is not None:
            return
        x, y = self.load()
        x = torch.as_tensor(x)
        name = type(self).__name__
        if x.ndim < 2 or len(x) == 0:
            raise DataError(f"{name}: the data set is empty or not a batch of samples (shape {tuple(x.shape)})")
        if x[0].numel() == 0:
            raise DataError(f"{name}: samples of shape {tuple(x.shape[1:])} hold no values (a dimension of size 0); "
                            "check how the data was read or sliced")
        if x.ndim == 4 and x.shape[3] in (1, 3, 4) and x.shape[1] > 4:
            # numpy's / PIL's / TensorFlow's layout: read as N x C x H x W, it is x.shape[1] channels of W x C images
            raise DataError(f"{name}: samples of shape {tuple(x.shape[1:])} are images with their channels last "
                            "(H x W x C); dcl takes N x C x H x W: transpose them first, e.g. "
                            "np.transpose(x, (0, 3, 1, 2))")
        if x.is_floating_point():  # in blocks of rows: isfinite of the whole data took 1.5x its size in temporaries
            bad = torch.cat([~torch.isfinite(part.reshape(len(part), -1)).all(dim=1) for part in x.split(65536)])
            if bad.any():
                rows = bad.nonzero().flatten()[:5].tolist()
                raise DataError(f"{name}: {int(bad.sum())} samples contain NaN or inf (first: samples {rows}, "
                                "counted from 0 as dcl predict's index); clean or impute them before clustering")
        if y is None:
            y = torch.full((len(x),), -1, dtype=torch.long)
        else:
            y = torch.as_tensor(y).long().flatten()
            if len(y) != len(x):
                raise DataError(f"{name}: {len(y)} labels for {len(x)} samples; labels must have one entry "
                                "per sample")
        self._x, self._y = x.contiguous(), y
        served = self.batch_transform(self._x[:1]).dtype
        if served != torch.float32:  # else the first training step fails, after the loggers wrote a run folder
            self._x = self._y = None
            raise DataError(f"{name}: serves samples as {served} (load() returns {x.dtype}), but the networks compute "
                            "in float32: return float32 samples from load() (x.float(), or np.float32), or convert "
                            "integer pixels per batch in batch_transform (x.float() / 255, as MNIST does)")

    def check_n_clusters(self, fitting: bool) -> None:
        """When fitting, a set ``n_clusters`` between 2 and the number of samples. A trained model's is the K it
        ended with (a DP-GMM fitted to one class: 1), and it assigns any number of new samples, even fewer than
        its clusters."""
        k, n = self._n_clusters_override, len(self.x)
        if fitting and k is not None and not 2 <= k <= n:
            raise DataError(f"{type(self).__name__}: n_clusters must be between 2 and the number of samples ({n}), "
                            f"got {k}")
        if fitting and k is None and self.num_classes is None and self.has_labels:
            labeled = self.y[self.y >= 0]
            if len(labeled) > 2 and labeled.unique().numel() == len(labeled):
                # an id column taken for the labels (found by probing): K = N clusters, and ACC = NMI = 1 reported
                raise DataError(f"{type(self).__name__}: the labels give every sample a class of its own "
                                f"({len(labeled)} classes for {len(labeled)} labeled samples), so they are names "
                                "or ids of the samples, not classes (Arrays: id_column, not label_column); or set "
                                "data.n_clusters")

    @property
    def x(self) -> Tensor:
        self._ensure_loaded()
        return self._x

    @property
    def y(self) -> Tensor:
        self._ensure_loaded()
        return self._y

    @property
    def class_names(self) -> list[str] | None:
        """Names of the classes 0..C-1 when the data names them (a folder per class, labels written as names), for
        the predictions' ``label`` column and the plots; None otherwise."""
        self._ensure_loaded()
        return self._class_names

    @property
    def sample_ids(self) -> tuple[str, list[str]] | None:
        """What names each sample, for a column of ``dcl predict``'s output: ``(column name, one name per sample)``,
        e.g. ``("file", paths)`` for a folder of images; None when the data does not name its samples."""
        self._ensure_loaded()
        return self._sample_ids

    @property
    def has_labels(self) -> bool:
        return bool((self.y >= 0).any())

    @property
    def num_samples(self) -> int:
        return len(self.x)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample as the method sees it (after :meth:`batch_transform`)."""
        return tuple(self.batch_transform(self.x[:1]).shape[1:])

    @property
    def n_clusters_given(self) -> int | None:
        """The ``n_clusters`` set by the user (None: the number of classes of the data is used)."""
        return self._n_clusters_override

    @property
    def n_clusters(self) -> int:
        if self._n_clusters_override is not None:
            self._ensure_loaded()
            return self._n_clusters_override
        if self.num_classes is not None:
            return self.num_classes
        if self.has_labels:
            return int(self.y.max()) + 1
        raise DataError(f"{type(self).__name__}: the data has no labels, so n_clusters cannot be inferred; "
                        "set data.init_args.n_clusters")

    @property
    def n_clusters_if_known(self) -> int | None:
        """``n_clusters``, or None where the data has no labels and none was set: what the ``dcl`` command hands the
        method (one that finds K itself needs none; the others refuse None, and the command says to set it)."""
        if self.n_clusters_given is None and self.num_classes is None and not self.has_labels:
            return None
        return self.n_clusters

    # -- Lightning hooks -------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        self._ensure_loaded()
        self.check_n_clusters(fitting=stage in (None, "fit"))
        world = rank_world()[1]
        if world > len(self._x):  # a process without samples: Lightning refuses its empty loader mid-run
            raise DataError(f"{type(self).__name__}: {len(self._x)} samples cannot be shared by {world} processes "
                            f"(each needs one); run on at most {len(self._x)} (trainer.devices x num_nodes)")
        if self.on_device and self.trainer is not None:
            device = self.trainer.strategy.root_device
            self._x, self._y = self._x.to(device), self._y.to(device)

    def _loader(self, shuffle: bool, rows: Tensor | None = None) -> InMemoryLoader:
        eval_batch_size = self.eval_batch_size or EVAL_BATCH_FACTOR * self.batch_size
        return InMemoryLoader(self.x, self.y, self.batch_size if shuffle else eval_batch_size,
                              shuffle=shuffle, seed=self.shuffle_seed, transform=self.batch_transform, rows=rows)

    @property
    def shuffle_seed(self) -> int:
        """``seed``, or the run's (``seed_everything``, read when the loader is built: a Python user may seed after
        building the datamodule) when None."""
        return self.seed if self.seed is not None else int(os.environ.get("PL_GLOBAL_SEED", 0))

    def state_dict(self) -> dict:
        """The shuffle's seed, saved in checkpoints: a resumed fit goes on with its run's batch order whatever the
        seed of the command that resumes it (the rest of the run's randomness comes from the checkpoint too)."""
        return {"shuffle_seed": self.shuffle_seed}

    def load_state_dict(self, state: dict) -> None:
        if "shuffle_seed" in state:  # (not in checkpoints of dcl before 2026-12-03)
            self.seed = state["shuffle_seed"]

    def train_dataloader(self) -> InMemoryLoader:
        return self._loader(shuffle=True)

    def all_dataloader(self) -> InMemoryLoader:
        """Ordered loader over all samples; this rank's contiguous shard under DDP."""
        return self._loader(shuffle=False)

    def sample_dataloader(self, size: int, seed: int = 0) -> InMemoryLoader:
        """Ordered loader over ``size`` samples drawn without replacement with a fixed seed (all of them when there
        are no more): the same samples in any number of processes, each rank reading its contiguous shard of them."""
        n = self.num_samples
        if size >= n:
            return self.all_dataloader()
        rows = torch.from_numpy(np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False)))
        return self._loader(shuffle=False, rows=rows.to(self.x.device))

    def val_dataloader(self) -> InMemoryLoader:
        return self.all_dataloader()

    def test_dataloader(self) -> InMemoryLoader:
        return self.all_dataloader()

    def predict_dataloader(self) -> InMemoryLoader:
        return self.all_dataloader()


def require_files(name: str, folder: str | Path, files: list[str], how_to_get: str) -> Path:
    """Check that ``folder`` holds ``files``; else raise one DataError saying where we looked and how to fix."""
    folder = Path(folder).expanduser()
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise DataError(f"{name}: missing {', '.join(missing)} in {folder.resolve()}; {how_to_get}")
    return folder


def require_archive_files(name: str, data_dir: str | Path, folder_name: str, files: list[str], *, download: bool,
                          torchvision_name: str, source: str) -> Path:
    """The folder ``folder_name`` (``data_dir`` itself, or in it) once it holds ``files``, the contents of an
    archive that extracts into its parent (CIFAR, STL-10). With ``download`` the archive is fetched and extracted by
    torchvision (its dataset class ``torchvision_name`` names the archive); otherwise, or when that leaves files
    missing, one DataError says what is missing and how to get it (``source``: where the archive is published)."""
    d = Path(data_dir).expanduser()
    folder = d if d.name == folder_name else d / folder_name
    if all((folder / f).is_file() for f in files):
        return folder
    from torchvision import datasets  # only to fetch, or to name the archive

    tv = getattr(datasets, torchvision_name)
    root, url, filename = folder.parent, tv.url, tv.filename
    if download:
        from torchvision.datasets.utils import download_and_extract_archive
        try:
            with download_lock(root):  # another process may have fetched it meanwhile: extract it once
                if not all((folder / f).is_file() for f in files):
                    download_and_extract_archive(url, str(root), filename=filename, md5=tv.tgz_md5)
        except (RuntimeError, OSError, EOFError, ValueError) as e:
            raise DataError(f"{name}: could not download {url} into {root.resolve()}: {e}; download and extract "
                            "it there by hand") from e
    hint = f"{root / filename} is there: extract it, or set download: true, which extracts it; " \
        if (root / filename).is_file() else ""
    return require_files(name, folder, files, f"{hint}to get them: set data.init_args.download: true (downloads "
                         f"{url} with torchvision, needs internet), or download {filename} ({source}) and extract "
                         f"it in {root.resolve()}")


class SplitFilesDataModule(ClusteringDataModule):
    """Base of the data sets shipped as standard files with a train and a test split (MNIST, USPS, CIFAR):
    read from ``data_dir`` (or downloaded there), both splits merged by default as clustering papers do.

    Args:
        data_dir: the folder that holds the data set's files (each subclass says in which layout).
        download: download the missing files there with torchvision (needs internet).
        split: ``"all"`` (train then test), ``"train"`` or ``"test"``.
        flatten: serve vectors (True) or images.
        batch_size, n_clusters, eval_batch_size, seed, on_device: see ``ClusteringDataModule``.
    """

    SPLITS = ("all", "train", "test")

    def __init__(self, data_dir: str = "data", download: bool = False, split: str = "all", flatten: bool = True,
                 batch_size: int = 256, n_clusters: int | None = None, eval_batch_size: int | None = None,
                 seed: int | None = None, on_device: bool = False) -> None:
        super().__init__(batch_size, n_clusters, eval_batch_size, seed, on_device)
        if split not in self.SPLITS:
            raise DataError(f"{type(self).__name__}: split must be one of {self.SPLITS}, got {split!r}")
        self.data_dir = data_dir
        self.download = download
        self.split = split
        self.flatten = flatten

    def splits(self) -> list[str]:
        """The splits to read, in order."""
        return ["train", "test"] if self.split == "all" else [self.split]
