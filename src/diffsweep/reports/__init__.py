"""Run reports, built from a run folder alone after the execution core is done with it: scores (scores.jsonl and
their summary), labelled sheets (`diffsweep.reports.sheets`), the run viewer (`diffsweep.reports.viewer`) and
experiment tracking (`diffsweep.reports.tracking`).

They read only what is on disk (config.yaml, run.json, manifest.jsonl, items/), so they can be rebuilt for any
past, resumed or interrupted run; a missing or torn input degrades a report instead of failing it. A report that
cannot be made never changes the run's own outcome. Every file is written atomically.
"""

MAX_PIXELS = 40_000_000  # a sheet's default pixel cap (`diffsweep-runs sheet --max-pixels`)
# the most items a report lays out: a run's size is read from its files, which must not make a reader allocate
# without bound (a line that says its index is 10**12)
MAX_REPORT_ITEMS = 10_000_000
