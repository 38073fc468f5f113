"""The one run description (launch.run_spec.RunSpec) and its one check (check_run_spec),
as launch.train, launch.sweep and launch.benchmark use them; the public Driver that
launch.benchmark times."""
import json
import subprocess
import sys

import jax
import pytest

from pixelzoo import agents
from pixelzoo.agents import config as config_lib
from pixelzoo.launch import loop, sweep
from pixelzoo.launch.run_spec import RunSpec, check_run_spec, compose_run_spec
from tests.test_train import ROOT, launch

TINY_STATE = dict(obs_type="state", hidden_dim=16, feature_dim=8, batch_size=8,
                  action_repeat=8, num_seed_frames=160, num_eval_episodes=0,
                  checkpoint_every_frames=400, log_every_frames=400, replay_capacity=1000)


def test_every_config_field_is_an_agent_field_or_a_run_field():
    assert set(config_lib.AGENT_FIELDS) | set(config_lib.RUN_FIELDS) == set(agents.FIELD_NAMES)
    assert not set(config_lib.AGENT_FIELDS) & set(config_lib.RUN_FIELDS)
    assert {"lr", "encoder", "seer_num_copies"} <= set(config_lib.AGENT_FIELDS)
    assert {"replay", "action_repeat", "seer_freeze_frames"} <= set(config_lib.RUN_FIELDS)


def test_the_validator_reports_every_problem_in_one_message():
    spec = compose_run_spec("drqv3", "walker_wlk", dict(frame_stack=0, batch_size=3),
                            num_frames=0, num_seeds=2, seed_shards=3, num_devices=1)
    with pytest.raises(ValueError) as error:
        check_run_spec(spec, jax.devices())
    message = str(error.value)
    for problem in ("unknown agent 'drqv3'", "Unknown task 'walker_wlk'. Did you mean walker_walk",
                    "--num_frames=0 must be > 0", "frame_stack=0 must be >= 1",
                    "--seed_shards=3 must divide both --num_seeds=2 and --num_devices=1"):
        assert message.count(problem) == 1, (problem, message)
    # Devices and batch: the batch split over each seed's devices, and too many devices.
    spec = compose_run_spec("drqv2", "cartpole_swingup", dict(batch_size=3))
    with pytest.raises(ValueError, match=r"batch_size=3 must be divisible by the number of "
                                         r"devices \(2\).*--num_devices=2 / --seed_shards=1"):
        check_run_spec(spec, jax.devices())
    with pytest.raises(ValueError, match=r"--num_devices=3: allowed range 1..2"):
        check_run_spec(RunSpec(spec.agent, spec.task, spec.config, num_devices=3),
                       jax.devices())
    with pytest.raises(ValueError, match="run in one process for now"):
        check_run_spec(compose_run_spec("drqv2", "cartpole_swingup", dict(replay="device")),
                       num_processes=2)


def test_a_checked_spec_has_its_placement_and_round_trips_through_config_json():
    spec = compose_run_spec("drq", "walker_walk", dict(lr=3e-4), seed=4, num_seeds=2)
    assert spec.config.action_repeat == 2 and spec.config.lr == 3e-4   # recipe, then flags
    checked = check_run_spec(spec, jax.devices())
    assert (checked.num_devices, checked.seed_shards) == (2, 2)
    assert RunSpec.from_identity(json.loads(json.dumps(checked.identity())), 2, 2) == checked
    assert checked.seeds == [4, 5]


def test_sweep_runs_are_run_specs_checked_by_the_validator(tmp_path, capsys):
    runs = sweep.expand_grid(["drqv2"], ["walker_walk"], [1], 800, {"lr": ["1e-4", "3e-4"]})
    assert all(isinstance(run.spec, RunSpec) for run in runs)
    assert [run.spec.config.lr for run in runs] == [1e-4, 3e-4]
    assert runs[0].spec.config.batch_size == 512          # walker's recipe
    out = tmp_path / "sweep"
    assert sweep.main(["sweep", f"--out={out}", "--agents=drqv3", "--tasks=walker_wlk",
                       "--num_frames=0", "--config.frame_stack=0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: drqv3-walker_wlk-1: invalid config: unknown agent 'drqv3'")
    assert all(problem in err for problem in ("Unknown task 'walker_wlk'", "--num_frames=0",
                                              "frame_stack=0"))


def test_train_reports_every_problem_of_its_flags_at_once(tmp_path):
    code, _, stderr = launch(tmp_path / "run", "--agent=drqv3", "--task=walker_wlk",
                             "--num_frames=0", "--config.obs_type=state",
                             "--config.frame_stack=0")
    assert code == 2 and "Traceback" not in stderr
    line = stderr.strip().splitlines()[-1]
    assert line.startswith("error: invalid config: unknown agent 'drqv3'")
    assert all(problem in line for problem in ("Unknown task 'walker_wlk'",
                                               "--num_frames=0", "frame_stack=0"))
    assert not (tmp_path / "run").exists()


def benchmark(*args):
    command = [sys.executable, "-m", "pixelzoo.launch.benchmark", "--task=cartpole_swingup",
               "--obs_type=state", "--hidden_dim=16", "--feature_dim=8", "--batch_size=8",
               "--action_repeat=8", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_benchmark_checks_its_run_spec_with_the_validator():
    result = benchmark("--agent=drqv3", "--parts=seer")
    assert result.returncode != 0
    assert "unknown agent 'drqv3'" in result.stderr
    assert "seer_freeze_frames freezes a pixel encoder" in result.stderr  # the frozen spec's


@pytest.mark.slow(30)
def test_benchmark_times_the_public_driver_on_a_tiny_state_run():
    result = benchmark("--parts=loop", "--loop_steps=30", "--num_seeds=2")
    assert result.returncode == 0, result.stderr[-3000:]
    timings = json.loads(result.stdout.strip().splitlines()[-1])
    assert timings["num_seeds"] == 2 and timings["loop_ms_per_step"] > 0
    assert {"act", "env_step", "replay_add", "update_dispatch"} <= set(
        timings["loop_parts_ms_per_step"])


@pytest.mark.slow(25)
def test_train_runs_a_run_spec_and_the_driver_steps_it(tmp_path):
    from pixelzoo.launch.driver import Driver, PartTimer
    from pixelzoo.launch.run import Run
    spec = check_run_spec(compose_run_spec("drqv2", "cartpole_swingup", TINY_STATE, seed=0,
                                           num_frames=400, num_devices=1), jax.devices())
    assert loop.train(spec, str(tmp_path / "train"), should_stop=lambda: False)
    run = Run(spec, str(tmp_path / "driver"), env_split=(0, 1))   # no environment kept here
    try:
        assert run.train_pool.num_workers == 1 and len(run.train_pool.worker_pids) == 1
        driver = Driver(run, run.initial_state())
        timer = PartTimer()
        driver.run_steps(run.num_seed_steps + 6, timer)
        assert driver.step == run.num_seed_steps + 6
        assert run.replays[0].num_added == driver.step + 1      # one first timestep
        assert timer.seconds["update_dispatch"] > 0
    finally:
        run.close()
