"""`diffsweep-runs`: list, show, resume, rerun, verify, score and diff run folders."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from diffsweep.errors import EXIT_FAILED_ITEMS, EXIT_OK, DiffsweepError
from diffsweep.records import RunInfo
from diffsweep.rundir import RunFolder, versions

log = logging.getLogger("diffsweep")


def find_run(spec: str, root: Path) -> Path:
    """A run folder from a path, `<sweep>/vNNNN`, or `<sweep>` (its latest version)."""
    for candidate in (Path(spec), root / spec):
        if (candidate / "run.json").is_file() or (candidate / "config.yaml").is_file():
            return candidate
        found = versions(candidate)
        if found:
            return candidate / f"v{found[-1]:04d}"
    raise DiffsweepError(f"no run folder found for '{spec}' (looked in . and {root})")


def all_runs(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return [sweep / f"v{n:04d}" for sweep in sorted(p for p in root.iterdir() if p.is_dir())
            for n in versions(sweep)]


def _run_info(path: Path) -> RunInfo | None:
    """run.json, with a `running` status corrected when no live process writes the folder."""
    run = RunFolder(path)
    try:
        info = run.read_info()
    except DiffsweepError:
        return None
    if info.status == "running" and not run.has_live_writer():
        info.status = "interrupted"  # the writer died without recording it (kill -9, power loss)
    return info


def cmd_list(args: argparse.Namespace) -> int:
    runs = all_runs(args.root)
    if not runs:
        print(f"no runs under {args.root.absolute()}")
        return EXIT_OK
    print(f"{'run':<32} {'status':<12} {'done':>6} {'failed':>6} {'planned':>7}  started")
    for path in runs:
        info = _run_info(path)
        name = f"{path.parent.name}/{path.name}"
        if info is None:
            print(f"{name:<32} {'unreadable':<12}")
            continue
        counts = info.counts
        print(f"{name:<32} {info.status:<12} {counts.done:>6} {counts.failed:>6} {counts.planned:>7}  {info.started}")
    return EXIT_OK


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


def cmd_show(args: argparse.Namespace) -> int:
    path = find_run(args.run, args.root).absolute()
    info = _run_info(path)
    print(f"run      {path}")
    if info is None:
        print("status   unreadable (no valid run.json)")
        return EXIT_OK
    counts = info.counts
    print(f"status   {info.status}  ({counts.done} done, {counts.failed} failed, {counts.skipped} not made, "
          f"of {counts.planned} planned)")
    print(f"started  {info.started}   finished {info.finished or '-'}")
    cache = info.cache
    print(f"cache    {cache.loads} load(s), {cache.hits} hit(s)")
    for builder in info.builders:
        print(f"builder  {builder['hash'][:12]}  {builder['provider']}/{builder['pipeline']}  {builder['model']}"
              f"  dtype={builder.get('dtype')}  load={_seconds(builder.get('load_seconds'))}")
    timings = info.timings
    rate = timings.steady_items_per_second
    print(f"timings  load {_seconds(timings.load_seconds)}, first call {_seconds(timings.first_call_seconds)}, "
          f"steady {'-' if rate is None else f'{rate:.3f} items/s'}, peak memory "
          f"{'-' if timings.peak_memory_bytes is None else f'{timings.peak_memory_bytes / 2**20:.0f} MiB'}")
    for number, attempt in enumerate(info.attempts, 1):
        made = attempt.counts
        print(f"attempt  {number} {attempt.kind:<6} {attempt.status:<11} {attempt.started}  {made.generated} generated, "
              f"{made.failed} failed, {made.kept} kept  ({' '.join(attempt.command)})")
    failed = sorted((r for r in RunFolder(path).items().values() if not r.ok), key=lambda r: r.index)
    for record in failed[:20]:
        print(f"failed   #{record.index}  {(record.error or '')[:160]}")
    _show_scores(path)
    return EXIT_OK


def _show_scores(path: Path) -> None:
    from diffsweep import score_stats, scoring

    scores = scoring.read_scores(path)
    if not scores:
        return
    skipped = sum(1 for s in scores if s.skipped)
    metrics = sorted({s.metric for s in scores})
    print(f"scores   {len(scores) - skipped} score(s), {skipped} skipped, metrics: {', '.join(metrics)}  "
          f"(95% CI: {score_stats.CI_METHOD})")
    for line in score_stats.summary_table(score_stats.summarise(path)):
        print(f"         {line}")


def cmd_resume(args: argparse.Namespace) -> int:
    from diffsweep.runner import resume_run

    result = resume_run(find_run(args.run, args.root).absolute())
    return result.exit_code


def cmd_rerun(args: argparse.Namespace) -> int:
    from diffsweep.runner import run_sweep
    from diffsweep.savedconfig import load_run_config

    path = find_run(args.run, args.root)
    doc = load_run_config(path)
    doc["output"]["root"] = str(path.parent.parent.absolute())  # next version beside the original
    result = run_sweep(doc, overrides=[f"rerun of {path}"],
                       source_of=lambda _: str(path / "config.yaml"), base_dir=path)
    return result.exit_code


def cmd_verify(args: argparse.Namespace) -> int:
    from diffsweep.verify import verify_run

    mismatches = verify_run(find_run(args.run, args.root), limit=args.items)
    return EXIT_FAILED_ITEMS if mismatches else EXIT_OK


def cmd_score(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from diffsweep import devices, score_stats, scoring
    from diffsweep.metrics import ScoreSettings
    from diffsweep.savedconfig import load_run_config

    path = find_run(args.run, args.root).absolute()
    config = load_run_config(path)
    settings = ScoreSettings.from_config(config)
    metrics = tuple(args.metric or settings.metrics or scoring.MODEL_FREE)
    settings = replace(settings, metrics=metrics, clip_model=args.clip_model or settings.clip_model,
                       clip_revision=args.clip_revision or settings.clip_revision)
    device = devices.resolve_device(args.device or config.get("device", "auto"))
    outcome = scoring.score_run(path, settings, device, where="--metric" if args.metric else "score.metrics")
    stats = score_stats.write_summary(path)
    rate = outcome.items_per_second
    print(f"scored {outcome.scored} (item, metric) pair(s), {outcome.skipped} skipped, {outcome.kept} already scored"
          + (f"  ({outcome.items} items, {rate:.1f} items/s)" if rate else ""))
    for line in score_stats.summary_table(stats):
        print(line)
    print(path / scoring.SCORES)
    return EXIT_OK


def cmd_diff(args: argparse.Namespace) -> int:
    from diffsweep.rundiff import diff_runs, print_diff

    difference = diff_runs(find_run(args.run_a, args.root).absolute(), find_run(args.run_b, args.root).absolute())
    print_diff(difference, sys.stdout)
    return EXIT_FAILED_ITEMS if difference.items_differ else EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffsweep-runs", description=__doc__)
    parser.add_argument("--root", type=Path, default=Path("runs"), help="output root (default: ./runs)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="every run under the root").set_defaults(func=cmd_list)
    for name, func, text in (("show", cmd_show, "status, counts, builders and failures of a run"),
                             ("resume", cmd_resume, "generate only what is missing or failed, in place"),
                             ("rerun", cmd_rerun, "run the saved config again into a new version"),
                             ("verify", cmd_verify, "regenerate saved items and compare them")):
        command = sub.add_parser(name, help=text)
        command.add_argument("run", help="run folder, <sweep>/vNNNN, or <sweep> for its latest version")
        command.set_defaults(func=func)
        if name == "verify":
            command.add_argument("--items", type=int, default=None, help="verify only the first N items")
    score = sub.add_parser("score", help="score items into scores.jsonl, scores_summary.csv and scores/*.png")
    score.add_argument("run", help="run folder, <sweep>/vNNNN, or <sweep> for its latest version")
    score.add_argument("--metric", action="append", metavar="NAME",
                       help="clip_score, sharpness, colourfulness or a dotted path (repeatable; default: the run's "
                            "score.metrics, else the model-free metrics)")
    score.add_argument("--clip-model", default=None, help="CLIP for clip_score (default: the run's score.clip.model)")
    score.add_argument("--clip-revision", default=None, help="hub revision of --clip-model")
    score.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N or mps (default: the run's device)")
    score.set_defaults(func=cmd_score)
    diff = sub.add_parser("diff", help="what changed between two runs; exit 1 when an item differs")
    diff.add_argument("run_a", help="the first run")
    diff.add_argument("run_b", help="the second run")
    diff.set_defaults(func=cmd_diff)
    return parser


def main(argv: list[str] | None = None) -> None:
    from diffsweep.cli import configure_logging, report_failure

    args = build_parser().parse_args(argv)
    configure_logging()
    sys.exit(report_failure(lambda: args.func(args)))


if __name__ == "__main__":
    main()
