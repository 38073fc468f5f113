"""Multi-layer perceptrons: plain ReLU MLPs and D2RL dense MLPs (docs/algorithms.md, D2RL)."""
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from pixelzoo.networks.init import bias_init, dense, stacked_dense_kernel_init


class MLP(nn.Module):
    """ReLU MLP: x [..., D_in] -> [..., out_dim].

    hidden_dims: widths of the hidden layers. With `dense_inputs=True` this is the D2RL
    network: h1 = relu(W1 x0); h_l = relu(W_l [h_{l-1}, x0]) for l >= 2; out = W_out h_L
    (the input is not concatenated at the output layer).
    ensemble_size: N independent MLPs computed together, x [B, D_in] -> [N, B, out_dim],
    each layer an EnsembleDense (parameters Dense_i/kernel [N, in, out]).
    kernel_gain: the orthogonal gain of every layer's kernel, the output layer's included.
    """

    hidden_dims: Sequence[int]
    out_dim: int
    dense_inputs: bool = False
    ensemble_size: int | None = None
    kernel_gain: float = 1.0

    def _layer(self, width: int, index: int) -> nn.Module:
        if self.ensemble_size is None:
            return dense(width, name=f"Dense_{index}", gain=self.kernel_gain)
        return EnsembleDense(self.ensemble_size, width, self.kernel_gain, name=f"Dense_{index}")

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        inputs = x if self.ensemble_size is None else jnp.broadcast_to(
            x, (self.ensemble_size, *x.shape))
        h = x
        for layer, width in enumerate(self.hidden_dims):
            if self.dense_inputs and layer > 0:
                h = jnp.concatenate([h, inputs], axis=-1)
            h = nn.relu(self._layer(width, layer)(h))
        return self._layer(self.out_dim, len(self.hidden_dims))(h)


class EnsembleDense(nn.Module):
    """N independent Dense layers: x [B, in] (shared) or [N, B, in] -> [N, B, features].

    Parameters: kernel [N, in, features] (each orthogonal of gain kernel_gain), bias
    [N, features] (zeros).
    """

    num: int
    features: int
    kernel_gain: float = 1.0

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        kernel = self.param("kernel", stacked_dense_kernel_init(self.kernel_gain),
                            (self.num, x.shape[-1], self.features))
        bias = self.param("bias", bias_init, (self.num, self.features))
        if x.ndim == 2:
            y = jnp.einsum("bi,nio->nbo", x, kernel)
        else:
            y = jnp.einsum("nbi,nio->nbo", x, kernel)
        return y + bias[:, None, :]
