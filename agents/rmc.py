"""SSPG's reasoning-chain actor kind `rmc` (agents/parts.py, `ActorKind`; docs/algorithms.md,
SSPG): its network (networks.RMCActor), its acting state and how it acts.

Acting state (AgentState.acting), per agent:
- explore_chains, eval_chains [M, A]: the M parallel chains' states, separate for
  exploration and evaluation, never reset (each act call starts where the last one ended);
- steps_average: float32 running average m of the reasoning steps k; min_steps: int32
  minimum acting steps floor(m) - 1 set by each update (1 before the first);
- window_*: the steps, their maximum and the R-hat at stop summed over the act calls since
  the last update (its metrics).
The update is agents/sspg.py's.
"""
import jax
import jax.numpy as jnp

from pixelzoo import networks
from pixelzoo.agents import losses, sspg, sspg_losses
from pixelzoo.agents.config import Config
from pixelzoo.agents.parts import ActorKind, register_actor

WINDOW = ("window_steps_sum", "window_steps_max", "window_rhat_sum", "window_count")


def init_acting(config: Config, action_dim: int, key: jax.Array) -> dict:
    """Both chain sets U(-1, 1), m = sspg_init_steps, min_steps 1, an empty window."""
    key_explore, key_eval = jax.random.split(key)
    shape = (config.sspg_num_chains, action_dim)
    return {"explore_chains": jax.random.uniform(key_explore, shape, jnp.float32, -1.0, 1.0),
            "eval_chains": jax.random.uniform(key_eval, shape, jnp.float32, -1.0, 1.0),
            "steps_average": jnp.asarray(config.sspg_init_steps, jnp.float32),
            "min_steps": jnp.ones((), jnp.int32),
            **{name: jnp.zeros((), jnp.float32) for name in WINDOW}}


def transition_fn(nets, actor_params, features: jnp.ndarray, num_chains: int):
    """(chains [M, A], key) -> next chains tanh(mean + std * eps) [M, A], for one state's
    features [1, D] (the trunk runs once, the M chains in one batched head)."""
    z = nets.actor.apply(actor_params, features, method="trunk")
    z = jnp.broadcast_to(z, (num_chains, z.shape[-1]))

    def transition(chains, key):
        mean, log_std = nets.actor.apply(actor_params, z, chains, method="head")
        return jnp.tanh(mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape))

    return transition, z


def adaptive_unroll(config: Config, transition, start: jnp.ndarray, key: jax.Array,
                    min_steps: jnp.ndarray):
    """SSPG's adaptive unroll from chains start [M, A]: one transition, then one more per
    iteration (k += 1) until R-hat < sspg_rhat_threshold (tested once k >= min_steps) or
    k = sspg_max_steps (S). A lax.while_loop over a fixed buffer [M, S, A].
    Returns (final chains [M, A], k int32, R-hat at stop (0 if never tested), buffer)."""
    max_steps = config.sspg_max_steps
    key, first_key = jax.random.split(key)
    first = transition(start, first_key)
    buffer = jnp.zeros((first.shape[0], max_steps, first.shape[1]), first.dtype)
    buffer = buffer.at[:, 0].set(first)

    def body(carry):
        chains, buffer, k, rhat, _, key = carry
        key, step_key = jax.random.split(key)
        chains = transition(chains, step_key)
        buffer = jax.lax.dynamic_update_index_in_dim(buffer, chains, k, axis=1)
        k = k + 1
        tested = k >= min_steps
        rhat = jnp.where(tested, sspg_losses.gelman_rubin_rhat(buffer, k), rhat)
        done = jnp.where(tested, (rhat < config.sspg_rhat_threshold) | (k >= max_steps),
                         k >= max_steps)
        return chains, buffer, k, rhat, done, key

    carry = (first, buffer, jnp.ones((), jnp.int32), jnp.zeros((), jnp.float32),
             jnp.asarray(max_steps <= 1), key)
    chains, buffer, k, rhat, _, _ = jax.lax.while_loop(lambda c: ~c[4], body, carry)
    return chains, k, rhat, buffer


def _fixed_chain(transition, start: jnp.ndarray, key: jax.Array, num_steps: int):
    """num_steps transitions from start [M, A] -> the last chains [M, A]."""
    return jax.lax.fori_loop(0, num_steps, lambda i, chains: transition(
        chains, jax.random.fold_in(key, i)), start)


