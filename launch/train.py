r"""Trains one pixelzoo agent on one DeepMind Control task, resumably.

    python -m pixelzoo.launch.train --agent=drqv2 --task=cartpole_swingup --seed=1 \
        --num_frames=1000000 --workdir=runs/drqv2-cartpole_swingup-1 --config.batch_size=512

Every field of agents.Config is a `--config.<field>=value` flag. The workdir receives
config.json, train.csv, eval.csv, TensorBoard events, checkpoints/ and videos/. Launching
again with the same workdir resumes from the last complete checkpoint; only --num_frames
may change between launches.

A multi-process run (--coordinator_address etc., srun, a TPU VM slice) trains in a child
process of the one launched (`launch.supervisor`, which turns the runtime's fatal end into
one line); its processes meet before JAX starts (`launch.rendezvous`), and any that cannot
start together end with one line, within --startup_timeout_s.
"""
import json
import os
import signal
import sys
from typing import Any

from absl import app, flags
from ml_collections import config_dict, config_flags

from pixelzoo.launch import hosts

hosts.reserve_gpu_memory_for_renderers()   # before anything imports jax (README, GPU and TPU)

from pixelzoo import agents  # noqa: E402 - after the GPU memory setting
from pixelzoo import envs  # noqa: E402
from pixelzoo.agents.config import Config, check_field_names  # noqa: E402
from pixelzoo.launch import processes, rendezvous, supervisor  # noqa: E402
from pixelzoo.launch.progress import device_summary  # noqa: E402
from pixelzoo.launch.quiet_logs import quiet_library_logs  # noqa: E402
from pixelzoo.launch.run_spec import RunSpec, check_run_spec, compose_run_spec  # noqa: E402
from pixelzoo.launch.workdir import WorkdirError, WorkdirLock, check_workdir  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("agent", "drqv2", f"Agent preset: one of {', '.join(agents.names())}.")
flags.DEFINE_string("task", "cartpole_swingup", "DMC task, e.g. walker_walk (see envs.names()).")
flags.DEFINE_integer("seed", 1, "Random seed of the run.")
flags.DEFINE_integer("num_frames", 1_000_000, "Environment frames to train for (before "
                     "action repeat divides them into agent steps).")
flags.DEFINE_string("workdir", None, "Run directory; default runs/<agent>-<task>-<seed>.")
flags.DEFINE_integer("num_seeds", 1, "Seeds trained together in this process with one "
                     "vmapped update: --seed, --seed + 1, ..., each with its own keys, "
                     "environments and replay (logs carry a seed column).")
flags.DEFINE_integer("num_devices", None, "Devices to train on; default: all local devices. "
                     "Not part of the run's identity: a run may resume on another number.")
flags.DEFINE_string("coordinator_address", None, "Multi-process runs (jax.distributed): "
                    "host:port of process 0. Auto-detected on TPU VM slices and under SLURM.")
flags.DEFINE_integer("num_processes", None, "Multi-process runs: the number of processes.")
flags.DEFINE_integer("process_id", None, "Multi-process runs: this process's index, 0..N-1.")
flags.DEFINE_integer("startup_timeout_s", 120, "Multi-process runs: how long the processes "
                     "wait for each other at the start before ending with one line.")
flags.DEFINE_bool("wandb", False, "Mirror the TensorBoard scalars to Weights & Biases (needs "
                  "pip install 'pixelzoo[wandb]'; WANDB_MODE=offline works without network).")
