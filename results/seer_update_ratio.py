"""SEER's post-freeze update against the full pixel update, interleaved in one process.

    python results/seer_update_ratio.py [--rounds=5] [--preset=seer] [--batch_size=256]

Builds the preset at 84px with walker_walk's 6 action dimensions, jits the full update and
the post-freeze update (`agent.seer.update_latent`, on stored latents [B, m, 2F]), then
alternates one call of each per round and prints each call's time, the medians and their
ratio. Synthetic batches; the compile calls are not timed. Only the public API is used.
"""
import argparse
import statistics
import time

import jax
import numpy as np
from dm_env import specs

from pixelzoo import agents
from pixelzoo.replay import Batch


def batch(rng, obs_shape, dtype, size: int, action_dim: int) -> Batch:
    obs = lambda: (rng.integers(0, 256, (size, *obs_shape), dtype=np.uint8)
                   if dtype == np.uint8 else rng.normal(size=(size, *obs_shape)).astype(dtype))
    return Batch(obs=obs(), action=rng.uniform(-1, 1, (size, action_dim)).astype(np.float32),
                 reward=rng.uniform(size=size).astype(np.float32),
                 discount=np.full(size, 0.97, np.float32), next_obs=obs())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--preset", default="seer")
    parser.add_argument("--batch_size", type=int, default=256)
    args = parser.parse_args()
    pixels = specs.Array((84, 84, 9), np.uint8, "pixels")
    action_spec = specs.BoundedArray((6,), np.float32, -1.0, 1.0, "action")
    agent = agents.make(args.preset, pixels, action_spec, batch_size=args.batch_size)
    latent_spec = agent.seer.latent_spec
    rng = np.random.default_rng(0)
    full_batch = batch(rng, pixels.shape, np.uint8, args.batch_size, 6)
    latent_batch = batch(rng, latent_spec.shape, np.float32, args.batch_size, 6)
    full_update, latent_update = jax.jit(agent.update), jax.jit(agent.seer.update_latent)
    full_state = jax.jit(agent.init)(jax.random.key(0))
    latent_state = jax.jit(agent.seer.freeze)(full_state)
    timings = {"full": [], "frozen": []}

    def timed(name, update, state, data, key):
        start = time.perf_counter()
        state, metrics = update(state, data, key)
        jax.block_until_ready((state, metrics))
        timings[name].append(time.perf_counter() - start)
        return state

    for step in range(args.rounds + 1):            # round 0 compiles: dropped below
        full_state = timed("full", full_update, full_state, full_batch, jax.random.key(step))
        latent_state = timed("frozen", latent_update, latent_state, latent_batch,
                             jax.random.key(step))
    for name, values in timings.items():
        print(f"{name}: " + ", ".join(f"{1000 * v:.1f}" for v in values[1:]) + " ms")
    full_ms = 1000 * statistics.median(timings["full"][1:])
    frozen_ms = 1000 * statistics.median(timings["frozen"][1:])
    print(f"median full {full_ms:.1f} ms, frozen {frozen_ms:.1f} ms, "
          f"ratio {frozen_ms / full_ms:.4f} (1/{full_ms / frozen_ms:.1f}); "
          f"{jax.default_backend()}, batch {args.batch_size}, preset {args.preset}")


if __name__ == "__main__":
    main()
