"""A multi-process launch.train that cannot start ends on every process with one line
(launch.rendezvous), before JAX's runtime starts and before anything trains: processes that
never join, an unreachable process 0, two processes with one id, settings that differ."""
import time

import pytest

from tests.test_multihost import _free_port, start

TIMEOUT_S = 15     # --startup_timeout_s of these launches


def _ends(processes: list, launched: float) -> list[tuple[str, float]]:
    """Each process's (one stderr line, seconds from `launched` to its end); each exits
    with status 2 and prints nothing on stdout."""
    ended: dict[int, float] = {}
    while len(ended) < len(processes):
        assert time.monotonic() - launched < 300, "a process did not end"
        for index, process in enumerate(processes):
            if index not in ended and process.poll() is not None:
                ended[index] = time.monotonic() - launched
        time.sleep(0.1)
    results = []
    for index, process in enumerate(processes):
        stdout, stderr = process.communicate()
        assert process.returncode == 2 and stdout == "", (process.returncode, stdout, stderr)
        lines = stderr.strip().splitlines()
        assert len(lines) == 1, stderr
        results.append((lines[0], ended[index]))
    return results


@pytest.mark.slow(45)
def test_processes_that_cannot_meet_end_within_the_startup_timeout_with_one_line(tmp_path):
    """Two processes 0 of 3 and two processes 1, all at once: the later 0 and the later 1 are
    refused at once, the others wait for process 2, which never comes; a process whose
    process 0 is not there gives up. All within the start-up timeout, each with one line."""
    port, nobody = _free_port(), _free_port()
    address = f"localhost:{port}"
    run = lambda index, *args, at=port, count=3: start(
        tmp_path / "run", f"--startup_timeout_s={TIMEOUT_S}", *args,
        process=(at, index), num_processes=count)
    launched = time.monotonic()   # all at once, as a scheduler starts them
    zeros, ones, lonely = [run(0), run(0)], [run(1), run(1)], run(1, at=nobody, count=2)
    ended = dict(zip(zeros + ones, _ends(zeros + ones, launched)))

    # The later process 0 finds the port taken, the later process 1 the id: refused at once.
    in_use = (f"error: --coordinator_address={address}: port {port} is in use on this "
              "host; is a second process given --process_id=0 (or is another program "
              "using the port)? Each id 0..N-1 once, and a free port")
    [(second_zero, zero_s)] = [ended[p] for p in zeros if ended[p][0] == in_use]
    [(second_one, one_s)] = [ended[p] for p in ones if "is given to two processes" in ended[p][0]]
    assert second_one.startswith("error: --process_id=1 is given to two processes (pid ")
    assert second_one.endswith("); give each id 0..N-1 once")
    print(f"second process 0 refused after {zero_s:.1f} s, second process 1 after {one_s:.1f} s")
    # The others wait for process 2, which never comes.
    missing = (f"error: process 2 of 3 did not join process 0 at {address} within "
               f"{TIMEOUT_S} s (--startup_timeout_s); start every process, with the same "
               "--num_processes, and relaunch")
    waited = [end for end in ended.values() if end[0] not in (in_use, second_one)]
    assert [line for line, _ in waited] == [missing, missing]
    [(line, lonely_s)] = _ends([lonely], launched)
    assert line == (f"error: process 1 could not reach process 0 at localhost:{nobody} within "
                    f"{TIMEOUT_S} s (--startup_timeout_s); is process 0 running, and is the "
                    "address right?")
    print(f"never joined: processes 0 and 1 ended {waited[0][1]:.1f} and {waited[1][1]:.1f} s "
          f"after their launch; unreachable process 0: {lonely_s:.1f} s")
    # Start-up (imports, before the wait) is not in the timeout: a loaded machine's margin.
    assert all(seconds < TIMEOUT_S + 60 for _, seconds in waited + [(None, lonely_s)])
    assert not (tmp_path / "run" / "config.json").exists()


@pytest.mark.slow(25)
def test_settings_that_differ_between_processes_are_refused_on_every_process(tmp_path):
    """Process 1 has another config and number of seeds, process 2 another process count
    and workdir: all three end with the same line naming every difference."""
    port = _free_port()
    workdir, other = tmp_path / "run", tmp_path / "other"
    launched = time.monotonic()
    processes = [
        start(workdir, process=(port, 0), num_processes=3),
        start(workdir, "--config.hidden_dim=32", "--num_seeds=2", process=(port, 1),
              num_processes=3),
        start(other, process=(port, 2), num_processes=4)]
    ended = _ends(processes, launched)
    line = ("error: the processes were started with different settings: process 1 has "
            "config.hidden_dim 32 (process 0: 16), num_seeds 2 (process 0: 4); process 2 has "
            f"num_processes 4 (process 0: 3), workdir '{other}' (process 0: '{workdir}'). "
            "Start every process with the same command (only --process_id differs)")
    assert [line for line, _ in ended] == [line] * 3
    print("differing settings: refused after " + ", ".join(f"{s:.1f}" for _, s in ended)
          + " s")
    assert not (workdir / "config.json").exists() and not (workdir / "checkpoints").exists()
