"""One sweep on 1 and on N worker processes: items/s per worker count and the speed-up.

Runs the same sweep (tiny_sd by default) as real commands: `python -m diffsweep` for one worker and
`torchrun --nproc-per-node N -m diffsweep` for N, each process with one torch thread on CPU (or one GPU
each with --device cuda). The rate is the run's items over the time from its start to its end as
run.json records them (loads included, interpreter start-up not), so a speed-up below N is what the
user gets.

    python bench/bench_workers.py                                   # CPU: 1 and 2 workers, 1 thread each
    python bench/bench_workers.py --device cuda --workers 1 2 4 8   # a machine with 8 GPUs: img/s per count
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path


def run_once(workers: int, args: argparse.Namespace, root: Path) -> dict[str, float]:
    overrides = [f"provider={args.provider}", f"device={args.device}", f"output.root={root / str(workers)}",
                 f"sweep.params.num_inference_steps={args.steps}", f"sweep.params.height={args.size}",
                 f"sweep.params.width={args.size}", f"sweep.batch_size={args.batch}",
                 f"sweep.grid.seed={json.dumps(list(range(args.items)))}", "sweep.grid.prompt=[a fox in the snow]"]
    if workers == 1:
        command = [sys.executable, "-m", "diffsweep", *overrides]
    else:
        torchrun = str(Path(sys.executable).parent / "torchrun")
        command = [torchrun, "--nproc-per-node", str(workers), "-m", "diffsweep", *overrides]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if args.device == "cpu":
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    info = json.loads((Path(done.stdout.strip().splitlines()[-1]) / "run.json").read_text())
    seconds = (datetime.fromisoformat(info["finished"]) - datetime.fromisoformat(info["started"])).total_seconds()
    return {"workers": workers, "items": info["counts"]["done"], "seconds": seconds,
            "items_per_second": info["counts"]["done"] / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to measure")
    parser.add_argument("--provider", default="tiny_sd")
    parser.add_argument("--items", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.device == "cuda":
        import torch

        if max(args.workers) > torch.cuda.device_count():
            sys.exit(f"--workers {max(args.workers)} needs as many GPUs; this machine has {torch.cuda.device_count()}")
    machine = f"{platform.machine()}, {os.cpu_count()} CPU core(s), {platform.platform()}"
    print(f"{args.items} items of {args.provider}, {args.steps} steps, {args.size}x{args.size}, batch {args.batch}, "
          f"on {args.device} ({'1 torch thread per worker' if args.device == 'cpu' else 'one GPU per worker'}); {machine}")
    results = []
    with tempfile.TemporaryDirectory(prefix="diffsweep-bench-workers-") as folder:
        for workers in args.workers:
            result = run_once(workers, args, Path(folder))
            results.append(result)
            speedup = result["items_per_second"] / results[0]["items_per_second"]
            print(f"  {workers} worker(s): {result['items']} items in {result['seconds']:.1f}s = "
                  f"{result['items_per_second']:.2f} items/s  (speed-up {speedup:.2f}x over {results[0]['workers']}; "
                  f"load average {os.getloadavg()[0]:.1f})", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "device": args.device, "results": results}, indent=2))


if __name__ == "__main__":
    main()
