"""One writer per experiment folder: an advisory lock on ``<folder>/.lock`` that names its holder.

Two trainings (or compression chains) started on one ``exp_dir`` would write the same checkpoints, the same
``last.txt`` and the same ``model.pt``, and each one's clean-up of interrupted saves could delete the other's
save in flight. :func:`experiment_lock` takes ``fcntl.flock`` on the folder's ``.lock`` file without waiting:
the second writer is refused at once with the holder's pid and host. The kernel releases a flock when its
holder dies, however it dies (a kill -9, an out-of-memory kill, a preempted job), so a lock left by a dead
process is taken over by the next run, which says whose it was. ``flock`` holds across the hosts of an NFS
v4 share (Linux maps it onto the server's byte-range locks), the case of a cluster's shared ``exp/``.

Re-entrant within a process: a training CLI takes the lock before it builds anything, and the trainer it
hands over to takes it again (a second ``flock`` on a new descriptor of the same file would wait on itself).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import socket
from typing import Dict, Iterator, Tuple

logger = logging.getLogger(__name__)

LOCK_NAME = ".lock"
_held: Dict[str, Tuple[int, int]] = {}  # real path of the folder -> (descriptor, depth)


class ExperimentLocked(RuntimeError):
    """Another live process writes into the experiment folder."""


def _holder(text: str) -> str:
    fields = dict(part.split("=", 1) for part in text.split() if "=" in part)
    return f"pid {fields.get('pid', '?')} on host {fields.get('host', '?')}"


@contextlib.contextmanager
def experiment_lock(folder: str, what: str = "training") -> Iterator[None]:
    """Hold ``folder``'s writer lock (the folder is created) for the ``with`` block.

    Raises:
        ExperimentLocked: another live process holds it (the message names its pid and host).
    """
    os.makedirs(folder, exist_ok=True)
    key = os.path.realpath(folder)
    if key in _held:
        fd, depth = _held[key]
        _held[key] = (fd, depth + 1)
        try:
            yield
        finally:
            fd, depth = _held[key]
            _held[key] = (fd, depth - 1)
        return
    path = os.path.join(folder, LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        text = os.pread(fd, 4096, 0).decode(errors="replace")
        os.close(fd)
        if e.errno in (errno.EAGAIN, errno.EACCES):
            raise ExperimentLocked(
                f"{folder} is being written by another process ({_holder(text)}): one experiment folder has one "
                "writer. Wait for it to finish, stop it, or write into another folder"
            ) from None
        # a file system without flock (Lustre mounted without it, some FUSE/SMB shares): run, and say so
        logger.warning("%s cannot be locked (%s): a second writer of it would not be refused", folder, e.strerror)
        yield
        return
    try:
        previous = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        me = f"pid={os.getpid()} host={socket.gethostname()} what={what}"
        if previous:
            # the kernel released the previous holder's flock: it has ended (it would still hold it otherwise)
            logger.warning("%s: taking over the lock of %s, which has ended", folder, _holder(previous))
        os.ftruncate(fd, 0)
        os.pwrite(fd, (me + "\n").encode(), 0)
    except BaseException:
        os.close(fd)
        raise
    _held[key] = (fd, 1)
    try:
        yield
    finally:
        fd, depth = _held.pop(key)
        try:
            os.ftruncate(fd, 0)  # an empty lock file: nobody's
            fcntl.flock(fd, fcntl.LOCK_UN)  # for every process sharing the descriptor (forked DataLoader workers)
        finally:
            os.close(fd)


def rank0_lock(folder: str, what: str = "training"):
    """:func:`experiment_lock` on rank 0 of a torchrun job (the one process that writes), none on the others."""
    return experiment_lock(folder, what) if int(os.environ.get("RANK", "0")) == 0 else contextlib.nullcontext()
