"""SEER (stored embeddings) as a part of the ddpg base: the capacity rule, the conversion of
the replay into latents, the frozen layers, the heads-only update against a hand-made
reference, and the freeze inside the training loop (seeds, device replay, resume, SIGKILL);
and with Routines from pixels (windows of stored latents)."""

import functools

import dm_env
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from dm_env import specs

from pixelzoo import agents, replay
from pixelzoo.agents import losses
from pixelzoo.agents.augment import random_shift
from pixelzoo.launch import loop
from pixelzoo.launch.checkpointing import RunCheckpointer
from tests.test_train import TINY_RUN, kill_when, launch, read_csv

IMAGE, ACTION_DIM, BATCH, COPIES = 16, 2, 6, 3
PIXEL_SPEC = specs.Array((IMAGE, IMAGE, 9), np.uint8, "pixels")
ACTION_SPEC = specs.BoundedArray((ACTION_DIM,), np.float32, -1.0, 1.0, "action")
SMALL = dict(hidden_dim=16, feature_dim=4, batch_size=BATCH, replay_capacity=100,
             seer_freeze_frames=8, seer_num_copies=COPIES)


def make_agent(preset="seer", **overrides):
    return agents.make(preset, PIXEL_SPEC, ACTION_SPEC, **{**SMALL, **overrides})


def test_the_capacity_rule():
    # 84px: 1M frames of 21,168 bytes hold 13.23M timesteps of 4 copies of two 50-d
    # float32 latents (1,600 bytes); a 1M-frame run at action repeat 2 needs 500k.
    assert losses.seer_latent_capacity(1_000_000, 3 * 84 * 84, 50, 4, 10**9) == 13_230_000
    assert losses.seer_latent_capacity(1_000_000, 3 * 84 * 84, 50, 4, 500_000) == 500_000
    assert losses.seer_latent_capacity(80_000, 3 * 84 * 84, 50, 4, 10**9) == 1_058_400


def filled_pixel_buffer(rng, capacity=40, steps=55, episode=13):
    """A pixel replay that wrapped its ring, with episodes of `episode` timesteps."""
    buffer = replay.ReplayBuffer(PIXEL_SPEC, ACTION_SPEC, capacity, nstep=3, discount=0.99)
    for t in range(steps):
        obs = rng.integers(0, 256, PIXEL_SPEC.shape, dtype=np.uint8)
        if t % episode == 0:
            buffer.add(dm_env.restart(obs))
        elif t % episode == episode - 1:
            buffer.add(dm_env.truncation(np.float32(rng.random()), obs),
                       rng.uniform(-1, 1, ACTION_DIM).astype(np.float32))
        else:
            buffer.add(dm_env.transition(np.float32(rng.random()), obs),
                       rng.uniform(-1, 1, ACTION_DIM).astype(np.float32))
    return buffer


