"""launch.train end to end: bad input, SIGKILL and resume, SIGTERM, refused config changes,
non-finite losses, orbax round trips, and one run that shows learning."""
import csv
import itertools
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from pixelzoo import agents
from pixelzoo import envs
from pixelzoo.launch import loop
from pixelzoo.launch.checkpointing import RunCheckpointer
from pixelzoo.replay import ReplayBuffer

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Pixel runs of the launcher: 16px, tiny networks, and 50 agent steps per 1000-frame
# episode (action repeat 20): rendering, about 40 ms a frame on a 2-core CPU whatever the
# size, is most of their time.
TINY_RUN = ["--task=cartpole_swingup", "--config.image_size=16", "--config.hidden_dim=16",
            "--config.feature_dim=8", "--config.batch_size=8", "--config.action_repeat=20",
            "--config.num_seed_frames=200", "--config.eval_every_frames=1200",
            "--config.num_eval_episodes=1", "--config.checkpoint_every_frames=400",
            "--config.log_every_frames=400", "--config.replay_capacity=5000"]


def launch(workdir, *args, wait=True):
    command = [sys.executable, "-m", "pixelzoo.launch.train", f"--workdir={workdir}", *args]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    if not wait:
        return process
    stdout, stderr = process.communicate(timeout=600)
    return process.returncode, stdout, stderr


def read_csv(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("args, message", [
    (["--agent=drqv3"],
     "unknown agent 'drqv3'; choose one of: drqv2, flare, alix, gpl, gpl_quantile, d2rl, drq"),
    (["--task=cartpole_swingupp"], "Unknown task 'cartpole_swingupp'. Did you mean "
                                   "cartpole_swingup, cartpole_swingup_sparse, acrobot_swingup? "
                                   "Valid tasks (see envs.names()): acrobot_swingup,"),
    (["--config.batch_sise=3"], "(did you mean 'batch_size'?). Valid fields: base,"),
    (["--num_frames=0"], "--num_frames=0 must be > 0"),
    (["--num_seeds=0"], "--num_seeds=0 must be >= 1"),
    (["--num_seeds=2", "--seed_shards=3"],
     "--seed_shards=3 must divide both --num_seeds=2 and --num_devices=1; valid: [1]"),
    (["--config.target_encoder=True"], "target_encoder=True is part of the sac base"),
    (["--config.image_size=12"], "allowed range: image_size >= 15"),
    (["--config.frame_stack=0"], "frame_stack=0 must be >= 1"),
    (["--config.batch_size=512", "--config.replay_capacity=100"],
     "batch_size=512 is larger than replay_capacity=100"),
    (["--config.batch_size=many"], "config.batch_size"),
])
def test_bad_input_exits_with_a_short_message_before_any_work(tmp_path, args, message):
    code, stdout, stderr = launch(tmp_path / "run", *args)
    assert code == 2
    assert message in stderr
    assert "Traceback" not in stderr + stdout
    assert not (tmp_path / "run").exists(), "nothing may be written for a user mistake"


# ----------------------------------------------------------------------------- resume
def kill_when(process: subprocess.Popen, ready, timeout_s: float = 300.0) -> None:
    """SIGKILLs a launched run once ready() holds (polled every 0.1 s, for at most
    timeout_s); fails with its stderr if it exited before."""
    deadline = time.time() + timeout_s
    while time.time() < deadline and process.poll() is None and not ready():
        time.sleep(0.1)
    assert process.poll() is None, process.communicate()[1][-2000:]
    process.send_signal(signal.SIGKILL)
    process.communicate()


@pytest.mark.slow(100)
def test_sigkill_then_resume_continues_from_the_last_complete_checkpoint(tmp_path):
    workdir = tmp_path / "run"
    process = launch(workdir, *TINY_RUN, "--num_frames=2400", wait=False)
    checkpoints = workdir / "checkpoints"
    train_csv = workdir / "train.csv"
    # Kill after the first episode (frame 1000) is logged, between checkpoints.
    kill_when(process, lambda: train_csv.exists() and bool(read_csv(train_csv)))
    complete = RunCheckpointer(str(checkpoints)).latest_frame()
    assert complete in (800, 1200)
    # A checkpoint cut short by the kill (orbax's temporary directory) is never used.
    partial = checkpoints / f"{complete + 400}.orbax-checkpoint-tmp-1"
    partial.mkdir()
    (partial / "junk").write_text("partial")

    code, stdout, stderr = launch(workdir, *TINY_RUN, "--num_frames=2400")
    assert code == 0, stderr[-3000:]
    assert f"resumed from checkpoint at frame {complete:,}" in stdout
    frames = [int(row["frame"]) for row in read_csv(train_csv)]
    # The row at frame 1000 survives only if a checkpoint after it was complete; the resumed
    # run starts a new episode at the checkpoint and logs its end 1000 frames later.
    assert frames == ([1000] if complete > 1000 else []) + [complete + 1000]
    eval_frames = [int(row["frame"]) for row in read_csv(workdir / "eval.csv")]
    assert eval_frames == [0, 1200, 2400]
    assert RunCheckpointer(str(checkpoints)).latest_frame() == 2400
    with open(train_csv) as file:
        header = file.readline().strip().split(",")
    assert header[:4] == ["frame", "step", "episode", "episode_return"]
    assert {"critic_loss", "actor_loss", "q_mean"} <= set(header)
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(workdir))

    # Changing anything but num_frames is refused, naming the fields (extending num_frames
    # on resume is exercised by the in-process resumes of test_zoo and test_learner).
    config_before = (workdir / "config.json").read_text()
    code, _, stderr = launch(workdir, *TINY_RUN, "--num_frames=3200", "--config.lr=0.001",
                             "--seed=5")
    assert code == 2
    assert "config.lr (saved 0.0001, now 0.001)" in stderr and "seed (saved 1, now 5)" in stderr
    assert (workdir / "config.json").read_text() == config_before


