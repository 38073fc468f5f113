"""Every loss and target of pixelzoo's algorithms as a pure function (docs/algorithms.md).

Two levels, in the style of rlax:
- formulas over arrays: one equation each, batched over B (and N critics where said);
- network-level losses: the same formulas applied to the agent's networks, which they take
  explicitly (`nets`, an `agents.parts.Parts`: its modules and its actor kind's `sample`)
  with the parameters they differentiate. After SEER's freeze the same losses run on
  stored latents (`nets` then reads them through agents/seer.py's `StoredLatents` and
  `HeadOf`).
A user or a test calls any of them on a hand-made batch; `agents/ddpg.py` and
`agents/sac.py` compose them, through the steps, into `update`.

Shapes: B batch, N critics, A action dimensions, K target / M Q augmentations; a
distributional critic adds a trailing axis of Kq quantiles to its Q [N, B, Kq], values and
targets [B, Kq] (`*out` below: nothing, or that axis). Values are returns in reward units; `discount` already holds gamma^n times the environment discounts of
the n-step window (replay.Batch).
"""
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from pixelzoo.networks import LixContext

sg = jax.lax.stop_gradient
ValueFn = Callable[[jnp.ndarray], jnp.ndarray]   # Q [N, B, *out] -> value [B, *out]
CriticLoss = Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]   # (Q, target) -> scalar


class Exploration(NamedTuple):
    """A deterministic actor's noise at one update: std of N(0, std^2) and its clip c."""

    stddev: jnp.ndarray
    clip: float


# ----------------------------------------------------------------------------- values
def twin_min_value(q: jnp.ndarray) -> jnp.ndarray:
    """Clipped double-Q value: min_i Q_i. q [N, B] -> [B]."""
    return jnp.min(q, axis=0)


def ensemble_uncertainty(q: jnp.ndarray) -> jnp.ndarray:
    """GPL's u(s, a): mean over ordered pairs i != j of |Q_i - Q_j|. q [N >= 2, B, ...] ->
    [B, ...] (elementwise over any trailing axes)."""
    num = q.shape[0]
    pairwise = jnp.abs(q[:, None, :] - q[None, :, :])                 # [N, N, B], zero diagonal
    return jnp.sum(pairwise, axis=(0, 1)) / (num * (num - 1))


def gpl_penalised_value(q: jnp.ndarray, beta: jnp.ndarray) -> jnp.ndarray:
    """GPL's value mean_i Q_i - beta * u(s, a). q [N, B], beta scalar -> [B].

    For N = 2 and beta = 0.5 it equals twin_min_value(q)."""
    return jnp.mean(q, axis=0) - beta * ensemble_uncertainty(q)


# ----------------------------------------------------------------------------- quantiles
def quantile_midpoints(num_quantiles: int) -> jnp.ndarray:
    """The fractions a quantile critic's outputs stand for: tau_j = (j + 1/2) / K -> [K]."""
    return (jnp.arange(num_quantiles, dtype=jnp.float32) + 0.5) / num_quantiles


def quantile_huber(error: jnp.ndarray, tau: jnp.ndarray, kappa: float) -> jnp.ndarray:
    """rho^kappa_tau(e) = |tau - 1{e < 0}| * H_kappa(e), elementwise: H_kappa(e) = e^2 / 2
    where |e| <= kappa, kappa (|e| - kappa / 2) beyond. e = target - predicted quantile;
    tau broadcasts against e."""
    abs_error = jnp.abs(error)
    huber = jnp.where(abs_error <= kappa, 0.5 * error ** 2, kappa * (abs_error - 0.5 * kappa))
    return jnp.abs(tau - (error < 0).astype(error.dtype)) * huber


