"""Assembles an agent's network parts from the config: encoder, actor, critic ensemble."""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
from dm_env import specs

from pixelzoo import networks
from pixelzoo.agents.config import Config


@dataclasses.dataclass(frozen=True)
class Parts:
    """The flax modules of one agent.

    encoder: obs [B, ...] -> features [B, D] (conv maps flattened, or the raw state).
    actor: features [B, D] -> mu [B, A] (ddpg) or (mean, log_std) [B, A] each (sac).
    critic: (features [B, D], action [B, A]) -> Q [N, B].
    """

    encoder: nn.Module
    actor: nn.Module
    critic: nn.Module


def is_pixels(obs_spec: specs.Array) -> bool:
    return len(obs_spec.shape) == 3


def build_parts(config: Config, obs_spec: specs.Array, action_dim: int) -> Parts:
    if not is_pixels(obs_spec):
        encoder = networks.StateEncoder()
    elif config.encoder == "flare":
        encoder = networks.FlareEncoder(centered=config.centered_pixels)
    else:
        encoder = networks.ConvEncoder(centered=config.centered_pixels)
    dense_inputs = config.mlp == "d2rl"
    trunk_tanh = config.encoder != "flare"
    if config.base == "ddpg":
        actor = networks.DeterministicActor(action_dim, config.feature_dim, config.hidden_dims,
                                            dense_inputs, trunk_tanh)
    else:
        actor = networks.TanhGaussianActor(action_dim, config.feature_dim, config.hidden_dims,
                                           dense_inputs, config.log_std_min,
                                           config.log_std_max, trunk_tanh)
    critic = networks.CriticEnsemble(config.num_critics, config.feature_dim, config.hidden_dims,
                                     dense_inputs, trunk_tanh)
    return Parts(encoder=encoder, actor=actor, critic=critic)


def init_params(parts: Parts, obs_spec: specs.Array, action_dim: int,
                key: jax.Array) -> dict:
    """Initial parameters {'encoder', 'actor', 'critic'} from one key."""
    key_encoder, key_actor, key_critic = jax.random.split(key, 3)
    obs = jnp.zeros((1, *obs_spec.shape), obs_spec.dtype)
    encoder_params = parts.encoder.init(key_encoder, obs)
    features = parts.encoder.apply(encoder_params, obs)
    action = jnp.zeros((1, action_dim), jnp.float32)
    return {
        "encoder": encoder_params,
        "actor": parts.actor.init(key_actor, features),
        "critic": parts.critic.init(key_critic, features, action),
    }
