"""The actor kinds (agents/parts.py, `ActorKind`): DrQ-v2's deterministic actor with
clipped Gaussian noise, and SAC's tanh-squashed Gaussian."""
import jax
import jax.numpy as jnp

from pixelzoo import networks
from pixelzoo.agents import losses
from pixelzoo.agents.parts import ActorKind, Exploration, register_actor


def _deterministic_sample(module, params, features, key, exploration: Exploration):
    """mu(h) + clip(N(0, std^2), -c, c), clamped inside (-1, 1); log_prob 0 (no density)."""
    mean = module.apply(params, features)
    action = losses.clipped_noise_action(mean, exploration.stddev, exploration.clip, key)
    return action, jnp.zeros(mean.shape[:1], mean.dtype)


def _deterministic_act(module, params, features, key, eval_mode: bool,
                       exploration: Exploration):
    """The mean when evaluating, else mu + N(0, std^2) (unclipped noise) clamped to [-1, 1]."""
    mean = module.apply(params, features)
    if eval_mode:
        return mean
    return jnp.clip(mean + exploration.stddev * jax.random.normal(key, mean.shape), -1.0, 1.0)


def _tanh_gaussian_sample(module, params, features, key, exploration=None):
    return losses.tanh_gaussian_sample(*module.apply(params, features), key)


def _tanh_gaussian_act(module, params, features, key, eval_mode: bool, exploration=None):
    """tanh(mean) when evaluating, else a sample."""
    mean, log_std = module.apply(params, features)
    if eval_mode:
        return jnp.tanh(mean)
    return losses.tanh_gaussian_sample(mean, log_std, key)[0]


DETERMINISTIC = ActorKind(
    build=lambda config, action_dim, dense_inputs, trunk_kind: networks.DeterministicActor(
        action_dim, config.feature_dim, config.hidden_dims, dense_inputs, trunk_kind,
        config.mlp_init_gain),
    sample=_deterministic_sample, act=_deterministic_act, bases=("ddpg",))

TANH_GAUSSIAN = ActorKind(
    build=lambda config, action_dim, dense_inputs, trunk_kind: networks.TanhGaussianActor(
        action_dim, config.feature_dim, config.hidden_dims, dense_inputs, config.log_std_min,
        config.log_std_max, trunk_kind, config.mlp_init_gain),
    sample=_tanh_gaussian_sample, act=_tanh_gaussian_act, bases=("sac",))

register_actor("deterministic", DETERMINISTIC)
register_actor("tanh_gaussian", TANH_GAUSSIAN)
