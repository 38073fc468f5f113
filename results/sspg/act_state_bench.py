"""Acting cost of SSPG on state cartpole (1 action), 256-unit MLPs, 3 seeds vmapped, at
initialisation: ms per exploration and per evaluation act call (mean of 20 after a warm-up).

    python results/sspg/act_state_bench.py
"""
import time, jax, jax.numpy as jnp, numpy as np
from dm_env import specs
from pixelzoo import agents
obs_spec = specs.Array((5,), np.float32); act_spec = specs.BoundedArray((1,), np.float32, -1, 1)
ag = agents.make("sspg", obs_spec, act_spec, obs_type="state", hidden_dim=256)
states = jax.tree.map(lambda *x: jnp.stack(x), *[ag.init(jax.random.key(i)) for i in range(3)])
for ev in (False, True):
    f = jax.jit(jax.vmap(lambda s, o, k: ag.act_and_update(s, o, k, eval_mode=ev)))
    obs = jnp.ones((3, 1, 5)); keys = jax.random.split(jax.random.key(0), 3)
    jax.block_until_ready(f(states, obs, keys))
    t = time.perf_counter()
    for i in range(20): a, acting = jax.block_until_ready(f(states, obs, keys))
    print("eval" if ev else "explore", (time.perf_counter() - t) / 20 * 1000, "ms", acting["window_steps_sum"])
