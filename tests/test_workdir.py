"""A workdir nothing can corrupt: one launch at a time (a killed holder never blocks the
resume), unrestorable checkpoints skipped with a warning and kept, one-line errors for a
workdir that is a file or not writable; and the GPU-host settings of the launcher."""
import os
import pathlib
import signal
import socket
import time

import pytest

from pixelzoo import agents, envs
from pixelzoo.launch import hosts, loop
from pixelzoo.launch.checkpointing import RunCheckpointer
from pixelzoo.launch.workdir import WorkdirError, WorkdirLock, check_workdir
from tests.test_train import launch, read_csv

STATE_RUN = ["--task=cartpole_swingup", "--config.obs_type=state", "--config.hidden_dim=16",
             "--config.feature_dim=8", "--config.batch_size=8", "--config.action_repeat=8",
             "--config.num_seed_frames=200", "--config.num_eval_episodes=0",
             "--config.checkpoint_every_frames=400", "--config.log_every_frames=400"]


# ----------------------------------------------------------------------------- the lock
@pytest.mark.slow(40)
def test_a_second_launch_is_refused_and_a_killed_holder_does_not_block_the_resume(tmp_path):
    workdir = tmp_path / "run"
    first = launch(workdir, *STATE_RUN, "--num_frames=400000", wait=False)
    deadline = time.time() + 200
    while time.time() < deadline and not (workdir / "checkpoints" / "400").exists():
        assert first.poll() is None, first.communicate()[1][-2000:]
        time.sleep(0.2)
    started = time.time()
    code, stdout, stderr = launch(workdir, *STATE_RUN, "--num_frames=400000")
    assert code == 2, stderr[-2000:]
    assert (f"is in use by process {first.pid} on host {socket.gethostname()}" in stderr
            and "Traceback" not in stderr)
    assert time.time() - started < 60
    assert first.poll() is None, "the refused launch must not disturb the running one"

    first.send_signal(signal.SIGKILL)
    first.communicate()
    complete = RunCheckpointer(str(workdir / "checkpoints")).latest_frame()
    code, stdout, stderr = launch(workdir, *STATE_RUN, f"--num_frames={complete + 400}")
    assert code == 0, stderr[-3000:]
    assert f"resumed from checkpoint at frame {complete:,}" in stdout


def test_the_lock_names_its_holder_and_is_released():
    workdir = pathlib.Path(os.environ.get("TMPDIR", "/tmp")) / f"pixelzoo-lock-{os.getpid()}"
    check_workdir(str(workdir))
    with WorkdirLock(str(workdir)):
        with pytest.raises(WorkdirError, match=f"in use by process {os.getpid()} on host"):
            WorkdirLock(str(workdir)).acquire()   # a second open file description is refused
    with WorkdirLock(str(workdir)):               # released: free again
        pass


@pytest.mark.parametrize("make_path, message", [
    (lambda tmp: _file(tmp / "a_file"), "is a file, not a directory"),
    (lambda tmp: _file(tmp / "a_file") / "sub", "is not writable"),
    (lambda tmp: pathlib.Path("/proc/pixelzoo-workdir"), "is not writable")])
def test_a_workdir_that_is_a_file_or_not_writable_gets_a_one_line_error(tmp_path, make_path,
                                                                       message):
    path = make_path(tmp_path)
    with pytest.raises(WorkdirError, match=message) as error:
        check_workdir(str(path))
    assert "\n" not in str(error.value)


def _file(path: pathlib.Path) -> pathlib.Path:
    path.write_text("not a directory")
    return path


@pytest.mark.slow(12)
def test_the_launcher_prints_the_workdir_error_in_one_line(tmp_path):
    code, stdout, stderr = launch(_file(tmp_path / "a_file"), *STATE_RUN, "--num_frames=800")
    assert code == 2 and "Traceback" not in stderr
    # The message is the last line (JAX may log its backend search before it).
    assert stderr.strip().splitlines()[-1] == (f"error: --workdir {tmp_path / 'a_file'} is a "
                                               "file, not a directory; give a directory path")


