"""DrQ-v2 (docs/algorithms.md, DrQ-v2): DDPG with n-step targets, scheduled exploration noise
and random-shift augmentation, one encoder trained by the critic only; with the config's
parts (A-LIX layers and their P, GPL critics, Flare encoder, D2RL MLPs).

The losses are the pure functions of agents/losses.py; `update` is their sequence."""
import functools

import jax
import jax.numpy as jnp
from dm_env import specs

from pixelzoo.agents import common, losses, pessimism, seer
from pixelzoo.agents.augment import random_shift
from pixelzoo.agents.config import Config
from pixelzoo.agents.parts import build_parts
from pixelzoo.networks import LixContext
from pixelzoo.replay import Batch

sg = jax.lax.stop_gradient


def make_ddpg(name: str, config: Config, obs_spec: specs.Array,
              action_spec: specs.BoundedArray) -> common.Agent:
    action_dim = int(action_spec.shape[0])
    nets = build_parts(config, obs_spec, action_dim)
    optimizers = common.make_optimizers(config)

    def stddev(update_step: jnp.ndarray) -> jnp.ndarray:
        """Exploration std, linear from stddev_init to stddev_final over stddev_steps."""
        return common.linear_schedule(config.stddev_init, config.stddev_final,
                                      config.stddev_steps,
                                      common.agent_step(config, update_step))

    def init(key: jax.Array) -> common.AgentState:
        return common.init_state(config, nets, optimizers, obs_spec, action_dim, key)

    def act(state: common.AgentState, obs: jnp.ndarray, key: jax.Array,
            eval_mode: bool = False) -> jnp.ndarray:
        common.check_obs(obs, obs_spec)
        features = nets.encoder.apply(state.params["encoder"], obs)
        mean = nets.actor.apply(state.params["actor"], features)
        if eval_mode:
            return mean
        noise = stddev(state.update_step) * jax.random.normal(key, mean.shape)
        return jnp.clip(mean + noise, -1.0, 1.0)

    def lix_contexts(state: common.AgentState, key: jax.Array):
        """A-LIX's (obs, next_obs) contexts: shifts up to lix_max_shift * sg(P) pixels; the
        obs pass also probes ND for P's dual gradient. (None, None) without LIX."""
        if not config.lix:
            return None, None
        max_shift = config.lix_max_shift * sg(state.params["lix_p"])
        key_obs, key_next = jax.random.split(key)
        return (LixContext(max_shift, key_obs, nd_target=config.lix_nd_target),
                LixContext(max_shift, key_next))

    def critic_step(state: common.AgentState, obs, action, target, obs_lix):
        """One optimiser step of encoder and critic on `losses.drqv2_critic_loss`, and of P
        on its dual gradient. Returns (params, opt_states, features, Q [N, B], metrics)."""
        critic_group = {"encoder": state.params["encoder"], "critic": state.params["critic"]}
        if config.lix:
            critic_group["lix_p"] = state.params["lix_p"]
        (loss, (features, q)), grads = jax.value_and_grad(
            losses.drqv2_critic_loss, argnums=1, has_aux=True)(
            nets, critic_group, obs, action, target, obs_lix)
        params, opt_states = dict(state.params), dict(state.opt_states)
        metrics = {"critic_loss": loss}
        if config.lix:
            nd_gradient = grads.pop("lix_p")
            critic_group.pop("lix_p")
            params["lix_p"], opt_states["lix_p"] = losses.lix_p_update(
                optimizers.lix_p, state.params["lix_p"], state.opt_states["lix_p"],
                nd_gradient)
            metrics.update(lix_p=params["lix_p"], lix_max_shift=obs_lix.max_shift,
                           lix_nd=config.lix_nd_target - nd_gradient)
        critic_group, opt_states["critic"] = common.apply_optimizer(
            optimizers.critic, grads, state.opt_states["critic"], critic_group)
        params.update(critic_group)
        return params, opt_states, features, q, metrics

    def actor_step(state: common.AgentState, critic_params, features, std, value_fn, key):
        """One optimiser step of the actor on `losses.drqv2_actor_loss`, on the updates where
        update_step % actor_update_every == 0. Returns (actor params, opt state, metrics)."""
        def step():
            loss, grads = jax.value_and_grad(losses.drqv2_actor_loss, argnums=1)(
                nets, state.params["actor"], critic_params, features, std,
                config.stddev_clip, key, value_fn)
            new = common.apply_optimizer(optimizers.actor, grads, state.opt_states["actor"],
                                         state.params["actor"])
            return new, {"actor_loss": loss}

        (actor, opt_state), metrics = common.gated_step(
            state.update_step % config.actor_update_every == 0, step,
            (state.params["actor"], state.opt_states["actor"]), gate="actor_updated")
        return actor, opt_state, metrics

    def pessimism_step(state: common.AgentState, params: dict, opt_states: dict, q, target,
                       next_q, metrics: dict) -> losses.ValueFn:
        """GPL's beta step after the critic step (`pessimism.gpl_step`, updating params,
        opt_states and metrics in place); returns the actor's value function (twin: the
        minimum; GPL: the penalised mean with beta_pi)."""
        if config.critic != "gpl":
            return pessimism.value_fn(config)
        beta_pi, gpl_metrics = pessimism.gpl_step(config, params, opt_states, q, target,
                                                  common.agent_step(config, state.update_step))
        metrics.update(gpl_metrics,
                       uncertainty_mean=jnp.mean(losses.ensemble_uncertainty(next_q)))
        return pessimism.value_fn(config, beta_pi)

    def update(state: common.AgentState, batch: Batch,
               key: jax.Array) -> tuple[common.AgentState, common.Metrics]:
        common.check_batch(batch, obs_spec, action_dim)
        key_obs, key_next_obs, key_target, key_actor, key_lix = jax.random.split(key, 5)
        obs, next_obs = batch.obs, batch.next_obs
        if config.aug == "shift":
            obs, next_obs = random_shift(obs, key_obs), random_shift(next_obs, key_next_obs)
        std = stddev(state.update_step)
        obs_lix, next_lix = lix_contexts(state, key_lix)
        target, next_q = losses.drqv2_td_target(
            nets, state.params["encoder"], state.params["actor"],
            state.target_params["critic"], next_obs, batch.reward, batch.discount, std,
            config.stddev_clip, key_target, pessimism.value_fn(config, state.params.get("beta")),
            next_lix)
        params, opt_states, features, q, metrics = critic_step(state, obs, batch.action,
                                                               target, obs_lix)
        actor_value_fn = pessimism_step(state, params, opt_states, q, target, next_q, metrics)
        # The actor sees the pre-update encoder's features, gradient stopped (official).
        params["actor"], opt_states["actor"], actor_metrics = actor_step(
            state, params["critic"], sg(features), std, actor_value_fn, key_actor)
        new_state = common.AgentState(
            params=params,
            target_params=common.polyak_every(config, state.update_step, state.target_params,
                                              params),
            opt_states=opt_states, update_step=state.update_step + 1)
        metrics.update(actor_metrics, q_mean=jnp.mean(q), target_q_mean=jnp.mean(target),
                       batch_reward=jnp.mean(batch.reward), stddev=std)
        return new_state, metrics

    # ------------------------------------------------------------------ SEER
    def update_latent(state: common.AgentState, batch: Batch,
                      key: jax.Array) -> tuple[common.AgentState, common.Metrics]:
        """The update after SEER's freeze, on a batch of stored latents (obs, next_obs
        [B, m, 2F]): the heads train as `update` trains them; the frozen parts stay
        bit-identical. Keys split as in `update` (same positions for target and actor)."""
        key_obs, key_next_obs, key_target, key_actor, _ = jax.random.split(key, 5)
        feature = config.feature_dim
        z = seer.pick_copies(batch.obs, key_obs)
        next_z = seer.pick_copies(batch.next_obs, key_next_obs)
        std = stddev(state.update_step)
        target, next_q = losses.drqv2_latent_td_target(
            nets, state.params["actor"], state.target_params["critic"], next_z[:, :feature],
            next_z[:, feature:], batch.reward, batch.discount, std, config.stddev_clip,
            key_target, pessimism.value_fn(config, state.params.get("beta")))
        (loss, q), critic_grads = jax.value_and_grad(
            losses.drqv2_latent_critic_loss, argnums=1, has_aux=True)(
            nets, state.params["critic"], z[:, :feature], batch.action, target)
        params, opt_states = dict(state.params), dict(state.opt_states)
        critic_group = {"encoder": state.params["encoder"], "critic": state.params["critic"]}
        grads = {"encoder": jax.tree.map(jnp.zeros_like, critic_group["encoder"]),
                 "critic": critic_grads}
        critic_group, opt_states["critic"] = common.apply_optimizer(
            optimizers.critic, grads, state.opt_states["critic"], critic_group)
        params.update(seer.keep_frozen(critic_group, state.params))
        metrics = {"critic_loss": loss}
        if config.lix:    # P stops being learned: no encoder gradient reaches it any more
            metrics.update(lix_p=params["lix_p"],
                           lix_max_shift=config.lix_max_shift * params["lix_p"])
        actor_value_fn = pessimism_step(state, params, opt_states, q, target, next_q, metrics)

        def step():
            loss, grads = jax.value_and_grad(losses.drqv2_latent_actor_loss, argnums=1)(
                nets, state.params["actor"], params["critic"], z[:, feature:], z[:, :feature],
                std, config.stddev_clip, key_actor, actor_value_fn)
            actor, opt_state = common.apply_optimizer(
                optimizers.actor, grads, state.opt_states["actor"], state.params["actor"])
            return (seer.keep_frozen({"actor": actor}, state.params)["actor"], opt_state), \
                {"actor_loss": loss}

        (params["actor"], opt_states["actor"]), actor_metrics = common.gated_step(
            state.update_step % config.actor_update_every == 0, step,
            (state.params["actor"], state.opt_states["actor"]), gate="actor_updated")
        target_critic = common.polyak_every(config, state.update_step, state.target_params,
                                            params)["critic"]
        new_state = common.AgentState(
            params=params,
            target_params={"critic": seer.keep_frozen({"critic": target_critic},
                                                 state.target_params)["critic"]},
            opt_states=opt_states, update_step=state.update_step + 1)
        metrics.update(actor_metrics, q_mean=jnp.mean(q), target_q_mean=jnp.mean(target),
                       batch_reward=jnp.mean(batch.reward), stddev=std)
        return new_state, metrics

    return common.Agent(name=name, config=config, obs_spec=obs_spec, action_spec=action_spec,
                        init=init, act=act, update=update,
                        seer=common.SeerParts(
                            seer.latent_spec(config),
                            functools.partial(seer.encode_latents, nets, config, obs_spec),
                            seer.freeze, update_latent))
