"""dcl.files.atomic_write: outputs are written whole or not at all, with the mode a plain open gives."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from dcl.files import atomic_write, not_a_file


def test_a_failed_write_keeps_the_earlier_file_and_leaves_no_temporary(tmp_path):
    out = tmp_path / "scores.json"
    atomic_write(out, lambda tmp: open(tmp, "w").write("old"))

    def half_then_fail(tmp):
        open(tmp, "w").write("ne")
        raise KeyboardInterrupt  # a run stopped mid-write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(out, half_then_fail)
    assert out.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["scores.json"]


def test_new_folders_and_the_mode_of_a_plain_open(tmp_path):
    umask = os.umask(0o027)
    try:
        out = tmp_path / "a" / "b" / "x.csv"
        atomic_write(out, lambda tmp: open(tmp, "w").write("1\n"))
    finally:
        os.umask(umask)
    assert out.read_text() == "1\n" and oct(out.stat().st_mode & 0o777) == oct(0o640)


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_a_folder_that_takes_no_files_is_found_even_as_root(tmp_path):
    """Found by probing as root (containers run as root): os.access allowed --predictions.output /proc/x/p.csv, which
    then failed after the whole predict pass. The check now makes (and removes) a folder there."""
    from dcl.files import unwritable_folder

    assert unwritable_folder("/proc/x").startswith("the folder /proc does not take new files")
    assert unwritable_folder(tmp_path / "new" / "deeper") is None
    assert list(tmp_path.iterdir()) == []  # the trial leaves nothing


def test_a_link_is_followed_its_target_gets_the_data_and_the_link_stays(tmp_path):
    """Found by an audit: a link given as the output was replaced by a file, its target kept the old data."""
    (tmp_path / "runs").mkdir()
    target = tmp_path / "runs" / "clusters.csv"
    target.write_text("old\n")
    link, dangling = tmp_path / "link.csv", tmp_path / "dangling.csv"
    link.symlink_to("runs/clusters.csv")
    dangling.symlink_to("runs/new.csv")  # a plain open makes the target: so does this
    atomic_write(link, lambda tmp: open(tmp, "w").write("new\n"))
    atomic_write(dangling, lambda tmp: open(tmp, "w").write("1\n"))
    assert link.is_symlink() and os.readlink(link) == "runs/clusters.csv" and target.read_text() == "new\n"
    assert dangling.is_symlink() and (tmp_path / "runs" / "new.csv").read_text() == "1\n"
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["clusters.csv", "new.csv"]  # no temporary


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_receives_the_data_and_stays_a_fifo(tmp_path):
    """Found by an audit: ``mkfifo out.csv`` given as the output became a regular file, its reader got nothing."""
    fifo = tmp_path / "out.csv"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()), daemon=True)  # (a hung one ends)
    reader.start()
    atomic_write(fifo, lambda tmp: open(tmp, "w").write("index,cluster\n0,1\n"))
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    reader.join(timeout=10)
    assert received == ["index,cluster\n0,1\n"]
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_dev_null_stays_a_character_device(tmp_path):
    """Found by an audit: as root (containers run as root) ``--predictions.output /dev/null`` replaced /dev/null with
    a file. Tried first on a null device of the test's own where root can make one: a regression then replaces
    that one, not the machine's."""
    devices = [Path("/dev/null")]
    try:
        os.mknod(tmp_path / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        devices.insert(0, tmp_path / "null")
    except (OSError, AttributeError):  # not root, or no mknod: /dev cannot be written to, nor /dev/null replaced
        assert not os.access("/dev", os.W_OK)
    (tmp_path / "link.csv").symlink_to("/dev/null")
    for device in devices + [tmp_path / "link.csv"]:
        atomic_write(device, lambda tmp: open(tmp, "w").write("1\n"))
        assert stat.S_ISCHR(os.stat(device).st_mode), device
    assert (tmp_path / "link.csv").is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.csv"] + ["null"] * (len(devices) > 1)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs Linux's /proc")
