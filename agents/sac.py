"""DrQ (ALGORITHMS.md section 2): SAC with K augmented targets, M augmented Q estimates,
a learned temperature, and a target critic that holds its own encoder copy."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
from dm_env import specs

from agents import common, pessimism
from agents.augment import random_shift
from agents.config import Config
from agents.parts import build_parts, init_params
from replay import Batch

sg = jax.lax.stop_gradient


def augment_copies(obs: jnp.ndarray, copies: int, key: jax.Array, enabled: bool) -> jnp.ndarray:
    """`copies` independently shifted copies of obs [B, ...] stacked as [copies * B, ...]."""
    tiled = jnp.concatenate([obs] * copies, axis=0)
    return random_shift(tiled, key) if enabled else tiled


def make_sac(name: str, config: Config, obs_spec: specs.Array,
             action_spec: specs.BoundedArray) -> common.Agent:
    action_dim = int(action_spec.shape[0])
    parts = build_parts(config, obs_spec, action_dim)
    critic_optimizer = optax.adam(config.lr)     # encoder and critic: the critic loss
    actor_optimizer = optax.adam(config.lr)
    alpha_optimizer = optax.adam(config.lr)
    target_entropy = -float(action_dim)
    augment = config.aug == "shift"
    gpl = config.critic == "gpl"

    def init(key: jax.Array) -> common.AgentState:
        params = init_params(parts, obs_spec, action_dim, key)
        params["log_alpha"] = jnp.asarray(np.log(config.init_temperature), jnp.float32)
        critic_group = {"encoder": params["encoder"], "critic": params["critic"]}
        target_params = {"critic": params["critic"]}
        if config.target_encoder:
            target_params["encoder"] = params["encoder"]
        opt_states = {"critic": critic_optimizer.init(critic_group),
                      "actor": actor_optimizer.init(params["actor"]),
                      "alpha": alpha_optimizer.init(params["log_alpha"])}
        if gpl:
            params["beta"] = jnp.asarray(config.gpl_beta_init, jnp.float32)
            opt_states["beta"] = pessimism.beta_optimizer(config).init(params["beta"])
        return common.AgentState(params=params, target_params=target_params,
                                 opt_states=opt_states, update_step=jnp.zeros((), jnp.int32))

    def policy(params: dict, features: jnp.ndarray, key: jax.Array):
        mean, log_std = parts.actor.apply(params["actor"], features)
        return common.tanh_gaussian_sample(mean, log_std, key)

    def act(state: common.AgentState, obs: jnp.ndarray, key: jax.Array,
            eval_mode: bool = False) -> jnp.ndarray:
        common.check_obs(obs, obs_spec)
        features = parts.encoder.apply(state.params["encoder"], obs)
        if eval_mode:
            mean, _ = parts.actor.apply(state.params["actor"], features)
            return jnp.tanh(mean)
        return policy(state.params, features, key)[0]

    def td_target(state: common.AgentState, batch: Batch, key: jax.Array) -> jnp.ndarray:
        """y = r + discount * mean_k [min Q'(f_k(s'), a'_k) - alpha log pi(a'_k | f_k(s'))]."""
        key_aug, key_action = jax.random.split(key)
        copies = config.num_target_augs
        next_obs = augment_copies(batch.next_obs, copies, key_aug, augment)
        online_features = parts.encoder.apply(state.params["encoder"], next_obs)
        next_action, next_log_prob = policy(state.params, online_features, key_action)
        target_encoder = state.target_params.get("encoder", state.params["encoder"])
        target_features = parts.encoder.apply(target_encoder, next_obs)
        next_q = parts.critic.apply(state.target_params["critic"], target_features, next_action)
        alpha = jnp.exp(state.params["log_alpha"])
        value = pessimism.target_value(next_q, config, state.params.get("beta"))
        soft_value = value - alpha * next_log_prob                             # [K * B]
        soft_value = jnp.mean(soft_value.reshape(copies, -1), axis=0)        # [B]
        return sg(batch.reward + batch.discount * soft_value)

    def critic_loss(critic_group: dict, obs_copies: jnp.ndarray, action: jnp.ndarray,
                    target: jnp.ndarray):
        """Mean over the M augmented copies of the ensemble MSE (the paper's 1/M average)."""
        copies = config.num_q_augs
        features = parts.encoder.apply(critic_group["encoder"], obs_copies)
        q = parts.critic.apply(critic_group["critic"], features, jnp.tile(action, (copies, 1)))
        q = q.reshape(q.shape[0], copies, -1)                                 # [N, M, B]
        loss = jnp.mean(jax.vmap(common.ensemble_mse, in_axes=(1, None))(q, target))
        return loss, q

    def actor_and_alpha_loss(actor_alpha: dict, params: dict, features: jnp.ndarray,
                             beta_pi, key: jax.Array):
        action, log_prob = policy({"actor": actor_alpha["actor"]}, features, key)
        q = parts.critic.apply(params["critic"], features, action)
        alpha = jnp.exp(sg(actor_alpha["log_alpha"]))
        actor_loss = jnp.mean(alpha * log_prob - pessimism.target_value(q, config, beta_pi))
        alpha_loss = jnp.mean(jnp.exp(actor_alpha["log_alpha"])
                              * sg(-log_prob - target_entropy))
        return actor_loss + alpha_loss, (actor_loss, alpha_loss, -jnp.mean(log_prob))

    def update(state: common.AgentState, batch: Batch,
               key: jax.Array) -> tuple[common.AgentState, common.Metrics]:
        common.check_batch(batch, obs_spec, action_dim)
        key_target, key_obs, key_actor = jax.random.split(key, 3)
        target = td_target(state, batch, key_target)
        obs_copies = augment_copies(batch.obs, config.num_q_augs, key_obs, augment)

        critic_group = {"encoder": state.params["encoder"], "critic": state.params["critic"]}
        (loss_critic, q), grads = jax.value_and_grad(critic_loss, has_aux=True)(
            critic_group, obs_copies, batch.action, target)
        critic_group, critic_opt_state = common.apply_optimizer(
            critic_optimizer, grads, state.opt_states["critic"], critic_group)
        params = {**state.params, **critic_group}
        opt_states = {**state.opt_states, "critic": critic_opt_state}
        metrics = {}
        beta_pi = None
        if gpl:
            beta_pi = pessimism.actor_beta(config, state.params["beta"],
                                           common.agent_step(config, state.update_step))
            q_first = q[:, 0]                       # [N, B]: the first augmented copy
            params["beta"], opt_states["beta"], metrics["td_error_mean"] = (
                pessimism.dual_beta_step(config, state.params["beta"], state.opt_states["beta"],
                                         q_first, target))
            metrics.update(beta=params["beta"], beta_actor=beta_pi)

        # Actor and temperature on the first augmented copy, re-encoded by the updated
        # encoder with the gradient stopped (official DrQ: detach_encoder=True).
        def actor_step(_):
            first_obs = obs_copies[: batch.obs.shape[0]]
            features = sg(parts.encoder.apply(params["encoder"], first_obs))
            actor_alpha = {"actor": params["actor"], "log_alpha": params["log_alpha"]}
            grads, (loss_actor, loss_alpha, entropy) = jax.grad(
                actor_and_alpha_loss, has_aux=True)(actor_alpha, params, features, beta_pi,
                                                    key_actor)
            actor, actor_opt = common.apply_optimizer(
                actor_optimizer, grads["actor"], state.opt_states["actor"], params["actor"])
            log_alpha, alpha_opt = common.apply_optimizer(
                alpha_optimizer, grads["log_alpha"], state.opt_states["alpha"],
                params["log_alpha"])
            return actor, log_alpha, actor_opt, alpha_opt, loss_actor, loss_alpha, entropy

        def skip_actor(_):
            zero = jnp.zeros((), jnp.float32)
            return (params["actor"], params["log_alpha"], state.opt_states["actor"],
                    state.opt_states["alpha"], zero, zero, zero)

        (actor, log_alpha, actor_opt, alpha_opt, loss_actor, loss_alpha,
         entropy) = jax.lax.cond(state.update_step % config.actor_update_every == 0,
                                 actor_step, skip_actor, None)
        params = {**params, "actor": actor, "log_alpha": log_alpha}

        def polyak_targets(_):
            return {group: common.polyak(target, params[group], config.tau)
                    for group, target in state.target_params.items()}

        target_params = jax.lax.cond(state.update_step % config.target_update_every == 0,
                                     polyak_targets, lambda _: state.target_params, None)
        new_state = common.AgentState(
            params=params, target_params=target_params,
            opt_states={**opt_states, "actor": actor_opt, "alpha": alpha_opt},
            update_step=state.update_step + 1)
        metrics.update(critic_loss=loss_critic, actor_loss=loss_actor, alpha_loss=loss_alpha,
                       alpha=jnp.exp(log_alpha), entropy=entropy, q_mean=jnp.mean(q),
                       target_q_mean=jnp.mean(target), batch_reward=jnp.mean(batch.reward))
        return new_state, metrics

    return common.Agent(name=name, config=config, obs_spec=obs_spec, action_spec=action_spec,
                        init=init, act=act, update=update)