flags.DEFINE_integer("seed_shards", None, "How the seeds split over the devices: S groups "
                     "of num_seeds/S seeds, each on num_devices/S devices that split its "
                     "batches. Default: one seed group per device when num_seeds >= "
                     "num_devices, else one device group per seed. Must divide both.")

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """A mistake in the command line or the workdir: printed without a traceback."""


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing that turns bad flags into a short message listing valid ones."""
    try:
        return FLAGS(argv)
    except flags.Error as error:
        message = str(error)
        if "config." in message:
            message += "\nvalid --config fields: " + ", ".join(agents.FIELD_NAMES)
        print(f"error: {message}\nflags: --agent --task --seed --num_frames --workdir "
              "--num_seeds --num_devices --seed_shards --config.<field>", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def run_spec_from_flags() -> RunSpec:
    """The run the flags describe, unchecked (`check_run_spec` checks it, once)."""
    overrides = dict(config_flags.get_override_values(FLAGS["config"]))
    return compose_run_spec(FLAGS.agent, FLAGS.task, overrides, seed=FLAGS.seed,
                            num_seeds=FLAGS.num_seeds, num_frames=FLAGS.num_frames,
                            num_devices=FLAGS.num_devices, seed_shards=FLAGS.seed_shards)


def default_workdir(spec: RunSpec) -> str:
    """runs/<agent>-<task>-<seed>, or -<first seed>-<last seed> for several."""
    seeds = (f"{spec.seed}" if spec.num_seeds == 1
             else f"{spec.seed}-{spec.seeds[-1]}")
    return os.path.join("runs", f"{spec.agent}-{spec.task}-{seeds}")


def resolve_workdir(spec: RunSpec, workdir: str) -> None:
    """Writes config.json into the (existing, locked) workdir, or checks that a saved one
    holds the same run.

    Only num_frames may differ (extending a run); any other difference is refused, naming
    the fields, before anything in the workdir is touched.
    """
    path = os.path.join(workdir, "config.json")
    if os.path.exists(path):
        with open(path) as file:
            saved = json.load(file)
        differences = _spec_differences(saved, spec.identity())
        if differences:
            raise UserError(f"workdir {workdir} holds a different run; differing fields: "
                            + "; ".join(differences)
                            + ". Use another --workdir, or the saved settings.")
    os.makedirs(workdir, exist_ok=True)
    tmp_path = path + ".tmp"
    with open(tmp_path, "w") as file:
        json.dump(spec.identity(), file, indent=2, sort_keys=True)
    os.replace(tmp_path, path)


def _spec_differences(saved: dict[str, Any], spec: dict[str, Any]) -> list[str]:
    flat = lambda s: {**{k: v for k, v in s.items() if k != "config"},
                      **{f"config.{k}": v for k, v in s.get("config", {}).items()}}
    old, new = flat(saved), flat(spec)
    defaults = {f"config.{k}": v for k, v in Config().to_dict().items()}
    # A field added after the run started counts as its default value.
    for flat_spec in (old, new):
        flat_spec.update({k: v for k, v in {**defaults, "num_seeds": 1}.items()
                          if k not in flat_spec})
    return [f"{key} (saved {old.get(key)!r}, now {new.get(key)!r})"
            for key in sorted(set(old) | set(new))
            if key != "num_frames" and old.get(key) != new.get(key)]


def main(argv: list[str]) -> None:
    del argv
    quiet_library_logs()    # third-party INFO only with --verbosity (before JAX's backends)
    if supervisor.supervised():
        supervisor.use_python_streams()
    try:
        spec = run_spec_from_flags()
        distributed = processes.distributed_arguments(
            os.environ, FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
            processes.on_cloud_tpu_vm())
        if distributed is not None:
            distributed = processes.resolve(distributed, FLAGS.startup_timeout_s)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    if distributed is not None and not supervisor.supervised():
        sys.exit(supervisor.supervise(   # this process watches; a child process trains
            [sys.executable, "-m", "pixelzoo.launch.train", *sys.argv[1:]],
            distributed["process_id"], verbose=FLAGS["verbosity"].present))
    check_host(spec)
    spec, workdir, multi_process = start(spec, distributed)
    from pixelzoo.launch.loop import NonFiniteLossError, train  # heavy imports after the checks
    import jax
    stop_signal: list[int] = []

    def request_stop(signum: int, frame: Any) -> None:
        del frame
        stop_signal.append(signum)

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        finished = train(spec, workdir, should_stop=lambda: bool(stop_signal), wandb=FLAGS.wandb)
    except NonFiniteLossError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except jax.errors.JaxRuntimeError as error:
        if not multi_process:
            raise
        supervisor.await_runtime_end(error)   # a lost process: the runtime names it
    if multi_process:
        jax.distributed.shutdown()
    if not finished:
        print(f"stopped by signal {stop_signal[0]}; checkpoint saved. Run the same command "
              "again to resume.", flush=True)
        sys.exit(EXIT_INTERRUPTED)


def check_host(spec: RunSpec) -> None:
    """Exits with one line when this host cannot run `spec`: no GL backend for pixels (probed
    before JAX starts its threads: the probe forks), no wandb package for --wandb."""
    if spec.config.obs_type == "pixels":
        try:
            envs.ensure_gl_backend()
        except envs.RenderingUnavailableError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(1)
    if FLAGS.wandb:
        try:
            import wandb  # noqa: F401 - only checked here, used by the loop
        except ImportError:
            print("error: --wandb needs the wandb package: pip install 'pixelzoo[wandb]'",
                  file=sys.stderr)
            sys.exit(EXIT_USAGE)


def start(spec: RunSpec, distributed: dict | None) -> tuple[RunSpec, str, bool]:
    """(spec placed on the devices, workdir, whether several processes run): joins the other
    processes (`meet_processes`, then JAX's runtime), checks the run on the devices and
    claims the workdir. Exits with one line (on every process) when the run cannot start."""
    multi_process = False
    try:
        workdir = FLAGS.workdir or default_workdir(spec)
        if distributed is not None:   # every process meets process 0, which takes the lock
            meet_processes(spec, workdir, distributed)
        multi_process = processes.initialize(distributed, FLAGS.startup_timeout_s,
                                             supervisor.HEARTBEAT_TIMEOUT_S)
        import jax  # deferred: starts JAX's threads, so only after the GL probe
        spec = check_run_spec(spec, jax.devices(), jax.process_count())
        if processes.is_primary():        # what to expect: the backend and its devices
            print(device_summary(jax.devices(), spec.num_devices, spec.config.obs_type),
                  flush=True)
        if distributed is None:
            claim_workdir(spec, workdir)  # the first write, after every other check
    except (UserError, WorkdirError, ValueError, rendezvous.StartError) as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        if multi_process:
            jax.distributed.shutdown()    # every process ends here, together
        sys.exit(EXIT_USAGE)
    return spec, workdir, multi_process


_WORKDIR_LOCKS: list[WorkdirLock] = []   # held until the process ends


def claim_workdir(spec: RunSpec, workdir: str) -> None:
    """Checks the workdir, takes its lock for the rest of this process (refused at once if
    another launch holds it) and writes or checks its config.json (`resolve_workdir`)."""
    check_workdir(workdir)
    lock = WorkdirLock(workdir)
    lock.acquire()
    _WORKDIR_LOCKS.append(lock)
    resolve_workdir(spec, workdir)


def meet_processes(spec: RunSpec, workdir: str, distributed: dict) -> None:
    """The start of a multi-process run (`launch.rendezvous`): every process checks the run
    and meets process 0 with its settings; process 0 compares them and claims the workdir.
    StartError (the same line on every process) when they cannot start together."""
    check_run_spec(spec, None, distributed["num_processes"])
    check_workdir(workdir)

    def claim() -> str | None:
        try:
            claim_workdir(spec, workdir)
        except (UserError, WorkdirError) as error:
            return str(error)
        return None

    identity = spec.identity()
    settings = {"num_processes": distributed["num_processes"],
                "workdir": os.path.abspath(workdir), "num_devices": spec.num_devices,
                "seed_shards": spec.seed_shards, "where": rendezvous.where(),
                **{key: value for key, value in identity.items() if key != "config"},
                **{f"config.{key}": value for key, value in identity["config"].items()}}
    rendezvous.meet(distributed["coordinator_address"], distributed["num_processes"],
                    distributed["process_id"], settings, FLAGS.startup_timeout_s, claim)


def define_config_flag(argv: list[str]) -> None:
    """Defines --config.<field> (ml_collections reads argv here, so unknown fields are
    refused first, with the valid ones listed)."""
    fields = [arg[2:].split("=")[0][len("config."):] for arg in argv[1:]
              if arg.startswith("--config.")]
    try:
        check_field_names(dict.fromkeys(fields))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    config_flags.DEFINE_config_dict(
        "config", config_dict.ConfigDict(Config().to_dict()),
        "Config overrides, --config.<field>=value, applied on top of the agent preset and "
        "its per-task recipe. Fields: " + ", ".join(agents.FIELD_NAMES))


def run() -> None:
    """Console script `pixelzoo-train` (= python -m pixelzoo.launch.train)."""
    define_config_flag(sys.argv)
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    run()
