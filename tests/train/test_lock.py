"""train/lock.py: one writer per experiment folder -- a second holder refused naming the first, re-entrant in
one process, released for the next, and a file system that cannot lock runs unlocked with a warning."""

import errno
import fcntl
import logging
import os
import socket

import pytest

from s3prl_plugins.train.lock import ExperimentLocked, experiment_lock


def test_a_second_writer_is_refused_naming_the_first(tmp_path):
    exp = str(tmp_path / "exp")
    with experiment_lock(exp):
        with experiment_lock(exp):  # re-entrant: the CLI takes it, then the trainer
            pass
        other = os.open(os.path.join(exp, ".lock"), os.O_RDWR)  # another holder's descriptor
        try:
            with pytest.raises(OSError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(other)
        text = open(os.path.join(exp, ".lock")).read()
        assert f"pid={os.getpid()}" in text and f"host={socket.gethostname()}" in text
    assert open(os.path.join(exp, ".lock")).read() == ""  # released: nobody's
    fd = os.open(os.path.join(exp, ".lock"), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a live process elsewhere would hold it
        os.pwrite(fd, b"pid=77 host=node3 what=training\n", 0)
        with pytest.raises(ExperimentLocked, match="another process \\(pid 77 on host node3\\)"):
            with experiment_lock(exp):
                pass
    finally:
        os.close(fd)


def test_a_file_system_that_cannot_lock_runs_unlocked_with_a_warning(tmp_path, monkeypatch, caplog):
    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    ran = []
    with caplog.at_level(logging.WARNING, logger="s3prl_plugins.train.lock"):
        with experiment_lock(str(tmp_path / "exp")):
            ran.append(True)
    assert ran and "cannot be locked (No locks available)" in caplog.text
