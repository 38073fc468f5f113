"""DrQ-v2 (ALGORITHMS.md section 1): DDPG with n-step targets, scheduled exploration noise
and random-shift augmentation, one encoder trained by the critic only."""
import jax
import jax.numpy as jnp
import optax
from dm_env import specs

from networks import LixContext
from agents import common, pessimism
from agents.augment import random_shift
from agents.config import Config
from agents.parts import build_parts, init_params
from replay import Batch

sg = jax.lax.stop_gradient


def make_ddpg(name: str, config: Config, obs_spec: specs.Array,
              action_spec: specs.BoundedArray) -> common.Agent:
    action_dim = int(action_spec.shape[0])
    parts = build_parts(config, obs_spec, action_dim)
    critic_optimizer = optax.adam(config.lr)     # encoder and critic: the critic loss
    actor_optimizer = optax.adam(config.lr)
    gpl = config.critic == "gpl"
    lix_optimizer = optax.adam(config.lix_lr, b1=config.lix_b1)

    def stddev(update_step: jnp.ndarray) -> jnp.ndarray:
        return common.linear_schedule(config.stddev_init, config.stddev_final,
                                      config.stddev_steps,
                                      common.agent_step(config, update_step))

    def init(key: jax.Array) -> common.AgentState:
        params = init_params(parts, obs_spec, action_dim, key)
        critic_group = {"encoder": params["encoder"], "critic": params["critic"]}
        opt_states = {"critic": critic_optimizer.init(critic_group),
                      "actor": actor_optimizer.init(params["actor"])}
        if gpl:
            params["beta"] = jnp.asarray(config.gpl_beta_init, jnp.float32)
            opt_states["beta"] = pessimism.beta_optimizer(config).init(params["beta"])
        if config.lix:
            params["lix_p"] = jnp.asarray(config.lix_init, jnp.float32)
            opt_states["lix_p"] = lix_optimizer.init(params["lix_p"])
        return common.AgentState(
            params=params,
            target_params={"critic": params["critic"]},
            opt_states=opt_states,
            update_step=jnp.zeros((), jnp.int32))

    def act(state: common.AgentState, obs: jnp.ndarray, key: jax.Array,
            eval_mode: bool = False) -> jnp.ndarray:
        common.check_obs(obs, obs_spec)
        features = parts.encoder.apply(state.params["encoder"], obs)
        mean = parts.actor.apply(state.params["actor"], features)
        if eval_mode:
            return mean
        noise = stddev(state.update_step) * jax.random.normal(key, mean.shape)
        return jnp.clip(mean + noise, -1.0, 1.0)

    def critic_loss(critic_group: dict, obs: jnp.ndarray, action: jnp.ndarray,
                    target: jnp.ndarray, lix_context: LixContext | None):
        if lix_context is not None:  # P's gradient (nd_target - ND) arrives through the probe
            lix_context = LixContext(lix_context.max_shift, lix_context.key,
                                     critic_group["lix_p"], config.lix_nd_target)
        features = parts.encoder.apply(critic_group["encoder"], obs, lix_context)
        q = parts.critic.apply(critic_group["critic"], features, action)
        return common.ensemble_mse(q, target), (features, q)

    def actor_loss(actor_params, critic_params, features, std, beta, key):
        mean = parts.actor.apply(actor_params, features)
        action = common.clipped_noise_action(mean, std, config.stddev_clip, key)
        q = parts.critic.apply(critic_params, features, action)
        return -jnp.mean(pessimism.target_value(q, config, beta))

    def td_target(state: common.AgentState, next_obs: jnp.ndarray, batch: Batch,
                  std: jnp.ndarray, key: jax.Array,
                  lix_context: LixContext | None) -> tuple[jnp.ndarray, jnp.ndarray]:
        """y = R + discount * V'(h', a'), V' the pessimistic value of the target critics
        (min of twins, or GPL's penalised mean); h' by the online encoder, no gradient (LIX
        layers active). Returns (y [B], the target critics' uncertainty u' [B])."""
        next_features = sg(parts.encoder.apply(state.params["encoder"], next_obs, lix_context))
        next_mean = parts.actor.apply(state.params["actor"], next_features)
        next_action = common.clipped_noise_action(next_mean, std, config.stddev_clip, key)
        next_q = parts.critic.apply(state.target_params["critic"], next_features, next_action)
        value = pessimism.target_value(next_q, config, state.params.get("beta"))
        return (sg(batch.reward + batch.discount * value),
                pessimism.ensemble_uncertainty(next_q))

    def update(state: common.AgentState, batch: Batch,
               key: jax.Array) -> tuple[common.AgentState, common.Metrics]:
        common.check_batch(batch, obs_spec, action_dim)
        key_obs, key_next_obs, key_target, key_actor, key_lix = jax.random.split(key, 5)
        obs, next_obs = batch.obs, batch.next_obs
        if config.aug == "shift":
            obs = random_shift(obs, key_obs)
            next_obs = random_shift(next_obs, key_next_obs)
        std = stddev(state.update_step)
        obs_lix = next_lix = None
        if config.lix:
            max_shift = config.lix_max_shift * sg(state.params["lix_p"])
            key_obs_lix, key_next_lix = jax.random.split(key_lix)
            obs_lix, next_lix = LixContext(max_shift, key_obs_lix), LixContext(max_shift,
                                                                               key_next_lix)
        target, uncertainty = td_target(state, next_obs, batch, std, key_target, next_lix)

        critic_group = {"encoder": state.params["encoder"], "critic": state.params["critic"]}
        if config.lix:
            critic_group["lix_p"] = state.params["lix_p"]
        (loss_critic, (features, q)), grads = jax.value_and_grad(critic_loss, has_aux=True)(
            critic_group, obs, batch.action, target, obs_lix)
        params = dict(state.params)
        opt_states = dict(state.opt_states)
        metrics = {}
        if config.lix:
            lix_grad = grads.pop("lix_p")
            critic_group.pop("lix_p")
            lix_p, opt_states["lix_p"] = common.apply_optimizer(
                lix_optimizer, lix_grad, state.opt_states["lix_p"], state.params["lix_p"])
            params["lix_p"] = jnp.clip(lix_p, 0.0, 1.0)
            metrics.update(lix_p=params["lix_p"], lix_max_shift=max_shift,
                           lix_nd=config.lix_nd_target - lix_grad)
        critic_group, opt_states["critic"] = common.apply_optimizer(
            critic_optimizer, grads, state.opt_states["critic"], critic_group)
        params.update(critic_group)
        beta_pi = None
        if gpl:
            beta_pi = pessimism.actor_beta(config, state.params["beta"],
                                           common.agent_step(config, state.update_step))
            params["beta"], opt_states["beta"], metrics["td_error_mean"] = (
                pessimism.dual_beta_step(config, state.params["beta"], state.opt_states["beta"],
                                         q, target))
            metrics.update(beta=params["beta"], beta_actor=beta_pi,
                           uncertainty_mean=jnp.mean(uncertainty))

        # The actor sees the features of the pre-update encoder, gradient stopped (official).
        def actor_step(_):
            loss, grads = jax.value_and_grad(actor_loss)(
                state.params["actor"], critic_group["critic"], sg(features), std, beta_pi,
                key_actor)
            params, opt_state = common.apply_optimizer(
                actor_optimizer, grads, state.opt_states["actor"], state.params["actor"])
            return params, opt_state, loss

        def skip_actor(_):
            return state.params["actor"], state.opt_states["actor"], jnp.zeros((), jnp.float32)

        actor_params, actor_opt_state, loss_actor = jax.lax.cond(
            state.update_step % config.actor_update_every == 0, actor_step, skip_actor, None)

        target_critic = jax.lax.cond(
            state.update_step % config.target_update_every == 0,
            lambda _: common.polyak(state.target_params["critic"], critic_group["critic"],
                                    config.tau),
            lambda _: state.target_params["critic"], None)

        new_state = common.AgentState(
            params={**params, "actor": actor_params},
            target_params={"critic": target_critic},
            opt_states={**opt_states, "actor": actor_opt_state},
            update_step=state.update_step + 1)
        metrics.update(critic_loss=loss_critic, actor_loss=loss_actor, q_mean=jnp.mean(q),
                       target_q_mean=jnp.mean(target), batch_reward=jnp.mean(batch.reward),
                       stddev=std)
        return new_state, metrics

    return common.Agent(name=name, config=config, obs_spec=obs_spec, action_spec=action_spec,
                        init=init, act=act, update=update)
