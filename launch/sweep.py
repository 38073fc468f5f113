r"""Runs a grid of launch.train runs, locally or on SLURM, resumably.

    python -m pixelzoo.launch.sweep --out=sweeps/bs --agents=drqv2,drq --tasks=walker_walk,cheetah_run \
        --seeds=1,2,3 --num_frames=500000 --config.batch_size=128,256 --max_parallel=2
    python -m pixelzoo.launch.sweep --out=sweeps/planet --suite=planet100k --agents=drq --seeds=1,2,3 \
        --executor=slurm --slurm_partition=gpu --timeout_min=1440

The grid is agents x tasks x (every combination of the `--config.<field>=v1,v2,...` lists) x
seeds. A suite (`--suite`) names the tasks and a frame budget (an explicit --num_frames wins).
Each run works in DIR/runs/<agent>-<task>-<seed>[-<field>=<value>,...] (the tag names the
fields given more than one value) and writes its output to train.log there. A run whose
newest complete checkpoint is at >= num_frames is skipped; any other is launched, and
launch.train resumes it from its checkpoint. DIR/manifest.json records each run's command,
workdir, status, executor, job id, host and times. Exit status: 0 when every run succeeded or
was already finished, 1 when any failed, 2 for bad input (before anything is launched).
"""
import concurrent.futures
import dataclasses
import datetime
import importlib
import itertools
import json
import os
import shlex
import socket
import subprocess
import sys
import time
import types
from collections.abc import Mapping, Sequence
from typing import Any

from absl import flags
# At import, not when first used: importing submitit runs logging.config.dictConfig, which
# closes every logging handler already installed, and closing one bound to a replaced
# sys.stderr (pytest's capture, a notebook's) closes that stream under its owner.
import submitit

from pixelzoo import envs
from pixelzoo.launch.run_spec import RunSpec, check_run_spec, compose_run_spec

EXIT_FAILED = 1
EXIT_USAGE = 2
EXECUTORS = ("local", "submitit_local", "slurm")
POLL_SECONDS = 1.0
LOG_NAME = "train.log"
MANIFEST_NAME = "manifest.json"


@dataclasses.dataclass(frozen=True)
class Suite:
    """A named benchmark: its tasks and, where it fixes one, its frame budget."""

    tasks: tuple[str, ...]
    num_frames: int | None = None


def _drqv2_group(group: str) -> tuple[str, ...]:
    return tuple(task for task in envs.DRQV2_TASKS if envs.task_group(task) == group)


# DrQ-v2's budgets are the x-axes of its figures (its configs train 100k frames longer,
# num_train_frames 1.1M / 3.1M / 30.1M; launch.train evaluates at num_frames anyway).
# PlaNet's six tasks at PlaNet's two budgets (DrQ, CURL); per-task action repeat is the
# preset's recipe (agents.task_overrides: drq uses 8/2/2/4), not the suite's.
PLANET_TASKS = ("cartpole_swingup", "reacher_easy", "cheetah_run", "finger_spin",
                "ball_in_cup_catch", "walker_walk")
SUITES: Mapping[str, Suite] = types.MappingProxyType({
    "drqv2_easy": Suite(_drqv2_group("easy"), 1_000_000),
    "drqv2_medium": Suite(_drqv2_group("medium"), 3_000_000),
    "drqv2_hard": Suite(_drqv2_group("hard"), 30_000_000),
    "planet100k": Suite(PLANET_TASKS, 100_000),
    "planet500k": Suite(PLANET_TASKS, 500_000),
})


class UsageError(Exception):
    """A mistake on the command line: printed without a traceback, exit status 2."""


