"""The launcher process of a multi-process run, which runs the training process and turns
the JAX runtime's fatal end into one line.

When a process of a multi-process run dies, JAX's distributed runtime ends every other one
from C++: it logs a fatal error and aborts (a stack trace of C++ frames, exit 134), within
10 s of the loss (`HEARTBEAT_TIMEOUT_S`), at once when process 0 is lost. Python cannot
catch that, so `launch.train` runs the training in a child process (`supervise`): the
child's Python output (sys.stdout, sys.stderr) reaches the terminal directly; what C++
writes to its file descriptors 1 and 2 comes through this process: gloo's connection notes
are dropped, the runtime's logs on fd 2 shown `HOLD_S` late, unless the runtime ends the
child: then they are replaced by one line naming the lost process and saying to relaunch
(`lost_process_line`). With --verbosity every line is shown, at once. The child dies with
its launcher (PR_SET_PDEATHSIG), so killing the launcher kills the process of the run.
"""
import collections
import ctypes
import os
import re
import signal
import subprocess
import sys
import threading
import time

SUPERVISED_VARIABLE = "PIXELZOO_PYTHON_FDS"   # set in the child: its Python stdout, stderr
HOLD_S = 2.0             # runtime lines are shown this late (the fatal end replaces them)
HEARTBEAT_TIMEOUT_S = 10  # JAX's: a process silent this long is lost (JAX's default: 100)
EXIT_LOST = 1
# The JAX runtime's fatal end: 'F1203 16:01:14.54 11999 client.h:80] Terminating process
# because the JAX distributed service detected fatal errors. ...'
_FATAL = re.compile(r"^F\d{4} .*(Terminating process|[Cc]oordination)")
_HEARTBEATS = re.compile(r"stopped sending heartbeats\):\s*\n?([\d,\s]+)")
_LEADER = ("leader task was preempted", "Failed to send RPC to coordination service")


def supervised() -> bool:
    """Whether this process is the training child of a launcher."""
    return SUPERVISED_VARIABLE in os.environ


def use_python_streams() -> None:
    """In the child: Python's stdout and stderr to the launcher's (fds 1 and 2 stay the
    pipes that carry what C++ writes)."""
    stdout_fd, stderr_fd = map(int, os.environ[SUPERVISED_VARIABLE].split(","))
    sys.stdout = os.fdopen(stdout_fd, "w", buffering=1)
    sys.stderr = os.fdopen(stderr_fd, "w", buffering=1)
    from absl import logging as absl_logging
    absl_logging.get_absl_handler().python_handler.stream = sys.stderr


def supervise(command: list[str], process_id: int, verbose: bool) -> int:
    """Runs `command` (the training process of process `process_id`) to its end; returns its
    exit status, or EXIT_LOST after the runtime's fatal end (with one line on stderr)."""
    python_fds = (os.dup(1), os.dup(2))
    (stdout_read, stdout_write), (read_end, write_end) = os.pipe(), os.pipe()
    env = {**os.environ, SUPERVISED_VARIABLE: ",".join(map(str, python_fds))}
    child = subprocess.Popen(command, stdout=stdout_write, stderr=write_end, env=env,
                             pass_fds=python_fds, preexec_fn=_die_with_parent)
    for fd in (stdout_write, write_end, *python_fds):
        os.close(fd)
    for signum in (signal.SIGINT, signal.SIGTERM):   # the child stops at a checkpoint
        signal.signal(signum, lambda number, frame: child.send_signal(number))
    threading.Thread(target=_pass_stdout, args=(os.fdopen(stdout_read, errors="replace"),
                                                verbose), daemon=True).start()
    lines = _RuntimeLines(os.fdopen(read_end, errors="replace"), 0.0 if verbose else HOLD_S)
    while child.poll() is None:
        lines.show_due()
        time.sleep(0.1)
    lines.reader.join(timeout=2.0)   # the rest of the pipe (its workers may keep it open)
    if not lines.fatal:
        lines.show_due(everything=True)
        return child.returncode if child.returncode >= 0 else 128 - child.returncode
    print(f"error: {lost_process_line(lines.text(), process_id)}", file=sys.stderr,
          flush=True)
    return EXIT_LOST


def await_runtime_end(error: Exception) -> None:
    """In the child, after a collective failed (gloo: 'Connection reset by peer'): a process
    was lost, and JAX's runtime ends this one within HEARTBEAT_TIMEOUT_S, naming it; if it
    does not, one line and exit here."""
    time.sleep(3 * HEARTBEAT_TIMEOUT_S)
    first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
    print(f"error: a collective operation across the processes failed ({first}). The "
          "workdir keeps the last checkpoint: relaunch the same command on every process "
          "to resume", file=sys.stderr, flush=True)
    os._exit(EXIT_LOST)


def lost_process_line(runtime_text: str, process_id: int) -> str:
    """The line that replaces the runtime's fatal end, naming the lost process from its
    text (the heartbeat timeout names them; a lost process 0 is a lost coordinator)."""
    silent = _HEARTBEATS.search(runtime_text)
    if silent:
        ids = [int(i) for i in re.findall(r"\d+", silent.group(1))]
        lost = (f"process {ids[0]}" if len(ids) == 1
                else "processes " + ", ".join(map(str, ids)))
        lost += f" of the run (no heartbeat for {HEARTBEAT_TIMEOUT_S} s)"
    elif any(text in runtime_text for text in _LEADER):
        lost = "process 0 of the run (the coordinator)"
    else:
        lost = "a process of the run"
    return (f"lost {lost}; process {process_id} stopped too. The workdir keeps the last "
            "checkpoint: relaunch the same command on every process to resume")


def _pass_stdout(stream, verbose: bool) -> None:
    """What C++ writes on the child's stdout, but gloo's connection notes ('[Gloo] Rank 0 is
    connected to 1 peer ranks. Expected number of connected peer ranks is : 1', interleaved
    between threads) unless verbose."""
    for line in stream:
        if verbose or "peer ranks" not in line:
            sys.stdout.write(line)
            sys.stdout.flush()


class _RuntimeLines:
    """The child's fd-2 lines, read by a thread and shown `hold_s` after they came, unless
    a fatal line came (then none is shown)."""

    def __init__(self, stream, hold_s: float):
        self.hold_s, self.fatal = hold_s, False
        self.pending: collections.deque = collections.deque()
        self.recent: collections.deque = collections.deque(maxlen=200)
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.reader.start()

    def _read(self, stream) -> None:
        for line in stream:
            with self.lock:
                self.recent.append(line)
                self.fatal = self.fatal or bool(_FATAL.match(line))
                self.pending.append((time.monotonic(), line))

    def show_due(self, everything: bool = False) -> None:
        with self.lock:
            while self.pending and not self.fatal and (
                    everything or time.monotonic() - self.pending[0][0] >= self.hold_s):
                sys.stderr.write(self.pending.popleft()[1])
            sys.stderr.flush()

    def text(self) -> str:
        with self.lock:
            return "".join(self.recent)


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the launcher dies (Linux; elsewhere nothing)."""
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except (AttributeError, OSError):
        pass
