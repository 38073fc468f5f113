"""Flax (linen) networks shared by every pixelzoo agent."""
from pixelzoo.networks.attention import AttentionEncoder, num_tokens
from pixelzoo.networks.encoders import (ConvEncoder, FlareEncoder, LixContext, StateEncoder, conv_output_size,
                               min_image_size, normalize_pixels, patch_conv,
                               row_patch_conv)
from pixelzoo.networks.heads import CriticEnsemble, DeterministicActor, TanhGaussianActor, Trunk
from pixelzoo.networks.heads import RMCActor
from pixelzoo.networks.init import (bias_init, conv_kernel_init, dense, dense_kernel_init,
                           stacked_dense_kernel_init)
from pixelzoo.networks.mlp import MLP, EnsembleDense

__all__ = [
    "AttentionEncoder", "num_tokens",
    "ConvEncoder", "FlareEncoder", "LixContext", "StateEncoder", "conv_output_size", "min_image_size", "normalize_pixels",
    "patch_conv", "row_patch_conv",
    "CriticEnsemble", "DeterministicActor", "TanhGaussianActor", "Trunk", "RMCActor", "MLP", "EnsembleDense",
    "stacked_dense_kernel_init", "dense",
    "dense_kernel_init", "conv_kernel_init", "bias_init",
]
