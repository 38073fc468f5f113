"""Pixel encoders: the 4-layer conv encoder of DrQ / DrQ-v2 (docs/algorithms.md, "Shared pixel pipeline") and
Flare's latent-flow encoder (section 5)."""
import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from pixelzoo.networks.init import bias_init, conv_kernel_init
from pixelzoo.networks.lix import lix, nd_probe


@dataclasses.dataclass(frozen=True)
class LixContext:
    """A-LIX in a training pass: LIX layers shift by up to `max_shift` pixels (keys from
    `key`); with `nd_param` set, the last LIX output passes through `nd_probe`, giving
    nd_param the gradient nd_target - ND(dL/dz)."""

    max_shift: jnp.ndarray
    key: jax.Array
    nd_param: jnp.ndarray | None = None
    nd_target: float = 0.0

NUM_CONV_LAYERS = 4
CONV_CHANNELS = 32


def conv_output_size(image_size: int) -> int:
    """Spatial size after the encoder: 3x3 stride 2, then three 3x3 stride 1, VALID."""
    size = (image_size - 3) // 2 + 1
    return size - 2 * (NUM_CONV_LAYERS - 1)


def min_image_size() -> int:
    """Smallest image the conv encoder accepts (its output must be at least 1x1)."""
    size = 3
    while conv_output_size(size) < 1:
        size += 1
    return size


def _check_plain_valid(padding, lhs_dilation, rhs_dilation, feature_group_count) -> None:
    """Raises ValueError unless VALID padding, no dilation and one group."""
    valid = padding == "VALID" or all(tuple(pad) == (0, 0) for pad in padding)
    if not valid or feature_group_count != 1 or any(
            d not in (None, 1) for dims in (lhs_dilation, rhs_dilation) for d in (dims or ())):
        raise ValueError("the patch convolutions support VALID padding, no dilation and one "
                         "group")


def patch_conv(lhs: jnp.ndarray, rhs: jnp.ndarray, window_strides, padding,
               lhs_dilation=None, rhs_dilation=None, dimension_numbers=None,
               feature_group_count: int = 1, precision=None) -> jnp.ndarray:
    """A VALID NHWC convolution as one matrix product over image patches (im2col).

    lhs: [B, H, W, Cin], rhs (HWIO kernel): [kh, kw, Cin, Cout] -> [B, H', W', Cout].
    Same signature and values as `jax.lax.conv_general_dilated` for what the encoders use
    (VALID padding, no dilation, one group). XLA:CPU runs its convolutions on one core but
    its matrix products on all of them, so on CPU this is about twice as fast as the native
    convolution for the encoder's large stride-2 layer (see `_conv_for_backend`).
    """
    del dimension_numbers  # flax passes NHWC / HWIO, the only layout used here
    _check_plain_valid(padding, lhs_dilation, rhs_dilation, feature_group_count)
    kh, kw, cin, cout = rhs.shape
    sy, sx = window_strides
    out_h = (lhs.shape[1] - kh) // sy + 1
    out_w = (lhs.shape[2] - kw) // sx + 1
    patches = jnp.concatenate(
        [lhs[:, i:i + sy * (out_h - 1) + 1:sy, j:j + sx * (out_w - 1) + 1:sx, :]
         for i in range(kh) for j in range(kw)], axis=-1)     # [B, H', W', kh * kw * Cin]
    return jnp.einsum("bhwk,ko->bhwo", patches, rhs.reshape(kh * kw * cin, cout),
                      precision=precision)


def _width_patches(x: jnp.ndarray, kw: int, out_w: int) -> jnp.ndarray:
    """[B, H, W, C] -> [B, H, W', kw * C]: each position's kw horizontal neighbours."""
    return jnp.concatenate([x[:, :, j:j + out_w, :] for j in range(kw)], axis=-1)


def _row_kernel(rhs: jnp.ndarray) -> jnp.ndarray:
    """HWIO kernel [kh, kw, Cin, Cout] -> [kw * Cin, kh * Cout], rows (j, c), columns (i, o)."""
    kh, kw, cin, cout = rhs.shape
    return rhs.transpose(1, 2, 0, 3).reshape(kw * cin, kh * cout)


