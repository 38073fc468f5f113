"""What every learner shares: the agent state, the Agent bundle, targets, schedules, checks."""
import dataclasses
from typing import Any, Callable

import chex
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from dm_env import specs

from agents.config import Config
from replay import Batch

Params = Any
Metrics = dict[str, jnp.ndarray]


@flax.struct.dataclass
class AgentState:
    """The whole learner state as one pytree (vmaps over seeds, saves with orbax).

    params: online parameters by group ('encoder', 'actor', 'critic', optionally 'log_alpha').
    target_params: Polyak-averaged copies ('critic', and 'encoder' when the recipe has a
        target encoder).
    opt_states: one optax state per optimiser ('critic' covers encoder and critic).
    update_step: int32 scalar, number of updates done so far.
    """

    params: dict
    target_params: dict
    opt_states: dict
    update_step: jnp.ndarray


@dataclasses.dataclass(frozen=True)
class Agent:
    """A configured agent: pure functions over `AgentState`.

    init(key) -> state
    act(state, obs [B, ...], key, eval_mode=False) -> actions float32 [B, A] in [-1, 1]
    update(state, batch, key) -> (state, metrics: dict of float32 scalars)
    """

    name: str
    config: Config
    obs_spec: specs.Array
    action_spec: specs.BoundedArray
    init: Callable[[jax.Array], AgentState]
    act: Callable[..., jnp.ndarray]
    update: Callable[[AgentState, Batch, jax.Array], tuple[AgentState, Metrics]]

    @property
    def action_dim(self) -> int:
        return int(self.action_spec.shape[0])


def polyak(target: Params, online: Params, tau: float) -> Params:
    """target <- (1 - tau) * target + tau * online: the one Polyak update."""
    return optax.incremental_update(online, target, tau)


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


def clipped_noise_action(mean: jnp.ndarray, stddev: jnp.ndarray, clip: float,
                         key: jax.Array) -> jnp.ndarray:
    """DrQ-v2 target/actor-loss action: mu + clip(N(0, std^2), -c, c), clamped to
    [-1 + 1e-6, 1 - 1e-6] with a straight-through gradient. mean: [B, A]."""
    noise = jnp.clip(stddev * jax.random.normal(key, mean.shape), -clip, clip)
    action = mean + noise
    clamped = jnp.clip(action, -1.0 + 1e-6, 1.0 - 1e-6)
    return action + jax.lax.stop_gradient(clamped - action)


def tanh_gaussian_sample(mean: jnp.ndarray, log_std: jnp.ndarray,
                         key: jax.Array) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Reparameterised tanh-squashed Gaussian sample and its log-probability.

    mean, log_std: [B, A] -> (action [B, A] in (-1, 1), log_prob [B]).
    log pi(a) = sum_i [log N(u_i; mean, std) - log(1 - tanh(u_i)^2)], with the stable
    log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)).
    """
    std = jnp.exp(log_std)
    pre_tanh = mean + std * jax.random.normal(key, mean.shape)
    gaussian_log_prob = -0.5 * ((pre_tanh - mean) / std) ** 2 - log_std - 0.5 * jnp.log(2 * jnp.pi)
    log_det = 2.0 * (jnp.log(2.0) - pre_tanh - jax.nn.softplus(-2.0 * pre_tanh))
    return jnp.tanh(pre_tanh), jnp.sum(gaussian_log_prob - log_det, axis=-1)


def ensemble_mse(q: jnp.ndarray, target: jnp.ndarray) -> jnp.ndarray:
    """Sum over critics of the batch-mean squared error. q: [N, B], target: [B]."""
    return jnp.sum(jnp.mean((q - target[None]) ** 2, axis=-1))
