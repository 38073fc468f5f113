"""Tests of envs: task names, validation, pixels, state, action repeat and rescaling, GL.

Values are checked against raw dm_control environments with the same seed. Images are
small (32 px) and state environments are used wherever pixels are not the point.
"""
import os
import signal

from dm_env import specs
import dm_env
import numpy as np
import pytest

from pixelzoo import envs
from pixelzoo.envs import dmc
from pixelzoo.envs import rendering
from pixelzoo.envs import tasks

SIZE = 32

# The 24 tasks of DrQ-v2 (its reference curves are named dmc_<task>.csv).
DRQV2_24 = (
    "acrobot_swingup", "cartpole_balance", "cartpole_balance_sparse", "cartpole_swingup",
    "cartpole_swingup_sparse", "cheetah_run", "cup_catch", "finger_spin",
    "finger_turn_easy", "finger_turn_hard", "hopper_hop", "hopper_stand", "humanoid_run",
    "humanoid_stand", "humanoid_walk", "pendulum_swingup", "quadruped_run",
    "quadruped_walk", "reach_duplo", "reacher_easy", "reacher_hard", "walker_run",
    "walker_stand", "walker_walk",
)


def _suite():
    """dm_control.suite, imported only after the GL backend is chosen."""
    envs.ensure_gl_backend()
    from dm_control import suite  # pylint: disable=import-outside-toplevel
    return suite


def _raw_env(domain, task, seed):
    return _suite().load(domain, task, task_kwargs={"random": seed})


# Task names.


def test_names_contain_drqv2_tasks():
    all_names = envs.names()
    assert len(DRQV2_24) == 24
    assert sorted(envs.DRQV2_TASKS) == sorted(DRQV2_24)
    assert set(DRQV2_24) <= set(all_names)
    assert "cup_catch" in all_names and "ball_in_cup_catch" in all_names
    assert all_names == sorted(set(all_names))


def test_task_mapping_matches_dm_control():
    suite = _suite()
    aliases = {"cup_catch": ("ball_in_cup", "catch")}
    for name, (domain, task) in tasks.SUITE_TASKS.items():
        if name not in aliases:
            assert name == f"{domain}_{task}"
        assert (domain, task) in suite.ALL_TASKS
    assert {tasks.SUITE_TASKS[name] for name in aliases} == set(aliases.values())
    expected = set(suite.BENCHMARKING) | {("quadruped", "walk"), ("quadruped", "run")}
    assert set(tasks.SUITE_TASKS.values()) == expected
    assert set(tasks.MANIPULATION_TASKS) == {"reach_duplo"}


def test_task_groups_follow_drqv2():
    groups = {name: envs.task_group(name) for name in DRQV2_24}
    easy = {n for n, g in groups.items() if g == "easy"}
    hard = {n for n, g in groups.items() if g == "hard"}
    assert easy == {"cartpole_balance", "cartpole_balance_sparse", "cartpole_swingup",
                    "cup_catch", "finger_spin", "hopper_stand", "pendulum_swingup",
                    "walker_stand", "walker_walk"}
    assert hard == {"humanoid_run", "humanoid_stand", "humanoid_walk"}
    assert sum(g == "medium" for g in groups.values()) == 12
    assert envs.task_group("reacher_easy") == "medium"
    assert envs.task_group("fish_swim") is None
    assert envs.task_group("ball_in_cup_catch") is None


# Validation.


@pytest.fixture
def no_loading(monkeypatch):
    """Makes any rendering probe or dm_control load fail the test."""
    def fail(*args, **kwargs):
        raise AssertionError("validation must happen before loading or probing")
    monkeypatch.setattr(dmc, "_load_inner_env", fail)
    monkeypatch.setattr(rendering, "ensure_gl_backend", fail)


def test_unknown_task_lists_choices(no_loading):
    with pytest.raises(ValueError) as error:
        envs.make("walker_wlak")
    message = str(error.value)
    assert "walker_wlak" in message
    assert message.index("walker_walk") < message.index("Valid tasks")  # close match first
    assert "envs.names()" in message
    assert all(name in message for name in envs.names())


