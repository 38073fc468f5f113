"""The arguments of jax.distributed.initialize (launch.processes.distributed_arguments) under
SLURM, on TPU VMs and from flags, computed from hand-made environments: no cluster, and
nothing is initialized. Last, the launcher's one-line refusals of bad flags."""
import time

import pytest

from pixelzoo.launch import processes
from pixelzoo.launch.processes import distributed_arguments


def srun_task(procid: int, localid: int, nodeid: int, tasks_per_node: str, ntasks: int,
              **extra: str) -> dict[str, str]:
    """The variables srun gives one task of job 4242 on nodes gpu[01-02]."""
    return {"SLURM_JOB_ID": "4242", "SLURM_STEP_NODELIST": "gpu[01-02]",
            "SLURM_NTASKS": str(ntasks), "SLURM_PROCID": str(procid),
            "SLURM_LOCALID": str(localid), "SLURM_NODEID": str(nodeid),
            "SLURM_STEP_TASKS_PER_NODE": tasks_per_node, **extra}


def auto(environ: dict[str, str], on_cloud_tpu_vm: bool = False) -> dict | None:
    return distributed_arguments(environ, None, None, None, on_cloud_tpu_vm)


SLURM_AUTO = {"cluster_detection_method": "slurm"}


# ------------------------------------------------------------ SLURM, one task per node
@pytest.mark.parametrize("gpus", [
    {"SLURM_GPUS_ON_NODE": "8", "CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7"},
    {"SLURM_GPUS_ON_NODE": "8"},                       # no CUDA_VISIBLE_DEVICES
    {"CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7"},       # no SLURM_GPUS_ON_NODE
])
def test_one_task_per_node_sees_every_gpu_of_its_node(gpus):
    # srun --nodes=2 --ntasks-per-node=1 --gpus-per-node=8: JAX alone would give [0].
    for node in range(2):
        environ = srun_task(procid=node, localid=0, nodeid=node, tasks_per_node="1(x2)",
                            ntasks=2, **gpus)
        assert auto(environ) == {**SLURM_AUTO, "local_device_ids": [0, 1, 2, 3, 4, 5, 6, 7]}


def test_one_task_per_node_sees_the_gpus_cuda_visible_devices_leaves():
    environ = srun_task(procid=1, localid=0, nodeid=1, tasks_per_node="1(x2)", ntasks=2,
                        SLURM_GPUS_ON_NODE="8", CUDA_VISIBLE_DEVICES="2,5,7")
    assert auto(environ) == {**SLURM_AUTO, "local_device_ids": [0, 1, 2]}   # CUDA ordinals


def test_one_task_per_node_without_a_gpu_count_restricts_nothing():
    environ = srun_task(procid=0, localid=0, nodeid=0, tasks_per_node="1(x2)", ntasks=2)
    assert auto(environ) == {**SLURM_AUTO, "local_device_ids": []}


# ------------------------------------------------------------ SLURM, one task per GPU
def test_one_task_per_gpu_sees_its_own_gpu_of_the_nodes():
    # srun --nodes=2 --ntasks-per-node=8 --gpus-per-node=8: every task sees the 8 GPUs.
    for procid in (0, 5, 13):
        environ = srun_task(procid=procid, localid=procid % 8, nodeid=procid // 8,
                            tasks_per_node="8(x2)", ntasks=16, SLURM_GPUS_ON_NODE="8",
                            CUDA_VISIBLE_DEVICES="0,1,2,3,4,5,6,7")
        assert auto(environ) == {**SLURM_AUTO, "local_device_ids": [procid % 8]}


def test_one_task_per_gpu_bound_by_slurm_sees_the_one_it_was_given():
    # srun --ntasks-per-node=8 --gpus-per-task=1: CUDA_VISIBLE_DEVICES holds the task's GPU.
    environ = srun_task(procid=11, localid=3, nodeid=1, tasks_per_node="8(x2)", ntasks=16,
                        SLURM_GPUS_ON_NODE="8", CUDA_VISIBLE_DEVICES="3")
    assert auto(environ) == {**SLURM_AUTO, "local_device_ids": [0]}


