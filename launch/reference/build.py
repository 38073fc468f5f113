r"""Builds launch/reference/*.csv.gz, the official curves that launch.plot overlays.

    python launch/reference/build.py ../shared/reference

Sources (docs/algorithms.md, "Reference curves"), all evaluation returns against frames (environment steps
before action repeat):
- drqv2_curves/dmc_<task>.csv: DrQ-v2 (facebookresearch/drqv2), 24 tasks, 8-10 seeds,
  action repeat 2, evaluated every 20k frames -> drqv2.csv.gz, agent "DrQ-v2 (official)".
- drq_planet_bench.csv: DrQ (denisyarats/drq) on the 6 PlaNet tasks with PlaNet's action
  repeat per task (cartpole 8, finger and walker 2, others 4: what pixelzoo's `drq` preset
  does), 10 seeds -> drq_planet.csv.gz, agent "DrQ (official, PlaNet)".
- drq_dreamer_bench.csv: DrQ on the 15 Dreamer tasks, action repeat 2, 10 seeds
  -> drq_dreamer.csv.gz, agent "DrQ (official, Dreamer)".
Both DrQ files hold only agent "DrQ"; their `step` column counts frames.

Output columns: agent, task, seed, frame, episode_return. Tasks use pixelzoo's (DrQ-v2's)
names: DrQ's `ball_in_cup_catch` becomes `cup_catch`. Returns are rounded to 0.01, the
`hour` and `episode` columns dropped; gzip with mtime 0 so a rebuild is byte-identical.
"""
import glob
import os
import sys

import pandas as pd

OUT_DIR = os.path.dirname(os.path.abspath(__file__))
COLUMNS = ["agent", "task", "seed", "frame", "episode_return"]


def _write(frame: pd.DataFrame, name: str) -> None:
    frame = frame.assign(episode_return=frame["episode_return"].round(2))
    frame = frame[COLUMNS].sort_values(["task", "seed", "frame"]).reset_index(drop=True)
    path = os.path.join(OUT_DIR, name)
    frame.to_csv(path, index=False, compression={"method": "gzip", "mtime": 0})
    print(f"{path}: {len(frame)} rows, {os.path.getsize(path)} bytes")


def main(source: str) -> None:
    files = sorted(glob.glob(os.path.join(source, "drqv2_curves", "dmc_*.csv")))
    drqv2 = pd.concat([pd.read_csv(f, index_col=0) for f in files])
    assert set(drqv2["agent"]) == {"DrQ-v2"}, set(drqv2["agent"])
    drqv2 = drqv2.rename(columns={"episode_reward": "episode_return"})
    _write(drqv2.assign(agent="DrQ-v2 (official)"), "drqv2.csv.gz")
    for bench, label in [("planet", "DrQ (official, PlaNet)"),
                         ("dreamer", "DrQ (official, Dreamer)")]:
        drq = pd.read_csv(os.path.join(source, f"drq_{bench}_bench.csv"))
        assert set(drq["agent"]) == {"DrQ"}, set(drq["agent"])
        drq = drq.rename(columns={"env": "task", "step": "frame",
                                  "episode_reward": "episode_return"})
        drq["task"] = drq["task"].replace({"ball_in_cup_catch": "cup_catch"})
        _write(drq.assign(agent=label), f"drq_{bench}.csv.gz")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/reference")
