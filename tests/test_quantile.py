"""GPL's quantile critics (critic='gpl_quantile') against independent numpy references:
the quantile Huber loss and the sorted-W1 uncertainty ported as brute-force loops, the
K = 1 reduction to GPL's squared error (factor 1/4), the per-quantile target with SAC's
entropy term, beta's dual step on the mean quantile TD error and the actor's value with the
optimistic shift, one critic step moved as numpy's gradient says, both bases and SEER
updating, and the config's refusals."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from dm_env import specs

from pixelzoo import agents
from pixelzoo.agents import common, ddpg, losses, parts
from pixelzoo.replay import Batch
from tests import numpy_reference as ref
from tests.test_steps import (ACTION, ACTION_SPEC, OBS, STATE_SPEC, TINY, adam_first_step,
                              close)

B, A, N, K = 6, 2, 3, 5
RNG = np.random.default_rng(19)


# ----------------------------------------------------------------------------- numpy ports
def np_quantile_huber_loss(q: np.ndarray, target: np.ndarray, kappa: float) -> float:
    """Loops: (1/B) sum_{b, i, j, k} |tau_j - 1{e < 0}| H_kappa(e), e = y_bk - theta_ibj."""
    num_critics, batch, num_quantiles = q.shape
    total = 0.0
    for b in range(batch):
        for i in range(num_critics):
            for j in range(num_quantiles):
                tau = (j + 0.5) / num_quantiles
                for k in range(target.shape[1]):
                    e = target[b, k] - q[i, b, j]
                    huber = 0.5 * e * e if abs(e) <= kappa else kappa * (abs(e) - 0.5 * kappa)
                    total += abs(tau - (1.0 if e < 0 else 0.0)) * huber
    return total / batch


def np_quantile_loss_gradient(q: np.ndarray, target: np.ndarray, kappa: float) -> np.ndarray:
    """d loss / d theta_ibj = -(1/B) sum_k |tau_j - 1{e < 0}| clip(e, -kappa, kappa)."""
    num_quantiles = q.shape[2]
    taus = (np.arange(num_quantiles) + 0.5) / num_quantiles
    e = target[None, :, None, :] - q[..., None]                      # [N, B, K, K']
    weight = np.abs(taus[None, None, :, None] - (e < 0))
    return -(weight * np.clip(e, -kappa, kappa)).sum(-1) / q.shape[1]


def np_w1_uncertainty(q: np.ndarray) -> np.ndarray:
    """Loops: mean over ordered pairs i != j of (1/K) sum_k |sorted_i,k - sorted_j,k|."""
    num_critics, batch, _ = q.shape
    u = np.zeros(batch)
    for b in range(batch):
        for i in range(num_critics):
            for j in range(num_critics):
                if i != j:
                    u[b] += np.mean(np.abs(np.sort(q[i, b]) - np.sort(q[j, b])))
    return u / (num_critics * (num_critics - 1))


def np_penalised_quantiles(q: np.ndarray, beta: float) -> np.ndarray:
    """[B, K]: the k-th sorted quantile averaged over critics minus beta * u."""
    return np.sort(q, axis=-1).mean(0) - beta * np_w1_uncertainty(q)[:, None]


# ----------------------------------------------------------------------------- formulas
@pytest.mark.parametrize("kappa", [0.5, 1.0, 3.0])
def test_the_quantile_huber_loss_and_its_gradient_match_the_numpy_port(kappa):
    q = RNG.normal(size=(N, B, K)) * 1.5
    target = RNG.normal(size=(B, K)) * 1.5
    errors = np.abs(target[None, :, None, :] - q[..., None])
    assert (errors <= kappa).any() and (errors > kappa).any()       # both Huber branches
    got = losses.quantile_ensemble_loss(jnp.asarray(q, jnp.float32),
                                        jnp.asarray(target, jnp.float32), kappa)
    close(got, np_quantile_huber_loss(q, target, kappa), rtol=1e-5)
    grad = jax.grad(losses.quantile_ensemble_loss)(jnp.asarray(q, jnp.float32),
                                                   jnp.asarray(target, jnp.float32), kappa)
    close(grad, np_quantile_loss_gradient(q, target, kappa), rtol=1e-4, atol=1e-6)


def test_one_quantile_and_a_large_kappa_give_a_quarter_of_gpls_squared_error():
    """K = 1, kappa >= max |e|: rho = |1/2 - 1{e < 0}| * e^2 / 2 = e^2 / 4 for every e, so
    the loss is exactly ensemble_mse / 4 (GPL's critic loss: the sum over critics of the
    batch-mean squared error)."""
    q = RNG.normal(size=(N, B)).astype(np.float32) * 2
    target = RNG.normal(size=B).astype(np.float32) * 2
    quantile = losses.quantile_ensemble_loss(jnp.asarray(q[..., None]),
                                             jnp.asarray(target[:, None]), kappa=100.0)
    mse = losses.ensemble_mse(jnp.asarray(q), jnp.asarray(target))
    close(quantile, float(mse) / 4, rtol=1e-6)
    close(mse, ((q - target) ** 2).mean(1).sum(), rtol=1e-6)
    # With kappa below the largest error, the linear branch makes it smaller.
    assert float(losses.quantile_ensemble_loss(jnp.asarray(q[..., None]),
                                               jnp.asarray(target[:, None]), 0.1)) < \
        float(mse) / 4 - 1e-3


def test_the_sorted_w1_uncertainty_and_the_penalised_values_match_the_numpy_port():
    q = RNG.normal(size=(N, B, K))
    close(losses.sorted_quantile_uncertainty(jnp.asarray(q, jnp.float32)),
          np_w1_uncertainty(q))
    # Sorting: shuffling one critic's outputs changes nothing.
    shuffled = q.copy()
    shuffled[1] = shuffled[1][:, RNG.permutation(K)]
    close(losses.sorted_quantile_uncertainty(jnp.asarray(shuffled, jnp.float32)),
          np_w1_uncertainty(q))
    close(losses.quantile_penalised_value(jnp.asarray(shuffled, jnp.float32), 0.7),
          np_penalised_quantiles(q, 0.7))
    close(losses.quantile_penalised_mean(jnp.asarray(q, jnp.float32), 0.7),
          q.mean(axis=(0, 2)) - 0.7 * np_w1_uncertainty(q))
    # One quantile each: GPL's scalar uncertainty and value.
    close(losses.sorted_quantile_uncertainty(jnp.asarray(q[..., :1], jnp.float32)),
          losses.ensemble_uncertainty(jnp.asarray(q[..., 0], jnp.float32)))


def test_the_per_quantile_targets_carry_reward_discount_and_the_entropy_term():
    reward, discount = RNG.uniform(size=B), np.full(B, 0.97) * (RNG.uniform(size=B) > 0.2)
    next_values = RNG.normal(size=(2, B, K))                          # 2 target augmentations
    log_probs = RNG.normal(size=(2, B))
    as32 = lambda x: jnp.asarray(x, jnp.float32)
    close(losses.bootstrapped_target(as32(reward), as32(discount), as32(next_values[0])),
          reward[:, None] + discount[:, None] * next_values[0])
    want = reward[:, None] + discount[:, None] * np.mean(
        next_values - 0.3 * log_probs[..., None], axis=0)
    close(losses.soft_k_averaged_target(as32(reward), as32(discount), as32(next_values),
                                        as32(log_probs), 0.3), want)


def test_beta_steps_on_the_mean_quantile_td_error_and_the_actor_gets_the_shifted_beta():
    config = agents.build_config("gpl_quantile", optimism_shift=-0.2, optimism_decay_steps=1000)
    kind = parts.CRITICS["gpl_quantile"]
    q, target = RNG.normal(size=(N, B, K)), RNG.normal(size=(B, K)) + 0.3
    beta = jnp.float32(0.5)
    opt_states = {"beta": kind.learned_scalars(config)["beta"][1].init(beta)}
    result = kind.step(config, {"beta": beta}, opt_states, jnp.asarray(q, jnp.float32),
                       jnp.asarray(target, jnp.float32), jnp.int32(250))
    mean_td_error = np.mean([q[i, b, j] - target[b, k] for i in range(N) for b in range(B)
                             for j in range(K) for k in range(K)])
    close(result.metrics["td_error_mean"], mean_td_error)
    close(result.params["beta"] - 0.5, adam_first_step(mean_td_error, config.gpl_beta_lr),
          rtol=1e-3, atol=1e-9)
    beta_pi = 0.5 - 0.2 * (1 - 250 / 1000)
    close(result.metrics["beta_actor"], beta_pi)
    close(result.actor_value_fn(jnp.asarray(q, jnp.float32)),
          q.mean(axis=(0, 2)) - beta_pi * np_w1_uncertainty(q))


# ----------------------------------------------------------------------------- steps
@pytest.mark.slow(5)
def test_a_ddpg_critic_step_on_quantiles_is_one_adam_step_on_the_numpy_gradient():
    config = agents.build_config("gpl_quantile", **TINY, num_critics=N, num_quantiles=K,
                                 quantile_kappa=0.5)
    setup = common.make_setup(config, STATE_SPEC, A)
    state = common.init_state(setup, jax.random.key(1))
    target = RNG.normal(size=(B, K)).astype(np.float32)
    step = jax.jit(functools.partial(ddpg.critic_step, setup), static_argnums=5)
    group, _, _, _, q, loss = step(state.params, state.opt_states["critic"], OBS, ACTION,
                                   target, None)
    p = ref.np_params(state.params)
    want_q = ref.critic_outputs(p["critic"], OBS, ACTION)            # [N, B, K]
    assert want_q.shape == (N, B, K)
    close(q, want_q)
    close(loss, np_quantile_huber_loss(want_q, target, 0.5), rtol=1e-4)
    # d loss / d (critic i's last bias for quantile j) = sum_b d loss / d theta_ibj.
    grad = np_quantile_loss_gradient(want_q, target, 0.5).sum(1)      # [N, K]
    bias = lambda params: np.asarray(params["params"]["q_heads"]["Dense_2"]["bias"])
    close(bias(group["critic"]) - bias(state.params["critic"]),
          adam_first_step(grad, config.lr), rtol=1e-3, atol=1e-9)


IMAGE = 16
PIXEL_SPEC = specs.Array((IMAGE, IMAGE, 9), np.uint8, "pixels")


def random_batch(obs_shape, dtype, rng) -> Batch:
    draw = (lambda: rng.integers(0, 256, (B, *obs_shape), dtype=np.uint8)) \
        if dtype == np.uint8 else (lambda: rng.normal(size=(B, *obs_shape)).astype(dtype))
    return Batch(obs=draw(), action=rng.uniform(-1, 1, (B, A)).astype(np.float32),
                 reward=rng.uniform(size=B).astype(np.float32),
                 discount=np.full(B, 0.97, np.float32), next_obs=draw())


def check_beta(metrics, beta_before: float, lr: float) -> None:
    """Adam's first step moves beta by lr against the sign of the mean TD error."""
    close(metrics["beta"] - beta_before,
          -lr * np.sign(float(metrics["td_error_mean"])), rtol=1e-3, atol=1e-9)


