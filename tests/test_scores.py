"""Scores: metrics through the real torchmetrics path, scores.jsonl, resumability, video and audio runs,
user metrics by dotted path, per-axis statistics and plots, and `diffsweep-runs score`/`show`."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import compose_config, read_manifest, run_cli
from diffsweep import media, metrics
from diffsweep.cli.runs import build_parser
from diffsweep.errors import ConfigError
from diffsweep.metrics import ClipScore, Metric, Sample, ScoreSettings
from diffsweep.reports import score_stats, scoring
from diffsweep.run.local import run_sweep
from diffsweep.store.folder import SCORES

RUN_ARGS = ["sweep.params.num_inference_steps=2", "sweep.grid.prompt=[a red fox,a blue sea]", "sweep.grid.seed=[1,2]",
            "+sweep.grid.guidance_scale=[1.5,7.5]"]
SCORE_KEYS = ["item_id", "metric", "value", "model", "revision", "time", "skipped"]


class AudioPeak(Metric):
    """A user metric that takes audio: the peak absolute sample."""

    takes_images = False
    takes_audio = True

    def score(self, samples: Sequence[Sample]) -> list[float]:
        return [float(np.abs(s.audio).max()) for s in samples]


def _run(args: list[str], root: Path) -> Path:
    result = run_sweep(compose_config(args, root), out=io.StringIO())
    assert result.status == "complete"
    return result.run_dir


def _lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / SCORES).read_text().splitlines()]


def _score(run_dir: Path, *names: str, **settings) -> scoring.ScoreOutcome:
    return scoring.score_run(run_dir, ScoreSettings(metrics=names, **settings), "cpu")


def _cli(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


# --- a CLIP made to tell two prompts apart ----------------------------------------------------------------

RED, BLUE = ("a red square", "a blue square")


def _square(channel: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 40, (32, 32, 3), dtype=np.uint8)
    pixels[..., channel] = 200 + rng.integers(0, 40, (32, 32), dtype=np.uint8)
    return pixels


@pytest.fixture(scope="module")
def trained_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random CLIP trained with CLIP's own contrastive loss on two image/text pairs, saved as a
    local folder (weights + processor) that clip_score loads like any CLIP checkpoint."""
    import torch

    from diffsweep.tiny.clip import clip_model, clip_processor

    processor = clip_processor()
    model = clip_model(len(processor.tokenizer)).train()
    images = [torch.from_numpy(_square(c, s)).permute(2, 0, 1) for c, s in ((0, 0), (2, 1), (0, 2), (2, 3))]
    batch = processor(text=[RED, BLUE, RED, BLUE], images=images, return_tensors="pt", padding=True)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    for _ in range(40):
        loss = model(**batch, return_loss=True).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    folder = tmp_path_factory.mktemp("clip")
    model.eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_clip_score_ranks_matching_prompts_above_shuffled_ones(trained_clip: Path) -> None:
    import torch
    from torchmetrics.multimodal.clip_score import CLIPScore
    from transformers import CLIPModel, CLIPProcessor

    metric = ClipScore(ScoreSettings(clip_model=str(trained_clip)), "cpu")
    red, blue = _square(0, 10), _square(2, 11)  # unseen in training
    matching = metric.score([Sample("r", RED, red), Sample("b", BLUE, blue)])
    shuffled = metric.score([Sample("r", BLUE, red), Sample("b", RED, blue)])
    assert matching[0] > shuffled[0] + 5 and matching[1] > shuffled[1] + 5, (matching, shuffled)
    # each value is what torchmetrics' own CLIPScore gives for that one pair
    model, processor = CLIPModel.from_pretrained(trained_clip), CLIPProcessor.from_pretrained(trained_clip)
    reference = CLIPScore(model_name_or_path=lambda: (metrics.FeatureTensors(model), processor))
    reference.update([torch.from_numpy(red).permute(2, 0, 1)], [RED])
    assert matching[0] == pytest.approx(float(reference.compute()), rel=1e-5)
    assert metric.model == str(trained_clip) and metric.revision is None


def test_model_free_metrics_match_their_definitions() -> None:
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 255
    # rg = 255, yb = 127.5 everywhere: no spread, so colourfulness = 0.3 * |(255, 127.5)|
    assert metrics.colourfulness(red) == pytest.approx(0.3 * math.hypot(255, 127.5))
    grey = np.full((8, 8, 3), 90, np.uint8)
    assert metrics.colourfulness(grey) == 0 and metrics.laplacian_variance(grey) == 0
    checker = np.zeros((6, 6, 3), np.uint8)
    checker[(np.indices((6, 6)).sum(0) % 2) == 1] = 255
    # luminance 0/255 alternates: the Laplacian is ±4·255 with equal counts on the 4×4 interior
    assert metrics.laplacian_variance(checker) == pytest.approx((4 * 255.0) ** 2, rel=1e-6)


