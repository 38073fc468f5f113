"""Environments in worker processes: stepping and rendering run beside the learner.

    pool = envs.EnvPool([dict(task="walker_walk", seed=s) for s in (1, 2)])
    timesteps = pool.reset()                     # one TimeStep per environment
    pool.step_async(actions)                     # [N, A]: all step in parallel ...
    ...                                          # ... while this process does other work
    timesteps = pool.step_wait()

Each worker builds its environments with `envs.make(**kwargs)` in a fresh Python process
and steps them on request, so the workers step in parallel and the caller can overlap
them with its own work (the launcher overlaps them with the update). The caller may keep
some environments itself (`in_process`): those step inside step_wait, while it would
otherwise only wait for the workers. Values are exactly those of the same environments in
this process. Workers ignore SIGINT and SIGTERM (the parent decides when to stop), and exit
when the parent closes the pool or dies.

A worker imports only this package and dm_control (about 1 s), not the caller's main
module as multiprocessing's spawn would (launch.train imports jax: 2.6 s more per worker).
"""
import json
from multiprocessing.connection import Connection
import os
import signal
import socket
import subprocess
import sys
import traceback
from typing import Any, Sequence

import dm_env
import numpy as np

from pixelzoo.envs import dmc

# The worker's command: python -c _WORKER_CODE <socket fd> <parent's sys.path as JSON>.
_WORKER_CODE = ("import json, sys; sys.path[:0] = json.loads(sys.argv[2]); "
                "from pixelzoo.envs.pool import _serve_socket; _serve_socket(int(sys.argv[1]))")


def _serve_socket(fd: int) -> None:
    """Worker process entry: the first message on socket `fd` is the list of make()
    kwargs of its environments."""
    connection = Connection(fd)
    try:
        make_kwargs = connection.recv()
    except (EOFError, OSError):
        return
    _serve(connection, make_kwargs)


def _serve(connection, make_kwargs: list[dict]) -> None:
    """Worker main loop: build its environments, then answer commands until 'close'."""
    # Ctrl-C (SIGINT) and SLURM/timeout (SIGTERM) reach the whole process group: the parent
    # handles them (it saves a checkpoint, then closes the pool); a worker ends when told
    # to, or when its socket closes because the parent is gone.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    group = _EnvGroup(make_kwargs)
    connection.send(group.started)
    if group.started[0] != "ok":
        return
    while True:
        try:
            command, argument = connection.recv()
        except (EOFError, OSError):   # the parent is gone
            return
        connection.send(group.answer(command, argument))
        if command == "close":
            return


class _EnvGroup:
    """One worker's environments and its answers to commands, as ("ok", result) or
    ("error", traceback).

    Commands act on all of its environments, in order: ('reset', None) and ('step',
    actions [n, A]) answer a list of TimeSteps, ('remake', [changes]) rebuilds them;
    ('call', (i, command, argument)) runs one command on environment i alone; ('close',
    None) closes them."""

    def __init__(self, make_kwargs: list[dict]):
        self.make_kwargs = make_kwargs
        try:
            self.envs = [dmc.make(**kwargs) for kwargs in make_kwargs]
            env = self.envs[0]
            self.started = ("ok", (env.observation_spec(), env.action_spec(),
                                   env.action_repeat))
        except Exception:  # noqa: BLE001 - reported to the parent, which raises it
            self.envs, self.started = [], ("error", traceback.format_exc())

    def answer(self, command: str, argument: Any) -> tuple[str, Any]:
        try:
            return "ok", self._run(command, argument)
        except Exception:  # noqa: BLE001
            return "error", traceback.format_exc()

    def _run(self, command: str, argument: Any) -> Any:
        if command == "step":
            return [env.step(action) for env, action in zip(self.envs, argument, strict=True)]
        if command == "reset":
            return [env.reset() for env in self.envs]
        if command == "call":
            index, inner, inner_argument = argument
            return self._one(self.envs[index], inner, inner_argument)
        if command == "remake":      # the same kind of environments, new settings
            self._run("close", None)
            self.envs = [dmc.make(**{**kwargs, **change})
                         for kwargs, change in zip(self.make_kwargs, argument, strict=True)]
            return None
        if command == "close":
            for env in self.envs:
                env.close()
            return None
        raise ValueError(f"unknown command {command!r}")

    @staticmethod
    def _one(env: dmc.DMCEnv, command: str, argument: Any) -> Any:
        if command == "reset":
            return env.reset()
        if command == "step":
            return env.step(argument)
        if command == "render":
            return env.render(argument)
        raise ValueError(f"unknown command {command!r}")


