"""The terminal's view of a run (launch.progress, launch.quiet_logs) with a fake clock and
fake streams: no test here depends on the terminal it runs in."""
import io
import logging
import timeit
import types

import numpy as np
import pytest
from absl import flags
from absl import logging as absl_logging

from pixelzoo.launch import progress as progress_lib
from pixelzoo.launch import quick_look
from pixelzoo.launch.progress import DurationForecast, Progress, device_summary, format_duration
from pixelzoo.launch.progress import mesh_summary
from pixelzoo.launch.quiet_logs import quiet_library_logs


class FakeClock:
    def __init__(self, now: float = 0.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeTerminal(io.StringIO):
    """A stream that says it is a terminal; remembers the clock time of every write."""

    def __init__(self, clock: FakeClock):
        super().__init__()
        self.clock, self.write_times = clock, []

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.write_times.append(self.clock())
        return super().write(text)


def run_steps(progress: Progress, clock: FakeClock, seconds: float, step_s: float,
              frame: int = 0, frames_per_step: int = 2) -> int:
    """Agent steps of `step_s` each for `seconds`; returns the frame reached."""
    returns = np.zeros(1)
    for _ in range(round(seconds / step_s)):
        clock.now += step_s
        frame += frames_per_step
        returns += 1.0
        progress.training(frame, returns)
    return frame


def test_on_a_terminal_the_live_line_is_rewritten_in_place_every_second():
    clock = FakeClock()
    stream = FakeTerminal(clock)
    progress = Progress(100_000, 0, stream=stream, clock=clock)
    run_steps(progress, clock, seconds=12.0, step_s=0.25, frames_per_step=10)
    text = stream.getvalue()
    assert "\n" not in text, "the live line never ends a line by itself"
    redraws = text.split("\r")[1:]
    assert len(redraws) == 12 and all(redraw.endswith("\x1b[K") for redraw in redraws)
    assert np.diff([0.0] + stream.write_times).max() == 1.0
    # 40 frames/s: the frames, the rate, the episode's return so far and the time left.
    assert redraws[-1] == ("[train] frame 480/100,000 | 40.0 frames/s | return so far 48.0 | "
                           "left 0:41:28\x1b[K")


def test_permanent_lines_go_above_the_live_line_and_close_ends_it():
    clock = FakeClock()
    stream = FakeTerminal(clock)
    progress = Progress(100_000, 0, stream=stream, clock=clock)
    run_steps(progress, clock, seconds=1.5, step_s=0.5)
    live = stream.getvalue().split("\r")[-1]
    progress.show("[train] a permanent line")
    assert stream.getvalue().endswith("\r\x1b[K[train] a permanent line\n" + live)
    run_steps(progress, clock, seconds=1.5, step_s=0.5, frame=6)
    progress.close()
    assert stream.getvalue().endswith("\x1b[K\r\x1b[K")
    size = len(stream.getvalue())
    progress.close()                                     # nothing more to clear
    progress.show("stopped")
    assert stream.getvalue()[size:] == "stopped\n"


def test_in_a_file_a_plain_line_comes_every_30_s_when_nothing_else_was_printed():
    clock = FakeClock()
    stream = io.StringIO()
    progress = Progress(100_000, 0, stream=stream, clock=clock)
    run_steps(progress, clock, seconds=65.0, step_s=0.1)
    lines = stream.getvalue().splitlines(keepends=True)
    assert len(lines) == 2 and "\r" not in stream.getvalue()
    assert all(line.startswith("[train] frame ") and line.endswith("\n") for line in lines)
    progress.show("[train] an interval line")           # at 65 s: the next plain one at 95 s
    run_steps(progress, clock, seconds=25.0, step_s=0.1, frame=1300)
    assert len(stream.getvalue().splitlines()) == 3
    run_steps(progress, clock, seconds=10.0, step_s=0.1, frame=1800)
    assert len(stream.getvalue().splitlines()) == 4


def test_a_quiet_progress_prints_nothing(capsys):
    clock = FakeClock()
    progress = Progress(100_000, 0, quiet=True, clock=clock)
    run_steps(progress, clock, seconds=100.0, step_s=0.5)
    progress.show("from a non-primary process")
    progress.close()
    assert capsys.readouterr() == ("", "")


def test_the_step_that_compiles_the_first_update_is_announced_at_once():
    clock = FakeClock()
    stream = FakeTerminal(clock)
    progress = Progress(100_000, 0, stream=stream, clock=clock, first_update_frame=4000)
    run_steps(progress, clock, seconds=1.0, step_s=0.1)          # frame 20, refreshed at 1 s
    clock.now += 0.01
    progress.training(4000, np.zeros(1))                          # not due, but announced
    assert stream.getvalue().endswith("| compiling the update\x1b[K")


def test_evaluation_shows_its_episode_return_so_far_and_time_left():
    clock = FakeClock()
    stream = FakeTerminal(clock)
    progress = Progress(100_000, 0, stream=stream, clock=clock, action_repeat=2)
    step = progress.evaluating(frame=10_000, num_episodes=3)
    returns = np.zeros(2)                                # two seeds
    for episode in range(2):
        returns[:] = 0.0
        for _ in range(20):                              # 20 steps of 0.25 s: 8 frames/s
            clock.now += 0.25
            returns += [1.0, 3.0]
            step(episode, returns)
    last = stream.getvalue().split("\r")[-1]
    # 40 of 60 steps done: 20 steps x 2 frames at 8 frames/s = 5 s left.
    assert last == ("[eval ] frame 10,000: episode 2/3 | 8.0 frames/s | return so far 40.0 | "
                    "eval left 0:00:05\x1b[K")
    # Training again: the rate starts afresh instead of counting the evaluation's time.
    progress.training(10_002, np.zeros(1))
    run_steps(progress, clock, seconds=2.0, step_s=0.25, frame=10_002)
    assert "| 8.0 frames/s |" in stream.getvalue().split("\r")[-1]


def test_duration_forecast_is_said_once_from_the_first_updates_after_the_compile():
    forecast = DurationForecast(1_000_000, first_update_frame=4000, frames_per_update=4,
                                backend="cpu")
    assert forecast.observe(10.0, 3000) is None                  # seeding: no updates yet
    assert forecast.observe(40.0, 4002) is None                  # the compiling update
    assert forecast.observe(41.0, 4004) is None                  # measuring starts
    assert forecast.observe(48.2, 4016) is None                  # 3 updates: too few
    line = forecast.observe(53.0, 4024)                          # 5 updates in 12 s
    assert line.startswith("on cpu the first updates took 2.4 s each (1.7 frames/s): "
                           "1,000,000 frames would take 6d 22:40:00 (~6.9 days). "
                           "For a quick look try: python -m pixelzoo.launch.train ")
    assert line.endswith(quick_look.train_command())
    assert forecast.observe(60.0, 4030) is None


def test_progress_says_the_forecast_above_its_live_line():
    clock = FakeClock()
    stream = io.StringIO()
    forecast = DurationForecast(1_000_000, 4000, 4, "cpu", min_updates=1, min_seconds=1.0)
    progress = Progress(1_000_000, 0, stream=stream, clock=clock, forecast=forecast)
    run_steps(progress, clock, seconds=20.0, step_s=1.25, frame=4000)    # 4 frames: 2.5 s
    assert stream.getvalue().count("on cpu the first updates took 2.5 s each") == 1


def test_progress_for_run_forecasts_only_pixel_runs_without_an_accelerator():
    from pixelzoo import agents
    pixels = agents.build_config("drqv2")
    progress = progress_lib.progress_for_run(pixels, 1_000_000, 0, quiet=True, backend="cpu")
    assert progress.first_update_frame == 4000 and progress.forecast.frames_per_update == 4
    assert progress_lib.progress_for_run(pixels, 10**6, 0, True, "gpu").forecast is None
    state = agents.build_config("drqv2", obs_type="state")
    assert progress_lib.progress_for_run(state, 10**6, 0, True, "cpu").forecast is None
    resumed = progress_lib.progress_for_run(pixels, 10**6, 50_000, True, "cpu")
    assert resumed.first_update_frame is None and resumed.forecast.measure_from == 50_004


def test_the_per_step_call_costs_about_a_clock_reading():
    progress = Progress(1_000_000, 0, stream=io.StringIO())
    returns = np.zeros(1)
    seconds = min(timeit.repeat(lambda: progress.training(100, returns), number=10_000,
                                repeat=5)) / 10_000
    assert seconds < 5e-6, f"{seconds * 1e6:.2f} us per agent step"


def test_device_summary_names_the_backend_and_its_devices():
    cpu = types.SimpleNamespace(platform="cpu", device_kind="cpu")
    h100 = types.SimpleNamespace(platform="gpu", device_kind="NVIDIA H100")
    assert device_summary([cpu], 1, "state") == "cpu: 1 device"
    assert device_summary([cpu, cpu], 2, "state") == "cpu: 2 devices"
    assert device_summary([cpu], 1, "pixels").startswith(
        "cpu: 1 device; no accelerator: each pixel update takes seconds here")
    assert device_summary([h100] * 8, 8, "pixels") == "gpu: 8 x NVIDIA H100"
    assert device_summary([h100] * 8, 4, "pixels") == "gpu: 8 x NVIDIA H100 (training on 4)"


@pytest.mark.parametrize("placement, line", [
    (([1], 1, 1, "host"),
     "mesh: 1 process x 1 device, 1 seed, 1 seed per device; replays in host memory"),
    (([2], 4, 2, "host"),
     "mesh: 1 process x 2 devices, 4 seeds, 2 seeds per device; replays in host memory"),
    (([4], 2, 2, "device"),
     "mesh: 1 process x 4 devices, 2 seeds, 2 devices per seed; "
     "replays in device memory (mirrored from the host)"),
    (([4], 4, 2, "host"),
     "mesh: 1 process x 4 devices, 4 seeds, 2 groups of 2 seeds, each on 2 devices; "
     "replays in host memory"),
    (([2, 2], 8, 4, "host"),
     "mesh: 2 processes x 2 devices, 8 seeds, 2 seeds per device; "
     "replays in each process's host memory (its seeds')"),
    (([8] * 16, 16, 16, "host"),
     "mesh: 16 processes x 8 devices, 16 seeds, 8 devices per seed; "
     "replays in each process's host memory (its seeds')"),
    (([2, 1], 3, 3, "host"),
     "mesh: 3 devices on 2 processes (2 + 1), 3 seeds, 1 seed per device; "
     "replays in each process's host memory (its seeds')"),
])
def test_mesh_summary_says_processes_devices_seeds_and_replays(placement, line):
    # (devices_per_process, num_seeds, seed_shards, replay)
    assert mesh_summary(*placement) == line


def test_format_duration():
    assert format_duration(59.9) == "0:00:59"
    assert format_duration(3 * 3600 + 7 * 60 + 5) == "3:07:05"
    assert format_duration(7.2 * 86_400) == "7d 04:48:00"
    assert format_duration(float("inf")) == "?"


def test_quiet_library_logs_drops_info_unless_verbosity_was_given(monkeypatch):
    root, saved_root, saved_absl = logging.getLogger(), logging.getLogger().level, \
        absl_logging.get_verbosity()
    try:
        root.setLevel(logging.INFO)
        absl_logging.set_verbosity(absl_logging.INFO)
        monkeypatch.setattr(flags.FLAGS["verbosity"], "present", 0)
        quiet_library_logs()
        assert root.level == logging.WARNING
        assert absl_logging.get_verbosity() == absl_logging.WARNING
        assert not logging.getLogger("jax._src.xla_bridge").isEnabledFor(logging.INFO)
        assert logging.getLogger("orbax").isEnabledFor(logging.WARNING)

        root.setLevel(logging.INFO)
        absl_logging.set_verbosity(absl_logging.INFO)
        monkeypatch.setattr(flags.FLAGS["verbosity"], "present", 1)   # --verbosity=0 given
        quiet_library_logs()
        assert root.level == logging.INFO and absl_logging.get_verbosity() == absl_logging.INFO
    finally:
        root.setLevel(saved_root)
        absl_logging.set_verbosity(saved_absl)


def test_a_long_step_on_a_terminal_is_shown_running_by_the_heartbeat():
    """An agent step of 12 s (an update compiling, or slow CPU updates): `beat`, which the
    heartbeat thread calls every second, redraws the line at most every HEARTBEAT_S with
    the step's running time; so the terminal is never left more than 5 s without a write."""
    clock = FakeClock()
    stream = FakeTerminal(clock)
    progress = Progress(100_000, 0, stream=stream, clock=clock)
    run_steps(progress, clock, seconds=1.0, step_s=0.5)
    last_step = clock.now
    for _ in range(12):                                  # the step runs; the thread beats
        clock.now += 1.0
        progress.beat()
    run_steps(progress, clock, seconds=1.0, step_s=1.0, frame=4)
    assert np.diff([0.0] + stream.write_times).max() <= progress_lib.HEARTBEAT_S
    beats = [text for text in stream.getvalue().split("\r") if "step running" in text]
    assert progress_lib.HEARTBEAT_S == 2.0    # beats at 3, 5, ..., 13 s; the step began at 1 s
    assert len(beats) == 6 and beats[-1].endswith("| step running 12 s\x1b[K")
    assert all(beat.count("step running") == 1 for beat in beats)
    assert last_step == 1.0


def test_the_heartbeat_runs_only_on_a_terminal_and_stops_at_close():
    clock = FakeClock()
    in_file = Progress(1000, 0, stream=io.StringIO(), clock=clock)
    in_file.start_heartbeat()
    assert in_file._heartbeat is None
    on_terminal = Progress(1000, 0, stream=FakeTerminal(clock), clock=clock)
    on_terminal.start_heartbeat()
    assert on_terminal._heartbeat.is_alive()
    on_terminal.close()
    assert not on_terminal._heartbeat.is_alive()
