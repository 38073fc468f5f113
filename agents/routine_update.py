"""Routine SAC (sac base) and Routine TD3 (ddpg base): the routine actor kind's update on
windows of L transitions (replay.windows.Windows; docs/algorithms.md, Routines).

`update`: the prefix targets of every window (`next_routine_values`), one joint step of
critic (with the pixel encoder) and prefix encoder + decoder on the prefix TD loss + J_lc
(routine_step_order='joint'; 'per_critic': the released order, `per_critic_steps`), the
critic kind's step (GPL: beta), then every actor_update_every updates the actor step
(routine actor and decoder on J_pi + J_mto) with the temperature step (sac), and the target
step.
"""
import jax
import jax.numpy as jnp
import optax

from pixelzoo.agents import common, routines, steps
from pixelzoo.agents import routine_losses as rl
from pixelzoo.agents.common import AgentState, Metrics, UpdateSetup
from pixelzoo.agents.parts import ActorKind, ValueFn, register_actor

sg = jax.lax.stop_gradient


def routine_optimizer(config) -> optax.GradientTransformation:
    """Adam of the prefix encoder and decoder on the critic's losses."""
    return optax.adam(config.routine_lr)


def temperature_optimizer(config) -> optax.GradientTransformation:
    """Routine SAC's temperature Adam (released: lr 1e-4, beta1 0.5). Its state has the
    structure of the base's alpha Adam state, which init_state makes."""
    return optax.adam(config.routine_alpha_lr, b1=0.5)


def keep_parts(grads: dict, names: tuple[str, ...]) -> dict:
    """`RoutinePolicy` gradients with every top-level part not in `names` zeroed (its Adam
    moments then stay 0, so that optimiser never moves it)."""
    return {"params": {name: value if name in names else jax.tree.map(jnp.zeros_like, value)
                       for name, value in grads["params"].items()}}


def next_routine_values(setup: UpdateSetup, params: dict, target_params: dict,
                        next_obs: jnp.ndarray, key: jax.Array) -> tuple[jnp.ndarray, dict]:
    """V_k [B, L] at each window's observation after k steps: the target critics' value at
    z' = autoencode(actor(s_{t+k})) (Routine TD3: actor + clipped noise, kept in [-1, 1]),
    minus alpha log pi(z') on the sac base. next_obs [B, L, ...] (augmented). No gradient."""
    config, nets = setup.config, setup.nets
    batch, length = next_obs.shape[:2]
    flat = next_obs.reshape(batch * length, *next_obs.shape[2:])
    features = nets.encoder.apply(params["encoder"], flat)
    target_features = nets.encoder.apply(target_params.get("encoder", params["encoder"]), flat)
    key_noise, key_routine = jax.random.split(key)
    z = nets.actor.apply(params["actor"], features)
    if config.base == "ddpg":
        noise = config.routine_target_noise * jax.random.normal(key_noise, z.shape)
        z = jnp.clip(z + jnp.clip(noise, -config.stddev_clip, config.stddev_clip), -1.0, 1.0)
    reencoded, _, log_probs, lengths = routines.autoencode(nets.actor, params["actor"], z,
                                                           key_routine)
    q = nets.critic.apply(target_params["critic"], target_features, reencoded)
    value = nets.critic_kind.value_fn(config, params)(q)
    if config.base == "sac":
        value = value - jnp.exp(params["log_alpha"]) * rl.routine_log_prob(
            log_probs, lengths, config.discount)
    return sg(value.reshape(batch, length)), {"target_routine_length": jnp.mean(lengths)}