@pytest.mark.slow(15)
def test_converted_latents_are_the_frozen_layers_on_the_stored_frames_with_n_step_values():
    agent = make_agent()
    state = agent.seer.freeze(agent.init(jax.random.key(0)))
    buffer = filled_pixel_buffer(np.random.default_rng(0))
    key = jax.random.key(9)

    def encode(obs, latent_indices):
        return np.stack([np.asarray(agent.seer.encode_latents(
            state, o[None], jax.random.fold_in(key, int(i)))[0])
            for o, i in zip(obs, latent_indices)])

    latent = replay.to_latent_replay(buffer, agent.seer.latent_spec, 500, encode,
                                     chunk_size=7)
    first = replay.first_complete_timestep(buffer)
    assert latent.capacity == 500 and latent.num_added == buffer.num_added - first
    # Every timestep: its stack, shifted COPIES times, through the encoder and both trunks.
    p = state.params
    for new_index in (0, 5, latent.num_added - 1):
        obs = buffer.observations(np.asarray([first + new_index]))
        shifted = random_shift(jnp.concatenate([obs] * COPIES),
                               jax.random.fold_in(key, new_index))
        features = _encoder(agent)(p["encoder"], shifted)
        want = np.concatenate([_trunk(agent, "critic")(p["critic"], features),
                               _trunk(agent, "actor")(p["actor"], features)], -1)
        np.testing.assert_allclose(latent.observations(np.asarray([new_index]))[0], want,
                                   rtol=1e-5, atol=1e-6)
    # n-step windows and episode boundaries: the same transitions, the same values.
    starts = latent.sampleable_indices()
    assert len(starts) == len(buffer.sampleable_indices())
    got, want = latent.gather(starts), buffer.gather(starts + first)
    for name in ("action", "reward", "discount"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    np.testing.assert_array_equal(got.next_obs, latent.observations(starts + 3))


def _encoder(agent):
    from pixelzoo.agents.parts import build_parts
    nets = build_parts(agent.config, PIXEL_SPEC, ACTION_DIM)
    return lambda params, obs: np.asarray(nets.encoder.apply(params, obs))


def _trunk(agent, group):
    from pixelzoo.agents.parts import build_parts
    net = getattr(build_parts(agent.config, PIXEL_SPEC, ACTION_DIM), group)
    return lambda params, features: np.asarray(net.apply(params, features, method="trunk"))


@pytest.mark.slow(15)
def test_the_post_freeze_update_trains_the_heads_as_the_full_update_would_and_nothing_else():
    """From a fresh state (Adam moments zero): one update on stored latents equals the
    pixel update with the frozen layers' gradients zeroed and the same shifts; three more
    leave the frozen parameters bit-identical."""
    agent = make_agent(aug="shift")
    config = agent.config
    state = agent.seer.freeze(agent.init(jax.random.key(1)))
    rng = np.random.default_rng(2)
    obs, next_obs = (rng.integers(0, 256, (BATCH, *PIXEL_SPEC.shape), dtype=np.uint8)
                     for _ in range(2))
    action = rng.uniform(-1, 1, (BATCH, ACTION_DIM)).astype(np.float32)
    reward, discount = rng.random(BATCH).astype(np.float32), np.full(BATCH, 0.97, np.float32)
    key = jax.random.key(3)
    key_obs, key_next_obs, key_target, key_actor, _ = jax.random.split(key, 5)
    # Latents whose randomly picked copy is exactly the pixel update's shifted obs.
    pick = lambda k: np.asarray(jax.random.randint(k, (BATCH,), 0, COPIES))
    latents = lambda x, k_pick, k_shift: _latents_with_copy(agent, state, x, pick(k_pick),
                                                             k_shift)
    batch = replay.Batch(latents(obs, key_obs, key_obs), action, reward, discount,
                         latents(next_obs, key_next_obs, key_next_obs))
    got, got_metrics = jax.jit(agent.seer.update_latent)(state, batch, key)

    # The reference: the pixel losses, frozen layers' gradients zeroed, one Adam step each.
    from pixelzoo.agents.parts import build_parts
    nets = build_parts(config, PIXEL_SPEC, ACTION_DIM)
    std = float(got_metrics["stddev"])
    shifted_obs, shifted_next = random_shift(obs, key_obs), random_shift(next_obs, key_next_obs)
    target, _ = losses.drqv2_td_target(
        nets, state.params["encoder"], state.params["actor"], state.target_params["critic"],
        shifted_next, reward, discount, std, config.stddev_clip, key_target,
        losses.twin_min_value)
    group = {"encoder": state.params["encoder"], "critic": state.params["critic"]}
    (critic_loss, (features, _)), grads = jax.value_and_grad(
        losses.drqv2_critic_loss, argnums=1, has_aux=True)(nets, group, shifted_obs, action,
                                                           target)
    grads = _zero_frozen(grads)
    adam = optax.adam(config.lr)
    updates, _ = adam.update(grads, adam.init(group), group)
    critic = optax.apply_updates(group, updates)["critic"]
    actor_grads = _zero_frozen({"actor": jax.grad(losses.drqv2_actor_loss, argnums=1)(
        nets, state.params["actor"], critic, jax.lax.stop_gradient(features), std,
        config.stddev_clip, key_actor, losses.twin_min_value)})["actor"]
    updates, _ = adam.update(actor_grads, adam.init(state.params["actor"]))
    actor = optax.apply_updates(state.params["actor"], updates)

    np.testing.assert_allclose(got_metrics["critic_loss"], critic_loss, rtol=1e-5)
    for name, want in (("critic", critic), ("actor", actor)):
        for a, b in zip(jax.tree.leaves(got.params[name]), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7, err_msg=name)
    frozen = _frozen_parts(state)
    for step in range(3):
        got, _ = jax.jit(agent.seer.update_latent)(got, batch, jax.random.key(10 + step))
        for a, b in zip(jax.tree.leaves(_frozen_parts(got)), jax.tree.leaves(frozen)):
            np.testing.assert_array_equal(a, b)       # bit-identical
    assert int(got.update_step) == 4


def _latents_with_copy(agent, state, obs, copy_index, shift_key):
    """[B, m, 2F] latents whose copy copy_index[b] is obs[b] shifted by random_shift with
    shift_key (the pixel update's shift); the other copies are any other shifts."""
    exact = np.array(agent.seer.encode_latents(state, obs, jax.random.key(0)))  # any shifts
    shifted = random_shift(obs, shift_key)
    p = state.params
    features = _encoder(agent)(p["encoder"], shifted)
    z = np.concatenate([_trunk(agent, "critic")(p["critic"], features),
                        _trunk(agent, "actor")(p["actor"], features)], -1)
    exact[np.arange(len(obs)), copy_index] = z
    return exact


def _zero_frozen(grads: dict) -> dict:
    grads = jax.tree.map(lambda x: x, grads)
    if "encoder" in grads:
        grads["encoder"] = jax.tree.map(jnp.zeros_like, grads["encoder"])
    for group in ("actor", "critic"):
        if group in grads:
            grads[group]["params"]["Trunk_0"] = jax.tree.map(
                jnp.zeros_like, grads[group]["params"]["Trunk_0"])
    return grads


def _frozen_parts(state):
    """The encoder and trunks, and the target critic's trunk (and encoder copy, for DrQ)."""
    p, t = state.params, state.target_params
    actor = p["actor"]["params"]
    actor = actor.get("policy", actor)              # a routine actor's is inside its policy
    return (p["encoder"], actor["Trunk_0"], p["critic"]["params"]["Trunk_0"],
            t["critic"]["params"]["Trunk_0"], t.get("encoder"))


def test_seer_is_refused_where_nothing_can_be_frozen_and_accepted_by_every_pixel_preset():
    with pytest.raises(ValueError, match="state observations have none to freeze"):
        agents.build_config("seer", obs_type="state")
    assert agents.build_config("seer").seer_freeze_frames == 80_000
    for preset in ("drqv2", "flare", "alix", "gpl", "d2rl", "drq"):
        assert agents.build_config(preset, seer_freeze_frames=1000).seer_freeze_frames


# ----------------------------------------------------------------------------- the loop
@pytest.mark.slow(45)
def test_the_loop_freezes_every_seed_at_the_same_frame_and_resumes_past_it(tmp_path):
    values = dict(image_size=16, hidden_dim=16, feature_dim=8, batch_size=8, action_repeat=8,
                  num_seed_frames=160, num_eval_episodes=0, checkpoint_every_frames=400,
                  log_every_frames=400, replay_capacity=1000, update_every_steps=1,
                  seer_freeze_frames=480, seer_num_copies=2, replay="device")
    config = agents.build_config("seer", task="cartpole_swingup", **values)
    spec = {"agent": "seer", "task": "cartpole_swingup", "seed": 0, "num_seeds": 2,
            "num_frames": 800, "config": config.to_dict()}
    assert loop.train(spec, str(tmp_path), should_stop=lambda: False)
    checkpoints = RunCheckpointer(str(tmp_path / "checkpoints"))
    template = _stacked_template(config, 2)
    frozen_template = _stacked_template(config, 2, frozen=True)   # after the freeze
    state_800, replays_800, loop_800 = checkpoints.restore(800, frozen_template)
    assert loop_800["latent_capacity"] == 800 // 8     # the rule's cap: the run's steps
    assert replays_800["seed_0"]["observations"].shape[1:] == (2, 16)   # [m, 2F]
    # Before the freeze the encoder trained; from it on, it stays as it was at 480.
    state_400, _, loop_400 = checkpoints.restore(400, template)
    assert loop_400["latent_capacity"] == 0
    spec["num_frames"] = 2000                  # grow past the freeze: resume frozen
    assert loop.train(spec, str(tmp_path), should_stop=lambda: False)
    state_1200, replays_1200, _ = checkpoints.restore(2000, frozen_template)
    for a, b in zip(jax.tree.leaves(_frozen_parts(state_1200)),
                    jax.tree.leaves(_frozen_parts(state_800))):
        np.testing.assert_array_equal(a, b)
    assert not all(np.array_equal(a, b) for a, b in zip(
        jax.tree.leaves(state_1200.params["critic"]["params"]["q_heads"]),
        jax.tree.leaves(state_800.params["critic"]["params"]["q_heads"])))
    # The latent ring keeps its size past the grown num_frames; new timesteps keep coming.
    assert len(replays_1200["seed_1"]["observations"]) == 100
    assert int(replays_1200["seed_1"]["num_added"]) > int(replays_800["seed_1"]["num_added"])
    rows = read_csv(tmp_path / "train.csv")
    assert [(row["frame"], row["seed"]) for row in rows] == [("1800", "0"), ("1800", "1")]
    assert all(float(row["critic_loss"]) > 0 for row in rows)


def _stacked_template(config, num_seeds, frozen=False, name="seer"):
    """K stacked initial states; frozen: SEER's state after the freeze, whose optimiser
    states are the frozen optimisers' (another structure)."""
    from pixelzoo import envs
    env = envs.make("cartpole_swingup", seed=0, image_size=16, action_repeat=8)
    agent = agents.make_from_config(name, config, env.observation_spec(), env.action_spec())
    state = agent.init(jax.random.key(0))
    if frozen:
        state = agent.seer.freeze(state)
    return jax.tree.map(lambda x: np.stack([x] * num_seeds), state)


@pytest.mark.slow(60)
def test_a_sigkill_right_after_the_freeze_resumes_frozen(tmp_path):
    workdir = tmp_path / "run"
    args = [*TINY_RUN, "--agent=seer", "--config.seer_freeze_frames=400",
            "--config.seer_num_copies=2", "--config.checkpoint_every_frames=200"]
    process = launch(workdir, *args, "--num_frames=20000", wait=False)
    checkpoints = workdir / "checkpoints"
    # Killed at the first checkpoint after the freeze at 400.
    kill_when(process, lambda: (RunCheckpointer(str(checkpoints)).latest_frame() or 0) >= 600)
    complete = RunCheckpointer(str(checkpoints)).latest_frame()
    assert complete >= 600
    code, stdout, stderr = launch(workdir, *args, f"--num_frames={complete + 400}")
    assert code == 0, stderr[-3000:]
    assert f"resumed from checkpoint at frame {complete:,}" in stdout
    assert "SEER: froze" not in stdout          # resumed frozen, not frozen again


@pytest.mark.slow(25)
@pytest.mark.parametrize("preset, overrides", [
    ("flare", {}), ("alix", {}), ("gpl", dict(num_critics=3)), ("d2rl", {}),
    ("alix", dict(encoder="flare", critic="gpl", num_critics=3, mlp="d2rl")),
    ("drq", {}), ("drq", dict(encoder="flare", critic="gpl", num_critics=3, mlp="d2rl"))])
def test_seer_composes_with_every_pixel_preset(preset, overrides):
    """Each part's frozen layers stay bit-identical and its heads train on stored latents;
    without augmentation (A-LIX) one copy is stored."""
    agent = agents.make(preset, PIXEL_SPEC, ACTION_SPEC,
                        **{**SMALL, "feature_dim": 8, **overrides})
    copies = 1 if agent.config.aug == "none" else COPIES
    assert agent.seer.latent_spec.shape == (copies, 16)
    state = agent.seer.freeze(agent.init(jax.random.key(0)))
    rng = np.random.default_rng(0)
    obs = rng.integers(0, 256, (BATCH, *PIXEL_SPEC.shape), dtype=np.uint8)
    latents = np.asarray(jax.jit(agent.seer.encode_latents)(state, obs, jax.random.key(1)))
    batch = replay.Batch(latents, rng.uniform(-1, 1, (BATCH, ACTION_DIM)).astype(np.float32),
                         rng.random(BATCH).astype(np.float32), np.full(BATCH, 0.97, np.float32),
                         latents[::-1].copy())
    update = jax.jit(agent.seer.update_latent)
    new, metrics = update(state, batch, jax.random.key(2))
    new, metrics = update(new, batch, jax.random.key(3))
    for a, b in zip(jax.tree.leaves(_frozen_parts(new)), jax.tree.leaves(_frozen_parts(state))):
        np.testing.assert_array_equal(a, b)
    heads = lambda s: jax.tree.leaves(s.params["critic"]["params"]["q_heads"])
    assert not all(np.array_equal(a, b) for a, b in zip(heads(new), heads(state)))
    from pixelzoo.agents.common import METRIC_GATES     # a skipped actor step's are NaN
    assert all(np.isfinite(float(v)) for k, v in metrics.items() if k not in METRIC_GATES)
    if agent.config.lix:
        assert float(new.params["lix_p"]) == float(state.params["lix_p"])
    if agent.config.critic == "gpl":
        assert float(new.params["beta"]) != float(state.params["beta"])


# ----------------------------------------------------------------------------- Routines
@pytest.mark.slow(20)
@pytest.mark.parametrize("preset", ["rtsac", "rttd3"])
def test_routines_on_stored_latents_update_as_the_pixel_update_with_frozen_layers(preset):
    """Routine SAC and TD3 from pixels with SEER, frozen after two pixel updates: one update
    on latent windows (obs [B, m, 2F], next_obs [B, L, m, 2F]) whose picked copies are the
    pixel update's shifted frames equals the pixel update run with the frozen optimisers; three more leave the encoder
    and both trunks bit-identical while the heads and the routine encoder/decoder train."""
    import dataclasses
    from pixelzoo.agents import common, routine_update, seer
    from pixelzoo.replay.windows import Windows
    agent = make_agent(preset=preset, obs_type="pixels", aug="shift", hidden_dim=16)
    length = agent.config.routine_len
    rng = np.random.default_rng(4)
    frames = lambda *lead: rng.integers(0, 256, (*lead, *PIXEL_SPEC.shape), dtype=np.uint8)
    obs, next_obs = frames(BATCH), frames(BATCH, length)
    f32 = lambda x: np.asarray(x, np.float32)
    mask = f32(np.arange(length)[None] < rng.integers(1, length + 1, (BATCH, 1)))
    pixel_windows = Windows(obs, f32(rng.uniform(-1, 1, (BATCH, length, ACTION_DIM))),
                            f32(rng.random((BATCH, length))),
                            f32(rng.random((BATCH, length)) > 0.2), next_obs, mask)
    # Two pixel updates first (an actor step, then none), so that Adam's moments are not
    # zero: its first step, lr * g / (|g| + eps), would turn float noise in tiny gradients
    # into differences of order lr.
    state = agent.init(jax.random.key(1))
    for step in range(2):
        state, _ = jax.jit(agent.update)(state, pixel_windows, jax.random.key(20 + step))
    state = agent.seer.freeze(state)
    key = jax.random.key(3)
    key_obs, key_next, _, _ = jax.random.split(key, 4)      # routine_update.update's splits
    pick = lambda k, count: np.asarray(jax.random.randint(k, (count,), 0, COPIES))
    flat_next = next_obs.reshape(BATCH * length, *PIXEL_SPEC.shape)
    latent_windows = pixel_windows._replace(
        obs=_latents_with_copy(agent, state, obs, pick(key_obs, BATCH), key_obs),
        next_obs=_latents_with_copy(agent, state, flat_next, pick(key_next, BATCH * length),
                                    key_next).reshape(BATCH, length, COPIES, -1))
    got, got_metrics = jax.jit(agent.seer.update_latent)(state, latent_windows, key)

    setup = common.make_setup(agent.config, PIXEL_SPEC, ACTION_DIM)
    frozen_pixels = dataclasses.replace(setup, frozen=True, optimizers=dataclasses.replace(
        setup.optimizers, critic=seer.frozen_optimizer(setup.optimizers.critic),
        actor=seer.frozen_optimizer(setup.optimizers.actor)))
    want, want_metrics = jax.jit(functools.partial(routine_update.update, frozen_pixels))(
        state, pixel_windows, key)
    np.testing.assert_allclose(got_metrics["critic_loss"], want_metrics["critic_loss"],
                               rtol=1e-5)
    np.testing.assert_allclose(got_metrics["actor_loss"], want_metrics["actor_loss"],
                               rtol=1e-5)
    for a, b in zip(jax.tree.leaves((got.params, got.target_params)),
                    jax.tree.leaves((want.params, want.target_params)), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    frozen = _frozen_parts(state)
    actor = lambda s: s.params["actor"]["params"]
    trained = lambda s: (s.params["critic"]["params"]["q_heads"], actor(s)["policy"]["MLP_0"],
                         actor(s)["decoder_out"], actor(s)["position_kernels"])
    for step in range(3):
        got, _ = jax.jit(agent.seer.update_latent)(got, latent_windows, jax.random.key(10 + step))
    for a, b in zip(jax.tree.leaves(_frozen_parts(got)), jax.tree.leaves(frozen), strict=True):
        np.testing.assert_array_equal(a, b)       # bit-identical
    for a, b in zip(trained(got), trained(state)):
        assert not all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a),
                                                              jax.tree.leaves(b)))


