"""An agent's parts and their registries: encoder, actor and critic kinds.

What varies between methods is chosen by the config through these three interfaces:
- an encoder kind builds the module obs [B, ...] -> features [B, D] (`ENCODERS`);
- an actor kind (`ActorKind`, in `ACTORS`) builds the policy network and says how it samples
  for the losses and how it acts;
- a critic kind (`CriticKind`, in `CRITICS`) says what each critic outputs (one Q, or K
  quantiles), its loss, which value the target and the actor take from the ensemble's
  Q [N, B] (or [N, B, K]), which scalars it learns, and its step after the critic's.
The A-LIX regulariser is the encoder's `lix_context` plus `steps.lix_step`.

A new kind is one module that builds its kind and one `register_*` line; the bases
(agents/ddpg.py, agents/sac.py) call the kinds only through these interfaces
(docs/algorithms.md, "Adding a part").
"""
import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from dm_env import specs

from pixelzoo import networks
from pixelzoo.agents.config import Config
from pixelzoo.agents.losses import CriticLoss, Exploration, ValueFn, ensemble_mse

@dataclasses.dataclass(frozen=True)
class ActorKind:
    """One kind of actor.

    build(config, action_dim, dense_inputs, trunk_kind) -> module: features [B, D] -> the
        policy's outputs (with `trunk` and `head` methods, as networks.*Actor; trunk_kind
        is `networks.Trunk`'s kind, `parts.trunk_kind(config)`).
    sample(module, params, features [B, D], key, exploration) -> (action [B, A] in [-1, 1],
        log_prob [B]): the reparameterised draw the losses and targets use.
    act(module, params, features [B, D], key, eval_mode, exploration) -> action [B, A].
    bases: the base algorithms it fits ('ddpg', 'sac').

    An actor that carries state from one act call to the next (SSPG's chains) also has:
    init_acting(config, action_dim, key) -> its initial acting state (a dict of arrays,
        kept in AgentState.acting; {} for stateless actors);
    act_and_update(setup, state, features [1, D], key, eval_mode) -> (action [1, A], new
        acting state); then `act` is not called (agents/common.py, `act_and_update`);
    after_uniform_action(config, acting) -> acting: what a uniform random action the
        launcher took instead of the agent's (seed steps) does to the acting state;
    update(setup, state, batch, key) -> (state, metrics): its own update, made of the
        base's steps, when its training differs from the base's (None: the base's).
    critic_action_dim(config, action_dim) -> what the critic takes in place of the action
        (Routines: the routine dimension).
    init_opt_states(config, params) -> optimiser states of its own parameter groups
        (Routines: the prefix encoder and decoder's Adam), added to AgentState.opt_states.
    reset_acting(config, acting, eval_mode) -> acting at an episode's start (None: the
        acting state runs on across episodes).
    update_size(config) -> None, or size(state) -> int32 scalar: the static size (SSPG: the
        training chain length) of the update this state needs; the Learner then compiles
        one update per size, each for the config `sized_config(config, size)`.
    """

    build: Callable[[Config, int, bool, str], nn.Module]
    sample: Callable[..., tuple[jnp.ndarray, jnp.ndarray]]
    act: Callable[..., jnp.ndarray]
    bases: tuple[str, ...]
    init_acting: Callable[[Config, int, jax.Array], dict] = lambda config, action_dim, key: {}
    act_and_update: Callable[..., tuple[jnp.ndarray, dict]] | None = None
    after_uniform_action: Callable[[Config, dict], dict] | None = None
    update: Callable[..., tuple[Any, dict]] | None = None
    critic_action_dim: Callable[[Config, int], int] = lambda config, action_dim: action_dim
    init_opt_states: Callable[[Config, dict], dict] = lambda config, params: {}
    reset_acting: Callable[[Config, dict, bool], dict] | None = None
    update_size: Callable[[Config], Callable[[Any], jnp.ndarray] | None] | None = None
    sized_config: Callable[[Config, int], Config] | None = None


@dataclasses.dataclass(frozen=True)
class CriticStepResult:
    """What a critic kind's step after the critic step returns: the scalars it learns
    (new values, new optimiser states), the actor's value function and metrics."""

    params: dict
    opt_states: dict
    actor_value_fn: ValueFn
    metrics: dict


@dataclasses.dataclass(frozen=True)
class CriticKind:
    """One kind of critic ensemble (the networks are networks.CriticEnsemble).

    `*out` below is nothing for a scalar critic, (K,) for one that outputs K values per
    critic (num_outputs: a distributional critic's quantiles).
    value_fn(config, params) -> Q [N, B, *out] -> V [B, *out]: the value the TD target
        takes from the target critics, with the agent's current parameters (e.g. GPL's
        beta); the target is then y [B, *out].
    num_outputs(config) -> K, or None for one scalar Q per critic (Q [N, B]).
    loss(config) -> (Q [N, B, *out], target [B, *out]) -> scalar: the critic loss.
    uncertainty: Q [N, B, *out] -> [B], the ensemble's disagreement the ddpg base reports
        (None: not reported).
    learned_scalars(config) -> {name: (initial value, optax optimiser)}: scalars it adds
        to the agent's parameters, each with its own optimiser state.
    step(config, params, opt_states, q [N, B], target [B], agent_step) -> CriticStepResult:
        its step after the critic step (None: none; the actor uses `value_fn`, which must
        then give V [B]). q and target may carry *out.
    config_errors(config) -> problems with the config for this kind (messages).
    """

    value_fn: Callable[[Config, dict], ValueFn]
    learned_scalars: Callable[[Config], dict[str, tuple[float, optax.GradientTransformation]]] \
        = lambda config: {}
    step: Callable[..., CriticStepResult] | None = None
    config_errors: Callable[[Config], list[str]] = lambda config: []
    num_outputs: Callable[[Config], int | None] = lambda config: None
    loss: Callable[[Config], CriticLoss] = lambda config: ensemble_mse
    uncertainty: Callable[[jnp.ndarray], jnp.ndarray] | None = None


