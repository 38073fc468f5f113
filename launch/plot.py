r"""Learning curves and aggregate scores of pixelzoo runs, with the official curves overlaid.

    python -m pixelzoo.launch.plot DIR... --out=PLOTS [--frames=100000,500000] [--noreference] \
        [--reps=2000]
    python -m pixelzoo.launch.plot runs/sweep-a runs/drqv2-walker_walk-1 --out=plots

Each DIR is a sweep folder or a workdir: every folder under it that holds config.json and
eval.csv is a run. Writes to --out one `<task>.png` per task, `aggregate.png` and
`results.md`. Every x-axis and every frame is in frames (environment steps before action
repeat divides them into agent steps).

- Agent label: the `agent` preset name plus the config fields that differ between runs of
  the same agent and task (`drqv2 lr=0.0001`), so a sweep over a field gives one curve each.
- Curves: a group's runs are linearly interpolated onto one frame grid, every frame at which
  any of them was evaluated within the range all of them cover (so each point averages the
  same seeds); the band is the Student-t 95% interval of the mean over seeds,
  mean +- t(0.975, n-1) * s / sqrt(n) with s the sample standard deviation (none for n = 1).
- Aggregate (rliable): IQM, mean and optimality gap of scores normalised by DMC's maximum
  return 1000, with stratified-bootstrap (runs resampled within each task) percentile 95%
  intervals, at each --frames value, by default at each agent's largest frame that all of
  its runs reached. Reference agents join wherever their curves cover the frame.
- Reference: the official DrQ-v2 and DrQ curves in launch/reference/ (see build.py there),
  on the tasks the runs cover; `ball_in_cup_catch` counts as DrQ-v2's `cup_catch`.
"""
import json
import os
import sys
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import scipy.stats
from absl import app, flags, logging

FLAGS = flags.FLAGS

EXIT_USAGE = 2
MAX_RETURN = 1000.0  # DMC: 1000 steps per episode, reward in [0, 1] per step
CONFIDENCE = 0.95
TASK_ALIASES = {"ball_in_cup_catch": "cup_catch"}
REFERENCE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference")
REFERENCE_FILES = ("drqv2.csv.gz", "drq_planet.csv.gz", "drq_dreamer.csv.gz")
REFERENCE_COLORS = {"DrQ-v2 (official)": "black", "DrQ (official, PlaNet)": "tab:gray",
                    "DrQ (official, Dreamer)": "tab:brown"}
METRICS = ("IQM", "mean", "optimality gap")
# The tidy run table: one row per evaluation of a run.
COLUMNS = ["run", "agent", "label", "task", "seed", "reference", "frame", "episode_return"]


class UserError(Exception):
    """Bad input (paths, flags, unreadable runs): printed without a traceback, exit 2."""


# ---------------------------------------------------------------------------------- loading
def canonical_task(task: str) -> str:
    """pixelzoo's (DrQ-v2's) name of a task: ball_in_cup_catch -> cup_catch."""
    return TASK_ALIASES.get(task, task)


def find_workdirs(paths: Sequence[str]) -> list[str]:
    """Every folder under `paths` (themselves included) holding config.json and eval.csv."""
    if not paths:
        raise UserError("no input: give one or more sweep folders or workdirs")
    found: dict[str, str] = {}
    for path in paths:
        if not os.path.exists(path):
            raise UserError(f"{path}: no such directory")
        if not os.path.isdir(path):
            raise UserError(f"{path}: not a directory")
        if not os.access(path, os.R_OK | os.X_OK):
            raise UserError(f"{path}: not readable")
        for root, dirs, files in os.walk(path):
            dirs.sort()
            if "config.json" in files and "eval.csv" in files:
                found.setdefault(os.path.realpath(root), os.path.normpath(root))
                dirs.clear()  # a run's own subfolders hold no runs
    if not found:
        raise UserError(f"no workdirs (folders with config.json and eval.csv) under "
                        f"{', '.join(paths)}")
    return list(found.values())


