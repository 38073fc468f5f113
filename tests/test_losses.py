"""Each loss and target of agents/losses.py called directly on a hand-made batch, against
numpy: the formulas, then the network-level DrQ-v2 and DrQ losses on tiny state networks
whose forward passes numpy recomputes (tests/numpy_reference.py)."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from dm_env import specs

from pixelzoo import agents
from pixelzoo.agents import losses
from pixelzoo.agents.parts import build_parts, init_params
from tests import numpy_reference as ref

RNG = np.random.default_rng(0)
B, N, A, K = 6, 3, 2, 2
Q = RNG.normal(size=(N, B)).astype(np.float32)
REWARD = RNG.uniform(0, 1, B).astype(np.float32)
DISCOUNT = np.full(B, 0.99 ** 3, np.float32)
LOG_PROB = RNG.normal(size=B).astype(np.float32)


def close(got, want, rtol=1e-5, atol=1e-6):
    np.testing.assert_allclose(np.asarray(got), want, rtol=rtol, atol=atol)


# ----------------------------------------------------------------------------- formulas
def test_values_twin_min_and_gpl_penalised():
    close(losses.twin_min_value(Q[:2]), np.minimum(Q[0], Q[1]))
    pairs = list(itertools.permutations(range(N), 2))
    u = np.mean([np.abs(Q[i] - Q[j]) for i, j in pairs], axis=0)
    close(losses.gpl_penalised_value(Q, 0.3), Q.mean(0) - 0.3 * u)
    # N = 2, beta = 0.5: the penalised mean is exactly the minimum.
    close(losses.gpl_penalised_value(Q[:2], 0.5), np.minimum(Q[0], Q[1]))


def test_bootstrapped_target_and_ensemble_mse():
    value = RNG.normal(size=B).astype(np.float32)
    target = REWARD + DISCOUNT * value
    close(losses.bootstrapped_target(REWARD, DISCOUNT, value), target)
    close(losses.ensemble_mse(Q, target), sum(np.mean((Q[i] - target) ** 2) for i in range(N)))
    # No gradient flows into the target.
    grad = jax.grad(lambda v: jnp.sum(losses.bootstrapped_target(REWARD, DISCOUNT, v)))(value)
    close(grad, np.zeros(B))


def test_actor_losses_and_temperature_loss():
    value = RNG.normal(size=B).astype(np.float32)
    close(losses.deterministic_actor_loss(value), -value.mean())
    alpha = 0.2
    close(losses.soft_actor_loss(value, LOG_PROB, alpha), np.mean(alpha * LOG_PROB - value))
    assert float(jax.grad(losses.soft_actor_loss, argnums=2)(value, LOG_PROB, alpha)) == 0.0
    log_alpha, target_entropy = np.float32(np.log(0.1)), -float(A)
    want = np.mean(0.1 * (-LOG_PROB - target_entropy))
    close(losses.temperature_loss(log_alpha, LOG_PROB, target_entropy), want)
    # d/dlog_alpha of alpha * c is alpha * c: the loss itself; log pi gets no gradient.
    close(jax.grad(losses.temperature_loss)(log_alpha, LOG_PROB, target_entropy), want)
    close(jax.grad(losses.temperature_loss, argnums=1)(log_alpha, LOG_PROB, target_entropy),
          np.zeros(B))


def test_drq_k_averaged_target_and_m_averaged_critic_loss():
    next_values = RNG.normal(size=(K, B)).astype(np.float32)
    next_log_probs = RNG.normal(size=(K, B)).astype(np.float32)
    alpha = 0.1
    soft = np.mean([next_values[k] - alpha * next_log_probs[k] for k in range(K)], axis=0)
    target = REWARD + DISCOUNT * soft
    close(losses.soft_k_averaged_target(REWARD, DISCOUNT, next_values, next_log_probs, alpha),
          target)
    q = RNG.normal(size=(N, K, B)).astype(np.float32)     # M = K copies here
    want = np.mean([sum(np.mean((q[i, m] - target) ** 2) for i in range(N)) for m in range(K)])
    close(losses.m_averaged_critic_loss(q, target), want)


def test_gpl_beta_loss_value_and_gradient():
    target = RNG.normal(size=B).astype(np.float32)
    td_error = np.mean(Q - target[None])
    close(losses.gpl_beta_loss(0.5, Q, target), 0.5 * td_error)
    close(jax.grad(losses.gpl_beta_loss)(0.5, Q, target), td_error)     # the mean TD error
    close(jax.grad(losses.gpl_beta_loss, argnums=1)(0.5, Q, target), np.zeros((N, B)))


@pytest.mark.parametrize("p, nd_gradient, want", [
    (0.5, 0.3, 0.5 - 2e-3),         # Adam's first step: lr * sign(g), against the gradient
    (0.5, -0.3, 0.5 + 2e-3),
    (0.001, 0.3, 0.0),              # clamped to [0, 1]
    (0.9995, -0.3, 1.0)])
def test_lix_p_update_is_one_adam_step_then_a_clamp(p, nd_gradient, want):
    optimizer = optax.adam(2e-3, b1=0.5)
    p = jnp.float32(p)
    new_p, _ = losses.lix_p_update(optimizer, p, optimizer.init(p), jnp.float32(nd_gradient))
    close(new_p, want, rtol=1e-5, atol=1e-7)


def test_clipped_noise_action_and_tanh_gaussian_sample():
    mean = RNG.uniform(-1, 1, (B, A)).astype(np.float32)
    key = jax.random.key(4)
    normal = np.asarray(jax.random.normal(key, (B, A)))
    want = np.clip(mean + np.clip(0.5 * normal, -0.3, 0.3), -1 + 1e-6, 1 - 1e-6)
    close(losses.clipped_noise_action(mean, 0.5, 0.3, key), want)
    # Straight-through: the gradient w.r.t. the mean is 1 even where the clamp binds.
    grad = jax.grad(lambda m: jnp.sum(losses.clipped_noise_action(m, 5.0, 10.0, key)))(mean)
    close(grad, np.ones((B, A)))
    log_std = RNG.uniform(-2, 0, (B, A)).astype(np.float32)
    action, log_prob = losses.tanh_gaussian_sample(mean, log_std, key)
    want_action, want_log_prob = ref.tanh_gaussian(mean.astype(np.float64), log_std, normal)
    close(action, want_action)
    close(log_prob, want_log_prob, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- networks
STATE_SPEC = specs.Array((5,), np.float32, "state")
TINY = dict(obs_type="state", aug="none", hidden_dim=8, feature_dim=4, batch_size=B)


def nets_and_params(preset: str, **overrides):
    config = agents.build_config(preset, **TINY, **overrides)
    nets = build_parts(config, STATE_SPEC, A)
    params = init_params(nets, STATE_SPEC, A, jax.random.key(1))
    return config, nets, params, ref.np_params(params)


def batch_arrays():
    rng = np.random.default_rng(7)
    obs, next_obs = (rng.normal(size=(B, 5)).astype(np.float32) for _ in range(2))
    return obs, rng.uniform(-1, 1, (B, A)).astype(np.float32), next_obs


def test_drqv2_td_target_critic_and_actor_losses_match_numpy():
    config, nets, params, p = nets_and_params("drqv2")
    obs, action, next_obs = batch_arrays()
    key, std, clip = jax.random.key(2), 0.4, 0.3

    def noisy(mean):
        noise = np.clip(std * np.asarray(jax.random.normal(key, mean.shape)), -clip, clip)
        return np.clip(mean + noise, -1 + 1e-6, 1 - 1e-6)

    target, next_q = losses.drqv2_td_target(
        nets, params["encoder"], params["actor"], params["critic"], next_obs, REWARD, DISCOUNT,
        std, clip, key, losses.twin_min_value)
    want_next_q = ref.critic_ensemble(p["critic"], next_obs,
                                      noisy(ref.deterministic_actor(p["actor"], next_obs)))
    want_target = REWARD + DISCOUNT * want_next_q.min(0)
    close(next_q, want_next_q, rtol=1e-4, atol=1e-5)
    close(target, want_target, rtol=1e-4, atol=1e-5)

    group = {"encoder": params["encoder"], "critic": params["critic"]}
    loss, (features, q) = losses.drqv2_critic_loss(nets, group, obs, action, want_target)
    want_q = ref.critic_ensemble(p["critic"], obs, action)
    close(q, want_q, rtol=1e-4, atol=1e-5)
    close(loss, ((want_q - want_target) ** 2).mean(1).sum(), rtol=1e-4, atol=1e-5)

    actor_loss = losses.drqv2_actor_loss(nets, params["actor"], params["critic"], features,
                                         std, clip, key, losses.twin_min_value)
    want_action = noisy(ref.deterministic_actor(p["actor"], obs))
    close(actor_loss, -ref.critic_ensemble(p["critic"], obs, want_action).min(0).mean(),
          rtol=1e-4, atol=1e-5)


def test_drq_target_critic_and_actor_temperature_losses_match_numpy():
    config, nets, params, p = nets_and_params("drq")
    params["log_alpha"] = jnp.float32(np.log(0.1))
    obs, action, next_obs = batch_arrays()
    copies = np.concatenate([next_obs, next_obs + 0.1])   # K = 2 "augmented" copies
    key = jax.random.key(5)
    target_params = {"critic": params["critic"]}
    target = losses.drq_td_target(nets, params, target_params, copies, REWARD, DISCOUNT, key,
                                  losses.twin_min_value)
    normal = np.asarray(jax.random.normal(key, (K * B, A)))
    mean, log_std = ref.gaussian_actor(p["actor"], copies, config.log_std_min,
                                       config.log_std_max)
    next_action, next_log_prob = ref.tanh_gaussian(mean, log_std, normal)
    soft = ref.critic_ensemble(p["critic"], copies, next_action).min(0) - 0.1 * next_log_prob
    want_target = REWARD + DISCOUNT * soft.reshape(K, B).mean(0)
    close(target, want_target, rtol=1e-4, atol=1e-4)

    group = {"encoder": params["encoder"], "critic": params["critic"]}
    obs_copies = np.concatenate([obs, obs - 0.2])          # M = 2
    loss, q = losses.drq_critic_loss(nets, group, obs_copies, action, want_target)
    want_q = np.stack([ref.critic_ensemble(p["critic"], c, action) for c in (obs, obs - 0.2)],
                      axis=1)                               # [N, M, B]
    close(q, want_q, rtol=1e-4, atol=1e-5)
    close(loss, np.mean([((want_q[:, m] - want_target) ** 2).mean(1).sum() for m in range(2)]),
          rtol=1e-4, atol=1e-5)

    both = {"actor": params["actor"], "log_alpha": params["log_alpha"]}
    total, (actor_loss, alpha_loss, entropy) = losses.drq_actor_and_temperature_loss(
        nets, both, params["critic"], obs, key, losses.twin_min_value, -float(A))
    normal = np.asarray(jax.random.normal(key, (B, A)))
    mean, log_std = ref.gaussian_actor(p["actor"], obs, config.log_std_min, config.log_std_max)
    pi_action, log_prob = ref.tanh_gaussian(mean, log_std, normal)
    value = ref.critic_ensemble(p["critic"], obs, pi_action).min(0)
    close(actor_loss, np.mean(0.1 * log_prob - value), rtol=1e-4, atol=1e-4)
    close(alpha_loss, np.mean(0.1 * (-log_prob + A)), rtol=1e-4, atol=1e-4)
    close(entropy, -log_prob.mean(), rtol=1e-4, atol=1e-4)
    close(total, actor_loss + alpha_loss, rtol=1e-6)
