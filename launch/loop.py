"""The training loop behind launch.train: act, store, update, evaluate, log, checkpoint."""
import collections
import functools
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from pixelzoo import agents
from pixelzoo import envs
from pixelzoo.agents.common import METRIC_GATES, mean_over_updates
from pixelzoo.agents.config import Config
from pixelzoo.agents.learner import Learner, make_mesh
from pixelzoo.launch.checkpointing import RunCheckpointer
from pixelzoo.launch.run_logging import CsvLog, Progress, TensorBoard, save_video
from pixelzoo import replay as replay_lib
from pixelzoo.replay import Batch, ReplayBuffer

TRAIN_COLUMNS = ["frame", "step", "episode", "episode_return", "episode_length", "fps",
                 "total_time"]
EVAL_COLUMNS = ["frame", "step", "episode", "episode_return", "episode_length", "total_time"]
VIDEO_SIZE = 256


class NonFiniteLossError(RuntimeError):
    """A learner metric became NaN or infinite."""


def _env_seed(seed: int, episode: int) -> int:
    """Seed of the training env after a resume at `episode` (fresh, reproducible)."""
    return int(np.random.SeedSequence([seed, episode]).generate_state(1)[0])


def _env_kwargs(task: str, seed: int, config: Config) -> dict[str, Any]:
    """envs.make arguments of the run's environments."""
    return dict(task=task, seed=seed, obs_type=config.obs_type, image_size=config.image_size,
                frame_stack=config.frame_stack, action_repeat=config.action_repeat)


def _dummy_batch(obs_spec, action_dim: int, batch_size: int) -> Batch:
    obs = jax.ShapeDtypeStruct((batch_size, *obs_spec.shape), obs_spec.dtype)
    vector = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)
    return Batch(obs, vector(batch_size, action_dim), vector(batch_size),
                 vector(batch_size), obs)


class MetricsWindow:
    """Learner metrics of the updates so far, kept on the device until they are read.

    Fetched once per log interval, episode end or checkpoint (no per-update host sync); a
    non-finite value is traced back to the exact update (and seed) that produced it. Two
    host-side accumulators read them: `interval_means` (since its last call, for TensorBoard)
    and `episode_means` (since its last call, for train.csv). Means follow
    `agents.common.mean_over_updates`: a step an update skipped (e.g. the actor's, with
    actor_update_every > 1) is left out, not averaged in as a zero. Metrics are scalars, or
    [K] arrays when K seeds train together (`seeds` names them).
    """

    def __init__(self, seeds: list[int] | None = None):
        self._seeds = seeds
        self._pending_steps: list[int] = []
        self._pending: list[dict] = []
        self._interval: list[dict[str, np.ndarray]] = []
        self._episode: list[dict[str, np.ndarray]] = []

    def add(self, step: int, metrics: dict) -> None:
        self._pending_steps.append(step)
        self._pending.append(metrics)

    def fetch(self) -> None:
        """Moves the pending device metrics to the host accumulators; raises
        NonFiniteLossError naming the first bad update (a skipped step's NaN is no error)."""
        if not self._pending:
            return
        fetched = jax.device_get(self._pending)  # one transfer, no per-length compile
        rows = [{k: np.reshape(np.asarray(v, np.float64), -1) for k, v in m.items()}
                for m in fetched]
        steps, self._pending_steps, self._pending = self._pending_steps, [], []
        for row, step in zip(rows, steps):
            for name, values in row.items():      # [seeds]
                gate = METRIC_GATES.get(name)
                ran = row[gate] > 0 if gate in row else np.ones(values.shape, bool)
                bad = np.flatnonzero(ran & ~np.isfinite(values))
                if bad.size:
                    where = f" of seed {self._seeds[bad[0]]}" if self._seeds else ""
                    raise NonFiniteLossError(f"non-finite {name} ({values[bad[0]]}) in the "
                                             f"update at agent step {step}{where}")
        self._interval += rows
        self._episode += rows

    def interval_means(self) -> list[dict[str, float]]:
        """Per-seed means over the updates since the last call ([] when none)."""
        self.fetch()
        rows, self._interval = self._interval, []
        return _per_seed_means(rows)

    def episode_means(self) -> list[dict[str, float]]:
        """Per-seed means over the updates since the last call ([] when none)."""
        self.fetch()
        rows, self._episode = self._episode, []
        return _per_seed_means(rows)


