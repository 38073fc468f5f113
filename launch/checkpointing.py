"""Orbax checkpoints of a whole run: agent state, replay contents and loop counters.

Each checkpoint is one orbax step directory holding three items: `agent` (the AgentState
pytree), `replay` (the replay buffer's arrays) and `loop` (JSON counters and the run key).
Orbax writes a step to a temporary directory and renames it when complete, so a run killed
at any moment (SIGKILL included) resumes from its last complete checkpoint.
"""
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


class RunCheckpointer:
    """Saves and restores run checkpoints under `directory`, keeping the newest `keep`."""

    def __init__(self, directory: str, keep: int = 2):
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                               enable_async_checkpointing=False)
        self._manager = ocp.CheckpointManager(os.path.abspath(directory), options=options,
                                              item_names=("agent", "replay", "loop"))

    def latest_frame(self) -> int | None:
        """Frame of the newest complete checkpoint, or None."""
        return self._manager.latest_step()

    def save(self, frame: int, agent_state: Any, replay_state: dict, loop_state: dict) -> None:
        """Writes checkpoint `frame` and waits until it is complete on disk."""
        args = ocp.args.Composite(agent=ocp.args.StandardSave(agent_state),
                                  replay=ocp.args.StandardSave(replay_state),
                                  loop=ocp.args.JsonSave(loop_state))
        self._manager.save(frame, args=args, force=True)
        self._manager.wait_until_finished()

    def restore(self, frame: int, agent_template: Any) -> tuple[Any, dict, dict]:
        """(agent_state, replay_state, loop_state) of checkpoint `frame`: the agent state
        shaped like `agent_template`, the replay arrays as saved (numpy, their length is the
        number of timesteps written; a dict of them per seed for a multi-seed run), the
        loop counters as saved."""
        # Restored into host numpy arrays, then placed on the default device.
        host_template = jax.tree.map(lambda x: np.zeros(np.shape(x), x.dtype), agent_template)
        args = ocp.args.Composite(agent=ocp.args.StandardRestore(host_template),
                                  replay=ocp.args.StandardRestore(),  # numpy, as saved
                                  loop=ocp.args.JsonRestore())
        restored = self._manager.restore(frame, args=args)
        replay = jax.tree.map(np.asarray, dict(restored.replay))  # nested per seed or flat
        agent = jax.tree.map(jax.device_put, restored.agent)
        return agent, replay, restored.loop

    def close(self) -> None:
        self._manager.close()
