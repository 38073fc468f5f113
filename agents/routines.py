"""Routines' policy space (config.policy_space='routine'; docs/algorithms.md, Routines).

The actor outputs a routine z [B, Dz] in [-1, 1]; a decoder turns z into L actions and L
stop probabilities; a prefix encoder maps action windows back to one routine per prefix.
The critic is the config's ensemble with z in place of the action. On the sac base this is
Routine SAC (a stochastic decoder, entropy terms), on the ddpg base Routine TD3 (a
deterministic decoder, noise on z). The formulas are agents/routine_losses.py; this module
holds the networks (`RoutinePolicy`), the routine actor kind and its update
(`update`, on `replay.windows.Windows`).
"""
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from pixelzoo import networks
from pixelzoo.agents import losses
from pixelzoo.agents import routine_losses as rl
from pixelzoo.agents.config import Config

sg = jax.lax.stop_gradient
POLICY = "policy"                        # the routine actor's parameters
DECODER = ("decoder_hidden", "decoder_out")
ENCODER = ("embed_kernel", "embed_bias", "position_kernels", "position_biases",
           "out_kernel", "out_bias")


class RoutinePolicy(nn.Module):
    """The routine actor, decoder and prefix encoder in one parameter tree.

    __call__: features [B, D] -> z [B, Dz] = tanh(MLP(trunk(features))) (DrQ-v2's actor
        with Dz outputs).
    decode: z [B, Dz] -> (mean [B, L, A], raw log-std [B, L, A] (zeros when deterministic),
        stop logits [B, L]): Dense(dec_embed, ReLU), reshaped to [L, dec_embed / L], then
        one Dense shared over positions.
    encode: actions [B, L, A] -> z [B, L, Dz], `routine_losses.prefix_encode` (glorot
        kernels, zero biases, as Keras' defaults).
    trunk / head: the routine actor's two halves (SEER stores the trunk's output and, after
        its freeze, runs the head alone; `agents.seer.HeadOf`).
    Callers name the methods by string (method='decode'), so that a `seer.HeadOf` wrapping
    this module can pass them through.
    """

    routine_dim: int
    routine_len: int
    action_dim: int
    feature_dim: int
    hidden_dims: Sequence[int]
    enc_embed: int = 16
    joint_embed: int = 64
    dec_embed: int = 64
    stochastic: bool = True
    dense_inputs: bool = False
    trunk_kind: str = "tanh"            # networks.Trunk's kind
    kernel_gain: float = 1.0            # the routine actor MLP's orthogonal gain

    def setup(self):
        glorot, zeros = nn.initializers.glorot_uniform(), nn.initializers.zeros
        L, A, he, hj = self.routine_len, self.action_dim, self.enc_embed, self.joint_embed
        self.policy = networks.DeterministicActor(self.routine_dim, self.feature_dim,
                                                  self.hidden_dims, self.dense_inputs,
                                                  self.trunk_kind, self.kernel_gain)
        self.decoder_hidden = nn.Dense(self.dec_embed)
        outputs = (2 * A + 1) if self.stochastic else (A + 1)
        self.decoder_out = nn.Dense(outputs)
        self.embed_kernel = self.param("embed_kernel", glorot, (A, he))
        self.embed_bias = self.param("embed_bias", zeros, (he,))
        self.position_kernels = self.param(
            "position_kernels", nn.initializers.variance_scaling(1.0, "fan_avg", "uniform",
                                                                 in_axis=-2, out_axis=-1,
                                                                 batch_axis=(0,)), (L, he, hj))
        self.position_biases = self.param("position_biases", zeros, (L, hj))
        self.out_kernel = self.param("out_kernel", glorot, (hj, self.routine_dim))
        self.out_bias = self.param("out_bias", zeros, (self.routine_dim,))

    def __call__(self, h: jnp.ndarray) -> jnp.ndarray:
        z = self.policy(h)
        if self.is_initializing():                      # create every part's parameters
            self.encode(self.decode(z)[0])
        return z

    def trunk(self, h: jnp.ndarray) -> jnp.ndarray:
        """features [B, D] -> the actor's trunk output [B, feature_dim] ([B, D] with no trunk)."""
        return self.policy.trunk(h)

    def head(self, trunk_output: jnp.ndarray) -> jnp.ndarray:
        """The actor's trunk output [B, feature_dim] -> z [B, Dz]."""
        return self.policy.head(trunk_output)

    def decode(self, z: jnp.ndarray):
        hidden = nn.relu(self.decoder_hidden(z))
        per_position = hidden.reshape(z.shape[0], self.routine_len, -1)
        out = self.decoder_out(per_position)                                # [B, L, .]
        A = self.action_dim
        raw_log_std = out[..., A:2 * A] if self.stochastic else jnp.zeros_like(out[..., :A])
        return out[..., :A], raw_log_std, out[..., -1]

    def encode(self, actions: jnp.ndarray) -> jnp.ndarray:
        return rl.prefix_encode(actions, self.embed_kernel, self.embed_bias,
                                self.position_kernels, self.position_biases,
                                self.out_kernel, self.out_bias)


def build_policy(config: Config, action_dim: int, dense_inputs: bool,
                 trunk_kind: str) -> RoutinePolicy:
    return RoutinePolicy(config.routine_dim, config.routine_len, action_dim,
                         config.feature_dim, config.hidden_dims, config.routine_enc_embed,
                         config.routine_joint_embed, config.routine_dec_embed,
                         stochastic=config.base == "sac", dense_inputs=dense_inputs,
                         trunk_kind=trunk_kind, kernel_gain=config.mlp_init_gain)