@pytest.mark.slow(50)
def test_sigterm_saves_a_checkpoint_and_exits(tmp_path):
    workdir = tmp_path / "run"
    process = launch(workdir, *TINY_RUN, "--num_frames=100000", "--config.save_video=True",
                     wait=False)
    deadline = time.time() + 300
    while time.time() < deadline and not (workdir / "train.csv").exists():
        time.sleep(0.2)
    while time.time() < deadline and len(read_csv(workdir / "train.csv")) < 1:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr[-3000:]
    assert "checkpoint saved" in stdout
    frame = RunCheckpointer(str(workdir / "checkpoints")).latest_frame()
    assert frame >= 1000   # one episode of 1000 frames was logged
    assert (workdir / "videos" / "eval_0.mp4").stat().st_size > 1000


# ----------------------------------------------------------------------------- in process
def tiny_spec(**config):
    values = dict(image_size=16, hidden_dim=16, feature_dim=8, batch_size=8, action_repeat=8,
                  num_seed_frames=200, eval_every_frames=100_000, num_eval_episodes=1,
                  checkpoint_every_frames=400, log_every_frames=400, replay_capacity=2000)
    values.update(config)
    config = agents.build_config("drqv2", **values)
    return {"agent": "drqv2", "task": "cartpole_swingup", "seed": 0, "num_frames": 2000,
            "config": config.to_dict()}


@pytest.mark.slow(30)
def test_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    real_make = agents.make_from_config

    def make_poisoned(*args):
        agent = real_make(*args)

        def update(state, batch, key):
            new_state, metrics = agent.update(state, batch, key)
            poison = jax.numpy.where(state.update_step >= 40, jax.numpy.nan, 0.0)
            return new_state, {**metrics, "critic_loss": metrics["critic_loss"] + poison}

        return agent.__class__(**{**agent.__dict__, "update": update})

    monkeypatch.setattr(agents, "make_from_config", make_poisoned)
    spec = tiny_spec(obs_type="state", aug="none")
    with pytest.raises(loop.NonFiniteLossError, match="non-finite critic_loss"):
        loop.train(spec, str(tmp_path), should_stop=lambda: False)
    # Updates start at agent step 25 (200 frames / 8); update 40 runs at agent step 105.
    checkpointer = RunCheckpointer(str(tmp_path / "checkpoints"))
    assert checkpointer.latest_frame() == 800   # saved before the bad update at frame 840
    with pytest.raises(loop.NonFiniteLossError, match="at agent step 105"):
        loop.MetricsWindow.fetch(_window_with_nan_at(105))


