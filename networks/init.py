"""Weight initialisers shared by every network (docs/algorithms.md, "Shared pixel pipeline").

Dense layers: orthogonal with gain 1; convolutions: orthogonal with the ReLU gain sqrt(2);
biases: zero. This matches the official DrQ-v2 / DrQ `weight_init`. Ensembles stack N
independent draws. `gain` sets another orthogonal gain (config.mlp_init_gain: the released
Routines and SSPG MLPs use the ReLU gain sqrt(2)).
"""
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

dense_kernel_init = nn.initializers.orthogonal(scale=1.0)
conv_kernel_init = nn.initializers.orthogonal(scale=math.sqrt(2.0))
bias_init = nn.initializers.zeros


def stacked_dense_kernel_init(gain: float = 1.0):
    """An init of [N, in, out] kernels: N independent orthogonal [in, out] draws of this gain
    (docs/algorithms.md, "Shared pixel pipeline").

    The N matrices are drawn one by one (unbatched QR): XLA:CPU's scheduler can hang
    compiling a jitted init that holds two large batched QRs (jax 0.10.2, 1024 wide).
    """
    one = nn.initializers.orthogonal(scale=gain)

    def init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jnp.ndarray:
        keys = jax.random.split(key, shape[0])
        return jnp.stack([one(keys[i], tuple(shape[1:]), dtype) for i in range(shape[0])])
    return init


def dense(features: int, name: str | None = None, gain: float = 1.0) -> nn.Dense:
    """A Dense layer with the shared orthogonal init (of this gain) and zero bias."""
    return nn.Dense(features, kernel_init=nn.initializers.orthogonal(scale=gain),
                    bias_init=bias_init, name=name)
