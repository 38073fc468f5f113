"""Everything a run builds once, and the step functions of its loop.

    run = Run(spec, workdir)            # environments, agent, learner, replays, checkpoints
    state = run.initial_state()         # [K, ...] over the K seeds
    restored = run.restore(state)       # (state, LoopState) of the newest checkpoint, or None

The seeds' axis is always there: K >= 1 agents, one state with a leading [K] axis sharded
over a (seed, data) device mesh (`agents.make_seed_mesh`), K environments and replays.
`launch.driver` steps a Run; `launch.seer_phase` is what changes in it at SEER's freeze.
"""
import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from pixelzoo import agents
from pixelzoo import envs
from pixelzoo import replay as replay_lib
from pixelzoo.agents.learner import SEED_AXIS, Learner, make_seed_mesh
from pixelzoo.launch import processes, seer_phase
from pixelzoo.launch.checkpointing import RunCheckpointer
from pixelzoo.launch.run_spec import EVAL_SEED_OFFSET, RunSpec
from pixelzoo.replay import Batch, ReplayBuffer


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


def env_seed(seed: int, episode: int) -> int:
    """Seed of the training env after a resume at `episode` (fresh, reproducible)."""
    return int(np.random.SeedSequence([seed, episode]).generate_state(1)[0])


def _dummy_batch(obs_spec, action_dim: int, batch_size: int) -> Batch:
    obs = jax.ShapeDtypeStruct((batch_size, *obs_spec.shape), obs_spec.dtype)
    vector = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)
    return Batch(obs, vector(batch_size, action_dim), vector(batch_size),
                 vector(batch_size), obs)


def _local_gpu_count() -> int:
    return sum(device.platform == "gpu" for device in jax.local_devices())


def fold_keys(keys: jax.Array, step: int) -> jax.Array:
    """[K] key data, agent step -> [K] keys of that step."""
    return jax.vmap(jax.random.fold_in, in_axes=(0, None))(jax.random.wrap_key_data(keys), step)


class EvalPolicy:
    """A run's evaluation policy from `state` at agent step `step`: observations
    [K_local, ...] -> actions [K_local, A]. An actor with acting state (SSPG's evaluation
    chains) updates `self.state` at every call and draws call i's keys from the step's
    eval keys folded with i; other actors leave it as it is."""

    def __init__(self, run: "Run", state: agents.AgentState, step: int):
        self.run, self.state, self.step, self.calls = run, state, step, 0

    def __call__(self, observations: np.ndarray) -> np.ndarray:
        run = self.run
        observations = processes.to_global(observations[:, None], run.sharding, len(run.seeds))
        if not run.agent.stateful_acting:
            actions = run._act_eval(self.state, observations, run.eval_keys, self.step)
            return processes.local_rows(actions)[:, 0]
        keys = run._fold(run.eval_keys, self.step)
        actions, acting = run._act_eval(self.state, observations,
                                        jax.random.key_data(keys), self.calls)
        self.state, self.calls = self.state.replace(acting=acting), self.calls + 1
        return processes.local_rows(actions)[:, 0]


