"""The start of a multi-process run: every process meets process 0 before JAX's runtime
starts, so that a run that cannot start ends within a time limit, on every process, with one
line saying why.

    verdict = meet(address, num_processes, process_id, settings, timeout_s, decide)

Process 0 listens on the coordinator's host:port (the port JAX's coordinator takes next,
once every process has met). Each other process connects, retrying until `timeout_s`, and
sends its id and `settings` (the run's identity, workdir, process count, ...). When all
have come, process 0 compares every process's settings with its own and, if they agree,
calls `decide()` (it takes the workdir's lock); then it sends every process the same verdict,
None to go on or the line that refuses the run. What ends a start here, in one line:

- process 0 unreachable (no process 0, a wrong address): on each process that waited;
- processes that never came (--num_processes larger than launched): on every process;
- settings that differ between processes (process count, config, workdir, seeds);
- a second process 0 on the same port, or two processes with one id;
- `decide` refusing (a second launch on a workdir in use).

The exchange is one JSON line each way over TCP; nothing here needs JAX.
"""
import errno
import json
import os
import select
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

RETRY_S = 0.25          # a process retries connecting to process 0 this often


class StartError(Exception):
    """The run cannot start: the message is the one line every process prints."""


def meet(address: str, num_processes: int, process_id: int, settings: Mapping[str, Any],
         timeout_s: float, decide: Callable[[], str | None] = lambda: None) -> None:
    """Meets every process of the run at `address` (process 0's host:port). Returns when all
    came, agree and `decide()` (called on process 0 only) returned None; else raises
    StartError, on every process that came, with the same line where process 0 gave it."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if process_id == 0:
        return _host(int(port), address, num_processes, dict(settings), timeout_s, decide)
    return _join(host, int(port), address, process_id, dict(settings), timeout_s)


# ----------------------------------------------------------------------------- process 0
def _host(port: int, address: str, num_processes: int, settings: dict, timeout_s: float,
          decide: Callable[[], str | None]) -> None:
    server = _listen(port, address)
    peers: dict[int, socket.socket] = {}
    try:
        peer_settings = _gather(server, peers, num_processes, timeout_s, address)
        verdict = _differences(settings, peer_settings) or decide()
        for connection in peers.values():
            _send(connection, {"verdict": verdict})
    finally:
        for connection in peers.values():
            connection.close()
        server.close()
    if verdict:
        raise StartError(verdict)


def _listen(port: int, address: str) -> socket.socket:
    """A listening socket on every interface (IPv6 and IPv4 where it can). StartError when the
    port is taken: by another process 0 of the same run, or by anything else."""
    try:
        server = socket.create_server(("", port), family=socket.AF_INET6, dualstack_ipv6=True,
                                      reuse_port=False)
    except (OSError, ValueError) as error:
        if getattr(error, "errno", None) == errno.EADDRINUSE:
            raise StartError(f"--coordinator_address={address}: port {port} is in use on "
                             "this host; is a second process given --process_id=0 (or is "
                             "another program using the port)? Each id 0..N-1 once, and a "
                             "free port") from None
        server = socket.create_server(("", port))     # no IPv6 here
    return server


def _gather(server: socket.socket, peers: dict[int, socket.socket], num_processes: int,
            timeout_s: float, address: str) -> dict[int, dict]:
    """Accepts processes 1..N-1 until all came or `timeout_s` passed: their settings."""
    deadline = time.monotonic() + timeout_s
    received: dict[int, dict] = {}
    while len(received) < num_processes - 1:
        left = deadline - time.monotonic()
        if left <= 0:
            missing = [i for i in range(1, num_processes) if i not in received]
            line = (f"{_processes(missing)} of {num_processes} did not join process 0 at "
                    f"{address} within {timeout_s:g} s (--startup_timeout_s); start every "
                    "process, with the same --num_processes, and relaunch")
            for connection in peers.values():
                _send(connection, {"verdict": line})
            raise StartError(line)
        if not select.select([server], [], [], min(left, 1.0))[0]:
            continue
        connection, _ = server.accept()
        hello = _receive(connection, timeout_s=5.0)
        process_id = hello.get("process_id") if hello else None
        problem = (None if hello else "sent nothing")
        if hello and not (isinstance(process_id, int) and 0 < process_id < num_processes):
            problem = (f"--process_id={process_id} is not among process 0's "
                       f"--num_processes={num_processes} (ids 1..{num_processes - 1} join it)")
        elif hello and process_id in received:
            problem = (f"--process_id={process_id} is given to two processes "
                       f"({received[process_id]['where']} and {hello['settings']['where']}); "
                       "give each id 0..N-1 once")
        if problem:
            _send(connection, {"verdict": problem})
            connection.close()
            continue
        peers[process_id] = connection
        received[process_id] = hello["settings"]
    return received


def _differences(own: dict, others: Mapping[int, dict]) -> str | None:
    """The line naming every setting in which a process differs from process 0, or None."""
    parts = []
    for process_id, settings in sorted(others.items()):
        fields = [f"{key} {settings.get(key)!r} (process 0: {own.get(key)!r})"
                  for key in sorted(set(own) | set(settings))
                  if key != "where" and settings.get(key) != own.get(key)]
        if fields:
            parts.append(f"process {process_id} has " + ", ".join(fields))
    if not parts:
        return None
    return ("the processes were started with different settings: " + "; ".join(parts)
            + ". Start every process with the same command (only --process_id differs)")


# ----------------------------------------------------------------------------- processes 1..N-1
def _join(host: str, port: int, address: str, process_id: int, settings: dict,
          timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            connection = socket.create_connection((host, port), timeout=RETRY_S * 4)
            break
        except OSError:
            if time.monotonic() >= deadline:
                raise StartError(f"process {process_id} could not reach process 0 at "
                                 f"{address} within {timeout_s:g} s (--startup_timeout_s); "
                                 "is process 0 running, and is the address right?") from None
            time.sleep(RETRY_S)
    with connection:
        _send(connection, {"process_id": process_id, "settings": settings})
        # Process 0 answers when every process came (or at its own deadline).
        reply = _receive(connection, timeout_s=max(deadline - time.monotonic(), 0) + 30.0)
    if reply is None:
        raise StartError(f"process 0 at {address} ended the start without a verdict "
                         "(see its output); relaunch every process")
    if reply["verdict"]:
        raise StartError(reply["verdict"])


# ----------------------------------------------------------------------------- wire
def _send(connection: socket.socket, message: dict) -> None:
    try:
        connection.sendall((json.dumps(message) + "\n").encode())
    except OSError:
        pass     # that process is gone; it has its own line


def _receive(connection: socket.socket, timeout_s: float) -> dict | None:
    """One JSON line, or None when the other side closed or went silent for timeout_s."""
    connection.settimeout(timeout_s)
    data = b""
    try:
        while not data.endswith(b"\n"):
            chunk = connection.recv(65536)
            if not chunk:
                return None
            data += chunk
    except OSError:
        return None
    return json.loads(data)


def _processes(ids: list[int]) -> str:
    """'process 2', 'processes 2, 3'."""
    return ("process " if len(ids) == 1 else "processes ") + ", ".join(map(str, ids))


def where() -> str:
    """This process, as the lines name it: 'pid 123 on node001'."""
    return f"pid {os.getpid()} on {socket.gethostname()}"
