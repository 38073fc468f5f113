"""launch.train across processes (jax.distributed): 2 local processes with 2 CPU devices
each train 4 seeds exactly as one process does, share one workdir, and resume after one of
them is killed."""
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from pixelzoo.launch.checkpointing import RunCheckpointer
from tests.test_train import read_csv

ROOT = pathlib.Path(__file__).resolve().parents[1]
RUN = ["--agent=drqv2", "--task=cartpole_swingup", "--seed=0", "--num_seeds=4",
       "--config.obs_type=state", "--config.hidden_dim=16", "--config.feature_dim=8",
       "--config.batch_size=8", "--config.action_repeat=8", "--config.num_seed_frames=200",
       "--config.eval_every_frames=400", "--config.num_eval_episodes=1",
       "--config.checkpoint_every_frames=400", "--config.log_every_frames=400"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def start(workdir, *args, devices: int = 1, process: tuple[int, int] | None = None):
    env = {**os.environ, "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")
           + f" --xla_force_host_platform_device_count={devices}"}
    command = [sys.executable, "-m", "pixelzoo.launch.train", f"--workdir={workdir}", *RUN,
               *args]
    if process is not None:
        port, index = process
        command += [f"--coordinator_address=localhost:{port}", "--num_processes=2",
                    f"--process_id={index}"]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def start_pair(workdir, *args):
    port = _free_port()
    return [start(workdir, *args, devices=2, process=(port, index)) for index in range(2)]


def finish(processes, timeout=400):
    outputs = [process.communicate(timeout=timeout) for process in processes]
    for process, (_, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr[-3000:]
    return outputs


def rows_by_seed(path):
    rows = {}
    for row in read_csv(path):
        rows.setdefault(int(row["seed"]), []).append(row)
    return rows


@pytest.mark.slow(90)
def test_two_processes_train_four_seeds_like_one_process_and_resume_after_a_kill(tmp_path):
    single, multi = tmp_path / "single", tmp_path / "multi"
    finish([start(single, "--num_frames=1200")])
    (stdout, _), _ = finish(start_pair(multi, "--num_frames=1200"))
    assert "done: 1,200 frames" in stdout

    # Every seed's evaluations equal the one-process run's; one row per seed, no duplicate.
    want, got = rows_by_seed(single / "eval.csv"), rows_by_seed(multi / "eval.csv")
    assert sorted(got) == [0, 1, 2, 3]
    for seed in range(4):
        assert [r["frame"] for r in got[seed]] == [r["frame"] for r in want[seed]] == \
            ["0", "400", "800", "1200"]
        np.testing.assert_allclose([float(r["episode_return"]) for r in got[seed]],
                                   [float(r["episode_return"]) for r in want[seed]], rtol=1e-3)
    train_rows = rows_by_seed(multi / "train.csv")
    assert sorted(train_rows) == [0, 1, 2, 3]
    assert all([r["frame"] for r in rows] == ["1000"] for rows in train_rows.values())
    assert (multi / "config.json").exists()
    assert sorted(p.name for p in (multi / "replays" / "1200").iterdir()) == \
        ["process_0.npz", "process_1.npz"]

    # Kill process 1 mid-run; process 0 cannot go on without it. Relaunch both: resume.
    pair = start_pair(multi, "--num_frames=4000")
    deadline = time.time() + 300
    checkpoints = RunCheckpointer(str(multi / "checkpoints"))
    while time.time() < deadline and (checkpoints.latest_frame() or 0) < 2000:
        assert all(p.poll() is None for p in pair), pair[0].communicate()[1][-3000:]
        time.sleep(0.2)
        checkpoints = RunCheckpointer(str(multi / "checkpoints"))
    pair[1].send_signal(signal.SIGKILL)
    try:
        pair[0].communicate(timeout=20)
    except subprocess.TimeoutExpired:
        pair[0].send_signal(signal.SIGKILL)   # blocked in a collective with the dead one
        pair[0].communicate()
    complete = RunCheckpointer(str(multi / "checkpoints")).latest_frame()
    assert complete >= 2000

    (stdout, _), _ = finish(start_pair(multi, f"--num_frames={complete + 800}"))
    assert f"resumed from checkpoint at frame {complete:,}" in stdout
    assert RunCheckpointer(str(multi / "checkpoints")).latest_frame() == complete + 800
    for seed, rows in rows_by_seed(multi / "eval.csv").items():
        frames = [int(r["frame"]) for r in rows]
        assert frames == sorted(set(frames)) and frames[-1] == complete + 800, (seed, frames)
