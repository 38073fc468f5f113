"""What the terminal shows of a run while it trains and evaluates.

- `Progress`: the live progress line, fed once per agent step (`training`) and per
  evaluation step (`evaluating`): frames, frames/s over the last seconds, the episode's
  return so far and the time left. On a terminal it is one line rewritten in place (`\\r`)
  every second (or after each agent step, when one takes longer; while a step runs longer
  than HEARTBEAT_S a heartbeat thread redraws it with the step's running time), kept below
  the permanent lines; in a file or pipe (a sweep's train.log) a plain line at most every 30 s,
  and only when nothing else was printed meanwhile. Permanent lines (`show`) go above it.
- `DurationForecast`: on a CPU-only pixel run, one line after the first measured updates
  saying how long the whole run would take, with a command for a quick look instead.
- `device_summary`: the start line naming the backend and its devices; `mesh_summary`,
  the next, how the seeds are placed on the processes and devices.

Every clock and stream is injectable, so none of this needs a terminal to be tested.
"""
import collections
import math
import os
import sys
import threading
import time
from typing import Any, Callable, Sequence

import numpy as np

from pixelzoo.launch import quick_look

TERMINAL_REFRESH_S = 1.0    # the live line's refresh on a terminal (in place)
HEARTBEAT_S = 2.0           # on a terminal, a step running this long redraws the line
FILE_REFRESH_S = 30.0       # at most one live line this often in a file or pipe
RATE_WINDOW_S = 10.0        # frames/s of the live line: over about this many seconds
DEFAULT_WIDTH = 120         # columns when the terminal's width is unknown


def format_duration(seconds: float) -> str:
    """H:MM:SS, with days in front from 24 h on ('7d 04:10:00'); '?' when not finite."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    days, seconds = divmod(seconds, 86_400)
    clock = f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    return f"{days}d {clock:0>8}" if days else clock


def device_summary(devices: Sequence[Any], used: int, obs_type: str) -> str:
    """The start line: backend and devices ('cpu: 1 device', 'gpu: 8 x NVIDIA H100'), how
    many of them train when fewer, and, on CPU-only pixel runs, what to expect.

    devices: jax.devices() (anything with .platform and .device_kind)."""
    kinds = collections.Counter((device.platform, device.device_kind) for device in devices)
    parts = [f"{platform}: {_count(count, 'device')}" if platform == "cpu"
             else f"{platform}: {count} x {kind}" for (platform, kind), count in kinds.items()]
    text = ", ".join(parts)
    if used < len(devices):
        text += f" (training on {used})"
    if obs_type == "pixels" and all(device.platform == "cpu" for device in devices):
        text += ("; no accelerator: each pixel update takes seconds here, and the run's "
                 "duration will be estimated after the first updates")
    return text


def mesh_summary(devices_per_process: Sequence[int], num_seeds: int, seed_shards: int,
                 replay: str) -> str:
    """The start line that says how the run is placed: processes x devices per process, the
    seeds on the devices, and where the replays live. E.g. 'mesh: 2 processes x 2 devices,
    8 seeds, 2 seeds per device; replays in each process's host memory (its seeds')'.

    devices_per_process: each process's devices that train; seed_shards: groups of
    num_seeds/seed_shards seeds, each on num_devices/seed_shards devices; replay: the
    config's 'host' or 'device'."""
    num_processes, num_devices = len(devices_per_process), sum(devices_per_process)
    processes = _count(num_processes, "process", "processes")
    if len(set(devices_per_process)) == 1:
        devices = f"{processes} x {_count(devices_per_process[0], 'device')}"
    else:
        devices = (f"{_count(num_devices, 'device')} on {processes} "
                   f"({' + '.join(map(str, devices_per_process))})")
    seeds_per_group, devices_per_group = num_seeds // seed_shards, num_devices // seed_shards
    if devices_per_group == 1:
        placement = f"{_count(seeds_per_group, 'seed')} per device"
    elif seeds_per_group == 1:
        placement = f"{devices_per_group} devices per seed"
    else:
        placement = (f"{seed_shards} groups of {seeds_per_group} seeds, each on "
                     f"{devices_per_group} devices")
    if replay == "device":
        where = "device memory (mirrored from the host)"
    else:
        where = "each process's host memory (its seeds')" if num_processes > 1 else "host memory"
    return f"mesh: {devices}, {_count(num_seeds, 'seed')}, {placement}; replays in {where}"


