"""A run folder is data: tampered folders and bad values, tried the way a hostile user would.

Each case asserts the exact outcome: a refusal with its key and exit code and nothing written, or a repair that keeps
every earlier item, and never a marker file from code that must not run. The cases are grouped as the trust contract
is (DESIGN.md, "Trust"): code in a folder, memory sized by a line, links, writes into folders that are not runs,
damage, values that escape validation, counts.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image

from conftest import compose_config, read_manifest, read_run_json, run_cli
from diffsweep.errors import EXIT_CONFIG, EXIT_FAILED_ITEMS, ConfigError
from diffsweep.run.local import run_sweep

SMALL = ["device=cpu", "sweep.params.num_inference_steps=1", "sweep.params.height=32", "sweep.params.width=32",
         "sweep.grid.seed=[0,1]", "sweep.batch_size=1"]  # 2 prompts x 2 seeds: 4 items, each made alone
MARKER_ENV = "DIFFSWEEP_TEST_MARKER"


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real run, copied by each case before it tampers with it."""
    root = tmp_path_factory.mktemp("made") / "runs"
    return run_sweep(compose_config(SMALL, root), out=io.StringIO()).run_dir


@pytest.fixture
def run_dir(made: Path, tmp_path: Path) -> Path:
    target = tmp_path / "runs" / "default" / "v0001"
    shutil.copytree(made, target)
    return target


