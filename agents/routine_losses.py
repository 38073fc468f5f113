"""Routines (Cetin & Celiktutan, ICML 2021; docs/algorithms.md, Routines) as pure functions.

A routine z [B, Dz] in [-1, 1] stands for up to L actions. The decoder turns it into L
actions and L stop probabilities; the prefix encoder maps replayed action windows back to
one routine per prefix length k = 1..L. These functions are the formulas of the authors'
released code (Aladoro/Routines4RL; /work/shared/specs/routines.md, sections 3-4), over
arrays:

- `prefix_encode`: the linear-then-tanh prefix encoder ("denserecursive");
- `length_probabilities`, `sample_length`: the length n of the executed prefix;
- `prefix_td_targets`, `prefix_td_loss`: the critic's k-step targets for every prefix;
- `length_consistency_targets`, `length_consistency_loss`: J_lc (BCE on stop probabilities);
- `many_to_one_loss`: J_mto, the L2 between a routine and its re-encoding;
- `routine_log_prob`, `per_action_mean_log_prob`, `routine_temperature_loss`: entropy terms.

Shapes: B batch, L routine length (max prefix), A action dimensions, Dz routine dimensions,
N critics. Lengths n are int in 1..L. Position i is 0-based in arrays (the i-th action of a
routine is a[:, i]); prefix k is 1-based (column k - 1).
"""
import jax
import jax.numpy as jnp

sg = jax.lax.stop_gradient


# ----------------------------------------------------------------------------- encoder
def prefix_encode(actions: jnp.ndarray, embed_kernel: jnp.ndarray, embed_bias: jnp.ndarray,
                  position_kernels: jnp.ndarray, position_biases: jnp.ndarray,
                  out_kernel: jnp.ndarray, out_bias: jnp.ndarray) -> jnp.ndarray:
    """Routines of every prefix of an action window: z_j = tanh(V g_j + c), with
    g_j = sum_{k <= j} (W_k (E a_k + e) + b_k).

    actions [B, L, A]; embed_kernel E [A, He], embed_bias e [He] (shared over positions);
    position_kernels W [L, He, Hj], position_biases b [L, Hj] (one per position);
    out_kernel V [Hj, Dz], out_bias c [Dz]. -> z [B, L, Dz], row j the prefix of j+1 actions.
    """
    embedded = actions @ embed_kernel + embed_bias                          # [B, L, He]
    per_position = jnp.einsum("ble,leh->blh", embedded, position_kernels) + position_biases
    return jnp.tanh(jnp.cumsum(per_position, axis=1) @ out_kernel + out_bias)


# ----------------------------------------------------------------------------- lengths
def length_probabilities(stop_probs: jnp.ndarray) -> jnp.ndarray:
    """P(n = k) = prod_{i<k} (1 - d_i) d_k for k = 1..L, the last stop probability taken as
    1 (a routine ends after L actions). stop_probs d [..., L] -> [..., L], column k-1."""
    stop = stop_probs.at[..., -1].set(1.0)
    survive = jnp.cumprod(1.0 - stop, axis=-1)
    before = jnp.concatenate([jnp.ones_like(survive[..., :1]), survive[..., :-1]], axis=-1)
    return before * stop


def sample_length(stop_probs: jnp.ndarray, key: jax.Array) -> jnp.ndarray:
    """n = min{i : b_i = 1}, b_i ~ Bernoulli(d_i) for i < L and b_L = 1.
    stop_probs [..., L] -> int32 [...] in 1..L."""
    stops = jax.random.bernoulli(key, stop_probs).at[..., -1].set(True)
    return jnp.argmax(stops, axis=-1).astype(jnp.int32) + 1


def prefix_mask_of_length(length: jnp.ndarray, routine_len: int) -> jnp.ndarray:
    """float32 [..., L]: 1 at positions i < n (the executed actions). length [...]."""
    return (jnp.arange(routine_len) < length[..., None]).astype(jnp.float32)