def _per_seed_means(rows: list[dict[str, np.ndarray]]) -> list[dict[str, float]]:
    """Rows of name -> [K] -> K dicts of name -> mean over the rows; a metric with no value
    (no update ran its step) is left out."""
    if not rows:
        return []
    stacked = {name: np.stack([row[name] for row in rows]) for name in rows[0]}  # [T, K]
    means = mean_over_updates(stacked, xp=np)
    num_lanes = next(iter(means.values())).shape[0]
    return [{name: float(values[lane]) for name, values in means.items()
             if np.isfinite(values[lane])} for lane in range(num_lanes)]


def evaluate(pool: envs.EnvPool, policy: Callable[[np.ndarray], np.ndarray],
             num_episodes: int, video_path: str | None) -> list[dict[str, float]]:
    """Deterministic-policy episodes of every environment of `pool` (one per seed, stepped
    together): per environment, the mean return and length over `num_episodes`; an mp4 of
    the first environment's first episode if asked.

    policy: observations [K, ...] -> actions [K, A].
    """
    returns = np.zeros((num_episodes, len(pool)))
    lengths, frames = [], []
    for episode in range(num_episodes):
        timesteps = pool.reset()
        length = 0
        record = video_path is not None and episode == 0
        if record:
            frames.append(pool.call(0, "render", VIDEO_SIZE))
        while not timesteps[0].last():
            timesteps = pool.step(policy(np.stack([t.observation for t in timesteps])))
            returns[episode] += [float(t.reward) for t in timesteps]
            length += 1
            if record:
                frames.append(pool.call(0, "render", VIDEO_SIZE))
        lengths.append(length * pool.action_repeat)
    if video_path is not None:
        save_video(video_path, frames)
    length = float(np.mean(lengths)) if lengths else 0.0
    return [{"episode_return": float(np.mean(returns[:, index])) if num_episodes
             else float("nan"), "episode_length": length} for index in range(len(pool))]