@dataclasses.dataclass(frozen=True)
class SweepRun:
    """One launch.train run of a sweep: its RunSpec, and how the command line gives it.

    overrides: the `--config` (field, value) pairs as written on the command line; tag: the
    fields that vary across the grid, "field=value,...", which keeps the run names distinct.
    """

    spec: RunSpec
    overrides: tuple[tuple[str, str], ...] = ()
    tag: str = ""

    @property
    def name(self) -> str:
        spec = self.spec
        seeds = (f"{spec.seed}" if spec.num_seeds == 1 else f"{spec.seed}-{spec.seeds[-1]}")
        name = f"{spec.agent}-{spec.task}-{seeds}"
        return f"{name}-{self.tag}" if self.tag else name

    def workdir(self, out: str) -> str:
        return os.path.join(out, "runs", self.name)

    def command(self, out: str) -> list[str]:
        spec = self.spec
        return [sys.executable, "-m", "pixelzoo.launch.train", f"--agent={spec.agent}",
                f"--task={spec.task}", f"--seed={spec.seed}", f"--num_frames={spec.num_frames}",
                f"--workdir={self.workdir(out)}",
                *([f"--num_seeds={spec.num_seeds}"] if spec.num_seeds > 1 else []),
                *([f"--seed_shards={spec.seed_shards}"] if spec.seed_shards else []),
                *(f"--config.{field}={value}" for field, value in self.overrides)]


def expand_grid(agents: Sequence[str], tasks: Sequence[str], seeds: Sequence[int],
                num_frames: int, config_lists: Mapping[str, Sequence[str]],
                num_seeds: int = 1, seed_shards: int | None = None) -> list[SweepRun]:
    """Every run of agents x tasks x config combinations x seeds, in that order, unchecked
    (`check_run_spec`); each run trains num_seeds seeds from its seed, split into
    seed_shards device groups. UsageError for an unknown field or a value its type cannot
    take."""
    from pixelzoo.agents.config import FIELD_TYPES, check_field_names  # imports jax
    try:
        check_field_names(config_lists)
    except ValueError as error:
        raise UsageError(str(error)) from None
    typed = {field: {text: _parse_value(field, text, FIELD_TYPES[field]) for text in values}
             for field, values in config_lists.items()}
    fields = list(config_lists)
    varying = {field for field in fields if len(config_lists[field]) > 1}
    combos = [tuple(zip(fields, values)) for values in itertools.product(*config_lists.values())]
    return [SweepRun(compose_run_spec(agent, task,
                                      {field: typed[field][text] for field, text in combo},
                                      seed=int(seed), num_frames=num_frames,
                                      num_seeds=num_seeds, seed_shards=seed_shards),
                     combo, ",".join(f"{field}={value}" for field, value in combo
                                     if field in varying))
            for agent, task, combo, seed in itertools.product(agents, tasks, combos, seeds)]


def latest_checkpoint_frame(workdir: str) -> int | None:
    """Frame of the newest complete checkpoint in workdir/checkpoints, or None.

    Orbax names a step directory by its frame once complete; one being written is named
    '<frame>.orbax-checkpoint-tmp-<n>' and does not count (no JAX needed to read this).
    """
    directory = os.path.join(workdir, "checkpoints")
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return None
    frames = [int(name) for name in names if name.isascii() and name.isdigit()
              and os.path.isdir(os.path.join(directory, name))]
    return max(frames, default=None)


def run_command(command: list[str], log_path: str, cwd: str,
                env_defaults: Mapping[str, str]) -> dict[str, Any]:
    """Runs one command to its end, its output appended to log_path; where and how it ran.

    This is the function an executor runs (a local thread or a submitit job). In a
    multi-process job it runs in each task: process i > 0 writes train.process_<i>.log
    beside log_path.
    """
    env = {**env_defaults, **os.environ}
    start = _now()
    task = int(os.environ.get("SLURM_PROCID", "0")) if _srun_tasks() > 1 else 0
    if task:   # process i > 0 of a multi-process run writes train.process_<i>.log
        log_path = os.path.join(os.path.dirname(log_path), f"train.process_{task}.log")
    with open(log_path, "a") as log:
        log.write(f"=== {start} on {socket.gethostname()}: {shlex.join(command)}\n")
        log.flush()
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
        exit_code = process.wait()
    return {"exit_code": exit_code, "host": socket.gethostname(), "pid": process.pid,
            "start": start, "end": _now(), "log": log_path}


