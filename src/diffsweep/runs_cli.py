"""`diffsweep-runs`: list, show, resume, rerun and verify run folders."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from diffsweep.errors import EXIT_FAILED_ITEMS, EXIT_OK, DiffsweepError
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


def _run_info(path: Path) -> dict[str, Any]:
    """run.json, with a `running` status corrected when no live process writes the folder."""
    try:
        info = json.loads((path / "run.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {"status": "unreadable", "counts": {}}
    if info.get("status") == "running" and not RunFolder(path).has_live_writer():
        info["status"] = "interrupted"  # the writer died without recording it (kill -9, power loss)
    return info


def cmd_list(args: argparse.Namespace) -> int:
    runs = all_runs(args.root)
    if not runs:
        print(f"no runs under {args.root}")
        return EXIT_OK
    print(f"{'run':<32} {'status':<12} {'done':>6} {'failed':>6} {'planned':>7}  started")
    for path in runs:
        info = _run_info(path)
        counts = info.get("counts", {})
        print(f"{path.parent.name + '/' + path.name:<32} {info.get('status', '?'):<12} {counts.get('done', 0):>6} "
              f"{counts.get('failed', 0):>6} {counts.get('planned', 0):>7}  {info.get('started', '')}")
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    path = find_run(args.run, args.root)
    info = _run_info(path)
    counts = info.get("counts", {})
    print(f"run      {path}")
    print(f"status   {info.get('status')}  ({counts.get('done', 0)} done, {counts.get('failed', 0)} failed, "
          f"{counts.get('skipped', 0)} skipped of {counts.get('planned', 0)})")
    print(f"started  {info.get('started')}   finished {info.get('finished')}")
    cache = info.get("cache", {})
    print(f"cache    {cache.get('loads', 0)} load(s), {cache.get('hits', 0)} hit(s)")
    for builder in info.get("builders", []):
        print(f"builder  {builder['hash'][:12]}  {builder['provider']}/{builder['pipeline']}  {builder['model']}"
              f"  dtype={builder.get('dtype')}  load={builder.get('load_seconds')}s")
    timings = info.get("timings", {})
    if timings:
        print("timings  " + ", ".join(f"{k}={v}" for k, v in timings.items()))
    latest = {r["item_id"]: r for r in RunFolder(path).read_manifest()}
    failed = [r for r in latest.values() if r.get("status") == "failed"]
    for record in failed[:20]:
        print(f"failed   #{record['index']}  {record.get('error', '')[:160]}")
    return EXIT_OK


def cmd_resume(args: argparse.Namespace) -> int:
    from diffsweep.runner import resume_run

    result = resume_run(find_run(args.run, args.root))
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
    return parser


def main(argv: list[str] | None = None) -> None:
    from diffsweep.cli import configure_logging, report_failure

    args = build_parser().parse_args(argv)
    configure_logging()
    sys.exit(report_failure(lambda: args.func(args)))


if __name__ == "__main__":
    main()