def _count(count: int, noun: str, nouns: str | None = None) -> str:
    """'1 seed', '2 seeds' ('1 process', '2 processes' with nouns='processes')."""
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"


class RateWindow:
    """Frames/s over roughly the last `window_s` seconds, from (time, frame) samples."""

    def __init__(self, window_s: float = RATE_WINDOW_S):
        self.window_s = window_s
        self._samples: collections.deque = collections.deque()

    def restart(self, now: float, frame: int) -> None:
        self._samples.clear()
        self._samples.append((now, frame))

    def add(self, now: float, frame: int) -> float:
        """Records a sample; the rate since the oldest one kept (0 before any time passed)."""
        self._samples.append((now, frame))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window_s:
            self._samples.popleft()
        first_time, first_frame = self._samples[0]
        return (frame - first_frame) / (now - first_time) if now > first_time else 0.0


class DurationForecast:
    """The run's duration at the rate of its first measured updates, said once.

    Measures from the first sample after `frames_per_update` frames past the first update
    (which compiles) or the resume, until `min_updates` updates and `min_seconds` passed.
    """

    def __init__(self, total_frames: int, first_update_frame: int, frames_per_update: int,
                 backend: str, start_frame: int = 0, min_updates: int = 5,
                 min_seconds: float = 10.0):
        self.total_frames, self.frames_per_update = total_frames, frames_per_update
        self.backend = backend
        self.measure_from = max(first_update_frame, start_frame) + frames_per_update
        self.min_updates, self.min_seconds = min_updates, min_seconds
        self.done = False
        self._start: tuple[float, int] | None = None

    def restart(self) -> None:
        """Drops the measurement so far (an evaluation came in between)."""
        self._start = None

    def observe(self, now: float, frame: int) -> str | None:
        """The forecast line once enough updates were timed, else None."""
        if self.done or frame < self.measure_from:
            return None
        if self._start is None:
            self._start = (now, frame)
            return None
        start_time, start_frame = self._start
        seconds, frames = now - start_time, frame - start_frame
        if frames < self.min_updates * self.frames_per_update or seconds < self.min_seconds:
            return None
        self.done = True
        fps = frames / seconds
        total = self.total_frames / fps
        days = f" (~{total / 86_400:.1f} days)" if total >= 86_400 else ""
        return (f"on {self.backend} the first updates took {self.frames_per_update / fps:.1f} s "
                f"each ({fps:.1f} frames/s): {self.total_frames:,} frames would take "
                f"{format_duration(total)}{days}. For a quick look try: "
                + quick_look.train_command())


