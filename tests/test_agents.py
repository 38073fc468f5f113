"""Agents: augmentation, networks, DrQ-v2 and DrQ updates against hand computation in numpy,
jit and vmap, config presets and per-task recipes."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from dm_env import specs

from pixelzoo import agents
from pixelzoo import networks
from pixelzoo.agents.augment import random_shift
from pixelzoo.replay import Batch
from tests import numpy_reference as ref

IMAGE = 15          # the smallest image the conv encoder takes: a 1x1 output map
ACTION_DIM = 2
BATCH = 5
TINY = dict(hidden_dim=8, feature_dim=4, aug="none", batch_size=BATCH, replay_capacity=100)
PIXEL_SPEC = specs.Array((IMAGE, IMAGE, 9), np.uint8, "pixels")
ACTION_SPEC = specs.BoundedArray((ACTION_DIM,), np.float32, -1.0, 1.0, "action")


def random_batch(seed: int, obs_spec=PIXEL_SPEC, size: int = BATCH) -> Batch:
    rng = np.random.default_rng(seed)
    if obs_spec.dtype == np.uint8:
        obs = lambda: rng.integers(0, 256, (size, *obs_spec.shape), dtype=np.uint8)
    else:
        obs = lambda: rng.normal(size=(size, *obs_spec.shape)).astype(np.float32)
    return Batch(obs=obs(), action=rng.uniform(-1, 1, (size, ACTION_DIM)).astype(np.float32),
                 reward=rng.uniform(0, 1, size).astype(np.float32),
                 discount=np.full(size, 0.99 ** 3, np.float32), next_obs=obs())


# ----------------------------------------------------------------------------- augmentation
def test_random_shift_is_an_edge_padded_integer_crop_with_every_offset():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (1500, 6, 6, 3), dtype=np.uint8)
    shifted = np.asarray(random_shift(jnp.asarray(images), jax.random.key(0)))
    padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)), mode="edge")
    seen = set()
    for i in range(len(images)):
        matches = [(dy, dx) for dy in range(9) for dx in range(9)
                   if np.array_equal(padded[i, dy:dy + 6, dx:dx + 6], shifted[i])]
        assert matches, f"sample {i} is not a crop of its edge-padded image"
        seen.update(matches)
    assert seen == {(dy, dx) for dy in range(9) for dx in range(9)}
    assert shifted.dtype == np.uint8


def test_random_shift_offsets_are_independent_per_sample():
    image = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(1, 8, 8, 3)
    shifted = np.asarray(random_shift(jnp.asarray(np.repeat(image, 64, 0)), jax.random.key(1)))
    assert len({s.tobytes() for s in shifted}) > 30


# ----------------------------------------------------------------------------- networks
def test_conv_encoder_matches_numpy_and_output_sizes():
    for size, expected in ((15, 1), (20, 3), (84, 35)):
        assert networks.conv_output_size(size) == expected
    assert networks.min_image_size() == 15
    obs = np.random.default_rng(1).integers(0, 256, (3, 20, 20, 9), dtype=np.uint8)
    for centered in (True, False):
        encoder = networks.ConvEncoder(centered=centered)
        params = encoder.init(jax.random.key(0), obs)
        got = np.asarray(encoder.apply(params, obs))
        want = ref.conv_encoder(ref.np_params(params), obs, centered)
        assert got.shape == (3, 32 * 3 * 3)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("conv,stride", [("patch_conv", 1), ("patch_conv", 2),
                                         ("row_patch_conv", 1)])
def test_patch_convs_equal_xla_convolution_in_value_and_gradient(conv, stride):
    rng = np.random.default_rng(stride)
    x = jnp.asarray(rng.normal(size=(2, 11, 14, 5)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(3, 3, 5, 7)), jnp.float32)
    native = lambda x, k: jax.lax.conv_general_dilated(
        x, k, (stride, stride), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    patch = lambda x, k: getattr(networks, conv)(x, k, (stride, stride), "VALID")
    np.testing.assert_allclose(patch(x, kernel), native(x, kernel), rtol=1e-5, atol=1e-5)
    loss = lambda conv: lambda x, k: jnp.sum(jnp.sin(conv(x, k)))
    for got, want in zip(jax.grad(loss(patch), (0, 1))(x, kernel),
                         jax.grad(loss(native), (0, 1))(x, kernel)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # Vectorised over a leading (seed) axis, as the multi-seed learner uses them.
    xs, kernels = jnp.stack([x, 2 * x]), jnp.stack([kernel, -kernel])
    for got, want in zip(jax.vmap(jax.grad(loss(patch), (0, 1)))(xs, kernels),
                         jax.vmap(jax.grad(loss(native), (0, 1)))(xs, kernels)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="VALID padding"):
        getattr(networks, conv)(x, kernel, (1, 1), "SAME")


def test_row_patch_conv_refuses_strides_other_than_one():
    x, kernel = jnp.zeros((1, 9, 9, 2)), jnp.zeros((3, 3, 2, 4))
    with pytest.raises(ValueError, match="stride 1"):
        networks.row_patch_conv(x, kernel, (2, 2), "VALID")


def test_init_schemes_are_orthogonal_with_zero_biases():
    encoder = networks.ConvEncoder()
    params = encoder.init(jax.random.key(0), np.zeros((1, 20, 20, 9), np.uint8))["params"]
    for layer in range(4):
        kernel = np.asarray(params[f"Conv_{layer}"]["kernel"]).reshape(-1, 32)
        np.testing.assert_allclose(kernel.T @ kernel, 2.0 * np.eye(32), atol=1e-4)
        assert not np.any(np.asarray(params[f"Conv_{layer}"]["bias"]))
    critic = networks.CriticEnsemble(2, 50, (64, 64))
    params = critic.init(jax.random.key(0), jnp.zeros((1, 100)), jnp.zeros((1, 3)))["params"]
    trunk = np.asarray(params["Trunk_0"]["Dense_0"]["kernel"])       # [100, 50]
    np.testing.assert_allclose(trunk.T @ trunk, np.eye(50), atol=1e-4)
    heads = params["q_heads"]
    hidden = np.asarray(heads["Dense_1"]["kernel"])                   # [2, 64, 64]
    for head in hidden:
        np.testing.assert_allclose(head.T @ head, np.eye(64), atol=1e-4)
    assert not np.allclose(hidden[0], hidden[1]), "critics must be initialised independently"


def test_d2rl_mlp_feeds_the_input_to_every_hidden_layer():
    mlp = networks.MLP((16, 16, 16), 3, dense_inputs=True)
    params = mlp.init(jax.random.key(0), jnp.zeros((1, 5)))["params"]
    widths = [params[f"Dense_{i}"]["kernel"].shape for i in range(4)]
    assert widths == [(5, 16), (21, 16), (21, 16), (16, 3)]


def test_trunk_none_feeds_the_state_to_mlps_of_the_chosen_orthogonal_gain():
    """trunk='none', mlp_init_gain=sqrt(2): the released state networks (Routines, SAC)."""
    spec = specs.Array((5,), np.float32, "state")
    agent = agents.make("drq", spec, ACTION_SPEC, obs_type="state", trunk="none",
                        mlp_init_gain=float(np.sqrt(2)), **TINY)
    state = agent.init(jax.random.key(0))
    p = ref.np_params(state.params)
    assert "Trunk_0" not in p["actor"]["params"] and "Trunk_0" not in p["critic"]["params"]
    actor_layers = p["actor"]["params"]["MLP_0"]
    first, last = actor_layers["Dense_0"]["kernel"], actor_layers["Dense_2"]["kernel"]
    assert first.shape == (5, 8) and last.shape == (8, 2 * ACTION_DIM)
    np.testing.assert_allclose(first @ first.T, 2 * np.eye(5), atol=1e-4)
    np.testing.assert_allclose(last.T @ last, 2 * np.eye(2 * ACTION_DIM), atol=1e-4)
    for head in p["critic"]["params"]["q_heads"]["Dense_0"]["kernel"]:     # [2, 5 + A, 8]
        np.testing.assert_allclose(head @ head.T, 2 * np.eye(5 + ACTION_DIM), atol=1e-4)

    batch = random_batch(1, spec)
    mean, _ = ref.gaussian_actor(p["actor"], batch.obs, -10, 2)
    np.testing.assert_allclose(agent.act(state, batch.obs, jax.random.key(0), eval_mode=True),
                               np.tanh(mean), rtol=1e-4, atol=1e-6)
    q = ref.critic_ensemble(p["critic"], batch.obs, batch.action)          # [2, B]
    _, metrics = jax.jit(agent.update)(state, batch, jax.random.key(1))
    np.testing.assert_allclose(metrics["q_mean"], q.mean(), rtol=1e-4)


# ----------------------------------------------------------------------------- DrQ-v2
@pytest.mark.slow(13)
def test_drqv2_update_matches_hand_computation():
    agent = agents.make("drqv2", PIXEL_SPEC, ACTION_SPEC, **TINY)
    state = agent.init(jax.random.key(3))
    batch = random_batch(0)
    key = jax.random.key(7)
    new_state, metrics = jax.jit(agent.update)(state, batch, key)

    p = ref.np_params(state.params)
    config = agent.config
    # stddev schedule: update 0 happens at agent step num_seed_frames / action_repeat.
    std = 1.0 + (0.1 - 1.0) * (config.num_seed_frames / 2) / config.stddev_steps
    np.testing.assert_allclose(metrics["stddev"], std, rtol=1e-6)
    _, _, key_target, key_actor = jax.random.split(key, 4)
    clip = config.stddev_clip

    def noisy(mean, key_noise):
        noise = np.clip(std * np.asarray(jax.random.normal(key_noise, mean.shape)), -clip, clip)
        return np.clip(mean + noise, -1 + 1e-6, 1 - 1e-6)

    next_h = ref.conv_encoder(p["encoder"], batch.next_obs, centered=True)
    next_action = noisy(ref.deterministic_actor(p["actor"], next_h), key_target)
    target_q = ref.critic_ensemble(ref.np_params(state.target_params["critic"]), next_h,
                                   next_action)
    target = batch.reward + batch.discount * target_q.min(0)
    h = ref.conv_encoder(p["encoder"], batch.obs, centered=True)
    q = ref.critic_ensemble(p["critic"], h, batch.action)
    critic_loss = ((q - target) ** 2).mean(1).sum()
    np.testing.assert_allclose(metrics["target_q_mean"], target.mean(), rtol=1e-4)
    np.testing.assert_allclose(metrics["critic_loss"], critic_loss, rtol=1e-4)
    np.testing.assert_allclose(metrics["q_mean"], q.mean(), rtol=1e-4, atol=1e-6)

    # Actor: pre-update encoder features, post-update critic, clipped noise.
    new_critic = ref.np_params(new_state.params["critic"])
    action = noisy(ref.deterministic_actor(p["actor"], h), key_actor)
    actor_loss = -ref.critic_ensemble(new_critic, h, action).min(0).mean()
    np.testing.assert_allclose(metrics["actor_loss"], actor_loss, rtol=1e-4, atol=1e-6)

    # Polyak target with tau 0.01 of the updated critic; encoder changed by the critic only.
    want_target = jax.tree.map(lambda t, c: 0.99 * t + 0.01 * c, p["critic"], new_critic)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                 ref.np_params(new_state.target_params["critic"]), want_target)
    assert int(new_state.update_step) == 1


def test_drqv2_actor_loss_does_not_train_encoder_or_critic():
    agent = agents.make("drqv2", PIXEL_SPEC, ACTION_SPEC, **TINY)
    lazy = agents.make("drqv2", PIXEL_SPEC, ACTION_SPEC, actor_update_every=2, **TINY)
    state = agent.init(jax.random.key(0))
    state = state.replace(update_step=jnp.ones((), jnp.int32))  # odd step: lazy skips actor
    batch, key = random_batch(1), jax.random.key(2)
    with_actor, _ = jax.jit(agent.update)(state, batch, key)
    without_actor, metrics = jax.jit(lazy.update)(state, batch, key)
    for group in ("encoder", "critic"):
        jax.tree.map(np.testing.assert_array_equal, with_actor.params[group],
                     without_actor.params[group])
    jax.tree.map(np.testing.assert_array_equal, without_actor.params["actor"],
                 state.params["actor"])
    # A skipped actor step reports no value (issue 11: it used to report 0.0).
    assert np.isnan(float(metrics["actor_loss"])) and float(metrics["actor_updated"]) == 0.0


def test_drqv2_act_eval_is_the_mean_and_exploration_is_clipped():
    agent = agents.make("drqv2", PIXEL_SPEC, ACTION_SPEC, **TINY)
    state = agent.init(jax.random.key(0))
    obs = random_batch(3).obs
    p = ref.np_params(state.params)
    mean = ref.deterministic_actor(p["actor"], ref.conv_encoder(p["encoder"], obs, True))
    np.testing.assert_allclose(agent.act(state, obs, jax.random.key(0), eval_mode=True), mean,
                               rtol=1e-4, atol=1e-6)
    key = jax.random.key(5)
    std = 1.0 + (0.1 - 1.0) * 2000 / 100_000
    want = np.clip(mean + std * np.asarray(jax.random.normal(key, mean.shape)), -1, 1)
    np.testing.assert_allclose(agent.act(state, obs, key), want, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- DrQ
@pytest.mark.slow(14)
def test_drq_update_matches_hand_computation():
    agent = agents.make("drq", PIXEL_SPEC, ACTION_SPEC, **TINY)
    config = agent.config
    state = agent.init(jax.random.key(4))
    batch = random_batch(5)
    key = jax.random.key(9)
    new_state, metrics = jax.jit(agent.update)(state, batch, key)

    p = ref.np_params(state.params)
    alpha = 0.1
    lo, hi = config.log_std_min, config.log_std_max
    key_target, _, key_actor = jax.random.split(key, 3)
    _, key_action = jax.random.split(key_target)
    K = config.num_target_augs
    normal = np.asarray(jax.random.normal(key_action, (K * BATCH, ACTION_DIM)))
    next_obs = np.concatenate([batch.next_obs] * K)          # aug none: identical copies
    online = ref.conv_encoder(p["encoder"], next_obs, centered=False)
    next_action, next_log_prob = ref.tanh_gaussian(*ref.gaussian_actor(p["actor"], online,
                                                                       lo, hi), normal)
    target_features = ref.conv_encoder(ref.np_params(state.target_params["encoder"]),
                                       next_obs, centered=False)
    target_q = ref.critic_ensemble(ref.np_params(state.target_params["critic"]),
                                   target_features, next_action)
    soft = (target_q.min(0) - alpha * next_log_prob).reshape(K, BATCH).mean(0)
    target = batch.reward + batch.discount * soft
    h = ref.conv_encoder(p["encoder"], batch.obs, centered=False)
    q = ref.critic_ensemble(p["critic"], h, batch.action)
    np.testing.assert_allclose(metrics["target_q_mean"], target.mean(), rtol=1e-4)
    np.testing.assert_allclose(metrics["critic_loss"], ((q - target) ** 2).mean(1).sum(),
                               rtol=1e-4)

    # Actor and temperature: features of the updated encoder, updated critic.
    new = ref.np_params(new_state.params)
    features = ref.conv_encoder(new["encoder"], batch.obs, centered=False)
    normal = np.asarray(jax.random.normal(key_actor, (BATCH, ACTION_DIM)))
    action, log_prob = ref.tanh_gaussian(*ref.gaussian_actor(p["actor"], features, lo, hi),
                                         normal)
    actor_q = ref.critic_ensemble(new["critic"], features, action).min(0)
    np.testing.assert_allclose(metrics["actor_loss"], np.mean(alpha * log_prob - actor_q),
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(metrics["alpha_loss"],
                               np.mean(alpha * (-log_prob + ACTION_DIM)), rtol=1e-4)
    # One Adam step moves log_alpha by lr against the sign of its gradient.
    grad_sign = np.sign(np.mean(alpha * (-log_prob + ACTION_DIM)))
    np.testing.assert_allclose(new["log_alpha"], np.log(alpha) - 1e-3 * grad_sign, rtol=1e-5)
    # Targets (encoder included) move every 2 updates, starting with update 0.
    jax.tree.map(lambda t, o, c: np.testing.assert_allclose(t, 0.99 * o + 0.01 * c, rtol=1e-5,
                                                            atol=1e-7),
                 ref.np_params(new_state.target_params["encoder"]),
                 ref.np_params(state.target_params["encoder"]), new["encoder"])


def test_drq_eval_action_is_tanh_of_the_mean():
    agent = agents.make("drq", PIXEL_SPEC, ACTION_SPEC, **TINY)
    state = agent.init(jax.random.key(0))
    obs = random_batch(3).obs
    p = ref.np_params(state.params)
    mean, _ = ref.gaussian_actor(p["actor"], ref.conv_encoder(p["encoder"], obs, False),
                                 -10, 2)
    np.testing.assert_allclose(agent.act(state, obs, jax.random.key(0), eval_mode=True),
                               np.tanh(mean), rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------- jit and vmap
@pytest.mark.slow(35)
@pytest.mark.parametrize("name", ["drqv2", "drq"])
def test_vmapped_update_over_seeds_equals_separate_updates(name):
    agent = agents.make(name, PIXEL_SPEC, ACTION_SPEC, **{**TINY, "aug": "shift"})
    seeds = 3
    states = jax.vmap(agent.init)(jax.random.split(jax.random.key(0), seeds))
    batches = [random_batch(10 + i) for i in range(seeds)]
    keys = jax.random.split(jax.random.key(1), seeds)
    stacked = jax.tree.map(lambda *x: np.stack(x), *batches)
    vmapped, vmetrics = jax.jit(jax.vmap(agent.update))(states, stacked, keys)
    update = jax.jit(agent.update)
    for i in range(seeds):
        single, metrics = update(jax.tree.map(lambda x: x[i], states), batches[i], keys[i])
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a[i], b, rtol=2e-4, atol=1e-6),
                     vmapped, single)
        np.testing.assert_allclose(vmetrics["critic_loss"][i], metrics["critic_loss"],
                                   rtol=2e-4)


def test_state_observations_work_end_to_end():
    spec = specs.Array((5,), np.float32, "state")
    agent = agents.make("drqv2", spec, ACTION_SPEC, obs_type="state", **TINY)
    state = agent.init(jax.random.key(0))
    new_state, metrics = jax.jit(agent.update)(state, random_batch(0, spec), jax.random.key(1))
    assert np.isfinite(float(metrics["critic_loss"]))
    assert agent.act(new_state, random_batch(1, spec).obs, jax.random.key(2)).shape == (5, 2)


def test_update_rejects_a_batch_of_the_wrong_shape():
    agent = agents.make("drqv2", PIXEL_SPEC, ACTION_SPEC, **TINY)
    state = agent.init(jax.random.key(0))
    bad = random_batch(0)._replace(obs=np.zeros((BATCH, IMAGE, IMAGE, 3), np.uint8))
    with pytest.raises(ValueError, match=r"expected uint8 \[None, 15, 15, 9\]"):
        agent.update(state, bad, jax.random.key(0))


# ----------------------------------------------------------------------------- config
def test_presets_and_task_recipes():
    assert agents.names() == ["drqv2", "flare", "alix", "gpl", "gpl_quantile", "d2rl", "drq",
                             "iap", "sspg", "seer", "rtsac", "rttd3"]
    build = agents.build_config
    assert build("drqv2", "walker_walk", "easy").batch_size == 512
    assert build("drqv2", "walker_run", "medium").nstep == 1
    humanoid = build("drqv2", "humanoid_run", "hard")
    assert (humanoid.lr, humanoid.feature_dim, humanoid.stddev_steps) == (8e-5, 100, 2_000_000)
    assert build("drqv2", "quadruped_run", "medium").replay_capacity == 100_000
    assert build("drqv2", "cheetah_run", "medium").stddev_steps == 500_000
    assert build("drqv2", "cartpole_swingup", "easy").stddev_steps == 100_000
    assert build("drqv2", "cheetah_run", "medium", batch_size=64).batch_size == 64
    drq = build("drq", "cartpole_swingup")
    assert (drq.base, drq.lr, drq.batch_size, drq.action_repeat, drq.nstep) == (
        "sac", 1e-3, 512, 8, 1)
    assert build("drq", "cheetah_run").action_repeat == 4
    assert build("drq", "finger_spin").num_seed_frames == 2000


# DrQ's action repeat: the PlaNet six keep their per-task values, every other task gets the
# "Dreamer benchmark" value 2, as in the official DrQ curves (docs/algorithms.md, DrQ).
DRQ_ACTION_REPEATS = [("cartpole_swingup", 8), ("finger_spin", 2), ("walker_walk", 2),
                      ("cheetah_run", 4), ("reacher_easy", 4), ("cup_catch", 4),
                      ("ball_in_cup_catch", 4), ("cartpole_balance", 2), ("hopper_hop", 2),
                      ("pendulum_swingup", 2), ("reacher_hard", 2), ("walker_run", 2),
                      ("finger_turn_hard", 2), ("quadruped_walk", 2), ("acrobot_swingup", 2)]


@pytest.mark.parametrize("task, action_repeat", DRQ_ACTION_REPEATS)
def test_drq_action_repeat_is_the_papers_per_task_value(task, action_repeat):
    config = agents.build_config("drq", task)
    assert config.action_repeat == action_repeat
    assert config.num_seed_frames == 1000 * action_repeat     # 1000 seed steps
    assert agents.build_config("drq").action_repeat == 2       # no task: the default


def test_target_encoder_on_the_ddpg_base_is_refused():
    with pytest.raises(ValueError, match="target_encoder=True is part of the sac base"):
        agents.build_config("drqv2", target_encoder=True)
    assert agents.build_config("drq", target_encoder=True).target_encoder


def test_config_errors_name_the_valid_choices():
    with pytest.raises(ValueError,
                       match="choose one of: drqv2, flare, alix, gpl, gpl_quantile, d2rl, drq"):
        agents.make("drqv3", PIXEL_SPEC, ACTION_SPEC)
    with pytest.raises(ValueError, match="did you mean 'batch_size'.*Valid fields"):
        agents.make("drqv2", PIXEL_SPEC, ACTION_SPEC, batch_sise=3)
    with pytest.raises(ValueError, match="image_size >= 15"):
        agents.build_config("drqv2", image_size=12)
    with pytest.raises(ValueError, match="larger than replay_capacity"):
        agents.build_config("drqv2", batch_size=512, replay_capacity=100)
    with pytest.raises(ValueError, match="choose one of: shift, none"):
        agents.build_config("drqv2", aug="crop")
    with pytest.raises(ValueError, match="frame_stack=0 must be >= 1"):
        agents.build_config("drqv2", frame_stack=0)
    with pytest.raises(ValueError, match="trunk='mlp' is not valid; choose one of: "
                                         "layernorm, none"):
        agents.build_config("drqv2", trunk="mlp")
    with pytest.raises(ValueError, match="mlp_init_gain=0 must be > 0"):
        agents.build_config("drqv2", mlp_init_gain=0)
    with pytest.raises(ValueError, match="trunk='none' has no trunk"):
        agents.build_config("seer", trunk="none")


@pytest.mark.slow(18)
def test_encoder_uses_patch_conv_for_large_convolutions_on_cpu_with_the_same_values(
        monkeypatch):
    """At or above PATCH_CONV_MIN_POSITIONS output positions the encoder's CPU convolutions
    are patch products (row_patch_conv's hand-written backward included); below it they are
    native; features and gradients equal numpy's / the native convolution's either way."""
    from pixelzoo.networks import encoders
    encoder = networks.ConvEncoder()
    rng = np.random.default_rng(3)
    params = encoder.init(jax.random.key(0), np.zeros((1, 48, 48, 9), np.uint8))
    big = rng.integers(0, 256, (16, 48, 48, 9), dtype=np.uint8)     # maps 23, 21, 19, 17
    small = rng.integers(0, 256, (1, 20, 20, 9), dtype=np.uint8)
    assert 16 * 17 * 17 >= encoders.PATCH_CONV_MIN_POSITIONS > 1 * 9 * 9
    for obs, native_convolutions in ((big, 0), (small, 4)):
        lowered = jax.jit(encoder.apply).lower(params, obs).as_text()
        assert lowered.count("stablehlo.convolution") == native_convolutions
        np.testing.assert_allclose(encoder.apply(params, obs),
                                   ref.conv_encoder(ref.np_params(params), obs, True),
                                   rtol=1e-4, atol=1e-5)
    loss = lambda params: jnp.sum(jnp.sin(encoder.apply(params, big)))
    patch_grads = jax.grad(loss)(params)
    monkeypatch.setattr(encoders, "PATCH_CONV_MIN_POSITIONS", 10 ** 9)
    assert jax.jit(encoder.apply).lower(params, big).as_text().count(
        "stablehlo.convolution") == 4
    for got, want in zip(jax.tree.leaves(patch_grads), jax.tree.leaves(jax.grad(loss)(params))):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