# --- an image run, scored ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image_run(tmp_path_factory: pytest.TempPathFactory, trained_clip: Path) -> Path:
    """8 items (2 prompts × 2 seeds × 2 guidance scales) scored at the end of the run."""
    root = tmp_path_factory.mktemp("scored") / "runs"
    return _run([*RUN_ARGS, "score.metrics=[sharpness,clip_score]", f"score.clip.model={trained_clip}"], root)


def test_a_run_scores_itself_when_it_ends(image_run: Path, trained_clip: Path) -> None:
    lines = _lines(image_run)
    items = {r["item_id"]: r for r in read_manifest(image_run)}
    assert len(lines) == 16 and {(x["item_id"], x["metric"]) for x in lines} == {
        (i, m) for i in items for m in ("sharpness", "clip_score")}
    for line in lines:
        assert list(line) == SCORE_KEYS and line["skipped"] is None and isinstance(line["value"], float)
        assert line["model"] == (str(trained_clip) if line["metric"] == "clip_score" else None)
    first = next(x for x in lines if x["metric"] == "sharpness")
    with Image.open(image_run / items[first["item_id"]]["outputs"][0]) as image:
        assert first["value"] == pytest.approx(metrics.laplacian_variance(np.asarray(image.convert("RGB"))))
    assert (image_run / score_stats.SUMMARY).is_file()


def test_scoring_is_resumable_and_leaves_the_run_records_alone(image_run: Path, trained_clip: Path) -> None:
    records = {p: p.read_bytes() for p in (image_run / "manifest.jsonl", image_run / "run.json")}
    before = (image_run / SCORES).read_bytes()
    again = _score(image_run, "sharpness", "clip_score", clip_model=str(trained_clip))
    assert (again.scored, again.kept) == (0, 16)
    assert (image_run / SCORES).read_bytes() == before
    kept, dropped = _lines(image_run)[2:], _lines(image_run)[:2]
    (image_run / SCORES).write_text("".join(json.dumps(x) + "\n" for x in kept))
    third = _score(image_run, "sharpness")
    assert (third.scored, third.kept) == (2, 6)  # the two dropped lines are both sharpness
    after = _lines(image_run)
    assert after[:14] == kept  # untouched, time stamps included
    restored = {(x["item_id"], x["metric"]): x["value"] for x in after[14:]}
    assert restored == {(x["item_id"], x["metric"]): pytest.approx(x["value"]) for x in dropped}
    assert {p: p.read_bytes() for p in records} == records


def test_scores_made_with_other_weights_are_made_again(trained_clip: Path, tmp_path: Path) -> None:
    """Changing score.clip.model makes clip_score lines out of date: they are scored again with the new model, and
    the model-free lines stay as they were."""
    run_dir = _run(["sweep.params.num_inference_steps=2", "sweep.grid.seed=[1,2]"], tmp_path / "runs")
    first = _score(run_dir, "sharpness", "clip_score", clip_model=str(trained_clip))
    assert (first.scored, first.outdated) == (8, 0)  # 4 items, 2 metrics
    before = {(x["item_id"], x["metric"]): x for x in _lines(run_dir)}
    again = _score(run_dir, "sharpness", "clip_score", clip_model="tiny:clip")
    assert (again.scored, again.kept, again.outdated) == (4, 4, 4)
    after = {(x["item_id"], x["metric"]): x for x in _lines(run_dir)}
    assert after.keys() == before.keys()
    for key, line in after.items():
        if key[1] == "sharpness":
            assert line == before[key]
        else:
            assert line["model"] == "tiny:clip" and line["value"] != before[key]["value"]
    assert _score(run_dir, "clip_score", clip_model="tiny:clip").kept == 4  # now current: nothing to do


def test_summary_matches_a_hand_computation(image_run: Path) -> None:
    score_stats.write_summary(image_run)
    rows = list(csv.DictReader((image_run / score_stats.SUMMARY).open()))
    assert list(rows[0]) == list(score_stats.COLUMNS)
    index = {r["item_id"]: r["index"] for r in read_manifest(image_run)}
    sharp = {x["item_id"]: x["value"] for x in _lines(image_run) if x["metric"] == "sharpness"}
    # grid order is prompt × seed × guidance_scale: guidance 1.5 sits at even indices
    low = [v for item_id, v in sharp.items() if index[item_id] % 2 == 0]
    row = next(r for r in rows if (r["metric"], r["axis"], r["value"]) == ("sharpness", "guidance_scale", "1.5"))
    mean, sd = statistics.mean(low), statistics.stdev(low)
    half = 3.182446305284263 * sd / 2  # t(0.975, 3 degrees of freedom) · sd / √4
    assert int(row["n"]) == 4
    assert [float(row[k]) for k in ("mean", "std", "ci_low", "ci_high")] == pytest.approx(
        [mean, sd, mean - half, mean + half])
    assert {(r["metric"], r["axis"]) for r in rows} == {(m, a) for m in ("clip_score", "sharpness")
                                                       for a in ("prompt", "seed", "guidance_scale")}
    stats = score_stats.summarise(image_run)
    assert [s.label for s in stats if s.metric == "sharpness" and s.axis == "prompt"] == ["a red fox", "a blue sea"]


