"""Markdown tables of a comparison's runs (the agent folders below one folder) from their
train.csv and eval.csv files.

    python results/summarize_runs.py results/routines/state_cartpole_swingup
    python results/summarize_runs.py results/sspg/state_cartpole_swingup

Prints the evaluation return per seed and its mean at every evaluation frame, one column
per agent folder; for agents that log policy queries (Routines), the mean policy queries
and actions per query of the training episodes in each block of `--block` frames.
"""
import argparse
import csv
import pathlib
from collections import defaultdict


def read_rows(path: pathlib.Path) -> list[dict]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def evaluation_table(runs: dict[str, list[dict]]) -> str:
    """One row per evaluation frame, one column per agent: 'r1, r2, r3; mean'."""
    frames = sorted({int(row["frame"]) for rows in runs.values() for row in rows})
    lines = ["| frame | " + " | ".join(runs) + " |", "| ---: |" + " --- |" * len(runs)]
    for frame in frames:
        cells = []
        for rows in runs.values():
            returns = [float(row["episode_return"]) for row in rows if int(row["frame"]) == frame]
            cells.append(", ".join(f"{r:.1f}" for r in returns)
                         + f"; {sum(returns) / len(returns):.1f}" if returns else "not reached")
        lines.append(f"| {frame:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def queries_table(rows: list[dict], block: int) -> str:
    """Training episodes that queried the policy, grouped by blocks of `block` frames: mean
    policy queries per episode and actions per query, per seed."""
    grouped = defaultdict(list)
    for row in rows:
        if row.get("policy_queries") and int(row["policy_queries"]) > 0:
            end = -(-int(row["frame"]) // block) * block
            grouped[(end, row["seed"])].append(row)
    seeds = sorted({seed for _, seed in grouped}, key=int)
    lines = ["| frames up to | " + " | ".join(f"seed {s}: queries (actions/query)" for s in seeds)
             + " | episodes |", "| ---: |" + " --- |" * (len(seeds) + 1)]
    for end in sorted({end for end, _ in grouped}):
        cells, count = [], 0
        for seed in seeds:
            episodes = grouped.get((end, seed), [])
            count += len(episodes)
            queries = [int(row["policy_queries"]) for row in episodes]
            per_query = [float(row["routine_length_mean"]) for row in episodes]
            cells.append(f"{sum(queries) / len(queries):.0f} ({sum(per_query) / len(per_query):.2f})"
                         if episodes else "-")
        lines.append(f"| {end:,} | " + " | ".join(cells) + f" | {count} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=pathlib.Path)
    parser.add_argument("--block", type=int, default=10_000)
    args = parser.parse_args()
    agents = sorted(path for path in args.root.iterdir() if (path / "eval.csv").exists())
    print(evaluation_table({path.name: read_rows(path / "eval.csv") for path in agents}))
    for path in agents:
        rows = read_rows(path / "train.csv")
        if rows and "policy_queries" in rows[0]:
            print(f"\n{path.name}: policy queries per 1,000-step training episode\n")
            print(queries_table(rows, args.block))


if __name__ == "__main__":
    main()
