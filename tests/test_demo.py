"""The README's first command end to end: the embedded checkpoint served in its own process, sim episodes with
async chunking, recording, oracle and doctor on it, rerun .rrd, report, exit code from the thresholds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from robodata.open import open_dataset
from robot_client.control_loop import LoopEvents
from robot_client.demo import DEFAULT_CHECKPOINT, DemoConfig, Thresholds, run_demo, summarize_episodes
from robot_client.motion_stats import MotionMeter
from robot_client.run_cli import SessionResult
from robot_client.runner import EpisodeReport
from robot_client.sim.tasks import HOVER_TASKS

EPISODES = 4


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path]:
    out = tmp_path_factory.mktemp("demo")
    code = run_demo(DemoConfig(out=out, episodes=EPISODES, seconds=6.0, seed=0))
    return code, out


def test_the_embedded_checkpoint_is_committed_and_small() -> None:
    files = [p for p in DEFAULT_CHECKPOINT.rglob("*") if p.is_file()]
    names = {str(p.relative_to(DEFAULT_CHECKPOINT)) for p in files}
    assert {"model.safetensors", "config.json", "policy_config.json", "assets/tokenizer.model"} <= names
    assert any(n.endswith("norm_stats.json") for n in names)  # openpi layout
    assert sum(p.stat().st_size for p in files) <= 20e6


def test_the_demo_runs_records_checks_and_reports(demo_run: tuple[int, Path]) -> None:
    code, out = demo_run
    report = json.loads((out / "report.json").read_text())
    checks = {c["name"]: c for c in report["checks"]}
    assert {"closed-loop success", "commanded jerk", "oracle first action", "doctor", "server shutdown",
            "rerun recording"} <= set(checks)
    assert code == (0 if all(c["passed"] for c in checks.values()) else 1)
    assert report["passed"] == (code == 0)
    episodes = report["episodes_summary"]
    assert episodes["episodes"] == EPISODES
    assert set(episodes["success_by_prompt"]) == {t.prompt for t in HOVER_TASKS}
    assert checks["server shutdown"]["passed"] and checks["oracle ran"]["passed"]
    assert checks["commanded jerk"]["passed"] and checks["servo output clamps"]["passed"]
    # The recording is a dataset like any other: every episode, with the prompt it ran.
    recording = open_dataset(out / "recording.zarr")
    assert recording.info.num_episodes == EPISODES
    assert [recording.episode_meta(i).task for i in recording.episode_indices()] == \
        [HOVER_TASKS[i % 2].prompt for i in range(EPISODES)]
    assert (out / "live.rrd").stat().st_size > 0
    assert (out / "oracle" / "results.json").is_file() and (out / "report.md").is_file()


def _report(index: int, success: bool, jerk_step: float = 0.0) -> EpisodeReport:
    meter = MotionMeter(("j",), [1.0], [10.0], [100.0])
    for k in range(20):
        meter.add(k * 0.005, [0.0 if k < 10 else jerk_step])
    return EpisodeReport(index=index, success=success, motion=meter.summary(), events=LoopEvents())


def test_each_threshold_fails_by_name() -> None:
    prompts = ["a", "b", "a", "b", "a"]
    good = SessionResult([_report(i, True) for i in range(5)], prompts)
    _, checks = summarize_episodes(good, Thresholds())
    assert all(c.passed for c in checks), [c.line() for c in checks]

    three_of_five = SessionResult([_report(i, i < 3) for i in range(5)], prompts)
    _, checks = summarize_episodes(three_of_five, Thresholds())
    failed = [c for c in checks if not c.passed]
    assert [c.name for c in failed] == ["closed-loop success"] and "60% (3/5" in failed[0].measured

    jumpy = SessionResult([_report(0, True, jerk_step=0.01)], ["a"])
    _, checks = summarize_episodes(jumpy, Thresholds())
    assert "commanded jerk" in [c.name for c in checks if not c.passed]


def test_a_recording_is_checked_for_containment_in_the_stats(demo_run: tuple[int, Path]) -> None:
    """The doctor picks containment for our recordings by itself, and coverage when told."""
    from replay.doctor.command import DoctorOptions, run_doctor

    recording = open_dataset(demo_run[1] / "recording.zarr")
    for fit, expected in (("auto", "containment"), ("coverage", "coverage")):
        result = run_doctor(recording, DoctorOptions(checkpoint=DEFAULT_CHECKPOINT, plots=False, stats_fit=fit))
        said = [f.message for f in result.findings if f.code == "stats_fit"]
        assert len(said) == 1 and said[0].startswith(f"data checked for {expected}"), said


def test_a_missing_checkpoint_stops_before_anything_starts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = run_demo(DemoConfig(checkpoint=tmp_path / "nothing", out=tmp_path / "out"))
    assert code == 2
    printed = capsys.readouterr().out
    assert "missing model.safetensors" in printed and "python -m training.train --out data/demo_policy" in printed
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("argv", "field"), [(["--episodes", "0"], "episodes"), (["--seconds", "-1"], "seconds"),
                                             (["--pace", "0"], "pace"), (["--min-success", "80"], "min_success")])
def test_bad_demo_options_are_named(argv: list[str], field: str, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from robot_client.demo import add_arguments, main_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert main_from_args(parser.parse_args(argv)) == 2
    assert capsys.readouterr().err.startswith(f"demo: {field} ")