def _srun_tasks() -> int:
    """The tasks of the srun step this process is one of (1 outside SLURM)."""
    return int(os.environ.get("SLURM_NTASKS", "1")) if "SLURM_PROCID" in os.environ else 1


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def _write_json(path: str, data: Any) -> None:
    """Writes `data` as JSON to `path` atomically (a reader sees the old or the new file)."""
    tmp_path = f"{path}.tmp{os.getpid()}"
    with open(tmp_path, "w") as file:
        json.dump(data, file, indent=2, sort_keys=True)
        file.write("\n")
    os.replace(tmp_path, path)


# ----------------------------------------------------------------------------- the CLI
def define_flags(flag_values: flags.FlagValues) -> flags.FlagValues:
    """The sweep's flags, on their own FlagValues (main can run more than once per process)."""
    define = {"flag_values": flag_values}
    flags.DEFINE_string("out", None, "Sweep folder: runs/, manifest.json, submitit/.", **define)
    flags.DEFINE_list("agents", ["drqv2"], "Agent presets (see agents.names()).", **define)
    flags.DEFINE_list("tasks", [], "DMC tasks (see envs.names()); or use --suite.", **define)
    flags.DEFINE_string("suite", None, "Named task set: " + ", ".join(
        f"{name} ({len(suite.tasks)} tasks, {suite.num_frames:,} frames)"
        for name, suite in SUITES.items()) + ".", **define)
    flags.DEFINE_list("seeds", ["1"], "Seeds, e.g. 1,2,3.", **define)
    flags.DEFINE_integer("num_frames", None, "Frames per run; default: the suite's budget, "
                         "else 1,000,000.", **define)
    flags.DEFINE_string("executor", "local", "local (subprocesses here), submitit_local "
                        "(submitit's LocalExecutor) or slurm (submitit on SLURM).", **define)
    flags.DEFINE_integer("max_parallel", None, "Most runs at once; default 1, or every run "
                         "at once with --executor=slurm.", **define)
    flags.DEFINE_boolean("dry_run", False, "Print the commands; run and write nothing.",
                         **define)
    flags.DEFINE_integer("timeout_min", 24 * 60, "Time limit of one job (submitit executors).",
                         **define)
    flags.DEFINE_integer("gpus_per_job", 1, "GPUs per job, per node with --nodes (submitit "
                         "executors).", **define)
    flags.DEFINE_integer("cpus_per_job", 8, "CPUs per job (slurm).", **define)
    flags.DEFINE_integer("nodes", 1, "Nodes per job (slurm): with --tasks_per_node, a "
                         "multi-process run; every task runs the same launch.train command "
                         "and JAX's distributed runtime finds the others (SLURM_NTASKS).",
                         **define)
    flags.DEFINE_integer("tasks_per_node", 1, "Processes per node (slurm): 1 sees all of "
                         "the node's --gpus_per_job GPUs, T take 1/T of them each (one per "
                         "GPU when T = --gpus_per_job). Each process trains the seeds whose "
                         "devices it holds (--num_seeds, --seed_shards).", **define)
    flags.DEFINE_integer("num_seeds", 1, "Seeds per run, trained together from each of "
                         "--seeds (launch.train --num_seeds): a multi-process run splits "
                         "them over its processes.", **define)
    flags.DEFINE_integer("seed_shards", None, "launch.train --seed_shards of every run: the "
                         "seeds' device groups; with several processes, choose it so each "
                         "group's devices are on one process.", **define)
    flags.DEFINE_integer("mem_gb", None, "Memory per job in GB (slurm; default: the "
                         "partition's).", **define)
    flags.DEFINE_string("slurm_partition", None, "SLURM partition.", **define)
    flags.DEFINE_string("slurm_account", None, "SLURM account.", **define)
    return flag_values