def _row_conv_forward(lhs, rhs, precision):
    kh, kw, _, cout = rhs.shape
    out_h, out_w = lhs.shape[1] - kh + 1, lhs.shape[2] - kw + 1
    patches = _width_patches(lhs, kw, out_w)                          # [B, H, W', kw * Cin]
    rows = jnp.einsum("bhwk,kn->bhwn", patches, _row_kernel(rhs), precision=precision)
    rows = rows.reshape(*patches.shape[:3], kh, cout)                 # [B, H, W', kh, Cout]
    out = rows[:, 0:out_h, :, 0, :]
    for i in range(1, kh):
        out = out + rows[:, i:i + out_h, :, i, :]
    return out, patches


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _row_conv(lhs, rhs, precision):
    return _row_conv_forward(lhs, rhs, precision)[0]


def _row_conv_fwd(lhs, rhs, precision):
    out, patches = _row_conv_forward(lhs, rhs, precision)
    return out, (patches, rhs)


def _row_conv_bwd(precision, residuals, d_out):
    patches, rhs = residuals
    kh, kw, cin, cout = rhs.shape
    batch, height, out_w, _ = patches.shape
    # d_rows[b, h, w, i] = d_out[b, h - i, w] (zero outside): the rows' cotangent.
    d_rows = jnp.stack([jnp.pad(d_out, ((0, 0), (i, kh - 1 - i), (0, 0), (0, 0)))
                        for i in range(kh)], axis=3).reshape(batch, height, out_w, kh * cout)
    kernel = _row_kernel(rhs)
    d_patches = jnp.einsum("bhwn,kn->bhwk", d_rows, kernel, precision=precision)
    d_patches = d_patches.reshape(batch, height, out_w, kw, cin)
    d_lhs = jnp.pad(d_patches[:, :, :, 0, :], ((0, 0), (0, 0), (0, kw - 1), (0, 0)))
    for j in range(1, kw):
        d_lhs = d_lhs + jnp.pad(d_patches[:, :, :, j, :],
                                ((0, 0), (0, 0), (j, kw - 1 - j), (0, 0)))
    # The barrier keeps XLA from fusing this transpose into the producer of the patches
    # (a transposed write there is several times slower than this separate copy).
    patches_t = jax.lax.optimization_barrier(patches).reshape(-1, kw * cin).T
    d_kernel = jnp.matmul(patches_t, d_rows.reshape(-1, kh * cout), precision=precision)
    d_rhs = d_kernel.reshape(kw, cin, kh, cout).transpose(2, 0, 1, 3)
    return d_lhs, d_rhs


_row_conv.defvjp(_row_conv_fwd, _row_conv_bwd)


def row_patch_conv(lhs: jnp.ndarray, rhs: jnp.ndarray, window_strides, padding,
                   lhs_dilation=None, rhs_dilation=None, dimension_numbers=None,
                   feature_group_count: int = 1, precision=None) -> jnp.ndarray:
    """A VALID stride-1 NHWC convolution as one matrix product over width patches, whose
    kernel-row outputs are then shifted and summed.

    lhs: [B, H, W, Cin], rhs (HWIO kernel): [kh, kw, Cin, Cout] -> [B, H-kh+1, W-kw+1, Cout].
    Same signature and values as `jax.lax.conv_general_dilated` for stride 1, VALID, no
    dilation, one group. Its intermediates are kw (not kh * kw) times the input, so on
    XLA:CPU, where these layers are memory-bound, the encoder at batch 256 and 84px runs
    forward 2.4x and forward-and-backward 1.5x faster than with `patch_conv` (the backward
    is hand-written: `_row_conv_bwd`).
    """
    _check_plain_valid(padding, lhs_dilation, rhs_dilation, feature_group_count)
    if tuple(window_strides) != (1, 1):
        raise ValueError(f"row_patch_conv supports stride 1, got {tuple(window_strides)}")
    del dimension_numbers  # flax passes NHWC / HWIO, the only layout used here
    return _row_conv(lhs, rhs, precision)


# Below this many output positions (batch x height x width) a convolution is too small for
# the patch products to pay off, and XLA's native convolution compiles faster.
PATCH_CONV_MIN_POSITIONS = 4096