@pytest.mark.slow(20)
def test_a_finished_run_launched_again_does_nothing(tmp_path, capsys):
    """Resuming at num_frames: no second final evaluation, no second checkpoint of the same
    frame (orbax refuses it), the logs untouched."""
    spec = tiny_spec(obs_type="state", aug="none", eval_every_frames=800)
    assert loop.train(spec, str(tmp_path), should_stop=lambda: False)
    logs = {name: (tmp_path / name).read_text() for name in ("eval.csv", "train.csv")}
    assert read_csv(tmp_path / "eval.csv")[-1]["frame"] == "2000"
    assert loop.train(spec, str(tmp_path), should_stop=lambda: False)
    assert "done already: the checkpoint at frame 2,000 reaches num_frames=2,000" in \
        capsys.readouterr().out
    assert logs == {name: (tmp_path / name).read_text() for name in logs}
    assert RunCheckpointer(str(tmp_path / "checkpoints")).latest_frame() == 2000


def _window_with_nan_at(step):
    window = loop.MetricsWindow()
    for s in range(100, 110):
        window.add(s, {"critic_loss": jax.numpy.asarray(np.nan if s >= step else 1.0)})
    return window


@pytest.mark.slow(15)
def test_checkpoint_round_trips_agent_state_and_replay_exactly(tmp_path):
    env = envs.make("cartpole_swingup", seed=0, image_size=16, action_repeat=8)
    agent = agents.make("drqv2", env.observation_spec(), env.action_spec(), batch_size=4,
                        hidden_dim=16, feature_dim=8, image_size=16)
    state = agent.init(jax.random.key(0))
    buffer = ReplayBuffer(env.observation_spec(), env.action_spec(), capacity=50, nstep=3)
    timestep = env.reset()
    buffer.add(timestep)
    for _ in range(30):
        action = np.random.default_rng(0).uniform(-1, 1, 1).astype(np.float32)
        timestep = env.step(action)
        buffer.add(timestep, action)
    batch = buffer.sample(4, 0)
    state, _ = jax.jit(agent.update)(state, batch, jax.random.key(1))
    checkpointer = RunCheckpointer(str(tmp_path))
    checkpointer.save(120, state, buffer.state_dict(), {"step": 15})
    fresh = ReplayBuffer(env.observation_spec(), env.action_spec(), capacity=50, nstep=3)
    restored, replay_state, loop_state = checkpointer.restore(120, agent.init(jax.random.key(9)))
    assert replay_state["observations"].shape == (31, 16, 16, 3)   # written slots only
    fresh.load_state_dict(replay_state)
    jax.tree.map(np.testing.assert_array_equal, restored, state)
    assert loop_state == {"step": 15}
    for got, want in zip(fresh.sample(4, 7), buffer.sample(4, 7)):
        np.testing.assert_array_equal(got, want)


class Crash(Exception):
    """Ends a run mid-way without the save a stop request makes (as SIGKILL would)."""


