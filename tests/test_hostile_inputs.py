"""Hostile input, breadth: bad configurations and input files a user can write, each refused with
exit code 2, the key path, the rule broken and nothing written; never a traceback or a bare
exception name. Most go through `run_sweep` in-process (the checks the CLI runs, without its start-up
cost); a handful go through the real CLI. Cases already covered elsewhere (test_config_errors,
test_input_checks, test_plan_scale's grids past max_items, the provider tests) are not repeated here."""

from __future__ import annotations

import io
import re
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from conftest import compose_config, read_manifest, run_cli
from diffsweep.errors import EXIT_CONFIG, ConfigError
from diffsweep.paths import conf_dir
from diffsweep.run.local import run_sweep

EXAMPLE = conf_dir() / "inputs" / "example.png"  # 64x64
QUICK = ["sweep.params.num_inference_steps=1"]
IMG2IMG = ["builder.pipeline=StableDiffusionImg2ImgPipeline", "~generation.height", "~generation.width"]
INPAINT = ["builder.pipeline=StableDiffusionInpaintPipeline", f"+sweep.params.image='{EXAMPLE}'"]
BARE_EXCEPTION = re.compile(r"\b[A-Z][A-Za-z]*(Error|Exception)\b|Traceback")


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of bad input files."""
    folder = tmp_path_factory.mktemp("bad-inputs")
    (folder / "latin1.txt").write_bytes("a fox\ncaf\xe9 au lait\n".encode("latin-1"))
    (folder / "utf16.txt").write_text("a fox\na cat\n", encoding="utf-16")
    (folder / "comments.txt").write_text("# only a comment\n\n   \n")
    (folder / "text.png").write_text("not an image at all")
    (folder / "truncated.png").write_bytes(EXAMPLE.read_bytes()[:100])
    (folder / "a-folder.png").mkdir()
    Image.new("L", (32, 32), 255).save(folder / "small_mask.png")
    return folder


def refused(tmp_path: Path, *overrides: str) -> str:
    """run_sweep on the composed overrides must raise ConfigError (exit 2) and write nothing."""
    root = tmp_path / "runs"
    with pytest.raises(ConfigError) as caught:
        run_sweep(compose_config([*QUICK, *overrides], root), out=io.StringIO())
    message = str(caught.value)
    assert caught.value.exit_code == EXIT_CONFIG
    assert not root.exists(), "a refused config must not create anything under output.root"
    assert not BARE_EXCEPTION.search(message), message
    return message


# (id, overrides with {bad} for the bad-inputs folder, what the message must say)
CASES = [
    # wrong types
    ("bool-as-word", ["dry_run=maybe"], ['dry_run: expected true or false, got "maybe"']),
    ("batch-size-word", ["sweep.batch_size=many"], ['sweep.batch_size: expected "auto" or an integer (≥ 1, ≤ 1024), '
                                                    'got "many"']),
    ("number-axis-word", ["+sweep.grid.guidance_scale=[1,high]"],
     ['sweep.grid.guidance_scale[1]: expected a number or null, got "high"']),
    ("number-for-text", ["builder.variant=16"],
     ["builder.variant: expected a string or null, got 16; YAML reads unquoted digits as a number", "quote"]),
    ("list-for-text", ["sweep.params.negative_prompt=[a,b]"],
     ['sweep.params.negative_prompt: expected a string or null, got ["a", "b"]']),
    ("mapping-for-device", ["device={type: cuda}"], ['device: expected auto, cpu, cuda, cuda:N or mps, got {"type": '
                                                     '"cuda"}']),
    # out of range
    ("steps-zero", ["sweep.params.num_inference_steps=0"],
     ["sweep.params.num_inference_steps: 0 is less than the minimum of 1"]),
    ("height-huge", ["sweep.params.height=100000"], ["sweep.params.height: 100000 is greater than the maximum of 16384"]),
    ("previews-negative", ["previews.every=-1"], ["previews.every: -1 is less than the minimum of 0"]),
    ("seed-negative", ["sweep.grid.seed=[0,-1]"], ["sweep.grid.seed[1]: expected an integer seed (0 to 2**64-1)",
                                                   "got -1"]),
    ("seed-past-64-bits", ["sweep.grid.seed=[18446744073709551616]"],
     ["sweep.grid.seed[0]: expected an integer seed (0 to 2**64-1)", "got 18446744073709551616"]),
    ("strength-above-one", [*IMG2IMG, f"+sweep.params.image='{EXAMPLE}'", "+sweep.params.strength=1.5"],
     ["sweep.params.strength: 1.5 is greater than the maximum of 1"]),
    ("strength-times-steps-below-one", [*IMG2IMG, f"+sweep.params.image='{EXAMPLE}'", "+sweep.params.strength=0.3",
                                        "sweep.params.num_inference_steps=2"],
     ["sweep.params.strength: strength 0.3 x num_inference_steps 2 leaves no denoising step: "
      "StableDiffusionImg2ImgPipeline runs int(2 x 0.3) = 0 steps; raise strength to at least 0.5 or "
      "num_inference_steps to at least 4"]),
    ("strength-zero-sdxl-inpaint", ["provider=tiny_sdxl", "builder.pipeline=StableDiffusionXLInpaintPipeline",
                                    f"+sweep.params.image='{EXAMPLE}'", f"+sweep.params.mask_image='{EXAMPLE}'",
                                    "+sweep.params.strength=0"],
     ["sweep.params.strength: strength 0 leaves no denoising step in StableDiffusionXLInpaintPipeline"]),
    # unknown keys, anywhere
    ("unknown-top-level", ["+colour=red"], ["colour: unknown key; allowed keys: allowed_modules, builder"]),
    ("unknown-builder-key", ["+builder.modle=x"], ["builder.modle: unknown key (did you mean 'model'?)"]),
    ("unknown-optimization-key", ["+optimization.vae_tilling=true"],
     ["optimization.vae_tilling: unknown key (did you mean 'vae_tiling'?)"]),
    ("unknown-output-key", ["+output.dir=x"], ["output.dir: unknown key; allowed keys: root"]),
    ("unknown-tracking-key", ["+tracking.url=x"], ["tracking.url: unknown key (did you mean 'uri'?)"]),
    ("unknown-component-key", [f"+builder.components={{vae: {{model: '{EXAMPLE.parent}', subfoldr: vae}}}}"],
     ["builder.components.vae.subfoldr: unknown key (did you mean 'subfolder'?)"]),
    ("unknown-range-key", ["+sweep.grid.guidance_scale={start:1,stop:5,stpe:1}"],
     ["sweep.grid.guidance_scale.stpe: unknown key", "allowed keys: start, step, stop"]),
    ("unknown-enum-values", ["sweep.mode=shuffle", "tracking.backend=wandb", "builder.dtype=float8"],
     ['sweep.mode: expected one of "product", "zip", got "shuffle"',
      'tracking.backend: expected one of "none", "mlflow", "tensorboard", got "wandb"',
      'builder.dtype: expected one of "auto", "float32", "float16", "bfloat16", got "float8"']),
    ("bad-module-prefix", ["allowed_modules=[diffusers,1bad]"], ['allowed_modules[1]: expected a string matching']),
    # empty axes and ranges
    ("range-empty", ["+sweep.grid.guidance_scale={start:5,stop:1}"], ["sweep.grid.guidance_scale: range", "is empty"]),
    ("range-step-zero", ["+sweep.grid.guidance_scale={start:1,stop:5,step:0}"],
     ["sweep.grid.guidance_scale.step: must not be 0"]),
    ("file-axis-without-values", ["sweep=prompts_file", "sweep.grid.prompt.file='{bad}/comments.txt'"],
     ["sweep.grid.prompt.file:", "comments.txt has no values (one per line expected)"]),
    # values a provider cannot take
    ("unknown-pipeline", ["builder.pipeline=StableDiffusionPipline"],
     ["builder.pipeline: 'StableDiffusionPipline' is not a stable_diffusion pipeline (did you mean "
      "'StableDiffusionPipeline'?)"]),
    ("image-on-text-to-image", [f"+sweep.params.image='{EXAMPLE}'"],
     ["sweep.params.image: not a parameter of StableDiffusionPipeline"]),
    ("img2img-without-image", IMG2IMG, ["StableDiffusionImg2ImgPipeline needs an input image"]),
    # prompt files that are not UTF-8 text
    ("prompt-file-latin1", ["sweep=prompts_file", "sweep.grid.prompt.file='{bad}/latin1.txt'"],
     ["sweep.grid.prompt.file:", "latin1.txt is not UTF-8 text: byte 0xe9 on line 2", "save it as UTF-8"]),
    ("prompt-file-utf16", ["sweep=prompts_file", "sweep.grid.prompt.file='{bad}/utf16.txt'"],
     ["sweep.grid.prompt.file:", "utf16.txt is UTF-16 text", "save it as UTF-8"]),
    ("prompt-file-binary", ["sweep=prompts_file", f"sweep.grid.prompt.file='{EXAMPLE}'"],
     ["sweep.grid.prompt.file:", "example.png is a binary file, not UTF-8 text"]),
    ("prompt-file-is-a-folder", ["sweep=prompts_file", "sweep.grid.prompt.file='{bad}'"],
     ["sweep.grid.prompt.file: cannot read", "Is a directory"]),
    # missing, unreadable and non-image inputs
    ("image-truncated", [*IMG2IMG, "+sweep.params.image='{bad}/truncated.png'"],
     ["sweep.params.image: input file", "truncated.png is not a decodable image"]),
    ("image-is-a-folder", [*IMG2IMG, "+sweep.params.image='{bad}/a-folder.png'"],
     ["sweep.params.image: input file", "a-folder.png is a folder, not an image file"]),
    ("image-axis-one-bad", [*IMG2IMG, f"+sweep.grid.image=['{EXAMPLE}','{{bad}}/gone.png']"],
     ["sweep.grid.image: input file", "gone.png does not exist"]),
    ("image-list-on-one-image-pipeline", [*IMG2IMG, f"+sweep.params.image=['{EXAMPLE}','{EXAMPLE}']"],
     ["sweep.params.image: StableDiffusionImg2ImgPipeline takes one input image; 2 were given"]),
    ("image-list-empty", [*IMG2IMG, "+sweep.params.image=[]"],
     ["sweep.params.image: expected an image file path, or a non-empty list of them, got []"]),
    ("image-list-one-missing", ["builder.pipeline=QwenImageEditPlusPipeline", "builder.provider=qwen_image",
                                "builder.model=tiny:qwen_image", f"+sweep.params.image=['{EXAMPLE}','{{bad}}/gone.png']"],
     ["sweep.params.image[1]: input file", "gone.png does not exist"]),
    ("mask-list", [*INPAINT, f"+sweep.params.mask_image=['{EXAMPLE}']"],
     ["sweep.params.mask_image: expected a string or null, got ["]),
    ("mask-not-an-image", [*INPAINT, "+sweep.params.mask_image='{bad}/text.png'"],
     ["sweep.params.mask_image: input file", "text.png is not a decodable image"]),
    ("mask-wrong-size-on-an-axis", [*INPAINT, f"+sweep.grid.mask_image=['{EXAMPLE}','{{bad}}/small_mask.png']"],
     ["sweep.grid.mask_image: mask size 32x32 does not match image size 64x64"]),
    # local model and component paths that do not exist
    ("model-path-missing", ["builder.model='{bad}/no-such-model'"],
     ["builder.model:", "no-such-model does not exist (a local path", "a hub model is named 'org/name'"]),
    ("model-relative-path-missing", ["builder.model=./models/sd15"], ["builder.model: ./models/sd15 does not exist"]),
    ("checkpoint-file-missing", ["builder.model=sd15.safetensors"], ["builder.model: sd15.safetensors does not exist"]),
    ("component-path-missing", ["+builder.components={vae: {model: '{bad}/no-vae'}}"],
     ["builder.components.vae.model:", "no-vae does not exist"]),
    ("single-file-config-missing", ["+builder.single_file_config=./configs/sd15"],
     ["builder.single_file_config: ./configs/sd15 does not exist"]),
]


@pytest.mark.parametrize(("overrides", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_refused_with_key_path_and_rule(overrides: list[str], expected: list[str], bad: Path,
                                                     tmp_path: Path) -> None:
    message = refused(tmp_path, *(o.replace("{bad}", str(bad)) for o in overrides))
    for text in expected:
        assert text in message, message


def test_thousands_of_bad_values_are_counted_not_listed(tmp_path: Path) -> None:
    message = refused(tmp_path, "sweep.grid.seed=[" + ",".join(str(-n) for n in range(1, 3001)) + "]")
    assert message.startswith("invalid configuration (3000 errors):")
    assert "sweep.grid.seed[0]: expected an integer seed" in message and "... and 2980 more" in message
    assert len(message.splitlines()) == 22


def test_there_are_at_least_thirty_distinct_cases() -> None:
    assert len({case[0] for case in CASES}) == len(CASES) >= 30


# --- through the real CLI: YAML 1.1 traps in a user's file, and a few of the above --------------------

YAML_TRAPS = [
    ("yaml-on-is-true", "grid: {prompt: [on, a fox]}",
     ["sweep.grid.prompt[0]: expected a string or null, got true; YAML reads unquoted yes/no/on/off/true/false as true "
      "or false: quote the value to keep it as text, e.g. 'no'"]),
    ("yaml-017-is-octal", "grid: {prompt: [a fox]}\nparams: {negative_prompt: 017}",
     ["sweep.params.negative_prompt: expected a string or null, got 15; YAML reads unquoted digits as a number "
      "(017 as octal 15"]),
    ("yaml-12:30-is-base-60", "grid: {prompt: [a fox]}\nparams: {negative_prompt: 12:30}",
     ["sweep.params.negative_prompt: expected a string or null, got 750", "12:30 as 750"]),
]


@pytest.mark.parametrize(("body", "expected"), [c[1:] for c in YAML_TRAPS], ids=[c[0] for c in YAML_TRAPS])
def test_yaml_traps_in_a_users_file_say_to_quote(body: str, expected: list[str], tmp_path: Path) -> None:
    conf = tmp_path / "conf" / "sweep"
    conf.mkdir(parents=True)
    (conf / "mine.yaml").write_text(textwrap.dedent(f"name: mine\n{body}\n"))
    stderr = cli_refused(tmp_path, "--config-dir", str(tmp_path / "conf"), "sweep=mine")
    for text in expected:
        assert text in stderr, stderr
    assert str(conf / "mine.yaml") in stderr  # where to fix it


def cli_refused(tmp_path: Path, *args: str) -> str:
    result = run_cli([*args], cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert not (tmp_path / "runs").exists()
    assert not BARE_EXCEPTION.search(result.stderr), result.stderr
    return result.stderr


def test_cli_refuses_a_missing_local_model_path_before_asking_the_hub(tmp_path: Path) -> None:
    stderr = cli_refused(tmp_path, "builder.model=./models/mine")
    assert "builder.model: ./models/mine does not exist (a local path" in stderr


# --- a prompt longer than the text encoder takes --------------------------------------------------


def test_a_prompt_the_text_encoder_cuts_is_recorded_and_logged(tmp_path: Path) -> None:
    """tiny_sd's CLIP tokenizer takes 77 tokens (one per character, near enough): the rest is dropped."""
    long = "a lighthouse on a cliff at dusk, " + "with seagulls and waves " * 4 + "the end"
    result = run_sweep(compose_config([*QUICK, "sweep.params.height=32", "sweep.params.width=32",
                                       "sweep.grid.seed=[0]", f"sweep.grid.prompt=['{long}', 'a fox']"],
                                      tmp_path / "runs"), out=io.StringIO())
    records = {r["params"]["prompt"]: r for r in read_manifest(result.run_dir)}
    assert "prompt_truncated" not in records["a fox"]
    cut = records[long]["prompt_truncated"]["prompt"]["tokenizer"]
    assert cut["used_tokens"] == 77 and cut["tokens"] > 77
    dropped = cut["dropped_text"].replace(" ", "")
    assert dropped.endswith("theend") and long.replace(" ", "").endswith(dropped)  # the prompt's tail
    assert "lighthouse" not in dropped  # its start was used
    sidecar = (result.run_dir / records[long]["outputs"][0]).with_suffix(".json")
    assert sidecar.read_text().count("dropped_text") == 1
    log = (result.run_dir / "run.log").read_text()
    assert f"prompt is {cut['tokens']} tokens, tokenizer takes 77; dropped:" in log
