"""Flux, Qwen-Image and Wan beyond the shared contract: their plan-time rules, input-image pipelines and image-to-video.

The tiny factories build only the text-to-image/-video layouts; the input-image pipelines whose components differ
(Flux Fill's wider transformer input, Wan I2V's image-conditioned transformer, a Kontext VAE that keeps its ~1 MP
conditioning image cheap) are built here from the same tiny parts into local folders and loaded by path.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from conftest import compose_config, read_manifest, run_cli
from diffsweep import media
from diffsweep.errors import EXIT_CONFIG, ConfigError
from diffsweep.paths import conf_dir
from diffsweep.providers import get
from diffsweep.run.attempts import RunResult
from diffsweep.run.local import run_sweep
from diffsweep.run.verify import verify_run

PROMPT = "sweep.grid.prompt=[a red fox in fresh snow]"


def _run(overrides: list[str], tmp_path: Path) -> tuple[RunResult, list[dict[str, Any]]]:
    result = run_sweep(compose_config([PROMPT, *overrides], tmp_path / "runs"), out=io.StringIO())
    return result, read_manifest(result.run_dir)


def _ok_run(overrides: list[str], tmp_path: Path) -> tuple[Path, list[dict[str, Any]]]:
    result, records = _run(overrides, tmp_path)
    assert result.status == "complete", records
    return result.run_dir, sorted(records, key=lambda r: r["index"])


def _pixels(path: Path) -> np.ndarray:
    if path.suffix == ".mp4":
        return media.decode_mp4(path.read_bytes())
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _picture(path: Path, size: tuple[int, int], colour: tuple[int, int, int]) -> str:
    """A small input image with a diagonal edge, so different inputs differ in content, not only in colour."""
    array = np.zeros((size[1], size[0], 3), np.uint8)
    array[...] = colour
    array[np.triu_indices(min(size), 1)] = 255 - np.array(colour, np.uint8)
    Image.fromarray(array).save(path)
    return str(path)


def _quote(paths: list[str]) -> str:
    return "[" + ",".join(f"'{p}'" for p in paths) + "]"


def _save(root: Path, provider: str, pipeline: str, components: Callable[[], dict[str, Any]]) -> str:
    """A tiny pipeline saved as a diffusers folder, to be loaded through `builder.model=<folder>`."""
    target = root / pipeline
    get(provider).spec(pipeline).load_class()(**components()).save_pretrained(target)
    return str(target)


# ----- plan-time rules: exit 2, nothing written, no model loaded -------------------------------------------
def test_plan_time_errors_exit_2_via_the_cli(tmp_path: Path) -> None:
    """A size off the 16 grid and a missing input file are both reported, in one run that writes nothing."""
    root, missing = tmp_path / "runs", tmp_path / "nowhere.png"
    result = run_cli(["provider=tiny_flux", "builder.pipeline=FluxImg2ImgPipeline", "sweep.params.width=1000",
                      f"+sweep.params.image='{missing}'", f"output.root={root}"], cwd=tmp_path)
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert "sweep.params.width: width 1000 must be a multiple of 16 for flux; nearest: 992 or 1008" in result.stderr
    assert f"sweep.params.image: input file {missing} does not exist" in result.stderr
    assert not root.exists()


@pytest.mark.parametrize(("overrides", "message"), [
    pytest.param(["provider=tiny_wan", "+sweep.params.num_frames=8"],
                 "sweep.params.num_frames: num_frames 8 must be 4k+1 for wan; nearest: 5 or 9", id="wan-frames"),
    pytest.param(["provider=tiny_wan22", "+sweep.grid.num_frames=[5,12]"],
                 "sweep.grid.num_frames: num_frames 12 must be 4k+1 for wan; nearest: 9 or 13", id="wan22-frames-axis"),
    pytest.param(["provider=tiny_qwen_image", "sweep.params.height=100"],
                 "height 100 must be a multiple of 16 for qwen_image; nearest: 96 or 112", id="qwen-size"),
    pytest.param(["provider=tiny_flux", "+sweep.params.max_sequence_length=600"],
                 "max_sequence_length 600 exceeds 512", id="flux-sequence"),
    pytest.param(["provider=tiny_qwen_image", "+sweep.params.max_sequence_length=2048"],
                 "max_sequence_length 2048 exceeds 1024", id="qwen-sequence"),
    pytest.param(["provider=tiny_flux", "builder.pipeline=FluxFillPipeline", "+sweep.params.image=inputs/example.png"],
                 "FluxFillPipeline needs a mask_image", id="fill-mask"),
    pytest.param(["provider=tiny_flux", "builder.pipeline=FluxFillPipeline", "sweep.params.negative_prompt=blurry",
                  "+sweep.params.image=inputs/example.png", "+sweep.params.mask_image=inputs/example_mask.png"],
                 "sweep.params.negative_prompt: not a parameter of FluxFillPipeline", id="fill-negative"),
    pytest.param(["provider=tiny_wan", "builder.pipeline=WanImageToVideoPipeline"],
                 "WanImageToVideoPipeline needs an input image", id="i2v-image"),
    pytest.param(["provider=tiny_flux", "+sweep.params.fps=8"], "fps applies to video output", id="flux-fps"),
])
def test_rules_fail_at_plan_time(overrides: list[str], message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        _run(overrides, tmp_path)
    assert message in str(caught.value)
    assert caught.value.exit_code == EXIT_CONFIG
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("problem", ["missing", "undecodable"])
def test_bad_input_file_fails_validation_before_any_load(problem: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    good = _picture(tmp_path / "good.png", (32, 32), (200, 40, 40))
    bad = tmp_path / "bad.png"
    if problem == "undecodable":
        bad.write_bytes(b"not a png")
    monkeypatch.setattr(get("flux"), "load", lambda *_: pytest.fail("a model was loaded"))
    with pytest.raises(ConfigError) as caught:
        _run(["provider=tiny_flux", "builder.pipeline=FluxImg2ImgPipeline",
              f"+sweep.grid.image={_quote([good, str(bad)])}"], tmp_path)
    expected = "does not exist" if problem == "missing" else "is not a decodable image"
    assert f"sweep.grid.image: input file {bad} {expected}" in str(caught.value)
    assert caught.value.exit_code == EXIT_CONFIG
    assert not (tmp_path / "runs").exists()


# ----- image-input pipelines on tiny weights -------------------------------------------------------------------
@pytest.mark.parametrize(("preset", "pipeline"), [("tiny_flux", "FluxImg2ImgPipeline"),
                                                  ("tiny_qwen_image", "QwenImageImg2ImgPipeline")])
def test_img2img_grid_over_input_files(preset: str, pipeline: str, tmp_path: Path) -> None:
    inputs = [_picture(tmp_path / "red.png", (48, 48), (220, 30, 30)),
              _picture(tmp_path / "blue.png", (40, 56), (30, 30, 220))]
    run_dir, records = _ok_run([f"provider={preset}", f"builder.pipeline={pipeline}", "sweep.grid.seed=[0]",
                                f"+sweep.grid.image={_quote(inputs)}", "+sweep.params.strength=0.4"], tmp_path)
    assert [r["params"]["image"] for r in records] == inputs
    for record, source in zip(records, inputs, strict=True):
        sidecar = json.loads((run_dir / record["outputs"][0]).with_suffix(".json").read_text())
        assert sidecar["params"]["image"] == source and sidecar["params"]["strength"] == 0.4
    first, second = (_pixels(run_dir / r["outputs"][0]) for r in records)
    assert first.shape == second.shape == (32, 32, 3)  # resized to the preset's height x width
    # strength 0.4 of 2 steps starts from the half-noised input; 0.6 would start from pure noise and ignore it
    assert np.abs(first.astype(int) - second.astype(int)).max() > 0


@pytest.fixture(scope="module")
def flux_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Flux Fill (transformer input: latents + masked-image latents + mask = 12 channels) and a Flux with an 8x VAE,
    so that Kontext's ~1 MP conditioning image becomes 4096 tokens rather than 262144."""
    from diffusers import AutoencoderKL, FluxTransformer2DModel

    from diffsweep.providers import tiny_factories

    def fill() -> dict[str, Any]:
        transformer = FluxTransformer2DModel(patch_size=1, in_channels=12, out_channels=4, num_layers=1,
                                             num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
                                             joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8])
        return {**tiny_factories()["flux"](), "transformer": transformer}

    def deep_vae() -> dict[str, Any]:
        vae = AutoencoderKL(block_out_channels=(4, 4, 4, 4), down_block_types=["DownEncoderBlock2D"] * 4,
                            up_block_types=["UpDecoderBlock2D"] * 4, layers_per_block=1, latent_channels=1,
                            norm_num_groups=1, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609,
                            scaling_factor=1.5035)
        return {**tiny_factories()["flux"](), "vae": vae}

    root = tmp_path_factory.mktemp("flux-folders")
    return {"fill": _save(root, "flux", "FluxFillPipeline", fill),
            "kontext": _save(root, "flux", "FluxKontextPipeline", deep_vae)}


