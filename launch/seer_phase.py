"""SEER's phase of a run (docs/algorithms.md, SEER): the freeze, the latent replays that
replace the pixel ones, the jitted encoders that fill them, and reading a frozen checkpoint.

    if run.seer.due(loop, frame):
        state = run.seer.freeze(state, loop)    # from now on run.frozen

The latent replay's capacity is `agents.losses.seer_latent_capacity`: the pixel replay's
memory, capped by the run's agent steps. A run stores a few timesteps more than its steps
(one first timestep per episode), and the memory rule may give fewer than a full pixel
replay holds (small images, wide features): the latent replay then keeps the newest
timesteps that fit (`keep_newest`), as its ring does from then on.
"""
import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from dm_env import specs

from pixelzoo import agents
from pixelzoo import replay as replay_lib
from pixelzoo.agents import losses
from pixelzoo.agents.learner import Learner
from pixelzoo.launch.checkpointing import RunCheckpointer
from pixelzoo.replay import ReplayBuffer

SEER_KEY_FOLD = 5   # the shifts of latent index i of seed s: fold_in(fold_in(key(s), 5), i)


def latent_capacity(config: agents.Config, obs_shape: tuple, num_copies: int,
                    num_frames: int) -> int:
    """The latent replays' capacity of a run: `losses.seer_latent_capacity` for its pixel
    replay (frames of obs_shape [H, W, 3k]), num_copies stored copies and agent steps."""
    height, width = obs_shape[:2]
    return losses.seer_latent_capacity(config.replay_capacity, 3 * height * width,
                                       config.feature_dim, num_copies,
                                       num_frames // config.action_repeat)


def keep_newest(latents: ReplayBuffer, capacity: int) -> ReplayBuffer:
    """`latents` in a replay of `capacity` timesteps: the newest that fit, at the ring slots
    of their global indices (so the next timestep added continues the same indices)."""
    if latents.capacity <= capacity:
        return latents
    state = latents.state_dict()
    newest = np.arange(max(latents.num_added - capacity, 0), latents.num_added)
    slots = newest % capacity
    kept = {key: np.zeros_like(state[key][:len(newest)]) for key in latents.storage_arrays()}
    for key, ring in kept.items():
        ring[slots] = state[key][newest % latents.capacity]
    row_spec = lambda array: specs.Array(array.shape[1:], array.dtype)
    kept_replay = ReplayBuffer(row_spec(state["observations"]), row_spec(state["actions"]),
                               capacity, nstep=latents.nstep, discount=latents.discount)
    kept_replay.load_state_dict({**kept, "num_added": state["num_added"],
                                 "episode_open": state["episode_open"]})
    return kept_replay


class SeerPhase:
    """The SEER side of a `launch.run.Run`: its encoders, from its construction, and its
    latent replays and heads-only learner (`latent_learner`), from the freeze on."""

    def __init__(self, run: Any):
        self.run = run
        self.latent_learner: Learner | None = None   # set by the freeze (or a frozen resume)
        self.keys = jax.vmap(lambda seed: jax.random.fold_in(jax.random.key(seed),
                                                             SEER_KEY_FOLD))(
            jnp.asarray(run.seeds))
        encode = run.agent.seer.encode_latents

        def one_seed(state, obs, key, latent_indices):
            """One seed's timesteps [N, ...] at latent indices [N] -> latents [N, m, 2F]."""
            return jax.vmap(lambda o, i: encode(state, o[None], jax.random.fold_in(key, i))[0])(
                obs, latent_indices)

        self._encode_one_seed = jax.jit(one_seed)                        # the conversion
        self._encode_seeds = jax.jit(jax.vmap(one_seed, in_axes=(0, 0, 0, None)))  # after it

    def due(self, loop: Any, frame: int) -> bool:
        return not loop.latent_capacity and frame >= self.run.config.seer_freeze_frames

    def freeze(self, state: agents.AgentState, loop: Any) -> agents.AgentState:
        """SEER's freeze: the target critic becomes the critic and the optimisers' states
        the frozen optimisers' (`agent.seer.freeze`), every seed's replay is
        converted into a latent replay (`replay.to_latent_replay`, each timestep's m shifted
        copies through the frozen layers; the newest that fit), and the updates from now on
        are `agent.seer.update_latent`. Sets loop.latent_capacity."""
        run, seer = self.run, self.run.agent.seer
        state = jax.jit(jax.vmap(seer.freeze))(state)
        capacity = latent_capacity(run.config, run.obs_spec.shape, seer.latent_spec.shape[0],
                                   run.spec.num_frames)
        latents = []
        for index, replay in zip(run.local, run.replays):
            one_seed = jax.tree.map(lambda x: x[index], state)
            encode = functools.partial(self._encode_stored, one_seed, self.keys[index])
            held = replay.num_added - replay_lib.first_complete_timestep(replay)
            latents.append(keep_newest(replay_lib.to_latent_replay(
                replay, seer.latent_spec, max(capacity, held), encode), capacity))
        self.use_latents(latents)
        loop.latent_capacity = capacity
        return state

    def _encode_stored(self, one_seed, key, obs: np.ndarray,
                       latent_indices: np.ndarray) -> np.ndarray:
        return np.asarray(self._encode_one_seed(one_seed, obs, key, jnp.asarray(latent_indices)))

    def empty_latent_replays(self, capacity: int) -> list[ReplayBuffer]:
        """This process's seeds' latent replays of `capacity`, empty (a frozen resume)."""
        run = self.run
        return [ReplayBuffer(run.agent.seer.latent_spec, run.action_spec, capacity,
                             nstep=run.config.nstep, discount=run.config.discount)
                for _ in run.local_seeds]

    def use_latents(self, replays: list[ReplayBuffer]) -> None:
        """From now on: these latent replays, and the heads-only update on their batches."""
        run, seer = self.run, self.run.agent.seer
        run.replays = replays
        self.latent_learner = Learner(
            dataclasses.replace(run.agent, obs_spec=seer.latent_spec),
            run.learner.mesh, run.config.updates_per_call, num_seeds=len(run.seeds),
            gather=functools.partial(replay_lib.gather,
                                     layout=replay_lib.layout_of(replays[0])),
            update_of=lambda agent: agent.seer.update_latent)
        if run.device_replay is not None:
            run.device_replay = replay_lib.DeviceReplay(replays, run.learner.state_sharding)

    def as_latents(self, state: agents.AgentState, timesteps: list) -> list:
        """Each seed's timestep with its observation replaced by its stored latents, with
        the shifts of its index in the latent replay (the same rule as the conversion)."""
        observations = np.stack([t.observation for t in timesteps])
        index = jnp.asarray([self.run.replays[0].num_added])
        latents = self._encode_seeds(state, observations[:, None], self.keys, index)
        return [t._replace(observation=np.asarray(z[0])) for t, z in zip(timesteps, latents)]


def restore_frozen(checkpointer: RunCheckpointer, frame: int, agent: agents.Agent,
                   template: Any, multi_seed: bool) -> tuple[Any, dict, dict]:
    """(agent_state, replay_state, loop_state) of checkpoint `frame`, written after SEER's
    freeze, read into the frozen state's structure: `agent.seer.freeze` of `template` (the
    unfrozen state's shapes, [K, ...] when multi_seed). A checkpoint written before frozen
    states changed structure is read as unfrozen, then converted by
    `agent.seer.frozen_optimizer_states`; raises if neither reads."""
    freeze = jax.vmap(agent.seer.freeze) if multi_seed else agent.seer.freeze
    try:
        return checkpointer.restore(frame, jax.eval_shape(freeze, template))
    except Exception:  # noqa: BLE001 - an older checkpoint's structure: try it below
        pass
    convert = agent.seer.frozen_optimizer_states
    convert = jax.vmap(convert) if multi_seed else convert
    agent_state, replay_state, loop_state = checkpointer.restore(frame, template)
    return jax.tree.map(np.asarray, convert(agent_state)), replay_state, loop_state
