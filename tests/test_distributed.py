"""One sweep on several processes: shards, torchrun, submitit job arrays, faults and readers (real processes)."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import compose_config, read_manifest, read_run_json, run_cli
from diffsweep.execution.cache import PipelineCache
from diffsweep.planning.prepare import prepare
from diffsweep.planning.shards import cut_shards, shard_batches
from diffsweep.planning.stages import StagedPlan
from diffsweep.run import distributed as distribute
from diffsweep.run.distributed import WorkerRefused, create_run, work_on_shard
from diffsweep.run.local import run_sweep
from diffsweep.run.sources import source_reader
from diffsweep.store.folder import RunFolder, read_item_lines
from diffsweep.store.records import ShardLayout

# 1 step at the smallest size: each item costs little, and 8 batches of 1 give each shard several
SMALL = ["device=cpu", "sweep.params.num_inference_steps=1", "sweep.params.height=32", "sweep.params.width=32",
         "sweep.grid.prompt=[a fox,a lighthouse]", "sweep.grid.seed=[0,1,2,3]"]
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _chain(child_steps: int = 2) -> list[str]:
    """Text-to-image, then img2img of each image at two strengths: 4 first-stage batches of 1, 2 children each."""
    return ["device=cpu", "sweep.params.num_inference_steps=2", "sweep.params.height=32", "sweep.params.width=32",
            "sweep.grid.prompt=[a fox,a lighthouse]", "sweep.grid.seed=[0,1]", "sweep.batch_size=1",
            "+stages.chain.img2img.source=base",
            "+stages.chain.img2img.builder.pipeline=StableDiffusionImg2ImgPipeline",
            f"+stages.chain.img2img.params.num_inference_steps={child_steps}",
            "+stages.chain.img2img.grid.strength=[0.5,1.0]"]


CHAIN = _chain()


def _env() -> dict[str, str]:
    return {**os.environ, **ONE_THREAD}


def _runs(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(list(args), cwd=cwd, module="diffsweep.cli.runs", env=ONE_THREAD)


def _outputs(run_dir: Path) -> dict[str, tuple[dict[str, Any], bytes]]:
    return {r["item_id"]: (r, (run_dir / r["outputs"][0]).read_bytes()) for r in read_manifest(run_dir)}


# --- cutting the plan -----------------------------------------------------------------------------


def test_shards_are_whole_batches_and_keep_a_builder_on_one_worker(tmp_path: Path) -> None:
    doc = compose_config(["+experiment=sd1_vs_sd2", *SMALL, "sweep.batch_size=2"], tmp_path)
    plan = prepare(doc)
    shards = cut_shards(plan, 2)
    assert shards == cut_shards(plan, 2)  # deterministic
    assert sum(s.planned for s in shards) == plan.total == 16
    owners = [s.builders for s in shards]
    assert [len(b) for b in owners] == [1, 1] and set(owners[0]) != set(owners[1])
    batches = list(plan.batches())
    for shard in shards:
        made = [[item.item_id for item in batch.items] for batch in shard_batches(plan, shard)]
        assert made == [[item.item_id for item in batch.items] for batch in batches[shard.first_batch:shard.stop_batch]]
    # more shards than batches: the extra shards are empty, no batch is split
    many = cut_shards(plan, 12)
    assert sum(s.planned for s in many) == 16 and all(s.planned in (0, 2) for s in many)


# --- torchrun -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def one_and_two_processes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, subprocess.CompletedProcess[str]]:
    """The same sweep by one process (in-process) and by two under torchrun."""
    work = tmp_path_factory.mktemp("torchrun")
    single = run_sweep(compose_config([*SMALL, "sweep.batch_size=1"], work / "single"), out=io.StringIO()).run_dir
    torchrun = Path(sys.executable).parent / "torchrun"
    launched = subprocess.run([str(torchrun), "--nproc-per-node", "2", "-m", "diffsweep", *SMALL,
                               "sweep.batch_size=1", f"output.root={work / 'two'}"], cwd=work, capture_output=True,
                              text=True, timeout=600, env=_env())
    assert launched.returncode == 0, launched.stderr[-4000:]
    return single, Path(launched.stdout.strip().splitlines()[-1]), launched


def test_two_processes_under_torchrun_make_exactly_the_items_of_one(one_and_two_processes: Any) -> None:
    single, two, launched = one_and_two_processes
    assert launched.stdout.strip().splitlines() == [str(two)]  # only rank 0 prints the run folder
    one_items, two_items = _outputs(single), _outputs(two)
    assert one_items.keys() == two_items.keys() and len(one_items) == 8
    for item_id, (record, data) in one_items.items():
        other, other_data = two_items[item_id]
        assert {k: record[k] for k in ("index", "params", "seed", "outputs", "builder_hash", "status")} == \
               {k: other[k] for k in ("index", "params", "seed", "outputs", "builder_hash", "status")}
        assert data == other_data  # the same batch shapes: the same bytes
    assert len(read_manifest(two)) == 8  # each item once, shards merged
    assert not list((two / "shards").glob("*/manifest.jsonl"))


def test_run_json_of_a_distributed_run_merges_every_worker(one_and_two_processes: Any) -> None:
    _, two, _ = one_and_two_processes
    info = read_run_json(two)
    assert info["status"] == "complete" and info["counts"] == {"planned": 8, "done": 8, "failed": 0, "skipped": 0}
    assert info["shards"] == 2 and len(info["workers"]) == 2
    workers = sorted(info["workers"], key=lambda w: w["shard"])
    assert [w["rank"] for w in workers] == [0, 1] and len({w["pid"] for w in workers}) == 2
    assert all(w["host"] == socket.gethostname() and w["device"].startswith("cpu") for w in workers)
    assert all(w["finished"] and w["status"] == "complete" for w in workers)
    assert sum(w["counts"]["generated"] for w in workers) == 8 == info["attempts"][0]["counts"]["generated"]
    assert info["cache"]["loads"] == sum(w["cache"]["loads"] for w in workers) == 2  # each process loads once
    assert info["timings"]["load_seconds"] == pytest.approx(sum(w["timings"]["load_seconds"] for w in workers),
                                                            abs=1e-3)
    assert info["builders"][0]["model_path"] is not None
    import jsonschema

    from diffsweep.config.schema import load_schema

    jsonschema.validate(info, load_schema("run"))
    # a distributed run has its run.log too: the run as a whole, from its plan to the merge of its shards
    log = (two / "run.log").read_text()
    assert "run folder " in log and "planned in 2 shard(s)" in log and "complete: 8 done, 0 failed of 8" in log


def test_show_of_a_finished_distributed_run_lists_its_shards(one_and_two_processes: Any) -> None:
    _, two, _ = one_and_two_processes
    shown = _runs(two.parent, "show", str(two))
    assert shown.returncode == 0, shown.stderr
    lines = [line for line in shown.stdout.splitlines() if line.startswith("shard")]
    assert len(lines) == 3 and all(" finished " in line and " rank " in line for line in lines[:2])
    assert "items/s" in lines[0] and "4 done" in lines[0] and "4 done" in lines[1]
    assert lines[2].startswith("shards   2 in all: 8 done, 0 failed of 8 planned")


@pytest.mark.slow
def test_accelerate_launch_makes_the_items_of_one_process_too(one_and_two_processes: Any, tmp_path: Path) -> None:
    single, _, _ = one_and_two_processes
    accelerate = Path(sys.executable).parent / "accelerate"
    launched = subprocess.run([str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "-m", "diffsweep",
                               *SMALL, "sweep.batch_size=1", f"output.root={tmp_path}"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=600, env=_env())
    assert launched.returncode == 0, launched.stderr[-4000:]
    two = Path(launched.stdout.strip().splitlines()[-1])
    info = read_run_json(two)
    assert info["status"] == "complete" and sorted(w["rank"] for w in info["workers"]) == [0, 1]
    assert {k: v[1] for k, v in _outputs(single).items()} == {k: v[1] for k, v in _outputs(two).items()}


# --- faults -------------------------------------------------------------------------------------------


def _distributed_run(tmp_path: Path, shards: int, *extra: str) -> Path:
    """A run folder as a launcher leaves it before its workers start."""
    plan = prepare(compose_config([*SMALL, "sweep.batch_size=1", *extra], tmp_path / "runs"))
    return create_run(plan, [], shards).path


def _wait_for(condition: Any, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_killed_worker_is_finished_by_resume_and_readers_see_the_run_meanwhile(tmp_path: Path) -> None:
    # items slow enough that the worker is stopped mid-shard, however loaded the machine is
    run_dir = _distributed_run(tmp_path, 2, "sweep.params.num_inference_steps=20")
    manifest = RunFolder(run_dir).shard_manifest(0)
    first = subprocess.Popen([sys.executable, "-m", "diffsweep.cli.runs", "work", str(run_dir), "--shard", "0"],
                             cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: manifest.exists() and manifest.read_bytes().count(b"\n") >= 1)
        os.kill(first.pid, signal.SIGSTOP)  # alive, holding its shard, mid-shard
        committed = {json.loads(line)["item_id"] for line in manifest.read_text().splitlines()}
        assert 0 < len(committed) < 4

        second = _runs(tmp_path, "work", str(run_dir), "--shard", "0")
        assert second.returncode == 3
        assert f"shard 0 of {run_dir} is locked by pid {first.pid} on {socket.gethostname()}" in second.stderr

        os.kill(first.pid, signal.SIGKILL)
    finally:
        first.kill()
        first.wait()
    created = {i: json.loads((run_dir / "items" / Path(o).with_suffix(".json").name).read_text())["created"]
               for i, o in ((r.item_id, r.outputs[0]) for r in RunFolder(run_dir).items().values())}

    # readers on the run in progress: show, list and verify see the dead worker's committed items
    shown = _runs(tmp_path, "show", str(run_dir))
    assert shown.returncode == 0, shown.stderr
    assert f"shard    0   dead        {len(committed):>5} done" in shown.stdout
    assert "shard    1   pending         0 done" in shown.stdout
    listed = _runs(tmp_path, "--root", str(tmp_path / "runs"), "list")
    assert "default/v0001" in listed.stdout and "interrupted" in listed.stdout
    from diffsweep.reports import build as report

    report.write_reports(run_dir)
    viewer_data = (run_dir / "data.js").read_text()
    assert (run_dir / "contact_sheet.png").is_file()
    assert all(r.outputs[0] in viewer_data for r in RunFolder(run_dir).items().values())
    verified = _runs(tmp_path, "verify", str(run_dir))
    assert verified.returncode == 0, verified.stderr
    assert f"verified {len(committed)} item(s): {len(committed)} identical" in verified.stdout

    resumed = _runs(tmp_path, "resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr
    info = read_run_json(run_dir)
    assert info["status"] == "complete" and info["counts"]["done"] == 8
    assert [(a["kind"], a["status"]) for a in info["attempts"]] == [("run", "interrupted"), ("resume", "complete")]
    workers = {w["shard"]: w for w in info["workers"]}
    # exactly the missing items: the killed worker's stay as they were, none is made twice
    assert workers[0]["counts"]["kept"] == len(committed) and workers[0]["counts"]["generated"] == 4 - len(committed)
    assert workers[1]["counts"]["generated"] == 4
    assert info["attempts"][1]["counts"]["generated"] == 8 - len(committed)
    records = read_manifest(run_dir)
    assert len(records) == len({r["item_id"] for r in records}) == 8
    for item_id, stamp in created.items():
        sidecar = next(r for r in records if r["item_id"] == item_id)["outputs"][0]
        assert json.loads((run_dir / Path(sidecar).with_suffix(".json")).read_text())["created"] == stamp


def test_sigterm_ends_a_worker_as_cleanly_as_a_single_process_run(tmp_path: Path) -> None:
    """The one attempt loop turns SIGTERM (Slurm preemption, `kill`) into an orderly interrupt for a worker too: what
    it committed stays, its record says interrupted, and a resume makes exactly the rest."""
    run_dir = _distributed_run(tmp_path, 2)
    run = RunFolder(run_dir)
    worker = subprocess.Popen([sys.executable, "-m", "diffsweep.cli.runs", "work", str(run_dir), "--shard", "0"],
                              cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    manifest = run.shard_manifest(0)
    _wait_for(lambda: manifest.exists() and manifest.read_bytes().count(b"\n") >= 1)
    worker.send_signal(signal.SIGTERM)
    _, stderr = worker.communicate(timeout=120)
    assert worker.returncode == 130, stderr  # as Ctrl-C ends a single-process run
    assert "interrupted" in stderr and "Traceback" not in stderr

    committed = [json.loads(line) for line in manifest.read_text().splitlines()]
    record = run.read_worker(0)
    assert record is not None and record.status == "interrupted" and record.finished is not None
    assert record.counts.generated == len(committed) < 4  # its record counts exactly what it committed
    assert not run.shard_lock(0).is_held() and run.shard_state(0) == "interrupted"
    assert not list(run_dir.rglob("*.tmp"))
    assert all(run.is_intact(r) for r in run.items().values())

    resumed = _runs(tmp_path, "resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr
    info = read_run_json(run_dir)
    assert info["status"] == "complete" and info["counts"]["done"] == 8
    shard_0 = next(w for w in info["workers"] if w["shard"] == 0)
    assert shard_0["counts"]["kept"] == len(committed) and shard_0["counts"]["generated"] == 4 - len(committed)


def test_a_worker_of_another_version_or_config_is_refused_before_it_writes(tmp_path: Path) -> None:
    run_dir = _distributed_run(tmp_path, 2)
    run = RunFolder(run_dir)
    info_text = run.run_json_path.read_text()
    raw = json.loads(info_text)
    raw["versions"]["diffsweep"] = "0.0.9"
    run.run_json_path.write_text(json.dumps(raw))
    with pytest.raises(WorkerRefused, match=r"started by diffsweep 0\.0\.9; this worker is diffsweep"):
        work_on_shard(run_dir, 0)
    assert not run.shard_dir(0).exists() and not (run_dir / "items").exists()

    run.run_json_path.write_text(info_text)
    config = run_dir / "config.yaml"
    config.write_text(config.read_text().replace("a lighthouse", "a lighthouse at noon"))
    refused = _runs(tmp_path, "work", str(run_dir), "--shard", "1")
    assert refused.returncode == 2
    assert "config.yaml is not the config the run started with" in refused.stderr
    assert not run.shard_dir(1).exists() and not (run_dir / "items").exists()


def test_a_shard_that_never_finished_leaves_the_others_and_a_failed_run_that_says_so(tmp_path: Path) -> None:
    """What the submitting command records when every task of its array has ended but one shard's failed."""
    run_dir = _distributed_run(tmp_path, 2)
    run = RunFolder(run_dir)
    assert work_on_shard(run_dir, 0).status == "complete"  # shard 1's task never ran it
    assert distribute.finalize(run) is None  # the run is not finished while a shard is not
    info = distribute.close_unfinished(run)
    assert info.status == "failed" and info.counts.model_dump() == {"planned": 8, "done": 4, "failed": 0, "skipped": 4}
    assert distribute.exit_code(info) == 3
    recorded = read_run_json(run_dir)
    assert recorded["status"] == "failed" and [w["shard"] for w in recorded["workers"]] == [0]
    assert recorded["attempts"][0]["counts"]["generated"] == 4


