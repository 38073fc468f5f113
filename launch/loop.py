"""The training loop behind launch.train: act, step, store, update, evaluate, log, checkpoint.

    train(spec, workdir, should_stop)   # runs or resumes the run `spec` describes

`train` is a handful of named steps over a `LoopState` (exactly what a checkpoint stores of
the loop) and a `Run` (everything built once: environments, agent, learner, replays, logs).
The seeds' axis is always there: K >= 1 agents, one state with a leading [K] axis sharded
over a (seed, data) device mesh (`agents.make_seed_mesh`), K environments and replays.
Every periodic event (evaluation, logging, checkpoints) is decided by `due`.
`launch.benchmark` times the same `Run` step functions that `train` calls.
"""
import collections
import contextlib
import dataclasses
import functools
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from pixelzoo import agents
from pixelzoo import envs
from pixelzoo import replay as replay_lib
from pixelzoo.agents import losses
from pixelzoo.agents.common import METRIC_GATES, mean_over_updates
from pixelzoo.agents.config import Config
from pixelzoo.agents.learner import SEED_AXIS, Learner, make_seed_mesh
from pixelzoo.launch import processes
from pixelzoo.launch.checkpointing import RunCheckpointer
from pixelzoo.launch.progress import progress_for_run
from pixelzoo.launch.run_logging import CsvLog, TensorBoard, WandbLog, save_video
from pixelzoo.replay import Batch, ReplayBuffer

TRAIN_COLUMNS = ["frame", "step", "episode", "episode_return", "episode_length", "fps",
                 "total_time"]
EVAL_COLUMNS = ["frame", "step", "episode", "episode_return", "episode_length", "total_time"]
VIDEO_SIZE = 256
EVAL_SEED_OFFSET = 100_000   # evaluation environments use seed + this


class NonFiniteLossError(RuntimeError):
    """A learner metric became NaN or infinite."""


@dataclasses.dataclass
class LoopState:
    """The loop's counters: exactly what a checkpoint stores of the loop (its `loop` item).

    step: agent steps done by every seed; episode: training episodes finished; total_time:
    seconds spent training, summed over every launch of the run; latent_capacity: 0 until
    SEER's freeze, then the capacity of the latent replays that replaced the pixel ones."""

    step: int = 0
    episode: int = 0
    total_time: float = 0.0
    latent_capacity: int = 0    # SEER: 0 before the freeze, then the latent replay's size

    @classmethod
    def from_dict(cls, values: dict) -> "LoopState":
        """From a checkpoint's dict (keys of older versions, e.g. next_eval_frame, ignored)."""
        return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls)
                      if f.name in values})


def due(every_frames: int, previous_frame: int, frame: int) -> bool:
    """Whether an event every `every_frames` falls due at `frame`, the loop having last
    looked at `previous_frame`: it does at the first frame at or after each multiple of
    every_frames (frame 0 included, from previous_frame -1)."""
    return frame // every_frames > previous_frame // every_frames


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


def _local_gpu_count() -> int:
    return sum(device.platform == "gpu" for device in jax.local_devices())


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
        fetched = processes.gather(self._pending)  # one transfer, every process: all seeds
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
    names = sorted({name for row in rows for name in row})   # an update may log fewer
    means = {}
    for name in names:        # each metric over the updates that logged it ([T, K] each)
        with_it = [row for row in rows if name in row]
        gate = METRIC_GATES.get(name)
        stacked = {key: np.stack([row[key] for row in with_it])
                   for key in ([name, gate] if gate in with_it[0] else [name])}
        means[name] = mean_over_updates(stacked, xp=np)[name]
    num_lanes = next(iter(means.values())).shape[0]
    return [{name: float(values[lane]) for name, values in means.items()
             if np.isfinite(values[lane])} for lane in range(num_lanes)]