def check_beta_continues(config, state, metrics) -> None:
    """beta's optimiser continues from its state on the gradient td_error_mean."""
    optimizer = parts.CRITICS["gpl_quantile"].learned_scalars(config)["beta"][1]
    updates, _ = optimizer.update(metrics["td_error_mean"], state.opt_states["beta"],
                                  state.params["beta"])
    close(metrics["beta"], state.params["beta"] + updates, rtol=1e-6)


@pytest.mark.slow(13)
def test_the_ddpg_base_updates_with_the_shift_and_then_seer_trains_the_heads():
    agent = agents.make("gpl_quantile", PIXEL_SPEC, ACTION_SPEC, hidden_dim=16, feature_dim=4,
                        batch_size=B, num_critics=N, num_quantiles=K, optimism_shift=-0.3,
                        optimism_decay_steps=8000, seer_freeze_frames=8, seer_num_copies=2,
                        replay_capacity=100)
    state = agent.init(jax.random.key(0))
    rng = np.random.default_rng(0)
    state, metrics = jax.jit(agent.update)(state, random_batch(PIXEL_SPEC.shape, np.uint8, rng),
                                           jax.random.key(1))
    check_beta(metrics, 0.5, agent.config.gpl_beta_lr)
    close(metrics["beta_actor"], 0.5 - 0.3 * (1 - 2000 / 8000))     # agent step 4000 / 2
    assert state.params["critic"]["params"]["q_heads"]["Dense_2"]["bias"].shape == (N, K)
    frozen = agent.seer.freeze(state)
    obs = rng.integers(0, 256, (B, *PIXEL_SPEC.shape), dtype=np.uint8)
    latents = np.asarray(jax.jit(agent.seer.encode_latents)(frozen, obs, jax.random.key(2)))
    batch = Batch(latents, rng.uniform(-1, 1, (B, A)).astype(np.float32),
                  rng.random(B).astype(np.float32), np.full(B, 0.97, np.float32),
                  latents[::-1].copy())
    new, metrics = jax.jit(agent.seer.update_latent)(frozen, batch, jax.random.key(3))
    check_beta_continues(agent.config, frozen, metrics)
    for group in ("encoder", "critic"):
        for path, before in jax.tree_util.tree_leaves_with_path(frozen.params[group]):
            after = functools.reduce(lambda tree, entry: tree[entry.key], path,
                                     new.params[group])
            frozen_leaf = group == "encoder" or "Trunk_0" in jax.tree_util.keystr(path)
            assert np.array_equal(before, after) == frozen_leaf, jax.tree_util.keystr(path)