@pytest.mark.parametrize("stdout", ["file", "pipe"])
def test_the_process_s_stdout_gets_the_data_after_what_it_printed(tmp_path, stdout):
    """``--predictions.output /dev/stdout``: into the stream the process prints to, in order, whether a pipe or a
    file (``> log``, a Slurm job's output): a file found through /proc/self/fd/1 is not replaced (what was printed
    before and after would be lost), nor opened anew (that truncates it, and the next print writes over the data).
    Tried through links and /dev/fd/1: a regression replaces a link of the test's, not the machine's /dev/stdout."""
    (tmp_path / "out.csv").symlink_to("/dev/stdout")
    (tmp_path / "fd.csv").symlink_to("/proc/self/fd/1")
    script = ("import sys; from dcl.files import atomic_write\n"
              "print('before')\n"
              "for path in sys.argv[1:]:\n"
              "    atomic_write(path, lambda tmp: open(tmp, 'w').write(path.split('/')[-1] + '\\n'))\n"
              "print('after')\n")
    paths = [str(tmp_path / "out.csv"), str(tmp_path / "fd.csv"), "/dev/fd/1"]
    command = [sys.executable, "-c", script, *paths]
    # stdout buffered, as a plain `python` to a file or pipe has it: what was printed waits in the buffer (a
    # PYTHONUNBUFFERED=1 of the machine's would hide a write that comes before it)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if stdout == "file":
        with open(tmp_path / "log", "w") as log:
            subprocess.run(command, stdout=log, check=True, env=env)
        printed = (tmp_path / "log").read_text()
    else:
        printed = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True, env=env).stdout
    assert printed == "before\nout.csv\nfd.csv\n1\nafter\n"
    assert (tmp_path / "out.csv").is_symlink() and (tmp_path / "fd.csv").is_symlink()


def test_a_folder_is_refused_before_its_writer_runs(tmp_path):
    # (a writer that calls np.save(path) with a folder's name would write <folder>.npy beside it)
    calls = []
    with pytest.raises(IsADirectoryError):
        atomic_write(tmp_path, calls.append)
    assert calls == []


def test_a_run_folder_given_for_a_checkpoint_names_last_ckpt_first(tmp_path):
    for name in ("checkpoints/epoch=3-step=40.ckpt", "checkpoints/last.ckpt", "a.ckpt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).touch()
    found = f"{tmp_path}/checkpoints/last.ckpt, {tmp_path}/a.ckpt, {tmp_path}/checkpoints/epoch=3-step=40.ckpt"
    assert not_a_file(tmp_path) == f"is a folder; give the checkpoint file (it holds {found})"
    assert not_a_file(tmp_path / "a.ckpt") is None
    assert not_a_file(tmp_path / "none.ckpt") == "does not exist"


def test_the_pre_run_check_of_an_output(tmp_path):
    """What a run checks before it starts (``unwritable_output``), as the write will find it: a link's target
    folder, a device or FIFO itself (not its folder: /dev, which a user cannot write to), a descriptor open for
    writing."""
    from dcl.files import unwritable_output

    assert unwritable_output(tmp_path / "new" / "x.csv") is None
    assert unwritable_output(tmp_path) == f"{tmp_path} is a folder"
    (tmp_path / "to-proc.csv").symlink_to("/proc/x/p.csv")
    assert unwritable_output(tmp_path / "to-proc.csv").startswith("the folder /proc does not take new files")
    (tmp_path / "loop.csv").symlink_to("loop.csv")
    assert unwritable_output(tmp_path / "loop.csv").startswith(f"{tmp_path / 'loop.csv'}: ")
    assert unwritable_output("/dev/null") is None
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "fifo")
        assert unwritable_output(tmp_path / "fifo") is None  # (not opened: that would wait for a reader)
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(tmp_path / "sock"))
        assert unwritable_output(tmp_path / "sock") == f"{tmp_path / 'sock'} is a socket, which cannot be opened"
    if os.path.isdir("/proc/self/fd"):
        assert unwritable_output("/dev/stdout") is None
        with open(tmp_path / "in", "w"), open(tmp_path / "in") as read_only:
            assert unwritable_output(f"/dev/fd/{read_only.fileno()}") == \
                f"descriptor {read_only.fileno()} of this process is not open for writing"


@pytest.mark.skipif(not hasattr(os, "fork") or os.geteuid() != 0 or not os.path.isdir("/proc/self/fd"),
                    reason="needs root, to run the check as another user, and Linux's /proc")
def test_a_user_may_name_dev_stdout():
    """Found by an audit: a user who cannot write to /dev was told "the folder /dev is not writable" for
    ``--predictions.output /dev/stdout``. Checked as nobody (uid 65534) in a forked child (this checkout's Python
    may lie where nobody cannot run it)."""
    from dcl.files import unwritable_output

    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # (the child leaves by os._exit only: never back into pytest)
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            found = repr((os.access("/dev", os.W_OK), unwritable_output("/dev/stdout"), unwritable_output("/dev/null")))
        except BaseException as err:
            found = repr(err)
        os.write(write, found.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        found = pipe.read()
    os.waitpid(child, 0)
    assert found == "(False, None, None)"
