"""launch.sweep: grid expansion, suites, dry runs, bad input, skip and resume, failures, and
an end-to-end sweep of two tiny real runs through submitit's local executor."""
import csv
import json
import os
import pathlib
import socket
import subprocess
import sys

import pytest
from absl import flags

from pixelzoo import envs
from pixelzoo.launch import sweep
from pixelzoo.launch.checkpointing import RunCheckpointer
from tests.test_train import TINY_RUN

ROOT = pathlib.Path(__file__).resolve().parents[1]
# TINY_RUN's config flags on state observations, as single-valued sweep lists.
TINY_CONFIG = [arg for arg in TINY_RUN if arg.startswith("--config.")] + [
    "--config.obs_type=state"]


def read_manifest(out):
    return json.loads((out / "manifest.json").read_text())


def fake_checkpoints(workdir, *names):
    """Checkpoint step directories as orbax leaves them (contents don't matter here)."""
    for name in names:
        (workdir / "checkpoints" / name).mkdir(parents=True)


# ----------------------------------------------------------------------------- the grid
def test_expand_grid_lists_every_run_and_its_command(tmp_path):
    out = str(tmp_path)
    runs = sweep.expand_grid(["drqv2"], ["cartpole_swingup", "walker_walk"], [1, 2], 800,
                             {"batch_size": ["128", "256"], "obs_type": ["state"]})
    expected = [(task, batch_size, seed) for task in ("cartpole_swingup", "walker_walk")
                for batch_size in (128, 256) for seed in (1, 2)]
    assert [run.name for run in runs] == [
        "drqv2-cartpole_swingup-1-batch_size=128", "drqv2-cartpole_swingup-2-batch_size=128",
        "drqv2-cartpole_swingup-1-batch_size=256", "drqv2-cartpole_swingup-2-batch_size=256",
        "drqv2-walker_walk-1-batch_size=128", "drqv2-walker_walk-2-batch_size=128",
        "drqv2-walker_walk-1-batch_size=256", "drqv2-walker_walk-2-batch_size=256"]
    for run, (task, batch_size, seed) in zip(runs, expected, strict=True):
        workdir = f"{out}/runs/drqv2-{task}-{seed}-batch_size={batch_size}"
        assert run.workdir(out) == workdir
        assert run.command(out) == [
            sys.executable, "-m", "pixelzoo.launch.train", "--agent=drqv2", f"--task={task}",
            f"--seed={seed}", "--num_frames=800", f"--workdir={workdir}",
            f"--config.batch_size={batch_size}", "--config.obs_type=state"]
    # No config lists: one run per agent, task and seed, named without a tag.
    plain = sweep.expand_grid(["drqv2", "drq"], ["cheetah_run"], [3], 10, {})
    assert [run.name for run in plain] == ["drqv2-cheetah_run-3", "drq-cheetah_run-3"]
    assert plain[1].command(out)[3:] == ["--agent=drq", "--task=cheetah_run", "--seed=3",
                                         "--num_frames=10", f"--workdir={out}/runs/drq-cheetah_run-3"]


def test_suites_are_the_drqv2_groups_and_the_planet_six():
    groups = {name: sweep.SUITES[f"drqv2_{name}"] for name in ("easy", "medium", "hard")}
    for group, suite in groups.items():
        assert suite.tasks and all(envs.task_group(task) == group for task in suite.tasks)
    assert sorted(sum((suite.tasks for suite in groups.values()), ())) == list(envs.DRQV2_TASKS)
    assert [len(suite.tasks) for suite in groups.values()] == [9, 12, 3]
    assert groups["hard"].tasks == ("humanoid_run", "humanoid_stand", "humanoid_walk")
    assert [suite.num_frames for suite in groups.values()] == [1_000_000, 3_000_000, 30_000_000]
    planet = ("cartpole_swingup", "reacher_easy", "cheetah_run", "finger_spin",
              "ball_in_cup_catch", "walker_walk")
    assert sweep.SUITES["planet100k"] == sweep.Suite(planet, 100_000)
    assert sweep.SUITES["planet500k"] == sweep.Suite(planet, 500_000)