def test_tasks_sharing_a_nodes_gpus_take_equal_shares_by_local_id():
    environ = srun_task(procid=3, localid=1, nodeid=1, tasks_per_node="2(x2)", ntasks=4,
                        SLURM_GPUS_ON_NODE="8")
    assert auto(environ) == {**SLURM_AUTO, "local_device_ids": [4, 5, 6, 7]}
    environ = srun_task(procid=2, localid=0, nodeid=1, tasks_per_node="2,2", ntasks=4,
                        SLURM_GPUS_ON_NODE="8", CUDA_VISIBLE_DEVICES="0,1,2,3,4,5,6,7")
    assert auto(environ) == {**SLURM_AUTO, "local_device_ids": [0, 1, 2, 3]}


def test_uneven_tasks_per_node_count_this_nodes_tasks():
    # '2(x2),1': nodes 0 and 1 run two tasks, node 2 one, which takes every GPU.
    environ = srun_task(procid=4, localid=0, nodeid=2, tasks_per_node="2(x2),1", ntasks=5,
                        SLURM_GPUS_ON_NODE="4")
    assert auto(environ) == {**SLURM_AUTO, "local_device_ids": [0, 1, 2, 3]}


def test_one_slurm_task_or_none_is_a_single_process_run():
    assert auto({}) is None
    assert auto(srun_task(procid=0, localid=0, nodeid=0, tasks_per_node="1",
                          ntasks=1, SLURM_GPUS_ON_NODE="8")) is None


# ------------------------------------------------------------ TPU VMs
def test_a_cloud_tpu_vm_leaves_every_setting_to_jaxs_tpu_detection():
    # A plain slice: JAX reads the worker number and endpoints from the VM's metadata.
    assert auto({}, on_cloud_tpu_vm=True) == {}
    # GKE: JAX reads TPU_WORKER_HOSTNAMES and TPU_WORKER_ID itself.
    gke = {"TPU_WORKER_HOSTNAMES": "t-0,t-1,t-2,t-3", "TPU_WORKER_ID": "2"}
    assert auto(gke, on_cloud_tpu_vm=True) == {}
    assert auto(gke, on_cloud_tpu_vm=False) is None   # JAX's TPU detectors need a TPU VM
    # No metadata to read (TPU_SKIP_MDS_QUERY) and no GKE variables: one process.
    assert auto({"TPU_SKIP_MDS_QUERY": "1"}, on_cloud_tpu_vm=True) is None
    assert auto({"TPU_SKIP_MDS_QUERY": "1", **gke}, on_cloud_tpu_vm=True) == {}


def test_the_tpu_vm_test_is_jaxs_own_and_false_here():
    from jax._src import cloud_tpu_init   # on_cloud_tpu_vm reads it (a JAX upgrade may move it)
    assert hasattr(cloud_tpu_init, "running_in_cloud_tpu_vm")
    assert processes.on_cloud_tpu_vm() is False


# ------------------------------------------------------------ explicit flags
def test_explicit_flags_are_used_as_given():
    assert distributed_arguments({}, "node001:8476", 2, 1, on_cloud_tpu_vm=False) == dict(
        coordinator_address="node001:8476", num_processes=2, process_id=1)
    assert distributed_arguments({}, "[::1]:8476", 1, 0, on_cloud_tpu_vm=True) == dict(
        coordinator_address="[::1]:8476", num_processes=1, process_id=0)


def test_explicit_flags_under_srun_still_see_the_tasks_gpus():
    environ = srun_task(procid=1, localid=0, nodeid=1, tasks_per_node="1(x2)", ntasks=2,
                        SLURM_GPUS_ON_NODE="4")
    assert distributed_arguments(environ, "gpu01:8476", 2, 1, False) == dict(
        coordinator_address="gpu01:8476", num_processes=2, process_id=1,
        local_device_ids=[0, 1, 2, 3])