def evaluate(pool: envs.EnvPool, policy: Callable[[np.ndarray], np.ndarray],
             num_episodes: int, video_path: str | None,
             on_step: Callable[[int, np.ndarray], None] | None = None) -> list[dict[str, float]]:
    """Deterministic-policy episodes of every environment of `pool` (one per seed, stepped
    together): per environment, the mean return and length over `num_episodes`; an mp4 of
    the first environment's first episode if asked.

    policy: observations [K, ...] -> actions [K, A]; on_step: called after every step with
    (episode index, the environments' returns so far [K]) (the live progress line).
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
            if on_step is not None:
                on_step(episode, returns[episode])
            if record:
                frames.append(pool.call(0, "render", VIDEO_SIZE))
        lengths.append(length * pool.action_repeat)
    if video_path is not None:
        save_video(video_path, frames)
    length = float(np.mean(lengths)) if lengths else 0.0
    return [{"episode_return": float(np.mean(returns[:, index])) if num_episodes
             else float("nan"), "episode_length": length} for index in range(len(pool))]

class Run:
    """Everything a run builds once, and the step functions of its loop.

    `train` calls, per agent step: `act` -> `env_step_async` -> `update` (every
    update_every_steps * updates_per_call steps, on `sample` -> `transfer`) ->
    `env_step_wait` -> `store`. State arrays are [K, ...] over the K seeds.
    """

    def __init__(self, spec: dict[str, Any], workdir: str, num_devices: int | None = None,
                 seed_shards: int | None = None):
        self.spec, self.workdir = spec, workdir
        self.config = config = Config.from_dict(spec["config"])
        self.seeds = [spec["seed"] + index for index in range(spec.get("num_seeds", 1))]
        self.multi_seed = len(self.seeds) > 1   # CSVs gain a seed column, checkpoints a
                                                # seed axis (one seed: the agent's own state)
        mesh = make_seed_mesh(len(self.seeds), num_devices, seed_shards)
        sharding = NamedSharding(mesh, PartitionSpec(SEED_AXIS))
        # This process's seeds: those whose devices it holds (all of them in one process).
        self.local = processes.local_seed_indices(sharding, len(self.seeds))
        self.local_seeds = [self.seeds[index] for index in self.local]
        if jax.process_count() > 1 and (config.replay == "device" or config.seer_freeze_frames):
            raise ValueError("replay='device' and SEER run in one process for now; use "
                             "replay='host' and seer_freeze_frames=0 for multi-process runs")
        self.train_pool = self._env_pool(seed_offset=0)
        self.eval_pool = (self._env_pool(seed_offset=EVAL_SEED_OFFSET)
                          if config.num_eval_episodes else None)
        self.obs_spec = self.train_pool.observation_spec
        self.action_spec = self.train_pool.action_spec
        self.agent = agents.make_from_config(spec["agent"], config, self.obs_spec,
                                             self.action_spec)
        self.replays = [ReplayBuffer(self.obs_spec, self.action_spec, config.replay_capacity,
                                     nstep=config.nstep, discount=config.discount)
                        for _ in self.local_seeds]
        layout = replay_lib.layout_of(self.replays[0])
        self.learner = Learner(self.agent, mesh, config.updates_per_call,
                               num_seeds=len(self.seeds),
                               gather=functools.partial(replay_lib.gather, layout=layout))
        self._sharding = sharding
        self._make_keys_and_policies()
        # replay='device': every timestep is copied once to the accelerator and batches are
        # gathered inside the update from start indices the host draws.
        self.device_replay = (replay_lib.DeviceReplay(self.replays, self.learner.state_sharding)
                              if config.replay == "device" else None)
        self.latent_learner = None   # SEER: the heads-only update, from the freeze on
        if config.seer_freeze_frames:
            self._make_seer_functions()
        self.num_seed_steps = config.num_seed_frames // config.action_repeat
        self.update_period = config.update_every_steps * config.updates_per_call
        self.checkpointer = RunCheckpointer(os.path.join(workdir, "checkpoints"))

    def _env_pool(self, seed_offset: int) -> envs.EnvPool:
        """This process's seeds' environments (seeds + seed_offset), one group per core:
        this process steps the first group itself while it waits for the others' worker
        processes (`envs.launcher_split`); on a GPU host the workers take the GPUs in turn
        for rendering (this process counting as the first)."""
        kept, workers = envs.launcher_split(len(self.local_seeds))
        return envs.EnvPool(
            [_env_kwargs(self.spec["task"], seed + seed_offset, self.config)
             for seed in self.local_seeds], workers,
            [envs.worker_render_env(1 + i, _local_gpu_count()) for i in range(workers)],
            in_process=kept)

    def _make_keys_and_policies(self) -> None:
        """Per seed: jax.random.split(jax.random.key(seed), 4) = init, act, update, eval
        keys. The last three live beside the seed's state ([K] key data, sharded like it);
        each agent step folds its number in, inside the jitted policies."""
        run_keys = jax.vmap(lambda seed: jax.random.split(jax.random.key(seed), 4))(
            jnp.asarray(self.seeds))
        self.init_keys = run_keys[:, 0]
        key_data = np.asarray(jax.random.key_data(run_keys))           # [K, 4, 2] uint32
        self.act_keys, self.update_keys, self.eval_keys = (
            self.learner.put_state(key_data[:, j]) for j in (1, 2, 3))

        def fold(keys: jax.Array, step: int) -> jax.Array:
            """[K] key data, agent step -> [K] keys of that step."""
            return jax.vmap(jax.random.fold_in, in_axes=(0, None))(
                jax.random.wrap_key_data(keys), step)

        act_eval = functools.partial(self.agent.act, eval_mode=True)
        self._fold = jax.jit(fold, out_shardings=self._sharding)
        self._act = jax.jit(lambda state, obs, keys, step: jax.vmap(self.agent.act)(
            state, obs, fold(keys, step)), out_shardings=self._sharding)
        self._act_eval = jax.jit(lambda state, obs, keys, step: jax.vmap(act_eval)(
            state, obs, fold(keys, step)), out_shardings=self._sharding)

    # ------------------------------------------------------------------ state
    def initial_state(self) -> agents.AgentState:
        """The K seeds' initial states, stacked [K, ...] and sharded over the mesh. One jitted
        init per seed, stacked on the host: the same values as jax.vmap(agent.init), but a
        jitted vmapped init of 1024-wide networks hangs XLA:CPU (batched QRs; README)."""
        init = jax.jit(self.agent.init)
        states = [jax.device_get(init(key)) for key in self.init_keys]  # every process: all
        return self.learner.put_state(jax.tree.map(lambda *x: np.stack(x), *states))

    def metric_names(self, state: agents.AgentState) -> list[str]:
        one_seed = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), state)
        batch = _dummy_batch(self.obs_spec, self.agent.action_dim, self.config.batch_size)
        return sorted(jax.eval_shape(self.agent.update, one_seed, batch, self.init_keys[0])[1])

    def save(self, frame: int, state: agents.AgentState, loop: LoopState) -> None:
        """Checkpoint `frame`: the agent state ([K, ...]; one seed's own state when K = 1),
        every seed's replay and the loop counters. With several processes each one writes
        its seeds' replays beside the checkpoint first (`RunCheckpointer.save`)."""
        agent_state = state if self.multi_seed else jax.tree.map(lambda x: x[0], state)
        replay_state = ({f"seed_{seed}": replay.state_dict()
                         for seed, replay in zip(self.local_seeds, self.replays)}
                        if self.multi_seed else self.replays[0].state_dict())
        self.checkpointer.save(frame, agent_state, replay_state, dataclasses.asdict(loop))

    def restore(self, state: agents.AgentState) -> tuple[agents.AgentState, LoopState] | None:
        """The newest checkpoint that restores, loaded into the agent state, replays and
        environments; None when there is none."""
        template = state if self.multi_seed else jax.tree.map(lambda x: x[0], state)
        restored = self.checkpointer.restore_newest(jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), template))
        if restored is None:
            return None
        _, agent_state, replay_state, loop_values = restored
        if not self.multi_seed:
            agent_state = jax.tree.map(lambda x: np.asarray(x)[None], agent_state)
        loop = LoopState.from_dict(loop_values)
        if loop.latent_capacity:     # frozen by SEER: the checkpoint holds latent replays
            self._use_latents([ReplayBuffer(
                self.agent.seer.latent_spec, self.action_spec, loop.latent_capacity,
                nstep=self.config.nstep, discount=self.config.discount)
                for _ in self.local_seeds])
        for seed, replay in zip(self.local_seeds, self.replays):
            replay.load_state_dict(replay_state[f"seed_{seed}"] if self.multi_seed
                                   else replay_state)
        self.train_pool.remake([{"seed": _env_seed(seed, loop.episode)}
                                for seed in self.local_seeds])
        return self.learner.put_state(agent_state), loop

    # ------------------------------------------------------------------ step functions
    def act(self, state: agents.AgentState, step: int, observations: np.ndarray) -> np.ndarray:
        """Actions [K_local, A] of this process's seeds for their observations [K_local, ...]:
        uniform during the seed steps, else each seed's exploration policy."""
        if step < self.num_seed_steps:
            return np.stack([np.random.default_rng([seed, step]).uniform(
                -1.0, 1.0, self.action_spec.shape).astype(np.float32)
                for seed in self.local_seeds])
        observations = processes.to_global(observations[:, None], self._sharding,
                                           len(self.seeds))
        return processes.local_rows(self._act(state, observations, self.act_keys, step))[:, 0]

    def eval_policy(self, state: agents.AgentState,
                    step: int) -> Callable[[np.ndarray], np.ndarray]:
        """observations [K_local, ...] -> deterministic actions [K_local, A] of this process's
        seeds' agents."""
        def policy(observations: np.ndarray) -> np.ndarray:
            observations = processes.to_global(observations[:, None], self._sharding,
                                               len(self.seeds))
            return processes.local_rows(
                self._act_eval(state, observations, self.eval_keys, step))[:, 0]
        return policy

    def update_due(self, step: int) -> bool:
        return (step >= self.num_seed_steps and step % self.update_period == 0
                and self.replays[0].can_sample)

    def sample(self, step: int) -> Batch | np.ndarray:
        """This update call's host batches [U, K_local, B, ...] of this process's seeds
        (replay='device': start indices [U, K, B]), each seed's drawn with
        np.random.default_rng([seed, step])."""
        config, size = self.config, self.config.updates_per_call * self.config.batch_size
        shape = (config.updates_per_call, config.batch_size)
        rngs = [np.random.default_rng([seed, step]) for seed in self.local_seeds]
        if self.device_replay is not None:
            return np.stack([replay.sample_indices(size, rng).reshape(shape)
                             for replay, rng in zip(self.replays, rngs)], axis=1)
        batches = [jax.tree.map(lambda x: x.reshape(*shape, *x.shape[1:]),
                                replay.sample(size, rng))
                   for replay, rng in zip(self.replays, rngs)]
        return jax.tree.map(lambda *x: np.stack(x, axis=1), *batches)

    def transfer(self, host_batches: Batch | np.ndarray) -> Batch | jax.Array:
        """Host batches (or start indices) for the update, split along seeds and batch. With
        one process the host arrays themselves: the jitted update places them as its
        in_shardings say, 0.2-0.4 ms less per call on CPU than a device_put before it
        (BENCHMARKS.md). With several, global arrays assembled from each process's rows."""
        single = jax.process_count() == 1
        if self.device_replay is not None:
            self.device_replay.sync()
            return (np.asarray(host_batches, np.int32) if single
                    else self.learner.put_starts(host_batches))
        return host_batches if single else self.learner.put_batch(host_batches)

    def update(self, state: agents.AgentState, device_batches, step: int):
        """U updates per seed, dispatched (not waited for): (new state, metrics [K])."""
        keys = self._fold(self.update_keys, step)
        learner = self.latent_learner or self.learner
        if self.device_replay is not None:
            return learner.update_from_replay(state, self.device_replay.arrays,
                                              device_batches, keys)
        return learner.update(state, device_batches, keys)

    def store(self, timesteps: list, actions: np.ndarray | None = None,
              state: agents.AgentState | None = None) -> None:
        """Adds each seed's timestep (and the action that led to it) to its replay; after
        SEER's freeze, as its latents (encoded with `state`'s frozen layers)."""
        if self.latent_learner is not None:
            timesteps = self._as_latents(state, timesteps)
        for index, (replay, timestep) in enumerate(zip(self.replays, timesteps)):
            if actions is None:
                replay.add(timestep)
            else:
                replay.add(timestep, actions[index])

    # ------------------------------------------------------------------ SEER
    def freeze_due(self, loop: LoopState, frame: int) -> bool:
        return (self.config.seer_freeze_frames > 0 and not loop.latent_capacity
                and frame >= self.config.seer_freeze_frames)

    def freeze(self, state: agents.AgentState, loop: LoopState) -> agents.AgentState:
        """SEER's freeze (docs/algorithms.md, SEER): the target critic becomes the critic,
        every seed's replay is converted into a latent replay (`replay.to_latent_replay`,
        each timestep's m shifted copies through the frozen layers), and the updates from
        now on are `agent.seer.update_latent`. Sets loop.latent_capacity."""
        seer, config = self.agent.seer, self.config
        state = jax.jit(jax.vmap(seer.freeze))(state)
        height, width = self.obs_spec.shape[:2]
        capacity = losses.seer_latent_capacity(
            config.replay_capacity, 3 * height * width, config.feature_dim,
            seer.latent_spec.shape[0], total_steps=self.spec["num_frames"] // config.action_repeat)
        latents = []
        for index, replay in zip(self.local, self.replays):
            one_seed = jax.tree.map(lambda x: x[index], state)
            key = self._seer_keys[index]
            latents.append(replay_lib.to_latent_replay(
                replay, seer.latent_spec, capacity,
                lambda obs, latent_indices: np.asarray(self._encode_one_seed(
                    one_seed, obs, key, jnp.asarray(latent_indices)))))
        self._use_latents(latents)
        loop.latent_capacity = capacity
        return state

    def _use_latents(self, replays: list[ReplayBuffer]) -> None:
        """From now on: these latent replays, and the heads-only update on their batches."""
        seer = self.agent.seer
        self.replays = replays
        self.latent_learner = Learner(
            dataclasses.replace(self.agent, update=seer.update_latent,
                                obs_spec=seer.latent_spec),
            self.learner.mesh, self.config.updates_per_call, num_seeds=len(self.seeds),
            gather=functools.partial(replay_lib.gather,
                                     layout=replay_lib.layout_of(replays[0])))
        if self.device_replay is not None:
            self.device_replay = replay_lib.DeviceReplay(replays, self.learner.state_sharding)

    def _as_latents(self, state: agents.AgentState, timesteps: list) -> list:
        """Each seed's timestep with its observation replaced by its stored latents, with
        the shifts of its index in the latent replay (the same rule as the conversion)."""
        observations = np.stack([t.observation for t in timesteps])
        index = jnp.asarray([self.replays[0].num_added])
        latents = self._encode_seeds(state, observations[:, None], self._seer_keys, index)
        return [t._replace(observation=np.asarray(z[0])) for t, z in zip(timesteps, latents)]

    def _make_seer_functions(self) -> None:
        """Jitted SEER encoders: one seed's timesteps [N, ...] at latent indices [N] (the
        conversion), and every seed's one new timestep (after the freeze). The shifts of
        latent index i of seed k come from fold_in(fold_in(key(seed), 5), i)."""
        self._seer_keys = jax.vmap(lambda seed: jax.random.fold_in(jax.random.key(seed), 5))(
            jnp.asarray(self.seeds))
        encode = self.agent.seer.encode_latents

        def one_seed(state, obs, key, latent_indices):
            return jax.vmap(lambda o, i: encode(state, o[None], jax.random.fold_in(key, i))[0])(
                obs, latent_indices)

        self._encode_one_seed = jax.jit(one_seed)
        self._encode_seeds = jax.jit(jax.vmap(one_seed, in_axes=(0, 0, 0, None)))

    def close(self) -> None:
        self.checkpointer.close()
        self.train_pool.close()
        if self.eval_pool is not None:
            self.eval_pool.close()


class RunLogs:
    """train.csv, eval.csv, TensorBoard (and W&B) and the terminal line of one run, rows per
    seed. Only the primary process writes (every process calls the same methods)."""

    def __init__(self, run: Run, metric_names: list[str], logged_until: int, start_frame: int,
                 wandb: bool = False):
        """wandb: mirror every TensorBoard scalar to Weights & Biases."""
        self.run = run
        self.recent_returns: collections.deque = collections.deque(maxlen=10)
        self.write = processes.is_primary()
        self.progress = progress_for_run(run.config, run.spec["num_frames"], start_frame,
                                         quiet=not self.write, backend=jax.default_backend())
        self.boards = []
        if not self.write:
            return
        seed_column = ["seed"] if run.multi_seed else []
        self.train = CsvLog(os.path.join(run.workdir, "train.csv"),
                            TRAIN_COLUMNS[:1] + seed_column + TRAIN_COLUMNS[1:] + metric_names)
        self.eval = CsvLog(os.path.join(run.workdir, "eval.csv"),
                           EVAL_COLUMNS[:1] + seed_column + EVAL_COLUMNS[1:])
        self.train.truncate_after(logged_until)
        self.eval.truncate_after(logged_until)
        self.boards = [TensorBoard(run.workdir)] + ([WandbLog(run.workdir, run.spec)]
                                                     if wandb else [])

    def _board(self, kind: str, seed: int, values: dict, frame: int) -> None:
        prefix = f"{kind}/seed_{seed}" if self.run.multi_seed else kind
        for board in self.boards:
            board.scalars(prefix, {k: v for k, v in values.items() if k != "seed"}, frame)

    def episode(self, rows: list[dict], metrics: list[dict]) -> None:
        """Per seed: the episode's row to train.csv with the means of its updates' metrics;
        TensorBoard gets the episode's own scalars (the metrics arrive per interval)."""
        self.recent_returns.append(float(np.mean([row["episode_return"] for row in rows])))
        for row, seed_metrics in zip(rows, metrics):
            self._board("train", row["seed"], row, row["frame"])
            if self.write:
                self.train.append({**row, **seed_metrics})

    def evaluation(self, rows: list[dict]) -> None:
        for row in rows:
            if self.write:
                self.eval.append(row)
            self._board("eval", row["seed"], row, row["frame"])
        mean_return = float(np.mean([row["episode_return"] for row in rows]))
        self.progress.show(self.progress.line("eval ", rows[0]["frame"],
                                              self.progress.last_fps, mean_return))

    def interval(self, frame: int, metrics: list[dict]) -> None:
        """The learner metrics' means over the log interval, and the terminal line."""
        for seed, seed_metrics in zip(self.run.seeds, metrics):
            self._board("train", seed, seed_metrics, frame)
        recent = float(np.mean(self.recent_returns)) if self.recent_returns else None
        self.progress.show(self.progress.line("train", frame,
                                              self.progress.frames_per_second(frame), recent))

    def close(self) -> None:
        self.progress.close()
        for board in self.boards:
            board.close()


def train(spec: dict[str, Any], workdir: str, should_stop: Callable[[], bool],
          num_devices: int | None = None, seed_shards: int | None = None,
          wandb: bool = False) -> bool:
    """Runs (or resumes) the run described by `spec` in `workdir` on `num_devices` devices
    (all by default), the seeds split into `seed_shards` device groups
    (`agents.make_seed_mesh`).

    spec["num_seeds"] = K trains seeds spec["seed"] .. + K - 1 together: one vmapped agent
    state, K environments and replays, every key, env seed and replay sample the same as in
    K single-seed runs. wandb: mirror the TensorBoard scalars to Weights & Biases.
    Returns True when num_frames were reached, False when
    `should_stop()` asked to stop (after saving a checkpoint).
    """
    run = Run(spec, workdir, num_devices, seed_shards)
    logs = None
    try:
        state = run.initial_state()
        restored = run.restore(state)
        state, loop = restored if restored is not None else (state, LoopState())
        resumed_frame = loop.step * run.config.action_repeat if restored else None
        logs = RunLogs(run, run.metric_names(state),
                       -1 if resumed_frame is None else resumed_frame, resumed_frame or 0,
                       wandb)
        _announce(run, logs, resumed_frame)
        return _run_loop(run, logs, state, loop, resumed_frame, should_stop)
    finally:
        if logs is not None:
            logs.close()
        run.close()


def _announce(run: Run, logs: RunLogs, resumed_frame: int | None) -> None:
    if resumed_frame is not None:
        logs.progress.show(f"resumed from checkpoint at frame {resumed_frame:,} in "
                           f"{run.workdir}")
        return
    seeds = run.seeds
    which = f"seeds {seeds[0]}..{seeds[-1]}" if run.multi_seed else f"seed {seeds[0]}"
    logs.progress.show(f"training {run.spec['agent']} on {run.spec['task']} ({which}) for "
                       f"{run.spec['num_frames']:,} frames in {run.workdir}")


def _run_loop(run: Run, logs: RunLogs, state: agents.AgentState, loop: LoopState,
              resumed_frame: int | None, should_stop: Callable[[], bool]) -> bool:
    """The loop itself; see `Run` for one agent step."""
    config, num_frames = run.config, run.spec["num_frames"]
    action_repeat = config.action_repeat
    metrics = MetricsWindow(run.seeds if run.multi_seed else None)
    start_step, clock = loop.step, time.monotonic()
    time_before = loop.total_time
    previous_frame = -1 if resumed_frame is None else resumed_frame
    episode = _Episode(run)
    timesteps = episode.start(run.train_pool.reset(), state)
    # With several processes the stop request is agreed on (a collective) every so often.
    stop_check_period = 1 if jax.process_count() == 1 else 16

    def save(frame: int) -> None:
        metrics.fetch()   # never checkpoint a non-finite state
        loop.total_time = time_before + time.monotonic() - clock
        run.save(frame, state, loop)

    while True:
        frame = loop.step * action_repeat
        loop.total_time = time_before + time.monotonic() - clock
        if episode.ended(timesteps):
            loop.episode += 1
            logs.episode(episode.rows(loop, frame), metrics.episode_means()
                         or [{} for _ in run.seeds])
            timesteps = episode.start(run.train_pool.reset(), state)
        if config.num_eval_episodes and (due(config.eval_every_frames, previous_frame, frame)
                                         or frame >= num_frames):
            logs.evaluation(_evaluate(run, state, loop, frame,
                                      logs.progress.evaluating(frame, config.num_eval_episodes)))
        if due(config.log_every_frames, previous_frame, frame) and frame > 0:
            logs.interval(frame, metrics.interval_means())
        if frame >= num_frames:
            save(frame)
            logs.progress.show(f"done: {frame:,} frames in {loop.total_time / 60:.1f} min; "
                               f"logs in {run.workdir}")
            return True
        if (loop.step % stop_check_period == 0
                and processes.any_process(should_stop())):   # all processes stop together
            save(frame)
            return False
        if loop.step > start_step and due(config.checkpoint_every_frames, previous_frame,
                                          frame):
            save(frame)
        previous_frame = frame
        if run.freeze_due(loop, frame):
            state = run.freeze(state, loop)
            logs.progress.show(f"SEER: froze the encoder and trunks at frame {frame:,}; "
                               f"latent replay of {loop.latent_capacity:,} timesteps")

        state, timesteps = agent_step(run, state, loop.step, timesteps, episode, metrics)
        loop.step += 1
        logs.progress.training(loop.step * action_repeat, episode.returns)   # live line


class PartTimer:
    """Wall time per named part of `agent_step`, for launch.benchmark (`train` passes none)."""

    def __init__(self):
        self.seconds: dict[str, float] = collections.defaultdict(float)
        self._part, self._start = None, 0.0

    def __call__(self, part: str) -> "PartTimer":
        self._part = part
        return self

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(self, *exc_info) -> None:
        self.seconds[self._part] += time.perf_counter() - self._start


def agent_step(run: Run, state: agents.AgentState, step: int, timesteps: list,
               episode: "_Episode", metrics: "MetricsWindow",
               timer: PartTimer | None = None) -> tuple[agents.AgentState, list]:
    """One agent step of every seed: act, step the environments (in their workers, while
    the learner's update is dispatched), store the transitions. Returns (state, timesteps).
    `timer` records the parts' wall times (launch.benchmark)."""
    part = timer or (lambda name: contextlib.nullcontext())
    with part("act"):
        actions = run.act(state, step, episode.observations(timesteps))
    with part("env_step"):
        run.train_pool.step_async(actions)   # the environments step while the learner updates
    if run.update_due(step):
        with part("replay_sample"):
            host_batches = run.sample(step)
        with part("transfer"):
            device_batches = run.transfer(host_batches)
        with part("update_dispatch"):
            state, update_metrics = run.update(state, device_batches, step)
            metrics.add(step, update_metrics)
    with part("env_step"):
        timesteps = run.train_pool.step_wait()
    with part("replay_add"):
        run.store(timesteps, actions, state)
        episode.record(timesteps)
    return state, timesteps


class _Episode:
    """The training episode under way: every seed's return, its length and start time."""

    def __init__(self, run: Run):
        self.run = run

    def start(self, timesteps: list, state: agents.AgentState | None = None) -> list:
        self.run.store(timesteps, state=state)
        self.returns = np.zeros(len(self.run.local_seeds))   # this process's seeds
        self.length, self.start_time = 0, time.monotonic()
        return timesteps

    def ended(self, timesteps: list) -> bool:
        ended = {timestep.last() for timestep in timesteps}
        if len(ended) > 1:
            raise RuntimeError("the seeds' episodes ended at different steps; "
                               "--num_seeds needs fixed-length episodes (every DMC task)")
        return ended == {True}

    def observations(self, timesteps: list) -> np.ndarray:
        return np.stack([timestep.observation for timestep in timesteps])

    def record(self, timesteps: list) -> None:
        self.returns += [float(timestep.reward) for timestep in timesteps]
        self.length += 1

    def rows(self, loop: LoopState, frame: int) -> list[dict]:
        """train.csv rows of the episode that just ended, one per seed (every process calls
        this together: the returns of all seeds are gathered)."""
        action_repeat, seeds = self.run.config.action_repeat, self.run.seeds
        returns = processes.gather(self.returns)
        fps = (self.length * action_repeat * len(seeds)
               / max(time.monotonic() - self.start_time, 1e-9))
        return [{"frame": frame, "seed": seed, "step": loop.step, "episode": loop.episode,
                 "episode_return": float(returns[index]),
                 "episode_length": self.length * action_repeat, "fps": fps,
                 "total_time": loop.total_time} for index, seed in enumerate(seeds)]


def _evaluate(run: Run, state: agents.AgentState, loop: LoopState, frame: int,
              on_step: Callable[[int, np.ndarray], None] | None = None) -> list[dict]:
    """eval.csv rows of an evaluation at `frame`, one per seed (on_step: see `evaluate`)."""
    video = (os.path.join(run.workdir, "videos", f"eval_{frame}.mp4")
             if run.config.save_video else None)
    if video is not None and not processes.is_primary():
        video = None
    results = evaluate(run.eval_pool, run.eval_policy(state, loop.step),
                       run.config.num_eval_episodes, video, on_step)
    names = ("episode_return", "episode_length")
    gathered = processes.gather({name: np.asarray([r[name] for r in results]) for name in names})
    return [{"frame": frame, "seed": seed, "step": loop.step, "episode": loop.episode,
             "total_time": loop.total_time,
             **{name: float(gathered[name][index]) for name in names}}
            for index, seed in enumerate(run.seeds)]