class _InProcessConnection:
    """A worker's group kept in the calling process, behind a worker's connection: a
    command runs when its answer is received, so the pool's caller steps these
    environments while the worker processes step theirs (instead of only waiting)."""

    def __init__(self):
        self._group: _EnvGroup | None = None
        self._answer: tuple[str, Any] | None = None
        self._pending: tuple[str, Any] | None = None

    def send(self, message: Any) -> None:
        if self._group is None:        # the first message: the make() kwargs
            self._group = _EnvGroup(message)
            self._answer = self._group.started
        else:
            self._pending = message

    def recv(self) -> tuple[str, Any]:
        if self._pending is not None:
            (command, argument), self._pending = self._pending, None
            return self._group.answer(command, argument)
        answer, self._answer = self._answer, None
        return answer

    def close(self) -> None:
        pass


def default_num_workers(num_envs: int) -> int:
    """One worker per environment, at most one per CPU core of this machine (none for
    none)."""
    return min(num_envs, os.cpu_count() or 1)


def launcher_split(num_envs: int) -> tuple[int, int]:
    """(environments kept in the launching process, worker processes) for the launcher's
    num_envs environments: one group per core, at most one per environment, the launching
    process being one of them (it would otherwise only wait for the workers); it keeps the
    largest share. BENCHMARKS.md: 8 seeds on 2 cores, 4 kept and one worker was the
    fastest split measured."""
    groups = max(1, min(num_envs, os.cpu_count() or 1))
    kept = -(-num_envs // groups)
    workers = min(num_envs - kept, max(groups - 1, 1))
    return kept, workers


class EnvWorkerError(RuntimeError):
    """An environment raised in its worker process (the message holds its traceback)."""


class EnvPool:
    """N environments in worker processes, stepped in parallel (each worker steps its own
    group of environments in order), and optionally a first group kept in this process."""

    def __init__(self, make_kwargs: Sequence[dict[str, Any]], num_workers: int | None = None,
                 worker_env: Sequence[dict[str, str]] | None = None, in_process: int = 0):
        """Starts the workers and returns at once: they build their environments in the
        background (several pools start side by side); the first use waits for them and
        raises EnvWorkerError if one failed.

        num_workers: processes (default: one per environment they hold, at most one per
            CPU core of this machine): they hold contiguous groups of (nearly) equal size
            of the environments not kept in this process. More workers than cores only add
            process switches and messages.
        worker_env: per worker process, environment variables added to this process's
            (e.g. `rendering.worker_render_env`'s EGL device).
        in_process: how many environments (the first ones) this process keeps and steps
            itself, inside step_wait, while the workers step theirs: a caller that would
            only wait for the workers steps environments instead (`launcher_split`).
            Their errors come back as a worker's do.

        Raises:
          RenderingUnavailableError: pixels asked for and no GL backend works (checked
            here, once, so that the workers need not probe).
        """
        count = len(make_kwargs)
        if not 0 <= in_process <= count:
            raise ValueError(f"in_process={in_process} must be in [0, {count}]")
        remote = count - in_process
        num_workers = default_num_workers(remote) if num_workers is None else num_workers
        if not (1 <= num_workers <= remote or num_workers == remote == 0):
            raise ValueError(f"num_workers={num_workers} must be in [1, {remote}] for the "
                             f"{remote} environments not kept in this process")
        for obs_type in sorted({kwargs.get("obs_type", "pixels") for kwargs in make_kwargs}):
            dmc.use_gl_backend(obs_type)    # sets MUJOCO_GL, which the workers inherit
        path = json.dumps([os.path.abspath(entry) for entry in sys.path])
        self._groups = [[in_process + i for i in range(remote)
                         if i * num_workers // remote == worker] for worker in range(num_workers)]
        self._connections, self._processes = [], []
        worker_env = worker_env or [{}] * num_workers
        for group, extra_env in zip(self._groups, worker_env, strict=True):
            parent, child = socket.socketpair()
            process = subprocess.Popen(
                [sys.executable, "-c", _WORKER_CODE, str(child.fileno()), path],
                pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL,
                env={**os.environ, **extra_env} if extra_env else None)
            child.close()
            connection = Connection(parent.detach())
            connection.send([dict(make_kwargs[i]) for i in group])
            self._connections.append(connection)
            self._processes.append(process)
        if in_process:   # first: _receive_all steps it before waiting for the workers
            self._groups.insert(0, list(range(in_process)))
            self._connections.insert(0, _InProcessConnection())
            self._connections[0].send([dict(make_kwargs[i]) for i in range(in_process)])
        self._count = count
        self._pending = False
        self._specs: tuple | None = None

    def _ready(self) -> tuple:
        """(observation_spec, action_spec, action_repeat), once every worker has built its
        environment."""
        if self._specs is None:
            try:
                self._specs = self._receive_all()[0]
            except EnvWorkerError:
                self.close()
                raise
        return self._specs

    @property
    def observation_spec(self):
        return self._ready()[0]

    @property
    def action_spec(self):
        return self._ready()[1]

    @property
    def action_repeat(self) -> int:
        return self._ready()[2]

    def __len__(self) -> int:
        return self._count

    @property
    def num_workers(self) -> int:
        """Worker processes (environments kept in this process are not in one)."""
        return len(self._processes)

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the worker processes."""
        return [process.pid for process in self._processes]

    def _send_all(self, command: str, arguments: Sequence[Any] | None) -> None:
        """Sends each worker the command with its environments' arguments (None: none)."""
        self._ready()
        for connection, group in zip(self._connections, self._groups):
            connection.send((command, None if arguments is None
                             else [arguments[i] for i in group]))

    def _receive_all(self) -> list[Any]:
        """Every worker's answer: the environments' results in order (lists flattened)."""
        results, errors = [], []
        for index, connection in enumerate(self._connections):
            try:
                status, value = connection.recv()
            except (EOFError, OSError):
                status, value = "error", f"worker {index} exited unexpectedly"
            (results if status == "ok" else errors).append(value)
        if errors:
            raise EnvWorkerError("environment worker failed:\n" + errors[0])
        if results and isinstance(results[0], list):
            return [value for worker_results in results for value in worker_results]
        return results

    def reset(self) -> list[dm_env.TimeStep]:
        """Resets every environment; their first TimeSteps."""
        self._send_all("reset", None)
        return self._receive_all()

    def step_async(self, actions: np.ndarray) -> None:
        """Starts every environment's step; actions: [N, A]. Collect with step_wait()."""
        if self._pending:
            raise RuntimeError("step_async called twice without step_wait")
        self._send_all("step", np.asarray(actions))
        self._pending = True

    def step_wait(self) -> list[dm_env.TimeStep]:
        """The TimeSteps of the steps started by step_async."""
        if not self._pending:
            raise RuntimeError("step_wait called without step_async")
        self._pending = False
        return self._receive_all()

    def step(self, actions: np.ndarray) -> list[dm_env.TimeStep]:
        self.step_async(actions)
        return self.step_wait()

    def remake(self, changes: Sequence[dict[str, Any]]) -> None:
        """Rebuilds environment i with its make() arguments updated by changes[i] (e.g. a
        new seed), in its worker."""
        self._send_all("remake", changes)
        self._receive_all()

    def call(self, index: int, command: str, argument: Any = None) -> Any:
        """Runs one command ('reset', 'step', 'render') on environment `index` alone."""
        self._ready()
        worker = next(w for w, group in enumerate(self._groups) if index in group)
        self._connections[worker].send(("call", (self._groups[worker].index(index), command,
                                                 argument)))
        status, value = self._connections[worker].recv()
        if status != "ok":
            raise EnvWorkerError("environment worker failed:\n" + value)
        return value

    def close(self) -> None:
        """Stops the workers (idempotent)."""
        for connection in self._connections:
            try:
                connection.send(("close", None))
            except (BrokenPipeError, OSError):
                pass
            if isinstance(connection, _InProcessConnection):
                connection.recv()   # runs the close
        for process in self._processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for connection in self._connections:
            connection.close()
        self._connections, self._processes, self._count = [], [], 0