def test_a_suite_sets_tasks_and_frames_and_an_explicit_num_frames_wins(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert sweep.main(["sweep", f"--out={out}", "--suite=planet500k", "--agents=drq",
                       "--dry_run"]) == 0
    commands = capsys.readouterr().out.splitlines()[:-1]
    assert [command.split()[4] for command in commands] == [
        f"--task={task}" for task in sweep.PLANET_TASKS]
    assert all(command.split()[6] == "--num_frames=500000" for command in commands)
    assert sweep.main(["sweep", f"--out={out}", "--suite=drqv2_hard", "--num_frames=5000",
                       "--dry_run"]) == 0
    commands = capsys.readouterr().out.splitlines()[:-1]
    assert [command.split()[4:7] for command in commands] == [
        [f"--task={task}", "--seed=1", "--num_frames=5000"]
        for task in ("humanoid_run", "humanoid_stand", "humanoid_walk")]
    assert not out.exists()


# ----------------------------------------------------------------------------- dry run, bad input
def test_dry_run_prints_the_commands_and_creates_nothing(tmp_path, capsys):
    out = tmp_path / "sweep"
    code = sweep.main(["sweep", f"--out={out}", "--agents=drqv2,alix", "--tasks=walker_walk",
                       "--seeds=1,2", "--num_frames=1000", "--config.lr=1e-4,3e-4",
                       "--dry_run"])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    expected = [f"{sys.executable} -m pixelzoo.launch.train --agent={agent} --task=walker_walk "
                f"--seed={seed} --num_frames=1000 "
                f"--workdir={out}/runs/{agent}-walker_walk-{seed}-lr={lr} --config.lr={lr}"
                for agent in ("drqv2", "alix") for lr in ("1e-4", "3e-4") for seed in (1, 2)]
    assert lines == expected + ["dry run: 8 to launch, 0 finished; nothing ran"]
    assert not out.exists()


@pytest.mark.parametrize("args, message", [
    (["--agents=drqv2,drqv3", "--tasks=walker_walk"],
     "unknown agent 'drqv3'; choose one of: drqv2, flare, alix, gpl, gpl_quantile, d2rl, drq"),
    (["--tasks=walker_wlk"], "Unknown task 'walker_wlk'. Did you mean walker_walk"),
    (["--suite=planet"], ("unknown suite 'planet'; choose one of: drqv2_easy, drqv2_medium, "
                          "drqv2_hard, planet100k, planet500k")),
    (["--tasks=walker_walk", "--config.batch_sise=1,2"],
     "unknown config field 'batch_sise' (did you mean 'batch_size'?). Valid fields: base,"),
    (["--tasks=walker_walk", "--max_parallel=0"], "--max_parallel=0 must be >= 1"),
    (["--tasks="], "empty grid: give at least one value (and no empty one) to --tasks"),
    (["--tasks=walker_walk", "--seeds="], "empty grid: give at least one value"),
    (["--tasks=walker_walk", "--config.lr="], "to --config.lr"),
    (["--tasks=walker_walk", "--executor=k8s"],
     "unknown executor 'k8s'; choose one of: local, submitit_local, slurm"),
    (["--tasks=walker_walk", "--config.batch_size=64,many"],
     "--config.batch_size='many' is not a valid int"),
    (["--tasks=walker_walk", "--config.image_size=84,12"],
     "drqv2-walker_walk-1-image_size=12: invalid config: image_size=12 is too small"),
    (["--suite=planet100k", "--tasks=walker_walk"], "--suite=planet100k sets the tasks"),
    (["--tasks=walker_walk", "--seed=1"], "Unknown command line flag 'seed'"),
    (["--tasks=walker_walk", "--num_frames=0"], "--num_frames=0 must be > 0"),
])
def test_bad_input_exits_2_with_a_short_message_before_anything(tmp_path, capsys, args,
                                                                 message):
    out = tmp_path / "sweep"
    assert sweep.main(["sweep", f"--out={out}", *args]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and message in captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    assert not out.exists()


def slurm_executor(tmp_path, monkeypatch, *args):
    """The sweep's SLURM executor for these flags. No cluster here: a stand-in srun lets
    submitit build it."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srun").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / "bin" / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    fv = sweep.define_flags(flags.FlagValues())
    fv(["sweep", "--out=x", "--executor=slurm", *args])
    return sweep._make_executor(fv, str(tmp_path))


def test_slurm_options_become_submitit_parameters(tmp_path, monkeypatch):
    executor = slurm_executor(tmp_path, monkeypatch, "--slurm_partition=gpu",
                              "--slurm_account=rl", "--timeout_min=90", "--gpus_per_job=2",
                              "--cpus_per_job=10", "--mem_gb=64")
    assert executor.cluster == "slurm"
    assert executor._executor.parameters == {
        "job_name": "pixelzoo", "time": 90, "gpus_per_node": 2, "cpus_per_task": 10,
        "mem": "64GB", "partition": "gpu", "account": "rl"}


def test_run_command_appends_the_output_to_the_log_and_reports_the_exit_code(tmp_path,
                                                                             monkeypatch):
    log = tmp_path / "train.log"
    log.write_text("earlier attempt\n")
    monkeypatch.setenv("SWEEP_TEST_MINE", "from the user")
    script = ("import os, sys; print(os.environ['SWEEP_TEST_DEFAULT'], "
              "os.environ['SWEEP_TEST_MINE'], os.getcwd()); sys.exit(3)")
    result = sweep.run_command([sys.executable, "-c", script], str(log), str(tmp_path),
                               {"SWEEP_TEST_DEFAULT": "default", "SWEEP_TEST_MINE": "default"})
    assert result["exit_code"] == 3 and result["host"] == socket.gethostname()
    assert result["start"] <= result["end"]
    lines = log.read_text().splitlines()
    assert lines[0] == "earlier attempt" and lines[1].startswith("=== ")
    assert lines[2] == f"default from the user {tmp_path}"   # the user's environment wins


# ----------------------------------------------------------------------------- skip, resume, failure
def test_finished_runs_are_skipped_and_unfinished_ones_relaunched(tmp_path, capsys):
    out = tmp_path / "sweep"
    runs = out / "runs"
    fake_checkpoints(runs / "drqv2-cartpole_swingup-1", "400", "800")   # finished
    # Unfinished: a checkpoint being written (orbax's temporary name) does not count.
    fake_checkpoints(runs / "drqv2-cartpole_swingup-2", "400", "1200.orbax-checkpoint-tmp-7")
    assert sweep.latest_checkpoint_frame(str(runs / "drqv2-cartpole_swingup-1")) == 800
    assert sweep.latest_checkpoint_frame(str(runs / "drqv2-cartpole_swingup-2")) == 400
    assert sweep.latest_checkpoint_frame(str(runs / "drqv2-cartpole_swingup-3")) is None
    code = sweep.main(["sweep", f"--out={out}", "--tasks=cartpole_swingup", "--seeds=1,2,3",
                       "--num_frames=800", "--dry_run"])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "# skip drqv2-cartpole_swingup-1: finished (checkpoint at frame 800)"
    # The same command as the first launch: launch.train resumes from the checkpoint.
    assert lines[1:3] == [f"{sys.executable} -m pixelzoo.launch.train --agent=drqv2 "
                          f"--task=cartpole_swingup --seed={seed} --num_frames=800 "
                          f"--workdir={runs}/drqv2-cartpole_swingup-{seed}"
                          for seed in (2, 3)]
    assert lines[3] == "dry run: 2 to launch, 1 finished; nothing ran"
    # Asking for more frames makes the finished run unfinished again.
    sweep.main(["sweep", f"--out={out}", "--tasks=cartpole_swingup", "--seeds=1",
                "--num_frames=1600", "--dry_run"])
    assert capsys.readouterr().out.splitlines()[-1] == "dry run: 1 to launch, 0 finished; nothing ran"
    assert not (out / "manifest.json").exists()


def test_a_failing_run_does_not_stop_the_others(tmp_path, capsys):
    """Seeds 1 and 2 fail (their workdirs hold another run), one after the other; seed 3 is
    finished and skipped; the sweep reports the failures and exits 1."""
    out = tmp_path / "sweep"
    for seed in (1, 2):
        workdir = out / "runs" / f"drqv2-cartpole_swingup-{seed}"
        workdir.mkdir(parents=True)
        (workdir / "config.json").write_text(json.dumps(
            {"agent": "drqv2", "task": "cartpole_swingup", "seed": 99, "num_frames": 800,
             "config": {}}))
    fake_checkpoints(out / "runs" / "drqv2-cartpole_swingup-3", "800")
    code = sweep.main(["sweep", f"--out={out}", "--tasks=cartpole_swingup", "--seeds=1,2,3",
                       "--num_frames=800", "--max_parallel=1"])
    assert code == 1
    stdout = capsys.readouterr().out
    assert f"sweep {out}: 3 runs: 0 succeeded, 2 failed, 1 skipped-finished" in stdout
    assert "  failed: drqv2-cartpole_swingup-1 (exit code 2), log: " in stdout
    manifest = read_manifest(out)
    first, second, third = (manifest["runs"][f"drqv2-cartpole_swingup-{seed}"]
                            for seed in (1, 2, 3))
    for record in (first, second):
        assert record["status"] == "failed" and record["exit_code"] == 2
        assert record["executor"] == "local" and record["host"] == socket.gethostname()
        assert "holds a different run; differing fields: seed (saved 99, now" in \
            pathlib.Path(record["log"]).read_text()
    assert second["start"] >= first["end"]   # max_parallel=1: launched after the failure
    assert third["status"] == "skipped-finished" and third["checkpoint_frame"] == 800
    assert manifest["sweeps"][0]["counts"] == {"succeeded": 0, "failed": 2,
                                               "skipped-finished": 1}
    assert sorted(os.listdir(out)) == ["manifest.json", "runs"]   # no temporary file left


# ----------------------------------------------------------------------------- end to end
@pytest.mark.slow(55)
def test_a_sweep_of_two_tiny_runs_through_submitit_then_again_skips_both(tmp_path, capsys):
    out = tmp_path / "sweep"
    args = [f"--out={out}", "--tasks=cartpole_swingup", "--seeds=1,2", "--num_frames=800",
            "--executor=submitit_local", "--max_parallel=2", "--gpus_per_job=0",
            "--timeout_min=10", *TINY_CONFIG]
    process = subprocess.run([sys.executable, "-m", "pixelzoo.launch.sweep", *args], cwd=ROOT,
                             capture_output=True, text=True, timeout=600, check=False)
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    assert f"sweep {out}: 2 runs: 2 succeeded, 0 failed, 0 skipped-finished" in process.stdout
    manifest = read_manifest(out)
    assert sorted(manifest["runs"]) == ["drqv2-cartpole_swingup-1", "drqv2-cartpole_swingup-2"]
    for seed in (1, 2):
        workdir = out / "runs" / f"drqv2-cartpole_swingup-{seed}"
        with open(workdir / "eval.csv", newline="") as file:
            assert [int(row["frame"]) for row in csv.DictReader(file)] == [0, 800]
        assert sweep.latest_checkpoint_frame(str(workdir)) == 800
        assert RunCheckpointer(str(workdir / "checkpoints")).latest_frame() == 800
        record = manifest["runs"][f"drqv2-cartpole_swingup-{seed}"]
        assert record["status"] == "succeeded" and record["exit_code"] == 0
        assert record["attempt"] == 1
        assert record["executor"] == "submitit_local" and record["job_id"]
        assert record["host"] == socket.gethostname()
        assert record["submitted"] <= record["start"] <= record["end"]
        assert record["workdir"] == str(workdir)
        assert record["command"].split()[1:] == [
            "-m", "pixelzoo.launch.train", "--agent=drqv2", "--task=cartpole_swingup", f"--seed={seed}",
            "--num_frames=800", f"--workdir={workdir}", *TINY_CONFIG]
        assert json.loads((workdir / "config.json").read_text())["config"]["obs_type"] == "state"
        assert "done: 800 frames" in (workdir / "train.log").read_text()
        assert (out / "submitit" / record["job_id"]).is_dir()

    assert sweep.main(["sweep", *args]) == 0
    assert "2 runs: 0 succeeded, 0 failed, 2 skipped-finished" in capsys.readouterr().out
    again = read_manifest(out)
    for name, record in again["runs"].items():
        assert record["status"] == "skipped-finished" and record["checkpoint_frame"] == 800
        assert record["job_id"] == manifest["runs"][name]["job_id"]   # where it ran
        assert pathlib.Path(record["log"]).read_text().count("=== ") == 1   # not relaunched
    assert len(again["sweeps"]) == 2


def test_slurm_jobs_can_be_multi_process_runs(tmp_path, monkeypatch):
    parameters = slurm_executor(tmp_path, monkeypatch, "--nodes=2", "--tasks_per_node=4",
                                "--gpus_per_job=4")._executor.parameters
    assert (parameters["nodes"], parameters["ntasks_per_node"], parameters["gpus_per_node"]) \
        == (2, 4, 4)


@pytest.mark.slow(45)
def test_a_sweep_of_multi_process_jobs_on_stand_in_slurm(tmp_path):
    """--executor=slurm --nodes=2 --tasks_per_node=1: one job per run, whose two tasks
    (stand-in sbatch and srun: local processes with srun's SLURM_* variables) find each
    other through JAX's SLURM detection and train the run's two seeds, one each. The run
    succeeds; the manifest has every task's exit code and log; every seed has its rows.
    (One run: a second would add two processes' start-up and compilation, and test nothing
    more, the runs' jobs being independent.)"""
    out, standin = tmp_path / "sweep", ROOT / "tests" / "slurm_standin"
    (tmp_path / "slurm").mkdir()
    env = {**os.environ, "PATH": f"{standin}{os.pathsep}{os.environ['PATH']}",
           "FAKE_SLURM_DIR": str(tmp_path / "slurm"),
           "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}   # one CPU device a task
    args = [f"--out={out}", "--tasks=cartpole_swingup", "--seeds=2", "--num_seeds=2",
            "--seed_shards=2", "--num_frames=400", "--executor=slurm", "--nodes=2",
            "--tasks_per_node=1", "--gpus_per_job=0", "--cpus_per_job=1", "--timeout_min=10",
            *TINY_CONFIG]
    process = subprocess.run([sys.executable, "-m", "pixelzoo.launch.sweep", *args], cwd=ROOT,
                             env=env, capture_output=True, text=True, timeout=600, check=False)
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    assert f"sweep {out}: 1 runs: 1 succeeded, 0 failed, 0 skipped-finished" in process.stdout
    manifest = read_manifest(out)
    assert sorted(manifest["runs"]) == ["drqv2-cartpole_swingup-2-3"]
    for first in (2,):
        workdir = out / "runs" / f"drqv2-cartpole_swingup-{first}-{first + 1}"
        record = manifest["runs"][workdir.name]
        assert record["status"] == "succeeded" and record["executor"] == "slurm"
        assert record["exit_code"] == 0 and record["exit_codes"] == [0, 0]
        assert record["logs"] == [str(workdir / "train.log"), str(workdir / "train.process_1.log")]
        assert record["command"].split()[3:9] == [
            "--agent=drqv2", "--task=cartpole_swingup", f"--seed={first}", "--num_frames=400",
            f"--workdir={workdir}", "--num_seeds=2"]
        assert "--seed_shards=2" in record["command"].split()
        # Process 1 prints nothing (no library INFO, no gloo notes): its log is the header.
        assert (workdir / "train.process_1.log").read_text().count("\n") == 1
        log = (workdir / "train.log").read_text()
        assert ("mesh: 2 processes x 1 device, 2 seeds, 1 seed per device; replays in each "
                "process's host memory (its seeds')") in log and "done: 400 frames" in log
        # Each seed's evaluations at 0 and 400, and its replays with the process that had it.
        with open(workdir / "eval.csv", newline="") as file:
            rows = [(int(row["seed"]), int(row["frame"])) for row in csv.DictReader(file)]
        assert sorted(rows) == [(first, 0), (first, 400), (first + 1, 0), (first + 1, 400)]
        assert sorted(p.name for p in (workdir / "replays" / "400").iterdir()) == \
            ["process_0.npz", "process_1.npz"]
        assert RunCheckpointer(str(workdir / "checkpoints")).latest_frame() == 400
        assert (out / "submitit" / record["job_id"] / f"{record['job_id']}_1_result.pkl").exists()


def test_dry_run_of_a_slurm_sweep_prints_the_job_script(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert sweep.main(["sweep", f"--out={out}", "--tasks=walker_walk", "--seeds=1",
                       "--num_seeds=8", "--seed_shards=4", "--executor=slurm", "--nodes=2",
                       "--tasks_per_node=4", "--gpus_per_job=4", "--slurm_partition=gpu",
                       "--dry_run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith(f"--workdir={out}/runs/drqv2-walker_walk-1-8 --num_seeds=8 "
                             "--seed_shards=4")
    assert lines[1] == "# the job script (sbatch) of each run; the job runs its command:"
    script = lines[2:-1]
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4",
                 "#SBATCH --gpus-per-node=4", "#SBATCH --partition=gpu",
                 "#SBATCH --job-name=pixelzoo"):
        assert line in script
    assert script[-1] == (f"srun --unbuffered --output {out}/submitit/%j/%j_%t_log.out "
                          f"--error {out}/submitit/%j/%j_%t_log.err {sys.executable} -u -m "
                          f"submitit.core._submit {out}/submitit/%j")
    assert lines[-1] == "dry run: 1 to launch, 0 finished; nothing ran"
    assert not out.exists()