def run_labels(specs: Sequence[dict]) -> list[str]:
    """One label per run spec (config.json's dict): the agent name, then `field=value` for
    each config field that differs between runs of the same agent and task, sorted."""
    groups: dict[tuple[str, str], list[int]] = {}
    for index, spec in enumerate(specs):
        groups.setdefault((spec["agent"], canonical_task(spec["task"])), []).append(index)
    labels = [""] * len(specs)
    for (agent, _), indices in groups.items():
        configs = [specs[i].get("config", {}) for i in indices]
        fields = sorted(set().union(*configs))
        varying = [f for f in fields
                   if len({json.dumps(c.get(f), sort_keys=True) for c in configs}) > 1]
        for i, config in zip(indices, configs):
            labels[i] = " ".join([agent, *(f"{f}={config.get(f)}" for f in varying)])
    return labels


def load_runs(workdirs: Sequence[str]) -> pd.DataFrame:
    """The tidy table (COLUMNS) of the runs' evaluations; runs without any are left out.

    frame: environment frames; episode_return: the eval row's mean return over episodes.
    """
    runs, specs, evals = [], [], []
    for workdir in workdirs:
        config_path = os.path.join(workdir, "config.json")
        eval_path = os.path.join(workdir, "eval.csv")
        try:
            with open(config_path) as file:
                spec = json.load(file)
            spec = {"agent": str(spec["agent"]), "task": str(spec["task"]),
                    "seed": int(spec["seed"]), "config": dict(spec.get("config", {}))}
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise UserError(f"{config_path}: unreadable run config ({error})") from None
        try:
            evaluation = pd.read_csv(eval_path)
            # A multi-seed workdir (launch.train --num_seeds) has a seed column.
            evaluation = evaluation[["frame", "episode_return"]
                                    + (["seed"] if "seed" in evaluation else [])]
        except pd.errors.EmptyDataError:
            evaluation = pd.DataFrame(columns=["frame", "episode_return"])
        except (OSError, ValueError, KeyError) as error:
            raise UserError(f"{eval_path}: unreadable eval log ({error})") from None
        # A run being written may end in a partial row; a resumed one never repeats a frame,
        # but if it did the later row wins.
        evaluation = evaluation.apply(pd.to_numeric, errors="coerce").dropna()
        if "seed" not in evaluation:
            evaluation = evaluation.assign(seed=spec["seed"])
        for seed, rows in evaluation.groupby("seed", sort=True):
            rows = rows.drop(columns="seed").drop_duplicates("frame", keep="last")
            multi = evaluation["seed"].nunique() > 1
            runs.append(f"{workdir}#seed={int(seed)}" if multi else workdir)
            specs.append({**spec, "seed": int(seed)})
            evals.append(rows.sort_values("frame"))
        if evaluation.empty:
            runs.append(workdir)
            specs.append(spec)
            evals.append(evaluation.drop(columns="seed"))
    tables = []
    for run, spec, label, evaluation in zip(runs, specs, run_labels(specs), evals):
        if len(evaluation):
            tables.append(evaluation.assign(
                run=run, agent=spec["agent"], label=label,
                task=canonical_task(spec["task"]), seed=spec["seed"], reference=False))
    if not tables:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS})
    table = pd.concat(tables, ignore_index=True)[COLUMNS]
    return table.astype({"frame": np.int64, "episode_return": np.float64})


def load_reference(tasks: Iterable[str] | None = None) -> pd.DataFrame:
    """The official curves (launch/reference/*.csv.gz) as a tidy table (COLUMNS), label =
    agent, restricted to `tasks` (any alias) when given."""
    table = pd.concat([pd.read_csv(os.path.join(REFERENCE_DIR, name))
                       for name in REFERENCE_FILES], ignore_index=True)
    if tasks is not None:
        table = table[table["task"].isin({canonical_task(t) for t in tasks})]
    table = table.assign(
        label=table["agent"], reference=True,
        run=table["agent"] + "/" + table["task"] + "/" + table["seed"].astype(str))
    return table[COLUMNS].astype({"frame": np.int64, "episode_return": np.float64})


