"""A reader that goes away (`| head`) ends a command quietly, as it ends a Unix tool: no traceback, no error line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import read_run_json
from diffsweep.errors import EXIT_READER_GONE

RUNS_CLI = [sys.executable, "-m", "diffsweep.cli.runs"]
DIFFSWEEP = [sys.executable, "-m", "diffsweep"]


def with_stdout_closed(command: list[str], cwd: Path, buffered: bool = False) -> tuple[int, str]:
    """Run a command whose stdout has no reader from the start, so every write to it fails (with `buffered`,
    as a pipe's stdout is by default: only when the buffer is flushed)."""
    env = {k: v for k, v in os.environ.items() if not (buffered and k == "PYTHONUNBUFFERED")}
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    stderr = process.stderr.read()
    return process.wait(timeout=300), stderr


def assert_quiet(stderr: str) -> None:
    assert "Traceback" not in stderr and "error" not in stderr.lower() and "Exception" not in stderr, stderr


@pytest.mark.skipif(shutil.which("head") is None, reason="needs head")
def test_runs_list_piped_to_head(tmp_path: Path) -> None:
    for version in range(1, 3001):  # more lines than a pipe holds: the writer meets the closed pipe
        (tmp_path / "runs" / "big" / f"v{version:04d}").mkdir(parents=True)
    shell = f"{' '.join(RUNS_CLI)} list | head -1; echo \"exit ${{PIPESTATUS[0]}}\" >&2"
    result = subprocess.run(["bash", "-c", shell], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.stdout.startswith("run ") and result.stdout.count("\n") == 1
    assert result.stderr.strip() == f"exit {EXIT_READER_GONE}"


def test_runs_help_without_a_reader(tmp_path: Path) -> None:
    code, stderr = with_stdout_closed([*RUNS_CLI, "--help"], tmp_path, buffered=True)
    assert_quiet(stderr)
    assert code == EXIT_READER_GONE


@pytest.mark.parametrize("args", [["dry_run=true"], ["describe=true"], ["--help"],
                                  ["-m", "dry_run=true", "sweep.params.guidance_scale=1.5,7.5"]],
                         ids=["dry_run", "describe", "help", "multirun"])
@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
def test_diffsweep_output_without_a_reader(tmp_path: Path, args: list[str], buffered: bool) -> None:
    code, stderr = with_stdout_closed([*DIFFSWEEP, *args], tmp_path, buffered)
    assert_quiet(stderr)
    assert code == EXIT_READER_GONE


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
def test_a_run_whose_printed_folder_has_no_reader(tmp_path: Path, buffered: bool) -> None:
    code, stderr = with_stdout_closed([*DIFFSWEEP, "sweep.params.num_inference_steps=1", "sweep.grid.seed=[0]"],
                                      tmp_path, buffered)
    assert_quiet(stderr)
    assert code == EXIT_READER_GONE
    assert read_run_json(tmp_path / "runs" / "default" / "v0001")["status"] == "complete"