def critic_and_routine_loss(trainable: dict, nets, obs: jnp.ndarray, actions: jnp.ndarray,
                            targets: jnp.ndarray, mask: jnp.ndarray,
                            critic_index: int | None = None):
    """Prefix TD loss of Q(s_t, z_k), z_k = encode(a_{t:t+k}), plus J_lc of decoding z_k.

    trainable: {'encoder', 'critic', 'routine'} (the pixel encoder, critics, RoutinePolicy);
    obs [B, ...]; actions [B, L, A]; targets, mask [B, L]; critic_index: the TD loss of
    that critic alone (None: the sum over critics).
    Returns (loss, (Q [N, B, L], td loss, J_lc))."""
    batch, length = actions.shape[:2]
    features = nets.encoder.apply(trainable["encoder"], obs)
    prefixes = nets.actor.apply(trainable["routine"], actions, method="encode")
    flat = prefixes.reshape(batch * length, -1)
    q = nets.critic.apply(trainable["critic"], jnp.repeat(features, length, axis=0), flat)
    q = q.reshape(q.shape[0], batch, length)
    td = rl.prefix_td_loss(q if critic_index is None else q[critic_index:critic_index + 1],
                           targets, mask)
    stop_logits = nets.actor.apply(trainable["routine"], flat, method="decode")[2]
    consistency = rl.length_consistency_loss(stop_logits.reshape(batch, length, length), mask)
    return td + consistency, (q, td, consistency)


def critic_and_routine_step(setup: UpdateSetup, params: dict, opt_states: dict,
                            obs: jnp.ndarray, windows, targets: jnp.ndarray):
    """One step of encoder + critic (critic Adam) and prefix encoder + decoder (routine
    Adam) on `critic_and_routine_loss`. Returns (params, opt_states, Q [N, B, L], metrics)."""
    trainable = {"encoder": params["encoder"], "critic": params["critic"],
                 "routine": params["actor"]}
    (_, (q, td, consistency)), grads = jax.value_and_grad(
        critic_and_routine_loss, has_aux=True)(trainable, setup.nets, obs, windows.actions,
                                               targets, windows.mask)
    critic_group = {"encoder": params["encoder"], "critic": params["critic"]}
    critic_group, critic_opt = common.apply_optimizer(
        setup.optimizers.critic, {"encoder": grads["encoder"], "critic": grads["critic"]},
        opt_states["critic"], critic_group)
    routine, routine_opt = common.apply_optimizer(
        routine_optimizer(setup.config),
        keep_parts(grads["routine"], routines.ENCODER + routines.DECODER),
        opt_states["routine"], params["actor"])
    return ({**params, **critic_group, "actor": routine},
            {**opt_states, "critic": critic_opt, "routine": routine_opt}, q,
            {"critic_loss": td, "length_consistency_loss": consistency})


def per_critic_steps(setup: UpdateSetup, state: AgentState, obs: jnp.ndarray,
                     next_obs: jnp.ndarray, windows, key: jax.Array):
    """The released order (routine_step_order='per_critic'): for each critic c in turn, its
    prefix targets from fresh samples (`next_routine_values` with the prefix encoder and
    decoder as the previous step left them), a step of critic c alone on its prefix TD loss
    (its own Adam, `opt_states['critic_per_head'][c]`), then a step of the prefix encoder and
    decoder (the routine Adam) on that loss, with the stepped critic, plus J_lc.

    Each critic's Adam only ever receives gradients for its own head (the config refuses
    shared critic parameters), so its moments elsewhere are 0 and it moves nothing else.
    Returns (params, opt_states, Q [N, B, L] (critic c's before its step), the first
    critic's targets [B, L], metrics)."""
    config, nets = setup.config, setup.nets
    params, opt_states = dict(state.params), dict(state.opt_states)
    per_head = list(opt_states["critic_per_head"])
    qs, td_losses, consistency_losses, targets_per_critic = [], [], [], []
    for c, key_c in enumerate(jax.random.split(key, config.num_critics)):
        next_values, target_metrics = next_routine_values(setup, params, state.target_params,
                                                          next_obs, key_c)
        targets = rl.prefix_td_targets(windows.rewards, windows.discounts, next_values,
                                       config.discount)
        targets_per_critic.append(targets)

        def loss(critic, routine, targets=targets, c=c):
            trainable = {"encoder": params["encoder"], "critic": critic, "routine": routine}
            return critic_and_routine_loss(trainable, nets, obs, windows.actions, targets,
                                           windows.mask, critic_index=c)

        # J_lc does not depend on the critics: this is the gradient of critic c's TD loss.
        (_, (q, td, _)), critic_grads = jax.value_and_grad(
            lambda critic: loss(critic, params["actor"]), has_aux=True)(params["critic"])
        group = {"encoder": params["encoder"], "critic": params["critic"]}
        grads = {"encoder": jax.tree.map(jnp.zeros_like, params["encoder"]),
                 "critic": critic_grads}
        group, per_head[c] = common.apply_optimizer(setup.optimizers.critic, grads,
                                                    per_head[c], group)
        params["critic"] = group["critic"]
        (_, (_, _, consistency)), routine_grads = jax.value_and_grad(
            lambda routine: loss(params["critic"], routine), has_aux=True)(params["actor"])
        params["actor"], opt_states["routine"] = common.apply_optimizer(
            routine_optimizer(config),
            keep_parts(routine_grads, routines.ENCODER + routines.DECODER),
            opt_states["routine"], params["actor"])
        qs.append(q[c])
        td_losses.append(td)
        consistency_losses.append(consistency)
    opt_states["critic_per_head"] = tuple(per_head)
    metrics = {"critic_loss": sum(td_losses),
               "length_consistency_loss": jnp.mean(jnp.stack(consistency_losses)),
               **target_metrics}
    return params, opt_states, jnp.stack(qs), targets_per_critic[0], metrics


