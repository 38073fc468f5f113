"""launch.plot on synthetic workdirs: loading and labels, alignment, mean and interval,
rliable aggregates, the packaged reference curves, the command end to end, bad input."""
import csv
import gzip
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from pixelzoo.launch import plot

ROOT = pathlib.Path(__file__).resolve().parents[1]
T_975 = {1: 12.706204736174705, 2: 4.302652729911275}  # Student t quantiles by dof


def write_run(root, name, agent, task, seed, config, frames, returns):
    """A fake workdir: config.json and eval.csv (frames, mean eval returns)."""
    workdir = pathlib.Path(root) / name
    (workdir / "checkpoints").mkdir(parents=True)
    (workdir / "config.json").write_text(json.dumps(
        {"agent": agent, "task": task, "seed": seed, "num_frames": 100_000,
         "config": {"batch_size": 256, **config}}))
    with open(workdir / "eval.csv", "w") as file:
        file.write("frame,step,episode,episode_return,episode_length,total_time\n")
        file.writelines(f"{frame},{frame // 2},{frame // 1000},{value},1000.0,1.0\n"
                        for frame, value in zip(frames, returns, strict=True))
    return workdir


@pytest.fixture
def sweep(tmp_path):
    """A sweep folder: drqv2 on walker_walk over lr (2 seeds each) and on ball_in_cup_catch."""
    root = tmp_path / "sweep"
    runs = root / "runs"
    frames = [0, 10_000, 20_000, 30_000]
    write_run(runs, "a", "drqv2", "walker_walk", 1, {"lr": 1e-4}, frames, [0, 100, 200, 300])
    write_run(runs, "b", "drqv2", "walker_walk", 2, {"lr": 1e-4}, frames, [0, 300, 400, 500])
    write_run(runs, "c", "drqv2", "walker_walk", 1, {"lr": 3e-4}, frames[:3], [0, 50, 60])
    write_run(runs, "d", "drqv2", "walker_walk", 2, {"lr": 3e-4}, frames[:3], [0, 70, 80])
    cup = [0, 15_000, 30_000]
    write_run(runs / "deeper", "e", "drqv2", "ball_in_cup_catch", 1, {"lr": 1e-4}, cup,
              [0, 500, 900])
    write_run(runs, "f", "drqv2", "cup_catch", 2, {"lr": 1e-4}, cup, [0, 300, 700])
    (root / "manifest.json").write_text("{}")
    (runs / "not_a_run").mkdir()
    return root


# ---------------------------------------------------------------------------------- loading
def test_load_runs_finds_every_workdir_once_and_labels_them(sweep):
    workdirs = plot.find_workdirs([str(sweep), str(sweep / "runs" / "a")])
    assert sorted(os.path.basename(w) for w in workdirs) == list("abcdef")
    table = plot.load_runs(workdirs)
    assert len(table) == 4 * 2 + 3 * 2 + 3 * 2
    labels = table.groupby("run")["label"].first()
    by_name = {os.path.basename(run): label for run, label in labels.items()}
    assert by_name == {"a": "drqv2 lr=0.0001", "b": "drqv2 lr=0.0001",
                       "c": "drqv2 lr=0.0003", "d": "drqv2 lr=0.0003",
                       "e": "drqv2", "f": "drqv2"}  # the two cup runs differ in no field
    assert set(table["task"]) == {"walker_walk", "cup_catch"}  # the alias is merged
    assert not table["reference"].any()
    run_b = table[table["run"].str.endswith("b")]
    assert run_b["frame"].tolist() == [0, 10_000, 20_000, 30_000]
    assert run_b["episode_return"].tolist() == [0, 300, 400, 500]