# --- job arrays (submitit's local executor) ---------------------------------------------------------


def test_a_local_job_array_survives_a_dead_task_and_resume_resubmits_only_its_shard(tmp_path: Path) -> None:
    # output to files: the tasks live on after the submitting command and would hold its pipes open
    with open(tmp_path / "out", "w") as out, open(tmp_path / "err", "w") as err:
        code = subprocess.run([sys.executable, "-m", "diffsweep", *SMALL, "sweep.batch_size=1", "distribute=local",
                               "distribute.tasks=2", "distribute.wait=false"], cwd=tmp_path, env=_env(), stdout=out,
                              stderr=err, timeout=300).returncode
    stdout, stderr = (tmp_path / "out").read_text(), (tmp_path / "err").read_text()
    assert code == 0, stderr
    run_dir = Path(stdout.strip().splitlines()[-1])
    assert run_dir == tmp_path / "runs" / "default" / "v0001"
    assert "submitted local job array" in stderr and "for shard(s) 0-1" in stderr
    # everything a task needs was written before anything was submitted
    assert {"config.yaml", "run.json"} <= {p.name for p in run_dir.iterdir()}
    run = RunFolder(run_dir)
    _wait_for(lambda: run.read_worker(1) is not None)
    os.kill(run.read_worker(1).pid, signal.SIGKILL)  # the task of shard 1 dies; shard 0's goes on
    _wait_for(lambda: (w := run.read_worker(0)) is not None and w.finished is not None)
    assert run.read_worker(0).status == "complete"

    shown = _runs(tmp_path, "show", str(run_dir))
    assert "status   interrupted" in shown.stdout
    assert "shard    0   finished        4 done" in shown.stdout and "shard    1   dead" in shown.stdout

    with open(tmp_path / "out", "w") as out, open(tmp_path / "err", "w") as err:
        code = subprocess.run([sys.executable, "-m", "diffsweep.cli.runs", "resume", str(run_dir)], cwd=tmp_path,
                              env=_env(), stdout=out, stderr=err, timeout=300).returncode
    stderr = (tmp_path / "err").read_text()
    assert code == 0, stderr
    assert "submitted local job array" in stderr and "for shard(s) 1" in stderr
    _wait_for(lambda: read_run_json(run_dir)["status"] != "running")
    info = read_run_json(run_dir)
    assert info["status"] == "complete" and info["counts"]["done"] == 8
    workers = {w["shard"]: w for w in info["workers"]}
    assert (workers[0]["attempt"], workers[0]["kind"]) == (0, "run")
    assert (workers[1]["attempt"], workers[1]["kind"]) == (1, "resume")
    assert workers[0]["counts"]["generated"] == 4 and info["attempts"][1]["counts"]["generated"] == 4 - \
        workers[1]["counts"]["kept"]
    records = read_manifest(run_dir)
    assert len(records) == len({r["item_id"] for r in records}) == 8


