"""What every base shares: the agent state, the Agent bundle, an update's setup (parts,
optimisers, augmentation), the initial state, acting, the steps an update may skip,
schedules, checks. The steps themselves are in agents/steps.py."""
import dataclasses
import functools
from typing import Any, Callable

import chex
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from dm_env import specs

from pixelzoo.agents.augment import augment_copies
from pixelzoo.agents.config import Config
from pixelzoo.agents.parts import CRITICS, Exploration, Parts, build_parts, init_params
from pixelzoo.replay import Batch

Params = Any
Metrics = dict[str, jnp.ndarray]


@flax.struct.dataclass
class AgentState:
    """The whole learner state as one pytree (vmaps over seeds, saves with orbax).

    params: online parameters by group: 'encoder', 'actor', 'critic' (flax trees); and the
        scalars the config's parts learn: 'log_alpha' (SAC's log temperature), 'lix_p'
        (A-LIX's smoothing strength P in [0, 1]), 'beta' (GPL's pessimism).
    target_params: Polyak-averaged copies: 'critic', and 'encoder' when the recipe has a
        target encoder (DrQ).
    opt_states: one optax state per optimiser: 'critic' (covers encoder and critic),
        'actor', and 'alpha', 'lix_p', 'beta' for the scalars above. After SEER's freeze
        'critic' and 'actor' are optax.multi_transform states whose frozen leaves take
        set_to_zero (agents/seer.py).
    update_step: int32 scalar, number of updates done so far.
    acting: what the actor kind carries from one act call to the next ({} for stateless
        actors; SSPG: its exploration and evaluation chains and its steps average).
    """

    params: dict
    target_params: dict
    opt_states: dict
    update_step: jnp.ndarray
    acting: dict = flax.struct.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class SeerParts:
    """What SEER (stored embeddings) needs of an agent (docs/algorithms.md, SEER).

    latent_spec: one stored observation, float32 [m copies, 2F] (critic's z, actor's z).
    encode_latents(state, obs [B, ...], key) -> [B, m, 2F] with m independent shifts.
    freeze(state) -> state: the target networks set to the online ones, and the optimiser
        states of 'critic' and 'actor' turned into the frozen optimisers' states.
    update_latent(state, batch of latents, key) -> (state, metrics): the base's one update,
        on stored latents and with the frozen optimisers (heads only).
    frozen_optimizer_states(state) -> state: only the optimiser-state conversion of
        `freeze` (for checkpoints written after a freeze by pixelzoo before 2026-12).
    """

    latent_spec: specs.Array
    encode_latents: Callable[[AgentState, jnp.ndarray, jax.Array], jnp.ndarray]
    freeze: Callable[[AgentState], AgentState]
    update_latent: Callable[[AgentState, Batch, jax.Array], tuple[AgentState, Metrics]]
    frozen_optimizer_states: Callable[[AgentState], AgentState]


@dataclasses.dataclass(frozen=True)
class Agent:
    """A configured agent: pure functions over `AgentState`.

    init(key) -> state
    act(state, obs [B, ...], key, eval_mode=False) -> actions float32 [B, A] in [-1, 1]
    act_and_update(state, obs [1, ...], key, eval_mode=False) -> (actions [1, A], acting):
        the same actions and the new `state.acting` (what the actor carries from one act
        call to the next, e.g. SSPG's chains; {} for stateless actors)
    after_uniform_action(state) -> state: the state after the launcher acted uniformly
        at random in its place (the seed steps)
    reset_acting(state, eval_mode) -> state: at an episode's start (Routines: an empty
        queue); None when the acting state runs on across episodes
    update(state, batch, key) -> (state, metrics: dict of float32 scalars)
    update_size(state) -> int32 scalar: the static size of the update this state needs
        (SSPG: its training chain length), and resize(size) -> the same agent whose update
        is compiled for that size; both None when one update serves every state. The
        Learner keeps one compiled update per size.
    """

    name: str
    config: Config
    obs_spec: specs.Array
    action_spec: specs.BoundedArray
    init: Callable[[jax.Array], AgentState]
    act: Callable[..., jnp.ndarray]
    update: Callable[[AgentState, Batch, jax.Array], tuple[AgentState, Metrics]]
    seer: SeerParts | None = None    # the SEER functions, on bases that support them
    act_and_update: Callable[..., tuple[jnp.ndarray, dict]] | None = None
    after_uniform_action: Callable[[AgentState], AgentState] = lambda state: state
    reset_acting: Callable[[AgentState, bool], AgentState] | None = None
    update_size: Callable[[AgentState], jnp.ndarray] | None = None
    resize: Callable[[int], "Agent"] | None = None

    @property
    def stateful_acting(self) -> bool:
        """Whether act changes the agent state (its `acting` part)."""
        return self.act_and_update is not None

    @property
    def action_dim(self) -> int:
        return int(self.action_spec.shape[0])


