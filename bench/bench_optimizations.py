"""diffsweep against a hand-written diffusers loop on the same work, measured in one process.

Builds a random-weight Stable Diffusion 1.5-size pipeline offline (or the tiny one with --size tiny), then times:
  1. baseline: StableDiffusionPipeline.from_pretrained + .to(device), one warm-up call, timed batched calls;
  2. diffsweep with optimization=none on the same prompts × seeds, batch size and call shape;
  3. diffsweep with optimization=<preset> (default fast).
Prints items/s and their ratios, first-call seconds (warm-up / compile cost), load seconds and peak memory; --json
writes the same numbers. Ratios are only meaningful within one run: every number comes from this process and card.

    python bench/bench_optimizations.py                       # SD1.5 size, 512², 25 steps, on the accelerator
    python bench/bench_optimizations.py --size tiny --device cpu --steps 2 --items 8 --batch 4   # smoke test
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never wait on the hub
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch

from diffsweep import devices

PROMPTS = (
    "a lighthouse on a cliff at dusk, oil painting",
    "a red fox in fresh snow, golden hour photograph",
    "a bowl of ramen on a wooden table, studio light",
    "an astronaut riding a horse on the moon, watercolor",
)
GUIDANCE = 7.5


def quiet() -> None:
    """Loading and saving bars and cast warnings would bury the table."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def build_pipeline(size: str, folder: Path, dtype: torch.dtype) -> None:
    """Save a random-weight StableDiffusionPipeline to `folder`: SD1.5 shapes (859.5M-parameter UNet) or tiny."""
    from diffusers import StableDiffusionPipeline

    if size == "tiny":
        from diffsweep.providers import tiny_factories

        StableDiffusionPipeline(**tiny_factories()["sd"]()).to(dtype).save_pretrained(folder)
        return
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    from diffsweep.tiny.common import clip_text_config
    from diffsweep.tiny.tokenizers import clip_tokenizer

    torch.manual_seed(0)
    tokenizer = clip_tokenizer()
    pipe = StableDiffusionPipeline(
        unet=UNet2DConditionModel(sample_size=64, cross_attention_dim=768),
        vae=AutoencoderKL(block_out_channels=[128, 256, 512, 512], layers_per_block=2, latent_channels=4,
                          down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                          sample_size=512),
        text_encoder=CLIPTextModel(clip_text_config(tokenizer, 768, intermediate_size=3072, num_attention_heads=12,
                                                    num_hidden_layers=12)),
        tokenizer=tokenizer,
        scheduler=EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                         steps_offset=1),
        safety_checker=None, feature_extractor=None, image_encoder=None, requires_safety_checker=False,
    )
    pipe.to(dtype).save_pretrained(folder)


