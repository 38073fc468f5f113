"""One process of tests/test_learner.py's two-process jax.distributed test.

    python -m tests.multihost_worker <coordinator host:port> <process id>

Joins a 2-process job (one CPU device each, gloo collectives), runs NUM_UPDATES sharded
updates of a tiny state-based DrQ-v2 in which this process supplies its half of every
batch, saves the parameters to an .npz file and prints its path.
"""
import sys
import tempfile

import jax
import numpy as np
from dm_env import specs

from pixelzoo import agents
from pixelzoo.replay import Batch

NUM_PROCESSES = 2
NUM_UPDATES = 3
BATCH = 8
STATE_SPEC = specs.Array((5,), np.float32, "state")
ACTION_SPEC = specs.BoundedArray((2,), np.float32, -1.0, 1.0, "action")


def make_agent() -> agents.Agent:
    return agents.make("drqv2", STATE_SPEC, ACTION_SPEC, obs_type="state", aug="none",
                       hidden_dim=8, feature_dim=4, batch_size=BATCH, replay_capacity=100,
                       num_seed_frames=0)


def global_batches(step: int) -> Batch:
    """The full batch of update `step`, [1, BATCH, ...] (the same in every process)."""
    rng = np.random.default_rng(step)
    obs = lambda: rng.normal(size=(1, BATCH, 5)).astype(np.float32)
    return Batch(obs=obs(), action=rng.uniform(-1, 1, (1, BATCH, 2)).astype(np.float32),
                 reward=rng.uniform(0, 1, (1, BATCH)).astype(np.float32),
                 discount=np.full((1, BATCH), 0.97, np.float32), next_obs=obs())


def main(coordinator: str, process_id: int) -> None:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator, num_processes=NUM_PROCESSES,
                               process_id=process_id)
    assert jax.device_count() == NUM_PROCESSES and jax.local_device_count() == 1
    agent = make_agent()
    learner = agents.Learner(agent, agents.make_mesh())
    state = learner.put_state(agent.init(jax.random.key(0)))
    share = BATCH // NUM_PROCESSES
    for step in range(NUM_UPDATES):
        local = jax.tree.map(lambda x: x[:, process_id * share:(process_id + 1) * share],
                             global_batches(step))
        state, _ = learner.update(state, learner.put_batch(local), jax.random.key(100 + step))
    params = {jax.tree_util.keystr(path): np.asarray(jax.device_get(leaf.addressable_data(0)))
              for path, leaf in jax.tree_util.tree_leaves_with_path(state.params)}
    with tempfile.NamedTemporaryFile(suffix=".npz", delete=False) as file:
        np.savez(file, **params)
    print(file.name, flush=True)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
