"""Where every benchmark leaves its figures: ``<stem>.json`` (the record) and ``<stem>.md`` (its table)."""

from __future__ import annotations

import json
from pathlib import Path

from MultiModalSegLib.atomic import write_text_atomic


def save_results(folder: Path, stem: str, record: dict | list, markdown: str) -> tuple[Path, Path]:
    """Write ``record`` as JSON and ``markdown`` beside it, each atomically; returns both paths."""
    folder.mkdir(parents=True, exist_ok=True)
    json_path = write_text_atomic(folder / f"{stem}.json", json.dumps(record, indent=2) + "\n")
    md_path = write_text_atomic(folder / f"{stem}.md", markdown)
    return json_path, md_path


def out_option(out: Path, default: Path, repo: Path | None = None) -> str:
    """`` --out FOLDER`` for a Regenerate line when ``out`` is not the script's ``default`` (relative to
    ``repo`` where it lies inside it), else nothing: the printed command writes where the figures are."""
    out, default = Path(out), Path(default)
    if out.resolve() == default.resolve():
        return ""
    shown = out.resolve().relative_to(repo.resolve()) if repo is not None and out.resolve().is_relative_to(repo.resolve()) else out
    return f" --out {shown}"