def test_labels_name_only_fields_that_differ_within_agent_and_task():
    specs = [{"agent": "drqv2", "task": "walker_walk", "config": {"lr": 1, "nstep": 3}},
             {"agent": "drqv2", "task": "walker_walk", "config": {"lr": 2, "nstep": 3}},
             {"agent": "drqv2", "task": "cheetah_run", "config": {"lr": 3, "nstep": 1}},
             {"agent": "drq", "task": "walker_walk", "config": {"lr": 4, "nstep": 3}}]
    assert plot.run_labels(specs) == ["drqv2 lr=1", "drqv2 lr=2", "drqv2", "drq"]


def test_empty_eval_log_and_partial_last_row(tmp_path):
    write_run(tmp_path, "empty", "drqv2", "walker_walk", 1, {}, [], [])
    partial = write_run(tmp_path, "partial", "drqv2", "walker_walk", 2, {}, [0, 10], [1, 2])
    with open(partial / "eval.csv", "a") as file:
        file.write("20,10,2,")  # a row being written
    table = plot.load_runs(plot.find_workdirs([str(tmp_path)]))
    assert table["run"].nunique() == 1
    assert table["frame"].tolist() == [0, 10]


def test_a_multi_seed_workdir_is_one_run_per_seed(tmp_path):
    """launch.train --num_seeds writes every seed's rows to one eval.csv with a seed column."""
    workdir = write_run(tmp_path, "seeds", "drqv2", "walker_walk", 3, {}, [], [])
    with open(workdir / "eval.csv", "w") as file:
        file.write("frame,seed,step,episode,episode_return,episode_length,total_time\n"
                   "0,3,0,0,10.0,1000,1\n0,4,0,0,20.0,1000,1\n"
                   "1000,3,500,1,30.0,1000,2\n1000,4,500,1,50.0,1000,2\n")
    table = plot.load_runs([str(workdir)])
    by_seed = {seed: rows["episode_return"].tolist() for seed, rows in table.groupby("seed")}
    assert by_seed == {3: [10.0, 30.0], 4: [20.0, 50.0]}
    assert table["run"].nunique() == 2 and set(table["label"]) == {"drqv2"}
    curves = plot.learning_curves(table)
    assert curves["mean"].tolist() == [15.0, 40.0] and curves["seeds"].tolist() == [2, 2]


# ------------------------------------------------------------------------------- statistics
def test_mean_interval_is_the_student_t_interval():
    values = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 9.0]])  # 3 seeds x 2 frames
    mean, lower, upper = plot.mean_interval(values)
    std = np.array([2.0, np.sqrt(((2 - 5) ** 2 + (4 - 5) ** 2 + (9 - 5) ** 2) / 2)])
    half = T_975[2] * std / np.sqrt(3)
    np.testing.assert_allclose(mean, [3.0, 5.0])
    np.testing.assert_allclose(lower, mean - half)
    np.testing.assert_allclose(upper, mean + half)
    mean, lower, upper = plot.mean_interval(np.array([[7.0, 8.0]]))  # one seed: no interval
    np.testing.assert_allclose(mean, [7.0, 8.0])
    assert np.isnan(lower).all() and np.isnan(upper).all()


def test_align_curves_interpolates_on_the_frames_all_runs_cover():
    run_a = (np.array([0.0, 10, 20, 30]), np.array([0.0, 10, 20, 30]))
    run_b = (np.array([5.0, 15, 25]), np.array([100.0, 200, 300]))
    grid, values = plot.align_curves([run_a, run_b])
    np.testing.assert_array_equal(grid, [5, 10, 15, 20, 25])
    np.testing.assert_allclose(values, [[5, 10, 15, 20, 25], [100, 150, 200, 250, 300]])


