"""agents.learner: the data-parallel update over a device mesh equals one device's update on
the full batch for every kind of update, fused updates equal sequential ones, and two processes
joined by jax.distributed end with identical parameters (tests/conftest.py gives this
process two CPU devices)."""
import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from dm_env import specs

from pixelzoo import agents
from pixelzoo.agents.learner import Learner, fuse_updates, make_mesh
from pixelzoo.replay import Batch
from pixelzoo.replay.windows import Windows

ROOT = pathlib.Path(__file__).resolve().parents[1]
BATCH = 4
ACTION_SPEC = specs.BoundedArray((2,), np.float32, -1.0, 1.0, "action")
PIXEL_SPEC = specs.Array((16, 16, 9), np.uint8, "pixels")
STATE_SPEC = specs.Array((5,), np.float32, "state")
TINY = dict(hidden_dim=8, feature_dim=4, batch_size=BATCH, replay_capacity=100,
            num_seed_frames=0)


def random_batches(seed: int, obs_spec: specs.Array, leading: tuple[int, ...],
                   window: int | None = None) -> Batch | Windows:
    """A Batch with leaves [*leading, ...] of random values; with `window` L, Windows of L
    transitions (the routine presets' update input) with a prefix mask cut at random."""
    rng = np.random.default_rng(seed)
    if obs_spec.dtype == np.uint8:
        obs = lambda *more: rng.integers(0, 256, (*leading, *more, *obs_spec.shape),
                                         dtype=np.uint8)
    else:
        obs = lambda *more: rng.normal(size=(*leading, *more, *obs_spec.shape)).astype(
            np.float32)
    if window is not None:
        valid = rng.integers(1, window + 1, leading)[..., None]      # prefix lengths 1..L
        return Windows(obs=obs(), actions=rng.uniform(-1, 1, (*leading, window, 2)).astype(
            np.float32), rewards=rng.uniform(0, 1, (*leading, window)).astype(np.float32),
            discounts=np.full((*leading, window), 0.99, np.float32), next_obs=obs(window),
            mask=(np.arange(window) < valid).astype(np.float32))
    return Batch(obs=obs(), action=rng.uniform(-1, 1, (*leading, 2)).astype(np.float32),
                 reward=rng.uniform(0, 1, leading).astype(np.float32),
                 discount=np.full(leading, 0.99**3, np.float32), next_obs=obs())


def assert_trees_close(got, want, rtol=1e-4, atol=1e-5):
    for path, (a, b) in zip(jax.tree_util.tree_leaves_with_path(got),
                            zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol,
                                   err_msg=jax.tree_util.keystr(path[0]))


# Every update function, critic kind, actor kind and encoder family: flare and d2rl change
# only layer shapes of the drqv2 update, and seer's update before the freeze is drqv2's.
SHARDED_PRESETS = [name for name in agents.names() if name not in ("flare", "d2rl", "seer")]