def runs(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(list(args), cwd=cwd, module="diffsweep.cli.runs", env=env)


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def edit_config(run_dir: Path, change: Any) -> None:
    path = run_dir / "config.yaml"
    doc = yaml.safe_load(path.read_text())
    change(doc)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def code_module(tmp_path: Path) -> tuple[str, dict[str, str], Path]:
    """A module that leaves a marker file when it is imported: (its name, the environment that finds it, the
    marker). Each test gets its own name, so an import in an earlier test cannot hide one here."""
    name = f"folder_code_{tmp_path.name.replace('-', '_')}"
    (tmp_path / "code").mkdir(exist_ok=True)
    marker = tmp_path / "RAN"
    (tmp_path / "code" / f"{name}.py").write_text(
        "import os, pathlib\n"
        f"pathlib.Path(os.environ['{MARKER_ENV}']).write_text('imported')\n"
        "from hydra.experimental.callback import Callback\n"
        "class Copy(Callback):\n"
        "    pass\n")
    paths = [str(tmp_path / "code"), str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH", "")]
    return name, {"PYTHONPATH": os.pathsep.join(filter(None, paths)), MARKER_ENV: str(marker)}, marker


def versions_under(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "default").iterdir())


# --- nothing in a run folder is code -----------------------------------------------------------------


def test_hydra_callbacks_in_a_folder_do_not_run_on_the_config_path_rerun(run_dir: Path, tmp_path: Path) -> None:
    name, env, marker = code_module(tmp_path)
    edit_config(run_dir, lambda d: d["hydra"]["callbacks"].update(copy={"_target_": f"{name}.Copy"}))
    result = run_cli(["--config-path", str(run_dir), "--config-name", "config"], tmp_path, env=env)
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert "hydra.callbacks.copy._target_: instantiates" in result.stderr and "--trust" in result.stderr
    assert not marker.exists() and versions_under(tmp_path / "runs") == ["v0001"]


def test_a_trusted_folder_runs_its_callbacks_and_the_run_records_the_trust(run_dir: Path, tmp_path: Path) -> None:
    name, env, marker = code_module(tmp_path)
    edit_config(run_dir, lambda d: d["hydra"]["callbacks"].update(copy={"_target_": f"{name}.Copy"}))
    result = run_cli(["--trust", "--config-path", str(run_dir), "--config-name", "config",
                      f"output.root={tmp_path / 'runs'}"], tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert marker.exists()  # the user said so: the folder's own Hydra settings were composed
    new = tmp_path / "runs" / "default" / "v0002"
    assert read_run_json(new)["attempts"][0]["trusted"] == ["hydra.callbacks.copy._target_"]


def test_a_clean_folder_reruns_through_its_config_path_as_data(run_dir: Path, tmp_path: Path) -> None:
    result = run_cli(["--config-path", str(run_dir), "--config-name", "config", f"output.root={tmp_path / 'runs'}"],
                     tmp_path)
    assert result.returncode == 0, result.stderr
    new = tmp_path / "runs" / "default" / "v0002"
    assert {r["item_id"] for r in read_manifest(new)} == {r["item_id"] for r in read_manifest(run_dir)}


def test_an_earlier_release_folder_reruns_through_its_config_path(tmp_path: Path) -> None:
    """Its config.yaml names diffsweep's own callbacks under their earlier module path: still diffsweep's."""
    folder = tmp_path / "runs" / "old_single" / "v0001"
    shutil.copytree(Path(__file__).parent / "data" / "earlier_release" / "old_single" / "v0001", folder)
    result = run_cli(["--config-path", str(folder), "--config-name", "config", f"output.root={tmp_path / 'runs'}"],
                     tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "runs" / "old_single" / "v0002" / "run.json").is_file()


@pytest.mark.parametrize(("command", "change", "key"), [
    ("resume", lambda d: d["builder"].update(trust_remote_code=True), "builder.trust_remote_code"),
    ("verify", lambda d: d["builder"].update(trust_remote_code=True), "builder.trust_remote_code"),
    ("rerun", lambda d: d["builder"].update(trust_remote_code=True), "builder.trust_remote_code"),
    ("resume", lambda d: d["sweep"]["grid"].update({"builder.trust_remote_code": [False, True]}),
     "sweep.grid.builder.trust_remote_code"),
    ("resume", lambda d: d.update(allowed_modules=["diffusers", "diffsweep", "os"]), "allowed_modules"),
    ("resume", lambda d: d["builder"].update(scheduler={"_target_": "os.system", "name": "x"}),
     "builder.scheduler._target_"),
    ("resume", lambda d: d["defaults"].insert(0, {"override hydra/launcher": "joblib"}), "defaults[0]"),
    ("rerun", lambda d: d["hydra"]["callbacks"].update(copy={"_target_": "shutil.copy"}),
     "hydra.callbacks.copy._target_"),
])
def test_code_a_folder_names_is_refused_by_every_command_that_reads_it(run_dir: Path, tmp_path: Path, command: str,
                                                                       change: Any, key: str) -> None:
    edit_config(run_dir, change)
    before = digests(run_dir)
    result = runs(tmp_path, command, str(run_dir))
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert f"{key}: " in result.stderr and "--trust" in result.stderr
    assert digests(run_dir) == before and versions_under(tmp_path / "runs") == ["v0001"]


def test_score_imports_no_metric_module_of_an_untrusted_folder(run_dir: Path, tmp_path: Path) -> None:
    name, env, marker = code_module(tmp_path)
    edit_config(run_dir, lambda d: (d.update(allowed_modules=["diffusers", "diffsweep", name]),
                                    d["score"].update(metrics=[f"{name}.Metric"])))
    result = runs(tmp_path, "score", str(run_dir), env=env)
    assert result.returncode == EXIT_CONFIG and "allowed_modules: lets" in result.stderr
    assert not marker.exists() and not (run_dir / "scores.jsonl").exists()


PLUGIN_SITE = Path(__file__).parent / "data" / "entry_point_provider"


@pytest.mark.parametrize("command", [["viewer"], ["sheet"], ["show"], ["score", "--metric", "sharpness"],
                                     ["diff", "A", "B"]])
def test_read_only_commands_import_no_provider_plugin_or_pipeline(run_dir: Path, tmp_path: Path,
                                                                 command: list[str]) -> None:
    """The entry-point plugin of the provider tests is installed; a read-only command must load no provider (neither
    it nor a built-in one) and no pipeline (diffusers is not imported)."""
    args = [command[0], *(str(run_dir) if a in ("A", "B") else a for a in command[1:])]
    if command[0] != "diff":
        args.insert(1, str(run_dir))
    env = {"PYTHONPATH": os.pathsep.join([str(PLUGIN_SITE), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "diffsweep.cli.runs", *args], cwd=tmp_path,
                            capture_output=True, text=True, env={**os.environ, **env}, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time")}
    loaded = {m for m in imported if m.startswith(("lab_diffusion", "diffsweep.providers.", "diffusers"))}
    assert loaded <= {"diffsweep.providers.base"}  # the provider base class's module, not a provider


# --- no reader sizes anything from a value in a file ---------------------------------------------------


def _far_line(run_dir: Path, index: int = 10**12) -> dict[str, Any]:
    line = {**read_manifest(run_dir)[0], "index": index, "item_id": "f" * 64}
    with open(run_dir / "manifest.jsonl", "a") as handle:
        handle.write(json.dumps(line) + "\n")
    return line


@pytest.mark.parametrize("command", ["viewer", "sheet"])
def test_a_line_far_outside_the_grid_is_named_and_left_out_by_the_reports(run_dir: Path, tmp_path: Path,
                                                                          command: str) -> None:
    _far_line(run_dir)
    result = runs(tmp_path, command, str(run_dir))
    assert result.returncode == 0, result.stderr
    assert "1 manifest line(s) do not fit the run's grid of 4 item(s) (#1000000000000 ffffffffffff)" in result.stderr
    if command == "viewer":
        data = json.loads((run_dir / "data.js").read_text().removeprefix("window.DIFFSWEEP_RUN = ").rstrip(";\n"))
        assert len(data["items"]) == 4


def test_a_resume_ignores_and_keeps_aside_a_line_the_plan_does_not_have(run_dir: Path, tmp_path: Path) -> None:
    line = _far_line(run_dir)
    result = runs(tmp_path, "resume", str(run_dir))
    assert result.returncode == 0, result.stderr
    info = read_run_json(run_dir)
    assert info["counts"] == {"planned": 4, "done": 4, "failed": 0, "skipped": 0}
    assert [r["item_id"] for r in read_manifest(run_dir)] == [r["item_id"] for r in read_manifest(run_dir)][:4]
    assert len(read_manifest(run_dir)) == 4
    rejected = [json.loads(x) for x in (run_dir / "manifest.rejected.jsonl").read_text().splitlines()]
    assert [r["item_id"] for r in rejected] == [line["item_id"]] and "kept in" in result.stderr


def test_a_grid_range_of_a_trillion_values_is_not_laid_out(run_dir: Path, tmp_path: Path) -> None:
    edit_config(run_dir, lambda d: d["sweep"]["grid"].update(seed={"start": 0, "stop": 10**12}))
    result = runs(tmp_path, "viewer", str(run_dir))
    assert result.returncode == 0, result.stderr
    data = json.loads((run_dir / "data.js").read_text().removeprefix("window.DIFFSWEEP_RUN = ").rstrip(";\n"))
    assert len(data["items"]) == 4 and [a["name"] for a in data["axes"]] == ["index"]


# --- links: output paths are files in items/, nothing else --------------------------------------------


@pytest.mark.parametrize("output", ["javascript:alert(1)", "items/../../outside.png", "/etc/passwd", "items/..",
                                    "https://example.com/x.png", "items/a/b.png"])
def test_an_output_that_is_not_a_file_in_items_is_not_read_nor_linked(run_dir: Path, tmp_path: Path,
                                                                       output: str) -> None:
    lines = read_manifest(run_dir)
    lines[0]["outputs"] = [output]
    (run_dir / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    result = runs(tmp_path, "viewer", str(run_dir))
    assert result.returncode == 0, result.stderr
    data_js = (run_dir / "data.js").read_text()
    assert output.replace("/", "\\/") not in data_js and output not in data_js
    item = next(i for i in json.loads(data_js.removeprefix("window.DIFFSWEEP_RUN = ").rstrip(";\n"))["items"]
                if i["index"] == lines[0]["index"])
    assert item["status"] == "missing" and item["outputs"] == []


def test_an_output_in_items_that_links_out_of_the_folder_is_not_drawn_nor_scored(run_dir: Path,
                                                                                 tmp_path: Path) -> None:
    from diffsweep.reports.sheets import tile
    from diffsweep.store.folder import RunFolder

    outside = tmp_path / "outside.png"
    Image.new("RGB", (64, 64), (255, 0, 0)).save(outside)
    folder = RunFolder(run_dir)
    record = min(folder.items().values(), key=lambda r: r.index)
    output = run_dir / record.outputs[0]
    output.unlink()
    output.symlink_to(outside)
    assert tile(run_dir, record) == "not a file"
    assert folder.damage(record) == f"{record.outputs[0]} is not a regular file"  # so score, diff and verify name it


# --- writes only where they belong ---------------------------------------------------------------------


@pytest.mark.parametrize("command", [["viewer"], ["sheet"], ["score", "--metric", "sharpness"], ["resume"]])
@pytest.mark.parametrize("keep", [("config.yaml",), ("config.yaml", "run.json"), ("run.json", "manifest.jsonl")])
def test_a_folder_that_is_not_a_run_is_refused_and_nothing_is_written(run_dir: Path, tmp_path: Path,
                                                                      command: list[str], keep: tuple[str, ...]) -> None:
    folder = tmp_path / "not_a_run"
    folder.mkdir()
    for name in keep:
        shutil.copy(run_dir / name, folder / name)
    before = digests(folder)
    result = runs(tmp_path, command[0], str(folder), *command[1:])
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert "is not a diffsweep run folder" in result.stderr and digests(folder) == before


def test_a_run_json_of_a_newer_schema_is_refused_and_kept(run_dir: Path, tmp_path: Path) -> None:
    info = read_run_json(run_dir)
    (run_dir / "run.json").write_text(json.dumps({**info, "schema_version": 3}))
    before = digests(run_dir)
    for command in ("viewer", "resume"):
        result = runs(tmp_path, command, str(run_dir))
        assert result.returncode == EXIT_CONFIG and "written by a newer diffsweep" in result.stderr, result.stderr
    assert digests(run_dir) == before


# --- damage is seen -----------------------------------------------------------------------------------


def _first_output(run_dir: Path) -> tuple[dict[str, Any], Path]:
    record = read_manifest(run_dir)[1]
    return record, run_dir / record["outputs"][0]


@pytest.mark.parametrize("damage", ["truncated", "altered", "missing", "replaced by a folder"])
def test_verify_names_an_output_that_is_not_as_committed_and_resume_remakes_it(run_dir: Path, tmp_path: Path,
                                                                               damage: str) -> None:
    record, output = _first_output(run_dir)
    original = output.read_bytes()
    if damage == "truncated":
        output.write_bytes(original[: len(original) // 2])
    elif damage == "altered":  # same size, one byte flipped inside the pixel data
        flipped = bytearray(original)
        flipped[len(flipped) // 2] ^= 0xFF
        output.write_bytes(bytes(flipped))
    elif damage == "missing":
        output.unlink()
    else:
        output.unlink()
        output.mkdir()
    verified = runs(tmp_path, "verify", str(run_dir))
    assert verified.returncode == EXIT_FAILED_ITEMS, verified.stderr
    assert f"item {record['index']} ({record['item_id']}): {record['outputs'][0]}" in verified.stderr
    if damage == "replaced by a folder":
        output.rmdir()
    resumed = runs(tmp_path, "resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr
    assert output.read_bytes() == original  # made again, the same bytes
    assert read_run_json(run_dir)["attempts"][-1]["counts"]["generated"] == 1


def test_score_and_diff_name_an_item_whose_output_is_cut(run_dir: Path, tmp_path: Path) -> None:
    twin = tmp_path / "runs" / "default" / "v0002"
    shutil.copytree(run_dir, twin)
    record, output = _first_output(run_dir)
    output.write_bytes(output.read_bytes()[:100])
    scored = runs(tmp_path, "score", str(run_dir), "--metric", "sharpness")
    assert scored.returncode == EXIT_FAILED_ITEMS and f"item {record['item_id']}: {record['outputs'][0]}" in \
        scored.stderr
    diffed = runs(tmp_path, "diff", str(run_dir), str(twin))
    assert diffed.returncode == EXIT_FAILED_ITEMS
    assert f"A: item {record['item_id']}: {record['outputs'][0]} has 100 bytes" in diffed.stdout


@pytest.mark.parametrize("command", ["resume", "verify"])
def test_an_edited_config_is_refused_naming_what_changed(run_dir: Path, tmp_path: Path, command: str) -> None:
    edit_config(run_dir, lambda d: d["sweep"]["params"].update(guidance_scale=3.0))
    before = digests(run_dir)
    result = runs(tmp_path, command, str(run_dir))
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert "is not the config this run started with (changed: sweep.params.guidance_scale)" in result.stderr
    assert digests(run_dir) == before


def test_a_rerun_of_items_of_an_edited_config_is_refused(run_dir: Path, tmp_path: Path) -> None:
    edit_config(run_dir, lambda d: d["sweep"]["grid"].update(seed=[5, 6]))
    result = runs(tmp_path, "rerun", str(run_dir), "--index", "0")
    assert result.returncode == EXIT_CONFIG and "changed: sweep.grid.seed" in result.stderr
    assert versions_under(tmp_path / "runs") == ["v0001"]


def test_verify_of_a_run_with_nothing_to_verify_fails(run_dir: Path, tmp_path: Path) -> None:
    lines = [{**r, "status": "failed", "outputs": [], "error": "RuntimeError: x"} for r in read_manifest(run_dir)]
    for record in lines:
        record.pop("files", None)
    (run_dir / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    result = runs(tmp_path, "verify", str(run_dir))
    assert result.returncode == EXIT_FAILED_ITEMS and "nothing to verify" in result.stdout


def test_an_unreadable_run_json_is_kept_aside_named_and_rebuilt(run_dir: Path, tmp_path: Path) -> None:
    torn = (run_dir / "run.json").read_bytes()[:200]
    (run_dir / "run.json").write_bytes(torn)
    items = {p.name: p.read_bytes() for p in (run_dir / "items").iterdir()}
    result = runs(tmp_path, "resume", str(run_dir))
    assert result.returncode == 0, result.stderr
    (aside,) = run_dir.glob("run.json.unreadable-*")
    assert aside.read_bytes() == torn and f"it is kept as {aside}" in result.stderr
    assert read_run_json(run_dir)["counts"] == {"planned": 4, "done": 4, "failed": 0, "skipped": 0}
    assert {p.name: p.read_bytes() for p in (run_dir / "items").iterdir()} == items  # every earlier item intact


# --- values that escape validation are named -------------------------------------------------------------


IMG2IMG = ["device=cpu", "sweep.params.num_inference_steps=1", "sweep.grid.seed=[0]",
           "builder.pipeline=StableDiffusionImg2ImgPipeline", "~generation.height", "~generation.width"]


def _refused(tmp_path: Path, *overrides: str, base: list[str] = SMALL) -> str:
    result = run_cli([*base, f"output.root={tmp_path / 'runs'}", *overrides], tmp_path)
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert not (tmp_path / "runs").exists()
    return result.stderr


@pytest.mark.parametrize(("override", "expected"), [
    ("sweep.params.guidance_scale=nan", "sweep.params.guidance_scale: expected a finite number, got nan"),
    ("+sweep.grid.guidance_scale=[1.5,inf]", "sweep.grid.guidance_scale[1]: expected a finite number, got inf"),
    ("+sweep.grid.guidance_scale={start: 1, stop: inf}", "sweep.grid.guidance_scale.stop: expected a finite number"),
    ("sweep.name='folder\n'", "sweep.name: expected a folder name"),
    ("device='cpu\n'", "device: expected auto, cpu, cuda, cuda:N or mps"),
])
def test_a_bad_value_is_refused_with_its_key(tmp_path: Path, override: str, expected: str) -> None:
    assert expected in _refused(tmp_path, override)


def test_text_holding_a_nul_is_refused_with_its_key(tmp_path: Path) -> None:
    doc = compose_config(SMALL, tmp_path / "runs")  # from a YAML file, say: a command line cannot carry a NUL
    doc["sweep"]["params"]["negative_prompt"] = "blurry\0, watermark"
    with pytest.raises(ConfigError, match=r"sweep.params.negative_prompt: holds a NUL character"):
        run_sweep(doc, out=io.StringIO())
    assert not (tmp_path / "runs").exists()


def test_a_prompts_file_is_split_on_line_ends_only_and_refuses_a_nul(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a fox\u2028in snow\nthe sea\x0cat night\r\na lighthouse\n", encoding="utf-8")
    from_file = ["device=cpu", "sweep=prompts_file", "sweep.grid.prompt.file=prompts.txt"]
    result = run_cli([*from_file, f"output.root={tmp_path / 'runs'}", "dry_run=true"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "dry run: 9 items" in result.stdout  # 3 prompts x 3 seeds: U+2028 and a form feed are text
    prompts.write_bytes(b"a fox\n" * 500 + b"the sea\0\n")
    stderr = _refused(tmp_path, base=from_file)
    assert "is a binary file, not UTF-8 text with one value per line (a NUL byte on line 501)" in stderr


def test_an_image_that_states_too_many_pixels_is_refused_with_its_key(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(bomb)  # a few kB on disk, 400 megapixels decoded
    stderr = _refused(tmp_path, f"+sweep.params.image={bomb}", base=IMG2IMG)
    assert "sweep.params.image: input file" in stderr and "more pixels than the 67,108,864 (8192x8192)" in stderr


def test_a_fifo_given_as_an_image_is_named_as_not_a_regular_file(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    stderr = _refused(tmp_path, f"+sweep.params.image={fifo}", base=IMG2IMG)
    assert "is not a regular file (a pipe, socket or device)" in stderr


@pytest.mark.parametrize("weight_name", ["../outside.safetensors", "/etc/passwd", "link.safetensors"])
def test_a_lora_weight_name_must_stay_inside_its_source(tmp_path: Path, weight_name: str) -> None:
    folder = tmp_path / "adapter"
    folder.mkdir()
    (tmp_path / "outside.safetensors").write_bytes(b"x")
    (folder / "link.safetensors").symlink_to(tmp_path / "outside.safetensors")
    stderr = _refused(tmp_path, f"+builder.loras=[{{name:style,source:'{folder}',weight_name:'{weight_name}'}}]")
    assert "builder.loras[0].source: weight_name" in stderr


# --- counts stay true ------------------------------------------------------------------------------------


def test_a_killed_run_is_recounted_from_its_manifest_when_resumed(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    slow = [*SMALL, "sweep.params.num_inference_steps=8", "sweep.batch_size=1", "sweep.grid.seed=[0,1,2,3]",
            f"output.root={root}"]
    process = subprocess.Popen([sys.executable, "-m", "diffsweep", *slow], cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    manifest = root / "default" / "v0001" / "manifest.jsonl"
    deadline = time.monotonic() + 300
    while not (manifest.exists() and manifest.read_bytes().count(b"\n") >= 2):
        assert time.monotonic() < deadline and process.poll() is None, process.communicate()
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    committed = len(manifest.read_text().splitlines())
    result = runs(tmp_path, "resume", str(manifest.parent))
    assert result.returncode == 0, result.stderr
    first, second = read_run_json(manifest.parent)["attempts"]
    assert (first["status"], first["counts"]["generated"]) == ("interrupted", committed)
    assert second["counts"]["kept"] == committed and second["counts"]["generated"] == 8 - committed