def work(items: int) -> tuple[list[str], list[int]]:
    """Prompts × seeds giving exactly `items` items (as many of PROMPTS as divide it)."""
    count = next(n for n in range(len(PROMPTS), 0, -1) if items % n == 0)
    return list(PROMPTS[:count]), list(range(items // count))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def release(device: torch.device) -> None:
    gc.collect()
    devices.empty_cache(device)


def baseline(folder: Path, args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """What a user writes by hand: load, move, warm up once, then batched calls with one CPU generator per item."""
    from diffusers import StableDiffusionPipeline

    prompts, seeds = work(args.items)
    items = [(p, s) for p in prompts for s in seeds]
    devices.reset_peak_memory(device)
    started = time.perf_counter()
    pipe = StableDiffusionPipeline.from_pretrained(folder, dtype=dtype).to(device)
    pipe.set_progress_bar_config(disable=True)
    synchronize(device)
    load = time.perf_counter() - started

    def call(batch: list[tuple[str, int]]) -> float:
        began = time.perf_counter()
        pipe(prompt=[p for p, _ in batch], generator=[torch.Generator("cpu").manual_seed(s) for _, s in batch],
             num_inference_steps=args.steps, guidance_scale=GUIDANCE, height=args.height, width=args.width,
             output_type="np")
        synchronize(device)
        return time.perf_counter() - began

    first = call(items[:args.batch])
    seconds = sum(call(items[i:i + args.batch]) for i in range(0, len(items), args.batch))
    result = {"items_per_second": len(items) / seconds, "first_call_seconds": first, "load_seconds": load,
              "peak_memory_bytes": devices.peak_memory_bytes(device)}
    pipe = None  # free the weights before the next phase loads its own
    release(device)
    return result


def diffsweep_run(folder: Path, preset: str, args: argparse.Namespace, device: torch.device,
                  root: Path) -> dict[str, Any]:
    """The same work through diffsweep's config tree and runner; numbers come from the run folder's run.json."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from diffsweep.execution.cache import PipelineCache
    from diffsweep.paths import conf_dir
    from diffsweep.run.local import run_sweep

    prompts, seeds = work(args.items)
    overrides = [
        f"builder.model={folder}", "builder.provider=stable_diffusion", "builder.pipeline=StableDiffusionPipeline",
        f"builder.dtype={args.dtype}", f"device={device}", f"generation.height={args.height}",
        f"generation.width={args.width}", f"sweep.params.num_inference_steps={args.steps}",
        f"sweep.params.guidance_scale={GUIDANCE}", "sweep.grid.prompt=[" + ",".join(f'"{p}"' for p in prompts) + "]",
        f"sweep.grid.seed=[{','.join(map(str, seeds))}]", f"sweep.batch_size={args.batch}", f"sweep.name={preset}",
        f"output.root={root}", f"optimization={preset}",
        *(args.set if preset != "none" else []),
    ]
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        doc = OmegaConf.to_container(compose(config_name="config", overrides=overrides), resolve=True)
    cache = PipelineCache()  # a fresh cache: each preset loads and optimizes its own pipeline
    result = run_sweep(doc, overrides=overrides, out=io.StringIO(), cache=cache)
    cache.clear(device)
    release(device)
    if result.status != "complete" or result.run_dir is None:
        errors = [line for line in (result.run_dir / "run.log").read_text().splitlines() if "ERROR" in line]
        raise SystemExit(f"diffsweep optimization={preset} ended {result.status}:\n" + "\n".join(errors[:5]))
    run = json.loads((result.run_dir / "run.json").read_text())
    timings = run["timings"]
    return {"items_per_second": timings["steady_items_per_second"],
            "first_call_seconds": timings["first_call_seconds"], "load_seconds": timings["load_seconds"],
            "peak_memory_bytes": timings["peak_memory_bytes"],
            "applied": run["builders"][0].get("optimization")}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def report(results: dict[str, Any], out: Any = sys.stdout) -> None:
    base, none, fast = results["baseline"], results["diffsweep_none"], results["diffsweep_preset"]
    preset = results["config"]["preset"]

    def gib(nbytes: int | None) -> str:
        return "-" if nbytes is None else f"{nbytes / 2**30:.2f} GiB"

    def times(value: float | None) -> str:
        return "" if value is None else f"{value:.2f}x"

    c = results["config"]
    out.write(f"device: {results['device']}  torch {torch.__version__}\n"
              f"work: {c['size']} SD, {c['items']} items at batch {c['batch']}, {c['height']}x{c['width']}, "
              f"{c['steps']} steps, CFG {GUIDANCE}, {c['dtype']}\n\n")
    rows = [("hand-written diffusers", base, ""),
            ("diffsweep none", none, f"{times(results['ratios']['none_vs_baseline'])} baseline"),
            (f"diffsweep {preset}", fast, f"{times(results['ratios']['preset_vs_none'])} none, "
                                          f"{times(results['ratios']['preset_vs_baseline'])} baseline")]
    out.write(f"{'':24} {'items/s':>9} {'ratio':<26} {'first call s':>12} {'load s':>8} {'peak memory':>12}\n")
    for label, row, note in rows:
        out.write(f"{label:24} {row['items_per_second']:9.3f} {note:<26} {row['first_call_seconds']:12.2f} "
                  f"{row['load_seconds']:8.2f} {gib(row['peak_memory_bytes']):>12}\n")
    if devices.peak_memory_bytes(torch.device("cpu")) and results["device_type"] == "cpu":
        out.write("(on cpu, peak memory is the process's peak RSS so far, not per phase)\n")
    applied = fast.get("applied")
    out.write(f"\n{preset} applied: " + ("(this runner records no applied options)\n" if applied is None else "\n"))
    for record in applied or []:
        out.write(f"  {record['option']}={record['value']}: {record['status']}  {record.get('detail', '')}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=["sd15", "tiny"], default="sd15")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    parser.add_argument("--dtype", choices=["float16", "bfloat16", "float32"], default=None,
                        help="default: float16 on an accelerator, float32 on cpu")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--items", type=int, default=32, help="prompts x seeds; at least two batches")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--height", type=int, default=None, help="default 512 (sd15) or 64 (tiny)")
    parser.add_argument("--width", type=int, default=None, help="default 512 (sd15) or 64 (tiny)")
    parser.add_argument("--preset", default="fast", help="the optimization preset compared with none")
    parser.add_argument("--set", action="append", default=[], metavar="optimization.KEY=VALUE",
                        help="override one option of the compared preset, e.g. optimization.compile=full")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.items < 2 * args.batch:
        parser.error("--items must be at least two batches: the first call is warm-up, the rest are timed")
    device = devices.resolve_device(args.device)
    args.dtype = args.dtype or ("float32" if device.type == "cpu" else "float16")
    args.height = args.height or (512 if args.size == "sd15" else 64)
    args.width = args.width or (512 if args.size == "sd15" else 64)
    dtype = devices.torch_dtype(args.dtype)
    quiet()

    with tempfile.TemporaryDirectory(prefix="diffsweep-bench-") as tmp:
        folder = Path(tmp) / f"sd-{args.size}"
        started = time.perf_counter()
        build_pipeline(args.size, folder, dtype)
        print(f"built {args.size} pipeline in {time.perf_counter() - started:.1f}s", file=sys.stderr)
        base = baseline(folder, args, device, dtype)
        none = diffsweep_run(folder, "none", args, device, Path(tmp) / "runs")
        fast = diffsweep_run(folder, args.preset, args, device, Path(tmp) / "runs")

    results = {
        "device": device_name(device), "device_type": device.type,
        "versions": {"torch": torch.__version__, "diffusers": __import__("diffusers").__version__},
        "config": {"size": args.size, "items": args.items, "batch": args.batch, "steps": args.steps,
                   "height": args.height, "width": args.width, "dtype": args.dtype, "preset": args.preset,
                   "preset_overrides": args.set},
        "baseline": base, "diffsweep_none": none, "diffsweep_preset": fast,
        "ratios": {"none_vs_baseline": ratio(none["items_per_second"], base["items_per_second"]),
                   "preset_vs_none": ratio(fast["items_per_second"], none["items_per_second"]),
                   "preset_vs_baseline": ratio(fast["items_per_second"], base["items_per_second"])},
    }
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
