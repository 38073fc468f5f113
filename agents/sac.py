"""DrQ (docs/algorithms.md, DrQ): SAC with K augmented targets, M augmented Q estimates, a
learned temperature, and a target critic that holds its own encoder copy; with the config's
parts (the critic kind, Flare encoder, D2RL MLPs).

`update` is the authors' order of steps: K-averaged target, critic step on M copies, the
critic kind's step (GPL: beta), then every actor_update_every updates the actor step and
the temperature step, and the target step. After SEER's freeze the same update runs on
`seer.latent_setup(setup)`: K and M picked stored copies stand for the augmentations."""
import jax
import jax.numpy as jnp

from pixelzoo.agents import common, losses, steps
from pixelzoo.agents.common import AgentState, Metrics, UpdateSetup
from pixelzoo.agents.parts import ValueFn
from pixelzoo.replay import Batch

sg = jax.lax.stop_gradient


def critic_step(setup: UpdateSetup, params: dict, opt_state, obs_copies: jnp.ndarray,
                action: jnp.ndarray, target: jnp.ndarray):
    """One optimiser step of encoder and critic on `losses.drq_critic_loss` with the critic
    kind's loss over M copies obs_copies [M * B, ...]; target [B, *out].
    Returns ({'encoder', 'critic'}, opt_state, Q [N, M, B, *out], loss)."""
    critic_group = {"encoder": params["encoder"], "critic": params["critic"]}
    (loss, q), grads = jax.value_and_grad(losses.drq_critic_loss, argnums=1, has_aux=True)(
        setup.nets, critic_group, obs_copies, action, target,
        critic_loss=setup.nets.critic_kind.loss(setup.config))
    critic_group, opt_state = common.apply_optimizer(setup.optimizers.critic, grads,
                                                     opt_state, critic_group)
    return critic_group, opt_state, q, loss


def actor_step(setup: UpdateSetup, actor_params, opt_state, critic_params, log_alpha,
               features: jnp.ndarray, value_fn: ValueFn, key: jax.Array):
    """One optimiser step of the actor on `losses.drq_actor_loss` (features [B, D] without
    gradient). Returns (actor params, opt_state, log pi [B] of its draw, metrics)."""
    (loss, log_prob), grads = jax.value_and_grad(losses.drq_actor_loss, argnums=1,
                                                 has_aux=True)(
        setup.nets, actor_params, critic_params, features, key, value_fn, jnp.exp(log_alpha))
    actor_params, opt_state = common.apply_optimizer(setup.optimizers.actor, grads,
                                                     opt_state, actor_params)
    return actor_params, opt_state, log_prob, {"actor_loss": loss,
                                               "entropy": -jnp.mean(log_prob)}


def actor_and_temperature_steps(setup: UpdateSetup, update_step: jnp.ndarray, params: dict,
                                opt_states: dict, features: jnp.ndarray, value_fn: ValueFn,
                                key: jax.Array) -> tuple[dict, dict, Metrics]:
    """`actor_step` then `steps.temperature_step` on its draw, on the updates where
    update_step % actor_update_every == 0; the others report NaN and actor_updated=0.
    Returns (params, opt_states, metrics)."""
    def run():
        actor, actor_opt, log_prob, metrics = actor_step(
            setup, params["actor"], opt_states["actor"], params["critic"],
            params["log_alpha"], features, value_fn, key)
        log_alpha, alpha_opt, alpha_metrics = steps.temperature_step(
            setup.optimizers.alpha, params["log_alpha"], opt_states["alpha"], log_prob,
            -float(setup.action_dim))
        return ((actor, actor_opt), (log_alpha, alpha_opt)), {**metrics, **alpha_metrics}

    unchanged = ((params["actor"], opt_states["actor"]),
                 (params["log_alpha"], opt_states["alpha"]))
    ((actor, actor_opt), (log_alpha, alpha_opt)), metrics = common.gated_step(
        update_step % setup.config.actor_update_every == 0, run, unchanged,
        gate="actor_updated")
    return ({**params, "actor": actor, "log_alpha": log_alpha},
            {**opt_states, "actor": actor_opt, "alpha": alpha_opt}, metrics)


def update(setup: UpdateSetup, state: AgentState, batch: Batch,
           key: jax.Array) -> tuple[AgentState, Metrics]:
    """One DrQ update on a batch [B]; returns the new state and scalar metrics."""
    config, nets = setup.config, setup.nets
    common.check_batch(batch, setup.obs_spec, setup.action_dim)
    key_target, key_obs, key_actor = jax.random.split(key, 3)
    key_target_aug, key_target_action = jax.random.split(key_target)
    next_obs_copies = setup.augment(batch.next_obs, key_target_aug, config.num_target_augs)
    target = losses.drq_td_target(
        nets, state.params, state.target_params, next_obs_copies, batch.reward,
        batch.discount, key_target_action, nets.critic_kind.value_fn(config, state.params))
    obs_copies = setup.augment(batch.obs, key_obs, config.num_q_augs)

    critic_group, critic_opt, q, critic_loss = critic_step(
        setup, state.params, state.opt_states["critic"], obs_copies, batch.action, target)
    params = {**state.params, **critic_group}
    opt_states = {**state.opt_states, "critic": critic_opt}
    # The critic kind's step sees the first augmented copy's Q [N, B, *out].
    params, opt_states, actor_value_fn, critic_kind_metrics = steps.pessimism_step(
        config, nets.critic_kind, params, opt_states, q[:, 0], target, state.update_step)
    # The actor sees the first copy re-encoded by the updated encoder, gradient stopped
    # (official DrQ: detach_encoder=True).
    first_obs = obs_copies[: batch.obs.shape[0]]
    features = sg(nets.encoder.apply(params["encoder"], first_obs))
    params, opt_states, actor_metrics = actor_and_temperature_steps(
        setup, state.update_step, params, opt_states, features, actor_value_fn, key_actor)

    new_state = steps.next_state(setup, state, params, opt_states, key)
    metrics = {"critic_loss": critic_loss, **critic_kind_metrics, **actor_metrics,
               "alpha": jnp.exp(params["log_alpha"]), "q_mean": jnp.mean(q),
               "target_q_mean": jnp.mean(target), "batch_reward": jnp.mean(batch.reward)}
    return new_state, metrics
