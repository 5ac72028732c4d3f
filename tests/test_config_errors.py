"""Bad input fails before anything is written: exit code 2, the key path and what was expected."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from conftest import run_cli

pytestmark = pytest.mark.quick  # configuration checks: part of make test-fast

CASES = [
    # (id, overrides, extra sweep file content or None, expected substrings)
    ("unknown-key-did-you-mean", ["+sweep.batchsize=4"], None,
     ["sweep.batchsize: unknown key (did you mean 'batch_size'?)"]),
    ("string-for-integer", ['sweep.params.num_inference_steps="30"'], None,
     ['sweep.params.num_inference_steps: expected an integer or null, got "30"']),
    ("grid-element-type", ["sweep.grid.seed=[1,x,3]"], None,
     ['sweep.grid.seed[1]: expected an integer seed', 'got "x"']),
    ("out-of-range", ["sweep.params.guidance_scale=-1"], None,
     ["sweep.params.guidance_scale:", "-1 is less than the minimum of 0"]),
    ("bad-device", ["device=gpu"], None, ['device: expected auto, cpu, cuda, cuda:N or mps, got "gpu"']),
    ("empty-axis", ["sweep.grid.prompt=[]"], None, ["sweep.grid.prompt: expected a non-empty list"]),
    ("unknown-axis", ["+sweep.grid.num_inference_step=[2]"], None,
     ["sweep.grid.num_inference_step: unknown generation parameter (did you mean 'num_inference_steps'?)"]),
    ("zip-lengths", ["sweep.mode=zip", "sweep.grid.seed=[0,1,2]"], None,
     ["zip mode needs axes of equal length; prompt has 2, seed has 3"]),
    ("path-traversal-name", ["sweep.name=../../etc"], None, ["sweep.name: expected a folder name"]),
    ("dotted-class-not-allowed", ["builder.provider=custom", "builder.pipeline=os.system"], None,
     ["builder.pipeline: module 'os' is not in allowed_modules"]),
    ("bad-interpolation", ["sweep.name=${nope}"], None, ["invalid configuration", "nope"]),
    ("missing-prompt-file", ["sweep=prompts_file", "sweep.grid.prompt.file=no-such-prompts.txt"], None,
     ["sweep.grid.prompt.file: cannot read", "no-such-prompts.txt"]),
    ("override-mapping-with-list", ["sweep=prompts_file", "sweep.grid.seed=[0]"], None,
     ["Cannot merge DictConfig with ListConfig", "'~sweep.grid.seed' '+sweep.grid.seed=[...]'"]),
    ("size-rule", ["sweep.params.width=65"], None,
     ["sweep.params.width: width 65 must be a multiple of 8 for stable_diffusion; nearest: 64 or 72"]),
    ("yaml-no-is-false", ["sweep=user"], """\
        name: user
        mode: product
        grid: {prompt: [a fox]}
        params: {negative_prompt: no}
        batch_size: auto
        """, ["sweep.params.negative_prompt: expected a string or null, got false", "user.yaml"]),
    ("yaml-syntax", ["sweep=user"], "name: user\ngrid: {prompt: [a fox\n", ["user.yaml"]),
    ("yaml-duplicate-key", ["sweep=user"], """\
        name: user
        name: other
        mode: product
        grid: {prompt: [a fox]}
        params: {}
        batch_size: auto
        """, ["duplicate", "name"]),
]


@pytest.mark.parametrize(("overrides", "sweep_file", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_config_exits_2_with_key_path_and_writes_nothing(overrides: list[str], sweep_file: str | None,
                                                             expected: list[str], tmp_path: Path) -> None:
    args = list(overrides)
    if sweep_file is not None:
        user_conf = tmp_path / "user_conf"
        (user_conf / "sweep").mkdir(parents=True)
        (user_conf / "sweep" / "user.yaml").write_text(textwrap.dedent(sweep_file))
        args = ["--config-dir", str(user_conf), *args]
    result = run_cli(args, cwd=tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    for text in expected:
        assert text in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists(), "an invalid config must not create a run folder"


def test_every_error_is_reported_at_once(tmp_path: Path) -> None:
    result = run_cli(["device=gpu", "sweep.batch_size=0", "+sweep.params.stepz=3"], cwd=tmp_path)
    assert result.returncode == 2
    assert "(3 errors)" in result.stderr
    for path in ("device:", "sweep.batch_size:", "sweep.params.stepz:"):
        assert path in result.stderr
    assert "(in command-line override 'device=gpu')" in result.stderr


def test_error_names_the_config_file_it_came_from(tmp_path: Path) -> None:
    user_conf = tmp_path / "user_conf"
    (user_conf / "sweep").mkdir(parents=True)
    (user_conf / "sweep" / "typo.yaml").write_text(
        "name: typo\nmode: product\ngrid: {prompt: [a fox]}\nparams: {guidance: 3}\nbatch_size: auto\n")
    result = run_cli(["--config-dir", str(user_conf), "sweep=typo"], cwd=tmp_path)
    assert result.returncode == 2
    assert "sweep.params.guidance: unknown key (did you mean 'guidance_scale'?)" in result.stderr
    assert f"(in {user_conf / 'sweep' / 'typo.yaml'})" in result.stderr or "typo.yaml" in result.stderr


@pytest.mark.parametrize("multirun", [False, True], ids=["run", "multirun"])
def test_an_unknown_option_gets_a_did_you_mean_on_one_line(tmp_path: Path, multirun: bool) -> None:
    args = ["-m", "provider=tiny_sd,tiny_sdx"] if multirun else ["provider=tiny_sdx"]
    result = run_cli([*args, "dry_run=true"], cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "provider=tiny_sdx: no such option in provider/ (did you mean 'tiny_sdxl'?); options: allegro, " \
        in result.stderr
    assert "Available options" not in result.stderr and len(result.stderr.splitlines()) <= 2
