"""Windows of L consecutive one-step transitions for Routines (docs/algorithms.md, Routines).

A window is named by its start t, a sampleable one-step transition (`Layout.nstep == 1`,
so windows start anywhere in an episode but its last timestep). Transition j = 0..L-1 of
the window is (stack(t+j), action, reward and discount of timestep t+j+1, stack(t+j+1)),
by the same rules as `transitions.gather_transitions` (it reuses them). Columns that run
past t's episode (or past the newest timestep) read whatever the ring holds and are
masked out by the prefix mask.

The prefix mask m [B, L]: column k-1 is 1 when the prefix of k transitions stays in t's
episode ('intended'). The authors' released buffer (Routines4RL, `gather_n_steps_indices`)
meant the same but set batch row 0 to ones instead of column 0 ('released', kept for
comparison): row 0 is then never masked, and column 0 is 0 for windows that start at an
episode's first timestep.
"""
from typing import Any, NamedTuple

import numpy as np

from pixelzoo.replay import transitions

Array = Any
MASKS = ("intended", "released")


class Windows(NamedTuple):
    """A batch of B windows of L one-step transitions (a pytree).

    obs: [B, *obs_shape] at the start t. actions: float32 [B, L, A], a_t..a_{t+L-1}.
    rewards, discounts: float32 [B, L], each transition's reward and environment
    discount (0 at a termination, 1 at a time limit). next_obs: [B, L, *obs_shape], the
    observations t+1..t+L. mask: float32 [B, L], the valid prefixes (module docstring).
    """

    obs: Array
    actions: Array
    rewards: Array
    discounts: Array
    next_obs: Array
    mask: Array


def prefix_mask(starts: Array, episode_positions: Array, num_added: int, layout, length: int,
                xp: Any, mask: str = "intended") -> Array:
    """float32 [B, L]: 1 where the prefix of k = column + 1 transitions of the window at
    each start stays in its episode ('intended'), or the released buffer's mask
    ('released': column 0 is 0 at an episode's first timestep, row 0 all ones).

    starts: int [B], sampleable one-step starts; episode_positions: int32 [C] ring."""
    if mask not in MASKS:
        raise ValueError(f"mask must be one of {MASKS}, got {mask!r}")
    ends = starts[:, None] + xp.arange(1, length + 1)                       # t+k, [B, L]
    start_positions = episode_positions[starts % layout.capacity][:, None]
    # Positions grow by 1 inside an episode and restart at 0, so t+k sharing t's episode
    # already implies every earlier t+j does: the mask is a prefix without a cumprod.
    same = (ends < num_added) & (episode_positions[ends % layout.capacity]
                                 == start_positions + xp.arange(1, length + 1))
    valid = same.astype(xp.float32)
    if mask == "intended":
        return valid
    not_first = (start_positions[:, 0] != 0).astype(xp.float32)
    released = xp.concatenate([not_first[:, None], valid[:, 1:]], axis=1)
    row_zero = xp.arange(starts.shape[0])[:, None] == 0
    return xp.where(row_zero, xp.float32(1.0), released)


def gather_windows(storage: dict[str, Array], starts: Array, num_added: int, layout,
                   length: int, xp: Any, mask: str = "intended") -> Windows:
    """The windows of `length` transitions at global starts int [B] (sampleable under a
    one-step `layout`), from the rings of `ReplayBuffer.storage_arrays()`."""
    capacity = layout.capacity
    following = starts[:, None] + xp.arange(1, length + 1)                  # [B, L]
    slots = following % capacity

    def stack(indices: Array) -> Array:
        return transitions.stacked_observations(storage["observations"],
                                                storage["episode_positions"], indices,
                                                layout, xp)

    next_obs = stack(following.reshape(-1))
    return Windows(
        obs=stack(starts), actions=storage["actions"][slots],
        rewards=storage["rewards"][slots], discounts=storage["discounts"][slots],
        next_obs=next_obs.reshape(following.shape + next_obs.shape[1:]),
        mask=prefix_mask(starts, storage["episode_positions"], num_added, layout, length, xp,
                         mask))


def sample_windows(buffer, batch_size: int, length: int, rng: int | np.random.Generator,
                   mask: str = "intended") -> Windows:
    """B windows with uniformly drawn starts from a one-step host `ReplayBuffer`."""
    if buffer.nstep != 1:
        raise ValueError(f"routine windows need a one-step replay (nstep=1), got "
                         f"nstep={buffer.nstep}: the prefixes give the k-step returns")
    starts = buffer.sample_indices(batch_size, rng)
    return gather_windows(buffer.storage_arrays(), starts, buffer.num_added, buffer.layout,
                          length, np, mask)