def test_flux_fill_inpaints_with_image_and_mask(flux_folders: dict[str, str], tmp_path: Path) -> None:
    image = _picture(tmp_path / "in.png", (32, 32), (40, 160, 40))
    mask = Image.new("L", (32, 32))
    mask.paste(255, (8, 8, 24, 24))
    mask.save(tmp_path / "mask.png")
    run_dir, records = _ok_run(["provider=tiny_flux", "builder.pipeline=FluxFillPipeline",
                                f"builder.model='{flux_folders['fill']}'", f"+sweep.params.image='{image}'",
                                f"+sweep.params.mask_image='{tmp_path / 'mask.png'}'"], tmp_path)
    assert len(records) == 2
    assert all(r["params"]["mask_image"] == str(tmp_path / "mask.png") for r in records)
    assert all(_pixels(run_dir / r["outputs"][0]).shape == (32, 32, 3) for r in records)
    assert verify_run(run_dir).passed


def test_flux_kontext_keeps_the_requested_size_with_and_without_an_image(flux_folders: dict[str, str],
                                                                         tmp_path: Path) -> None:
    image = _picture(tmp_path / "in.png", (48, 32), (90, 90, 200))
    edit = [f"builder.model='{flux_folders['kontext']}'", f"+sweep.params.image='{image}'"]
    for extra in (edit, []):  # diffusers alone would return 1024x1024 either way
        run_dir, records = _ok_run(["provider=tiny_flux", "builder.pipeline=FluxKontextPipeline", *extra], tmp_path)
        assert [_pixels(run_dir / r["outputs"][0]).shape for r in records] == [(32, 32, 3)] * 2


