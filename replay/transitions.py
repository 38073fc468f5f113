"""How stored timesteps become n-step transitions: the one definition of each rule.

The host replay (`ReplayBuffer`, numpy), the device replay (`replay.gather`, jax.numpy inside
jit) and the latent replay (a `ReplayBuffer` of latents) all call these functions; each takes
the array namespace `xp` (numpy or jax.numpy) and is one code for both, except that
`frames_on_channels` copies in place in numpy, where that is twice as fast.

Storage is a ring of `C` timestep slots (`ReplayBuffer.storage_arrays()`): global timestep g
lives in slot g % C and is stored while g >= num_added - C. Its episode position p (0 at the
FIRST timestep) says how far back its episode reaches. A transition is named by the global
index t of its first timestep: obs = stack(t), action = action of t+1, reward and discount
from timesteps t+1..t+n, next_obs = stack(t+n), all in t's episode.
"""
from typing import Any, NamedTuple

import numpy as np

from pixelzoo.replay.batch import Batch

Array = Any  # a numpy or jax.numpy array (or, where said, a Python int)


class Layout(NamedTuple):
    """The static facts of a replay's storage (hashable: a jit static argument).

    Attributes:
      capacity: C, the number of timestep slots.
      nstep: n of the n-step return.
      discount: gamma, the per-step discount.
      frame_stack: k, frames per observation (1 for state observations).
      pixels: whether observations are uint8 frames stacked on channels, stored one frame
        per timestep.
    """

    capacity: int
    nstep: int
    discount: float
    frame_stack: int
    pixels: bool


def oldest_stored_index(num_added: int, capacity: int) -> int:
    """The oldest global index still in a ring of `capacity` slots after `num_added` adds."""
    return max(num_added - capacity, 0)


def nstep_return(rewards: Array, discounts: Array, gamma: float,
                 xp: Any) -> tuple[Array, Array]:
    """n-step return and bootstrap discount of reward windows.

    Args:
      rewards: float32 [..., n], r_{t+1}..r_{t+n}.
      discounts: float32 [..., n], the environment discounts d_{t+1}..d_{t+n} (0 at a
        termination, 1 at a truncation: a time limit bootstraps).
      gamma: the agent's per-step discount.
      xp: numpy or jax.numpy.

    Returns:
      (return, discount), float32 [...] each: sum_i gamma^i (prod_{j<i} d_{t+1+j})
      r_{t+1+i} and gamma^n prod_i d_{t+1+i}, accumulated front to back as the official
      DrQ-v2 code does (so float32 rounding matches it).
    """
    total = xp.zeros(rewards.shape[:-1], xp.float32)
    accumulated_discount = xp.ones(rewards.shape[:-1], xp.float32)
    for i in range(rewards.shape[-1]):
        total = total + accumulated_discount * rewards[..., i]
        accumulated_discount = accumulated_discount * (discounts[..., i] * xp.float32(gamma))
    return total, accumulated_discount


def frame_index(indices: Array, positions: Array, age: Array, xp: Any) -> Array:
    """Global index of the frame `age` timesteps back in the stack of each timestep.

    The stack of timestep g holds the frames of g-k+1..g; before its episode's start the
    first frame repeats (as the environment fills its stack on reset).

    Args:
      indices: int [...] (or a Python int), global timestep indices g.
      positions: int [...] (or a Python int), their episode positions.
      age: int, broadcastable against indices: 0 (the newest frame) .. k-1 (the oldest).
      xp: numpy or jax.numpy.
    """
    return indices - xp.minimum(age, positions)


def stack_frame_indices(indices: Array, positions: Array, frame_stack: int, xp: Any) -> Array:
    """Global indices int [B, k] of the frames of each stack, oldest first (frame_index).

    Args:
      indices: int [B], global timestep indices.
      positions: int [B], their episode positions.
      frame_stack: k.
      xp: numpy or jax.numpy.
    """
    ages = xp.arange(frame_stack - 1, -1, -1)  # k-1, ..., 0 timesteps back
    return frame_index(indices[:, None], positions[:, None], ages, xp)


def is_stack_stored(indices: Array, positions: Array, num_added: int, layout: Layout,
                    xp: Any) -> Array:
    """bool [...]: whether every frame of each timestep's stack is still in the ring.

    Args:
      indices: int [...] (or a Python int), global timestep indices.
      positions: int [...] (or a Python int), their episode positions.
      num_added: timesteps ever added.
      layout: the storage's (capacity and frame_stack are read).
      xp: numpy or jax.numpy.
    """
    oldest_frame = frame_index(indices, positions, layout.frame_stack - 1, xp)
    return oldest_frame >= oldest_stored_index(num_added, layout.capacity)