class Run:
    """A run's environments, agent, learner, replays, keys, jitted policies and checkpoints
    (built once, from a checked `RunSpec`), and its step functions.

    One agent step (`launch.driver.agent_step`): `act` -> the environments step -> `update`
    (when `update_due`, on `sample` -> `transfer`) -> `store`. State arrays are [K, ...] over
    the K seeds. `seer` is the SEER phase (None without SEER).
    """

    def __init__(self, spec: RunSpec, workdir: str, env_split: tuple[int, int] | None = None):
        """env_split: (environments kept in this process, worker processes) of each pool;
        default `envs.launcher_split` of this process's seeds."""
        self.spec, self.workdir = spec, workdir
        self.config = config = spec.config
        self.seeds = spec.seeds
        self.multi_seed = len(self.seeds) > 1   # CSVs gain a seed column, checkpoints a
                                                # seed axis (one seed: the agent's own state)
        mesh = make_seed_mesh(len(self.seeds), spec.num_devices, spec.seed_shards)
        self.sharding = NamedSharding(mesh, PartitionSpec(SEED_AXIS))
        # This process's seeds: those whose devices it holds (all of them in one process).
        self.local = processes.local_seed_indices(self.sharding, len(self.seeds))
        self.local_seeds = [self.seeds[index] for index in self.local]
        self._env_split = env_split or envs.launcher_split(len(self.local_seeds))
        self.train_pool = self._env_pool(seed_offset=0)
        self.eval_pool = (self._env_pool(seed_offset=EVAL_SEED_OFFSET)
                          if config.num_eval_episodes else None)
        self.obs_spec = self.train_pool.observation_spec
        self.action_spec = self.train_pool.action_spec
        self.agent = agents.make_from_config(spec.agent, config, self.obs_spec,
                                             self.action_spec)
        self.replays = [ReplayBuffer(self.obs_spec, self.action_spec, config.replay_capacity,
                                     nstep=config.nstep, discount=config.discount)
                        for _ in self.local_seeds]
        self.learner = Learner(self.agent, mesh, config.updates_per_call,
                               num_seeds=len(self.seeds),
                               gather=functools.partial(replay_lib.gather,
                                                        layout=replay_lib.layout_of(
                                                            self.replays[0])))
        self._make_keys_and_policies()
        # replay='device': every timestep is copied once to the accelerator and batches are
        # gathered inside the update from start indices the host draws.
        self.device_replay = (replay_lib.DeviceReplay(self.replays, self.learner.state_sharding)
                              if config.replay == "device" else None)
        self.seer = seer_phase.SeerPhase(self) if config.seer_freeze_frames else None
        self.num_seed_steps = config.num_seed_frames // config.action_repeat
        self.update_period = config.update_every_steps * config.updates_per_call
        self.checkpointer = RunCheckpointer(os.path.join(workdir, "checkpoints"))

    def _env_pool(self, seed_offset: int) -> envs.EnvPool:
        """This process's seeds' environments (seeds + seed_offset), split as env_split says:
        this process steps the kept ones itself while it waits for the worker processes; on
        a GPU host the workers take the GPUs in turn for rendering (this process counting as
        the first)."""
        kept, workers = self._env_split
        config = self.config
        return envs.EnvPool(
            [dict(task=self.spec.task, seed=seed + seed_offset, obs_type=config.obs_type,
                  image_size=config.image_size, frame_stack=config.frame_stack,
                  action_repeat=config.action_repeat) for seed in self.local_seeds],
            workers, [envs.worker_render_env(1 + i, _local_gpu_count()) for i in range(workers)],
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
        self._fold = jax.jit(fold_keys, out_shardings=self.sharding)
        # Stateless actors act with agent.act; an actor with acting state (SSPG's chains)
        # with agent.act_and_update, whose new acting state [K, ...] comes back too.
        act = self.agent.act_and_update or self.agent.act
        act_eval = functools.partial(act, eval_mode=True)
        self._act = jax.jit(lambda state, obs, keys, step: jax.vmap(act)(
            state, obs, fold_keys(keys, step)), out_shardings=self.sharding)
        self._act_eval = jax.jit(lambda state, obs, keys, step: jax.vmap(act_eval)(
            state, obs, fold_keys(keys, step)), out_shardings=self.sharding)
        self._after_uniform = jax.jit(
            lambda state: jax.vmap(self.agent.after_uniform_action)(state).acting,
            out_shardings=self.sharding)

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
        environments; None when there is none. A checkpoint written after SEER's freeze is
        read into the frozen state's structure (`seer_phase.restore_frozen`)."""
        to_template = lambda tree: jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)
        template = to_template(state if self.multi_seed
                               else jax.tree.map(lambda x: x[0], state))

        def restore_one(frame: int) -> tuple:
            if LoopState.from_dict(self.checkpointer.restore_loop(frame)).latent_capacity:
                return seer_phase.restore_frozen(self.checkpointer, frame, self.agent,
                                                 template, self.multi_seed)
            return self.checkpointer.restore(frame, template)

        restored = self.checkpointer.restore_newest_with(restore_one)
        if restored is None:
            return None
        _, (agent_state, replay_state, loop_values) = restored
        if not self.multi_seed:
            agent_state = jax.tree.map(lambda x: np.asarray(x)[None], agent_state)
        loop = LoopState.from_dict(loop_values)
        if loop.latent_capacity:     # frozen by SEER: the checkpoint holds latent replays
            self.seer.use_latents(self.seer.empty_latent_replays(loop.latent_capacity))
        for seed, replay in zip(self.local_seeds, self.replays):
            replay.load_state_dict(replay_state[f"seed_{seed}"] if self.multi_seed
                                   else replay_state)
        self.train_pool.remake([{"seed": env_seed(seed, loop.episode)}
                                for seed in self.local_seeds])
        return self.learner.put_state(agent_state), loop

    # ------------------------------------------------------------------ step functions
    def act(self, state: agents.AgentState, step: int, observations: np.ndarray) -> np.ndarray:
        """Actions [K_local, A] of this process's seeds for their observations [K_local, ...]:
        uniform during the seed steps, else each seed's exploration policy (`act_and_update`
        without its new state)."""
        return self.act_and_update(state, step, observations)[0]

    def act_and_update(self, state: agents.AgentState, step: int, observations: np.ndarray
                       ) -> tuple[np.ndarray, agents.AgentState]:
        """(actions [K_local, A], state): `act`, and the state with the acting state the
        actor carries to the next call (SSPG's chains; the same state for other actors)."""
        if step < self.num_seed_steps:
            if self.agent.stateful_acting:
                state = state.replace(acting=self._after_uniform(state))
            return np.stack([np.random.default_rng([seed, step]).uniform(
                -1.0, 1.0, self.action_spec.shape).astype(np.float32)
                for seed in self.local_seeds]), state
        observations = processes.to_global(observations[:, None], self.sharding,
                                           len(self.seeds))
        actions = self._act(state, observations, self.act_keys, step)
        if self.agent.stateful_acting:
            actions, acting = actions
            state = state.replace(acting=acting)
        return processes.local_rows(actions)[:, 0], state

    def eval_policy(self, state: agents.AgentState, step: int) -> "EvalPolicy":
        """observations [K_local, ...] -> deterministic actions [K_local, A] of this process's
        seeds' agents; the policy's `state` carries the acting state across its calls."""
        return EvalPolicy(self, state, step)

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
        """U updates per seed, dispatched (not waited for): (new state, metrics [K]). After
        SEER's freeze, the heads-only update on latent batches."""
        keys = self._fold(self.update_keys, step)
        learner = self.seer.latent_learner if self.frozen else self.learner
        if self.device_replay is not None:
            return learner.update_from_replay(state, self.device_replay.arrays,
                                              device_batches, keys)
        return learner.update(state, device_batches, keys)

    def store(self, timesteps: list, actions: np.ndarray | None = None,
              state: agents.AgentState | None = None) -> None:
        """Adds each seed's timestep (and the action that led to it) to its replay; after
        SEER's freeze, as its latents (encoded with `state`'s frozen layers)."""
        if self.frozen:
            timesteps = self.seer.as_latents(state, timesteps)
        for index, (replay, timestep) in enumerate(zip(self.replays, timesteps)):
            if actions is None:
                replay.add(timestep)
            else:
                replay.add(timestep, actions[index])

    @property
    def frozen(self) -> bool:
        """Whether SEER's freeze happened (then the replays hold latents)."""
        return self.seer is not None and self.seer.latent_learner is not None

    def close(self) -> None:
        self.checkpointer.close()
        self.train_pool.close()
        if self.eval_pool is not None:
            self.eval_pool.close()