# ------------------------------------------------------------------------------- statistics
def align_curves(curves: Sequence[tuple[np.ndarray, np.ndarray]]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Puts R runs' curves on one frame grid by linear interpolation.

    curves: R pairs (frames [N_r], increasing; returns [N_r]).
    Returns grid [G]: every frame at which any run was evaluated, within [latest first
    frame, earliest last frame] (the range all runs cover; empty if none), and values [R, G].
    """
    start = max(frames[0] for frames, _ in curves)
    end = min(frames[-1] for frames, _ in curves)
    grid = np.unique(np.concatenate([frames for frames, _ in curves]))
    grid = grid[(grid >= start) & (grid <= end)]
    values = np.stack([np.interp(grid, frames, returns) for frames, returns in curves])
    return grid, values


def mean_interval(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over seeds and its Student-t 95% interval.

    values: [R, ...] over R seeds. Returns mean, lower, upper, each [...]:
    mean -+ t(0.975, R-1) * s / sqrt(R), s the sample std (ddof 1); NaN bounds when R = 1.
    """
    values = np.asarray(values, dtype=np.float64)
    mean = values.mean(axis=0)
    seeds = values.shape[0]
    if seeds < 2:
        return mean, np.full_like(mean, np.nan), np.full_like(mean, np.nan)
    half = (scipy.stats.t.ppf((1 + CONFIDENCE) / 2, seeds - 1)
            * values.std(axis=0, ddof=1) / np.sqrt(seeds))
    return mean, mean - half, mean + half


def _run_curves(group: pd.DataFrame) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(run["frame"].to_numpy(np.float64), run["episode_return"].to_numpy(np.float64))
            for _, run in group.sort_values("frame").groupby("run", sort=True)]


def learning_curves(table: pd.DataFrame) -> pd.DataFrame:
    """Mean curve and 95% band per (task, label): columns task, label, reference, frame,
    mean, lower, upper, seeds; one row per grid frame (see align_curves)."""
    rows = []
    for (task, label), group in table.groupby(["task", "label"], sort=True):
        grid, values = align_curves(_run_curves(group))
        mean, lower, upper = mean_interval(values)
        rows.append(pd.DataFrame({
            "task": task, "label": label, "reference": bool(group["reference"].iloc[0]),
            "frame": grid.astype(np.int64), "mean": mean, "lower": lower, "upper": upper,
            "seeds": len(values)}))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(
        columns=["task", "label", "reference", "frame", "mean", "lower", "upper", "seeds"])


def scores_at(table: pd.DataFrame, frame: int) -> pd.DataFrame:
    """Each run's return at `frame` (linear interpolation between its evaluations), for the
    (task, label) groups all of whose runs cover `frame`.
    Columns task, label, reference, run, seed, episode_return."""
    rows = []
    for (task, label), group in table.groupby(["task", "label"], sort=True):
        runs = group.sort_values("frame").groupby("run", sort=True)
        if all(run["frame"].iloc[0] <= frame <= run["frame"].iloc[-1] for _, run in runs):
            for name, run in runs:
                rows.append({"task": task, "label": label,
                             "reference": bool(run["reference"].iloc[0]), "run": name,
                             "seed": run["seed"].iloc[0], "episode_return": float(np.interp(
                                 frame, run["frame"], run["episode_return"]))})
    return pd.DataFrame(rows, columns=["task", "label", "reference", "run", "seed",
                                       "episode_return"])


def summarise(scores: pd.DataFrame) -> pd.DataFrame:
    """scores_at's table -> per (task, label): mean, lower, upper (mean_interval), seeds."""
    rows = []
    for (task, label), group in scores.groupby(["task", "label"], sort=True):
        mean, lower, upper = mean_interval(group["episode_return"].to_numpy())
        rows.append({"task": task, "label": label, "reference": group["reference"].iloc[0],
                     "mean": float(mean), "lower": float(lower), "upper": float(upper),
                     "seeds": len(group)})
    return pd.DataFrame(rows, columns=["task", "label", "reference", "mean", "lower", "upper",
                                       "seeds"])


def final_frames(table: pd.DataFrame) -> pd.DataFrame:
    """Per (task, label) of the runs (not the reference): the largest frame all its runs
    reached. Columns task, label, frame."""
    runs = table[~table["reference"]]
    last = runs.groupby(["task", "label", "run"])["frame"].max()
    return last.groupby(["task", "label"]).min().rename("frame").reset_index()


def default_frames(table: pd.DataFrame) -> list[int]:
    """For each label of the runs, the largest frame all its runs (on every task) reached;
    sorted, without repeats."""
    runs = table[~table["reference"]]
    last = runs.groupby(["label", "run"])["frame"].max().groupby("label").min()
    return sorted({int(frame) for frame in last})


