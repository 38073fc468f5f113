"""Frame-deduplicated n-step replay on the host.

Each timestep is written once into a ring of `capacity` slots: for pixels only its
newest frame (`observation[..., -3:]`, uint8 [H, W, 3]), plus the action that led to
it, its reward, its environment discount and its position in its episode. Frame
stacks are rebuilt when sampling, so a transition costs one frame, not
2 * frame_stack frames. Which starts can be sampled, how stacks are rebuilt and the
n-step return are `replay.transitions` (shared with the device and latent replays).
"""
import operator
from typing import Any

import dm_env
import numpy as np
from dm_env import specs

from pixelzoo.replay import transitions
from pixelzoo.replay.batch import Batch

# Rejection-sampling rounds before sample() falls back to enumerating every valid index.
_MAX_REJECTION_ROUNDS = 8
_FRAME_CHANNELS = 3


class ReplayBuffer:
    """Ring buffer of timesteps that samples n-step transitions with frame stacks.

    `capacity` counts timesteps (about one transition each): at 84x84 pixels a
    timestep costs one 21,168-byte frame plus the action, reward, discount and an
    int32 episode position.
    """

    def __init__(self, obs_spec: specs.Array, action_spec: specs.Array, capacity: int,
                 nstep: int = 3, discount: float = 0.99,
                 frame_stack: int | None = None):
        """Allocates the storage.

        Args:
          obs_spec: uint8 [H, W, 3*k] for stacked pixels (k frames, oldest first on
            channels); any other spec is a state observation, stored whole (k = 1).
          action_spec: the action spec, shape [A]; actions are stored as float32.
          capacity: number of timesteps kept; older ones are overwritten.
          nstep: n of the n-step return, >= 1.
          discount: gamma, the per-step discount.
          frame_stack: k; None infers it (C // 3 for pixels, 1 for state).
        """
        obs_shape = tuple(int(d) for d in obs_spec.shape)
        obs_dtype = np.dtype(obs_spec.dtype)
        pixels = obs_dtype == np.uint8 and len(obs_shape) == 3
        if pixels:
            channels = obs_shape[-1]
            if channels % _FRAME_CHANNELS:
                raise ValueError(f"pixel observations need 3 channels per frame; obs_spec "
                                 f"has shape {obs_shape} ({channels} channels).")
            inferred = channels // _FRAME_CHANNELS
            if frame_stack is not None and frame_stack != inferred:
                raise ValueError(f"frame_stack={frame_stack} does not match obs_spec shape "
                                 f"{obs_shape}: expected {inferred} (channels // 3).")
            frame_stack = inferred
            frame_shape = obs_shape[:-1] + (_FRAME_CHANNELS,)
        else:
            if frame_stack not in (None, 1):
                raise ValueError(f"state observations (obs_spec {obs_shape} {obs_dtype}) "
                                 f"take frame_stack 1, got {frame_stack}.")
            frame_stack = 1
            frame_shape = obs_shape
        if int(nstep) != nstep or nstep < 1:
            raise ValueError(f"nstep must be an integer >= 1, got {nstep}.")
        if int(capacity) != capacity or capacity <= nstep:
            raise ValueError(f"capacity must be an integer > nstep={nstep}, got {capacity}.")
        self._obs_shape = obs_shape
        self._obs_dtype = obs_dtype
        self._action_shape = tuple(int(d) for d in action_spec.shape)
        self._layout = transitions.Layout(capacity=int(capacity), nstep=int(nstep),
                                          discount=float(discount), frame_stack=frame_stack,
                                          pixels=pixels)
        capacity = self._layout.capacity
        self._observations = np.zeros((capacity,) + frame_shape, obs_dtype)
        self._actions = np.zeros((capacity,) + self._action_shape, np.float32)
        self._rewards = np.zeros(capacity, np.float32)
        self._discounts = np.zeros(capacity, np.float32)
        self._episode_positions = np.zeros(capacity, np.int32)
        self._num_added = 0  # timesteps ever added: the next global index
        self._episode_open = False  # the last timestep added was not LAST
        self._newest_start = -1  # newest global start that became sampleable (-1: none)

    # ----------------------------------------------------------------- properties
    @property
    def layout(self) -> transitions.Layout:
        """The static facts: capacity, nstep, discount, frame_stack, pixels (each also a
        property of the buffer)."""
        return self._layout

    capacity = property(operator.attrgetter("_layout.capacity"),
                        doc="Number of timestep slots.")
    nstep = property(operator.attrgetter("_layout.nstep"), doc="n of the n-step return.")
    discount = property(operator.attrgetter("_layout.discount"),
                        doc="gamma, the per-step discount.")
    frame_stack = property(operator.attrgetter("_layout.frame_stack"),
                           doc="Frames per observation (1 for state observations).")
    pixels = property(operator.attrgetter("_layout.pixels"),
                      doc="Whether observations are stacked uint8 frames (stored one frame "
                          "per timestep).")

    @property
    def num_added(self) -> int:
        """Timesteps added since creation; the global index of the next one."""
        return self._num_added

    @property
    def num_transitions(self) -> int:
        """Number of transitions that can be sampled now (O(capacity))."""
        return int(self.sampleable_indices().size)

    @property
    def can_sample(self) -> bool:
        """Whether any transition can be sampled now: num_transitions > 0 in O(1).

        A start becomes sampleable when its n-th successor is added (checked then), and
        stops being so when the ring overwrites its stack's first frame; that frame's index
        never decreases with the start, so if the newest start that ever became sampleable
        has expired, every older one has too.
        """
        return self._newest_start >= 0 and bool(self._is_sampleable(self._newest_start))

    @property
    def nbytes(self) -> int:
        """Total bytes of the storage arrays."""
        return sum(a.nbytes for a in self._storage().values())

    def __len__(self) -> int:
        """Number of timesteps stored (<= capacity)."""
        return min(self._num_added, self.capacity)

    # ----------------------------------------------------------------- adding
    def add(self, timestep: dm_env.TimeStep, action: np.ndarray | None = None) -> None:
        """Stores a timestep.

        Args:
          timestep: the first timestep of an episode (FIRST), or a later one. A FIRST
            timestep always starts a new episode, even if the last one did not end.
          action: None for a FIRST timestep; otherwise the action [A] that led to it.
        """
        layout = self._layout
        obs = np.asarray(timestep.observation)
        if obs.shape != self._obs_shape or obs.dtype != self._obs_dtype:
            raise ValueError(f"observation: expected {self._obs_shape} {self._obs_dtype}, "
                             f"got {obs.shape} {obs.dtype}.")
        first = timestep.first()
        if first:
            if action is not None:
                raise ValueError("a FIRST timestep starts an episode and takes no action.")
            position = 0
        else:
            if action is None:
                raise ValueError(f"a {timestep.step_type.name} timestep needs the action "
                                 "that led to it.")
            if not self._episode_open:
                raise ValueError(f"a {timestep.step_type.name} timestep arrived with no "
                                 "episode open: an episode starts with a FIRST timestep.")
            action = np.asarray(action, np.float32)
            if action.shape != self._action_shape:
                raise ValueError(f"action: expected shape {self._action_shape}, "
                                 f"got {action.shape}.")
            previous = (self._num_added - 1) % layout.capacity
            position = int(self._episode_positions[previous]) + 1
        slot = self._num_added % layout.capacity
        if layout.pixels:
            transitions.copy_channels(self._observations[slot], obs[..., -_FRAME_CHANNELS:])
        else:
            self._observations[slot] = obs
        self._actions[slot] = 0.0 if first else action
        self._rewards[slot] = 0.0 if first else float(timestep.reward)
        self._discounts[slot] = 1.0 if first else float(timestep.discount)
        self._episode_positions[slot] = position
        self._num_added += 1
        self._episode_open = not timestep.last()
        start = self._num_added - 1 - layout.nstep
        if start >= 0 and self._is_sampleable(start):
            self._newest_start = start

    # ----------------------------------------------------------------- sampling
    def _is_sampleable(self, starts: np.ndarray | int) -> np.ndarray:
        """bool [N] (or a bool for an int): whether each global start names a transition now."""
        return transitions.is_sampleable(starts, self._episode_positions, self._num_added,
                                         self._layout, np)

    def sampleable_indices(self) -> np.ndarray:
        """int64 [N]: every global start index that can be sampled now, ascending."""
        low = transitions.oldest_stored_index(self._num_added, self.capacity)
        candidates = np.arange(low, self._num_added - self.nstep, dtype=np.int64)
        return candidates[self._is_sampleable(candidates)]

    def sample(self, batch_size: int, rng: int | np.random.Generator) -> Batch:
        """Draws batch_size transitions uniformly (with replacement) from the valid ones.

        Args:
          batch_size: B.
          rng: a seed or a numpy Generator (advanced in place).
        """
        return self._gather(self.sample_indices(batch_size, rng))

    def sample_indices(self, batch_size: int, rng: int | np.random.Generator) -> np.ndarray:
        """The global start indices int64 [B] that `sample` draws with this rng (for
        gathering elsewhere, e.g. on the device: replay.DeviceReplay)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        rng = np.random.default_rng(rng)
        low = transitions.oldest_stored_index(self._num_added, self.capacity)
        high = self._num_added - self.nstep  # candidate starts: [low, high)
        if high <= low:
            raise ValueError(self._nothing_to_sample())
        chosen, needed = [], batch_size
        for _ in range(_MAX_REJECTION_ROUNDS):
            candidates = rng.integers(low, high, size=2 * needed + 8)
            accepted = candidates[self._is_sampleable(candidates)][:needed]
            chosen.append(accepted)
            needed -= accepted.size
            if needed == 0:
                break
        else:  # few valid starts: draw from the full list of them
            valid = self.sampleable_indices()
            if valid.size == 0:
                raise ValueError(self._nothing_to_sample())
            chosen.append(rng.choice(valid, size=needed))
        return np.concatenate(chosen)

    def _nothing_to_sample(self) -> str:
        return (f"no transition can be sampled yet: {len(self)} timesteps stored, and a "
                f"transition needs {self.nstep} more timesteps of its episode after it.")

    def gather(self, indices: np.ndarray) -> Batch:
        """The transitions that start at the given global indices (int [B])."""
        indices = np.asarray(indices, np.int64).reshape(-1)
        bad = indices[~self._is_sampleable(indices)]
        if bad.size:
            raise ValueError(f"indices not sampleable now: {bad[:10].tolist()}"
                             f"{' ...' if bad.size > 10 else ''}")
        return self._gather(indices)

    def _gather(self, starts: np.ndarray) -> Batch:
        return transitions.gather_transitions(self._storage(), starts, self._layout, np)

    def observations(self, indices: np.ndarray) -> np.ndarray:
        """The (stacked) observations [N, *obs_shape] of stored timesteps (global indices
        [N]), frames oldest first."""
        return transitions.stacked_observations(
            self._observations, self._episode_positions, np.asarray(indices, np.int64),
            self._layout, np)

    @property
    def episode_open(self) -> bool:
        """Whether the last timestep added did not end its episode."""
        return self._episode_open

    # ----------------------------------------------------------------- checkpoints
    def storage_arrays(self) -> dict[str, np.ndarray]:
        """The storage rings (views): observations [C, ...] (one frame per timestep for
        pixels), actions [C, A], rewards, discounts [C], episode_positions [C]."""
        return self._storage()

    def _storage(self) -> dict[str, np.ndarray]:
        return {"observations": self._observations, "actions": self._actions,
                "rewards": self._rewards, "discounts": self._discounts,
                "episode_positions": self._episode_positions}

    def state_dict(self) -> dict[str, np.ndarray]:
        """The written slots of the storage arrays and 0-d counters.

        Only slots [0, len(self)) are included (views, not copies: save before the next add),
        so a checkpoint of a 1M-capacity buffer holds what was written, not the whole ring.
        """
        stored = len(self)
        return {**{key: array[:stored] for key, array in self._storage().items()},
                "num_added": np.asarray(self._num_added, np.int64),
                "episode_open": np.asarray(self._episode_open, np.bool_)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores a state_dict() of a buffer with the same specs and capacity."""
        expected_keys = set(self._storage()) | {"num_added", "episode_open"}
        if set(state) != expected_keys:
            raise ValueError(f"state keys: expected {sorted(expected_keys)}, "
                             f"got {sorted(state)}.")
        for key, dtype in (("num_added", np.int64), ("episode_open", np.bool_)):
            value = np.asarray(state[key])
            if value.shape != () or value.dtype != dtype:
                raise ValueError(f"state[{key!r}]: expected a 0-d {np.dtype(dtype).name}, "
                                 f"got {value.shape} {value.dtype}.")
        num_added = int(state["num_added"])
        if num_added < 0:
            raise ValueError(f"state['num_added'] must be >= 0, got {num_added}.")
        stored = min(num_added, self.capacity)
        for key, target in self._storage().items():
            value = np.asarray(state[key])
            want = (stored, *target.shape[1:])
            if value.shape[1:] == want[1:] and value.shape[0] == self.capacity:
                value = value[:stored]  # a whole ring, as older checkpoints saved it
            if value.shape != want or value.dtype != target.dtype:
                raise ValueError(f"state[{key!r}]: expected {want} {target.dtype} (num_added "
                                 f"{num_added}, capacity {self.capacity}), got {value.shape} "
                                 f"{value.dtype}.")
        for key, target in self._storage().items():
            target[:stored] = np.asarray(state[key])[:stored]
        self._num_added = num_added
        self._episode_open = bool(state["episode_open"])
        valid = self.sampleable_indices()
        self._newest_start = int(valid[-1]) if valid.size else -1
