"""SSPG's formulas and losses as pure functions (docs/algorithms.md, SSPG).

SSPG's policy is the steady state of a reasoning Markov chain (RMC) over actions whose
transition T(a' | s, a) is a tanh-Gaussian that also sees the previous action. Here:
- formulas over arrays: the Gelman-Rubin convergence statistic `gelman_rubin_rhat`, the
  mixture log-density estimate `mixture_log_prob`, the reasoning-steps running average
  `steps_ema_update`, the evaluation candidates `eval_candidates`;
- network-level functions over the agent's parts (`nets`, an agents.parts.Parts whose actor
  is a networks.RMCActor): `run_chain` (S transitions with SSPG's gradient routing),
  `chain_td_target`, `chain_actor_loss`, and `chain_temperature_loss`.

Chains run a fixed number S (= sspg_train_max_steps in the update) of transitions and a mask
says which of them count (the first L): one compiled program for every chain length, vmappable over seeds.
Shapes: S chain steps, B batch, A action dimensions, M parallel chains, N critics.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from pixelzoo.agents.losses import ValueFn, bootstrapped_target

sg = jax.lax.stop_gradient


# ----------------------------------------------------------------------------- formulas
def gelman_rubin_rhat(chains: jnp.ndarray, num_steps: jnp.ndarray | int) -> jnp.ndarray:
    """Multivariate Gelman-Rubin statistic of the first `num_steps` (n >= 2) of S steps.

    chains [M, S, A]: M parallel chains; entries at steps >= n are ignored (masked), so n may
    be traced. With c_m the chain means and o their mean:
    W = mean_m sum_t (x_mt - c_m)(x_mt - c_m)^T / (n - 1), B = sum_m (c_m - o)(c_m - o)^T
    / (M - 1), lambda = max eigenvalue of sym(lstsq(W, B)) (0 when not finite), and
    R-hat = sqrt((n - 1) / n + lambda) (the released code's form: no (M + 1) / M factor).
    Returns a float32 scalar.
    """
    num_chains, max_steps, _ = chains.shape
    n = jnp.asarray(num_steps, jnp.float32)
    mask = (jnp.arange(max_steps) < num_steps).astype(chains.dtype)[None, :, None]
    chain_means = jnp.sum(chains * mask, axis=1) / n                        # [M, A]
    centred = (chains - chain_means[:, None]) * mask                        # [M, S, A]
    within = jnp.einsum("mta,mtb->ab", centred, centred) / (num_chains * (n - 1.0))
    spread = chain_means - jnp.mean(chain_means, axis=0)
    between = spread.T @ spread / (num_chains - 1)
    ratio = jnp.linalg.lstsq(within, between)[0]
    top = jnp.max(jnp.linalg.eigvalsh(0.5 * (ratio + ratio.T)))
    top = jnp.where(jnp.isfinite(top), top, 0.0)
    return jnp.sqrt((n - 1.0) / n + top)


def tanh_log_det(raw: jnp.ndarray) -> jnp.ndarray:
    """sum_d log(1 - tanh(raw_d)^2), computed stably as sum_d 2 (log 2 - raw - softplus(-2
    raw)). raw [..., A] -> [...]."""
    return jnp.sum(2.0 * (jnp.log(2.0) - raw - jax.nn.softplus(-2.0 * raw)), axis=-1)


def mixture_log_prob(raw: jnp.ndarray, mean: jnp.ndarray, log_std: jnp.ndarray,
                     valid: jnp.ndarray) -> jnp.ndarray:
    """SSPG's estimate of log pi(a_j) at each chain action a_j = tanh(raw_j): the mixture of
    every valid kernel of the chain, kernel i being T(. | a_{i-1}) = tanh(N(mean_i, std_i)):

        log pi(a_j) = logsumexp_{i valid} sum_d log N(raw_jd; mean_id, std_id) - log L
                      - sum_d log(1 - tanh(raw_jd)^2),    L = number of valid kernels,

    every valid kernel counting, the one that drew a_j and the later ones included.
    raw, mean, log_std [S, B, A]; valid [S] bool (the first L steps). Returns [S, B] (rows
    of invalid steps hold values that callers mask out).
    """
    std = jnp.exp(log_std)
    # Gaussian log-density of draw j under kernel i: [S_j, S_i, B].
    z = (raw[:, None] - mean[None]) / std[None]
    log_normal = jnp.sum(-0.5 * z ** 2 - log_std[None] - 0.5 * jnp.log(2 * jnp.pi), axis=-1)
    log_normal = jnp.where(valid[None, :, None], log_normal, -jnp.inf)
    num_kernels = jnp.sum(valid).astype(raw.dtype)
    return (jax.nn.logsumexp(log_normal, axis=1) - jnp.log(num_kernels)
            - tanh_log_det(raw))


def steps_ema_update(average: jnp.ndarray, steps: jnp.ndarray, decay: float) -> jnp.ndarray:
    """The running average of reasoning steps, m <- decay * m + (1 - decay) * k, in float32
    with the released code's two roundings: float32(m * decay) + float32((1 - decay) * k).
    average: float32 scalar; steps: the steps k of one act call."""
    decay32 = np.float32(decay)
    rest32 = np.float32(1.0 - decay)
    steps = jnp.asarray(steps, jnp.float32)
    # XLA fuses a product and a sum into one FMA (one rounding, not the released two). The
    # product is rounded on its own inside a one-iteration loop whose trip count XLA cannot
    # know (it reads `steps`), so nothing outside it fuses with it.
    scaled = jax.lax.while_loop(lambda carry: carry[1] < (steps >= 0),
                                lambda carry: (carry[0] * decay32, carry[1] + 1),
                                (average, jnp.zeros((), jnp.int32)))[0]
    return scaled + rest32 * steps


def chain_lengths(average: jnp.ndarray, max_steps: int) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(training and target chain length ceil(m) in [1, max_steps], minimum acting steps
    floor(m) - 1), int32, from the running average m at the start of an update."""
    length = jnp.clip(jnp.ceil(average), 1, max_steps).astype(jnp.int32)
    return length, (jnp.floor(average) - 1.0).astype(jnp.int32)


def eval_candidates(buffer: jnp.ndarray, num_steps: jnp.ndarray,
                    deterministic: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Evaluation's candidate actions: every chain sample plus each chain's deterministic
    transition tanh(mean(s, a_last)).

    buffer [M, S, A] (the first num_steps = k steps valid); deterministic [M, A].
    Returns (candidates [M * (S + 1), A], valid [M * (S + 1)] bool): M * (k + 1) are valid.
    """
    num_chains, max_steps, _ = buffer.shape
    candidates = jnp.concatenate([buffer, deterministic[:, None]], axis=1)   # [M, S + 1, A]
    step_valid = jnp.concatenate([jnp.arange(max_steps) < num_steps, jnp.ones(1, bool)])
    valid = jnp.broadcast_to(step_valid, (num_chains, max_steps + 1))
    return candidates.reshape(-1, candidates.shape[-1]), valid.reshape(-1)


def masked_mean(values: jnp.ndarray, valid: jnp.ndarray) -> jnp.ndarray:
    """Mean of values [S, B] over the steps where valid [S] (and every batch row)."""
    weights = jnp.broadcast_to(valid[:, None], values.shape).astype(values.dtype)
    return jnp.sum(jnp.where(weights > 0, values, 0.0)) / jnp.sum(weights)


# ----------------------------------------------------------------------------- chains
class ChainDraws(NamedTuple):
    """One chain's S steps for B starts: pre-tanh draws, the kernels' parameters and the
    actions a_i = tanh(raw_i), each [S, B, A]."""

    raw: jnp.ndarray
    mean: jnp.ndarray
    log_std: jnp.ndarray
    action: jnp.ndarray


def run_chain(nets, actor_params, features: jnp.ndarray, start: jnp.ndarray, key: jax.Array,
              num_steps: int, live_steps: int) -> ChainDraws:
    """S = num_steps transitions a_i = tanh(mean(s, a_{i-1}) + std(s, a_{i-1}) eps_i) from
    a_0 = start [B, A], on features [B, D] (what nets.actor's trunk takes).

    Gradient routing (SSPG's chain_backprop): the transitions i <= live_steps use the live
    actor parameters; the later ones use them with stop_gradient (trunk included), so the
    parameters get gradients only through the first live_steps transitions, directly and
    through the reparameterised actions the later transitions pass on.
    """
    z = nets.actor.apply(actor_params, features, method="trunk")

    def step(previous, inputs):
        index, step_key = inputs
        live = index < live_steps
        params = jax.tree.map(lambda x: jnp.where(live, x, sg(x)), actor_params)
        mean, log_std = nets.actor.apply(params, jnp.where(live, z, sg(z)), previous,
                                         method="head")
        raw = mean + jnp.exp(log_std) * jax.random.normal(step_key, mean.shape)
        action = jnp.tanh(raw)
        return action, ChainDraws(raw, mean, log_std, action)

    keys = jax.random.split(key, num_steps)
    return jax.lax.scan(step, start, (jnp.arange(num_steps), keys))[1]


def _penalised_value(nets, critic_params, features: jnp.ndarray, actions: jnp.ndarray,
                     value_fn: ValueFn) -> jnp.ndarray:
    """value_fn(Q(s, a)) for every chain action: features [B, D], actions [S, B, A] ->
    [S, B] (the critic trunk runs once per state)."""
    num_steps, batch, _ = actions.shape
    z = nets.critic.apply(critic_params, features, method="trunk")
    tiled = jnp.broadcast_to(z, (num_steps, *z.shape)).reshape(num_steps * batch, -1)
    q = nets.critic.apply(critic_params, tiled, actions.reshape(num_steps * batch, -1),
                          method="head")
    return value_fn(q).reshape(num_steps, batch)


def chain_td_target(nets, actor_params, target_critic_params, next_features: jnp.ndarray,
                    start: jnp.ndarray, reward: jnp.ndarray, discount: jnp.ndarray,
                    length: jnp.ndarray, alpha: jnp.ndarray, key: jax.Array,
                    value_fn: ValueFn, max_steps: int,
                    target_features: jnp.ndarray | None = None) -> jnp.ndarray:
    """SSPG's target y = R + discount * [V'(s', a') - alpha log pi(a')], without gradient.

    a' is the last state of a chain of `length` steps started from the replayed action
    start [B, A] on next_features [B, D] (online encoder); log pi(a') its own chain's
    mixture estimate; V' = value_fn of the target critics on target_features (next_features
    when None). reward, discount [B] -> y [B]."""
    draws = run_chain(nets, sg(actor_params), sg(next_features), start, key, max_steps, 0)
    valid = jnp.arange(max_steps) < length
    log_prob = mixture_log_prob(draws.raw, draws.mean, draws.log_std, valid)
    last = length - 1
    next_action = draws.action[last]
    critic_features = next_features if target_features is None else target_features
    next_q = nets.critic.apply(target_critic_params, critic_features, next_action)
    return bootstrapped_target(reward, discount, value_fn(next_q) - alpha * log_prob[last])


def chain_actor_loss(nets, actor_params, critic_params, features: jnp.ndarray,
                     start: jnp.ndarray, length: jnp.ndarray, alpha: jnp.ndarray,
                     key: jax.Array, value_fn: ValueFn, max_steps: int, live_steps: int
                     ) -> tuple[jnp.ndarray, tuple[jnp.ndarray, jnp.ndarray]]:
    """SSPG's actor loss: mean over the batch and the `length` chain positions j of
    sg(alpha) log pi(a_j) - V(s, a_j), on a chain started from the replayed action
    start [B, A] on features [B, D] (gradient stopped by the caller), V the online critics'
    value_fn. Returns (loss, (log pi [S, B], valid [S]))."""
    draws = run_chain(nets, actor_params, features, start, key, max_steps, live_steps)
    valid = jnp.arange(max_steps) < length
    log_prob = mixture_log_prob(draws.raw, draws.mean, draws.log_std, valid)
    value = _penalised_value(nets, critic_params, features, draws.action, value_fn)
    return masked_mean(sg(alpha) * log_prob - value, valid), (log_prob, valid)


def chain_temperature_loss(log_alpha: jnp.ndarray, log_prob: jnp.ndarray, valid: jnp.ndarray,
                           target_entropy: jnp.ndarray) -> jnp.ndarray:
    """mean over valid [S] steps and batch of alpha * sg(-log pi - target_entropy),
    differentiated in log_alpha only. log_prob [S, B]."""
    return masked_mean(jnp.exp(log_alpha) * sg(-log_prob - target_entropy), valid)
