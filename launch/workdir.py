"""A run's workdir: checked before use, and held by one launch at a time.

    check_workdir(path)            # one-line WorkdirError if it is a file or not writable
    with WorkdirLock(path):        # WorkdirError naming the holder if another launch has it
        ...

The lock is an advisory `flock` on `<workdir>/.lock`, which holds the holder's pid, host and
start time. The kernel releases it when the holding process ends, however it ends
(SIGKILL included), so a killed run never blocks its own resume; the stale text left in
the file is only read to name a live holder.
"""
import datetime
import errno
import fcntl
import os
import socket

LOCK_NAME = ".lock"


class WorkdirError(Exception):
    """The workdir cannot be used: the message is one line for the user."""


def check_workdir(path: str) -> None:
    """Creates `path` if needed and checks that it is a writable directory."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise WorkdirError(f"--workdir {path} is a file, not a directory; "
                           "give a directory path")
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".write-test-{os.getpid()}")
        with open(probe, "w") as file:
            file.write("ok")
        os.remove(probe)
    except OSError as error:
        raise WorkdirError(f"--workdir {path} is not writable: "
                           f"{error.strerror or error}") from None


class WorkdirLock:
    """Exclusive hold of a workdir by this process (see the module docstring)."""

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, LOCK_NAME)
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            with open(self.path) as file:
                holder = file.read().strip() or "another process"
            raise WorkdirError(f"workdir {os.path.dirname(self.path)} is in use by {holder}; "
                               "wait for that run to end or stop it, or use another "
                               "--workdir") from None
        started = datetime.datetime.now().isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.write(fd, f"process {os.getpid()} on host {socket.gethostname()} "
                     f"(since {started})\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "WorkdirLock":
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()