def split_config_args(argv: Sequence[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Takes the `--config.<field>=v1,v2,...` arguments out of argv: (the rest, lists)."""
    rest, config_lists = [], {}
    for arg in argv:
        if not arg.startswith("--config."):
            rest.append(arg)
            continue
        field, has_value, values = arg[len("--config."):].partition("=")
        if not has_value:
            raise UsageError(f"{arg}: write --config.<field>=value1,value2,...")
        if field in config_lists:
            raise UsageError(f"--config.{field} given twice; list its values in one flag")
        config_lists[field] = list(dict.fromkeys(values.split(",")))
    return rest, config_lists


def _parse_value(field: str, text: str, kind: type) -> Any:
    """The value of `--config.<field>=text` as launch.train's flag parser reads it."""
    if kind is bool:
        if text.lower() in ("true", "t", "1", "false", "f", "0"):
            return text.lower() in ("true", "t", "1")
    else:
        try:
            return kind(text)
        except ValueError:
            pass
    raise UsageError(f"--config.{field}={text!r} is not a valid {kind.__name__}")


def runs_from_flags(flag_values: flags.FlagValues,
                    config_lists: Mapping[str, list[str]]) -> list[SweepRun]:
    """The sweep's runs, every one checked by `check_run_spec`, as launch.train checks it;
    UsageError if not."""
    fv = flag_values
    if fv.out is None:
        raise UsageError("--out=DIR is required (the sweep folder)")
    if fv.executor not in EXECUTORS:
        raise UsageError(f"unknown executor {fv.executor!r}; choose one of: "
                         + ", ".join(EXECUTORS))
    if fv.max_parallel is not None and fv.max_parallel < 1:
        raise UsageError(f"--max_parallel={fv.max_parallel} must be >= 1")
    tasks, num_frames = list(fv.tasks), fv.num_frames
    if fv.suite is not None:
        if fv.suite not in SUITES:
            raise UsageError(f"unknown suite {fv.suite!r}; choose one of: {', '.join(SUITES)}")
        if tasks:
            raise UsageError(f"--suite={fv.suite} sets the tasks; drop --tasks")
        tasks = list(SUITES[fv.suite].tasks)
        if num_frames is None:
            num_frames = SUITES[fv.suite].num_frames
    num_frames = 1_000_000 if num_frames is None else num_frames
    lists = {"--agents": fv.agents, "--tasks (or --suite)": tasks, "--seeds": fv.seeds,
             **{f"--config.{field}": values for field, values in config_lists.items()}}
    empty = [name for name, values in lists.items() if not values or "" in values]
    if empty:
        raise UsageError("empty grid: give at least one value (and no empty one) to "
                         + ", ".join(empty))
    try:
        seeds = [int(seed) for seed in fv.seeds]
    except ValueError:
        raise UsageError(f"--seeds takes integers, e.g. --seeds=1,2,3 (got "
                         f"{','.join(fv.seeds)})") from None
    runs = expand_grid(list(dict.fromkeys(fv.agents)), list(dict.fromkeys(tasks)),
                       list(dict.fromkeys(seeds)), num_frames, config_lists, fv.num_seeds,
                       fv.seed_shards)
    num_processes = fv.nodes * fv.tasks_per_node if fv.executor == "slurm" else 1
    for run in runs:
        try:   # devices: the job's, checked by launch.train there
            check_run_spec(run.spec, None, num_processes)
        except ValueError as error:
            raise UsageError(f"{run.name}: {error}") from None
    return runs


def _submitit_parameters(fv: flags.FlagValues) -> dict[str, Any]:
    """The submitit parameters (AutoExecutor's names) of every job of the sweep."""
    parameters = {"name": "pixelzoo", "timeout_min": fv.timeout_min,
                  "gpus_per_node": fv.gpus_per_job, "cpus_per_task": fv.cpus_per_job,
                  "mem_gb": fv.mem_gb, "slurm_partition": fv.slurm_partition,
                  "slurm_account": fv.slurm_account}
    if fv.nodes > 1 or fv.tasks_per_node > 1:   # one multi-process run per job
        parameters.update(nodes=fv.nodes, tasks_per_node=fv.tasks_per_node)
    return {key: value for key, value in parameters.items() if value is not None}


def _make_executor(fv: flags.FlagValues, out: str):
    """An object with submit(fn, *args) -> a job with done() and result() (results() for
    submitit's jobs, one per task)."""
    if fv.executor == "local":
        return concurrent.futures.ThreadPoolExecutor(max_workers=fv.max_parallel or 1)
    cluster = "local" if fv.executor == "submitit_local" else "slurm"
    executor = submitit.AutoExecutor(folder=os.path.join(out, "submitit", "%j"),
                                     cluster=cluster)
    executor.update_parameters(**_submitit_parameters(fv))
    return executor


def slurm_job_script(fv: flags.FlagValues, out: str) -> str:
    """The sbatch script submitit writes for each run's job (the same for every run: the job
    reads which run from its pickled call)."""
    from submitit.slurm import slurm
    folder = os.path.join(out, "submitit", "%j")
    generic = _submitit_parameters(fv)
    names = slurm.SlurmExecutor._equivalence_dict()
    parameters = {names.get(key, key).removeprefix("slurm_"): value
                  for key, value in generic.items()}
    if "mem" in parameters:
        parameters["mem"] = slurm._convert_mem(parameters["mem"])
    command = " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit",
                        shlex.quote(folder)])
    return slurm._make_sbatch_string(command=command, folder=folder, **parameters)


