"""An agent's update on the hardware it is given: data-parallel over a mesh of devices, and
U updates fused into one call.

    learner = Learner(agent, make_mesh(num_devices), updates_per_call=U)
    state = learner.put_state(agent.init(key))
    state, metrics = learner.update(state, learner.put_batch(batches), key)

With `num_seeds=K` the learner trains K independent agents with one vmapped update: the
state has a leading seed axis [K, ...] (e.g. `jax.vmap(agent.init)(keys)`), batches are
[U, K, B, ...], keys [K], and every metric is [K].

Data parallelism is `jax.jit` over a 1-D `Mesh` (axis 'data'): the state is replicated, the
batch is split along its batch axis, and XLA's SPMD partitioner all-reduces the gradients
(every loss is a batch mean, so the sharded update computes the same new state as one
device on the full batch, up to float summation order). With several processes
(`jax.distributed.initialize`), the mesh spans every process's devices and each process
supplies its own share of the batch. Random numbers use JAX's partitionable threefry (the
default), so augmentation draws the same values however the batch is split.
"""
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from pixelzoo.agents.common import Agent, AgentState, Metrics, mean_over_updates
from pixelzoo.replay import Batch

DATA_AXIS = "data"
SEED_AXIS = "seed"


def make_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D 'data' mesh over the first `num_devices` of `jax.devices()` (all of them, over
    all processes, by default). Raises ValueError for a count outside [1, available]."""
    devices = jax.devices()
    count = len(devices) if num_devices is None else num_devices
    if not 1 <= count <= len(devices):
        raise ValueError(f"num_devices={count} must be in [1, {len(devices)}] "
                         f"(available: {len(devices)} {devices[0].platform} devices)")
    return Mesh(np.asarray(devices[:count]), (DATA_AXIS,))


def seed_shard_choices(num_seeds: int, num_devices: int) -> list[int]:
    """Every valid number of seed shards S for K seeds on D devices: S divides both K and D
    (K/S seeds per device group, D/S devices per seed, data parallel)."""
    return [s for s in range(1, min(num_seeds, num_devices) + 1)
            if num_seeds % s == 0 and num_devices % s == 0]


def default_seed_shards(num_seeds: int, num_devices: int) -> int:
    """K >= D: D shards (K/D seeds per device, no cross-device communication); K < D: K
    shards (D/K devices per seed, data parallel). ValueError when that split is impossible,
    naming the valid ones."""
    shards = num_devices if num_seeds >= num_devices else num_seeds
    if shards not in seed_shard_choices(num_seeds, num_devices):
        raise ValueError(
            f"{num_seeds} seeds do not split evenly over {num_devices} devices: use a number "
            f"of seeds that is a multiple or a divisor of the number of devices, or choose "
            f"--seed_shards from {seed_shard_choices(num_seeds, num_devices)}")
    return shards


def batch_split_problem(batch_size: int, num_devices: int) -> str | None:
    """Why a batch of batch_size cannot be split into equal shares over num_devices devices
    (None when it can)."""
    if batch_size % num_devices:
        return (f"batch_size={batch_size} must be divisible by the number of devices "
                f"({num_devices}) to split it between them")
    return None


def make_seed_mesh(num_seeds: int, num_devices: int | None = None,
                   seed_shards: int | None = None) -> Mesh:
    """A 2-D (seed, data) mesh for K = num_seeds independent agents on the first
    `num_devices` devices (all of them, over all processes, by default).

    seed_shards S (default `default_seed_shards`): the seed axis is split into S groups of
    K/S seeds, each group on its own D/S devices, which split its batches (data parallel).
    Devices are laid out process by process, so a group's devices belong to as few
    processes as possible. ValueError for an impossible combination, with the valid ones."""
    devices = make_mesh(num_devices).devices.reshape(-1)
    count = len(devices)
    if num_seeds < 1:
        raise ValueError(f"num_seeds={num_seeds} must be >= 1")
    if seed_shards is None:
        seed_shards = default_seed_shards(num_seeds, count)
    elif seed_shards not in seed_shard_choices(num_seeds, count):
        raise ValueError(f"seed_shards={seed_shards} must divide both num_seeds={num_seeds} "
                         f"and the {count} devices; valid: "
                         f"{seed_shard_choices(num_seeds, count)}")
    ordered = sorted(devices, key=lambda d: (d.process_index, d.id))
    return Mesh(np.asarray(ordered).reshape(seed_shards, count // seed_shards),
                (SEED_AXIS, DATA_AXIS))


def fuse_updates(update: Callable, num_updates: int) -> Callable:
    """`update(state, batch, key)` -> `fused(state, batches, key)` running `num_updates`
    updates in one `lax.scan`.

    batches: a Batch whose leaves are [U, B, ...]. Update u gets batch u and key u of
    `jax.random.split(key, U)` (U = 1 uses `key` itself, so it is exactly `update`).
    Returns (state after U updates, metrics: the mean over the U updates of each scalar,
    over those that ran the step for a gated metric: `common.mean_over_updates`).
    """
    if num_updates == 1:
        return lambda state, batches, key: update(
            state, jax.tree.map(lambda x: x[0], batches), key)

    def fused(state: AgentState, batches: Batch, key: jax.Array) -> tuple[AgentState, Metrics]:
        def body(state, inputs):
            batch, update_key = inputs
            return update(state, batch, update_key)

        state, metrics = jax.lax.scan(body, state, (batches, jax.random.split(key, num_updates)))
        return state, mean_over_updates(metrics)

    return fused


class Learner:
    """The jitted, sharded, fused update of one agent on a device mesh."""

    def __init__(self, agent: Agent, mesh: Mesh, updates_per_call: int = 1,
                 num_seeds: int | None = None, donate: bool | None = None,
                 gather: Callable | None = None,
                 update_of: Callable[[Agent], Callable] = lambda agent: agent.update):
        """num_seeds: None for one agent; K for K agents stacked on a leading seed axis.
        On a (seed, data) mesh (`make_seed_mesh`) each seed's state, batches and keys live
        only on its own devices; on a 1-D 'data' mesh every device holds every seed.
        donate: reuse the old state's buffers for the new one (default: not on CPU, where
        XLA does not use donations).
        gather: for replay on the device, `gather(arrays, starts [B]) -> Batch` (e.g.
        replay.gather with its layout bound); then `update_from_replay` is available.
        update_of: which of the agent's functions is the update (SEER's latent phase:
        `agent.seer.update_latent`); for an agent with `update_size`, it is taken from
        `agent.resize(size)` at the size the state needs (the largest over seeds), and each
        size is compiled once."""
        self.agent, self.mesh, self.updates_per_call = agent, mesh, updates_per_call
        self.num_seeds = num_seeds
        self.num_devices = mesh.devices.size
        self._seed_axis = SEED_AXIS if SEED_AXIS in mesh.axis_names else None
        if self._seed_axis and num_seeds is None:
            raise ValueError("a (seed, data) mesh needs num_seeds")
        problem = batch_split_problem(agent.config.batch_size, mesh.shape[DATA_AXIS])
        if problem:     # the launcher reports it before a run starts, with the others
            raise ValueError(problem)
        # State, keys and metrics: [K, ...] split along the seed axis (replicated without one).
        self.state_sharding = NamedSharding(
            mesh, PartitionSpec(self._seed_axis) if self._seed_axis else PartitionSpec())
        self.batch_sharding = NamedSharding(
            mesh, PartitionSpec(None, DATA_AXIS) if num_seeds is None
            else PartitionSpec(None, self._seed_axis, DATA_AXIS))
        self._donate = jax.default_backend() != "cpu" if donate is None else donate
        self._gather, self._update_of = gather, update_of
        self._programs = {}             # size (None: the one update) -> (update, from replay)
        self._size = None
        if agent.update_size is not None:
            size = jax.vmap(agent.update_size) if num_seeds else agent.update_size
            self._size = jax.jit(lambda state: jnp.max(size(state)),
                                 in_shardings=(self.state_sharding,),
                                 out_shardings=NamedSharding(mesh, PartitionSpec()))

    @property
    def compiled_sizes(self) -> list:
        """The update sizes compiled so far ([None] for an agent without update_size)."""
        return list(self._programs)

    def _compiled(self, state: AgentState) -> tuple[Callable, Callable | None]:
        """The jitted (update, update_from_replay) for this state's size."""
        size = None if self._size is None else int(self._size(state))
        if size not in self._programs:
            agent = self.agent if size is None else self.agent.resize(size)
            self._programs[size] = self._jit(self._update_of(agent))
        return self._programs[size]

    def _jit(self, agent_update: Callable) -> tuple[Callable, Callable | None]:
        """One agent update -> the jitted, sharded, fused (and seed-vmapped) update and
        its version that gathers its batches from device replay (None without gather)."""
        fused = fuse_updates(agent_update, self.updates_per_call)
        update = fused
        gather = self._gather

        def update_from_replay(state, arrays, starts, key):
            """Gathers batches [U, B, ...] from device replay arrays at starts [U, B]."""
            return fused(state, jax.vmap(lambda s: gather(arrays, s))(starts), key)

        if self.num_seeds is not None:  # state [K, ...], batches [U, K, B, ...], keys [K]
            update = jax.vmap(update, in_axes=(0, 1, 0))
            update_from_replay = jax.vmap(update_from_replay, in_axes=(0, 0, 1, 0))
        donate = (0,) if self._donate else ()
        state, batch = self.state_sharding, self.batch_sharding
        from_replay = None if gather is None else jax.jit(
            update_from_replay, in_shardings=(state, state, batch, state),
            out_shardings=(state, state), donate_argnums=donate)
        return jax.jit(update, in_shardings=(state, batch, state),
                       out_shardings=(state, state), donate_argnums=donate), from_replay

    def put_state(self, state: AgentState) -> AgentState:
        """The state (the same whole host value in every process) on the mesh: replicated,
        or split along the seed axis on a (seed, data) mesh."""
        if self.state_sharding.is_fully_addressable:
            return jax.device_put(state, self.state_sharding)
        return jax.tree.map(lambda x: jax.make_array_from_callback(
            np.shape(x), self.state_sharding, lambda index: np.asarray(x)[index]), state)

    def put_batch(self, batches: Batch) -> Batch:
        """Host arrays [U, (K_local,) B_local, ...] of this process -> one global batch
        [U, (K,) B, ...] split over the mesh (B = the agent's batch size: each process gives
        its share of every batch of its seeds, K_local of the K seeds' batches)."""
        if self.batch_sharding.is_fully_addressable:   # one process: one transfer call
            return jax.device_put(jax.tree.map(np.asarray, batches), self.batch_sharding)
        return jax.tree.map(self._put, batches)

    def put_starts(self, starts: np.ndarray) -> jax.Array:
        """Host start indices [U, (K_local,) B_local] -> the global [U, (K,) B] on the mesh."""
        return self._put(np.asarray(starts, np.int32))

    def _put(self, local: np.ndarray) -> jax.Array:
        local = np.asarray(local)
        leading = (local.shape[0],) + ((self.num_seeds,) if self.num_seeds else ())
        global_shape = leading + (self.agent.config.batch_size,) + local.shape[len(leading) + 1:]
        return jax.make_array_from_process_local_data(self.batch_sharding, local, global_shape)

    def update_from_replay(self, state: AgentState, arrays: dict, starts: jax.Array,
                           key: jax.Array) -> tuple[AgentState, Metrics]:
        """`update` on the batches gathered inside the same jitted call from device replay
        arrays ([C, ...], or [K, C, ...] with num_seeds) at start indices [U, (K,) B]."""
        if self._gather is None:
            raise ValueError("this Learner was built without a gather function")
        return self._compiled(state)[1](state, arrays, starts, key)

    def update_memory(self, state: AgentState, batches: Batch, key: jax.Array) -> dict:
        """XLA's memory figures of the compiled `update` for these shapes, in bytes:
        'temp' (scratch: activations, gradients, intermediates), 'arguments', 'outputs'."""
        update = self._compiled(state)[0]
        analysis = update.lower(state, batches, key).compile().memory_analysis()
        return {"temp": int(analysis.temp_size_in_bytes),
                "arguments": int(analysis.argument_size_in_bytes),
                "outputs": int(analysis.output_size_in_bytes)}

    def update(self, state: AgentState, batches: Batch,
               key: jax.Array) -> tuple[AgentState, Metrics]:
        """U updates on batches [U, (K,) B, ...]; metrics are their means over the U updates
        (scalars, or [K] with num_seeds)."""
        return self._compiled(state)[0](state, batches, key)
