"""DrQ (docs/algorithms.md, DrQ): SAC with K augmented targets, M augmented Q estimates, a
learned temperature, and a target critic that holds its own encoder copy; with the config's
parts (GPL critics, Flare encoder, D2RL MLPs).

The losses are the pure functions of agents/losses.py; `update` is their sequence."""
import functools

import jax
import jax.numpy as jnp
from dm_env import specs

from pixelzoo.agents import common, losses, pessimism, seer
from pixelzoo.agents.augment import random_shift
from pixelzoo.agents.config import Config
from pixelzoo.agents.parts import build_parts
from pixelzoo.replay import Batch

sg = jax.lax.stop_gradient


def augment_copies(obs: jnp.ndarray, copies: int, key: jax.Array, enabled: bool) -> jnp.ndarray:
    """`copies` independently shifted copies of obs [B, ...] stacked as [copies * B, ...]."""
    tiled = jnp.concatenate([obs] * copies, axis=0)
    return random_shift(tiled, key) if enabled else tiled


def make_sac(name: str, config: Config, obs_spec: specs.Array,
             action_spec: specs.BoundedArray) -> common.Agent:
    action_dim = int(action_spec.shape[0])
    nets = build_parts(config, obs_spec, action_dim)
    optimizers = common.make_optimizers(config)
    target_entropy = -float(action_dim)
    augment = config.aug == "shift"

    def init(key: jax.Array) -> common.AgentState:
        return common.init_state(config, nets, optimizers, obs_spec, action_dim, key)

    def act(state: common.AgentState, obs: jnp.ndarray, key: jax.Array,
            eval_mode: bool = False) -> jnp.ndarray:
        common.check_obs(obs, obs_spec)
        features = nets.encoder.apply(state.params["encoder"], obs)
        mean, log_std = nets.actor.apply(state.params["actor"], features)
        if eval_mode:
            return jnp.tanh(mean)
        return losses.tanh_gaussian_sample(mean, log_std, key)[0]

    def critic_step(state: common.AgentState, obs_copies, action, target):
        """One optimiser step of encoder and critic on `losses.drq_critic_loss`.
        Returns (params, opt_states, Q [N, M, B], metrics)."""
        critic_group = {"encoder": state.params["encoder"], "critic": state.params["critic"]}
        (loss, q), grads = jax.value_and_grad(losses.drq_critic_loss, argnums=1,
                                              has_aux=True)(
            nets, critic_group, obs_copies, action, target)
        critic_group, critic_opt_state = common.apply_optimizer(
            optimizers.critic, grads, state.opt_states["critic"], critic_group)
        return ({**state.params, **critic_group},
                {**state.opt_states, "critic": critic_opt_state}, q, {"critic_loss": loss})

    def actor_step(state: common.AgentState, params: dict, opt_states: dict, first_obs,
                   value_fn, key):
        """Actor and temperature steps on `losses.drq_actor_and_temperature_loss`, on the
        updates where update_step % actor_update_every == 0. The actor sees the first
        augmented obs re-encoded by the updated encoder, gradient stopped (official DrQ:
        detach_encoder=True). Returns (params, opt_states, metrics)."""
        def step():
            features = sg(nets.encoder.apply(params["encoder"], first_obs))
            actor_and_alpha = {"actor": params["actor"], "log_alpha": params["log_alpha"]}
            grads, (actor_loss, alpha_loss, entropy) = jax.grad(
                losses.drq_actor_and_temperature_loss, argnums=1, has_aux=True)(
                nets, actor_and_alpha, params["critic"], features, key, value_fn,
                target_entropy)
            actor = common.apply_optimizer(optimizers.actor, grads["actor"],
                                           opt_states["actor"], params["actor"])
            log_alpha = common.apply_optimizer(optimizers.alpha, grads["log_alpha"],
                                               opt_states["alpha"], params["log_alpha"])
            return (actor, log_alpha), {"actor_loss": actor_loss, "alpha_loss": alpha_loss,
                                        "entropy": entropy}

        unchanged = ((params["actor"], opt_states["actor"]),
                     (params["log_alpha"], opt_states["alpha"]))
        ((params["actor"], opt_states["actor"]), (params["log_alpha"], opt_states["alpha"])), \
            metrics = common.gated_step(state.update_step % config.actor_update_every == 0,
                                        step, unchanged, gate="actor_updated")
        return params, opt_states, metrics

    def update(state: common.AgentState, batch: Batch,
               key: jax.Array) -> tuple[common.AgentState, common.Metrics]:
        common.check_batch(batch, obs_spec, action_dim)
        key_target, key_obs, key_actor = jax.random.split(key, 3)
        key_target_aug, key_target_action = jax.random.split(key_target)
        next_obs_copies = augment_copies(batch.next_obs, config.num_target_augs,
                                         key_target_aug, augment)
        target = losses.drq_td_target(
            nets, state.params, state.target_params, next_obs_copies, batch.reward,
            batch.discount, key_target_action,
            pessimism.value_fn(config, state.params.get("beta")))
        obs_copies = augment_copies(batch.obs, config.num_q_augs, key_obs, augment)
        params, opt_states, q, metrics = critic_step(state, obs_copies, batch.action, target)
        actor_value_fn = pessimism.value_fn(config)
        if config.critic == "gpl":   # beta's TD errors: the first augmented copy's Q [N, B]
            beta_pi, gpl_metrics = pessimism.gpl_step(
                config, params, opt_states, q[:, 0], target,
                common.agent_step(config, state.update_step))
            actor_value_fn = pessimism.value_fn(config, beta_pi)
            metrics.update(gpl_metrics)
        params, opt_states, actor_metrics = actor_step(
            state, params, opt_states, obs_copies[: batch.obs.shape[0]], actor_value_fn,
            key_actor)
        new_state = common.AgentState(
            params=params,
            target_params=common.polyak_every(config, state.update_step, state.target_params,
                                              params),
            opt_states=opt_states, update_step=state.update_step + 1)
        metrics.update(actor_metrics, alpha=jnp.exp(params["log_alpha"]), q_mean=jnp.mean(q),
                       target_q_mean=jnp.mean(target), batch_reward=jnp.mean(batch.reward))
        return new_state, metrics

    # ------------------------------------------------------------------ SEER
    def update_latent(state: common.AgentState, batch: Batch,
                      key: jax.Array) -> tuple[common.AgentState, common.Metrics]:
        """The update after SEER's freeze, on stored latents (obs, next_obs [B, m, 2F]):
        K and M randomly picked stored copies stand for DrQ's K target and M Q
        augmentations; the heads and the temperature train as in `update`; the frozen
        encoder, trunks and the target's encoder copy stay bit-identical."""
        feature = config.feature_dim
        key_target, key_obs, key_actor = jax.random.split(key, 3)
        key_target_pick, key_target_action = jax.random.split(key_target)
        next_z = seer.pick_copies(batch.next_obs, key_target_pick, config.num_target_augs)
        target = losses.drq_latent_td_target(
            nets, state.params, state.target_params, next_z[:, :feature], next_z[:, feature:],
            batch.reward, batch.discount, key_target_action,
            pessimism.value_fn(config, state.params.get("beta")))
        z = seer.pick_copies(batch.obs, key_obs, config.num_q_augs)       # [M * B, 2F]
        (loss, q), critic_grads = jax.value_and_grad(
            losses.drq_latent_critic_loss, argnums=1, has_aux=True)(
            nets, state.params["critic"], z[:, :feature], batch.action, target)
        critic_group = {"encoder": state.params["encoder"], "critic": state.params["critic"]}
        grads = {"encoder": jax.tree.map(jnp.zeros_like, critic_group["encoder"]),
                 "critic": critic_grads}
        critic_group, critic_opt_state = common.apply_optimizer(
            optimizers.critic, grads, state.opt_states["critic"], critic_group)
        params = {**state.params, **seer.keep_frozen(critic_group, state.params)}
        opt_states = {**state.opt_states, "critic": critic_opt_state}
        metrics = {"critic_loss": loss}
        actor_value_fn = pessimism.value_fn(config)
        if config.critic == "gpl":
            beta_pi, gpl_metrics = pessimism.gpl_step(
                config, params, opt_states, q[:, 0], target,
                common.agent_step(config, state.update_step))
            actor_value_fn = pessimism.value_fn(config, beta_pi)
            metrics.update(gpl_metrics)
        first = z[: batch.obs.shape[0]]                     # the first picked copy of obs

        def step():
            actor_and_alpha = {"actor": params["actor"], "log_alpha": params["log_alpha"]}
            grads, (actor_loss, alpha_loss, entropy) = jax.grad(
                losses.drq_latent_actor_and_temperature_loss, argnums=1, has_aux=True)(
                nets, actor_and_alpha, params["critic"], first[:, feature:],
                first[:, :feature], key_actor, actor_value_fn, target_entropy)
            actor, actor_opt = common.apply_optimizer(
                optimizers.actor, grads["actor"], opt_states["actor"], params["actor"])
            log_alpha = common.apply_optimizer(optimizers.alpha, grads["log_alpha"],
                                               opt_states["alpha"], params["log_alpha"])
            actor = seer.keep_frozen({"actor": actor}, params)["actor"]
            return ((actor, actor_opt), log_alpha), {"actor_loss": actor_loss,
                                                     "alpha_loss": alpha_loss,
                                                     "entropy": entropy}

        unchanged = ((params["actor"], opt_states["actor"]),
                     (params["log_alpha"], opt_states["alpha"]))
        ((params["actor"], opt_states["actor"]), (params["log_alpha"], opt_states["alpha"])), \
            actor_metrics = common.gated_step(state.update_step % config.actor_update_every == 0,
                                              step, unchanged, gate="actor_updated")
        target_params = seer.keep_frozen(
            common.polyak_every(config, state.update_step, state.target_params, params),
            state.target_params)
        new_state = common.AgentState(params=params, target_params=target_params,
                                      opt_states=opt_states, update_step=state.update_step + 1)
        metrics.update(actor_metrics, alpha=jnp.exp(params["log_alpha"]), q_mean=jnp.mean(q),
                       target_q_mean=jnp.mean(target), batch_reward=jnp.mean(batch.reward))
        return new_state, metrics

    return common.Agent(name=name, config=config, obs_spec=obs_spec, action_spec=action_spec,
                        init=init, act=act, update=update,
                        seer=common.SeerParts(
                            seer.latent_spec(config),
                            functools.partial(seer.encode_latents, nets, config, obs_spec),
                            seer.freeze, update_latent))
