"""Quantization backends on the tiny Flux model, measured in one process: the quantized transformer's weight bytes
and how close each backend's images are to the unquantized builder's (PSNR, SSIM).

Each backend is one value of a `builder.quantization` axis, so one sweep per dtype makes every builder's images for
the same prompts and seeds: quanto int8 / float8 and GGUF Q8_0 / Q4_0 files against float32, torchao int8 / float8
weight-only against bfloat16 (diffusers' torchao layers compute in bfloat16). bitsandbytes needs a CUDA GPU and is
listed as refused on a machine without one. Bytes are what run.json records; the tiny transformer is small, so its
biases and norms (kept unquantized) weigh more than in a real model.

    python bench/bench_quantization.py            # on CPU, about a minute
    python bench/bench_quantization.py --items 16 --steps 4
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

REPO = Path(__file__).resolve().parents[1]
GGUF_TYPES = ("Q8_0", "Q4_0")  # block size 32: the tiny transformer's rows are 32 wide


def psnr(a, b) -> float:
    import numpy as np

    mse = float(np.mean((a.astype(float) - b.astype(float)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def ssim(a, b, window: int = 7) -> float:
    """Mean SSIM over 7x7 windows of the grey images (Wang et al. 2004 constants)."""
    import numpy as np
    from numpy.lib.stride_tricks import sliding_window_view

    x, y = (np.asarray(image, float).mean(axis=2) for image in (a, b))
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    wx, wy = (sliding_window_view(v, (window, window)) for v in (x, y))
    mx, my = wx.mean(axis=(-1, -2)), wy.mean(axis=(-1, -2))
    vx, vy = wx.var(axis=(-1, -2)), wy.var(axis=(-1, -2))
    cov = ((wx - mx[..., None, None]) * (wy - my[..., None, None])).mean(axis=(-1, -2))
    return float(np.mean((2 * mx * my + c1) * (2 * cov + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))))


def sweep(values: list, dtype: str, root: Path, items: int, steps: int) -> list[dict]:
    """One run over `values` of builder.quantization; per builder: its record and PSNR/SSIM against `none`."""
    import numpy as np
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf
    from PIL import Image

    from diffsweep.paths import conf_dir
    from diffsweep.run.local import run_sweep

    overrides = ["provider=tiny_flux", f"builder.dtype={dtype}", f"output.root={root}", f"sweep.name=quant_{dtype}",
                 f"sweep.params.num_inference_steps={steps}", "sweep.grid.prompt=[a red fox,a lighthouse at dusk]",
                 f"sweep.grid.seed=[{','.join(str(s) for s in range(max(1, items // 2)))}]"]
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        doc = OmegaConf.to_container(compose(config_name="config", overrides=overrides), resolve=True)
    doc["sweep"]["grid"]["builder.quantization"] = values  # preset names, and mappings for the GGUF files
    result = run_sweep(doc, out=io.StringIO())
    run = json.loads((result.run_dir / "run.json").read_text())
    lines = [json.loads(line) for line in (result.run_dir / "manifest.jsonl").read_text().splitlines()]
    builders = {b["hash"]: b for b in run["builders"]}
    images: dict[str, dict[tuple, np.ndarray]] = {}
    for line in lines:
        with Image.open(result.run_dir / line["outputs"][0]) as image:
            images.setdefault(line["builder_hash"], {})[(line["params"]["prompt"], line["seed"])] = np.asarray(image)
    reference = next(h for h, b in builders.items() if not b.get("quantization"))
    rows = []
    for builder_hash, builder in builders.items():
        pairs = [(images[builder_hash][key], image) for key, image in images[reference].items()]
        rows.append({"label": builder["label"].removeprefix("quantization="), "dtype": dtype,
                     "quantization": builder.get("quantization"),
                     "psnr": sum(psnr(a, b) for a, b in pairs) / len(pairs),
                     "ssim": sum(ssim(a, b) for a, b in pairs) / len(pairs)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=8, help="images per builder (prompts x seeds)")
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "src"))

    import torch

    from diffsweep.quantize import environment_problems
    from diffsweep.tiny.flux import flux
    from diffsweep.tiny.gguf import write_transformer_gguf

    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    with tempfile.TemporaryDirectory(prefix="diffsweep-bench-quant-") as work:
        folder = Path(work)
        transformer = flux()["transformer"]
        ggufs = [{"name": f"gguf_{kind.lower()}", "backend": "gguf",
                  "file": str(write_transformer_gguf(transformer, folder / f"tiny-flux-{kind}.gguf", kind))}
                 for kind in GGUF_TYPES]
        rows = sweep(["none", "quanto_int8", "quanto_fp8", *ggufs], "float32", folder / "runs", args.items, args.steps)
        rows += sweep(["none", "torchao_int8", "torchao_fp8"], "bfloat16", folder / "runs", args.items, args.steps)
    print(f"tiny Flux transformer, {args.items} images per builder, {args.steps} steps, 32x32, on CPU "
          f"(torch {torch.__version__}); no GPU here")
    print(f"{'quantization':<32}{'dtype':<10}{'weights':>22}{'PSNR dB':>10}{'SSIM':>8}")
    for row in rows:
        recorded = row["quantization"]
        if recorded:
            weights = (f"{recorded['bytes_before']:,} -> {recorded['bytes_after']:,}".rjust(22))
        else:
            weights = "(reference)".rjust(22)
        score = "     inf" if row["psnr"] == float("inf") else f"{row['psnr']:10.1f}"
        print(f"{row['label']:<32}{row['dtype']:<10}{weights}{score.rjust(10)}{row['ssim']:8.3f}")
    for name in ("bnb_nf4", "bnb_int8"):
        from diffsweep.quantize import preset

        reasons = "; ".join(message for _, message in environment_problems(preset(name), torch.device("cpu")))
        print(f"{name:<32}refused on CPU: {reasons}")


if __name__ == "__main__":
    main()
