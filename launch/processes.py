"""The processes of one run: JAX's distributed runtime, and moving per-seed data between a
process's host and the run's global, seed-sharded arrays.

Every process runs the same command and the same loop, in lockstep. Process p holds the
seeds whose devices are its own (`local_seed_indices`): it steps their environments, keeps
their replays and feeds their batches. Global arrays ([K, ...], split along the seed axis)
come back to the host as this process's rows (`local_rows`) or, for logging, whole on
every process (`gather`). With one process all of this is the plain single-host path.
"""
import os

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding

# Environment variables whose presence means the scheduler started several tasks.
_SLURM_TASKS = "SLURM_NTASKS"
_TPU_HOSTS = "TPU_WORKER_HOSTNAMES"


def initialize(coordinator_address: str | None, num_processes: int | None,
               process_id: int | None) -> bool:
    """Joins a multi-process run when asked by flags, or when SLURM (SLURM_NTASKS > 1) or a
    TPU VM slice (several TPU_WORKER_HOSTNAMES) started several tasks; JAX then detects the
    settings itself. Returns whether the run has several processes. Call before any other
    JAX call. On CPU the collectives use gloo."""
    given = [coordinator_address, num_processes, process_id]
    if any(value is not None for value in given):
        if any(value is None for value in given):
            raise ValueError("give all of --coordinator_address, --num_processes and "
                             "--process_id, or none of them (auto-detected on TPU VMs and "
                             "under SLURM)")
        kwargs = dict(coordinator_address=coordinator_address, num_processes=num_processes,
                      process_id=process_id)
    elif (int(os.environ.get(_SLURM_TASKS, "1")) > 1
          or len(os.environ.get(_TPU_HOSTS, "").split(",")) > 1):
        kwargs = {}
    else:
        return False
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**kwargs)
    return jax.process_count() > 1


def is_primary() -> bool:
    """Process 0 writes the workdir's shared files (config, logs, lock)."""
    return jax.process_index() == 0


def local_seed_indices(sharding: NamedSharding, num_seeds: int) -> list[int]:
    """Indices of the seeds whose devices are this process's. ValueError when a seed's
    devices span several processes (its environments and replay would have no one home)."""
    owners: dict[int, set[int]] = {}
    for device, index in sharding.devices_indices_map((num_seeds,)).items():
        for seed in range(num_seeds)[index[0]]:
            owners.setdefault(seed, set()).add(device.process_index)
    split = [seed for seed, processes in owners.items() if len(processes) > 1]
    if split:
        raise ValueError(f"seeds {split} have devices on several processes; choose "
                         "--seed_shards so that each seed's devices (num_devices / "
                         "seed_shards) fit on one host")
    me = jax.process_index()
    return sorted(seed for seed, processes in owners.items() if me in processes)


def to_global(local: np.ndarray, sharding: NamedSharding, num_seeds: int,
              seed_axis: int = 0) -> jax.Array:
    """This process's rows of a [.., K, ..] array (K_local along `seed_axis`) -> the global
    array, split as `sharding` says. With one process the host array itself, which a jitted
    call places (about 70 us less per call than assembling a global array on the host)."""
    if jax.process_count() == 1:
        return np.asarray(local)
    shape = list(np.shape(local))
    shape[seed_axis] = num_seeds
    return jax.make_array_from_process_local_data(sharding, np.asarray(local), tuple(shape))


def local_rows(array: jax.Array) -> np.ndarray:
    """This process's seeds' rows of a global [K, ...] array split along its first axis, in
    seed order."""
    if array.is_fully_addressable:
        return np.asarray(array)
    rows = {}
    for shard in array.addressable_shards:
        rows.setdefault(shard.index[0].start or 0, np.asarray(shard.data))
    return np.concatenate([rows[start] for start in sorted(rows)])


def gather(tree):
    """A pytree of global arrays (or per-process host arrays, concatenated in process order
    along axis 0) whole on every process, as numpy."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    return multihost_utils.process_allgather(tree, tiled=True)


def any_process(flag: bool) -> bool:
    """Whether `flag` holds on any process (every process must call this together)."""
    if jax.process_count() == 1:
        return flag
    return bool(np.any(multihost_utils.process_allgather(np.asarray([flag]), tiled=True)))
