"""SSPG's update (docs/algorithms.md, SSPG): the `sac` base's DrQ-v2-style steps with the
reasoning-chain actor (agents/rmc.py) and its losses (agents/sspg_losses.py).

Order of one update, as the released code: training and target chain lengths L = ceil(m)
and the minimum acting steps floor(m) - 1 from the running average m; one random shift of
obs and of next_obs; the target from a chain of L steps started at the replayed action on
the next observation (target critics); the critic step (encoder and critics, as DrQ-v2's,
A-LIX's probe included); the LIX step; the critic kind's step (GPL: beta, fixed in the
`sspg` preset); the actor step on a chain of L steps from the replayed action on the
pre-update encoder's features and the temperature step on the same log-densities; the
target step. The acting window's statistics become metrics and the window restarts.
"""
import jax
import jax.numpy as jnp

from pixelzoo.agents import common, ddpg, sspg_losses, steps
from pixelzoo.agents.common import AgentState, Metrics, UpdateSetup
from pixelzoo.agents.parts import ValueFn
from pixelzoo.replay import Batch

sg = jax.lax.stop_gradient


def target_entropy(setup: UpdateSetup, update_step: jnp.ndarray) -> jnp.ndarray:
    """A * linear(target_entropy_start -> target_entropy_end over stddev_steps agent
    steps), per-dimension values (DrQ-v2's exploration horizon)."""
    config = setup.config
    per_dim = common.linear_schedule(config.target_entropy_start, config.target_entropy_end,
                                     config.stddev_steps, common.agent_step(config, update_step))
    return setup.action_dim * per_dim


def actor_and_temperature_steps(setup: UpdateSetup, update_step: jnp.ndarray, params: dict,
                                opt_states: dict, features: jnp.ndarray, start: jnp.ndarray,
                                length: jnp.ndarray, value_fn: ValueFn, key: jax.Array
                                ) -> tuple[dict, dict, Metrics]:
    """The actor step on `sspg_losses.chain_actor_loss` then the temperature step on its
    log-densities, on the updates where update_step % actor_update_every == 0 (else NaN
    metrics, actor_updated=0). features [B, D] without gradient; start [B, A]."""
    config = setup.config
    entropy_target = target_entropy(setup, update_step)

    def run():
        (loss, (log_prob, valid)), grads = jax.value_and_grad(
            sspg_losses.chain_actor_loss, argnums=1, has_aux=True)(
            setup.nets, params["actor"], params["critic"], features, start, length,
            jnp.exp(params["log_alpha"]), key, value_fn, config.sspg_train_max_steps,
            config.sspg_chain_backprop)
        actor, actor_opt = common.apply_optimizer(setup.optimizers.actor, grads,
                                                  opt_states["actor"], params["actor"])
        alpha_loss, alpha_grad = jax.value_and_grad(sspg_losses.chain_temperature_loss)(
            params["log_alpha"], log_prob, valid, entropy_target)
        log_alpha, alpha_opt = common.apply_optimizer(setup.optimizers.alpha, alpha_grad,
                                                      opt_states["alpha"], params["log_alpha"])
        entropy = -sspg_losses.masked_mean(log_prob, valid)
        return ((actor, actor_opt), (log_alpha, alpha_opt)), {
            "actor_loss": loss, "alpha_loss": alpha_loss, "entropy": entropy}

    unchanged = ((params["actor"], opt_states["actor"]),
                 (params["log_alpha"], opt_states["alpha"]))
    ((actor, actor_opt), (log_alpha, alpha_opt)), metrics = common.gated_step(
        update_step % config.actor_update_every == 0, run, unchanged, gate="actor_updated")
    metrics["target_entropy"] = entropy_target
    return ({**params, "actor": actor, "log_alpha": log_alpha},
            {**opt_states, "actor": actor_opt, "alpha": alpha_opt}, metrics)


def acting_metrics(acting: dict) -> tuple[dict, Metrics]:
    """The acting window's metrics (NaN without act calls since the last update) and the
    acting state with the window restarted."""
    count = acting["window_count"]
    acted = count > 0
    per_call = lambda total: jnp.where(acted, total / jnp.maximum(count, 1.0), jnp.nan)
    metrics = {"reasoning_steps_mean": per_call(acting["window_steps_sum"]),
               "reasoning_steps_max": jnp.where(acted, acting["window_steps_max"], jnp.nan),
               "rhat_at_stop_mean": per_call(acting["window_rhat_sum"]),
               "acted_since_update": acted.astype(jnp.float32),
               "reasoning_steps_average": acting["steps_average"]}
    restarted = {**acting, **{name: jnp.zeros_like(acting[name]) for name in
                              ("window_steps_sum", "window_steps_max", "window_rhat_sum",
                               "window_count")}}
    return restarted, metrics


def update(setup: UpdateSetup, state: AgentState, batch: Batch,
           key: jax.Array) -> tuple[AgentState, Metrics]:
    """One SSPG update on a batch [B]; returns the new state and scalar metrics."""
    config, nets = setup.config, setup.nets
    common.check_batch(batch, setup.obs_spec, setup.action_dim)
    key_obs, key_next_obs, key_target, key_actor, key_lix = jax.random.split(key, 5)
    length, min_steps = sspg_losses.chain_lengths(state.acting["steps_average"],
                                                  config.sspg_train_max_steps)
    obs = setup.augment(batch.obs, key_obs, 1)
    next_obs = setup.augment(batch.next_obs, key_next_obs, 1)
    obs_lix, next_lix = steps.lix_contexts(setup, state.params, key_lix)
    next_features = sg(nets.encoder.apply(state.params["encoder"], next_obs, next_lix))
    target_features = (nets.encoder.apply(state.target_params["encoder"], next_obs)
                       if "encoder" in state.target_params else None)
    target = sspg_losses.chain_td_target(
        nets, state.params["actor"], state.target_params["critic"], next_features,
        batch.action, batch.reward, batch.discount, length, jnp.exp(state.params["log_alpha"]),
        key_target, nets.critic_kind.value_fn(config, state.params),
        config.sspg_train_max_steps, target_features)

    params, opt_states, features, q, actor_value_fn, metrics, critic_kind_metrics = \
        ddpg.critic_lix_and_pessimism_steps(setup, state, obs, batch.action, target, obs_lix)
    params, opt_states, actor_metrics = actor_and_temperature_steps(
        setup, state.update_step, params, opt_states, sg(features), batch.action, length,
        actor_value_fn, key_actor)

    acting, window_metrics = acting_metrics({**state.acting, "min_steps": min_steps})
    new_state = steps.next_state(setup, state, params, opt_states, key, acting=acting)
    metrics.update(critic_kind_metrics, **actor_metrics, **window_metrics,
                   alpha=jnp.exp(params["log_alpha"]), q_mean=jnp.mean(q),
                   target_q_mean=jnp.mean(target), batch_reward=jnp.mean(batch.reward),
                   train_chain_length=length.astype(jnp.float32))
    return new_state, metrics
