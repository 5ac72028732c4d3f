"""A dry run plans and prints; it writes and builds nothing: no run folder, no tiny model in the cache, nothing in
the Hugging Face caches or the home directory."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import run_cli
from diffsweep.paths import conf_dir

TINY_PRESETS = sorted(p.stem for p in (conf_dir() / "provider").glob("tiny_*.yaml"))


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_a_dry_run_of_every_tiny_preset_leaves_every_cache_and_output_folder_untouched(tmp_path: Path) -> None:
    watched = tmp_path / "watched"
    env = {"HOME": watched / "home", "DIFFSWEEP_CACHE": watched / "diffsweep-cache", "HF_HOME": watched / "hf",
           "HF_HUB_CACHE": watched / "hf" / "hub", "HF_MODULES_CACHE": watched / "hf" / "modules",
           "XDG_CACHE_HOME": watched / "home" / ".cache", "TORCH_HOME": watched / "torch"}
    work = watched / "work"
    for folder in [*env.values(), work]:
        folder.mkdir(parents=True, exist_ok=True)
    # Hydra's multirun launcher makes its own (empty) sweep folder under TMPDIR; it is Hydra's, not diffsweep's
    (tmp_path / "hydra-tmp").mkdir()
    before = _listing(watched)

    result = run_cli(["-m", f"provider={','.join(TINY_PRESETS)}", "dry_run=true", f"output.root={work / 'runs'}"],
                     work, env={**{k: str(v) for k, v in env.items()}, "TMPDIR": str(tmp_path / "hydra-tmp")},
                     timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("nothing written") == len(TINY_PRESETS)
    assert "built tiny model" not in result.stderr
    assert _listing(watched) == before
    assert os.listdir(watched / "diffsweep-cache") == []
