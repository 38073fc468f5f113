"""SEER's latent replay: a pixel replay converted, timestep by timestep, into stored latents.

    latents = to_latent_replay(buffer, latent_spec, capacity, encode)

The result is a `ReplayBuffer` of float32 observations [m, 2F] (m stored copies of a
timestep's latents), so it keeps everything the pixel replay does: n-step windows, episode
boundaries, time-limit bootstrapping, and one stored observation per timestep (a timestep's
latents are stored once, as its frame was). Sampling returns all m copies of obs and
next_obs; the update picks one per observation.
"""
from typing import Callable

import numpy as np
from dm_env import specs

from pixelzoo.replay import transitions
from pixelzoo.replay.buffer import ReplayBuffer


def first_complete_timestep(buffer: ReplayBuffer) -> int:
    """The oldest stored global index from which every timestep's frame stack is complete
    (at most frame_stack - 1 past the oldest: a stack may reach back before the ring)."""
    oldest = transitions.oldest_stored_index(buffer.num_added, buffer.capacity)
    candidates = np.arange(oldest, min(oldest + buffer.frame_stack, buffer.num_added))
    positions = buffer.storage_arrays()["episode_positions"][candidates % buffer.capacity]
    complete = transitions.is_stack_stored(candidates, positions, buffer.num_added,
                                           buffer.layout, np)
    # A stack's oldest frame never moves back as the index grows: the first complete one
    # is followed only by complete ones.
    return int(candidates[complete][0]) if complete.any() else buffer.num_added


def to_latent_replay(buffer: ReplayBuffer, latent_spec: specs.Array, capacity: int,
                     encode: Callable[[np.ndarray, np.ndarray], np.ndarray],
                     chunk_size: int = 256) -> ReplayBuffer:
    """A latent replay of `capacity` timesteps holding every timestep of `buffer` whose
    observation can be rebuilt, oldest first, with its action, reward, discount and episode
    position.

    encode(observations [N, ...], latent_indices [N]) -> latents [N, *latent_spec.shape]:
    latent index i is the timestep's global index in the new replay (0 for the first
    converted one), so that its random shifts can depend on it alone.
    """
    first = first_complete_timestep(buffer)
    indices = np.arange(first, buffer.num_added, dtype=np.int64)
    if len(indices) > capacity:
        raise ValueError(f"the latent replay's capacity {capacity} is below the "
                         f"{len(indices)} timesteps to convert")
    storage = buffer.storage_arrays()
    latent = ReplayBuffer(latent_spec, specs.Array(storage["actions"].shape[1:], np.float32),
                          capacity, nstep=buffer.nstep, discount=buffer.discount)
    latents = np.zeros((len(indices), *latent_spec.shape), np.float32)
    for start in range(0, len(indices), chunk_size):
        chunk = indices[start:start + chunk_size]
        latents[start:start + len(chunk)] = encode(buffer.observations(chunk), chunk - first)
    slots = indices % buffer.capacity
    latent.load_state_dict({
        "observations": latents,
        **{key: storage[key][slots] for key in ("actions", "rewards", "discounts",
                                                "episode_positions")},
        "num_added": np.asarray(len(indices), np.int64),
        "episode_open": np.asarray(buffer.episode_open, np.bool_)})
    return latent