@pytest.mark.slow(25)
@pytest.mark.parametrize("preset", ["sspg", "rtsac"])
def test_acting_state_survives_a_crash_between_checkpoints_bit_for_bit(tmp_path, monkeypatch,
                                                                        preset):
    """SSPG's chains and Routines' queue live in the agent state: a run that dies between
    checkpoints resumes with the acting state of its last checkpoint, bit for bit. A resume
    starts a new episode (the environments restart, launch.run.env_seed): SSPG's chains run
    on into it, and the routine queue starts empty as at every episode start."""
    from pixelzoo.launch import run as run_module
    saved, resumed = {}, {}
    real_save, real_driver_init = run_module.Run.save, loop.Driver.__init__

    def recording_save(self, frame, state, loop_state):
        saved[frame] = jax.tree.map(np.array, state.acting)
        real_save(self, frame, state, loop_state)

    def recording_driver_init(self, run, state, *args, **kwargs):
        resumed["restored"] = jax.tree.map(np.array, state.acting)
        real_driver_init(self, run, state, *args, **kwargs)
        resumed["episode_start"] = jax.tree.map(np.array, self.state.acting)

    monkeypatch.setattr(run_module.Run, "save", recording_save)
    monkeypatch.setattr(loop.Driver, "__init__", recording_driver_init)
    spec = {"agent": preset, "task": "cartpole_swingup", "seed": 0, "num_frames": 10_000,
            "config": agents.build_config(
                preset, obs_type="state", hidden_dim=16, feature_dim=8, batch_size=8,
                action_repeat=2, num_seed_frames=20, routine_warmup_updates=2,
                eval_every_frames=100_000, num_eval_episodes=1, checkpoint_every_frames=14,
                log_every_frames=100_000, replay_capacity=2000).to_dict()}

    def crash_after(agent_steps: int):
        """A should_stop that raises Crash when asked after `agent_steps` agent steps."""
        checks = itertools.count()

        def should_stop() -> bool:
            if next(checks) >= agent_steps:
                raise Crash()
            return False
        return should_stop

    with pytest.raises(Crash):                  # dies at frame 90, its last checkpoint 84
        loop.train(spec, str(tmp_path), should_stop=crash_after(45), num_devices=1)
    assert max(saved) == 84
    with pytest.raises(Crash):                  # resumes, then dies before its first step
        loop.train(spec, str(tmp_path), should_stop=crash_after(0), num_devices=1)
    want = saved[84]
    jax.tree.map(np.testing.assert_array_equal, resumed["restored"], want)
    if preset == "sspg":           # the chains run on across resets and resumes
        assert np.any(want["explore_chains"] != 0)
        jax.tree.map(np.testing.assert_array_equal, resumed["episode_start"], want)
    else:                          # the checkpoint was mid-routine; the new episode queries
        assert int(want["train"]["remaining"][0]) > 0
        assert int(resumed["episode_start"]["train"]["remaining"][0]) == 0
        np.testing.assert_array_equal(resumed["episode_start"]["eval"]["queue"],
                                      want["eval"]["queue"])


@pytest.mark.slow(55)
def test_num_seeds_trains_the_agents_of_separate_single_seed_runs(tmp_path):
    """K vmapped seeds in one run reach the states of K single-seed runs with the same keys,
    env seeds and samples, and the CSVs tell the seeds apart (test_zoo's full combination
    resumes a two-seed run)."""
    spec = tiny_spec(obs_type="state", aug="none", eval_every_frames=400)
    spec.update(num_frames=400)
    singles = []
    for seed in (0, 1):
        workdir = str(tmp_path / f"single-{seed}")
        assert loop.train({**spec, "seed": seed}, workdir, should_stop=lambda: False)
        singles.append(workdir)
    multi = str(tmp_path / "multi")
    assert loop.train({**spec, "seed": 0, "num_seeds": 2}, multi, should_stop=lambda: False)

    agent = agents.make_from_config("drqv2", agents.Config.from_dict(spec["config"]),
                                    *_state_specs())
    template = agent.init(jax.random.key(0))
    stacked, replay_state, _ = RunCheckpointer(f"{multi}/checkpoints").restore(
        400, jax.tree.map(lambda x: np.stack([x, x]), template))
    assert sorted(replay_state) == ["seed_0", "seed_1"]
    assert int(stacked.update_step[0]) == 12   # at agent steps 26, 28, ..., 48
    for seed, workdir in enumerate(singles):
        single, single_replay, _ = RunCheckpointer(f"{workdir}/checkpoints").restore(400,
                                                                                     template)
        for got, want in zip(jax.tree.leaves(jax.tree.map(lambda x: x[seed], stacked)),
                             jax.tree.leaves(single)):
            np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)
        for name, value in single_replay.items():
            np.testing.assert_allclose(replay_state[f"seed_{seed}"][name], value, atol=1e-5,
                                       err_msg=name)
        want_eval = read_csv(f"{workdir}/eval.csv")
        got_eval = [row for row in read_csv(f"{multi}/eval.csv") if int(row["seed"]) == seed]
        assert [r["frame"] for r in got_eval] == [r["frame"] for r in want_eval] == ["0", "400"]
        np.testing.assert_allclose([float(r["episode_return"]) for r in got_eval],
                                   [float(r["episode_return"]) for r in want_eval], rtol=1e-3)

    assert "seed" in (tmp_path / "multi" / "train.csv").read_text().splitlines()[0].split(",")