def polyak(target: Params, online: Params, tau: float) -> Params:
    """target <- (1 - tau) * target + tau * online: the one Polyak update."""
    return optax.incremental_update(online, target, tau)


# A metric of a step that an update may skip -> the 0/1 metric saying whether it ran. A skipped
# step reports NaN for its metrics, and every mean over updates (fuse_updates, the launcher's
# logs) leaves it out: see `mean_over_updates`.
METRIC_GATES = {"actor_loss": "actor_updated", "alpha_loss": "actor_updated",
                "entropy": "actor_updated",
                # SSPG: the acting calls since the previous update (none within fused ones).
                "reasoning_steps_mean": "acted_since_update",
                "reasoning_steps_max": "acted_since_update",
                "rhat_at_stop_mean": "acted_since_update"}


def gated_step(run: jnp.ndarray, step: Callable[[], tuple[Any, Metrics]], unchanged: Any,
               gate: str) -> tuple[Any, Metrics]:
    """`step()` -> (new values, metrics) where `run` (a traced bool), else (`unchanged`, the
    same metrics as NaN): a step that did not run reports no value, never a zero. The
    metrics gain `gate`, 1.0 where the step ran and 0.0 where it did not."""
    metric_shapes = jax.eval_shape(step)[1]

    def skip():
        return unchanged, {name: jnp.full(shape.shape, jnp.nan, shape.dtype)
                           for name, shape in metric_shapes.items()}

    new, metrics = jax.lax.cond(run, step, skip)
    return new, {**metrics, gate: run.astype(jnp.float32)}


def mean_over_updates(metrics: dict, xp: Any = jnp) -> dict:
    """Per-metric means over axis 0 (updates, or calls of equally many fused updates).

    A metric gated by METRIC_GATES averages only the updates whose gate ran, weighted by the
    gate (a gate's own value is the fraction of updates that ran the step); NaN when none
    did. xp: jnp inside jit, np on the host. metrics: name -> [T, ...] -> name -> [...].
    """
    means = {}
    for name, values in metrics.items():
        gate = METRIC_GATES.get(name)
        if gate is None or gate not in metrics:
            means[name] = xp.mean(values, axis=0)
            continue
        weights = metrics[gate]
        ran = xp.sum(weights, axis=0)
        total = xp.sum(xp.where(weights > 0, values * weights, 0.0), axis=0)
        means[name] = xp.where(ran > 0, total / xp.where(ran > 0, ran, 1.0), xp.nan)
    return means


def linear_schedule(start: float, end: float, duration: int, step: jnp.ndarray) -> jnp.ndarray:
    """Linear from `start` at step 0 to `end` at `duration`, constant after."""
    mix = jnp.clip(step / duration, 0.0, 1.0)
    return (1.0 - mix) * start + mix * end


def agent_step(config: Config, update_step: jnp.ndarray) -> jnp.ndarray:
    """Agent step at which update `update_step` happens in the standard loop.

    Updates start after the seed steps and happen every `update_every_steps` agent steps,
    so update u runs at agent step num_seed_steps + u * update_every_steps (exact for the
    launcher's loop, as in the official code's schedule argument).
    """
    num_seed_steps = config.num_seed_frames // config.action_repeat
    return num_seed_steps + update_step * config.update_every_steps