@pytest.mark.parametrize(("pipeline", "image"), [("QwenImageEditPipeline", "inputs/example.png"),
                                             ("QwenImageEditPlusPipeline", "[inputs/example.png,inputs/example_wide.png]")])
def test_qwen_image_edit_without_torchvision_fails_with_a_clear_message(pipeline: str, image: str,
                                                                        tmp_path: Path) -> None:
    from transformers.utils import is_torchvision_available

    if is_torchvision_available():
        pytest.skip("torchvision is installed: the Edit processor can be built")
    result, records = _run(["provider=tiny_qwen_image", f"builder.pipeline={pipeline}",
                            f"+sweep.params.image={image}"], tmp_path)
    assert result.exit_code == 3 and not records  # the builder cannot be built: a load failure, no item made
    assert all("needs torchvision" in reason for reason in result.load_failures.values())


# ----- Wan image-to-video --------------------------------------------------------------------------------------
def _wan_i2v_transformer(image_dim: int | None) -> Any:
    """The tiny Wan transformer widened for I2V: 16 noise + 4 mask + 16 first-frame latent channels."""
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=36,
                                 out_channels=16, text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2,
                                 cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
                                 image_dim=image_dim, added_kv_proj_dim=24 if image_dim else None)


@pytest.fixture(scope="module")
def wan_i2v_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Wan 2.1 I2V (CLIP image encoder feeding the transformer) and Wan 2.2 A14B I2V (two experts, no encoder)."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    from diffsweep.providers import tiny_factories

    def wan21() -> dict[str, Any]:
        encoder = CLIPVisionModel(CLIPVisionConfig(hidden_size=4, intermediate_size=16, num_hidden_layers=2,
                                                   num_attention_heads=2, image_size=32, patch_size=4))
        return {**tiny_factories()["wan"](), "transformer": _wan_i2v_transformer(4), "image_encoder": encoder,
                "image_processor": CLIPImageProcessor(crop_size=32, size=32)}

    def wan22() -> dict[str, Any]:
        return {**tiny_factories()["wan22"](), "transformer": _wan_i2v_transformer(None),
                "transformer_2": _wan_i2v_transformer(None)}

    return {"2.1": _save(tmp_path_factory.mktemp("wan21"), "wan", "WanImageToVideoPipeline", wan21),
            "2.2": _save(tmp_path_factory.mktemp("wan22"), "wan", "WanImageToVideoPipeline", wan22)}