@pytest.mark.parametrize("kwargs, expected", [
    (dict(obs_type="rgb"), "'pixels', 'state'"),
    (dict(image_size=0), "image_size must be an integer >= 1"),
    (dict(image_size=32.0), "image_size must be an integer >= 1"),
    (dict(image_size=True), "image_size must be an integer >= 1"),
    (dict(frame_stack=0), "frame_stack must be an integer >= 1"),
    (dict(action_repeat=0), "action_repeat must be an integer >= 1"),
    (dict(action_repeat=-2), "action_repeat must be an integer >= 1"),
    (dict(seed=-1), "seed must be an integer in [0, 2**32)"),
    (dict(seed=2**32), "seed must be an integer in [0, 2**32)"),
])
def test_bad_settings_raise_before_loading(no_loading, kwargs, expected):
    with pytest.raises(ValueError) as error:
        envs.make("cartpole_swingup", **kwargs)
    assert expected in str(error.value)


def test_rescale_action_by_hand():
    minimum = np.array([-1.0, 0.0, -2.0, 10.0])
    maximum = np.array([1.0, 4.0, 2.0, 20.0])
    action = np.array([0.5, -1.0, 3.0, 0.0], dtype=np.float32)  # 3.0 clips to 1.0
    np.testing.assert_array_equal(
        dmc.rescale_action(action, minimum, maximum), [0.5, 0.0, 2.0, 15.0])
    np.testing.assert_array_equal(
        dmc.rescale_action(np.full(4, -7.0), minimum, maximum), minimum)


# Pixels.


def test_pixels_spec_reset_and_stack_shift():
    env = envs.make("cartpole_swingup", seed=3, image_size=SIZE, frame_stack=3,
                    action_repeat=4)
    raw = _raw_env("cartpole", "swingup", seed=3)
    assert env.observation_spec() == specs.Array((SIZE, SIZE, 9), np.uint8, name="pixels")
    assert env.action_spec() == specs.BoundedArray((1,), np.float32, -1.0, 1.0, name="action")
    assert env.reward_spec().dtype == np.float32 and env.reward_spec().shape == ()
    assert env.discount_spec().dtype == np.float32 and env.discount_spec().shape == ()

    def raw_frame():
        return raw.physics.render(height=SIZE, width=SIZE, camera_id=0)

    timestep = env.reset()
    raw.reset()
    assert timestep.first() and timestep.reward is None and timestep.discount is None
    env.observation_spec().validate(timestep.observation)
    frame0 = raw_frame()
    np.testing.assert_array_equal(timestep.observation, np.concatenate([frame0] * 3, axis=-1))

    frames = [frame0]
    for _ in range(2):
        timestep = env.step(np.ones(1, np.float32))
        for _ in range(4):
            raw.step(np.ones(1))
        frames.append(raw_frame())
        assert timestep.mid()
    assert not np.array_equal(frames[0], frames[2])  # the cart moved: the check can fail
    np.testing.assert_array_equal(timestep.observation, np.concatenate(frames, axis=-1))
    np.testing.assert_array_equal(env.render(), frames[-1])
    assert env.render(size=64).shape == (64, 64, 3)


def test_frame_stack_one_step_matches_newest_channels():
    stacked = envs.make("walker_walk", seed=5, image_size=SIZE, frame_stack=2)
    single = envs.make("walker_walk", seed=5, image_size=SIZE, frame_stack=1)
    first = stacked.reset().observation
    np.testing.assert_array_equal(first[..., 3:], single.reset().observation)
    action = np.linspace(-1, 1, 6).astype(np.float32)
    after = stacked.step(action).observation
    np.testing.assert_array_equal(after[..., :3], first[..., 3:])
    np.testing.assert_array_equal(after[..., 3:], single.step(action).observation)


def test_quadruped_renders_camera_2():
    env = envs.make("quadruped_walk", seed=1, image_size=SIZE, frame_stack=1)
    raw = _raw_env("quadruped", "walk", seed=1)
    observation = env.reset().observation
    raw.reset()
    camera_2 = raw.physics.render(height=SIZE, width=SIZE, camera_id=2)
    np.testing.assert_array_equal(observation, camera_2)
    camera_0 = raw.physics.render(height=SIZE, width=SIZE, camera_id=0)
    assert not np.array_equal(observation, camera_0)