# ----------------------------------------------------------------------------- critic
def prefix_td_targets(rewards: jnp.ndarray, discounts: jnp.ndarray, next_values: jnp.ndarray,
                      gamma: float) -> jnp.ndarray:
    """k-step targets of every prefix, without gradient:
    y_k = sum_{i<k} gamma^i r_i + gamma^k d_{k-1} V_k.

    rewards, discounts [B, L]: the window's rewards and environment discounts (0 at a
    termination, 1 at a time limit); next_values [B, L]: V_k = the (soft) value at the
    observation after k steps. -> y [B, L], column k-1 for prefix k."""
    powers = gamma ** jnp.arange(rewards.shape[-1], dtype=jnp.float32)     # gamma^i
    returns = jnp.cumsum(powers * rewards, axis=-1)
    return sg(returns + gamma * powers * discounts * next_values)


def prefix_td_loss(q: jnp.ndarray, targets: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
    """Sum over critics of 1/2 mean over B x L of m_k (Q(s, z_k) - y_k)^2 (masked entries
    count in the denominator, as released). q [N, B, L], targets, mask [B, L] -> scalar."""
    return jnp.sum(0.5 * jnp.mean(mask * (q - targets) ** 2, axis=(1, 2)))


# ----------------------------------------------------------------------------- J_lc
def length_consistency_targets(routine_len: int) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(targets, mask) [L prefixes, L positions]: the routine of a k-action prefix should
    stop at position k (targets = eye) and is judged at positions <= k (mask = lower
    triangle)."""
    return (jnp.eye(routine_len, dtype=jnp.float32),
            jnp.tril(jnp.ones((routine_len, routine_len), jnp.float32)))


def length_consistency_loss(stop_logits: jnp.ndarray, prefix_mask: jnp.ndarray) -> jnp.ndarray:
    """J_lc: binary cross-entropy of the stop probabilities decoded from each prefix's
    routine against `length_consistency_targets`, summed over masked-in entries (positions
    <= k of valid prefixes) and divided by their count.

    stop_logits [B, L prefixes, L positions]; prefix_mask [B, L] (valid prefixes) -> scalar.
    """
    targets, triangle = length_consistency_targets(stop_logits.shape[-1])
    bce = (jax.nn.softplus(stop_logits) - targets * stop_logits)          # -log p of target
    mask = triangle * prefix_mask[..., None]
    return jnp.sum(mask * bce) / jnp.maximum(jnp.sum(mask), 1.0)


# ----------------------------------------------------------------------------- actor
def many_to_one_loss(routine: jnp.ndarray, reencoded: jnp.ndarray) -> jnp.ndarray:
    """J_mto: mean over B x Dz of (z - z')^2, z' the re-encoding of z's decoded prefix."""
    return jnp.mean((routine - reencoded) ** 2)


def routine_log_prob(action_log_probs: jnp.ndarray, length: jnp.ndarray,
                     gamma: float) -> jnp.ndarray:
    """log pi(z) = sum_{i<n} gamma^i log p(a_i), the released discounted sum.
    action_log_probs [B, L] (each decoded action's tanh-Gaussian log-density), length [B]
    -> [B]."""
    routine_len = action_log_probs.shape[-1]
    powers = gamma ** jnp.arange(routine_len, dtype=jnp.float32)
    return jnp.sum(prefix_mask_of_length(length, routine_len) * powers * action_log_probs,
                   axis=-1)


def per_action_mean_log_prob(action_log_probs: jnp.ndarray, length: jnp.ndarray) -> jnp.ndarray:
    """The temperature's l = sum_b sum_{i<n_b} log p(a_bi) / sum_b n_b (undiscounted, per
    executed action). action_log_probs [B, L], length [B] -> scalar."""
    mask = prefix_mask_of_length(length, action_log_probs.shape[-1])
    return jnp.sum(mask * action_log_probs) / jnp.sum(mask)


def routine_temperature_loss(log_alpha: jnp.ndarray, mean_log_prob: jnp.ndarray,
                             target_entropy: float) -> jnp.ndarray:
    """-log(alpha) * sg(l + target_entropy) (released: on log alpha, not alpha); the target
    entropy is -A per action. Scalars -> scalar."""
    return -log_alpha * sg(mean_log_prob + target_entropy)


def decoder_log_std(raw: jnp.ndarray, log_std_min: float = -10.0,
                    log_std_max: float = 2.0) -> jnp.ndarray:
    """The decoder's log sigma = (tanh(raw) + 1) / 2 * (max - min) + min, elementwise."""
    return (jnp.tanh(raw) + 1.0) / 2.0 * (log_std_max - log_std_min) + log_std_min
