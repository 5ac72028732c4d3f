"""HiDream-I1 on its tiny stand-in: a size the pipeline keeps is the size made and recorded, sizes it would change are
refused before anything loads (and before each call), CFG with a negative prompt in one batched call, previews, the
prompt cut diffusers really makes, Llama loaded separately into a base without it, a VAE override's area, LoRA."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import assert_batch_equivalent, compose_config, run_cli
from diffsweep.errors import EXIT_CONFIG, ConfigError
from diffsweep.execution.cache import PipelineCache
from diffsweep.planning.prepare import prepare
from diffsweep.providers.hidream import made_size
from family_checks import check_item, make_lora, previews_of, refusal, run_ok

WIDE = ["sweep.params.width=144", "sweep.params.height=112"]  # kept: the area of 128x128 at about 9:7


@pytest.fixture(scope="module")
def text_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    return run_ok(["provider=tiny_hidream", *WIDE, "+sweep.grid.negative_prompt=['','blurry']", "previews.every=2"],
                  tmp_path_factory.mktemp("hidream_text"))


def test_a_kept_size_is_made_and_recorded(text_run: tuple[Path, list[dict[str, Any]]]) -> None:
    run_dir, records = text_run
    by_negative = {r["params"]["negative_prompt"]: check_item(run_dir, r).pixels for r in records}
    assert by_negative[""].shape == (112, 144, 3)  # PIL reads the size the manifest, sidecar and `made` state
    assert not np.array_equal(by_negative[""], by_negative["blurry"])  # CFG 5.0 uses the negative prompt
    assert all([p.name for p in previews_of(run_dir, r)] == ["step_0002.png"] for r in records)


def test_diffusers_rescales_sizes_as_the_rule_predicts() -> None:
    """The rule's arithmetic is the pipeline's: a refused size really is made at another size."""
    import torch
    from diffusers import HiDreamImagePipeline

    from diffsweep.providers.base import ensure_tiny
    from diffsweep.providers.hidream import PROVIDER

    pipe = HiDreamImagePipeline.from_pretrained(ensure_tiny(PROVIDER, "hidream"))
    pipe.set_progress_bar_config(disable=True)
    image = pipe("a fox", width=64, height=48, num_inference_steps=1, guidance_scale=0.0, output_type="np",
                 generator=torch.Generator().manual_seed(0)).images[0]
    assert (image.shape[1], image.shape[0]) == made_size(64, 48, 1) == (146, 110)


def test_the_prompt_cut_recorded_is_the_one_diffusers_makes(tmp_path: Path) -> None:
    """All four encoders take 128 tokens, the CLIP ones past their tokenizers' 77: a 107-token prompt is not cut, a
    182-token one is cut at 128 by each CLIP and by T5."""
    middle, long = "fox " * 35, "fox " * 60
    run_dir, records = run_ok(["provider=tiny_hidream", "sweep.params.guidance_scale=0.0",
                               f"sweep.grid.prompt=['{middle.strip()}','{long.strip()}']"], tmp_path)
    by_prompt = {r["params"]["prompt"]: r for r in records}
    assert "prompt_truncated" not in by_prompt[middle.strip()]
    cut = by_prompt[long.strip()]["prompt_truncated"]["prompt"]
    assert {slot: (c["used_tokens"], c["tokens"]) for slot, c in cut.items()} == {
        "tokenizer": (128, 182), "tokenizer_2": (128, 182), "tokenizer_3": (128, 181)}


def test_lora_scale_zero_is_the_base_model(text_run: tuple[Path, list[dict[str, Any]]], tmp_path: Path) -> None:
    base_dir, records = text_run
    base = next(r for r in records if r["params"]["negative_prompt"] == "")
    lora = make_lora("HiDreamImagePipeline", "hidream", tmp_path / "lora", ["to_q", "to_k", "to_v", "to_out"])
    run_dir, lora_records = run_ok(["provider=tiny_hidream", *WIDE, "+sweep.params.negative_prompt=''", lora,
                                    "+sweep.grid.lora.style=[0.0,10.0]"], tmp_path / "runs", PipelineCache())
    by_scale = {r["params"]["lora.style"]: check_item(run_dir, r).pixels for r in lora_records}
    assert_batch_equivalent(by_scale[0.0], check_item(base_dir, base).pixels)
    assert np.abs(by_scale[10.0].astype(int) - by_scale[0.0].astype(int)).max() > 8


def test_llama_loads_separately_into_a_base_without_it(text_run: tuple[Path, list[dict[str, Any]]],
                                                        tmp_path: Path) -> None:
    """As the published repos: the base model has no text_encoder_4/tokenizer_4, builder.components supplies them."""
    import json
    import shutil

    from diffsweep.providers.base import ensure_tiny
    from diffsweep.providers.hidream import PROVIDER

    built = ensure_tiny(PROVIDER, "hidream")
    base = tmp_path / "no-llama"
    shutil.copytree(built, base, ignore=shutil.ignore_patterns("text_encoder_4", "tokenizer_4"))
    index = json.loads((base / "model_index.json").read_text())
    del index["text_encoder_4"], index["tokenizer_4"]
    (base / "model_index.json").write_text(json.dumps(index))
    llama = ", ".join(f"{slot}: {{model: '{built}', subfolder: {slot}}}" for slot in ("text_encoder_4", "tokenizer_4"))
    run_dir, records = run_ok(["provider=tiny_hidream", f"builder.model={base}", f"+builder.components={{{llama}}}",
                               *WIDE, "+sweep.params.negative_prompt=''"], tmp_path / "runs")
    base_dir, base_records = text_run
    expected = next(r for r in base_records if r["params"]["negative_prompt"] == "")
    assert_batch_equivalent(check_item(run_dir, records[0]).pixels, check_item(base_dir, expected).pixels)


@pytest.fixture(scope="module")
def two_level_vae(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A VAE of factor 2 for the tiny model: the pipeline's fixed area becomes 256x256 px."""
    import torch
    from diffusers import AutoencoderKL

    folder = tmp_path_factory.mktemp("vae2")
    torch.manual_seed(0)
    AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                  block_out_channels=(4, 4), latent_channels=4, norm_num_groups=1, mid_block_add_attention=False,
                  shift_factor=0.1159, scaling_factor=0.3611).save_pretrained(folder)
    return f"+builder.components={{vae: {{model: '{folder}'}}}}"