def _best_candidate(setup, params, features, z, final, buffer, k):
    """The candidate of highest online-critic value (the critic kind's value, e.g. mean Q -
    beta u) among the M deterministic transitions tanh(mean(s, a_last)) and the M k chain
    samples of buffer [M, S, A] (`sspg_losses.eval_candidates`' set), M candidates at a time
    for the k valid steps only. Returns (action [A], number of candidates M (k + 1))."""
    nets, num_chains = setup.nets, final.shape[0]
    value_fn = nets.critic_kind.value_fn(setup.config, params)
    tiled = jnp.broadcast_to(features, (num_chains, features.shape[-1]))
    value_of = lambda actions: value_fn(nets.critic.apply(params["critic"], tiled, actions))
    mean, _ = nets.actor.apply(params["actor"], z, final, method="head")
    deterministic = jnp.tanh(mean)
    values = value_of(deterministic)
    best = (jnp.max(values), deterministic[jnp.argmax(values)], num_chains)

    def body(carry):
        step, (best_value, best_action, count) = carry
        values = value_of(buffer[:, step])
        better = jnp.max(values) > best_value
        return step + 1, (jnp.where(better, jnp.max(values), best_value),
                          jnp.where(better, buffer[jnp.argmax(values), step], best_action),
                          count + num_chains)

    _, (_, action, count) = jax.lax.while_loop(lambda carry: carry[0] < k, body,
                                               (jnp.zeros((), jnp.int32), best))
    return action, count


def act_and_update(setup, state, features: jnp.ndarray, key: jax.Array, eval_mode: bool):
    """One act call of SSPG on features [1, D] -> (action [1, A], new acting state).

    Evaluation: the adaptive unroll from eval_chains (which become its final chains); the
    action is the best candidate (sspg_eval='argmax_q') or a random chain's final state.
    Exploration, sspg_act_mode='released': the adaptive unroll only measures k; the action
    is a random chain's state after a fixed sspg_explore_steps-step chain from
    explore_chains, which become that chain's states. 'adaptive': a random chain's final
    state of the adaptive unroll, which becomes explore_chains. The running average takes
    k after every call ('released') or after exploration calls only ('adaptive')."""
    config, nets, acting, params = setup.config, setup.nets, state.acting, state.params
    key_unroll, key_fixed, key_pick = jax.random.split(key, 3)
    transition, z = transition_fn(nets, params["actor"], features, config.sspg_num_chains)
    chains_name = "eval_chains" if eval_mode else "explore_chains"
    final, k, rhat, buffer = adaptive_unroll(config, transition, acting[chains_name],
                                             key_unroll, acting["min_steps"])
    pick = jax.random.randint(key_pick, (), 0, config.sspg_num_chains)
    new_chains = final
    if eval_mode and config.sspg_eval == "argmax_q":
        action = _best_candidate(setup, params, features, z, final, buffer, k)[0]
    elif eval_mode or config.sspg_act_mode == "adaptive":
        action = final[pick]
    else:
        new_chains = _fixed_chain(transition, acting[chains_name], key_fixed,
                                  config.sspg_explore_steps)
        action = new_chains[pick]
    feeds_average = config.sspg_act_mode == "released" or not eval_mode
    average = (sspg_losses.steps_ema_update(acting["steps_average"], k, config.sspg_ema_decay)
               if feeds_average else acting["steps_average"])
    steps = k.astype(jnp.float32)
    return action[None], {
        **acting, chains_name: new_chains, "steps_average": average,
        "window_steps_sum": acting["window_steps_sum"] + steps,
        "window_steps_max": jnp.maximum(acting["window_steps_max"], steps),
        "window_rhat_sum": acting["window_rhat_sum"] + rhat,
        "window_count": acting["window_count"] + 1.0}


def after_uniform_action(config: Config, acting: dict) -> dict:
    """A uniform random action counts as k = 1 step in the running average (as the
    released code's num_expl_steps phase)."""
    return {**acting, "steps_average": sspg_losses.steps_ema_update(
        acting["steps_average"], 1, config.sspg_ema_decay)}


def update_size(config: Config):
    """sspg_train_program='per_length': the update's size is the training chain length
    L = ceil(m), clipped to sspg_train_max_steps (None with 'masked': one update)."""
    if config.sspg_train_program != "per_length":
        return None
    return lambda state: sspg_losses.chain_lengths(state.acting["steps_average"],
                                                   config.sspg_train_max_steps)[0]


def sized_config(config: Config, size: int) -> Config:
    """The config whose update runs chains of `size` steps (every mask on at L = size)."""
    return config.replace(sspg_train_max_steps=size)


def _one_transition_sample(module, params, features, key, exploration=None):
    """One transition from a zero previous action and its tanh-Gaussian log-density (the
    SAC draw the RMC reduces to; SSPG's losses use whole chains, agents/sspg.py)."""
    return losses.tanh_gaussian_sample(*module.apply(params, features), key)


RMC = ActorKind(
    build=lambda config, action_dim, dense_inputs, trunk_kind: networks.RMCActor(
        action_dim, config.feature_dim, config.hidden_dims, dense_inputs, config.log_std_min,
        config.log_std_max, trunk_kind, config.mlp_init_gain),
    sample=_one_transition_sample,
    act=lambda module, params, features, key, eval_mode, exploration=None:
        _one_transition_sample(module, params, features, key)[0],
    bases=("sac",), init_acting=init_acting, act_and_update=act_and_update,
    after_uniform_action=after_uniform_action, update=sspg.update,
    update_size=update_size, sized_config=sized_config)

register_actor("rmc", RMC)
