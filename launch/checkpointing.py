"""Orbax checkpoints of a whole run: agent state, replay contents and loop counters.

Each checkpoint is one orbax step directory holding three items: `agent` (the AgentState
pytree), `replay` (the replay buffer's arrays) and `loop` (JSON counters and the run key).
With several processes (a multi-host run) the agent state is written through orbax's
multi-process support (each process its own shards), and each process writes the replays
of its seeds to `<workdir>/replays/<frame>/process_<i>.npz` before the orbax step begins,
so a complete orbax step always has every process's replays.
Orbax writes a step to a temporary directory and renames it when complete, so a run killed
at any moment (SIGKILL included) resumes from its last complete checkpoint. A checkpoint
that is complete but cannot be restored (a truncated file after a full disk or a killed
copy) is skipped with a warning by `restore_newest`: it is moved, never deleted, to
`<workdir>/unrestorable_checkpoints/`, and the run resumes from the newest one that
restores. With several processes, one that restores on every process: process 0 moves the
others aside and every process follows it to the same frame.
"""
import os
import shutil
import sys
import time
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils


def _processes_that_failed(failed: bool) -> list[int]:
    """The processes for which `failed` holds (every process calls this together)."""
    if jax.process_count() == 1:
        return [0] if failed else []
    flags = multihost_utils.process_allgather(np.asarray([failed]), tiled=True)
    return [index for index, flag in enumerate(flags) if flag]


class RunCheckpointer:
    """Saves and restores run checkpoints under `directory`, keeping the newest `keep`."""

    def __init__(self, directory: str, keep: int = 2):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                               enable_async_checkpointing=False)
        self._manager = ocp.CheckpointManager(self.directory, options=options,
                                              item_names=("agent", "replay", "loop"))

    def latest_frame(self) -> int | None:
        """Frame of the newest complete checkpoint, or None."""
        return self._manager.latest_step()

    def save(self, frame: int, agent_state: Any, replay_state: dict, loop_state: dict) -> None:
        """Writes checkpoint `frame` and waits until it is complete on disk (every process
        calls it together; replay_state holds this process's seeds)."""
        if jax.process_count() > 1:
            self._save_local_replays(frame, replay_state)
            replay_state = {"num_processes": np.int32(jax.process_count())}
        args = ocp.args.Composite(agent=ocp.args.StandardSave(agent_state),
                                  replay=ocp.args.StandardSave(replay_state),
                                  loop=ocp.args.JsonSave(loop_state))
        self._manager.save(frame, args=args, force=True)
        self._manager.wait_until_finished()
        if jax.process_count() > 1 and jax.process_index() == 0:
            kept = {str(step) for step in self._manager.all_steps()}
            for name in os.listdir(self._replays_dir):
                if name not in kept and name.isdigit():
                    shutil.rmtree(os.path.join(self._replays_dir, name), ignore_errors=True)

    @property
    def _replays_dir(self) -> str:
        return os.path.join(os.path.dirname(self.directory), "replays")

    def _local_replays_path(self, frame: int) -> str:
        return os.path.join(self._replays_dir, str(frame),
                            f"process_{jax.process_index()}.npz")

    def _save_local_replays(self, frame: int, replay_state: dict) -> None:
        path = self._local_replays_path(frame)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        flat = {f"{seed}/{name}": value for seed, arrays in replay_state.items()
                for name, value in arrays.items()}
        with open(path + ".tmp", "wb") as file:
            np.savez(file, **flat)
        os.replace(path + ".tmp", path)

    def _load_local_replays(self, frame: int) -> dict:
        with np.load(self._local_replays_path(frame)) as data:
            nested: dict = {}
            for key in data.files:
                seed, name = key.split("/", 1)
                nested.setdefault(seed, {})[name] = data[key]
        return nested

    def restore(self, frame: int, agent_template: Any) -> tuple[Any, dict, dict]:
        """(agent_state, replay_state, loop_state) of checkpoint `frame`: the agent state
        shaped like `agent_template`, the replay arrays as saved (numpy, their length is the
        number of timesteps written; a dict of them per seed for a multi-seed run), the
        loop counters as saved."""
        # Restored into host numpy arrays (every process reads them whole).
        host_template = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), agent_template)
        args = ocp.args.Composite(agent=ocp.args.StandardRestore(host_template),
                                  replay=ocp.args.StandardRestore(),  # numpy, as saved
                                  loop=ocp.args.JsonRestore())
        restored = self._manager.restore(frame, args=args)
        replay = (self._load_local_replays(frame) if jax.process_count() > 1
                  else jax.tree.map(np.asarray, dict(restored.replay)))  # per seed, or flat
        agent = jax.tree.map(np.asarray, restored.agent)
        return agent, replay, restored.loop

    def restore_loop(self, frame: int) -> dict:
        """The `loop` item of checkpoint `frame` alone (its counters, as saved)."""
        return self._manager.restore(frame, args=ocp.args.Composite(
            loop=ocp.args.JsonRestore())).loop

    def restore_newest(self, agent_template: Any) -> tuple[int, Any, dict, dict] | None:
        """(frame, agent_state, replay_state, loop_state) of the newest checkpoint that
        restores, or None when there is none. Each newer one that fails is moved aside to
        `<workdir>/unrestorable_checkpoints/<frame>-<time>` with a warning naming it."""
        restored = self.restore_newest_with(lambda frame: self.restore(frame, agent_template))
        return None if restored is None else (restored[0], *restored[1])

    def restore_newest_with(self, restore_one: Callable[[int], Any]) -> tuple[int, Any] | None:
        """(frame, restore_one(frame)) of the newest checkpoint for which restore_one does not
        raise, or None when there is none; each newer one is moved aside, as by
        `restore_newest`. With several processes (every one calls this together) a checkpoint
        restores when it restores on every process: process 0 moves the others aside, and
        every process goes on to the same older frame."""
        for frame in sorted(self._manager.all_steps(), reverse=True):
            try:
                return_value, error = restore_one(frame), None
            except Exception as raised:  # noqa: BLE001 - any failure: try an older one
                return_value, error = None, raised
            failed = _processes_that_failed(error is not None)
            if not failed:
                return frame, return_value
            if jax.process_index() == 0:
                self._move_aside(frame, error or RuntimeError(
                    f"process {', '.join(map(str, failed))} could not restore it"))
            if jax.process_count() > 1:
                multihost_utils.sync_global_devices(f"moved aside checkpoint {frame}")
                self._manager.reload()
        return None

    def _move_aside(self, frame: int, error: Exception) -> None:
        """Moves checkpoint `frame` (and its processes' replays) to
        <workdir>/unrestorable_checkpoints/<frame>-<time>, with a warning."""
        source = os.path.join(self.directory, str(frame))
        aside = os.path.join(os.path.dirname(self.directory), "unrestorable_checkpoints",
                             f"{frame}-{time.strftime('%Y%m%d-%H%M%S')}")
        os.makedirs(os.path.dirname(aside), exist_ok=True)
        shutil.move(source, aside)
        replays = os.path.join(self._replays_dir, str(frame))
        if os.path.isdir(replays):
            shutil.move(replays, os.path.join(aside, "replays"))
        self._manager.reload()
        reason = (str(error).strip().splitlines()[0][:200] if str(error)
                  else type(error).__name__)
        print(f"warning: checkpoint {source} cannot be restored ({reason}); moved to "
              f"{aside} and trying an older one", file=sys.stderr, flush=True)

    def close(self) -> None:
        self._manager.close()