def apply_optimizer(optimizer: optax.GradientTransformation, grads: Params, opt_state: Any,
                    params: Params) -> tuple[Params, Any]:
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


@dataclasses.dataclass(frozen=True)
class Optimizers:
    """One optax optimiser per parameter group, as the papers have them.

    critic: encoder and critic (the critic loss); actor; alpha: SAC's log temperature;
    lix_p: A-LIX's smoothing strength; critic_scalars: the critic kind's learned scalars
    (GPL's beta), by name. Groups a config does not use are None (or absent)."""

    critic: optax.GradientTransformation
    actor: optax.GradientTransformation
    alpha: optax.GradientTransformation | None
    lix_p: optax.GradientTransformation | None
    critic_scalars: dict[str, optax.GradientTransformation]


def make_optimizers(config: Config) -> Optimizers:
    critic_kind = CRITICS[config.critic]
    return Optimizers(
        critic=optax.adam(config.lr), actor=optax.adam(config.lr),
        alpha=optax.adam(config.lr) if config.base == "sac" else None,
        lix_p=optax.adam(config.lix_lr, b1=config.lix_b1) if config.lix else None,
        critic_scalars={name: optimizer for name, (_, optimizer)
                        in critic_kind.learned_scalars(config).items()})


@dataclasses.dataclass(frozen=True)
class UpdateSetup:
    """Everything an update needs besides (state, batch, key): built once per agent.

    obs_spec: what batch.obs holds (pixels or state; SEER's stored latents after the
        freeze). augment(obs [B, ...], key, copies) -> [copies * B, ...]: how a batch's
        observations become the networks' inputs (random shifts, or SEER's picked copies).
    frozen: SEER's phase after the freeze (encoder and trunks frozen by the optimisers).
    """

    config: Config
    nets: Parts
    optimizers: Optimizers
    obs_spec: specs.Array
    action_dim: int
    augment: Callable[[jnp.ndarray, jax.Array, int], jnp.ndarray]
    frozen: bool = False


def make_setup(config: Config, obs_spec: specs.Array, action_dim: int) -> UpdateSetup:
    """The setup of the pixel (or state) update: parts, optimisers, random shifts."""
    return UpdateSetup(config=config, nets=build_parts(config, obs_spec, action_dim),
                       optimizers=make_optimizers(config), obs_spec=obs_spec,
                       action_dim=action_dim,
                       augment=functools.partial(augment_copies, enabled=config.aug == "shift"))


def exploration(config: Config, update_step: jnp.ndarray) -> Exploration:
    """A deterministic actor's noise at update `update_step`: std linear from stddev_init to
    stddev_final over stddev_steps agent steps, clipped at stddev_clip in the losses."""
    std = linear_schedule(config.stddev_init, config.stddev_final, config.stddev_steps,
                          agent_step(config, update_step))
    return Exploration(std, config.stddev_clip)


def act_and_update(setup: UpdateSetup, state: AgentState, obs: jnp.ndarray, key: jax.Array,
                   eval_mode: bool = False) -> tuple[jnp.ndarray, dict]:
    """(actions [1, A], new acting state) for one observation obs [1, ...], by an actor
    kind that carries acting state (its `act_and_update`); a stateless kind's `act` and
    the unchanged acting state otherwise."""
    kind = setup.nets.actor_kind
    if kind.act_and_update is None:
        return act(setup, state, obs, key, eval_mode), state.acting
    check_obs(obs, setup.obs_spec)
    if obs.shape[0] != 1:
        raise ValueError(f"act_and_update takes one observation [1, ...] per agent (its "
                         f"acting state is one agent's), got a batch of {obs.shape[0]}")
    features = setup.nets.encoder.apply(state.params["encoder"], obs)
    return kind.act_and_update(setup, state, features, key, eval_mode)


def after_uniform_action(setup: UpdateSetup, state: AgentState) -> AgentState:
    """The state after the launcher took a uniform random action in the agent's place."""
    update = setup.nets.actor_kind.after_uniform_action
    if update is None:
        return state
    return state.replace(acting=update(setup.config, state.acting))