# Registries: config name -> kind. Filled by agents/actors.py, agents/critics.py and below.
ENCODERS: dict[str, Callable[[Config], nn.Module]] = {}
ACTORS: dict[str, ActorKind] = {}
CRITICS: dict[str, CriticKind] = {}
# The actor each base uses when config.actor is 'auto'.
BASE_ACTORS = {"ddpg": "deterministic", "sac": "tanh_gaussian"}


def register_encoder(name: str, build: Callable[[Config], nn.Module]) -> None:
    ENCODERS[name] = build


def register_actor(name: str, kind: ActorKind) -> None:
    ACTORS[name] = kind


def register_critic(name: str, kind: CriticKind) -> None:
    CRITICS[name] = kind


register_encoder("conv", lambda config: networks.ConvEncoder(centered=config.centered_pixels))
register_encoder("flare", lambda config: networks.FlareEncoder(centered=config.centered_pixels))
register_encoder("state", lambda config: networks.StateEncoder())
register_encoder("attention", lambda config: networks.AttentionEncoder(
    config.ia_patch, config.ia_stride, config.ia_qk_dim, config.ia_value_dim, config.ia_top_k,
    config.ia_kernel, config.ia_features, config.ia_angular_features, config.ia_orthogonal,
    config.ia_output, centered=config.centered_pixels))


def is_pixels(obs_spec: specs.Array) -> bool:
    return len(obs_spec.shape) == 3


def actor_name(config: Config) -> str:
    """config.actor, or the base's own actor when it is 'auto' ('routine' in the routine
    policy space)."""
    if config.policy_space == "routine":
        return "routine"
    return BASE_ACTORS.get(config.base, "") if config.actor == "auto" else config.actor


@dataclasses.dataclass(frozen=True)
class Parts:
    """The parts of one agent: its flax modules and its actor and critic kinds.

    encoder: obs [B, ...] -> features [B, D] (conv maps flattened, or the raw state).
    actor: features [B, D] -> the policy's outputs (actor_kind says what they mean).
    critic: (features [B, D], action [B, A]) -> Q [N, B] (or [N, B, K], critic_kind's
        num_outputs).
    """

    encoder: Any
    actor: Any
    critic: Any
    actor_kind: ActorKind
    critic_kind: CriticKind
    critic_action_dim: int | None = None   # the critic's action input (None: the action's)

    def sample(self, actor_params, features: jnp.ndarray, key: jax.Array,
               exploration: Exploration | None = None) -> tuple[jnp.ndarray, jnp.ndarray]:
        """(action [B, A], log_prob [B]) drawn by the actor kind for the losses."""
        return self.actor_kind.sample(self.actor, actor_params, features, key, exploration)


def trunk_kind(config: Config) -> str:
    """`networks.Trunk`'s kind for the actor and critic: config.trunk='layernorm' is DrQ-v2's
    Linear -> LayerNorm -> tanh, without the tanh on Flare's latent flow; 'none' feeds the
    encoder's output straight to the MLPs."""
    if config.trunk == "none":
        return "none"
    return "layernorm" if config.encoder == "flare" else "tanh"


def build_parts(config: Config, obs_spec: specs.Array, action_dim: int) -> Parts:
    """The modules and kinds `config` names (the state encoder for vector observations)."""
    encoder_name = config.encoder if is_pixels(obs_spec) else "state"
    dense_inputs = config.mlp == "d2rl"
    trunk = trunk_kind(config)
    actor_kind = ACTORS[actor_name(config)]
    critic_kind = CRITICS[config.critic]
    return Parts(
        encoder=ENCODERS[encoder_name](config),
        actor=actor_kind.build(config, action_dim, dense_inputs, trunk),
        critic=networks.CriticEnsemble(config.num_critics, config.feature_dim,
                                       config.hidden_dims, dense_inputs, trunk,
                                       critic_kind.num_outputs(config), config.mlp_init_gain),
        actor_kind=actor_kind, critic_kind=critic_kind,
        critic_action_dim=actor_kind.critic_action_dim(config, action_dim))


def init_params(parts: Parts, obs_spec: specs.Array, action_dim: int,
                key: jax.Array) -> dict:
    """Initial parameters {'encoder', 'actor', 'critic'} from one key."""
    key_encoder, key_actor, key_critic = jax.random.split(key, 3)
    obs = jnp.zeros((1, *obs_spec.shape), obs_spec.dtype)
    encoder_params = parts.encoder.init(key_encoder, obs)
    features = parts.encoder.apply(encoder_params, obs)
    action = jnp.zeros((1, parts.critic_action_dim or action_dim), jnp.float32)
    return {
        "encoder": encoder_params,
        "actor": parts.actor.init(key_actor, features),
        "critic": parts.critic.init(key_critic, features, action),
    }