def test_learning_curves_and_scores_at(sweep):
    table = plot.load_runs(plot.find_workdirs([str(sweep)]))
    curves = plot.learning_curves(table).set_index(["task", "label", "frame"])
    row = curves.loc[("walker_walk", "drqv2 lr=0.0001", 30_000)]
    assert row["mean"] == 400.0 and row["seeds"] == 2
    np.testing.assert_allclose(row["upper"] - row["mean"], T_975[1] * 100.0)  # s/sqrt(2)=100
    cup = curves.loc[("cup_catch", "drqv2")]
    assert cup.index.tolist() == [0, 15_000, 30_000]
    assert cup["mean"].tolist() == [0.0, 400.0, 800.0]
    # Between evaluations a run's score is interpolated; a group is left out at a frame
    # that one of its runs has not reached.
    scores = plot.scores_at(table, 20_000).set_index(["label", "seed"])["episode_return"]
    np.testing.assert_allclose(scores[("drqv2", 1)], 500 + 400 / 3)
    assert scores[("drqv2 lr=0.0003", 2)] == 80.0
    assert set(plot.scores_at(table, 25_000)["label"]) == {"drqv2", "drqv2 lr=0.0001"}
    assert plot.default_frames(table) == [20_000, 30_000]


def test_aggregate_matches_independent_numpy():
    rng = np.random.default_rng(0)
    scores = rng.uniform(0.0, 1.3, size=(5, 4))  # runs x tasks, normalised; some above 1
    result = plot.aggregate({"x": scores}, reps=200).set_index("metric")
    flat = np.sort(scores.ravel())
    expected = {"IQM": flat[5:15].mean(),  # 25% trimmed: 5 of the 20 cut at each end
                "mean": scores.mean(),
                "optimality gap": np.mean(np.maximum(1.0 - scores, 0.0))}
    for metric, value in expected.items():
        np.testing.assert_allclose(result.loc[metric, "value"], value, rtol=1e-12)
        assert result.loc[metric, "lower"] <= value <= result.loc[metric, "upper"]
        assert result.loc[metric, "lower"] < result.loc[metric, "upper"]
    assert (result["runs"] == 5).all() and (result["tasks"] == 4).all()
    again = plot.aggregate({"x": scores}, reps=200).set_index("metric")
    assert again.equals(result)  # seeded bootstrap


def test_score_matrices_normalise_and_keep_the_lowest_seeds():
    scores = plot.pd.DataFrame({
        "task": ["a", "a", "a", "b", "b"], "label": "x", "reference": False,
        "run": ["r3", "r1", "r2", "s1", "s2"], "seed": [3, 1, 2, 1, 2],
        "episode_return": [300.0, 100.0, 200.0, 500.0, 600.0]})
    matrices = plot.score_matrices(scores)
    np.testing.assert_allclose(matrices["x"], [[0.1, 0.5], [0.2, 0.6]])  # runs x tasks


# ------------------------------------------------------------------------------- reference
def read_reference_gz(name):
    with gzip.open(ROOT / "launch" / "reference" / name, "rt", newline="") as file:
        return list(csv.DictReader(file))


def test_reference_curves_are_the_packaged_numbers():
    rows = [r for r in read_reference_gz("drqv2.csv.gz")
            if r["task"] == "cartpole_swingup" and r["frame"] == "100000"]
    expected = np.mean([float(r["episode_return"]) for r in rows])
    assert {r["agent"] for r in rows} == {"DrQ-v2 (official)"} and len(rows) == 10
    curves = plot.learning_curves(plot.load_reference(["cartpole_swingup"]))
    row = curves.set_index(["label", "frame"]).loc[("DrQ-v2 (official)", 100_000)]
    np.testing.assert_allclose(row["mean"], expected)
    assert row["seeds"] == 10
    drq = [r for r in read_reference_gz("drq_dreamer.csv.gz")
           if r["task"] == "cup_catch" and r["frame"] == "100000"]
    scores = plot.scores_at(plot.load_reference(["ball_in_cup_catch"]), 100_000)
    dreamer = scores[scores["label"] == "DrQ (official, Dreamer)"]
    np.testing.assert_allclose(dreamer["episode_return"].mean(),
                               np.mean([float(r["episode_return"]) for r in drq]))