def reset_acting(setup: UpdateSetup, state: AgentState, eval_mode: bool) -> AgentState:
    """The state at an episode's start, by the actor kind's `reset_acting`."""
    return state.replace(acting=setup.nets.actor_kind.reset_acting(setup.config, state.acting,
                                                                   eval_mode))


def act(setup: UpdateSetup, state: AgentState, obs: jnp.ndarray, key: jax.Array,
        eval_mode: bool = False) -> jnp.ndarray:
    """Actions [B, A] in [-1, 1] for obs [B, ...], by the actor kind's rule. An actor with
    acting state acts on each row from the state's acting state (not updated: see
    `act_and_update`)."""
    check_obs(obs, setup.obs_spec)
    nets = setup.nets
    if nets.actor_kind.act_and_update is not None:
        rows = jax.vmap(lambda row, row_key: act_and_update(
            setup, state, row[None], row_key, eval_mode)[0][0])
        return rows(obs, jax.random.split(key, obs.shape[0]))
    features = nets.encoder.apply(state.params["encoder"], obs)
    return nets.actor_kind.act(nets.actor, state.params["actor"], features, key, eval_mode,
                               exploration(setup.config, state.update_step))


def init_state(setup: UpdateSetup, key: jax.Array) -> AgentState:
    """The initial AgentState of any base: network parameters from `key`, the scalars the
    config's parts learn (SAC's log_alpha, A-LIX's P, the critic kind's, e.g. GPL's beta),
    one optimiser state per group, and target copies of the critic (and of the encoder with
    target_encoder)."""
    config, optimizers = setup.config, setup.optimizers
    params = init_params(setup.nets, setup.obs_spec, setup.action_dim, key)
    critic_group = {"encoder": params["encoder"], "critic": params["critic"]}
    opt_states = {"critic": optimizers.critic.init(critic_group),
                  "actor": optimizers.actor.init(params["actor"]),
                  **setup.nets.actor_kind.init_opt_states(config, params)}
    scalars = {"log_alpha": ("alpha", np.log(config.init_temperature), optimizers.alpha),
               "lix_p": ("lix_p", config.lix_init, optimizers.lix_p)}
    for name, (value, optimizer) in CRITICS[config.critic].learned_scalars(config).items():
        scalars[name] = (name, value, optimizer)
    for name, (group, value, optimizer) in scalars.items():
        if optimizer is not None:
            params[name] = jnp.asarray(value, jnp.float32)
            opt_states[group] = optimizer.init(params[name])
    target_params = {"critic": params["critic"]}
    if config.target_encoder:
        target_params["encoder"] = params["encoder"]
    acting = setup.nets.actor_kind.init_acting(config, setup.action_dim,
                                               jax.random.fold_in(key, 1))
    return AgentState(params=params, target_params=target_params, opt_states=opt_states,
                      update_step=jnp.zeros((), jnp.int32), acting=acting)


def check_obs(obs: jnp.ndarray, obs_spec: specs.Array, name: str = "obs") -> None:
    """Trace-time check that obs is [B, *obs_spec.shape] of obs_spec.dtype."""
    expected = (None, *obs_spec.shape)
    try:
        chex.assert_shape(obs, expected)
        chex.assert_type(obs, obs_spec.dtype)
    except AssertionError as error:
        raise ValueError(f"{name}: expected {np.dtype(obs_spec.dtype).name} {list(expected)} "
                         f"(None = batch), got {obs.dtype} {list(obs.shape)}") from error


def check_batch(batch: Batch, obs_spec: specs.Array, action_dim: int) -> None:
    """Trace-time shape and dtype checks of a replay batch, with readable messages."""
    check_obs(batch.obs, obs_spec, "batch.obs")
    check_obs(batch.next_obs, obs_spec, "batch.next_obs")
    size = batch.obs.shape[0]
    for name, value, shape in (("action", batch.action, (size, action_dim)),
                               ("reward", batch.reward, (size,)),
                               ("discount", batch.discount, (size,))):
        if tuple(value.shape) != shape:
            raise ValueError(f"batch.{name}: expected shape {list(shape)}, "
                             f"got {list(value.shape)}")
