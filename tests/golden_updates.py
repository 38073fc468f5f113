"""Golden update values: every preset and two full combinations, at a fixed seed on tiny
inputs, recorded before the losses moved into `agents/losses.py` (issue 11).

`compute(name, overrides)` runs three jitted updates from a fixed init on fixed random
batches and returns each update's metrics and a checksum of the final state (per state
group: the float64 sum and sum of absolute values of its leaves). `test_golden.py` checks
them against `golden/update_values.json`; regenerate only for an intended change:

    python -m tests.golden_updates     # rewrites tests/golden/update_values.json
"""
import json
import os

import jax
import numpy as np
from dm_env import specs

from pixelzoo import agents
from pixelzoo.replay import Batch

GOLDEN_PATH = os.path.join(os.path.dirname(__file__), "golden", "update_values.json")
IMAGE, ACTION_DIM, BATCH, NUM_UPDATES = 20, 2, 6, 3
PIXEL_SPEC = specs.Array((IMAGE, IMAGE, 9), np.uint8, "pixels")
ACTION_SPEC = specs.BoundedArray((ACTION_DIM,), np.float32, -1.0, 1.0, "action")
SMALL = dict(hidden_dim=16, feature_dim=8, batch_size=BATCH, replay_capacity=100)
CASES = {name: (name, {}) for name in ("drqv2", "drq", "flare", "alix", "gpl", "d2rl")}
CASES["ddpg_all_parts"] = ("alix", dict(encoder="flare", critic="gpl", num_critics=3,
                                        mlp="d2rl", mlp_depth=3))
CASES["sac_all_parts"] = ("drq", dict(encoder="flare", critic="gpl", num_critics=3,
                                      mlp="d2rl", mlp_depth=3))


def batch(seed: int) -> Batch:
    rng = np.random.default_rng(seed)
    obs = lambda: rng.integers(0, 256, (BATCH, *PIXEL_SPEC.shape), dtype=np.uint8)
    return Batch(obs=obs(), action=rng.uniform(-1, 1, (BATCH, ACTION_DIM)).astype(np.float32),
                 reward=rng.uniform(0, 1, BATCH).astype(np.float32),
                 discount=np.full(BATCH, 0.99 ** 3, np.float32), next_obs=obs())


def state_checksum(state) -> dict[str, list[float]]:
    """Per state group ('params/actor', 'opt_states/critic', ...): [sum, sum of |x|]."""
    sums = {}
    for field in ("params", "target_params", "opt_states"):
        for group, tree in getattr(state, field).items():
            leaves = [np.asarray(x, np.float64) for x in jax.tree_util.tree_leaves(tree)]
            sums[f"{field}/{group}"] = [float(sum(x.sum() for x in leaves)),
                                        float(sum(np.abs(x).sum() for x in leaves))]
    sums["update_step"] = [float(state.update_step)] * 2
    return sums


def compute(name: str, overrides: dict) -> dict:
    agent = agents.make(name, PIXEL_SPEC, ACTION_SPEC, **{**SMALL, **overrides})
    state = jax.jit(agent.init)(jax.random.key(0))
    update = jax.jit(agent.update)
    metrics = []
    for index in range(NUM_UPDATES):
        state, values = update(state, batch(index), jax.random.key(100 + index))
        metrics.append({k: float(v) for k, v in sorted(values.items())})
    return {"metrics": metrics, "state": state_checksum(state)}


if __name__ == "__main__":
    golden = {case: compute(*CASES[case]) for case in CASES}
    with open(GOLDEN_PATH, "w") as file:
        json.dump(golden, file, indent=1, sort_keys=True)
    print(f"wrote {GOLDEN_PATH}")
