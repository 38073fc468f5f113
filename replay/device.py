"""Replay on the accelerator: a ReplayBuffer's storage mirrored on the device, and the
gather (frame stacks, n-step returns) as a pure function that runs inside the jitted update.

    device = DeviceReplay(buffer)                       # buffer: replay.ReplayBuffer
    device.sync()                                       # after adds: copy new timesteps
    starts = buffer.sample_indices(B, rng)              # the host draws start indices
    batch = gather(device.arrays, starts, device.layout)   # inside jit: a replay.Batch

The host keeps choosing which transitions to sample (it holds the episode bookkeeping); per
update only B start indices travel to the device instead of two [B, H, W, 3k] stacks, and
each added timestep is copied once (one frame). `gather` computes exactly the host
buffer's batch for the same indices.
"""
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from pixelzoo.replay import transitions
from pixelzoo.replay.batch import Batch
from pixelzoo.replay.buffer import ReplayBuffer
from pixelzoo.replay.transitions import Layout


def layout_of(buffer: ReplayBuffer) -> Layout:
    """The buffer's static facts (`buffer.layout`), as `gather` takes them."""
    return buffer.layout


def gather(arrays: dict[str, jnp.ndarray], starts: jnp.ndarray, layout: Layout) -> Batch:
    """The transitions starting at global indices `starts` (int [B]), from device arrays
    laid out as ReplayBuffer's storage (observations [C, ...], actions [C, A], rewards,
    discounts [C], episode_positions [C]). Same values as ReplayBuffer.gather: both are
    transitions.gather_transitions."""
    return transitions.gather_transitions(arrays, starts.astype(jnp.int32), layout, jnp)


@functools.partial(jax.jit, donate_argnums=0)   # in place: no copy of the whole ring
def _write(arrays: dict, lane: jnp.ndarray | None, slots: jnp.ndarray, values: dict) -> dict:
    if lane is None:
        return {key: arrays[key].at[slots].set(values[key]) for key in arrays}
    return {key: arrays[key].at[lane, slots].set(values[key]) for key in arrays}


class DeviceReplay:
    """A device copy of the storage of one buffer ([C, ...] arrays), or of K buffers of the
    same layout stacked ([K, C, ...], for K seeds), brought up to date by `sync()`."""

    def __init__(self, buffers: ReplayBuffer | Sequence[ReplayBuffer],
                 sharding: jax.sharding.Sharding | None = None):
        """sharding: where the arrays live (default: the default device); a learner on a
        mesh passes its replicated sharding."""
        self.stacked = not isinstance(buffers, ReplayBuffer)
        self.buffers = list(buffers) if self.stacked else [buffers]
        self.layout = layout_of(self.buffers[0])
        if any(layout_of(buffer) != self.layout for buffer in self.buffers):
            raise ValueError("stacked buffers need the same capacity, nstep, discount and "
                             "frame stack")
        self._sharding = sharding
        zeros = {key: np.zeros(((len(self.buffers),) if self.stacked else ()) + value.shape,
                               value.dtype)
                 for key, value in self.buffers[0].storage_arrays().items()}
        self.arrays = jax.device_put(zeros, sharding)
        self._synced = [0] * len(self.buffers)  # buffer k's mirror holds indices < this

    @property
    def nbytes(self) -> int:
        return sum(value.nbytes for value in self.arrays.values())

    def sync(self) -> None:
        """Copies the timesteps added to the buffers since the last sync (all of them after
        a restore)."""
        for lane, buffer in enumerate(self.buffers):
            added = buffer.num_added
            first = max(self._synced[lane],
                        transitions.oldest_stored_index(added, buffer.capacity))
            if first >= added:
                continue
            slots = np.arange(first, added) % buffer.capacity
            storage = buffer.storage_arrays()
            values = {key: storage[key][slots] for key in storage}
            # slots and values go in as host arrays: jit places them beside the arrays
            # (which may be split over devices along the seed axis).
            self.arrays = _write(self.arrays, np.int32(lane) if self.stacked else None,
                                 slots.astype(np.int32), values)
            self._synced[lane] = added
