"""Run reports: labelled sheets (diffsweep.sheets) and a static HTML gallery, built from a run folder alone.

Both read only what is on disk (config.yaml, run.json, manifest.jsonl, items/), so they can be
rebuilt for any past, resumed or interrupted run; a missing or torn input degrades the report
instead of failing it. Every file is written atomically.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from diffsweep import sheets
from diffsweep.records import ItemRecord, RunInfo
from diffsweep.rundir import write_atomic
from diffsweep.sheets import SHEET
from diffsweep.sheets import read_config as _read_config
from diffsweep.sheets import read_info as _read_info
from diffsweep.sheets import read_records as read_manifest

INDEX = "index.html"

KINDS = {".png": "image", ".mp4": "video", ".wav": "audio"}


def write_reports(run_dir: Path) -> None:
    """Write contact_sheet.png (only when some item has an output) and index.html into `run_dir`."""
    run_dir = Path(run_dir)
    records = read_manifest(run_dir)
    config = _read_config(run_dir)
    run = _read_info(run_dir)
    if any(record.outputs for record in records):
        sheets.write_sheets(run_dir)
    name = _sweep(config).get("name")
    title = name if isinstance(name, str) else run_dir.parent.name
    write_atomic(run_dir / INDEX, index_html(title, run_dir.name, run, records, (run_dir / SHEET).is_file()))


# --- reading ------------------------------------------------------------------------------------


def _sweep(config: Mapping[str, Any]) -> Mapping[str, Any]:
    sweep = config.get("sweep")
    return sweep if isinstance(sweep, Mapping) else {}


def _text(value: Any) -> str:
    """One-line display form of a parameter value."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return " ".join(text.split())


def _kind(path: str) -> str:
    return KINDS.get(Path(path).suffix.lower(), "file")


# --- index.html ---------------------------------------------------------------------------------

STYLE = """
body{font:14px system-ui,sans-serif;margin:1rem;background:#fafafa;color:#222}
header p{margin:.3rem 0}
main{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:12px;margin-top:1rem}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px;overflow-wrap:anywhere}
.card.failed{border-color:#c33;background:#fff5f5}
.card img,.card video{max-width:100%;height:auto;display:block}
.card audio{width:100%}
.prompt{font-weight:600;white-space:pre-wrap}
.meta,.params{font:12px ui-monospace,monospace;color:#555}
.params code{margin-right:.6em}
.error{color:#a00;white-space:pre-wrap;font-size:12px}
"""

FILTER_JS = (
    "document.getElementById('filter').addEventListener('input',e=>{"
    "const q=e.target.value.toLowerCase();"
    "for(const c of document.querySelectorAll('.card'))c.hidden=!c.textContent.toLowerCase().includes(q);});"
)


def index_html(name: str, version: str, run: RunInfo | None, records: Sequence[ItemRecord], sheet: bool) -> str:
    """The gallery page: run summary, then one card per item in grid-index order."""
    esc = html.escape
    status = run.status if run else "unknown"
    tally = (f"{run.counts.done} done · {run.counts.failed} failed · {run.counts.skipped} not made · "
             f"{run.counts.planned} planned" if run else "no readable run.json")
    link = f'<p><a href="{SHEET}">contact sheet</a></p>' if sheet else ""
    cards = "\n".join(_card(record) for record in records)
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(name)} {esc(version)}</title><style>{STYLE}</style></head><body>\n"
        f"<header><h1>{esc(name)} <small>{esc(version)}</small></h1>"
        f"<p>status: <b>{esc(status)}</b> · {esc(tally)}</p>{link}"
        f'<input id="filter" type="search" placeholder="filter cards"></header>\n'
        f"<main>\n{cards}\n</main>\n<script>{FILTER_JS}</script></body></html>\n"
    )


def _card(record: ItemRecord) -> str:
    esc = html.escape
    state = "ok" if record.status == "ok" else "failed"
    seed = record.seed
    params = " ".join(
        f"<code>{esc(key)}={esc(_text(value))}</code>"
        for key, value in record.params.items()
        if key not in ("prompt", "seed")
    )
    error = f'<pre class="error">{esc(record.error)}</pre>' if state == "failed" and record.error else ""
    prompt = record.params.get("prompt", "")
    return (
        f'<article class="card {state}" data-index="{record.index}">'
        f"{''.join(_media(path) for path in record.outputs)}"
        f'<p class="prompt">{esc(prompt if isinstance(prompt, str) else _text(prompt))}</p>'
        f'<p class="meta">#{record.index} · seed {esc(_text(seed))} · id {esc(record.item_id[:12])} · '
        f"{esc(record.status)}</p>"
        f'<p class="params">{params}</p>{error}</article>'
    )


def _media(path: str) -> str:
    src = html.escape(quote(path))  # quoting also defuses "javascript:" and other schemes
    kind = _kind(path)
    if kind == "image":
        return f'<a href="{src}"><img src="{src}" alt="" loading="lazy"></a>'
    if kind == "video":
        return f'<video controls preload="metadata" src="{src}"></video>'
    if kind == "audio":
        return f'<audio controls preload="none" src="{src}"></audio>'
    return f'<p><a href="{src}">{html.escape(path)}</a></p>'