def test_a_vae_override_sets_the_area(two_level_vae: str, tmp_path: Path) -> None:
    """The plan reads a local VAE override's factor; the run makes and records the size at its area."""
    from diffsweep.config.schema import validate_config

    with pytest.raises(ConfigError) as caught:
        doc = compose_config(["provider=tiny_hidream", "sweep.grid.prompt=[a fox]", two_level_vae], tmp_path / "bad")
        validate_config(doc)
        prepare(doc)
    assert "128x128 is not a size HiDreamImagePipeline makes: it rescales every size to the area of 256x256 px" in str(
        caught.value)
    run_dir, records = run_ok(["provider=tiny_hidream", two_level_vae, "sweep.params.width=288",
                               "sweep.params.height=224", "sweep.params.guidance_scale=0.0"], tmp_path / "runs")
    assert made_size(288, 224, 2) == (288, 224)
    assert check_item(run_dir, records[0]).pixels.shape == (224, 288, 3)


def test_the_loaded_model_is_checked_before_each_call(two_level_vae: str) -> None:
    """What the plan cannot know (a hub VAE of another factor) is caught on the loaded pipeline, before the call."""
    import torch

    from diffsweep.providers.hidream import PROVIDER

    folder = two_level_vae.split("'")[1]
    builder = {"model": "tiny:hidream", "pipeline": "HiDreamImagePipeline", "components": {"vae": {"model": folder}}}
    pipe = PROVIDER.load(builder, torch.float32)
    spec = PROVIDER.spec("HiDreamImagePipeline")
    PROVIDER.prepare_call(pipe, spec, {"width": 288, "height": 224})
    with pytest.raises(ValueError, match="144x112 is not a size .* area of 256x256 px .* would make 288x224"):
        PROVIDER.prepare_call(pipe, spec, {"width": 144, "height": 112})


@pytest.mark.parametrize(("overrides", "message"), [
    (["sweep.params.width=64", "sweep.params.height=64"],
     "sweep.params.width: width x height 64x64 is not a size HiDreamImagePipeline makes: it rescales every size to "
     "the area of 128x128 px at the asked aspect ratio, each side a multiple of 2, and would make 128x128; sizes it "
     "keeps near this aspect ratio (width x height): 128x128"),
    (["sweep.params.width=129"], "129x128 is not a size HiDreamImagePipeline makes: it rescales every size to the area of 128x128 px at the asked aspect ratio, each side a multiple of 2, and would make 128x126"),
    # the width is the preset's (sweep.params.width is null): the message names where it was set
    (["sweep.params.height=96"], "generation.width: width x height 128x96 is not a size"),
    (["+sweep.params.max_sequence_length=64"], "sweep.params.max_sequence_length: not a parameter of "
                                               "HiDreamImagePipeline"),
])
def test_rules_at_plan_time(overrides: list[str], message: str, tmp_path: Path) -> None:
    assert message in refusal("tiny_hidream", overrides, tmp_path / "runs")


def test_the_published_size_rule_from_the_command_line(tmp_path: Path) -> None:
    """The real presets' area (VAE factor 8): 16:9 at 1920x1080 is refused with exit 2, naming what would be made."""
    result = run_cli(["provider=hidream_i1_dev", "sweep.grid.prompt=[a fox]", "sweep.params.width=1920",
                      "sweep.params.height=1080", "dry_run=true"], cwd=tmp_path)
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert "sweep.params.width: width x height 1920x1080" in result.stderr
    assert "would make 1360x768" in result.stderr
    assert not any(tmp_path.iterdir())
