"""The README's quick look, shortened: the same train command runs quietly and the same plot
command writes its curve (that its recipe learns: tests/test_train.py,
test_the_quick_look_recipe_learns_cartpole_balance)."""
import csv
import pathlib
import re
import subprocess
import sys

import pytest

from pixelzoo.launch import quick_look

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHORT_FRAMES = 4_000      # of the quick look's 40,000: the seed frames, then 750 updates


def one_line(text: str) -> str:
    """A README command as one line (backslash-continued lines joined, spaces collapsed)."""
    return " ".join(text.replace("\\\n", " ").split())


def test_the_readme_gives_the_quick_look_commands():
    readme = one_line((ROOT / "README.md").read_text())
    assert quick_look.train_command() in readme
    assert quick_look.plot_command() in readme
    assert "runs/quick-look/plots/cartpole_balance.png" in readme


@pytest.mark.slow(60)
def test_the_quick_look_learns_quietly_and_plots_its_curve(tmp_path):
    workdir = tmp_path / "quick-look"
    args = [arg for arg in quick_look.train_args(str(workdir))
            if not arg.startswith("--num_frames=")] + [f"--num_frames={SHORT_FRAMES}"]
    train = subprocess.run([sys.executable, "-m", "pixelzoo.launch.train", *args], cwd=tmp_path,
                           capture_output=True, text=True, timeout=600)
    assert train.returncode == 0, train.stderr[-3000:]
    assert train.stdout.startswith("cpu: 1 device\ntraining drqv2 on cartpole_balance")
    assert not re.search(r"^I\d{4} ", train.stderr, re.MULTILINE), "absl INFO on the terminal"
    assert "Unable to initialize backend" not in train.stderr + train.stdout
    # One line per checkpoint (the one at the end), none of orbax's own.
    checkpoint_lines = [line for line in train.stdout.splitlines() if "[ckpt ]" in line]
    assert len(checkpoint_lines) == 1, train.stdout
    assert re.fullmatch(rf"\[ckpt \] frame +{SHORT_FRAMES:,} saved in \d+\.\d s to "
                        rf"{re.escape(str(workdir / 'checkpoints'))}", checkpoint_lines[0])
    assert "orbax" not in (train.stdout + train.stderr).lower()
    with open(workdir / "eval.csv", newline="") as file:
        evals = [(int(row["frame"]), float(row["episode_return"])) for row in csv.DictReader(file)]
    assert [frame for frame, _ in evals] == list(range(0, SHORT_FRAMES + 1, 2000))
    assert all(0 <= episode_return <= 1000 for _, episode_return in evals), evals

    plot = subprocess.run([sys.executable, "-m", "pixelzoo.launch.plot",
                           *quick_look.plot_args(str(workdir))], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert plot.returncode == 0, plot.stderr[-3000:]
    assert (workdir / "plots" / "cartpole_balance.png").stat().st_size > 10_000
