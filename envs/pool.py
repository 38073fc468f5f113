"""Environments in worker processes: stepping and rendering run beside the learner.

    pool = envs.EnvPool([dict(task="walker_walk", seed=s) for s in (1, 2)])
    timesteps = pool.reset()                     # one TimeStep per environment
    pool.step_async(actions)                     # [N, A]: all step in parallel ...
    ...                                          # ... while this process does other work
    timesteps = pool.step_wait()

Each worker builds its environment with `envs.make(**kwargs)` in a fresh Python process
and steps it on request, so N environments step in parallel and the caller can overlap
them with its own work (the launcher overlaps them with the update). Values are exactly
those of the same environments in this process. Workers ignore SIGINT and SIGTERM (the
parent decides when to stop), and exit when the parent closes the pool or dies.

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
    """Worker main loop: build its environments, then answer commands until 'close'.

    Commands act on all of the worker's environments, in order: ('reset', None) and
    ('step', actions [n, A]) answer a list of TimeSteps, ('remake', [changes]) rebuilds
    them; ('call', (i, command, argument)) runs one command on environment i alone."""
    # Ctrl-C (SIGINT) and SLURM/timeout (SIGTERM) reach the whole process group: the parent
    # handles them (it saves a checkpoint, then closes the pool); a worker ends when told
    # to, or when its socket closes because the parent is gone.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        group = [dmc.make(**kwargs) for kwargs in make_kwargs]
        env = group[0]
        connection.send(("ok", (env.observation_spec(), env.action_spec(),
                                env.action_repeat)))
    except Exception:  # noqa: BLE001 - reported to the parent, which raises it
        connection.send(("error", traceback.format_exc()))
        return

    def one(env, command: str, argument: Any) -> Any:
        if command == "reset":
            return env.reset()
        if command == "step":
            return env.step(argument)
        if command == "render":
            return env.render(argument)
        raise ValueError(f"unknown command {command!r}")

    while True:
        try:
            command, argument = connection.recv()
        except (EOFError, OSError):   # the parent is gone
            return
        if command == "close":
            for env in group:
                env.close()
            connection.send(("ok", None))
            return
        try:
            if command == "remake":      # the same kind of environments, new settings
                for env in group:
                    env.close()
                group = [dmc.make(**{**kwargs, **change})
                         for kwargs, change in zip(make_kwargs, argument, strict=True)]
                result = None
            elif command == "call":
                index, inner, inner_argument = argument
                result = one(group[index], inner, inner_argument)
            elif command == "step":
                result = [env.step(action) for env, action in zip(group, argument, strict=True)]
            else:
                result = [one(env, command, argument) for env in group]
            connection.send(("ok", result))
        except Exception:  # noqa: BLE001
            connection.send(("error", traceback.format_exc()))


def default_num_workers(num_envs: int) -> int:
    """One worker per environment, at most one per CPU core of this machine."""
    return max(1, min(num_envs, os.cpu_count() or 1))


class EnvWorkerError(RuntimeError):
    """An environment raised in its worker process (the message holds its traceback)."""


class EnvPool:
    """N environments in worker processes, stepped in parallel (each worker steps its own
    group of environments in order)."""

    def __init__(self, make_kwargs: Sequence[dict[str, Any]], num_workers: int | None = None,
                 worker_env: Sequence[dict[str, str]] | None = None):
        """Starts the workers and returns at once: they build their environments in the
        background (several pools start side by side); the first use waits for them and
        raises EnvWorkerError if one failed.

        num_workers: processes (default: one per environment, at most one per CPU core of
            this machine): environment i lives in worker i * num_workers // N, so the
            workers hold contiguous groups of (nearly) equal size. More workers than cores
            only add process switches and messages.
        worker_env: per worker, environment variables added to this process's (e.g.
            `rendering.worker_render_env`'s EGL device).

        Raises:
          RenderingUnavailableError: pixels asked for and no GL backend works (checked
            here, once, so that the workers need not probe).
        """
        count = len(make_kwargs)
        num_workers = default_num_workers(count) if num_workers is None else num_workers
        if not 1 <= num_workers <= count:
            raise ValueError(f"num_workers={num_workers} must be in [1, {count}]")
        for obs_type in sorted({kwargs.get("obs_type", "pixels") for kwargs in make_kwargs}):
            dmc.use_gl_backend(obs_type)    # sets MUJOCO_GL, which the workers inherit
        path = json.dumps([os.path.abspath(entry) for entry in sys.path])
        self._groups = [[i for i in range(count) if i * num_workers // count == worker]
                        for worker in range(num_workers)]
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
        return len(self._connections)

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
        for process in self._processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for connection in self._connections:
            connection.close()
        self._connections, self._processes, self._count = [], [], 0
