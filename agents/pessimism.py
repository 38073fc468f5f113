"""How an ensemble's Q estimates become one pessimistic value, and GPL's learning of its
pessimism (docs/algorithms.md, GPL): the value function a config asks for, the dual
TD-learning step of beta and the optional optimistic actor shift, for scalar and quantile
critics alike. The formulas themselves are in agents/losses.py."""
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from pixelzoo.agents import losses
from pixelzoo.agents.config import Config
from pixelzoo.agents.parts import CRITICS, CriticStepResult


def value_fn(config: Config, beta: jnp.ndarray | None = None) -> losses.ValueFn:
    """Q [N, B, *out] -> [B, *out] of the config's critic kind with pessimism `beta` (twin:
    min(Q1, Q2); gpl: mean_i Q_i - beta * u(s, a); gpl_quantile: per quantile): the kind's
    own `value_fn` (agents/critics.py)."""
    return CRITICS[config.critic].value_fn(config, {"beta": beta})


def beta_optimizer(config: Config) -> optax.GradientTransformation:
    return optax.adam(config.gpl_beta_lr, b1=config.gpl_beta_b1)


def actor_beta(config: Config, beta: jnp.ndarray, agent_step: jnp.ndarray) -> jnp.ndarray:
    """beta_pi = beta + optimism_shift * (1 - t / optimism_decay_steps), the shift decaying
    linearly to 0 (no shift when optimism_shift = 0)."""
    decay = jnp.clip(1.0 - agent_step / config.optimism_decay_steps, 0.0, 1.0)
    return beta + config.optimism_shift * decay


def dual_beta_step(config: Config, beta: jnp.ndarray, opt_state, q: jnp.ndarray,
                   target: jnp.ndarray) -> tuple[jnp.ndarray, object, jnp.ndarray]:
    """One Adam step on `losses.gpl_beta_loss` (unless gpl_learn_beta is off).

    q: [N, B] predictions of the critics before their update; target: [B]. For quantile
    critics q [N, B, K] and target [B, K]: the mean of q - target is the mean over
    (b, i, j, k) of theta_ij - y_k, the mean is linear.
    Returns (beta, opt_state, mean TD error mean_{i,b}(Q_i - y)).
    """
    mean_td_error = jax.lax.stop_gradient(jnp.mean(q - target[None]))
    if not config.gpl_learn_beta:
        return beta, opt_state, mean_td_error
    grad = jax.grad(losses.gpl_beta_loss)(beta, q, target)
    updates, opt_state = beta_optimizer(config).update(grad, opt_state, beta)
    return optax.apply_updates(beta, updates), opt_state, mean_td_error


def gpl_step(config: Config, params: dict, opt_states: dict, q: jnp.ndarray,
             target: jnp.ndarray, agent_step: jnp.ndarray,
             actor_value: Callable = losses.gpl_penalised_value) -> CriticStepResult:
    """GPL's step after the critic step: beta's dual TD-learning step (`dual_beta_step`).

    q [N, B, *out], target [B, *out]. actor_value(q, beta) -> [B]: the penalised value the
    actor maximises (`losses.quantile_penalised_mean` for quantile critics). The actor's
    beta_pi comes from the beta before this step, as the critic used. Returns the new beta
    and its optimiser state, the actor's value function and the metrics beta, beta_actor,
    td_error_mean. Changes none of its arguments."""
    beta = params["beta"]
    beta_pi = actor_beta(config, beta, agent_step)
    new_beta, beta_opt_state, td_error_mean = dual_beta_step(
        config, beta, opt_states["beta"], q, target)
    return CriticStepResult(
        params={"beta": new_beta}, opt_states={"beta": beta_opt_state},
        actor_value_fn=functools.partial(actor_value, beta=beta_pi),
        metrics={"beta": new_beta, "beta_actor": beta_pi, "td_error_mean": td_error_mean})
