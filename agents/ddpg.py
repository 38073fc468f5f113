"""DrQ-v2 (docs/algorithms.md, DrQ-v2): DDPG with n-step targets, scheduled exploration noise
and random-shift augmentation, one encoder trained by the critic only; with the config's
parts (A-LIX layers and their P, the critic kind, Flare encoder, D2RL MLPs).

`update` is the authors' order of steps: TD target, critic step (with A-LIX's probe), LIX
step, the critic kind's step (GPL: beta), actor step, target step. After SEER's freeze the
same update runs on `seer.latent_setup(setup)`."""
import jax
import jax.numpy as jnp

from pixelzoo.agents import common, losses, steps
from pixelzoo.agents.common import AgentState, Metrics, UpdateSetup
from pixelzoo.agents.parts import Exploration, ValueFn
from pixelzoo.networks import LixContext
from pixelzoo.replay import Batch

sg = jax.lax.stop_gradient


def critic_step(setup: UpdateSetup, params: dict, opt_state, obs: jnp.ndarray,
                action: jnp.ndarray, target: jnp.ndarray, obs_lix: LixContext | None):
    """One optimiser step of encoder and critic on `losses.drqv2_critic_loss` with the
    critic kind's loss.

    obs [B, ...] augmented; action [B, A]; target [B, *out]. With A-LIX, P's dual gradient
    nd_target - ND comes back for `steps.lix_step` (else None).
    Returns ({'encoder', 'critic'}, opt_state, nd_gradient, features [B, D],
    Q [N, B, *out], loss)."""
    critic_group = {"encoder": params["encoder"], "critic": params["critic"]}
    with_p = {**critic_group, "lix_p": params["lix_p"]} if obs_lix is not None else critic_group
    (loss, (features, q)), grads = jax.value_and_grad(
        losses.drqv2_critic_loss, argnums=1, has_aux=True)(
        setup.nets, with_p, obs, action, target, obs_lix,
        critic_loss=setup.nets.critic_kind.loss(setup.config))
    nd_gradient = grads.pop("lix_p", None)
    critic_group, opt_state = common.apply_optimizer(setup.optimizers.critic, grads,
                                                     opt_state, critic_group)
    return critic_group, opt_state, nd_gradient, features, q, loss


def actor_step(setup: UpdateSetup, update_step: jnp.ndarray, actor_params, opt_state,
               critic_params, features: jnp.ndarray, exploration: Exploration,
               value_fn: ValueFn, key: jax.Array):
    """One optimiser step of the actor on `losses.drqv2_actor_loss` (features [B, D] without
    gradient), on the updates where update_step % actor_update_every == 0; the others
    report NaN and actor_updated=0. Returns (actor params, opt state, metrics)."""
    def step():
        loss, grads = jax.value_and_grad(losses.drqv2_actor_loss, argnums=1)(
            setup.nets, actor_params, critic_params, features, exploration.stddev,
            exploration.clip, key, value_fn)
        new = common.apply_optimizer(setup.optimizers.actor, grads, opt_state, actor_params)
        return new, {"actor_loss": loss}

    (actor_params, opt_state), metrics = common.gated_step(
        update_step % setup.config.actor_update_every == 0, step, (actor_params, opt_state),
        gate="actor_updated")
    return actor_params, opt_state, metrics


def critic_lix_and_pessimism_steps(setup: UpdateSetup, state: AgentState, obs: jnp.ndarray,
                                   action: jnp.ndarray, target: jnp.ndarray,
                                   obs_lix: LixContext | None):
    """`critic_step`, then A-LIX's `steps.lix_step` on its dual gradient (with lix), then the
    critic kind's `steps.pessimism_step`: the critic half of the ddpg base's update (SSPG's
    update shares it). obs [B, ...] augmented; action [B, A]; target [B, *out].
    Returns (params, opt_states, features [B, D] of the pre-update encoder, Q [N, B, *out],
    the actor's value function, metrics (critic loss, LIX), the critic kind's metrics)."""
    critic_group, critic_opt, nd_gradient, features, q, critic_loss = critic_step(
        setup, state.params, state.opt_states["critic"], obs, action, target, obs_lix)
    params = {**state.params, **critic_group}
    opt_states = {**state.opt_states, "critic": critic_opt}
    metrics = {"critic_loss": critic_loss}
    if setup.config.lix:
        params["lix_p"], opt_states["lix_p"], lix_metrics = steps.lix_step(
            setup, state.params["lix_p"], state.opt_states["lix_p"], nd_gradient)
        metrics.update(lix_metrics)
    params, opt_states, actor_value_fn, critic_kind_metrics = steps.pessimism_step(
        setup.config, setup.nets.critic_kind, params, opt_states, q, target,
        state.update_step)
    return params, opt_states, features, q, actor_value_fn, metrics, critic_kind_metrics


def update(setup: UpdateSetup, state: AgentState, batch: Batch,
           key: jax.Array) -> tuple[AgentState, Metrics]:
    """One DrQ-v2 update on a batch [B]; returns the new state and scalar metrics."""
    config, nets = setup.config, setup.nets
    common.check_batch(batch, setup.obs_spec, setup.action_dim)
    key_obs, key_next_obs, key_target, key_actor, key_lix = jax.random.split(key, 5)
    obs = setup.augment(batch.obs, key_obs, 1)
    next_obs = setup.augment(batch.next_obs, key_next_obs, 1)
    exploration = common.exploration(config, state.update_step)
    obs_lix, next_lix = steps.lix_contexts(setup, state.params, key_lix)
    target, next_q = losses.drqv2_td_target(
        nets, state.params["encoder"], state.params["actor"], state.target_params["critic"],
        next_obs, batch.reward, batch.discount, exploration.stddev, exploration.clip,
        key_target, nets.critic_kind.value_fn(config, state.params), next_lix)

    params, opt_states, features, q, actor_value_fn, metrics, critic_kind_metrics = \
        critic_lix_and_pessimism_steps(setup, state, obs, batch.action, target, obs_lix)
    if nets.critic_kind.uncertainty is not None:   # the ddpg base also reports it
        critic_kind_metrics["uncertainty_mean"] = jnp.mean(nets.critic_kind.uncertainty(next_q))
    # The actor sees the pre-update encoder's features, gradient stopped (official).
    params["actor"], opt_states["actor"], actor_metrics = actor_step(
        setup, state.update_step, params["actor"], opt_states["actor"], params["critic"],
        sg(features), exploration, actor_value_fn, key_actor)

    new_state = steps.next_state(setup, state, params, opt_states, key)
    metrics.update(critic_kind_metrics, **actor_metrics, q_mean=jnp.mean(q),
                   target_q_mean=jnp.mean(target), batch_reward=jnp.mean(batch.reward),
                   stddev=exploration.stddev)
    return new_state, metrics
