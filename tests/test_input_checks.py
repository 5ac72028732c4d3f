"""Bad input that used to surface late is refused up front: exit 2, the key path, nothing written."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import compose_config, run_cli
from diffsweep.errors import ConfigError
from diffsweep.run.local import run_sweep

pytestmark = pytest.mark.quick  # configuration checks: part of make test-fast

QUICK = ["++sweep.params.num_inference_steps=1"]


def refused(tmp_path: Path, *args: str) -> str:
    """Run the CLI, expect exit 2 with nothing written under ./runs, return stderr."""
    result = run_cli([*args], cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert not (tmp_path / "runs").exists()
    assert "Traceback" not in result.stderr
    return result.stderr


def plan_error(tmp_path: Path, *overrides: str) -> str:
    with pytest.raises(ConfigError) as caught:
        run_sweep(compose_config([*QUICK, *overrides], tmp_path / "runs"), out=io.StringIO())
    assert not (tmp_path / "runs").exists()
    return str(caught.value)


# --- LoRA sources ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dry_run", ["false", "true"])
def test_a_missing_lora_file_is_refused_before_the_run_folder(tmp_path: Path, dry_run: str) -> None:
    missing = tmp_path / "loras" / "style.safetensors"
    stderr = refused(tmp_path, f"+builder.loras=[{{name: style, source: {missing}}}]", f"dry_run={dry_run}")
    assert f"builder.loras[0].source: {missing} does not exist" in stderr


@pytest.mark.parametrize("dry_run", ["false", "true"])
def test_a_relative_lora_path_without_dot_slash_is_a_file_not_a_hub_repo(tmp_path: Path, dry_run: str) -> None:
    """`loras/style.safetensors` (the README's form) fits the owner/name shape of a hub id; with the hub
    reachable it used to pass validation and die in the run on a download."""
    result = run_cli(["+builder.loras=[{name: style, source: loras/missing.safetensors}]", f"dry_run={dry_run}"],
                     cwd=tmp_path, env={"HF_HUB_OFFLINE": "0"})
    assert result.returncode == 2, result.stderr
    assert not (tmp_path / "runs").exists()
    assert f"builder.loras[0].source: {tmp_path / 'loras' / 'missing.safetensors'} does not exist" in result.stderr


def test_what_a_lora_source_is_taken_for() -> None:
    from diffsweep.lora import looks_like_a_path

    for path in ("loras/style.safetensors", "style.safetensors", "./loras/style", "../style", "~/loras/style",
                 "/abs/style", "my/loras/style", "C:\\loras\\style"):
        assert looks_like_a_path(path), path
    for repo in ("someone/style-lora", "org/detail.v2"):
        assert not looks_like_a_path(repo), repo


def test_a_lora_folder_without_weights_and_an_offline_hub_lora_without_weight_name(tmp_path: Path) -> None:
    empty = tmp_path / "empty_lora"
    empty.mkdir()
    (empty / "README.md").write_text("not weights")
    message = plan_error(tmp_path, f"+builder.loras=[{{name: a, source: {empty}}}]")
    assert f"builder.loras[0].source: {empty} holds no LoRA weights" in message

    several = tmp_path / "several"
    several.mkdir()
    for name in ("a.safetensors", "b.safetensors"):
        (several / name).write_bytes(b"")
    message = plan_error(tmp_path, f"+builder.loras=[{{name: a, source: {several}}}]")
    assert "holds several weight files (a.safetensors, b.safetensors); set weight_name" in message

    message = plan_error(tmp_path, "+builder.loras=[{name: a, source: someone/style-lora}]")  # tests run offline
    assert "builder.loras[0].source: hub LoRA 'someone/style-lora' needs weight_name offline" in message
    message = plan_error(tmp_path, "+builder.loras=[{name: a, source: someone/style-lora, weight_name: s.safetensors}]")
    assert "is not in the local Hugging Face cache and HF_HUB_OFFLINE is set" in message


# --- the output root ------------------------------------------------------------------------------


def test_an_output_root_that_is_a_file_is_refused_in_a_dry_run_too(tmp_path: Path) -> None:
    blocker = tmp_path / "taken"
    blocker.write_text("a file where a folder should be")
    for dry_run in ("true", "false"):
        stderr = refused(tmp_path, f"output.root={blocker}/runs", f"dry_run={dry_run}")
        assert f"output.root: {blocker} is a file, not a folder" in stderr
    assert blocker.read_text() == "a file where a folder should be"

    (tmp_path / "root" / "default").parent.mkdir()
    (tmp_path / "root" / "default").write_text("")  # where the sweep's versions would go
    stderr = refused(tmp_path, f"output.root={tmp_path / 'root'}")
    assert f"{tmp_path / 'root' / 'default'} is a file, but run folders of sweep 'default' go there" in stderr


def _read_only_command(folder: Path, command: list[str]) -> list[str] | None:
    """`command` run where `folder` is read-only: a read-only mount as root, else as an unprivileged user."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return command
    unshare = shutil.which("unshare")
    probe = [unshare, "--mount", "sh", "-c", f"mount -t tmpfs -o ro tmpfs {folder}"] if unshare else None
    if probe and subprocess.run(probe, capture_output=True).returncode == 0:
        script = f"mount -t tmpfs -o ro tmpfs {folder} && exec \"$@\""
        return [unshare, "--mount", "sh", "-c", script, "sh", *command]
    return None


def test_a_read_only_output_root_is_refused_with_what_to_change(tmp_path: Path) -> None:
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    command = _read_only_command(read_only, [sys.executable, "-m", "diffsweep", f"output.root={read_only}/runs"])
    if command is None:
        pytest.skip("needs a read-only mount (root with unshare) or a non-root user to make a folder read-only")
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert f"output.root: {read_only} is not writable" in result.stderr
    assert "set output.root to a folder you can write" in result.stderr


# --- grid values ----------------------------------------------------------------------------------


def test_a_value_given_twice_on_an_axis_is_refused(tmp_path: Path) -> None:
    stderr = refused(tmp_path, "sweep.grid.seed=[1,2,1]")
    assert "sweep.grid.seed: value 1 is given 2 times (positions 0, 2)" in stderr
    message = plan_error(tmp_path, "+sweep.grid.guidance_scale=[7,7.0]")  # one number, however it is written
    assert "sweep.grid.guidance_scale: value 7 is given 2 times (positions 0, 1)" in message


def test_a_prompt_file_names_the_lines_that_repeat_and_loses_its_byte_order_mark(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes("a fox\n# a comment\n\na cat\na fox\n".encode("utf-8-sig"))
    message = plan_error(tmp_path, "~sweep.grid.prompt", f"+sweep.grid.prompt={{file: {prompts}}}")
    assert f"sweep.grid.prompt: value \"a fox\" is given 2 times (lines 1, 5 of {prompts})" in message

    prompts.write_bytes("a fox\na cat\n".encode("utf-8-sig"))
    doc = compose_config([*QUICK, "~sweep.grid.prompt", f"+sweep.grid.prompt={{file: {prompts}}}", "dry_run=true"])
    out = io.StringIO()
    run_sweep(doc, out=out)
    assert 'prompt="a fox"' in out.getvalue() and "\ufeff" not in out.getvalue()


def test_zip_mode_refuses_a_repeated_point_but_not_a_repeated_value(tmp_path: Path) -> None:
    message = plan_error(tmp_path, "sweep=pairs", "sweep.grid.prompt=[a,a,b]", "sweep.grid.seed=[1,1,2]",
                         "sweep.grid.num_inference_steps=[1,1,1]")
    assert "sweep.grid: zipped points 0, 1 are the same (prompt='a', seed=1, num_inference_steps=1)" in message
    doc = compose_config([*QUICK, "sweep=pairs", "sweep.grid.prompt=[a,a,b]", "sweep.grid.seed=[1,2,3]",
                          "sweep.grid.num_inference_steps=[1,1,1]", "dry_run=true"])
    assert run_sweep(doc, out=io.StringIO()).counts == {"planned": 3}


# --- a user's own sweep file, multirun, interpolation ----------------------------------------------


def test_a_users_sweep_file_needs_only_a_name_and_a_grid(tmp_path: Path) -> None:
    (tmp_path / "mine" / "sweep").mkdir(parents=True)
    (tmp_path / "mine" / "sweep" / "foxes.yaml").write_text("name: foxes\ngrid:\n  prompt: [a fox]\n  seed: [1, 2]\n")
    result = run_cli(["--config-dir", "mine", "sweep=foxes", "dry_run=true"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("dry run: 2 items, 1 builder(s), 1 batches")  # product, batched "auto"


@pytest.mark.parametrize("where", ["--config-dir", "hydra.searchpath"])
def test_a_prompt_file_is_found_beside_the_sweep_file_that_names_it(tmp_path: Path, where: str) -> None:
    """Run from another folder than the sweep file's: `{file: animals.txt}` means the file beside it."""
    sweeps = tmp_path / "project" / "sweeps"
    (sweeps / "sweep").mkdir(parents=True)
    (sweeps / "sweep" / "animals.txt").write_text("a fox\na bird\n")
    (sweeps / "sweep" / "animals.yaml").write_text("name: animals\ngrid:\n  prompt: {file: animals.txt}\n")
    (tmp_path / "elsewhere").mkdir()
    found = ["--config-dir", "../project/sweeps"] if where == "--config-dir" else [
        f"hydra.searchpath=[file://{sweeps}]"]
    result = run_cli([*found, "sweep=animals", "dry_run=true"], cwd=tmp_path / "elsewhere")
    assert result.returncode == 0, result.stderr
    assert 'prompt="a fox"' in result.stdout and 'prompt="a bird"' in result.stdout


def test_every_multirun_job_is_validated_before_the_first_runs(tmp_path: Path) -> None:
    stderr = refused(tmp_path, "-m", "sweep.params.width=64,100", *QUICK)
    assert "sweep.params.width: width 100 must be a multiple of 8" in stderr
    assert "[multirun job 1 (sweep.params.width=100 " in stderr
    assert "job 0" not in stderr  # the good job is not reported, and did not run: no runs/ folder


def test_an_interpolation_in_a_prompt_says_how_to_write_it_literally(tmp_path: Path) -> None:
    stderr = refused(tmp_path, "sweep.grid.prompt=[a ${thing}]")
    assert "sweep.grid.prompt[0]: Interpolation key 'thing' not found" in stderr
    assert r"is written '\${...}'" in stderr
    result = run_cli(["sweep.grid.prompt=[a \\${thing},b]", "dry_run=true"], cwd=tmp_path)
    assert result.returncode == 0 and 'prompt="a ${thing}"' in result.stdout
