"""The (seed, data) mesh on 4 CPU devices, for tests/test_learner.py (run in a subprocess
with XLA_FLAGS=--xla_force_host_platform_device_count=4).

    python -m tests.seed_mesh_worker <workdir>

Trains 4 single-seed runs on one device each, a 4-seed run on 4 devices (one seed per
device) and a 2-seed run on 4 devices (two devices per seed), checks where each seed's
state and batch live, and compares the multi-seed states with the single-seed ones, seed
for seed. Prints 'ok' and the checks made.
"""
import os
import sys

import jax
import numpy as np

from pixelzoo import agents, envs
from pixelzoo.launch import loop
from pixelzoo.launch.checkpointing import RunCheckpointer
from pixelzoo.replay import Batch

NUM_FRAMES = 400


def spec(seed: int, num_seeds: int) -> dict:
    config = agents.build_config(
        "drqv2", obs_type="state", aug="none", hidden_dim=16, feature_dim=8, batch_size=8,
        action_repeat=8, num_seed_frames=200, num_eval_episodes=0,
        checkpoint_every_frames=400, log_every_frames=400, replay_capacity=2000)
    return {"agent": "drqv2", "task": "cartpole_swingup", "seed": seed,
            "num_seeds": num_seeds, "num_frames": NUM_FRAMES, "config": config.to_dict()}


def check_placement(num_seeds: int, agent) -> str:
    """Each seed's state on its own devices only; each seed's batch split over them."""
    mesh = agents.make_seed_mesh(num_seeds, 4)
    learner = agents.Learner(agent, mesh, num_seeds=num_seeds)
    states = learner.put_state(jax.vmap(agent.init)(jax.random.split(jax.random.key(0),
                                                                     num_seeds)))
    leaf = jax.tree.leaves(states.params["critic"])[0]
    per_device = 4 // num_seeds
    devices_of_seed = {}
    for shard in leaf.addressable_shards:
        seeds = range(leaf.shape[0])[shard.index[0]]
        assert len(seeds) == 1 and shard.data.shape[0] == 1, shard.index
        devices_of_seed.setdefault(seeds[0], set()).add(shard.device)
    assert sorted(devices_of_seed) == list(range(num_seeds))
    assert all(len(d) == per_device for d in devices_of_seed.values())
    assert len(set().union(*devices_of_seed.values())) == 4       # no device holds two seeds
    rng = np.random.default_rng(0)
    batches = Batch(*(rng.normal(size=(1, num_seeds, 8, *tail)).astype(np.float32)
                      for tail in ((5,), (1,), (), (), (5,))))
    obs = learner.put_batch(batches).obs
    assert {shard.data.shape for shard in obs.addressable_shards} == {(1, 1, 8 // per_device, 5)}
    return f"{num_seeds} seeds on 4 devices: {per_device} device(s) per seed"


def main(workdir: str) -> None:
    assert jax.device_count() == 4
    env = envs.make("cartpole_swingup", seed=0, obs_type="state", action_repeat=8)
    agent = agents.make_from_config("drqv2", agents.Config.from_dict(spec(0, 1)["config"]),
                                    env.observation_spec(), env.action_spec())
    checks = [check_placement(4, agent), check_placement(2, agent)]
    template = agent.init(jax.random.key(0))
    singles = []
    for seed in range(4):
        path = os.path.join(workdir, f"single-{seed}")
        assert loop.train(spec(seed, 1), path, should_stop=lambda: False, num_devices=1)
        singles.append(RunCheckpointer(f"{path}/checkpoints").restore(NUM_FRAMES, template)[0])
    for num_seeds in (4, 2):
        path = os.path.join(workdir, f"multi-{num_seeds}")
        assert loop.train(spec(0, num_seeds), path, should_stop=lambda: False, num_devices=4)
        stacked, _, _ = RunCheckpointer(f"{path}/checkpoints").restore(
            NUM_FRAMES, jax.tree.map(lambda x: np.stack([x] * num_seeds), template))
        for seed in range(num_seeds):
            for got, want in zip(jax.tree.leaves(jax.tree.map(lambda x: x[seed], stacked)),
                                 jax.tree.leaves(singles[seed]), strict=True):
                np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)
        checks.append(f"{num_seeds}-seed run on 4 devices equals the single-seed runs")
    print("ok", "; ".join(checks), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
