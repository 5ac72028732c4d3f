"""Single-file checkpoints: one .safetensors in the original LDM/CompVis layout loads through diffusers' own
`from_single_file`, offline, when `builder.single_file_config` names a diffusers folder for the component configs.

The checkpoint is the tiny SD pipeline's weights renamed to the original layout (a port of diffusers'
scripts/convert_diffusers_to_original_stable_diffusion.py whose block maps come from the model configs instead of
SD 1.5's four levels), so every comparison is the same weights in two containers.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import compose_config, read_manifest, read_run_json
from diffsweep.providers import get
from diffsweep.providers.base import ensure_tiny
from diffsweep.run.attempts import RunResult
from diffsweep.run.local import run_sweep

BASE = ["sweep.params.num_inference_steps=2", "sweep.grid.seed=[0]", "sweep.grid.prompt=[a fox]"]

# (diffusers prefix, original prefix, kind of block: its inner names are renamed by INNER[kind])
Blocks = list[tuple[str, str, str | None]]
INNER: dict[str, tuple[tuple[str, str], ...]] = {
    "unet_resnet": (("norm1.", "in_layers.0."), ("conv1.", "in_layers.2."), ("norm2.", "out_layers.0."),
                    ("conv2.", "out_layers.3."), ("time_emb_proj.", "emb_layers.1."),
                    ("conv_shortcut.", "skip_connection.")),
    "vae_resnet": (("conv_shortcut.", "nin_shortcut."),),
    "vae_attention": (("group_norm.", "norm."), ("to_q.", "q."), ("to_k.", "k."), ("to_v.", "v."),
                      ("to_out.0.", "proj_out.")),
}


def _unet_blocks(config: Any) -> Blocks:
    """UNet prefixes: input_blocks count (layers_per_block + 1) slots per level (resnet at .0, attention at .1,
    the level's downsampler in the next slot); output_blocks hold one resnet more, and the upsampler sits after the
    attention (.2) in cross-attention up blocks, else at .1."""
    n = config.layers_per_block
    blocks: Blocks = [
        ("conv_in.", "input_blocks.0.0.", None), ("time_embedding.linear_1.", "time_embed.0.", None),
        ("time_embedding.linear_2.", "time_embed.2.", None), ("conv_norm_out.", "out.0.", None),
        ("conv_out.", "out.2.", None), ("mid_block.attentions.0.", "middle_block.1.", None),
        ("mid_block.resnets.0.", "middle_block.0.", "unet_resnet"),
        ("mid_block.resnets.1.", "middle_block.2.", "unet_resnet"),
    ]
    for i, up_type in enumerate(config.up_block_types):  # as many levels as down blocks
        for j in range(n):
            slot = (n + 1) * i + j + 1
            blocks += [(f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{slot}.0.", "unet_resnet"),
                       (f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{slot}.1.", None)]
        blocks.append((f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{(n + 1) * (i + 1)}.0.op.", None))
        for j in range(n + 1):
            slot = (n + 1) * i + j
            blocks += [(f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{slot}.0.", "unet_resnet"),
                       (f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{slot}.1.", None)]
        upsampler = 2 if up_type.startswith("CrossAttn") else 1
        blocks.append((f"up_blocks.{i}.upsamplers.0.", f"output_blocks.{(n + 1) * i + n}.{upsampler}.", None))
    return blocks


def _vae_blocks(config: Any) -> Blocks:
    """VAE prefixes: decoder levels are numbered in reverse in the original layout."""
    n, levels = config.layers_per_block, len(config.down_block_types)
    blocks: Blocks = []
    for part in ("encoder", "decoder"):
        blocks += [(f"{part}.conv_norm_out.", f"{part}.norm_out.", None),
                   (f"{part}.mid_block.resnets.0.", f"{part}.mid.block_1.", "vae_resnet"),
                   (f"{part}.mid_block.resnets.1.", f"{part}.mid.block_2.", "vae_resnet"),
                   (f"{part}.mid_block.attentions.0.", f"{part}.mid.attn_1.", "vae_attention")]
    for i in range(levels):
        up = levels - 1 - i
        blocks += [(f"encoder.down_blocks.{i}.resnets.{j}.", f"encoder.down.{i}.block.{j}.", "vae_resnet")
                   for j in range(n)]
        blocks += [(f"decoder.up_blocks.{i}.resnets.{j}.", f"decoder.up.{up}.block.{j}.", "vae_resnet")
                   for j in range(n + 1)]
        blocks += [(f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample.", None),
                   (f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{up}.upsample.", None)]
    return blocks


def _rename(state: dict[str, torch.Tensor], blocks: Blocks) -> dict[str, torch.Tensor]:
    """Keys under no listed prefix (e.g. the VAE's conv_in, quant_conv) keep their name."""
    renamed = {}
    for key, tensor in state.items():
        for hf, ldm, kind in blocks:
            if key.startswith(hf):
                rest = key.removeprefix(hf)
                for old, new in INNER.get(kind or "", ()):
                    if rest.startswith(old):
                        rest = new + rest.removeprefix(old)
                        break
                key = ldm + rest
                break
        renamed[key] = tensor
    return renamed


def to_ldm_checkpoint(pipe: Any) -> dict[str, torch.Tensor]:
    """UNet, VAE and CLIP text encoder weights as one original-layout state dict. The VAE's mid attention
    projections are 1x1 convolutions there; transformers >= 5.6 dropped CLIPTextModel's `text_model.` level,
    which the original layout keeps."""
    unet = _rename(pipe.unet.state_dict(), _unet_blocks(pipe.unet.config))
    vae = _rename(pipe.vae.state_dict(), _vae_blocks(pipe.vae.config))
    projections = tuple(f".mid.attn_1.{name}.weight" for name in ("q", "k", "v", "proj_out"))
    vae = {k: v.reshape(*v.shape, 1, 1) if k.endswith(projections) else v for k, v in vae.items()}
    text = {k.removeprefix("text_model."): v for k, v in pipe.text_encoder.state_dict().items()}
    return {**{f"model.diffusion_model.{k}": v for k, v in unet.items()},
            **{f"first_stage_model.{k}": v for k, v in vae.items()},
            **{f"cond_stage_model.transformer.text_model.{k}": v for k, v in text.items()}}


@pytest.fixture(scope="module")
def checkpoint(tiny_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(single-file checkpoint, the tiny:sd diffusers folder it was converted from)."""
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import save_file

    folder = ensure_tiny(get("stable_diffusion"), "sd")
    state = to_ldm_checkpoint(StableDiffusionPipeline.from_pretrained(folder))
    path = tmp_path_factory.mktemp("single-file") / "tiny-sd.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, path)
    return path, folder


def _run(overrides: list[str], tmp_path: Path) -> RunResult:
    return run_sweep(compose_config([*BASE, *overrides], tmp_path / "runs"), out=io.StringIO())


def _pixels(result: RunResult) -> np.ndarray:
    (record,) = read_manifest(result.run_dir)
    with Image.open(result.run_dir / record["outputs"][0]) as image:
        return np.asarray(image)


def test_checkpoint_is_in_the_original_layout(checkpoint: tuple[Path, Path]) -> None:
    """Guards the converter: a diffusers-named key left behind would make the load tests vacuous."""
    from safetensors import safe_open

    with safe_open(checkpoint[0], "pt") as handle:
        keys = set(handle.keys())
    assert {"model.diffusion_model.input_blocks.0.0.weight", "model.diffusion_model.output_blocks.1.2.conv.weight",
            "first_stage_model.encoder.down.0.block.0.conv1.weight", "first_stage_model.decoder.mid.attn_1.q.weight",
            "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight"} <= keys
    assert not [k for k in keys if any(part in k for part in ("down_blocks", "up_blocks", "resnets", "mid_block"))]


def test_diffusers_reads_the_checkpoint_offline(checkpoint: tuple[Path, Path]) -> None:
    """Same weights and same images as the diffusers folder, through diffusers' real single-file loader."""
    from diffusers import StableDiffusionPipeline

    path, folder = checkpoint
    reference = StableDiffusionPipeline.from_pretrained(folder)
    single = StableDiffusionPipeline.from_single_file(str(path), config=str(folder), local_files_only=True)
    for name in ("unet", "vae", "text_encoder"):
        expected, loaded = getattr(reference, name).state_dict(), getattr(single, name).state_dict()
        assert expected.keys() == loaded.keys(), name
        assert all(torch.equal(expected[k], loaded[k]) for k in expected), name
    kwargs = {"prompt": "a fox", "num_inference_steps": 2, "height": 64, "width": 64, "output_type": "np"}
    images = [pipe(**kwargs, generator=torch.Generator().manual_seed(0)).images for pipe in (reference, single)]
    np.testing.assert_allclose(images[1], images[0], atol=1e-5, rtol=0)


def test_sweep_on_the_checkpoint_matches_the_diffusers_folder(checkpoint: tuple[Path, Path], tmp_path: Path) -> None:
    path, folder = checkpoint
    single = _run([f"builder.model='{path}'", f"+builder.single_file_config='{folder}'"], tmp_path)
    assert single.status == "complete", read_manifest(single.run_dir)
    reference = _run(["builder.model=tiny:sd"], tmp_path)
    assert reference.status == "complete", read_manifest(reference.run_dir)
    assert np.array_equal(_pixels(single), _pixels(reference))
    (builder,) = read_run_json(single.run_dir)["builders"]
    assert builder["model"] == builder["model_path"] == str(path)


def test_checkpoint_without_config_offline_fails_before_writing(checkpoint: tuple[Path, Path], tmp_path: Path) -> None:
    """Without single_file_config diffusers infers SD 1.5 and wants its configs from the hub: offline, that is
    refused up front with what to set, and no run folder is made."""
    from diffsweep.errors import ModelUnavailableError

    path = checkpoint[0]
    with pytest.raises(ModelUnavailableError, match=r"needs builder.single_file_config offline"):
        _run([f"builder.model='{path}'"], tmp_path)
    assert not any(tmp_path.rglob("run.json"))
