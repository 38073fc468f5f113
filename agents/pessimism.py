"""How an ensemble's Q estimates become one pessimistic value: twin-min, or GPL's learned
pessimism (ALGORITHMS.md section 4) with its dual TD-learning of beta and the optional
optimistic actor shift."""
import jax
import jax.numpy as jnp
import optax

from agents import common
from agents.config import Config


def ensemble_uncertainty(q: jnp.ndarray) -> jnp.ndarray:
    """GPL's u(s, a): mean over ordered pairs i != j of |Q_i - Q_j|. Q [N, B] -> [B]."""
    num = q.shape[0]
    pairwise = jnp.abs(q[:, None, :] - q[None, :, :])                 # [N, N, B], zero diagonal
    return jnp.sum(pairwise, axis=(0, 1)) / (num * (num - 1))


def target_value(q: jnp.ndarray, config: Config, beta: jnp.ndarray | None = None) -> jnp.ndarray:
    """Q [N, B] -> [B]. twin: min(Q1, Q2). gpl: mean_i Q_i - beta * u, which equals the
    minimum for N = 2 and beta = 0.5."""
    if config.critic == "gpl":
        return jnp.mean(q, axis=0) - beta * ensemble_uncertainty(q)
    return jnp.min(q, axis=0)


def beta_optimizer(config: Config) -> optax.GradientTransformation:
    return optax.adam(config.gpl_beta_lr, b1=config.gpl_beta_b1)


def actor_beta(config: Config, beta: jnp.ndarray, agent_step: jnp.ndarray) -> jnp.ndarray:
    """beta_pi = beta + optimism_shift * (1 - t / optimism_decay_steps), the shift decaying
    linearly to 0 (no shift when optimism_shift = 0)."""
    decay = jnp.clip(1.0 - agent_step / config.optimism_decay_steps, 0.0, 1.0)
    return beta + config.optimism_shift * decay


def dual_beta_step(config: Config, beta: jnp.ndarray, opt_state, q: jnp.ndarray,
                   target: jnp.ndarray) -> tuple[jnp.ndarray, object, jnp.ndarray]:
    """One Adam step on loss_beta = beta * stop_gradient(mean_{i,b}(Q_i(s, a) - y)).

    q: [N, B] predictions of the critics before their update; target: [B]. A positive mean
    TD error (targets below predictions) lowers beta, a negative one raises it.
    Returns (beta, opt_state, mean TD error).
    """
    mean_td_error = jax.lax.stop_gradient(jnp.mean(q - target[None]))
    if not config.gpl_learn_beta:
        return beta, opt_state, mean_td_error
    grad = jax.grad(lambda b: b * mean_td_error)(beta)
    beta, opt_state = common.apply_optimizer(beta_optimizer(config), grad, opt_state, beta)
    return beta, opt_state, mean_td_error
