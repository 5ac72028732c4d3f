"""What a fresh clone shows: `make setup` installs quietly, `make demo` prints the run and nothing else, the wheel
ships every folder diffsweep reads, and no tracked file is ignored by git."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# a warning of Python's warnings module as setuptools prints it (`editable_wheel.py:354: InformationOnly: ...`)
PYTHON_WARNING = re.compile(r"\.py:\d+: \w*(Warning|InformationOnly)\b")


def build(hook: str, out: Path, env: dict[str, str] | None = None) -> str:
    """Run a setuptools build hook as pip runs it (in the repository), return what it printed."""
    done = subprocess.run([sys.executable, "-c",
                           f"from setuptools import build_meta; build_meta.{hook}({str(out)!r})"],
                          cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


@pytest.mark.quick
def test_the_wheel_ships_conf_schemas_and_templates_without_a_warning(tmp_path: Path) -> None:
    printed = build("build_wheel", tmp_path)
    assert not PYTHON_WARNING.search(printed), printed
    (wheel,) = tmp_path.glob("diffsweep-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for shipped in ("diffsweep/conf/config.yaml", "diffsweep/conf/hydra/help/diffsweep.yaml",
                    "diffsweep/conf/prompts/landscapes.txt", "diffsweep/conf/inputs/example.png",
                    "diffsweep/schemas/config.schema.json", "diffsweep/templates/viewer.js"):
        assert shipped in names, shipped


@pytest.mark.quick
def test_make_setup_installs_without_setuptools_notes(tmp_path: Path) -> None:
    """The Makefile's editable install filters the one note setuptools prints at length on every install."""
    makefile = (REPO / "Makefile").read_text()
    found = re.search(r'PYTHONWARNINGS="([^"]+)" \$\(BIN\)/python -m pip install --quiet -e', makefile)
    assert found, "the editable install in the Makefile sets PYTHONWARNINGS"
    assert PYTHON_WARNING.search(build("build_editable", tmp_path / "plain"))  # what it filters is there
    assert not PYTHON_WARNING.search(build("build_editable", tmp_path / "make", {"PYTHONWARNINGS": found.group(1)}))


@pytest.mark.quick
def test_the_demo_prints_the_run_and_nothing_else(tmp_path: Path) -> None:
    """`make demo` on a fresh machine: the tiny model is built first, and its shard-writing bar is not shown."""
    done = subprocess.run([sys.executable, "-m", "diffsweep"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "DIFFSWEEP_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{tmp_path / 'runs' / 'default' / 'v0001'}\n"
    lines = done.stderr.splitlines()
    assert lines[0].startswith("[diffsweep] built tiny model sd into ")
    assert all(line.startswith("[diffsweep] ") for line in lines), done.stderr


@pytest.mark.quick
@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(), reason="needs a git checkout")
def test_no_tracked_file_is_ignored() -> None:
    ignored = subprocess.run(["git", "ls-files", "--cached", "--ignored", "--exclude-standard"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout.split()
    assert ignored == []
