"""Each step of an update called alone on a hand-made state and batch, against numpy
(tests/numpy_reference.py): the base's critic and actor steps, the temperature, pessimism,
LIX and target steps, SEER's frozen optimisers, and a toy critic kind registered from
outside the bases.

One Adam step from fresh moments moves a parameter by -lr * g / (|g| + eps), so a step's
new parameters are checked through coordinates whose gradient g numpy computes exactly:
the last layer's biases of the critic heads (d/db_i of sum_i mean_b (Q_i - y)^2 is
2 mean_b (Q_i - y)), the temperature (its loss is its own gradient) and GPL's beta."""
import copy

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from dm_env import specs

from pixelzoo import agents
from pixelzoo.agents import common, ddpg, losses, parts, sac, seer, steps
from pixelzoo.replay import Batch
from tests import numpy_reference as ref

B, A = 6, 2
STATE_SPEC = specs.Array((5,), np.float32, "state")
ACTION_SPEC = specs.BoundedArray((A,), np.float32, -1.0, 1.0, "action")
TINY = dict(obs_type="state", aug="none", hidden_dim=8, feature_dim=4, batch_size=B)
RNG = np.random.default_rng(3)
OBS = RNG.normal(size=(B, 5)).astype(np.float32)
ACTION = RNG.uniform(-1, 1, (B, A)).astype(np.float32)
TARGET = RNG.normal(size=B).astype(np.float32)


def close(got, want, rtol=1e-4, atol=1e-5):
    np.testing.assert_allclose(np.asarray(got), want, rtol=rtol, atol=atol)


def adam_first_step(grad, lr: float, eps: float = 1e-8):
    return -lr * grad / (np.abs(grad) + eps)


def setup_and_state(preset: str, **overrides):
    config = agents.build_config(preset, **{**TINY, **overrides})
    setup = common.make_setup(config, STATE_SPEC, A)
    return setup, common.init_state(setup, jax.random.key(1))


def head_bias(critic_params):
    """The critic heads' last-layer biases [N]."""
    heads = critic_params["params"]["q_heads"]
    return np.asarray(heads[f"Dense_{len(heads) - 1}"]["bias"])[:, 0]


def unchanged(before, after):
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True):
        np.testing.assert_array_equal(a, b)


def test_ddpg_critic_step_is_one_adam_step_on_the_numpy_loss_and_changes_no_argument():
    setup, state = setup_and_state("drqv2")
    params_before = copy.deepcopy(jax.device_get(state.params))
    group, _, nd_gradient, features, q, loss = ddpg.critic_step(
        setup, state.params, state.opt_states["critic"], OBS, ACTION, TARGET, None)
    p = ref.np_params(state.params)
    want_q = ref.critic_ensemble(p["critic"], OBS, ACTION)
    close(q, want_q)
    close(loss, ((want_q - TARGET) ** 2).mean(1).sum())
    close(features, OBS)                      # the state encoder passes observations through
    assert nd_gradient is None
    grad = 2 * (want_q - TARGET).mean(1)      # d loss / d (head i's last bias)
    close(head_bias(group["critic"]) - head_bias(state.params["critic"]),
          adam_first_step(grad, setup.config.lr), rtol=1e-3, atol=1e-9)
    unchanged(params_before, state.params)


def test_sac_critic_step_averages_the_m_copies():
    setup, state = setup_and_state("drq")
    copies = np.concatenate([OBS, OBS - 0.2])                         # M = 2
    group, _, q, loss = sac.critic_step(setup, state.params, state.opt_states["critic"],
                                        copies, ACTION, TARGET)
    p = ref.np_params(state.params)
    want_q = np.stack([ref.critic_ensemble(p["critic"], c, ACTION) for c in (OBS, OBS - 0.2)],
                      axis=1)                                          # [N, M, B]
    close(q, want_q)
    close(loss, np.mean([((want_q[:, m] - TARGET) ** 2).mean(1).sum() for m in range(2)]))
    grad = np.mean([2 * (want_q[:, m] - TARGET).mean(1) for m in range(2)], axis=0)
    close(head_bias(group["critic"]) - head_bias(state.params["critic"]),
          adam_first_step(grad, setup.config.lr), rtol=1e-3, atol=1e-9)


