"""diffsweep's whole-process overhead against a hand-written diffusers script doing the same work.

Both sides are fresh processes on the same tiny Stable Diffusion folder (built offline), the same prompts and seeds,
the same steps and size, batches of 4 with one CPU generator per item, and a PNG file per item. diffsweep also does
what a user runs it for: planning, hashing, sidecars and PNG metadata, the manifest and run.json, the contact sheet
and the viewer. Runs alternate (diffsweep, script, diffsweep, ...) so drifting machine load hits both alike; the
ratio is of the median wall times. Each child times its own phases, which are printed as a breakdown; "the rest" is
what no phase timed: process start and exit, and for diffsweep Hydra's composition, validation, the run records,
and the torch and diffusers imports that diffsweep makes lazily, outside the phases (the script makes them in its
"imports").

The ratio depends on how long generation takes: the fixed cost a run, printed too, is what changes with diffsweep.

    python bench/bench_overhead.py                   # 48 items (4 prompts x 12 seeds), 20 steps, 64x64, 3 rounds
    python bench/bench_overhead.py --rounds 5 --json overhead.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

PROMPTS = ["a lighthouse on a cliff at dusk, oil painting", "a red fox in fresh snow, golden hour photograph",
           "a bowl of ramen, studio lighting", "an old map of an imaginary island, ink on parchment"]


# --- the two children --------------------------------------------------------------------------------


def child_script(args: argparse.Namespace, out: Path) -> dict[str, float]:
    """The hand-written diffusers loop a user would write for the same PNGs."""
    t = time.perf_counter()
    import torch
    from diffusers import StableDiffusionPipeline
    phases = {"imports": time.perf_counter() - t}

    t = time.perf_counter()
    pipe = StableDiffusionPipeline.from_pretrained(args.model, torch_dtype=torch.float32).to("cpu")
    pipe.set_progress_bar_config(disable=True)
    phases["load"] = time.perf_counter() - t
    jobs = [(prompt, seed) for prompt in PROMPTS for seed in range(args.seeds)]
    generate = write = 0.0
    for start in range(0, len(jobs), args.batch):
        batch = jobs[start:start + args.batch]
        t = time.perf_counter()
        images = pipe([p for p, _ in batch], num_inference_steps=args.steps, height=args.size, width=args.size,
                      generator=[torch.Generator("cpu").manual_seed(s) for _, s in batch]).images
        generate += time.perf_counter() - t
        t = time.perf_counter()
        for offset, image in enumerate(images):
            image.save(out / f"{start + offset:04d}.png")
        write += time.perf_counter() - t
    phases.update(generation=generate, writing=write)
    return phases


def child_diffsweep(args: argparse.Namespace, out: Path) -> dict[str, float]:
    """`diffsweep` as its console script runs it, with its phases timed from the outside of each function."""
    phases: dict[str, float] = defaultdict(float)
    t = time.perf_counter()
    from diffsweep.cli import app
    from diffsweep.execution import core, pipelines
    from diffsweep.reports import build
    from diffsweep.run import local
    from diffsweep.store.writer import ItemWriter
    phases["imports"] = time.perf_counter() - t

    def timed(owner: Any, name: str, phase: str) -> None:
        real = getattr(owner, name)

        def wrapper(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return real(*a, **k)
            finally:
                phases[phase] += time.perf_counter() - t0

        setattr(owner, name, wrapper)

    timed(local, "prepare", "planning")
    timed(pipelines, "materialise", "load")
    timed(core, "generate", "generation")
    timed(ItemWriter, "commit", "writing (overlaps generation)")
    timed(build, "after_attempt", "end-of-run reports")
    seeds = json.dumps(list(range(args.seeds)))
    sys.argv = ["diffsweep", "provider=tiny_sd", "device=cpu", f"output.root={out}", "sweep.name=overhead",
                f"sweep.params.num_inference_steps={args.steps}", f"sweep.params.height={args.size}",
                f"sweep.params.width={args.size}", f"sweep.batch_size={args.batch}", f"sweep.grid.seed={seeds}",
                f"sweep.grid.prompt={json.dumps(PROMPTS)}"]
    try:
        app.main()
    except SystemExit as exit_:
        if exit_.code:
            raise
    return dict(phases)


# --- the parent ----------------------------------------------------------------------------------------


def run_child(kind: str, args: argparse.Namespace, root: Path, round_: int) -> dict[str, Any]:
    out = root / f"{kind}-{round_}"
    out.mkdir(parents=True)
    command = [sys.executable, __file__, "--child", kind, "--model", str(args.model), "--seeds", str(args.seeds),
               "--steps", str(args.steps), "--size", str(args.size), "--batch", str(args.batch), "--out", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads),
           "DIFFSWEEP_CACHE": str(args.cache)}
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{kind} failed:\n{done.stderr[-3000:]}")
    phases = json.loads(done.stdout.strip().splitlines()[-1])
    pngs = sorted(out.rglob("*.png"))
    return {"kind": kind, "wall": wall, "phases": phases, "pngs": len(pngs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="alternating pairs of runs")
    parser.add_argument("--seeds", type=int, default=12, help="seeds per prompt (4 prompts)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each child")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--child", choices=["script", "diffsweep"], help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child = child_script if args.child == "script" else child_diffsweep
        print(json.dumps(child(args, args.out)))
        return

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        args.cache = root / "cache"
        os.environ["DIFFSWEEP_CACHE"] = str(args.cache)
        from diffsweep import providers
        from diffsweep.providers.base import ensure_tiny

        args.model = ensure_tiny(providers.get("stable_diffusion"), "sd")  # the folder both sides load
        runs: dict[str, list[dict[str, Any]]] = {"diffsweep": [], "script": []}
        for round_ in range(args.rounds):
            for kind in ("diffsweep", "script"):
                runs[kind].append(run_child(kind, args, root, round_))
        report(args, runs)


def report(args: argparse.Namespace, runs: dict[str, list[dict[str, Any]]]) -> None:
    items = len(PROMPTS) * args.seeds
    medians = {kind: statistics.median(r["wall"] for r in rs) for kind, rs in runs.items()}
    ratio = medians["diffsweep"] / medians["script"]
    print(f"{items} items ({len(PROMPTS)} prompts x {args.seeds} seeds), {args.steps} steps, {args.size}x{args.size}, "
          f"batch {args.batch}, {args.threads} thread(s) per process, {args.rounds} alternating round(s); "
          f"load average {os.getloadavg()[0]:.2f}")
    for kind, rs in runs.items():
        walls = ", ".join(f"{r['wall']:.2f}" for r in rs)
        print(f"  {kind:<10} median {medians[kind]:6.2f}s  ({walls})  {rs[0]['pngs']} PNG files")
        names = sorted({name for r in rs for name in r["phases"]})
        for name in names:
            value = statistics.median(r["phases"].get(name, 0.0) for r in rs)
            print(f"    {name:<32} {value:6.2f}s")
        # what no phase timed: process start and exit, and for diffsweep Hydra's composition, validation, the run
        # records and the library imports that happen outside the phases above (torch and diffusers load lazily)
        rest = statistics.median(r["wall"] - sum(v for n, v in r["phases"].items() if "overlaps" not in n) for r in rs)
        print(f"    {'the rest (see the docstring)':<32} {rest:6.2f}s")
    print(f"diffsweep's overhead: {medians['diffsweep'] - medians['script']:.2f}s a run, "
          f"{(medians['diffsweep'] - medians['script']) / items * 1000:.0f} ms an item")
    print(f"ratio diffsweep / hand-written script: {ratio:.3f}")
    if args.json:
        args.json.write_text(json.dumps({"ratio": ratio, "medians": medians, "runs": runs}, indent=2) + "\n")


if __name__ == "__main__":
    main()
