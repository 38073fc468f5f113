"""Independent numpy forward passes of pixelzoo's networks, for value tests.

Written from the recipes (docs/algorithms.md), reading only parameter arrays from flax trees.
"""
import numpy as np


def np_params(tree):
    import jax
    return jax.tree.map(lambda x: np.asarray(x, np.float64), tree)


def conv_valid(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray, stride: int) -> np.ndarray:
    """x [B, H, W, C], kernel [3, 3, C, O] -> [B, H', W', O], VALID padding."""
    kh, kw = kernel.shape[:2]
    out_h = (x.shape[1] - kh) // stride + 1
    out_w = (x.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], out_h, out_w, kernel.shape[3]))
    for di in range(kh):
        for dj in range(kw):
            patch = x[:, di:di + stride * out_h:stride, dj:dj + stride * out_w:stride, :]
            out += patch @ kernel[di, dj]
    return out + bias


def conv_encoder(params: dict, obs: np.ndarray, centered: bool) -> np.ndarray:
    """uint8 [B, H, W, C] -> flattened features [B, D] (4 convs, ReLU after each)."""
    x = obs.astype(np.float64) / 255.0 - (0.5 if centered else 0.0)
    for layer in range(4):
        conv = params["params"][f"Conv_{layer}"]
        x = np.maximum(conv_valid(x, conv["kernel"], conv["bias"], 2 if layer == 0 else 1), 0)
    return x.reshape(x.shape[0], -1)


def dense(p: dict, x: np.ndarray) -> np.ndarray:
    return x @ p["kernel"] + p["bias"]


def layer_norm(p: dict, x: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def trunk(p: dict | None, h: np.ndarray) -> np.ndarray:
    """Linear -> LayerNorm -> tanh; None (trunk='none', no parameters): the identity."""
    if p is None:
        return h
    return np.tanh(layer_norm(p["LayerNorm_0"], dense(p["Dense_0"], h)))


def mlp(p: dict, x: np.ndarray, num_layers: int) -> np.ndarray:
    for layer in range(num_layers - 1):
        x = np.maximum(dense(p[f"Dense_{layer}"], x), 0)
    return dense(p[f"Dense_{num_layers - 1}"], x)


def deterministic_actor(params: dict, h: np.ndarray, num_layers: int = 3) -> np.ndarray:
    p = params["params"]
    return np.tanh(mlp(p["MLP_0"], trunk(p.get("Trunk_0"), h), num_layers))


def gaussian_actor(params: dict, h: np.ndarray, log_std_min: float, log_std_max: float,
                   num_layers: int = 3) -> tuple[np.ndarray, np.ndarray]:
    p = params["params"]
    out = mlp(p["MLP_0"], trunk(p.get("Trunk_0"), h), num_layers)
    mean, log_std = np.split(out, 2, axis=-1)
    log_std = log_std_min + 0.5 * (log_std_max - log_std_min) * (np.tanh(log_std) + 1)
    return mean, log_std


def critic_outputs(params: dict, h: np.ndarray, action: np.ndarray,
                   num_layers: int = 3) -> np.ndarray:
    """-> [N, B, K]: each head an independent MLP on concat(trunk(h), action) with K outputs
    (K = 1 for scalar critics, the quantiles for quantile critics)."""
    p = params["params"]
    z = np.concatenate([trunk(p.get("Trunk_0"), h), action], -1)
    heads = p["q_heads"]
    num_heads = heads["Dense_0"]["kernel"].shape[0]
    qs = []
    for i in range(num_heads):
        head = {name: {k: v[i] for k, v in layer.items()} for name, layer in heads.items()}
        qs.append(mlp(head, z, num_layers))
    return np.stack(qs)


def critic_ensemble(params: dict, h: np.ndarray, action: np.ndarray,
                    num_layers: int = 3) -> np.ndarray:
    """-> Q [N, B], each head an independent MLP on concat(trunk(h), action)."""
    return critic_outputs(params, h, action, num_layers)[..., 0]


def tanh_gaussian(mean: np.ndarray, log_std: np.ndarray,
                  normal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sample tanh(mean + std * normal) and its log-probability by the change of variables."""
    std = np.exp(log_std)
    u = mean + std * normal
    log_gauss = -0.5 * normal ** 2 - log_std - 0.5 * np.log(2 * np.pi)
    log_prob = np.sum(log_gauss - np.log(1 - np.tanh(u) ** 2), -1)
    return np.tanh(u), log_prob
