"""dcl.files.atomic_write: outputs are written whole or not at all, with the mode a plain open gives."""

from __future__ import annotations

import os

import pytest

from dcl.files import atomic_write


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
