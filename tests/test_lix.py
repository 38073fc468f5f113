"""A-LIX pieces (networks/lix.py) against brute-force numpy references written here:
bilinear shift, the LIX layer, normalized discontinuity, the ND probe's gradients, jit and vmap."""
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pixelzoo.networks.lix import bilinear_shift, lix, nd_probe, normalized_discontinuity

ND_TARGET = 0.535
# jit compiles once per shape, several times faster than op-by-op dispatch on a busy CPU.
jit_nd = jax.jit(normalized_discontinuity)
jit_shift = jax.jit(bilinear_shift)


# ----------------------------------------------------------------------------- numpy references
def sample_reference(x: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """Per-pixel bilinear sampling at (i + dy, j + dx), the position clamped into the image."""
    batch, height, width, channels = x.shape
    out = np.zeros(x.shape)
    for b, i, j in itertools.product(range(batch), range(height), range(width)):
        py = min(max(i + dy, 0.0), height - 1.0)
        px = min(max(j + dx, 0.0), width - 1.0)
        y0, x0 = int(math.floor(py)), int(math.floor(px))
        y1, x1 = min(y0 + 1, height - 1), min(x0 + 1, width - 1)
        wy, wx = py - y0, px - x0
        out[b, i, j] = ((1 - wy) * (1 - wx) * x[b, y0, x0] + (1 - wy) * wx * x[b, y0, x1]
                        + wy * (1 - wx) * x[b, y1, x0] + wy * wx * x[b, y1, x1])
    return out


def nd_reference(g: np.ndarray) -> float:
    """Batch mean, then per position and channel the 8 clamped neighbours; mean of log(1 + n/s)."""
    centre = np.asarray(g, np.float64).mean(axis=0)
    height, width, channels = centre.shape
    total = 0.0
    for i, j, c in itertools.product(range(height), range(width), range(channels)):
        signal = noise = 0.0
        for di, dj in itertools.product((-1, 0, 1), (-1, 0, 1)):
            if di == 0 and dj == 0:
                continue
            n = centre[min(max(i + di, 0), height - 1), min(max(j + dj, 0), width - 1), c]
            signal += n * n
            noise += (n - centre[i, j, c]) ** 2
        total += math.log(1.0 + (noise / 8) / (signal / 8 + 1e-20))
    return total / (height * width * channels)


def checkerboard(height: int, width: int) -> np.ndarray:
    """[H, W] of +1 / -1 alternating."""
    i, j = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    return np.where((i + j) % 2 == 0, 1.0, -1.0)


def checkerboard_nd(height: int, width: int) -> float:
    """Hand value. A +-1 checkerboard has signal 1 everywhere; noise = 4 * (#opposite-sign
    neighbours) / 8. Interior: the 4 edge-adjacent neighbours are opposite -> noise 2, log 3.
    Corner (0, 0): clamped neighbours (0,0) x3, (0,1) x2, (1,0) x2, (1,1) -> 4 opposite, log 3.
    Edge, not corner (0, j): (0,j-1) x2, (0,j+1) x2, (1,j) opposite; (0,j) x2, (1,j+-1) same
    -> 5 opposite, noise 2.5, log 3.5."""
    edges = 2 * (height - 2) + 2 * (width - 2)
    return (edges * math.log(3.5) + (height * width - edges) * math.log(3.0)) / (height * width)


def smooth_map(height: int, width: int) -> np.ndarray:
    i, j = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    return 2.0 + np.sin(0.3 * i) + np.cos(0.2 * j)


# ----------------------------------------------------------------------------- bilinear_shift
SHIFTS = [(0.3, -0.7), (-0.25, 0.5), (1.6, -2.25), (-2.5, 2.5), (-3.9, 0.1), (0.0, 0.75),
          (7.2, -8.0), (-0.999, 4.4)]


def test_bilinear_shift_matches_a_per_pixel_bilinear_sampler():
    x = np.random.default_rng(0).normal(size=(2, 5, 6, 3)).astype(np.float32)
    for dy, dx in SHIFTS:
        out = np.asarray(jit_shift(jnp.asarray(x), jnp.array([dy, dx], jnp.float32)))
        np.testing.assert_allclose(out, sample_reference(x, dy, dx), rtol=1e-5, atol=1e-5,
                                   err_msg=f"shift {(dy, dx)}")


def test_integer_shifts_are_exact_edge_padded_crops():
    x = np.random.default_rng(1).normal(size=(2, 5, 6, 3)).astype(np.float32)
    pad = 3
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
    for dy, dx in [(0, 0), (1, 0), (0, -1), (2, -3), (-3, 3), (-1, 2)]:
        out = np.asarray(jit_shift(jnp.asarray(x), jnp.array([dy, dx], jnp.float32)))
        crop = padded[:, pad + dy:pad + dy + 5, pad + dx:pad + dx + 6]
        np.testing.assert_array_equal(out, crop, err_msg=f"shift {(dy, dx)}")


def test_bilinear_shift_gradient_is_the_transposed_sampler_and_shift_gets_none():
    height, width = 4, 5
    # The sampler as a matrix, built column by column from basis images.
    basis = np.eye(height * width).reshape(height * width, height, width)
    shift = (0.4, -1.3)
    matrix = np.stack([sample_reference(e[None, :, :, None], *shift).ravel() for e in basis], axis=1)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1, height, width, 1)).astype(np.float32)
    cotangent = rng.normal(size=(1, height, width, 1)).astype(np.float32)
    loss = lambda x, s: jnp.sum(bilinear_shift(x, s) * cotangent)
    grad_x, grad_shift = jax.jit(jax.grad(loss, argnums=(0, 1)))(jnp.asarray(x), jnp.array(shift, jnp.float32))
    np.testing.assert_allclose(np.asarray(grad_x).ravel(), matrix.T @ cotangent.ravel(), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_array_equal(np.asarray(grad_shift), 0.0)


def test_bilinear_shift_jit_and_vmap_over_shifts():
    x = np.random.default_rng(3).normal(size=(2, 5, 6, 3)).astype(np.float32)
    shifts = np.array(SHIFTS, np.float32)
    out = jax.jit(jax.vmap(bilinear_shift, in_axes=(None, 0)))(jnp.asarray(x), jnp.asarray(shifts))
    for k, (dy, dx) in enumerate(shifts):
        np.testing.assert_allclose(np.asarray(out[k]), sample_reference(x, dy, dx), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- lix
def test_lix_is_exactly_the_identity_in_eval_and_at_zero_shift():
    x = jnp.asarray(np.random.default_rng(4).normal(size=(3, 6, 6, 4)).astype(np.float32))
    np.testing.assert_array_equal(np.asarray(lix(x, 2.5, None, training=False)), np.asarray(x))
    jitted = jax.jit(lix, static_argnames="training")
    for seed in range(5):
        out = jitted(x, jnp.float32(0.0), jax.random.key(seed), training=True)
        np.testing.assert_array_equal(np.asarray(out), np.asarray(x))


def test_lix_draws_one_shift_per_call_within_the_bound():
    """On a ramp image (channel 0 = row index, 1 = column index) the interior output is the
    input plus (dy, dx), which recovers the drawn shift of each call."""
    size, bound = 12, 2.5
    rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    ramp = np.stack([rows, cols], axis=-1).astype(np.float32)
    x = jnp.asarray(np.stack([ramp, ramp + 100.0]))  # two batch items share one shift
    keys = jax.random.split(jax.random.key(7), 200)
    draw = jax.jit(jax.vmap(lambda key, s: lix(x, s, key, training=True), in_axes=(0, None)))
    out = np.asarray(draw(keys, jnp.float32(bound)))
    interior = slice(3, size - 3)  # |shift| <= 2.5 keeps these positions off the clamped border
    delta = out[:, :, interior, interior] - np.asarray(x)[None, :, interior, interior]
    shifts = delta[:, 0, 0, 0]  # [calls, (dy, dx)]
    np.testing.assert_allclose(delta, np.broadcast_to(shifts[:, None, None, None], delta.shape), atol=1e-4)
    assert np.all(np.abs(shifts) <= bound + 1e-5)
    assert shifts.min(axis=0).max() < -0.9 * bound and shifts.max(axis=0).min() > 0.9 * bound
    assert abs(np.corrcoef(shifts[:, 0], shifts[:, 1])[0, 1]) < 0.3  # dy and dx drawn independently
    for k in range(3):  # the whole image is bilinear_shift at the recovered shift
        expected = sample_reference(np.asarray(x), *shifts[k].astype(np.float64))
        np.testing.assert_allclose(out[k], expected, atol=1e-4)


# ----------------------------------------------------------------------------- normalized discontinuity
def test_nd_matches_a_brute_force_loop():
    rng = np.random.default_rng(5)
    for shape in [(3, 5, 4, 2), (1, 3, 7, 1), (2, 1, 4, 3)]:
        g = rng.normal(size=shape).astype(np.float32)
        np.testing.assert_allclose(float(jit_nd(jnp.asarray(g))), nd_reference(g),
                                   rtol=1e-5, err_msg=str(shape))


def test_nd_of_constant_is_zero_and_of_checkerboard_is_the_hand_value():
    assert float(jit_nd(jnp.full((2, 5, 5, 3), 0.7, jnp.float32))) == 0.0
    height, width = 7, 9
    board = checkerboard(height, width)
    expected = checkerboard_nd(height, width)  # 1.1435...
    noise = np.random.default_rng(6).normal(size=(height, width))
    # The batch mean is taken first: (3 * board + noise) and (-board - noise) average to board.
    g = np.stack([3 * board + noise, -board - noise])[..., None].astype(np.float32)
    assert float(jit_nd(jnp.asarray(g))) == pytest.approx(expected, rel=1e-5)
    assert nd_reference(g) == pytest.approx(expected, rel=1e-9)
    # Channels enter the mean: a checkerboard channel next to a constant one halves it.
    two_channels = np.stack([board, np.full_like(board, -2.0)], axis=-1)[None].astype(np.float32)
    assert float(jit_nd(jnp.asarray(two_channels))) == pytest.approx(expected / 2, rel=1e-5)


def test_nd_orders_smooth_below_rough_and_ignores_scale():
    height, width = 8, 8
    rng = np.random.default_rng(8)
    smooth = smooth_map(height, width)
    rough = smooth + 0.7 * rng.normal(size=(height, width))
    nd = lambda m: float(jit_nd(jnp.asarray(m[None, :, :, None], jnp.float32)))
    assert nd(smooth) < 0.05 < nd(rough) < nd(checkerboard(height, width))
    assert nd(1e-4 * rough) == pytest.approx(nd(rough), rel=1e-4)


# ----------------------------------------------------------------------------- nd_probe
def test_nd_probe_is_an_identity_whose_param_gradient_is_target_minus_nd():
    rng = np.random.default_rng(9)
    features = jnp.asarray(rng.normal(size=(3, 5, 6, 2)).astype(np.float32))
    g = rng.normal(size=(3, 5, 6, 2)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(nd_probe(features, 0.5, ND_TARGET)), np.asarray(features))

    loss = lambda f, p, t: jnp.sum(nd_probe(f, p, t) * g)
    grad_f, grad_p, grad_t = jax.grad(loss, argnums=(0, 1, 2))(features, jnp.float32(0.5), jnp.float32(ND_TARGET))
    np.testing.assert_array_equal(np.asarray(grad_f), g)
    assert float(grad_p) == pytest.approx(ND_TARGET - nd_reference(g), rel=1e-5)
    assert ND_TARGET - float(grad_p) == pytest.approx(nd_reference(g), rel=1e-5)  # ND recovered
    assert float(grad_t) == 0.0

    # The ND is of the total cotangent dL/dfeatures: here through a tanh plus a second path.
    def loss(f, p):
        out = nd_probe(f, p, ND_TARGET)
        return jnp.sum(jnp.tanh(out) * g) + jnp.sum(out * g[::-1])
    cotangent = (1 - np.tanh(np.asarray(features, np.float64)) ** 2) * g + g[::-1]
    assert float(jax.grad(loss, argnums=1)(features, jnp.float32(0.5))) == pytest.approx(
        ND_TARGET - nd_reference(cotangent), rel=1e-5)


def test_nd_probe_descent_raises_param_on_rough_gradients_and_lowers_it_on_smooth_ones():
    height, width = 7, 9
    features = jnp.zeros((2, height, width, 1), jnp.float32)
    param, lr = jnp.float32(0.5), 0.1
    rough = np.broadcast_to(checkerboard(height, width)[None, :, :, None], features.shape)
    smooth = np.broadcast_to(smooth_map(height, width)[None, :, :, None], features.shape)
    step = lambda g: float(param - lr * jax.grad(lambda p: jnp.sum(nd_probe(features, p, ND_TARGET) * g))(param))
    assert step(rough) == pytest.approx(0.5 - lr * (ND_TARGET - checkerboard_nd(height, width)), rel=1e-5)
    assert step(rough) > 0.5  # ND 1.14 > 0.535: more mixing
    assert step(smooth) < 0.5  # ND < 0.535: less mixing


def test_nd_probe_under_jit_and_vmap():
    rng = np.random.default_rng(10)
    gs = rng.normal(size=(4, 2, 5, 5, 3)).astype(np.float32)
    gs[1] = np.broadcast_to(checkerboard(5, 5)[None, :, :, None], gs[1].shape)
    gs[2] = 1.5
    features = jnp.asarray(rng.normal(size=(2, 5, 5, 3)).astype(np.float32))
    grad_p = lambda g, p: jax.grad(lambda p: jnp.sum(nd_probe(features, p, ND_TARGET) * g))(p)
    grads = jax.jit(jax.vmap(grad_p, in_axes=(0, None)))(jnp.asarray(gs), jnp.float32(0.5))
    expected = [ND_TARGET - nd_reference(g) for g in gs]
    np.testing.assert_allclose(np.asarray(grads), expected, rtol=1e-5)
    assert float(grads[2]) == pytest.approx(ND_TARGET)
    nds = jax.vmap(normalized_discontinuity)(jnp.asarray(gs))
    np.testing.assert_allclose(np.asarray(nds), [nd_reference(g) for g in gs], rtol=1e-5)
