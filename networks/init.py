"""Weight initialisers shared by every network (ALGORITHMS.md section 0).

Dense layers: orthogonal with gain 1; convolutions: orthogonal with the ReLU gain sqrt(2);
biases: zero. This matches the official DrQ-v2 / DrQ `weight_init`.
"""
import math

import flax.linen as nn

dense_kernel_init = nn.initializers.orthogonal(scale=1.0)
conv_kernel_init = nn.initializers.orthogonal(scale=math.sqrt(2.0))
bias_init = nn.initializers.zeros


def dense(features: int, name: str | None = None) -> nn.Dense:
    """A Dense layer with the shared orthogonal init."""
    return nn.Dense(features, kernel_init=dense_kernel_init, bias_init=bias_init, name=name)
