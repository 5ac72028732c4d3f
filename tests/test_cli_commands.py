"""Commands as users type them: Hydra's own flags, diffsweep's help, and every command in the README."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import run_cli

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("flag", "header"), [("searchpath", "Config search path"),
                                              ("plugins", "Installed Hydra Plugins"),
                                              ("defaults", "Defaults List"),
                                              ("all", "Hydra ")])
def test_hydra_info_prints_its_sections(tmp_path: Path, flag: str, header: str) -> None:
    result = run_cli(["--info", flag], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert header in result.stdout and "[diffsweep]" not in result.stdout
    if flag == "searchpath":
        assert f"file://{REPO / 'conf'}" in result.stdout


def test_help_describes_diffsweep_its_groups_and_exit_codes(tmp_path: Path) -> None:
    result = run_cli(["--help"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert text.startswith("diffsweep: declarative batch sweeps") and "powered by Hydra" not in text
    for group in ("provider", "sweep", "optimization"):
        options = re.search(rf"^{group}: (.+)$", text, re.MULTILINE)
        assert options, group
        shipped = {p.stem for p in (REPO / "conf" / group).glob("*.yaml")}
        assert set(options.group(1).split(", ")) == shipped
    assert "Exit codes: 0 done; 1 some items failed" in text and "2 invalid configuration" in text


def test_a_relative_config_path_means_the_working_directory(tmp_path: Path) -> None:
    first = run_cli(["sweep.params.num_inference_steps=1", "sweep.grid.seed=[3]"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    (tmp_path / "sub").mkdir()
    again = run_cli(["--config-path=../runs/default/v0001", "--config-name", "config"], cwd=tmp_path / "sub")
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip().splitlines()[-1] == str(tmp_path / "runs" / "default" / "v0002")


# --- the README -----------------------------------------------------------------------------------

README = (REPO / "README.md").read_text(encoding="utf-8")
# Run by CI itself (make test) or long-running on purpose; everything else is run below as printed.
NOT_RUN_HERE = ("make ",)
# What differs between the machine the README's output came from and this one.
VOLATILE = [(re.compile(r"\d{4}-\d\d-\d\dT[\d:.]+\+00:00"), "<time>"),
            (re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"), "<time>"),  # MLflow's tables
            (re.compile(r"\b\d+\.\d+s\b"), "<seconds>"),
            (re.compile(r"\b\d+(\.\d+)? items/s\b"), "<rate>"),
            (re.compile(r"\b\d+ MiB\b"), "<memory>")]


# A command whose README comment says this prints measurements of generated pixels (scores): the
# lines must match word for word, the figures only in shape, since float rounding differs between CPUs
# (and so the padding of table columns, whose widths follow the figures).
FIGURES_VARY = "figures vary between CPUs"
FIGURE = re.compile(r"-?\b\d+(\.\d+)?(e[+-]?\d+)?\b")


def readme_commands() -> list[tuple[str, list[str], bool]]:
    """(command, the output printed under it, whether its figures vary) for every command in the
    README's bash and text blocks."""
    found: list[tuple[str, list[str], bool]] = []
    for kind, body in re.findall(r"```(bash|text)\n(.*?)```", README, re.DOTALL):
        output: list[str] | None = None  # where the lines under a `$ command` of this block go
        for line in body.splitlines():
            command, _, note = (line if kind == "bash" else line[2:]).partition("  #")
            command = command.strip()
            if kind == "bash" and command and not command.startswith("#") or line.startswith("$ "):
                output = []
                found.append((command, output, FIGURES_VARY in note))
            elif kind == "text" and output is not None:
                output.append(line)
    return [found_command for found_command in found if not found_command[0].startswith(NOT_RUN_HERE)]


def normalise(text: str, work: Path, cache: Path) -> str:
    text = text.replace(str(cache), "~/.cache/diffsweep").replace(str(work), "/tmp/demo")
    text = text.removeprefix("[diffsweep] ")
    for pattern, stand_in in VOLATILE:
        text = pattern.sub(stand_in, text)
    return text.rstrip()


