"""SEER's phase of a run (launch.seer_phase): the latent replay keeps the newest timesteps
that fit, for a freeze near the end of a run and for a memory rule below the pixel
replay's contents, and a frozen checkpoint is read into the frozen state's structure."""
import types

import jax
import numpy as np
import pytest
from dm_env import specs

from pixelzoo import agents, replay
from pixelzoo.launch import loop, seer_phase
from pixelzoo.launch.checkpointing import RunCheckpointer
from tests.test_seer import filled_pixel_buffer

TINY_PIXELS = dict(image_size=16, hidden_dim=16, feature_dim=8, batch_size=8, action_repeat=8,
                   num_seed_frames=160, num_eval_episodes=0, log_every_frames=400,
                   update_every_steps=2, seer_num_copies=2)


def test_keep_newest_keeps_the_newest_timesteps_at_their_global_indices():
    buffer = filled_pixel_buffer(np.random.default_rng(0), capacity=60, steps=55)
    encode = lambda obs, indices: np.broadcast_to(
        indices[:, None, None].astype(np.float32), (len(indices), 2, 4))
    latent_spec = specs.Array((2, 4), np.float32)
    full = replay.to_latent_replay(buffer, latent_spec, 55, encode)
    kept = seer_phase.keep_newest(full, 20)
    assert kept.capacity == 20 and kept.num_added == full.num_added == 55
    newest = np.arange(35, 55)
    np.testing.assert_array_equal(kept.observations(newest), full.observations(newest))
    starts = kept.sampleable_indices()
    assert starts.min() >= 35 and set(starts) <= set(full.sampleable_indices())
    got, want = kept.gather(starts), full.gather(starts)
    for name in ("obs", "action", "reward", "discount", "next_obs"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    assert seer_phase.keep_newest(full, 55) is full


def _seer_spec(num_frames, **overrides):
    config = agents.build_config("seer", task="cartpole_swingup", **{**TINY_PIXELS, **overrides})
    return {"agent": "seer", "task": "cartpole_swingup", "seed": 0, "num_frames": num_frames,
            "config": config.to_dict()}


@pytest.mark.slow(45)
@pytest.mark.parametrize("case, overrides, num_frames, capacity, timesteps", [
    # The user's report: 250 agent steps, frozen at the last but one; the replay holds
    # 251 timesteps then (two episodes' first ones) and 253 at the end.
    ("near the end", dict(seer_freeze_frames=1992, replay_capacity=1000,
                          checkpoint_every_frames=800), 2000, 250, 253),
    # 16px frames (768 bytes) for 2 copies of two 64-d latents (1024 bytes): 150 of the
    # 200 frames' memory, below the 152 timesteps the pixel replay holds at frame 1200.
    ("memory below the pixel replay", dict(seer_freeze_frames=1200, replay_capacity=200,
                                           feature_dim=64, checkpoint_every_frames=400),
     1280, 150, 162),
])
def test_the_freeze_keeps_the_newest_timesteps_that_fit(tmp_path, case, overrides,
                                                         num_frames, capacity, timesteps):
    spec = _seer_spec(num_frames, **overrides)
    assert loop.train(spec, str(tmp_path), should_stop=lambda: False)
    checkpoints = RunCheckpointer(str(tmp_path / "checkpoints"))
    assert checkpoints.restore_loop(num_frames)["latent_capacity"] == capacity
    template = _template(spec)
    _, replay_state, _ = checkpoints.restore(num_frames, template)
    assert len(replay_state["observations"]) == capacity
    assert int(replay_state["num_added"]) == timesteps
    spec["num_frames"] = num_frames + 80          # resumes frozen (the frozen template)
    assert loop.train(spec, str(tmp_path), should_stop=lambda: False)
    assert checkpoints.restore_loop(num_frames + 80)["latent_capacity"] == capacity


def _template(spec):
    from pixelzoo import envs
    config = agents.Config.from_dict(spec["config"])
    env = envs.make("cartpole_swingup", seed=0, image_size=16, action_repeat=8)
    agent = agents.make_from_config("seer", config, env.observation_spec(), env.action_spec())
    return agent.seer.freeze(agent.init(jax.random.key(0)))


def _structure_agent(with_conversion: bool):
    """A stand-in agent whose freeze adds an optimiser entry (as set_to_zero will), and,
    where asked, the conversion of an older checkpoint's unfrozen state."""
    seer = types.SimpleNamespace(freeze=lambda state: {**state, "frozen_opt": state["w"] * 0})
    if with_conversion:
        seer.frozen_optimizer_states = lambda state: {**state, "frozen_opt": state["w"] + 1}
    return types.SimpleNamespace(seer=seer)


@pytest.mark.parametrize("multi_seed", [False, True])
def test_a_frozen_checkpoint_restores_into_the_frozen_structure(tmp_path, multi_seed):
    lead = (2,) if multi_seed else ()
    unfrozen = {"w": np.arange(6, dtype=np.float32).reshape(*lead, -1)}
    template = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), unfrozen)
    checkpoints = RunCheckpointer(str(tmp_path / "checkpoints"))
    frozen = {**unfrozen, "frozen_opt": np.full_like(unfrozen["w"], 7)}
    checkpoints.save(8, frozen, {"x": np.zeros(3)}, {"step": 1, "latent_capacity": 5})
    checkpoints.save(16, unfrozen, {"x": np.zeros(3)}, {"step": 2, "latent_capacity": 5})
    # Written after the change: the frozen template reads it as it is.
    state, _, loop_state = seer_phase.restore_frozen(checkpoints, 8, _structure_agent(False),
                                                     template, multi_seed)
    np.testing.assert_array_equal(state["frozen_opt"], frozen["frozen_opt"])
    assert loop_state["latent_capacity"] == 5
    # Written before it: read unfrozen, then converted, where the agent can.
    state, _, _ = seer_phase.restore_frozen(checkpoints, 16, _structure_agent(True), template,
                                            multi_seed)
    np.testing.assert_array_equal(state["frozen_opt"], unfrozen["w"] + 1)
    with pytest.raises(Exception):
        seer_phase.restore_frozen(checkpoints, 16, _structure_agent(False), template,
                                  multi_seed)
    checkpoints.close()
