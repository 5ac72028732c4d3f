"""Shipped Hydra launcher presets: they compose, and process-per-job multirun still writes distinct runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from conftest import read_manifest, read_run_json, run_cli
from diffsweep.paths import conf_dir

LAUNCHERS = sorted(p.stem for p in (conf_dir() / "hydra" / "launcher").glob("*.yaml"))


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_launcher_preset_composes(launcher: str) -> None:
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    assert "_target_" in cfg.hydra.launcher and cfg.hydra.launcher._target_.startswith("hydra_plugins.")


def test_parallel_launcher_runs_each_job_in_its_own_process(tmp_path: Path) -> None:
    result = run_cli(["-m", "hydra/launcher=parallel", "provider=tiny_sd,tiny_sd_v2",
                      "sweep.params.num_inference_steps=2", "sweep.grid.seed=[0]"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    runs = sorted((tmp_path / "runs" / "default").iterdir())
    assert [r.name for r in runs] == ["v0001", "v0002"]
    models = {read_run_json(r)["builders"][0]["model"] for r in runs}
    assert models == {"tiny:sd", "tiny:sd_v2"}
    assert all(read_run_json(r)["cache"]["loads"] == 1 for r in runs)  # separate processes, separate caches
    assert all(len(read_manifest(r)) == 2 for r in runs)


def test_failed_items_exit_1_even_from_a_worker_process(tmp_path: Path) -> None:
    # a user's pipeline that loads but fails at every call: its items fail (a model that does not load would not)
    (tmp_path / "breaking_pipes.py").write_text(
        "from diffsweep.examples.custom_pipeline import TinyCustomPipeline\n"
        "class Broken(TinyCustomPipeline):\n"
        "    def __call__(self, prompt, negative_prompt=None, height=64, width=64, num_inference_steps=20,\n"
        "                 guidance_scale=7.5, num_images_per_prompt=1, generator=None, output_type='pil'):\n"
        "        raise RuntimeError('this pipeline always breaks')\n")
    result = run_cli(["-m", "hydra/launcher=parallel", "provider=tiny_custom", "builder.pipeline=breaking_pipes.Broken",
                      "allowed_modules=[diffusers,diffsweep,breaking_pipes]", "sweep.grid.seed=[0]"], cwd=tmp_path,
                     env={"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])})
    assert result.returncode == 1, result.stderr
    assert "2 of 2 item(s) failed" in result.stderr and "diffsweep-runs resume" in result.stderr


def test_a_model_that_cannot_load_exits_3_with_its_reason_even_from_a_worker_process(tmp_path: Path) -> None:
    bad_slot = "+builder.components={vae: {model: nowhere/vae}}"  # not on disk, hub offline: fails at load
    result = run_cli(["-m", "hydra/launcher=parallel", "provider=tiny_sd", bad_slot, "sweep.grid.seed=[0]"],
                     cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    assert "builder.components.vae: model 'nowhere/vae' is not available offline" in result.stderr
    assert "recorded as failed at load" in result.stderr