@pytest.mark.parametrize("layout", ["2.1", "2.2"])
def test_wan_image_to_video(layout: str, wan_i2v_folders: dict[str, str], tmp_path: Path) -> None:
    inputs = [_picture(tmp_path / "a.png", (48, 32), (200, 120, 40)),
              _picture(tmp_path / "b.png", (48, 32), (40, 90, 200))]
    builder = ["provider=tiny_wan", "builder.pipeline=WanImageToVideoPipeline", "sweep.grid.seed=[0,1]",
               f"builder.model='{wan_i2v_folders[layout]}'"]
    run_dir, records = _ok_run([*builder, f"+sweep.grid.image={_quote(inputs)}"], tmp_path)
    videos = {(r["params"]["image"], r["seed"]): _pixels(run_dir / r["outputs"][0]) for r in records}
    assert len(videos) == 4 and all(v.shape == (5, 32, 32, 3) for v in videos.values())
    if layout == "2.1":  # the tiny 2.2 experts barely respond to the first-frame latents (< 1/255 after decoding)
        assert np.abs(videos[inputs[0], 0].astype(int) - videos[inputs[1], 0].astype(int)).max() > 0

    # The two seeds of an input shared one call above; one call each must give the same videos. Frames agree to ~1e-7
    # before encoding, but a value on a rounding edge can flip one level and H.264 (crf 18) may spread that over a
    # block, so compare the mean: a batching bug (e.g. image embeddings paired with the wrong item) moves it by tens.
    single_dir, singles = _ok_run([*builder, f"+sweep.params.image='{inputs[0]}'", "sweep.batch_size=1"], tmp_path)
    batched = {r["item_id"]: videos[r["params"]["image"], r["seed"]] for r in records}
    for record in singles:
        assert np.abs(_pixels(single_dir / record["outputs"][0]).astype(int) - batched[record["item_id"]]).mean() < 0.1


def test_qwen_image_edit_gets_its_input_image_once_per_prompt() -> None:
    """diffusers passes `image` to the Qwen2-VL processor as given; a batch of prompts needs one image each
    (checked on a GPU with torchvision: a single image for two prompts raises inside transformers)."""
    provider = get("qwen_image")
    spec = provider.spec("QwenImageEditPipeline")
    image = str(conf_dir() / "inputs" / "example.png")
    items = [{**spec.defaults, "prompt": f"make it {colour}", "seed": seed, "image": image}
             for seed, colour in enumerate(("red", "blue"))]
    kwargs = provider.call_kwargs(spec, items, [object(), object()])
    assert kwargs["prompt"] == ["make it red", "make it blue"]
    assert [image.size for image in kwargs["image"]] == [(64, 64), (64, 64)]


def test_qwen_image_edit_plus_numbers_its_input_images_in_one_prompt_per_call(tmp_path: Path) -> None:
    """Edit Plus writes "Picture 1..n" into each prompt and hands the processor the n images once per call, so a batch
    of prompts would pair images and prompts wrongly: it takes one prompt per call, with every image, in order."""
    provider = get("qwen_image")
    spec = provider.spec("QwenImageEditPlusPipeline")
    assert provider.batch_limit(spec) == 1
    images = [_picture(tmp_path / "a.png", (48, 32), (200, 0, 0)), _picture(tmp_path / "b.png", (32, 64), (0, 0, 200))]
    item = {**spec.defaults, "prompt": "the cat of picture 1 on the sofa of picture 2", "seed": 0, "image": images}
    kwargs = provider.call_kwargs(spec, [item], [object()])
    assert kwargs["prompt"] == [item["prompt"]]
    assert [(picture.mode, picture.size) for picture in kwargs["image"]] == [("RGB", (48, 32)), ("RGB", (32, 64))]
