"""Reasoning steps per action over training from an sspg run's train.csv (per seed): the
adaptive unroll's mean k over each episode's act calls, the running average m and the
training chain length L. Writes <workdir>/reasoning_steps.png and prints a table.

    python results/sspg/plot_reasoning_steps.py results/sspg/state_cartpole_swingup/sspg
"""
import csv
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLUMNS = ("reasoning_steps_mean", "reasoning_steps_max", "reasoning_steps_average",
           "train_chain_length", "rhat_at_stop_mean")


def main(workdir: str) -> None:
    with open(os.path.join(workdir, "train.csv")) as file:
        rows = [row for row in csv.DictReader(file) if row.get("reasoning_steps_mean")]
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for seed in sorted({row["seed"] for row in rows}):
        mine = [row for row in rows if row["seed"] == seed]
        frames = [int(row["frame"]) for row in mine]
        axes[0].plot(frames, [float(r["reasoning_steps_mean"]) for r in mine], label=f"seed {seed}")
        axes[1].plot(frames, [float(r["rhat_at_stop_mean"]) for r in mine], label=f"seed {seed}")
    axes[0].set(xlabel="frames", ylabel="reasoning steps k per action (episode mean)")
    axes[1].set(xlabel="frames", ylabel="R-hat at stop (episode mean)")
    axes[0].legend()
    figure.tight_layout()
    figure.savefig(os.path.join(workdir, "reasoning_steps.png"), dpi=100)
    print("frame seed " + " ".join(COLUMNS))
    for row in rows:
        print(row["frame"], row["seed"], " ".join(f"{float(row[c]):.3f}" for c in COLUMNS))


if __name__ == "__main__":
    main(sys.argv[1])