@pytest.mark.slow(25)
@pytest.mark.parametrize("preset", SHARDED_PRESETS)
def test_sharded_update_equals_the_single_device_update_on_the_full_batch(preset):
    assert jax.device_count() == 2
    agent = agents.make(preset, PIXEL_SPEC, ACTION_SPEC, **TINY)
    state = agent.init(jax.random.key(0))
    routine = agent.config.policy_space == "routine"      # the update takes windows
    batches = random_batches(1, PIXEL_SPEC, (1, BATCH),
                             agent.config.routine_len if routine else None)
    key = jax.random.key(2)
    want_state, want_metrics = jax.jit(agent.update)(
        state, jax.tree.map(lambda x: x[0], batches), key)

    learner = Learner(agent, make_mesh(2))
    got_state, got_metrics = learner.update(learner.put_state(state),
                                            learner.put_batch(batches), key)
    critic = jax.tree.leaves(got_state.params["critic"])[0]
    assert len(critic.sharding.device_set) == 2            # replicated on both devices
    obs = learner.put_batch(batches).obs
    assert {shard.data.shape[1] for shard in obs.addressable_shards} == {BATCH // 2}
    # Adam's first step moves a weight by lr * g / (|g| + eps): where g is near eps (a
    # nearly dead unit) the summation order of the sharded batch mean can move it by up to
    # lr. Parameters are compared to 0.1 lr; everything else to float tolerance.
    lr_tolerance = 0.1 * agent.config.lr
    assert_trees_close(got_state.params, want_state.params, atol=lr_tolerance)
    assert_trees_close(got_state.replace(params=None), want_state.replace(params=None),
                       atol=lr_tolerance)
    assert_trees_close(got_metrics, want_metrics)


@pytest.mark.slow(18)
def test_fused_updates_equal_sequential_updates_with_split_keys():
    agent = agents.make("drqv2", PIXEL_SPEC, ACTION_SPEC, **TINY)
    state = agent.init(jax.random.key(0))
    batches = random_batches(3, PIXEL_SPEC, (3, BATCH))
    key = jax.random.key(4)
    update = jax.jit(agent.update)
    want_state, want_metrics = state, []
    for index, update_key in enumerate(jax.random.split(key, 3)):
        want_state, metrics = update(want_state, jax.tree.map(lambda x: x[index], batches),
                                     update_key)
        want_metrics.append(metrics)

    learner = Learner(agent, make_mesh(1), updates_per_call=3)
    got_state, got_metrics = learner.update(learner.put_state(state),
                                            learner.put_batch(batches), key)
    assert int(got_state.update_step) == 3
    assert_trees_close(got_state, want_state)
    for name, value in got_metrics.items():
        np.testing.assert_allclose(value, np.mean([m[name] for m in want_metrics]),
                                   rtol=1e-4, atol=1e-6, err_msg=name)
    # One update per call is the plain update with the key itself.
    single_state, _ = jax.jit(fuse_updates(agent.update, 1))(
        state, jax.tree.map(lambda x: x[:1], batches), key)
    plain_state, _ = update(state, jax.tree.map(lambda x: x[0], batches), key)
    assert_trees_close(single_state, plain_state, rtol=0, atol=0)


def test_update_memory_counts_the_arguments_exactly_and_scratch_grows_with_the_batch():
    """launch.benchmark's memory columns (Learner.update_memory): 'arguments' is the agent
    state's, the batch's and the key's bytes; 'outputs' holds at least the new state and
    the metrics; 'temp' (activations, gradients) grows with the batch."""
    nbytes = lambda tree: sum(np.asarray(leaf).nbytes for leaf in jax.tree.leaves(tree))
    temps = []
    for batch_size in (4, 64):
        agent = agents.make("drqv2", STATE_SPEC, ACTION_SPEC, **{**TINY, "batch_size": batch_size},
                            obs_type="state", aug="none")
        state = agent.init(jax.random.key(0))
        learner = Learner(agent, make_mesh(1))
        batches = random_batches(1, STATE_SPEC, (1, batch_size))
        memory = learner.update_memory(learner.put_state(state), learner.put_batch(batches),
                                       jax.random.key(1))
        _, metrics = learner.update(learner.put_state(state), learner.put_batch(batches),
                                    jax.random.key(1))
        key_bytes = 8                                      # a threefry key: two uint32
        assert memory["arguments"] == nbytes(state) + nbytes(batches) + key_bytes
        assert memory["outputs"] >= nbytes(state) + nbytes(metrics)
        temps.append(memory["temp"])
    assert temps[1] > 4 * temps[0] > 0


def test_bad_device_counts_and_indivisible_batches_are_refused():
    with pytest.raises(ValueError, match=r"num_devices=3 must be in \[1, 2\]"):
        make_mesh(3)
    with pytest.raises(ValueError, match=r"num_devices=0 must be in \[1, 2\]"):
        make_mesh(0)
    agent = agents.make("drqv2", STATE_SPEC, ACTION_SPEC, **{**TINY, "batch_size": 5},
                        obs_type="state", aug="none")
    with pytest.raises(ValueError, match="batch_size=5 must be divisible by the number of "
                                         r"devices \(2\)"):
        Learner(agent, make_mesh(2))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


@pytest.mark.slow(45)
def test_two_processes_through_jax_distributed_end_with_identical_parameters():
    """Two processes with one CPU device each form one 2-device mesh; each feeds half of
    every batch. Both must end with the same parameters, equal to one process's updates on
    the full batches."""
    port = _free_port()
    env = {**os.environ, "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")
           + " --xla_force_host_platform_device_count=1"}   # conftest's compile settings too
    workers = [subprocess.Popen(
        [sys.executable, "-m", "tests.multihost_worker", f"localhost:{port}", str(index)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for index in range(2)]
    outputs = [worker.communicate(timeout=300) for worker in workers]
    for worker, (stdout, stderr) in zip(workers, outputs):
        assert worker.returncode == 0, stderr[-3000:]
    params = [np.load(pathlib.Path(stdout.strip().splitlines()[-1])) for stdout, _ in outputs]
    assert params[0].files == params[1].files
    for name in params[0].files:
        np.testing.assert_array_equal(params[0][name], params[1][name], err_msg=name)

    from tests.multihost_worker import NUM_UPDATES, make_agent, global_batches
    agent = make_agent()
    state = agent.init(jax.random.key(0))
    update = jax.jit(agent.update)
    for step in range(NUM_UPDATES):
        state, _ = update(state, jax.tree.map(lambda x: x[0], global_batches(step)),
                          jax.random.key(100 + step))
    flat = {jax.tree_util.keystr(path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_leaves_with_path(state.params)}
    assert sorted(flat) == sorted(params[0].files)
    for name, value in flat.items():
        np.testing.assert_allclose(params[0][name], value, rtol=1e-4, atol=1e-5, err_msg=name)


@pytest.mark.slow(55)
def test_update_from_device_replay_equals_the_update_on_host_batches():
    """replay='device': batches gathered inside the jitted update from the device copy give
    the same new state as host batches of the same start indices (K = 2 seeds, U = 2)."""
    import dm_env
    from pixelzoo.replay import DeviceReplay, ReplayBuffer, gather
    import functools
    agent = agents.make("drqv2", PIXEL_SPEC, ACTION_SPEC, **TINY)
    rng = np.random.default_rng(8)
    buffers = []
    for _ in range(2):
        buffer = ReplayBuffer(PIXEL_SPEC, ACTION_SPEC, capacity=30, nstep=3, discount=0.99)
        for t in range(40):   # wraps the 30-slot ring; episodes of 12 steps
            obs = rng.integers(0, 256, PIXEL_SPEC.shape, dtype=np.uint8)
            if t % 13 == 0:
                buffer.add(dm_env.restart(obs))
            else:
                buffer.add(dm_env.transition(np.float32(rng.random()), obs),
                           rng.uniform(-1, 1, 2).astype(np.float32))
        buffers.append(buffer)
    device = DeviceReplay(buffers)
    device.sync()
    starts = np.stack([b.sample_indices(2 * BATCH, rng).reshape(2, BATCH) for b in buffers],
                      axis=1)                                                # [U, K, B]
    learner = Learner(agent, make_mesh(2), updates_per_call=2, num_seeds=2,
                      gather=functools.partial(gather, layout=device.layout))
    states = learner.put_state(jax.vmap(agent.init)(jax.random.split(jax.random.key(0), 2)))
    keys = jax.random.split(jax.random.key(1), 2)
    got, _ = learner.update_from_replay(states, device.arrays, learner.put_starts(starts), keys)
    host = [jax.tree.map(lambda x: x.reshape(2, BATCH, *x.shape[1:]),
                         b.gather(starts[:, k].reshape(-1))) for k, b in enumerate(buffers)]
    batches = jax.tree.map(lambda *x: np.stack(x, axis=1), *host)
    want, _ = learner.update(states, learner.put_batch(batches), keys)
    assert_trees_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.slow(60)
def test_seeds_sharded_over_four_devices_equal_single_seed_runs(tmp_path):
    """On 4 forced CPU devices: 4 seeds (one per device) and 2 seeds (two devices each) hold
    each seed's state and batch only on its own devices, and train the states of the
    single-seed runs (tests/seed_mesh_worker.py)."""
    flags = os.environ.get("XLA_FLAGS", "")
    env = {**os.environ, "XLA_FLAGS": flags + " --xla_force_host_platform_device_count=4"}
    result = subprocess.run([sys.executable, "-m", "tests.seed_mesh_worker", str(tmp_path)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("ok") and "4-seed run" in last and "2-seed run" in last, last


def test_impossible_seed_and_device_splits_are_refused_with_the_valid_ones():
    assert agents.make_seed_mesh(2, 2).shape == {"seed": 2, "data": 1}
    assert agents.make_seed_mesh(1, 2).shape == {"seed": 1, "data": 2}
    assert agents.make_seed_mesh(2, 2, seed_shards=1).shape == {"seed": 1, "data": 2}
    with pytest.raises(ValueError, match=r"3 seeds do not split evenly over 2 devices.*\[1\]"):
        agents.make_seed_mesh(3, 2)
    with pytest.raises(ValueError, match=r"seed_shards=2 must divide both num_seeds=3"):
        agents.make_seed_mesh(3, 2, seed_shards=2)
