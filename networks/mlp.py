"""Multi-layer perceptrons: plain ReLU MLPs and D2RL dense MLPs (ALGORITHMS.md section 6)."""
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from networks.init import dense


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