def score_matrices(scores: pd.DataFrame) -> dict[str, np.ndarray]:
    """scores_at's table -> label: normalised scores [R, T] (return / 1000), tasks sorted.

    rliable needs a full matrix, so R is the fewest seeds of any of the label's tasks and
    each task keeps its R lowest seeds.
    """
    matrices = {}
    for label, group in scores.groupby("label", sort=True):
        columns = [task_scores.sort_values(["seed", "run"])["episode_return"].to_numpy()
                   for _, task_scores in group.groupby("task", sort=True)]
        runs = min(len(column) for column in columns)
        matrices[label] = np.stack([c[:runs] for c in columns], axis=1) / MAX_RETURN
    return matrices


def aggregate_metrics(scores: np.ndarray) -> np.ndarray:
    """scores [R, T] -> [IQM, mean, optimality gap] as rliable defines them: IQM is the 25%
    trimmed mean of all R*T scores, mean the mean of per-task means, optimality gap
    mean(max(1 - score, 0))."""
    from rliable import metrics
    return np.array([metrics.aggregate_iqm(scores), metrics.aggregate_mean(scores),
                     metrics.aggregate_optimality_gap(scores)])


def aggregate(matrices: dict[str, np.ndarray], reps: int = 2000, seed: int = 0
              ) -> pd.DataFrame:
    """Point estimates and stratified-bootstrap percentile 95% intervals (rliable) of
    METRICS for each label's matrix [R, T], each label's bootstrap seeded with `seed`.
    Columns label, metric, value, lower, upper, runs, tasks."""
    from rliable import library
    rows = []
    for label, matrix in matrices.items():
        # rliable 1.2 draws its resamples from the global NumPy generator (it ignores
        # random_state), so seed that one here and put its state back afterwards.
        saved = np.random.get_state()
        np.random.seed(seed)
        try:
            points, intervals = library.get_interval_estimates(
                {label: matrix}, aggregate_metrics, reps=reps,
                confidence_interval_size=CONFIDENCE)
        finally:
            np.random.set_state(saved)
        for i, metric in enumerate(METRICS):
            rows.append({"label": label, "metric": metric, "value": points[label][i],
                         "lower": intervals[label][0, i], "upper": intervals[label][1, i],
                         "runs": matrix.shape[0], "tasks": matrix.shape[1]})
    return pd.DataFrame(rows, columns=["label", "metric", "value", "lower", "upper", "runs",
                                       "tasks"])


def task_table(table: pd.DataFrame, frames: Sequence[int]) -> pd.DataFrame:
    """Per task, the scores (summarise) of every label, runs' and reference's, at each run
    label's final frame on that task and at each of `frames` a run label there reaches.
    Columns task, frame, label, reference, mean, lower, upper, seeds."""
    finals = final_frames(table)
    reached = finals.groupby("task")["frame"].max()
    wanted = {(task, int(frame)) for task, frame in zip(finals["task"], finals["frame"])}
    wanted |= {(task, int(f)) for task, last in reached.items() for f in frames if f <= last}
    rows = []
    for frame in sorted({f for _, f in wanted}):
        summary = summarise(scores_at(table, frame))
        summary = summary.loc[np.array([(t, frame) in wanted for t in summary["task"]], bool)]
        rows.append(summary.assign(frame=frame))
    columns = ["task", "frame", "label", "reference", "mean", "lower", "upper", "seeds"]
    if not rows:
        return pd.DataFrame(columns=columns)
    result = pd.concat(rows, ignore_index=True)[columns]
    return result.sort_values(["task", "frame", "reference", "label"], ignore_index=True)


# --------------------------------------------------------------------------------- plotting
def _frames_label(frame: float, _: object = None) -> str:
    if frame >= 1e6:
        return f"{frame / 1e6:g}M"
    return f"{frame / 1e3:g}k" if frame >= 1e3 else f"{frame:g}"


def _colors(labels: Iterable[str]) -> dict[str, str]:
    own = sorted(label for label in set(labels) if label not in REFERENCE_COLORS)
    return {**{label: f"C{i % 10}" for i, label in enumerate(own)}, **REFERENCE_COLORS}