def decode_sample(module: RoutinePolicy, params, z: jnp.ndarray, key: jax.Array,
                  noise: bool = True):
    """Decoded actions of routines z [B, Dz] and a sampled length.

    Returns (actions [B, L, A] in (-1, 1), log-densities [B, L] (zeros when deterministic
    or noise=False), length int32 [B] in 1..L, stop probabilities [B, L]).
    tanh(mean + sigma eps) with log sigma = `routine_losses.decoder_log_std` on the sac
    base when noise, tanh(mean) otherwise."""
    key_action, key_length = jax.random.split(key)
    mean, raw_log_std, stop_logits = module.apply(params, z, method="decode")
    if module.stochastic and noise:
        actions, log_probs = losses.tanh_gaussian_sample(
            mean, rl.decoder_log_std(raw_log_std), key_action)          # sums over A only
    else:
        actions, log_probs = jnp.tanh(mean), jnp.zeros(mean.shape[:2], mean.dtype)
    stop_probs = jax.nn.sigmoid(stop_logits)
    return actions, log_probs, rl.sample_length(stop_probs, key_length), stop_probs


def autoencode(module: RoutinePolicy, params, z: jnp.ndarray, key: jax.Array,
               noise: bool = True):
    """The released `autoencode_plans`: decode z, sample actions and a length n, re-encode
    the actions and keep the prefix-n routine z'.

    Returns (z' [B, Dz], actions [B, L, A], log-densities [B, L], length [B])."""
    actions, log_probs, length, _ = decode_sample(module, params, z, key, noise)
    prefixes = module.apply(params, actions, method="encode")         # [B, L, Dz]
    reencoded = jnp.take_along_axis(prefixes, (length - 1)[:, None, None], axis=1)[:, 0]
    return reencoded, actions, log_probs, length


# ----------------------------------------------------------------------------- acting
ACTING_MODES = ("train", "eval")


def _empty_executor(config: Config, action_dim: int) -> dict:
    return {"queue": jnp.zeros((config.routine_len, action_dim), jnp.float32),
            "remaining": jnp.zeros((), jnp.int32), "cursor": jnp.zeros((), jnp.int32),
            "queries": jnp.zeros((), jnp.int32), "steps": jnp.zeros((), jnp.int32)}


def init_acting(config: Config, action_dim: int, key: jax.Array) -> dict:
    """One executor ("plan buffer") per mode, 'train' and 'eval', so an evaluation never
    touches the training episode's queue. Each: the queued actions [L, A], how many are left
    and where the next one is, and the policy queries and actions taken since its last
    `reset_acting`."""
    return {mode: _empty_executor(config, action_dim) for mode in ACTING_MODES}


def reset_acting(config: Config, acting: dict, eval_mode: bool) -> dict:
    """At an episode's start: that mode's queue emptied and its counters zeroed."""
    mode = "eval" if eval_mode else "train"
    return {**acting, mode: _empty_executor(config, acting[mode]["queue"].shape[-1])}


def query_routine(config: Config, module: RoutinePolicy, params, features: jnp.ndarray,
                  key: jax.Array, eval_mode: bool) -> tuple[jnp.ndarray, jnp.ndarray]:
    """One policy query: (actions [L, A] in [-1, 1], length n) for features [1, D].

    Routine SAC samples the decoder (tanh of the means when evaluating); Routine TD3 adds
    clip(N(0, routine_noise^2)) to z in [-1, 1] and N(0, routine_action_noise^2) clipped at
    routine_action_noise_clip to the actions (none when evaluating). n is sampled from the
    stop probabilities in both modes."""
    key_z, key_decode, key_action = jax.random.split(key, 3)
    z = module.apply(params, features)
    explore_td3 = not eval_mode and not module.stochastic
    if explore_td3:
        z = jnp.clip(z + config.routine_noise * jax.random.normal(key_z, z.shape), -1.0, 1.0)
    actions, _, length, _ = decode_sample(module, params, z, key_decode, noise=not eval_mode)
    if explore_td3:
        noise = config.routine_action_noise * jax.random.normal(key_action, actions.shape)
        clip = config.routine_action_noise_clip
        actions = jnp.clip(actions + jnp.clip(noise, -clip, clip), -1.0, 1.0)
    return actions[0], length[0]


def act_and_update(setup, state, features: jnp.ndarray, key: jax.Array,
                   eval_mode: bool) -> tuple[jnp.ndarray, dict]:
    """(action [1, A], acting): the next queued action; an empty queue first queries the
    policy once and queues the first n decoded actions."""
    config, module = setup.config, setup.nets.actor
    mode = "eval" if eval_mode else "train"

    def query(executor):
        actions, length = query_routine(config, module, state.params["actor"], features, key,
                                        eval_mode)
        return {**executor, "queue": actions, "remaining": length,
                "cursor": jnp.zeros((), jnp.int32), "queries": executor["queries"] + 1}

    executor = state.acting[mode]
    executor = jax.lax.cond(executor["remaining"] == 0, query, lambda e: e, executor)
    action = executor["queue"][executor["cursor"]][None]
    executor = {**executor, "cursor": executor["cursor"] + 1,
                "remaining": executor["remaining"] - 1, "steps": executor["steps"] + 1}
    return action, {**state.acting, mode: executor}


def first_action(module, params, features, key, eval_mode: bool, exploration=None):
    """Stateless acting (unused by the launcher, which runs `act_and_update`): the first
    action of a freshly queried routine per row. features [B, D] -> [B, A]."""
    z = module.apply(params, features)
    return decode_sample(module, params, z, key, noise=not eval_mode)[0][:, 0]
