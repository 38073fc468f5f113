"""Issue 18's speed question: SSPG's update compiled for the chain length L it runs
(`sspg_train_program='per_length'`, the preset: one program per L, the Learner reading L
from the state before each call) against one update that always runs 16 steps masked to L
(`'masked'`), at the same L, through `agents.Learner`. Interleaved repeats, median ms.

    python results/sspg/chain_length_bench.py [--obs state|pixels] [--repeats 7]

state: cartpole-sized (5 observations, 1 action), 256-unit MLPs, batch 256, 3 seeds vmapped.
pixels: 84px, 6 actions, batch 256, the preset's 1024-unit MLPs, one seed.
The running average is set to m = 2.5, so L = ceil(m) = 3 (cartpole's L in the state runs).
"""
import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from dm_env import specs

from pixelzoo import agents
from pixelzoo.replay import Batch


def make(obs: str, program: str):
    if obs == "state":
        obs_spec, action_dim, seeds = specs.Array((5,), np.float32), 1, 3
        extra = dict(obs_type="state", aug="none", hidden_dim=256)
    else:
        obs_spec, action_dim, seeds = specs.Array((84, 84, 9), np.uint8), 6, 1
        extra = {}
    action_spec = specs.BoundedArray((action_dim,), np.float32, -1, 1)
    agent = agents.make("sspg", obs_spec, action_spec, sspg_train_program=program, **extra)
    states = jax.vmap(agent.init)(jax.random.split(jax.random.key(0), seeds))
    states = states.replace(acting={**states.acting, "steps_average": jnp.full(
        states.acting["steps_average"].shape, 2.5, jnp.float32)})
    rng = np.random.default_rng(0)
    if obs == "state":
        draw = lambda: rng.normal(size=(seeds, 256, 5)).astype(np.float32)
    else:
        draw = lambda: rng.integers(0, 256, (seeds, 256, 84, 84, 9), dtype=np.uint8)
    batch = Batch(obs=draw(), action=rng.uniform(-1, 1, (seeds, 256, action_dim)).astype(
        np.float32), reward=rng.uniform(size=(seeds, 256)).astype(np.float32),
        discount=np.full((seeds, 256), 0.97, np.float32), next_obs=draw())
    learner = agents.Learner(agent, agents.make_mesh(1), num_seeds=seeds)
    states, keys = learner.put_state(states), jax.random.split(jax.random.key(1), seeds)
    batch = learner.put_batch(jax.tree.map(lambda x: x[None], batch))
    return lambda: jax.block_until_ready(learner.update(states, batch, keys))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--obs", default="state", choices=("state", "pixels"))
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    variants = {"per_length (compiled for L = 3)": make(args.obs, "per_length"),
                "masked (16 steps, masked to L = 3)": make(args.obs, "masked")}
    times = {name: [] for name in variants}
    for name, run in variants.items():
        _, metrics = run()                                   # compile
        print(f"{name}: train_chain_length {np.asarray(metrics['train_chain_length'])}")
    for _ in range(args.repeats):
        for name, run in variants.items():
            start = time.perf_counter()
            run()
            times[name].append(1000 * (time.perf_counter() - start))
    for name, values in times.items():
        print(f"{args.obs}: {name}: median {statistics.median(values):.1f} ms per update "
              f"({', '.join(f'{v:.1f}' for v in values)})")


if __name__ == "__main__":
    main()