# --- chains of stages: a shard keeps a parent with its children ---------------------------------------


@pytest.fixture(scope="module")
def one_process_chain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The chain run by one process: what every distributed run of it must equal."""
    work = tmp_path_factory.mktemp("chain")
    # a process of its own with the workers' thread count: kernels on other thread counts may round differently
    result = subprocess.run([sys.executable, "-m", "diffsweep", *CHAIN, f"output.root={work / 'single'}"], cwd=work,
                            capture_output=True, text=True, timeout=300, env=_env())
    assert result.returncode == 0, result.stderr[-4000:]
    return Path(result.stdout.strip().splitlines()[-1])


def _shard_of_each_item(plan: StagedPlan, shards: list[Any]) -> dict[str, int]:
    """Item id -> the shard that makes it; each item in exactly one shard, whose batches are the one-process run's
    batches of its items, in the same order."""
    held: dict[str, int] = {}
    for k, shard in enumerate(shards):
        made = [[item.item_id for item in batch.items] for batch in shard_batches(plan, shard)]
        ids = {item_id for batch in made for item_id in batch}
        assert made == [[item.item_id for item in batch.items] for batch in plan.batches()
                        if batch.items[0].item_id in ids]
        for item_id in ids:
            assert held.setdefault(item_id, k) == k
    assert sum(shard.planned for shard in shards) == len(held) == plan.size
    return held


def test_a_chain_is_cut_over_its_root_batches_with_every_child_in_its_parents_shard(
        tmp_path: Path, one_process_chain: Path) -> None:
    for order in ("depth", "breadth"):
        plan = prepare(compose_config([*CHAIN, f"+stages.order={order}"], tmp_path))
        assert isinstance(plan, StagedPlan) and plan.order == order
        shards = cut_shards(plan, 2)
        assert shards == cut_shards(plan, 2)  # deterministic
        # balanced by root batches: two first-stage batches each, with their four children
        assert [(s.first_batch, s.stop_batch, s.planned) for s in shards] == [(0, 2, 6), (2, 4, 6)]
        assert [s.stages for s in shards] == [{"base": 2, "img2img": 4}] * 2
        held = _shard_of_each_item(plan, shards)
        assert all(held[item.item_id] == held[item.parent] for item in plan.items() if item.parent)
    layout = ShardLayout.of(shards).to_json()
    assert layout["cut"] == "root_batches" and layout["shards"][1]["stages"] == {"base": 2, "img2img": 4}
    plain = ShardLayout.of(cut_shards(prepare(compose_config(SMALL, tmp_path)), 2)).to_json()
    assert "cut" not in plain and all("stages" not in shard for shard in plain["shards"])  # as it was before chains

    # grandchildren stay with their grandparent; the items of a stage fed from another run folder (their parents are
    # not in the plan) are roots of their own, cut with the rest
    fed = prepare(compose_config([*CHAIN, "+stages.chain.polish.source=img2img",
                                  "+stages.chain.polish.builder.pipeline=StableDiffusionImg2ImgPipeline",
                                  f"+stages.chain.again.source={{run: {one_process_chain}}}",
                                  "+stages.chain.again.builder.pipeline=StableDiffusionImg2ImgPipeline",
                                  "+stages.chain.again.params.strength=0.75"], tmp_path),
                 read_source=source_reader())
    assert isinstance(fed, StagedPlan)
    roots = list(fed.root_batches())
    assert [batch.stage for batch in roots] == ["base"] * 4 + ["again"] * 8
    root_of = {item.item_id: ordinal for ordinal, batch in enumerate(roots) for item in batch.items}
    for count in (2, 3, 5):
        shards = cut_shards(fed, count)
        assert sum(s.stop_batch - s.first_batch for s in shards) == len(roots)
        held = _shard_of_each_item(fed, shards)
        for item in fed.items():
            shard = shards[held[item.item_id]]
            if item.item_id in root_of:  # a root is in the shard of its root batch (the source run's parents are
                # not this plan's items, though the source ran this chain and so its ids are those of this plan's)
                assert shard.first_batch <= root_of[item.item_id] < shard.stop_batch
            else:
                assert held[item.item_id] == held[item.parent or ""]
        assert [sum(s.stages.values()) for s in shards if s.stages] == [s.planned for s in shards]


def _assert_made_as_by_one_process(single: Path, run_dir: Path) -> list[dict[str, Any]]:
    """The distributed chain equals the one-process run: items, lineage, bytes, per-stage counts; each worker made
    exactly its shard's items of each stage, a child never waited for its parent, each builder loaded at most once
    per worker. Returns the workers."""
    fields = ("index", "item_id", "stage", "parent", "params", "seed", "outputs", "builder_hash", "status")
    one, many = _outputs(single), _outputs(run_dir)
    assert one.keys() == many.keys() and len(one) == 12
    for item_id, (record, data) in one.items():
        other, other_data = many[item_id]
        assert {k: record.get(k) for k in fields} == {k: other.get(k) for k in fields}
        assert data == other_data
    info, alone = read_run_json(run_dir), read_run_json(single)
    assert info["status"] == "complete" and info["counts"] == alone["counts"]
    assert [(s["name"], s["counts"]) for s in info["stages"]] == [(s["name"], s["counts"]) for s in alone["stages"]]
    assert sum(s["counts"]["done"] for s in info["stages"]) == info["counts"]["done"] == 12
    layout = RunFolder(run_dir).read_layout()
    assert layout is not None and layout.cut == "root_batches" and layout.count == 2
    workers = sorted(info["workers"], key=lambda w: w["shard"])
    for worker in workers:
        stages = worker["stages"]
        assert {name: times["generated"] for name, times in stages.items()} == layout.shards[worker["shard"]].stages
        assert all(times["waiting"] == 0 and times["loads"] <= 1 for times in stages.values())
    for stage in info["stages"]:  # run.json's loads per stage: every worker's
        assert stage["loads"] == sum(w["stages"][stage["name"]]["loads"] for w in workers)
    # the layout keeps each child in its parent's shard, the one its worker made
    plan = prepare(compose_config(CHAIN, run_dir.parent))
    assert isinstance(plan, StagedPlan)
    held = _shard_of_each_item(plan, layout.shards)
    assert all(held[r["item_id"]] == held[r["parent"]] for r, _ in many.values() if r.get("parent"))
    import jsonschema

    from diffsweep.config.schema import load_schema

    jsonschema.validate(info, load_schema("run"))
    jsonschema.validate(json.loads((run_dir / "shards" / "layout.json").read_text()), load_schema("layout"))
    viewer_data = (run_dir / "data.js").read_text()
    assert all(r["outputs"][0] in viewer_data for r, _ in many.values())
    return workers


def test_a_chain_on_two_torchrun_processes_makes_the_items_of_one(one_process_chain: Path, tmp_path: Path) -> None:
    torchrun = Path(sys.executable).parent / "torchrun"
    launched = subprocess.run([str(torchrun), "--nproc-per-node", "2", "-m", "diffsweep", *CHAIN,
                               f"output.root={tmp_path}"], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                              env=_env())
    assert launched.returncode == 0, launched.stderr[-4000:]
    two = Path(launched.stdout.strip().splitlines()[-1])
    workers = _assert_made_as_by_one_process(one_process_chain, two)
    assert [w["rank"] for w in workers] == [0, 1]
    # each child regenerated from its parent's saved output, on the workers' thread count
    verified = subprocess.run([sys.executable, "-m", "diffsweep.cli.runs", "verify", str(two)], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300, env=_env())
    assert verified.returncode == 0 and "verified 12 item(s): 12 identical" in verified.stdout, verified


def test_a_chain_as_a_local_job_array_makes_the_items_of_one(one_process_chain: Path, tmp_path: Path) -> None:
    # output to files: the tasks are processes of their own and would hold the command's pipes open
    with open(tmp_path / "out", "w") as out, open(tmp_path / "err", "w") as err:
        code = subprocess.run([sys.executable, "-m", "diffsweep", *CHAIN, "distribute=local", "distribute.tasks=2"],
                              cwd=tmp_path, env=_env(), stdout=out, stderr=err, timeout=300).returncode
    assert code == 0, (tmp_path / "err").read_text()
    run_dir = Path((tmp_path / "out").read_text().strip().splitlines()[-1])
    workers = _assert_made_as_by_one_process(one_process_chain, run_dir)
    assert [(w["rank"], w["kind"]) for w in workers] == [(None, "run")] * 2


def test_resume_of_a_chain_with_an_unfinished_shard_makes_only_its_missing_items(tmp_path: Path) -> None:
    # children of 20 steps: the worker is stopped between a child and the next
    plan = prepare(compose_config([*_chain(child_steps=20), "output.root=runs"], tmp_path))
    run = RunFolder(create_run(plan, [], 2).path)
    assert work_on_shard(run.path, 1, cache=PipelineCache()).status == "complete"
    # the shard's own manifest: its two first-stage items and their four children, made by its worker
    finished = list(read_item_lines(run.shard_manifest(1)))
    assert sorted(r.stage or "" for r in finished) == ["base"] * 2 + ["img2img"] * 4
    assert {r.parent for r in finished if r.parent} == {r.item_id for r in finished if r.stage == "base"}

    manifest = run.shard_manifest(0)
    worker = subprocess.Popen([sys.executable, "-m", "diffsweep.cli.runs", "work", str(run.path), "--shard", "0"],
                              cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: manifest.exists() and manifest.read_bytes().count(b"\n") >= 2)
        os.kill(worker.pid, signal.SIGKILL)  # a parent and a child committed, the rest not
    finally:
        worker.kill()
        worker.communicate()
    committed = {r.item_id: r for r in read_item_lines(manifest)}
    assert 2 <= len(committed) < 6 and any(r.stage == "base" for r in committed.values())
    created = {r.item_id: json.loads((run.path / Path(r.outputs[0]).with_suffix(".json")).read_text())["created"]
               for r in (*finished, *committed.values())}

    resumed = _runs(tmp_path, "resume", str(run.path))
    assert resumed.returncode == 0, resumed.stderr
    assert "shard(s) 0 of 2 unfinished" in resumed.stderr
    info = read_run_json(run.path)
    assert info["status"] == "complete" and info["counts"]["done"] == 12
    assert [(a["kind"], a["status"]) for a in info["attempts"]] == [("run", "interrupted"), ("resume", "complete")]
    assert info["attempts"][1]["counts"]["generated"] == 6 - len(committed)
    assert [(s["name"], s["counts"]["done"]) for s in info["stages"]] == [("base", 4), ("img2img", 8)]
    workers = {w["shard"]: w for w in info["workers"]}
    assert (workers[1]["attempt"], workers[1]["counts"]["generated"]) == (0, 6)  # left as it was
    assert (workers[0]["attempt"], workers[0]["counts"]["kept"]) == (1, len(committed))
    assert sum(t["generated"] for t in workers[0]["stages"].values()) == 6 - len(committed)
    assert all(t["waiting"] == 0 for t in workers[0]["stages"].values())
    records = read_manifest(run.path)
    assert len(records) == len({r["item_id"] for r in records}) == 12
    for record in records:  # nothing made twice: what was committed before the resume is as it was
        if record["item_id"] in created:
            sidecar = run.path / Path(record["outputs"][0]).with_suffix(".json")
            assert json.loads(sidecar.read_text())["created"] == created[record["item_id"]]


# --- single items ---------------------------------------------------------------------------------


def test_a_rerun_of_single_items_of_a_job_array_config_runs_here_in_one_process(tmp_path: Path) -> None:
    doc = compose_config([*SMALL, "distribute=local", "distribute.tasks=2"], tmp_path / "runs")
    result = run_sweep(doc, out=io.StringIO(), only=[3])
    assert result.status == "complete"
    (record,) = read_manifest(result.run_dir)
    assert record["index"] == 3
    assert not (result.run_dir / "shards").exists() and "workers" not in read_run_json(result.run_dir)
    saved = (result.run_dir / "config.yaml").read_text(encoding="utf-8")
    assert "backend: none" in saved  # the record says how it was made


def test_a_rerun_of_single_items_is_refused_under_a_launcher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from diffsweep.errors import ConfigError

    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it for each of two processes
    with pytest.raises(ConfigError, match="a rerun of single items runs in one process"):
        run_sweep(compose_config(SMALL, tmp_path / "runs"), out=io.StringIO(), only=[0])
    assert not (tmp_path / "runs").exists()


# --- GPUs of local job arrays ---------------------------------------------------------------------


def test_local_tasks_get_their_own_gpus_in_turn() -> None:
    from diffsweep.run.submit import local_gpus

    assert local_gpus([0, 1, 2, 3], 1, 4) == {0: (0,), 1: (1,), 2: (2,), 3: (3,)}
    assert local_gpus([0, 1, 2], 2, 4) == {0: (0, 1), 1: (2, 3), 2: (0, 1)}  # a third task shares the first pair
    assert local_gpus([5], 1, 4) == {5: (1,)}  # a resubmitted shard gets the GPUs it had
    assert local_gpus([0, 1], 0, 8) == {0: (), 1: ()}  # on the CPU


def test_local_tasks_asking_for_gpus_the_machine_lacks_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    from diffsweep.errors import ConfigError
    from diffsweep.run.submit import cuda_gpus

    wanted = cuda_gpus() + 1
    doc = compose_config([*SMALL, "distribute=local", f"distribute.gpus_per_task={wanted}"], tmp_path / "runs")
    with pytest.raises(ConfigError, match=rf"distribute.gpus_per_task: {wanted} GPU\(s\) per task, but this machine "
                                          rf"has {wanted - 1} CUDA GPU\(s\)"):
        run_sweep(doc, out=io.StringIO())
    assert not (tmp_path / "runs").exists()


def test_a_slurm_job_array_without_slurm_is_refused_before_anything_is_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from diffsweep.errors import ConfigError

    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm-here"))  # no `sbatch` anywhere on it
    doc = compose_config([*SMALL, "distribute=slurm"], tmp_path / "runs")
    with pytest.raises(ConfigError, match=r"distribute: distribute=slurm submits with Slurm's `sbatch`, which is not "
                                          r"on PATH here"):
        run_sweep(doc, out=io.StringIO())
    assert not (tmp_path / "runs").exists()