def is_sampleable(starts: Array, episode_positions: Array, num_added: int, layout: Layout,
                  xp: Any) -> Array:
    """bool [...]: whether each global start index names a transition now.

    A start t is sampleable when t+n has been added, t+n is in t's episode, and the stack
    of t is stored (then so are t..t+n and the stack of t+n, which begins no earlier).

    Args:
      starts: int [...] (or a Python int), global start indices t (any: out of range gives
        False).
      episode_positions: int32 [C], the ring of episode positions.
      num_added: timesteps ever added.
      layout: the storage's.
      xp: numpy or jax.numpy.
    """
    ends = starts + layout.nstep
    # Slots are read before the range checks; a read of an unwritten or overwritten slot
    # is masked by them.
    start_positions = episode_positions[starts % layout.capacity]
    same_episode = episode_positions[ends % layout.capacity] == start_positions + layout.nstep
    return ((ends < num_added) & same_episode
            & is_stack_stored(starts, start_positions, num_added, layout, xp))


def stacked_observations(observations: Array, episode_positions: Array, indices: Array,
                         layout: Layout, xp: Any) -> Array:
    """Observations [B, *obs_shape] of stored timesteps, rebuilt from the ring.

    Args:
      observations: the ring, [C, H, W, 3] (pixels: each timestep's newest frame) or
        [C, *obs_shape] (a whole observation per timestep).
      episode_positions: int32 [C].
      indices: int [B], global timestep indices (stored, with their stacks).
      layout: the storage's; pixels are stacked on channels, oldest frame first.
      xp: numpy or jax.numpy.
    """
    capacity, frame_stack = layout.capacity, layout.frame_stack
    if not layout.pixels:
        return observations[indices % capacity]
    sources = stack_frame_indices(indices, episode_positions[indices % capacity],
                                  frame_stack, xp) % capacity          # [B, k]
    return frames_on_channels(observations, sources, xp)


def frames_on_channels(frames: Array, slots: Array, xp: Any) -> Array:
    """The frames at slots [B, k], side by side on channels in that order: [B, H, W, k*c].

    jax.numpy gathers [B, k, H, W, c] and concatenates (XLA fuses the copies). numpy copies
    each frame into the output as soon as it is gathered (copy_channels): concatenating, or
    stacking channels once all frames are gathered, measured about twice as slow at 84px.

    Args:
      frames: the ring [C, H, W, c].
      slots: int [B, k].
      xp: numpy or jax.numpy.
    """
    if xp is not np:
        gathered = frames[slots]                                       # [B, k, H, W, c]
        return xp.concatenate([gathered[:, j] for j in range(slots.shape[1])], axis=-1)
    batch_size, frame_stack = slots.shape
    channels = frames.shape[-1]
    stacked = np.empty((batch_size, *frames.shape[1:-1], frame_stack * channels), frames.dtype)
    for j in range(frame_stack):
        copy_channels(stacked[..., channels * j:channels * (j + 1)], frames[slots[:, j]])
    return stacked


def copy_channels(destination: np.ndarray, source: np.ndarray) -> None:
    """destination[..., c] = source[..., c] for each channel c (numpy, in place).

    Copying 3-channel pixels between arrays of different channel counts one channel at
    a time is several times faster in numpy than copying 3-byte pixels.
    """
    for c in range(source.shape[-1]):
        destination[..., c] = source[..., c]


def gather_transitions(storage: dict[str, Array], starts: Array, layout: Layout,
                       xp: Any) -> Batch:
    """The transitions that start at global indices `starts` (int [B], sampleable).

    Args:
      storage: the rings, as `ReplayBuffer.storage_arrays()`: observations [C, ...],
        actions [C, A], rewards [C], discounts [C], episode_positions [C].
      starts: int [B].
      layout: the storage's.
      xp: numpy or jax.numpy.
    """
    capacity, nstep = layout.capacity, layout.nstep
    window = (starts[:, None] + xp.arange(1, nstep + 1)) % capacity      # [B, n]
    reward, discount = nstep_return(storage["rewards"][window], storage["discounts"][window],
                                    layout.discount, xp)

    def stack(indices: Array) -> Array:
        return stacked_observations(storage["observations"], storage["episode_positions"],
                                    indices, layout, xp)

    return Batch(obs=stack(starts), action=storage["actions"][(starts + 1) % capacity],
                 reward=reward, discount=discount, next_obs=stack(starts + nstep))
