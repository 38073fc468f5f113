"""Trunks, actor heads and the vectorised critic ensemble."""
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from pixelzoo.networks.init import dense
from pixelzoo.networks.mlp import MLP


class Trunk(nn.Module):
    """Linear -> LayerNorm (-> tanh): [B, D] -> [B, feature_dim].

    Flare drops the tanh (its latent differences carry meaning in their sign and size)."""

    feature_dim: int
    use_tanh: bool = True

    @nn.compact
    def __call__(self, h: jnp.ndarray) -> jnp.ndarray:
        z = nn.LayerNorm(epsilon=1e-5)(dense(self.feature_dim)(h))
        return jnp.tanh(z) if self.use_tanh else z


class DeterministicActor(nn.Module):
    """DrQ-v2 actor: features [B, D] -> mean action mu [B, A] in (-1, 1)."""

    action_dim: int
    feature_dim: int
    hidden_dims: Sequence[int]
    dense_inputs: bool = False
    trunk_tanh: bool = True

    @nn.compact
    def __call__(self, h: jnp.ndarray) -> jnp.ndarray:
        z = Trunk(self.feature_dim, self.trunk_tanh)(h)
        return jnp.tanh(MLP(self.hidden_dims, self.action_dim, self.dense_inputs)(z))


class TanhGaussianActor(nn.Module):
    """SAC actor: features [B, D] -> (mean [B, A], log_std [B, A]) of the pre-tanh Gaussian.

    log_std = tanh-squashed into [log_std_min, log_std_max] as in the official DrQ code.
    """

    action_dim: int
    feature_dim: int
    hidden_dims: Sequence[int]
    dense_inputs: bool = False
    log_std_min: float = -10.0
    log_std_max: float = 2.0
    trunk_tanh: bool = True

    @nn.compact
    def __call__(self, h: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        z = Trunk(self.feature_dim, self.trunk_tanh)(h)
        out = MLP(self.hidden_dims, 2 * self.action_dim, self.dense_inputs)(z)
        mean, log_std = jnp.split(out, 2, axis=-1)
        log_std = jnp.tanh(log_std)
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (log_std + 1)
        return mean, log_std


class CriticEnsemble(nn.Module):
    """Trunk shared by N Q heads computed as one vectorised module.

    (features [B, D], action [B, A]) -> Q values [N, B]. Each head is an MLP on
    concat(trunk(features), action); the N heads have independent parameters stacked on a
    leading axis (MLP with ensemble_size), so one batched matmul per layer serves them all.
    """

    num_critics: int
    feature_dim: int
    hidden_dims: Sequence[int]
    dense_inputs: bool = False
    trunk_tanh: bool = True

    @nn.compact
    def __call__(self, h: jnp.ndarray, action: jnp.ndarray) -> jnp.ndarray:
        z = jnp.concatenate([Trunk(self.feature_dim, self.trunk_tanh)(h), action], axis=-1)
        q = MLP(self.hidden_dims, 1, self.dense_inputs, ensemble_size=self.num_critics,
                name="q_heads")(z)
        return q[..., 0]