def quantile_ensemble_loss(q: jnp.ndarray, target: jnp.ndarray, kappa: float) -> jnp.ndarray:
    """GPL's quantile critic loss: the sum over critics i, online quantiles j and target
    quantiles k of rho^kappa_{tau_j}(y_k - theta_ij), averaged over the batch.

    q [N, B, K] as the critics output them (not sorted), tau_j = (j + 1/2) / K; target
    [B, K'] -> scalar. It sums over the target quantiles where QR-DQN averages (K' times
    larger), as the authors' code does. With K = K' = 1 and kappa >= max |y - Q| it is
    `ensemble_mse` / 4 (H = e^2 / 2 and |1/2 - 1{e < 0}| = 1/2)."""
    taus = quantile_midpoints(q.shape[-1])[:, None]                  # [K, 1]
    errors = target[None, :, None, :] - q[..., None]                 # [N, B, K, K']
    per_critic_and_sample = jnp.sum(quantile_huber(errors, taus, kappa), axis=(2, 3))  # [N, B]
    return jnp.sum(jnp.mean(per_critic_and_sample, axis=1))


def sorted_quantile_uncertainty(q: jnp.ndarray) -> jnp.ndarray:
    """GPL's u for quantile critics: the mean over ordered pairs i != j of the Wasserstein-1
    distance (1/K) sum_k |theta_i,(k) - theta_j,(k)| between their sorted quantiles.
    q [N >= 2, B, K] -> [B]."""
    return jnp.mean(ensemble_uncertainty(jnp.sort(q, axis=-1)), axis=-1)


def quantile_penalised_value(q: jnp.ndarray, beta: jnp.ndarray) -> jnp.ndarray:
    """The quantile target's value: the k-th sorted quantile averaged over critics minus
    beta * `sorted_quantile_uncertainty`. q [N, B, K], beta scalar -> [B, K]."""
    sorted_mean = jnp.mean(jnp.sort(q, axis=-1), axis=0)
    return sorted_mean - beta * sorted_quantile_uncertainty(q)[:, None]


def quantile_penalised_mean(q: jnp.ndarray, beta: jnp.ndarray) -> jnp.ndarray:
    """The quantile critics' value for the actor: mean_{i,k} theta_ik - beta * u.
    q [N, B, K], beta scalar -> [B]."""
    return jnp.mean(quantile_penalised_value(q, beta), axis=-1)


# ----------------------------------------------------------------------------- formulas
def _per_sample(x: jnp.ndarray, like: jnp.ndarray) -> jnp.ndarray:
    """x [B] (or [K, B]) with trailing unit axes to broadcast against like [..., B, *out]."""
    return x.reshape(x.shape + (1,) * (like.ndim - x.ndim))


def bootstrapped_target(reward: jnp.ndarray, discount: jnp.ndarray,
                        next_value: jnp.ndarray) -> jnp.ndarray:
    """TD target y = R + discount * V(s'), without gradient. reward, discount [B];
    next_value [B, *out] (per quantile for a quantile critic) -> y [B, *out]. R is the
    n-step discounted reward sum and discount = gamma^n times the window's env discounts."""
    return sg(_per_sample(reward, next_value) + _per_sample(discount, next_value) * next_value)


def ensemble_mse(q: jnp.ndarray, target: jnp.ndarray) -> jnp.ndarray:
    """Critic loss: sum over critics of the batch-mean squared error. q [N, B], target [B]."""
    return jnp.sum(jnp.mean((q - target[None]) ** 2, axis=-1))


def deterministic_actor_loss(value: jnp.ndarray) -> jnp.ndarray:
    """DDPG actor loss -mean_b V(s, mu(s) + eps). value [B] -> scalar."""
    return -jnp.mean(value)


def soft_actor_loss(value: jnp.ndarray, log_prob: jnp.ndarray,
                    alpha: jnp.ndarray) -> jnp.ndarray:
    """SAC actor loss mean_b(alpha * log pi(a|s) - V(s, a)); alpha without gradient.
    value, log_prob [B], alpha scalar -> scalar."""
    return jnp.mean(sg(alpha) * log_prob - value)


def temperature_loss(log_alpha: jnp.ndarray, log_prob: jnp.ndarray,
                     target_entropy: float) -> jnp.ndarray:
    """SAC temperature loss mean_b(alpha * (-log pi(a|s) - target_entropy)), differentiated
    in log_alpha only (alpha = exp(log_alpha)). log_prob [B] -> scalar."""
    return jnp.mean(jnp.exp(log_alpha) * sg(-log_prob - target_entropy))


