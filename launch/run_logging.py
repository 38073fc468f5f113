"""What a run writes besides checkpoints: CSV logs, TensorBoard events, evaluation videos;
terminal progress is `launch.progress` (Progress re-exported here)."""
import csv
import os
from typing import Sequence

import numpy as np

from pixelzoo.launch.progress import Progress, format_duration  # noqa: F401 - re-exported


class CsvLog:
    """Appends rows with fixed columns to `path`.

    `truncate_after(frame)` drops rows logged after a checkpoint's frame, so that a resumed
    run appends without duplicate frames.
    """

    def __init__(self, path: str, columns: Sequence[str]):
        self.path = path
        self.columns = list(columns)
        if os.path.exists(path):
            with open(path, newline="") as file:
                header = next(csv.reader(file), None)
            if header != self.columns:
                raise ValueError(f"{path} has columns {header}, expected {self.columns}")
        else:
            with open(path, "w", newline="") as file:
                csv.writer(file).writerow(self.columns)

    def truncate_after(self, frame: int) -> None:
        with open(self.path, newline="") as file:
            rows = list(csv.DictReader(file))
        kept = [row for row in rows if int(row["frame"]) <= frame]
        if len(kept) != len(rows):
            self._write_all(kept)

    def _write_all(self, rows: list[dict]) -> None:
        tmp_path = self.path + ".tmp"
        with open(tmp_path, "w", newline="") as file:
            writer = csv.DictWriter(file, self.columns)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp_path, self.path)

    def append(self, row: dict) -> None:
        with open(self.path, "a", newline="") as file:
            csv.DictWriter(file, self.columns).writerow({k: row.get(k, "") for k in self.columns})


class TensorBoard:
    """Scalar summaries as TensorBoard event files in the workdir (tensorboardX, no TF)."""

    def __init__(self, logdir: str):
        from tensorboardX import SummaryWriter  # deferred: only the launcher needs it
        self._writer = SummaryWriter(logdir, flush_secs=30)

    def scalars(self, prefix: str, values: dict, frame: int) -> None:
        for name, value in values.items():
            if isinstance(value, (int, float, np.floating, np.integer)):
                self._writer.add_scalar(f"{prefix}/{name}", float(value), frame)

    def close(self) -> None:
        self._writer.close()


class WandbLog:
    """The TensorBoard scalars mirrored to Weights & Biases (`--wandb`, extra `[wandb]`).

    One W&B run per workdir: its id is derived from the workdir's absolute path and it is
    resumed (resume='allow'), so a resumed launch continues the same W&B run. Scalars are
    logged with `frame` as their x-axis (W&B's own step only counts calls), so rows that a
    resume writes again at earlier frames are kept. The run's config is the run spec
    (agent, task, seed, num_seeds, num_frames, config fields). WANDB_MODE=offline and the
    other WANDB_* variables work as usual; files go to <workdir>/wandb/.
    """

    def __init__(self, workdir: str, spec: dict, project: str = "pixelzoo"):
        import hashlib
        try:
            import wandb  # deferred: optional (pip install "pixelzoo[wandb]")
        except ImportError:
            raise ImportError("--wandb needs the wandb package: pip install "
                              "'pixelzoo[wandb]'") from None
        path = os.path.abspath(workdir)
        run_id = hashlib.sha1(path.encode()).hexdigest()[:16]
        self._run = wandb.init(project=project, id=run_id, resume="allow", dir=path,
                               name=os.path.basename(path), config=spec,
                               settings=wandb.Settings(console="off"))
        self._run.define_metric("frame")
        self._run.define_metric("*", step_metric="frame")

    def scalars(self, prefix: str, values: dict, frame: int) -> None:
        numbers = {f"{prefix}/{name}": float(value) for name, value in values.items()
                   if isinstance(value, (int, float, np.floating, np.integer))}
        if numbers:
            self._run.log({"frame": frame, **numbers})

    def close(self) -> None:
        self._run.finish()


def save_video(path: str, frames: list[np.ndarray], fps: int = 30) -> None:
    """uint8 [H, W, 3] frames -> mp4 at `path` (imageio with its bundled ffmpeg)."""
    import imageio  # deferred: only needed with save_video
    os.makedirs(os.path.dirname(path), exist_ok=True)
    imageio.mimsave(path, frames, fps=fps, macro_block_size=1)