@pytest.mark.slow(6)
def test_the_sac_base_target_is_the_numpy_soft_quantile_target():
    agent = agents.make("drq", STATE_SPEC, ACTION_SPEC, **TINY, critic="gpl_quantile",
                        num_critics=N, num_quantiles=K)
    state = agent.init(jax.random.key(0))
    batch = random_batch(STATE_SPEC.shape, np.float32, np.random.default_rng(1))
    key = jax.random.key(2)
    new, metrics = jax.jit(agent.update)(state, batch, key)
    key_target_action = jax.random.split(jax.random.split(key, 3)[0])[1]
    copies = agent.config.num_target_augs
    p, target_p = ref.np_params(state.params), ref.np_params(state.target_params)
    next_obs = np.concatenate([batch.next_obs] * copies)              # no augmentation
    mean, log_std = ref.gaussian_actor(p["actor"], next_obs, agent.config.log_std_min,
                                       agent.config.log_std_max)
    pre_tanh = mean + np.exp(log_std) * np.asarray(jax.random.normal(key_target_action,
                                                                     mean.shape))
    log_prob = (-0.5 * ((pre_tanh - mean) / np.exp(log_std)) ** 2 - log_std
                - 0.5 * np.log(2 * np.pi) - np.log(1 - np.tanh(pre_tanh) ** 2)).sum(-1)
    next_q = ref.critic_outputs(target_p["critic"], next_obs, np.tanh(pre_tanh))
    soft = np_penalised_quantiles(next_q, 0.5) - agent.config.init_temperature * log_prob[:, None]
    target = batch.reward[:, None] + batch.discount[:, None] * soft.reshape(copies, B, K).mean(0)
    close(metrics["target_q_mean"], target.mean(), rtol=1e-4)
    check_beta(metrics, 0.5, agent.config.gpl_beta_lr)
    assert np.isfinite(float(metrics["actor_loss"])) or float(metrics["actor_updated"]) == 0


# ----------------------------------------------------------------------------- config
@pytest.mark.parametrize("overrides, message", [
    (dict(num_quantiles=0), "num_quantiles=0 must be >= 1"),
    (dict(quantile_kappa=0.0), "quantile_kappa=0.0 must be > 0"),
    (dict(quantile_kappa=-1.0), "quantile_kappa=-1.0 must be > 0"),
    (dict(num_critics=1), "critic='gpl_quantile' needs num_critics >= 2"),
    (dict(num_quantiles=5.5), "num_quantiles=5.5 must be of type int"),
    (dict(critic="twin", optimism_shift=-0.1), "critic='twin' has none"),
])
def test_bad_quantile_configs_are_refused_with_a_message(overrides, message):
    with pytest.raises(ValueError, match=message):
        agents.build_config("gpl_quantile", **overrides)


def test_the_preset_is_gpl_on_quantile_critics_and_takes_the_shift():
    config = agents.build_config("gpl_quantile", optimism_shift=-0.5)
    assert (config.critic, config.num_quantiles, config.quantile_kappa) == \
        ("gpl_quantile", 51, 1.0)
    assert config.base == "ddpg" and config.gpl_learn_beta