def test_a_run_on_either_cup_name_gets_the_cup_catch_references():
    for task in ("ball_in_cup_catch", "cup_catch"):
        reference = plot.load_reference([task])
        assert set(reference["task"]) == {"cup_catch"}
        assert set(reference["label"]) == {"DrQ-v2 (official)", "DrQ (official, PlaNet)",
                                           "DrQ (official, Dreamer)"}


# --------------------------------------------------------------------------------- command
def run_plot(*args):
    process = subprocess.run([sys.executable, "-m", "pixelzoo.launch.plot", *map(str, args)],
                             cwd=ROOT, capture_output=True, text=True, timeout=300,
                             check=False)
    return process.returncode, process.stdout, process.stderr


@pytest.mark.slow(15)
def test_command_writes_plots_and_results(sweep, tmp_path):
    out = tmp_path / "plots"
    code, stdout, stderr = run_plot(sweep, f"--out={out}", "--reps=20")
    assert code == 0, stderr
    for name in ("walker_walk.png", "cup_catch.png", "aggregate.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert str(out / name) in stdout
    results = (out / "results.md").read_text()
    half = f"{T_975[1] * 100:.1f}"  # two seeds 200 apart
    for row in [f"| drqv2 lr=0.0001 | 30000 | 400.0 ± {half} | 2 |",
                f"| drqv2 lr=0.0003 | 20000 | 70.0 ± {T_975[1] * 10:.1f} | 2 |",
                f"| drqv2 | 20000 | 533.3 ± {half} | 2 |",  # cup, interpolated
                f"| drqv2 | 30000 | 800.0 ± {half} | 2 |",
                "### At 20000 frames", "### At 30000 frames",
                "| drqv2 | 1 | 2 | 0.800 [",  # IQM of [0.9, 0.7]
                "| DrQ-v2 (official) | 2 | 8 | "]:  # cup_catch has 8 DrQ-v2 seeds
        assert row in results, row
    assert "| drqv2 lr=0.0003 | 30000 |" not in results  # it never reached 30k


def test_report_with_chosen_frames_and_no_reference(sweep, tmp_path):
    written = plot.make_report([str(sweep)], str(tmp_path / "out"), frames=[10_000],
                               reference=False, reps=20)
    assert [os.path.basename(path) for path in written] == [
        "cup_catch.png", "walker_walk.png", "aggregate.png", "results.md"]
    results = (tmp_path / "out" / "results.md").read_text()
    assert "official" not in results
    assert "### At 10000 frames" in results and "### At 30000 frames" not in results
    # IQM over the 2 seeds at 10k: walker lr=1e-4 has 100 and 300 -> 0.2
    assert "| drqv2 lr=0.0001 | 1 | 2 | 0.200 [" in results


def test_bad_input_exits_2_without_a_traceback(tmp_path):
    code, stdout, stderr = run_plot(tmp_path / "missing", f"--out={tmp_path / 'o'}")
    assert code == 2 and stdout == ""
    assert stderr == f"error: {tmp_path / 'missing'}: no such directory\n"


def test_bad_runs_paths_and_flags_are_user_errors(tmp_path):
    with pytest.raises(plot.UserError, match="no input"):
        plot.find_workdirs([])
    with pytest.raises(plot.UserError, match="no workdirs \\(folders with config.json"):
        plot.find_workdirs([str(tmp_path)])
    with pytest.raises(plot.UserError, match="not-a-dir: not a directory"):
        (tmp_path / "not-a-dir").write_text("")
        plot.find_workdirs([str(tmp_path / "not-a-dir")])
    workdir = write_run(tmp_path, "run", "drqv2", "walker_walk", 1, {}, [0], [1])
    (workdir / "config.json").write_text("{not json")
    with pytest.raises(plot.UserError, match="unreadable run config"):
        plot.load_runs([str(workdir)])
    with pytest.raises(plot.UserError, match="want positive integers"):
        plot.parse_frames(["100k"])
    with pytest.raises(plot.UserError, match="must be > 0"):
        plot.parse_frames(["0"])
