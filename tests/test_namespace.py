"""pixelzoo as an installed library: one `pixelzoo` namespace that a user's own `agents/`,
`envs/` or `launch/` packages cannot shadow, and nothing generic at the top level."""
import importlib.metadata
import os
import subprocess
import sys
import textwrap

import pytest

USER_SCRIPT = textwrap.dedent("""
    import agents, envs, launch                      # the user's own packages
    assert agents.MINE and envs.MINE and launch.MINE
    import jax, numpy as np
    from dm_env import specs
    from pixelzoo import agents as zoo_agents, envs as zoo_envs, networks, replay
    assert zoo_agents is not agents and "drqv2" in zoo_agents.names()
    assert zoo_envs.names() and networks.ConvEncoder and replay.ReplayBuffer
    obs_spec = specs.Array((5,), np.float32, "state")
    action_spec = specs.BoundedArray((2,), np.float32, -1.0, 1.0, "action")
    agent = zoo_agents.make("drqv2", obs_spec, action_spec, obs_type="state", hidden_dim=8,
                            feature_dim=4, batch_size=4)
    state = agent.init(jax.random.key(0))
    rng = np.random.default_rng(0)
    batch = replay.Batch(rng.normal(size=(4, 5)).astype(np.float32),
                         rng.uniform(-1, 1, (4, 2)).astype(np.float32),
                         np.ones(4, np.float32), np.full(4, 0.99, np.float32),
                         rng.normal(size=(4, 5)).astype(np.float32))
    new_state, metrics = jax.jit(agent.update)(state, batch, jax.random.key(1))
    assert int(new_state.update_step) == 1 and np.isfinite(float(metrics["critic_loss"]))
    print("updated", float(metrics["critic_loss"]))
""")


ABSL_HELP_EXIT_CODE = 1   # absl's --help / --helpfull print the flags, then exit 1


@pytest.mark.slow(12)
def test_a_project_with_its_own_agents_envs_and_launch_packages_uses_pixelzoo(tmp_path):
    for name in ("agents", "envs", "launch"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("MINE = True\n")
    (tmp_path / "user_script.py").write_text(USER_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "user_script.py"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "updated" in result.stdout
    result = subprocess.run([sys.executable, "-m", "pixelzoo.launch.train", "--helpfull"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.returncode == ABSL_HELP_EXIT_CODE
    assert "--agent" in result.stdout and "--config" in result.stdout


@pytest.mark.slow(10)
def test_the_distribution_installs_only_the_pixelzoo_namespace_and_its_console_scripts(tmp_path):
    dist = importlib.metadata.distribution("pixelzoo")
    assert dist.read_text("top_level.txt").split() == ["pixelzoo"]
    scripts = {e.name: e.value for e in dist.entry_points if e.group == "console_scripts"}
    launchers = ("train", "sweep", "plot", "benchmark")
    assert scripts == {f"pixelzoo-{n}": f"pixelzoo.launch.{n}:run" for n in launchers}
    bin_dir = os.path.dirname(sys.executable)
    for name in launchers:          # each script is installed, runs and prints its usage
        result = subprocess.run([os.path.join(bin_dir, f"pixelzoo-{name}"), "--help"],
                                cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert "Traceback" not in result.stderr, (name, result.stderr[-3000:])
        assert "pixelzoo.launch." + name in result.stdout or "USAGE" in result.stdout, name