# State, action repeat, rescaling, episode ends.


def test_state_observation_is_raw_concatenation():
    env = envs.make("walker_walk", seed=2, obs_type="state", frame_stack=3)
    raw = _raw_env("walker", "walk", seed=2)
    assert env.observation_spec() == specs.Array((14 + 1 + 9,), np.float32, name="state")

    def expected(raw_timestep):
        o = raw_timestep.observation
        return np.hstack([o["orientations"], [o["height"]], o["velocity"]]).astype(np.float32)

    timestep = env.reset()
    np.testing.assert_array_equal(timestep.observation, expected(raw.reset()))
    assert timestep.observation.dtype == np.float32
    action = np.full(6, 0.3, np.float32)
    timestep = env.step(action)
    raw.step(action.astype(np.float64))
    np.testing.assert_array_equal(timestep.observation, expected(raw.step(action.astype(np.float64))))


def test_action_repeat_sums_rewards_and_stops_at_episode_end():
    action_repeat = 3  # 1000 frames = 333 full steps and a last one of 1 frame
    env = envs.make("cartpole_swingup", seed=7, obs_type="state", action_repeat=action_repeat)
    raw = _raw_env("cartpole", "swingup", seed=7)
    actions = np.random.RandomState(0).uniform(-1, 1, size=(400, 1)).astype(np.float32)
    env.reset()
    raw.reset()
    frames = 0
    for step, action in enumerate(actions):
        timestep = env.step(action)
        reward_sum, chunk = 0.0, 0
        while chunk < action_repeat:
            raw_timestep = raw.step(action.astype(np.float64))  # bounds are [-1, 1]
            reward_sum += raw_timestep.reward
            chunk += 1
            if raw_timestep.last():
                break
        frames += chunk
        assert timestep.reward == np.float32(reward_sum)
        assert isinstance(timestep.reward, np.float32) and timestep.discount == 1.0
        if timestep.last():
            break
        assert timestep.mid()
    assert raw_timestep.last() and frames == 1000 and chunk == 1 and step + 1 == 334
    assert env.step(actions[0]).first()  # a step after the end starts a new episode


