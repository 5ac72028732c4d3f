"""`diffsweep-runs`: list, show, resume, rerun, verify, score and diff run folders, draw their sheets and
rebuild their viewer."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from diffsweep import hashing
from diffsweep.console import configure_logging, report_failure
from diffsweep.errors import EXIT_FAILED_ITEMS, EXIT_OK, DiffsweepError
from diffsweep.reports import MAX_PIXELS
from diffsweep.store.folder import SCORES, RunFolder, read_item_lines, versions
from diffsweep.store.records import Counts, ItemRecord, RunInfo
from diffsweep.store.runconfig import read_overrides, read_run_config

log = logging.getLogger("diffsweep")


DEFAULT_ROOT = "runs"  # output.root's default: runs go to ./runs of the directory diffsweep ran in


def find_root(start: Path) -> Path:
    """The runs folder a command means without --root: ./runs, else the nearest `runs` folder above `start` (a
    command started in a subfolder of the project whose runs they are), else ./runs."""
    for folder in (start, *start.parents):
        if (folder / DEFAULT_ROOT).is_dir():
            return folder / DEFAULT_ROOT if folder != start else Path(DEFAULT_ROOT)
    return Path(DEFAULT_ROOT)


def find_run(spec: str, root: Path) -> Path:
    """A run folder from a path, `<sweep>/vNNNN`, or `<sweep>` (its latest version)."""
    for candidate in (Path(spec), root / spec):
        if (candidate / "run.json").is_file() or (candidate / "config.yaml").is_file():
            return candidate
        found = versions(candidate)
        if found:
            return candidate / f"v{found[-1]:04d}"
    raise DiffsweepError(f"no run folder found for '{spec}' (looked in . and {root.absolute()}); runs go to the "
                         f"`runs` folder of the directory diffsweep ran in (or to output.root): give that folder "
                         f"with --root, or the run folder's path")


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
    if info.status == "running" and info.shards is not None:
        _merge_workers_so_far(run, info)
    if info.status == "running" and not run.has_live_writer():
        info.status = "interrupted"  # the writer died without recording it (kill -9, power loss)
        if info.attempts and info.attempts[-1].status == "running":
            info.attempts[-1].status = "interrupted"
    return info


def _merge_workers_so_far(run: RunFolder, info: RunInfo) -> None:
    """A distributed run in progress: its counts from every shard's committed items, its last
    attempt from the records its workers keep (run.json gets them when the run ends)."""
    info.counts = Counts.of(info.counts.planned, run.items().values())
    info.merge_workers(w for k in range(run.shard_count()) if (w := run.read_worker(k)) is not None)


MODEL_WIDTH = 20  # the model column of `list`: a longer name pushes its overrides along, not every other line


def cmd_list(args: argparse.Namespace) -> int:
    runs = all_runs(args.root)
    if not runs:
        print(f"no runs under {args.root.absolute()}")
        return EXIT_OK
    rows = []
    for path in runs:
        info = _run_info(path)
        name = f"{path.parent.name}/{path.name}"
        if info is None:
            rows.append((f"{name:<32} {'unreadable':<12}", "", ""))
            continue
        counts = info.counts
        models = ", ".join(dict.fromkeys(builder.model for builder in info.builders)) or "-"
        rows.append((f"{name:<32} {info.status:<12} {counts.done:>6} {counts.failed:>6} {counts.planned:>7}  "
                     f"{info.started:<29}", models, " ".join(read_overrides(path)) or "-"))
    # what tells runs of one sweep apart (default/v0001 from v0010): the model, and the overrides they ran with
    print(f"{'run':<32} {'status':<12} {'done':>6} {'failed':>6} {'planned':>7}  {'started':<29}  "
          f"{'model':<{MODEL_WIDTH}}  overrides")
    for line, models, overrides in rows:
        print(f"{line}  {models:<{MODEL_WIDTH}}  {overrides}".rstrip() if models else line.rstrip())
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
        print(f"builder  {hashing.short(builder.hash)}  {builder.label}  ({builder.provider}/{builder.pipeline}  {builder.model}"
              f"  dtype={builder.dtype})  load={_seconds(builder.load_seconds)}")
        if args.full:
            identity = builder.full_identity or builder.identity
            print(f"         identity {json.dumps(identity, ensure_ascii=False, sort_keys=True)}")
    timings = info.timings
    rate = timings.steady_items_per_second
    print(f"timings  load {_seconds(timings.load_seconds)}, first call {_seconds(timings.first_call_seconds)}, "
          f"steady {'-' if rate is None else f'{rate:.3f} items/s'}, peak memory "
          f"{'-' if timings.peak_memory_bytes is None else f'{timings.peak_memory_bytes / 2**20:.0f} MiB'}")
    if info.tracking:
        from diffsweep.reports.tracking import describe_tracking  # noqa: PLC0415 - start-up time: each command loads only what it uses (list and show no torch)

        print(f"tracking {describe_tracking(info.tracking)}")
    _show_shards(RunFolder(path), info)
    for number, attempt in enumerate(info.attempts, 1):
        made = attempt.counts
        print(f"attempt  {number} {attempt.kind:<6} {attempt.status:<11} {attempt.started}  {made.generated} generated, "
              f"{made.failed} failed, {made.kept} kept  ({' '.join(attempt.command)})")
    for record in latest_failures(RunFolder(path), info)[:20]:
        print(f"failed   #{record.index}  {(record.error or '')[:160]}")
    _show_scores(path)
    return EXIT_OK


def _show_scores(path: Path) -> None:
    if not (path / "scores.jsonl").is_file():  # never scored: show stays clear of the scoring code's imports
        return
    from diffsweep.reports import score_stats  # noqa: PLC0415 - start-up time: each command loads only what it uses (list and show no torch)

    scores = RunFolder(path).read_scores()
    if not scores:
        return
    skipped = sum(1 for s in scores if s.skipped)
    metrics = sorted({s.metric for s in scores})
    print(f"scores   {len(scores) - skipped} score(s), {skipped} skipped, metrics: {', '.join(metrics)}  "
          f"(95% CI: {score_stats.CI_METHOD})")
    for line in score_stats.summary_table(score_stats.summarise(path), scores):
        print(f"         {line}")


def latest_failures(run: RunFolder, info: RunInfo) -> list[ItemRecord]:
    """Items whose latest line failed, in grid order. An attempt that finished counted its failures
    from the whole manifest into run.json: when it counted none, there are none to read; otherwise
    one streaming pass keeps only the failures."""
    if info.finished is not None and info.counts.failed == 0:
        return []
    failed: dict[str, ItemRecord] = {}
    for record in run.records():
        if record.ok:
            failed.pop(record.item_id, None)
        else:
            failed[record.item_id] = record
    return sorted(failed.values(), key=lambda r: r.index)


def _show_shards(run: RunFolder, info: RunInfo) -> None:
    """Per shard of a distributed run: its items, its state (a shard whose worker died is dead, not
    running), its worker, what that worker loaded and how fast it went."""
    layout = run.read_layout()
    if layout is None:
        return
    done = failed = 0
    for shard in range(layout.count):
        worker = run.read_worker(shard)
        shard_done, shard_failed = _shard_counts(run, shard, worker)
        done, failed = done + shard_done, failed + shard_failed
        state = run.shard_state(shard, worker)
        line = (f"shard    {shard:<3} {state:<11} {shard_done:>5} done {shard_failed:>4} failed of "
                f"{layout.planned[shard]:<5}")
        if worker is not None:
            rate = _items_per_second(worker)
            loads = ",".join(hashing.short(h) for h in worker.loaded) or "-"
            line += (f"  {worker.host} pid {worker.pid}{'' if worker.rank is None else f' rank {worker.rank}'} "
                     f"{worker.device}  loaded {loads}  {'-' if rate is None else f'{rate:.2f} items/s'}")
        print(line)
    print(f"shards   {layout.count} in all: {done} done, {failed} failed of {sum(layout.planned)} planned")


def _shard_counts(run: RunFolder, shard: int, worker: Any) -> tuple[int, int]:
    """(done, failed) of a shard: its worker's record (rewritten every few seconds), or the shard's own
    manifest where that holds more (a worker killed since its last heartbeat)."""

    latest = {r.item_id: r for r in read_item_lines(run.shard_manifest(shard))}
    done, failed = sum(r.ok for r in latest.values()), sum(not r.ok for r in latest.values())
    if worker is None:
        return done, failed
    return max(done, worker.counts.kept + worker.counts.generated), max(failed, worker.counts.failed)


def _items_per_second(worker: Any) -> float | None:
    """Items the worker made over the time it has run (load included): what the shard really moves at."""

    try:
        start = datetime.fromisoformat(worker.started)
        end = datetime.fromisoformat(worker.finished or worker.heartbeat)
    except ValueError:
        return None
    seconds = (end - start).total_seconds()
    made = worker.counts.generated + worker.counts.failed
    return made / seconds if seconds > 0 and made else None


def cmd_resume(args: argparse.Namespace) -> int:
    from diffsweep.run.local import resume_run  # noqa: PLC0415 - start-up time: list and show load no torch

    run = RunFolder(find_run(args.run, args.root).absolute())
    run.check_has_run_files()  # an unreadable run.json is rebuilt by the resume
    return resume_run(run.path, here=args.here, trust=args.trust).exit_code


def cmd_work(args: argparse.Namespace) -> int:
    from diffsweep.run.distributed import finalize, work_on_shard  # noqa: PLC0415 - start-up time

    run = RunFolder(find_run(args.run, args.root).absolute())
    worker = work_on_shard(run.path, args.shard, trust=args.trust)
    finalize(run, trust=args.trust)
    return EXIT_FAILED_ITEMS if worker.status == "failed" else EXIT_OK


def cmd_rerun(args: argparse.Namespace) -> int:
    from diffsweep.run.attempts import check_config_unchanged, trusted_config  # noqa: PLC0415 - start-up time
    from diffsweep.run.local import run_sweep  # noqa: PLC0415 - start-up time

    run = RunFolder(find_run(args.run, args.root))
    info = run.check_is_run()
    only = [*args.item, *args.index]
    doc, trusted = trusted_config(run, args.trust)
    if only:  # the ids of single items are those of the run's own config
        check_config_unchanged(run, info)
    doc["output"]["root"] = str(run.path.parent.parent.absolute())  # next version beside the original
    what = f" item(s) {' '.join(map(str, only))}" if only else ""
    result = run_sweep(doc, overrides=[f"rerun of {run.path}{what}"], source_of=run.config_source,
                       base_dir=run.path, only=only, trusted=trusted)
    return result.exit_code


def cmd_viewer(args: argparse.Namespace) -> int:
    from diffsweep.reports.build import write_viewer  # noqa: PLC0415 - start-up time

    run = RunFolder(find_run(args.run, args.root).absolute())
    run.check_is_run()
    write_viewer(run.path)
    print(run.path / "index.html")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    from diffsweep.run.verify import verify_run  # noqa: PLC0415 - start-up time

    report = verify_run(find_run(args.run, args.root), limit=args.items, trust=args.trust)
    return EXIT_OK if report.passed else EXIT_FAILED_ITEMS


def cmd_score(args: argparse.Namespace) -> int:
    # start-up time, each import: only this command scores
    from diffsweep import devices  # noqa: PLC0415 - start-up time
    from diffsweep.config.model import RunConfig  # noqa: PLC0415 - start-up time
    from diffsweep.config.schema import normalise, validate_sections  # noqa: PLC0415 - start-up time
    from diffsweep.reports import score_stats, scoring, tracking  # noqa: PLC0415 - start-up time
    from diffsweep.reports.build import write_viewer  # noqa: PLC0415 - start-up time

    run = RunFolder(find_run(args.run, args.root).absolute())
    info = run.check_is_run()
    # the folder is data: only what scoring needs of its config is checked, and no provider is loaded for it
    doc = normalise(read_run_config(run.path, trust=args.trust))
    validate_sections(doc, ("device", "allowed_modules", "score", "tracking", "output"), run.config_source)
    config = RunConfig.read(doc, run.config_source)
    settings = config.score_settings()
    settings = replace(settings, metrics=tuple(args.metric or settings.metrics or scoring.MODEL_FREE),
                       clip_model=args.clip_model or settings.clip_model,
                       clip_revision=args.clip_revision or settings.clip_revision, clip_model_option="--clip-model")
    device = devices.resolve_device(args.device or config.device)
    outcome = scoring.score_run(run.path, settings, device, where="--metric" if args.metric else "score.metrics")
    stats = score_stats.write_summary(run.path)
    write_viewer(run.path)  # the viewer shows each item's scores
    rate = outcome.items_per_second
    print(f"scored {outcome.scored} (item, metric) pair(s), {outcome.skipped} skipped, {outcome.kept} already scored"
          + (f" ({outcome.outdated} scored again: made with other weights)" if outcome.outdated else "")
          + (f"  ({outcome.items} items, {rate:.1f} items/s)" if rate else ""))
    for line in score_stats.summary_table(stats, run.read_scores()):
        print(line)
    # a tracked run that has ended gets its new scores in its tracked run, as a resume would log them; a run still
    # going logs them itself when it ends
    if config.tracking.backend != "none" and info.status != "running":
        tracking.track_run(run, config, info)
        if info.tracking:
            print(f"tracking {tracking.describe_tracking(info.tracking)}")
    print(run.path / SCORES)
    return EXIT_FAILED_ITEMS if outcome.damaged else EXIT_OK


def cmd_diff(args: argparse.Namespace) -> int:
    from diffsweep.reports.diff import diff_runs, print_diff  # noqa: PLC0415 - start-up time: each command loads only what it uses (list and show no torch)

    difference = diff_runs(find_run(args.run_a, args.root).absolute(), find_run(args.run_b, args.root).absolute())
    print_diff(difference, sys.stdout)
    return EXIT_FAILED_ITEMS if difference.items_differ else EXIT_OK


def cmd_sheet(args: argparse.Namespace) -> int:
    from diffsweep.reports.sheets import write_sheets  # noqa: PLC0415 - start-up time: each command loads only what it uses (list and show no torch)

    path = find_run(args.run, args.root).absolute()
    RunFolder(path).check_is_run()
    written = write_sheets(path, args.x, args.y, args.z, args.max_pixels)
    log.info("%s: %d sheet(s)", written.choice.describe(), len(written.pages))
    for note in dict.fromkeys(written.notes):
        log.info("%s", note)
    for written_path in written.paths:
        print(written_path)
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    """The shipped schemas are the contract; the config's is completed from the installed providers
    when loaded, so this prints what a reader validating a run's config.yaml needs."""
    from diffsweep.config.schema import load_schema  # noqa: PLC0415 - start-up time: each command loads only what it uses (list and show no torch)

    print(json.dumps(load_schema(args.name), indent=2, ensure_ascii=False))
    return EXIT_OK


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of pixels, got {text}")
    return value