def _state_specs():
    env = envs.make("cartpole_swingup", seed=0, obs_type="state", action_repeat=8)
    return env.observation_spec(), env.action_spec()


# ----------------------------------------------------------------------------- learning
@pytest.mark.slow(75)
def test_the_quick_look_recipe_learns_cartpole_balance(tmp_path):
    """The README's quick look (launch/quick_look.py: DrQ-v2 from state) to 10k frames, seed 0:
    its return well above the random policy's (tests/test_quick_look.py runs the command)."""
    from pixelzoo.launch import quick_look
    defaults = agents.Config()
    recipe = {}
    for arg in quick_look.TRAIN_ARGS:
        if arg.startswith("--config."):
            name, value = arg[len("--config."):].split("=", 1)
            recipe[name] = type(getattr(defaults, name))(value)
    recipe.update(eval_every_frames=10_000, num_eval_episodes=2,
                  checkpoint_every_frames=100_000, log_every_frames=100_000)
    assert "--agent=drqv2" in quick_look.TRAIN_ARGS
    spec = {"agent": "drqv2", "task": "cartpole_balance", "seed": 0, "num_frames": 10_000,
            "config": agents.build_config("drqv2", task="cartpole_balance", **recipe).to_dict()}
    assert loop.train(spec, str(tmp_path), should_stop=lambda: False, num_devices=1)
    evals = read_csv(tmp_path / "eval.csv")
    random_return, final_return = float(evals[0]["episode_return"]), float(evals[-1]["episode_return"])
    assert int(evals[-1]["frame"]) == 10_000
    assert final_return > 700 and final_return > random_return + 300, evals


def test_fields_added_after_a_run_started_count_as_their_defaults():
    from pixelzoo.launch.train import _spec_differences
    spec = tiny_spec()
    older = {**spec, "config": {k: v for k, v in spec["config"].items()
                                if k not in ("lix_init", "gpl_beta_lr")}}
    assert _spec_differences(older, spec) == []
    changed = {**spec, "config": {**spec["config"], "lix_init": 0.9}}
    assert _spec_differences(older, changed) == ["config.lix_init (saved 0.5, now 0.9)"]


def tensorboard_scalars(workdir, with_values=False) -> list[tuple]:
    """(tag, step) of every scalar in the workdir's event files, (tag, step, value) with
    values (TFRecord framing: length, its crc, an Event proto, its crc)."""
    import struct
    from tensorboardX.proto import event_pb2
    found = []
    for path in pathlib.Path(workdir).glob("events.out.tfevents.*"):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
            found += [(value.tag, event.step) + ((value.simple_value,) if with_values else ())
                      for value in event.summary.value]
            offset += 12 + length + 4
    return found