# ------------------------------------------------------------ bad settings: one line
@pytest.mark.parametrize("flags, message", [
    (("node001", 2, 0), "--coordinator_address=node001 needs host:port, the address of "
                        "process 0 and a free port on it, e.g. node001:8476"),
    (("node001:", 2, 0), "--coordinator_address=node001: needs host:port"),
    ((":8476", 2, 0), "--coordinator_address=:8476 needs host:port"),
    (("node001:http", 2, 0), "--coordinator_address=node001:http needs host:port"),
    (("node001:70000", 2, 0), "--coordinator_address=node001:70000 needs host:port"),
    (("node001:8476", 2, 2), "--process_id=2 must be in 0..1 (--num_processes=2)"),
    (("node001:8476", 2, -1), "--process_id=-1 must be in 0..1 (--num_processes=2)"),
    (("node001:8476", 0, 0), "--num_processes=0 must be >= 1"),
    (("node001:8476", 2, None), "give all of --coordinator_address, --num_processes and "
                                "--process_id, or none of them"),
])
def test_bad_flags_are_refused_in_one_line(flags, message):
    with pytest.raises(ValueError) as error:
        distributed_arguments({}, *flags, on_cloud_tpu_vm=False)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_several_slurm_tasks_without_srun_are_refused_in_one_line():
    # A batch script's own process: sbatch --ntasks=2 sets SLURM_NTASKS, srun the rest.
    with pytest.raises(ValueError, match=r"^SLURM_NTASKS=2 but SLURM_STEP_NODELIST, "
                       r"SLURM_PROCID, SLURM_LOCALID, SLURM_NODEID, SLURM_STEP_TASKS_PER_NODE "
                       r"unset: start every task with srun"):
        auto({"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "2"})


def test_gpus_that_the_nodes_tasks_cannot_share_evenly_are_refused():
    environ = srun_task(procid=0, localid=0, nodeid=0, tasks_per_node="3", ntasks=3,
                        SLURM_GPUS_ON_NODE="8")
    with pytest.raises(ValueError, match="^3 tasks on a node cannot share its 8 GPUs evenly"):
        auto(environ)


# ------------------------------------------------------------ against JAX's own detection
@pytest.mark.parametrize("local_device_ids", [[0, 1, 2, 3], []])
def test_jaxs_slurm_detection_fills_the_rest_and_keeps_the_tasks_gpus(monkeypatch,
                                                                       local_device_ids):
    from jax._src import clusters   # what jax.distributed.initialize calls with them
    environ = srun_task(procid=1, localid=0, nodeid=1, tasks_per_node="1(x2)", ntasks=2)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("JAX_COORDINATOR_PORT", raising=False)
    detected = clusters.ClusterEnv.auto_detect_unset_distributed_params(
        None, None, None, local_device_ids, "slurm", 300)
    # The coordinator: the first node, on a port derived from the job id.
    assert detected == (f"gpu01:{4242 % 2**12 + 65535 - 2**12 + 1}", 2, 1, local_device_ids)


# ------------------------------------------------------------ through the launcher
@pytest.mark.parametrize("args, line", [
    (["--coordinator_address=localhost", "--num_processes=2", "--process_id=0"],
     "error: --coordinator_address=localhost needs host:port, the address of process 0 and "
     "a free port on it, e.g. node001:8476"),
    (["--coordinator_address=localhost:8476", "--num_processes=2", "--process_id=2"],
     "error: --process_id=2 must be in 0..1 (--num_processes=2)"),
])
def test_the_launcher_refuses_bad_distributed_flags_in_one_line_before_jax_starts(
        tmp_path, args, line):
    from tests.test_train import launch
    start = time.monotonic()
    code, stdout, stderr = launch(tmp_path / "run", "--config.obs_type=state", *args)
    assert code == 2
    assert stderr.strip().splitlines() == [line] and stdout == ""
    assert time.monotonic() - start < 30, "no JAX backend, no GL probe, no wait for peers"
    assert not (tmp_path / "run").exists()