def actor_loss(routine_params, nets, config, critic_params, features: jnp.ndarray,
               key: jax.Array, alpha: jnp.ndarray, value_fn: ValueFn):
    """J_pi + w J_mto: mean(alpha log pi(z) - V(s, z')) + w mean (z - z')^2, z = actor(s),
    z' its re-encoding (alpha = 0 and log pi = 0 for Routine TD3).
    Returns (loss, per-action mean log-density of the executed actions)."""
    z = nets.actor.apply(routine_params, features)
    reencoded, _, log_probs, lengths = routines.autoencode(nets.actor, routine_params, z, key)
    value = value_fn(nets.critic.apply(critic_params, features, reencoded))
    log_pi = rl.routine_log_prob(log_probs, lengths, config.discount)
    loss = (jnp.mean(sg(alpha) * log_pi - value)
            + config.routine_mto_weight * rl.many_to_one_loss(z, reencoded))
    return loss, rl.per_action_mean_log_prob(log_probs, lengths)


def actor_and_temperature_steps(setup: UpdateSetup, update_step, params: dict,
                                opt_states: dict, features: jnp.ndarray, value_fn: ValueFn,
                                key: jax.Array) -> tuple[dict, dict, Metrics]:
    """The actor step (routine actor and decoder, actor Adam) and, on the sac base, the
    temperature step, on updates where update_step % actor_update_every == 0."""
    config, sac = setup.config, setup.config.base == "sac"
    log_alpha = params.get("log_alpha", jnp.asarray(-jnp.inf))

    def run():
        (loss, mean_log_prob), grads = jax.value_and_grad(actor_loss, has_aux=True)(
            params["actor"], setup.nets, config, params["critic"], features, key,
            jnp.exp(log_alpha), value_fn)
        routine, actor_opt = common.apply_optimizer(
            setup.optimizers.actor, keep_parts(grads, (routines.POLICY, *routines.DECODER)),
            opt_states["actor"], params["actor"])
        new = {"actor": (routine, actor_opt)}
        metrics = {"actor_loss": loss}
        if sac:
            alpha_loss, alpha_grad = jax.value_and_grad(rl.routine_temperature_loss)(
                log_alpha, mean_log_prob, -float(setup.action_dim))
            new["alpha"] = common.apply_optimizer(temperature_optimizer(config), alpha_grad,
                                                  opt_states["alpha"], log_alpha)
            metrics.update(alpha_loss=alpha_loss, entropy=-mean_log_prob)
        return new, metrics

    unchanged = {"actor": (params["actor"], opt_states["actor"])}
    if sac:
        unchanged["alpha"] = (log_alpha, opt_states["alpha"])
    new, metrics = common.gated_step(update_step % config.actor_update_every == 0, run,
                                     unchanged, gate="actor_updated")
    params, opt_states = dict(params), dict(opt_states)
    params["actor"], opt_states["actor"] = new["actor"]
    if sac:
        params["log_alpha"], opt_states["alpha"] = new["alpha"]
    return params, opt_states, metrics


