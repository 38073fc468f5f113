"""launch.supervisor without JAX: a stand-in training child writes what the JAX runtime
writes when it ends a process (its log lines, captured from real runs) and aborts; the
launcher prints one line naming the lost process instead, and passes everything else on."""
import subprocess
import sys
import textwrap

import pytest

from pixelzoo.launch import supervisor

# What JAX 0.10.2's runtime wrote on fd 2 when it ended a survivor (abridged): process 0,
# after process 1 was SIGKILLed (heartbeats), and process 1, after process 0 was.
HEARTBEATS = """\
E1203 16:02:00.379989   12389 coordination_service.cc:1549] [1499] Use error polling to propagate the following error to all tasks: UNAVAILABLE: The following tasks are unhealthy (stopped sending heartbeats):
1
The tasks have crashed. Check the task logs for an earlier error, or scheduler events (e.g. preemption, eviction) to debug further.
E1203 16:02:00.380678   12400 coordination_service_agent.cc:289] Polled an error from coordination service (this can be an error from this or another task).
F1203 16:02:00.380700   12400 client.h:80] Terminating process because the JAX distributed service detected fatal errors. This most likely indicates that another task died.
*** Check failure stack trace: ***
    @     0x7fc28fa40634  absl::lts_20260107::log_internal::LogMessage::SendToLog()
"""
LEADER = """\
E1203 16:01:14.540715   11999 coordination_service_agent.cc:289] Polled an error from coordination service (this can be an error from this or another task).
F1203 16:01:14.540758   11999 client.h:80] Terminating process because the JAX distributed service detected fatal errors. This most likely indicates that another task died; see the other task logs for more details. absl::Status: UNAVAILABLE: Failed to send RPC to coordination service. Either the leader task was preempted/died/restarted unexpectedly or this task is experiencing network issues.
*** Check failure stack trace: ***
    @     0x7fc28fa40634  absl::lts_20260107::log_internal::LogMessage::SendToLog()
"""
GLOO = ("[Gloo] Rank 0 is connected to 1 peer ranks. Expected number of connected peer "
        "ranks is : 1\n")


def supervise(runtime_text: str, end: str, verbose: bool = False):
    """Runs supervise(child) in a fresh process; the child writes a progress line and a
    warning through Python, gloo's note on fd 1 and runtime_text on fd 2, then `end`s."""
    child = textwrap.dedent(f"""
        import os, sys
        from pixelzoo.launch import supervisor
        supervisor.use_python_streams()
        print("[train] frame 400", flush=True)
        print("warning: from Python", file=sys.stderr, flush=True)
        os.write(1, {GLOO!r}.encode())
        os.write(2, {runtime_text!r}.encode())
        {end}
    """)
    launcher = ("import sys; from pixelzoo.launch import supervisor; "
                f"sys.exit(supervisor.supervise([sys.executable, '-c', {child!r}], 0, {verbose}))")
    return subprocess.run([sys.executable, "-c", launcher], capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.mark.parametrize("runtime_text, lost", [
    (HEARTBEATS, "lost process 1 of the run (no heartbeat for 10 s)"),
    (LEADER, "lost process 0 of the run (the coordinator)"),
])
def test_the_runtimes_fatal_end_becomes_one_line_naming_the_lost_process(runtime_text, lost):
    done = supervise(runtime_text, "os.abort()")
    assert done.returncode == supervisor.EXIT_LOST
    assert done.stdout == "[train] frame 400\n"     # gloo's note dropped
    assert done.stderr.splitlines() == [
        "warning: from Python",
        f"error: {lost}; process 0 stopped too. The workdir keeps the last checkpoint: "
        "relaunch the same command on every process to resume"]


def test_other_output_passes_and_the_exit_status_is_the_childs():
    done = supervise("W1203 a C++ warning\n", "sys.exit(3)")
    assert done.returncode == 3
    assert done.stdout == "[train] frame 400\n"
    assert done.stderr.splitlines() == ["warning: from Python", "W1203 a C++ warning"]


def test_verbose_shows_every_line():
    done = supervise("W1203 a C++ warning\n", "sys.exit(0)", verbose=True)
    assert done.returncode == 0
    assert done.stdout.splitlines() == ["[train] frame 400", GLOO.strip()]
    assert done.stderr.splitlines() == ["warning: from Python", "W1203 a C++ warning"]


def test_a_lost_process_the_runtime_text_does_not_name():
    assert supervisor.lost_process_line("F1203 Terminating process", 2) == (
        "lost a process of the run; process 2 stopped too. The workdir keeps the last "
        "checkpoint: relaunch the same command on every process to resume")
    two = HEARTBEATS.replace("heartbeats):\n1\n", "heartbeats):\n1, 3\n")
    assert supervisor.lost_process_line(two, 0).startswith(
        "lost processes 1, 3 of the run (no heartbeat for 10 s); process 0 stopped too.")
