"""launch.train across processes (jax.distributed): 2 local processes with 2 CPU devices
each train 4 seeds exactly as one process does and share one workdir; a second launch on
it is refused on both processes; when one is killed the other ends with one line, and the
relaunch resumes, from an older checkpoint when the newest does not restore."""
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


def start(workdir, *args, devices: int = 1, process: tuple[int, int] | None = None,
          num_processes: int = 2):
    env = {**os.environ, "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")
           + f" --xla_force_host_platform_device_count={devices}"}
    command = [sys.executable, "-m", "pixelzoo.launch.train", f"--workdir={workdir}", *RUN,
               *args]
    if process is not None:
        port, index = process
        command += [f"--coordinator_address=localhost:{port}",
                    f"--num_processes={num_processes}", f"--process_id={index}"]
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


@pytest.mark.slow(150)
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

    # A second launch on the workdir in use: refused on both of its processes, at once.
    pair = start_pair(multi, "--num_frames=4000")
    deadline = time.time() + 300
    checkpoints = RunCheckpointer(str(multi / "checkpoints"))
    while time.time() < deadline and (checkpoints.latest_frame() or 0) < 1600:
        assert all(p.poll() is None for p in pair), pair[0].communicate()[1][-3000:]
        time.sleep(0.2)
        checkpoints = RunCheckpointer(str(multi / "checkpoints"))
    launched = time.monotonic()
    second = start_pair(multi, "--num_frames=4000")
    ends: dict[int, float] = {}
    while len(ends) < 2 and time.monotonic() - launched < 120:
        ends.update({index: time.monotonic() - launched for index, p in enumerate(second)
                     if index not in ends and p.poll() is not None})
        time.sleep(0.1)
    refusals = [process.communicate(timeout=10) for process in second]
    for process, (stdout, stderr) in zip(second, refusals):
        assert process.returncode == 2 and stdout == ""
        [line] = stderr.strip().splitlines()
        assert line.startswith(f"error: workdir {multi} is in use by process ") and \
            "wait for that run to end or stop it, or use another --workdir" in line, stderr
    print(f"second launch on a live workdir: processes refused {ends[0]:.1f} and "
          f"{ends[1]:.1f} s after the launch")
    assert abs(ends[0] - ends[1]) < 10, "every process ends within 10 s of process 0's refusal"
    assert max(ends.values()) < 60, "refused once they meet (start-up and imports only)"
    assert all(p.poll() is None for p in pair)   # the run in the workdir goes on

    # Kill process 1 mid-run: process 0 ends within 30 s with one line from pixelzoo.
    pair[1].send_signal(signal.SIGKILL)
    killed = time.monotonic()
    _, stderr = pair[0].communicate(timeout=120)
    survivor_s = time.monotonic() - killed
    print(f"survivor ended {survivor_s:.1f} s after its peer's SIGKILL")
    assert survivor_s < 30 and pair[0].returncode == 1
    assert stderr.strip().splitlines() == [
        "error: lost process 1 of the run (no heartbeat for 10 s); process 0 stopped too. "
        "The workdir keeps the last checkpoint: relaunch the same command on every process "
        "to resume"]
    complete = RunCheckpointer(str(multi / "checkpoints")).latest_frame()
    assert complete >= 1600       # newer than the first launch's last checkpoint (1200)

    # The newest checkpoint does not restore on process 1 (its replays are cut short): process
    # 0 moves it aside, both resume from the one before, in the same launch.
    replays = multi / "replays" / str(complete) / "process_1.npz"
    replays.write_bytes(replays.read_bytes()[:100])
    (stdout, stderr), _ = finish(start_pair(multi, f"--num_frames={complete + 800}"))
    older = complete - 400
    assert f"resumed from checkpoint at frame {older:,}" in stdout
    assert (f"warning: checkpoint {multi / 'checkpoints' / str(complete)} cannot be restored "
            "(process 1 could not restore it); moved to") in stderr
    [aside] = (multi / "unrestorable_checkpoints").iterdir()
    assert aside.name.startswith(f"{complete}-") and (aside / "replays").is_dir()
    assert RunCheckpointer(str(multi / "checkpoints")).latest_frame() == complete + 800
    for seed, rows in rows_by_seed(multi / "eval.csv").items():
        frames = [int(r["frame"]) for r in rows]
        assert frames == sorted(set(frames)) and frames[-1] == complete + 800, (seed, frames)