def soft_k_averaged_target(reward: jnp.ndarray, discount: jnp.ndarray,
                           next_values: jnp.ndarray, next_log_probs: jnp.ndarray,
                           alpha: jnp.ndarray) -> jnp.ndarray:
    """DrQ's target: y = r + discount * mean_k [V'(f_k(s'), a'_k) - alpha log pi(a'_k|f_k(s'))].

    next_values [K, B, *out], next_log_probs [K, B] (one row per target augmentation; the
    entropy term is the same for every quantile); reward, discount [B]; alpha scalar ->
    y [B, *out], without gradient."""
    soft_values = next_values - alpha * _per_sample(next_log_probs, next_values)
    return bootstrapped_target(reward, discount, jnp.mean(soft_values, axis=0))


def m_averaged_critic_loss(q: jnp.ndarray, target: jnp.ndarray,
                           critic_loss: CriticLoss = ensemble_mse) -> jnp.ndarray:
    """DrQ's critic loss: mean over the M augmented copies of `critic_loss` (the critic
    kind's; `ensemble_mse` for scalar critics). q [N, M, B, *out], target [B, *out] ->
    scalar."""
    return jnp.mean(jax.vmap(critic_loss, in_axes=(1, None))(q, target))


def gpl_beta_loss(beta: jnp.ndarray, q: jnp.ndarray, target: jnp.ndarray) -> jnp.ndarray:
    """GPL's dual TD-learning loss for beta: beta * sg(mean_{i,b}(Q_i(s, a) - y)).

    q [N, B]: the critics' predictions before their update; target [B]. Its gradient is the
    mean TD error: positive (targets below predictions) lowers beta under gradient descent."""
    return beta * sg(jnp.mean(q - target[None]))


def lix_p_update(optimizer: optax.GradientTransformation, p: jnp.ndarray, opt_state,
                 nd_gradient: jnp.ndarray) -> tuple[jnp.ndarray, object]:
    """A-LIX's step on the smoothing strength P: one optimiser step with the dual gradient
    nd_gradient = nd_target - ND (what `networks.nd_probe` hands P), then P clamped to
    [0, 1]. Returns (new P, new optimiser state)."""
    updates, opt_state = optimizer.update(nd_gradient, opt_state, p)
    return jnp.clip(optax.apply_updates(p, updates), 0.0, 1.0), opt_state


# ----------------------------------------------------------------------------- sampling
def clipped_noise_action(mean: jnp.ndarray, stddev: jnp.ndarray, clip: float,
                         key: jax.Array) -> jnp.ndarray:
    """DrQ-v2 target/actor-loss action: mu + clip(N(0, std^2), -c, c), clamped to
    [-1 + 1e-6, 1 - 1e-6] with a straight-through gradient. mean [B, A] -> [B, A]."""
    noise = jnp.clip(stddev * jax.random.normal(key, mean.shape), -clip, clip)
    action = mean + noise
    clamped = jnp.clip(action, -1.0 + 1e-6, 1.0 - 1e-6)
    return action + sg(clamped - action)


