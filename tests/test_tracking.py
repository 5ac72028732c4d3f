"""Experiment tracking, for real: tiny sweeps logged to a local MLflow store and TensorBoard event
files, read back with MLflow's client and TensorBoard's event reader."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from conftest import compose_config, read_manifest, read_run_json, run_cli
from diffsweep.config.schema import load_schema
from diffsweep.reports.tracking import TRUNCATED
from diffsweep.run.attempts import RunResult
from diffsweep.run.local import resume_run, run_sweep

TINY = ["sweep.params.num_inference_steps=1", "sweep.params.height=32", "sweep.params.width=32",
        "sweep.grid.prompt=[a red fox]", "sweep.grid.seed=[0,1]"]
LONG_NEGATIVE = " ".join(["blurry"] * 1000)  # 6,999 characters: past MLflow's 6,000-character param limit


def _run(root: Path, *overrides: str) -> RunResult:
    return run_sweep(compose_config([*TINY, "sweep.name=tracked", *overrides], root))


def _store(root: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")


def _summary_rows(run_dir: Path) -> list[tuple[str, dict[str, str]]]:
    """(the MLflow metric key prefix, the row) for each row of a run's scores_summary.csv."""
    with (run_dir / "scores_summary.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [("/".join(part for part in ("scores", row["metric"], row["axis"], row["value"]) if part), row)
            for row in rows]