def _trust_flag(command: argparse.ArgumentParser) -> None:
    command.add_argument("--trust", action="store_true",
                         help="run code the run folder's config names (Hydra callbacks, trust_remote_code, modules "
                              "beyond diffusers and diffsweep); without it such a folder is refused. Recorded in "
                              "run.json")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffsweep-runs", description=__doc__)
    parser.add_argument("--root", type=Path, default=find_root(Path.cwd()),
                        help="output root (default: ./runs, else the nearest runs folder above this directory)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="every run under the root").set_defaults(func=cmd_list)
    for name, func, text in (("show", cmd_show, "status, counts, builders and failures of a run"),
                             ("resume", cmd_resume, "generate only what is missing or failed, in place"),
                             ("rerun", cmd_rerun, "run the saved config (or some of its items) again into a new "
                                                  "version"),
                             ("verify", cmd_verify, "regenerate saved items and compare them"),
                             ("viewer", cmd_viewer, "(re)write the run's viewer, index.html and data.js"),
                             ("sheet", cmd_sheet, "draw labelled X/Y/Z sheets: contact_sheet.png and sheets/")):
        command = sub.add_parser(name, help=text)
        command.add_argument("run", help="run folder, <sweep>/vNNNN, or <sweep> for its latest version")
        command.set_defaults(func=func)
        if name == "show":
            command.add_argument("--full", action="store_true",
                                 help="print each builder's full identity (what its hash covers)")
        if name == "sheet":
            for flag, where in (("--x", "across"), ("--y", "down"), ("--z", "as titled sub-grids side by side")):
                command.add_argument(flag, metavar="AXIS", help=f"grid axis laid out {where}")
            command.add_argument("--max-pixels", type=_positive, default=MAX_PIXELS, metavar="N",
                                 help=f"pixel cap per sheet; thumbnails shrink to stay under it (default {MAX_PIXELS:,})")
        if name == "verify":
            command.add_argument("--items", type=int, default=None, help="verify only the first N items")
        if name == "resume":
            command.add_argument("--here", action="store_true",
                                 help="a distributed run: run its unfinished shards in this process, not resubmitted")
        if name == "rerun":
            command.add_argument("--item", action="append", default=[], metavar="ITEM_ID",
                                 help="rerun only this item (its id, or a unique beginning of it); repeatable")
            command.add_argument("--index", action="append", type=int, default=[], metavar="N",
                                 help="rerun only the item at this grid index; repeatable")
        if name in ("resume", "rerun", "verify"):
            _trust_flag(command)
    work = sub.add_parser("work", help="run one shard of a distributed run (what each worker of it does)")
    work.add_argument("run", help="run folder, <sweep>/vNNNN, or <sweep> for its latest version")
    work.add_argument("--shard", type=int, required=True, help="the shard to run (0-based)")
    _trust_flag(work)
    work.set_defaults(func=cmd_work)
    score = sub.add_parser("score", help="score items into scores.jsonl, scores_summary.csv and scores/*.png")
    _trust_flag(score)
    score.add_argument("run", help="run folder, <sweep>/vNNNN, or <sweep> for its latest version")
    score.add_argument("--metric", action="append", metavar="NAME",
                       help="clip_score, sharpness, colourfulness or a dotted path (repeatable; default: the run's "
                            "score.metrics, else the model-free metrics)")
    score.add_argument("--clip-model", default=None, help="CLIP for clip_score (default: the run's score.clip.model)")
    score.add_argument("--clip-revision", default=None, help="hub revision of --clip-model")
    score.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N or mps (default: the run's device)")
    score.set_defaults(func=cmd_score)
    schema = sub.add_parser("schema", help="print a JSON Schema as diffsweep validates with it (the config's with "
                                           "the installed providers' names and parameters)")
    schema.add_argument("name", choices=("config", "item", "run", "layout", "score"), help="which record it describes")
    schema.set_defaults(func=cmd_schema)
    diff = sub.add_parser("diff", help="what changed between two runs; exit 1 when an item differs")
    diff.add_argument("run_a", help="the first run")
    diff.add_argument("run_b", help="the second run")
    diff.set_defaults(func=cmd_diff)
    return parser


def main(argv: list[str] | None = None) -> None:
    configure_logging()
    # parsed inside report_failure, so that `--help` into a closed pipe ends as quietly as a command does
    sys.exit(report_failure(lambda: (args := build_parser().parse_args(argv)).func(args)))


if __name__ == "__main__":
    main()