def test_episode_is_1000_frames_with_last_discount_1():
    env = envs.make("cheetah_run", seed=0, obs_type="state", action_repeat=8)
    timestep = env.reset()
    step_types = []
    while not timestep.last():
        timestep = env.step(np.zeros(6, np.float32))
        step_types.append(timestep.step_type)
        assert timestep.discount == np.float32(1.0)
    assert len(step_types) == 1000 // 8
    assert step_types[:-1] == [dm_env.StepType.MID] * (1000 // 8 - 1)


def test_actions_rescaled_to_quadruped_bounds():
    env = envs.make("quadruped_walk", seed=0, obs_type="state")
    minimum, maximum = env.physics.model.actuator_ctrlrange.T
    assert not (np.all(minimum == -1.0) and np.all(maximum == 1.0))
    env.reset()
    action = np.random.RandomState(1).uniform(-1.5, 1.5, size=12).astype(np.float32)
    env.step(action)
    clipped = np.clip(action.astype(np.float64), -1.0, 1.0)
    np.testing.assert_allclose(env.physics.data.ctrl,
                               minimum + (clipped + 1.0) / 2.0 * (maximum - minimum), rtol=1e-12)
    env.step(np.ones(12, np.float32))
    np.testing.assert_allclose(env.physics.data.ctrl, maximum, rtol=1e-12)
    env.step(-np.ones(12, np.float32))
    np.testing.assert_allclose(env.physics.data.ctrl, minimum, rtol=1e-12)


def test_action_shape_and_values_checked():
    env = envs.make("cartpole_balance", obs_type="state")
    env.reset()
    with pytest.raises(ValueError, match=r"shape \(1,\)"):
        env.step(np.zeros(2, np.float32))
    with pytest.raises(ValueError, match="finite"):
        env.step(np.array([np.nan], np.float32))


def test_reach_duplo_state_matches_manipulation():
    envs.ensure_gl_backend()
    from dm_control import manipulation  # pylint: disable=import-outside-toplevel
    env = envs.make("reach_duplo", seed=4, obs_type="state", action_repeat=2)
    raw = manipulation.load("reach_duplo_features", seed=4)

    def expected(raw_timestep):
        return np.concatenate(
            [np.ravel(v) for v in raw_timestep.observation.values()]).astype(np.float32)

    np.testing.assert_array_equal(env.reset().observation, expected(raw.reset()))
    action = np.linspace(-0.5, 0.5, 9).astype(np.float32)
    spec = raw.action_spec()
    raw_action = spec.minimum + (action.astype(np.float64) + 1.0) / 2.0 * (spec.maximum - spec.minimum)
    timestep = env.step(action)
    raw.step(raw_action)
    np.testing.assert_allclose(timestep.observation, expected(raw.step(raw_action)), rtol=1e-6)
    assert env.physics.model.name2id("front_close", "camera") >= 0


# Rendering backend.


@pytest.fixture
def unset_gl(monkeypatch):
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.delenv("PYOPENGL_PLATFORM", raising=False)
    monkeypatch.setattr(rendering.platform, "system", lambda: "Linux")
    return monkeypatch


def test_no_backend_error_says_what_to_install(unset_gl):
    probed = []
    unset_gl.setattr(rendering, "_probe", lambda b: probed.append(b) or f"no {b} here")
    with pytest.raises(envs.RenderingUnavailableError) as error:
        envs.ensure_gl_backend()
    message = str(error.value)
    assert probed == ["egl", "osmesa"]
    assert "apt-get install libegl1 libgl1" in message
    assert "apt-get install libosmesa6" in message
    assert "MUJOCO_GL" in message and "no egl here" in message and "no osmesa here" in message
    assert isinstance(error.value, RuntimeError)
    assert "MUJOCO_GL" not in os.environ


def test_falls_back_to_osmesa(unset_gl):
    unset_gl.setattr(rendering, "_probe", lambda b: None if b == "osmesa" else "broken")
    assert envs.ensure_gl_backend() == "osmesa"
    assert os.environ["MUJOCO_GL"] == "osmesa" and os.environ["PYOPENGL_PLATFORM"] == "osmesa"


def test_user_choice_is_respected_and_disabled_refused(unset_gl):
    unset_gl.setattr(rendering, "_probe", lambda b: pytest.fail("must not probe"))
    unset_gl.setenv("MUJOCO_GL", "glfw")
    assert envs.ensure_gl_backend() == "glfw"
    unset_gl.setenv("MUJOCO_GL", "disabled")
    with pytest.raises(envs.RenderingUnavailableError, match="libosmesa6"):
        envs.ensure_gl_backend()


def test_state_envs_need_no_backend(unset_gl):
    unset_gl.setattr(rendering, "_probe", lambda b: "broken")
    dmc.use_gl_backend("state")
    assert os.environ["MUJOCO_GL"] == "disabled"
    with pytest.raises(envs.RenderingUnavailableError):
        dmc.use_gl_backend("pixels")


# ----------------------------------------------------------------------------- worker pool
def test_env_pool_steps_like_environments_in_this_process():
    """Two pixel environments in worker processes, stepped in parallel (and one remade with
    a new seed), give exactly the observations and rewards of the same environments here."""
    kwargs = [dict(task="cartpole_swingup", seed=seed, image_size=32, action_repeat=4)
              for seed in (3, 4)]
    pool = envs.EnvPool(kwargs)
    try:
        local = [envs.make(**k) for k in kwargs]
        assert pool.observation_spec == local[0].observation_spec()
        assert pool.action_spec == local[0].action_spec() and pool.action_repeat == 4
        rng = np.random.default_rng(0)

        def compare(got, want):
            for g, w in zip(got, want, strict=True):
                assert g.step_type == w.step_type
                np.testing.assert_array_equal(g.observation, w.observation)
                assert g.reward == w.reward and g.discount == w.discount

        compare(pool.reset(), [env.reset() for env in local])
        for _ in range(5):
            actions = rng.uniform(-1, 1, (2, 1)).astype(np.float32)
            pool.step_async(actions)
            compare(pool.step_wait(), [env.step(a) for env, a in zip(local, actions)])
        np.testing.assert_array_equal(pool.call(1, "render", 48), local[1].render(48))
        # A signal to the whole process group is the parent's to handle: workers stay up.
        for process in pool._processes:
            os.kill(process.pid, signal.SIGTERM)
            os.kill(process.pid, signal.SIGINT)
        actions = rng.uniform(-1, 1, (2, 1)).astype(np.float32)
        compare(pool.step(actions), [env.step(a) for env, a in zip(local, actions)])
        pool.remake([{"seed": 7}, {"seed": 8}])
        local = [envs.make(**{**k, "seed": seed}) for k, seed in zip(kwargs, (7, 8))]
        compare(pool.reset(), [env.reset() for env in local])
        with pytest.raises(RuntimeError, match="without step_async"):
            pool.step_wait()
    finally:
        pool.close()


@pytest.mark.parametrize("in_process, num_workers", [(0, 2), (2, 2), (1, 1), (5, 0)])
def test_env_pool_workers_step_groups_of_environments_in_order(in_process, num_workers):
    """Five environments, the first `in_process` kept in this process and the rest in
    worker processes (e.g. groups of 2 and 3), give exactly the same timesteps as five
    environments here; call() and remake() reach the right one."""
    kwargs = [dict(task="cartpole_swingup", seed=seed, obs_type="state", action_repeat=2)
              for seed in range(5)]
    pool = envs.EnvPool(kwargs, num_workers=num_workers, in_process=in_process)
    try:
        assert len(pool) == 5 and pool.num_workers == num_workers
        assert [len(group) for group in pool._groups] == {
            (0, 2): [3, 2], (2, 2): [2, 2, 1], (1, 1): [1, 4], (5, 0): [5]}[in_process,
                                                                            num_workers]
        local = [envs.make(**k) for k in kwargs]
        rng = np.random.default_rng(1)

        def compare(got, want):
            assert len(got) == len(want)
            for g, w in zip(got, want):
                np.testing.assert_array_equal(g.observation, w.observation)
                assert (g.step_type, g.reward) == (w.step_type, w.reward)

        compare(pool.reset(), [env.reset() for env in local])
        for _ in range(3):
            actions = rng.uniform(-1, 1, (5, 1)).astype(np.float32)
            compare(pool.step(actions), [env.step(a) for env, a in zip(local, actions)])
        action = np.full((1,), 0.5, np.float32)
        compare([pool.call(3, "step", action)], [local[3].step(action)])
        pool.remake([{"seed": 10 + i} for i in range(5)])
        local = [envs.make(**{**k, "seed": 10 + i}) for i, k in enumerate(kwargs)]
        compare(pool.reset(), [env.reset() for env in local])
    finally:
        pool.close()
    with pytest.raises(ValueError, match=r"num_workers=3 must be in \[1, 2\]"):
        envs.EnvPool(kwargs[:2], num_workers=3)
    with pytest.raises(ValueError, match=r"in_process=3 must be in \[0, 2\]"):
        envs.EnvPool(kwargs[:2], in_process=3)


def test_env_pool_launcher_split_over_the_cores(monkeypatch):
    """The launcher's split: one group per core (at most one per environment), the
    launcher's own process being the first, with the largest share."""
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert [envs.launcher_split(n) for n in (1, 2, 3, 8)] == [(1, 0), (1, 1), (2, 1), (4, 1)]
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert [envs.launcher_split(n) for n in (1, 8, 40)] == [(1, 0), (1, 7), (3, 15)]
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert [envs.launcher_split(n) for n in (0, 3)] == [(0, 0), (3, 0)]


def test_env_pool_reports_a_worker_error_with_its_traceback():
    """The pool starts its workers without waiting; the first use reports the failure and
    stops the workers."""
    pool = envs.EnvPool([dict(task="cartpole_swingup", seed=-1, obs_type="state")])
    with pytest.raises(envs.EnvWorkerError, match="seed must be an integer"):
        pool.reset()
    assert len(pool) == 0   # closed
    # Kept in this process, the same error, the same way.
    pool = envs.EnvPool([dict(task="cartpole_swingup", seed=-1, obs_type="state")],
                        in_process=1)
    with pytest.raises(envs.EnvWorkerError, match="seed must be an integer"):
        pool.reset()
    assert len(pool) == 0
