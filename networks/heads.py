"""Trunks, actor heads and the vectorised critic ensemble."""
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from pixelzoo.networks.init import dense
from pixelzoo.networks.mlp import MLP


TRUNK_KINDS = ("tanh", "layernorm", "none")


class Trunk(nn.Module):
    """The projection before the actor and critic MLPs, by kind:

    tanh: Linear -> LayerNorm -> tanh, [B, D] -> [B, feature_dim] (DrQ-v2);
    layernorm: Linear -> LayerNorm, [B, D] -> [B, feature_dim] (Flare: its latent
        differences carry meaning in their sign and size);
    none: the identity, [B, D] -> [B, D], no parameters (the released state-based MLPs of
        Routines and SAC, which read the state directly).
    """

    feature_dim: int
    kind: str = "tanh"

    @nn.compact
    def __call__(self, h: jnp.ndarray) -> jnp.ndarray:
        if self.kind not in TRUNK_KINDS:
            raise ValueError(f"unknown trunk kind {self.kind!r}; choose one of {TRUNK_KINDS}")
        if self.kind == "none":
            return h
        z = nn.LayerNorm(epsilon=1e-5)(dense(self.feature_dim)(h))
        return jnp.tanh(z) if self.kind == "tanh" else z


class DeterministicActor(nn.Module):
    """DrQ-v2 actor: features [B, D] -> mean action mu [B, A] in (-1, 1)."""

    action_dim: int
    feature_dim: int
    hidden_dims: Sequence[int]
    dense_inputs: bool = False
    trunk_kind: str = "tanh"            # Trunk.kind
    kernel_gain: float = 1.0            # the MLP's orthogonal gain

    def setup(self):
        # Named as nn.compact would name them: the parameter layout is Trunk_0, MLP_0.
        self.Trunk_0 = Trunk(self.feature_dim, self.trunk_kind)
        self.MLP_0 = MLP(self.hidden_dims, self.action_dim, self.dense_inputs,
                         kernel_gain=self.kernel_gain)

    def __call__(self, h: jnp.ndarray) -> jnp.ndarray:
        return self.head(self.trunk(h))

    def trunk(self, h: jnp.ndarray) -> jnp.ndarray:
        """features [B, D] -> the trunk's output z [B, feature_dim] (trunk 'none': [B, D])."""
        return self.Trunk_0(h)

    def head(self, z: jnp.ndarray) -> jnp.ndarray:
        """z [B, feature_dim] -> mu [B, A]."""
        return jnp.tanh(self.MLP_0(z))


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
    trunk_kind: str = "tanh"            # Trunk.kind
    kernel_gain: float = 1.0            # the MLP's orthogonal gain

    def setup(self):
        self.Trunk_0 = Trunk(self.feature_dim, self.trunk_kind)
        self.MLP_0 = MLP(self.hidden_dims, 2 * self.action_dim, self.dense_inputs,
                         kernel_gain=self.kernel_gain)

    def __call__(self, h: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        return self.head(self.trunk(h))

    def trunk(self, h: jnp.ndarray) -> jnp.ndarray:
        """features [B, D] -> z [B, feature_dim]."""
        return self.Trunk_0(h)

    def head(self, z: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        """z [B, feature_dim] -> (mean, log_std) [B, A] each."""
        out = self.MLP_0(z)
        mean, log_std = jnp.split(out, 2, axis=-1)
        log_std = jnp.tanh(log_std)
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (log_std + 1)
        return mean, log_std


class RMCActor(TanhGaussianActor):
    """SSPG's reasoning-chain transition: (features [B, D], previous action [B, A] in (-1, 1))
    -> (mean [B, A], log_std [B, A]) of the pre-tanh Gaussian of the next action.

    SAC's actor whose head takes [z, a]: the previous action joins after the trunk (D2RL
    feeds [z, a] to every hidden layer). Called without a previous action (init) it takes
    zeros.
    """

    def __call__(self, h: jnp.ndarray, previous: jnp.ndarray | None = None
                 ) -> tuple[jnp.ndarray, jnp.ndarray]:
        if previous is None:
            previous = jnp.zeros((h.shape[0], self.action_dim), h.dtype)
        return self.head(self.trunk(h), previous)

    def head(self, z: jnp.ndarray, previous: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        """(z [B, feature_dim], previous action [B, A]) -> (mean, log_std) [B, A] each."""
        return super().head(jnp.concatenate([z, previous], axis=-1))


class CriticEnsemble(nn.Module):
    """Trunk shared by N Q heads computed as one vectorised module.

    (features [B, D], action [B, A]) -> Q values [N, B], or [N, B, K] with num_outputs = K
    (a distributional critic's K quantiles per head). Each head is an MLP on
    concat(trunk(features), action); the N heads have independent parameters stacked on a
    leading axis (MLP with ensemble_size), so one batched matmul per layer serves them all.
    """

    num_critics: int
    feature_dim: int
    hidden_dims: Sequence[int]
    dense_inputs: bool = False
    trunk_kind: str = "tanh"            # Trunk.kind
    num_outputs: int | None = None      # None: one scalar Q per head, squeezed to [N, B]
    kernel_gain: float = 1.0            # the heads' orthogonal gain

    def setup(self):
        self.Trunk_0 = Trunk(self.feature_dim, self.trunk_kind)
        self.q_heads = MLP(self.hidden_dims, self.num_outputs or 1, self.dense_inputs,
                           ensemble_size=self.num_critics, kernel_gain=self.kernel_gain)

    def __call__(self, h: jnp.ndarray, action: jnp.ndarray) -> jnp.ndarray:
        return self.head(self.trunk(h), action)

    def trunk(self, h: jnp.ndarray) -> jnp.ndarray:
        """features [B, D] -> z [B, feature_dim]."""
        return self.Trunk_0(h)

    def head(self, z: jnp.ndarray, action: jnp.ndarray) -> jnp.ndarray:
        """(z [B, feature_dim], action [B, A]) -> Q [N, B] (or [N, B, num_outputs])."""
        q = self.q_heads(jnp.concatenate([z, action], axis=-1))
        return q[..., 0] if self.num_outputs is None else q
