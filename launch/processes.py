"""The processes of one run: JAX's distributed runtime, and moving per-seed data between a
process's host and the run's global, seed-sharded arrays.

Every process runs the same command and the same loop, in lockstep. Process p holds the
seeds whose devices are its own (`local_seed_indices`): it steps their environments, keeps
their replays and feeds their batches. Global arrays ([K, ...], split along the seed axis)
come back to the host as this process's rows (`local_rows`) or, for logging, whole on
every process (`gather`). With one process all of this is the plain single-host path.
"""
from collections.abc import Mapping

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding

# What JAX's SLURM detection reads (jax/_src/clusters/slurm_cluster.py), and what srun sets
# besides for each task: its node's index and the tasks of each node ('8(x2),4').
_SLURM_TASK_VARIABLES = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
                         "SLURM_LOCALID", "SLURM_NODEID", "SLURM_STEP_TASKS_PER_NODE")


def distributed_arguments(environ: Mapping[str, str], coordinator_address: str | None,
                          num_processes: int | None, process_id: int | None,
                          on_cloud_tpu_vm: bool) -> dict | None:
    """The keyword arguments of `jax.distributed.initialize` for this process, or None for a
    single-process run. ValueError, in one line, for bad settings.

    - The three flags, all or none: used as given (checked: host:port, 0 <= id < count).
    - Several SLURM tasks (srun): JAX detects the coordinator, count and id
      (cluster_detection_method='slurm'); `local_device_ids` say the GPUs of this task
      (`_slurm_local_device_ids`), as JAX alone would give each task GPU SLURM_LOCALID only.
    - A Cloud TPU VM (`on_cloud_tpu_vm`: JAX found TPU chips and libtpu): {}, JAX's own
      TPU detection (the VM's metadata, or TPU_WORKER_HOSTNAMES on GKE) does the rest;
      unless TPU_SKIP_MDS_QUERY (set where there is no metadata) leaves it nothing to read.
    An empty `local_device_ids` restricts nothing: the process uses every device it sees.
    """
    flags = (coordinator_address, num_processes, process_id)
    if any(value is not None for value in flags):
        if any(value is None for value in flags):
            raise ValueError("give all of --coordinator_address, --num_processes and "
                             "--process_id, or none of them (auto-detected on TPU VMs and "
                             "under SLURM)")
        _check_process_flags(coordinator_address, num_processes, process_id)
        arguments = dict(coordinator_address=coordinator_address,
                         num_processes=num_processes, process_id=process_id)
        if _srun_task(environ):   # else JAX would still apply its SLURM default
            arguments["local_device_ids"] = _slurm_local_device_ids(environ)
        return arguments
    if _srun_task(environ):
        return dict(cluster_detection_method="slurm",
                    local_device_ids=_slurm_local_device_ids(environ))
    gke = "TPU_WORKER_HOSTNAMES" in environ or "TPU_PROCESS_ADDRESSES" in environ
    if on_cloud_tpu_vm and (gke or "TPU_SKIP_MDS_QUERY" not in environ):
        return {}
    return None


def _check_process_flags(coordinator_address: str, num_processes: int,
                         process_id: int) -> None:
    host, _, port = coordinator_address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 2**16:
        raise ValueError(f"--coordinator_address={coordinator_address} needs host:port, the "
                         "address of process 0 and a free port on it, e.g. node001:8476")
    if num_processes < 1:
        raise ValueError(f"--num_processes={num_processes} must be >= 1")
    if not 0 <= process_id < num_processes:
        raise ValueError(f"--process_id={process_id} must be in 0..{num_processes - 1} "
                         f"(--num_processes={num_processes})")


def _srun_task(environ: Mapping[str, str]) -> bool:
    """Whether srun started this process as one of several tasks. ValueError when
    SLURM_NTASKS > 1 but srun's variables are missing (a batch script's own process)."""
    if int(environ.get("SLURM_NTASKS", "1")) <= 1:
        return False
    missing = [name for name in _SLURM_TASK_VARIABLES if name not in environ]
    if missing:
        raise ValueError(f"SLURM_NTASKS={environ['SLURM_NTASKS']} but {', '.join(missing)} "
                         "unset: start every task with srun, or give --coordinator_address, "
                         "--num_processes and --process_id")
    return True


