"""Multi-layer perceptrons: plain ReLU MLPs and D2RL dense MLPs (ALGORITHMS.md section 6)."""
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from networks.init import bias_init, dense, dense_kernel_init


class MLP(nn.Module):
    """ReLU MLP: x [..., D_in] -> [..., out_dim].

    hidden_dims: widths of the hidden layers. With `dense_inputs=True` this is the D2RL
    network: h1 = relu(W1 x0); h_l = relu(W_l [h_{l-1}, x0]) for l >= 2; out = W_out h_L
    (the input is not concatenated at the output layer).
    """

    hidden_dims: Sequence[int]
    out_dim: int
    dense_inputs: bool = False

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        inputs = x
        h = x
        for layer, width in enumerate(self.hidden_dims):
            if self.dense_inputs and layer > 0:
                h = jnp.concatenate([h, inputs], axis=-1)
            h = nn.relu(dense(width)(h))
        return dense(self.out_dim)(h)


def stacked_dense_kernel_init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32):
    """[N, in, out] kernels: N independent orthogonal [in, out] draws (ALGORITHMS.md section 0).

    The N matrices are drawn one by one (unbatched QR): XLA:CPU's scheduler can hang
    compiling a jitted init that holds two large batched QRs (jax 0.10.2, 1024 wide).
    """
    keys = jax.random.split(key, shape[0])
    return jnp.stack([dense_kernel_init(keys[i], tuple(shape[1:]), dtype)
                      for i in range(shape[0])])


class EnsembleDense(nn.Module):
    """N independent Dense layers: x [B, in] (shared) or [N, B, in] -> [N, B, features].

    Parameters: kernel [N, in, features] (each orthogonal), bias [N, features] (zeros).
    """

    num: int
    features: int

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        kernel = self.param("kernel", stacked_dense_kernel_init,
                            (self.num, x.shape[-1], self.features))
        bias = self.param("bias", bias_init, (self.num, self.features))
        if x.ndim == 2:
            y = jnp.einsum("bi,nio->nbo", x, kernel)
        else:
            y = jnp.einsum("nbi,nio->nbo", x, kernel)
        return y + bias[:, None, :]


class EnsembleMLP(nn.Module):
    """N independent MLPs (the MLP above, D2RL included) computed together:
    x [B, D_in] -> [N, B, out_dim], each layer one batched matmul over the N members.

    Parameters are those of N MLPs stacked on a leading axis: Dense_i/kernel [N, in, out].
    """

    num: int
    hidden_dims: Sequence[int]
    out_dim: int
    dense_inputs: bool = False

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        inputs = jnp.broadcast_to(x, (self.num, *x.shape))
        h = x
        for layer, width in enumerate(self.hidden_dims):
            if self.dense_inputs and layer > 0:
                h = jnp.concatenate([h, inputs], axis=-1)
            h = nn.relu(EnsembleDense(self.num, width, name=f"Dense_{layer}")(h))
        return EnsembleDense(self.num, self.out_dim,
                             name=f"Dense_{len(self.hidden_dims)}")(h)