def _compositions(monkeypatch: pytest.MonkeyPatch, root: Path, *args: str) -> tuple[int, list[Path]]:
    """How many times Hydra composed the config for a one-item run in this process, and the run folders it made."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    from diffsweep.cli import app

    composing, calls = ConfigLoaderImpl.load_configuration, []

    def counted(self: Any, *a: Any, **k: Any) -> Any:
        calls.append(k.get("run_mode"))
        return composing(self, *a, **k)

    monkeypatch.setattr(ConfigLoaderImpl, "load_configuration", counted)
    monkeypatch.setattr(sys, "argv", ["diffsweep", f"output.root={root}", "sweep.grid.prompt=[a fox]",
                                      "sweep.grid.seed=[0]", "sweep.params.num_inference_steps=1", *args])
    with pytest.raises(SystemExit) as ended:
        app.main()
    assert ended.value.code == 0
    return len(calls), sorted(root.glob("*/v*"))


def test_a_single_run_is_composed_once_and_anything_that_may_set_the_mode_twice(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import yaml

    from diffsweep.cli.app import mode_is_run

    assert mode_is_run(["provider=tiny_sd", "+experiment=tiny_hires_fix", "sweep.grid.seed=[0,1]", "~tracking"])
    for argv in (["-m", "seed=1,2"], ["--multi", "a=1"], ["--config-dir", "mine"], ["-cn", "other"],
                 ["hydra.mode=MULTIRUN"], ["+hydra.searchpath=[file://x]"], ["hydra/sweeper=basic"]):
        assert not mode_is_run(argv), argv
    for path in (REPO / "conf").rglob("*.yaml"):  # the tree a command without flags composes from sets no mode
        hydra_keys = (yaml.safe_load(path.read_text()) or {}).get("hydra") or {}
        assert "mode" not in hydra_keys, path
    monkeypatch.chdir(tmp_path)
    count, made = _compositions(monkeypatch, tmp_path / "one")
    assert count == 1 and len(made) == 1
    # Hydra still learns the mode where the command line may set it: here a multirun of two jobs, without -m
    count, made = _compositions(monkeypatch, tmp_path / "two", "hydra.mode=MULTIRUN",
                                "sweep.params.guidance_scale=5.0,6.0")
    assert count > 1 and len(made) == 2


def test_every_readme_command_runs_as_printed_and_prints_what_the_readme_shows(tmp_path: Path) -> None:
    """In document order, in one working directory (later commands use the runs of earlier ones),
    with a fresh model cache (so first-use lines appear as on a new machine)."""
    work, cache = tmp_path / "demo", tmp_path / "cache"
    work.mkdir()
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "DIFFSWEEP_CACHE": str(cache)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))
    commands = readme_commands()
    assert len(commands) >= 15
    for command, shown, figures_vary in commands:
        command = command.replace("python ", f"{sys.executable} ", 1) if command.startswith("python ") else command
        cwd = REPO if command.startswith(sys.executable) else work
        result = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True,
                                timeout=600)
        printed = [normalise(line, work, cache) for line in (result.stdout + result.stderr).splitlines()]
        expected = [normalise(line, work, cache) for line in shown if line.strip()]
        if figures_vary:
            printed, expected = ([" ".join(FIGURE.sub("<n>", line).split()) for line in lines]
                                 for lines in (printed, expected))
        wants_failure = {"invalid configuration": 2, "error:": 3}
        code = next((c for start, c in wants_failure.items() if expected and expected[0].startswith(start)), 0)
        assert result.returncode == code, f"{command}\n{result.stderr[-3000:]}"
        for line in expected:
            if line.endswith("..."):
                assert any(p.startswith(line[:-3]) for p in printed), f"{command}: {line!r} not in {printed}"
            else:
                assert line in printed, f"{command}: {line!r} not in {printed}"