@pytest.mark.slow(40)
def test_routine_sac_from_pixels_freezes_and_resumes_on_latent_windows(tmp_path):
    """Routine SAC from pixels with two vmapped seeds runs through SEER's freeze (windows
    from then on come from the latent replays) and resumes frozen: the frozen layers stay
    as they were at the freeze, the heads train, episodes report their policy queries."""
    values = dict(obs_type="pixels", aug="shift", image_size=16, hidden_dim=16, feature_dim=8,
                  batch_size=8, action_repeat=8, num_seed_frames=160, num_eval_episodes=0,
                  checkpoint_every_frames=400, log_every_frames=400, replay_capacity=1000,
                  routine_warmup_updates=2, seer_freeze_frames=240, seer_num_copies=2)
    config = agents.build_config("rtsac", task="cartpole_swingup", **values)
    spec = {"agent": "rtsac", "task": "cartpole_swingup", "seed": 0, "num_seeds": 2,
            "num_frames": 400, "config": config.to_dict()}
    assert loop.train(spec, str(tmp_path), should_stop=lambda: False)
    spec["num_frames"] = 1600     # the resume starts an episode at 400; it ends at 1400
    assert loop.train(spec, str(tmp_path), should_stop=lambda: False)
    checkpoints = RunCheckpointer(str(tmp_path / "checkpoints"))
    template = _stacked_template(config, 2, frozen=True, name="rtsac")
    state_1200, _, loop_1200 = checkpoints.restore(1200, template)   # the two kept
    state_1600, replays_1600, _ = checkpoints.restore(1600, template)
    assert loop_1200["latent_capacity"] > 0
    assert replays_1600["seed_1"]["observations"].shape[1:] == (2, 16)     # [m, 2F]
    for a, b in zip(jax.tree.leaves(_frozen_parts(state_1600)),
                    jax.tree.leaves(_frozen_parts(state_1200)), strict=True):
        np.testing.assert_array_equal(a, b)
    heads = lambda s: jax.tree.leaves(s.params["critic"]["params"]["q_heads"])
    assert not any(np.array_equal(a, b) for a, b in zip(heads(state_1600), heads(state_1200)))
    rows = read_csv(tmp_path / "train.csv")
    assert {row["seed"] for row in rows} == {"0", "1"}
    assert [int(row["policy_queries"]) >= 32 for row in rows] == [True, True]  # <= 4 actions each