class Manifest:
    """DIR/manifest.json: the sweep invocations and the latest record of every run."""

    def __init__(self, out: str):
        self.path = os.path.join(out, MANIFEST_NAME)
        self.data: dict[str, Any] = {"sweeps": [], "runs": {}}
        if os.path.exists(self.path):
            with open(self.path) as file:
                self.data = json.load(file)

    def set_run(self, run: SweepRun, out: str, keep_previous: bool = False, **fields) -> None:
        old = self.data["runs"].get(run.name, {}) if keep_previous else {}
        self.data["runs"][run.name] = {
            **old, "agent": run.spec.agent, "task": run.spec.task, "seed": run.spec.seed,
            "num_frames": run.spec.num_frames, "config": dict(run.overrides),
            "command": shlex.join(run.command(out)), "workdir": run.workdir(out),
            "log": os.path.join(run.workdir(out), LOG_NAME), **fields}

    def update_run(self, run: SweepRun, **fields) -> None:
        self.data["runs"][run.name].update(fields)

    def save(self) -> None:
        _write_json(self.path, self.data)


def execute(runs: list[SweepRun], out: str, fv: flags.FlagValues, executor: Any,
            manifest: Manifest) -> None:
    """Launches `runs`, at most max_parallel at once, and records how each one ended."""
    max_parallel = fv.max_parallel or (len(runs) if fv.executor == "slurm" else 1)
    # Several local runs share this machine's accelerator: don't let each grab 75% of it.
    env_defaults = ({"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
                    if fv.executor != "slurm" and max_parallel > 1 else {})
    host = socket.gethostname() if fv.executor == "local" else None
    pending, running = list(runs), []
    try:
        while pending or running:
            launched = bool(pending) and len(running) < max_parallel
            while pending and len(running) < max_parallel:
                run = pending.pop(0)
                os.makedirs(run.workdir(out), exist_ok=True)
                job = executor.submit(run_command, run.command(out),
                                      os.path.join(run.workdir(out), LOG_NAME), os.getcwd(),
                                      env_defaults)
                job_id = getattr(job, "job_id", None)
                attempt = manifest.data["runs"].get(run.name, {}).get("attempt", 0) + 1
                manifest.set_run(run, out, status="launched", attempt=attempt,
                                 executor=fv.executor, job_id=job_id, host=host,
                                 submitted=_now(), start=None, end=None, exit_code=None)
                print(f"launched {run.name}" + (f" (job {job_id})" if job_id else ""),
                      flush=True)
                running.append((run, job))
            finished = [(run, job) for run, job in running if job.done()]
            for run, job in finished:
                running.remove((run, job))
                _record_end(run, job, manifest)
            if launched or finished:
                manifest.save()
            if running and not finished:
                time.sleep(POLL_SECONDS)
    finally:
        if isinstance(executor, concurrent.futures.Executor):
            executor.shutdown(wait=True)


def _record_end(run: SweepRun, job: Any, manifest: Manifest) -> None:
    """Records how `job` ended: every task's result (a multi-process run's job has one per
    process; its exit code is the first non-zero one, `exit_codes` has them all)."""
    try:
        results = job.results() if hasattr(job, "results") else [job.result()]
    except Exception as error:  # noqa: BLE001 (the job died: killed, timed out, lost node)
        message = str(error).strip() or type(error).__name__
        manifest.update_run(run, status="failed", end=_now(), error=message[-2000:])
        print(f"failed {run.name}: {message.splitlines()[-1]}", flush=True)
        return
    codes = [result["exit_code"] for result in results]
    result = {**results[0], "exit_code": next((code for code in codes if code), 0),
              "end": max(result["end"] for result in results)}
    if len(results) > 1:
        result.update(exit_codes=codes, hosts=[r["host"] for r in results],
                      logs=[r["log"] for r in results])
    status = "succeeded" if result["exit_code"] == 0 else "failed"
    manifest.update_run(run, status=status, **result)
    print(f"{status} {run.name} (exit code {result['exit_code']})", flush=True)


def main(argv: Sequence[str]) -> int:
    """`python -m pixelzoo.launch.sweep` with argv; returns the exit status."""
    fv = define_flags(flags.FlagValues())
    if any(arg in ("-h", "--help", "--helpfull") for arg in argv[1:]):
        print(__doc__ + "\nflags:\n" + fv.get_help() + "\n  --config.<field>=v1,v2,...: "
              "any field of agents.Config, one run per value")
        return 0
    try:
        rest, config_lists = split_config_args(argv)
        try:
            fv(rest)
        except flags.Error as error:
            raise UsageError(f"{error}\nflags: " + ", ".join(
                f"--{name}" for name in fv) + ", --config.<field>=v1,v2,...") from None
        runs = runs_from_flags(fv, config_lists)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    out = os.path.abspath(fv.out)
    frames = {run.name: latest_checkpoint_frame(run.workdir(out)) for run in runs}
    finished = {run.name: frames[run.name] for run in runs
                if frames[run.name] is not None and frames[run.name] >= run.spec.num_frames}
    to_launch = [run for run in runs if run.name not in finished]
    if fv.dry_run:
        for run in runs:
            if run.name in finished:
                print(f"# skip {run.name}: finished (checkpoint at frame "
                      f"{finished[run.name]:,})")
            else:
                print(shlex.join(run.command(out)))
        if fv.executor == "slurm":
            print("# the job script (sbatch) of each run; the job runs its command:\n"
                  + slurm_job_script(fv, out).rstrip())
        print(f"dry run: {len(to_launch)} to launch, {len(finished)} finished; nothing ran")
        return 0
    try:
        executor = _make_executor(fv, out)
    except RuntimeError as error:  # e.g. submitit finds no SLURM here
        print(f"error: --executor={fv.executor}: {error}", file=sys.stderr)
        return EXIT_USAGE

    os.makedirs(out, exist_ok=True)
    manifest = Manifest(out)
    invocation = {"argv": list(argv), "executor": fv.executor, "host": socket.gethostname(),
                  "started": _now()}
    manifest.data["sweeps"].append(invocation)
    for run in runs:
        if run.name in finished:
            manifest.set_run(run, out, keep_previous=True, status="skipped-finished",
                             checkpoint_frame=finished[run.name])
            print(f"skipped {run.name}: finished (checkpoint at frame "
                  f"{finished[run.name]:,})", flush=True)
    manifest.save()
    try:
        execute(to_launch, out, fv, executor, manifest)
    except KeyboardInterrupt:
        manifest.save()
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    records = [manifest.data["runs"][run.name] for run in runs]
    counts = {status: sum(r["status"] == status for r in records)
              for status in ("succeeded", "failed", "skipped-finished")}
    invocation.update(ended=_now(), counts=counts)
    manifest.save()
    print(f"sweep {out}: {len(runs)} runs: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    for record in records:
        if record["status"] == "failed":
            print(f"  failed: {os.path.basename(record['workdir'])} (exit code "
                  f"{record.get('exit_code')}), log: {record['log']}")
    print(f"manifest: {manifest.path}")
    return EXIT_FAILED if counts["failed"] else 0


def run() -> None:
    """Console script `pixelzoo-sweep` (= python -m pixelzoo.launch.sweep)."""
    # Through the module's real name, so that submitit pickles run_command by reference.
    sys.exit(importlib.import_module("pixelzoo.launch.sweep").main(sys.argv))


if __name__ == "__main__":
    run()
