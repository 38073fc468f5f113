"""The training loop behind launch.train: act, store, update, evaluate, log, checkpoint."""
import collections
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

import agents
import envs
from agents.config import Config
from agents.learner import Learner, make_mesh
from launch.checkpointing import RunCheckpointer
from launch.run_logging import CsvLog, Progress, TensorBoard, save_video
from replay import Batch, ReplayBuffer

TRAIN_COLUMNS = ["frame", "step", "episode", "episode_return", "episode_length", "fps",
                 "total_time"]
EVAL_COLUMNS = ["frame", "step", "episode", "episode_return", "episode_length", "total_time"]
VIDEO_SIZE = 256


class NonFiniteLossError(RuntimeError):
    """A learner metric became NaN or infinite."""


def _env_seed(seed: int, episode: int) -> int:
    """Seed of the training env after a resume at `episode` (fresh, reproducible)."""
    return int(np.random.SeedSequence([seed, episode]).generate_state(1)[0])


def _make_env(task: str, seed: int, config: Config):
    return envs.make(task, seed=seed, obs_type=config.obs_type, image_size=config.image_size,
                     frame_stack=config.frame_stack, action_repeat=config.action_repeat)


def _dummy_batch(obs_spec, action_dim: int, batch_size: int) -> Batch:
    obs = jax.ShapeDtypeStruct((batch_size, *obs_spec.shape), obs_spec.dtype)
    vector = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)
    return Batch(obs, vector(batch_size, action_dim), vector(batch_size),
                 vector(batch_size), obs)


class MetricsWindow:
    """Learner metrics of the updates since the last flush, kept on the device.

    Fetched once per log interval (no per-update host sync); a non-finite value is traced
    back to the exact update that produced it.
    """

    def __init__(self):
        self._steps: list[int] = []
        self._metrics: list[dict] = []

    def add(self, step: int, metrics: dict) -> None:
        self._steps.append(step)
        self._metrics.append(metrics)

    def flush(self) -> dict[str, float]:
        """Means over the window; raises NonFiniteLossError naming the first bad step."""
        if not self._metrics:
            return {}
        fetched = jax.device_get(self._metrics)  # one transfer, no per-length compile
        stacked = {k: np.stack([m[k] for m in fetched]) for k in fetched[0]}
        steps, self._steps, self._metrics = self._steps, [], []
        for name, values in stacked.items():
            bad = np.flatnonzero(~np.isfinite(values))
            if bad.size:
                raise NonFiniteLossError(f"non-finite {name} ({values[bad[0]]}) in the update "
                                         f"at agent step {steps[bad[0]]}")
        return {name: float(np.mean(values)) for name, values in stacked.items()}


def evaluate(env, agent, act_fn, state, num_episodes: int, key: jax.Array,
             video_path: str | None) -> dict[str, float]:
    """Mean return and length of deterministic-policy episodes; mp4 of the first if asked."""
    returns, lengths, frames = [], [], []
    for episode in range(num_episodes):
        timestep = env.reset()
        total, length = 0.0, 0
        record = video_path is not None and episode == 0
        if record:
            frames.append(env.render(VIDEO_SIZE))
        while not timestep.last():
            action = act_fn(state, timestep.observation[None], key, eval_mode=True)
            timestep = env.step(np.asarray(action[0]))
            total += float(timestep.reward)
            length += 1
            if record:
                frames.append(env.render(VIDEO_SIZE))
        returns.append(total)
        lengths.append(length * env.action_repeat)
    if video_path is not None:
        save_video(video_path, frames)
    return {"episode_return": float(np.mean(returns)) if returns else float("nan"),
            "episode_length": float(np.mean(lengths)) if lengths else 0.0}