@pytest.fixture(scope="module")
def mlflow_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tracked run, then (after a scores summary appears in its folder) its resume."""
    root = tmp_path_factory.mktemp("mlflow") / "runs"
    result = _run(root, "tracking=mlflow", "score.metrics=[sharpness]", f"sweep.params.negative_prompt='{LONG_NEGATIVE}'")
    first = read_run_json(result.run_dir)["tracking"]
    resumed = resume_run(result.run_dir)
    return {"root": root, "run_dir": result.run_dir, "first": first, "resumed": resumed}


def test_mlflow_run_carries_the_config_metrics_and_artifacts(mlflow_run: dict[str, Any]) -> None:
    client, record = _store(mlflow_run["root"]), mlflow_run["first"]
    Draft202012Validator(load_schema("run")).validate(read_run_json(mlflow_run["run_dir"]))
    assert record["status"] == "logged" and record["uri"] == f"sqlite:///{mlflow_run['root'] / 'mlflow.db'}"
    experiment = client.get_experiment_by_name("tracked")
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_id for r in runs] == [record["run_id"]]  # the resume logged into the same run
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == "tracked/v0001"
    assert run.data.tags["diffsweep.run_dir"] == str(mlflow_run["run_dir"])
    params = run.data.params
    assert params["builder.model"] == "tiny:sd" and params["sweep.params.num_inference_steps"] == "1"
    assert params["sweep.grid.seed"] == "[0, 1]" and params["tracking.backend"] == "mlflow"
    cut = params["sweep.params.negative_prompt"]
    assert len(cut) == 6000 and cut.endswith(TRUNCATED) and LONG_NEGATIVE.startswith(cut[:-len(TRUNCATED)])
    metrics = run.data.metrics
    assert metrics["items/planned"] == 2 and metrics["items/done"] == 2 and metrics["items/failed"] == 0
    timings = read_run_json(mlflow_run["run_dir"])["timings"]  # totals of both attempts, as run.json has them
    assert metrics["timings/load_seconds"] == pytest.approx(timings["load_seconds"], abs=1e-3)
    assert metrics["timings/first_call_seconds"] == pytest.approx(timings["first_call_seconds"], abs=1e-3)
    assert metrics["timings/first_call_seconds"] > 0
    assert metrics["cache/loads"] + metrics["cache/hits"] == 1  # loaded, or reused from an earlier test's load
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"contact_sheet.png", "index.html", "data.js", "manifest.jsonl", "run.json", "config.yaml"} <= artifacts
    assert "items" not in artifacts  # item files only with tracking.log_items=true
    config = yaml.safe_load(Path(client.download_artifacts(run.info.run_id, "config.yaml")).read_text())
    assert config["sweep"]["params"]["negative_prompt"] == LONG_NEGATIVE  # the whole value is there
    logged = json.loads(Path(client.download_artifacts(run.info.run_id, "run.json")).read_text())
    assert logged["tracking"]["run_id"] == run.info.run_id


def test_score_summaries_are_metrics_and_a_resume_logs_a_new_step(mlflow_run: dict[str, Any]) -> None:
    client, run_id = _store(mlflow_run["root"]), mlflow_run["first"]["run_id"]
    assert mlflow_run["resumed"].status == "complete"
    assert read_run_json(mlflow_run["run_dir"])["tracking"]["run_id"] == run_id
    metrics = client.get_run(run_id).data.metrics
    rows = _summary_rows(mlflow_run["run_dir"])
    assert {row["metric"] for _, row in rows} == {"sharpness"} and any(row["axis"] == "seed" for _, row in rows)
    for key, row in rows:
        assert metrics[f"{key}/mean"] == pytest.approx(float(row["mean"]))
        assert metrics[f"{key}/n"] == float(row["n"])
    assert [m.step for m in client.get_metric_history(run_id, "items/done")] == [0, 1]
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert "scores_summary.csv" in artifacts and "scores" in artifacts
    assert any(a.path.endswith(".png") for a in client.list_artifacts(run_id, "scores"))  # the score plots


def test_scoring_an_ended_run_logs_its_scores_into_its_tracked_run(tmp_path: Path) -> None:
    result = _run(tmp_path / "runs", "tracking=mlflow")
    run_id = read_run_json(result.run_dir)["tracking"]["run_id"]
    client = _store(tmp_path / "runs")
    assert not any(key.startswith("scores/") for key in client.get_run(run_id).data.metrics)
    scored = run_cli(["score", str(result.run_dir), "--metric", "sharpness"], tmp_path, module="diffsweep.cli.runs")
    assert scored.returncode == 0, scored.stderr
    assert f"tracking mlflow (logged) sqlite:///{tmp_path / 'runs' / 'mlflow.db'}" in scored.stdout
    run = client.get_run(run_id)
    rows = _summary_rows(result.run_dir)
    assert rows
    for key, row in rows:
        assert run.data.metrics[f"{key}/mean"] == pytest.approx(float(row["mean"]))
    assert run.info.status == "FINISHED"
    assert {"scores.jsonl", "scores_summary.csv", "scores"} <= {a.path for a in client.list_artifacts(run_id)}
    assert read_run_json(result.run_dir)["tracking"]["run_id"] == run_id  # the same run, not a new one


def test_items_are_artifacts_when_asked_in_the_experiment_named(tmp_path: Path) -> None:
    result = _run(tmp_path / "runs", "tracking=mlflow", "tracking.log_items=true", "tracking.experiment=foxes")
    client = _store(tmp_path / "runs")
    [run] = client.search_runs([client.get_experiment_by_name("foxes").experiment_id])
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "items")}
    made = {f"items/{p.name}" for p in (result.run_dir / "items").iterdir()}
    assert logged == made and any(name.endswith(".png") for name in logged)


def test_tensorboard_writes_hparams_scalars_and_a_grid_per_builder(tmp_path: Path) -> None:
    result = _run(tmp_path / "runs", "tracking=tensorboard", "tracking.log_items=true",
                  "+sweep.grid.builder.scheduler=[null,{name: EulerDiscreteScheduler}]")
    record = read_run_json(result.run_dir)["tracking"]
    log_dir = tmp_path / "runs" / "tensorboard" / "tracked" / "v0001"
    assert record == {"backend": "tensorboard", "log_dir": str(log_dir), "status": "logged"}
    events = EventAccumulator(str(log_dir), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    events.Reload()
    assert [e.value for e in events.Scalars("items/done")] == [4.0]
    builders = {r["builder_hash"][:12] for r in read_manifest(result.run_dir)}
    assert len(builders) == 2
    assert {t for t in events.Tags()["images"] if t.startswith("builders/")} == {f"builders/{b}" for b in builders}
    grid = events.Images(f"builders/{sorted(builders)[0]}")[0]
    assert (grid.width, grid.height) == (64, 32)  # two 32x32 items side by side
    assert len([t for t in events.Tags()["images"] if t.startswith("items/")]) == 4
    start = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(start).session_start_info.hparams
    assert hparams["builder.model"].string_value == "tiny:sd"
    assert hparams["sweep.params.num_inference_steps"].number_value == 1


def test_a_tracking_failure_never_loses_the_run(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store's folder should be")
    result = _run(tmp_path / "runs", "tracking=mlflow", f"tracking.uri=sqlite:///{blocker}/mlflow.db")
    assert result.status == "complete" and result.exit_code == 0
    info = read_run_json(result.run_dir)
    Draft202012Validator(load_schema("run")).validate(info)
    assert info["counts"]["done"] == 2 and len(read_manifest(result.run_dir)) == 2
    assert info["tracking"]["status"] == "failed" and info["tracking"]["backend"] == "mlflow"
    assert info["tracking"]["error"]
    assert "tracking with mlflow failed" in (result.run_dir / "run.log").read_text()


def test_multirun_jobs_are_grouped_under_one_parent_run(tmp_path: Path) -> None:
    result = run_cli(["-m", "tracking=mlflow", *TINY, "sweep.name=grouped", "sweep.params.guidance_scale=1,2"],
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    client = _store(tmp_path / "runs")
    runs = client.search_runs([client.get_experiment_by_name("grouped").experiment_id])
    parents = [r for r in runs if r.data.tags.get("diffsweep.multirun") == "true"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    jobs = [r for r in runs if r is not parent]
    assert len(jobs) == 2 and parent.data.metrics["jobs"] == 2
    assert {r.data.tags["mlflow.parentRunId"] for r in jobs} == {parent.info.run_id}
    assert sorted(r.data.params["sweep.params.guidance_scale"] for r in jobs) == ["1", "2"]
    assert sorted(r.info.run_name for r in jobs) == ["grouped/v0001", "grouped/v0002"]
    for job in jobs:
        run_dir = Path(job.data.tags["diffsweep.run_dir"])
        assert read_run_json(run_dir)["tracking"]["parent_run_id"] == parent.info.run_id


def test_a_backend_whose_packages_are_missing_is_refused_before_anything_is_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from diffsweep.config import extras
    from diffsweep.errors import ConfigError

    # an environment without the extra: one of the modules it brings cannot be found
    monkeypatch.setitem(extras.TRACKING_MODULES, "mlflow", ("mlflow", "a_module_that_is_not_installed"))
    with pytest.raises(ConfigError, match=r"tracking.backend: mlflow needs a_module_that_is_not_installed, which is "
                                          r"not installed: pip install 'diffsweep\[mlflow\]'"):
        _run(tmp_path / "runs", "tracking=mlflow")
    assert not (tmp_path / "runs").exists()
