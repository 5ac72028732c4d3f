"""Plans at scale: a dry run of a million-item grid, and resume and show of a finished 100,000-item run.

Prints, on this machine:
  1. `diffsweep dry_run=true` over 1,000 prompts from a file x 1,000 seeds (tiny_sd): wall and CPU seconds of the
     whole command and its peak RSS (targets: < 10 s, < 500 MB);
  2. `diffsweep-runs resume` of a finished 100,000-item run: seconds from the call to "nothing to do", imports
     excluded (measured in this process, where diffsweep is already imported; target < 2 s), and the whole
     command's wall time as a subprocess for context;
  3. `diffsweep-runs show` of that run: wall seconds of the whole command (target < 1 s), and whether torch or
     diffusers were imported (from `python -X importtime`; they must not be).

The finished run is made by diffsweep's own code from the real plan of the real config: the folder is allocated,
config.yaml, overrides.yaml and run.json are written as `diffsweep` writes them, and every planned item gets its
output file, its sidecar JSON and its line in a compacted manifest.jsonl, each made by the functions the run's
writer uses. What differs from a real run, to make 100,000 items in a minute or two: no pipeline runs, and every
output is the same 8x8 placeholder PNG (resume and show check that outputs exist and are not empty, and never
read pixels); files are written directly, without the writer's temp-file, fsync and rename; no contact sheet
or gallery is drawn.

    python bench/bench_plan_scale.py                       # all three, in a temporary folder
    python bench/bench_plan_scale.py --work /tmp/scale     # keep (and on the next call reuse) the 100k-item run
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never wait on the hub

import numpy as np
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from diffsweep import media, runner
from diffsweep.paths import conf_dir
from diffsweep.providers.base import Generated
from diffsweep.store.atomic import write_atomic
from diffsweep.store.folder import RunFolder, allocate
from diffsweep.store.records import AttemptCounts, Counts, now
from diffsweep.store.runconfig import dump_run_config
from diffsweep.store.writer import item_record, item_stem, sidecar_record


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else "?"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}; "
            f"load average {load}")


def write_prompts(path: Path, count: int) -> None:
    path.write_text("".join(f"prompt {n}: a lighthouse on a cliff, study {n * 7919 % count}\n"
                            for n in range(count)), encoding="utf-8")


def timed_command(args: list[str], cwd: Path) -> tuple[float, float, int, str, str]:
    """Wall seconds, CPU seconds and peak RSS (bytes) of one subprocess, with its stdout and stderr."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, *args], cwd=cwd, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(process.pid, 0)  # this child's own rusage: its peak RSS, not the session's
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if process.returncode:
        raise SystemExit(f"{' '.join(args)} failed ({process.returncode}):\n{stderr}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024, stdout, stderr


def compose_config(overrides: list[str]) -> dict:
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return OmegaConf.to_container(compose(config_name="config", overrides=overrides), resolve=True)


def make_finished_run(work: Path, items: int) -> Path:
    """A complete run of `items` items (prompts x seeds) as `diffsweep` would leave it, written fast."""
    prompts = work / f"prompts-{items // 100}.txt"
    write_prompts(prompts, items // 100)
    overrides = ["sweep=prompts_file", f"sweep.grid.prompt.file={prompts}", "sweep.grid.seed.stop=100",
                 f"sweep.name=finished{items}", f"output.root={work / 'runs'}", "device=cpu"]
    doc, plan = runner.prepare(compose_config(overrides), base_dir=work)
    assert plan.total == items
    run = RunFolder(allocate(Path(doc["output"]["root"]), doc["sweep"]["name"]))
    write_atomic(run.path / "config.yaml", dump_run_config(doc, run.path))
    write_atomic(run.path / "overrides.yaml", "".join(f"- {json.dumps(o)}\n" for o in overrides))
    info = runner.new_run_info(run, plan)
    attempt = runner.new_attempt("run")
    attempt.counts = AttemptCounts(planned=plan.total, generated=plan.total)
    (run.path / "items").mkdir()
    placeholder = media.encode_png(Generated("image", np.full((8, 8, 3), 0.5, dtype=np.float32)), "", {})
    run_ref = {"name": doc["sweep"]["name"], "version": run.path.name}
    lines = []
    for batch in plan.batches():  # the plan's own items, ids and file names
        for item in batch.items:
            stem = item_stem(item, plan.index_width)
            record = item_record(item, "ok", [f"items/{stem}.png"], 0.01)
            (run.path / record.outputs[0]).write_bytes(placeholder)
            sidecar = sidecar_record(record, batch.builder, run_ref, "PNDMScheduler")
            (run.path / f"items/{stem}.json").write_text(json.dumps(sidecar, indent=2, ensure_ascii=False) + "\n")
            lines.append((item.index, json.dumps(record.to_json(), ensure_ascii=False, sort_keys=True) + "\n"))
    write_atomic(run.manifest_path, "".join(line for _, line in sorted(lines)))  # compacted, as a run ends
    info.attempts.append(attempt)
    info.counts = Counts(planned=plan.total, done=plan.total)
    attempt.status, attempt.finished = "complete", now()
    info.status, info.finished = "complete", attempt.finished
    run.write_info(info)
    return run.path


def resume_to_nothing_to_do(run_dir: Path) -> tuple[float, float, float]:
    """Wall and CPU seconds from calling resume_run to its "nothing to do" line, and wall seconds to its return."""
    marks: dict[str, tuple[float, float]] = {}

    class Mark(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "nothing to do" in record.getMessage():
                marks.setdefault("nothing", (time.perf_counter(), time.process_time()))

    handler = Mark()
    logging.getLogger("diffsweep").addHandler(handler)
    logging.getLogger("diffsweep").setLevel(logging.INFO)
    try:
        started, cpu = time.perf_counter(), time.process_time()
        with open(os.devnull, "w") as sink:
            runner.resume_run(run_dir, out=sink)
        finished = time.perf_counter()
    finally:
        logging.getLogger("diffsweep").removeHandler(handler)
    if "nothing" not in marks:
        raise SystemExit("resume did not say 'nothing to do': the fixture is not a finished run")
    return marks["nothing"][0] - started, marks["nothing"][1] - cpu, finished - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=1000, help="prompts in the dry run's file (default 1000)")
    parser.add_argument("--seeds", type=int, default=1000, help="seeds per prompt in the dry run (default 1000)")
    parser.add_argument("--run-items", type=int, default=100_000, help="items of the finished run (default 100000)")
    parser.add_argument("--work", type=Path, default=None, help="folder to keep (and reuse) the finished run in")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="diffsweep-bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}")

    prompts = work / f"prompts-{args.prompts}.txt"
    write_prompts(prompts, args.prompts)
    wall, cpu, rss, out, _ = timed_command(
        ["-m", "diffsweep", "dry_run=true", "sweep=prompts_file", f"sweep.grid.prompt.file={prompts}",
         f"sweep.grid.seed.stop={args.seeds}", f"output.root={work / 'dry'}"], work)
    print(f"dry run, {args.prompts * args.seeds:,} items: {wall:.2f} s wall, {cpu:.2f} s CPU, "
          f"peak RSS {rss / 2**20:.0f} MiB (targets < 10 s, < 500 MB); it printed:\n  {out.splitlines()[0]}")

    existing = sorted((work / "runs" / f"finished{args.run_items}").glob("v*"))
    if existing and (existing[-1] / "run.json").is_file():
        run_dir = existing[-1]
        print(f"finished run: reusing {run_dir}")
    else:
        started = time.perf_counter()
        run_dir = make_finished_run(work, args.run_items)
        print(f"finished run: made {args.run_items:,} items in {time.perf_counter() - started:.0f} s at {run_dir}")

    to_nothing, cpu, whole = resume_to_nothing_to_do(run_dir)
    print(f"resume of the finished run, imports excluded: 'nothing to do' after {to_nothing:.2f} s wall, "
          f"{cpu:.2f} s CPU (target < 2 s); returned after {whole:.2f} s")
    wall, cpu, _, _, err = timed_command(["-m", "diffsweep.cli.runs", "resume", str(run_dir)], work)
    said = next((line for line in err.splitlines() if "nothing to do" in line), "(no 'nothing to do' line)")
    print(f"resume, whole command with imports: {wall:.2f} s wall, {cpu:.2f} s CPU; it said:\n  {said}")

    wall, cpu, _, out, _ = timed_command(["-m", "diffsweep.cli.runs", "show", str(run_dir)], work)
    _, _, _, _, imports = timed_command(["-X", "importtime", "-m", "diffsweep.cli.runs", "show", str(run_dir)], work)
    heavy = sorted({name for name in re.findall(r"\|\s+(torch|diffusers|transformers)$", imports, re.MULTILINE)})
    print(f"show, whole command: {wall:.2f} s wall, {cpu:.2f} s CPU (target < 1 s); heavy imports: "
          f"{', '.join(heavy) or 'none'}; it printed:\n  " + "\n  ".join(out.splitlines()[:2]))


if __name__ == "__main__":
    main()