def tanh_gaussian_sample(mean: jnp.ndarray, log_std: jnp.ndarray,
                         key: jax.Array) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Reparameterised tanh-squashed Gaussian sample and its log-probability.

    mean, log_std [B, A] -> (action [B, A] in (-1, 1), log_prob [B]).
    log pi(a) = sum_i [log N(u_i; mean, std) - log(1 - tanh(u_i)^2)], with the stable
    log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)).
    """
    std = jnp.exp(log_std)
    pre_tanh = mean + std * jax.random.normal(key, mean.shape)
    gaussian_log_prob = -0.5 * ((pre_tanh - mean) / std) ** 2 - log_std - 0.5 * jnp.log(2 * jnp.pi)
    log_det = 2.0 * (jnp.log(2.0) - pre_tanh - jax.nn.softplus(-2.0 * pre_tanh))
    return jnp.tanh(pre_tanh), jnp.sum(gaussian_log_prob - log_det, axis=-1)


# ----------------------------------------------------------------------------- DrQ-v2
def drqv2_td_target(nets, encoder_params, actor_params, target_critic_params,
                    next_obs: jnp.ndarray, reward: jnp.ndarray, discount: jnp.ndarray,
                    stddev: jnp.ndarray, stddev_clip: float, key: jax.Array,
                    value_fn: ValueFn, lix_context: LixContext | None = None,
                    ) -> tuple[jnp.ndarray, jnp.ndarray]:
    """DrQ-v2's n-step target y = R + discount * V'(h', a'), a' = mu(h') + clipped noise.

    h' = online encoder(next_obs) without gradient (LIX layers active when given); V' =
    value_fn of the target critics. next_obs [B, ...], reward, discount [B].
    Returns (y [B, *out], the target critics' Q [N, B, *out])."""
    next_features = sg(nets.encoder.apply(encoder_params, next_obs, lix_context))
    next_action, _ = nets.sample(actor_params, next_features, key,
                                 Exploration(stddev, stddev_clip))
    next_q = nets.critic.apply(target_critic_params, next_features, next_action)
    return bootstrapped_target(reward, discount, value_fn(next_q)), next_q


def drqv2_critic_loss(nets, critic_group: dict, obs: jnp.ndarray, action: jnp.ndarray,
                      target: jnp.ndarray, lix_context: LixContext | None = None,
                      critic_loss: CriticLoss = ensemble_mse,
                      ) -> tuple[jnp.ndarray, tuple[jnp.ndarray, jnp.ndarray]]:
    """DrQ-v2's critic loss: `critic_loss` (the critic kind's; `ensemble_mse` for scalar
    critics) of Q(encoder(obs), action) against y [B, *out].

    critic_group: {'encoder', 'critic'} and, with A-LIX, 'lix_p', which then receives the
    dual gradient nd_target - ND through the probe of `lix_context`. obs [B, ...],
    action [B, A]. Returns (loss, (features [B, D], Q [N, B, *out]))."""
    if lix_context is not None and "lix_p" in critic_group:
        lix_context = LixContext(lix_context.max_shift, lix_context.key,
                                 critic_group["lix_p"], lix_context.nd_target)
    features = nets.encoder.apply(critic_group["encoder"], obs, lix_context)
    q = nets.critic.apply(critic_group["critic"], features, action)
    return critic_loss(q, target), (features, q)


def drqv2_actor_loss(nets, actor_params, critic_params, features: jnp.ndarray,
                     stddev: jnp.ndarray, stddev_clip: float, key: jax.Array,
                     value_fn: ValueFn) -> jnp.ndarray:
    """DrQ-v2's actor loss -mean V(h, mu(h) + clipped noise) on the online critics.
    features [B, D] (from the encoder, gradient stopped by the caller) -> scalar."""
    action, _ = nets.sample(actor_params, features, key, Exploration(stddev, stddev_clip))
    q = nets.critic.apply(critic_params, features, action)
    return deterministic_actor_loss(value_fn(q))


# ----------------------------------------------------------------------------- DrQ
def drq_td_target(nets, params: dict, target_params: dict, next_obs_copies: jnp.ndarray,
                  reward: jnp.ndarray, discount: jnp.ndarray, key: jax.Array,
                  value_fn: ValueFn) -> jnp.ndarray:
    """DrQ's K-averaged soft target (`soft_k_averaged_target`).

    next_obs_copies [K * B, ...]: K augmented copies of next_obs stacked copy-major.
    a'_k ~ pi(online encoder(copy k)); V' = value_fn of the target critics on the target
    encoder's features (the online encoder when target_params has none). -> y [B, *out]."""
    num_copies = next_obs_copies.shape[0] // reward.shape[0]
    online_features = nets.encoder.apply(params["encoder"], next_obs_copies)
    next_action, next_log_prob = nets.sample(params["actor"], online_features, key)
    target_encoder = target_params.get("encoder", params["encoder"])
    target_features = nets.encoder.apply(target_encoder, next_obs_copies)
    next_q = nets.critic.apply(target_params["critic"], target_features, next_action)
    per_copy = lambda x: x.reshape(num_copies, reward.shape[0], *x.shape[1:])  # [K * B, ...]
                                                                     # -> [K, B, ...]
    return soft_k_averaged_target(reward, discount, per_copy(value_fn(next_q)),
                                  per_copy(next_log_prob), jnp.exp(params["log_alpha"]))


def drq_critic_loss(nets, critic_group: dict, obs_copies: jnp.ndarray, action: jnp.ndarray,
                    target: jnp.ndarray, critic_loss: CriticLoss = ensemble_mse,
                    ) -> tuple[jnp.ndarray, jnp.ndarray]:
    """DrQ's critic loss (`m_averaged_critic_loss` of the critic kind's `critic_loss`) over
    obs_copies [M * B, ...], M augmented copies of obs stacked copy-major; action [B, A],
    target [B, *out]. Returns (loss, Q [N, M, B, *out])."""
    num_copies = obs_copies.shape[0] // action.shape[0]
    features = nets.encoder.apply(critic_group["encoder"], obs_copies)
    q = nets.critic.apply(critic_group["critic"], features, jnp.tile(action, (num_copies, 1)))
    q = q.reshape(q.shape[0], num_copies, action.shape[0], *q.shape[2:])
    return m_averaged_critic_loss(q, target, critic_loss), q


def drq_actor_loss(nets, actor_params, critic_params, features: jnp.ndarray,
                   key: jax.Array, value_fn: ValueFn, alpha: jnp.ndarray
                   ) -> tuple[jnp.ndarray, jnp.ndarray]:
    """DrQ's actor loss `soft_actor_loss` with a ~ pi(features) drawn by the actor kind.
    features [B, D] without gradient; alpha scalar. Returns (loss, log pi(a|s) [B])."""
    action, log_prob = nets.sample(actor_params, features, key)
    q = nets.critic.apply(critic_params, features, action)
    return soft_actor_loss(value_fn(q), log_prob, alpha), log_prob


def drq_actor_and_temperature_loss(nets, actor_and_alpha: dict, critic_params,
                                   features: jnp.ndarray, key: jax.Array, value_fn: ValueFn,
                                   target_entropy: float):
    """`drq_actor_loss` plus `temperature_loss` on the same draw, for one gradient of both
    (the update takes them as two steps; their gradients are the same: each loss stops the
    other's parameters' gradient).

    actor_and_alpha: {'actor', 'log_alpha'}; features [B, D] without gradient.
    Returns (actor loss + temperature loss, (actor loss, temperature loss, entropy
    estimate -mean log pi))."""
    log_alpha = actor_and_alpha["log_alpha"]
    actor_loss, log_prob = drq_actor_loss(nets, actor_and_alpha["actor"], critic_params,
                                          features, key, value_fn, jnp.exp(log_alpha))
    alpha_loss = temperature_loss(log_alpha, log_prob, target_entropy)
    return actor_loss + alpha_loss, (actor_loss, alpha_loss, -jnp.mean(log_prob))


# ----------------------------------------------------------------------------- SEER
def seer_latent_capacity(replay_capacity: int, frame_bytes: int, latent_dim: int,
                         num_copies: int, total_steps: int) -> int:
    """SEER's latent replay capacity c' = min(total_steps, floor(C * p / (l * 4 * 2 * m))):
    the memory of C stored frames of p bytes (3 * H * W) holds that many timesteps of
    m copies of two float32 latents of dimension l (critic's and actor's), capped by the
    run's agent steps. A run stores a few timesteps more than its steps (one first timestep
    per episode), and c' may be below what the pixel replay holds (small images, wide
    latents): the latent replay then keeps the newest timesteps that fit, as its ring does."""
    return min(total_steps,
               int(np.floor(replay_capacity * frame_bytes / (latent_dim * 4 * 2 * num_copies))))