# ----------------------------------------------------------------------------- checkpoints
@pytest.mark.slow(25)
def test_an_unrestorable_newest_checkpoint_is_skipped_with_a_warning_and_kept(tmp_path,
                                                                            capsys):
    config = agents.build_config(
        "drqv2", obs_type="state", hidden_dim=16, feature_dim=8, batch_size=8,
        action_repeat=8, num_seed_frames=200, num_eval_episodes=0,
        checkpoint_every_frames=400, log_every_frames=400, replay_capacity=2000)
    spec = {"agent": "drqv2", "task": "cartpole_swingup", "seed": 0, "num_frames": 1200,
            "config": config.to_dict()}
    assert loop.train(spec, str(tmp_path), should_stop=lambda: False, num_devices=1)
    newest = tmp_path / "checkpoints" / "1200"
    # A full disk's damage: every file of the agent item cut to half. Its _METADATA too,
    # which Python reads: TensorStore's in-process B-tree cache (orbax keeps one) may still
    # hold the nodes this process wrote, so damage to the data files alone can go unseen.
    for data in (newest / "agent").rglob("*"):
        if data.is_file():
            data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    capsys.readouterr()

    spec["num_frames"] = 1600
    assert loop.train(spec, str(tmp_path), should_stop=lambda: False, num_devices=1)
    out = capsys.readouterr()
    assert f"warning: checkpoint {newest} cannot be restored" in out.err
    assert "resumed from checkpoint at frame 800" in out.out
    kept = list((tmp_path / "unrestorable_checkpoints").glob("1200-*"))
    assert len(kept) == 1 and (kept[0] / "agent").is_dir(), "the damaged one is kept"
    assert RunCheckpointer(str(tmp_path / "checkpoints")).latest_frame() == 1600
    # The episode row at 1000 came after the restored checkpoint: dropped, and the resumed
    # run's episode (from 800) has not ended by 1600.
    assert read_csv(tmp_path / "train.csv") == []


# ----------------------------------------------------------------------------- GPU hosts
@pytest.mark.parametrize("environ, num_gpus, want", [
    ({}, 0, [{}, {}, {}]),                                            # no GPU: nothing
    ({}, 2, [{"MUJOCO_EGL_DEVICE_ID": d} for d in ("0", "1", "0")]),  # round robin
    ({"CUDA_VISIBLE_DEVICES": "2,5"}, 2,
     [{"MUJOCO_EGL_DEVICE_ID": d} for d in ("2", "5", "2")]),         # the visible ones
    ({"MUJOCO_EGL_DEVICE_ID": "3"}, 2, [{}, {}, {}]),                 # the user's wins
    ({"MUJOCO_GL": "osmesa"}, 2, [{}, {}, {}]),                       # not EGL: untouched
])
def test_each_environment_worker_gets_its_egl_device(environ, num_gpus, want):
    assert [envs.worker_render_env(i, num_gpus, environ) for i in range(3)] == want


def test_worker_processes_start_with_their_render_environment():
    # One GPU's worth: dm_control checks the id against this machine's EGL devices (one).
    worker_env = [envs.worker_render_env(i, 1, {}) for i in range(2)]
    pool = envs.EnvPool([dict(task="cartpole_swingup", seed=i, obs_type="state")
                         for i in range(2)], num_workers=2, worker_env=worker_env)
    try:
        pool.reset()
        for process, extra in zip(pool._processes, worker_env):
            environ = pathlib.Path(f"/proc/{process.pid}/environ").read_bytes().split(b"\0")
            assert f"MUJOCO_EGL_DEVICE_ID={extra['MUJOCO_EGL_DEVICE_ID']}".encode() in environ
    finally:
        pool.close()


@pytest.mark.parametrize("environ, want", [
    ({}, {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}),
    ({"XLA_PYTHON_CLIENT_MEM_FRACTION": ".5"}, {"XLA_PYTHON_CLIENT_MEM_FRACTION": ".5"}),
    ({"XLA_PYTHON_CLIENT_PREALLOCATE": "true"}, {"XLA_PYTHON_CLIENT_PREALLOCATE": "true"}),
])
def test_jax_leaves_gpu_memory_to_the_renderers_unless_the_user_says_otherwise(environ, want):
    hosts.reserve_gpu_memory_for_renderers(environ)
    assert environ == want
