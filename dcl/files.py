"""Where a run's files go (:func:`run_dir`), and output files written whole or not at all (:func:`atomic_write`): a run
stopped mid-write (a kill, a full disk) never leaves a half-written prediction CSV, score file or plot behind, nor a
temporary file beside it. An output that is no file (/dev/stdout, /dev/null, a FIFO) is written into, not replaced."""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

try:
    import fcntl
except ImportError:  # (Windows: no descriptor is found by name there)
    fcntl = None


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


def unwritable_output(path: str | Path) -> str | None:
    """Why :func:`atomic_write` could not write ``path``, or None: checked before a run, as the write will find it. A
    new file, or a file or a link's target, needs its folder to take new files; a device or FIFO needs to be writable
    itself (its folder, e.g. /dev, need not be); a descriptor of this process needs to be open for writing."""
    path = Path(path).expanduser().absolute()
    fd = _descriptor(path)
    if fd is not None and fcntl is not None:
        try:
            flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        except OSError:
            return f"descriptor {fd} of this process is not open"
        return f"descriptor {fd} of this process is not open for writing" \
            if (flags & os.O_ACCMODE) == os.O_RDONLY else None
    try:
        mode = _mode(path)
    except OSError as err:  # a loop of links
        return f"{path}: {err.strerror or err}"
    if mode is None or stat.S_ISREG(mode):
        return unwritable_folder(Path(os.path.realpath(path)).parent)
    if stat.S_ISDIR(mode):
        return f"{path} is a folder"
    if stat.S_ISSOCK(mode):
        return f"{path} is a socket, which cannot be opened"
    return None if os.access(path, os.W_OK) else f"{path} is not writable"


def _mode(path: Path) -> int | None:
    """The ``st_mode`` of what ``path`` leads to (through links), None where nothing is yet (a link to no file too:
    its target is made; a file on the way: the folder's check names it)."""
    try:
        return os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None


def names_stdout(path: str | Path) -> bool:
    """Whether ``path`` is this process's standard output (/dev/stdout, /dev/fd/1, a link to them)."""
    return _descriptor(Path(path).expanduser().absolute()) == 1


def _descriptor(path: Path) -> int | None:
    """The descriptor of this process that ``path`` names, itself or through links (/dev/stdout, /dev/stderr,
    /dev/fd/N, /proc/self/fd/N), or None."""
    own = rf"/proc/{os.getpid()}/(?:task/\d+/)?fd/(\d+)|/dev/fd/(\d+)|/dev/std(in|out|err)"
    here = Path(os.path.abspath(path))
    for _ in range(40):  # (the kernel's limit of links on a path)
        # each link's own folder resolved: Linux's /dev/fd and /proc/self are links to /proc/<pid>/fd, /proc/<pid>
        here = Path(os.path.realpath(here.parent)) / here.name
        found = re.fullmatch(own, str(here))
        if found:
            proc, dev, std = found.groups()
            return ("in", "out", "err").index(std) if std else int(proc or dev)
        if not here.is_symlink():
            return None
        here = here.parent / os.readlink(here)
    return None


def _write_to_descriptor(fd: int, write: Callable[[str], object]) -> None:
    # the callers' writers take a path, and a path opened anew is no help: /dev/stdout to a file (> log, a Slurm
    # job's output) would be truncated, and the process's next print written over the data. A temporary file, then
    # copied through a copy of the descriptor: after what the process printed, and nothing of a failed write
    handle, tmp = tempfile.mkstemp(prefix=".dcl-", suffix=".tmp")
    os.close(handle)
    try:
        write(tmp)
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
        with open(tmp, "rb") as data, os.fdopen(os.dup(fd), "wb") as out:
            shutil.copyfileobj(data, out)
    finally:
        Path(tmp).unlink(missing_ok=True)


def atomic_write(path: str | Path, write: Callable[[str], object]) -> None:
    """Call ``write(tmp_path)`` then rename to ``path``, with the mode a plain ``open`` would give it; the
    temporary file is removed on failure and an earlier ``path`` is kept as it was.

    A link is followed: its target is written so (the temporary file beside it), and the link stays. What a rename
    would destroy is written into instead: a device or FIFO (/dev/null, ``mkfifo``'s) by ``write(path)``, not
    atomically; a descriptor of this process (/dev/stdout, /dev/fd/N) by copying the written temporary file into it,
    after what the process printed there. A folder is refused (IsADirectoryError)."""
    path = Path(path).expanduser()
    fd = _descriptor(path)
    if fd is not None:
        _write_to_descriptor(fd, write)
        return
    mode = _mode(path)
    if mode is not None and stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    if mode is not None and not stat.S_ISREG(mode):
        write(str(path))
        return
    path = Path(os.path.realpath(path))  # a link: the target gets the data, the link stays
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
    if fcntl is None:  # (Windows)
        yield
        return
    with open(folder / ".dcl-download.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
