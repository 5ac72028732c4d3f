"""Scoring speed: clip_score with the tiny CLIP over a real run of many items, measured in one process.

Makes a run of `--items` tiny Stable Diffusion images (1 step, 32×32; prompts × seeds), then scores it with
`clip_score` (`tiny:clip`, offline) and prints items/s and how many calls the CLIP's vision tower got
(batching: one call per `--batch` items). Scoring time covers everything `diffsweep-runs score` does:
reading the manifest, decoding every PNG, the CLIP calls and the atomic writes of scores.jsonl.

    python bench/bench_scores.py                 # 1,000 items at batch 64, on CPU
    python bench/bench_scores.py --items 200 --device cuda
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

REPO = Path(__file__).resolve().parents[1]
PROMPTS = 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1000, help="items in the run (a multiple of 10)")
    parser.add_argument("--batch", type=int, default=64, help="score.batch_size")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from diffsweep import devices
    from diffsweep.metrics import ClipScore, ScoreSettings
    from diffsweep.paths import conf_dir
    from diffsweep.reports.scoring import score_run
    from diffsweep.run.local import run_sweep

    seeds = args.items // PROMPTS
    with tempfile.TemporaryDirectory() as work:
        overrides = [f"output.root={work}", "sweep.name=bench_scores", f"device={args.device}",
                     "sweep.params.num_inference_steps=1", "sweep.params.height=32", "sweep.params.width=32",
                     "sweep.batch_size=64", f"sweep.grid.prompt=[{','.join(f'prompt {i}' for i in range(PROMPTS))}]",
                     f"sweep.grid.seed=[{','.join(map(str, range(seeds)))}]"]
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            doc = OmegaConf.to_container(compose(config_name="config", overrides=overrides), resolve=True)
        started = time.perf_counter()
        run_dir = run_sweep(doc, out=io.StringIO()).run_dir
        print(f"run of {PROMPTS * seeds} items made in {time.perf_counter() - started:.1f}s: {run_dir}")

        calls = []
        original = ClipScore.__init__

        def counting_init(self: ClipScore, *a: object, **k: object) -> None:
            original(self, *a, **k)
            self.metric.model.model.vision_model.register_forward_pre_hook(lambda module, inputs: calls.append(1))

        ClipScore.__init__ = counting_init  # count the vision tower's calls, nothing else changes
        settings = ScoreSettings(metrics=("clip_score",), clip_model="tiny:clip", batch_size=args.batch)
        cpu_started = time.process_time()
        outcome = score_run(run_dir, settings, devices.resolve_device(args.device))
        cpu = time.process_time() - cpu_started  # what this process used, whatever else the machine runs
        print(f"clip_score (tiny:clip) on {args.device}: {outcome.scored} items in {outcome.seconds:.2f}s = "
              f"{outcome.items_per_second:.1f} items/s ({cpu:.2f} CPU-seconds, {os.cpu_count()} cores, load "
              f"average {os.getloadavg()[0]:.1f}); {len(calls)} CLIP vision calls at batch {args.batch}")
        sys.exit(0 if outcome.scored == PROMPTS * seeds else 1)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "src"))
    main()
