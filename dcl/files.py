"""Where a run's files go (:func:`run_dir`), and output files written whole or not at all (:func:`atomic_write`): a run
stopped mid-write (a kill, a full disk) never leaves a half-written prediction CSV, score file or plot behind, nor a
temporary file beside it."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator


def current_umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: put it back at once
    os.umask(mask)
    return mask


def unwritable_folder(folder: str | Path) -> str | None:
    """Why files cannot be written under ``folder`` (made as needed), or None: checked before a run, so that a
    path through a file or a read-only folder is refused before training instead of failing at its end."""
    folder = Path(folder).expanduser().absolute()
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"the folder {existing} is not writable"
    try:  # os.access says yes to root (as containers run) where nothing can be made, e.g. /proc: try it
        os.rmdir(tempfile.mkdtemp(prefix=".dcl-write-check-", dir=existing))
    except OSError as err:
        return f"the folder {existing} does not take new files ({err.strerror or err})"
    return None


def not_a_file(path: str | Path) -> str | None:
    """Why ``path`` cannot be read as a checkpoint file ("does not exist", or a folder and the checkpoints in it),
    None when it is a file. A run folder given for its checkpoint was reported as missing (found by probing)."""
    file = Path(path).expanduser()
    if file.is_file():
        return None
    if not file.is_dir():
        return "does not exist"
    found = sorted(file.rglob("*.ckpt"), key=lambda p: (p.name != "last.ckpt", len(p.parts), str(p)))[:3]
    inside = f" (it holds {', '.join(str(p) for p in found)})" if found else " (it holds no .ckpt file)"
    return f"is a folder; give the checkpoint file{inside}"


def atomic_write(path: str | Path, write: Callable[[str], object]) -> None:
    """Call ``write(tmp_path)`` then rename to ``path``, with the mode a plain ``open`` would give it; the
    temporary file is removed on failure and an earlier ``path`` is kept as it was."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp's 0600 would make the output private to its writer
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run_dir(trainer) -> Path:
    """The run's folder, as ``ModelCheckpoint`` resolves it (``save_dir/name/version``), or the trainer's
    ``default_root_dir`` without a logger. Call on rank 0 (a W&B logger's version exists there only)."""
    if trainer.loggers:
        logger = trainer.loggers[0]
        save_dir = logger.save_dir if logger.save_dir is not None else trainer.default_root_dir
        version = logger.version
        version = version if isinstance(version, str) else f"version_{version}"
        return Path(save_dir) / str(logger.name) / version
    return Path(trainer.default_root_dir)


@contextmanager
def download_lock(folder: str | Path) -> Iterator[None]:
    """One download into ``folder`` at a time, across processes: every rank of a job that srun or torchrun launches
    loads the data itself, and with ``download: true`` they fetched and extracted the same files into one folder at
    once. The first to hold the lock downloads; the others then find the files (check for them inside it). An
    advisory ``flock`` on ``folder/.dcl-download.lock`` (POSIX; elsewhere no lock)."""
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # (Windows)
        yield
        return
    with open(folder / ".dcl-download.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