@pytest.mark.slow(20)
def test_logged_metrics_are_means_over_the_updates_that_ran(tmp_path, monkeypatch):
    """drq with actor_update_every=2: train.csv's actor_loss is the mean over the episode's
    updates that ran the actor step (skipped ones are left out, not zeros), critic_loss the
    mean over all its updates; TensorBoard gets every scalar once."""
    real_make = agents.make_from_config
    recorded = []   # (update_step, metrics) of every update, from inside the jitted update

    def make_recording(*args):
        agent = real_make(*args)

        def update(state, batch, key):
            new_state, metrics = agent.update(state, batch, key)
            jax.debug.callback(lambda step, m: recorded.append(
                (int(step), {k: float(v) for k, v in m.items()})), state.update_step, metrics)
            return new_state, metrics

        return agent.__class__(**{**agent.__dict__, "update": update})

    monkeypatch.setattr(agents, "make_from_config", make_recording)
    values = dict(obs_type="state", aug="none", hidden_dim=16, feature_dim=8, batch_size=8,
                  action_repeat=8, num_seed_frames=80, num_eval_episodes=0,
                  checkpoint_every_frames=100_000, log_every_frames=400, replay_capacity=2000)
    config = agents.build_config("drq", **values)
    assert config.actor_update_every == 2 and config.update_every_steps == 1
    spec = {"agent": "drq", "task": "cartpole_swingup", "seed": 0, "num_frames": 2000,
            "config": config.to_dict()}
    assert loop.train(spec, str(tmp_path), should_stop=lambda: False, num_devices=1)

    # Update u runs at agent step 10 + u (10 seed steps, one update per step); an episode
    # is 125 agent steps (1000 frames / 8).
    updates = dict(recorded)
    assert sorted(updates) == list(range(len(updates))) and len(updates) == 250 - 10
    with open(tmp_path / "train.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [int(row["episode"]) for row in rows] == [1, 2]
    for index, row in enumerate(rows):
        in_episode = [u for u in updates if 125 * index <= 10 + u < 125 * (index + 1)]
        episode = [updates[u] for u in in_episode]
        ran = [updates[u] for u in in_episode if u % 2 == 0]     # the actor's updates
        assert all(updates[u]["actor_updated"] == float(u % 2 == 0) for u in in_episode)
        assert all(np.isnan(updates[u]["actor_loss"]) for u in in_episode if u % 2)
        for name, source in (("actor_loss", ran), ("alpha_loss", ran), ("entropy", ran),
                             ("critic_loss", episode), ("q_mean", episode)):
            want = np.mean([m[name] for m in source])
            np.testing.assert_allclose(float(row[name]), want, rtol=1e-5, err_msg=name)
        np.testing.assert_allclose(float(row["actor_updated"]), len(ran) / len(episode))
    scalars = tensorboard_scalars(tmp_path)
    assert len(scalars) == len(set(scalars)), "a TensorBoard scalar was written twice"
    assert ("train/actor_loss", 400) in scalars and ("train/episode_return", 1000) in scalars


@pytest.mark.slow(20)
def test_wandb_offline_mirrors_every_tensorboard_scalar_with_the_config_and_seed(
        tmp_path, monkeypatch):
    import wandb
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    init_kwargs, logged = [], []
    real_init = wandb.init

    def recording_init(**kwargs):
        init_kwargs.append(kwargs)
        run = real_init(**kwargs)
        real_log = run.log
        monkeypatch.setattr(run, "log", lambda data, **kw: (logged.append(dict(data)),
                                                            real_log(data, **kw)))
        return run

    monkeypatch.setattr(wandb, "init", recording_init)
    spec = tiny_spec(obs_type="state", aug="none", eval_every_frames=1000)
    spec.update(num_frames=2000, seed=3)
    assert loop.train(spec, str(tmp_path), should_stop=lambda: False, num_devices=1,
                      wandb=True)
    assert init_kwargs[0]["config"]["seed"] == 3 and init_kwargs[0]["config"] == spec
    assert list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb")), "no offline run"
    mirrored = sorted((tag, row["frame"], np.float32(value)) for row in logged
                      for tag, value in row.items() if tag != "frame")
    board = sorted((tag, step, np.float32(value))
                   for tag, step, value in tensorboard_scalars(tmp_path, with_values=True))
    assert mirrored == board and len(board) > 20


def test_progress_lines_go_to_their_stream_and_nowhere_when_quiet(capsys):
    import io
    from pixelzoo.launch.run_logging import Progress
    stream = io.StringIO()
    Progress(1000, 0, stream=stream).show("line one")
    Progress(1000, 0, quiet=True).show("from a non-primary process")
    assert stream.getvalue() == "line one\n"
    assert capsys.readouterr() == ("", "")