def plot_task(curves: pd.DataFrame, task: str, path: str, colors: dict[str, str]) -> None:
    """One task's learning curves (learning_curves rows of that task) to a PNG; the x-axis
    ends at the runs' last frame, the reference curves are cut there."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter
    own = curves[~curves["reference"]]
    xmax = float(own["frame"].max()) if len(own) else 1.0
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for (reference, label), curve in curves.groupby(["reference", "label"], sort=True):
        frames = curve["frame"].to_numpy()
        beyond = frames[frames >= xmax]
        curve = curve[frames <= (beyond.min() if len(beyond) else xmax)]
        if curve.empty:  # seeds whose frame ranges do not overlap
            continue
        seeds = int(curve["seeds"].iloc[0])
        ax.plot(curve["frame"], curve["mean"], color=colors[label],
                linestyle="--" if reference else "-", marker="o" if len(curve) == 1 else None,
                label=f"{label} ({seeds} seed{'s' if seeds > 1 else ''})")
        ax.fill_between(curve["frame"], curve["lower"], curve["upper"], color=colors[label],
                        alpha=0.15, linewidth=0)
    ax.set_xlim(0, max(xmax, 1.0))
    ax.xaxis.set_major_formatter(FuncFormatter(_frames_label))
    ax.set_xlabel("frames (environment steps)")
    ax.set_ylabel("eval episode return")
    ax.set_title(f"{task}: mean and 95% t-interval over seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_aggregate(results: dict[int, pd.DataFrame], path: str, colors: dict[str, str]
                   ) -> None:
    """aggregate() tables by frame -> one row of panels (IQM, mean, optimality gap) per
    frame: point estimate and 95% bootstrap interval per agent."""
    import matplotlib.pyplot as plt
    frames = sorted(results)
    labels = max([results[f]["label"].nunique() for f in frames] + [1])
    fig, axes = plt.subplots(len(frames), len(METRICS), squeeze=False,
                             figsize=(4.2 * len(METRICS), (0.9 + 0.35 * labels) * len(frames)))
    for row, frame in zip(axes, frames):
        table = results[frame]
        for ax, metric in zip(row, METRICS):
            data = table[table["metric"] == metric].sort_values("label", ignore_index=True)
            for y, item in data.iterrows():
                ax.errorbar(item["value"], y, xerr=[[item["value"] - item["lower"]],
                                                    [item["upper"] - item["value"]]],
                            fmt="o", color=colors[item["label"]], capsize=3)
            ticks = [f"{r['label']} ({r['tasks']} task{'s' * (r['tasks'] > 1)} x "
                     f"{r['runs']} seed{'s' * (r['runs'] > 1)})" for _, r in data.iterrows()]
            ax.set_yticks(range(len(data)), ticks if metric == METRICS[0] else [])
            ax.set_ylim(-0.6, max(len(data), 1) - 0.4)
            ax.set_title(f"{metric} at {_frames_label(frame)} frames", fontsize=9)
            ax.set_xlabel("normalised score (return / 1000)", fontsize=8)
            ax.grid(axis="x", alpha=0.3)
            if data.empty:
                ax.text(0.5, 0.5, "no agent reaches this frame", ha="center",
                        transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------------- report
def _score(mean: float, lower: float, upper: float) -> str:
    return f"{mean:.1f}" if np.isnan(lower) else f"{mean:.1f} ± {(upper - lower) / 2:.1f}"


def results_markdown(tasks: pd.DataFrame, aggregates: dict[int, pd.DataFrame],
                     sources: Sequence[str], num_runs: int, reference: bool = True) -> str:
    """results.md: the per-task table (task_table) and the aggregate tables by frame."""
    lines = [
        "# Results", "",
        f"{num_runs} run{'s' * (num_runs != 1)} from {', '.join(sources)}. Frames are "
        "environment steps (before action repeat). A score is a run's evaluation return "
        "(mean over its eval episodes) at that frame, interpolated linearly between its "
        "evaluations."
        + (" Agents named official are the published curves (launch/reference)."
           if reference else ""), "",
        "## Per task", "",
        ("Mean ± half-width of the Student-t 95% interval over seeds (no interval for one "
         "seed), at each agent's final frame (the last one all its seeds reached) and at the "
         "aggregate frames."), ""]
    for task, rows in tasks.groupby("task", sort=True):
        lines += [f"### {task}", "", "| agent | frame | return | seeds |",
                  "| --- | ---: | ---: | ---: |"]
        for _, row in rows.iterrows():
            lines.append(f"| {row['label']} | {row['frame']} | "
                         f"{_score(row['mean'], row['lower'], row['upper'])} | "
                         f"{row['seeds']} |")
        lines.append("")
    lines += ["## Aggregate", "",
              ("rliable on scores normalised by 1000: point estimate [stratified-bootstrap "
               "percentile 95% interval]. Each agent is aggregated over the tasks it has at "
               "that frame (`tasks`), with the same number of seeds per task (`seeds`: the "
               "fewest any task has; the lowest seeds are kept). Agents over different tasks "
               "are not comparable."), ""]
    for frame, table in sorted(aggregates.items()):
        lines += [f"### At {frame} frames", ""]
        if table.empty:
            lines += ["No agent reaches this frame.", ""]
            continue
        lines += ["| agent | tasks | seeds | " + " | ".join(METRICS) + " |",
                  "| --- | ---: | ---: | " + " | ".join("---" for _ in METRICS) + " |"]
        for label, rows in table.groupby("label", sort=True):
            cells = [f"{r['value']:.3f} [{r['lower']:.3f}, {r['upper']:.3f}]"
                     for _, r in rows.set_index("metric").loc[list(METRICS)].iterrows()]
            lines.append(f"| {label} | {rows['tasks'].iloc[0]} | {rows['runs'].iloc[0]} | "
                         + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def make_report(paths: Sequence[str], out: str, frames: Sequence[int] = (),
                reference: bool = True, reps: int = 2000) -> list[str]:
    """Everything the command does; returns the files written. Raises UserError."""
    runs = load_runs(find_workdirs(paths))
    if runs.empty:
        raise UserError(f"no evaluations yet in the runs under {', '.join(paths)}")
    table = runs
    if reference:
        table = pd.concat([runs, load_reference(runs["task"].unique())], ignore_index=True)
    frames = sorted(set(frames)) or default_frames(table)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as error:
        raise UserError(f"--out={out}: {error.strerror}") from None
    import matplotlib
    matplotlib.use("Agg")
    colors = _colors(table["label"])
    curves = learning_curves(table)
    written = []
    for task in sorted(runs["task"].unique()):
        path = os.path.join(out, f"{task}.png")
        plot_task(curves[curves["task"] == task], task, path, colors)
        written.append(path)
    aggregates = {frame: aggregate(score_matrices(scores_at(table, frame)), reps=reps)
                  for frame in frames}
    path = os.path.join(out, "aggregate.png")
    plot_aggregate(aggregates, path, colors)
    written.append(path)
    path = os.path.join(out, "results.md")
    with open(path, "w") as file:
        file.write(results_markdown(task_table(table, frames), aggregates, paths,
                                    runs["run"].nunique(), reference))
    written.append(path)
    return written


def parse_frames(values: Sequence[str]) -> list[int]:
    """--frames strings -> positive ints; UserError otherwise."""
    try:
        frames = [int(value) for value in values]
    except ValueError:
        raise UserError(f"--frames={','.join(values)}: want positive integers, e.g. "
                        "--frames=100000,500000") from None
    if any(frame <= 0 for frame in frames):
        raise UserError(f"--frames={','.join(values)}: frames must be > 0")
    return frames


def define_flags() -> None:
    """The command's flags (defined only when run as a program, so importing defines none)."""
    flags.DEFINE_string("out", "plots", "Output folder for the PNGs and results.md.")
    flags.DEFINE_list("frames", [], "Frames at which to aggregate, e.g. 100000,500000. "
                      "Default: for each agent the largest frame that all its runs reached.")
    flags.DEFINE_bool("reference", True, "Overlay the official DrQ-v2 and DrQ curves and "
                      "include them in the aggregate; --noreference leaves them out.")
    flags.DEFINE_integer("reps", 2000, "Bootstrap replications for the aggregate intervals.")


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing with a short message and exit 2 on a bad flag."""
    try:
        return FLAGS(argv)
    except flags.Error as error:
        print(f"error: {error}\nusage: python -m pixelzoo.launch.plot DIR... --out=PLOTS "
              "[--frames=100000,500000] [--noreference] [--reps=2000]", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def main(argv: list[str]) -> None:
    logging.set_verbosity(logging.WARNING)  # rliable logs each agent at INFO
    try:
        if FLAGS.reps < 1:
            raise UserError(f"--reps={FLAGS.reps} must be >= 1")
        written = make_report(argv[1:], FLAGS.out, parse_frames(FLAGS.frames),
                              FLAGS.reference, FLAGS.reps)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    print("\n".join(written))


def run() -> None:
    """Console script `pixelzoo-plot` (= python -m pixelzoo.launch.plot)."""
    define_flags()
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    run()