class Progress:
    """The terminal's lines of a run: permanent ones (`show`, `line`) and the live one.

    stream: where lines go (default: sys.stdout at the time of each line); quiet: nowhere
    (the processes of a multi-process run other than the primary); clock: seconds
    (time.monotonic); forecast: said once from the training steps' timing; action_repeat:
    frames per evaluation step; first_update_frame: the frame whose step runs (and so
    compiles) the first update, announced on the live line before that step.
    """

    def __init__(self, total_frames: int, start_frame: int, stream=None, quiet: bool = False,
                 clock: Callable[[], float] = time.monotonic,
                 forecast: DurationForecast | None = None, action_repeat: int = 1,
                 first_update_frame: int | None = None):
        self.total_frames = total_frames
        self.stream, self.quiet, self.clock = stream, quiet, clock
        self.forecast, self.action_repeat = forecast, action_repeat
        self.first_update_frame = first_update_frame
        now = clock()
        self._last_time, self._last_frame = now, start_frame
        self.last_fps = 0.0  # training frames/s of the last interval, 0 before the first
        self._rate = RateWindow()
        self._rate.restart(now, start_frame)
        self._phase = "train"
        self._next_check = now + TERMINAL_REFRESH_S
        self._last_output = now      # when a line was last printed (file mode's gap)
        self._live = False           # a live line is on the terminal, not ended by \n
        self._live_text = ""
        self._last_refresh = now     # when the live line was last drawn
        self._last_step = now        # when the last agent or evaluation step ended
        self._eval: dict[str, Any] = {}
        self._lock = threading.Lock()   # the heartbeat thread writes too
        self._heartbeat: threading.Thread | None = None
        self._stopped = threading.Event()

    # ------------------------------------------------------------------ permanent lines
    def frames_per_second(self, frame: int) -> float:
        """Frames/s since the previous call (starts a new interval)."""
        now = self.clock()
        elapsed = max(now - self._last_time, 1e-9)
        fps = (frame - self._last_frame) / elapsed
        self._last_time, self._last_frame = now, frame
        self.last_fps = fps
        return fps

    def line(self, kind: str, frame: int, fps: float, recent_return: float | None) -> str:
        left = (self.total_frames - frame) / fps if fps > 0 else float("inf")
        ret = "    n/a" if recent_return is None else f"{recent_return:7.1f}"
        pct = 100.0 * frame / self.total_frames
        return (f"[{kind}] frame {frame:>9,}/{self.total_frames:,} ({pct:5.1f}%) | "
                f"{fps:7.1f} frames/s | return {ret} | left {format_duration(left)}")

    def show(self, text: str) -> None:
        """A permanent line; on a terminal the live line is drawn again below it."""
        if self.quiet:
            return
        with self._lock:
            stream = self._stream()
            if self._live:
                stream.write(f"\r\x1b[K{text}\n{self._live_text}\x1b[K")
            else:
                stream.write(text + "\n")
            stream.flush()
            self._last_output = self.clock()

    def close(self) -> None:
        """Stops the heartbeat and clears the live line, so that what follows starts on an
        empty line."""
        self._stopped.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        with self._lock:
            if self._live and not self.quiet:
                self._stream().write("\r\x1b[K")
                self._stream().flush()
            self._live = False

    # ------------------------------------------------------------------ the heartbeat
    def beat(self) -> None:
        """On a terminal, when the live line has not been drawn for HEARTBEAT_S (a long
        agent step: an update compiling, or seconds-long CPU updates), draws it again with
        how long the current step has been running, so a working run never looks hung."""
        now = self.clock()
        with self._lock:
            if not self._live or now - self._last_refresh < HEARTBEAT_S:
                return
            text = self._live_text.split(" | step running")[0]
            text += f" | step running {now - self._last_step:.0f} s"
            stream = self._stream()
            stream.write(f"\r{text[:_width(stream) - 1]}\x1b[K")
            stream.flush()
            self._last_refresh = now

    def start_heartbeat(self) -> None:
        """On a terminal, a daemon thread calling `beat` every TERMINAL_REFRESH_S until
        `close` (nothing in a file or pipe, or when quiet)."""
        if self.quiet or self._heartbeat is not None or not _is_terminal(self._stream()):
            return

        def run() -> None:
            while not self._stopped.wait(TERMINAL_REFRESH_S):
                self.beat()

        self._heartbeat = threading.Thread(target=run, name="pixelzoo-progress", daemon=True)
        self._heartbeat.start()

    # ------------------------------------------------------------------ the live line
    def training(self, frame: int, episode_returns: np.ndarray) -> None:
        """Called after every agent step: `frame` reached, the running episode's returns so
        far ([K] seeds). Costs a clock reading unless a refresh is due."""
        now = self.clock()
        self._last_step = now
        if self._phase != "train":       # the first step after an evaluation
            self._phase = "train"
            self._rate.restart(now, frame)
            return
        compiling = frame == self.first_update_frame
        if now < self._next_check and not compiling:
            return
        self._next_check = now + TERMINAL_REFRESH_S
        fps = self._rate.add(now, frame)
        if self.forecast is not None:
            forecast = self.forecast.observe(now, frame)
            if forecast is not None:
                self.show(forecast)
        left = (self.total_frames - frame) / fps if fps > 0 else float("inf")
        self._refresh(now, f"[train] frame {frame:,}/{self.total_frames:,} | {fps:.1f} frames/s"
                           f" | return so far {float(np.mean(episode_returns)):.1f}"
                           f" | left {format_duration(left)}"
                           + (" | compiling the update" if compiling else ""))

    def evaluating(self, frame: int, num_episodes: int) -> Callable[[int, np.ndarray], None]:
        """Starts an evaluation at training frame `frame`; returns the function its every
        step calls with (episode index, the seeds' returns so far [K])."""
        now = self.clock()
        self._phase = "eval"
        if self.forecast is not None:
            self.forecast.restart()
        self._rate.restart(now, 0)
        self._eval = {"frame": frame, "episodes": num_episodes, "steps": 0,
                      "episode": 0, "episode_start": 0, "episode_steps": None}
        return self._evaluation_step

    def _evaluation_step(self, episode: int, returns: np.ndarray) -> None:
        run = self._eval
        run["steps"] += 1
        if episode != run["episode"]:
            run["episode_steps"] = run["steps"] - 1 - run["episode_start"]
            run["episode"], run["episode_start"] = episode, run["steps"] - 1
        now = self.clock()
        self._last_step = now
        if now < self._next_check:
            return
        self._next_check = now + TERMINAL_REFRESH_S
        frames = run["steps"] * self.action_repeat
        fps = self._rate.add(now, frames)
        left = float("inf")
        if run["episode_steps"] and fps > 0:
            total_steps = run["episodes"] * run["episode_steps"]
            left = (total_steps - run["steps"]) * self.action_repeat / fps
        self._refresh(now, f"[eval ] frame {run['frame']:,}: episode {episode + 1}/"
                           f"{run['episodes']} | {fps:.1f} frames/s | return so far "
                           f"{float(np.mean(returns)):.1f} | eval left {format_duration(left)}")

    def _refresh(self, now: float, text: str) -> None:
        if self.quiet:
            return
        stream = self._stream()
        if _is_terminal(stream):
            with self._lock:
                self._live_text = text[:_width(stream) - 1]
                stream.write(f"\r{self._live_text}\x1b[K")
                stream.flush()
                self._live, self._last_refresh = True, now
        elif now - self._last_output >= FILE_REFRESH_S:
            self.show(text)

    def _stream(self):
        return self.stream or sys.stdout


def _is_terminal(stream) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _width(stream) -> int:
    """The terminal's columns for `stream` (DEFAULT_WIDTH when it has no terminal size)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns or DEFAULT_WIDTH
    except (AttributeError, OSError, ValueError):
        return DEFAULT_WIDTH


def progress_for_run(config: Any, num_frames: int, start_frame: int, quiet: bool,
                     backend: str) -> Progress:
    """The Progress of a run of `config` (agents.Config) on `backend` (jax.default_backend()):
    with a DurationForecast when it learns from pixels without an accelerator."""
    period = config.update_every_steps * config.updates_per_call     # agent steps
    seed_steps = config.num_seed_frames // config.action_repeat
    first_update_frame = -(-seed_steps // period) * period * config.action_repeat
    forecast = None
    if backend == "cpu" and config.obs_type == "pixels":
        forecast = DurationForecast(num_frames, first_update_frame,
                                    period * config.action_repeat, backend, start_frame)
    progress = Progress(num_frames, start_frame, quiet=quiet, forecast=forecast,
                        action_repeat=config.action_repeat,
                        first_update_frame=(first_update_frame
                                            if start_frame <= first_update_frame else None))
    progress.start_heartbeat()
    return progress