def _conv_for_backend(lhs, rhs, window_strides, padding, **kwargs) -> jnp.ndarray:
    """On CPU, large convolutions are patch products (`row_patch_conv` at stride 1,
    `patch_conv` otherwise); small ones, and all on GPU and TPU, are XLA's native
    convolution (chosen at trace time from the backend and the static shapes)."""
    out_h = (lhs.shape[1] - rhs.shape[0]) // window_strides[0] + 1
    out_w = (lhs.shape[2] - rhs.shape[1]) // window_strides[1] + 1
    if (jax.default_backend() == "cpu"
            and lhs.shape[0] * out_h * out_w >= PATCH_CONV_MIN_POSITIONS):
        if tuple(window_strides) == (1, 1):
            return row_patch_conv(lhs, rhs, window_strides, padding, **kwargs)
        return patch_conv(lhs, rhs, window_strides, padding, **kwargs)
    return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, **kwargs)


def normalize_pixels(obs: jnp.ndarray, centered: bool) -> jnp.ndarray:
    """uint8 pixels -> float32: obs / 255 - 0.5 (DrQ-v2) or obs / 255 (DrQ)."""
    x = obs.astype(jnp.float32) / 255.0
    return x - 0.5 if centered else x


class ConvEncoder(nn.Module):
    """uint8 [B, H, W, C] -> float32 feature maps [B, H', W', 32] (H' = conv_output_size(H)).

    `flatten=True` (default) returns [B, 32 * H' * W'] (39200 at 84px).
    """

    centered: bool = True
    flatten: bool = True

    @nn.compact
    def __call__(self, obs: jnp.ndarray, lix_context: LixContext | None = None) -> jnp.ndarray:
        """lix_context: None for evaluation and acting (LIX is the identity there)."""
        x = normalize_pixels(obs, self.centered)
        for layer in range(NUM_CONV_LAYERS):
            stride = 2 if layer == 0 else 1
            x = nn.Conv(CONV_CHANNELS, (3, 3), strides=(stride, stride), padding="VALID",
                        kernel_init=conv_kernel_init, bias_init=bias_init,
                        conv_general_dilated=_conv_for_backend)(x)
            x = nn.relu(x)
            if lix_context is not None:
                x = lix(x, lix_context.max_shift, jax.random.fold_in(lix_context.key, layer),
                        training=True)
        if lix_context is not None and lix_context.nd_param is not None:
            x = nd_probe(x, lix_context.nd_param, lix_context.nd_target)
        if self.flatten:
            x = x.reshape(x.shape[0], -1)
        return x


class StateEncoder(nn.Module):
    """Proprioceptive states pass through unchanged: float32 [B, D] -> [B, D]."""

    @nn.compact
    def __call__(self, obs: jnp.ndarray, lix_context: LixContext | None = None) -> jnp.ndarray:
        return obs.astype(jnp.float32)


FRAME_CHANNELS = 3


class FlareEncoder(nn.Module):
    """Flare latent flow: uint8 [B, H, W, 3T] -> [B, (T-1) * H' * W' * 64].

    Each of the T stacked frames is encoded by one shared conv encoder; at the feature-map
    level cur = maps of frames 2..T and flow = cur - stop_gradient(maps of frames 1..T-1),
    concatenated on channels (the oldest frame's own map is dropped), then flattened.
    """

    centered: bool = True

    @nn.compact
    def __call__(self, obs: jnp.ndarray, lix_context: LixContext | None = None) -> jnp.ndarray:
        batch, height, width, channels = obs.shape
        num_frames = channels // FRAME_CHANNELS
        frames = obs.reshape(batch, height, width, num_frames, FRAME_CHANNELS)
        frames = frames.transpose(0, 3, 1, 2, 4).reshape(batch * num_frames, height, width,
                                                          FRAME_CHANNELS)
        maps = ConvEncoder(centered=self.centered, flatten=False)(frames, lix_context)
        maps = maps.reshape(batch, num_frames, *maps.shape[1:])      # [B, T, H', W', 32]
        current = maps[:, 1:]
        flow = current - jax.lax.stop_gradient(maps[:, :-1])
        fused = jnp.concatenate([current, flow], axis=-1)             # [B, T-1, H', W', 64]
        return fused.reshape(batch, -1)