def _slurm_local_device_ids(environ: Mapping[str, str]) -> list[int]:
    """The GPUs (CUDA ordinals, counted after CUDA_VISIBLE_DEVICES) of this srun task.

    The GPUs a task sees: CUDA_VISIBLE_DEVICES's entries, else SLURM_GPUS_ON_NODE. A node's
    only task takes all of them; T tasks on a node take 1/T each, in SLURM_LOCALID order,
    unless SLURM already gave each task its own (it sees fewer than SLURM_GPUS_ON_NODE, or
    fewer than T, e.g. --gpus-per-task=1): then each takes all it sees. Unknown count: all
    for a node's only task ([]), else GPU SLURM_LOCALID (JAX's default)."""
    counts = []     # tasks of each node of the step: '8(x2),4' -> [8, 8, 4]
    for part in environ["SLURM_STEP_TASKS_PER_NODE"].split(","):
        count, _, repeat = part.partition("(x")
        counts += [int(count)] * int(repeat.rstrip(")") or 1)
    tasks_on_node = counts[int(environ["SLURM_NODEID"])]
    local_id = int(environ["SLURM_LOCALID"])
    node_gpus = environ.get("SLURM_GPUS_ON_NODE")
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        seen = len([entry for entry in visible.split(",") if entry.strip()])
    elif node_gpus is not None:
        seen = int(node_gpus)
    else:
        return [] if tasks_on_node == 1 else [local_id]
    own_gpus = seen < tasks_on_node or (node_gpus is not None and seen < int(node_gpus))
    if tasks_on_node == 1 or own_gpus:
        return list(range(seen))
    if seen % tasks_on_node:
        raise ValueError(f"{tasks_on_node} tasks on a node cannot share its {seen} GPUs "
                         "evenly: run one task per node, or one per GPU")
    share = seen // tasks_on_node
    return list(range(local_id * share, (local_id + 1) * share))


def on_cloud_tpu_vm() -> bool:
    """Whether JAX found TPU chips and libtpu on this machine (at `import jax`): the test
    JAX's own TPU cluster detection starts from."""
    from jax._src import cloud_tpu_init   # JAX's own flag; no public equivalent
    return bool(getattr(cloud_tpu_init, "running_in_cloud_tpu_vm", False))


def resolve(arguments: dict, timeout_s: int) -> dict:
    """`distributed_arguments` made explicit: coordinator_address, num_processes, process_id
    and local_device_ids, the ones left to JAX found by JAX's own cluster detection (SLURM's
    variables, a TPU VM's metadata), as jax.distributed.initialize would find them."""
    from jax._src import clusters   # what jax.distributed.initialize itself calls
    detect = clusters.ClusterEnv.auto_detect_unset_distributed_params
    address, count, process_id, device_ids = detect(
        arguments.get("coordinator_address"), arguments.get("num_processes"),
        arguments.get("process_id"), arguments.get("local_device_ids"),
        arguments.get("cluster_detection_method"), timeout_s)
    if None in (address, count, process_id):
        raise ValueError("no cluster found to take the coordinator address, process count "
                         "and id from; give --coordinator_address, --num_processes and "
                         "--process_id")
    return dict(coordinator_address=address, num_processes=count, process_id=process_id,
                local_device_ids=device_ids)


def initialize(arguments: dict | None, startup_timeout_s: int = 300,
               heartbeat_timeout_s: int = 100) -> bool:
    """Joins the multi-process run that `distributed_arguments` describes (None: none).
    Returns whether the run has several processes. Call before any other JAX call. On CPU
    the collectives use gloo. A process silent for heartbeat_timeout_s is lost: JAX's
    runtime then ends every other process (`launch.supervisor`)."""
    if arguments is None:
        return False
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**arguments, initialization_timeout=startup_timeout_s,
                               heartbeat_timeout_seconds=heartbeat_timeout_s)
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