def update(setup: UpdateSetup, state: AgentState, windows,
           key: jax.Array) -> tuple[AgentState, Metrics]:
    """One Routine SAC / Routine TD3 update on windows [B, L] (replay.windows.Windows)."""
    config, nets = setup.config, setup.nets
    batch, length = windows.actions.shape[:2]
    key_obs, key_next, key_target, key_actor = jax.random.split(key, 4)
    obs = setup.augment(windows.obs, key_obs, 1)
    flat_next = windows.next_obs.reshape(batch * length, *windows.next_obs.shape[2:])
    flat_next = setup.augment(flat_next, key_next, 1)   # SEER: one picked copy per obs
    next_obs = flat_next.reshape(batch, length, *flat_next.shape[1:])
    if config.routine_step_order == "per_critic":
        params, opt_states, q, targets, metrics = per_critic_steps(
            setup, state, obs, next_obs, windows, key_target)
    else:
        next_values, target_metrics = next_routine_values(
            setup, state.params, state.target_params, next_obs, key_target)
        targets = rl.prefix_td_targets(windows.rewards, windows.discounts, next_values,
                                       config.discount)
        params, opt_states, q, metrics = critic_and_routine_step(
            setup, state.params, state.opt_states, obs, windows, targets)
        metrics.update(target_metrics)
    # The critic kind's step sees the one-step prefix, valid in every window.
    params, opt_states, actor_value_fn, kind_metrics = steps.pessimism_step(
        config, nets.critic_kind, params, opt_states, q[:, :, 0], targets[:, 0],
        state.update_step)
    features = sg(nets.encoder.apply(params["encoder"], obs))
    params, opt_states, actor_metrics = actor_and_temperature_steps(
        setup, state.update_step, params, opt_states, features, actor_value_fn, key_actor)
    new_state = steps.next_state(setup, state, params, opt_states, key)
    metrics.update(kind_metrics, **actor_metrics, q_mean=jnp.mean(q[:, :, 0]),
                   target_q_mean=jnp.mean(targets[:, 0]), batch_reward=jnp.mean(windows.rewards[:, 0]),
                   prefix_mask_mean=jnp.mean(windows.mask))
    if config.base == "sac":
        metrics["alpha"] = jnp.exp(params["log_alpha"])
    return new_state, metrics


def _routine_opt_states(config, params: dict) -> dict:
    """The routine Adam; with routine_step_order='per_critic', one critic optimiser state
    per critic (over the encoder and critic group; the joint 'critic' state then stays
    unused)."""
    states = {"routine": routine_optimizer(config).init(params["actor"])}
    if config.routine_step_order == "per_critic":
        group = {"encoder": params["encoder"], "critic": params["critic"]}
        critic_optimizer = common.make_optimizers(config).critic
        states["critic_per_head"] = tuple(critic_optimizer.init(group)
                                          for _ in range(config.num_critics))
    return states


def _sample_first_action(module, params, features, key, exploration=None):
    """(first decoded action [B, A], its log-density [B]) of the actor's routine."""
    z = module.apply(params, features)
    actions, log_probs, _, _ = routines.decode_sample(module, params, z, key)
    return actions[:, 0], log_probs[:, 0]


ROUTINE = ActorKind(
    build=routines.build_policy, sample=_sample_first_action, act=routines.first_action,
    bases=("ddpg", "sac"), init_acting=routines.init_acting,
    act_and_update=routines.act_and_update,
    after_uniform_action=lambda config, acting: acting, update=update,
    critic_action_dim=lambda config, action_dim: config.routine_dim,
    init_opt_states=_routine_opt_states, reset_acting=routines.reset_acting)
register_actor("routine", ROUTINE)