def train(spec: dict[str, Any], workdir: str, should_stop: Callable[[], bool],
          num_devices: int | None = None) -> bool:
    """Runs (or resumes) the run described by `spec` in `workdir`, its updates split over
    `num_devices` devices (all by default; the batch size must divide by it).

    Returns True when num_frames were reached, False when `should_stop()` asked to stop
    (after saving a checkpoint).
    """
    config = Config.from_dict(spec["config"])
    task, seed, num_frames = spec["task"], spec["seed"], spec["num_frames"]
    action_repeat = config.action_repeat
    num_seed_steps = config.num_seed_frames // action_repeat

    env = _make_env(task, seed, config)
    eval_env = _make_env(task, seed + 100_000, config)
    obs_spec, action_spec = env.observation_spec(), env.action_spec()
    agent = agents.make_from_config(spec["agent"], config, obs_spec, action_spec)
    replay = ReplayBuffer(obs_spec, action_spec, config.replay_capacity, nstep=config.nstep,
                          discount=config.discount)
    run_key = jax.random.key(seed)
    init_key, act_key, update_key, eval_key = jax.random.split(run_key, 4)
    # Eager on purpose: on XLA:CPU (jax 0.10.2) a jitted init of 1024-wide networks never
    # finishes (orthogonal init's QR inside one program deadlocks); eager init is reliable.
    learner = Learner(agent, make_mesh(num_devices), config.updates_per_call)
    state = learner.put_state(agent.init(init_key))
    updates_per_call = config.updates_per_call
    act_fn = jax.jit(agent.act, static_argnames="eval_mode")
    metric_names = sorted(jax.eval_shape(agent.update, state, _dummy_batch(
        obs_spec, agent.action_dim, config.batch_size), update_key)[1])

    checkpointer = RunCheckpointer(os.path.join(workdir, "checkpoints"))
    loop = {"step": 0, "episode": 0, "total_time": 0.0, "next_eval_frame": 0}
    latest = checkpointer.latest_frame()
    if latest is not None:
        state, replay_state, loop = checkpointer.restore(latest, state)
        state = learner.put_state(state)
        replay.load_state_dict(replay_state)
        env = _make_env(task, _env_seed(seed, loop["episode"]), config)
    train_log = CsvLog(os.path.join(workdir, "train.csv"), TRAIN_COLUMNS + metric_names)
    eval_log = CsvLog(os.path.join(workdir, "eval.csv"), EVAL_COLUMNS)
    logged_until = latest if latest is not None else -1
    train_log.truncate_after(logged_until)
    eval_log.truncate_after(logged_until)
    board = TensorBoard(workdir)

    step, episode = loop["step"], loop["episode"]
    total_time, next_eval_frame = loop["total_time"], loop["next_eval_frame"]
    start_frame = step * action_repeat
    progress = Progress(num_frames, start_frame)
    if latest is not None:
        progress.show(f"resumed from checkpoint at frame {latest:,} in {workdir}")
    else:
        progress.show(f"training {spec['agent']} on {task} (seed {seed}) for {num_frames:,} "
                      f"frames in {workdir}")
    metrics = MetricsWindow()
    recent_returns: collections.deque = collections.deque(maxlen=10)
    last_metrics: dict[str, float] = {}
    replay_ready = False
    clock = time.monotonic()

    def elapsed() -> float:
        return total_time + time.monotonic() - clock

    def save_checkpoint(frame: int) -> None:
        nonlocal last_metrics
        last_metrics = metrics.flush() or last_metrics  # never checkpoint a non-finite state
        loop_state = {"step": step, "episode": episode, "total_time": elapsed(),
                      "next_eval_frame": next_eval_frame}
        checkpointer.save(frame, state, replay.state_dict(), loop_state)

    timestep = env.reset()
    replay.add(timestep)
    episode_return, episode_length = 0.0, 0
    episode_start_time = time.monotonic()
    last_checkpoint_frame = latest if latest is not None else 0
    try:
        while True:
            frame = step * action_repeat
            if timestep.last():
                episode += 1
                recent_returns.append(episode_return)
                last_metrics = metrics.flush() or last_metrics
                row = {"frame": frame, "step": step, "episode": episode,
                       "episode_return": episode_return,
                       "episode_length": episode_length * action_repeat,
                       "fps": episode_length * action_repeat
                       / max(time.monotonic() - episode_start_time, 1e-9),
                       "total_time": elapsed(),
                       **last_metrics}
                train_log.append(row)
                board.scalars("train", row, frame)
                timestep = env.reset()
                replay.add(timestep)
                episode_return, episode_length = 0.0, 0
                episode_start_time = time.monotonic()
            if config.num_eval_episodes and (frame >= next_eval_frame or frame >= num_frames):
                video = (os.path.join(workdir, "videos", f"eval_{frame}.mp4")
                         if config.save_video else None)
                result = evaluate(eval_env, agent, act_fn, state, config.num_eval_episodes,
                                  jax.random.fold_in(eval_key, step), video)
                row = {"frame": frame, "step": step, "episode": episode,
                       "total_time": elapsed(), **result}
                eval_log.append(row)
                board.scalars("eval", row, frame)
                progress.show(progress.line("eval ", frame, progress.last_fps,
                                            result["episode_return"]))
                next_eval_frame = (frame // config.eval_every_frames + 1) * config.eval_every_frames
            if frame >= num_frames:
                save_checkpoint(frame)
                progress.show(f"done: {frame:,} frames in {elapsed() / 60:.1f} min; "
                              f"logs in {workdir}")
                return True
            if should_stop():
                save_checkpoint(frame)
                return False
            if frame - last_checkpoint_frame >= config.checkpoint_every_frames:
                save_checkpoint(frame)
                last_checkpoint_frame = frame

            if step < num_seed_steps:
                action = np.random.default_rng([seed, step]).uniform(
                    -1.0, 1.0, action_spec.shape).astype(np.float32)
            else:
                action = np.asarray(act_fn(state, timestep.observation[None],
                                           jax.random.fold_in(act_key, step))[0])
            if (step >= num_seed_steps
                    and step % (config.update_every_steps * updates_per_call) == 0):
                replay_ready = replay_ready or replay.num_transitions > 0
                if replay_ready:  # U updates on U batches, in one call
                    batch = replay.sample(updates_per_call * config.batch_size,
                                          np.random.default_rng([seed, step]))
                    batches = jax.tree.map(
                        lambda x: x.reshape(updates_per_call, config.batch_size, *x.shape[1:]),
                        batch)
                    state, update_metrics = learner.update(
                        state, learner.put_batch(batches), jax.random.fold_in(update_key, step))
                    metrics.add(step, update_metrics)
            timestep = env.step(action)
            replay.add(timestep, action)
            episode_return += float(timestep.reward)
            episode_length += 1
            step += 1
            frame = step * action_repeat
            if frame % config.log_every_frames < action_repeat:
                last_metrics = metrics.flush() or last_metrics
                board.scalars("train", last_metrics, frame)
                recent = float(np.mean(recent_returns)) if recent_returns else None
                progress.show(progress.line("train", frame, progress.frames_per_second(frame),
                                            recent))
    finally:
        board.close()
        checkpointer.close()