def test_ddpg_actor_step_loss_and_its_gate():
    setup, state = setup_and_state("drqv2", actor_update_every=2)
    exploration = parts.Exploration(jnp.float32(0.05), 0.3)
    key = jax.random.key(4)
    args = (state.params["actor"], state.opt_states["actor"], state.params["critic"], OBS,
            exploration, losses.twin_min_value, key)
    actor, _, metrics = ddpg.actor_step(setup, jnp.int32(0), *args)
    p = ref.np_params(state.params)
    noise = np.clip(0.05 * np.asarray(jax.random.normal(key, (B, A))), -0.3, 0.3)
    action = ref.deterministic_actor(p["actor"], OBS) + noise
    assert np.all(np.abs(action) < 1)                                 # no clamp in play
    close(metrics["actor_loss"], -ref.critic_ensemble(p["critic"], OBS, action).min(0).mean())
    assert float(metrics["actor_updated"]) == 1.0
    assert any(np.any(a != b) for a, b in zip(jax.tree.leaves(actor),
                                              jax.tree.leaves(state.params["actor"])))
    skipped, _, metrics = ddpg.actor_step(setup, jnp.int32(1), *args)
    unchanged(state.params["actor"], skipped)
    assert np.isnan(float(metrics["actor_loss"])) and float(metrics["actor_updated"]) == 0.0


def test_sac_actor_step_then_temperature_step_on_its_draw():
    setup, state = setup_and_state("drq")
    config, key = setup.config, jax.random.key(5)
    log_alpha = state.params["log_alpha"]
    _, _, log_prob, metrics = sac.actor_step(
        setup, state.params["actor"], state.opt_states["actor"], state.params["critic"],
        log_alpha, OBS, losses.twin_min_value, key)
    p = ref.np_params(state.params)
    mean, log_std = ref.gaussian_actor(p["actor"], OBS, config.log_std_min, config.log_std_max)
    action, want_log_prob = ref.tanh_gaussian(mean, log_std,
                                              np.asarray(jax.random.normal(key, (B, A))))
    alpha = np.exp(float(log_alpha))
    value = ref.critic_ensemble(p["critic"], OBS, action).min(0)
    close(log_prob, want_log_prob, rtol=1e-4, atol=1e-4)
    close(metrics["actor_loss"], np.mean(alpha * want_log_prob - value), atol=1e-4)
    close(metrics["entropy"], -want_log_prob.mean(), atol=1e-4)

    new_log_alpha, _, alpha_metrics = steps.temperature_step(
        setup.optimizers.alpha, log_alpha, state.opt_states["alpha"], want_log_prob,
        -float(A))
    want_loss = np.mean(alpha * (-want_log_prob + A))
    close(alpha_metrics["alpha_loss"], want_loss, atol=1e-5)
    close(new_log_alpha - log_alpha, adam_first_step(want_loss, config.lr), rtol=1e-3)


def test_pessimism_step_twin_passes_through_and_gpl_steps_beta():
    q = RNG.normal(size=(3, B)).astype(np.float32)
    setup, state = setup_and_state("drqv2")
    params, opt_states, value_fn, metrics = steps.pessimism_step(
        setup.config, setup.nets.critic_kind, state.params, state.opt_states, q[:2], TARGET,
        jnp.int32(0))
    assert params is state.params and opt_states is state.opt_states and metrics == {}
    close(value_fn(q[:2]), q[:2].min(0))

    setup, state = setup_and_state("gpl", num_critics=3, optimism_shift=-0.2,
                                   optimism_decay_steps=10_000)
    config = setup.config
    params, opt_states, value_fn, metrics = steps.pessimism_step(
        config, setup.nets.critic_kind, state.params, state.opt_states, q, TARGET,
        jnp.int32(0))
    beta = config.gpl_beta_init
    td_error = float(np.mean(q - TARGET[None]))
    close(metrics["td_error_mean"], td_error)
    close(params["beta"] - beta, adam_first_step(td_error, config.gpl_beta_lr), rtol=1e-3)
    step = config.num_seed_frames // config.action_repeat           # agent step of update 0
    beta_pi = beta - 0.2 * (1 - step / 10_000)
    close(metrics["beta_actor"], beta_pi)
    pairs = [(i, j) for i in range(3) for j in range(3) if i != j]
    u = np.mean([np.abs(q[i] - q[j]) for i, j in pairs], axis=0)
    close(value_fn(q), q.mean(0) - beta_pi * u)
    assert float(state.params["beta"]) == beta                      # the argument is kept


def test_lix_step_moves_p_against_its_dual_gradient_and_not_after_a_freeze():
    config = agents.build_config("alix", hidden_dim=8, feature_dim=4, batch_size=B)
    setup = common.make_setup(config, specs.Array((20, 20, 9), np.uint8), A)
    p = jnp.float32(0.5)
    opt_state = setup.optimizers.lix_p.init(p)
    new_p, _, metrics = steps.lix_step(setup, p, opt_state, jnp.float32(0.2))
    close(new_p, 0.5 + adam_first_step(0.2, config.lix_lr), rtol=1e-5)
    close(metrics["lix_nd"], config.lix_nd_target - 0.2)
    close(metrics["lix_max_shift"], config.lix_max_shift * 0.5)
    frozen_p, _, metrics = steps.lix_step(seer.latent_setup(setup), p, opt_state, None)
    assert float(frozen_p) == 0.5 and "lix_nd" not in metrics