def _one_seed_shapes(tree: Any) -> Any:
    """Shapes and dtypes of one seed's part of a [K, ...] tree (nothing is computed)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), tree)


def _without_seed(row: dict) -> dict:
    return {key: value for key, value in row.items() if key != "seed"}


def train(spec: dict[str, Any], workdir: str, should_stop: Callable[[], bool],
          num_devices: int | None = None) -> bool:
    """Runs (or resumes) the run described by `spec` in `workdir`, its updates split over
    `num_devices` devices (all by default; the batch size must divide by it).

    spec["num_seeds"] = K > 1 trains seeds spec["seed"] .. + K - 1 together: one vmapped
    agent state, K environments and replays, every key, env seed and replay sample the
    same as in K single-seed runs; the CSVs gain a `seed` column.
    Returns True when num_frames were reached, False when `should_stop()` asked to stop
    (after saving a checkpoint).
    """
    config = Config.from_dict(spec["config"])
    task, num_frames = spec["task"], spec["num_frames"]
    num_seeds = spec.get("num_seeds", 1)
    seeds = [spec["seed"] + index for index in range(num_seeds)]
    stacked = num_seeds > 1  # one agent state with a leading seed axis [K, ...]
    action_repeat = config.action_repeat
    num_seed_steps = config.num_seed_frames // action_repeat
    updates_per_call = config.updates_per_call

    # Every environment steps in its own worker process (envs.EnvPool), the training ones
    # while the learner updates.
    train_pool = envs.EnvPool([_env_kwargs(task, seed, config) for seed in seeds])
    eval_pool = (envs.EnvPool([_env_kwargs(task, seed + 100_000, config) for seed in seeds])
                 if config.num_eval_episodes else None)
    obs_spec, action_spec = train_pool.observation_spec, train_pool.action_spec
    agent = agents.make_from_config(spec["agent"], config, obs_spec, action_spec)
    replays = [ReplayBuffer(obs_spec, action_spec, config.replay_capacity, nstep=config.nstep,
                            discount=config.discount) for _ in seeds]
    # Per seed: jax.random.split(jax.random.key(seed), 4) = init, act, update, eval keys.
    run_keys = jax.vmap(lambda seed: jax.random.split(jax.random.key(seed), 4))(
        jnp.asarray(seeds))                                           # [K, 4]
    init_keys, act_keys, update_keys, eval_keys = (run_keys[:, j] for j in range(4))
    fold_in = jax.jit(jax.vmap(jax.random.fold_in, in_axes=(0, None)))  # [K] keys, step

    def lane_keys(keys: jax.Array, step: int) -> jax.Array:
        folded = fold_in(keys, step)
        return folded if stacked else folded[0]

    on_device = config.replay == "device"
    layout = replay_lib.layout_of(replays[0])
    learner = Learner(agent, make_mesh(num_devices), updates_per_call,
                      num_seeds=num_seeds if stacked else None,
                      gather=functools.partial(replay_lib.gather, layout=layout))
    # replay='device': every timestep is copied once to the accelerator and batches are
    # gathered inside the update from start indices the host draws.
    device_replay = (replay_lib.DeviceReplay(replays if stacked else replays[0],
                                             learner.state_sharding) if on_device else None)
    # One jitted init per seed, stacked (on the host: no compile per leaf shape): the same
    # values as jax.vmap(agent.init), but a jitted vmapped init of 1024-wide networks hangs
    # XLA:CPU (batched QRs; README).
    init = jax.jit(agent.init)
    state = learner.put_state(
        jax.tree.map(lambda *x: np.stack(x), *[init(key) for key in init_keys]) if stacked
        else init(init_keys[0]))
    act_one = jax.jit(agent.act, static_argnames="eval_mode")
    act_seeds = jax.jit(jax.vmap(agent.act))
    eval_seeds = jax.jit(jax.vmap(functools.partial(agent.act, eval_mode=True)))

    def eval_policy(key: jax.Array) -> Callable[[np.ndarray], np.ndarray]:
        """observations [K, ...] -> deterministic actions [K, A] of every seed's agent."""
        if stacked:
            return lambda obs: np.asarray(eval_seeds(state, obs[:, None], key))[:, 0]
        return lambda obs: np.asarray(act_one(state, obs, key, eval_mode=True))
    metric_names = sorted(jax.eval_shape(agent.update, _one_seed_shapes(state) if stacked
                                         else state, _dummy_batch(
        obs_spec, agent.action_dim, config.batch_size), init_keys[0])[1])

    checkpointer = RunCheckpointer(os.path.join(workdir, "checkpoints"))
    loop = {"step": 0, "episode": 0, "total_time": 0.0, "next_eval_frame": 0}
    latest = checkpointer.latest_frame()
    if latest is not None:
        state, replay_state, loop = checkpointer.restore(latest, state)
        state = learner.put_state(state)
        for seed, replay in zip(seeds, replays):
            replay.load_state_dict(replay_state[f"seed_{seed}"] if stacked else replay_state)
        train_pool.remake([{"seed": _env_seed(seed, loop["episode"])} for seed in seeds])
    seed_column = ["seed"] if stacked else []
    train_log = CsvLog(os.path.join(workdir, "train.csv"),
                       TRAIN_COLUMNS[:1] + seed_column + TRAIN_COLUMNS[1:] + metric_names)
    eval_log = CsvLog(os.path.join(workdir, "eval.csv"),
                      EVAL_COLUMNS[:1] + seed_column + EVAL_COLUMNS[1:])
    logged_until = latest if latest is not None else -1
    train_log.truncate_after(logged_until)
    eval_log.truncate_after(logged_until)
    board = TensorBoard(workdir)

    def board_prefix(kind: str, seed: int) -> str:
        return f"{kind}/seed_{seed}" if stacked else kind

    step, episode = loop["step"], loop["episode"]
    total_time, next_eval_frame = loop["total_time"], loop["next_eval_frame"]
    start_frame = step * action_repeat
    progress = Progress(num_frames, start_frame)
    which = f"seeds {seeds[0]}..{seeds[-1]}" if stacked else f"seed {seeds[0]}"
    if latest is not None:
        progress.show(f"resumed from checkpoint at frame {latest:,} in {workdir}")
    else:
        progress.show(f"training {spec['agent']} on {task} ({which}) for {num_frames:,} "
                      f"frames in {workdir}")
    metrics = MetricsWindow(seeds if stacked else None)
    recent_returns: collections.deque = collections.deque(maxlen=10)  # means over seeds
    replay_ready = False
    clock = time.monotonic()

    def elapsed() -> float:
        return total_time + time.monotonic() - clock

    def save_checkpoint(frame: int) -> None:
        metrics.fetch()  # never checkpoint a non-finite state
        loop_state = {"step": step, "episode": episode, "total_time": elapsed(),
                      "next_eval_frame": next_eval_frame}
        replay_state = ({f"seed_{seed}": replay.state_dict()
                         for seed, replay in zip(seeds, replays)} if stacked
                        else replays[0].state_dict())
        checkpointer.save(frame, state, replay_state, loop_state)

    timesteps = train_pool.reset()
    for replay, timestep in zip(replays, timesteps):
        replay.add(timestep)
    episode_returns, episode_length = np.zeros(num_seeds), 0
    episode_start_time = time.monotonic()
    last_checkpoint_frame = latest if latest is not None else 0
    try:
        while True:
            frame = step * action_repeat
            ended = {timestep.last() for timestep in timesteps}
            if len(ended) > 1:
                raise RuntimeError("the seeds' episodes ended at different steps; "
                                   "--num_seeds needs fixed-length episodes (every DMC task)")
            if ended == {True}:
                episode += 1
                recent_returns.append(float(np.mean(episode_returns)))
                episode_metrics = metrics.episode_means() or [{} for _ in seeds]
                fps = (episode_length * action_repeat * num_seeds
                       / max(time.monotonic() - episode_start_time, 1e-9))
                for index, seed in enumerate(seeds):
                    row = {"frame": frame, "seed": seed, "step": step, "episode": episode,
                           "episode_return": episode_returns[index],
                           "episode_length": episode_length * action_repeat,
                           "fps": fps, "total_time": elapsed()}
                    # TensorBoard: the episode's own scalars; the learner's arrive per interval.
                    board.scalars(board_prefix("train", seed), _without_seed(row), frame)
                    train_log.append({**row, **episode_metrics[index]})
                timesteps = train_pool.reset()
                for replay, timestep in zip(replays, timesteps):
                    replay.add(timestep)
                episode_returns, episode_length = np.zeros(num_seeds), 0
                episode_start_time = time.monotonic()
            if config.num_eval_episodes and (frame >= next_eval_frame or frame >= num_frames):
                video = (os.path.join(workdir, "videos", f"eval_{frame}.mp4")
                         if config.save_video else None)
                results = evaluate(eval_pool, eval_policy(lane_keys(eval_keys, step)),
                                   config.num_eval_episodes, video)
                for seed, result in zip(seeds, results):
                    row = {"frame": frame, "seed": seed, "step": step, "episode": episode,
                           "total_time": elapsed(), **result}
                    eval_log.append(row)
                    board.scalars(board_prefix("eval", seed), _without_seed(row), frame)
                progress.show(progress.line("eval ", frame, progress.last_fps,
                                            float(np.mean([r["episode_return"]
                                                           for r in results]))))
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
                actions = np.stack([np.random.default_rng([seed, step]).uniform(
                    -1.0, 1.0, action_spec.shape).astype(np.float32) for seed in seeds])
            else:
                observations = np.stack([timestep.observation for timestep in timesteps])
                if stacked:
                    actions = np.asarray(act_seeds(state, observations[:, None],
                                                   lane_keys(act_keys, step)))[:, 0]
                else:
                    actions = np.asarray(act_one(state, observations,
                                                 lane_keys(act_keys, step)))
            train_pool.step_async(actions)  # the environments step while the learner updates
            if (step >= num_seed_steps
                    and step % (config.update_every_steps * updates_per_call) == 0):
                replay_ready = replay_ready or replays[0].num_transitions > 0
                if replay_ready:  # U updates on U batches per seed, in one call
                    size = updates_per_call * config.batch_size
                    if on_device:
                        starts = [replay.sample_indices(size, np.random.default_rng([seed, step]))
                                  for seed, replay in zip(seeds, replays)]
                        device_replay.sync()
                        starts = np.stack([s.reshape(updates_per_call, config.batch_size)
                                           for s in starts], axis=1 if stacked else 0)
                        if not stacked:
                            starts = starts[0]                              # [U, (K,) B]
                        state, update_metrics = learner.update_from_replay(
                            state, device_replay.arrays, learner.put_starts(starts),
                            lane_keys(update_keys, step))
                    else:
                        batches = [jax.tree.map(
                            lambda x: x.reshape(updates_per_call, config.batch_size,
                                                *x.shape[1:]),
                            replay.sample(size, np.random.default_rng([seed, step])))
                            for seed, replay in zip(seeds, replays)]
                        batches = (jax.tree.map(lambda *x: np.stack(x, axis=1), *batches)
                                   if stacked else batches[0])             # [U, (K,) B, ...]
                        state, update_metrics = learner.update(
                            state, learner.put_batch(batches), lane_keys(update_keys, step))
                    metrics.add(step, update_metrics)
            timesteps = train_pool.step_wait()
            for index, (replay, timestep) in enumerate(zip(replays, timesteps)):
                replay.add(timestep, actions[index])
                episode_returns[index] += float(timestep.reward)
            episode_length += 1
            step += 1
            frame = step * action_repeat
            if frame % config.log_every_frames < action_repeat:
                for seed, seed_metrics in zip(seeds, metrics.interval_means()):
                    board.scalars(board_prefix("train", seed), seed_metrics, frame)
                recent = float(np.mean(recent_returns)) if recent_returns else None
                progress.show(progress.line("train", frame, progress.frames_per_second(frame),
                                            recent))
    finally:
        board.close()
        checkpointer.close()
        train_pool.close()
        if eval_pool is not None:
            eval_pool.close()
