"""A run's metrics and logs: the learner metrics kept on the device until read, and the
rows of train.csv, eval.csv, TensorBoard (and W&B) and the terminal line."""
import collections
import os

import jax
import numpy as np

from pixelzoo.agents.common import METRIC_GATES, mean_over_updates
from pixelzoo.launch import processes
from pixelzoo.launch.progress import progress_for_run
from pixelzoo.launch.run import Run
from pixelzoo.launch.run_logging import CsvLog, TensorBoard, WandbLog

TRAIN_COLUMNS = ["frame", "step", "episode", "episode_return", "episode_length", "fps",
                 "total_time"]
EVAL_COLUMNS = ["frame", "step", "episode", "episode_return", "episode_length", "total_time"]


class NonFiniteLossError(RuntimeError):
    """A learner metric became NaN or infinite."""


class MetricsWindow:
    """Learner metrics of the updates so far, kept on the device until they are read.

    Fetched once per log interval, episode end or checkpoint (no per-update host sync); a
    non-finite value is traced back to the exact update (and seed) that produced it. Two
    host-side accumulators read them: `interval_means` (since its last call, for TensorBoard)
    and `episode_means` (since its last call, for train.csv). Means follow
    `agents.common.mean_over_updates`: a step an update skipped (e.g. the actor's, with
    actor_update_every > 1) is left out, not averaged in as a zero. Metrics are scalars, or
    [K] arrays when K seeds train together (`seeds` names them).
    """

    def __init__(self, seeds: list[int] | None = None):
        self._seeds = seeds
        self._pending_steps: list[int] = []
        self._pending: list[dict] = []
        self._interval: list[dict[str, np.ndarray]] = []
        self._episode: list[dict[str, np.ndarray]] = []

    def add(self, step: int, metrics: dict) -> None:
        self._pending_steps.append(step)
        self._pending.append(metrics)

    def fetch(self) -> None:
        """Moves the pending device metrics to the host accumulators; raises
        NonFiniteLossError naming the first bad update (a skipped step's NaN is no error)."""
        if not self._pending:
            return
        fetched = processes.gather(self._pending)  # one transfer, every process: all seeds
        rows = [{k: np.reshape(np.asarray(v, np.float64), -1) for k, v in m.items()}
                for m in fetched]
        steps, self._pending_steps, self._pending = self._pending_steps, [], []
        for row, step in zip(rows, steps):
            for name, values in row.items():      # [seeds]
                gate = METRIC_GATES.get(name)
                ran = row[gate] > 0 if gate in row else np.ones(values.shape, bool)
                bad = np.flatnonzero(ran & ~np.isfinite(values))
                if bad.size:
                    where = f" of seed {self._seeds[bad[0]]}" if self._seeds else ""
                    raise NonFiniteLossError(f"non-finite {name} ({values[bad[0]]}) in the "
                                             f"update at agent step {step}{where}")
        self._interval += rows
        self._episode += rows

    def interval_means(self) -> list[dict[str, float]]:
        """Per-seed means over the updates since the last call ([] when none)."""
        self.fetch()
        rows, self._interval = self._interval, []
        return _per_seed_means(rows)

    def episode_means(self) -> list[dict[str, float]]:
        """Per-seed means over the updates since the last call ([] when none)."""
        self.fetch()
        rows, self._episode = self._episode, []
        return _per_seed_means(rows)


def _per_seed_means(rows: list[dict[str, np.ndarray]]) -> list[dict[str, float]]:
    """Rows of name -> [K] -> K dicts of name -> mean over the rows; a metric with no value
    (no update ran its step) is left out."""
    if not rows:
        return []
    names = sorted({name for row in rows for name in row})   # an update may log fewer
    means = {}
    for name in names:        # each metric over the updates that logged it ([T, K] each)
        with_it = [row for row in rows if name in row]
        gate = METRIC_GATES.get(name)
        stacked = {key: np.stack([row[key] for row in with_it])
                   for key in ([name, gate] if gate in with_it[0] else [name])}
        means[name] = mean_over_updates(stacked, xp=np)[name]
    num_lanes = next(iter(means.values())).shape[0]
    return [{name: float(values[lane]) for name, values in means.items()
             if np.isfinite(values[lane])} for lane in range(num_lanes)]


class RunLogs:
    """train.csv, eval.csv, TensorBoard (and W&B) and the terminal line of one run, rows per
    seed. Only the primary process writes (every process calls the same methods)."""

    def __init__(self, run: Run, metric_names: list[str], logged_until: int, start_frame: int,
                 wandb_config: dict | None = None):
        """wandb_config: mirror every TensorBoard scalar to Weights & Biases, in a W&B run
        with this config (None: no W&B)."""
        self.run = run
        self.recent_returns: collections.deque = collections.deque(maxlen=10)
        self.write = processes.is_primary()
        self.progress = progress_for_run(run.config, run.spec.num_frames, start_frame,
                                         quiet=not self.write, backend=jax.default_backend())
        self.boards = []
        if not self.write:
            return
        seed_column = ["seed"] if run.multi_seed else []
        self.train = CsvLog(os.path.join(run.workdir, "train.csv"),
                            TRAIN_COLUMNS[:1] + seed_column + TRAIN_COLUMNS[1:] + metric_names)
        self.eval = CsvLog(os.path.join(run.workdir, "eval.csv"),
                           EVAL_COLUMNS[:1] + seed_column + EVAL_COLUMNS[1:])
        self.train.truncate_after(logged_until)
        self.eval.truncate_after(logged_until)
        self.boards = [TensorBoard(run.workdir)] + (
            [WandbLog(run.workdir, wandb_config)] if wandb_config is not None else [])

    def _board(self, kind: str, seed: int, values: dict, frame: int) -> None:
        prefix = f"{kind}/seed_{seed}" if self.run.multi_seed else kind
        for board in self.boards:
            board.scalars(prefix, {k: v for k, v in values.items() if k != "seed"}, frame)

    def episode(self, rows: list[dict], metrics: list[dict]) -> None:
        """Per seed: the episode's row to train.csv with the means of its updates' metrics;
        TensorBoard gets the episode's own scalars (the metrics arrive per interval)."""
        self.recent_returns.append(float(np.mean([row["episode_return"] for row in rows])))
        for row, seed_metrics in zip(rows, metrics):
            self._board("train", row["seed"], row, row["frame"])
            if self.write:
                self.train.append({**row, **seed_metrics})

    def evaluation(self, rows: list[dict]) -> None:
        for row in rows:
            if self.write:
                self.eval.append(row)
            self._board("eval", row["seed"], row, row["frame"])
        mean_return = float(np.mean([row["episode_return"] for row in rows]))
        self.progress.show(self.progress.line("eval ", rows[0]["frame"],
                                              self.progress.last_fps, mean_return))

    def interval(self, frame: int, metrics: list[dict]) -> None:
        """The learner metrics' means over the log interval, and the terminal line."""
        for seed, seed_metrics in zip(self.run.seeds, metrics):
            self._board("train", seed, seed_metrics, frame)
        recent = float(np.mean(self.recent_returns)) if self.recent_returns else None
        self.progress.show(self.progress.line("train", frame,
                                              self.progress.frames_per_second(frame), recent))

    def checkpoint(self, frame: int, seconds: float) -> None:
        """A checkpoint's one terminal line (orbax's own INFO lines need --verbosity)."""
        self.progress.show(f"[ckpt ] frame {frame:>9,} saved in {seconds:.1f} s to "
                           f"{self.run.checkpointer.directory}")

    def close(self) -> None:
        self.progress.close()
        for board in self.boards:
            board.close()
