"""The agent zoo's mechanisms against independent computations: GPL's penalty and dual beta,
Flare's latent flow and its stop-gradient, A-LIX inside the agent, D2RL widths, and every
base and one combination of all parts training end to end."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pixelzoo import agents
from pixelzoo import networks
from pixelzoo.agents import losses, parts, pessimism
from pixelzoo.launch import loop
from pixelzoo.launch.checkpointing import RunCheckpointer
from tests import numpy_reference as ref
from tests.test_agents import ACTION_SPEC, BATCH, PIXEL_SPEC, TINY, random_batch

FLAT = jax.tree_util.tree_leaves


# ----------------------------------------------------------------------------- GPL
def test_uncertainty_is_the_mean_pairwise_absolute_difference():
    q = np.random.default_rng(0).normal(size=(4, 7))
    want = np.mean([np.abs(q[i] - q[j]) for i, j in itertools.permutations(range(4), 2)], 0)
    np.testing.assert_allclose(losses.ensemble_uncertainty(jnp.asarray(q)), want, rtol=1e-5)


@pytest.mark.slow(12)
def test_gpl_with_two_critics_and_beta_frozen_at_half_is_exactly_drqv2():
    drqv2 = agents.make("drqv2", PIXEL_SPEC, ACTION_SPEC, **TINY)
    gpl = agents.make("gpl", PIXEL_SPEC, ACTION_SPEC, gpl_learn_beta=False, **TINY)
    state_drqv2 = drqv2.init(jax.random.key(0))
    state_gpl = gpl.init(jax.random.key(0))
    batch, key = random_batch(0), jax.random.key(3)
    new_drqv2, m_drqv2 = jax.jit(drqv2.update)(state_drqv2, batch, key)
    new_gpl, m_gpl = jax.jit(gpl.update)(state_gpl, batch, key)
    for name in ("critic_loss", "actor_loss", "target_q_mean"):
        np.testing.assert_allclose(m_gpl[name], m_drqv2[name], rtol=1e-6)
    for group in ("encoder", "actor", "critic"):
        for a, b in zip(FLAT(new_gpl.params[group]), FLAT(new_drqv2.params[group])):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert float(new_gpl.params["beta"]) == 0.5


@pytest.mark.parametrize("reward, direction", [(100.0, +1), (-100.0, -1)])
def test_beta_rises_when_targets_run_high_and_falls_when_they_run_low(reward, direction):
    agent = agents.make("gpl", PIXEL_SPEC, ACTION_SPEC, **TINY)
    state = agent.init(jax.random.key(0))
    batch = random_batch(1)._replace(reward=np.full(BATCH, reward, np.float32))
    new_state, metrics = jax.jit(agent.update)(state, batch, jax.random.key(2))
    # Targets above predictions: negative mean TD error (Q - y), so beta rises, and back.
    assert np.sign(float(metrics["td_error_mean"])) == -direction
    np.testing.assert_allclose(float(new_state.params["beta"]) - 0.5, direction * 1e-4,
                               rtol=1e-3)


def test_gpl_target_penalises_disagreement_with_beta():
    config = agents.build_config("gpl", num_critics=3)
    q = jnp.asarray([[1.0, 2.0], [3.0, 2.0], [5.0, 2.0]])
    # mean 3, pairwise |diffs| (2, 4, 2) averaged over ordered pairs = 8/3; beta 0.25.
    np.testing.assert_allclose(pessimism.value_fn(config, 0.25)(q), [3 - 0.25 * 8 / 3, 2.0],
                               rtol=1e-6)
    optimistic = agents.build_config("gpl", optimism_shift=-0.4, optimism_decay_steps=100)
    np.testing.assert_allclose(pessimism.actor_beta(optimistic, 0.5, 25), 0.5 - 0.3, rtol=1e-6)
    np.testing.assert_allclose(pessimism.actor_beta(optimistic, 0.5, 500), 0.5, rtol=1e-6)


# ----------------------------------------------------------------------------- Flare
def test_flare_fuses_per_frame_maps_and_their_flow():
    obs = np.random.default_rng(0).integers(0, 256, (2, 20, 20, 9), dtype=np.uint8)
    flare = networks.FlareEncoder()
    params = flare.init(jax.random.key(0), obs)
    conv = ref.np_params(params["params"]["ConvEncoder_0"])
    maps = [ref.conv_encoder({"params": conv}, obs[..., 3 * t:3 * t + 3], True)
            .reshape(2, 3, 3, 32) for t in range(3)]
    want = np.stack([np.concatenate([maps[t], maps[t] - maps[t - 1]], -1) for t in (1, 2)], 1)
    np.testing.assert_allclose(flare.apply(params, obs), want.reshape(2, -1), rtol=1e-4,
                               atol=1e-5)


def test_flare_stops_the_gradient_through_the_earlier_frame():
    obs = np.random.default_rng(1).integers(0, 256, (2, 20, 20, 6), dtype=np.uint8)
    flare = networks.FlareEncoder()
    params = flare.init(jax.random.key(0), obs)

    def part_sum(p, part):   # fused = [current (32 channels), flow (32 channels)] per frame
        fused = flare.apply(p, obs).reshape(2, 1, 3, 3, 64)
        return jnp.sum(fused[..., 32:] if part == "flow" else fused[..., :32])

    grad_flow = jax.grad(part_sum)(params, "flow")
    grad_current = jax.grad(part_sum)(params, "current")
    # flow = cur - sg(prev): its gradient is exactly that of cur, nothing through prev.
    for a, b in zip(FLAT(grad_flow), FLAT(grad_current)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_flare_trunk_has_no_tanh():
    preset = agents.build_config("flare")
    assert preset.feature_dim == 64 and preset.encoder == "flare"
    agent = agents.make("flare", PIXEL_SPEC, ACTION_SPEC, **TINY)
    assert parts.build_parts(agent.config, PIXEL_SPEC, 2).actor.trunk_kind == "layernorm"
    head = networks.Trunk(4, kind="layernorm")
    x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 8)) * 10)
    p = head.init(jax.random.key(0), x)
    z = head.apply(p, x)
    np.testing.assert_allclose(z, ref.layer_norm(ref.np_params(p["params"])["LayerNorm_0"],
                                                 ref.dense(ref.np_params(p["params"])["Dense_0"],
                                                           np.asarray(x))), rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- A-LIX
@pytest.mark.slow(15)
def test_alix_at_zero_strength_is_drqv2_without_augmentation():
    plain = agents.make("drqv2", PIXEL_SPEC, ACTION_SPEC, **TINY)     # TINY has aug none
    alix = agents.make("alix", PIXEL_SPEC, ACTION_SPEC, lix_init=0.0, **TINY)
    batch, key = random_batch(2), jax.random.key(4)
    new_plain, m_plain = jax.jit(plain.update)(plain.init(jax.random.key(0)), batch, key)
    state = alix.init(jax.random.key(0))
    new_alix, m_alix = jax.jit(alix.update)(state, batch, key)
    for name in ("critic_loss", "target_q_mean", "q_mean"):
        np.testing.assert_allclose(m_alix[name], m_plain[name], rtol=1e-5)
    # P takes one Adam step of size lr against the sign of (nd_target - ND).
    nd = float(m_alix["lix_nd"])
    want = np.clip(0.0 - 2e-3 * np.sign(0.535 - nd), 0, 1)
    np.testing.assert_allclose(float(new_alix.params["lix_p"]), want, atol=1e-7)


def test_alix_shifts_during_updates_only():
    alix = agents.make("alix", PIXEL_SPEC, ACTION_SPEC, **TINY)
    plain = agents.make("drqv2", PIXEL_SPEC, ACTION_SPEC, **TINY)
    state = alix.init(jax.random.key(0))
    obs = random_batch(3).obs
    # Acting and evaluation: LIX is the identity.
    np.testing.assert_array_equal(alix.act(state, obs, None, eval_mode=True),
                                  plain.act(plain.init(jax.random.key(0)), obs, None,
                                            eval_mode=True))
    batch, key = random_batch(4), jax.random.key(1)
    _, m_alix = jax.jit(alix.update)(state, batch, key)
    _, m_plain = jax.jit(plain.update)(plain.init(jax.random.key(0)), batch, key)
    # LIX layers (strength 2.5 * 0.5 px) change the target and the critic's features.
    np.testing.assert_allclose(m_alix["lix_max_shift"], 1.25)
    assert abs(float(m_alix["target_q_mean"]) - float(m_plain["target_q_mean"])) > 1e-6
    assert abs(float(m_alix["q_mean"]) - float(m_plain["q_mean"])) > 1e-6


def test_alix_paper_defaults_are_reachable():
    paper = agents.build_config("alix", lix_init=0.4, lix_nd_target=0.635, lix_lr=3e-3)
    assert paper.lix_max_shift * paper.lix_init == pytest.approx(1.0)


# ----------------------------------------------------------------------------- D2RL
def test_d2rl_actor_and_critic_feed_the_input_to_every_hidden_layer():
    agent = agents.make("d2rl", PIXEL_SPEC, ACTION_SPEC, **TINY)
    params = agent.init(jax.random.key(0)).params
    actor = params["actor"]["params"]["MLP_0"]
    critic = params["critic"]["params"]["q_heads"]
    feature, hidden = TINY["feature_dim"], TINY["hidden_dim"]
    assert [actor[f"Dense_{i}"]["kernel"].shape for i in range(5)] == (
        [(feature, hidden)] + [(hidden + feature, hidden)] * 3 + [(hidden, 2)])
    width = feature + 2                                   # critic input: features and action
    assert [critic[f"Dense_{i}"]["kernel"].shape for i in range(5)] == (
        [(2, width, hidden)] + [(2, hidden + width, hidden)] * 3 + [(2, hidden, 1)])


# ----------------------------------------------------------------------------- configs
def test_nonsense_combinations_are_refused_with_the_valid_values():
    with pytest.raises(ValueError, match="choose one of: conv, flare"):
        agents.build_config("drqv2", encoder="resnet")
    with pytest.raises(ValueError, match="choose one of: twin, gpl"):
        agents.build_config("drqv2", critic="redq")
    with pytest.raises(ValueError, match="use critic='gpl' for larger ensembles"):
        agents.build_config("drqv2", num_critics=5)
    with pytest.raises(ValueError, match="need pixel observations"):
        agents.build_config("alix", obs_type="state")
    with pytest.raises(ValueError, match="optimism_shift shifts the actor's beta of a "
                                         "learned-pessimism critic"):
        agents.build_config("drqv2", optimism_shift=-0.1)


# Both bases end to end, and every other part (flare, A-LIX, GPL, D2RL, device replay, fused
# updates, vmapped seeds, resume) in one full combination; each preset's update values are
# pinned by tests/test_golden.py. Routine SAC from pixels (through SEER's freeze) runs in
# tests/test_seer.py.
PRESET_RUNS = [(name, {}) for name in ("drqv2", "drq")] + [
    ("alix", dict(encoder="flare", critic="gpl", num_critics=3, mlp="d2rl", replay="device",
                  updates_per_call=2))]


@pytest.mark.slow(25)
@pytest.mark.parametrize("name, overrides", PRESET_RUNS)
def test_both_bases_and_a_full_combination_train_end_to_end(tmp_path, name, overrides):
    values = dict(image_size=16, hidden_dim=16, feature_dim=8, batch_size=8, action_repeat=8,
                  num_seed_frames=160, num_eval_episodes=0, checkpoint_every_frames=400,
                  log_every_frames=400, replay_capacity=1000, update_every_steps=1)
    config = agents.build_config(name, task="cartpole_swingup", **{**values, **overrides})
    spec = {"agent": name, "task": "cartpole_swingup", "seed": 0, "num_frames": 400,
            "config": config.to_dict()}
    if overrides:  # the full combination: two vmapped seeds, replay on the device, fused
        spec["num_seeds"] = 2
    assert loop.train(spec, str(tmp_path), should_stop=lambda: False)
    if overrides:  # the full combination also resumes (beta and P round-trip through orbax)
        spec["num_frames"] = 480
        assert loop.train(spec, str(tmp_path), should_stop=lambda: False)
    assert RunCheckpointer(str(tmp_path / "checkpoints")).latest_frame() == spec["num_frames"]
    header = (tmp_path / "train.csv").read_text().splitlines()[0].split(",")
    assert "critic_loss" in header and "q_mean" in header
    if config.critic == "gpl":
        assert {"beta", "uncertainty_mean", "td_error_mean"} <= set(header) or \
            config.base == "sac"
    if config.lix:
        assert {"lix_p", "lix_nd", "lix_max_shift"} <= set(header)