def test_target_step_averages_every_nth_update_and_skips_frozen_leaves():
    setup, state = setup_and_state("drqv2", target_update_every=2, tau=0.25)
    online = jax.tree.map(lambda x: x + 1.0, state.params)
    target = state.target_params
    averaged = steps.target_step(setup.config, jnp.int32(0), target, online)
    for got, t, o in zip(jax.tree.leaves(averaged), jax.tree.leaves(target),
                         jax.tree.leaves(online["critic"])):
        close(got, 0.75 * np.asarray(t) + 0.25 * np.asarray(o), rtol=1e-6)
    unchanged(target, steps.target_step(setup.config, jnp.int32(1), target, online))
    frozen = steps.target_step(setup.config, jnp.int32(0), target, online, frozen=True)
    unchanged(target["critic"]["params"]["Trunk_0"], frozen["critic"]["params"]["Trunk_0"])
    close(head_bias(frozen["critic"]),
          0.75 * head_bias(target["critic"]) + 0.25 * head_bias(online["critic"]), rtol=1e-6)


def test_the_frozen_optimiser_state_continues_the_full_one_on_the_trainable_leaves():
    setup, state = setup_and_state("drqv2")
    group = {"encoder": state.params["encoder"], "critic": state.params["critic"]}
    adam = setup.optimizers.critic
    grads = jax.tree.map(jnp.ones_like, group)
    _, full_state = adam.update(grads, state.opt_states["critic"], group)
    converted = seer.frozen_optimizer_state(adam, full_state, group)
    template = seer.frozen_optimizer(adam).init(group)
    assert jax.tree.structure(converted) == jax.tree.structure(template)
    inner = converted.inner_states[seer.TRAINABLE].inner_state[0]
    assert int(inner.count) == 1
    close(inner.mu["critic"]["params"]["q_heads"]["Dense_2"]["bias"],
          full_state[0].mu["critic"]["params"]["q_heads"]["Dense_2"]["bias"], rtol=0)
    assert isinstance(inner.mu["critic"]["params"]["Trunk_0"]["Dense_0"]["kernel"],
                      optax.MaskedNode)


def _mean_critic() -> parts.CriticKind:
    """A toy critic kind: the value is the mean of the ensemble."""
    return parts.CriticKind(value_fn=lambda config, params: lambda q: jnp.mean(q, axis=0))


@pytest.mark.parametrize("preset", ["drqv2", "drq"])
def test_a_critic_kind_registered_from_outside_trains_on_both_bases(preset):
    agents.register_critic("mean", _mean_critic())
    try:
        agent = agents.make(preset, STATE_SPEC, ACTION_SPEC, critic="mean", num_critics=3,
                            **{**TINY, "nstep": 1})
        state = agent.init(jax.random.key(0))
        rng = np.random.default_rng(1)
        batch = Batch(obs=OBS, action=ACTION, reward=rng.uniform(size=B).astype(np.float32),
                      discount=np.full(B, 0.99, np.float32),
                      next_obs=rng.normal(size=(B, 5)).astype(np.float32))
        update = jax.jit(agent.update)
        key = jax.random.key(2)
        new_state, metrics = update(state, batch, key)
        if preset == "drqv2":                                          # the target by numpy
            key_target = jax.random.split(key, 5)[2]
            p = ref.np_params(state.params)
            std = float(metrics["stddev"])
            noise = np.clip(std * np.asarray(jax.random.normal(key_target, (B, A))), -0.3, 0.3)
            next_action = np.clip(ref.deterministic_actor(p["actor"], batch.next_obs) + noise,
                                  -1 + 1e-6, 1 - 1e-6)
            next_q = ref.critic_ensemble(p["critic"], batch.next_obs, next_action)  # = target
            close(metrics["target_q_mean"],
                  np.mean(batch.reward + batch.discount * next_q.mean(0)))
        new_state, metrics = update(new_state, batch, jax.random.key(3))
        assert int(new_state.update_step) == 2
        skipped = float(metrics["actor_updated"]) == 0.0               # drq: every 2nd update
        assert all(np.isfinite(float(value)) for name, value in metrics.items()
                   if not (skipped and name in common.METRIC_GATES))
    finally:
        parts.CRITICS.pop("mean")