def test_plots_draw_lines_for_numbers_and_bars_for_categories(image_run: Path) -> None:
    figures = score_stats.figures(image_run)
    assert set(figures) == {f"{m}_by_{a}.png" for m in ("clip_score", "sharpness")
                            for a in ("prompt", "seed", "guidance_scale")}
    lines = figures["sharpness_by_guidance_scale.png"].axes[0]
    assert lines.get_xlabel() == "guidance_scale" and lines.get_ylabel().startswith("sharpness")
    # one line per value of the second axis: the one with fewest values (prompt and seed tie; grid order wins)
    assert [t.get_text() for t in lines.get_legend().get_texts()] == ["prompt=a red fox", "prompt=a blue sea"]
    assert [list(line.get_xdata()) for line in lines.get_lines() if line.get_marker() == "o"] == [[1.5, 7.5]] * 2
    bars = figures["clip_score_by_prompt.png"].axes[0]
    assert len(bars.patches) == 2 and [t.get_text() for t in bars.get_xticklabels()] == ["a red fox", "a blue sea"]
    score_stats.write_summary(image_run)
    with Image.open(image_run / "scores" / "sharpness_by_guidance_scale.png") as png:
        assert png.size == (600, 400) and np.asarray(png.convert("L")).std() > 5


def test_show_prints_the_summary(image_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli(["show", str(image_run)]) == 0
    out = capsys.readouterr().out
    assert "scores   16 score(s), 0 skipped, metrics: clip_score, sharpness" in out
    assert any(line.split()[:4] == ["sharpness", "guidance_scale", "1.5", "4"] for line in out.splitlines())


# --- video, audio, user metrics --------------------------------------------------------------------------


def test_video_is_scored_on_sampled_frames(tmp_path: Path) -> None:
    run_dir = _run(["provider=tiny_wan", "sweep.grid.prompt=[a fox]", "sweep.grid.seed=[0]"], tmp_path)
    outcome = _score(run_dir, "sharpness", video_frames=2)
    assert outcome.scored == 1
    frames = media.decode_mp4((run_dir / read_manifest(run_dir)[0]["outputs"][0]).read_bytes())
    assert len(frames) == 5 and scoring.sampled_frames(5, 2) == [0, 4]
    expected = (metrics.laplacian_variance(frames[0]) + metrics.laplacian_variance(frames[4])) / 2
    assert _lines(run_dir)[0]["value"] == pytest.approx(expected)


def test_audio_is_skipped_with_a_reason_unless_a_metric_takes_audio(tmp_path: Path) -> None:
    run_dir = _run(["provider=tiny_audioldm", "sweep.grid.prompt=[rain]", "sweep.grid.seed=[0]"], tmp_path)
    outcome = _score(run_dir, "sharpness", "test_scores.AudioPeak",
                     allowed_modules=("diffusers", "diffsweep", "test_scores"))
    assert (outcome.scored, outcome.skipped) == (1, 1)
    by_metric = {x["metric"]: x for x in _lines(run_dir)}
    assert by_metric["sharpness"]["value"] is None
    assert by_metric["sharpness"]["skipped"] == "audio output; sharpness does not take audio"
    import soundfile

    samples, _ = soundfile.read(run_dir / read_manifest(run_dir)[0]["outputs"][0], dtype="float32")
    assert by_metric["test_scores.AudioPeak"]["value"] == pytest.approx(float(np.abs(samples).max()))
    assert by_metric["test_scores.AudioPeak"]["skipped"] is None


def test_a_scored_audio_run_says_why_it_has_no_table(tmp_path: Path) -> None:
    run_dir = _run(["provider=tiny_audioldm", "sweep.grid.prompt=[rain]", "sweep.grid.seed=[0,1]"], tmp_path)
    scored = run_cli(["score", str(run_dir), "--metric", "sharpness"], cwd=tmp_path, module="diffsweep.cli.runs")
    assert scored.returncode == 0, scored.stderr
    said = ("no values to summarise: every score was skipped: audio output; sharpness does not take audio (2)")
    assert scored.stdout.splitlines()[1] == said and "95% CI" not in scored.stdout  # not a header over nothing
    shown = run_cli(["show", str(run_dir)], cwd=tmp_path, module="diffsweep.cli.runs")
    assert shown.stdout.splitlines()[-1] == f"         {said}"


def test_a_user_metric_outside_allowed_modules_is_refused_and_nothing_is_written(image_run: Path,
                                                                                   tmp_path: Path) -> None:
    before = (image_run / SCORES).read_bytes()
    with pytest.raises(SystemExit) as exited, contextlib.redirect_stderr(io.StringIO()) as err:
        from diffsweep.cli.runs import main

        main(["score", str(image_run), "--metric", "test_scores.AudioPeak", "--metric", "sharpnes"])
    assert exited.value.code == 2
    assert "--metric[0]: module 'test_scores' is not in allowed_modules (diffusers, diffsweep)" in err.getvalue()
    assert "--metric[1]: unknown metric 'sharpnes' (did you mean 'sharpness'?)" in err.getvalue()
    assert (image_run / SCORES).read_bytes() == before
    with pytest.raises(ConfigError, match=r"score.metrics\[0\]: module 'os' is not in allowed_modules"):
        run_sweep(compose_config([*RUN_ARGS, "score.metrics=[os.path]"], tmp_path / "runs"), out=io.StringIO())
    assert not (tmp_path / "runs").exists()


def test_score_command_prints_the_summary_and_scores_only_what_is_missing(tmp_path: Path) -> None:
    run_dir = _run(["sweep.params.num_inference_steps=2", "sweep.grid.seed=[1,2]"], tmp_path / "runs")
    result = run_cli(["--root", str(tmp_path / "runs"), "score", "default", "--metric", "colourfulness"], tmp_path,
                     module="diffsweep.cli.runs")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("scored 4 (item, metric) pair(s), 0 skipped, 0 already scored")
    assert result.stdout.strip().splitlines()[-1] == str(run_dir / SCORES)
    assert (run_dir / "scores" / "colourfulness_by_prompt.png").is_file()
    again = _score(run_dir, "colourfulness", "sharpness")
    assert (again.scored, again.kept) == (4, 4)


class NotANumber(Metric):
    def score(self, samples: Sequence[Sample]) -> list[float]:
        return [float("nan")] * len(samples)


def test_unusable_values_and_missing_models_are_reported_not_recorded_as_scores(image_run: Path) -> None:
    from diffsweep.errors import ModelUnavailableError

    outcome = _score(image_run, "test_scores.NotANumber", allowed_modules=("test_scores",))
    assert (outcome.scored, outcome.skipped) == (0, 8)
    lines = [x for x in _lines(image_run) if x["metric"] == "test_scores.NotANumber"]
    assert {(x["value"], x["skipped"]) for x in lines} == {(None, "test_scores.NotANumber gave nan")}
    without_clip = "".join(json.dumps(x) + "\n" for x in _lines(image_run) if x["metric"] != "clip_score")
    (image_run / SCORES).write_text(without_clip)
    with pytest.raises(ModelUnavailableError, match="CLIP model 'openai/clip-vit-base-patch16' for clip_score is not "
                                                    "in the local Hugging Face cache"):
        _score(image_run, "colourfulness", "clip_score")  # offline, not cached: fails before anything is written
    assert (image_run / SCORES).read_text() == without_clip


# --- a CLIP that cannot be had ----------------------------------------------------------------------------


def test_a_dry_run_refuses_a_clip_model_it_cannot_have_at_once(tmp_path: Path) -> None:
    started = time.monotonic()
    result = run_cli(["score.metrics=[clip_score]", "dry_run=true"], cwd=tmp_path)  # tests run offline
    assert result.returncode == 3, result.stderr
    assert ("error: CLIP model 'openai/clip-vit-base-patch16' for clip_score is not in the local Hugging Face cache "
            "and HF_HUB_OFFLINE is set; score with `score.clip.model=tiny:clip`") in result.stderr
    assert time.monotonic() - started < 60 and not (tmp_path / "runs").exists()


def test_scoring_without_the_hub_fails_at_once_naming_the_flag(tmp_path: Path) -> None:
    """The hub unreachable but not declared offline: one refused connection, not a minute of retries."""
    run_dir = _run(["sweep.params.num_inference_steps=1", "sweep.grid.prompt=[a fox]", "sweep.grid.seed=[0]"],
                   tmp_path / "runs")
    unreachable = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}  # the discard port: refused
    started = time.monotonic()
    result = run_cli(["score", str(run_dir), "--metric", "clip_score"], cwd=tmp_path, module="diffsweep.cli.runs",
                     env=unreachable)
    assert result.returncode == 3, result.stderr
    assert "is not in the local Hugging Face cache and http://127.0.0.1:9 cannot be reached" in result.stderr
    assert "score with `--clip-model tiny:clip`" in result.stderr and "Retrying" not in result.stderr
    assert time.monotonic() - started < 30
